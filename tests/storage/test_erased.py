"""The store's writer leaves out late rows (``storage.erased``): a touchpoint, binding or
conversion of a user or visitor erased at or after its time, which came after the erasure (a
request in flight when it was made). The erasure is stored by another connection, as the admin
API's worker, ``gateway erase`` or the central sync store it, after the writer has read the
erasures: each writer on the file (each worker's) finds it before its rows go in. Rows of anyone
else, and rows dated after the erasure (new activity), are stored as ever."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.events import Binding, Conversion, Event, Receipt, Touchpoint, VerdictChange, iso
from gateway.ids import uuid7
from gateway.keys import Keys
from storage.erased import ErasedWatch
from storage.erasure import erase_user
from storage.local import LOCKED, LocalStore
from tests.storage.stores import OpenStore, execute, landing, read

KEYS = Keys.from_master(b"m" * 32)
ALICE = KEYS.user_key("alice@example.com")
PHONE, LAPTOP, STRANGER = (KEYS.visitor_key(d) for d in ("phone-1", "laptop-1", "stranger-1"))
NOW = datetime.now(UTC)
BEFORE, AFTER = NOW - timedelta(seconds=5), NOW + timedelta(seconds=5)


def conversion(at: datetime, visitor: str | None, user: str | None, order: str) -> Conversion:
    return Conversion(
        uuid7(int(at.timestamp() * 1000)), iso(at), "a", "buy", f"order:{order}", visitor, user, 5.0, "EUR"
    )


def binding(at: datetime, visitor: str, user: str = ALICE) -> Binding:
    return Binding(uuid7(int(at.timestamp() * 1000)), iso(at), "a", visitor, user, "login")


async def erase_alice(path: Path) -> None:
    await erase_user(
        path,
        ALICE,
        "alice@example.com",
        body_key=b"s" * 32,
        event_id=uuid7(int(NOW.timestamp() * 1000)),
        ts=iso(NOW),
        node="a",
        keys=KEYS,
    )


def late_rows(store: LocalStore) -> dict[str, float]:
    found: dict[str, float] = {}
    for metric in store.metrics.registry.collect():
        if metric.name == "gateway_erased_late_rows":
            for s in metric.samples:
                if s.name.endswith("_total"):
                    found[s.labels["table"]] = s.value
    return found


async def test_every_writer_on_the_file_leaves_out_the_late_rows_of_an_erasure_stored_after_it_read_them(
    open_store: OpenStore,
) -> None:
    """Two writers on one store (two workers), each having read the erasures (none) at open
    and committed since. Alice is erased through a third connection. Then each commits rows of
    her and her phone dated before the erasure (left out, counted, the submit answered as
    stored) beside rows of a stranger and rows dated after the erasure (stored): one batch of a
    table (the hot path), and one of several tables (a transaction)."""
    one, two = await open_store(), await open_store()
    await one.write([binding(BEFORE, PHONE)])
    await two.write([landing(BEFORE, PHONE)])
    await erase_alice(one.path)
    assert await read(one.path, "SELECT count(*) FROM identities") == [(0,)]
    assert await read(one.path, "SELECT count(*) FROM touchpoints") == [(0,)]

    await one.write([landing(BEFORE, PHONE, source="late"), landing(BEFORE, STRANGER, source="kept")])
    await two.write([conversion(BEFORE, None, ALICE, "1")])
    await two.write([binding(BEFORE, LAPTOP)])
    await one.write(
        [
            conversion(BEFORE, PHONE, None, "2"),
            landing(BEFORE, PHONE, source="late"),
            landing(AFTER, PHONE, source="again"),
            conversion(AFTER, PHONE, ALICE, "3"),
            Receipt(uuid7(), iso(BEFORE), "a", "crm", "delivery", "k:1"),
        ]
    )
    assert await read(one.path, "SELECT source FROM touchpoints ORDER BY source") == [("again",), ("kept",)]
    assert await read(one.path, "SELECT dedup_key FROM conversions") == [("order:3",)]
    assert await read(one.path, "SELECT count(*) FROM identities") == [(0,)]
    assert await read(one.path, "SELECT count(*) FROM receipts") == [(1,)]
    assert late_rows(one) == {"touchpoints": 2.0, "conversions": 1.0}
    assert late_rows(two) == {"conversions": 1.0, "identities": 1.0}
    # Landings counted are those stored: "kept" and "again".
    assert one.metrics.registry.get_sample_value("gateway_touchpoints_total") == 2.0


async def test_an_erasure_the_central_sync_applied_is_one_too(open_store: OpenStore) -> None:
    """A key erased through another node, as the central sync records it here
    (``central_erasures``): its late rows are left out as those of an erasure made here."""
    store = await open_store()
    await store.write([landing(BEFORE, STRANGER)])
    await asyncio.to_thread(
        execute,
        store.path,
        "INSERT INTO central_erasures (key, erased_at, applied, deleted)"
        f" VALUES ('{PHONE}', '{iso(NOW)}', '{iso(NOW)}', 0)",
    )
    await store.write([landing(BEFORE, PHONE), landing(AFTER, PHONE, source="again")])
    assert await read(
        store.path, "SELECT visitor_key, source FROM touchpoints WHERE visitor_key = ?", PHONE
    ) == [(PHONE, "again")]
    assert late_rows(store) == {"touchpoints": 1.0}


async def test_a_replayed_batch_with_no_erasure_since_is_no_late_row(open_store: OpenStore) -> None:
    """A batch the store has already (every row skipped) inserts nothing, as a guarded one held
    back would: the writer looks at the erasures, finds none new, and leaves nothing out."""
    store = await open_store()
    rows: list[Touchpoint] = [landing(BEFORE, PHONE), landing(BEFORE, STRANGER)]
    await store.write(rows)
    await store.write(rows)
    assert await read(store.path, "SELECT count(*) FROM touchpoints") == [(2,)]
    assert late_rows(store) == {}


OLD = NOW - timedelta(minutes=1)
TABLET = KEYS.visitor_key("tablet-1")
EARLIER_USERS = [f"earlier-{n}@example.com" for n in range(8)]


async def erase(path: Path, raw_user_id: str, at: datetime) -> None:
    """``raw_user_id`` erased at ``at`` by a connection of its own (the admin API's worker,
    ``gateway erase``): one ``erasures`` row."""
    await erase_user(
        path,
        KEYS.user_key(raw_user_id),
        raw_user_id,
        body_key=b"s" * 32,
        event_id=uuid7(int(at.timestamp() * 1000)),
        ts=iso(at),
        node="a",
        keys=KEYS,
    )


async def erased_elsewhere(path: Path, key: str, at: datetime) -> None:
    """``key`` erased through another node at ``at``, recorded as the central sync records it
    (``storage.sync._apply_batch``: again under a new id when erased again)."""
    await asyncio.to_thread(
        execute,
        path,
        "INSERT OR REPLACE INTO central_erasures (key, erased_at, applied, deleted)"
        f" VALUES ('{key}', '{iso(at)}', '{iso(NOW)}', 0)",
    )


async def test_a_writer_reads_only_the_erasures_stored_since_it_last_read_them(open_store: OpenStore) -> None:
    """A writer that has read 16 erasures (8 made here, 8 through other nodes), and then finds
    the mark moved, reads the new ones only (3 rows: Alice erased here, the laptop erased again
    and the tablet erased through other nodes), not all 18 again, and still leaves out the late
    rows of the new keys and of the old ones, each key at its latest erasure: the laptop,
    erased at OLD and again at NOW, has its rows before NOW left out. On the hot path (one
    table) and on the mixed one (in the transaction), where Alice, erased again later, has her
    rows before that later time left out and her phone (not erased with her again) keeps its
    first time."""
    store = await open_store()
    await store.write([binding(OLD - timedelta(seconds=30), PHONE)])
    for raw in EARLIER_USERS:
        await erase(store.path, raw, OLD)
    for n in range(7):
        await erased_elsewhere(store.path, KEYS.visitor_key(f"earlier-device-{n}"), OLD)
    await erased_elsewhere(store.path, LAPTOP, OLD)
    await store.write([landing(OLD, STRANGER, source="first")])
    assert store._erased.rows_read == 16  # all of them: read first

    await erase_alice(store.path)
    await erased_elsewhere(store.path, LAPTOP, NOW)
    await erased_elsewhere(store.path, TABLET, NOW)
    earlier = KEYS.user_key(EARLIER_USERS[3])
    await store.write(
        [
            landing(BEFORE, PHONE, source="late"),  # erased with Alice, here
            landing(BEFORE, TABLET, source="late"),  # erased elsewhere, new
            landing(BEFORE, LAPTOP, source="late"),  # erased elsewhere again: dated after the first
            landing(OLD - timedelta(seconds=1), KEYS.visitor_key("earlier-device-2"), source="late"),
            landing(BEFORE, KEYS.visitor_key("earlier-device-2"), source="kept-1"),
            landing(BEFORE, STRANGER, source="kept-2"),
            landing(AFTER, LAPTOP, source="kept-3"),
        ]
    )
    assert store._erased.rows_read == 3
    assert await read(store.path, "SELECT source FROM touchpoints ORDER BY source") == [
        ("first",),
        ("kept-1",),
        ("kept-2",),
        ("kept-3",),
    ]
    assert late_rows(store) == {"touchpoints": 4.0}

    # Alice erased again, later: the mixed path (a transaction of several tables) reads it alone.
    again = NOW + timedelta(seconds=10)
    await erase(store.path, "alice@example.com", again)
    between = NOW + timedelta(seconds=2)
    await store.write(
        [
            conversion(between, None, ALICE, "late"),  # after her first erasure, before the second
            conversion(OLD - timedelta(seconds=1), None, earlier, "late-too"),
            conversion(BEFORE, None, earlier, "kept-4"),
            landing(between, PHONE, source="kept-5"),  # her phone's time is still NOW
            binding(again + timedelta(seconds=1), LAPTOP),
        ]
    )
    assert store._erased.rows_read == 1
    assert await read(store.path, "SELECT dedup_key FROM conversions") == [("order:kept-4",)]
    assert await read(store.path, "SELECT source FROM touchpoints WHERE source = 'kept-5'") == [("kept-5",)]
    assert await read(store.path, "SELECT count(*) FROM identities") == [(1,)]
    assert late_rows(store) == {"touchpoints": 4.0, "conversions": 2.0}


async def test_a_writer_reads_the_erasures_whole_again_when_rows_of_them_were_deleted(
    open_store: OpenStore,
) -> None:
    """Nothing of the gateway deletes erasures; if rows are deleted all the same (the file
    edited by hand), what the writer read is no longer known to hold, and the rows past it may
    not be the new ones: a new erasure takes the rowid of a deleted one. The writer finds the
    largest rowid or the count gone back and reads them whole: the new erasure is not missed."""
    store = await open_store()
    for raw in EARLIER_USERS:
        await erase(store.path, raw, OLD)
    await store.write([landing(OLD, STRANGER, source="first")])
    assert store._erased.rows_read == 8

    # The two latest erasure records deleted, then Alice erased: her row takes the first of
    # their rowids, below the largest the writer read.
    await asyncio.to_thread(
        execute,
        store.path,
        "DELETE FROM erasures WHERE rowid IN (SELECT rowid FROM erasures ORDER BY rowid DESC LIMIT 2)",
    )
    await erase_alice(store.path)
    assert await read(store.path, "SELECT max(rowid), count(*) FROM erasures") == [(7, 7)]
    await store.write([conversion(BEFORE, None, ALICE, "late"), conversion(BEFORE, STRANGER, None, "kept")])
    assert store._erased.rows_read == 7
    assert await read(store.path, "SELECT dedup_key FROM conversions") == [("order:kept",)]

    # One record deleted from the middle (the largest rowid as it was), and a key erased
    # through another node (the mark moves): the count went back, read whole again.
    await asyncio.to_thread(execute, store.path, "DELETE FROM erasures WHERE rowid = 3")
    await erased_elsewhere(store.path, TABLET, NOW)
    await store.write([landing(BEFORE, TABLET, source="late"), landing(BEFORE, PHONE, source="kept")])
    assert store._erased.rows_read == 6 + 1
    assert await read(store.path, "SELECT source FROM touchpoints ORDER BY source") == [("first",), ("kept",)]


def rescore(at: datetime, touchpoint: Touchpoint) -> VerdictChange:
    return VerdictChange(
        uuid7(int(at.timestamp() * 1000)),
        iso(at),
        "a",
        touchpoint.id,
        "review",
        30,
        ["robots_txt"],
        "rescore",
    )


async def test_a_verdict_change_of_an_erased_landing_is_a_late_row(open_store: OpenStore) -> None:
    """A verdict change carries no one's key, only its touchpoint's id: once the touchpoint is
    erased, a re-score of it (robots.txt fetched after the erasure) or an analyst's verdict sent
    meanwhile is left out and counted as a late row, alone (the hot path) and beside other rows
    (a transaction). A verdict change whose landing goes in with it, before it in the same commit
    or after it in the batch, is stored."""
    store = await open_store()
    erased, kept = landing(BEFORE, PHONE), landing(BEFORE, STRANGER)
    await store.write([erased, kept, binding(BEFORE, PHONE)])
    await erase_alice(store.path)
    assert await read(store.path, "SELECT count(*) FROM touchpoints") == [(1,)]

    await store.write([rescore(AFTER, erased)])
    await store.write([rescore(AFTER, kept)])
    fresh = landing(AFTER, LAPTOP)
    # Mixed: the re-score of the new landing comes first in the batch, and is written after it.
    await store.write([rescore(AFTER, fresh), rescore(AFTER, erased), fresh, binding(AFTER, LAPTOP)])
    stored = await read(store.path, "SELECT touchpoint_id FROM verdict_changes ORDER BY touchpoint_id")
    assert sorted(stored) == sorted([(kept.id,), (fresh.id,)])
    assert late_rows(store) == {"verdict_changes": 2.0}


async def test_a_verdict_change_of_a_touchpoint_never_stored_is_not_said_to_be_an_erased_users(
    open_store: OpenStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A verdict change whose touchpoint the store does not have, with no erasure at all (the
    landing purged past ``privacy.retention_days``, refused by the store, or an import's that it
    never wrote): left out, counted under ``table="verdict_changes"``, and told to the submitter,
    as an erased landing's is. The log said "rows of an erased user or visitor from before their
    erasure" of it, an erasure that never happened; it now says what it is, and the rows of an
    erased person beside it are said apart."""
    store = await open_store()
    await store.write([landing(BEFORE, PHONE), binding(BEFORE, PHONE)])
    await erase_alice(store.path)
    never = landing(BEFORE, STRANGER)  # never written
    told: list[Event] = []
    caplog.set_level(logging.INFO, logger="gateway.storage")
    await store.submit([rescore(AFTER, never)], erased=told.extend)
    assert [type(e) for e in told] == [VerdictChange]
    assert late_rows(store) == {"verdict_changes": 1.0}
    [said] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("left out")]
    assert "erased user" not in said, said
    assert said.startswith("left out 1 verdict change of a touchpoint the store does not have"), said
    assert "erased, purged past privacy.retention_days, or never stored" in said, said
    # Beside a late row of Alice's phone: two lines, each saying what it is.
    caplog.clear()
    await store.write([rescore(AFTER, never), landing(BEFORE, PHONE, source="late"), binding(AFTER, LAPTOP)])
    said_now = sorted(r.getMessage() for r in caplog.records if r.getMessage().startswith("left out"))
    assert len(said_now) == 2, said_now
    assert said_now[0].startswith("left out 1 verdict change of a touchpoint"), said_now
    assert said_now[1].startswith("left out touchpoints 1: rows of an erased user or visitor"), said_now
    assert "re-score" not in said_now[1], said_now
    assert late_rows(store) == {"verdict_changes": 2.0, "touchpoints": 1.0}


