"""The local event store: SQLite in WAL mode, one writer task, group commit.

Owns the write connection. ``submit(events)`` queues events and returns a
future that resolves once their transaction has committed; the writer takes
everything queued while the previous commit ran (up to ``batch_size`` rows),
so load batches itself. A failed commit fails its futures: callers decide to
fail open; a batch that fails on one submit's data is retried submit by
submit, so one bad event does not cost its neighbours theirs. Should the
writer itself ever stop, every queued and in-flight future fails with
``StoreClosed`` and later submits fail at once: no caller waits forever.
Replaying an event id changes nothing. Reads live in ``storage.queries`` on
their own connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import operator
import sqlite3
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import aiosqlite
import msgspec

from gateway.config import StorageOptions
from gateway.events import Event, Touchpoint
from gateway.metrics import Metrics
from storage.migrate import migrate

log = logging.getLogger("gateway.storage")

MAX_ROWS_PER_STATEMENT = 512
"""Batches up to this size go in one multi-row INSERT (16 variables a row; SQLite allows 32766)."""
MAX_QUEUED = 100_000
"""Most events waiting for (or in) a commit; past it ``submit`` refuses at once."""
_TOUCHPOINT_COLUMNS = [f.name for f in fields(Touchpoint)]
_RAW_PARAMS = _TOUCHPOINT_COLUMNS.index("raw_params")
_touchpoint_values = operator.attrgetter(*_TOUCHPOINT_COLUMNS)
_encode = msgspec.json.Encoder()


@functools.lru_cache(maxsize=64)
def insert_touchpoints_sql(rows: int) -> str:
    """One INSERT for ``rows`` touchpoints: in autocommit mode a single statement is a single
    transaction, so a batch commits atomically in one round trip to the SQLite thread."""
    one = "(" + ", ".join("?" for _ in _TOUCHPOINT_COLUMNS) + ")"
    return (
        f"INSERT INTO touchpoints ({', '.join(_TOUCHPOINT_COLUMNS)}) VALUES "
        + ", ".join([one] * rows)
        # Only a repeated id is skipped. OR IGNORE would also drop, silently and with a
        # successful commit, a row that breaks NOT NULL or CHECK.
        + " ON CONFLICT (id) DO NOTHING"
    )


@dataclass(slots=True)
class _Item:
    """One submit: its events, the future its caller awaits, and when that wait must end."""

    events: Sequence[Event]
    future: asyncio.Future[None]
    deadline: float


# Errors caused by what was written rather than by the database: worth isolating per submit.
_DATA_ERRORS = (
    sqlite3.IntegrityError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
    msgspec.EncodeError,
    TypeError,
    ValueError,
)


class CommitTimeout(Exception):
    """A submit was not committed within ``storage.max_wait_ms``; it may still be, later."""


class StoreClosed(Exception):
    """The store is not accepting events (closed, overloaded, or its writer stopped)."""


def touchpoint_row(tp: Touchpoint) -> list[object]:
    row: list[object] = list(_touchpoint_values(tp))
    row[_RAW_PARAMS] = _encode.encode(tp.raw_params).decode()
    return row


async def connect(path: Path, synchronous: str = "normal") -> aiosqlite.Connection:
    """A connection with the pragmas every connection needs (WAL, busy timeout)."""
    db = await aiosqlite.connect(path, isolation_level=None)
    try:
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        await db.execute("PRAGMA busy_timeout = 5000")
    except BaseException:
        await db.close()  # its thread would otherwise keep the process alive
        raise
    return db


def _settle(batch: list[_Item], error: BaseException | None) -> None:
    for item in batch:
        future = item.future
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


class LocalStore:
    def __init__(self, path: Path, options: StorageOptions, metrics: Metrics) -> None:
        self.path = path
        self.options = options
        self.metrics = metrics
        self._pending: deque[_Item] = deque()
        self._inflight: list[_Item] = []
        self._wakeup = asyncio.Event()
        self._queued = 0  # events submitted and not yet settled (pending + in flight)
        self._db: aiosqlite.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._max_wait = options.max_wait_ms / 1000
        self._sweeper: asyncio.TimerHandle | None = None
        # Read when /metrics is scraped, rather than set on every submit and commit.
        metrics.store_queue.set_function(lambda: self._queued)

    async def open(self) -> None:
        await asyncio.to_thread(self.path.parent.mkdir, parents=True, exist_ok=True)
        self._db = await connect(self.path, self.options.synchronous)
        try:
            await migrate(self._db)
        except BaseException:
            await self._db.close()  # its thread would otherwise keep the process alive
            raise
        self._task = asyncio.create_task(self._writer(), name="store-writer")
        self._task.add_done_callback(self._writer_stopped)
        self._sweep()

    def _sweep(self) -> None:
        """Fail the wait of every submit past its deadline (``max_wait_ms``), every quarter of it.

        The events stay queued and are still written: only the caller stops waiting, so a slow
        disk delays no response by more than ``max_wait_ms``. One timer for the whole store
        costs less than one per request.
        """
        loop = asyncio.get_running_loop()
        now = loop.time()
        for item in itertools.chain(self._inflight, self._pending):
            if item.deadline > now:
                break  # deadlines grow in queue order
            if not item.future.done():
                item.future.set_exception(CommitTimeout(f"not committed within {self._max_wait:g} s"))
        if not self._closing:
            self._sweeper = loop.call_later(max(self._max_wait / 4, 0.01), self._sweep)

    async def close(self) -> None:
        """Stop accepting, commit everything queued, close."""
        if self._closing:
            return
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._task is not None:
            self._wakeup.set()
            # wait() rather than await: a writer that died has already failed its futures
            # and logged why; closing must still release the connection.
            await asyncio.wait([self._task])
        if self._db is not None:
            await self._db.close()

    @property
    def accepting(self) -> bool:
        """True while the writer runs and the store takes events."""
        return not self._closing and self._task is not None and not self._task.done()

    def submit(self, events: Sequence[Event]) -> asyncio.Future[None]:
        """Queue events; the future resolves when they are committed (or fails with the reason)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if not self.accepting:
            future.set_exception(StoreClosed("the store is closed"))
        elif self._queued + len(events) > MAX_QUEUED:
            future.set_exception(StoreClosed(f"the write queue is full ({MAX_QUEUED} events)"))
        else:
            self._queued += len(events)
            self._pending.append(_Item(events, future, loop.time() + self._max_wait))
            self._wakeup.set()
        return future

    async def write(self, events: Sequence[Event]) -> None:
        """Submit and wait for the commit."""
        await self.submit(events)

    def _take(self) -> tuple[list[_Item], int]:
        """The next batch: at least one submit, then more while they fit in ``batch_size`` rows.

        One submit is never split, so a request's events commit (or fail) together.
        """
        first = self._pending.popleft()
        batch, rows = [first], len(first.events)
        while self._pending and rows + len(self._pending[0].events) <= self.options.batch_size:
            item = self._pending.popleft()
            batch.append(item)
            rows += len(item.events)
        return batch, rows

    async def _writer(self) -> None:
        try:
            while True:
                if not self._pending:
                    if self._closing:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                if (
                    self.options.batch_wait_ms
                    and not self._closing
                    and self._queued < self.options.batch_size
                ):
                    await asyncio.sleep(self.options.batch_wait_ms / 1000)
                self._inflight, rows = self._take()
                outcomes = await self._commit_batch(self._inflight, rows)
                self._queued -= rows
                batch, self._inflight = self._inflight, []
                for item, error in zip(batch, outcomes, strict=True):
                    _settle([item], error)
        except Exception:
            self.metrics.store_errors.inc()
            log.critical("the store writer stopped; events are refused until restart", exc_info=True)

    def _writer_stopped(self, task: asyncio.Task[None]) -> None:
        """However the writer ended (even cancelled before it ran), fail what it left behind.

        Nobody waits on a writer that is gone; ``submit`` refuses from now on.
        """
        stranded = self._inflight + list(self._pending)
        self._inflight = []
        self._pending.clear()
        self._queued = 0
        if stranded:
            why = "was cancelled" if task.cancelled() else "stopped"
            _settle(stranded, StoreClosed(f"the store writer {why}"))

    async def _commit_batch(self, batch: list[_Item], rows: int) -> list[Exception | None]:
        """Commit the batch in one transaction; the outcome of each submit in it.

        If the batch fails on its data (one bad event), each submit is retried in its own
        transaction, so one poisoned request does not lose its neighbours' events. Failures
        of the database itself (locked, disk full, I/O) fail the whole batch at once.
        """
        error = await self._transaction(batch, rows)
        if error is None or len(batch) == 1 or not isinstance(error, _DATA_ERRORS):
            return [error] * len(batch)
        log.warning("a batch of %d submits failed on its data; committing them one by one", len(batch))
        return [await self._transaction([item], len(item.events)) for item in batch]

    async def _transaction(self, batch: list[_Item], rows: int) -> Exception | None:
        """One transaction for the events of ``batch``; the error if it did not commit."""
        assert self._db is not None
        db = self._db
        started = time.perf_counter()
        try:
            if db.in_transaction:  # a failed ROLLBACK must not poison every later batch
                await db.execute("ROLLBACK")
            if rows <= MAX_ROWS_PER_STATEMENT:
                params = [v for item in batch for e in item.events for v in touchpoint_row(e)]
                await db.execute(insert_touchpoints_sql(rows), params)
            else:  # a huge single submit: SQLite caps the variables of one statement
                await db.execute("BEGIN IMMEDIATE")
                try:
                    await db.executemany(
                        insert_touchpoints_sql(1), [touchpoint_row(e) for item in batch for e in item.events]
                    )
                    await db.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(Exception):
                        await db.execute("ROLLBACK")
                    raise
        except Exception as err:
            self.metrics.store_errors.inc()
            log.error("store commit of %d events failed: %s", rows, err)
            return err
        self.metrics.store_commit_seconds.observe(time.perf_counter() - started)
        self.metrics.store_batch_rows.observe(rows)
        return None
