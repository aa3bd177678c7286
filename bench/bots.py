"""Scoring benchmark: microseconds the geo and bots hooks add per request, with a realistic mix.

``python -m bench.bots [--requests N] [--json FILE]`` (``make bench-bots``).

Builds the default pipeline (identity, campaign, geo, bots) with small GeoIP
files it generates (``mmdb-writer``), prepares N requests — a mix of user
agents weighted roughly as a consumer site sees them, and of request kinds
(assets, page loads by returning visitors, landings, robots.txt) — runs the
identity and campaign hooks untimed, then times geo + bots per request.
Prints the median and p99 per request kind and overall against the 20 µs
target, and each median as a share of a request of the bare aiohttp proxy loaded in the same
run before and after the timing (``bench.baseline``: 1 ÷ its req/s), the figure to compare
across days. It reports; it never fails on timing. Needs the ``test`` extra (mmdb-writer,
netaddr), which ``make bench-bots`` installs.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median, quantiles

from addons.identity import cookie_value, new_visitor_id
from bench import at_least, entry, needs
from bench.baseline import bare_proxy
from gateway.config import load_settings
from gateway.keys import Keys
from gateway.metrics import Metrics
from gateway.pipeline import Exchange, Pipeline, RequestView, build_pipeline

TARGET_US = 20.0
_CHROME = "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36"
# (weight %, user agent, client hints sent): shares in the spirit of public browser statistics.
AGENTS: list[tuple[float, str, bool]] = [
    (30, "Mozilla/5.0 (Windows NT 10.0; Win64; x64) " + _CHROME.format(v=131), True),
    (14, "Mozilla/5.0 (Linux; Android 14; SM-S918B) " + _CHROME.format(v=131).replace("S", "Mobile S"), True),
    (16, "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
         "Version/17.6 Mobile/15E148 Safari/604.1", False),
    (6, "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.6 Safari/605.1.15", False),
    (5, "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0", False),
    (4, "Mozilla/5.0 (Windows NT 10.0; Win64; x64) " + _CHROME.format(v=131) + " Edg/131.0.0.0", True),
    (4, "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Mobile/15E148 Instagram 309.0.0.0 (iPhone14,5; iOS 17_6; en_US)", False),
    (3, "Mozilla/5.0 (Linux; Android 13; Pixel 7) " + _CHROME.format(v=130), True),
    (5, "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", False),
    (2, "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", False),
    (3, "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)", False),
    (2, "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)",
     False),
    (2, "curl/8.4.0", False),
    (1, "python-requests/2.32.3", False),
    (1, "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 "
        "Safari/537.36", False),
    (1, "", False),
    (1, "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", False),
]  # fmt: skip
# (weight %, kind): most requests a proxy sees are a page's assets.
KINDS = [(60, "asset"), (28, "page"), (11, "landing"), (1, "robots")]


def write_geo(folder: Path) -> tuple[Path, Path]:
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    country = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-Country")
    asn = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-ASN")
    for n, code in enumerate(("DE", "FR", "US", "GB", "NL", "PL", "ES", "IT")):
        country.insert_network(IPSet([f"10.{n}.0.0/16"]), {"country": {"iso_code": code}})
        asn.insert_network(
            IPSet([f"10.{n}.0.0/16"]), {"autonomous_system_number": 3320 + n * (n % 3 == 2) * 4000}
        )
    paths = folder / "country.mmdb", folder / "asn.mmdb"
    country.to_db_file(str(paths[0]))
    asn.to_db_file(str(paths[1]))
    return paths


def headers_for(agent: str, hints: bool, kind: str) -> dict[str, str]:
    headers = {"user-agent": agent, "accept-language": "en-GB,en;q=0.9", "accept-encoding": "gzip, br"}
    if hints:
        headers |= {
            "sec-ch-ua": '"Chromium";v="131"',
            "sec-ch-ua-mobile": "?0",
            "sec-ch-ua-platform": '"Windows"',
        }
        if "Android" in agent:
            headers |= {"sec-ch-ua-mobile": "?1", "sec-ch-ua-platform": '"Android"'}
    if kind in ("page", "landing"):
        headers |= {"accept": "text/html,application/xhtml+xml", "sec-fetch-dest": "document"}
    elif kind == "asset":
        headers |= {"accept": "text/css,*/*;q=0.1", "sec-fetch-dest": "style"}
    return headers


def prepare(pipe: Pipeline, count: int, rng: random.Random) -> list[tuple[str, Exchange]]:
    """Requests with identity and campaign already run (untimed)."""
    identity, campaign = pipe.addons[0][1], pipe.addons[1][1]
    agents = rng.choices(AGENTS, weights=[a[0] for a in AGENTS], k=count)
    kinds = rng.choices([k for _, k in KINDS], weights=[w for w, _ in KINDS], k=count)
    key = identity.keys.cookie_mac  # type: ignore[attr-defined]
    cookies = [f"gw_vid={cookie_value(key, new_visitor_id())}" for _ in range(2000)]  # returning visitors
    start = datetime(2026, 11, 25, 12, tzinfo=UTC)
    prepared = []
    for n, ((_, agent, hints), kind) in enumerate(zip(agents, kinds, strict=True)):
        ip = f"10.{rng.randrange(8)}.{rng.randrange(256)}.{rng.randrange(256)}"
        path, query = {
            "asset": ("/static/app.css", ""),
            "page": (f"/p/{n % 50}", ""),
            "landing": ("/", f"utm_source=ig&creator_id=c{rng.randrange(200)}&gclid=g{rng.randrange(10**6)}"),
            "robots": ("/robots.txt", ""),
        }[kind]
        headers = headers_for(agent, hints, kind) | {"cookie": rng.choice(cookies)}
        view = RequestView(
            "GET", "https", "shop.example", path, query, headers, ip, start + timedelta(seconds=n / 50)
        )
        ex = Exchange(view)
        identity.request(ex)  # type: ignore[attr-defined]
        campaign.request(ex)  # type: ignore[attr-defined]
        prepared.append((kind, ex))
    return prepared


def run(count: int, seed: int = 7) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as folder:
        country, asn = write_geo(Path(folder))
        text = f'[geo]\ncountry_db = "{country}"\nasn_db = "{asn}"\n'
        settings = load_settings(
            None, text=text, environ={"GATEWAY_SECRET": "b" * 40, "GATEWAY_ADMIN_TOKEN": "t" * 40}
        )
        pipe = build_pipeline(settings, Metrics(), Keys.from_master(settings.secret))
        asyncio.run(pipe.running())
        hooks = [addon.request for name, addon in pipe.addons if name in ("geo", "bots")]  # type: ignore[attr-defined]
        assert len(hooks) == 2, "geo and bots must both be in the default pipeline"
        prepared = prepare(pipe, count, random.Random(seed))
        # The prepared requests would make every collection walk them: freeze them, as the
        # server freezes its start-up heap, so the figures are the hooks' own.
        gc.collect()
        gc.freeze()
        timings: dict[str, list[float]] = {}
        clock = time.perf_counter_ns
        for kind, ex in prepared:
            started = clock()
            for hook in hooks:
                hook(ex)
            elapsed = clock() - started
            timings.setdefault(kind, []).append(elapsed / 1000)
            timings.setdefault("all", []).append(elapsed / 1000)
        asyncio.run(pipe.done())
        gc.unfreeze()
    return {
        kind: {
            "requests": len(us),
            "median_us": median(us),
            "p99_us": quantiles(us, n=100)[98] if len(us) > 1 else us[0],
        }
        for kind, us in timings.items()
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bots", allow_abbrev=False, description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--requests",
        type=at_least(1),
        default=200_000,
        help="requests timed, of every kind (default 200,000)",
    )
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)
    if args.json and not args.json.resolve().parent.is_dir():
        parser.error(f"--json: no folder {args.json.resolve().parent} to write {args.json} in")
    needs("python -m bench.bots", "test", "mmdb_writer", "netaddr")
    with bare_proxy() as baseline:
        baseline.run("before")
        results = run(args.requests)
        baseline.run("after")
    request_us = 1e6 / baseline.rps  # a baseline request's share of the bare proxy's time
    print(baseline.describe())
    print(f"{'kind':<10}{'requests':>10}{'median µs':>12}{'p99 µs':>10}{'median ÷ baseline':>19}")
    for kind in ("asset", "page", "landing", "robots", "all"):
        if kind in results:
            r = results[kind]
            r["median_per_baseline_request"] = r["median_us"] / request_us
            print(
                f"{kind:<10}{r['requests']:>10}{r['median_us']:>12.2f}{r['p99_us']:>10.2f}"
                f"{r['median_per_baseline_request']:>18.2%}"
            )
    print(
        f"(median ÷ baseline: of a baseline request's {request_us:.0f} µs, 1 ÷ the bare proxy's req/s this"
        " run; compare this across days, not µs)"
    )
    verdict = "met" if results["all"]["median_us"] <= TARGET_US else "NOT met"
    overall = results["all"]["median_us"]
    print(f"geo + bots median per request: {overall:.2f} µs (target ≤ {TARGET_US:g} µs: {verdict})")
    if args.json:
        args.json.write_text(json.dumps({**results, "baseline": baseline.as_json()}, indent=2))


if __name__ == "__main__":
    entry(main)
