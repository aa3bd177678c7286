"""What ``data_driven`` learns from, and the weights it learns (``learn``).

The period's journeys: each conversion's (read as the report then reads them, and kept for
it), and every person's accepted, not internal touchpoints of the period that no conversion
used (``_other_journeys``: the journeys that did not convert), counted into Markov
transitions (``gateway/attribution.py``). A large period is shared out by people (``shares``,
``storage/people.py``), each worker process counting its own people's journeys whole; if
their checksums differ, the report learns here, in one piece (``count_moves``). Reads
conversions, identities and touchpoints; never writes.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from gateway.attribution import Moves, Params, add_moves, markov_moves, moves_learnt, paths_moves
from gateway.channels import INTERNAL
from gateway.ids import id_floor
from storage.crediting import Cand
from storage.people import Share
from storage.report_conversions import ConversionReads
from storage.report_journeys import Journeys
from storage.report_kept import Kept
from storage.report_period import Part, key_range, ms, period_bounds, visitor_column, window_start
from storage.report_pool import WHOLE

Learning = tuple[datetime, datetime, str | None, frozenset[str], str | None, str]
"""What ``data_driven`` learns from: since, until, conversion name, accepted verdicts,
population, and the grouping the report then reads its conversions with."""
log = logging.getLogger("gateway.reports")
PAST_TRIGGERS = (
    "identities_updated",
    "identities_deleted",
    "touchpoints_deleted",
    "touchpoints_reclassified",
    "conversions_deleted",
)
"""What keeps ``past_versions``' counters current (migrations 0009 and 0020)."""


