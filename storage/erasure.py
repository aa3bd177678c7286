"""Erasure of one user (GDPR Art. 17) from the local store, or of one visitor alone
(``erase_visitor``: an anonymous visitor's request, its touchpoints, conversions and the bad
events naming it; recorded as an erasure whose ``user_key`` is the visitor's key, listed in its
``visitors`` too).

Owns the one destructive write the gateway makes: given a user key, it deletes
the user's identity bindings, every touchpoint and conversion of every visitor
bound to them, their conversions, and any bad event whose kept (sealed) body
or reason mentions the raw user ID or one of those visitors; and it records an
``erasures`` row (keys and counts only) so the central store and sinks can erase the
same user. Named by a hashed user key alone (no raw ID to search for), the bad events are
searched for the key as the central sync searches them (each text they name, hashed). Runs on
a connection of its own in one ``BEGIN IMMEDIATE`` transaction, which waits for the writer's
lock like any second writer (``busy_timeout``). The bad events, sealed at rest, are opened and
searched before that transaction, while the other writers go
on (``BadEventSearch``); inside it, only those stored since.

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
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from urllib.parse import unquote

import aiosqlite

from gateway.badbody import unseal
from gateway.events import BadEvent, Erasure
from gateway.keys import MAX_USER_ID, MAX_VISITOR_ID, Keys, is_plain_key, spellings
from storage.cursors import clamp_cursors, table_tops
from storage.erased import erased_at
from storage.importrows import forget
from storage.local import connect, event_row, insert_sql, rollback
from storage.migrate import migrate, refuse_newer
from storage.readonly import open_read_only

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
    users' bindings, and the import records of them (``import_rows``); rows deleted per
    table. The local erasure's deletes, and the reporting mirror's when it applies an erasure
    of the central store (``storage.mirror``)."""
    return await _delete(db, _people(users, visitors))


async def count_people(
    db: aiosqlite.Connection, users: Sequence[str], visitors: Sequence[str]
) -> dict[str, int]:
    """What ``delete_people`` would delete, per table, only read (a dry run's connection may
    not write: until 2026-12-07 the dry run deleted and rolled back, holding the write lock)."""
    counts: dict[str, int] = {}
    for table, where, args in _people(users, visitors):
        async with db.execute(f"SELECT count(*) FROM {table} WHERE {where}", args) as cursor:
            row = await cursor.fetchone()
        counts[table] = int(row[0]) if row else 0
    return counts


def _people(users: Sequence[str], visitors: Sequence[str]) -> list[tuple[str, str, Sequence[object]]]:
    """The rows of ``users`` and ``visitors`` an erasure takes: (table, condition, arguments),
    in the order they are deleted (a touchpoint's verdict changes before it)."""
    users_in = ",".join("?" for _ in users)
    marks = ",".join("?" for _ in visitors)
    return [
        (
            "verdict_changes",
            f"touchpoint_id IN (SELECT id FROM touchpoints WHERE visitor_key IN ({marks}))",
            list(visitors),
        ),
        ("touchpoints", f"visitor_key IN ({marks})", list(visitors)),
        (
            "conversions",
            f"user_key IN ({users_in}) OR visitor_key IN ({marks})",
            [*users, *visitors],
        ),
        ("identities", f"user_key IN ({users_in})", list(users)),
    ]


async def _delete(
    db: aiosqlite.Connection, deletes: Sequence[tuple[str, str, Sequence[object]]]
) -> dict[str, int]:
    """The rows of each table that its condition selects, of ``deletes`` (table, condition,
    arguments), deleted after their import records (``storage.importrows.forget``); rows per table."""
    counts: dict[str, int] = {}
    for table, where, args in deletes:
        await forget(db, table, where, args)
        cursor = await db.execute(f"DELETE FROM {table} WHERE {where}", args)
        counts[table] = max(cursor.rowcount, 0)
    return counts


