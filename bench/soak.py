"""A bounded soak run: a real ``gateway run`` under mixed traffic, watched for leaks.

``python -m bench.soak [--seconds S] [--workers N ...] [--rate R] [--reload-every S] [--toml TEXT]
[--json FILE]``

For each workers count (default 1 and 2) it starts, all on 127.0.0.1: an aiohttp origin in
this process (pages, assets, an SSE stream, a WebSocket echo, a 5 MB download, a login form
and a checkout), and ``gateway run`` with ``proxy.workers = N``, an identity rule, a
conversion rule and a signed-event sender, its store in a temp folder. It then drives about
``--rate`` requests a second of mixed traffic for ``--seconds`` (120): new visitors' landings
with utm parameters, returning visitors' page loads with their cookie, asset loads, logins,
checkouts, signed webhooks, WebSocket sessions, SSE streams, clients that hang up in the middle
of the download; every 10 s an attribution report and the dashboard summary; every 30 s a
SIGHUP. Every 5 s it samples each gateway process (``/proc/PID/status`` VmRSS and threads,
``/proc/PID/fd``), the store's file and ``-wal`` sizes, and it reads the asyncio task count
each process logs at a reload (``config reloaded``'s ``tasks``). It prints the samples and a
verdict: the slope of RSS and FDs over the second half of the run (after warm-up), the largest
WAL, the task counts reload after reload. It stops by itself and removes what it made; the
verdict reports, it never fails on a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.proxy import process_tree

HOST = "127.0.0.1"
SECRET = "s" * 40
TOKEN = "t" * 40
WEBHOOK_SECRET = "w" * 32
SAMPLE_EVERY = 5.0
REPORT_EVERY = 10.0
RELOAD_EVERY = 30.0
DOWNLOAD_BYTES = 5 * 1024 * 1024
CHUNK = 64 * 1024
PAGE = (
    b"<!doctype html><html><head><title>Soak</title></head><body>"
    + b"<p>soak page</p>" * 120
    + b"</body></html>"
)
ASSET = b"/* soak asset */\n" + b"body{margin:0}\n" * 600
MAX_RETURNING = 500  # visitor cookies kept for returning page loads (oldest dropped)
MAX_IN_FLIGHT = 64


# -- origin -------------------------------------------------------------------------------------


async def _page(request: web.Request) -> web.Response:
    return web.Response(body=PAGE, content_type="text/html", headers={"Cache-Control": "private"})


async def _asset(request: web.Request) -> web.Response:
    return web.Response(
        body=ASSET, content_type="text/css", headers={"Cache-Control": "public, max-age=3600"}
    )


async def _sse(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    for n in range(5):
        await resp.write(f"id: {n}\ndata: tick {n}\n\n".encode())
        await asyncio.sleep(0.2)
    return resp


async def _ws(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.TEXT:
            await ws.send_str(msg.data)
    return ws


async def _download(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    resp.content_length = DOWNLOAD_BYTES
    await resp.prepare(request)
    chunk = b"x" * CHUNK
    with contextlib.suppress(ConnectionError):
        for _ in range(DOWNLOAD_BYTES // CHUNK):
            await resp.write(chunk)
    return resp


async def _login(request: web.Request) -> web.Response:
    await request.post()
    raise web.HTTPFound("/account")


async def _checkout(request: web.Request) -> web.Response:
    form = await request.post()
    raise web.HTTPSeeOther(f"/thank-you?order={form.get('order', '')}&total=19.90")


def origin_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/static/{name}", _asset)
    app.router.add_get("/events", _sse)
    app.router.add_get("/ws", _ws)
    app.router.add_get("/download", _download)
    app.router.add_post("/login", _login)
    app.router.add_post("/checkout", _checkout)
    app.router.add_get("/{tail:.*}", _page)
    return app


# -- the gateway --------------------------------------------------------------------------------


def gateway_config(workdir: Path, origin: str, workers: int, extra: str = "") -> str:
    """The soak's config; ``extra`` (TOML, tables not already here, e.g. ``[bots]``; a literal
    ``\\n`` also separates lines) is appended."""
    extra = extra.replace("\\n", "\n")
    return f"""\
[proxy]
listen = "{HOST}:0"
upstream = "{origin}"
workers = {workers}

