"""Rule matching shared by ``stitching`` and ``conversions``: which rules a request matches.

Owns the compiled form of a rule's match (method, path regex compiled once, host, success
statuses, the most body read) and ``RuleIndex``, which asks the host for the bodies the
matching rules read and tells which rules fired. What a rule reads lives in
``addons/extract.py`` (with the parsers in ``forms``, ``cookies``, ``amounts`` and
``values``); its ``when`` in ``addons/conditions.py``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from addons.campaign import hostname
from addons.extract import Extractor
from gateway.codings import readable_accept_encoding
from gateway.emails import without_email
from gateway.logs import Throttled
from gateway.pipeline import Exchange
from gateway.ruleconfig import ConversionRule, IdentityRule

log = logging.getLogger("gateway.rules")

VISITORS_OWN = ("jwt_", "invalid_user_id", "placeholder_user_id")
"""Reasons the visitor's own input decides (a token expired or forged, an ID typed that is
none): said at info. The others say the rule does not fit the site's answer (the value moved,
the body not JSON or too large for ``max_body``, a capture that finds nothing): a warning."""


class FailureLines:
    """A fired rule that could not read a value says so in the log, once per rule and reason at
    most every minute (with how many like it were held back), never the value: until 2026-12-08
    only ``gateway_extraction_failures_total`` said it. ``kind``: ``identity`` or
    ``conversion``; ``live``: ``Context.live`` (off, nothing is said)."""

    def __init__(self, kind: str, live: bool) -> None:
        self.kind, self.live = kind, live
        self.lines: dict[tuple[str, str], Throttled] = {}  # bounded: the rules and their reasons

    def __call__(self, ex: Exchange, rule: str, reason: str, what: str, outcome: str) -> None:
        """``what``: the value not read (``its user ID``); ``outcome``: what the rule did then."""
        if not self.live:
            return
        line = self.lines.get((rule, reason))
        if line is None:
            bare = reason
            for field in ("when_", "value_", "currency_", "order_id_"):
                bare = bare.removeprefix(field)
            level = logging.INFO if bare.startswith(VISITORS_OWN) else logging.WARNING
            line = self.lines[(rule, reason)] = Throttled(log, level, 60.0)
        status = ex.response.status if ex.response is not None else 0
        line(
            "%s rule %r fired on %s %s (%d) and could not read %s: %s; %s"
            " (gateway_extraction_failures_total{rule=%s,reason=%s};"
            " gateway rules try on a recording of it says what the rule read)",
            self.kind,
            rule,
            ex.request.method,
            without_email(ex.request.path[:200]),
            status,
            what,
            reason,
            outcome,
            f'"{rule}"',
            f'"{reason}"',
        )


@dataclass(frozen=True, slots=True)
class Match:
    path: re.Pattern[str]
    host: str
    status: frozenset[int]
    max_body: int
    request_body: bool
    response_body: bool


def compile_match(rule: IdentityRule | ConversionRule, extractors: Sequence[Extractor]) -> Match:
    """``extractors``: every source the rule reads, its ``when`` conditions' included."""
    return Match(
        path=re.compile(rule.path),
        host=rule.host.lower(),
        status=frozenset(rule.status),
        max_body=rule.max_body,
        request_body=any(e.request_body for e in extractors),
        response_body=any(e.response_body for e in extractors),
    )


def _ask_for_readable_body(ex: Exchange) -> None:
    """Offer the site only the codings a rule can read (``readable_accept_encoding``): a site
    that prefers brotli or zstd answers browsers (which offer both) in a coding the rule
    could not decode. The visitor still gets a coding they asked for."""
    headers = ex.request.headers
    getall = getattr(headers, "getall", None)
    offered = ", ".join(getall("accept-encoding", ())) if getall else headers.get("accept-encoding")
    # None offered accepts any coding (RFC 9110 §12.5.3): ask for none, as such clients expect.
    narrowed = readable_accept_encoding(offered) if offered else "identity"
    if narrowed is not None:
        ex.upstream_headers["accept-encoding"] = narrowed


class RuleIndex:
    """Rules by method, so a request no rule's method matches costs one dict lookup."""

    def __init__(self, rules: Sequence[tuple[str, Match, Any]]) -> None:
        self.by_method: dict[str, list[tuple[Match, Any]]] = {}
        for method, match, rule in rules:
            self.by_method.setdefault(method, []).append((match, rule))

    def request(self, ex: Exchange) -> None:
        """Ask the host for the bodies the matching rules read."""
        candidates = self.by_method.get(ex.request.method)
        if not candidates:
            return
        host = hostname(ex.request.host)
        for match, _ in candidates:
            if (not match.host or match.host == host) and match.path.fullmatch(ex.request.path):
                ex.watched = True
                if match.request_body:
                    ex.want_request_body = max(ex.want_request_body, match.max_body)
                if match.response_body:
                    if not ex.want_response_body:
                        _ask_for_readable_body(ex)
                    ex.want_response_body = max(ex.want_response_body, match.max_body)

    def fired(self, ex: Exchange, matched: Callable[[Any, int], None] | None = None) -> list[Any]:
        """The matching rules whose success statuses include the response's (none for an exchange
        without a visitor). ``matched(rule, status)`` is called for every rule the request
        matched, fired or not: the operator's clue to a rule that never fires."""
        if ex.response is None:
            return []
        candidates = self.by_method.get(ex.request.method)
        if not candidates:
            return []
        host = hostname(ex.request.host)
        status = ex.response.status
        fired = []
        for match, rule in candidates:
            if (match.host and match.host != host) or not match.path.fullmatch(ex.request.path):
                continue
            if matched is not None:
                matched(rule, status)
            if status in match.status and ex.visitor is not None:
                fired.append(rule)
        return fired
