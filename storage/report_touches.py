"""How a report reads touchpoints: through which index (``_scan``), with their effective
verdict, their tier, and a channel for the rows stored before channels existed.

Which touchpoint columns exist is learned once, at ``open`` (``_detect``): a ``verdict``
column (bot scoring) is used when present, with the verdict changes that count
(``live_verdict_changes``: an analyst's override, unless withdrawn, else the latest re-score)
applied in Python (``_verdict_changes``) — the ``effective_touchpoints`` view's answer,
without its subquery per row; the verdict comes
from the covering index of migration 0008. Touches whose parameters name a tier carry it
instead of the campaign (``_name_tiers``); rows stored before channels existed are classified
from their stored signals (``_classify``; ``gateway reclassify`` stores the channel). Reads
touchpoints and verdict_changes; never writes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from gateway.channels import DIRECT, Signals
from storage.crediting import Conv
from storage.report_period import ms
from storage.report_pool import WHOLE, Slice
from storage.report_runner import ReportRunner

_decode = msgspec.json.Decoder(dict[str, str])


def _id_ms(uuid7: str) -> int:
    """The millisecond of a UUIDv7 (its first 48 bits)."""
    return int(uuid7[:8] + uuid7[9:13], 16)


class ReportTouches(ReportRunner):
    """How a report reads touchpoints: which index, and each touch's effective verdict, tier
    and channel."""

    def _detect(self) -> None:
        db = self.db
        tables = {
            row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")
        }
        columns = {row[1] for row in db.execute("PRAGMA table_info(touchpoints)")}
        self.verdict = "t.verdict" if "verdict" in columns else "NULL"
        # The effective verdict (an analyst's override, else the latest re-score, else as
        # scored) decides whether a touchpoint earns credit: the stored one comes with the
        # row, the (few) changes that count from their view — the same answer as the
        # effective_touchpoints view, without its subquery per row. A store not migrated to
        # it (0017) holds no withdrawn override (its table refuses one): every change counts.
        self.changes = ""
        if "verdict_changes" in tables and "verdict" in columns:
            self.changes = "live_verdict_changes" if "live_verdict_changes" in tables else "verdict_changes"

    def _scan(self, since: datetime, until: datetime, ids: Slice = WHOLE) -> str:
        """How to read every touchpoint of a period: through the whole covering visitor index
        (migration 0008) when the period spans at least half of the stored time, else the
        period's range of the primary key (which costs a table lookup per row). Over most of
        a store the index is cheaper, and each visitor's rows come together: a 90-day
        ``data_driven`` learns from 930k rows in 1.8 s instead of 2.5 s; over a day of it the
        range reads a hundredth of the rows. Same rows either way, in another order.

        ``ids``: only the touchpoints of this range of ids are read (a slice of a report),
        which narrows the period: the creator clicks of each half of a 90-day period (the
        benchmark store's 1M touchpoints, ``count_clicks``) took 0.14-0.15 s from its range of
        ids, 0.16-0.19 s through the whole index."""
        sql = "SELECT (SELECT min(id) FROM touchpoints), (SELECT max(id) FROM touchpoints)"
        first, last = self.db.execute(sql).fetchone()
        start, end = ms(since), ms(until)
        try:
            lo, hi = _id_ms(first), _id_ms(last)
            start = start if ids[0] is None else max(start, _id_ms(ids[0]))
            end = end if ids[1] is None else min(end, _id_ms(ids[1]))
        except (TypeError, ValueError):  # no rows, or ids that are not UUIDv7 (imported as they came)
            return ""
        covered = min(end, hi) - max(start, lo)
        return "INDEXED BY touchpoints_visitor" if 2 * covered >= hi - lo else ""

    def _verdict_changes(self, args: dict[str, Any]) -> dict[str, str]:
        """The effective verdict of every touchpoint of the window with a verdict change: its
        latest analyst change not withdrawn, else its latest re-score (as ``effective_touchpoints``
        says).
        Kept for the rest of the report's call (``_learn_part`` asks for the same window twice:
        the conversions', and the period's inside it)."""
        if not self.changes:
            return {}
        key = (self.report, args["from_id"], args["until_id"])
        if self._changes is not None and self._changes[0] == key:
            return self._changes[1]
        changed = self._changes_of({"since_id": args["from_id"], "until_id": args["until_id"]})
        self._changes = (key, changed)
        return changed

    def _changes_of(self, ids: dict[str, Any]) -> dict[str, str]:
        """``_verdict_changes`` of the touchpoints with ``since_id <= id < until_id``, read now."""
        sql = (
            f"SELECT touchpoint_id, verdict FROM {self.changes}"
            " WHERE touchpoint_id >= :since_id AND touchpoint_id < :until_id"
            " ORDER BY touchpoint_id, origin = 'analyst', id"
        )
        return dict(self.db.execute(sql, ids))  # the last of each touchpoint's rows wins

    def _tier_params(self, args: dict[str, Any]) -> dict[str, str]:
        """Raw parameters of the window's touchpoints that name a tier parameter (few), by id:
        from the partial index of migration 0006 when every tier parameter ends in ``_tier``,
        else by reading the parameters of every touchpoint of the window."""
        tests = " OR ".join(f"instr(raw_params, :{name})" for name in self._tier_args)
        tiered = ""
        if all(name.endswith("_tier") for name in self.attribution.tiers.params):
            tiered = "instr(raw_params, '_tier\"') > 0 AND "
        sql = (
            f"SELECT id, raw_params FROM touchpoints WHERE {tiered}id >= :from_id AND id < :until_id"
            f" AND ({tests})"
        )
        return dict(self.db.execute(sql, args | self._tier_args))

    def _name_tiers(self, convs: list[Conv], named: dict[str, str]) -> None:
        """Touches whose parameters name a tier carry it (``\\x00`` + tier) instead of the campaign."""
        if not named:
            return
        tiers = self.attribution.tiers
        for conv in convs:
            for i, c in enumerate(conv.touches):
                raw = named.get(c[1])
                if raw is not None:
                    tier = tiers.tier_of(c[4], _decode.decode(raw))
                    conv.touches[i] = (c[0], c[1], c[2], c[3], "\x00" + tier, c[5], c[6])

    def _classify(self, convs: list[Conv]) -> None:
        """Give rows stored before channels existed their channel (``gateway reclassify`` stores it)."""
        channels = self._channels_of(list({c[1] for conv in convs for c in conv.touches if c[2] is None}))
        for conv in convs:
            for i, (ts, tid, channel, verdict, tier, value, visitor) in enumerate(conv.touches):
                if channel is None:
                    conv.touches[i] = (ts, tid, channels.get(tid, DIRECT), verdict, tier, value, visitor)

    def _channels_of(self, ids: list[str]) -> dict[str, str]:
        """The channel of each touchpoint (by id), classified from its stored signals."""
        channels: dict[str, str] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            sql = (
                "SELECT id, source, medium, campaign, click_id_kind, creator_id, referrer_host "
                f"FROM touchpoints WHERE id IN ({', '.join('?' * len(chunk))})"
            )
            for tid, *signals in self.db.execute(sql, chunk):
                channels[tid] = self.channels.classify(Signals(*signals))
        return channels
