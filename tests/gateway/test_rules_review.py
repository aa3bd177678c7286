"""The sources and key set files added on 2026-12-05, tried as an attacker and a demanding
operator would: a real gateway in front of a real aiohttp site answering as Django and
WooCommerce do, with the malformed answers a site (or what it reflects) can send. The page is
always served, no addon fails (``gateway_addon_errors_total``: a traceback in the log), and
what cannot be read is counted by its reason."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec

import addons.jwks
from addons.jwks import RuleKeys
from tests.conftest import TOKEN, GatewayFactory, RunningGateway, make_settings
from tests.gateway.test_rules_stacks import bound, failures, post, rows, visit
from tests.jwts import jwk, jwks, token

HUGE = "9" * 5000  # past int()'s 4,300 digits
ODD_SET_COOKIES = {  # who signs in → the one sessionid line the answer sets, and whether it is set
    "bare@example.com": "sessionid",  # no "=": no cookie (RFC 6265 §5.2)
    "quoted@example.com": 'sessionid="q v"; Path=/',
    "far@example.com": "sessionid=f; Expires=Wed, 21 Oct 99999999999 07:28:00 GMT",
    "past@example.com": "sessionid=p; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
    "nonsense@example.com": "sessionid=n; Max-Age=abc; Expires=" + "x" * 4000,
    "crowded@example.com": "sessionid=c; Path=/",  # after 990 others (1,000 lines: the most taken)
}
SESSION = "s3cr3tsess10nvalue0123456789abcd"
WP_TOKEN = "Wq7xTokenPartOfTheCookie0123456789abcdefXYZ"
WP_HMAC = "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b"


class Site:
    """Django's sign-in, whose ``sessionid`` says how long it lives in many digits (or that it
    is gone), and a thank-you page whose declared charset its bytes do not fit."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.app.router.add_post("/accounts/login/", self.login)
        self.app.router.add_get("/thanks/{charset}", self.thanks)
        self.app.router.add_post("/wp-login.php", self.wp_login)
        self.app.router.add_get("/{tail:.*}", self.page)

    async def login(self, request: web.Request) -> web.Response:
        fields = await request.post()
        resp = web.Response(status=302, headers={"Location": "/"})
        who = str(fields.get("who"))
        if who in ODD_SET_COOKIES:  # each line as a site (or a broken plugin) may send it
            for i in range(990 if who == "crowded@example.com" else 0):
                resp.headers.add("Set-Cookie", f"c{i}=v{i}; Path=/")
            resp.headers.add("Set-Cookie", ODD_SET_COOKIES[who])
            return resp
        max_age = "-" + HUGE if who == "gone@example.com" else HUGE
        resp.headers.add("Set-Cookie", f"sessionid=s3ss10n; Max-Age={max_age}; Path=/; HttpOnly")
        return resp

    async def wp_login(self, request: web.Request) -> web.Response:
        """WordPress's sign-in: ``wordpress_logged_in_<hash>`` is ``user|expiry|token|hmac``;
        ``sessionid`` (another plugin's) a bare session credential."""
        fields = await request.post()
        resp = web.Response(status=302, headers={"Location": "/wp-admin/"})
        name = fields["log"]
        resp.set_cookie("wordpress_logged_in_5f4dcc", f"{name}%7C1767225600%7C{WP_TOKEN}%7C{WP_HMAC}")
        resp.set_cookie("sessionid", SESSION)
        return resp

    async def thanks(self, request: web.Request) -> web.Response:
        charset = request.match_info["charset"]
        text = "<p>total: 49.90</p>".encode(charset)
        return web.Response(body=text[:-1], headers={"Content-Type": f"text/html; charset={charset}"})

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(text="<html>page</html>", content_type="text/html")


