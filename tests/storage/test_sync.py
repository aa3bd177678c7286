"""Central sync against a real PostgreSQL: idempotence, late rows, cross-node dedup, erasures, lag."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
import pytest
from aiohttp import web
from yarl import URL

from gateway.badbody import body_key, seal
from gateway.events import BadEvent, Binding, Conversion, DailyCount, Touchpoint, VerdictChange, iso
from gateway.ids import uuid7
from gateway.importrun import run_import
from gateway.keys import Keys
from gateway.metrics import Metrics
from gateway.options import CentralOptions, StorageOptions
from storage import central
from storage.backoff import Backoff, Failures
from storage.erased import Erased
from storage.erasure import erase_user, erase_visitor
from storage.local import LocalStore
from storage.sync import SYNC_TABLES, Sync
from tests.conftest import PostgresServer, make_settings

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
OPTIONS = CentralOptions(
    batch_size=7, interval_seconds=0.05, backoff_min_seconds=0.05, backoff_max_seconds=0.2
)


def touch(n: int, visitor: str, node: str = "a", at: datetime | None = None) -> Touchpoint:
    moment = at or T0 + timedelta(seconds=n)
    return Touchpoint(
        id=uuid7(int(moment.timestamp() * 1000)),
        ts=iso(moment),
        node=node,
        visitor_key=visitor,
        source="news",
        medium="email",
        campaign=f"c{n}",
        landing_path=f"/p/{n}",
        raw_params={"utm_id": str(n)},
    )


def bind(visitor: str, user: str, node: str = "a", at: datetime = T0) -> Binding:
    return Binding(
        id=uuid7(int(at.timestamp() * 1000)),
        ts=iso(at),
        node=node,
        visitor_key=visitor,
        user_key=user,
        rule="login",
    )


def gpc(day: str, campaign: str = "c", count: int = 1) -> DailyCount:
    """Landings of visitors who sent Sec-GPC: a daily count (as ``addons/campaign.py`` writes)."""
    return DailyCount(day, "news", "email", campaign, "Email", count=count)


class Node:
    """One edge node: its own local store, its own name, syncing to the shared database."""

    def __init__(self, tmp: Path, name: str, dsn: str) -> None:
        self.name = name
        self.path = tmp / f"{name}.db"
        self.metrics = Metrics()
        self.store = LocalStore(self.path, StorageOptions(node=name), self.metrics)
        self.sync = Sync(self.path, dsn, OPTIONS, self.metrics, node=name)


@pytest.fixture
async def pg(central_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(central_dsn)
    yield conn
    await conn.close()


async def count(pg: asyncpg.Connection, table: str) -> int:
    return int(await pg.fetchval(f"SELECT count(*) FROM {table}"))


async def test_sync_copies_every_row_once_and_is_idempotent(
    nodes: tuple[Node, Node], pg: asyncpg.Connection
) -> None:
    a, _ = nodes
    touches = [touch(n, f"{n % 5:032x}") for n in range(30)]
    await a.store.write(touches)
    await a.store.write([bind(f"{1:032x}", "u1")])
    delivered = await a.sync.once()
    assert delivered == {
        "touchpoints": 30,
        "identities": 1,
        "conversions": 0,
        "verdict_changes": 0,
        "creator_standings": 0,
        "erasures": 0,
        "daily_counts": 0,
    }
    assert set((await a.sync.once()).values()) == {0}
    # A lost cursor (or a crash between the central commit and the cursor write) re-sends
    # everything: nothing is doubled.
    async with aiosqlite.connect(a.path) as db:
        await db.execute("DELETE FROM sync_cursors")
        await db.commit()
    assert (await a.sync.once())["touchpoints"] == 30
    assert await count(pg, "touchpoints") == 30 and await count(pg, "identities") == 1
    row = await pg.fetchrow("SELECT * FROM touchpoints WHERE id = $1::uuid", touches[3].id)
    assert iso(row["ts"]) == touches[3].ts and row["raw_params"] == '{"utm_id": "3"}'
    assert row["node"] == "a" and row["campaign"] == "c3"


async def test_a_late_row_with_an_older_id_is_still_synced(
    nodes: tuple[Node, Node], pg: asyncpg.Connection
) -> None:
    a, _ = nodes
    await a.store.write([touch(n, "a" * 32) for n in range(10)])
    await a.sync.once()
    # Backfilled history (or a clock stepped back): an id smaller than everything synced.
    old = touch(0, "b" * 32, at=T0 - timedelta(days=30))
    await a.store.write([old])
    assert (await a.sync.once())["touchpoints"] == 1
    assert await pg.fetchval("SELECT count(*) FROM touchpoints WHERE id = $1::uuid", old.id) == 1


async def test_one_order_seen_by_two_nodes_counts_once(
    nodes: tuple[Node, Node], pg: asyncpg.Connection
) -> None:
    a, b = nodes
    for node in (a, b):
        await node.store.write(
            [
                Conversion(
                    id=uuid7(),
                    ts=iso(T0),
                    node=node.name,
                    name="purchase",
                    dedup_key="order:1001",
                    visitor_key="c" * 32,
                    value=12.5,
                    currency="EUR",
                    order_id="1001",
                )
            ]
        )
        await node.sync.once()
    assert await count(pg, "conversions") == 1


async def test_erasure_propagates_across_every_nodes_rows(
    nodes: tuple[Node, Node], pg: asyncpg.Connection
) -> None:
    a, b = nodes
    laptop, phone, stranger = "1" * 32, "2" * 32, "3" * 32
    await a.store.write([touch(1, laptop), touch(2, stranger), bind(laptop, "u-9")])
    # Node B knows a device node A never saw.
    await b.store.write([touch(3, phone, "b"), touch(4, laptop, "b"), bind(phone, "u-9", "b")])
    await a.sync.once()
    await b.sync.once()
    assert await count(pg, "touchpoints") == 4
    # A late row about the laptop, older than the erasure, still waiting on node B.
    await b.store.write([touch(5, laptop, "b")])

    now = datetime.now(UTC)
    await erase_user(
        a.path, "u-9", "raw-u-9", body_key=body_key(b"k" * 32), event_id=uuid7(), ts=iso(now), node="a"
    )
    assert (await a.sync.once())["erasures"] == 1
    assert await pg.fetchval("SELECT array_agg(visitor_key) FROM touchpoints") == [stranger]
    assert await count(pg, "identities") == 0
    await b.sync.once()  # the late row arrives after the erasure: it is not inserted
    assert await pg.fetchval("SELECT array_agg(visitor_key) FROM touchpoints") == [stranger]
    # The same user signing up again later is a new history, recorded as usual.
    later = datetime.now(UTC) + timedelta(seconds=1)
    await b.store.write([touch(6, phone, "b", at=later)])
    await b.sync.once()
    assert await count(pg, "touchpoints") == 2


async def test_a_visitors_own_erasure_reaches_the_central_store_and_every_node(
    nodes: tuple[Node, Node], pg: asyncpg.Connection
) -> None:
    """An anonymous visitor erased through node A (``erase_visitor``, ``DELETE
    /api/visitors/{id}``): its rows go centrally, from node B's store (its sync applies the
    central erased keys) and stay out when B's late row arrives; its binding to a user, the
    user's, stays, and so do a stranger's rows. Before, no such erasure existed; the record it
    makes (the visitor's key as ``user_key`` and listed) made the central store's apply fail."""
    a, b = nodes
    laptop, stranger = "1" * 32, "3" * 32
    sale = Conversion(
        uuid7(), iso(T0 + timedelta(seconds=5)), "b", "buy", "order:l", laptop, None, 5.0, "EUR"
    )
    await a.store.write([touch(1, laptop), touch(2, stranger)])
    await b.store.write([touch(3, laptop, "b"), sale, bind(laptop, "u-9", "b")])
    await a.sync.once()
    await b.sync.once()
    await b.store.write([touch(4, laptop, "b")])  # a late row, older than the erasure, unsynced

    now = datetime.now(UTC)
    erasure, bound = await erase_visitor(
        a.path,
        [laptop],
        body_key=body_key(b"k" * 32),
        keys=Keys.from_master(b"m" * 32),
        event_id=uuid7(),
        ts=iso(now),
        node="a",
    )
    assert (erasure.user_key, erasure.visitors, bound) == (laptop, [laptop], 0)  # bound on B only
    assert (await a.sync.once())["erasures"] == 1
    assert await pg.fetchval("SELECT array_agg(visitor_key) FROM touchpoints") == [stranger]
    assert await count(pg, "conversions") == 0
    assert await pg.fetchval("SELECT array_agg(key) FROM erased_keys") == [laptop]
    assert await pg.fetchval("SELECT array_agg(user_key) FROM identities") == ["u-9"]
    await b.sync.once()
    assert await pg.fetchval("SELECT array_agg(visitor_key) FROM touchpoints") == [stranger]
    async with aiosqlite.connect(b.path) as db:
        async with db.execute("SELECT count(*) FROM touchpoints") as cur:
            assert (await cur.fetchone()) == (0,)
        async with db.execute("SELECT count(*) FROM conversions") as cur:
            assert (await cur.fetchone()) == (0,)
        async with db.execute("SELECT count(*) FROM identities") as cur:
            assert (await cur.fetchone()) == (1,)
    # The visitor back after the erasure is a new history, recorded as usual.
    await b.store.write([touch(6, laptop, "b", at=now + timedelta(seconds=1))])
    await b.sync.once()
    assert await count(pg, "touchpoints") == 2


async def test_erasure_reaches_a_device_bound_on_a_node_that_had_not_synced(
    nodes: tuple[Node, Node], pg: asyncpg.Connection
) -> None:
    """Node B bound the phone to the user and recorded its touchpoint and a conversion, then
    synced only after node A's erasure: the erasure could not know the phone. Its binding
    arriving names it, and its rows from before the erasure go too (before, only the
    binding was dropped, and the phone's rows stayed centrally)."""
    a, b = nodes
    laptop, phone, stranger = "1" * 32, "2" * 32, "3" * 32
    await a.store.write([touch(1, laptop), touch(2, stranger), bind(laptop, "u-9")])
    sale = Conversion(
        uuid7(), iso(T0 + timedelta(seconds=4)), "b", "buy", "order:p1", phone, None, 5.0, "EUR"
    )
    await b.store.write([touch(3, phone, "b"), bind(phone, "u-9", "b"), sale])
    await a.sync.once()
    now = datetime.now(UTC)
    await erase_user(
        a.path, "u-9", "raw", body_key=body_key(b"k" * 32), event_id=uuid7(), ts=iso(now), node="a"
    )
    await a.sync.once()
    await b.sync.once()
    assert await pg.fetchval("SELECT array_agg(visitor_key) FROM touchpoints") == [stranger]
    assert (await count(pg, "conversions"), await count(pg, "identities")) == (0, 0)
    # The phone coming back after the erasure is a new history, recorded as usual.
    await b.store.write([touch(6, phone, "b", at=datetime.now(UTC) + timedelta(seconds=1))])
    await b.sync.once()
    assert await count(pg, "touchpoints") == 2


async def test_erasure_reaches_rows_kept_under_an_earlier_storage_mode(
    nodes: tuple[Node, Node], pg: asyncpg.Connection
) -> None:
    """The laptop was bound under ``user_id_storage = "plain"``, the phone after the switch to
    the default: the erasure erases the user under both keys, centrally too, and a late row
    under the old key from another node stays out. Before, the central store kept the old
    binding, raw ID included."""
    a, b = nodes
    laptop, phone = "1" * 32, "2" * 32
    keys = Keys.from_master(b"m" * 32)
    old = Keys.from_master(b"m" * 32, "plain").user_key("alice")
    late = Conversion(uuid7(), iso(T0 + timedelta(seconds=5)), "b", "buy", "order:l", None, old, 5.0, "EUR")
    await a.store.write([touch(1, laptop), bind(laptop, old)])
    await a.sync.once()
    await b.store.write([late])  # node B has not synced yet
    await a.store.write([touch(2, phone), bind(phone, keys.user_key("alice"))])
    key, *also = keys.user_keys("alice")
    now = iso(datetime.now(UTC))
    erasure = await erase_user(
        a.path, key, "alice", body_key=body_key(b"k" * 32), event_id=uuid7(), ts=now, node="a", also=also
    )
    assert sorted(erasure.visitors) == [laptop, phone] and old in erasure.also_keys
    await a.sync.once()
    await b.sync.once()
    assert (
        await count(pg, "identities"),
        await count(pg, "touchpoints"),
        await count(pg, "conversions"),
    ) == (
        0,
        0,
        0,
    )


async def test_erasure_of_the_newest_rows_does_not_hide_later_rows(
    nodes: tuple[Node, Node], pg: asyncpg.Connection
) -> None:
    """SQLite reuses the largest rowid once that row is deleted: the cursor must step back."""
    a, _ = nodes
    await a.store.write([touch(1, "4" * 32), touch(2, "5" * 32), touch(3, "5" * 32), bind("5" * 32, "u-1")])
    await a.sync.once()
    await erase_user(a.path, "u-1", "raw", body_key=b"k" * 32, event_id=uuid7(), ts=iso(T0), node="a")
    fresh = touch(9, "6" * 32)
    await a.store.write([fresh])  # takes the rowid the erased row had
    await a.sync.once()
    assert await pg.fetchval("SELECT count(*) FROM touchpoints WHERE id = $1::uuid", fresh.id) == 1


async def test_an_erasure_through_another_node_erases_this_nodes_own_store(
    nodes: tuple[Node, Node], pg: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """Node A saw the phone (touchpoints, a sale) but never its login, which happened on node
    B; the user is erased through B. Until 2026-12-05 A's own store kept the phone's rows
    (A's erasure found nothing, and nodes never read the central erased keys) until retention.
    Now A's sync round applies the central erased keys: the phone's rows from before the
    erasure go from A's store, its rows from after it and other visitors' stay, and it is not
    synced back as a new erasure."""
    a, b = nodes
    phone, stranger = "7" * 32, "8" * 32
    sale = Conversion(uuid7(), iso(T0 + timedelta(seconds=5)), "a", "buy", "order:7", phone, None, 5.0, "EUR")
    await a.store.write([touch(1, stranger), touch(2, phone), touch(3, phone), sale])
    await b.store.write([touch(4, phone, "b"), bind(phone, "u-9", "b")])
    await a.sync.once()
    await b.sync.once()
    now = datetime.now(UTC)
    await erase_user(
        b.path, "u-9", "raw", body_key=body_key(b"k" * 32), event_id=uuid7(), ts=iso(now), node="b"
    )
    await b.sync.once()
    later = touch(6, phone, at=now + timedelta(seconds=1))  # the phone back after the erasure
    await a.store.write([later])
    caplog.set_level(logging.INFO, "gateway.sync")
    await a.sync.once()

    async with aiosqlite.connect(a.path) as db:
        async with db.execute("SELECT visitor_key, id FROM touchpoints ORDER BY rowid") as cur:
            left = [tuple(row) for row in await cur.fetchall()]
        async with db.execute("SELECT count(*) FROM conversions") as cur:
            assert (await cur.fetchone()) == (0,)
        async with db.execute("SELECT count(*) FROM erasures") as cur:
            assert (await cur.fetchone()) == (0,)  # recorded apart: never synced back
        async with db.execute("SELECT key, deleted FROM central_erasures ORDER BY key") as cur:
            recorded = dict(tuple(row) for row in await cur.fetchall())
    assert left[0][0] == stranger and left[1:] == [(phone, later.id)]
    assert recorded[phone] == 3 and "u-9" in recorded
    erased = await asyncio.to_thread(Erased.read, a.path)
    assert erased.late(touch(2, phone))  # a late replay of its rows is kept out too
    assert await count(pg, "erasures") == 1
    assert a.metrics.sync_erased.labels("touchpoints")._value.get() == 2
    said = [r.getMessage() for r in caplog.records if "erasures made through other nodes" in r.getMessage()]
    assert len(said) == 1 and "3 rows deleted" in said[0] and phone not in said[0]
    # Applied once: the next round reads no erased key again, and deletes nothing.
    caplog.clear()
    await a.sync.once()
    assert not [r for r in caplog.records if "erasures made through other nodes" in r.getMessage()]
    # The sale was the newest conversion: the next one, taking its rowid, is still delivered.
    other = Conversion(uuid7(), iso(now), "a", "buy", "order:8", stranger, None, 1.0, "EUR")
    await a.store.write([other])
    await a.sync.once()
    assert await pg.fetchval("SELECT count(*) FROM conversions WHERE id = $1::uuid", other.id) == 1


async def test_a_central_table_the_role_has_no_right_on_fails_the_round_not_skipped(
    nodes: tuple[Node, Node], pg: asyncpg.Connection, central_dsn: str
) -> None:
    """A node's role granted the sync's rights on every central table but one (`erased_keys`
    here: the GRANT of a table a migration added, forgotten). The tables were looked up in
    `information_schema`, which hides the tables a role has no right on: until 2026-12-06 the
    round took `erased_keys` for missing and skipped it, passed, and logged nothing, while
    node A kept the rows of a user erased through node B. Now the round fails, saying which
    table was refused, and the next round with the right granted erases them."""
    a, b = nodes
    phone = "7" * 32
    await a.store.write([touch(1, phone)])
    await b.store.write([touch(2, phone, "b"), bind(phone, "u-9", "b")])
    await a.sync.once()
    await b.sync.once()
    role = f"gw_node{uuid7().replace('-', '')[-12:]}"
    database = await pg.fetchval("SELECT current_database()")
    await pg.execute(f"CREATE ROLE {role} LOGIN")
    try:
        await pg.execute(f"GRANT CONNECT, TEMPORARY ON DATABASE {database} TO {role}")
        await pg.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        await pg.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}")
        await pg.execute(f"REVOKE ALL ON erased_keys FROM {role}")
        node = Sync(a.path, central_dsn.replace("://postgres@", f"://{role}@"), OPTIONS, Metrics(), node="a")
        now = iso(datetime.now(UTC))
        await erase_user(
            b.path, "u-9", "raw", body_key=body_key(b"k" * 32), event_id=uuid7(), ts=now, node="b"
        )
        await b.sync.once()
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="erased_keys"):
            await node.once()
        await pg.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON erased_keys TO {role}")
        await node.once()
        async with aiosqlite.connect(a.path) as db, db.execute("SELECT count(*) FROM touchpoints") as cur:
            assert (await cur.fetchone()) == (0,)
    finally:
        await pg.execute(f"DROP OWNED BY {role}")
        await pg.execute(f"DROP ROLE {role}")


async def test_a_role_that_may_not_make_temporary_tables_is_told_to_grant_temporary(
    nodes: tuple[Node, Node], pg: asyncpg.Connection, central_dsn: str
) -> None:
    """Every batch goes through a temporary staging table: a role without TEMPORARY on the
    database (revoked from PUBLIC, as hardening guides advise) fails every round. The hint
    named CREATE on the schema and the four table rights (until 2026-12-06), which the role
    had, and not the TEMPORARY it lacked."""
    a, _ = nodes
    await a.store.write([touch(1, "1" * 32)])
    await a.sync.once()  # the tables made by the owner
    await a.store.write([touch(2, "1" * 32)])
    role = f"gw_notemp{uuid7().replace('-', '')[-12:]}"
    database = await pg.fetchval("SELECT current_database()")
    await pg.execute(f"CREATE ROLE {role} LOGIN")
    try:
        await pg.execute(f"REVOKE TEMPORARY ON DATABASE {database} FROM PUBLIC")
        await pg.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        await pg.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}")
        node = Sync(a.path, central_dsn.replace("://postgres@", f"://{role}@"), OPTIONS, Metrics(), node="a")
        with pytest.raises(asyncpg.InsufficientPrivilegeError) as refused:
            await node.once()
        said = central.explain(refused.value, "central.url (GATEWAY_CENTRAL_URL)")
        assert "permission denied to create temporary tables" in said, said
        assert (
            "the user in central.url (GATEWAY_CENTRAL_URL) may not make the sync's staging tables:"
            f' grant it TEMPORARY on the database (GRANT TEMPORARY ON DATABASE "{database}" TO <user>)'
        ) in said, said
    finally:
        await pg.execute(f"DROP OWNED BY {role}")
        await pg.execute(f"DROP ROLE {role}")


