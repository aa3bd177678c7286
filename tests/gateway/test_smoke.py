"""End to end once: a landing through the gateway lands in the store and the admin API."""

from __future__ import annotations

from aiohttp import web


async def test_landing_is_recorded_and_stripped(start_gateway, upstream_server) -> None:
    seen: list[str] = []

    async def page(request: web.Request) -> web.Response:
        seen.append(request.raw_path)
        return web.Response(text="<html>ok</html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    gw = await start_gateway(await upstream_server(app))
    async with gw.session.get(gw.url + "/landing?utm_source=News&utm_medium=email&keep=1") as resp:
        assert resp.status == 200
        cookie = resp.headers.getall("Set-Cookie")
    assert seen == ["/landing?keep=1"]
    assert any(c.startswith("gw_vid=v1.") for c in cookie)
    page_ = await gw.api("/api/touchpoints")
    assert page_["ok"] is True
    [tp] = page_["items"]
    assert (tp["source"], tp["medium"], tp["landing_path"]) == ("news", "email", "/landing")
