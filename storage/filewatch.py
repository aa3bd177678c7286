"""Whether the store's file is still the one at ``storage.path``: a task beside the writer.

SQLite keeps writing to the file it opened. Deleted (``rm gw.db``) or replaced (a backup moved
over it) under a running gateway, that file is no longer at the path: in WAL mode SQLite does not
notice, commits go on succeeding into a file that disappears when the process exits, ``/healthz``
said ``ok``, and a replacing file shares the old one's ``-wal`` by name (new connections to it then
read another database's pages: ``database disk image is malformed``). Owns nothing but a timer:
every ``SECONDS`` it compares the path's device and inode with those it found at open, in a worker
thread, and once they differ it says why (``moved``) and calls ``on_moved`` once. It never reopens:
a file deleted and made anew would be an empty store, and every reader holds the old one.

It looks at the store's ``-wal`` file the same way: deleted (a cleanup taking it for a leftover)
or replaced under a running gateway, SQLite writes on into the WAL it has open, which is gone at
exit with every commit since the last checkpoint, and a connection opened since makes an empty
one at the path, its frames not where the ``-shm`` index says. ``on_moved`` is told which
(``wal``): the store copies what its own connection's WAL holds into the file, which is still
at the path, before it refuses more. (Until 2026-12-07 only the store file was looked at.)

It also looks at whether the store's files and folder are still writable to this process: made
read-only under the running gateway (a ``chmod``, a ``chown``), SQLite writes on through the
files it has open (modes are checked at open), so nothing fails until a restart opens the store
read-only and records nothing. Said in the log when it happens, and when it is writable again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from storage.access import not_writable, unwritable

log = logging.getLogger("gateway.storage")

SECONDS = 1.0
"""How often the path is looked at: the longest that commits go on into a file no longer there."""


def wal_of(path: Path) -> Path:
    """The store's write-ahead log: ``gw.db-wal`` beside ``gw.db``."""
    return path.with_name(path.name + "-wal")


NOT_WRITABLE_FIX = "let the user the gateway runs as write to it again"


def looked_at(
    path: Path,
) -> tuple[tuple[int, int] | None, tuple[int, int] | None, tuple[str, str] | None]:
    """The file's ``identity``, its ``-wal``'s, and, when one of the store's files (or its
    folder) is one this process may not write, why and what to do (``not_writable``; blocking)."""
    blocked = unwritable(path)
    why = None if blocked is None else not_writable(blocked, NOT_WRITABLE_FIX)
    return identity(path), identity(wal_of(path)), why


def identity(path: Path) -> tuple[int, int] | None:
    """The file's device and inode (blocking); None when nothing is there."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


class FileWatch:
    def __init__(self, path: Path, on_moved: Callable[[str, bool], None], seconds: float = SECONDS) -> None:
        """``on_moved(why, wal)``: ``wal`` when it is the ``-wal`` file that went, the store file
        still at its path."""
        self.path = path
        self.on_moved = on_moved
        self.seconds = seconds
        self.moved: str | None = None
        """Why the path no longer names the file the store writes; None while it does."""
        self._opened: tuple[int, int] | None = None
        self._wal: tuple[int, int] | None = None  # None: no -wal at start (not in WAL mode), not watched
        self._blocked: tuple[str, str] | None = None  # not writable to this process: why, fix
        self._task: asyncio.Task[None] | None = None

    async def start(self, opened: bool = True) -> None:
        """Note the file the store has just opened, and watch its path from now on (a store
        read-only at open: said by the store already). ``opened`` False: the store's connection
        is not open yet (its disk full at start), so its ``-wal`` is not watched until
        ``watch_wal``: without a connection of its own, the file is another's to make and delete
        (SQLite deletes it when the last connection closes), and until 2026-12-07 a reader's
        closing then read as the ``-wal`` deleted under the store, which refused every commit
        once it opened."""
        self._opened, wal, self._blocked = await asyncio.to_thread(looked_at, self.path)
        self._wal = wal if opened else None
        self._task = asyncio.create_task(self._run(), name="store-filewatch")

    async def watch_wal(self) -> None:
        """The store's connection is open now: its ``-wal`` is watched from here on."""
        self._wal = await asyncio.to_thread(identity, wal_of(self.path))

    async def _run(self) -> None:
        while self.moved is None:
            await asyncio.sleep(self.seconds)
            try:
                now, wal, blocked = await asyncio.to_thread(looked_at, self.path)
            except OSError:  # a folder made unreadable: no answer, not a move
                continue
            if now == self._opened and (self._wal is None or wal == self._wal):
                self._writable(blocked)
                continue
            if now != self._opened:
                how = "deleted" if now is None else "replaced by another file"
                self.moved = (
                    f"the store file {self.path} (storage.path) was {how} while the gateway ran; "
                    "nothing is written from now on: restart the gateway to write to the file at that path"
                )
                self.on_moved(self.moved, False)
                continue
            how = "deleted" if wal is None else "replaced by another file"
            self.moved = (
                f"the store's -wal file {wal_of(self.path)} (beside storage.path) was {how} while the"
                " gateway ran; nothing is written from now on: restart the gateway to write to the"
                " store again (a running store's -wal and -shm files are part of it: never remove them)"
            )
            self.on_moved(self.moved, True)

    def _writable(self, blocked: tuple[str, str] | None) -> None:
        """Say when the store's files become read-only to this process, and writable again."""
        if (blocked is None) == (self._blocked is None):
            self._blocked = blocked
            return
        self._blocked = blocked
        if blocked is None:
            log.info("the store %s (storage.path) is writable again to uid %d", self.path, os.geteuid())
            return
        why, fix = blocked
        log.error(
            "the store %s (storage.path) is no longer writable (%s): commits go on through the files"
            " the gateway has open, but once restarted it would open the store read-only and record"
            " nothing; %s",
            self.path,
            why,
            fix,
        )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
