"""Versioned SQLite migrations: ``storage/migrations/NNNN_name.sql``, version in ``PRAGMA user_version``.

Reads the shipped SQL files; writes the schema and ``user_version`` of the
database it is given. Each migration runs in its own write transaction, which
first reads the version again: if another process applied it first, it is
skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
from importlib import resources
from pathlib import Path

import aiosqlite

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

log = logging.getLogger("gateway.storage")


class SchemaTooNew(RuntimeError):
    """The database was written by a newer gateway than this one."""


class MigrationFailed(sqlite3.DatabaseError):
    """A migration the store could not take (SQLite's words, and the migration's name): a
    ``sqlite3.DatabaseError``, so every command that opens the store says it as it says a
    store it cannot open (``gateway: cannot open the store …``), not as a traceback."""


MERGED_LATE: dict[int, tuple[str, str | None]] = {
    2: ("erasures", None),
    3: ("touchpoints", "verdict"),
}
"""Migrations main shipped in a form that lacked part of them, each with the table (and column)
that part makes; a store at a later version without it gets that part, its version unchanged:

- 0002 gained the ``erasures`` table at 03:27 on 2026-12-02, two minutes after it shipped: a
  store made in those minutes has none, and its upgrade failed at 0010 (``no such table:
  erasures``). The table's statement alone is run.
- 0003 (bot scores, verdicts) came at 04:13 on 2026-12-02, after 0004 (channels) at 03:46: a
  store made in between is at version 4 without the ``verdict`` column, and its upgrade failed
  at 0008. The whole migration is run."""


REPLACED_TABLES: dict[int, str] = {21: "visitors"}
"""Migrations that make a view again under a name some stores hold as a table, each with that
name; in such a store the table is dropped first (SQLite refuses ``DROP VIEW`` on a table, even
with ``IF EXISTS``, and the migration failed: a gateway that would not start):

