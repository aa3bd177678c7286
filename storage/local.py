"""The local event store: SQLite in WAL mode, one writer task, group commit.

Owns the write connection. ``submit(events)`` queues events and returns a
future that resolves once their transaction has committed; the writer takes
everything queued while the previous commit ran (up to ``batch_size`` rows),
so load batches itself. A failed commit fails its futures: callers decide to
fail open. Reads live in ``storage.queries`` on their own connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import astuple, fields
from pathlib import Path

import aiosqlite
import msgspec

from gateway.config import StorageOptions
from gateway.events import Event, Touchpoint
from gateway.metrics import Metrics
from storage.migrate import migrate

log = logging.getLogger("gateway.storage")

MAX_QUEUED = 100_000
_TOUCHPOINT_COLUMNS = [f.name for f in fields(Touchpoint)]
_INSERT_TOUCHPOINT = (
    f"INSERT OR IGNORE INTO touchpoints ({', '.join(_TOUCHPOINT_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _TOUCHPOINT_COLUMNS)})"
)
_UPSERT_VISITOR = """
INSERT INTO visitors (visitor_key, first_touch_id, last_touch_id, first_seen, last_seen)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (visitor_key) DO UPDATE SET
    last_touch_id = excluded.last_touch_id,
    last_seen = excluded.last_seen,
    touch_count = touch_count + 1
"""
_RAW_PARAMS = _TOUCHPOINT_COLUMNS.index("raw_params")
_encode = msgspec.json.Encoder()


class StoreClosed(Exception):
    """The store is not accepting events (closed, or overloaded)."""


def touchpoint_row(tp: Touchpoint) -> tuple[object, ...]:
    row = list(astuple(tp))
    row[_RAW_PARAMS] = _encode.encode(tp.raw_params).decode()
    return tuple(row)


async def connect(path: Path, synchronous: str = "normal") -> aiosqlite.Connection:
    """A connection with the pragmas every connection needs (WAL, busy timeout)."""
    db = await aiosqlite.connect(path, isolation_level=None)
    await db.execute("PRAGMA journal_mode = WAL")
    await db.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    await db.execute("PRAGMA busy_timeout = 5000")
    return db


class LocalStore:
    def __init__(self, path: Path, options: StorageOptions, metrics: Metrics) -> None:
        self.path = path
        self.options = options
        self.metrics = metrics
        self._queue: asyncio.Queue[tuple[Sequence[Event], asyncio.Future[None]] | None] = asyncio.Queue()
        self._queued = 0
        self._db: aiosqlite.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    async def open(self) -> None:
        await asyncio.to_thread(self.path.parent.mkdir, parents=True, exist_ok=True)
        self._db = await connect(self.path, self.options.synchronous)
        try:
            await migrate(self._db)
        except BaseException:
            await self._db.close()  # its thread would otherwise keep the process alive
            raise
        self._task = asyncio.create_task(self._writer(), name="store-writer")

    async def close(self) -> None:
        """Stop accepting, commit everything queued, close."""
        if self._closing:
            return
        self._closing = True
        if self._task is not None:
            self._queue.put_nowait(None)
            await self._task
        if self._db is not None:
            await self._db.close()

    def submit(self, events: Sequence[Event]) -> asyncio.Future[None]:
        """Queue events; the future resolves when they are committed (or fails with the reason)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._closing or self._task is None or self._task.done():
            future.set_exception(StoreClosed("the store is closed"))
        elif self._queued >= MAX_QUEUED:
            future.set_exception(StoreClosed(f"the write queue is full ({MAX_QUEUED} events)"))
        else:
            self._queued += len(events)
            self.metrics.store_queue.set(self._queued)
            self._queue.put_nowait((events, future))
        return future

    async def write(self, events: Sequence[Event]) -> None:
        """Submit and wait for the commit."""
        await self.submit(events)

    async def _writer(self) -> None:
        stopping = False
        while not stopping:
            item = await self._queue.get()
            if item is None:
                break
            batch = [item]
            rows = len(item[0])
            if self.options.batch_wait_ms and self._queue.empty():
                await asyncio.sleep(self.options.batch_wait_ms / 1000)
            while rows < self.options.batch_size and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
                rows += len(nxt[0])
            await self._commit_batch(batch, rows)

    async def _commit_batch(
        self, batch: list[tuple[Sequence[Event], asyncio.Future[None]]], rows: int
    ) -> None:
        assert self._db is not None
        events = [event for events, _ in batch for event in events]
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            await self._db.execute("BEGIN")
            try:
                await self._db.executemany(_INSERT_TOUCHPOINT, [touchpoint_row(e) for e in events])
                await self._db.executemany(
                    _UPSERT_VISITOR, [(e.visitor_key, e.id, e.id, e.ts, e.ts) for e in events]
                )
                await self._db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    await self._db.execute("ROLLBACK")
                raise
        except Exception as err:
            error = err
            self.metrics.store_errors.inc()
            log.error("store commit of %d events failed: %s", rows, err)
        else:
            self.metrics.store_commit_seconds.observe(time.perf_counter() - started)
            self.metrics.store_batch_rows.observe(rows)
        self._queued -= rows
        self.metrics.store_queue.set(self._queued)
        for _, future in batch:
            if future.done():
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)
