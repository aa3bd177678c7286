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
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config import Settings
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

    def warn(self, logger: logging.Logger, text: str, level: int = logging.WARNING) -> None:
        """``text`` said at ``level``: an ``INFO`` one for a choice the config made that an
        operator need not act on (no GeoIP database named, the starter's default)."""
        if self.speaks and text not in self.said:
            logger.log(level, text)
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


def secret_warnings(settings: Settings) -> list[str]:
    """``identity.secret`` read with white space at an end or a control character (the newline
    of the env file it came from): not refused, as the admin token and the senders' secrets
    are, since a gateway that ran so keyed its store with it, and a refusal would cost every
    visitor their ID; but said, since a command given the variable without it (typed in a
    shell) computes other keys: ``gateway erase`` finds none of the user's rows and exits 0."""
    from gateway.config_values import padded

    name = settings.options.identity.secret.removeprefix("env:")
    try:
        value = settings.secret.decode()
    except UnicodeDecodeError:
        return []
    if not value or not padded(value):
        return []
    what = [
        said
        for said, found in (
            ("starts with white space", value[:1].isspace()),
            ("ends with white space", value[-1:].isspace()),
            ("holds a control character", not value.strip().isprintable()),
        )
        if found
    ]
    kept = ", newline and all" if value.endswith("\n") else ""
    return [
        f"identity.secret: the value of {name} {' and '.join(what)} (a newline from the file it was"
        f" read from?): it is used as it is{kept}, and every visitor and user key derives from it, so"
        " each gateway and command on this store must get the very same value: one given the variable"
        " without it (typed in a shell) finds none of the stored visitors and users (gateway erase"
        " would erase nothing); a new installation: set it without (printf %s, not echo)"
    ]


def warn_of_secret(settings: Settings) -> None:
    """A one-shot command's line on stderr for each of ``secret_warnings``."""
    for warning in secret_warnings(settings):
        print(f"gateway: warning: {warning}", file=sys.stderr)
