"""Worker processes for ``gateway import``: every core parses and replays chunks of log lines.

Owns the process pool of a pooled import. Each worker builds its own
``Replayer`` and line parser once (the pool's initializer), then turns a chunk
of raw lines into the events they produce and the lines skipped; only those
travel back (a few percent of log lines make an event). The parent reads the
file, writes to the store and counts. Event ids are deterministic, so which
worker replays a line changes nothing. Workers are spawned, not forked: the
parent runs threads (the store's writer) that a fork would copy mid-flight.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from gateway.backfill import Replayer, replay_items
from gateway.config import Settings
from gateway.events import Event
from gateway.history import Item, Skip
from gateway.logformats import parser_for
from gateway.metrics import Metrics

Lines = list[tuple[int, bytes] | Skip]
_worker: dict[str, Any] = {}
"""This worker process's replayer, parser and event loop, set once by ``_start`` (in the parent
it stays empty)."""


def _start(settings: Settings, fmt: str, host: str, fields: dict[str, str]) -> None:
    _worker["replayer"] = Replayer(settings, Metrics(), host)
    _worker["parse"] = parser_for(fmt, settings.options.identity.cookie_name, fields)
    _worker["loop"] = asyncio.new_event_loop()


def _work(lines: Lines, identity: bytes) -> tuple[list[Event], list[Skip]]:
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


class WorkerPool:
    """``workers`` spawned processes replaying chunks; build and close it off the event loop."""

    def __init__(self, workers: int, settings: Settings, fmt: str, host: str, fields: dict[str, str]) -> None:
        self.workers = workers
        self.executor = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start,
            initargs=(settings, fmt, host, fields),
        )

    def submit(self, lines: Lines, identity: bytes) -> Future[tuple[list[Event], list[Skip]]]:
        return self.executor.submit(_work, lines, identity)

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
