"""`gateway doctor`: a checklist against a real upstream, an unreachable one, and bad settings."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from blockbuster import BlockBuster

from bench.pgserver import PostgresServer
from gateway.doctor import Check, check_round_locks, check_senders
from gateway.events import Touchpoint, iso
from gateway.ids import uuid7
from storage.migrate import migrations
from storage.roundlock import lock_path
from tests.conftest import ENV, BatchApi, make_settings, node_role, sink_toml
from tests.gateway.test_upstream import self_signed
from tests.storage.test_mirror import ids
from tests.storage.test_mirror_identity import create_database
from tests.storage.test_sync import touch
from tests.storage.test_sync_lock import held_by_a_process


async def doctor(config: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "doctor", "-c", str(config), "--timeout", "2",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={"PATH": "/usr/bin:/bin", **(ENV if env is None else env)},
    )  # fmt: skip
    async with asyncio.timeout(40):
        out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def _hello(request: web.Request) -> web.Response:
    return web.Response(text="hi")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(tmp_path: Path, upstream: str, extra: str = "") -> Path:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[proxy]\nupstream = "{upstream}"\n[storage]\npath = "data/gw.db"\n{extra}')
    return cfg


async def test_all_good_against_a_real_upstream(tmp_path: Path, upstream_server: object) -> None:
    app = web.Application()
    app.router.add_get("/", _hello)  # HEAD is answered by the GET route
    upstream = await upstream_server(app)  # type: ignore[operator]
    cfg = await asyncio.to_thread(_config, tmp_path, upstream)
    code, out = await doctor(cfg)
    assert code == 0, out
    assert f"upstream {upstream} answers (HEAD / -> 200)" in out
    assert "admin listener 127.0.0.1:9090 is private" in out and "will be created" in out
    assert out.rstrip().endswith("all checks passed")


async def test_no_upstream_is_a_warning_that_says_what_to_set(tmp_path: Path) -> None:
    """A starter config (``gateway init``) names no site: the demo shop is served. The warning
    said so without a fix, the one line of the checklist that did not say what to do."""
    cfg = await asyncio.to_thread(_config, tmp_path, "")
    code, out = await doctor(cfg)
    assert code == 0, out
    assert (
        "[warn] proxy.upstream is empty: the built-in demo origin is served\n"
        '         fix: set proxy.upstream to your site, an origin like "http://127.0.0.1:8000"\n'
    ) in out


async def test_unreachable_upstream_public_admin_and_missing_secret(tmp_path: Path) -> None:
    upstream = f"http://127.0.0.1:{_closed_port()}"
    cfg = await asyncio.to_thread(
        _config,
        tmp_path,
        upstream,
        '[admin]\nlisten = "0.0.0.0:9090"\n[geo]\ncountry_db = "missing.mmdb"\n',
    )
    code, out = await doctor(cfg, env={"GATEWAY_SECRET": ENV["GATEWAY_SECRET"]})
    assert code == 1
    # Said as the proxy's log says it (aiohttp's "… ssl:default [Connect call failed …]" until 2026-12-05).
    assert f"[FAIL] upstream {upstream} unreachable: connection refused: nothing listens on 127.0.0.1:" in out
    assert "ssl:default" not in out
    assert "[FAIL] admin listener 0.0.0.0:9090 is reachable from outside" in out
    assert "[FAIL] config: admin.token: environment variable GATEWAY_ADMIN_TOKEN is not set\n" in out
    assert "--dev" not in out  # the doctor has none (the line said "(or run with --dev)")
    # As `gateway check` and the start say it: the gateway runs without it (until 2026-12-05 a FAIL).
    assert (
        f"[warn] geo.country_db: {tmp_path / 'missing.mmdb'} does not exist: geo lookups will be off" in out
    )
    assert "fix:" in out and "Traceback" not in out


async def test_an_upstream_that_takes_the_connection_but_never_answers_is_not_called_unreachable(
    tmp_path: Path, upstream_server: object
) -> None:
    """A site that is up but stuck (it accepts, it never answers) was "unreachable: timed out",
    fix "start the site": the operator went looking for a site that was not running."""
    release = asyncio.Event()

    async def stuck(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/", stuck)
    upstream = await upstream_server(app)  # type: ignore[operator]
    cfg = await asyncio.to_thread(_config, tmp_path, upstream)
    try:
        code, out = await doctor(cfg)
    finally:
        release.set()
    assert code == 1, out
    assert (
        f"[FAIL] upstream {upstream} took the connection but did not answer HEAD / within 2 s (--timeout)\n"
        "         fix: the site runs but is stuck or too slow: look at its log and load, "
        "or give it longer with --timeout\n"
    ) in out, out
    assert "unreachable" not in out and "start the site" not in out


async def test_an_upstream_whose_tls_fails_says_why_not_unreachable(
    tmp_path: Path, upstream_server: object
) -> None:
    """TLS to a plain-HTTP site, or to a certificate no CA the gateway trusts signed, were
    "unreachable: Cannot connect to host … ssl:default [[SSL: …]]", fix "start the site": the
    site runs; it is the scheme, or the certificate, to fix."""
    app = web.Application()
    app.router.add_get("/", _hello)
    plain = (await upstream_server(app)).replace("http://", "https://")  # type: ignore[operator]
    cert_file, key_file = await asyncio.to_thread(self_signed, tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    await asyncio.to_thread(context.load_cert_chain, cert_file, key_file)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    untrusted = f"https://127.0.0.1:{runner.addresses[0][1]}"
    try:
        await asyncio.to_thread((tmp_path / "a").mkdir)
        code, out = await doctor(await asyncio.to_thread(_config, tmp_path / "a", plain))
        assert code == 1, out
        host = plain.removeprefix("https://")
        assert (
            f"[FAIL] upstream {plain}: {host} does not answer in TLS\n"
            "         fix: it likely speaks plain HTTP there: write proxy.upstream with http://, "
            "or name its TLS port\n"
        ) in out, out
        await asyncio.to_thread((tmp_path / "b").mkdir)
        code, out = await doctor(await asyncio.to_thread(_config, tmp_path / "b", untrusted))
        assert code == 1, out
        host = untrusted.removeprefix("https://")
        assert (
            f"[FAIL] upstream {untrusted}: the TLS certificate of {host} is not trusted: "
            "self-signed certificate\n"
            "         fix: give the site a certificate a public CA signed, or point SSL_CERT_FILE "
            "in the gateway's environment at the CA that signed it\n"
        ) in out, out
    finally:
        await runner.cleanup()


async def test_an_admin_listener_said_public_on_purpose_is_a_warning(tmp_path: Path) -> None:
    """The container's config (``admin.allow_public = true``, every interface inside the
    container) made doctor fail, though the gateway runs it as meant."""
    cfg = await asyncio.to_thread(
        _config,
        tmp_path,
        f"http://127.0.0.1:{_closed_port()}",
        '[admin]\nlisten = "0.0.0.0:9090"\nallow_public = true\n',
    )
    code, out = await doctor(cfg)
    assert code == 1, out
    assert "[warn] admin listener 0.0.0.0:9090 is reachable from outside" in out, out
    assert "(admin.allow_public = true)" in out and "publish it on 127.0.0.1 only" in out
    assert out.rstrip().endswith("1 problem(s) to fix")  # the upstream alone


async def test_store_schema_from_a_newer_gateway(tmp_path: Path, upstream_server: object) -> None:
    app = web.Application()
    app.router.add_get("/", _hello)
    upstream = await upstream_server(app)  # type: ignore[operator]
    cfg = await asyncio.to_thread(_config, tmp_path, upstream)

    def newer() -> None:
        (tmp_path / "data").mkdir()
        with sqlite3.connect(tmp_path / "data" / "gw.db") as db:
            db.execute("PRAGMA user_version = 999")

    await asyncio.to_thread(newer)
    code, out = await doctor(cfg)
    assert code == 1 and "has schema 999, newer than this gateway" in out
    # A downgrade: what to do, not "upgrade" alone (until 2026-12-07).
    assert "a newer gateway migrated it, and migrations are not undone" in out, out
    assert (
        "fix: run that version (or a newer one), or restore the store's backup from before that upgrade"
        " to run this one" in out
    ), out


async def test_a_broken_config_names_its_key(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.toml"
    await asyncio.to_thread(cfg.write_text, "[bots]\nreview_threshold = 120\n")
    code, out = await doctor(cfg)
    assert code == 1 and "[FAIL] config: bots.review_threshold: must be 0..100, got 120" in out
    # The fix names the file in use (it said `-c FILE`), and a file not read is no key to correct.
    assert f"fix: correct this key (gateway check -c {cfg} lists every problem)" in out, out
    code, out = await doctor(tmp_path / "missing.toml")
    assert code == 1 and f"[FAIL] config: {tmp_path / 'missing.toml'}: cannot read: " in out, out
    fix = "fix: name the config file the gateway runs with (-c), or write a starter one: gateway init -c"
    fix += f" {tmp_path / 'missing.toml'}"
    assert fix in out and "correct this key" not in out, out
    await asyncio.to_thread(cfg.write_text, '[proxy]\nlisten = "127.0.0.1\n')
    code, out = await doctor(cfg)
    assert code == 1 and f"fix: correct the file (gateway check -c {cfg} lists every problem)" in out, out


async def test_a_mirror_never_filled_is_told_how_to_fill_with_the_config_in_use(tmp_path: Path) -> None:
    """The fix said `gateway mirror --once -c FILE`, to be completed by hand."""
    cfg = await asyncio.to_thread(
        _config,
        tmp_path,
        f"http://127.0.0.1:{_closed_port()}",
        '[central]\nurl = "env:CENTRAL_DSN"\nmirror_path = "reports/mirror.db"\n',
    )
    dsn = f"postgresql://gw@127.0.0.1:{_closed_port()}/gw"
    code, out = await doctor(cfg, {**ENV, "CENTRAL_DSN": dsn})
    assert code == 1 and f"mirror {tmp_path / 'reports' / 'mirror.db'} was never filled" in out, out
    assert f"fix: run `gateway mirror --once -c {cfg}` (or start the gateway)" in out, out


async def test_unreachable_postgresql_when_central_is_configured(blockbuster: BlockBuster) -> None:
    """``[central]`` lives on another branch: doctor reads ``options.central.url`` when it is there."""
    from types import SimpleNamespace

    # asyncpg reads ~/.pgpass while connecting; the doctor is a command, no server loop to stall.
    for function in blockbuster.functions.values():
        function.can_block_in("asyncpg/connect_utils.py", {"_parse_connect_dsn_and_args"})

    from gateway.doctor import check_central

    url = f"postgresql://gw@127.0.0.1:{_closed_port()}/gw"
    settings = SimpleNamespace(options=SimpleNamespace(central=SimpleNamespace(url=url)))
    check = await check_central(settings, 2.0)  # type: ignore[arg-type]
    assert check is not None and check.status == "FAIL" and "central PostgreSQL unreachable" in check.what
    assert "the server in central.url cannot be reached" in check.what, check.what
    none = SimpleNamespace(options=SimpleNamespace())
    assert await check_central(none, 2.0) is None  # type: ignore[arg-type]
    # A DSN asyncpg cannot read is a FAIL naming the key, not a traceback; no password shown.
    for bad in (
        "postgresql://u:s3cret@127.0.0.1:notaport/db",
        "postgresql://u:s3cret@127.0.0.1/db?sslmode=bogus",
        "postgresql://u:s3cret@127.0.0.1:99999/db",  # asyncpg takes it; connect() raised OverflowError
    ):
        settings = SimpleNamespace(options=SimpleNamespace(central=SimpleNamespace(url=bad)))
        check = await check_central(settings, 2.0)  # type: ignore[arg-type]
        assert check is not None and check.status == "FAIL" and check.what.startswith("central.url: not a")
        assert "s3cret" not in check.line()


def test_a_store_path_that_is_a_folder_or_under_a_file(tmp_path: Path) -> None:
    """Both were reported wrongly: a folder as 'not a SQLite database: disk I/O error', a path
    under a file as that file being 'not writable' (fix: 'fix the permissions')."""
    from gateway.config import load_settings
    from gateway.doctor import check_store

    (tmp_path / "folder.db").mkdir()
    (tmp_path / "afile").write_text("x")
    for name, what, fix in (
        ("folder.db", f"store {tmp_path / 'folder.db'} is a folder", "point storage.path at a file, like"),
        ("afile/gw.db", f"store {tmp_path / 'afile/gw.db'}: cannot create it, {tmp_path / 'afile'} is a file",
         "point storage.path elsewhere"),
    ):  # fmt: skip
        settings = load_settings(None, text=f'[storage]\npath = "{tmp_path / name}"\n', environ=ENV)
        check = check_store(settings)
        assert check.status == "FAIL" and what in check.what and check.fix.startswith(fix), check


@pytest.mark.parametrize("name", ["gw#1.db", "gw?x=1.db", "gw%231.db"])
def test_a_store_whose_name_holds_uri_characters_is_read_as_it_is(tmp_path: Path, name: str) -> None:
    """The doctor opened the store as a ``file:`` URI unquoted: ``gw#1.db`` was the file ``gw``
    (``#``: a fragment), created empty beside the store and reported as schema 0."""
    from gateway.config import load_settings
    from gateway.doctor import check_store
    from storage.migrate import migrations

    newest = migrations()[-1][0]
    with contextlib.closing(sqlite3.connect(tmp_path / name)) as db:
        db.execute(f"PRAGMA user_version = {newest}")
    settings = load_settings(None, text=f'[storage]\npath = "{tmp_path / name}"\n', environ=ENV)
    check = check_store(settings)
    assert check == Check("ok", f"store {tmp_path / name} writable, schema {newest} (current)"), check
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # the doctor writes nothing


async def test_each_sender_is_listed_with_its_endpoint_and_scheme(
    tmp_path: Path, upstream_server: object
) -> None:
    """Wiring a platform needs the URL to give it and what it must sign with: the doctor lists
    each sender so, and warns of a platform sender whose events are keyed by no ID of theirs."""
    app = web.Application()
    app.router.add_get("/", _hello)
    upstream = await upstream_server(app)  # type: ignore[operator]
    senders = """
[[sources]]
name = "stripe"
signature = "stripe"
secrets = ["env:S1", "env:S2"]
fields = {event_id = "/id"}
[[sources]]
name = "paddle"
signature = "paddle"
secrets = ["env:S1"]
[[sources]]
name = "cal"
signature = "hmac"
secrets = ["env:S1"]
hmac = {header = "Calendly-Webhook-Signature", stamped = true}
fields = {event_id = "/payload/uri"}
types = {"invitee.created" = "conversion", paid = "conversion"}
when = [
  {type = "invitee.created", pointer = "/payload/old_invitee", absent = true},
  {type = "paid", pointer = "/first", equals = "true"},
  {type = "paid", pointer = "/origin", matches = "web|api"},
  {type = "paid", pointer = "/user"},
]
[[sources]]
name = "seg"
format = "segment"
secrets = ["env:S1"]
"""
    cfg = await asyncio.to_thread(_config, tmp_path, upstream, senders)
    text = await asyncio.to_thread(cfg.read_text)
    await asyncio.to_thread(
        cfg.write_text, text.replace("[proxy]\n", '[proxy]\npublic_origin = "https://shop.example"\n')
    )
    code, out = await doctor(cfg, {**ENV, "S1": "a" * 32, "S2": "b" * 32})
    assert code == 0, out
    lines = out.splitlines()
    events = "POST https://shop.example/_gw/events"
    assert (
        f"[  ok] sender stripe: {events}, Stripe-Signature: t=…,v1=<hex HMAC of t.body> (2 secrets)" in lines
    )
    assert (
        f"[warn] sender paddle: {events}, Paddle-Signature: ts=…;h1=<hex HMAC of ts:body> (1 secret);"
        " sources[1].fields.event_id is not mapped"
    ) in lines
    assert (
        "[  ok] sender cal: POST https://shop.example/_gw/events,"
        " Calendly-Webhook-Signature: t=…,v1=<hex HMAC of t.body> (1 secret);"
        " records invitee.created only with no /payload/old_invitee;"
        " paid only with /first = 'true' and /origin matching 'web|api' and /user present"
    ) in lines
    segment = "HTTP Basic, the write key as user name (1 secret)"
    assert f"[  ok] sender seg: POST https://shop.example/_gw/segment, {segment}" in lines


async def test_another_gateway_under_this_node_name_is_a_warning(
    tmp_path: Path, central_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The central store saw another store instance sync under this ``storage.node`` within
    the hour: the doctor says so (a warning, as the sync goes on), and what to do."""
    from gateway.doctor import check_central
    from gateway.metrics import Metrics
    from gateway.options import CentralOptions
    from storage.local import LocalStore
    from storage.sync import Sync
    from tests.conftest import make_settings

    store = tmp_path / "gateway.db"
    toml = f'[storage]\npath = "{store}"\nnode = "edge-1"\n[central]\nurl = "env:CENTRAL_DSN"\n'
    settings = make_settings(tmp_path, toml, CENTRAL_DSN=central_dsn)
    monkeypatch.setenv("CENTRAL_DSN", central_dsn)  # the doctor reads the gateway's environment
    made = "central PostgreSQL reachable, no tables yet (made at start, schema "
    first = await check_central(settings, 5.0)
    assert first is not None and first.status == "ok" and first.what.startswith(made), first
    for path in (store, tmp_path / "clone.db"):
        opened = LocalStore(path, settings.options.storage, Metrics())
        await opened.open()
        await opened.close()
    await Sync(store, central_dsn, CentralOptions(), Metrics(), node="edge-1").once()
    newest = (await asyncio.to_thread(migrations, "pg_migrations"))[-1][0]
    current = Check("ok", f"central PostgreSQL reachable, schema {newest} (current)")
    assert (await check_central(settings, 5.0)) == current
    await Sync(tmp_path / "clone.db", central_dsn, CentralOptions(), Metrics(), node="edge-1").once()
    check = await check_central(settings, 5.0)
    assert check is not None and check.status == "warn", check
    assert "another gateway synced under storage.node 'edge-1'" in check.what
    assert "give each gateway its own storage.node" in check.fix


async def test_a_central_store_a_newer_gateway_migrated_fails_and_an_older_one_is_told(
    tmp_path: Path, central_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rolling upgrade: once one node's newer gateway has migrated the central store, an
    older gateway's sync stops every round (its log says so, while it serves on). Its doctor
    said `central PostgreSQL reachable` and `all checks passed`; it now fails, as for a local
    store of a newer schema, and says what to do. A store behind this gateway's is told to be
    migrated at start; another application's `schema_version` table fails, as the sync does."""
    import asyncpg

    from gateway.doctor import check_central

    newest = (await asyncio.to_thread(migrations, "pg_migrations"))[-1][0]
    monkeypatch.setenv("CENTRAL_DSN", central_dsn)
    settings = make_settings(tmp_path, '[central]\nurl = "env:CENTRAL_DSN"\n', CENTRAL_DSN=central_dsn)
    conn = await asyncpg.connect(central_dsn)
    try:
        await conn.execute(
            "CREATE TABLE schema_version (version integer PRIMARY KEY, name text NOT NULL, "
            "applied timestamptz NOT NULL DEFAULT now())"
        )
        await conn.execute("INSERT INTO schema_version (version, name) VALUES (3, '0003_privacy.sql')")
        behind = await check_central(settings, 5.0)
        told = f"central PostgreSQL reachable, schema 3 (migrated to {newest} at start)"
        assert behind == Check("ok", told)
        newer = "INSERT INTO schema_version (version, name) VALUES ($1, 'from a newer gateway')"
        await conn.execute(newer, newest + 1)
        ahead = await check_central(settings, 5.0)
        assert ahead is not None and ahead.status == "FAIL", ahead
        assert f"central PostgreSQL has schema {newest + 1}, newer than this gateway ({newest})" in ahead.what
        assert ahead.fix.startswith("upgrade this gateway")
        await conn.execute("DROP TABLE schema_version")
        await conn.execute("CREATE TABLE schema_version (version bigint, script text)")  # Flyway's
        foreign = await check_central(settings, 5.0)
        assert foreign is not None and foreign.status == "FAIL", foreign
        assert "schema_version table is not the gateway's" in foreign.what
    finally:
        await conn.close()


async def test_the_reporting_mirror_its_file_first_fill_last_round_and_lag(
    tmp_path: Path, central_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``central.mirror_path`` the doctor said nothing of the mirror: now its file, a
    warning while it was never filled (run ``gateway mirror --once``), and once it was, when it
    last completed a round and the central rows it has not yet, per table — reading only."""
    from gateway.doctor import check_mirror
    from gateway.metrics import Metrics
    from gateway.options import CentralOptions
    from storage.local import LocalStore
    from storage.mirror import Mirror, read_horizons
    from storage.sync import Sync
    from tests.conftest import make_settings

    store, path = tmp_path / "gateway.db", tmp_path / "reports" / "mirror.db"
    toml = (
        f'[storage]\npath = "{store}"\nnode = "edge-1"\n'
        f'[central]\nurl = "env:CENTRAL_DSN"\nmirror_path = "{path}"\n'
    )
    settings = make_settings(tmp_path, toml, CENTRAL_DSN=central_dsn)
    monkeypatch.setenv("CENTRAL_DSN", central_dsn)
    file, never = await check_mirror(settings, 5.0)
    assert file == Check("ok", f"mirror {path} will be created (folder writable)")
    assert never.status == "warn" and f"mirror {path} was never filled" in never.what, never
    assert "gateway mirror --once" in never.fix and never.line().startswith("[warn] mirror ")
    assert not await asyncio.to_thread(path.parent.exists)  # the doctor writes nothing

    async def touchpoints(n: int) -> None:
        opened = LocalStore(store, settings.options.storage, Metrics())
        await opened.open()
        await opened.write(
            [
                Touchpoint(
                    id=uuid7(),
                    ts=iso(datetime.now(UTC)),
                    node="edge-1",
                    visitor_key="9" * 32,
                    landing_path="/",
                )
                for _ in range(n)
            ]
        )
        await opened.close()
        await Sync(store, central_dsn, CentralOptions(), Metrics(), node="edge-1").once()

    await touchpoints(3)
    await Mirror(path, central_dsn, CentralOptions(), Metrics()).once()
    last = min(updated for _, updated in (await asyncio.to_thread(read_horizons, path)).values())
    file, caught_up = await check_mirror(settings, 5.0)
    assert file.status == "ok" and file.what.startswith(f"mirror {path} writable, schema "), file
    assert caught_up == Check(
        "ok", f"mirror {path} last completed a round at {last}; 0 central rows not mirrored yet"
    )
    await touchpoints(2)
    _, behind = await check_mirror(settings, 5.0)
    assert behind == Check(
        "ok",
        f"mirror {path} last completed a round at {last}; 2 central rows not mirrored yet (touchpoints 2)",
    )
    _, away = await check_mirror(settings, 5.0, reachable=False)  # the central check failed
    assert away == Check(
        "ok",
        f"mirror {path} last completed a round at {last}"
        " (rows not mirrored yet: unknown, the central PostgreSQL check failed)",
    )
    await asyncio.to_thread(path.write_bytes, b"not a database" * 100)
    (broken,) = await check_mirror(settings, 5.0)
    assert broken.status == "FAIL" and "is not a SQLite database" in broken.what
    assert broken.fix == "point central.mirror_path elsewhere"


async def test_a_mirror_of_another_central_store_is_told_it_starts_again_from_nothing(
    tmp_path: Path, central_dsn: str, postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mirror holds one central store's rows; ``central.url`` now names another (another
    database: another identity), or a store whose transaction ids are below the mirror's
    horizons (a dump restored into a new cluster). Its next round deletes every mirrored row and
    reads the store whole; the doctor said "0 central rows not mirrored yet" (until 2026-12-06).
    Now a warning says what that round will do — and the doctor changes nothing itself."""
    import asyncpg

    from gateway.doctor import check_mirror
    from gateway.metrics import Metrics
    from gateway.options import CentralOptions
    from storage.central import migrate
    from storage.local import LocalStore
    from storage.mirror import Mirror, read_horizons
    from storage.sync import Sync

    store, path = tmp_path / "gateway.db", tmp_path / "mirror.db"
    toml = (
        f'[storage]\npath = "{store}"\nnode = "a"\n'
        f'[central]\nurl = "env:CENTRAL_DSN"\nmirror_path = "{path}"\n'
    )
    opened = LocalStore(
        store, make_settings(tmp_path, toml, CENTRAL_DSN=central_dsn).options.storage, Metrics()
    )
    await opened.open()
    await opened.write([touch(n, "a" * 32) for n in range(3)])
    await opened.close()
    await Sync(store, central_dsn, CentralOptions(), Metrics(), node="a").once()
    await Mirror(path, central_dsn, CentralOptions(), Metrics()).once()
    last = min(updated for _, updated in (await asyncio.to_thread(read_horizons, path)).values())

    async def doctor_on(dsn: str) -> Check:
        monkeypatch.setenv("CENTRAL_DSN", dsn)
        _, said = await check_mirror(make_settings(tmp_path, toml, CENTRAL_DSN=dsn), 5.0, config="gw.toml")
        return said

    assert (await doctor_on(central_dsn)).status == "ok"  # the store it holds: nothing to say
    other = await create_database(postgres_server.dsn(), f"other_{uuid7().replace('-', '')[-12:]}")
    conn = await asyncpg.connect(other)
    try:
        await migrate(conn)  # its own central_identity
        identity = str(await conn.fetchval("SELECT identity::text FROM central_identity"))
    finally:
        await conn.close()
    replaced = await doctor_on(other)
    assert replaced.status == "warn", replaced
    assert replaced.what.startswith(
        f"mirror {path} (last completed a round at {last}): another central store than the one it"
        f" holds, at central.url (CENTRAL_DSN) (identity {identity[:8]}, was "
    ), replaced.what
    assert replaced.what.endswith(
        ": its next round starts it again from nothing — every mirrored row deleted, and this"
        " store read whole, erasures first; the reports show only what is mirrored until then"
    ), replaced.what
    assert replaced.fix == (
        "nothing to do if central.url (CENTRAL_DSN) names the central store the reports are to"
        " read now; if not, correct it before the mirror's next round (the gateway's, or"
        " `gateway mirror --once -c gw.toml`)"
    ), replaced.fix
    assert len(await ids(path, "touchpoints")) == 3  # the doctor only reads
    assert (await doctor_on(central_dsn)).status == "ok"  # nor did it record the other store

    # The same store, its transaction ids below the mirror's horizons: a dump restored into a
    # new cluster keeps the identity (the horizons moved up here, as such a mirror finds them).
    def ahead() -> int:
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            db.execute("UPDATE mirror_horizons SET horizon = horizon + 1000000")
            return int(db.execute("SELECT max(horizon) FROM mirror_horizons").fetchone()[0])

    mirror_at = await asyncio.to_thread(ahead)
    went_back = await doctor_on(central_dsn)
    assert went_back.status == "warn", went_back
    assert (
        "the central store's transaction ids at central.url (CENTRAL_DSN) went back (now " in went_back.what
        and f", the mirror is at {mirror_at}: a dump restored into another cluster" in went_back.what
        and "its next round starts it again from nothing" in went_back.what
    ), went_back.what
    # What the doctor said is what the round does: it starts again, and the doctor is quiet.
    assert (await Mirror(path, central_dsn, CentralOptions(), Metrics()).once())["touchpoints"] == 3
    assert (await doctor_on(central_dsn)).status == "ok"


@pytest.mark.parametrize("kind", ["sync", "mirror"])
async def test_a_round_lock_held_for_long_is_a_warning_naming_its_holder(tmp_path: Path, kind: str) -> None:
    """A round lock held for minutes is a process stopped in its round (Ctrl-Z), or a very long
    round: every round of the gateway's task waits meanwhile. The doctor says whose it is, with
    its pid; nothing for a lock free, held by a round just begun, or left by a holder killed."""
    store, mirror = tmp_path / "gateway.db", tmp_path / "mirror.db"
    toml = (
        f'[storage]\npath = "{store}"\n'
        f'[central]\nurl = "env:CENTRAL_DSN"\nmirror_path = "{mirror}"\ninterval_seconds = 1.0\n'
    )
    dsn = "postgresql://gw@127.0.0.1:1/gw"
    settings = await asyncio.to_thread(make_settings, tmp_path, toml, CENTRAL_DSN=dsn)

    async def locks() -> list[Check]:  # the doctor is a command: blocking, run in a thread here
        return await asyncio.to_thread(check_round_locks, settings)

    target = store if kind == "sync" else mirror
    path = lock_path(target, kind)
    assert await locks() == []  # no lock file yet
    an_hour_ago = datetime.now(UTC).timestamp() - 3600
    async with held_by_a_process(target, kind) as holder:
        assert await locks() == []  # a round running, just begun
        await asyncio.to_thread(os.utime, path, (an_hour_ago, an_hour_ago))
        (check,) = await locks()
        assert check.status == "warn", check
        assert check.what.startswith(f"{kind} round lock {path} held for 36")
        assert f"by the gateway's, pid {holder.proc.pid}:" in check.what
        assert f"kill -CONT {holder.proc.pid}" in check.fix
        holder.proc.send_signal(signal.SIGKILL)
        await holder.proc.wait()
    assert (await asyncio.to_thread(path.read_text)).startswith(f"{holder.proc.pid} ")  # names it still
    await asyncio.to_thread(os.utime, path, (an_hour_ago, an_hour_ago))
    assert await locks() == []  # the kernel let it go


async def test_a_node_under_another_identity_secret_is_a_warning(
    tmp_path: Path, central_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another node synced within the hour under another ``identity.secret`` than this config's
    (its check value in ``node_instances`` differs): the doctor says so, naming the node, as the
    sync logs it; a node under the same secret is no warning."""
    from gateway.doctor import check_central
    from gateway.keys import key_check
    from gateway.metrics import Metrics
    from gateway.options import CentralOptions
    from storage.local import LocalStore
    from storage.sync import Sync
    from tests.conftest import make_settings

    store = tmp_path / "gateway.db"
    toml = f'[storage]\npath = "{store}"\nnode = "edge-1"\n[central]\nurl = "env:CENTRAL_DSN"\n'
    settings = make_settings(tmp_path, toml, CENTRAL_DSN=central_dsn)
    monkeypatch.setenv("CENTRAL_DSN", central_dsn)  # the doctor reads the gateway's environment
    for path in (store, tmp_path / "two.db", tmp_path / "three.db"):
        opened = LocalStore(path, settings.options.storage, Metrics())
        await opened.open()
        await opened.close()

    async def sync(path: Path, node: str, secret: bytes) -> None:
        check = key_check(secret)
        await Sync(path, central_dsn, CentralOptions(), Metrics(), node=node, key_check=check).once()

    await sync(store, "edge-1", settings.secret)
    await sync(tmp_path / "two.db", "edge-2", settings.secret)
    newest = (await asyncio.to_thread(migrations, "pg_migrations"))[-1][0]
    current = Check("ok", f"central PostgreSQL reachable, schema {newest} (current)")
    assert (await check_central(settings, 5.0)) == current
    await sync(tmp_path / "three.db", "edge-3", b"x" * 40)
    check = await check_central(settings, 5.0)
    assert check is not None and check.status == "warn", check
    assert "under another identity.secret than this one: 'edge-3'" in check.what, check
    assert "the same identity.secret" in check.fix


async def test_a_role_that_cannot_write_the_central_tables_fails_the_doctor(
    tmp_path: Path, central_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A role that may connect and read, but not write the central tables (a read-only role
    given by mistake): every sync round fails (`permission denied`) while the gateway serves
    on. Until 2026-12-05 its doctor said `central PostgreSQL reachable, schema 10 (current)`
    and `all checks passed`."""
    import asyncpg

    from gateway.doctor import check_central
    from storage.central import migrate

    owner = await asyncpg.connect(central_dsn)
    role = f"gw-ro{uuid7().replace('-', '')[-12:]}"  # a name SQL must quote
    try:
        await migrate(owner)
        database = await owner.fetchval("SELECT current_database()")
        await owner.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        await owner.execute(f'CREATE ROLE "{role}" LOGIN')
        await owner.execute(f'GRANT CONNECT ON DATABASE {database} TO "{role}"')
        await owner.execute(f'GRANT USAGE ON SCHEMA public TO "{role}"')
        await owner.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"')
        dsn = central_dsn.replace("://postgres@", f"://{role}@")
        monkeypatch.setenv("CENTRAL_DSN", dsn)
        settings = make_settings(tmp_path, '[central]\nurl = "env:CENTRAL_DSN"\n', CENTRAL_DSN=dsn)
        check = await check_central(settings, 5.0)
        assert check is not None and check.status == "FAIL", check
        said = f"the user in central.url (CENTRAL_DSN) lacks rights the sync needs on {database}"
        assert said in check.what, check.what
        assert ": INSERT, UPDATE, DELETE on erasures, touchpoints, identities," in check.what, check.what
        assert check.fix == f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"'
        await owner.execute(check.fix)  # as the doctor wrote it
        ok = await check_central(settings, 5.0)
        assert ok is not None and ok.status == "ok", ok
    finally:
        await owner.execute(f'DROP OWNED BY "{role}"')
        await owner.execute(f'DROP ROLE IF EXISTS "{role}"')
        await owner.close()


async def test_a_role_with_no_right_on_the_central_tables_is_told_which_to_grant(
    tmp_path: Path, central_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node's role that may connect but was granted nothing on the tables (the GRANT
    forgotten): the doctor's rights check found the rights it lacks, but the check of other
    gateways under this node's name then read `node_instances`, was refused, and the checklist
    said only `permission denied for table node_instances … fix: check central.url`."""
    import asyncpg

    from gateway.doctor import check_central
    from storage.central import migrate

    owner = await asyncpg.connect(central_dsn)
    role = f"gw_none{uuid7().replace('-', '')[-12:]}"
    try:
        await migrate(owner)
        database = await owner.fetchval("SELECT current_database()")
        await owner.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        await owner.execute(f"CREATE ROLE {role} LOGIN")
        await owner.execute(f"GRANT CONNECT ON DATABASE {database} TO {role}")
        await owner.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        dsn = central_dsn.replace("://postgres@", f"://{role}@")
        monkeypatch.setenv("CENTRAL_DSN", dsn)
        store = tmp_path / "gateway.db"
        toml = f'[storage]\npath = "{store}"\nnode = "edge-1"\n[central]\nurl = "env:CENTRAL_DSN"\n'
        settings = make_settings(tmp_path, toml, CENTRAL_DSN=dsn)
        check = await check_central(settings, 5.0)
        assert check is not None and check.status == "FAIL", check
        said = f"the user in central.url (CENTRAL_DSN) lacks rights the sync needs on {database}"
        assert said in check.what, check.what
        lacks = ": SELECT on schema_version, central_identity; SELECT, INSERT, UPDATE, DELETE on erasures,"
        assert lacks in check.what, check.what
        assert check.fix == f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"
        await owner.execute(check.fix)  # as the doctor wrote it
        ok = await check_central(settings, 5.0)
        assert ok is not None and ok.status == "ok", ok
    finally:
        await owner.execute(f"DROP OWNED BY {role}")
        await owner.execute(f"DROP ROLE IF EXISTS {role}")
        await owner.close()


async def test_a_role_that_may_not_read_the_central_identity_is_told_to_grant_it(
    tmp_path: Path, central_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every sync round reads `central_identity` (PostgreSQL migration 0012), which only needs
    SELECT: a role granted its rights before the migration made the table syncs on without it
    (a central store made anew is then not refilled): a warning giving the GRANT."""
    import asyncpg

    from gateway.doctor import check_central
    from storage.central import migrate

    owner = await asyncpg.connect(central_dsn)
    try:
        await migrate(owner)
        database = await owner.fetchval("SELECT current_database()")
        await owner.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        async with node_role(owner, central_dsn, revoke=("central_identity",)) as (role, dsn):
            monkeypatch.setenv("CENTRAL_DSN", dsn)
            settings = make_settings(tmp_path, '[central]\nurl = "env:CENTRAL_DSN"\n', CENTRAL_DSN=dsn)
            check = await check_central(settings, 5.0)
            # The sync goes on without the identity's check (a store made anew is not refilled).
            assert check is not None and check.status == "warn", check
            assert check.what.endswith(
                f"may not read central_identity on {database}: the sync goes on, but a central store"
                " dropped and made again is not told apart, nor refilled"
            ), check.what
            assert check.fix == f"GRANT SELECT ON central_identity TO {role}"
            await owner.execute(check.fix)  # as the doctor wrote it
            ok = await check_central(settings, 5.0)
            assert ok is not None and ok.status == "ok", ok
    finally:
        await owner.close()


async def test_a_search_path_naming_no_schema_fails_the_doctor_naming_it(
    tmp_path: Path, central_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `?search_path=` whose schema does not exist: the doctor's rights check said `CREATE on
    the schema None` and fixed it with `GRANT CREATE ON SCHEMA None TO …` (until 2026-12-06)."""
    from gateway.doctor import check_central

    dsn = central_dsn + "?search_path=gatewya"
    monkeypatch.setenv("CENTRAL_DSN", dsn)
    settings = make_settings(tmp_path, '[central]\nurl = "env:CENTRAL_DSN"\n', CENTRAL_DSN=dsn)
    check = await check_central(settings, 5.0)
    assert check == Check(
        "FAIL",
        "central PostgreSQL reachable, but no schema of the search_path in central.url (CENTRAL_DSN)"
        " exists (gatewya); every sync round fails",
        "CREATE SCHEMA gatewya (as the role that owns the tables), or correct ?search_path= in central.url",
    ), check


async def test_a_search_path_schema_the_user_may_not_use_is_told_to_grant_usage(
    tmp_path: Path, central_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL skips a schema of the search_path its user has no USAGE on, as it skips one
    that does not exist: the doctor tells them apart, and gives the GRANT for the first."""
    import asyncpg

    from gateway.doctor import check_central

    owner = await asyncpg.connect(central_dsn)
    role = f"gw_nouse{uuid7().replace('-', '')[-12:]}"
    try:
        await owner.execute("CREATE SCHEMA gateway")
        await owner.execute(f"CREATE ROLE {role} LOGIN")
        dsn = central_dsn.replace("://postgres@", f"://{role}@") + "?search_path=gateway"
        monkeypatch.setenv("CENTRAL_DSN", dsn)
        settings = make_settings(tmp_path, '[central]\nurl = "env:CENTRAL_DSN"\n', CENTRAL_DSN=dsn)
        check = await check_central(settings, 5.0)
        assert check == Check(
            "FAIL",
            "central PostgreSQL reachable, but the user in central.url (CENTRAL_DSN) may not use the"
            " schema gateway of its search_path (gateway); every sync round fails",
            f"GRANT USAGE ON SCHEMA gateway TO {role}",
        ), check
        await owner.execute(check.fix)
        usable = await check_central(settings, 5.0)  # the next step: CREATE on it, to make the tables
        assert usable is not None and usable.what.startswith(
            "central PostgreSQL reachable, but the user in central.url (CENTRAL_DSN) lacks rights"
        ), usable
    finally:
        await owner.execute(f"DROP OWNED BY {role}")
        await owner.execute(f"DROP ROLE {role}")
        await owner.close()


async def test_a_central_store_nothing_listens_for_is_fixed_by_starting_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL down: the fix said only `check central.url` (until 2026-12-06), as if the URL
    were wrong, where the server being down is the likelier cause."""
    from gateway.doctor import check_central

    dsn = f"postgresql://gw@127.0.0.1:{_closed_port()}/tracking"
    monkeypatch.setenv("CENTRAL_DSN", dsn)
    settings = make_settings(tmp_path, '[central]\nurl = "env:CENTRAL_DSN"\n', CENTRAL_DSN=dsn)
    check = await check_central(settings, 5.0)
    assert check is not None and check.status == "FAIL", check
    assert check.what.startswith("central PostgreSQL unreachable: connection refused: nothing listens on"), (
        check.what
    )
    assert check.what.endswith("the server in central.url (CENTRAL_DSN) cannot be reached"), check.what
    assert check.fix == "start PostgreSQL there, or correct the host and port in central.url"


async def test_a_central_url_at_another_service_s_port_is_not_blamed_on_tls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, upstream_server: Any
) -> None:
    """``central.url`` at the site's web server's port (a wrong port): the doctor said the URL
    "asks for TLS (sslmode) and the server offers none" (until 2026-12-06), where the URL asks
    for no TLS and what answers there is no PostgreSQL."""
    from gateway.doctor import check_central

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="a web site")

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", page)
    site = (await upstream_server(app)).removeprefix("http://")
    dsn = f"postgresql://gw@{site}/tracking"
    monkeypatch.setenv("CENTRAL_DSN", dsn)
    settings = make_settings(tmp_path, '[central]\nurl = "env:CENTRAL_DSN"\n', CENTRAL_DSN=dsn)
    check = await check_central(settings, 5.0)
    assert check is not None and check.status == "FAIL", check
    assert "asks for TLS" not in check.what, check.what
    assert check.what.startswith("central PostgreSQL unreachable: ConnectionError"), check.what
    assert f"what answers at the host and port in central.url (CENTRAL_DSN), {site}, is not PostgreSQL" in (
        check.what
    ), check.what
    assert check.fix == "start PostgreSQL there, or correct the host and port in central.url"


async def test_a_central_url_at_a_port_that_takes_the_connection_and_says_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raw_upstream: Any
) -> None:
    """``central.url`` at a port whose listener takes the connection and never answers (a hung
    server, a service waiting for its client to speak first): the doctor said a *statement*
    "took longer than 60 s …: a lock another session holds" (until 2026-12-07), after 2 s, where
    no connection was ever made and no statement sent."""
    from gateway.doctor import check_central

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # holds the connection until the client closes it

    address = (await raw_upstream(silent)).removeprefix("http://")
    dsn = f"postgresql://gw@{address}/tracking"
    monkeypatch.setenv("CENTRAL_DSN", dsn)
    settings = make_settings(tmp_path, '[central]\nurl = "env:CENTRAL_DSN"\n', CENTRAL_DSN=dsn)
    check = await check_central(settings, 2.0)
    assert check is not None and check.status == "FAIL", check
    assert "statement" not in check.what and "60 s" not in check.what, check.what
    assert check.what == (
        "central PostgreSQL unreachable: ConnectTimeout: no answer within 2 s (--timeout); what"
        f" listens at the host and port in central.url (CENTRAL_DSN), {address}, took the"
        " connection but did not complete PostgreSQL's start-up: a server too busy or hung, or"
        " another service that waits for its client to speak first"
    ), check.what
    assert check.fix == (
        "check that PostgreSQL runs there and answers (its log; psql), or correct the host and port"
        " in central.url; a slow network: give it longer with --timeout"
    ), check.fix


async def test_a_central_store_s_refusal_is_fixed_by_what_it_refuses(
    tmp_path: Path, postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database that does not exist, a user that does not exist: the doctor's fix said only
    `check central.url` (until 2026-12-07), whatever the server refused. Now it says what to
    create or correct, and where (the variable holding the URL)."""
    import asyncpg

    from gateway.doctor import check_central, refused_fix

    port = postgres_server.port
    cases = {
        f"postgresql://postgres@127.0.0.1:{port}/no_such_db": (
            'database "no_such_db" does not exist',
            "create the database on the server (CREATE DATABASE no_such_db OWNER <user>), or"
            " correct its name in central.url (CENTRAL_DSN)",
        ),
        f"postgresql://no_such_user@127.0.0.1:{port}/postgres": (
            'role "no_such_user" does not exist',
            "create the user on the server (CREATE ROLE no_such_user LOGIN PASSWORD '…'), or"
            " correct the user name in central.url (CENTRAL_DSN)",
        ),
    }
    for dsn, (said, fix) in cases.items():
        monkeypatch.setenv("CENTRAL_DSN", dsn)
        settings = make_settings(tmp_path, '[central]\nurl = "env:CENTRAL_DSN"\n', CENTRAL_DSN=dsn)
        check = await check_central(settings, 5.0)
        assert check is not None and check.status == "FAIL", check
        assert check.what.startswith("central PostgreSQL refused: ") and said in check.what, check.what
        assert check.fix == fix, check.fix
    # The session's server trusts every password: a refused one as asyncpg raises it.
    wrong = asyncpg.InvalidPasswordError('password authentication failed for user "gw"')
    assert refused_fix(wrong, "central.url (CENTRAL_DSN)") == (
        "correct the user name or password in central.url (CENTRAL_DSN), or set that user's"
        " password on the server (ALTER ROLE gw PASSWORD '…')"
    )


async def test_a_secret_s_fix_asks_for_the_length_its_key_needs(tmp_path: Path) -> None:
    """The doctor told every secret's variable "(32+ characters)": a sender's secret (the
    platform's, at least 24 bytes) and a PostgreSQL URL too, where the gateway's own need it."""
    cfg = await asyncio.to_thread(
        _config,
        tmp_path,
        f"http://127.0.0.1:{_closed_port()}",
        '[central]\nurl = "env:PG_URL"\n[[sources]]\nname = "billing"\nsecrets = ["env:BILLING_SECRET"]\n',
    )
    code, out = await doctor(cfg, env={"GATEWAY_ADMIN_TOKEN": ENV["GATEWAY_ADMIN_TOKEN"]})
    assert code == 1, out
    lines = out.splitlines()
    fixes = {line: lines[i + 1].strip() for i, line in enumerate(lines) if line.startswith("[FAIL] config: ")}
    assert fixes == {
        "[FAIL] config: identity.secret: environment variable GATEWAY_SECRET is not set": (
            "fix: set the variable in the gateway's environment (32+ characters)"
        ),
        "[FAIL] config: central.url: environment variable PG_URL is not set": (
            "fix: set the variable in the gateway's environment"
        ),
        "[FAIL] config: sources[0].secrets[0]: environment variable BILLING_SECRET is not set": (
            "fix: set the variable in the gateway's environment"
            " to the sender's secret as the platform gives it"
        ),
    }, out


async def test_this_nodes_rows_waiting_for_the_sync_are_told_and_a_day_old_backlog_warned(
    tmp_path: Path, central_dsn: str, upstream_server: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sync failing for a day (PostgreSQL away, a wrong password) only logged it while the
    rows piled up, and the doctor said nothing of them (until 2026-12-05). Now how many wait per
    table and for how long: a warning past 5 minutes, as said both by the oldest row's time and
    the cursor's last move, so a backfill of old rows being delivered is no warning."""
    from gateway.doctor import check_unsynced
    from gateway.metrics import Metrics
    from gateway.options import CentralOptions
    from storage.local import LocalStore
    from storage.sync import Sync
    from tests.storage.stores import execute, landing

    app = web.Application()
    app.router.add_get("/", _hello)
    upstream = await upstream_server(app)  # type: ignore[operator]
    store = tmp_path / "gateway.db"
    toml = (
        f'[proxy]\nupstream = "{upstream}"\n[storage]\npath = "{store}"\n[central]\nurl = "env:CENTRAL_DSN"\n'
    )
    cfg = tmp_path / "gateway.toml"
    await asyncio.to_thread(cfg.write_text, toml)
    settings = await asyncio.to_thread(make_settings, tmp_path, toml, CENTRAL_DSN=central_dsn)

    async def unsynced() -> list[Check]:  # the doctor is a command: blocking, run in a thread here
        return await asyncio.to_thread(check_unsynced, settings, str(cfg))

    assert await unsynced() == []  # no store yet: nothing to say
    local = LocalStore(store, settings.options.storage, Metrics())
    await local.open()
    try:
        assert await unsynced() == [
            Check("ok", "central sync: none of this node's rows wait to be delivered")
        ]
        day_ago = datetime.now(UTC) - timedelta(hours=26)
        await local.write([landing(day_ago + timedelta(minutes=n), f"{n:032x}") for n in range(3)])
        (late,) = await unsynced()
        assert late.status == "warn", late
        assert late.what.startswith(
            "central sync: 3 rows of this node wait to be delivered (touchpoints 3); touchpoints rows"
            f" have waited 26 h (the oldest recorded at {iso(day_ago)}, none ever delivered), over 5 min"
        ), late
        assert f"`gateway sync --once -c {cfg}`" in late.fix
        # A backlog past what is counted one by one: the table's largest rowid tells it.
        monkeypatch.setattr("storage.cursors.COUNT_UP_TO", 2)
        assert (await unsynced())[0].what.startswith("central sync: about 3 rows of this node wait")
        monkeypatch.undo()
        code, out = await doctor(cfg, {**ENV, "CENTRAL_DSN": central_dsn})  # the whole checklist says it
        assert code == 0 and "[warn] central sync: 3 rows of this node wait" in out, out

        await Sync(store, central_dsn, CentralOptions(), Metrics()).once()
        assert (await unsynced())[0].what == "central sync: none of this node's rows wait to be delivered"
        # Last year's rows imported now, the sync delivering: they have waited seconds, not a year.
        year_ago = datetime.now(UTC) - timedelta(days=365)
        await local.write([landing(year_ago, "a" * 32), landing(year_ago, "b" * 32)])
        (backfill,) = await unsynced()
        assert backfill.status == "ok" and backfill.what.startswith(
            "central sync: 2 rows of this node wait to be delivered (touchpoints 2), for "
        ), backfill
        # Then a day without a delivery (the cursor's last move a day ago): a warning again.
        when = iso(datetime.now(UTC) - timedelta(days=1))
        await asyncio.to_thread(
            execute, store, f"UPDATE sync_cursors SET updated = '{when}' WHERE name = 'central:touchpoints'"
        )
        (stalled,) = await unsynced()
        assert stalled.status == "warn" and f"have waited 24 h (the oldest recorded at {iso(year_ago)}," in (
            stalled.what
        ), stalled
        assert f"last delivered at {when})" in stalled.what, stalled
    finally:
        await local.close()


async def test_each_sinks_rows_waiting_and_its_destination_are_told_with_nothing_sent(
    tmp_path: Path, batch_api: BatchApi, upstream_server: object
) -> None:
    """The doctor said nothing of sinks: a destination down for a day, its rows piling up, was
    only in the log and /metrics. Now per sink its rows waiting (a warning past 10 minutes, as
    the central sync's) and whether its destination takes a connection, sending it nothing."""
    from gateway.doctor_sinks import check_sinks
    from gateway.keys import Keys
    from gateway.metrics import Metrics
    from storage.local import LocalStore
    from storage.sinks import SinkSet, open_log
    from tests.storage.stores import landing

    app = web.Application()
    app.router.add_get("/", _hello)
    upstream = await upstream_server(app)  # type: ignore[operator]
    gone = _closed_port()
    store = tmp_path / "gateway.db"
    toml = (
        f'[proxy]\nupstream = "{upstream}"\n[storage]\npath = "{store}"\n'
        + sink_toml(batch_api, "webhook")
        + f'[[sinks]]\nname = "gone"\nkind = "segment"\nurl = "http://127.0.0.1:{gone}"\n'
        'secret = "env:SINK_SECRET"\n'
        + f'[[sinks]]\nname = "plain"\nkind = "segment"\nurl = "{batch_api.url.replace("http", "https")}"\n'
        'secret = "env:SINK_SECRET"\n'
    )
    cfg = tmp_path / "gateway.toml"
    await asyncio.to_thread(cfg.write_text, toml)
    env = {**ENV, "SINK_SECRET": "k" * 32}
    settings = await asyncio.to_thread(make_settings, tmp_path, toml, SINK_SECRET="k" * 32)
    local = LocalStore(store, settings.options.storage, Metrics())
    await local.open()
    try:
        day_ago = datetime.now(UTC) - timedelta(hours=26)
        await local.write([landing(day_ago + timedelta(minutes=n), f"{n:032x}") for n in range(3)])
        out_late, out_there, gone_late, gone_away, _, plain = await check_sinks(settings, 2.0)
        assert out_late.status == "warn" and out_late.what == (
            "sink out: 3 rows wait to be sent (touchpoints 3); touchpoints rows have waited 26 h"
            f" (the oldest recorded at {iso(day_ago)}, none ever sent), over 10 min: the sink is"
            " failing or not running"
        ), out_late
        assert "`sink out failed`" in out_late.fix and "sinks[0].url" in out_late.fix, out_late
        port = batch_api.url.rpartition(":")[2]
        assert out_there == Check(
            "ok", f"sink out: its destination 127.0.0.1:{port} takes a connection (nothing sent)"
        )
        assert gone_late.status == "warn" and gone_late.what.startswith("sink gone: 3 rows wait"), gone_late
        assert gone_away == Check(
            "FAIL",
            f"sink gone: destination unreachable: connection refused: nothing listens on 127.0.0.1:{gone}",
            "start the destination or correct sinks[1].url; its rows wait in the store meanwhile",
        )
        assert plain == Check(  # a TLS failure is said as one, not as a destination away
            "FAIL",
            f"sink plain: its destination 127.0.0.1:{port} does not answer in TLS",
            "it likely speaks plain HTTP there: write sinks[2].url with http://, or name its TLS port",
        )
        assert batch_api.received == 0  # a connection, never a request: no made-up event
        code, out = await doctor(cfg, env)  # the whole checklist says them
        assert code == 1 and "[warn] sink out: 3 rows wait to be sent" in out, out
        assert "[FAIL] sink gone: destination unreachable" in out, out

        keys = Keys.from_master(settings.secret, settings.options.identity.user_id_storage)
        sinks, db = SinkSet(settings, Metrics(), keys), await open_log(settings)
        try:
            await sinks.sinks["out"].round(db)
        finally:
            await db.close()
            await sinks.close()
        assert batch_api.received == 1
        sent = (await check_sinks(settings, 2.0))[0]
        assert sent == Check("ok", "sink out: no rows wait to be sent"), sent
    finally:
        await local.close()


_MIGRATE = """
import sys
from gateway.config import load_settings
from gateway.doctor import check_workers
for workers, value in ((2, "0"), (2, "1"), (1, "0")):
    with open("/proc/sys/net/ipv4/tcp_migrate_req", "w") as sysctl:
        sysctl.write(value)
    text = f'[proxy]\\nworkers = {workers}\\n[storage]\\npath = "{sys.argv[1]}"\\n'
    for check in check_workers(load_settings(None, text=text)):
        print(workers, value, check.status, check.what, "|", check.fix)
    print(workers, value, "end")
"""


def test_several_workers_without_tcp_migrate_req_are_warned_that_a_stopped_ones_queue_is_reset(
    tmp_path: Path,
) -> None:
    """Each worker has its own queue on the ``SO_REUSEPORT`` port: a worker that crashes or is
    killed for hanging resets the connections waiting in it unless ``net.ipv4.tcp_migrate_req``
    hands them to a sibling. The sysctl belongs to the network namespace, so this sets it in one
    of its own."""
    if subprocess.run(["unshare", "-rn", "true"], capture_output=True, check=False).returncode:
        pytest.skip("no unprivileged network namespaces here (unshare -rn)")
    done = subprocess.run(
        ["unshare", "-rn", sys.executable, "-c", _MIGRATE, str(tmp_path / "gw.db")],
        capture_output=True, text=True, timeout=60, check=False,
        cwd=Path(__file__).parents[2], env={"PATH": "/usr/bin:/bin", **ENV},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == (
        "2 0 warn proxy.workers: 2 workers share the public port; a worker that crashes or is killed"
        " for hanging resets the visitors' connections waiting for it (net.ipv4.tcp_migrate_req = 0)"
        " | sysctl -w net.ipv4.tcp_migrate_req=1, and keep it in /etc/sysctl.d/"
        " (a container: --sysctl net.ipv4.tcp_migrate_req=1)"
    )
    assert lines[1:] == [
        "2 0 end",
        "2 1 ok proxy.workers: 2 workers share the public port; a stopped worker's waiting connections"
        " go to another (tcp_migrate_req) | ",
        "2 1 end",
        "1 0 end",  # one process: no queue of a sibling to lose
    ]


def test_a_bad_body_limit_above_the_body_limit_is_a_warning(tmp_path: Path) -> None:
    """No delivery larger than ``webhooks.max_body`` is taken: a ``bad_body_limit`` above it
    never applies, which the doctor says as ``gateway check`` does (harmless: no failure)."""
    sender = '[[sources]]\nname = "a"\nsecrets = ["env:S1"]\n'
    toml = sender + "[webhooks]\nmax_body = 2048\nbad_body_limit = 4096\n"
    checks = check_senders(make_settings(tmp_path, toml, S1="a" * 32))
    assert [(c.status, c.what.split(":")[0]) for c in checks] == [
        ("ok", "sender a"),
        ("warn", "webhooks.bad_body_limit (4096) is above webhooks.max_body (2048)"),
    ]
    fine = sender + "[webhooks]\nmax_body = 4096\nbad_body_limit = 4096\n"
    assert [c.status for c in check_senders(make_settings(tmp_path, fine, S1="a" * 32))] == ["ok"]


async def test_an_unreachable_postgresql_is_said_as_the_upstream_is(blockbuster: BlockBuster) -> None:
    """The doctor's line (and the sync's log line, from the same words) said Python's exception:
    `central PostgreSQL unreachable: ConnectionRefusedError: [Errno 111] Connect call failed
    ('127.0.0.1', 5432); …`. Now as an unreachable upstream is said."""
    from types import SimpleNamespace

    for function in blockbuster.functions.values():
        function.can_block_in("asyncpg/connect_utils.py", {"_parse_connect_dsn_and_args"})

    from gateway.doctor import check_central

    port = _closed_port()
    url = f"postgresql://gw@127.0.0.1:{port}/gw"
    settings = SimpleNamespace(options=SimpleNamespace(central=SimpleNamespace(url=url)))
    check = await check_central(settings, 2.0)  # type: ignore[arg-type]
    assert check is not None and check.status == "FAIL"
    assert check.what == (
        f"central PostgreSQL unreachable: connection refused: nothing listens on 127.0.0.1:{port};"
        " the server in central.url cannot be reached"
    ), check.what
