"""How a report is cut into parts, one per report worker process, and the people each part
reads.

``slices`` cuts the period's conversions by id; ``shares`` shares out its people
(``storage/people.py``) for ``data_driven``, as of one snapshot of the bindings and the
conversions. ``_people_of`` gives a part its people, and a share the conversions it owns
(``Moved`` if rows were erased since the snapshot, or committed since with an ID within it),
from the bindings this process keeps from one report to the next (``_everyone``: while they
only grew, by the counters of migration 0009, only the new rows are read). Reads conversions,
identities and table_versions; never writes.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from typing import Any

from storage.people import Moved, People, Share, Snapshot
from storage.report_period import CONVERSIONS, Part, period_conversions
from storage.report_pool import WHOLE
from storage.report_runner import ReportRunner

NEWER_BINDINGS = "SELECT rowid, id, visitor_key, user_key FROM identities WHERE rowid > ? ORDER BY +id"
"""The bindings added since those a process keeps, in id order. ``+id`` keeps SQLite from
walking the whole id index to find them (6-17 ms over 113k bindings to find 10, where the
rowid range and a sort of the few rows take well under a millisecond)."""


class ReportParts(ReportRunner):
    """How a report is cut into parts, and the people each part reads."""

    def slices(self, since: datetime, until: datetime, conversion: str | None) -> list[Part]:
        """The period's conversions cut by id into one slice per worker process, each of at
        least ``min_slice`` conversions; a single whole slice when there are too few."""
        if self.processes < 2:
            return [WHOLE]
        where, args = period_conversions(since, until, conversion)
        self.db.execute("BEGIN")  # one snapshot: the cuts of one set of rows, in order
        try:
            (count,) = self.db.execute(f"SELECT count(*) FROM conversions WHERE {where}", args).fetchone()
            n = min(self.processes, count // self.min_slice)
            sql = f"SELECT id FROM conversions WHERE {where} ORDER BY id LIMIT 1 OFFSET :at"
            found = [self.db.execute(sql, {**args, "at": count * i // n}).fetchone() for i in range(1, n)]
        finally:
            self.db.execute("COMMIT")
        if n < 2:
            return [WHOLE]
        cuts: list[str | None] = [None, *sorted({row[0] for row in found if row is not None}), None]
        slices: list[Part] = list(pairwise(cuts))
        return slices

    def shares(self, since: datetime, until: datetime, conversion: str | None) -> list[Part]:
        """The period's people shared out between the worker processes (``storage/people.py``),
        as of one snapshot of the bindings and the conversions; a single whole slice when
        there are too few conversions for ``min_slice`` each (as ``slices``) and too few
        touchpoints for ``min_share`` each."""
        if self.processes < 2:
            return [WHOLE]
        where, args = period_conversions(since, until, conversion)
        self.db.execute("BEGIN")  # one snapshot of both tables
        try:
            count, last = self.db.execute(
                f"SELECT count(*), max(id) FROM conversions WHERE {where}", args
            ).fetchone()
            bound, newest = self.db.execute("SELECT count(*), max(id) FROM identities").fetchone()
            rows = self._period_rows(args)
        finally:
            self.db.execute("COMMIT")
        n = min(self.processes, max(count // self.min_slice, rows // self.min_share))
        if n < 2 or not count:
            return [WHOLE]
        return [Share(i, n, Snapshot(newest, bound), Snapshot(last, count)) for i in range(n)]

    def _period_rows(self, bounds: dict[str, Any]) -> int:
        """About how many touchpoints the period holds, from two lookups: the span of the
        rowids of its first and last touchpoints (rows are appended in time order; deleted or
        imported rows make it an estimate, enough to decide whether to share a report)."""
        sql = "SELECT rowid FROM touchpoints WHERE id {} ? ORDER BY id {} LIMIT 1"
        first = self.db.execute(sql.format(">=", "ASC"), (bounds["since_id"],)).fetchone()
        last = self.db.execute(sql.format("<", "DESC"), (bounds["until_id"],)).fetchone()
        if first is None or last is None:
            return 0
        return max(0, last[0] - first[0] + 1)

    def _people_of(
        self, part: Part, since: datetime, until: datetime, conversion: str | None
    ) -> tuple[People, list[tuple[Any, ...]] | None]:
        """Who each visitor's devices and person are; for a share, also the period's
        conversions it owns (rows of ``CONVERSIONS``), read as of the share's snapshot (``Moved``
        if rows were erased since, or committed since with an ID at or before its last). Kept for
        the rest of the report's call: ``_learn_part`` asks twice."""
        key = (self.report, part, since, until, conversion)
        if self._people is not None and self._people[0] == key:
            return self._people[1], self._people[2]
        self._people = None
        if not isinstance(part, Share):
            people, rows = self._everyone(), None
        else:
            where, args = period_conversions(since, until, conversion)
            if part.conversions.last is not None:
                where, args["last"] = where + " AND id <= :last", part.conversions.last
            rows = self.db.execute(f"{CONVERSIONS} WHERE {where} ORDER BY id", args).fetchall()
            people, bound = self._share_people(part, [(r[4], r[5]) for r in rows])
            if (bound, len(rows)) != (part.bindings.rows, part.conversions.rows):
                raise Moved(_moved(part, bound, len(rows)))
            rows = [r for r in rows if people.mine(r[4], r[5])]
        self._people = (key, people, rows)
        return people, rows

    def _share_people(
        self, share: Share, conversions: list[tuple[str | None, str | None]]
    ) -> tuple[People, int]:
        """A share's people, as of its snapshot of the bindings, and how many bindings that
        is. The bindings this process keeps (``_everyone``) when they are exactly the snapshot's
        (its newest id and number of rows): a 90-day ``data_driven`` read and bound the store's
        112,777 in each worker, for every report (0.2 of the 0.4 CPU-second its people cost).
        Else the snapshot's bindings, read.

        Either way the shares' checksum (``People.fingerprint``) names the bindings by the
        counters of migration 0009, when the store has them: rows inserted, less those newer
        than the snapshot, and rows changed. Two workers agree on it only if no binding of
        the snapshot changed between their reads (an update or delete moves ``changed``, an
        older insert the difference), whichever way each one took; stores without the
        counters checksum the bindings themselves."""
        db, last = self.db, share.bindings.last or ""
        began = not db.in_transaction
        if began:  # one snapshot: the counters, and the bindings they count
            db.execute("BEGIN")
        try:
            counters = self._counters()
            version = None
            if counters is not None:
                (newer,) = db.execute("SELECT count(*) FROM identities WHERE id > ?", (last,)).fetchone()
                version = f"{counters[0] - newer}:{counters[1]}"
                self._everyone()
                kept = self._everyone_kept
                if kept is not None and (kept.newest, kept.rows) == (last, share.bindings.rows):
                    return People.adopt(kept.people, conversions, share, version), kept.rows
            sql = "SELECT visitor_key, user_key FROM identities WHERE id <= ? ORDER BY id"
            bindings = db.execute(sql, (last,)).fetchall()
        finally:
            if began and db.in_transaction:
                db.execute("COMMIT")
        return People(bindings, conversions, share, version), len(bindings)

    def _counters(self) -> tuple[int, int] | None:
        """Migration 0009's counters of ``identities`` (rows inserted, rows updated or
        deleted), if the store has them and every trigger that moves them."""
        try:
            row = self.db.execute(
                "SELECT inserted, changed FROM table_versions WHERE name = 'identities'"
                " AND (SELECT count(*) FROM sqlite_master WHERE type = 'trigger'"
                " AND name IN ('identities_inserted', 'identities_updated', 'identities_deleted')) = 3"
            ).fetchone()
        except sqlite3.OperationalError:  # a store from before migration 0009
            return None
        return None if row is None else (int(row[0]), int(row[1]))

    def _everyone(self) -> People:
        """Every binding's visitor and person, kept from one report to the next: while the
        bindings only grew (migration 0009's counters) by rows of later ids, only the new rows
        are read and added; anything else (a row updated or deleted, a new row older than the
        newest kept, or a store without the counters or their triggers: a table rebuilt by
        hand drops them) reads every binding again. Each way in one snapshot with the counters.
        ``INSERT OR REPLACE`` deletes without the delete trigger: its row keeps an id no later
        than the newest kept, which the id check catches. Forgotten between runs of reports
        (``_done``)."""
        db, kept = self.db, self._everyone_kept
        began = not db.in_transaction
        if began:
            db.execute("BEGIN")
        try:
            counters = self._counters()
            self._everyone_kept = None
            if counters is not None and kept is not None and kept.changed == counters[1]:
                new = db.execute(NEWER_BINDINGS, (kept.rowid,)).fetchall()
                if len(new) == counters[0] - kept.inserted and (not new or new[0][1] > kept.newest):
                    kept.people.bind((visitor, user) for _, _, visitor, user in new)
                    if new:  # every new rowid is past the kept one
                        kept.rowid, kept.newest = max(row[0] for row in new), new[-1][1]
                    kept.inserted, kept.rows = counters[0], kept.rows + len(new)
                    self._everyone_kept = kept
                    return kept.people
            people = People(db.execute("SELECT visitor_key, user_key FROM identities ORDER BY id"), ())
            if counters is not None:
                sql = "SELECT max(rowid), max(id), count(*) FROM identities"
                rowid, newest, rows = db.execute(sql).fetchone()
                inserted, changed = counters
                self._everyone_kept = Everyone(people, inserted, changed, rowid or 0, newest or "", rows)
            return people
        finally:
            if began and db.in_transaction:
                db.execute("COMMIT")


