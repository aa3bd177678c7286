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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.clients import BROWSER
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


async def test_a_late_rescore_of_an_erased_visitors_landing_is_not_stored(
    start_gateway: GatewayFactory, upstream_server: Callable[[web.Application], Awaitable[str]]
) -> None:
    """A visitor lands, is erased, and then fetches robots.txt (a late bot signal): the bots
    addon, which still holds the landing in memory, re-scores it. The verdict change names the
    touchpoint the erasure deleted (its id, its reasons): it is a late row of the erased visitor,
    left out and counted as one, as every other is. Until 2026-12-07 it was stored, an orphan
    row pointing at the erased landing, and synced on to the central store."""
    site = Site()
    gw = await start_gateway(await upstream_server(site.app))
    async with gw.session.get(gw.url + "/?utm_source=ig", headers=BROWSER) as resp:
        assert resp.status == 200
        cookie = resp.cookies["gw_vid"].value
    store = gw.gateway.settings.store_path
    (landing,) = await asyncio.to_thread(rows, store, "SELECT id FROM touchpoints")
    async with gw.session.delete(f"{gw.admin_url}/api/visitors/{cookie}", headers=AUTH) as resp:
        assert resp.status == 200, await resp.text()
    robots = {**BROWSER, "Sec-Fetch-Dest": "empty", "Cookie": f"gw_vid={cookie}"}
    async with gw.session.get(gw.url + "/robots.txt", headers=robots) as resp:
        assert resp.status == 200
    # A landing of someone else after it: once stored, the re-score before it was written too.
    async with gw.session.get(gw.url + "/?utm_source=later", headers=BROWSER) as resp:
        assert resp.status == 200
    assert await asyncio.to_thread(rows, store, "SELECT source FROM touchpoints") == [("later",)]
    assert await asyncio.to_thread(rows, store, "SELECT touchpoint_id FROM verdict_changes") == []
    assert await late_rows_metric(gw) == {"verdict_changes": 1.0}
    assert landing  # the re-score named it


async def test_a_late_rescore_of_a_landing_not_erased_is_stored(
    start_gateway: GatewayFactory, upstream_server: Callable[[web.Application], Awaitable[str]]
) -> None:
    """The other side: the re-score of a landing no one erased is stored, and no row counted."""
    site = Site()
    gw = await start_gateway(await upstream_server(site.app))
    async with gw.session.get(gw.url + "/?utm_source=ig", headers=BROWSER) as resp:
        cookie = resp.cookies["gw_vid"].value
    robots = {**BROWSER, "Sec-Fetch-Dest": "empty", "Cookie": f"gw_vid={cookie}"}
    async with gw.session.get(gw.url + "/robots.txt", headers=robots) as resp:
        assert resp.status == 200
    store = gw.gateway.settings.store_path
    (landing,) = await asyncio.to_thread(rows, store, "SELECT id FROM touchpoints")
    changes = await asyncio.to_thread(rows, store, "SELECT touchpoint_id, origin FROM verdict_changes")
    assert changes == [(landing[0], "rescore")]
    assert await late_rows_metric(gw) == {}


async def test_a_bad_event_in_flight_at_the_erasure_of_someone_it_names_is_not_kept(
    start_gateway: GatewayFactory, upstream_server: Callable[[web.Application], Awaitable[str]]
) -> None:
    """A sender's refused event (kept sealed in ``bad_events`` for ``gateway replay-bad``)
    received before the user's erasure and committed after it, as a delivery in flight at the
    erasure is: the erasure searched the bad events stored then, and this one, naming the user by
    the raw ID, or one of their devices by its cookie value, would be kept, the raw ID with it. It
    is left out (counted as a late row; its receipt kept, so a retry is a duplicate), alone and
    with its receipt in one commit as the intake writes it. A bad event received after the erasure
    (new activity), or naming someone else, is kept."""
    from gateway.badbody import body_key, seal, unseal
    from gateway.events import BadEvent, Receipt, iso
    from gateway.ids import uuid7

    site = Site()
    gw = await start_gateway(await upstream_server(site.app), RULES)
    cookie = await send(gw, "GET", "/pricing?utm_source=news")
    await send(gw, "POST", "/api/login", cookie)
    before = iso(datetime.now(UTC))
    async with gw.session.delete(f"{gw.admin_url}/api/users/{USER}", headers=AUTH) as resp:
        assert resp.status == 200, await resp.text()
    after = iso(datetime.now(UTC) + timedelta(seconds=1))
    key = body_key(gw.gateway.settings.secret)

    def bad(ts: str, body: str) -> BadEvent:
        return BadEvent(uuid7(), ts, "test", "crm", seal(key, "type: not mapped"), seal(key, body))

    store = gw.gateway.store
    await store.write([bad(before, f'{{"userId": "{USER}", "type": "refund"}}')])
    await store.write([bad(before, f'{{"anonymousId": "{cookie}", "type": "refund"}}')])
    receipt = Receipt(uuid7(), before, "test", "crm", "bad", "d-1#0")
    await store.submit_groups([[receipt, bad(before, f'{{"userId": "{USER.upper()}"}}')]])
    await store.write([bad(after, f'{{"userId": "{USER}", "type": "again"}}')])
    await store.write([bad(before, '{"userId": "someone-else"}')])

    path = gw.gateway.settings.store_path
    kept = await asyncio.to_thread(rows, path, "SELECT body FROM bad_events")
    assert sorted(unseal(key, b) or "" for (b,) in kept) == sorted(
        ['{"userId": "someone-else"}', f'{{"userId": "{USER}", "type": "again"}}']
    )
    assert await asyncio.to_thread(rows, path, "SELECT count(*) FROM receipts WHERE kind = 'bad'") == [(1,)]
    assert await late_rows_metric(gw) == {"bad_events": 3.0}
