"""Instruction-count benchmark: CPU instructions a request costs the gateway and the bare proxy.

``python -m bench.instructions [--requests N] [--warmup W] [--scenarios landing plain signed_event]
[--targets gateway bare] [--keep DIR] [--calls]``

Time-based runs (``bench.proxy``) drift by more than a few µs a request on a shared 2-core
machine; instructions do not. This starts the origin (``bench.servers origin``, not measured),
then each proxy in turn in ONE process under ``valgrind --tool=callgrind`` (the gateway with
``bench.proxy``'s config: default options, ``durability = "commit"``, a fresh store; the bare
aiohttp proxy ``bench.proxy`` compares against). For each scenario it sends ``--warmup``
requests, zeroes callgrind's counters (``callgrind_control --zero``), sends ``--requests``
identical-shaped requests one at a time on one keep-alive connection from this process (not
under valgrind), dumps (``callgrind_control --dump``) and prints instructions a request (every
thread of the proxy's process: the event loop and the SQLite writer) and bare/gateway.

``signed_event`` is a sender's signed webhook: ``POST /_gw/events``, one conversion (a user ID, an
order ID, a value), signed as Standard Webhooks sign (``webhook-id``, ``webhook-timestamp``,
``webhook-signature``), each request a new delivery and a new event and order, so each is
verified, checked against the receipts, recorded and committed before its 202 (none is a
``duplicate``; any other answer fails the run). The gateway gets a ``[[sources]]`` entry for it
(``SOURCE_TOML``) when the scenario is asked for. The bare proxy forwards the same POST to the
origin, whose page answers it: the control, what any proxy pays to carry such a request.

One request at a time keeps the run deterministic: every landing is its own store commit (a
batch of one, where ``bench.proxy``'s 32 connections commit ~32 rows at once), so a landing's
figure includes a whole commit's fixed cost. Instructions are not time: cache misses, system
calls and the kernel's work are not counted, and the ratio is not ``bench.proxy``'s throughput
ratio. The figure moves by a few hundred instructions a request between runs of the same code
(timers that fire by the clock, the store's background job).

``--calls`` runs the gateway under cProfile instead (no valgrind) and prints each Python
function's calls a request, exact: the same run twice, ``--requests`` and twice as many, and
the difference divided by ``--requests``, so start-up and warm-up drop out. Diff two
commits' outputs for Python-level attribution (callgrind shows CPython's C functions).

Everything listens on 127.0.0.1; every server is stopped on the way out, error or not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from bench import entry
from bench.load import BROWSER_HEADERS, _read_response, visitor_cookie
from bench.proxy import ROOT, Server, _wait_ready, start_server, stop_process
from bench.servers import HOST, WEBHOOK_SECRET, WEBHOOK_SECRET_ENV, config_problems, gateway_toml
from gateway.signing import standard_signature

SCENARIOS = ("landing", "plain", "first_visit", "signed_event")
SOURCE_TOML = f'[[sources]]\nname = "bench"\nsecrets = ["env:{WEBHOOK_SECRET_ENV}"]\n'
"""The sender the ``signed_event`` scenario signs as, added to the gateway's config for it."""
ACCEPTED = 202
"""The events endpoint's answer to a delivery it recorded (a ``duplicate`` is a 200)."""
TARGETS = ("gateway", "bare")
VALGRIND_START_TIMEOUT = 600.0
"""Start-up under callgrind is some 50 times slower (imports, the crawler patterns' compile)."""


def target_factory(scenario: str, run: str) -> Callable[[int], str]:
    """The n-th request's target: landings as ``bench.load``'s, every one its own
    ``utm_content`` (a new touchpoint), of one length; other scenarios ``/page``."""
    if scenario == "landing":
        return lambda n: (
            f"/page?utm_source=news&utm_medium=email&utm_campaign=c{n % 50:02d}&utm_content={run}-{n:07d}"
        )
    return lambda n: "/page"


def signed_event(host: str, run: str, n: int) -> bytes:
    """The n-th signed delivery (``host``: its ``Host`` line): a conversion of its own (event,
    order and delivery IDs from ``run`` and ``n``, of one length), signed now, as a sender does."""
    body = json.dumps(
        {"type": "conversion", "event_id": f"evt-{run}-{n:07d}", "user_id": f"user-{n % 300:03d}",
         "order_id": f"ord-{run}-{n:07d}", "value": 49.0, "currency": "EUR"},
        separators=(",", ":"),
    ).encode()  # fmt: skip
    delivery, stamp = f"msg-{run}-{n:07d}", str(int(time.time()))
    signature = standard_signature(WEBHOOK_SECRET.encode(), delivery, stamp, body)
    head = (
        f"POST /_gw/events HTTP/1.1\r\n{host}User-Agent: bench-sender/1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"webhook-id: {delivery}\r\nwebhook-timestamp: {stamp}\r\nwebhook-signature: {signature}\r\n\r\n"
    )
    return head.encode() + body


