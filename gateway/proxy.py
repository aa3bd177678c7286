"""The aiohttp proxy host: runs the addon pipeline around a transparent, streaming forward.

Owns the public listener's request handler: building the ``Exchange`` from an
aiohttp request, forwarding the request target byte for byte (minus stripped
tracking pairs) through the lean upstream client (``gateway.upstream``; WebSocket
upgrades through the app-wide ``ClientSession``), streaming bodies both ways,
passing a site's ``103 Early Hints`` on before its answer, applying the pipeline's effects
(cookies, headers, replies), and waiting —
bounded — for the store to confirm this request's events before the response
headers go out.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar, cast

import aiohttp
from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11, RawResponseMessage
from aiohttp.web_urldispatcher import _default_expect_handler
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway import pages, reserved
from gateway.codings import content_codings, decoded_layers, streamed_type
from gateway.commits import Confirmations, submitted
from gateway.config import Settings
from gateway.emails import without_email
from gateway.events import Event
from gateway.forwarding import (
    CLAIM_PREFIX,
    CLIENT_CLAIMS,
    FORWARDED,
    HOP_BY_HOP,
    cache_lines_to_add,
    connection_tokens,
    is_trusted,
    public_origin,
    rewrite_location,
    rewrite_refresh,
    set_cookie_line,
    split_absolute,
    trusted_visitor,
    underscored_claim,
)
from gateway.logs import Throttled
from gateway.metrics import Metrics
from gateway.pipeline import Exchange, Pipeline, RequestView, ResponseView, split_target, with_query
from gateway.sessions import COOKIE as ADMIN_SESSION_COOKIE
from gateway.sessions import is_session_cookie
from gateway.upstream import (
    Upstream,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamResponse,
    described,
)
from gateway.websocket import is_websocket_upgrade, proxy_websocket
from storage.local import LocalStore

log = logging.getLogger("gateway.proxy")

# Request headers that must not be forwarded as received: we answered Expect ourselves.
# Host is not among them: it is always sent, in the visitor's place (``_upstream_headers``).
_DROP_REQUEST = HOP_BY_HOP | FORWARDED | {"expect"}
_DROP_UNTRUSTED = _DROP_REQUEST | CLIENT_CLAIMS
# What a visitor's ``Connection`` may name but not take off the request: ``Host`` is always
# sent, and ``Content-Length`` frames the body the gateway sends after it (dropped, the site
# read a request without a body and took the body for a request of its own).
_NEVER_HOP = frozenset({"host", "content-length"})
_UPGRADE = frozenset({"upgrade", "connection"})
# Headers the proxy writes itself after the visitor's: an addon's replacement cannot name them.
_SET_HERE = FORWARDED | {"host"}


def _without_admin_session(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``headers`` without the dashboard's session cookies. A cookie is not scoped to a port, so
    a browser signed in to the admin listener sends it to a public listener on the same host
    name too (``127.0.0.1:9090`` and ``:8080``, the default configuration): passed on, it would
    hand the site a live admin session. Every port's (``gw_admin_session_9090``, the name
    before 2026-12-05 too): another gateway's on this host is as live. The visitor's other
    cookies go on as sent; a Cookie header left with no cookie in it is dropped (the session
    alone beside a stray ";" left an empty header the visitor never sent)."""
    out = []
    for name, value in headers:
        if name.lower() == "cookie" and ADMIN_SESSION_COOKIE in value:
            pairs = [p for p in value.split(";") if not is_session_cookie(p.strip().partition("=")[0])]
            if not any(pair.strip() for pair in pairs):
                continue
            value = ";".join(pairs).strip()
        out.append((name, value))
    return out


_NAMES: dict[bytes, str] = {}
"""Header names as visitors spell them, decoded once (a few dozen in practice; bounded)."""
_ANSWER_NAMES: dict[bytes, tuple[str, str]] = {}
"""A site's header names: as it spelled them (bytes kept as they came) and lower-cased."""
_NAMES_KEPT = 1024
"""Names each table holds at most: past it, names a client or a site makes up start it over."""
_Name = TypeVar("_Name")


def _remember(table: dict[bytes, _Name], raw: bytes, name: _Name) -> _Name:
    if len(table) >= _NAMES_KEPT:
        table.clear()
    table[raw] = name
    return name


def _spelled(raw: bytes) -> str:
    """A request header's name as the visitor sent it, decoded as aiohttp's parser decodes it."""
    return _NAMES.get(raw) or _remember(_NAMES, raw, raw.decode("utf-8", "surrogateescape"))


def _answer_name(raw: bytes) -> tuple[str, str]:
    """A site's header name as it spelled it and lower-cased, decoded once: two calls per header
    of every answer were a dictionary lookup's work. Lower-cased as aiohttp decodes it, as its
    header mapping (and the tokens of a Connection header, which name what to drop) has it.

    Without whitespace before its colon (RFC 9112 §5.1 asks a proxy to remove it): the parser
    keeps it in the few names it reads for framing (``Content-Length :``, ``Transfer-Encoding
    :``), which then reached the visitor so — beside the gateway's own framing, a hop-by-hop
    name not dropped."""
    name = raw.rstrip(b" \t")
    return _ANSWER_NAMES.get(raw) or _remember(
        _ANSWER_NAMES, raw, (name.decode("latin-1"), name.decode("utf-8", "surrogateescape").lower())
    )


