"""The journeys that did not convert, counted by path as their rows come (``Journeys``, for
``data_driven``'s learning: ``Reports._other_journeys``).

Pure (no database). A person alone's path is made from its rows as they come, without a tuple
per row nor a sort unless its times are out of id order; the people of several devices are
gathered and sorted at the end. Tuned with the report benchmarks (``bench/REPORTS.md``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from operator import itemgetter
from typing import Any

from gateway.channels import DIRECT, INTERNAL
from storage.people import People

_TIME, _CHANNEL, _HEAD = itemgetter(0), itemgetter(2), itemgetter(0, 1, 2)


class Journeys:
    """``Reports._other_journeys``' journeys, counted by path as the rows come: a visitor bound
    to nobody (a person alone, most) from its rows as they are, in id order; the people of
    several devices, and rows that need more (a time out of id order, a channel to classify),
    from their rows gathered per person and sorted at the end. Rows begin with the time, id,
    channel (and verdict) of a touchpoint: the conversions' (``Cand``) and the period's."""

    def __init__(self, people: People) -> None:
        self.person_of, self.users = people.person_of, people.visitors_of
        self.paths: list[tuple[str, ...]] = []
        self.gathered: dict[str, list[tuple[str, str, str | None]]] = defaultdict(list)

    def add(self, visitor: str, rows: list[tuple[Any, ...]]) -> None:
        """All of ``visitor``'s kept rows, in id order. Time order is id order unless a time
        goes back (imported rows): id breaks ties of time, as the sort of gathered rows does."""
        if not rows:
            return
        if visitor not in self.person_of and visitor not in self.users:  # a person alone
            path = tuple(map(_CHANNEL, rows))
            if None not in path:
                if len(rows) == 1:
                    self.paths.append(path)
                    return
                times = list(map(_TIME, rows))
                if times == sorted(times):  # in order (a sorted list is one pass, in C)
                    self.paths.append(path)
                    return
        self.gathered[self.person_of.get(visitor, visitor)] += map(_HEAD, rows)

    def gather(self, visitor: str, row: tuple[Any, ...]) -> None:
        """One row of ``visitor``'s, whatever its order, for its person's journey."""
        self.gathered[self.person_of.get(visitor, visitor)].append(row[:3])

    def done(self, channels_of: Callable[[list[str]], dict[str, str]]) -> Counter[tuple[str, ...]]:
        """Every journey's path, and how many took it: the gathered ones sorted by time (then
        id), their rows stored before channels existed classified (``channels_of``), the
        internal ones among them left out."""
        paths = self.gathered
        unclassified = [tid for path in paths.values() for _, tid, channel in path if channel is None]
        if unclassified:
            channels = channels_of(unclassified)
            for person, path in paths.items():
                path = [(ts, tid, channel or channels.get(tid, DIRECT)) for ts, tid, channel in path]
                paths[person] = [t for t in path if t[2] != INTERNAL]
        for path in paths.values():
            if path:
                path.sort()
                self.paths.append(tuple(map(_CHANNEL, path)))
        return Counter(self.paths)  # in C, cheaper than counting each path as it comes
