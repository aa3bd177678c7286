"""The three servers a proxy benchmark needs, each meant to run in its own process.

``python -m bench.servers KIND [--upstream URL] [--store DIR] [--profile FILE]``
with KIND one of:

- ``origin``   a tiny aiohttp site: every path answers a fixed ~2 KB HTML page;
- ``bare``     the baseline: a minimal streaming aiohttp reverse proxy (one
               ``ClientSession``, ``auto_decompress=False``, hop-by-hop headers
               dropped, everything else copied);
- ``gateway``  the tracking gateway's proxy app, built as ``tests/conftest.py`` does.

Each binds 127.0.0.1 on a free port, prints ``PORT <n>`` on stdout once it
serves, and runs until SIGTERM or SIGINT, then shuts down cleanly (the gateway
flushes its store). With ``--profile`` the process runs under cProfile and
dumps the stats to FILE on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from gateway.forwarding import HOP_BY_HOP as RFC_HOP_BY_HOP
from gateway.server import settle_heap

HOST = "127.0.0.1"
PAGE = (
    b"<!doctype html>\n<html lang='en'><head><meta charset='utf-8'><title>Bench origin</title></head>\n"
    b"<body><main>\n"
    + b"".join(
        b"<p>Paragraph %d of a small page served by the benchmark origin, padded to about 2 KB.</p>\n" % i
        for i in range(22)
    )
    + b"</main></body></html>\n"
)
WEBHOOK_SECRET_ENV = "BENCH_WEBHOOK_SECRET"
WEBHOOK_SECRET = "w" * 32
"""The secret a bench's signed events are signed with: in the gateway's environment under
``WEBHOOK_SECRET_ENV``, for a ``[[sources]]`` entry that names it (``bench.instructions``)."""
# What the bare proxy must not copy: hop-by-hop headers (the same RFC list) and Host.
HOP_BY_HOP = RFC_HOP_BY_HOP | {"host"}

Starter = Callable[[argparse.Namespace], Awaitable[web.AppRunner]]


# -- origin -------------------------------------------------------------------------------------


async def _page(request: web.Request) -> web.Response:
    return web.Response(body=PAGE, content_type="text/html", charset="utf-8")


async def start_origin(args: argparse.Namespace) -> web.AppRunner:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _page)
    return web.AppRunner(app, access_log=None)


# -- bare proxy ---------------------------------------------------------------------------------

SESSION = web.AppKey("session", aiohttp.ClientSession)


def bare_proxy_app(upstream: str) -> web.Application:
    """The fair baseline: what any aiohttp reverse proxy must do, and nothing more."""
    app = web.Application()
    upstream = upstream.rstrip("/")
    upstream_host = upstream.partition("://")[2]

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1024),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
        )
        app[SESSION] = session
        yield
        await session.close()

    async def handle(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["Host"] = upstream_host
        async with app[SESSION].request(
            request.method,
            upstream + request.raw_path,
            headers=headers,
            data=request.content if request.body_exists else None,
            allow_redirects=False,
        ) as up:
            resp = web.StreamResponse(status=up.status, reason=up.reason)
            for name, value in up.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    resp.headers.add(name, value)
            try:
                await resp.prepare(request)
                async for chunk in up.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
            except ConnectionResetError:  # the visitor hung up first: gone, not an error
                pass
            return resp

    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def start_bare(args: argparse.Namespace) -> web.AppRunner:
    return web.AppRunner(bare_proxy_app(args.upstream), access_log=None)


# -- gateway ------------------------------------------------------------------------------------


def gateway_toml(store_dir: Path, extra: str = "") -> str:
    """Default options, except the store (in ``store_dir``) and durability "commit".

    ``extra`` (TOML; a literal ``\\n`` also separates lines) is added for ablations such as
    ``[proxy]`` ``addons = []``; its own ``[storage]`` keys are merged into ours.
    """
    extra = extra.replace("\\n", "\n")
    ours = [f'path = "{store_dir / "gateway.db"}"', 'node = "bench"']
    if "durability" not in extra:
        ours.append('durability = "commit"')
    storage = "[storage]\n" + "\n".join(ours) + "\n"
    if "[storage]" in extra:
        return extra.replace("[storage]\n", storage, 1) + "\n"
    return storage + extra + "\n"


def config_problems(config: Callable[[Path], str]) -> list[str]:
    """What the gateway refuses in a bench's config (``config(folder)``: ours, its store in
    ``folder``, with an ablation's TOML added), checked as ``gateway check`` does before a
    bench starts anything, so that a typo in ``--gateway-toml`` is a usage error rather than a
    server that never starts (until 2026-12-07 a traceback once the others had started)."""
    import tempfile

    from gateway.config import ConfigError, load_settings

    with tempfile.TemporaryDirectory(prefix="gw-bench-check-") as tmp:
        path = Path(tmp) / "gateway.toml"
        try:
            # dev: the secrets a bench gives its servers in their environment, made up here
            load_settings(path, text=config(Path(tmp)), environ={}, dev=True)
        except ConfigError as err:
            return [problem.removeprefix(f"{path}: ") for problem in err.problems]
    return []


async def start_gateway(args: argparse.Namespace) -> web.AppRunner:
    from gateway.config import load_settings
    from gateway.protocol_errors import Runner
    from gateway.server import create_gateway

    settings = load_settings(
        None,
        text=gateway_toml(Path(args.store), args.toml),
        environ={
            "GATEWAY_SECRET": "s" * 40,
            "GATEWAY_ADMIN_TOKEN": "t" * 40,
            WEBHOOK_SECRET_ENV: WEBHOOK_SECRET,
        },
    )
    gw = create_gateway(settings, args.upstream)
    # As `gateway run` listens (gateway/protocol_errors.py); the app's handler args (strict
    # parser, access log) travel with it.
    return Runner(gw.proxy_app, **gw.listener(public=True))


STARTERS: dict[str, Starter] = {"origin": start_origin, "bare": start_bare, "gateway": start_gateway}


# -- process entry point ------------------------------------------------------------------------


async def serve(args: argparse.Namespace) -> None:
    runner = await STARTERS[args.kind](args)
    await runner.setup()
    try:
        site = web.TCPSite(runner, HOST, 0, shutdown_timeout=2)
        await site.start()
        port = runner.addresses[0][1]
        settle_heap()  # what `gateway run` does after start-up; the baseline gets it too, to be fair
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(f"PORT {port}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


class GcStats:
    """Counts collections and the time they take, per generation (``--gc-stats``)."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            generation = info["generation"]
            self.count[generation] += 1
            self.seconds[generation] += time.perf_counter() - self._started

    def report(self, kind: str) -> str:
        parts = [f"gen{g}: {self.count[g]} in {self.seconds[g] * 1000:.1f} ms" for g in range(3)]
        return f"{kind} gc: " + ", ".join(parts) + f"; {len(gc.get_objects())} tracked objects"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.servers", allow_abbrev=False)
    parser.add_argument("kind", choices=sorted(STARTERS))
    parser.add_argument("--upstream", default="", help="origin URL (bare, gateway)")
    parser.add_argument("--store", default="", help="folder for the gateway's SQLite store")
    parser.add_argument("--toml", default="", help="extra gateway TOML (\\n for newlines)")
    parser.add_argument("--profile", default="", help="run under cProfile; dump stats here on exit")
    parser.add_argument("--gc-stats", action="store_true", help="report garbage collections on exit")
    args = parser.parse_args(argv)
    if args.kind != "origin" and not args.upstream:
        parser.error(f"{args.kind} needs --upstream")
    if args.kind == "gateway" and not args.store:
        parser.error("gateway needs --store")
    profiler = cProfile.Profile() if args.profile else None
    gc_stats = GcStats() if args.gc_stats else None
    if gc_stats is not None:
        gc.callbacks.append(gc_stats)
    with asyncio.Runner(loop_factory=new_loop) as runner:
        if profiler is not None:
            profiler.enable()
        try:
            runner.run(serve(args))
        finally:
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(args.profile)
            if gc_stats is not None:
                print(gc_stats.report(args.kind), file=sys.stderr, flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
