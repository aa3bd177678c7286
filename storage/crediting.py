"""Crediting candidate touches: which touches of a conversion are eligible, and every model's
integer shares of its value summed per report row. Pure (no database): ``Reports`` reads the
candidates (``storage/report_conversions.py``) and runs this, in the gateway process or in
its report workers.

Candidate touches stay plain tuples (``Cand``); eligibility compares the stored ISO 8601
timestamps as text (their order is time order) against per-conversion cut-offs, exactly as
``Attribution.eligible`` does with datetimes, once per conversion; models whose weights
depend only on the number of touches get their shares from a cache, ``data_driven`` its
own as integers over one common denominator (the model's own floats), ``time_decay`` from
its floats where they provably give the same shares (``float_shares``), else as
``data_driven``; grouped by channel, ``data_driven``'s shares are summed per channel without
a share per touch. A path of one touch is credited whole under every model at once (each
gives it everything). With every model at once (``model=all``: ``linear`` first of the
models that share), each touch's row is looked up once per conversion, the positional
models' shares go to the rows as one vector per position, summed at the end, and
``time_decay`` is credited in a second pass.
Credited conversions are counted in millionths (``MICRO``), so they add up to whole
conversions.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from fractions import Fraction
from operator import sub

from gateway.attribution import (
    MODELS,
    Attribution,
    Params,
    Touch,
    decay_weights,
    distribute,
    distribute_many,
    learnt_weight,
)
from gateway.channels import DIRECT, INTERNAL
from gateway.events import iso


def consume(iterator: Iterable[object]) -> None:
    """Runs ``iterator`` to its end (a ``map`` called for its effect), in C."""
    deque(iterator, maxlen=0)


MICRO = 1_000_000
"""One conversion, in the units credited conversions are shared in."""

Cand = tuple[str, str, str, str | None, str | None, str | None, str]
"""A candidate touch, as the database returns it: (ts, id, channel, verdict, campaign —
or ``\x00`` + tier when its parameters name one —, group value, visitor_key). Tuple order
is time order."""


@dataclass(slots=True)
class Conv:
    """A conversion of the period and every candidate touch of its devices (not yet filtered)."""

    id: str
    ts: str
    at: datetime
    minor: int
    currency: str | None
    touches: list[Cand] = field(default_factory=list)
    eligible: tuple[frozenset[str], list[Cand]] | None = None
    """The last eligibility answer (for which accepted verdicts): data_driven learns from the
    paths, then credits them; ``model=all`` and the reports ask once per conversion."""


@dataclass(frozen=True, slots=True)
class ChannelCredit:
    channel: str
    currency: str | None
    value: int
    """Credited value in minor units of ``currency``."""
    conversions: int
    """Credited conversions in millionths (``MICRO`` is one whole conversion)."""


Key = tuple[str | None, str | None, str | None]
"""A report row: (UTC day or None, group value or None, currency)."""
Table = dict[Key, dict[str, list[int]]]
"""Row key → model → [credited value in minor units, credited conversions in millionths]."""


def parse_ts(ts: str) -> datetime:
    """A stored timestamp (ISO 8601 text) as an aware datetime."""
    return datetime.fromisoformat(ts)


class TierOf(dict[str | None, str]):
    """campaign → tier, computed once per campaign; ``\x00`` + tier (a tier parameter) → tier."""

    def __init__(self, attribution: Attribution) -> None:
        super().__init__()
        self.tiers = attribution.tiers

    def __missing__(self, key: str | None) -> str:
        tier = key[1:] if key and key[0] == "\x00" else self.tiers.tier_of(key)
        self[key] = tier
        return tier


class Eligibility:
    """``Attribution.eligible`` over candidate tuples: same rules, text timestamps."""

    def __init__(self, attribution: Attribution) -> None:
        self.windows = attribution.tiers.windows
        self.tier_of = TierOf(attribution)
        # Whole-day windows (the usual case) move only the date of a canonical timestamp: the
        # cut-offs of a conversion are its time of day after a few dates kept per day.
        day = timedelta(days=1)
        whole = all(w % day == timedelta(0) for w in self.windows.values())
        self._days = {tier: w // day for tier, w in self.windows.items()} if whole else None
        self._dates: dict[str, dict[str, str]] = {}

    def cutoffs(self, conv: Conv) -> dict[str, str]:
        """Per tier, the oldest time (text) a touch of that tier may have to count for ``conv``."""
        ts = conv.ts
        if self._days is None or len(ts) != 27 or ts[10] != "T" or ts[26] != "Z":
            return {tier: iso(conv.at - window) for tier, window in self.windows.items()}
        dates = self._dates.get(ts[:10])
        if dates is None:
            today = date.fromisoformat(ts[:10])
            dates = {tier: (today - timedelta(days=n)).isoformat() for tier, n in self._days.items()}
            self._dates[ts[:10]] = dates
        rest = ts[10:]
        return {tier: cut + rest for tier, cut in dates.items()}

    def __call__(self, conv: Conv, accepted: frozenset[str]) -> list[Cand]:
        """Touches at or before the conversion, no older than their tier's window (the
        boundary counts), of an accepted verdict, not internal; in time order."""
        if not conv.touches:
            return []
        if conv.eligible is not None and conv.eligible[0] == accepted:
            return conv.eligible[1]
        at, tier_of = conv.ts, self.tier_of
        dates = self._dates.get(at[:10]) if len(at) == 27 and at[10] == "T" and at[26] == "Z" else None
        if dates is not None:  # the usual case, inline: ``cutoffs`` without its call and checks
            rest = at[10:]
            cutoffs = {tier: cut + rest for tier, cut in dates.items()}
        else:
            cutoffs = self.cutoffs(conv)
        kept = [
            c
            for c in conv.touches
            if c[0] <= at
            and c[2] != INTERNAL
            and (c[3] or "allow") in accepted
            and c[0] >= cutoffs[tier_of[c[4]]]
        ]
        kept.sort()
        conv.eligible = (accepted, kept)
        return kept


def touches(path: Sequence[Cand]) -> list[Touch]:
    """Candidates as the models' ``Touch`` (only the models that look at time or channel need them)."""
    return [Touch(c[1], parse_ts(c[0]), c[2], None, c[3]) for c in path]


