"""Loopback ports for the processes a benchmark (or the tests' PostgreSQL) starts to bind
themselves: ``pg_ctl start -p N``, ``mitmdump --listen-port N``.

Such a port is chosen here, then bound by the other process a moment later. A port the kernel
hands out for ``bind`` to port 0 lies in its ephemeral range (32768-60999 on Linux), the range
every outgoing connection on the machine draws its local port from: on a loaded machine one
took the chosen port in between, and the server did not start (for the tests' PostgreSQL:
every central store test of the run failed). Ports are drawn below that range, where only a
process binding that very port can take one, and a start that still finds its port taken is
tried again on another (``TRIES`` in all), saying which port was taken.
"""

from __future__ import annotations

import random
import socket

LOWEST, BEYOND = 20_000, 32_768
"""Ports drawn: 20000-32767, below Linux's ephemeral range."""
TRIES = 5
"""Starts on a port found taken, each on another port, before giving up."""
TAKEN = ("address already in use", "could not bind")
"""What a server says (any case) when its port was taken before it bound it."""


def free_port() -> int:
    """A loopback port free now, below the ephemeral range, for another process to bind."""
    for _ in range(200):
        port = random.randrange(LOWEST, BEYOND)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:  # in use
                continue
            return port
    raise RuntimeError(f"no free loopback port between {LOWEST} and {BEYOND - 1}")


def port_taken(said: str) -> bool:
    """Whether a server's output says it could not bind its port (another process has it)."""
    lowered = said.lower()
    return any(words in lowered for words in TAKEN)
