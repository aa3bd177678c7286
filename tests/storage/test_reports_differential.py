"""Every attribution report against ``tests/reference_models.py`` (a reading of README
"Attribution" written without the code), on small random stores written through the store's
own writer: what ``test_models_reference.py`` does for ``model=all``, here also for

- each model asked alone, and ``group_by=medium``;
- bindings made at any time, after the conversions too (a device bound later still counts);
- verdict changes: re-scores, analysts' overrides and withdrawn overrides (the effective
  verdict decides), and ``verdicts=`` per query;
- negative values (refunds: intake refuses them, but a store may hold one), shared as their
  positive mirror;
- the paths report, the creator payouts (approved and quarantined rows, clicks, amounts),
  and the CSV and NDJSON exports of each report, read back;
- the report worker processes, forced with one conversion per slice.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import statistics
import tempfile
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import reporting
from gateway.attribution import Attribution
from gateway.channels import Channels
from gateway.events import Binding, Conversion, Event, Touchpoint, VerdictChange, iso
from gateway.ids import uuid7
from gateway.metrics import Metrics
from gateway.options import AttributionOptions, ChannelsOptions, StorageOptions
from gateway.payouts import Payouts, PayoutsOptions, TierPayout
from storage.local import LocalStore
from storage.reports import Reports
from tests.reference_models import (
    MILLION,
    MODELS,
    RefConversion,
    RefTouch,
    Settings,
    Store,
    eligible,
    report,
)

T0 = datetime(2026, 10, 22, tzinfo=UTC)
STEP = timedelta(hours=12)
"""Times are whole steps from T0 (7, 14 and 30 days fall on a window's edge), or a ms off;
so are the periods asked for, whose ends conversions then fall on."""
CHANNELS = ["Paid Social", "Email", "Organic Search", "Direct", "Internal", "Referral"]
CAMPAIGNS = [None, "Spring-AWARENESS", "cart-retarget", "q4 consideration", "brand"]
PARAMS: list[dict[str, str]] = [
    {},
    {},
    {"utm_tier": " Conversion "},
    {"c_tier": "conversion"},
    {"tier": "SHORT", "utm_tier": "long"},
    {"utm_campaign": "utm_tier"},
]
VALUES = [  # value, currency, minor units
    (None, None, 0),
    (0.01, "EUR", 1),
    (10.01, "EUR", 1001),
    (100.0, "EUR", 10000),
    (7.0, "JPY", 7),
    (1.25, "KWD", 1250),
    (10.01, None, 1001),
    (-10.01, "EUR", -1001),
    (-0.01, "EUR", -1),
    (-7.0, "JPY", -7),
]
DIGITS = {"EUR": 2, "JPY": 0, "KWD": 3, None: 2}
VISITORS, USERS = ["v0", "v1", "v2", "v3"], ["u0", "u1"]
VERDICTS = ["allow", "review", "block", "bot"]
OPTIONS: list[dict[str, Any]] = [
    {},
    {"position_first": 0.5, "position_last": 0.3, "half_life_days": 1.0, "last_touch_share": 1.0},
    {"timezone": "Europe/Berlin", "verdicts": ("allow", "review")},
    {
        "lookback_days": {"short": 1.0, "long": 3.0},
        "default_tier": "long",
        "tier_patterns": {"short": ("retarget", "brand")},
        "tier_params": ("utm_tier",),
    },
    {  # windows of part days; a tier parameter whose name does not end in _tier
        "lookback_days": {"short": 0.25, "long": 2.5},
        "default_tier": "long",
        "tier_patterns": {"short": ("retarget",)},
        "tier_params": ("tier", "utm_tier"),
        "timezone": "America/New_York",
    },
]
GROUPS = ["channel", "source", "medium", "campaign", "creator_id"]
TIERS = {"std": TierPayout(cpa=1.5, revenue_share=0.125)}

touch = st.tuples(
    st.sampled_from([None, None, *VISITORS]),  # None: the visitor of the conversion it is before
    st.one_of(  # steps before a conversion (on a window's edge: 2, 6, 14, 28, 60), or from T0
        st.tuples(st.integers(0, 4), st.sampled_from([0, 1, 2, 5, 6, 14, 28, 60]) | st.integers(0, 62)),
        st.tuples(st.none(), st.integers(-70, 40)),
    ),
    st.sampled_from([0, 0, -1, 1]),  # ms after it
    st.sampled_from(CHANNELS),
    st.sampled_from(CAMPAIGNS),
    st.sampled_from(range(len(PARAMS))),
    st.sampled_from([None, "allow", "allow", "review", "block"]),
    st.sampled_from([None, "google", "newsletter"]),
    st.sampled_from([None, "cpc", "email"]),
    st.sampled_from([None, "cr_ana", "cr_ben"]),
)
conversion = st.tuples(
    st.sampled_from([*VISITORS, VISITORS[0], None]),
    st.sampled_from([None, None, *USERS]),
    st.integers(-2, 42),
    st.sampled_from([0, 0, 1, 37_800_000]),
    st.sampled_from(range(len(VALUES))),
    st.sampled_from(["purchase", "purchase", "signup"]),
)
binding = st.tuples(st.sampled_from(VISITORS), st.sampled_from(USERS), st.integers(-4, 50))
"""A visitor bound to a user, that many steps from T0: before, inside or after the period."""
change = st.tuples(
    st.integers(0, 3),  # which touch (modulo their number): a few, so that changes meet
    st.sampled_from(["rescore", "analyst", "analyst_cleared"]),
    st.sampled_from(VERDICTS),
)
"""A verdict change, in the order they were made (after every touch)."""


def effective(own: str | None, changes: list[tuple[str, str]]) -> str | None:
    """README "Creator payouts" / the verdict-change rule: the latest analyst override that no
    later withdrawal withdrew, else the latest re-score, else the touch's own verdict."""
    live_analyst: str | None = None
    rescored: str | None = None
    for origin, verdict in changes:
        if origin == "rescore":
            rescored = verdict
        elif origin == "analyst":
            live_analyst = verdict
        else:  # withdrawn: every earlier override of it is as if never made
            live_analyst = None
    return live_analyst or rescored or own


def build(
    touches: list[tuple[Any, ...]],
    conversions: list[tuple[Any, ...]],
    bindings: list[tuple[str, str, int]],
    changes: list[tuple[int, str, str]],
) -> tuple[list[Event], Store]:
    events: list[Event] = []
    made: list[tuple[str, RefTouch]] = []
    convs = [T0 + c[2] * STEP + timedelta(milliseconds=c[3]) for c in conversions]
    for visitor, (anchor, step), ms, channel, campaign, p, verdict, source, medium, creator in touches:
        start = T0 if anchor is None else convs[anchor % len(convs)]
        visitor = visitor or (anchor is not None and conversions[anchor % len(convs)][0]) or "v0"
        at = start + (step if anchor is None else -step) * STEP + timedelta(milliseconds=ms)
        tid = uuid7(int(at.timestamp() * 1000))
        params = PARAMS[p]
        events.append(
            Touchpoint(
                tid, iso(at), "n", visitor, source=source, medium=medium, campaign=campaign,
                creator_id=creator, channel=channel, raw_params=params, verdict=verdict,
            )
        )  # fmt: skip
        made.append(
            (tid, RefTouch(0, at, visitor, channel, campaign, source, medium, creator, params, verdict))
        )
    # Verdict changes, made after everything else, in order (ids counting up).
    per_touch: dict[str, list[tuple[str, str]]] = defaultdict(list)
    later = T0 + 60 * STEP
    for n, (which, origin, verdict) in enumerate(changes):
        if not made:
            break
        tid = made[which % len(made)][0]
        cid = uuid7(int((later + timedelta(milliseconds=n)).timestamp() * 1000))
        analyst = None if origin == "rescore" else "ana@example.com"
        events.append(VerdictChange(cid, iso(later), "n", tid, verdict, None, [], origin, "why", analyst))
        per_touch[tid].append((origin, verdict))
    made = [(tid, replace(t, verdict=effective(t.verdict, per_touch[tid]))) for tid, t in made]
    made.sort(key=lambda r: r[0])
    ref_touches = [replace(t, order=i) for i, (_, t) in enumerate(made)]
    bound = sorted(
        (uuid7(int((T0 + step * STEP).timestamp() * 1000)), visitor, user, step)
        for visitor, user, step in bindings
    )
    for bid, visitor, user, step in bound:
        events.append(Binding(bid, iso(T0 + step * STEP), "n", visitor, user, "login"))
    ref_convs = []
    for n, (visitor, user, step, ms, v, name) in enumerate(conversions):
        if visitor is None and user is None:
            visitor = "v0"
        at = T0 + step * STEP + timedelta(milliseconds=ms)
        value, currency, minor = VALUES[v]
        cid = uuid7(int(at.timestamp() * 1000))
        events.append(Conversion(cid, iso(at), "n", name, f"order:{n}", visitor, user, value, currency))
        ref_convs.append(RefConversion(at, visitor, user, minor, currency, name))
    return events, Store(ref_touches, ref_convs, [(visitor, user) for _, visitor, user, _ in bound])


def _write(path: Path, events: list[Event]) -> None:
    async def go() -> None:
        store = LocalStore(path, StorageOptions(), Metrics())
        await store.open()
        await store.write(events)
        await store.close()

    asyncio.run(go())


def _settings(options: dict[str, Any]) -> Settings:
    renamed = {"lookback_days": "windows"}
    s = Settings(**{renamed.get(k, k): v for k, v in options.items() if k != "verdicts"})
    s.verdicts = frozenset(options.get("verdicts", ("allow",)))
    return s


CHANNELS_TABLE = Channels(ChannelsOptions())


@dataclass(frozen=True)
class Ask:
    """What a report is asked for beside its model and grouping."""

    since: datetime
    until: datetime
    name: str | None
    """One conversion's name; None: all."""
    accepted: frozenset[str]
    payout_currency: str | None
    """``payouts.currency``: sign-ups (no value, no currency) are paid in it."""

    def holds(self, c: RefConversion) -> bool:
        return self.since <= c.at < self.until and self.name in (None, c.name)


Rows = dict[tuple[str | None, str | None, str | None], dict[str, tuple[int, int]]]


def _ints(rows: list[dict[str, Any]], models: tuple[str, ...]) -> Rows:
    out: Rows = {}
    for row in rows:
        scale = Decimal(10) ** DIGITS[row["currency"]]
        if len(models) == 1:
            pairs = {models[0]: (row["value"], row["conversions"])}
        else:
            pairs = {m: (row[f"{m}_value"], row[f"{m}_conversions"]) for m in models}
        key = (row.get("day"), row["group"], row["currency"])
        assert key not in out, f"a row given twice: {key}"
        out[key] = {m: (int(v * scale), int(n * MILLION)) for m, (v, n) in pairs.items()}
    return out


DATE_LIKE_BUCKETS = {"2-3", "4-7", "8-14", "15-30"}
"""The paths report's buckets of days that a spreadsheet reads as dates (3-Feb): the CSV
writes them as text, behind a ``'``."""


def _read_back(report: reporting.Report) -> None:
    """The CSV and NDJSON downloads hold the JSON rows, every cell, in the columns' order
    (the buckets a spreadsheet reads as dates behind a ``'``)."""
    ndjson = [json.loads(line) for line in report.ndjson().decode().splitlines()]
    as_json = json.loads(report.json())["rows"]
    assert ndjson == as_json
    table = list(csv.reader(io.StringIO(report.csv())))
    assert table[0] == report.columns

    def cell(value: Any, column: str) -> str:
        if value is None:
            return ""
        return f"'{value}" if column == "bucket" and value in DATE_LIKE_BUCKETS else str(value)

    expected = [[cell(row.get(c), c) for c in report.columns] for row in report.rows]
    assert table[1:] == expected


def _nonzero(rows: Rows, model: str) -> dict[tuple[str | None, str | None, str | None], tuple[int, int]]:
    return {k: v[model] for k, v in rows.items() if any(v[model])}


def _expected_paths(store: Store, s: Settings, a: Ask) -> tuple[list[int], list[float]]:
    lengths, days = [], []
    for c in store.conversions:
        if not a.holds(c):
            continue
        path = eligible([t for t in store.touches if t.visitor in store.devices(c)], c.at, s, a.accepted)
        lengths.append(len(path))
        if path:
            days.append((c.at - path[0].at) / timedelta(days=1))
    return lengths, days


def _expected_payouts(
    store: Store, s: Settings, model: str, a: Ask
) -> dict[tuple[str, str, str | None], tuple[int, int, int]]:
    """(creator, status, currency) → (clicks, value, millionths) of the creators' rows."""
    accepted = a.accepted
    if a.payout_currency is not None:  # README: a sign-up's CPA is paid in payouts.currency
        paid = [
            replace(c, currency=a.payout_currency) if c.currency is None and not c.minor else c
            for c in store.conversions
        ]
        store = Store(store.touches, paid, store.bindings)
    earned = report(store, s, a.since, a.until, "creator_id", accepted=accepted, conversion=a.name)
    out: dict[tuple[str, str, str | None], list[int]] = defaultdict(lambda: [0, 0, 0])
    for (_, creator, currency), sums in earned.items():
        if creator is not None and any(sums[model]):
            out[creator, "approve", currency][1:] = sums[model]
    # What the quarantined touches would have earned with every verdict counted.
    withheld = _withheld(store, s, model, a)
    for (creator, currency), (value, n) in withheld.items():
        if value or n:
            out[creator, "quarantined", currency][1:] = [value, n]
    for t in store.touches:
        if t.creator_id and a.since <= t.at < a.until:
            status = "approve" if (t.verdict or "allow") in accepted else "quarantined"
            credited = [k for k in out if k[0] == t.creator_id and k[1] == status]
            for key in credited or [(t.creator_id, status, None)]:
                out[key][0] += 1
    return {k: (c, v, n) for k, (c, v, n) in out.items()}


def _withheld(store: Store, s: Settings, model: str, a: Ask) -> dict[tuple[str, str | None], tuple[int, int]]:
    """Per creator and currency, the credit its touches of an unaccepted verdict get in the
    report that counts every verdict (tagging those touches as groups of their own)."""
    quarantined = [
        replace(t, creator_id="\x00" + t.creator_id)
        if t.creator_id and (t.verdict or "allow") not in a.accepted
        else t
        for t in store.touches
    ]
    tagged = Store(quarantined, store.conversions, store.bindings)
    rows = report(tagged, s, a.since, a.until, "creator_id", accepted=frozenset(VERDICTS), conversion=a.name)
    out: dict[tuple[str, str | None], tuple[int, int]] = {}
    for (_, creator, currency), sums in rows.items():
        if creator and creator.startswith("\x00"):
            out[creator[1:], currency] = sums[model]
    return out


def _payout_ints(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str | None], tuple[int, int, int]]:
    out = {}
    for row in rows:
        scale = Decimal(10) ** DIGITS[row["currency"]]
        key = (row["creator_id"], row["status"], row["currency"])
        assert key not in out, f"a payout row given twice: {key}"
        out[key] = (row["clicks"], int(row["value"] * scale), int(row["conversions"] * MILLION))
        # The amount to approve: CPA 1.5 times credited conversions + 12.5 % of the credited value,
        # rounded once, half to even; nothing for quarantined traffic.
        owed = Fraction(3, 2) * 10 ** DIGITS[row["currency"]] * Fraction(out[key][2], MILLION)
        owed += Fraction(1, 8) * out[key][1]
        assert int(row["payout"] * scale) == (round(owed) if row["status"] == "approve" else 0), row
    return out


