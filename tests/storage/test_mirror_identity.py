"""The reporting mirror of a central store dropped and made again, replaced by another database,
or restored from a dump into another cluster: it holds that store's rows, all of them, and none
of the one before.

The mirror's windows are transaction ids (``ingested``) of the store it read; another store's
are not comparable with them. Real PostgreSQL servers (the session's, and one of the test's own
for the restore into a new cluster), real SQLite files, no mocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from bench.pgserver import PostgresServer, pg_bin, start_server
from gateway.badbody import body_key
from gateway.events import iso
from gateway.ids import uuid7
from gateway.metrics import Metrics
from storage.central import migrate
from storage.erasure import erase_user
from storage.mirror import Mirror, read_horizons
from storage.mirror_identity import read_recorded
from tests.conftest import node_role
from tests.storage.test_mirror import _files, ids
from tests.storage.test_sync import OPTIONS, Node, bind, touch
from tests.storage.test_sync_central_identity import recreate

SAID = "starting it again from nothing"


async def central_ids(dsn: str, table: str = "touchpoints") -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return {str(row[0]) for row in await conn.fetch(f"SELECT id FROM {table}")}
    finally:
        await conn.close()


async def horizon(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT pg_snapshot_xmin(pg_current_snapshot())::text"))
    finally:
        await conn.close()


async def create_database(dsn: str, name: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return dsn.rsplit("/", 1)[0] + f"/{name}"


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "gateway.mirror" and r.levelno >= logging.WARNING
    ]


async def test_a_central_store_dropped_and_made_again_is_mirrored_alone(
    nodes: tuple[Node, Node],
    central_dsn: str,
    postgres_server: PostgresServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The database dropped and made again (a new identity): node ``a`` sends it its whole
    history, node ``b`` (retired) nothing. The mirror held ``b``'s rows of the old store: they
    go, from its files too, and ``a``'s new store is mirrored whole; one warning says so."""
    a, b = nodes
    await a.store.write([touch(n, "a" * 32) for n in range(3)])
    await b.store.write([dataclasses.replace(touch(9, "b" * 32, "b"), landing_path="/old-store-only")])
    await a.sync.once()
    await b.sync.once()
    told: list[str] = []  # what the gateway's reports hear: new rows, or a past that is another
    mirror = Mirror(
        a.path.with_name("mirror.db"),
        central_dsn,
        OPTIONS,
        Metrics(),
        lambda: told.append("stored"),
        on_rewritten=lambda: told.append("restarted"),
    )
    await mirror.once()
    assert len(await ids(mirror.path, "touchpoints")) == 4
    assert "restarted" not in told  # a first fill is no other past

    await recreate(postgres_server, central_dsn)
    await a.store.write([touch(5, "a" * 32)])
    await a.sync.once()  # another central store: the node's whole history again
    caplog.set_level(logging.INFO, "gateway.mirror")
    await mirror.once()
    assert told.count("restarted") == 1, told  # the kept data_driven weights are dropped
    assert await ids(mirror.path, "touchpoints") == await central_ids(central_dsn)
    assert len(await ids(mirror.path, "touchpoints")) == 4
    assert b"/old-store-only" not in await asyncio.to_thread(_files, mirror.path)
    said = warnings(caplog)
    assert len(said) == 1 and SAID in said[0] and "dropped and made again" in said[0], said
    caplog.clear()
    assert set((await mirror.once()).values()) == {0}  # recorded: not again
    assert not warnings(caplog)


async def test_another_database_named_is_mirrored_whole_and_alone(
    nodes: tuple[Node, Node], central_dsn: str, postgres_server: PostgresServer
) -> None:
    """``central.url`` pointed at another database of the same cluster, filled before the
    mirror's last round of the first one: its rows' ``ingested`` are below the mirror's
    horizons, yet they are all mirrored; the first database's rows leave."""
    a, b = nodes
    other = await create_database(postgres_server.dsn(), f"other_{uuid.uuid4().hex[:12]}")
    b.sync.dsn = other
    await b.store.write([touch(n, "b" * 32, "b") for n in range(4)])
    await b.sync.once()  # the other database's rows: older transaction ids
    await a.store.write([touch(n, "a" * 32) for n in range(3)])
    await a.sync.once()
    mirror = Mirror(a.path.with_name("mirror.db"), central_dsn, OPTIONS, Metrics())
    await mirror.once()
    assert await ids(mirror.path, "touchpoints") == await central_ids(central_dsn)

    mirror.dsn = other
    await mirror.once()
    assert await ids(mirror.path, "touchpoints") == await central_ids(other)
    assert len(await ids(mirror.path, "touchpoints")) == 4


