"""Erasure of one user (GDPR Art. 17) from the local store.

Owns the one destructive write the gateway makes: given a user key, it deletes
the user's identity bindings, every touchpoint and conversion of every visitor
bound to them, their conversions, and any bad event whose kept (sealed) body
or reason mentions the raw user ID or one of those visitors; and it records an
``erasures`` row (keys and counts only) so the central store and sinks can erase the
same user. Runs on a connection of its own in one ``BEGIN IMMEDIATE`` transaction,
which waits for the writer's lock like any second writer (``busy_timeout``).

Erased means gone from the files too: SQLite deletes a row by unlinking its cell, and the
bytes stay in the page, and in the write-ahead log's older frames, until overwritten. Every
connection of the store deletes with ``secure_delete`` on (``storage.local.connect``: cells
and freed pages zeroed), and after an erasure the write-ahead log is checkpointed into the
database and truncated.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sqlite3
from collections.abc import Collection, Sequence
from pathlib import Path

import aiosqlite

from gateway.badbody import unseal
from gateway.events import Erasure
from gateway.keys import MAX_VISITOR_ID, Keys, is_plain_key, spellings
from storage.cursors import clamp_cursors, table_tops
from storage.local import connect, event_row, insert_sql
from storage.migrate import refuse_newer

log = logging.getLogger("gateway.erasure")
_TRUNCATE_WAIT_MS = 200
_TRUNCATE_TRIES = 10
MAX_VISITORS = 10_000
"""Most visitors erased with one user (a user with more is erased in several calls)."""


async def bound_visitors(db: aiosqlite.Connection, user_key: str, *also: str) -> list[str]:
    """The visitors bound to the user, under ``user_key`` or any of the keys ``also`` names."""
    keys = [user_key, *also]
    marks = ",".join("?" * len(keys))
    async with db.execute(
        f"SELECT DISTINCT visitor_key FROM identities WHERE user_key IN ({marks}) LIMIT ?",
        (*keys, MAX_VISITORS),
    ) as cursor:
        return [row[0] for row in await cursor.fetchall()]


async def _keys_held(db: aiosqlite.Connection, keys: Sequence[str]) -> set[str]:
    """Which of ``keys`` this store has bindings or conversions under."""
    if not keys:
        return set()
    marks = ",".join("?" * len(keys))
    sql = (
        f"SELECT user_key FROM identities WHERE user_key IN ({marks})"
        f" UNION SELECT user_key FROM conversions WHERE user_key IN ({marks})"
    )
    async with db.execute(sql, [*keys, *keys]) as cursor:
        return {row[0] for row in await cursor.fetchall()}


async def delete_people(
    db: aiosqlite.Connection, users: Sequence[str], visitors: Sequence[str]
) -> dict[str, int]:
    """Inside the caller's transaction: the rows of erased ``users`` and ``visitors`` — every
    touchpoint of the visitors (and its verdict changes), every conversion of either, the
    users' bindings; rows deleted per table. The local erasure's deletes, and the reporting
    mirror's when it applies an erasure of the central store (``storage.mirror``)."""
    users_in = ",".join("?" for _ in users)
    marks = ",".join("?" for _ in visitors)
    statements = [
        (
            "verdict_changes",
            "DELETE FROM verdict_changes WHERE touchpoint_id IN "
            f"(SELECT id FROM touchpoints WHERE visitor_key IN ({marks}))",
            list(visitors),
        ),
        ("touchpoints", f"DELETE FROM touchpoints WHERE visitor_key IN ({marks})", list(visitors)),
        (
            "conversions",
            f"DELETE FROM conversions WHERE user_key IN ({users_in}) OR visitor_key IN ({marks})",
            [*users, *visitors],
        ),
        ("identities", f"DELETE FROM identities WHERE user_key IN ({users_in})", list(users)),
    ]
    counts: dict[str, int] = {}
    for table, sql, args in statements:
        cursor = await db.execute(sql, args)
        counts[table] = max(cursor.rowcount, 0)
    return counts


