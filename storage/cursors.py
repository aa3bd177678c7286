"""Durable readers of the local event log: per-reader, per-table cursors and the batches after them.

Owns the ``sync_cursors`` table (local migration 0005). A cursor is the SQLite
``rowid`` of the last row a reader delivered: rowids grow in insertion order,
so a row written late with an old UUIDv7 (a backfill, a clock step) is still
read; an ``id > cursor`` reader would skip it. Moving a cursor is a
compare-and-set, so two readers of one cursor (the gateway's sync task and a
``gateway sync --once`` from cron) never move it backwards or past a row
neither delivered; at worst a batch is delivered twice, which every
destination ignores (``ON CONFLICT DO NOTHING``, deterministic message IDs).

SQLite reuses the largest rowid of a table once that row is deleted, so an
erasure or a retention purge that deletes the newest rows would let the next
insert take a rowid already behind a cursor; ``clamp_cursors`` (run by both,
inside their transaction) pulls every cursor back to the table's largest
remaining rowid. It also moves every cursor's version (its ``updated`` time), on
which each move is a compare-and-set too: a reader whose batch was in flight
during the delete (it read rows since deleted, so the end of its batch may lie
past every remaining row) fails to move its cursor and reads again from where
the clamp left it, instead of moving it past rowids the next inserts take.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from gateway.events import iso
from gateway.metrics import Metrics


def cursor_name(reader: str, table: str) -> str:
    return f"{reader}:{table}"


async def local_columns(db: aiosqlite.Connection, table: str) -> list[str]:
    """The table's columns in the local store (empty when the table does not exist)."""
    async with db.execute(f"PRAGMA table_info({_safe(table)})") as cursor:
        return [row[1] for row in await cursor.fetchall()]


def _safe(name: str) -> str:
    """Table and column names come from our schema; refuse anything else reaching SQL text."""
    if not name.replace("_", "").isalnum() or not name.isascii():
        raise ValueError(f"not a plain SQL name: {name!r}")
    return name


async def position(db: aiosqlite.Connection, name: str) -> int:
    async with db.execute("SELECT position FROM sync_cursors WHERE name = ?", (name,)) as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def cursor_at(db: aiosqlite.Connection, name: str) -> tuple[int, str | None]:
    """The cursor's position and version (``advance`` compares both). A cursor not there yet
    is made first, at 0, so that a delete during its first batch moves its version too."""
    async with db.execute("SELECT position, updated FROM sync_cursors WHERE name = ?", (name,)) as cursor:
        row = await cursor.fetchone()
    if row is None:
        await db.execute(
            "INSERT INTO sync_cursors (name, position, updated) VALUES (?, 0, NULL) ON CONFLICT DO NOTHING",
            (name,),
        )
        return await cursor_at(db, name)
    return int(row[0]), row[1]


ADVANCE_TRIES = 20
"""Attempts to move a cursor when SQLite reports the file locked (about 2 s in all)."""


async def advance(db: aiosqlite.Connection, name: str, old: int, new: int, version: str | None) -> str | None:
    """Move the cursor from ``old`` (at ``version``, as ``cursor_at`` read it) to ``new``: its
    new version; None when someone else moved it meanwhile, or a delete clamped it."""
    now = iso(datetime.now(UTC))
    for attempt in range(ADVANCE_TRIES):
        try:
            cursor = await db.execute(
                "UPDATE sync_cursors SET position = ?, updated = ?"
                " WHERE name = ? AND position = ? AND updated IS ?",
                (new, now, name, old, version),
            )
            return now if cursor.rowcount == 1 else None
        except sqlite3.OperationalError as err:
            # The next batch's read may hold an older snapshot on this connection while another
            # process committed: SQLite refuses the write at once (no busy wait). It ends soon.
            if "locked" not in str(err) or attempt == ADVANCE_TRIES - 1:
                raise
            await asyncio.sleep(0.01 * (attempt + 1))
    return None


