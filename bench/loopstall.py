"""Event-loop stalls of the central sync's and the reporting mirror's rounds: how long a
proxied request on the process that runs them (worker 0, with the admin API) can wait.

``python -m bench.loopstall [--touchpoints 200000] [--steady 3000] [--batch-size 2000] [--dsn DSN]``

A loop-lag probe (a task sleeping 1 ms again and again, recording how late it wakes) runs
beside each of these, on the same event loop, and each one's longest stall and p99 are
printed (each single stall, not their sum), with the longest pass of the garbage collector
meanwhile (a full one, of every object of the process, stops every thread for its length):

- **sync catch-up**: a synthetic node store (``bench/synth.py --verdicts``, ``--touchpoints``
  and a tenth as many conversions) delivered to an empty central store in one round;
- **mirror first fill**: an empty mirror file filled from that central store in one round;
- **sync round, steady**: ``--steady`` new touchpoints written to the node, then one round;
- **mirror round, steady**: the round that brings them into the mirror.

Each round runs as ``gateway sync --once`` / ``gateway mirror --once`` run it (the task's
rounds are the same code). Without ``--dsn`` a throwaway PostgreSQL is started
(``bench.pgserver``, as the storage tests' ``postgres_server`` fixture). Nothing is asserted
but the row counts: measure, compare (alternate the code before and after a change in the
same hour: the machine's speed drifts), and put the figures in the README. At the end each
round's seconds are printed per baseline second, and its stalls as the requests the bare
aiohttp proxy answers in as long, that proxy loaded in the same run before the first round and
after the last (``bench.baseline``). Needs the ``postgres`` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import at_least, entry
from bench.baseline import Baseline, bare_proxy
from bench.pgserver import start_server
from bench.sync import needs_postgres, new_database, synthetic
from bench.synth import generate
from gateway.ids import Uuid7
from gateway.metrics import Metrics
from gateway.options import CentralOptions, StorageOptions
from gateway.server import settle_heap
from storage.local import LocalStore

STALL_MS = 20.0
"""A stall longer than this is counted apart: a request waits that long on top of its own time."""


class Collections:
    """The garbage collector's passes (each stops every thread, the loop's too): how many full
    ones (generation 2) began, and the longest full and young (0 and 1) one, in ms."""

    def __init__(self) -> None:
        self.fulls, self.full, self.young, self._began = 0, 0.0, 0.0, 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            self.fulls += info["generation"] == 2
            return
        ms = (time.perf_counter() - self._began) * 1000
        if info["generation"] == 2:
            self.full = max(self.full, ms)
        else:
            self.young = max(self.young, ms)


Stall = tuple[float, float, bool]
"""How late a wake-up was; the CPU time the loop's thread spent meanwhile; whether a full
collection began meanwhile."""


async def probe(found: list[Stall], collections: Collections) -> None:
    """How late a 1 ms sleep wakes up, again and again (seconds): what a proxied request would
    wait; and how much of that the loop's thread spent running (its CPU time: work on the loop,
    not a wait for the interpreter's lock or for a core other processes hold)."""
    loop = asyncio.get_running_loop()
    while True:
        start, cpu, fulls = loop.time(), time.thread_time(), collections.fulls
        await asyncio.sleep(0.001)
        late = max(loop.time() - start - 0.001, 0.0)
        busy = max(time.thread_time() - cpu - 0.0001, 0.0) if late else 0.0
        found.append((late, busy, collections.fulls != fulls))


Round = tuple[str, float, float, float]
"""A round measured: what, its seconds, its longest and its p99 stall (ms)."""


async def measured(
    what: str, work: Callable[[], Awaitable[dict[str, int]]], rounds: list[Round] | None = None
) -> dict[str, int]:
    """Run ``work`` with the probe beside it; print its rows, seconds, and in ms: the longest
    stall, the p99 and median ones, how many were over ``STALL_MS``; of the stalls no full
    collection began in, the longest and the most CPU time the loop's own thread spent in
    one; the full collections' number and the longest, and the longest young one."""
    stalls: list[Stall] = []
    collections = Collections()
    gc.callbacks.append(collections)
    monitor = asyncio.create_task(probe(stalls, collections))
    await asyncio.sleep(0.01)  # the probe is running before the work starts
    stalls.clear()
    began = time.perf_counter()
    try:
        done = await work()
    finally:
        seconds = time.perf_counter() - began
        gc.callbacks.remove(collections)
        monitor.cancel()
        await asyncio.gather(monitor, return_exceptions=True)
    rows = sum(done.values())
    ms = sorted(late * 1000 for late, _, _ in stalls)
    apart = [(late * 1000, cpu * 1000) for late, cpu, full in stalls if not full]
    longest_apart = max((late for late, _ in apart), default=0.0)
    busy = max((cpu for _, cpu in apart), default=0.0)
    p99 = ms[min(int(len(ms) * 0.99), len(ms) - 1)] if ms else 0.0
    longest = ms[-1] if ms else 0.0
    over = sum(1 for s in ms if s > STALL_MS)
    median = statistics.median(ms) if ms else 0.0
    print(
        f"{what:<20} {rows:>8,} {seconds:>7.2f} {longest:>8.1f} {p99:>6.1f} {median:>6.1f} {over:>5}"
        f" {longest_apart:>8.1f} {busy:>8.1f} {collections.fulls:>3} {collections.full:>6.1f}"
        f" {collections.young:>6.1f}"
    )
    if rounds is not None:
        rounds.append((what, seconds, longest, p99))
    return done


