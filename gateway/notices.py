"""Warnings about the configuration that the gateway says once, not once per process and reload.

Owns ``Notices`` and ``config_warnings`` (the config's warnings of keys set to no effect).
``Notices``: what a built pipeline's addons warned of (``Context.warn``), said only by the
process that speaks for the gateway (the only one, or worker 0 of a supervisor's), and at a
reload only what the running config did not already make it say. Reads and writes nothing but
the log. Until 2026-12-05 each worker said GeoIP's "no database configured" at its start and
again at every SIGHUP: with four workers, eight lines for one unchanged fact at the first reload.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.options import Options


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


def config_warnings(options: Options) -> list[str]:
    """What the config allows but does not do what it reads as, each naming its keys (not
    refused: harmless, or meant for a signed event): ``[webhooks]``'s, ``[[channels.rules]]``',
    ``identity.samesite``'s.
    One list for ``gateway check``, the start and a reload, which says those it brings."""
    from gateway.channels import channels_warnings
    from gateway.sources import webhooks_warnings

    return webhooks_warnings(options.webhooks) + channels_warnings(options) + identity_warnings(options)


def identity_warnings(options: Options) -> list[str]:
    """``identity.samesite = "Strict"``: browsers send no Strict cookie on a visit that starts
    on another site, yet keep one that visit's answer sets (RFC 6265bis §5.7, top-level
    navigations), so each campaign click is a new visitor whose ID replaces the visitor's own.
    Not refused: a site's policy may ask for Strict on every cookie."""
    if options.identity.samesite != "Strict":
        return []
    return [
        'identity.samesite: "Strict" keeps the ID cookie off every visit that starts on another site'
        " (an ad, a search result, an email link), so the gateway sees a new visitor there and the ID"
        ' it sets replaces the visitor\'s own: each campaign click starts a new journey; use "Lax"'
        " (the default), which browsers send on such a visit"
    ]
