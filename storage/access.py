"""Which of the store's files (and its folder) this process may not read or write.

SQLite says neither: a file it may only read it opens read-only without a word and fails each
write later ("attempt to write a readonly database"), and one it may not read is "unable to open
database file". The start, the commands, the doctor and the checkpoint job name the path and the
uid from these, or the read-only mount it is on (``not_writable``). Nor does it say a full disk
plainly: a commit fails "database or disk is full", but opening a WAL store whose ``-shm``
cannot be made fails "disk I/O error" (``full_disk``).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["FULL_BELOW", "full_disk", "not_writable", "read_only_mount", "unreadable", "unwritable"]

FULL_BELOW = 1 << 20
"""Bytes free to this process on the store's file system under which it counts as full: SQLite
needs room for its ``-shm`` (32 KiB) and a few pages of ``-wal`` to open and commit at all."""


def unwritable(path: Path) -> Path | None:
    """The first of the store's files (and its folder, where SQLite makes its ``-wal`` and
    ``-shm``) this process may not write, or None. SQLite opens a file it may only read
    read-only and fails each write later; a root process may write anything but a read-only
    mount, where opening a WAL store already fails."""
    for candidate in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), path.parent):
        if candidate.exists() and not os.access(candidate, os.W_OK):
            return candidate
    return None


def read_only_mount(path: Path) -> Path | None:
    """Where the file system ``path`` is on is mounted, when it is mounted read-only (no user may
    write there, root included: "as the user the gateway runs as" would not help), else None.
    The mount point is the last folder up from ``path`` on the same device."""
    try:
        if not os.statvfs(path).f_flag & os.ST_RDONLY:
            return None
        device = os.stat(path).st_dev
    except OSError:
        return None
    mount = Path(os.path.realpath(path))
    for parent in mount.parents:
        try:
            if os.stat(parent).st_dev != device:
                break
        except OSError:
            break
        mount = parent
    return mount


def not_writable(blocked: Path, fix: str) -> tuple[str, str]:
    """Why ``blocked`` (from ``unwritable``) may not be written, and what to do: ``fix``, the
    caller's for this user's rights, or, on a file system mounted read-only, to remount it or
    keep the store elsewhere (blocking)."""
    mount = read_only_mount(blocked)
    if mount is None:
        return f"{blocked} is not writable to uid {os.geteuid()}", fix
    return f"{blocked} is on a read-only file system (mount {mount})", (
        f"remount {mount} read-write (mount -o remount,rw {mount}), or keep the store on a file"
        " system the gateway may write (under deploy/gateway.service, whose ProtectSystem=strict"
        " leaves only its ReadWritePaths= writable, in /var/lib/gateway)"
    )


def unreadable(path: Path) -> Path | None:
    """The first of the store's files this process may not read (another user's ``0600``), or
    None."""
    for candidate in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if candidate.exists() and not os.access(candidate, os.R_OK):
            return candidate
    return None


def full_disk(path: Path) -> str | None:
    """Why the file system the store ``path`` is on (its folder, or the nearest that exists) is
    full to this process — ``0 bytes free on /var/lib/gateway`` — or None while it has
    ``FULL_BELOW`` bytes and a free inode (a file system that counts none, as btrfs, is not
    judged by them)."""
    folder = next((p for p in (path.parent, *path.parents) if p.exists()), Path("/"))
    try:
        found = os.statvfs(folder)
    except OSError:
        return None
    free = found.f_bavail * found.f_frsize
    if free < FULL_BELOW:
        return f"{free:,} bytes free on {folder}"
    if found.f_files and not found.f_favail:
        return f"no free inode on {folder}"
    return None
