"""LocalStore: group commit, durability of acknowledged futures, failure handling, the dual slot.

Real SQLite files in ``tmp_path``; every check of what is stored goes through a
second, independent connection (in a thread, so the loop never blocks).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import pytest
from blockbuster import BlockBuster

from gateway.events import Binding, Conversion, Erasure, Event, Receipt, Touchpoint, VerdictChange, iso
from gateway.metrics import Metrics
from gateway.options import StorageOptions
from storage.local import (
    BUSY_TIMEOUT_MS,
    CHECKPOINT_PAGES,
    GATHER_TURNS,
    LOCK_GAP,
    MAX_QUEUED,
    REFUSED_RUN,
    TABLES,
    AllRefused,
    CommitTimeout,
    LocalStore,
    StoreClosed,
    _Table,
    connect,
    event_row,
    insert_sql,
    rollback,
)
from tests.storage.stores import OpenStore, execute, query, read

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)
VISITOR = "a" * 32
OTHER = "b" * 32


def event_id(n: int) -> str:
    """A UUIDv7 for millisecond ``T0 + n`` with fixed random bits: the same ``n``, the same id."""
    return str(uuid.UUID(int=((T0_MS + n) << 80) | (0x7 << 76) | (0b10 << 62) | n))


def tp(n: int, visitor: str = VISITOR, **fields: Any) -> Touchpoint:
    """Touchpoint number ``n``: ids and timestamps grow with ``n``."""
    fields.setdefault("source", "news")
    return Touchpoint(
        id=event_id(n),
        ts=iso(T0 + timedelta(milliseconds=n)),
        node="test",
        visitor_key=visitor,
        content=str(n),
        **fields,
    )


def sample(store: LocalStore, name: str, **labels: str) -> float:
    value = store.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def commits(store: LocalStore) -> int:
    return int(sample(store, "gateway_store_batch_rows_count"))


async def settle(*futures: asyncio.Future[None], timeout: float = 10) -> list[BaseException | None]:
    """Each future's exception (None for success); fails the test instead of hanging."""
    async with asyncio.timeout(timeout):
        results = await asyncio.gather(*futures, return_exceptions=True)
    return [r if isinstance(r, BaseException) else None for r in results]


async def test_concurrent_writers_share_few_transactions(open_store: OpenStore) -> None:
    store = await open_store()

    async def visitor(v: int) -> None:
        for round_ in range(5):
            await store.write([tp(v * 10 + round_, visitor=f"{v:032x}")])

    async with asyncio.timeout(20):
        await asyncio.gather(*(visitor(v) for v in range(200)))
    assert (await read(store.path, "SELECT count(*), count(DISTINCT id) FROM touchpoints")) == [(1000, 1000)]
    assert sample(store, "gateway_store_batch_rows_sum") == 1000
    # One commit per event would be 1000; group commit takes what queued during the last one.
    assert commits(store) <= 50
    assert sample(store, "gateway_store_queue") == 0


async def test_a_future_resolves_only_once_its_rows_are_readable_elsewhere(
    open_store: OpenStore, blockbuster: BlockBuster
) -> None:
    # The check must run the instant each future resolves, before the loop does anything
    # else: a synchronous read on the loop thread, allowed in this one test.
    blockbuster.deactivate()
    store = await open_store()
    missing: list[str] = []

    def check(event: Touchpoint) -> Callable[[asyncio.Future[None]], None]:
        def callback(future: asyncio.Future[None]) -> None:
            assert future.exception() is None
            if not query(store.path, "SELECT 1 FROM touchpoints WHERE id = ?", event.id):
                missing.append(event.id)

        return callback

    futures = []
    for n in range(300):
        event = tp(n)
        future = store.submit([event])
        future.add_done_callback(check(event))
        futures.append(future)
        if n % 50 == 0:
            await asyncio.sleep(0)  # let batches start while more arrive
    assert await settle(*futures) == [None] * 300
    await asyncio.sleep(0)  # done callbacks run one loop turn after resolution
    assert missing == []


async def test_batch_size_bounds_every_commit_and_a_submit_is_never_split(open_store: OpenStore) -> None:
    store = await open_store(batch_size=16)
    futures = [store.submit([tp(3 * i), tp(3 * i + 1), tp(3 * i + 2)]) for i in range(20)]
    assert await settle(*futures) == [None] * 20
    # 3-event submits fill a 16-row batch with 5 of them (15 rows): 4 commits, none above 16.
    assert commits(store) == 4
    assert sample(store, "gateway_store_batch_rows_bucket", le="16.0") == 4
    assert sample(store, "gateway_store_batch_rows_bucket", le="8.0") == 0

    # A submit larger than the batch size still commits whole, in one transaction of its own.
    assert await settle(store.submit([tp(100 + i) for i in range(40)])) == [None]
    assert commits(store) == 5
    assert sample(store, "gateway_store_batch_rows_bucket", le="64.0") == 5
    assert (await read(store.path, "SELECT count(*) FROM touchpoints")) == [(100,)]


async def test_close_flushes_everything_queued_then_refuses(open_store: OpenStore) -> None:
    store = await open_store(batch_size=32)
    futures = [store.submit([tp(n)]) for n in range(300)]
    async with asyncio.timeout(10):
        await store.close()
    assert all(f.done() and f.exception() is None for f in futures)
    assert (await read(store.path, "SELECT count(*) FROM touchpoints")) == [(300,)]

    late = store.submit([tp(1000)])
    with pytest.raises(StoreClosed):
        await late
    await store.close()  # twice is fine


async def test_submit_before_open_is_refused(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "gw.db", StorageOptions(), Metrics())
    with pytest.raises(StoreClosed):
        await store.submit([tp(1)])


async def test_nothing_to_write_is_done_at_once(open_store: OpenStore) -> None:
    """An empty write used to reach the writer as a batch of no events: a KeyError, counted as
    a store error, and the store reported failing."""
    store = await open_store()
    await store.write([])
    assert await store.submit_groups([[], []]) == [True, True]
    assert await store.submit_groups([]) == []
    assert sample(store, "gateway_store_errors_total") == 0 and store.failing is None
    await store.write([tp(1)])
    assert [r[0] for r in await read(store.path, "SELECT content FROM touchpoints")] == ["1"]


