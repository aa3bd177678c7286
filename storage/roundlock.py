"""The round lock: one round at a time of a reader of the central store, across the processes
of a host — the central sync of a local store, the reporting mirror's round of its file.

Owns the lock files beside them (``<store>.sync.lock``, ``<mirror>.mirror.lock``): an advisory
``flock`` taken for the length of one round, never for a task's lifetime, so a ``gateway sync
--once`` beside the gateway's task waits for the round running to end, and the task for the
``--once``'s. The kernel lets go of it when its process dies, however (``kill -9``); a process
*stopped* in a round (Ctrl-Z, ``kill -STOP``) keeps it until it goes on or dies. Its holder
writes ``<pid> <what>`` into the file while it holds it, for the one waiting to say whom it
waits for; the file is emptied when let go, and never deleted (a waiter on a deleted file's
lock and a holder of a new one would both go on). While it waits, a round can be given a
``refresh`` to call every few seconds (the reader's lag gauges: nothing is delivered meanwhile).

Made owner-only (0600: anyone who can open it can ``flock`` it, read-only, and hold every
round back), and, by root, given the store's owner, so the gateway's user and a root cron
share it; one there with group or other permissions is narrowed to 0600 when we may. Root runs
these rounds too (a cron ``sync --once``) in a folder the gateway's user can write: the file is
opened without following a symbolic link, and used only when it is a regular file of one link
owned by root or the store's owner — anything else is never written to. A lock that cannot be
had (that, a read-only directory, a file system without ``flock``) is *failed open*: warned
about once, naming the file, and the round runs without it — a round not run holds every row
back, while two at once are what the gateway did before it had this lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

POLL_SECONDS = 0.2
"""How often a round waiting for the lock tries it again (never blocking the event loop)."""
LONG_WAIT_SECONDS = 600.0
"""The gateway's task, waiting this long for another process's round, warns (once per wait);
``gateway sync --once`` and ``gateway mirror --once`` give up after it (``--wait``)."""


def lock_path(target: Path, kind: str) -> Path:
    """The lock file of ``target``'s rounds of ``kind`` (``sync``, ``mirror``): beside it."""
    return target.with_name(f"{target.name}.{kind}.lock")


@dataclass(frozen=True)
class Holder:
    """Who holds a round lock, as its file says: a process id and what it is (``gateway``,
    ``sync --once``, ``mirror --once``); unknown when the file says nothing yet."""

    pid: int | None
    what: str

    @classmethod
    def parse(cls, text: str) -> Holder:
        first, _, rest = text.strip().partition(" ")
        if not (first.isascii() and first.isdigit()):  # "²".isdigit(), and int("²") fails
            return cls(None, "")
        return cls(int(first), rest.strip())

    def __str__(self) -> str:
        who = "the gateway's" if self.what == "gateway" else f"`gateway {self.what}`" if self.what else ""
        pid = f"pid {self.pid}" if self.pid is not None else ""
        return ", ".join(part for part in (who, pid) if part) or "another process"


class RoundTimeout(Exception):
    """The round running did not end within the time a ``--once`` waits for it."""

    def __init__(self, holder: Holder, seconds: float) -> None:
        super().__init__(f"{holder}: still running after {seconds:g} s")
        self.holder = holder
        self.seconds = seconds


@dataclass(frozen=True)
class _Taken:
    fd: int
    writable: bool


@dataclass(frozen=True)
class _Unavailable:
    error: OSError


