"""What a reload applies live, what it keeps for a restart, and that in-flight requests finish
on the pipeline they started on."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web

from gateway.cli import STARTED_CONFIG_ENV, sighup_snapshot, write_sighup_snapshot
from gateway.config import ConfigError, Settings
from gateway.events import Conversion, Touchpoint, iso
from gateway.ids import uuid7
from gateway.reload import RESTART_KEYS, live_settings, restart_needed
from gateway.reportstate import REPORTING_KEY
from gateway.server import _reload
from tests.conftest import ENV, GatewayFactory, make_settings
from tests.gateway.test_dashboard import login, with_cookie
from tests.gateway.test_inbound import conversion, encode, post, signed


def test_restart_only_keys_are_named_and_kept(tmp_path: Path) -> None:
    old = make_settings(tmp_path, "")
    new = make_settings(
        tmp_path,
        """
        [proxy]
        listen = "127.0.0.1:1"
        strip = "redirect"
        workers = 3
        [bots]
        review_threshold = 45
        [admin]
        token = "env:OTHER_TOKEN"
        """,
        OTHER_TOKEN="o" * 40,
    )
    assert restart_needed(old, new) == ["proxy.listen", "proxy.workers", "admin", "admin.token"]
    live = live_settings(old, new)
    assert live.options.proxy.listen == old.options.proxy.listen and live.options.proxy.workers == 0
    assert live.admin_token == ENV["GATEWAY_ADMIN_TOKEN"] and live.options.admin == old.options.admin
    assert live.options.proxy.strip == "redirect" and live.options.bots.review_threshold == 45


def test_nothing_to_restart_when_only_rules_change(tmp_path: Path) -> None:
    old = make_settings(tmp_path, "")
    new = make_settings(tmp_path, "[[conversions]]\nname = 'buy'\npath = '/thanks'\nstatus = [200]\n")
    assert restart_needed(old, new) == []
    assert [c.name for c in live_settings(old, new).options.conversions] == ["buy"]


async def test_in_flight_request_finishes_on_the_old_pipeline(
    tmp_path: Path, start_gateway: GatewayFactory, upstream_server: object
) -> None:
    arrived, release = asyncio.Event(), asyncio.Event()

    async def page(request: web.Request) -> web.Response:
        if request.path == "/slow":
            arrived.set()
            await release.wait()
        return web.Response(text=f"page {request.query_string}")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    upstream = await upstream_server(app)  # type: ignore[operator]
    gw = await start_gateway(upstream)
    slow = asyncio.create_task(gw.session.get(f"{gw.url}/slow?utm_source=old&keep=1", allow_redirects=False))
    async with asyncio.timeout(10):
        await arrived.wait()
    pending = await gw.gateway.reload(make_settings(tmp_path, "[proxy]\nstrip = 'redirect'\n"))
    assert pending == []
    async with gw.session.get(f"{gw.url}/?utm_source=new", allow_redirects=False) as resp:
        assert resp.status == 302 and resp.headers["Location"].endswith("/")
    release.set()
    resp = await slow
    # Started before the reload: forwarded (stripped), not redirected.
    assert resp.status == 200 and await resp.text() == "page keep=1"
    resp.release()
    items = (await gw.api("/api/touchpoints"))["items"]
    assert sorted(t["source"] for t in items) == ["new", "old"]


def test_readme_names_every_restart_only_key() -> None:
    """The README's SIGHUP paragraph lists what needs a restart, and lists nothing of it as live."""
    text = (Path(__file__).parents[2] / "README.md").read_text()
    paragraph = text[text.index("- **SIGHUP**") : text.index("### Logs")]
    live, _, restart = paragraph.partition("needing a restart")
    for key in RESTART_KEYS:
        names = {f"`{key}`", f"`[{key}]`", f"`[[{key}]]`"}
        assert any(name in restart for name in names), f"{key} is not named as needing a restart"
        assert not any(name in live for name in names), f"{key} is named as changing live"


