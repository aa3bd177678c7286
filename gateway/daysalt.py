"""The cookieless visitor ID's salt: random, one per UTC day, held in memory only.

Only the current day's salt exists: moving to a new day drops the old one, and each day's is
drawn at random, so nothing links one day's keys to another's, and a salt read from memory
tells nothing of any other day's. A gateway of one process draws it itself. The workers of a
supervisor (``proxy.workers`` > 1) must agree on it, or a visitor whose connections reach two
workers would be two visitors: the supervisor draws each day's salt and writes it to every
worker through a pipe each worker keeps open (never a file nor the environment): when it starts
the worker, then at each UTC midnight. Until the new day's arrives (well under a second after
midnight), a worker keys with the day before's.

Imports nothing heavy: the supervisor holds one too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from datetime import UTC, date, datetime

SIZE = 32
_DAY = 8  # the day's ordinal, big-endian, before the salt in the pipe
RECORD = _DAY + SIZE


class DaySalt:
    """The salt of the current UTC day. ``handed``: a supervisor's worker, which takes each new
    day's salt from its supervisor (``take``); otherwise each day's is drawn here."""

    def __init__(self, day: date | None = None, salt: bytes | None = None, *, handed: bool = False) -> None:
        self.day = day
        self.salt = salt if salt is not None else os.urandom(SIZE)
        self.handed = handed

    def on(self, day: date) -> bytes:
        """The salt to key ``day``'s requests with. A day later than the current one becomes the
        current one, with a new salt (the old one is dropped); a worker keeps the day before's
        until its supervisor's arrives. An earlier day (a late request from yesterday) gets
        today's."""
        if self.day is None:
            self.day = day
        elif day > self.day and not self.handed:
            self.day, self.salt = day, os.urandom(SIZE)
        return self.salt

    def record(self) -> bytes:
        """Today's salt and its day, for the supervisor's workers (``take``)."""
        salt = self.on(datetime.now(UTC).date())
        assert self.day is not None
        return self.day.toordinal().to_bytes(_DAY, "big") + salt  # its own day, should the clock step back

    def take(self, data: bytes) -> None:
        """A day's salt from the supervisor (``record``); one of an earlier day is ignored."""
        if len(data) != RECORD:
            raise ValueError(f"expected {RECORD} bytes of salt, got {len(data)}")
        day = date.fromordinal(int.from_bytes(data[:_DAY], "big"))
        if self.day is None or day >= self.day:
            self.day, self.salt = day, data[_DAY:]


SALT_FD_ENV = "GATEWAY_WORKER_SALT_FD"
"""Set by the supervisor for its workers: the file descriptor of the pipe it writes each day's
salt to (``DaySalt.record``)."""


class HandedSalt:
    """In a worker: the salt its supervisor writes to the pipe it keeps open."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.salt = DaySalt(handed=True)
        self._partial = b""

    @classmethod
    def from_environ(cls) -> HandedSalt | None:
        """The pipe named in the environment, its first salt read (the supervisor wrote it before
        starting this worker); None when not started by a supervisor."""
        fd_text = os.environ.pop(SALT_FD_ENV, None)  # not passed on to this worker's own children
        if fd_text is None:
            return None
        handed = cls(int(fd_text))
        data = b""
        while len(data) < RECORD and (chunk := os.read(handed.fd, RECORD - len(data))):
            data += chunk
        handed.salt.take(data)
        os.set_blocking(handed.fd, False)
        return handed

    def follow(self, loop: asyncio.AbstractEventLoop) -> None:
        """Take each new day's salt as the supervisor writes it, until it closes the pipe."""
        loop.add_reader(self.fd, self._readable, loop)

    def _readable(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            chunk = os.read(self.fd, RECORD * 4)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:  # the supervisor is gone: the worker stops soon too
            self.close(loop)
            return
        self._partial += chunk
        while len(self._partial) >= RECORD:
            self.salt.take(self._partial[:RECORD])
            self._partial = self._partial[RECORD:]

    def close(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if self.fd < 0:
            return
        if loop is not None:
            loop.remove_reader(self.fd)
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = -1
