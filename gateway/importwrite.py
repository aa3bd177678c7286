"""Writing what ``gateway import`` replays into the store, and counting what the store gained.

Owns the batching of events into ``LocalStore`` submits (``BATCH`` events a
transaction, at most ``IN_FLIGHT`` queued: the next batch is built while the
last one commits; the first that fails to commit ends the import,
``CommitFailed``), leaving out the rows of erased users dated before their
erasure (``storage.erased``: an old log would bring them back) and the rows older
than ``privacy.retention_days`` (the next purge would delete them), and the row
counts before and after an import (a re-import gains none). Blocking:
``count_rows`` is called off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

from gateway.events import Event
from storage.erased import Erased
from storage.local import CommitTimeout, LocalStore, StoreClosed

BATCH = 8192
"""Events per store submit: one transaction each (multi-row INSERTs inside)."""
IN_FLIGHT = 2
"""Submits queued at once: the next batch is built while the last one commits."""
COUNTED = ("touchpoints", "identities", "conversions")


class CommitFailed(Exception):
    """A batch did not commit (the disk is full, the store's file system went read-only…): the
    batches before it did; the import ends there."""


def _seen(future: asyncio.Future[None]) -> None:
    """Take a commit's failure as it happens: the first one ends the import, and the batches
    still in flight behind it (failed for the same reason) are not waited for, which asyncio
    would report with a traceback each as an exception never retrieved."""
    if not future.cancelled():
        future.exception()


def count_rows(path: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return {table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in COUNTED}


class Writer:
    """Events → the store in batches of ``BATCH``, at most ``IN_FLIGHT`` queued (None: dry run)."""

    def __init__(self, store: LocalStore | None, erased: Erased | None = None, before: str = "") -> None:
        self.store = store
        self.erased = erased or Erased({})
        self.before = before
        """Rows dated before this (UTC text, as events hold it) are past ``privacy.retention_days``
        (empty: it is 0, keep forever)."""
        self.pending: list[Event] = []
        self.inflight: list[asyncio.Future[None]] = []

    def expired(self, events: list[Event]) -> tuple[list[Event], int]:
        """``events`` less those past retention, which a purge would delete within a day (the
        gateway's daily one, or ``gateway purge``); how many were left out."""
        if not self.before:
            return events, 0
        kept = [e for e in events if getattr(e, "ts", self.before) >= self.before]
        return kept, len(events) - len(kept)

    async def add(self, events: list[Event]) -> None:
        self.pending.extend(events)
        if len(self.pending) >= BATCH:
            await self.flush()

    async def flush(self) -> None:
        if self.store is None or not self.pending:
            self.pending = []
            return
        future = self.store.submit(self.pending)
        future.add_done_callback(_seen)
        self.inflight.append(future)
        self.pending = []
        while len(self.inflight) > IN_FLIGHT:
            await self._oldest()

    async def finish(self) -> None:
        await self.flush()
        while self.inflight:
            await self._oldest()

    async def _oldest(self) -> None:
        """Wait for the oldest commit, and raise its failure. Shielded: an interrupted import
        (``until_stopped`` cancels it) waits for it again in ``finish``, rather than losing the
        commit's outcome with a future cancelled under the store."""
        try:
            await asyncio.shield(self.inflight[0])
        except (sqlite3.Error, StoreClosed, CommitTimeout) as err:
            raise CommitFailed(str(err)) from err
        self.inflight.pop(0)
