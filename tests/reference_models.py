"""An independent reading of README "Attribution" (Models, Reports, Days and daylight saving
time), written from the README's words alone and not from ``gateway/attribution.py`` or
``storage/crediting.py``: the property test in ``tests/storage/test_models_reference.py``
holds the report engine to it.

Everything is exact: shares are ``Fraction``s of the value in minor units (and of a million
for credited conversions), rounded down with the units left over to the largest remainders,
ties to the later touch; the Markov chain of ``data_driven`` is solved in fractions too.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fractions import Fraction
from itertools import pairwise
from math import floor
from zoneinfo import ZoneInfo

MILLION = 1_000_000
MODELS = (
    "first_touch",
    "last_touch",
    "last_non_direct",
    "linear",
    "position_based",
    "time_decay",
    "weighted_last_touch",
    "data_driven",
)
DAY = timedelta(days=1)


@dataclass(frozen=True)
class RefTouch:
    order: int
    """Position in the store's order for touches of the same instant (the later id is later)."""
    at: datetime
    visitor: str
    channel: str
    campaign: str | None = None
    source: str | None = None
    medium: str | None = None
    creator_id: str | None = None
    params: dict[str, str] = field(default_factory=dict, hash=False)
    verdict: str | None = None


@dataclass(frozen=True)
class RefConversion:
    at: datetime
    visitor: str | None
    user: str | None
    minor: int
    currency: str | None
    name: str = "purchase"


@dataclass
class Settings:
    windows: dict[str, float] = field(
        default_factory=lambda: {"awareness": 30.0, "consideration": 14.0, "conversion": 7.0}
    )
    default_tier: str = "awareness"
    tier_params: tuple[str, ...] = ("c_tier", "utm_tier")
    tier_patterns: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {
            "awareness": ("awareness",),
            "consideration": ("consideration",),
            "conversion": ("conversion", "retarget"),
        }
    )
    verdicts: frozenset[str] = frozenset({"allow"})
    position_first: float = 0.4
    position_last: float = 0.4
    half_life_days: float = 7.0
    last_touch_share: float = 0.6
    timezone: str = "UTC"

    def tier(self, t: RefTouch) -> str:
        """The first tier parameter naming a tier (case and spaces aside), else the first tier
        whose pattern is found in the campaign name, else the default."""
        for name in self.tier_params:
            value = t.params.get(name)
            if value is not None and value.strip().lower() in self.windows:
                return value.strip().lower()
        for tier, patterns in self.tier_patterns.items():
            if t.campaign and any(re.search(p, t.campaign, re.IGNORECASE) for p in patterns):
                return tier
        return self.default_tier


def largest_remainders(total: int, weights: Sequence[Fraction]) -> list[int]:
    """``total`` split by ``weights``: each share rounded down, the units left over to the
    largest remainders, ties to the later one. A negative total (a refund) is shared as its
    positive mirror, so that it takes back exactly what the same positive value gave."""
    if total < 0:
        return [-share for share in largest_remainders(-total, weights)]
    whole = sum(weights)
    if not weights:
        return []
    if whole == 0:
        weights, whole = [Fraction(1)] * len(weights), Fraction(len(weights))
    exact = [total * w / whole for w in weights]
    shares = [floor(x) for x in exact]
    left = total - sum(shares)
    ranked = sorted(range(len(exact)), key=lambda i: (exact[i] - shares[i], i), reverse=True)
    for i in ranked[:left]:
        shares[i] += 1
    return shares


def eligible(
    touches: Sequence[RefTouch], conv_at: datetime, s: Settings, accepted: frozenset[str]
) -> list[RefTouch]:
    out = [
        t
        for t in touches
        if t.at <= conv_at
        and conv_at - t.at <= s.windows[s.tier(t)] * DAY
        and (t.verdict or "allow") in accepted
        and t.channel != "Internal"
    ]
    return sorted(out, key=lambda t: (t.at, t.order))


