"""Reports keep every binding's visitor and person from one report to the next (migration
0009's counters say when they moved): after each kind of change to the bindings, a report
must credit exactly what a reports engine that never kept anything credits."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bench.synth import generate
from gateway.attribution import Attribution
from gateway.channels import Channels
from gateway.events import iso
from gateway.options import AttributionOptions, ChannelsOptions
from storage.crediting import Table
from storage.people import People, Share, Snapshot
from storage.report_parts import NEWER_BINDINGS
from storage.reports import Reports

SINCE, UNTIL = datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
MODELS = ["first_touch", "last_touch", "linear"]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "synth.db"
    generate(path, 3000, 300, seed=5, days=30)
    return path


@pytest.fixture(scope="module")
def channels() -> Channels:
    return Channels(ChannelsOptions())


@pytest.fixture
async def reports(store: Path, channels: Channels) -> AsyncIterator[Reports]:
    engine = Reports(store, Attribution(AttributionOptions()), channels, processes=1)
    await engine.open()
    yield engine
    await engine.close()


async def fresh(store: Path, channels: Channels) -> Table:
    """The credits as an engine that has kept nothing reads them."""
    engine = Reports(store, Attribution(AttributionOptions()), channels, processes=1)
    await engine.open()
    try:
        return await engine.credit(SINCE, UNTIL, MODELS)
    finally:
        await engine.close()


def write(store: Path, sql: str, *args: object) -> None:
    db = sqlite3.connect(store, isolation_level=None)
    try:
        db.execute(sql, args)
    finally:
        db.close()


def read(store: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    db = sqlite3.connect(store)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def a_new_device(store: Path) -> tuple[str, str]:
    """A converted user, and a visitor bound to nobody with landings in the week before one
    of that user's conversions: binding them moves credit."""
    for ts, user in read(
        store, "SELECT ts, user_key FROM conversions WHERE user_key IS NOT NULL ORDER BY id"
    ):
        at = datetime.fromisoformat(str(ts))
        found = read(
            store,
            "SELECT t.visitor_key FROM touchpoints t WHERE t.ts < ? AND t.ts >= ?"
            " AND t.visitor_key NOT IN (SELECT visitor_key FROM identities) ORDER BY t.ts LIMIT 1",
            ts,
            iso(at - timedelta(days=6)),
        )
        if found:
            return str(found[0][0]), str(user)
    raise AssertionError("the generated store has no such pair")


BIND = (
    "INSERT INTO identities (id, ts, node, visitor_key, user_key, rule, origin)"
    " VALUES (?, '2026-11-30T00:00:00.000000Z', 'test', ?, ?, 'login', 'rule')"
)


async def test_new_bindings_are_added_to_the_kept_people(
    store: Path, channels: Channels, reports: Reports
) -> None:
    before = await reports.credit(SINCE, UNTIL, MODELS)
    kept = reports._everyone_kept
    assert kept is not None and before == await fresh(store, channels)
    visitor, user = await asyncio.to_thread(a_new_device, store)
    await asyncio.to_thread(write, store, BIND, "zzzzzzzz-later", visitor, user)  # a later id: added
    after = await reports.credit(SINCE, UNTIL, MODELS)
    assert reports._everyone_kept is kept and kept.newest == "zzzzzzzz-later"  # only the new row was read
    assert after != before  # the new device's landing now earns credit
    assert after == await fresh(store, channels)
    assert await reports.credit(SINCE, UNTIL, MODELS) == after  # nothing new: the same people


@pytest.mark.parametrize(
    "change",
    [
        # An imported binding older than the newest kept one may change a visitor's person.
        (BIND, "00000000-older"),
        # Erasure and retention delete; an update moves a binding.
        ("DELETE FROM identities WHERE id = (SELECT min(id) FROM identities)",),
        ("UPDATE identities SET user_key = 'someone-else' WHERE id = (SELECT max(id) FROM identities)",),
        # REPLACE deletes the old row without the delete trigger; its id is no later than the newest.
        (
            "INSERT OR REPLACE INTO identities (id, ts, node, visitor_key, user_key, rule, origin)"
            " SELECT id, ts, node, visitor_key, 'someone-else', rule, origin FROM identities"
            " WHERE id = (SELECT max(id) FROM identities)",
        ),
    ],
    ids=["older-insert", "delete", "update", "replace"],
)
async def test_any_other_change_reads_every_binding_again(
    store: Path, channels: Channels, reports: Reports, change: tuple[str, ...]
) -> None:
    await reports.credit(SINCE, UNTIL, MODELS)
    kept = reports._everyone_kept
    visitor, user = await asyncio.to_thread(a_new_device, store)
    sql, *args = change
    await asyncio.to_thread(write, store, sql, *([*args, visitor, user] if sql == BIND else args))
    after = await reports.credit(SINCE, UNTIL, MODELS)
    assert reports._everyone_kept is not None and reports._everyone_kept is not kept
    assert after == await fresh(store, channels)


