"""gateway import --list and --undo RUN: each run recorded with the rows it added, and undone
exactly (its touchpoints, bindings, conversions and the verdicts on its touchpoints; nothing
live, nothing of another run), refused once its rows are in the central store. Real logs,
real SQLite files, the real PostgreSQL fixture."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

import gateway.importwrite
from gateway.history import CHUNK
from gateway.importrun import run_import
from gateway.metrics import Metrics
from gateway.options import CentralOptions
from storage.imports import UndoRefused, list_runs, undo_run
from storage.sync import Sync
from tests.conftest import ENV, make_settings

UA = "Mozilla/5.0 (X11; Linux x86_64) Firefox/127.0"


def line(n: int, query: str, day: str = "01/Mar/2025") -> str:
    return f'203.0.113.{n} - - [{day}:10:00:{n:02d} +0000] "GET /p?{query} HTTP/1.1" 200 10 "-" "{UA}"'


GOOD = "\n".join(line(n, f"utm_source=news&utm_campaign=c{n}") for n in range(1, 4)) + "\n"
WRONG = "\n".join(line(n, f"utm_source=wrong&utm_campaign=w{n}", "02/Mar/2025") for n in range(1, 3)) + "\n"
# A success page a conversion rule turns into a conversion.
RULES = """
[[conversions]]
name = "order"
method = "GET"
path = "/thanks"
status = [200]
order_id = { query = "order" }
"""
SIGN_IN = """
[[identity.rules]]
name = "welcome"
method = "GET"
path = "/welcome"
status = [200]
user_id = { query = "uid" }
"""
"""A sign-in page: ``/welcome?uid=…`` binds the visitor to that user."""


def rows(path: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        return db.execute(sql, args).fetchall()


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "import", *args], cwd=tmp_path, env={**os.environ, **ENV},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.timeout(180)  # a dozen import commands: 55 s on a loaded machine, near the 60 s default
def test_a_wrong_import_is_listed_and_undone_exactly_and_can_be_imported_again(tmp_path: Path) -> None:
    """Event IDs come from the line, so a file imported wrongly stayed for good: importing it
    again added nothing. Each run is now recorded, listed, and its rows removed by --undo."""
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n' + RULES)
    (tmp_path / "good.log").write_text(GOOD)
    thanks = (
        f'198.51.100.9 - - [02/Mar/2025:11:00:00 +0000] "GET /thanks?order=A17 HTTP/1.1" 200 5 "-" "{UA}"'
    )
    (tmp_path / "wrong.log").write_text(WRONG + thanks + "\n")
    args = ("--format", "combined", "-c", "gw.toml", "--host", "shop.example", "--no-progress")
    first = _cli(tmp_path, "good.log", *args)
    assert first.returncode == 0 and "run: 1 (gateway import --undo 1 removes" in first.stdout, first
    wrong = _cli(tmp_path, "wrong.log", "good.log", *args)  # good.log's lines are run 1's: not run 2's
    assert wrong.returncode == 0 and "run: 2 " in wrong.stdout, wrong
    db = tmp_path / "gw.db"
    good_ids = rows(db, "SELECT id FROM touchpoints WHERE source = 'news' ORDER BY id")
    wrong_ids = [row[0] for row in rows(db, "SELECT id FROM touchpoints WHERE source = 'wrong'")]
    assert (
        len(good_ids) == 3 and len(wrong_ids) == 2 and rows(db, "SELECT count(*) FROM conversions") == [(1,)]
    )
    # A live row written meanwhile, and an analyst's verdict on one touchpoint of each run.
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute(
            "INSERT INTO touchpoints (id, ts, node, visitor_key, landing_path, source)"
            " VALUES ('01990000-0000-7000-8000-000000000001', '2025-03-02T12:00:00Z', 'live', 'v', '/',"
            " 'live')"
        )
        for n, touchpoint in enumerate((good_ids[0][0], wrong_ids[0])):
            conn.execute(
                "INSERT INTO verdict_changes (id, ts, node, touchpoint_id, verdict, origin, analyst)"
                " VALUES (?, '2025-03-03T00:00:00Z', 'n', ?, 'block', 'analyst', 'ana')",
                (f"0199000{n}-0000-7000-8000-000000000001", touchpoint),
            )
    listed = _cli(tmp_path, "--list", "-c", "gw.toml")
    assert listed.returncode == 0, listed
    run1, run2 = listed.stdout.splitlines()
    assert (
        run1.startswith("run 1  ") and "--format combined  touchpoints 3, bindings 0, conversions 0" in run1
    )
    assert run1.endswith("finished  files: good.log"), run1
    assert "touchpoints 2, bindings 0, conversions 1  finished  files: wrong.log, good.log" in run2, run2
    # A dry run counts, per table, and removes nothing.
    dry = _cli(tmp_path, "--undo", "2", "--dry-run", "-c", "gw.toml")
    assert dry.returncode == 0, dry
    assert "run 2: would remove (a dry run: nothing was removed)" in dry.stdout
    for label, count in (("touchpoints", 2), ("bindings", 0), ("conversions", 1), ("verdict changes", 1)):
        assert f"  {label + ':':17}{count:>10,}\n" in dry.stdout, dry.stdout
    assert rows(db, "SELECT count(*) FROM touchpoints") == [(6,)]
    undone = _cli(tmp_path, "--undo", "2", "-c", "gw.toml")
    assert undone.returncode == 0 and "run 2: removed" in undone.stdout, undone
    # Exactly run 2's rows went: run 1's, the live one and the other verdict stay.
    assert rows(db, "SELECT source FROM touchpoints ORDER BY source") == [("live",)] + [("news",)] * 3
    assert rows(db, "SELECT count(*) FROM conversions") == [(0,)]
    assert rows(db, "SELECT touchpoint_id FROM verdict_changes") == [(good_ids[0][0],)]
    assert rows(db, "SELECT count(*) FROM visitors WHERE visitor_key != 'v'") == [(3,)]  # first/last touch
    again = _cli(tmp_path, "--undo", "2", "-c", "gw.toml")
    assert again.returncode == 0 and "run 2 was undone at " in again.stdout, again
    assert "undone 20" in _cli(tmp_path, "--list", "-c", "gw.toml").stdout.splitlines()[1]
    # Its file can be imported again (fixed: here the same), as a new run.
    redo = _cli(tmp_path, "wrong.log", *args)
    assert redo.returncode == 0 and "run: 3 " in redo.stdout and "new in the store: 2" in redo.stdout, redo
    unknown = _cli(tmp_path, "--undo", "9", "-c", "gw.toml")
    assert unknown.returncode == 2 and "records no import run 9" in unknown.stderr, unknown
    assert _cli(tmp_path, "--undo", "x", "-c", "gw.toml").returncode == 2
    assert _cli(tmp_path, "--list", "good.log", "-c", "gw.toml").returncode == 2
    nothing = _cli(tmp_path, "-c", "gw.toml")
    assert nothing.returncode == 2 and "FILE… and --format are needed" in nothing.stderr, nothing


def test_a_store_that_records_no_run_says_so(tmp_path: Path) -> None:
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    # No store there at all (a typo'd storage.path): said as every command reading it says it;
    # until 2026-12-06 "no import run recorded in the store …", exit 0.
    for args in (("--list",), ("--undo", "1")):
        done = _cli(tmp_path, *args, "-c", "gw.toml")
        assert done.returncode == 1 and f"no store at {tmp_path / 'gw.db'} (storage.path)" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gw.toml"]  # no store made by asking
    from storage.local import LocalStore

    async def made() -> None:
        store = LocalStore(tmp_path / "gw.db", make_settings(tmp_path).options.storage, Metrics())
        await store.open()
        await store.close()

    asyncio.run(made())
    listed = _cli(tmp_path, "--list", "-c", "gw.toml")
    assert listed.returncode == 0 and "no import run recorded" in listed.stdout, listed
    assert "were not recorded, and cannot be undone" in listed.stdout
    undo = _cli(tmp_path, "--undo", "1", "-c", "gw.toml")
    assert undo.returncode == 2 and "records no import run 1" in undo.stderr, undo


async def test_a_run_already_in_the_central_store_is_not_undone(tmp_path: Path, central_dsn: str) -> None:
    """An undone row the central sync delivered would stay in the central store (and every
    mirror fed from it): the undo refuses, naming how many, and removes nothing; a run imported
    after the round can still be undone."""
    settings = make_settings(tmp_path)
    log = tmp_path / "good.log"
    await asyncio.to_thread(log.write_text, GOOD)
    first = await run_import(settings, [log], "combined", host="shop.example")
    assert first.run == 1
    sync = Sync(settings.store_path, central_dsn, CentralOptions(), Metrics())
    await sync.once()
    conn = await asyncpg.connect(central_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM touchpoints") == 3
    finally:
        await conn.close()
    dry = await undo_run(settings.store_path, 1, dry_run=True)
    assert dry.central == {"touchpoints": 3} and dry.rows["touchpoints"] == 3
    try:
        await undo_run(settings.store_path, 1)
    except UndoRefused as err:
        assert "run 1: 3 touchpoints of its rows are already in the central store" in str(err)
    else:
        raise AssertionError("undone though its rows are in the central store")
    later = tmp_path / "wrong.log"
    await asyncio.to_thread(later.write_text, WRONG)
    second = await run_import(settings, [later], "combined", host="shop.example")
    # A sink that delivered them keeps them: the undo goes on and says how many.
    sent = "INSERT OR REPLACE INTO sync_cursors (name, position) VALUES ('sink:segment:touchpoints', 1000)"
    await asyncio.to_thread(rows, settings.store_path, sent)
    undo = await undo_run(settings.store_path, second.run)
    assert undo.rows["touchpoints"] == 2 and not undo.central and undo.sinks == {"sink:segment": 2}
    got = await asyncio.to_thread(rows, settings.store_path, "SELECT count(*) FROM touchpoints")
    assert got == [(3,)]


def _identify(message: str, visitor: str, user: str) -> str:
    return json.dumps(
        {"type": "identify", "messageId": message, "anonymousId": visitor, "userId": user,
         "timestamp": "2025-03-01T10:00:00Z"}
    )  # fmt: skip


def test_an_imported_binding_the_store_has_already_is_not_added_counted_or_undone(tmp_path: Path) -> None:
    """The store keeps one binding per visitor and user: a Segment ``identify`` of a pair already
    bound (by an earlier import, or live) adds no row, so the run does not count it, and undoing
    that run leaves the binding that was there before."""
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    (tmp_path / "one.jsonl").write_text(_identify("m1", "anon-1", "ada") + "\n")
    page = {
        "type": "page", "messageId": "m4", "anonymousId": "anon-1", "timestamp": "2025-03-01T10:00:01Z",
        "context": {"campaign": {"source": "news"}}, "properties": {"path": "/"},
    }  # fmt: skip
    two = [_identify("m2", "anon-1", "ada"), _identify("m3", "anon-1", "bob"), json.dumps(page)]
    (tmp_path / "two.jsonl").write_text("\n".join(two) + "\n")
    args = ("--format", "segment", "-c", "gw.toml", "--no-progress")
    assert _cli(tmp_path, "one.jsonl", *args).returncode == 0
    second = _cli(tmp_path, "two.jsonl", *args)
    assert second.returncode == 0 and "run: 2 " in second.stdout, second
    db = tmp_path / "gw.db"
    assert rows(db, "SELECT count(*), count(DISTINCT user_key) FROM identities") == [(2, 2)]
    listed = _cli(tmp_path, "--list", "-c", "gw.toml").stdout.splitlines()
    assert "touchpoints 0, bindings 1, conversions 0" in listed[0], listed
    assert "touchpoints 1, bindings 1, conversions 0" in listed[1], listed
    assert _cli(tmp_path, "--undo", "2", "-c", "gw.toml").returncode == 0
    assert rows(db, "SELECT count(*) FROM identities") == [(1,)]
    assert rows(db, "SELECT count(*) FROM touchpoints") == [(0,)]


def _page(message: str, visitor: str, ts: str) -> str:
    return json.dumps(
        {"type": "page", "messageId": message, "anonymousId": visitor, "timestamp": ts,
         "context": {"campaign": {"source": "news"}}, "properties": {"path": "/"}}
    )  # fmt: skip


def _recorded_rows(db: Path) -> tuple[set[str], set[str]]:
    """The ids ``import_rows`` records, and the ids of the rows the store still holds."""
    recorded = {row[0] for row in rows(db, "SELECT id FROM import_rows")}
    held = {
        row[0]
        for table in ("touchpoints", "identities", "conversions")
        for row in rows(db, f"SELECT id FROM {table}")
    }
    return recorded, held


def test_erasure_and_retention_leave_no_import_record_of_the_rows_they_remove(tmp_path: Path) -> None:
    """``import_rows`` holds event ids only, but they tie an erased visitor's rows to a run (and
    to whatever else still knows those ids: a backup, a sink's destination): an erasure of a
    user, of a visitor, and a retention purge each remove the records of the rows they delete,
    and only those."""
    recent = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    old = "2025-03-01T10:00:02Z"
    lines = [
        _identify("m1", "anon-1", "ada"),  # ada's device, and its landing
        _page("m2", "anon-1", "2025-03-01T10:00:01Z"),
        _page("m3", "anon-2", recent),  # kept throughout
        _page("m4", "anon-3", old),  # purged by retention
        _page("m5", "anon-4", recent),  # erased as a visitor
    ]
    # Imported before retention is set: an import stores no row older than it keeps.
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    db = tmp_path / "gw.db"
    imported = _cli(tmp_path, "in.jsonl", "--format", "segment", "-c", "gw.toml", "--no-progress")
    assert imported.returncode == 0 and "run: 1 " in imported.stdout, imported
    recorded, held = _recorded_rows(db)
    assert len(recorded) == 5 and recorded == held

    def gateway(*args: str, config: str = "gw.toml") -> None:
        done = subprocess.run(
            [sys.executable, "-m", "gateway", *args, "-c", config], cwd=tmp_path,
            env={**os.environ, **ENV}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done

    gateway("erase", "ada")
    recorded, held = _recorded_rows(db)
    assert len(held) == 3 and recorded == held
    gateway("erase", "--visitor", "anon-4")
    recorded, held = _recorded_rows(db)
    assert len(held) == 2 and recorded == held
    (tmp_path / "keep.toml").write_text('[storage]\npath = "gw.db"\n[privacy]\nretention_days = 30\n')
    gateway("purge", config="keep.toml")
    recorded, held = _recorded_rows(db)
    assert len(held) == 1 and recorded == held


# --- A busy store: another process holding its write lock ------------------------------------

LOCK_HINT = (
    "database is locked (another process held the store's write lock past the 5 s busy timeout:"
    " the live gateway in a long write, or a sqlite3 shell left in a transaction); run the"
    " command again once it is released"
)


def _landings(count: int) -> str:
    return "".join(
        f"198.51.{i // 250}.{i % 250 + 1} - - [01/Mar/2025:10:{i // 1000 % 60:02}:00 +0000]"
        f' "GET /?utm_source=s{i} HTTP/1.1" 200 5 "-" "{UA}"\n'
        for i in range(count)
    )


def _feed_then_lock(fifo: Path, db: Path, count: int) -> sqlite3.Connection:
    """Write ``count`` landings (whole batches, ``BATCH``, and whole chunks, ``CHUNK``: committed
    while the import waits for more) into the pipe the import reads, wait until the store has
    them, take the store's write lock as a sqlite3 shell's BEGIN IMMEDIATE does, then end the
    pipe: the import's next write is the one that records its run's end, and it meets the lock.
    Blocking."""
    with fifo.open("w") as pipe:
        pipe.write(_landings(count))
        pipe.flush()
        for _ in range(6000):  # at most ~60 s (bounded; the commit takes well under a second)
            with contextlib.suppress(sqlite3.Error):
                if rows(db, "SELECT count(*) FROM touchpoints") == [(count,)]:
                    break
            time.sleep(0.01)
        else:
            raise AssertionError("the import's first batch never committed")
        shell = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        shell.execute("BEGIN IMMEDIATE")
    return shell


def test_an_import_waits_for_the_lock_to_record_its_run_s_end(tmp_path: Path) -> None:
    """A write lock taken after an import's last commit (a sqlite3 shell, the live gateway's long
    write) made the import give up recording its run's end after the 5 s busy timeout, warn, and
    exit 0, the run listed as not finished for good. It waits for that write as for its commits."""
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    fifo = tmp_path / "access.pipe"
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "import", str(fifo), "--format", "combined", "-c", "gw.toml",
         "--host", "shop.example", "--no-progress"],
        cwd=tmp_path, env={**os.environ, **ENV}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        shell = _feed_then_lock(fifo, tmp_path / "gw.db", 8192)
        try:
            assert proc.stderr is not None
            said = ""
            while "waiting for the write lock" not in said:  # then it waits, and says so first
                line = proc.stderr.readline()
                assert line, f"the import ended without waiting: {said}{proc.communicate(timeout=30)}"
                said += line
            assert "to record the end of import run 1" in said, said
        finally:
            shell.rollback()
            shell.close()
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, (out, said + err)
    assert "could not be recorded" not in said + err and "run: 1 (gateway import --undo 1" in out, out
    listed = _cli(tmp_path, "--list", "-c", "gw.toml")
    assert "touchpoints 8,192, bindings 0, conversions 0  finished  files:" in listed.stdout, listed


async def test_an_import_that_cannot_record_its_end_says_so_and_what_it_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Still locked when its wait is over, the end of the run is not recorded: the import says so
    (named, with who may hold the lock) in the summary rather than only in a warning."""
    # The 1 s lock wait is every commit's deadline too: a whole batch of 8,192 lines took longer
    # to commit on a loaded machine (no lock held yet), and the import ended "not committed
    # within 1 s" before its end. Batches of 256 lines commit in a fraction of that; the lines
    # are one chunk of the reader's, which reads on only once it has a whole chunk (or the end).
    monkeypatch.setattr(gateway.importwrite, "BATCH", 256)
    settings = make_settings(tmp_path)
    fifo = tmp_path / "access.pipe"
    await asyncio.to_thread(os.mkfifo, fifo)
    feeding = asyncio.create_task(asyncio.to_thread(_feed_then_lock, fifo, settings.store_path, CHUNK))
    summary = await run_import(settings, [fifo], "combined", host="shop.example", lock_wait=1)
    shell = await feeding
    await asyncio.to_thread(shell.close)
    assert summary.run == 1 and summary.new_rows is not None and summary.new_rows["touchpoints"] == CHUNK
    assert summary.unfinished == (
        "another process held its write lock for 1 s (the live gateway in a long write, or a sqlite3"
        " shell left in a transaction)"
    ), summary.unfinished
    finished = await asyncio.to_thread(rows, settings.store_path, "SELECT finished FROM import_runs")
    assert finished == [(None,)]