async def delete_before(db: aiosqlite.Connection, key: str, erased_at: str) -> dict[str, int]:
    """Inside the caller's transaction: the rows of one key the central store erased (a user
    or a visitor key: ``erased_keys``) dated at or before ``erased_at`` — the touchpoints of
    the key as a visitor (and their verdict changes), its conversions as visitor or user, its
    bindings as a user, and the import records of them; rows deleted per table. Rows dated
    after are new activity, kept. The deletes of an erasure made through another node: the
    reporting mirror's (``storage.mirror``) and a node's own store's (``storage.sync``)."""
    deletes: list[tuple[str, str, Sequence[object]]] = [
        (
            "verdict_changes",
            "touchpoint_id IN (SELECT id FROM touchpoints WHERE visitor_key = ? AND ts <= ?)",
            (key, erased_at),
        ),
        ("touchpoints", "visitor_key = ? AND ts <= ?", (key, erased_at)),
        (
            "conversions",
            "(visitor_key = ? OR user_key = ?) AND ts <= ?",
            (key, key, erased_at),
        ),
        ("identities", "user_key = ? AND ts <= ?", (key, erased_at)),
    ]
    return await _delete(db, deletes)


async def delete_late(path: Path, keys: Sequence[tuple[str, str]], what: str) -> dict[str, int]:
    """The rows of each ``(key, erased_at)`` of ``keys`` dated at or before that erasure
    (``delete_before``), deleted in one write transaction, and the write-ahead log emptied after
    (``what`` names the deletes in its log lines): rows a writer stored after an erasure it had
    not seen yet (``gateway import``, which read the erasures when it began). Rows per table."""
    counts: dict[str, int] = {}
    if not keys:
        return counts
    db = await connect(path)
    try:
        await db.execute("BEGIN IMMEDIATE")
        try:
            tops = await table_tops(db)
            for key, at in keys:
                for table, rows in (await delete_before(db, key, at)).items():
                    counts[table] = counts.get(table, 0) + rows
            await clamp_cursors(db, tops)  # rowids freed by the deletes must not hide new rows
            await db.execute("COMMIT")
        except BaseException:
            await rollback(db)
            raise
        if any(counts.values()):
            await truncate_wal(db, what)
    finally:
        await db.close()
    return counts


_JSON_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
"""A JSON string literal: a body's value (a reason quotes one with a ' in it so too)."""
_QUOTED = re.compile(r"'([^']*)'")
"""A value a reason quotes (``'anon-7f3e' is not mapped``)."""
_BARE = re.compile(r"[\s\"',;&=<>{}\[\]()]+")
"""What separates the bare words of a text: a JSON number, a form field's value."""
_JOINED = re.compile(r"[:/?#|\\]+")
"""What joins an ID into a longer word a sender wrote (``anon:phone-1``, a URL's path or
fragment, ``ios|phone-1``): each part between is a word too. Not ``.``, ``@``, ``-``, ``_``
or ``+``, which IDs hold (an e-mail, a UUID); the whole word is sought as well."""
_NUMBER_BEFORE = r"(?<!\d[-:./])"
_NUMBER_AFTER = r"(?![-:./]\d)"
"""A date's, a time's or a decimal's joint with a digit beyond: what continues a number past
a raw ID's digit (``whole_id``)."""
_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|[bfnrt])")
"""A JSON string's escape: of a character (``\\u00d6``), or of white space (``\\n``)."""
_CHUNK = 200
"""Bad events opened per step: their texts are searched off the event loop."""
_RAW = "raw user ID"
"""What a spelling of the raw user ID names, in a local erasure's search (no key is this)."""


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
    found.update(part for word in list(found) if _JOINED.search(word) for part in _JOINED.split(word))
    return {t.strip() for t in found} - {""}


