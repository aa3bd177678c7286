"""The mitmproxy host: ``mitmdump --mode reverse:URL -s addons/mitm.py --set gateway_config=FILE``.

Translates mitmproxy's ``HTTPFlow`` to our ``Exchange`` and back, so the same
addon chain and the same store run inside mitmproxy (for its TLS termination,
HTTP/2 and HTTP/3 at the edge). Request-headers hook (before anything goes to the site, a
streamed body too; the ``request`` hook then reads the body for the rules): the chain runs, tracking pairs
leave ``flow.request.path`` (the other raw query pieces kept byte for byte),
extra upstream headers are set, X-Forwarded-* go as the aiohttp host sends them
(``forward_headers``), a ``reply`` becomes ``flow.response``; a path under the reserved
prefix, in any spelling, is answered 404, never forwarded. A WebSocket
upgrade gets the chain's ``websocket`` hook instead (tracking pairs leave its URL too;
nothing is recorded), as in the aiohttp host.
Response-headers hook (before any body byte, streamed or not): a site's transfer coding
(``gzip, chunked``) is undone on the way as the aiohttp host undoes it (``undo_transfer_coding``;
``compress`` becomes the neutral 502), a Location or Refresh
at the site's own origin is pointed at the public one, the response hooks run (the rules read
the Location so pointed, as the visitor gets it), our Set-Cookie headers are added beside the
site's, and the flow waits — bounded by ``storage.max_wait_ms`` — for its events' commit; when a rule
reads the response body (and mitmproxy buffers it), this waits for the response
hook instead, but for an answer sent piece by piece (``text/event-stream``, ``multipart/mixed``:
``gateway.codings.streamed_type``), which streams unread as in the aiohttp host; a site's
interim answer (103) that mitmproxy took for its final one becomes the neutral 502 there
(``mistaken_interim``). The rules get the bodies they ask for (decoded as the aiohttp host
decodes them) and the response's headers as a multidict, one Set-Cookie each. Owns a
``LocalStore`` (opened in ``running``, closed in ``done``). A config problem is
logged by key (mitmdump then exits); keys only ``gateway run`` reads, set, are named in one
warning (``RUN_ONLY``). SIGHUP reloads the config as ``gateway run`` does (``reload``:
``gateway.reload``'s live settings, a new chain for new flows), heard from ``load`` on: one
before the store is open waits for it (started by ``gateway mitmdump``, one before ``load``
too: it is held blocked from the process's start until the handler is in place). mitmproxy
runs this file again when it changes (its script watcher): the old instance ends once the flows
it began have (``done``), keeping the new instance's SIGHUP handler and log levels, and hands it
the cookieless salt and the loopback answerer (``addons.mitm_answer``, listening until mitmdump
ends); the new one reads the config again and opens its own store. At a stop, the connections
still open when mitmdump's loop ends are cancelled without a word (``StopReports``); a flow's state
from request to response lives in ``addons.mitm_shared``, imported once, so whichever instance
gets its response finds it. The only module in ``addons/`` that imports mitmproxy; nothing else
imports this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import signal
import sqlite3
import time
import zlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from mitmproxy import exceptions
from mitmproxy import http as mhttp
from mitmproxy.proxy import mode_specs
from multidict import CIMultiDict

from addons import mitm_shared as shared
from addons.campaign import host_of
from addons.mitm_answer import Answerer, answer_bytes
from gateway import reserved
from gateway.childsignals import heard
from gateway.codings import content_codings, decoded_layers, streamed_type
from gateway.commits import Confirmations, submitted
from gateway.config import RELOAD_HINT, ConfigError, Settings, load_settings
from gateway.daysalt import DaySalt
from gateway.doctor import store_failure
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
    origin_key,
    public_origin,
    rewrite_location,
    rewrite_refresh,
    set_cookie_line,
    trusted_visitor,
    underscored_claim,
)
from gateway.framing import transfer_codings
from gateway.logs import Throttled, restore_levels, set_own_level
from gateway.metrics import Metrics
from gateway.notices import Notices
from gateway.options import AdminOptions, Options
from gateway.pages import SHOWN_NAME, error_body, error_page, named_header
from gateway.pipeline import (
    Exchange,
    Pipeline,
    RequestView,
    ResponseView,
    build_pipeline,
    split_target,
    with_query,
)
from gateway.reload import live_settings, restart_needed
from gateway.sdnotify import Notifier
from gateway.sessions import COOKIE as ADMIN_SESSION_COOKIE
from gateway.sessions import is_session_cookie
from storage.local import LocalStore
from storage.migrate import SchemaTooNew

log = logging.getLogger("gateway.mitm")

MISSING_HINT = " (export it in mitmdump's environment; mitmdump has no --dev)"
"""What a missing secret's problem adds here; until 2026-12-05 it said ``(or run with --dev)``,
an option only ``gateway run`` has."""
BEGUN = "gateway_begun"
"""``flow.metadata``'s key for a flow whose chain ran at ``requestheaders``."""
ANSWER = "gateway_answer"
"""``flow.metadata``'s key for the answerer's token of a flow it answers (``_answer_streamed``)."""
ASKED = "gateway_asked"
"""``flow.metadata``'s key for what the visitor asked of a flow the answerer answers (its scheme,
host, port, authority, path and ``Host``), put back once its answer is in (``shown``)."""
LOUD_EVERY = 60.0
"""Seconds between info lines for a request refused over ``proxy.max_header_size`` (as the
aiohttp host's listener logs it)."""


NO_OPTION = "mitmproxy has no such option"
RUN_ONLY: dict[str, str] = {
    "proxy.listen": "mitmdump's --listen-host and --listen-port, or --mode reverse:URL@HOST:PORT",
    "proxy.preserve_host": "mitmdump's keep_host_header, false by default: the upstream's Host",
    "proxy.connect_timeout": NO_OPTION,
    "proxy.read_timeout": NO_OPTION,
    "proxy.upstream_connections": NO_OPTION,
    "proxy.max_request_body": "mitmdump's body_size_limit, which bounds responses too",
    "proxy.body_timeout": NO_OPTION,
    "proxy.keepalive_timeout": NO_OPTION,
    "proxy.header_timeout": NO_OPTION,
    "proxy.max_websocket_message": NO_OPTION + ": a message of any size is relayed",
    "proxy.access_log": "mitmdump prints each flow itself: flow_detail, or -q for none",
    "proxy.workers": "mitmdump is one process",
    "proxy.shutdown_grace": NO_OPTION,
    "proxy.drain_seconds": "no /healthz here: mitmdump stops at once",
    "proxy.worker_hang_seconds": "mitmdump is one process",
    **{
        f"admin.{name}": "no admin listener here: the admin API is gateway run's"
        for name in AdminOptions.__struct_fields__
    },
    "log.format": "mitmdump prints each line in its own format",
}
"""Keys only ``gateway run`` reads → what stands for each in mitmdump (its options as of
mitmproxy 11, ``mitmdump --options``), without a ``;``: the warning joins them with it. Until
2026-12-05 they were ignored without a word."""
UPSTREAM_HINT = (
    "mitmdump sends to its --mode reverse:URL, and here this key only tells the site's redirects"
    " to its own origin apart: give it that URL's host"
)


