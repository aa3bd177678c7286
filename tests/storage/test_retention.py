"""Retention: events older than privacy.retention_days go from every event table (counted in
the metric, shown first by --dry-run); erasures, the creator registry and cursors stay."""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bench.ports import free_port
from gateway.events import (
    BadEvent,
    Binding,
    Conversion,
    CreatorStanding,
    DailyCount,
    Erasure,
    Event,
    Receipt,
    Touchpoint,
    VerdictChange,
    iso,
)
from gateway.ids import Uuid7
from gateway.metrics import Metrics
from gateway.options import StorageOptions
from storage.local import LocalStore
from storage.retention import LOCAL_TABLES, PurgeFailed, purge_counted, purge_local, run_daily
from tests.conftest import ENV, make_settings

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]
new_id = Uuid7()


def events_at(days_ago: float, n: int) -> list[Event]:
    """One row of every table, ``days_ago`` before NOW (``n`` keeps keys unique)."""
    at = NOW - timedelta(days=days_ago)
    ts = iso(at)

    def i() -> str:
        return new_id(int(at.timestamp() * 1000))

    tid = i()
    return [
        Touchpoint(tid, ts, "n", f"v{n}", source="s"),
        Binding(i(), ts, "n", f"v{n}", f"u{n}", "login"),
        Conversion(i(), ts, "n", "buy", f"order:{n}", f"v{n}", None, 1.0, "EUR"),
        VerdictChange(i(), ts, "n", tid, "review", 40, [], "rescore"),
        Receipt(i(), ts, "n", "shop", "delivery", f"d{n}"),
        BadEvent(i(), ts, "n", "shop", "bad", "{}"),
        DailyCount(at.date().isoformat(), f"s{n}"),
        Erasure(i(), ts, "n", f"gone{n}"),
        CreatorStanding(i(), ts, "n", f"c{n}", True, "", "admin", ""),
    ]


async def fill(path: Path) -> None:
    store = LocalStore(path, StorageOptions(), Metrics())
    await store.open()
    await store.write(events_at(100, 1) + events_at(40, 2) + events_at(1, 3))
    await store.close()


def counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        tables = [*LOCAL_TABLES, "erasures", "creator_standings"]
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}


