"""Crediting without a database: the fast paths against the plain rounding they stand for —
``data_driven``'s shares summed per channel (what a report grouped by channel credits),
``time_decay``'s shares worked out in floats where they can tell, and every model's rows
credited at once (``model=all``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.attribution import (
    MODELS,
    Attribution,
    Params,
    Touch,
    data_driven,
    distribute,
    distribute_many,
    time_decay,
)
from gateway.events import iso
from gateway.options import AttributionOptions
from storage.crediting import (
    _FOLD,
    MICRO,
    Cand,
    Conv,
    Eligibility,
    _Shares,
    credit_table,
    exact_integers,
    float_shares,
)

AT = datetime(2026, 11, 10, 12, tzinfo=UTC)
CHANNELS = ["A", "B", "C", "D", "E"]
"""A few channels: paths repeat them; E is never in the weights."""


def path_of(channels: Sequence[str]) -> list[Cand]:
    return [
        (iso(AT - timedelta(hours=len(channels) - i)), f"t{i:02d}", c, None, None, c, "v")
        for i, c in enumerate(channels)
    ]


def per_touch(shares: _Shares, path: Sequence[Cand], totals: Sequence[int]) -> list[dict[str, int]]:
    """What the per-touch path credits per channel: every touch's share, added up."""
    out = []
    for row in distribute_many(totals, shares.data_driven(path)):
        sums = dict.fromkeys((c[2] for c in path), 0)
        for c, share in zip(path, row, strict=True):
            sums[c[2]] += share
        out.append(sums)
    return out


def by_channel(weights: Mapping[str, float], channels: Sequence[str], *totals: int) -> list[dict[str, int]]:
    return _Shares(Params(channel_weights=weights)).data_driven_by_channel(path_of(channels), totals)


WEIGHT = st.one_of(
    st.sampled_from([0.0, 0.5, 0.25, 0.125, 0.1, 1 / 3, 0.2]),  # zeros and ties
    st.floats(0, 1, allow_nan=False),
)


@settings(max_examples=1000, deadline=None)
@given(
    st.dictionaries(st.sampled_from(CHANNELS[:4]), WEIGHT),
    st.lists(st.sampled_from(CHANNELS), min_size=1, max_size=12),
    st.lists(
        st.one_of(st.integers(-3, 12), st.integers(-(10**7), 10**7), st.just(MICRO), st.just(-MICRO)),
        min_size=1,
        max_size=3,
    ),
)
def test_per_channel_sums_equal_the_per_touch_shares_summed(
    weights: dict[str, float], channels: list[str], totals: list[int]
) -> None:
    """To the unit, for every total (refunds and zero included), paths with channels missing
    from the weights, weighing zero, or tying, and several totals at once."""
    shares = _Shares(Params(channel_weights=weights))
    path = path_of(channels)
    got = shares.data_driven_by_channel(path, totals)
    assert got == per_touch(shares, path, totals)
    for total, sums in zip(totals, got, strict=True):
        assert sum(sums.values()) == total
        # The model itself, on its own floats (Fractions), summed per channel.
        touches = [Touch(c[1], AT, c[2]) for c in path]
        expected: dict[str, int] = defaultdict(int)
        for c, share in zip(path, distribute(total, data_driven(touches, AT, shares.params)), strict=True):
            expected[c[2]] += share
        assert sums == expected


# A .5 over two touches, B .25, C and D .125: every touch of A or B weighs 2/8, of C or D 1/8.
EIGHTHS = {"A": 0.5, "B": 0.25, "C": 0.125, "D": 0.125}


