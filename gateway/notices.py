"""Warnings about the configuration that the gateway says once, not once per process and reload.

Owns ``Notices``: what a built pipeline's addons warned of (``Context.warn``), said only by the
process that speaks for the gateway (the only one, or worker 0 of a supervisor's), and at a
reload only what the running config did not already make it say. Reads and writes nothing but
the log. Until 2026-12-05 each worker said GeoIP's "no database configured" at its start and
again at every SIGHUP: with four workers, eight lines for one unchanged fact at the first reload.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field


@dataclass
class Notices:
    speaks: bool = True
    """This process says the warnings (False: a worker other than worker 0, which only notes them)."""
    said: frozenset[str] = frozenset()
    """What the running pipeline's config warned of: not said again by the next one."""
    pending: set[str] = field(default_factory=set)
    """What the pipeline being built warns of."""

    def begin(self) -> None:
        """A pipeline is being built (at start, or a reload's)."""
        self.pending = set()

    def warn(self, logger: logging.Logger, text: str) -> None:
        if self.speaks and text not in self.said:
            logger.warning(text)
        self.pending.add(text)

    def commit(self) -> None:
        """The pipeline built runs: what it warned of is what the next one is judged by. A reload
        refused before this (a corrupt GeoIP file) leaves the running one's standing."""
        self.said = frozenset(self.pending)
