"""The reporting mirror against a real PostgreSQL: the same reports as a node's own store, a
journey across two nodes credited, exact windows (a row committed late, old rows caught up),
erasures, and a central store away."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
import pytest

from bench.synth import generate
from gateway import reporting
from gateway.attribution import MODELS, Attribution
from gateway.badbody import body_key
from gateway.channels import Channels
from gateway.events import Conversion, Touchpoint, VerdictChange, iso
from gateway.ids import _format, uuid7
from gateway.keys import Keys
from gateway.metrics import Metrics
from gateway.options import AttributionOptions, CentralOptions, ChannelsOptions
from gateway.payouts import Payouts, PayoutsOptions, TierPayout
from storage.central import migrate as central_migrate
from storage.central_queries import CentralReader
from storage.erasure import erase_user, erase_visitor
from storage.mirror import Mirror, open_mirror
from storage.populations import population_counts
from storage.queries import TouchpointQuery
from storage.reports import Reports
from storage.retention import purge
from storage.sync import Sync
from tests.conftest import make_settings
from tests.storage.stores import read
from tests.storage.test_sync import OPTIONS, T0, Node, bind, gpc, touch

CHANNELS = Channels(ChannelsOptions())  # reads its rules' files: not on the event loop
EVERY = (datetime(2020, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC))


@pytest.fixture
def mirror(tmp_path: Path, central_dsn: str) -> Mirror:
    return Mirror(tmp_path / "mirror.db", central_dsn, OPTIONS, Metrics())


async def report(
    path: Path, q: reporting.Query, *, by_day: bool = False, payouts: Payouts | None = None
) -> list[dict[str, object]]:
    reports = Reports(path, Attribution(AttributionOptions()), CHANNELS, processes=1)
    await reports.open()
    try:
        if payouts is not None:
            return json.loads((await reporting.payouts(reports, payouts, q)).json())["rows"]  # type: ignore[no-any-return]
        return json.loads((await reporting.attribution(reports, q, by_day=by_day)).json())["rows"]  # type: ignore[no-any-return]
    finally:
        await reports.close()


def conversion(visitor: str, node: str, at: datetime, order: str) -> Conversion:
    return Conversion(
        id=uuid7(int(at.timestamp() * 1000)),
        ts=iso(at),
        node=node,
        name="purchase",
        dedup_key=f"order:{order}",
        visitor_key=visitor,
        value=20.0,
        currency="EUR",
        order_id=order,
    )


def plain(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A row with its JSON text decoded."""
    return tuple(json.loads(v) if isinstance(v, str) and v[:1] in ("[", "{") else v for v in row)


async def ids(path: Path, table: str) -> set[str]:
    return {row[0] for row in await read(path, f"SELECT id FROM {table}")}


async def aggregate(path: Path) -> int:
    """The ``aggregate`` population (Sec-GPC/DNT landings) the reports and dashboard read."""
    async with aiosqlite.connect(path) as db:
        return (await population_counts(db, *EVERY)).get("aggregate", 0)


async def test_one_node_reports_the_same_over_the_mirror(tmp_path: Path, central_dsn: str) -> None:
    """Every model, the time series and the payouts: the same rows and values over the mirror
    as over the node's own store (timestamps, ids, JSON and verdict changes in the local
    store's forms)."""
    node = tmp_path / "node.db"
    await asyncio.to_thread(generate, node, 1500, 200, 7, 20, True)
    options = CentralOptions(batch_size=500)
    await Sync(node, central_dsn, options, Metrics()).once()
    path = tmp_path / "mirror.db"
    stored = await Mirror(path, central_dsn, options, Metrics()).once()
    tables = ("touchpoints", "identities", "conversions", "verdict_changes", "creator_standings")
    counted = {t: (await read(node, f"SELECT count(*) FROM {t}"))[0][0] for t in tables}
    assert {t: stored[t] for t in tables} == counted and counted["touchpoints"] >= 1500
    for table in tables:  # JSON with its keys in jsonb's order: the same values
        sql = f"SELECT * FROM {table} ORDER BY id"
        assert [plain(row) for row in await read(path, sql)] == [plain(row) for row in await read(node, sql)]
    q = reporting.Query(*EVERY, models=tuple(MODELS))
    assert await report(path, q) == await report(node, q)
    assert await report(path, q, by_day=True) == await report(node, q, by_day=True)
    by_creator = reporting.Query(*EVERY, models=("last_touch",), group_by="creator_id")
    rules = Payouts(PayoutsOptions(default_tier="std", tiers={"std": TierPayout(revenue_share=0.1, cpa=1.0)}))
    paid = await report(node, by_creator, payouts=rules)
    assert paid and await report(path, by_creator, payouts=rules) == paid