class RoundLock:
    """The lock of ``target``'s rounds of ``kind``; ``name`` says whose they are in the log
    (``central sync``, ``reporting mirror``)."""

    def __init__(self, target: Path, kind: str, log: logging.Logger, name: str) -> None:
        self.target = target
        self.path = lock_path(target, kind)
        self.kind = kind
        self.log = log
        self.name = name
        self._warned = False

    @contextlib.asynccontextmanager
    async def hold(
        self,
        what: str,
        *,
        waiting: Callable[[Holder], object] | None = None,
        limit: float | None = None,
        refresh: Callable[[], Awaitable[object]] | None = None,
        every: float = 5.0,
    ) -> AsyncIterator[None]:
        """Held for the ``async with``: one round of ``what`` (``gateway``, ``sync --once``…).
        While another process holds it, tried again every ``POLL_SECONDS``: ``waiting`` is told
        whom it waits for once (without it, the log says so at info level, and warns once after
        ``LONG_WAIT_SECONDS``); ``refresh`` is awaited when the wait begins and every ``every``
        seconds while it lasts, its failures ignored; past ``limit`` seconds, ``RoundTimeout``.
        A lock that cannot be had at all is warned about once, and the round runs without it
        (fail open)."""
        started = time.monotonic()
        refreshed: float | None = None
        told = long = False
        while True:
            got = await self._attempt(what)
            if isinstance(got, _Taken | _Unavailable):
                break
            now = time.monotonic()
            waited = now - started
            if not told:
                told = True
                if waiting is not None:
                    if limit != 0:  # told to wait for nothing (--wait 0): RoundTimeout says it all
                        waiting(got)
                else:
                    self.log.info(
                        "%s: waiting for the running %s round (%s) to end", self.name, self.kind, got
                    )
            if limit is not None and waited >= limit:
                raise RoundTimeout(got, limit)
            if refresh is not None and (refreshed is None or now - refreshed >= every):
                refreshed = now
                with contextlib.suppress(Exception):
                    await refresh()
            if waiting is None and not long and waited >= LONG_WAIT_SECONDS:
                long = True
                self.log.warning(
                    "%s: still waiting after %d s for the %s round of %s (%s) to end: nothing is"
                    " delivered meanwhile; is that process stopped (Ctrl-Z) or stuck?",
                    self.name,
                    waited,
                    self.kind,
                    self.target,
                    got,
                )
            await asyncio.sleep(POLL_SECONDS)
        if isinstance(got, _Unavailable):
            self._fail_open(got.error)
            yield
            return
        try:
            yield
        finally:
            _release(got)

    def _fail_open(self, error: OSError) -> None:
        if self._warned:
            return
        self._warned = True
        self.log.warning(
            "%s: cannot take the round lock %s (%s): running its rounds without it; a `gateway %s"
            " --once` beside the gateway's task may then run a round at the same time as it",
            self.name,
            self.path,
            error.strerror or error,
            self.kind,
        )

    async def _attempt(self, what: str) -> _Taken | _Unavailable | Holder:
        """One try, in a thread (it opens and writes a file). Cancelled meanwhile, a lock the
        try took is let go as soon as it ends: nothing holds it for a round never run."""
        attempt = asyncio.ensure_future(asyncio.to_thread(self._try, what))
        try:
            return await asyncio.shield(attempt)
        except asyncio.CancelledError:
            attempt.add_done_callback(_release_when_taken)
            raise

    def _try(self, what: str, replaced: int = 0) -> _Taken | _Unavailable | Holder:
        """Blocking: the lock taken (``<pid> <what>`` written into it), or who holds it. A file
        replaced under it ten times in a row is taken for one that cannot be used."""
        try:
            fd, writable = self._open()
        except OSError as err:
            return _Unavailable(err)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return Holder.parse(os.pread(fd, 200, 0).decode("utf-8", "replace"))
            finally:
                os.close(fd)
        except OSError as err:  # ENOLCK, EOPNOTSUPP: a file system that has no flock
            os.close(fd)
            return _Unavailable(err)
        try:
            mine, named = os.fstat(fd), os.lstat(self.path)
            same = (mine.st_dev, mine.st_ino) == (named.st_dev, named.st_ino)
        except OSError:
            same = False
        if not same:  # deleted or replaced since opened: the lock of a file no one else opens
            os.close(fd)
            if replaced >= 10:
                return _Unavailable(OSError(f"{self.path}: replaced each time it was locked"))
            return self._try(what, replaced + 1)
        try:
            if writable:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()} {what}\n".encode(), 0)
        except OSError:  # the lock is held; what it says is only for the one waiting
            pass
        return _Taken(fd, writable)

    def _open(self) -> tuple[int, bool]:
        """The lock file, made owner-only (and given the store's owner, by root) when it is not
        there; read-only when it is there and cannot be written (``flock`` needs no more). An
        ``OSError`` when it cannot be used: then it was not written to (``_vet``)."""
        try:
            store: os.stat_result | None = os.stat(self.target)
        except OSError:
            store = None
        try:
            fd = os.open(self.path, _RW | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # O_EXCL: a symbolic link there is not followed either
            pass
        except OSError:  # a read-only folder (or file system) may still hold one to lock
            if not os.path.lexists(self.path):
                raise
        else:
            try:
                if store is not None and os.geteuid() == 0:
                    with contextlib.suppress(OSError):
                        os.fchown(fd, store.st_uid, store.st_gid)
                with contextlib.suppress(OSError):
                    os.fchmod(fd, 0o600)  # whatever the umask left
            except BaseException:
                os.close(fd)
                raise
            return fd, True
        writable = True
        try:
            fd = _open_existing(self.path, _RW)
        except OSError as err:
            if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            fd, writable = _open_existing(self.path, os.O_RDONLY), False
        try:
            self._vet(fd, store)
        except BaseException:
            os.close(fd)
            raise
        return fd, writable

    def _vet(self, fd: int, store: os.stat_result | None) -> None:
        """A lock file that was there already, opened (not written to yet): an ``OSError`` saying
        why unless it is a regular file of one link — no device, FIFO or hard link to another
        file — owned, when we are root, by root or the store's owner (the folder's other users
        could otherwise have root empty a file of theirs choosing). Group or other permissions
        are taken away when we may (we own it): anyone who can open it can hold every round back."""
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode):
            raise OSError(errno.EPERM, "not a regular file: not used")
        if found.st_nlink != 1:
            raise OSError(errno.EPERM, f"{found.st_nlink} hard links to it: not used")
        owners = {0} | ({store.st_uid} if store is not None else set())
        if os.geteuid() == 0 and found.st_uid not in owners:
            raise OSError(
                errno.EPERM, f"owned by uid {found.st_uid}, neither root nor the store's owner: not used"
            )
        if found.st_mode & 0o077:
            with contextlib.suppress(OSError):  # not ours: it stays as it is
                os.fchmod(fd, stat.S_IMODE(found.st_mode) & 0o600)


