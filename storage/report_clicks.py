"""Creator clicks: the touchpoints with a creator ID in a period, per creator and whether
their verdict quarantines them (``Clicks``), for the payout report (``gateway/reporting.py``).

Counted per part of a report (a slice's range of ids, or a share's range of visitor keys),
so the worker processes count them beside the crediting and the parts add up to the whole
period; counted by stored verdict, then the few touchpoints whose verdict changed move over
(by the changes that count: ``live_verdict_changes``). Reads touchpoints and verdict_changes;
never writes.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from storage.people import Share
from storage.report_period import Part, key_range, period_bounds, visitor_column
from storage.report_pool import WHOLE
from storage.report_touches import ReportTouches

Clicks = dict[tuple[str, bool], int]
"""Creator clicks: (creator_id, quarantined) → touchpoints with that creator ID."""


class CreatorClicks(ReportTouches):
    """Creator clicks of a period, or of one part of a report."""

    async def creator_clicks(
        self, since: datetime, until: datetime, accepted: frozenset[str], population: str | None = None
    ) -> Clicks:
        """Touchpoints with a creator ID in the period (of one ``population``, if given:
        ``touchpoints.consent``): (creator_id, quarantined) → count."""
        return await self.run(self.count_clicks, since, until, accepted, WHOLE, population)

    def count_clicks(
        self,
        since: datetime,
        until: datetime,
        accepted: frozenset[str],
        part: Part = WHOLE,
        population: str | None = None,
    ) -> Clicks:
        """``creator_clicks``, of the touchpoints one part of a report covers: a slice's range
        of ids (cut where its conversions were), or a share's range of visitor keys (its
        groups do not matter to a count). The parts of a report cover each touchpoint once, so
        their counts add up to the whole period's (``gateway/reporting.py`` counts them in the
        worker processes, beside the crediting). Blocking: call it inside ``run`` or ``map``."""
        bounds: dict[str, Any] = period_bounds(since, until, since)
        mine = ""
        if population is not None:
            mine, bounds["population"] = " AND t.consent = :population", population
        if isinstance(part, Share):
            scan = self._scan(since, until)
            mine += key_range(part, visitor_column(scan), bounds)
        else:
            scan = self._scan(since, until, part)
            lo, hi = part
            if lo is not None and lo > bounds["since_id"]:
                bounds["since_id"] = lo
            if hi is not None and hi < bounds["until_id"]:
                bounds["until_id"] = hi
        sql = (
            f"SELECT t.creator_id, {self.verdict}, count(*) FROM {self.source} t {scan}"
            " WHERE t.id >= :since_id AND t.id < :until_id AND t.ts >= :since AND t.ts < :until"
            f" AND t.creator_id IS NOT NULL{mine} GROUP BY 1, 2"
        )
        # Counted by stored verdict, then the (few) touchpoints whose verdict changed move over:
        # those of this part only, from the changes read in the same snapshot (not the ones
        # ``read`` kept, from before it).
        moved = (
            f"SELECT DISTINCT t.id, t.creator_id, t.verdict FROM {self.changes} c"
            " JOIN touchpoints t ON t.id = c.touchpoint_id"
            " WHERE c.touchpoint_id >= :since_id AND c.touchpoint_id < :until_id"
            f" AND t.ts >= :since AND t.ts < :until AND t.creator_id IS NOT NULL{mine}"
        )
        clicks: Clicks = defaultdict(int)
        self.db.execute("BEGIN")  # one snapshot: only touchpoints counted move over
        try:
            for creator, verdict, n in self.db.execute(sql, bounds):
                clicks[creator, (verdict or "allow") not in accepted] += n
            if self.changes:
                changed = self._changes_of(bounds)
                for tid, creator, verdict in self.db.execute(moved, bounds):
                    clicks[creator, (verdict or "allow") not in accepted] -= 1
                    clicks[creator, changed[tid] not in accepted] += 1
        finally:
            self.db.execute("COMMIT")
        return {key: n for key, n in clicks.items() if n}
