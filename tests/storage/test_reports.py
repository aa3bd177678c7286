"""Attribution over a real SQLite store: conversions joined through identities to every
device's touchpoints, one model's credits per channel."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import product
from pathlib import Path

import aiosqlite
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.attribution import MODELS, Attribution, Touch
from gateway.channels import INTERNAL, Channels
from gateway.events import Binding, Conversion, Event, Touchpoint, iso
from gateway.ids import Uuid7
from gateway.metrics import Metrics
from gateway.options import AttributionOptions, ChannelsOptions, StorageOptions
from storage.crediting import MICRO, Cand, Conv, Eligibility, credit_table
from storage.local import LocalStore, connect
from storage.people import People, Share, Snapshot
from storage.report_journeys import Journeys
from storage.report_period import Part
from storage.report_pool import WHOLE
from storage.reports import Reports
from tests.storage.stores import credits_by_channel

T0 = datetime(2026, 11, 1, tzinfo=UTC)
SINCE, UNTIL = T0, T0 + timedelta(days=30)
new_id = Uuid7()


def at(days: float) -> datetime:
    return T0 + timedelta(days=days)


def tp(visitor: str, days: float, channel: str | None, **fields: str) -> Touchpoint:
    ts = at(days)
    return Touchpoint(new_id(int(ts.timestamp() * 1000)), iso(ts), "n", visitor, channel=channel, **fields)


def conversion(
    days: float, value: float, *, visitor: str | None = None, user: str | None = None
) -> Conversion:
    ts = at(days)
    cid = new_id(int(ts.timestamp() * 1000))
    return Conversion(cid, iso(ts), "n", "purchase", "order:" + cid, visitor, user, value, "EUR")


def bind(visitor: str, user: str) -> Binding:
    return Binding(new_id(int(T0.timestamp() * 1000)), iso(T0), "n", visitor, user, "login")


EVENTS: list[Event] = [
    # One user on two devices: the phone saw the ad, the laptop the rest; 100.00 EUR on day 9.
    bind("phone", "u1"),
    bind("laptop", "u1"),
    tp("laptop", -40, "Paid Search"),  # 49 days before: outside every window
    tp("phone", 0, "Paid Social"),
    tp("laptop", 3, "Email"),
    tp("laptop", 7, "Organic Search"),
    conversion(9, 100.00, visitor="laptop"),  # recorded for the visitor; its user joins the phone
    tp("laptop", 9.5, "Referral"),  # after the conversion
    # An unbound visitor: a referral, then a landing stored before channels existed.
    tp("v3", 1, "Referral"),
    tp("v3", 1.5, None, referrer_host="www.google.com"),
    conversion(2, 10.01, visitor="v3"),
    # Nothing eligible: Direct.
    conversion(5, 5.00, visitor="v5"),
    # Someone who did not convert, and a conversion outside the period.
    tp("v4", 1, "Display"),
    tp("v4", 2, "Email"),
    conversion(31, 1000.0, visitor="v4"),
]


@pytest.fixture(scope="module")
def channels() -> Channels:
    """Built outside the event loop, as ``load_settings`` does: it reads the shipped table."""
    return Channels(ChannelsOptions())


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    store = LocalStore(tmp_path / "gw.db", StorageOptions(), Metrics())
    await store.open()
    await store.write(EVENTS)
    await store.close()
    conn = await connect(tmp_path / "gw.db")
    yield conn
    await conn.close()


Report = Callable[..., Awaitable[dict[str, tuple[int, int]]]]


@pytest.fixture
def report(db: aiosqlite.Connection, channels: Channels) -> Report:
    """``await report(model, verdicts=None)``: channel → (value in cents, micro-conversions)."""

    async def run(model: str, verdicts: list[str] | None = None) -> dict[str, tuple[int, int]]:
        attribution = Attribution(AttributionOptions())
        rows = await credits_by_channel(db, attribution, channels, model, SINCE, UNTIL, verdicts=verdicts)
        assert all(r.currency == "EUR" for r in rows)
        return {r.channel: (r.value, r.conversions) for r in rows}

    return run


async def test_linear_across_devices_windows_and_old_rows(report: Report) -> None:
    assert await report("linear") == {
        # the user's 100.00: three touches on two devices, ties to the later touch
        "Paid Social": (3333, 333_333),
        "Email": (3333, 333_333),
        # 33.34 of the user's, and 5.01 of v3's 10.01 (its old row classified on the fly)
        "Organic Search": (3334 + 501, 333_334 + 500_000),
        "Referral": (500, 500_000),
        "Direct": (500, MICRO),  # v5 had no touchpoint
    }


async def test_last_touch_and_first_touch(report: Report) -> None:
    assert await report("last_touch") == {
        "Organic Search": (10000 + 1001, 2 * MICRO),
        "Direct": (500, MICRO),
    }
    assert await report("first_touch") == {
        "Paid Social": (10000, MICRO),
        "Referral": (1001, MICRO),
        "Direct": (500, MICRO),
    }


@pytest.mark.parametrize("model", sorted(MODELS))
async def test_every_model_credits_the_whole_value(report: Report, model: str) -> None:
    credited = await report(model)
    assert sum(v for v, _ in credited.values()) == 10000 + 1001 + 500
    assert sum(c for _, c in credited.values()) == 3 * MICRO


async def test_data_driven_learns_from_journeys_that_did_not_convert(report: Report) -> None:
    credited = await report("data_driven")
    # Display is on no converting path, so whatever its weight it is never credited; the
    # journeys that did not convert still shape the other channels' weights.
    assert "Display" not in credited
    assert credited["Direct"] == (500, MICRO)
    assert credited["Paid Social"][0] > 0


async def test_quarantined_touchpoints_are_excluded_once_verdicts_exist(
    db: aiosqlite.Connection, report: Report
) -> None:
    # Touchpoints scored "review" by the bots addon earn no credit.
    await db.execute("UPDATE touchpoints SET verdict = 'review' WHERE channel = 'Paid Social'")
    credited = await report("first_touch")
    assert "Paid Social" not in credited and credited["Email"] == (10000, MICRO)
    widened = await report("first_touch", verdicts=["allow", "review"])
    assert widened["Paid Social"] == (10000, MICRO)


async def test_an_empty_period(db: aiosqlite.Connection, channels: Channels) -> None:
    attribution = Attribution(AttributionOptions())
    assert await credits_by_channel(db, attribution, channels, "linear", at(100), at(101)) == []


@pytest.mark.parametrize(("param", "names"), [("utm_tier", ("c_tier", "utm_tier")), ("funnel", ("funnel",))])
async def test_a_tier_parameter_shortens_the_window(
    tmp_path: Path, channels: Channels, param: str, names: tuple[str, ...]
) -> None:
    """utm_tier=conversion (7 days) drops a touch 10 days old; the same touch untiered
    (awareness, 30 days) counts. The tier is read from raw_params only for rows naming one:
    through the partial index for *_tier names, by a scan for any other name."""
    store = LocalStore(tmp_path / "gw.db", StorageOptions(), Metrics())
    await store.open()
    tiered = tp("a", 0, "Paid Search")
    tiered.raw_params = {param: "Conversion"}
    await store.write([tiered, tp("a", 8, "Email"), tp("b", 0, "Paid Search"), tp("b", 8, "Email")])
    await store.write([conversion(10, 10.0, visitor="a"), conversion(10, 20.0, visitor="b")])
    await store.close()
    conn = await connect(tmp_path / "gw.db")
    try:
        attribution = Attribution(AttributionOptions(tier_params=names))
        rows = await credits_by_channel(conn, attribution, channels, "first_touch", SINCE, UNTIL)
    finally:
        await conn.close()
    assert {r.channel: r.value for r in rows} == {"Email": 1000, "Paid Search": 2000}


async def test_time_decay_exact_ties_go_to_the_later_touch_in_a_report(
    tmp_path: Path, channels: Channels
) -> None:
    """The report engine's time_decay (``storage/crediting.py``), as the model's: two touches
    14 d 4 h and one 4 h before a 0.02 EUR order weigh exactly 1 : 1 : 4 (two half-lives
    apart), 1/3, 1/3 and 4/3 cents, so the unit left over goes to the latest touch; and
    for 0.10 EUR (5/3, 5/3, 20/3) the two units go to the two latest."""
    store = LocalStore(tmp_path / "gw.db", StorageOptions(), Metrics())
    await store.open()
    for visitor, value in (("a", 0.02), ("b", 0.10)):
        await store.write(
            [tp(visitor, 5, "Email"), tp(visitor, 5, "Display"), tp(visitor, 19, "Paid Search")]
        )
        await store.write([conversion(19 + 4 / 24, value, visitor=visitor)])
    await store.close()
    conn = await connect(tmp_path / "gw.db")
    try:
        rows = await credits_by_channel(
            conn, Attribution(AttributionOptions()), channels, "time_decay", SINCE, UNTIL
        )
    finally:
        await conn.close()
    # a: 0, 0, 2 cents; b: 1, 2, 7 cents. Which of the two touches at one time comes later is
    # their ids' order, random within a millisecond: only which takes 1 and which 2 varies.
    got = {r.channel: r.value for r in rows}
    assert got["Paid Search"] == 9 and sorted([got["Email"], got["Display"]]) == [1, 2], got


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(-40 * 86400, 2 * 86400),
            st.sampled_from(["Email", "Direct", INTERNAL, "Paid Search"]),
            st.sampled_from([None, "allow", "review", "block"]),
            st.sampled_from(["awareness", "consideration", "conversion"]),
        ),
        max_size=12,
    ),
    st.sampled_from([frozenset({"allow"}), frozenset({"allow", "review"})]),
)
def test_text_eligibility_matches_the_models_eligibility(
    touches: list[tuple[int, str, str | None, str]], accepted: frozenset[str]
) -> None:
    """The reports compare stored ISO timestamps as text; the models compare datetimes. Same
    answer, window boundaries (to the second and on it) included."""
    attribution = Attribution(AttributionOptions())
    at_ = at(40)
    conv = Conv("c", iso(at_), at_, 100, "EUR")
    models: list[Touch] = []
    for i, (offset, channel, verdict, tier) in enumerate(touches):
        ts = at_ - timedelta(seconds=offset) if offset % 7 else at_ - attribution.tiers.window(tier)
        conv.touches.append((iso(ts), f"t{i:02d}", channel, verdict, "\x00" + tier, channel, "v"))
        models.append(Touch(f"t{i:02d}", ts, channel, tier, verdict))
    expected = [t.id for t in attribution.eligible(models, at_, accepted)]
    assert [c[1] for c in Eligibility(attribution)(conv, accepted)] == expected


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(
                st.tuples(
                    st.integers(0, 35 * 86400),
                    st.sampled_from(["Email", "Direct", "Paid Search", "Referral"]),
                    st.sampled_from([None, "allow", "review"]),
                ),
                max_size=6,
            ),
            st.integers(-100_000, 100_000),
        ),
        max_size=8,
    ),
    st.sampled_from(sorted(MODELS)),
)
def test_the_report_engine_credits_what_the_models_credit(
    conversions: list[tuple[list[tuple[int, str, str | None]], int]], model: str
) -> None:
    """Candidate tuples, text eligibility and cached shares give, conversion by conversion,
    exactly the credits of ``Attribution.credit`` on ``Touch`` objects: refunds (negative
    values) and zero values included, and each conversion twice, so that the second one's
    shares come from what the first one's left cached."""
    attribution = Attribution(AttributionOptions())
    params = replace(attribution.params, channel_weights={"Email": 0.5, "Direct": 0.1, "Paid Search": 0.4})
    attribution.params = params
    accepted = frozenset({"allow"})
    convs, expected = [], defaultdict(lambda: [0, 0])
    for n, (journey, minor) in enumerate(conversions + conversions):
        at_ = at(36)
        conv = Conv(f"c{n}", iso(at_), at_, minor, "EUR")
        models = []
        for i, (age, channel, verdict) in enumerate(journey):
            ts = at_ - timedelta(seconds=age)
            conv.touches.append((iso(ts), f"t{n}-{i}", channel, verdict, None, None, "v"))
            models.append(Touch(f"t{n}-{i}", ts, channel, None, verdict))
        convs.append(conv)
        for total, slot in ((minor, 0), (MICRO, 1)):
            for credit in attribution.credit(model, models, at_, total, accepted):
                expected[credit.channel][slot] += credit.amount
    table = credit_table(Eligibility(attribution), convs, [model], "channel", accepted, params)
    got = {group: sums[model] for (_, group, _), sums in table.items()}
    assert got == {k: v for k, v in expected.items() if any(v)}


