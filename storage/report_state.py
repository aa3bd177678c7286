"""What a ``Reports`` is built with: the state every module it is made of reads and writes,
and its read connection.

``ReportState.__init__`` is the constructor of ``Reports`` (its worker processes, the sizes
at which a report is cut into parts, the memory a worker may keep); a report worker process
builds a ``Reports`` of its own (``_worker_reports``, ``storage/report_pool.py``). ``db`` is
the plain ``sqlite3`` connection every read goes through, opened by ``Reports.open``, used
one report at a time (``storage/report_runner.py``); nothing here writes.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.attribution import Attribution
from gateway.channels import Channels
from storage.crediting import Conv, Eligibility
from storage.people import People
from storage.report_kept import KeptWeights
from storage.report_pool import ReportPool

if TYPE_CHECKING:
    from storage.report_parts import Everyone
    from storage.report_runner import Shared
    from storage.reports import Reports


MIN_SLICE = 3_000
"""Conversions per worker process, at least, before a report is cut into parts: below that,
what every part repeats (the bindings read, the answers sent back) costs more than sharing
saves. Measured on the benchmark store: at 3,000 rather than 10,000, a 7-day ``linear``
report (6k conversions) took 18 % less time and a 14-day one (15k) 33 % less; earlier, at
10,000 rather than 25,000, 20-30-day reports took 35-45 % less."""
MIN_SHARE = 100_000
"""Touchpoints of the period per worker process, at least, before ``data_driven`` is shared
across them whatever the number of conversions: its learning reads every touchpoint of the
period, so a store with many visitors and few conversions is a large report too."""
MAX_PROCESSES = 8
RECYCLE_AFTER = 120.0
"""Seconds without a report after which workers holding too much memory are replaced."""


class ReportState:
    """What ``Reports`` is built with, and its read connection."""

    def __init__(
        self,
        path: Path,
        attribution: Attribution,
        channels: Channels,
        processes: int = 0,
        min_slice: int = MIN_SLICE,
        min_share: int = MIN_SHARE,
        worker_memory: int = 0,
        on_shared: Callable[[], None] | None = None,
        reuse_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``processes``: worker processes for a large report (0: one per CPU core, at most
        ``MAX_PROCESSES``; 1: none, every report in this process); ``min_slice``: conversions a
        worker must get, at least, for a report to be cut into slices; ``min_share``: or
        touchpoints of the period, for ``data_driven`` to be shared out; ``worker_memory``:
        bytes a worker may hold once reports are done before a new one replaces it (0: never),
        ``recycle_after`` seconds after the last (``RECYCLE_AFTER``); ``on_shared``: called each
        time a report asked for is one already being computed, and waits for its answer (``run``
        with a ``key``: the gateway counts them in ``gateway_reports_shared_total``);
        ``reuse_seconds``: how long ``data_driven``'s weights, once learnt, serve the reports
        over the same period (``storage/report_kept.py``; 0: every report learns them), their age
        read on ``clock`` (a test's own steps it through the reuse time without waiting)."""
        self.path, self.attribution, self.channels = path, attribution, channels
        self.worker_memory = worker_memory
        self.eligible = Eligibility(attribution)
        self.processes = processes or min(os.cpu_count() or 1, MAX_PROCESSES)
        self.min_slice, self.min_share = min_slice, min_share
        self._pool = ReportPool(self.processes, _worker_reports, (path, attribution, channels))
        self.report = 0
        """Which report this is (``_report`` counts them; a worker is told its caller's)."""
        self._kept: tuple[tuple[object, ...], list[Conv]] | None = None
        self._people: tuple[tuple[object, ...], People, list[tuple[Any, ...]] | None] | None = None
        self._changes: tuple[tuple[object, ...], dict[str, str]] | None = None
        self._everyone_kept: Everyone | None = None
        self._db: sqlite3.Connection | None = None
        self.unopened: str | None = None
        """Why the store cannot be read, while so (its disk full: ``gateway.reportstate``)."""
        self._lock = asyncio.Lock()
        self._shared: dict[tuple[int, Hashable], Shared] = {}
        """The reports asked for with a ``key`` and not done yet, queued or computing, by the
        ``generation`` they were asked at and their key (``run``)."""
        self.generation = 0
        """How many writes that can change a report this process has made or seen (``changed``,
        ``arrived``)."""
        self.rewrites = 0
        """How many of them could change the past (``changed``): each drops the kept weights."""
        self.weights = KeptWeights(reuse_seconds, clock)
        """``data_driven``'s weights kept between reports."""
        self._relearning: asyncio.Future[Any] | None = None
        self._retired = False
        """A reload replaced it (``retire``): it learns nothing in the background any more."""
        self.on_shared = on_shared
        self.recycle_after = RECYCLE_AFTER
        self._idle: asyncio.TimerHandle | None = None
        self._recycling: asyncio.Future[Any] | None = None
        self._closing = False
        self.source = "touchpoints"
        self.verdict = "NULL"
        self.changes = ""
        """Where the verdict changes that count are read (``live_verdict_changes``); "": none."""
        # Rows naming no tier parameter (most) never have their raw parameters read.
        names = attribution.tiers.params
        self._tier_args = {f"tier_{i}": f'"{n}"' for i, n in enumerate(names)}

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None and self.unopened is not None:
            from storage.queries import StoreUnavailable

            raise StoreUnavailable(self.unopened)  # the admin API's 503
        assert self._db is not None, "Reports.open() was not awaited"
        return self._db


def _worker_reports(path: Path, attribution: Attribution, channels: Channels) -> Reports:
    """A report worker process's own ``Reports`` (``storage.report_pool``)."""
    from storage.reports import Reports  # not at the top: storage.reports is built on this module

    reports = Reports(path, attribution, channels, processes=1)
    reports._open()
    return reports
