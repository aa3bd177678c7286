"""The reads of a report's conversions, each with its candidate touchpoints (``read``).

SQL does the joins in one indexed, streamed query — each conversion of the period to every
visitor (device) of its user, through ``identities``, and to those visitors' touchpoints
inside the widest lookback window, one range of the covering visitor index (migration 0008)
per device, each device read once however many conversions it serves — and
``storage/crediting.py`` credits what it returns. A part of a report
(``storage/report_parts.py``) reads only its own conversions, each with every touch of its
devices, as a whole report does. Reads conversions, identities and touchpoints; never writes.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime, timedelta
from itertools import groupby
from operator import itemgetter
from typing import Any

from gateway.attribution import to_minor
from gateway.events import iso
from storage.crediting import Cand, Conv, parse_ts
from storage.people import Share
from storage.report_parts import ReportParts
from storage.report_period import CONVERSIONS, Part, period_bounds, period_conversions, window_start
from storage.report_pool import WHOLE
from storage.report_touches import ReportTouches

GROUPS = ("channel", "source", "medium", "campaign", "creator_id")


class ConversionReads(ReportParts, ReportTouches):
    """The period's conversions, each with its candidate touchpoints."""

    def read(
        self,
        since: datetime,
        until: datetime,
        conversion: str | None = None,
        group_by: str = "channel",
        population: str | None = None,
        part: Part = WHOLE,
        keep: bool = False,
        touched: dict[str, list[Cand]] | None = None,
    ) -> list[Conv]:
        """Conversions with ``since <= ts < until`` (of one name, if given; of one ``part`` of
        the period's conversions, if given), each with the
        touchpoints of all its devices from the widest lookback window before ``since`` on;
        each touch carries its ``group_by`` value. With ``population`` (``touchpoints.consent``)
        only that population's touchpoints, and only the conversions that have some.

        ``keep``: hold on to the answer for the next read of the same report with the same
        arguments (``data_driven`` learns from a slice's conversions, then credits them).
        ``touched``: filled, when the conversions are read (not kept), with each of their
        devices' touchpoints as read (``_other_journeys`` then reads only the other visitors).

        Blocking: call it inside ``run``, where a whole report is computed in one call, so its
        million tuples are made and freed while the collector is paused."""
        if group_by not in GROUPS:
            raise ValueError(f"cannot group by {group_by!r}")
        key = (self.report, since, until, conversion, group_by, population, part)
        kept, self._kept = self._kept, None
        if kept is not None and kept[0] == key and touched is None:  # a kept answer fills no ``touched``
            return kept[1]
        convs = self._load(since, until, conversion, group_by, population, part, touched)
        if keep:
            self._kept = (key, convs)
        return convs

    def _load(
        self,
        since: datetime,
        until: datetime,
        conversion: str | None,
        group_by: str,
        population: str | None,
        part: Part,
        touched: dict[str, list[Cand]] | None = None,
    ) -> list[Conv]:
        widest = max(self.attribution.tiers.windows.values())
        args: dict[str, Any] = period_bounds(since, until, window_start(since, widest))
        args["population"] = population
        people, owned = self._people_of(part, since, until, conversion)
        if owned is None:  # a slice, or the whole period
            where, period = period_conversions(since, until, conversion)
            if not isinstance(part, Share) and part[0] is not None:
                where, period["part_lo"] = where + " AND id >= :part_lo", part[0]
            if not isinstance(part, Share) and part[1] is not None:
                where, period["part_hi"] = where + " AND id < :part_hi", part[1]
            owned = self.db.execute(f"{CONVERSIONS} WHERE {where}", period).fetchall()
        convs = []
        devices: dict[str, list[Conv]] = defaultdict(list)
        users_of, visitors_of = people.users_of, people.visitors_of
        # Each conversion's devices: its visitor, and every visitor bound to its user (the
        # user it was recorded for, or any its visitor is bound to).
        minor: dict[tuple[object, str | None], int] = {}  # prices repeat: Decimal work once each
        none: set[str] = set()
        for cid, ts, amount, currency, visitor, user in owned:
            value = minor.get((amount, currency))
            if value is None:
                value = minor[amount, currency] = to_minor(amount, currency)
            conv = Conv(cid, ts, parse_ts(ts), value, currency)
            convs.append(conv)
            users = users_of.get(visitor, none) if visitor else none
            if user is None or user in users:
                if not users:  # most: an unbound visitor alone
                    devices[visitor].append(conv)
                    continue
                mine = (
                    visitors_of[next(iter(users))]
                    if len(users) == 1
                    else none.union(*map(visitors_of.__getitem__, users))
                )
            else:
                mine = visitors_of.get(user, none).union(*map(visitors_of.__getitem__, users))
                if visitor:
                    mine.add(visitor)
            for device in mine:
                devices[device].append(conv)
        # One range of the (covering, migration 0008) visitor index per device, each device
        # read once however many conversions it serves; rows name their device by its place
        # in the list and come device by device.
        order = sorted(devices)
        served = [devices[v] for v in order]
        group = "NULL" if group_by == "channel" else f"t.{group_by}"  # by channel: read channel
        # "allow" (nearly every row) comes as None, which counts as allow: no string to make.
        sql = (
            f"SELECT t.ts, t.id, t.channel, nullif({self.verdict}, 'allow'), t.campaign, {group}, v.key"
            " FROM json_each(:devices) v CROSS JOIN touchpoints t ON t.visitor_key = v.value"
            " WHERE t.id >= :from_id AND t.id < :until_id AND t.ts >= :from AND t.ts < :until"
            + (" AND t.consent = :population" if population is not None else "")
        )
        args["devices"] = json.dumps(order)
        rows: list[Cand] = self.db.execute(sql, args).fetchall()
        changed = self._verdict_changes(args)
        if changed:
            rows = [r if r[1] not in changed else (r[0], r[1], r[2], changed[r[1]], *r[4:]) for r in rows]
        for device, of_device in groupby(rows, itemgetter(6)):
            read = list(of_device)
            for conv in served[device]:
                conv.touches += read
            if touched is not None:
                touched[order[device]] = read
        if self._tier_args:
            self._name_tiers(convs, self._tier_params(args))
        if any(r[2] is None for r in rows):  # recorded before channels existed
            self._classify(convs)
        if population is not None:  # those with a touch of it in their widest window, at or before them
            convs = [c for c in convs if _touched(c, widest)]
        convs.sort(key=lambda c: (c.ts, c.id))
        return convs


def _touched(conv: Conv, widest: timedelta) -> bool:
    """Whether a touch of ``conv``'s devices lies in its widest lookback window (the boundary
    counts), whatever its verdict: which conversions a population's report keeps, the same
    whatever period it is asked for."""
    oldest = iso(conv.at - widest)
    return any(oldest <= c[0] <= conv.ts for c in conv.touches)
