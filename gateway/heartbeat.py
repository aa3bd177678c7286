"""A supervised worker's heartbeat: how the supervisor tells a hung worker from a busy one.

A worker whose event loop is stuck (``kill -STOP``, a busy loop, a blocking call that never
returns) does not exit, so the supervisor would never restart it; yet it keeps its share of the
``SO_REUSEPORT`` port, and the kernel goes on handing it visitors who time out. So each worker's
event loop writes one byte to a pipe from the supervisor every ``interval`` seconds (a timer
callback of that loop: work in threads or in the report worker processes does not hold it, a
loop stalled does), and the supervisor kills (SIGKILL: it cannot stop gracefully) and restarts
a worker it has not heard from for ``proxy.worker_hang_seconds`` (``Listener``).

Imports nothing heavy: the supervisor holds the listening end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

HEARTBEAT_ENV = "GATEWAY_WORKER_HEARTBEAT"
"""Set by the supervisor for its workers: ``FD:INTERVAL``, the pipe to beat on and how often."""
START_ALLOWANCE = 60.0
"""Seconds a worker has from its start to its first beat (importing, reading its config), when
``proxy.worker_hang_seconds`` is shorter."""


EXIT_ALLOWANCE = 60.0
"""Seconds a worker has from the end of its event loop (its heartbeat pipe closed) to its exit,
when ``proxy.worker_hang_seconds`` is shorter."""


def interval(hang: float) -> float:
    """Seconds between beats for a bound of ``hang``: several beats within it, one a second at most."""
    return min(1.0, hang / 4)


class Heartbeat:
    """In a worker: beats on the pipe its supervisor reads, from its event loop."""

    def __init__(self, fd: int, every: float) -> None:
        self.fd = fd
        self.every = every
        self._next: asyncio.TimerHandle | None = None

    @classmethod
    def from_environ(cls) -> Heartbeat | None:
        """The pipe named in the environment; None when not started by a supervisor that listens."""
        text = os.environ.pop(HEARTBEAT_ENV, None)  # not passed on to this worker's own children
        if not text:
            return None
        fd, _, every = text.partition(":")
        beat = cls(int(fd), float(every))
        os.set_inheritable(beat.fd, False)
        os.set_blocking(beat.fd, False)
        return beat

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._beat(loop)

    def _beat(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            os.write(self.fd, b".")
        except BlockingIOError:  # the supervisor is behind reading: the beats before say enough
            pass
        except OSError:  # the supervisor is gone: this worker stops soon too
            self.close()
            return
        self._next = loop.call_later(self.every, self._beat, loop)

    def close(self) -> None:
        if self._next is not None:
            self._next.cancel()
            self._next = None
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


class Listener:
    """In the supervisor: when each worker last beat, read from the pipe it beats on."""

    def __init__(self, fd: int, started: float) -> None:
        self.fd = fd
        self.started = started
        self.heard: float | None = None
        """When its last beat was read (None: none yet)."""
        self.ended: float | None = None
        """When its end of the pipe was found closed: its event loop ended (or the process did)."""
        os.set_blocking(fd, False)

    def hear(self, now: float) -> None:
        """Read what the worker wrote; any byte is a beat."""
        beaten = False
        while True:
            try:
                chunk = os.read(self.fd, 4096)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:  # it closed its end: it is ending (its exit is seen by its keeper)
                if self.ended is None:
                    self.ended = now
                break
            beaten = True
        if beaten:
            self.heard = now

    def silent(self, now: float, hang: float) -> str | None:
        """Why the worker counts as hung at ``now`` (its loop stalled for ``hang`` seconds at
        least, or never run ``START_ALLOWANCE`` after its start), or None. Once its end of the
        pipe closed, its loop ended and it is exiting, its listeners closed: it has
        ``EXIT_ALLOWANCE`` (or ``hang``, if longer) to exit however slowly (a thread joined, a pool
        shut down) with its own status (it cannot run, say), which a kill would lose; only one
        that has not exited by then is killed (a thread that never ends), not left a worker short."""
        if self.ended is not None:
            allowed = max(hang, EXIT_ALLOWANCE)
            if now - self.ended > allowed:
                return f"it has not exited within {allowed:.0f} s of its event loop ending"
            return None
        if self.heard is None:
            allowed = max(hang, START_ALLOWANCE)
            if now - self.started > allowed:
                return f"its event loop has not run within {allowed:.0f} s of its start"
            return None
        # A beat is timed when read, up to one interval after it was written, and the loop may
        # have run for one interval after it: one interval more, so that only a loop stalled
        # for the whole bound trips it.
        if now - self.heard > hang + interval(hang):
            return f"its event loop has been silent for {now - self.heard:.1f} s"
        return None

    def forgive(self, now: float) -> None:
        """The supervisor's own loop was held as long (stopped, starved): no worker is judged on it."""
        if self.heard is not None:
            self.heard = max(self.heard, now)
        self.started = max(self.started, now)
        if self.ended is not None:
            self.ended = max(self.ended, now)

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