async def test_the_counters_count_every_change(store: Path) -> None:
    def counters() -> tuple[object, ...]:
        return read(store, "SELECT inserted, changed FROM table_versions WHERE name = 'identities'")[0]

    start = await asyncio.to_thread(counters)
    await asyncio.to_thread(write, store, BIND, "zzzzzzzz-1", "v", "u")
    await asyncio.to_thread(write, store, "UPDATE identities SET rule = 'x' WHERE id = 'zzzzzzzz-1'")
    await asyncio.to_thread(write, store, "DELETE FROM identities WHERE id = 'zzzzzzzz-1'")
    inserted, changed = start
    assert await asyncio.to_thread(counters) == (int(str(inserted)) + 1, int(str(changed)) + 2)


async def test_without_its_triggers_nothing_is_kept(
    store: Path, channels: Channels, reports: Reports
) -> None:
    """A table rebuilt by hand loses its triggers: the counters no longer see every change."""
    await asyncio.to_thread(write, store, "DROP TRIGGER identities_deleted")
    await reports.credit(SINCE, UNTIL, MODELS)
    assert reports._everyone_kept is None
    await asyncio.to_thread(
        write, store, "DELETE FROM identities WHERE id = (SELECT min(id) FROM identities)"
    )
    assert await reports.credit(SINCE, UNTIL, MODELS) == await fresh(store, channels)


def _kept(reports: Reports, part: object) -> bool:
    return reports._everyone_kept is not None


async def test_every_process_forgets_the_bindings_between_runs_of_reports(
    store: Path, channels: Channels
) -> None:
    """An erased user's keys stay in no process's memory longer than a short idle time."""
    pooled = Reports(store, Attribution(AttributionOptions()), channels, processes=2, min_slice=10)
    pooled.recycle_after = 0.2
    await pooled.open()
    try:
        await pooled.credit(SINCE, UNTIL, MODELS)
        assert len(pooled._pool.pids) == 2  # the report was shared
        assert await pooled.run(pooled._pool.map, _kept, [(None, None)] * 2) == [True, True]
        for _ in range(100):  # each report above puts the forgetting off again
            await asyncio.sleep(0.1)
            if pooled._idle is None and pooled._recycling is not None and pooled._recycling.done():
                break
        assert await pooled.run(pooled._pool.map, _kept, [(None, None)] * 2) == [False, False]
        assert await pooled.credit(SINCE, UNTIL, MODELS) == await fresh(store, channels)
    finally:
        await pooled.close()


def snapshot(store: Path, worker: int = 0) -> tuple[Share, list[tuple[str | None, str | None]]]:
    """A share of two as the gateway cuts it now, and the period's conversions' (visitor, user)."""
    ((last, rows),) = read(store, "SELECT max(id), count(*) FROM identities")
    sql = "SELECT id, visitor_key, user_key FROM conversions WHERE ts >= ? AND ts < ? ORDER BY id"
    convs = read(store, sql, iso(SINCE), iso(UNTIL))
    share = Share(worker, 2, Snapshot(str(last), int(str(rows))), Snapshot(str(convs[-1][0]), len(convs)))
    return share, [(str(v) if v else None, str(u) if u else None) for _, v, u in convs]


def groups(people: People, convs: list[tuple[str | None, str | None]]) -> tuple[object, ...]:
    return [people.mine(v, u) for v, u in convs], people.visitors(), people.fingerprint


