"""Backfill benchmark: ``gateway import`` throughput on a synthetic log (``bench/synthlog.py``).

``python -m bench.import [--lines N] [--format combined|json-lines] [--gzip] [--workers W] [--json FILE]``
generates N lines in a temp folder, imports them into a fresh store (first
pass: every touchpoint new), imports them again (second pass: all duplicates,
nothing written), and prints lines/s by wall clock and by CPU time, worker
processes included (the steadier figure on a shared machine). Target: ≥ 50,000
lines/s. Beside them, each pass's lines/s ÷ the req/s of the bare aiohttp proxy loaded in the
same run before and after the passes (``bench.baseline``): lines per baseline request, the
figure that stays comparable across days.
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
from gateway.config import load_settings
from gateway.importrun import run_import

TARGET = 50_000
ENV = {"GATEWAY_SECRET": "s" * 40, "GATEWAY_ADMIN_TOKEN": "t" * 40}


def _cpu() -> float:
    """CPU seconds of this process and of its ended children (the import's worker processes)."""
    usage = os.times()
    return usage.user + usage.system + usage.children_user + usage.children_system


def one_pass(settings: object, log: Path, fmt: str, workers: int) -> dict[str, float]:
    started, cpu = time.perf_counter(), _cpu()
    with asyncio.Runner(loop_factory=new_loop) as runner:
        summary = runner.run(run_import(settings, [log], fmt, host=HOST, workers=workers))  # type: ignore[arg-type]
    wall, cpu = time.perf_counter() - started, _cpu() - cpu
    new = summary.new_rows or {}
    return {
        "lines": summary.lines,
        "touchpoints": summary.events["touchpoints"],
        "new_touchpoints": new.get("touchpoints", 0),
        "skipped": sum(summary.skipped.values()),
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "lines_per_s_wall": round(summary.lines / wall),
        "lines_per_s_cpu": round(summary.lines / cpu),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.import", description=__doc__.split("\n\n")[0])
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
        baseline.run("before")
        passes = {name: one_pass(settings, log, args.format, args.workers) for name in ("first", "again")}
        baseline.run("after")
    for r in passes.values():
        r["lines_per_baseline_request"] = round(baseline.per_request(r["lines_per_s_wall"]), 3)
    gz = " (gzip)" if args.gzip else ""
    print(f"{args.lines:,} {args.format} lines{gz}, {args.workers} worker(s); target {TARGET:,} lines/s")
    print(baseline.describe())
    print(
        f"{'pass':<6} {'lines/s wall':>13} {'lines/s CPU':>12} {'touchpoints':>12} {'new':>8} {'wall s':>7}"
        f" {'lines/baseline req':>18}"
    )
    for name, r in passes.items():
        print(
            f"{name:<6} {r['lines_per_s_wall']:>13,} {r['lines_per_s_cpu']:>12,} {r['touchpoints']:>12,} "
            f"{r['new_touchpoints']:>8,} {r['wall_s']:>7.2f} {r['lines_per_baseline_request']:>18.2f}"
        )
    print("(lines/baseline req: lines/s wall ÷ the baseline's req/s; compare this across days, not lines/s)")
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
