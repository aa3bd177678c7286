"""The addon pipeline: the ``Exchange`` every hook sees, and the ordered chain that runs hooks.

Hosts (the aiohttp proxy, the mitmproxy adapter, the importer) build an
``Exchange`` from their own request type, call ``Pipeline.request`` and
``Pipeline.response`` (``Pipeline.websocket`` alone for a WebSocket upgrade), and
apply the typed effects. A failing hook is logged
with the addon's name, counted and skipped: tracking never breaks the page.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Collection, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import unquote_plus

from gateway.config import Settings
from gateway.creators import CreatorRegistry
from gateway.daysalt import DaySalt
from gateway.events import Event, Touchpoint
from gateway.keys import Keys
from gateway.metrics import Metrics
from gateway.notices import Notices
from gateway.sharedcounts import SharedCounts

log = logging.getLogger("gateway.pipeline")

HOOKS = ("request", "response", "websocket")


def split_query(raw: str) -> list[tuple[str, str, str]]:
    """Raw query → (raw piece, decoded key, decoded value) per ``&``-separated piece.

    Empty pieces are kept (``a=1&&b``) so a host can rebuild the query byte for
    byte. Decoding uses ``surrogateescape`` so undecodable bytes survive as lone
    surrogates, which validation then rejects.
    """
    if not raw:
        return []
    pairs = []
    for piece in raw.split("&"):
        key, _, value = piece.partition("=")
        if "%" in piece or "+" in piece:  # most pieces need no decoding: skip two calls
            key = unquote_plus(key, errors="surrogateescape")
            value = unquote_plus(value, errors="surrogateescape")
        pairs.append((piece, key, value))
    return pairs


def split_target(target: str) -> tuple[str, str, str]:
    """A request target → (path, query, rest), ``target`` being ``path + "?" + query + rest``
    (``path`` alone when it has no ``?``). The query ends at a ``#`` (RFC 3986 §3.4); what
    follows, which no browser sends but a client may, is ``rest``, kept as sent; a ``?`` after a
    ``#`` starts no query (``/p#x?utm_source=y`` has none, its rest being ``?utm_source=y``).
    Until 2026-12-06 the query ran to the end: a pair after the ``#`` was stripped and recorded,
    and one piece's ``#`` took the fragment with it (``/p?a=1&utm_source=x#f&b=2`` reached the
    site as ``/p?a=1&b=2``, ``b=2`` moved from the fragment into the query)."""
    path, mark, rest = target.partition("?")
    if not mark:
        return target, "", ""
    if "#" in path:
        return path, "", mark + rest
    query, hash_mark, fragment = rest.partition("#")
    return path, query, hash_mark + fragment


def with_query(path: str, query: str, rest: str) -> str:
    """``split_target``'s parts put back with another ``query``: none (``""``) takes its ``?``."""
    return path + ("?" + query if query else "") + rest


def parse_cookies(header: str) -> dict[str, str]:
    """A ``Cookie`` header → name → value (RFC 6265 §4.2; the first of a repeated name wins).

    Tolerant by design: a malformed pair is skipped, never an error — the visitor's
    browser sent it, and the page must still be served.
    """
    cookies: dict[str, str] = {}
    for pair in header.split(";"):
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        cookies.setdefault(name, value)
    return cookies


def cookie_values(header: str, wanted: str) -> list[str]:
    """Every value a ``Cookie`` header gives the cookie ``wanted``, in order, read as
    ``parse_cookies`` reads one. A browser holds two of a name when they differ in ``Domain``
    or ``Path`` (one set for the host, one later for the whole domain) and sends both."""
    values = []
    for pair in header.split(";"):
        name, sep, value = pair.partition("=")
        if not sep or name.strip() != wanted:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        values.append(value)
    return values


