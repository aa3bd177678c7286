"""Helpers the store tests share: reading a store file from outside the store under test."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from storage.local import LocalStore

OpenStore = Callable[..., Awaitable[LocalStore]]
"""The ``open_store`` fixture (``tests/storage/conftest.py``)."""


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
