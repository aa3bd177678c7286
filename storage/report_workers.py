"""The side of ``Reports`` that talks to its worker processes (``storage/report_pool.py``): a
large report mapped over its parts (``map``), one part computed in a worker (``_in_worker``),
the workers started early (``warm``) and tidied after a run of reports (``_recycle``: the
bindings they kept forgotten, those holding too much memory replaced).

The cyclic garbage collector is paused while a report runs, here and in the workers
(``paused_gc``): a report makes a million short-lived tuples and no cycles. If a worker dies,
or a share's snapshot no longer holds, the whole report runs in this process instead.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from storage.people import Moved
from storage.report_period import Part
from storage.report_pool import WHOLE, WorkerDied
from storage.report_state import ReportState

if TYPE_CHECKING:
    from storage.reports import Reports


_T = TypeVar("_T")
log = logging.getLogger("gateway.reports")
_DIED = "a report worker process died (%s); running this report in the gateway process"


def paused_gc(fn: Callable[..., _T], *args: Any) -> _T:
    """``fn(*args)`` with the cyclic garbage collector paused. A report makes a million
    short-lived tuples and no cycles; each collection the allocations triggered walked all of
    them (a quarter of a report's time). Reference counting still frees everything."""
    paused = gc.isenabled()
    gc.disable()
    try:
        return fn(*args)
    finally:
        if paused:
            gc.enable()


class ReportWorkers(ReportState):
    """A large report across the worker processes, and their upkeep."""

    async def warm(self) -> None:
        """Start the worker processes now if the store is large enough for a report to be shared
        across them, so the first such report does not wait for them (about half a second)."""
        await asyncio.to_thread(self._warm)

    def _warm(self) -> None:
        if self.processes < 2:
            return
        try:
            (conversions,) = self.db.execute("SELECT count(*) FROM conversions").fetchone()
            # data_driven is shared by touchpoints too: their rowid span (two lookups, not a count)
            (rows,) = self.db.execute("SELECT max(rowid) - min(rowid) + 1 FROM touchpoints").fetchone()
        except sqlite3.OperationalError:  # a store not migrated yet
            return
        if conversions >= 2 * self.min_slice or (conversions and (rows or 0) >= 2 * self.min_share):
            self._pool.start()

    def _recycle(self, last: int) -> None:
        """Replace the workers holding more than ``worker_memory`` (Python keeps what a large
        report freed for its own reuse): a new process holds about 50 MB. Not if a report ran
        since report ``last`` (its own timer decides), nor once the reports are closing."""
        if self.report != last or self._closing:
            return
        self._everyone_kept = None
        try:
            if self._pool.pids:
                self._pool.map(_forget, [WHOLE] * len(self._pool.pids))
            replaced = self._pool.recycle(self.worker_memory) if self.worker_memory else []
        except Exception as err:  # a worker died, or a new one could not start: the next report starts them
            log.warning("could not tidy the report workers (the next large report starts new ones): %s", err)
            self._pool.close(kill=True)
            return
        for pid, held in replaced:
            log.info(
                "report worker %d held %d MB after its last report (over"
                " admin.report_worker_memory_mb); replaced by a new one",
                pid,
                held // 2**20,
            )

    def map(self, fn: Callable[..., _T], parts: list[Part], *args: Any) -> list[_T]:
        """``fn(self, part, *args)`` for each part of a report (``slices``, ``shares``): one
        call over the whole period, or — a large period — one per part, each in a worker
        process (with that process's ``Reports``); the answers in part order, for the caller
        to add up. If a worker dies, or a share's snapshot no longer holds (``Moved``: rows
        erased since, or committed since within its snapshot), the whole report runs here
        instead: one answer, for the whole period.

        Blocking: call it inside ``run``."""
        if len(parts) > 1:
            schema = (self.source, self.verdict, self.changes, self.report)
            try:
                answers: list[_T | _StoreMoved] = self._pool.map(_in_worker, parts, schema, fn, args)
            except WorkerDied as died:  # expected (the OOM killer): one line saying how, no traceback
                log.warning(_DIED, died)
            else:
                moved = next((a for a in answers if isinstance(a, _StoreMoved)), None)
                if moved is None:
                    return cast(list[_T], answers)
                log.info("%s; running this report in the gateway process", moved.why)
        return [fn(self, WHOLE, *args)]


def _forget(reports: Reports, part: Part) -> None:
    """In a worker, between reports: drop the bindings it kept (``Reports._everyone``)."""
    reports._everyone_kept = None


def _in_worker(
    reports: Reports,
    part: Part,
    schema: tuple[str, str, str, int],
    fn: Callable[..., _T],
    args: tuple[Any, ...],
) -> _T | _StoreMoved:
    """One slice in a worker process: with the caller's view of the schema (it may have
    learnt it again since) and its report's number, the collector paused as ``Reports.run``
    does. A slice of a report always goes to the same worker, so what a first pass kept
    (``read``) is there for the second."""
    reports.source, reports.verdict, reports.changes, reports.report = schema
    try:
        return paused_gc(fn, reports, part, *args)
    except Moved as moved:
        return _StoreMoved(str(moved))
    finally:
        reports._people = reports._changes = None  # what one call reads twice; ``keep`` outlives it


class _StoreMoved:
    """A worker's answer when its share's snapshot no longer held (``Moved``): the caller
    computes the whole report in one process instead."""

    def __init__(self, why: str) -> None:
        self.why = why
