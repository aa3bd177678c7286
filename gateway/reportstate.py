"""What the admin API reports with, and its reload: the report engine over ``[attribution]``
(with the channel rules it classifies rows stored before channels by), over this node's store or
the reporting mirror (``central.mirror_path``: every node's rows), the payout rules of
``[payouts]``, and the time zone a date alone means (``attribution.timezone``).

A reload (SIGHUP) swaps them: new payout rules at once, and, when ``[attribution]`` or
``[channels]`` changed, a new engine (its own connection and worker processes) opened before
anything of the reload is swapped in (``prepare``, then ``apply``: a new engine that cannot
open refuses the whole reload); the one it replaces is closed once the requests that took it have had time
to end (``proxy.shutdown_grace``), after the report it runs, if any. A request takes what it
uses once, so a reload during it does not mix two configurations.

``changed`` is how this process's writes (the admin API's, the mirror's rounds, the retention
purge) keep a report asked for after them from being answered by one in flight since before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, tzinfo
from pathlib import Path

from aiohttp import web

from gateway.attribution import Attribution
from gateway.config import Settings
from gateway.payouts import Payouts
from storage.access import full_disk
from storage.local import OPEN_RETRY
from storage.queries import Reader
from storage.reports import Reports

log = logging.getLogger("gateway")


def report_engine(settings: Settings, on_shared: Callable[[], None] | None = None) -> Reports:
    """Over the reporting mirror when there is one (``central.mirror_path``), else this node's
    store; ``on_shared``: see ``Reports``."""
    return Reports(
        settings.report_path,
        Attribution(settings.options.attribution),
        settings.channels,
        settings.options.admin.report_processes,
        worker_memory=settings.options.admin.report_worker_memory_mb * 2**20,
        on_shared=on_shared,
        reuse_seconds=settings.options.admin.data_driven_reuse_seconds,
    )


@dataclass(frozen=True)
class Prepared:
    """A reload's report settings, ready to swap in (``Reporting.prepare``)."""

    settings: Settings
    payouts: Payouts
    engine: Reports | None
    """A new engine for changed ``[attribution]`` or ``[channels]``; None: the running one goes on."""