@contextlib.asynccontextmanager
async def own_cluster() -> AsyncIterator[PostgresServer]:
    """A PostgreSQL cluster of the test's own, made now: its transaction ids start again low."""
    server = await asyncio.to_thread(start_server)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.close)


@pytest.fixture
async def second_cluster() -> AsyncIterator[PostgresServer]:
    async with own_cluster() as server:
        yield server


async def run(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode(errors="replace")


async def dump_and_restore(source: str, server: PostgresServer, tmp: Path) -> str:
    """``pg_dump`` of ``source`` restored with ``psql`` into a new database of ``server``: every
    row as it was, ``ingested`` and the central identity too; its DSN."""
    pg_dump, psql = await asyncio.to_thread(lambda: (pg_bin("pg_dump"), pg_bin("psql")))
    if pg_dump is None or psql is None:
        pytest.skip("pg_dump and psql not found; apt-get install postgresql")
    dump = tmp / "central.sql"
    await run(pg_dump, "--no-owner", "-f", str(dump), source)
    target = await create_database(server.dsn(), "restored")
    await run(psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(dump), target)
    return target


async def burn(dsn: str, transactions: int) -> None:
    """Use up transaction ids: the old cluster's are then far above a new one's."""
    conn = await asyncpg.connect(dsn)
    try:
        for _ in range(transactions):
            await conn.fetchval("SELECT pg_current_xact_id()")
    finally:
        await conn.close()


async def test_a_dump_restored_into_a_new_cluster_is_mirrored_whole(
    nodes: tuple[Node, Node],
    central_dsn: str,
    second_cluster: PostgresServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The central store moved to a new server with pg_dump and psql: the same identity, its
    rows' ``ingested`` those of the old cluster (high), its new rows' those of the new one (low,
    below the mirror's horizons). The mirror starts again from nothing and holds every row of
    the restored store — the restored ones and the new ones — and not the old store's row
    written after the dump; a mirror made anew on the restored store holds them all too."""
    a, b = nodes
    await burn(central_dsn, 2000)
    await a.store.write([touch(n, "a" * 32) for n in range(3)])
    await a.sync.once()
    restored = await dump_and_restore(central_dsn, second_cluster, tmp_path)
    await b.store.write([touch(7, "b" * 32, "b")])  # after the dump: the old store's only
    await b.sync.once()
    mirror = Mirror(tmp_path / "mirror.db", central_dsn, OPTIONS, Metrics())
    await mirror.once()
    assert len(await ids(mirror.path, "touchpoints")) == 4
    old = await horizon(central_dsn)

    a.sync.dsn = restored
    await a.store.write([touch(5, "a" * 32)])
    assert (await a.sync.once())["touchpoints"] == 1  # the same identity: only the new row
    assert await horizon(restored) < old  # the new cluster's transaction ids are below
    caplog.set_level(logging.INFO, "gateway.mirror")
    mirror.dsn = restored
    await mirror.once()
    assert await ids(mirror.path, "touchpoints") == await central_ids(restored)
    assert len(await ids(mirror.path, "touchpoints")) == 4
    said = warnings(caplog)
    assert len(said) == 1 and SAID in said[0] and "transaction ids" in said[0], said

    fresh = Mirror(tmp_path / "fresh.db", restored, OPTIONS, Metrics())
    await fresh.once()
    assert await ids(fresh.path, "touchpoints") == await central_ids(restored)
    await a.store.write([touch(6, "a" * 32)])
    await a.sync.once()
    for each in (mirror, fresh):  # and on: the next rounds take the new rows, once
        assert (await each.once())["touchpoints"] == 1
        assert await ids(each.path, "touchpoints") == await central_ids(restored)


async def central_rows(dsn: str, table: str, column: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return {str(row[0]) for row in await conn.fetch(f"SELECT {column} FROM {table}")}
    finally:
        await conn.close()


async def test_an_erasure_read_again_keeps_the_rows_the_central_store_took_after_it(
    tmp_path: Path, second_cluster: PostgresServer
) -> None:
    """A dump restored into a new cluster: its erasure keeps the old cluster's ``ingested``,
    above the new one's ids, so the mirror's first fill reads it (``pg_snapshot_xmax``), and a
    later round reads it again once the new cluster's ids pass it. Meanwhile the user came back
    (a new device bound after the erasure, its landing): the central store keeps those rows,
    and so must the mirror — the erasure applied again would delete them (it looks up the
    user's devices in the mirror, the new one among them)."""
    async with own_cluster() as old:
        source = await create_database(old.dsn(), "central")
        await burn(source, 2000)  # the erasure's ingested then above the new cluster's ids
        a, b = Node(tmp_path, "a", source), Node(tmp_path, "b", source)
        await a.store.open()
        await b.store.open()
        try:
            laptop, phone = "1" * 32, "2" * 32
            await a.store.write([touch(1, laptop), bind(laptop, "u-9")])
            await a.sync.once()
            erased_at = datetime.now(UTC)
            await erase_user(
                a.path,
                "u-9",
                "raw",
                body_key=body_key(b"k" * 32),
                event_id=uuid7(),
                ts=iso(erased_at),
                node="a",
            )
            await a.sync.once()
            restored = await dump_and_restore(source, second_cluster, tmp_path)
        finally:
            await a.store.close()
    try:
        mirror = Mirror(tmp_path / "mirror.db", restored, OPTIONS, Metrics())
        await mirror.once()  # the first fill: the erasure, from above pg_snapshot_xmax
        assert len(await ids(mirror.path, "erasures")) == 1
        # The user back after the erasure, on a device of theirs: kept centrally.
        back = erased_at + timedelta(minutes=1)
        b.sync.dsn = restored
        await b.store.write([bind(phone, "u-9", "b", at=back), touch(2, phone, "b", at=back)])
        assert (await b.sync.once())["touchpoints"] == 1
        await mirror.once()
        kept = await central_rows(restored, "touchpoints", "visitor_key")
        assert kept == {phone} and await ids(mirror.path, "touchpoints") == await central_ids(restored)

        conn = await asyncpg.connect(restored)
        try:
            erasure = int(await conn.fetchval("SELECT ingested::text FROM erasures"))
            now = int(await conn.fetchval("SELECT pg_current_xact_id()::text"))
        finally:
            await conn.close()
        assert 0 < erasure - now < 10_000, (erasure, now)
        await burn(restored, erasure - now + 1)  # the new cluster's ids pass the erasure's
        horizons = await asyncio.to_thread(read_horizons, mirror.path)
        assert horizons["erasures"][0] <= erasure  # the next window holds it: read again
        await mirror.once()
        assert (await asyncio.to_thread(read_horizons, mirror.path))["erasures"][0] > erasure
        assert await ids(mirror.path, "touchpoints") == await central_ids(restored)
        assert await ids(mirror.path, "identities") == await central_ids(restored, "identities")
        assert len(await ids(mirror.path, "touchpoints")) == len(await ids(mirror.path, "identities")) == 1
    finally:
        await b.store.close()


async def test_a_role_that_may_not_read_the_identity_mirrors_and_is_told_the_grant_once(
    nodes: tuple[Node, Node], central_dsn: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The role in ``central.url`` granted its rights before PostgreSQL migration 0012 made
    ``central_identity``: the mirror cannot tell another central store by its identity, but it
    mirrors on (going by the horizon alone), and says once — not every round — which GRANT
    lets it tell."""
    a, _ = nodes
    await a.store.write([touch(n, "a" * 32) for n in range(2)])
    await a.sync.once()  # the central tables, made by their owner
    caplog.set_level(logging.INFO, "gateway.mirror")
    owner = await asyncpg.connect(central_dsn)
    try:
        await migrate(owner)
        async with node_role(owner, central_dsn, revoke=("central_identity",)) as (role, dsn):
            mirror = Mirror(tmp_path / "mirror.db", dsn, OPTIONS, Metrics())
            assert (await mirror.once())["touchpoints"] == 2
            await a.store.write([touch(5, "a" * 32)])
            await a.sync.once()
            assert (await mirror.once())["touchpoints"] == 1
    finally:
        await owner.close()
    assert await ids(mirror.path, "touchpoints") == await central_ids(central_dsn)
    said = warnings(caplog)
    assert len(said) == 1, said  # once, not every round
    assert "may not read central_identity" in said[0], said
    assert said[0].endswith(f"Run on the central store: GRANT SELECT ON central_identity TO {role}"), said
    assert await asyncio.to_thread(read_recorded, mirror.path) is None  # nothing to record