def keys_named(keys: Keys, texts: Sequence[str], sought: Collection[str], *, users: bool = False) -> set[str]:
    """Which keys of ``sought`` ``texts`` name: a visitor by its raw ID or its cookie value
    (``v1.<id>.<tag>``), as a sender's mapping reads one (``gateway.mapping``); with ``users``,
    a user too by their raw ID, keyed as ``user_id_storage = "hash"`` keys it (the central
    sync's search, which knows an erased user by that key alone). Each text is read as the raw
    ID's search reads it (``_as_read``): a form's ``visitor_id=ios%7Cphone-1`` names
    ``ios|phone-1``."""
    hashed = replace(keys, user_mode="hash") if users else None
    found: set[str] = set()
    for text in texts:
        for named in {word for read in _as_read(text) for word in named_texts(read)}:
            if len(named) > MAX_VISITOR_ID:
                continue
            found.add(keys.visitor_key(named))
            if named.startswith("v1.") and named.count(".") == 2:
                found.add(keys.visitor_key(named.split(".")[1]))
            if hashed is not None and len(named) <= MAX_USER_ID:
                found.add(hashed.user_key(named))
    return found & set(sought)


def whole_id(form: str) -> re.Pattern[str]:
    """``form`` (a raw user ID's spelling) where a text names it: in any case, as a sender
    writes an ID as its system holds it (``Alice@Example.COM``, an upper-case UUID), and with no
    letter or digit touching it (a quote, ``:``, ``=``, a space or a ``.`` may): erasing user
    ``42`` must not take every kept bad event with a price of 420 or a timestamp in it. Nor
    may a ``-``, ``:``, ``.`` or ``/`` with a digit beyond touch an end that is a digit: it is
    one number then (``2026-12-05T10:42:00Z``, ``12.50``), no user ``12`` nor ``42`` (until
    2026-12-05 erasing user ``12`` took every bad event sent in December)."""
    folded = form.casefold()
    before = r"(?<![^\W_])" if folded[:1].isalnum() else ""
    after = r"(?![^\W_])" if folded[-1:].isalnum() else ""
    if folded[:1].isdigit():
        before += _NUMBER_BEFORE
    if folded[-1:].isdigit():
        after += _NUMBER_AFTER
    return re.compile(before + re.escape(folded) + after)


def _as_read(text: str) -> list[str]:
    """``text``, and with a JSON string's escapes read as what they stand for: a sender's library
    escapes an ID's ``Ö`` as ``\\u00d6`` in the case its system holds it, no spelling of the
    ID erased in another case (``spellings``) is that; a white space escape (``\\n``) is no
    letter touching an ID. With its percent escapes read too (UTF-8), as a form or a URL's query
    writes an ID."""
    reads = [text]
    if "\\" in text:
        reads.append(_ESCAPE.sub(lambda m: chr(int(m[1], 16)) if m[1] else " ", text))
    if "%" in text:
        # A form a sender posted (``user_id=frank%40example.com``: not JSON, kept as it came), a
        # URL with the user in its query: an ``@``, a ``+`` or an ``ö`` is percent-encoded there.
        reads.extend(unquote(read) for read in list(reads))
    return reads


def _open(
    rows: Sequence[Sequence[str]],
    body_key: bytes,
    forms: Mapping[str, str],
    keys: Keys | None,
    sought: Collection[str],
    users: bool,
) -> list[tuple[str, str, set[str]]]:
    """Each bad event of ``rows`` (id, ts, body, reason) opened: its id, its time, the keys it
    names (of ``forms``, a raw ID's spellings, each to its key; of ``sought``, keyed)."""
    folded = [(whole_id(form), key) for form, key in forms.items()]
    opened = []
    for event_id, ts, body, reason in rows:
        texts = [t for t in (unseal(body_key, body), unseal(body_key, reason)) if t is not None]
        lowered = [read.casefold() for text in texts for read in _as_read(text)] if folded else []
        named = {key for form, key in folded if any(form.search(text) for text in lowered)}
        if keys is not None and sought:
            named |= keys_named(keys, texts, sought, users=users)
        opened.append((event_id, ts, named))
    return opened