async def test_purge_dry_run_then_purge(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    await fill(path)
    before = NOW - timedelta(days=30)
    expected = dict.fromkeys(LOCAL_TABLES, 2)  # the rows of 100 and 40 days ago
    assert await purge_local(path, before, dry_run=True) == expected
    assert await asyncio.to_thread(counts, path) == {
        **dict.fromkeys(LOCAL_TABLES, 3),
        "erasures": 3,
        "creator_standings": 3,
    }
    assert await purge_local(path, before) == expected
    assert await asyncio.to_thread(counts, path) == {
        **dict.fromkeys(LOCAL_TABLES, 1),
        "erasures": 3,
        "creator_standings": 3,
    }
    assert await purge_local(path, before) == dict.fromkeys(LOCAL_TABLES, 0)


async def test_daily_purge_counts_in_the_metric(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "[privacy]\nretention_days = 60\n")
    await fill(settings.store_path)
    metrics = Metrics()
    done = await purge_counted(settings, metrics, NOW)
    assert done == {"local": dict.fromkeys(LOCAL_TABLES, 1)}
    assert metrics.registry.get_sample_value("gateway_purged_rows_total", {"table": "touchpoints"}) == 1
    assert metrics.registry.get_sample_value("gateway_purged_rows_total", {"table": "daily_counts"}) == 1


async def test_the_daily_purge_counts_what_it_deleted_before_a_store_failed(tmp_path: Path) -> None:
    """The local rows are deleted (committed) before the reporting mirror's purge fails: the
    metric counts them all the same, and the failure names the mirror."""
    mirror = tmp_path / "mirror.db"
    await asyncio.to_thread(mirror.write_bytes, b"plain text, not a SQLite database " * 10)
    settings = make_settings(
        tmp_path,
        f'[privacy]\nretention_days = 60\n[central]\nurl = "env:GW_CENTRAL"\nmirror_path = "{mirror}"\n',
        GW_CENTRAL="postgresql://gw@127.0.0.1:9/gw",
    )
    await fill(settings.store_path)
    metrics = Metrics()
    with pytest.raises(PurgeFailed) as failed:
        await purge_counted(settings, metrics, NOW)
    assert failed.value.store == f"the reporting mirror {mirror} (central.mirror_path)"
    assert metrics.registry.get_sample_value("gateway_purged_rows_total", {"table": "touchpoints"}) == 1


async def test_the_gateway_s_purge_tells_the_reports_when_it_deleted_rows(tmp_path: Path) -> None:
    """``run_daily``'s ``on_purged`` (the gateway's reports, computed anew after it): called after
    a purge that deleted rows, not after one that found nothing to delete."""
    settings = make_settings(tmp_path, "[privacy]\nretention_days = 60\n")
    await fill(settings.store_path)  # a row 100 days old at least
    for expected in ([1], []):  # then nothing is old enough any more
        told: list[int] = []
        metrics = Metrics()
        told_once = functools.partial(told.append, 1)
        task = asyncio.create_task(run_daily(settings, metrics, 3600.0, on_purged=told_once))
        sample = ("gateway_purged_rows_total", {"table": "touchpoints"})
        try:
            # Until the purge is counted (bounded), and so told: on_purged follows the count
            # with nothing awaited between them.
            for _ in range(3000):
                if metrics.registry.get_sample_value(*sample) is not None:
                    break
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert metrics.registry.get_sample_value(*sample) == len(expected)
        assert told == expected


async def test_retention_zero_keeps_everything(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    await fill(settings.store_path)
    assert await purge_counted(settings, Metrics(), NOW + timedelta(days=10_000)) == {}
    assert (await asyncio.to_thread(counts, settings.store_path))["touchpoints"] == 3


def gateway(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **ENV, **(env or {})},
        cwd=ROOT,
        timeout=60,
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "gw.db"
    asyncio.run(fill(path))
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[privacy]\nretention_days = 30\n[storage]\npath = "{path}"\nnode = "t"\n')
    return cfg


def purged_rows() -> int:
    """The fixture's touchpoints a purge by the real clock deletes: its rows are relative to NOW
    (a fixed date), so everything older than 30 days before today goes — the rows from NOW - 40
    and - 100 days and, once today is 29+ days past NOW, the newest too."""
    return 2 if datetime.now(UTC) < NOW + timedelta(days=29) else 3


def test_purge_command_dry_run_then_for_real(config: Path) -> None:
    path = config.parent / "gw.db"
    expected_rows = purged_rows()
    # And 1,500 bindings from 100 days before: counts are printed as `gateway import` prints them.
    with sqlite3.connect(path) as db:
        ts = iso(NOW - timedelta(days=100))
        db.executemany(
            "INSERT INTO identities (id, ts, node, visitor_key, user_key, rule, origin)"
            " VALUES (?, ?, 'n', ?, 'u', 'r', 'rule')",
            ((f"old-{n}", ts, f"w{n}") for n in range(1_500)),
        )
    dry = gateway("purge", "--dry-run", "-c", str(config))
    assert dry.returncode == 0, dry.stderr
    assert f"local touchpoints: would delete {expected_rows}" in dry.stdout
    assert f"local identities: would delete {1_500 + expected_rows:,}" in dry.stdout, dry.stdout
    assert "dry run" in dry.stdout
    assert counts(path)["touchpoints"] == 3
    done = gateway("purge", "-c", str(config))
    assert done.returncode == 0, done.stderr
    assert f"local touchpoints: deleted {expected_rows}" in done.stdout
    assert f"local identities: deleted {1_500 + expected_rows:,}" in done.stdout
    assert counts(path)["touchpoints"] == 3 - expected_rows
    assert counts(path)["erasures"] == 3


def test_a_purge_that_fails_names_the_store_and_what_it_deleted_before(config: Path) -> None:
    """``gateway: purge failed: file is not a database``, whichever of the local store, the
    reporting mirror or the central store it was, and nothing of the local rows it had deleted
    (committed) before the mirror's or the central store's purge failed. ``erase`` and
    ``reclassify`` name their store."""
    path = config.parent / "gw.db"
    mirror = config.parent / "mirror.db"
    mirror.write_bytes(b"plain text, not a SQLite database " * 10)
    cfg = config.parent / "mirrored.toml"
    cfg.write_text(config.read_text() + f'[central]\nurl = "env:GW_CENTRAL"\nmirror_path = "{mirror}"\n')
    failed = gateway("purge", "-c", str(cfg), env={"GW_CENTRAL": "postgresql://gw@127.0.0.1:9/gw"})
    assert failed.returncode == 1, failed
    assert (
        f"gateway: purge failed on the reporting mirror {mirror} (central.mirror_path): file is not"
        " a database (not a SQLite file: point central.mirror_path at the store the gateway writes);"
        " the rows listed above (local) are deleted all the same"
    ) in failed.stderr, failed.stderr
    assert f"local touchpoints: deleted {purged_rows()}" in failed.stdout, failed.stdout
    assert counts(path)["touchpoints"] == 3 - purged_rows()  # as it says
    # The local store itself: named as such, and nothing deleted.
    path.write_bytes(mirror.read_bytes())
    local = gateway("purge", "--dry-run", "-c", str(config))
    assert local.returncode == 1 and local.stdout == "", local
    said = (
        f"purge failed on the store {path} (storage.path): file is not a database (not a SQLite"
        " file: point storage.path at the store the gateway writes); a dry run"
    )
    assert said in local.stderr, local.stderr


async def test_purged_rows_are_gone_from_the_write_ahead_log(tmp_path: Path) -> None:
    """As an erasure: with the gateway's own connection open (so no close checkpoints the log),
    the purged rows' old pages must not stay readable in the ``-wal`` file after a purge
    (``gateway purge`` after lowering ``retention_days``, or a signed event dated before the
    cutoff, accepted and kept until the next purge)."""
    path = tmp_path / "gw.db"
    store = LocalStore(path, StorageOptions(), Metrics())
    await store.open()
    try:
        at = NOW - timedelta(days=40)
        order = "purged-order-77"
        cid = new_id(int(at.timestamp() * 1000))
        old = Conversion(cid, iso(at), "n", "buy", f"order:{order}", "v1", None, 1.0, "EUR", order)
        await store.write([old, *events_at(1, 3)])
        wal = path.with_name(path.name + "-wal")
        assert b"purged-order-77" in await asyncio.to_thread(wal.read_bytes)  # the search finds it
        assert (await purge_local(path, NOW - timedelta(days=30)))["conversions"] == 1
        after = await asyncio.to_thread(lambda: path.read_bytes() + wal.read_bytes())
        assert b"purged-order-77" not in after
    finally:
        await store.close()


async def test_a_purge_with_the_central_store_unreachable_says_it_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The daily purge with ``[central]`` away logged ``retention: purge failed on the central
    store`` at ERROR with asyncpg's traceback, every run while it stayed away. Now one line, as
    the local store's full disk: the host and port of ``central.url`` (never its password),
    what the network said, and that the purge is tried again at the next run."""
    port = free_port()  # nothing listens on it
    settings = make_settings(
        tmp_path,
        '[privacy]\nretention_days = 60\n[central]\nurl = "env:GW_CENTRAL"\n',
        GW_CENTRAL=f"postgresql://gw:s3cret-pw@127.0.0.1:{port}/gw",
    )
    await fill(settings.store_path)
    metrics = Metrics()
    with caplog.at_level(logging.INFO, logger="gateway.retention"):
        task = asyncio.create_task(run_daily(settings, metrics, 3600.0))
        try:
            for _ in range(3000):  # until the purge has failed (bounded)
                if any(r.levelno >= logging.WARNING for r in caplog.records):
                    break
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    failed = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.levelname, r.exc_info) for r in failed] == [("WARNING", None)], failed
    said = failed[0].getMessage()
    assert said.startswith("retention: purge failed on the central store (central.url): "), said
    assert f"nothing listens on 127.0.0.1:{port}" in said and said.endswith("tried again at the next run"), (
        said
    )
    assert "s3cret-pw" not in said and "\n" not in said, said
    # The local rows went all the same (committed before the central purge), counted.
    assert metrics.registry.get_sample_value("gateway_purged_rows_total", {"table": "touchpoints"}) == 1


def test_the_purge_command_with_the_central_store_unreachable_says_it_as_the_sync_does(config: Path) -> None:
    """``gateway purge`` with ``[central]`` away printed ``ConnectionRefusedError: [Errno 111]
    Connect call failed ('127.0.0.1', 9)``; it now says it in the sync's words, naming the
    host and port of ``central.url`` (never its password), after the local rows it deleted."""
    port = free_port()  # nothing listens on it
    cfg = config.parent / "central.toml"
    cfg.write_text(config.read_text() + '[central]\nurl = "env:GW_CENTRAL"\n')
    failed = gateway(
        "purge", "-c", str(cfg), env={"GW_CENTRAL": f"postgresql://gw:s3cret-pw@127.0.0.1:{port}/gw"}
    )
    assert failed.returncode == 1, failed
    assert (
        f"gateway: purge failed on the central store (central.url): connection refused: nothing listens on"
        f" 127.0.0.1:{port}"
    ) in failed.stderr, failed.stderr
    assert "the rows listed above (local) are deleted all the same" in failed.stderr, failed.stderr
    assert "Error:" not in failed.stderr and "s3cret-pw" not in failed.stderr, failed.stderr
    assert f"local touchpoints: deleted {purged_rows()}" in failed.stdout, failed.stdout