RULES = r"""
[[identity.rules]]
name = "django-session"
path = "/accounts/login/"
status = [302]
when = [{ set_cookie = "sessionid" }]
user_id = { form = "who" }

[[identity.rules]]
name = "wp"
path = "/wp-login\\.php"
status = [302]
when = [
  { set_cookie = "sessionid", matches = "[a-z0-9]{32}" },
  { cookie = "sessionid", capture = "^(nomatch)", absent = true },
  { cookie = "wordpress_logged_in_*", matches = ".*%7C.*" },
]
user_id = { cookie = "wordpress_logged_in_*", capture = "^(.+?)%7C" }

[[conversions]]
name = "wp-order"
path = "/wp-login\\.php"
status = [302]
order_id = { set_cookie = "wordpress_logged_in_*", capture = "^nobody%7C(.+)" }
when = [{ request_header = "X-Order", capture = "^#(\\d+)$" }]

[[conversions]]
name = "thanks"
method = "GET"
path = "/thanks/.*"
status = [200]
value = { response_text = true, capture = 'total: ([0-9.]+)' }
currency = "EUR"
"""


@pytest.fixture
async def gw(start_gateway: GatewayFactory, upstream_server: Any) -> AsyncIterator[RunningGateway]:
    yield await start_gateway(await upstream_server(Site().app), RULES)


