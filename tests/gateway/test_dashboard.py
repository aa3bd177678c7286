"""The dashboard without a browser: login form, session cookie and its limits, logout, the
security headers, static files, no external URL in anything served, and the summary it draws.

The store is seeded through the gateway's own store (fixed dates, several channels, two
devices of one user, conversions); ``tests/gateway/test_dashboard_browser.py`` draws it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import io
import math
import re
import time
import urllib.parse
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from jsonschema import Draft202012Validator
from multidict import CIMultiDict

from gateway.admin import MAX_BODY
from gateway.dashboard import CSP
from gateway.events import Binding, Conversion, Event, Touchpoint, iso
from gateway.ids import Uuid7
from gateway.openapi import openapi_document
from gateway.reportstate import REPORTING_KEY
from gateway.sessions import SESSIONS_KEY, cookie_name
from tests.conftest import TOKEN, RunningGateway
from tests.gateway.test_openapi import response_schema
from tests.gateway.test_reports_api import reports_shared, until_shared
from tests.gatewayproc import GatewayProcess
from tests.storage.test_reports_shared import holding

AUTH = {"Authorization": f"Bearer {TOKEN}"}
T0 = datetime(2026, 11, 1, tzinfo=UTC)
PERIOD = {"since": "2026-11-01", "until": "2026-11-11"}
_ids = Uuid7()


def _at(days: float) -> datetime:
    return T0 + timedelta(days=days)


def _tp(visitor: str, days: float, channel: str, **fields: str) -> Touchpoint:
    ts = _at(days)
    return Touchpoint(
        _ids(int(ts.timestamp() * 1000)),
        iso(ts),
        "test",
        visitor,
        channel=channel,
        landing_path="/",
        **fields,
    )


def _conv(visitor: str | None, days: float, value: float, user: str | None = None) -> Conversion:
    ts = _at(days)
    cid = _ids(int(ts.timestamp() * 1000))
    return Conversion(cid, iso(ts), "test", "purchase", "order:" + cid, visitor, user, value, "EUR", cid)


def seed_events(user_key: str) -> list[Event]:
    """Ten days, five channels, two campaigns, two creators; ``alice`` (``user_key``) on two
    devices; six conversions."""
    v = [f"{n:032x}" for n in range(1, 9)]
    return [
        Binding(_ids(int(T0.timestamp() * 1000)), iso(T0), "test", v[0], user_key, "login"),
        Binding(_ids(int(T0.timestamp() * 1000)), iso(T0), "test", v[1], user_key, "login"),
        # alice: an ad on her phone, a newsletter on her laptop, buys on the laptop.
        _tp(v[0], 0.1, "Paid Search", source="google", medium="cpc", campaign="launch"),
        _tp(v[1], 1.2, "Email", source="newsletter", medium="email", campaign="launch"),
        _conv(v[1], 2.5, 120.0),
        _tp(v[2], 1.0, "Paid Social", source="instagram", medium="paid_social", creator_id="cr_anna"),
        _tp(v[2], 3.0, "Organic Search", referrer_host="www.google.com"),
        _conv(v[2], 3.5, 40.0),
        _tp(v[3], 3.2, "Paid Social", source="tiktok", medium="paid_social", creator_id="cr_anna"),
        _conv(v[3], 4.1, 25.0),
        _tp(v[4], 4.0, "Referral", referrer_host="blog.example.org", creator_id="cr_ben"),
        _tp(v[4], 5.5, "Paid Search", source="google", medium="cpc", campaign="winter-sale"),
        _conv(v[4], 6.0, 60.0),
        _tp(v[5], 6.2, "Email", source="newsletter", medium="email", campaign="winter-sale"),
        _conv(v[5], 8.0, 30.0),
        _tp(v[6], 7.0, "Paid Search", source="google", medium="cpc", campaign="winter-sale"),
        _conv(v[6], 9.3, 80.0),
        _tp(v[7], 2.0, "Organic Search", referrer_host="duckduckgo.com"),  # never converts
    ]


def origin() -> web.Application:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    return app


async def seeded_gateway(start_gateway: Any, upstream_server: Any) -> RunningGateway:
    gw: RunningGateway = await start_gateway(await upstream_server(origin()))
    await gw.gateway.store.write(seed_events(gw.gateway.keys.user_key("alice")))
    return gw


@pytest.fixture
async def gw(start_gateway, upstream_server) -> RunningGateway:
    return await seeded_gateway(start_gateway, upstream_server)


def host_origin(gw: RunningGateway) -> dict[str, str]:
    return {"Origin": gw.admin_url}


async def login(gw: RunningGateway) -> str:
    """Log in through the form; the session cookie's value."""
    async with gw.session.post(
        gw.admin_url + "/login", data={"token": TOKEN}, headers=host_origin(gw), allow_redirects=False
    ) as resp:
        assert resp.status == 303 and resp.headers["Location"] == "/dashboard"
        return resp.cookies[cookie_of(gw)].value


def cookie_of(gw: RunningGateway) -> str:
    """The session cookie's name on ``gw``'s admin listener: the port the browser reached it on."""
    return f"gw_admin_session_{gw.admin.port}"


def with_cookie(gw: RunningGateway, session_id: str, **headers: str) -> dict[str, str]:
    return {"Cookie": f"{cookie_of(gw)}={session_id}", **headers}


async def status_of(gw: RunningGateway, method: str, path: str, headers: dict[str, str]) -> int:
    async with gw.session.request(
        method, gw.admin_url + path, headers=headers, allow_redirects=False
    ) as resp:
        return resp.status


def asked(location: str) -> tuple[str, dict[str, list[str]]]:
    """A redirect's path and query parameters."""
    path, _, query = location.partition("?")
    return path, urllib.parse.parse_qs(query)