def test_the_command_exits_1_naming_the_run_it_could_not_finish_and_what_to_do(tmp_path: Path) -> None:
    """The run's end not recorded (here the store refuses that write) printed a warning and exit
    0: a script took the import as done and clean. It exits 1, says everything read is in the
    store, which run holds it, how --list shows it, and that --undo and a re-import work as ever."""
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    (tmp_path / "good.log").write_text(GOOD)
    (tmp_path / "more.log").write_text(WRONG)
    args = ("--format", "combined", "-c", "gw.toml", "--host", "shop.example", "--no-progress")
    assert _cli(tmp_path, "good.log", *args).returncode == 0
    with contextlib.closing(sqlite3.connect(tmp_path / "gw.db")) as db:
        db.execute(
            "CREATE TRIGGER refuse BEFORE UPDATE OF finished ON import_runs"
            " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    done = _cli(tmp_path, "more.log", *args)
    assert done.returncode == 1, done
    assert "run: 2 (gateway import --undo 2 removes the rows it added)" in done.stdout, done
    assert done.stderr.endswith(
        "gateway import: every line read is in the store, as run 2, but the store"
        f" {tmp_path / 'gw.db'} did not record the run's end: database or disk is full; gateway"
        " import --list shows run 2 as not finished, with the rows it added, and --undo 2 removes"
        " them as any run's (importing the same files again adds nothing)\n"
    ), done.stderr
    assert "Traceback" not in done.stderr and "WARNING gateway.import" not in done.stderr
    listed = _cli(tmp_path, "--list", "-c", "gw.toml")
    assert "touchpoints 2, bindings 0, conversions 0  not finished" in listed.stdout, listed


def test_an_import_that_adds_nothing_waits_for_no_write_lock(tmp_path: Path) -> None:
    """An import that added no row (every line an asset) waited the busy timeout behind another
    process's lock to stamp a run that did not exist, and warned that "the import run's end could
    not be recorded". Such an import is recorded as a run of no row now (one try: there is
    nothing to undo), and behind a lock it is not: the summary says so, it exits 0, and it waits
    no longer than one busy timeout, warning nothing."""
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    (tmp_path / "good.log").write_text(GOOD)
    asset = f'1.2.3.4 - - [01/Mar/2025:09:00:00 +0000] "GET /a.css HTTP/1.1" 200 5 "-" "{UA}"\n'
    (tmp_path / "assets.log").write_text(asset)
    args = ("--format", "combined", "-c", "gw.toml", "--host", "shop.example", "--no-progress")
    assert _cli(tmp_path, "good.log", *args).returncode == 0
    shell = sqlite3.connect(tmp_path / "gw.db", isolation_level=None)
    try:
        shell.execute("BEGIN IMMEDIATE")
        done = _cli(tmp_path, "assets.log", *args)
    finally:
        shell.close()
    assert done.returncode == 0 and "new in the store: 0" in done.stdout, done
    assert "could not be recorded" not in done.stderr and "locked" not in done.stderr, done.stderr
    assert (
        f"  run: none recorded (it added no row, and the store {tmp_path / 'gw.db'} could not record"
        " it: another process held its write lock (the live gateway in a long write, or a sqlite3"
        " shell left in a transaction))"
    ) in done.stdout, done.stdout
    assert [r.id for r in list_runs(tmp_path / "gw.db") or []] == [1]
    # Without the lock, the same import is a run of no row.
    again = _cli(tmp_path, "assets.log", *args)
    assert again.returncode == 0 and "  run: 2 (it added no touchpoint" in again.stdout, again


@pytest.mark.timeout(180)  # import commands: 39 s on a loaded machine
def test_undo_and_list_behind_another_process_s_lock_say_who_may_hold_it(tmp_path: Path) -> None:
    """--undo behind another process's write lock said only SQLite's "database is locked", and
    --list waited 30 s for a lock where every other command waits 5: both say it as erase and
    purge do, naming the store."""
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    (tmp_path / "good.log").write_text(GOOD)
    args = ("--format", "combined", "-c", "gw.toml", "--host", "shop.example", "--no-progress")
    assert _cli(tmp_path, "good.log", *args).returncode == 0
    db = tmp_path / "gw.db"
    shell = sqlite3.connect(db, isolation_level=None)
    try:
        shell.execute("BEGIN IMMEDIATE")
        undo = _cli(tmp_path, "--undo", "1", "-c", "gw.toml")
    finally:
        shell.close()
    assert undo.returncode == 1, undo
    assert undo.stderr == f"gateway import: --undo 1 failed on the store {db}: {LOCK_HINT}\n", undo.stderr
    assert rows(db, "SELECT count(*) FROM touchpoints") == [(3,)]
    # A shell in exclusive locking mode keeps readers out too.
    shell = sqlite3.connect(db, isolation_level=None)
    try:
        shell.execute("PRAGMA locking_mode = EXCLUSIVE")
        shell.execute("BEGIN EXCLUSIVE")
        shell.execute("UPDATE import_runs SET format = format")
        listed = _cli(tmp_path, "--list", "-c", "gw.toml")
    finally:
        shell.close()
    assert listed.returncode == 1, listed
    assert listed.stderr == f"gateway import: --list failed on the store {db}: {LOCK_HINT}\n", listed.stderr


def test_runs_of_a_store_whose_name_holds_a_uri_character_are_listed(tmp_path: Path) -> None:
    """`--list` opened its store as an unquoted `file:` URI: `gw#1.db` was read as the file
    `gw` (a `#` starts a fragment) and its runs were not found."""
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw#1.db"\n')
    (tmp_path / "good.log").write_text(GOOD)
    args = ("--format", "combined", "-c", "gw.toml", "--host", "shop.example", "--no-progress")
    assert _cli(tmp_path, "good.log", *args).returncode == 0
    listed = _cli(tmp_path, "--list", "-c", "gw.toml")
    assert listed.returncode == 0 and listed.stdout.startswith("run 1  "), listed
    assert not (tmp_path / "gw").exists()


def _wait_for_touchpoints(db: Path, count: int) -> None:
    """Until the store holds ``count`` touchpoints (an import's first batch committed while it
    waits for more): at most ~60 s, bounded; the commit takes well under a second."""
    for _ in range(6000):
        with contextlib.suppress(sqlite3.Error):
            if rows(db, "SELECT count(*) FROM touchpoints") == [(count,)]:
                return
        time.sleep(0.01)
    raise AssertionError("the import's first batch never committed")


def test_an_import_undone_while_it_runs_stops_and_leaves_nothing_of_its_run(tmp_path: Path) -> None:
    """``--undo`` of a run still importing removed what it had committed and marked it undone,
    but the import went on writing under that run: its summary offered ``--undo 1``, which then
    said "nothing is left to remove", and the rows it wrote after the undo could never be undone.
    The import now stops at its next commit, says why, and writes nothing more."""
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    fifo = tmp_path / "access.pipe"
    os.mkfifo(fifo)
    db = tmp_path / "gw.db"
    landings = _landings(16384).splitlines(keepends=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "import", str(fifo), "--format", "combined", "-c", "gw.toml",
         "--host", "shop.example", "--no-progress"],
        cwd=tmp_path, env={**os.environ, **ENV}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        with fifo.open("w") as pipe:
            pipe.write("".join(landings[:8192]))  # one whole batch: committed while it waits for more
            pipe.flush()
            _wait_for_touchpoints(db, 8192)
            undo = _cli(tmp_path, "--undo", "1", "-c", "gw.toml")
            assert undo.returncode == 0 and "touchpoints:          8,192" in undo.stdout, undo
            pipe.write("".join(landings[8192:]))
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 1, (out, err)
    assert "run 1 was undone while it ran (gateway import --undo 1)" in err, err
    assert "--undo 1 removes the rows" not in out, out
    assert rows(db, "SELECT count(*) FROM touchpoints") == [(0,)]
    assert rows(db, "SELECT count(*) FROM import_rows") == [(0,)]
    listed = _cli(tmp_path, "--list", "-c", "gw.toml")
    assert "run 1 " in listed.stdout and " undone 20" in listed.stdout, listed


@pytest.mark.timeout(180)  # import commands: 33 s on a loaded machine
def test_the_summary_counts_as_new_only_the_rows_its_own_run_added(tmp_path: Path) -> None:
    """ "New in the store" was the store's rows after less before: another import (or the live
    gateway) writing meanwhile was counted as this import's, so the summary disagreed with its
    own run's count in --list and with what --undo removes. It is now the run's own rows."""
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    (tmp_path / "other.log").write_text(WRONG)  # 2 landings another import adds meanwhile
    fifo = tmp_path / "access.pipe"
    os.mkfifo(fifo)
    db = tmp_path / "gw.db"
    landings = _landings(16384).splitlines(keepends=True)
    args = ("--format", "combined", "-c", "gw.toml", "--host", "shop.example", "--no-progress")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "import", str(fifo), *args],
        cwd=tmp_path, env={**os.environ, **ENV}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        with fifo.open("w") as pipe:
            pipe.write("".join(landings[:8192]))  # one whole batch: committed while it waits for more
            pipe.flush()
            _wait_for_touchpoints(db, 8192)
            other = _cli(tmp_path, "other.log", *args)
            assert other.returncode == 0 and "new in the store: 2\n" in other.stdout, other
            pipe.write("".join(landings[8192:]))
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, (out, err)
    assert "touchpoints:     16,384   new in the store: 16,384\n" in out, out
    listed = _cli(tmp_path, "--list", "-c", "gw.toml")
    assert "run 1 " in listed.stdout and "touchpoints 16,384, bindings 0" in listed.stdout, listed
    assert rows(db, "SELECT count(*) FROM touchpoints") == [(16386,)]