def _moved(share: Share, bindings: int, conversions: int) -> str:
    """Why a share's snapshot no longer holds, in what its counts say: rows it began with were
    erased, or rows were committed since with an ID at or before the last it read (README
    "First touch, last touch": IDs of one millisecond from two processes need not come in
    order; an import or a late signed event has its event's time). Until 2026-12-07 both were
    told as an erasure."""
    said, late = [], False
    for noun, now, began in (
        ("binding", bindings, share.bindings.rows),
        ("conversion", conversions, share.conversions.rows),
    ):
        of = " of the period" if noun == "conversion" else ""
        n = abs(now - began)
        if now < began:
            said.append(
                f"{n:,} of the {began:,} {noun}s{of} it began with {'was' if n == 1 else 'were'} erased"
                " while a report ran"
            )
        elif now > began:
            late = True
            said.append(
                f"{n:,} {noun}{'' if n == 1 else 's'}{of} {'was' if n == 1 else 'were'} committed while a"
                " report ran with an ID at or before the last it began with"
            )
    why = " (IDs of one millisecond from two processes need not come in order; an import or a late"
    why += " signed event has its event's time)"
    return "; ".join(said) + (why if late else "")


@dataclass(slots=True)
class Everyone:
    """``Reports._everyone``'s people, and where in the bindings they were read up to: the
    counters of migration 0009, the largest rowid, the newest id and the number of rows."""

    people: People
    inserted: int
    changed: int
    rowid: int
    newest: str
    rows: int