[admin]
listen = "{HOST}:0"
token = "env:GATEWAY_ADMIN_TOKEN"

[storage]
path = "{workdir / "gateway.db"}"
node = "soak"

[log]
level = "info"
format = "json"

[identity]
secret = "env:GATEWAY_SECRET"

[[identity.rules]]
name = "login"
path = "/login"
status = [302]
user_id = {{ form = "username" }}

[[conversions]]
name = "purchase"
method = "POST"
path = "/checkout"
status = [303]
value = {{ location_query = "total" }}
currency = "EUR"
order_id = {{ location_query = "order" }}

[[sources]]
name = "billing"
secrets = ["env:SOAK_WEBHOOK_SECRET"]

{extra}
"""


@dataclass
class Gateway:
    process: asyncio.subprocess.Process
    proxy: str = ""
    admin: str = ""
    log: list[dict[str, Any]] = field(default_factory=list)
    other: list[str] = field(default_factory=list)
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    async def _drain(self, stream: asyncio.StreamReader | None) -> None:
        assert stream is not None
        while line := await stream.readline():
            text = line.decode(errors="replace")
            try:
                record = json.loads(text)
            except ValueError:
                self.other.append(text)
                continue
            if isinstance(record, dict):
                self.log.append(record)

    def reloads(self) -> list[dict[str, Any]]:
        return [r for r in self.log if str(r.get("msg", "")).startswith("config reloaded")]

    def problems(self) -> list[dict[str, Any]]:
        return [r for r in self.log if r.get("level") in ("warning", "error", "critical")]


async def start_gateway(config: Path, workdir: Path) -> Gateway:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        "TMPDIR": str(workdir),
        "GATEWAY_SECRET": SECRET,
        "GATEWAY_ADMIN_TOKEN": TOKEN,
        "SOAK_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "run", "-c", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    gw = Gateway(proc)
    gw.readers.append(asyncio.create_task(gw._drain(proc.stderr)))
    assert proc.stdout is not None
    announced = ""
    deadline = time.monotonic() + 60
    while "admin API on" not in announced or "proxy on" not in announced:
        line = await asyncio.wait_for(proc.stdout.readline(), max(0.1, deadline - time.monotonic()))
        if not line:
            raise RuntimeError(f"gateway run exited before serving: {''.join(gw.other)[-2000:]}")
        announced += line.decode()
    gw.readers.append(asyncio.create_task(_discard(proc.stdout)))
    gw.proxy = _url_after(announced, "proxy on ")
    gw.admin = _url_after(announced, "admin API on ")
    return gw


async def _discard(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


def _url_after(text: str, marker: str) -> str:
    """``http://host:port`` from ``proxy on http://127.0.0.1:8080/ …``."""
    scheme, _, rest = text.partition(marker)[2].split()[0].partition("://")
    return f"{scheme}://{rest.split('/')[0]}"


async def stop_gateway(gw: Gateway) -> int:
    if gw.process.returncode is None:
        gw.process.terminate()
        try:
            await asyncio.wait_for(gw.process.wait(), 30)
        except TimeoutError:
            gw.process.kill()
            await gw.process.wait()
    for task in gw.readers:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 5)
    return gw.process.returncode if gw.process.returncode is not None else -1


# -- samples ------------------------------------------------------------------------------------


@dataclass
class Sample:
    t: float
    procs: dict[int, tuple[int, int, int]]  # pid -> (VmRSS kB, fds, threads)
    db: int
    wal: int
    requests: int


def proc_figures(pid: int) -> tuple[int, int, int] | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss = int(fields.get("VmRSS", "0 kB").split()[0])
    threads = int(fields.get("Threads", "0").strip())
    return rss, fds, threads


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def take_sample(t: float, root: int, db: Path, requests: int) -> Sample:
    procs = {}
    for pid in process_tree(root):
        if (figures := proc_figures(pid)) is not None:
            procs[pid] = figures
    return Sample(t, procs, _size(db), _size(Path(f"{db}-wal")), requests)


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope, units a second (0 with fewer than two points)."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((x - mx) ** 2 for x, _ in points)
    return 0.0 if den == 0 else sum((x - mx) * (y - my) for x, y in points) / den


# -- traffic ------------------------------------------------------------------------------------


