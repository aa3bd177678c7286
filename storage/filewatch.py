"""Whether the store's file is still the one at ``storage.path``: a task beside the writer.

SQLite keeps writing to the file it opened. Deleted (``rm gw.db``) or replaced (a backup moved
over it) under a running gateway, that file is no longer at the path: in WAL mode SQLite does not
notice, commits go on succeeding into a file that disappears when the process exits, ``/healthz``
said ``ok``, and a replacing file shares the old one's ``-wal`` by name (new connections to it then
read another database's pages: ``database disk image is malformed``). Owns nothing but a timer:
every ``SECONDS`` it compares the path's device and inode with those it found at open, in a worker
thread, and once they differ it says why (``moved``) and calls ``on_moved`` once. It never reopens:
a file deleted and made anew would be an empty store, and every reader holds the old one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path

SECONDS = 1.0
"""How often the path is looked at: the longest that commits go on into a file no longer there."""


def identity(path: Path) -> tuple[int, int] | None:
    """The file's device and inode (blocking); None when nothing is there."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


class FileWatch:
    def __init__(self, path: Path, on_moved: Callable[[str], None], seconds: float = SECONDS) -> None:
        self.path = path
        self.on_moved = on_moved
        self.seconds = seconds
        self.moved: str | None = None
        """Why the path no longer names the file the store writes; None while it does."""
        self._opened: tuple[int, int] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Note the file the store has just opened, and watch its path from now on."""
        self._opened = await asyncio.to_thread(identity, self.path)
        self._task = asyncio.create_task(self._run(), name="store-filewatch")

    async def _run(self) -> None:
        while self.moved is None:
            await asyncio.sleep(self.seconds)
            try:
                now = await asyncio.to_thread(identity, self.path)
            except OSError:  # a folder made unreadable: no answer, not a move
                continue
            if now == self._opened:
                continue
            how = "deleted" if now is None else "replaced by another file"
            self.moved = (
                f"the store file {self.path} (storage.path) was {how} while the gateway ran; "
                "nothing is written from now on: restart the gateway to write to the file at that path"
            )
            self.on_moved(self.moved)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