IMPORT_ARGS = ("--format", "combined", "-c", "gw.toml", "--host", "shop.example", "--no-progress")


def _stopped_after_one_batch(tmp_path: Path, fifo: Path) -> str:
    """``gateway import`` of the pipe ``fifo`` (made here), fed one whole batch of landings
    (committed while it waits for more), then Ctrl-C while the pipe is still open: more was to
    come. Its exit 130 checked; its stderr."""
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "import", str(fifo), *IMPORT_ARGS],
        cwd=tmp_path, env={**os.environ, **ENV}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        with fifo.open("w") as pipe:
            pipe.write(_landings(8192))
            pipe.flush()
            _wait_for_touchpoints(tmp_path / "gw.db", 8192)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, (out, err)
    return err


def test_an_import_stopped_by_ctrl_c_is_listed_as_stopped_with_how_to_resume_or_undo_it(
    tmp_path: Path,
) -> None:
    """Ctrl-C part way through an import recorded the run's end as any run's: ``--list`` said
    "finished", and nothing told the operator the files were not all in. It is listed as stopped
    by SIGINT part way, with how to import the rest or undo what it added."""
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    err = _stopped_after_one_batch(tmp_path, tmp_path / "access.pipe")
    assert "stopped by SIGINT: everything up to access.pipe line 8,192 is in the store" in err, err
    listed = _cli(tmp_path, "--list", "-c", "gw.toml")
    assert listed.returncode == 0, listed
    assert "touchpoints 8,192, bindings 0, conversions 0  stopped by SIGINT part way" in listed.stdout, listed
    assert "  finished  " not in listed.stdout, listed
    assert (
        "the same command again imports the rest, gateway import --undo 1 removes what it added"
        in listed.stdout
    ), listed


