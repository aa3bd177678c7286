"""The cookieless visitor ID's salt: random, one per UTC day, held in memory only.

Only the current day's salt exists: moving to a new day drops the old one, so nothing links
one day's keys to the next's. A gateway of one process draws each day's salt at random. The
workers of a supervisor (``proxy.workers`` > 1) must agree on it, or a visitor whose
connections reach two workers would be two visitors: the supervisor draws the first salt, hands
it to each worker it starts through a pipe (never a file nor the environment), and every
process moves to the next day by a one-way hash of the day before's salt (``ratchet``). They
agree without talking to each other, and today's salt still tells nothing of yesterday's.

Imports nothing heavy: the supervisor holds one too.
"""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, date, datetime

SIZE = 32
_NEXT_DAY = b"tracking-gateway cookieless salt, next day\0"
_DAY = 8  # the day's ordinal, big-endian, before the salt in the pipe


def ratchet(salt: bytes, days: int) -> bytes:
    """The salt ``days`` days after ``salt``'s: a one-way hash per day."""
    for _ in range(days):
        salt = hashlib.sha256(_NEXT_DAY + salt).digest()
    return salt


class DaySalt:
    """The salt of the current UTC day. ``shared``: the workers of one supervisor, which move to
    the next day by ``ratchet``; otherwise each day's salt is drawn at random."""

    def __init__(self, day: date | None = None, salt: bytes | None = None, *, shared: bool = False) -> None:
        self.day = day
        self.salt = salt if salt is not None else os.urandom(SIZE)
        self.shared = shared

    def on(self, day: date) -> bytes:
        """The salt of ``day``; a day later than the current one becomes the current one (the old
        salt is dropped). An earlier day (a late request from yesterday) gets today's."""
        if self.day is None:
            self.day = day
        elif day > self.day:
            if self.shared:
                self.salt = ratchet(self.salt, (day - self.day).days)
            else:
                self.salt = os.urandom(SIZE)
            self.day = day
        return self.salt

    def encode(self) -> bytes:
        """Today's salt and its day, for a worker about to start (``decode``)."""
        salt = self.on(datetime.now(UTC).date())
        assert self.day is not None
        return self.day.toordinal().to_bytes(_DAY, "big") + salt  # its own day, should the clock step back

    @classmethod
    def decode(cls, data: bytes) -> DaySalt:
        """The salt a supervisor handed over (``encode``), shared with the other workers."""
        if len(data) != _DAY + SIZE:
            raise ValueError(f"expected {_DAY + SIZE} bytes of salt, got {len(data)}")
        day = date.fromordinal(int.from_bytes(data[:_DAY], "big"))
        return cls(day, data[_DAY:], shared=True)


SALT_FD_ENV = "GATEWAY_WORKER_SALT_FD"
"""Set by the supervisor for its workers: the file descriptor of a pipe holding the day's salt
(``DaySalt.encode``); the worker reads it once and closes it."""


def handed_over() -> DaySalt | None:
    """In a worker: the salt its supervisor handed over (None when not started by one)."""
    fd_text = os.environ.pop(SALT_FD_ENV, None)
    if fd_text is None:
        return None
    fd = int(fd_text)
    try:
        data = b""
        while len(data) < _DAY + SIZE and (chunk := os.read(fd, _DAY + SIZE - len(data))):
            data += chunk
    finally:
        os.close(fd)
    return DaySalt.decode(data)
