"""A small keep-alive HTTP/1.1 load generator, meant to run in its own process.

``python -m bench.load --port N --scenario plain|landing --seconds S --concurrency C``
opens C keep-alive connections to 127.0.0.1:N; each sends one request at a time
(closed loop) until the time or request bound is reached. Requests finishing
in the first ``--warmup`` seconds are not counted. Prints one JSON object:
requests, errors, seconds, requests/s and latency percentiles in ms.

It speaks raw HTTP/1.1 over asyncio streams (uvloop when available) rather
than through aiohttp's client, so the load generator spends as little of the
machine's two cores as it can; it understands Content-Length, chunked and
close-delimited bodies, which is all a proxy in front of a small page sends.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from bench.servers import HOST, new_loop

BROWSER_HEADERS = (
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    "Accept-Language: en-GB,en;q=0.9\r\n"
    "Accept-Encoding: gzip, deflate, br\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36\r\n"
)


@dataclass
class Result:
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    statuses: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    """Every response received, warm-up included (the gateway stores a touchpoint for each landing)."""


SCENARIOS = ("plain", "first_visit", "landing")


def target_factory(scenario: str) -> Callable[[], str]:
    """Request targets for a scenario; landing targets are unique across processes and runs."""
    if scenario in ("plain", "first_visit"):
        return lambda: "/page"
    if scenario == "landing":
        counter = itertools.count()
        run = f"{os.getpid():x}{time.time_ns() & 0xFFFFFF:x}"

        def landing() -> str:
            n = next(counter)
            return f"/page?utm_source=news&utm_medium=email&utm_campaign=c{n % 50}&utm_content={run}-{n}"

        return landing
    raise ValueError(f"unknown scenario {scenario!r}")


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; (status, keep the connection)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length: int | None = None
    chunked = False
    keep = not lines[0].startswith(b"HTTP/1.0")
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            keep = b"close" not in value.lower()
    if chunked:
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b""):
                    pass
                break
            await reader.readexactly(size + 2)
    elif length is not None:
        await reader.readexactly(length)
    elif status not in (204, 304):
        await reader.read()
        keep = False
    return status, keep


async def visitor_cookie(port: int) -> str:
    """A returning visitor's Cookie header line: whatever cookie a first page load sets ("" if none)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(
        f"GET /page HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n{BROWSER_HEADERS}\r\n".encode()
    )
    head = (await reader.read(-1)).split(b"\r\n\r\n", 1)[0].decode("latin-1")
    writer.close()
    cookies = [
        line.split(":", 1)[1].split(";", 1)[0].strip()
        for line in head.split("\r\n")
        if line.lower().startswith("set-cookie:")
    ]
    return f"Cookie: {'; '.join(cookies)}\r\n" if cookies else ""


async def run_load(
    port: int, scenario: str, seconds: float, concurrency: int, warmup: float, max_requests: int
) -> Result:
    next_target = target_factory(scenario)
    host = f"Host: {HOST}:{port}\r\n"
    if scenario == "plain":  # a returning visitor: the cookie a first page load set
        host += await visitor_cookie(port)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors = 0
    sent = 0
    start = time.perf_counter()
    measure_from = start + warmup
    deadline = measure_from + seconds

    async def connection() -> None:
        nonlocal errors, sent
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        try:
            while True:
                now = time.perf_counter()
                if now >= deadline or len(latencies) >= max_requests:
                    return
                if writer is None or reader is None:
                    reader, writer = await asyncio.open_connection(HOST, port)
                request = f"GET {next_target()} HTTP/1.1\r\n{host}{BROWSER_HEADERS}\r\n".encode()
                began = time.perf_counter()
                try:
                    writer.write(request)
                    status, keep = await _read_response(reader)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    errors += 1
                    writer.close()
                    reader = writer = None
                    continue
                ended = time.perf_counter()
                sent += 1
                if began >= measure_from:
                    latencies.append(ended - began)
                    key = str(status)
                    statuses[key] = statuses.get(key, 0) + 1
                    if not 200 <= status < 400:
                        errors += 1
                if not keep:
                    writer.close()
                    reader = writer = None
        finally:
            if writer is not None:
                writer.close()

    await asyncio.gather(*(connection() for _ in range(concurrency)))
    measured = max(1e-9, min(time.perf_counter(), deadline) - measure_from)
    latencies.sort()
    return Result(
        requests=len(latencies),
        errors=errors,
        seconds=round(measured, 3),
        rps=len(latencies) / measured,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        statuses=statuses,
        sent=sent,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.load", allow_abbrev=False)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--scenario", choices=SCENARIOS, required=True)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    with asyncio.Runner(loop_factory=new_loop) as runner:
        result = runner.run(
            run_load(args.port, args.scenario, args.seconds, args.concurrency, args.warmup, args.max_requests)
        )
    print(json.dumps(asdict(result)), flush=True)


if __name__ == "__main__":
    main()
