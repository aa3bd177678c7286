"""Wrong admin tokens counted per client address (``gateway/lockout.py``): the login form and
the API's bearer token share the count; past ``admin.max_failed_logins`` the address gets 429
with ``Retry-After``, the right token too, until ``admin.failed_login_seconds`` have passed.
Through a real gateway's admin listener on 127.0.0.1; the table's bounds directly."""

from __future__ import annotations

import asyncio
import logging
import urllib.parse

import pytest

from gateway.lockout import LOGINS_KEY, MAX_TRACKED, FailedLogins
from gateway.sessions import SESSIONS_KEY
from tests.conftest import TOKEN, RunningGateway, make_settings
from tests.gateway.test_dashboard import cookie_of, origin

AUTH = {"Authorization": f"Bearer {TOKEN}"}
WRONG = {"Authorization": "Bearer not-the-token"}
# Three wrong tokens within a minute; behind a proxy on loopback, whose X-Forwarded-For counts.
CONFIG = (
    '[admin]\nmax_failed_logins = 3\nfailed_login_seconds = 60\n[proxy]\ntrusted_proxies = ["127.0.0.1"]\n'
)


@pytest.fixture
async def gw(start_gateway, upstream_server) -> RunningGateway:
    return await start_gateway(await upstream_server(origin()), CONFIG)


def client(address: str | None, **headers: str) -> dict[str, str]:
    return {**({"X-Forwarded-For": address} if address else {}), **headers}


