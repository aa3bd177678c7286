"""Reading the inputs of ``gateway import``, off the event loop.

Owns one input's reader as the import loop sees it (``Source``: a log read in
chunks through ``gateway.history``, or a flow dump through
``gateway.logformats``), which inputs are streams (standard input, and a pipe
named by its path: a FIFO, ``/dev/stdin``, ``<(zcat …)``), the sizes the
progress bar totals (and which files cannot be read at all), and ``off_loop``:
every read runs in a worker thread, and a stream's (its opening too) in a
daemon thread of its own, so a stop never waits for a writer that sends
nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, TypeVar

from gateway.history import READ_ERRORS, History, Input, Item, Skip, check_opens
from gateway.logformats import read_flows

_T = TypeVar("_T")


def input_sizes(paths: Sequence[Input], fmt: str) -> list[int | OSError | None]:
    """Each file's size in bytes; None for a stream, whose size is not known before its end:
    standard input, or a pipe (or another device) named by its path. The OSError in its place
    for a path that is missing, a directory, cannot be opened (permission denied) or, in a line
    format, is compressed with zstd: found before any file is read, so the import skips it,
    imports the others, and names it."""
    sizes: list[int | OSError | None] = []
    for path in paths:
        try:
            sizes.append(_size(path, fmt != "mitm"))
        except OSError as err:
            sizes.append(err)
    return sizes


def _size(path: Input, lines: bool) -> int | None:
    if not isinstance(path, Path):
        return None
    status = path.stat()
    if stat.S_ISDIR(status.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if stat.S_ISFIFO(status.st_mode) or stat.S_ISCHR(status.st_mode):
        # Not opened here: opening a FIFO waits for its writer, and a probe's close would leave
        # a writer that started meanwhile without a reader (SIGPIPE). Its mode says it all.
        if not os.access(path, os.R_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return None
    # Opened: what the kernel says (modes, ACLs, a security module), as for root too; a log's
    # first bytes as its reader takes them (a flow dump is read as it is).
    if lines:
        check_opens(path)
    else:
        with open(path, "rb"):
            pass
    return status.st_size


PEEKED = 100
"""Lines of a file read at most for its first time (``reading_order``): a log's first line has
one; a few broken lines before it are passed over."""


def reading_order(
    paths: Sequence[Input], sizes: Sequence[int | OSError | None], parse: Callable[[int, bytes], list[Item]]
) -> list[int]:
    """The order to read ``paths`` in (their indexes): the files of a request log oldest first,
    by the time of their first logged request, so what the first read of something keeps (a
    conversion's order ID, a visitor-user pair) is what was logged first, as live. ``gateway
    import access.log*`` names access.log, the newest, first, and access.log.10.gz before
    access.log.2.gz. A stream keeps its place (it is read once, and its time is not known before
    it is read), and so does a file that cannot be read (``sizes``: its OSError); a file with
    no time in its first ``PEEKED`` lines is read after those with one, in the order named."""
    order = list(range(len(paths)))
    files = [n for n, (path, size) in enumerate(zip(paths, sizes, strict=True)) if _regular(path, size)]
    first = {n: _first_time(paths[n], parse) for n in files}
    oldest = sorted(files, key=lambda n: (first[n] is None, first[n] or datetime.min))
    for slot, n in zip(files, oldest, strict=True):
        order[slot] = n
    return order


def _regular(path: Input, size: int | OSError | None) -> bool:
    return isinstance(path, Path) and isinstance(size, int)


def _first_time(path: Input, parse: Callable[[int, bytes], list[Item]]) -> datetime | None:
    try:
        history = History(path, parse)
    except READ_ERRORS:  # said when it is read
        return None
    try:
        return history.first_time(PEEKED)
    except READ_ERRORS:
        return None
    finally:
        history.close()


class Source:
    """One file's items, chunk by chunk; every method does file I/O, so call it off the loop
    (``off_loop``)."""

    def __init__(
        self, path: Input, fmt: str, parse: Callable[[int, bytes], list[Item]] | None, stream: bool
    ) -> None:
        self.stream = stream
        self._pipe: BinaryIO | None = None
        self._busy = threading.Lock()
        """Held while a read runs: a stop may leave one waiting on a stream for good."""
        if stream and isinstance(path, Path):
            # A pipe named by its path is read as standard input is: it cannot seek, and a stop
            # does not wait for its writer (to open it, or to write more).
            path = self._pipe = open(path, "rb", buffering=0)  # noqa: SIM115 - closed in close()
        self.history: History | None = None
        self.flows: Iterator[tuple[list[Item], int]] | None = None
        try:
            if fmt == "mitm":
                self.flows = read_flows(path)
                self.identity = b"flow"  # a flow is keyed by its method, URL and time, whatever the file
            else:
                assert parse is not None
                self.history = History(path, parse)
                self.identity = self.history.identity
        except BaseException:
            if self._pipe is not None:
                self._pipe.close()
            raise

    def next(self) -> tuple[list[Item], int] | None:
        """The next chunk and the bytes of the file consumed so far; None at the end."""
        with self._busy:
            if self.flows is not None:
                return next(self.flows, None)
            assert self.history is not None
            chunk = self.history.chunk()
            return (chunk, self.history.position) if chunk else None

    def raw_lines(self) -> tuple[list[tuple[int, bytes] | Skip], int]:
        """The next lines unparsed (``History.raw_lines``) and the bytes consumed so far."""
        assert self.history is not None
        with self._busy:
            return self.history.raw_lines(), self.history.position

    def close(self) -> None:
        if self.stream:
            # Standard input is the caller's. A pipe opened here is closed unless a stop left a
            # thread waiting on it (the process ends without it).
            if self._pipe is not None and self._busy.acquire(blocking=False):
                self._pipe.close()
                self._busy.release()
            return
        if self.history is not None:
            self.history.close()
        if self.flows is not None:
            self.flows.close()  # type: ignore[attr-defined]


async def off_loop(call: Callable[[], _T], stream: bool) -> _T:
    """``call()`` (file I/O) in a worker thread. Reading a stream (stdin) may wait for input
    indefinitely: a stopped import must not wait for it, so a stream is read in a daemon thread
    of its own (the default executor's threads are joined as the loop and the process end)."""
    if not stream:
        return await asyncio.to_thread(call)
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():  # not cancelled by a stop meanwhile
            outcome()

    def run() -> None:
        try:
            result = call()
        except BaseException as err:  # handed to the awaiting task, which raises it
            outcome = functools.partial(future.set_exception, err)
        else:
            outcome = functools.partial(future.set_result, result)
        with contextlib.suppress(RuntimeError):  # the loop is closed: the import ended without it
            loop.call_soon_threadsafe(settle, outcome)

    threading.Thread(target=run, name="gateway-import-stdin", daemon=True).start()
    return await future
