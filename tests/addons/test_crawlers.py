"""The crawler database as the bots addon searches it: crawlerdetect's verdicts, at a cost
linear in the agent's length (no alternative starts with a repetition that may match nothing)."""

from __future__ import annotations

import re
import re._constants as sre_constants
import re._parser as sre_parse

import pytest
from crawlerdetect import CrawlerDetect
from crawlerdetect.crawlerdetect import get_compiled_crawler_regex
from hypothesis import given, settings
from hypothesis import strategies as st

from addons.crawlers import CrawlerPatterns, without_leading_repeats
from addons.signals import _ANDROID_DEVICE
from tests.addons.test_bots import CHROME, bots_of, pipeline


def leading_repeats(pattern: re.Pattern[str]) -> list[str]:
    """The alternatives of ``pattern``'s top-level alternation that start with an unbounded
    repetition able to match nothing: ``search`` runs each to the end of its run at every
    position of the text, then backs off a character at a time (quadratic in the run)."""
    parsed = sre_parse.parse(pattern.pattern, pattern.flags)
    items = list(parsed)
    if len(items) == 1 and items[0][0] is sre_constants.SUBPATTERN:
        items = list(items[0][1][-1])
    if len(items) != 1 or items[0][0] is not sre_constants.BRANCH:
        return []
    found = []
    for branch in items[0][1][1]:
        first = list(branch)[:1]
        if first and first[0][0] in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT):
            low, high, _ = first[0][1]
            if low == 0 and high == sre_constants.MAXREPEAT:
                found.append(str(branch)[:80])
    return found


def test_the_check_finds_crawlerdetects_own_quadratic_alternative() -> None:
    """The check below can fail: crawlerdetect's own compiled pattern has one."""
    assert len(leading_repeats(get_compiled_crawler_regex())) == 1


def test_the_agent_verdict_searches_no_alternative_with_a_leading_repetition() -> None:
    bots = bots_of(pipeline())
    assert leading_repeats(bots.detector.crawlers) == []
    assert bots.agent(CHROME).browser


def test_a_trailing_pattern_is_kept_whole() -> None:
    assert without_leading_repeats([r"[a-z]*bot", r".*", r"Java.*outbrain"]) == [
        "bot",
        ".*",
        "Java.*outbrain",
    ]


AGENTS = [
    CHROME,
    "Googlebot/2.1 (+http://www.google.com/bot.html)",
    "my-fancybot/1.0",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0",
    "Mozilla/5.0 (Linux; Android 13; Fossibot F102) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131 Mobile",
    "Mozilla/5.0",
    "uptime-checker",
    "YandexSearch/1.0",
    "Java/1.8 outbrain",
    "a" * 512,
    "",
    "   ",
]


@pytest.mark.parametrize("agent", AGENTS)
def test_verdicts_are_crawlerdetects(agent: str) -> None:
    assert CrawlerPatterns().is_crawler(agent) == CrawlerDetect().is_crawler(agent)


PATTERNS = CrawlerPatterns()
DETECT = CrawlerDetect()


@settings(max_examples=300)
@given(st.text(alphabet="abotcrwlspidez-_ /0.;()", max_size=60))
def test_verdicts_are_crawlerdetects_on_any_agent(agent: str) -> None:
    assert PATTERNS.is_crawler(agent) == DETECT.is_crawler(agent)


def test_the_android_device_comment_is_found_in_linear_time() -> None:
    """Its version part may not give back what the rest of the comment takes (possessive): an
    unclosed comment was tried at every split of the two, quadratic in the agent's length."""
    assert "[^;)]*+" in _ANDROID_DEVICE.pattern
    found = _ANDROID_DEVICE.match("Mozilla/5.0 (Linux; Android 13; Pixel 8 Build/X) AppleWebKit")
    assert found is not None and found.group(1) == "Linux; Android 13"
    assert _ANDROID_DEVICE.match("Mozilla/5.0 (Linux; Android 13)").group(1) == "Linux; Android 13"  # type: ignore[union-attr]
    assert _ANDROID_DEVICE.match("Mozilla/5.0 (Linux; Android " + "a" * 480) is None
