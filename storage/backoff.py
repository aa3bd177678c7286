"""Retry delays for the durable readers of the log (the central sync, the sinks), and the wait
between their attempts."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable


class Backoff:
    """Exponential backoff with jitter: the n-th retry waits uniform(low/2, min(high, low·2ⁿ)), so
    many nodes coming back at once spread out, and none retries in a tight loop."""

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high, self.failures = low, high, 0

    def next(self) -> float:
        ceiling = min(self.high, self.low * 2 ** min(self.failures, 30))
        self.failures += 1
        return random.uniform(self.low / 2, ceiling)

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
