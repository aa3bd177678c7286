"""The gateway command: check, init and run, as an operator would call them."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from gateway import reporting
from tests.conftest import ENV
from tests.gatewayproc import GatewayProcess
from tests.terminal import on_a_terminal

ROOT = Path(__file__).resolve().parents[2]
BOT_WEIGHTS = tomllib.loads((ROOT / "gateway.toml").read_text(encoding="utf-8"))["bots"]["weights"]


def gateway(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        cwd=cwd or ROOT,
        timeout=30,
    )


def test_check_example_config_ok_and_masks_secrets() -> None:
    done = gateway("check", "-c", str(ROOT / "gateway.toml"), env=ENV)
    assert done.returncode == 0, done.stderr
    assert ENV["GATEWAY_SECRET"] not in done.stdout and ENV["GATEWAY_ADMIN_TOKEN"] not in done.stdout
    assert 'secret = "env:GATEWAY_SECRET"' in done.stdout
    tomllib.loads(done.stdout)  # the resolved settings print as TOML


def test_check_lists_every_problem_by_key(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[proxy]\nlisten = 'x'\nstrip = 'nope'\n[storage]\nbogus = 1\n")
    done = gateway("check", "-c", str(cfg), env=ENV)
    assert done.returncode == 2
    assert "proxy.strip: expected one of" in done.stderr
    assert "storage.bogus: unknown key" in done.stderr
    assert "Traceback" not in done.stderr


def test_check_refuses_a_block_action_the_pipeline_has_no_bots_addon_for(tmp_path: Path) -> None:
    """``bots.on_block = "block"`` with ``bots`` left out of ``proxy.addons`` passed the check,
    and the gateway then refused nothing."""
    cfg = tmp_path / "gw.toml"
    cfg.write_text("[proxy]\naddons = ['identity', 'campaign']\n[bots]\non_block = 'block'\n")
    done = gateway("check", "-c", str(cfg), env=ENV)
    assert done.returncode == 2, done.stderr
    assert 'bots.on_block: "block" refuses nothing while "bots" is not in proxy.addons' in done.stderr
    assert 'add "bots" to proxy.addons' in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("command", ["check", "run"])
def test_check_and_run_name_the_table_a_misplaced_key_belongs_to(tmp_path: Path, command: str) -> None:
    """Keys an operator puts in the wrong place: above every header, and below a sub-table's
    header that took it (until 2026-12-07 ``unknown table`` and ``unknown key`` alone)."""
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        "upstream = 'http://127.0.0.1:9'\n[bots]\n[bots.weights]\ncrawler = 50\nreview_threshold = 40\n"
    )
    done = gateway(command, "-c", str(cfg), env=ENV)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    said = done.stderr.splitlines()
    assert said[0] == f"gateway: {cfg}: 2 problem(s):", said
    assert said[1:] == [
        "  upstream: a key of [proxy], written above every table header, where no key goes;"
        " write it below the [proxy] header",
        "  bots.weights.review_threshold: unknown key; review_threshold is a key of [bots], not of"
        " bots.weights: a key written below a [bots.weights] header is bots.weights's, up to the next"
        " header (allowed: " + ", ".join(BOT_WEIGHTS) + ")",
    ], said


def test_check_names_every_missing_required_key_and_warns_of_a_missing_geoip_file(tmp_path: Path) -> None:
    """A walkthrough's findings: msgspec named one missing field at a time, in its own words
    ("object missing required field path"); and a GeoIP database that does not exist (geo then
    turns itself off) passed the check without a word."""
    cfg = tmp_path / "rule.toml"
    cfg.write_text('[[identity.rules]]\nname = "a"\n')
    done = gateway("check", "-c", str(cfg), env=ENV)
    assert done.returncode == 2
    for name in ("path", "status", "user_id"):  # every one, each named as its own problem
        said = f"identity.rules[0].{name}: required, not set in this [[identity.rules]] entry"
        assert said in done.stderr, done.stderr
    cfg.write_text('[geo]\ncountry_db = "nope.mmdb"\n')
    done = gateway("check", "-c", str(cfg), env=ENV)
    assert done.returncode == 0, done.stderr
    nope = tmp_path / "nope.mmdb"
    assert f"gateway: warning: geo.country_db: {nope} does not exist: geo lookups will be off" in done.stderr


def test_check_warns_of_a_bad_body_limit_above_the_body_limit(tmp_path: Path) -> None:
    """``webhooks.bad_body_limit`` above ``webhooks.max_body`` was taken without a word: no body
    that large is received, so the limit never applies. Harmless, so a warning naming both."""
    cfg = tmp_path / "gw.toml"
    cfg.write_text("[webhooks]\nmax_body = 2048\nbad_body_limit = 4096\n")
    done = gateway("check", "-c", str(cfg), env=ENV)
    assert done.returncode == 0, done.stderr
    assert done.stderr == (
        "gateway: warning: webhooks.bad_body_limit (4096) is above webhooks.max_body (2048): no larger"
        " body is taken, so the limit cuts no bad event's body; set bad_body_limit to at most 2048, or"
        " raise webhooks.max_body if larger deliveries are meant\n"
    )
    cfg.write_text("[webhooks]\nmax_body = 2048\nbad_body_limit = 2048\n")
    done = gateway("check", "-c", str(cfg), env=ENV)
    assert (done.returncode, done.stderr) == (0, "")


def test_check_warns_that_a_strict_id_cookie_restarts_the_journey_at_each_campaign_click(
    tmp_path: Path,
) -> None:
    """``identity.samesite = "Strict"``: a browser sends no Strict cookie on a visit that starts
    on another site (an ad, a search result, an email link), yet keeps the cookie such a
    visit's answer sets (RFC 6265bis §5.7, top-level navigations). So every campaign click
    looked like a new visitor, and the ID set on it replaced the visitor's own: one journey per
    click, taken without a word. Allowed (a policy may ask for it), but said, naming the key."""
    cfg = tmp_path / "gw.toml"
    cfg.write_text('[identity]\nsamesite = "Strict"\n')
    done = gateway("check", "-c", str(cfg), env=ENV)
    assert done.returncode == 0, done.stderr
    assert done.stderr == (
        'gateway: warning: identity.samesite: "Strict" keeps the ID cookie off every visit that starts'
        " on another site (an ad, a search result, an email link), so the gateway sees a new visitor"
        " there and the ID it sets replaces the visitor's own: each campaign click starts a new"
        ' journey; use "Lax" (the default), which browsers send on such a visit\n'
    )
    cfg.write_text('[identity]\nsamesite = "Lax"\n')
    done = gateway("check", "-c", str(cfg), env=ENV)
    assert (done.returncode, done.stderr) == (0, "")


def test_check_and_reclassify_warn_of_a_rules_click_id_no_landing_carries(tmp_path: Path) -> None:
    """A ``[[channels.rules]]`` click ID not in ``campaign.click_ids`` (a typo) never matches a
    landing: ``gateway reclassify --dry-run`` said nothing would change, and nothing said why."""
    cfg = tmp_path / "gw.toml"
    cfg.write_text('[[channels.rules]]\nchannel = "Meta"\nclick_ids = ["fbcild"]\n')
    warning = (
        "gateway: warning: channels.rules[0].click_ids[0]: 'fbcild' is not in campaign.click_ids, so no"
        " landing carries it (a signed event's click_id_kind may) and the rule never matches one; add"
        " it to campaign.click_ids, or correct the name\n"
    )
    done = gateway("check", "-c", str(cfg), env=ENV)
    assert (done.returncode, done.stderr) == (0, warning)
    # --quiet (the systemd unit's, before each start and reload, which log the same warnings
    # themselves): counted on the OK line, not said twice in the journal.
    done = gateway("check", "-c", str(cfg), "--quiet", env=ENV)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.endswith(
        "; 1 warning not shown (--quiet): the gateway logs them as it starts,"
        " `gateway check` without --quiet prints them\n"
    ), done.stdout
    assert done.stdout.count("\n") == 1
    done = gateway("reclassify", "-c", str(cfg), "--dry-run", env=ENV)
    assert done.stderr.startswith(warning), done.stderr


def test_check_without_secrets_explains_how(tmp_path: Path) -> None:
    done = gateway("check", "-c", str(ROOT / "gateway.toml"))
    assert done.returncode == 2
    assert "identity.secret: environment variable GATEWAY_SECRET is not set" in done.stderr


def test_check_refuses_a_folder_at_storage_path(tmp_path: Path) -> None:
    """`check` said OK, and only `run` (or `doctor`) found that the store could not be opened."""
    (tmp_path / "data").mkdir()
    cfg = tmp_path / "gw.toml"
    cfg.write_text('[storage]\npath = "data"\n')
    done = gateway("check", "-c", str(cfg), env=ENV)
    assert done.returncode == 2 and done.stdout == "", done
    folder = tmp_path / "data"
    said = f"  storage.path: {folder} is a folder, not a file; point storage.path at the store the gateway"
    assert said in done.stderr and f"like {folder / 'gateway.db'}" in done.stderr, done.stderr
    cfg.write_text('[storage]\npath = "data/gw.db"\n')  # not there yet: run creates it
    assert gateway("check", "-c", str(cfg), env=ENV).returncode == 0


def test_a_sink_url_from_the_environment_is_checked_never_printed_and_needed_to_send(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.toml"
    sink = "[[sinks]]\nname = 's'\nkind = 'webhook'\nurl = 'env:SINK_URL'\nsecret = 'env:SINK'\n"
    cfg.write_text(f'[storage]\npath = "gw.db"\n{sink}')
    env = {**ENV, "SINK": "k" * 32, "SINK_URL": "https://hook:t0ps3cret@127.0.0.1:9/in?token=t0ps3cret"}
    done = gateway("check", "-c", str(cfg), env=env)
    assert done.returncode == 0, done.stderr
    assert 'url = "env:SINK_URL"' in done.stdout and "t0ps3cret" not in done.stdout + done.stderr
    del env["SINK_URL"]
    done = gateway("check", "-c", str(cfg), env=env)
    assert done.returncode == 2 and "  sinks[0].url: environment variable SINK_URL is not set" in done.stderr
    done = gateway("sink", "send", "--user", "u1", "-c", str(cfg), env=env)
    expected = f"gateway: {cfg}: sinks[0].url: environment variable SINK_URL is not set\n"
    assert (done.returncode, done.stderr) == (2, expected), done


def test_check_missing_file() -> None:
    done = gateway("check", "-c", "/nonexistent/gateway.toml", env=ENV)
    assert done.returncode == 2 and "cannot read" in done.stderr and "Traceback" not in done.stderr
    # How to get one is said, as `gateway doctor` says it (until 2026-12-05 the error alone).
    hint = (
        "gateway: no config file at /nonexistent/gateway.toml: write a starter one with"
        " `gateway init -c /nonexistent/gateway.toml`, or name yours with -c FILE\n"
    )
    assert done.stderr.endswith(hint), done.stderr
    assert gateway("run", "--dev", "-c", "/nonexistent/gateway.toml").stderr.endswith(hint)
    # Every command says it (README, Command-line reference); `gateway report` printed the
    # error alone until 2026-12-07.
    done = gateway("report", "-c", "/nonexistent/gateway.toml", env=ENV)
    assert done.returncode == 2 and done.stderr.endswith(hint), done.stderr


def test_init_writes_a_config_that_checks(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.toml"
    done = gateway("init", "-c", str(cfg))
    assert done.returncode == 0, done.stderr
    assert "export GATEWAY_SECRET=" in done.stdout
    # The site is named too: the file leaves it empty, which serves the demo shop (until
    # 2026-12-05 nothing said so, and the README's steps ran the demo in production).
    assert 'Set proxy.upstream in it to your site, an origin like "http://127.0.0.1:8000"' in done.stdout
    assert gateway("check", "-c", str(cfg), env=ENV).returncode == 0
    assert gateway("init", "-c", str(cfg)).returncode == 1  # never overwrites silently
    assert gateway("init", "-c", str(cfg), "--force").returncode == 0


def test_run_refuses_without_secrets() -> None:
    done = gateway("run", "-c", str(ROOT / "gateway.toml"))
    assert done.returncode == 2 and "--dev" in done.stderr


def test_shipped_container_config_checks() -> None:
    done = gateway("check", "-c", str(ROOT / "deploy" / "gateway.container.toml"), env=ENV)
    assert done.returncode == 0, done.stderr


def _config(
    tmp_path: Path, proxy_listen: str = "127.0.0.1:0", store: str = "gw.db", workers: int = 0
) -> Path:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        f'[proxy]\nlisten = "{proxy_listen}"\nupstream = "http://127.0.0.1:9"\nworkers = {workers}\n'
        f'[admin]\nlisten = "127.0.0.1:0"\n[storage]\npath = "{store}"\n'
    )
    return cfg


@pytest.mark.parametrize("workers", [1, 2])
def test_run_explains_a_busy_port(tmp_path: Path, workers: int) -> None:
    """Named by its config key too (a second gateway on the same ports said only the address)."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = gateway("run", "-c", str(_config(tmp_path, f"127.0.0.1:{port}", workers=workers)), env=ENV)
    assert done.returncode == 1
    said = f"gateway: cannot start: cannot listen on 127.0.0.1:{port} (proxy.listen): Address already in use"
    assert said in done.stderr and "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_run_explains_a_listen_host_that_does_not_resolve(tmp_path: Path, workers: int) -> None:
    """One process said the resolver's code as `Unknown error -2`, several a bare `Name or service
    not known` naming no key. (An unknown interface as the scope: refused without asking DNS.)"""
    done = gateway("run", "-c", str(_config(tmp_path, "[fe80::1%nosuchif]:0", workers=workers)), env=ENV)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    said = (
        "gateway: cannot start: cannot listen on [fe80::1%nosuchif]:0 (proxy.listen): fe80::1%nosuchif"
        " cannot be resolved to an address of this machine (Name or service not known)"
    )
    assert said in done.stderr, done.stderr


def test_run_explains_an_unreadable_store(tmp_path: Path) -> None:
    (tmp_path / "gw.db").write_bytes(b"this is not a database" * 100)
    done = gateway("run", "-c", str(_config(tmp_path)), env=ENV)
    assert done.returncode == 1
    assert "cannot open the store" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_run_says_why_the_store_cannot_open_and_names_storage_path(tmp_path: Path, workers: int) -> None:
    """One process said "cannot start: File exists" for a store under a file, and both
    "unable to open database file" for a store that is a folder: now what doctor says."""
    (tmp_path / "folder.db").mkdir()
    (tmp_path / "afile").write_text("x")
    for store, why in (
        ("folder.db", f"{tmp_path / 'folder.db'} is a folder; point storage.path at a file, like"),
        ("afile/gw.db", f"{tmp_path / 'afile/gw.db'}: cannot create it, {tmp_path / 'afile'} is a file; "
         "point storage.path elsewhere"),
    ):  # fmt: skip
        done = gateway("run", "-c", str(_config(tmp_path, store=store, workers=workers)), env=ENV)
        assert done.returncode == 1
        assert done.stderr.startswith(f"gateway: cannot open the store (storage.path): {why}"), done.stderr


