"""The benchmark still runs end to end (a tiny, bounded run on loopback; figures not checked)."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from storage.migrate import migrations

ROOT = Path(__file__).resolve().parents[1]


def test_bench_runs_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.proxy", "--seconds", "0.3", "--warmup", "0", "--concurrency", "4",
         "--scenarios", "plain", "landing", "--workers", "1", "2", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "gateway/bare" in done.stdout and "vs 1 worker" in done.stdout
    results = json.loads(out.read_text())
    assert {(w["scenario"], w["workers"]) for w in results["workers"]} == {
        (s, n) for s in ("plain", "landing") for n in (1, 2)
    }
    assert results["touchpoints_stored"] > 0


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="needs valgrind (callgrind)")
@pytest.mark.timeout(330)  # a start-up under callgrind takes 20-60 s
def test_instruction_bench_counts_a_request_under_callgrind() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.instructions", "--targets", "bare", "--scenarios", "plain",
         "--requests", "5", "--warmup", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    [row] = [line.split() for line in done.stdout.splitlines() if line.startswith("plain ")]
    assert int(row[1].replace(",", "")) > 10_000  # instructions a request, every thread's


def test_instruction_bench_counts_python_calls_a_landing() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.instructions", "--calls", "--scenarios", "landing",
         "--requests", "10", "--warmup", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    calls = {line.split()[1]: float(line.split()[0]) for line in done.stdout.splitlines()[1:]}
    # Exact counts: the difference of two runs drops start-up and warm-up out.
    [handler] = [
        per for name, per in calls.items() if name.startswith("gateway/proxy.py:") and "(handle)" in name
    ]
    assert handler >= 1


def test_scoring_bench_runs_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "bots.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.bots", "--requests", "2000", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "geo + bots median per request" in done.stdout
    results = json.loads(out.read_text())
    assert {"asset", "page", "landing", "all"} <= set(results) and results["all"]["requests"] == 2000


def test_import_bench_runs_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "import.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.import", "--lines", "3000", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text())
    assert results["first"]["lines"] == results["again"]["lines"] == 3000
    assert results["first"]["new_touchpoints"] == results["first"]["touchpoints"] > 0
    assert results["again"]["new_touchpoints"] == 0


def test_mitm_bench_runs_and_reports(tmp_path: Path) -> None:
    pytest.importorskip("mitmproxy")
    out = tmp_path / "mitm.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.mitm", "--seconds", "0.3", "--warmup", "0", "--concurrency", "4",
         "--scenarios", "landing", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    runs = json.loads(out.read_text())
    assert {r["target"] for r in runs} == {"gateway", "mitm", "mitm-bare"}
    assert all(r["errors"] == 0 for r in runs)


def test_sync_bench_runs_and_reports() -> None:
    from bench.pgserver import binaries

    if binaries() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL server binaries not found (CI must run the sync bench test)")
        pytest.skip("PostgreSQL server binaries not found")
    done = subprocess.run(
        [sys.executable, "-m", "bench.sync", "--rows", "3000", "--batch-size", "1000",
         "--lag-seconds", "0.5"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "catch-up: 3,000 touchpoints in" in done.stdout and "lag under load:" in done.stdout


def as_of(db: sqlite3.Connection, version: int) -> None:
    """Roll a store's schema back to ``version``'s, as an older checkout generated it: the
    tables and columns later migrations added dropped, and the views, triggers and indexes as
    ``version`` defined them. Written once, so a new migration needs no line here."""
    old = sqlite3.connect(":memory:")
    for number, _, sql in migrations():
        if number <= version:
            old.executescript(sql)
    listed = "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' AND sql IS NOT NULL"
    now, then = set(db.execute(listed)), set(old.execute(listed))
    tables = {name for kind, name, _ in then if kind == "table"}
    for kind in ("trigger", "view", "index"):  # any other definition: dropped, then made as it was
        for name in sorted(name for of, name, _ in now - then if of == kind):
            db.execute(f'DROP {kind.upper()} "{name}"')
    for name in sorted(name for of, name, _ in now if of == "table" and name not in tables):
        db.execute(f'DROP TABLE "{name}"')
    for table in sorted(tables):
        kept = {row[1] for row in old.execute(f'PRAGMA table_info("{table}")')}
        for row in db.execute(f'PRAGMA table_info("{table}")').fetchall():
            if row[1] not in kept:
                db.execute(f'ALTER TABLE "{table}" DROP COLUMN "{row[1]}"')
    for kind in ("index", "view", "trigger"):
        for _, _, sql in sorted(item for item in then - now if item[0] == kind):
            db.execute(sql)
    db.execute(f"PRAGMA user_version = {version}")
    db.commit()
    old.close()


def test_report_bench_runs_on_a_small_synthetic_store(tmp_path: Path) -> None:
    store = tmp_path / "synth.db"
    made = subprocess.run(
        [sys.executable, "-m", "bench.synth", str(store), "--touchpoints", "3000", "--conversions", "300",
         "--verdicts"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr[-2000:]
    assert "3,000 touchpoints" in made.stdout
    # A store an older checkout generated (before migration 0009) is brought up to date first.
    with contextlib.closing(sqlite3.connect(store)) as db:
        as_of(db, 8)
    out = tmp_path / "reports.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.reports", "--store", str(store), "--repeat", "1", "--models", "linear",
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    newest = migrations()[-1][0]  # the store's schema grows with every migration
    assert f"migrated the store from schema version 8 to {newest}" in done.stdout
    db = sqlite3.connect(store)
    names = db.execute("SELECT name FROM table_versions ORDER BY name").fetchall()
    assert names == [("conversions",), ("identities",), ("touchpoints",)]  # migrations 0009 and 0020
    db.close()
    results = {r["report"]: r for r in json.loads(out.read_text())}
    assert results["attribution model=linear group_by=channel"]["rows"] > 0
    assert results["payouts model=last_touch"]["rows"] > 0
    # The dashboard's summary as the page asks for it: each part apart, and all in one call.
    for days in (30, 92):
        for part in ("counts", "daily", "models", "all"):
            assert results[f"dashboard {days} days part={part}"]["rows"] > 0, (days, part)


def test_instruction_bench_spreads_requests_over_connections_without_gap_or_repeat() -> None:
    from bench.instructions import requests

    seen: list[str] = []

    class Recording(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the bench's connections expect

        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recording)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        requests(server.server_address[1], "landing", "run0", 5, 11, connections=4)
    finally:
        server.shutdown()
        server.server_close()
    contents = sorted(path.rpartition("utm_content=")[2] for path in seen)
    assert contents == [f"run0-{n:07d}" for n in range(5, 16)]


def test_soak_runs_mixed_traffic_samples_and_cleans_up(tmp_path: Path) -> None:
    """A short soak of both kinds of gateway: every kind of traffic got through, each process
    was sampled, the reloads said their task counts, and nothing is left in its temp folder."""
    out = tmp_path / "soak.json"
    temp = tmp_path / "tmp"
    temp.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--seconds", "6", "--reload-every", "2", "--rate", "40",
         "--workers", "1", "2", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "TMPDIR": str(temp)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "second half (after warm-up)" in done.stdout
    runs = json.loads(out.read_text())
    assert [r["workers"] for r in runs] == [1, 2]
    for run in runs:
        assert run["exit_code"] == 0
        assert len(run["processes"]) == (1 if run["workers"] == 1 else 3)  # the supervisor and two
        assert run["outcomes"]["landing"] > 0 and run["outcomes"]["page"] > 0
        assert not [k for k in run["outcomes"] if ":" in k], run["outcomes"]  # no failure of any kind
        assert run["tasks"] and all(isinstance(n, int) and n > 0 for _, n in run["tasks"])
        assert run["wal_max"] > 0
    assert list(temp.iterdir()) == []
