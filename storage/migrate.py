"""Versioned SQLite migrations: ``storage/migrations/NNNN_name.sql``, version in ``PRAGMA user_version``."""

from __future__ import annotations

import asyncio
import re
from importlib import resources

import aiosqlite

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def migrations() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) for every shipped migration, in order."""
    found = []
    for entry in resources.files("storage").joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


async def migrate(db: aiosqlite.Connection) -> int:
    """Apply every migration newer than the file's version, each in its own transaction."""
    async with db.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    current = int(row[0]) if row else 0
    available = await asyncio.to_thread(migrations)
    newest = available[-1][0] if available else 0
    if current > newest:
        raise RuntimeError(
            f"the database is at schema version {current}, newer than this gateway knows ({newest}); "
            "upgrade the gateway"
        )
    for version, _name, sql in available:
        if version > current:
            await db.executescript(f"BEGIN;\n{sql}\nPRAGMA user_version = {version};\nCOMMIT;")
            current = version
    return current
