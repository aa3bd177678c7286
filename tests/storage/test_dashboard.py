"""storage/dashboard.py over a real SQLite store: bot share with and without a ``verdict``
column, the lookback edge of "conversions touched", and the period's days."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiosqlite
import pytest

from gateway.attribution import Attribution, Touch
from gateway.channels import Channels
from gateway.events import Binding, Conversion, Event, Touchpoint, VerdictChange, iso
from gateway.ids import Uuid7
from gateway.metrics import Metrics
from gateway.options import AttributionOptions, ChannelsOptions, StorageOptions
from storage.dashboard import Period, summary
from storage.local import LocalStore, connect
from storage.reports import Reports

T0 = datetime(2026, 11, 1, tzinfo=UTC)
new_id = Uuid7()


def tp(visitor: str, ts: datetime, campaign: str | None, creator_id: str | None = None) -> Touchpoint:
    tid = new_id(int(ts.timestamp() * 1000))
    return Touchpoint(tid, iso(ts), "n", visitor, campaign=campaign, creator_id=creator_id, channel="Email")


def conversion(visitor: str, ts: datetime, name: str = "signup", value: float = 10.0) -> Conversion:
    cid = new_id(int(ts.timestamp() * 1000))
    return Conversion(cid, iso(ts), "n", name, "order:" + cid, visitor, None, value, "EUR")


@pytest.fixture(scope="module")
def channels() -> Channels:
    return Channels(ChannelsOptions())


async def store(tmp_path: Path, events: list[Event]) -> aiosqlite.Connection:
    local = LocalStore(tmp_path / "gw.db", StorageOptions(), Metrics())
    await local.open()
    await local.write(events)
    await local.close()
    return await connect(tmp_path / "gw.db")


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    at = T0 + timedelta(days=40)
    window = timedelta(days=30)  # the default widest lookback (awareness)
    conn = await store(
        tmp_path,
        [
            tp("a", at - window, "edge"),  # exactly on the window's edge: counts
            tp("b", at - window - timedelta(seconds=1), "old"),  # one second older: does not
            tp("a", at - timedelta(days=1), "recent"),
            tp("b", at - timedelta(days=1), "recent"),
            conversion("a", at),
            conversion("b", at + timedelta(hours=1)),
        ],
    )
    yield conn
    await conn.close()


async def run(
    db: aiosqlite.Connection, channels: Channels, since: date, until: date, conversion: str | None = None
) -> dict:
    reports = await Reports.on(db, Attribution(AttributionOptions()), channels)
    try:
        return await summary(db, reports, "linear", Period(since, until), conversion=conversion)
    finally:
        await reports.close()


async def test_conversions_touched_respect_the_lookback_edge(
    db: aiosqlite.Connection, channels: Channels
) -> None:
    # A period that holds every landing and both conversions (on December 11).
    got = await run(db, channels, date(2026, 11, 1), date(2026, 12, 31))
    touched = {c["name"]: c["conversions"] for c in got["top_campaigns"]}
    assert touched == {"recent": 2, "edge": 1, "old": 0}


async def test_campaigns_and_creators_touched_are_counted_apart(tmp_path: Path, channels: Channels) -> None:
    # One join serves both tables: a landing with a campaign and a creator counts for both; a
    # campaign named like a creator counts for the campaign only.
    at = T0 + timedelta(days=5)
    conn = await store(
        tmp_path,
        [
            tp("a", at - timedelta(days=1), "spring", "cr_x"),
            conversion("a", at),
            tp("b", at - timedelta(days=2), "cr_x"),
            tp("b", at - timedelta(days=1), None, "cr_y"),
            conversion("b", at),
            tp("c", at - timedelta(days=1), None, "cr_y"),  # never converts
            tp("d", at - timedelta(days=3), "cr_x"),
            conversion("d", at),
        ],
    )
    try:
        got = await run(conn, channels, date(2026, 11, 1), date(2026, 11, 30))
    finally:
        await conn.close()
    campaigns = {c["name"]: (c["touchpoints"], c["visitors"], c["conversions"]) for c in got["top_campaigns"]}
    creators = {c["name"]: (c["touchpoints"], c["visitors"], c["conversions"]) for c in got["top_creators"]}
    assert campaigns == {"spring": (1, 1, 1), "cr_x": (2, 2, 2)}
    assert creators == {"cr_y": (2, 2, 1), "cr_x": (1, 1, 1)}


async def test_the_top_tables_say_how_many_names_the_period_has(tmp_path: Path, channels: Channels) -> None:
    # A shop of many campaigns: the tables list the ten most landed, and say of how many (the
    # names outside the period, and landings without a name, are not counted).
    at = T0 + timedelta(days=5)
    events: list[Event] = [tp(f"v{n}", at, f"campaign-{n:02d}", f"cr_{n % 3}") for n in range(25)]
    events += [tp("w", at, None), tp("x", T0 - timedelta(days=1), "before", "cr_before")]
    conn = await store(tmp_path, events)
    try:
        got = await run(conn, channels, date(2026, 11, 1), date(2026, 11, 30))
        empty = await run(conn, channels, date(2026, 11, 20), date(2026, 11, 30))
    finally:
        await conn.close()
    assert len(got["top_campaigns"]) == 10 and len(got["top_creators"]) == 3
    assert got["landed"] == {"campaigns": 25, "creators": 3}
    assert empty["landed"] == {"campaigns": 0, "creators": 0}


async def test_top_names_landed_alike_are_in_the_order_of_their_numbers(
    tmp_path: Path, channels: Channels
) -> None:
    """Names landed on alike were ranked by their text's code points: Region 1, Region 10,
    Region 11, Region 12, Region 2… (and the ten shown were cut from that order, Region 8 and 9
    left out for Region 10 to 12). Now as the dashboard orders channels: by the names' numbers,
    Region 2 before Region 10, case aside (``cr_B`` between ``cr_a`` and ``cr_c``)."""
    at = T0 + timedelta(days=5)
    regions = [f"Region {n}" for n in range(1, 13)]
    creators = ["cr_10", "cr_2", "cr_B", "cr_a", "cr_c", "cr_1"]
    events: list[Event] = [tp(f"v{n}", at, name) for n, name in enumerate(reversed(regions))]
    events += [tp(f"w{n}", at, None, name) for n, name in enumerate(creators)]
    events += [tp("x1", at, "Region 7"), tp("x2", at, "Region 7")]  # more landings: first
    conn = await store(tmp_path, events)
    try:
        got = await run(conn, channels, date(2026, 11, 1), date(2026, 11, 30))
    finally:
        await conn.close()
    assert [c["name"] for c in got["top_campaigns"]] == [
        "Region 7",
        *[f"Region {n}" for n in (1, 2, 3, 4, 5, 6, 8, 9)],
        "Region 10",
    ]
    assert [c["name"] for c in got["top_creators"]] == ["cr_1", "cr_2", "cr_10", "cr_a", "cr_B", "cr_c"]


async def test_one_conversion_name_at_a_time(tmp_path: Path, channels: Channels) -> None:
    at = T0 + timedelta(days=5)
    conn = await store(
        tmp_path,
        [
            tp("a", at - timedelta(days=1), "spring"),
            conversion("a", at, "signup", 0.0),
            conversion("a", at + timedelta(hours=1), "purchase", 50.0),
            tp("b", at - timedelta(days=1), "summer"),
            conversion("b", at, "signup", 0.0),
        ],
    )
    try:
        every = await run(conn, channels, date(2026, 11, 1), date(2026, 11, 30))
        bought = await run(conn, channels, date(2026, 11, 1), date(2026, 11, 30), "purchase")
        nothing = await run(conn, channels, date(2026, 11, 1), date(2026, 11, 30), "refund")
    finally:
        await conn.close()
    assert every["conversion"] is None and every["conversion_names"] == ["signup", "purchase"]
    assert every["totals"]["conversions"] == 3
    assert bought["conversion"] == "purchase" and bought["conversion_names"] == ["signup", "purchase"]
    assert bought["totals"] == {"touchpoints": 2, "visitors": 2, "not_credited": 0, "conversions": 1}
    linear = [r for r in bought["comparison"] if r["model"] == "linear"]
    assert linear == [
        {"model": "linear", "channel": "Email", "currency": "EUR", "conversions": 1.0, "value": 50.0}
    ]
    touched = {c["name"]: c["conversions"] for c in bought["top_campaigns"]}
    assert touched == {"spring": 1, "summer": 0}  # b signed up but bought nothing
    assert nothing["totals"]["conversions"] == 0 and nothing["comparison"] == []


async def test_bot_share_without_and_with_verdicts(db: aiosqlite.Connection, channels: Channels) -> None:
    since, until = date(2026, 11, 1), date(2026, 12, 31)
    assert (await run(db, channels, since, until))["bots"] == {"scored": False, "verdicts": {"allow": 4}}
    # Scored rows (unscored ones keep a NULL verdict).
    await db.execute("UPDATE touchpoints SET verdict = 'block' WHERE campaign = 'old'")
    await db.execute("UPDATE touchpoints SET verdict = 'review' WHERE campaign = 'edge'")
    await db.commit()
    got = await run(db, channels, since, until)
    assert got["bots"] == {"scored": True, "verdicts": {"allow": 2, "block": 1, "review": 1}}
    # Only allowed touchpoints earn credit: "a" keeps its recent Email touch, nothing else changes.
    linear = [r for r in got["comparison"] if r["model"] == "linear"]
    assert linear == [
        {"model": "linear", "channel": "Email", "currency": "EUR", "conversions": 2.0, "value": 20.0}
    ]


async def test_conversions_touched_apply_verdict_changes_of_the_lookback_before_the_period(
    tmp_path: Path, channels: Channels
) -> None:
    """A landing of the lookback window before the period counts by its effective verdict, as
    the reports credit it: an analyst blocked a's landing of cr_x in November (a's December
    conversion does not credit cr_x) and allowed b's blocked landing of cr_y (b's does)."""
    before = T0 + timedelta(days=25)  # November 26: before the period, inside its lookback
    at = T0 + timedelta(days=31)  # December 2
    blocked, allowed = tp("a", before, None, "cr_x"), replace(tp("b", before, None, "cr_y"), verdict="block")

    def override(landing: Touchpoint, verdict: str) -> VerdictChange:
        return VerdictChange(
            new_id(int(at.timestamp() * 1000)),
            iso(at),
            "n",
            landing.id,
            verdict,
            None,
            [],
            "analyst",
            "test",
            "ana",
        )

    conn = await store(
        tmp_path,
        [
            blocked,
            override(blocked, "block"),
            allowed,
            override(allowed, "allow"),
            conversion("a", at),
            conversion("b", at),
            tp("c", at, None, "cr_x"),  # the period's landings that rank both creators
            tp("d", at, None, "cr_y"),
        ],
    )
    since, until = datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    reports = await Reports.on(conn, Attribution(AttributionOptions()), channels)
    try:
        got = await summary(conn, reports, "linear", Period(since.date(), until.date()), parts=("counts",))
        table = await reports.credit(since, until, ["linear"], "creator_id")
    finally:
        await reports.close()
        await conn.close()
    credited = {
        group: sums["linear"][1] / 1_000_000 for (_, group, _), sums in table.items() if any(sums["linear"])
    }
    assert credited == {"cr_y": 1.0, None: 1.0}  # the reports: b's conversion credits cr_y, a's no creator
    touched = {c["name"]: c["conversions"] for c in got["top_creators"]}
    assert touched == {"cr_x": 0, "cr_y": 1}


def test_period_days() -> None:
    assert Period(date(2026, 2, 27), date(2026, 3, 2)).days(UTC) == ["2026-02-27", "2026-02-28", "2026-03-01"]
    # Berlin's 23-hour day is one, and Samoa's 30 December 2011, skipped whole, is none.
    berlin = ZoneInfo("Europe/Berlin")
    assert Period(date(2026, 3, 28), date(2026, 3, 31)).days(berlin) == [
        "2026-03-28",
        "2026-03-29",
        "2026-03-30",
    ]
    apia = ZoneInfo("Pacific/Apia")
    assert Period(date(2011, 12, 29), date(2012, 1, 1)).days(apia) == ["2011-12-29", "2011-12-31"]
    assert Period(date(2011, 12, 30), date(2011, 12, 31)).days(apia) == []


async def test_a_period_of_local_days_reads_the_whole_window_across_a_dst_change(
    tmp_path: Path, channels: Channels
) -> None:
    """The lookback window is a span of hours (30 x 24), counted back from the conversion's
    instant. April 1 in Berlin begins at 22:00Z on March 31 (summer time); 30 x 24 hours
    before it is 22:00Z on March 1, in winter time: 23:00 there, not midnight. Counted back on
    the wall clock from the period's first midnight (March 2, 00:00 CET = 23:00Z), the
    period's read started an hour late and lost the touch the pure model credits."""
    first = datetime(2026, 3, 31, 22, tzinfo=UTC)  # 2026-04-01 00:00 CEST
    old = first - timedelta(days=30) + timedelta(minutes=30)  # 22:30Z on March 1: inside
    conn = await store(
        tmp_path,
        [
            tp("a", old, "spring"),
            conversion("a", first),
            tp("b", first + timedelta(hours=10), "spring"),  # the period's landing of the campaign
        ],
    )
    berlin = await asyncio.to_thread(Attribution, AttributionOptions(timezone="Europe/Berlin"))
    reports = await Reports.on(conn, berlin, channels)
    try:
        got = await summary(conn, reports, "linear", Period(date(2026, 4, 1), date(2026, 4, 2)))
    finally:
        await reports.close()
        await conn.close()
    assert got["by_day"] == [
        {"day": "2026-04-01", "channel": "Email", "currency": "EUR", "conversions": 1.0, "value": 10.0}
    ]
    assert [(c["name"], c["conversions"]) for c in got["top_campaigns"]] == [("spring", 1)]
    # The pure model, for reference: the touch is inside the window.
    (credit,) = berlin.credit("linear", [Touch("t", old, "Email")], first, 1000)
    assert credit.channel == "Email"


