"""The benchmark still runs end to end (a tiny, bounded run on loopback; figures not checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_runs_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.proxy", "--seconds", "0.3", "--warmup", "0", "--concurrency", "4",
         "--scenarios", "plain", "landing", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "gateway/bare" in done.stdout
    results = json.loads(out.read_text())
    assert results


def test_report_bench_runs_on_a_small_synthetic_store(tmp_path: Path) -> None:
    store = tmp_path / "synth.db"
    made = subprocess.run(
        [sys.executable, "-m", "bench.synth", str(store), "--touchpoints", "3000", "--conversions", "300",
         "--verdicts"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr[-2000:]
    assert "3,000 touchpoints" in made.stdout
    out = tmp_path / "reports.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.reports", "--store", str(store), "--repeat", "1", "--models", "linear",
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    results = {r["report"]: r for r in json.loads(out.read_text())}
    assert results["attribution model=linear group_by=channel"]["rows"] > 0
    assert results["payouts model=last_touch"]["rows"] > 0
