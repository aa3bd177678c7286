"""What the admin dashboard draws, read from the local store (never writes): in one call, or
part by part (``PARTS``), so the page draws what is quick first.

Conversions by channel per day and the model comparison come from ``storage/reports.py``
(one read of the period, every model by day, when both are asked for; the same credits the
reports give, ``data_driven`` learning from the whole period as the time series does, and
what it learnt, as the reports' ``learnt`` says it);
top campaigns and creators, bot share, populations and totals are plain aggregates, counted
in one read of the period (``storage/dashboard_landings.py``). Money leaves as
numbers in major units per currency, credited conversions as fractions of one conversion. The
dashboard's script reads this through one module (``gateway/static/data.js``), so it can move
to the report endpoints (``/api/attribution``…) without touching the charts.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

import aiosqlite

from gateway.attribution import MODELS, Learnt, from_minor
from gateway.report_learnt import learnt_part
from storage.crediting import MICRO, ChannelCredit, add_tables, channel_credits
from storage.dashboard_landings import Credited, Landed, Landings, count_landings
from storage.populations import population_counts
from storage.report_period import period_bounds, period_days, window_start
from storage.reports import Reports

MAX_DAYS = 92
"""Longest period one summary covers (one attribution run per day for the daily chart)."""
TOP = 10
"""Rows in the top campaigns and top creators tables."""

# Conversions of the period and every device (visitor) that can have touched them: their own
# visitor, and every visitor bound to their user (the user they were recorded for, or the one
# their visitor is bound to) — the join ``storage/report_conversions.py`` reads for the reports.
_PATHS = """
WITH conv AS (
    SELECT id, ts, visitor_key, user_key FROM conversions
    WHERE ts >= :since AND ts < :until AND (:name IS NULL OR name = :name)
),
users AS (
    SELECT id, user_key FROM conv WHERE user_key IS NOT NULL
    UNION
    SELECT conv.id, i.user_key FROM conv JOIN identities i ON i.visitor_key = conv.visitor_key
),
devices AS (
    SELECT id, visitor_key FROM conv WHERE visitor_key IS NOT NULL
    UNION
    SELECT users.id, i.visitor_key FROM users JOIN identities i ON i.user_key = users.user_key
)
"""


@dataclass(frozen=True)
class Period:
    """Whole days in the report time zone (``attribution.timezone``): ``since`` inclusive,
    ``until`` exclusive."""

    since: date
    until: date

    def days(self, zone: tzinfo) -> list[str]:
        """Its local dates (``period_days``): a date ``zone`` skipped whole is none, so the page
        draws no day that never happened there, as the time series has no row for it."""
        return period_days(_at(self.since, zone), _at(self.until, zone), zone)


def _at(day: date, zone: tzinfo) -> datetime:
    """The day's first moment in ``zone``, in UTC: the lookback windows are counted back from
    it in elapsed time, which arithmetic on a datetime of a zone with daylight saving time
    is not (it counts on the wall clock)."""
    return datetime.combine(day, time.min, tzinfo=zone).astimezone(UTC)


def _credit_rows(rows: list[ChannelCredit]) -> list[dict[str, Any]]:
    return [
        {
            "channel": r.channel,
            "currency": r.currency,
            "conversions": r.conversions / MICRO,
            "value": float(from_minor(r.value, r.currency)),
        }
        for r in rows
    ]


_TOUCHED = {"campaign": "top_campaigns", "creator_id": "top_creators"}
"""The columns the top tables rank, and the summary's key for each."""
_NAMED = {"campaign": "campaigns", "creator_id": "creators"}
"""The columns the top tables rank, by the name ``landed`` counts them under."""