async def test_an_analysts_override_decides_over_the_stored_verdict(
    db: aiosqlite.Connection, report: Report
) -> None:
    """Reports read the effective verdict: an analyst who blocks a touchpoint stored as
    unscored (or allowed) takes its credit away."""
    await db.execute(
        "INSERT INTO verdict_changes (id, ts, node, touchpoint_id, verdict, reasons, origin, note, analyst) "
        "SELECT id || '-override', ts, node, id, 'block', '[]', 'analyst', 'click farm', 'ana' "
        "FROM touchpoints WHERE channel = 'Paid Social'"
    )
    await db.commit()
    credited = await report("first_touch")
    assert "Paid Social" not in credited and credited["Email"] == (10000, MICRO)


async def _journeys_store(tmp_path: Path, channels: Channels, events: list[Event], indexed: bool) -> Reports:
    """Reports (one process) over a store of ``events``; unless ``indexed``, a later row
    stretches the stored time so the period is less than half of it (read from its range
    of ids, not the visitor index)."""
    if not indexed:
        events = [*events, tp("later", 100, "Email")]
    store = LocalStore(tmp_path / "gw.db", StorageOptions(), Metrics())
    await store.open()
    await store.write(events)
    await store.close()
    reports = Reports(tmp_path / "gw.db", Attribution(AttributionOptions()), channels, processes=1)
    await reports.open()
    return reports


