"""Attribution over the local store: credits per group, per day, path lengths, creator credits.

Reads conversions, identities and touchpoints (never writes), on its own connection. SQL
does the joins in one indexed, streamed query — each conversion of the period to every
visitor (device) of its user, through ``identities``, and to those visitors' touchpoints
inside the widest lookback window — and ``gateway/attribution.py`` does the rest:
eligibility, the models, exact money. Values are kept per currency, in minor units;
credited conversions are counted in millionths, so they add up to whole conversions.

Which touchpoint columns exist is learned once, at ``open``: a ``verdict`` column (bot
scoring) is used when present, and an ``effective_touchpoints`` view (verdicts with the
analysts' overrides applied) is preferred to the table when it exists.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiosqlite
import msgspec

from gateway.attribution import MODELS, Attribution, Params, Touch, distribute, markov_weights, to_minor
from gateway.channels import DIRECT, INTERNAL, Channels, Signals
from gateway.events import iso
from gateway.ids import id_floor
from storage.local import connect

MICRO = 1_000_000
"""One conversion, in the units credited conversions are shared in."""
FETCH = 5000
"""Rows per round trip to the database thread (aiosqlite's default is 64)."""
GROUPS = ("channel", "source", "medium", "campaign", "creator_id")
_decode = msgspec.json.Decoder(dict[str, str])
_COLUMNS = (
    "t.id, t.ts, t.channel, t.raw_params, {verdict}, t.source, t.medium, t.campaign, "
    "t.click_id_kind, t.creator_id, t.referrer_host"
)

# The devices of each conversion of the period: its own visitor, and every visitor bound to
# its user (the user it was recorded for, or the one its visitor is bound to). Conversion
# ids are UUIDv7 minted from their time, so the period is a primary-key range.
_DEVICES = """
WITH conv AS (
    SELECT id, visitor_key, user_key FROM conversions
    WHERE id >= :since_id AND id < :until_id AND ts >= :since AND ts < :until {name}
),
users AS (
    SELECT id, user_key FROM conv WHERE user_key IS NOT NULL
    UNION
    SELECT conv.id, i.user_key FROM conv JOIN identities i ON i.visitor_key = conv.visitor_key
),
devices AS (
    SELECT id, visitor_key FROM conv WHERE visitor_key IS NOT NULL
    UNION
    SELECT users.id, i.visitor_key FROM users JOIN identities i ON i.user_key = users.user_key
)
"""


@dataclass(frozen=True, slots=True)
class Row(Touch):
    """A stored touchpoint as the reports see it: the model's ``Touch`` plus what rows group by."""

    source: str | None = None
    medium: str | None = None
    campaign: str | None = None
    creator_id: str | None = None


@dataclass(slots=True)
class Conv:
    """A conversion of the period and every candidate touch of its devices (not yet filtered)."""

    id: str
    at: datetime
    minor: int
    currency: str | None
    touches: list[Row] = field(default_factory=list)


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


def _ms(moment: datetime) -> int:
    return min(max(int(moment.timestamp() * 1000), 0), 2**48 - 1)


def _bounds(since: datetime, until: datetime, start: datetime) -> dict[str, str]:
    return {
        "since": iso(since),
        "until": iso(until),
        "from": iso(start),
        "since_id": id_floor(_ms(since)),
        "until_id": id_floor(_ms(until) + 1),
        "from_id": id_floor(_ms(start)),
    }


class _Rows:
    """Stored touchpoint rows → ``Row``, classifying rows recorded before channels existed."""

    def __init__(self, attribution: Attribution, channels: Channels) -> None:
        self.tiers, self.channels = attribution.tiers, channels
        names = attribution.tiers.params
        self.names_tier = re.compile("|".join(map(re.escape, names))).search if names else None
        self.by_campaign: dict[str | None, str] = {}

    def tier(self, campaign: str | None, raw: str) -> str:
        # Most rows name no tier parameter: skip decoding their JSON.
        if self.names_tier is not None and self.names_tier(raw):
            return self.tiers.tier_of(campaign, _decode.decode(raw))
        tier = self.by_campaign.get(campaign)
        if tier is None:
            tier = self.by_campaign[campaign] = self.tiers.tier_of(campaign)
        return tier

    def row(self, r: Sequence[Any]) -> Row:
        # r: id, ts, channel, raw_params, verdict, source, medium, campaign, click_id_kind,
        # creator_id, referrer_host
        channel = r[2]
        if channel is None:
            channel = self.channels.classify(Signals(r[5], r[6], r[7], r[8], r[9], r[10]))
        return Row(
            r[0], datetime.fromisoformat(r[1]), channel, self.tier(r[7], r[3]), r[4], r[5], r[6], r[7], r[9]
        )


class Reports:
    """Reports over one store file; ``open`` once, then ask as often as needed."""

    def __init__(self, path: Path, attribution: Attribution, channels: Channels) -> None:
        self.path, self.attribution, self.channels = path, attribution, channels
        self._db: aiosqlite.Connection | None = None
        self.source = "touchpoints"
        self.verdict = "NULL"

    async def open(self) -> None:
        self._db = await connect(self.path)
        await self.detect()

    async def detect(self) -> None:
        """Learn the schema: the verdict column and the effective_touchpoints view, if any."""
        async with self.db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'view' AND name = 'effective_touchpoints'"
        ) as cursor:
            self.source = "effective_touchpoints" if await cursor.fetchone() else "touchpoints"
        async with self.db.execute(f"PRAGMA table_info({self.source})") as cursor:
            columns = {row[1] for row in await cursor.fetchall()}
        self.verdict = "t.verdict" if "verdict" in columns else "NULL"

    @classmethod
    async def on(cls, db: aiosqlite.Connection, attribution: Attribution, channels: Channels) -> Reports:
        """Reports over an open connection (the caller closes it)."""
        reports = cls(Path(), attribution, channels)
        reports._db = db
        await reports.detect()
        return reports

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        assert self._db is not None, "Reports.open() was not awaited"
        return self._db

    async def _stream(self, sql: str, args: dict[str, str]) -> Any:
        async with self.db.execute(sql, args) as cursor:
            while rows := await cursor.fetchmany(FETCH):
                for row in rows:
                    yield row

    async def load(self, since: datetime, until: datetime, conversion: str | None = None) -> list[Conv]:
        """Conversions with ``since <= ts < until`` (of one name, if given), each with the
        touchpoints of all its devices from the widest lookback window before ``since`` on."""
        widest = max(self.attribution.tiers.windows.values())
        args = _bounds(since, until, since - widest)
        name = ""
        if conversion is not None:
            name, args["name"] = "AND name = :name", conversion
        convs: dict[str, Conv] = {}
        sql = "SELECT id, ts, value, currency FROM conversions WHERE id >= :since_id AND id < :until_id "
        async for cid, ts, amount, currency in self._stream(
            sql + f"AND ts >= :since AND ts < :until {name}", args
        ):
            convs[cid] = Conv(cid, datetime.fromisoformat(ts), to_minor(amount, currency), currency)
        rows = _Rows(self.attribution, self.channels)
        sql = (
            _DEVICES.format(name=name)
            + "SELECT d.id, "
            + _COLUMNS.format(verdict=self.verdict)
            + f" FROM devices d JOIN {self.source} t ON t.visitor_key = d.visitor_key"
            + " WHERE t.id >= :from_id AND t.id < :until_id AND t.ts >= :from AND t.ts < :until"
        )
        async for row in self._stream(sql, args):
            convs[row[0]].touches.append(rows.row(row[1:]))
        return sorted(convs.values(), key=lambda c: (c.at, c.id))

    async def params_for(
        self,
        models: Iterable[str],
        convs: Sequence[Conv],
        since: datetime,
        until: datetime,
        accepted: frozenset[str],
    ) -> Params:
        """The models' parameters; for ``data_driven``, Markov weights learnt from the period's
        journeys: the conversions' and those of everyone else who left touchpoints in it."""
        params = self.attribution.params
        if "data_driven" not in models:
            return params
        paths = [self.attribution.eligible(c.touches, c.at, accepted) for c in convs]
        journeys = [([t.channel for t in path], True) for path in paths]
        converted = {t.id for path in paths for t in path}
        journeys += await self._other_journeys(since, until, accepted, converted)
        return replace(params, channel_weights=markov_weights(journeys))

    async def _other_journeys(
        self, since: datetime, until: datetime, accepted: frozenset[str], converted: set[str]
    ) -> list[tuple[list[str], bool]]:
        """Paths of the period's touchpoints that no conversion used, one per person (a user,
        or an unbound visitor): the journeys that did not convert."""
        rows = _Rows(self.attribution, self.channels)
        # Each visitor's person: the user of its earliest binding (SQLite takes the bare
        # user_key from the row holding min(id)), else the visitor itself.
        sql = (
            "SELECT coalesce(b.user_key, t.visitor_key), "
            + _COLUMNS.format(verdict=self.verdict)
            + f" FROM {self.source} t LEFT JOIN (SELECT visitor_key, user_key, min(id) FROM identities"
            " GROUP BY visitor_key) b ON b.visitor_key = t.visitor_key"
            " WHERE t.id >= :since_id AND t.id < :until_id AND t.ts >= :since AND t.ts < :until"
        )
        paths: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
        async for row in self._stream(sql, _bounds(since, until, since)):
            if row[1] in converted or (row[5] or "allow") not in accepted:
                continue
            channel = row[3] if row[3] is not None else rows.row(row[1:]).channel
            if channel != INTERNAL:
                paths[row[0]].append((row[2], row[1], channel))
        return [([c for _, _, c in sorted(p)], False) for p in paths.values()]

    async def creator_clicks(
        self, since: datetime, until: datetime, accepted: frozenset[str]
    ) -> dict[tuple[str, bool], int]:
        """Touchpoints with a creator ID in the period: (creator_id, quarantined) → count."""
        sql = (
            f"SELECT t.creator_id, {self.verdict}, count(*) FROM {self.source} t"
            " WHERE t.id >= :since_id AND t.id < :until_id AND t.ts >= :since AND t.ts < :until"
            " AND t.creator_id IS NOT NULL GROUP BY 1, 2"
        )
        clicks: dict[tuple[str, bool], int] = defaultdict(int)
        async for creator, verdict, n in self._stream(sql, _bounds(since, until, since)):
            clicks[creator, (verdict or "allow") not in accepted] += n
        return dict(clicks)

    async def credit(
        self,
        since: datetime,
        until: datetime,
        models: Sequence[str],
        group_by: str = "channel",
        *,
        conversion: str | None = None,
        verdicts: Iterable[str] | None = None,
        by_day: bool = False,
        convs: Sequence[Conv] | None = None,
    ) -> Table:
        """Every model's credits of the period's conversions per (day, group, currency)."""
        accepted = self.attribution.verdicts if verdicts is None else frozenset(verdicts)
        if convs is None:
            convs = await self.load(since, until, conversion)
        params = await self.params_for(models, convs, since, until, accepted)
        return credit_table(self.attribution, convs, models, group_by, accepted, params, by_day=by_day)


