"""Crediting without a database: ``data_driven``'s shares summed per channel (what a report
grouped by channel credits) against the per-touch rounding they stand for."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.attribution import Attribution, Params, Touch, data_driven, distribute, distribute_many
from gateway.events import iso
from gateway.options import AttributionOptions
from storage.crediting import MICRO, Cand, Conv, Eligibility, _Shares, credit_table

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
