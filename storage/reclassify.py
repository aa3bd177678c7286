"""Recomputing the channel of stored touchpoints after a rule change (``gateway reclassify``).

Reads the touchpoints' campaign fields in the order they were written (rowid) and rewrites
only their ``channel`` column, one batch per short transaction, so a gateway running on the
same file keeps writing meanwhile. Nothing else is changed; a dry run writes nothing at all. The same for a
node's store and for the reporting mirror (``storage.mirror``: the local store's schema, its
writer the mirror rounds). Nothing the reports keep between reports depends on a channel
(only the bindings, by migration 0009's counters), so no kept state needs telling.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import aiosqlite

from gateway.channels import INTERNAL, Channels, Signals
from storage.feed import DROPS_NOTED, resumed_at
from storage.migrate import has_table

_FIELDS = ("source", "medium", "campaign", "click_id_kind", "creator_id", "referrer_host")


@dataclass
class Reclassified:
    seen: int = 0
    changed: int = 0
    moves: Counter[tuple[str | None, str]] = field(default_factory=Counter)
    """(old channel, new channel) → touchpoints moved."""


async def has_channel_column(db: aiosqlite.Connection) -> bool:
    async with db.execute("PRAGMA table_info(touchpoints)") as cursor:
        return any(row[1] == "channel" for row in await cursor.fetchall())


async def stored_touchpoints(db: aiosqlite.Connection) -> int:
    """How many touchpoints the store holds (what ``reclassify`` reads)."""
    async with db.execute("SELECT count(*) FROM touchpoints") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def reclassify(
    db: aiosqlite.Connection,
    channels: Channels,
    *,
    batch_size: int = 1000,
    dry_run: bool = False,
    progress: Callable[[int], object] | None = None,
    done: Reclassified | None = None,
    site: str | None = None,
) -> Reclassified:
    """Classify every stored touchpoint again; update those whose channel changed.
    ``progress``: called with the number of touchpoints of each batch once it is done;
    ``done``: counted into as each batch commits (what an interrupted run got through).

    The site's own host is not stored with a touchpoint: a touchpoint recorded ``Internal``
    (a landing from the site's own other host, ``blog.shop.com`` for ``www.shop.com``) keeps
    its referrer as the site's, or every such landing tagged with a campaign would become a
    Referral. A rule, a click ID or campaign fields that now place it still do. Given the
    site's host (``site``: ``--host``, ``proxy.public_origin``), every touchpoint is classified
    as the gateway does with it: an Internal one whose referrer is another site's (a rule giving
    ``Internal``, since removed) is classified again."""
    old = "channel" if await has_channel_column(db) else "NULL"  # a dry run on an old store
    # Pages by rowid, not id: a row written during the scan (another worker process's landing of
    # the same millisecond, a mirror round's or an import's row dated back) takes a larger
    # rowid than every row there, so a page after it reads it, where one by id passed over
    # those whose id sorts before the cursor (until 2026-12-08). Walking the table itself, each
    # row is one read instead of an index entry then its row. Rows keep their rowid (an update
    # leaves it; no insert replaces a row), so none is read twice. Updated by id: a deleted
    # largest rowid is taken again by the next insert, which must not get this row's channel.
    #
    # Deleting the newest rows (an erasure, a purge, an import undone) lets the next inserts take
    # rowids the scan passed: local migration 0022 notes each such delete (``feed_drops``, as
    # ``order=stored`` reads it), and the next page starts below the lowest noted since the
    # last page, if lower (every row above it is new), read in the same statement, so one
    # snapshot (until 2026-12-08 such a row kept its old channel). A store without the table
    # (a dry run on a store not migrated yet) pages by rowid alone.
    noted = await has_table(db, "feed_drops")
    fields = ", ".join(f"t.{field}" for field in (*_FIELDS, old) if field != "NULL")
    columns = f"t.rowid AS rowid, t.id, {fields}" + (", NULL" if old == "NULL" else "")
    start = f"{DROPS_NOTED} AS seq, {resumed_at('touchpoints')} AS start" if noted else "0 AS seq, ? AS start"
    sql = (
        f"WITH d AS (SELECT {start}) SELECT d.seq, d.start, p.* FROM d LEFT JOIN (SELECT {columns}"
        " FROM touchpoints t WHERE t.rowid > (SELECT start FROM d) ORDER BY t.rowid LIMIT ?) AS p"
        " ORDER BY p.rowid"
    )
    done = Reclassified() if done is None else done
    after, seq = 0, 0
    while True:
        args = (after, seq, after, batch_size) if noted else (after, batch_size)
        async with db.execute(sql, args) as cursor:
            read = list(await cursor.fetchall())
        seq = int(read[0][0])  # the notes seen as the page was read (always one row: d's)
        rows = [row[2:] for row in read if row[2] is not None]
        if not rows:
            return done
        updates = []
        moves: Counter[tuple[str | None, str]] = Counter()
        for row in rows:
            signals = Signals(*row[2:8])
            new = channels.classify(signals, site or (signals.referrer_host if row[8] == INTERNAL else None))
            if new != row[8]:
                updates.append((new, row[1]))
                moves[(row[8], new)] += 1
        if updates and not dry_run:
            await db.execute("BEGIN IMMEDIATE")
            try:
                await db.executemany("UPDATE touchpoints SET channel = ? WHERE id = ?", updates)
                await db.execute("COMMIT")
            except BaseException:
                # An interrupt may come as COMMIT ends (it runs on): then there is nothing to undo.
                with contextlib.suppress(sqlite3.OperationalError):
                    await db.execute("ROLLBACK")
                raise
        done.seen += len(rows)
        done.changed += len(updates)
        done.moves.update(moves)
        after = rows[-1][0]
        if progress is not None:
            progress(len(rows))
