"""Which of ``gateway import``'s visitor-user bindings go to the store, and which are counted.

Owns the import's rule for a pair an identity rule binds again and again: bound
once, by the first line the store takes that carries it. The chain (in this
process or a worker) binds at every match; ``Bindings.sift`` drops a copy only
once the store has the pair (a batch that carried it committed), hands the store
the copies of a pair still in flight as spares (the store keeps one binding per
pair; a spare is not counted in the summary), and ``Bindings.settle``, told
what became of each batch, counts the first spare stored of a pair whose line
the store refused. Until 2026-12-06 a copy was dropped as soon as the pair had
been seen, so a refused first line left the pair unbound.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from addons.stitching import RECENT, RecentPairs
from gateway.backfill import Summary
from gateway.events import Binding, Event


class Bindings:
    """The pairs the store has (lately), those with copies in flight, and the spares handed."""

    def __init__(self, size: int = RECENT) -> None:
        self.stored = RecentPairs(size)
        """Pairs a committed batch carried: the store has them, later copies are dropped."""
        self.in_flight: dict[tuple[str, str], int] = {}
        """Pairs with copies handed to the store and not yet settled: how many."""
        self.spares: set[str] = set()
        """The ids of the copies handed but not counted (an earlier copy of the pair was)."""
        self.unbound: set[tuple[str, str]] = set()
        """Pairs whose counted copy the store refused: the next copy stored is counted instead."""

    def sift(self, events: list[Event]) -> list[Event]:
        """``events`` (in file order) less the copies of pairs the store has; the copies of
        pairs in flight kept as spares (``spare``)."""
        kept: list[Event] = []
        for event in events:
            if type(event) is Binding:
                pair = (event.visitor_key, event.user_key)
                if pair in self.stored.pairs:
                    self.stored.first(pair)  # lately seen: kept longest
                    continue
                if self.in_flight.get(pair, 0):
                    self.spares.add(event.id)
                self.in_flight[pair] = self.in_flight.get(pair, 0) + 1
            kept.append(event)
        return kept

    def spare(self, event: Event) -> bool:
        """Whether ``event`` is a copy handed in case its pair's counted one is refused."""
        return type(event) is Binding and event.id in self.spares

    def settle(
        self,
        events: Sequence[Event],
        refused: Sequence[tuple[int, int]],
        summary: Summary | None,
        left_out: Collection[str] = (),
    ) -> None:
        """A batch's outcome: ``events`` committed but for the ``refused`` ranges. A pair stored
        drops its later copies; a counted copy refused leaves its pair to the next one stored,
        which is counted then (the refused one is uncounted with its line, ``Summary.refused``).
        ``left_out``: the ids of the copies the store left out as late rows of an erased user
        (dated before the erasure): their pair is not stored, so a later copy (a sign-in after
        the erasure) still goes to the store. Until 2026-12-07 it was dropped as one it had."""
        out = {i for start, end in refused for i in range(start, end)}
        for i, event in enumerate(events):
            if type(event) is not Binding:
                continue
            pair = (event.visitor_key, event.user_key)
            spare = event.id in self.spares
            self.spares.discard(event.id)
            left = self.in_flight.get(pair, 1) - 1
            if left:
                self.in_flight[pair] = left
            else:
                self.in_flight.pop(pair, None)
            if i in out:
                if not spare and left:
                    self.unbound.add(pair)
                continue
            if event.id in left_out:
                continue
            if spare and pair in self.unbound:  # the first copy stored since the counted one was refused
                self.unbound.discard(pair)
                if summary is not None:
                    summary.events[event.table] += 1
            self.stored.first(pair)
        self.unbound.intersection_update(self.in_flight)
