"""The store's WAL checkpoint job: it copies the WAL beside the writer, the WAL restarts, it stops
with the store, and a checkpoint that fails is logged and counted while writes go on.

Real SQLite files in ``tmp_path``; the WAL is inspected through its file and a second connection
(in a thread, so the loop never blocks). The job is driven by its thresholds (``rows``,
``seconds``), and the tests wait for its counter rather than for time.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.events import Touchpoint, iso
from storage.local import LocalStore
from tests.storage.stores import OpenStore, read

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
NEVER = 3600.0


def landing(n: int) -> Touchpoint:
    """A new visitor's landing: its visitor-index entry lands on a random page, as in production."""
    return Touchpoint(
        id=str(uuid.uuid4()),
        ts=iso(T0 + timedelta(milliseconds=n)),
        node="test",
        visitor_key=uuid.uuid4().hex,
        source="news",
    )


async def wal_bytes(store: LocalStore) -> int:
    return (await asyncio.to_thread(store.path.with_name("gw.db-wal").stat)).st_size


def checkpoints(store: LocalStore, outcome: str) -> int:
    value = store.metrics.registry.get_sample_value("gateway_store_checkpoints_total", {"outcome": outcome})
    return 0 if value is None else int(value)


async def job_ran(store: LocalStore, outcome: str, times: int) -> None:
    """Until the job has finished ``times`` checkpoints with ``outcome`` (the test timeout bounds it)."""
    while checkpoints(store, outcome) < times:
        await asyncio.sleep(0.01)


async def write(store: LocalStore, count: int, start: int = 0) -> None:
    """``count`` commits of one landing each: each adds at least three WAL pages."""
    for n in range(start, start + count):
        await store.write([landing(n)])


async def test_a_checkpoint_copies_every_frame_and_the_next_write_restarts_the_wal(
    open_store: OpenStore,
) -> None:
    store = await open_store(checkpoint_rows=10**9, checkpoint_seconds=NEVER)
    await write(store, 300)
    busy, frames, copied = await store.checkpointer.checkpoint() or (1, 0, 0)
    assert busy == 0 and frames == copied >= 900
    await write(store, 1, start=300)
    [(busy, frames, _)] = await read(store.path, "PRAGMA wal_checkpoint(PASSIVE)")
    assert busy == 0 and 0 < frames < 50  # only the last commit's pages: the WAL started again
    assert checkpoints(store, "done") == 1


async def test_the_job_keeps_the_wal_from_growing_under_continued_writes(open_store: OpenStore) -> None:
    """Every ``rows`` rows the job checkpoints by itself; each burst then reuses the WAL from its
    start, so after eight bursts the file is about one burst long (without the job: eight)."""
    store = await open_store(checkpoint_rows=100, checkpoint_seconds=NEVER)
    await write(store, 100)
    await job_ran(store, "done", 1)
    one_burst = await wal_bytes(store)
    for burst in range(1, 8):
        await write(store, 100, start=100 * burst)
        await job_ran(store, "done", burst + 1)
    assert await wal_bytes(store) < 2 * one_burst
    assert (await read(store.path, "SELECT count(*) FROM touchpoints")) == [(800,)]


async def test_a_wal_grown_under_a_long_read_is_cut_back_when_it_starts_again(open_store: OpenStore) -> None:
    """A read holding its snapshot (a report's query) keeps any checkpoint from starting the WAL
    again, so the WAL grows past its usual size meanwhile; once the read is over and the WAL
    starts again, the file is cut back to ``wal_limit`` (SQLite alone keeps it at its peak)."""
    limit = 64 * 4096
    store = await open_store(checkpoint_rows=10**9, checkpoint_seconds=NEVER, wal_limit=limit)
    await write(store, 1)
    reader = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False)
    try:
        await asyncio.to_thread(reader.execute, "BEGIN")
        await asyncio.to_thread(lambda: reader.execute("SELECT count(*) FROM touchpoints").fetchall())
        await write(store, 300, start=1)
        await store.checkpointer.checkpoint()  # copies what it may: the reader's snapshot stays
        peak = await wal_bytes(store)
        assert peak > 8 * limit
    finally:
        await asyncio.to_thread(reader.close)
    busy, frames, copied = await store.checkpointer.checkpoint() or (1, 0, 0)
    assert busy == 0 and frames == copied
    await write(store, 1, start=301)  # the writer starts the WAL again
    assert await wal_bytes(store) <= limit
    assert (await read(store.path, "SELECT count(*) FROM touchpoints")) == [(302,)]


async def test_the_job_checkpoints_a_few_rows_after_its_seconds(open_store: OpenStore) -> None:
    store = await open_store(checkpoint_rows=10**9, checkpoint_seconds=0.05)
    await write(store, 3)
    await job_ran(store, "done", 1)
    await write(store, 1, start=3)
    [(_, frames, _)] = await read(store.path, "PRAGMA wal_checkpoint(PASSIVE)")
    assert 0 < frames < 20  # the WAL started again after the job's checkpoint


async def test_the_job_stops_with_the_store_and_close_leaves_everything_in_the_file(
    open_store: OpenStore,
) -> None:
    store = await open_store(checkpoint_rows=50, checkpoint_seconds=NEVER)
    await write(store, 120)
    await job_ran(store, "done", 1)
    assert any(task.get_name() == "store-checkpoint" for task in asyncio.all_tasks())
    await store.close()
    assert not any(task.get_name() == "store-checkpoint" for task in asyncio.all_tasks())
    assert await store.checkpointer.checkpoint() is None  # nothing reopens its connection
    assert not await asyncio.to_thread(store.path.with_name("gw.db-wal").exists)
    assert (await read(store.path, "SELECT count(*) FROM touchpoints")) == [(120,)]


async def test_a_failing_checkpoint_is_logged_and_counted_and_writes_go_on(
    open_store: OpenStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = await open_store(checkpoint_rows=50, checkpoint_seconds=NEVER)
    real = store.checkpointer.path
    store.checkpointer.path = tmp_path / "missing" / "gw.db"  # its connection cannot open
    with caplog.at_level(logging.WARNING, logger="gateway.storage"):
        await write(store, 60)
        await job_ran(store, "failed", 1)
        await write(store, 60, start=60)  # every write still commits; the job tries again
        await job_ran(store, "failed", 2)
    assert [r.getMessage() for r in caplog.records if "checkpoint" in r.getMessage()] == [
        "WAL checkpoint failed (writes go on; retried later): unable to open database file"
    ] * 2
    assert checkpoints(store, "done") == 0
    store.checkpointer.path = real  # the cause goes away: the job's next run succeeds
    await write(store, 60, start=120)
    await job_ran(store, "done", 1)
    assert (await read(store.path, "SELECT count(*) FROM touchpoints")) == [(180,)]
    assert store.metrics.registry.get_sample_value("gateway_store_errors_total") == 0