def _touched(
    widest: timedelta, names: dict[str, list[str]], credited: Credited
) -> tuple[str, list[str], dict[str, Any]]:
    """For the given campaigns and creators (column → names), the period's conversions with a
    landing of theirs the reports credit on any of the converter's devices inside the widest
    lookback window before the conversion, as SQL to follow ``_PATHS``: CTEs (to follow
    its own), the selects of rows (column, name, conversions), and their parameters. One join
    of the conversions' devices to their landings serves both columns (each join of its own
    cost 1.2-1.5 s over a million touchpoints; the two together, 1.2 s). The window's edge is
    exact to the microsecond, as the reports read it (``julianday`` rounds to the millisecond:
    a landing 0.3 ms older than the window counted as touching the conversion)."""
    wanted = {column: json.dumps(names.get(column, [])) for column in _TOUCHED}
    lead, join, ok, params = credited.sql(more=True)
    ctes = lead + (
        ", touched AS MATERIALIZED (SELECT d.id, t.campaign, t.creator_id FROM devices d"
        " JOIN conv c ON c.id = d.id JOIN touchpoints t ON t.visitor_key = d.visitor_key"
        f" AND t.ts <= c.ts AND t.ts >= :from AND {_WITHIN}"
        f"{join} WHERE {ok} AND (t.campaign IN (SELECT value FROM json_each(:campaign))"
        " OR t.creator_id IN (SELECT value FROM json_each(:creator_id)))) "
    )
    selects = [
        f"SELECT '{column}', {column}, count(DISTINCT id) FROM touched"
        f" WHERE {column} IN (SELECT value FROM json_each(:{column})) GROUP BY 2"
        for column in _TOUCHED
    ]
    return ctes, selects, {**wanted, **params, **_window(widest)}


def _micros(column: str) -> str:
    """SQL: a stored timestamp (``2026-11-25T14:00:00.000000Z``) as microseconds since 1970,
    exactly (``julianday`` is a float: about 50 µs apart in this century)."""
    return (
        f"(CAST(strftime('%s', substr({column}, 1, 19)) AS INTEGER) * 1000000"
        f" + CAST(substr({column}, 21, 6) AS INTEGER))"
    )


_EDGE = timedelta(milliseconds=2)
"""How far from the window's edge ``julianday`` can be wrong: it reads a time to the
millisecond, and its floats are about 50 µs apart in this century."""

_WITHIN = (
    "julianday(c.ts) - julianday(t.ts) <= :window_above AND (julianday(c.ts) - julianday(t.ts)"
    f" <= :window_below OR {_micros('c.ts')} - {_micros('t.ts')} <= :window_us)"
)
"""SQL: the touchpoint ``t`` is at most the widest lookback window before the conversion ``c``,
exactly to the microsecond, as the reports read it. ``julianday`` decides every pair more than
``_EDGE`` from the edge; the exact arithmetic, ten times its cost a row, only the few nearer."""


def _window(widest: timedelta) -> dict[str, Any]:
    """``_WITHIN``'s parameters for the widest lookback window."""
    day = timedelta(days=1)
    return {
        "window_above": (widest + _EDGE) / day,
        "window_below": (widest - _EDGE) / day,
        "window_us": widest // timedelta(microseconds=1),
    }


_POPULATION = (
    "SELECT 'population', NULL, count(*) FROM conv c WHERE EXISTS (SELECT 1 FROM devices d JOIN touchpoints t"
    " ON t.visitor_key = d.visitor_key AND t.ts <= c.ts AND t.ts >= :from"
    f" WHERE d.id = c.id AND t.consent = :population AND {_WITHIN})"
)
"""SQL to follow ``_PATHS``: the period's conversions (of the chosen name, if any) that
``:population``'s touchpoints reach: a touchpoint of it (whatever its verdict) on any of the
converter's devices inside the widest lookback window, at or before the conversion. Those a
report of that population reads (``Reports.read``), so those its credits share out, each
whole. Each conversion stops at its first such touchpoint (over a million touchpoints, 30
days: 0.5-0.8 s; counting the distinct conversions of every matching touchpoint took 1.1-1.5 s)."""