async def test_root_and_dashboard_redirect_to_login(gw: RunningGateway) -> None:
    async with gw.session.get(gw.admin_url + "/", allow_redirects=False) as resp:
        assert resp.status == 302 and resp.headers["Location"] == "/dashboard"
    async with gw.session.get(gw.admin_url + "/dashboard", allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["Location"] == "/login"
    async with gw.session.get(gw.admin_url + "/login") as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        page = await resp.text()
    assert '<form method="post" action="/login">' in page and 'name="token"' in page


async def test_login_sets_a_strict_httponly_session_cookie(gw: RunningGateway) -> None:
    async with gw.session.post(
        gw.admin_url + "/login", data={"token": TOKEN}, headers=host_origin(gw), allow_redirects=False
    ) as resp:
        assert resp.status == 303 and resp.headers["Location"] == "/dashboard"
        cookies = resp.headers.getall("Set-Cookie")
    assert len(cookies) == 1
    cookie = cookies[0]
    name, _, rest = cookie.partition("=")
    assert name == f"gw_admin_session_{gw.admin.port}"  # the listener's port: see the test of two
    session_id = rest.split(";")[0]
    assert len(session_id) >= 40 and TOKEN not in cookie
    flags = {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")[1:]}
    assert "httponly" in flags
    assert flags["samesite"].lower() == "samesite=strict"
    assert flags["path"] == "Path=/"
    assert flags["max-age"] == "Max-Age=43200"  # admin.session_hours = 12
    assert "secure" not in flags  # plain HTTP on loopback: a Secure cookie would never come back
    assert await status_of(gw, "GET", "/dashboard", with_cookie(gw, session_id)) == 200
    assert await status_of(gw, "GET", "/api/touchpoints", with_cookie(gw, session_id)) == 200
    assert await status_of(gw, "GET", "/metrics", with_cookie(gw, session_id)) == 200
    # Logged in already: the login page sends you on.
    assert await status_of(gw, "GET", "/login", with_cookie(gw, session_id)) == 303


async def test_behind_a_tls_proxy_the_session_cookie_is_secure(gw: RunningGateway) -> None:
    """The admin listener speaks plain HTTP; a TLS proxy in front of it says the browser came
    over HTTPS. The cookie must then be Secure, or it would also go out over plain HTTP."""
    headers = {**host_origin(gw), "X-Forwarded-Proto": "https"}
    async with gw.session.post(
        gw.admin_url + "/login", data={"token": TOKEN}, headers=headers, allow_redirects=False
    ) as resp:
        assert resp.status == 303
        (cookie,) = resp.headers.getall("Set-Cookie")
    assert "secure" in {part.strip().lower() for part in cookie.split(";")[1:]}


async def _login_cookie_flags(gw: RunningGateway, *headers: tuple[str, str]) -> set[str]:
    """The session cookie's attribute names, for a login sent with ``headers`` (in order, a
    name twice as two lines)."""
    sent = CIMultiDict(host_origin(gw))
    for name, value in headers:
        sent.add(name, value)
    async with gw.session.post(
        gw.admin_url + "/login", data={"token": TOKEN}, headers=sent, allow_redirects=False
    ) as resp:
        assert resp.status == 303
        (cookie,) = resp.headers.getall("Set-Cookie")
    return {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}


TRUSTED_FORWARDED = '[proxy]\ntrusted_proxies = ["127.0.0.1/32"]\ntrusted_header = "forwarded"\n'
TRUSTED_X_FORWARDED = '[proxy]\ntrusted_proxies = ["127.0.0.1/32"]\n'


@pytest.mark.parametrize(
    ("config", "headers", "secure"),
    [
        # A trusted proxy writing RFC 7239 Forwarded alone (HAProxy's option forwarded): the
        # browser came over HTTPS, and until 2026-12-07 the cookie went without Secure.
        (TRUSTED_FORWARDED, [("Forwarded", "for=203.0.113.7;proto=https")], True),
        (TRUSTED_FORWARDED, [("Forwarded", "for=203.0.113.7;proto=http")], False),
        # Under "forwarded" the X-Forwarded-* a front proxy passes on from the visitor are not
        # read: the trusted proxy's Forwarded says plain http.
        (
            TRUSTED_FORWARDED,
            [("X-Forwarded-Proto", "https"), ("Forwarded", "for=203.0.113.7;proto=http")],
            False,
        ),
        # A trusted proxy that adds its line after the visitor's (HAProxy's add-header): its
        # https is the scheme, not the visitor's own http on the first line.
        (
            TRUSTED_X_FORWARDED,
            [
                ("X-Forwarded-For", "203.0.113.7"),
                ("X-Forwarded-Proto", "http"),
                ("X-Forwarded-Proto", "https"),
            ],
            True,
        ),
        (
            TRUSTED_X_FORWARDED,
            [
                ("X-Forwarded-For", "203.0.113.7"),
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Proto", "http"),
            ],
            False,
        ),
        # Two trusted proxies: the first one's, how the browser reached it.
        (
            '[proxy]\ntrusted_proxies = ["127.0.0.1/32", "10.0.0.2/32"]\n',
            [("X-Forwarded-For", "203.0.113.7, 10.0.0.2"), ("X-Forwarded-Proto", "https, http")],
            True,
        ),
    ],
    ids=[
        "forwarded_https",
        "forwarded_http",
        "forwarded_not_x_forwarded",
        "appended_line_https",
        "appended_line_http",
        "two_proxies",
    ],
)
async def test_behind_a_trusted_proxy_the_cookie_is_secure_as_the_proxy_reads_the_scheme(
    start_gateway, upstream_server, config: str, headers: list[tuple[str, str]], secure: bool
) -> None:
    """From a peer in ``proxy.trusted_proxies`` the session cookie's ``Secure`` follows the
    scheme the proxy takes for the visitor's (``proxy.trusted_header``: its ``Forwarded``, or
    the ``X-Forwarded-Proto`` value at the client's place), not the first ``X-Forwarded-Proto``
    value whoever wrote it."""
    gw = await start_gateway(await upstream_server(origin()), config)
    assert ("secure" in await _login_cookie_flags(gw, *headers)) is secure


@pytest.mark.parametrize(
    ("token", "why", "message"),
    [
        ("wrong", "wrong", "Wrong admin token."),
        (TOKEN[:-1], "wrong", "Wrong admin token."),
        (TOKEN + "x", "wrong", "Wrong admin token."),
        ("", "empty", "token: enter the admin token."),
        # Spaces alone (a space bar pressed in the field) are no token: they were a wrong one,
        # counted towards a lockout.
        ("   ", "empty", "token: enter the admin token."),
        ("\t\n", "empty", "token: enter the admin token."),
    ],
)
async def test_a_refused_login_redirects_to_the_login_page_which_says_why(
    gw: RunningGateway, token: str, why: str, message: str
) -> None:
    """The refusal was the POST's own page (401): reloaded, the browser asked to send the form
    again. Post/Redirect/Get: a 303 to the login page, whose address says why (never the
    token), and whose reload is a GET."""
    async with gw.session.post(
        gw.admin_url + "/login", data={"token": token}, headers=host_origin(gw), allow_redirects=False
    ) as resp:
        assert resp.status == 303 and resp.headers["Location"] == f"/login?why={why}"
        assert "Set-Cookie" not in resp.headers
    async with gw.session.get(gw.admin_url + f"/login?why={why}") as resp:
        assert resp.status == 200 and resp.headers["Content-Security-Policy"] == CSP
        page = await resp.text()
    assert f'<p class="error" role="alert">{message}</p>' in page and 'name="token"' in page
    assert len(gw.admin.app[SESSIONS_KEY]) == 0


@pytest.mark.parametrize("query", ["", "?why=nonsense", "?why=", "?why=%3Cb%3E"])
async def test_the_login_page_says_nothing_it_was_not_given_a_reason_for(
    gw: RunningGateway, query: str
) -> None:
    async with gw.session.get(gw.admin_url + "/login" + query) as resp:
        assert resp.status == 200
        page = await resp.text()
    assert 'role="alert"' not in page and 'role="status"' not in page and "<b>" not in page


@pytest.mark.parametrize(
    ("token", "headers", "status", "message"),
    [
        (TOKEN, {}, 403, "must be sent from the dashboard"),
        (TOKEN, {"Origin": "https://evil.example"}, 403, "must be sent from the dashboard"),
        (TOKEN, {"Origin": "null"}, 403, "must be sent from the dashboard"),
        (TOKEN, {"Sec-Fetch-Site": "cross-site"}, 403, "must be sent from the dashboard"),
        (TOKEN, {"Sec-Fetch-Site": "same-site"}, 403, "must be sent from the dashboard"),
        (TOKEN, {"Origin": "null", "Sec-Fetch-Site": "cross-site"}, 403, "must be sent from the dashboard"),
        (
            TOKEN,
            {"Origin": "http://evil.example", "Sec-Fetch-Site": "same-origin"},
            403,
            "must be sent from the dashboard",
        ),
    ],
)
async def test_login_refusals(
    gw: RunningGateway, token: str, headers: Any, status: int, message: str
) -> None:
    sent = host_origin(gw) if headers == "same" else headers
    async with gw.session.post(
        gw.admin_url + "/login", data={"token": token}, headers=sent, allow_redirects=False
    ) as resp:
        assert resp.status == status
        assert "Set-Cookie" not in resp.headers
        assert resp.headers["Content-Security-Policy"] == CSP
        assert message in await resp.text()
    assert len(gw.admin.app[SESSIONS_KEY]) == 0


_MULTIPART = "multipart/form-data; boundary=b0undary"


def _multipart(*fields: tuple[str, bytes]) -> bytes:
    """A multipart/form-data body (boundary as in ``_MULTIPART``) of these fields, in order."""
    parts = [
        b'--b0undary\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % (name.encode(), value)
        for name, value in fields
    ]
    return b"".join(parts) + b"--b0undary--\r\n"


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"token=\xff", "application/x-www-form-urlencoded", "body: expected a form"),
        (b"token=x", "application/x-www-form-urlencoded; charset=bogus", "body: expected a form"),
        (b"token=x", "multipart/form-data", "body: expected a form"),
        (b"token=x", "multipart/form-data; boundary=zz", "body: expected a form"),
        # A script's JSON or plain text: was told "token: enter the admin token" (it had).
        (b'{"token": "' + TOKEN.encode() + b'"}', "application/json", "body: expected a form"),
        (b"token=" + TOKEN.encode(), "text/plain", "body: expected a form"),
        # Led by a _charset_ field (RFC 7578, 4.6), which aiohttp misreads: was a 500.
        (_multipart(("_charset_", b"utf-8"), ("token", TOKEN.encode())), _MULTIPART, "body: expected a form"),
        (
            _multipart(("_charset_", b"x" * 40), ("token", TOKEN.encode())),
            _MULTIPART,
            "body: expected a form",
        ),
    ],
)
async def test_login_with_a_malformed_form(
    gw: RunningGateway, body: bytes, content_type: str, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    headers = {**host_origin(gw), "Content-Type": content_type}
    async with gw.session.post(
        gw.admin_url + "/login", data=body, headers=headers, allow_redirects=False
    ) as resp:
        assert resp.status == 400 and "Set-Cookie" not in resp.headers
        assert resp.headers["Content-Type"].startswith("text/html")
        assert message in await resp.text()
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]


