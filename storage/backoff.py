"""Retry delays for the durable readers of the log (the central sync, the sinks)."""

from __future__ import annotations

import random


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