async def test_a_journey_across_two_nodes_is_credited_in_the_mirror(
    nodes: tuple[Node, Node], mirror: Mirror
) -> None:
    a, b = nodes
    visitor = "f" * 32
    landing = Touchpoint(
        id=uuid7(int(T0.timestamp() * 1000)),
        ts=iso(T0),
        node="a",
        visitor_key=visitor,
        source="news",
        medium="email",
        campaign="x",
        landing_path="/",
    )
    await a.store.write([landing])
    await b.store.write([conversion(visitor, "b", T0 + timedelta(minutes=5), "1")])
    await a.sync.once()
    await b.sync.once()
    await mirror.once()
    q = reporting.Query(*EVERY, group_by="campaign")

    def credited(rows: list[dict[str, object]]) -> dict[object, object]:
        return {row["group"]: row["conversions"] for row in rows if row["conversions"]}

    assert credited(await report(mirror.path, q)) == {"x": 1.0}
    assert "x" not in credited(await report(a.path, q)) and "x" not in credited(await report(b.path, q))


async def test_a_row_committed_after_a_round_began_is_not_skipped(
    nodes: tuple[Node, Node], mirror: Mirror, central_dsn: str
) -> None:
    """A transaction that inserted a row before a round and commits after it: its row, with an
    older id than rows the round mirrored, comes with the next round (a horizon taken as the
    next transaction id, or an id cursor, skips it for ever)."""
    a, _ = nodes
    first = touch(1, "1" * 32)
    await a.store.write([first])
    await a.sync.once()  # the central schema, and a row newer than the late one
    late = touch(0, "2" * 32, "c")
    slow = await asyncpg.connect(central_dsn)
    try:
        transaction = slow.transaction()
        await transaction.start()
        await slow.execute(
            "INSERT INTO touchpoints (id, ts, node, visitor_key, landing_path)"
            " VALUES ($1::uuid, $2, 'c', $3, '/')",
            late.id,
            T0,
            late.visitor_key,
        )
        await a.store.write([touch(2, "3" * 32)])
        await a.sync.once()  # committed after the slow one began, and before it commits
        await mirror.once()
        mirrored = await ids(mirror.path, "touchpoints")
        assert late.id not in mirrored and first.id in mirrored  # the newer row, in
        await transaction.commit()
    finally:
        await slow.close()
    await mirror.once()
    assert late.id in await ids(mirror.path, "touchpoints")


async def test_old_rows_a_node_catches_up_on_are_mirrored(nodes: tuple[Node, Node], mirror: Mirror) -> None:
    a, b = nodes
    await a.store.write([touch(n, "a" * 32, at=T0 + timedelta(days=2, seconds=n)) for n in range(5)])
    await a.sync.once()
    await mirror.once()
    old = [touch(n, "b" * 32, "b") for n in range(20)]  # a node back after days offline
    await b.store.write(old)
    await b.sync.once()
    assert (await mirror.once())["touchpoints"] == 20
    assert {t.id for t in old} <= (await ids(mirror.path, "touchpoints"))
    assert (await mirror.once())["touchpoints"] == 0


