"""The attribution report, every model and grouping, per day in a zone with daylight saving
time, against ``tests/reference_models.py``: a reading of the README's "Attribution" written
without the code. Small random stores (several devices per user, window edges to the
millisecond, touches of one instant, conversions without value or eligible touch) are
written through the store's own writer to a real SQLite file, and read by the report engine
the admin API and ``gateway report`` call (``gateway/reporting.py``)."""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import reporting
from gateway.attribution import Attribution
from gateway.channels import Channels
from gateway.events import Binding, Conversion, Event, Touchpoint, iso
from gateway.ids import uuid7
from gateway.metrics import Metrics
from gateway.options import AttributionOptions, ChannelsOptions, StorageOptions
from storage.local import LocalStore
from storage.reports import Reports
from tests.reference_models import MODELS, RefConversion, RefTouch, Settings, Store, report

T0 = datetime(2026, 10, 22, tzinfo=UTC)
"""The period runs 20 days from here, over Berlin's and New York's autumn changes."""
SINCE, UNTIL = T0, T0 + timedelta(days=20)
STEP = timedelta(hours=12)
"""Times are whole steps from T0 (so 7, 14 and 30 days fall on a window's edge), or a
millisecond after."""
CHANNELS = ["Paid Social", "Email", "Organic Search", "Direct", "Internal", "Referral"]
CAMPAIGNS = [None, "Spring-AWARENESS", "cart-retarget", "q4 consideration", "brand"]
PARAMS: list[dict[str, str]] = [
    {},
    {},
    {"utm_tier": " Conversion "},
    {"c_tier": "bogus", "utm_tier": "consideration"},
    {"c_tier": "conversion", "utm_tier": "awareness"},
    {"utm_tier": "SHORT"},
]
VALUES = [  # value, currency, minor units
    (None, None, 0),
    (0.0, "EUR", 0),
    (0.01, "EUR", 1),
    (10.01, "EUR", 1001),
    (100.0, "EUR", 10000),
    (7.0, "JPY", 7),
    (1.25, "KWD", 1250),
    (10.01, None, 1001),
    (0.03, "EUR", 3),
]
DIGITS = {"EUR": 2, "JPY": 0, "KWD": 3, None: 2}
VISITORS, USERS = ["v0", "v1", "v2", "v3"], ["u0", "u1"]
OPTIONS = [
    {},
    {"position_first": 0.5, "position_last": 0.3, "half_life_days": 1.0, "last_touch_share": 1.0},
    {"position_first": 0.7, "position_last": 0.3, "last_touch_share": 0.0, "timezone": "Europe/Berlin"},
    {"timezone": "America/New_York", "verdicts": ("allow", "review")},
    {"position_first": 0.0, "position_last": 0.0, "half_life_days": 0.0000116, "last_touch_share": 0.0},
    {
        "lookback_days": {"short": 1.0, "long": 3.0},
        "default_tier": "long",
        "tier_patterns": {"short": ("retarget", "brand")},
        "tier_params": ("utm_tier",),
    },
]

touch = st.tuples(
    st.sampled_from([None, None, *VISITORS]),  # None: the visitor of the conversion it is before
    st.one_of(  # steps before a conversion (on a window's edge: 14, 28, 60), or from T0
        st.tuples(st.integers(0, 4), st.sampled_from([0, 1, 5, 14, 14, 28, 28, 60, 60]) | st.integers(0, 62)),
        st.tuples(st.none(), st.integers(-70, 40)),
    ),
    st.sampled_from([0, 0, -1, 1]),  # ms after it
    st.sampled_from(CHANNELS),
    st.sampled_from(CAMPAIGNS),
    st.sampled_from(range(len(PARAMS))),
    st.sampled_from([None, "allow", "allow", "review", "block"]),
    st.sampled_from([None, "google", "newsletter"]),
    st.sampled_from([None, "cr_ana", "cr_ben"]),
)
conversion = st.tuples(
    st.sampled_from([*VISITORS, VISITORS[0], None]),
    st.sampled_from([None, None, *USERS]),
    st.integers(-2, 42),
    st.sampled_from([0, 0, 1, 37_800_000]),  # ms after the step (10.5 h: 22:30Z, the next day in Berlin)
    st.sampled_from(range(len(VALUES))),
    st.sampled_from(["purchase", "purchase", "signup"]),
)


