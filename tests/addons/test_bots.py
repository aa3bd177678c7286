"""Bot scoring on plain Exchanges: labelled traffic, velocity windows, late signals, actions."""

from __future__ import annotations

import copy
import math
import re
import sys
import textwrap
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from addons.bots import Bots, VisitorState
from addons.crawlers import CrawlerPatterns
from addons.signals import classify_agent, inhuman, network_of
from addons.velocity import DistinctSources, HeldItems, WindowCounter
from gateway.config import load_settings
from gateway.events import Touchpoint, VerdictChange
from gateway.keys import Keys
from gateway.metrics import Metrics
from gateway.options import BotsOptions
from gateway.pipeline import Exchange, Pipeline, RequestView, build_pipeline
from tests.addons.conftest import FIXED_TS
from tests.clients import IN_APP, MAIL_SCANNERS, PREVIEWERS, PRIVACY
from tests.conftest import ENV

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
CHROME_HEADERS = {
    "user-agent": CHROME,
    "accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "accept-language": "de-DE,de;q=0.9,en;q=0.8",
    "sec-ch-ua": '"Google Chrome";v="131", "Chromium";v="131", "Not_A Brand";v="24"',
    "sec-ch-ua-mobile": "?0",
    "sec-ch-ua-platform": '"Windows"',
    "sec-fetch-dest": "document",
    "sec-fetch-mode": "navigate",
}
FIREFOX_HEADERS = {
    "user-agent": "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "accept": "text/html,application/xhtml+xml",
    "accept-language": "en-US,en;q=0.5",
    "sec-fetch-dest": "document",
}
IPHONE_HEADERS = {
    "user-agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "accept": "text/html",
    "accept-language": "fr-FR,fr;q=0.9",
    "sec-fetch-dest": "document",
}
ANDROID_HEADERS = {
    "user-agent": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Mobile Safari/537.36",
    "accept": "text/html",
    "accept-language": "en-GB,en;q=0.9",
    "sec-ch-ua": '"Chromium";v="131", "Not_A Brand";v="24"',
    "sec-ch-ua-mobile": "?1",
    "sec-ch-ua-platform": '"Android"',
    "sec-fetch-dest": "document",
}
ANDROID_WEBVIEW = {
    "user-agent": "Mozilla/5.0 (Linux; Android 14; SM-S918B Build/UP1A; wv) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Version/4.0 Chrome/131.0.6778.39 Mobile Safari/537.36 [FB_IAB/FB4A;FBAV/489.0.0.53.81;]",
    "accept": "text/html",
    "accept-language": "en-US",
    "x-requested-with": "com.facebook.katana",
}
ANDROID_DESKTOP_MODE = {
    "user-agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
    "Safari/537.36",
    "accept": "text/html",
    "accept-language": "en-US",
    "sec-ch-ua": '"Chromium";v="131"',
    "sec-ch-ua-mobile": "?0",
    "sec-ch-ua-platform": '"Android"',
}
FOSSIBOT_PHONE = {  # a rugged phone whose model holds "bot": the crawler database's every "bot"
    **ANDROID_HEADERS,
    "user-agent": "Mozilla/5.0 (Linux; Android 13; Fossibot F102) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Mobile Safari/537.36",
}
FOSSIBOT_WEBVIEW = {
    **ANDROID_WEBVIEW,
    "user-agent": "Mozilla/5.0 (Linux; Android 13; Fossibot F106 Pro Build/TP1A.220624.014; wv) "
    "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/131.0.6778.39 Mobile Safari/537.36 "
    "[FB_IAB/FB4A;FBAV/489.0.0.53.81;]",
}
CHROMEOS = {
    "user-agent": "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "accept": "text/html",
    "accept-language": "en-US",
    "sec-ch-ua": '"Google Chrome";v="131", "Chromium";v="131", "Not_A Brand";v="24"',
    "sec-ch-ua-mobile": "?0",
    "sec-ch-ua-platform": '"Chrome OS"',
    "sec-fetch-dest": "document",
}
CHROMIUM_OS = {  # Chromium's own builds of the OS (FydeOS, developer builds) name it so (Chromium's
    **CHROMEOS,  # GetPlatformForUAMetadata: "Chrome OS" with Google's branding only); same agent
    "sec-ch-ua": '"Chromium";v="131", "Not_A Brand";v="24"',
    "sec-ch-ua-platform": '"Chromium OS"',
}
OPERA_MINI_EXTREME = {  # the data-saving mode's servers fetch with the Presto-era agent
    "user-agent": "Opera/9.80 (Android; Opera Mini/86.0.2254/191.379; U; en) Presto/2.12.423 Version/12.16",
    "accept": "text/html, application/xml;q=0.9, application/xhtml+xml, image/png, image/webp, */*;q=0.1",
    "accept-language": "en-NG,en;q=0.9",
    "x-operamini-phone-ua": "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/136.0.0.0 Mobile Safari/537.36",
}
INSTAGRAM_IN_APP = {
    "user-agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148 Instagram 309.0.0.0 (iPhone14,5; iOS 17_1; en_US)",
    "accept": "text/html",
    "accept-language": "en-US",
}


def pipeline(toml: str = "") -> Pipeline:
    text = textwrap.dedent(toml)
    settings = load_settings(None, text=text, environ=ENV)
    keys = Keys.from_master(settings.secret)
    return build_pipeline(settings, Metrics(), keys)


def bots_of(pipe: Pipeline) -> Bots:
    return next(addon for name, addon in pipe.addons if name == "bots")  # type: ignore[return-value]


def request(
    target: str = "/?utm_source=ig&creator_id=anna",
    headers: dict[str, str] | None = None,
    *,
    ip: str = "198.51.100.7",
    ts: datetime = FIXED_TS,
    cookie: str | None = None,
) -> Exchange:
    path, _, query = target.partition("?")
    sent = dict(CHROME_HEADERS if headers is None else headers)
    if cookie:
        sent["cookie"] = cookie
    return Exchange(RequestView("GET", "https", "shop.example", path, query, sent, ip, ts))


async def run(pipe: Pipeline, ex: Exchange) -> Exchange:
    await pipe.request(ex)
    return ex


def touchpoint(ex: Exchange) -> Touchpoint:
    found = [e for e in ex.events if isinstance(e, Touchpoint)]
    assert len(found) == 1, ex.events
    return found[0]


def cookie_of(pipe: Pipeline, ex: Exchange) -> str:
    """The visitor cookie the identity addon would set, so the next request is the same visitor."""
    from addons.identity import cookie_value

    identity = next(addon for name, addon in pipe.addons if name == "identity")
    assert ex.visitor is not None
    return "gw_vid=" + cookie_value(identity.keys.cookie_mac, ex.visitor.id)  # type: ignore[attr-defined]


