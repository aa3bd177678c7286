"""What the admin dashboard draws, read from the local store (never writes): in one call, or
part by part (``PARTS``), so the page draws what is quick first.

Conversions by channel per day and the model comparison come from ``storage/reports.py``
(one read of the period, every model by day, when both are asked for; the same credits the
reports give, ``data_driven`` learning from the whole period as the time series does);
top campaigns and creators, bot share and totals are plain aggregates here. Money leaves as
numbers in major units per currency, credited conversions as fractions of one conversion. The
dashboard's script reads this through one module (``gateway/static/data.js``), so it can move
to the report endpoints (``/api/attribution``…) without touching the charts.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

import aiosqlite

from gateway.attribution import MODELS, from_minor
from gateway.events import iso
from storage.crediting import MICRO, ChannelCredit, Table, add_tables, channel_credits
from storage.populations import population_counts
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

    def days(self) -> list[date]:
        return [self.since + timedelta(days=n) for n in range((self.until - self.since).days)]


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


@dataclass(frozen=True)
class Credited:
    """Which of the period's landings the reports credit: those whose effective bot verdict
    (an analyst's override, else the latest re-score, else as scored; unscored: ``allow``) is
    one of ``verdicts`` (``attribution.verdicts``). ``changed``: the period's touchpoints whose
    verdict changed, with their effective verdict (``_bots`` reads them: few)."""

    verdicts: frozenset[str]
    changed: dict[str, str]

    def sql(self, more: bool = False) -> tuple[str, str, str, dict[str, str]]:
        """What a query of ``touchpoints t`` needs to tell a credited landing: a CTE to lead it
        (or nothing; ``more``: to follow other CTEs), a join to put after ``touchpoints t`` (or
        nothing), an SQL expression that is 1 for a credited landing and 0 for another, and
        their parameters. Without a changed verdict in the period (the usual), the stored
        verdict alone: no lookup per row."""
        params = {f"credited_{i}": verdict for i, verdict in enumerate(sorted(self.verdicts))}
        listed = ", ".join(f":{name}" for name in params)
        if not self.changed:
            return "", "", f"(coalesce(t.verdict, 'allow') IN ({listed}))", params
        return (
            (", " if more else "WITH ")
            + "changed(id, verdict) AS MATERIALIZED (SELECT key, value FROM json_each(:changed)) ",
            " LEFT JOIN changed ON changed.id = t.id",
            f"(coalesce(changed.verdict, t.verdict, 'allow') IN ({listed}))",
            {**params, "changed": json.dumps(self.changed)},
        )


async def _landed(
    db: aiosqlite.Connection, column: str, bounds: dict[str, str | None], limit: int, credited: Credited
) -> tuple[list[tuple[str, int, int, int]], int, int]:
    """The campaigns (or creators) of the period most landed on by landings the reports credit:
    (name, credited landings, their distinct visitors, landings not credited); how many names
    the period landed on in all, and the landings of every name not credited (the window
    functions run over the groups, before the limit: one scan)."""
    assert column in _TOUCHED  # goes into the SQL text
    lead, join, ok, params = credited.sql()
    sql = (
        f"{lead}SELECT name, landed, visitors, excluded, count(*) OVER (), sum(excluded) OVER () FROM ("
        f"SELECT t.{column} AS name, sum({ok}) AS landed,"
        f" count(DISTINCT CASE WHEN {ok} THEN t.visitor_key END) AS visitors, sum(NOT {ok}) AS excluded"
        f" FROM touchpoints t{join}"
        f" WHERE t.ts >= :since AND t.ts < :until AND t.{column} IS NOT NULL AND t.{column} != ''"
        f" GROUP BY t.{column}) ORDER BY landed DESC, name LIMIT :limit"
    )
    async with db.execute(sql, {**bounds, **params, "limit": limit}) as cursor:
        rows = list(await cursor.fetchall())
    found = [(str(r[0]), int(r[1]), int(r[2]), int(r[3])) for r in rows]
    return found, int(rows[0][4]) if rows else 0, int(rows[0][5]) if rows else 0


_TOUCHED = {"campaign": "top_campaigns", "creator_id": "top_creators"}
"""The columns the top tables rank, and the summary's key for each."""
_NAMED = {"campaign": "campaigns", "creator_id": "creators"}
"""The columns the top tables rank, by the name ``landed`` counts them under."""


async def _touched(
    db: aiosqlite.Connection,
    bounds: dict[str, str | None],
    window_days: float,
    names: dict[str, list[str]],
    credited: Credited,
) -> dict[tuple[str, str], int]:
    """For the given campaigns and creators (column → names), the period's conversions with a
    landing of theirs the reports credit on any of the converter's devices inside the widest
    lookback window before the conversion: (column, name) → conversions. One join of the conversions' devices
    to their landings serves both columns (each join of its own cost 1.2-1.5 s over a million
    touchpoints; the two together, 1.2 s)."""
    if not any(names.values()):
        return {}
    wanted = {column: json.dumps(names.get(column, [])) for column in _TOUCHED}
    lead, join, ok, params = credited.sql(more=True)
    sql = (
        _PATHS + lead + ", touched AS MATERIALIZED (SELECT d.id, t.campaign, t.creator_id FROM devices d"
        " JOIN conv c ON c.id = d.id JOIN touchpoints t ON t.visitor_key = d.visitor_key"
        " AND t.ts <= c.ts AND t.ts >= :from AND julianday(c.ts) - julianday(t.ts) <= :window"
        f"{join} WHERE {ok} AND (t.campaign IN (SELECT value FROM json_each(:campaign))"
        " OR t.creator_id IN (SELECT value FROM json_each(:creator_id))))"
        + " UNION ALL ".join(
            f" SELECT '{column}', {column}, count(DISTINCT id) FROM touched"
            f" WHERE {column} IN (SELECT value FROM json_each(:{column})) GROUP BY 2"
            for column in _TOUCHED
        )
    )
    async with db.execute(sql, {**bounds, **wanted, **params, "window": window_days}) as cursor:
        return {(str(r[0]), str(r[1])): int(r[2]) for r in await cursor.fetchall()}


async def _bots(
    db: aiosqlite.Connection, bounds: dict[str, str | None]
) -> tuple[bool, dict[str, int], dict[str, str]]:
    """Touchpoints of the period per effective bot verdict (an analyst's override, else the
    latest re-score, else as scored), whether any was scored at all, and the effective verdict
    of each touchpoint whose verdict changed; an unscored touchpoint (the bots addon off) counts
    as ``allow``. Counted by stored verdict, then the (few)
    touchpoints whose verdict changed move over: the ``effective_touchpoints`` view's answer
    without its subquery per row (2.4 s → 0.4 s over a million touchpoints)."""
    # One statement, so one snapshot: the count by stored verdict, then (kind 1) each changed
    # touchpoint's changes in order, its last row winning (latest analyst change, else latest
    # re-score). Two statements could move a touchpoint written in between that was not counted.
    sql = (
        "SELECT 0, coalesce(verdict, 'allow'), count(*), count(verdict), NULL, NULL FROM touchpoints"
        " WHERE ts >= :since AND ts < :until GROUP BY 2"
        " UNION ALL"
        " SELECT 1, c.touchpoint_id, c.verdict, t.verdict, c.origin = 'analyst', c.id"
        " FROM verdict_changes c CROSS JOIN touchpoints t ON t.id = c.touchpoint_id"
        " WHERE t.ts >= :since AND t.ts < :until"
        " ORDER BY 1, 2, 5, 6"
    )
    counts: dict[str, int] = defaultdict(int)
    scored = False
    effective: dict[str, tuple[str, str | None]] = {}
    async with db.execute(sql, bounds) as cursor:
        for kind, key, a, b, _, _ in await cursor.fetchall():
            if kind == 0:  # key: a stored verdict, a: its touchpoints, b: of them scored
                counts[str(key)] += int(a)
                scored = scored or bool(b)
            else:  # key: a touchpoint, a: a change's verdict, b: the stored one
                effective[key] = (a, b)
    for now, stored in effective.values():
        counts[stored or "allow"] -= 1
        counts[now] += 1
        scored = True
    changed = {str(key): str(now) for key, (now, _) in effective.items()}
    return scored, {verdict: n for verdict, n in counts.items() if n}, changed


async def _totals(
    db: aiosqlite.Connection, bounds: dict[str, str | None], credited: Credited
) -> dict[str, int]:
    """The period's landings the reports credit and their distinct visitors, and its landings
    they do not (``not_credited``: a bot verdict outside ``attribution.verdicts``)."""
    lead, join, ok, params = credited.sql()
    sql = (
        f"{lead}SELECT sum({ok}), count(DISTINCT CASE WHEN {ok} THEN t.visitor_key END), sum(NOT {ok})"
        f" FROM touchpoints t{join} WHERE t.ts >= :since AND t.ts < :until"
    )
    async with db.execute(sql, {**bounds, **params}) as cursor:
        row = await cursor.fetchone()
    touchpoints, visitors, excluded = (int(n or 0) for n in row) if row else (0, 0, 0)
    return {"touchpoints": touchpoints, "visitors": visitors, "not_credited": excluded}


def _micros(column: str) -> str:
    """SQL: a stored timestamp (``2026-11-25T14:00:00.000000Z``) as microseconds since 1970,
    exactly (``julianday`` is a float: about 50 µs apart in this century)."""
    return (
        f"(CAST(strftime('%s', substr({column}, 1, 19)) AS INTEGER) * 1000000"
        f" + CAST(substr({column}, 21, 6) AS INTEGER))"
    )


async def _population_conversions(
    db: aiosqlite.Connection, bounds: dict[str, str | None], widest: timedelta, population: str
) -> int:
    """The period's conversions (of the chosen name, if any) that ``population``'s touchpoints
    reach: a touchpoint of it (whatever its verdict) on any of the converter's devices inside
    the widest lookback window, at or before the conversion. Those a report of that
    population reads (``Reports.read``), so those its credits share out, each whole. Each
    conversion stops at its first such touchpoint (over a million touchpoints, 30 days: 0.5-0.8 s;
    counting the distinct conversions of every matching touchpoint took 1.1-1.5 s)."""
    sql = _PATHS + (
        "SELECT count(*) FROM conv c WHERE EXISTS (SELECT 1 FROM devices d JOIN touchpoints t"
        " ON t.visitor_key = d.visitor_key AND t.ts <= c.ts AND t.ts >= :from"
        f" WHERE d.id = c.id AND t.consent = :population AND {_micros('c.ts')} - {_micros('t.ts')}"
        " <= :window_us)"
    )
    window_us = widest // timedelta(microseconds=1)
    async with db.execute(sql, {**bounds, "population": population, "window_us": window_us}) as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


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
every model's credits, ``data_driven`` learning from the whole period: the slowest). The
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
    bounds = {"since": iso(since), "until": iso(until), "from": iso(since - widest), "name": conversion}
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
        work["credits"] = reports.credit(
            since, until, models, conversion=conversion, by_day="daily" in parts, population=population
        )
    if "counts" in parts:
        work["counts"] = _counts(db, since, until, bounds, widest, population, reports.attribution.verdicts)
    done = dict(zip(work, await asyncio.gather(*work.values()), strict=True))
    table: Table = done.get("credits", {})
    if "daily" in parts:
        daily = channel_credits(table, model)
        by_day = []
        for day in period.days():
            by_day += [
                {"day": day.isoformat(), **row} for row in _credit_rows(daily.get(day.isoformat(), []))
            ]
        data["by_day"] = by_day
    if "models" in parts:
        every = add_tables([{(None, group, currency): sums} for (_, group, currency), sums in table.items()])
        comparison = []
        for name in MODELS:
            comparison += [{"model": name, **row} for row in _credit_rows(channel_credits(every, name)[None])]
        data["comparison"] = comparison
    return data | done.get("counts", {})


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
    scored, bots, changed = await _bots(db, bounds)
    credited = Credited(verdicts, changed)
    conversions, names = await _conversions(db, bounds)
    totals = {**await _totals(db, bounds, credited), "conversions": conversions}
    if population is not None:
        totals["population_conversions"] = await _population_conversions(db, bounds, widest, population)
    return {
        "totals": totals,
        "conversion_names": names,
        **await _tops(db, bounds, widest / timedelta(days=1), credited),
        "bots": {"scored": scored, "verdicts": bots},
        "populations": await population_counts(db, since, until),
    }


async def _tops(
    db: aiosqlite.Connection, bounds: dict[str, str | None], window_days: float, credited: Credited
) -> dict[str, Any]:
    """The top campaigns and creators, ranked by the landings the reports credit: those
    landings, their distinct visitors, the landings left out (``not_credited``: a bot verdict
    the reports do not credit), and the period's conversions with a credited landing of theirs
    in the converter's path (``_touched``); how many campaigns and creators the period has in all
    (``landed``: the tables show the ``TOP`` of them), and the landings of all of them left
    out (``not_credited``)."""
    landed = {column: await _landed(db, column, bounds, TOP, credited) for column in _TOUCHED}
    names = {column: [row[0] for row in rows] for column, (rows, _, _) in landed.items()}
    touched = await _touched(db, bounds, window_days, names, credited)
    return {
        **{
            key: [
                {
                    "name": name,
                    "touchpoints": n,
                    "visitors": v,
                    "not_credited": left,
                    "conversions": touched.get((column, name), 0),
                }
                for name, n, v, left in landed[column][0]
            ]
            for column, key in _TOUCHED.items()
        },
        "landed": {_NAMED[column]: landed[column][1] for column in _TOUCHED},
        "not_credited": {_NAMED[column]: landed[column][2] for column in _TOUCHED},
    }
