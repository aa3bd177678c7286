"""The README's Metrics table lists every metric the gateway exposes, with its labels, and no other."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import WORKER_RESTARTS, Metrics
from storage.local import BUSY_TIMEOUT_MS

ROOT = Path(__file__).resolve().parents[2]


def test_readme_lists_every_metric_with_its_labels() -> None:
    metrics = Metrics()
    exposed = {
        metric._name + ("_total" if isinstance(metric, Counter) else ""): set(metric._labelnames)
        for metric in vars(metrics).values()
        if hasattr(metric, "_labelnames")
    }
    exposed[WORKER_RESTARTS + "_total"] = {"reason"}  # the supervisor's (``count_worker_restart``)
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("\n### Metrics\n") : readme.index("\n## Operations\n")]
    listed: dict[str, set[str]] = {}
    for cell in re.findall(r"^\| (`gateway_.*?) \| ", section, re.MULTILINE):
        for name, labels in re.findall(r"`(gateway_\w+)(?:\{([^}]*)\})?`", cell):
            listed[name] = {label.strip() for label in labels.split(",")} if labels else set()
    assert len(exposed) > 20
    assert listed == exposed


def test_the_store_histograms_reach_the_slowest_commit_and_the_largest_batch() -> None:
    """A commit may wait out the busy timeout (5 s) for another connection's write lock, and a
    batch holds up to ``storage.batch_size`` events (at most 10,000). The top buckets were 1 s and
    1,024 rows: ``histogram_quantile`` read every slower commit as 1 s and every larger batch as
    1,024, so a p99 panel said "1 s" while commits took 5."""
    metrics = Metrics()
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(metrics.registry).decode())}

    def bounds(name: str) -> list[float]:
        return [float(s.labels["le"]) for s in families[name].samples if s.name == f"{name}_bucket"]

    commit = bounds("gateway_store_commit_seconds")
    assert commit[-1] == float("inf") and commit[-2] >= 2 * BUSY_TIMEOUT_MS / 1000
    assert commit[0] <= 0.001  # a commit of a few rows on a fast disk still lands in its own bucket
    rows = bounds("gateway_store_batch_rows")
    assert rows[-1] == float("inf") and rows[-2] >= 10_000
    assert rows[0] == 1