def run_only_keys(options: Options, reverse_hosts: frozenset[str]) -> list[str]:
    """Each ``RUN_ONLY`` key set to other than its default, with its value and what to use in
    mitmdump instead (``proxy.workers = 4 (mitmdump is one process)``); keys left at their
    defaults are not named. ``proxy.upstream`` is named when its host is none of
    ``reverse_hosts`` (mitmdump's reverse targets'): the campaign addon reads it here too."""
    defaults = Options()
    named = []
    upstream = options.proxy.upstream
    if upstream and host_of(upstream) not in reverse_hosts:
        named.append(f"proxy.upstream = {json.dumps(upstream)} ({UPSTREAM_HINT})")
    for key, instead in RUN_ONLY.items():
        section, _, name = key.partition(".")
        value = getattr(getattr(options, section), name)
        if value != getattr(getattr(defaults, section), name):
            named.append(f"{key} = {json.dumps(value)} ({instead})")
    return named


def reverse_hosts(modes: Any) -> frozenset[str]:
    """The hosts of mitmdump's ``--mode reverse:URL`` targets (``ctx.options.mode``)."""
    hosts = set()
    for spec in modes:
        try:
            mode = mode_specs.ProxyMode.parse(spec)
        except ValueError:
            continue  # mitmproxy refuses it itself
        if isinstance(mode, mode_specs.ReverseMode):
            hosts.add(mode.address[0].lower().rstrip("."))
    return frozenset(hosts)


def over_limit(request: mhttp.Request, limit: int) -> tuple[int, str | None] | None:
    """414 for a request target longer than ``limit`` bytes (``proxy.max_header_size``), 431
    for a header name or value longer, as the aiohttp host's parser refuses them, with the
    first such header's name (``""``: a name over the limit; None: a name that is no token, not
    shown); else None. mitmproxy takes far longer ones (a 70 kB header): until 2026-12-05 they
    went on to the site, and a landing among them was recorded."""
    if len(request.data.path) > limit:
        return 414, None
    for name, value in request.headers.fields:
        if len(name) > limit:
            return 431, ""
        if len(value) > limit:
            return 431, name.decode() if SHOWN_NAME.fullmatch(name) else None
    return None


def joined_headers(headers: Any) -> dict[str, str]:
    """mitmproxy ``Headers`` → lower-case name → value; repeats joined ("; " for cookies)."""
    joined: dict[str, str] = {}
    for name, value in headers.items(multi=True):
        key = name.lower()
        if key in joined:
            joined[key] += ("; " if key == "cookie" else ", ") + value
        else:
            joined[key] = value
    return joined


def is_websocket_upgrade(request: mhttp.Request) -> bool:
    """A WebSocket handshake (``gateway.websocket.is_websocket_upgrade``, for mitmproxy's
    request): mitmproxy knows it only once the site has answered 101."""
    return (
        request.method == "GET"
        and request.headers.get("upgrade", "").lower() == "websocket"
        and "upgrade" in request.headers.get("connection", "").lower()
    )


def forward_headers(headers: Any, peer: str, scheme: str, trusted: bool) -> None:
    """X-Forwarded-* in ``headers`` (mitmproxy's, going upstream) as the aiohttp host sends
    them: a peer that is not a trusted proxy has its own claims (every X-Forwarded-*, Forwarded,
    X-Real-IP) dropped, then X-Forwarded-For gets the peer appended, and X-Forwarded-Proto and
    -Host say how the visitor reached us (a trusted proxy's values kept). Until 2026-12-05 the
    mitmproxy host passed a visitor's ``X-Forwarded-For: 6.6.6.6`` to the site as it came and
    added none of its own: a site that believes the gateway read a forged address."""
    prior = ", ".join(headers.get_all("x-forwarded-for")) if trusted else ""
    proto = (headers.get("x-forwarded-proto") if trusted else None) or scheme
    host = (headers.get("x-forwarded-host") if trusted else None) or headers.get("host", "")
    for name in FORWARDED if trusted else FORWARDED | CLIENT_CLAIMS:
        headers.pop(name, None)
    # The rest of the X-Forwarded-* family (-Prefix, -Port, -Ssl…) too, and from any peer a claim
    # spelled with underscores (``X_Forwarded_Proto``), as the aiohttp host drops them.
    for name in {name.lower() for name in headers}:
        if (not trusted and name.startswith(CLAIM_PREFIX)) or ("_" in name and underscored_claim(name)):
            headers.pop(name, None)
    headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    headers["X-Forwarded-Proto"] = proto
    if host:
        headers["X-Forwarded-Host"] = host


MITMPROXY_READS = frozenset({"connection", "content-length", "transfer-encoding", "host"})
"""Lines left on the request going upstream though the aiohttp host drops them (hop-by-hop, or
named in ``Connection``): mitmproxy reads them on the flow's request for its own hops — whether
to close the visitor's connection once answered (``Connection: close``), how the body is framed
to the site — and ``Host`` is never a hop's (as in the aiohttp host)."""


def without_hop_by_hop(headers: Any, upgrade: bool) -> None:
    """The visitor's hop-by-hop lines (RFC 9110 §7.6.1) out of ``headers`` (mitmproxy's, going
    upstream), as the aiohttp host drops them: ``TE``, ``Trailer``, ``Proxy-Connection``,
    ``Proxy-Authorization`` (the credentials of a proxy in front, never the site's), ``Upgrade``
    but on a WebSocket ``upgrade``, and the lines ``Connection`` names (``Connection: X-Hop``),
    less ``MITMPROXY_READS``. mitmproxy drops ``Keep-Alive`` and ``Expect`` itself; until
    2026-12-06 it passed the others to the site as the visitor sent them."""
    drop = (HOP_BY_HOP | connection_tokens(headers.get_all("connection"))) - MITMPROXY_READS
    if upgrade:
        drop -= {"upgrade"}
    for name in {name.lower() for name in headers} & drop:
        headers.pop(name, None)


def without_admin_session(headers: Any) -> None:
    """The dashboard's session cookies (every port's: ``is_session_cookie``) out of
    ``headers``' Cookie lines, as the aiohttp host does: a cookie is not scoped to a port, so a
    browser signed in to the admin listener on this host name sends it here too, and passed on
    it would hand the site a live admin session. A Cookie line left with no cookie in it is
    dropped (the session alone beside a stray ";" left an empty line the visitor never sent)."""
    lines = headers.get_all("cookie")
    if not any(ADMIN_SESSION_COOKIE in line for line in lines):
        return
    kept = []
    for line in lines:
        pairs = [p for p in line.split(";") if not is_session_cookie(p.strip().partition("=")[0])]
        if any(pair.strip() for pair in pairs) or not line.strip():
            kept.append(";".join(pairs).strip())
    headers.set_all("cookie", kept)


def response_headers(headers: Any) -> CIMultiDict[str]:
    """mitmproxy ``Headers`` of a response as the aiohttp host gives them: each repeat kept
    (every Set-Cookie), ``get`` the first. Joined, a rule looking for one cookie among
    several saw only the first."""
    return CIMultiDict((name.lower(), value) for name, value in headers.items(multi=True))


def read_body(raw: bytes | None, headers: Any, cap: int) -> bytes | None:
    """A body for a rule, as the aiohttp host reads it: every ``Content-Encoding`` line of
    ``headers`` (mitmproxy's) undone; None when streamed, over ``cap`` or not decodable (the
    rule counts ``body_not_read``)."""
    if raw is None or len(raw) > cap:
        return None
    return decoded_layers(raw, content_codings(headers.get_all("content-encoding")), cap)