@dataclass
class Traffic:
    session: aiohttp.ClientSession
    proxy: str
    admin: str
    outcomes: Counter[str] = field(default_factory=Counter)
    cookies: list[str] = field(default_factory=list)
    users: int = 0
    orders: int = 0

    def _cookie(self) -> dict[str, str]:
        return {"Cookie": random.choice(self.cookies)} if self.cookies else {}

    def _keep(self, resp: aiohttp.ClientResponse) -> None:
        for value in resp.headers.getall("Set-Cookie", []):
            if value.startswith("gw_vid="):
                self.cookies.append(value.split(";", 1)[0])
                if len(self.cookies) > MAX_RETURNING:
                    del self.cookies[0]

    def _count(self, kind: str, status: int, ok: Callable[[int], bool] = lambda s: s < 400) -> None:
        self.outcomes[kind if ok(status) else f"{kind}: HTTP {status}"] += 1

    async def landing(self) -> None:
        n = random.randrange(1_000_000)
        query = f"utm_source=soak&utm_medium=cpc&utm_campaign=c{n % 7}&utm_content={n}"
        url = f"{self.proxy}/landing/{n % 50}?{query}"
        async with self.session.get(url) as resp:
            await resp.read()
            self._keep(resp)
            self._count("landing", resp.status)

    async def page(self) -> None:
        async with self.session.get(
            f"{self.proxy}/page/{random.randrange(100)}", headers=self._cookie()
        ) as resp:
            await resp.read()
            self._count("page", resp.status)

    async def asset(self) -> None:
        name = random.choice(("site.css", "app.js", "logo.svg"))
        async with self.session.get(f"{self.proxy}/static/{name}", headers=self._cookie()) as resp:
            await resp.read()
            self._count("asset", resp.status)

    async def login(self) -> None:
        self.users += 1
        data = {"username": f"user{self.users % 300}", "password": "pw"}
        async with self.session.post(f"{self.proxy}/login", data=data, headers=self._cookie()) as resp:
            await resp.read()
            self._count("login", resp.status)

    async def checkout(self) -> None:
        self.orders += 1
        data = {"order": f"o{self.orders}"}
        async with self.session.post(f"{self.proxy}/checkout", data=data, headers=self._cookie()) as resp:
            await resp.read()
            self._count("checkout", resp.status)

    async def webhook(self) -> None:
        self.orders += 1
        body = json.dumps(
            {"type": "conversion", "event_id": f"evt{self.orders}", "user_id": f"user{self.orders % 300}",
             "order_id": f"w{self.orders}", "value": 49.0, "currency": "EUR"}
        ).encode()  # fmt: skip
        msg_id, stamp = f"msg{self.orders}", str(int(time.time()))
        mac = hmac.new(WEBHOOK_SECRET.encode(), f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": stamp,
            "webhook-signature": "v1," + base64.b64encode(mac).decode(),
            "content-type": "application/json",
        }
        async with self.session.post(f"{self.proxy}/_gw/events", data=body, headers=headers) as resp:
            await resp.read()
            self._count("webhook", resp.status)

    async def websocket(self) -> None:
        async with self.session.ws_connect(f"{self.proxy}/ws", headers=self._cookie()) as ws:
            for n in range(3):
                await ws.send_str(f"ping {n}")
                msg = await ws.receive(timeout=10)
                if msg.type != aiohttp.WSMsgType.TEXT or msg.data != f"ping {n}":
                    self.outcomes["websocket: bad echo"] += 1
                    return
        self.outcomes["websocket"] += 1

    async def sse(self) -> None:
        async with self.session.get(f"{self.proxy}/events", headers=self._cookie()) as resp:
            body = await resp.read()
            ok = resp.status == 200 and body.count(b"data: tick") == 5
            self.outcomes["sse" if ok else f"sse: HTTP {resp.status}, {body.count(b'data:')} events"] += 1

    async def hang_up(self) -> None:
        """Reads part of the 5 MB download, then drops the connection."""
        resp = await self.session.get(f"{self.proxy}/download", headers=self._cookie())
        try:
            await resp.content.readexactly(random.randrange(CHUNK, 2 * 1024 * 1024))
        finally:
            resp.close()  # not released: the connection is closed mid-body
        self.outcomes["download hung up"] += 1

    async def download(self) -> None:
        async with self.session.get(f"{self.proxy}/download") as resp:
            got = len(await resp.read())
            self.outcomes["download" if got == DOWNLOAD_BYTES else f"download: {got} bytes"] += 1

    async def reports(self) -> None:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        for path in ("/api/attribution?model=all", "/api/dashboard/summary"):
            async with self.session.get(f"{self.admin}{path}", headers=auth) as resp:
                await resp.read()
                self._count(f"admin {path.split('?')[0]}", resp.status)


