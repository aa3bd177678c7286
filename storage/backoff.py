"""Retry delays for the durable readers of the log (the central sync, the sinks), the wait
between their attempts, and how a run of failures is logged (``Failures``), and a standing
problem a reader works through (``Standing``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable


class Backoff:
    """Exponential backoff with jitter: the n-th retry waits uniform(low/2, min(high, low·2ⁿ)), so
    many nodes coming back at once spread out, and none retries in a tight loop; never more than
    ``high``, even under ``low/2`` (then from ``high/2`` to ``high``: a sink's
    ``backoff_max_seconds`` of 0.1 waited up to 0.25 s until 2026-12-05)."""

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high, self.failures = low, high, 0

    def next(self) -> float:
        ceiling = min(self.high, self.low * 2 ** min(self.failures, 30))
        self.failures += 1
        return random.uniform(min(self.low, ceiling) / 2, ceiling)

    def reset(self) -> None:
        self.failures = 0


REFRESH_MAX = 5.0
"""Longest time between two refreshes of a waiting reader's lag age, in seconds."""


async def wait_refreshing(delay: float, every: float, refresh: Callable[[], Awaitable[object]]) -> None:
    """Sleep ``delay`` seconds, calling ``refresh`` every ``every`` seconds (at most
    ``REFRESH_MAX``) meanwhile, its failures ignored: a reader backing off for minutes still
    keeps its lag gauges current."""
    loop = asyncio.get_running_loop()
    end = loop.time() + delay
    step = min(every, REFRESH_MAX)
    while (left := end - loop.time()) > 0:
        await asyncio.sleep(min(left, step))
        if end - loop.time() > 0:
            with contextlib.suppress(Exception):
                await refresh()


REMIND_SECONDS = 600.0
"""While one problem lasts, the longest time between two log lines about it."""


class Failures:
    """A reader's failures in a row, logged as an operator reads them: the first at ``level``
    with what failed and the retry delay; then a different problem (a restarting PostgreSQL
    says "shutting down", "connection refused", "starting up" in turn) at info level, and the
    same one again at debug level; every ``REMIND_SECONDS`` while failures last, one line at
    ``level`` again with the problem of the moment and the number of attempts; the first success
    after failures at info level with how long they lasted. A PostgreSQL down for a night is a
    few lines, not one per backoff."""

    def __init__(
        self, logger: logging.Logger, what: str, board: dict[str, Failures] | None = None, reader: str = ""
    ) -> None:
        self.log, self.what = logger, what
        self.count = 0
        self._since = 0.0
        self.since_wall = 0.0
        """When the failures in a row began (Unix time), as ``/healthz`` says it."""
        self._problem: str | None = None
        self._logged = 0.0
        self._board, self._reader = board, reader
        """``board``: the readers failing now, by ``reader`` (``Metrics.readers_failing``, which
        ``/healthz`` reads): this one is there from its first failure to its next success."""

    def failed(
        self,
        problem: str,
        delay: float,
        level: int = logging.WARNING,
        error: BaseException | None = None,
        same: str | None = None,
    ) -> None:
        """One more failure. ``error``: an unexpected one, whose traceback goes with the line
        that first says it (not with its repeats). ``same``: what of ``problem`` stays the same
        while it is the same problem (a sink's status and hint, without the destination's words
        that may embed a request ID: each retry was a new problem, at info level, until
        2026-12-05), compared in place of ``problem`` to tell a new one."""
        now = time.monotonic()
        self.count += 1
        key = problem if same is None else same
        if self.count == 1:
            self._since = self._logged = now
            self.since_wall = time.time()
            if self._board is not None:
                self._board[self._reader] = self
            self.log.log(
                level, "%s failed (%s); retrying in %.1f s", self.what, problem, delay, exc_info=error
            )
        elif now - self._logged >= REMIND_SECONDS:
            self._logged = now
            self.log.log(
                level,
                "%s still failing (%s): %d attempts over %.0f s; retrying in %.1f s",
                self.what,
                problem,
                self.count,
                now - self._since,
                delay,
            )
        elif key != self._problem:
            self.log.info(
                "%s still failing, now (%s); retrying in %.1f s", self.what, problem, delay, exc_info=error
            )
        else:
            self.log.debug("%s failed again (%s); retrying in %.1f s", self.what, problem, delay)
        self._problem = key

    def succeeded(self) -> None:
        if self.count:
            self.log.info(
                "%s recovered after %d failed attempts over %.0f s",
                self.what,
                self.count,
                time.monotonic() - self._since,
            )
        self.count, self._problem = 0, None
        if self._board is not None:
            self._board.pop(self._reader, None)


class Standing:
    """A problem a reader works through but an operator must fix (two gateways syncing under
    one node name): logged at ``level`` when first seen, again at most every ``REMIND_SECONDS``
    while it lasts (as ``Failures`` reminds), and at info level once it is gone."""

    def __init__(self, logger: logging.Logger, level: int = logging.ERROR) -> None:
        self.log, self.level = logger, level
        self._since: float | None = None
        self._logged = 0.0

    def seen(self, problem: str) -> None:
        now = time.monotonic()
        if self._since is None:
            self._since = self._logged = now
            self.log.log(self.level, "%s", problem)
        elif now - self._logged >= REMIND_SECONDS:
            self._logged = now
            self.log.log(self.level, "%s (for %.0f s now)", problem, now - self._since)

    def gone(self, message: str) -> None:
        if self._since is not None:
            self.log.info("%s", message)
        self._since = None
