import json
from aiohttp import web
from yarl import URL

TARGETS = [
    "/p?UTM_SOURCE=X&Utm_Medium=Email&a=1",
    "/p?utm_source=a&utm_source=b&k=%2F",
    "/p?utm_source=&a=1",
    "/p?a=x+y&utm_campaign=a+b%20c&b=%20",
    "/p?utm%5Fsource=x&a=1",
    "/p?utm_campaign=a%26b%3Dc&q=a%26b",
    "/p?utm_source=%C3%28&z=%zz",
    "/p?utm_id=1&utm_source_platform=x&utm_creative_format=y&utm_marketing_tactic=z&k",
    "/p?_gl=1*abc*_ga*MTA.&_ga=2.1.2",
    "/p?mc_cid=abc&mc_eid=def",
    "/p?ScCid=x&epik=y&rdt_cid=z&irclickid=w&qclid=q&srsltid=s&igshid=i&si=s2",
    "/p?a=1&&utm_source=x&&b=2#frag",
    "/p?utm_source=" + "v" * 200 + "&a=1",
    "/p?utm_source=" + "v" * 201 + "&a=1",
    "/p;x=1?utm_source=x;b=2&c=3",
]


async def test_scratch(start_gateway, upstream_server) -> None:
    seen = []

    async def page(request: web.Request) -> web.Response:
        seen.append(request.raw_path)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", page)
    gw = await start_gateway(await upstream_server(app))
    for t in TARGETS:
        async with gw.session.get(URL(gw.url + t, encoded=True)) as resp:
            assert resp.status == 200
    items = (await gw.api("/api/touchpoints", limit=100))["items"]
    for t, s in zip(TARGETS, seen):
        print(repr(t[:90]), "=>", repr(s[:90]))
    for tp in items:
        print({k: v for k, v in tp.items() if v and k in ("source","medium","campaign","click_id_kind","click_id","channel","raw_params","landing_path")})
