"""Helpers the store tests share: a touchpoint to write, reading a store file from outside the
store under test, and one model's credits per channel."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosqlite

from gateway.attribution import Attribution
from gateway.channels import Channels
from gateway.events import Touchpoint, iso
from gateway.ids import uuid7
from storage.crediting import ChannelCredit, channel_credits
from storage.local import LocalStore
from storage.reports import Reports

OpenStore = Callable[..., Awaitable[LocalStore]]
"""The ``open_store`` fixture (``tests/storage/conftest.py``)."""


def landing(at: datetime, visitor: str, **fields: Any) -> Touchpoint:
    """A touchpoint of ``visitor`` at ``at`` (its id minted from that time), written by node
    ``a`` unless ``fields`` say otherwise; ``fields`` set any other column."""
    return Touchpoint(
        id=uuid7(int(at.timestamp() * 1000)), ts=iso(at), **{"node": "a", **fields}, visitor_key=visitor
    )


def query(path: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    """``sql``'s rows, on a connection of its own (blocking)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(sql, args).fetchall()


async def read(path: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    """``query`` off the event loop."""
    return await asyncio.to_thread(query, path, sql, *args)


def execute(path: Path, sql: str) -> None:
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.executescript(sql)


async def credits_by_channel(
    db: aiosqlite.Connection,
    attribution: Attribution,
    channels: Channels,
    model: str,
    since: datetime,
    until: datetime,
    *,
    verdicts: Iterable[str] | None = None,
    population: str | None = None,
) -> list[ChannelCredit]:
    """``model``'s credits of the conversions with ``since <= ts < until`` per channel and
    currency, largest value first (``Reports.credit`` on the file ``db`` reads)."""
    reports = await Reports.on(db, attribution, channels)
    try:
        table = await reports.credit(since, until, [model], verdicts=verdicts, population=population)
    finally:
        await reports.close()
    return channel_credits(table, model)[None]


WITHDRAWN_OVERRIDES = (
    # Touchpoints whose analyst override was withdrawn and whose verdict is now another: a
    # generated store must hold some, or the withdrawal's reading goes untested.
    "SELECT count(*) FROM effective_touchpoints e WHERE e.verdict_origin IS NOT 'analyst'"
    " AND EXISTS (SELECT 1 FROM verdict_changes c"
    " WHERE c.touchpoint_id = e.id AND c.origin = 'analyst_cleared')"
    " AND coalesce(e.effective_verdict, 'allow') != (SELECT a.verdict FROM verdict_changes a"
    " WHERE a.touchpoint_id = e.id AND a.origin = 'analyst' ORDER BY a.id DESC LIMIT 1)"
)
