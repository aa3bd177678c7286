"""Which central store a node's central sync has delivered to: the central store's identity.

Reads the central ``central_identity`` (PostgreSQL migration 0012: a random UUID made once with
the database) and owns the local ``central_identity`` (migration 0019: the identity this store's
central cursors belong to). The cursors (``central:*`` in ``sync_cursors``), the daily counts'
``sent`` marks and the erasure horizon (``central_erasures_horizon``) say what *that* store has;
a database dropped and made again, or another one named in ``central.url``, has none of it.
``follow`` records the identity the first time (the cursors are taken for that store's: a node
upgraded with cursors sends nothing again), and on finding another one sets all three back to
nothing delivered, in the write transaction that records the new identity, so that the round
sends the node's whole history, erasures first, and a crash part way goes on from where it got.
A central store restored from an older dump keeps its identity and is not told apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import aiosqlite
import asyncpg

from gateway.events import iso
from storage.cursors import local_columns
from storage.local import rollback

READER_PREFIX = "central:"
"""The central sync's cursor names (``storage.cursors.cursor_name``); the sinks' are others."""


@dataclass(frozen=True)
class Replaced:
    """The central store is another one than the cursors' (``follow``): now reset."""

    was: str
    now: str
    rows: dict[str, int]
    """Rows of each table the store holds, which the round now sends again."""


async def central_identity(conn: asyncpg.Connection) -> str | None:
    """The central store's identity; None before migration 0012 (a newer gateway's node not
    there yet: nothing to compare)."""
    if not await conn.fetchval("SELECT to_regclass('central_identity') IS NOT NULL"):
        return None
    value = await conn.fetchval("SELECT identity::text FROM central_identity WHERE id = 1")
    return str(value) if value is not None else None


async def recorded(db: aiosqlite.Connection) -> str | None:
    """The central identity this store's central cursors belong to; None when none is recorded."""
    async with db.execute("SELECT identity FROM central_identity WHERE id = 1") as cursor:
        row = await cursor.fetchone()
    return str(row[0]) if row else None


async def follow(
    db: aiosqlite.Connection, conn: asyncpg.Connection, tables: Sequence[str]
) -> Replaced | None:
    """Compare the central store's identity with the one recorded: the first one is recorded;
    another one sets the central cursors, the daily counts' ``sent`` and the erasure horizon
    back to nothing delivered, records it, and is answered (with the rows of ``tables`` the
    store holds). None when there is nothing to do."""
    if not await local_columns(db, "central_identity"):
        return None
    now = await central_identity(conn)
    was = await recorded(db)
    if now is None or now == was:
        return None
    stamp = iso(datetime.now(UTC))
    rows: dict[str, int] = {}
    await db.execute("BEGIN IMMEDIATE")
    try:
        was = await recorded(db)  # another process's round (one without the lock) may have been first
        if now == was:
            await db.execute("ROLLBACK")
            return None
        if was is not None:
            rows = await _reset(db, tables, stamp)
        await db.execute(
            "INSERT INTO central_identity (id, identity, recorded) VALUES (1, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET identity = excluded.identity, recorded = excluded.recorded",
            (now, stamp),
        )
        await db.execute("COMMIT")
    except BaseException:
        await rollback(db)
        raise
    return Replaced(was, now, rows) if was is not None else None


async def _reset(db: aiosqlite.Connection, tables: Sequence[str], stamp: str) -> dict[str, int]:
    """Inside the write transaction: nothing delivered to the central store. Each cursor gets a
    new version too, so that a batch read before (a round of another process without the round
    lock) cannot move it (``storage.cursors.advance``)."""
    await db.execute(
        "UPDATE sync_cursors SET position = 0, updated = ? WHERE substr(name, 1, ?) = ?",
        (stamp, len(READER_PREFIX), READER_PREFIX),
    )
    if "sent" in await local_columns(db, "daily_counts"):
        await db.execute("UPDATE daily_counts SET sent = 0 WHERE sent <> 0")
    if await local_columns(db, "central_erasures_horizon"):
        # The old store's transaction ids say nothing of the new one's erased keys.
        await db.execute("DELETE FROM central_erasures_horizon")
    rows = {}
    for table in tables:
        if await local_columns(db, table):
            async with db.execute(f"SELECT count(*) FROM {table}") as cursor:  # our own names
                row = await cursor.fetchone()
            rows[table] = int(row[0]) if row else 0
    return rows