async def test_a_reload_applies_new_payout_rules_to_the_next_report(
    tmp_path: Path, start_gateway: GatewayFactory, upstream_server: object
) -> None:
    """[payouts] needed a restart: a partner manager who corrected a CPA and reloaded still
    approved the old amounts from the admin API, while `gateway report` read the new file."""
    before = "[payouts]\ndefault_tier = 'standard'\ntiers = { standard = { cpa = 5.0 } }\n"
    gw = await start_gateway(await upstream_server(web.Application()), before)  # type: ignore[operator]
    now = datetime.now(UTC)
    touch = Touchpoint(
        uuid7(), iso(now - timedelta(hours=1)), "n", "v1", creator_id="cr_ana", channel="Affiliates"
    )
    sale = Conversion(uuid7(), iso(now), "n", "purchase", "order:1", "v1", None, 100.0, "EUR")
    await gw.gateway.store.write([touch, sale])

    async def payout() -> tuple[str, float]:
        (row,) = [r for r in (await gw.api("/api/payouts"))["rows"] if r["creator_id"] == "cr_ana"]
        return row["rule"], row["payout"]

    assert await payout() == ("tier standard: CPA 5", 5.0)
    after = before.replace("cpa = 5.0", "cpa = 7.5") + "model = 'first_touch'\n"
    assert await gw.gateway.reload(make_settings(tmp_path, after)) == []
    assert await payout() == ("tier standard: CPA 7.5", 7.5)
    assert (await gw.api("/api/payouts"))["model"] == "first_touch"


async def test_a_reload_applies_new_attribution_settings_to_the_next_report(
    tmp_path: Path, start_gateway: GatewayFactory, upstream_server: object
) -> None:
    """[attribution] needed a restart of the gateway, the site's proxy with it, for an analyst
    to shorten a lookback window or change the report time zone."""
    quick = "[proxy]\nshutdown_grace = 0.1\n"  # what a replaced engine is given to finish
    gw = await start_gateway(await upstream_server(web.Application()), quick)  # type: ignore[operator]
    now = datetime.now(UTC)
    touch = Touchpoint(uuid7(), iso(now - timedelta(days=20)), "n", "v1", source="news", channel="Email")
    sale = Conversion(uuid7(), iso(now), "n", "purchase", "order:1", "v1", None, 100.0, "EUR")
    await gw.gateway.store.write([touch, sale])

    async def credited() -> list[str]:
        return [r["group"] for r in (await gw.api("/api/attribution", model="last_touch"))["rows"]]

    assert await credited() == ["Email"]  # within the default 30-day window
    shorter = "[attribution]\nlookback_days = { awareness = 10.0 }\ntier_patterns = {}\n"
    shorter += 'timezone = "Pacific/Auckland"\n' + quick
    before = gw.gateway.admin_app[REPORTING_KEY].reports
    assert await gw.gateway.reload(make_settings(tmp_path, shorter)) == []
    assert await credited() == ["Direct"]  # 20 days back: outside the new 10-day window
    report = await gw.api("/api/attribution", since="2026-11-01", until="2026-11-02")
    assert report["since"] == "2026-10-31T11:00:00Z"  # midnight in Auckland (UTC+13)
    async with gw.session.get(gw.admin_url + "/dashboard", headers=with_cookie(gw, await login(gw))) as resp:
        assert 'data-timezone="Pacific/Auckland"' in await resp.text()
    async with asyncio.timeout(10):  # the engine it replaced closes after proxy.shutdown_grace
        while before._db is not None:
            await asyncio.sleep(0.05)
    # Reloading the same again keeps the engine: no new connection, no new workers.
    engine = gw.gateway.admin_app[REPORTING_KEY].reports
    assert await gw.gateway.reload(make_settings(tmp_path, shorter)) == []
    assert gw.gateway.admin_app[REPORTING_KEY].reports is engine