async def test_an_erasure_leaves_the_mirror_and_keeps_late_rows_out(
    nodes: tuple[Node, Node], mirror: Mirror
) -> None:
    a, b = nodes
    laptop, phone, stranger = "1" * 32, "2" * 32, "3" * 32
    await a.store.write(
        [touch(1, laptop), bind(laptop, "u-9"), conversion(laptop, "a", T0 + timedelta(seconds=2), "9")]
    )
    await a.store.write([touch(3, stranger)])
    await b.store.write([touch(4, phone, "b")])  # a device of the user not yet known as theirs
    await a.sync.once()
    await b.sync.once()
    await mirror.once()
    assert len(await ids(mirror.path, "touchpoints")) == 3
    await erase_user(
        a.path,
        "u-9",
        "raw",
        body_key=body_key(b"k" * 32),
        event_id=uuid7(),
        ts=iso(datetime.now(UTC)),
        node="a",
    )
    await a.sync.once()
    await mirror.once()
    assert {row[0] for row in (await read(mirror.path, "SELECT visitor_key FROM touchpoints"))} == {
        stranger,
        phone,
    }
    assert (await ids(mirror.path, "conversions")) == (await ids(mirror.path, "identities")) == set()
    assert len(await ids(mirror.path, "erasures")) == 1
    # Node b, not synced since: an older row of the laptop (refused centrally), and the phone's
    # binding to the user from before the erasure (the phone's older rows are erased centrally).
    await b.store.write([touch(0, laptop, "b"), bind(phone, "u-9", "b", at=T0 + timedelta(seconds=5))])
    await b.sync.once()
    await mirror.once()
    assert {row[0] for row in (await read(mirror.path, "SELECT visitor_key FROM touchpoints"))} == {stranger}
    assert (await ids(mirror.path, "identities")) == set()


def _files(path: Path) -> bytes:
    """Every byte of a store: its database file and its write-ahead log, if any."""
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


async def test_an_erasure_leaves_the_mirror_s_files_too(nodes: tuple[Node, Node], mirror: Mirror) -> None:
    """As in a node's own store, an erased row's bytes must not stay in the mirror's files: the
    gateway's reports keep the mirror open, so its write-ahead log is not emptied on close, and
    its older frames held the erased rows' pages."""
    a, _ = nodes
    erased, kept = "1" * 32, "3" * 32
    rows = [dataclasses.replace(touch(n, erased), landing_path=f"/erased-path-{n:03d}") for n in range(1, 30)]
    await a.store.write(
        [*rows, bind(erased, "u-9"), dataclasses.replace(touch(40, kept), landing_path="/kept")]
    )
    await a.sync.once()
    await mirror.once()
    reader = await aiosqlite.connect(mirror.path)  # as the reports hold it
    try:
        await (await reader.execute("SELECT count(*) FROM touchpoints")).fetchall()
        assert b"/erased-path-007" in await asyncio.to_thread(_files, mirror.path)  # the search finds it
        await erase_user(
            a.path,
            "u-9",
            "raw",
            body_key=body_key(b"k" * 32),
            event_id=uuid7(),
            ts=iso(datetime.now(UTC)),
            node="a",
        )
        await a.sync.once()
        await mirror.once()
        assert await ids(mirror.path, "identities") == set()
        after = await asyncio.to_thread(_files, mirror.path)
        assert b"/erased-path-" not in after and b"/kept" in after
    finally:
        await reader.close()


