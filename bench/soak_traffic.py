"""The mixed traffic a soak run (``bench/soak.py``) drives through the gateway.

``Traffic`` holds one kind of request per method (landings with utm parameters, returning
visitors' page loads, assets, logins, checkouts, signed webhooks, WebSocket sessions, SSE
streams, downloads read whole or hung up on, the admin reports); ``MIX`` weighs them. It owns
the counts of outcomes (a failure is counted by kind, e.g. ``sse: HTTP 502``) and the last
``MAX_RETURNING`` visitor cookies it was handed; it never raises on a failed request.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from bench.soak_gateway import TOKEN, WEBHOOK_SECRET
from bench.soak_origin import CHUNK, DOWNLOAD_BYTES

MAX_RETURNING = 500  # visitor cookies kept for returning page loads (oldest dropped)


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


async def one_request(traffic: Traffic, name: str, limit: asyncio.Semaphore) -> None:
    """One request of kind ``name`` (a ``MIX`` name); releases ``limit`` when done."""
    try:
        await asyncio.wait_for(getattr(traffic, name)(), 30)
    except (aiohttp.ClientError, OSError, TimeoutError, asyncio.IncompleteReadError) as err:
        traffic.outcomes[f"{name}: {type(err).__name__}"] += 1
    finally:
        limit.release()


async def admin_reports(traffic: Traffic) -> None:
    """The attribution report and the dashboard summary, a failure counted as ``admin: …``."""
    try:
        await asyncio.wait_for(traffic.reports(), 60)
    except (aiohttp.ClientError, OSError, TimeoutError) as err:
        traffic.outcomes[f"admin: {type(err).__name__}"] += 1