async def test_a_population_s_conversions_are_those_its_credits_share_out(
    tmp_path: Path, channels: Channels
) -> None:
    """With a population chosen, the comparison credited that population's conversions while
    the totals counted every population's: ``population_conversions`` counts those its
    touchpoints reach, which every model shares out whole (by day as over the period)."""
    at = T0 + timedelta(days=40)
    window = timedelta(days=30)  # the default widest lookback

    def of(population: str, visitor: str, ts: datetime, verdict: str | None = None) -> Touchpoint:
        return replace(tp(visitor, ts, "c"), consent=population, verdict=verdict)

    user_key = "u" * 32
    conn = await store(
        tmp_path,
        [
            of("cookieless", "a", at - window),  # exactly on the window's edge: reaches a's
            of("cookie", "a", at - timedelta(days=1)),
            conversion("a", at),
            of("cookieless", "b", at - window - timedelta(microseconds=1)),  # a microsecond too old
            of("cookie", "b", at - timedelta(days=2)),
            conversion("b", at),
            of("cookieless", "c", at - timedelta(hours=1), verdict="block"),  # any verdict reaches it
            conversion("c", at),
            of("cookieless", "d", at + timedelta(hours=1)),  # after the conversion: does not
            conversion("d", at),
            conversion("e", at),  # no touchpoint at all
            # The user's phone landed cookieless; the laptop bought.
            Binding(new_id(int(T0.timestamp() * 1000)), iso(T0), "n", "phone", user_key, "login"),
            Binding(new_id(int(T0.timestamp() * 1000)), iso(T0), "n", "laptop", user_key, "login"),
            of("cookieless", "phone", at - timedelta(days=3)),
            conversion("laptop", at + timedelta(hours=2), "purchase"),
        ],
    )
    reports = await Reports.on(conn, Attribution(AttributionOptions()), channels)
    period = Period(date(2026, 12, 1), date(2026, 12, 31))
    try:
        found = {
            (population, name): await summary(conn, reports, "linear", period, population, name)
            for population in (None, "cookie", "cookieless", "no_consent")
            for name in (None, "purchase")
        }
    finally:
        await reports.close()
        await conn.close()
    counted = {key: body["totals"].get("population_conversions") for key, body in found.items()}
    assert counted == {
        (None, None): None,  # every population: the totals' conversions
        (None, "purchase"): None,
        ("cookie", None): 2,  # a, b
        ("cookie", "purchase"): 0,
        ("cookieless", None): 3,  # a, c, the laptop's
        ("cookieless", "purchase"): 1,
        ("no_consent", None): 0,
        ("no_consent", "purchase"): 0,
    }
    for (population, name), body in found.items():
        every = 6 if name is None else 1
        assert body["totals"]["conversions"] == every  # every population's, as the landings
        shared = counted[population, name] if population is not None else every
        for model in body["models"]:
            credited = sum(r["conversions"] for r in body["comparison"] if r["model"] == model)
            assert credited == pytest.approx(shared), (population, name, model)
        assert sum(r["conversions"] for r in body["by_day"]) == pytest.approx(shared)