async def test_a_visitors_own_erasure_leaves_the_mirror(nodes: tuple[Node, Node], mirror: Mirror) -> None:
    """A visitor erased alone (``erase_visitor``): the mirror applies its record as a user's —
    the visitor's rows go, the binding of another device of the user, and the stranger's, stay."""
    a, _ = nodes
    laptop, phone, stranger = "1" * 32, "2" * 32, "3" * 32
    await a.store.write(
        [
            touch(1, laptop),
            touch(2, phone),
            touch(3, stranger),
            bind(phone, "u-9"),
            conversion(laptop, "a", T0 + timedelta(seconds=4), "9"),
        ]
    )
    await a.sync.once()
    await mirror.once()
    await erase_visitor(
        a.path,
        [laptop],
        body_key=body_key(b"k" * 32),
        keys=Keys.from_master(b"m" * 32),
        event_id=uuid7(),
        ts=iso(datetime.now(UTC)),
        node="a",
    )
    await a.sync.once()
    await mirror.once()
    left = {row[0] for row in await read(mirror.path, "SELECT visitor_key FROM touchpoints")}
    assert left == {phone, stranger}
    assert await ids(mirror.path, "conversions") == set()
    assert len(await ids(mirror.path, "identities")) == 1


async def test_the_mirror_keeps_its_rows_while_the_central_store_is_away(
    nodes: tuple[Node, Node], mirror: Mirror, tmp_path: Path
) -> None:
    a, _ = nodes
    visitor = "d" * 32
    await a.store.write([touch(1, visitor), conversion(visitor, "a", T0 + timedelta(seconds=9), "5")])
    await a.sync.once()
    await mirror.once()
    away = Mirror(
        mirror.path, "postgresql://gw@127.0.0.1:1/gw", CentralOptions(connect_timeout=2.0), Metrics()
    )
    with pytest.raises(OSError):
        await away.once()
    assert len(await ids(mirror.path, "touchpoints")) == 1
    q = reporting.Query(*EVERY, group_by="campaign")
    assert [row["conversions"] for row in await report(mirror.path, q) if row["conversions"]] == [1.0]


async def test_the_sec_gpc_counts_of_every_node_are_summed_in_the_mirror(
    nodes: tuple[Node, Node], mirror: Mirror
) -> None:
    """Two nodes count Sec-GPC landings of the same day and key: the mirror's ``daily_counts``,
    which the reports' and the dashboard's ``populations`` read, hold their sum; a node's count
    that grows replaces its older one there (no double count); rounds with nothing new change
    nothing. Until 2026-12-05 the counts were never synced: the populations over the mirror
    left every node's Sec-GPC visitors out."""
    a, b = nodes
    day = T0.date().isoformat()
    await a.store.write([gpc(day), gpc(day)])
    await b.store.write([gpc(day, count=3), gpc(day, "other"), *(gpc(day, f"k{n}") for n in range(10))])
    await a.sync.once()
    await b.sync.once()
    assert (await mirror.once())["daily_counts"] == 13  # in batches of 7
    summed = (
        "SELECT day, campaign, count FROM daily_counts WHERE campaign IN ('c', 'other') ORDER BY campaign"
    )
    assert await read(mirror.path, summed) == [(day, "c", 5), (day, "other", 1)]
    assert await aggregate(mirror.path) == 16 and await aggregate(a.path) == 2
    await a.store.write([gpc(day, count=4)])
    await a.sync.once()
    assert (await mirror.once())["daily_counts"] == 1
    assert await read(mirror.path, summed) == [(day, "c", 9), (day, "other", 1)]
    per_node = "SELECT node, campaign, count FROM mirror_daily_counts WHERE campaign = 'c' ORDER BY node"
    assert await read(mirror.path, per_node) == [("a", "c", 6), ("b", "c", 3)]
    await a.sync.once()
    await b.sync.once()
    assert (await mirror.once())["daily_counts"] == 0
    assert await aggregate(mirror.path) == 20
    assert mirror.metrics.sync_lag_rows.labels("mirror", "daily_counts")._value.get() == 0