- 0001 made ``visitors`` a table from 14:34 to 15:16 on 2026-11-25 (its landings kept it
  current), a view over the touchpoints since. Nothing has read or written that table since:
  its rows are those minutes' visitor keys, which no erasure reached. 0021 makes the view again
  (first and last touch in time order); such a store gets the view, as every other has."""


def migrations(folder: str = "migrations") -> list[tuple[int, str, str]]:
    """(version, file name, SQL) for every shipped migration in ``storage/<folder>``, in order
    (``pg_migrations`` holds the central store's)."""
    found = []
    for entry in resources.files("storage").joinpath(folder).iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [version for version, _, _ in found]
    if len(set(versions)) != len(versions):
        names = [name for version, name, _ in found if versions.count(version) > 1]
        raise RuntimeError(f"two migrations share a version number: {', '.join(names)}")
    return found


async def user_version(db: aiosqlite.Connection) -> int:
    async with db.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def refuse_newer(db: aiosqlite.Connection) -> None:
    """SchemaTooNew when a newer gateway has migrated the file: what reads or deletes without
    migrating (an erasure, a purge) must not act on tables it does not know. An erasure there
    would leave the user in whatever the newer schema added, and say it erased them."""
    await _not_newer(db)


def refuse_newer_file(path: Path) -> None:
    """``refuse_newer`` for a command that reads the file ``path`` names without migrating it
    (``gateway report``, ``import --list``, ``reclassify --dry-run``, ``replay-bad``), before it
    reads: until 2026-12-07 they read a store a newer gateway had migrated, whose tables may
    mean what this one does not know, and ``replay-bad`` wrote into it. Read-only, never
    creating the file. Blocking."""
    from storage.local import read_only  # which migrates through this module

    with contextlib.closing(read_only(path)) as db:
        row = db.execute("PRAGMA user_version").fetchone()
    _not_past(int(row[0]) if row else 0, migrations())


async def _not_newer(db: aiosqlite.Connection) -> tuple[int, list[tuple[int, str, str]]]:
    """The file's version and the migrations this gateway has; SchemaTooNew past the newest."""
    current = await user_version(db)
    available = await asyncio.to_thread(migrations)
    _not_past(current, available)
    return current, available


def _not_past(current: int, available: list[tuple[int, str, str]]) -> None:
    newest = available[-1][0] if available else 0
    if current > newest:
        raise SchemaTooNew(
            f"the database is at schema version {current}, newer than this gateway knows ({newest}); "
            "upgrade the gateway (a newer one migrated it, and migrations are not undone), or restore"
            " the backup taken before that upgrade"
        )


async def migrate(db: aiosqlite.Connection, *, announce: bool = False) -> int:
    """Apply every migration newer than the file's version, each in its own write transaction,
    which reads the version again once it holds the write lock: another process on the same
    file (two gateways starting, a ``gateway import`` beside a ``gateway run``) may have
    applied it while this one waited. Without that second look, a migration that can be run
    twice (an index dropped and made again) was applied again after a later one, and set the
    version back: the later one then failed on its own table. ``announce``: an existing store
    this call migrated is said in the log, at info (``gateway run``'s start; the other commands
    print their own lines)."""
    current, available = await _not_newer(db)
    began, applied = current, False
    for version, name, sql in available:
        if version <= current and not await _skipped(db, version):
            continue
        try:
            await db.execute("BEGIN IMMEDIATE")  # waits for another process's migration, if any
            current = await user_version(db)
            if version <= current and await _skipped(db, version):  # the version stays
                for statement in _missing_part(version, sql):
                    await db.execute(statement)
            elif current < version:
                if version in REPLACED_TABLES and await has_table(db, REPLACED_TABLES[version]):
                    await db.execute(f"DROP TABLE {REPLACED_TABLES[version]}")
                for statement in statements(sql):
                    await db.execute(statement)
                await db.execute(f"PRAGMA user_version = {version}")
                current, applied = version, True
            await db.execute("COMMIT")
        except Exception as err:
            if db.in_transaction:
                with contextlib.suppress(Exception):
                    await db.execute("ROLLBACK")
            raise MigrationFailed(f"migration {name} failed: {err}") from err
    if (
        announce and began > 0 and applied
    ):  # an existing store upgraded (a new one, at 0, has nothing to undo)
        log.info(
            "store %s migrated from schema %d to %d: a gateway older than this one can no longer open"
            " it (migrations are not undone; the backup taken before the upgrade is the way back)",
            await _file(db), began, current, extra={"from_version": began, "to_version": current},
        )  # fmt: skip
    return current


async def _file(db: aiosqlite.Connection) -> str:
    """The file of ``db``'s main database, as SQLite opened it."""
    async with db.execute("PRAGMA database_list") as cursor:
        rows = await cursor.fetchall()
    return next((str(row[2]) for row in rows if row[1] == "main"), "")


async def _skipped(db: aiosqlite.Connection, version: int) -> bool:
    """A migration of ``MERGED_LATE`` that a store at a later version lacks part of."""
    if version not in MERGED_LATE:
        return False
    table, column = MERGED_LATE[version]
    if column is None:
        probe, args = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    else:
        probe, args = f"SELECT count(*) FROM pragma_table_info('{table}') WHERE name = ?", (column,)
    async with db.execute(probe, args) as cursor:
        row = await cursor.fetchone()
    return row is not None and row[0] == 0


async def has_table(db: aiosqlite.Connection, name: str) -> bool:
    """Whether the store has a table ``name`` (not a view of that name)."""
    async with db.execute(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ) as cursor:
        row = await cursor.fetchone()
    return row is not None and row[0] > 0


def _missing_part(version: int, sql: str) -> list[str]:
    """The statements of a ``MERGED_LATE`` migration a store lacks: the one creating its table,
    or (a column) all of them."""
    table, column = MERGED_LATE[version]
    every = statements(sql)
    if column is not None:
        return every
    return [s for s in every if re.match(rf"CREATE TABLE {table}\b", _code(s))]


def _code(statement: str) -> str:
    """A statement without the comment lines before it."""
    lines = statement.splitlines()
    while lines and (not lines[0].strip() or lines[0].lstrip().startswith("--")):
        lines.pop(0)
    return "\n".join(lines)


def statements(sql: str) -> list[str]:
    """The statements of a migration, one by one, as SQLite's own tokenizer ends them (a
    trigger's body holds semicolons; comments and string literals may too)."""
    *pieces, rest = sql.split(";")
    found, pending = [], ""
    for piece in pieces:
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            found.append(pending.strip())
            pending = ""
    if (pending + rest).strip():  # comments after the last statement, or one without its ";"
        found.append((pending + rest).strip())
    return found