def print_ratios(rounds: list[Round], baseline: Baseline) -> None:
    """Each round's seconds per baseline second, and its longest and p99 stalls as the requests
    the bare proxy answered in as long (at its mean req/s this run): figures comparable across
    days, where ms drift with the machine."""
    print(baseline.describe())
    print(f"{'round':<20} {'s ÷ baseline':>12} {'longest':>8} {'p99':>6}  (stalls in baseline requests)")
    for what, seconds, longest, p99 in rounds:
        in_requests = [ms / 1000 * baseline.rps for ms in (longest, p99)]
        print(f"{what:<20} {baseline.times(seconds):>11.2f}x {in_requests[0]:>8.0f} {in_requests[1]:>6.0f}")


async def run(args: argparse.Namespace, admin_dsn: str, folder: Path, baseline: Baseline) -> None:
    import asyncpg

    from storage.mirror import Mirror
    from storage.sync import Sync

    dsn = await new_database(admin_dsn)
    node = folder / "node.db"
    began = time.perf_counter()
    await asyncio.to_thread(generate, node, args.touchpoints, max(args.touchpoints // 10, 1), 7, 90, True)
    print(f"node store: {args.touchpoints:,} touchpoints generated in {time.perf_counter() - began:.1f} s")
    if not args.default_gc:
        settle_heap()  # as the gateway does once started: the collector's settings it runs with
    options = CentralOptions(batch_size=args.batch_size)
    sync = Sync(node, dsn, options, Metrics(), node="bench")
    mirror = Mirror(folder / "mirror.db", dsn, options, Metrics())
    print(
        f"{'round':<20} {'rows':>8} {'s':>7} {'longest':>8} {'p99':>6} {'median':>6}"
        f" {f'>{STALL_MS:g}':>5} {'no gc':>8} {'loop CPU':>8} {'full gc':>10} {'young':>6}"
    )
    print(
        f"(s: the round's seconds; every other time in ms: longest, p99 and median stall,"
        f" >{STALL_MS:g}: stalls over it, no gc: longest stall without a full collection,"
        " loop CPU: the most CPU in one, full gc: count and longest, young: longest young collection)"
    )
    rounds: list[Round] = []
    await asyncio.to_thread(baseline.run, "before")
    first = await measured("sync catch-up", sync.once, rounds)
    filled = await measured("mirror first fill", mirror.once, rounds)
    assert sum(filled.values()) >= sum(first.values()) - first.get("erasures", 0), (first, filled)
    store = LocalStore(node, StorageOptions(node="bench", batch_size=5000), Metrics())
    await store.open()
    try:
        ids = Uuid7()
        for round_ in range(args.rounds):
            start = datetime(2026, 12, 1 + round_, tzinfo=UTC)
            offset = round_ * args.steady
            await store.write([synthetic(offset + n, ids, start) for n in range(args.steady)])
            synced = await measured("sync round, steady", sync.once, rounds)
            mirrored = await measured("mirror round, steady", mirror.once, rounds)
            assert synced["touchpoints"] == args.steady == mirrored["touchpoints"], (synced, mirrored)
    finally:
        await store.close()
    await asyncio.to_thread(baseline.run, "after")
    print_ratios(rounds, baseline)
    conn: Any = await asyncpg.connect(dsn)
    try:
        central = await conn.fetchval("SELECT count(*) FROM touchpoints")
    finally:
        await conn.close()
    print(f"central touchpoints: {central:,}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.loopstall", allow_abbrev=False, description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--touchpoints",
        type=at_least(1),
        default=200_000,
        help="the node store's, for the first fill (default 200,000)",
    )
    parser.add_argument(
        "--steady", type=at_least(1), default=3000, help="new touchpoints per steady round (default 3,000)"
    )
    parser.add_argument(
        "--rounds", type=at_least(0), default=3, help="steady rounds (sync, then mirror; default 3)"
    )
    parser.add_argument(
        "--batch-size", type=at_least(1), default=2000, help="central.batch_size (default 2,000)"
    )
    parser.add_argument("--dsn", help="an existing server's DSN (a database is created on it)")
    parser.add_argument(
        "--default-gc",
        action="store_true",
        help="CPython's collector settings, not the gateway's (gateway.server.settle_heap)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    needs_postgres("python -m bench.loopstall", args.dsn)
    print(
        f"bench.loopstall: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f},"
        f" batch {args.batch_size:,}, {'CPython' if args.default_gc else 'the gateway'}'s collector settings"
    )
    server = None if args.dsn else start_server()
    try:
        with tempfile.TemporaryDirectory() as folder, bare_proxy() as baseline:
            dsn = args.dsn if server is None else server.dsn()
            asyncio.run(run(args, dsn, Path(folder), baseline))
    finally:
        if server is not None:
            server.close()


if __name__ == "__main__":
    entry(main)