_RW = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NOCTTY


def _open_existing(path: Path, flags: int) -> int:
    """``path`` opened with ``flags``, never through a symbolic link (an ``OSError`` saying so),
    nor waiting (a FIFO in its place opens at once, and is then refused by ``_vet``)."""
    flags |= os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK
    try:
        return os.open(path, flags)
    except OSError as err:
        if err.errno == errno.ELOOP and os.path.islink(path):
            raise OSError(errno.ELOOP, "a symbolic link: not followed") from err
        raise


def held(target: Path, kind: str) -> tuple[Holder, float] | None:
    """For ``gateway doctor``: who holds ``target``'s round lock of ``kind``, and for how many
    seconds (since it wrote itself into the file); None when no one does, or the file cannot
    be read. Blocking. Tried (a shared ``flock``, let go at once) only when the file names a
    holder — a round running, or one killed in it: between rounds it is empty, and the doctor
    never makes a round wait."""
    try:
        fd = _open_existing(lock_path(target, kind), os.O_RDONLY)
    except OSError:
        return None
    try:
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode):
            return None
        holder = Holder.parse(os.pread(fd, 200, 0).decode("utf-8", "replace"))
        if holder.pid is None:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return holder, max(time.time() - found.st_mtime, 0.0)
        except OSError:
            return None
        return None  # its holder was killed in a round: the kernel let the lock go
    finally:
        os.close(fd)


def _release(taken: _Taken) -> None:
    """Emptied (it names no holder any more), then closed: the kernel lets the lock go."""
    try:
        if taken.writable:
            with contextlib.suppress(OSError):
                os.ftruncate(taken.fd, 0)
    finally:
        os.close(taken.fd)


def _release_when_taken(attempt: asyncio.Future[_Taken | _Unavailable | Holder]) -> None:
    if not attempt.cancelled() and attempt.exception() is None and isinstance(attempt.result(), _Taken):
        result = attempt.result()
        assert isinstance(result, _Taken)
        _release(result)
