"""Which of the store's files (and its folder) this process may not read or write.

SQLite says neither: a file it may only read it opens read-only without a word and fails each
write later ("attempt to write a readonly database"), and one it may not read is "unable to open
database file". The start, the commands, the doctor and the checkpoint job name the path and the
uid from these.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["unreadable", "unwritable"]


def unwritable(path: Path) -> Path | None:
    """The first of the store's files (and its folder, where SQLite makes its ``-wal`` and
    ``-shm``) this process may not write, or None. SQLite opens a file it may only read
    read-only and fails each write later; a root process may write anything but a read-only
    mount, where opening a WAL store already fails."""
    for candidate in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), path.parent):
        if candidate.exists() and not os.access(candidate, os.W_OK):
            return candidate
    return None


def unreadable(path: Path) -> Path | None:
    """The first of the store's files this process may not read (another user's ``0600``), or
    None."""
    for candidate in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if candidate.exists() and not os.access(candidate, os.R_OK):
            return candidate
    return None