async def test_a_renamed_node_goes_on_counting_in_its_rows_not_beside_them(
    nodes: tuple[Node, Node], mirror: Mirror, central_dsn: str
) -> None:
    """A node's name changes (``storage.node`` edited, or left empty and the host name changed
    with a new container) while its store file stays: its grown count replaces its rows, keyed
    by the store's instance, and is counted once centrally and in the mirror. Found in review,
    2026-12-05: keyed by name too, the renamed node's whole count went in beside the old one
    (6 landings counted 11)."""
    a, _ = nodes
    day = T0.date().isoformat()
    await a.store.write([gpc(day)] * 5)
    await a.sync.once()
    await mirror.once()
    renamed = Sync(a.path, central_dsn, OPTIONS, a.metrics, node="a-new-host")
    await a.store.write([gpc(day)])
    await renamed.once()
    central = await asyncpg.connect(central_dsn)
    try:
        rows = await central.fetch("SELECT node, count FROM daily_counts WHERE day = $1::date", T0.date())
    finally:
        await central.close()
    assert [tuple(row) for row in rows] == [("a-new-host", 6)]
    await mirror.once()
    assert await aggregate(mirror.path) == await aggregate(a.path) == 6
    per_node = "SELECT node, count FROM mirror_daily_counts"
    assert await read(mirror.path, per_node) == [("a-new-host", 6)]


async def test_retention_purges_the_mirror_as_the_central_store(
    nodes: tuple[Node, Node], mirror: Mirror, tmp_path: Path, central_dsn: str
) -> None:
    a, _ = nodes
    await a.store.write([touch(1, "e" * 32)])
    kept = (T0 + timedelta(days=2)).date().isoformat()  # the cutoff's day: kept
    await a.store.write([gpc(T0.date().isoformat()), gpc(kept)])
    await a.sync.once()
    await mirror.once()
    toml = (
        f'[storage]\npath = "{a.path}"\n[central]\nurl = "env:GATEWAY_CENTRAL_URL"\n'
        f'mirror_path = "{mirror.path}"\n[privacy]\nretention_days = 1\n'
    )
    settings = await asyncio.to_thread(make_settings, tmp_path, toml, GATEWAY_CENTRAL_URL=central_dsn)
    done = await purge(settings, T0 + timedelta(days=3))
    assert done["mirror"]["touchpoints"] == done["central"]["touchpoints"] == 1
    assert await ids(mirror.path, "touchpoints") == set()
    assert done["local"]["daily_counts"] == done["central"]["daily_counts"] == 1
    assert done["mirror"]["daily_counts"] == done["mirror"]["mirror_daily_counts"] == 1
    for path, table in (
        (a.path, "daily_counts"),
        (mirror.path, "daily_counts"),
        (mirror.path, "mirror_daily_counts"),
    ):
        assert await read(path, f"SELECT day FROM {table}") == [(kept,)]
    conn = await asyncpg.connect(central_dsn)
    try:
        assert [row[0] for row in await conn.fetch("SELECT day::text FROM daily_counts")] == [kept]
    finally:
        await conn.close()


async def test_the_mirror_task_says_an_outage_once_and_its_end(
    nodes: tuple[Node, Node], mirror: Mirror, central_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    a, _ = nodes
    await a.store.write([touch(1, "e" * 32)])
    await a.sync.once()
    caplog.set_level(logging.INFO, "gateway.mirror")
    mirror.dsn = "postgresql://gw@127.0.0.1:1/gw"  # nothing listens there
    errors = mirror.metrics.sync_errors.labels("mirror")
    task = asyncio.create_task(mirror.run())
    try:
        async with asyncio.timeout(30):
            while errors._value.get() < 3:
                await asyncio.sleep(0.02)
            assert await ids(mirror.path, "touchpoints") == set()  # made, empty: reports answer
            mirror.dsn = central_dsn
            while not mirror.metrics.sync_last_success.labels("mirror")._value.get():
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert await ids(mirror.path, "touchpoints")
    said = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in said] == ["WARNING", "INFO"], said
    assert "reporting mirror failed" in said[0][1] and "central.url" in said[0][1]
    assert said[1][1].startswith("reporting mirror recovered after ")