async def test_login_with_a_body_that_does_not_decode(gw: RunningGateway) -> None:
    headers = {
        **host_origin(gw),
        "Content-Type": "application/x-www-form-urlencoded",
        "Content-Encoding": "gzip",
    }
    async with gw.session.post(
        gw.admin_url + "/login", data=b"abcd", headers=headers, allow_redirects=False
    ) as resp:
        assert resp.status == 400 and "Set-Cookie" not in resp.headers
        assert "body: cannot decode its Content-Encoding" in await resp.text()


async def test_login_with_an_oversized_form(gw: RunningGateway) -> None:
    """The login page answers as the login page, even for a form larger than the listener takes
    (was the API's JSON 413, shown raw in the browser)."""
    headers = {**host_origin(gw), "Content-Type": "application/x-www-form-urlencoded"}
    body = io.BytesIO(b"token=" + b"x" * MAX_BODY)
    async with gw.session.post(
        gw.admin_url + "/login", data=body, headers=headers, allow_redirects=False
    ) as resp:
        assert resp.status == 413 and "Set-Cookie" not in resp.headers
        assert resp.headers["Content-Type"].startswith("text/html")
        assert resp.headers["Content-Security-Policy"] == CSP
        assert "body: larger than the dashboard takes (1,048,576 bytes" in await resp.text()
    assert len(gw.admin.app[SESSIONS_KEY]) == 0


async def test_login_with_a_multipart_form(gw: RunningGateway) -> None:
    """A script may sign in with ``curl -F token=…``: a multipart form works as the page's."""
    form = aiohttp.FormData()
    form.add_field("token", TOKEN)
    form.add_field("note", b"x", filename="x.txt")  # forces multipart/form-data
    async with gw.session.post(
        gw.admin_url + "/login", data=form, headers=host_origin(gw), allow_redirects=False
    ) as resp:
        assert resp.status == 303 and resp.headers["Location"] == "/dashboard"


@pytest.mark.parametrize("path", ["/login", "/logout"])
async def test_an_origin_that_is_no_url_is_refused(gw: RunningGateway, path: str) -> None:
    headers = {"Origin": "http://[::1", "Sec-Fetch-Site": "same-origin"}
    async with gw.session.post(
        gw.admin_url + path, data={"token": TOKEN}, headers=headers, allow_redirects=False
    ) as resp:
        assert resp.status == 403 and "must be sent from the dashboard" in await resp.text()


@pytest.mark.parametrize(
    "headers",
    [{"Sec-Fetch-Site": "same-origin"}, {"Origin": "null", "Sec-Fetch-Site": "same-origin"}],
)
async def test_login_by_fetch_metadata(gw: RunningGateway, headers: dict[str, str]) -> None:
    """What browsers send for a same-origin form when they withhold the Origin."""
    async with gw.session.post(
        gw.admin_url + "/login", data={"token": TOKEN}, headers=headers, allow_redirects=False
    ) as resp:
        assert resp.status == 303 and cookie_of(gw) in resp.cookies


async def test_cookie_session_only_reads(gw: RunningGateway) -> None:
    session_id = await login(gw)
    assert await status_of(gw, "GET", "/api/users/alice", with_cookie(gw, session_id)) == 200
    async with gw.session.delete(
        gw.admin_url + "/api/users/alice", headers=with_cookie(gw, session_id)
    ) as resp:
        assert resp.status == 403
        body = await resp.json()
    assert body["ok"] is False and "Bearer" in body["error"]
    assert await status_of(gw, "GET", "/api/users/alice", AUTH) == 200  # nothing was erased
    # A forged or stale cookie is no session at all.
    for fake in ("x" * 43, session_id[:-1], ""):
        assert await status_of(gw, "GET", "/api/touchpoints", with_cookie(gw, fake)) == 401
        assert await status_of(gw, "GET", "/dashboard", with_cookie(gw, fake)) == 303


SUMMARY = f"/api/dashboard/summary?since={PERIOD['since']}&until={PERIOD['until']}"


@pytest.mark.parametrize("site", ["same-site", "cross-site", "not-a-value"])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", SUMMARY),
        ("GET", "/api/attribution?model=data_driven&format=csv"),
        ("HEAD", "/api/users/alice"),
        ("GET", "/metrics"),
        ("DELETE", "/api/users/alice"),
    ],
)
async def test_a_session_counts_only_from_the_dashboard_s_own_pages(
    gw: RunningGateway, site: str, method: str, path: str
) -> None:
    """A page on another port of this host (the site behind the public listener: 127.0.0.1:8080
    beside 127.0.0.1:9090) is the same site, so SameSite=Strict sends it the cookie: it could
    make a signed-in operator's browser run report after report. The browser says where a
    request came from (``Sec-Fetch-Site``, which no page can set)."""
    session_id = await login(gw)
    async with gw.session.request(
        method, gw.admin_url + path, headers=with_cookie(gw, session_id, **{"Sec-Fetch-Site": site})
    ) as resp:
        assert resp.status == 403
        if method != "HEAD":
            body = await resp.json()
            assert body["ok"] is False and "dashboard's own pages" in body["error"]
            assert "Bearer" in body["error"]
    assert await status_of(gw, "GET", "/api/users/alice", AUTH) == 200  # nothing was erased


async def test_a_session_cookie_s_refusals_are_documented(gw: RunningGateway) -> None:
    """A signed-in dashboard's cookie alone is refused with 403 on a write, and on a read a page
    of another origin made (README, Dashboard): a client built from the document met a status
    it did not list. Every operation behind the token lists it, as it lists 401 and 429."""
    doc = openapi_document()["paths"]
    behind_token = [
        (path, method, op)
        for path, methods in doc.items()
        for method, op in methods.items()
        if op.get("security") != []
    ]
    assert len(behind_token) >= 20
    for path, method, op in behind_token:
        assert "403" in op["responses"], f"{method.upper()} {path}: 403 undocumented"
    session_id = await login(gw)
    for method, path, template, headers in [
        ("delete", "/api/users/alice", "/api/users/{user_id}", with_cookie(gw, session_id)),
        (
            "get",
            "/api/touchpoints",
            "/api/touchpoints",
            with_cookie(gw, session_id, **{"Sec-Fetch-Site": "same-site"}),
        ),
    ]:
        async with gw.session.request(method, gw.admin_url + path, headers=headers) as resp:
            assert resp.status == 403
            body = await resp.json()
        Draft202012Validator(response_schema(template, 403, method)).validate(body)


@pytest.mark.parametrize("site", ["same-origin", "none", None])
async def test_a_session_counts_on_the_dashboard_s_own_requests(gw: RunningGateway, site: str | None) -> None:
    """The page's own fetches and downloads (same-origin), a URL the operator typed or
    bookmarked (none), and clients that send no fetch metadata at all."""
    fetch = {"Sec-Fetch-Site": site} if site else {}
    session_id = await login(gw)
    for path in (SUMMARY, "/api/attribution?format=csv", "/dashboard"):
        assert await status_of(gw, "GET", path, with_cookie(gw, session_id, **fetch)) == 200, path


@pytest.mark.parametrize("site", ["same-site", "cross-site"])
async def test_bearer_requests_are_not_judged_by_where_they_came_from(gw: RunningGateway, site: str) -> None:
    assert await status_of(gw, "GET", SUMMARY, {**AUTH, "Sec-Fetch-Site": site}) == 200


