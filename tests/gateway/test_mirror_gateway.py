"""A reporting gateway with a mirror (``central.mirror_path``): its reports, fraud report and
dashboard read every node's rows; ``gateway mirror --once``; ``gateway reclassify`` of the
mirror."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from gateway import reporting
from gateway.attribution import Attribution
from gateway.cli import main
from gateway.events import Conversion, iso
from gateway.ids import uuid7
from gateway.metrics import Metrics
from gateway.options import AttributionOptions
from gateway.reportstate import REPORTING_KEY
from storage.mirror import Mirror, open_mirror
from storage.reports import Reports
from tests.conftest import ENV, GatewayFactory, PostgresServer
from tests.gateway.test_central import _drop_node_rows, _write_local, admin_get, eventually, node_toml
from tests.gateway.test_central import origin as origin  # the fixture
from tests.gateway.test_cli import (
    ROOT,
    _channels,
    _old_store,
    a_long_reclassify,
    gateway,
    until_some_channels_written,
)
from tests.storage.stores import landing, read
from tests.storage.test_mirror import CHANNELS, EVERY, conversion
from tests.storage.test_reports_shared import holding
from tests.storage.test_sync import OPTIONS, T0, Node
from tests.terminal import on_a_terminal


def mirror_toml(tmp_path: Path) -> str:
    return node_toml(tmp_path, "r", source="local").replace(
        "connect_timeout = 2.0", f'connect_timeout = 2.0\n        mirror_path = "{tmp_path / "mirror.db"}"'
    )


async def test_a_reporting_gateway_credits_a_journey_across_two_nodes(
    tmp_path: Path, start_gateway: GatewayFactory, origin: str, central_dsn: str
) -> None:
    env = {"GATEWAY_CENTRAL_URL": central_dsn}
    a = await start_gateway(origin, node_toml(tmp_path, "a", source="local"), env)
    b = await start_gateway(origin, node_toml(tmp_path, "b", source="local"), env)
    reporter = await start_gateway(origin, mirror_toml(tmp_path), env)
    async with a.session.get(a.url + "/pricing?utm_source=newsletter&utm_campaign=x") as resp:
        assert resp.status == 200
        cookie = resp.cookies["gw_vid"].value
    key = a.gateway.keys.visitor_key(cookie.split(".")[1])
    now = datetime.now(UTC) + timedelta(seconds=1)
    sale = Conversion(
        uuid7(int(now.timestamp() * 1000)), iso(now), "b", "purchase", "order:1", key, None, 9.0, "EUR"
    )
    await b.gateway.store.write([sale])
    today = datetime.now(UTC).date()
    period = f"since={today - timedelta(days=1)}&until={today + timedelta(days=1)}"

    async def credited(gw: object) -> dict[str, float]:
        status, body = await admin_get(
            gw, f"/api/attribution?group_by=campaign&verdicts=allow,block&{period}"
        )  # type: ignore[arg-type]
        assert status == 200, body
        assert body["source"] == ("mirror" if gw is reporter else "local"), body  # the store read
        return {row["group"]: row["conversions"] for row in body["rows"] if row["conversions"]}

    async def mirrored() -> bool:
        return await credited(reporter) == {"x": 1.0}

    await eventually(mirrored)
    assert "x" not in await credited(b) and "x" not in await credited(a)
    status, fraud = await admin_get(reporter, f"/api/fraud?group_by=campaign&{period}")
    assert status == 200 and [group["key"] for group in fraud["groups"]] == ["x"], fraud
    assert fraud["source"] == "mirror"
    status, summary = await admin_get(reporter, f"/api/dashboard/summary?{period}")
    assert status == 200, summary
    # The test client's landing is scored block (no browser headers): not credited, said so.
    totals = {"touchpoints": 0, "visitors": 0, "not_credited": 1, "conversions": 1}
    assert summary["totals"] == totals, summary
    assert [row["name"] for row in summary["top_campaigns"]] == ["x"]
    assert summary["source"] == "mirror"
    for part in ("counts", "daily", "models"):
        status, body = await admin_get(reporter, f"/api/dashboard/summary?part={part}&{period}")
        assert status == 200 and body["source"] == "mirror", body
    status, summary = await admin_get(a, f"/api/dashboard/summary?part=daily&{period}")
    assert status == 200 and summary["source"] == "local", summary

    # A round of the mirror that stores rows changes what its reports say: a report asked for
    # after it is not answered by one asked for before it, but computed anew.
    engine = reporter.gateway.admin_app[REPORTING_KEY].reports
    async with holding(engine):  # a long report: the thread is busy, the requests queue behind it
        before, generation = engine.report, engine.generation
        first = asyncio.create_task(credited(reporter))
        await eventually(lambda: _in_flight(engine, 1))
        later = now + timedelta(seconds=1)
        again = replace(sale, id=uuid7(int(later.timestamp() * 1000)), ts=iso(later), dedup_key="order:2")
        await b.gateway.store.write([again])

        async def stored() -> bool:  # the round that stored it has told the reports
            return await asyncio.to_thread(_conversions, tmp_path / "mirror.db") == 2 and (
                engine.generation > generation
            )

        await eventually(stored)
        second = asyncio.create_task(credited(reporter))
        await eventually(lambda: _in_flight(engine, 2))  # its own run, beside the first
    await first
    assert await second == {"x": 2.0}
    assert engine.report - before == 2


async def _in_flight(engine: Reports, n: int) -> bool:
    return len(engine._shared) >= n


def _conversions(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT count(*) FROM conversions").fetchone()[0])
    finally:
        db.close()


def test_mirror_once_command(tmp_path: Path, postgres_server: PostgresServer, capsys, monkeypatch) -> None:
    dsn = postgres_server.dsn()  # the session server's own database: this test cleans up after itself
    config = tmp_path / "gw.toml"
    config.write_text(
        '[storage]\npath = "node.db"\nnode = "mirrorcron"\n[central]\nurl = "env:GATEWAY_CENTRAL_URL"\n'
        'mirror_path = "mirror.db"\n'
    )
    for name, value in {**ENV, "GATEWAY_CENTRAL_URL": dsn}.items():
        monkeypatch.setenv(name, value)
    _write_local(tmp_path / "node.db", "mirrorcron", 3, gpc=2)
    try:
        assert main(["sync", "--once", "-c", str(config)]) == 0
        capsys.readouterr()
        assert main(["mirror", "--once", "-c", str(config)]) == 0
        out = capsys.readouterr().out
        assert "touchpoints: " in out and "daily_counts: 1 rows" in out and "total: " in out, out
        assert main(["mirror", "--once", "-c", str(config)]) == 0
        out = capsys.readouterr().out
        assert "touchpoints: 0 rows" in out and "daily_counts: 0 rows" in out
        # On a terminal, a bar of the rows stored so far (none with --no-progress).
        _write_local(tmp_path / "node.db", "mirrorcron", 2)
        assert main(["sync", "--once", "-c", str(config)]) == 0
        capsys.readouterr()
        env = {**ENV, "GATEWAY_CENTRAL_URL": dsn}
        drawn = on_a_terminal("mirror", "--once", "-c", str(config), env=env)
        assert "mirror: " in drawn and "2 rows" in drawn and "touchpoints: 2 rows" in drawn, drawn
        _write_local(tmp_path / "node.db", "mirrorcron", 1)
        assert main(["sync", "--once", "-c", str(config)]) == 0
        quiet = on_a_terminal("mirror", "--once", "--no-progress", "-c", str(config), env=env)
        assert "mirror: " not in quiet and "touchpoints: 1 rows" in quiet, quiet
        capsys.readouterr()
        # `gateway report` reads the mirror too: the node's own rows gone, its clicks remain.
        (tmp_path / "node.db").unlink()
        assert main(["report", "--fraud", "--format", "csv", "-c", str(config)]) == 0
        out, err = capsys.readouterr()
        assert out.splitlines()[1].startswith(",6,"), out  # 3 + 2 + 1 clicks, of no creator
        # stderr says which store it read, and as of when (stdout is the report alone).
        said = f"gateway report: read the reporting mirror {tmp_path / 'mirror.db'} (central.mirror_path)"
        assert err.startswith(f"{said}, as of its last round at 20"), err
        assert "empty" not in err and "gateway report" not in out
    finally:
        asyncio.run(_drop_node_rows(dsn, "mirrorcron"))
    monkeypatch.setenv("GATEWAY_CENTRAL_URL", "postgresql://postgres@127.0.0.1:9/nowhere")
    assert main(["mirror", "--once", "-c", str(config)]) == 1
    err = capsys.readouterr().err
    assert "cannot reach the central store" in err and "keeps what it had" in err, err
    config.write_text('[storage]\npath = "node.db"\n')
    assert main(["mirror", "--once", "-c", str(config)]) == 2
    assert "central.mirror_path" in capsys.readouterr().err


async def _made(path: Path) -> None:
    await (await open_mirror(path)).close()


def test_a_report_over_a_mirror_never_filled_says_so(tmp_path: Path, capsys, monkeypatch) -> None:
    """The central store away since the start: the mirror is made empty and every report is
    empty. `gateway report` printed that empty report without a word; now stderr says it read
    the mirror, empty, and to fill it — stdout and the exit code as for any empty report."""
    config = tmp_path / "gw.toml"
    config.write_text(
        '[storage]\npath = "node.db"\n[central]\nurl = "env:GATEWAY_CENTRAL_URL"\n'
        'mirror_path = "m/mirror.db"\n'
    )
    for name, value in {**ENV, "GATEWAY_CENTRAL_URL": "postgresql://postgres@127.0.0.1:9/nowhere"}.items():
        monkeypatch.setenv(name, value)
    _write_local(tmp_path / "node.db", "n", 2)  # the node's own rows: not what the report reads
    mirror = tmp_path / "m" / "mirror.db"
    # No mirror file at all (a mistyped path): said, and not made (until 2026-12-05 the report
    # made and migrated one there, which `gateway doctor` then found "writable").
    assert main(["report", "--format", "csv", "-c", str(config)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err == (
        f"gateway report: no reporting mirror at {mirror} (central.mirror_path): the reporting"
        f" gateway makes it when it starts, or `gateway mirror --once -c {config}` fills it\n"
    )
    assert not mirror.parent.exists()
    asyncio.run(_made(mirror))  # as the reporting gateway makes it when it starts
    assert main(["report", "--format", "csv", "-c", str(config)]) == 0
    out, err = capsys.readouterr()
    assert err == (
        f"gateway report: read the reporting mirror {mirror} (central.mirror_path): it is empty, never"
        f" filled; run `gateway mirror --once -c {config}`\n"
        # As any empty CSV or NDJSON (since 2026-12-07): why it has no rows.
        "gateway report: no rows: no conversions in this period; [[conversions]] rules and signed"
        " events record them\n"
    )
    assert out.splitlines() == ["group,currency,conversions,value"], out
    config.write_text('[storage]\npath = "node.db"\n')  # no mirror: nothing said of one
    assert main(["report", "--format", "csv", "-c", str(config)]) == 0
    assert "mirror" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("mirror", "url", "problem"),
    [
        ("node.db", True, "is the node's own store (storage.path)"),
        ("./node.db", True, "is the node's own store (storage.path)"),
        ("mirror.db", False, "central.mirror_path: needs central.url"),
        (".", True, "is a folder, not a file; name the mirror's SQLite file"),
        ("a\\u0000b", True, "central.mirror_path: a file path cannot hold a NUL character"),
    ],
)
def test_mirror_path_problems_name_the_key(
    tmp_path: Path, capsys, monkeypatch, mirror: str, url: bool, problem: str
) -> None:
    config = tmp_path / "gw.toml"
    central = '[central]\nurl = "env:GATEWAY_CENTRAL_URL"\n' if url else "[central]\n"
    config.write_text(f'[storage]\npath = "node.db"\n{central}mirror_path = "{mirror}"\n')
    for name, value in {**ENV, "GATEWAY_CENTRAL_URL": "postgresql://u@127.0.0.1:9/db"}.items():
        monkeypatch.setenv(name, value)
    assert main(["check", "-c", str(config)]) == 2
    assert problem in capsys.readouterr().err


def test_a_mirror_on_the_nodes_store_is_said_with_the_configs_other_problems(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    """`gateway check` said a mirror on the node's own store (and a folder for the store, a
    GeoIP file that is not one) only once every other problem (a bad sink name) was fixed: one
    problem a run. Now every one in the same run; a key already wrong is not looked at."""
    config = tmp_path / "gw.toml"
    config.write_text(
        '[storage]\npath = "node.db"\n[central]\nurl = "env:GATEWAY_CENTRAL_URL"\nmirror_path = "node.db"\n'
        '[geo]\ncountry_db = "."\n'
        '[[sinks]]\nname = "bad name!"\nkind = "webhook"\nurl = "http://127.0.0.1:9/x"\n'
        'secret = "env:SINK_KEY"\n'
    )
    for name, value in {**ENV, "GATEWAY_CENTRAL_URL": "postgresql://u@127.0.0.1:9/db"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SINK_KEY", "k" * 32)
    assert main(["check", "-c", str(config)]) == 2
    err = capsys.readouterr().err
    assert "sinks[0].name: must be 1-64" in err, err
    assert "central.mirror_path: " in err and "is the node's own store (storage.path)" in err, err
    assert "geo.country_db: " in err and "is a folder, not a file" in err, err
    # A [storage] that did not decode holds its defaults: nothing is said of a file it never named.
    config.write_text(
        '[storage]\npth = "x"\n[central]\nurl = "env:GATEWAY_CENTRAL_URL"\nmirror_path = "gateway.db"\n'
    )
    assert main(["check", "-c", str(config)]) == 2
    err = capsys.readouterr().err
    assert "storage.pth: unknown key" in err and "mirror_path" not in err, err


async def test_a_mirror_role_refused_a_read_is_told_to_be_granted_select_only(
    tmp_path: Path, central_dsn: str, capsys, monkeypatch
) -> None:
    """`gateway mirror --once` under a role that may not read a central table was told the
    sync's rights (CREATE on the schema; SELECT, INSERT, UPDATE, DELETE), more than a mirror,
    which only reads, needs. Now SELECT, the GRANT to run, and CREATE only for a migration due;
    once SELECT is granted, the round goes through: nothing else was missing."""
    from storage.central import migrate

    owner = await asyncpg.connect(central_dsn)
    role = f"gw_mirror{uuid7().replace('-', '')[-12:]}"
    try:
        await migrate(owner)
        database = await owner.fetchval("SELECT current_database()")
        await owner.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        await owner.execute(f"CREATE ROLE {role} LOGIN")
        await owner.execute(f"GRANT CONNECT ON DATABASE {database} TO {role}")
        await owner.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        await owner.execute(f"GRANT SELECT ON schema_version TO {role}")
        config = tmp_path / "gw.toml"
        await asyncio.to_thread(
            config.write_text,
            '[storage]\npath = "node.db"\n[central]\nurl = "env:GATEWAY_CENTRAL_URL"\n'
            'mirror_path = "mirror.db"\n',
        )
        for name, value in {
            **ENV,
            "GATEWAY_CENTRAL_URL": central_dsn.replace("://postgres@", f"://{role}@"),
        }.items():
            monkeypatch.setenv(name, value)
        assert await asyncio.to_thread(main, ["mirror", "--once", "-c", str(config)]) == 1
        err = capsys.readouterr().err
        assert "permission denied for table" in err, err
        assert (
            "the user in central.url (GATEWAY_CENTRAL_URL) lacks a privilege the reporting mirror" in err
        ), err
        assert "SELECT on the central tables (GRANT SELECT ON ALL TABLES IN SCHEMA <schema> TO <user>)" in err
        assert "INSERT" not in err and "DELETE" not in err, err
        await owner.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
        assert await asyncio.to_thread(main, ["mirror", "--once", "-c", str(config)]) == 0, (
            capsys.readouterr()
        )
    finally:
        await owner.execute(f"DROP OWNED BY {role}")
        await owner.execute(f"DROP ROLE IF EXISTS {role}")
        await owner.close()


RULE_CHANGE = '[channels]\nreferrers = { "search.example.net" = "search" }\n'
"""A referrer the default rules leave a Referral, now a search engine: Organic Search."""


def reporting_toml(store: str, mirror: str, rules: str = RULE_CHANGE) -> str:
    return (
        f'[storage]\npath = "{store}"\n[central]\nurl = "env:GATEWAY_CENTRAL_URL"\n'
        f'mirror_path = "{mirror}"\n{rules}'
    )


async def test_reclassify_moves_the_mirrors_channels_too(tmp_path: Path, central_dsn: str) -> None:
    """After a rule change, `gateway reclassify` on a reporting gateway rewrote its own store's
    channels only, while every report reads the mirror: they kept showing each node's old
    channels. Now it reclassifies the mirror after the local store, each summed up on lines
    naming it; a dry run changes neither; the report engine the reporting gateway keeps open
    answers with the new channels. The central store keeps the first ones, and rows the
    mirror adds later keep their node's (the nodes reload the rules first)."""
    a, b = Node(tmp_path, "a", central_dsn), Node(tmp_path, "b", central_dsn)
    mirror = tmp_path / "mirror.db"
    mirrors = Mirror(mirror, central_dsn, OPTIONS, Metrics())
    referral = {"referrer_host": "search.example.net", "channel": "Referral"}
    await a.store.open()
    await b.store.open()
    try:
        await a.store.write(
            [
                landing(T0, "1" * 32, **referral),
                landing(T0 + timedelta(seconds=1), "2" * 32, source="news", medium="email", channel="Email"),
            ]
        )
        await b.store.write(
            [
                landing(T0 + timedelta(seconds=2), "3" * 32, node="b", **referral),
                conversion("1" * 32, "b", T0 + timedelta(hours=1), "o1"),
                conversion("3" * 32, "b", T0 + timedelta(hours=1, seconds=1), "o3"),
            ]
        )
        for node in (a, b):
            await node.sync.once()
        await mirrors.once()
        cfg = tmp_path / "gw.toml"
        await asyncio.to_thread(cfg.write_text, reporting_toml("a.db", "mirror.db"))
        env = {"GATEWAY_CENTRAL_URL": central_dsn}
        engine = Reports(mirror, Attribution(AttributionOptions()), CHANNELS, processes=1)
        await engine.open()
        try:
            q = reporting.Query(*EVERY, models=("last_touch",))

            async def credited() -> dict[str, float]:
                rows = json.loads((await reporting.attribution(engine, q)).json())["rows"]
                return {row["group"]: row["conversions"] for row in rows}

            assert await credited() == {"Referral": 2.0}
            channels = "SELECT id, channel FROM touchpoints ORDER BY id"
            before = {path: await read(path, channels) for path in (a.path, mirror)}

            dry = await asyncio.to_thread(gateway, "reclassify", "-c", str(cfg), "--dry-run", env=env)
            assert dry.returncode == 0, dry.stderr
            assert dry.stdout.splitlines() == [
                f"reclassify (local {a.path}): 2 touchpoints, 1 changed (dry run: nothing written)",
                "  Referral -> Organic Search: 1",
                f"reclassify (mirror {mirror}): 3 touchpoints, 2 changed (dry run: nothing written)",
                "  Referral -> Organic Search: 2",
            ], dry.stdout
            assert {path: await read(path, channels) for path in (a.path, mirror)} == before
            assert await credited() == {"Referral": 2.0}

            done = await asyncio.to_thread(gateway, "reclassify", "-c", str(cfg), env=env)
            assert done.returncode == 0, done.stderr
            assert done.stdout.splitlines() == [
                f"reclassify (local {a.path}): 2 touchpoints, 1 changed",
                "  Referral -> Organic Search: 1",
                f"reclassify (mirror {mirror}): 3 touchpoints, 2 changed",
                "  Referral -> Organic Search: 2",
            ], done.stdout
            assert [c for _, c in await read(a.path, channels)] == ["Organic Search", "Email"]
            assert [c for _, c in await read(mirror, channels)] == [
                "Organic Search",
                "Email",
                "Organic Search",
            ]
            assert await credited() == {"Organic Search": 2.0}  # the engine kept nothing stale
            pg = await asyncpg.connect(central_dsn)
            try:  # the central store keeps each touchpoint's channel as first synced (Known limits)
                central = await pg.fetch("SELECT channel FROM touchpoints ORDER BY id")
            finally:
                await pg.close()
            assert [r["channel"] for r in central] == ["Referral", "Email", "Referral"]

            # A node still on the old rules: the mirror adds its row with the node's channel,
            # and leaves the rows it reclassified as they are.
            await b.store.write(
                [
                    landing(T0 + timedelta(seconds=3), "4" * 32, node="b", **referral),
                    conversion("4" * 32, "b", T0 + timedelta(hours=1, seconds=2), "o4"),
                ]
            )
            await b.sync.once()
            await mirrors.once()
            assert [c for _, c in await read(mirror, channels)][-2:] == ["Organic Search", "Referral"]
            assert await credited() == {"Organic Search": 2.0, "Referral": 1.0}
            again = await asyncio.to_thread(gateway, "reclassify", "-c", str(cfg), env=env)
            assert f"reclassify (mirror {mirror}): 4 touchpoints, 1 changed" in again.stdout, again.stdout
            assert f"reclassify (local {a.path}): 2 touchpoints, 0 changed" in again.stdout
            assert await credited() == {"Organic Search": 3.0}
        finally:
            await engine.close()
    finally:
        await a.store.close()
        await b.store.close()