async def _reports(path: Path, attribution: Attribution, processes: int) -> Reports:
    reports = Reports(path, attribution, CHANNELS_TABLE, processes=processes, min_slice=1, min_share=1)
    await reports.open()
    return reports


def check(
    touches: list[tuple[Any, ...]],
    conversions: list[tuple[Any, ...]],
    bindings: list[tuple[str, str, int]],
    changes: list[tuple[int, str, str]],
    options: int,
    group_by: str,
    by_day: bool,
    asked: frozenset[str] | None,
    processes: int,
    singles: tuple[str, ...],
    period: tuple[int, int, int],
    name: str | None,
    payout_currency: str | None,
) -> None:
    events, store = build(touches, conversions, bindings, changes)
    s = _settings(OPTIONS[options])
    since = T0 + period[0] * STEP + timedelta(milliseconds=period[2])
    a = Ask(since, since + period[1] * STEP, name, s.verdicts if asked is None else asked, payout_currency)
    rules = Payouts(PayoutsOptions(default_tier="std", tiers=TIERS, currency=payout_currency or ""))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gw.db"
        _write(path, events)
        attribution = Attribution(AttributionOptions(**OPTIONS[options]))  # reads the zone: not in the loop

        async def go() -> dict[str, Any]:
            reports = await _reports(path, attribution, processes)
            try:
                q = reporting.Query(a.since, a.until, MODELS, group_by, name, asked)
                out: dict[str, Any] = {"all": await reporting.attribution(reports, q, by_day=by_day)}
                for m in singles:
                    one = replace(q, models=(m,))
                    out[m] = await reporting.attribution(reports, one, by_day=by_day)
                out["paths"] = await reporting.paths(reports, q)
                out["payouts"] = {
                    m: await reporting.payouts(reports, rules, replace(q, models=(m,), group_by="creator_id"))
                    for m in singles
                }
                return out
            finally:
                await reports.close()

        got = asyncio.run(go())
    case = (touches, conversions, bindings, changes, options, group_by, by_day, a)
    expected = report(
        store, s, a.since, a.until, group_by, accepted=a.accepted, by_day=by_day, conversion=name
    )
    rows = _ints(got["all"].rows, MODELS)
    zero = dict.fromkeys(MODELS, (0, 0))
    differ = [
        (key, model, rows.get(key, zero)[model], expected.get(key, zero)[model])
        for key in sorted(rows.keys() | expected.keys(), key=str)
        for model in MODELS
        if rows.get(key, zero)[model] != expected.get(key, zero)[model]
    ]
    assert not differ, f"model=all: {differ} in {case!r}"
    assert sorted(rows, key=str) == sorted(expected, key=str), case
    # Credits sum to each currency's conversions exactly, under every model.
    in_period = [c for c in store.conversions if a.holds(c)]
    for model in MODELS:
        sums: dict[str | None, list[int]] = defaultdict(lambda: [0, 0])
        for (_, _, currency), by_model in rows.items():
            sums[currency][0] += by_model[model][0]
            sums[currency][1] += by_model[model][1]
        owed: dict[str | None, list[int]] = defaultdict(lambda: [0, 0])
        for c in in_period:
            owed[c.currency][0] += c.minor
            owed[c.currency][1] += MILLION
        assert dict(sums) == dict(owed), (model, case)
    totals = {t["currency"]: (t["conversions"], t["value"]) for t in got["all"].meta["totals"]}
    assert totals == {cur: (n // MILLION, reporting.money(v, cur)) for cur, (v, n) in owed.items()}, case
    _read_back(got["all"])
    for m in singles:  # a model asked alone: the same credits as its column of model=all
        alone = _ints(got[m].rows, (m,))
        assert _nonzero(alone, m) == _nonzero(expected, m), (m, case)
        pairs = {(g, c) for _, g, c in _nonzero(expected, m)}
        assert {(g, c) for _, g, c in alone} == pairs, (m, case)
        _read_back(got[m])
    lengths, days = _expected_paths(store, s, a)
    paths = got["paths"]
    counted = {(r["measure"], r["bucket"]): r["conversions"] for r in paths.rows}
    for n in set(lengths):
        assert counted["touches", str(n) if n < 10 else "10+"] == lengths.count(n), case
    assert sum(n for (measure, _), n in counted.items() if measure == "touches") == len(lengths)
    for name, lo, hi in reporting.DAY_BUCKETS:
        assert counted["days", name] == sum(lo <= d < hi for d in days), (name, case)
    summary = paths.meta["summary"]
    assert (summary["conversions"], summary["with_touches"]) == (len(lengths), len(days))
    if lengths:
        assert summary["median_touches"] == float(statistics.median(lengths))
    _read_back(paths)
    for m, payouts in got["payouts"].items():
        assert _payout_ints(payouts.rows) == _expected_payouts(store, s, m, a), (m, case)
        _read_back(payouts)


common = {
    "touches": st.lists(touch, max_size=14),
    "conversions": st.lists(conversion, min_size=1, max_size=5),
    "bindings": st.lists(binding, max_size=4, unique_by=lambda b: (b[0], b[1])),
    "changes": st.lists(change, max_size=6),
    "options": st.sampled_from(range(len(OPTIONS))),
    "group_by": st.sampled_from(GROUPS),
    "by_day": st.booleans(),
    "asked": st.sampled_from([None, None, frozenset({"allow", "review"}), frozenset(VERDICTS)]),
    "period": st.tuples(st.integers(-2, 10), st.integers(1, 44), st.sampled_from([0, 0, 1, -1])),
    "name": st.sampled_from([None, None, "purchase"]),
    "payout_currency": st.sampled_from([None, "EUR", "JPY"]),
    "singles": st.lists(st.sampled_from(MODELS), min_size=1, max_size=3, unique=True).map(tuple),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**common)
def test_every_report_in_one_process_says_what_the_readme_says(**case: Any) -> None:
    check(processes=1, **case)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**common)
def test_every_report_in_the_report_workers_says_what_the_readme_says(**case: Any) -> None:
    check(processes=2, **case)


def test_an_override_wins_over_a_later_rescore_until_withdrawn() -> None:
    """Changes meeting on one touch, which the random ones seldom make: an analyst's override
    wins over any re-score, before it or after; withdrawn, the latest re-score counts again."""
    one = (None, (0, 1), 0, "Email", None, 0, "allow", "newsletter", "email", "cr_ana")
    two = (None, (0, 2), 0, "Paid Social", None, 0, "allow", "google", "cpc", "cr_ben")
    sale = ("v0", None, 20, 0, 3, "purchase")
    for changes in (
        [(0, "rescore", "block"), (0, "analyst", "allow"), (0, "rescore", "block")],
        [(1, "analyst", "review"), (1, "analyst_cleared", "allow"), (1, "rescore", "block")],
        [(0, "analyst", "block"), (0, "rescore", "allow")],
    ):
        case: dict[str, Any] = {
            "touches": [two, one],
            "conversions": [sale],
            "bindings": [],
            "changes": changes,
        }
        case |= {"options": 0, "group_by": "creator_id", "by_day": False, "asked": None, "processes": 1}
        check(singles=("last_touch", "linear"), period=(0, 40, 0), name=None, payout_currency=None, **case)
