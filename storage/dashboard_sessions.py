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


async def load(path: Path, key_id: bytes, since: float) -> dict[bytes, float]:
    """Digest → start of every session of ``key_id`` started after ``since``; the others are
    deleted."""
    db = await connect(path)
    try:
        await db.execute(_STALE, (key_id, since))
        async with db.execute("SELECT digest, started FROM dashboard_sessions ORDER BY started") as cursor:
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


async def remove(path: Path, digest: bytes) -> None:
    """Delete one session (a logout)."""
    db = await connect(path)
    try:
        await db.execute("DELETE FROM dashboard_sessions WHERE digest = ?", (digest,))
    finally:
        await db.close()
