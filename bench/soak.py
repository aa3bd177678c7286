"""A bounded soak run: a real ``gateway run`` under mixed traffic, watched for leaks.

``python -m bench.soak [--seconds S] [--workers N ...] [--rate R] [--reload-every S] [--toml TEXT]
[--json FILE]``

For each workers count (default 1 and 2) it starts, all on 127.0.0.1: an aiohttp origin in
this process (pages, assets, an SSE stream, a WebSocket echo, a 5 MB download, a login form
and a checkout), and ``gateway run`` with ``proxy.workers = N``, an identity rule, a
conversion rule and a signed-event sender, its store in a temp folder. It then drives about
``--rate`` requests a second of mixed traffic for ``--seconds`` (120): new visitors' landings
with utm parameters, returning visitors' page loads with their cookie, asset loads, logins,
checkouts, signed webhooks, WebSocket sessions, SSE streams, clients that hang up in the middle
of the download; every 10 s an attribution report and the dashboard summary; every 30 s a
SIGHUP. Every 5 s it samples each gateway process (``/proc/PID/status`` VmRSS and threads,
``/proc/PID/fd``), the store's file and ``-wal`` sizes, and it reads the asyncio task count
each process logs at a reload (``config reloaded``'s ``tasks``). It prints the samples and a
verdict: the slope of RSS and FDs over the second half of the run (after warm-up), the largest
WAL, the task counts reload after reload. It stops by itself and removes what it made; the
verdict reports, it never fails on a figure.

This module is the command: its options, one run, the samples and the verdict. The origin is
``bench/soak_origin.py``, the ``gateway run`` process (config, start, stop, its log) is
``bench/soak_gateway.py``, the traffic and its mix are ``bench/soak_traffic.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench import entry
from bench.proxy import process_tree
from bench.servers import config_problems
from bench.soak_gateway import Gateway, gateway_config, start_gateway, stop_gateway
from bench.soak_origin import origin_server
from bench.soak_traffic import MIX, Traffic, admin_reports, one_request

SAMPLE_EVERY = 5.0
REPORT_EVERY = 10.0
RELOAD_EVERY = 30.0
MAX_IN_FLIGHT = 64


# -- samples ------------------------------------------------------------------------------------


@dataclass
class Sample:
    t: float
    procs: dict[int, tuple[int, int, int]]  # pid -> (VmRSS kB, fds, threads)
    db: int
    wal: int
    requests: int


def proc_figures(pid: int) -> tuple[int, int, int] | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss = int(fields.get("VmRSS", "0 kB").split()[0])
    threads = int(fields.get("Threads", "0").strip())
    return rss, fds, threads


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def take_sample(t: float, root: int, db: Path, requests: int) -> Sample:
    procs = {}
    for pid in process_tree(root):
        if (figures := proc_figures(pid)) is not None:
            procs[pid] = figures
    return Sample(t, procs, _size(db), _size(Path(f"{db}-wal")), requests)


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope, units a second (0 with fewer than two points)."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((x - mx) ** 2 for x, _ in points)
    return 0.0 if den == 0 else sum((x - mx) * (y - my) for x, y in points) / den


# -- one run ------------------------------------------------------------------------------------


@dataclass
class RunResult:
    workers: int
    samples: list[Sample]
    reloads: list[dict[str, Any]]
    outcomes: Counter[str]
    problems: list[dict[str, Any]]
    exit_code: int


async def soak(
    workers: int, seconds: float, rate: float, reload_every: float = RELOAD_EVERY, extra: str = ""
) -> RunResult:
    with tempfile.TemporaryDirectory(prefix="gateway-soak-") as tmp:
        workdir = Path(tmp)
        db = workdir / "gateway.db"
        async with origin_server() as origin:
            config = workdir / "gateway.toml"
            config.write_text(gateway_config(workdir, origin, workers, extra))
            gw = await start_gateway(config, workdir)
            try:
                samples, outcomes = await _drive(gw, db, seconds, rate, reload_every)
            finally:
                code = await stop_gateway(gw)
        return RunResult(workers, samples, gw.reloads(), outcomes, gw.problems(), code)


async def _drive(
    gw: Gateway, db: Path, seconds: float, rate: float, reload_every: float
) -> tuple[list[Sample], Counter[str]]:
    names = [name for name, _ in MIX]
    weights = [w for _, w in MIX]
    connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT, force_close=False)
    samples: list[Sample] = []
    pending: set[asyncio.Task[None]] = set()
    limit = asyncio.Semaphore(MAX_IN_FLIGHT)
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False
    ) as session:
        traffic = Traffic(session, gw.proxy, gw.admin)

        def spawn(job: Coroutine[Any, Any, None]) -> None:
            task = asyncio.create_task(job)
            pending.add(task)
            task.add_done_callback(pending.discard)

        start = time.monotonic()
        next_sample = next_report = start
        next_reload = start + reload_every
        sent = 0
        while (now := time.monotonic()) - start < seconds:
            if now >= next_sample:
                samples.append(take_sample(now - start, gw.process.pid, db, sent))
                next_sample += SAMPLE_EVERY
            if now >= next_report:
                spawn(admin_reports(traffic))
                next_report += REPORT_EVERY
            if now >= next_reload:
                gw.process.send_signal(signal.SIGHUP)
                next_reload += reload_every
            due = int((now - start) * rate) - sent
            for name in random.choices(names, weights, k=max(0, due)):
                if limit.locked():
                    traffic.outcomes["skipped (the client at its in-flight limit)"] += 1
                    sent += 1
                    continue
                await limit.acquire()
                spawn(one_request(traffic, name, limit))
                sent += 1
            await asyncio.sleep(0.02)
        await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.sleep(1)  # the last reload's line
        samples.append(take_sample(time.monotonic() - start, gw.process.pid, db, sent))
    return samples, traffic.outcomes


# -- report -------------------------------------------------------------------------------------


def print_result(result: RunResult) -> dict[str, Any]:
    print(f"\n== proxy.workers = {result.workers} ==")
    pids = sorted({pid for s in result.samples for pid in s.procs})
    head = f"{'t s':>5} {'reqs':>6} " + " ".join(f"{f'pid {p} RSS MB/fd/thr':>24}" for p in pids)
    print(head + f" {'db MB':>7} {'wal MB':>7}")
    for s in result.samples:
        cells = []
        for p in pids:
            fig = s.procs.get(p)
            cells.append(f"{fig[0] / 1024:>14.1f}/{fig[1]:>4}/{fig[2]:>3}" if fig else f"{'-':>24}")
        print(
            f"{s.t:>5.0f} {s.requests:>6} " + " ".join(cells) + f" {s.db / 2**20:>7.2f} {s.wal / 2**20:>7.2f}"
        )
    end = result.samples[-1].t if result.samples else 0.0
    half = [s for s in result.samples if s.t >= end / 2]
    verdict: dict[str, Any] = {"workers": result.workers, "processes": {}}
    print("\nsecond half (after warm-up), per process:")
    for p in pids:
        rss = [(s.t, s.procs[p][0] / 1024) for s in half if p in s.procs]
        fds = [(s.t, float(s.procs[p][1])) for s in half if p in s.procs]
        thr = [s.procs[p][2] for s in half if p in s.procs]
        rss_min = slope(rss) * 60
        fd_min = slope(fds) * 60
        print(
            f"  pid {p}: RSS {rss[0][1]:.1f} → {rss[-1][1]:.1f} MB, slope {rss_min:+.2f} MB/min;"
            f" fds {fds[0][1]:.0f} → {fds[-1][1]:.0f}, slope {fd_min:+.2f}/min;"
            f" threads {min(thr)}-{max(thr)}"
            if rss
            else f"  pid {p}: gone before the second half"
        )
        verdict["processes"][p] = {"rss_mb_per_min": rss_min, "fds_per_min": fd_min}
    wal_max = max((s.wal for s in result.samples), default=0)
    wal_half = max((s.wal for s in half), default=0)
    store = result.samples[-1].db if result.samples else 0
    print(
        f"  WAL: largest {wal_max / 2**20:.2f} MB (second half {wal_half / 2**20:.2f} MB);"
        f" store {store / 2**20:.2f} MB"
    )
    tasks = [(r.get("worker"), r.get("tasks")) for r in result.reloads]
    print(f"  asyncio tasks at each reload (worker, tasks): {tasks}")
    print("  outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(result.outcomes.items())))
    if result.problems:
        print(
            f"  gateway warnings/errors: {len(result.problems)}, first:",
            [r.get("msg") for r in result.problems[:5]],
        )
    print(f"  gateway exit code: {result.exit_code}")
    verdict.update(
        wal_max=wal_max, tasks=tasks, outcomes=dict(result.outcomes), problems=len(result.problems),
        exit_code=result.exit_code,
    )  # fmt: skip
    return verdict


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", allow_abbrev=False, description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=120.0, help="length of each run (default 120)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="proxy.workers of each run")
    parser.add_argument("--rate", type=float, default=60.0, help="requests a second (default 60)")
    parser.add_argument(
        "--reload-every", type=float, default=RELOAD_EVERY, help="seconds between SIGHUPs (30)"
    )
    parser.add_argument(
        "--toml", default="", help="TOML appended to the config (e.g. '[bots]\\nmax_tracked = 256')"
    )
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if not 1 <= args.seconds <= 3600:
        parser.error("--seconds: must be 1..3600")
    if any(not 1 <= n <= 8 for n in args.workers):
        parser.error("--workers: each count must be 1..8")
    if not 1 <= args.reload_every <= 3600:
        parser.error("--reload-every: must be 1..3600")
    if not 0 < args.rate <= 500:
        parser.error("--rate: must be above 0 and at most 500")
    extra = args.toml
    if extra and (problems := config_problems(lambda d: gateway_config(d, "http://127.0.0.1:1", 1, extra))):
        parser.error(f"--toml: {'; '.join(problems)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    verdicts = []
    for workers in args.workers:
        result = asyncio.run(soak(workers, args.seconds, args.rate, args.reload_every, args.toml))
        verdicts.append(print_result(result))
    if args.json:
        Path(args.json).write_text(json.dumps(verdicts, indent=2, default=str))


if __name__ == "__main__":
    entry(main)
