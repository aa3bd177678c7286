"""Attribution models: how one conversion's value is shared among the touchpoints before it.

Pure functions, no I/O. The input is a conversion (its time and its value in integer minor
units) and the touchpoints of whoever converted, **already merged across devices** (every
visitor bound to the user): this module never looks anything up. Owns eligibility (lookback
window per campaign tier, bot verdicts, internal touches), the models, the Markov-chain
weights of the data-driven model, and the money rule: the credits of one conversion are
integers that always sum to its value exactly (largest remainder, ties to the later touch).

A conversion with no eligible touchpoint gives its whole value to ``Direct``, with no
touch: the visitor came back without any campaign, click ID or external referrer we saw
inside the window, which is what Direct means.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from fractions import Fraction
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.channels import DIRECT, INTERNAL

if TYPE_CHECKING:
    from gateway.options import AttributionOptions

NO_TOUCH_CHANNEL = DIRECT
"""Who gets the value of a conversion with no eligible touchpoint (the credit has no touch)."""

MINOR_UNITS = dict.fromkeys(
    ("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND", "VUV"), 0
)
MINOR_UNITS |= dict.fromkeys(("XAF", "XOF", "XPF"), 0)
MINOR_UNITS |= dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3)
MINOR_UNITS |= dict.fromkeys(("CLF", "UYW"), 4)
"""ISO 4217 currencies whose minor unit is not the cent (every one of list one's: the CFA and
CFP francs have none, Chile's Unidad de Fomento four); every other currency has 2 decimals."""


STRIPE_MINOR_UNITS = {code: places for code, places in MINOR_UNITS.items() if code != "ISK"} | {"MGA": 0}
"""The minor units of Stripe's API amounts, where they depart from ISO 4217: ISK in hundredths
(Stripe keeps the króna two-decimal, 100 is 1 ISK), MGA in whole ariary."""


def exponent(currency: str | None, units: Mapping[str, int] = MINOR_UNITS) -> int:
    """The decimals of ``currency``'s minor unit (per ISO 4217, or another ``units`` table)."""
    return units.get((currency or "").upper(), 2)


def to_minor(value: float | Decimal | str | None, currency: str | None = None) -> int:
    """``19.99`` EUR → ``1999``; rounded half to even at the currency's minor unit; None → 0."""
    if value is None:
        return 0
    amount, places = Decimal(str(value)), exponent(currency)
    # Enough digits for the whole part (the default 28 round from about 1e26 and fail: a value
    # stored before intake checked ``MAX_VALUE`` must not break a report).
    with localcontext() as context:
        context.prec = max(28, amount.adjusted() + places + 2)
        return int(amount.scaleb(places).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def from_minor(amount: int, currency: str | None = None) -> Decimal:
    """``1999`` EUR → ``Decimal("19.99")``."""
    return Decimal(amount).scaleb(-exponent(currency))


@dataclass(frozen=True, slots=True)
class Touch:
    """One touchpoint as the models see it; ``id`` ties a credit back to the stored row."""

    id: str
    ts: datetime
    """Aware, in UTC as the store keeps it (or a fixed offset): windows and ages are elapsed
    time, and Python subtracts two datetimes of one zone with daylight saving time on the
    wall clock."""
    channel: str
    tier: str | None = None
    """Campaign tier (see ``Tiers``); None: the default tier."""
    verdict: str | None = None
    """Bot verdict; None (no bot scoring) counts as ``allow``."""


@dataclass(frozen=True, slots=True)
class Credit:
    touch: Touch | None
    """None when no touchpoint was eligible (the value went to ``NO_TOUCH_CHANNEL``)."""
    channel: str
    amount: int
    """Minor units (cents)."""


@dataclass(frozen=True)
class Params:
    """The models' knobs (``[attribution]``), plus the data-driven model's channel weights."""

    position_first: Fraction = Fraction(2, 5)
    position_last: Fraction = Fraction(2, 5)
    half_life: timedelta = timedelta(days=7)
    last_touch_share: Fraction = Fraction(3, 5)
    channel_weights: Mapping[str, float] = field(default_factory=dict)
    """data_driven: per-channel weights from ``markov_weights`` over the period's journeys."""
    learnt: Learnt | None = None
    """data_driven: what the weights were learnt from and how (``moves_learnt``), for the
    report to show; the crediting reads ``channel_weights`` alone."""

    @classmethod
    def from_options(
        cls, at: AttributionOptions, channel_weights: Mapping[str, float] | None = None
    ) -> Params:
        # Through str: 0.4 in TOML means exactly 2/5, not the nearest binary float.
        return cls(
            position_first=Fraction(str(at.position_first)),
            position_last=Fraction(str(at.position_last)),
            half_life=timedelta(days=at.half_life_days),
            last_touch_share=Fraction(str(at.last_touch_share)),
            channel_weights=channel_weights or {},
        )


Weights = Callable[[Sequence[Touch], datetime, Params], list[Fraction]]


def first_touch(touches: Sequence[Touch], at: datetime, p: Params) -> list[Fraction]:
    return [Fraction(i == 0) for i in range(len(touches))]


def last_touch(touches: Sequence[Touch], at: datetime, p: Params) -> list[Fraction]:
    return [Fraction(i == len(touches) - 1) for i in range(len(touches))]


def last_non_direct(touches: Sequence[Touch], at: datetime, p: Params) -> list[Fraction]:
    """The last touch that is not Direct; when every touch is Direct, the last one."""
    chosen = next((i for i in reversed(range(len(touches))) if touches[i].channel != DIRECT), None)
    chosen = len(touches) - 1 if chosen is None else chosen
    return [Fraction(i == chosen) for i in range(len(touches))]


def linear(touches: Sequence[Touch], at: datetime, p: Params) -> list[Fraction]:
    return [Fraction(1)] * len(touches)


def position_based(touches: Sequence[Touch], at: datetime, p: Params) -> list[Fraction]:
    """First and last get their shares, the middle splits the rest; two touches split the
    ends' shares between them (50/50 by default), one touch gets everything."""
    n = len(touches)
    if n <= 1:
        return [Fraction(1)] * n
    if n == 2:
        ends = p.position_first + p.position_last
        return [p.position_first, p.position_last] if ends else [Fraction(1), Fraction(1)]
    middle = (1 - p.position_first - p.position_last) / (n - 2)
    return [p.position_first, *([middle] * (n - 2)), p.position_last]


def time_decay(touches: Sequence[Touch], at: datetime, p: Params) -> list[Fraction]:
    """Weight 2^(-age / half-life), the age measured back from the conversion."""
    return [Fraction(w) for w in decay_weights([t.ts for t in touches], p.half_life)]


def decay_weights(times: Sequence[datetime], half_life: timedelta) -> list[float]:
    """``time_decay``'s weights of touches at ``times``, up to a common factor (only their
    ratios count): 2^(-age / half-life) divided by the latest touch's, i.e. 2^(-(latest - t) /
    half-life). Touches a whole number of half-lives apart weigh exact powers of two against
    each other, so the ties they make go to the later touch as the money rule says (measured
    from the conversion, float noise broke them either way); and the latest weighs 1, so old
    touches never underflow to all zero (equal shares)."""
    if not times:
        return []
    latest = max(times)
    half = _microseconds(half_life)
    pow, ldexp = math.pow, math.ldexp
    out = []
    for t in times:
        age = latest - t  # in whole microseconds: integer arithmetic, exact and cheaper
        us = age.days * 86_400_000_000 + age.seconds * 1_000_000 + age.microseconds
        halves, rest = divmod(us, half)
        # A whole number of half-lives: 2^-k exactly (0.0 past the smallest float, as pow gives).
        out.append(ldexp(1.0, -halves) if not rest else pow(2.0, -(us / half)))
    return out


def _microseconds(span: timedelta) -> int:
    return span.days * 86_400_000_000 + span.seconds * 1_000_000 + span.microseconds


def weighted_last_touch(touches: Sequence[Touch], at: datetime, p: Params) -> list[Fraction]:
    """The last touch gets its share, the earlier ones split the rest evenly."""
    n = len(touches)
    if n <= 1:
        return [Fraction(1)] * n
    rest = (1 - p.last_touch_share) / (n - 1)
    return [*([rest] * (n - 1)), p.last_touch_share]


SNAP_DENOMINATOR = 10**6
SNAP_DISTANCE = Fraction(1, 10**14)


def learnt_weight(weight: float) -> Fraction:
    """A ``data_driven`` weight as the fraction it stands for: the solve in floats leaves 1/6
    as 0.16666666666666663, and split over touches such a weight no longer ties with an
    equal one (README "Money is exact": ties go to the later touch). So the fraction of
    denominator at most a million nearest the float, where within 1e-14 of it (a few hundred
    floats' rounding; far less than any credit's unit), else the float exactly."""
    exact = Fraction(weight)
    near = exact.limit_denominator(SNAP_DENOMINATOR)
    return near if abs(near - exact) <= SNAP_DISTANCE else exact


def data_driven(touches: Sequence[Touch], at: datetime, p: Params) -> list[Fraction]:
    """Each channel's Markov removal-effect weight (``learnt_weight``), split evenly over its
    touches in this path (all zero — channels never seen in the period — falls back to linear)."""
    per_channel = Counter(t.channel for t in touches)
    return [learnt_weight(p.channel_weights.get(t.channel, 0.0)) / per_channel[t.channel] for t in touches]


MODELS: dict[str, Weights] = {
    "first_touch": first_touch,
    "last_touch": last_touch,
    "last_non_direct": last_non_direct,
    "linear": linear,
    "position_based": position_based,
    "time_decay": time_decay,
    "weighted_last_touch": weighted_last_touch,
    "data_driven": data_driven,
}


def distribute(total: int, weights: Sequence[Fraction]) -> list[int]:
    """Integer shares of ``total`` proportional to ``weights`` that sum to ``total`` exactly:
    each share rounded down, the units left over to the largest remainders (ties to the later
    position). All-zero weights share equally. A negative total (a refund) mirrors a positive."""
    if not weights:
        raise ValueError("no weights to distribute over")
    if any(w < 0 for w in weights):
        raise ValueError("weights must not be negative")
    # On one common denominator every quota is an integer over the same divisor: the same
    # answer as Fraction arithmetic, many times cheaper (time_decay's weights are binary
    # fractions with large denominators).
    denominator = math.lcm(*(w.denominator for w in weights))
    return distribute_many((total,), [w.numerator * (denominator // w.denominator) for w in weights])[0]


def distribute_many(totals: Sequence[int], scaled: Sequence[int]) -> list[list[int]]:
    """``distribute`` of each of ``totals`` (a conversion's value and its one whole
    conversion) over weights already on one common denominator (their numerators, not
    negative), their sum worked out once: the shares depend only on the weights' ratios, so
    any common scale gives the same answer."""
    n = len(scaled)
    if n == 1:  # one touch takes everything (a quarter of the conversions)
        return [[total] for total in totals]
    whole = sum(scaled)
    if whole == 0:
        scaled, whole = [1] * n, n
    out = []
    for total in totals:
        sign, units = (-1, -total) if total < 0 else (1, total)
        quotas = [divmod(units * weight, whole) for weight in scaled]
        shares = [share for share, _ in quotas]
        left = units - sum(shares)
        if left:  # largest remainders first, ties to the later position
            remainders = [remainder for _, remainder in quotas]
            for _, i in sorted(zip(remainders, range(n), strict=True), reverse=True)[:left]:
                shares[i] += 1
        out.append(shares if sign == 1 else [-s for s in shares])
    return out


def credits(model: str, touches: Sequence[Touch], at: datetime, value: int, p: Params) -> list[Credit]:
    """Credits of one conversion (``value`` in minor units) over its eligible ``touches``,
    sorted in time order (see ``Attribution.eligible``)."""
    if not touches:
        return [Credit(None, NO_TOUCH_CHANNEL, value)]
    shares = distribute(value, MODELS[model](touches, at, p))
    return [Credit(t, t.channel, s) for t, s in zip(touches, shares, strict=True)]


def by_channel(credited: Iterable[Credit]) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for c in credited:
        totals[c.channel] += c.amount
    return dict(totals)


class Tiers:
    """A touchpoint's campaign tier: a tier parameter, else a campaign-name pattern, else the default."""

    def __init__(self, at: AttributionOptions) -> None:
        self.windows = {tier: timedelta(days=days) for tier, days in at.lookback_days.items()}
        self.default = at.default_tier
        self.params = tuple(p.lower() for p in at.tier_params)  # raw_params keys are lower-case
        self.names = {tier.casefold(): tier for tier in self.windows}
        self.patterns = [
            (tier, [re.compile(p, re.IGNORECASE) for p in patterns])
            for tier, patterns in at.tier_patterns.items()
        ]

    def tier_of(self, campaign: str | None, raw_params: Mapping[str, str] | None = None) -> str:
        for name in self.params:
            tier = self.names.get((raw_params or {}).get(name, "").strip().casefold())
            if tier is not None:
                return tier
        if campaign:
            for tier, patterns in self.patterns:
                if any(p.search(campaign) for p in patterns):
                    return tier
        return self.default

    def window(self, tier: str | None) -> timedelta:
        return self.windows.get(tier or self.default, self.windows[self.default])


def report_zone(name: str) -> tzinfo:
    """``attribution.timezone`` as a time zone (UTC itself needs no database); ValueError for a
    name the system's time zone database does not hold."""
    if name.upper() in ("UTC", "Z", "ETC/UTC"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ValueError(f"unknown time zone {name!r}") from err


class Attribution:
    """``[attribution]`` compiled once: which touches count, then any model over them."""

    def __init__(self, at: AttributionOptions, channel_weights: Mapping[str, float] | None = None) -> None:
        self.tiers = Tiers(at)
        self.verdicts = frozenset(at.verdicts)
        self.params = Params.from_options(at, channel_weights)
        self.zone = report_zone(at.timezone)
        """Where report days begin and end (``attribution.timezone``)."""

    def eligible(
        self, touches: Iterable[Touch], at: datetime, verdicts: Iterable[str] | None = None
    ) -> list[Touch]:
        """Touches at or before ``at`` and no older than their tier's window (the boundary
        itself counts), with an accepted verdict, not internal; in time order."""
        accepted = self.verdicts if verdicts is None else frozenset(verdicts)
        kept = [
            t
            for t in touches
            if t.ts <= at
            and (t.verdict or "allow") in accepted
            and t.channel != INTERNAL
            and at - t.ts <= self.tiers.window(t.tier)
        ]
        kept.sort(key=lambda t: (t.ts, t.id))
        return kept

    def credit(
        self,
        model: str,
        touches: Iterable[Touch],
        at: datetime,
        value: int,
        verdicts: Iterable[str] | None = None,
    ) -> list[Credit]:
        """One conversion's credits under ``model``; touches of every device already merged."""
        return credits(model, self.eligible(touches, at, verdicts), at, value, self.params)


_START, _CONVERSION, _NULL = "\x00start", "\x00conversion", "\x00null"


Moves = dict[str, Counter[str]]
"""A first-order Markov chain's transition counts: state → next state → times seen."""


def markov_weights(journeys: Iterable[tuple[Sequence[str], bool]]) -> dict[str, float]:
    """Per-channel weights (summing to 1) of a first-order Markov chain over every journey of
    the period, converting or not: each channel's removal effect — how much the chance of
    converting drops when the channel is taken out — normalised. Empty paths are skipped."""
    return moves_weights(markov_moves(journeys))


def _add_path(moves: Moves, path: Sequence[str], end: str, n: int = 1) -> None:
    """``n`` journeys along ``path`` (not empty), from the start to ``end``, into ``moves``."""
    previous = _START
    for channel in path:
        moves[previous][channel] += n
        previous = channel
    moves[previous][end] += n


def markov_moves(journeys: Iterable[tuple[Sequence[str], bool]], moves: Moves | None = None) -> Moves:
    """The transitions of ``journeys`` counted (into ``moves``, if given: counts of several sets
    of journeys add up to those of all of them)."""
    moves = defaultdict(Counter) if moves is None else moves
    for path, converted in journeys:
        if path:
            _add_path(moves, path, _CONVERSION if converted else _NULL)
    return moves


def paths_moves(paths: Mapping[tuple[str, ...], int], converted: bool, moves: Moves | None = None) -> Moves:
    """``markov_moves`` of journeys counted by path (path → how many journeys took it), all
    converting or none: each distinct path walked once, its transitions added times its
    count — the same integers as walking every journey (into ``moves``, if given). Journeys
    repeat: the benchmark store's 81k that did not convert take 33k paths (a lone ``Paid
    Search`` 6k times), 309k steps walked instead of 400k."""
    moves = defaultdict(Counter) if moves is None else moves
    end = _CONVERSION if converted else _NULL
    for path, n in paths.items():
        if path and n >= 1:
            _add_path(moves, path, end, n)
    return moves


def add_moves(many: Iterable[Moves]) -> Moves:
    """Transition counts of several sets of journeys, added up."""
    total: Moves = defaultdict(Counter)
    for moves in many:
        for state, counter in moves.items():
            total[state].update(counter)
    return total


@dataclass(frozen=True)
class Learnt:
    """What ``data_driven`` learnt from a period's journeys, for an analyst to read beside its
    credits: how many journeys converted and how many did not, each channel's removal effect
    (how much the chance of converting drops, relatively, when the channel leads nowhere) and
    its weight (the effects normalised: what the crediting uses)."""

    converting: int
    not_converting: int
    effects: dict[str, float]
    weights: dict[str, float]
    at: datetime | None = None
    """When it was learnt (UTC), once the report engine says: a report may credit with weights
    learnt a few minutes before it, over the period as it was then (``since``, ``until``)."""
    since: datetime | None = None
    until: datetime | None = None


def moves_learnt(moves: Moves) -> Learnt:
    """What the chain of ``moves`` teaches: the journeys counted (each ends once, converting or
    not) and every channel's removal effect and weight (``moves_weights``' floats)."""
    converting = sum(counter.get(_CONVERSION, 0) for counter in moves.values())
    not_converting = sum(counter.get(_NULL, 0) for counter in moves.values())
    effects = removal_effects(moves)
    total = sum(effects.values())
    weights = {c: (e / total if total else 0.0) for c, e in effects.items()}
    return Learnt(converting, not_converting, effects, weights)


def removal_effects(moves: Moves) -> dict[str, float]:
    """Each channel's removal effect: 1 - P(convert without it) / P(convert), never below 0;
    all 0 when nothing converts (the same floats, whatever order the moves were counted in:
    each matrix cell is written once)."""
    channels = sorted({c for counter in moves.values() for c in counter} - {_CONVERSION, _NULL})
    base = _conversion_probability(moves, channels, None)
    if base <= 0:
        return {c: 0.0 for c in channels}
    return {c: max(0.0, 1 - _conversion_probability(moves, channels, c) / base) for c in channels}


def moves_weights(moves: Moves) -> dict[str, float]:
    """``markov_weights`` from transition counts: the removal effects normalised."""
    return moves_learnt(moves).weights


def _conversion_probability(
    moves: Mapping[str, Counter[str]], channels: list[str], removed: str | None
) -> float:
    """P(reach conversion from start), a removed channel leading nowhere: solves x = Qx + r."""
    states = [_START, *(c for c in channels if c != removed)]
    index = {s: i for i, s in enumerate(states)}
    n = len(states)
    matrix = [[0.0] * (n + 1) for _ in range(n)]  # rows of (I - Q | r)
    for s, i in index.items():
        matrix[i][i] = 1.0
        out = moves.get(s)
        total = sum(out.values()) if out else 0
        for target, count in (out or {}).items():
            if target == _CONVERSION:
                matrix[i][n] += count / total
            elif target in index:
                matrix[i][index[target]] -= count / total
    return _solve(matrix)[0]


def _solve(matrix: list[list[float]]) -> list[float]:
    """Gaussian elimination with partial pivoting on an augmented matrix (non-singular here:
    every state reaches an end of journey)."""
    n = len(matrix)
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(matrix[r][col]))
        matrix[col], matrix[pivot] = matrix[pivot], matrix[col]
        lead = matrix[col][col]
        for r in range(n):
            if r != col and matrix[r][col]:
                factor = matrix[r][col] / lead
                matrix[r] = [a - factor * b for a, b in zip(matrix[r], matrix[col], strict=True)]
    return [matrix[i][n] / matrix[i][i] for i in range(n)]
