"""The dashboard's counts (``storage/dashboard_landings.py`` and the top tables' conversions)
against a plain reading of the store, on a generated store with bot verdicts, re-scores and
analysts' overrides both ways across the credited verdicts' edge (some withdrawn), blocked landings, every
population, empty and missing names, over periods of several days.

The counts read the period once, by stored verdict, and move the changed touchpoints and
their visitors over; the reference reads every row of the ``effective_touchpoints``
view (the analysts' overrides applied row by row, the lookback's before the period too, as
the reports apply them) and counts in Python: bot share,
populations, totals, every campaign's and creator's landings, visitors and landings left out,
the top tables' order, the conversions each top name touched and those a population
reaches (every device of the converter, inside the widest lookback window)."""

from __future__ import annotations

import json
import re
import sqlite3
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from bench.synth import generate
from gateway.attribution import Attribution
from gateway.channels import Channels
from gateway.options import AttributionOptions, ChannelsOptions
from storage.dashboard import TOP, Period, summary
from storage.local import connect
from storage.populations import population_counts
from storage.reports import Reports
from tests.storage.stores import WITHDRAWN_OVERRIDES

WINDOW = timedelta(days=30)
"""The default widest lookback window (awareness)."""
PERIODS = [
    Period(date(2026, 11, 1), date(2026, 11, 30)),
    Period(date(2026, 11, 20), date(2026, 11, 27)),
    Period(date(2026, 10, 1), date(2026, 12, 1)),  # the whole store
]
ACCEPTED = [("allow",), ("allow", "review")]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4,000 touchpoints and ~400 conversions over 40 days (re-scores and overrides from the
    generator), then: every population; empty campaigns and creators; analysts' overrides
    across the edge both ways (a blocked landing allowed, an allowed one blocked, a reviewed
    one blocked), several changes of one touchpoint, the last winning, overrides withdrawn
    (back to the re-score or the stored verdict) and made again after."""
    path = tmp_path_factory.mktemp("synth") / "synth.db"
    generate(path, 4000, 400, seed=23, days=40, verdicts=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(
        """
        UPDATE touchpoints SET consent = 'cookieless' WHERE rowid % 7 = 0;
        UPDATE touchpoints SET consent = 'no_consent' WHERE rowid % 11 = 0;
        UPDATE touchpoints SET campaign = '' WHERE rowid % 37 = 0;
        UPDATE touchpoints SET creator_id = '' WHERE rowid % 41 = 0 AND creator_id IS NOT NULL;
        UPDATE touchpoints SET verdict = 'block' WHERE rowid % 13 = 0;
        UPDATE touchpoints SET verdict = NULL WHERE rowid % 17 = 0;
        INSERT INTO verdict_changes (id, ts, node, touchpoint_id, verdict, origin, analyst)
            SELECT 'ffa-' || id, ts, 'test', id, 'allow', 'analyst', 'ana' FROM touchpoints
            WHERE verdict = 'block' AND rowid % 3 = 0;
        INSERT INTO verdict_changes (id, ts, node, touchpoint_id, verdict, origin, analyst)
            SELECT 'ffb-' || id, ts, 'test', id, 'block', 'analyst', 'ana' FROM touchpoints
            WHERE coalesce(verdict, 'allow') = 'allow' AND rowid % 19 = 0;
        INSERT INTO verdict_changes (id, ts, node, touchpoint_id, verdict, origin, analyst)
            SELECT 'ffc-' || id, ts, 'test', id, 'block', 'analyst', 'ana' FROM touchpoints
            WHERE verdict = 'review' AND rowid % 2 = 0;
        -- A re-score after an analyst's change does not win over it; a later analyst's does.
        INSERT INTO verdict_changes (id, ts, node, touchpoint_id, verdict, origin)
            SELECT 'ffd-' || id, ts, 'test', id, 'review', 'rescore' FROM touchpoints
            WHERE rowid % 19 = 0;
        INSERT INTO verdict_changes (id, ts, node, touchpoint_id, verdict, origin, analyst)
            SELECT 'ffe-' || id, ts, 'test', id, 'allow', 'analyst', 'ana' FROM touchpoints
            WHERE rowid % 38 = 0;
        -- Overrides withdrawn: back to the latest re-score, else as stored, until another.
        INSERT INTO verdict_changes (id, ts, node, touchpoint_id, verdict, origin, analyst)
            SELECT 'fff-' || id, ts, 'test', id, 'allow', 'analyst_cleared', 'li' FROM touchpoints
            WHERE (verdict = 'block' AND rowid % 6 = 0) OR rowid % 38 = 0
                OR (verdict = 'review' AND rowid % 4 = 0) OR rowid % 57 = 0;
        INSERT INTO verdict_changes (id, ts, node, touchpoint_id, verdict, origin, analyst)
            SELECT 'ffg-' || id, ts, 'test', id, 'block', 'analyst', 'ana' FROM touchpoints
            WHERE rowid % 76 = 0;
        """
    )
    withdrawn = db.execute(WITHDRAWN_OVERRIDES).fetchone()[0]
    assert withdrawn > 50
    counts = dict(db.execute("SELECT consent, count(*) FROM touchpoints GROUP BY 1").fetchall())
    assert set(counts) == {"cookie", "cookieless", "no_consent"}
    db.close()
    return path


@pytest.fixture
async def db(store: Path) -> AsyncIterator[aiosqlite.Connection]:
    conn = await connect(store)
    yield conn
    await conn.close()


@pytest.fixture(scope="module")
def channels() -> Channels:
    return Channels(ChannelsOptions())


def _at(day: date) -> str:
    return datetime.combine(day, datetime.min.time(), UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _when(ts: str) -> datetime:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


async def _rows(db: aiosqlite.Connection, sql: str, *args: Any) -> list[Any]:
    async with db.execute(sql, args) as cursor:
        return list(await cursor.fetchall())


async def reference(
    db: aiosqlite.Connection,
    period: Period,
    accepted: frozenset[str],
    name: str | None,
    population: str | None,
) -> dict[str, Any]:
    """The counts read plainly: every landing of the period with its effective verdict."""
    since, until = _at(period.since), _at(period.until)
    landings = await _rows(
        db,
        "SELECT id, ts, visitor_key, campaign, creator_id, consent, verdict, effective_verdict"
        " FROM effective_touchpoints WHERE ts >= ? AND ts < ?",
        since,
        until,
    )
    verdicts = Counter(effective or "allow" for *_, effective in landings)
    scored = any(stored is not None or effective is not None for *_, stored, effective in landings)

    def credited(row: Any) -> bool:
        return (row[7] or "allow") in accepted

    tables: dict[str, list[dict[str, Any]]] = {}
    landed: dict[str, int] = {}
    left_out: dict[str, int] = {}
    for column, index, key in (("campaigns", 3, "top_campaigns"), ("creators", 4, "top_creators")):
        groups: dict[str, list[Any]] = defaultdict(list)
        for row in landings:
            if row[index] is not None and row[index] != "":
                groups[row[index]].append(row)
        counted = [
            {
                "name": group,
                "touchpoints": sum(credited(r) for r in rows),
                "visitors": len({r[2] for r in rows if credited(r)}),
                "not_credited": sum(not credited(r) for r in rows),
            }
            for group, rows in groups.items()
        ]
        # Ties in the order of the names' numbers, case aside, as the dashboard orders channels.
        counted.sort(key=lambda row: (-row["touchpoints"], _by_numbers(row["name"]), row["name"]))
        tables[key] = counted[:TOP]
        landed[column] = len(groups)
        left_out[column] = sum(row["not_credited"] for row in counted)
    touched, reached = await _touched(db, period, accepted, name, tables, population)
    for key, column in (("top_campaigns", "campaign"), ("top_creators", "creator_id")):
        for row in tables[key]:
            row["conversions"] = touched[column, row["name"]]
    conversions = await _rows(
        db,
        "SELECT count(*) FROM conversions WHERE ts >= ? AND ts < ? AND (? IS NULL OR name = ?)",
        since,
        until,
        name,
        name,
    )
    return {
        "bots": {"scored": scored, "verdicts": dict(verdicts)},
        "populations": await population_counts(db, _when(since), _when(until)),
        "totals": {
            "touchpoints": sum(credited(r) for r in landings),
            "visitors": len({r[2] for r in landings if credited(r)}),
            "not_credited": sum(not credited(r) for r in landings),
            "conversions": conversions[0][0],
            **({"population_conversions": reached} if population else {}),
        },
        **tables,
        "landed": landed,
        "not_credited": left_out,
    }


def _by_numbers(name: str) -> list[Any]:
    """``Region 2`` before ``Region 10``: each run of digits a number, the rest case-folded."""
    return [
        (0, int(run), "") if run.isdigit() else (1, 0, run.casefold())
        for run in re.findall(r"[0-9]+|[^0-9]+", name)
    ]


async def _touched(
    db: aiosqlite.Connection,
    period: Period,
    accepted: frozenset[str],
    name: str | None,
    tables: dict[str, list[dict[str, Any]]],
    population: str | None,
) -> tuple[dict[tuple[str, str], int], int]:
    """Per top name, the period's conversions with a credited landing of it on any device of
    the converter (its visitor, and every visitor of its user or of the user its visitor is
    bound to) inside the window, at or before the conversion; and the conversions with a
    landing of ``population`` (whatever its verdict) there."""
    since, until = _at(period.since), _at(period.until)
    bound = await _rows(db, "SELECT visitor_key, user_key FROM identities")
    users: dict[str, set[str]] = defaultdict(set)
    visitors: dict[str, set[str]] = defaultdict(set)
    for visitor, user in bound:
        users[visitor].add(user)
        visitors[user].add(visitor)
    journeys: dict[str, list[Any]] = defaultdict(list)
    # Every landing by its effective verdict, those of the lookback before the period too, as
    # the reports credit them.
    sql = "SELECT visitor_key, ts, campaign, creator_id, effective_verdict FROM effective_touchpoints"
    populated: dict[str, list[datetime]] = defaultdict(list)
    for row in await _rows(db, sql):
        if (row[4] or "allow") in accepted:
            journeys[row[0]].append(row)
    for visitor, landed in await _rows(
        db, "SELECT visitor_key, ts FROM touchpoints WHERE consent = ?", population
    ):
        populated[visitor].append(_when(landed))
    wanted = {("campaign", r["name"]) for r in tables["top_campaigns"]}
    wanted |= {("creator_id", r["name"]) for r in tables["top_creators"]}
    touched: Counter[tuple[str, str]] = Counter()
    reach = 0
    conversions = await _rows(
        db,
        "SELECT ts, visitor_key, user_key FROM conversions"
        " WHERE ts >= ? AND ts < ? AND (? IS NULL OR name = ?)",
        since,
        until,
        name,
        name,
    )
    for ts, visitor, user in conversions:
        people = ({user} if user else set()) | (users[visitor] if visitor else set())
        devices = ({visitor} if visitor else set()).union(*(visitors[u] for u in people))
        at = _when(ts)
        reached: set[tuple[str, str]] = set()
        for device in devices:
            for _, landed, campaign, creator, _ in journeys[device]:
                if at - WINDOW <= _when(landed) <= at:
                    reached |= {("campaign", campaign), ("creator_id", creator)} & wanted
        touched.update(reached)
        reach += any(at - WINDOW <= landed <= at for device in devices for landed in populated[device])
    return {key: touched[key] for key in wanted}, reach


@pytest.mark.parametrize("accepted", ACCEPTED, ids=["allow", "allow+review"])
async def test_the_counts_are_those_of_a_plain_reading_of_the_view(
    db: aiosqlite.Connection, channels: Channels, accepted: tuple[str, ...]
) -> None:
    attribution = Attribution(AttributionOptions(verdicts=accepted))
    assert max(attribution.tiers.windows.values()) == WINDOW
    reports = await Reports.on(db, attribution, channels)
    names = [None, *(str(n) for (n,) in await _rows(db, "SELECT DISTINCT name FROM conversions"))]
    moved = earlier = 0
    moves = (
        "SELECT count(*) FROM effective_touchpoints WHERE ts >= ? AND ts < ?"
        " AND (coalesce(verdict, 'allow') IN (SELECT value FROM json_each(?)))"
        " != (coalesce(effective_verdict, 'allow') IN (SELECT value FROM json_each(?)))"
    )
    try:
        for period in PERIODS:
            for name in names:
                for population in (None, "cookieless"):
                    got = await summary(db, reports, "linear", period, population, name, ("counts",))
                    expected = await reference(db, period, frozenset(accepted), name, population)
                    assert {key: got[key] for key in expected} == expected, (period, name, population)
                    assert len(got["top_campaigns"]) == TOP and got["top_creators"]
            since, until = _at(period.since), _at(period.until)
            moved += (await _rows(db, moves, since, until, *[json.dumps(accepted)] * 2))[0][0]
            lookback = _at(period.since - WINDOW)
            earlier += (await _rows(db, moves, lookback, since, *[json.dumps(accepted)] * 2))[0][0]
    finally:
        await reports.close()
    assert moved > 50  # the changes move counts: a reading by stored verdict would differ
    assert earlier > 50  # and so do those of the lookback before the period (the touched counts)


@pytest.fixture
def unnamed(tmp_path: Path) -> Path:
    """A store whose landings have no campaign nor creator, all of them cookieless."""
    path = tmp_path / "unnamed.db"
    generate(path, 200, 20, seed=5, days=10)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("UPDATE touchpoints SET campaign = NULL, creator_id = NULL, consent = 'cookieless'")
    db.close()
    return path


async def test_a_population_s_conversions_without_a_named_landing(unnamed: Path, channels: Channels) -> None:
    """No campaign nor creator in the period (no top table to count conversions for): the
    conversions a population reaches are still counted."""
    conn = await connect(unnamed)
    expected = (await _rows(conn, "SELECT count(*) FROM conversions"))[0][0]
    reports = await Reports.on(conn, Attribution(AttributionOptions()), channels)
    period = Period(date(2026, 11, 1), date(2026, 12, 1))
    try:
        got = await summary(conn, reports, "linear", period, "cookieless", parts=("counts",))
        other = await summary(conn, reports, "linear", period, "cookie", parts=("counts",))
    finally:
        await reports.close()
        await conn.close()
    assert got["top_campaigns"] == got["top_creators"] == []
    reached = got["totals"]["population_conversions"]
    assert 0 < reached <= expected and other["totals"]["population_conversions"] == 0
