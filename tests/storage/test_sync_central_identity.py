"""A central store dropped and made again, or replaced by another database, is refilled.

The sync's cursors are the node's; each node records which central store (its identity,
PostgreSQL migration 0012) they belong to, and on finding another one sends its whole history
again, erasures first. Real PostgreSQL, real SQLite stores, no mocks.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite
import asyncpg
import pytest

from bench.pgserver import PostgresServer
from gateway.badbody import body_key
from gateway.events import Conversion, iso
from gateway.ids import uuid7
from gateway.metrics import Metrics
from storage.central import migrate
from storage.erasure import erase_user
from storage.sync import Sync
from tests.conftest import node_role
from tests.storage.test_sync import OPTIONS, T0, Node, bind, gpc, touch

SAID = "another central store"


async def counts(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return {
            table: int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
            for table in (
                "touchpoints",
                "identities",
                "conversions",
                "erasures",
                "erased_keys",
                "daily_counts",
            )
        }
    finally:
        await conn.close()


async def recreate(server: PostgresServer, dsn: str) -> None:
    """DROP DATABASE and CREATE DATABASE of the same name: what an operator's rebuild does."""
    name = dsn.rsplit("/", 1)[1]
    conn = await asyncpg.connect(server.dsn())
    try:
        await conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()


def order(node: Node, key: str) -> Conversion:
    return Conversion(
        id=uuid7(),
        ts=iso(T0),
        node=node.name,
        name="purchase",
        dedup_key=key,
        visitor_key="c" * 32,
        value=12.5,
        currency="EUR",
        order_id=key,
    )


async def erase_u9(node: Node) -> None:
    """The user ``u-9`` erased through ``node``'s store, as ``gateway erase`` does."""
    await erase_user(
        node.path,
        "u-9",
        "raw-u-9",
        body_key=body_key(b"k" * 32),
        event_id=uuid7(),
        ts=iso(datetime.now(UTC)),
        node=node.name,
    )