@dataclass(slots=True)
class RequestView:
    """What the visitor sent, as the public side saw it.

    ``headers`` is looked up by lower-case name (a host may hand over a
    case-insensitive mapping as is). A repeated ``Cookie`` (joined with "; ") or
    ``X-Forwarded-For`` (", ") is joined into one value; for other repeated
    headers, ``get`` gives the first.
    """

    method: str
    scheme: str
    host: str
    path: str
    query: str
    headers: Mapping[str, str]
    client_ip: str
    # ``partial``, not a lambda: called from the dataclass's ``__init__`` on every request, a
    # lambda is a Python frame around the same C call.
    ts: datetime = field(default_factory=partial(datetime.now, UTC))
    _cookies: dict[str, str] | None = None
    all_headers: bool = True
    """False for a request replayed from a log that kept only a few of its headers (Host,
    Referer, User-Agent…): what the others would have told (Accept-Language, client hints) is
    not known, and their absence says nothing about the visitor."""
    _unix: float | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def unix(self) -> float:
        """``ts`` in Unix seconds, worked out on first use: a landing's hooks ask for it four
        times (its event ID, its repeat check, bots' windows, the timestamp's text), and an aware
        datetime's ``timestamp()`` costs ~2,000 instructions each time. ``ts`` is never changed
        once the view is made (a host passes the time it wants to the constructor)."""
        if self._unix is None:
            self._unix = self.ts.timestamp()
        return self._unix

    @property
    def cookies(self) -> Mapping[str, str]:
        """The request's cookies, parsed on first use (most requests never ask)."""
        if self._cookies is None:
            header = self.headers.get("cookie")
            self._cookies = parse_cookies(header) if header else {}
        return self._cookies

    @property
    def is_document(self) -> bool:
        """A top-level page load, as far as headers tell."""
        if self.method not in ("GET", "HEAD"):
            return False
        dest = self.headers.get("sec-fetch-dest")
        if dest is not None:
            return dest == "document"
        return "text/html" in self.headers.get("accept", "")


@dataclass(slots=True)
class ResponseView:
    status: int
    headers: Mapping[str, str]


@dataclass(slots=True)
class Reply:
    """A short-circuit answer: the upstream is not called."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Cookie:
    name: str
    value: str
    max_age: int
    path: str = "/"
    domain: str = ""
    secure: bool = False
    httponly: bool = True
    samesite: str = "Lax"
    shared_safe: bool = False
    """Set on a refresh identity made only on an answer no shared cache gives anyone else
    (``addons/refresh.py``): the host adds no ``Cache-Control: private`` for this cookie, and
    the site's caching goes as it wrote it."""


@dataclass(slots=True)
class Visitor:
    id: str
    """The raw ID from (or for) the cookie: lives in memory only, never stored."""
    is_new: bool
    hasher: Callable[[str], str]
    """Turns ``id`` into ``key``; run only when an event needs the key."""
    consent: str = "cookie"
    """The population (``Touchpoint.consent``): ``cookie``, ``cookieless`` or ``no_consent``."""
    _key: str | None = None

    @property
    def key(self) -> str:
        """The keyed hash of ``id``: the only form stored."""
        if self._key is None:
            self._key = self.hasher(self.id)
        return self._key


@dataclass(slots=True)
class Geo:
    """What the geo addon found for the client IP (the IP itself is never kept)."""

    country: str | None = None
    region: str | None = None
    asn: int | None = None


@dataclass(slots=True, eq=False)
class Exchange:
    request: RequestView
    response: ResponseView | None = None
    visitor: Visitor | None = None
    events: list[Event] = field(default_factory=list)
    set_cookies: list[Cookie] = field(default_factory=list)
    upstream_query: str | None = None
    """The query string to send upstream, when an addon changed it (None: unchanged)."""
    upstream_headers: dict[str, str] = field(default_factory=dict)
    """Request headers to replace on the way upstream (lower-case names)."""
    reply: Reply | None = None
    want_request_body: int = 0
    """Set by a ``request`` hook: read up to this many bytes of the request body (0: don't).
    The host still forwards the body unchanged, and fills ``request_body``."""
    want_response_body: int = 0
    """Set by a ``request`` hook: read up to this many bytes of the (decoded) response body
    before the ``response`` hooks run; the host fills ``response_body``."""
    request_body: bytes | None = None
    """The request body when asked for and at most ``want_request_body`` bytes; else None."""
    response_body: bytes | None = None
    """The response body, gzip/deflate decoded, when asked for and within the cap; else None
    (too large, or an encoding that cannot be decoded)."""
    user_key: str | None = None
    """The user this exchange bound the visitor to (set by ``stitching``), for later addons."""
    watched: bool = False
    """A rule matched this request (set in ``request``): its response may bind or convert the
    visitor, so a new visitor must get their cookie with it."""
    geo: Geo | None = None
    """Set by the geo addon on page loads and landings; read by later addons (bots)."""
    aggregate_only: bool = False
    """Set by identity for ``Sec-GPC``/``DNT``: no visitor, landings only counted per day."""
    folded: Touchpoint | None = None
    """The touchpoint campaign would have recorded for a landing it folded into the visitor's
    recent one (a reload: ``campaign.repeat_seconds``), not stored: bots still counts it in its
    velocity windows, as every landing was."""
    counted: Touchpoint | None = None
    """The touchpoint campaign would have recorded for a landing of a visitor who opted out
    (``aggregate_only``), never stored: its ``DailyCount`` is in ``events``, and bots scores the
    landing as this touchpoint and takes the count back unless the verdict is ``allow`` (a
    crawler's landing is no visitor of its channel)."""
    refused: list[tuple[str, str]] = field(default_factory=list)
    """Tracked query keys whose value campaign dropped, with why (``too_long``, ``unprintable``,
    ``source_not_allowed``): ``gateway import`` says so of a line that made no touchpoint."""
    _query_pairs: list[tuple[str, str, str]] | None = None

    @property
    def query_pairs(self) -> list[tuple[str, str, str]]:
        """(raw piece, decoded key, decoded value) for each ``&``-separated query piece."""
        if self._query_pairs is None:
            self._query_pairs = split_query(self.request.query)
        return self._query_pairs


