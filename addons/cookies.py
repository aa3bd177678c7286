"""Cookies as rules read them: the one a response's Set-Cookie lines leave the browser
holding (a deletion leaves none) and the one a request sends.

Owns the pure parsers behind the ``cookie``, ``set_cookie`` and ``jwt_cookie`` sources
(``addons/extract.py``): Set-Cookie lines, their ``Max-Age`` and ``Expires``, the Domain and
Path a browser keeps a cookie by (and the Domains it refuses for the host asked: another
site's, a public suffix), name prefixes (``wordpress_logged_in_*``). No state.
"""

from __future__ import annotations

import email.utils
import ipaddress
import re
from collections.abc import Mapping, Sequence

from addons.campaign import hostname
from gateway.channels import is_public_suffix
from gateway.pipeline import parse_cookies

_MAX_AGE = re.compile(r"-?[0-9]+")


def deletes(attributes: Sequence[str], now: float) -> bool:
    """Whether a Set-Cookie's attributes delete the cookie: ``Max-Age`` ≤ 0, else (without a
    valid ``Max-Age``, which wins: RFC 6265 §5.3) an ``Expires`` before ``now``."""
    expires: str | None = None
    for attribute in attributes:
        name, _, value = attribute.partition("=")
        name = name.strip().lower()
        if name == "max-age" and _MAX_AGE.fullmatch(seconds := value.strip()):
            # Read by its text: int() refuses more than 4,300 digits (a ValueError, not a cookie).
            return seconds.startswith("-") or not seconds.strip("0")
        if name == "expires":
            expires = value.strip()
    if expires is None:
        return False
    try:  # RFC 1123 dates, and the dashed ones of RFC 850 that PHP and Rails once sent
        parsed = email.utils.parsedate_tz(expires.replace("-", " "))
        return parsed is not None and email.utils.mktime_tz(parsed) < now
    except (ValueError, OverflowError, TypeError, IndexError):
        return False  # a date no one can read: ignored, as browsers ignore it


def domain_matches(host: str, domain: str) -> bool:
    """RFC 6265 §5.1.3: ``host`` (lower-cased, no port) is ``domain`` or a name under it; an IP
    address is only itself."""
    if host == domain:
        return True
    if not host.endswith("." + domain):
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return True
    return False


def scope(attributes: Sequence[str], request_path: str, host: str) -> tuple[str, str] | None:
    """The (Domain, Path) a Set-Cookie's attributes give its cookie, by which a browser keeps it
    (RFC 6265 §5.3): a later line of the same name and scope replaces it, one of another scope
    is kept beside it. Domain "" is host-only (a ``Domain`` naming the host is not); a missing
    or relative ``Path`` is the request path's directory (§5.1.4). None: the browser refuses the
    line, for ``host`` (as a ``Host`` header names it) — a Domain that does not cover it
    (another site's), or a public suffix other than the host itself (``Domain=com``), which
    would span many sites (steps 5 and 6)."""
    domain, path = "", ""
    for attribute in attributes:
        name, _, value = attribute.partition("=")
        name, value = name.strip().lower(), value.strip()
        if name == "domain" and value:
            domain = value.removeprefix(".").lower()
        elif name == "path":
            path = value
    if domain:
        asked = hostname(host)
        if is_public_suffix(domain):
            if domain != asked:
                return None
            domain = ""  # the host itself: the browser keeps it host-only
        elif not domain_matches(asked, domain):
            return None
    if not path.startswith("/"):
        cut = request_path.rfind("/")
        path = request_path[:cut] if cut > 0 and request_path.startswith("/") else "/"
    return domain, path


def set_cookie_lines(headers: Mapping[str, str]) -> Sequence[str]:
    """Every Set-Cookie line of a response's ``headers``: aiohttp's multidict gives them in one
    lookup (``getall``); a plain mapping (a test's, a HAR's) is scanned."""
    getall = getattr(headers, "getall", None)
    if getall is not None:
        lines: Sequence[str] = getall("set-cookie", ())
        return lines
    return [value for header, value in headers.items() if header.lower() == "set-cookie"]


def kept_set_cookie(
    headers: Mapping[str, str], name: str, now: float, request_path: str, host: str
) -> str | None:
    """The value of cookie ``name`` (a name ending in ``*``: of any cookie whose name starts
    with the rest) that a response's Set-Cookie lines leave the browser holding, on ``host`` (a
    ``Host`` header's value). The lines are applied in order as a browser applies them (one it
    refuses for the host changes nothing), one cookie per name, Domain and Path
    (``scope``): a later line replaces an earlier one of its scope, a deletion (an empty value,
    ``Max-Age`` ≤ 0, ``Expires`` before ``now``) removes it. Of several kept (two scopes, or
    two names matching a prefix), the one the browser sends first where both apply (RFC 6265
    §5.4): the longest Path, then the one set first — the one the ``cookie`` source reads from
    the next request, which takes the first of a name. None when none is kept."""
    prefix = name[:-1] if name.endswith("*") else None
    held: dict[tuple[str, str, str], str] = {}
    for line in set_cookie_lines(headers):
        pair, *attributes = line.split(";")
        cookie, sep, _ = pair.partition("=")
        cookie = cookie.strip()
        if not sep or not (cookie == name if prefix is None else cookie.startswith(prefix)):
            continue
        where = scope(attributes, request_path, host)
        if where is None:
            continue  # refused by the browser: it replaces or deletes nothing either
        key = (cookie, *where)
        value = parse_cookies(pair).get(cookie, "")
        if value and not deletes(attributes, now):
            held[key] = value  # a replacement keeps its place: the browser keeps its creation time
        else:
            held.pop(key, None)  # gone: set again by a later line, it is a new cookie, set last
    # sorted() is stable: of equal Paths, the one set first stays first.
    kept = sorted(held.items(), key=lambda item: -len(item[0][2]))
    return kept[0][1] if kept else None


def sent_cookie(cookies: Mapping[str, str], name: str) -> str | None:
    """The request's cookie ``name`` (a name ending in ``*``: the first sent whose name starts
    with the rest); None for none, or an empty one."""
    if not name.endswith("*"):
        return cookies.get(name) or None
    prefix = name[:-1]
    return next((value for cookie, value in cookies.items() if cookie.startswith(prefix) and value), None)
