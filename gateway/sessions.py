"""Dashboard logins: random server-side sessions behind an HttpOnly, SameSite=Strict cookie.

Owns the session table (in memory, per process: a restart logs everyone out), the cookie's
name (one per port: ``cookie_name``) and flags, and the same-origin test that guards every
state-changing form (login, logout). A session only ever reads: the admin API accepts its
cookie on GET and HEAD, and anything that changes data still needs the bearer token
(``gateway/admin.py``). And only on requests from the dashboard's own pages, or the operator's
own (a typed URL, a bookmark): ``SameSite=Strict`` keeps the cookie off other sites' requests,
but not off those of a page on another port of the same host (the public listener's site,
say), which is the same site.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from aiohttp import web

COOKIE = "gw_admin_session"
"""The session cookie's name, before the port the browser reached the listener on
(``cookie_name``)."""
_HOST_PORT = re.compile(r"(?:\[[0-9A-Za-z:.%]*\]|[^:\[\]]*):([0-9]{1,5})")
_SESSION_COOKIES = re.compile(re.escape(COOKIE) + r"(?:_[0-9]{1,5})?")
PAGES = frozenset({"/", "/login", "/logout", "/dashboard"})
"""Dashboard paths that answer without a token (each checks the session itself)."""
STATIC_PREFIX = "/static/"
READ_METHODS = frozenset({"GET", "HEAD"})
OWN_FETCHES = frozenset({"same-origin", "none"})
"""``Sec-Fetch-Site`` values a session's cookie counts on: a request of the dashboard's own
pages, or one the operator made (``none``: typed, a bookmark). A browser sets the header
itself; a page cannot."""
MAX_SESSIONS = 1000
"""Most live sessions; the oldest goes first when a new login would pass it."""


class Sessions:
    """Session ID → expiry. Only a SHA-256 of each ID is kept, so the table holds nothing a
    cookie could be rebuilt from; lookups go through a dict keyed by that digest."""

    def __init__(self, lifetime_seconds: int, clock: Callable[[], float] = time.time) -> None:
        self.lifetime = lifetime_seconds
        self.clock = clock
        self._expiry: dict[bytes, float] = {}

    @staticmethod
    def _digest(session_id: str) -> bytes:
        return hashlib.sha256(session_id.encode("utf-8", "surrogateescape")).digest()

    def start(self) -> str:
        now = self.clock()
        self._expiry = {k: t for k, t in self._expiry.items() if t > now}
        while len(self._expiry) >= MAX_SESSIONS:
            del self._expiry[min(self._expiry, key=self._expiry.__getitem__)]
        session_id = secrets.token_urlsafe(32)
        self._expiry[self._digest(session_id)] = now + self.lifetime
        return session_id

    def valid(self, session_id: str | None) -> bool:
        if not session_id:
            return False
        key = self._digest(session_id)
        expiry = self._expiry.get(key)
        if expiry is None:
            return False
        if expiry <= self.clock():
            del self._expiry[key]
            return False
        return True

    def end(self, session_id: str | None) -> None:
        if session_id:
            self._expiry.pop(self._digest(session_id), None)

    def __len__(self) -> int:
        return len(self._expiry)


SESSIONS_KEY = web.AppKey("sessions", Sessions)


def cookie_name(host: str) -> str:
    """The session cookie's name for an admin listener reached at ``host`` (a ``Host`` header:
    ``127.0.0.1:9090`` gives ``gw_admin_session_9090``; without a port, ``gw_admin_session``).
    A browser keeps cookies by host name, not port: under one name, a login to a second
    gateway on this host (``:9091``, staging beside production) replaced the first's cookie,
    and signed the operator out there. The port the browser used, not the one the listener
    binds: two gateways' listeners on 9090 behind SSH tunnels on 9000 and 9001 are two
    cookies too."""
    found = _HOST_PORT.fullmatch(host)
    return f"{COOKIE}_{int(found[1])}" if found else COOKIE


def session_cookie(request: web.Request) -> str:
    """The session cookie's name on this request (``cookie_name`` of its ``Host``)."""
    return cookie_name(request.headers.get("Host", ""))


def is_session_cookie(name: str) -> bool:
    """Whether ``name`` is a dashboard session cookie's, of any port (``cookie_name``): what the
    proxy takes out of what a site is sent, and an identity cookie may not be named."""
    return _SESSION_COOKIES.fullmatch(name) is not None


def has_cookie_session(request: web.Request) -> bool:
    """Whether the request's cookie names a live session, wherever the request came from."""
    sessions = request.app.get(SESSIONS_KEY)
    return sessions is not None and sessions.valid(request.cookies.get(session_cookie(request)))


def from_elsewhere(request: web.Request) -> bool:
    """A browser says the request came from a page that is not the dashboard's origin: another
    site, or another port or scheme of this host (``Sec-Fetch-Site: same-site``). A request
    without the header (curl, a script, a browser too old to send it) is not judged here."""
    site = request.headers.get("Sec-Fetch-Site")
    return site is not None and site not in OWN_FETCHES


def has_session(request: web.Request) -> bool:
    """A live session, on a request from the dashboard's own origin (or the operator's own):
    a page elsewhere that makes the browser send the cookie gets no session of it."""
    return not from_elsewhere(request) and has_cookie_session(request)


def same_origin(request: web.Request) -> bool:
    """A browser's form or fetch from one of our own pages. ``Sec-Fetch-Site`` (a header only
    the browser can set) must say same-origin when sent; an ``Origin`` must name this host —
    except ``null``, which Chromium sends for a same-origin form under some referrer
    policies, and which then counts only with that same-origin ``Sec-Fetch-Site``. A request
    with neither header is refused, so a page elsewhere can never log someone in or out."""
    site = request.headers.get("Sec-Fetch-Site")
    origin = request.headers.get("Origin")
    if site is not None and site != "same-origin":
        return False
    if origin is not None and origin != "null":
        try:
            parts = urlsplit(origin)
        except ValueError:  # e.g. "http://[::1": no origin of ours
            return False
        return parts.scheme in ("http", "https") and parts.netloc.lower() == request.host.lower()
    return site == "same-origin"


def set_cookie(response: web.StreamResponse, request: web.Request, session_id: str, lifetime: int) -> None:
    response.set_cookie(
        session_cookie(request),
        session_id,
        max_age=lifetime,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=reached_over_https(request),
    )


def reached_over_https(request: web.Request) -> bool:
    """Whether the browser reached the admin listener over HTTPS: directly (TLS on it), or
    through a TLS proxy in front that says so (``X-Forwarded-Proto: https``, its first hop).
    The header is believed from anyone: all it can do is mark the cookie ``Secure``, which a
    browser on plain HTTP then does not keep; plain HTTP on loopback must not get one."""
    if request.secure:
        return True
    forwarded = request.headers.get("X-Forwarded-Proto", "")
    return forwarded.partition(",")[0].strip().lower() == "https"


def clear_cookie(response: web.StreamResponse, request: web.Request) -> None:
    response.del_cookie(session_cookie(request), path="/")
