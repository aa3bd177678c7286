"""The README's privacy audit stays honest: every column of every table of a freshly
migrated store is listed in it as `table.column`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiosqlite

from storage.migrate import migrate

README = Path(__file__).resolve().parents[2] / "README.md"


def audit_section() -> str:
    text = README.read_text()
    start = text.index("## Privacy: what is stored")
    end = text.index("\n## ", start + 1)
    return text[start:end]


async def test_readme_audit_lists_every_column(tmp_path: Path) -> None:
    audit = await _audit()
    async with aiosqlite.connect(tmp_path / "fresh.db") as db:
        await migrate(db)
        async with db.execute("SELECT name FROM sqlite_master WHERE type = 'table'") as cur:
            tables = [row[0] async for row in cur if not row[0].startswith("sqlite_")]
        missing = []
        for table in tables:
            async with db.execute(f"PRAGMA table_info({table})") as cur:
                missing += [f"{table}.{row[1]}" async for row in cur if f"`{table}.{row[1]}`" not in audit]
    assert len(tables) >= 10
    assert missing == [], f"README 'Privacy: what is stored' lacks: {missing}"


async def _audit() -> str:
    return await asyncio.to_thread(audit_section)  # a file read: off the event loop


async def test_readme_audit_lists_every_column_of_a_reporting_mirror(tmp_path: Path) -> None:
    """The mirror (``central.mirror_path``) is a local store with its horizons and each node's
    daily counts besides."""
    from storage.mirror import open_mirror  # asyncpg: the postgres extra

    audit = await _audit()
    db = await open_mirror(tmp_path / "mirror.db")
    columns = []
    try:
        for table in ("mirror_horizons", "mirror_daily_counts"):
            async with db.execute(f"PRAGMA table_info({table})") as cur:
                columns += [f"{table}.{row[1]}" async for row in cur]
    finally:
        await db.close()
    assert len(columns) == 3 + 9
    assert [c for c in columns if f"`{c}`" not in audit] == []
