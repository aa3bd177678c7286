"""Composition: builds the proxy and admin apps from settings and runs both listeners.

Factories take their inputs explicitly (``create_gateway(settings, upstream)``);
app-wide resources — the one ``ClientSession``, the store — live in typed
``AppKey``s owned by ``cleanup_ctx``, so they are opened on start-up and
closed, after in-flight requests finish, on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from gateway.admin import create_admin_app
from gateway.config import Settings, parse_listen
from gateway.creators import CreatorRegistry
from gateway.dashboard import add_dashboard
from gateway.inbound import Inbound
from gateway.keys import Keys
from gateway.metrics import Metrics
from gateway.pipeline import build_pipeline
from gateway.proxy import ProxyHost
from storage.local import LocalStore
from storage.queries import Reader
from storage.sinks import SinkSet

log = logging.getLogger("gateway")

SESSION_KEY = web.AppKey("session", aiohttp.ClientSession)
STORE_KEY = web.AppKey("store", LocalStore)
SKIP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
MAX_UPSTREAM_HEADER = 64 * 1024


def client_session(settings: Settings) -> aiohttp.ClientSession:
    """The one upstream session: no decompression, no cookie jar, no headers of its own."""
    proxy = settings.options.proxy
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=proxy.upstream_connections, ttl_dns_cache=60),
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
    )


class PrivateAccessLogger(AbstractAccessLogger):
    """One line per request with no client address and no query string (they can identify
    a person, and logs are data at rest too)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %d %d %.1fms",
            request.method,
            request.path,
            response.status,
            response.body_length,
            time * 1000,
        )


def handler_args(settings: Settings) -> dict[str, Any]:
    """Server options that keep the listener transparent and strict, and its access log private."""
    proxy = settings.options.proxy
    return {
        "max_line_size": proxy.max_header_size,
        "max_field_size": proxy.max_header_size,
        "auto_decompress": False,
        # A visitor who hangs up cancels their handler: the upstream request stops at once.
        "handler_cancellation": True,
        "access_log_class": PrivateAccessLogger,
        "access_log": logging.getLogger("gateway.access") if proxy.access_log else None,
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


@dataclass
class Gateway:
    settings: Settings
    metrics: Metrics
    keys: Keys
    store: LocalStore
    proxy_app: web.Application
    admin_app: web.Application


def create_gateway(settings: Settings, upstream: str) -> Gateway:
    """Both apps, sharing one metrics registry and one store; nothing is opened yet."""
    metrics = Metrics()
    keys = Keys.from_master(settings.secret, settings.options.identity.user_id_storage)
    store = LocalStore(settings.store_path, settings.options.storage, metrics)
    creators = CreatorRegistry(settings.options.creators)  # the admin API updates what bots reads
    pipeline = build_pipeline(settings, metrics, keys, creators)
    sinks = SinkSet(settings, metrics, keys)

    proxy_app = web.Application(handler_args=handler_args(settings))
    proxy_app[STORE_KEY] = store

    async def resources(app: web.Application) -> AsyncIterator[None]:
        await store.open()
        session = client_session(settings)
        app[SESSION_KEY] = session
        inbound = Inbound(settings, store, metrics, keys)
        host = ProxyHost(settings, pipeline, store, metrics, session, upstream, inbound.routes())
        app.router.add_route("*", "/{tail:.*}", host.handle)
        await pipeline.running()
        tasks = background_tasks(settings, metrics, sinks)
        try:
            yield
        finally:
            for task in tasks:  # the readers of the log stop first; the log itself last
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await sinks.close()
            await pipeline.done()
            await session.close()
            await store.close()

    proxy_app.cleanup_ctx.append(resources)
    admin_app = create_admin_app(settings, store, create_reader(settings), metrics, keys, creators, sinks)
    add_dashboard(admin_app)
    return Gateway(settings, metrics, keys, store, proxy_app, admin_app)


def create_reader(settings: Settings) -> Reader:
    """The admin API's reader: this node's store, or the central one (``admin.source``)."""
    if settings.options.admin.source == "central":
        from storage.central_queries import CentralReader  # asyncpg: the postgres extra

        return CentralReader(
            settings.store_path, settings.central_url, settings.options.central.connect_timeout
        )
    return Reader(settings.store_path)


def background_tasks(settings: Settings, metrics: Metrics, sinks: SinkSet) -> list[asyncio.Task[None]]:
    """The durable readers of the event log, started once the store is open: the central sync
    (when ``central.url`` is set) and one task per ``[[sinks]]`` entry."""
    tasks = []
    if settings.central_url:
        from storage.sync import Sync  # asyncpg: the postgres extra

        sync = Sync(settings.store_path, settings.central_url, settings.options.central, metrics)
        tasks.append(asyncio.create_task(sync.run(), name="central-sync"))
    for name, sink in sinks.sinks.items():
        tasks.append(asyncio.create_task(sink.run(), name=f"sink-{name}"))
    if settings.options.privacy.retention_days:
        from storage.retention import run_daily

        tasks.append(asyncio.create_task(run_daily(settings, metrics), name="retention"))
    return tasks


async def start_site(app: web.Application, listen: str, **kwargs: Any) -> tuple[web.AppRunner, str]:
    host, port = parse_listen(listen)
    runner = web.AppRunner(app, access_log=None, **kwargs)
    await runner.setup()
    site = web.TCPSite(runner, host, port, shutdown_timeout=10)
    try:
        await site.start()
    except OSError as err:
        await runner.cleanup()
        raise OSError(err.errno, f"cannot listen on {listen}: {err.strerror}") from err
    bound = runner.addresses[0][:2] if runner.addresses else (host, port)
    shown = f"[{bound[0]}]" if ":" in str(bound[0]) else bound[0]
    return runner, f"{shown}:{bound[1]}"


async def serve(
    settings: Settings,
    upstream: str,
    *,
    on_ready: Callable[[str, str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run both listeners until SIGINT/SIGTERM (or ``stop``), then shut down gracefully."""
    gw = create_gateway(settings, upstream)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    proxy_runner, proxy_addr = await start_site(gw.proxy_app, settings.options.proxy.listen)
    try:
        admin_runner, admin_addr = await start_site(gw.admin_app, settings.options.admin.listen)
    except BaseException:
        await proxy_runner.cleanup()
        raise
    settle_heap()
    if on_ready:
        on_ready(proxy_addr, admin_addr)
    try:
        await stop.wait()
    finally:
        log.info("shutting down: finishing in-flight requests and flushing the store")
        await proxy_runner.cleanup()
        await admin_runner.cleanup()