async def read_after(
    db: aiosqlite.Connection, table: str, columns: Sequence[str], after: int, limit: int
) -> tuple[list[tuple[Any, ...]], int]:
    """Up to ``limit`` rows of ``table`` inserted after rowid ``after``, in insertion order,
    and the rowid of the last one (``after`` when there are none)."""
    cols = ", ".join(_safe(c) for c in columns)
    sql = f"SELECT rowid, {cols} FROM {_safe(table)} WHERE rowid > ? ORDER BY rowid LIMIT ?"
    async with db.execute(sql, (after, limit)) as cursor:
        rows = list(await cursor.fetchall())
    if not rows:
        return [], after
    return [tuple(row[1:]) for row in rows], int(rows[-1][0])


async def lag(db: aiosqlite.Connection, table: str, after: int, clock: WriteClock) -> tuple[int, float]:
    """Rows not yet delivered, and seconds they have waited since written (``WriteClock``; 0
    when none)."""
    name = _safe(table)
    async with db.execute(f"SELECT count(*) FROM {name} WHERE rowid > ?", (after,)) as cursor:
        row = await cursor.fetchone()
    count = int(row[0]) if row else 0
    if not count:
        return 0, 0.0
    return count, await clock.oldest_age(db, table, after)


IMPORTED = frozenset({"touchpoints", "identities", "conversions"})
"""Tables whose rows an import run records (``import_rows``, migration 0016)."""

MARKS = 4096
"""Most sightings ``WriteClock`` keeps a table; past it, every other older one is dropped (a
row's bounds widen, never turn wrong)."""


class WriteClock:
    """When the rows a reader has not delivered were written to the local store, as far as the
    reader can tell, for the age in ``gateway_sync_lag_seconds``. A row keeps its event's time
    (``ts``), which after a backfill (``gateway import`` of old logs), or a webhook carrying an
    old timestamp, is long before it was written: read as the age, it showed days of lag for
    rows that waited seconds. Rows are written in rowid order, so each time the reader looks
    (every ``interval_seconds``, at most 5 s apart, and after each batch) it notes the table's
    largest rowid and the time: a row first seen at one look was written after the look before
    it and by that one. Its age is then the time since ``ts``, kept within those bounds: exact
    for a live row (written as it happened), at most one look early for an old one. A row
    already there at the reader's first look (a restart, ``gateway sync --once``) was written
    by then, and no earlier than the start of the import run that added it (``import_runs``),
    if one did; other rows of that kind read their ``ts`` as before. One per reader, in memory."""

    def __init__(self) -> None:
        self._seen: dict[str, list[tuple[int, float]]] = {}
        """table → (largest rowid, when seen), in order."""
        self._first: dict[str, tuple[int, float]] = {}
        """table → its largest rowid at the reader's first look, and when."""
        self._started: dict[str, tuple[str, float | None]] = {}
        """table → (row id, the start of the import run that added it): the last one looked up."""

    def observe(self, table: str, top: int, now: float) -> None:
        """The table's largest rowid is ``top`` at ``now``."""
        seen = self._seen.setdefault(table, [])
        self._first.setdefault(table, (top, now))
        # The newest rows deleted (an erasure, a purge, an undo): the next inserts take their
        # rowids again, written from now on, not when those were seen.
        while seen and seen[-1][0] > top:
            seen.pop()
        if seen and seen[-1][0] == top:
            return
        seen.append((top, now))
        if len(seen) > MARKS:
            # Every other one dropped, the newest kept: a row's bounds widen (its age may read up
            # to that much more), never exclude the time it was written.
            seen[:] = seen[-1::-2][::-1]

    def bounds(self, table: str, rowid: int) -> tuple[float | None, float] | None:
        """When row ``rowid`` was written, as (not before, by); ``not before`` None for a row
        there at the reader's first look. None when no look saw it yet (written since the last)."""
        seen = self._seen.get(table, [])
        i = bisect.bisect_left(seen, rowid, key=lambda mark: mark[0])
        if i == len(seen):
            return None
        first_top, first_time = self._first[table]
        if rowid <= first_top:
            return None, seen[i][1]
        return (seen[i - 1][1] if i else first_time), seen[i][1]

    async def oldest_age(
        self, db: aiosqlite.Connection, table: str, after: int, top: int | None = None
    ) -> float:
        """Seconds since the first row after ``after`` was written (0 when none), as far as the
        looks tell (``top``: the table's largest rowid, when the caller has it): seeks only,
        however many rows wait."""
        now = time.time()
        self.observe(table, await _top(db, table) if top is None else top, now)
        name = _safe(table)
        sql = f"SELECT rowid, ts, id FROM {name} WHERE rowid > ? ORDER BY rowid LIMIT 1"
        async with db.execute(sql, (after,)) as cursor:
            first = await cursor.fetchone()
        if first is None:
            return 0.0
        bounds = self.bounds(table, int(first[0]))
        if bounds is None:
            return 0.0  # written since the look just made
        not_before, by = bounds
        if not_before is None and table in IMPORTED:
            not_before = await self._import_started(db, table, str(first[2]))
        written = datetime.fromisoformat(str(first[1])).timestamp()
        if not_before is not None:
            written = max(written, not_before)
        return max(now - min(written, by), 0.0)

    async def _import_started(self, db: aiosqlite.Connection, table: str, row_id: str) -> float | None:
        """When the import run that added row ``row_id`` of ``table`` started; None when no run
        recorded it (a live row, or a run older than migration 0016). One seek per run."""
        last = self._started.get(table)
        if last is not None and last[0] == row_id:
            return last[1]
        sql = (
            "SELECT started FROM import_runs AS run WHERE EXISTS"
            " (SELECT 1 FROM import_rows WHERE run = run.id AND tbl = ? AND id = ?) ORDER BY id LIMIT 1"
        )
        try:
            async with db.execute(sql, (table, row_id)) as cursor:
                row = await cursor.fetchone()
        except sqlite3.OperationalError:  # a store without the import tables
            row = None
        started = datetime.fromisoformat(str(row[0])).timestamp() if row else None
        self._started[table] = (row_id, started)
        return started


