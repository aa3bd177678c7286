"""Stop signals kept from worker processes while they start: Ctrl-C reaches the terminal's
whole process group, and a worker that gets it before it ignores it dies with a traceback.

The parent spawns with the signals blocked (``blocked``: a new process inherits the mask);
the worker, first thing, ignores them and unblocks them (``ignored``), dropping one that came
while it started. The parent then stops its workers its own way. Used by the report workers
(``storage/report_pool.py``) and ``gateway import``'s (``gateway/importworkers.py``).

The ``gateway`` command itself holds them the same way while it loads (``gateway/__main__.py``),
and ``gateway run`` holds SIGHUP (and a worker its supervisor's reload order) until it
reloads on it (``RELOAD_SIGNALS``, ``heard``).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterable, Iterator

STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})
"""What stops a command or a service: Ctrl-C, and a service manager's stop."""
RELOAD_ORDER = signal.SIGUSR2
"""What a supervisor sends its workers to reload the text it has just read: a SIGHUP a worker
gets is then someone else's, and it passes it on to the supervisor (``gateway/server.py``), so
``kill -HUP <a worker's pid>`` reloads every worker (until 2026-12-05 that worker alone)."""
RELOAD_ORDER_ENV = "GATEWAY_WORKER_RELOAD_ORDER"
"""Set by a supervisor that orders reloads with ``RELOAD_ORDER`` (its name). A worker started
without it (by a supervisor of an older version, still sending SIGHUP) reloads on SIGHUP itself:
passed back, that SIGHUP would come round again for ever."""
RELOAD_SIGNALS = frozenset({signal.SIGHUP, RELOAD_ORDER})
"""A reload (``systemctl reload``) and a supervisor's reload order, held by ``gateway run`` from
its first line until its handler is in place (``heard``): until 2026-12-05 one that came while
it, or a worker, started killed it (SIGHUP's default action), and a few in a row stopped the
whole gateway."""


@contextlib.contextmanager
def blocked(signals: Iterable[signal.Signals]) -> Iterator[None]:
    """``signals`` blocked in the calling thread (and so in a process it starts) meanwhile."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def ignored(signals: Iterable[signal.Signals]) -> None:
    """In a worker started under ``blocked``: ignore ``signals`` from now on, and unblock them
    (one pending since the start is dropped)."""
    signals = set(signals)
    for sig in signals:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)


def heard(signals: Iterable[signal.Signals]) -> None:
    """Unblock ``signals`` once their handlers are in place: one that came while they were held
    reaches its handler now (a reload asked for during the start reads the file again)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, set(signals))