# -- labelled traffic --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        CHROME_HEADERS,
        FIREFOX_HEADERS,
        IPHONE_HEADERS,
        ANDROID_HEADERS,
        INSTAGRAM_IN_APP,
        ANDROID_WEBVIEW,
        ANDROID_DESKTOP_MODE,
        FOSSIBOT_PHONE,
        FOSSIBOT_WEBVIEW,
        OPERA_MINI_EXTREME,
        CHROMEOS,
        CHROMIUM_OS,
    ],
    ids=[
        "chrome",
        "firefox",
        "iphone-safari",
        "android-chrome",
        "instagram-in-app",
        "facebook-webview",
        "desktop-mode",
        "bot-in-phone-model",
        "bot-in-phone-model-webview",
        "opera-mini-extreme",
        "chromeos",
        "chromium-os",
    ],
)
async def test_real_browsers_with_full_headers_pass(headers: dict[str, str]) -> None:
    tp = touchpoint(await run(pipeline(), request(headers=headers)))
    assert (tp.verdict, tp.bot_score, tp.reasons) == ("allow", 0, [])


@pytest.mark.parametrize(
    ("agent", "reason"),
    [
        ("curl/8.4.0", "http_library"),
        ("python-requests/2.32.3", "http_library"),
        ("Go-http-client/1.1", "http_library"),
        ("Python/3.11 aiohttp/3.10.5", "http_library"),
        ("Bun/1.1.38", "http_library"),
        ("Deno/2.1.4", "http_library"),
        (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 "
            "Safari/537.36",
            "headless",
        ),
        (
            "Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) PhantomJS/2.1.1 "
            "Safari/538.1",
            "headless",
        ),
        ("Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)", "crawler"),
        ("Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)", "crawler"),
        (
            "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; "
            "+https://openai.com/gptbot)",
            "crawler",
        ),
        (  # a crawler on an Android agent names itself outside the device's comment
            "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 "
            "Mobile Safari/537.36 (compatible; PetalBot;+https://webmaster.petalsearch.com/site/petalbot)",
            "crawler",
        ),
        ("Scrapy/2.11.2 (+https://scrapy.org)", "http_library"),
        # Invoke-WebRequest's default agents: a Mozilla/5.0 comment, then the runtime
        ("Mozilla/5.0 (Windows NT 10.0; Microsoft Windows 10.0.26100; en-US) PowerShell/7.5", "http_library"),
        ("Mozilla/5.0 (Windows NT; Windows NT 10.0; en-US) WindowsPowerShell/5.1.26100.1", "http_library"),
        ("Mozilla/5.0 (Linux; Ubuntu 24.04 LTS; en-US) PowerShell/7.4.6", "http_library"),
        ("", "empty_agent"),
        ("x" * 600, "absurd_agent"),
        ("Opera/9.80 bla", "absurd_agent"),
        ("Opera/9.80 (Windows NT 6.1) Presto/2.12.388 Version/12.18", "absurd_agent"),  # no Opera Mini
    ],
)
async def test_crawlers_libraries_and_headless_browsers_are_caught(agent: str, reason: str) -> None:
    headers = {**CHROME_HEADERS, "user-agent": agent}
    tp = touchpoint(await run(pipeline(), request(headers=headers)))
    assert reason in tp.reasons
    assert tp.verdict in ("review", "block") and tp.bot_score is not None and tp.bot_score >= 30


@pytest.mark.parametrize(
    "agent",
    [
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    ],
)
async def test_good_crawlers_are_labelled_bot_and_never_blocked(agent: str) -> None:
    pipe = pipeline("[bots]\non_block = 'block'\non_review = 'block'\n")
    ex = await run(pipe, request(headers={"user-agent": agent, "accept": "text/html"}))
    tp = touchpoint(ex)
    assert tp.verdict == "bot" and tp.reasons[0] == "good_crawler" and tp.bot_score == 100
    assert ex.reply is None


async def test_extra_good_crawlers_add_to_the_default_list() -> None:
    """It used to take a copy of the whole list to add one: a copy that then missed every crawler
    a later release added."""
    pipe = pipeline("[bots]\non_block = 'block'\nextra_good_crawlers = ['Acme-Preview']\n")
    for agent in ("acme-preview/2.0 (+https://acme.example/bot)", "Googlebot/2.1"):
        ex = await run(pipe, request(headers={"user-agent": agent, "accept": "text/html"}))
        assert (touchpoint(ex).verdict, ex.reply) == ("bot", None), agent
    ex = await run(pipeline(), request(headers={"user-agent": "acme-preview/2.0", "accept": "text/html"}))
    assert touchpoint(ex).verdict != "bot"


async def test_good_crawlers_can_be_blocked_when_the_operator_says_so() -> None:
    pipe = pipeline("[bots]\non_block = 'block'\nblock_good_crawlers = true\n")
    ex = await run(pipe, request(headers={"user-agent": "Googlebot/2.1", "accept": "text/html"}))
    assert touchpoint(ex).verdict == "block" and ex.reply is not None and ex.reply.status == 403


async def test_blocked_good_crawlers_are_blocked_on_every_page_as_any_crawler_is() -> None:
    """A page load that is no landing is answered by what the agent says alone: a crawler's is a
    403 under ``on_block = "block"``, and so is a good crawler's once the operator blocks them.
    It used to score the good crawler's page load 0, so only its landings were refused."""
    pipe = pipeline("[bots]\non_block = 'block'\nblock_good_crawlers = true\n")
    for agent in ("Googlebot/2.1", "GPTBot/1.2 (+https://openai.com/gptbot)"):
        for path, accept in (("/pricing", "text/html"), ("/pricing", "*/*"), ("/app.js", "*/*")):
            ex = await run(pipe, request(path, headers={"user-agent": agent, "accept": accept}))
            assert not [e for e in ex.events if isinstance(e, Touchpoint)], (agent, path, accept)
            assert ex.reply is not None and ex.reply.status == 403, (agent, path, accept)
    default = pipeline("[bots]\non_block = 'block'\n")
    ex = await run(default, request("/app.js", headers={"user-agent": "Googlebot/2.1", "accept": "*/*"}))
    assert ex.reply is None


async def test_a_score_counts_each_weighted_signal_once_and_stops_at_100() -> None:
    """Signals of weight 0 are neither scored nor listed (nor counted in the metrics); the others
    keep the order they fired in, and their sum is capped at 100."""
    pipe = pipeline("[bots.weights]\nno_accept_language = 45\nno_client_hints = 0\nprefetch = 70\n")
    sent = {k: v for k, v in CHROME_HEADERS.items() if k not in ("accept-language", "sec-ch-ua")}
    ex = await run(pipe, request(headers=sent | {"sec-purpose": "prefetch"}))
    tp = touchpoint(ex)
    assert (tp.verdict, tp.bot_score, tp.reasons) == ("block", 100, ["no_accept_language", "prefetch"])
    sample = pipe.metrics.registry.get_sample_value
    counted = {s: sample("gateway_bot_signals_total", {"signal": s}) for s in bots_of(pipe).signals}
    assert {s: n for s, n in counted.items() if n} == {"no_accept_language": 1, "prefetch": 1}
    assert sample("gateway_bot_verdicts_total", {"verdict": "block"}) == 1
    tp = touchpoint(await run(pipe, request(headers=sent)))
    assert (tp.verdict, tp.bot_score, tp.reasons) == ("review", 45, ["no_accept_language"])


# -- the clients influencer traffic comes from (tests/clients.py says where each shape is from) ---