async def publish_lag(
    db: aiosqlite.Connection,
    metrics: Metrics,
    reader: str,
    tables: Sequence[str],
    clock: WriteClock,
    *,
    count: bool = True,
) -> dict[str, tuple[int, float]]:
    """``reader``'s lag per table in ``/metrics``: the rows it has not delivered and how long
    the oldest has waited since written (``clock``); table → (rows, seconds). ``count=False``:
    for between attempts, seeks only (counting takes as long as the rows are many): the rows
    from the table's largest rowid, as ``publish_progress`` takes them (rows deleted since the
    last count are counted until the next), so rows written during a long backoff show at once,
    not at the next attempt."""
    found = {}
    for table in tables:
        after = await position(db, cursor_name(reader, table))
        if count:
            rows, seconds = await lag(db, table, after, clock)
        else:
            top = await _top(db, table)
            rows, seconds = max(top - after, 0), await clock.oldest_age(db, table, after, top)
        metrics.sync_lag_rows.labels(reader, table).set(rows)
        metrics.sync_lag_seconds.labels(reader, table).set(seconds)
        found[table] = (rows, seconds)
    return found


async def publish_progress(
    db: aiosqlite.Connection, metrics: Metrics, reader: str, table: str, position: int, clock: WriteClock
) -> int:
    """After each batch a reader delivered, its lag as it now is (a few seeks, however many rows
    wait): the rows after ``position`` from the table's largest rowid (rows deleted since are
    counted until the next ``publish_lag`` counts them) and how long the oldest has waited
    (``clock``). A backlog being worked through shows going down, batch by batch, not only once
    the round is over. Returns the rows."""
    top = await _top(db, table)
    rows = max(top - position, 0)
    metrics.sync_lag_rows.labels(reader, table).set(rows)
    metrics.sync_lag_seconds.labels(reader, table).set(await clock.oldest_age(db, table, position, top))
    return rows


