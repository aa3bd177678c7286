"""Proxy benchmark: the gateway's throughput and latency as ratios against a bare aiohttp proxy.

``python -m bench.proxy [--seconds S] [--concurrency C] [--workers N ...] [--json FILE]``
(``make bench``).

Starts an origin, the bare proxy and the gateway, each in its own process
(``bench.servers``), then, for each scenario and round, loads the bare proxy
and the gateway in turn from a separate load-generator process
(``bench.load``) over loopback. Prints a table and the gateway/bare ratios
against their targets. ``--workers 1 2`` adds one target per count, each a
real ``gateway run`` with ``proxy.workers = N`` (supervisor, SO_REUSEPORT, one
shared store), and prints throughput relative to one worker. It reports; it
never fails on timing. Every server is stopped on the way out, error or not.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import median
from typing import Any

from bench import at_least, entry

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("plain", "first_visit", "landing")
TARGETS = ("bare", "gateway")
# Least gateway/bare throughput ratio we aim for, per scenario.
RATIO_TARGETS = {"plain": 0.9, "landing": 0.75}
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


@dataclass
class Server:
    kind: str
    process: subprocess.Popen[str]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Row:
    scenario: str
    target: str
    round: int
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float
    statuses: dict[str, int]
    sent: int
    seconds: float
    proxy_cpu_us: float | None
    """CPU time of the proxy process (all its threads) per response, warm-up included."""
    origin_cpu_us: float | None


@dataclass
class Summary:
    scenario: str
    target: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    proxy_cpu_us: float | None


@dataclass
class Ratio:
    scenario: str
    ratio: float
    target: float | None
    """The least ratio aimed for; None where the scenario has none (``first_visit``)."""
    met: bool | None


def _python(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def start_server(kind: str, *args: str) -> Server:
    """Start one server process and wait for its ``PORT n`` line."""
    process = subprocess.Popen(
        _python("bench.servers", kind, *args), cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    return _wait_ready(kind, process, lambda line: int(line.split()[1]) if line.startswith("PORT ") else None)


def _wait_ready(
    kind: str, process: subprocess.Popen[str], port_of: Any, timeout: float = START_TIMEOUT
) -> Server:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            line = process.stdout.readline()
            port = port_of(line)
            if port is not None:
                return Server(kind, process, port)
            if not line:
                break
        if process.poll() is not None:
            break
    stop_process(process)
    raise RuntimeError(f"{kind} server did not start (exit code {process.returncode})")


def start_workers(count: int, upstream: str, store: Path, extra: str) -> Server:
    """``gateway run`` with ``proxy.workers = count``: the supervisor and its workers, on a port
    the gateway binds itself (``127.0.0.1:0``, read from its ``proxy on`` line). Until 2026-12-07
    a port was chosen here and bound by the gateway a moment later: another process could take
    it in between."""
    from bench.servers import gateway_toml

    cfg = store / f"workers-{count}.toml"
    own = gateway_toml(store, extra).replace(str(store / "gateway.db"), str(store / f"gateway-w{count}.db"))
    proxy = (
        f'[proxy]\nlisten = "127.0.0.1:0"\nupstream = "{upstream}"\nworkers = {count}\n'
        f'[admin]\nlisten = "127.0.0.1:0"\n[log]\nlevel = "warning"\n'
    )
    cfg.write_text(proxy + own)
    env = {**os.environ, "GATEWAY_SECRET": "s" * 40, "GATEWAY_ADMIN_TOKEN": "t" * 40}
    process = subprocess.Popen(
        _python("gateway", "run", "-c", str(cfg)), cwd=ROOT, stdout=subprocess.PIPE, text=True, env=env
    )

    def port_of(line: str) -> int | None:
        found = line.partition("proxy on http://")[2]
        return int(found.split("/")[0].rpartition(":")[2]) if found else None

    return _wait_ready(f"gateway-w{count}", process, port_of)


def process_tree(pid: int) -> list[int]:
    """``pid`` and its children (a supervisor's workers)."""
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return [pid]
    return [pid, *(int(k) for k in kids)]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children of each of its threads, theirs, and so on)."""
    found: list[int] = []
    try:
        tasks = [t.name for t in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:
        return found
    for task in tasks:
        try:
            kids = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
        except OSError:
            continue
        for kid in map(int, kids):
            found += [kid, *descendants(kid)]
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie, dead and not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def kill_all(pids: Sequence[int], timeout: float = STOP_TIMEOUT) -> None:
    """SIGKILL each of ``pids`` still running, and wait (at most ``timeout``) until none runs."""
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.05)


def stop_process(process: subprocess.Popen[str]) -> None:
    """SIGTERM (a clean shutdown flushes the gateway's store), then SIGKILL if it lingers: to it
    and to every process below it. Until 2026-12-07 the SIGKILL went to it alone: a ``gateway
    run`` supervisor's workers ran on, orphaned, writing their store into the benchmark's temp
    folder while it was being removed (the removal could fail, the folder left behind)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            below = descendants(process.pid)
            process.kill()
            process.wait()
            kill_all(below)
    if process.stdout is not None:
        process.stdout.close()


@contextmanager
def servers(store: Path, profile: str, toml: str, workers: Sequence[int] = ()) -> Iterator[dict[str, Server]]:
    started: list[Server] = []
    try:
        origin = start_server("origin")
        started.append(origin)
        started.append(start_server("bare", "--upstream", origin.url))
        extra = (("--profile", profile) if profile else ()) + (("--toml", toml) if toml else ())
        started.append(start_server("gateway", "--upstream", origin.url, "--store", str(store), *extra))
        for count in workers:
            started.append(start_workers(count, origin.url, store, toml))
        yield {s.kind: s for s in started}
    finally:
        for server in reversed(started):
            stop_process(server.process)


def run_load(port: int, scenario: str, args: argparse.Namespace) -> dict[str, Any]:
    command = _python(
        "bench.load",
        f"--port={port}",
        f"--scenario={scenario}",
        f"--seconds={args.seconds}",
        f"--concurrency={args.concurrency}",
        f"--warmup={args.warmup}",
        f"--max-requests={args.max_requests}",
    )
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=args.seconds + args.warmup + 30
    )
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process, all threads (Linux ``/proc``; None elsewhere)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu(pids: Sequence[int]) -> float | None:
    times = [cpu_seconds(pid) for pid in pids]
    return None if any(t is None for t in times) else sum(t or 0.0 for t in times)