def add_tables(tables: Iterable[Table]) -> Table:
    """The sums of several tables (one table: itself); the tables themselves are left as they are."""
    tables = list(tables)
    if len(tables) == 1:
        return tables[0]
    out: Table = {}
    for table in tables:
        for key, sums in table.items():
            mine = out.setdefault(key, {model: [0, 0] for model in sums})
            for model, (value, n) in sums.items():
                mine[model][0] += value
                mine[model][1] += n
    return out


_POSITIONAL = frozenset({"linear", "position_based", "weighted_last_touch"})
"""Models whose weights depend only on the number of touches: their shares are cached."""
_ONE_TOUCH = frozenset({"first_touch", "last_touch", "last_non_direct"})
"""Models that give one touch everything: no weights to share."""


_CACHE = 200_000
_CACHED_PATH = 6
"""``data_driven``'s shares are cached for paths of at most this many touches: the short ones
repeat (``Paid Search`` alone: 6 % of the conversions), the long ones rarely, and each entry
holds a list per total as long as the path."""


def exact_integers(weights: Sequence[float]) -> list[int]:
    """Floats as integers over one common denominator (``distribute_many``'s input): each is
    an exact binary fraction, so the largest denominator is a common one."""
    ratios = [w.as_integer_ratio() for w in weights]
    common = max(d for _, d in ratios)
    return [num * (common // den) for num, den in ratios]


_NEAR = 2.0**-49
"""How close (per unit shared) a quota may come to a whole number, or two remainders to each
other at the boundary of the units left over, before ``float_shares`` leaves it to integers."""


def float_shares(totals: Sequence[int], weights: Sequence[float]) -> list[list[int]] | None:
    """``distribute_many(totals, exact_integers(weights))`` worked out in floats, or None where
    the floats cannot tell (the caller then takes the integers): ``time_decay``'s weights as
    integers over their common denominator are numbers of 70 bits and more, slower to multiply
    and divide than floats. For weights from 0 to 1 that sum to at least 1 (``decay_weights``':
    the latest touch weighs 1.0).

    Why the answer is the same. Let u = 2^-53 (a float's relative rounding error), ``units``
    the total's size (< 2^50: an exact float), W the weights' exact sum and q = units * w / W a
    quota (q <= units). Worked out as q' = fl(w * fl(units / fsum(weights))), it has three
    roundings (``fsum`` rounds the sum once), each by a factor within 1 ± u, and a product
    below the smallest normal float is off by at most 2^-1075 instead: |q' - q| <= q * (3u +
    4u²) + 2^-1075 < E := 4u * units. The checks use near := 16u * units (``units * _NEAR``,
    exact), and each compares a worked-out difference, which is off by a factor within 1 ± u:
    passing it, the true difference exceeds near / (1 + u) > 3E.

    - q' - floor(q') > near and 1 - (q' - floor(q')) > near for every quota: q' is more than
      E from a whole number, so q has the same floor, and its remainder f = q - floor(q) is
      within E of f' = q' - floor(q') (computed exactly: a floor that is not 0 is at least
      q' / 2, Sterbenz's lemma). The floors, and the units left over, are exact.
    - The units left over (fewer than the quotas) go to the largest f'. The last f' taken
      (``cut``, in the f' sorted) exceeds the first left out by more than 2 * near: every
      true remainder taken is then larger than every one left out, so ``distribute_many``
      (the largest remainders) takes the same touches, ties or not; and the f' from ``cut``
      up are exactly those taken.

    Otherwise (a whole quota, a zero weight, two remainders that tie or nearly at that
    boundary, or a total past 2^50) the answer is None."""
    whole = math.fsum(weights)
    if whole < 1.0:
        return None
    n = len(weights)
    out = []
    for total in totals:
        units = -total if total < 0 else total
        if not units:
            out.append([0] * n)
            continue
        if units >= 2**50:
            return None
        near = units * _NEAR
        scale = units / whole
        quotas = [w * scale for w in weights]
        shares = list(map(int, quotas))
        remainders = list(map(sub, quotas, shares))
        ranked = sorted(remainders)
        if ranked[0] <= near or 1.0 - ranked[-1] <= near:
            return None
        left = units - sum(shares)
        if left:
            cut = ranked[n - left]
            if cut - ranked[n - left - 1] <= 2 * near:
                return None
            shares = [
                share + 1 if remainder >= cut else share
                for share, remainder in zip(shares, remainders, strict=True)
            ]
        out.append(shares if total >= 0 else [-share for share in shares])
    return out


class _Shares:
    """Integer shares of one conversion; caches what depends only on the number of touches
    and the total (positional models) or on the channels in order and the totals
    (``data_driven``: 53k distinct among 102k conversions on the benchmark store);
    ``time_decay``'s weights depend on every touch's age, and are worked out each time.
    ``data_driven`` summed per channel (``data_driven_by_channel``) is not cached: worked out
    per channel it costs little more than building the cache's key, and a cache made the
    benchmark store's report no faster."""

    def __init__(self, params: Params) -> None:
        self.params = params
        self.half_life = params.half_life
        self.weights: dict[tuple[object, ...], list[Fraction]] = {}
        self.cache: dict[tuple[object, ...], list[int]] = {}
        self.rows: dict[tuple[object, ...], list[list[int]]] = {}
        self.by_channels: dict[tuple[object, ...], list[list[int]]] = {}
        # data_driven: each channel's weight as the fraction it stands for (``learnt_weight``).
        self.ratios = {c: learnt_weight(w).as_integer_ratio() for c, w in params.channel_weights.items()}
        # Removal effects are never negative; were one, ``credit_table`` shares per touch.
        self.signed = any(num < 0 for num, _ in self.ratios.values())
        # data_driven by channel: the weights' numerators over their common denominator, once.
        common = math.lcm(*(den for _, den in self.ratios.values()))
        self.numerators = {c: num * (common // den) for c, (num, den) in self.ratios.items()}

    def time_decay(self, path: Sequence[Cand], totals: Sequence[int]) -> list[list[int]]:
        """``time_decay``'s shares of each total: ``distribute_many`` over its weights (the same
        floats, ``decay_weights``) as exact binary fractions, worked out in floats where that is
        provably the same (``float_shares``), else in integers; one touch takes everything."""
        if len(path) == 1:  # a quarter of the conversions: no weights to work out
            return [[total] for total in totals]
        parse = datetime.fromisoformat
        weights = decay_weights([parse(c[0]) for c in path], self.half_life)
        return float_shares(totals, weights) or distribute_many(totals, exact_integers(weights))

    def data_driven(self, path: Sequence[Cand]) -> list[int]:
        """``data_driven``'s weights (a channel's weight split evenly over its touches) as
        integers over one common denominator."""
        per_channel = Counter(c[2] for c in path)
        zero = (0, 1)
        parts = [(self.ratios.get(c[2], zero), per_channel[c[2]]) for c in path]
        common = math.lcm(*(den * k for (_, den), k in parts))
        return [num * (common // (den * k)) for (num, den), k in parts]

    def data_driven_by_channel(self, path: Sequence[Cand], totals: Sequence[int]) -> list[dict[str, int]]:
        """Per total, ``data_driven``'s shares summed per channel: exactly what
        ``distribute_many(totals, self.data_driven(path))`` adds up to per channel, worked out
        once per channel instead of once per touch (a report grouped by channel wants only
        the sums).

        Every touch of a channel has the same weight, hence the same quota and remainder: a
        channel takes its touches' floors times their number, and the units left over go to
        whole remainder levels, largest first. Only where the left-over units run out inside
        a level that several channels share do positions matter; there the later touches
        come first, as in ``distribute_many``. A negative weight (never learnt: removal
        effects are clamped at 0) sums right too, but a channel's shares could then cancel
        out where a touch's did not, so ``credit_table`` keeps the per-touch path's rows."""
        per_channel: dict[str, int] = {}  # a plain dict: cheaper than a Counter on short paths
        for c in path:
            channel = c[2]
            per_channel[channel] = per_channel.get(channel, 0) + 1
        if len(per_channel) == 1:  # one channel takes everything, however many its touches
            return [dict.fromkeys(per_channel, total) for total in totals]
        # A touch weighs its channel's numerator over its channel's touches: on a common
        # denominator, the numerator times (lcm of the counts) / count. ``data_driven``'s
        # integers are the same up to one positive factor, and the rounding depends only on the
        # weights' ratios.
        numerators = self.numerators
        common = math.lcm(*per_channel.values())
        scaled = [
            (channel, numerators.get(channel, 0) * (common // k), k) for channel, k in per_channel.items()
        ]
        whole = sum(weight * k for _, weight, k in scaled)
        if whole == 0:  # channels never seen: equal shares, as ``distribute_many`` falls back
            scaled, whole = [(channel, 1, k) for channel, _, k in scaled], len(path)
        out = []
        for total in totals:
            sign, units = (-1, -total) if total < 0 else (1, total)
            sums: dict[str, int] = {}
            quotas: list[tuple[int, str, int]] = []
            left = units
            for channel, weight, k in scaled:
                share, remainder = divmod(units * weight, whole)
                sums[channel] = share * k
                left -= share * k
                quotas.append((remainder, channel, k))
            if left:  # the largest remainders first; inline while no two channels tie
                quotas.sort(reverse=True)
                last = len(quotas) - 1
                for i, (remainder, channel, k) in enumerate(quotas):
                    if i < last and quotas[i + 1][0] == remainder:
                        self._leftover(path, sums, quotas[i:], left)
                        break
                    if left <= k:
                        sums[channel] += left
                        break
                    sums[channel] += k
                    left -= k
            out.append(sums if sign == 1 else {channel: -s for channel, s in sums.items()})
        return out

    @staticmethod
    def _leftover(
        path: Sequence[Cand], sums: dict[str, int], quotas: list[tuple[int, str, int]], left: int
    ) -> None:
        """Hands out ``left`` units to the touches with the largest remainders (ties to the
        later position), one each, as ``distribute_many`` does, into per-channel ``sums``;
        ``quotas``: (remainder, channel, number of touches) per channel, largest remainder
        first. Fewer units are left than touches with a remainder (their remainders add up to
        ``left`` wholes)."""
        i, n = 0, len(quotas)
        while left:
            remainder = quotas[i][0]
            j = i + 1
            while j < n and quotas[j][0] == remainder:
                j += 1
            level = quotas[i:j]
            touched = sum(k for _, _, k in level)
            if left >= touched:  # the whole level gets one unit per touch
                for _, channel, k in level:
                    sums[channel] += k
                left -= touched
                i = j
            elif len(level) == 1:  # one channel at the boundary: which of its touches, no matter
                sums[level[0][1]] += left
                return
            else:  # several: the later touches of the level first
                tied = {channel for _, channel, _ in level}
                for c in reversed(path):
                    if c[2] in tied:
                        sums[c[2]] += 1
                        left -= 1
                        if not left:
                            return

    @staticmethod
    def one_touch(model: str, path: Sequence[Cand]) -> int:
        """Which touch takes everything under a ``_ONE_TOUCH`` model."""
        if model == "first_touch":
            return 0
        n = len(path)
        if model == "last_non_direct":
            return next((i for i in range(n - 1, -1, -1) if path[i][2] != DIRECT), n - 1)
        return n - 1

    def __call__(
        self, model: str, path: Sequence[Cand], at: datetime, totals: Sequence[int]
    ) -> list[list[int]]:
        n = len(path)
        if model in _ONE_TOUCH:
            chosen = self.one_touch(model, path)
            return [[total if i == chosen else 0 for i in range(n)] for total in totals]
        if model == "data_driven":
            if n > _CACHED_PATH:  # long paths rarely repeat: never cached, never looked up
                return distribute_many(totals, self.data_driven(path))
            channels = (*totals, *(c[2] for c in path))
            found = self.by_channels.get(channels)
            if found is None:
                found = distribute_many(totals, self.data_driven(path))
                if len(self.by_channels) < _CACHE:
                    self.by_channels[channels] = found
            return found
        if model == "time_decay":
            return self.time_decay(path, totals)
        if model not in _POSITIONAL:
            computed = MODELS[model](touches(path), at, self.params)
            return [distribute(total, computed) for total in totals]
        found = self.rows.get((model, n, *totals))  # every total at once (a report's two)
        if found is not None:
            return found
        key: tuple[object, ...] = (model, n)
        out = []
        for total in totals:
            shares = self.cache.get((total, *key))
            if shares is None:
                weights = self.weights.get(key)
                if weights is None:
                    weights = MODELS[model](touches(path), at, self.params)
                    if len(self.weights) < _CACHE:
                        self.weights[key] = weights
                shares = distribute(total, weights)
                if len(self.cache) < _CACHE:
                    self.cache[(total, *key)] = shares
            out.append(shares)
        if len(self.rows) < _CACHE:
            self.rows[(model, n, *totals)] = out
        return out


class _Days(dict[str, str]):
    """A conversion's stored time (UTC text) → its date in ``zone``. Cached per minute: every
    time zone's offset is whole minutes, so one minute of UTC text is one local date."""

    def __init__(self, zone: tzinfo) -> None:
        super().__init__()
        self.zone = zone
        self.utc = zone is UTC

    def __call__(self, ts: str) -> str:
        if self.utc:
            return ts[:10]
        minute = ts[:16]
        day = self.get(minute)
        if day is None:
            moment = datetime.fromisoformat(minute).replace(tzinfo=UTC)
            day = self[minute] = moment.astimezone(self.zone).date().isoformat()
        return day


_FOLD = 10_000
"""Conversions whose positional vectors are appended before they are summed into the rows."""


class _Positional:
    """``model=all``'s models whose shares depend only on the number of touches and the totals
    (``_POSITIONAL``), every one of them at once: per (number of touches, totals), each
    position's shares of all of them as one flat vector (value, millionths, per model).
    ``credit_table`` appends each touch's vector to its row's list (in C) and sums the lists
    column by column at the end, instead of adding every model's two shares per touch."""

    def __init__(self, shares: _Shares, models: Sequence[str]) -> None:
        self.shares = shares
        self.models = list(models)
        self.by_size: dict[tuple[int, ...], list[tuple[int, ...]]] = {}

    def __call__(self, path: Sequence[Cand], at: datetime, totals: tuple[int, int]) -> list[tuple[int, ...]]:
        """Each position's vector."""
        key = (len(path), *totals)
        found = self.by_size.get(key)
        if found is not None:
            return found
        rows = [self.shares(m, path, at, totals) for m in self.models]
        found = [
            tuple(x for values, counts in rows for x in (values[i], counts[i])) for i in range(len(path))
        ]
        if len(self.by_size) < _CACHE:
            self.by_size[key] = found
        return found

    def add(self, part: dict[str | None, dict[str, list[int]]], pending: dict[str | None, list[int]]) -> None:
        """Sums each row's appended vectors into its models' sums, and forgets them (every
        ``_FOLD`` conversions, and at the end)."""
        width = 2 * len(self.models)
        for group, flat in pending.items():
            cell = part[group]
            for j, m in enumerate(self.models):
                sums = cell[m]
                sums[0] += sum(flat[2 * j :: width])
                sums[1] += sum(flat[2 * j + 1 :: width])
        pending.clear()


def credit_table(
    eligible: Eligibility,
    convs: Iterable[Conv],
    models: Sequence[str],
    group_by: str,
    accepted: frozenset[str],
    params: Params,
    days: tzinfo | None = None,
) -> Table:
    """Each conversion's eligible touches credited under every model, summed per row (the
    touches carry the ``group_by`` value they were loaded with); with ``days``, per day of the
    conversion in that time zone too."""
    shares = _Shares(params)
    day_of = _Days(days) if days is not None else None
    at_group = 2 if group_by == "channel" else 5  # loaded by channel, a touch's group is its channel
    # Summed per (day, currency), then per group: no key to build per touch.
    Part = dict[str | None, dict[str, list[int]]]
    parts: dict[tuple[str | None, str | None], tuple[Part, defaultdict[str | None, list[int]]]] = {}
    no_touch = DIRECT if group_by == "channel" else None
    one_touch = [m for m in models if m in _ONE_TOUCH]
    shared = [m for m in models if m not in _ONE_TOUCH]
    rows_first = len(shared) > 1 and shared[0] == "linear"
    # Where every touch's row is looked up once (``rows_first``), the positional models are
    # counted per row and vector (``_Positional``), the others added per touch.
    positional = _Positional(shares, [m for m in shared if m in _POSITIONAL]) if rows_first else None
    # There, too, ``time_decay`` is credited in a second pass over those conversions:
    # interleaved with the other models it cost a third more CPU on the benchmark store.
    later = rows_first and "time_decay" in shared
    rest = [m for m in shared if m not in _POSITIONAL and not (later and m == "time_decay")]
    decayed: list[tuple[list[dict[str, list[int]]], list[Cand], Conv]] = []
    appended = 0
    for conv in convs:
        day = day_of(conv.ts) if day_of is not None else None
        found = parts.get((day, conv.currency))
        if found is None:
            found = parts[day, conv.currency] = (
                defaultdict(lambda: {m: [0, 0] for m in models}),
                defaultdict(list),
            )
        part, pending = found
        path = eligible(conv, accepted)
        if len(path) < 2:  # no touch, or one that every model gives everything (a quarter)
            cell = part[path[0][at_group] if path else no_touch]
            for m in models:
                cell[m][0] += conv.minor
                cell[m][1] += MICRO
            continue
        for m in one_touch:  # the chosen touch's group takes the whole conversion
            sums = part[path[shares.one_touch(m, path)][at_group]][m]
            sums[0] += conv.minor
            sums[1] += MICRO
        totals_of = (conv.minor, MICRO)
        # Each touch's row once for every model (``model=all``). Only where ``linear`` runs first
        # of them: it credits every touch at least one millionth (MICRO // n), so it would
        # have made every row, in this order, anyway; adding a zero to a row changes nothing.
        cells = None
        if positional is not None and len(path) <= MICRO:
            groups = [touch[at_group] for touch in path]
            cells = list(map(part.__getitem__, groups))
            consume(map(list.extend, map(pending.__getitem__, groups), positional(path, conv.at, totals_of)))
            appended += 1
            if appended == _FOLD:  # a few MB of appended vectors at most
                for folded in parts.values():
                    positional.add(*folded)
                appended = 0
            if later:
                decayed.append((cells, path, conv))
        for m in rest if cells is not None else shared:
            if m == "data_driven" and at_group == 2 and not shares.signed:  # the sums, not each share
                values_of, counts_of = shares.data_driven_by_channel(path, totals_of)
                for channel, value in values_of.items():
                    n = counts_of[channel]
                    if value or n:  # shares all have their total's sign: a zero sum, zero shares
                        sums = part[channel][m]
                        sums[0] += value
                        sums[1] += n
                continue
            values, counts = shares(m, path, conv.at, totals_of)
            if cells is not None:
                for cell, value, n in zip(cells, values, counts, strict=True):
                    sums = cell[m]
                    sums[0] += value
                    sums[1] += n
                continue
            for touch, value, n in zip(path, values, counts, strict=True):
                if value or n:
                    sums = part[touch[at_group]][m]
                    sums[0] += value
                    sums[1] += n
    for cells, path, conv in decayed:
        values, counts = shares.time_decay(path, (conv.minor, MICRO))
        for cell, value, n in zip(cells, values, counts, strict=True):
            sums = cell["time_decay"]
            sums[0] += value
            sums[1] += n
    if positional is not None:
        for part, pending in parts.values():
            positional.add(part, pending)
    return {
        (day, group, currency): sums
        for (day, currency), (part, _) in parts.items()
        for group, sums in part.items()
    }


def quarantined_credit(
    eligible: Eligibility,
    convs: Iterable[Conv],
    model: str,
    accepted: frozenset[str],
    params: Params,
) -> dict[tuple[str, str | None], list[int]]:
    """What touches with a group value (loaded grouped by creator_id: a creator) and an
    unaccepted verdict would have earned had every verdict counted:
    (creator_id, currency) → [value in minor units, millionths]."""
    convs = list(convs)
    # Every verdict: those seen, and allow (read as None, like an unscored touch).
    every = accepted | {"allow"} | {t[3] for c in convs for t in c.touches if t[3] is not None}
    shares = _Shares(params)
    out: dict[tuple[str, str | None], list[int]] = defaultdict(lambda: [0, 0])
    for conv in convs:
        if not any(t[5] and (t[3] or "allow") not in accepted for t in conv.touches):
            continue
        path = eligible(conv, every)
        if not path:
            continue
        values, counts = shares(model, path, conv.at, (conv.minor, MICRO))
        for touch, value, n in zip(path, values, counts, strict=True):
            creator = touch[5]
            if creator and (touch[3] or "allow") not in accepted and (value or n):
                out[creator, conv.currency][0] += value
                out[creator, conv.currency][1] += n
    return dict(out)


def channel_credits(table: Table, model: str) -> dict[str | None, list[ChannelCredit]]:
    """A table grouped by channel as ``model``'s credits per day (None: not by day), largest
    value first; channels credited nothing are left out."""
    days: dict[str | None, list[ChannelCredit]] = defaultdict(list)
    for (day, group, currency), sums in table.items():
        if any(sums[model]):
            days[day].append(ChannelCredit(str(group), currency, sums[model][0], sums[model][1]))
    for report in days.values():
        report.sort(key=lambda r: (-r.value, -r.conversions, r.channel, r.currency or ""))
    return days