def test_run_refuses_a_store_from_a_newer_gateway(tmp_path: Path) -> None:
    """A downgrade (the previous release put back over a store the new one migrated): refused,
    naming both schema versions and the two ways on, not "upgrade" alone (until 2026-12-07),
    which an operator who went back on purpose could not act on."""
    from storage.migrate import migrations

    with sqlite3.connect(tmp_path / "gw.db") as db:
        db.execute("PRAGMA user_version = 999")
    done = gateway("run", "-c", str(_config(tmp_path)), env=ENV)
    assert done.returncode == 1
    assert "newer than this gateway" in done.stderr and "Traceback" not in done.stderr
    assert done.stderr == (
        f"gateway: cannot open the store (storage.path): {tmp_path / 'gw.db'} has schema 999, newer than this"
        f" gateway ({migrations()[-1][0]}): a newer gateway migrated it, and migrations are not undone; run"
        " that version (or a newer one), or restore the store's backup from before that upgrade to run"
        " this one\n"
    )


@pytest.mark.parametrize(
    "command",
    [
        ("report",),
        ("report", "--fraud"),
        ("report", "--payouts"),
        ("import", "--list"),
        ("reclassify", "--dry-run", "--no-progress"),
        ("replay-bad",),
        ("replay-bad", "--dry-run"),
    ],
    ids=" ".join,
)
def test_commands_that_read_the_store_refuse_one_a_newer_gateway_migrated(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """``gateway run`` refuses a store a newer gateway migrated; the commands that read it without
    migrating read it on (a report of tables whose meaning may have changed, replay-bad wrote
    into it), exit 0. Each refuses it, naming the store's schema and this gateway's."""
    import asyncio

    from gateway.metrics import Metrics
    from storage.local import LocalStore
    from storage.migrate import migrations
    from tests.conftest import make_settings

    async def made() -> None:
        store = LocalStore(tmp_path / "gw.db", make_settings(tmp_path).options.storage, Metrics())
        await store.open()
        await store.close()

    asyncio.run(made())
    with sqlite3.connect(tmp_path / "gw.db") as db:
        db.execute("PRAGMA user_version = 999")
    newest = migrations()[-1][0]
    done = gateway(*command, "-c", str(_config(tmp_path)), env=ENV)
    assert done.returncode == 1, done
    assert f"schema version 999, newer than this gateway knows ({newest}); upgrade the gateway" in done.stderr
    assert str(tmp_path / "gw.db") in done.stderr and "Traceback" not in done.stderr, done.stderr
    with sqlite3.connect(tmp_path / "gw.db") as db:
        assert db.execute("PRAGMA user_version").fetchone() == (999,)


def test_check_renders_rules_as_loadable_toml() -> None:
    """``gateway check`` prints the resolved config, rules included, as TOML that loads back."""
    from gateway.cli import render_toml
    from gateway.config import decode_options, load_settings, masked

    text = """
[identity]
user_id_storage = "encrypt"

[[identity.rules]]
name = "login"
path = "/login"
status = [302]
user_id = { form = "username" }

[[conversions]]
name = "purchase"
path = "/checkout"
status = [303]
value = { location_query = "total" }
currency = "EUR"

[[conversions]]
name = "lead"
path = "/lead"
status = [200]
value = 5
"""
    options = load_settings(None, text=text, environ=ENV).options
    rendered = render_toml(masked(options))
    assert "[[identity.rules]]" in rendered and rendered.count("[[conversions]]") == 2
    decoded, problems = decode_options(tomllib.loads(rendered))
    assert problems == [] and decoded == options


CHECKED_RULES = """
[[sources]]
name = "billing"
secrets = ["env:BILLING_WEBHOOK_SECRET"]

[[sources]]
name = "stripe"
signature = "stripe"
secrets = ["env:STRIPE_WEBHOOK_SECRET"]
fields = {type = "/type", event_id = "/id", value = "/data/object/amount_total"}
types = {"checkout.session.completed" = "conversion"}
ignore_types = ["charge.refunded"]
defaults = {name = "purchase"}
value_scale = "minor"

[[sources]]
name = "segment"
format = "segment"
secrets = ["env:SEGMENT_WRITE_KEY"]

[[conversions]]
name = "purchase"
path = "/checkout"
status = [303]
value = {location_query = "total"}
currency = "EUR"
when = [{form = "step", equals = "pay"}]

[[identity.rules]]
name = "login"
path = "/login"
status = [302]
user_id = {form = "username"}

[[channels.rules]]
channel = "Newsletter"
medium = "email"
"""


def test_check_prints_of_each_rule_and_sender_what_differs_from_the_defaults(tmp_path: Path) -> None:
    """Every ``[[sources]]`` entry came out with all its empty and default keys, and each rule's
    value source with the kinds it does not use (``user_id = {form = "username", request_json
    = "", …, verify = true}``): what the operator wrote was buried. The top-level tables still
    show every resolved value, and the output still loads back as the same config."""
    from gateway.config import decode_options, load_settings

    secrets = {n: "s" * 40 for n in ("BILLING_WEBHOOK_SECRET", "STRIPE_WEBHOOK_SECRET", "SEGMENT_WRITE_KEY")}
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(CHECKED_RULES)
    done = gateway("check", "-c", str(cfg), env={**ENV, **secrets})
    assert done.returncode == 0, done.stderr
    printed, written = tomllib.loads(done.stdout), tomllib.loads(CHECKED_RULES)
    for table in ("sources", "conversions"):
        assert printed[table] == written[table], done.stdout
    for table in ("identity", "channels"):
        assert printed[table]["rules"] == written[table]["rules"], done.stdout
    assert printed["storage"]["batch_size"] == 256  # a table's defaults are still shown
    decoded, problems = decode_options(printed)
    assert problems == [] and decoded == load_settings(cfg, environ={**ENV, **secrets}).options


def _old_store(path: Path) -> None:
    """A store at schema version 2 (before channels) holding three touchpoints."""
    from storage.migrate import migrations

    with sqlite3.connect(path) as db:
        for version, _, sql in migrations():
            if version <= 2:
                db.executescript(sql)
        db.execute("PRAGMA user_version = 2")
        rows = [
            ("01", None, None, "www.google.com"),
            ("02", "newsletter", "email", None),
            ("03", None, None, "search.example.net"),
        ]
        for id_, source, medium, referrer in rows:
            db.execute(
                "INSERT INTO touchpoints"
                " (id, ts, node, visitor_key, source, medium, referrer_host, landing_path)"
                " VALUES (?, '2026-11-01T00:00:00.000000Z', 'n', 'v', ?, ?, ?, '/')",
                (id_, source, medium, referrer),
            )


def _channels(path: Path) -> list[tuple[str, str | None]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT id, channel FROM touchpoints ORDER BY id").fetchall()


def test_report_on_a_store_an_older_gateway_left_says_what_migrates_it(tmp_path: Path) -> None:
    """Installed but not started yet (Upgrading), the new version's ``gateway report`` on the
    store the old one left said only SQLite's ``no such column: t.channel``, and ``--fraud``
    ``no such table: effective_touchpoints (not a gateway store? …)``, which it is. Each says the
    store's version and what migrates it; the report, which only reads, does not."""
    from storage.migrate import migrations

    store = tmp_path / "gw.db"
    _old_store(store)
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[storage]\npath = "gw.db"\n')
    older = (
        f"(the store is at schema version 2, older than this gateway's, {migrations()[-1][0]}:"
        " `gateway run` migrates it when it starts"
    )
    for args in ((), ("--fraud",), ("--payouts",)):
        done = gateway("report", *args, "-c", str(cfg))
        assert done.returncode == 1 and older in done.stderr, (args, done.stderr)
        assert "not a gateway store" not in done.stderr
    with sqlite3.connect(store) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (2,)


def test_reclassify_recomputes_channels_after_a_rule_change(tmp_path: Path) -> None:
    store = tmp_path / "gw.db"
    _old_store(store)
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[storage]\npath = "gw.db"\n')

    dry = gateway("reclassify", "-c", str(cfg), "--dry-run")  # no secrets needed
    assert dry.returncode == 0, dry.stderr
    assert "3 touchpoints, 3 changed (dry run: nothing written)" in dry.stdout
    with sqlite3.connect(store) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (2,)  # not even migrated

    done = gateway("reclassify", "-c", str(cfg), "--batch-size", "2")
    assert done.returncode == 0, done.stderr
    assert "3 touchpoints, 3 changed" in done.stdout and "(none) -> Referral: 1" in done.stdout
    assert _channels(store) == [("01", "Organic Search"), ("02", "Email"), ("03", "Referral")]

    cfg.write_text('[storage]\npath = "gw.db"\n[channels]\nreferrers = { "search.example.net" = "search" }\n')
    assert "1 changed (dry run" in gateway("reclassify", "-c", str(cfg), "--dry-run").stdout
    done = gateway("reclassify", "-c", str(cfg))
    assert "3 touchpoints, 1 changed" in done.stdout and "Referral -> Organic Search: 1" in done.stdout
    assert _channels(store)[2] == ("03", "Organic Search")
    assert "3 touchpoints, 0 changed" in gateway("reclassify", "-c", str(cfg)).stdout


def test_reclassify_keeps_a_self_referral_internal(tmp_path: Path) -> None:
    """A campaign-tagged landing from the site's own blog was recorded Internal (the gateway
    knew the site's host then); reclassify, which does not, turned it into a Referral that
    took the credit. A new rule still reaches the other touchpoints."""
    store = tmp_path / "gw.db"
    _old_store(store)
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[storage]\npath = "gw.db"\n')
    assert gateway("reclassify", "-c", str(cfg)).returncode == 0
    with sqlite3.connect(store) as db:
        db.execute(
            "INSERT INTO touchpoints (id, ts, node, visitor_key, campaign, referrer_host, landing_path,"
            " channel) VALUES ('04', '2026-11-01T00:00:00.000000Z', 'n', 'v', 'x', 'blog.shop.com', '/',"
            " 'Internal')"
        )
    rule = '[[channels.rules]]\nchannel = "Newsletter"\nmedium = "email"\n'
    cfg.write_text('[storage]\npath = "gw.db"\n' + rule)
    done = gateway("reclassify", "-c", str(cfg))
    assert "4 touchpoints, 1 changed" in done.stdout and "Email -> Newsletter: 1" in done.stdout, done.stdout
    assert _channels(store)[1:] == [("02", "Newsletter"), ("03", "Referral"), ("04", "Internal")]


def test_reclassify_undoes_an_internal_rule_once_it_knows_the_sites_host(tmp_path: Path) -> None:
    """A rule ``channel = "Internal"`` tried on a referrer, then removed: reclassify read each
    Internal touchpoint's referrer as the site's own (it does not store the site's host), so the
    reddit.com referrals it had turned Internal stayed so for good, out of every model's credit.
    Given the site's host (``--host``, else ``proxy.public_origin``), it knows which are the
    site's own: the others are classified again, the site's blog stays Internal."""
    store = tmp_path / "gw.db"
    _old_store(store)
    cfg = tmp_path / "gateway.toml"
    base = '[storage]\npath = "gw.db"\n'
    cfg.write_text(base + '[[channels.rules]]\nchannel = "Internal"\nreferrer = ".*reddit\\\\.com"\n')
    assert gateway("reclassify", "-c", str(cfg)).returncode == 0
    with sqlite3.connect(store) as db:
        db.execute(
            "INSERT INTO touchpoints (id, ts, node, visitor_key, referrer_host, landing_path, channel)"
            " VALUES ('04', '2026-11-01T00:00:00.000000Z', 'n', 'v', 'www.reddit.com', '/', 'Internal')"
        )
        db.execute(
            "INSERT INTO touchpoints (id, ts, node, visitor_key, campaign, referrer_host, landing_path,"
            " channel) VALUES ('05', '2026-11-01T00:00:00.000000Z', 'n', 'v', 'x', 'blog.shop.com', '/',"
            " 'Internal')"
        )
    cfg.write_text(base)  # the rule removed
    done = gateway("reclassify", "-c", str(cfg))
    assert "5 touchpoints, 0 changed" in done.stdout, done.stdout  # the host unknown: as before
    done = gateway("reclassify", "-c", str(cfg), "--host", "www.shop.com", "--dry-run")
    assert (
        "5 touchpoints, 1 changed (dry run" in done.stdout and "Internal -> Organic Social: 1" in done.stdout
    )
    cfg.write_text(base + '[proxy]\npublic_origin = "https://www.shop.com"\n')
    done = gateway("reclassify", "-c", str(cfg))
    assert "5 touchpoints, 1 changed" in done.stdout, done.stdout + done.stderr
    assert _channels(store)[3:] == [("04", "Organic Social"), ("05", "Internal")]
    assert "5 touchpoints, 0 changed" in gateway("reclassify", "-c", str(cfg)).stdout


def a_long_reclassify(store: Path, rows: int = 30_000) -> None:
    """A store of ``rows`` touchpoints from Bing with no channel yet: a reclassify long enough
    to be interrupted (``until_some_channels_written``)."""
    _old_store(store)
    with sqlite3.connect(store) as db:
        db.executemany(
            "INSERT INTO touchpoints (id, ts, node, visitor_key, referrer_host, landing_path)"
            " VALUES (?, '2026-11-01T00:00:00.000000Z', 'n', 'v', 'www.bing.com', '/')",
            ((f"1{n:07d}",) for n in range(rows)),
        )


def until_some_channels_written(store: Path) -> None:
    """Until a running ``gateway reclassify`` has written some batches of ``store`` (bounded)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(0.05)
        db = sqlite3.connect(store)
        try:
            if db.execute("SELECT count(channel) FROM touchpoints").fetchone()[0] > 10:
                return
        except sqlite3.OperationalError:  # not migrated yet: no channel column
            pass
        finally:
            db.close()


@pytest.mark.parametrize(("sig", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_reclassify_can_be_interrupted_and_run_again(tmp_path: Path, sig: str, code: int) -> None:
    """Ctrl-C or SIGTERM: each finished batch is kept, the operator is told so (no traceback,
    no misleading store error), and the next run finishes the rest. (SIGTERM ended it with no
    word: a `timeout` or a service stop did not say how far it got.)"""
    import signal

    store = tmp_path / "gw.db"
    a_long_reclassify(store)
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[storage]\npath = "gw.db"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "reclassify", "-c", str(cfg), "--batch-size", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    until_some_channels_written(store)
    proc.send_signal(signal.Signals[sig])
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == code, (out, err)
    assert "reclassify: interrupted after" in err and "run it again to finish" in err, err
    assert "Traceback" not in err and "cannot" not in err
    with sqlite3.connect(store) as db:
        kept = db.execute("SELECT count(channel) FROM touchpoints").fetchone()[0]
    assert 0 < kept < 30_003
    done = gateway("reclassify", "-c", str(cfg))
    # Counts with thousands separators, as `gateway import` prints them.
    assert f"30,003 touchpoints, {30_003 - kept:,} changed" in done.stdout, (kept, done.stdout)
    assert "30,003 touchpoints, 0 changed" in gateway("reclassify", "-c", str(cfg)).stdout


@pytest.mark.parametrize("later", [0.002, 0.01, 0.03])
def test_reclassify_stopped_by_timeout_s_two_sigterms_says_so_once(tmp_path: Path, later: float) -> None:
    """``timeout`` sends SIGTERM twice (to the command, then to its process group): one stop,
    as for one, however far apart they come. (Until 2026-12-05 the second, landing in the
    first one's clean-up, printed ``RuntimeError: Event loop is closed`` tracebacks and
    ``Task was destroyed but it is pending!`` after the summary, or the process never ended.)"""
    import signal

    store = tmp_path / "gw.db"
    a_long_reclassify(store, 150_000)
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[storage]\npath = "gw.db"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "reclassify", "-c", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"},
    )
    until_some_channels_written(store)
    proc.send_signal(signal.SIGTERM)
    time.sleep(later)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, (out, err)
    assert err.startswith("reclassify: interrupted after") and err.count("\n") == 1, err


def test_reclassify_shows_its_progress_on_a_terminal(tmp_path: Path) -> None:
    _old_store(tmp_path / "gw.db")
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[storage]\npath = "gw.db"\n')
    drawn = on_a_terminal("reclassify", "-c", str(cfg), "--batch-size", "1")
    assert "reclassify: 100%" in drawn and "3/3" in drawn, drawn
    assert "3 touchpoints, 3 changed" in drawn
    quiet = on_a_terminal("reclassify", "-c", str(cfg), "--no-progress")
    assert "%|" not in quiet and "3 touchpoints, 0 changed" in quiet, quiet
    assert "%|" not in gateway("reclassify", "-c", str(cfg)).stderr  # not a terminal: no bar
    closed = subprocess.run(  # stderr closed (2>&-), as cron lines may have it: no bar, no error
        ["sh", "-c", f'exec "{sys.executable}" -m gateway reclassify -c "{cfg}" 2>&-'],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert closed.returncode == 0 and "3 touchpoints, 0 changed" in closed.stdout, closed


def test_reclassify_explains_its_problems(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[storage]\npath = "missing.db"\n')
    done = gateway("reclassify", "-c", str(cfg))
    assert done.returncode == 1 and "no store at" in done.stderr
    cfg.write_text("[channels]\nreferrers = { 'x.com' = 'news' }\n")
    done = gateway("reclassify", "-c", str(cfg))
    assert done.returncode == 2 and 'channels.referrers."x.com": unknown class' in done.stderr
    done = gateway("reclassify", "-c", str(cfg), "--batch-size", "0")
    assert done.returncode == 2 and "--batch-size" in done.stderr and "Traceback" not in done.stderr


def test_check_prints_tables_of_options_as_valid_toml(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        '[channels]\nreferrers = { "kagi.com" = "search/Kagi" }\n'
        '[[channels.rules]]\nchannel = "Podcasts"\nmedium = "podcast"\n'
    )
    done = gateway("check", "-c", str(cfg), env=ENV)
    assert done.returncode == 0, done.stderr
    printed = tomllib.loads(done.stdout)
    assert printed["channels"]["referrers"] == {"kagi.com": "search/Kagi"}
    assert printed["channels"]["rules"][0]["channel"] == "Podcasts"
    assert printed["attribution"]["lookback_days"]["conversion"] == 7.0


def test_run_refuses_a_corrupt_geoip_database_naming_its_key(tmp_path: Path) -> None:
    (tmp_path / "GeoLite2-ASN.mmdb").write_bytes(b"\x00" * 4096)
    cfg = tmp_path / "gw.toml"
    cfg.write_text('[geo]\nasn_db = "GeoLite2-ASN.mmdb"\n[storage]\npath = "gw.db"\n')
    done = gateway("run", "-c", str(cfg), env=ENV)
    assert done.returncode == 2
    assert f"geo.asn_db: cannot read {tmp_path / 'GeoLite2-ASN.mmdb'} as a MaxMind database" in done.stderr
    assert "Traceback" not in done.stderr


def test_check_prints_nested_tables_and_creators(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text("[bots.weights]\ncrawler = 70\n[[creators]]\nid = 'anna'\nverified = true\n")
    done = gateway("check", "-c", str(cfg), env=ENV)
    assert done.returncode == 0, done.stderr
    printed = tomllib.loads(done.stdout)
    assert printed["bots"]["weights"]["crawler"] == 70
    assert printed["creators"] == [{"id": "anna", "verified": True}]  # as written: no `name = ""`


def test_shipped_compose_config_checks() -> None:
    env = {**ENV, "GATEWAY_CENTRAL_URL": "postgresql://gateway:pw@postgres:5432/tracking"}
    done = gateway("check", "-c", str(ROOT / "deploy" / "gateway.compose.toml"), env=env)
    assert done.returncode == 0, done.stderr
    assert "GATEWAY_CENTRAL_URL" in done.stdout and "pw@postgres" not in done.stdout


def _report_store(tmp_path: Path, events: list[Any]) -> Path:
    """A store holding ``events`` and a config that reads it with the report tests' payouts."""
    import asyncio

    from gateway.metrics import Metrics
    from gateway.options import StorageOptions
    from storage.local import LocalStore
    from tests.gateway.test_reports_api import PAYOUTS

    async def fill() -> None:
        store = LocalStore(tmp_path / "gw.db", StorageOptions(), Metrics())
        await store.open()
        await store.write(events)
        await store.close()

    asyncio.run(fill())
    cfg = tmp_path / "gw.toml"
    cfg.write_text(f"[storage]\npath = 'gw.db'\n{PAYOUTS}")
    return cfg


def test_report_and_reclassify_need_no_central_or_sink_variable(tmp_path: Path) -> None:
    """`gateway report` and `reclassify` read store files and connect to nothing, so the
    variables of `central.url` and of a sink's URL and secret need not be set where they run (an
    analyst's box): until 2026-12-05 both exited 2 on `central.url: environment variable … is
    not set`, though the README says the report needs no secret. The mirror is still read."""
    import shutil

    from tests.gateway.test_reports_api import EVENTS

    cfg = _report_store(tmp_path, EVENTS)
    shutil.copy(tmp_path / "gw.db", tmp_path / "mirror.db")  # a mirror holding every node's rows
    cfg.write_text(
        "[storage]\npath = 'absent.db'\n"  # the mirror is what is read, not this node's store
        "[central]\nurl = 'env:GW_TEST_CENTRAL'\nmirror_path = 'mirror.db'\n"
        "[[sinks]]\nname = 'crm'\nkind = 'webhook'\nurl = 'env:GW_TEST_SINK_URL'\n"
        "secret = 'env:GW_TEST_SINK_SECRET'\n"
    )
    done = gateway("report", "-c", str(cfg), "--since", "2026-11-01", "--until", "2026-12-01")
    assert done.returncode == 0, done.stderr
    assert "read the reporting mirror" in done.stderr and "total EUR" in done.stdout
    done = gateway("reclassify", "-c", str(cfg), "--store", "mirror", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("reclassify (mirror "), done.stdout
    # A command that connects still says what is missing.
    done = gateway("sync", "--once", "-c", str(cfg))
    assert done.returncode == 2 and "central.url: environment variable GW_TEST_CENTRAL" in done.stderr


def test_report_of_a_period_without_conversions_says_so(tmp_path: Path) -> None:
    """A newcomer's first report, over landings but no conversion yet: until 2026-12-05 a bare
    "(no rows)", which did not say that conversions are what the report counts."""
    from tests.gateway.test_reports_api import EVENTS

    cfg = _report_store(tmp_path, [e for e in EVENTS if type(e).__name__ == "Touchpoint"])
    period = ("--since", "2026-11-01", "--until", "2026-12-01")
    said = "(no rows: no conversions in this period; [[conversions]] rules and signed events record them)"
    for extra in ((), ("--timeseries",)):
        done = gateway("report", "-c", str(cfg), *period, *extra)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[4] == said, done.stdout


def test_an_empty_report_of_a_conversion_name_or_population_says_which(tmp_path: Path) -> None:
    """A period full of purchases, asked for a name none has (a typo) or a population none of
    its conversions reached: until 2026-12-06 each said "no conversions in this period" and
    pointed at the [[conversions]] rules, sending the analyst to check the wrong thing."""
    from tests.gateway.test_reports_api import EVENTS

    cfg = _report_store(tmp_path, EVENTS)
    period = ("--since", "2026-11-01", "--until", "2026-12-01")
    for extra, said in [
        (
            ("--conversion", "purchse"),
            "(no rows: no conversion named 'purchse' in this period; recorded in it: 'purchase')",
        ),
        (
            ("--population", "no_consent", "--timeseries"),
            "(no rows: no conversion in this period has a touchpoint of population no_consent in its"
            " lookback window)",
        ),
        (
            ("--conversion", "purchase", "--population", "no_consent"),
            "(no rows: no conversion named 'purchase' in this period has a touchpoint of population"
            " no_consent in its lookback window)",
        ),
    ]:
        done = gateway("report", "-c", str(cfg), *period, *extra)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[4] == said, done.stdout
    # A period with no conversion at all still says so, whatever it is limited to.
    done = gateway(
        "report", "-c", str(cfg), "--since", "2027-01-01", "--until", "2027-02-01", "--conversion", "x"
    )
    assert done.stdout.splitlines()[4].startswith("(no rows: no conversions in this period;"), done.stdout


def test_a_paths_report_of_no_conversion_says_why_under_its_summary(tmp_path: Path) -> None:
    """The paths report has its buckets whatever the period holds, so a name none of the
    period's conversions has (a typo) printed a table of zeros and `conversions 0`, where the
    attribution report of the same query names the ones recorded: it says so under its summary,
    as the attribution report says it in place of its rows."""
    from tests.gateway.test_reports_api import EVENTS

    cfg = _report_store(tmp_path, EVENTS)
    period = ("--since", "2026-11-01", "--until", "2026-12-01")
    for extra, said in [
        (
            ("--conversion", "purchse"),
            "(no conversions: no conversion named 'purchse' in this period; recorded in it: 'purchase')",
        ),
        (
            ("--population", "no_consent"),
            "(no conversions: no conversion in this period has a touchpoint of population no_consent"
            " in its lookback window)",
        ),
    ]:
        done = gateway("report", "-c", str(cfg), "--paths", *period, *extra)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        summary = next(i for i, line in enumerate(lines) if line.startswith("conversions 0, "))
        assert lines[summary + 1] == said, done.stdout
    done = gateway("report", "-c", str(cfg), "--paths", "--since", "2027-01-01", "--until", "2027-02-01")
    assert done.stdout.splitlines()[-1] == (
        "(no conversions in this period; [[conversions]] rules and signed events record them)"
    ), done.stdout
    # A period with conversions adds nothing under its summary.
    done = gateway("report", "-c", str(cfg), "--paths", *period)
    assert done.stdout.splitlines()[-1].startswith("conversions "), done.stdout


def test_a_payout_report_that_credits_nothing_says_why_under_its_table(tmp_path: Path) -> None:
    """The payout report lists every creator clicked in the period whatever it credits, so a
    conversion name none of the period's conversions has (a typo) printed each creator with
    `approve`, 0 conversions and a payout of 0, and nothing else: a partner manager read it as
    nothing owed (until 2026-12-07). It says why under its table, as the paths report does
    under its summary, and on stderr for a download."""
    from tests.gateway.test_reports_api import EVENTS

    cfg = _report_store(tmp_path, EVENTS)
    period = ("--since", "2026-11-01", "--until", "2026-12-01")
    said = (
        "(no conversions credited: no conversion named 'purchse' in this period; recorded in it: 'purchase')"
    )
    done = gateway("report", "-c", str(cfg), "--payouts", *period, "--conversion", "purchse")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[:2] for line in lines[4:6]] == [["cr_ana", "approve"], ["cr_ben", "approve"]]
    assert lines[-1] == said, done.stdout
    done = gateway(
        "report", "-c", str(cfg), "--payouts", *period, "--conversion", "purchse", "--format", "csv"
    )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 3  # the header and the two creators, as the table
    assert done.stderr == f"gateway report: {said[1:-1]}\n"
    # Its totals, none, alike (they said "no rows").
    done = gateway(
        "report", "-c", str(cfg), "--payouts", *period, "--conversion", "purchse", "--format", "csv",
        "--table", "totals",
    )  # fmt: skip
    assert (
        (done.returncode, done.stdout, done.stderr)
        == (
            0,
            "currency,payout\n",  # text mode: the CSV's CRLF read as a newline
            f"gateway report: {said[1:-1]}\n",
        )
    )
    # A name of the period credited to no creator is no typo: that is not said then (from the
    # 11th, cr_ben's click is followed by the newsletter's, which takes the USD order), only
    # that there is nothing to approve.
    done = gateway(
        "report", "-c", str(cfg), "--payouts", "--since", "2026-11-11", "--until", "2026-12-01",
        "--conversion", "purchase",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[4].split()[:2] == ["cr_ben", "approve"], done.stdout
    assert lines[5:] == [f"({reporting.NOTHING_TO_APPROVE})"], done.stdout
    # A report that credits something adds nothing under its totals.
    done = gateway("report", "-c", str(cfg), "--payouts", *period, "--conversion", "purchase")
    assert done.stdout.splitlines()[-1].startswith("total EUR: payout "), done.stdout
    assert done.stderr == ""


def test_an_empty_payouts_report_says_no_creator_was_clicked_or_credited(tmp_path: Path) -> None:
    """Payouts list every creator clicked or credited in the period: until 2026-12-06 a period
    with none printed a bare "(no rows)"."""
    from tests.gateway.test_reports_api import EVENTS

    cfg = _report_store(tmp_path, EVENTS)
    done = gateway("report", "-c", str(cfg), "--payouts", "--since", "2027-01-01", "--until", "2027-02-01")
    assert done.stdout.splitlines()[4] == (
        "(no rows: no click with a creator ID in this period, and no conversion credited to one)"
    ), done.stdout
    period = ("--since", "2026-11-01", "--until", "2026-12-01")
    done = gateway("report", "-c", str(cfg), "--payouts", *period, "--population", "no_consent")
    assert done.stdout.splitlines()[4] == (
        "(no rows: no click of population no_consent with a creator ID in this period, and no"
        " conversion credited to one)"
    ), done.stdout


def test_report_prints_attribution_payouts_and_exports(tmp_path: Path) -> None:
    from tests.gateway.test_reports_api import EVENTS

    cfg = _report_store(tmp_path, EVENTS)
    period = ("--since", "2026-11-01", "--until", "2026-12-01")
    done = gateway("report", "-c", str(cfg), *period)  # no secrets needed
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("attribution: 2026-11-01T00:00:00Z .. 2026-12-01T00:00:00Z, model linear")
    header = lines[2].split()
    assert header == ["group", "currency", "conversions", "value"]
    assert lines[4].split() == ["Affiliates", "EUR", "1.333334", "43.35"]  # largest first, aligned
    assert lines[4].index("43.35") + 5 == len(lines[2])  # numbers right-aligned under their header
    assert "total EUR: conversions 3, value 115.01" in done.stdout

    done = gateway("report", "-c", str(cfg), *period, "--payouts", "--model", "linear", "--format", "csv")
    assert done.returncode == 0, done.stderr
    rows = done.stdout.splitlines()
    assert rows[0] == "creator_id,status,tier,rule,currency,clicks,conversions,value,payout"
    assert "cr_ana,approve,gold,tier gold: 10% of value,EUR,1,0.333334,33.34,3.33" in rows

    done = gateway(
        "report", "-c", str(cfg), *period, "--model", "all", "--group-by", "creator_id", "--format", "ndjson"
    )
    assert done.returncode == 0, done.stderr
    rows = {r["group"]: r for r in map(json.loads, done.stdout.splitlines()) if r["currency"] == "EUR"}
    assert (rows["cr_ana"]["first_touch_value"], rows["cr_ana"]["last_touch_value"]) == (0, 100)

    assert "touches  3" in gateway("report", "-c", str(cfg), *period, "--paths").stdout
    empty = gateway("report", "-c", str(cfg), "--since", "2020-01-01", "--until", "2020-01-02", "--paths")
    assert "mean_touches (none), median_touches (none)" in empty.stdout, empty.stdout


def test_report_csv_keeps_formulas_inert(tmp_path: Path) -> None:
    """A creator ID or source a visitor or a sender chose is exported with a leading ' when a
    spreadsheet would run it; numbers stay numbers, NDJSON keeps the text exact."""
    from tests.gateway.test_reports_api import conversion, tp

    events = [
        tp("v1", 0, "Affiliates", source='=HYPERLINK("http://evil","x")', creator_id="@SUM(A1)"),
        tp("v1", 1, "Affiliates", source="-1", creator_id='=cmd|"/c calc"!A1'),
        conversion(2, 10.00, "v1"),
    ]
    cfg = _report_store(tmp_path, events)
    period = ("--since", "2026-11-01", "--until", "2026-12-01")
    done = gateway("report", "-c", str(cfg), *period, "--payouts", "--model", "linear", "--format", "csv")
    assert done.returncode == 0, done.stderr
    assert list(csv.reader(io.StringIO(done.stdout)))[1:] == [
        [
            '\'=cmd|"/c calc"!A1',
            "approve",
            "standard",
            "tier standard: CPA 5",
            "EUR",
            "1",
            "0.5",
            "5.00",
            "2.50",
        ],
        ["'@SUM(A1)", "approve", "standard", "tier standard: CPA 5", "EUR", "1", "0.5", "5.00", "2.50"],
    ]
    done = gateway("report", "-c", str(cfg), *period, "--group-by", "source", "--format", "csv")
    assert done.returncode == 0, done.stderr
    assert list(csv.reader(io.StringIO(done.stdout)))[1:] == [
        ["'-1", "EUR", "0.5", "5.00"],
        ['\'=HYPERLINK("http://evil","x")', "EUR", "0.5", "5.00"],
    ]
    done = gateway("report", "-c", str(cfg), *period, "--group-by", "source", "--format", "ndjson")
    groups = [json.loads(line)["group"] for line in done.stdout.splitlines()]
    assert groups == ["-1", '=HYPERLINK("http://evil","x")']


def test_report_output_does_not_depend_on_the_locale(tmp_path: Path) -> None:
    """Under a locale that cannot encode a campaign's name (ASCII, Latin-1), the CSV is still
    UTF-8, byte for byte the API's, and the table shows the character's escape: no
    traceback."""
    from tests.gateway.test_reports_api import conversion, tp

    events = [tp("v1", 0, "Paid Social", campaign="日本語セール"), conversion(1, 10.00, "v1")]
    cfg = _report_store(tmp_path, events)
    period = ("--since", "2026-11-01", "--until", "2026-12-01", "--group-by", "campaign")
    ascii_locale = {"PATH": "/usr/bin:/bin", "PYTHONIOENCODING": "ascii"}
    command = [sys.executable, "-m", "gateway", "report", "-c", str(cfg), *period]
    raw = subprocess.run([*command, "--format", "csv"], capture_output=True, env=ascii_locale, cwd=ROOT)
    assert raw.returncode == 0, raw.stderr
    assert raw.stdout.splitlines()[1] == "日本語セール,EUR,1,10.00".encode()  # UTF-8, whatever this locale
    done = gateway("report", "-c", str(cfg), *period, env=ascii_locale)
    assert done.returncode == 0, done.stderr
    assert "\\u65e5\\u672c\\u8a9e" in done.stdout and "Traceback" not in done.stderr
    # Cut to a width, the escapes are what is cut and counted (until 2026-12-05 the row was
    # laid out before its escapes, and stood out of line and past the width).
    done = gateway("report", "-c", str(cfg), *period, "--width", "40", env=ascii_locale)
    lines = done.stdout.splitlines()
    assert all(len(line) <= 40 for line in lines), done.stdout  # the title wrapped too
    header = lines.index("group       currency  conversions  value")
    assert lines[header : header + 3] == [
        "group       currency  conversions  value",
        "----------  --------  -----------  -----",
        "\\u65e5\\...  EUR                 1  10.00",
    ]


def test_report_cuts_long_names_to_the_terminal_width(tmp_path: Path) -> None:
    """On a terminal the table fits its width (``COLUMNS`` first, else the terminal's own): the
    widest names are cut with one ``…``, the numbers whole. Until 2026-12-05 a 150-character
    campaign made every line 150 columns wide, wrapped by the terminal. A pipe and CSV get
    whole names; ``--width N`` cuts to N anywhere, ``--width 0`` never."""
    from gateway.textwidth import width
    from tests.gateway.test_reports_api import conversion, tp

    long = "black_friday_" + "x" * 137  # 150 characters
    events = [
        tp("v1", 0, "Paid Social", campaign=long),
        tp("v2", 0, "Email", campaign="夏のセール👍\U0001f3fd"),  # 12 columns: whole
        conversion(1, 10.00, "v1"),
        conversion(1, 5.00, "v2"),
    ]
    cfg = _report_store(tmp_path, events)
    report = ("report", "-c", str(cfg), "--since", "2026-11-01", "--until", "2026-12-01")
    report += ("--group-by", "campaign")

    def cut_to(group: int) -> list[str]:
        """The two rows, their group cut to ``group`` columns (the line: ``group`` + 30)."""
        return [
            f"black_friday_{'x' * (group - 14)}…  EUR                 1  10.00",
            "夏のセール👍\U0001f3fd" + " " * (group - 12) + "  EUR                 1   5.00",
        ]

    def rows(drawn: str) -> list[str]:
        return [line for line in drawn.splitlines() if "  EUR  " in line]

    drawn = on_a_terminal(*report)  # 120 columns
    assert rows(drawn) == cut_to(90), drawn
    assert max(width(line) for line in drawn.splitlines()) == 120
    assert rows(on_a_terminal(*report, env={"COLUMNS": "60"})) == cut_to(30)
    assert rows(on_a_terminal(*report, "--width", "50")) == cut_to(20)
    # Narrower than 8 columns of names allow: nothing cut, the lines wrap.
    assert rows(on_a_terminal(*report, env={"COLUMNS": "38"})) == [
        "black_f…  EUR                 1  10.00",
        "夏のセ…   EUR                 1   5.00",
    ]
    narrow = [line for line in rows(on_a_terminal(*report, env={"COLUMNS": "37"})) if long in line]
    assert len(narrow) == 1, narrow
    whole = [line for line in rows(on_a_terminal(*report, "--width", "0")) if long in line]
    assert len(whole) == 1 and width(whole[0]) == 180

    # Piped: whole, whatever COLUMNS says; --width still cuts.
    piped = gateway(*report, env={"COLUMNS": "60"})
    assert piped.returncode == 0, piped.stderr
    assert f"{long}  EUR                 1  10.00" in piped.stdout.splitlines()
    assert rows(gateway(*report, "--width", "60").stdout) == cut_to(30)
    # CSV and NDJSON: never cut, on a terminal too.
    drawn = on_a_terminal(*report, "--format", "csv", env={"COLUMNS": "60"})
    assert f"{long},EUR,1,10.00" in drawn.splitlines(), drawn
    done = gateway(*report, "--format", "ndjson", "--width", "60")
    assert done.returncode == 2 and done.stderr == (
        "gateway report: --width: cuts the table only, not --format ndjson\n"
    )
    done = gateway(*report, "--width", "-1")
    assert done.returncode == 2 and "argument --width: must be a whole number 0..100000" in done.stderr


def test_report_takes_a_population_as_the_api_does(tmp_path: Path) -> None:
    """``--population`` is the report endpoints' ``population``: only that population's
    touchpoints, and the conversions that have one."""
    from tests.gateway.test_reports_api import conversion, tp

    events = [
        tp("v1", 0, "Email", consent="cookie"),
        conversion(1, 10.00, "v1"),
        tp("v2", 0, "Display", consent="cookieless"),
        conversion(1, 20.00, "v2"),
    ]
    cfg = _report_store(tmp_path, events)
    period = ("--since", "2026-11-01", "--until", "2026-12-01", "--format", "ndjson")
    done = gateway("report", "-c", str(cfg), *period)
    assert done.returncode == 0, done.stderr
    assert [json.loads(row)["group"] for row in done.stdout.splitlines()] == ["Display", "Email"]
    for flag in ((), ("--timeseries",), ("--payouts",)):
        done = gateway("report", "-c", str(cfg), *period, *flag, "--population", "cookieless")
        assert done.returncode == 0, done.stderr
        rows = [json.loads(row) for row in done.stdout.splitlines()]
        assert all(row.get("group") == "Display" for row in rows), (flag, rows)
    done = gateway("report", "-c", str(cfg), *period, "--paths", "--population", "cookieless")
    assert sum(json.loads(row)["conversions"] for row in done.stdout.splitlines()[:11]) == 1
    # Refused, and told why: its visitors have no touchpoints to credit (the README spoke of
    # `populations (aggregate)` in the reports; only the dashboard's populations count them).
    done = gateway("report", "-c", str(cfg), "--population", "aggregate")
    assert (
        done.returncode == 2
        and (
            "--population: the aggregate population (Sec-GPC, DNT) has no touchpoints to credit, only daily"
            " counts of its landings: the dashboard's populations count them; choose from cookie,"
            " cookieless, no_consent"
        )
        in done.stderr
    ), done.stderr
    done = gateway("report", "-c", str(cfg), "--population", "martians")
    assert done.returncode == 2 and (
        "--population: expected one of cookie, cookieless, no_consent, got 'martians'" in done.stderr
    ), done.stderr


@pytest.mark.timeout(180)  # a dozen report commands: 51 s on a loaded machine, near the 60 s default
def test_report_prints_the_fraud_report(tmp_path: Path) -> None:
    """``gateway report --fraud`` is /api/fraud in a terminal: every group, any period (none:
    all time), by creator unless --group-by says otherwise, and CSV/NDJSON as the API's."""
    from tests.gateway.test_fraud import click

    events = [
        click(0, "anna", "allow", channel="Paid Social"),
        click(1, "anna", "block", "http_library", "datacenter", channel="Paid Social"),
        click(2, "ben", "review", "headless", channel="Display"),
    ]
    cfg = _report_store(tmp_path, events)
    done = gateway("report", "-c", str(cfg), "--fraud")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "fraud: the first touchpoint .. now, group_by creator_id"
    assert lines[2].split()[:4] == ["group", "clicks", "allow", "review"]
    assert lines[4].split() == [
        *("anna", "2", "1", "0", "1", "0", "0"),
        *("0.5000", "0.0000", "0.5000", "0.0000", "0.0000"),
        *("2", "2", "datacenter:", "1;", "http_library:", "1"),
    ]
    assert lines[5].split()[:2] == ["ben", "1"]

    period = ("--since", "2026-11-02T00:01:00Z", "--until", "2026-12-01")
    done = gateway("report", "-c", str(cfg), "--fraud", *period, "--group-by", "channel", "--format", "csv")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [(r["group"], r["clicks"], r["block"]) for r in rows] == [
        ("Display", "1", "0"),
        ("Paid Social", "1", "1"),
    ]
    # For Excel where the list separator is ";" (German, French…), or a tab: the same rows,
    # a cell holding the delimiter quoted (the reasons), a share still with its point.
    fraud = ("report", "-c", str(cfg), "--fraud", *period, "--group-by", "channel", "--format", "csv")
    for name, delimiter in (("semicolon", ";"), ("tab", "\t")):
        split = gateway(*fraud, "--delimiter", name)
        assert split.returncode == 0, split.stderr
        assert list(csv.reader(io.StringIO(split.stdout), delimiter=delimiter)) == list(
            csv.reader(io.StringIO(done.stdout))
        )
        assert split.stdout.splitlines()[0].startswith(delimiter.join(["group", "clicks", "allow"]))
    semicolons = gateway(*fraud, "--delimiter", "semicolon").stdout.splitlines()
    assert semicolons[2].startswith("Paid Social;1;0;0;1;0;0;0.0000;0.0000;1.0000;"), semicolons
    assert semicolons[2].endswith(';"datacenter: 1; http_library: 1"'), semicolons
    assert gateway(*fraud, "--delimiter", "comma").stdout == done.stdout
    refused = gateway("report", "-c", str(cfg), "--fraud", "--delimiter", "semicolon")
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr == "gateway report: --delimiter: applies to --format csv only, not --format table\n"
    refused = gateway(*fraud, "--delimiter", "pipe")
    assert refused.returncode == 2 and "--delimiter: invalid choice: 'pipe'" in refused.stderr
    # Its period spelled as every report's (it had .000000 microseconds).
    done = gateway("report", "-c", str(cfg), "--fraud", *period)
    assert done.stdout.splitlines()[0].startswith("fraud: 2026-11-02T00:01:00Z .. 2026-12-01T00:00:00Z"), done
    done = gateway("report", "-c", str(cfg), "--fraud", "--since", "2026-12-01", "--until", "2026-11-01")
    assert done.returncode == 2 and done.stderr.startswith("gateway report: --since: must be before --until")
    # A since after now, no until: refused as the other reports refuse it (was an empty table).
    done = gateway("report", "-c", str(cfg), "--fraud", "--since", "2099-01-01")
    assert done.returncode == 2 and done.stdout == "", done.stdout
    assert done.stderr.startswith(
        "gateway report: --since: must be before --until (2099-01-01T00:00:00.000000Z"
    )
    assert done.stderr.endswith("; --until left out: now)\n"), done.stderr


@pytest.mark.timeout(180)  # nine report commands: 43 s on a loaded machine, near the 60 s default
def test_report_explains_its_problems(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text("[storage]\npath = 'none.db'\n")
    done = gateway("report", "-c", str(cfg))
    assert done.returncode == 1 and "no store at" in done.stderr
    done = gateway("report", "-c", str(cfg), "--since", "last week")
    assert done.returncode == 2 and "--since: expected an ISO 8601" in done.stderr
    done = gateway("report", "-c", str(cfg), "--payouts", "--model", "all")
    assert done.returncode == 2 and "--model" in done.stderr
    done = gateway("report", "-c", str(cfg), "--model", "best")
    assert done.returncode == 2 and "invalid choice" in done.stderr
    done = gateway("report", "-c", str(cfg), "--verdicts", "allow,reveiw")
    assert done.returncode == 2 and "--verdicts: expected comma-separated verdicts among" in done.stderr
    assert "got 'reveiw'" in done.stderr
    done = gateway("report", "-c", str(cfg), "--verdicts", "allow review")
    assert done.returncode == 2
    assert "got 'allow review'; separate them with commas: allow,review\n" in done.stderr
    done = gateway("report", "-c", str(cfg), "--verdicts", "")
    assert done.returncode == 2 and "--verdicts: an empty verdict name (a stray comma?)" in done.stderr
    done = gateway("report", "-c", str(cfg), "--payouts", "--verdicts", "review")  # no allow
    assert done.returncode == 2
    assert "--verdicts: a payout report pays the allowed traffic and lists the rest apart; name allow" in (
        done.stderr
    )
    assert "(--verdicts allow,review), got 'review'" in done.stderr
    done = gateway("report", "-c", str(cfg), "--conversion", "")
    assert done.returncode == 2 and "--conversion: expected a conversion name" in done.stderr
    done = gateway("report", "-c", str(cfg), "--conversion", "purchase ")  # no conversion has the space
    assert done.returncode == 2 and "as conversions are recorded), got 'purchase '" in done.stderr
    assert "Traceback" not in done.stderr


def test_commands_reading_the_store_say_so_of_a_folder_or_no_store_there(tmp_path: Path) -> None:
    """A folder at storage.path was SQLite's `unable to open database file` to every command but
    `run`; and `sink send` and `sync --once` made a missing store anew, empty, and said `0
    messages sent` (or delivered its 0 rows)."""
    (tmp_path / "data").mkdir()
    sink = '[[sinks]]\nname = "crm"\nkind = "webhook"\nurl = "http://127.0.0.1:9/x"\n'
    sink += 'secret = "env:GATEWAY_SECRET"\n'
    cfg = tmp_path / "gw.toml"
    cfg.write_text(f'[storage]\npath = "data"\n[privacy]\nretention_days = 30\n{sink}')
    folder = f"gateway: the store {tmp_path / 'data'} (storage.path) is a folder, not a file;"
    for command in (
        ("report",),
        ("reclassify",),
        ("erase", "u1"),
        ("purge",),
        ("replay-bad",),
        ("sink", "send", "--user", "u1"),
        ("import", os.devnull, "--format", "segment"),
    ):
        done = gateway(*command, "-c", str(cfg), env=ENV)
        assert done.returncode == 1 and folder in done.stderr, (command, done.stderr)
        assert "unable to open database file" not in done.stderr, (command, done.stderr)
    central = {**ENV, "CENTRAL": "postgresql://gw:pw@127.0.0.1:9/gw"}  # never reached
    cfg.write_text('[storage]\npath = "data"\n[central]\nurl = "env:CENTRAL"\n')
    done = gateway("sync", "--once", "-c", str(cfg), env=central)
    assert done.returncode == 1 and folder in done.stderr, done.stderr  # "sync failed: unable to open …"
    cfg.write_text(f'[storage]\npath = "data/gw.db"\n{sink}[central]\nurl = "env:CENTRAL"\n')
    for command in (("sink", "send", "--user", "u1"), ("sync", "--once")):
        done = gateway(*command, "-c", str(cfg), env=central)
        assert done.returncode == 1 and "gateway: no store at" in done.stderr and done.stdout == "", done
    assert list((tmp_path / "data").iterdir()) == []  # none made


def test_mirror_once_without_a_mirror_names_what_is_not_set(tmp_path: Path) -> None:
    """`mirror --once` on a node with central.url but no central.mirror_path said "central.mirror_path
    (and central.url) is not set", central.url being set."""
    cfg = tmp_path / "gw.toml"
    cfg.write_text('[storage]\npath = "gw.db"\n[central]\nurl = "env:CENTRAL"\n')
    central = {**ENV, "CENTRAL": "postgresql://gw:pw@127.0.0.1:9/gw"}  # never reached
    done = gateway("mirror", "--once", "-c", str(cfg), env=central)
    said = f"gateway: {cfg}: central.mirror_path is not set: there is no reporting mirror\n"
    assert done.returncode == 2 and done.stderr == said, done.stderr
    done = gateway("reclassify", "--store", "mirror", "-c", str(cfg), env=central)  # said alike
    said = f"gateway: {cfg}: --store mirror: central.mirror_path is not set: there is no reporting mirror\n"
    assert done.returncode == 2 and done.stderr == said, done.stderr
    cfg.write_text('[storage]\npath = "gw.db"\n')
    done = gateway("mirror", "--once", "-c", str(cfg), env=ENV)
    assert done.returncode == 2 and "central.mirror_path is not set (and needs central.url, which is not" in (
        done.stderr
    ), done.stderr


def test_report_refuses_an_option_its_report_does_not_take(tmp_path: Path) -> None:
    """As the endpoints refuse a query parameter they do not take (GET
    /api/attribution/paths?model=linear is a 400), each report refuses the options it does not
    take, naming the option and the report, instead of printing a report that ignored it."""
    cfg = tmp_path / "gw.toml"
    cfg.write_text("[storage]\npath = 'none.db'\n")
    options = {
        "--model": "linear",
        "--group-by": "source",
        "--since": "2025-01-01",
        "--until": "2026-12-01",
        "--conversion": "purchase",
        "--verdicts": "allow",
        "--population": "cookie",
        "--format": "csv",
        "--delimiter": "semicolon",
    }
    refused = {"attribution": set(), "timeseries": set(), "paths": {"--model", "--group-by"}}
    refused["payouts"] = {"--group-by"}
    refused["fraud"] = {"--model", "--conversion", "--verdicts", "--population"}
    for kind, not_taken in refused.items():
        flag = () if kind == "attribution" else (f"--{kind}",)
        for option in not_taken:
            done = gateway("report", "-c", str(cfg), *flag, option, options[option])
            assert done.returncode == 2, (kind, option, done.stderr)
            assert done.stderr.startswith(f"gateway report: {option}: does not apply to the {kind} report")
            assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
        # Every other option at once is taken: on to the store, which is missing.
        taken = [
            text for option, value in options.items() if option not in not_taken for text in (option, value)
        ]
        done = gateway("report", "-c", str(cfg), *flag, *taken)
        assert done.returncode == 1 and "no store at" in done.stderr, (kind, done.stderr)


def test_an_option_given_twice_is_refused_naming_it(tmp_path: Path) -> None:
    """argparse keeps an option's last value: ``sink send --user a --user b`` re-sent b alone,
    ``erase … -c prod.toml -c test.toml`` erased in the test store, ``report --model linear
    --model all`` printed one of the two. As the report endpoints refuse a parameter given
    twice, every command refuses such an option, before it reads a config or a store."""
    cfg = tmp_path / "gw.toml"
    cfg.write_text("[storage]\npath = 'gw.db'\n")
    cases = [
        (["sink", "send", "--user", "a", "--user", "b"], "--user: given twice ('a', then 'b')"),
        (
            ["erase", "alice", "-c", str(cfg), "--config", "other.toml"],
            f"-c/--config: given twice ({str(cfg)!r}",
        ),
        (
            ["report", "-c", str(cfg), "--model", "linear", "--model", "all"],
            "--model: given twice ('linear', then",
        ),
        (
            ["report", "-c", str(cfg), "--since", "2026-11-01", "--since", "2026-10-01"],
            "--since: given twice",
        ),
    ]
    for args, error in cases:
        done = gateway(*args, env=ENV)
        assert done.returncode == 2, (args, done.stderr)
        assert error in done.stderr.splitlines()[-1] and "give each option once" in done.stderr, done.stderr
    assert not (tmp_path / "gw.db").exists()  # refused before anything was opened
    done = gateway("report", "-c", str(cfg), "--model", "linear", "--format", "csv")
    assert done.returncode == 1 and "no store at" in done.stderr  # once each: on to the store


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        (["time=/t", "time=/u"], "gateway import: --field time: given twice (time=/t, then time=/u)"),
        (["nope=/x"], "gateway import: --field nope=/x: expected NAME=POINTER with NAME one of"),
        (["uri=req.uri"], 'gateway import: --field uri=req.uri: a JSON pointer starts with "/"'),
    ],
)
def test_import_refuses_a_wrong_field_before_it_reads_the_config(
    tmp_path: Path, fields: list[str], error: str
) -> None:
    """A `--field` the command line got wrong is said as the README's command reference says an
    option given twice is, before any config or store is read: until 2026-12-08 an import run
    without `GATEWAY_SECRET` set said the secret was missing, and only once it was set that
    `--field time` was given twice."""
    cfg = tmp_path / "gw.toml"
    cfg.write_text("[storage]\npath = 'gw.db'\n")
    log = tmp_path / "events.jsonl"
    log.write_text('{"t": "2026-12-01T10:00:00Z"}\n')
    options = [option for field in fields for option in ("--field", field)]
    done = gateway("import", str(log), "--format", "json-lines", *options, "-c", str(cfg))
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(error), done.stderr
    assert "GATEWAY_SECRET" not in done.stderr
    assert not (tmp_path / "gw.db").exists()


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (
            ["-", "-", "--format", "combined"],
            "gateway import: -: standard input can be read once; give - once",
        ),
        (["--list", "LOG"], "gateway import: --list and --undo RUN take no FILE, and not each other"),
        (["--undo", "1", "LOG"], "gateway import: --list and --undo RUN take no FILE, and not each other"),
        (["--list", "--undo", "1"], "gateway import: --list and --undo RUN take no FILE, and not each other"),
        ([], "gateway import: FILE… and --format are needed to import"),
        (["LOG"], "gateway import: FILE… and --format are needed to import"),
        (
            ["LOG", "--format", "combined", "--field", "time=/t"],
            "gateway import: --field: maps the fields of json-lines; --format combined has none to map",
        ),
    ],
)
def test_import_refuses_a_command_line_mistake_before_it_reads_the_config(
    tmp_path: Path, args: list[str], error: str
) -> None:
    """A command-line mistake that no config changes (standard input twice, a file with `--list`,
    no `--format`, a `--field` of a format without fields) is said, exit 2, before the config is
    read, as a wrong `--field` is: until 2026-12-08 a shell without `GATEWAY_SECRET` was told the
    secret was missing, and only once it was set what was wrong with the command line."""
    cfg = tmp_path / "gw.toml"
    cfg.write_text("[storage]\npath = 'gw.db'\n")
    log = tmp_path / "access.log"
    log.write_text('203.0.113.9 - - [01/Mar/2025:10:00:00 +0000] "GET / HTTP/1.1" 200 10 "-" "UA"\n')
    named = [str(log) if arg == "LOG" else arg for arg in args]
    done = gateway("import", *named, "-c", str(cfg))  # no GATEWAY_SECRET in its environment
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(error), done.stderr
    assert "GATEWAY_SECRET" not in done.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["access.log", "gw.toml"]


