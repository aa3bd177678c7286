"""Bounded in-memory state for the bots addon: sliding-window counters and distinct-source sets.

Each table is an LRU of at most ``max_keys`` keys, so memory stays bounded
whatever the traffic: a flood of new keys evicts the least recently seen
ones, while a key that keeps coming (the burst being measured) stays. A
counter keeps two numbers per key — this window's count and the previous
window's — and estimates the count over the last ``window`` seconds as
``current + previous * (share of the previous window still inside it)``:
constant memory per key, and a burst decays linearly over the window after it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class WindowCounter:
    """Events per key in a sliding window of ``window`` seconds, for at most ``max_keys`` keys."""

    __slots__ = ("_keys", "max_keys", "window")

    def __init__(self, window: float, max_keys: int) -> None:
        self.window = window
        self.max_keys = max_keys
        self._keys: OrderedDict[Hashable, list[int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def hit(self, key: Hashable, now: float) -> float:
        """Count one event for ``key`` at ``now`` (Unix seconds); the estimated count in the window."""
        slot = int(now // self.window)
        entry = self._keys.get(key)
        if entry is None:
            entry = self._keys[key] = [slot, 0, 0]
            if len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(key)
            if slot > entry[0]:  # a new window: the current count becomes the previous one
                entry[2] = entry[1] if slot == entry[0] + 1 else 0
                entry[0], entry[1] = slot, 0
            elif slot < entry[0] - 1:  # back before both windows: a backfill replaying lines
                entry[0], entry[1], entry[2] = slot, 0, 0  # out of time order starts afresh
        if slot < entry[0]:  # late, from the window before: counted there
            entry[2] += 1
        else:
            entry[1] += 1
        # The previous window's share still inside the sliding one, clamped to 0..1 by comparisons:
        # min() and max() cost ~1,600 instructions a call each on CPython 3.11, a third of a hit.
        share = 1.0 - (now - entry[0] * self.window) / self.window
        return entry[1] + entry[2] * (share if 0.0 < share < 1.0 else 1.0 if share >= 1.0 else 0.0)


class DistinctSources:
    """Distinct sources (IPs, visitors) seen per key within the last ``window`` seconds, at most
    ``cap`` kept per key (each with when it was last seen)."""

    __slots__ = ("_keys", "cap", "max_keys", "window")

    def __init__(self, window: float, max_keys: int, cap: int) -> None:
        self.window = window
        self.max_keys = max_keys
        self.cap = cap
        self._keys: OrderedDict[Hashable, dict[Hashable, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: Hashable, source: Hashable, now: float) -> int:
        """Note ``source`` for ``key`` at ``now``; how many distinct sources the key had within a
        window of ``now`` (at most ``cap``).

        A sliding window, as the README promises: sources a window or more before ``now`` are
        forgotten, so four addresses within four seconds count together whichever hour they
        straddle, and four spread over two hours do not (until 2026-12-07 a key's set ran from
        the clock's window its first source came in to the end of the next: 1 to 2 windows, and
        started afresh at fixed times). Out of time order (a backfill replaying lines), a source
        seen less than a window after ``now`` counts too; one further either way is forgotten.
        A full set gives way to the new source by dropping its longest unseen one: every source
        kept is then within the window, and the count stays ``cap``.
        """
        sources = self._keys.get(key)
        if sources is None:
            sources = self._keys[key] = {}
            if len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(key)
            window = self.window
            stale = [s for s, at in sources.items() if not -window < now - at < window]
            for gone in stale:
                del sources[gone]
        seen = sources.get(source)
        if seen is None:
            if len(sources) >= self.cap:
                del sources[min(sources, key=sources.__getitem__)]
            sources[source] = now
        elif now > seen:
            sources[source] = now
        return len(sources)


class Lru(Generic[V]):
    """A plain mapping capped at ``max_keys``, least recently used out first."""

    __slots__ = ("_items", "max_keys")

    def __init__(self, max_keys: int) -> None:
        self.max_keys = max_keys
        self._items: OrderedDict[Hashable, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> V | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: Hashable, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        if len(self._items) > self.max_keys:
            self._items.popitem(last=False)


class HeldItems(Generic[V]):
    """Items kept per key until something is decided about the key, at most ``per_key`` each
    and ``budget`` in all: past the budget, the least recently added-to keys are dropped whole."""

    __slots__ = ("_keys", "budget", "held", "per_key")

    def __init__(self, per_key: int, budget: int) -> None:
        self.per_key = per_key
        self.budget = budget
        self.held = 0
        self._keys: OrderedDict[Hashable, list[V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: Hashable, item: V) -> None:
        items = self._keys.get(key)
        if items is None:
            items = self._keys[key] = []
        else:
            self._keys.move_to_end(key)
        if len(items) >= self.per_key:
            del items[0]
            self.held -= 1
        items.append(item)
        self.held += 1
        while self.held > self.budget:
            _, dropped = self._keys.popitem(last=False)
            self.held -= len(dropped)

    def take(self, key: Hashable) -> list[V]:
        """The key's items, forgotten here."""
        items = self._keys.pop(key, [])
        self.held -= len(items)
        return items