class Reporting:
    def __init__(self, settings: Settings, on_shared: Callable[[], None] | None = None) -> None:
        """``on_shared``: called for each report that waited for an identical one in flight
        (``Reports.run``), by every engine this one swaps in."""
        self.settings = settings
        self.on_shared = on_shared
        self.reports = report_engine(settings, on_shared)
        self.source = "local" if settings.mirror_path is None else "mirror"
        """The store the reports read, in their JSON: this node's own or the reporting mirror
        (``central`` is restart-only, as the engine's file)."""
        self.payouts = Payouts(settings.options.payouts)
        self.reader: Reader | None = None
        """The fraud report's and the dashboard's reader of the mirror (None: no mirror; they
        read the admin API's own reader)."""
        self._retiring: dict[asyncio.Task[None], Reports] = {}
        self._opened = False
        self._opener: asyncio.Task[None] | None = None  # ``_open_later``, while the disk is full
        """Whether this admin app is served here: a proxy worker other than the first keeps one
        it never opens, and a reload there must not open one (a connection, worker processes)."""

    @property
    def timezone(self) -> str:
        """``attribution.timezone``, the IANA name (checked when the config was read); ``UTC``
        however it was written (``Z``, ``utc``: no browser knows a zone ``Z``)."""
        return "UTC" if self.zone is UTC else self.settings.options.attribution.timezone

    @property
    def zone(self) -> tzinfo:
        return self.settings.report_zone

    def changed(self) -> None:
        """A write made in this process that can change what a report says has committed: the
        reports asked for from now on are computed anew, not answered by one asked for before
        it (``Reports.changed``; the engines a reload retires too, for the requests that took
        one)."""
        for engine in (self.reports, *self._retiring.values()):
            engine.changed()

    def arrived(self) -> None:
        """New rows were stored in this process (the reporting mirror's rounds): as ``changed``,
        the kept ``data_driven`` weights still serving (``Reports.arrived``)."""
        for engine in (self.reports, *self._retiring.values()):
            engine.arrived()

    async def open(self) -> None:
        mirror = self.settings.mirror_path
        if mirror is not None:
            from storage.mirror import prepare  # asyncpg: the postgres extra

            try:
                await prepare(mirror)
            except sqlite3.Error:
                # A mirror there on a full disk (beside the store, most often): read once it has
                # room, the site served meanwhile. Until 2026-12-07 this failed the start.
                if not await asyncio.to_thread(_full_and_there, mirror):
                    raise
            self.reader = Reader(mirror)
            await self.reader.open(retry=_nothing)  # its reads answer 503 until then
        try:
            await self.reports.open()
        except sqlite3.Error as err:
            full = await asyncio.to_thread(full_disk, self.reports.path)
            if full is None or not await asyncio.to_thread(self.reports.path.is_file):
                raise
            # A store on a full disk (its -shm cannot be made): the site is served meanwhile, and
            # the reports answer 503 until it can be read, tried every OPEN_RETRY seconds.
            self.reports.unopened = (
                f"the store {self.reports.path} cannot be read: its disk is full ({full}); free space there"
            )
            log.error(
                "%s (reports tried again every %g s; SQLite: %s)", self.reports.unopened, OPEN_RETRY, err
            )
            self._opener = asyncio.create_task(self._open_later(), name="reports-open")
        else:
            await self.reports.warm()
        self._opened = True

    async def _open_later(self) -> None:
        while True:
            await asyncio.sleep(OPEN_RETRY)
            with contextlib.suppress(sqlite3.Error):
                await self.reports.open()
                await self.reports.warm()
                return

    async def close(self) -> None:
        if self._opener is not None:
            self._opener.cancel()
            await asyncio.gather(self._opener, return_exceptions=True)
        for task, engine in list(self._retiring.items()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await engine.close()
        await self.reports.close()
        if self.reader is not None:
            await self.reader.close()

    async def prepare(self, settings: Settings) -> Prepared:
        """What a reload to ``settings`` (restart-only keys kept) would swap in, made ready:
        the payout rules, and, when ``[attribution]`` or ``[channels]`` changed, a new engine,
        opened where this app is served. Raises what opening it raised (the store unreadable
        just now), leaving nothing open: the reload then applies nothing."""
        payouts = Payouts(settings.options.payouts)
        before = self.settings.options
        changed = (
            settings.options.attribution != before.attribution or settings.options.channels != before.channels
        )
        if not changed:
            return Prepared(settings, payouts, None)
        engine = report_engine(settings, self.on_shared)
        if self._opened:
            try:
                await engine.open()
                await engine.warm()
            except BaseException:
                await engine.close()
                raise
        return Prepared(settings, payouts, engine)

    def apply(self, prepared: Prepared) -> None:
        """Swap in what ``prepare`` made ready (nothing here can fail); the engine replaced is
        closed once the requests that took it have had time to end."""
        self.payouts = prepared.payouts
        if prepared.engine is not None and not self._opened:
            self.reports = prepared.engine
        elif prepared.engine is not None:
            previous, self.reports = self.reports, prepared.engine
            previous.retire()
            grace = prepared.settings.options.proxy.shutdown_grace
            task = asyncio.create_task(self._retire(previous, grace))
            self._retiring[task] = previous
            task.add_done_callback(lambda done: self._retiring.pop(done, None))
        self.settings = prepared.settings

    @staticmethod
    async def _retire(engine: Reports, grace: float) -> None:
        await asyncio.sleep(grace)
        await engine.close()


REPORTING_KEY = web.AppKey("reporting", Reporting)


def _full_and_there(path: Path) -> bool:
    """The file is there and its disk is full (``full_disk``): opened once it has room."""
    return full_disk(path) is not None and path.is_file()


async def _nothing() -> None:
    """What the mirror's reader does once it opens late: nothing more (the reports open on their own)."""
