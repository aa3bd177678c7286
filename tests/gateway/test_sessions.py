"""Dashboard sessions outlive a restart of the gateway on the same store (``gateway/sessions.py``,
``storage/dashboard_sessions.py``): a login stays in, a logout stays out, an expired session
stays expired, and a changed admin token signs everyone out."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway import sessions as sessions_module
from gateway.sessions import Sessions, session_key
from storage.local import connect
from storage.migrate import migrate
from tests.conftest import TOKEN, RunningGateway
from tests.gateway.test_dashboard import cookie_of, host_origin, origin, status_of, with_cookie
from tests.gateway.test_workers import _alive, _config, _listening, _origin
from tests.gatewayproc import GatewayProcess

OTHER_TOKEN = "u" * 40


async def _login(gw: RunningGateway, token: str = TOKEN) -> str:
    async with gw.session.post(
        gw.admin_url + "/login", data={"token": token}, headers=host_origin(gw), allow_redirects=False
    ) as resp:
        assert resp.status == 303 and resp.headers["Location"] == "/dashboard"
        return resp.cookies[cookie_of(gw)].value


async def _stop(gw: RunningGateway) -> None:
    """The gateway stops as a restart stops it: its listeners and store closed."""
    for task in gw.background:
        task.cancel()
    await asyncio.gather(*gw.background, return_exceptions=True)
    await gw.admin.close()
    await gw.proxy.close()


async def _in(gw: RunningGateway, session_id: str) -> bool:
    """Whether the cookie reads the dashboard (200), or is sent to log in (303)."""
    status = await status_of(gw, "GET", "/dashboard", with_cookie(gw, session_id))
    assert status in (200, 303)
    return status == 200


async def _rows(path: Path, sql: str = "SELECT count(*) FROM dashboard_sessions", *args: Any) -> Any:
    db = await connect(path)
    try:
        async with db.execute(sql, args) as cursor:
            return await cursor.fetchone()
    finally:
        await db.close()


async def _restart(gw: RunningGateway, start_gateway: Any, upstream: str, **env: str) -> RunningGateway:
    await _stop(gw)
    return await start_gateway(upstream, env=env or None)  # type: ignore[no-any-return]


async def test_a_login_outlives_a_restart_and_a_logout_stays_one(
    start_gateway: Any, upstream_server: Any
) -> None:
    upstream = await upstream_server(origin())
    gw = await start_gateway(upstream)
    kept, left = await _login(gw), await _login(gw)
    async with gw.session.post(
        gw.admin_url + "/logout", headers=with_cookie(gw, left, **host_origin(gw)), allow_redirects=False
    ) as resp:
        assert resp.status == 303
    gw = await _restart(gw, start_gateway, upstream)
    assert await _in(gw, kept)
    assert await status_of(gw, "GET", "/api/touchpoints", with_cookie(gw, kept)) == 200
    assert not await _in(gw, left)
    assert await status_of(gw, "GET", "/api/touchpoints", with_cookie(gw, left)) == 401
    # A second restart: still in (the session was not written again by the first).
    gw = await _restart(gw, start_gateway, upstream)
    assert await _in(gw, kept)


async def test_a_logout_while_the_store_is_busy_stays_one_after_a_restart(
    start_gateway: Any, upstream_server: Any, tmp_path: Path
) -> None:
    """A logout while another writer held the store longer than its busy timeout (a
    ``gateway import``, a purge) was logged "not written to the store", and the next restart
    read the session back from it: the cookie of a browser signed out was let in again. The
    logout is written once the store takes it: at the next login or logout, or as the gateway
    stops."""
    upstream = await upstream_server(origin())
    gw = await start_gateway(upstream)
    kept, left = await _login(gw), await _login(gw)
    writer = await connect(tmp_path / "gateway.db")
    try:
        await writer.execute("BEGIN IMMEDIATE")  # the store's write lock, held past the busy timeout
        async with gw.session.post(
            gw.admin_url + "/logout", headers=with_cookie(gw, left, **host_origin(gw)), allow_redirects=False
        ) as resp:
            assert resp.status == 303
        assert not await _in(gw, left)
    finally:
        await writer.execute("ROLLBACK")
        await writer.close()
    gw = await _restart(gw, start_gateway, upstream)
    assert not await _in(gw, left)
    assert await _in(gw, kept)


async def test_a_changed_admin_token_signs_everyone_out_for_good(
    start_gateway: Any, upstream_server: Any, tmp_path: Path
) -> None:
    upstream = await upstream_server(origin())
    gw = await start_gateway(upstream)
    session_id = await _login(gw)
    gw = await _restart(gw, start_gateway, upstream, GATEWAY_ADMIN_TOKEN=OTHER_TOKEN)
    assert not await _in(gw, session_id)
    other = await _login(gw, OTHER_TOKEN)
    # Back to the first token: its sessions were deleted when the other's gateway started, and
    # the other token's sessions do not count under it.
    gw = await _restart(gw, start_gateway, upstream)
    assert not await _in(gw, session_id)
    assert not await _in(gw, other)
    await _stop(gw)
    assert await _rows(tmp_path / "gateway.db") == (0,)


async def test_an_expired_session_stays_expired_after_a_restart(
    start_gateway: Any, upstream_server: Any, tmp_path: Path
) -> None:
    upstream = await upstream_server(origin())
    gw = await start_gateway(upstream)
    old, fresh = await _login(gw), await _login(gw)
    await _stop(gw)
    key = session_key(gw.gateway.settings.secret, TOKEN)
    digest = Sessions(3600, key=key)._digest(old)
    # As if the login was 12 h and a minute ago.
    sql = "UPDATE dashboard_sessions SET started = started - 43260 WHERE digest = ? RETURNING 1"
    assert await _rows(tmp_path / "gateway.db", sql, digest) == (1,)
    gw = await start_gateway(upstream)
    assert not await _in(gw, old)
    assert await _in(gw, fresh)
    await _stop(gw)
    assert await _rows(tmp_path / "gateway.db") == (1,)


async def test_the_sessions_at_rest_are_bounded_and_hold_no_session_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sessions_module, "MAX_SESSIONS", 3)
    path = tmp_path / "gw.db"
    db = await connect(path)
    await migrate(db)
    await db.close()
    now = [1_000_000.0]
    made = Sessions(3600, clock=lambda: now[0], store=path, key=b"k" * 32)
    ids = []
    for _ in range(4):
        ids.append(await made.start())
        now[0] += 1
    assert len(made) == 3 and not made.valid(ids[0])
    again = Sessions(3600, clock=lambda: now[0], store=path, key=b"k" * 32)
    await again.load()
    assert [again.valid(i) for i in ids] == [False, True, True, True]
    db = await connect(path)
    async with db.execute("SELECT digest, key_id, started FROM dashboard_sessions") as cursor:
        rows = list(await cursor.fetchall())
    await db.close()
    assert len(rows) == 3
    at_rest = b"".join(bytes(r[0]) + bytes(r[1]) for r in rows)
    assert not any(i.encode() in at_rest for i in ids)


async def test_a_login_outlives_a_crash_of_worker_0(tmp_path: Path, upstream_server: object) -> None:
    """``proxy.workers = 2``: worker 0 (the admin listener's) killed; its successor knows the
    session."""
    cfg = await asyncio.to_thread(_config, tmp_path, await _origin(upstream_server))
    gw = await GatewayProcess.start(cfg)
    try:
        await gw.wait_for(lambda: _listening(gw, 2), gw.stderr)
        jar = aiohttp.DummyCookieJar()
        async with aiohttp.ClientSession(cookie_jar=jar) as session:
            async with session.post(
                f"{gw.admin}/login",
                data={"token": TOKEN},
                headers={"Origin": gw.admin},
                allow_redirects=False,
            ) as resp:
                assert resp.status == 303
                (morsel,) = resp.cookies.values()
            cookie = {"Cookie": f"{morsel.key}={morsel.value}"}
            (victim,) = [r["pid"] for r in gw.logs() if r["msg"] == "listening" and r["worker"] == 0]
            os.kill(victim, signal.SIGKILL)
            while await asyncio.to_thread(_alive, victim):
                await asyncio.sleep(0.01)
            timeout = aiohttp.ClientTimeout(total=30)
            async with session.get(
                f"{gw.admin}/dashboard", headers=cookie, allow_redirects=False, timeout=timeout
            ) as resp:
                assert resp.status == 200
        assert await gw.stop() == 0
    finally:
        await gw.kill()