def test_import_refuses_standard_input_from_a_terminal_before_it_reads_the_config(tmp_path: Path) -> None:
    """`gateway import -` typed at a terminal, with no log piped in: said before the config is
    read (until 2026-12-08 a shell without `GATEWAY_SECRET` was told of the secret first)."""
    cfg = tmp_path / "gw.toml"
    cfg.write_text("[storage]\npath = 'gw.db'\n")
    drawn = on_a_terminal("import", "-", "--format", "combined", "--host", "shop.example", "-c", str(cfg))
    assert "gateway import: -: standard input is a terminal; pipe a log in" in drawn, drawn
    assert "GATEWAY_SECRET" not in drawn, drawn
    assert not (tmp_path / "gw.db").exists()


@pytest.mark.parametrize(
    ("flag", "key"),
    [("--listen", "proxy.listen"), ("--admin-listen", "admin.listen"), ("--admin-l", "admin.listen")],
)
def test_run_refuses_its_workers_listen_options_naming_the_config_key(
    tmp_path: Path, flag: str, key: str
) -> None:
    """``--listen`` is how the supervisor tells a worker its address; an operator's
    ``gateway run --listen 0.0.0.0:80`` was taken, and the gateway listened where the config said."""
    cfg = tmp_path / "gw.toml"
    # Ports of their own, should a regression start it (it would run until the 30 s timeout).
    cfg.write_text(
        "[storage]\npath = 'gw.db'\n[proxy]\nlisten = '127.0.0.1:0'\n[admin]\nlisten = '127.0.0.1:0'\n"
    )
    done = gateway("run", "-c", str(cfg), "--dev", flag, "127.0.0.1:1", env=ENV)
    assert done.returncode == 2, done.stderr
    if flag == "--admin-l":  # taken for --admin-listen until 2026-12-07; cut short, no option
        assert done.stderr.startswith("gateway run: error: unrecognized arguments: --admin-l 127.0.0.1:1")
        assert not (tmp_path / "gw.db").exists()
        return
    assert done.stderr.strip() == (
        f"gateway run: error: {flag} is not an option (the gateway gives it to its own worker"
        f" processes); set {key} in the config ({cfg}); see `gateway run --help`"
    )
    assert not (tmp_path / "gw.db").exists()  # refused before anything was opened


