"""Pure bot signals: what a user agent says, whether headers agree with it, page cadence, and
which source (an IPv4 address, an IPv6 /64) an address counts as.

Module-level helpers with no state: the bots addon calls them (and caches the
agent verdicts); tests call them directly. The crawler database is the
``crawlerdetect`` package's, searched as ``addons/crawlers.py`` compiles it; the own rules
here cover what it does not name: empty and absurd agents, HTTP libraries and runtimes,
headless browsers.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from addons.crawlers import CrawlerPatterns
from gateway.pipeline import Exchange

MAX_AGENT = 512
"""Longest agent judged on what it says; a longer one is absurd (and never cached)."""
CADENCE = 5
"""Page loads whose spacing is judged."""
_LIBRARY = re.compile(
    r"^(curl|wget|python|aiohttp|httpx|go-http-client|okhttp|java/|apache-httpclient|libwww-perl|"
    r"node-fetch|node|axios|undici|got\b|bun/|deno/|scrapy|guzzle|ruby|php/|postmanruntime|insomnia|"
    r"httpie|powershell|winhttp|reqwest|hackney|faraday|http\.rb|dart:io|cfnetwork)",
    re.IGNORECASE,
)
_LIBRARY_TOKEN = re.compile(r"\b(?:Windows)?PowerShell/\d")
"""Libraries that send a browser-like ``Mozilla/5.0 (…)`` start and name themselves after it:
PowerShell's ``Invoke-WebRequest`` (``… en-US) PowerShell/7.5.0``, ``WindowsPowerShell/5.1``)."""
_HEADLESS = re.compile(
    r"headless|phantomjs|puppeteer|playwright|selenium|webdriver|slimerjs|lighthouse", re.IGNORECASE
)
_CHROME = re.compile(r"(?:Chrome|Chromium)/(\d+)")
_ANDROID_DEVICE = re.compile(r"^Mozilla/5\.0 \((Linux; (?:U; )?Android[^;)]*+)[^)]*\)")
"""An Android browser's system comment: what the device says of itself (its language, model
and build) follows the Android version. The crawler database flags any "bot" in an agent, so a
phone whose model holds it (Fossibot's rugged phones: ``Fossibot F102``) would be a crawler.
The version part is possessive (``*+``): the rest of the comment may not take it back, so an
unclosed comment fails at once instead of at every split of the two (quadratic)."""
_OPERA_MINI = re.compile(r"^Opera/9\.80 \([^)]*Opera Mini/")
"""Opera Mini's data-saving ("extreme") mode: its servers render the page and fetch it with the
Presto-era agent ``Opera/9.80 (Android; Opera Mini/…) Presto/2.12.423 Version/12.16``, on
behalf of people on slow or costly connections (never client hints)."""
_WEBVIEW_VERSION = "Version/4.0 Chrome/"
"""The Android WebView agent's fixed token (Android CDD), kept by apps that drop "; wv"."""
_PLATFORMS = (("Windows", "Windows"), ("Android", "Android"), ("iPhone", "iOS"), ("iPad", "iOS"),
              ("CrOS", "Chrome OS"), ("Macintosh", "macOS"), ("Linux", "Linux"))  # fmt: skip
_SAME_PLATFORM = {name: {name} for _, name in _PLATFORMS} | {
    "Linux": {"Linux", "Android"},
    "Chrome OS": {"Chrome OS", "Chromium OS"},
}
"""Client-hint platforms that agree with the agent's (Android's "desktop site" mode says Linux;
Chromium's own builds of ChromeOS, FydeOS among them, say "Chromium OS" with the same agent)."""
_ASSET_DESTS = frozenset({"style", "script", "image", "font", "audio", "video", "track", "manifest"})
_ASSET_SUFFIXES = (".css", ".js", ".mjs", ".png", ".jpg", ".jpeg", ".gif", ".webp", ".avif", ".svg",
                   ".ico", ".woff", ".woff2", ".ttf", ".map")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Agent:
    """What a User-Agent says, decided once per distinct agent and cached."""

    reasons: tuple[str, ...] = ()
    good: bool = False
    """A known good crawler (search engine, link preview): labelled ``bot``, never blocked."""
    browser: bool = False
    chromium: bool = False
    """Chromium 90+: sends ``sec-ch-ua`` on https."""
    no_hints: bool = False
    """Firefox or Safari: never sends ``sec-ch-ua``."""
    platform: str | None = None


ABSURD = Agent(("absurd_agent",))


