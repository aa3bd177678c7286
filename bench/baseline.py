"""The same-run reference of the benchmarks that do not load the bare proxy themselves.

``bench.proxy`` and ``bench.mitm`` load a bare aiohttp reverse proxy beside what they measure
and print ratios to it; the others (``bench.reports``, ``bench.import``, ``bench.sync``,
``bench.bots``, ``bench.loopstall``) measure work of another kind (report seconds, lines/s,
rows/s, µs a request, stalls). So that their figures can be compared across days, as absolute
times on a shared machine drift, each runs the same baseline ``bench.proxy`` does
(``bench.servers origin`` and ``bench.servers bare``, each in its own process, loaded by
``bench.load`` over loopback) for a fixed, short workload: ``REQUESTS`` plain requests on
``CONCURRENCY`` keep-alive connections after ``WARMUP`` seconds, once before the measured work
and once after it, and prints the two beside its figures, with its figures as ratios of the
baseline: seconds per baseline second (the time the baseline took for those requests), or a
rate per baseline request (its rate ÷ the baseline's req/s). The mean of the two baseline runs
is the reference; how far apart they are says how much the machine drifted meanwhile.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from bench.proxy import Server, run_load, start_server, stop_process

REQUESTS = 2000
"""Requests of each baseline run (measured after the warm-up): about a quarter of a second."""
CONCURRENCY = 8
WARMUP = 0.2
"""Seconds of requests before the measured ones: connections open, the servers' caches warm."""
DEADLINE = 60.0
"""A baseline run that has not answered ``REQUESTS`` by then is a failed one."""


@dataclass
class Baseline:
    """The bare proxy's runs of one benchmark: seconds for ``REQUESTS`` requests, each."""

    server: Server | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    """``before`` and ``after``: wall seconds for the ``REQUESTS`` measured requests."""

    def run(self, when: str) -> float:
        """One baseline run (``when``: ``before`` or ``after`` the measured work); its seconds."""
        assert self.server is not None, "the baseline's servers are not running"
        settings = argparse.Namespace(
            seconds=DEADLINE, concurrency=CONCURRENCY, warmup=WARMUP, max_requests=REQUESTS
        )
        result = run_load(self.server.port, "plain", settings)
        if result["requests"] < REQUESTS or result["errors"]:
            raise RuntimeError(
                f"the baseline (bare aiohttp proxy) answered {result['requests']} of {REQUESTS}"
                f" requests in {DEADLINE:g} s, {result['errors']} of them errors: {result['statuses']}"
            )
        self.seconds[when] = float(result["seconds"])
        return self.seconds[when]

    @property
    def mean_seconds(self) -> float:
        """The reference: the mean of the runs' seconds."""
        return sum(self.seconds.values()) / len(self.seconds)

    @property
    def rps(self) -> float:
        """The reference's requests a second."""
        return REQUESTS / self.mean_seconds

    def times(self, seconds: float) -> float:
        """``seconds`` of measured work per baseline second (``REQUESTS`` proxied requests')."""
        return seconds / self.mean_seconds

    def per_request(self, rate: float) -> float:
        """A rate (lines/s, rows/s) per baseline request: ``rate`` ÷ the baseline's req/s."""
        return rate / self.rps

    def describe(self) -> str:
        """One line: the workload, each run's seconds and req/s, and how far apart they are."""
        runs = ", ".join(f"{s:.3f} s {when} ({REQUESTS / s:,.0f} req/s)" for when, s in self.seconds.items())
        drift = ""
        if {"before", "after"} <= set(self.seconds):
            drift = f"after/before {self.seconds['after'] / self.seconds['before']:.2f}, "
        return (
            f"baseline (bare aiohttp proxy, same run): {REQUESTS:,} requests on {CONCURRENCY} connections,"
            f" {runs}: {drift}mean {self.mean_seconds:.3f} s"
        )

    def as_json(self) -> dict[str, object]:
        return {
            "requests": REQUESTS,
            "concurrency": CONCURRENCY,
            "seconds": dict(self.seconds),
            "mean_seconds": self.mean_seconds,
            "rps": self.rps,
        }


@contextmanager
def bare_proxy() -> Iterator[Baseline]:
    """The origin and the bare proxy of ``bench.proxy`` (loopback, ports of their own), running
    until the block ends, error or not; ``Baseline.run`` loads them."""
    started: list[Server] = []
    try:
        origin = start_server("origin")
        started.append(origin)
        started.append(start_server("bare", "--upstream", origin.url))
        yield Baseline(started[-1])
    finally:
        for server in reversed(started):
            stop_process(server.process)