def measure(running: dict[str, Server], target: str, scenario: str, args: argparse.Namespace) -> Row:
    """One load run against ``target``, with the CPU its process and the origin's spent per response."""
    pids = {"proxy": process_tree(running[target].process.pid), "origin": [running["origin"].process.pid]}
    before = {k: _cpu(tree) for k, tree in pids.items()}
    result = run_load(running[target].port, scenario, args)
    after = {k: _cpu(tree) for k, tree in pids.items()}
    sent = max(1, int(result["sent"]))
    cpu_us: dict[str, float | None] = {}
    for key in pids:
        b, a = before[key], after[key]
        cpu_us[key] = None if a is None or b is None else (a - b) / sent * 1e6
    return Row(
        scenario=scenario,
        target=target,
        round=0,
        proxy_cpu_us=cpu_us["proxy"],
        origin_cpu_us=cpu_us["origin"],
        **result,
    )


def stored_touchpoints(store: Path) -> int:
    """Touchpoints in every gateway store of the run (the in-process one and each workers count)."""
    total = 0
    for path in sorted(store.glob("gateway*.db")):
        db = sqlite3.connect(path)
        try:
            (count,) = db.execute("SELECT count(*) FROM touchpoints").fetchone()
            total += int(count)
        finally:
            db.close()
    return total