def _replaced(
    lines: Iterable[tuple[tuple[bytes, bytes], tuple[str, str]]],
    drop: frozenset[str],
    replace: Mapping[str, str],
    claims: tuple[str, ...] = (),
) -> list[tuple[str, str]]:
    """The visitor's header lines (raw and parsed) less ``drop``, names starting with one of
    ``claims`` and claims spelled with underscores, with an addon's replacements
    (lower-case names) in the place of the first line of that name, the visitor's spelling
    kept; those the visitor did not send follow. Names the proxy writes itself are not replaced."""
    out: list[tuple[str, str]] = []
    placed: set[str] = set()
    for (raw, _), (name, value) in lines:
        key = name.lower()
        if key in replace and key not in _SET_HERE:
            if key not in placed:
                placed.add(key)
                out.append((_spelled(raw), replace[key]))
        elif not (key in drop or key.startswith(claims) or ("_" in key and underscored_claim(key))):
            out.append((_spelled(raw), value))
    out.extend(item for item in replace.items() if item[0] not in placed and item[0] not in _SET_HERE)
    return out


UPSTREAM_BACK_INTERVAL = 10.0
"""Seconds between two "upstream answers again" lines at least, as between two failure lines."""


@dataclass(slots=True, eq=False)
class UpstreamOutage:
    """What the log says of the site failing, one for the proxy and each reload's that takes it
    over (``ProxyHost.outage_from``): the one a reload retires still ends its requests, and they
    are the same outage (until 2026-12-08 each had its own, and both said it was over)."""

    # An upstream that is down fails every request: one line at once, then one per 10 s per
    # kind, with the count held back (until 2026-12-05 a line per request).
    lines: dict[str, Throttled] = field(
        default_factory=lambda: {
            kind: Throttled(log, logging.WARNING) for kind in ("timeout", "connect", "protocol", "internal")
        }
    )
    since: float | None = None
    """When the site first failed since it last answered (``time.monotonic``), None: it
    answers. Its next answer says the outage is over, with the lines held back."""
    back_said: float = float("-inf")
    """When "upstream answers again" was last said: once per 10 s at most (a site whose one
    slow page times out while the rest answers would otherwise say it after each)."""
    answered: float | None = None
    """When the site answered since it last failed, its "answers again" line waiting for
    those 10 s (None: it did not, or the line was said): the stop says it, not a failure."""


# RFC 9110 §7.2 / RFC 3986 §3.2.2: host (reg-name, IPv4 or [IPv6]) and an optional port.
_VALID_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(?::[0-9]*)?")


class BodyFailed(Exception):
    """The visitor's request body cannot be forwarded; ``_Body.failure`` says why."""


@dataclass
class _Body:
    """Streams the visitor's request body upstream, and stops it when it must not go on.

    ``failure`` tells the handler what to answer when the upstream request then fails:
    ``too_large`` (413), ``stalled`` (408: no body bytes for ``idle`` seconds) or ``broken``
    (400: the body was malformed or cut short, such as a chunked framing that broke mid-stream,
    which the listener reports, ``gateway.protocol_errors.BrokenFraming``). Either failure
    fails the upstream request: its connection is closed, the body's last chunk never sent.
    """

    request: web.Request
    limit: int
    idle: float
    failure: str | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        seen = 0
        content = self.request.content
        while True:
            try:
                async with asyncio.timeout(self.idle):
                    chunk = await content.readany()
            except TimeoutError:
                self.failure = "stalled"
                raise BodyFailed() from None
            except Exception:
                self.failure = "broken"
                raise
            if not chunk:
                return
            seen += len(chunk)
            if seen > self.limit:
                self.failure = "too_large"
                raise BodyFailed()
            yield chunk


@dataclass
class _CapturedBody(_Body):
    """A request body whose first bytes a rule reads before it goes upstream: they are sent
    first, then the rest streams as usual — upstream receives exactly the visitor's bytes."""

    head: bytes = b""

    async def capture(self, cap: int) -> bytes | None:
        """Read until the body ends or passes ``cap``; the whole body, or None when larger."""
        length = self.request.content_length
        if length is not None and length > cap:
            return None  # known to be too large to read: stream it untouched
        buffer = bytearray()
        reader = cast("AsyncGenerator[bytes, None]", super().chunks())  # an async generator
        try:
            async for chunk in reader:
                buffer += chunk
                if len(buffer) > cap:
                    break
        finally:
            await reader.aclose()
        self.head = bytes(buffer)
        self.limit -= len(self.head)  # what super().chunks() streams next is counted from 0
        return self.head if len(buffer) <= cap else None

    async def chunks(self) -> AsyncIterator[bytes]:
        if self.head:
            yield self.head
        async for chunk in super().chunks():
            yield chunk


# _Body.failure → (status answered, request metric label)
_BODY_FAILURES = {
    "too_large": (413, "too_large"),
    "stalled": (408, "bad_request"),
    "broken": (400, "bad_request"),
}