async def test_failing_commit_fails_its_futures_and_the_store_recovers(open_store: OpenStore) -> None:
    store = await open_store()
    await store.write([tp(0)])
    # Another connection makes every insert fail, as a broken database would.
    await asyncio.to_thread(
        execute,
        store.path,
        "CREATE TRIGGER fail BEFORE INSERT ON touchpoints BEGIN SELECT RAISE(ABORT, 'injected'); END;",
    )
    failed = await settle(*(store.submit([tp(n)]) for n in range(1, 6)))
    assert all(isinstance(err, sqlite3.Error) and "injected" in str(err) for err in failed), failed
    assert sample(store, "gateway_store_errors_total") >= 1
    assert sample(store, "gateway_store_queue") == 0

    await asyncio.to_thread(execute, store.path, "DROP TRIGGER fail;")
    assert await settle(*(store.submit([tp(n)]) for n in range(6, 11))) == [None] * 5
    rows = await read(store.path, "SELECT content FROM touchpoints ORDER BY id")
    assert [r[0] for r in rows] == ["0", "6", "7", "8", "9", "10"]


async def test_one_bad_event_does_not_fail_its_batch_neighbours(open_store: OpenStore) -> None:
    store = await open_store()
    good = [store.submit([tp(n)]) for n in range(5)]
    null_path = store.submit([tp(5, landing_path=None)])  # NOT NULL violation in SQLite
    unencodable = store.submit([tp(6, raw_params={"x": object()})])  # fails before SQLite
    more = [store.submit([tp(n)]) for n in range(7, 10)]
    outcomes = await settle(*good, null_path, unencodable, *more)
    assert outcomes[:5] == [None] * 5
    assert isinstance(outcomes[5], sqlite3.IntegrityError)
    assert isinstance(outcomes[6], TypeError)
    assert outcomes[7:] == [None] * 3
    rows = await read(store.path, "SELECT content FROM touchpoints ORDER BY id")
    assert [r[0] for r in rows] == ["0", "1", "2", "3", "4", "7", "8", "9"]
    assert sample(store, "gateway_store_queue") == 0


async def test_submit_each_leaves_out_only_the_parts_the_store_refuses(open_store: OpenStore) -> None:
    """An import's batch is one submit, so one bad event failed all of it. ``submit_each``
    commits it in halves down to its parts: each refused part (whole: one line's rows) is left
    out and given back with its error, every other event goes in once, and the plain submit
    sharing its batch goes in too. An integer past 64 bits is the data's fault, not the
    database's: isolated like a constraint, the store not marked failing."""
    store = await open_store()
    events = [tp(n) for n in range(20)]
    events[5] = tp(5, landing_path=None)  # NOT NULL
    events[13] = tp(13, campaign="caf\udce9")  # SQLite cannot encode a lone surrogate
    events[17] = tp(17, asn=2**70)  # past SQLite's INTEGER
    parts = list(range(20))
    parts[13] = 12  # events 12 and 13: one line's rows
    plain = store.submit([tp(30)])
    each = store.submit_each(events, parts)
    clean = store.submit_each([tp(40), tp(41)], ["a", "b"])
    async with asyncio.timeout(10):
        assert await plain is None
        refused = await each
        assert await clean == []
    assert [(start, end) for start, end, _ in refused] == [(5, 6), (12, 14), (17, 18)]
    errors = [error for *_, error in refused]
    assert isinstance(errors[0], sqlite3.IntegrityError) and "landing_path" in str(errors[0])
    assert isinstance(errors[1], UnicodeEncodeError) and isinstance(errors[2], OverflowError)
    rows = await read(store.path, "SELECT content FROM touchpoints ORDER BY id")
    assert [int(r[0]) for r in rows] == [n for n in range(20) if n not in (5, 12, 13, 17)] + [30, 40, 41]
    assert store.failing is None and sample(store, "gateway_store_queue") == 0
    assert await store.submit_each([], []) == []


async def test_submit_each_gives_up_on_a_batch_the_store_refuses_whole(open_store: OpenStore) -> None:
    """A store that refuses every row (a trigger, a constraint no row meets) cost some 2·n
    transactions a batch, halving down to each of its n parts, and every part came back
    refused. Now, once its first ``REFUSED_RUN`` parts in a row are refused for the same
    reason, and the rest of it, tried whole, for that reason too, the submit fails with
    ``AllRefused`` (the first reason, how many parts): nothing of it stored, and a bounded
    number of transactions spent."""
    store = await open_store()
    trigger = "CREATE TRIGGER no BEFORE INSERT ON touchpoints BEGIN SELECT RAISE(ABORT, 'not here'); END"
    await asyncio.to_thread(execute, store.path, trigger)
    parts = 10 * REFUSED_RUN
    with pytest.raises(AllRefused) as raised:
        async with asyncio.timeout(30):
            await store.submit_each([tp(n) for n in range(parts)], list(range(parts)))
    assert raised.value.parts == parts and "not here" in str(raised.value.error)
    assert await read(store.path, "SELECT count(*) FROM touchpoints") == [(0,)]
    tried = sample(store, "gateway_store_errors_total")
    # The whole, the halves down the first part, two a part after it, the rest whole: not ~2 * parts.
    assert tried <= 2 * REFUSED_RUN + parts.bit_length() + 2, tried
    assert store.failing is None  # the data's fault: the store is not failing