class ReportLearning(ConversionReads):
    """``data_driven``'s weights, learnt from the period's journeys, converting and not."""

    def learn(
        self,
        models: Iterable[str],
        since: datetime,
        until: datetime,
        conversion: str | None,
        accepted: frozenset[str],
        population: str | None = None,
        group_by: str = "channel",
        *,
        anew: bool = False,
    ) -> tuple[Params, list[Part]]:
        """The models' parameters, and the parts to ``map`` the report over. For
        ``data_driven``, Markov weights learnt from the period's journeys — the conversions'
        and those of everyone who left touchpoints in it — each worker counting those of its
        share of the people (``shares``); the conversions are read as the report will read
        them (``group_by``), and kept for it; ``Params.learnt`` says what was learnt (the
        journeys, each channel's removal effect and weight, when and over which period).
        Weights learnt for an earlier report that serve this one are reused, unless ``anew``
        (``storage/report_kept.py``); those learnt here are kept. Blocking: call it inside
        ``run``."""
        params = self.attribution.params
        if "data_driven" not in models:
            return params, self.slices(since, until, conversion)
        of = (conversion, accepted, population)
        # As of now: a write that changes the past while this learns outdates what it learns.
        at, clock, rewrites = *self.weights.started(), self.rewrites
        past = self.past_versions() if self.weights.seconds > 0 else None
        kept = None if anew else self.weights.find(of, since, until, rewrites, past)
        if kept is not None:  # learnt for an earlier report: only the conversions to read
            return kept.params, self.slices(since, until, conversion)
        task = (since, until, conversion, accepted, population, group_by)
        moves, parts = self.count_moves(self.shares(since, until, conversion), task)
        learnt = replace(moves_learnt(moves), at=at, since=since, until=until)
        params = replace(params, channel_weights=learnt.weights, learnt=learnt)
        # A learning of no journey at all is not kept: learning it again costs nothing, and kept
        # it credited the first journeys that came (the quick start's sign-up) for minutes.
        if past is not None and (learnt.converting or learnt.not_converting):
            self.weights.keep(Kept(of, since, until, at, clock, rewrites, past, params), self.rewrites)
        return params, parts

    def past_versions(self) -> tuple[int, ...] | None:
        """The store's counters of rows deleted or updated in ``identities``, ``touchpoints``
        and ``conversions`` (migrations 0009 and 0020), whichever process wrote them, and its
        import runs begun, finished and undone (``gateway import``: old rows added to past
        periods, which no trigger counts); None when the store has not all the counters and
        every trigger that moves them (a store from before 0020, a table rebuilt by hand): kept
        weights then never serve."""
        try:
            rows = self.db.execute(
                "SELECT changed FROM table_versions"
                " WHERE name IN ('conversions', 'identities', 'touchpoints')"
                " AND (SELECT count(*) FROM sqlite_master WHERE type = 'trigger'"
                f" AND name IN ({', '.join(repr(t) for t in PAST_TRIGGERS)})) = {len(PAST_TRIGGERS)}"
                " ORDER BY name"
            ).fetchall()
        except sqlite3.OperationalError:  # no table_versions
            return None
        if len(rows) != 3:
            return None
        try:  # a few rows: one per import
            runs = self.db.execute(
                "SELECT count(*), count(finished), count(undone) FROM import_runs"
            ).fetchone()
        except sqlite3.OperationalError:  # a store without imports (the reporting mirror's)
            runs = ()
        return (*(int(n) for (n,) in rows), *runs)

    def relearn(self, kept: Kept) -> None:
        """Learn ``kept``'s weights again, over its period as it is now (a rolling one ends now),
        and keep them for the reports to come (``storage/report_kept.py``); the worker processes
        then forget the conversions they read for it (no crediting follows). Blocking: call it
        inside ``run``."""
        since, until = kept.since, kept.until
        if kept.rolling:
            until = max(until, datetime.now(UTC))
            since = until - (kept.until - kept.since)
        conversion, accepted, population = kept.key
        self.learn(("data_driven",), since, until, conversion, accepted, population, anew=True)
        if self._pool.pids:  # the workers that learnt kept their share's conversions
            self._pool.map(_forget_conversions, [WHOLE] * len(self._pool.pids))

    def count_moves(self, parts: list[Part], task: Learning) -> tuple[Moves, list[Part]]:
        """``learn``'s transition counts, over ``parts``; and the parts the report is to be
        credited over: those, or the whole period when ``map`` counted it here in one piece (a
        worker died, or a share's snapshot no longer held). The crediting then reads what this
        process kept, not the workers' snapshot."""
        counted = self.map(_learn_part, parts, *task)
        if len(counted) > 1 and len({fingerprint for _, fingerprint in counted}) > 1:
            log.info("bindings or conversions changed while a report ran; running it in the gateway process")
            counted = [_learn_part(self, WHOLE, *task)]
        moves = add_moves(m for m, _ in counted)
        return moves, parts if len(counted) == len(parts) else [WHOLE]

    def _other_journeys(
        self,
        since: datetime,
        until: datetime,
        conversion: str | None,
        accepted: frozenset[str],
        population: str | None = None,
        part: Part = WHOLE,
        touched: dict[str, list[Cand]] | None = None,
        used: set[str] | frozenset[str] = frozenset(),
    ) -> Counter[tuple[str, ...]]:
        """The channels, in time order, of every person's accepted, not internal touchpoints
        of the period that no conversion ``used``: the journeys that did not convert (empty
        ones left out), counted by path. Of every person, or of a share's (its key range of the
        visitor index, less the visitors whose group is another share's, plus those of its
        own groups outside the range). A person is the user of the visitor's earliest
        binding, else the visitor.

        ``touched``: visitors whose touchpoints the conversions' read already holds (``read``),
        from before the period on; the others are read here. It holds every device of every
        conversion, so the touchpoints ``used`` are all among its rows: only those are checked.

        A visitor bound to nobody is a person alone (most): its rows come together, in id
        order, and its journey is made from them as they come, without a tuple per row nor a
        sort unless its times are out of id order (``Journeys``), and counted with the
        others of the same path (``paths_moves`` then walks each path once). Only the people
        of several devices are gathered first, and every row when the period is read from its
        range of ids (rows in time order, not by visitor)."""
        people, _ = self._people_of(part, since, until, conversion)
        touched = touched or {}
        # As ``_load``'s rows begin (time, id, channel, verdict), so ``Journeys`` takes both.
        columns = f"t.ts, t.id, t.channel, nullif({self.verdict}, 'allow'), t.visitor_key"
        where = "t.id >= :since_id AND t.id < :until_id AND t.ts >= :since AND t.ts < :until" + (
            " AND t.consent = :population" if population is not None else ""
        )
        bounds: dict[str, Any] = {**period_bounds(since, until, since), "population": population}
        scan = self._scan(since, until)
        key = visitor_column(scan)
        others, skip = where, list(touched)
        keys: tuple[str | None, str | None] = (None, None)
        if not isinstance(part, Share):
            extra: list[str] = []
        else:
            extra, foreign = people.visitors()
            extra = [v for v in extra if v not in touched]
            skip += foreign
            others += key_range(part, key, bounds)
            keys = part.keys
        if scan:  # the index's order: each visitor's rows together, in id order (no sort step)
            reads = [(read, True) for read in self._around(columns, scan, where, others, skip, keys, bounds)]
        else:  # the period's range of ids: rows in time order, not by visitor
            if skip:  # one list: each row is looked up once
                others += f" AND {key} NOT IN (SELECT value FROM json_each(:skip))"
                bounds["skip"] = json.dumps(skip)
            reads = [(self.db.execute(f"SELECT {columns} FROM touchpoints t WHERE {others}", bounds), False)]
        if extra:  # a visitor at a time (CROSS JOIN: the list is the outer loop), in id order
            bounds["extra"] = json.dumps(extra)
            sql = f"SELECT {columns} FROM json_each(:extra) v CROSS JOIN touchpoints t"
            reads.append((self.db.execute(f"{sql} ON t.visitor_key = v.value WHERE {where}", bounds), True))
        journeys = Journeys(people)
        since_ts, since_id = bounds["since"], bounds["since_id"]
        # Verdict changes applied, allow as None. ``used`` first: it rejects most rows (on the
        # benchmark store 93 %, the touches the conversions credited) in one test.
        for visitor, held in touched.items():
            journeys.add(
                visitor,
                [
                    c
                    for c in held
                    if c[1] not in used
                    and c[0] >= since_ts
                    and c[1] >= since_id
                    and (c[3] or "allow") in accepted
                    and c[2] != INTERNAL
                ],
            )
        # The conversions' window (``_load``'s): a superset of the period's, read once.
        widest = max(self.attribution.tiers.windows.values())
        changed = self._verdict_changes({**bounds, "from_id": id_floor(ms(window_start(since, widest)))})
        for rows, by_visitor in reads:
            current = ""
            kept: list[tuple[Any, ...]] = []
            for row in rows:
                _, tid, channel, verdict, visitor = row
                if changed and tid in changed:
                    verdict = changed[tid]
                if (verdict or "allow") not in accepted or channel == INTERNAL:
                    continue
                if not by_visitor:  # rows in id order (the period's range): every one gathered
                    journeys.gather(visitor, row)
                elif visitor != current:
                    journeys.add(current, kept)
                    current, kept = visitor, [row]
                else:
                    kept.append(row)
            journeys.add(current, kept)
        return journeys.done(self._channels_of)

    def _around(
        self,
        columns: str,
        scan: str,
        where: str,
        ranged: str,
        skip: list[str],
        keys: tuple[str | None, str | None],
        bounds: dict[str, Any],
    ) -> list[sqlite3.Cursor]:
        """``_other_journeys``' reads of the visitor index (``scan``) inside its ``keys``
        range (``ranged``: ``where`` and the range's condition), around the visitors to
        ``skip``: the range before the first, the one after the last, and one between each
        two, whose rows the index gives in its order, each visitor's together. Testing every
        row of the period against the list instead (``NOT IN``: a lookup per row) cost more
        than the seeks: 90 days of the benchmark store, 930k rows of which 430k are kept,
        1.4-1.8 s of SQL against 1.1-1.4."""
        select, order = f"SELECT {columns} FROM touchpoints t {scan} WHERE ", " ORDER BY t.visitor_key, t.id"
        lo, hi = keys  # a skipped visitor outside the range is not read anyway
        inside = {v for v in skip if (lo is None or v >= lo) and (hi is None or v < hi)}
        if not inside:
            return [self.db.execute(select + ranged + order, bounds)]
        # Python orders str as SQLite orders their UTF-8 text (BINARY, the index's order).
        bounds |= {"first": min(inside), "last": max(inside), "skip": json.dumps(list(inside))}
        # Each skipped visitor and the next (``lead``, in SQLite's order), the outer loop
        # (CROSS JOIN); the rows between them from the index, in its order.
        between = (
            f"SELECT {columns} FROM (SELECT value AS lo, lead(value) OVER (ORDER BY value) AS hi"
            f" FROM json_each(:skip)) g CROSS JOIN touchpoints t {scan}"
            f" ON t.visitor_key > g.lo AND t.visitor_key < g.hi WHERE {where}"
        )
        return [
            self.db.execute(f"{select}{ranged} AND t.visitor_key < :first{order}", bounds),
            self.db.execute(between, bounds),
            self.db.execute(f"{select}{ranged} AND t.visitor_key > :last{order}", bounds),
        ]


def _forget_conversions(reports: ReportLearning, part: Part) -> None:
    """A worker's conversions kept for a crediting that does not follow (``relearn``), let go."""
    reports._kept = None


def _learn_part(
    reports: ReportLearning,
    part: Part,
    since: datetime,
    until: datetime,
    conversion: str | None,
    accepted: frozenset[str],
    population: str | None,
    group_by: str,
) -> tuple[Moves, int]:
    """One share's journeys for ``data_driven``, their transitions counted: its conversions'
    (kept in this process for the report's next read, ``Reports.read``), and its people's
    touchpoints of the period that none of them used; with the checksum of what its groups
    came from (``People.fingerprint``)."""
    touched: dict[str, list[Cand]] = {}
    convs = reports.read(since, until, conversion, group_by, population, part, True, touched)
    journeys = [reports.eligible(c, accepted) for c in convs]
    moves = markov_moves(([t[2] for t in path], True) for path in journeys)
    used = {t[1] for path in journeys for t in path}
    others = reports._other_journeys(since, until, conversion, accepted, population, part, touched, used)
    fingerprint = reports._people_of(part, since, until, conversion)[0].fingerprint
    return dict(paths_moves(others, False, moves)), fingerprint