def batches(store: LocalStore) -> tuple[float, float]:
    """The store's commits so far and their rows (``gateway_store_batch_rows``)."""
    get = store.metrics.registry.get_sample_value
    return get("gateway_store_batch_rows_count") or 0.0, get("gateway_store_batch_rows_sum") or 0.0


async def test_a_verdict_change_of_a_landing_another_writer_committed_or_stored_again_is_no_late_row(
    open_store: OpenStore,
) -> None:
    """A verdict change's touchpoint is looked up in the store at its commit, wherever it came
    from: a landing another worker's writer committed (after this writer last wrote) is there,
    and its re-score is stored, alone (the hot path) and beside other rows (a transaction). A
    verdict change the store has already (a batch tried again after its commit went through)
    is skipped as a repeat, not counted as a late row; nor is one the same commit writes twice."""
    one, two = await open_store(), await open_store()
    await one.write([landing(BEFORE, STRANGER, source="first")])
    theirs, other = landing(AFTER, PHONE), landing(AFTER, LAPTOP)
    await two.write([theirs, other])

    alone, beside = rescore(AFTER, theirs), rescore(AFTER, other)
    await one.write([alone])
    await one.write([beside, landing(AFTER, STRANGER, source="mixed"), binding(AFTER, LAPTOP)])
    again = rescore(AFTER, theirs)
    await one.write([alone, again, again])
    await one.write([beside, alone, landing(AFTER, STRANGER, source="mixed again")])
    stored = await read(one.path, "SELECT id FROM verdict_changes ORDER BY id")
    assert stored == sorted([(alone.id,), (beside.id,), (again.id,)])
    assert late_rows(one) == {} and late_rows(two) == {}


