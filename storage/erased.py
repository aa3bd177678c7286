"""Who was erased, and when: what keeps an erased user's late rows out of the local store.

Owns ``Erased`` (every erased user's keys, and the visitors erased with them, each with the
time of its latest erasure, read from the ``erasures`` table, and the keys erased through
other nodes that the central sync applied here, from ``central_erasures``) and
``ErasedWatch`` (the same, read again when an erasure was stored since). A row about one of
those keys dated at or before that time is *late*: it belongs to before the erasure and
arrived after it (a log replayed by ``gateway import``, a signed event retried with its
original timestamp). Rows dated after are new activity and are kept. The central store
refuses late rows by its ``erased_keys`` (``storage/central.py``). Blocking reads: called
off the event loop; ``Erased.load`` reads the same on an open connection (the store's writer,
which leaves late rows out of every commit: ``storage.local``), and, given what it read before,
only the erasures stored since. And ``erased_at``, the same
records asked about a few keys on an open connection: a lookup that finds nothing of someone
says when they were erased.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from gateway.events import Binding, Conversion, Event, Touchpoint
from storage.readonly import read_only

OWN_MARK = "SELECT coalesce(max(rowid), 0) FROM erasures"
MARK = (
    "SELECT (SELECT coalesce(max(rowid), 0) FROM erasures)"
    " + (SELECT coalesce(max(id), 0) FROM central_erasures)"
)
"""How far the erasures go (0: none): the largest rowid of this node's erasures plus the largest
id of the other nodes' erasures applied here. Neither is ever deleted, and a key erased again
is recorded under a new id (``AUTOINCREMENT``), so a new erasure of either kind always moves it."""
PEOPLE = (Touchpoint, Binding, Conversion)
"""The event types that are someone's: a late one of these is left out (an erasure record, a
receipt, a daily count never is)."""
_ERASURES = "SELECT ts, user_key, visitors, {also} FROM erasures"
_CENTRAL = "SELECT key, erased_at FROM central_erasures"
_TOPS = (
    "SELECT (SELECT coalesce(max(rowid), 0) FROM erasures), (SELECT count(*) FROM erasures),"
    " (SELECT coalesce(max(id), 0) FROM central_erasures), (SELECT count(*) FROM central_erasures)"
)
"""How far each table goes (its largest id, ``MARK``'s two terms) and its rows, in one statement:
one snapshot, so the two ids sum to the ``MARK`` of that moment."""


@dataclass(frozen=True)
class Tops:
    """How far ``Erased.load`` read the two tables: the largest ``erasures.rowid`` and its rows,
    the largest ``central_erasures.id`` and its rows."""

    own: int = 0
    own_rows: int = 0
    central: int = 0
    central_rows: int = 0

    @property
    def mark(self) -> int:
        """``MARK`` of the same moment."""
        return self.own + self.central

    def grown_from(self, was: Tops) -> bool:
        """Whether the tables only grew since ``was``: no id and no count lower. Neither table is
        deleted from (retention keeps both, ``gateway purge`` too, no migration rewrites them; the
        central sync records a key erased again with ``INSERT OR REPLACE``, a row deleted and one
        added under a larger id: the same count). Lower means someone else deleted rows (the file
        edited by hand, another file put in its place): what was read is no longer known to hold."""
        return (
            self.own >= was.own
            and self.own_rows >= was.own_rows
            and self.central >= was.central
            and self.central_rows >= was.central_rows
        )


def _mark_sql(tables: set[str]) -> str:
    """``MARK``; ``OWN_MARK`` on a store from before local migration 0013."""
    return MARK if "central_erasures" in tables else OWN_MARK


async def erasure_mark(db: aiosqlite.Connection) -> int:
    """``MARK`` on an open connection: to tell whether an erasure came since."""
    # One thread hop (``execute_fetchall``), not three (a cursor's execute, fetch and close): the
    # writer asks at every commit of signed events.
    try:
        rows = list(await db.execute_fetchall(MARK))
    except sqlite3.OperationalError as err:
        if "central_erasures" not in str(err):
            raise
        rows = list(await db.execute_fetchall(OWN_MARK))
    return int(rows[0][0]) if rows else 0


async def erased_at(db: aiosqlite.Connection, keys: Sequence[str]) -> str | None:
    """When the latest erasure of any of ``keys`` happened (ISO 8601 UTC), or None: the keys of
    a user (``Keys.user_keys``) or of a visitor, as this store recorded their erasure
    (``erasures``: the user's keys, the visitors erased with them; ``central_erasures``: those
    erased through another node, applied here). A time only, nothing of the person: what a
    lookup (``GET /api/users/{id}``, a sink's re-send) says of someone it finds nothing of."""
    marks = ",".join("?" for _ in keys)
    sql = (
        "SELECT max(at) FROM ("
        f" SELECT ts AS at FROM erasures WHERE user_key IN ({marks})"
        f" OR EXISTS (SELECT 1 FROM json_each(erasures.visitors) WHERE value IN ({marks}))"
        f" OR EXISTS (SELECT 1 FROM json_each(erasures.also_keys) WHERE value IN ({marks}))"
        f" UNION ALL SELECT erased_at FROM central_erasures WHERE key IN ({marks}))"
    )
    async with db.execute(sql, [*keys, *keys, *keys, *keys]) as cursor:
        row = await cursor.fetchone()
    return str(row[0]) if row is not None and row[0] is not None else None


class Erased:
    """Key → the time (UTC text) of its latest erasure."""

    def __init__(self, since: dict[str, str] | None = None) -> None:
        self.since = since or {}
        self.newest = max(self.since.values(), default="")
        """The latest erasure's time ("": none): a row dated after it is no one's late row."""
        self.tops: Tops | None = None
        """How far ``load`` read the tables (None: not read by it): the next ``load`` given this
        reads only the rows past it."""
        self.rows_read = 0
        """The rows of both tables the latest ``load`` or ``read`` read: the new ones only, unless
        it read them whole."""
        self.whole = True
        """Read whole (False: ``read`` given ``after`` read the rows past it alone, to ``merge``)."""

    @classmethod
    def read(cls, path: Path, *, only_read: bool = False, after: Tops | None = None) -> Erased:
        """``only_read``: through a read-only connection (a dry run), which never writes the store
        (nor creates it). ``after``: how far an earlier read went (its ``tops``): only the rows
        past it are read, an ``Erased`` of those alone (``whole`` False) for the earlier one to
        ``merge``; read whole when either table's largest id or count went back since (as
        ``load``), and on a store from before local migration 0013 (no ``central_erasures``)."""
        since: dict[str, str] = {}
        tops: Tops | None = None
        read = 0
        connection = read_only(path) if only_read else sqlite3.connect(path)
        with contextlib.closing(connection) as db:
            columns = {row[1] for row in db.execute("PRAGMA table_info(erasures)")}
            also = "also_keys" if "also_keys" in columns else "'[]'"
            central = _tables(db) >= {"central_erasures"}
            if central:  # first: the rows read after it are at least those (as ``load``)
                tops = Tops(*(int(n) for n in db.execute(_TOPS).fetchone()))
            if tops is None or (after is not None and not tops.grown_from(after)):
                after = None
            for row in db.execute(
                _ERASURES.format(also=also) + " WHERE rowid > ?", (after.own if after else 0,)
            ):
                _note(since, *row)
                read += 1
            if central:
                for key, ts in db.execute(_CENTRAL + " WHERE id > ?", (after.central if after else 0,)):
                    since[key] = max(since.get(key, ""), ts)
                    read += 1
        erased = cls(since)
        erased.tops, erased.rows_read, erased.whole = tops, read, after is None
        return erased

    def merge(self, newer: Erased) -> Erased:
        """``newer`` when it was read whole; else this, with the rows ``newer`` read past it
        merged in (each key at the later of its two times) and how far it read. In place: a
        holder of this that must keep what it knew takes a copy (``gateway import``'s first)."""
        if newer.whole:
            return newer
        for key, ts in newer.since.items():
            if ts > self.since.get(key, ""):
                self.since[key] = ts
        self.newest = max(self.newest, newer.newest)
        self.tops, self.rows_read = newer.tops, newer.rows_read
        return self

    @classmethod
    async def load(cls, db: aiosqlite.Connection, was: Erased | None = None) -> tuple[int, Erased]:
        """On an open connection to a migrated store: how far the erasures go (``MARK``), and
        ``Erased`` of at least those (read after the mark, so never of fewer: an erasure stored
        between the two reads is in the second, and the next look at the mark finds it moved).

        ``was``: what an earlier ``load`` answered. Both tables only grow, so only their rows
        past ``was.tops`` are read (an ``erasures`` rowid, a ``central_erasures`` id larger than
        it read), merged into ``was`` (each key at the later of its two times) and ``was``
        answered: a reload costs the erasures stored since, not all of them. Read whole as a new
        ``Erased`` when ``was`` is None, or when either table's largest id or count went back
        (rows deleted, not by this gateway: ``Tops.grown_from``)."""
        async with db.execute(_TOPS) as cursor:
            row = await cursor.fetchone()
        tops = Tops(*(int(n) for n in row)) if row else Tops()
        after = was.tops if was is not None and was.tops is not None else None
        if after is not None and not tops.grown_from(after):
            after = None
        since: dict[str, str] = {}
        read = 0
        own, central = (after.own, after.central) if after is not None else (0, 0)
        async with db.execute(_ERASURES.format(also="also_keys") + " WHERE rowid > ?", (own,)) as cursor:
            async for row in cursor:
                _note(since, *row)
                read += 1
        async with db.execute(_CENTRAL + " WHERE id > ?", (central,)) as cursor:
            async for key, ts in cursor:
                since[key] = max(since.get(key, ""), ts)
                read += 1
        newer = cls(since)
        newer.tops, newer.rows_read, newer.whole = tops, read, after is None
        # Merged only now, every row read: a failed read leaves ``was`` as it was.
        return tops.mark, newer if was is None else was.merge(newer)

    def late(self, event: Event) -> bool:
        """Whether ``event`` is about an erased user (or a visitor erased with one) and dated at
        or before that erasure."""
        ts = getattr(event, "ts", None)
        if ts is None or not self.since:  # a daily count is no one's
            return False
        for name in ("visitor_key", "user_key"):
            key = getattr(event, name, None)
            if key is not None and ts <= self.since.get(key, ""):
                return True
        return False

    def late_in(self, events: Sequence[Event]) -> list[Event]:
        """The late ones of ``events`` (of the types ``PEOPLE``): usually none, found at one
        comparison of text a row (its time against the latest erasure's)."""
        newest = self.newest
        if not newest:
            return []
        return [e for e in events if isinstance(e, PEOPLE) and e.ts <= newest and self.late(e)]

    def keep(self, events: list[Event]) -> tuple[list[Event], int]:
        """``events`` less the late ones; how many were left out."""
        if not self.since:
            return events, 0
        kept = [e for e in events if not self.late(e)]
        return kept, len(events) - len(kept)


def _note(since: dict[str, str], ts: str, user_key: str, visitors: str | None, also_keys: str | None) -> None:
    """One ``erasures`` row into ``since``: each key it erased, at its time if the latest."""
    for key in (user_key, *json.loads(visitors or "[]"), *json.loads(also_keys or "[]")):
        since[key] = max(since.get(key, ""), ts)


def _tables(db: sqlite3.Connection) -> set[str]:
    return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _mark(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return int(db.execute(_mark_sql(_tables(db))).fetchone()[0])


class ErasedWatch:
    """``Erased`` of a store, read again only when an erasure was stored since the last look
    (by any process: the admin API's erasures are worker 0's), and then only the erasures past
    what it read (``Erased.read`` given ``after``, merged on the event loop), as the store's
    writer reads them (``Erased.load``): until 2026-12-07 it read them all again each time.

    The look (``MARK``) goes through one connection kept open (``_look``): until 2026-12-07 each
    look opened a connection of its own, whose first statement parsed the store's whole schema,
    some 2 million instructions a signed event (half its cost). A connection in autocommit mode
    reads the latest commit of any process at each statement, as a new one does; the file is
    checked by its device and inode at each look, and a file put in the store's place is opened
    anew, as a new connection would have opened it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen = -1
        self.erased = Erased()
        self._db: sqlite3.Connection | None = None
        self._file: tuple[int, int] | None = None
        self._lock = threading.Lock()  # looks run on the default executor's threads; close takes it too
        self._finalizer: Callable[[], object] | None = None
        self._closed = False

    def _look(self) -> int:
        """``MARK`` through the kept connection (opened, or opened again, as the file needs); once
        closed, through a connection of its own closed at once (as each look did before)."""
        with self._lock:
            if self._closed:
                return _mark(self.path)
            try:
                info = os.stat(self.path)
            except OSError:
                self._forget()
                return _mark(self.path)  # as each look did: what connecting to it does
            file = (info.st_dev, info.st_ino)
            if self._db is None or file != self._file:
                self._forget()
                db = sqlite3.connect(self.path, check_same_thread=False)
                self._db, self._file = db, file
                self._finalizer = weakref.finalize(self, db.close)
            try:
                try:
                    rows = self._db.execute(MARK).fetchall()  # whole: no read left open
                except sqlite3.OperationalError as err:
                    if "central_erasures" not in str(err):
                        raise
                    rows = self._db.execute(OWN_MARK).fetchall()
            except BaseException:
                self._forget()  # opened anew at the next look
                raise
            return int(rows[0][0]) if rows else 0

    def _forget(self) -> None:
        """Closes the kept connection, the lock held (the next look opens one again)."""
        if self._finalizer is not None:
            self._finalizer()
        self._db = self._file = self._finalizer = None

    def close(self) -> None:
        """Closes the kept connection for good, once no look is using it (until 2026-12-07 without
        the lock: a look in flight could have its connection closed under it, and a look after
        this opened it again, left for garbage collection to close; at shutdown the store's close
        is to be the last). A look after this still answers, through a connection of its own."""
        with self._lock:
            self._closed = True
            self._forget()

    async def current(self) -> Erased:
        mark = await asyncio.to_thread(self._look)
        if mark != self.seen:
            after = self.erased.tops if self.seen >= 0 else None
            newer = await asyncio.to_thread(Erased.read, self.path, after=after)
            self.erased = self.erased.merge(newer)
            self.seen = mark
        return self.erased