def test_a_stopped_run_whose_rest_a_later_run_imported_is_listed_so(tmp_path: Path) -> None:
    """A run stopped by Ctrl-C, then the same command again, read to the end: ``--list`` kept
    saying of the stopped run that "the same command again imports the rest", which was done
    already. It now names the run that imported the rest; a run of other files does not count,
    nor one undone since (the rest is then to import again, and the listing says so again)."""
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    (tmp_path / "other.log").write_text(WRONG)
    fifo, args = tmp_path / "access.log", IMPORT_ARGS
    _stopped_after_one_batch(tmp_path, fifo)
    resume = "stopped by SIGINT part way (the same command again imports the rest, gateway import --undo 1"
    other = _cli(tmp_path, "other.log", *args)  # run 2: other files, no rest of run 1
    assert other.returncode == 0 and "run: 2 " in other.stdout, other
    assert resume in _cli(tmp_path, "--list", "-c", "gw.toml").stdout
    # The same file again, whole this time (a file now, read to its end): run 3 imports the rest.
    fifo.unlink()
    fifo.write_text(_landings(8200))
    rest = _cli(tmp_path, str(fifo), *args)
    assert rest.returncode == 0 and "run: 3 " in rest.stdout, rest
    listed = _cli(tmp_path, "--list", "-c", "gw.toml").stdout
    [first] = [entry for entry in listed.splitlines() if entry.startswith("run 1 ")]
    assert "touchpoints 8,192, bindings 0, conversions 0  stopped by SIGINT part way" in first, listed
    assert "the same command again imports the rest" not in first, listed
    assert (
        "stopped by SIGINT part way; its rest was imported by run 3 (the same files read to their end;"
        " gateway import --undo 1 removes what this run added, --undo 3 what run 3 added)"
    ) in first, listed
    # Run 3 undone: its rest is gone again, and the same command imports it again.
    assert _cli(tmp_path, "--undo", "3", "-c", "gw.toml").returncode == 0
    assert resume in _cli(tmp_path, "--list", "-c", "gw.toml").stdout


