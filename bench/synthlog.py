"""Synthetic access logs for ``gateway import`` tests and ``bench/import.py``.

``python -m bench.synthlog OUT --lines N [--format combined|json-lines] [--gzip] [--seed S]``
writes N requests of a made-up site, time-ordered from a fixed start: a pool
of visitors (IP, user agent), page loads and their assets, some landings with
utm parameters or a click ID, and some arrivals from an external referrer; every
line well-formed and every agent a browser's (the import tests write their bots and
broken lines themselves). The same seed gives the same file.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench import entry

START = datetime(2025, 3, 1, 8, 0, 0, tzinfo=UTC)
HOST = "shop.example"
AGENTS = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:127.0) Gecko/20100101 Firefox/127.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Version/17.5 Safari/605.1.15",
)
PAGES = ("/", "/products", "/products/42", "/products/7", "/cart", "/about", "/blog/launch")
ASSETS = ("/static/app.css", "/static/app.js", "/img/logo.png", "/favicon.ico")
CAMPAIGNS = (
    "utm_source=newsletter&utm_medium=email&utm_campaign=spring",
    "utm_source=google&utm_medium=cpc&utm_campaign=brand&gclid=Cj0KCQ{n}",
    "utm_source=instagram&utm_medium=social&creator_id=cr_{n}",
    "fbclid=IwAR{n}",
)
REFERRERS = ("https://www.google.com/", "https://news.ycombinator.com/item?id=1", "https://t.co/abc")


def requests(lines: int, seed: int = 1) -> Iterator[dict[str, object]]:
    """``lines`` requests as dicts: ts, ip, method, uri, status, size, referer, agent."""
    rng = random.Random(seed)
    visitors = [
        (f"198.51.{rng.randrange(256)}.{rng.randrange(1, 255)}", rng.choice(AGENTS))
        for _ in range(max(1, lines // 25))
    ]
    ts = START
    n = 0
    while n < lines:
        ts += timedelta(milliseconds=rng.randrange(0, 40))
        ip, agent = rng.choice(visitors)
        roll = rng.random()
        page = rng.choice(PAGES)
        referer = f"https://{HOST}{rng.choice(PAGES)}"
        if roll < 0.08:
            page += "?" + rng.choice(CAMPAIGNS).format(n=n)
            referer = rng.choice(REFERRERS) if rng.random() < 0.5 else "-"
        elif roll < 0.10:
            referer = rng.choice(REFERRERS)
        yield {"ts": ts, "ip": ip, "method": "GET", "uri": page, "status": 200, "size": 2048,
               "referer": referer, "agent": agent}  # fmt: skip
        n += 1
        for asset in ASSETS[: rng.randrange(0, len(ASSETS) + 1)]:
            if n >= lines:
                break
            referer = f"https://{HOST}{page}"
            yield {"ts": ts + timedelta(milliseconds=5), "ip": ip, "method": "GET", "uri": asset,
                   "status": 200, "size": 512, "referer": referer, "agent": agent}  # fmt: skip
            n += 1


def combined_line(r: dict[str, object]) -> str:
    ts = r["ts"]
    assert isinstance(ts, datetime)
    return (
        f'{r["ip"]} - - [{ts.strftime("%d/%b/%Y:%H:%M:%S +0000")}] "{r["method"]} {r["uri"]} HTTP/1.1" '
        f'{r["status"]} {r["size"]} "{r["referer"]}" "{r["agent"]}"'
    )


def json_line(r: dict[str, object]) -> str:
    ts = r["ts"]
    assert isinstance(ts, datetime)
    return json.dumps(
        {
            "time": ts.isoformat(),
            "remote_addr": r["ip"],
            "method": r["method"],
            "uri": r["uri"],
            "status": r["status"],
            "host": HOST,
            "referer": r["referer"],
            "user_agent": r["agent"],
        }
    )


FORMATTERS = {"combined": combined_line, "json-lines": json_line}


def write_log(
    path: Path, lines: int, fmt: str = "combined", *, compress: bool = False, seed: int = 1
) -> Path:
    render = FORMATTERS[fmt]
    opener = gzip.open if compress else open
    with opener(path, "wt", encoding="utf-8") as out:
        for request in requests(lines, seed):
            out.write(render(request) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.synthlog", allow_abbrev=False)
    parser.add_argument("out", type=Path)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--format", choices=sorted(FORMATTERS), default="combined")
    parser.add_argument("--gzip", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    write_log(args.out, args.lines, args.format, compress=args.gzip, seed=args.seed)


if __name__ == "__main__":
    entry(main)