async def test_a_central_store_whose_transaction_ids_went_back_is_mirrored_again(
    nodes: tuple[Node, Node], mirror: Mirror
) -> None:
    """A database restored into another cluster starts its transaction ids again: rows it then
    takes would fall below the mirror's horizon. The round starts the mirror again from
    nothing (``storage.mirror_identity``), and holds the store's rows."""
    a, _ = nodes
    await a.store.write([touch(1, "e" * 32)])
    await a.sync.once()
    await mirror.once()
    db = await open_mirror(mirror.path)
    try:
        await db.execute("UPDATE mirror_horizons SET horizon = horizon + 1000000")
        await db.execute("DELETE FROM touchpoints")
    finally:
        await db.close()
    assert (await mirror.once())["touchpoints"] == 1
    assert len(await ids(mirror.path, "touchpoints")) == 1


async def test_a_window_read_again_counts_only_the_rows_it_had_not(
    nodes: tuple[Node, Node], mirror: Mirror
) -> None:
    """A round that failed part way leaves its horizon: the next reads the window again,
    skipping (and not counting) the rows it stored."""
    a, _ = nodes
    await a.store.write([touch(n, "e" * 32) for n in range(10)])
    await a.sync.once()
    assert (await mirror.once())["touchpoints"] == 10
    db = await open_mirror(mirror.path)
    try:
        await db.execute("UPDATE mirror_horizons SET horizon = 0")
        await db.execute("DELETE FROM touchpoints WHERE rowid IN (SELECT rowid FROM touchpoints LIMIT 3)")
    finally:
        await db.close()
    assert (await mirror.once())["touchpoints"] == 3
    assert len(await ids(mirror.path, "touchpoints")) == 10


async def test_the_lag_in_rows_and_in_seconds_since_the_last_round(
    nodes: tuple[Node, Node], mirror: Mirror
) -> None:
    """The mirror published ``gateway_sync_lag_rows`` but no ``gateway_sync_lag_seconds``: now,
    per table, the seconds since its last completed round while central rows wait for it (0
    when none does), and in any case while rounds fail (rows cannot be counted then)."""
    a, _ = nodes
    await a.store.write([touch(1, "f" * 32)])
    await a.sync.once()
    await mirror.once()
    rows = mirror.metrics.sync_lag_rows.labels("mirror", "touchpoints")
    seconds = mirror.metrics.sync_lag_seconds.labels("mirror", "touchpoints")
    still = mirror.metrics.sync_lag_seconds.labels("mirror", "conversions")
    assert rows._value.get() == 0 and seconds._value.get() == 0 and still._value.get() == 0
    await a.store.write([touch(2, "f" * 32), touch(3, "f" * 32)])
    await a.sync.once()
    db = await open_mirror(mirror.path)
    conn = await asyncpg.connect(mirror.dsn)
    try:
        hour_ago = datetime.now(UTC) - timedelta(hours=1)
        await db.execute("UPDATE mirror_horizons SET updated = ?", (iso(hour_ago),))  # rounds an hour ago
        await db.commit()
        assert (await mirror.publish_lag(db, conn))["touchpoints"] == 2
        assert rows._value.get() == 2
        assert 3600 <= seconds._value.get() < 2 * 3600  # since the last round, not the rows' ts (T0)
        assert still._value.get() == 0  # no conversion waits
        await mirror.publish_age(db, failing=True)  # PostgreSQL away: behind since the last round
        assert 3600 <= still._value.get() < 2 * 3600
    finally:
        await conn.close()
        await db.close()
    await mirror.once()
    assert seconds._value.get() == 0 and rows._value.get() == 0