@pytest.mark.parametrize("indexed", [True, False], ids=["visitor-index", "id-range"])
async def test_the_journeys_that_did_not_convert_are_made_per_person(
    tmp_path: Path, channels: Channels, indexed: bool
) -> None:
    """A visitor bound to nobody is a person alone, its journey made from its rows in id
    order, sorted by time where an imported row's time goes back; bound devices join their
    user's journey, and so does a visitor whose key is that user's (a person is the user of
    the visitor's earliest binding, else the visitor: one key, one person); a row stored
    before channels existed is classified. Whether the period is read through the visitor
    index (rows by visitor) or from its range of ids (rows by time), the same journeys."""
    late = tp("alone", 4, "Email")
    early = tp("alone", 3, "Display")
    early.id = new_id(int(at(5).timestamp() * 1000))  # imported: its id after the later touch's
    events: list[Event] = [
        bind("phone", "u1"),
        tp("phone", 1, "Paid Social"),
        tp("u1", 2, "Referral"),  # no binding: the visitor named like the user
        tp("laptop", 3, "Email"),
        bind("laptop", "u1"),
        tp("alone", 1, "Affiliates"),
        late,
        early,
        tp("legacy", 1, "Email"),
        tp("legacy", 2, None, referrer_host="www.google.com"),
        tp("single", 2, "Video"),
    ]
    reports = await _journeys_store(tmp_path, channels, events, indexed)
    try:
        assert bool(await reports.run(reports._scan, SINCE, UNTIL)) == indexed
        got = await reports.run(reports._other_journeys, SINCE, UNTIL, None, frozenset({"allow"}))
    finally:
        await reports.close()
    assert sorted(map(list, got.elements())) == [
        ["Affiliates", "Display", "Email"],
        ["Email", "Organic Search"],
        ["Paid Social", "Referral", "Email"],
        ["Video"],
    ]


