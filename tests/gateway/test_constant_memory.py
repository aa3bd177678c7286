"""Large bodies stream through in constant memory, both ways (traced Python allocations stay
small while 256 MB pass)."""

from __future__ import annotations

import tracemalloc
from collections.abc import AsyncIterator

from aiohttp import web

SIZE = 256 * 1024 * 1024
CHUNK = b"x" * (256 * 1024)
LIMIT = 48 * 1024 * 1024  # far below SIZE: nothing is buffered whole


async def test_256_mb_down_and_up_in_constant_memory(start_gateway, upstream_server) -> None:
    received = 0

    async def download(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": str(SIZE)})
        await resp.prepare(request)
        for _ in range(SIZE // len(CHUNK)):
            await resp.write(CHUNK)
        return resp

    async def upload(request: web.Request) -> web.Response:
        nonlocal received
        async for chunk in request.content.iter_any():
            received += len(chunk)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/down", download)
    app.router.add_post("/up", upload)
    gw = await start_gateway(await upstream_server(app), f"[proxy]\nmax_request_body = {SIZE}\n")

    async def body() -> AsyncIterator[bytes]:
        for _ in range(SIZE // len(CHUNK)):
            yield CHUNK

    tracemalloc.start()
    try:
        got = 0
        async with gw.session.get(gw.url + "/down") as resp:
            async for chunk in resp.content.iter_any():
                got += len(chunk)
        async with gw.session.post(gw.url + "/up", data=body()) as resp:
            assert resp.status == 200
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got == SIZE and received == SIZE
    assert peak < LIMIT, f"peak traced memory {peak / 2**20:.0f} MiB while streaming {SIZE / 2**20:.0f} MiB"
