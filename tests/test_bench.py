"""The benchmark still runs end to end (a tiny, bounded run on loopback; figures not checked)."""

from __future__ import annotations

import ast
import contextlib
import http.server
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.ports import BEYOND, LOWEST, free_port
from storage.migrate import migrations
from tests.conftest import sigterm_as_ctrl_c

ROOT = Path(__file__).resolve().parents[1]

# Each benchmark runs as a command bounded by its own deadline (``timeout=`` 90-120 s): the
# suite's 60 s per test cut them first on a loaded machine (test_bench_runs_and_reports: four
# gateways started, 48 s and more than 60 s, 2026-12-07).
pytestmark = pytest.mark.timeout(150)
STOP_SECONDS = 30.0
"""A benchmark's time to stop what it started after SIGTERM, before its group is killed."""


@contextlib.contextmanager
def bench_process(args: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    """``python -m ARGS`` (a benchmark), in a session and process group of its own, stopped
    however the test ends: its deadline, pytest's timeout (raised mid-wait), a failed assertion,
    Ctrl-C. It gets SIGTERM (it stops its servers and removes its temp files, as on Ctrl-C),
    then whatever of its group is left gets SIGKILL. Until 2026-12-07 a benchmark cut off by a
    deadline was killed alone (``subprocess.run``): its origin, bare proxy, gateway and workers
    kept running, and its ``gw-bench-*`` folder stayed."""
    process = subprocess.Popen(
        [sys.executable, "-m", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env, start_new_session=True,
    )  # fmt: skip
    try:
        yield process
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(STOP_SECONDS)
    with contextlib.suppress(ProcessLookupError):  # its group: the leader's PID
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.communicate(timeout=STOP_SECONDS)  # reaped, its pipes read and closed
    for pipe in (process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()


def run_bench(
    args: list[str], *, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m ARGS`` to its end (``bench_process``), within ``timeout`` seconds."""
    with bench_process(args, env) as process:
        out, err = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


BASELINE = "baseline (bare aiohttp proxy, same run): 2,000 requests on 8 connections, "


def assert_baseline(stdout: str, figures: dict[str, object] | None = None) -> None:
    """The benchmark printed its same-run baseline, run before and after its work (and wrote it
    to its JSON, ``figures``, when given)."""
    [line] = [line for line in stdout.splitlines() if line.startswith(BASELINE)]
    assert " s before (" in line and " s after (" in line and "after/before " in line, line
    if figures is not None:
        assert figures["requests"] == 2000
        assert set(figures["seconds"]) == {"before", "after"}  # type: ignore[arg-type]
        assert figures["rps"] > 0  # type: ignore[operator]


@pytest.fixture(autouse=True)
def sigterm_stops_the_run(request: pytest.FixtureRequest) -> Iterator[None]:
    """The benchmarks run in sessions of their own (``bench_process``), out of reach of a
    signal sent to the run's process group: a run ended by SIGTERM (a CI job's timeout,
    ``kill``) stops as on Ctrl-C, so that each ``finally`` stops the benchmark it started."""
    with sigterm_as_ctrl_c(request.session):
        yield


def test_bench_runs_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = run_bench(
        ["bench.proxy", "--seconds", "0.3", "--warmup", "0", "--concurrency", "4",
         "--scenarios", "plain", "landing", "--workers", "1", "2", "--json", str(out)],
        timeout=90,
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
    done = run_bench(
        ["bench.instructions", "--targets", "bare", "--scenarios", "plain",
         "--requests", "5", "--warmup", "1"],
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    [row] = [line.split() for line in done.stdout.splitlines() if line.startswith("plain ")]
    assert int(row[1].replace(",", "")) > 10_000  # instructions a request, every thread's


def test_instruction_bench_counts_python_calls_a_landing() -> None:
    done = run_bench(
        ["bench.instructions", "--calls", "--scenarios", "landing",
         "--requests", "10", "--warmup", "2"],
        timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    calls = {line.split()[1]: float(line.split()[0]) for line in done.stdout.splitlines()[1:]}
    # Exact counts: the difference of two runs drops start-up and warm-up out.
    [handler] = [
        per for name, per in calls.items() if name.startswith("gateway/proxy.py:") and "(handle)" in name
    ]
    assert handler >= 1


def test_instruction_bench_sends_signed_events_the_gateway_records() -> None:
    """``signed_event``: each request a new delivery the gateway verifies and records (its 202:
    a duplicate's 200, or a refusal, would end the run), against a real gateway."""
    done = run_bench(
        ["bench.instructions", "--calls", "--scenarios", "signed_event",
         "--requests", "10", "--warmup", "2"],
        timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    calls = {line.split()[1]: float(line.split()[0]) for line in done.stdout.splitlines()[1:]}
    verified = [per for name, per in calls.items() if name.endswith("(verify_standard)")]
    recorded = [per for name, per in calls.items() if name.endswith("(_add)") and "inbound.py" in name]
    assert (verified, recorded) == ([1.0], [1.0]), calls


def test_instruction_bench_s_signed_events_fail_the_run_unless_recorded() -> None:
    """Every signed event is a new delivery, numbered as the other scenarios' requests; an answer
    other than the gateway's 202 (a ``duplicate`` is a 200) fails the run."""
    from bench.instructions import requests

    seen: list[tuple[str, str, bytes]] = []

    class Answering(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((self.path, self.headers["webhook-id"], body))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answering)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        requests(port, "signed_event", "run0", 3, 4, connections=2)  # any 2xx/3xx: the bare proxy's
        with pytest.raises(RuntimeError, match="4 of 4 signed_event requests were not answered 202"):
            requests(port, "signed_event", "run0", 7, 4, expected=202)
    finally:
        server.shutdown()
        server.server_close()
    assert {path for path, _, _ in seen} == {"/_gw/events"}
    assert sorted(delivery for _, delivery, _ in seen) == [f"msg-run0-{n:07d}" for n in range(3, 11)]
    assert len({json.loads(body)["order_id"] for _, _, body in seen}) == 8


def test_scoring_bench_runs_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "bots.json"
    done = run_bench(
        ["bench.bots", "--requests", "2000", "--json", str(out)],
        timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "geo + bots median per request" in done.stdout
    results = json.loads(out.read_text())
    assert {"asset", "page", "landing", "all"} <= set(results) and results["all"]["requests"] == 2000
    assert_baseline(done.stdout, results["baseline"])
    assert "median ÷ baseline" in done.stdout
    [every] = [line.split() for line in done.stdout.splitlines() if line.startswith("all ")]
    assert every[-1].endswith("%") and results["all"]["median_per_baseline_request"] > 0


def test_import_bench_runs_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "import.json"
    done = run_bench(
        ["bench.import", "--lines", "3000", "--json", str(out)],
        timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text())
    assert results["first"]["lines"] == results["again"]["lines"] == 3000
    assert results["first"]["new_touchpoints"] == results["first"]["touchpoints"] > 0
    assert results["again"]["new_touchpoints"] == 0
    # The dry runs: against the empty store every touchpoint new, against the filled one none.
    empty, stored = results["dry-empty"], results["dry-stored"]
    assert empty["dry_run"] and stored["dry_run"] and not results["first"]["dry_run"]
    assert empty["lines"] == stored["lines"] == 3000
    assert (empty["new_touchpoints"], empty["already_touchpoints"]) == (results["first"]["touchpoints"], 0)
    assert (stored["new_touchpoints"], stored["already_touchpoints"]) == (0, results["first"]["touchpoints"])
    for dry, real in (("dry-empty", "first"), ("dry-stored", "again")):
        share = results[dry]["lines_per_s_wall"] / results[real]["lines_per_s_wall"]
        assert results[dry]["of_real_run"] == pytest.approx(share, abs=0.001)
        [row] = [line.split() for line in done.stdout.splitlines() if line.startswith(f"{dry} ")]
        assert float(row[-1]) == pytest.approx(results[dry]["of_real_run"], abs=0.01)
    # The same-run reference: the bare proxy loaded before and after, lines/s as a ratio of it.
    assert_baseline(done.stdout, results["baseline"])
    [first] = [line.split() for line in done.stdout.splitlines() if line.startswith("first ")]
    assert float(first[-1]) == pytest.approx(results["first"]["lines_per_baseline_request"], abs=0.01)
    assert results["first"]["lines_per_baseline_request"] == pytest.approx(
        results["first"]["lines_per_s_wall"] / results["baseline"]["rps"], rel=0.01
    )


def test_sync_bench_runs_and_reports() -> None:
    from bench.pgserver import binaries

    if binaries() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL server binaries not found (CI must run the sync bench test)")
        pytest.skip("PostgreSQL server binaries not found")
    done = run_bench(
        ["bench.sync", "--rows", "3000", "--batch-size", "1000",
         "--lag-seconds", "0.5"],
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "catch-up: 3,000 touchpoints in" in done.stdout and "lag under load:" in done.stdout
    assert_baseline(done.stdout)
    assert "catch-up per baseline request: " in done.stdout


def test_loopstall_bench_runs_and_reports_its_rounds_per_baseline_second() -> None:
    from bench.pgserver import binaries

    if binaries() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL server binaries not found (CI must run the loopstall bench test)")
        pytest.skip("PostgreSQL server binaries not found")
    done = run_bench(
        ["bench.loopstall", "--touchpoints", "1000", "--steady", "100", "--rounds", "1"],
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert_baseline(done.stdout)
    lines = done.stdout.splitlines()
    ratios = lines[lines.index(next(line for line in lines if "s ÷ baseline" in line)) + 1 :]
    rounds = [line for line in ratios if line.startswith(("sync ", "mirror "))]
    assert [line[:20].strip() for line in rounds] == [
        "sync catch-up", "mirror first fill", "sync round, steady", "mirror round, steady"
    ]  # fmt: skip
    assert all(line.split()[-3].endswith("x") for line in rounds), rounds


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
    made = run_bench(
        ["bench.synth", str(store), "--touchpoints", "3000", "--conversions", "300",
         "--verdicts"],
        timeout=120,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr[-2000:]
    assert "3,000 touchpoints" in made.stdout
    # A store an older checkout generated (before migration 0009) is brought up to date first.
    with contextlib.closing(sqlite3.connect(store)) as db:
        as_of(db, 8)
    out = tmp_path / "reports.json"
    done = run_bench(
        ["bench.reports", "--store", str(store), "--repeat", "1", "--models", "linear",
         "--json", str(out)],
        timeout=120,
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
    # Each report's seconds per second of the bare proxy loaded before and after them.
    assert_baseline(done.stdout)
    assert "best ÷ baseline" in done.stdout
    for result in results.values():
        assert set(result["baseline_s"]) == {"before", "after"}
        mean = sum(result["baseline_s"].values()) / 2
        assert result["best_per_baseline_s"] == pytest.approx(result["best_s"] / mean)
    [row] = [line for line in done.stdout.splitlines() if line.startswith("paths ")]
    assert row.split()[-1] == f"{results['paths']['best_per_baseline_s']:.2f}x"


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
    done = run_bench(
        ["bench.soak", "--seconds", "6", "--reload-every", "2", "--rate", "40",
         "--workers", "1", "2", "--json", str(out)],
        timeout=120, env={**os.environ, "TMPDIR": str(temp)},
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


def test_mitm_bench_runs_against_a_bare_proxy_and_prints_the_ratios(tmp_path: Path) -> None:
    """Like every throughput benchmark, the host benchmark loads a bare aiohttp proxy in the same
    run and prints each host's throughput as a ratio of it."""
    pytest.importorskip("mitmproxy")
    out = tmp_path / "mitm.json"
    done = run_bench(
        ["bench.mitm", "--seconds", "0.3", "--warmup", "0", "--concurrency", "4",
         "--scenarios", "landing", "--json", str(out)],
        timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text())
    assert {r["target"] for r in results["runs"]} == {"bare", "gateway", "mitm", "mitm-bare"}
    assert all(r["errors"] == 0 for r in results["runs"])
    assert {(r["scenario"], r["host"]) for r in results["ratios"]} == {
        ("landing", host) for host in ("gateway", "mitm", "mitm-bare")
    }
    assert "host/bare" in done.stdout


def test_mitmdump_whose_port_was_taken_meanwhile_starts_on_another(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The host benchmark's mitmdump binds a port chosen a moment before: another process
    (an outgoing connection's local port) can have it by then, and mitmdump exits on "address
    already in use". It is started again on another port, saying which one was taken."""
    pytest.importorskip("mitmproxy")
    from bench.mitm import start_mitmdump
    from bench.proxy import stop_process

    with socket.socket() as taken:  # bound, not listening: as a connection's local port is
        taken.bind(("127.0.0.1", free_port()))
        port = taken.getsockname()[1]
        nothing = f"http://127.0.0.1:{free_port()}"  # the site: not reached here
        server = start_mitmdump(nothing, tmp_path, addon=False, port=port)
        try:
            assert server.port != port and LOWEST <= server.port < BEYOND
            socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
            assert server.process.poll() is None
        finally:
            stop_process(server.process)
    said = capfd.readouterr().err
    assert f"mitmdump: port {port} was taken" in said, said


def test_proxy_bench_gives_every_scenario_its_ratio() -> None:
    """``first_visit`` has no target, but its gateway/bare ratio is printed like the others'."""
    from bench.proxy import Summary, ratios

    summary = [
        Summary(scenario, target, rps, 1.0, 2.0, 100, 0, None)
        for scenario in ("plain", "first_visit", "landing")
        for target, rps in (("bare", 1000.0), ("gateway", 800.0))
    ]
    found = {(r.scenario, r.target, round(r.ratio, 2)) for r in ratios(summary)}
    assert found == {("plain", 0.9, 0.8), ("first_visit", None, 0.8), ("landing", 0.75, 0.8)}


@pytest.mark.parametrize(
    ("module", "args", "says"),
    [
        ("bench.proxy", ["--max-requests", "0"], "--max-requests"),
        ("bench.mitm", ["--seconds", "0"], "--seconds"),
        ("bench.mitm", ["--max-requests", "0"], "--max-requests"),
        ("bench.bots", ["--requests", "0"], "--requests"),
        ("bench.import", ["--lines", "0"], "--lines"),
        ("bench.import", ["--workers", "0"], "--workers"),
        ("bench.synth", ["{tmp}/new.db", "--touchpoints", "0"], "--touchpoints"),
        ("bench.synth", ["{tmp}/new.db", "--conversions", "-1"], "--conversions"),
        ("bench.synth", ["{tmp}/new.db", "--days", "0"], "--days"),
        ("bench.reports", ["--store", "{tmp}/new.db"], "bench.synth"),
        ("bench.reports", ["--repeat", "0", "--touchpoints", "100"], "--repeat"),
        ("bench.sync", ["--rows", "0"], "--rows"),
        ("bench.loopstall", ["--touchpoints", "0"], "--touchpoints"),
        # A config the gateway refuses is a bad argument too (until 2026-12-07 the origin and
        # the bare proxy started, then a traceback: "gateway server did not start").
        ("bench.proxy", ["--gateway-toml", "[proxy"], "--gateway-toml: not valid TOML"),
        ("bench.proxy", ["--gateway-toml", "[proxy]\\nlistn = 1"], "proxy.listn: unknown key"),
        ("bench.instructions", ["--calls", "--gateway-toml", "[bots]\\nmax_tracked = 1"], "bots.max_tracked"),
        ("bench.soak", ["--toml", "[bots]\\nmax_trackd = 1"], "--toml: bots.max_trackd: unknown key"),
        # An option cut short is refused, not taken for the one it begins (argparse's default
        # until 2026-12-07: an option added later would have made it mean another, or nothing).
        ("bench.proxy", ["--max-req", "x"], "unrecognized arguments: --max-req x"),
        ("bench.mitm", ["--sec", "x"], "unrecognized arguments: --sec x"),
        ("bench.bots", ["--req", "x"], "unrecognized arguments: --req x"),
        ("bench.import", ["--lin", "x"], "unrecognized arguments: --lin x"),
        ("bench.synth", ["{tmp}/new.db", "--touch", "x"], "unrecognized arguments: --touch x"),
        ("bench.reports", ["--rep", "x"], "unrecognized arguments: --rep x"),
        ("bench.sync", ["--ro", "x"], "unrecognized arguments: --ro x"),
        ("bench.loopstall", ["--touch", "x"], "unrecognized arguments: --touch x"),
        ("bench.instructions", ["--req", "x"], "unrecognized arguments: --req x"),
        ("bench.soak", ["--sec", "x"], "unrecognized arguments: --sec x"),
        (
            "bench.load",
            ["--port", "1", "--scenario", "plain", "--sec", "x"],
            "unrecognized arguments: --sec x",
        ),
        ("bench.synthlog", ["{tmp}/log", "--lin", "x"], "unrecognized arguments: --lin x"),
        ("bench.touchcache", ["--store", "{tmp}/s.db", "--sha", "x"], "unrecognized arguments: --sha x"),
    ],
)
def test_bench_refuses_a_bad_argument_with_a_clear_error(
    tmp_path: Path, module: str, args: list[str], says: str
) -> None:
    """A bad argument gets argparse's usage and a line naming the option, before anything
    starts: no traceback, no figures of nothing, no file left behind."""
    done = run_bench(
        [module, *(a.replace("{tmp}", str(tmp_path)) for a in args)],
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, (done.stdout[-1000:], done.stderr[-2000:])
    assert "Traceback" not in done.stderr
    [error] = [line for line in done.stderr.splitlines() if f"python -m {module}: error:" in line]
    assert says in error
    assert list(tmp_path.iterdir()) == []


WITHOUT = """
import runpy, sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None  # as after `make run` alone: the extra's package not installed
sys.argv = [sys.argv[2], *sys.argv[3:]]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""
"""``python -c WITHOUT PACKAGES MODULE ARGS…``: the benchmark run as ``python -m MODULE ARGS…``
with each of PACKAGES (comma-separated) failing to import, as when it is not installed."""


@pytest.mark.parametrize(
    ("module", "missing", "extra", "args"),
    [
        ("bench.sync", "asyncpg", "postgres", ["--rows", "10"]),
        ("bench.loopstall", "asyncpg", "postgres", ["--touchpoints", "10"]),
        ("bench.mitm", "mitmproxy", "mitm", ["--seconds", "0.1"]),
        ("bench.bots", "mmdb_writer,netaddr", "test", ["--requests", "10"]),
    ],
)
def test_a_benchmark_without_its_extra_says_which_and_how_to_install_it(
    tmp_path: Path, module: str, missing: str, extra: str, args: list[str]
) -> None:
    """After ``make run`` alone (the gateway, no extras) a benchmark that needs an extra says
    which, and the command that installs it, exit 2, before it starts anything: until
    2026-12-07 ``bench.sync`` and ``bench.loopstall`` ended in an ``ImportError`` traceback."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT, missing, module, *args], cwd=ROOT, capture_output=True, text=True,
        timeout=60, env={**os.environ, "TMPDIR": str(temp)},
    )  # fmt: skip
    assert done.returncode == 2, (done.stdout[-1000:], done.stderr[-2000:])
    assert "Traceback" not in done.stderr
    [error] = [line for line in done.stderr.splitlines() if f"python -m {module}: error:" in line]
    assert f"needs the '{extra}' extra ({missing.replace(',', ', ')} not installed)" in error
    assert "make bench-deps" in error and f"pip install -e '.[{extra}]'" in error
    assert done.stdout == ""  # nothing started, no figures
    assert list(temp.iterdir()) == []


WRITER = """
import sys
while True:  # a worker writing into the benchmark's temp folder as long as it runs
    for n in range(20):
        try:
            open(f"{sys.argv[1]}/file-{n}", "w").close()
        except OSError:
            pass
"""
STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a server that does not stop on SIGTERM
writer = subprocess.Popen([sys.executable, "-c", sys.argv[2], sys.argv[1]])
print(writer.pid, flush=True)
time.sleep(300)
"""
"""``python -c STUBBORN FOLDER WRITER``: ignores SIGTERM; its child (``WRITER``) writes files
into FOLDER until it is killed. Prints the child's PID."""


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_a_server_killed_after_its_stop_timeout_takes_what_it_started_along(tmp_path: Path) -> None:
    """A server that ignores SIGTERM gets SIGKILL after ``STOP_TIMEOUT``, and so does every
    process it started, before the benchmark removes its temp folder: until 2026-12-07 only the
    server was killed, and a ``gateway run`` supervisor's workers, orphaned, ran on writing into
    the folder while it was being removed (which could fail and leave the folder)."""
    from bench.proxy import stop_process

    temp = tmp_path / "tmp"
    temp.mkdir()
    folder = tempfile.TemporaryDirectory(prefix="gw-bench-", dir=temp)
    server = subprocess.Popen(
        [sys.executable, "-c", STUBBORN, folder.name, WRITER], stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None
    writer = int(server.stdout.readline())
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not os.listdir(folder.name):
            time.sleep(0.05)
        assert os.listdir(folder.name), "the writer did not start"
        stop_process(server)
        assert server.returncode == -signal.SIGKILL
        assert not _running(writer)
        folder.cleanup()
        assert list(temp.iterdir()) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(writer, signal.SIGKILL)
        if server.poll() is None:
            server.kill()
        server.wait()
        server.stdout.close()
        shutil.rmtree(folder.name, ignore_errors=True)


def _children(pid: int) -> list[int]:
    try:
        return [int(k) for k in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


LOADING = ["bench.proxy", "--seconds", "60", "--warmup", "0", "--concurrency", "2", "--scenarios", "plain"]
"""A benchmark that loads for a minute, to be stopped while it does."""


def _loading(process: subprocess.Popen[str]) -> list[int]:
    """The PIDs of ``LOADING``'s servers and load generator (four children), once all started."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(_children(process.pid)) < 4:
        time.sleep(0.1)
    children = _children(process.pid)
    assert len(children) == 4, children
    return children


class CutOff(Exception):
    """What pytest's timeout raises in the middle of a test (its ``signal`` method)."""


def test_a_benchmark_cut_off_mid_run_leaves_nothing_behind(tmp_path: Path) -> None:
    """A test cut off while its benchmark runs (pytest's timeout, a failed assertion) stops the
    benchmark and everything it started, and its temp folder goes: until 2026-12-07 the origin,
    the bare proxy, the gateway and the load generator ran on, and ``gw-bench-*`` stayed."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    with pytest.raises(CutOff), bench_process(LOADING, env={**os.environ, "TMPDIR": str(temp)}) as process:
        started = [process.pid, *_loading(process)]
        raise CutOff
    assert not [pid for pid in started if Path(f"/proc/{pid}").exists()]
    assert list(temp.iterdir()) == []


@pytest.mark.parametrize(
    ("sent", "code", "says"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "stopped by SIGTERM")],
)
def test_proxy_bench_stops_cleanly_on_ctrl_c(
    tmp_path: Path, sent: signal.Signals, code: int, says: str
) -> None:
    """SIGINT to the benchmark's PID while it loads: every server and the load generator are
    stopped, its temp folder is gone, and it says it was interrupted (exit 130), no traceback.
    The same for SIGTERM (``kill``, a CI job's timeout), exit 143: until 2026-12-07 that ended
    the benchmark at once and left its servers running and its temp folder behind."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    with bench_process(LOADING, env={**os.environ, "TMPDIR": str(temp)}) as process:
        children = _loading(process)
        process.send_signal(sent)
        _, err = process.communicate(timeout=30)
    assert process.returncode == code, err[-2000:]
    assert "Traceback" not in err and says in err
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]
    assert list(temp.iterdir()) == []


@pytest.mark.parametrize(("touchpoints", "conversions"), [(1, 100), (200, 0)])
def test_synth_makes_a_store_at_the_smallest_sizes(
    tmp_path: Path, touchpoints: int, conversions: int
) -> None:
    """A store with no conversions, or no sign-ins, is still a store: written, and the gateway
    reports on it (``gateway report``), with nothing to credit."""
    store = tmp_path / "synth.db"
    made = run_bench(
        ["bench.synth", str(store), "--touchpoints", str(touchpoints),
         "--conversions", str(conversions)],
        timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr[-2000:]
    assert f"{touchpoints:,} touchpoints" in made.stdout
    config = tmp_path / "gateway.toml"
    config.write_text(f'[storage]\npath = "{store}"\n')
    env = {**os.environ, "GATEWAY_SECRET": "s" * 40, "GATEWAY_ADMIN_TOKEN": "t" * 40}
    report = run_bench(
        ["gateway", "report", "-c", str(config), "--since", "2026-01-01"],
        timeout=60, env=env,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr[-2000:]
    assert "attribution:" in report.stdout


async def test_the_bare_proxy_lets_a_visitor_go_without_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """A visitor that hangs up before the site answers (the load generator stopped by Ctrl-C)
    is gone, not an error: the baseline proxy says nothing, as a real proxy would."""
    import asyncio

    from aiohttp import web

    from bench.servers import bare_proxy_app

    answered = asyncio.Event()

    async def slow_page(request: web.Request) -> web.Response:
        await asyncio.sleep(0.3)
        answered.set()
        return web.Response(text="late")

    origin_app = web.Application()
    origin_app.router.add_get("/{tail:.*}", slow_page)
    runners = []
    try:
        origin = web.AppRunner(origin_app, access_log=None)
        await origin.setup()
        runners.append(origin)
        origin_site = web.TCPSite(origin, "127.0.0.1", 0)
        await origin_site.start()
        origin_port = origin_site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        bare = web.AppRunner(bare_proxy_app(f"http://127.0.0.1:{origin_port}"), access_log=None)
        await bare.setup()
        runners.append(bare)
        bare_site = web.TCPSite(bare, "127.0.0.1", 0)
        await bare_site.start()
        bare_port = bare_site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

        with caplog.at_level("DEBUG", logger="aiohttp"):
            _, writer = await asyncio.open_connection("127.0.0.1", bare_port)
            writer.write(b"GET /page HTTP/1.1\r\nHost: bench\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.close()  # the visitor leaves before the site answers
            await asyncio.wait_for(answered.wait(), 5)
            await asyncio.sleep(0.2)  # the proxy writes its answer to the closed connection
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
    assert answered.is_set()
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text


def test_every_benchmark_refuses_an_option_cut_short() -> None:
    """Each parser a benchmark builds says ``allow_abbrev=False`` (read from its source, as
    ``bench.servers``' options, a server started, cannot be tried cheaply): an option cut short
    is refused rather than taken for the one it begins."""
    found = []
    for path in sorted((ROOT / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in (
                "argparse.ArgumentParser",
                "ArgumentParser",
            ):
                said = {k.arg: ast.unparse(k.value) for k in node.keywords}
                found.append((path.name, said.get("allow_abbrev")))
    assert len(found) >= 14, found
    assert [name for name, said in found if said != "False"] == []
