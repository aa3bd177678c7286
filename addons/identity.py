"""First-party visitor ID: reads and verifies the ID cookie, or mints one; plans its Set-Cookie.

Configured by ``[identity]``. A host that already knows the visitor (``gateway
import`` replaying a log) sets ``Exchange.visitor`` first; then only the
Set-Cookie is planned here. The cookie holds a random 128-bit ID and an HMAC
tag (``v1.<id>.<tag>``, base64url); a forged or edited cookie is rejected,
replaced and counted. Only the keyed hash of the ID (``visitor_key``) ever
reaches an event; the raw ID stays in memory. The cookie is refreshed on landings, logins and
conversions, and on a returning visitor's page view whose answer no shared cache gives anyone
else, once per ``identity.refresh_days`` (the rule and the memory: ``addons/refresh.py``).

Privacy (``[privacy]``, README "Privacy: what is stored") is decided here, per request,
so the same response carries the decision: ``Sec-GPC: 1`` (and ``DNT: 1`` when honoured; on
any of the header's lines) gives no visitor at all (``Exchange.aggregate_only``: landings are
only counted per day);
``identity.mode = "cookieless"``, or a consent cookie that does not say yes, gives no
cookie (one the browser still has is expired) and a one-day visitor ID: a keyed hash of
(daily salt, host, IP, user agent). The salt (``gateway/daysalt.py``) is held in memory
only, shared by a supervisor's workers and kept across reloads, and replaced (destroyed) when
the UTC day changes, so nothing links one day's key to the next. A consent cookie set to a
yes value by the response itself issues the ID cookie in that response; one set to any
other value, or deleted, expires it (several lines of it: what they leave the browser holding).
"""

from __future__ import annotations

import hmac
import logging
from binascii import b2a_base64
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC
from urllib.parse import unquote, urlsplit

from addons.cookies import deletes, scope, set_cookie_lines
from addons.refresh import RecentRefreshes, for_this_visitor_only
from gateway.daysalt import DaySalt
from gateway.entropy import random_id
from gateway.events import VerdictChange
from gateway.keys import Mac
from gateway.pipeline import Context, Cookie, Exchange, RequestView, Visitor, cookie_values

log = logging.getLogger("gateway.identity")

VERSION = "v1"
_ID_BYTES = 16
_TAG_BYTES = 16
VERIFIED_CACHE = 4096
"""Cookie values recently verified, kept so a returning visitor's page, styles, scripts and
images (one cookie, dozens of requests) cost one HMAC, not one each. Only valid values are
kept; a forged value is checked every time."""


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64(raw: bytes) -> str:
    # What base64.urlsafe_b64encode(raw).rstrip(b"=") gives, without its two Python calls
    # (~900 instructions of the cookie tag's ~3,700).
    return b2a_base64(raw, newline=False).translate(_URLSAFE).rstrip(b"=").decode("ascii")


def _tag(key: bytes | Mac, visitor_id: str) -> str:
    mac = key if isinstance(key, Mac) else Mac(key)
    return _b64(mac.digest(f"{VERSION}.{visitor_id}".encode("ascii"))[:_TAG_BYTES])


def new_visitor_id() -> str:
    """A new visitor's ID: 16 random bytes, base64url (``gateway.entropy.random_id``)."""
    return random_id()


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


def cookieless_id(salt: Mac, req: RequestView) -> str:
    """The cookieless visitor ID: HMAC of (host, IP, user agent) under the day's salt."""
    agent = req.headers.get("user-agent", "")
    message = "\0".join((req.host.lower(), req.client_ip, agent))
    return _b64(salt.digest(message.encode("utf-8", "surrogateescape"))[:_ID_BYTES])


def opts_out(headers: Mapping[str, str], name: str) -> bool:
    """Whether the request's ``name`` header (``sec-gpc``, ``dnt``) says ``1`` on any of its
    lines, or in any item of one joined into a list (``0, 1``: the mitmproxy host, a flow dump,
    the aiohttp host when the Cookie repeats too). A browser or an extension that adds an
    opt-out beside a ``0`` already there sends both: an opt-out given at all wins."""
    first = headers.get(name)
    if first is None:  # most requests: one lookup, on every request
        return False
    getall = getattr(headers, "getall", None)
    values: Sequence[str] = getall(name) if getall is not None else (first,)
    return any(item.strip() == "1" for value in values for item in value.split(","))