def _origin_form(target: str, host: str | None = None, *, options: bool = False) -> str | None:
    """The request target as path and query; an absolute-form target keeps only those, its
    empty path being ``/`` (RFC 9110 §4.2.3: ``http://a?q`` is ``/?q``) but for an ``OPTIONS``
    request (``options``) with no query either, whose ``http://a`` is ``*`` (RFC 9112 §3.2.4
    has the last proxy before the origin send it so); ``OPTIONS *``'s asterisk stays as it
    is. None when it is none of these (authority-form, a
    URL yarl cannot read) and, given the ``Host`` header (``host``), when an absolute-form
    target (``GET http://a/p``) names another host than it does (port and letter case
    normalised) or carries userinfo, which RFC 9110 §4.2.4 says to treat as an error. RFC 9112
    §3.2.2 has the server take the target's authority; a cache or router in front of us may
    have gone by ``Host``: which site is asked has two answers, and the request is refused
    rather than forwarded under either."""
    if target.startswith("/"):
        return target
    if target == "*":  # asterisk-form: only OPTIONS gets here (``HostSlot.serve``)
        return target
    try:
        url = URL(target, encoded=True)
        named = None if host is None else URL(f"{url.scheme}://{host}", encoded=True)
    except ValueError:
        return None
    if not url.absolute or url.scheme not in ("http", "https"):
        return None
    if named is not None and (
        url.raw_user is not None
        or url.raw_password is not None
        or ((url.raw_host or "").lower(), url.port) != ((named.raw_host or "").lower(), named.port)
    ):
        return None
    # The path and query as received: yarl's ``raw_path_qs`` drops an empty query's "?".
    rest = (split_absolute(target) or ("", "", url.raw_path_qs))[2].partition("#")[0]
    if not rest and options:
        return "*"
    return rest if rest.startswith("/") else "/" + rest


def _other_coding(headers: CIMultiDictProxy[str]) -> bool:
    """Whether a chunked body also has another transfer coding (``gzip, chunked``). aiohttp
    undoes the chunking alone, so the site would get the gzip bytes as a plain body; RFC 9112
    §6.1 has a server refuse a coding it does not know (``identity`` changes nothing)."""
    codings = ",".join(headers.getall(hdrs.TRANSFER_ENCODING, ())).lower().split(",")
    return any(coding.strip() not in ("chunked", "identity", "") for coding in codings)


def _joined(headers: CIMultiDictProxy[str]) -> dict[str, str]:
    """Repeated headers joined into one value each (cookies with "; ", others with ", ")."""
    joined: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        if key in joined:
            joined[key] += ("; " if key == "cookie" else ", ") + value
        else:
            joined[key] = value
    return joined


_UNSAFE_IN_HEAD = bytes.maketrans(b"\r\n\x00", b"   ")


_NOT_IN_A_HINT = HOP_BY_HOP | {"content-length"}
"""What a ``103`` is not passed on with: the hop-by-hop lines, and a length, which frames no
body there (a 1xx has none, RFC 9110 §15.2) but one a client or cache in front may read."""


async def _early_hints(request: web.Request, message: RawResponseMessage) -> None:
    """Pass a site's ``103 Early Hints`` on to the visitor as it came (hop-by-hop lines, those
    its ``Connection`` names, and a ``Content-Length`` left out; names without a space before
    the colon, RFC 9112 §5.1), before the final answer: a browser can fetch what it names
    while the site, and on a landing the store's commit, are still at work. A visitor already
    gone is no failure: the final answer's writing finds that out."""
    fields = [(*_answer_name(name), value) for name, value in message.raw_headers]
    named = (value.decode("latin-1") for _, key, value in fields if key == "connection")
    drop = _NOT_IN_A_HINT | connection_tokens(named)
    lines = [
        spelled.encode("latin-1") + b": " + value.translate(_UNSAFE_IN_HEAD) + b"\r\n"
        for spelled, key, value in fields
        if key not in drop
    ]
    reason = message.reason.encode("utf-8", "surrogateescape").translate(_UNSAFE_IN_HEAD)
    with contextlib.suppress(ConnectionError):
        await request.writer.write(b"HTTP/1.1 103 " + reason + b"\r\n" + b"".join(lines) + b"\r\n")