def weights(
    model: str, path: Sequence[RefTouch], conv_at: datetime, s: Settings, dd: dict[str, Fraction]
) -> list[Fraction]:
    n = len(path)
    one = [Fraction(0)] * n
    if model == "first_touch":
        one[0] = Fraction(1)
    elif model == "last_touch":
        one[-1] = Fraction(1)
    elif model == "last_non_direct":
        rest = [i for i, t in enumerate(path) if t.channel != "Direct"]
        one[rest[-1] if rest else -1] = Fraction(1)
    elif model == "linear":
        one = [Fraction(1)] * n
    elif model == "position_based":
        first, last = Fraction(s.position_first), Fraction(s.position_last)
        if n == 1:
            one = [Fraction(1)]
        elif n == 2:
            one = [first, last] if first + last else [Fraction(1), Fraction(1)]
        else:
            middle = (1 - first - last) / (n - 2)
            one = [first, *([middle] * (n - 2)), last]
    elif model == "time_decay":
        # Shares are proportional to the weights: counted from the latest touch (weight 1), no
        # weight underflows to 0 unless it is nothing beside the latest's.
        latest = max(t.at for t in path)
        one = [Fraction(2 ** (-((latest - t.at) / DAY) / s.half_life_days)) for t in path]
    elif model == "weighted_last_touch":
        if n == 1:
            one = [Fraction(1)]
        else:
            last = Fraction(s.last_touch_share)
            one = [(1 - last) / (n - 1)] * (n - 1) + [last]
    elif model == "data_driven":
        count: dict[str, int] = defaultdict(int)
        for t in path:
            count[t.channel] += 1
        one = [dd.get(t.channel, Fraction(0)) / count[t.channel] for t in path]
    else:
        raise ValueError(model)
    return one


def conversion_probability(journeys: Sequence[tuple[Sequence[str], bool]], removed: str | None) -> Fraction:
    """The chance of reaching conversion from the start, in the first-order chain of
    ``journeys`` (each start → its channels → conversion or null), with ``removed``'s
    incoming transitions sent to null."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for path, converted in journeys:
        states = ["(start)", *path, "(conversion)" if converted else "(null)"]
        for a, b in pairwise(states):
            counts[a][b] += 1
    states = sorted(counts)
    # p[s] = sum_t P(s→t) p[t]; p[conversion] = 1, p[null] = p[removed] = 0: Gauss-Jordan in fractions.
    index = {st: i for i, st in enumerate(states)}
    n = len(states)
    rows = []
    for st in states:
        row = [Fraction(0)] * (n + 1)
        row[index[st]] = Fraction(1)
        if st != removed:
            total = sum(counts[st].values())
            for t, c in counts[st].items():
                p = Fraction(c, total)
                if t == "(conversion)":
                    row[n] += p
                elif t == "(null)" or t == removed:
                    continue
                else:
                    row[index[t]] -= p
        rows.append(row)
    for col in range(n):
        pivot = next(r for r in range(col, n) if rows[r][col] != 0)
        rows[col], rows[pivot] = rows[pivot], rows[col]
        rows[col] = [x / rows[col][col] for x in rows[col]]
        for r in range(n):
            if r != col and rows[r][col] != 0:
                f = rows[r][col]
                rows[r] = [a - f * b for a, b in zip(rows[r], rows[col], strict=True)]
    return rows[index["(start)"]][n]


def markov_weights(journeys: Sequence[tuple[Sequence[str], bool]]) -> dict[str, Fraction]:
    """Each channel's removal effect, normalised to sum to 1."""
    if not any(converted for _, converted in journeys):
        return {}
    base = conversion_probability(journeys, None)
    channels = sorted({c for path, _ in journeys for c in path})
    effects = {c: (base - conversion_probability(journeys, c)) / base for c in channels}
    total = sum(effects.values())
    return {c: e / total for c, e in effects.items()} if total else {}


