"""`proxy.workers = 2`: a supervisor, two processes on one port, one store, nothing lost or doubled."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.gatewayproc import GatewayProcess, children

LANDINGS = 300


def _config(tmp_path: Path, upstream: str, workers: int = 2) -> Path:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        f'[proxy]\nlisten = "127.0.0.1:0"\nupstream = "{upstream}"\nworkers = {workers}\naccess_log = true\n'
        '[admin]\nlisten = "127.0.0.1:0"\n[storage]\npath = "gw.db"\nnode = "test"\n'
        # A generous bound on the commit wait: on a busy machine every response still waits for it.
        "max_wait_ms = 20000.0\n"
    )
    return cfg


def _stored(path: Path) -> tuple[int, int, int]:
    with sqlite3.connect(path) as db:
        total, ids = db.execute("SELECT count(*), count(DISTINCT id) FROM touchpoints").fetchone()
        (visitors,) = db.execute("SELECT count(DISTINCT visitor_key) FROM touchpoints").fetchone()
    return total, ids, visitors


async def _origin(upstream_server: object) -> str:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    return await upstream_server(app)  # type: ignore[operator, no-any-return]


def _alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting for whoever adopted it to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _listening(gw: GatewayProcess, count: int) -> bool:
    return len({r.get("worker") for r in gw.logs() if r["msg"] == "listening"}) >= count


async def test_two_workers_store_every_acknowledged_landing_exactly_once(
    tmp_path: Path, upstream_server: object
) -> None:
    cfg = await asyncio.to_thread(_config, tmp_path, await _origin(upstream_server))
    gw = await GatewayProcess.start(cfg)
    try:
        await gw.wait_for(lambda: _listening(gw, 2), gw.stderr)
        acknowledged = 0
        gate = asyncio.Semaphore(30)

        async def land(i: int) -> None:
            nonlocal acknowledged
            async with gate, aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
                url = f"{gw.proxy}/landing?utm_source=s{i}&utm_medium=cpc"
                async with session.get(url) as resp:
                    assert resp.status == 200 and await resp.text() == "ok"
                    assert "gw_vid" in resp.cookies
                    acknowledged += 1

        await asyncio.gather(*(land(i) for i in range(LANDINGS)))
        assert await gw.stop() == 0
    finally:
        await gw.kill()
    assert acknowledged == LANDINGS
    assert await asyncio.to_thread(_stored, tmp_path / "gw.db") == (LANDINGS, LANDINGS, LANDINGS)
    served = {r["worker"] for r in gw.logs() if r["logger"] == "gateway.access"}
    assert served == {0, 1}, "both workers took connections"
    assert not [r for r in gw.logs() if r["level"] in ("error", "critical")]
    stopped = [r for r in gw.logs() if r["msg"] == "stopped"]
    assert len(stopped) == 2 and all(r["unconfirmed"] == 0 for r in stopped), (
        "every response waited for its commit"
    )
    admins = [r for r in gw.logs() if r["msg"] == "listening" and r["admin"]]
    assert {r["worker"] for r in admins} == {0}, "only worker 0 runs the admin listener"


async def test_a_crashed_worker_is_restarted(tmp_path: Path, upstream_server: object) -> None:
    cfg = await asyncio.to_thread(_config, tmp_path, await _origin(upstream_server))
    gw = await GatewayProcess.start(cfg)
    try:
        await gw.wait_for(lambda: _listening(gw, 2), gw.stderr)
        before = await asyncio.to_thread(children, gw.proc.pid)
        assert len(before) == 2
        victim = max(before)
        os.kill(victim, signal.SIGKILL)
        await gw.wait_log(lambda r: r["msg"].startswith("worker") and "starting it again" in r["msg"])
        await gw.wait_for(lambda: sum(r["msg"] == "listening" for r in gw.logs()) >= 3, gw.stderr)
        after = await asyncio.to_thread(children, gw.proc.pid)
        assert len(after) == 2 and victim not in after
        async with aiohttp.ClientSession() as session:
            for _ in range(10):
                async with session.get(f"{gw.proxy}/?utm_source=after") as resp:
                    assert resp.status == 200
        assert await gw.stop() == 0
    finally:
        await gw.kill()


async def test_workers_stop_when_the_supervisor_is_killed(tmp_path: Path, upstream_server: object) -> None:
    cfg = await asyncio.to_thread(_config, tmp_path, await _origin(upstream_server))
    gw = await GatewayProcess.start(cfg)
    try:
        await gw.wait_for(lambda: _listening(gw, 2), gw.stderr)
        workers = await asyncio.to_thread(children, gw.proc.pid)
        gw.proc.kill()  # SIGKILL: the supervisor cannot pass anything on
        await gw.proc.wait()
        await gw.wait_for(lambda: sum(r["msg"] == "stopped" for r in gw.logs()) >= 2, gw.stderr)
        for pid in workers:
            while await asyncio.to_thread(_alive, pid):
                await asyncio.sleep(0.05)  # exiting after its last log line
    finally:
        await gw.kill()
    assert not [r for r in gw.logs() if r["level"] == "critical"]