async def test_a_verdict_change_whose_landing_another_submit_of_its_commit_writes_is_stored(
    open_store: OpenStore,
) -> None:
    """Two submits committed together (a landing's, then its re-score's beside an erased
    landing's and a binding): the landing goes in first in the commit's transaction and its
    re-score finds it there; the erased landing's re-score is left out and counted."""
    store = await open_store()
    erased = landing(BEFORE, PHONE)
    await store.write([erased, binding(BEFORE, PHONE)])
    await erase_alice(store.path)
    commits, rows = batches(store)

    fresh = landing(AFTER, STRANGER)
    first = store.submit([fresh])
    second = store.submit([rescore(AFTER, fresh), rescore(AFTER, erased), binding(AFTER, STRANGER)])
    await asyncio.gather(first, second)
    assert batches(store) == (commits + 1, rows + 4)  # one commit of both submits
    stored = await read(store.path, "SELECT touchpoint_id FROM verdict_changes")
    assert stored == [(fresh.id,)]
    assert late_rows(store) == {"verdict_changes": 1.0}


def take_write_lock(path: Path) -> sqlite3.Connection:
    """Another process's transaction holding the store's write lock (blocking: off the loop)."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("BEGIN IMMEDIATE")
    return db


def free_write_lock(db: sqlite3.Connection) -> None:
    db.execute("ROLLBACK")
    db.close()


async def told_in_parts(store: LocalStore, late: Event) -> list[Event]:
    """``late`` (a row of the erased user's), a line the store refuses and two landings, given to
    ``submit_each`` while another process holds the write lock: committed in parts, then tried
    again whole once the lock is free. The refused line is left out and the landings stored;
    returns the rows the store told as late (``erased``)."""
    events: list[Event] = [
        late,
        landing(BEFORE, STRANGER, campaign="caf\udce9"),
        landing(BEFORE, STRANGER, source="a"),
        landing(BEFORE, STRANGER, source="b"),
    ]
    told: list[Event] = []
    holder = await asyncio.to_thread(take_write_lock, store.path)
    try:
        future = store.submit_each(events, [0, 1, 2, 3], erased=told.extend)
        while store.failing is None or store.failing[1] != LOCKED:
            await asyncio.wait([future], timeout=0.05)
            assert not future.done()
    finally:
        await asyncio.to_thread(free_write_lock, holder)
    refused = await future
    assert [(start, end) for start, end, _ in refused] == [(1, 2)]
    stored = await read(store.path, "SELECT source FROM touchpoints ORDER BY source")
    assert stored == [("a",), ("b",), ("first",)]
    return told


async def test_a_submit_committed_in_parts_and_tried_again_tells_its_late_rows_once(
    open_store: OpenStore,
) -> None:
    """An import's batch (``submit_each``) with a line the store refuses (a text SQLite cannot
    encode) is committed in parts while another process holds the write lock: its first part, a
    late row of Alice's phone, goes in (no row to write: left out, told, counted), the refused
    line is left out, and the rest waits on the lock past the busy timeout. The batch is tried
    again whole once the lock is free, and its first part goes in again. Its late row is told and
    counted once: until 2026-12-07 it was told again at each try, and the import's summary said
    ``erased: 2`` for one row (the metric counted it twice too)."""
    store = await open_store(max_wait_ms=600_000)  # as the import's: it waits on the lock
    await store.write([landing(BEFORE, PHONE), binding(BEFORE, PHONE)])
    await erase_alice(store.path)
    await store.write([landing(AFTER, STRANGER, source="first")])  # the writer has read it
    late = landing(BEFORE, PHONE, source="late")
    assert await told_in_parts(store, late) == [late]
    assert late_rows(store) == {"touchpoints": 1.0}


async def test_a_verdict_change_of_an_erased_landing_in_a_submit_committed_in_parts_is_told_once(
    open_store: OpenStore,
) -> None:
    """A ``submit_each`` whose first part is a re-score of an erased landing, then a line the
    store refuses, then two landings, while another process holds the write lock: committed in
    parts, and tried again whole once the lock is free. The re-score is left out, told and
    counted once, the refused line left out, the landings stored."""
    store = await open_store(max_wait_ms=600_000)  # as the import's: it waits on the lock
    erased = landing(BEFORE, PHONE)
    await store.write([erased, binding(BEFORE, PHONE)])
    await erase_alice(store.path)
    await store.write([landing(AFTER, STRANGER, source="first")])  # the writer has read it
    late = rescore(AFTER, erased)
    assert await told_in_parts(store, late) == [late]
    assert late_rows(store) == {"verdict_changes": 1.0}
    assert await read(store.path, "SELECT count(*) FROM verdict_changes") == [(0,)]


async def test_the_watch_of_signed_events_and_imports_reads_only_the_erasures_stored_since(
    open_store: OpenStore,
) -> None:
    """``ErasedWatch`` (the signed events' intake, ``gateway import``) read every erasure again
    whenever the mark moved, as the store's writer did until it read only the new ones. Now it
    reads those past what it read (here 2 of 18), each key at its latest erasure, and reads
    them whole again when rows of them were deleted (the count or the largest id gone back)."""
    store = await open_store()
    await store.write([binding(OLD - timedelta(seconds=30), PHONE)])
    for raw in EARLIER_USERS:
        await erase(store.path, raw, OLD)
    for n in range(8):
        await erased_elsewhere(store.path, KEYS.visitor_key(f"earlier-device-{n}"), OLD)
    watch = ErasedWatch(store.path)
    first = await watch.current()
    assert first.rows_read == 16
    assert await watch.current() is first  # the mark did not move: nothing read

    await erase_alice(store.path)
    await erased_elsewhere(store.path, KEYS.visitor_key("earlier-device-2"), NOW)
    erased = await watch.current()
    assert erased.rows_read == 2
    assert erased.since[ALICE] == iso(NOW) and erased.since[PHONE] == iso(NOW)
    assert erased.since[KEYS.visitor_key("earlier-device-2")] == iso(NOW)
    assert erased.since[KEYS.user_key(EARLIER_USERS[0])] == iso(OLD)
    assert erased.late(landing(BEFORE, PHONE)) and not erased.late(landing(AFTER, PHONE))

    await asyncio.to_thread(execute, store.path, "DELETE FROM erasures WHERE rowid = 3")
    await erased_elsewhere(store.path, TABLET, NOW)
    erased = await watch.current()
    assert erased.rows_read == 8 + 9  # whole: 8 erasures here, 9 keys from other nodes
    assert KEYS.user_key(EARLIER_USERS[2]) not in erased.since and erased.since[TABLET] == iso(NOW)


async def test_the_watch_reads_a_store_file_put_in_the_stores_place(
    open_store: OpenStore, tmp_path: Path
) -> None:
    """``ErasedWatch`` keeps one connection for its looks (until 2026-12-07 each look opened its
    own, and so read whatever file was at the path then). A file put in the store's place (a
    restored copy) is looked at, not the file the kept connection opened: here the copy holds an
    erasure the first file does not."""
    store = await open_store()
    await store.write([binding(BEFORE, PHONE)])
    await store.close()
    watch = ErasedWatch(store.path)
    assert not (await watch.current()).since

    copy = tmp_path / "restored.db"

    def restore() -> None:
        with (
            contextlib.closing(sqlite3.connect(store.path)) as src,
            contextlib.closing(sqlite3.connect(copy)) as dst,
        ):
            src.backup(dst)

    await asyncio.to_thread(restore)
    await erase_alice(copy)
    assert not (await watch.current()).since  # still the first file: no erasure there
    await asyncio.to_thread(os.replace, copy, store.path)
    erased = await watch.current()
    assert erased.since[ALICE] == iso(NOW) and erased.late(binding(BEFORE, PHONE))
    watch.close()
    assert (await watch.current()).since[ALICE] == iso(NOW)  # closed: still answered (see below)
    watch.close()


def open_on(path: Path) -> int:
    """How many of this process's file descriptors are open on ``path`` (``/proc/self/fd``)."""
    found = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor, gone once listed
            found += os.readlink(f"/proc/self/fd/{fd}") == str(path.resolve())
    return found