def test_run_refuses_worker_unless_its_supervisor_started_it(tmp_path: Path) -> None:
    """``--worker N``, hidden from ``--help``, typed by an operator started one lone worker: no
    supervisor to restart it or pass a reload on, no admin API (worker 0's, on sockets the
    supervisor hands). A supervisor's worker is told by its environment."""
    cfg = tmp_path / "gw.toml"
    # Ports of their own, should a regression start it (it would run until the 30 s timeout).
    cfg.write_text(
        "[storage]\npath = 'gw.db'\n[proxy]\nlisten = '127.0.0.1:0'\n[admin]\nlisten = '127.0.0.1:0'\n"
    )
    done = gateway("run", "-c", str(cfg), "--dev", "--worker", "3", env=ENV)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        "gateway run: error: --worker is not an option (it is internal: the gateway gives it to the"
        " worker processes it starts itself); run `gateway run -c FILE`, with proxy.workers in the"
        f" config ({cfg}) for several processes; see `gateway run --help`"
    )
    assert not (tmp_path / "gw.db").exists()  # refused before anything was opened
    # Its supervisor's environment: not refused (here it fails further on, on a config it cannot read).
    cfg.write_text("[proxy]\nlisten = 'not an address'\n")
    started = gateway(
        "run", "-c", str(cfg), "--dev", "--worker", "3", "--log-format", "text",
        env={**ENV, "GATEWAY_WORKER_GENERATED": ""},
    )  # fmt: skip
    assert "[worker 3] " in started.stderr and "proxy.listen: expected" in started.stderr, started.stderr
    assert "--worker is not an option" not in started.stderr