MIX: tuple[tuple[str, int], ...] = (
    ("landing", 20),
    ("page", 35),
    ("asset", 28),
    ("login", 3),
    ("checkout", 3),
    ("webhook", 3),
    ("websocket", 2),
    ("sse", 2),
    ("hang_up", 3),
    ("download", 1),
)


async def _one(traffic: Traffic, name: str, limit: asyncio.Semaphore) -> None:
    try:
        await asyncio.wait_for(getattr(traffic, name)(), 30)
    except (aiohttp.ClientError, OSError, TimeoutError, asyncio.IncompleteReadError) as err:
        traffic.outcomes[f"{name}: {type(err).__name__}"] += 1
    finally:
        limit.release()


# -- one run ------------------------------------------------------------------------------------


@dataclass
class RunResult:
    workers: int
    samples: list[Sample]
    reloads: list[dict[str, Any]]
    outcomes: Counter[str]
    problems: list[dict[str, Any]]
    exit_code: int


@contextlib.asynccontextmanager
async def origin_server() -> AsyncIterator[str]:
    runner = web.AppRunner(origin_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://{HOST}:{port}"
    finally:
        await runner.cleanup()


async def soak(
    workers: int, seconds: float, rate: float, reload_every: float = RELOAD_EVERY, extra: str = ""
) -> RunResult:
    with tempfile.TemporaryDirectory(prefix="gateway-soak-") as tmp:
        workdir = Path(tmp)
        db = workdir / "gateway.db"
        async with origin_server() as origin:
            config = workdir / "gateway.toml"
            config.write_text(gateway_config(workdir, origin, workers, extra))
            gw = await start_gateway(config, workdir)
            try:
                samples, outcomes = await _drive(gw, db, seconds, rate, reload_every)
            finally:
                code = await stop_gateway(gw)
        return RunResult(workers, samples, gw.reloads(), outcomes, gw.problems(), code)


async def _drive(
    gw: Gateway, db: Path, seconds: float, rate: float, reload_every: float
) -> tuple[list[Sample], Counter[str]]:
    names = [name for name, _ in MIX]
    weights = [w for _, w in MIX]
    connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT, force_close=False)
    samples: list[Sample] = []
    pending: set[asyncio.Task[None]] = set()
    limit = asyncio.Semaphore(MAX_IN_FLIGHT)
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False
    ) as session:
        traffic = Traffic(session, gw.proxy, gw.admin)

        def spawn(job: Coroutine[Any, Any, None]) -> None:
            task = asyncio.create_task(job)
            pending.add(task)
            task.add_done_callback(pending.discard)

        start = time.monotonic()
        next_sample = next_report = start
        next_reload = start + reload_every
        sent = 0
        while (now := time.monotonic()) - start < seconds:
            if now >= next_sample:
                samples.append(take_sample(now - start, gw.process.pid, db, sent))
                next_sample += SAMPLE_EVERY
            if now >= next_report:
                spawn(_admin(traffic))
                next_report += REPORT_EVERY
            if now >= next_reload:
                gw.process.send_signal(signal.SIGHUP)
                next_reload += reload_every
            due = int((now - start) * rate) - sent
            for name in random.choices(names, weights, k=max(0, due)):
                if limit.locked():
                    traffic.outcomes["skipped (the client at its in-flight limit)"] += 1
                    sent += 1
                    continue
                await limit.acquire()
                spawn(_one(traffic, name, limit))
                sent += 1
            await asyncio.sleep(0.02)
        await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.sleep(1)  # the last reload's line
        samples.append(take_sample(time.monotonic() - start, gw.process.pid, db, sent))
    return samples, traffic.outcomes


async def _admin(traffic: Traffic) -> None:
    try:
        await asyncio.wait_for(traffic.reports(), 60)
    except (aiohttp.ClientError, OSError, TimeoutError) as err:
        traffic.outcomes[f"admin: {type(err).__name__}"] += 1