KEYS = ["00000000", "3fffffff", "40000000", "7fffffff", "80000000", "80000001", "c0000000", "ffffffff"]
"""Lone visitors' keys: the two shares' cut ("80000000", the second's) and its neighbours."""
SKIPS = [
    set(),
    {"00000000"},
    {"ffffffff"},
    {"00000000", "ffffffff"},
    {"3fffffff", "40000000"},
    {"7fffffff", "80000000"},
    {"80000000"},
    {"3fffffff", "80000001", "c0000000"},
    set(KEYS),
    {"0", "zz", "8"},  # no such visitors: before every key, after, and between the shares'
]


@pytest.mark.parametrize("indexed", [True, False], ids=["visitor-index", "id-range"])
async def test_the_other_journeys_leave_out_exactly_the_visitors_the_conversions_read(
    tmp_path: Path, channels: Channels, indexed: bool
) -> None:
    """The visitors whose rows the conversions' read holds (``touched``) are left out of the
    period's read, the others kept: read around them through the visitor index (a range
    before, between and after them), or tested row by row over the range of ids. Whatever
    they are (the first key, the last, neighbours, the shares' cut, keys of no visitor), for
    the whole period and for each of two shares' ranges of keys."""
    events: list[Event] = []
    for key in KEYS:
        events += [tp(key, 1, "Email"), tp(key, 2, f"C{key}")]
    reports = await _journeys_store(tmp_path, channels, events, indexed)
    none = Snapshot(None, 0)
    parts: list[Part] = [WHOLE, Share(0, 2, none, none), Share(1, 2, none, none)]
    try:
        assert bool(await reports.run(reports._scan, SINCE, UNTIL)) == indexed
        for skip, part in product(SKIPS, parts):
            touched: dict[str, list[Cand]] = {key: [] for key in skip}
            got = await reports.run(
                reports._other_journeys, SINCE, UNTIL, None, frozenset({"allow"}), None, part, touched
            )
            lo, hi = part.keys if isinstance(part, Share) else WHOLE
            kept = [k for k in KEYS if k not in skip and (lo is None or k >= lo) and (hi is None or k < hi)]
            assert got == Counter(("Email", f"C{key}") for key in kept), (skip, part)
    finally:
        await reports.close()