async def _reached(
    db: aiosqlite.Connection,
    bounds: dict[str, str | None],
    widest: timedelta,
    names: dict[str, list[str]],
    credited: Credited,
    population: str | None,
) -> tuple[dict[tuple[str, str], int], int | None]:
    """The conversions the top names touched (``_touched``: (column, name) → conversions), and
    those ``population`` reaches (``_POPULATION``; None without a population), in one
    statement: the conversions' devices (``_PATHS``) are found once for both (0.5 s of the
    1.1 s the two took apart over 30 days of a million touchpoints)."""
    ctes, selects = "", list[str]()
    params: dict[str, Any] = dict(bounds)
    if any(names.values()):
        ctes, selects, more = _touched(widest, names, credited)
        params.update(more)
    if population is not None:
        selects.append(_POPULATION)
        params.update(population=population, **_window(widest))
    if not selects:
        return {}, None
    touched: dict[tuple[str, str], int] = {}
    reached: int | None = None
    async with db.execute(_PATHS + ctes + " UNION ALL ".join(selects), params) as cursor:
        for column, name, n in await cursor.fetchall():
            if column == "population":
                reached = int(n)
            else:
                touched[str(column), str(name)] = int(n)
    return touched, reached


async def _conversions(db: aiosqlite.Connection, bounds: dict[str, str | None]) -> tuple[int, list[str]]:
    """The period's conversions (of the chosen name, if any), and its conversion names, most
    frequent first: what the page offers to choose from."""
    sql = "SELECT name, count(*) FROM conversions WHERE ts >= :since AND ts < :until GROUP BY name"
    async with db.execute(sql, bounds) as cursor:
        named = {str(name): int(n) for name, n in await cursor.fetchall()}
    chosen = bounds["name"]
    count = sum(named.values()) if chosen is None else named.get(chosen, 0)
    return count, sorted(named, key=lambda name: (-named[name], name))


PARTS = ("counts", "daily", "models")
"""The parts of a summary, each of which can be asked for alone: ``counts`` (totals, top
campaigns and creators, bot share, populations, conversion names: plain aggregates, quick),
``daily`` (``by_day``: the chosen model's credits per day) and ``models`` (``comparison``:
every model's credits, ``data_driven`` learning from the whole period, and ``learnt``: what
it learnt; the slowest). The
page asks for them separately, so what is quick draws first."""


async def summary(
    db: aiosqlite.Connection,
    reports: Reports,
    model: str,
    period: Period,
    population: str | None = None,
    conversion: str | None = None,
    parts: tuple[str, ...] = PARTS,
) -> dict[str, Any]:
    """What the dashboard page shows for ``period`` under ``model`` (only the given ``parts``,
    see ``PARTS``); the credits of one ``population``'s touchpoints only, when given (see
    ``Reports.read``); the conversions of one name only, when given (credits, totals and the
    conversions the top tables count)."""
    zone = reports.attribution.zone
    since, until = _at(period.since, zone), _at(period.until, zone)
    widest = max(reports.attribution.tiers.windows.values())
    # The reports' bounds (and the ids of the lookback window, whose verdict changes the
    # reports apply by touchpoint id), and the conversion's name.
    bounds: dict[str, str | None] = {
        **period_bounds(since, until, window_start(since, widest)),
        "name": conversion,
    }
    data: dict[str, Any] = {
        "since": period.since.isoformat(),
        "until": period.until.isoformat(),
        "model": model,
        "models": list(MODELS),
        "conversion": conversion,
        "population": population,
    }
    # Both credit parts: one read of the period, every model by day. The credits run in the
    # report workers (or the reports' thread) while this connection counts the rest.
    work: dict[str, Awaitable[Any]] = {}
    if "daily" in parts or "models" in parts:
        models = list(MODELS) if "models" in parts else [model]
        work["credits"] = reports.credit_learnt(
            since, until, models, conversion=conversion, by_day="daily" in parts, population=population
        )
    if "counts" in parts:
        work["counts"] = _counts(db, since, until, bounds, widest, population, reports.attribution.verdicts)
    done = dict(zip(work, await asyncio.gather(*work.values()), strict=True))
    table, learnt = done.get("credits", ({}, None))
    if "daily" in parts:
        daily = channel_credits(table, model)
        days = period.days(zone)
        data["days"] = days  # the chart's days: none that the zone skipped
        data["by_day"] = [{"day": day, **row} for day in days for row in _credit_rows(daily.get(day, []))]
    if "models" in parts:
        every = add_tables([{(None, group, currency): sums} for (_, group, currency), sums in table.items()])
        comparison = []
        for name in MODELS:
            comparison += [{"model": name, **row} for row in _credit_rows(channel_credits(every, name)[None])]
        data["comparison"] = comparison
        if learnt is not None:  # always: the comparison holds data_driven
            data["learnt"] = _learnt(learnt)
    return data | done.get("counts", {})


