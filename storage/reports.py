"""Attribution over the local store: credits per group, per day, path lengths, creator credits.

Reads conversions, identities and touchpoints (never writes). SQL does the joins in one
indexed, streamed query — each conversion of the period to every visitor (device) of its
user, through ``identities``, and to those visitors' touchpoints inside the widest lookback
window — and ``storage/crediting.py`` shares each conversion's value under the models of
``gateway/attribution.py``, in exact minor units.

Speed (a million touchpoints in about a second): the query runs on a plain ``sqlite3``
connection in a worker thread, so the event loop (and the proxy beside it) stays free, with
the garbage collector paused (``run``; a report makes a million short-lived tuples and no
cycles); a large report is cut into parts, one per report worker process (``map``,
``storage/report_pool.py``), whose sums are added up: slices of its conversions by id, or,
for ``data_driven``, which also learns from every journey that did not convert, shares of
the people (``storage/people.py``), so that each worker counts its people's journeys whole.

Which touchpoint columns exist is learned once, at ``open``: a ``verdict`` column (bot
scoring) is used when present, with the verdict changes of ``verdict_changes`` (an analyst's
override, else the latest re-score) applied in Python — the ``effective_touchpoints`` view's
answer, without its subquery per row; the verdict comes from the covering index of
migration 0008.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from itertools import groupby, pairwise
from operator import itemgetter
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite
import msgspec

from gateway.attribution import (
    Attribution,
    Moves,
    Params,
    add_moves,
    markov_moves,
    moves_weights,
    paths_moves,
    to_minor,
)
from gateway.channels import DIRECT, INTERNAL, Channels, Signals
from gateway.events import iso
from gateway.ids import id_floor
from storage.crediting import (
    Cand,
    Conv,
    Eligibility,
    Table,
    add_tables,
    credit_table,
    parse_ts,
)
from storage.people import Moved, People, Share, Snapshot
from storage.report_journeys import Journeys
from storage.report_period import (
    CONVERSIONS,
    Part,
    key_range,
    ms,
    period_bounds,
    period_conversions,
    visitor_column,
    window_start,
)
from storage.report_pool import WHOLE, ReportPool, Slice, WorkerDied

GROUPS = ("channel", "source", "medium", "campaign", "creator_id")
Clicks = dict[tuple[str, bool], int]
"""Creator clicks: (creator_id, quarantined) → touchpoints with that creator ID."""
Learning = tuple[datetime, datetime, str | None, frozenset[str], str | None, str]
"""What ``data_driven`` learns from: since, until, conversion name, accepted verdicts,
population, and the grouping the report then reads its conversions with."""
_decode = msgspec.json.Decoder(dict[str, str])
_T = TypeVar("_T")
log = logging.getLogger("gateway.reports")
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
_DIED = "a report worker process died; running this report in the gateway process"

# Signals to classify a row stored before channels existed; NULL for every other row.
_SIGNALS = (
    "CASE WHEN t.channel IS NULL THEN json_array(t.source, t.medium, t.campaign, t.click_id_kind, "
    "t.creator_id, t.referrer_host) END"
)


def _id_ms(uuid7: str) -> int:
    """The millisecond of a UUIDv7 (its first 48 bits)."""
    return int(uuid7[:8] + uuid7[9:13], 16)


def _paused_gc(fn: Callable[..., _T], *args: Any) -> _T:
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


class Reports:
    """Reports over one store file; ``open`` once, then ask as often as needed. Queries run
    one at a time on one read connection, in a worker thread."""

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
    ) -> None:
        """``processes``: worker processes for a large report (0: one per CPU core, at most
        ``MAX_PROCESSES``; 1: none, every report in this process); ``min_slice``: conversions a
        worker must get, at least, for a report to be cut into slices; ``min_share``: or
        touchpoints of the period, for ``data_driven`` to be shared out; ``worker_memory``:
        bytes a worker may hold once reports are done before a new one replaces it (0: never),
        ``recycle_after`` seconds after the last (``RECYCLE_AFTER``); ``on_shared``: called each
        time a report asked for is one already being computed, and waits for its answer (``run``
        with a ``key``: the gateway counts them in ``gateway_reports_shared_total``)."""
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
        self._everyone_kept: _Everyone | None = None
        self._db: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        self._shared: dict[tuple[int, Hashable], _Shared] = {}
        """The reports asked for with a ``key`` and not done yet, queued or computing, by the
        ``generation`` they were asked at and their key (``run``)."""
        self.generation = 0
        """How many writes that can change a report this process has made (``changed``)."""
        self.on_shared = on_shared
        self.recycle_after = RECYCLE_AFTER
        self._idle: asyncio.TimerHandle | None = None
        self._recycling: asyncio.Future[Any] | None = None
        self._closing = False
        self.source = "touchpoints"
        self.verdict = "NULL"
        self.changes = False
        # Rows naming no tier parameter (most) never have their raw parameters read.
        names = attribution.tiers.params
        self._tier_args = {f"tier_{i}": f'"{n}"' for i, n in enumerate(names)}

    async def open(self) -> None:
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA busy_timeout = 5000")
        db.execute("PRAGMA cache_size = -65536")  # 64 MiB of pages stay warm between reports
        self._db = db
        self._detect()

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

    async def detect(self) -> None:
        """Learn the schema again: the verdict column and the verdict_changes table, if any."""
        await self.run(self._detect)

    def _detect(self) -> None:
        db = self.db
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        columns = {row[1] for row in db.execute("PRAGMA table_info(touchpoints)")}
        self.verdict = "t.verdict" if "verdict" in columns else "NULL"
        # The effective verdict (an analyst's override, else the latest re-score, else as
        # scored) decides whether a touchpoint earns credit: the stored one comes with the
        # row, the (few) changes from their own table — the same answer as the
        # effective_touchpoints view, without its subquery per row.
        self.changes = "verdict_changes" in tables and "verdict" in columns

    @classmethod
    async def on(cls, db: aiosqlite.Connection, attribution: Attribution, channels: Channels) -> Reports:
        """Reports over the file an open connection reads (with its own connection; ``close`` it)."""
        async with db.execute("PRAGMA database_list") as cursor:
            path = next(row[2] for row in await cursor.fetchall() if row[1] == "main")
        reports = cls(Path(path), attribution, channels, processes=1)  # a short-lived reader: no workers
        await reports.open()
        return reports

    async def close(self) -> None:
        """Close the workers and the connection, once the report running (if any) is done: a
        cancelled request leaves its report running in the worker thread until it ends. The
        reports still queued are computed first, but those that no one waits for any more."""
        self._closing = True
        if self._idle is not None:
            self._idle.cancel()
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

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "Reports.open() was not awaited"
        return self._db

    def changed(self) -> None:
        """A write that can change what a report says has committed in this process (through
        the admin API, a round of the reporting mirror that stored rows, a retention purge):
        a report asked for from now on is computed anew, not answered by one asked for before
        the write, which may have read the store before it (``run``)."""
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
            shared = self._shared[asked] = _Shared()
            shared.task = asyncio.ensure_future(self._run_shared(shared, fn, *args))
            shared.task.add_done_callback(lambda _: self._unshare(asked, shared))
        elif self.on_shared is not None:
            self.on_shared()
        shared.waiters += 1
        try:
            return cast(_T, await asyncio.shield(shared.task))
        finally:
            shared.waiters -= 1

    async def _run_shared(self, shared: _Shared, fn: Callable[..., _T], *args: Any) -> _T:
        running = await self._in_thread(self._report, fn, *args)
        shared.started = True  # from here on it runs to its end, whoever waits
        running.add_done_callback(self._done)
        return await asyncio.shield(running)

    def _unshare(self, key: tuple[int, Hashable], shared: _Shared) -> None:
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
            return _paused_gc(fn, *args)
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

    def _recycle_idle(self, last: int) -> None:
        self._idle = None
        self._recycling = asyncio.ensure_future(self._in_thread(self._recycle, last))

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
        erased since), the whole report runs here instead: one answer, for the whole period.

        Blocking: call it inside ``run``."""
        if len(parts) > 1:
            schema = (self.source, self.verdict, self.changes, self.report)
            try:
                answers: list[_T | _StoreMoved] = self._pool.map(_in_worker, parts, schema, fn, args)
            except WorkerDied:
                log.warning(_DIED, exc_info=True)
            else:
                moved = next((a for a in answers if isinstance(a, _StoreMoved)), None)
                if moved is None:
                    return cast(list[_T], answers)
                log.info("%s; running this report in the gateway process", moved.why)
        return [fn(self, WHOLE, *args)]

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
        if rows were erased since). Kept for the rest of the report's call: ``_learn_part``
        asks twice."""
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
                raise Moved(
                    f"bindings or conversions were erased while a report ran ({bound} bindings"
                    f" and {len(rows)} conversions of the {part.bindings.rows} and"
                    f" {part.conversions.rows} it began with)"
                )
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
                sql = "SELECT rowid, id, visitor_key, user_key FROM identities WHERE rowid > ? ORDER BY id"
                new = db.execute(sql, (kept.rowid,)).fetchall()
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
                self._everyone_kept = _Everyone(people, inserted, changed, rowid or 0, newest or "", rows)
            return people
        finally:
            if began and db.in_transaction:
                db.execute("COMMIT")

    def _channel(self, signals: str) -> str:
        return self.channels.classify(Signals(*msgspec.json.decode(signals)))

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
        latest analyst change, else its latest re-score (as ``effective_touchpoints`` says).
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
            "SELECT touchpoint_id, verdict FROM verdict_changes"
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

    def learn(
        self,
        models: Iterable[str],
        since: datetime,
        until: datetime,
        conversion: str | None,
        accepted: frozenset[str],
        population: str | None = None,
        group_by: str = "channel",
    ) -> tuple[Params, list[Part]]:
        """The models' parameters, and the parts to ``map`` the report over. For
        ``data_driven``, Markov weights learnt from the period's journeys — the conversions'
        and those of everyone who left touchpoints in it — each worker counting those of its
        share of the people (``shares``); the conversions are read as the report will read
        them (``group_by``), and kept for it. Blocking: call it inside ``run``."""
        params = self.attribution.params
        if "data_driven" not in models:
            return params, self.slices(since, until, conversion)
        task = (since, until, conversion, accepted, population, group_by)
        moves, parts = self.count_moves(self.shares(since, until, conversion), task)
        return replace(params, channel_weights=moves_weights(moves)), parts

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
            "SELECT DISTINCT t.id, t.creator_id, t.verdict FROM verdict_changes c"
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

    async def credit(
        self,
        since: datetime,
        until: datetime,
        models: Sequence[str],
        group_by: str = "channel",
        *,
        conversion: str | None = None,
        verdicts: Iterable[str] | None = None,
        by_day: bool = False,
        population: str | None = None,
    ) -> Table:
        """Every model's credits of the period's conversions per (day, group, currency); with
        ``population``, of that population's touchpoints only (see ``read``)."""
        accepted = self.attribution.verdicts if verdicts is None else frozenset(verdicts)

        def compute() -> list[Table]:
            params, parts = self.learn(models, since, until, conversion, accepted, population, group_by)
            q = (since, until, models, group_by, conversion, accepted, by_day, population, params)
            return self.map(_credit_part, parts, *q)

        key = ("credit", since, until, tuple(models), group_by, conversion, accepted, by_day, population)
        return add_tables(await self.run(compute, key=key))


