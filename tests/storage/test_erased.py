"""The store's writer leaves out late rows (``storage.erased``): a touchpoint, binding or
conversion of a user or visitor erased at or after its time, which came after the erasure (a
request in flight when it was made). The erasure is stored by another connection, as the admin
API's worker, ``gateway erase`` or the central sync store it, after the writer has read the
erasures: each writer on the file (each worker's) finds it before its rows go in. Rows of anyone
else, and rows dated after the erasure (new activity), are stored as ever."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.events import Binding, Conversion, Receipt, Touchpoint, iso
from gateway.ids import uuid7
from gateway.keys import Keys
from storage.erasure import erase_user
from storage.local import LocalStore
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