@dataclass(frozen=True)
class Context:
    """What addons get in ``configure``: settings, derived keys and the metrics to report to."""

    settings: Settings
    keys: Keys
    metrics: Metrics
    creators: CreatorRegistry | None = None
    """The creator registry the admin API updates live (None: built from ``[[creators]]``)."""
    salt: DaySalt | None = None
    """The process's cookieless salt, kept across reloads (None: a new one)."""
    shared_counts: SharedCounts | None = None
    """The velocity counts every worker shares (None: one process, its own)."""
    notices: Notices = field(default_factory=Notices)
    """Where a warning about the configuration goes (``notices.warn``), to be said once by the
    gateway (None given to ``build_pipeline``: said by this process, each time)."""
    live: bool = False
    """Serving visitors: a fired rule that cannot read its value says so in the log
    (``addons.rules.FailureLines``). Not ``gateway rules try`` (which prints what each rule read),
    nor ``gateway import`` (whose history holds no bodies)."""


Hook = Callable[[Exchange], Any]


class _Ran:
    """Awaited when the hooks already ran synchronously: completes at once, without suspending."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        # An empty iterator, not a generator function: ``await`` takes any iterator, and ends
        # at once on one that yields nothing, without a generator made and run each time
        # (twice a request).
        return iter(())  # type: ignore[return-value]


_RAN = _Ran()


class Pipeline:
    """The ordered chain of addons, with each hook resolved once."""

    def __init__(
        self, addons: list[tuple[str, object]], metrics: Metrics, notices: Notices | None = None
    ) -> None:
        self.addons = addons
        self.metrics = metrics
        self.notices = notices
        self._hooks: dict[str, list[tuple[str, Hook, bool]]] = {h: [] for h in HOOKS}
        for name, addon in addons:
            for hook in HOOKS:
                fn = getattr(addon, hook, None)
                if fn is not None:
                    self._hooks[hook].append((name, fn, inspect.iscoroutinefunction(fn)))
        self._sync = {hook: not any(is_async for _, _, is_async in fns) for hook, fns in self._hooks.items()}
        # Every request and response runs these: each chain resolved here, a tuple of (name,
        # hook) when every hook of it is synchronous (run in place, no coroutine), else None.
        self._request = self._sync_chain("request")
        self._response = self._sync_chain("response")

    def key_files(self) -> frozenset[tuple[str, str]]:
        """``(rule, TOML key)`` of every JWT key its rules read from a file (and look at again),
        the labels of ``gateway_rule_key_file_unusable``."""
        from addons.jwks import FollowsKeyFiles  # lazily: addons import us

        return frozenset(
            keys.labels
            for _, addon in self.addons
            if isinstance(addon, FollowsKeyFiles)
            for keys in addon.key_files
            if keys.path is not None
        )

    def take_over(self, old: Pipeline) -> None:
        """A reload's new chain goes on with what the running one's addons remember (the bots
        addon's velocity windows and visitors' behaviour), each addon judging whether it still
        applies (``take_over``): until 2026-12-05 a reload — a payout rule edited — emptied
        the windows, and a burst under way was let through as new."""
        before = dict(old.addons)
        for name, addon in self.addons:
            adopt = getattr(addon, "take_over", None)
            if adopt is not None and type(before.get(name)) is type(addon):
                adopt(before[name])

    async def _run(self, hook: str, ex: Exchange) -> None:
        for name, fn, is_async in self._hooks[hook]:
            try:
                if is_async:
                    await fn(ex)
                else:
                    fn(ex)
            except Exception:
                self._failed(name, hook)

    def _run_sync(self, hook: str, ex: Exchange) -> Awaitable[None]:
        """Every hook of ``hook`` is synchronous: run them now, with no coroutine per call."""
        for name, fn, _ in self._hooks[hook]:
            try:
                fn(ex)
            except Exception:
                self._failed(name, hook)
        return _RAN

    def _failed(self, name: str, hook: str) -> None:
        log.exception("addon %s failed in %s; skipped, page still served", name, hook)
        self.metrics.addon_errors.labels(name, hook).inc()

    def _sync_chain(self, hook: str) -> tuple[tuple[str, Hook], ...] | None:
        if not self._sync[hook]:
            return None
        return tuple((name, fn) for name, fn, _ in self._hooks[hook])

    # ``request`` and ``response`` run a synchronous chain in place, as ``_run_sync`` does (a
    # Python call and two lookups less, twice a request).
    def request(self, ex: Exchange) -> Awaitable[None]:
        chain = self._request
        if chain is None:
            return self._run("request", ex)
        for name, fn in chain:
            try:
                fn(ex)
            except Exception:
                self._failed(name, "request")
        return _RAN

    def response(self, ex: Exchange) -> Awaitable[None]:
        chain = self._response
        if chain is None:
            return self._run("response", ex)
        for name, fn in chain:
            try:
                fn(ex)
            except Exception:
                self._failed(name, "response")
        return _RAN

    def websocket(self, ex: Exchange) -> Awaitable[None]:
        """A WebSocket upgrade, instead of ``request`` and ``response``: only its
        ``upstream_query``, ``upstream_headers`` and ``reply`` (a refusal, answered instead of
        the site) are applied."""
        if self._sync["websocket"]:
            return self._run_sync("websocket", ex)
        return self._run("websocket", ex)

    async def running(self) -> None:
        for _name, addon in self.addons:
            fn = getattr(addon, "running", None)
            if fn is not None and inspect.iscoroutine(result := fn()):
                await result
        if self.notices is not None:
            self.notices.commit()

    def erased(self, user_keys: Collection[str]) -> None:
        """Users just erased: addons that remember something of them (``erased`` hook) forget it."""
        for name, addon in self.addons:
            fn = getattr(addon, "erased", None)
            if fn is None:
                continue
            try:
                fn(user_keys)
            except Exception:  # the erasure itself is stored: what this addon keeps may outlive it
                log.exception("addon %s failed in erased: it may still remember the erased users", name)
                self.metrics.addon_errors.labels(name, "erased").inc()

    def not_stored(self, events: Sequence[Event]) -> None:
        """Events the store refused (a full disk, a read-only mount): addons that remember what
        they recorded (``not_stored`` hook) forget it, so that it is recorded when seen again."""
        for name, addon in self.addons:
            fn = getattr(addon, "not_stored", None)
            if fn is None:
                continue
            try:
                fn(events)
            except Exception:
                log.exception("addon %s failed in not_stored", name)
                self.metrics.addon_errors.labels(name, "not_stored").inc()

    async def done(self) -> None:
        for name, addon in self.addons:
            fn = getattr(addon, "done", None)
            if fn is None:
                continue
            try:
                if inspect.iscoroutine(result := fn()):
                    await result
            except Exception:
                log.exception("addon %s failed in done", name)


def addon_registry() -> dict[str, Callable[[], object]]:
    """Addon name (as written in ``proxy.addons``) → class. Imported lazily: addons import us."""
    from addons.bots import Bots
    from addons.campaign import Campaign
    from addons.conversions import Conversions
    from addons.geo import GeoIP
    from addons.identity import Identity
    from addons.stitching import Stitching

    return {
        "identity": Identity,
        "campaign": Campaign,
        "geo": GeoIP,
        "bots": Bots,
        "stitching": Stitching,
        "conversions": Conversions,
    }


def build_pipeline(
    settings: Settings,
    metrics: Metrics,
    keys: Keys | None = None,
    creators: CreatorRegistry | None = None,
    salt: DaySalt | None = None,
    shared_counts: SharedCounts | None = None,
    notices: Notices | None = None,
    live: bool = True,
) -> Pipeline:
    """Instantiate and configure the addons named in ``proxy.addons``, in that order; one that
    sets ``enabled = False`` in ``configure`` (nothing to do) is left out of the chain. A reload
    passes the running process's ``salt``: a new one would make every cookieless visitor new;
    and a worker the ``shared_counts`` its supervisor handed it; ``notices``: the process's, kept
    across reloads (``gateway/notices.py``); ``live``: serving visitors (``Context.live``)."""
    keys = keys or Keys.from_master(settings.secret, settings.options.identity.user_id_storage)
    context = Context(
        settings=settings,
        keys=keys,
        metrics=metrics,
        creators=creators,
        salt=salt,
        shared_counts=shared_counts,
        notices=notices if notices is not None else Notices(),
        live=live,
    )
    context.notices.begin()
    registry = addon_registry()
    chain = []
    for name in settings.options.proxy.addons:
        addon = registry[name]()
        configure = getattr(addon, "configure", None)
        if configure is not None:
            configure(context)
        if getattr(addon, "enabled", True):  # an addon that turned itself off costs nothing
            chain.append((name, addon))
    return Pipeline(chain, metrics, context.notices)