async def addon_errors(gw: RunningGateway) -> list[str]:
    async with gw.session.get(gw.admin_url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        text = await r.text()
    return [line for line in text.splitlines() if line.startswith("gateway_addon_errors_total{")]


async def test_a_max_age_of_thousands_of_digits_is_read_as_a_cookie_kept_or_deleted(
    gw: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """``int()`` refuses more than 4,300 digits: such a ``Max-Age`` made the rule raise (a
    traceback, the other rules of the answer skipped) instead of reading a cookie kept for
    ever, or deleted."""
    caplog.set_level(logging.ERROR)
    cookie = await visit(gw)
    for who in ("ada@example.com", "gone@example.com"):
        assert await post(gw, "/accounts/login/", cookie, {"who": who}) == 302
    assert await bound(gw) == [("django-session", gw.gateway.keys.user_key("ada@example.com"))]
    assert await addon_errors(gw) == []
    assert not [r for r in caplog.records if r.exc_info], caplog.text


async def test_a_text_answer_whose_bytes_do_not_fit_its_charset_is_counted_not_a_failure(
    gw: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """UTF-16 cut mid-unit (or UTF-7, IDNA: bytes below 0x80 that ``surrogateescape`` cannot
    keep) raised ``UnicodeDecodeError`` out of the rule: now ``value_not_text``, and the
    conversion is still recorded, without a value, as for any value that cannot be read."""
    caplog.set_level(logging.ERROR)
    for charset in ("utf-16", "utf-8"):
        cookie = await visit(gw)  # a visitor each: one rule's conversions a second apart are one
        async with gw.session.get(gw.url + f"/thanks/{charset}", headers=cookie) as resp:
            assert resp.status == 200
            await resp.read()
    found = await rows(gw, "SELECT name, value FROM conversions ORDER BY id")
    assert found == [("thanks", None), ("thanks", 49.9)]
    assert await addon_errors(gw) == []
    assert not [r for r in caplog.records if r.exc_info], caplog.text
    assert [line.partition(" ")[0] for line in await failures(gw)] == [
        'gateway_extraction_failures_total{reason="value_not_text",rule="thanks"}',
    ]


def watching() -> int:
    """Key files being looked at: a ``RuleKeys`` with a look due or under way."""
    return sum(
        1
        for o in gc.get_objects()
        if isinstance(o, RuleKeys) and (o._timer is not None or o._looking is not None)
    )


async def test_reloads_and_the_stop_leave_no_key_file_watcher_behind(
    start_gateway: GatewayFactory, upstream_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each reload (``SIGHUP``) builds the rules again, with a watcher per key file: the chain
    it replaced stops its own once its requests have had time to end, and the stop stops the
    last one; the new chain's watcher follows the file."""
    monkeypatch.setattr(addons.jwks, "CHECK_EVERY", 0.02)
    signer = ec.generate_private_key(ec.SECP256R1())
    keys = tmp_path / "keys.json"
    await asyncio.to_thread(keys.write_bytes, jwks(jwk(signer, "old", alg="ES256")))
    toml = (
        '[proxy]\nshutdown_grace = 0.05\n[[identity.rules]]\nname = "api"\nmethod = "GET"\n'
        'path = "/api/me"\nstatus = [200]\n'
        f'user_id = {{ jwt_authorization = true, algorithm = "ES256", key = "{keys}" }}\n'
    )
    gw = await start_gateway(await upstream_server(Site().app), toml)
    before = watching()
    assert before == 1
    for _ in range(3):
        assert await gw.gateway.reload(make_settings(tmp_path, toml)) == []
    async with asyncio.timeout(5):
        while watching() != before:  # the replaced chains stop after proxy.shutdown_grace
            await asyncio.sleep(0.02)
    await asyncio.to_thread(keys.write_bytes, jwks(jwk(signer, "new", alg="ES256")))
    bearer = token({"sub": "u1"}, signer, "ES256", "new")
    async with asyncio.timeout(5):
        while not await bound(gw):
            async with gw.session.get(gw.url + "/api/me", headers={"Authorization": f"Bearer {bearer}"}) as r:
                assert r.status == 200
            await asyncio.sleep(0.05)
    await gw.proxy.close()
    assert watching() == 0


async def test_no_cookie_a_rule_reads_is_logged_counted_or_stored(
    gw: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """Session cookies in ``when`` conditions (tested whole) and a capture of the user's name
    out of WordPress's cookie: neither the session credential nor the cookie's token or HMAC
    is in the log, the metrics or the store, whether the rule fires, finds no match
    (``order_id_capture_no_match``) or cannot read a condition."""
    caplog.set_level(logging.DEBUG)
    cookie = await visit(gw)
    for name, order in (("ada", "#1"), ("bob", "no order")):
        assert await post(gw, "/wp-login.php", cookie, {"log": name}, **{"X-Order": order}) == 302
    sent = {"Cookie": f"{cookie['Cookie']}; sessionid={SESSION}; wordpress_logged_in_5f4dcc=x%7C{WP_TOKEN}"}
    assert await post(gw, "/accounts/login/", sent, {"who": "carol@example.com"}) == 302
    keys = gw.gateway.keys
    assert [u for _, u in await bound(gw)] == [
        keys.user_key("ada"),
        keys.user_key("bob"),
        keys.user_key("carol@example.com"),
    ]
    assert [line.partition(" ")[0] for line in await failures(gw)] == [
        'gateway_extraction_failures_total{reason="order_id_capture_no_match",rule="wp-order"}'
    ]
    async with gw.session.get(gw.admin_url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        metrics = await r.text()
    db = Path(gw.gateway.settings.store_path)
    store = await asyncio.to_thread(lambda: b"".join(f.read_bytes() for f in db.parent.glob(db.name + "*")))
    for secret in (SESSION, WP_TOKEN, WP_HMAC):
        assert secret not in caplog.text
        assert secret not in metrics
        assert secret.encode() not in store


async def test_malformed_set_cookie_lines_are_read_as_a_browser_reads_them(
    gw: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """A line without ``=`` sets nothing; a quoted value, an ``Expires`` in the year
    99,999,999,999, a ``Max-Age`` that is no number (ignored, so an unreadable ``Expires``
    decides: none) and a cookie after 990 others are set; an ``Expires`` in the past is a
    deletion. Every answer is served whole, no addon fails."""
    caplog.set_level(logging.ERROR)
    cookie = await visit(gw)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), max_headers=2000) as browser:
        for who in ODD_SET_COOKIES:
            async with browser.post(
                gw.url + "/accounts/login/", data={"who": who}, headers=cookie, allow_redirects=False
            ) as resp:
                assert resp.status == 302, who
                site = [c for c in resp.headers.getall("Set-Cookie") if not c.startswith("gw_")]
                assert len(site) == (991 if who == "crowded@example.com" else 1)  # all forwarded
    keys = gw.gateway.keys
    assert [u for _, u in await bound(gw)] == [
        keys.user_key(who)
        for who in ("quoted@example.com", "far@example.com", "nonsense@example.com", "crowded@example.com")
    ]
    assert await addon_errors(gw) == []
    assert not [r for r in caplog.records if r.exc_info], caplog.text