async def test_roles_without_create_rights_sync_and_mirror_a_migrated_store(
    tmp_path: Path, central_dsn: str
) -> None:
    """A DBA's usual roles: the owner migrates the schema, the nodes' role may read and write
    the tables, the reporting gateway's only read them. Each round ran ``CREATE TABLE IF NOT
    EXISTS schema_version`` first, which needs CREATE on the schema even when the table is there:
    until 2026-12-05 both roles failed every round (``permission denied for schema public``),
    the mirror too, which only reads."""
    owner = await asyncpg.connect(central_dsn)
    suffix = uuid7().replace("-", "")[-12:]
    writer, reader = f"gw_w{suffix}", f"gw_r{suffix}"
    try:
        await central_migrate(owner)
        database = await owner.fetchval("SELECT current_database()")
        await owner.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        for role, rights in ((writer, "SELECT, INSERT, UPDATE, DELETE"), (reader, "SELECT")):
            await owner.execute(f"CREATE ROLE {role} LOGIN")
            await owner.execute(f"GRANT CONNECT, TEMPORARY ON DATABASE {database} TO {role}")
            await owner.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
            await owner.execute(f"GRANT {rights} ON ALL TABLES IN SCHEMA public TO {role}")
        node = Node(tmp_path, "a", central_dsn.replace("://postgres@", f"://{writer}@"))
        await node.store.open()
        try:
            await node.store.write([touch(1, "1" * 32), touch(2, "2" * 32)])
            assert (await node.sync.once())["touchpoints"] == 2
        finally:
            await node.store.close()
        as_reader = central_dsn.replace("://postgres@", f"://{reader}@")
        stored = await Mirror(tmp_path / "mirror.db", as_reader, OPTIONS, Metrics()).once()
        assert stored["touchpoints"] == 2, stored
        # Without the table, the role that cannot create it is still told so.
        await owner.execute("DROP TABLE schema_version")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await Mirror(tmp_path / "mirror2.db", as_reader, OPTIONS, Metrics()).once()
    finally:
        for role in (writer, reader):
            await owner.execute(f"DROP OWNED BY {role}")
            await owner.execute(f"DROP ROLE IF EXISTS {role}")
        await owner.close()


async def test_a_withdrawn_override_counts_as_none_centrally_and_in_the_mirror(
    nodes: tuple[Node, Node], mirror: Mirror, central_dsn: str
) -> None:
    """An override withdrawn on node A (``analyst_cleared``) goes to the central store with
    its sync and to the mirror with the mirror's rounds, and both read it as the node does:
    the scoring's verdict again (the latest re-score, one after the withdrawal too, else as
    stored) until another override — in the central listings and review queue, and in the
    reports over the mirror."""
    a, _ = nodes
    visitor = "e" * 32
    kinds = ("review", None, "allow")  # each touchpoint's stored verdict
    touches = [
        dataclasses.replace(touch(n, visitor), verdict=v, creator_id="anna") for n, v in enumerate(kinds)
    ]
    await a.store.write(touches)

    def change(n: int, tp: Touchpoint, verdict: str, origin: str) -> VerdictChange:
        at = T0 + timedelta(hours=1, seconds=n)
        return VerdictChange(
            uuid7(int(at.timestamp() * 1000)), iso(at), "a", tp.id, verdict, None, [], origin, "why",
            None if origin == "rescore" else "ana",
        )  # fmt: skip

    first, second, third = touches
    await a.store.write(
        [
            change(0, first, "allow", "analyst"),
            change(1, first, "allow", "analyst_cleared"),  # back to review, as stored
            change(2, second, "block", "analyst"),
            change(3, second, "allow", "analyst_cleared"),
            change(4, second, "review", "rescore"),  # a re-score after it counts
            change(5, third, "block", "analyst"),
            change(6, third, "allow", "analyst_cleared"),
            change(7, third, "block", "analyst"),  # another override counts
        ]
    )
    await a.sync.once()
    expected = {first.id: ("review", None), second.id: ("review", "rescore"), third.id: ("block", "analyst")}
    pg = await asyncpg.connect(central_dsn)
    try:
        rows = await pg.fetch("SELECT id::text, effective_verdict, verdict_origin FROM effective_touchpoints")
    finally:
        await pg.close()
    assert {r[0]: (r[1], r[2]) for r in rows} == expected
    reader = CentralReader(a.path, central_dsn, 10)
    await reader.open()
    try:
        items, _ = await reader.touchpoints(TouchpointQuery(limit=10))
        queue, _ = await reader.touchpoints(TouchpointQuery(limit=10, verdict="review"))
    finally:
        await reader.close()
    assert {i["id"]: (i["verdict"], i["verdict_origin"]) for i in items} == expected
    assert {i["id"] for i in queue} == {first.id, second.id}
    stored = await mirror.once()
    assert stored["verdict_changes"] == 8
    sql = "SELECT id, effective_verdict, verdict_origin FROM effective_touchpoints ORDER BY id"
    assert await read(mirror.path, sql) == await read(a.path, sql)
    assert {r[0]: (r[1], r[2]) for r in await read(mirror.path, sql)} == expected
    clicks = []
    for path in (a.path, mirror.path):
        reports = Reports(path, Attribution(AttributionOptions()), CHANNELS, processes=1)
        await reports.open()
        try:
            clicks.append(await reports.creator_clicks(*EVERY, frozenset({"allow"})))
        finally:
            await reports.close()
    assert clicks[0] == clicks[1] == {("anna", True): 3}


