"""Attribution over the local store: one model's credits per channel for a period.

Reads conversions, identities and touchpoints (never writes). SQL does the joins — each
conversion to every visitor (device) of its user, through ``identities``, and to those
visitors' touchpoints inside the widest lookback window — and ``gateway/attribution.py``
does the rest: eligibility, the model, exact money. Values are kept per currency, in minor
units; credited conversions are counted in millionths, so they add up to whole conversions.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import aiosqlite
import msgspec

from gateway.attribution import Attribution, Touch, credits, markov_weights, to_minor
from gateway.channels import INTERNAL, Channels, Signals
from gateway.events import iso

MICRO = 1_000_000
"""One conversion, in the units credited conversions are shared in."""
_decode = msgspec.json.Decoder(dict[str, str])
_SIGNALS = "t.source, t.medium, t.campaign, t.click_id_kind, t.creator_id, t.referrer_host"

# The devices of each conversion of the period: its own visitor, and every visitor bound to
# its user (the user it was recorded for, or the one its visitor is bound to).
_DEVICES = """
WITH conv AS (SELECT id, visitor_key, user_key FROM conversions WHERE ts >= :since AND ts < :until),
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
class ChannelCredit:
    channel: str
    currency: str | None
    value: int
    """Credited value in minor units of ``currency``."""
    conversions: int
    """Credited conversions in millionths (``MICRO`` is one whole conversion)."""


async def _columns(db: aiosqlite.Connection) -> set[str]:
    async with db.execute("PRAGMA table_info(touchpoints)") as cursor:
        return {row[1] for row in await cursor.fetchall()}


class _Rows:
    """Stored touchpoint rows → ``Touch``, classifying rows recorded before channels existed."""

    def __init__(self, attribution: Attribution, channels: Channels) -> None:
        self.attribution, self.channels = attribution, channels

    def touch(self, row: Sequence[object]) -> Touch:
        # row: id, ts, channel, raw_params, verdict, then the six signal columns
        tp_id, ts, channel, raw, verdict = (str(row[0]), str(row[1]), row[2], str(row[3]), row[4])
        signals = Signals(*(str(v) if v is not None else None for v in row[5:11]))
        return Touch(
            tp_id,
            datetime.fromisoformat(ts.replace("Z", "+00:00")),
            str(channel) if channel is not None else self.channels.classify(signals),
            self.attribution.tiers.tier_of(signals.campaign, _decode.decode(raw)),
            str(verdict) if verdict is not None else None,
        )


async def credits_by_channel(
    db: aiosqlite.Connection,
    attribution: Attribution,
    channels: Channels,
    model: str,
    since: datetime,
    until: datetime,
    *,
    verdicts: Iterable[str] | None = None,
    population: str | None = None,
) -> list[ChannelCredit]:
    """Credits of every conversion with ``since <= ts < until`` under ``model``, per channel
    and currency, largest value first; channels credited nothing are left out. ``data_driven``
    learns its weights from the period's journeys: the conversions' and those of everyone
    else who left touchpoints in it. ``population`` (``Touchpoint.consent``: cookie,
    cookieless, no_consent) credits only that population's touchpoints, and leaves out the
    conversions that have none of them."""
    accepted = attribution.verdicts if verdicts is None else frozenset(verdicts)
    verdict = "t.verdict" if "verdict" in await _columns(db) else "NULL"
    widest = max(attribution.tiers.windows.values())
    bounds = {"since": iso(since), "until": iso(until), "from": iso(since - widest), "population": population}
    only = " AND t.consent = :population" if population is not None else ""
    rows = _Rows(attribution, channels)

    conversions: dict[str, tuple[datetime, int, str | None]] = {}
    async with db.execute(
        "SELECT id, ts, value, currency FROM conversions WHERE ts >= :since AND ts < :until", bounds
    ) as cursor:
        async for cid, ts, amount, currency in cursor:
            at = datetime.fromisoformat(ts.replace("Z", "+00:00"))
            conversions[cid] = (at, to_minor(amount, currency), currency)

    touches: dict[str, list[Touch]] = defaultdict(list)
    sql = (
        _DEVICES
        + f"SELECT d.id, t.id, t.ts, t.channel, t.raw_params, {verdict}, {_SIGNALS} "
        + "FROM devices d JOIN touchpoints t ON t.visitor_key = d.visitor_key "
        + "WHERE t.ts >= :from AND t.ts < :until"
        + only
    )
    async with db.execute(sql, bounds) as cursor:
        async for row in cursor:
            touches[row[0]].append(rows.touch(row[1:]))
    if population is not None:
        conversions = {cid: c for cid, c in conversions.items() if touches.get(cid)}

    eligible = {
        cid: attribution.eligible(touches[cid], at, accepted) for cid, (at, _, _) in conversions.items()
    }
    params = attribution.params
    if model == "data_driven":
        journeys = [([t.channel for t in path], True) for path in eligible.values()]
        converted = {t.id for path in eligible.values() for t in path}
        journeys += await _other_journeys(db, rows, bounds, verdict, accepted, converted, only)
        params = replace(params, channel_weights=markov_weights(journeys))

    value: dict[tuple[str, str | None], int] = defaultdict(int)
    count: dict[tuple[str, str | None], int] = defaultdict(int)
    for cid, (at, minor, currency) in conversions.items():
        path = eligible[cid]
        for credit in credits(model, path, at, minor, params):
            value[(credit.channel, currency)] += credit.amount
        for credit in credits(model, path, at, MICRO, params):
            count[(credit.channel, currency)] += credit.amount
    report = [
        ChannelCredit(ch, cur, value[ch, cur], n) for (ch, cur), n in count.items() if n or value[ch, cur]
    ]
    report.sort(key=lambda r: (-r.value, -r.conversions, r.channel, r.currency or ""))
    return report


