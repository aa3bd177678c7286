"""A central store's migration is said in the log, once, at info, as a local store's is
(``storage.migrate``, ``announce``): until 2026-12-07 a node's start or ``gateway sync --once``
migrated the central schema every node shares without a word. The throwaway PostgreSQL of
``tests/conftest.py``; an older central schema made by the shipped migrations up to a version,
as ``test_sync`` makes one."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import asyncpg
import pytest

from gateway.metrics import Metrics
from storage import central
from storage.local import LocalStore
from storage.migrate import migrations
from storage.sync import Sync
from tests.conftest import make_settings


def schema_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "migrated from schema" in r.getMessage()]


async def sync_once(tmp_path: Path, dsn: str) -> None:
    settings = make_settings(tmp_path, '[central]\nurl = "env:CENTRAL_DSN"\n', CENTRAL_DSN=dsn)
    store = LocalStore(settings.store_path, settings.options.storage, Metrics())
    await store.open()
    await store.close()
    await Sync(settings.store_path, dsn, settings.options.central, Metrics()).once()


async def test_a_fresh_central_store_says_nothing_of_a_migration(
    tmp_path: Path, central_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await sync_once(tmp_path, central_dsn)
    conn = await asyncpg.connect(central_dsn)
    try:
        newest = (await asyncio.to_thread(migrations, "pg_migrations"))[-1][0]
        assert await conn.fetchval("SELECT max(version) FROM schema_version") == newest  # made
    finally:
        await conn.close()
    assert schema_lines(caplog) == []


async def test_an_older_central_store_migrated_is_said_once_at_info(
    tmp_path: Path, central_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Two nodes starting at once on a central store of schema 9: the one that migrates it says
    the database, the schema and both versions, once; the other, which finds it current, and a
    later round say nothing."""
    shipped = await asyncio.to_thread(migrations, "pg_migrations")
    newest = shipped[-1][0]
    conns = [await asyncpg.connect(central_dsn) for _ in range(2)]
    try:
        await conns[0].execute(
            "CREATE TABLE schema_version (version integer PRIMARY KEY, name text NOT NULL, "
            "applied timestamptz NOT NULL DEFAULT now())"
        )
        for version, name, sql in shipped[:9]:
            await conns[0].execute(sql)
            await conns[0].execute(
                "INSERT INTO schema_version (version, name) VALUES ($1, $2)", version, name
            )
        database = await conns[0].fetchval("SELECT current_database()")
        caplog.set_level(logging.INFO)
        assert await asyncio.gather(*(central.migrate(c) for c in conns)) == [newest, newest]
    finally:
        for conn in conns:
            await conn.close()
    (line,) = schema_lines(caplog)
    assert (line.levelno, line.name) == (logging.INFO, "gateway.storage")
    assert line.getMessage() == (
        f"central store (database {database}, schema public) migrated from schema 9 to {newest}:"
        " the nodes of an older gateway stop syncing to it until they are upgraded, keeping their"
        " rows (migrations are not undone; the pg_dump taken before the upgrade is the way back)"
    )
    assert (line.__dict__["from_version"], line.__dict__["to_version"]) == (9, newest)
    caplog.clear()
    await sync_once(tmp_path, central_dsn)
    assert schema_lines(caplog) == []