def test_an_import_that_adds_nothing_is_a_run_too_and_finishes_a_stopped_one(tmp_path: Path) -> None:
    """A run stopped by Ctrl-C after its last line was in the store (a log of one batch, read
    from a pipe still open), then the same file imported whole: that run added no row, so it
    recorded no run, and ``--list`` kept saying of the stopped run that "the same command again
    imports the rest" — the same command again and again, adding nothing each time. A run that
    adds nothing is recorded too (finished, 0 rows): it is listed, the stopped run is listed as
    finished by it, and undoing it (which removes nothing) lists the stopped run as to be
    finished again."""
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    fifo, args = tmp_path / "access.log", IMPORT_ARGS
    _stopped_after_one_batch(tmp_path, fifo)  # the whole log, one batch
    resume = "stopped by SIGINT part way (the same command again imports the rest, gateway import --undo 1"
    assert resume in _cli(tmp_path, "--list", "-c", "gw.toml").stdout
    fifo.unlink()
    fifo.write_text(_landings(8192))  # the same log, a file now: read to its end, nothing new in it
    rest = _cli(tmp_path, str(fifo), *args)
    assert rest.returncode == 0 and "new in the store: 0" in rest.stdout, rest
    assert "  run: 2 (it added no touchpoint, binding or conversion; gateway import --list shows it)" in (
        rest.stdout
    ), rest.stdout
    listed = _cli(tmp_path, "--list", "-c", "gw.toml").stdout
    [first, second] = listed.splitlines()
    assert "the same command again imports the rest" not in first, listed
    assert first.endswith(
        "stopped by SIGINT part way; run 2 read the same files to their end since and added no row:"
        f" nothing was left to import (gateway import --undo 1 removes what this run added)  files: {fifo}"
    ), listed
    assert second.startswith("run 2  "), listed
    assert second.endswith(
        f"--format combined  touchpoints 0, bindings 0, conversions 0  finished  files: {fifo}"
    ), listed
    undo = _cli(tmp_path, "--undo", "2", "-c", "gw.toml")
    assert undo.returncode == 0 and "touchpoints:              0" in undo.stdout, undo
    assert rows(tmp_path / "gw.db", "SELECT count(*) FROM touchpoints") == [(8192,)]
    assert resume in _cli(tmp_path, "--list", "-c", "gw.toml").stdout


