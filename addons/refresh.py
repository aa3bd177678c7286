"""When a returning visitor's page view may refresh their ID cookie (``identity.refresh_days``).

Owns two pure pieces ``addons/identity.py`` uses: the rule for which answers no shared cache
(a CDN, a proxy cache) gives anyone but the visitor who asked (``for_this_visitor_only``, read
from RFC 9111), and the per-process memory of the visitors refreshed lately
(``RecentRefreshes``). A refresh on any other answer would need the ``Cache-Control: private``
the hosts add to an answer carrying our cookie, and so change the site's caching of its page.
The cookie value (``v1.<id>.<tag>``) holds no issue time, so how recently a visitor's cookie
was set is only known from this memory: a forgotten visitor is refreshed again, never missed.
No state beyond that memory; no raw ID in it (Python's per-process hash of the ID).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence

from gateway.forwarding import cdn_cache_fields, list_items, surrogate_no_store

REMEMBERED = 16_384
"""Visitors the memory holds; the one refreshed longest ago is forgotten first (and refreshed
again at its next such page view: one more Set-Cookie, nothing lost)."""

_ALLOW_SHARED_FOR_AUTHORIZATION = frozenset({"public", "s-maxage", "must-revalidate"})


def _lines(headers: Mapping[str, str], name: str) -> Sequence[str]:
    """Every line of header ``name`` (lower case): a multidict's in one lookup, a plain
    mapping's (the importer's, a test's) one."""
    getall = getattr(headers, "getall", None)
    if getall is not None:
        lines: Sequence[str] = getall(name, ())
        return lines
    value = headers.get(name)
    return () if value is None else (value,)


def _directives(lines: Iterable[str]) -> dict[str, str]:
    """``Cache-Control`` lines → directive (lower case) → its argument, unquoted, lower case
    ("" for none). A quoted list (``private="a, b"``) is kept whole."""
    found: dict[str, str] = {}
    for line in lines:
        for piece in list_items(line):
            name, _, value = piece.partition("=")
            # An unqualified directive wins over a qualified one of the same name.
            if (name := name.strip().lower()) and found.get(name) != "":
                found[name] = value.strip().strip('"').lower()
    return found


def for_this_visitor_only(
    request_headers: Mapping[str, str], status: int, response_headers: Mapping[str, str]
) -> bool:
    """Whether a shared cache may give this answer, with a Set-Cookie we add, to no one but the
    visitor who asked (RFC 9111): its ``Cache-Control`` says ``no-store`` or ``private``
    (§3), or ``private="set-cookie"`` (§5.2.2.7: the cache keeps it without its Set-Cookie
    lines); the request had ``Authorization`` and the answer says none of ``public``,
    ``s-maxage``, ``must-revalidate`` (§3.5); or its ``Vary`` names ``Cookie`` or is ``*``
    (§4.1: given only to a request with the same Cookie header, which holds this visitor's ID).
    A CDN's own field (RFC 9213: ``CDN-Cache-Control``) must say so too: that CDN reads it
    instead of ``Cache-Control``; and a ``Surrogate-Control`` (W3C Edge Architecture, read by a
    surrogate ahead of both) must say ``no-store`` to every surrogate (``surrogate_no_store``).

    Not ``no-cache`` (stored, and given to others after each revalidation: §5.2.2.4), nor the
    site's own ``Set-Cookie`` (§7.3: no bar to storing). Never a 304: its fields update the
    copy a cache holds and gives others (§4.3.4)."""
    if status == 304 or status < 200:
        return False
    vary = {field.strip().lower() for line in _lines(response_headers, "vary") for field in line.split(",")}
    if "*" in vary or "cookie" in vary:
        return True
    # A CDN told by its own field (RFC 9213: CDN-Cache-Control…) reads it instead of
    # Cache-Control: each such field must keep the answer from others too.
    authorized = "authorization" in request_headers
    targeted, surrogate = cdn_cache_fields(response_headers)
    if surrogate is not None and surrogate_no_store(_lines(response_headers, "surrogate-control")):
        return False
    return all(
        _kept_from_others(_directives(_lines(response_headers, name.lower())), authorized)
        for name in ("cache-control", *targeted)
    )


def _kept_from_others(directives: Mapping[str, str], authorized: bool) -> bool:
    """Whether a cache that reads these directives gives the answer to no one else: ``no-store``,
    ``private`` or ``private="set-cookie"``, or (a request with ``Authorization``) none of
    ``public``, ``s-maxage``, ``must-revalidate``."""
    if directives.get("no-store") == "" or directives.get("private") == "":
        return True
    if "set-cookie" in (field.strip() for field in directives.get("private", "").split(",")):
        return True
    return authorized and not _ALLOW_SHARED_FOR_AUTHORIZATION & directives.keys()


class RecentRefreshes:
    """The visitors whose cookie this process set lately, and when: at most one page-view
    refresh per visitor per ``days``. Each process has its own (a supervisor's workers too)."""

    def __init__(self, days: int) -> None:
        self.seconds = days * 86400.0
        self.when: OrderedDict[int, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self.when)

    def due(self, visitor_id: str, now: float) -> bool:
        """Whether ``visitor_id``'s cookie was set no later than ``days`` ago, as far as known."""
        last = self.when.get(hash(visitor_id))
        return last is None or now - last >= self.seconds

    def mark(self, visitor_id: str, now: float) -> None:
        """``visitor_id``'s cookie is set at ``now`` (a landing, a login, a refresh)."""
        key = hash(visitor_id)
        self.when[key] = now
        self.when.move_to_end(key)
        if len(self.when) > REMEMBERED:
            self.when.popitem(last=False)