async def delete_before(db: aiosqlite.Connection, key: str, erased_at: str) -> dict[str, int]:
    """Inside the caller's transaction: the rows of one key the central store erased (a user
    or a visitor key: ``erased_keys``) dated at or before ``erased_at`` — the touchpoints of
    the key as a visitor (and their verdict changes), its conversions as visitor or user, its
    bindings as a user; rows deleted per table. Rows dated after are new activity, kept. The
    deletes of an erasure made through another node: the reporting mirror's
    (``storage.mirror``) and a node's own store's (``storage.sync``)."""
    statements = [
        (
            "verdict_changes",
            "DELETE FROM verdict_changes WHERE touchpoint_id IN"
            " (SELECT id FROM touchpoints WHERE visitor_key = ? AND ts <= ?)",
            (key, erased_at),
        ),
        ("touchpoints", "DELETE FROM touchpoints WHERE visitor_key = ? AND ts <= ?", (key, erased_at)),
        (
            "conversions",
            "DELETE FROM conversions WHERE (visitor_key = ? OR user_key = ?) AND ts <= ?",
            (key, key, erased_at),
        ),
        ("identities", "DELETE FROM identities WHERE user_key = ? AND ts <= ?", (key, erased_at)),
    ]
    counts: dict[str, int] = {}
    for table, sql, args in statements:
        cursor = await db.execute(sql, args)
        counts[table] = max(cursor.rowcount, 0)
    return counts


_JSON_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
"""A JSON string literal: a body's value (a reason quotes one with a ' in it so too)."""
_QUOTED = re.compile(r"'([^']*)'")
"""A value a reason quotes (``'anon-7f3e' is not mapped``)."""
_BARE = re.compile(r"[\s\"',;&=<>{}\[\]()]+")
"""What separates the bare words of a text: a JSON number, a form field's value."""
_CHUNK = 200
"""Bad events opened per step: their texts are searched off the event loop."""


def named_texts(text: str) -> set[str]:
    """Every text ``text`` names that may be an ID a sender sent: each JSON string (unescaped),
    each value a reason quotes, each bare word (a JSON number, a body that is not JSON); in a
    cut body too (the string it was cut in is left out: an ID cut short names no one)."""
    found = set(_QUOTED.findall(text))
    for literal in _JSON_STRING.findall(text):
        try:
            found.add(json.loads(f'"{literal}"'))
        except ValueError:  # an escape JSON does not have: kept as written
            found.add(literal)
    found.update(_BARE.split(text))
    return {t.strip() for t in found} - {""}


def names_visitor(keys: Keys, texts: Sequence[str], visitors: Collection[str]) -> bool:
    """Whether ``texts`` name a visitor whose key is in ``visitors``, by its raw ID or its
    cookie value (``v1.<id>.<tag>``), as a sender's mapping reads one (``gateway.mapping``)."""
    for text in texts:
        for named in named_texts(text):
            if len(named) > MAX_VISITOR_ID:
                continue
            if keys.visitor_key(named) in visitors:
                return True
            cookie = named.startswith("v1.") and named.count(".") == 2
            if cookie and keys.visitor_key(named.split(".")[1]) in visitors:
                return True
    return False


def _naming(
    rows: Sequence[Sequence[str]],
    body_key: bytes,
    forms: set[str],
    keys: Keys | None,
    visitors: Collection[str],
) -> list[str]:
    found = []
    for event_id, body, reason in rows:
        texts = [t for t in (unseal(body_key, body), unseal(body_key, reason)) if t is not None]
        by_id = any(form in text for text in texts for form in forms)
        if by_id or (keys is not None and visitors and names_visitor(keys, texts, visitors)):
            found.append(event_id)
    return found


async def bad_events_naming(
    db: aiosqlite.Connection,
    body_key: bytes,
    raw_user_id: str,
    visitors: Collection[str] = (),
    keys: Keys | None = None,
) -> list[str]:
    """Ids of kept bad events whose body or reason contains the raw user ID, or names one of
    ``visitors`` (keys; the raw visitor IDs are keyed with ``keys``: a bad event of the user's
    device names the device alone, an ``anonymousId``, a cookie value). Both texts are sealed
    at rest, so each is opened; there are few. The reason counts too: a body cut at
    ``webhooks.bad_body_limit`` may have lost the ID its reason quotes."""
    found: list[str] = []
    forms = spellings(raw_user_id)
    wanted = frozenset(visitors)
    async with db.execute("SELECT id, body, reason FROM bad_events") as cursor:
        while rows := list(await cursor.fetchmany(_CHUNK)):
            found += await asyncio.to_thread(_naming, rows, body_key, forms, keys, wanted)
    return found