@pytest.mark.parametrize("name", [*IN_APP, *PRIVACY])
async def test_people_in_in_app_and_privacy_browsers_score_zero(name: str) -> None:
    tp = touchpoint(await run(pipeline(), request(headers=(IN_APP | PRIVACY)[name])))
    assert (tp.verdict, tp.bot_score, tp.reasons) == ("allow", 0, [])


@pytest.mark.parametrize("name", list(PREVIEWERS))
async def test_link_previews_and_ad_review_crawlers_are_bots_not_fraud(name: str) -> None:
    pipe = pipeline("[bots]\non_block = 'block'\non_review = 'block'\n")
    ex = await run(pipe, request(headers=PREVIEWERS[name]))
    tp = touchpoint(ex)
    assert (tp.verdict, tp.reasons[0]) == ("bot", "good_crawler")
    assert ex.reply is None  # an ad platform's landing-page check must never see a 403


@pytest.mark.parametrize(("name", "verdict"), [("office-link-check", "bot"), ("barracuda", "bot"),
                                               ("detonation-chrome", "review")])  # fmt: skip
async def test_mail_link_scanners_are_never_allowed(name: str, verdict: str) -> None:
    tp = touchpoint(await run(pipeline(), request(headers=MAIL_SCANNERS[name])))
    assert tp.verdict == verdict


@pytest.mark.parametrize("agent", ["Mozilla/5.0 (Linux; Android 15) AppleWebKit/537.36 (KHTML, like Gecko) "
                                   "Version/4.0 Chrome/141.0.0.0 Mobile DuckDuckGo/5 Safari/537.36",
                                   IN_APP["facebook-android"]["user-agent"]])  # fmt: skip
def test_a_webview_agent_with_or_without_wv_expects_no_client_hints(agent: str) -> None:
    verdict = classify_agent(agent, re.compile("(?!)"), CrawlerPatterns())
    assert verdict.browser and not verdict.chromium and verdict.platform == "Android"


@pytest.mark.parametrize(
    ("drop", "add", "reason"),
    [
        ("accept-language", {}, "no_accept_language"),
        ("sec-ch-ua", {}, "no_client_hints"),
        (None, {"sec-ch-ua-platform": '"macOS"'}, "header_mismatch"),
        (None, {"sec-ch-ua-mobile": "?1"}, "header_mismatch"),
        (None, {"sec-purpose": "prefetch;prerender"}, "prefetch"),
        (None, {"sec-ch-ua": '"HeadlessChrome";v="131", "Chromium";v="131"'}, "headless"),
    ],
)
async def test_header_consistency(drop: str | None, add: dict[str, str], reason: str) -> None:
    headers = {k: v for k, v in CHROME_HEADERS.items() if k != drop} | add
    tp = touchpoint(await run(pipeline(), request(headers=headers)))
    assert tp.reasons == [reason]


async def test_firefox_never_sends_client_hints() -> None:
    headers = {**FIREFOX_HEADERS, "sec-ch-ua": '"Chromium";v="131"'}
    assert touchpoint(await run(pipeline(), request(headers=headers))).reasons == ["header_mismatch"]


async def test_client_hints_are_only_expected_on_https() -> None:
    headers = {k: v for k, v in CHROME_HEADERS.items() if k != "sec-ch-ua"}
    ex = request(headers=headers)
    ex.request.scheme = "http"
    assert touchpoint(await run(pipeline(), ex)).reasons == []


# -- velocity ------------------------------------------------------------------------------------


async def test_a_burst_from_one_ip_for_one_creator_flips_to_block_at_the_limit_and_decays() -> None:
    pipe = pipeline()
    verdicts = []
    for i in range(151):  # a click farm behind one IP: a fresh visitor (no cookie) each click
        ex = await run(pipe, request(ts=FIXED_TS + timedelta(seconds=10 * i)))
        verdicts.append(touchpoint(ex).verdict)
    assert verdicts[:150] == ["allow"] * 150
    tp = touchpoint(ex)
    assert (tp.verdict, tp.reasons) == ("block", ["creator_ip_velocity"])
    # The burst's earlier clicks are re-scored with it, each change kept with its reason.
    changes = [e for e in ex.events if isinstance(e, VerdictChange)]
    assert len(changes) == 150 and {(c.verdict, c.bot_score, c.note) for c in changes} == {
        ("block", 50, "creator_ip_velocity")
    }
    # Other creators from the same IP, and the same creator from another IP, are unaffected.
    other = touchpoint(await run(pipe, request("/?creator_id=ben", ts=FIXED_TS + timedelta(seconds=1600))))
    assert other.verdict == "allow"
    elsewhere = touchpoint(await run(pipe, request(ip="198.51.100.8", ts=FIXED_TS + timedelta(seconds=1600))))
    assert elsewhere.verdict == "allow"
    # Two windows later the burst has decayed out of the sliding window.
    later = touchpoint(await run(pipe, request(ts=FIXED_TS + timedelta(hours=2, seconds=1600))))
    assert later.verdict == "allow"


async def test_an_ipv6_64_is_one_source_whatever_address_each_click_takes() -> None:
    """A farm on one IPv6 /64 takes a fresh address for every click (as privacy addresses do):
    every count keyed by IP was 1, and a burst of any size stayed ``allow``."""
    pipe = pipeline("[bots]\nmax_per_creator_ip = 5\nmax_per_ip = 8\n")
    reasons = []
    for i in range(9):
        ex = await run(pipe, request("/?creator_id=anna", ip=f"2001:db8:9:9:{i + 1:x}::1"))
        reasons.append(touchpoint(ex).reasons)
    assert reasons[:5] == [[]] * 5
    assert reasons[5] == ["creator_ip_velocity"]  # the 6th click from the /64
    assert reasons[8] == ["ip_velocity", "creator_ip_velocity"]
    # The next /64 (another household) is another source.
    assert touchpoint(await run(pipe, request(ip="2001:db8:9:a::1"))).reasons == []