def _learnt(learnt: Learnt) -> dict[str, Any]:
    """What ``data_driven`` learnt, as the report endpoints' ``learnt`` says it (the same
    journeys, and each channel's removal effect and weight to six decimals, largest weight
    first), its numbers as numbers as the rest of the summary's."""
    part = learnt_part(learnt)
    channels = [
        {
            "channel": row["channel"],
            "removal_effect": float(row["removal_effect"]),
            "weight": float(row["weight"]),
        }
        for row in part["channels"]
    ]
    return {**part, "channels": channels}


async def _counts(
    db: aiosqlite.Connection,
    since: datetime,
    until: datetime,
    bounds: dict[str, str | None],
    widest: timedelta,
    population: str | None,
    verdicts: frozenset[str],
) -> dict[str, Any]:
    """What the dashboard counts in SQL on its own connection: totals, top campaigns and
    creators, bot verdicts, populations; with a ``population``, also the conversions it
    reaches (``population_conversions`` among the totals: those its credits share out).
    Landings (totals and top tables) are those the reports credit (``verdicts``), with how
    many they leave out."""
    landings = await count_landings(db, bounds, verdicts)
    conversions, names = await _conversions(db, bounds)
    top = {column: landings.top(column, TOP) for column in _TOUCHED}
    ranked = {column: [name for name, _ in rows] for column, rows in top.items()}
    touched, reached = await _reached(db, bounds, widest, ranked, landings.credited, population)
    totals = {**_totals(landings.totals), "conversions": conversions}
    if reached is not None:
        totals["population_conversions"] = reached
    return {
        "totals": totals,
        "conversion_names": names,
        **_tops(landings, top, touched),
        "bots": {"scored": landings.scored, "verdicts": landings.verdicts},
        "populations": await population_counts(db, since, until, landings.by_consent),
    }


def _totals(landed: Landed) -> dict[str, int]:
    """The period's landings the reports credit and their distinct visitors, and its landings
    they do not (``not_credited``: a bot verdict outside ``attribution.verdicts``)."""
    return {"touchpoints": landed.landed, "visitors": landed.visitors, "not_credited": landed.excluded}


def _tops(
    landings: Landings, top: dict[str, list[tuple[str, Landed]]], touched: dict[tuple[str, str], int]
) -> dict[str, Any]:
    """The top campaigns and creators, ranked by the landings the reports credit: those
    landings, their distinct visitors, the landings left out (``not_credited``: a bot verdict
    the reports do not credit), and the period's conversions with a credited landing of theirs
    in the converter's path (``_touched``); how many campaigns and creators the period has in all
    (``landed``: the tables show the ``TOP`` of them), and the landings of all of them left
    out (``not_credited``)."""
    return {
        **{
            key: [
                {
                    "name": name,
                    "touchpoints": counts.landed,
                    "visitors": counts.visitors,
                    "not_credited": counts.excluded,
                    "conversions": touched.get((column, name), 0),
                }
                for name, counts in top[column]
            ]
            for column, key in _TOUCHED.items()
        },
        "landed": {_NAMED[column]: len(landings.names[column]) for column in _TOUCHED},
        "not_credited": {
            _NAMED[column]: sum(counts.excluded for counts in landings.names[column].values())
            for column in _TOUCHED
        },
    }