@dataclass
class Store:
    touches: list[RefTouch]
    conversions: list[RefConversion]
    bindings: list[tuple[str, str]]
    """(visitor, user), in the order they were bound."""

    def devices(self, conv: RefConversion) -> set[str]:
        users = {u for v, u in self.bindings if v == conv.visitor}
        if conv.user:
            users.add(conv.user)
        visitors = {v for v, u in self.bindings if u in users}
        return visitors | ({conv.visitor} if conv.visitor else set())

    def person(self, visitor: str) -> str:
        """The user of the visitor's first binding, else the visitor."""
        return next((u for v, u in self.bindings if v == visitor), "visitor:" + visitor)


def report(
    store: Store,
    s: Settings,
    since: datetime,
    until: datetime,
    group_by: str = "channel",
    accepted: frozenset[str] | None = None,
    by_day: bool = False,
    conversion: str | None = None,
) -> dict[tuple[str | None, str | None, str | None], dict[str, tuple[int, int]]]:
    """(day or None, group, currency) → model → (value in minor units, micro-conversions)."""
    accepted = s.verdicts if accepted is None else accepted
    convs = [c for c in store.conversions if since <= c.at < until and conversion in (None, c.name)]
    paths = [
        eligible([t for t in store.touches if t.visitor in store.devices(c)], c.at, s, accepted)
        for c in convs
    ]
    # data_driven: every conversion's path converted; the period's other accepted touches,
    # per person in time order, are the journeys that did not (those of another conversion
    # than the one asked for among them).
    used = {id(t) for p in paths for t in p}
    others: dict[str, list[RefTouch]] = defaultdict(list)
    for t in store.touches:
        if (
            since <= t.at < until
            and id(t) not in used
            and (t.verdict or "allow") in accepted
            and t.channel != "Internal"
        ):
            others[store.person(t.visitor)].append(t)
    journeys: list[tuple[Sequence[str], bool]] = [([t.channel for t in p], True) for p in paths]
    journeys += [
        ([t.channel for t in sorted(p, key=lambda t: (t.at, t.order))], False) for p in others.values()
    ]
    dd = markov_weights(journeys)
    zone = ZoneInfo(s.timezone)
    out: dict[tuple[str | None, str | None, str | None], dict[str, list[int]]] = defaultdict(
        lambda: {m: [0, 0] for m in MODELS}
    )
    for c, path in zip(convs, paths, strict=True):
        day = c.at.astimezone(zone).date().isoformat() if by_day else None
        for model in MODELS:
            if not path:
                group = "Direct" if group_by == "channel" else None
                out[day, group, c.currency][model][0] += c.minor
                out[day, group, c.currency][model][1] += MILLION
                continue
            w = weights(model, path, c.at, s, dd)
            for slot, total in enumerate((c.minor, MILLION)):
                split = largest_remainders(total, w)
                for t, share in zip(path, split, strict=True):
                    out[day, getattr(t, group_by), c.currency][model][slot] += share
    rows = {
        key: {m: (v, n) for m, (v, n) in sums.items()}
        for key, sums in out.items()
        if any(v or n for v, n in sums.values())
    }
    if by_day:
        # README "Reports": the time series has a row on every local day of the period for
        # each group and currency with a row on any of them, zero where nothing was credited.
        # The period's days: every local date holding an instant of since..until (no local
        # day is shorter than an hour, so sampling each hour from since, and the last instant
        # before until, meets them all).
        days = {(until - timedelta(microseconds=1)).astimezone(zone).date().isoformat()}
        moment = since
        while moment < until:
            days.add(moment.astimezone(zone).date().isoformat())
            moment += timedelta(hours=1)
        for _, group, currency in list(rows):
            for day in days:
                rows.setdefault((day, group, currency), dict.fromkeys(MODELS, (0, 0)))
    return rows
