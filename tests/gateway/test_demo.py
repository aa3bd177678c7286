"""The built-in demo origin (``gateway/demo.py``) and its own rules, through a real ``gateway run``:
while the gateway serves the demo and the config has no rules of its own, the demo shop's
sign-up binds the visitor and records a ``signup`` conversion, credited to the landing's campaign."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from gateway.demo import create_demo_app, with_demo_rules
from tests.clients import BROWSER
from tests.conftest import TOKEN, make_settings
from tests.gateway import test_dashboard_browser as in_chromium
from tests.gatewayproc import GatewayProcess

chromium = in_chromium.chromium
"""The browser tests' fixture: skipped without Chromium, failing under ``CI``."""

LANDING = "/?utm_source=newsletter&utm_medium=email&utm_campaign=launch"


def _config(tmp_path: Path, extra: str = "", workers: int = 2, rules: str = "") -> Path:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        f'[proxy]\nlisten = "127.0.0.1:0"\nworkers = {workers}\n{extra}'
        '[admin]\nlisten = "127.0.0.1:0"\n[storage]\npath = "gw.db"\n' + rules
    )
    return cfg


async def _land_and_sign_up(proxy: str, email: str) -> None:
    """A browser's visit: the campaign landing, the form, the sign-up (its 303 not followed)."""
    jar = aiohttp.CookieJar(unsafe=True)  # keeps the gateway's cookie for 127.0.0.1
    async with aiohttp.ClientSession(headers=BROWSER, cookie_jar=jar) as session:
        async with session.get(proxy + LANDING) as resp:
            assert resp.status == 200 and "Demo shop" in await resp.text()
        async with session.get(proxy + "/signup") as resp:
            assert resp.status == 200
        async with session.post(proxy + "/signup", data={"email": email}, allow_redirects=False) as resp:
            assert (resp.status, resp.headers["Location"]) == (303, "/welcome")


async def _admin(gw: GatewayProcess, path: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session,
        session.get(gw.admin + path) as resp,
    ):
        return resp.status, await resp.json()


async def _announced(gw: GatewayProcess) -> str:
    """Everything ``gateway run`` printed at its start (its last line read too)."""
    await gw.wait_for(lambda: any("in a browser: the dashboard" in line for line in gw.stdout), gw.stdout)
    return "".join(gw.stdout)