@pytest.mark.parametrize(
    ("channels", "total", "expected"),
    [
        # 3 units: quotas 3/8, 3/8, 6/8, 6/8, 6/8; the 6/8 level takes all three.
        ("CDAAB", 3, {"A": 2, "B": 1, "C": 0, "D": 0}),
        # 2 units run out inside the 6/8 level (A, A, B): the later touches, B then an A...
        ("CDAAB", 2, {"A": 1, "B": 1, "C": 0, "D": 0}),
        # ... and the same channels in another order: both A.
        ("CDBAA", 2, {"A": 2, "B": 0, "C": 0, "D": 0}),
        ("BCDAA", 2, {"A": 2, "B": 0, "C": 0, "D": 0}),
        ("AABCD", 2, {"A": 1, "B": 1, "C": 0, "D": 0}),
        # 7 units: floors C 0, D 0, A 1+1, B 1; C and D's 7/8 level first (whole), then the
        # 6/8 level (A, A, B) gets the last two by position.
        ("CDAAB", 7, {"A": 3, "B": 2, "C": 1, "D": 1}),
        ("CDBAA", 7, {"A": 4, "B": 1, "C": 1, "D": 1}),
        ("CDABA", 7, {"A": 3, "B": 2, "C": 1, "D": 1}),
        # 4 units: floors 0, 0, 1, 1, 1; C and D tie at 1/2 for the one left: the later, D.
        ("CDAAB", 4, {"A": 2, "B": 1, "C": 0, "D": 1}),
        ("DCAAB", 4, {"A": 2, "B": 1, "C": 1, "D": 0}),
        # A refund mirrors.
        ("CDAAB", -7, {"A": -3, "B": -2, "C": -1, "D": -1}),
        ("CDBAA", -2, {"A": -2, "B": 0, "C": 0, "D": 0}),
        ("CDAAB", 0, {"A": 0, "B": 0, "C": 0, "D": 0}),
        # E weighs nothing: it is credited nothing, while anyone else weighs something.
        ("EAE", 5, {"A": 5, "E": 0}),
        # One channel takes everything, however many touches.
        ("BBB", 10, {"B": 10}),
        ("E", -3, {"E": -3}),
    ],
)
def test_hand_cases_with_ties_at_the_boundary(channels: str, total: int, expected: dict[str, int]) -> None:
    (got,) = by_channel(EIGHTHS, channels, total)
    assert got == expected
    (touches,) = per_touch(_Shares(Params(channel_weights=EIGHTHS)), path_of(channels), (total,))
    assert touches == expected


@pytest.mark.parametrize(
    ("weights", "channels", "total", "expected"),
    [
        # Never seen (no weights at all): equal shares, 2/3 each, the later two touches a unit.
        ({}, "XYX", 2, {"X": 1, "Y": 1}),
        ({}, "XXY", 2, {"X": 1, "Y": 1}),
        ({}, "YXX", 2, {"X": 2, "Y": 0}),
        # Weighing zero is the same as never seen.
        ({"X": 0.0}, "XYX", 4, {"X": 3, "Y": 1}),
        ({"X": 0.0, "Y": 0.0}, "YXX", -4, {"X": -3, "Y": -1}),
    ],
)
def test_all_zero_weights_share_equally(
    weights: dict[str, float], channels: str, total: int, expected: dict[str, int]
) -> None:
    (got,) = by_channel(weights, channels, total)
    assert got == expected
    assert got == per_touch(_Shares(Params(channel_weights=weights)), path_of(channels), (total,))[0]


def test_value_and_conversion_together() -> None:
    """The two totals of a conversion (minor units, millionths) in one call."""
    # 1999 eighths: floors 249, 249, 499 (three times); C and D's .875 then two of the .75s.
    value, count = by_channel(EIGHTHS, "CDAAB", 1999, MICRO)
    assert value == {"A": 999, "B": 500, "C": 250, "D": 250}
    assert count == {"A": 500_000, "B": 250_000, "C": 125_000, "D": 125_000}


