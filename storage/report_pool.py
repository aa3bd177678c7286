"""Reports on every core: the processes that compute slices of a large report.

Owns the report worker processes. A report over many conversions is cut into slices of the
period's conversions (by id, ``Slice``); each worker process keeps its own ``Reports`` (its
own read connection, built once by the pool's initializer) and answers a slice with partial
sums that the caller adds up. A slice reads each of its conversions with every touch of its
devices, exactly as a whole report does, so the sums are the same. Workers are spawned, not
forked: the gateway runs threads (the store's writer) that a fork would copy mid-flight. They
ignore Ctrl-C (the gateway shuts them down) and exit when the gateway process is gone, even
killed outright.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

_T = TypeVar("_T")

Slice = tuple[str | None, str | None]
"""Conversion ids ``lo <= id < hi`` of one slice of a report (None: no bound on that side)."""
WHOLE: Slice = (None, None)

_state: dict[str, Any] = {}
"""This worker process's object (a ``Reports``), set once by ``_start``; empty in the parent."""


def _start(factory: Callable[..., Any], args: tuple[Any, ...]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is not None:  # a gateway killed outright leaves no orphan behind
        threading.Thread(target=_leave_with, args=(parent.sentinel,), daemon=True).start()
    _state["reports"] = factory(*args)


def _leave_with(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])
    os._exit(0)


def _call(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(_state["reports"], *args)


def _ready(_: Any) -> None:
    """Nothing: a started worker's first task."""


class ReportPool:
    """``processes`` spawned workers, each with ``factory(*args)``; started on first use. Blocking:
    use it from a worker thread, never on the event loop."""

    def __init__(self, processes: int, factory: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.processes, self.factory, self.args = processes, factory, args
        self._executor: ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Start every worker now, without waiting for them (each imports the code and opens its
        connection, about half a second), so the first large report does not wait either."""
        executor = self._running()
        for _ in range(self.processes):
            executor.submit(_call, _ready)

    def _running(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                self.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start,
                initargs=(self.factory, self.args),
            )
        return self._executor

    def map(self, fn: Callable[..., _T], slices: list[Slice], *args: Any) -> list[_T]:
        """``fn(worker's object, slice, *args)`` for each slice, in the workers; the answers in
        the order of ``slices``. Raises
        ``BrokenProcessPool`` if a worker died (the next call starts new ones)."""
        executor = self._running()
        try:  # a worker that died between reports breaks the pool at submit already
            futures = [executor.submit(_call, fn, part, *args) for part in slices]
            return [f.result() for f in futures]
        except BrokenProcessPool:
            self.close()
            raise

    def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