@pytest.mark.parametrize(
    ("ip", "source"),
    [
        ("198.51.100.7", "198.51.100.7"),
        ("2001:db8:1:2:abcd:ef01:2345:6789", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("::ffff:198.51.100.7", "198.51.100.7"),  # a dual-stack socket's IPv4 peer
        ("fe80::1%eth0", "fe80::/64"),
        ("", ""),
        ("not:an:address", "not:an:address"),
    ],
)
def test_the_source_velocity_counts_an_address_as(ip: str, source: str) -> None:
    assert network_of(ip) == source


def test_window_counter_slides() -> None:
    counter = WindowCounter(window=100, max_keys=10)
    for i in range(10):
        assert counter.hit("k", 1000 + i) == i + 1
    assert counter.hit("k", 1150) == pytest.approx(1 + 10 * 0.5)  # half the previous window still counts
    assert counter.hit("k", 1399) == 1  # two windows on: nothing carried over


def test_window_counters_going_back_in_time_count_what_is_there() -> None:
    """A backfill replays lines in file order: two servers' logs one after the other go back in
    time. A key's late events were counted into its newest window and weighted by how far back
    they were (forty windows back: the previous window's count times forty), so an office's
    twenty page loads an hour on the second server all scored ``ip_velocity``. Going back past
    both windows starts the key afresh; a little late (the window before) counts there."""
    counter = WindowCounter(window=100, max_keys=10)
    for hour in range(40):
        for i in range(20):
            assert counter.hit("ip", hour * 100 + i * 5) <= 40
    for hour in range(40):  # the second log, from the start again
        for i in range(20):
            assert counter.hit("ip", hour * 100 + i * 5 + 1) <= 40
    late = WindowCounter(window=100, max_keys=10)
    assert [late.hit("k", t) for t in (150.0, 160.0, 99.0, 170.0)] == pytest.approx([1, 2, 3, 3 + 1 * 0.3])
    sources = DistinctSources(window=100, max_keys=10, cap=100)
    added = [
        sources.add("gclid", ip, t) for ip, t in (("a", 5000.0), ("b", 5001.0), ("c", 4950.0), ("d", 10.0))
    ]
    assert added == [1, 2, 3, 1]  # the window before: the same set; days back: afresh


async def test_click_id_reused_from_many_ips_is_flagged() -> None:
    pipe = pipeline()
    reasons = []
    for n in range(5):
        ex = await run(pipe, request("/?gclid=Cj0KCQ-same", ip=f"192.0.2.{n}"))
        reasons.append(touchpoint(ex).reasons)
    assert reasons[:3] == [[], [], []]
    assert reasons[3] == ["click_id_reuse"] and reasons[4] == ["click_id_reuse"]


async def test_a_placeholder_click_id_is_no_click_reused() -> None:
    """A site's link builder that writes ``gclid=undefined`` gives every visitor so tagged one
    click ID: until 2026-12-07 the fourth person from another address was ``click_id_reuse``,
    quarantined for a click that never was. The placeholder is no click ID (dropped at capture):
    each landing is recorded by its other tags, none flagged."""
    pipe = pipeline()
    for n in range(6):
        ex = await run(pipe, request("/?utm_source=news&gclid=undefined", ip=f"192.0.2.{n}"))
        tp = touchpoint(ex)
        assert (tp.source, tp.click_id, tp.reasons, tp.verdict) == ("news", None, [], "allow")


async def test_a_click_id_counts_the_sources_of_the_last_window() -> None:
    """README: ``click_id_reuse`` fires for more than ``bots.max_click_id_sources`` sources "in the
    window". A click ID's set of sources started at the window its first source came in and
    lasted to the end of the next, on the clock's hours: four addresses opening one gclid within
    four seconds across the hour after next were never counted together (the set started afresh
    between them), while four spread over almost two hours, never more than two in any hour,
    were flagged."""
    pipe = pipeline()

    async def reasons(gclid: str, ip: str, at: datetime) -> list[str]:
        return touchpoint(await run(pipe, request(f"/?gclid={gclid}", ip=ip, ts=at))).reasons

    assert FIXED_TS.minute == FIXED_TS.second == 0  # on an hour, as the windows are
    assert await reasons("Cj0-straddled", "192.0.2.1", FIXED_TS + timedelta(seconds=10)) == []
    two_hours = FIXED_TS + timedelta(hours=2)
    burst = [(two_hours + timedelta(seconds=s), f"198.51.100.{n}") for n, s in enumerate((-2, -1, 1, 2))]
    found = [await reasons("Cj0-straddled", ip, at) for at, ip in burst]
    assert found == [[], [], [], ["click_id_reuse"]]  # the four of those four seconds
    spread = [FIXED_TS + timedelta(minutes=m) for m in (0, 35, 70, 105)]
    found = [await reasons("Cj0-spread", f"203.0.113.{n}", at) for n, at in enumerate(spread)]
    assert found == [[], [], [], []]  # never more than two of them within an hour


async def test_a_newsletters_campaign_id_is_no_reused_click() -> None:
    """Every reader of a Mailchimp newsletter carries its one ``mc_cid``: the sixth reader's
    click is as good as the first (it was flagged ``review`` and lost its credit)."""
    pipe = pipeline()
    for n in range(6):
        ex = await run(pipe, request(f"/?mc_cid=0a1b2c3d4e&mc_eid=u{n}", ip=f"192.0.2.{n}"))
        tp = touchpoint(ex)
        assert (tp.click_id_kind, tp.reasons, tp.verdict) == ("mc_cid", [], "allow")


async def test_google_s_campaign_level_gbraid_is_no_reused_click() -> None:
    """Google Ads tags its iOS traffic with ``gbraid``, a value shared by every click of a
    campaign (Google's own help, answer 16297842, says so; Brave stopped stripping it for that,
    brave-core#30502), not one per click as ``gclid``: the sixth iPhone's click from the
    campaign is as good as the first (until 2026-12-07 it was ``click_id_reuse``, ``review``,
    and lost its credit). A ``gclid`` seen as often is still flagged."""
    pipe = pipeline()
    for n in range(6):
        ex = await run(pipe, request("/?gbraid=0AAAAAoUYs8dnyFUYKmISDSbU3aPMF3dAh", ip=f"192.0.2.{n}"))
        tp = touchpoint(ex)
        assert (tp.click_id_kind, tp.reasons, tp.verdict) == ("gbraid", [], "allow")
    replayed = [
        touchpoint(await run(pipe, request("/?gclid=Cj0-replayed", ip=f"198.51.100.{n}"))).reasons
        for n in range(5)
    ]
    assert replayed == [[], [], [], ["click_id_reuse"], ["click_id_reuse"]]


async def test_ip_and_visitor_velocity() -> None:
    pipe = pipeline("[bots]\nmax_per_ip = 5\nmax_per_visitor = 3\n")
    first = await run(pipe, request("/"))  # a page load: counted, not recorded
    assert first.events == []
    cookie = cookie_of(pipe, first)
    await run(pipe, request("/site.css", {"user-agent": CHROME, "sec-fetch-dest": "style"}, cookie=cookie))
    reasons = []
    for i in range(6):  # human-looking gaps and assets, so only the velocity signals can fire
        ts = FIXED_TS + timedelta(seconds=40 * i + 7 * i * i)
        target = f"/?utm_source=x&utm_content=v{i}"  # six landings, no reload (which is folded)
        reasons.append(touchpoint(await run(pipe, request(target, cookie=cookie, ts=ts))).reasons)
    assert reasons == [
        [],
        [],
        ["visitor_velocity"],  # the visitor's 4th page load
        ["visitor_velocity"],
        ["ip_velocity", "visitor_velocity"],  # the IP's 6th
        ["ip_velocity", "visitor_velocity"],
    ]


# -- late signals re-score earlier touchpoints ------------------------------------------------


async def test_robots_txt_after_the_landing_rescores_it() -> None:
    pipe = pipeline()
    landing = await run(pipe, request())
    tp = touchpoint(landing)
    assert tp.verdict == "allow"
    robots = await run(pipe, request("/robots.txt", {"user-agent": CHROME}, cookie=cookie_of(pipe, landing)))
    changes = [e for e in robots.events if isinstance(e, VerdictChange)]
    assert len(changes) == 1
    change = changes[0]
    assert (change.touchpoint_id, change.origin, change.note) == (tp.id, "rescore", "robots_txt")
    assert (change.verdict, change.bot_score, change.reasons) == ("review", 30, ["robots_txt"])
    # The next landing from that IP carries the signal from the start.
    assert "robots_txt" in touchpoint(await run(pipe, request())).reasons


async def test_a_visitor_that_never_loads_assets_is_rescored() -> None:
    pipe = pipeline()
    landing = await run(pipe, request())
    cookie = cookie_of(pipe, landing)
    page = {**CHROME_HEADERS}
    second = await run(pipe, request("/p2", page, cookie=cookie, ts=FIXED_TS + timedelta(seconds=20)))
    assert second.events == []
    third = await run(pipe, request("/p3", page, cookie=cookie, ts=FIXED_TS + timedelta(seconds=47)))
    (change,) = third.events
    assert isinstance(change, VerdictChange) and change.reasons == ["no_assets"] and change.bot_score == 20
    assert change.verdict == "allow"  # 20 < 30: kept, with its reason, even when the verdict holds


async def test_no_assets_is_judged_in_the_visitors_first_window_only() -> None:
    """A new visitor who loaded 3 pages and no asset kept ``no_assets`` for as long as their state
    stayed in memory (weeks on a quiet site): a browser that lost its cookie but kept its cache,
    or a person once browsing through a text-only reader, was flagged on every later landing,
    though their assets came from the cache. A new visitor's cache is empty only at first: the
    pages and assets of their first window (``bots.window_seconds`` from their first page)
    count, and the signal fires no later than that."""
    pipe = pipeline()
    first = await run(pipe, request("/?utm_source=ig"))
    cookie = cookie_of(pipe, first)
    for n, seconds in enumerate((20, 47), start=2):
        await run(pipe, request(f"/p{n}", cookie=cookie, ts=FIXED_TS + timedelta(seconds=seconds)))

    async def landing(at: datetime, source: str) -> Touchpoint:
        return touchpoint(await run(pipe, request(f"/?utm_source={source}", cookie=cookie, ts=at)))

    assert (await landing(FIXED_TS + timedelta(minutes=50), "nl")).reasons == ["no_assets"]
    later = await landing(FIXED_TS + timedelta(days=21), "fb")
    assert (later.verdict, later.reasons) == ("allow", [])
    # Three pages spread over more than the first window are no sign either.
    slow = await run(pipe, request("/?utm_source=x", ip="203.0.113.5"))
    cookie = cookie_of(pipe, slow)
    for n, minutes in enumerate((30, 61), start=2):
        ex = await run(pipe, request(f"/s{n}", cookie=cookie, ts=FIXED_TS + timedelta(minutes=minutes)))
        assert ex.events == []


async def test_a_visitor_that_loads_assets_is_not_rescored() -> None:
    pipe = pipeline()
    landing = await run(pipe, request())
    cookie = cookie_of(pipe, landing)
    css = {"user-agent": CHROME, "sec-fetch-dest": "style", "accept": "text/css"}
    await run(pipe, request("/app.css", css, cookie=cookie))
    for n, path in enumerate(["/p2", "/p3", "/p4"]):
        ex = await run(
            pipe, request(path, cookie=cookie, ts=FIXED_TS + timedelta(seconds=25 * n + 7 * n * n))
        )
        assert ex.events == []


@pytest.mark.parametrize(
    "gaps",
    [
        [0.3, 0.3, 0.3, 0.3],  # a person pressing F5 on a slow landing page
        [30.0, 30.0, 30.0, 30.0],  # a live scoreboard's <meta http-equiv="refresh" content="30">
    ],
    ids=["impatient-reloads", "auto-refresh"],
)
async def test_reloads_of_one_page_are_no_inhuman_cadence(gaps: list[float]) -> None:
    """Cadence judges a visitor going through pages; the same page loaded again and again is
    one page to it (the landing's reloads are one touchpoint too, see campaign.repeat_seconds)."""
    pipe = pipeline(CREATORS)
    landing = await run(pipe, request("/?utm_source=ig&creator_id=ben"))
    cookie = cookie_of(pipe, landing)
    css = {"user-agent": CHROME, "sec-fetch-dest": "style", "accept": "text/css"}
    await run(pipe, request("/app.css", css, cookie=cookie))
    at = FIXED_TS
    for gap in gaps:
        at += timedelta(seconds=gap)
        reload = await run(pipe, request("/?utm_source=ig&creator_id=ben", cookie=cookie, ts=at))
        assert reload.events == []
    # Five different pages at that pace are still a script going through the site.
    for n, gap in enumerate(gaps):
        at += timedelta(seconds=gap)
        ex = await run(pipe, request(f"/p{n}", cookie=cookie, ts=at))
    (change,) = ex.events
    assert isinstance(change, VerdictChange) and change.note == "inhuman_cadence"


@pytest.mark.parametrize("late", ["robots_txt", "inhuman_cadence"])
async def test_a_late_signal_rescores_only_the_visitors_landings_inside_the_window(late: str) -> None:
    """A late signal tells of the visit it shows up in. A landing of the same visitor days
    before (their cookie kept, their state still in memory on a quiet site) keeps its verdict:
    a person who clicked ben's link on Monday and opens five tabs at once on Thursday took no
    credit back from Monday's click, which a payout may have approved since."""
    pipe = pipeline(CREATORS)
    first = await run(pipe, request("/?utm_source=ig&creator_id=ben"))
    cookie = cookie_of(pipe, first)
    css = {"user-agent": CHROME, "sec-fetch-dest": "style", "accept": "text/css"}
    await run(pipe, request("/app.css", css, cookie=cookie))
    later = FIXED_TS + timedelta(days=3)
    again = await run(pipe, request("/?utm_source=ig&creator_id=ben", cookie=cookie, ts=later))
    recent = touchpoint(again)
    if late == "robots_txt":
        robots = {"user-agent": CHROME, "sec-fetch-dest": "empty", "accept": "*/*"}
        ex = await run(pipe, request("/robots.txt", robots, cookie=cookie, ts=later + timedelta(seconds=5)))
    else:  # four more pages, each under a second after the one before: five tabs opened at once
        for n in range(1, 5):
            ex = await run(pipe, request(f"/p{n}", cookie=cookie, ts=later + timedelta(seconds=0.4 * n)))
    changes = [e for e in ex.events if isinstance(e, VerdictChange)]
    assert [(c.touchpoint_id, c.note) for c in changes] == [(recent.id, late)]
    assert touchpoint(first).verdict == "allow"


def test_inhuman_cadence() -> None:
    assert inhuman([0.0, 0.3, 0.6, 0.8, 0.95])  # five pages in a second
    assert inhuman([0.0, 10.0, 20.0, 30.0, 40.0])  # a metronome
    assert not inhuman([0.0, 4.0, 19.0, 22.0, 61.0])
    # Out of time order (a backfill of two servers' logs, one after the other): the same
    # person. Their gaps, taken in file order, were negative, so "each under a second".
    assert not inhuman([61.0, 22.0, 19.0, 4.0, 0.0])
    assert not inhuman([19.0, 22.0, 61.0, 0.0, 4.0])
    assert inhuman([0.8, 0.95, 0.0, 0.3, 0.6])
    assert not inhuman([0.0, 0.1, 0.2])


# -- creators, actions ----------------------------------------------------------------------------

CREATORS = """
[[creators]]
id = "anna"
verified = true
[[creators]]
id = "ben"
"""


@pytest.mark.parametrize(
    ("creator", "reasons"), [("anna", []), ("ben", ["unverified_creator"]), ("zoe", ["unknown_creator"])]
)
async def test_creator_standing(creator: str, reasons: list[str]) -> None:
    tp = touchpoint(await run(pipeline(CREATORS), request(f"/?creator_id={creator}")))
    assert tp.reasons == reasons


@pytest.mark.parametrize("creator", ["anna", "ben", "zoe"])
@pytest.mark.parametrize(
    "purpose",
    [
        {"x-purpose": "preview"},  # Meta's in-app browser loading an ad's landing page ahead
        {"sec-purpose": "prefetch"},  # Chrome's speculation rules, Custom Tabs' mayLaunchUrl
        {"sec-purpose": "prefetch;prerender"},
    ],
)
async def test_a_prefetched_landing_is_allowed_whatever_the_creators_standing(
    creator: str, purpose: dict[str, str]
) -> None:
    """The person who then taps sees the prefetched page and sends nothing more: the prefetch is
    the click. With a creator not (yet) verified it was sent to review (20 + 10, 20 + 15)."""
    headers = {**IN_APP["facebook-android"], **purpose}
    tp = touchpoint(await run(pipeline(CREATORS), request(f"/?utm_source=ig&creator_id={creator}", headers)))
    assert tp.verdict == "allow" and "prefetch" in tp.reasons


async def test_block_action_answers_403_and_still_records() -> None:
    pipe = pipeline("[bots]\non_block = 'block'\n")
    ex = await run(pipe, request(headers={"user-agent": "curl/8.4.0"}))
    assert ex.reply is not None and ex.reply.status == 403 and b"403" in ex.reply.body
    # A person refused by mistake (on_review = "block") on a phone reads it at the phone's width,
    # as the gateway's other pages (until 2026-12-07 it was laid out 980 pixels wide).
    assert b'<meta name="viewport" content="width=device-width,initial-scale=1">' in ex.reply.body
    assert touchpoint(ex).verdict == "block"
    asset = await run(pipe, request("/app.js", {"user-agent": "curl/8.4.0"}))
    assert asset.reply is not None and asset.events == []
    human = await run(pipe, request())
    assert human.reply is None


async def test_review_is_recorded_not_blocked_by_default() -> None:
    headers = {k: v for k, v in CHROME_HEADERS.items() if k not in ("accept-language", "sec-ch-ua")}
    ex = await run(pipeline(), request(headers=headers))
    assert touchpoint(ex).verdict == "review" and ex.reply is None


# -- privacy and bounded memory ------------------------------------------------------------------


async def test_ip_hash_is_keyed_and_rotates_daily() -> None:
    bots = bots_of(pipeline())
    day = datetime(2026, 11, 25, 8, tzinfo=FIXED_TS.tzinfo)
    same = bots.ip_hash("198.51.100.7", day), bots.ip_hash("198.51.100.7", day + timedelta(hours=15))
    assert same[0] == same[1] and "198" not in same[0]
    assert bots.ip_hash("198.51.100.7", day + timedelta(days=1)) != same[0]
    assert bots.ip_hash("198.51.100.8", day) != same[0]
    other = bots_of(pipeline())  # same secret, same day: the same hash on every node
    assert other.ip_hash("198.51.100.7", day) == same[0]


async def test_remembered_ip_hashes_are_bounded_and_stay_the_same() -> None:
    from addons.bots import IP_HASHES

    bots, fresh = bots_of(pipeline()), bots_of(pipeline())
    day = datetime(2026, 11, 25, 8, tzinfo=FIXED_TS.tzinfo)
    first = bots.ip_hash("10.0.0.0", day)
    for n in range(1, IP_HASHES + 10):
        bots.ip_hash(f"10.0.{n >> 8}.{n & 255}", day)
        assert len(bots._ip_hashes) <= IP_HASHES
    assert bots.ip_hash("10.0.0.0", day) == first == fresh.ip_hash("10.0.0.0", day)
    bots.ip_hash("10.0.0.0", day + timedelta(days=1))
    assert len(bots._ip_hashes) == 1  # a new day forgets the old day's hashes


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=20_000, allow_nan=False), min_size=1, max_size=60))
def test_a_visitors_window_counts_as_a_window_counter_does(times: list[float]) -> None:
    """The per-visitor velocity window lives in the visitor's state: it estimates exactly what
    a ``WindowCounter`` key would, as time moves on, skips windows, or (a late request) goes back."""
    counter = WindowCounter(window=3600, max_keys=4)
    state = VisitorState(-math.inf, int(times[0] // 3600))
    for now in times:
        assert state.hit(now, 3600.0) == counter.hit("visitor", now)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=20_000, allow_nan=False), min_size=1, max_size=60))
