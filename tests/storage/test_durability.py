"""The durability promise, end to end: a touchpoint whose response was received survives
``kill -9`` of the gateway; and tracking fails open: a broken store never breaks the page."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ENV, TOKEN, GatewayFactory, RunningGateway

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 30
LOAD_SECONDS = 1.0
MAX_REQUESTS = 20_000


def landing_app() -> web.Application:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<html>landing</html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def query(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(sql).fetchall()


def execute(path: Path, sql: str) -> None:
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.executescript(sql)


class GatewayProcess:
    """``python -m gateway run`` on loopback ports, its store in ``tmp_path``."""

    def __init__(self, tmp_path: Path, upstream: str, name: str) -> None:
        self.tmp_path = tmp_path
        self.upstream = upstream
        self.name = name
        self.db = tmp_path / "gw.db"
        self.proc: asyncio.subprocess.Process | None = None
        self.log = tmp_path / f"{name}.log"

    async def start(self) -> None:
        self.port, self.admin_port = await asyncio.to_thread(free_port), await asyncio.to_thread(free_port)
        config = self.tmp_path / f"{self.name}.toml"
        text = (
            f'[proxy]\nlisten = "127.0.0.1:{self.port}"\nupstream = "{self.upstream}"\n'
            # One process: kill -9 must hit the process holding the store writer, not a supervisor.
            "workers = 1\n"
            f'[admin]\nlisten = "127.0.0.1:{self.admin_port}"\n'
            # A long bound on the commit wait: every response received here was confirmed,
            # none went out on the fail-open timeout.
            f'[storage]\npath = "{self.db}"\nnode = "durability"\ndurability = "commit"\n'
            "max_wait_ms = 10000\n"
        )
        await asyncio.to_thread(config.write_text, text)
        log = await asyncio.to_thread(open, self.log, "wb")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gateway",
                "run",
                "-c",
                str(config),
                cwd=ROOT,
                env={**os.environ, **ENV},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        finally:
            await asyncio.to_thread(log.close)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def wait_ready(self, session: aiohttp.ClientSession, timeout: float = 10) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                break
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(self.url + "/ready") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.05)
        output = await asyncio.to_thread(self.log.read_text)
        pytest.fail(f"gateway did not start (exit {self.proc.returncode}):\n{output}")

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@pytest.fixture
async def processes() -> AsyncIterator[list[GatewayProcess]]:
    """Every gateway process a test starts is killed at the end, whatever happened."""
    started: list[GatewayProcess] = []
    try:
        yield started
    finally:
        for gw in started:
            await gw.kill()


async def test_kill_9_under_load_loses_no_acknowledged_touchpoint(
    tmp_path: Path,
    upstream_server: Callable[[web.Application], Awaitable[str]],
    processes: list[GatewayProcess],
) -> None:
    upstream = await upstream_server(landing_app())
    gw = GatewayProcess(tmp_path, upstream, "first")
    processes.append(gw)
    await gw.start()
    received: set[int] = set()
    sent = 0
    killed = asyncio.Event()

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal sent
        while not killed.is_set() and sent < MAX_REQUESTS:
            n, sent = sent, sent + 1
            try:
                async with session.get(f"{gw.url}/land?utm_source=load&utm_content={n}") as resp:
                    body = await resp.read()
                    if resp.status == 200 and body == b"<html>landing</html>":
                        received.add(n)
            except (aiohttp.ClientError, ConnectionError):
                if killed.is_set():
                    return
                await asyncio.sleep(0.01)

    connector = aiohttp.TCPConnector(limit=WORKERS)
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as session:
        await gw.wait_ready(session)
        async with asyncio.timeout(15):
            workers = [asyncio.create_task(worker(session)) for _ in range(WORKERS)]
            await asyncio.sleep(LOAD_SECONDS)
            in_flight_before = sent - len(received)
            assert gw.proc is not None
            gw.proc.send_signal(signal.SIGKILL)  # mid-load: requests are in flight
            await gw.proc.wait()
            killed.set()
            await asyncio.gather(*workers)

    assert gw.proc.returncode == -signal.SIGKILL
    assert len(received) >= 50, f"too little load to mean anything: {len(received)} of {sent}"
    assert in_flight_before > 0
    rows = await asyncio.to_thread(query, gw.db, "SELECT content FROM touchpoints")
    stored = [int(content) for (content,) in rows]
    lost = sorted(received - set(stored))
    assert lost == [], f"{len(lost)} acknowledged touchpoints lost, e.g. {lost[:10]}"
    assert len(stored) == len(set(stored)), "a landing was stored twice"
    [(count, distinct)] = await asyncio.to_thread(
        query, gw.db, "SELECT count(*), count(DISTINCT id) FROM touchpoints"
    )
    assert count == distinct == len(stored)
    assert len(stored) <= sent

    # The same file after the crash: the gateway starts (WAL recovery), serves and records.
    again = GatewayProcess(tmp_path, upstream, "second")
    processes.append(again)
    await again.start()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        await again.wait_ready(session)
        async with session.get(f"{again.url}/land?utm_source=load&utm_content=-1") as resp:
            assert resp.status == 200
        async with session.get(
            f"http://127.0.0.1:{again.admin_port}/api/touchpoints",
            params={"source": "load", "limit": "1000"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as resp:
            assert resp.status == 200
            page = await resp.json()
    assert page["ok"] is True
    assert len(page["items"]) == min(len(stored) + 1, 1000)
    assert again.proc is not None
    again.proc.send_signal(signal.SIGTERM)  # graceful this time: flush and exit 0
    async with asyncio.timeout(10):
        assert await again.proc.wait() == 0
    stored_after = await asyncio.to_thread(query, gw.db, "SELECT content FROM touchpoints")
    assert {int(c) for (c,) in stored_after} == set(stored) | {-1}


# -- fail open ---------------------------------------------------------------------------------


async def unconfirmed(gw: RunningGateway, reason: str) -> float:
    async with gw.session.get(
        gw.admin_url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
    ) as resp:
        assert resp.status == 200
        text = await resp.text()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "gateway_events_unconfirmed_total" and s.labels.get("reason") == reason:
                return s.value
    return 0.0


async def land(gw: RunningGateway, content: str) -> None:
    async with gw.session.get(f"{gw.url}/land?utm_source=news&utm_content={content}") as resp:
        assert resp.status == 200
        assert await resp.text() == "<html>landing</html>"


@pytest.fixture
async def gateway(
    start_gateway: GatewayFactory, upstream_server: Callable[[web.Application], Awaitable[str]]
) -> RunningGateway:
    return await start_gateway(await upstream_server(landing_app()))


async def test_a_closed_store_still_serves_pages_and_counts_them(gateway: RunningGateway) -> None:
    await land(gateway, "before")
    assert await unconfirmed(gateway, "store_error") == 0
    await gateway.gateway.store.close()
    for n in range(3):
        await land(gateway, str(n))
    assert await unconfirmed(gateway, "store_error") == 3


async def test_failing_commits_still_serve_pages_and_count_them(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    db = gateway.gateway.settings.store_path
    await land(gateway, "before")
    await asyncio.to_thread(
        execute,
        db,
        "CREATE TRIGGER fail BEFORE INSERT ON touchpoints BEGIN SELECT RAISE(ABORT, 'disk says no'); END;",
    )
    await asyncio.gather(*(land(gateway, f"lost{n}") for n in range(5)))
    assert await unconfirmed(gateway, "store_error") == 5

    await asyncio.to_thread(execute, db, "DROP TRIGGER fail;")
    await land(gateway, "after")
    assert await unconfirmed(gateway, "store_error") == 5
    rows = await asyncio.to_thread(query, db, "SELECT content FROM touchpoints ORDER BY id")
    assert [c for (c,) in rows] == ["before", "after"]