async def test_the_mirror_task_tells_new_rows_apart_from_verdict_changes(
    nodes: tuple[Node, Node], tmp_path: Path, central_dsn: str
) -> None:
    """The gateway keeps data_driven's weights over new rows (``on_stored``) but not over another
    node's analyst's verdict (``on_rewritten``), which rewrites the past."""
    a, _ = nodes
    heard: list[str] = []
    mirror = Mirror(
        tmp_path / "told.db",
        central_dsn,
        OPTIONS,
        Metrics(),
        lambda: heard.append("stored"),
        on_rewritten=lambda: heard.append("rewritten"),
    )
    tp = touch(1, "e" * 32)
    task = asyncio.create_task(mirror.run())
    try:
        await a.store.write([tp])
        await a.sync.once()
        async with asyncio.timeout(30):
            while "stored" not in heard:
                await asyncio.sleep(0.02)
        assert "rewritten" not in heard
        at = T0 + timedelta(hours=1)
        change = VerdictChange(
            uuid7(int(at.timestamp() * 1000)), iso(at), "a", tp.id, "block", None, [], "analyst", "why", "ana"
        )
        await a.store.write([change])
        await a.sync.once()
        async with asyncio.timeout(30):
            while "rewritten" not in heard:
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_central_journey_of_one_millisecond_on_two_nodes_is_in_time_order(
    nodes: tuple[Node, Node], central_dsn: str
) -> None:
    """A visitor lands on node B, then 800 µs later, in the same millisecond, on node A, whose
    id for it came out smaller (each node counts its ids of a millisecond up from a random
    start). The central journey listed the later landing first: first touch, first seen."""
    a, b = nodes
    visitor = "d" * 32
    ms = int(T0.timestamp() * 1000)
    early = dataclasses.replace(
        touch(1, visitor, "b", T0 + timedelta(microseconds=100)), id=_format(ms, 0x800, 1)
    )
    late = dataclasses.replace(
        touch(2, visitor, "a", T0 + timedelta(microseconds=900)), id=_format(ms, 0x100, 2)
    )
    assert late.id < early.id
    await a.store.write([late])
    await b.store.write([early])
    await a.sync.once()
    await b.sync.once()
    reader = CentralReader(a.path, central_dsn, 10)
    await reader.open()
    try:
        journey = await reader.visitor(visitor)
    finally:
        await reader.close()
    assert journey is not None
    assert [t["id"] for t in journey["touchpoints"]] == [early.id, late.id]
    assert (journey["first_touch"]["id"], journey["last_touch"]["id"]) == (early.id, late.id)
    assert (journey["first_seen"], journey["last_seen"]) == (early.ts, late.ts)
