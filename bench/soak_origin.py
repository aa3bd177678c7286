"""The origin site a soak run (``bench/soak.py``) puts behind the gateway.

An aiohttp app served in the soak's own process on 127.0.0.1: every path a small HTML page,
``/static/*`` assets, ``/events`` an SSE stream of 5 events over 1 s, ``/ws`` a WebSocket echo,
``/download`` 5 MB, ``POST /login`` answering 302 and ``POST /checkout`` answering 303 to a
thank-you page whose query carries the order ID and total. It owns the download's size and
chunk, which the traffic (``bench/soak_traffic.py``) checks against; it keeps no state.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from bench.servers import HOST

DOWNLOAD_BYTES = 5 * 1024 * 1024
CHUNK = 64 * 1024
PAGE = (
    b"<!doctype html><html><head><title>Soak</title></head><body>"
    + b"<p>soak page</p>" * 120
    + b"</body></html>"
)
ASSET = b"/* soak asset */\n" + b"body{margin:0}\n" * 600


async def _page(request: web.Request) -> web.Response:
    return web.Response(body=PAGE, content_type="text/html", headers={"Cache-Control": "private"})


async def _asset(request: web.Request) -> web.Response:
    return web.Response(
        body=ASSET, content_type="text/css", headers={"Cache-Control": "public, max-age=3600"}
    )


async def _sse(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    with contextlib.suppress(ConnectionError):  # the gateway hung up (stopped, or Ctrl-C): not an error
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


@contextlib.asynccontextmanager
async def origin_server() -> AsyncIterator[str]:
    """Serves the origin on a free port of 127.0.0.1 and yields its URL; stops it on exit."""
    runner = web.AppRunner(origin_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://{HOST}:{port}"
    finally:
        await runner.cleanup()