async def test_an_undone_runs_rows_are_gone_from_the_write_ahead_log_too(tmp_path: Path) -> None:
    """Another site's log imported by mistake holds that site's visitors: undone, its rows were
    deleted from the tables (and their cells zeroed, ``secure_delete``), but the write-ahead log's
    older frames, kept while the gateway has the store open, still held them, as after an
    erasure or a purge they no longer do. The undo empties the log as those do."""
    settings = make_settings(tmp_path)
    store = settings.store_path
    marker = "another-site-visitor-4711"
    log = tmp_path / "wrong.log"
    await asyncio.to_thread(log.write_text, line(5, f"utm_source=wrong&utm_campaign={marker}") + "\n")
    await run_import(settings, [log], "combined", host="shop.example")
    # The running gateway: a connection kept open, so no close empties the log.
    held = await asyncio.to_thread(sqlite3.connect, store, check_same_thread=False)
    try:
        await asyncio.to_thread(held.execute, "SELECT count(*) FROM touchpoints")
        wal = store.with_name(store.name + "-wal")

        def on_disk() -> bytes:
            return store.read_bytes() + (wal.read_bytes() if wal.exists() else b"")

        assert marker.encode() in await asyncio.to_thread(on_disk)  # the search finds it
        undo = await undo_run(store, 1)
        assert undo.undone is None
        assert await asyncio.to_thread(rows, store, "SELECT count(*) FROM touchpoints") == [(0,)]
        assert marker.encode() not in await asyncio.to_thread(on_disk)
    finally:
        await asyncio.to_thread(held.close)