def cookie_domain(domain: str, host: str) -> str:
    """The ID cookie's ``Domain``: ``identity.domain`` when the request's host (its port left
    out) is that domain or under it (RFC 6265 §5.1.3), else none — a host-only cookie. A
    browser refuses a cookie whose Domain does not cover the host it asked: with one domain
    set for a site served under several (``example.com`` and ``example.de``), every landing on
    the other was a new visitor. A host with the root's dot (``www.example.com.``) is not
    under it either: the browser compares it as written."""
    if not domain:
        return ""
    name = host[1:].partition("]")[0] if host.startswith("[") else host.partition(":")[0]
    name, want = name.lower(), domain.strip(".").lower()
    return domain if name == want or name.endswith("." + want) else ""


class Identity:
    def configure(self, ctx: Context) -> None:
        opts = ctx.settings.options.identity
        self.keys = ctx.keys
        self.visitor_key = ctx.keys.visitor_key
        self.mac = Mac(ctx.keys.cookie_mac)
        # Cookie value → visitor ID, for values that verified; the oldest goes first when full
        # (an OrderedDict: a plain dict finds its oldest by scanning the slots deleted before it).
        self.verified: OrderedDict[str, str] = OrderedDict()
        self.metrics = ctx.metrics
        self.cookie_name = opts.cookie_name
        self.max_age = opts.max_age_days * 86400
        self.refresh_days = opts.refresh_days
        self.recent = RecentRefreshes(opts.refresh_days)
        # A browser keeps a "__Secure-" or "__Host-" cookie (any case) only when it is Secure: such a
        # name is Secure on every answer, as under "always" ("never" is a config error with it).
        # Under "auto", a request taken as plain http (a TLS proxy in front that is not in
        # proxy.trusted_proxies) got one without the flag until 2026-12-07, which the browser
        # refused: every page load a new visitor, an opt-out's expiry refused too.
        prefixed = opts.cookie_name[:9].lower().startswith(("__secure-", "__host-"))
        self.secure = "always" if prefixed else opts.secure
        self.samesite = opts.samesite
        self.domain = opts.domain
        # The host the browser asked, when configured: a front proxy may send its own Host
        # (nginx's default is the upstream's, 127.0.0.1:8080), under which identity.domain
        # never went on the cookie.
        origin = ctx.settings.options.proxy.public_origin
        self.public_host = urlsplit(origin).netloc if origin else ""
        privacy = ctx.settings.options.privacy
        self.cookieless = opts.mode == "cookieless"
        self.salt = ctx.salt or DaySalt()  # the process's: a reload keeps the day's visitors
        self.salt_mac = (b"", Mac(b""))  # the day's salt and its Mac, made once a day
        self.opt_out = [h for h, on in (("sec-gpc", privacy.honor_gpc), ("dnt", privacy.honor_dnt)) if on]
        consent = privacy.consent_cookie
        self.consent_name, self.consent_yes = consent.name, frozenset(consent.yes)
        self.consent_contains = consent.yes_contains
        self.site_cookie_seen = False  # the site set a cookie of our name: said once

    def take_over(self, old: Identity) -> None:
        """A reload: the site's clash with our cookie name, once said, is not said again; the
        visitors refreshed lately are remembered."""
        self.site_cookie_seen = old.site_cookie_seen
        self.recent.when = old.recent.when  # who was refreshed lately: not again at once

    def population(self, req: RequestView) -> str:
        """``cookie``, ``cookieless`` or ``no_consent``, from the mode and the consent cookie."""
        if self.cookieless:
            return "cookieless"
        if not self.consent_name:
            return "cookie"
        if not self._consents(req.cookies.get(self.consent_name)):
            return "no_consent"
        # Two of the name (a banner moved from host-only to the Domain, or from /shop to /): the
        # browser sends both, the stale one first. Consent is what every one of them says. The
        # header is parsed again only when the name is in it twice: every consenting visitor's
        # request comes here, and parsing a 500-byte Cookie header again took 2 µs.
        header = req.headers.get("cookie") or ""
        name = self.consent_name
        if header.find(name, header.find(name) + len(name)) < 0:
            return "cookie"
        values = cookie_values(header, name)
        if len(values) > 1 and not all(self._consents(value) for value in values):
            return "no_consent"
        return "cookie"

    def _consents(self, value: str | None) -> bool:
        """Whether the consent cookie's ``value`` is a ``yes``, or holds a ``yes_contains`` text
        once percent-decoded (a consent platform's structured value)."""
        if value is None:
            return False
        if value in self.consent_yes:
            return True
        if self.consent_contains:
            decoded = unquote(value)
            return any(text in decoded for text in self.consent_contains)
        return False

    def request(self, ex: Exchange) -> None:
        if ex.visitor is not None:
            return  # the host already knows the visitor (the importer: from the logged line)
        req = ex.request
        for header in self.opt_out:  # no generator: this runs on every request
            if opts_out(req.headers, header):
                ex.aggregate_only = True
                return
        population = self.population(req) if self.cookieless or self.consent_name else "cookie"
        if population != "cookie":
            salt = self.salt.on(req.ts.astimezone(UTC).date())
            if salt is not self.salt_mac[0]:
                self.salt_mac = (salt, Mac(salt))
            day_id = cookieless_id(self.salt_mac[1], req)
            ex.visitor = Visitor(day_id, False, self.keys.visitor_key, population)
            return
        value = req.cookies.get(self.cookie_name)
        visitor_id = self._verify(value) if value else None
        offered = bool(value)
        if visitor_id is None and value is not None:
            # Two of the name (a host-only one and a Domain one, after identity.domain
            # changed): the first that verifies is the visitor's. Taking only the first, a stale
            # one ahead of a good one made every page load a new visitor.
            for other in cookie_values(req.headers.get("cookie") or "", self.cookie_name)[1:]:
                if other:
                    offered = True
                    if (visitor_id := self._verify(other)) is not None:
                        break
        is_new = visitor_id is None
        if visitor_id is None:
            if offered:
                self.metrics.cookies_rejected.inc()
            visitor_id = random_id()
        # Positional (id, is_new, hasher), the hasher bound once in configure: a new visitor's
        # landing builds one on every request.
        ex.visitor = Visitor(visitor_id, is_new, self.visitor_key)

    def _verify(self, value: str) -> str | None:
        visitor_id = self.verified.get(value)
        if visitor_id is None:
            visitor_id = verify_cookie(self.mac, value)
            if visitor_id is not None:
                if len(self.verified) >= VERIFIED_CACHE:
                    self.verified.popitem(last=False)
                self.verified[value] = visitor_id
        return visitor_id

    def response(self, ex: Exchange) -> None:
        """Set the cookie for a new visitor on a page load, a landing, or a request a rule watches
        (a login that is the visitor's first request binds this ID: they must keep it); refresh it
        on each landing, and on a page view whose answer no shared cache gives anyone else, once
        per ``identity.refresh_days`` (``addons/refresh.py``)."""
        if ex.response is not None:
            lines = set_cookie_lines(ex.response.headers)
            # Most answers set none: no call (~1,000 instructions a landing).
            if lines and self._site_sets_ours(ex, lines):
                return  # the site's own cookie of the name: the browser keeps it, as without us
        if self.site_cookie_seen and self._sites_value(ex.request):
            return  # the site's value, not ours: not replaced, nor expired
        visitor = ex.visitor
        if visitor is None:
            if ex.aggregate_only and self.cookie_name in ex.request.cookies:
                self._expire(ex)  # opted out (GPC): none kept either
            return
        given = self._consent_given(ex) if self.consent_name and not self.cookieless else None
        if given is False or (visitor.consent == "no_consent" and not given):
            if given is False or self.cookie_name in ex.request.cookies:
                self._expire(ex)  # refused or withdrawn: expire it
            return
        if visitor.consent != "cookie":
            if not given:
                if self.cookieless and self.cookie_name in ex.request.cookies:
                    # One left from cookie mode: "on the device, nothing", as for GPC and refusal.
                    self._expire(ex)
                return
            # Consent given by this very response: the ID cookie goes with it.
            visitor = ex.visitor = Visitor(new_visitor_id(), True, self.keys.visitor_key)
        # A re-score of earlier touchpoints (bots' late signals: no_assets, inhuman_cadence…) is
        # no landing of this request: it refreshes nothing, and the page keeps its caching.
        # A loop, not any() over a generator: on a landing it stops at the first event, and a
        # generator left unfinished is closed by raising into it (~2,000 instructions a landing).
        for event in ex.events:
            if type(event) is not VerdictChange:
                wanted = True
                break
        else:
            wanted = visitor.is_new and (ex.request.is_document or ex.watched)
        if not wanted and not given:
            if self.refresh_days and not visitor.is_new and ex.request.is_document:
                self._refresh(ex, visitor)
            return
        if self.refresh_days:
            self.recent.mark(visitor.id, ex.request.unix)
        ex.set_cookies.append(self._cookie(ex, cookie_value(self.mac, visitor.id), self.max_age))

    def _refresh(self, ex: Exchange, visitor: Visitor) -> None:
        """Refresh a returning visitor's cookie on a page load whose answer no shared cache
        gives anyone else, unless this process set it within ``identity.refresh_days``; the
        host then adds no ``Cache-Control: private`` (``Cookie.shared_safe``)."""
        now = ex.request.unix
        response = ex.response
        if (
            response is None
            or visitor.consent != "cookie"
            or not self.recent.due(visitor.id, now)
            or not for_this_visitor_only(ex.request.headers, response.status, response.headers)
        ):
            return
        self.recent.mark(visitor.id, now)
        cookie = self._cookie(ex, cookie_value(self.mac, visitor.id), self.max_age)
        cookie.shared_safe = True
        ex.set_cookies.append(cookie)

    def _site_sets_ours(self, ex: Exchange, lines: Sequence[str]) -> bool:
        """Whether the site's answer sets a cookie of ``identity.cookie_name``'s name (``lines``:
        its Set-Cookie lines). The site comes first (the site behaves as without us): such an
        answer gets none of ours, which the browser would keep in place of the site's (a session
        of that name logged out). Said once per process, as the visitors who hold the site's
        value are new visitors on every request, counted as rejected cookies — which reads as
        forgery, not as two owners of one name."""
        for line in lines:
            name, sep, _ = line.partition("=")
            if sep and name.strip() == self.cookie_name:
                if not self.site_cookie_seen:
                    self.site_cookie_seen = True
                    log.warning(
                        "the site's answer to %s sets a cookie named %r, identity.cookie_name's: the browser "
                        "keeps it in place of the visitor's ID; the gateway now leaves the site's cookie "
                        "alone (none of ours beside it, none of that name it cannot verify replaced), so "
                        "the visitors who hold it are new visitors on every request (counted in "
                        "gateway_cookies_rejected_total); give identity.cookie_name another name",
                        ex.request.path[:200],
                        self.cookie_name,
                    )
                return True
        return False

    def _sites_value(self, req: RequestView) -> bool:
        """Whether the request holds a cookie of our name and none of its values is an ID of
        ours: once the site was seen setting the name, such a value is the site's, and writing
        an ID (or an expiry) over it would change the site's cookie. Read only then."""
        values = [
            value for value in cookie_values(req.headers.get("cookie") or "", self.cookie_name) if value
        ]
        return bool(values) and all(self._verify(value) is None for value in values)

    def _consent_given(self, ex: Exchange) -> bool | None:
        """What the response's own Set-Cookie lines of the consent cookie leave the browser
        holding: consent (True) when every one they leave says yes; False when one says
        anything else, or when they leave none (each deleted: a withdrawal); None when the
        response does not set it. Applied in order as a browser does, one cookie per Domain and
        Path: a banner moving its cookie to the whole domain clears the host-only one and sets
        the other in one response, in either order; a line rewriting one is what is kept."""
        if ex.response is None:
            return None
        held: dict[tuple[str, str], str | None] = {}
        for line in set_cookie_lines(ex.response.headers):
            # Each line is one cookie (both hosts keep the lines apart): its value runs to the
            # first ";", commas included (CookieYes's ``…,analytics:yes``; Go quotes such a
            # value), read as the request's Cookie is. Until 2026-12-06 it stopped at a comma,
            # and an update of a consent that still said yes expired the visitor's ID.
            pair, *attributes = line.split(";")
            name, sep, value = pair.partition("=")
            if not sep or name.strip() != self.consent_name:
                continue
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            # A deletion (Max-Age ≤ 0, an Expires past) leaves the browser no consent
            # cookie of that scope, whatever value it names.
            where = scope(attributes, ex.request.path, self.public_host or ex.request.host)
            if where is None:
                continue  # a Domain the browser refuses for this host: it keeps nothing
            gone = deletes(attributes, ex.request.ts.timestamp())
            held[where] = None if gone else value
        if not held:
            return None
        values = [value for value in held.values() if value is not None]
        return bool(values) and all(self._consents(value) for value in values)

    def _expire(self, ex: Exchange) -> None:
        """Expire the ID cookie on the device. Under a Domain, a host-only one too: a browser
        keeps the two apart, and one set before ``identity.domain`` applied (or before
        ``proxy.public_origin`` named the host) stayed, with its ID, after the visitor opted out."""
        cookie = self._cookie(ex, "", 0)
        ex.set_cookies.append(cookie)
        if cookie.domain:
            ex.set_cookies.append(replace(cookie, domain=""))

    def _cookie(self, ex: Exchange, value: str, max_age: int) -> Cookie:
        secure = self.secure == "always" or (self.secure == "auto" and ex.request.scheme == "https")
        domain = cookie_domain(self.domain, self.public_host or ex.request.host) if self.domain else ""
        # Browsers drop a SameSite=None cookie that is not Secure: on a plain-http page (under
        # "auto") every page load was a new visitor. Lax is all such a page could have anyway.
        samesite = self.samesite if secure or self.samesite != "None" else "Lax"
        # Positional (name, value, max_age, path, domain, secure, httponly, samesite): every
        # new visitor's landing builds one, and keywords cost ~2,700 instructions more.
        return Cookie(self.cookie_name, value, max_age, "/", domain, secure, True, samesite)