async def test_a_reload_names_the_keys_fixed_at_start_it_cannot_apply_live(
    tmp_path: Path, start_gateway: GatewayFactory, upstream_server: object
) -> None:
    """``identity.user_id_storage`` (its keys are made once, at start),
    ``privacy.retention_days`` (its daily purge is started, or not, at start) and
    ``proxy.shutdown_grace`` (given to the listeners and the supervisor at start) were taken by
    a reload without a word (``restart: []``) and never applied: an operator who set a
    retention period, turned ``plain`` off or gave SIGTERM longer, and reloaded, was told it
    was done."""

    async def login(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "/"})

    app = web.Application()
    app.router.add_post("/login", login)
    rule = "[[identity.rules]]\nname = 'login'\npath = '/login'\nstatus = [302]\n"
    rule += "user_id = { form = 'email' }\n"
    gw = await start_gateway(await upstream_server(app), rule)  # type: ignore[operator]
    changed = rule + "[identity]\nuser_id_storage = 'plain'\n[privacy]\nretention_days = 30\n"
    changed += "[proxy]\nshutdown_grace = 60.0\n"  # SIGTERM's wait: the listeners' and the supervisor's
    changed += "keepalive_timeout = 5.0\nheader_timeout = 5.0\n"  # the listeners', set at start
    pending = await gw.gateway.reload(make_settings(tmp_path, changed))
    assert pending == [
        "proxy.shutdown_grace",
        "proxy.keepalive_timeout",
        "proxy.header_timeout",
        "identity.user_id_storage",
        "privacy.retention_days",
    ]
    assert gw.gateway.settings.options.proxy.shutdown_grace == 10.0
    assert gw.gateway.settings.options.proxy.keepalive_timeout == 75.0
    assert gw.gateway.settings.options.identity.user_id_storage == "hash"  # as it runs
    assert gw.gateway.settings.options.privacy.retention_days == 0
    assert "retention" not in gw.gateway.background
    form = {"email": "ana@example.com"}
    async with gw.session.post(gw.url + "/login", data=form, allow_redirects=False) as resp:
        assert resp.status == 302
    stored = await asyncio.to_thread(_rows, gw.gateway.settings.store_path, "SELECT user_key FROM identities")
    assert len(stored) == 1 and "ana@example.com" not in stored[0][0]  # hashed, as before the reload


