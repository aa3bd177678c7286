"""What outlives one load of the mitmproxy script, ``addons/mitm.py``.

mitmproxy executes that script again when its file changes (a hot reload): a new module, a new
``GatewayAddon``; the old one gets ``done`` and is gone from mitmproxy's chain. This module is
imported once per process, as every ``gateway.*`` module is. It holds:

- ``FLOWS``: each flow in flight, by mitmproxy's flow id, with what its request left (its
  exchange, chain, store, owner): a flow whose request the old instance saw has its response
  hooks called on the new one, which finds it here (its cookie set, its commit waited for).
- ``ENDING``: the old instances' ends still under way (each waits for its last flow before it
  closes its chain and store); the last instance's ``done`` ends them at shutdown, so what
  they queued is stored before mitmdump exits.
- ``handed``: what an instance ending in a hot reload leaves the next one, taken in its ``load``:
  the cookieless visitors' daily salt (a new one would make each a new visitor), the notices
  already said (the config's warnings, said once), the loggers' levels from before
  ``log.level`` was first applied (restored at shutdown) and the loopback answerer
  (``addons.mitm_answer``), still listening for the requests the old instance refused.
- ``notifier``: systemd's readiness channel (``gateway.sdnotify``), taken from the environment
  by the first instance once it serves; a hot reload's instance tells systemd through it too.

Imports nothing of mitmproxy.
"""

from __future__ import annotations

import asyncio
from typing import Any

FLOWS: dict[str, Any] = {}
ENDING: set[asyncio.Future[None]] = set()
handed: tuple[Any, Any, Any, Any] | None = None
notifier: Any = None