def test_reclassify_of_the_mirror_can_be_interrupted_and_finished_alone(tmp_path: Path) -> None:
    """Ctrl-C while the mirror is reclassified: the local store's summary is out, stderr says
    how far the mirror got, and `--store mirror` finishes the mirror alone; `--store local`
    leaves it. A mirror not made yet is skipped with a word; asked for alone, it is an error,
    and `--store mirror` without a mirror set is a config error. (The mirror is a local store's
    schema: made here as one, never read from PostgreSQL, whose URL goes nowhere.)"""
    local, mirror = tmp_path / "gw.db", tmp_path / "mirror.db"
    _old_store(local)
    a_long_reclassify(mirror)
    cfg = tmp_path / "gw.toml"
    cfg.write_text(reporting_toml("gw.db", "mirror.db", rules=""))
    env = {"PATH": "/usr/bin:/bin", "GATEWAY_CENTRAL_URL": "postgresql://postgres@127.0.0.1:9/nowhere"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "reclassify", "-c", str(cfg), "--batch-size", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    until_some_channels_written(mirror)  # some of the mirror's batches
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, (out, err)
    assert out.startswith(f"reclassify (local {local}): 3 touchpoints, 3 changed\n"), out
    assert "(mirror " not in out, out
    assert f"reclassify (mirror {mirror}): interrupted after " in err, err
    assert err.rstrip().endswith("run it again to finish (--store mirror: the mirror alone)"), err
    assert "Traceback" not in err
    kept = _channels(mirror)
    changed = sum(1 for _, channel in kept if channel is not None)
    assert 0 < changed < 30_003

    alone = gateway("reclassify", "-c", str(cfg), "--store", "mirror", env=env)
    assert alone.returncode == 0, alone.stderr
    assert alone.stdout.splitlines()[0] == (
        f"reclassify (mirror {mirror}): 30,003 touchpoints, {30_003 - changed:,} changed"
    ), alone.stdout
    assert "(local " not in alone.stdout
    mine = gateway("reclassify", "-c", str(cfg), "--store", "local", env=env)
    assert mine.stdout.splitlines() == [f"reclassify (local {local}): 3 touchpoints, 0 changed"], mine

    mirror.unlink()
    for name in ("mirror.db-wal", "mirror.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    skipped = gateway("reclassify", "-c", str(cfg), env=env)
    assert skipped.returncode == 0, skipped.stderr
    assert skipped.stdout.splitlines() == [f"reclassify (local {local}): 3 touchpoints, 0 changed"]
    assert (
        f"reclassify (mirror {mirror}): no mirror there yet (central.mirror_path): skipped" in skipped.stderr
    )
    missing = gateway("reclassify", "-c", str(cfg), "--store", "mirror", env=env)
    assert missing.returncode == 1 and f"no reporting mirror at {mirror}" in missing.stderr, missing
    assert not mirror.exists()  # not made by asking
    cfg.write_text('[storage]\npath = "gw.db"\n')
    unset = gateway("reclassify", "-c", str(cfg), "--store", "mirror")
    assert unset.returncode == 2 and "central.mirror_path" in unset.stderr, unset
    plain = gateway("reclassify", "-c", str(cfg))
    assert plain.stdout == "reclassify: 3 touchpoints, 0 changed\n", plain  # no mirror: as before