def classify_agent(agent: str, good: re.Pattern[str], detector: CrawlerPatterns) -> Agent:
    """Own rules first (empty, absurd, HTTP libraries, headless), then the crawler database."""
    agent = agent.strip()
    if not agent:
        return Agent(("empty_agent",))
    if len(agent) > MAX_AGENT or not agent.isprintable():
        return ABSURD
    if good.search(agent):
        return Agent(good=True)
    if _LIBRARY.match(agent) or _LIBRARY_TOKEN.search(agent):
        return Agent(("http_library",))
    if _HEADLESS.search(agent):
        return Agent(("headless",))
    if detector.is_crawler(agent) and detector.is_crawler(_without_device(agent)):
        return Agent(("crawler",))
    opera_mini = _OPERA_MINI.match(agent) is not None
    if not agent.startswith("Mozilla/5.0 (") and not opera_mini:
        return ABSURD
    chrome = _CHROME.search(agent)
    platform = next((name for token, name in _PLATFORMS if token in agent), None)
    is_ios = platform == "iOS"
    # Android WebViews (in-app browsers: most influencer traffic) may send no client hints: none
    # at all once the app rewrites its agent, as WebView-based browsers (DuckDuckGo) do, dropping
    # "; wv" but keeping WebView's "Version/4.0 Chrome/…", which Chrome itself never sends.
    webview = "; wv)" in agent or _WEBVIEW_VERSION in agent
    return Agent(
        browser=True,
        chromium=chrome is not None and int(chrome.group(1)) >= 90 and not is_ios and not webview,
        no_hints=chrome is None and ("Firefox/" in agent or "Safari/" in agent or is_ios or opera_mini),
        platform=platform,
    )


def _without_device(agent: str) -> str:
    """``agent`` with an Android browser's device model left out (as Chrome's reduced agent
    leaves it out: ``K``), for the crawler database to judge what the agent says of itself. A
    crawler names itself outside that comment (Googlebot's smartphone agent, PetalBot)."""
    android = _ANDROID_DEVICE.match(agent)
    if android is None:
        return agent
    return f"Mozilla/5.0 ({android.group(1)}; K){agent[android.end() :]}"


@functools.lru_cache(maxsize=4096)
def network_of(ip: str) -> str:
    """The source velocity counts ``ip`` as: an IPv4 address itself, an IPv6 address as its
    /64. A household, a phone on a mobile network or a server is given a whole /64 and picks
    its addresses in it freely (privacy addresses change daily; a farm can take a fresh one for
    every click), so one /64 is one source as one NATed IPv4 address is."""
    if ":" not in ip:
        return ip
    try:
        addr = ipaddress.IPv6Address(ip.partition("%")[0])
    except ValueError:
        return ip
    if addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return f"{ipaddress.IPv6Address(int(addr) >> 64 << 64)}/64"


def header_reasons(agent: Agent, headers: Mapping[str, str], scheme: str) -> list[str]:
    """Header consistency for an agent that claims to be a browser."""
    get = headers.get
    reasons = []
    if not get("accept-language"):
        reasons.append("no_accept_language")
    hints = get("sec-ch-ua")
    if agent.chromium and scheme == "https" and hints is None:
        reasons.append("no_client_hints")
    if hints is not None and "Headless" in hints:  # a spoofed agent; the brand list still tells
        reasons.append("headless")
    platform = get("sec-ch-ua-platform")
    if (
        (agent.no_hints and hints is not None)
        or (platform and agent.platform and platform.strip('"') not in _SAME_PLATFORM[agent.platform])
        or (get("sec-ch-ua-mobile") == "?1" and agent.platform in ("Windows", "macOS"))
    ):
        reasons.append("header_mismatch")
    return reasons


def inhuman(times: Sequence[float]) -> bool:
    """``CADENCE`` page loads each under a second apart, or spaced like a metronome. Judged in
    time order: a backfill may replay a visitor's loads out of it (logs of two servers)."""
    if len(times) < CADENCE:
        return False
    gaps = [b - a for a, b in itertools.pairwise(sorted(times))]
    mean = sum(gaps) / len(gaps)
    return max(gaps) < 1.0 or (mean < 120 and max(gaps) - min(gaps) < 0.02 * mean)


def is_asset(ex: Exchange) -> bool:
    dest = ex.request.headers.get("sec-fetch-dest")
    if dest is not None:
        return dest in _ASSET_DESTS
    return ex.request.path.endswith(_ASSET_SUFFIXES)


def is_prefetch(headers: Mapping[str, str]) -> bool:
    """A speculative load (prefetch, prerender, link preview): nobody clicked yet."""
    get = headers.get
    purpose = get("sec-purpose") or get("purpose") or get("x-purpose") or get("x-moz") or ""
    return "prefetch" in purpose or "preview" in purpose
