"""Writing what ``gateway import`` replays into the store.

Owns the batching of events into ``LocalStore`` submits (``BATCH`` events a
transaction, at most ``IN_FLIGHT`` queued: the next batch is built while the
last one commits; the first that fails to commit ends the import,
``CommitFailed``, or ``RunUndone`` once its run was undone while it ran; a
line whose rows the store refuses — a value SQLite cannot hold, a constraint —
is left out of its batch by the store, ``submit_each``, and counted as a skip
by its file:line, the rest of the batch stored; a batch it refuses every line
of ends the import, ``BatchRefused``), leaving out the rows of erased users
dated before their erasure (``storage.erased``: an old log would bring them
back) and the rows older than ``privacy.retention_days`` (the next purge would
delete them), and saying so when a commit waits on the write lock another
process holds (up to ``LOCK_WAIT``, then the import ends), and recording the
run's end (``end_run``), which waits for that lock as a commit does. The rows
the run added are counted from its record (``storage.imports.run_added``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.backfill import UNSTORABLE, Summary, unstorable_why
from gateway.events import Binding, Event, VerdictChange, iso
from gateway.importbindings import Bindings
from storage.erased import Erased, ErasedWatch
from storage.erasure import delete_late
from storage.importdry import DryRun
from storage.imports import EMPTY_SQL, FINISH_SQL, UNDONE, skipped_record
from storage.local import (
    LOCK_HOLDERS,
    LOCKED,
    RETRY_PAUSE,
    AllRefused,
    CommitTimeout,
    LocalStore,
    StoreClosed,
    locked,
)

BATCH = 8192
"""Events per store submit: one transaction each (multi-row INSERTs inside)."""
IN_FLIGHT = 2
"""Submits queued at once: the next batch is built while the last one commits."""
COUNTED = ("touchpoints", "identities", "conversions")
LOCK_WAIT = 600.0
"""Seconds a batch may wait to commit (another process holding the store's write lock) before
the import ends: long enough for the live gateway's longest write, not forever for a shell."""
WATCH = 1.0
"""Seconds between looks at the store while a commit is awaited: is it waiting on the lock?"""

log = logging.getLogger("gateway.import")


class CommitFailed(Exception):
    """A batch did not commit (the disk is full, the store's file system went read-only…): the
    batches before it did; the import ends there."""


class BatchRefused(CommitFailed):
    """The store refused every line of a batch, for one reason (``storage.local.AllRefused``:
    a trigger or constraint that no row meets): nothing of that batch was stored, and the
    import ends there rather than skip every line to the end."""

    def __init__(self, lines: int, first: tuple[str, int], last: tuple[str, int], error: Exception) -> None:
        at = f"{first[0]}:{first[1]}"
        to = f"{last[0]}:{last[1]}" if last != first else at
        super().__init__(f"{lines} lines ({at} to {to}): {UNSTORABLE}{unstorable_why(error)}")


class RunUndone(CommitFailed):
    """The import's run was undone while it ran (``gateway import --undo RUN``): the undo removed
    what it had committed, and the store refuses the rest (``storage.imports.UNDONE``), so the
    import ends there rather than write rows under a run no undo could remove again."""

    def __init__(self, run: int, at: tuple[str, int]) -> None:
        self.run = run
        super().__init__(
            f"run {run} was undone while it ran (gateway import --undo {run}), so the import stopped at"
            f" {at[0]}:{at[1]}: the undo removed what it had stored, and nothing after was stored;"
            " to import these files after all, run the same command again"
        )


def _seen(future: asyncio.Future[Any]) -> None:
    """Take a commit's failure as it happens: the first one ends the import, and the batches
    still in flight behind it (failed for the same reason) are not waited for, which asyncio
    would report with a traceback each as an exception never retrieved."""
    if not future.cancelled():
        future.exception()


@dataclass(slots=True)
class _Batch:
    """One submit in flight: its commit, its events and where each came from (file, line)."""

    future: asyncio.Future[list[tuple[int, int, Exception]]]
    events: list[Event]
    where: list[tuple[str, int]]


class Writer:
    """Events → the store in batches of ``BATCH``, at most ``IN_FLIGHT`` queued (None: dry run,
    each batch checked against the store instead, ``dry``)."""

    def __init__(
        self,
        store: LocalStore | None,
        erased: Erased | None = None,
        before: str = "",
        lock_wait: float = LOCK_WAIT,
        summary: Summary | None = None,
        watch: ErasedWatch | None = None,
        dry: DryRun | None = None,
    ) -> None:
        self.store = store
        self.dry = dry
        """A dry run's check of each batch against the store, which it never writes: what a
        real run would add (``storage.importdry``)."""
        self.checking: asyncio.Future[None] | None = None
        """The batch being checked (``dry``)."""
        self.summary = summary
        """Where a line the store refuses is counted as skipped (``Summary.refused``)."""
        self.lock_wait = lock_wait
        self.locked_since: float | None = None
        """While commits wait on another process's write lock: since when (monotonic)."""
        self.erased = erased or Erased({})
        self.first = dict(self.erased.since)
        """The erasures as the import began (a copy: the watch merges new ones into what it
        read, ``Erased.merge``): those made since are looked for at its end."""
        self.watch = watch
        """The store's erasures, read again when one was made since (the import reads on)."""
        self.before = before
        """Rows dated before this (UTC text, as events hold it) are past ``privacy.retention_days``
        (empty: it is 0, keep forever)."""
        self.pending: list[Event] = []
        self.where: list[tuple[str, int]] = []
        """The file and line each of ``pending`` came from."""
        self.inflight: list[_Batch] = []
        self.bindings = Bindings()
        """Which binding copies go to the store and are counted (``gateway.importbindings``)."""
        self.late_bindings: set[str] = set()
        """The ids of the bindings the store left out as late rows (``_left_out``), until their
        batch is settled: their pairs are not stored (``Bindings.settle``)."""

    async def see_erasures(self) -> None:
        """An erasure made since the last look (through the gateway, ``gateway erase``, applied
        by the central sync): the lines read from now on about its user, or a visitor erased
        with them, dated at or before it are left out (``Erased.keep``). Until 2026-12-07 the
        import knew only the erasures made before it began, and brought back what a later one
        deleted."""
        if self.watch is not None:
            self.erased = await self.watch.current()

    def _left_out(self, events: Sequence[Event]) -> None:
        """The store left these out as late rows of a user or visitor erased since this batch
        was sorted (``LocalStore.submit_each``): counted as the erased rows the import sorts out;
        and re-scores of landings it does not have (erased, expired, refused, never stored),
        counted apart (until 2026-12-07 as erased rows, where no one had been erased)."""
        if self.summary is not None:
            orphans = sum(1 for e in events if type(e) is VerdictChange)
            self.summary.no_touchpoint += orphans
            self.summary.erased += len(events) - orphans
        self.late_bindings.update(e.id for e in events if type(e) is Binding)

    async def drop_erased_since(self) -> int:
        """Once the last commit is in: the rows stored about a key erased since the import began,
        dated at or before that erasure, deleted; how many. The store's writer leaves such rows
        out of every commit made after the erasure (``_left_out``), so this finds none unless a
        writer of an older gateway shares the file. Any erasure made after this look finds
        every row the import committed and deletes it itself."""
        if self.store is None or self.watch is None:
            return 0
        now = await asyncio.to_thread(Erased.read, self.watch.path)
        since = [(key, at) for key, at in now.since.items() if at != self.first.get(key)]
        deleted = await delete_late(self.watch.path, since, "the import's deletes of an erased user's rows")
        return sum(deleted.values())

    def expired(self, events: list[Event]) -> tuple[list[Event], int]:
        """``events`` less those past retention, which a purge would delete within a day (the
        gateway's daily one, or ``gateway purge``); how many were left out."""
        if not self.before:
            return events, 0
        kept = [e for e in events if getattr(e, "ts", self.before) >= self.before]
        return kept, len(events) - len(kept)

    async def add(self, events: list[Event], name: str, lines: list[int]) -> None:
        """``events`` of the input ``name``, ``lines``: the line each came from."""
        self.pending.extend(events)
        self.where.extend([(name, number) for number in lines])
        if len(self.pending) >= BATCH:
            await self.flush()

    async def flush(self) -> None:
        if self.store is None or not self.pending:
            if self.dry is not None and self.pending:  # the copies the summary counts (no spare)
                await self._checked()  # one batch checked at a time, the next built meanwhile
                counted = [e for e in self.pending if not self.bindings.spare(e)]
                self.checking = asyncio.ensure_future(asyncio.to_thread(self.dry.check, counted))
            self.bindings.settle(self.pending, [], None)  # a dry run: as if committed
            self.pending, self.where = [], []
            return
        # Each line a part: its rows go in together, or it is left out and the others go in.
        future = self.store.submit_each(self.pending, self.where, erased=self._left_out)
        future.add_done_callback(_seen)
        self.inflight.append(_Batch(future, self.pending, self.where))
        self.pending, self.where = [], []
        while len(self.inflight) > IN_FLIGHT:
            await self._oldest()

    async def finish(self) -> None:
        await self.flush()
        while self.inflight:
            await self._oldest()
        await self._checked()

    async def _checked(self) -> None:
        """A dry run: wait for the last batch's check. Not cancelled with the import (a stop):
        ``finish`` waits for it again, rather than a check left running on the connection."""
        if self.checking is not None:
            await asyncio.wait([self.checking])
            checking, self.checking = self.checking, None
            checking.result()

    async def _oldest(self) -> None:
        """Wait for the oldest commit, and raise its failure. Shielded: an interrupted import
        (``until_stopped`` cancels it) waits for it again in ``finish``, rather than losing the
        commit's outcome with a future cancelled under the store."""
        batch = self.inflight[0]
        future = batch.future
        try:
            while not future.done():  # wait() leaves the future alone when the import is stopped
                await asyncio.wait([future], timeout=WATCH)
                self._watch_lock()
            refused = future.result()
        except CommitTimeout as err:
            if self.locked_since is None:
                raise CommitFailed(str(err)) from err
            raise CommitFailed(
                f"another process held its write lock for {_duration(self.lock_wait)} ({LOCK_HOLDERS});"
                " end that transaction (or wait for that write)"
            ) from err
        except (sqlite3.Error, StoreClosed) as err:
            if str(err) == UNDONE and self.store is not None:
                # The batches behind it are refused alike; once settled, the writer is idle.
                await asyncio.wait([later.future for later in self.inflight])
                self.inflight.clear()
                found = await self.store.on_writer("SELECT id FROM import_run_id")  # temp: no lock
                raise RunUndone(int(found[0][0]) if found else 0, batch.where[0]) from err
            raise CommitFailed(str(err)) from err
        except AllRefused as err:
            raise BatchRefused(err.parts, batch.where[0], batch.where[-1], err.error) from err
        self.inflight.pop(0)
        for start, end, error in refused:
            name, number = batch.where[start]
            if self.summary is not None:
                spared = self.bindings.spare  # a spare copy of a binding was never counted
                self.summary.refused(
                    name, number, [e for e in batch.events[start:end] if not spared(e)], error
                )
        late = self.late_bindings  # told before the batch's future is done (later batches' too)
        self.bindings.settle(batch.events, [(start, end) for start, end, _ in refused], self.summary, late)
        if late:
            late.difference_update(e.id for e in batch.events if type(e) is Binding)
        self._watch_lock()

    async def end_run(self) -> tuple[int, str]:
        """Once the last commit is in: the run's end and counts recorded (``FINISH_SQL``, with the
        signal that stopped it before every line was read, if one did, and what it skipped), waiting
        for another process's write lock up to ``lock_wait`` as a commit does; the run's number
        (0: none recorded, a dry run) and, when its end could not be recorded, why (the run then
        stays listed as not finished). An import that added no row is recorded now, finished
        (``_empty_run``)."""
        if self.store is None:
            return 0, ""
        # Stopped before every line was read: listed so (until 2026-12-07 as "finished").
        summary = self.summary
        stopped = (summary.interrupted or None) if summary is not None and not summary.read_all else None
        # Files that broke part way: the run did not import their rest, so it finishes no stopped
        # run of them (until 2026-12-08 ``--list`` said "nothing was left to import" of one).
        # (Not one found missing before any was read: the run names no such file.)
        failed = summary.failed if summary is not None else []
        broke = sorted({f.name for f in failed if f.error is not None and not f.before_any})
        unread = json.dumps(broke) if broke else None
        # What it skipped, by reason: ``--list`` says it (until 2026-12-08 only the summary did).
        skipped = skipped_record(summary.lines, summary.skipped) if summary is not None else None
        found = await self.store.on_writer("SELECT id FROM import_run_id")  # temp: no lock needed
        if not found:
            return await self._empty_run(stopped, unread, skipped), ""
        run = int(found[0][0])
        deadline = time.monotonic() + self.lock_wait
        waiting = False
        while True:
            try:
                await self.store.on_writer(FINISH_SQL, iso(datetime.now(UTC)), stopped, unread, skipped)
            except sqlite3.Error as err:
                if not locked(err):
                    return run, str(err)
                if time.monotonic() >= deadline:
                    held = _duration(self.lock_wait)
                    return run, f"another process held its write lock for {held} ({LOCK_HOLDERS})"
                if not waiting:
                    waiting = True
                    log.warning(
                        "waiting for the write lock of the store %s, which another process holds (%s),"
                        " to record the end of import run %d; the import waits up to %s for it",
                        self.store.path,
                        LOCK_HOLDERS,
                        run,
                        _duration(self.lock_wait),
                    )
                await asyncio.sleep(RETRY_PAUSE)
                continue
            if waiting:
                log.info("the store's write lock is free again: import run %d's end is recorded", run)
            return run, ""

    async def _empty_run(self, stopped: str | None, unread: str | None, skipped: str | None) -> int:
        """The import added no row (every line in the store already, or skipped): its run recorded
        all the same, finished with no row (``EMPTY_SQL``), so that ``--list`` shows the files
        read to their end (until 2026-12-07 none was: a run stopped part way whose rest added
        nothing was listed as to be finished for ever). One try, within the store's busy timeout
        (5 s), not the import's wait for a commit: there is nothing to undo, and another process
        holding the write lock is no reason to wait minutes or fail; the summary then says that
        no run was recorded (``Summary.unrecorded``). Its number, 0 then."""
        assert self.store is not None
        try:
            found = await self.store.on_writer(EMPTY_SQL, iso(datetime.now(UTC)), stopped, unread, skipped)
        except sqlite3.Error as err:
            if self.summary is not None:
                why = f"another process held its write lock ({LOCK_HOLDERS})" if locked(err) else str(err)
                self.summary.unrecorded = f"the store {self.store.path} could not record it: {why}"
            return 0
        return int(found[0][0]) if found else 0

    def _watch_lock(self) -> None:
        """Say once when commits begin to wait on another process's write lock, how long the
        import waits, and once when they go through again: the import looks stuck otherwise."""
        if self.store is None:
            return
        locked = self.store.failing is not None and self.store.failing[1] == LOCKED
        if locked and self.locked_since is None:
            self.locked_since = time.monotonic()
            log.warning(
                "waiting for the write lock of the store %s, which another process"
                " holds (%s); the import waits up to %s for it, then stops, keeping what it"
                " committed",
                self.store.path,
                LOCK_HOLDERS,
                _duration(self.lock_wait),
            )
        elif not locked and self.locked_since is not None and self.store.failing is None:
            log.info(
                "the store's write lock is free again, after %.0f s of waiting: the import goes on",
                time.monotonic() - self.locked_since,
            )
            self.locked_since = None


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} minutes" if seconds >= 120 else f"{seconds:g} s"