class _Shared:
    """A report asked for with a key (``Reports.run``): the task that queues and computes it,
    how many callers wait for it, and whether it has started (in the worker thread)."""

    def __init__(self) -> None:
        self.task: asyncio.Future[Any]
        self.waiters = 0
        self.started = False


def _forget(reports: Reports, part: Part) -> None:
    """In a worker, between reports: drop the bindings it kept (``Reports._everyone``)."""
    reports._everyone_kept = None


def _credit_part(
    reports: Reports,
    part: Part,
    since: datetime,
    until: datetime,
    models: Sequence[str],
    group_by: str,
    conversion: str | None,
    accepted: frozenset[str],
    by_day: bool,
    population: str | None,
    params: Params,
) -> Table:
    convs = reports.read(since, until, conversion, group_by, population, part)
    days = reports.attribution.zone if by_day else None
    return credit_table(reports.eligible, convs, models, group_by, accepted, params, days)


def _learn_part(
    reports: Reports,
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


def _touched(conv: Conv, widest: timedelta) -> bool:
    """Whether a touch of ``conv``'s devices lies in its widest lookback window (the boundary
    counts), whatever its verdict: which conversions a population's report keeps, the same
    whatever period it is asked for."""
    oldest = iso(conv.at - widest)
    return any(oldest <= c[0] <= conv.ts for c in conv.touches)


def _worker_reports(path: Path, attribution: Attribution, channels: Channels) -> Reports:
    """A report worker process's own ``Reports`` (``storage.report_pool``)."""
    reports = Reports(path, attribution, channels, processes=1)
    reports._open()
    return reports


def _in_worker(
    reports: Reports,
    part: Part,
    schema: tuple[str, str, bool, int],
    fn: Callable[..., _T],
    args: tuple[Any, ...],
) -> _T | _StoreMoved:
    """One slice in a worker process: with the caller's view of the schema (it may have
    learnt it again since) and its report's number, the collector paused as ``Reports.run``
    does. A slice of a report always goes to the same worker, so what a first pass kept
    (``read``) is there for the second."""
    reports.source, reports.verdict, reports.changes, reports.report = schema
    try:
        return _paused_gc(fn, reports, part, *args)
    except Moved as moved:
        return _StoreMoved(str(moved))
    finally:
        reports._people = reports._changes = None  # what one call reads twice; ``keep`` outlives it


@dataclass(slots=True)
class _Everyone:
    """``Reports._everyone``'s people, and where in the bindings they were read up to: the
    counters of migration 0009, the largest rowid, the newest id and the number of rows."""

    people: People
    inserted: int
    changed: int
    rowid: int
    newest: str
    rows: int


class _StoreMoved:
    """A worker's answer when its share's snapshot no longer held (``Moved``): the caller
    computes the whole report in one process instead."""

    def __init__(self, why: str) -> None:
        self.why = why