async def send(
    port: int, scenario: str, run: str, first: int, count: int, expected: int | None = None
) -> int:
    """Send ``count`` requests (numbered from ``first``) one at a time on one keep-alive
    connection; the number of answers that were not 2xx/3xx (not ``expected``, when given)."""
    target = target_factory(scenario, run)
    host = f"Host: {HOST}:{port}\r\n"
    if scenario == "plain":  # a returning visitor: the cookie a first page load set
        host += await visitor_cookie(port)
    reader, writer = await asyncio.open_connection(HOST, port)
    bad = 0
    try:
        for n in range(first, first + count):
            if scenario == "signed_event":
                writer.write(signed_event(host, run, n))
            else:
                writer.write(f"GET {target(n)} HTTP/1.1\r\n{host}{BROWSER_HEADERS}\r\n".encode())
            status, keep = await _read_response(reader)
            bad += status != expected if expected is not None else not 200 <= status < 400
            if not keep:
                writer.close()
                reader, writer = await asyncio.open_connection(HOST, port)
    finally:
        writer.close()
    return bad


def requests(
    port: int,
    scenario: str,
    run: str,
    first: int,
    count: int,
    connections: int = 1,
    expected: int | None = None,
) -> None:
    """``count`` requests over ``connections`` keep-alive connections at once (each one at a
    time), numbered from ``first`` without a gap or a repeat; each answered 2xx/3xx, or
    ``expected`` when given."""

    async def all_of_them() -> int:
        shares = [count // connections + (i < count % connections) for i in range(connections)]
        starts = [first + sum(shares[:i]) for i in range(connections)]
        sent = [send(port, scenario, run, s, n, expected) for s, n in zip(starts, shares, strict=True) if n]
        return sum(await asyncio.gather(*sent))

    bad = asyncio.run(all_of_them())
    if bad:
        answer = f"{expected}" if expected is not None else "2xx/3xx"
        raise RuntimeError(f"{bad} of {count} {scenario} requests were not answered {answer}")


def expected_status(kind: str, scenario: str) -> int | None:
    """The one status a request of ``scenario`` to the ``kind`` proxy must get, if only one will
    do: the gateway's 202 for a signed event it recorded (a 200 would be a ``duplicate``)."""
    return ACCEPTED if kind == "gateway" and scenario == "signed_event" else None


def gateway_extra(args: argparse.Namespace) -> str:
    """The gateway's extra config: ``--gateway-toml``, and the sender ``signed_event`` signs as."""
    return args.gateway_toml + ("\n" + SOURCE_TOML if "signed_event" in args.scenarios else "")


def callgrind_control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True, timeout=120)


def dumped_instructions(out: Path, label: str) -> int:
    """The instruction count of the dump named ``label`` (its ``summary:`` line)."""
    for path in sorted(out.parent.glob(out.name + ".*")):
        text = path.read_text(errors="replace")
        if f"desc: Trigger: Client Request: {label}" in text or f"desc: Trigger: dump {label}" in text:
            found = re.search(r"^summary: (\d+)", text, re.M)
            if found:
                return int(found.group(1))
    raise RuntimeError(f"no callgrind dump {label!r} next to {out}")


