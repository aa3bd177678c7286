"""Composition: builds the proxy and admin apps from settings and runs the listeners.

Factories take their inputs explicitly (``create_gateway(settings, upstream)``);
app-wide resources — the upstream connection pool (``gateway.upstream``), the
one ``ClientSession`` (WebSocket relays), the store — are owned by
``cleanup_ctx``, so they are opened on start-up and closed, after in-flight
requests finish, on shutdown.

``serve`` runs one process's share: the public listener always, and — in the one
process that has ``admin=True`` (the only process, or worker 0 of several) — the
admin listener and the background tasks attached with ``Gateway.attach`` (central
sync, sinks, purge). SIGTERM/SIGINT stop it gracefully within
``proxy.shutdown_grace``; SIGHUP reloads the config (``Gateway.reload``): the
request handler is swapped for new requests, in-flight ones finish on the old. A
supervisor's worker reloads on its order (``RELOAD_ORDER``) and passes a SIGHUP on to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import hdrs, web
from aiohttp.abc import AbstractAccessLogger

from gateway import pages
from gateway.admin import LIVE_KEY, STOPPING_KEY, create_admin_app
from gateway.childsignals import RELOAD_ORDER, RELOAD_SIGNALS, heard
from gateway.config import Settings
from gateway.creators import CreatorRegistry
from gateway.dashboard import SECURITY_HEADERS, add_dashboard
from gateway.daysalt import DaySalt
from gateway.emails import without_email
from gateway.inbound import Inbound
from gateway.keys import Keys, key_check
from gateway.lockout import LOGINS_KEY
from gateway.logs import ACCESS_LOGGER, set_level
from gateway.metrics import LiveRules, Metrics
from gateway.notices import Notices, config_warnings
from gateway.options import parse_listen, unresolvable
from gateway.pipeline import Pipeline, build_pipeline
from gateway.protocol_errors import Runner, line_limits
from gateway.proxy import ProxyHost
from gateway.reload import live_settings, restart_needed
from gateway.reportapi import add_report_routes
from gateway.reportstate import REPORTING_KEY
from gateway.sdnotify import Notifier
from gateway.sharedcounts import SharedCounts
from gateway.upstream import Upstream
from gateway.websocket import UpgradeConnector, UpgradeRequest, keep_addresses_out_of_logs, no_redirects
from storage.erased import ErasedWatch
from storage.local import LocalStore, disk_fault
from storage.queries import Reader, StoreUnavailable
from storage.sinks import SinkSet

log = logging.getLogger("gateway")

Background = Callable[[], Coroutine[Any, Any, None]]
"""A background task's body (central sync, a sink, the purge): started once the listeners are up
in the process that runs the admin listener, restarted with backoff if it raises, cancelled and
awaited on shutdown."""

SESSION_KEY = web.AppKey("session", aiohttp.ClientSession)
STORE_KEY = web.AppKey("store", LocalStore)
SKIP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
MAX_UPSTREAM_HEADER = 64 * 1024
ADMIN_MAX_HEADER = 8190
"""Bytes per header field the admin listener takes (aiohttp's default)."""


def client_session(settings: Settings) -> aiohttp.ClientSession:
    """The session WebSocket relays open their upstream connections with: no decompression,
    no cookie jar, no headers of its own. Ordinary requests use the lean pool instead."""
    proxy = settings.options.proxy
    return aiohttp.ClientSession(
        # A site's answer other than a 101 is read whole, a body of no length to its close.
        connector=UpgradeConnector(limit=proxy.upstream_connections, ttl_dns_cache=60),
        # connect also bounds the wait for a free pooled connection: a full pool is a 504, not a hang.
        timeout=aiohttp.ClientTimeout(
            total=None,
            connect=proxy.connect_timeout,
            sock_connect=proxy.connect_timeout,
            sock_read=proxy.read_timeout,
        ),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=SKIP_AUTO_HEADERS,
        trust_env=False,
        max_line_size=MAX_UPSTREAM_HEADER,
        max_field_size=MAX_UPSTREAM_HEADER,
        trace_configs=[no_redirects()],  # a redirected upgrade is passed on, not followed
        request_class=UpgradeRequest,  # an upgrade's body goes with it
    )


def upstream_pool(settings: Settings, upstream: str) -> Upstream:
    """The lean client's connections to the upstream (everything but WebSockets goes here)."""
    proxy = settings.options.proxy
    return Upstream(
        upstream,
        limit=proxy.upstream_connections,
        connect_timeout=proxy.connect_timeout,
        read_timeout=proxy.read_timeout,
        max_field_size=MAX_UPSTREAM_HEADER,
    )


class PrivateAccessLogger(AbstractAccessLogger):
    """One line per request with no client address and no query string (they can identify
    a person, and logs are data at rest too), nor email address (a path segment holding one is
    written ``(email)``, as ``landing_path`` stores it). The path is the one the visitor sent, still
    percent-encoded: decoded, a path trick (``/%5Fgw/``) read as the path it imitates, and a
    ``%0A`` broke the line in two (the parser refuses raw control bytes in a target)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.line(request, response.status, response.body_length, time)

    def line(self, request: web.BaseRequest, status: int, size: int, time: float) -> None:
        self.logger.info(
            "%s %s %d %d %.1fms",
            request.method,
            # An email address in it (a newsletter's personal link) as landing_path stores it.
            without_email(request.raw_path.partition("?")[0]),
            status,
            size,
            time * 1000,
        )


CLIENT_CLOSED = 499
"""The access log's status for a visitor who left before the answer's head was sent (nginx's)."""


def handler_args(settings: Settings) -> dict[str, Any]:
    """Server options that keep the listener transparent and strict, and its access log private."""
    proxy = settings.options.proxy
    return {
        **line_limits(proxy.max_header_size),
        "auto_decompress": False,
        # A visitor who hangs up cancels their handler: the upstream request stops at once.
        "handler_cancellation": True,
        "access_log_class": PrivateAccessLogger,
        "access_log": logging.getLogger(ACCESS_LOGGER) if proxy.access_log else None,
    }


GC_YOUNG_THRESHOLD = 10_000
"""Net new container objects that start a young-generation collection (CPython's default: 700)."""


def settle_heap() -> None:
    """Start-up objects live for the whole run: keep them out of the collector's full passes.

    And collect the young generation less often: at CPython's default threshold the 32-odd
    requests in flight keep tripping it (a collection every ~30 requests, ~3 % of the CPU of a
    request, freeing almost nothing, as request objects die by reference counting). Cyclic
    garbage still counts towards the threshold, so it is still collected, in larger batches.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


class HostSlot:
    """The proxy's request handler, swappable: a reload puts a new ``ProxyHost`` here for the next
    request, while requests already inside the old one finish there."""

    def __init__(self) -> None:
        self.host: ProxyHost | None = None
        self.access: PrivateAccessLogger | None = None
        """``proxy.access_log``'s logger, for the lines aiohttp does not write (``_logged``)."""

    def serve(self, request: web.BaseRequest) -> Awaitable[web.StreamResponse]:
        """The proxy listener's handler, every request's. aiohttp's router is not asked: the
        proxy's one route took every path, and resolving it (the path's segments walked, a
        pattern matched, the path unquoted, a match built and frozen) was some 6 µs of every
        request (2026-12-05, ``bench/README.md``). What routing did besides is here: the
        ``Expect`` step (``ProxyHost.expect``, then aiohttp's ``100 Continue``), and the
        asterisk target, which only ``OPTIONS`` may use (RFC 9112 §3.2.4). Not a coroutine of
        its own: it hands over the host's, one frame fewer on every resumption; with
        ``proxy.access_log`` on, ``_logged``'s frame wraps it (some 0.25 µs a request, and a
        frame on each resumption) to log the requests a visitor hung up on."""
        host = self.host
        assert host is not None  # set before the listener starts
        assert isinstance(request, web.Request)  # the proxy app's request factory makes them
        if request.raw_path == "*" and request.method != hdrs.METH_OPTIONS:
            raise web.HTTPMethodNotAllowed(request.method, [hdrs.METH_OPTIONS])
        expects = request.headers.get(hdrs.EXPECT)
        handled = self._expecting(host, request) if expects else host.handle(request)
        if self.access is not None:
            return self._logged(self.access, request, handled)
        return handled

    @staticmethod
    async def _logged(
        access: PrivateAccessLogger, request: web.Request, handled: Awaitable[web.StreamResponse]
    ) -> web.StreamResponse:
        """A visitor who hangs up cancels the handler, and aiohttp writes no access line for a
        cancelled one: an event stream or a download left midway, a long poll given up, were
        missing from the log. Their line says what was sent: the status and bytes so far, or
        499 and 0 when the visitor left before the answer's head."""
        started = asyncio.get_running_loop().time()
        try:
            return await handled
        except asyncio.CancelledError:
            answer = request.get(pages.ANSWER)
            status, sent = CLIENT_CLOSED, 0
            if answer is not None and answer.prepared:
                status, sent = answer.status, request.writer.output_size
            access.line(request, status, sent, asyncio.get_running_loop().time() - started)
            raise

    @staticmethod
    async def _expecting(host: ProxyHost, request: web.Request) -> web.StreamResponse:
        refused = await host.expect(request)
        await request.writer.drain()
        if refused is not None:
            return refused
        answer = await host.handle(request)
        if request.get(pages.CONTINUE):
            # Answered without inviting the body (a blocked bot, a refusal below the reserved
            # prefix): it is never read, and the client may send it or not, so the connection
            # closes after the answer, as for the 413 of a body announced too large.
            answer.force_close()
        return answer


@dataclass
class Gateway:
    settings: Settings
    metrics: Metrics
    keys: Keys
    store: LocalStore
    proxy_app: web.Application
    admin_app: web.Application
    creators: CreatorRegistry
    upstream: str
    salt: DaySalt = field(default_factory=DaySalt)
    """The cookieless salt, kept across reloads (``gateway/daysalt.py``)."""
    shared_counts: SharedCounts | None = None
    """The velocity counts a supervisor's workers share (``gateway/sharedcounts.py``)."""
    slot: HostSlot = field(default_factory=HostSlot)
    going_away: asyncio.Event = field(default_factory=asyncio.Event)
    """Set as the proxy listener shuts down: WebSocket relays, which would otherwise hold the
    shutdown for the whole grace period, close both sides with 1001 (going away)."""
    draining: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when a stop's drain begins (``proxy.drain_seconds``): the proxy's answers close their
    connections (``Connection: close``), so kept-alive clients move to another instance."""
    background: dict[str, Background] = field(default_factory=dict)
    erasures_seen: int | None = None
    """The last erasure the pipeline was told of (``_follow_erasures``; None: not started)."""
    _retired: set[asyncio.Task[None]] = field(default_factory=set)
    notices: Notices = field(default_factory=Notices)
    """The configuration's warnings, said once by the gateway (``gateway/notices.py``)."""
    erased_watch: ErasedWatch | None = None
    """The signed events' look at the erasures (``Inbound``), kept across reloads: its connection
    is kept open (``storage.erased.ErasedWatch``), closed before the store's last one."""
    reloading: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held by a SIGHUP's reload from its read of the file to its swap: one after another, in
    the order they were asked (two at once applied the slower read last, an older file)."""

    def attach(self, name: str, task: Background) -> None:
        """Run ``task`` in the background of the process that runs the admin listener."""
        self.background[name] = task

    def reports_changed(self) -> None:
        """A write made in this process can change what a report says (``Reporting.changed``):
        the mirror starting again from nothing, an erasure seen and the retention purge call
        this; the admin API's
        writes tell it themselves (``gateway.admin.writes_change_reports``)."""
        if REPORTING_KEY in self.admin_app:
            self.admin_app[REPORTING_KEY].changed()

    def reports_arrived(self) -> None:
        """New rows were stored in this process (a round of the reporting mirror): the reports
        asked for from now on are computed anew (``Reporting.arrived``), with the kept
        ``data_driven`` weights still serving."""
        if REPORTING_KEY in self.admin_app:
            self.admin_app[REPORTING_KEY].arrived()

    def listener(self, public: bool) -> dict[str, Any]:
        """How the proxy (``public``) or the admin listener answers what aiohttp refuses
        itself (``protocol_errors.Runner``'s arguments): the proxy with its neutral page,
        JSON below its reserved prefix (whose endpoints answer JSON), counted with its bad
        requests; the admin listener with the JSON error and the headers of its other
        answers, and a body left unread closing the connection. Both close a connection idle
        past ``proxy.keepalive_timeout`` and answer a head not whole within
        ``proxy.header_timeout`` 408 (aiohttp's default held either for 3630 s, until 2026-12-06),
        each counted in ``gateway_connections_timed_out_total`` by listener and option."""
        proxy = self.settings.options.proxy
        timed_out = {
            reason: self.metrics.connections_timed_out.labels("proxy" if public else "admin", reason).inc
            for reason in ("keepalive_timeout", "header_timeout")
        }
        bounds = {
            "keepalive_timeout": proxy.keepalive_timeout,
            "header_timeout": proxy.header_timeout,
            "timed_out": timed_out,
        }
        if public:
            return {
                "public": True,
                "handler": self.slot.serve,
                "json_paths": self._reserved,
                "counted": self.metrics.requests.labels("bad_request").inc,
                "draining": self.draining,
                **bounds,
            }
        # No lingering: a body a handler left unread (refused before, or one that does not
        # decode) closes the connection; aiohttp would drain it and log its failure as unhandled.
        return {"headers": SECURITY_HEADERS, "lingering_time": 0, **line_limits(ADMIN_MAX_HEADER), **bounds}

    def _reserved(self, path: str) -> bool:
        """Whether ``path`` is below the reserved prefix as now configured (it reloads)."""
        return path.startswith(self.settings.options.proxy.reserved_prefix)

    def _host(
        self, settings: Settings, pipeline: Pipeline, session: aiohttp.ClientSession, pool: Upstream
    ) -> ProxyHost:
        if self.erased_watch is None:
            self.erased_watch = ErasedWatch(settings.store_path)
        inbound = Inbound(settings, self.store, self.metrics, self.keys, self.erased_watch)
        return ProxyHost(
            settings,
            pipeline,
            self.store,
            self.metrics,
            session,
            self.upstream,
            inbound.routes(),
            pool=pool,
            going_away=self.going_away,
        )

    async def reload(self, new: Settings) -> list[str]:
        """Swap in a new pipeline built from ``new``; what could not change live is kept as it was
        and returned, one line per key ("needs a restart")."""
        old_host = self.slot.host
        if old_host is None:
            return []
        pending = restart_needed(self.settings, new)
        settings = live_settings(self.settings, new)
        running_said = config_warnings(self.settings.options)
        # Standings set through the admin API (in worker 0) reach the other workers here too.
        await _apply_standings(self)
        pipeline = build_pipeline(
            settings, self.metrics, self.keys, self.creators, self.salt, self.shared_counts, self.notices
        )
        pipeline.take_over(old_host.pipeline)
        # Everything that can fail first (the new chain's start, the reports' new engine), then
        # the swap: a failure leaves all as it runs, as "the running config is kept" says. Until
        # 2026-12-06 the new chain went live first, and a report engine that could not open left
        # the proxy on the new rules and the reports on the old ones.
        reporting = self.admin_app.get(REPORTING_KEY)
        try:
            await pipeline.running()
            host = self._host(settings, pipeline, old_host.session, old_host.pool)
            host.outage_from(old_host)
            reports = None if reporting is None else await reporting.prepare(settings)
        except BaseException:
            await pipeline.done()
            raise
        self.slot.host = host
        if settings.options.log.level != self.settings.options.log.level:
            set_level(settings.options.log.level)  # until 2026-12-04 it needed a restart, unsaid
        if self.notices.speaks:  # said at the start too (gateway/cli.py): only what this reload brings
            for warning in config_warnings(settings.options):
                if warning not in running_said:
                    log.warning("reload: %s", warning)
        self.settings = settings
        self.admin_app[LIVE_KEY].current = settings
        # The rules removed or renamed, and key files no longer read, leave /metrics.
        self.metrics.keep_rules(
            LiveRules(
                frozenset(
                    [("identity", rule.name) for rule in settings.options.identity.rules]
                    + [("conversion", rule.name) for rule in settings.options.conversions]
                ),
                pipeline.key_files(),
            )
        )
        # Whose X-Forwarded-For the admin listener's count of wrong tokens believes, as the proxy.
        self.admin_app[LOGINS_KEY].trusted = settings.trusted_networks
        self.admin_app[LOGINS_KEY].forwarded = settings.options.proxy.trusted_header == "forwarded"
        if reporting is not None and reports is not None:  # [attribution], [channels], [payouts]
            reporting.apply(reports)
        # The old chain's own resources (GeoIP readers) go once its requests have had time to end.
        task = asyncio.create_task(self._retire(old_host.pipeline), name="retire-pipeline")
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)
        return pending

    async def _retire(self, pipeline: Pipeline) -> None:
        try:
            await asyncio.sleep(self.settings.options.proxy.shutdown_grace)
        finally:
            await pipeline.done()


def create_gateway(
    settings: Settings,
    upstream: str,
    salt: DaySalt | None = None,
    shared_counts: SharedCounts | None = None,
    speaks: bool = True,
) -> Gateway:
    """Both apps, sharing one metrics registry and one store; nothing is opened yet. ``salt``
    and ``shared_counts``: the cookieless salt and the velocity counts a supervisor handed this
    worker (None: a new salt, counts of its own); ``speaks``: this process says the config's
    warnings for the gateway (the only process, or worker 0)."""
    salt = salt or DaySalt()
    keep_addresses_out_of_logs()
    metrics = Metrics()
    keys = Keys.from_master(settings.secret, settings.options.identity.user_id_storage)
    store = LocalStore(settings.store_path, settings.options.storage, metrics)
    creators = CreatorRegistry(settings.options.creators)  # the admin API updates what bots reads
    notices = Notices(speaks=speaks)
    pipeline = build_pipeline(settings, metrics, keys, creators, salt, shared_counts, notices)
    sinks = SinkSet(settings, metrics, keys)

    proxy_app = web.Application(handler_args=handler_args(settings))
    proxy_app[STORE_KEY] = store
    admin_app = create_admin_app(settings, store, create_reader(settings), metrics, keys, creators, sinks)
    add_dashboard(admin_app)
    add_report_routes(admin_app, settings)
    gw = Gateway(
        settings,
        metrics,
        keys,
        store,
        proxy_app,
        admin_app,
        creators,
        upstream,
        salt,
        shared_counts,
        notices=notices,
    )
    if settings.options.proxy.access_log:  # needs a restart, as aiohttp's logger does
        gw.slot.access = PrivateAccessLogger(logging.getLogger(ACCESS_LOGGER), "")
    attach_log_readers(gw, sinks)
    gw.attach("erasures", lambda: _follow_erasures(gw))

    async def resources(app: web.Application) -> AsyncIterator[None]:
        await store.open(serving=True)
        session = client_session(settings)
        app[SESSION_KEY] = session
        pool = upstream_pool(settings, upstream)
        gw.slot.host = gw._host(settings, pipeline, session, pool)
        await pipeline.running()
        try:
            yield
        finally:
            for task in list(gw._retired):
                task.cancel()
            await asyncio.gather(*gw._retired, return_exceptions=True)
            assert gw.slot.host is not None
            await gw.slot.host.pipeline.done()
            await sinks.close()
            await pool.close()
            await session.close()
            if gw.erased_watch is not None:  # the store's close is then the last: it folds the -wal in
                await asyncio.to_thread(gw.erased_watch.close)
            try:
                await store.close()
            finally:
                # An outage still on: what its throttled lines held back, said after the store's
                # last flush, whose refusals (the events queued at the stop) settle then: said
                # before it until 2026-12-08, those were held back by lines that never came.
                await asyncio.sleep(0)  # the flush's settled commits' callbacks (``Confirmations``)
                gw.slot.host.at_stop()

    async def going_away(app: web.Application) -> None:
        gw.going_away.set()  # after the listener stops accepting, before in-flight requests are awaited

    proxy_app.cleanup_ctx.append(resources)
    proxy_app.on_shutdown.append(going_away)
    return gw


def create_reader(settings: Settings) -> Reader:
    """The admin API's reader: this node's store, or the central one (``admin.source``)."""
    if settings.options.admin.source == "central":
        from storage.central import url_key  # asyncpg: the postgres extra
        from storage.central_queries import CentralReader

        central = settings.options.central
        return CentralReader(
            settings.store_path, settings.central_url, central.connect_timeout, url_key(central.url)
        )
    return Reader(settings.store_path)


def attach_log_readers(gw: Gateway, sinks: SinkSet) -> None:
    """The durable readers of the event log, run in the process with the admin listener: the
    central sync (when ``central.url`` is set) and the reporting mirror (``central.mirror_path``),
    and one task per ``[[sinks]]`` entry. Each reads the store (the mirror, its file) through a
    connection of its own."""
    settings = gw.settings
    if settings.central_url:
        from storage.sync import Sync  # asyncpg: the postgres extra

        sync = Sync(
            settings.store_path,
            settings.central_url,
            settings.options.central,
            gw.metrics,
            node=settings.node,
            key_check=key_check(settings.secret),
            secret=settings.secret,
        )
        gw.attach("central-sync", sync.run)
        if settings.mirror_path is not None:
            from storage.mirror import Mirror

            central_options, arrived = settings.options.central, gw.reports_arrived
            mirror = Mirror(
                settings.mirror_path,
                settings.central_url,
                central_options,
                gw.metrics,
                arrived,
                on_rewritten=gw.reports_changed,
            )
            gw.attach("central-mirror", mirror.run)
    for name, sink in sinks.sinks.items():
        if name in sinks.made_up:  # its cursor stays where it is, for a run with the key
            i, variable = sinks.made_up[name]
            log.warning(
                "sinks[%d] (%s): its secret was made up by --dev, so it sends nothing; set %s to send",
                i,
                name,
                variable,
            )
            continue
        gw.attach(f"sink-{name}", sink.run)
    if settings.options.privacy.retention_days:
        from storage.retention import run_daily

        gw.attach(
            "retention", functools.partial(run_daily, settings, gw.metrics, on_purged=gw.reports_changed)
        )


async def start_site(
    app: web.Application,
    listen: str,
    *,
    grace: float,
    reuse_port: bool = False,
    listener: Mapping[str, Any] | None = None,
    key: str = "",
    socks: Sequence[socket.socket] = (),
    **kwargs: Any,
) -> tuple[web.AppRunner, str]:
    """``app`` listening on ``listen``; ``listener``: how it answers what aiohttp refuses
    itself (``Gateway.listener``, ``gateway/protocol_errors.py``); ``grace``: how long its
    in-flight requests may take to finish when it stops (``proxy.shutdown_grace``); ``key``: the
    config key ``listen`` comes from, named when it cannot be bound; ``socks``: sockets bound to
    ``listen`` already (a supervisor's, one for each address), served instead."""
    host, port = parse_listen(listen)
    runner = Runner(app, **(listener or {}), access_log=None, shutdown_timeout=grace, **kwargs)
    await runner.setup()
    sites: list[web.BaseSite] = [web.SockSite(runner, sock) for sock in socks] or [
        web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
    ]
    try:
        for site in sites:
            await site.start()
    except OSError as err:
        await runner.cleanup()
        named = f" ({key})" if key else ""
        why = os.strerror(err.errno) if err.errno else err.strerror  # asyncio's repeats the address
        if isinstance(err, socket.gaierror):  # its errno is the resolver's (os.strerror: "Unknown error -2")
            why = unresolvable(host, err)
        raise OSError(err.errno, f"cannot listen on {listen}{named}: {why}") from err
    bound = runner.addresses[0][:2] if runner.addresses else (host, port)
    shown = f"[{bound[0]}]" if ":" in str(bound[0]) else bound[0]
    return runner, f"{shown}:{bound[1]}"


async def _keep_running(name: str, task: Background) -> None:
    """Run a background task; if it raises, log it and start it again after a growing pause."""
    pause = 1.0
    while True:
        try:
            await task()
            return
        except StoreUnavailable as err:  # a full disk, say: expected, and said in a line
            log.warning("background task %s: %s; restarting it in %.0f s", name, err, pause)
        except Exception as err:
            if (fault := disk_fault(err)) is None:
                log.exception("background task %s failed; restarting it in %.0f s", name, pause)
            else:  # the store's disk (full, say): one line, as above (until 2026-12-07 a traceback)
                log.warning(
                    "background task %s: the store failed (%s: %s); restarting it in %.0f s",
                    name,
                    fault,
                    err,
                    pause,
                )
        await asyncio.sleep(pause)
        pause = min(pause * 2, 60.0)


async def _apply_standings(gw: Gateway) -> None:
    """A process without the admin API still scores with the creator standings stored so far."""
    reader = Reader(gw.settings.store_path)
    try:
        await reader.open()
    except StoreUnavailable as err:  # a full disk: the standings follow once it can be read
        log.warning("creator standings not read at start: %s", err)
        return
    try:
        gw.creators.apply(await reader.creator_standings())
    finally:
        await reader.close()


STANDINGS_POLL = 2.0
"""Seconds between a worker's looks for the creator standings set through worker 0's admin API."""


ERASURES_POLL = 2.0
"""Seconds between a process's looks for erasures made through worker 0's admin API."""


async def _follow(gw: Gateway, every: float, look: Callable[[Reader], Awaitable[None]]) -> None:
    """Call ``look`` with a reader of the store at once, then every ``every`` seconds: how a
    process learns what another one stored (run under ``_keep_running``, which restarts it)."""
    reader = Reader(gw.settings.store_path)
    await reader.open()
    try:
        while True:
            await look(reader)
            await asyncio.sleep(every)
    finally:
        await reader.close()


async def _follow_erasures(gw: Gateway) -> None:
    """In every process: tell the pipeline of each erasure as it is stored (``stitching``
    forgets the pairs it would otherwise not bind again), and the reports (``gateway erase``,
    another process, is a write the reports in flight did not see)."""

    async def look(reader: Reader) -> None:
        if gw.erasures_seen is None:  # the first start: erasures before it have nothing to forget
            gw.erasures_seen, _ = await reader.erased_users()
            return
        # Kept on the gateway, not here: restarted after a failure, the follower goes on from
        # where it was, so that an erasure stored while it was down is still told.
        after, users = await reader.erased_users(gw.erasures_seen)
        if users and gw.slot.host is not None:
            gw.slot.host.pipeline.erased(frozenset(users))
        if users:
            gw.reports_changed()
        gw.erasures_seen = after

    await _follow(gw, ERASURES_POLL, look)


async def _follow_standings(gw: Gateway) -> None:
    """In a worker without the admin API: apply the standings worker 0 stores, as they come."""
    after = 0

    async def look(reader: Reader) -> None:
        nonlocal after
        if new := await reader.creator_standings(after):
            gw.creators.apply(new)
            after = new[-1]["seq"]

    await _follow(gw, STANDINGS_POLL, look)


Reloader = Callable[[], Awaitable[Settings]]
"""Reads and validates the config again (raising ``ConfigError``) for SIGHUP."""


async def _reload(gw: Gateway, reread: Reloader) -> None:
    from gateway.config import ConfigError

    try:
        # Both steps can find problems: reading (any key) and starting the new chain (a GeoIP file).
        async with gw.reloading:
            pending = await gw.reload(await reread())
    except ConfigError as err:
        for problem in err.problems:
            log.error("reload refused, the running config is kept: %s", problem, extra={"key": _key(problem)})
        return
    except Exception:
        log.exception("reload failed, the running config is kept")
        return
    for note in pending:
        log.warning("reload: %s needs a restart; the running value is kept", note, extra={"key": note})
    # ``tasks``: the process's asyncio tasks now, so a long watch (bench/soak.py) sees a leak.
    log.info(
        "config reloaded: rules and thresholds apply to new requests",
        extra={"restart": pending, "tasks": len(asyncio.all_tasks())},
    )


def _key(problem: str) -> str:
    return problem.partition(":")[0]


async def serve(
    settings: Settings,
    upstream: str,
    *,
    on_ready: Callable[[str, str], None] | None = None,
    stop: asyncio.Event | None = None,
    admin: bool = True,
    reuse_port: bool = False,
    reread: Reloader | None = None,
    attach: Callable[[Gateway], None] | None = None,
    salt: DaySalt | None = None,
    shared_counts: SharedCounts | None = None,
    supervisor: int | None = None,
    admin_socks: Sequence[socket.socket] = (),
    notifier: Notifier | None = None,
) -> None:
    """Run the public listener (and, with ``admin``, the admin listener and the background tasks)
    until SIGINT/SIGTERM (or ``stop``), then shut down gracefully; SIGHUP calls ``reread``. A
    worker's ``supervisor`` (its process ID) orders reloads with ``RELOAD_ORDER`` instead, and
    a SIGHUP goes on to it: every worker reloads, not only the one it was sent to; worker 0's
    ``admin_socks`` are the admin sockets the supervisor listens on (served instead of binding
    ``admin.listen``); ``notifier``: systemd, or a worker's supervisor, told ``READY=1`` once the
    listeners listen and after each reload, ``RELOADING=1`` as one begins, ``STOPPING=1`` at the
    stop (``gateway/sdnotify.py``)."""
    gw = create_gateway(settings, upstream, salt, shared_counts, speaks=admin)
    if attach is not None:
        attach(gw)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[None]] = set()
    # A reload asked for while the listeners start (systemd's reload right after the start) is
    # held until they listen: applied then, its "config reloaded" follows "listening".
    started = False
    held = False
    status = ""  # what systemd's STATUS= says once the listeners listen
    pending = 0  # reloads begun and not done: READY=1 once none is left

    def hangup() -> None:
        """A reload, told to systemd (or the supervisor): ``RELOADING=1`` first, here in the
        signal's own callback (systemd holds ``systemctl reload`` open only if it comes before
        ``ExecReload``'s ``kill`` exits; until 2026-12-08 it was the reload task's first step),
        one for each SIGHUP (``Type=notify-reload``'s is answered with a later
        ``MONOTONIC_USEC``); ``READY=1`` once the last reload under way is done, applied or
        refused (not once the gateway is stopping: ``STOPPING=1`` was said)."""
        nonlocal held, pending
        if reread is None:
            return
        if not started:
            held = True  # no RELOADING=1: the start's READY=1 is to come, after this reload
            return
        if notifier is not None and not stop.is_set():
            notifier.reloading()
        pending += 1
        task = loop.create_task(reload(), name="reload")
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    async def reload() -> None:
        nonlocal pending
        assert reread is not None
        try:
            await _reload(gw, reread)
        finally:
            pending -= 1
            if notifier is not None and not pending and not stop.is_set():
                notifier.ready(status)

    reloads_on: dict[signal.Signals, Callable[[], None]] = {signal.SIGHUP: hangup}
    if supervisor is not None:
        reloads_on = {RELOAD_ORDER: hangup, signal.SIGHUP: lambda: _pass_on_hangup(supervisor, stop)}
    for sig, action in ((signal.SIGINT, stop.set), (signal.SIGTERM, stop.set), *reloads_on.items()):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, action)
    heard(RELOAD_SIGNALS)  # held since the process began (``gateway/__main__.py``)
    grace = settings.options.proxy.shutdown_grace
    proxy_runner, proxy_addr = await start_site(
        gw.proxy_app,
        settings.options.proxy.listen,
        grace=grace,
        reuse_port=reuse_port,
        listener=gw.listener(public=True),
        key="proxy.listen",
    )
    admin_runner: web.AppRunner | None = None
    admin_addr = ""
    background: list[asyncio.Task[None]] = []
    try:
        if admin:
            admin_runner, admin_addr = await start_site(
                gw.admin_app,
                settings.options.admin.listen,
                grace=grace,
                listener=gw.listener(public=False),
                key="admin.listen",
                socks=admin_socks,
            )
            background = [
                loop.create_task(_keep_running(name, task), name=name) for name, task in gw.background.items()
            ]
        else:
            await _apply_standings(gw)
            # Standings set from now on, through worker 0's admin API, reach this worker too.
            background = [
                loop.create_task(_keep_running("standings", lambda: _follow_standings(gw)), name="standings"),
                loop.create_task(_keep_running("erasures", lambda: _follow_erasures(gw)), name="erasures"),
            ]
    except BaseException:
        await proxy_runner.cleanup()
        raise
    settle_heap()
    log.info(
        "listening",
        # The tasks this process runs: worker 0's attached ones, another worker's followers only.
        extra={
            "proxy": proxy_addr,
            "admin": admin_addr or None,
            "background": sorted(t.get_name() for t in background),
        },
    )
    if on_ready:
        on_ready(proxy_addr, admin_addr)
    status = f"serving: proxy {proxy_addr}" + (f", admin {admin_addr}" if admin_addr else "")
    if notifier is not None:
        notifier.ready(status)
    started = True
    if held:
        hangup()
    try:
        await stop.wait()
        if notifier is not None:
            notifier.stopping()
        await _drain(gw, settings.options.proxy.drain_seconds)
    finally:
        log.info("shutting down: finishing in-flight requests and flushing the store")
        for task in [*background, *reloads]:
            task.cancel()
        await asyncio.gather(*background, *reloads, return_exceptions=True)
        # Both listeners stop accepting at once and let their in-flight requests finish, together
        # within the one grace period (then cancel them); the proxy's then closes the store: its
        # writer commits everything queued first (an admin write after that answers 503).
        await asyncio.gather(*(runner.cleanup() for runner in (proxy_runner, admin_runner) if runner))
        for key, runner in (("proxy.listen", proxy_runner), ("admin.listen", admin_runner)):
            cut = runner.cut_off if isinstance(runner, Runner) else 0
            if cut:  # else the visitors' broken connections at a deploy are a mystery in the log
                log.warning(
                    "%d request(s) on %s still running when proxy.shutdown_grace (%g s) ran out "
                    "were cut off, their connections closed",
                    cut,
                    key,
                    grace,
                    extra={"cut_off": cut, "key": key},
                )
        log.info("stopped", extra={"unconfirmed": _unconfirmed(gw.metrics)})


async def _drain(gw: Gateway, seconds: float) -> None:
    """``proxy.drain_seconds`` after the stop signal, before the listeners close: ``/healthz``
    answers 503 ``stopping`` (worker 0's admin API) while every worker's proxy listener takes new
    connections as before, so that a load balancer takes the gateway out of rotation while it
    still serves (until 2026-12-07 the listeners closed at once, and ``/healthz`` was refused
    with the rest: never unready while the site was served)."""
    if seconds <= 0:
        return
    gw.admin_app[STOPPING_KEY].set()
    gw.draining.set()  # kept-alive visitors are told to go: Connection: close on each answer
    log.info(
        "stopping: /healthz answers 503 for proxy.drain_seconds (%g s) while the proxy serves on;"
        " then in-flight requests finish within proxy.shutdown_grace",
        seconds,
        extra={"drain_seconds": seconds},
    )
    await asyncio.sleep(seconds)


def _pass_on_hangup(supervisor: int, stop: asyncio.Event) -> None:
    """A SIGHUP sent to a worker (``kill -HUP <its pid>``, or to the process group): on to the
    supervisor, which reads the file once and has every worker reload it (until 2026-12-05 this
    worker reloaded alone, and the workers ran two configs). Not once this worker is stopping
    (``stop``: the gateway stopping, whose supervisor reloads nothing): until 2026-12-07 it
    was passed on all the same, and logged as "every worker reloads"."""
    if os.getppid() != supervisor:  # gone: this worker is stopping (``_watch_parent``)
        log.warning("SIGHUP not passed on: the supervisor (pid %d) is gone", supervisor)
        return
    if stop.is_set():
        log.warning(
            "SIGHUP ignored: this worker is stopping, and a stop reloads nothing; to reload the"
            " workers that run on, send SIGHUP to the supervisor (pid %d)",
            supervisor,
        )
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(supervisor, signal.SIGHUP)
    log.info("SIGHUP passed on to the supervisor (pid %d): every worker reloads", supervisor)


def _unconfirmed(metrics: Metrics) -> int:
    """Responses this process sent before their events' commit was confirmed (all reasons)."""
    return int(
        sum(
            s.value
            for m in metrics.events_unconfirmed.collect()
            for s in m.samples
            if s.name.endswith("_total")
        )
    )