def test_report_refuses_a_table_its_report_or_format_has_not(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text("[storage]\npath = 'none.db'\n")
    for args, error in [
        (
            ("--table", "totals"),
            "--table: applies to --format csv or ndjson; the table prints the totals below its rows",
        ),
        (
            ("--paths", "--format", "csv", "--table", "totals"),
            "--table: expected one of rows, summary for the paths report, got 'totals'",
        ),
        (
            ("--format", "csv", "--table", "summary"),
            "--table: expected one of rows, totals for the attribution report",
        ),
        (("--fraud", "--format", "csv", "--table", "totals"), "--table: does not apply to the fraud report"),
        # A table the report has not is named so whatever the format: the payouts report has no
        # summary to print below its rows, as this said of it.
        (
            ("--payouts", "--table", "summary"),
            "--table: expected one of rows, totals for the payouts report, got 'summary'",
        ),
        (("--table", "summary"), "--table: expected one of rows, totals for the attribution report"),
        (("--format", "ndjson", "--bom"), "--bom: applies to --format csv only, not --format ndjson"),
    ]:
        done = gateway("report", "-c", str(cfg), *args)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith(f"gateway report: {error}"), done.stderr
    done = gateway("report", "-c", str(cfg), "--payouts", "--format", "csv", "--table", "totals")
    assert done.returncode == 1 and "no store at" in done.stderr  # taken: on to the store


def test_report_checks_its_period_as_the_report_api_does(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text("[storage]\npath = 'none.db'\n")
    for period, message in [
        (("--until", "0001-01-01"), "--until: expected an ISO 8601 date or date-time from 1970-01-01"),
        (("--since", "0001-01-01", "--until", "0001-01-02"), "--until: expected an ISO 8601"),
        (("--since", "0001-01-01", "--until", "2026-01-02"), "--since: expected an ISO 8601"),
        (("--until", "9999-12-31T23:00:00-05:00"), "--until: expected an ISO 8601"),
        (
            ("--since", "2026-11-02", "--until", "2026-11-01"),
            "--since: must be before --until (2026-11-02T00:00:00.000000Z >= 2026-11-01T00:00:00.000000Z)",
        ),
        (
            ("--since", "1970-01-01", "--until", "2026-01-01"),
            "--since: a report covers at most 3660 days; the earliest for this --until is"
            " 2015-12-25T00:00:00.000000Z, got 1970-01-01T00:00:00.000000Z",
        ),
        (("--since", ""), "--since: expected an ISO 8601"),  # not the default, as in the API
    ]:
        done = gateway("report", "-c", str(cfg), *period)
        assert done.returncode == 2, (period, done.stderr)
        assert done.stderr.startswith("gateway report: " + message), done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_report_on_a_file_that_is_no_gateway_store(tmp_path: Path) -> None:
    (tmp_path / "empty.db").write_bytes(b"")
    cfg = tmp_path / "gw.toml"
    cfg.write_text("[storage]\npath = 'empty.db'\n")
    done = gateway("report", "-c", str(cfg))
    assert done.returncode == 1 and "not a gateway store?" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_report_on_the_readme_worked_example(tmp_path: Path) -> None:
    """The README's worked journey stored as the gateway would store it: the report's
    columns are the worked-example table, and the console block in the README is its output."""
    import asyncio
    import re
    from datetime import UTC, datetime
    from decimal import Decimal

    from gateway.events import Binding, Conversion, Touchpoint, iso
    from gateway.ids import Uuid7
    from gateway.metrics import Metrics
    from gateway.options import StorageOptions
    from storage.local import LocalStore

    new_id = Uuid7()

    def event(cls: type, when: datetime, *fields: object, **named: object) -> object:
        return cls(new_id(int(when.timestamp() * 1000)), iso(when), "edge", *fields, **named)

    start = datetime(2026, 11, 1, tzinfo=UTC)
    events = [
        event(Binding, start, "phone", "u1", "login"),
        event(Binding, start, "laptop", "u1", "login"),
        event(Touchpoint, datetime(2026, 11, 1, 12, tzinfo=UTC), "phone", channel="Paid Social"),
        event(Touchpoint, datetime(2026, 11, 4, 9, tzinfo=UTC), "laptop", channel="Email"),
        event(Touchpoint, datetime(2026, 11, 8, 20, tzinfo=UTC), "laptop", channel="Organic Search"),
        event(Touchpoint, datetime(2026, 11, 10, 11, tzinfo=UTC), "laptop", channel="Direct"),
        event(
            Conversion,
            datetime(2026, 11, 10, 12, tzinfo=UTC),
            "purchase",
            "order:1",
            "laptop",
            None,
            100.0,
            "EUR",
        ),
    ]

    async def fill() -> None:
        store = LocalStore(tmp_path / "gw.db", StorageOptions(), Metrics())
        await store.open()
        await store.write(events)  # type: ignore[arg-type]
        await store.close()

    asyncio.run(fill())
    cfg = tmp_path / "gateway.toml"
    cfg.write_text("[storage]\npath = 'gw.db'\n")
    period = ("--since", "2026-11-01", "--until", "2026-12-01")
    readme = (ROOT / "README.md").read_text()

    done = gateway("report", "-c", str(cfg), *period, "--model", "all", "--format", "ndjson")
    assert done.returncode == 0, done.stderr
    rows = {r["group"]: r for r in map(json.loads, done.stdout.splitlines())}
    section = readme[readme.index("#### Worked example") :]
    table = dict(re.findall(r"^\| `(\w+)` \| ([\d. |]+) \|$", section, re.MULTILINE))
    channels = ["Paid Social", "Email", "Organic Search", "Direct"]
    for model, cells in table.items():
        if model == "data_driven":  # learns from the store's journeys: here, this one alone
            assert [rows[c][f"{model}_value"] for c in channels] == [25.0] * 4
            continue
        shown = [Decimal(cell.strip()) for cell in cells.split("|")]
        assert [Decimal(str(rows[c][f"{model}_value"])) for c in channels] == shown, model

    done = gateway("report", "-c", "gateway.toml", *period, "--model", "linear", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    block = readme[readme.index("$ gateway report -c gateway.toml --model linear") :]
    block = block[block.index("\n") + 1 : block.index("```")]
    assert done.stdout == block


def test_check_and_run_refuse_a_regex_re_cannot_compile(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text(
        "[[channels.rules]]\nchannel = 'X'\nmedium = 'a{4294967296}'\n"
        f"[attribution]\ntier_patterns = {{ awareness = ['{'(' * 1000 + ')' * 1000}'] }}\n"
    )
    for command in ("check", "run"):
        done = gateway(command, "-c", str(cfg), env=ENV)
        assert done.returncode == 2, done
        assert "channels.rules[0].medium: not a valid regular expression" in done.stderr
        assert "attribution.tier_patterns.awareness[0]: not a valid regular expression" in done.stderr
        assert "Traceback" not in done.stderr


def test_check_refuses_a_capture_without_one_group_and_a_cookie_kept_whole(tmp_path: Path) -> None:
    """A capture is compiled at start-up and needs exactly one group (the value); a cookie's
    whole value (a session credential) is never kept: each problem names its key."""
    cfg = tmp_path / "gw.toml"
    cfg.write_text(
        "[[conversions]]\nname = 'wc'\npath = '/'\nstatus = [200]\n"
        "order_id = { response_json = '/redirect', capture = 'order-received/\\\\d+/' }\n"
        "when = [{ response_text = true, capture = '(' }]\n"
        "[[identity.rules]]\nname = 'wp'\npath = '/wp-login\\\\.php'\nstatus = [302]\n"
        "user_id = { cookie = 'wordpress_logged_in_*' }\n"
    )
    done = gateway("check", "-c", str(cfg), env=ENV)
    assert done.returncode == 2, done
    assert (
        "conversions[0].order_id.capture: needs exactly one capturing group, the value: got 0" in done.stderr
    )
    assert "conversions[0].when[0].capture: not a valid regular expression" in done.stderr
    assert (
        "identity.rules[0].user_id.capture: required with cookie: a cookie's whole value may be a session "
        "credential" in done.stderr
    ), done.stderr
    assert "Traceback" not in done.stderr


def test_a_config_that_is_not_utf8_is_named_with_the_byte_and_line(tmp_path: Path) -> None:
    cfg = tmp_path / "x.toml"
    cfg.write_bytes(b"[proxy]\n# caf\xe9 comment\n")
    for command in ("check", "run", "send-test-event"):
        done = gateway(command, "-c", str(cfg), env=ENV)
        assert done.returncode == 2, done
        assert f"{cfg}: not UTF-8 (byte 0xe9 at line 2, column 6)" in done.stderr
        assert "Traceback" not in done.stderr


def test_a_config_starting_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    cfg = tmp_path / "bom.toml"
    cfg.write_bytes(b"\xef\xbb\xbf[identity]\ncookie_name = 'vid'\n")
    done = gateway("check", "-c", str(cfg), env=ENV)
    assert done.returncode == 0, done.stderr
    assert tomllib.loads(done.stdout)["identity"]["cookie_name"] == "vid"


def test_init_creates_the_folder_it_writes_into(tmp_path: Path) -> None:
    cfg = tmp_path / "etc" / "gateway" / "gateway.toml"  # as the README's /etc/gateway/ step
    done = gateway("init", "-c", str(cfg))
    assert done.returncode == 0, done.stderr
    assert f"created {cfg.parent}" in done.stdout and f"wrote {cfg}" in done.stdout
    assert gateway("check", "-c", str(cfg), env=ENV).returncode == 0


def test_init_writes_the_annotated_config_with_the_store_named(tmp_path: Path) -> None:
    """Until 2026-12-05 init wrote every key without a word of what it is, and its store,
    "gateway.db" beside the config, landed in /etc/gateway, which deploy/gateway.service keeps
    read-only: the operator had to know to edit it. It writes the annotated example (the
    package's gateway/data/gateway.toml, a link to the root one) and ``--store`` names the store."""
    cfg = tmp_path / "etc" / "gateway.toml"
    done = gateway("init", "-c", str(cfg))
    assert done.returncode == 0, done.stderr
    assert cfg.read_text() == (ROOT / "gateway.toml").read_text(), "init writes the annotated example"
    assert f"store: {cfg.parent / 'gateway.db'} (storage.path" in done.stdout
    store = tmp_path / "var" / "lib" / "gateway.db"
    for given in (str(store), "var/lib/gateway.db"):  # a relative one: from where init is run
        # PYTHONPATH: from another folder, the code under test still (an installed one otherwise)
        here = {"PYTHONPATH": str(ROOT)}
        done = gateway("init", "-c", str(cfg), "--force", "--store", given, cwd=tmp_path, env=here)
        assert done.returncode == 0, done.stderr
        assert f"store: {store} (storage.path" in done.stdout
        assert tomllib.loads(cfg.read_text())["storage"]["path"] == str(store)
        checked = gateway("check", "-c", str(cfg), env=ENV)
        assert checked.returncode == 0, checked.stderr
        assert f"(store: {store}," in checked.stdout
    store.parent.mkdir(parents=True)
    done = gateway("init", "-c", str(cfg), "--force", "--store", str(store.parent))
    assert (done.returncode, done.stderr) == (
        1,
        f"gateway: --store: {store.parent} is a folder; name the store's file, like"
        f" {store.parent / 'gateway.db'}\n",
    )


def test_init_store_with_characters_toml_cannot_hold_raw(tmp_path: Path) -> None:
    """``--store`` is written into the config as a TOML string: a DEL character in the path was
    written raw, and ``init`` left a config ``check`` refused (not valid TOML); a path that is not
    UTF-8 (a byte of a Latin-1 folder name) was a ``UnicodeEncodeError`` traceback. The first is
    escaped; the second, which no TOML file can hold, is refused naming ``--store``."""
    cfg = tmp_path / "gateway.toml"
    for name in ('a"b\\c\tx.db', "del\x7fx.db"):
        store = tmp_path / name
        done = gateway("init", "-c", str(cfg), "--force", "--store", str(store))
        assert done.returncode == 0, done.stderr
        assert tomllib.loads(cfg.read_text())["storage"]["path"] == str(store)
        checked = gateway("check", "-c", str(cfg), env=ENV)
        assert checked.returncode == 0, checked.stderr
    latin1 = os.fsdecode(bytes(tmp_path) + b"/caf\xe9/gateway.db")
    done = gateway("init", "-c", str(tmp_path / "other.toml"), "--store", latin1)
    assert done.returncode == 1, done
    assert done.stderr.startswith("gateway: --store: "), done.stderr
    assert "not UTF-8" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "other.toml").exists()


def test_init_explains_a_folder_or_a_file_in_the_way(tmp_path: Path) -> None:
    for args in (["-c", str(tmp_path)], ["-c", str(tmp_path), "--force"]):
        done = gateway("init", *args)
        assert done.returncode == 1, done
        assert done.stderr == (
            f"gateway: {tmp_path} is a folder; name the file to write, like {tmp_path / 'gateway.toml'}\n"
        )
    (tmp_path / "f").write_text("")
    done = gateway("init", "-c", str(tmp_path / "f" / "gateway.toml"))
    assert done.returncode == 1
    assert done.stderr == f"gateway: cannot create the folder {tmp_path / 'f'}: a file is in the way\n"


def test_replay_bad_explains_a_missing_empty_or_unreadable_store(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.toml"
    cases = {
        "missing.db": "gateway: no store at {path} (storage.path): the gateway creates it when it first runs;"
        " point storage.path at the store the gateway writes\n",
        "empty.db": "gateway: cannot read the store {path}: no such table: bad_events "
        "(not a gateway store? `gateway run` creates its tables)\n",
        "folder.db": "gateway: the store {path} (storage.path) is a folder, not a file; point storage.path"
        " at the store the gateway writes, like {path}/gateway.db\n",  # SQLite's words until 2026-12-05
    }
    (tmp_path / "empty.db").write_bytes(b"")
    (tmp_path / "folder.db").mkdir()
    for name, expected in cases.items():
        cfg.write_text(f'[storage]\npath = "{name}"\n')
        done = gateway("replay-bad", "-c", str(cfg), env=ENV)
        assert (done.returncode, done.stderr) == (1, expected.format(path=tmp_path / name)), done
    assert not (tmp_path / "missing.db").exists()  # not created by asking


def test_sink_send_explains_a_store_it_cannot_open(tmp_path: Path) -> None:
    """It printed sqlite3's traceback for each of these."""
    cfg = tmp_path / "gateway.toml"
    (tmp_path / "garbage.db").write_bytes(b"not a database" * 100)
    (tmp_path / "folder.db").mkdir()
    at = "point storage.path at the store the gateway writes"
    made = "the gateway creates it when it first runs"
    # (a folder and a missing store were SQLite's `unable to open database file` until 2026-12-05)
    cases = {
        "garbage.db": "gateway: cannot open the store {path}: file is not a database",
        "folder.db": "gateway: the store {path} (storage.path) is a folder, not a file; "
        + at
        + ", like {path}/gateway.db",
        "no/such/folder/x.db": "gateway: no store at {path} (storage.path): " + made + "; " + at,
    }
    sink = "[[sinks]]\nname = 's'\nkind = 'webhook'\nurl = 'http://127.0.0.1:9/'\nsecret = 'env:SINK'\n"
    for name, expected in cases.items():
        cfg.write_text(f'[storage]\npath = "{name}"\n{sink}')
        done = gateway("sink", "send", "--user", "u1", "-c", str(cfg), env={**ENV, "SINK": "k" * 32})
        assert (done.returncode, done.stderr) == (1, expected.format(path=tmp_path / name) + "\n"), done


@pytest.mark.parametrize(
    "argv",
    [
        ["import", "access.log", "--format", "combined", "--bogus"],
        ["purge", "--dry-run", "extra"],
        ["erase", "alice", "bob"],
        ["doctor", "--bogus"],
        ["sink", "send", "--user", "u1", "--bogus"],
        ["rules", "try", "s.har", "--bogus"],
    ],
)
def test_an_unknown_option_is_named_by_its_command(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``gateway import … --bogus`` said ``gateway: error: unrecognized arguments: --bogus; see
    `gateway --help` ``, which lists the commands, not import's options: the command names it,
    and its own --help, as for every other mistake on its command line."""
    from gateway.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    command = " ".join(argv[:2] if argv[0] in ("sink", "rules") else argv[:1])
    extra = argv[-1] if argv[0] != "erase" else "bob"
    assert capsys.readouterr().err == (
        f"gateway {command}: error: unrecognized arguments: {extra}; see `gateway {command} --help`\n"
    )


def test_doctor_and_send_test_event_refuse_arguments_they_cannot_use(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text('[storage]\npath = "gw.db"\n')
    refused = {
        ("doctor", "--timeout", "inf"): "argument --timeout: must be a number of seconds more than 0 and "
        "at most 600, got 'inf'",
        ("doctor", "--timeout", "0"): "argument --timeout: must be a number of seconds",
        ("doctor", "--timeout", "-1"): "argument --timeout: must be a number of seconds",
        ("doctor", "--timeout", "nan"): "argument --timeout: must be a number of seconds",
        ("send-test-event", "--url", "notaurl"): "argument --url: must be an http(s) URL like "
        "http://127.0.0.1:8080/_gw/events, got 'notaurl'",
        ("send-test-event", "--url", "http://[::1"): "argument --url: must be an http(s) URL",
        (
            "send-test-event",
            "--value",
            "nan",
        ): "argument --value: must be a number from 0 to 1e+15, got 'nan'",
        ("send-test-event", "--value", "inf"): "argument --value: must be a number from 0 to 1e+15",
        (
            "send-test-event",
            "--creator",
            "",
        ): "argument --creator: must be a creator ID like cr_test1, got ''",
        ("send-test-event", "--currency", "EURO"): "argument --currency: must be a 3-letter ISO 4217 code",
    }
    for (command, *args), expected in refused.items():
        done = gateway(command, "-c", str(cfg), *args, env=ENV)
        assert done.returncode == 2, done
        assert f"gateway {command}: error: {expected}" in done.stderr and "Traceback" not in done.stderr
        # One line naming the mistake (argparse put its usage block of up to ten lines first).
        assert done.stderr.count("\n") == 1 and done.stderr.endswith(f"; see `gateway {command} --help`\n")
    # Finer than the currency's minor unit: 12.5 JPY would be credited as 12 yen (was sent).
    for args, said in [
        (
            ("--value", "12.5", "--currency", "jpy"),
            "--value 12.5: JPY has no minor unit: give a whole number",
        ),
        (("--value", "1.2345", "--currency", "KWD"), "--value 1.2345: KWD has 3 decimals at most"),
        (("--value", "19.999"), "--value 19.999: USD has 2 decimals at most"),
    ]:
        done = gateway("send-test-event", "-c", str(cfg), *args, env=ENV)
        assert done.returncode == 2 and f"gateway send-test-event: {said}" in done.stderr, done


def _reader_gone(*args: str, unbuffered: bool) -> subprocess.CompletedProcess[str]:
    """The command with its stdout a pipe whose reader has already gone (``| head -1``): the
    first write fails unbuffered, else the flush at the end."""
    import os

    read, write = os.pipe()
    os.close(read)
    env = {"PATH": "/usr/bin:/bin", **ENV, **({"PYTHONUNBUFFERED": "1"} if unbuffered else {})}
    try:
        return subprocess.run(
            [sys.executable, "-m", "gateway", *args], stdout=write, stderr=subprocess.PIPE, text=True,
            env=env, cwd=ROOT, timeout=30,
        )  # fmt: skip
    finally:
        os.close(write)


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path) -> None:
    for unbuffered in (False, True):
        for args in (
            ("check", "-c", str(ROOT / "gateway.toml")),
            ("init", "-c", str(tmp_path / f"new-{unbuffered}" / "g.toml")),
        ):
            done = _reader_gone(*args, unbuffered=unbuffered)
            assert (done.returncode, done.stderr) == (141, ""), done  # as SIGPIPE would end it


def _big_report(tmp_path: Path) -> tuple[list[str], bytes]:
    """``gateway report``'s arguments for a report of far more than a pipe holds (64 KiB), on
    a generated store, and that report as written to a file."""
    from bench.synth import generate

    generate(tmp_path / "synth.db", 2000, 200, seed=3, days=30)
    (tmp_path / "big.toml").write_text("[storage]\npath = 'synth.db'\n")
    args = ["report", "-c", str(tmp_path / "big.toml"), "--since", "2026-11-01", "--until", "2026-12-01"]
    args += ["--timeseries", "--group-by", "campaign", "--format", "csv"]
    whole = subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, env={"PATH": "/usr/bin:/bin"},
        cwd=ROOT, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert len(whole) > 2 * 65536
    return args, whole


@pytest.mark.timeout(300)  # five report commands: 58 s on a loaded machine, past the 60 s default
def test_report_is_written_whole_or_ends_141(tmp_path: Path) -> None:
    """A report larger than a pipe holds arrives whole, or the command ends with 141 when its
    reader goes away part way (``| head -c 10``). Until 2026-12-05, under ``PYTHONUNBUFFERED=1``
    such a reader gave exit 0, and a non-blocking stdout got the first 64 KiB of the report,
    exit 0 (buffered, a ``BlockingIOError`` traceback)."""
    args, whole = _big_report(tmp_path)
    for unbuffered in ("1", ""):
        env = {"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": unbuffered}
        command = [sys.executable, "-m", "gateway", *args]
        read, write = os.pipe()
        child = subprocess.Popen(command, stdout=write, stderr=subprocess.PIPE, env=env, cwd=ROOT)
        os.close(write)
        with os.fdopen(read, "rb") as reader:
            assert reader.read(10) == whole[:10]
        _, err = child.communicate(timeout=120)
        assert (child.returncode, err) == (141, b""), unbuffered
        # A non-blocking stdout, read whole: the report arrives whole.
        read, write = os.pipe()
        os.set_blocking(write, False)
        child = subprocess.Popen(command, stdout=write, stderr=subprocess.PIPE, env=env, cwd=ROOT)
        os.close(write)
        with os.fdopen(read, "rb") as reader:
            got = reader.read()
        _, err = child.communicate(timeout=120)
        assert (child.returncode, err, len(got)) == (0, b"", len(whole)), unbuffered
        assert got == whole


def test_output_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    """``> file`` on a full disk (``/dev/full``): one line naming why, exit 1, no traceback."""
    for unbuffered in ("", "1"):
        env = {"PATH": "/usr/bin:/bin", **ENV, "PYTHONUNBUFFERED": unbuffered}
        with open("/dev/full", "w") as full:
            done = subprocess.run(
                [sys.executable, "-m", "gateway", "check", "-c", str(ROOT / "gateway.toml")],
                stdout=full, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT, timeout=30,
            )  # fmt: skip
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert "gateway: cannot write the output: No space left on device" in done.stderr


def test_init_names_a_file_name_too_long(tmp_path: Path) -> None:
    """Path.is_dir raises for a name longer than the system takes: a traceback until 2026-12-04."""
    long = tmp_path / ("y" * 300) / "gateway.toml"
    done = gateway("init", "-c", str(long))
    assert (done.returncode, done.stderr) == (1, f"gateway: cannot write {long}: File name too long\n")


def test_a_command_started_with_stdout_closed_ends_without_a_traceback() -> None:
    """``gateway check >&-``: Python has no sys.stdout then, and the flush at the end was an
    AttributeError traceback (exit 1 for a valid config)."""
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "-c", str(ROOT / "gateway.toml")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=30,
        env={"PATH": "/usr/bin:/bin", **ENV}, preexec_fn=lambda: os.close(1),
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (0, ""), done.stderr


def test_report_started_with_stdout_closed_ends_without_a_traceback(tmp_path: Path) -> None:
    """``gateway report >&-`` wrote its table through ``sys.stdout``, None then: an
    AttributeError traceback and exit 1, where every other command exits as it would."""
    from tests.gateway.test_reports_api import EVENTS

    cfg = _report_store(tmp_path, EVENTS)
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "report", "-c", str(cfg)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=30,
        env={"PATH": "/usr/bin:/bin"}, preexec_fn=lambda: os.close(1),
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (0, ""), done.stderr


def test_readme_command_reference_matches_the_parser() -> None:
    """Every command of the Command-line reference exists with the options it lists, and every
    option a command takes (but the hidden ones the supervisor passes its workers) is listed."""
    import argparse
    import re

    from gateway.cli import build_parser

    def commands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found |= commands(sub, f"{prefix} {name}".strip())
        if prefix and not found:
            found[prefix] = {
                option
                for action in parser._actions
                if action.help != argparse.SUPPRESS
                for option in action.option_strings
                if option != "-h"
                and not (option.startswith("--") and "-" + option[2] in action.option_strings)
            }
        return found

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Command-line reference") : readme.index("## Configuration reference")]
    listed = {}
    for cell in re.findall(r"^\| `gateway ([^`]+)` \|", section, re.MULTILINE):
        words = cell.split()
        name = " ".join(words[: next(i for i, w in enumerate(words) if not re.fullmatch(r"[a-z][a-z-]*", w))])
        listed[name] = set(re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", cell))
    actual = commands(build_parser())
    assert set(listed) == set(actual)
    for name, options in actual.items():
        assert listed[name] == options, name


def test_every_option_has_help() -> None:
    """`gateway CMD --help` says what each option is (and its default, where it has one)."""
    import argparse

    from gateway.cli import build_parser

    def missing(parser: argparse.ArgumentParser, prefix: str) -> list[str]:
        found = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found += missing(sub, f"{prefix} {name}")
            elif action.option_strings and not action.help:
                found.append(f"{prefix} {action.option_strings[-1]}")
        return found

    assert missing(build_parser(), "gateway") == []


def test_import_help_names_every_compression_it_reads(capsys: pytest.CaptureFixture[str]) -> None:
    """``FILE  history files (gzip is detected)``: bzip2 and xz are read as well (logrotate's
    compresscmd), and an operator reading --help would decompress them first for nothing."""
    from gateway.cli import main

    with pytest.raises(SystemExit):
        main(["import", "--help"])
    said = " ".join(capsys.readouterr().out.split())
    assert "gzip, bzip2 and xz are recognised by their bytes" in said


def test_reclassify_help_gives_the_batch_sizes_range_and_default(capsys: pytest.CaptureFixture[str]) -> None:
    """``--batch-size  touchpoints per transaction``: neither the default (1000) nor the bounds
    a value outside of is refused for (1..100000) were said until one was refused."""
    from gateway.cli import main

    with pytest.raises(SystemExit):
        main(["reclassify", "--help"])
    said = " ".join(capsys.readouterr().out.split())
    assert "touchpoints per transaction, 1..100000 (default: 1000)" in said


def test_commands_that_serve_nothing_need_no_admin_token(tmp_path: Path) -> None:
    """An import (or sync, purge, erase…) listens on nothing, yet it used to refuse to start
    without GATEWAY_ADMIN_TOKEN, and to suggest --dev, which it does not take. It needs the
    gateway's own secret (what is stored is keyed by it), and says so."""
    log = tmp_path / "access.log"
    log.write_text(
        '203.0.113.9 - - [01/Dec/2026:10:00:00 +0000] "GET /?utm_source=x HTTP/1.1" 200 5 "-" "curl/8"\n'
    )
    config = tmp_path / "gateway.toml"
    config.write_text(f'[storage]\npath = "{tmp_path / "gateway.db"}"\n')
    secret_only = {"GATEWAY_SECRET": ENV["GATEWAY_SECRET"]}
    args = (
        "import",
        str(log),
        "--format",
        "combined",
        "--host",
        "www.example.com",
        "--dry-run",
        "-c",
        str(config),
    )
    done = gateway(*args, env=secret_only)
    assert done.returncode == 0, done.stderr
    done = gateway(*args, env={})
    assert done.returncode == 2
    assert "identity.secret: environment variable GATEWAY_SECRET is not set" in done.stderr
    assert "what is stored is keyed by it" in done.stderr
    assert "--dev" not in done.stderr and "admin.token" not in done.stderr
    # Nor the senders' secrets, which only the running gateway verifies with (they were
    # required: an import on another box needed Stripe's signing secret).
    config.write_text(
        config.read_text()
        + '[[sources]]\nname = "stripe"\nsignature = "stripe"\nsecrets = ["env:STRIPE_SECRET"]\n'
        + '[[sources]]\nname = "billing"\nsecrets = ["env:BILLING_SECRET", "env:BILLING_OLD"]\n'
        + '[[sinks]]\nname = "out"\nkind = "segment"\nurl = "https://api.segment.io"\nsecret = "env:SEG"\n'
    )
    done = gateway(*args, env=secret_only)
    assert done.returncode == 0, done.stderr
    # One that is set is still checked: a mistake there is one the gateway would make too.
    done = gateway(*args, env={**secret_only, "BILLING_OLD": "short"})
    assert done.returncode == 2 and "sources[1].secrets[1]" in done.stderr, done.stderr
    # The gateway itself still needs them.
    assert "STRIPE_SECRET" in gateway("check", "-c", str(config), env=ENV).stderr


def test_rules_try_exit_statuses(tmp_path: Path) -> None:
    """``gateway rules try``, as the shell runs it: 0 when every entry was read (a rule that did
    not fire is an answer, not a failure), 1 when the HAR or an entry of it cannot be read, 2
    for a config problem or a wrong command line; no secret needed, never a traceback."""
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[storage]\npath = "{tmp_path / "g.db"}"\n'
        '[[identity.rules]]\nname = "login"\npath = "/login"\nstatus = [302]\nuser_id = { form = "email" }\n'
    )

    def entry(status: int, url: str = "https://shop.example/login") -> dict[str, Any]:
        return {
            "startedDateTime": "2026-12-05T10:00:00Z",
            "request": {
                "method": "POST",
                "url": url,
                "headers": [],
                "postData": {"mimeType": "application/x-www-form-urlencoded", "text": "email=ada"},
            },
            "response": {"status": status, "headers": [], "content": {"size": 0, "mimeType": "text/html"}},
        }

    session = tmp_path / "session.har"
    session.write_text(json.dumps({"log": {"entries": [entry(302), entry(200)]}}))
    done = gateway("rules", "try", str(session), "-c", str(config))
    assert (done.returncode, done.stderr) == (0, "")
    assert "  identity login: fired, user ID ada\n" in done.stdout
    assert "  identity login: not fired: status 200 not in status [302]\n" in done.stdout
    session.write_text(json.dumps({"log": {"entries": [entry(302), entry(302, "login")]}}))
    done = gateway("rules", "try", str(session), "-c", str(config), "--format", "json")
    assert (done.returncode, done.stderr) == (1, "")
    assert json.loads(done.stdout)["unreadable"][0]["entry"] == 2
    session.write_text("<html>")
    done = gateway("rules", "try", str(session), "-c", str(config))
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"gateway: {session}: not a HAR file: not JSON (Expecting value, line 1)\n"
    config.write_text(config.read_text().replace("status = [302]", "status = [302, 999]"))
    done = gateway("rules", "try", str(session), "-c", str(config))
    assert done.returncode == 2 and "identity.rules[0].status" in done.stderr, done.stderr
    done = gateway("rules", "try", str(session), "-c", str(config), "--format", "xml")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--format" in done.stderr


def test_check_refuses_captures_that_would_stall_the_gateway_or_keep_a_credential(tmp_path: Path) -> None:
    """A capture runs on the event loop over text a visitor can shape (a path, a header, a
    cookie, an answer that echoes them): one that repeats a repeat stalled every visitor's
    page for seconds on 26 characters. A kept capture that names a credential, or that is
    its group alone over a cookie or a whole answer, kept a token or a session cookie whole,
    and so did a request header holding an API key (or the client's address, never stored
    raw). Each is refused by its key; a ``when`` may still look for a credential's name, or
    test such a header."""
    cfg = tmp_path / "gw.toml"
    cfg.write_text(
        "[[identity.rules]]\nname = 'api'\npath = '/login'\nstatus = [200]\n"
        'user_id = { response_text = true, capture = \'"access_token":"([^"]+)"\' }\n'
        "when = [{ response_text = true, capture = '\"(access_token)\"' }]\n"
        "[[identity.rules]]\nname = 'session'\npath = '/login'\nstatus = [302]\n"
        "user_id = { cookie = 'sessionid', capture = '^(.*)$' }\n"
        "[[conversions]]\nname = 'reset'\npath = '/r/.*'\nstatus = [200]\n"
        "order_id = { path = true, capture = '/reset-password/([^/]+)/' }\n"
        "value = { request_header = 'X-Api-Key' }\n"
        "currency = { request_header = 'X-Forwarded-For', capture = '^(\\d+)\\.' }\n"
        "when = [{ request_header = 'X-Order', capture = '((?:\\w+\\s?)+)!' },\n"
        "  { request_header = 'X-WP-Nonce' }]\n"
        "[[conversions]]\nname = 'wc'\npath = '/checkout/order-received/[0-9]+/'\nstatus = [200]\n"
        "order_id = { path = true, capture = '^/checkout/order-received/(\\d+)/' }\n"
        "value = { response_text = true, capture = '(?s)order-overview__total.*?</span>([0-9.,]+)</bdi>' }\n"
        "when = [{ response_text = true, capture = '((?:ab)++)' }]\n"
        "[[conversions]]\nname = 'deep'\npath = '/d'\nstatus = [200]\n"
        f"when = [{{ path = true, capture = '{'(?:' * 400}x(a){')+' * 400}' }}]\n"
    )
    done = gateway("check", "-c", str(cfg), env=ENV)
    assert done.returncode == 2, done
    problems = [line.strip() for line in done.stderr.splitlines()[1:]]
    assert [p.partition(": ")[0] for p in problems] == [
        "identity.rules[0].user_id.capture",
        "identity.rules[1].user_id.capture",
        "conversions[0].when[0].capture",
        "conversions[0].value.request_header",
        "conversions[0].currency.request_header",
        "conversions[0].order_id.capture",
        "conversions[2].when[0].capture",
    ], done.stderr
    assert "names a credential (pass, pwd, secret, token or card): what follows" in problems[0]
    assert "is its group alone and keeps the whole value (a cookie's whole value" in problems[1]
    assert "repeats a repeat ((a+)+" in problems[2] and "possessive ((?:…)++)" in problems[2]
    assert "'X-Api-Key' may carry a credential (an API key" in problems[3]
    assert "the client's address or user agent, and is never kept" in problems[4]
    assert "names a credential" in problems[5]
    assert "nested too deeply to be checked" in problems[6]  # compiled, but deeper than the check looks
    assert "Traceback" not in done.stderr


def test_systemctl_reload_checks_the_config_before_the_signal(tmp_path: Path) -> None:
    """``systemctl reload gateway`` only sent SIGHUP: with a broken config it said nothing and
    exited 0, the gateway kept the old config, and the why was in the journal alone. The unit
    runs ``gateway check`` first, whose failure fails the reload before any signal is sent."""
    lines = (ROOT / "deploy" / "gateway.service").read_text().splitlines()
    reload = [line.partition("=")[2].split() for line in lines if line.startswith("ExecReload=")]
    start = next(line.partition("=")[2].split() for line in lines if line.startswith("ExecStart="))
    assert [cmd[0] for cmd in reload] == [start[0], "/bin/kill"], reload
    check = reload[0]
    assert check[1:] == ["check", "--quiet", *start[2:]]  # the file `run` reads
    broken = tmp_path / "gateway.toml"
    broken.write_text("[bots]\nreview_threshold = 120\n")
    done = gateway(*check[1:-1], str(broken), env=ENV)
    assert done.returncode == 2 and "bots.review_threshold: must be 0..100, got 120" in done.stderr
    # A good one: one line in the journal at each start and reload, not 136 of resolved config.
    broken.write_text("[bots]\nreview_threshold = 40\n")
    done = gateway(*check[1:-1], str(broken), env=ENV)
    (said,) = done.stdout.splitlines()
    store = tmp_path / "gateway.db"
    assert done.returncode == 0 and said.startswith(f"# {broken}: OK (store: {store}, node: ")
    start_pre = next(line.partition("=")[2].split() for line in lines if line.startswith("ExecStartPre="))
    assert start_pre == check


def test_version_and_a_missing_command_speak_to_the_operator() -> None:
    """`gateway --version` says which gateway it is; a missing command or sub-command is named
    as the usage line names it (COMMAND), not by the parser's internal name (`sink_command`)."""
    from gateway import __version__

    done = gateway("--version")
    assert done.returncode == 0 and done.stdout == f"gateway {__version__}\n", done
    for args, usage in (((), "gateway"), (("sink",), "gateway sink"), (("rules",), "gateway rules")):
        done = gateway(*args)
        assert done.returncode == 2, done
        assert done.stderr.endswith(
            f"{usage}: error: the following arguments are required: COMMAND; see `{usage} --help`\n"
        ), done.stderr
        assert "_command" not in done.stderr
    assert "usage: gateway [-h] [--version] COMMAND ..." in gateway("--help").stdout


def test_doctor_help_names_what_the_readme_says_it_checks(capsys: pytest.CaptureFixture[str]) -> None:
    """`gateway --help` said the doctor checked "config, secrets, store, GeoIP files, upstream,
    admin", and the Command-line reference "…, upstream, PostgreSQL, the reporting mirror, admin
    address": neither named the senders, the workers or the sinks it checks too. Both now give
    the same checklist, in the order it is printed."""
    from gateway.cli import main

    readme = (ROOT / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `gateway doctor "))
    listed = re.search(r"checklist: ([^;]+);", row)
    assert listed is not None, row
    with pytest.raises(SystemExit):
        main(["doctor", "--help"])
    said = " ".join(capsys.readouterr().out.split())
    assert f"check {listed.group(1)} examples:" in said or f"check {listed.group(1)} options:" in said, said
    for check in ("senders", "workers", "PostgreSQL", "reporting mirror", "sinks"):
        assert check in listed.group(1)


def test_import_help_gives_the_workers_range(capsys: pytest.CaptureFixture[str]) -> None:
    """The Command-line reference writes `[--workers 1..256]`, and a value outside is refused
    with that range; `gateway import --help` gave the default alone until 2026-12-07."""
    from gateway.cli import main

    with pytest.raises(SystemExit):
        main(["import", "--help"])
    said = " ".join(capsys.readouterr().out.split())
    assert "processes parsing and replaying log lines, 1..256 (default 1:" in said, said
    readme = (ROOT / "README.md").read_text()
    assert "[--workers 1..256]" in readme


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (
            ["-c", "gw.toml", "sync", "--once"],
            "gateway: error: -c gw.toml: an option goes after the command it is for"
            " (gateway sync -c gw.toml …); see `gateway --help`",
        ),
        (
            ["sink", "-c", "gw.toml", "send", "--user", "u1"],
            "gateway sink: error: -c gw.toml: an option goes after the command it is for"
            " (gateway sink send -c gw.toml …); see `gateway sink --help`",
        ),
        (
            ["sink", "--user", "u1"],
            "gateway sink: error: --user u1: an option goes after the command it is for"
            " (gateway sink COMMAND --user u1 …; COMMAND: send); see `gateway sink --help`",
        ),
    ],
    ids=["before-sync", "before-send", "no-command"],
)
def test_an_option_before_its_command_is_said_so_not_taken_for_the_command(
    args: list[str], said: str
) -> None:
    """`gateway -c gw.toml sync --once` (as `git -C DIR` is written) and `gateway sink -c gw.toml
    send …` were told `argument COMMAND: invalid choice: 'gw.toml' (choose from …)`: the
    option's value taken for the command, the option itself unsaid (until 2026-12-07)."""
    done = gateway(*args, env=ENV)
    assert (done.returncode, done.stderr) == (2, said + "\n"), done.stderr


def test_commands_that_never_connect_to_the_central_store_need_no_central_url(tmp_path: Path) -> None:
    """`import`, `replay-bad` and `erase` read and write this node's store: none connects to the
    central store (an erasure reaches it with the next sync). Until 2026-12-07 each refused to
    start without `central.url`'s variable (`central.url: environment variable … is not set`,
    exit 2), so an import on an analyst's box, or an erasure, took the database's password in
    the shell. `erase` still says its erasure reaches the central store, which is configured. A
    variable that is set is still checked; `purge`, which purges the central store, still needs it."""
    log = tmp_path / "access.log"
    log.write_text(
        '203.0.113.9 - - [01/Dec/2026:10:00:00 +0000] "GET /?utm_source=x HTTP/1.1" 200 5 "-" "curl/8"\n'
    )
    cfg = tmp_path / "gw.toml"
    cfg.write_text(
        f'[storage]\npath = "{tmp_path / "gw.db"}"\n[privacy]\nretention_days = 30\n'
        "[central]\nurl = 'env:GW_TEST_CENTRAL'\n"
    )
    commands = [
        ("import", str(log), "--format", "combined", "--host", "www.example.com", "--no-progress"),
        ("replay-bad",),
        ("erase", "alice"),
        ("erase", "--visitor", "v" * 8),
    ]
    for command in commands:
        done = gateway(*command, "-c", str(cfg), env=ENV)
        assert done.returncode == 0, (command, done.stderr)
        assert "central.url" not in done.stderr, (command, done.stderr)
        if command[0] == "erase":
            assert "the erasure reaches the central store with the next sync" in done.stdout, done.stdout
    wrong = {**ENV, "GW_TEST_CENTRAL": "mysql://db/tracking"}  # set, and wrong: said
    for command in commands:
        done = gateway(*command, "-c", str(cfg), env=wrong)
        assert done.returncode == 2, (command, done.stderr)
        assert "central.url: the value of GW_TEST_CENTRAL: expected a PostgreSQL URL" in done.stderr
    done = gateway("purge", "--dry-run", "-c", str(cfg), env=ENV)
    assert done.returncode == 2 and "central.url: environment variable GW_TEST_CENTRAL" in done.stderr


async def test_a_start_on_the_starter_config_logs_no_warning(tmp_path: Path) -> None:
    """The config `gateway init` writes (the shipped gateway.toml, `make run`'s) starts with no
    warning-level line: every start and deploy of it would page someone for nothing. Until
    2026-12-07 each start warned that no GeoIP database was configured, the starter's default."""
    cfg = tmp_path / "gateway.toml"
    assert (await asyncio.to_thread(gateway, "init", "-c", str(cfg))).returncode == 0
    text = await asyncio.to_thread(cfg.read_text)
    for port in ("8080", "9090"):  # any free port: the starter's may be taken on this machine
        assert f'listen = "127.0.0.1:{port}"' in text
        text = text.replace(f'listen = "127.0.0.1:{port}"', 'listen = "127.0.0.1:0"', 1)
    await asyncio.to_thread(cfg.write_text, text)
    gw = await GatewayProcess.start(cfg)
    assert await gw.stop() == 0
    lines = [json.loads(line) for line in gw.stderr if line.startswith("{")]
    assert any(line["msg"] == "stopped" for line in lines), gw.stderr
    loud = [line["msg"] for line in lines if line["level"] not in ("debug", "info")]
    assert loud == [], loud