async def test_the_events_lost_said_for_failed_commits_are_those_refused_not_each_attempt(
    open_store: OpenStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A batch that fails on its data is committed again in parts, and the halves that fail
    are split again: each such commit's line counted all its events as lost, so the 4 events
    refused of 20 were told as 52 lost ("… more failed commits (N events lost)"). Only a
    commit whose failure is the last word on its events counts them lost."""
    store = await open_store()
    events = [tp(n) for n in range(20)]
    events[5] = tp(5, landing_path=None)  # NOT NULL
    events[12] = tp(12, landing_path=None)
    events[17] = tp(17, landing_path=None)
    parts = list(range(20))
    parts[13] = 12  # events 12 and 13: one line's rows, refused together
    with caplog.at_level(logging.WARNING, logger="gateway.storage"):
        async with asyncio.timeout(10):
            refused = await store.submit_each(events, parts)
        assert [(start, end) for start, end, _ in refused] == [(5, 6), (12, 14), (17, 18)]
        await store.close()
    [stops] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("the store stops")]
    lost = re.search(r"more failed commits \((\d+) events lost\)", stops)
    assert lost is not None, stops
    assert int(lost.group(1)) == 4, stops  # events 5, 12, 13 and 17


async def test_submit_each_does_not_give_up_on_a_batch_with_a_few_bad_parts(open_store: OpenStore) -> None:
    """Fewer than ``REFUSED_RUN`` bad parts in a row at its start, and more scattered after:
    each bad part is left out, the others stored, as before."""
    store = await open_store()
    parts = 4 * REFUSED_RUN
    bad = {*range(REFUSED_RUN - 1), *range(REFUSED_RUN, parts, 5)}
    events = [tp(n, landing_path=None) if n in bad else tp(n) for n in range(parts)]
    async with asyncio.timeout(30):
        refused = await store.submit_each(events, list(range(parts)))
    assert [start for start, _, _ in refused] == sorted(bad)
    rows = await read(store.path, "SELECT content FROM touchpoints ORDER BY id")
    assert [int(r[0]) for r in rows] == [n for n in range(parts) if n not in bad]


async def test_a_writer_stopped_before_its_first_step_fails_every_waiting_future(
    open_store: OpenStore,
) -> None:
    store = await open_store()
    futures = [store.submit([tp(n)]) for n in range(10)]
    assert store._task is not None
    store._task.cancel()  # the writer stops for a reason of its own, before it ever ran
    outcomes = await settle(*futures, timeout=5)
    assert all(isinstance(err, StoreClosed) for err in outcomes), outcomes
    assert sample(store, "gateway_store_queue") == 0
    with pytest.raises(StoreClosed):
        await store.submit([tp(99)])
    async with asyncio.timeout(5):
        await store.close()


async def test_a_writer_stopped_mid_commit_fails_the_batch_and_the_queue(open_store: OpenStore) -> None:
    store = await open_store(batch_size=4)
    # Another connection holds the write lock, so the writer waits inside its first commit.
    locker = await asyncio.to_thread(
        sqlite3.connect, store.path, isolation_level=None, check_same_thread=False
    )
    try:
        await asyncio.to_thread(locker.execute, "BEGIN IMMEDIATE")
        futures = [store.submit([tp(n)]) for n in range(10)]  # one batch in flight, six queued
        await asyncio.sleep(0.1)
        assert store._task is not None
        assert not any(f.done() for f in futures)
        store._task.cancel()
        outcomes = await settle(*futures, timeout=5)
    finally:
        await asyncio.to_thread(locker.execute, "ROLLBACK")
        await asyncio.to_thread(locker.close)
    assert all(isinstance(err, StoreClosed) for err in outcomes), outcomes
    assert sample(store, "gateway_store_queue") == 0
    async with asyncio.timeout(10):
        await store.close()
    # The statement already handed to SQLite may still commit once the lock frees: its events
    # were reported unconfirmed, not lost. Nothing queued behind it was written.
    assert (await read(store.path, "SELECT count(*) FROM touchpoints")) in ([(0,)], [(4,)])


async def test_a_stopped_writer_settles_a_timed_out_commit_and_says_why_later_submits_fail(
    open_store: OpenStore,
) -> None:
    """The writer stopped while a commit whose wait had timed out was still queued behind
    another connection's lock: that commit's ``outcome`` settles with the writer's end (the
    gateway counts it lost), and every later submit is told the writer stopped, not "the store
    is closed" (until 2026-12-07), which said nothing of why or what to do. The writer is
    stopped as the tests above stop it: no error it does not expect can be provoked from
    outside (the last, a withdrawn admin write, is fixed above)."""
    store = await open_store(max_wait_ms=50)
    locker = await asyncio.to_thread(
        sqlite3.connect, store.path, isolation_level=None, check_same_thread=False
    )
    try:
        await asyncio.to_thread(locker.execute, "BEGIN IMMEDIATE")
        [timed_out] = await settle(store.submit([tp(1)]), timeout=5)
        assert isinstance(timed_out, CommitTimeout)
        assert store._task is not None
        store._task.cancel()
        async with asyncio.timeout(10):
            ended = await timed_out.outcome
    finally:
        await asyncio.to_thread(locker.execute, "ROLLBACK")
        await asyncio.to_thread(locker.close)
    assert isinstance(ended, StoreClosed) and "the store writer was cancelled" in str(ended), ended
    with pytest.raises(
        StoreClosed, match=r"^the store writer was cancelled; events are refused until the gateway"
    ):
        await store.submit([tp(2)])
    async with asyncio.timeout(10):
        await store.close()
    with pytest.raises(StoreClosed, match=r"^the store writer was cancelled"):  # still why, once closed
        await store.submit([tp(3)])


async def test_queue_bound_counts_events_and_frees_after_commit(open_store: OpenStore) -> None:
    # The bound is under test, not the wait: committing 100k rows can take longer than the
    # default max_wait_ms on a loaded machine, which would fail the wait, not the bound.
    store = await open_store(max_wait_ms=60_000)
    one = tp(0)
    with pytest.raises(StoreClosed, match="full"):
        await store.submit([one] * (MAX_QUEUED + 1))
    assert sample(store, "gateway_store_queue") == 0
    full = store.submit([one] * MAX_QUEUED)  # the writer has not run yet: the queue is full
    assert sample(store, "gateway_store_queue") == MAX_QUEUED
    refused = store.submit([tp(1)])
    assert refused.done()
    with pytest.raises(StoreClosed, match="full"):
        await refused
    assert await settle(full, timeout=30) == [None]
    assert sample(store, "gateway_store_queue") == 0
    await store.write([tp(2)])  # room again
    assert (await read(store.path, "SELECT count(*) FROM touchpoints")) == [(2,)]


async def test_first_touch_is_never_overwritten(open_store: OpenStore) -> None:
    store = await open_store(batch_size=8)
    mine = [tp(n) for n in range(0, 120, 2)]
    theirs = [tp(n, visitor=OTHER) for n in range(1, 120, 2)]
    # Some landings one by one, the rest concurrently so several share a batch.
    for event in mine[:10]:
        await store.write([event])
    futures = [store.submit([e]) for pair in zip(mine[10:], theirs, strict=False) for e in pair]
    futures += [store.submit([e]) for e in theirs[len(mine) - 10 :]]
    assert await settle(*futures) == [None] * len(futures)

    rows = await read(
        store.path,
        "SELECT visitor_key, first_touch_id, last_touch_id, first_seen, last_seen, touch_count"
        " FROM visitors ORDER BY visitor_key",
    )
    assert rows == [
        (VISITOR, mine[0].id, mine[-1].id, mine[0].ts, mine[-1].ts, len(mine)),
        (OTHER, theirs[0].id, theirs[-1].id, theirs[0].ts, theirs[-1].ts, len(theirs)),
    ]


async def test_a_late_older_event_becomes_the_first_touch(open_store: OpenStore) -> None:
    """The first touch is the earliest one recorded: backfilled history older than the live
    first touch takes its place (that is what a backfill is for); live traffic never can."""
    store = await open_store()
    await store.write([tp(10)])
    await store.write([tp(20)])
    await store.write([tp(5)])  # arrives last, happened first (e.g. an imported access log)
    rows = await read(store.path, "SELECT first_touch_id, last_touch_id, touch_count FROM visitors")
    assert rows == [(tp(5).id, tp(20).id, 3)]


async def test_writing_the_same_event_again_changes_nothing(open_store: OpenStore) -> None:
    store = await open_store()
    first, second = tp(1), tp(2)
    await store.write([first])
    await store.write([second])
    await store.write([first])  # a retry in a later batch
    assert await settle(store.submit([second]), store.submit([second])) == [None, None]  # same batch
    await store.write([first, first])  # twice in one submit
    assert (await read(store.path, "SELECT id FROM touchpoints ORDER BY id")) == [(first.id,), (second.id,)]
    rows = await read(store.path, "SELECT first_touch_id, last_touch_id, touch_count FROM visitors")
    assert rows == [(first.id, second.id, 2)]


async def test_submits_made_in_the_next_turns_of_the_loop_join_the_commit(open_store: OpenStore) -> None:
    """The writer lets the event loop turn GATHER_TURNS times before it takes a batch: a request
    already under way submits in time to share the commit instead of waiting for the next one."""
    store = await open_store()
    await store.write([tp(0)])  # the writer is idle again, waiting for work

    async def late(n: int, turns: int) -> None:
        for _ in range(turns):
            await asyncio.sleep(0)
        await store.write([tp(n)])

    first = store.submit([tp(1)])  # wakes the writer
    others = [asyncio.create_task(late(2 + turns, turns)) for turns in range(GATHER_TURNS - 1)]
    assert await settle(first, *others) == [None] * GATHER_TURNS
    assert commits(store) == 2  # tp(0) alone, then tp(1) with every late one
    assert (await read(store.path, "SELECT count(*) FROM touchpoints")) == [(1 + GATHER_TURNS,)]


async def test_commits_checkpoint_the_wal_only_past_checkpoint_pages(tmp_path: Path) -> None:
    """Landings by new visitors each dirty a random page of the visitor index: the writer's
    commits leave the WAL alone well past SQLite's default 1000 pages (a checkpoint in a commit
    holds up every landing queued behind it; the store's checkpoint job, held off here, does it
    beside them), and closing puts everything in the file."""
    store = LocalStore(tmp_path / "gw.db", StorageOptions(), Metrics())
    store.checkpointer.rows, store.checkpointer.seconds = 10**9, 3600.0
    await store.open()
    for n in range(600):  # a commit each: at least three pages each (row, id index, visitor index)
        await store.write([tp(n, visitor=uuid.uuid4().hex)])
    [(busy, frames, _)] = await read(store.path, "PRAGMA wal_checkpoint(PASSIVE)")
    assert busy == 0 and 1000 < frames < CHECKPOINT_PAGES
    await store.close()
    assert (await read(store.path, "SELECT count(*) FROM touchpoints")) == [(600,)]
    assert not await asyncio.to_thread(store.path.with_name("gw.db-wal").exists)


async def test_store_reopens_with_its_data(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "gw.db"
    store = LocalStore(path, StorageOptions(synchronous="full"), Metrics())
    await store.open()
    await store.write([tp(1)])
    await store.close()
    again = LocalStore(path, StorageOptions(), Metrics())
    await again.open()
    try:
        await again.write([tp(2)])
    finally:
        await again.close()
    assert (await read(path, "SELECT count(*) FROM touchpoints")) == [(2,)]
    assert (await read(path, "PRAGMA journal_mode")) == [("wal",)]


async def test_a_slow_commit_ends_the_wait_but_not_the_write(open_store: OpenStore) -> None:
    """max_wait_ms bounds how long a caller waits; the events are still written afterwards."""
    store = await open_store(max_wait_ms=100)
    locker = await asyncio.to_thread(
        sqlite3.connect, store.path, isolation_level=None, check_same_thread=False
    )
    try:
        await asyncio.to_thread(locker.execute, "BEGIN IMMEDIATE")  # the writer now waits on the lock
        started = asyncio.get_running_loop().time()
        [outcome] = await settle(store.submit([tp(1)]), timeout=5)
        waited = asyncio.get_running_loop().time() - started
        assert isinstance(outcome, CommitTimeout)
        assert 0.09 <= waited < 1.0
    finally:
        await asyncio.to_thread(locker.execute, "ROLLBACK")
        await asyncio.to_thread(locker.close)
    await store.write([tp(2)])  # the queue moves again, the late event first
    assert (await read(store.path, "SELECT count(*) FROM touchpoints")) == [(2,)]


async def test_a_write_that_asks_to_be_withdrawn_is_not_written_late(open_store: OpenStore) -> None:
    """``write(…, withdraw=True)`` (an admin API write, whose client is told "not stored; try
    again"): not committed in time, it is taken out of the queue, whether it waited behind a
    batch the lock held up or was in that batch itself, and nothing of it is written later;
    the landing beside it still is."""
    store = await open_store(max_wait_ms=100)
    locker = await asyncio.to_thread(
        sqlite3.connect, store.path, isolation_level=None, check_same_thread=False
    )
    try:
        await asyncio.to_thread(locker.execute, "BEGIN IMMEDIATE")  # the writer now waits on the lock
        # Alone, so in flight: its attempt ends on the busy timeout, and it is taken out then.
        [in_flight] = await settle(asyncio.ensure_future(store.write([tp(2)], withdraw=True)), timeout=15)
        assert isinstance(in_flight, CommitTimeout) and "withdrawn" in str(in_flight)
        landing = store.submit([tp(1)])  # in flight, held up: the next waits behind it
        await asyncio.sleep(0.05)
        [queued] = await settle(asyncio.ensure_future(store.write([tp(3)], withdraw=True)), timeout=5)
        assert isinstance(queued, CommitTimeout) and "withdrawn" in str(queued)
    finally:
        await asyncio.to_thread(locker.execute, "ROLLBACK")
        await asyncio.to_thread(locker.close)
    await settle(landing)
    await store.write([tp(4)])
    assert (await read(store.path, "SELECT id FROM touchpoints ORDER BY id")) == [
        (event_id(1),),
        (event_id(4),),
    ]
    assert store._queued == 0


async def test_a_write_withdrawn_while_the_writer_gathers_its_batch_does_not_stop_the_writer(
    open_store: OpenStore, caplog: pytest.LogCaptureFixture
) -> None:
    """``storage.batch_wait_ms`` longer than ``max_wait_ms`` (both valid): an admin write alone
    in the queue is withdrawn at its deadline while the writer still waits for its batch to
    fill, and the writer then took a batch from the empty queue. It stopped on that
    (``IndexError: pop from an empty deque``): every later event was refused until a restart.
    Now it finds nothing to take, and writes on."""
    store = await open_store(max_wait_ms=50, batch_wait_ms=300)
    [withdrawn] = await settle(asyncio.ensure_future(store.write([tp(1)], withdraw=True)), timeout=5)
    assert isinstance(withdrawn, CommitTimeout) and "withdrawn" in str(withdrawn)
    await asyncio.sleep(0.4)  # past the writer's batch wait
    assert store.accepting, [r.getMessage() for r in caplog.records]
    [late] = await settle(store.submit([tp(2)]), timeout=5)  # it too outlasts max_wait_ms …
    assert isinstance(late, CommitTimeout)
    async with asyncio.timeout(5):
        assert await late.outcome is None  # … and is written all the same
    assert (await read(store.path, "SELECT id FROM touchpoints")) == [(event_id(2),)]
    assert store._queued == 0


async def test_a_wait_ends_at_max_wait_ms_not_up_to_a_quarter_later(open_store: OpenStore) -> None:
    """Each caller waits ``max_wait_ms``, whenever it submitted: the timer wakes at the next
    deadline. It woke every quarter of ``max_wait_ms``, so a submit just after a wake waited
    up to 1¼ of it (1.25 s for the default 1 s) — five submits 50 ms apart cover the phases."""
    store = await open_store(max_wait_ms=1000)
    locker = await asyncio.to_thread(
        sqlite3.connect, store.path, isolation_level=None, check_same_thread=False
    )
    loop = asyncio.get_running_loop()

    async def wait(n: int) -> float:
        await asyncio.sleep(n * 0.05)
        started = loop.time()
        [outcome] = await settle(store.submit([tp(n)]), timeout=5)
        assert isinstance(outcome, CommitTimeout)
        return loop.time() - started

    try:
        await asyncio.to_thread(locker.execute, "BEGIN IMMEDIATE")  # the writer now waits on the lock
        waited = await asyncio.gather(*(wait(n) for n in range(1, 6)))
        assert all(0.99 <= w < 1.1 for w in waited), waited
    finally:
        await asyncio.to_thread(locker.execute, "ROLLBACK")
        await asyncio.to_thread(locker.close)


async def test_mixed_event_types_commit_together(open_store: OpenStore, tmp_path: Path) -> None:
    store = await open_store()
    binding = Binding(
        id=event_id(10), ts=iso(T0), node="test", visitor_key=VISITOR, user_key="u" * 32, rule="login"
    )
    conv = Conversion(
        id=event_id(11),
        ts=iso(T0),
        node="test",
        name="purchase",
        dedup_key="order:A1",
        visitor_key=VISITOR,
        value=49.5,
        currency="EUR",
        order_id="A1",
    )
    await asyncio.gather(store.submit([tp(1), binding]), store.submit([conv]))
    assert await read(tmp_path / "gw.db", "SELECT user_key, rule FROM identities") == [("u" * 32, "login")]
    assert await read(tmp_path / "gw.db", "SELECT value, dedup_key FROM conversions") == [(49.5, "order:A1")]
    # The same order again (a double submit, a webhook): counted once, and the commit succeeds.
    again = Conversion(
        id=event_id(12), ts=iso(T0), node="test", name="purchase", dedup_key="order:A1", user_key="x"
    )
    await store.submit([again])
    assert await read(tmp_path / "gw.db", "SELECT count(*) FROM conversions") == [(1,)]


def conversion(n: int, order: str, *, rule: str = "purchase", origin: str = "rule") -> Conversion:
    return Conversion(
        id=event_id(n),
        ts=iso(T0),
        node="test",
        name=rule,
        dedup_key="order:" + order,
        visitor_key=VISITOR,
        rule=rule,
        origin=origin,
    )


async def test_conversions_are_counted_once_committed_and_duplicates_apart(open_store: OpenStore) -> None:
    store = await open_store()

    def counts(rule: str = "purchase") -> tuple[float, float]:
        return (
            sample(store, "gateway_conversions_total", rule=rule),
            sample(store, "gateway_conversions_duplicate_total", rule=rule),
        )

    await store.write([conversion(1, "A1")])  # alone: the one-statement path
    await store.write([conversion(2, "A1")])  # a retried checkout: the store keeps the first
    assert counts() == (1, 1)
    # In one batch with another table (a transaction), the same order twice in one batch, and
    # two rules on one order: each order is recorded once, under the rule that came first.
    await asyncio.gather(
        store.submit([tp(3), conversion(4, "B1"), conversion(5, "B1", rule="signup")]),
        store.submit([conversion(6, "B1")]),
        store.submit([conversion(7, "C1")]),
    )
    assert counts() == (3, 2) and counts("signup") == (0, 1)
    assert (await read(store.path, "SELECT count(*) FROM conversions")) == [(3,)]
    # A webhook's or an import's conversion is not a rule's: counted by its own metrics.
    await store.write([conversion(8, "D1", rule="billing", origin="webhook")])
    assert counts("billing") == (0, 0)
    # A commit that fails records nothing, and counts nothing: the conversion's own insert
    # refused, or inserted and then rolled back with the request's bad touchpoint.
    await asyncio.to_thread(
        execute,
        store.path,
        "CREATE TRIGGER fail BEFORE INSERT ON conversions BEGIN SELECT RAISE(ABORT, 'injected'); END;",
    )
    (error,) = await settle(store.submit([conversion(9, "E1")]))
    assert isinstance(error, sqlite3.Error)
    await asyncio.to_thread(execute, store.path, "DROP TRIGGER fail;")
    (error,) = await settle(store.submit([conversion(10, "E2"), tp(11, landing_path=None)]))
    assert isinstance(error, sqlite3.IntegrityError)
    assert counts() == (3, 2)
    assert (await read(store.path, "SELECT count(*) FROM conversions")) == [(4,)]


async def test_groups_report_what_was_new(open_store: OpenStore, tmp_path: Path) -> None:
    store = await open_store()

    def receipt(n: int, key: str) -> Receipt:
        return Receipt(id=event_id(n), ts=iso(T0), node="test", sender="billing", kind="event", key=key)

    first = await store.submit_groups([[receipt(1, "e1"), tp(2)], [receipt(3, "e2"), tp(4)]])
    assert first == [True, True]
    # e1 seen before: its group stops at the receipt, so its touchpoint is not written twice.
    second = await store.submit_groups([[receipt(5, "e1"), tp(6)], [receipt(7, "e3"), tp(8)]])
    assert second == [False, True]
    assert await read(tmp_path / "gw.db", "SELECT content FROM touchpoints ORDER BY id") == [
        ("2",),
        ("4",),
        ("8",),
    ]


def binding(
    n: int, user: str = "u", *, visitor: str = VISITOR, rule: str = "login", origin: str = "rule"
) -> Binding:
    return Binding(
        id=event_id(n),
        ts=iso(T0),
        node="test",
        visitor_key=visitor,
        user_key=user * 32,
        rule=rule,
        origin=origin,
    )


async def test_a_visitors_binding_to_a_user_is_stored_once_whoever_writes_it(open_store: OpenStore) -> None:
    """Two stores on one file (two workers, or one gateway and the next after a restart) each
    writing the same pair: one row, the first; counted once, when it committed. Each path a
    binding takes: alone (one statement), in a transaction with other tables, the same pair
    twice in one batch, and a signed event's group."""
    store, other = await open_store(), await open_store()

    def bound(s: LocalStore, rule: str = "login") -> float:
        return sample(s, "gateway_bindings_total", rule=rule)

    await store.write([binding(1)])
    await other.write([binding(2)])  # the same pair, bound by another process: not stored
    await other.write([tp(3), binding(4)])
    await asyncio.gather(
        store.submit([tp(5), binding(6, "v"), binding(7, "v", rule="signup")]),
        store.submit([binding(8, "v")]),
        store.submit([binding(9, "w", visitor=OTHER)]),
    )
    await other.write([binding(10, "w", visitor=OTHER), binding(11, "x", visitor=OTHER)])
    assert await read(store.path, "SELECT id, user_key, rule FROM identities ORDER BY id") == [
        (event_id(1), "u" * 32, "login"),
        (event_id(6), "v" * 32, "login"),
        (event_id(9), "w" * 32, "login"),
        (event_id(11), "x" * 32, "login"),
    ]
    assert (bound(store), bound(store, "signup"), bound(other)) == (3, 0, 1)
    # A signed identify of a pair already bound is accepted, and its receipt kept, so a
    # repeated delivery is still known as one; only the binding is not stored again.
    receipt = Receipt(id=event_id(12), ts=iso(T0), node="test", sender="billing", kind="event", key="e1")
    group = [receipt, binding(13, rule="billing", origin="webhook"), tp(14)]
    assert await other.submit_groups([group]) == [True]
    assert await read(store.path, "SELECT count(*) FROM receipts") == [(1,)]
    assert await read(store.path, "SELECT count(*) FROM identities WHERE origin = 'webhook'") == [(0,)]
    assert await read(store.path, "SELECT count(*) FROM touchpoints WHERE id = ?", event_id(14)) == [(1,)]
    again = [replace(receipt, id=event_id(15)), binding(16, "y", rule="billing", origin="webhook")]
    assert await other.submit_groups([again]) == [False]
    assert await read(store.path, "SELECT count(*) FROM identities WHERE user_key = ?", "y" * 32) == [(0,)]
    assert bound(other, "billing") == 0  # a sender's binding is not a rule's


async def test_a_binding_already_stored_is_found_through_the_visitor_index(open_store: OpenStore) -> None:
    """The check each binding makes before it is written reads one index entry, not the table."""
    store = await open_store()
    plan = await read(store.path, "EXPLAIN QUERY PLAN " + insert_sql(Binding, 2), *event_row(binding(1)) * 2)
    details = [row[3] for row in plan]
    assert any("SEARCH" in d and "COVERING INDEX identities_visitor (visitor_key=?" in d for d in details), (
        details
    )
    assert not any(d.startswith("SCAN identities") or d.startswith("SCAN i ") for d in details), details


async def test_a_verdict_changes_touchpoint_is_found_through_the_touchpoints_key(
    open_store: OpenStore,
) -> None:
    """The check each verdict change makes as it is written (its touchpoint there) reads one
    entry of the touchpoints' primary key, not the table."""
    store = await open_store()
    change = VerdictChange("v1", "2026-11-25T10:00:00.000Z", "n", "t1", "allow", None, [], "rescore")
    plan = await read(
        store.path, "EXPLAIN QUERY PLAN " + insert_sql(VerdictChange, 2), *event_row(change) * 2
    )
    details = [row[3] for row in plan]
    assert any(d.startswith("SEARCH touchpoints USING") and "(id=?)" in d for d in details), details
    assert not any(d.startswith("SCAN touchpoints") for d in details), details


async def test_a_connection_that_cannot_open_leaves_no_thread_behind(tmp_path: Path) -> None:
    """aiosqlite's worker thread would otherwise outlive the error and report to a closed loop
    ("Exception in thread … Event loop is closed" after a command's own message)."""
    import threading

    from storage.local import connect

    before = set(threading.enumerate())
    with pytest.raises(sqlite3.OperationalError):
        await connect(tmp_path)  # a folder
    new = [t for t in threading.enumerate() if t not in before and not t.name.startswith("asyncio_")]
    assert new == []  # the loop's executor threads aside


async def test_none_binds_as_null_through_an_adapter_not_sqlites_lookup(open_store: OpenStore) -> None:
    """A landing's empty fields (term, click ID, country…: 9 of 23 in a plain tagged landing) are
    bound as NULL through an adapter found in ``sqlite3``'s registry at once: without one, the
    module looked for ``__adapt__`` on its protocol type and ``__conform__`` on None for each,
    raising and clearing an AttributeError every time (~2,000 instructions a None on the
    writer thread). What is stored is NULL either way."""
    store = await open_store()
    assert sqlite3.adapters.get((type(None), sqlite3.PrepareProtocol)) is not None
    await store.write([tp(1)])
    rows = await read(store.path, "SELECT term, click_id, country, asn FROM touchpoints")
    assert rows == [(None, None, None, None)]


async def test_columns_none_in_every_row_so_far_are_stored_as_bound(open_store: OpenStore) -> None:
    """The writer writes ``NULL`` into the statement for the columns None in every row it has
    written so far, rather than binding each None: a batch where some row brings a value there
    (a click ID, an ASN of 0, an empty term) stores it, later batches do too, and every row and
    every column's type is what binding each value gives, a repeated id skipped as before."""
    store = await open_store()
    batches = [
        [tp(1), tp(2)],
        [tp(3, click_id_kind="gclid", click_id="x1"), tp(4, asn=0, term="", bot_score=0), tp(5)],
        [tp(6), tp(7, country="DE", region="BY")],
        [tp(8), tp(2, source="again")],  # id 2 again: skipped
    ]
    for batch in batches:
        assert await settle(*[store.submit([e]) for e in batch]) == [None] * len(batch)
    columns = TABLES[Touchpoint].columns
    types = ", ".join(f"typeof({c})" for c in columns)
    select = f"SELECT {', '.join(columns)}, {types} FROM touchpoints ORDER BY id"
    stored = await read(store.path, select)
    await store.close()
    reference = store.path.with_name("reference.db")
    other = LocalStore(reference, StorageOptions(), Metrics())
    await other.open()
    await other.close()

    def bind_every_value() -> list[tuple[Any, ...]]:  # one row a statement, as the mixed path does
        with sqlite3.connect(reference) as db:
            for e in [e for batch in batches for e in batch]:
                db.execute(insert_sql(Touchpoint), event_row(e))
        return query(reference, select)

    assert stored == await asyncio.to_thread(bind_every_value)
    assert len(stored) == 8
    assert [
        (r[columns.index("click_id")], r[columns.index("asn")], r[columns.index("term")]) for r in stored
    ][2:4] == [
        ("x1", None, None),
        (None, 0, ""),
    ]


@pytest.mark.parametrize(
    "event",
    [
        Touchpoint(id="t1", ts="2026-11-25T10:00:00.000Z", node="n", visitor_key=VISITOR),
        Touchpoint(
            id="t2",
            ts="2026-11-25T10:00:00.001Z",
            node="n",
            visitor_key=VISITOR,
            source="news",
            raw_params={"utm_source": "news", "utm_content": 'a "quoted" é'},
            bot_score=40,
            verdict="review",
            reasons=["crawler", "datacenter"],
            asn=64500,
        ),
        Erasure(id="e1", ts="2026-11-25T10:00:00.000Z", node="n", user_key="u" * 32),
        Erasure(
            id="e2",
            ts="2026-11-25T10:00:00.000Z",
            node="n",
            user_key="u" * 32,
            visitors=[VISITOR],
            counts={"touchpoints": 3},
            also_keys=[OTHER],
        ),
        VerdictChange(
            id="v1",
            ts="2026-11-25T10:00:00.000Z",
            node="n",
            touchpoint_id="t1",
            verdict="allow",
            bot_score=None,
            reasons=[],
            origin="analyst",
        ),
    ],
)
def test_a_rows_parameters_are_its_fields_in_column_order_json_as_text(event: Event) -> None:
    """``_Table.params`` (the landing's hot path, a function made per table) gives each event's
    fields in column order, its list and dict fields as msgspec's JSON text, empty ones too
    (``[]``, ``{}``), and ``event_row`` gives the same for one event."""
    expected: list[object] = []
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        expected.append(msgspec.json.encode(value).decode() if isinstance(value, dict | list) else value)
    table = TABLES[type(event)]
    assert table.params([event, event]) == expected + expected
    assert event_row(event) == expected


def test_an_event_type_whose_json_column_may_be_none_is_refused_when_its_table_is_made() -> None:
    """``params`` writes an empty JSON value as its text without encoding it: a None would be
    stored as ``{}`` where msgspec writes ``null``. Such a field is refused up front, naming it."""

    @dataclasses.dataclass(slots=True)
    class Odd:
        table: ClassVar[str] = "odd"
        id: str
        data: dict[str, str] | None = None

    with pytest.raises(TypeError, match=r"Odd\.data: a JSON column may not be None"):
        _Table(Odd)  # type: ignore[arg-type]


async def test_json_columns_are_stored_as_text_empty_or_not(open_store: OpenStore) -> None:
    store = await open_store()
    await store.write([tp(1), tp(2, raw_params={"utm_source": "news"}, reasons=["crawler"])])
    rows = await read(
        store.path,
        "SELECT raw_params, typeof(raw_params), reasons, typeof(reasons) FROM touchpoints ORDER BY id",
    )
    assert rows == [("{}", "text", "[]", "text"), ('{"utm_source":"news"}', "text", '["crawler"]', "text")]


async def test_a_batch_with_groups_or_several_types_after_its_first_submits_commits_all(
    open_store: OpenStore,
) -> None:
    """The writer decides in one pass whether a batch is one table's plain rows (one INSERT): a
    submit with groups, or of another type, anywhere in it sends the whole batch the mixed way."""
    store = await open_store()
    receipt = Receipt(id=event_id(3), ts=iso(T0), node="test", sender="billing", kind="event", key="e1")
    binding = Binding(
        id=event_id(5), ts=iso(T0), node="test", visitor_key=VISITOR, user_key="u" * 32, rule="login"
    )
    futures = [
        store.submit([tp(1)]),
        store.submit([tp(2)]),
        store.submit_groups([[receipt, tp(4)]]),
        store.submit([binding]),
        store.submit([tp(6)]),
    ]
    results = await asyncio.gather(*futures)
    assert results == [None, None, [True], None, None]
    assert commits(store) == 1
    assert await read(store.path, "SELECT content FROM touchpoints ORDER BY id") == [
        ("1",),
        ("2",),
        ("4",),
        ("6",),
    ]
    assert await read(store.path, "SELECT rule FROM identities") == [("login",)]
    # Two tables in one batch, no groups: the mixed way as well.
    # (Another user: the same pair again would be the binding the store has.)
    await asyncio.gather(
        store.submit([tp(7)]), store.submit([replace(binding, id=event_id(8), user_key="v" * 32)])
    )
    assert commits(store) == 2
    assert await read(store.path, "SELECT count(*) FROM identities") == [(2,)]


async def test_a_submit_commits_the_events_it_was_given_not_what_the_list_holds_later(
    open_store: OpenStore,
) -> None:
    # A host submits a request's events, then the response hooks append to that same list and
    # it submits the new ones (gateway/proxy.py, addons/mitm.py). Until 2026-12-06 the first
    # submit kept the list itself: when its batch had not been taken yet, the conversion went
    # in with both submits, counted twice in gateway_conversions_total (or once more as a
    # duplicate), and gateway_store_queue went below zero (seen at -394 after 600 signups).
    store = await open_store()
    events: list[Event] = [tp(0)]
    first = store.submit(events)
    events.append(conversion(1, "o-1"))
    second = store.submit(events[1:])
    assert await settle(first, second) == [None, None]
    assert sample(store, "gateway_conversions_total", rule="purchase") == 1
    assert sample(store, "gateway_conversions_duplicate_total", rule="purchase") == 0
    assert sample(store, "gateway_store_queue") == 0
    assert sample(store, "gateway_store_batch_rows_sum") == 2


NAP = 0.04
"""Seconds each touchpoint's insert sleeps inside the bulk writer's transaction (a temporary
trigger): a batch of 8 holds the write lock ~0.3 s, as an import's 8,192 rows do for 0.3-1.7 s."""
WAITER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=float(sys.argv[2]))
try:
    db.execute("INSERT INTO store_identity (name, value) VALUES ('waiter', 'x')")