def names_erased(body_key: bytes, keys: Keys, event: BadEvent, erased: Collection[str]) -> bool:
    """Whether ``event``, a bad event about to be stored, names one of the ``erased`` keys, as a
    node's sync searches its kept bad events for keys erased elsewhere: a visitor by each raw ID
    or cookie value the body or reason names, keyed; a user by each text hashed
    (``user_id_storage = "hash"``), or, where the key gives the raw ID back (``encrypt``,
    ``plain``), by that ID's spellings in any case (``whole_id``). Blocking (``unseal``): run
    off the event loop. The store's writer leaves such a bad event out when it was received at
    or before the erasure (``LocalStore.names_erased``)."""
    forms: dict[str, str] = {}
    for key in erased:
        raw = keys.recover_user_id(key)
        if raw:
            forms.update(dict.fromkeys(spellings(raw), key))
    ((_, _, named),) = _open(
        [(event.id, event.ts, event.body, event.reason)], body_key, forms, keys, erased, True
    )
    return bool(named)


class BadEventSearch:
    """The kept bad events that name someone, found in steps: their body and reason are
    sealed at rest, so each is opened and its texts searched (about 12 ms for 64 KiB, in a
    thread), which must not happen while the store's write lock is held (every landing waits
    on it). A first ``update`` opens every bad event, outside the write transaction; the
    ``update`` inside it opens only the bad events stored since (by id), and searches those
    opened before again only for the keys sought since (a device bound to the user a moment
    ago). ``forms``: a raw ID's spellings, each to the key it stands for (a substring of the
    body or reason names it: the reason counts too, a body cut at ``webhooks.bad_body_limit``
    may have lost the ID its reason quotes); the keys sought are visitor keys (each text a bad
    event names keyed with ``keys``: a bad event of the user's device names the device alone,
    an ``anonymousId``, a cookie value) and, with ``users``, hashed user keys."""

    def __init__(
        self,
        body_key: bytes,
        keys: Keys | None,
        forms: Mapping[str, str] | None = None,
        *,
        users: bool = False,
    ) -> None:
        self.body_key = body_key
        self.keys = keys
        self.forms = dict(forms or {})
        self.users = users
        self.sought: frozenset[str] = frozenset()
        """The keys every bad event opened so far was searched for."""
        self.named: dict[str, set[str]] = {}
        """Each bad event opened (by id): the keys it names."""
        self.ts: dict[str, str] = {}
        self.opened = 0
        """Bad events opened so far, each time counted (one opened twice counts twice)."""

    async def update(self, db: aiosqlite.Connection, sought: Collection[str]) -> None:
        """Bring the search up to the bad events stored now, and to the keys ``sought`` (those
        of ``forms`` are always sought); bad events deleted since are forgotten."""
        wanted = frozenset(sought)
        async with db.execute("SELECT id FROM bad_events") as cursor:
            ids = [row[0] for row in await cursor.fetchall()]
        kept = set(ids)
        self.named = {i: named for i, named in self.named.items() if i in kept}
        self.ts = {i: ts for i, ts in self.ts.items() if i in kept}
        more = wanted - self.sought if self.keys is not None else frozenset()
        opened = [i for i in ids if i in self.named]
        await self._open(db, [i for i in ids if i not in self.named], self.forms, wanted)
        if more and opened:  # searched before for the keys sought then: now for the new ones
            await self._open(db, opened, {}, more)
        self.sought = wanted

    async def _open(
        self, db: aiosqlite.Connection, ids: Sequence[str], forms: Mapping[str, str], sought: Collection[str]
    ) -> None:
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            sql = f"SELECT id, ts, body, reason FROM bad_events WHERE id IN ({','.join('?' for _ in chunk)})"
            async with db.execute(sql, chunk) as cursor:
                rows = list(await cursor.fetchall())
            self.opened += len(rows)
            opened = await asyncio.to_thread(_open, rows, self.body_key, forms, self.keys, sought, self.users)
            for event_id, ts, named in opened:
                self.named.setdefault(event_id, set()).update(named)
                self.ts[event_id] = ts

    def naming(self, keys: Collection[str]) -> list[str]:
        """Ids of the bad events that name one of ``keys``."""
        wanted = set(keys)
        return [i for i, named in self.named.items() if named & wanted]