async def test_the_dashboard_opened_from_another_page_asks_for_a_login(gw: RunningGateway) -> None:
    """A link (or a script's navigation) from a page on another port carries the cookie too, and
    the page's query picks its period and model: such a navigation finds no session, as a
    SameSite=Strict cookie already has none from another site, and no redirect loops."""
    session_id = await login(gw)
    elsewhere = with_cookie(gw, session_id, **{"Sec-Fetch-Site": "same-site"})
    async with gw.session.get(
        gw.admin_url + "/dashboard?from=2026-09-01&to=2026-11-30&model=data_driven",
        headers=elsewhere,
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303 and resp.headers["Location"] == "/login"
    async with gw.session.get(gw.admin_url + "/login", headers=elsewhere, allow_redirects=False) as resp:
        assert resp.status == 200 and 'name="token"' in await resp.text()
    typed = with_cookie(gw, session_id, **{"Sec-Fetch-Site": "none"})
    assert await status_of(gw, "GET", "/dashboard", typed) == 200


async def test_logout_ends_the_session(gw: RunningGateway) -> None:
    session_id = await login(gw)
    # A cross-site logout (or one without any origin) is refused and changes nothing.
    for headers in ({"Origin": "http://elsewhere.example"}, {}):
        assert await status_of(gw, "POST", "/logout", with_cookie(gw, session_id, **headers)) == 403
    assert await status_of(gw, "GET", "/api/touchpoints", with_cookie(gw, session_id)) == 200
    async with gw.session.post(
        gw.admin_url + "/logout",
        headers=with_cookie(gw, session_id, **host_origin(gw)),
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303 and resp.headers["Location"] == "/login?why=out"
        cleared = resp.headers["Set-Cookie"]
    assert cleared.startswith(f'{cookie_of(gw)}=""') and "Max-Age=0" in cleared
    # The login page says the sign-out took, as news, not as a refusal (it read as a first visit).
    async with gw.session.get(gw.admin_url + "/login?why=out") as resp:
        assert resp.status == 200
        assert '<p class="notice" role="status">You signed out.</p>' in await resp.text()
    assert await status_of(gw, "GET", "/api/touchpoints", with_cookie(gw, session_id)) == 401
    assert await status_of(gw, "GET", "/dashboard", with_cookie(gw, session_id)) == 303


async def test_an_ended_session_s_cookie_is_told_from_no_credential(gw: RunningGateway) -> None:
    """A script that read the API with the session's cookie, once the session had ended, was
    told "missing Authorization: Bearer <admin token>", as if it had sent nothing."""
    session_id = await login(gw)
    async with gw.session.post(
        gw.admin_url + "/logout",
        headers=with_cookie(gw, session_id, **host_origin(gw)),
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303
    async with gw.session.get(gw.admin_url + "/api/touchpoints", headers=with_cookie(gw, session_id)) as resp:
        assert resp.status == 401 and resp.headers["WWW-Authenticate"] == "Bearer"
        body = await resp.json()
    assert body["error"].startswith("the dashboard session of this cookie has ended ("), body
    assert "sign in again, or send Authorization: Bearer <admin token>" in body["error"]
    Draft202012Validator(response_schema("/api/touchpoints", 401)).validate(body)
    async with gw.session.get(gw.admin_url + "/api/touchpoints") as resp:
        assert resp.status == 401
        assert (await resp.json())["error"] == "missing Authorization: Bearer <admin token>"


async def test_a_login_ends_the_session_the_browser_still_sent(gw: RunningGateway) -> None:
    """A login from a browser that still held a live session (a second tab, a cookie planted by
    a site on another port of this host) started a new one and left the old one live until its
    expiry: two sessions for one browser, the older never ended."""
    first = await login(gw)
    async with gw.session.post(
        gw.admin_url + "/login",
        data={"token": TOKEN},
        headers=with_cookie(gw, first, **host_origin(gw)),
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303
        second = resp.cookies[cookie_of(gw)].value
    assert second != first
    assert await status_of(gw, "GET", "/api/touchpoints", with_cookie(gw, first)) == 401
    assert await status_of(gw, "GET", "/api/touchpoints", with_cookie(gw, second)) == 200


async def test_the_session_cookie_never_reaches_the_site(start_gateway, upstream_server) -> None:
    """A cookie is not scoped to a port: a browser signed in to the admin listener sends the
    session cookie to a public listener on the same host name too (127.0.0.1:9090 and :8080 by
    default). The proxy must not hand the site a live admin session."""
    seen: list[list[str]] = []

    async def page(request: web.Request) -> web.Response:
        seen.append(request.headers.getall("Cookie", []))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    gw = await start_gateway(await upstream_server(app))
    session_id = await login(gw)
    for sent in (
        f"site=1; {cookie_of(gw)}={session_id}; other=2",
        f"{cookie_of(gw)}={session_id}",
        f"{cookie_of(gw)}={session_id};site=1",
        "site=1; not_gw_admin_session=3",
        # Another gateway's on this host (its admin listener's port), and the name before
        # 2026-12-05: as live, for their listeners.
        "gw_admin_session_9091=x; site=1; gw_admin_session=y; gw_admin_session_port=4",
        # The session alone among empty pieces (a stray ";", as some clients write): no pair
        # is left, so no Cookie header goes on — an empty one, which the visitor did not
        # send, reached the site until 2026-12-06.
        f"{cookie_of(gw)}={session_id};",
        f";{cookie_of(gw)}={session_id}; ;",
    ):
        async with gw.session.get(gw.url + "/page", headers={"Cookie": sent}) as resp:
            assert resp.status == 200
    assert seen == [
        ["site=1; other=2"],
        [],
        ["site=1"],
        ["site=1; not_gw_admin_session=3"],
        ["site=1; gw_admin_session_port=4"],
        [],
        [],
    ]
    still = await status_of(gw, "GET", "/api/touchpoints", with_cookie(gw, session_id))
    assert still == 200  # still signed in


async def test_two_gateways_on_one_host_keep_their_sessions_apart(
    start_gateway, upstream_server, tmp_path
) -> None:
    """Two gateways' admin listeners on one host (staging beside production, two sites): a
    browser keeps cookies by host name, not port, and both were named gw_admin_session, so a
    login to the second replaced the first's cookie and signed the operator out there. One
    cookie jar, as a browser's (aiohttp's, too, ignores ports)."""
    site = await upstream_server(origin())
    first = await start_gateway(site)
    second = await start_gateway(site, f'[storage]\npath = "{tmp_path / "staging.db"}"\nnode = "staging"\n')
    assert first.admin.port != second.admin.port
    jar = aiohttp.CookieJar(unsafe=True)  # unsafe: it keeps no cookie of an IP address otherwise
    async with aiohttp.ClientSession(cookie_jar=jar) as browser:
        for gw in (first, second):
            async with browser.post(
                gw.admin_url + "/login", data={"token": TOKEN}, headers=host_origin(gw), allow_redirects=False
            ) as resp:
                assert resp.status == 303 and resp.headers["Location"] == "/dashboard"
        assert sorted(cookie.key for cookie in jar) == sorted(map(cookie_of, (first, second)))
        for gw in (first, second):
            async with browser.get(gw.admin_url + "/dashboard", allow_redirects=False) as resp:
                assert resp.status == 200, (gw.admin.port, resp.headers.get("Location"))
            async with browser.get(gw.admin_url + "/api/touchpoints") as resp:
                assert resp.status == 200, await resp.text()
        # Logging out of one leaves the other signed in.
        async with browser.post(
            second.admin_url + "/logout", headers=host_origin(second), allow_redirects=False
        ) as resp:
            assert resp.status == 303
        async with browser.get(second.admin_url + "/api/touchpoints") as resp:
            assert resp.status == 401
        async with browser.get(first.admin_url + "/api/touchpoints") as resp:
            assert resp.status == 200


@pytest.mark.parametrize(
    ("host", "name"),
    [
        ("127.0.0.1:9090", "gw_admin_session_9090"),
        ("[::1]:9091", "gw_admin_session_9091"),
        ("admin.example:09000", "gw_admin_session_9000"),
        # Without a port (a TLS proxy on 443, a listener on 80): the name before 2026-12-05.
        ("admin.example", "gw_admin_session"),
        ("[::1]", "gw_admin_session"),
        ("", "gw_admin_session"),
        ("admin.example:port", "gw_admin_session"),
    ],
)
def test_the_session_cookie_is_named_after_the_port_the_browser_used(host: str, name: str) -> None:
    assert cookie_name(host) == name


async def test_session_expires(gw: RunningGateway) -> None:
    sessions = gw.admin.app[SESSIONS_KEY]
    session_id = await login(gw)
    started = time.time()
    sessions.clock = lambda: started + 12 * 3600 - 60  # a minute before the end: still in
    assert await status_of(gw, "GET", "/api/touchpoints", with_cookie(gw, session_id)) == 200
    sessions.clock = lambda: started + 12 * 3600 + 60
    assert await status_of(gw, "GET", "/api/touchpoints", with_cookie(gw, session_id)) == 401
    assert await status_of(gw, "GET", "/dashboard", with_cookie(gw, session_id)) == 303
    assert len(sessions) == 0  # an expired session is dropped, not kept


async def test_a_session_that_ended_sends_to_a_login_that_says_so(gw: RunningGateway) -> None:
    """The login page read alike on a first visit and after a session ended (expired, the
    gateway restarted, a logout in another tab): the operator was not told why."""
    sessions = gw.admin.app[SESSIONS_KEY]
    session_id = await login(gw)
    started = time.time()
    sessions.clock = lambda: started + 12 * 3600 + 60  # expired
    period = "/dashboard?from=2026-11-01&to=2026-11-10"
    for path, expected in [
        ("/dashboard", {"why": ["ended"]}),
        (period, {"why": ["ended"], "next": [period]}),
    ]:
        async with gw.session.get(
            gw.admin_url + path, headers=with_cookie(gw, session_id), allow_redirects=False
        ) as resp:
            assert resp.status == 303 and asked(resp.headers["Location"]) == ("/login", expected), path
    # A cookie no session ever had (a restart forgets them all): ended too.
    assert await status_of(gw, "GET", "/dashboard", with_cookie(gw, "unknown")) == 303
    async with gw.session.get(
        gw.admin_url + "/dashboard", headers=with_cookie(gw, "unknown"), allow_redirects=False
    ) as resp:
        assert resp.headers["Location"] == "/login?why=ended"
    async with gw.session.get(gw.admin_url + "/login?why=ended") as resp:
        page = await resp.text()
    assert '<p class="notice" role="status">Your session ended; sign in again.</p>' in page
    # A first visit (no cookie), or a link from another page (its cookie is not ours to judge).
    async with gw.session.get(gw.admin_url + "/dashboard", allow_redirects=False) as resp:
        assert resp.headers["Location"] == "/login"
    elsewhere = with_cookie(gw, session_id, **{"Sec-Fetch-Site": "cross-site"})
    async with gw.session.get(gw.admin_url + period, headers=elsewhere, allow_redirects=False) as resp:
        assert resp.headers["Location"] == "/login"
    # Signed in again (another tab), the login page sends on, whatever it was to say.
    sessions.clock = time.time
    fresh = await login(gw)
    assert await status_of(gw, "GET", "/login?why=ended", with_cookie(gw, fresh)) == 303


async def test_session_hours_is_configurable(start_gateway, upstream_server) -> None:
    gw = await start_gateway(await upstream_server(origin()), "[admin]\nsession_hours = 1\n")
    async with gw.session.post(
        gw.admin_url + "/login", data={"token": TOKEN}, headers=host_origin(gw), allow_redirects=False
    ) as resp:
        assert "Max-Age=3600" in resp.headers["Set-Cookie"]


@pytest.mark.parametrize("path", ["/login", "/dashboard", "/healthz", "/api/touchpoints", "/static/data.js"])
async def test_security_headers_everywhere(gw: RunningGateway, path: str) -> None:
    session_id = await login(gw)
    async with gw.session.get(gw.admin_url + path, headers=with_cookie(gw, session_id)) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Security-Policy"] == CSP
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'self'" in CSP and "unsafe" not in CSP


@pytest.mark.parametrize(
    ("method", "path", "auth", "status"),
    [
        ("GET", "/healthz", "none", 200),
        ("GET", "/api/users/alice", "bearer", 200),
        ("HEAD", "/api/users/alice", "cookie", 200),
        ("GET", "/api/attribution?format=csv", "cookie", 200),  # a streamed download
        ("GET", "/metrics", "bearer", 200),
        ("GET", "/api/openapi.json", "none", 200),
        ("GET", "/static/data.js", "none", 200),
        ("GET", "/login", "none", 200),
        ("GET", "/", "none", 302),
        ("GET", "/dashboard", "none", 303),
        ("GET", "/api/users/alice", "none", 401),
        ("DELETE", "/api/users/alice", "cookie", 403),
        ("GET", "/nowhere", "bearer", 404),
        ("PATCH", "/api/touchpoints", "bearer", 405),
    ],
)
async def test_admin_answers_do_not_name_the_server(
    gw: RunningGateway, method: str, path: str, auth: str, status: int
) -> None:
    """aiohttp adds ``Server: Python/3.x aiohttp/3.y`` to every answer it is not told otherwise:
    the versions, for anyone who reaches the listener, to look up known flaws by."""
    headers = {"bearer": AUTH, "cookie": with_cookie(gw, await login(gw)), "none": {}}[auth]
    async with gw.session.request(
        method, gw.admin_url + path, headers=headers, allow_redirects=False
    ) as resp:
        assert resp.status == status
        assert "Server" not in resp.headers, resp.headers["Server"]


@pytest.mark.parametrize(
    ("method", "path", "auth"),
    [
        ("GET", "/api/users/alice", "bearer"),
        ("GET", "/api/users/alice", "cookie"),
        ("HEAD", "/api/users/alice", "cookie"),
        ("GET", f"/api/dashboard/summary?since={PERIOD['since']}&until={PERIOD['until']}", "cookie"),
        ("GET", "/api/attribution?format=csv", "cookie"),
        ("GET", "/api/touchpoints", "bearer"),
        ("GET", "/metrics", "bearer"),
        ("GET", "/api/users/nobody", "cookie"),  # a 404
        ("GET", "/api/users/alice", "none"),  # a 401
        ("DELETE", "/api/users/alice", "cookie"),  # a 403
        ("GET", "/dashboard", "cookie"),
        ("GET", "/login", "none"),
    ],
)
async def test_admin_answers_are_never_stored(gw: RunningGateway, method: str, path: str, auth: str) -> None:
    """Journeys, reports and downloads are personal data, and a journey's URL holds the raw user
    ID: a browser keeps an answer without ``Cache-Control`` in its disk cache, under its URL."""
    headers = {"bearer": AUTH, "cookie": with_cookie(gw, await login(gw)), "none": {}}[auth]
    async with gw.session.request(
        method, gw.admin_url + path, headers=headers, allow_redirects=False
    ) as resp:
        assert resp.headers.getall("Cache-Control") == ["no-store"], (resp.status, path)


async def test_static_files_may_be_cached_but_are_revalidated(gw: RunningGateway) -> None:
    async with gw.session.get(gw.admin_url + "/static/dashboard.js") as resp:
        assert resp.status == 200 and resp.headers.getall("Cache-Control") == ["no-cache"]


def _lab(colour: str) -> tuple[float, float, float]:
    """CIELAB (D65) of an sRGB ``#rrggbb``."""
    r, g, b = (int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5))
    r, g, b = (((c + 0.055) / 1.055) ** 2.4 if c > 0.04045 else c / 12.92 for c in (r, g, b))
    x = (r * 0.4124 + g * 0.3576 + b * 0.1805) / 0.95047
    y = r * 0.2126 + g * 0.7152 + b * 0.0722
    z = (r * 0.0193 + g * 0.1192 + b * 0.9505) / 1.08883
    fx, fy, fz = (v ** (1 / 3) if v > 0.008856 else 7.787 * v + 16 / 116 for v in (x, y, z))
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


async def test_every_channel_colour_is_told_apart_from_the_others(gw: RunningGateway) -> None:
    """The charts' twenty colours, one per built-in channel: the 4th and 12th (#9333ea and
    #7c3aed, 7 apart in CIELAB) were one purple, two channels that read as one in a stack."""
    async with gw.session.get(gw.admin_url + "/static/charts.js") as resp:
        script = await resp.text()
    palette = re.findall(r'"(#[0-9a-f]{6})"', script.split("const PALETTE = [", 1)[1].split("];", 1)[0])
    assert len(set(palette)) == 20, palette
    closest = min(
        (math.dist(_lab(a), _lab(b)), a, b) for i, a in enumerate(palette) for b in palette[i + 1 :]
    )
    assert closest[0] >= 15, closest  # CIE76: 2.3 just noticeable side by side; 7 read as one


STATIC = {
    "dashboard.js": "text/javascript",
    "data.js": "text/javascript",
    "charts.js": "text/javascript",
    "dashboard.css": "text/css",
}


@pytest.mark.parametrize(("name", "content_type"), STATIC.items())
async def test_static_files_served_without_a_session(
    gw: RunningGateway, name: str, content_type: str
) -> None:
    async with gw.session.get(f"{gw.admin_url}/static/{name}") as resp:
        assert resp.status == 200
        assert resp.content_type == content_type and resp.charset == "utf-8"
        assert len(await resp.read()) > 100


async def test_both_pages_name_an_icon_served_without_a_session(gw: RunningGateway) -> None:
    """Without one, a browser asked for /favicon.ico on every page: 401 before the login
    (an API path without a session), 404 after, a console error each time."""
    session_id = await login(gw)
    for path, headers in [("/login", {}), ("/dashboard", with_cookie(gw, session_id))]:
        async with gw.session.get(gw.admin_url + path, headers=headers, allow_redirects=False) as resp:
            assert resp.status == 200, path
            page = await resp.text()
        assert '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">' in page, path
    async with gw.session.get(gw.admin_url + "/static/favicon.svg") as resp:  # no session
        assert resp.status == 200 and resp.content_type == "image/svg+xml"
        assert (await resp.text()).startswith("<svg ")


async def test_favicon_ico_is_answered_with_no_icon_and_no_error(gw: RunningGateway) -> None:
    """A browser tab showing an admin JSON answer or the 404 page (which name no icon) asked for
    /favicon.ico: 401 without a session, 404 with one, an error in the console each time. It is
    now 204 No Content to both, and to HEAD: no icon, nothing logged, no asset of its own."""
    session_id = await login(gw)
    for method, headers in [
        ("GET", {}),
        ("GET", with_cookie(gw, session_id)),
        ("HEAD", {}),
        ("GET", AUTH),
    ]:
        async with gw.session.request(
            method, gw.admin_url + "/favicon.ico", headers=headers, allow_redirects=False
        ) as resp:
            assert resp.status == 204, (method, headers, resp.status)
            assert await resp.read() == b""
            assert resp.headers["Content-Security-Policy"] == CSP
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
    # Only that path: another at the root is still unknown.
    async with gw.session.get(gw.admin_url + "/favicon.png", headers=AUTH) as resp:
        assert resp.status == 404


@pytest.mark.parametrize("name", ["login.html", "dashboard.html", "nope.js", "..%2Fadmin.py", "vendor/x.js"])
async def test_unknown_static_is_404(gw: RunningGateway, name: str) -> None:
    async with gw.session.get(f"{gw.admin_url}/static/{name}") as resp:
        assert resp.status == 404
        assert (await resp.json())["ok"] is False


# The one URL allowed: the SVG namespace, an identifier that is never fetched.
_URL = re.compile(r"(?:https?:)?//[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+|@import|\burl\(")
_ALLOWED = {"http://www.w3.org"}


async def test_no_external_urls_in_anything_served(gw: RunningGateway) -> None:
    session_id = await login(gw)
    bodies = {}
    for path in ["/login", "/dashboard", "/static/favicon.svg", *(f"/static/{name}" for name in STATIC)]:
        async with gw.session.get(gw.admin_url + path, headers=with_cookie(gw, session_id)) as resp:
            assert resp.status == 200
            bodies[path] = await resp.text()
    page = bodies["/dashboard"]
    # Every script and stylesheet the page loads is one of ours, and each loads only ours.
    assert re.findall(r'(?:src|href)="([^"]+)"', page) == [
        "/static/favicon.svg",
        "/static/dashboard.css",
        "/static/dashboard.js",
    ]
    imports = re.findall(r'from "([^"]+)"', bodies["/static/dashboard.js"])
    assert sorted(imports) == ["./charts.js", "./data.js"]
    for path, body in bodies.items():
        found = set(_URL.findall(body)) - _ALLOWED
        assert not found, f"{path} refers to {found}"
        assert "<script>" not in body and " style=" not in body  # nothing inline: CSP would block it
    # A large period takes seconds: the page says so until its numbers are drawn.
    assert re.search(r'<p id="status"[^>]*>Computing the period', page)


async def test_summary_numbers(gw: RunningGateway) -> None:
    async with gw.session.get(
        gw.admin_url + "/api/dashboard/summary", params={**PERIOD, "model": "last_touch"}, headers=AUTH
    ) as resp:
        assert resp.status == 200
        body = await resp.json()
    Draft202012Validator(response_schema("/api/dashboard/summary", 200)).validate(body)
    assert body["totals"] == {"touchpoints": 10, "visitors": 8, "not_credited": 0, "conversions": 6}
    daily = {(r["day"], r["channel"]): (r["conversions"], r["value"]) for r in body["by_day"]}
    assert daily == {
        ("2026-11-03", "Email"): (1.0, 120.0),
        ("2026-11-04", "Organic Search"): (1.0, 40.0),
        ("2026-11-05", "Paid Social"): (1.0, 25.0),
        ("2026-11-07", "Paid Search"): (1.0, 60.0),
        ("2026-11-09", "Email"): (1.0, 30.0),
        ("2026-11-10", "Paid Search"): (1.0, 80.0),
    }
    models = {r["model"] for r in body["comparison"]}
    assert models == set(body["models"]) and len(models) == 8
    for model in models:  # every model shares out exactly the six conversions and 355.00 EUR
        rows = [r for r in body["comparison"] if r["model"] == model]
        assert sum(r["conversions"] for r in rows) == pytest.approx(6)
        assert sum(r["value"] for r in rows) == pytest.approx(355.0)
    first = {r["channel"]: r["value"] for r in body["comparison"] if r["model"] == "first_touch"}
    # alice's first touch was the ad on her other device
    assert first == {"Paid Search": 200.0, "Paid Social": 65.0, "Referral": 60.0, "Email": 30.0}
    # What data_driven learnt, beside the comparison: the six conversions' journeys and the one
    # that did not convert (duckduckgo's visitor), every channel of them, largest weight first.
    learnt = body["learnt"]
    assert (learnt["converting_journeys"], learnt["non_converting_journeys"]) == (6, 1)
    channels = [row["channel"] for row in learnt["channels"]]
    assert sorted(channels) == ["Email", "Organic Search", "Paid Search", "Paid Social", "Referral"]
    weights = [row["weight"] for row in learnt["channels"]]
    assert weights == sorted(weights, reverse=True) and sum(weights) == pytest.approx(1, abs=1e-5)
    assert all(0 < row["removal_effect"] <= 1 for row in learnt["channels"])
    assert [
        (c["name"], c["touchpoints"], c["visitors"], c["conversions"]) for c in body["top_campaigns"]
    ] == [
        ("winter-sale", 3, 3, 3),
        ("launch", 2, 2, 1),
    ]
    assert [(c["name"], c["touchpoints"], c["conversions"]) for c in body["top_creators"]] == [
        ("cr_anna", 2, 2),
        ("cr_ben", 1, 1),
    ]
    assert body["bots"] == {"scored": False, "verdicts": {"allow": 10}}
    assert body["conversion"] is None and body["conversion_names"] == ["purchase"]
    assert body["source"] == "local"  # no central.mirror_path: this node's own store
    assert body["population"] is None  # every population's credits
    # A population chosen: the conversions its touchpoints reach (those its credits share out)
    # beside every population's.
    cookie = await gw.api("/api/dashboard/summary", **PERIOD, population="cookie", part="counts")
    Draft202012Validator(response_schema("/api/dashboard/summary", 200)).validate(cookie)
    assert cookie["totals"] == {**body["totals"], "population_conversions": 6}
    assert cookie["population"] == "cookie"  # echoed, as the conversion name is
    none = await gw.api("/api/dashboard/summary", **PERIOD, population="no_consent", part="counts")
    assert none["totals"] == {**body["totals"], "population_conversions": 0}


async def test_the_top_tables_and_totals_count_the_landings_the_reports_credit(gw: RunningGateway) -> None:
    """A click farm's blocked landings (and one in review) neither rank a creator or campaign
    nor swell the totals: the top tables rank by the landings the reports credit
    (``attribution.verdicts``, default ``allow``) and say how many they leave out. An analyst's
    override counts as the reports count it."""
    farm = [f"{n:032x}" for n in range(100, 115)]
    blocked = [
        _tp(v, 2.0 + i / 100, "Paid Social", campaign="launch", creator_id="cr_farm", verdict="block")
        for i, v in enumerate(farm)
    ]
    review = _tp(f"{200:032x}", 2.5, "Paid Social", campaign="launch", creator_id="cr_ben", verdict="review")
    # Two of the farm's devices convert: a blocked landing touches no journey either.
    await gw.gateway.store.write([*blocked, review, _conv(farm[0], 2.8, 5.0), _conv(farm[1], 2.8, 5.0)])
    body = await gw.api("/api/dashboard/summary", **PERIOD, part="counts")
    Draft202012Validator(response_schema("/api/dashboard/summary", 200)).validate(body)
    assert body["totals"] == {"touchpoints": 10, "visitors": 8, "not_credited": 16, "conversions": 8}
    rows = [
        (c["name"], c["touchpoints"], c["visitors"], c["not_credited"], c["conversions"])
        for c in body["top_campaigns"]
    ]
    assert rows == [("winter-sale", 3, 3, 0, 3), ("launch", 2, 2, 16, 1)]
    rows = [
        (c["name"], c["touchpoints"], c["visitors"], c["not_credited"], c["conversions"])
        for c in body["top_creators"]
    ]
    assert rows == [("cr_anna", 2, 2, 0, 2), ("cr_ben", 1, 1, 1, 1), ("cr_farm", 0, 0, 15, 0)]
    assert body["landed"] == {"campaigns": 2, "creators": 3}
    assert body["not_credited"] == {"campaigns": 16, "creators": 16}
    assert body["bots"]["verdicts"] == {"allow": 10, "block": 15, "review": 1}
    # An analyst lets one farm click through, and blocks one of cr_anna's: counted as the
    # reports count them (the override wins), in the ranking too.
    anna = (await gw.api("/api/touchpoints", **PERIOD, creator_id="cr_anna"))["items"][0]["id"]
    for touchpoint, verdict in ((blocked[0].id, "allow"), (anna, "block")):
        async with gw.session.post(
            f"{gw.admin_url}/api/touchpoints/{touchpoint}/verdict",
            json={"verdict": verdict, "analyst": "ana", "reason": "checked"},
            headers=AUTH,
        ) as resp:
            assert resp.status == 200, await resp.text()
    body = await gw.api("/api/dashboard/summary", **PERIOD, part="counts")
    assert body["totals"] == {"touchpoints": 10, "visitors": 9, "not_credited": 16, "conversions": 8}
    rows = [
        (c["name"], c["touchpoints"], c["visitors"], c["not_credited"], c["conversions"])
        for c in body["top_creators"]
    ]
    assert rows == [("cr_anna", 1, 1, 1, 1), ("cr_ben", 1, 1, 1, 1), ("cr_farm", 1, 1, 14, 1)]
    rows = [(c["name"], c["touchpoints"], c["not_credited"], c["conversions"]) for c in body["top_campaigns"]]
    assert rows == [("launch", 3, 15, 2), ("winter-sale", 3, 0, 3)]


async def test_summary_parts_add_up_to_the_whole(gw: RunningGateway) -> None:
    """The page asks for each part alone (the quick ones draw first): each has the header and
    its own keys only, with the numbers of the whole summary."""
    params = {**PERIOD, "model": "time_decay"}
    whole = await gw.api("/api/dashboard/summary", **params)
    header = {"ok", "since", "until", "model", "models", "conversion", "population", "source"}
    keys = {
        "counts": {
            "conversion_names",
            "totals",
            "top_campaigns",
            "top_creators",
            "landed",
            "not_credited",
            "bots",
            "populations",
        },
        "daily": {"days", "by_day"},
        "models": {"comparison", "learnt"},
    }
    assert set(whole) == header.union(*keys.values())
    schema = response_schema("/api/dashboard/summary", 200)
    # The document says what each part answers, as it answers it (no more, no less).
    assert [set(choice["required"]) for choice in schema["anyOf"]] == list(keys.values())
    validator = Draft202012Validator(schema)
    for part, own in keys.items():
        body = await gw.api("/api/dashboard/summary", part=part, **params)
        validator.validate(body)
        assert set(body) == header | own and body["source"] == "local"  # every part says it
        assert {key: body[key] for key in body} == {key: whole[key] for key in body}
    assert whole["by_day"] and whole["comparison"] and whole["top_campaigns"]  # the test compares numbers
    async with gw.session.get(
        gw.admin_url + "/api/dashboard/summary?part=counts&part=daily", headers=AUTH
    ) as resp:
        assert resp.status == 400 and "part: given 2 times" in (await resp.json())["error"]


async def test_the_summary_s_default_since_stays_in_range(gw: RunningGateway) -> None:
    body = await gw.api("/api/dashboard/summary", until="1970-01-05", part="counts")
    assert (body["since"], body["until"]) == ("1970-01-01", "1970-01-05"), body


async def test_summary_of_an_empty_period(gw: RunningGateway) -> None:
    body = await gw.api("/api/dashboard/summary", since="2025-01-01", until="2025-01-08")
    assert body["ok"] is True and body["by_day"] == body["comparison"] == body["top_campaigns"] == []
    assert body["bots"]["verdicts"] == {} and body["totals"]["conversions"] == 0


async def test_summary_offers_only_conversion_names_it_accepts(gw: RunningGateway) -> None:
    long = _conv(f"{9:032x}", 5.0, 1.0)
    await gw.gateway.store.write([dataclasses.replace(long, name="signup-" + "x" * 250)])
    body = await gw.api("/api/dashboard/summary", **PERIOD)
    assert body["conversion_names"] == ["purchase"] and body["totals"]["conversions"] == 7


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"model": "best"}, "model: expected one of first_touch"),
        ({"since": "2026-11-01T00:00:00Z"}, "since: expected a date like 2026-11-01"),
        ({"until": "soon"}, "until: expected a date"),
        (
            {"since": "2026-11-05", "until": "2026-11-05"},
            "since: must be before until (2026-11-05 >= 2026-11-05)",
        ),
        ({"since": "2026-01-01", "until": "2026-11-05"}, "since..until: must span 1..92 days"),
        ({"days": "7"}, "unknown query parameter 'days'"),
        ({"conversion": "x" * 201}, "conversion: expected a conversion name (1..200 printable characters"),
        ({"conversion": " purchase"}, "characters, no spaces around them, as conversions are recorded)"),
        ({"conversion": "purchase\t"}, "conversion: expected a conversion name"),
        ({"conversion": "sign\nup"}, "conversion: expected a conversion name"),
        ({"conversion": ""}, "conversion: expected a conversion name"),  # as /api/attribution
        ({"part": "charts"}, "part: expected one of counts, daily, models, got 'charts'"),
        ({"since": "2026-W44-1"}, "since: expected a date like 2026-11-01"),  # an ISO week date
        ({"part": ""}, "part: expected one of counts, daily, models, got ''"),
        ({"until": "0001-01-05"}, "until: expected a date from 1970-01-01 to 9999-12-31, got '0001-01-05'"),
        ({"until": "0001-01-01"}, "until: expected a date from 1970-01-01 to 9999-12-31"),
        ({"since": "0001-01-30", "until": "0001-02-01"}, "until: expected a date from 1970-01-01"),
        ({"since": "0001-01-30", "until": "1970-01-02"}, "since: expected a date from 1970-01-01"),
        (
            {"since": "9999-12-31", "until": "1970-01-02"},
            "since: must be before until (9999-12-31 >= 1970-01-02)",
        ),
        # The default ends said as the reports say them: not "must span 1..92 days, got -2912102".
        ({"until": "1970-01-01"}, "until: must be after 1970-01-01 (the default since is its earliest)"),
        ({"since": "9999-12-30"}, "since: must be before until (9999-12-30 >= "),  # until: tomorrow
    ],
)
async def test_summary_errors(gw: RunningGateway, params: dict[str, str], message: str) -> None:
    async with gw.session.get(gw.admin_url + "/api/dashboard/summary", params=params, headers=AUTH) as resp:
        assert resp.status == 400
        body = await resp.json()
    assert message in body["error"]
    Draft202012Validator(response_schema("/api/dashboard/summary", 400)).validate(body)
    assert await status_of(gw, "GET", "/api/dashboard/summary", {}) == 401