async def form_login(gw: RunningGateway, token: str, address: str | None = None) -> tuple[str, str | None]:
    """The login form's redirect (``why`` of the login page, or the dashboard) and the
    session cookie it set, if any."""
    async with gw.session.post(
        gw.admin_url + "/login",
        data={"token": token},
        headers=client(address, Origin=gw.admin_url),
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303
        path, _, query = resp.headers["Location"].partition("?")
        why = urllib.parse.parse_qs(query).get("why", [""])[0]
        return why or path, resp.cookies[cookie_of(gw)].value if cookie_of(gw) in resp.cookies else None


async def api(gw: RunningGateway, headers: dict[str, str]) -> tuple[int, dict[str, str], dict[str, object]]:
    async with gw.session.get(gw.admin_url + "/api/creators", headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.json()


async def test_wrong_tokens_from_one_address_refuse_it_even_the_right_token(
    gw: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """A token could be tried without limit, by the form or the API, by anyone who reaches the
    listener (``admin.allow_public``)."""
    caplog.set_level(logging.INFO)
    why, session = await form_login(gw, TOKEN)  # signed in before: the session keeps reading
    assert why == "/dashboard" and session is not None
    assert await form_login(gw, "guess-1") == ("wrong", None)
    assert (await api(gw, WRONG))[0] == 401
    assert await form_login(gw, "guess-3") == ("locked", None)  # the third: refused from now
    assert len(gw.admin.app[LOGINS_KEY]) == 1
    assert await form_login(gw, TOKEN) == ("locked", None)
    status, headers, body = await api(gw, AUTH)
    assert status == 429 and 55 <= int(headers["Retry-After"]) <= 60, (status, headers)
    assert body["ok"] is False and body["status"] == 429
    assert str(body["error"]).startswith(
        "too many wrong admin tokens from this address (3 within 60 s): refused for"
    ), body
    assert (await api(gw, WRONG))[0] == 429
    async with gw.session.get(gw.admin_url + "/login?why=locked") as resp:
        assert resp.status == 429 and 55 <= int(resp.headers["Retry-After"]) <= 60
        page = await resp.text()
    assert "Too many wrong tokens from this address" in page and "Try again in 1 minute." in page
    assert 'name="token"' in page
    assert len(gw.admin.app[SESSIONS_KEY]) == 1  # the one from before
    cookie = {"Cookie": f"{cookie_of(gw)}={session}"}
    async with gw.session.get(gw.admin_url + "/metrics", headers=cookie) as resp:
        assert resp.status == 200
        assert "gateway_admin_lockouts_total 1.0" in await resp.text()
    said = [r.getMessage() for r in caplog.records if "wrong admin tokens" in r.getMessage()]
    assert len(said) == 1, said  # one line per lockout, not per refusal
    assert "3 wrong admin tokens within 60 s from one client (" in said[0]
    assert "127.0.0.1" not in said[0] and TOKEN not in said[0] and "guess" not in said[0]


async def test_each_address_is_counted_alone_and_a_success_resets_no_one(gw: RunningGateway) -> None:
    """Behind a trusted proxy each client is its X-Forwarded-For; an IPv6 client is its /64
    (a host picks addresses in it freely)."""
    for _ in range(2):
        assert (await api(gw, client("203.0.113.5", **WRONG)))[0] == 401
    why, session = await form_login(gw, TOKEN, "203.0.113.6")
    assert why == "/dashboard" and session is not None
    assert (await api(gw, client("203.0.113.6", **AUTH)))[0] == 200
    assert await form_login(gw, "guess", "203.0.113.5") == ("locked", None)  # the form counts on
    assert (await api(gw, client("203.0.113.5", **AUTH)))[0] == 429
    assert (await api(gw, client("203.0.113.6", **AUTH)))[0] == 200
    assert (await api(gw, AUTH))[0] == 200  # the proxy itself, without the header
    # An IPv6 client is its /64.
    assert (await api(gw, client("2001:db8::1", **WRONG)))[0] == 401
    assert (await api(gw, client("2001:db8::2", **WRONG)))[0] == 401
    status, _, body = await api(gw, client("2001:db8:0:0:ffff::3", **WRONG))
    assert status == 401 and body["error"] == (
        "wrong admin token; too many from this address: the next are refused for 60 s"
    )
    assert (await api(gw, client("2001:db8::4", **AUTH)))[0] == 429
    assert (await api(gw, client("2001:db8:0:1::1", **AUTH)))[0] == 200  # another /64


async def test_behind_a_proxy_writing_forwarded_each_client_is_counted_alone(
    start_gateway, upstream_server
) -> None:
    """A trusted proxy that writes only RFC 7239 ``Forwarded``, so said (``proxy.trusted_header``):
    the client is its ``for=``, as the proxy listener reads it (until 2026-12-07 every client was
    the proxy, and one of them trying tokens locked all the others out)."""
    gw = await start_gateway(await upstream_server(origin()), CONFIG + 'trusted_header = "forwarded"\n')
    for _ in range(3):
        assert (await api(gw, {"Forwarded": 'for="[2001:db8::1]:4711"', **WRONG}))[0] in (401, 429)
    assert (await api(gw, {"Forwarded": 'for="[2001:db8::1]:4711"', **AUTH}))[0] == 429
    assert (await api(gw, {"Forwarded": "for=203.0.113.6;proto=https", **AUTH}))[0] == 200
    assert (await api(gw, AUTH))[0] == 200  # the proxy itself


async def test_an_untrusted_peer_is_counted_as_itself(start_gateway, upstream_server) -> None:
    """Without ``proxy.trusted_proxies`` a client cannot dodge the count with X-Forwarded-For."""
    gw = await start_gateway(await upstream_server(origin()), "[admin]\nmax_failed_logins = 2\n")
    assert (await api(gw, client("203.0.113.1", **WRONG)))[0] == 401
    assert (await api(gw, client("203.0.113.2", **WRONG)))[0] == 401
    assert (await api(gw, client("203.0.113.3", **AUTH)))[0] == 429


async def test_the_lockout_ends(start_gateway, upstream_server) -> None:
    gw = await start_gateway(
        await upstream_server(origin()), "[admin]\nmax_failed_logins = 1\nfailed_login_seconds = 0.5\n"
    )
    assert await form_login(gw, "guess") == ("locked", None)
    status, headers, _ = await api(gw, AUTH)
    assert status == 429 and headers["Retry-After"] == "1"  # whole seconds, rounded up
    await asyncio.sleep(0.6)
    async with gw.session.get(gw.admin_url + "/login?why=locked") as resp:
        assert resp.status == 200 and "Retry-After" not in resp.headers
        assert 'role="alert"' not in await resp.text()  # over: the plain form
    assert (await api(gw, AUTH))[0] == 200
    why, session = await form_login(gw, TOKEN)
    assert why == "/dashboard" and session is not None


def test_the_table_is_bounded_and_forgets() -> None:
    """Never more than MAX_TRACKED addresses, whatever a client with many addresses sends, and
    none kept past its window."""
    now = [1000.0]
    logins = FailedLogins(3, 60.0, clock=lambda: now[0])
    for n in range(MAX_TRACKED + 500):
        assert logins.failed(n.to_bytes(16, "big")) == 0
    assert len(logins) == MAX_TRACKED
    assert logins.failed((0).to_bytes(16, "big")) == 0  # the oldest went first: counted afresh
    assert logins.failed(b"x" * 16) == 0 and logins.failed(b"x" * 16) == 0
    assert logins.failed(b"x" * 16) == 60 and logins.locked(b"x" * 16) == 60
    now[0] += 59.5
    assert logins.locked(b"x" * 16) == 1
    now[0] += 0.5
    assert logins.locked(b"x" * 16) == 0
    assert logins.failed(b"y" * 16) == 0
    assert len(logins) == 1  # every other window is over


async def test_a_reload_of_the_trusted_proxies_reaches_the_count(
    start_gateway, upstream_server, tmp_path
) -> None:
    """The proxy took a reloaded ``proxy.trusted_proxies`` but the admin listener's count kept the
    start's: nginx added in front of the dashboard and reloaded, one analyst's wrong tokens
    locked every analyst out (all were nginx); removed, X-Forwarded-For still dodged the count."""
    admin = "[admin]\nmax_failed_logins = 2\n"
    gw = await start_gateway(await upstream_server(origin()), admin)
    trusted = admin + '[proxy]\ntrusted_proxies = ["127.0.0.1"]\n'
    assert await gw.gateway.reload(make_settings(tmp_path, trusted)) == []
    assert (await api(gw, client("203.0.113.1", **WRONG)))[0] == 401
    assert (await api(gw, client("203.0.113.1", **WRONG)))[0] == 401
    assert (await api(gw, client("203.0.113.1", **AUTH)))[0] == 429
    assert (await api(gw, client("203.0.113.2", **AUTH)))[0] == 200  # another client behind nginx
    assert await gw.gateway.reload(make_settings(tmp_path, admin)) == []
    assert (await api(gw, client("203.0.113.3", **WRONG)))[0] == 401
    assert (await api(gw, client("203.0.113.4", **WRONG)))[0] == 401
    assert (await api(gw, client("203.0.113.5", **AUTH)))[0] == 429  # all one client again: the peer