async def bad_events_naming(
    path: Path, raw_user_id: str, *, body_key: bytes, keys: Keys | None = None
) -> int:
    """How many kept bad events name ``raw_user_id`` as an erasure of the user finds them (the
    ID in their body or reason): a user the store holds nothing else of is not "nothing
    recorded" to the journey lookup while a sender's refused payload keeps them. Reads only."""
    search = BadEventSearch(body_key, keys, dict.fromkeys(spellings(raw_user_id), _RAW))
    db = await open_read_only(path)
    try:
        await search.update(db, ())
    finally:
        await db.close()
    return len(search.naming([_RAW]))


async def user_known(path: Path, keys: Sequence[str]) -> bool:
    """Whether the store holds a binding or a conversion under one of the user ``keys``, or
    recorded an erasure of one: a text of a key's shape an operator names a user by is read as
    that key then (``gateway.usernames``), not as a raw ID. Reads only."""
    db = await open_read_only(path)
    try:
        return bool(await _keys_held(db, keys)) or await erased_at(db, keys) is not None
    except sqlite3.OperationalError:  # a store too old to have erasures: it holds none
        return bool(await _keys_held(db, keys))
    finally:
        await db.close()


async def visitor_known(path: Path, visitor_keys: Sequence[str], *, body_key: bytes, keys: Keys) -> bool:
    """Whether the store holds anything of a visitor under one of ``visitor_keys``: a touchpoint,
    a conversion, a binding, a kept bad event naming it (as its erasure searches them), or an
    erasure recorded of it. A text of another kind pasted where a visitor is named (a page's
    address, cookies not of ours: ``gateway.keys.unlike_a_visitor``) is refused only when it is
    none: a sender may have named a visitor by any printable text. Reads only."""
    if not visitor_keys:
        return False
    marks = ",".join("?" for _ in visitor_keys)
    sql = " UNION ALL ".join(
        f"SELECT 1 FROM (SELECT 1 FROM {table} WHERE visitor_key IN ({marks}) LIMIT 1)"
        for table in ("touchpoints", "conversions", "identities")
    )
    db = await open_read_only(path)
    try:
        async with db.execute(sql, [*visitor_keys] * 3) as cursor:
            if await cursor.fetchone() is not None:
                return True
        try:
            if await erased_at(db, visitor_keys) is not None:
                return True
        except sqlite3.OperationalError:  # a store too old to have erasures: it holds none
            pass
        search = BadEventSearch(body_key, keys)
        await search.update(db, visitor_keys)
        return bool(search.naming(visitor_keys))
    finally:
        await db.close()


async def kept_bad_events(path: Path) -> int:
    """How many bad events the store keeps: what an erasure by a user key alone could not search
    for the raw user ID, said with its answer. Reads only."""
    db = await open_read_only(path)
    try:
        async with db.execute("SELECT count(*) FROM bad_events") as cursor:
            row = await cursor.fetchone()
    finally:
        await db.close()
    return int(row[0]) if row else 0


