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
