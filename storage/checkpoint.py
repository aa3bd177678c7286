"""The local store's WAL checkpoint job: copies the WAL back into the database file beside the writer.

Owns a plain ``sqlite3`` connection of its own, used only in a worker thread (one checkpoint at a
time), and the task that decides when to checkpoint: after ``rows`` committed rows, or after
``seconds`` with fewer. Each run is ``PRAGMA wal_checkpoint(PASSIVE)``: it never waits for and
never blocks the writer, and once it has copied every frame the writer's next transaction starts
the WAL from its beginning again. Several gateway processes sharing one store each run a job;
SQLite lets one checkpoint run at a time and answers the others busy (counted, harmless). A
failing checkpoint is logged and counted and never touches the writes; the writer's own
``wal_autocheckpoint`` (``storage.local.CHECKPOINT_PAGES``) is the net under a job that stalls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from pathlib import Path

from gateway.metrics import Metrics
from storage.access import not_writable, unwritable

log = logging.getLogger("gateway.storage")

ROWS = 4096
"""Rows committed after which the job checkpoints (each new visitor's landing adds about a WAL
page); far apart enough that a page changed many times is copied once."""
SECONDS = 5.0
"""With fewer rows committed than ``ROWS``, the job checkpoints them after this long."""


class Checkpointer:
    def __init__(self, path: Path, metrics: Metrics, rows: int = ROWS, seconds: float = SECONDS) -> None:
        self.path = path
        self.metrics = metrics
        self.rows = rows
        self.seconds = seconds
        self._pending = 0  # rows committed since the last checkpoint began
        self._due = asyncio.Event()
        self._lock = asyncio.Lock()  # one checkpoint at a time on the one connection
        self._db: sqlite3.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="store-checkpoint")

    def halt(self) -> None:
        """Checkpoint no more (the store's files moved under it: ``storage.filewatch``); ``close``
        still closes the connection."""
        self._stopping = True
        self._due.set()

    def committed(self, rows: int) -> None:
        """The writer committed ``rows`` rows (the hot path: an addition and a comparison)."""
        self._pending += rows
        if self._pending >= self.rows:
            self._due.set()

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._due.wait(), self.seconds)
            self._due.clear()
            if self._pending and not self._stopping:
                await self.checkpoint()

    async def checkpoint(self) -> tuple[int, int, int] | None:
        """One PASSIVE checkpoint now: SQLite's (busy, frames in the WAL, frames copied), or None
        if it failed (logged and counted; the next one comes after another ``rows`` rows)."""
        async with self._lock:
            if self._stopping:  # closed, or closing: nothing may reopen the connection
                return None
            self._pending = 0
            try:
                busy, frames, copied = await asyncio.to_thread(self._checkpoint)
            except Exception as err:
                self.metrics.store_checkpoints.labels("failed").inc()
                blocked = await asyncio.to_thread(self._blocked, err)
                log.warning("WAL checkpoint failed (writes go on; retried later): %s%s", err, blocked)
                return None
            self.metrics.store_checkpoints.labels("busy" if busy else "done").inc()
            return busy, frames, copied

    def _blocked(self, error: Exception) -> str:
        """In a worker thread: for SQLite's READONLY, which file or folder this process may not
        write now (made read-only under the running gateway: modes are checked at open, so the
        writer's connection writes on, and only this one, opened again after each failure, is
        refused) and what that means; else nothing."""
        code = getattr(error, "sqlite_errorcode", None)
        if not isinstance(code, int) or code & 0xFF != sqlite3.SQLITE_READONLY:
            return ""
        blocked = unwritable(self.path)
        if blocked is None:
            return ""
        why, fix = not_writable(blocked, "let the user the gateway runs as write to it again")
        return (
            f" ({why}: commits go on through the files the gateway has open, but once restarted it"
            f" would open the store read-only and record nothing; {fix})"
        )

    def _checkpoint(self) -> tuple[int, int, int]:
        """In a worker thread: the connection is opened on first use and again after a failure."""
        if self._db is None:
            self._db = sqlite3.connect(self.path, timeout=1.0, isolation_level=None, check_same_thread=False)
        try:
            busy, frames, copied = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except BaseException:
            db, self._db = self._db, None
            db.close()
            raise
        return int(busy), int(frames), int(copied)

    async def close(self) -> None:
        """Stop the job (a checkpoint under way finishes first) and close the connection."""
        self._stopping = True
        self._due.set()
        if self._task is not None:
            await asyncio.wait([self._task])
        async with self._lock:
            if self._db is not None:
                db, self._db = self._db, None
                await asyncio.to_thread(db.close)