async def test_a_look_after_the_watch_is_closed_leaves_no_connection_open(open_store: OpenStore) -> None:
    """``ErasedWatch.close`` is called at shutdown, before the store's last connection closes
    (which folds the ``-wal`` in). A look after it (a signed event still in flight) opened the
    kept connection again (until 2026-12-07), which only garbage collection closed: the store's
    close was not the last, and the descriptor stayed open. Now such a look still answers, through
    a connection of its own closed at once, and close takes the lock every look holds, so that a
    look in flight is never left with a connection closed under it."""
    store = await open_store()
    await store.write([binding(BEFORE, PHONE)])
    await erase_alice(store.path)
    # Closed, so that no descriptor on the file is the store's. (SQLite keeps the descriptor of a
    # connection closed while another of the process holds a lock on the file, to reuse: a count
    # says whether any connection is open, not how many.)
    await store.close()
    assert await asyncio.to_thread(open_on, store.path) == 0
    watch = ErasedWatch(store.path)
    assert (await watch.current()).since[ALICE] == iso(NOW)
    assert await asyncio.to_thread(open_on, store.path) > 0  # the kept connection
    await asyncio.to_thread(watch.close)
    assert await asyncio.to_thread(open_on, store.path) == 0
    await erase(store.path, "bob", NOW)  # the mark moved: the look and the read both run
    erased = await watch.current()
    assert erased.since[KEYS.user_key("bob")] == iso(NOW)
    assert await asyncio.to_thread(open_on, store.path) == 0  # not opened again
    watch.close()  # twice: nothing more to do
    assert await asyncio.to_thread(open_on, store.path) == 0
