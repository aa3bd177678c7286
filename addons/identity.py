"""First-party visitor ID: reads and verifies the ID cookie, or mints one; plans its Set-Cookie.

Configured by ``[identity]``. A host that already knows the visitor (``gateway
import`` replaying a log) sets ``Exchange.visitor`` first; then only the
Set-Cookie is planned here. The cookie holds a random 128-bit ID and an HMAC
tag (``v1.<id>.<tag>``, base64url); a forged or edited cookie is rejected,
replaced and counted. Only the keyed hash of the ID (``visitor_key``) ever
reaches an event; the raw ID stays in memory.
"""

from __future__ import annotations

import base64
import hmac
import os

from gateway.keys import Mac
from gateway.pipeline import Context, Cookie, Exchange, Visitor

VERSION = "v1"
_ID_BYTES = 16
_TAG_BYTES = 16
VERIFIED_CACHE = 4096
"""Cookie values recently verified, kept so a returning visitor's page, styles, scripts and
images (one cookie, dozens of requests) cost one HMAC, not one each. Only valid values are
kept; a forged value is checked every time."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _tag(key: bytes | Mac, visitor_id: str) -> str:
    mac = key if isinstance(key, Mac) else Mac(key)
    return _b64(mac.digest(f"{VERSION}.{visitor_id}".encode("ascii"))[:_TAG_BYTES])


def new_visitor_id() -> str:
    return _b64(os.urandom(_ID_BYTES))


def cookie_value(key: bytes | Mac, visitor_id: str) -> str:
    """The signed cookie value carrying ``visitor_id`` (``key``: the cookie MAC key, or its
    ``Mac``, which spares re-hashing the key on every request)."""
    return f"{VERSION}.{visitor_id}.{_tag(key, visitor_id)}"


def verify_cookie(key: bytes | Mac, value: str) -> str | None:
    """The visitor ID in a cookie value, or None when the value is malformed or its tag is wrong."""
    parts = value.split(".")
    if len(parts) != 3 or parts[0] != VERSION or len(parts[1]) != 22 or len(parts[2]) != 22:
        return None
    if not (parts[1].isascii() and parts[2].isascii()):
        return None  # compare_digest refuses non-ASCII str; a forged cookie must not raise
    expected = _tag(key, parts[1])
    return parts[1] if hmac.compare_digest(expected.encode(), parts[2].encode()) else None


class Identity:
    def configure(self, ctx: Context) -> None:
        opts = ctx.settings.options.identity
        self.keys = ctx.keys
        self.mac = Mac(ctx.keys.cookie_mac)
        # Cookie value → visitor ID, for values that verified; the oldest goes first when full.
        self.verified: dict[str, str] = {}
        self.metrics = ctx.metrics
        self.cookie_name = opts.cookie_name
        self.max_age = opts.max_age_days * 86400
        self.secure = opts.secure
        self.samesite = opts.samesite
        self.domain = opts.domain

    def request(self, ex: Exchange) -> None:
        if ex.visitor is not None:
            return  # the host already knows the visitor (the importer: from the logged line)
        value = ex.request.cookies.get(self.cookie_name)
        visitor_id = self._verify(value) if value else None
        is_new = visitor_id is None
        if visitor_id is None:
            if value:
                self.metrics.cookies_rejected.inc()
            visitor_id = new_visitor_id()
        ex.visitor = Visitor(id=visitor_id, is_new=is_new, hasher=self.keys.visitor_key)

    def _verify(self, value: str) -> str | None:
        visitor_id = self.verified.get(value)
        if visitor_id is None:
            visitor_id = verify_cookie(self.mac, value)
            if visitor_id is not None:
                if len(self.verified) >= VERIFIED_CACHE:
                    del self.verified[next(iter(self.verified))]
                self.verified[value] = visitor_id
        return visitor_id

    def response(self, ex: Exchange) -> None:
        """Set the cookie for a new visitor on a page load, a landing, or a request a rule watches
        (a login that is the visitor's first request binds this ID: they must keep it); refresh it
        on each landing."""
        visitor = ex.visitor
        if visitor is None:
            return
        wanted = bool(ex.events) or (visitor.is_new and (ex.request.is_document or ex.watched))
        if not wanted:
            return
        secure = self.secure == "always" or (self.secure == "auto" and ex.request.scheme == "https")
        ex.set_cookies.append(
            Cookie(
                name=self.cookie_name,
                value=cookie_value(self.mac, visitor.id),
                max_age=self.max_age,
                domain=self.domain,
                secure=secure,
                samesite=self.samesite,
            )
        )