async def test_a_search_path_naming_no_schema_is_told(nodes: tuple[Node, Node], central_dsn: str) -> None:
    """`?search_path=gateway` (as Central store and sync advises) with the schema not made yet,
    or misspelt: every round failed with PostgreSQL's `no schema has been selected to create
    in` and no hint (until 2026-12-06)."""
    a, _ = nodes
    await a.store.write([touch(1, "1" * 32)])
    node = Sync(a.path, central_dsn + "?search_path=gatewya", OPTIONS, Metrics(), node="a")
    with pytest.raises(asyncpg.InvalidSchemaNameError) as refused:
        await node.once()
    said = central.explain(refused.value, "central.url (GATEWAY_CENTRAL_URL)")
    assert said.endswith(
        "no schema of the search_path in central.url (GATEWAY_CENTRAL_URL) exists, or the user may"
        " not use it: create the one it names (CREATE SCHEMA name), grant the user USAGE on it, or"
        " correct the URL's ?search_path="
    ), said


def _files(path: Path) -> bytes:
    """Every byte of a store: its database file and its write-ahead log, if any."""
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


async def test_an_erasure_through_another_node_leaves_this_nodes_files_too(nodes: tuple[Node, Node]) -> None:
    """The rows an erasure made through another node deletes here are gone from this store's
    files as after its own erasure: the writer keeps the store open, so its write-ahead log
    is emptied by the round that applies the erasure, not on close."""
    a, b = nodes
    phone = "7" * 32
    seen = [dataclasses.replace(touch(n, phone), landing_path=f"/phone-path-{n:03d}") for n in range(1, 30)]
    await a.store.write([*seen, dataclasses.replace(touch(40, "8" * 32), landing_path="/kept")])
    await b.store.write([bind(phone, "u-9", "b")])
    await a.sync.once()
    await b.sync.once()
    assert b"/phone-path-007" in await asyncio.to_thread(_files, a.path)  # the search finds it
    await erase_user(
        b.path,
        "u-9",
        "raw",
        body_key=body_key(b"k" * 32),
        event_id=uuid7(),
        ts=iso(datetime.now(UTC)),
        node="b",
    )
    await b.sync.once()
    await a.sync.once()
    after = await asyncio.to_thread(_files, a.path)
    assert b"/phone-path-" not in after and b"/kept" in after