@contextmanager
def proxy_server(
    kind: str, upstream: str, work: Path, toml: str, wrapper: Sequence[str], profile: str = ""
) -> Iterator[Server]:
    """One proxy process (``bench.servers KIND``), under ``wrapper`` (valgrind) if given."""
    args = ["--upstream", upstream]
    if kind == "gateway":
        store = work / "store"
        if store.exists():
            shutil.rmtree(store)
        store.mkdir()
        args += ["--store", str(store)] + (["--toml", toml] if toml else [])
    if profile:
        args += ["--profile", profile]
    env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict layouts and string hashes each run
    errors = work / f"{kind}.stderr"  # valgrind's chatter, and the server's own
    with errors.open("w") as err:
        process = subprocess.Popen(
            [*wrapper, sys.executable, "-m", "bench.servers", kind, *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=err if wrapper else None,
            text=True,
            env=env,
        )
    try:
        server = _wait_ready(
            kind,
            process,
            lambda line: int(line.split()[1]) if line.startswith("PORT ") else None,
            VALGRIND_START_TIMEOUT,
        )
    except RuntimeError as failed:
        raise RuntimeError(f"{failed}: {errors.read_text()[-2000:]}") from failed
    try:
        yield server
    finally:
        stop_process(server.process)


def measure(kind: str, upstream: str, work: Path, args: argparse.Namespace, run: str) -> dict[str, float]:
    """Instructions a request for each scenario, one callgrind process for all of them."""
    out = work / f"callgrind.{kind}"
    wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no"]
    figures: dict[str, float] = {}
    with proxy_server(kind, upstream, work, gateway_extra(args), wrapper) as server:
        pid = server.process.pid
        for scenario in args.scenarios:
            print(f"  {kind}: {scenario} ...", file=sys.stderr, flush=True)
            expected = expected_status(kind, scenario)
            requests(server.port, scenario, run, 0, args.warmup, args.concurrency, expected)
            callgrind_control(pid, "--zero")
            requests(server.port, scenario, run, args.warmup, args.requests, args.concurrency, expected)
            callgrind_control(pid, f"--dump={scenario}")
            figures[scenario] = dumped_instructions(out, scenario) / args.requests
    if args.keep:
        keep = Path(args.keep)
        keep.mkdir(parents=True, exist_ok=True)
        for path in work.glob(f"callgrind.{kind}.*"):
            shutil.copy(path, keep / path.name)
    return figures


def profile_calls(upstream: str, work: Path, args: argparse.Namespace, run: str) -> dict[str, float]:
    """cProfile's calls a landing (or the first scenario's request) per Python function, exact."""
    scenario = args.scenarios[0]
    counts: list[dict[str, int]] = []
    for count in (args.requests, 2 * args.requests):
        prof = work / f"calls-{count}.prof"
        with proxy_server("gateway", upstream, work, gateway_extra(args), (), str(prof)) as server:
            expected = expected_status("gateway", scenario)
            requests(server.port, scenario, run, 0, args.warmup + count, args.concurrency, expected)
        stats = pstats.Stats(str(prof)).stats  # type: ignore[attr-defined]
        counts.append(
            {f"{file}:{line}({name})": calls for (file, line, name), (_, calls, *_) in stats.items()}
        )
    names = set(counts[0]) | set(counts[1])
    return {name: (counts[1].get(name, 0) - counts[0].get(name, 0)) / args.requests for name in names}


def print_calls(calls: dict[str, float]) -> None:
    root = str(ROOT) + "/"
    print(f"{'calls a request':>15}  function")
    for name, per in sorted(calls.items(), key=lambda item: (-item[1], item[0])):
        if abs(per) >= 0.01:
            print(f"{per:>15.2f}  {name.replace(root, '')}")


def print_report(figures: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    print(
        f"\ninstructions a request (callgrind, every thread of the proxy's process; "
        f"{args.requests} requests after {args.warmup} warm-up, {_spread(args.concurrency)})\n"
    )
    print(f"{'scenario':<12} " + " ".join(f"{t:>12}" for t in args.targets) + f" {'bare/gateway':>13}")
    for scenario in args.scenarios:
        cells = [figures[t].get(scenario) for t in args.targets]
        shown = " ".join(f"{c:>12,.0f}" if c is not None else f"{'n/a':>12}" for c in cells)
        gw, bare = figures.get("gateway", {}).get(scenario), figures.get("bare", {}).get(scenario)
        ratio = f"{bare / gw:>12.3f}x" if gw and bare else f"{'':>13}"
        print(f"{scenario:<12} {shown} {ratio}")


def _spread(connections: int) -> str:
    if connections == 1:
        return "one at a time"
    return f"{connections} connections at once, one request at a time on each"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.instructions", allow_abbrev=False, description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--requests", type=int, default=1000, help="measured requests a scenario (1000)")
    parser.add_argument("--warmup", type=int, default=200, help="requests before counting starts (200)")
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=["landing", "plain"])
    parser.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS))
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        metavar="N",
        help="keep-alive connections sending at once (1; bench.proxy uses 32: commits of many landings)",
    )
    parser.add_argument("--gateway-toml", metavar="TOML", default="", help="extra gateway config (ablations)")
    parser.add_argument("--keep", metavar="DIR", default="", help="copy the callgrind dumps here")
    parser.add_argument(
        "--calls", action="store_true", help="cProfile's calls a request instead (gateway, first scenario)"
    )
    args = parser.parse_args(argv)
    if args.requests < 1 or args.warmup < 0 or args.concurrency < 1:
        parser.error("--requests and --concurrency must be ≥ 1, --warmup ≥ 0")
    extra = gateway_extra(args)
    if extra and (problems := config_problems(lambda d: gateway_toml(d, extra))):
        parser.error(f"--gateway-toml: {'; '.join(problems)}")
    if not args.calls and shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (the Debian package `valgrind`)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    run = "run0"  # every process starts with a fresh store: the same targets each run
    with tempfile.TemporaryDirectory(prefix="gw-instr-") as tmp:
        work = Path(tmp)
        origin = start_server("origin")
        try:
            if args.calls:
                print_calls(profile_calls(origin.url, work, args, run))
                return
            figures = {t: measure(t, origin.url, work, args, run) for t in args.targets}
        finally:
            stop_process(origin.process)
    print_report(figures, args)


if __name__ == "__main__":
    entry(main)