def _as_warning(record: logging.LogRecord) -> bool:
    """The store's error lines while it opens (a full disk, a read-only mount, which it serves
    on) said as warnings: mitmdump ends at any error line logged before it serves (its
    ``errorcheck``), so until 2026-12-07 a store on a full disk at start stopped it, where the
    README and ``gateway run`` serve the site on. A store that cannot open is this module's
    own error line, after, and stops it."""
    if record.levelno >= logging.ERROR:
        record.levelno, record.levelname = logging.WARNING, "WARNING"
    return True


def may_stream(request: mhttp.Request) -> bool:
    """Whether mitmproxy streams ``request``'s body (over ``stream_large_bodies``), or may once
    it has read part of it (a body of no announced length, chunked), when it has one."""
    from mitmproxy import ctx

    if request.stream:
        return True
    limit = ctx.options.stream_large_bodies if "stream_large_bodies" in ctx.options else None
    return bool(limit) and "content-length" not in request.headers and "transfer-encoding" in request.headers


def expects_continue(request: mhttp.Request) -> bool:
    """Whether ``request`` waits for a ``100 Continue`` before sending its body (mitmproxy sends
    one after the request-headers hook for ``Expect: 100-continue``, whatever the hook did)."""
    if request.headers.get("expect", "").lower() != "100-continue":
        return False
    return "transfer-encoding" in request.headers or request.headers.get(
        "content-length", "0"
    ).strip() not in ("", "0")


def made(status: int, body: bytes, headers: Mapping[str, str]) -> mhttp.Response:
    """A response of the gateway's own, its header names written as given (mitmproxy keeps
    their case) and ``Content-Length`` as the aiohttp host writes it: ``Response.make`` adds a
    lower-case one. Until 2026-12-05 this host wrote ``content-type``, ``set-cookie``,
    ``cache-control`` where ``gateway run`` writes ``Content-Type``, ``Set-Cookie``…; an
    addon's reply keeps the names its addon gave, as in the aiohttp host."""
    return mhttp.Response.make(status, body, {**headers, "Content-Length": str(len(body))})