def _bindings(db: Path) -> list[tuple[str, str]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT rule, user_key FROM identities").fetchall()


def _bytes(path: Path) -> bytes:
    return path.read_bytes() if path.exists() else b""


def _period() -> str:
    today = datetime.now(UTC).date()
    return f"since={today - timedelta(days=1)}&until={today + timedelta(days=1)}"


async def _signups(gw: GatewayProcess) -> list[dict[str, Any]]:
    status, body = await _admin(gw, "/api/conversions")
    assert status == 200, body
    return [c for c in body["items"] if c["name"] == "signup"]


async def _signs_up_unrecorded(gw: GatewayProcess) -> None:
    """A landing and a sign-up on the demo shop through ``gw`` bind no one and convert nothing."""
    await _land_and_sign_up(gw.proxy, "ann@example.com")
    status, _ = await _admin(gw, "/api/users/ann@example.com")
    assert status == 404
    assert await _signups(gw) == []


async def test_the_demo_shop_signup_binds_converts_and_is_credited_and_a_reload_keeps_it(
    tmp_path: Path,
) -> None:
    cfg = await asyncio.to_thread(_config, tmp_path)
    gw = await GatewayProcess.start(cfg)
    try:
        text = await _announced(gw)
        assert 'e-mail (kept as a keyed hash) and records a "signup" conversion worth 10 EUR' in text, text
        assert f"{gw.admin}/dashboard" in text
        await _land_and_sign_up(gw.proxy, "Ann@Example.com")
        # The binding, under the e-mail given (lower-cased): the landing's visitor is the user's.
        status, user = await _admin(gw, "/api/users/ann@example.com")
        assert status == 200, user
        assert [v["visitor_key"] for v in user["visitors"]] == [user["first_touch"]["visitor_key"]], user
        assert user["first_touch"]["campaign"] == "launch" and user["first_touch"]["verdict"] == "allow"
        [signup] = await _signups(gw)
        assert (signup["value"], signup["currency"], signup["user_key"]) == (10.0, "EUR", user["user_key"])
        status, report = await _admin(gw, f"/api/attribution?group_by=campaign&{_period()}")
        assert status == 200, report
        credited = {row["group"]: row["conversions"] for row in report["rows"] if row["conversions"]}
        assert credited == {"launch": 1.0}, report
        # A SIGHUP reload (each of the two workers) keeps the demo's rules.
        before = len([r for r in gw.logs() if r["msg"].startswith("config reloaded")])
        gw.signal(signal.SIGHUP)
        await gw.wait_for(
            lambda: len([r for r in gw.logs() if r["msg"].startswith("config reloaded")]) >= before + 2,
            gw.stderr,
        )
        for n in range(4):  # a new connection each: both workers take some
            await _land_and_sign_up(gw.proxy, f"visitor{n}@example.com")
        assert len(await _signups(gw)) == 5
        assert await gw.stop() == 0
        assert "Traceback" not in "".join(gw.stderr)
        rows = await asyncio.to_thread(_bindings, tmp_path / "gw.db")
        assert sorted(rule for rule, _ in rows) == ["demo-signup"] * 5
        assert user["user_key"] in {key for _, key in rows}
        for name in ("gw.db", "gw.db-wal"):
            raw = await asyncio.to_thread(_bytes, tmp_path / name)
            assert b"example.com" not in raw.lower(), f"an e-mail address stored raw in {name}"
    finally:
        await gw.kill()


async def test_a_config_with_rules_of_its_own_gets_none_of_the_demos(tmp_path: Path) -> None:
    own = '[[conversions]]\nname = "pricing-view"\nmethod = "GET"\npath = "/pricing"\nstatus = [200]\n'
    cfg = await asyncio.to_thread(_config, tmp_path, "", 1, own)
    gw = await GatewayProcess.start(cfg)
    try:
        text = await _announced(gw)
        assert "the config has rules of its own: the demo shop adds none" in text, text
        await _signs_up_unrecorded(gw)
    finally:
        await gw.kill()


async def test_with_an_upstream_set_nothing_of_the_demo_applies(tmp_path: Path) -> None:
    """The demo shop itself as the operator's site: its sign-up is just a page then."""
    runner = web.AppRunner(create_demo_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    cfg = await asyncio.to_thread(_config, tmp_path, f'upstream = "http://127.0.0.1:{port}"\n', 1)
    gw = await GatewayProcess.start(cfg)
    try:
        assert "demo" not in await _announced(gw)
        await _signs_up_unrecorded(gw)
    finally:
        await gw.kill()
        await runner.cleanup()


def test_the_demo_rules_are_validated_with_the_config_they_join(tmp_path: Path) -> None:
    """Without "stitching" in the pipeline no identity rule can run: the demo's are left off,
    and why is said, rather than the gateway refusing a config that has no rules."""
    settings = make_settings(tmp_path, '[proxy]\naddons = ["identity", "campaign", "conversions"]\n')
    demo = with_demo_rules(settings)
    assert demo.settings is settings
    assert demo.problems == ('identity.rules: rules are configured but "stitching" is not in proxy.addons',)
    on = with_demo_rules(make_settings(tmp_path))
    assert [r.name for r in on.settings.options.identity.rules] == ["demo-signup"]
    assert [r.name for r in on.settings.options.conversions] == ["signup"]
    assert on.problems == () and on.added
    assert demo.lines("p", "a") == [
        "gateway: the demo shop's rules are off: identity.rules: rules are configured but"
        ' "stitching" is not in proxy.addons'
    ]
    plain = with_demo_rules(make_settings(tmp_path, '[identity]\nuser_id_storage = "plain"\n'))
    assert "(kept as typed)" in plain.lines("p", "a")[0]


async def test_the_demo_shop_reads_on_a_phone_and_its_form_field_is_named(
    chromium: str, upstream_server, tmp_path: Path
) -> None:
    """An evaluator opening the campaign link on a phone got the shop laid out 980 pixels wide
    and shrunk to fit (no viewport), and a screen reader got an unnamed field on the sign-up
    form (a placeholder is no label)."""
    shop = await upstream_server(create_demo_app())
    async with in_chromium.browser(chromium, tmp_path / "profile") as page:
        await page.send(
            "Emulation.setDeviceMetricsOverride", width=390, height=844, deviceScaleFactor=1, mobile=True
        )
        seen, field = {}, None
        for path in ("/", "/pricing", "/signup", "/welcome", "/echo"):
            await page.send("Page.navigate", url=shop + path)
            await page.wait_for(f"location.pathname === {path!r} && document.readyState === 'complete'", path)
            seen[path] = await page.eval("[window.innerWidth, document.documentElement.lang]")
            if path == "/signup":
                field = await page.eval(
                    "(f => [f.type, f.required, [...f.labels].map(l => l.textContent)])"
                    "(document.querySelector('input[name=email]'))"
                )
    assert seen == {path: [390, "en"] for path in seen}, seen
    assert field == ["email", True, ["E-mail"]], field
    assert page.errors == [], page.errors


async def test_the_welcome_page_leads_back_into_the_shop(upstream_server: Any) -> None:
    """The page after the sign-up was a dead end (an evaluator's note): it links back to the
    shop, and to the page that shows what the origin received."""
    shop = await upstream_server(create_demo_app())
    async with aiohttp.ClientSession() as session, session.get(shop + "/welcome") as resp:
        page = await resp.text()
    assert resp.status == 200
    assert '<a href="/">' in page and '<a href="/echo">' in page, page
