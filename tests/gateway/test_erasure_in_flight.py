"""An erasure made while a request of the erased user is in flight, through a real gateway:
the request's rows (a conversion, a binding), dated when the request came (before the erasure)
and written when the site answers (after it), are late rows and are not stored. Until
2026-12-07 the proxy's own path stored them, after the erasure had answered that everything
of the user was gone (the central store, ``gateway import`` and the signed events refused them).

The site's answer is held by the test until the erasure has answered: no timing involved."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.conftest import TOKEN, GatewayFactory, RunningGateway

AUTH = {"Authorization": f"Bearer {TOKEN}"}
USER = "in-flight-user-7"
RULES = """
    [[identity.rules]]
    name = "api-login"
    path = "/api/login"
    status = [200]
    user_id = { response_json = "/user/id" }
    [[conversions]]
    name = "purchase"
    path = "/checkout"
    status = [303]
    value = { location_query = "total" }
    currency = "EUR"
    order_id = { location_query = "order" }
"""


class Site:
    """The site behind: a landing page, a login answering ``USER``, and a checkout; a login or
    checkout marked held waits for ``release`` before it answers (``arrived`` set meanwhile)."""

    def __init__(self) -> None:
        self.held: set[str] = set()
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_post("/api/login", self.login)
        self.app.router.add_post("/checkout", self.checkout)
        self.app.router.add_get("/{tail:.*}", self.page)

    async def _hold(self, path: str) -> None:
        if path in self.held:
            self.arrived.set()
            await self.release.wait()

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def login(self, request: web.Request) -> web.Response:
        await self._hold(request.path)
        return web.json_response({"user": {"id": USER}})

    async def checkout(self, request: web.Request) -> web.Response:
        await self._hold(request.path)
        raise web.HTTPSeeOther("/thanks?order=O-9&total=19.90")


async def send(gw: RunningGateway, method: str, path: str, cookie: str | None = None) -> str | None:
    headers = {"Cookie": f"gw_vid={cookie}"} if cookie else {}
    async with gw.session.request(method, gw.url + path, headers=headers, allow_redirects=False) as resp:
        assert resp.status < 400
        return resp.cookies["gw_vid"].value if "gw_vid" in resp.cookies else cookie


def rows(path: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(sql, args).fetchall()


async def erase_while_held(gw: RunningGateway, site: Site, request: Awaitable[Any]) -> Any:
    """Send ``request``, erase ``USER`` while the site holds its answer, then let it answer;
    the request's outcome."""
    in_flight = asyncio.ensure_future(request)
    await asyncio.wait_for(site.arrived.wait(), 30)
    async with gw.session.delete(f"{gw.admin_url}/api/users/{USER}", headers=AUTH) as resp:
        assert resp.status == 200, await resp.text()
    site.release.set()
    return await asyncio.wait_for(in_flight, 30)


async def late_rows_metric(gw: RunningGateway) -> dict[str, float]:
    async with gw.session.get(f"{gw.admin_url}/metrics", headers=AUTH) as resp:
        text = await resp.text()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("gateway_erased_late_rows_total{"):
            name, value = line.rsplit(" ", 1)
            found[name.split('table="')[1].split('"')[0]] = float(value)
    return found


async def test_a_conversion_in_flight_at_the_users_erasure_is_not_stored(
    start_gateway: GatewayFactory, upstream_server: Callable[[web.Application], Awaitable[str]]
) -> None:
    """The user's device checks out; the site is slow; the user is erased meanwhile. The
    conversion, dated when the checkout came, is the erased user's and from before the erasure:
    it is left out (counted), and the store holds nothing of the user or the device after."""
    site = Site()
    gw = await start_gateway(await upstream_server(site.app), RULES)
    cookie = await send(gw, "GET", "/pricing?utm_source=news")
    await send(gw, "POST", "/api/login", cookie)
    keys = gw.gateway.keys
    visitor = keys.visitor_key(cookie.split(".")[1]) if cookie else ""
    user = keys.user_key(USER)
    store = gw.gateway.settings.store_path
    assert await asyncio.to_thread(
        rows, store, "SELECT count(*) FROM identities WHERE user_key = ?", user
    ) == [(1,)]
    site.held.add("/checkout")
    await erase_while_held(gw, site, send(gw, "POST", "/checkout", cookie))

    assert await asyncio.to_thread(
        rows, store, "SELECT count(*) FROM conversions WHERE visitor_key = ? OR user_key = ?", visitor, user
    ) == [(0,)]
    assert await asyncio.to_thread(
        rows, store, "SELECT count(*) FROM touchpoints WHERE visitor_key = ?", visitor
    ) == [(0,)]
    assert await late_rows_metric(gw) == {"conversions": 1.0}
    # The device comes back after the erasure: new activity, recorded as ever.
    await send(gw, "GET", "/pricing?utm_source=again", cookie)
    assert await asyncio.to_thread(
        rows, store, "SELECT source FROM touchpoints WHERE visitor_key = ?", visitor
    ) == [("again",)]


async def test_a_sign_in_in_flight_at_the_users_erasure_binds_nothing_and_the_next_one_binds(
    start_gateway: GatewayFactory, upstream_server: Callable[[web.Application], Awaitable[str]]
) -> None:
    """A sign-in whose answer comes after the user's erasure: its binding, dated before the
    erasure, is left out. The gateway does not take it as bound either: the user's next
    sign-in on that device, after the erasure, binds them (new activity)."""
    site = Site()
    gw = await start_gateway(await upstream_server(site.app), RULES)
    cookie = await send(gw, "GET", "/pricing?utm_source=news")
    keys = gw.gateway.keys
    visitor = keys.visitor_key(cookie.split(".")[1]) if cookie else ""
    user = keys.user_key(USER)
    store = gw.gateway.settings.store_path
    site.held.add("/api/login")
    await erase_while_held(gw, site, send(gw, "POST", "/api/login", cookie))

    assert await asyncio.to_thread(rows, store, "SELECT count(*) FROM identities") == [(0,)]
    assert await late_rows_metric(gw) == {"identities": 1.0}
    site.held.clear()
    await send(gw, "POST", "/api/login", cookie)
    bound = await asyncio.to_thread(rows, store, "SELECT visitor_key, user_key FROM identities")
    assert bound == [(visitor, user)]