async def test_an_erasure_through_another_node_takes_this_nodes_bad_events_naming_the_user(
    nodes: tuple[Node, Node], pg: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """Node A kept refused events about the phone (by its raw ID) and about the user (by the
    raw user ID, which A never learns: the erased user key, hashed, is matched by hashing what
    the bad event names); the user is erased through B. Until 2026-12-05 A's bad events stayed
    (its sync deleted rows by key, and bad events have none). Now they go with the rest, counted
    in the log line and the metric; one received after the erasure, and a stranger's, stay."""
    a, b = nodes
    secret = b"m" * 32
    keys, seal_key = Keys.from_master(secret), body_key(secret)
    a.sync = Sync(a.path, a.sync.dsn, OPTIONS, a.metrics, node="a", secret=secret)
    phone, alice = keys.visitor_key("phone-raw"), keys.user_key("alice")

    def kept(body: str, at: datetime = T0) -> BadEvent:
        return BadEvent(uuid7(), iso(at), "a", "crm", seal(seal_key, "unmapped"), seal(seal_key, body))

    by_device, by_user = kept('{"anonymousId": "phone-raw"}'), kept('{"userId": "alice", "x": 1}')
    # Inside a longer word (until 2026-12-05 one word, the ID in it never hashed): taken too.
    by_mailto = kept('{"contact": "mailto:alice"}')
    stranger = kept('{"anonymousId": "someone", "userId": "bob"}')
    await a.store.write([touch(1, phone), by_device, by_user, by_mailto, stranger])
    await b.store.write([touch(2, phone, "b"), bind(phone, alice, "b")])
    await a.sync.once()
    await b.sync.once()
    now = datetime.now(UTC)
    await erase_user(
        b.path, alice, "alice", body_key=seal_key, event_id=uuid7(), ts=iso(now), node="b", keys=keys
    )
    await b.sync.once()
    after = kept('{"anonymousId": "phone-raw"}', now + timedelta(seconds=1))  # the phone back since
    await a.store.write([after])
    caplog.set_level(logging.INFO, "gateway.sync")
    await a.sync.once()
    async with aiosqlite.connect(a.path) as db:
        async with db.execute("SELECT id FROM bad_events") as cur:
            left = {row[0] for row in await cur.fetchall()}
        async with db.execute("SELECT key, deleted FROM central_erasures") as cur:
            recorded = dict(tuple(row) for row in await cur.fetchall())
    assert left == {stranger.id, after.id}
    assert sum(recorded.values()) == 4  # the touchpoint and the three bad events
    assert a.metrics.sync_erased.labels("bad_events")._value.get() == 3
    said = [r.getMessage() for r in caplog.records if "erasures made through other nodes" in r.getMessage()]
    assert len(said) == 1 and "4 rows deleted" in said[0] and "bad_events 3" in said[0], said


async def test_an_erasure_by_the_user_key_alone_reaches_the_central_store_and_every_node(
    nodes: tuple[Node, Node], pg: asyncpg.Connection
) -> None:
    """The operator of node B has the user's key alone (``DELETE /api/users/{user_key}``,
    ``gateway erase KEY``: read as the lookup reads it, ``gateway.usernames``). The erasure
    record names keys only, as one by the raw ID does: it reaches the central store, and node
    A's sync takes A's rows and its bad events naming the user's device or the user (by the ID
    as a whole word, hashed), as for an erasure by the raw ID; a stranger's stay."""
    from gateway.usernames import named_user
    from storage.erasure import user_known

    a, b = nodes
    secret = b"m" * 32
    keys, seal_key = Keys.from_master(secret), body_key(secret)
    a.sync = Sync(a.path, a.sync.dsn, OPTIONS, a.metrics, node="a", secret=secret)
    phone, laptop, alice = keys.visitor_key("phone-raw"), "1" * 32, keys.user_key("alice")

    def kept(body: str) -> BadEvent:
        return BadEvent(uuid7(), iso(T0), "a", "crm", seal(seal_key, "unmapped"), seal(seal_key, body))

    stranger = kept('{"userId": "bob"}')
    await a.store.write(
        [
            touch(1, phone),
            touch(2, "3" * 32),
            kept('{"anonymousId": "phone-raw"}'),
            kept('{"userId": "alice"}'),
        ]
    )
    await a.store.write([stranger])
    await b.store.write([touch(3, laptop, "b"), bind(laptop, alice, "b"), bind(phone, alice, "b")])
    await a.sync.once()
    await b.sync.once()
    assert await count(pg, "touchpoints") == 3

    async def known(user_keys: list[str]) -> bool | None:
        return await user_known(b.path, user_keys) or None

    named, _ = await named_user(alice.upper(), keys, False, known)
    assert (named.read_as, named.user_id, named.keys) == ("user_key", None, [alice])
    now = datetime.now(UTC)
    erasure = await erase_user(
        b.path,
        named.keys[0],
        named.user_id,
        body_key=seal_key,
        event_id=uuid7(),
        ts=iso(now),
        node="b",
        keys=keys,
    )
    assert (erasure.user_key, sorted(erasure.visitors), erasure.also_keys) == (
        alice,
        sorted([laptop, phone]),
        [],
    )
    assert (await b.sync.once())["erasures"] == 1
    assert await pg.fetchval("SELECT array_agg(visitor_key) FROM touchpoints") == ["3" * 32]
    assert await count(pg, "identities") == 0
    assert set(await pg.fetchval("SELECT array_agg(key) FROM erased_keys")) == {alice, laptop, phone}
    await a.sync.once()  # node A applies it: its rows of the phone, and the bad events naming either
    async with aiosqlite.connect(a.path) as db:
        async with db.execute("SELECT visitor_key FROM touchpoints") as cur:
            assert [row[0] for row in await cur.fetchall()] == ["3" * 32]
        async with db.execute("SELECT id FROM bad_events") as cur:
            assert [row[0] for row in await cur.fetchall()] == [stranger.id]


async def test_lag_metrics(nodes: tuple[Node, Node]) -> None:
    a, _ = nodes
    await a.store.write([touch(n, "7" * 32) for n in range(12)])
    db = await a.sync.open_local()
    try:
        lag = await a.sync.publish_lag(db)
    finally:
        await db.close()
    assert lag["touchpoints"][0] == 12 and lag["touchpoints"][1] > 0
    assert a.metrics.sync_lag_rows.labels("central", "touchpoints")._value.get() == 12
    await a.sync.once()
    assert a.metrics.sync_lag_rows.labels("central", "touchpoints")._value.get() == 0
    assert a.metrics.sync_lag_seconds.labels("central", "touchpoints")._value.get() == 0


def _old_log(lines: int) -> str:
    """An access log of ``lines`` landings from March 2025: a backfill's, its events long past."""
    agent = "Mozilla/5.0 (X11; Linux x86_64) Firefox/127.0"
    return "".join(
        f'203.0.113.{n} - - [01/Mar/2025:10:00:{n:02d} +0000] "GET /p?utm_source=news&utm_campaign=c{n}'
        f' HTTP/1.1" 200 10 "-" "{agent}"\n'
        for n in range(lines)
    )


@pytest.mark.parametrize("watched", [True, False])
async def test_lag_seconds_after_an_import_is_how_long_its_rows_waited(
    tmp_path: Path, central_dsn: str, watched: bool
) -> None:
    """``gateway import`` of an old access log writes rows whose events are from March 2025.
    ``gateway_sync_lag_seconds`` read the oldest waiting row's event time, so after an import
    it showed the events' age (over a year of "lag") while their round ran, though they had
    waited seconds. It now reads how long they have waited since written locally: the import
    seen by a sync that watched the store (``watched``: the gateway's task), or found at its
    first look (a sync started after the import, ``gateway sync --once``), whose rows the
    import's run record dates."""
    settings = make_settings(tmp_path)
    metrics = Metrics()
    sync = Sync(settings.store_path, central_dsn, OPTIONS, metrics, node="a")
    if watched:
        db = await sync.open_local()
        try:
            await sync.publish_lag(db)  # the store seen before the import
        finally:
            await db.close()
    log = tmp_path / "old.log"
    await asyncio.to_thread(log.write_text, _old_log(20))
    assert (await run_import(settings, [log], "combined", host="shop.example")).run == 1
    age = metrics.sync_lag_seconds.labels("central", "touchpoints")
    waiting = metrics.sync_lag_rows.labels("central", "touchpoints")
    seen: list[tuple[float, float]] = []

    def progress(total: int) -> Callable[[int], object]:
        seen.append((waiting._value.get(), age._value.get()))  # before the first batch
        return lambda _: seen.append((waiting._value.get(), age._value.get()))

    assert (await sync.once(progress))["touchpoints"] == 20
    assert [rows for rows, _ in seen] == [20, 13, 6, 0]  # batches of 7, the lag read after each
    # Seconds, not the year since the events: nothing here waits an hour.
    assert all(seconds < 3600 for _, seconds in seen), seen
    assert age._value.get() == 0


async def test_migrations_are_versioned_and_concurrent_starts_are_safe(central_dsn: str) -> None:

    conns = [await asyncpg.connect(central_dsn) for _ in range(4)]
    try:
        versions = await asyncio.gather(*(central.migrate(c) for c in conns))
        assert len(set(versions)) == 1 and versions[0] >= 1
        rows = await conns[0].fetch("SELECT version, name FROM schema_version ORDER BY version")
        assert [r["version"] for r in rows] == list(range(1, versions[0] + 1))
    finally:
        for c in conns:
            await c.close()


def test_backoff_grows_with_jitter_and_stays_bounded() -> None:
    backoff = Backoff(0.5, 8.0)
    delays = [backoff.next() for _ in range(40)]
    assert all(0.25 <= d <= 8.0 for d in delays)
    assert max(delays[10:]) > 2.0  # it grew
    assert len(set(delays)) > 30  # jittered
    backoff.reset()
    assert backoff.next() <= 0.5
    # A longest delay under half the first (a sink's backoff_max_seconds = 0.1): never more.
    short = Backoff(0.5, 0.1)
    delays = [short.next() for _ in range(200)]
    assert all(0.05 <= d <= 0.1 for d in delays) and len(set(delays)) > 150  # still jittered


def test_failures_in_a_row_are_logged_once_with_a_reminder(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first failure is a warning; the same again debug, another problem info, the end
    info; past ``REMIND_SECONDS`` since the last warning, a warning again saying for how long."""
    import storage.backoff

    logger = logging.getLogger("gateway.test_failures")
    caplog.set_level(logging.DEBUG, logger.name)
    failures = Failures(logger, "reader")
    failures.failed("refused", 1.0)
    failures.failed("refused", 2.0)
    failures.failed("starting up", 4.0)
    monkeypatch.setattr(storage.backoff, "REMIND_SECONDS", 0.0)
    failures.failed("refused", 8.0)
    failures.succeeded()
    failures.succeeded()  # nothing to say: it was not failing
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "reader failed (refused); retrying in 1.0 s"),
        ("DEBUG", "reader failed again (refused); retrying in 2.0 s"),
        ("INFO", "reader still failing, now (starting up); retrying in 4.0 s"),
        ("WARNING", "reader still failing (refused): 4 attempts over 0 s; retrying in 8.0 s"),
        ("INFO", "reader recovered after 4 failed attempts over 0 s"),
    ]


def test_sync_tables_start_with_erasures() -> None:
    assert SYNC_TABLES[0] == "erasures"


async def test_a_column_added_on_both_sides_is_copied_with_no_code_change(
    nodes: tuple[Node, Node], pg: asyncpg.Connection
) -> None:
    """What a later migration pair (local 000N + PG 000M) looks like: only the schema changes."""
    a, _ = nodes
    await a.store.write([touch(1, "8" * 32)])
    await a.sync.once()  # creates the central schema
    async with aiosqlite.connect(a.path) as db:
        await db.execute("ALTER TABLE touchpoints ADD COLUMN fraud_ring INTEGER")
        await db.execute("ALTER TABLE touchpoints ADD COLUMN local_note TEXT")  # local only: not copied
        await db.execute(
            "INSERT INTO touchpoints (id, ts, node, visitor_key, landing_path, fraud_ring, local_note) "
            "VALUES (?, ?, 'a', ?, '/', 87, 'paid_search')",
            (uuid7(), iso(T0), "8" * 32),
        )
        await db.commit()
    await pg.execute("ALTER TABLE touchpoints ADD COLUMN fraud_ring integer")
    assert (await a.sync.once())["touchpoints"] == 1
    assert await pg.fetchval("SELECT fraud_ring FROM touchpoints WHERE fraud_ring IS NOT NULL") == 87


async def test_a_nul_character_does_not_stop_the_sync(
    nodes: tuple[Node, Node], pg: asyncpg.Connection
) -> None:
    """SQLite keeps NUL in text, PostgreSQL refuses it: the value is kept with U+FFFD instead."""
    a, _ = nodes
    odd = touch(1, "a" * 32)
    odd.landing_path = "/a\x00b"
    odd.raw_params = {"utm_id": "x\x00y"}
    await a.store.write([odd, touch(2, "a" * 32)])
    assert (await a.sync.once())["touchpoints"] == 2
    row = await pg.fetchrow("SELECT landing_path, raw_params FROM touchpoints WHERE id = $1::uuid", odd.id)
    assert row["landing_path"] == "/a\ufffdb"
    assert row["raw_params"] == '{"utm_id": "x\ufffdy"}'


async def test_two_syncs_of_one_node_at_once_skip_nothing_and_double_nothing(
    nodes: tuple[Node, Node], pg: asyncpg.Connection, central_dsn: str
) -> None:
    """The gateway's task and a cron ``sync --once`` on the same store: the cursor is a
    compare-and-set, so each batch is credited once and none is skipped."""
    a, _ = nodes
    await a.store.write([touch(n, f"{n:032x}") for n in range(100)])
    twin = Sync(a.path, central_dsn, OPTIONS, Metrics())
    await a.sync.once()  # creates the schema, so both start from an existing one
    await a.store.write([touch(n, f"{n:032x}") for n in range(100, 1500)])
    first, second = await asyncio.gather(a.sync.once(), twin.once())
    assert first["touchpoints"] + second["touchpoints"] == 1400
    assert await count(pg, "touchpoints") == 1500


async def test_a_dsn_that_does_not_parse_is_retried_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A ``central.url`` asyncpg cannot read (a port that is not a number) is logged as what it
    is, at warning level, with no traceback at every retry and no password."""
    store = LocalStore(tmp_path / "n.db", StorageOptions(node="n"), Metrics())
    await store.open()
    # The second: a password with a "#" asyncpg reads as the end of the host part, and quotes.
    for dsn in (
        "postgresql://u:s3cret@127.0.0.1:notaport/db",
        "postgresql://u:Tr0ub4dor#s3cret@127.0.0.1/db",
    ):
        caplog.clear()
        sync = Sync(store.path, dsn, OPTIONS, Metrics())
        task = asyncio.create_task(sync.run())
        try:
            await asyncio.sleep(0.5)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        lines = [r for r in caplog.records if r.name == "gateway.sync"]
        assert lines and all(r.levelname == "WARNING" and r.exc_info is None for r in lines)
        assert "not a PostgreSQL DSN" in lines[0].getMessage()
        assert "s3cret" not in caplog.text and "Tr0ub4dor" not in caplog.text, caplog.text
    await store.close()


async def test_lag_seconds_keeps_up_while_the_sync_backs_off(tmp_path: Path) -> None:
    """While the central store is away, attempts are a backoff apart (up to
    ``central.backoff_max_seconds``); the age of the oldest undelivered row is kept current
    meanwhile, every ``interval_seconds``, not only at each attempt: a row written after the
    last attempt shows at once, its wait growing, and so does it in the rows waiting (until
    2026-12-05 they stood at the last attempt's count for as long as the backoff lasted). Its
    event an hour old, the age is still how long it has waited since written (until 2026-12-07
    it read the hour)."""
    store = LocalStore(tmp_path / "n.db", StorageOptions(node="n"), Metrics())
    await store.open()
    metrics = Metrics()
    options = CentralOptions(interval_seconds=0.05, backoff_min_seconds=120, backoff_max_seconds=120)
    sync = Sync(store.path, "postgresql://u:p@127.0.0.1:1/db", options, metrics)
    age = metrics.sync_lag_seconds.labels("central", "touchpoints")
    task = asyncio.create_task(sync.run())
    try:
        async with asyncio.timeout(10):
            while not metrics.sync_errors.labels("central")._value.get():
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        assert age._value.get() == 0
        await store.write([touch(1, "c" * 32, at=datetime.now(UTC) - timedelta(hours=1))])
        async with asyncio.timeout(10):
            while age._value.get() < 0.3:
                await asyncio.sleep(0.02)
        assert age._value.get() < 3600  # how long it waited, not its event's age
        assert metrics.sync_errors.labels("central")._value.get() == 1  # no attempt meanwhile
        waiting = metrics.sync_lag_rows.labels("central", "touchpoints")
        await store.write([touch(n, "c" * 32) for n in range(2, 5)])
        async with asyncio.timeout(2):
            while waiting._value.get() < 4:
                await asyncio.sleep(0.02)
        assert waiting._value.get() == 4
        assert metrics.sync_errors.labels("central")._value.get() == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()


async def _run_until_errors(sync: Sync, metrics: Metrics, errors: int) -> None:
    """Run the sync task until it has failed ``errors`` times, then stop it."""
    task = asyncio.create_task(sync.run())
    try:
        async with asyncio.timeout(30):
            while metrics.sync_errors.labels("central")._value.get() < errors:
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def locked_roles(postgres_server: PostgresServer) -> str:
    """Roles the server treats as a production one would: ``gw_pw`` must give its password
    (``right``), ``gw_tls`` may only connect over TLS (which this server does not offer),
    ``gw_ro`` may connect but create nothing in ``t_roles``, the database of ``gw_pw``; the
    other roles keep trusting loopback."""
    await asyncio.to_thread(_lock_roles, postgres_server.data / "pg_hba.conf")
    conn = await asyncpg.connect(postgres_server.dsn())
    try:
        for role in ("gw_pw", "gw_tls", "gw_ro"):
            if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
                await conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'right'")
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = 't_roles'"):
            await conn.execute("CREATE DATABASE t_roles OWNER gw_pw")
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = 't_noconnect'"):
            await conn.execute("CREATE DATABASE t_noconnect")
            await conn.execute("REVOKE CONNECT ON DATABASE t_noconnect FROM PUBLIC")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()
    return f"127.0.0.1:{postgres_server.port}"


def _lock_roles(hba: Path) -> None:
    rules = "host all gw_pw 127.0.0.1/32 scram-sha-256\nhostnossl all gw_tls 127.0.0.1/32 reject\n"
    text = hba.read_text()
    if rules not in text:
        hba.write_text(rules + text)


@pytest.mark.parametrize(
    ("dsn", "said", "hint"),
    [
        ("gw_pw:wrong@{}/t_roles", "password authentication failed", "the user name or password in"),
        ("gw_pw:right@{}/t_missing", 'database "t_missing" does not exist', "the database named in"),
        # Not pg_hba.conf's doing, as the hint said until 2026-12-05.
        ("gw_nobody@{}/t_roles", 'role "gw_nobody" does not exist', "the user named in central.url"),
        ("gw_tls@{}/t_roles", "no encryption", "?sslmode=require"),
        ("gw_pw:right@{}/t_roles?sslmode=require", "rejected SSL upgrade", "asks for TLS"),
        ("gw_ro@{}/t_roles", "permission denied", "lacks a privilege"),
        # PostgreSQL's DETAIL on the same line; CONNECT named, not "create tables, insert".
        (
            "gw_ro@{}/t_noconnect",
            'permission denied for database "t_noconnect" DETAIL:  User does not have CONNECT privilege.',
            "may not connect to that database: grant it CONNECT",
        ),
        (
            "gw_pw:right@{}/t_roles?sslmode=verify-full&sslrootcert=/nonexistent/root.crt",
            "FileNotFoundError",
            "a file central.url (GATEWAY_CENTRAL_URL) names (sslrootcert, sslcert, sslkey) cannot be read",
        ),
        ("gw_pw:right@{}/t_roles?sslmode=sometimes", "`sslmode` parameter must be", "a parameter of"),
        # A misspelt parameter goes to the server as a setting: said with no hint until 2026-12-06.
        (
            "gw_pw:right@{}/t_roles?sslmdoe=require",
            'unrecognized configuration parameter "sslmdoe"',
            "a parameter in the query of central.url (GATEWAY_CENTRAL_URL) is neither one asyncpg takes"
            " nor a setting of the server: correct its spelling or remove it",
        ),
    ],
    ids=[
        "password",
        "database",
        "role",
        "tls-wanted",
        "tls-offered-none",
        "privilege",
        "connect",
        "tls-file",
        "tls-mode",
        "url-parameter",
    ],
)
async def test_a_refused_connection_names_the_setting_once(
    tmp_path: Path, locked_roles: str, caplog: pytest.LogCaptureFixture, dsn: str, said: str, hint: str
) -> None:
    """A wrong password, a database that does not exist, a server that wants TLS or offers
    none, a user that may not create the tables: the log line says what PostgreSQL said and
    names the setting and its variable to fix (``central.url (GATEWAY_CENTRAL_URL)``), once;
    the retries after it are at debug level (until 2026-12-04 each retry logged the same
    warning, without the setting: one a minute for as long as it lasted). Never the password."""
    store = LocalStore(tmp_path / "n.db", StorageOptions(node="n"), Metrics())
    await store.open()
    metrics = Metrics()
    options = CentralOptions(
        url="env:GATEWAY_CENTRAL_URL",
        interval_seconds=0.05,
        backoff_min_seconds=0.02,
        backoff_max_seconds=0.05,
    )
    sync = Sync(store.path, "postgresql://" + dsn.format(locked_roles), options, metrics)
    caplog.set_level(logging.DEBUG, "gateway.sync")
    try:
        await _run_until_errors(sync, metrics, 4)
    finally:
        await store.close()
    lines = [r for r in caplog.records if r.name == "gateway.sync"]
    warnings = [r.getMessage() for r in lines if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert said in warnings[0] and hint in warnings[0], warnings[0]
    assert "\n" not in warnings[0], warnings[0]  # one line
    assert "central.url (GATEWAY_CENTRAL_URL)" in warnings[0], warnings[0]
    assert len([r for r in lines if r.levelno == logging.DEBUG]) >= 3
    assert "wrong" not in caplog.text and "right" not in caplog.text


@pytest.mark.parametrize(
    "query", ["", "?sslmode=disable", "?sslmode=allow"], ids=["prefer", "disable", "allow"]
)
async def test_a_port_that_is_not_postgres_is_said_so_not_taken_for_tls(
    tmp_path: Path,
    upstream_server: Callable[[web.Application], Awaitable[str]],
    caplog: pytest.LogCaptureFixture,
    query: str,
) -> None:
    """``central.url`` naming the port of another service (the site's web server, a typo'd
    port): the warning says that what answers there is not PostgreSQL and to check the port.
    Until 2026-12-06, under the default ``sslmode`` (``prefer``, TLS not asked for) it said the
    URL "asks for TLS (sslmode) and the server offers none", and under ``sslmode=disable`` it
    was a "refused" with no hint at all."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="a web site, not PostgreSQL")

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", page)
    site = URL(await upstream_server(app))
    store = LocalStore(tmp_path / "n.db", StorageOptions(node="n"), Metrics())
    await store.open()
    metrics = Metrics()
    options = CentralOptions(
        url="env:GATEWAY_CENTRAL_URL",
        interval_seconds=0.05,
        backoff_min_seconds=0.02,
        backoff_max_seconds=0.05,
    )
    sync = Sync(store.path, f"postgresql://gw@{site.host}:{site.port}/tracking{query}", options, metrics)
    caplog.set_level(logging.DEBUG, "gateway.sync")
    try:
        await _run_until_errors(sync, metrics, 2)
    finally:
        await store.close()
    warnings = [
        r.getMessage() for r in caplog.records if r.name == "gateway.sync" and r.levelno >= logging.WARNING
    ]
    assert len(warnings) == 1, warnings
    assert "asks for TLS" not in warnings[0], warnings[0]
    where = (
        f"what answers at the host and port in central.url (GATEWAY_CENTRAL_URL), {site.host}:{site.port}, "
    )
    assert where in warnings[0], warnings[0]
    assert "is not PostgreSQL" in warnings[0], warnings[0]
    assert "check the port" in warnings[0], warnings[0]


async def test_postgres_restarted_under_a_running_sync_is_one_warning_and_one_recovery(
    nodes: tuple[Node, Node], postgres_server: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL stopped while the sync task runs, rows written meanwhile, then started
    again: the task reconnects by itself and delivers every row once; the log says the problem
    once (a warning; what else a restarting server says is at info level) and its end once
    (``recovered after N failed attempts``)."""
    a, _ = nodes
    caplog.set_level(logging.DEBUG, "gateway.sync")
    await a.store.write([touch(n, "a" * 32) for n in range(20)])
    task = asyncio.create_task(a.sync.run())
    try:
        async with asyncio.timeout(30):
            while a.metrics.sync_rows.labels("central", "touchpoints")._value.get() < 20:
                await asyncio.sleep(0.02)
        await postgres_server.stop()
        try:
            await a.store.write([touch(n, "b" * 32) for n in range(20, 50)])
            async with asyncio.timeout(30):
                while a.metrics.sync_errors.labels("central")._value.get() < 5:
                    await asyncio.sleep(0.02)
        finally:
            await postgres_server.start()
        async with asyncio.timeout(30):
            while not any("recovered after" in r.getMessage() for r in caplog.records):
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    conn = await asyncpg.connect(a.sync.dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM touchpoints") == 50
        assert await conn.fetchval("SELECT count(DISTINCT id) FROM touchpoints") == 50
    finally:
        await conn.close()
    lines = [r for r in caplog.records if r.name == "gateway.sync"]
    warnings = [r.getMessage() for r in lines if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    recovered = [r.getMessage() for r in lines if "recovered after" in r.getMessage()]
    assert len(recovered) == 1 and recovered[0].startswith("central sync recovered after")


async def test_a_backlog_shows_going_down_batch_by_batch(
    nodes: tuple[Node, Node], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A week offline is a backlog one round works through for minutes: the lag gauges go down
    after each batch, and the log says how far it is (every minute; here at each batch), where
    until 2026-12-04 they kept the count made before the round until it was over."""
    import storage.sync

    a, _ = nodes
    await a.store.write(
        [touch(n, f"{n:032x}", at=T0 - timedelta(days=7) + timedelta(minutes=n)) for n in range(50)]
    )
    rows = a.metrics.sync_lag_rows.labels("central", "touchpoints")
    age = a.metrics.sync_lag_seconds.labels("central", "touchpoints")
    seen: list[tuple[float, float]] = []

    def progress(total: int) -> Callable[[int], object]:
        assert total == 50
        return lambda delivered: seen.append((rows._value.get(), age._value.get()))

    monkeypatch.setattr(storage.sync, "PROGRESS_SECONDS", 0.0, raising=False)
    caplog.set_level(logging.INFO, "gateway.sync")
    assert (await a.sync.once(progress))["touchpoints"] == 50
    assert [left for left, _ in seen] == [43, 36, 29, 22, 15, 8, 1, 0]
    ages = [seconds for _, seconds in seen]
    assert ages == sorted(ages, reverse=True) and ages[-1] == 0  # the oldest waiting gets younger
    lines = [r.getMessage() for r in caplog.records if "catching up" in r.getMessage()]
    assert lines[0] == "central sync catching up: touchpoints: 7 rows delivered, 43 to go", lines
    assert len(lines) == 7  # none once nothing is left


async def test_a_central_store_on_an_older_or_newer_schema(
    nodes: tuple[Node, Node], pg: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """A central store an older gateway made (schema version 1) is brought up to date by the
    first node that syncs, and takes every row with the columns added since. One a newer
    gateway migrated past what this node knows stops this node's sync — one error naming both
    versions, the rows kept locally and shown as lag — until the node is upgraded (here: the
    newer version's record removed), when it delivers them all, once."""
    from storage.migrate import migrations

    a, _ = nodes
    shipped = await asyncio.to_thread(migrations, "pg_migrations")
    newest = shipped[-1][0]
    await pg.execute(
        "CREATE TABLE schema_version (version integer PRIMARY KEY, name text NOT NULL, "
        "applied timestamptz NOT NULL DEFAULT now())"
    )
    await pg.execute(shipped[0][2])
    await pg.execute("INSERT INTO schema_version (version, name) VALUES (1, $1)", shipped[0][1])
    await a.store.write([touch(n, "a" * 32) for n in range(3)])
    assert (await a.sync.once())["touchpoints"] == 3
    assert await pg.fetchval("SELECT max(version) FROM schema_version") == newest
    assert await pg.fetchval("SELECT count(*) FROM touchpoints WHERE consent = 'cookie'") == 3

    await pg.execute(
        "INSERT INTO schema_version (version, name) VALUES ($1, 'from_a_newer_gateway')", newest + 1
    )
    await a.store.write([touch(n, "b" * 32) for n in range(3, 8)])
    caplog.set_level(logging.DEBUG, "gateway.sync")
    await _run_until_errors(a.sync, a.metrics, 3)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert (
        len(errors) == 1
        and f"schema version {newest + 1}, newer than this gateway knows ({newest})" in errors[0]
    )
    assert a.metrics.sync_lag_rows.labels("central", "touchpoints")._value.get() == 5
    assert await count(pg, "touchpoints") == 3
    await pg.execute("DELETE FROM schema_version WHERE version = $1", newest + 1)
    assert (await a.sync.once())["touchpoints"] == 5
    assert (
        await pg.fetchval("SELECT count(DISTINCT id) FROM touchpoints") == await count(pg, "touchpoints") == 8
    )


async def test_a_running_sync_stops_when_another_node_migrates_the_central_store_past_it(
    nodes: tuple[Node, Node], pg: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """A node not upgraded yet, syncing on a connection it made before a newer gateway migrated
    the central store (a rolling upgrade: the other node restarted first), stops at its next
    round as it would at connecting — one error naming both versions, its rows kept and shown
    as lag — not only once its connection drops; upgraded, it delivers them."""
    from storage.migrate import migrations

    a, _ = nodes
    newest = (await asyncio.to_thread(migrations, "pg_migrations"))[-1][0]
    await a.store.write([touch(n, "a" * 32) for n in range(3)])
    caplog.set_level(logging.DEBUG, "gateway.sync")
    task = asyncio.create_task(a.sync.run())
    try:
        async with asyncio.timeout(30):
            while not await central.central_columns(pg, "touchpoints") or await count(pg, "touchpoints") < 3:
                await asyncio.sleep(0.02)
        await pg.execute(
            "INSERT INTO schema_version (version, name) VALUES ($1, 'from_a_newer_gateway')", newest + 1
        )
        await a.store.write([touch(n, "b" * 32) for n in range(3, 8)])
        async with asyncio.timeout(10):  # rounds every 0.05 s: this one's does not last that long
            while a.metrics.sync_errors.labels("central")._value.get() < 3:
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert (
        len(errors) == 1
        and f"schema version {newest + 1}, newer than this gateway knows ({newest})" in errors[0]
    ), errors
    assert await count(pg, "touchpoints") == 3
    assert a.metrics.sync_lag_rows.labels("central", "touchpoints")._value.get() == 5
    await pg.execute("DELETE FROM schema_version WHERE version = $1", newest + 1)
    assert (await a.sync.once())["touchpoints"] == 5


async def _batch(node: Node, conn: asyncpg.Connection, table: str) -> tuple[central.TablePlan, list[Any]]:
    """What the node's next sync would send of ``table``: its plan and rows."""
    from storage.cursors import local_columns, read_after

    db = await node.sync.open_local()
    try:
        local = await local_columns(db, table)
        plan = central.TablePlan.build(table, local, await central.central_columns(conn, table))
        rows, _ = await read_after(db, table, plan.columns, 0, 1000)
    finally:
        await db.close()
    return plan, list(rows)


@pytest.mark.parametrize("late", ["identities", "touchpoints"])
async def test_an_erasure_and_another_nodes_rows_synced_at_the_same_moment(
    nodes: tuple[Node, Node], central_dsn: str, pg: asyncpg.Connection, late: str
) -> None:
    """Node A's erasure of a user and node B's rows about them (a binding of a device the
    erasure could not know; a touchpoint of a device bound to them centrally), each in its own
    transaction at the same moment: neither saw the other's uncommitted rows, so the binding or
    the touchpoint stayed centrally after the erasure. Now an erasure's transaction and every
    transaction inserting rows it erases take turns, so the later one sees the other's rows."""
    a, b = nodes
    laptop, phone = "1" * 32, "2" * 32
    await a.store.write([touch(1, laptop), bind(laptop, "u-9")])
    if late == "touchpoints":  # the phone bound centrally already, its touchpoint not yet synced
        await b.store.write([bind(phone, "u-9", "b")])
        await b.sync.once()
        await b.store.write([touch(3, phone, "b")])
    else:
        await b.store.write([touch(3, phone, "b"), bind(phone, "u-9", "b")])
        await b.sync.once()  # the touchpoint goes; the binding is the late row
        await pg.execute("DELETE FROM identities WHERE node = 'b'")
    await a.sync.once()
    now = datetime.now(UTC)
    await erase_user(
        a.path, "u-9", "raw", body_key=body_key(b"k" * 32), event_id=uuid7(), ts=iso(now), node="a"
    )
    conn_a, conn_b = await asyncpg.connect(central_dsn), await asyncpg.connect(central_dsn)
    try:
        erasure_plan, erasure_rows = await _batch(a, conn_a, "erasures")
        late_plan, late_rows = await _batch(b, conn_b, late)
        if late == "touchpoints":
            late_rows = [r for r in late_rows if r[late_plan.columns.index("visitor_key")] == phone]
        assert erasure_rows and late_rows
        opened = conn_a.transaction()
        await opened.start()  # node A's batch: inserted and applied, not committed yet
        await central.CentralWriter(conn_a).insert(erasure_plan, erasure_rows)
        other = asyncio.create_task(central.CentralWriter(conn_b).insert(late_plan, late_rows))
        async with asyncio.timeout(30):  # B done, or waiting for A's turn to end
            while not other.done() and not await pg.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ):
                await asyncio.sleep(0.01)
        await opened.commit()
        async with asyncio.timeout(30):
            await other
    finally:
        await conn_a.close()
        await conn_b.close()
    assert await pg.fetchval("SELECT count(*) FROM identities WHERE user_key = 'u-9'") == 0
    assert await pg.fetchval("SELECT count(*) FROM touchpoints WHERE visitor_key = $1", phone) == 0
    assert await pg.fetchval("SELECT count(*) FROM touchpoints WHERE visitor_key = $1", laptop) == 0


async def test_a_database_whose_schema_version_is_another_applications(
    tmp_path: Path, central_dsn: str, pg: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """A database shared with an application whose migrations keep a ``schema_version`` table
    of their own (Flyway's former default name): the gateway read its versions as its own, so
    it said "upgrade the gateway" for ever (version 12 > 4) or, at a lower one, skipped the
    migrations and then every table it did not find, delivering nothing and saying nothing.
    Now it says the table is not its own and how to give it a schema of its own, which works."""
    await pg.execute(
        "CREATE TABLE schema_version (installed_rank integer PRIMARY KEY, version varchar(50), "
        "description varchar(200) NOT NULL, script varchar(1000) NOT NULL)"
    )
    await pg.execute("INSERT INTO schema_version VALUES (1, '12', 'init', 'V12__init.sql')")
    store = LocalStore(tmp_path / "n.db", StorageOptions(node="n"), Metrics())
    await store.open()
    await store.write([touch(n, "a" * 32) for n in range(3)])
    metrics = Metrics()
    options = CentralOptions(
        url="env:GATEWAY_CENTRAL_URL", backoff_min_seconds=0.02, backoff_max_seconds=0.05
    )
    caplog.set_level(logging.DEBUG, "gateway.sync")
    try:
        with pytest.raises(central.ForeignSchema, match="is not the gateway's"):
            await Sync(store.path, central_dsn, options, metrics).once()
        await _run_until_errors(Sync(store.path, central_dsn, options, metrics), metrics, 3)
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and warnings[0].exc_info is None, warnings
        said = warnings[0].getMessage()
        assert "schema_version table is not the gateway's" in said and "?search_path=" in said, said
        # As it says: a schema of its own.
        await pg.execute("CREATE SCHEMA gateway")
        own = Sync(store.path, central_dsn + "?search_path=gateway", options, metrics)
        assert (await own.once())["touchpoints"] == 3
    finally:
        await store.close()
    assert await pg.fetchval("SELECT count(*) FROM gateway.touchpoints") == 3
    assert await pg.fetchval("SELECT count(*) FROM public.schema_version") == 1  # theirs, untouched


async def test_an_asn_above_the_32_bit_signed_range_is_synced(
    nodes: tuple[Node, Node], pg: asyncpg.Connection
) -> None:
    """AS numbers are 32-bit unsigned (0..4294967295, as ``bots.datacenter_asns`` and GeoIP
    take them); the central column was a signed ``integer``, so one above 2147483647 (a
    private-use 42xxxxxxxx number in a custom GeoIP file) was refused and held the node's
    sync at that row for ever. The column is a ``bigint`` now (PostgreSQL migration 0005)."""
    a, _ = nodes
    far = touch(1, "a" * 32)
    far.asn = 4_200_000_001
    await a.store.write([far, touch(2, "a" * 32)])
    assert (await a.sync.once())["touchpoints"] == 2
    assert await pg.fetchval("SELECT asn FROM touchpoints WHERE id = $1::uuid", far.id) == 4_200_000_001
    assert (
        await pg.fetchval("SELECT asn FROM effective_touchpoints WHERE id = $1::uuid", far.id)
        == 4_200_000_001
    )


class Stop(Exception):
    """Ends a round from its progress callback, to look at the central store midway."""


async def test_an_erasure_goes_before_a_backlog_of_touchpoints(
    nodes: tuple[Node, Node], pg: asyncpg.Connection, central_dsn: str
) -> None:
    """A node comes back with 3,000 touchpoints waiting and an erasure recorded after them:
    the erasure is applied centrally before the first batch of the backlog, not after the last
    (until 2026-12-04 the tables went one after the other, erasures last, so an erasure waited
    behind the whole backlog)."""
    a, _ = nodes
    known = "1" * 32
    await a.store.write([touch(1, known), bind(known, "u-1")])
    await a.sync.once()
    await a.store.write([touch(n, f"{n:032x}") for n in range(10, 3010)])
    await erase_user(
        a.path, "u-1", "raw", body_key=b"k" * 32, event_id=uuid7(), ts=iso(datetime.now(UTC)), node="a"
    )
    metrics = Metrics()
    sync = Sync(a.path, central_dsn, CentralOptions(batch_size=100), metrics)
    touchpoints = metrics.sync_rows.labels("central", "touchpoints")

    def progress(total: int) -> Callable[[int], object]:
        assert total == 3001

        def done(rows: int) -> None:
            if touchpoints._value.get():
                raise Stop

        return done

    with pytest.raises(Stop):
        await sync.once(progress)
    assert await count(pg, "erasures") == 1
    assert await pg.fetchval("SELECT count(*) FROM touchpoints WHERE visitor_key = $1", known) == 0
    assert await count(pg, "identities") == 0
    assert await count(pg, "touchpoints") == 100  # the backlog's first batch; 2,900 to go
    assert metrics.sync_lag_rows.labels("central", "touchpoints")._value.get() == 2900
    assert (await sync.once())["touchpoints"] == 2900
    assert await count(pg, "touchpoints") == 3000


async def test_a_batch_read_before_an_erasure_is_read_again_once_it_went(
    nodes: tuple[Node, Node], pg: asyncpg.Connection
) -> None:
    """The next batch is read while the current one is written. An erasure recorded meanwhile
    goes before that next batch; the batch, read before the erasure, may hold the user's rows
    (here dated after the erasure, which the central store's erased keys do not keep out), so
    it is read again, without them, instead of being inserted after the erasure that should
    have deleted them."""
    a, _ = nodes
    known = "1" * 32
    later = datetime.now(UTC) + timedelta(hours=1)  # a clock ahead, or a signed event's own time
    await a.store.write([touch(n, f"{n:032x}") for n in range(10, 17)])  # the first batch (7)
    await a.store.write([touch(n, known, at=later + timedelta(seconds=n)) for n in range(7)])
    await a.store.write([touch(n, f"{n:032x}") for n in range(20, 27)])  # the newest stay
    await a.store.write([bind(known, "u-1")])
    await central.migrate(pg)
    async with round_held_at_the_erasure_lock(pg, a) as finish:  # the first batch waits
        await erase_user(
            a.path, "u-1", "raw", body_key=b"k" * 32, event_id=uuid7(), ts=iso(datetime.now(UTC)), node="a"
        )
        await finish()
    assert await pg.fetchval("SELECT count(*) FROM touchpoints WHERE visitor_key = $1", known) == 0
    assert await count(pg, "touchpoints") == 14 and await count(pg, "erasures") == 1


@contextlib.asynccontextmanager
async def round_held_at_the_erasure_lock(
    pg: asyncpg.Connection, node: Node
) -> AsyncIterator[Callable[[], Awaitable[dict[str, int]]]]:
    """A sync round of ``node`` started while the test holds the central erasure lock, and
    waiting at it (a batch in flight); ``finish()`` lets the round go on and answers what it
    delivered. The lock is let go however the test ends."""
    await pg.execute("SELECT pg_advisory_lock($1)", central.ERASURE_LOCK)
    held = True
    task = asyncio.create_task(node.sync.once())

    async def finish() -> dict[str, int]:
        nonlocal held
        await pg.execute("SELECT pg_advisory_unlock($1)", central.ERASURE_LOCK)
        held = False
        async with asyncio.timeout(30):
            return await task

    try:
        async with asyncio.timeout(30):
            while not await pg.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ):
                await asyncio.sleep(0.01)
        yield finish
    finally:
        if held:
            await pg.execute("SELECT pg_advisory_unlock($1)", central.ERASURE_LOCK)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def override(touchpoint: Touchpoint, node: str = "a", at: datetime | None = None) -> VerdictChange:
    moment = at or datetime.now(UTC)
    return VerdictChange(
        id=uuid7(int(moment.timestamp() * 1000)),
        ts=iso(moment),
        node=node,
        touchpoint_id=touchpoint.id,
        verdict="block",
        bot_score=None,
        reasons=[],
        origin="analyst",
        note="click farm",
        analyst="ana",
    )


async def test_a_verdict_change_of_a_touchpoint_the_central_store_has_not_is_left_out(
    nodes: tuple[Node, Node], pg: asyncpg.Connection
) -> None:
    """Node B's touchpoint of the phone went to the central store, and node A's erasure of its
    user deleted it there; node B, not erased locally, then overrides its verdict. Until
    2026-12-04 that verdict change was kept centrally, naming a touchpoint that no longer
    exists. Now a verdict change of a touchpoint the central store has not (erased, or never
    there) is left out, and the sync goes on."""
    a, b = nodes
    laptop, phone, stranger = "1" * 32, "2" * 32, "3" * 32
    theirs, kept = touch(3, phone, "b"), touch(4, stranger, "b")
    await a.store.write([touch(1, laptop), bind(laptop, "u-9")])
    await b.store.write([theirs, kept, bind(phone, "u-9", "b")])
    await a.sync.once()
    await b.sync.once()
    await erase_user(
        a.path, "u-9", "raw", body_key=b"k" * 32, event_id=uuid7(), ts=iso(datetime.now(UTC)), node="a"
    )
    await a.sync.once()
    assert await pg.fetchval("SELECT count(*) FROM touchpoints WHERE id = $1::uuid", theirs.id) == 0
    # Never stored: no node has it, and B's own store leaves its change out (since 2026-12-07,
    # a verdict change of a touchpoint the store has not is a late row), so two go.
    nowhere = touch(5, stranger, "b")
    await b.store.write([override(theirs, "b"), override(nowhere, "b"), override(kept, "b")])
    assert (await b.sync.once())["verdict_changes"] == 2  # delivered: none is held back
    assert await pg.fetchval("SELECT array_agg(touchpoint_id::text) FROM verdict_changes") == [kept.id]
    assert b.metrics.sync_lag_rows.labels("central", "verdict_changes")._value.get() == 0


async def test_a_verdict_change_goes_after_its_touchpoint_written_during_the_round(
    nodes: tuple[Node, Node], pg: asyncpg.Connection
) -> None:
    """A touchpoint stored after the round's touchpoints went, and its verdict change (a late
    signal re-scores it a moment later): the change is not left out for a touchpoint that
    is only not there yet; the touchpoints stored since go before each batch of changes."""
    a, _ = nodes
    visitor = "4" * 32
    await a.store.write([touch(1, visitor)])
    await a.sync.once()
    sale = Conversion(uuid7(), iso(T0), "a", "buy", "order:1", visitor, None, 5.0, "EUR")
    await a.store.write([sale])
    async with round_held_at_the_erasure_lock(pg, a) as finish:  # conversions wait
        assert await count(pg, "conversions") == 0  # the round's touchpoints went: none
        late = touch(2, visitor)
        await a.store.write([late])
        await a.store.write([override(late)])
        delivered = await finish()
    assert delivered["verdict_changes"] == 1 and delivered["touchpoints"] == 1
    assert await pg.fetchval("SELECT touchpoint_id::text FROM verdict_changes") == late.id


async def test_two_gateways_under_one_node_name_are_told_and_both_delivered(
    tmp_path: Path, central_dsn: str, pg: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """Two gateways given the same ``storage.node`` (a copied config, cloned hosts): each store
    has an instance identity of its own, the central store records which synced under each
    name, and the second one syncing under a name the other used says so — an error naming
    ``storage.node`` and what to do, once, then at most every 10 minutes like a failing sync —
    and shows it in ``gateway_sync_node_shared``; both keep syncing, their rows told apart by
    id. Until 2026-12-04 they synced without complaint. A store lost and made again under the
    same name looks the same at first: once the old one has not synced for an hour, it is
    over."""
    import storage.backoff

    await asyncio.to_thread((tmp_path / "first").mkdir)
    await asyncio.to_thread((tmp_path / "second").mkdir)
    first, second = Node(tmp_path / "first", "a", central_dsn), Node(tmp_path / "second", "a", central_dsn)
    await first.store.open()
    await second.store.open()
    caplog.set_level(logging.INFO, "gateway.sync")
    try:
        await first.store.write([touch(1, "1" * 32)])
        await first.sync.once()
        assert first.metrics.sync_node_shared.labels("central")._value.get() == 0
        await second.store.write([touch(2, "2" * 32)])
        for _ in range(3):
            await second.sync.once()
            await first.sync.once()  # the task and a cron ``sync --once`` of one store: one instance
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 2, errors  # one from each, not one per round
        assert "storage.node 'a'" in errors[0] and "give each gateway its own storage.node" in errors[0]
        assert second.metrics.sync_node_shared.labels("central")._value.get() == 1
        assert first.metrics.sync_node_shared.labels("central")._value.get() == 1
        assert await count(pg, "touchpoints") == 2  # nothing held back
        monkeypatch = pytest.MonkeyPatch()
        monkeypatch.setattr(storage.backoff, "REMIND_SECONDS", 0.0)
        try:
            await second.sync.once()
        finally:
            monkeypatch.undo()
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 3 and "storage.node 'a'" in errors[2], errors

        # The first store was lost: its instance has not synced for more than an hour.
        await pg.execute("UPDATE node_instances SET last_synced = now() - interval '61 minutes'")
        await second.sync.once()
        assert second.metrics.sync_node_shared.labels("central")._value.get() == 0
        ended = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
        assert any("no other gateway" in line for line in ended), ended
        assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 3
    finally:
        await first.store.close()
        await second.store.close()


async def test_a_node_under_another_identity_secret_is_told(
    tmp_path: Path, central_dsn: str, pg: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """Two nodes in front of one site given different ``identity.secret``s (a typo in one host's
    secret store, a rotation done on one node): each refuses the other's visitor cookies and keys
    one user two ways, so an erasure through one misses the other's rows. Each records a check
    value of its secret centrally, and a node finding another's that differs says so, as an
    error naming the other node and the key (once, then every 10 minutes), and in
    ``gateway_sync_other_secrets``; rows are still delivered. Nodes sharing the secret are
    quiet. Until 2026-12-05 they synced without a word (seen with two gateways on loopback)."""
    from gateway.keys import key_check

    same, other = key_check(b"s" * 40), key_check(b"c" * 40)
    assert same == key_check(b"s" * 40) != other and len(same) == 32
    assert (b"s" * 40).hex() not in same
    nodes = {}
    for name, check in (("a", same), ("b", same), ("c", other)):
        await asyncio.to_thread((tmp_path / name).mkdir)
        node = Node(tmp_path / name, name, central_dsn)
        node.sync = Sync(node.path, central_dsn, OPTIONS, node.metrics, node=name, key_check=check)
        await node.store.open()
        nodes[name] = node
    caplog.set_level(logging.INFO, "gateway.sync")
    try:
        for i, name in enumerate("ab"):
            await nodes[name].store.write([touch(i + 1, str(i + 1) * 32)])
            await nodes[name].sync.once()
        await nodes["a"].sync.once()
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert nodes["a"].metrics.sync_other_secrets.labels("central")._value.get() == 0

        await nodes["c"].store.write([touch(3, "3" * 32)])
        for _ in range(2):
            await nodes["c"].sync.once()
            await nodes["a"].sync.once()
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 2, errors  # one from each, not one per round
        assert "'a', 'b'" in errors[0] and "same identity.secret" in errors[0], errors
        assert "'c'" in errors[1] and "storage.node 'a'" in errors[1], errors
        assert nodes["c"].metrics.sync_other_secrets.labels("central")._value.get() == 2
        assert nodes["a"].metrics.sync_other_secrets.labels("central")._value.get() == 1
        assert await count(pg, "touchpoints") == 3  # nothing held back

        # Node c given the right secret: the error ends, as a line at info level.
        nodes["c"].sync.key_check = same
        await nodes["c"].sync.once()
        await nodes["a"].sync.once()
        assert nodes["a"].metrics.sync_other_secrets.labels("central")._value.get() == 0
        ended = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
        assert sum("every node that synced within the hour" in line for line in ended) == 2, ended
    finally:
        for node in nodes.values():
            await node.store.close()


async def test_a_store_keeps_its_instance_when_moved(tmp_path: Path) -> None:
    """The identity is in the store file: moved to another host (a new path), it is the same
    gateway; a store made anew has another."""
    from storage.local import connect, store_instance

    store = LocalStore(tmp_path / "one.db", StorageOptions(node="a"), Metrics())
    await store.open()
    await store.close()
    await asyncio.to_thread((tmp_path / "one.db").rename, tmp_path / "moved.db")
    other = LocalStore(tmp_path / "two.db", StorageOptions(node="a"), Metrics())
    await other.open()
    await other.close()
    found = []
    for name in ("moved.db", "two.db", "moved.db"):
        db = await connect(tmp_path / name)
        try:
            found.append(await store_instance(db))
        finally:
            await db.close()
    assert found[0] == found[2] != found[1] and len(found[0]) == 32


async def central_counts(pg: asyncpg.Connection) -> dict[tuple[str, str, str], int]:
    rows = await pg.fetch("SELECT node, day::text AS day, campaign, count FROM daily_counts")
    return {(row["node"], row["day"], row["campaign"]): int(row["count"]) for row in rows}


async def test_daily_counts_are_synced_as_absolute_counts_when_they_grew(
    nodes: tuple[Node, Node], pg: asyncpg.Connection
) -> None:
    """The Sec-GPC/DNT daily counts grow in place: each round delivers the rows that grew since,
    as the node's whole count of the key, under its node name and store instance. A round with
    nothing grown sends nothing and changes nothing (``ingested`` stays: the mirror reads
    nothing again); a count that grew replaces the one stored; the marks lost (a crash between
    the central commit and the local one) send them again, changing nothing; a count written
    late for an old day goes too. Until 2026-12-05 they were never synced."""
    a, _ = nodes
    today, old = T0.date().isoformat(), (T0 - timedelta(days=20)).date().isoformat()
    stamps = "SELECT campaign, ingested::text FROM daily_counts ORDER BY campaign"
    lag = a.metrics.sync_lag_rows.labels("central", "daily_counts")
    await a.store.write([gpc(today, "c1"), gpc(today, "c1"), gpc(today, "c2")])
    assert (await a.sync.once())["daily_counts"] == 2
    assert await central_counts(pg) == {("a", today, "c1"): 2, ("a", today, "c2"): 1}
    assert await pg.fetchval("SELECT count(DISTINCT instance) FROM daily_counts") == 1
    assert await pg.fetchval("SELECT instance FROM daily_counts LIMIT 1") == await pg.fetchval(
        "SELECT instance FROM node_instances WHERE node = 'a'"
    )
    first = await pg.fetch(stamps)
    assert (await a.sync.once())["daily_counts"] == 0
    assert await pg.fetch(stamps) == first
    await a.store.write([gpc(today, "c1", 3)])
    db = await a.sync.open_local()
    try:
        assert (await a.sync.publish_lag(db))["daily_counts"][0] == 1 and lag._value.get() == 1
    finally:
        await db.close()
    assert (await a.sync.once())["daily_counts"] == 1 and lag._value.get() == 0
    assert await central_counts(pg) == {("a", today, "c1"): 5, ("a", today, "c2"): 1}
    grown = await pg.fetch(stamps)
    assert grown[0] != first[0] and grown[1] == first[1]  # the grown one is read by the mirror again
    async with aiosqlite.connect(a.path) as local:
        await local.execute("UPDATE daily_counts SET sent = 0")
        await local.commit()
    assert (await a.sync.once())["daily_counts"] == 2
    assert await pg.fetch(stamps) == grown
    await a.store.write([gpc(old, "c1")])
    assert (await a.sync.once())["daily_counts"] == 1
    assert (await central_counts(pg))[("a", old, "c1")] == 1


async def test_daily_counts_of_two_syncs_at_once_are_never_set_back(
    nodes: tuple[Node, Node], pg: asyncpg.Connection, central_dsn: str
) -> None:
    """The task and a cron ``sync --once`` of one store, over more counts than a batch: every
    count arrives whole; the older read of one of them committing after the newer does not set
    a count back (only a larger count replaces one)."""
    a, _ = nodes
    today = T0.date().isoformat()
    await a.store.write([gpc(today, f"c{n:02}") for n in range(20)])
    assert (await a.sync.once())["daily_counts"] == 20  # batches of 7
    await a.store.write([gpc(today, f"c{n:02}", 2) for n in range(20)])
    twin = Sync(a.path, central_dsn, OPTIONS, Metrics(), node="a")
    first, second = await asyncio.gather(a.sync.once(), twin.once())
    assert first["daily_counts"] + second["daily_counts"] >= 20
    assert set((await central_counts(pg)).values()) == {3}
    instance = await pg.fetchval("SELECT instance FROM daily_counts LIMIT 1")
    writer = central.CentralWriter(pg)
    assert await writer.upsert_counts("a", instance, [(today, "news", "email", "c00", "Email", "", 1)]) == 0
    assert (await central_counts(pg))[("a", today, "c00")] == 3
    assert await writer.upsert_counts("a", instance, [(today, "news", "email", "c00", "Email", "", 4)]) == 1
    assert (await central_counts(pg))[("a", today, "c00")] == 4


FIRST_0008 = """
CREATE TABLE daily_counts (
    node       text NOT NULL,
    instance   text NOT NULL,
    day        date NOT NULL,
    source     text NOT NULL DEFAULT '',
    medium     text NOT NULL DEFAULT '',
    campaign   text NOT NULL DEFAULT '',
    channel    text NOT NULL DEFAULT '',
    creator_id text NOT NULL DEFAULT '',
    count      bigint NOT NULL,
    ingested   xid8 NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (node, instance, day, source, medium, campaign, channel, creator_id)
);
CREATE INDEX daily_counts_ingested
    ON daily_counts (ingested, node, instance, day, source, medium, campaign, channel, creator_id);
"""
"""PostgreSQL migration 0008 as main shipped it from 02:06 to 02:25 on 2026-12-05 (8f802b3),
before a count was keyed by its store instance alone."""


async def test_a_central_store_of_the_first_daily_counts_key_is_keyed_again(
    nodes: tuple[Node, Node], pg: asyncpg.Connection
) -> None:
    """A central store migrated by main while 0008 keyed counts by (node, instance, …) kept that
    key: the sync's `ON CONFLICT (instance, …)` then failed every round (no constraint matches
    it), and no node synced anything more. Migration 0010 keys it again; of one store's counts
    of a key under two node names (a node renamed meanwhile), the larger stays, as each is that
    store's whole count."""
    from storage.migrate import migrations

    shipped = await asyncio.to_thread(migrations, "pg_migrations")
    await pg.execute(
        "CREATE TABLE schema_version (version integer PRIMARY KEY, name text NOT NULL, "
        "applied timestamptz NOT NULL DEFAULT now())"
    )
    for version, name, sql in shipped[:8]:
        await pg.execute(FIRST_0008 if version == 8 else sql)
        await pg.execute("INSERT INTO schema_version (version, name) VALUES ($1, $2)", version, name)
    renamed = (
        "INSERT INTO daily_counts (node, instance, day, campaign, count)"
        " VALUES ($1, 'i1', '2026-12-01', 'c', $2)"
    )
    await pg.executemany(renamed, [("edge-old", 3), ("edge-new", 5)])
    a, _ = nodes
    today = T0.date().isoformat()
    await a.store.write([gpc(today, "c1"), gpc(today, "c1")])
    assert (await a.sync.once())["daily_counts"] == 1
    assert await central_counts(pg) == {("a", today, "c1"): 2, ("edge-new", "2026-12-01", "c"): 5}
    await a.store.write([gpc(today, "c1")])
    assert (await a.sync.once())["daily_counts"] == 1
    assert (await central_counts(pg))[("a", today, "c1")] == 3


async def test_a_statement_timeout_of_the_server_is_named_with_what_to_do(
    tmp_path: Path, central_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A `statement_timeout` a DBA set for the database or the gateway's user (or in the URL's
    `options`) cancels a statement that waits or runs longer: every round failed with
    PostgreSQL's words alone, `QueryCanceledError: canceling statement due to statement
    timeout` (until 2026-12-07), which names neither the setting nor what to do. Here the
    statement waits for the migration lock another session holds."""
    store = LocalStore(tmp_path / "n.db", StorageOptions(node="n"), Metrics())
    await store.open()
    metrics = Metrics()
    options = CentralOptions(
        url="env:GATEWAY_CENTRAL_URL",
        interval_seconds=0.05,
        backoff_min_seconds=0.02,
        backoff_max_seconds=0.05,
    )
    holder = await asyncpg.connect(central_dsn)
    await holder.execute("SELECT pg_advisory_lock($1)", central.MIGRATION_LOCK)
    dsn = central_dsn + "?options=-c%20statement_timeout%3D50"
    sync = Sync(store.path, dsn, options, metrics)
    caplog.set_level(logging.WARNING, "gateway.sync")
    try:
        await _run_until_errors(sync, metrics, 2)
    finally:
        await holder.close()
        await store.close()
    warnings = [
        r.getMessage() for r in caplog.records if r.name == "gateway.sync" and r.levelno >= logging.WARNING
    ]
    assert warnings and "canceling statement due to statement timeout" in warnings[0], warnings
    assert (
        "; a statement_timeout of the server, the database or the user in central.url"
        " (GATEWAY_CENTRAL_URL) cancelled a statement of the sync: raise it for that user"
        " (ALTER ROLE <user> SET statement_timeout = '5min') or lower central.batch_size" in warnings[0]
    ), warnings[0]
