"""The report engine against a plain reading of the store, on a generated store with many
journeys (``bench/synth.py``, with bot verdicts, re-scores and analysts' overrides, some of
them withdrawn).

The engine reads touchpoints through the covering index, applies the verdict changes of
``verdict_changes`` itself and credits candidate tuples with cached and integer shares. The
reference here reads the ``effective_touchpoints`` view (the analysts' overrides applied row
by row, as the admin API shows them), joins every device of each conversion's user in
Python and credits ``Touch`` objects with the pure models of ``gateway/attribution.py``.
Both must agree to the minor unit and the millionth, for every model; and, in a report time
zone with daylight saving time, per local day, over periods given as local midnights, in one
process and in the report workers. The store holds conversions at 00:30 local the day after
each change its weeks see (Berlin and New York fall back, Lord Howe springs forward half an
hour), with touches on and around their windows' edges in elapsed time and on the wall clock.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiosqlite
import pytest

from bench.synth import generate
from gateway.attribution import MODELS, Attribution, Touch, markov_weights, to_minor
from gateway.channels import INTERNAL, Channels, Signals
from gateway.events import iso
from gateway.ids import uuid7
from gateway.options import AttributionOptions, ChannelsOptions
from storage.crediting import MICRO
from storage.dashboard_landings import count_landings
from storage.local import connect
from storage.report_period import period_bounds
from storage.reports import Reports
from tests.storage.stores import WITHDRAWN_OVERRIDES

SINCE, UNTIL = datetime(2026, 10, 20, tzinfo=UTC), datetime(2026, 11, 30, tzinfo=UTC)
WHOLE = datetime(2026, 9, 1, tzinfo=UTC)
"""From before the store's first touchpoint."""
ACCEPTED = [frozenset({"allow"}), frozenset({"allow", "review"})]
ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
CHANGES = {  # the day after each change in the store's weeks (Kolkata has none)
    "Europe/Berlin": date(2026, 10, 26),
    "America/New_York": date(2026, 11, 2),
    "Australia/Lord_Howe": date(2026, 10, 5),
}
LOCAL_PERIODS = [(date(2026, 10, 5), date(2026, 11, 30)), (date(2026, 11, 2), date(2026, 11, 30))]
"""Periods of local days: most of the store, and one that starts (in Lord Howe) a month after
its change, so that its widest window reaches back across it."""
LOCAL_DAYS_UTC = ("2026-10-04", "2026-10-05", "2026-11-01", "2026-11-02", "2026-11-29", "2026-11-30")
"""The UTC dates the local periods' ends fall on, in every zone of ``ZONES``."""
Credits = dict[tuple[str | None, str | None], tuple[int, int]]
DailyCredits = dict[tuple[str, str | None, str | None], tuple[int, int]]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6,000 touchpoints and ~600 conversions over 60 days, then the rarer cases a live store
    has: rows stored before channels existed, internal touches, campaigns and tier parameters
    of the shorter tiers, touchpoints of another population."""
    path = tmp_path_factory.mktemp("synth") / "synth.db"
    generate(path, 6000, 600, seed=11, days=60, verdicts=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(
        """
        UPDATE touchpoints SET channel = NULL WHERE rowid % 41 = 0;
        UPDATE touchpoints SET channel = 'Internal' WHERE rowid % 53 = 0;
        UPDATE touchpoints SET campaign = 'spring-consideration' WHERE rowid % 23 = 0;
        UPDATE touchpoints SET campaign = 'cart-retarget' WHERE rowid % 29 = 0;
        UPDATE touchpoints SET raw_params = json_set(raw_params, '$.utm_tier', 'conversion')
            WHERE rowid % 31 = 0;
        UPDATE touchpoints SET consent = 'cookieless' WHERE rowid % 7 = 0;
        """
    )
    # Visitors whose only touchpoint an analyst accepted after scoring refused it.
    alone = db.execute(
        "INSERT INTO verdict_changes (id, ts, node, touchpoint_id, verdict, origin, analyst)"
        " SELECT 'fff-' || t.id, t.ts, 'test', t.id, 'allow', 'analyst', 'ana' FROM touchpoints t"
        " WHERE t.verdict IN ('block', 'bot') AND t.rowid % 2 = 0"
        " AND (SELECT count(*) FROM touchpoints u WHERE u.visitor_key = t.visitor_key) = 1"
    ).rowcount
    assert alone > 5
    # Overrides withdrawn (``analyst_cleared``): back to the latest re-score, else as stored —
    # a re-score after the clear counts again, and so does another override after it.
    db.executescript(
        """
        INSERT INTO verdict_changes (id, ts, node, touchpoint_id, verdict, origin, analyst)
            SELECT DISTINCT 'ffg-' || c.touchpoint_id, c.ts, 'test', c.touchpoint_id, 'allow',
                'analyst_cleared', 'li' FROM verdict_changes c JOIN touchpoints t ON t.id = c.touchpoint_id
            WHERE c.origin = 'analyst' AND t.rowid % 3 != 1;
        INSERT INTO verdict_changes (id, ts, node, touchpoint_id, verdict, origin, analyst)
            SELECT 'ffh-' || t.id, t.ts, 'test', t.id, 'block', 'analyst', 'ana' FROM touchpoints t
            WHERE t.rowid % 5 = 0
                AND t.id IN (SELECT touchpoint_id FROM verdict_changes WHERE id LIKE 'ffg-%');
        INSERT INTO verdict_changes (id, ts, node, touchpoint_id, verdict, origin)
            SELECT 'ffi-' || t.id, t.ts, 'test', t.id, 'review', 'rescore' FROM touchpoints t
            WHERE t.rowid % 7 = 3
                AND t.id IN (SELECT touchpoint_id FROM verdict_changes WHERE id LIKE 'ffg-%');
        """
    )
    assert db.execute("SELECT count(DISTINCT origin) FROM verdict_changes").fetchone() == (3,)
    # Imported rows keep the id they came with: some of a visitor's touchpoints of one day
    # swap times, so id order is not time order. (Ids are minted from the event's time, and
    # the engine reads a period by its range of ids: no UTC day a period starts or ends in
    # swaps, and the local periods start and end on the UTC days of LOCAL_DAYS_UTC.)
    sql = (
        "SELECT min(id), max(id) FROM touchpoints"
        f" WHERE substr(ts, 1, 10) NOT IN ({', '.join(map(repr, LOCAL_DAYS_UTC))})"
        " GROUP BY visitor_key, substr(ts, 1, 10) HAVING count(DISTINCT channel) > 1"
    )
    ends = {
        datetime.combine(end, time.min, ZoneInfo(zone)).astimezone(UTC).date().isoformat()
        for zone in ZONES
        for period in LOCAL_PERIODS
        for end in period
    }
    assert ends <= set(LOCAL_DAYS_UTC)
    swapped = db.execute(sql).fetchall()[::2]
    swap = (
        "UPDATE touchpoints SET ts = CASE id WHEN :a THEN (SELECT ts FROM touchpoints WHERE id = :b)"
        " ELSE (SELECT ts FROM touchpoints WHERE id = :a) END WHERE id IN (:a, :b)"
    )
    db.executemany(swap, [{"a": a, "b": b} for a, b in swapped])
    assert len(swapped) > 20
    _dst_edges(db)
    db.close()
    return path


def _dst_edges(db: sqlite3.Connection) -> None:
    """In each zone: a conversion at 00:30 local the day after a change, with touches of the
    conversion tier (7 days) on its window's edge, a second outside it, and seven local days
    before (an hour, or half an hour, off the edge); a conversion at each local period's
    first moment with awareness touches (30 days) likewise."""
    day = timedelta(days=1)
    rows: list[tuple[datetime, datetime, str | None, timedelta]] = []  # conversion, local, campaign, window
    for zone, after in CHANGES.items():
        local = datetime.combine(after, time(0, 30), ZoneInfo(zone))
        rows.append((local.astimezone(UTC), local, "edge-retarget", 7 * day))
    for zone in ZONES:
        for since, _ in LOCAL_PERIODS:
            local = datetime.combine(since, time.min, ZoneInfo(zone))
            rows.append((local.astimezone(UTC), local, None, 30 * day))
    touch = (
        "INSERT INTO touchpoints (id, ts, node, visitor_key, campaign, landing_path, channel)"
        " VALUES (?, ?, 'edge', ?, ?, '/', ?)"
    )
    conv = (
        "INSERT INTO conversions (id, ts, node, name, dedup_key, visitor_key, value, currency, origin,"
        " rule) VALUES (?, ?, 'edge', 'purchase', ?, ?, 99.99, 'EUR', 'rule', 'purchase')"
    )
    for n, (at, local, campaign, window) in enumerate(rows):
        visitor = f"edge-{n:02d}"
        wall = (local - window).astimezone(UTC)  # the same wall-clock time, that many dates before
        assert (wall == at - window) == (local.utcoffset() == (local - window).utcoffset())
        for ts, channel in [
            (at - window, "Email"),
            (at - window - timedelta(seconds=1), "Display"),
            (wall, "Referral"),
            (at - timedelta(hours=1), "Organic Search"),
        ]:
            db.execute(touch, (uuid7(int(ts.timestamp() * 1000)), iso(ts), visitor, campaign, channel))
        cid = uuid7(int(at.timestamp() * 1000))
        db.execute(conv, (cid, iso(at), "edge:" + cid, visitor))


@pytest.fixture
async def db(store: Path) -> AsyncIterator[aiosqlite.Connection]:
    conn = await connect(store)
    yield conn
    await conn.close()


@pytest.fixture(scope="module")
def channels() -> Channels:
    """Built outside the event loop, as ``load_settings`` does: it reads the shipped table."""
    return Channels(ChannelsOptions())


@pytest.fixture
async def reports(store: Path, channels: Channels) -> AsyncIterator[Reports]:
    attribution = Attribution(AttributionOptions())
    engine = Reports(store, attribution, channels)
    await engine.open()
    yield engine
    await engine.close()


async def rows(db: aiosqlite.Connection, sql: str, *args: Any) -> list[Any]:
    async with db.execute(sql, args) as cursor:
        return list(await cursor.fetchall())


class Reference:
    """Every conversion of the period with all its devices' touchpoints, as ``Touch`` objects
    read from the ``effective_touchpoints`` view."""

    def __init__(self, attribution: Attribution, channels: Channels) -> None:
        self.attribution, self.channels = attribution, channels
        self.convs: list[tuple[datetime, int, str | None, list[Touch]]] = []
        self.ids: set[str] = set()

    async def read(
        self,
        db: aiosqlite.Connection,
        population: str | None = None,
        since: datetime = SINCE,
        until: datetime = UNTIL,
    ) -> Reference:
        users_of, visitors_of = defaultdict(set), defaultdict(set)
        for visitor, user in await rows(db, "SELECT visitor_key, user_key FROM identities"):
            users_of[visitor].add(user)
            visitors_of[user].add(visitor)
        widest = max(self.attribution.tiers.windows.values())
        touches: dict[str, list[Touch]] = defaultdict(list)
        sql = (
            "SELECT id, ts, visitor_key, channel, effective_verdict, campaign, raw_params, source, medium,"
            " click_id_kind, creator_id, referrer_host, consent FROM effective_touchpoints"
        )
        for tid, ts, visitor, channel, verdict, campaign, raw, *signals, consent in await rows(db, sql):
            at = datetime.fromisoformat(ts)
            if (population is not None and consent != population) or not at < until:
                continue
            channel = channel or self.channels.classify(Signals(*signals[:2], campaign, *signals[2:]))
            tier = self.attribution.tiers.tier_of(campaign, json.loads(raw))
            touches[visitor].append(Touch(tid, at, channel, tier, verdict))
        sql = "SELECT ts, value, currency, visitor_key, user_key FROM conversions WHERE ts >= ? AND ts < ?"
        for ts, value, currency, visitor, user in await rows(db, sql, iso(since), iso(until)):
            users = set(users_of[visitor]) | ({user} if user else set())
            devices = {visitor} | {v for u in users for v in visitors_of[u]}
            mine = [t for d in devices if d for t in touches.get(d, [])]
            at = datetime.fromisoformat(ts)
            # A population's report keeps the conversions with a touch of it in their widest window.
            if population is None or any(at - widest <= t.ts <= at for t in mine):
                self.convs.append((at, to_minor(value, currency), currency, mine))
        return self

    def credits(self, model: str, accepted: frozenset[str]) -> Credits:
        out: dict[tuple[str | None, str | None], list[int]] = defaultdict(lambda: [0, 0])
        for at, value, currency, touches in self.convs:
            for slot, total in enumerate((value, MICRO)):
                for credit in self.attribution.credit(model, touches, at, total, accepted):
                    out[credit.channel, currency][slot] += credit.amount
        return {key: (v, n) for key, (v, n) in out.items() if v or n}

    def daily(self, model: str, accepted: frozenset[str], zone: ZoneInfo) -> DailyCredits:
        """Credits per (the conversion's date in ``zone``, channel, currency)."""
        out: dict[tuple[str, str | None, str | None], list[int]] = defaultdict(lambda: [0, 0])
        for at, value, currency, touches in self.convs:
            day = at.astimezone(zone).date().isoformat()
            for slot, total in enumerate((value, MICRO)):
                for credit in self.attribution.credit(model, touches, at, total, accepted):
                    out[day, credit.channel, currency][slot] += credit.amount
        return {key: (v, n) for key, (v, n) in out.items() if v or n}

    def journeys(self, accepted: frozenset[str]) -> list[tuple[list[str], bool]]:
        """The converting journeys (each conversion's eligible channels)."""
        paths = [self.attribution.eligible(touches, at, accepted) for at, _, _, touches in self.convs]
        self.ids = {t.id for path in paths for t in path}
        return [([t.channel for t in path], True) for path in paths]


async def other_journeys(
    db: aiosqlite.Connection,
    channels: Channels,
    accepted: frozenset[str],
    converted: set[str],
    since: datetime = SINCE,
    until: datetime = UNTIL,
) -> list[tuple[list[str], bool]]:
    """The period's touchpoints no conversion used, per person (the user of a visitor's
    earliest binding, else the visitor), from the view: the journeys that did not convert."""
    sql = (
        "SELECT coalesce(b.user_key, t.visitor_key), t.ts, t.id, t.channel, t.effective_verdict,"
        " t.source, t.medium, t.campaign, t.click_id_kind, t.creator_id, t.referrer_host"
        " FROM effective_touchpoints t LEFT JOIN (SELECT visitor_key, user_key, min(id) FROM identities"
        " GROUP BY visitor_key) b ON b.visitor_key = t.visitor_key WHERE t.ts >= ? AND t.ts < ?"
    )
    paths: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for person, ts, tid, channel, verdict, *signals in await rows(db, sql, iso(since), iso(until)):
        if tid in converted or (verdict or "allow") not in accepted:
            continue
        channel = channel or channels.classify(Signals(*signals))
        if channel != INTERNAL:
            paths[person].append((ts, tid, channel))
    return [([c for _, _, c in sorted(p)], False) for p in paths.values()]


@pytest.mark.parametrize("accepted", ACCEPTED, ids=["allow", "allow+review"])
@pytest.mark.parametrize("model", sorted(MODELS))
async def test_every_model_credits_what_the_view_and_the_pure_models_credit(
    db: aiosqlite.Connection, reports: Reports, model: str, accepted: frozenset[str]
) -> None:
    attribution = reports.attribution
    reference = await Reference(attribution, reports.channels).read(db)
    params, _ = await reports.run(reports.learn, [model], SINCE, UNTIL, None, accepted)
    if model == "data_driven":
        journeys = reference.journeys(accepted)
        journeys += await other_journeys(db, reports.channels, accepted, reference.ids)
        assert dict(params.channel_weights) == markov_weights(journeys)
        assert len(params.channel_weights) > 5
    attribution.params = params
    table = await reports.credit(SINCE, UNTIL, [model], verdicts=accepted)
    got = {(group, currency): tuple(sums[model]) for (_, group, currency), sums in table.items()}
    expected = reference.credits(model, accepted)
    assert got == expected and len(expected) > 10
    assert sum(n for _, n in got.values()) == len(reference.convs) * MICRO


async def test_a_population_credits_what_the_view_credits(db: aiosqlite.Connection, reports: Reports) -> None:
    reference = await Reference(reports.attribution, reports.channels).read(db, "cookieless")
    table = await reports.credit(SINCE, UNTIL, ["position_based"], population="cookieless")
    got = {(group, currency): tuple(sums["position_based"]) for (_, group, currency), sums in table.items()}
    assert got == reference.credits("position_based", reports.attribution.verdicts)
    assert 0 < len(reference.convs) < 500


@pytest.mark.parametrize("since", [SINCE, WHOLE], ids=["period", "whole-store"])
@pytest.mark.parametrize("accepted", ACCEPTED, ids=["allow", "allow+review"])
async def test_creator_clicks_count_the_effective_verdicts(
    db: aiosqlite.Connection, reports: Reports, accepted: frozenset[str], since: datetime
) -> None:
    expected: dict[tuple[str, bool], int] = defaultdict(int)
    sql = (
        "SELECT creator_id, effective_verdict, count(*) FROM effective_touchpoints"
        " WHERE ts >= ? AND ts < ? AND creator_id IS NOT NULL GROUP BY 1, 2"
    )
    for creator, verdict, n in await rows(db, sql, iso(since), iso(UNTIL)):
        expected[creator, (verdict or "allow") not in accepted] += n
    got = await reports.creator_clicks(since, UNTIL, accepted)
    assert got == dict(expected) and any(quarantined for _, quarantined in got)
    # One population's clicks: the payouts report's population= (the store has two).
    expected.clear()
    for creator, verdict, n in await rows(
        db, sql.replace("GROUP", "AND consent = 'cookieless' GROUP"), iso(since), iso(UNTIL)
    ):
        expected[creator, (verdict or "allow") not in accepted] += n
    few = await reports.creator_clicks(since, UNTIL, accepted, "cookieless")
    assert few == dict(expected) and 0 < sum(few.values()) < sum(got.values())


def test_the_verdict_changes_decide_some_credits(store: Path) -> None:
    """The store exercises what the engine applies itself: changed verdicts that flip a
    touchpoint in and out of the accepted ones, several changes to one touchpoint."""
    db = sqlite3.connect(store)
    flipped = db.execute(
        "SELECT count(*) FROM effective_touchpoints WHERE effective_verdict IS NOT verdict"
    ).fetchone()[0]
    repeated = db.execute(
        "SELECT count(*) FROM (SELECT touchpoint_id FROM verdict_changes GROUP BY 1 HAVING count(*) > 1)"
    ).fetchone()[0]
    withdrawn = db.execute(WITHDRAWN_OVERRIDES).fetchone()[0]
    rescored_after = db.execute(
        "SELECT count(*) FROM effective_touchpoints WHERE verdict_origin = 'rescore'"
        " AND id IN (SELECT touchpoint_id FROM verdict_changes WHERE id LIKE 'ffi-%')"
    ).fetchone()[0]
    overridden_again = db.execute(
        "SELECT count(*) FROM effective_touchpoints"
        " WHERE verdict_origin = 'analyst' AND verdict_analyst = 'ana'"
        " AND id IN (SELECT touchpoint_id FROM verdict_changes WHERE id LIKE 'ffh-%')"
    ).fetchone()[0]
    db.close()
    assert flipped > 20 and repeated > 5
    assert withdrawn > 5 and rescored_after > 2 and overridden_again > 2


async def test_most_of_the_store_is_read_through_the_covering_index(reports: Reports) -> None:
    """The period's touchpoints (data_driven's other journeys, creator clicks) come through the
    whole covering index when the period spans at least half of the stored time (the store's
    83 days), else from the primary key's range (the tests above: 41 days, or a day)."""
    assert await reports.run(reports._scan, SINCE, UNTIL) == ""
    assert await reports.run(reports._scan, UNTIL - timedelta(days=1), UNTIL) == ""
    assert await reports.run(reports._scan, WHOLE, UNTIL) == "INDEXED BY touchpoints_visitor"


@pytest.mark.parametrize("accepted", ACCEPTED, ids=["allow", "allow+review"])
async def test_the_journeys_that_did_not_convert_read_through_the_index(
    db: aiosqlite.Connection, reports: Reports, accepted: frozenset[str]
) -> None:
    """Over the whole store (the covering index, rows by visitor) the same journeys as the view."""
    got = await reports.run(reports._other_journeys, WHOLE, UNTIL, None, accepted)
    expected = await other_journeys(db, reports.channels, accepted, set(), WHOLE)
    paths = sorted(map(list, got.elements()))  # counted by path: every journey, once each
    assert paths == sorted(path for path, _ in expected) and len(paths) > 500


@pytest.mark.parametrize("accepted", ACCEPTED, ids=["allow", "allow+review"])
async def test_data_driven_learns_what_the_view_says_over_the_whole_store(
    db: aiosqlite.Connection, reports: Reports, accepted: frozenset[str]
) -> None:
    """Through the covering index, rows by visitor: the conversions' devices' touchpoints
    that a conversion used left out of the other journeys, the rest of them kept."""
    reference = await Reference(reports.attribution, reports.channels).read(db, since=WHOLE)
    params, _ = await reports.run(reports.learn, ["data_driven"], WHOLE, UNTIL, None, accepted)
    journeys = reference.journeys(accepted)
    journeys += await other_journeys(db, reports.channels, accepted, reference.ids, WHOLE)
    assert dict(params.channel_weights) == markov_weights(journeys)
    assert len(reference.convs) > 500


@pytest.mark.parametrize("since", [SINCE, WHOLE], ids=["period", "whole-store"])
async def test_the_dashboard_s_bot_share_counts_the_effective_verdicts(
    db: aiosqlite.Connection, since: datetime
) -> None:
    """The dashboard counts by stored verdict and moves the changed touchpoints over: the
    same counts as the view, whose subquery per row it no longer reads."""
    sql = (
        "SELECT coalesce(effective_verdict, 'allow'), count(*) FROM effective_touchpoints"
        " WHERE ts >= ? AND ts < ? GROUP BY 1"
    )
    expected = {str(verdict): n for verdict, n in await rows(db, sql, iso(since), iso(UNTIL))}
    as_stored = {str(v): n for v, n in await rows(db, sql.replace("effective_", ""), iso(since), iso(UNTIL))}
    # The bot share needs no lookback window before the period: it starts at ``since``.
    bounds: dict[str, str | None] = {**period_bounds(since, UNTIL, since)}
    landings = await count_landings(db, bounds, frozenset({"allow"}))
    assert (landings.scored, landings.verdicts) == (True, expected) and as_stored != expected
    changed = landings.credited.changed
    # The changed touchpoints' effective verdicts, handed on to tell the credited landings apart.
    view = "SELECT id, effective_verdict FROM effective_touchpoints WHERE ts >= ? AND ts < ?"
    differ = "AND coalesce(effective_verdict, 'allow') != coalesce(verdict, 'allow')"
    moved = {str(i): str(v) for i, v in await rows(db, f"{view} {differ}", iso(since), iso(UNTIL))}
    assert {i: v for i, v in changed.items() if i in moved} == moved


@pytest.mark.parametrize("processes", [1, 3], ids=["one-process", "workers"])
@pytest.mark.parametrize("zone", ZONES)
async def test_days_in_a_zone_with_daylight_saving_are_the_conversions_local_dates(
    db: aiosqlite.Connection, store: Path, channels: Channels, zone: str, processes: int
) -> None:
    """Each period of local days, its ends given as local midnights (as the dashboard gives
    them): the conversions of those days, credited per local date, as the plain reading and
    the pure models credit them, through the workers too."""
    attribution = await asyncio.to_thread(Attribution, AttributionOptions(timezone=zone))
    local = ZoneInfo(zone)
    engine = Reports(store, attribution, channels, processes, min_slice=40, min_share=100)
    await engine.open()
    accepted = attribution.verdicts
    try:
        for first, last in LOCAL_PERIODS:
            since = datetime.combine(first, time.min, local)
            until = datetime.combine(last, time.min, local)
            if processes > 1:
                assert len(await engine.run(engine.slices, since, until, None)) == processes
                assert len(await engine.run(engine.shares, since, until, None)) == processes
            utc = (since.astimezone(UTC), until.astimezone(UTC))
            reference = await Reference(attribution, channels).read(db, None, *utc)
            assert len(reference.convs) > 100
            # data_driven learns from the journeys of the period's instants, as the view has them.
            params, _ = await engine.run(engine.learn, ["data_driven"], since, until, None, accepted)
            journeys = reference.journeys(accepted)
            journeys += await other_journeys(db, channels, accepted, reference.ids, *utc)
            assert dict(params.channel_weights) == markov_weights(journeys)
            attribution.params = params
            for model in ("linear", "time_decay", "last_non_direct", "data_driven"):
                table = await engine.credit(since, until, [model], by_day=True)
                got = {
                    (str(day), group, cur): (sums[model][0], sums[model][1])
                    for (day, group, cur), sums in table.items()
                    if any(sums[model])
                }
                assert got == reference.daily(model, accepted, local), (first, model)
                days = {day for day, _, _ in got}
                assert min(days) == first.isoformat() and max(days) < last.isoformat()
    finally:
        await engine.close()
