"""Worker processes for ``gateway import``: every core parses and replays chunks of log lines.

Owns the process pool of a pooled import. Each worker builds its own
``Replayer`` and line parser once (the pool's initializer), then turns a chunk
of raw lines into the events they produce and the lines skipped; only those
travel back (a few percent of log lines make an event). The parent reads the
file, writes to the store and counts. Event ids are deterministic, so which
worker replays a line changes nothing. Workers are spawned, not forked: the
parent runs threads (the store's writer) that a fork would copy mid-flight.
Each worker numbers itself as it starts (1, 2…), and its log lines say
``[worker N]``.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.util
import os
import sys
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import resource_tracker
from multiprocessing.sharedctypes import Synchronized
from typing import Any

from gateway.backfill import Replayed, Replayer, replay_items
from gateway.childsignals import STOP_SIGNALS, blocked, ignored
from gateway.config import Settings
from gateway.history import Item, Skip
from gateway.logformats import parser_for
from gateway.logs import setup_logging
from gateway.metrics import Metrics
from gateway.notices import Notices

Lines = list[tuple[int, bytes] | Skip]
PARENT_CHECK = 0.5
"""Seconds between a worker's checks that the import that started it still runs."""
_worker: dict[str, Any] = {}
"""This worker process's replayer, parser and event loop, set once by ``_start`` (in the parent
it stays empty)."""


def _start(
    settings: Settings,
    fmt: str,
    host: str,
    fields: dict[str, str],
    said: frozenset[str],
    level: int,
    started: Synchronized[int],
) -> None:
    # Ctrl-C reaches the terminal's whole process group: the parent stops the import (it lets the
    # chunks being replayed finish, then ends the pool), so a worker does not stop mid-chunk.
    # They were blocked since the process started (``WorkerPool.submit``), so one sent while this
    # worker started up is dropped here, rather than ending it with a traceback.
    ignored(STOP_SIGNALS)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    # A spawned process starts with no logging set up: until 2026-12-05 a worker's warning was a
    # bare message among the parent's stamped lines. Written as the parent writes its own (every
    # command but ``run`` writes text), at the parent's level, with the worker's number (1, 2…
    # in the order they started), so two workers' lines are told apart.
    with started.get_lock():
        started.value += 1
        number = started.value
    setup_logging(level, "text", worker=number)
    loop = asyncio.new_event_loop()
    # The parent built and started the same chain from the same settings before it started the
    # pool, and has said what that warns about (no GeoIP database, ``said``): once, not once per
    # worker. What this worker finds otherwise (a GeoIP file gone since) is said, as is any other
    # warning: until 2026-12-05 every warning was silenced while the chain was built.
    replayer = Replayer(settings, Metrics(), host, Notices(said=said))
    loop.run_until_complete(replayer.pipeline.running())  # as the parent's: GeoIP files opened
    if (recent := replayer.recent_bindings()) is not None:
        # A worker sees only some chunks: whether a pair was bound before is for the parent to
        # say, which sees every binding in file order (``gateway.importbindings``).
        recent.size = 0
    if replayer.stored is not None:
        # The robots.txt lines' kept connection, closed as this worker ends (the pool's close
        # waits for it), before the parent's store closes last.
        multiprocessing.util.Finalize(replayer.stored, replayer.stored.close, exitpriority=10)
    _worker["replayer"] = replayer
    _worker["parse"] = parser_for(fmt, settings.options.identity.cookie_name, fields)
    _worker["loop"] = loop


def _exit_with_parent(parent: int) -> None:
    """End this worker once its parent is gone (``kill -9``): the pool's queues would otherwise
    keep it waiting for work for ever."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK)
    os._exit(1)


def _work(lines: Lines, identity: bytes) -> Replayed:
    parse = _worker["parse"]
    items: list[Item] = []
    for entry in lines:
        if type(entry) is tuple:
            items.extend(parse(*entry))
        else:
            assert isinstance(entry, Skip)
            items.append(entry)
    loop: asyncio.AbstractEventLoop = _worker["loop"]
    return loop.run_until_complete(replay_items(_worker["replayer"], items, identity))


TRACKER_QUIET = "ignore::UserWarning:multiprocessing.resource_tracker"


def _start_resource_tracker() -> None:
    """Start multiprocessing's resource tracker (a process of its own) told not to warn. The
    pool's locks are named semaphores; when the import is killed (``kill -9``) the tracker
    removes them, as it should, and then warned on the operator's terminal that "5 leaked
    semaphore objects" were cleaned up: nothing leaked, and nothing is for the operator to do.
    The tracker takes its warning filters from this process's ``-W`` options when it starts."""
    sys.warnoptions.append(TRACKER_QUIET)
    try:
        resource_tracker.ensure_running()
    finally:
        sys.warnoptions.remove(TRACKER_QUIET)


class WorkerPool:
    """``workers`` spawned processes replaying chunks; build and close it off the event loop."""

    def __init__(
        self,
        workers: int,
        settings: Settings,
        fmt: str,
        host: str,
        fields: dict[str, str],
        said: frozenset[str] = frozenset(),
    ) -> None:
        """``said``: the config's warnings the parent's chain said (``Notices.said``), which the
        workers, building the same chain, do not say again."""
        self.workers = workers
        _start_resource_tracker()
        context = multiprocessing.get_context("spawn")
        # Each worker takes the next number as it starts. Let go in ``close`` (off the event
        # loop): its lock's finalizer talks to the resource tracker, blocking.
        started: Synchronized[int] = context.Value("i", 0)
        self.started: Synchronized[int] | None = started
        level = logging.getLogger().getEffectiveLevel()
        self.executor = ProcessPoolExecutor(
            workers,
            mp_context=context,
            initializer=_start,
            initargs=(settings, fmt, host, fields, said, level, started),
        )

    def submit(self, lines: Lines, identity: bytes) -> Future[Replayed]:
        # A worker (and the pool's thread that may start more) is started by a submit, and
        # inherits the calling thread's signal mask: blocked, Ctrl-C cannot reach it before it
        # ignores it. This thread is not the main one, where Python handles signals.
        with blocked(STOP_SIGNALS):
            return self.executor.submit(_work, lines, identity)

    @property
    def broken(self) -> bool:
        """A worker died (the OOM killer, kill -9): the pool's own thread fails every chunk not
        yet taken back; cancelling one under it would stop that thread before it lets go of its
        queue, whose feeder then blocks the interpreter's exit for ever."""
        return bool(self.executor._broken)

    def cancel(self, futures: Iterable[Future[Replayed]]) -> None:
        """Cancel the chunks no worker has taken (the others run to their end), unless the pool
        is ``broken``: it fails them itself."""
        for future in futures:
            if self.broken:
                return
            future.cancel()

    def close(self) -> None:
        try:
            self._close()
        finally:  # the worker counter freed here, off the loop (the executor keeps its initargs)
            self.started = None
            self.executor._initargs = ()

    def _close(self) -> None:
        if self.broken:
            # A worker died (the OOM killer, kill -9): the pool ends the others with SIGTERM, which
            # they ignore (``_start``), then waits for them, and for ever for the one blocked
            # sending its result back. They are killed instead: nothing of theirs is kept.
            for process in list((self.executor._processes or {}).values()):
                process.kill()
            self.executor.shutdown(wait=True)  # not cancelling futures (``broken``)
            return
        self.executor.shutdown(wait=True, cancel_futures=True)