def test_a_later_run_that_could_not_read_a_file_to_its_end_does_not_finish_a_stopped_one(
    tmp_path: Path,
) -> None:
    """A run stopped by Ctrl-C, then the same file again, which breaks part way (a gzip copy cut
    short) after the lines the stopped run had in: the later run adds no row and is recorded
    (2026-12-07), and ``--list`` said of the stopped run that it "read the same files to their
    end since and added no row: nothing was left to import", while the lines after the break
    were never imported. A run that could not read a file to its end does not finish a stopped
    one: the stopped run still says the same command imports the rest, and the later run is
    listed with the file it could not read whole."""
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    fifo, args = tmp_path / "access.log", IMPORT_ARGS
    _stopped_after_one_batch(tmp_path, fifo)  # lines 1 to 8,192 in
    resume = "stopped by SIGINT part way (the same command again imports the rest, gateway import --undo 1"
    fifo.unlink()
    # The same log with 8 lines more, gzip in two members: the second cut short after its header.
    lines = _landings(8200).splitlines(keepends=True)
    rest = gzip.compress("".join(lines[8192:]).encode())
    fifo.write_bytes(gzip.compress("".join(lines[:8192]).encode()) + rest[:12])
    broken = _cli(tmp_path, str(fifo), *args)
    assert broken.returncode == 1 and "new in the store: 0" in broken.stdout, broken
    assert "Compressed file ended before the end-of-stream marker was reached" in broken.stderr, broken
    listed = _cli(tmp_path, "--list", "-c", "gw.toml").stdout
    [first, second] = listed.splitlines()
    assert "nothing was left to import" not in first, listed
    assert resume in first, listed
    assert second.startswith("run 2  "), listed
    assert f"finished, but did not read {fifo} to its end  files: {fifo}" in second, listed