# -- report -------------------------------------------------------------------------------------


def print_result(result: RunResult) -> dict[str, Any]:
    print(f"\n== proxy.workers = {result.workers} ==")
    pids = sorted({pid for s in result.samples for pid in s.procs})
    head = f"{'t s':>5} {'reqs':>6} " + " ".join(f"{f'pid {p} RSS MB/fd/thr':>24}" for p in pids)
    print(head + f" {'db MB':>7} {'wal MB':>7}")
    for s in result.samples:
        cells = []
        for p in pids:
            fig = s.procs.get(p)
            cells.append(f"{fig[0] / 1024:>14.1f}/{fig[1]:>4}/{fig[2]:>3}" if fig else f"{'-':>24}")
        print(
            f"{s.t:>5.0f} {s.requests:>6} " + " ".join(cells) + f" {s.db / 2**20:>7.2f} {s.wal / 2**20:>7.2f}"
        )
    end = result.samples[-1].t if result.samples else 0.0
    half = [s for s in result.samples if s.t >= end / 2]
    verdict: dict[str, Any] = {"workers": result.workers, "processes": {}}
    print("\nsecond half (after warm-up), per process:")
    for p in pids:
        rss = [(s.t, s.procs[p][0] / 1024) for s in half if p in s.procs]
        fds = [(s.t, float(s.procs[p][1])) for s in half if p in s.procs]
        thr = [s.procs[p][2] for s in half if p in s.procs]
        rss_min = slope(rss) * 60
        fd_min = slope(fds) * 60
        print(
            f"  pid {p}: RSS {rss[0][1]:.1f} → {rss[-1][1]:.1f} MB, slope {rss_min:+.2f} MB/min;"
            f" fds {fds[0][1]:.0f} → {fds[-1][1]:.0f}, slope {fd_min:+.2f}/min;"
            f" threads {min(thr)}-{max(thr)}"
            if rss
            else f"  pid {p}: gone before the second half"
        )
        verdict["processes"][p] = {"rss_mb_per_min": rss_min, "fds_per_min": fd_min}
    wal_max = max((s.wal for s in result.samples), default=0)
    wal_half = max((s.wal for s in half), default=0)
    store = result.samples[-1].db if result.samples else 0
    print(
        f"  WAL: largest {wal_max / 2**20:.2f} MB (second half {wal_half / 2**20:.2f} MB);"
        f" store {store / 2**20:.2f} MB"
    )
    tasks = [(r.get("worker"), r.get("tasks")) for r in result.reloads]
    print(f"  asyncio tasks at each reload (worker, tasks): {tasks}")
    print("  outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(result.outcomes.items())))
    if result.problems:
        print(
            f"  gateway warnings/errors: {len(result.problems)}, first:",
            [r.get("msg") for r in result.problems[:5]],
        )
    print(f"  gateway exit code: {result.exit_code}")
    verdict.update(
        wal_max=wal_max, tasks=tasks, outcomes=dict(result.outcomes), problems=len(result.problems),
        exit_code=result.exit_code,
    )  # fmt: skip
    return verdict


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="length of each run (default 120)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="proxy.workers of each run")
    parser.add_argument("--rate", type=float, default=60.0, help="requests a second (default 60)")
    parser.add_argument(
        "--reload-every", type=float, default=RELOAD_EVERY, help="seconds between SIGHUPs (30)"
    )
    parser.add_argument(
        "--toml", default="", help="TOML appended to the config (e.g. '[bots]\\nmax_tracked = 256')"
    )
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if not 1 <= args.seconds <= 3600:
        parser.error("--seconds: must be 1..3600")
    if any(not 1 <= n <= 8 for n in args.workers):
        parser.error("--workers: each count must be 1..8")
    if not 1 <= args.reload_every <= 3600:
        parser.error("--reload-every: must be 1..3600")
    if not 0 < args.rate <= 500:
        parser.error("--rate: must be above 0 and at most 500")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    verdicts = []
    for workers in args.workers:
        result = asyncio.run(soak(workers, args.seconds, args.rate, args.reload_every, args.toml))
        verdicts.append(print_result(result))
    if args.json:
        Path(args.json).write_text(json.dumps(verdicts, indent=2, default=str))


if __name__ == "__main__":
    main()
