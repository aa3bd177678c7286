"""Reading the inputs of ``gateway import``, off the event loop.

Owns one input's reader as the import loop sees it (``Source``: a log read in
chunks through ``gateway.history``, or a flow dump through
``gateway.logformats``), the sizes the progress bar totals, and ``off_loop``:
every read runs in a worker thread, and a stream's in a daemon thread of its
own, so a stop never waits for a writer that sends nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from gateway.history import History, Input, Item
from gateway.logformats import read_flows

_T = TypeVar("_T")


def input_sizes(paths: Sequence[Input]) -> list[int | None]:
    """Each file's size in bytes (None: a stream's is not known before its end)."""
    return [path.stat().st_size if isinstance(path, Path) else None for path in paths]


class Source:
    """One file's items, chunk by chunk; every method does file I/O, so call it off the loop
    (``off_loop``)."""

    def __init__(self, path: Input, fmt: str, parse: Callable[[int, bytes], list[Item]] | None) -> None:
        self.stream = not isinstance(path, Path)
        self.history: History | None = None
        self.flows: Iterator[tuple[list[Item], int]] | None = None
        if fmt == "mitm":
            self.flows = read_flows(path)
            self.identity = b"flow"  # a flow is keyed by its method, URL and time, whatever the file
        else:
            assert parse is not None
            self.history = History(path, parse)
            self.identity = self.history.identity

    def next(self) -> tuple[list[Item], int] | None:
        """The next chunk and the bytes of the file consumed so far; None at the end."""
        if self.flows is not None:
            return next(self.flows, None)
        assert self.history is not None
        chunk = self.history.chunk()
        return (chunk, self.history.position) if chunk else None

    def close(self) -> None:
        if self.stream:  # the caller's, and perhaps still read by a thread a stop left waiting
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