async def _other_journeys(
    db: aiosqlite.Connection,
    rows: _Rows,
    bounds: dict[str, str | None],
    verdict: str,
    accepted: frozenset[str],
    converted: set[str],
    only: str = "",
) -> list[tuple[list[str], bool]]:
    """Paths of the period's touchpoints that no conversion used, one per person (a user, or
    an unbound visitor): the journeys that did not convert."""
    sql = (
        "SELECT coalesce((SELECT i.user_key FROM identities i WHERE i.visitor_key = t.visitor_key "
        f"ORDER BY i.id LIMIT 1), t.visitor_key), t.id, t.ts, t.channel, t.raw_params, {verdict}, {_SIGNALS} "
        "FROM touchpoints t WHERE t.ts >= :since AND t.ts < :until" + only
    )
    paths: dict[str, list[Touch]] = defaultdict(list)
    async with db.execute(sql, bounds) as cursor:
        async for row in cursor:
            touch = rows.touch(row[1:])
            if (
                touch.id not in converted
                and touch.channel != INTERNAL
                and (touch.verdict or "allow") in accepted
            ):
                paths[str(row[0])].append(touch)
    return [([t.channel for t in sorted(p, key=lambda t: (t.ts, t.id))], False) for p in paths.values()]


POPULATIONS = ("cookie", "cookieless", "no_consent")
"""The values of ``touchpoints.consent`` (``addons/identity.py``)."""
AGGREGATE = "aggregate"
"""The population of ``daily_counts``: visitors who sent ``Sec-GPC`` (or ``DNT``)."""


async def population_counts(db: aiosqlite.Connection, since: datetime, until: datetime) -> dict[str, int]:
    """Landings per population in ``since <= ts < until``: touchpoints by ``consent``, and the
    ``aggregate`` daily counts of the days the period touches (they have no time of day)."""
    counts: dict[str, int] = {}
    sql = "SELECT consent, count(*) FROM touchpoints WHERE ts >= ? AND ts < ? GROUP BY consent"
    async with db.execute(sql, (iso(since), iso(until))) as cursor:
        async for consent, n in cursor:
            counts[str(consent)] = int(n)
    days = (since.date().isoformat(), until.date().isoformat())
    sql = "SELECT coalesce(sum(count), 0) FROM daily_counts WHERE day >= ? AND day <= ?"
    if until.time() == until.time().min:  # until is midnight: that day is not in the period
        sql = sql.replace("day <= ?", "day < ?")
    async with db.execute(sql, days) as cursor:
        row = await cursor.fetchone()
    if row and row[0]:
        counts[AGGREGATE] = int(row[0])
    return counts
