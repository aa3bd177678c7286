"""The README's Metrics table lists every metric the gateway exposes, with its labels, and no other."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import Counter

from gateway.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]


def test_readme_lists_every_metric_with_its_labels() -> None:
    metrics = Metrics()
    exposed = {
        metric._name + ("_total" if isinstance(metric, Counter) else ""): set(metric._labelnames)
        for metric in vars(metrics).values()
        if hasattr(metric, "_labelnames")
    }
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("\n### Metrics\n") : readme.index("\n## Operations\n")]
    listed: dict[str, set[str]] = {}
    for cell in re.findall(r"^\| (`gateway_.*?) \| ", section, re.MULTILINE):
        for name, labels in re.findall(r"`(gateway_\w+)(?:\{([^}]*)\})?`", cell):
            listed[name] = {label.strip() for label in labels.split(",")} if labels else set()
    assert len(exposed) > 20
    assert listed == exposed
