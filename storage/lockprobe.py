"""Whether another connection holds the local store's write lock now, for ``/healthz``.

The store's writer learns it only when a commit has waited out SQLite's busy timeout (5 s), and
never while there is nothing to commit: until then ``/healthz`` said ``ok``. The probe asks the
lock itself: ``BEGIN IMMEDIATE`` and at once ``ROLLBACK`` (nothing written, no row, no WAL
frame), waiting at most ``PROBE_SECONDS`` for it — past any commit of the gateway's own
(milliseconds), short of the 1 s a Kubernetes probe allows by default. One probe at a time:
health checks arriving meanwhile share its answer.

Owns a plain ``sqlite3`` connection, used only in a worker thread, one probe at a time, opened
with the admin API and kept, as the reader's is: a connection opened later would make an empty
``-wal`` or ``-shm`` at the path where a cleanup deleted them, not the ones the writer has open
(``storage.filewatch``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from pathlib import Path

PROBE_SECONDS = 0.25
"""How long a probe waits for the write lock before it counts as held by another connection."""


def _busy(error: sqlite3.Error) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class LockProbe:
    def __init__(self, path: Path, wait: float = PROBE_SECONDS) -> None:
        self.path = path
        self.wait = wait
        self.since: float | None = None
        """Unix time of the first probe that found the lock held, while the latest still does."""
        self._db: sqlite3.Connection | None = None
        self._probe: asyncio.Task[float | None] | None = None

    async def open(self) -> None:
        """The connection, opened now, while the store's files are the writer's; a store that
        cannot be opened (its disk full) is tried again at the next probe."""
        await asyncio.to_thread(self._open)

    async def close(self) -> None:
        if self._probe is not None:  # one under way at the stop: its thread holds the connection
            await asyncio.wait([self._probe])
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.to_thread(db.close)

    async def held_since(self) -> float | None:
        """Since when (the first probe that found it so) another connection has held the store's
        write lock, or None: a probe got it within ``wait`` seconds."""
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._run(), name="store-lock-probe")
        return await asyncio.shield(self._probe)

    async def _run(self) -> float | None:
        if not await asyncio.to_thread(self._held):
            self.since = None
        elif self.since is None:
            self.since = time.time()
        return self.since

    def _open(self) -> sqlite3.Connection | None:
        """In a worker thread. ``mode=rw``: a store that is gone is not made again, empty."""
        if self._db is None:
            uri = f"{self.path.absolute().as_uri()}?mode=rw"
            try:
                db = sqlite3.connect(
                    uri, uri=True, timeout=self.wait, isolation_level=None, check_same_thread=False
                )
                db.execute("SELECT count(*) FROM sqlite_master")  # opens the -wal and -shm now
            except sqlite3.Error:
                return None
            self._db = db
        return self._db

    def _held(self) -> bool:
        """In a worker thread: whether the write lock stayed held for ``wait`` seconds. Any other
        error (the disk failing) is not the lock's: False, the commits say it."""
        db = self._open()
        if db is None:
            return False
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute("ROLLBACK")
        except sqlite3.Error as err:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            return _busy(err)
        return False
