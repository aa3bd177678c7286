"""``data_driven``'s weights kept from one report to the next (``admin.data_driven_reuse_seconds``).

Learning them reads every journey of the period, converting and not: about two of the three
seconds a ``data_driven`` report over a million touchpoints takes (``bench/REPORTS.md``). A
report over the same period, conversion name, verdicts and population, asked for within the
reuse time, credits with the weights kept instead and reads only its conversions, as every
other model's report does; its ``learnt`` says when, and over which period, they were learnt.
A report that reuses weights past half the reuse time has them learnt again in the background
once the reports asked for are done (``due``), so that a dashboard in use keeps fresh weights
without a report waiting for them.

A period that ran up to the moment it was learnt (``until`` now or later: a "last 30 days")
also serves the same length of period asked for later, whose end has moved on with the clock:
what it lacks are the journeys of the minutes since, as a report asked for a minute earlier
would. Any other period is reused only for exactly the same ends.

A write made through this process that can change the past (``Reports.changed``: an analyst's
verdict, an erasure, a retention purge, the reporting mirror applying another node's erasure or
verdict) drops every kept weight; so does any process's deletion or update of touchpoints,
conversions or bindings (``gateway erase``, ``gateway reclassify``, an import undone: the
store's counters of migrations 0009 and 0020, read with each report), and any import run
beginning, finishing or undone (``gateway import`` adds old rows to past periods). New rows
arriving (landings, logins, the reporting mirror's rounds, the rows of an import still
running) do not: they are what the reuse time allows for.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gateway.attribution import Params

REUSE_SECONDS = 600.0
"""``admin.data_driven_reuse_seconds``' default."""
MAX_KEPT = 32
"""Learnings kept at once, the least recently used dropped first: each is a few numbers per
channel."""
ROLLING_SLACK = timedelta(seconds=60)
"""How far before the moment it was learnt a period may end and still count as running up to
it (a request's "now" is taken before its learning starts)."""

Key = tuple[str | None, frozenset[str], str | None]
"""What a learning is of, besides its period: conversion name, verdicts counted, population."""


@dataclass(frozen=True, slots=True)
class Kept:
    """Weights learnt over ``since``..``until`` (``params``), and when."""

    key: Key
    since: datetime
    until: datetime
    at: datetime
    """Wall clock (UTC) when the learning began."""
    clock: float
    """``KeptWeights.clock()`` (``time.monotonic()``) when the learning began: its age."""
    rewrites: int
    """``Reports.rewrites`` then: a later write that can change the past drops it."""
    past: tuple[int, ...]
    """The store's counters of rewritten rows then (migrations 0009 and 0020: rows of
    touchpoints, conversions and bindings deleted or updated, by whatever process): when they
    moved, it no longer serves."""
    params: Params

    @property
    def rolling(self) -> bool:
        """Whether its period ran up to the moment it was learnt ("the last N days")."""
        return self.until >= self.at - ROLLING_SLACK

    def serves(self, since: datetime, until: datetime, now: datetime) -> bool:
        """Whether a report over ``since``..``until`` may credit with these weights: the same
        ends, or the same length ending later, up to ``now``, when this period ran up to its
        learning."""
        if (self.since, self.until) == (since, until):
            return True
        same_length = until - since == self.until - self.since
        return self.rolling and same_length and self.until <= until <= now + ROLLING_SLACK


class KeptWeights:
    """The learnings kept (``find``, ``keep``), and those due to be learnt again (``due``)."""

    def __init__(self, seconds: float = REUSE_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        """``seconds``: how long a learning serves; 0: never kept (every report learns);
        ``clock``: the monotonic clock a learning's age is read on. Used from the report
        worker thread (``find``, ``keep``) and the event loop (``drop``, ``take_due``): each
        holds the lock."""
        self.seconds = seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._kept: OrderedDict[tuple[Key, datetime, datetime], Kept] = OrderedDict()
        self.due: dict[tuple[Key, datetime, datetime], Kept] = {}
        """Learnings reused past half the reuse time, to learn again when the reports are done."""

    def find(
        self, key: Key, since: datetime, until: datetime, rewrites: int, past: tuple[int, ...] | None
    ) -> Kept | None:
        """The freshest learning that serves this report, if any (``rewrites`` and ``past``: as
        they are now; None: the store cannot say, nothing serves); noted as ``due`` when it is
        past half the reuse time."""
        if self.seconds <= 0 or past is None:
            return None
        clock, now = self.clock(), datetime.now(UTC)
        best: Kept | None = None
        with self._lock:
            for name, kept in list(self._kept.items()):
                if kept.rewrites != rewrites or kept.past != past or clock - kept.clock > self.seconds:
                    del self._kept[name]
                elif kept.key == key and kept.serves(since, until, now):
                    best = kept if best is None or kept.clock > best.clock else best
            if best is not None:
                self._kept.move_to_end((best.key, best.since, best.until))
                if clock - best.clock > self.seconds / 2:
                    self.due[best.key, best.since, best.until] = best
        return best

    def keep(self, kept: Kept, rewrites: int) -> None:
        """Keep ``kept`` unless a write that changes the past came since it began learning
        (``rewrites``: ``Reports.rewrites`` now), or the store cannot say (no counters)."""
        if self.seconds <= 0 or kept.rewrites != rewrites:
            return
        name = (kept.key, kept.since, kept.until)
        with self._lock:
            self._kept.pop(name, None)
            self._kept[name] = kept
            self.due.pop(name, None)
            while len(self._kept) > MAX_KEPT:
                self._kept.popitem(last=False)

    def drop(self) -> None:
        """Forget every learning (a write changed the past)."""
        with self._lock:
            self._kept.clear()
            self.due.clear()

    def take_due(self) -> list[Kept]:
        with self._lock:
            due, self.due = list(self.due.values()), {}
        return due

    def started(self) -> tuple[datetime, float]:
        """The wall clock and the monotonic clock of a learning beginning now."""
        return datetime.now(UTC), self.clock()