async def test_a_share_takes_the_kept_bindings_when_they_are_its_snapshot(
    store: Path, reports: Reports
) -> None:
    """A worker that keeps exactly the snapshot's bindings groups its people from them; one
    that must read them (a binding came since) finds the same groups and the same checksum,
    so the shares of one report agree whichever way each worker went."""
    share, convs = await asyncio.to_thread(snapshot, store)
    kept, bound = await reports.run(reports._share_people, share, convs)
    assert reports._everyone_kept is not None and kept.users_of is reports._everyone_kept.people.users_of
    assert bound == share.bindings.rows
    expected = groups(kept, convs)
    assert any(expected[0]) and not all(expected[0])  # some conversions are this share's
    await asyncio.to_thread(write, store, BIND, "zzzzzzzz-later", "a-visitor", "a-user")
    read_again, bound = await reports.run(reports._share_people, share, convs)
    assert read_again.users_of is not reports._everyone_kept.people.users_of  # the snapshot's, read
    assert bound == share.bindings.rows and groups(read_again, convs) == expected
    # The next report's snapshot has the new binding, which the kept ones gained.
    share, convs = await asyncio.to_thread(snapshot, store)
    kept, bound = await reports.run(reports._share_people, share, convs)
    assert kept.users_of is reports._everyone_kept.people.users_of and bound == share.bindings.rows


@pytest.mark.parametrize(
    "changes",
    [
        [("UPDATE identities SET user_key = 'someone-else' WHERE id = (SELECT min(id) FROM identities)",)],
        # An erased binding, and an imported one older than the snapshot's newest: the same
        # number of rows and the same newest id.
        [
            ("DELETE FROM identities WHERE id = (SELECT min(id) FROM identities)",),
            (BIND, "00000000-older", "a-visitor", "a-user"),
        ],
        # REPLACE deletes a binding of the snapshot without the delete trigger.
        [
            (
                "INSERT OR REPLACE INTO identities (id, ts, node, visitor_key, user_key, rule, origin)"
                " SELECT id, ts, node, visitor_key, 'someone-else', rule, origin FROM identities"
                " WHERE id = (SELECT min(id) FROM identities)",
            )
        ],
    ],
    ids=["update", "erased-and-older-insert", "replace"],
)
async def test_shares_that_read_other_bindings_disagree(
    store: Path, reports: Reports, changes: list[tuple[str, ...]]
) -> None:
    """A worker reading after a binding of the snapshot changed checksums it otherwise, kept
    bindings or not: the report then runs in one process (``Reports.count_moves``)."""
    share, convs = await asyncio.to_thread(snapshot, store)
    before, _ = await reports.run(reports._share_people, share, convs)
    for sql, *args in changes:
        await asyncio.to_thread(write, store, sql, *args)
    after, bound = await reports.run(reports._share_people, share, convs)
    assert bound == share.bindings.rows and after.fingerprint != before.fingerprint
    reports._everyone_kept = None  # a worker that kept nothing reads them, and agrees with this one
    fresh_worker, _ = await reports.run(reports._share_people, share, convs)
    assert fresh_worker.fingerprint == after.fingerprint


async def test_a_pooled_data_driven_report_shares_its_people_report_after_report(
    store: Path, channels: Channels, caplog: pytest.LogCaptureFixture
) -> None:
    """The workers keep the bindings between data_driven reports too, and stay shared when a
    binding comes between two reports: the credits are the one-process engine's each time."""
    pooled = Reports(
        store, Attribution(AttributionOptions()), channels, processes=2, min_slice=10_000, min_share=500
    )
    await pooled.open()
    caplog.set_level(logging.INFO, "gateway.reports")
    try:
        for round in range(3):
            if round == 2:
                visitor, user = await asyncio.to_thread(a_new_device, store)
                await asyncio.to_thread(write, store, BIND, "zzzzzzzz-later", visitor, user)
            got = await pooled.credit(SINCE, UNTIL, ["data_driven"])
            single = Reports(store, Attribution(AttributionOptions()), channels, processes=1)
            await single.open()
            try:
                assert got == await single.credit(SINCE, UNTIL, ["data_driven"])
            finally:
                await single.close()
        assert len(pooled._pool.pids) == 2 and "gateway process" not in caplog.text
        assert await pooled.run(pooled._pool.map, _kept, [(None, None)] * 2) == [True, True]
    finally:
        await pooled.close()


def test_the_new_bindings_are_found_by_their_rowids(store: Path) -> None:
    """A report reads only the bindings newer than those it keeps: a rowid range, not a walk of
    the whole id index (which the plain ``ORDER BY id`` chose)."""
    plan = read(store, f"EXPLAIN QUERY PLAN {NEWER_BINDINGS}", 1)
    details = " | ".join(str(row[-1]) for row in plan)
    assert "SEARCH identities USING INTEGER PRIMARY KEY (rowid>?)" in details, details
    assert "SCAN identities" not in details, details