def neutral_page(flow: mhttp.HTTPFlow, status: int, header: str | None = None, limit: int = 0) -> None:
    """``flow`` answered with the small neutral page the aiohttp host refuses requests with
    (a 431's naming ``header``, over ``limit`` bytes)."""
    page = error_page(status, header=header, limit=limit)
    body = page.body if isinstance(page.body, bytes) else b""
    headers = {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"}
    flow.response = made(status, body, headers)
    flow.response.reason = HTTPStatus(status).phrase  # mitmproxy's table lacks 431's


def mistaken_interim(response: mhttp.Response) -> bool:
    """A site's interim answer (``103 Early Hints``, ``102``; a ``101`` is a WebSocket's) that
    mitmproxy 11 took for its final one: its HTTP/1 client reads the first head it gets as the
    answer (mitmproxy issue #2229) and would send the visitor the hint alone, the page behind it
    dropped, the visitor's connection left waiting (until 2026-12-06)."""
    return 100 <= response.status_code < 200 and response.status_code != 101


UNDONE = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
"""The transfer codings (besides chunked) this host undoes, as the aiohttp host's upstream client
does (``gateway.upstream``), and zlib's window bits for each."""


class TransferDecoder:
    """A site's transfer coding undone as its body streams through mitmproxy (its ``stream``,
    called with each piece and ``b""`` at the end): ``deflate`` is zlib's format, or the raw
    deflate some sites send under that name, told by the first byte as aiohttp's decoder tells
    it. A body that does not decode is cut there, as the aiohttp host cuts it: ``broken`` is
    called with why (it kills the flow, so the visitor's connection closes before the body's
    last chunk: a raise here left it waiting), and nothing more goes out."""

    def __init__(self, coding: str, broken: Callable[[str], None]) -> None:
        self.coding = coding
        self.broken = broken
        self._inflate: Any = None
        self._failed = False

    def __call__(self, data: bytes) -> list[bytes]:
        # Nothing decoded is no piece at all: an empty one would go out as the chunked body's
        # last chunk (``0\r\n\r\n``), the page cut where it stands with nothing to say so.
        if self._failed:
            return []
        try:
            if self._inflate is None:
                if not data:
                    return []
                wbits = UNDONE[self.coding]
                if self.coding == "deflate" and data[0] & 0x0F != 8:
                    wbits = -zlib.MAX_WBITS
                self._inflate = zlib.decompressobj(wbits)
            out = self._inflate.decompress(data) if data else self._inflate.flush()
        except zlib.error as err:
            self._failed = True
            self.broken(f"its body under Transfer-Encoding: {self.coding} does not decode ({err})")
            return []
        return [out] if out else []


def undo_transfer_coding(response: mhttp.Response, broken: Callable[[str], None]) -> str | None:
    """A site's answer with a transfer coding besides chunked (``Transfer-Encoding: gzip,
    chunked``; ``gzip`` alone, its body ended by the close) made readable, as the aiohttp host
    makes it (README "How a request flows"): mitmproxy undoes the chunks only, passes the header
    on and chunks the gzip bytes again, and no browser reads a transfer coding (until
    2026-12-07 the visitor got those bytes). The header becomes ``Transfer-Encoding: chunked``
    and the body streams through a ``TransferDecoder`` (``broken``: called if it does not
    decode), streamed whatever ``stream_large_bodies`` says: a rule that reads it reads nothing.
    Why the answer cannot be read when the coding is none undone here (``compress``, the one
    other mitmproxy takes); else None."""
    values = response.headers.get_all("transfer-encoding")
    if not values:
        return None
    codings = transfer_codings(", ".join(values))
    if codings[-1:] == ["chunked"]:
        codings = codings[:-1]
    if not codings:
        return None
    if len(codings) > 1 or codings[0] not in UNDONE:
        return (
            f"its answer has Transfer-Encoding: {', '.join(values)}, a transfer coding the gateway does "
            "not undo (it undoes one of gzip or deflate, under chunked)"
        )
    response.headers["transfer-encoding"] = "chunked"
    response.stream = TransferDecoder(codings[0], broken)
    return None


def read_config(path: str, hint: str, reload: bool = False) -> Settings:
    """The config as this host reads it: no admin listener, central sync, sink or signed-event
    endpoint runs here, so none of their secrets need be set (one set is checked), nor is a
    public ``admin.listen`` refused. ``reload``: an empty file is refused, as ``gateway run``'s."""
    return load_settings(
        path, missing_hint=hint, admin_public=True, admin_api=False, files_only=True, reload=reload
    )


NOT_HERE = frozenset({"admin", "admin.token", "central", "sinks", "sources", "privacy.retention_days"})
"""Keys a reload may name as needing a restart (``restart_needed``) that mitmdump never reads
(beside ``RUN_ONLY``'s): no admin API, central sync, sinks, signed events nor purge runs here."""


def restart_keys_here(old: Settings, new: Settings) -> list[str]:
    """What a reload changed that mitmdump keeps as it started, of the keys it reads."""
    return [key for key in restart_needed(old, new) if key not in RUN_ONLY and key not in NOT_HERE]


class _State:
    """A flow's state from its request to its response, in ``shared.FLOWS``: the instance its
    response hooks reach may be a newer one than its request's (a hot reload between)."""

    __slots__ = ("commits", "ex", "owner", "pipeline", "seen", "store")

    def __init__(
        self,
        ex: Exchange,
        seen: int,
        commits: list[asyncio.Future[None]],
        pipeline: Pipeline,
        store: LocalStore,
        owner: object,
    ) -> None:
        self.ex, self.seen, self.commits = ex, seen, commits
        self.pipeline = pipeline
        """The chain the request ran through: its response goes through it too, reload or not."""
        self.store = store
        """The store of the instance that saw the request: its response's events go there too."""
        self.owner = owner
        """That instance: on a hot reload it closes its chain and store after its last flow."""


class GatewayAddon:
    """The tracking gateway as a mitmproxy addon (one per mitmdump process)."""

    def __init__(self) -> None:
        self.settings: Settings | None = None
        self.metrics = Metrics()
        self.pipeline: Pipeline | None = None
        self.store: LocalStore | None = None
        self._ready = asyncio.Event()
        """Set once the store is open: mitmproxy may accept a request before ``running`` ends."""
        self._loud_at = float("-inf")
        self._interim_at = float("-inf")
        self._unreadable_log = Throttled(log, logging.WARNING)
        """An answer in a transfer coding not undone, as the aiohttp host logs it (per 10 s)."""
        self.confirmations = Confirmations(self.metrics, log, wait=True)
        """Each flow's wait for its events' commit, as the aiohttp host's (``gateway.commits``)."""
        self.salt = DaySalt()
        """The cookieless visitors' salt, kept across reloads (a new one would make each new)."""
        self.notices = Notices()
        """The config's warnings (GeoIP's "no database configured"), said once, not at each reload:
        until 2026-12-05 every SIGHUP said them again, where ``gateway run`` says them once."""
        self.config_path = ""
        self._ignored: list[str] = []
        self._reloading = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        """Reloads under way, and old chains waiting for their last flow before ``done``."""
        self._retiring: set[Pipeline] = set()
        self._stopping = False
        self._pending = 0
        """Reloads begun and not done: systemd's READY=1 once none is left."""
        self._hup_waiting = False
        """A SIGHUP came before the store was open: one reload follows once it is."""
        self._levels: dict[str, int] | None = None
        """The loggers' levels before ``log.level`` was applied, restored at ``done``."""
        self._started: asyncio.Future[None] | None = None
        self._reloaded = False
        """This instance replaces one that mitmproxy's script watcher unloaded (a hot reload)."""
        self.answerer = Answerer()
        """Answers the requests this host answers itself whose bodies mitmproxy streams."""

    def load(self, loader: Any) -> None:
        loader.add_option("gateway_config", str, "gateway.toml", "tracking-gateway config file (TOML)")
        # mitmdump loads its scripts inside its running loop: SIGHUP is heard from here on, not
        # only once the store is open (until 2026-12-05 one sent while mitmdump started ended it,
        # the signal's default); one that comes before ``running`` is applied once it is open.
        # After a hot reload this handler replaces the old instance's, which no longer removes it.
        self._listen()
        handed, shared.handed = shared.handed, None
        self._reloaded = handed is not None
        if handed is not None:
            # The answerer too, listening on: a request the old instance refused may not have
            # reached it yet (until 2026-12-07 each instance had its own, closed once the old one
            # had ended, and such a request got mitmproxy's 502 naming its refused connection).
            self.salt, self.notices, self._levels, self.answerer = handed

    def _listen(self) -> None:
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._hangup)
        except (NotImplementedError, RuntimeError):  # no loop, no signals (Windows)
            return
        # Held since the process began when ``gateway mitmdump`` started it (``gateway/mitmlaunch.py``):
        # one sent while Python and mitmproxy loaded, before this handler, reaches it now.
        heard({signal.SIGHUP})

    def configure(self, updated: set[str]) -> None:
        from mitmproxy import ctx

        if self.settings is not None and "gateway_config" not in updated:
            return
        if self.store is not None:
            raise exceptions.OptionsError("gateway_config cannot change while running")
        path = ctx.options.gateway_config
        try:
            # mitmdump has no --dev: a missing secret's problem says what to do here instead. No
            # admin listener opens here, so a public admin.listen exposes nothing (until 2026-12-05
            # it stopped mitmdump, naming a --admin-public it does not have): the start-up warning
            # of the keys only gateway run reads names it instead.
            # Nor is an admin token needed, nor the central store's, sinks' or senders' secrets
            # (``files_only``): no sync, sink or signed-event endpoint runs here.
            settings = read_config(path, MISSING_HINT)
        except ConfigError as err:
            # Logged, not raised: mitmdump then exits ("Error logged during startup") with each
            # problem named by its key, and no traceback.
            for problem in err.problems:
                # A problem of the file itself names it already (``cannot read``, ``not valid
                # TOML``): until 2026-12-05 the line said the path twice.
                named = problem.startswith(f"{path}:")
                log.error("gateway: %s", problem if named else f"{path}: {problem}")
            self.settings = self.pipeline = None
            return
        self.config_path, self._ignored = path, []  # another file: named again
        self._log_level(settings)
        self._warn_ignored(settings)
        self._apply(settings, build_pipeline(settings, self.metrics, salt=self.salt, notices=self.notices))

    def _warn_ignored(self, settings: Settings) -> None:
        """The keys only gateway run reads, set here, named in one warning (again on a reload
        that names others)."""
        from mitmproxy import ctx

        ignored = run_only_keys(settings.options, reverse_hosts(ctx.options.mode))
        if ignored and ignored != self._ignored:
            log.warning(
                "gateway: %s: keys mitmdump ignores (gateway run's): %s", self.config_path, "; ".join(ignored)
            )
        self._ignored = ignored

    def _log_level(self, settings: Settings) -> None:
        """``log.level`` for the gateway's loggers (``gateway.*``), not the root, which is
        mitmproxy's: mitmdump's ``termlog_verbosity`` (``-q``: ``error``) filters after it. Until
        2026-12-05 it was not applied here: ``"warning"`` still printed the info lines."""
        before = set_own_level(settings.options.log.level)
        if self._levels is None:
            self._levels = before

    def _apply(self, settings: Settings, pipeline: Pipeline) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.reserved = settings.options.proxy.reserved_prefix
        self.public_origin = public_origin(settings.options.proxy.public_origin)
        self.public_scheme, _, self.public_host = self.public_origin.partition("://")
        self.confirmations.wait = settings.options.storage.durability == "commit"

    def running(self) -> asyncio.Future[None]:
        """Not ``async def``: a script loaded while mitmdump runs (a hot reload) gets ``running``
        from mitmproxy's sync path, which refuses a coroutine function. mitmproxy awaits what
        this returns at start-up; on a hot reload it runs on its own, requests wait for it."""
        self._started = asyncio.ensure_future(self._running())
        return self._started

    async def _running(self) -> None:
        from mitmproxy import ctx

        if self.settings is None or self.pipeline is None:
            if self._reloaded:  # at start-up mitmdump exits; here it would serve on untracked
                log.error(
                    "gateway: %s: script reloaded with a config that has problems (above): requests"
                    " go to the site untracked; fix the file, then save the script again or restart mitmdump",
                    ctx.options.gateway_config,
                )
            return  # the config failed; mitmdump is exiting
        store = LocalStore(self.settings.store_path, self.settings.options.storage, self.metrics)
        said = logging.getLogger("gateway.storage")
        said.addFilter(_as_warning)
        try:
            await store.open(serving=True)
        except (SchemaTooNew, sqlite3.DatabaseError, OSError) as err:
            # As ``gateway run`` says it, then mitmdump stops (until 2026-12-05 a traceback).
            log.error("%s", await asyncio.to_thread(store_failure, self.settings, err))
            ctx.master.shutdown()
            return
        finally:
            said.removeFilter(_as_warning)
        self.store = store
        await self.pipeline.running()
        await self.answerer.start()
        self._ready.set()
        # A reload, as ``gateway run`` does it: until 2026-12-05 SIGHUP (its default action)
        # ended mitmdump at once, without ``done``: the events still queued under
        # ``storage.durability = "async"`` were lost, and a unit's ExecReload stopped the host.
        self._listen()  # heard since ``load`` in mitmdump; a host that loaded us off its loop
        if not self._reloaded:
            # systemd's ``Type=notify``: mitmproxy listens before ``running`` (its servers set up
            # first), and the store is open now; until 2026-12-08 its unit was ``Type=simple``.
            shared.notifier = Notifier.from_environ()
            if shared.notifier is not None:
                shared.notifier.ready("serving")
        if self._reloaded:
            log.info(
                "gateway: %s: script reloaded: %s read again, new requests go through the new"
                " script; the gateway package is as mitmdump started (restart it for a code upgrade)",
                __file__,
                self.config_path,
            )
        if self._hup_waiting:
            self._hup_waiting = False
            self._hangup()

    def _hangup(self) -> None:
        if self._stopping:
            log.info("gateway: SIGHUP while stopping: not reloaded")
            return
        if not self._ready.is_set():
            if not self._hup_waiting:
                log.info("gateway: SIGHUP while starting: the config is reloaded once the store is open")
            self._hup_waiting = True
            return
        # systemd told first, here in the signal's callback, as ``gateway run`` tells it: it holds
        # ``systemctl reload`` open only if RELOADING=1 comes before ExecReload's ``kill`` exits.
        if shared.notifier is not None:
            shared.notifier.reloading()
        self._pending += 1
        task = asyncio.get_running_loop().create_task(self._told_reload(), name="gateway-reload")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _told_reload(self) -> None:
        """``reload``, systemd told ``RELOADING=1`` before it (``_hangup``) and ``READY=1`` once
        it is done, and every other reload under way, applied or refused (``systemctl reload``
        returns then), as ``gateway run`` tells it."""
        try:
            await self.reload()
        finally:
            self._pending -= 1
            notifier = shared.notifier
            # A stop's STOPPING=1 is the last word.
            if notifier is not None and not self._pending and not self._stopping:
                notifier.ready("serving, reloaded")

    async def reload(self) -> None:
        """Read the config file again and serve new requests with it: what ``gateway run``
        changes live changes here (``live_settings``); the rest is kept as started, named in a
        warning; a file with problems changes nothing (each problem logged by its key)."""
        async with self._reloading:
            old, running = self.settings, self.pipeline
            if old is None or running is None or self.store is None:
                return
            path = self.config_path
            pipeline: Pipeline | None = None
            try:
                new = await asyncio.to_thread(read_config, path, RELOAD_HINT, True)
                settings = live_settings(old, new)
                pipeline = build_pipeline(settings, self.metrics, salt=self.salt, notices=self.notices)
                pipeline.take_over(running)
                await pipeline.running()  # a rule's key file that cannot be read: ConfigError
            except Exception as err:
                if isinstance(err, ConfigError):
                    refused = "gateway: %s: reload refused, the running config is kept: %s"
                    for problem in err.problems:  # the file's own (empty, not TOML): named once
                        log.error(refused, path, problem.removeprefix(f"{path}: "))
                else:
                    log.exception("gateway: %s: reload failed, the running config is kept", path)
                if pipeline is not None:
                    await pipeline.done()  # what its addons started before one failed
                return
            self._log_level(settings)
            self._warn_ignored(new)
            self._apply(settings, pipeline)
            for key in restart_keys_here(old, new):
                log.warning("gateway: %s: reload: %s needs a restart; the running value is kept", path, key)
            log.info("gateway: %s: config reloaded: rules and thresholds apply to new requests", path)
            self._retiring.add(running)
            task = asyncio.get_running_loop().create_task(self._retire(running), name="gateway-retire")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _retire(self, pipeline: Pipeline) -> None:
        """The chain a reload replaced ends (its key file watchers, GeoIP readers) once no flow
        that began in it is still waiting for its response."""
        while any(state.pipeline is pipeline for state in shared.FLOWS.values()):
            await asyncio.sleep(1.0)
        self._retiring.discard(pipeline)
        await pipeline.done()

    def done(self) -> asyncio.Future[None]:
        """Not ``async def``, as ``running``: on a hot reload mitmproxy's script watcher calls it
        from its sync path (a coroutine function stopped the watcher: the edit never applied).
        At shutdown mitmproxy awaits what this returns; on a hot reload it runs on its own (its
        end awaited at shutdown by the instance then loaded): it waits for the flows this
        instance began, then closes chain and store as at shutdown, SIGHUP left to the new one."""
        reloaded = _unloaded(self)
        if not reloaded:
            quiet_at_the_end()
        ending = asyncio.ensure_future(self._done(reloaded))
        if reloaded:
            shared.handed = (self.salt, self.notices, self._levels, self.answerer)
            shared.ENDING.add(ending)
            ending.add_done_callback(shared.ENDING.discard)
        return ending

    async def _done(self, reloaded: bool) -> None:
        self._stopping = True
        if not reloaded and shared.notifier is not None:
            shared.notifier.stopping()
        if self._started is not None:
            await asyncio.wait([self._started])  # a store still opening is closed below
        if reloaded:
            try:
                while any(state.owner is self for state in shared.FLOWS.values()):
                    await asyncio.sleep(0.1)
            except asyncio.CancelledError:
                pass  # mitmdump stops: closed now, as at shutdown, what is queued stored
        async with self._reloading:  # a reload under way ends first
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for retired in list(self._retiring):
            await retired.done()
        self._retiring.clear()
        if self.pipeline is not None:
            await self.pipeline.done()
        if self.store is not None:
            await self.store.close()
            self.store = None
        # An outage still on: what its throttled lines held back, the last flush's refusals
        # (settled by now, their callbacks run) included, as in ``gateway run``.
        await asyncio.sleep(0)
        self.confirmations.at_stop()
        # The answerer is not closed: mitmdump serves on until every addon has ended, and a
        # request this host answers (the reserved prefix, one refused before) is answered there
        # till then (``Answerer.start``); on a hot reload the new instance has it.
        if reloaded:
            return  # the log levels (its ``log.level`` applied) and SIGHUP are the new instance's
        if self._levels is not None:
            restore_levels(self._levels)
            self._levels = None
        # The instances a hot reload replaced: stored before this one exits.
        for ending in list(shared.ENDING):
            ending.cancel()
        await asyncio.gather(*shared.ENDING, return_exceptions=True)
        # Only now: SIGHUP's default action ends the process, what is left of it once stored.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)

    def view(self, flow: mhttp.HTTPFlow, path: str, query: str) -> RequestView:
        """The request as the chain sees it; from a trusted proxy, the visitor's address, scheme
        and host as its ``Forwarded`` or X-Forwarded-* say (``trusted_visitor``, the aiohttp
        host's one reading), and the request goes upstream with X-Forwarded-* as that host sends
        them."""
        assert self.settings is not None
        req = flow.request
        headers = joined_headers(req.headers)
        peer = flow.client_conn.peername[0] if flow.client_conn.peername else ""
        networks = self.settings.trusted_networks
        trusted = is_trusted(peer, networks)
        ip = peer
        scheme = "https" if flow.client_conn.tls_established else "http"
        host = headers.get("host") or req.pretty_host
        # With proxy.public_origin, its scheme, as the aiohttp host tells the site too.
        hop_scheme = self.public_scheme or scheme
        if trusted:  # the aiohttp host's one reading: X-Forwarded-*, or Forwarded, never both
            forwarded = self.settings.options.proxy.trusted_header == "forwarded"
            said = trusted_visitor(req.headers.get_all, networks, forwarded)
            ip = said.ip or ip
            scheme = said.scheme or scheme
            host = said.host or host
        forward_headers(req.headers, peer, hop_scheme, trusted)
        without_admin_session(req.headers)
        without_hop_by_hop(req.headers, is_websocket_upgrade(req))
        ts = datetime.fromtimestamp(req.timestamp_start, UTC)
        return RequestView(
            req.method, self.public_scheme or scheme, self.public_host or host, path, query, headers, ip, ts
        )

    async def requestheaders(self, flow: mhttp.HTTPFlow) -> None:
        """The request's head is in: the chain runs here (``_begin``), before mitmproxy sends
        anything to the site. A body it streams (``stream_large_bodies`` below its size) has the
        head sent right after this hook, and ``request`` only once the body has gone: until
        2026-12-07 such a POST reached the site with its tracking parameters, the visitor's own
        ``X-Forwarded-For`` and a path below the reserved prefix. A request answered here
        (a refusal, a reply) has its body read, then the answer sent: by mitmproxy when it
        buffers the body, by the loopback answerer when it may stream it (``_answer_streamed``)."""
        await self._begin(flow)
        flow.metadata[BEGUN] = True
        if flow.response is not None and (may_stream(flow.request) or expects_continue(flow.request)):
            # Asked ``Expect: 100-continue``: mitmproxy would invite the body after this hook
            # whatever it set, and answer once the body was sent (until 2026-12-07 a blocked bot's
            # upload was invited, sent whole, then refused; one it streamed was never invited nor
            # answered, the visitor left waiting). The answerer answers it at once, uninvited.
            # mitmproxy would read the body first, switch it to streaming once over
            # stream_large_bodies and crash on the answer set ("Can't set a response and enable
            # streaming"), the visitor left waiting: the answer comes from the loopback answerer
            # instead, as soon as the head has gone there (until 2026-12-07 the connection was
            # closed unanswered). It listens from the store's opening until mitmdump's end
            # (``Answerer.start``), across script reloads; a request answered without it (none
            # should be) is closed, never sent to the site.
            if self.answerer.port:
                self._answer_streamed(flow)
            else:
                log.debug("closed a request answered %d: its body may stream", flow.response.status_code)
                flow.response = None
                flow.kill()

    def _answer_streamed(self, flow: mhttp.HTTPFlow) -> None:
        """``flow``'s answer held by the answerer (``addons.mitm_answer``), and the request sent
        there instead of the site, stripped to its framing (``Transfer-Encoding: chunked`` when
        it has no length, an HTTP/2 one's) and ``Connection``, its body streamed: the site never
        sees it, and the answer comes back through the response hooks as a site's would (a new
        visitor's cookie set on a blocked bot's page, as on any reply)."""
        answer, flow.response = flow.response, None
        assert answer is not None
        body = answer.raw_content or b""
        token = self.answerer.hold(
            answer_bytes(answer.status_code, answer.reason, answer.headers.fields, body)
        )
        flow.metadata[ANSWER] = token
        req = flow.request
        flow.metadata[ASKED] = (
            req.scheme,
            req.host,
            req.port,
            req.authority,
            req.path,
            req.headers.get("host"),
        )
        length = req.headers.get("content-length")
        framing = (b"Content-Length", length.encode()) if length else (b"Transfer-Encoding", b"chunked")
        # ``Connection`` kept: mitmproxy reads it on this request to close the visitor's connection.
        kept = [(b"Connection", value.encode()) for value in req.headers.get_all("connection")]
        req.headers = mhttp.Headers([(b"Host", b"127.0.0.1:%d" % self.answerer.port), framing, *kept])
        req.scheme, req.data.host, req.data.port = "http", "127.0.0.1", self.answerer.port
        req.authority, req.path = "", "/" + token  # origin-form, an absolute-form target's too
        req.stream = True

    @staticmethod
    def shown(flow: mhttp.HTTPFlow) -> None:
        """A flow the answerer answered shows what the visitor asked again (method, scheme, host,
        path), so mitmdump's flow line, printed after this hook, names it, as any other flow's:
        until 2026-12-07 it named the answerer (``POST http://127.0.0.1:41087/WyBKoDM4…``).
        Only these: the lines framing the body, still going there, stay as sent."""
        asked = flow.metadata.pop(ASKED, None)
        if asked is None:
            return
        req = flow.request
        req.scheme, req.data.host, req.data.port, req.authority, req.path, host = asked
        if host is not None:
            req.headers["Host"] = host
        else:  # an HTTP/2 request's authority, shown by mitmproxy instead of a Host line
            del req.headers["Host"]

    async def request(self, flow: mhttp.HTTPFlow) -> None:
        """The request's body is in (unless streamed): read for the rules that ask for it. The
        chain ran at ``requestheaders``; mitmproxy's test helpers call this hook alone."""
        if not flow.metadata.pop(BEGUN, False):
            await self._begin(flow)
        state = shared.FLOWS.get(flow.id)
        if state is not None and state.ex.want_request_body:  # mitmproxy read it unless streamed
            req = flow.request
            state.ex.request_body = read_body(req.raw_content, req.headers, state.ex.want_request_body)

    async def _begin(self, flow: mhttp.HTTPFlow) -> None:
        """The request hooks, the refusals and the reserved prefix: everything done before the
        request goes to the site (its body, for the rules, is read in ``request``)."""
        if self.pipeline is None or flow.response is not None:
            return
        await self._ready.wait()
        pipeline = self.pipeline
        path, query, rest = split_target(flow.request.path)
        if self.store is None:
            # Shutting down, the store closed while mitmdump still serves (a later addon's end):
            # the request goes to the site untracked (fail open), but one below the reserved
            # prefix is answered as ever, the site never seeing it (until 2026-12-07 it went
            # there), a streamed one or one expecting 100 Continue by the answerer, which
            # listens until mitmdump's end (until 2026-12-07 it had closed with the store: such
            # a request went on to the site, or was closed unanswered).
            below = reserved.classify(path, self.reserved) != "ordinary"
            if below and not self._refused(flow) and not self._other_host(flow):
                self._not_here(flow)
            return
        if self._refused(flow) or self._other_host(flow):
            return
        if reserved.classify(path, self.reserved) != "ordinary":
            self._not_here(flow)
            return
        ex = Exchange(self.view(flow, path, query))
        if is_websocket_upgrade(flow.request):
            await pipeline.websocket(ex)
            if ex.reply is not None:  # refused (bots.on_block = "block"), as in the aiohttp host
                reply = ex.reply
                flow.response = made(reply.status, reply.body, reply.headers)
                return
            self._to_upstream(flow, ex, path, rest)
            return
        await pipeline.request(ex)
        commits = [submitted(self.store, ex.events, pipeline)] if ex.events else []
        shared.FLOWS[flow.id] = _State(ex, len(ex.events), commits, pipeline, self.store, self)
        if ex.reply is not None:
            reply = ex.reply
            flow.response = made(reply.status, reply.body, reply.headers)
            return
        self._to_upstream(flow, ex, path, rest)

    @staticmethod
    def _not_here(flow: mhttp.HTTPFlow) -> None:
        """A request below the reserved prefix answered 404 in JSON: signed events are the aiohttp
        host's. Another spelling of the prefix (``/_GW/``, ``/%5Fgw/``) too, as in that host:
        the site never sees a request under it."""
        body = error_body(404, "signed events are served by the aiohttp host (gateway run)")
        headers = {"Content-Type": "application/json", "Cache-Control": "no-store"}
        flow.response = made(404, body, headers)

    def _refused(self, flow: mhttp.HTTPFlow) -> bool:
        """A request over ``proxy.max_header_size`` answered with the neutral page the aiohttp
        host sends (414, 431), never forwarded nor recorded; logged at info once a minute."""
        assert self.settings is not None
        limit = self.settings.options.proxy.max_header_size
        over = over_limit(flow.request, limit)
        if over is None:
            return False
        status, header = over
        what = "the request target" if status == 414 else named_header(header)
        why = f"{what} is longer than proxy.max_header_size ({limit} bytes)"
        now = time.monotonic()
        if now - self._loud_at >= LOUD_EVERY:
            self._loud_at = now
            log.info("refused a request: %s; if real clients send such, raise the limit", why)
        else:
            log.debug("refused a request: %s", why)
        if status == 431 and self._below_prefix(flow.request.path):
            # A signed events sender reads JSON there, as ``gateway run``'s listener answers it
            # (until 2026-12-07 this host answered the site's neutral HTML page); a target over
            # the limit is the neutral page on both hosts (aiohttp's parser never reads its path).
            body = error_body(
                431, f"{named_header(header)} is longer than the listener accepts ({limit} bytes)"
            )
            flow.response = made(431, body, {"Content-Type": "application/json", "Cache-Control": "no-store"})
            flow.response.reason = HTTPStatus(431).phrase  # mitmproxy's table lacks 431's
            return True
        neutral_page(flow, status, header, limit)
        return True

    def _below_prefix(self, target: str) -> bool:
        """Whether ``target`` (a request's path and query) is below ``proxy.reserved_prefix`` as
        written, where ``gateway run``'s listener answers its refusals in JSON (another spelling
        of it gets the neutral page there, as on that listener)."""
        return reserved.classify(split_target(target)[0], self.reserved) == "canonical"

    def _other_host(self, flow: mhttp.HTTPFlow) -> bool:
        """An HTTP/1 absolute-form target (``GET http://a.test/p``) naming another host than the
        visitor's ``Host`` (or carrying userinfo) is answered 400, as the aiohttp host does: the
        site, going by the target (RFC 9112 §3.2.2), and a cache in front, going by ``Host``,
        would disagree on which page this is. One naming the ``Host`` goes upstream in
        origin-form, as from the aiohttp host. Until 2026-12-05 both went to the site in
        absolute form, ``http://evil.example/p`` under ``Host: shop.example``. Without
        ``keep_host_header`` the visitor's ``Host`` is gone: ``proxy.public_origin``'s host is
        compared instead, and with neither every absolute-form target is refused."""
        from mitmproxy import ctx

        req = flow.request
        if not req.authority or req.is_http2 or req.is_http3 or req.method == "CONNECT":
            return False
        scheme = "https" if flow.client_conn.tls_established else "http"
        kept = "keep_host_header" in ctx.options and ctx.options.keep_host_header  # mitmdump's option
        host = req.headers.get("host", "") if kept else self.public_host
        named = origin_key(scheme, req.authority)
        if named is None or named != origin_key(scheme, host):
            log.debug("refused a request: its absolute-form target names another host than Host")
            neutral_page(flow, 400)
            return True
        req.authority = ""
        return False

    @staticmethod
    def _to_upstream(flow: mhttp.HTTPFlow, ex: Exchange, path: str, rest: str) -> None:
        """The chain's changes to the request as it goes upstream: its query (what follows it,
        ``rest``, as sent), its headers."""
        if ex.upstream_query is not None:
            flow.request.path = with_query(path, ex.upstream_query, rest)
        for name, value in ex.upstream_headers.items():
            flow.request.headers[name] = value

    async def responseheaders(self, flow: mhttp.HTTPFlow) -> None:
        """The response's headers are in and not yet sent (mitmproxy emulates this hook for a
        reply set in ``request`` too): the only moment a streamed body can still get our cookie,
        and the one a site's transfer coding is undone at (``undo_transfer_coding``) and an
        event stream is switched to streaming (never held back, nor read for a rule)."""
        self.shown(flow)
        if flow.response is not None and not mistaken_interim(flow.response):
            why = undo_transfer_coding(flow.response, functools.partial(self._broken_body, flow))
            # An answer without a body (to a HEAD, a 304) has nothing unreadable: passed on, as
            # the aiohttp host passes it.
            if why is not None and flow.request.method != "HEAD" and flow.response.status_code != 304:
                self._unreadable(flow, why)
            if not flow.response.stream and streamed_type(flow.response.headers.get("content-type")):
                # Events the visitor sees as they come: mitmproxy buffers an answer of no
                # announced length until ``stream_large_bodies`` of it came, so an event stream
                # showed nothing until then (until 2026-12-07), whatever path it was on.
                flow.response.stream = True
        state = shared.FLOWS.get(flow.id)
        if state is None or flow.response is None or mistaken_interim(flow.response):
            return  # a hint taken for the answer is replaced in ``response``, once mitmproxy read it
        if state.ex.want_response_body and state.ex.reply is None and not flow.response.stream:
            return  # a rule reads the body: the response hook runs the chain once it is in
        # Streamed (an event stream above, perhaps never ending: a subscription on the /graphql a
        # rule watches, not read, as the aiohttp host does; the rules count ``body_not_read``),
        # or no rule reads the body: the chain runs now.
        await self._respond(flow, state)

    async def response(self, flow: mhttp.HTTPFlow) -> None:
        """The whole response is in (a buffered one): the chain runs now for a flow whose
        rules read its body; the visitor gets nothing before this returns."""
        if flow.response is not None and mistaken_interim(flow.response):
            self._lost_page(flow)
        state = shared.FLOWS.get(flow.id)
        if state is not None and flow.response is not None:
            resp = flow.response
            cap = state.ex.want_response_body
            state.ex.response_body = read_body(resp.raw_content, resp.headers, cap)
            await self._respond(flow, state)
        shared.FLOWS.pop(flow.id, None)

    async def _respond(self, flow: mhttp.HTTPFlow, state: _State) -> None:
        """The response through the flow's chain; the flow stays in ``shared.FLOWS`` until this
        ends: its chain and store stay open (``_retire``, a hot reload's ``done``) until then."""
        try:
            await self._respond_in(flow, state)
        finally:
            shared.FLOWS.pop(flow.id, None)

    async def _respond_in(self, flow: mhttp.HTTPFlow, state: _State) -> None:
        if flow.response is None:
            return
        ex = state.ex
        if ex.reply is None:  # first: the rules read the Location the visitor gets, as in the aiohttp host
            # Whatever the store's state: a page is served as the aiohttp host serves it when its
            # writer stopped or at shutdown, never with a redirect to the site's own address.
            self._public_locations(flow, ex.request)
        if state.store.closed:
            # Closed at shutdown (or a hot reload's end, cancelled by one), and the flow's chain
            # with it: the events its request left were stored, or refused, by ``close``. A
            # writer that stopped on an error is not this: the chain runs on, and the store
            # refuses and counts the events (below), as in the aiohttp host.
            for future in state.commits:
                future.add_done_callback(self.confirmations.settled)
            return
        ex.response = ResponseView(flow.response.status_code, response_headers(flow.response.headers))
        await state.pipeline.response(ex)
        if len(ex.events) > state.seen:
            new: list[Event] = ex.events[state.seen :]
            state.commits.append(submitted(state.store, new, state.pipeline))
        if any(not cookie.shared_safe for cookie in ex.set_cookies):  # as the aiohttp host does
            headers = flow.response.headers
            for name, value in cache_lines_to_add(headers.keys(), headers.get_all):
                headers.add(name, value)
        for cookie in ex.set_cookies:
            flow.response.headers.add("Set-Cookie", set_cookie_line(cookie))
        await self.confirmations.confirm(state.commits)

    def _unreadable(self, flow: mhttp.HTTPFlow, why: str) -> None:
        """An answer no visitor could read (a transfer coding not undone) becomes the neutral 502
        in place, as ``gateway run`` answers it (logged as it logs it): mitmproxy sends these
        headers and what the stream gives, the page at the body's end, the site's bytes
        dropped. The response hooks run on that (a new visitor's cookie set)."""
        assert flow.response is not None
        page = error_page(502)
        body = page.body if isinstance(page.body, bytes) else b""
        resp = flow.response
        resp.status_code, resp.reason = 502, HTTPStatus(502).phrase
        resp.headers = mhttp.Headers(
            [
                (b"Content-Type", b"text/html; charset=utf-8"),
                (b"Cache-Control", b"no-store"),
                (b"Content-Length", str(len(body)).encode()),
            ]
        )
        resp.stream = lambda data: [] if data else [body]
        path = without_email(split_target(flow.request.path)[0])  # no query: as the aiohttp host logs it
        self._unreadable_log("upstream protocol for %s %s: %s", flow.request.method, path, why)

    def _broken_body(self, flow: mhttp.HTTPFlow, why: str) -> None:
        """A coded body that stopped decoding: the flow is killed (mitmproxy closes the
        visitor's connection at the body's end, its last chunk not sent: a body cut short, as
        the aiohttp host cuts it), logged as the aiohttp host logs a body failed mid-stream."""
        if flow.killable:
            flow.kill()
        path = split_target(flow.request.path)[0]
        self._unreadable_log("upstream body failed mid-stream for %s: %s", path, why)

    def _lost_page(self, flow: mhttp.HTTPFlow) -> None:
        """A hint mitmproxy took for the site's answer (``mistaken_interim``) becomes the neutral
        502 of a site that failed, as ``gateway run`` answers a site it could not read: its
        response hooks run on that (a new visitor's cookie set). Replaced here, not in
        ``responseheaders``: mitmproxy then writes the hint's empty body over the response's.
        Logged at warning once a minute, at debug between."""
        assert flow.response is not None
        hint = f"{flow.response.status_code} {flow.response.reason}".strip()
        why = (
            "the site answered %s %s with %s over HTTP/1.1, which mitmproxy 11 takes for its final answer"
            " (the page after it is lost): answered 502; stop the site sending interim answers to"
            " mitmdump's address, or run gateway run, which passes them on"
        )
        path = without_email(split_target(flow.request.path)[0])  # no query: as the aiohttp host logs it
        now = time.monotonic()
        if now - self._interim_at >= LOUD_EVERY:
            self._interim_at = now
            log.warning("gateway: " + why, flow.request.method, path, hint)
        else:
            log.debug("gateway: " + why, flow.request.method, path, hint)
        neutral_page(flow, 502)

    def _public_locations(self, flow: mhttp.HTTPFlow, view: RequestView) -> None:
        """A ``Location`` or ``Refresh`` at the site's own origin (the reverse-mode target) is
        pointed at the public origin, as the aiohttp host does: until 2026-12-05 a site's
        ``Location: http://site.internal/account`` reached the visitor as sent, to an address
        only the proxy can reach."""
        assert flow.response is not None
        req = flow.request
        upstream = f"{req.scheme}://{req.host}:{req.port}"
        public = self.public_origin or (f"{view.scheme}://{view.host}" if view.host else "")
        if not public:
            return
        headers = flow.response.headers
        for name, rewrite in (("location", rewrite_location), ("refresh", rewrite_refresh)):
            values = headers.get_all(name)
            if values:
                headers.set_all(name, [rewrite(value, upstream, public) for value in values])

    def error(self, flow: mhttp.HTTPFlow) -> None:
        """The upstream failed: the events were submitted already; forget the flow (and the
        answer held for it, if the visitor left before its request reached the answerer)."""
        self.shown(flow)
        shared.FLOWS.pop(flow.id, None)
        if ANSWER in flow.metadata:
            self.answerer.drop(flow.metadata[ANSWER])