def test_negative_weights_are_summed_as_the_touches_are() -> None:
    """Removal effects are never negative; a weight that is still is summed as the touches are."""
    weights = {"A": -0.5, "B": 0.75, "C": 0.5}
    shares = _Shares(Params(channel_weights=weights))
    for channels in ("ABC", "CBA", "AABCC", "BAB"):
        path = path_of(channels)
        for total in (1, 7, -5, MICRO):
            assert shares.data_driven_by_channel(path, (total,)) == per_touch(shares, path, (total,))


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(st.sampled_from(CHANNELS[:4]), st.one_of(WEIGHT, st.just(-0.25))),
    st.lists(
        st.tuples(st.lists(st.sampled_from(CHANNELS), max_size=10), st.integers(-50_000, 50_000)),
        max_size=8,
    ),
)
def test_a_report_by_channel_credits_what_the_touches_do(
    weights: dict[str, float], conversions: list[tuple[list[str], int]]
) -> None:
    """``credit_table`` by channel (per-channel sums) and by a group value that is each touch's
    channel (every touch's share): the same rows, the same sums, each conversion twice (the
    second one from the per-touch cache); a negative weight (no removal effect is) included."""
    attribution = Attribution(AttributionOptions())
    params = Params(channel_weights=weights)
    convs = []
    for n, (channels, minor) in enumerate(conversions + conversions):
        conv = Conv(f"c{n}", iso(AT), AT, minor, "EUR")
        conv.touches = path_of(channels)
        convs.append(conv)
    accepted = frozenset({"allow"})
    # data_driven alone too: beside linear, every touched channel has a row whatever it earns.
    for models in (["data_driven"], ["data_driven", "linear"]):
        grouped = credit_table(Eligibility(attribution), convs, models, "channel", accepted, params)
        for conv in convs:
            conv.eligible = None
        touched = credit_table(Eligibility(attribution), convs, models, "campaign", accepted, params)
        # Conversions without a touch go to Direct by channel, to no group otherwise.
        expected = {(d, "Direct" if g is None else g, c): sums for (d, g, c), sums in touched.items()}
        assert grouped == expected


def at_ages(ages: Sequence[int]) -> list[Cand]:
    """Touches ``ages`` microseconds before ``AT``, in the order eligibility gives them (time,
    then id): equal ages keep their order."""
    path = [
        (iso(AT - timedelta(microseconds=age)), f"t{i:02d}", "A", None, None, None, "v")
        for i, age in enumerate(ages)
    ]
    return sorted(path)


DAY_US = 86_400_000_000
HALF_LIVES = st.sampled_from([7 * DAY_US, 1_000_000, DAY_US + 1, 36_500 * DAY_US, 3 * 3_600_000_000])


