"""Host benchmark: the gateway inside mitmproxy (``addons/mitm.py``) against our aiohttp host.

``python -m bench.mitm [--seconds S] [--concurrency C] [--json FILE]`` starts the
bench origin, the bare aiohttp reverse proxy every benchmark compares against
(``bench.servers bare``), the aiohttp gateway (``bench.servers gateway``),
``mitmdump --mode reverse:ORIGIN -s addons/mitm.py`` with the same options, and a
bare ``mitmdump`` (no addon: mitmproxy's own cost), each in its own process, then
loads each in turn with ``bench.load`` (plain and landing scenarios) and prints
req/s, latency and CPU per request, and each host's req/s as a ratio of the bare
proxy's. Needs the ``mitm`` extra. It reports; it never fails on timing.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import at_least, entry, needs
from bench.ports import TRIES, free_port, port_taken
from bench.proxy import ROOT, Row, Server, measure, start_server, stop_process
from bench.servers import gateway_toml

HOSTS = ("gateway", "mitm", "mitm-bare")
"""Our aiohttp host, mitmdump with our addon, and mitmdump alone (what mitmproxy itself costs)."""
TARGETS = ("bare", *HOSTS)
"""The bare aiohttp proxy first: each host's req/s is printed as a ratio of its."""
ENV = {"GATEWAY_SECRET": "s" * 40, "GATEWAY_ADMIN_TOKEN": "t" * 40}


def start_mitmdump(
    upstream: str, store: Path, *, addon: bool = True, timeout: float = 30.0, port: int | None = None
) -> Server:
    """``mitmdump`` in reverse mode (with our addon and a store in ``store``, or bare); waits
    until it listens. ``port`` is the first one tried (a test's); by default one drawn below the
    kernel's ephemeral range. A port another process took before mitmdump bound it is said on
    stderr and another is tried (``bench.ports``)."""
    kind = "mitm" if addon else "mitm-bare"
    config = store / "mitm.toml"
    config.write_text(gateway_toml(store).replace("gateway.db", "mitm.db"))
    script = ["-s", str(ROOT / "addons" / "mitm.py"), "--set", f"gateway_config={config}"] if addon else []
    taken: list[int] = []
    for attempt in range(TRIES):
        port = port if port is not None and not attempt else free_port()
        command = [
            str(Path(sys.executable).parent / "mitmdump"),
            "--mode", f"reverse:{upstream}", *script, "--set", f"confdir={store / 'mitmconf'}",
            "--listen-host", "127.0.0.1", "--listen-port", str(port), "-q",
        ]  # fmt: skip
        # Its log lines (with -q, errors only: a port taken, for one) go to stdout; kept in a file.
        output = store / f"{kind}-{attempt}.out"
        with output.open("w") as file:
            process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **ENV}, stdout=file, text=True)
        if _listening(process, port, timeout):
            return Server(kind, process, port)
        stop_process(process)
        said = output.read_text(errors="replace")
        sys.stderr.write(said)
        if not port_taken(said):
            raise RuntimeError(f"mitmdump did not start (exit code {process.returncode})")
        taken.append(port)
        print(
            f"mitmdump: port {port} was taken by another process before it bound it;"
            f" {'trying another' if attempt + 1 < TRIES else 'giving up'}",
            file=sys.stderr,
            flush=True,
        )
    raise RuntimeError(f"mitmdump did not start: ports {', '.join(map(str, taken))} were all taken")


def _listening(process: subprocess.Popen[str], port: int, timeout: float) -> bool:
    """Whether ``process`` listens on ``port`` within ``timeout`` (False once it has exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            time.sleep(0.1)
            continue
        return process.poll() is None
    return False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.mitm", allow_abbrev=False, description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--seconds", type=at_least(0.001, float), default=5.0, help="measured seconds per run (default 5)"
    )
    parser.add_argument(
        "--warmup",
        type=at_least(0, float),
        default=1.0,
        help="unmeasured seconds before each run (default 1)",
    )
    parser.add_argument(
        "--concurrency", type=at_least(1), default=32, help="keep-alive connections (default 32)"
    )
    parser.add_argument(
        "--max-requests",
        type=at_least(1),
        default=1_000_000,
        help="request bound per run (default 1,000,000)",
    )
    parser.add_argument("--scenarios", nargs="+", choices=("plain", "first_visit", "landing"),
                        default=["plain", "landing"], help="(default: plain landing)")  # fmt: skip
    parser.add_argument("--json", metavar="FILE", default="", help="also write the results here")
    args = parser.parse_args(argv)
    if args.json and not Path(args.json).resolve().parent.is_dir():
        parser.error(f"--json: no folder {Path(args.json).resolve().parent} to write {args.json} in")
    needs("python -m bench.mitm", "mitm", "mitmproxy")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="gw-bench-mitm-") as tmp:
        store = Path(tmp)
        started: list[Server] = []
        try:
            origin = start_server("origin")
            started.append(origin)
            started.append(start_server("bare", "--upstream", origin.url))
            started.append(start_server("gateway", "--upstream", origin.url, "--store", str(store)))
            started.append(start_mitmdump(origin.url, store))
            started.append(start_mitmdump(origin.url, store, addon=False))
            running = {s.kind: s for s in started}
            for scenario in args.scenarios:
                for target in TARGETS:
                    row = measure(running, target, scenario, args)
                    rows.append(row)
                    print(f"  {scenario:<8} {target:<8} {row.rps:8.0f} req/s", file=sys.stderr, flush=True)
        finally:
            for server in reversed(started):
                stop_process(server.process)
    print(f"\n{args.seconds:g} s per run after {args.warmup:g} s warm-up, concurrency {args.concurrency}")
    header = ("scenario", "host", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "errors")
    print("{:<11} {:<10} {:>8} {:>8} {:>8} {:>10} {:>7}".format(*header))
    for r in rows:
        cpu = "n/a" if r.proxy_cpu_us is None else f"{r.proxy_cpu_us:.0f}"
        latency = f"{r.p50_ms:>8.2f} {r.p99_ms:>8.2f}"
        print(f"{r.scenario:<11} {r.target:<10} {r.rps:>8.0f} {latency} {cpu:>10} {r.errors:>7}")
    ratios = host_ratios(rows)
    print(f"\n{'scenario':<11} {'host':<10} {'host/bare':>9}")
    for ratio in ratios:
        print(f"{ratio['scenario']:<11} {ratio['host']:<10} {ratio['ratio']:>8.2f}x")
    if args.json:
        runs = [asdict(r) for r in rows]
        Path(args.json).write_text(json.dumps({"runs": runs, "ratios": ratios}, indent=2) + "\n")


def host_ratios(rows: list[Row]) -> list[dict[str, Any]]:
    """Each host's req/s over the bare aiohttp proxy's, per scenario."""
    bare = {r.scenario: r.rps for r in rows if r.target == "bare"}
    return [
        {
            "scenario": r.scenario,
            "host": r.target,
            "ratio": r.rps / bare[r.scenario] if bare[r.scenario] else 0.0,
        }
        for r in rows
        if r.target in HOSTS and r.scenario in bare
    ]


if __name__ == "__main__":
    entry(main)