async def erase_user(
    path: Path,
    user_key: str,
    raw_user_id: str | None,
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
    ``dry_run`` counts what the very same deletes would take, through a read-only connection.
    ``keys``: what keys a raw visitor ID, to find the bad events that name one of the user's
    visitors and not the user (without it, only those naming the raw user ID are found).

    ``raw_user_id`` None: the user is named by ``user_key`` alone, a hashed key that does not
    give the ID back (``DELETE /api/users/{user_key}``). Every row kept under the key goes as
    by the ID; the bad events are searched as the central sync searches them for a user erased
    through another node (``keys_named`` with ``users``: each text a bad event names, hashed,
    compared with the key), which needs ``keys``: not for the raw ID in any case or spelling,
    so what names the user only so is kept (``bad_events_kept`` counts what is)."""
    if raw_user_id is not None and not raw_user_id:
        raise ValueError("raw_user_id must not be empty")
    if raw_user_id is None and keys is None:
        raise ValueError("an erasure by user_key alone needs keys, to search the bad events")
    user_keys = [user_key, *(k for k in also if k != user_key)]

    async def visitors(db: aiosqlite.Connection) -> list[str]:
        return await bound_visitors(db, *user_keys)

    async def others(db: aiosqlite.Connection) -> list[str]:
        # The other keys, for the central store: a raw ID ("plain") only if rows here had it.
        held = await _keys_held(db, user_keys[1:])
        return [k for k in user_keys[1:] if not is_plain_key(k) or k in held]

    if raw_user_id is None:
        search = BadEventSearch(body_key, keys, users=True)
        sought: list[str] = [user_key]
    else:
        search = BadEventSearch(body_key, keys, dict.fromkeys(spellings(raw_user_id), _RAW))
        sought = [_RAW]
    record = Erasure(id=event_id, ts=ts, node=node, user_key=user_key)
    return await _erase(path, record, user_keys, visitors, others, search, sought, dry_run=dry_run)


async def erase_visitor(
    path: Path,
    visitor_keys: Sequence[str],
    *,
    body_key: bytes,
    keys: Keys,
    event_id: str,
    ts: str,
    node: str,
    dry_run: bool = False,
) -> tuple[Erasure, int]:
    """Delete everything of a visitor no user is erased with (an anonymous visitor's own
    request, by its cookie value): what an erasure of a user deletes for each of its visitors —
    its touchpoints (and their verdict changes), the conversions recorded on it, the kept bad
    events that name it — under each of ``visitor_keys`` (a text that is both a visitor_key and
    a raw ID: both). Its bindings to users stay: they are those users' (their erasure takes
    them). The ``Erasure`` recorded, and how many users the visitor is bound to.

    The record is an erasure's as any, its ``user_key`` the first visitor key, also listed in
    ``visitors`` (a user key never is: a visitor erasure is told apart so), so the central store
    and the mirror apply it as they apply a user's (``storage.central.apply_erasures``): the
    visitor's rows go, its key joins ``erased_keys``, and no user key is erased."""
    listed = list(dict.fromkeys(visitor_keys))
    if not listed:
        raise ValueError("visitor_keys must not be empty")

    async def visitors(db: aiosqlite.Connection) -> list[str]:
        return listed

    async def others(db: aiosqlite.Connection) -> list[str]:
        return []

    record = Erasure(id=event_id, ts=ts, node=node, user_key=listed[0])
    erasure = await _erase(
        path, record, [], visitors, others, BadEventSearch(body_key, keys), (), dry_run=dry_run
    )
    db = await open_read_only(path)
    try:
        marks = ",".join("?" for _ in listed)
        sql = f"SELECT count(DISTINCT user_key) FROM identities WHERE visitor_key IN ({marks})"
        async with db.execute(sql, listed) as cursor:
            row = await cursor.fetchone()
    finally:
        await db.close()
    return erasure, int(row[0]) if row else 0