@settings(max_examples=1500, deadline=None)
@given(
    HALF_LIVES,
    st.data(),
    st.lists(
        st.one_of(
            st.integers(-3, 12),
            st.integers(-(10**7), 10**7),
            st.just(MICRO),
            st.just(-MICRO),
            st.integers(-(2**60), 2**60),
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_time_decay_shares_are_the_model_s(half_us: int, data: st.DataObject, totals: list[int]) -> None:
    """``_Shares.time_decay`` (one touch at once, the others in floats where they can tell, else
    in integers) against the model's own Fractions through ``distribute``: ages a whole number
    of half-lives apart (exact ties), equal times, any microsecond, touches so old that their
    weights are subnormal or underflow to 0 (a one-second half-life), totals past 2^50."""
    age = st.one_of(
        st.integers(0, 90 * DAY_US),
        st.integers(0, 14).map(lambda k: k * half_us),
        st.integers(0, 4).map(lambda k: k * half_us + data.draw(st.integers(0, 2))),
        # 2^-960..2^-1100: down to subnormal, then 0 (within 31 years)
        st.integers(960, 1100).map(lambda k: min(k * half_us, 10**15)),
        st.integers(0, 10**15),
    )
    ages = data.draw(st.lists(age, min_size=1, max_size=10))
    params = Params(half_life=timedelta(microseconds=half_us))
    path = at_ages(ages)
    got = _Shares(params).time_decay(path, totals)
    touches = [Touch(c[1], datetime.fromisoformat(c[0]), c[2]) for c in path]
    weights = time_decay(touches, AT, params)
    assert got == [distribute(total, weights) for total in totals]


@pytest.mark.parametrize(
    ("ages_in_half_lives", "total", "expected"),
    [
        ([0], -7, [-7]),  # one touch takes everything
        ([1, 0], 3, [1, 2]),  # 1/3 and 2/3 exactly: no unit left
        ([0, 0], 3, [1, 2]),  # equal weights, one unit left: the later touch
        ([0, 0], -3, [-1, -2]),
        ([1, 0], 2, [1, 1]),  # 2/3 and 4/3: remainders 2/3 and 1/3, the first's is larger
        ([2, 1, 0], 7, [1, 2, 4]),
        ([1100, 0], 5, [0, 5]),  # 2^-1100 underflows to 0
        ([1073, 0], MICRO, [0, MICRO]),  # 2^-1073, subnormal
        # Past 2^50, in integers: (2^60 + 1) / 9 and 8 times it, the unit left to the 7/9.
        ([3, 0], 2**60 + 1, [(2**60 - 1) // 9, 2**60 + 1 - (2**60 - 1) // 9]),
    ],
)
def test_time_decay_hand_cases(ages_in_half_lives: list[int], total: int, expected: list[int]) -> None:
    half_us = 3_600_000_000
    path = at_ages([k * half_us for k in ages_in_half_lives])
    (got,) = _Shares(Params(half_life=timedelta(hours=1))).time_decay(path, (total,))
    assert got == expected


h = float.fromhex

WEIGHTS = st.lists(
    st.one_of(
        st.floats(0, 1),
        st.integers(0, 1100).map(lambda k: 2.0**-k),  # exact ties and whole quotas; subnormal, 0
        st.sampled_from([1.0, 0.5, 0.25, 1 / 3, 0.2, 0.75]),
        st.integers(1, 8).map(lambda k: 0.75 + k * 2**-52),  # all but ties
    ),
    max_size=9,
).map(lambda ws: [1.0, *ws])  # the latest touch weighs 1.0


@settings(max_examples=3000, deadline=None)
@given(
    WEIGHTS,
    st.lists(
        st.one_of(
            st.integers(-20, 20),
            st.integers(-(10**9), 10**9),
            st.just(MICRO),
            st.integers(2**40, 2**52),  # floats that round across a whole number or a tie
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_float_shares_are_the_integers_or_nothing(weights: list[float], totals: list[int]) -> None:
    """Worked out in floats, the shares are those of the exact binary fractions, or the floats
    say they cannot tell."""
    got = float_shares(totals, weights)
    assert got is None or got == distribute_many(totals, exact_integers(weights))


@pytest.mark.parametrize(
    ("weights", "units"),
    [
        # Plain float arithmetic, with no margin, rounds these wrong (found by a search): a
        # quota within its rounding error of a whole number, remainders within theirs.
        ([1.0, h("1.fdd2636090f34p-1"), h("1.d0d6f8849c820p-1")], 318601714190260),
        ([1.0, h("1.cefb558f6d6e6p-2"), h("1.bf12151904ba8p-3")], 338317295309544),
        ([1.0, h("1.800000000000ap-1"), h("1.45c85825966a8p-2")], 365026747563636),
        ([1.0, h("1.555555555555dp-2"), h("1.1983a18b521fdp-1")], 510508457280860),
        ([1.0, h("1.f59903cb837a0p-5"), h("1.dc4b957cfdd60p-2")], 441042384342564),
    ],
)
def test_float_shares_leave_what_they_cannot_tell_to_integers(weights: list[float], units: int) -> None:
    """And so does ``time_decay`` for touches at one time (equal weights: every remainder ties)."""
    exact = distribute_many((units, -units), exact_integers(weights))
    assert float_shares((units, -units), weights) in (None, exact)
    assert _Shares(Params()).time_decay(at_ages([0] * 3), (units,)) == distribute_many((units,), [1, 1, 1])


@pytest.mark.parametrize(
    ("weights", "totals", "decided"),
    [
        ([0.3, 0.6, 1.0], (1999, MICRO), True),  # the usual case: the floats tell
        ([h("1.6a09e667f3bcdp-1"), 1.0], (7, -7, 0), True),
        ([0.5, 0.5, 1.0], (7, -7), True),  # 1.75, 1.75, 3.5: the two units left to a tie above the cut
        ([1.0, 1.0, 0.125], (3,), False),  # 1.41, 1.41, 0.18: one unit left, and a tie for it
        ([1.0, 1.0], (3,), False),  # a tie at the boundary: 1.5 and 1.5
        ([0.5, 1.0], (3,), False),  # whole quotas: 1 and 2
        ([0.0, 1.0], (5,), False),  # a zero weight's quota is whole
        ([0.3, 1.0], (2**50,), False),  # too large a total
        ([0.3, 1.0], (-(10**400),), False),  # no float at all
    ],
)
def test_float_shares_decide_the_usual_case(
    weights: list[float], totals: tuple[int, ...], decided: bool
) -> None:
    got = float_shares(totals, weights)
    assert (got is not None) == decided
    if got is not None:
        assert got == distribute_many(totals, exact_integers(weights))


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(st.sampled_from(CHANNELS[:4]), WEIGHT),
    st.lists(
        st.tuples(
            st.lists(st.tuples(st.sampled_from(CHANNELS), st.integers(0, 40 * 24)), max_size=10),
            st.integers(-50_000, 50_000),
        ),
        max_size=8,
    ),
    st.permutations(list(MODELS)),
)
def test_every_model_at_once_credits_what_each_does_alone(
    weights: dict[str, float], conversions: list[tuple[list[tuple[str, int]], int]], order: list[str]
) -> None:
    """``model=all`` (each touch's row looked up once for every model, when ``linear`` comes
    first) against each model credited alone: the same sums, and the rows in the order the
    plain path makes them — the Direct row of a conversion without touches, the touches
    chosen by the one-touch models, then every touch in time order (``linear`` credits each
    one). Models in another order take the plain path: the same sums."""
    attribution = Attribution(AttributionOptions())
    params = Params(channel_weights=weights)
    convs = []
    for n, (touches, minor) in enumerate(conversions + conversions):
        conv = Conv(f"c{n}", iso(AT), AT, minor, "EUR")
        conv.touches = [
            (iso(AT - timedelta(hours=hours)), f"t{i:02d}", c, None, None, c, "v")
            for i, (c, hours) in enumerate(touches)
        ]
        convs.append(conv)
    accepted = frozenset({"allow"})
    eligible = Eligibility(attribution)
    for models in (list(MODELS), order):
        for group_by, at_group, no_touch in (("channel", 2, "Direct"), ("campaign", 5, None)):
            every = credit_table(eligible, convs, models, group_by, accepted, params)
            # A row only where some model credits something (value or millionths).
            assert all(any(any(sums[m]) for m in models) for sums in every.values())
            for m in models:
                alone = credit_table(eligible, convs, [m], group_by, accepted, params)
                assert {key: sums[m] for key, sums in every.items() if any(sums[m])} == {
                    key: sums[m] for key, sums in alone.items() if any(sums[m])
                }
            one_touch = [m for m in models if m in ("first_touch", "last_touch", "last_non_direct")]
            if next(m for m in models if m not in one_touch) != "linear":
                continue
            rows: dict[str | None, None] = {}
            for conv in convs:
                path = eligible(conv, accepted)
                if not path:
                    rows[no_touch] = None
                    continue
                for m in one_touch:
                    rows[path[_Shares.one_touch(m, path)][at_group]] = None
                rows |= dict.fromkeys(c[at_group] for c in path)
            assert [group for _, group, _ in every] == list(rows)


def test_every_model_at_once_on_hand_made_paths() -> None:
    """``model=all``'s shortcuts (a path of one touch credited whole by every model at once;
    the positional models counted per row and position; ``time_decay`` in a second pass)
    against each model alone, and the rows in the plain path's order: one touch and a refund,
    touches at one time (ties), a whole number of half-lives apart, so old that their
    ``time_decay`` weight is 0 (a one-second half-life), times not in the 27-character form,
    the same paths and totals again (kept shares)."""
    attribution = Attribution(AttributionOptions())
    params = Params(half_life=timedelta(seconds=1), channel_weights={"A": 0.5, "B": 0.25, "C": 0.25})
    stamps = {
        "1h": iso(AT - timedelta(hours=1)),
        "2s": iso(AT - timedelta(seconds=2)),
        "1s": iso(AT - timedelta(seconds=1)),
        "now": iso(AT),
        "whole": "2026-11-10T11:55:00Z",  # whole seconds
        "short": (AT - timedelta(minutes=3)).isoformat(),  # 2026-11-10T11:57:00+00:00
    }
    paths: list[tuple[list[tuple[str, str]], int]] = [
        ([("B", "1h")], 1999),
        ([("C", "now")], -500),  # a refund, one touch
        ([("A", "1s"), ("B", "1s")], 3),  # a tie
        ([("A", "2s"), ("B", "1s"), ("Direct", "now")], 7),  # whole half-lives apart
        ([("C", "1h"), ("A", "now"), ("B", "now")], -1001),  # C weighs 0 under time_decay
        ([("B", "whole"), ("C", "short"), ("A", "now"), ("Direct", "now")], 12345),
        ([("Direct", "1h"), ("Direct", "now")], 0),
    ]
    convs = []
    for n, (touches, minor) in enumerate(paths + paths):
        conv = Conv(f"c{n}", iso(AT), AT, minor, "EUR")
        conv.touches = [(stamps[at], f"t{i:02d}", c, None, None, c, "v") for i, (c, at) in enumerate(touches)]
        convs.append(conv)
    accepted = frozenset({"allow"})
    eligible = Eligibility(attribution)
    for group_by in ("channel", "campaign"):
        every = credit_table(eligible, convs, list(MODELS), group_by, accepted, params)
        # Rows as first credited: B (first and last touch of the first path), C, then by path.
        assert [group for _, group, _ in every] == ["B", "C", "A", "Direct"]
        for m in MODELS:
            alone = credit_table(eligible, convs, [m], group_by, accepted, params)
            assert {key: sums[m] for key, sums in every.items() if any(sums[m])} == {
                key: sums[m] for key, sums in alone.items() if any(sums[m])
            }
        # C: the refund whole, 2^-3600 (0.0) of the fifth path, 2^-180 of the sixth (no unit).
        assert every[None, "C", "EUR"]["time_decay"] == [2 * -500, 2 * MICRO]
        # The sixth path's A and Direct tie: the unit left of 12345 to the later, Direct.
        assert every[None, "Direct", "EUR"]["time_decay"][0] == 2 * (0 + 4 + 6173 + 0)


def test_every_model_at_once_over_many_conversions() -> None:
    """Past ``_FOLD`` conversions the positional models' appended vectors are summed into the
    rows on the way (and forgotten): still what each model credits alone, by day too."""
    attribution = Attribution(AttributionOptions())
    params = Params(channel_weights={"A": 0.5, "B": 0.25, "C": 0.25})
    shapes = ["AB", "BCA", "CCAB", "A", "ABCAB", "CB"]
    convs = []
    for n in range(2 * _FOLD + 7):
        at = AT + timedelta(hours=n % 50)
        conv = Conv(f"c{n}", iso(at), at, (n * 37) % 2000 - 300, "EUR")
        channels = shapes[n % len(shapes)]
        conv.touches = [
            (iso(at - timedelta(hours=len(channels) - i)), f"t{i:02d}", c, None, None, c, "v")
            for i, c in enumerate(channels)
        ]
        convs.append(conv)
    accepted = frozenset({"allow"})
    eligible = Eligibility(attribution)
    every = credit_table(eligible, convs, list(MODELS), "campaign", accepted, params, UTC)
    for m in MODELS:
        alone = credit_table(eligible, convs, [m], "campaign", accepted, params, UTC)
        assert {key: sums[m] for key, sums in every.items() if any(sums[m])} == {
            key: sums[m] for key, sums in alone.items() if any(sums[m])
        }
