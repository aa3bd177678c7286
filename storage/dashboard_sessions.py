"""Dashboard sessions at rest (local migration 0014, ``dashboard_sessions``): what lets a login
outlive a restart of the gateway. Reads and writes that table only, each call on a connection
of its own (a login or a logout is rare; the dashboard's requests read the gateway's memory,
``gateway/sessions.py``, never this).

Rows hold a keyed digest of a session ID, the key's own digest (``key_id``) and when it
started; rows of another key (``admin.token`` or ``identity.secret`` changed), of an ended
session or past ``lifetime`` are deleted when the sessions are loaded and at each login.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from storage.local import connect

_STALE = "DELETE FROM dashboard_sessions WHERE key_id != ? OR started <= ?"
"""Sessions of another key (``admin.token`` or ``identity.secret`` changed) or past their lifetime."""
_LIVE = "SELECT digest, started FROM dashboard_sessions WHERE key_id = ? AND started > ? ORDER BY started"
"""The sessions ``_STALE`` keeps: read so even where it could not delete the others."""


async def load(path: Path, key_id: bytes, since: float) -> dict[bytes, float]:
    """Digest → start of every session of ``key_id`` started after ``since``; the others are
    deleted. A store this process may only read (its start said so, naming the file) is still
    read: until 2026-12-06 the deletion's refusal dropped every session, with SQLite's "attempt
    to write a readonly database" said of the load."""
    db = await connect(path)
    try:
        try:
            await db.execute(_STALE, (key_id, since))
        except sqlite3.OperationalError as err:
            if getattr(err, "sqlite_errorcode", 0) & 0xFF != sqlite3.SQLITE_READONLY:
                raise
        async with db.execute(_LIVE, (key_id, since)) as cursor:
            return {bytes(row[0]): float(row[1]) async for row in cursor}
    finally:
        await db.close()


async def save(
    path: Path, digest: bytes, key_id: bytes, started: float, since: float, dropped: Iterable[bytes]
) -> None:
    """Record a session that started at ``started``, deleting those ``dropped`` (ended, or
    pushed out by it) and every one of another key or started before ``since``, in one
    transaction."""
    db = await connect(path)
    try:
        await db.execute("BEGIN IMMEDIATE")
        await db.execute(_STALE, (key_id, since))
        await db.executemany("DELETE FROM dashboard_sessions WHERE digest = ?", [(d,) for d in dropped])
        await db.execute(
            "INSERT OR REPLACE INTO dashboard_sessions (digest, key_id, started) VALUES (?, ?, ?)",
            (digest, key_id, started),
        )
        await db.execute("COMMIT")
    finally:
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                await db.execute("ROLLBACK")
        await db.close()


async def remove(path: Path, digests: Iterable[bytes]) -> None:
    """Delete sessions (a logout, and those the store could not take before), in one transaction."""
    db = await connect(path)
    try:
        await db.executemany("DELETE FROM dashboard_sessions WHERE digest = ?", [(d,) for d in digests])
    finally:
        await db.close()
