"""The listings' commit-order feed (``order=stored`` on ``/api/touchpoints`` and
``/api/conversions``): rows in the order they were stored, for a program that follows new rows
(an incremental export) and must get every one exactly once.

Pages by the SQLite ``rowid``, not the id: SQLite takes one write transaction at a time, and
gives a new row the table's largest rowid + 1, so a row committed later has a larger rowid
however early its id sorts (another worker process's row of the same millisecond, a signed
event dated back, an import). An ``id > cursor`` follower skips those; a rowid one does not.

The tables have no ``AUTOINCREMENT``: once the newest rows are deleted (an erasure, a purge, an
import undone), the next inserts take their rowids again, behind a follower's cursor. Local
migration 0022 notes each such delete in ``feed_drops`` (a trigger: the table, and the largest
rowid left; every row above it then is new). A cursor (``StoredCursor``) carries the table it
pages (each table has its own rowids: one's cursor means nothing in the other), the rowid it
stopped at, the largest ``feed_drops.seq`` its page saw, and the id of the row at that rowid;
the next page starts from the lowest ``below`` noted since, if lower. All of it is read in one
statement, so one snapshot: rowids, drops and rows agree. A store that went back behind the
cursor (restored from a backup, its rows renumbered by a ``VACUUM``) is refused
(``CursorLost``), not paged from where the cursor's rowid now points.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite

STORED_CURSOR = "stored."
"""What starts the cursor of an ``order=stored`` listing page (then the table it pages:
``stored.touchpoints.…``, ``stored.conversions.…``)."""
FEED_TABLES = ("touchpoints", "conversions")
"""The tables followed in the order stored; each is its listing's (``/api/<table>``)."""
_MAX = 2**63 - 1
_FORM = re.compile(
    rf"stored\.({'|'.join(FEED_TABLES)})\.([0-9]{{1,19}})\.([0-9]{{1,19}})"
    r"(?:\.([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}))?"
)


DROPS_NOTED = "(SELECT coalesce(max(seq), 0) FROM feed_drops)"
"""SQL: the number of the last delete of the newest rows noted (``feed_drops.seq``; 0: none)."""


def resumed_at(table: str) -> str:
    """SQL: where a walk of ``table`` in rowid order goes on from, having read up to a rowid
    (the first ``?``, again the third) when ``DROPS_NOTED`` was the second ``?``: there, or
    below it where a delete of the newest rows since left the table's end (every row above that
    is new, however low its rowid). ``order=stored`` pages and ``gateway reclassify`` walk so."""
    assert table in FEED_TABLES
    return f"min(?, coalesce((SELECT min(below) FROM feed_drops WHERE tbl = '{table}' AND seq > ?), ?))"


class CursorLost(Exception):
    """The store no longer holds the rows an ``order=stored`` cursor was given after: it went
    back (a backup restored) or its rowids were renumbered (a ``VACUUM``)."""


@dataclass(frozen=True)
class StoredCursor:
    table: str
    """The table paged (one of ``FEED_TABLES``): its listing's alone."""
    position: int
    """The rowid of the last row delivered (or passed: a filtered page ends at the table's end)."""
    drops: int
    """The largest ``feed_drops.seq`` the page saw."""
    at: str | None = None
    """The id of the row at ``position`` then (None: none, an empty table)."""

    @classmethod
    def parse(cls, text: str) -> StoredCursor | None:
        """The cursor ``text`` spells, or None when it is not one this API gave."""
        match = _FORM.fullmatch(text)
        if match is None:
            return None
        position, drops = int(match.group(2)), int(match.group(3))
        if position > _MAX or drops > _MAX:
            return None
        return cls(match.group(1), position, drops, match.group(4))

    def text(self) -> str:
        at = f".{self.at}" if self.at else ""
        return f"{STORED_CURSOR}{self.table}.{self.position}.{self.drops}{at}"