def _rows(path: Path, sql: str) -> list[tuple[str, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


async def test_a_reload_keeps_the_senders_secrets_with_the_senders(
    tmp_path: Path, start_gateway: GatewayFactory, upstream_server: object
) -> None:
    """``[[sources]]`` is restart-only, and a reload said so, but took the new file's secrets for
    the running senders: the old secret dropped from a rotation stopped verifying at once (while
    the log said the running value was kept), and a sender renamed made every reload fail with a
    ``KeyError`` traceback, the other changes unapplied."""
    env = {"SHOP_SECRET": "n" * 32, "SHOP_OLD": "o" * 32}
    both = "[[sources]]\nname = 'shop'\nsecrets = ['env:SHOP_SECRET', 'env:SHOP_OLD']\n"
    gw = await start_gateway(await upstream_server(web.Application()), both, env)  # type: ignore[operator]
    one = both.replace(", 'env:SHOP_OLD'", "")
    assert await gw.gateway.reload(make_settings(tmp_path, one, **env)) == ["sources"]
    body = encode(conversion())
    assert (await post(gw, body, signed(body, "o" * 32)))[0] == 202  # the running rotation
    renamed = both.replace("'shop'", "'shopify'") + "[bots]\nreview_threshold = 45\n"
    assert await gw.gateway.reload(make_settings(tmp_path, renamed, **env)) == ["sources"]
    assert gw.gateway.settings.options.bots.review_threshold == 45  # the rest applies
    body = encode(conversion())
    assert (await post(gw, body, signed(body, "n" * 32)))[0] == 202


async def test_two_reloads_in_a_row_apply_in_the_order_they_were_asked(
    tmp_path: Path, start_gateway: GatewayFactory, upstream_server: object
) -> None:
    """Each SIGHUP read and applied the file in a task of its own: two in a row (a config tool
    that reloads twice) ran at once, and the first, slower to read, was applied last, so the
    gateway ran the older file; both also swapped out the same pipeline, and the one between was
    never closed."""
    gw = await start_gateway(await upstream_server(web.Application()))  # type: ignore[operator]
    first_read = asyncio.Event()

    async def older() -> Settings:
        settings = make_settings(tmp_path, "[bots]\nreview_threshold = 41\n")
        first_read.set()
        await asyncio.sleep(0.3)  # a slow read: a file on a busy disk
        return settings

    async def newer() -> Settings:
        return make_settings(tmp_path, "[bots]\nreview_threshold = 42\n")

    one = asyncio.create_task(_reload(gw.gateway, older))
    await first_read.wait()
    await _reload(gw.gateway, newer)
    await one
    assert gw.gateway.settings.options.bots.review_threshold == 42
    assert gw.gateway.slot.host is not None
    assert gw.gateway.slot.host.settings.options.bots.review_threshold == 42


def test_a_supervised_worker_reloads_what_its_supervisor_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With several workers, each read the file itself on SIGHUP: a file written between their
    reads (a second quick edit, a write that is not atomic) left them on different configs after
    one reload. The supervisor now keeps what it read, and every worker reloads that."""
    started = tmp_path / "started.toml"
    started.write_text("", encoding="utf-8")
    monkeypatch.setenv(STARTED_CONFIG_ENV, str(started))
    assert sighup_snapshot() is None  # no SIGHUP yet (or a supervisor of an older version)
    write_sighup_snapshot(tmp_path, "[bots]\nreview_threshold = 41\n", [])
    (tmp_path / "gateway.toml").write_text("[bots]\nreview_threshold = 42\n", encoding="utf-8")
    assert sighup_snapshot() == "[bots]\nreview_threshold = 41\n"
    # A file the supervisor could not read: every worker refuses the reload for the same reason.
    write_sighup_snapshot(tmp_path, None, ["gateway.toml: cannot read: No such file or directory"])
    with pytest.raises(ConfigError) as refused:
        sighup_snapshot()
    assert refused.value.problems == ["gateway.toml: cannot read: No such file or directory"]
    # One that cannot be written (a full disk; here a folder in the way) is not left stale:
    # the workers read the file themselves, not the reload before.
    write_sighup_snapshot(tmp_path, "[bots]\nreview_threshold = 41\n", [])
    (tmp_path / "sighup.json.new").mkdir()
    with pytest.raises(OSError):
        write_sighup_snapshot(tmp_path, "[bots]\nreview_threshold = 43\n", [])
    assert sighup_snapshot() is None
    monkeypatch.delenv(STARTED_CONFIG_ENV)
    assert sighup_snapshot() is None  # one process: it reads the file


async def test_a_reload_keeps_the_bots_windows_while_they_count_alike(
    tmp_path: Path, start_gateway: GatewayFactory, upstream_server: object
) -> None:
    """A reload (a payout rule edited, a threshold moved) emptied the bots addon's velocity
    windows: a burst under way went on as new clicks, ``allow``. They now go on while they count
    alike; a new window or table size starts them empty, as they would not compare."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    limits = "[bots]\nmax_per_ip = 3\nreview_threshold = 40\n"
    gw = await start_gateway(await upstream_server(app), limits)  # type: ignore[operator]

    async def land() -> list[str]:
        async with gw.session.get(f"{gw.url}/p?utm_source=news") as resp:
            assert resp.status == 200
        return list((await gw.api("/api/touchpoints"))["items"][-1]["reasons"])

    for _ in range(3):
        assert "ip_velocity" not in await land()
    assert "ip_velocity" in await land()  # the 4th from one address within the window
    moved = limits.replace("review_threshold = 40", "review_threshold = 45")
    assert await gw.gateway.reload(make_settings(tmp_path, moved)) == []
    assert "ip_velocity" in await land(), "the burst goes on past the reload"
    window = moved + "window_seconds = 120\n"
    assert await gw.gateway.reload(make_settings(tmp_path, window)) == []
    assert "ip_velocity" not in await land(), "a new window counts anew"


async def test_a_page_reloaded_just_after_a_config_reload_is_no_second_landing(
    tmp_path: Path, start_gateway: GatewayFactory, upstream_server: object
) -> None:
    """The campaign addon's memory of recent landings (``campaign.repeat_seconds``) was emptied
    by a config reload: the visitor's reload of the tagged page just after it counted twice."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    gw = await start_gateway(await upstream_server(app), "[bots]\nreview_threshold = 40\n")  # type: ignore[operator]
    async with gw.session.get(f"{gw.url}/p?utm_source=news") as resp:
        cookie = resp.cookies["gw_vid"].value
    moved = "[bots]\nreview_threshold = 45\n"
    assert await gw.gateway.reload(make_settings(tmp_path, moved)) == []
    async with gw.session.get(f"{gw.url}/p?utm_source=news", headers={"Cookie": f"gw_vid={cookie}"}) as resp:
        assert resp.status == 200
    assert len((await gw.api("/api/touchpoints"))["items"]) == 1


async def test_a_reload_that_brings_a_bad_body_limit_above_max_body_says_so_once(
    tmp_path: Path, start_gateway: GatewayFactory, upstream_server: object, caplog: pytest.LogCaptureFixture
) -> None:
    """``[webhooks]`` changes live: a SIGHUP that sets ``bad_body_limit`` above ``max_body``
    (a limit that never applies) is warned of as ``gateway check`` and the start warn of it,
    naming both keys; a reload that keeps it says nothing again, one that fixes it nothing."""
    app = web.Application()
    upstream = await upstream_server(app)  # type: ignore[operator]
    gw = await start_gateway(upstream)
    above = "[webhooks]\nmax_body = 2048\nbad_body_limit = 4096\n"

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if "webhooks.bad_body_limit" in r.getMessage()]

    caplog.set_level("WARNING", logger="gateway")
    assert await gw.gateway.reload(make_settings(tmp_path, above)) == []
    assert said() == [
        "reload: webhooks.bad_body_limit (4096) is above webhooks.max_body (2048): no larger body is"
        " taken, so the limit cuts no bad event's body; set bad_body_limit to at most 2048, or raise"
        " webhooks.max_body if larger deliveries are meant"
    ]
    assert await gw.gateway.reload(make_settings(tmp_path, above)) == []
    assert (
        await gw.gateway.reload(
            make_settings(tmp_path, "[webhooks]\nmax_body = 4096\nbad_body_limit = 4096\n")
        )
        == []
    )
    assert len(said()) == 1


async def test_a_reload_that_brings_a_channel_rule_no_landing_matches_says_so_once(
    tmp_path: Path, start_gateway: GatewayFactory, upstream_server: object, caplog: pytest.LogCaptureFixture
) -> None:
    """``[channels]`` changes live too: a reload that brings a rule's click ID no landing carries
    (a typo) said nothing, where ``gateway check`` and the start warn of it; the reload now says
    it once, as it says a ``[webhooks]`` warning."""
    app = web.Application()
    upstream = await upstream_server(app)  # type: ignore[operator]
    gw = await start_gateway(upstream)
    typo = '[[channels.rules]]\nchannel = "Paid Social"\nclick_ids = ["fbcild"]\n'

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if "channels.rules[0].click_ids[0]" in r.getMessage()]

    caplog.set_level("WARNING", logger="gateway")
    assert await gw.gateway.reload(make_settings(tmp_path, typo)) == []
    assert [line.partition(": ")[0] for line in said()] == ["reload"]
    assert "'fbcild' is not in campaign.click_ids" in said()[0]
    assert await gw.gateway.reload(make_settings(tmp_path, typo)) == []
    assert len(said()) == 1


async def test_a_reload_whose_reports_cannot_open_applies_nothing(
    tmp_path: Path, start_gateway: GatewayFactory, upstream_server: object, caplog: pytest.LogCaptureFixture
) -> None:
    """The new chain went live before the reports were opened: a reporting store unreadable
    just then left the proxy on the new rules (redirecting) with the reports on the old ones,
    and a failure after that step was logged as "the running config is kept". Now everything
    that can fail is prepared first: such a reload applies nothing, as its line says."""
    mirror = f"[central]\nurl = 'env:GW_CENTRAL'\nmirror_path = '{tmp_path / 'mirror.db'}'\n"
    central = {"GW_CENTRAL": "postgresql://gw@127.0.0.1:1/none"}  # no server: the mirror's rounds wait
    upstream = await upstream_server(web.Application())  # type: ignore[operator]
    gw = await start_gateway(upstream, mirror, central)
    engine = gw.gateway.admin_app[REPORTING_KEY].reports
    # The reporting store (the mirror) is no database just now: a new engine cannot open it.
    await asyncio.to_thread((tmp_path / "mirror.db").write_bytes, b"not a database" * 100)
    changed = (
        mirror
        + "[proxy]\nstrip = 'redirect'\n"
        + "[attribution]\nlookback_days = { awareness = 10.0 }\ntier_patterns = {}\n"
    )

    async def reread() -> Settings:
        return make_settings(tmp_path, changed, **central)

    caplog.set_level(logging.INFO, "gateway")
    await _reload(gw.gateway, reread)
    assert "reload failed, the running config is kept" in caplog.text, caplog.text
    assert "config reloaded" not in caplog.text
    async with gw.session.get(f"{gw.url}/?utm_source=news", allow_redirects=False) as resp:
        assert resp.status != 302  # forwarded, stripped, as the running config says
    assert gw.gateway.settings.options.proxy.strip != "redirect"
    assert (
        gw.gateway.slot.host is not None and gw.gateway.slot.host.settings.options.proxy.strip != "redirect"
    )
    assert gw.gateway.admin_app[REPORTING_KEY].reports is engine
    assert gw.gateway.settings.options.attribution.lookback_days != {"awareness": 10.0}
