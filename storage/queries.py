"""Reads of the local store for the admin API: touchpoint listings, visitor and user journeys.

Owns its own connection, used only to read (WAL lets it read while the writer commits).
Returns plain dicts shaped as the admin API answers them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosqlite
import msgspec

from gateway.ids import id_floor
from storage.local import connect

JOURNEY_LIMIT = 1000
"""Most touchpoints a journey answer lists (the first ones); first/last touch and count are exact."""
MAX_USER_VISITORS = 1000
"""Most visitors (devices) a user journey joins."""
TOUCHPOINT_FILTERS = ("source", "medium", "campaign", "creator_id", "visitor_key")
_decode = msgspec.json.Decoder(dict[str, str])


class StoreUnavailable(Exception):
    """The store a reader reads from cannot be reached (the admin API answers 503)."""


@dataclass(frozen=True)
class TouchpointQuery:
    since: str | None = None
    until: str | None = None
    equals: Mapping[str, str] | None = None
    cursor: str | None = None
    limit: int = 100


def _unix_ms(ts: str) -> int:
    """Milliseconds since 1970 as a UUIDv7 can hold them (clamped to 0..2**48-1)."""
    ms = int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)
    return min(max(ms, 0), 2**48 - 1)


def _touchpoint(row: aiosqlite.Row) -> dict[str, Any]:
    item = dict(row)
    item["raw_params"] = _decode.decode(item["raw_params"])
    return item


class Reader:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None

    async def open(self) -> None:
        self._db = await connect(self.path)
        self._db.row_factory = aiosqlite.Row

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()

    @property
    def db(self) -> aiosqlite.Connection:
        assert self._db is not None, "Reader.open() was not awaited"
        return self._db

    async def touchpoints(self, q: TouchpointQuery) -> tuple[list[dict[str, Any]], str | None]:
        """One page in id (= time) order, and the cursor of the next page (None on the last)."""
        if q.limit < 1:
            raise ValueError(f"limit must be at least 1, got {q.limit}")
        where, args = [], []
        # ids are minted from ts (UUIDv7, milliseconds): a time window is an id range, which
        # the primary key serves; the ts test then trims the edges to the microsecond.
        if q.since:
            where += ["id >= ?", "ts >= ?"]
            args += [id_floor(_unix_ms(q.since)), q.since]
        if q.until:
            where += ["id < ?", "ts < ?"]
            args += [id_floor(_unix_ms(q.until) + 1), q.until]
        for column, value in (q.equals or {}).items():
            if column not in TOUCHPOINT_FILTERS:  # the column name goes into the SQL text
                raise ValueError(f"not a touchpoint filter: {column!r} (allowed: {TOUCHPOINT_FILTERS})")
            where.append(f"{column} = ?")
            args.append(value)
        if q.cursor:
            where.append("id > ?")
            args.append(q.cursor)
        sql = "SELECT * FROM touchpoints"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id LIMIT ?"
        async with self.db.execute(sql, [*args, q.limit + 1]) as cursor:
            rows = list(await cursor.fetchall())
        items = [_touchpoint(r) for r in rows[: q.limit]]
        next_cursor = items[-1]["id"] if len(rows) > q.limit else None
        return items, next_cursor

    async def visitor(self, visitor_key: str) -> dict[str, Any] | None:
        """The dual slot (first and last touch) and every touchpoint in time order.

        One index range: the first touch is its first row and is never overwritten by a
        later landing; the last touch is its last row.
        """
        async with self.db.execute(
            "SELECT * FROM touchpoints WHERE visitor_key = ? ORDER BY id LIMIT ?",
            (visitor_key, JOURNEY_LIMIT + 1),
        ) as cursor:
            touches = [_touchpoint(r) for r in await cursor.fetchall()]
        if not touches:
            return None
        truncated = len(touches) > JOURNEY_LIMIT
        last, count = touches[-1], len(touches)
        if truncated:  # a visitor can add rows at will: never load an unbounded journey
            touches = touches[:JOURNEY_LIMIT]
            async with self.db.execute(
                "SELECT * FROM touchpoints WHERE visitor_key = ? ORDER BY id DESC LIMIT 1", (visitor_key,)
            ) as cursor:
                row = await cursor.fetchone()
            last = _touchpoint(row) if row is not None else touches[-1]
            async with self.db.execute(
                "SELECT count(*) FROM touchpoints WHERE visitor_key = ?", (visitor_key,)
            ) as cursor:
                counted = await cursor.fetchone()
            count = int(counted[0]) if counted is not None else len(touches)
        return {
            "visitor_key": visitor_key,
            "first_seen": touches[0]["ts"],
            "last_seen": last["ts"],
            "touch_count": count,
            "first_touch": touches[0],
            "last_touch": last,
            "touchpoints": touches,
            "truncated": truncated,
        }

    async def user(self, user_key: str) -> dict[str, Any] | None:
        """A user's journey: every touchpoint of every visitor bound to them (devices), in time
        order, with first and last touch, their bindings and their conversions. None when the
        store knows nothing of the user."""
        async with self.db.execute(
            "SELECT visitor_key, min(ts) AS first_bound, count(*) AS bindings FROM identities "
            "WHERE user_key = ? GROUP BY visitor_key ORDER BY first_bound LIMIT ?",
            (user_key, MAX_USER_VISITORS),
        ) as cursor:
            visitors = [dict(r) for r in await cursor.fetchall()]
        keys = [v["visitor_key"] for v in visitors]
        marks = ",".join("?" for _ in keys)
        async with self.db.execute(
            f"SELECT * FROM touchpoints WHERE visitor_key IN ({marks}) ORDER BY id LIMIT ?",
            (*keys, JOURNEY_LIMIT + 1),
        ) as cursor:
            touches = [_touchpoint(r) for r in await cursor.fetchall()]
        async with self.db.execute(
            f"SELECT * FROM conversions WHERE user_key = ? OR visitor_key IN ({marks}) ORDER BY id LIMIT ?",
            (user_key, *keys, JOURNEY_LIMIT),
        ) as cursor:
            conversions = [dict(r) for r in await cursor.fetchall()]
        if not visitors and not conversions:
            return None
        truncated = len(touches) > JOURNEY_LIMIT
        last = touches[-1] if touches else None
        if truncated:
            touches = touches[:JOURNEY_LIMIT]
            async with self.db.execute(
                f"SELECT * FROM touchpoints WHERE visitor_key IN ({marks}) ORDER BY id DESC LIMIT 1", keys
            ) as cursor:
                row = await cursor.fetchone()
            last = _touchpoint(row) if row is not None else touches[-1]
        return {
            "user_key": user_key,
            "visitors": visitors,
            "first_touch": touches[0] if touches else None,
            "last_touch": last,
            "touchpoints": touches,
            "conversions": conversions,
            "truncated": truncated,
        }

    async def bad_events(
        self, sender: str | None, pending_only: bool, cursor: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Kept bad events in id order (optionally one sender's, or only those not replayed)."""
        where, args = [], []
        if sender is not None:
            where.append("sender = ?")
            args.append(sender)
        if pending_only:
            where.append("replayed IS NULL")
        if cursor:
            where.append("id > ?")
            args.append(cursor)
        sql = "SELECT id, ts, node, sender, reason, body, truncated, replayed FROM bad_events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        async with self.db.execute(sql + " ORDER BY id LIMIT ?", [*args, limit + 1]) as cur:
            rows = [dict(r) for r in await cur.fetchall()]
        for row in rows:
            row["truncated"] = bool(row["truncated"])
        items = rows[:limit]
        return items, items[-1]["id"] if len(rows) > limit else None