def _write(path: Path, events: list[Event]) -> None:
    async def go() -> None:
        store = LocalStore(path, StorageOptions(), Metrics())
        await store.open()
        await store.write(events)
        await store.close()

    asyncio.run(go())


CHANNELS_TABLE = Channels(ChannelsOptions())
"""Built outside an event loop, as ``load_settings`` does: it reads the shipped table."""


def _engine(
    path: Path, options: dict[str, Any], group_by: str, by_day: bool, conversion: str | None
) -> list[dict[str, Any]]:
    attribution = Attribution(AttributionOptions(**options))

    async def go() -> list[dict[str, Any]]:
        reports = Reports(path, attribution, CHANNELS_TABLE)
        await reports.open()
        try:
            q = reporting.Query(SINCE, UNTIL, MODELS, group_by, conversion)
            return (await reporting.attribution(reports, q, by_day=by_day)).rows
        finally:
            await reports.close()

    return asyncio.run(go())


def _ints(
    rows: list[dict[str, Any]],
) -> dict[tuple[str | None, str | None, str | None], dict[str, tuple[int, int]]]:
    out = {}
    for row in rows:
        scale = Decimal(10) ** DIGITS[row["currency"]]
        out[row.get("day"), row["group"], row["currency"]] = {
            m: (int(row[f"{m}_value"] * scale), int(row[f"{m}_conversions"] * 1_000_000)) for m in MODELS
        }
    assert len(out) == len(rows), "a row given twice"
    return out


def build(
    touches: list[tuple[Any, ...]], conversions: list[tuple[Any, ...]], bindings: list[tuple[str, str]]
) -> tuple[list[Event], Store]:
    events: list[Event] = []
    refs: list[tuple[str, RefTouch]] = []
    convs = [T0 + c[2] * STEP + timedelta(milliseconds=c[3]) for c in conversions]
    for visitor, (anchor, step), ms, channel, campaign, p, verdict, source, creator in touches:
        start = T0 if anchor is None else convs[anchor % len(convs)]
        visitor = visitor or (anchor is not None and conversions[anchor % len(convs)][0]) or "v0"
        at = start + (step if anchor is None else -step) * STEP + timedelta(milliseconds=ms)
        tid = uuid7(int(at.timestamp() * 1000))
        params = PARAMS[p]
        events.append(
            Touchpoint(
                tid, iso(at), "n", visitor, source=source, campaign=campaign, creator_id=creator,
                channel=channel, raw_params=params, verdict=verdict,
            )
        )  # fmt: skip
        refs.append(
            (tid, RefTouch(0, at, visitor, channel, campaign, source, None, creator, params, verdict))
        )
    refs.sort(key=lambda r: r[0])
    ref_touches = [replace(t, order=i) for i, (_, t) in enumerate(refs)]
    bound = sorted((uuid7(int(T0.timestamp() * 1000)), visitor, user) for visitor, user in bindings)
    for bid, visitor, user in bound:  # of one instant: the earliest binding is the least id
        events.append(Binding(bid, iso(T0), "n", visitor, user, "login"))
    ref_convs = []
    for n, (visitor, user, step, ms, v, name) in enumerate(conversions):
        if visitor is None and user is None:
            visitor = "v0"
        at = T0 + step * STEP + timedelta(milliseconds=ms)
        value, currency, minor = VALUES[v]
        cid = uuid7(int(at.timestamp() * 1000))
        events.append(Conversion(cid, iso(at), "n", name, f"order:{n}", visitor, user, value, currency))
        ref_convs.append(RefConversion(at, visitor, user, minor, currency, name))
    return events, Store(ref_touches, ref_convs, [(visitor, user) for _, visitor, user in bound])