def test_list_shows_what_each_run_skipped_by_reason(tmp_path: Path) -> None:
    """The summary at the end of a run counted the lines it skipped, by reason; ``--list`` showed
    only the rows each run added, so a week later a run that skipped 40 % of its lines (a wrong
    --format, a log half junk) looked as clean as any. The run records its skipped lines (the
    total, of the lines read, and the most frequent reasons, at most three, the rest counted
    together), and ``--list`` shows them under the run. A run that skipped nothing, and a run
    recorded before the count was (no ``skipped`` in ``import_runs.added``), show as before."""
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    (tmp_path / "good.log").write_text(GOOD)
    bad_time = f'203.0.113.7 - - [2025-03-01T10:00:00Z] "GET /p HTTP/1.1" 200 10 "-" "{UA}"'
    no_client = f'300.1.1.1 - - [01/Mar/2025:10:00:00 +0000] "GET /p HTTP/1.1" 200 10 "-" "{UA}"'
    no_status = f'203.0.113.8 - - [01/Mar/2025:10:00:00 +0000] "GET /p HTTP/1.1" ٢٠٠ 10 "-" "{UA}"'
    junk = [f"junk {n}" for n in range(4)] + [bad_time] * 3 + [no_client] * 2 + [no_status]
    (tmp_path / "half.log").write_text(GOOD + "\n".join(junk) + "\n")  # 3 good, 10 skipped
    assert _cli(tmp_path, "good.log", *IMPORT_ARGS).returncode == 0
    half = _cli(tmp_path, "half.log", *IMPORT_ARGS)
    assert half.returncode == 0 and "skipped:             10" in half.stdout, half
    listed = _cli(tmp_path, "--list", "-c", "gw.toml")
    assert listed.returncode == 0, listed
    lines = listed.stdout.splitlines()
    assert lines[0].endswith(
        "--format combined  touchpoints 3, bindings 0, conversions 0  finished  files: good.log"
    ), listed.stdout
    assert lines[1].startswith("run 2  "), listed.stdout
    assert lines[1].endswith(
        "--format combined  touchpoints 0, bindings 0, conversions 0, skipped 10 of 13 lines (77%)"
        "  finished  files: half.log"
    ), listed.stdout
    assert lines[2:] == [
        "           4  not a combined-log line",
        "           3  unreadable time",
        "           2  client address: not an IP address (nor a host name)",
        "           1  other (1 reason)",
    ], listed.stdout
    # A run recorded before the skips were: listed as it was.
    db = tmp_path / "gw.db"
    rows(db, "UPDATE import_runs SET added = json_remove(added, '$.skipped') WHERE id = 2")
    assert _cli(tmp_path, "--list", "-c", "gw.toml").stdout.splitlines()[1:] == [
        lines[1].replace(", skipped 10 of 13 lines (77%)", "")
    ]