class StopReports:
    """The event loop's exception handler once mitmproxy's master has ended (``quiet_at_the_end``),
    for ``asyncio.run``'s end, which cancels the tasks still running: one per visitor's connection
    still open (kept alive after a page, after an answer of ours, a WebSocket, a request the site
    has not answered yet). Python 3.11's stream callback asks each such cancelled task for its
    exception, and until 2026-12-07 mitmdump printed ``Exception in callback …`` and a traceback
    ending in ``CancelledError`` for each at every stop, whatever the addon did. Those are nothing
    now; anything else then is one line (``log``), not a traceback. While mitmproxy runs, its own
    handler reports every error as ever."""

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, asyncio.CancelledError):
            return  # a connection's task cancelled as the loop ends: nothing went wrong
        said = f" ({type(exc).__name__}: {exc})" if exc is not None else ""
        log.error("gateway: as mitmdump stopped: %s%s", context.get("message", "an error"), said)


def quiet_at_the_end() -> None:
    """``StopReports`` in place once the task now running ends: at a stop, the one mitmproxy's
    master calls ``done`` in, which puts back the loop's handler from before the master's start
    as it ends, just before ``asyncio.run`` cancels what is left (a handler put in place sooner
    would be replaced then). No task (a host calling ``done`` outside one): in place now."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    task = asyncio.current_task()
    if task is None:
        loop.set_exception_handler(StopReports())
    else:
        task.add_done_callback(lambda _: loop.set_exception_handler(StopReports()))


def _unloaded(addon: GatewayAddon) -> bool:
    """``done`` comes from mitmproxy's script watcher (the file changed: a hot reload), not
    from a shutdown: mitmdump is not exiting and ``addon`` is out of its chain already."""
    from mitmproxy import ctx

    try:
        return not ctx.master.should_exit.is_set() and addon not in ctx.master.addons
    except AttributeError:  # no mitmproxy master: not mitmproxy's script watcher either
        return False


addons = [GatewayAddon()]