_POSITIONAL = frozenset({"first_touch", "last_touch", "linear", "position_based", "weighted_last_touch"})
"""Models whose weights depend only on the number of touches: their shares are cached."""


class _Shares:
    """Integer shares of one conversion; caches what depends only on (model, touches, total)."""

    def __init__(self, params: Params) -> None:
        self.params = params
        self.weights: dict[tuple[str, int], list[Fraction]] = {}
        self.cache: dict[tuple[str, int, int], list[int]] = {}

    def __call__(
        self, model: str, path: Sequence[Touch], at: datetime, totals: Sequence[int]
    ) -> list[list[int]]:
        n = len(path)
        if model not in _POSITIONAL:
            computed = MODELS[model](path, at, self.params)
            return [distribute(total, computed) for total in totals]
        out = []
        for total in totals:
            shares = self.cache.get((model, n, total))
            if shares is None:
                if (model, n) not in self.weights:
                    self.weights[model, n] = MODELS[model](path, at, self.params)
                shares = distribute(total, self.weights[model, n])
                if len(self.cache) < 100_000:
                    self.cache[model, n, total] = shares
            out.append(shares)
        return out


def credit_table(
    attribution: Attribution,
    convs: Iterable[Conv],
    models: Sequence[str],
    group_by: str,
    accepted: frozenset[str],
    params: Params,
    *,
    by_day: bool = False,
) -> Table:
    """Pure: each conversion's eligible touches credited under every model, summed per row."""
    if group_by not in GROUPS:
        raise ValueError(f"cannot group by {group_by!r}")
    shares = _Shares(params)
    table: Table = defaultdict(lambda: {m: [0, 0] for m in models})
    no_touch = DIRECT if group_by == "channel" else None
    for conv in convs:
        day = conv.at.date().isoformat() if by_day else None
        path = attribution.eligible(conv.touches, conv.at, accepted)
        if not path:
            cell = table[day, no_touch, conv.currency]
            for m in models:
                cell[m][0] += conv.minor
                cell[m][1] += MICRO
            continue
        groups = [getattr(t, group_by) for t in path]
        for m in models:
            values, counts = shares(m, path, conv.at, (conv.minor, MICRO))
            for group, value, count in zip(groups, values, counts, strict=True):
                if value or count:
                    sums = table[day, group, conv.currency][m]
                    sums[0] += value
                    sums[1] += count
    return dict(table)


