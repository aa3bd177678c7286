"""Times every report over a synthetic store (``bench/synth.py``) and prints the figures.

``python -m bench.reports [--store FILE] [--touchpoints 1000000] [--conversions 100000]``

Without ``--store`` a store is generated in a temporary folder first (about a minute for
the default size). Each report runs as the admin API runs it (``gateway/reporting.py``
over ``storage/reports.Reports``, JSON rendering included, no HTTP), ``--repeat`` times;
the best and the median wall-clock times are printed. Nothing is asserted: measure,
compare, and put the figures in the README.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from bench.synth import END, generate
from gateway import reporting
from gateway.attribution import MODELS, Attribution
from gateway.channels import Channels
from gateway.options import AttributionOptions, ChannelsOptions
from gateway.payouts import Payouts, PayoutsOptions, TierPayout
from storage.report_pool import WHOLE, Slice
from storage.reports import Reports

SINCE = datetime(2026, 9, 1, tzinfo=UTC)


async def run(store: Path, repeat: int, models: list[str], processes: int = 0) -> list[dict[str, object]]:
    reports = Reports(store, Attribution(AttributionOptions()), Channels(ChannelsOptions()), processes)
    await reports.open()
    await reports.warm()  # as the admin API does at start: the workers are ready before the first report
    await reports.run(
        lambda: reports._pool.map(_ready, [WHOLE] * reports.processes) if reports._pool.pids else None
    )
    print(f"report processes: {len(reports._pool.pids) or 'none (every report in this process)'}")
    rules = Payouts(PayoutsOptions(default_tier="std", tiers={"std": TierPayout(cpa=5.0)}))
    q = reporting.Query(SINCE, END)
    cases: list[tuple[str, Callable[[], Awaitable[reporting.Report]]]] = []
    for model in models:
        one = reporting.Query(SINCE, END, (model,))
        cases.append(
            (
                f"attribution model={model} group_by=channel",
                lambda one=one: reporting.attribution(reports, one),
            )
        )
    every = reporting.Query(SINCE, END, tuple(MODELS))
    cases += [
        ("attribution model=all group_by=channel", lambda: reporting.attribution(reports, every)),
        (
            "attribution model=linear group_by=campaign",
            lambda: reporting.attribution(reports, reporting.Query(SINCE, END, group_by="campaign")),
        ),
        ("timeseries model=linear group_by=channel", lambda: reporting.attribution(reports, q, by_day=True)),
        ("paths", lambda: reporting.paths(reports, q)),
        (
            "payouts model=last_touch",
            lambda: reporting.payouts(reports, rules, reporting.Query(SINCE, END, ("last_touch",))),
        ),
    ]
    results = []
    try:
        for name, case in cases:
            times, rows = [], 0
            for _ in range(repeat):
                started = time.perf_counter()
                report = await case()
                report.json()
                times.append(time.perf_counter() - started)
                rows = len(report.rows)
            results.append(
                {"report": name, "best_s": min(times), "median_s": statistics.median(times), "rows": rows}
            )
            print(
                f"{name:48} best {min(times):6.2f} s  median {statistics.median(times):6.2f} s  ({rows} rows)"
            )
    finally:
        await reports.close()
    return results


def _ready(reports: Reports, part: Slice) -> None:
    """Nothing: waits until a worker has started."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reports", description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, help="an existing store (default: generate one)")
    parser.add_argument("--touchpoints", type=int, default=1_000_000)
    parser.add_argument("--conversions", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--processes",
        type=int,
        default=0,
        help="admin.report_processes: 0 one per CPU core (the default), 1 none",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store
        if store is None:
            store = Path(tmp) / "synth.db"
            started = time.perf_counter()
            counts = generate(store, args.touchpoints, args.conversions, args.seed)
            print(
                f"generated {counts.touchpoints:,} touchpoints, {counts.conversions:,} conversions, "
                f"{counts.identities:,} bindings in {time.perf_counter() - started:.0f} s"
            )
        results = asyncio.run(run(store, args.repeat, args.models, args.processes))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
