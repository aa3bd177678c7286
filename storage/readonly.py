"""Connections that only read the store: for the commands that read it (``report``'s kin,
``import --list``, the doctor) and every ``--dry-run``, which must not be able to write it.

Owns ``read_only`` (blocking) and ``open_read_only`` (aiosqlite): the file opened
``?mode=ro``, so SQLite refuses every write and never creates the file. A store in WAL mode is
read through its ``-wal`` and ``-shm`` files; while the gateway runs they are there, and its.
A stopped store has neither, and a read-only connection makes both and cannot remove them (only
a connection that may write does, closing last): until 2026-12-07 every such read left them
empty beside the store, its reader's. Root's SQLite gives them the store's owner and mode, but
another user's (an operator allowed to write the folder through a group) keeps them, and the
gateway's user could then neither start (``cannot open the store``) nor write. Now a connection
that found the store stopped hands it back stopped when it closes: SQLite's own cleanup, run by
a connection that reads nothing but the schema, removes them — only when the ``-wal`` is still
empty and no other connection has the store open (it needs the store's exclusive lock, which
any other holder's shared lock refuses), so a gateway started meanwhile keeps its files.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import threading
import urllib.parse
from pathlib import Path
from typing import Any

import aiosqlite

__all__ = ["open_read_only", "read_only", "stopped"]


def _uri(path: Path, mode: str = "ro") -> str:
    """``path`` as a ``file:`` URI, whatever its name holds: SQLite reads a ``?`` as the start
    of its options, ``#`` as a fragment and ``%`` as an escape."""
    return f"file:{urllib.parse.quote(str(path))}?mode={mode}"


def stopped(path: Path) -> bool:
    """No connection has the store ``path`` open in WAL mode: neither its ``-wal`` nor its
    ``-shm`` is there (SQLite removes both when the last connection closes cleanly)."""
    return not Path(f"{path}-wal").exists() and not Path(f"{path}-shm").exists()


def hand_back(path: Path) -> None:
    """Remove the empty ``-wal`` and ``-shm`` a read-only connection made beside the stopped
    store ``path``, as SQLite removes them: a connection that may write opens the store, reads
    its schema (so it takes part in the WAL), writes nothing (``query_only``) and closes; being
    the last, it empties nothing (the ``-wal`` is empty) and removes both. Another connection
    open on the store (a gateway started meanwhile) keeps the store's shared lock, and then
    nothing is removed; a ``-wal`` that holds frames is someone's writes, and left alone."""
    wal = Path(f"{path}-wal")
    try:
        if wal.stat().st_size:
            return
    except OSError:  # not made (a store not in WAL mode), or removed already
        return
    with contextlib.suppress(sqlite3.Error):
        db = sqlite3.connect(_uri(path, "rw"), uri=True, timeout=1.0, isolation_level=None)
        try:
            db.execute("PRAGMA query_only = ON")
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            db.close()


class _ReadOnly(sqlite3.Connection):
    """A ``?mode=ro`` connection; ``tidy``: the store it found stopped, handed back so when it
    closes (``hand_back``)."""

    def __init__(self, *args: Any, tidy: Path | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tidy = tidy

    def close(self) -> None:
        super().close()
        tidy, self.tidy = self.tidy, None
        if tidy is not None:
            hand_back(tidy)


def factory(path: Path) -> Any:
    """The ``sqlite3.connect`` factory of a connection that reads ``path`` (the store itself,
    or one it ATTACHes ``?mode=ro``): the store handed back as found (``hand_back``)."""
    return functools.partial(_ReadOnly, tidy=path if stopped(path) else None)


def read_only(path: Path, timeout: float = 5.0, *, threads: bool = False) -> sqlite3.Connection:
    """A blocking connection that only reads the file ``path`` names and never creates it,
    whatever its name holds (``gw#1.db`` unquoted was the file ``gw``, opened for writing and
    created when missing: until 2026-12-05, ``gateway doctor`` made an empty ``gw`` beside the
    store and gave its schema as 0). For the commands, or a thread (``threads``: any thread, one
    at a time, as a pool's are: the caller serialises them); ``timeout``: how long a read waits
    for a lock (SQLite's busy timeout, in seconds)."""
    return sqlite3.connect(
        _uri(path), uri=True, timeout=timeout, factory=factory(path), check_same_thread=not threads
    )


async def open_read_only(path: Path, timeout: float = 5.0) -> aiosqlite.Connection:
    """``read_only`` for asyncio (aiosqlite, autocommit: ``BEGIN`` opens a read transaction):
    what a dry run reads the store through, so that it cannot write it — not a row, not the
    journal mode, not a checkpoint of another process's log."""
    made = await asyncio.to_thread(factory, path)  # it looks for the -wal and -shm: file I/O
    pending = aiosqlite.connect(_uri(path), uri=True, timeout=timeout, isolation_level=None, factory=made)
    try:
        return await pending
    except BaseException:
        # As ``storage.local.connect``: aiosqlite's thread would report to a loop closed by then.
        thread = getattr(pending, "_thread", None)
        if isinstance(thread, threading.Thread) and thread.is_alive():
            await asyncio.to_thread(thread.join, 5.0)
        raise
