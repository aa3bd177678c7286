"""A returning visitor's ID cookie is refreshed on a page whose answer no shared cache gives
anyone else, and on no other: real gateway, real aiohttp site on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from addons.identity import cookie_value
from gateway.keys import Keys
from tests.conftest import make_settings

DOCUMENT = {"Accept": "text/html", "Sec-Fetch-Dest": "document"}

# path → (status, the site's headers)
ANSWERS: dict[str, tuple[int, list[tuple[str, str]]]] = {
    "/account": (200, [("Cache-Control", "private, max-age=0")]),
    "/basket": (200, [("Cache-Control", "no-store")]),
    # Private to browsers, cached by the CDN its own field tells (RFC 9213): given to others.
    "/catalog": (200, [("Cache-Control", "private"), ("CDN-Cache-Control", "max-age=600")]),
    # The same for the CDN that reads Surrogate-Control (W3C Edge Architecture) ahead of both.
    "/edge": (200, [("Cache-Control", "private"), ("Surrogate-Control", "max-age=600")]),
    "/feed": (200, [("Vary", "Accept-Encoding, Cookie")]),
    "/home": (200, [("Cache-Control", "public, max-age=600")]),
    "/about": (200, []),
    "/news": (200, [("Cache-Control", "no-cache")]),
    "/shop": (200, [("Set-Cookie", "session=s1; Path=/; HttpOnly")]),
    "/unchanged": (304, [("Cache-Control", "private"), ("ETag", '"v1"')]),
    "/signin": (302, [("Cache-Control", "private"), ("Location", "/account")]),
    "/old": (301, [("Location", "/home")]),
    "/app.js": (200, [("Cache-Control", "private"), ("Content-Type", "text/javascript")]),
}


async def site(request: web.Request) -> web.StreamResponse:
    status, headers = ANSWERS[request.path]
    resp = web.Response(status=status, body=b"" if status == 304 else b"page")
    for name, value in headers:
        resp.headers.add(name, value)
    return resp


def app() -> web.Application:
    application = web.Application()
    application.router.add_route("*", "/{tail:.*}", site)
    return application


def visitor_cookie(tmp_path: Path, n: int) -> str:
    """A returning visitor's signed ID cookie, as the gateway under test issues it."""
    keys = Keys.from_master(make_settings(tmp_path).secret)
    return cookie_value(keys.cookie_mac, chr(ord("A") + n) * 22)


async def test_only_answers_kept_from_shared_caches_refresh_the_cookie(
    start_gateway, upstream_server, tmp_path: Path
) -> None:
    gw = await start_gateway(await upstream_server(app()))
    refreshed: dict[str, bool] = {}
    for n, path in enumerate(ANSWERS):
        cookie = visitor_cookie(tmp_path, n)  # one visitor each: a refresh is once a day
        headers = {**DOCUMENT, "Cookie": f"gw_vid={cookie}"}
        if path == "/app.js":
            headers["Sec-Fetch-Dest"] = "script"
        if path == "/unchanged":
            headers["If-None-Match"] = '"v1"'
        async with gw.session.get(gw.url + path, headers=headers, allow_redirects=False) as resp:
            ours = [line for line in resp.headers.getall("Set-Cookie", []) if line.startswith("gw_vid=")]
            site_lines = [
                line for line in resp.headers.getall("Set-Cookie", []) if not line.startswith("gw_vid=")
            ]
            # The site's caching goes as it wrote it, whether we refresh or not.
            assert resp.headers.getall("Cache-Control", []) == [
                value for name, value in ANSWERS[path][1] if name == "Cache-Control"
            ], path
            assert site_lines == [value for name, value in ANSWERS[path][1] if name == "Set-Cookie"], path
            refreshed[path] = bool(ours)
            if ours:
                assert ours == [f"gw_vid={cookie}; HttpOnly; Max-Age={395 * 86400}; Path=/; SameSite=Lax"]
    assert refreshed == {
        "/account": True,
        "/basket": True,
        "/catalog": False,
        "/edge": False,
        "/feed": True,
        "/home": False,
        "/about": False,
        "/news": False,
        "/shop": False,
        "/unchanged": False,
        "/signin": True,
        "/old": False,
        "/app.js": False,
    }


async def test_a_visitor_is_refreshed_once_a_day(start_gateway, upstream_server, tmp_path: Path) -> None:
    gw = await start_gateway(await upstream_server(app()))
    headers = {**DOCUMENT, "Cookie": f"gw_vid={visitor_cookie(tmp_path, 0)}"}
    set_cookies = []
    for path in ("/account", "/basket", "/account"):
        async with gw.session.get(gw.url + path, headers=headers) as resp:
            set_cookies.append(len(resp.headers.getall("Set-Cookie", [])))
    assert set_cookies == [1, 0, 0]


async def test_refresh_days_zero_keeps_page_views_as_they_were(
    start_gateway, upstream_server, tmp_path: Path
) -> None:
    gw = await start_gateway(await upstream_server(app()), "[identity]\nrefresh_days = 0\n")
    headers = {**DOCUMENT, "Cookie": f"gw_vid={visitor_cookie(tmp_path, 0)}"}
    async with gw.session.get(gw.url + "/account", headers=headers) as resp:
        assert "Set-Cookie" not in resp.headers
