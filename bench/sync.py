"""Central sync catch-up: how fast a node's backlog of touchpoints reaches PostgreSQL.

``python -m bench.sync [--rows 200000] [--batch-size 2000] [--dsn DSN] [--lag-seconds 5]``

Writes ``--rows`` synthetic touchpoints (realistic fields: source, medium,
campaign, content, click ID, raw params) to a fresh local store, then times
one ``gateway sync --once``-style round into an empty central database and
prints touchpoints/s with the setup. Then, unless ``--lag-seconds 0``, it
measures the sync lag under load: the local store takes a steady stream of
touchpoints (``--load-rate`` per second) while the sync task runs, and the
lag (rows and seconds behind) is sampled every 100 ms. Without ``--dsn`` a
throwaway PostgreSQL is started (``bench.pgserver``). The catch-up's touchpoints/s is also
printed per request of the bare aiohttp proxy loaded in the same run just before and after it
(``bench.baseline``): the figure to compare across days. Needs the ``postgres`` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from bench import at_least, entry, needs
from bench.baseline import Baseline, bare_proxy
from bench.pgserver import binaries, start_server
from gateway.events import Touchpoint, iso
from gateway.ids import Uuid7
from gateway.metrics import Metrics
from gateway.options import CentralOptions, StorageOptions
from storage.local import LocalStore

if TYPE_CHECKING:  # asyncpg (the postgres extra) is imported once ``needs`` has found it
    from storage.sync import Sync

SOURCES = ("google", "newsletter", "tiktok", "instagram", "bing", "partner")


def synthetic(n: int, ids: Uuid7, start: datetime, step_ms: int = 7) -> Touchpoint:
    moment = start + timedelta(milliseconds=n * step_ms)
    return Touchpoint(
        id=ids(int(moment.timestamp() * 1000)),
        ts=iso(moment),
        node="bench",
        visitor_key=f"{n % 50_000:032x}",
        source=SOURCES[n % len(SOURCES)],
        medium="cpc" if n % 2 else "email",
        campaign=f"spring-{n % 40}",
        content=f"ad-{n % 300}",
        click_id_kind="gclid" if n % 3 == 0 else None,
        click_id=f"Cj0KCQ{n:012d}" if n % 3 == 0 else None,
        landing_path=f"/products/{n % 500}",
        raw_params={"utm_id": str(n % 97)},
    )


async def fill(store: LocalStore, rows: int, start: datetime) -> float:
    ids = Uuid7()
    began = time.perf_counter()
    chunk = 5000
    for first in range(0, rows, chunk):
        await store.write([synthetic(n, ids, start) for n in range(first, min(first + chunk, rows))])
    return time.perf_counter() - began


async def loop_stalls(found: list[float]) -> None:
    """How late a 1 ms sleep wakes up, again and again: what a proxied request would wait."""
    loop = asyncio.get_running_loop()
    while True:
        start = loop.time()
        await asyncio.sleep(0.001)
        found.append(max(loop.time() - start - 0.001, 0.0))


async def new_database(admin_dsn: str) -> str:
    import asyncpg

    name = f"bench_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"CREATE DATABASE {name}")
        version = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    print(f"postgresql {version}, database {name}")
    return admin_dsn.rsplit("/", 1)[0] + "/" + name


async def catch_up(args: argparse.Namespace, admin_dsn: str, folder: Path, baseline: Baseline) -> None:
    import asyncpg

    from storage.sync import Sync

    dsn = await new_database(admin_dsn)
    store = LocalStore(folder / "node.db", StorageOptions(node="bench", batch_size=5000), Metrics())
    await store.open()
    try:
        seconds = await fill(store, args.rows, datetime(2026, 1, 1, tzinfo=UTC))
        print(f"local store: {args.rows:,} touchpoints written in {seconds:.2f} s")
        sync = Sync(store.path, dsn, CentralOptions(batch_size=args.batch_size), Metrics())
        await asyncio.to_thread(baseline.run, "before")
        stalls: list[float] = []
        monitor = asyncio.create_task(loop_stalls(stalls))
        began = time.perf_counter()
        delivered = await sync.once()
        seconds = time.perf_counter() - began
        monitor.cancel()
        await asyncio.gather(monitor, return_exceptions=True)
        conn = await asyncpg.connect(dsn)
        try:
            central_rows = await conn.fetchval("SELECT count(*) FROM touchpoints")
            size = await conn.fetchval("SELECT pg_total_relation_size('touchpoints')")
        finally:
            await conn.close()
        assert delivered["touchpoints"] == args.rows == central_rows, (delivered, central_rows)
        rate = args.rows / seconds
        await asyncio.to_thread(baseline.run, "after")
        print(
            f"catch-up: {args.rows:,} touchpoints in {seconds:.2f} s = {rate:,.0f} touchpoints/s "
            f"(batch {args.batch_size:,}; target >= 50,000)"
        )
        print(baseline.describe())
        print(
            f"catch-up per baseline request: {baseline.per_request(rate):,.2f} touchpoints"
            f" ({rate:,.0f} touchpoints/s ÷ the baseline's {baseline.rps:,.0f} req/s; compare this"
            " across days, not touchpoints/s)"
        )
        print(f"central size: {size / args.rows:,.0f} bytes per touchpoint (table, TOAST and indexes)")
        stalls.sort()
        p99 = stalls[int(len(stalls) * 0.99)] if stalls else 0.0
        longest = max(stalls, default=0.0)
        print(
            f"event loop during catch-up (the proxy shares it): longest stall {longest * 1000:.0f} ms, "
            f"p99 {p99 * 1000:.0f} ms"
        )
        if args.lag_seconds > 0:
            await lag_under_load(args, store, sync)
    finally:
        await store.close()


async def lag_under_load(args: argparse.Namespace, store: LocalStore, sync: Sync) -> None:
    """A steady stream of landings while the sync task runs: how far behind it stays."""
    ids = Uuid7()
    task = asyncio.create_task(sync.run())
    db = await sync.open_local()
    worst_rows, worst_seconds, samples = 0, 0.0, 0
    stop = time.perf_counter() + args.lag_seconds
    written = 0
    try:
        per_tick = max(1, int(args.load_rate / 100))
        while time.perf_counter() < stop:
            now = datetime.now(UTC)
            store.submit([synthetic(written + i, ids, now, step_ms=0) for i in range(per_tick)])
            written += per_tick
            await asyncio.sleep(0.01)
            if written % (per_tick * 10) == 0:
                lag = (await sync.publish_lag(db))["touchpoints"]
                worst_rows, worst_seconds = max(worst_rows, lag[0]), max(worst_seconds, lag[1])
                samples += 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await db.close()
    rate = written / args.lag_seconds
    print(
        f"lag under load: {rate:,.0f} touchpoints/s written for {args.lag_seconds:g} s with the sync task "
        f"running (interval 1 s): worst lag {worst_rows:,} rows, {worst_seconds:.2f} s ({samples} samples)"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sync", allow_abbrev=False, description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--rows", type=at_least(1), default=200_000, help="touchpoints to catch up (default 200,000)"
    )
    parser.add_argument(
        "--batch-size", type=at_least(1), default=2000, help="central.batch_size (default 2,000)"
    )
    parser.add_argument("--dsn", help="an existing server's DSN (a database is created on it)")
    parser.add_argument(
        "--lag-seconds",
        type=at_least(0, float),
        default=5.0,
        help="0: skip the lag-under-load phase (default 5)",
    )
    parser.add_argument(
        "--load-rate",
        type=at_least(1, float),
        default=2000.0,
        help="touchpoints/s written meanwhile (default 2,000)",
    )
    return parser.parse_args(argv)


def needs_postgres(prog: str, dsn: str | None) -> None:
    """The postgres extra, and without ``--dsn`` PostgreSQL's server binaries: exit 2 with what
    to install if either is missing (until 2026-12-07 an ``ImportError`` or a
    ``FileNotFoundError`` traceback)."""
    needs(prog, "postgres", "asyncpg")
    if dsn is None and binaries() is None:
        print(
            f"{prog}: error: needs PostgreSQL's server binaries (initdb, pg_ctl) to start a throwaway"
            " server: apt-get install postgresql, or give --dsn of a server of yours",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    needs_postgres("python -m bench.sync", args.dsn)
    print(f"bench.sync: {os.cpu_count()} cores, {args.rows:,} rows, batch {args.batch_size:,}")
    server = None if args.dsn else start_server()
    try:
        with tempfile.TemporaryDirectory() as folder, bare_proxy() as baseline:
            dsn = args.dsn if server is None else server.dsn()
            asyncio.run(catch_up(args, dsn, Path(folder), baseline))
    finally:
        if server is not None:
            server.close()


if __name__ == "__main__":
    entry(main)