async def table_tops(db: aiosqlite.Connection) -> dict[str, int]:
    """The largest rowid (0 when empty) of each table a cursor reads: taken before deletes,
    for ``clamp_cursors``."""
    read = {name.rpartition(":")[2] for name in await _cursor_names(db)}
    async with db.execute("SELECT name FROM sqlite_master WHERE type = 'table'") as cursor:
        tables = [row[0] for row in await cursor.fetchall() if row[0] in read]
    return {table: await _top(db, table) for table in tables}


async def clamp_cursors(db: aiosqlite.Connection, before: dict[str, int]) -> None:
    """Inside the caller's write transaction, after its deletes (``before``: ``table_tops``
    taken before them): for each table whose largest rowid went down — the next inserts will
    take rowids again that readers may have read up to — no cursor past the new largest, and
    every cursor of it at a new version, so that no batch read before the deletes moves one
    (``advance``). A table whose newest row stayed frees no rowid a reader could skip."""
    now = iso(datetime.now(UTC))
    names = await _cursor_names(db)
    for table, top in before.items():
        remaining = await _top(db, table)
        if remaining >= top:
            continue
        for name in names:
            if name.rpartition(":")[2] == table:
                await db.execute(
                    "UPDATE sync_cursors SET updated = ?, position = min(position, ?) WHERE name = ?",
                    (now, remaining, name),
                )


async def _cursor_names(db: aiosqlite.Connection) -> list[str]:
    async with db.execute("SELECT name FROM sync_cursors") as cursor:
        return [row[0] for row in await cursor.fetchall()]


async def _top(db: aiosqlite.Connection, table: str) -> int:
    """The table's largest rowid; 0 when it is empty."""
    async with db.execute(f"SELECT coalesce(max(rowid), 0) FROM {_safe(table)}") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


COUNT_UP_TO = 100_000
"""Most waiting rows of a table ``waiting_rows`` counts one by one; past it, the table's largest
rowid less the cursor stands for them (rows deleted after the cursor counted too)."""


@dataclass(frozen=True)
class Waiting:
    """One table's rows a reader has not delivered yet, as ``waiting_rows`` reads them."""

    rows: int
    exact: bool
    """False: more than ``COUNT_UP_TO``, taken from the table's largest rowid."""
    oldest: datetime
    """The ``ts`` of the first row after the cursor (its event's time: a backfill's is old)."""
    moved: datetime | None
    """When the reader's cursor last moved (a delivery, or a delete clamping it); None: never."""


def waiting_rows(path: Path, reader: str, tables: Sequence[str]) -> dict[str, Waiting] | None:
    """``reader``'s rows not delivered yet in the store at ``path``, per table that has any:
    a few seeks on the rowid and at most ``COUNT_UP_TO`` rows counted a table, however large the
    backlog. None when the file or its ``sync_cursors`` is not there. Blocking and read only
    (``gateway doctor``; run it in a thread from a loop)."""
    from storage.local import read_only

    if not path.is_file():
        return None
    found = {}
    with contextlib.closing(read_only(path)) as db:
        names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "sync_cursors" not in names:
            return None
        for table in [t for t in tables if t in names]:
            name = _safe(table)
            row = db.execute(
                "SELECT position, updated FROM sync_cursors WHERE name = ?", (cursor_name(reader, table),)
            ).fetchone()
            after, moved = (int(row[0]), row[1]) if row else (0, None)
            first = db.execute(
                f"SELECT ts FROM {name} WHERE rowid > ? ORDER BY rowid LIMIT 1", (after,)
            ).fetchone()
            if first is None:
                continue
            sql = f"SELECT count(*) FROM (SELECT 1 FROM {name} WHERE rowid > ? LIMIT ?)"
            rows = int(db.execute(sql, (after, COUNT_UP_TO + 1)).fetchone()[0])
            if exact := rows <= COUNT_UP_TO:
                count = rows
            else:
                top = int(db.execute(f"SELECT max(rowid) FROM {name}").fetchone()[0])
                count = max(top - after, rows)
            found[table] = Waiting(
                count,
                exact,
                _utc(str(first[0])),
                _utc(str(moved)) if moved else None,
            )
    return found


def _utc(text: str) -> datetime:
    when = datetime.fromisoformat(text)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
