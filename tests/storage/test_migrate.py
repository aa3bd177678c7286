"""Migrations: versioned SQL files, ``PRAGMA user_version``, idempotent, refusing a newer schema."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from bench.ports import free_port
from gateway.importrun import run_import
from gateway.metrics import Metrics
from gateway.options import StorageOptions
from storage.dashboard import _PATHS
from storage.imports import list_runs
from storage.local import LocalStore, connect
from storage.migrate import SchemaTooNew, migrate, migrations, statements
from tests.conftest import ENV, make_settings
from tests.gatewayproc import GatewayProcess
from tests.storage.stores import execute, read

NEWEST = migrations()[-1][0]


async def schema(path: Path) -> list[tuple[Any, ...]]:
    return await read(path, "SELECT type, name, sql FROM sqlite_master ORDER BY type, name")


async def upgraded_twice(path: Path) -> None:
    """The store at ``path`` migrated to the newest version, then again: the second changes
    nothing (a gateway's next start)."""
    conn = await connect(path)
    try:
        assert await migrate(conn) == NEWEST
        before = await schema(path)
        assert await migrate(conn) == NEWEST
    finally:
        await conn.close()
    assert await schema(path) == before


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    conn = await connect(tmp_path / "gw.db")
    yield conn
    await conn.close()


@pytest.mark.parametrize("folder", ["migrations", "pg_migrations"])
def test_shipped_migrations_are_numbered_one_by_one(folder: str) -> None:
    found = migrations(folder)
    versions = [version for version, _, _ in found]
    assert versions == list(range(1, versions[-1] + 1))
    assert all(sql.strip() for _, _, sql in found)


async def test_a_fresh_database_reaches_the_newest_version(db: aiosqlite.Connection, tmp_path: Path) -> None:
    assert await migrate(db) == NEWEST
    path = tmp_path / "gw.db"
    assert await read(path, "PRAGMA user_version") == [(NEWEST,)]
    names = {name for _, name, _ in await schema(path)}
    assert {"touchpoints", "visitors", "touchpoints_visitor"} <= names  # visitors is a view
    assert not db.in_transaction


async def test_migrating_twice_changes_nothing(db: aiosqlite.Connection, tmp_path: Path) -> None:
    await migrate(db)
    before = await schema(tmp_path / "gw.db")
    assert await migrate(db) == NEWEST
    assert await schema(tmp_path / "gw.db") == before


async def test_a_database_newer_than_the_code_is_refused(db: aiosqlite.Connection, tmp_path: Path) -> None:
    await migrate(db)
    await db.execute(f"PRAGMA user_version = {NEWEST + 1}")
    with pytest.raises(SchemaTooNew, match=rf"schema version {NEWEST + 1}, newer than .*\({NEWEST}\)"):
        await migrate(db)
    # The store refuses to open on it too, and says why.
    store = LocalStore(tmp_path / "gw.db", StorageOptions(), Metrics())
    with pytest.raises(SchemaTooNew, match="upgrade the gateway"):
        await store.open()
    assert await read(tmp_path / "gw.db", "PRAGMA user_version") == [(NEWEST + 1,)]


async def test_two_processes_migrating_at_once_both_succeed(tmp_path: Path) -> None:
    one, two = await connect(tmp_path / "gw.db"), await connect(tmp_path / "gw.db")
    try:
        assert await asyncio.gather(migrate(one), migrate(two)) == [NEWEST, NEWEST]
    finally:
        await one.close()
        await two.close()
    assert await read(tmp_path / "gw.db", "PRAGMA user_version") == [(NEWEST,)]


async def test_a_migration_applied_by_another_process_while_this_one_waited_is_skipped(
    tmp_path: Path,
) -> None:
    """The version is read again under the write lock. Before, a process that had read 7 and
    waited for the lock applied 0008 (an index dropped and made again: it runs twice without
    an error) after another process had applied 0008 and 0009, set the version back to 8,
    then failed on 0009's table (a CI run met this)."""
    shipped = await asyncio.to_thread(migrations)
    one, two = await connect(tmp_path / "gw.db"), await connect(tmp_path / "gw.db")
    try:
        for version, _, sql in shipped[:7]:
            await two.executescript(f"BEGIN;\n{sql}\n;PRAGMA user_version = {version};\nCOMMIT;")
        await two.execute("BEGIN IMMEDIATE")  # the other process holds the lock
        waiting = asyncio.ensure_future(migrate(one))
        await asyncio.sleep(0.3)  # it has read version 7 and waits for the lock
        assert not waiting.done()
        for _, _, sql in shipped[7:]:
            for statement in statements(sql):
                await two.execute(statement)
        await two.execute(f"PRAGMA user_version = {NEWEST}")
        await two.execute("COMMIT")
        assert await waiting == NEWEST
    finally:
        await one.close()
        await two.close()
    assert await read(tmp_path / "gw.db", "PRAGMA user_version") == [(NEWEST,)]


def test_a_migration_is_cut_into_statements_as_sqlite_ends_them() -> None:
    sql = (
        "-- a comment; with a semicolon\nCREATE TABLE t (a TEXT DEFAULT ';');\n"
        "CREATE TRIGGER g AFTER INSERT ON t BEGIN\n  UPDATE t SET a = 'x;y';\n  DELETE FROM t;\nEND;\n"
        "CREATE INDEX i ON t (a)  -- the last one without its semicolon\n"
    )
    assert statements(sql) == [
        "-- a comment; with a semicolon\nCREATE TABLE t (a TEXT DEFAULT ';');",
        "CREATE TRIGGER g AFTER INSERT ON t BEGIN\n  UPDATE t SET a = 'x;y';\n  DELETE FROM t;\nEND;",
        "CREATE INDEX i ON t (a)  -- the last one without its semicolon",
    ]


async def test_a_store_made_while_0003_was_not_merged_yet_is_upgraded(tmp_path: Path) -> None:
    """Main shipped migration 0004 at 03:46 on 2026-12-02 and 0003 (verdicts) at 04:13: a store
    made in between is at version 4 without 0003. Its upgrade skipped 0003 and stopped at 0008
    (`no such column: verdict`), leaving a gateway that would not start. 0003 is applied where
    its column is missing; the rows stay, and a second start changes nothing."""
    path = tmp_path / "gw.db"
    shipped = {version: sql for version, _, sql in await asyncio.to_thread(migrations)}
    then = "".join(shipped[version] for version in (1, 2, 4))
    landing = (
        "INSERT INTO touchpoints (id, ts, node, visitor_key, landing_path, raw_params, channel) VALUES"
        " ('01a20000-0000-7000-8000-000000000001', '2026-12-02T03:50:00Z', 'n', 'v', '/', '{}', 'Direct');"
        "PRAGMA user_version = 4;"
    )
    await asyncio.to_thread(execute, path, then + ";" + landing)
    await upgraded_twice(path)
    columns = {row[1] for row in await read(path, "PRAGMA table_info(touchpoints)")}
    assert {"verdict", "bot_score", "consent", "channel"} <= columns
    assert await read(path, "SELECT visitor_key, verdict, effective_verdict FROM effective_touchpoints") == [
        ("v", None, None)
    ]


async def test_a_migration_that_fails_is_said_as_a_store_that_cannot_open(tmp_path: Path) -> None:
    """A migration the store cannot take is a ``sqlite3.DatabaseError`` naming the migration,
    which ``gateway run`` (and every command that migrates) says as `gateway: cannot open the
    store …`, exit 1; until 2026-12-05 it was a RuntimeError, and `gateway run` ended in a
    traceback."""
    path = tmp_path / "gw.db"
    conn = await connect(path)
    try:
        await migrate(conn)
        await conn.execute("PRAGMA user_version = 8")  # table_versions (0009) is there already
        with pytest.raises(sqlite3.DatabaseError, match=r"migration 0009_table_versions\.sql failed: table"):
            await migrate(conn)
    finally:
        await conn.close()
    config = tmp_path / "gateway.toml"
    ports = f'[proxy]\nlisten = "127.0.0.1:{free_port()}"\n[admin]\nlisten = "127.0.0.1:{free_port()}"\n'
    await asyncio.to_thread(config.write_text, f'{ports}[storage]\npath = "{path}"\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "run", "-c", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", **ENV},
    )  # fmt: skip
    try:
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 1, (out, err)
    assert b"Traceback" not in err, err
    assert b"cannot open the store" in err and b"migration 0009_table_versions.sql failed" in err, err


async def test_a_store_made_while_0002_had_no_erasures_table_is_upgraded(tmp_path: Path) -> None:
    """Migration 0002 shipped at 03:25 on 2026-12-02 and gained the `erasures` table at 03:27: a
    store made in between has none, and its upgrade failed at 0010 (`no such table: erasures`),
    leaving a gateway that would not start. The table is made where it is missing; a second
    start changes nothing."""
    path = tmp_path / "gw.db"
    shipped = {version: sql for version, _, sql in await asyncio.to_thread(migrations)}
    first_0002 = shipped[2][: shipped[2].index("-- Erasures (GDPR Art. 17)")]
    await asyncio.to_thread(execute, path, shipped[1] + ";" + first_0002 + ";PRAGMA user_version = 2;")
    assert await read(path, "SELECT name FROM sqlite_master WHERE name = 'erasures'") == []
    await upgraded_twice(path)
    columns = {row[1] for row in await read(path, "PRAGMA table_info(erasures)")}
    assert {"user_key", "visitors", "counts", "also_keys"} <= columns


async def test_a_binding_from_before_0015_gets_its_visitor_s_population(tmp_path: Path) -> None:
    """Migration 0015 gives each binding its visitor's population, so a sink leaves out the
    bindings made without consent; one made before it takes the population of its visitor's
    touchpoints (a visitor key is of one population only), one whose visitor has none 'cookie'."""
    path = tmp_path / "gw.db"
    shipped = {version: sql for version, _, sql in await asyncio.to_thread(migrations)}
    then = ";".join(shipped[version] for version in range(1, 15))
    rows = ";".join(
        [
            *(
                "INSERT INTO touchpoints (id, ts, node, visitor_key, landing_path, raw_params, consent)"
                f" VALUES ('t{v}', '2026-12-05T10:00:00Z', 'n', '{v}', '/', '{{}}', '{consent}')"
                for v, consent in (("c", "cookie"), ("l", "cookieless"), ("d", "no_consent"))
            ),
            *(
                "INSERT INTO identities (id, ts, node, visitor_key, user_key, rule, origin)"
                f" VALUES ('i{v}', '2026-12-05T10:01:00Z', 'n', '{v}', 'u', 'login', 'rule')"
                for v in ("c", "l", "d", "x")
            ),
            "PRAGMA user_version = 14",
        ]
    )
    await asyncio.to_thread(execute, path, then + ";" + rows)
    await upgraded_twice(path)
    assert await read(path, "SELECT visitor_key, consent FROM identities ORDER BY id") == [
        ("c", "cookie"),
        ("d", "no_consent"),
        ("l", "cookieless"),
        ("x", "cookie"),
    ]


async def test_a_store_of_version_15_gains_import_runs_and_keeps_its_rows(tmp_path: Path) -> None:
    """0016 records import runs: a store made before it keeps every row, none of them in a run
    (imports before it cannot be undone), and an import after it records its own."""
    path = tmp_path / "gw.db"
    shipped = [sql for version, _, sql in await asyncio.to_thread(migrations) if version <= 15]
    old = (
        "INSERT INTO touchpoints (id, ts, node, visitor_key, landing_path, raw_params, channel) VALUES"
        " ('01a20000-0000-7000-8000-000000000001', '2026-12-02T03:50:00Z', 'n', 'v', '/', '{}', 'Direct');"
        "PRAGMA user_version = 15;"
    )
    await asyncio.to_thread(execute, path, ";".join(shipped) + ";" + old)
    assert await asyncio.to_thread(list_runs, path) is None
    await upgraded_twice(path)
    assert await read(path, "PRAGMA user_version") == [(NEWEST,)]
    assert await asyncio.to_thread(list_runs, path) == []
    settings = await asyncio.to_thread(make_settings, tmp_path, f'[storage]\npath = "{path}"\n')
    log = tmp_path / "a.log"
    await asyncio.to_thread(
        log.write_text,
        '203.0.113.9 - - [01/Mar/2025:10:00:00 +0000] "GET /?utm_source=x HTTP/1.1" 200 1 "-" "Mozilla/5"\n',
    )
    summary = await run_import(settings, [log], "combined", host="shop.example")
    [run] = await asyncio.to_thread(list_runs, settings.store_path)
    assert run.id == summary.run == 1 and run.added["touchpoints"] == 1
    assert await read(settings.store_path, "SELECT count(*) FROM touchpoints") == [(2,)]


async def test_a_store_made_while_visitors_was_a_table_gets_the_view(tmp_path: Path) -> None:
    """0001 made ``visitors`` a table from 14:34 to 15:16 on 2026-11-25, a view since. 0021
    makes the view again (first and last touch in time order), and SQLite refuses ``DROP
    VIEW`` on a table: such a store's upgrade failed, a gateway that would not start. The
    table, which nothing read or wrote since (its rows those minutes' visitor keys), is dropped
    and the store gets the view; a second start changes nothing."""
    path = tmp_path / "gw.db"
    shipped = {version: sql for version, _, sql in await asyncio.to_thread(migrations)}
    then = shipped[1][: shipped[1].index("CREATE VIEW visitors")] + (
        "CREATE TABLE visitors (visitor_key TEXT PRIMARY KEY, first_touch_id TEXT NOT NULL,"
        " last_touch_id TEXT NOT NULL, first_seen TEXT NOT NULL, last_seen TEXT NOT NULL,"
        " touch_count INTEGER NOT NULL DEFAULT 1);"
        "INSERT INTO visitors VALUES ('old', 'a', 'a', '2026-11-25T14:40:00Z', '2026-11-25T14:40:00Z', 1);"
    )
    # Two landings of one millisecond, the later (900 µs) with the smaller id.
    landing = (
        "INSERT INTO touchpoints (id, ts, node, visitor_key, landing_path, raw_params) VALUES"
        " ('01a20000-0000-7900-8000-000000000001', '2026-12-02T03:50:00.000100Z', 'n', 'v', '/', '{}'),"
        " ('01a20000-0000-7100-8000-000000000002', '2026-12-02T03:50:00.000900Z', 'n', 'v', '/', '{}');"
        "PRAGMA user_version = 20;"
    )
    before = ";".join(shipped[version] for version in range(2, 21))
    await asyncio.to_thread(execute, path, then + ";" + before + ";" + landing)
    await upgraded_twice(path)
    assert await read(path, "SELECT type FROM sqlite_master WHERE name = 'visitors'") == [("view",)]
    assert await read(
        path, "SELECT visitor_key, first_touch_id, last_touch_id, touch_count FROM visitors"
    ) == [("v", "01a20000-0000-7900-8000-000000000001", "01a20000-0000-7100-8000-000000000002", 2)]


async def test_verdict_changes_made_again_keep_their_rows_and_rowids(tmp_path: Path) -> None:
    """0017 makes ``verdict_changes`` again to take withdrawn overrides (``analyst_cleared``):
    every row stays under its rowid (the sync's and the sinks' cursors count in rowids), and
    the view reads them as before."""
    path = tmp_path / "gw.db"
    conn = await connect(path)
    try:
        for version, _, sql in await asyncio.to_thread(migrations):
            if version < 17:
                for statement in statements(sql):
                    await conn.execute(statement)
        await conn.execute("PRAGMA user_version = 16")
        await conn.execute(
            "INSERT INTO touchpoints (id, ts, node, visitor_key, landing_path, verdict)"
            " VALUES ('t1', '2026-12-01T00:00:00.000000Z', 'n', 'v', '/', 'review')"
        )
        for rowid, origin in ((3, "rescore"), (7, "analyst")):
            await conn.execute(
                "INSERT INTO verdict_changes (rowid, id, ts, node, touchpoint_id, verdict, origin, analyst)"
                " VALUES (?, ?, '2026-12-01T00:00:00.000000Z', 'n', 't1', 'block', ?, 'ana')",
                (rowid, f"c{rowid}", origin),
            )
        await conn.commit()
        with pytest.raises(sqlite3.IntegrityError):  # the table as 0003 made it refuses a clear
            await conn.execute(
                "INSERT INTO verdict_changes (id, ts, node, touchpoint_id, verdict, origin, analyst)"
                " VALUES ('c9', '2026-12-02T00:00:00.000000Z', 'n', 't1', 'review', 'analyst_cleared', 'li')"
            )
        await conn.rollback()
        assert await migrate(conn) == NEWEST
        await conn.execute(
            "INSERT INTO verdict_changes (id, ts, node, touchpoint_id, verdict, origin, analyst)"
            " VALUES ('c9', '2026-12-02T00:00:00.000000Z', 'n', 't1', 'review', 'analyst_cleared', 'li')"
        )
        await conn.commit()
    finally:
        await conn.close()
    assert await read(path, "SELECT rowid, id, origin FROM verdict_changes ORDER BY rowid") == [
        (3, "c3", "rescore"),
        (7, "c7", "analyst"),
        (8, "c9", "analyst_cleared"),
    ]
    assert await read(path, "SELECT effective_verdict, verdict_origin FROM effective_touchpoints") == [
        ("block", "rescore")
    ]
    await upgraded_twice(path)


async def test_bindings_from_before_0018_are_found_from_the_identity_indexes_alone(tmp_path: Path) -> None:
    """Migration 0018 widens each identity index by the other key: the dashboard finds each
    conversion's devices (its visitor's users, then their visitors) without reading a
    binding's row. The bindings and migration 0009's counters are as they were, so the
    bindings a report process keeps stay valid across the upgrade."""
    path = tmp_path / "gw.db"
    shipped = {version: sql for version, _, sql in await asyncio.to_thread(migrations)}
    before = [version for version in shipped if version < 18]
    rows = ";".join(
        [
            *(
                "INSERT INTO identities (id, ts, node, visitor_key, user_key, rule, origin)"
                f" VALUES ('i{n}', '2026-12-05T10:01:00Z', 'n', 'v{n}', 'u{n % 2}', 'login', 'rule')"
                for n in range(4)
            ),
            "DELETE FROM identities WHERE id = 'i3'",
            f"PRAGMA user_version = {before[-1]}",
        ]
    )
    await asyncio.to_thread(execute, path, ";".join(shipped[version] for version in before) + ";" + rows)
    counted = await read(path, "SELECT inserted, changed FROM table_versions WHERE name = 'identities'")
    bindings = await read(path, "SELECT * FROM identities ORDER BY id")
    assert counted == [(4, 1)]
    await upgraded_twice(path)
    assert (
        await read(path, "SELECT inserted, changed FROM table_versions WHERE name = 'identities'") == counted
    )
    assert await read(path, "SELECT * FROM identities ORDER BY id") == bindings
    triggers = "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'identities' ORDER BY 1"
    assert await read(path, triggers) == [
        ("identities_deleted",),
        ("identities_inserted",),
        ("identities_updated",),
    ]
    columns = "SELECT name FROM pragma_index_info(?) ORDER BY seqno"
    assert await read(path, columns, "identities_user") == [("user_key",), ("id",), ("visitor_key",)]
    assert await read(path, columns, "identities_visitor") == [("visitor_key",), ("id",), ("user_key",)]

    def plan() -> list[str]:
        with contextlib.closing(sqlite3.connect(path)) as db:
            bounds = {"since": "2026-12-01", "until": "2026-12-31", "name": None}
            return [
                row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {_PATHS} SELECT * FROM devices", bounds)
            ]

    searches = sorted(step for step in await asyncio.to_thread(plan) if " i USING " in step)
    assert searches == [
        "SEARCH i USING COVERING INDEX identities_user (user_key=?)",
        "SEARCH i USING COVERING INDEX identities_visitor (visitor_key=?)",
    ]


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_gateway_that_migrates_an_older_store_says_so_once(tmp_path: Path, workers: int) -> None:
    """A store of the previous release (version 15, made by the shipped migrations, one row in
    it) opened by ``gateway run``: one info line says the store's path and both versions, the
    change no downgrade undoes (by the supervisor with several workers; none from the workers,
    which find it current); the next start, on a current store, says nothing of it. Until
    2026-12-07 an upgrade migrated the operator's store without a word in the log."""
    path = tmp_path / "gw.db"
    shipped = [sql for version, _, sql in await asyncio.to_thread(migrations) if version <= 15]
    old = (
        "INSERT INTO touchpoints (id, ts, node, visitor_key, landing_path, raw_params, channel) VALUES"
        " ('01a20000-0000-7000-8000-000000000001', '2026-12-02T03:50:00Z', 'n', 'v', '/', '{}', 'Direct');"
        "PRAGMA user_version = 15;"
    )
    await asyncio.to_thread(execute, path, ";".join(shipped) + ";" + old)
    cfg = tmp_path / "gateway.toml"
    await asyncio.to_thread(
        cfg.write_text,
        f'[proxy]\nlisten = "127.0.0.1:0"\nupstream = "http://127.0.0.1:{free_port()}"\nworkers = {workers}\n'
        f'[admin]\nlisten = "127.0.0.1:0"\n[storage]\npath = "{path}"\nnode = "test"\n',
    )
    said = []
    for _ in range(2):
        gw = await GatewayProcess.start(cfg)
        try:
            await gw.wait_for(
                lambda g=gw: sum(r["msg"] == "listening" for r in g.logs()) >= workers, gw.stderr
            )
        finally:
            assert await gw.stop() == 0
        said.append([r for r in gw.logs() if "schema" in r["msg"]])
    (line,) = said[0]
    assert line["level"] == "info" and line["logger"] == "gateway.storage", line
    assert line["msg"] == (
        f"store {path} migrated from schema 15 to {NEWEST}: a gateway older than this one can no"
        " longer open it (migrations are not undone; the backup taken before the upgrade is the way back)"
    )
    assert (line["from_version"], line["to_version"]) == (15, NEWEST)
    assert said[1] == []
    assert await read(path, "SELECT count(*) FROM touchpoints") == [(1,)]