@settings(max_examples=300, deadline=None)
@given(
    bindings=st.lists(st.tuples(st.sampled_from("abcdu"), st.sampled_from(["u", "w"])), max_size=4),
    rows=st.lists(
        st.tuples(st.sampled_from("abcdeu"), st.integers(0, 3), st.sampled_from(["A", "B", None, INTERNAL])),
        max_size=14,
    ),
    gathered=st.sets(st.sampled_from("abcdeu")),
)
def test_journeys_counted_as_they_come_are_every_persons_sorted_journey(
    bindings: list[tuple[str, str]], rows: list[tuple[str, int, str | None]], gathered: set[str]
) -> None:
    """``Journeys`` (the other journeys of ``data_driven``) makes a person alone's path from
    its rows as they come, checks their order, counts it with the others of the same path,
    and gathers the rest: the same paths as every person's rows gathered, classified and
    sorted by time then id — with ties of time, times that go back in id order, rows with no
    channel (one classified as internal), a visitor keyed like a user, rows of the same
    visitor both added and gathered one by one."""
    people = People(bindings, ())
    # Rows in id order; times in few values (ties) and not in id order.
    table = [(f"2026-11-0{t + 1}", f"id{i:02d}", channel, None, v) for i, (v, t, channel) in enumerate(rows)]
    classified = {r[1]: INTERNAL if int(r[1][2:]) % 3 == 0 else "C" for r in table if r[2] is None}
    journeys = Journeys(people)
    for visitor in "abcdeu":
        mine = [r for r in table if r[4] == visitor and r[2] != INTERNAL]  # the caller's filter
        if visitor in gathered:
            for row in mine:
                journeys.gather(visitor, row)
        else:
            journeys.add(visitor, mine)
    got = journeys.done(lambda ids: {tid: classified[tid] for tid in ids})

    expected: Counter[tuple[str, ...]] = Counter()
    persons: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for ts, tid, channel, _, visitor in table:
        person = people.person_of.get(visitor, visitor)
        persons[person].append((ts, tid, channel if channel is not None else classified[tid]))
    for path in persons.values():
        channels = tuple(c for _, _, c in sorted(path) if c != INTERNAL)
        if channels:
            expected[channels] += 1
    assert got == expected
