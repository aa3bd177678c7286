"""The SQL bounds of a report's period, and of the part of it one call computes.

A period is ``since <= ts < until``, and the touches its conversions can credit begin the
widest lookback window earlier (``window_start``). Every read bounds the ids too (UUIDv7,
minted from the time: ``id_floor`` of the millisecond, ``ms``), so SQLite reads a range of the
primary key, not every row. ``period_days`` are the local dates such a period holds (a
date the zone skipped whole is none). ``Part`` names which of the period's conversions one call
computes (``storage/report_parts.py`` cuts them): a slice of them by id, or one worker's share
of the people, whose lone visitors are a range of keys (``key_range``). Pure: SQL text and its
arguments, no database.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta, tzinfo
from typing import Any

from gateway.events import iso
from gateway.ids import id_floor
from storage.people import Share
from storage.report_pool import Slice

Part = Slice | Share
"""Which of a report's conversions one call computes: a slice of them by id, or the share of
one worker's people (``data_driven``, which also counts the journeys that did not convert)."""


def ms(moment: datetime) -> int:
    return min(max(int(moment.timestamp() * 1000), 0), 2**48 - 1)


def window_start(since: datetime, widest: timedelta) -> datetime:
    """The oldest moment a touch can count from for a conversion at or after ``since``: the
    widest window back, in elapsed time. (On a datetime of a zone with daylight saving time,
    ``since - widest`` would count on the wall clock: across a change, an hour short.)"""
    return since.astimezone(UTC) - widest


def period_bounds(since: datetime, until: datetime, start: datetime) -> dict[str, str]:
    return {
        "since": iso(since),
        "until": iso(until),
        "from": iso(start),
        "since_id": id_floor(ms(since)),
        "until_id": id_floor(ms(until) + 1),
        "from_id": id_floor(ms(start)),
    }


def period_conversions(
    since: datetime, until: datetime, conversion: str | None
) -> tuple[str, dict[str, Any]]:
    """The WHERE clause (and its arguments) of the conversions of a period (of one name)."""
    where = "id >= :since_id AND id < :until_id AND ts >= :since AND ts < :until"
    args: dict[str, Any] = {**period_bounds(since, until, since), "name": conversion}
    if conversion is not None:
        where += " AND name = :name"
    return where, args


CONVERSIONS = "SELECT id, ts, value, currency, visitor_key, user_key FROM conversions"


def visitor_column(scan: str) -> str:
    """The visitor key as a condition on it reads under ``scan`` (``Reports._scan``): through
    the visitor index, a key range of it; through the period's range of ids, tested on each
    row (the unary ``+`` keeps SQLite from the index)."""
    return "t.visitor_key" if scan else "+t.visitor_key"


def key_range(share: Share, key: str, bounds: dict[str, Any]) -> str:
    """The SQL condition (and its arguments, into ``bounds``) of a share's range of visitor
    keys, on ``key``: the indexed column, or ``+t.visitor_key`` to keep the index unused."""
    lo, hi = share.keys
    condition = ""
    if lo is not None:
        condition, bounds["lo"] = f" AND {key} >= :lo", lo
    if hi is not None:
        condition, bounds["hi"] = f"{condition} AND {key} < :hi", hi
    return condition


def period_days(since: datetime, until: datetime, zone: tzinfo) -> list[str]:
    """The local dates (in ``zone``) of a period, in order: from the day holding ``since`` to
    the day holding the last microsecond before ``until`` (exclusive). Calendar days, not steps
    of 24 hours: a day of 23 or 25 hours, when the clocks change, is one date, and a date the
    zone skipped whole is none (Pacific/Apia went from 29 to 31 December 2011): its midnight,
    read as a skipped time is, is the next day's."""
    first = since.astimezone(zone).date()
    last = (until - timedelta(microseconds=1)).astimezone(zone).date()
    dates = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    if not dates:  # a period of no instant (``since`` the midnight of a skipped date, as ``until``)
        return []
    starts = [datetime.combine(day, time.min, zone).astimezone(UTC) for day in dates]
    # The last date holds an instant of the period, so it is a day of the zone whatever its
    # midnight: it needs no next day to compare with (past 9999-12-31, east of UTC, none is).
    return [
        day.isoformat()
        for day, start, end in zip(dates, starts, [*starts[1:], None], strict=True)
        if end is None or start < end
    ]