async def _erase(
    path: Path,
    record: Erasure,
    users: Sequence[str],
    visitors_of: Callable[[aiosqlite.Connection], Awaitable[list[str]]],
    others_of: Callable[[aiosqlite.Connection], Awaitable[list[str]]],
    search: BadEventSearch,
    sought: Sequence[str],
    *,
    dry_run: bool,
) -> Erasure:
    """The erasure of ``users`` and the visitors ``visitors_of`` finds (read again inside the
    write transaction: a device bound meanwhile), recorded as ``record`` with those visitors,
    the counts and the other keys ``others_of`` finds. ``sought``: what else a bad event that
    goes names (the raw ID's mark, ``_RAW``; or a user key, keyed from its texts)."""
    if dry_run:
        return await _count(path, record, users, visitors_of, others_of, search, sought)
    db = await connect(path)
    try:
        # A store an older gateway left (before the new version's first start) is migrated first,
        # as ``import`` and ``reclassify`` do: until 2026-12-06 one of before schema 10 failed
        # the erasure with SQLite's bare ``no such table``.
        await migrate(db)
        # The bad events opened before the write lock is taken: inside it, only those stored since.
        await search.update(db, [*sought, *await visitors_of(db)])
        await db.execute("BEGIN IMMEDIATE")
        try:
            tops = await table_tops(db)
            visitors = await visitors_of(db)
            others = await others_of(db)
            await search.update(db, [*sought, *visitors])
            bad = search.naming([*sought, *visitors])
            counts = await delete_people(db, users, visitors)
            # Bad events keep the sender's body as received, which may hold the raw ID.
            cursor = await db.execute(
                f"DELETE FROM bad_events WHERE id IN ({','.join('?' for _ in bad)})", bad
            )
            counts["bad_events"] = max(cursor.rowcount, 0)
            erasure = replace(record, visitors=visitors, counts=counts, also_keys=others)
            await db.execute(insert_sql(Erasure), event_row(erasure))
            await clamp_cursors(db, tops)  # rowids freed by the deletes must not hide new rows
            await db.execute("COMMIT")
        except BaseException:
            await rollback(db)
            raise
        await truncate_wal(db)
    finally:
        await db.close()
    return erasure


async def _count(
    path: Path,
    record: Erasure,
    users: Sequence[str],
    visitors_of: Callable[[aiosqlite.Connection], Awaitable[list[str]]],
    others_of: Callable[[aiosqlite.Connection], Awaitable[list[str]]],
    search: BadEventSearch,
    sought: Sequence[str],
) -> Erasure:
    """``_erase``'s dry run: what it would delete, counted in one read of the store through a
    connection that cannot write it (``open_read_only``), so it works on a store its user may
    only read and never holds the write lock the gateway's landings wait on. A store a newer
    gateway migrated is refused; an older one is read as it is (nothing migrates it)."""
    db = await open_read_only(path)
    try:
        await refuse_newer(db)
        await db.execute("BEGIN")  # one snapshot: the visitors, the rows and the bad events agree
        try:
            # Read as the erasure reads: a store of before schema 10 lacks these cursors, and is
            # said with its version and what migrates it (``older_hint``), as before.
            await table_tops(db)
            visitors = await visitors_of(db)
            others = await others_of(db)
            await search.update(db, [*sought, *visitors])
            counts = await count_people(db, users, visitors)
            counts["bad_events"] = len(search.naming([*sought, *visitors]))
        finally:
            await rollback(db)
    finally:
        await db.close()
    return replace(record, visitors=visitors, counts=counts, also_keys=others)


async def truncate_wal(db: aiosqlite.Connection, what: str = "erasure") -> None:
    """Copy the write-ahead log into the database and empty it: its older frames still hold
    the pages as they were before the erasure (``what``: or the retention purge, as its log
    lines name it). The erasure is committed already, so this
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
        await _truncate_tries(db, what)
    finally:
        await db.execute(f"PRAGMA busy_timeout = {before}")


async def _truncate_tries(db: aiosqlite.Connection, what: str) -> None:
    for attempt in range(_TRUNCATE_TRIES):
        if attempt:
            await asyncio.sleep(0.5)
        try:
            async with db.execute("PRAGMA wal_checkpoint(TRUNCATE)") as cursor:
                row = await cursor.fetchone()
        except sqlite3.Error as err:
            log.warning("%s committed, but emptying the write-ahead log failed: %s", what, err)
            return
        if row is None or not row[0]:
            return
    log.warning(
        "%s committed, but the store stayed busy, so the write-ahead log was not emptied: its"
        " older frames may hold the deleted rows' old pages until they are overwritten, or the next"
        " erasure or a clean shutdown empties it",
        what,
    )
