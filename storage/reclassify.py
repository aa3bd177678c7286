"""Recomputing the channel of stored touchpoints after a rule change (``gateway reclassify``).

Reads the touchpoints' campaign fields in id order and rewrites only their ``channel``
column, one batch per short transaction, so a gateway running on the same file keeps
writing meanwhile. Nothing else is changed; a dry run writes nothing at all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import aiosqlite

from gateway.channels import Channels, Signals

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
) -> Reclassified:
    """Classify every stored touchpoint again; update those whose channel changed.
    ``progress``: called with the number of touchpoints of each batch once it is done.

    The site's own host is not stored with a touchpoint, so self-referrals are recognised
    here through ``channels.own_domains`` only."""
    old = "channel" if await has_channel_column(db) else "NULL"  # a dry run on an old store
    sql = f"SELECT id, {', '.join(_FIELDS)}, {old} FROM touchpoints WHERE id > ? ORDER BY id LIMIT ?"
    done = Reclassified()
    after = ""
    while True:
        async with db.execute(sql, (after, batch_size)) as cursor:
            rows = list(await cursor.fetchall())
        if not rows:
            return done
        updates = []
        for row in rows:
            new = channels.classify(Signals(*row[1:7]))
            if new != row[7]:
                updates.append((new, row[0]))
                done.moves[(row[7], new)] += 1
        done.seen += len(rows)
        done.changed += len(updates)
        if updates and not dry_run:
            await db.execute("BEGIN IMMEDIATE")
            try:
                await db.executemany("UPDATE touchpoints SET channel = ? WHERE id = ?", updates)
                await db.execute("COMMIT")
            except BaseException:
                await db.execute("ROLLBACK")
                raise
        after = rows[-1][0]
        if progress is not None:
            progress(len(rows))