def test_a_window_counts_at_most_every_event_whatever_their_order(times: list[float]) -> None:
    """Out of time order (a backfill), the estimate still never exceeds the events counted."""
    counter = WindowCounter(window=3600, max_keys=4)
    for n, now in enumerate(times, 1):
        assert counter.hit("k", now) <= n


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=20_000, allow_nan=False), min_size=1, max_size=60))
@example([100.0, 3600.0])  # a new window's very start: the previous one counts whole
@example([4000.0, 3000.0, 4100.0])  # late, from the window before
def test_a_window_estimate_is_the_current_count_plus_the_previous_ones_share(times: list[float]) -> None:
    """The module's formula, to the last bit: ``current + previous * min(1, max(0, 1 - elapsed))``
    with ``elapsed`` the share of the current fixed window gone by (below 0 for a late event from
    the window before, which counts there whole). The counters clamp the share by comparisons
    rather than ``min``/``max`` (cheaper); this holds them to what those gave."""
    window = 3600.0
    counter = WindowCounter(window, max_keys=4)
    state = VisitorState(-math.inf, int(times[0] // window))
    slot, current, previous = int(times[0] // window), 0, 0
    for now in times:
        at = int(now // window)
        if at > slot:
            previous, current, slot = (current if at == slot + 1 else 0), 0, at
        elif at < slot - 1:
            slot, current, previous = at, 0, 0
        if at < slot:
            previous += 1
        else:
            current += 1
        expected = current + previous * min(1.0, max(0.0, 1.0 - (now - slot * window) / window))
        assert counter.hit("k", now) == expected
        assert state.hit(now, window) == expected


async def test_visitor_velocity_expires_with_its_window() -> None:
    pipe = pipeline("[bots]\nmax_per_visitor = 3\nwindow_seconds = 60\n")
    cookie = cookie_of(pipe, await run(pipe, request("/")))

    async def reasons(seconds: float) -> list[str]:
        target = f"/?utm_source=x&utm_content={seconds}"  # a landing each, no reload (folded)
        ex = request(target, cookie=cookie, ts=FIXED_TS + timedelta(seconds=seconds))
        return touchpoint(await run(pipe, ex)).reasons

    assert "visitor_velocity" not in await reasons(1)
    assert "visitor_velocity" not in await reasons(2)
    assert "visitor_velocity" in await reasons(3)  # the fourth page load within the minute
    assert "visitor_velocity" not in await reasons(200)  # windows later: forgotten


def test_held_items_stay_within_their_budget() -> None:
    held: HeldItems[int] = HeldItems(per_key=150, budget=1000)
    for n in range(200_000):
        held.add(("creator", f"10.0.{n >> 8 & 255}.{n & 255}"), n)
        held.add(("hot", "one ip"), n)
    assert held.held <= 1000 and len(held) <= 1000
    assert held.take(("hot", "one ip")) == list(range(200_000 - 150, 200_000))  # capped per key
    assert held.take(("hot", "one ip")) == []


async def test_a_burst_rescores_only_clicks_inside_the_window() -> None:
    pipe = pipeline("[bots]\nmax_per_creator_ip = 3\nwindow_seconds = 600\n")
    old = touchpoint(await run(pipe, request(ts=FIXED_TS)))
    for i in range(1, 4):  # 20 minutes later: the first click is outside the window
        last = await run(pipe, request(ts=FIXED_TS + timedelta(minutes=20, seconds=i)))
    assert touchpoint(last).verdict == "allow"
    burst = await run(pipe, request(ts=FIXED_TS + timedelta(minutes=20, seconds=5)))
    assert touchpoint(burst).reasons == ["creator_ip_velocity"]
    rescored = {e.touchpoint_id for e in burst.events if isinstance(e, VerdictChange)}
    assert len(rescored) == 3 and old.id not in rescored


def test_window_counter_memory_is_bounded_under_a_million_ips() -> None:
    counter = WindowCounter(window=3600, max_keys=4096)
    sources = DistinctSources(window=3600, max_keys=4096, cap=4)
    for n in range(1_000_000):
        ip = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
        counter.hit(ip, 1000.0)
        sources.add(ip, n, 1000.0)
        counter.hit("hot", 1000.0)  # the burst being measured stays in
    assert len(counter) == 4096 and len(sources) == 4096
    assert counter.hit("hot", 1000.0) == 1_000_001


async def test_the_click_id_tables_hold_no_click_id() -> None:
    """A click ID is kept up to 1,000 characters (TikTok's and Meta's pass 200): the two click-ID
    tables, 32,768 keys each by default, keep a 64-bit hash of it, so their worst case stays the
    measured one (see Velocity windows and the memory bound) whatever the IDs' length."""
    pipe = pipeline()
    bots = bots_of(pipe)
    for n in range(4):
        ex = await run(pipe, request("/?ttclid=E.C.P." + "x" * 994, ip=f"192.0.2.{n}"))
    assert touchpoint(ex).reasons == ["click_id_reuse"]  # still one click from four addresses
    for table in (bots.click_ips, bots.click_visitors):
        [key] = table._keys
        assert "x" * 994 not in repr(key) and sys.getsizeof(key) < 100


async def test_addon_state_is_bounded_by_max_tracked() -> None:
    pipe = pipeline("[bots]\nmax_tracked = 1024\n")
    bots = bots_of(pipe)
    for n in range(5000):
        await run(pipe, request(f"/?gclid=c{n}&creator_id=c{n}", ip=f"10.0.{n >> 8}.{n & 255}"))
        await run(pipe, request("/robots.txt", {"user-agent": "x"}, ip=f"10.1.{n >> 8}.{n & 255}"))
    tables = [bots.per_ip, bots.per_creator_ip, bots.visitors, bots.click_ips, bots.click_visitors]
    assert all(len(t) == 1024 for t in tables)
    assert len(bots.robots_ips) == 1024  # visitors (and their velocity windows): in the tables
    assert bots.creator_touches.held == 1024
    assert bots._cached_agent.cache_info().maxsize == 8192


def test_classify_agent_is_cached_per_instance() -> None:
    bots = bots_of(pipeline())
    for _ in range(3):
        bots.agent(CHROME)
    info = bots._cached_agent.cache_info()
    assert (info.hits, info.misses) == (2, 1)
    assert classify_agent(CHROME, bots.good, bots.detector).browser
    assert bots.agent("Mozilla/5.0 (" + "x" * 600).reasons == ("absurd_agent",)
    assert bots._cached_agent.cache_info().currsize == 1  # an overlong agent is never cached


async def test_a_robots_txt_ip_flag_lasts_one_window() -> None:
    pipe = pipeline()
    crawler_page = {"user-agent": CHROME, "accept": "text/html"}  # robots.txt asked for as a document
    await run(pipe, request("/robots.txt", crawler_page, ts=FIXED_TS))
    assert touchpoint(await run(pipe, request(ts=FIXED_TS + timedelta(minutes=59)))).reasons == ["robots_txt"]
    assert touchpoint(await run(pipe, request(ts=FIXED_TS + timedelta(minutes=61)))).reasons == []


async def test_a_visitors_robots_txt_flag_lasts_one_window() -> None:
    """The visitor's own flag (their cookie fetched robots.txt, from wherever) lasted as long as
    their state stayed in memory: on a quiet site, weeks. A landing of theirs in the hour after
    the fetch carries the signal, from another address too; one three weeks later does not."""
    pipe = pipeline()
    landing = await run(pipe, request())
    cookie = cookie_of(pipe, landing)
    css = {"user-agent": CHROME, "sec-fetch-dest": "style", "accept": "text/css"}
    await run(pipe, request("/app.css", css, cookie=cookie))  # a browser: no no_assets
    robots = {"user-agent": CHROME, "sec-fetch-dest": "empty", "accept": "*/*"}
    await run(pipe, request("/robots.txt", robots, cookie=cookie, ts=FIXED_TS + timedelta(seconds=10)))
    soon = request("/?utm_source=nl", cookie=cookie, ip="203.0.113.9", ts=FIXED_TS + timedelta(minutes=50))
    assert touchpoint(await run(pipe, soon)).reasons == ["robots_txt"]
    weeks = request("/?utm_source=fb", cookie=cookie, ip="203.0.113.9", ts=FIXED_TS + timedelta(days=21))
    tp = touchpoint(await run(pipe, weeks))
    assert (tp.verdict, tp.reasons) == ("allow", [])


async def test_a_robots_txt_flag_covers_the_fetchers_ipv6_64() -> None:
    """The flag is keyed by the source the velocity windows count (an IPv6 /64 as one): a
    script that fetched robots.txt from one address of its /64 lands from another."""
    pipe = pipeline()
    await run(pipe, request("/robots.txt", {"user-agent": CHROME}, ip="2001:db8:7:7::1"))
    assert touchpoint(await run(pipe, request(ip="2001:db8:7:7::2"))).reasons == ["robots_txt"]
    assert touchpoint(await run(pipe, request(ip="2001:db8:7:8::2"))).reasons == []


async def test_a_robots_txt_fetch_flags_only_its_own_agent_behind_a_shared_address() -> None:
    """An office NAT: the marketing team's SEO crawler asks for robots.txt; the colleagues who
    click a creator's link from the same address in the next hour are people, not that crawler.
    The fetcher's own agent from there is still flagged (a farm's script keeps its agent)."""
    pipe = pipeline()
    office = "198.51.100.60"
    await run(pipe, request("/robots.txt", {"user-agent": "Screaming Frog SEO Spider/20.0"}, ip=office))
    for headers in (CHROME_HEADERS, FIREFOX_HEADERS, IPHONE_HEADERS):
        tp = touchpoint(await run(pipe, request(headers=headers, ip=office)))
        assert (tp.verdict, tp.reasons) == ("allow", []), headers["user-agent"]
    await run(pipe, request("/robots.txt", {"user-agent": CHROME}, ip=office))
    assert touchpoint(await run(pipe, request(ip=office))).reasons == ["robots_txt"]
    assert touchpoint(await run(pipe, request(headers=FIREFOX_HEADERS, ip=office))).reasons == []


async def test_signals_and_refusals_are_counted_in_metrics() -> None:
    """Why landings are blocked, and how many requests the gateway refused, without reading
    the store: each signal that weighed on a scored landing, and each 403 the addon answered
    (a page load or an asset refused leaves no touchpoint behind)."""
    pipe = pipeline('[bots]\non_block = "block"\n')
    await run(pipe, request())
    curl = await run(pipe, request(headers={"user-agent": "curl/8"}))
    asset = await run(pipe, request("/app.js", {"user-agent": "curl/8"}))
    assert curl.reply is not None and asset.reply is not None and curl.reply.status == 403
    no_language = {k: v for k, v in CHROME_HEADERS.items() if k != "accept-language"}
    await run(pipe, request(headers={**no_language, "sec-purpose": "prefetch"}))
    sample = pipe.metrics.registry.get_sample_value
    assert sample("gateway_bot_signals_total", {"signal": "http_library"}) == 1  # the asset is no landing
    assert sample("gateway_bot_signals_total", {"signal": "no_accept_language"}) == 1
    assert sample("gateway_bot_signals_total", {"signal": "prefetch"}) == 1
    assert sample("gateway_bot_signals_total", {"signal": "headless"}) == 0  # every signal is listed
    assert sample("gateway_bot_refusals_total", {"verdict": "block"}) == 2
    assert sample("gateway_bot_refusals_total", {"verdict": "review"}) == 0


async def test_verdicts_are_counted_in_metrics() -> None:
    pipe = pipeline()
    await run(pipe, request())
    await run(pipe, request(headers={"user-agent": "curl/8"}))
    registry = pipe.metrics.registry
    assert registry.get_sample_value("gateway_bot_verdicts_total", {"verdict": "allow"}) == 1
    assert registry.get_sample_value("gateway_bot_verdicts_total", {"verdict": "block"}) == 1


@pytest.fixture(scope="module")
def shared_pipeline() -> Pipeline:
    return pipeline()


@settings(max_examples=300, deadline=None)
@given(
    agent=st.text(max_size=700),
    language=st.none() | st.text(max_size=20),
    hints=st.none() | st.text(max_size=40),
)
def test_any_agent_and_headers_give_a_verdict_never_an_error(
    shared_pipeline: Pipeline, agent: str, language: str | None, hints: str | None
) -> None:
    bots = bots_of(shared_pipeline)
    headers = {"user-agent": agent, "sec-fetch-dest": "document"}
    if language is not None:
        headers["accept-language"] = language
    if hints is not None:
        headers["sec-ch-ua"] = hints
        headers["sec-ch-ua-platform"] = hints
    ex = request("/?utm_source=x&gclid=" + str(len(agent)), headers)
    for _, addon in shared_pipeline.addons:  # the hooks themselves: the pipeline would swallow an error
        addon.request(ex)  # type: ignore[attr-defined]
    tp = touchpoint(ex)
    assert tp.verdict in ("allow", "review", "block", "bot") and 0 <= (tp.bot_score or 0) <= 100
    assert all(bots.weight(r) for r in tp.reasons if r != "good_crawler")


@settings(max_examples=200, deadline=None)
@given(gaps=st.lists(st.floats(min_value=0, max_value=250, allow_nan=False), min_size=1, max_size=200))
def test_window_counter_estimate_is_bounded_by_the_true_counts(gaps: list[float]) -> None:
    """The estimate never misses an event of the current fixed window, and never counts one
    older than two windows: current-window count <= estimate <= last-two-windows count. (It
    assumes the previous window's events were spread evenly, so it may round a burst at that
    window's very end down a little.)"""
    window = 100.0
    counter = WindowCounter(window, max_keys=4)
    now, times = 10_000.0, []
    for gap in gaps:
        now += gap
        times.append(now)
        estimate = counter.hit("k", now)
        in_current = sum(1 for t in times if t // window == now // window)
        in_two = sum(1 for t in times if now - t < 2 * window)
        assert in_current <= estimate <= in_two + 1e-9


async def test_a_reloaded_creator_link_is_one_touchpoint_and_still_counts_for_velocity() -> None:
    """A reload of a landing (``campaign.repeat_seconds``) records no touchpoint, but it is a
    landing still: a burst of reloads from one network trips ``creator_ip_velocity`` as a burst
    of landings did, and re-scores the one touchpoint it made (before 2026-12-05 each reload
    was a touchpoint of its own, scored; folding must not blind the velocity windows)."""
    pipe = pipeline("[bots]\nmax_per_creator_ip = 3\n")
    first = await run(pipe, request())
    tp = touchpoint(first)
    cookie = cookie_of(pipe, first)
    for i in range(1, 4):
        reload = await run(pipe, request(cookie=cookie, ts=FIXED_TS + timedelta(seconds=20 * i)))
        assert reload.folded is not None and reload.folded.creator_id == "anna"
        assert not [e for e in reload.events if isinstance(e, Touchpoint)]
    changes = [e for e in reload.events if isinstance(e, VerdictChange)]
    assert [(c.touchpoint_id, c.note) for c in changes] == [(tp.id, "creator_ip_velocity")]


def test_the_readmes_click_farm_fades_as_it_says() -> None:
    """README, "Worked example: a click-farm burst": 1,000 clicks from 12:00 to 12:11 count as
    816 at 13:11, 150 at 13:51 (so a click then, the 151st, is still over
    ``max_per_creator_ip``) and 133 at 13:52, when a click is ``allow`` again. It said 149 at
    13:51, where a click was still blocked."""
    noon = 1_796_472_000.0  # 12:00 UTC, on an hour
    counter = WindowCounter(window=3600, max_keys=4)
    for i in range(1000):
        counter.hit("ben@ip", noon + i * 660 / 1000)
    # What the burst still counts then: a click's estimate less the click itself.
    after = {m: copy.deepcopy(counter).hit("ben@ip", noon + 3600 + m * 60) - 1 for m in (11, 51, 52)}
    readme = " ".join((Path(__file__).parents[2] / "README.md").read_text().split())
    said = [re.search(rf"(\d+) at 13:{m}", readme) for m in (11, 51, 52)]
    assert [int(found[1]) if found else None for found in said] == [int(after[m]) for m in (11, 51, 52)]
    max_per_creator_ip = BotsOptions().max_per_creator_ip
    assert after[51] + 1 > max_per_creator_ip >= after[52] + 1
