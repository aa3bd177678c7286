"""Dashboard logins: random server-side sessions behind an HttpOnly, SameSite=Strict cookie.

Owns the session table: in worker 0's memory, where every request reads it, and written
through to the local store (``storage/dashboard_sessions.py``) at each login and logout, so that
a login outlives a restart of the gateway and a logout stays one; a changed ``admin.token`` (or
``identity.secret``) ends every session (``session_key``). It owns the cookie's
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
import hmac
import logging
import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from gateway.forwarding import IPNetwork, is_trusted, trusted_visitor
from gateway.keys import derive
from storage import dashboard_sessions

log = logging.getLogger("gateway.sessions")

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


def session_key(secret: bytes, token: str) -> bytes:
    """The key of the session digests: from ``identity.secret`` and ``admin.token``, so that a
    gateway restarted with another token finds no session of the old one (and the table holds
    nothing that would let the token be guessed without the secret)."""
    return hmac.new(derive(secret, "gateway/dashboard-sessions/v1"), token.encode(), hashlib.sha256).digest()


class Sessions:
    """Session ID → expiry. Only a keyed digest of each ID is kept (HMAC-SHA256 under
    ``session_key``), so neither memory nor the store holds anything a cookie could be rebuilt
    from; lookups go through a dict keyed by that digest. With ``store``, the sessions are
    read from it at start (``load``) and each login and logout is written to it."""

    def __init__(
        self,
        lifetime_seconds: int,
        clock: Callable[[], float] = time.time,
        store: Path | None = None,
        key: bytes = b"",
    ) -> None:
        self.lifetime = lifetime_seconds
        self.clock = clock
        self.store = store
        self._key = key
        self.key_id = hmac.new(key, b"key id", hashlib.sha256).digest()[:16]
        self._expiry: dict[bytes, float] = {}
        self._unwritten: set[bytes] = set()
        """Sessions ended (logouts) whose rows the store did not take (another writer held it past
        the busy timeout, a full disk): read back at a restart, they would let their cookies in
        again. Deleted at the next login or logout, or as the gateway stops (``close``)."""

    def _digest(self, session_id: str) -> bytes:
        return hmac.new(self._key, session_id.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()

    async def load(self) -> None:
        """The store's live sessions of this key (a store it cannot read: none, said in the log)."""
        if self.store is None:
            return
        try:
            started = await dashboard_sessions.load(self.store, self.key_id, self.clock() - self.lifetime)
        except (sqlite3.Error, OSError) as err:
            log.warning("dashboard sessions not read from the store (everyone logs in again): %s", err)
            return
        self._expiry = {digest: at + self.lifetime for digest, at in started.items()}
        while len(self._expiry) > MAX_SESSIONS:
            del self._expiry[min(self._expiry, key=self._expiry.__getitem__)]

    async def start(self, replacing: str | None = None) -> str:
        """A new session (and the end of ``replacing``, the one this browser still sent)."""
        now = self.clock()
        dropped = [k for k, t in self._expiry.items() if t <= now]
        if replacing:
            dropped.append(self._digest(replacing))
        for key in dropped:
            self._expiry.pop(key, None)
        while len(self._expiry) >= MAX_SESSIONS:
            oldest = min(self._expiry, key=self._expiry.__getitem__)
            del self._expiry[oldest]
            dropped.append(oldest)
        session_id = secrets.token_urlsafe(32)
        digest = self._digest(session_id)
        self._expiry[digest] = now + self.lifetime
        if self.store is not None:
            ended = set(self._unwritten)
            try:
                await dashboard_sessions.save(
                    self.store, digest, self.key_id, now, now - self.lifetime, [*dropped, *ended]
                )
            except (sqlite3.Error, OSError) as err:
                log.warning("dashboard session not written to the store (it ends at a restart): %s", err)
            else:
                self._unwritten -= ended
        return session_id

    def valid(self, session_id: str | None) -> bool:
        if not session_id:
            return False
        key = self._digest(session_id)
        expiry = self._expiry.get(key)
        if expiry is None:
            return False
        if expiry <= self.clock():
            del self._expiry[key]  # its row goes at the next login or start
            return False
        return True

    async def end(self, session_id: str | None) -> None:
        if not session_id:
            return
        digest = self._digest(session_id)
        self._expiry.pop(digest, None)
        if self.store is not None:
            self._unwritten.add(digest)
            await self._write_ends(
                "dashboard logout not written to the store (%s): until it is, a restart would let"
                " that session's cookie in again; it is tried again at the next login or logout,"
                " and as the gateway stops"
            )

    async def _write_ends(self, failed: str) -> None:
        """Delete the rows of the sessions ended that the store has not taken yet; ``failed``:
        the log line if it still does not (``%s``: why)."""
        if self.store is None or not self._unwritten:
            return
        ended = set(self._unwritten)
        try:
            await dashboard_sessions.remove(self.store, ended)
        except (sqlite3.Error, OSError) as err:
            # The browser's cookie is cleared all the same; the session is over in this process.
            log.warning(failed, err)
        else:
            self._unwritten -= ended

    async def close(self) -> None:
        """As the gateway stops: the logouts the store has not taken yet, written now."""
        await self._write_ends(
            "dashboard logouts not written to the store as the gateway stops (%s): after the"
            " restart those sessions' cookies are let in again until they expire"
            " (admin.session_hours)"
        )

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


def set_cookie(
    response: web.StreamResponse,
    request: web.Request,
    session_id: str,
    lifetime: int,
    trusted: Sequence[IPNetwork] = (),
    forwarded: bool = False,
) -> None:
    response.set_cookie(
        session_cookie(request),
        session_id,
        max_age=lifetime,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=reached_over_https(request, trusted, forwarded),
    )


def reached_over_https(
    request: web.Request, trusted: Sequence[IPNetwork] = (), forwarded: bool = False
) -> bool:
    """Whether the browser reached the admin listener over HTTPS: directly (TLS on it), or
    through a TLS proxy in front that says so. From a peer in ``proxy.trusted_proxies``
    (``trusted``) the scheme is read as the proxy reads a visitor's (``trusted_visitor``:
    its ``Forwarded`` under ``proxy.trusted_header = "forwarded"``, else the
    ``X-Forwarded-Proto`` value at the client's place): until 2026-12-07 the first
    ``X-Forwarded-Proto`` value was read whoever wrote it, so behind a proxy writing
    ``Forwarded`` alone, or one adding its line after a visitor's own ``http``, the cookie went
    without ``Secure`` over HTTPS. From any other peer an ``X-Forwarded-Proto: https`` (its
    first value) is still believed: a TLS proxy not listed keeps its cookies ``Secure``, and
    all a visitor's own can do is mark its cookie ``Secure``, which a browser on plain HTTP
    then does not keep; plain HTTP on loopback must not get one."""
    if request.secure:
        return True
    if is_trusted(request.remote, trusted):
        headers = request.headers
        return trusted_visitor(lambda name: headers.getall(name, ()), trusted, forwarded).scheme == "https"
    claimed = request.headers.get("X-Forwarded-Proto", "")
    return claimed.partition(",")[0].strip().lower() == "https"


def clear_cookie(response: web.StreamResponse, request: web.Request) -> None:
    response.del_cookie(session_cookie(request), path="/")