def _settings(options: dict[str, Any]) -> Settings:
    renamed = {"lookback_days": "windows"}
    s = Settings(**{renamed.get(k, k): v for k, v in options.items() if k != "verdicts"})
    s.verdicts = frozenset(options.get("verdicts", ("allow",)))
    return s


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    touches=st.lists(touch, max_size=14),
    conversions=st.lists(conversion, min_size=1, max_size=5),
    bindings=st.lists(st.tuples(st.sampled_from(VISITORS), st.sampled_from(USERS)), max_size=4, unique=True),
    options=st.sampled_from(range(len(OPTIONS))),
    group_by=st.sampled_from(["channel", "source", "campaign", "creator_id"]),
    by_day=st.booleans(),
    name=st.sampled_from([None, "purchase"]),
)
def test_the_report_credits_what_the_readme_says(
    touches: list[tuple[Any, ...]],
    conversions: list[tuple[Any, ...]],
    bindings: list[tuple[str, str]],
    options: int,
    group_by: str,
    by_day: bool,
    name: str | None,
) -> None:
    events, store = build(touches, conversions, bindings)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gw.db"
        _write(path, events)
        got = _ints(_engine(path, OPTIONS[options], group_by, by_day, name))
    expected = report(
        store, _settings(OPTIONS[options]), SINCE, UNTIL, group_by, by_day=by_day, conversion=name
    )
    zero = dict.fromkeys(MODELS, (0, 0))
    differ = [
        (key, model, got.get(key, zero)[model], expected.get(key, zero)[model])
        for key in sorted(got.keys() | expected.keys(), key=str)
        for model in MODELS
        if got.get(key, zero)[model] != expected.get(key, zero)[model]
    ]
    for model in MODELS:  # every model's credits sum to the same totals
        sums = {cur: [0, 0] for _, _, cur in got}
        for (_, _, cur), by_model in got.items():
            sums[cur][0] += by_model[model][0]
            sums[cur][1] += by_model[model][1]
        assert sums == {
            cur: [
                sum(
                    c.minor
                    for c in store.conversions
                    if c.currency == cur and SINCE <= c.at < UNTIL and name in (None, c.name)
                ),
                1_000_000
                * sum(
                    1
                    for c in store.conversions
                    if c.currency == cur and SINCE <= c.at < UNTIL and name in (None, c.name)
                ),
            ]
            for cur in sums
        }
    assert not differ, f"{(touches, conversions, bindings, options, group_by, by_day, name)!r}"
    # The same rows: by day, those of the days without credit too.
    assert sorted(got, key=str) == sorted(expected, key=str), (by_day, options)


def test_data_driven_ties_go_to_the_later_touches_whatever_the_floats_learnt(tmp_path: Path) -> None:
    """Journeys Paid Social → Organic Search → Email → Paid Social → Paid Social (converting)
    and Email → Paid Social → Paid Social → Paid Social (not).
    By hand: Paid Social moves to Organic Search 1/6, to
    itself 3/6, converts 1/6; Organic Search and Email lead on to Email and Paid Social, so
    P(convert) = 1/2; without Organic Search 1/3, without Email 1/6, without Paid Social 0:
    removal effects 1/3, 2/3, 1, weights 1/6, 1/3, 1/2. Each of the four touches of 1/6 is
    owed 166,666.67 millionths: the three left over go to the later three (Paid Social twice,
    then Organic Search), not wherever the floats' last bits (Organic Search learnt as
    0.16666666666666663) put them."""
    day = timedelta(hours=12)
    path = [("v1", "Paid Social"), ("v1", "Organic Search"), ("v1", "Email"), ("v1", "Paid Social")]
    path += [("v1", "Paid Social"), ("v2", "Email"), ("v2", "Paid Social"), ("v2", "Paid Social")]
    path += [("v2", "Paid Social")]
    events: list[Event] = []
    for n, (visitor, channel) in enumerate(path):
        at = T0 + (n % 5 + 1) * day
        events.append(Touchpoint(uuid7(int(at.timestamp() * 1000)), iso(at), "n", visitor, channel=channel))
    at = T0 + 6 * day
    events.append(Conversion(uuid7(int(at.timestamp() * 1000)), iso(at), "n", "purchase", "o:1", "v1"))
    _write(tmp_path / "gw.db", events)
    rows = _engine(tmp_path / "gw.db", {}, "channel", False, None)
    got = {r["group"]: str(r["data_driven_conversions"]) for r in rows}
    assert got == {"Paid Social": "0.5", "Email": "0.333333", "Organic Search": "0.166667"}
