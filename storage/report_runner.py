"""How ``Reports`` runs a report: in a worker thread, one at a time, so the event loop (and
the proxy beside it) stays free (``run``).

A report asked for again while it is queued or computing waits for that one's answer
instead of queueing another, unless a write that can change it came between (``changed``);
a caller that stops waiting stops nothing. Once no report has followed for
``recycle_after`` seconds, the worker processes are tidied (``_done``,
``storage/report_workers.py``). ``close`` lets the report running, if any, end first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable
from typing import Any, TypeVar, cast

from storage.report_kept import Kept
from storage.report_workers import ReportWorkers, paused_gc

_T = TypeVar("_T")
log = logging.getLogger("gateway.reports")
RELEARN_QUIET = 1.0
"""Seconds without a report asked for before kept weights are learnt again in the background."""


class ReportRunner(ReportWorkers):
    """How a report runs: one at a time in the worker thread, shared by the callers asking for
    the same."""

    async def close(self) -> None:
        """Close the workers and the connection, once the report running (if any) is done: a
        cancelled request leaves its report running in the worker thread until it ends. The
        reports still queued are computed first, but those that no one waits for any more."""
        self._closing = True
        if self._idle is not None:
            self._idle.cancel()
        if self._relearning is not None:  # waiting for the reports to be done, or learning
            self._relearning.cancel()
        if self._recycling is not None:  # the replacement has started (or found nothing to do)
            await asyncio.wait([self._recycling])
        for key, shared in list(self._shared.items()):
            if not shared.waiters and not shared.started:  # queued, and its callers have left
                self._unshare(key, shared)
                shared.task.cancel()
        async with self._lock:  # the report or replacement running (if any) has ended
            pass
        await asyncio.to_thread(self._pool.close)
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.to_thread(db.close)

    def retire(self) -> None:
        """A reload swapped in another engine: the requests that took this one still end here,
        but what it learns in the background would serve no one (``_relearn``)."""
        self._retired = True
        self.weights.drop()
        if self._relearning is not None:
            self._relearning.cancel()

    def changed(self) -> None:
        """A write that can change what a report says has committed in this process (through
        the admin API, a retention purge, an erasure seen): a report asked for from now on is
        computed anew, not answered by one asked for before the write, which may have read the
        store before it (``run``), nor credited with ``data_driven`` weights learnt before it
        (``storage/report_kept.py``)."""
        self.generation += 1
        self.rewrites += 1
        self.weights.drop()

    def arrived(self) -> None:
        """New rows were stored in this process (a round of the reporting mirror): as
        ``changed``, but the kept ``data_driven`` weights still serve (they are kept for the
        new rows of a few minutes)."""
        self.generation += 1

    async def run(self, fn: Callable[..., _T], *args: Any, key: Hashable | None = None) -> _T:
        """``fn(*args)`` in the worker thread, one at a time (CPU-heavy work leaves the loop free).
        A caller that stops waiting (a request cancelled) leaves its report running until it
        ends, and the next report waits for that: they share one connection and one pool.

        ``key``: what makes the answer, whole (the report's kind and every parameter it is
        computed with, normalised: an instant, not its spelling; the verdicts counted, not
        "the configured ones"). A call whose key is that of a report still queued or computing
        does not queue another: it waits for that one's answer, or its error (a dashboard's
        **Try again**, or a report asked again after a client gave up, gets the first run's
        answer as soon as it is ready, not a second run behind it). Only one asked for at the
        same ``generation``, though: after a write that can change the answer (``changed``: an
        analyst's verdict, an erasure…), the report asked for again queues a run of its own,
        which reads the store as the write left it. A caller that stops waiting
        stops nothing: the report keeps its place in the queue, runs, and answers whoever waits
        then (``close`` drops those that no one waits for and have not started). The answer is
        the same object for every caller: they must not change it."""
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if key is None:
            running = await self._in_thread(self._report, fn, *args)
            running.add_done_callback(self._done)
            return await asyncio.shield(running)
        asked = (self.generation, key)
        shared = self._shared.get(asked)
        if shared is None:
            shared = self._shared[asked] = Shared()
            shared.task = asyncio.ensure_future(self._run_shared(shared, fn, *args))
            shared.task.add_done_callback(lambda _: self._unshare(asked, shared))
        elif self.on_shared is not None:
            self.on_shared()
        shared.waiters += 1
        try:
            return cast(_T, await asyncio.shield(shared.task))
        finally:
            shared.waiters -= 1

    async def _run_shared(self, shared: Shared, fn: Callable[..., _T], *args: Any) -> _T:
        running = await self._in_thread(self._report, fn, *args)
        shared.started = True  # from here on it runs to its end, whoever waits
        running.add_done_callback(self._done)
        return await asyncio.shield(running)

    def _unshare(self, key: tuple[int, Hashable], shared: Shared) -> None:
        if self._shared.get(key) is shared:
            del self._shared[key]

    async def _in_thread(self, fn: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        """``fn(*args)`` started in the worker thread once the call before it has ended; the
        next waits for it to end, whoever waits for its answer."""
        await self._lock.acquire()
        try:
            running = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        except BaseException:
            self._lock.release()
            raise
        running.add_done_callback(lambda _: self._lock.release())
        return running

    def _report(self, fn: Callable[..., _T], *args: Any) -> _T:
        self.report += 1
        try:
            return paused_gc(fn, *args)
        finally:
            self._kept = self._people = self._changes = None

    def _done(self, _: asyncio.Future[Any]) -> None:
        """After a report: once no other follows for ``recycle_after`` seconds, every process
        forgets the bindings it kept (``_everyone``: an erased user's keys stay in memory no
        longer than that), and the workers left holding too much memory are replaced
        (``_recycle``). Not at once: reports come in runs (a dashboard, a report and its export),
        and replaced after every report, the workers were still starting when the next came (a
        90-day ``linear`` over a million touchpoints took 2.1 s instead of 1.6; 1.5 s once they
        had started)."""
        if self._idle is not None:  # a report that overlapped this one armed it
            self._idle.cancel()
            self._idle = None
        if (self._pool.pids or self._everyone_kept is not None) and not self._closing:
            loop = asyncio.get_running_loop()
            self._idle = loop.call_later(self.recycle_after, self._recycle_idle, self.report)
        if self.weights.due and self._relearning is None and not (self._closing or self._retired):
            self._relearning = asyncio.ensure_future(self._relearn())
            self._relearning.add_done_callback(self._relearnt)

    def relearn(self, kept: Kept) -> None:
        """Learn ``kept``'s weights again and keep them (``ReportLearning.relearn``)."""
        raise NotImplementedError

    async def _relearn(self) -> None:
        """Learn again the ``data_driven`` weights reports reused past half their reuse time,
        once no report has been asked for in the last ``RELEARN_QUIET`` seconds (a dashboard asks
        for its parts together), each in the queue as a report without a caller."""
        while self.weights.due:
            quiet = self.report
            await asyncio.sleep(RELEARN_QUIET)
            if self.report != quiet or self._shared or self._lock.locked():
                continue
            for kept in self.weights.take_due():
                await self.run(self.relearn, kept)

    def _relearnt(self, done: asyncio.Future[None]) -> None:
        self._relearning = None
        if not done.cancelled() and done.exception() is not None:
            log.warning(
                "data_driven's weights could not be learnt again in the background (%s); the next"
                " report learns them",
                done.exception(),
                exc_info=done.exception(),
            )

    def _recycle_idle(self, last: int) -> None:
        self._idle = None
        self._recycling = asyncio.ensure_future(self._in_thread(self._recycle, last))


class Shared:
    """A report asked for with a key (``Reports.run``): the task that queues and computes it,
    how many callers wait for it, and whether it has started (in the worker thread)."""

    def __init__(self) -> None:
        self.task: asyncio.Future[Any]
        self.waiters = 0
        self.started = False