def quarantined_credit(
    attribution: Attribution,
    convs: Iterable[Conv],
    model: str,
    accepted: frozenset[str],
    params: Params,
) -> dict[tuple[str, str | None], list[int]]:
    """What touches with a creator ID and an unaccepted verdict would have earned had every
    verdict counted: (creator_id, currency) → [value in minor units, millionths]."""
    convs = list(convs)
    every = accepted | {t.verdict for c in convs for t in c.touches if t.verdict is not None}
    shares = _Shares(params)
    out: dict[tuple[str, str | None], list[int]] = defaultdict(lambda: [0, 0])
    for conv in convs:
        if not any(t.creator_id and (t.verdict or "allow") not in accepted for t in conv.touches):
            continue
        path = attribution.eligible(conv.touches, conv.at, every)
        if not path:
            continue
        values, counts = shares(model, path, conv.at, (conv.minor, MICRO))
        for touch, value, n in zip(path, values, counts, strict=True):
            creator = getattr(touch, "creator_id", None)
            if creator and (touch.verdict or "allow") not in accepted and (value or n):
                out[creator, conv.currency][0] += value
                out[creator, conv.currency][1] += n
    return dict(out)


async def credits_by_channel(
    db: aiosqlite.Connection,
    attribution: Attribution,
    channels: Channels,
    model: str,
    since: datetime,
    until: datetime,
    *,
    verdicts: Iterable[str] | None = None,
) -> list[ChannelCredit]:
    """Credits of every conversion with ``since <= ts < until`` under ``model``, per channel
    and currency, largest value first; channels credited nothing are left out."""
    reports = await Reports.on(db, attribution, channels)
    table = await reports.credit(since, until, [model], verdicts=verdicts)
    report = [
        ChannelCredit(str(group), currency, sums[model][0], sums[model][1])
        for (_, group, currency), sums in table.items()
        if any(sums[model])
    ]
    report.sort(key=lambda r: (-r.value, -r.conversions, r.channel, r.currency or ""))
    return report