except sqlite3.OperationalError as err:
    print(err)
else:
    print("ok")
"""


async def test_a_bulk_writer_leaves_the_write_lock_to_another_process_between_its_commits(
    open_store: OpenStore,
) -> None:
    """An import's back-to-back transactions (``lock_gap`` set) against a live gateway's commit
    in another process: SQLite's busy handler polls, sleeping up to 100 ms between tries, and
    the import took the lock again within a millisecond of each commit, so the waiting commit
    missed every gap and failed "database is locked" after its whole busy timeout, with the
    lock never held for that long by one transaction (the live gateway logged ``store commit
    of 2 events waits`` near an import's end). The bulk writer now leaves the lock free for
    longer than one poll after its commits while another process writes, so the waiter gets
    in after one of its transactions (here: well inside a 4 s busy timeout)."""
    store = await open_store(batch_size=8, max_wait_ms=60_000)
    store.lock_gap = LOCK_GAP
    assert store._db is not None
    await store._db.create_function("nap", 0, lambda: time.sleep(NAP))
    await store.on_writer("CREATE TEMP TRIGGER nap AFTER INSERT ON main.touchpoints BEGIN SELECT nap(); END")
    stop = asyncio.Event()

    async def bulk() -> int:
        inflight: list[asyncio.Future[None]] = []
        n = 0
        while not stop.is_set():  # as the import: one batch committing, one queued behind it
            inflight.append(store.submit([tp(n + i) for i in range(8)]))
            n += 8
            while len(inflight) >= 2:
                await inflight.pop(0)
        for future in inflight:
            await future
        return n

    writing = asyncio.create_task(bulk())
    try:
        async with asyncio.timeout(60):
            while not await read(store.path, "SELECT 1 FROM touchpoints LIMIT 1"):
                await asyncio.sleep(0.01)
            waiter = await asyncio.create_subprocess_exec(
                sys.executable, "-c", WAITER, str(store.path), "4",
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            said, _ = await waiter.communicate()
    finally:
        stop.set()
        async with asyncio.timeout(60):
            written = await writing
    assert said.decode().strip() == "ok"
    assert (await read(store.path, "SELECT count(*) FROM touchpoints")) == [(written,)]


async def test_a_wait_on_the_lock_counts_from_when_the_commit_began(
    open_store: OpenStore, caplog: pytest.LogCaptureFixture
) -> None:
    """``failing``'s time (``/healthz``'s ``failing_since``, and "go through again, N s") is when
    the first waiting commit began, not when its busy timeout ran out ``BUSY_TIMEOUT_MS`` later:
    the events waited from then."""
    store = await open_store(max_wait_ms=60_000)
    locker = await asyncio.to_thread(
        sqlite3.connect, store.path, isolation_level=None, check_same_thread=False
    )
    try:
        await asyncio.to_thread(locker.execute, "BEGIN IMMEDIATE")  # the writer now waits on the lock
        began = time.time()
        pending = store.submit([tp(1)])
        while store.failing is None:  # the first commit gives up after the busy timeout
            await asyncio.sleep(0.05)
        waited = time.time() - began
        assert waited >= BUSY_TIMEOUT_MS / 1000 - 0.5
        # Before: the time the busy timeout ran out, BUSY_TIMEOUT_MS after the commit began. Half
        # of it is the margin for a loaded machine's writer picking the submit up late.
        assert store.failing[0] < began + BUSY_TIMEOUT_MS / 1000 / 2
    finally:
        await asyncio.to_thread(locker.execute, "ROLLBACK")
        await asyncio.to_thread(locker.close)
    with caplog.at_level("INFO", logger="gateway.storage"):
        await settle(pending, timeout=15)
    [record] = [r for r in caplog.records if "go through again" in r.getMessage()]
    line = record.getMessage()
    assert float(line.split(", ")[1].split(" s ")[0]) >= waited - 0.5
    assert record.levelname == "INFO"  # a resolution (a warning until 2026-12-07)


async def test_a_rollback_after_a_cancelled_commit_keeps_the_exception_being_handled(tmp_path: Path) -> None:
    """A task cancelled while its COMMIT runs in aiosqlite's thread: the COMMIT goes on and ends
    the transaction, then the ``except``'s ROLLBACK finds none. Its "no transaction is active"
    took the place of the ``CancelledError`` (seen in a suite run: a stopped sync task kept
    retrying and its gateway's shutdown waited); ``rollback`` leaves the cancellation as it was."""
    db = await connect(tmp_path / "gw.db")
    try:
        await db.execute("CREATE TABLE t (x)")
        await db.execute("BEGIN IMMEDIATE")
        await db.execute("INSERT INTO t VALUES (1)")
        committing = asyncio.ensure_future(db.execute("COMMIT"))  # queued first, as in the race
        await asyncio.sleep(0)
        assert db.in_transaction  # what the except sees: the COMMIT has not run yet
        with pytest.raises(asyncio.CancelledError):
            try:
                raise asyncio.CancelledError
            except BaseException:
                await rollback(db)
                raise
        await committing
        assert not db.in_transaction
        async with db.execute("SELECT x FROM t") as cursor:
            assert await cursor.fetchall() == [(1,)]  # the COMMIT's work stands
    finally:
        await db.close()
