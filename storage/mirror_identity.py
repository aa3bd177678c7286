"""Which central store the reporting mirror holds, and starting the mirror again from nothing
when it is another one.

Owns the mirror file's ``mirror_identity`` table (made here, as ``mirror_horizons``: no node's
own store has it): the identity of the central store (PostgreSQL migration 0012,
``storage.central_identity``) whose rows the mirror holds. The mirror's horizons are that
store's transaction ids; another store's are not comparable with them. A round that finds

- another identity (the database dropped and made again, or another one named in
  ``central.url``: its rows may have ``ingested`` below the horizons, and it lacks rows the
  mirror holds), or
- the store's horizon below the mirror's (a dump restored into another cluster keeps the
  identity, but the new cluster's transaction ids start again low: its new rows would fall
  below the horizons)

deletes every mirrored row and horizon in the one write transaction that records the identity
(a crash leaves either the old store's rows under the old identity, found again next round,
or nothing under the new one: never a mix of two stores), empties the write-ahead log (the old
rows' pages), and says so once. The round then reads the store from nothing, erasures first.
``restart_reason`` says why (the round's warning), and ``read_recorded`` reads the identity
recorded without opening the file for writing: ``gateway doctor`` says it before the round does it.

A restored dump's rows keep the old cluster's ``ingested``, above every transaction id the new
cluster has given yet: a window ``[0, H)`` would not hold them until the new cluster's ids pass
theirs. So a table's first fill also reads the rows at or above ``beyond``, the round's
``pg_snapshot_xmax`` (no transaction of this cluster has such an id yet; ``storage.mirror``).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite
import asyncpg

from gateway.events import iso
from storage.central_identity import central_identity
from storage.cursors import local_columns
from storage.erasure import truncate_wal
from storage.local import read_only, rollback

log = logging.getLogger("gateway.mirror")

IDENTITY = (
    "CREATE TABLE IF NOT EXISTS mirror_identity ("
    " id INTEGER PRIMARY KEY CHECK (id = 1),"
    " identity TEXT NOT NULL,"  # the central store's central_identity.identity
    " recorded TEXT NOT NULL)"  # when the mirror recorded it (ISO 8601 UTC)
)


async def central_state(conn: asyncpg.Connection) -> tuple[int, int]:
    """The central store's horizon (every transaction below it has ended) and ``beyond`` (no
    transaction of this cluster has an id at or above it yet), of one snapshot."""
    row = await conn.fetchrow(
        "SELECT pg_snapshot_xmin(s)::text AS horizon, pg_snapshot_xmax(s)::text AS beyond"
        " FROM pg_current_snapshot() AS s"
    )
    assert row is not None
    return int(row["horizon"]), int(row["beyond"])


async def readable_identity(conn: asyncpg.Connection, told: list[bool]) -> str | None:
    """The central store's identity; None when there is none or the role may not read it (then
    told once, ``told`` remembering it): only the horizon is compared then."""
    try:
        return await central_identity(conn)
    except asyncpg.InsufficientPrivilegeError:
        if not told:
            told.append(True)
            role = await conn.fetchval("SELECT current_user")
            log.warning(
                "reporting mirror: the user in central.url may not read central_identity, so the"
                " mirror cannot tell another central store (the database dropped and made again,"
                " or another one named) from the one it holds; mirroring on without that check."
                " Run on the central store: GRANT SELECT ON central_identity TO %s",
                role,
            )
        return None


def restart_reason(identity: str | None, was: str | None, horizon: int, ahead: int, key: str) -> str | None:
    """Why a round starts the mirror again from nothing, as its warning says it; None when it
    does not. ``identity``: the central store's (None: none, or not readable); ``was``: the one
    the mirror recorded (None: none yet); ``horizon``: the store's; ``ahead``: the mirror's
    highest; ``key``: the URL's name (``central.url_key``). The round's (``follow``) and
    ``gateway doctor``'s, which says it before the round does it."""
    if identity is not None and was is not None and identity != was:
        return (
            f"another central store than the one it holds, at {key} (identity {identity[:8]}, was"
            f" {was[:8]}: the database dropped and made again, or another one named)"
        )
    if ahead > horizon:
        return (
            f"the central store's transaction ids at {key} went back (now {horizon}, the mirror is"
            f" at {ahead}: a dump restored into another cluster, or another database named)"
        )
    return None


def read_recorded(path: Path) -> str | None:
    """The identity the mirror file records, read only; None when the file, its
    ``mirror_identity`` table (a mirror no round of this gateway opened yet) or a recorded one
    is not there. Blocking (``sqlite3``): for the commands, or run in a thread."""
    if not path.is_file():
        return None
    try:
        with contextlib.closing(read_only(path)) as db:
            row = db.execute("SELECT identity FROM mirror_identity WHERE id = 1").fetchone()
    except sqlite3.OperationalError as err:
        if "no such table" in str(err):
            return None
        raise
    return str(row[0]) if row else None


async def recorded(db: aiosqlite.Connection) -> str | None:
    async with db.execute("SELECT identity FROM mirror_identity WHERE id = 1") as cursor:
        row = await cursor.fetchone()
    return str(row[0]) if row else None


async def follow(
    db: aiosqlite.Connection, identity: str | None, horizon: int, key: str, tables: Sequence[str]
) -> str | None:
    """Compare the central store (its ``identity``, its ``horizon``) with the one the mirror
    holds: the first identity is recorded (a mirror filled before there was one keeps its
    rows); another one, or a horizon gone back, starts the mirror again from nothing (the rows
    of ``tables`` deleted, every horizon) and is answered with why, as logged. ``key``: the
    URL's name in the log (``central.url_key``)."""
    was = await recorded(db)
    async with db.execute("SELECT coalesce(max(horizon), 0) FROM mirror_horizons") as cursor:
        row = await cursor.fetchone()
    why = restart_reason(identity, was, horizon, int(row[0]) if row else 0, key)
    if why is None and (identity is None or identity == was):
        return None
    stamp = iso(datetime.now(UTC))
    await db.execute("BEGIN IMMEDIATE")
    try:
        if why is not None:
            for table in tables:
                if await local_columns(db, table):
                    await db.execute(f"DELETE FROM {table}")  # our own names
            await db.execute("DELETE FROM mirror_horizons")
        if identity is not None:
            await db.execute(
                "INSERT INTO mirror_identity (id, identity, recorded) VALUES (1, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET identity = excluded.identity, recorded = excluded.recorded",
                (identity, stamp),
            )
        await db.execute("COMMIT")
    except BaseException:
        await rollback(db)
        raise
    if why is None:
        return None
    # The old store's rows are deleted (secure_delete zeroes their pages in the file), but the
    # log's older frames still hold them, and the reports keep the mirror open.
    await truncate_wal(db, "reporting mirror started again")
    log.warning(
        "reporting mirror: %s: starting it again from nothing — every row of the store before"
        " deleted from the mirror, and this one's read whole, erasures first; the reports show"
        " only what is mirrored until this round completes",
        why,
    )
    return why