async def test_a_central_store_dropped_and_made_again_gets_every_nodes_history_again(
    nodes: tuple[Node, Node],
    central_dsn: str,
    postgres_server: PostgresServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Until 2026-12-06 a node sent a central store made anew only the rows stored after its
    cursors, and said nothing: the history it had delivered was lost centrally. Now each node
    finds the store is another one, says so once, and sends everything again; an erased user's
    rows do not come back (node B, which had a device of the user, resends first)."""
    a, b = nodes
    laptop, phone, stranger = "1" * 32, "2" * 32, "3" * 32
    today = T0.date().isoformat()
    await a.store.write([touch(1, laptop), touch(2, stranger), bind(laptop, "u-9"), order(a, "order:1")])
    await a.store.write([gpc(today, "c1"), gpc(today, "c1")])
    await b.store.write([touch(3, phone, "b"), bind(phone, "u-9", "b"), order(b, "order:1")])
    await a.sync.once()
    await b.sync.once()
    await erase_u9(a)
    await a.sync.once()
    await b.sync.once()  # applies A's erasure to B's store: the phone's rows go
    before = await counts(central_dsn)
    assert before == {
        "touchpoints": 1,
        "identities": 0,
        "conversions": 1,
        "erasures": 1,
        "erased_keys": 3,
        "daily_counts": 1,
    }

    await recreate(postgres_server, central_dsn)
    caplog.set_level(logging.INFO, "gateway.sync")
    assert (await b.sync.once())["touchpoints"] == 0  # B has nothing left but the order
    assert (await a.sync.once())["touchpoints"] == 1
    assert await counts(central_dsn) == {**before, "erased_keys": 2}  # B's device is not A's to name
    said = [r for r in caplog.records if SAID in r.getMessage()]
    assert len(said) == 2 and {r.levelno for r in said} == {logging.WARNING}
    assert "sending this node's whole history again" in said[0].getMessage()

    caplog.clear()
    assert set((await a.sync.once()).values()) == {0}
    assert set((await b.sync.once()).values()) == {0}
    assert not [r for r in caplog.records if SAID in r.getMessage()]


async def test_a_node_pointed_at_another_database_sends_it_everything(
    nodes: tuple[Node, Node], central_dsn: str, postgres_server: PostgresServer
) -> None:
    """``central.url`` changed to a new, empty database: the node's history goes there too."""
    a, _ = nodes
    await a.store.write([touch(n, f"{n:032x}") for n in range(10)])
    assert (await a.sync.once())["touchpoints"] == 10
    conn = await asyncpg.connect(postgres_server.dsn())
    try:
        await conn.execute("CREATE DATABASE second_of_a")
    finally:
        await conn.close()
    other = postgres_server.dsn("second_of_a")
    try:
        moved = Sync(a.path, other, OPTIONS, Metrics(), node="a")
        assert (await moved.once())["touchpoints"] == 10
        assert (await counts(other))["touchpoints"] == 10
    finally:
        conn = await asyncpg.connect(postgres_server.dsn())
        try:
            await conn.execute("DROP DATABASE second_of_a WITH (FORCE)")
        finally:
            await conn.close()


async def test_the_first_connection_only_records_the_central_store(
    nodes: tuple[Node, Node], central_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A node upgraded with cursors already (nothing recorded yet) sends nothing again and says
    nothing: the store it has been sending to is taken for the one its cursors belong to."""
    a, _ = nodes
    await a.store.write([touch(n, f"{n:032x}") for n in range(5)])
    assert (await a.sync.once())["touchpoints"] == 5
    async with aiosqlite.connect(a.path) as db:
        await db.execute("DELETE FROM central_identity")
        await db.commit()
    caplog.set_level(logging.INFO, "gateway.sync")
    assert set((await a.sync.once()).values()) == {0}
    assert not [r for r in caplog.records if SAID in r.getMessage()]
    async with aiosqlite.connect(a.path) as db, db.execute("SELECT count(*) FROM central_identity") as cursor:
        assert (await cursor.fetchone()) == (1,)


async def copy_database(server: PostgresServer, source: str, target: str) -> None:
    """``CREATE DATABASE target TEMPLATE source``: a backup of the whole database, and its restore."""
    conn = await asyncpg.connect(server.dsn())
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {target} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {target} TEMPLATE {source}")
    finally:
        await conn.close()


async def test_a_central_store_restored_from_an_old_backup_is_refilled_once_given_a_new_identity(
    nodes: tuple[Node, Node], central_dsn: str, postgres_server: PostgresServer
) -> None:
    """A restored dump keeps the identity: nodes take it for the store they delivered to, and
    send only what is new. The README's one statement gives it a new identity: every node then
    sends its whole history, its erasures first, so a user erased after the dump was taken,
    whose rows the dump holds, is erased again."""
    a, _ = nodes
    name = central_dsn.rsplit("/", 1)[1]
    backup = f"{name}_backup"
    laptop, stranger = "1" * 32, "3" * 32
    await a.store.write([touch(1, laptop), bind(laptop, "u-9")])
    await a.sync.once()
    await copy_database(postgres_server, name, backup)
    try:
        await a.store.write([touch(2, stranger)])
        await erase_u9(a)
        await a.sync.once()
        assert (await counts(central_dsn))["touchpoints"] == 1

        await copy_database(postgres_server, backup, name)  # the restore: the laptop is back
        assert set((await a.sync.once()).values()) == {0}
        restored = await counts(central_dsn)
        assert (restored["touchpoints"], restored["erasures"]) == (1, 0)

        conn = await asyncpg.connect(central_dsn)
        try:
            await conn.execute("UPDATE central_identity SET identity = gen_random_uuid()")  # as README says
        finally:
            await conn.close()
        delivered = await a.sync.once()
        assert (delivered["erasures"], delivered["touchpoints"]) == (1, 1)
        conn = await asyncpg.connect(central_dsn)
        try:
            assert [r[0] for r in await conn.fetch("SELECT visitor_key FROM touchpoints")] == [stranger]
        finally:
            await conn.close()
    finally:
        conn = await asyncpg.connect(postgres_server.dsn())
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {backup} WITH (FORCE)")
        finally:
            await conn.close()


async def test_a_role_that_may_not_read_the_identity_still_syncs_and_is_told_the_grant(
    tmp_path: Path, central_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A node's role granted its rights before PostgreSQL migration 0012 made `central_identity`
    may not read it. The identity only guards a refill: its rows are delivered all the same,
    and one warning gives the GRANT (every round failed on it, the rows waiting)."""
    owner = await asyncpg.connect(central_dsn)
    try:
        await migrate(owner)
        async with node_role(owner, central_dsn, revoke=("central_identity",)) as (role, dsn):
            node = Node(tmp_path, "a", dsn)
            await node.store.open()
            try:
                await node.store.write([touch(1, "1" * 32)])
                with caplog.at_level(logging.WARNING, logger="gateway.sync"):
                    assert (await node.sync.once())["touchpoints"] == 1
                    await node.store.write([touch(2, "1" * 32)])
                    assert (await node.sync.once())["touchpoints"] == 1
            finally:
                await node.store.close()
        told = [r.getMessage() for r in caplog.records if "central_identity" in r.getMessage()]
        assert len(told) == 1, told  # once, not every round
        assert f"GRANT SELECT ON central_identity TO {role}" in told[0], told[0]
        assert await owner.fetchval("SELECT count(*) FROM touchpoints") == 2
    finally:
        await owner.close()