def summarise(rows: Sequence[Row], scenarios: Sequence[str], targets: Sequence[str]) -> list[Summary]:
    """Median over rounds, per scenario and target."""
    out: list[Summary] = []
    for scenario in scenarios:
        for target in targets:
            mine = [r for r in rows if r.scenario == scenario and r.target == target]
            if mine:
                out.append(
                    Summary(
                        scenario=scenario,
                        target=target,
                        rps=median(r.rps for r in mine),
                        p50_ms=median(r.p50_ms for r in mine),
                        p99_ms=median(r.p99_ms for r in mine),
                        requests=sum(r.requests for r in mine),
                        errors=sum(r.errors for r in mine),
                        proxy_cpu_us=_median_or_none([r.proxy_cpu_us for r in mine]),
                    )
                )
    return out


def _median_or_none(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return median(known) if known else None


def ratios(summary: Sequence[Summary]) -> list[Ratio]:
    """The gateway's req/s over the bare proxy's, for every scenario both were loaded with."""
    by_key = {(s.scenario, s.target): s for s in summary}
    out: list[Ratio] = []
    for scenario in SCENARIOS:
        bare, gw = by_key.get((scenario, "bare")), by_key.get((scenario, "gateway"))
        if bare is None or gw is None:
            continue
        ratio = gw.rps / bare.rps if bare.rps else 0.0
        goal = RATIO_TARGETS.get(scenario)
        out.append(
            Ratio(scenario=scenario, ratio=ratio, target=goal, met=None if goal is None else ratio >= goal)
        )
    return out


def print_report(summary: Sequence[Summary], ratio_rows: Sequence[Ratio], args: argparse.Namespace) -> None:
    print(
        f"\n{args.seconds:g} s per run after {args.warmup:g} s warm-up, concurrency {args.concurrency}, "
        f"{args.rounds} round(s) (median shown), {os.cpu_count()} CPUs\n"
    )
    header = ("scenario", "target", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "requests", "errors")
    print("{:<11} {:<8} {:>9} {:>8} {:>8} {:>10} {:>9} {:>7}".format(*header))
    for s in summary:
        cpu = "n/a" if s.proxy_cpu_us is None else f"{s.proxy_cpu_us:.0f}"
        print(
            f"{s.scenario:<11} {s.target:<8} {s.rps:>9.0f} {s.p50_ms:>8.2f} {s.p99_ms:>8.2f} "
            f"{cpu:>10} {s.requests:>9} {s.errors:>7}"
        )
    if ratio_rows:
        print(f"\n{'scenario':<11} {'gateway/bare':>12} {'target':>7}  result")
        for r in ratio_rows:
            if r.target is None:
                print(f"{r.scenario:<11} {r.ratio:>11.2f}x {'-':>7}  (no target)")
            else:
                print(
                    f"{r.scenario:<11} {r.ratio:>11.2f}x {r.target:>6.2f}x  {'met' if r.met else 'NOT met'}"
                )
    scaling = worker_scaling(summary)
    if scaling:
        print(f"\n{'scenario':<11} {'workers':>7} {'req/s':>9} {'vs 1 worker':>12}")
        for scenario, count, rps, relative in scaling:
            shown = "n/a" if relative is None else f"{relative:.2f}x"
            print(f"{scenario:<11} {count:>7} {rps:>9.0f} {shown:>12}")


def worker_scaling(summary: Sequence[Summary]) -> list[tuple[str, int, float, float | None]]:
    """(scenario, workers, req/s, req/s relative to one worker) for every ``gateway-wN`` target."""
    rows = [(s.scenario, int(s.target.removeprefix("gateway-w")), s.rps) for s in summary if "-w" in s.target]
    one = {scenario: rps for scenario, count, rps in rows if count == 1}
    return [
        (scenario, count, rps, rps / one[scenario] if one.get(scenario) else None)
        for scenario, count, rps in rows
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.proxy", allow_abbrev=False, description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run (default 5)")
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="unmeasured seconds before each run (default 1)"
    )
    parser.add_argument("--concurrency", type=int, default=32, help="keep-alive connections (default 32)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat every run; the median is shown (default 1)"
    )
    parser.add_argument(
        "--max-requests",
        type=at_least(1),
        default=1_000_000,
        help="request bound per run (default 1,000,000)",
    )
    parser.add_argument(
        "--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS), help="(default: all three)"
    )
    parser.add_argument(
        "--targets",
        nargs="+",
        choices=TARGETS,
        default=list(TARGETS),
        help="(default: both; the gateway/bare ratios need both)",
    )
    parser.add_argument(
        "--workers",
        nargs="+",
        type=int,
        default=[],
        metavar="N",
        help="also run `gateway run` with proxy.workers = N, for each N (throughput vs workers)",
    )
    parser.add_argument("--json", metavar="FILE", default="", help="also write the results here")
    parser.add_argument(
        "--gateway-toml",
        metavar="TOML",
        default="",
        help=r'extra gateway config, e.g. "[proxy]\naddons = []" (ablations)',
    )
    parser.add_argument(
        "--profile", metavar="FILE", default="", help="run the gateway under cProfile, stats to FILE"
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.concurrency < 1 or args.rounds < 1 or args.warmup < 0:
        parser.error("--seconds and --concurrency must be positive, --rounds ≥ 1, --warmup ≥ 0")
    if args.json and not Path(args.json).resolve().parent.is_dir():
        parser.error(f"--json: no folder {Path(args.json).resolve().parent} to write {args.json} in")
    if any(not 1 <= n <= 64 for n in args.workers):
        parser.error("--workers: each count must be 1..64")
    from bench.servers import config_problems, gateway_toml

    if args.gateway_toml and (problems := config_problems(lambda d: gateway_toml(d, args.gateway_toml))):
        parser.error(f"--gateway-toml: {'; '.join(problems)}")
    args.targets = [*args.targets, *(f"gateway-w{n}" for n in dict.fromkeys(args.workers))]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    profile = str(Path(args.profile).resolve()) if args.profile else ""
    rows: list[Row] = []
    gateway_landings = 0
    with tempfile.TemporaryDirectory(prefix="gw-bench-") as tmp:
        store = Path(tmp)
        with servers(store, profile, args.gateway_toml, list(dict.fromkeys(args.workers))) as running:
            for round_no in range(args.rounds):
                for scenario in args.scenarios:
                    for target in args.targets:
                        row = measure(running, target, scenario, args)
                        row.round = round_no
                        rows.append(row)
                        if scenario == "landing" and target.startswith("gateway"):
                            gateway_landings += row.sent
                        print(
                            f"  {scenario:<8} {target:<8} round {round_no + 1}: {row.rps:8.0f} req/s",
                            file=sys.stderr,
                            flush=True,
                        )
        touchpoints = stored_touchpoints(store) if gateway_landings else 0

    summary = summarise(rows, args.scenarios, args.targets)
    ratio_rows = ratios(summary)
    print_report(summary, ratio_rows, args)
    if gateway_landings:
        print(f"\ngateway landings answered: {gateway_landings}; touchpoints stored: {touchpoints}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "settings": {
                        k: getattr(args, k)
                        for k in ("seconds", "warmup", "concurrency", "rounds", "max_requests")
                    },
                    "cpus": os.cpu_count(),
                    "runs": [asdict(r) for r in rows],
                    "summary": [asdict(s) for s in summary],
                    "ratios": [asdict(r) for r in ratio_rows],
                    "workers": [
                        {"scenario": sc, "workers": n, "rps": rps, "vs_one": rel}
                        for sc, n, rps, rel in worker_scaling(summary)
                    ],
                    "gateway_landings": gateway_landings,
                    "touchpoints_stored": touchpoints,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    entry(main)