async def erase_user(
    path: Path,
    user_key: str,
    raw_user_id: str,
    *,
    body_key: bytes,
    event_id: str,
    ts: str,
    node: str,
    dry_run: bool = False,
    also: Sequence[str] = (),
    keys: Keys | None = None,
) -> Erasure:
    """Delete everything of the user; the ``Erasure`` recorded (with rows deleted per table).
    ``also``: the other keys the user's rows may be stored under (``Keys.user_keys``: the
    storage mode changed since); the erasure record names ``user_key``, the current one.
    ``dry_run`` runs the very same deletes and rolls them back: the counts are what would go.
    ``keys``: what keys a raw visitor ID, to find the bad events that name one of the user's
    visitors and not the user (without it, only those naming the raw user ID are found)."""
    if not raw_user_id:
        raise ValueError("raw_user_id must not be empty")
    db = await connect(path)
    try:
        await refuse_newer(db)
        await db.execute("BEGIN IMMEDIATE")
        try:
            tops = await table_tops(db)
            user_keys = [user_key, *(k for k in also if k != user_key)]
            visitors = await bound_visitors(db, *user_keys)
            held = await _keys_held(db, user_keys[1:])
            bad = await bad_events_naming(db, body_key, raw_user_id, visitors, keys)
            counts = await delete_people(db, user_keys, visitors)
            # Bad events keep the sender's body as received, which may hold the raw ID.
            cursor = await db.execute(
                f"DELETE FROM bad_events WHERE id IN ({','.join('?' for _ in bad)})", bad
            )
            counts["bad_events"] = max(cursor.rowcount, 0)
            # The other keys, for the central store: a raw ID ("plain") only if rows here had it.
            others = [k for k in user_keys[1:] if not is_plain_key(k) or k in held]
            erasure = Erasure(
                id=event_id,
                ts=ts,
                node=node,
                user_key=user_key,
                visitors=visitors,
                counts=counts,
                also_keys=others,
            )
            if dry_run:
                await db.execute("ROLLBACK")
                return erasure
            await db.execute(insert_sql(Erasure), event_row(erasure))
            await clamp_cursors(db, tops)  # rowids freed by the deletes must not hide new rows
            await db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                await db.execute("ROLLBACK")
            raise
        await truncate_wal(db)
    finally:
        await db.close()
    return erasure


async def truncate_wal(db: aiosqlite.Connection) -> None:
    """Copy the write-ahead log into the database and empty it: its older frames still hold
    the pages as they were before the erasure. The erasure is committed already, so this
    never fails it: a try holds the writers' lock for at most ``_TRUNCATE_WAIT_MS`` plus the
    copy (landings keep being written), and is repeated while a reader or another
    checkpoint is busy; after ``_TRUNCATE_TRIES`` the log says the frames remain (they are
    overwritten as the log is reused, and emptied by the next erasure or a clean shutdown).
    The connection's busy timeout is as it was after (a connection that goes on working: the
    central sync's)."""
    async with db.execute("PRAGMA busy_timeout") as cursor:
        row = await cursor.fetchone()
    before = int(row[0]) if row else 5000
    await db.execute(f"PRAGMA busy_timeout = {_TRUNCATE_WAIT_MS}")
    try:
        await _truncate_tries(db)
    finally:
        await db.execute(f"PRAGMA busy_timeout = {before}")


async def _truncate_tries(db: aiosqlite.Connection) -> None:
    for attempt in range(_TRUNCATE_TRIES):
        if attempt:
            await asyncio.sleep(0.5)
        try:
            async with db.execute("PRAGMA wal_checkpoint(TRUNCATE)") as cursor:
                row = await cursor.fetchone()
        except sqlite3.Error as err:
            log.warning("erasure committed, but emptying the write-ahead log failed: %s", err)
            return
        if row is None or not row[0]:
            return
    log.warning(
        "erasure committed, but the store stayed busy, so the write-ahead log was not emptied: its"
        " older frames may hold the erased rows' old pages until they are overwritten, or the next"
        " erasure or a clean shutdown empties it"
    )