async def test_the_page_knows_the_report_time_zone(start_gateway, upstream_server) -> None:
    """The page picks its default days ("today") in ``attribution.timezone``, as the summary
    cuts them, and says which zone its days are in."""
    gw = await start_gateway(
        await upstream_server(origin()), '[attribution]\ntimezone = "Pacific/Auckland"\n'
    )
    session_id = await login(gw)
    async with gw.session.get(gw.admin_url + "/dashboard", headers=with_cookie(gw, session_id)) as resp:
        assert resp.status == 200
        page = await resp.text()
    assert 'data-timezone="Pacific/Auckland"' in page
    assert "<span data-timezone-name>Pacific/Auckland</span>" in page
    # The form's days are the zone's: 1 January 1970 began before 1970 there (at 12:00Z the
    # day before), so the page says so in its own words rather than send a since refused.
    assert 'data-first-day="1970-01-02" data-last-day="9999-12-30"' in page


async def test_a_login_goes_back_to_the_period_it_interrupted(gw: RunningGateway) -> None:
    """Signed out while choosing a period (the session expired, the gateway restarted): the
    login form carries the page's address and goes back to it; never to any other page."""
    wanted = "/dashboard?from=2026-11-01&to=2026-11-10&model=data_driven&conversion=purchase"
    async with gw.session.get(gw.admin_url + wanted, allow_redirects=False) as resp:
        assert resp.status == 303
        back = resp.headers["Location"]
    login_path, _, query = back.partition("?")
    assert login_path == "/login" and urllib.parse.parse_qs(query) == {"next": [wanted]}
    async with gw.session.get(gw.admin_url + back) as resp:
        page = await resp.text()
    assert '<input type="hidden" name="next" value="/dashboard?from=2026-11-01&amp;to=2026-11-10&amp;' in page
    form = {"token": TOKEN, "next": wanted}
    async with gw.session.post(  # a wrong token keeps it in the login page it redirects to
        gw.admin_url + "/login",
        data={**form, "token": "wrong"},
        headers=host_origin(gw),
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303
        refused = resp.headers["Location"]
    assert asked(refused) == ("/login", {"why": ["wrong"], "next": [wanted]})
    async with gw.session.get(gw.admin_url + refused) as resp:
        page = await resp.text()
    assert "Wrong admin token." in page and 'name="next" value="/dashboard?from=2026-11-01' in page
    async with gw.session.post(
        gw.admin_url + "/login", data=form, headers=host_origin(gw), allow_redirects=False
    ) as resp:
        assert resp.status == 303 and resp.headers["Location"] == wanted
        session_id = resp.cookies[cookie_of(gw)].value
    # Signed in already, the login page sends you on to it too.
    async with gw.session.get(
        gw.admin_url + back, headers=with_cookie(gw, session_id), allow_redirects=False
    ) as resp:
        assert resp.status == 303 and resp.headers["Location"] == wanted
    for elsewhere in [
        "https://evil.example/dashboard",
        "//evil.example/dashboard",
        "/api/users/alice",
        "/dashboard/../api/touchpoints",
        "/dashboard?from=2026-11-01#x",
        "/dashboard?a=\r\nSet-Cookie: x=1",
    ]:
        async with gw.session.post(
            gw.admin_url + "/login",
            data={**form, "next": elsewhere},
            headers=host_origin(gw),
            allow_redirects=False,
        ) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/dashboard", elsewhere


async def test_try_again_waits_for_the_report_the_page_gave_up_on(gw: RunningGateway) -> None:
    """The page gives up on a part at its deadline and offers **Try again**: the report it gave
    up on is still queued or computed on the gateway, and asked again, the part gets that
    report's answer (computed once), not a second run queued behind it. A part of another
    population is another report."""
    reports = gw.gateway.admin_app[REPORTING_KEY].reports
    params = {**PERIOD, "model": "linear", "part": "daily"}
    async with holding(reports):  # a long report (or a hung worker) before it: the part waits
        before = reports.report
        given_up = asyncio.create_task(gw.api("/api/dashboard/summary", **params))
        for _ in range(500):  # until its report is queued
            if reports._shared:
                break
            await asyncio.sleep(0.01)
        given_up.cancel()  # the page's deadline: it aborts its request
        with pytest.raises(asyncio.CancelledError):
            await given_up
        again = asyncio.create_task(gw.api("/api/dashboard/summary", **params))  # Try again
        await until_shared(gw, 1)
        other = asyncio.create_task(gw.api("/api/dashboard/summary", **params, population="cookieless"))
        for _ in range(500):
            if len(reports._shared) == 2:
                break
            await asyncio.sleep(0.01)
    body, cookieless = await again, await other
    assert body["by_day"] and cookieless["ok"]
    assert reports.report - before == 2  # the part once, the other population's once
    assert await reports_shared(gw) == 1
    assert (await gw.api("/api/dashboard/summary", **params))["by_day"] == body["by_day"]


async def _ask(session: aiohttp.ClientSession, base: str, path: str, **params: str) -> tuple[int, Any]:
    async with session.get(base + path, params=params) as resp:
        return resp.status, await resp.json()


async def test_a_day_that_begins_before_the_earliest_report_time_is_refused_east_of_utc(tmp_path) -> None:
    """1 January 1970 begins at 1969-12-31T15:00Z in Tokyo, before the earliest moment the
    reports read: the summary answered 200 for it (what it learnt said ``since``
    1969-12-31T15:00:00Z) while the page's download links to ``/api/attribution…`` with the
    same days answered 400. Now the summary refuses it alike, naming the zone's first day, and a
    default since never goes before it. The server's own clock zone (``TZ``) is not the
    reports': with ``attribution.timezone`` left at UTC the day is taken, TZ=Asia/Tokyo or not."""
    for zone in ("Asia/Tokyo", "UTC"):
        cfg = tmp_path / f"{zone.replace('/', '-')}.toml"
        await asyncio.to_thread(
            cfg.write_text,
            '[proxy]\nlisten = "127.0.0.1:0"\nupstream = "http://127.0.0.1:9"\nworkers = 1\n'
            f'[admin]\nlisten = "127.0.0.1:0"\n[storage]\npath = "{zone.replace("/", "-")}.db"\n'
            f'[attribution]\ntimezone = "{zone}"\n',
        )
        gw = await GatewayProcess.start(cfg, env={"TZ": "Asia/Tokyo"})
        try:
            async with aiohttp.ClientSession(headers=AUTH) as session:
                ask = functools.partial(_ask, session, gw.admin)
                first = {"since": "1970-01-01", "until": "1970-01-08"}
                status, body = await ask("/api/dashboard/summary", part="daily", **first)
                reported, _ = await ask("/api/attribution/timeseries", **first)
                if zone == "UTC":
                    assert (status, reported) == (200, 200), body
                    assert body["days"][0] == "1970-01-01"
                    continue
                assert (status, reported) == (400, 400)
                assert body["error"] == (
                    "since: 1970-01-01 begins at 1969-12-31T15:00:00Z in attribution.timezone"
                    " (Asia/Tokyo), before 1970-01-01T00:00Z, the earliest moment a report reads:"
                    " the earliest day there is 1970-01-02"
                )
                status, body = await ask("/api/dashboard/summary", part="daily", until="1970-01-08")
                assert (status, body["days"][0], body["since"]) == (200, "1970-01-02", "1970-01-02"), body
                status, body = await ask("/api/dashboard/summary", until="1970-01-02")
                assert (status, body["error"]) == (
                    400,
                    "until: must be after 1970-01-02 (the default since is its earliest)",
                )
                later = {"since": "1970-01-02", "until": "1970-01-08"}
                assert (await ask("/api/dashboard/summary", part="daily", **later))[0] == 200
                assert (await ask("/api/attribution/timeseries", **later))[0] == 200
        finally:
            await gw.stop()


async def test_a_last_day_that_begins_after_the_latest_report_time_is_refused_west_of_utc(
    start_gateway, upstream_server
) -> None:
    """In New York 31 December 9999 begins at 05:00Z, after the latest moment the reports read
    (9999-12-31T00:00Z): as an until, refused as the reports refuse it."""
    gw = await start_gateway(
        await upstream_server(origin()), '[attribution]\ntimezone = "America/New_York"\n'
    )
    last = {"since": "9999-12-01", "until": "9999-12-31"}
    async with gw.session.get(gw.admin_url + "/api/dashboard/summary", params=last, headers=AUTH) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"] == (
            "until: 9999-12-31 begins at 9999-12-31T05:00:00Z in attribution.timezone"
            " (America/New_York), after 9999-12-31T00:00Z, the latest moment a report reads:"
            " the latest day there is 9999-12-30"
        )
    assert (await gw.api("/api/attribution/timeseries", **last))["status"] == 400
    earlier = {"since": "9999-12-01", "until": "9999-12-30"}
    assert (await gw.api("/api/dashboard/summary", part="daily", **earlier))["ok"]
    assert (await gw.api("/api/attribution/timeseries", **earlier))["ok"]
