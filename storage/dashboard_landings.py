"""The period's landings the dashboard counts (``storage/dashboard.py``), in one statement:
touchpoints per effective bot verdict and per population (the bot share and the populations),
the totals and the campaigns and creators of the top tables by the landings the reports
credit, and which landings those are (``Credited``). Reads touchpoints and verdict changes
through the caller's connection; never writes.

The statement reads the period's touchpoints once, into a materialized table of the columns
the counts need, and counts everything from it by stored verdict: until 2026-12-06 five scans
of the covering visitor index did (bot share, totals, each top table, populations), and three
of them looked every row up among the period's changed touchpoints, which cost more than the
scan itself (about 0.6 µs a row). The same statement reads the verdict changes that count
(``live_verdict_changes``: not a withdrawn override) of the period's touchpoints (and of the
lookback window's before it, by touchpoint id: the conversions touched apply those as the
reports do, ``Credited.earlier``) and every landing of the visitors with a change across the
credited verdicts' edge (a re-score from ``review`` to ``block`` moves nothing), and counts what
those move: landings to their effective verdict, and each such visitor into or out of the
distinct visitors of a name by whether any of its landings of that name is credited now. One
snapshot for all of it, and the same answer as counting by effective verdict row by row
(``tests/storage/test_dashboard_counts.py``).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import aiosqlite

COLUMNS = ("campaign", "creator_id")
"""The columns the top tables rank."""


@dataclass(frozen=True)
class Credited:
    """Which of the period's landings, and of the lookback window's before it, the reports
    credit: those whose effective bot verdict (an analyst's override not withdrawn, else the
    latest re-score, else as scored; unscored: ``allow``) is one of ``verdicts``
    (``attribution.verdicts``). ``changes``: the period's touchpoints whose verdict changed
    (few), each with its effective verdict, its stored one and its visitor; ``earlier``: the
    effective verdict of each touchpoint of the widest lookback window before the period whose
    verdict changed (by touchpoint id, as the reports read them), which the conversions touched
    count by it as the reports credit them."""

    verdicts: frozenset[str]
    changes: Mapping[str, tuple[str, str | None, str]] = field(default_factory=dict)
    earlier: Mapping[str, str] = field(default_factory=dict)

    @cached_property
    def changed(self) -> dict[str, str]:
        """The effective verdict of each touchpoint whose verdict changed."""
        return {**self.earlier, **{touchpoint: now for touchpoint, (now, _, _) in self.changes.items()}}

    def sql(self, more: bool = False) -> tuple[str, str, str, dict[str, str]]:
        """What a query of ``touchpoints t`` needs to tell a credited landing: a CTE to lead it
        (or nothing; ``more``: to follow other CTEs), a join to put after ``touchpoints t`` (or
        nothing), an SQL expression that is 1 for a credited landing and 0 for another, and
        their parameters. Without a changed verdict in the lookback window and the period (the
        usual), the stored verdict alone: no lookup per row."""
        params = self.params()
        listed = ", ".join(f":{name}" for name in params)
        if not self.changed:
            return "", "", f"(coalesce(t.verdict, 'allow') IN ({listed}))", params
        return (
            (", " if more else "WITH ")
            + "changed(id, verdict) AS MATERIALIZED (SELECT key, value FROM json_each(:changed)) ",
            " LEFT JOIN changed ON changed.id = t.id",
            f"(coalesce(changed.verdict, t.verdict, 'allow') IN ({listed}))",
            {**params, "changed": json.dumps(self.changed)},
        )

    def params(self) -> dict[str, str]:
        """The credited verdicts as SQL parameters, ``credited_0``…"""
        return {f"credited_{i}": verdict for i, verdict in enumerate(sorted(self.verdicts))}


@dataclass
class Landed:
    """Landings of a name (or of the whole period): those the reports credit, their distinct
    visitors, and the landings they leave out."""

    landed: int = 0
    visitors: int = 0
    excluded: int = 0


@dataclass
class Landings:
    """The period's landings: per effective bot verdict (``verdicts``; ``scored``: whether any
    was scored at all), per population (``by_consent``), which of them the reports credit
    (``credited``), the ``totals``, and per column of ``COLUMNS`` every name landed on (neither
    NULL nor empty)."""

    credited: Credited
    scored: bool = False
    verdicts: dict[str, int] = field(default_factory=dict)
    by_consent: dict[str, int] = field(default_factory=dict)
    totals: Landed = field(default_factory=Landed)
    names: dict[str, dict[str, Landed]] = field(default_factory=lambda: {column: {} for column in COLUMNS})

    def top(self, column: str, limit: int) -> list[tuple[str, Landed]]:
        """The ``limit`` names of ``column`` most landed on by credited landings, the name
        breaking ties in the order of its numbers (``name_order``)."""
        ranked = sorted(self.names[column].items(), key=lambda item: (-item[1].landed, name_order(item[0])))
        return ranked[:limit]


_NUMBERS = re.compile(r"([0-9]+)")


def name_order(name: str) -> tuple[list[int | str], str]:
    """A name's place among names, as the dashboard orders channels (an ``Intl.Collator`` with
    ``numeric``): its runs of digits by their number, ``Region 2`` before ``Region 10``, the
    text between them regardless of case, ``cr_B`` between ``cr_a`` and ``cr_c``; names alike
    so (``c-01``, ``c-1``) by their text. By code point (until 2026-12-07), ``Region 10`` came
    between ``Region 1`` and ``Region 2``, and the ten shown of twelve names landed on alike
    were cut from that order."""
    parts = _NUMBERS.split(name)  # text, digits, text…: the same kind at the same place
    return [int(part) if i % 2 else part.casefold() for i, part in enumerate(parts)], name


def _sums(kind: int, column: str | None) -> str:
    """SQL: the period's landings of each name of ``column`` (or of the whole period), counted
    by stored verdict, as rows of ``kind``."""
    sums = "sum(ok), count(DISTINCT CASE WHEN ok THEN visitor_key END), sum(NOT ok), NULL, NULL FROM period"
    if column is None:
        return f"SELECT {kind}, NULL, {sums}"
    return f"SELECT {kind}, {column}, {sums} WHERE {column} IS NOT NULL AND {column} != '' GROUP BY {column}"


def _moves(kind: int, column: str | None) -> str:
    """SQL: what the changed verdicts move, per name of ``column`` (or for the whole period),
    as rows of ``kind``: credited landings, distinct visitors (per visitor: whether any of its
    landings of the name is credited now, less whether any was as stored), landings left out."""
    name = column or "NULL"
    where = f" WHERE {column} IS NOT NULL AND {column} != ''" if column else ""
    by = f"{column}, visitor_key" if column else "visitor_key"
    return (
        f"SELECT {kind}, name, sum(landed), sum(visitors), sum(excluded), NULL, NULL FROM ("
        f"SELECT {name} AS name, sum(ok) - sum(was) AS landed, max(ok) - max(was) AS visitors,"
        f" sum(NOT ok) - sum(NOT was) AS excluded FROM moved{where} GROUP BY {by}) GROUP BY name"
    )


_KINDS = {3: "campaign", 4: "creator_id"}
"""The statement's kind of row for each column's counts (0: stored verdict and population,
1: a verdict change of the period, 2: the totals, 8: a verdict change of the lookback window
before the period); their moves are of the kind 3 more (5: the totals')."""


async def count_landings(
    db: aiosqlite.Connection, bounds: dict[str, str | None], verdicts: frozenset[str]
) -> Landings:
    """The period's landings (``bounds``' ``since`` and ``until``), those the reports credit
    being those of ``verdicts`` (``attribution.verdicts``); and the verdict changes of the
    lookback window before it (touchpoint ids ``from_id`` to ``since_id``), for the
    conversions touched."""
    params = Credited(verdicts).params()
    listed = ", ".join(f":{name}" for name in params)
    sql = (
        "WITH period AS MATERIALIZED (SELECT visitor_key, campaign, creator_id, verdict, consent,"
        f" (coalesce(verdict, 'allow') IN ({listed})) AS ok FROM touchpoints"
        " WHERE ts >= :since AND ts < :until),"
        # The period's verdict changes that count (a withdrawn override does not), each with its
        # touchpoint's effective verdict (``now``: the last in the order ``_effective`` applies them).
        " changes AS MATERIALIZED (SELECT c.touchpoint_id, c.verdict, t.verdict AS stored,"
        " c.origin = 'analyst' AS analyst, c.id, t.visitor_key, last_value(c.verdict) OVER ("
        "PARTITION BY c.touchpoint_id ORDER BY c.origin = 'analyst', c.id"
        " ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS now"
        " FROM live_verdict_changes c CROSS JOIN touchpoints t ON t.id = c.touchpoint_id"
        " WHERE t.ts >= :since AND t.ts < :until),"
        " effective AS MATERIALIZED (SELECT touchpoint_id AS id, max(now) AS now FROM changes GROUP BY 1),"
        # Every landing of the period of each visitor with a change across the credited edge:
        # credited as stored (``was``), and now (``ok``).
        " moved AS MATERIALIZED (SELECT t.visitor_key, t.campaign, t.creator_id,"
        f" (coalesce(t.verdict, 'allow') IN ({listed})) AS was,"
        f" (coalesce(effective.now, t.verdict, 'allow') IN ({listed})) AS ok"
        " FROM touchpoints t LEFT JOIN effective ON effective.id = t.id"
        " WHERE t.visitor_key IN (SELECT visitor_key FROM changes"
        f" WHERE (now IN ({listed})) != (coalesce(stored, 'allow') IN ({listed})))"
        " AND t.ts >= :since AND t.ts < :until)"
        " SELECT 0, verdict, consent, count(*), NULL, NULL, NULL FROM period GROUP BY verdict, consent"
        " UNION ALL SELECT 1, touchpoint_id, verdict, stored, analyst, id, visitor_key FROM changes"
        # The changes that count of the lookback window before the period, as the reports read
        # them: by their touchpoint's id (a range of the changes' index), no touchpoint read.
        " UNION ALL SELECT 8, touchpoint_id, verdict, NULL, origin = 'analyst', id, NULL"
        " FROM live_verdict_changes WHERE touchpoint_id >= :from_id AND touchpoint_id < :since_id"
        f" UNION ALL {_sums(2, None)} UNION ALL {_moves(5, None)}"
        + "".join(
            f" UNION ALL {_sums(kind, column)} UNION ALL {_moves(kind + 3, column)}"
            for kind, column in _KINDS.items()
        )
    )
    async with db.execute(sql, {**bounds, **params}) as cursor:
        rows = await cursor.fetchall()
    by_kind: dict[int, list[Any]] = defaultdict(list)
    for row in rows:
        by_kind[row[0]].append(row[1:])
    earlier = {touchpoint: now for touchpoint, (now, _, _) in _effective(by_kind[8]).items()}
    found = Landings(Credited(verdicts, _effective(by_kind[1]), earlier))
    _bot_share(found, by_kind[0])
    for _, a, b, c, _, _ in by_kind[2]:
        found.totals = Landed(int(a or 0), int(b or 0), int(c or 0))
    for _, a, b, c, _, _ in by_kind[5]:
        found.totals = Landed(found.totals.landed + a, found.totals.visitors + b, found.totals.excluded + c)
    for kind, column in _KINDS.items():
        names = found.names[column]
        for name, a, b, c, _, _ in by_kind[kind]:
            names[str(name)] = Landed(int(a), int(b), int(c))
        for name, a, b, c, _, _ in by_kind[kind + 3]:
            was = names[str(name)]
            names[str(name)] = Landed(was.landed + a, was.visitors + b, was.excluded + c)
    return found


def _effective(changes: Iterable[Any]) -> dict[str, tuple[str, str | None, str]]:
    """Each changed touchpoint's effective verdict, stored verdict and visitor, from its
    changes (touchpoint, verdict, stored verdict, whether an analyst's, change id, visitor):
    in order, the last winning (the latest analyst change, else the latest re-score)."""
    effective: dict[str, tuple[str, str | None, str]] = {}
    for touchpoint, verdict, stored, _, _, visitor in sorted(changes, key=lambda c: (c[0], c[3], c[4])):
        effective[str(touchpoint)] = (str(verdict), stored, str(visitor))
    return effective


def _bot_share(found: Landings, groups: Iterable[Any]) -> None:
    """The touchpoints per effective bot verdict (an unscored one, the bots addon off, counts
    as ``allow``) and per population: counted by stored verdict, then the (few) touchpoints
    whose verdict changed move over (the ``effective_touchpoints`` view's answer without its
    subquery per row: 2.4 s → 0.4 s over a million touchpoints)."""
    counts: dict[str, int] = defaultdict(int)
    by_consent: dict[str, int] = defaultdict(int)
    for verdict, consent, n, _, _, _ in groups:
        counts[verdict or "allow"] += int(n)
        by_consent[str(consent)] += int(n)
        found.scored = found.scored or verdict is not None
    for now, stored, _ in found.credited.changes.values():
        counts[stored or "allow"] -= 1
        counts[now] += 1
        found.scored = True
    found.verdicts = {verdict: n for verdict, n in counts.items() if n}
    found.by_consent = dict(sorted(by_consent.items()))
