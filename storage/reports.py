"""Attribution over the local store: credits per group, per day, path lengths, creator credits.

``Reports`` reads conversions, identities and touchpoints (never writes), and
``storage/crediting.py`` shares each conversion's value under the models of
``gateway/attribution.py``, in exact minor units. This module owns opening a store and the
crediting report (``credit``; with what ``data_driven`` learnt for it, ``credit_learnt``);
``Reports`` is put together from one class per concern, each in a module of its own:

- ``storage/report_state.py``: what it is built with, and its read connection;
- ``storage/report_runner.py``: a report run one at a time in a worker thread, shared by the
  callers asking for the same one;
- ``storage/report_workers.py``: a large report mapped over the report worker processes
  (``storage/report_pool.py``), and their upkeep;
- ``storage/report_parts.py``: a report cut into parts, and the people each part reads;
- ``storage/report_touches.py``: how touchpoints are read (index, verdicts, tiers, channels);
- ``storage/report_conversions.py``: the period's conversions with their candidate touches;
- ``storage/report_learning.py``: what ``data_driven`` learns from (and
  ``storage/report_journeys.py``, its journeys that did not convert);
- ``storage/report_clicks.py``: creator clicks;
- ``storage/report_period.py``: the SQL bounds of a period and of one part of it.

Landings per population (``population_counts``) are ``storage/populations.py``'s.

Speed (a million touchpoints in about a second): the query runs on a plain ``sqlite3``
connection in a worker thread, so the event loop (and the proxy beside it) stays free, with
the garbage collector paused (``run``; a report makes a million short-lived tuples and no
cycles); a large report is cut into parts, one per report worker process (``map``,
``storage/report_pool.py``), whose sums are added up: slices of its conversions by id, or,
for ``data_driven``, which also learns from every journey that did not convert, shares of
the people (``storage/people.py``), so that each worker counts its people's journeys whole.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path

import aiosqlite

from gateway.attribution import Attribution, Learnt, Params
from gateway.channels import Channels
from storage.crediting import Table, add_tables, credit_table
from storage.report_clicks import CreatorClicks
from storage.report_learning import ReportLearning
from storage.report_period import Part


class Reports(ReportLearning, CreatorClicks):
    """Reports over one store file; ``open`` once, then ask as often as needed. Queries run
    one at a time on one read connection, in a worker thread. Built with
    ``ReportState.__init__``; its concerns, one base class each, are listed above."""

    async def open(self) -> None:
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout = 5000")
            db.execute("PRAGMA cache_size = -65536")  # 64 MiB of pages stay warm between reports
        except BaseException:
            db.close()
            raise
        self._db, self.unopened = db, None
        self._detect()

    async def detect(self) -> None:
        """Learn the schema again: the verdict column and the verdict_changes table, if any."""
        await self.run(self._detect)

    @classmethod
    async def on(cls, db: aiosqlite.Connection, attribution: Attribution, channels: Channels) -> Reports:
        """Reports over the file an open connection reads (with its own connection; ``close`` it)."""
        async with db.execute("PRAGMA database_list") as cursor:
            path = next(row[2] for row in await cursor.fetchall() if row[1] == "main")
        reports = cls(Path(path), attribution, channels, processes=1)  # a short-lived reader: no workers
        await reports.open()
        return reports

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
        credited, _ = await self.credit_learnt(
            since,
            until,
            models,
            group_by,
            conversion=conversion,
            verdicts=verdicts,
            by_day=by_day,
            population=population,
        )
        return credited

    async def credit_learnt(
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
    ) -> tuple[Table, Learnt | None]:
        """``credit``'s table, and, when ``models`` hold ``data_driven``, what it learnt (the
        journeys, each channel's removal effect and weight), as the reports show it beside
        their credits: one learning, the one the credits were shared out with."""
        accepted = self.attribution.verdicts if verdicts is None else frozenset(verdicts)

        def compute() -> tuple[Table, Learnt | None]:
            params, parts = self.learn(models, since, until, conversion, accepted, population, group_by)
            q = (since, until, models, group_by, conversion, accepted, by_day, population, params)
            return add_tables(self.map(_credit_part, parts, *q)), params.learnt

        key = ("credit", since, until, tuple(models), group_by, conversion, accepted, by_day, population)
        return await self.run(compute, key=key)


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
