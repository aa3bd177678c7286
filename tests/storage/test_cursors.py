"""Durable readers' cursors on a real SQLite store: deletes that free the newest rowids (an
erasure, a retention purge) never hide the rows inserted after them from a reader."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.events import Binding, Touchpoint, iso
from gateway.ids import uuid7
from gateway.metrics import Metrics
from gateway.options import StorageOptions
from storage.cursors import MARKS, WriteClock, advance, cursor_at, read_after
from storage.erasure import erase_user
from storage.local import LocalStore, connect
from storage.retention import purge_local

NOW = datetime.now(UTC).replace(microsecond=0)
NAME = "test:touchpoints"
COLUMNS = ["id", "visitor_key"]


def touch(visitor: str, at: datetime) -> Touchpoint:
    return Touchpoint(
        id=uuid7(int(at.timestamp() * 1000)),
        ts=iso(at),
        node="t",
        visitor_key=visitor,
        source="news",
        landing_path="/",
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[LocalStore]:
    store = LocalStore(tmp_path / "gw.db", StorageOptions(node="t"), Metrics())
    await store.open()
    yield store
    await store.close()


async def test_a_batch_read_before_an_erasure_does_not_move_its_cursor_past_new_rows(
    store: LocalStore,
) -> None:
    """A reader read rows 1-6 and is sending them; the erasure deletes 4-6 (the user's) and the
    next inserts take rowids 4-6 again. Moving the cursor to 6 would hide them for ever: the
    move fails, and the reader reads again from where the erasure left the cursor."""
    anonymous, known = "a" * 32, "b" * 32
    await store.write([touch(anonymous, NOW - timedelta(minutes=9 - n)) for n in range(3)])
    await store.write([touch(known, NOW - timedelta(minutes=5 - n)) for n in range(3)])
    await store.write([Binding(uuid7(), iso(NOW), "t", known, "u-1", "login")])
    db = await connect(store.path)
    try:
        after, version = await cursor_at(db, NAME)
        rows, last = await read_after(db, "touchpoints", COLUMNS, after, 100)
        assert (after, len(rows), last) == (0, 6, 6)  # the batch in flight
        await erase_user(
            store.path, "u-1", "raw", body_key=b"k" * 32, event_id=uuid7(), ts=iso(NOW), node="t"
        )
        fresh = [touch("c" * 32, NOW + timedelta(seconds=n)) for n in range(3)]
        await store.write(fresh)  # rowids 4, 5 and 6 again
        assert await advance(db, NAME, after, last, version) is None
        after, version = await cursor_at(db, NAME)
        rows, last = await read_after(db, "touchpoints", COLUMNS, after, 100)
        assert {row[0] for row in rows} >= {t.id for t in fresh}
        assert await advance(db, NAME, after, last, version) is not None
    finally:
        await db.close()


async def test_a_purge_that_empties_a_table_leaves_no_cursor_past_the_next_rows(store: LocalStore) -> None:
    """Retention deletes every row of a table: SQLite numbers the next rows from 1 again."""
    await store.write([touch("a" * 32, NOW - timedelta(days=100, minutes=n)) for n in range(5)])
    db = await connect(store.path)
    try:
        after, version = await cursor_at(db, NAME)
        _, last = await read_after(db, "touchpoints", COLUMNS, after, 100)
        assert await advance(db, NAME, after, last, version) is not None
        assert (await cursor_at(db, NAME))[0] == 5
        assert (await purge_local(store.path, NOW - timedelta(days=30)))["touchpoints"] == 5
        fresh = [touch("c" * 32, NOW + timedelta(seconds=n)) for n in range(3)]
        await store.write(fresh)
        after, _ = await cursor_at(db, NAME)
        rows, _ = await read_after(db, "touchpoints", COLUMNS, after, 100)
        assert [row[0] for row in rows] == [t.id for t in fresh]
    finally:
        await db.close()


async def test_a_delete_that_leaves_the_newest_rows_does_not_stop_a_batch_in_flight(
    store: LocalStore,
) -> None:
    """Nothing newest deleted, no rowid freed: a batch read before the erasure moves its cursor
    (an erasure of anyone, or a purge of old rows, no longer makes every reader send again)."""
    await store.write([touch("a" * 32, NOW - timedelta(minutes=9 - n)) for n in range(3)])
    db = await connect(store.path)
    try:
        after, version = await cursor_at(db, NAME)
        _, last = await read_after(db, "touchpoints", COLUMNS, after, 100)
        await erase_user(
            store.path, "nobody", "raw", body_key=b"k" * 32, event_id=uuid7(), ts=iso(NOW), node="t"
        )
        assert await advance(db, NAME, after, last, version) is not None
    finally:
        await db.close()


def test_the_write_clock_bounds_a_row_by_the_looks_around_it() -> None:
    """A row first seen at one look was written after the look before and by that one; a row
    there at the first look, by then; one no look saw yet, since the last."""
    clock = WriteClock()
    clock.observe("t", 10, 100.0)  # the first look: rows 1-10 there
    clock.observe("t", 10, 105.0)  # nothing new
    clock.observe("t", 15, 110.0)
    clock.observe("t", 20, 115.0)
    assert clock.bounds("t", 3) == (None, 100.0)
    assert clock.bounds("t", 11) == (100.0, 110.0)
    assert clock.bounds("t", 16) == (110.0, 115.0)
    assert clock.bounds("t", 21) is None
    # The newest rows deleted (an erasure): their rowids, taken again, are rows written later.
    clock.observe("t", 12, 120.0)
    clock.observe("t", 18, 125.0)
    assert clock.bounds("t", 16) == (120.0, 125.0)
    assert clock.bounds("t", 11) == (100.0, 120.0)


def test_the_write_clock_keeps_a_bounded_memory_whose_bounds_only_widen() -> None:
    clock = WriteClock()
    for n in range(MARKS * 3):
        clock.observe("t", n, float(n))
    assert len(clock._seen["t"]) <= MARKS
    for rowid in (1, 500, MARKS, MARKS * 3 - 1):
        bounds = clock.bounds("t", rowid)
        assert bounds is not None
        not_before, by = bounds
        assert not_before is not None and not_before <= rowid - 1 and by >= rowid