class ProxyHost:
    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        store: LocalStore,
        metrics: Metrics,
        session: aiohttp.ClientSession,
        upstream: str,
        endpoints: Mapping[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] | None = None,
        *,
        pool: Upstream,
        going_away: asyncio.Event,
    ) -> None:
        opts = settings.options
        self.settings = settings
        self.pipeline = pipeline
        self.store = store
        self.metrics = metrics
        self._outage = UpstreamOutage()
        self.session = session
        self.pool = pool
        self.going_away = going_away
        """Set when the gateway stops: open WebSocket relays close (1001) instead of holding it."""
        self.upstream = URL(upstream)
        self.upstream_origin = str(self.upstream.origin())
        self.upstream_host = self.upstream.raw_authority
        self.public_origin = public_origin(opts.proxy.public_origin)
        self._public_scheme = self.public_origin.partition(":")[0]
        """``proxy.public_origin``'s scheme, every request's when set (empty: none set)."""
        self.preserve_host = opts.proxy.preserve_host
        self.log_answers = opts.proxy.access_log
        """Whether the answer being sent is noted on the request (``pages.ANSWER``): only the
        access log reads it, and aiohttp's ``Request.__setitem__`` costs on every request."""
        self.reserved = opts.proxy.reserved_prefix
        self.endpoints = endpoints or {}
        """The gateway's own endpoints: path below ``reserved_prefix`` → handler."""
        self.max_body = opts.proxy.max_request_body
        self.body_idle = opts.proxy.body_timeout
        self.max_ws_message = opts.proxy.max_websocket_message
        self.trusted = settings.trusted_networks
        self.forwarded = settings.options.proxy.trusted_header == "forwarded"
        # The request waits for its events' commit (``storage.durability``), failing open.
        self.confirmations = Confirmations(metrics, log, opts.storage.durability == "commit")
        self._forwarded = metrics.requests.labels("forwarded")  # the hot path's counter, resolved once

    # -- the request handler ------------------------------------------------------------------

    async def expect(self, request: web.Request) -> web.StreamResponse | None:
        """aiohttp's step for ``Expect: 100-continue``, before ``handle``: a body announced over
        ``proxy.max_request_body`` is refused at once (413, the connection closed), not invited
        with a ``100 Continue`` only to be refused once it is on its way. The gateway's own
        endpoints keep their own limits. An unknown expectation is aiohttp's 417. Otherwise the
        ``100 Continue`` is owed (``pages.CONTINUE``), sent by ``handle`` only once it is about to
        read the body: a request it answers itself gets no invitation (until 2026-12-07 a blocked
        bot's upload was invited, sent whole, then refused 403)."""
        length, path = request.content_length, request.raw_path
        if (
            length is not None
            and length > self.max_body
            and not path.startswith(self.reserved)
            and _origin_form(path) is not None
            and not is_websocket_upgrade(request)
        ):
            self.metrics.requests.labels("too_large").inc()
            refused = pages.error_page(413)
            refused.force_close()
            return refused
        if (
            request.version == HttpVersion11
            and request.headers.get(hdrs.EXPECT, "").lower() == "100-continue"
        ):
            request[pages.CONTINUE] = True
            return None
        await _default_expect_handler(request)  # no 1xx to HTTP/1.0; an unknown expectation, 417
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        host = request.headers.get(hdrs.HOST)
        target = _origin_form(request.raw_path, host, options=request.method == hdrs.METH_OPTIONS)
        if target is None or (host is not None and not _VALID_HOST.fullmatch(host)):
            self.metrics.requests.labels("bad_request").inc()
            return pages.error_page(400)
        raw_path, raw_query, after_query = split_target(target)
        kind = reserved.classify(raw_path, self.reserved)
        if kind != "ordinary":
            self.metrics.requests.labels("reserved").inc()
            if kind == "alias":  # never forwarded, never dispatched: one spelling is checked
                return pages.json_error(
                    404, f"not a gateway path: gateway endpoints are spelled {self.reserved}<name>"
                )
            endpoint = self.endpoints.get(raw_path[len(self.reserved) :])
            if endpoint is not None:
                # It invites the body itself once it is to read it (``Inbound._read``): a delivery
                # it refuses before (too large, not a POST) is answered at once, uninvited.
                return await endpoint(request)
            return pages.json_error(404, f"no gateway endpoint at {raw_path}")
        if is_websocket_upgrade(request):
            return await self._websocket(request, target, raw_path, raw_query, after_query)
        length = request.content_length
        if length is not None and length > self.max_body:
            self.metrics.requests.labels("too_large").inc()
            return pages.error_page(413)
        if length is None and request.body_exists and _other_coding(request.headers):
            self.metrics.requests.labels("bad_request").inc()
            return pages.error_page(400)

        trusted = self._peer_trusted(request)
        ex = Exchange(self._view(request, raw_path, raw_query, trusted))
        await self.pipeline.request(ex)
        commits = [submitted(self.store, ex.events, self.pipeline)] if ex.events else []
        seen = len(ex.events)

        if ex.reply is not None:
            reply = ex.reply
            ex.response = ResponseView(reply.status, reply.headers)
            await self.pipeline.response(ex)
            self._submit_new(ex, seen, commits)
            resp = pages.QuietResponse(status=reply.status, body=reply.body, headers=reply.headers)
            self._apply_cookies(resp, ex)
            if commits:
                await self.confirmations.confirm(commits)
            self.metrics.requests.labels("reply").inc()
            return resp

        return await self._forward(request, ex, target, raw_path, after_query, commits, seen, trusted)

    async def _websocket(
        self, request: web.Request, target: str, raw_path: str, raw_query: str, after_query: str
    ) -> web.StreamResponse:
        """Relay a WebSocket upgrade. Only the addons' ``websocket`` hook runs on it: tracking
        pairs leave its URL (and a same-site Referer) as they leave a request's. A body on it
        (browsers send none) is read first, within ``proxy.max_request_body`` and
        ``proxy.body_timeout`` as any body, and goes to the site with the upgrade, as nginx
        sends it: until 2026-12-06 its length went and its bytes did not, and the site waited."""
        self.metrics.requests.labels("websocket").inc()
        length = request.content_length
        if request.body_exists and length is not None and length > self.max_body:
            self.metrics.requests.labels("too_large").inc()
            return pages.error_page(413)
        trusted = self._peer_trusted(request)
        ex = Exchange(self._view(request, raw_path, raw_query, trusted))
        await self.pipeline.websocket(ex)
        if ex.reply is not None:  # refused (bots.on_block = "block"): the site is not asked
            reply = ex.reply  # (its body, if any, is not read: refused before it is invited)
            return pages.QuietResponse(status=reply.status, body=reply.body, headers=reply.headers)
        upgrade_body = b""
        if request.body_exists:
            await pages.invite(request)
            body = _Body(request, self.max_body, self.body_idle)
            try:
                upgrade_body = b"".join([chunk async for chunk in body.chunks()])
            except Exception as err:
                if body.failure is None:
                    raise
                return self._upstream_failed(request, body, err)
        if ex.upstream_query is not None:
            target = with_query(raw_path, ex.upstream_query, after_query)
        try:  # the relay's connection counts against proxy.upstream_connections too
            await self.pool.reserve()
        except TimeoutError as err:
            # None free in proxy.connect_timeout: the upgrade's failure as the relay's own are
            # (``proxy_websocket``'s ``fails``), its one outcome ``websocket``; until 2026-12-08
            # a page's, its line not naming the upgrade and counted ``upstream_timeout`` too.
            self._upstream_fails(request, "timeout", described(err), what=" (WebSocket)")
            return pages.error_page(504)
        try:
            return await proxy_websocket(
                request,
                self.session,
                self._upstream_url(target),
                CIMultiDict(self._upstream_headers(request, ex, trusted, upgrade=True)),
                self.max_ws_message,
                self.going_away,
                functools.partial(self._public_location, view=ex.request),
                upgrade_body,
                # A WebSocket the site takes ends an outage as a page's answer does: a site
                # whose traffic after one was WebSocket alone (a live dashboard) never said it
                # answered again, and its stop said it was failing still (until 2026-12-08).
                self._upstream_answers,
                functools.partial(self._upstream_fails, request, what=" (WebSocket)"),
            )
        finally:
            self.pool.unreserve()

    def _peer_trusted(self, request: web.Request) -> bool:
        """Whether the peer is a trusted proxy, whose Forwarded or X-Forwarded-* are believed."""
        return bool(self.trusted) and is_trusted(request.remote, self.trusted)

    def _view(self, request: web.Request, raw_path: str, raw_query: str, trusted: bool) -> RequestView:
        incoming = request.headers
        # Case-insensitive already; joined into a dict only when a header that matters repeats.
        headers: Mapping[str, str] = incoming
        if len(incoming.getall(hdrs.COOKIE, ())) > 1 or len(incoming.getall("x-forwarded-for", ())) > 1:
            headers = _joined(incoming)
        scheme, host = request.scheme, headers.get("host", "")
        peer = request.remote
        ip = peer or ""
        if trusted:  # X-Forwarded-*, or Forwarded, never both (``trusted_visitor``)
            said = trusted_visitor(lambda name: incoming.getall(name, ()), self.trusted, self.forwarded)
            ip = said.ip or ip
            scheme = said.scheme or scheme
            host = said.host or host
        if self._public_scheme:
            scheme = self._public_scheme
        # Positional, in field order (method, scheme, host, path, query, headers, client_ip): a
        # dataclass called with keywords gathers them into a dict first (~3,300 instructions a
        # request).
        return RequestView(request.method, scheme, host, raw_path, raw_query, headers, ip)

    def _upstream_url(self, target: str) -> URL:
        return URL(self.upstream_origin + target, encoded=True)

    def _upstream_headers(
        self, request: web.Request, ex: Exchange | None, trusted: bool, *, upgrade: bool = False
    ) -> list[tuple[str, str]]:
        """The header list sent upstream, in the visitor's order and with the names as the visitor
        spelled them (aiohttp's parser hands ``user-agent`` over as ``User-Agent``): theirs minus
        hop-by-hop and forwarding claims; an addon's replacement (a cleaned Referer) in the place
        of the header it replaces, after the others when the visitor sent none; ``Host`` in the
        visitor's place, first when they sent none (RFC 9112 §3.2 asks a client to send it
        first); then X-Forwarded-*. For a WebSocket ``upgrade`` the visitor's ``Upgrade`` and
        ``Connection`` lines stay in their place (the relay's client keeps them there)."""
        incoming = request.headers
        peer = request.remote or ""
        drop = _DROP_REQUEST if trusted else _DROP_UNTRUSTED
        # A peer not trusted has its whole X-Forwarded-* family dropped, not only the three the
        # gateway writes (until 2026-12-05 its -Prefix, -Port or -Ssl reached the site); any
        # peer, a claim spelled with underscores (``X_Forwarded_Proto``: ``underscored_claim``).
        claims = () if trusted else (CLAIM_PREFIX,)
        if hdrs.CONNECTION in incoming:
            drop = (drop | connection_tokens(incoming.getall(hdrs.CONNECTION))) - _NEVER_HOP
        if upgrade:
            drop = drop - _UPGRADE
        replace = ex.upstream_headers if ex is not None else {}
        lines = zip(request.raw_headers, incoming.items(), strict=True)
        if replace:
            out = _replaced(lines, drop, replace, claims)
        else:  # the common case, kept to one comprehension: this runs for every request
            names = _NAMES
            out = [
                (names.get(raw) or _spelled(raw), value)
                for (raw, _), (name, value) in lines
                if not (
                    (key := name.lower()) in drop
                    or key.startswith(claims)
                    or ("_" in key and underscored_claim(key))
                )
            ]
        host = incoming.get(hdrs.HOST, "")
        if not host:  # HTTP/1.0 without one, or an empty one
            out = [item for item in out if item[0].lower() != "host"]
            out.insert(0, (hdrs.HOST, self.upstream_host))
        elif not self.preserve_host:
            for i, (name, _) in enumerate(out):
                if name.lower() == "host":
                    out[i] = (name, self.upstream_host)
                    break
        cookies = incoming.getall(hdrs.COOKIE, ())
        if cookies and any(ADMIN_SESSION_COOKIE in cookie for cookie in cookies):
            out = _without_admin_session(out)
        prior = ", ".join(incoming.getall("X-Forwarded-For", ())) if trusted else None
        out.append(("X-Forwarded-For", f"{prior}, {peer}" if prior else peer))
        # A trusted proxy's lines, every one, joined as one list (RFC 9110 §5.3), as -For's.
        proto = ", ".join(incoming.getall("X-Forwarded-Proto", ())) if trusted else None
        # With ``proxy.public_origin`` every request is for it, its scheme too (the cookies' Secure
        # flag is set by it): the site is told the same, not the hop's http (until 2026-12-05,
        # behind a TLS terminator not listed as trusted, the site was told http and a site that
        # sends plain http to https could answer every page with a redirect to itself).
        out.append(("X-Forwarded-Proto", proto or self._public_scheme or request.scheme))
        fwd_host = ", ".join(incoming.getall("X-Forwarded-Host", ())) if trusted else None
        if fwd_host or host:
            out.append(("X-Forwarded-Host", fwd_host or host))
        return out

    async def _forward(
        self,
        request: web.Request,
        ex: Exchange,
        target: str,
        raw_path: str,
        after_query: str,
        commits: list[asyncio.Future[None]],
        seen: int,
        trusted: bool,
    ) -> web.StreamResponse:
        if ex.upstream_query is not None:
            target = with_query(raw_path, ex.upstream_query, after_query)
        await pages.invite(request)  # the site gets the request: now the body may come
        body = _Body(request, self.max_body, self.body_idle)
        if ex.want_request_body:
            body = _CapturedBody(request, self.max_body, self.body_idle)
            try:
                await self._capture_request(request, ex, body)
            except Exception as err:
                return await self._failed(request, ex, body, err, commits, seen)
        try:
            upstream = await self.pool.request(
                request.method,
                target,
                self._upstream_headers(request, ex, trusted),
                body.chunks() if request.body_exists else None,
                length_known=request.content_length is not None,
                # RFC 9110 §15.2: no 1xx to an HTTP/1.0 client.
                early_hints=functools.partial(_early_hints, request) if request.version >= (1, 1) else None,
            )
        except Exception as err:
            return await self._failed(request, ex, body, err, commits, seen)
        if self._outage.since is not None:
            self._upstream_answers()

        try:
            head = await self._capture_response(upstream, ex) if ex.want_response_body else b""
            sent = self._as_sent(upstream.headers, ex.request)  # what the rules and the visitor get
            ex.response = ResponseView(upstream.status, sent)
            await self.pipeline.response(ex)
            self._submit_new(ex, seen, commits)
            resp = pages.TransparentResponse(status=upstream.status, reason=upstream.reason)
            if self.log_answers:  # for the access log's line if the visitor leaves (server.HostSlot)
                request[pages.ANSWER] = resp
            complete = upstream.content.is_eof() and not upstream.cut_short()
            if complete:
                # The whole body is already here: headers, body and end go out in one write
                # (aiohttp flushes a StreamResponse's headers on their own by default). A body
                # still on its way keeps the default, so the visitor sees headers at once.
                resp._send_headers_immediately = False
            drop = HOP_BY_HOP
            if hdrs.CONNECTION in sent:
                drop = drop | connection_tokens(sent.getall(hdrs.CONNECTION))
            kept = []
            spaced: frozenset[str] = frozenset()
            # The names as the site spelled them (``ETag``): aiohttp's are its own (``Etag``); the
            # values as the rules read them, a Location or Refresh at the public origin.
            names = _ANSWER_NAMES
            for (raw_name, _), (_, value) in zip(upstream.raw_headers, sent.items(), strict=True):
                spelled, key = names.get(raw_name) or _answer_name(raw_name)
                if key not in drop:
                    kept.append((spelled, value))
                elif key == "connection" and raw_name[-1:] in (b" ", b"\t"):
                    # ``Connection :``, which ``sent`` has under its name with the space: the
                    # lines it names are the gateway's hop's alone too.
                    spaced |= connection_tokens((value,))
            if spaced:
                kept = [(name, value) for name, value in kept if name.lower() not in spaced]
            resp.headers.extend(kept)
            resp.as_sent = pages.needs_as_sent(upstream.reason, kept)
            self._apply_cookies(resp, ex)
            if commits:
                await self.confirmations.confirm(commits)
            await resp.prepare(request)
            self._forwarded.inc()
            try:
                if complete:
                    rest = upstream.content.read_nowait()
                    await resp.write_eof(head + rest if head else rest)
                    return resp
                if head:
                    await resp.write(head)
                async for chunk in upstream.content.iter_any():
                    await resp.write(chunk)
                if upstream.cut_short():
                    raise aiohttp.ClientPayloadError("the upstream's connection broke mid-body")
                await resp.write_eof()
            except (ConnectionError, asyncio.CancelledError) as err:
                # The visitor went away mid-body: the listener cancels the handler (or a write
                # raises ConnectionError; the upstream's errors are never ConnectionErrors).
                # Drop the upstream connection rather than drain it.
                self.metrics.requests.labels("client_gone").inc()
                upstream.close()
                if isinstance(err, asyncio.CancelledError):
                    raise
            except (aiohttp.ClientError, TimeoutError) as err:
                # Headers are gone: the only honest signal left is a cut connection (a reset:
                # to an HTTP/1.0 visitor a close can be the body's end).
                self.metrics.upstream_errors.labels("body").inc()
                log.warning("upstream body failed mid-stream for %s: %s", raw_path, described(err))
                upstream.close()
                if request.transport is not None:
                    pages.reset(request.transport)
            return resp
        finally:
            upstream.release()

    async def _capture_request(self, request: web.Request, ex: Exchange, body: _CapturedBody) -> None:
        """A rule reads the request body: read it up to its cap (it still goes upstream whole)."""
        if not request.body_exists:
            ex.request_body = b""
            return
        raw = await body.capture(ex.want_request_body)
        # As a response body (``_capture_response``): the rule reads what the site will decode
        # (a gzip-encoded form), the site gets the bytes as sent; undecodable: not read.
        codings = content_codings(request.headers.getall(hdrs.CONTENT_ENCODING, []))
        ex.request_body = None if raw is None else decoded_layers(raw, codings, ex.want_request_body)

    async def _capture_response(self, upstream: UpstreamResponse, ex: Exchange) -> bytes:
        """A rule reads the response body: read it up to the cap before the response hooks run,
        and give them the decoded view; the bytes read are returned to be forwarded as they came."""
        cap = ex.want_response_body
        buffer = bytearray()
        if upstream.content_length is not None and upstream.content_length > cap:
            return b""  # too large to read (decoding would hardly shrink it): stream it untouched
        if streamed_type(upstream.headers.get(hdrs.CONTENT_TYPE)):
            return b""  # events the visitor sees as they come, perhaps never ending: not read
        try:
            while len(buffer) <= cap:
                chunk = await upstream.content.readany()
                if not chunk:
                    if not upstream.cut_short():  # a body cut short is not read either
                        # Every Content-Encoding line (RFC 9110: one list), as signed events read
                        # them; the first alone left ``gzip`` + ``gzip`` half undone, unreadable.
                        codings = content_codings(upstream.headers.getall(hdrs.CONTENT_ENCODING, []))
                        ex.response_body = decoded_layers(bytes(buffer), codings, cap)
                    break
                buffer += chunk
        except (aiohttp.ClientError, TimeoutError):
            pass  # forwarding meets the same failure and handles it; the rule reads nothing
        return bytes(buffer)

    async def _failed(
        self,
        request: web.Request,
        ex: Exchange,
        body: _Body,
        err: Exception,
        commits: list[asyncio.Future[None]],
        seen: int,
    ) -> web.StreamResponse:
        """The page of a request the site did not answer (down, too slow, its body stalled),
        answered as a reply of the gateway's own is: the response hooks run on it, so a landing
        recorded for a new visitor sets its cookie there. Without it the reload, once the site
        is back, came as a visitor never seen, its landing a second arrival (until 2026-12-05)."""
        resp = self._upstream_failed(request, body, err)
        ex.response = ResponseView(resp.status, resp.headers)
        await self.pipeline.response(ex)
        self._submit_new(ex, seen, commits)
        self._apply_cookies(resp, ex)
        if commits:
            await self.confirmations.confirm(commits)
        return resp

    def _upstream_failed(
        self, request: web.Request, body: _Body | None, err: Exception
    ) -> web.StreamResponse:
        if body is not None and body.failure is not None:
            status, label = _BODY_FAILURES[body.failure]
            self.metrics.requests.labels(label).inc()
            page = pages.error_page(status)
            if body.failure == "broken":  # the parser takes nothing more on this connection
                page.force_close()
            return page
        if isinstance(err, TimeoutError):
            kind, status = "timeout", 504
        elif isinstance(err, aiohttp.ClientError | OSError | UpstreamProtocolError):
            kind, status = (
                "connect" if isinstance(err, UpstreamConnectError) else "protocol",
                502,
            )
        else:
            log.exception("unexpected failure forwarding %s", request.method)
            kind, status = "internal", 502
        self.metrics.requests.labels(f"upstream_{kind}").inc()
        self._upstream_fails(request, kind, described(err))
        return pages.error_page(status)

    def _upstream_fails(self, request: web.Request, kind: str, why: str, what: str = "") -> None:
        """One failure of the site of ``kind`` (``UpstreamOutage.lines``), to a page or to a
        WebSocket upgrade (``what`` = " (WebSocket)", ``proxy_websocket``'s ``fails``): counted,
        said by its kind's throttled line, and part of the outage its next answer ends. Until
        2026-12-08 an upgrade's failure was a line of its own each time, uncounted, and began no
        outage: a dashboard retrying its WebSocket against a down site wrote a line per retry."""
        self.metrics.upstream_errors.labels(kind).inc()
        if kind == "timeout":  # which of the two to raise, if the site is only slow
            why += (
                f" (proxy.connect_timeout = {self.pool.connect_timeout:g} s to connect, "
                f"proxy.read_timeout = {self.pool.read_timeout:g} s of the site's silence)"
            )
        path = without_email(request.path)  # a newsletter's personal link: not its address
        self._outage.lines[kind]("upstream %s for %s %s%s: %s", kind, request.method, path, what, why)
        if self._outage.since is None:
            self._outage.since = time.monotonic()
        self._outage.answered = None  # failing again: an answer before this one ended nothing

    def _upstream_answers(self) -> None:
        """The site answered after failing: said at info, with how long and the failure lines
        held back since their last (until 2026-12-07 nothing said an outage was over, and one
        shorter than the lines' 10 s never said how many requests it failed)."""
        now = time.monotonic()
        if self._outage.since is None:
            return
        if now - self._outage.back_said < UPSTREAM_BACK_INTERVAL:
            # The held lines wait for the next line of either kind, or the stop's (until
            # 2026-12-08 the stop took such an outage, ended, for one still on).
            if self._outage.answered is None:
                self._outage.answered = now
            return
        self._said_back(self._outage.answered or now, now)

    def _said_back(self, answered: float, now: float) -> None:
        """ "upstream answers again", the site having answered at ``answered`` (monotonic)."""
        assert self._outage.since is not None
        since, self._outage.since, self._outage.answered = self._outage.since, None, None
        self._outage.back_said = now
        log.info(
            "upstream answers again, %.1f s after it began to fail%s",
            answered - since,
            self._upstream_held_back(),
        )

    def _upstream_held_back(self) -> str:
        """The upstream failure lines held back since their last, in words ("" when none)."""
        held = [(kind, said.take_held()[0]) for kind, said in self._outage.lines.items()]
        parts = [f'{n} more "upstream {kind}" line{"s" if n != 1 else ""}' for kind, n in held if n]
        return "; not logged since the last such line: " + ", ".join(parts) if parts else ""

    def outage_from(self, old: ProxyHost) -> None:
        """A reload's new host takes the old one's outage over (``UpstreamOutage``): shared, the
        old one still ending its requests; what the lines held back is said once, when the
        outage ends or at the stop."""
        self._outage = old._outage
        self.confirmations.lines_from(old.confirmations)

    def at_stop(self) -> None:
        """The stop's last word on an outage: the site failing since its last answer, and the
        lines held back (the next such line will not come; none held back, the outage's lines
        said it all); or, the site having answered since (its "answers again" line waiting for
        ``UPSTREAM_BACK_INTERVAL``), that line, at info."""
        self.confirmations.at_stop()
        if self._outage.since is not None and any(said.holding for said in self._outage.lines.values()):
            if self._outage.answered is not None:  # it answered last: the outage is over
                self._said_back(self._outage.answered, time.monotonic())
                return
            log.warning(
                "stopping while the upstream fails, for %.1f s now%s",
                time.monotonic() - self._outage.since,
                self._upstream_held_back(),
            )

    def _public_location(
        self, location: str, view: RequestView, rewrite: Callable[[str, str, str], str] = rewrite_location
    ) -> str:
        if not (self.public_origin or view.host):
            return location  # an HTTP/1.0 request without Host: no public origin to point at
        public = self.public_origin or f"{view.scheme}://{view.host}"
        return rewrite(location, self.upstream_origin, public)

    def _as_sent(self, headers: CIMultiDictProxy[str], view: RequestView) -> CIMultiDictProxy[str]:
        """The answer's headers as the visitor gets them, its ``Location`` and ``Refresh`` at
        the public origin: what the rules read, as the browser (devtools, a HAR for ``rules
        try``) shows them, whatever address the site named itself by; the answer goes out with
        these values too (rewritten once)."""
        if hdrs.LOCATION not in headers and "refresh" not in headers:
            return headers
        public: CIMultiDict[str] = CIMultiDict()
        for name, value in headers.items():
            if name.lower() == "location":
                value = self._public_location(value, view)
            elif name.lower() == "refresh":
                value = self._public_location(value, view, rewrite_refresh)
            public.add(name, value)
        return CIMultiDictProxy(public)

    def _apply_cookies(self, resp: web.StreamResponse, ex: Exchange) -> None:
        """Our Set-Cookie headers, after the site's; an answer that gets one and that a shared
        cache could store gets ``Cache-Control: private`` too (and a CDN's own fields their
        like: ``cache_lines_to_add``), lest that cache hand our visitor ID (or an expiry) to
        everyone who asks for the page — but for a refresh identity made
        only where no shared cache gives the answer to anyone else (``Cookie.shared_safe``)."""
        # A loop, not any() over a generator (~2,000 instructions a landing); the headers
        # fetched once (a property of aiohttp's, in Python).
        headers = resp.headers
        for cookie in ex.set_cookies:
            if not cookie.shared_safe:
                for name, value in cache_lines_to_add(headers.keys(), lambda n: headers.getall(n, ())):
                    headers.add(name, value)
                break
        for cookie in ex.set_cookies:
            headers.add(hdrs.SET_COOKIE, set_cookie_line(cookie))

    def _submit_new(self, ex: Exchange, seen: int, commits: list[asyncio.Future[None]]) -> None:
        """Events that response hooks added go to the store too."""
        if len(ex.events) > seen:
            new: list[Event] = ex.events[seen:]
            commits.append(submitted(self.store, new, self.pipeline))
