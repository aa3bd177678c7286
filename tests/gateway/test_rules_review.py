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

import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec

import addons.jwks
from addons.jwks import RuleKeys
from tests.conftest import TOKEN, GatewayFactory, RunningGateway, make_settings
from tests.gateway.test_rules_stacks import bound, failures, post, rows, visit
from tests.jwts import jwk, jwks, token

HUGE = "9" * 5000  # past int()'s 4,300 digits


class Site:
    """Django's sign-in, whose ``sessionid`` says how long it lives in many digits (or that it
    is gone), and a thank-you page whose declared charset its bytes do not fit."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.app.router.add_post("/accounts/login/", self.login)
        self.app.router.add_get("/thanks/{charset}", self.thanks)
        self.app.router.add_get("/{tail:.*}", self.page)

    async def login(self, request: web.Request) -> web.Response:
        fields = await request.post()
        resp = web.Response(status=302, headers={"Location": "/"})
        max_age = "-" + HUGE if fields.get("who") == "gone@example.com" else HUGE
        resp.headers.add("Set-Cookie", f"sessionid=s3ss10n; Max-Age={max_age}; Path=/; HttpOnly")
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
