"""Backfill benchmark: ``gateway import`` throughput on a synthetic log (``bench/synthlog.py``).

``python -m bench.import [--lines N] [--format combined|json-lines] [--gzip] [--workers W] [--json FILE]``
generates N lines in a temp folder and makes an empty store (migrated, no row), then runs
``gateway import`` four times: a dry run against the empty store (``dry-empty``: every row
checked, found new, nothing written), a real import (``first``: every touchpoint new), the real
import again (``again``: all duplicates, nothing written) and a dry run against the store that
now holds every row (``dry-stored``: each found there). It prints lines/s by wall clock and by
CPU time, worker processes included (the steadier figure on a shared machine), and each dry
run's wall-clock rate as a share of the real run's beside it (``dry-empty`` of ``first``,
``dry-stored`` of ``again``). Target: ≥ 50,000 lines/s for the first pass. Beside them, each
pass's lines/s ÷ the req/s of the bare aiohttp proxy loaded in the same run before and after
the passes (``bench.baseline``): lines per baseline request, the figure that stays comparable
across days.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from bench import at_least, entry
from bench.baseline import bare_proxy
from bench.servers import new_loop
from bench.synthlog import HOST, write_log
from gateway.config import Settings, load_settings
from gateway.importrun import run_import
from gateway.metrics import Metrics
from storage.local import LocalStore

TARGET = 50_000
PASSES = (("dry-empty", True), ("first", False), ("again", False), ("dry-stored", True))
"""Each pass, in the order run, and whether it is a dry run (``--dry-run``)."""
DRY_OF = {"dry-empty": "first", "dry-stored": "again"}
"""Each dry run, and the real run it checks the same store as: a dry run of an empty store
against the import into one, of a store holding the rows against the import of them again."""
ENV = {"GATEWAY_SECRET": "s" * 40, "GATEWAY_ADMIN_TOKEN": "t" * 40}


def _cpu() -> float:
    """CPU seconds of this process and of its ended children (the import's worker processes)."""
    usage = os.times()
    return usage.user + usage.system + usage.children_user + usage.children_system


def empty_store(settings: Settings) -> None:
    """The store made as the gateway makes it (migrated, WAL), holding no row."""

    async def make() -> None:
        store = LocalStore(settings.store_path, settings.options.storage, Metrics())
        await store.open()
        await store.close()

    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(make())


def one_pass(
    settings: Settings, log: Path, fmt: str, workers: int, dry_run: bool = False
) -> dict[str, float]:
    started, cpu = time.perf_counter(), _cpu()
    with asyncio.Runner(loop_factory=new_loop) as runner:
        summary = runner.run(run_import(settings, [log], fmt, host=HOST, workers=workers, dry_run=dry_run))
    wall, cpu = time.perf_counter() - started, _cpu() - cpu
    # A dry run's ``new``: the rows a real run would add (it checks each against the store).
    new = (summary.would_add if dry_run else summary.new_rows) or {}
    return {
        "dry_run": dry_run,
        "lines": summary.lines,
        "touchpoints": summary.events["touchpoints"],
        "new_touchpoints": new.get("touchpoints", 0),
        "already_touchpoints": summary.already.get("touchpoints", 0),
        "skipped": sum(summary.skipped.values()),
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "lines_per_s_wall": round(summary.lines / wall),
        "lines_per_s_cpu": round(summary.lines / cpu),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.import", allow_abbrev=False, description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--lines", type=at_least(1), default=500_000, help="log lines (default 500,000)")
    parser.add_argument(
        "--format", choices=("combined", "json-lines"), default="combined", help="(default combined)"
    )
    parser.add_argument("--gzip", action="store_true", help="a gzip-compressed log")
    parser.add_argument(
        "--workers",
        type=at_least(1),
        default=1,
        help="import processes (gateway import --workers; default 1)",
    )
    parser.add_argument("--json", metavar="FILE", default="", help="also write the figures here")
    args = parser.parse_args(argv)
    if args.json and not Path(args.json).resolve().parent.is_dir():
        parser.error(f"--json: no folder {Path(args.json).resolve().parent} to write {args.json} in")
    with tempfile.TemporaryDirectory(prefix="gw-import-bench-") as tmp, bare_proxy() as baseline:
        folder = Path(tmp)
        log = write_log(folder / "access.log", args.lines, args.format, compress=args.gzip)
        settings = load_settings(
            None, text=f'[storage]\npath = "{folder / "gw.db"}"\nnode = "bench"\n', environ=ENV
        )
        empty_store(settings)
        baseline.run("before")
        passes = {name: one_pass(settings, log, args.format, args.workers, dry) for name, dry in PASSES}
        baseline.run("after")
    for r in passes.values():
        r["lines_per_baseline_request"] = round(baseline.per_request(r["lines_per_s_wall"]), 3)
    for dry, real in DRY_OF.items():
        passes[dry]["of_real_run"] = round(
            passes[dry]["lines_per_s_wall"] / passes[real]["lines_per_s_wall"], 3
        )
    gz = " (gzip)" if args.gzip else ""
    print(f"{args.lines:,} {args.format} lines{gz}, {args.workers} worker(s); target {TARGET:,} lines/s")
    print(baseline.describe())
    print(
        f"{'pass':<10} {'lines/s wall':>13} {'lines/s CPU':>12} {'touchpoints':>12} {'new':>8} {'wall s':>7}"
        f" {'lines/baseline req':>18} {'of real run':>11}"
    )
    for name, r in passes.items():
        share = f"{r['of_real_run']:>11.2f}" if "of_real_run" in r else f"{'':>11}"
        print(
            f"{name:<10} {r['lines_per_s_wall']:>13,} {r['lines_per_s_cpu']:>12,} {r['touchpoints']:>12,} "
            f"{r['new_touchpoints']:>8,} {r['wall_s']:>7.2f} {r['lines_per_baseline_request']:>18.2f} {share}"
        )
    print("(lines/baseline req: lines/s wall ÷ the baseline's req/s; compare this across days, not lines/s)")
    print(
        "(dry-empty, dry-stored: gateway import --dry-run against the empty store, then against the"
        " store holding every row; new: the touchpoints it would add; of real run: its lines/s wall"
        " ÷ first's, again's)"
    )
    met = passes["first"]["lines_per_s_wall"] >= TARGET
    print(f"first pass: {'met' if met else 'NOT met'} (wall clock)", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"lines": args.lines, "format": args.format, **passes, "baseline": baseline.as_json()},
                indent=2,
            )
        )


if __name__ == "__main__":
    entry(main)
