"""Versioned SQLite migrations: ``storage/migrations/NNNN_name.sql``, version in ``PRAGMA user_version``.

Reads the shipped SQL files; writes the schema and ``user_version`` of the
database it is given. Each migration runs in its own write transaction; if
another process applied it first, that is noticed and not an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from importlib import resources

import aiosqlite

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class SchemaTooNew(RuntimeError):
    """The database was written by a newer gateway than this one."""


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


async def migrate(db: aiosqlite.Connection) -> int:
    """Apply every migration newer than the file's version, each in its own transaction."""
    current = await user_version(db)
    available = await asyncio.to_thread(migrations)
    newest = available[-1][0] if available else 0
    if current > newest:
        raise SchemaTooNew(
            f"the database is at schema version {current}, newer than this gateway knows ({newest}); "
            "upgrade the gateway"
        )
    for version, name, sql in available:
        if version <= current:
            continue
        try:
            await db.executescript(f"BEGIN IMMEDIATE;\n{sql}\n;PRAGMA user_version = {version};\nCOMMIT;")
        except Exception as err:
            if db.in_transaction:
                with contextlib.suppress(Exception):
                    await db.execute("ROLLBACK")
            # Another gateway on the same file may have applied it between our read and our write.
            if await user_version(db) >= version:
                current = await user_version(db)
                continue
            raise RuntimeError(f"migration {name} failed: {err}") from err
        current = version
    return current