def _feed_sql(table: str, select_from: str, where: Sequence[str], bounded: bool) -> str:
    """One statement: the feed's state (``_feed_*``) and the page's rows (``_stored``, then the
    rows of ``select_from``, a view or table of ``table``'s rows by ``id``), at least one row
    (the state alone, its row columns NULL, when the page is empty). Arguments, in order:
    position, drops, position, position, [upto's position, drops, position (``bounded``)],
    ``where``'s, limit."""
    assert table in FEED_TABLES and select_from in ("effective_touchpoints", "conversions")
    # A download's end: the newest row as it began, or lower where the newest rows were deleted
    # since (the rows above that are new: the next download, from ``upto``, reads them).
    end = f", {resumed_at(table)} AS _feed_end" if bounded else ""
    conditions = [
        "rowid > (SELECT _feed_start FROM feed)",
        *(["rowid <= (SELECT _feed_end FROM feed)"] if bounded else []),
        *where,
    ]
    return (
        "WITH feed AS (SELECT"
        f" {DROPS_NOTED} AS _feed_drops, {resumed_at(table)} AS _feed_start,"
        f" (SELECT id FROM {table} WHERE rowid = ?) AS _feed_at,"
        f" (SELECT rowid FROM {table} ORDER BY rowid DESC LIMIT 1) AS _feed_top,"
        f" (SELECT id FROM {table} ORDER BY rowid DESC LIMIT 1) AS _feed_top_id{end}),"
        f" page AS (SELECT rowid AS _stored, id AS _id FROM {table} WHERE {' AND '.join(conditions)}"
        " ORDER BY rowid LIMIT ?)"
        f" SELECT feed.*, r.* FROM feed LEFT JOIN (SELECT page._stored, e.* FROM page"
        f" JOIN {select_from} e ON e.id = page._id) AS r ORDER BY r._stored"
    )


async def feed_page(
    db: aiosqlite.Connection,
    table: str,
    select_from: str,
    where: Sequence[str],
    args: Sequence[Any],
    cursor: StoredCursor | None,
    limit: int,
    upto: StoredCursor | None = None,
) -> tuple[list[dict[str, Any]], StoredCursor | None]:
    """Up to ``limit`` rows of ``table`` (as ``select_from`` shows them) under ``where``, stored
    after ``cursor``, in the order stored, and the cursor after them. Without ``upto`` (a page):
    the next cursor is always there (after the last row, or at the table's end once fewer than
    ``limit`` followed: ask with it later for the rows stored since). With ``upto`` (a
    download, ``feed_head`` taken as it began): rows stored up to it only (up to the lowest
    rowid left by a delete of the newest rows since it began, if lower: the rows above it are
    new, which the next download, from ``upto``, reads), the next cursor None once they are all
    read. Raises
    ``CursorLost`` for a store that went back behind ``cursor``."""
    assert cursor is None or cursor.table == table, "a cursor of another table"
    given = cursor or StoredCursor(table, 0, 0)  # before the first row ever stored
    sql = _feed_sql(table, select_from, where, upto is not None)
    bound = [] if upto is None else [upto.position, upto.drops, upto.position]
    params = [given.position, given.drops, given.position, given.position, *bound, *args, limit + 1]
    async with db.execute(sql, params) as rows_cursor:
        rows = [dict(row) for row in await rows_cursor.fetchall()]
    state = rows[0]
    drops, start, top = int(state["_feed_drops"]), int(state["_feed_start"]), state["_feed_top"] or 0
    moved = start == given.position and (
        top < given.position or (given.at is not None and state["_feed_at"] not in (None, given.at))
    )
    if drops < given.drops or moved:
        raise CursorLost(
            "cursor: this store no longer holds the rows this cursor was given after (restored from"
            " a backup, or its rows renumbered by a VACUUM); start again without cursor, from since"
            " a little before the newest ts you have, dropping the ids you already have"
        )
    items = [
        {k: v for k, v in row.items() if not k.startswith("_feed_") and k != "_stored"}
        for row in rows
        if row["_stored"] is not None
    ]
    if len(items) > limit:
        last = rows[limit - 1]
        return items[:limit], StoredCursor(table, int(last["_stored"]), drops, str(last["id"]))
    if upto is not None:
        return items, None
    at = state["_feed_top_id"] if top >= start else None
    return items, StoredCursor(table, max(int(top), start), drops, at)


async def feed_head(db: aiosqlite.Connection, table: str) -> StoredCursor:
    """The cursor at ``table``'s newest row now: where a download in stored order ends, and
    whence the next one goes on."""
    assert table in FEED_TABLES
    sql = (
        f"SELECT {DROPS_NOTED},"
        f" (SELECT rowid FROM {table} ORDER BY rowid DESC LIMIT 1),"
        f" (SELECT id FROM {table} ORDER BY rowid DESC LIMIT 1)"
    )
    async with db.execute(sql) as cursor:
        row = await cursor.fetchone()
    assert row is not None
    return StoredCursor(table, int(row[1] or 0), int(row[0]), row[2])
