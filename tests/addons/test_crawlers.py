"""The crawler database as the bots addon searches it: crawlerdetect's verdicts, at a cost
linear in the agent's length (no alternative starts with a repetition that may match nothing)."""

from __future__ import annotations

import random
import re
import re._constants as sre_constants
import re._parser as sre_parse

import pytest
from crawlerdetect import CrawlerDetect
from crawlerdetect.crawlerdetect import get_compiled_crawler_regex
from hypothesis import given, settings
from hypothesis import strategies as st

from addons.crawlers import CrawlerPatterns, branches, split, without_leading_repeats
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


BRANCHES = [branch for pattern in PATTERNS.alternatives for branch in branches(pattern)]
PLAIN = [b for b in BRANCHES if re.fullmatch(r"(?:[\w !%,:;@'-]|\\[^\w])+", b)]
"""The patterns that are plain text, as crawlerdetect writes them (``github\\.com``)."""
REGEXES = [b for b in BRANCHES if b not in PLAIN and not re.fullmatch(r"\((\w+\|)+\w+\)", b)]


def test_every_pattern_is_looked_up_by_its_text_or_at_position_0() -> None:
    """crawlerdetect's patterns all take the cheap path (an upgrade adding one that may match
    nothing would make ``split`` give up, and this test say so)."""
    assert PATTERNS.split is not None
    indexed = sum(map(len, PATTERNS.split.index.values()))
    anchored = [b for b in BRANCHES if b.startswith("^")]
    assert indexed + len(anchored) == len(BRANCHES) + 15  # the one group of 16 words
    assert len(PLAIN) > 1300 and len(anchored) > 50 and 20 < len(REGEXES) < 100


@pytest.mark.parametrize(
    ("pattern", "parts"),
    [
        (r"^Ruby|Ruby\/[0-9]", [r"^Ruby", r"Ruby\/[0-9]"]),
        (r"(bot|crawl)", [r"(bot|crawl)"]),
        (r"a[|]b|c[]|]d|e[^]|]f|g\|h", [r"a[|]b", r"c[]|]d", r"e[^]|]f", r"g\|h"]),
        (r"x(?:y|z)w|v", [r"x(?:y|z)w", "v"]),
    ],
)
def test_a_pattern_splits_at_its_top_level_bars(pattern: str, parts: list[str]) -> None:
    assert list(branches(pattern)) == parts


@pytest.mark.parametrize("patterns", [["bot", "x?"], ["bot", "^a*"], ["bot", r"(a)b\1"], ["[a-z]bot"]])
def test_a_pattern_that_may_match_nothing_keeps_the_one_alternation(patterns: list[str]) -> None:
    assert split(patterns) is None


def test_an_empty_first_match_still_counts_for_nothing() -> None:
    """``x?`` matches nothing at position 0 before ``bot`` is tried: crawlerdetect says no."""
    detector = CrawlerPatterns(["x?", "bot"])
    assert detector.split is None
    assert not detector.is_crawler("a bot")
    assert CrawlerPatterns(["xy", "bot"]).is_crawler("a BOT")


def _cased(text: str, rng: random.Random) -> str:
    return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in text)


def test_each_plain_pattern_is_found_in_any_case_anywhere() -> None:
    rng = random.Random(7)
    context = "abcxyz0123 ;:/()-_.ABCXYZé"
    wrong, found = [], 0
    for branch in PLAIN:
        text = re.sub(r"\\(.)", r"\1", branch)
        for _ in range(3):
            before = "".join(rng.choices(context, k=rng.randrange(12)))
            after = "".join(rng.choices(context, k=rng.randrange(12)))
            agent = before + _cased(text, rng) + after
            verdict = PATTERNS.is_crawler(agent)
            found += verdict
            if verdict != DETECT.is_crawler(agent):
                wrong.append(agent)
    assert wrong == []
    assert found > 0.9 * 3 * len(PLAIN)


@pytest.mark.parametrize("pattern", REGEXES)
@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_each_regex_pattern_is_found_at_and_off_position_0(pattern: str, data: st.DataObject) -> None:
    sample = data.draw(st.from_regex(re.compile(pattern, re.IGNORECASE), fullmatch=True))
    before = data.draw(st.sampled_from(["", "", "x", "Mozilla/5.0 (", "a bc/1.0 "]))
    after = data.draw(st.sampled_from(["", "", "x", " (+http://e.com)", "\n"]))
    agent = before + sample + after
    assert PATTERNS.is_crawler(agent) == DETECT.is_crawler(agent)


@settings(max_examples=500)
@given(
    st.lists(
        st.sampled_from(
            [
                "bot",
                "Yandex",
                "YandexSearch",
                "java/",
                "Ruby/2",
                "b0t",
                "Grabber",
                "pider",
                "\u017f",
                "\u212a",
                "\u0130",
            ]
        )
        | st.text(alphabet="abotcrwlspidezKSIJAVY-_ /0.;()\u017f\u212a\u0130\u0131é", max_size=8),
        max_size=6,
    ).map("".join)
)
def test_verdicts_are_crawlerdetects_on_any_case_and_script(agent: str) -> None:
    assert PATTERNS.is_crawler(agent) == DETECT.is_crawler(agent)


def test_the_android_device_comment_is_found_in_linear_time() -> None:
    """Its version part may not give back what the rest of the comment takes (possessive): an
    unclosed comment was tried at every split of the two, quadratic in the agent's length."""
    assert "[^;)]*+" in _ANDROID_DEVICE.pattern
    found = _ANDROID_DEVICE.match("Mozilla/5.0 (Linux; Android 13; Pixel 8 Build/X) AppleWebKit")
    assert found is not None and found.group(1) == "Linux; Android 13"
    assert _ANDROID_DEVICE.match("Mozilla/5.0 (Linux; Android 13)").group(1) == "Linux; Android 13"  # type: ignore[union-attr]
    assert _ANDROID_DEVICE.match("Mozilla/5.0 (Linux; Android " + "a" * 480) is None


def test_the_letters_case_folding_takes_to_ascii_are_the_ones_the_fast_path_folds() -> None:
    """`re.IGNORECASE` matches four letters outside ASCII to ASCII ones (the long s, the
    Kelvin sign, the dotted and the dotless I): the fast path folds exactly those, so an agent
    with any other non-ASCII letter (one `é`) is looked up as cheaply as an ASCII one, where it
    was searched as one alternation (~5 ms for 512 characters: an attacker's one `é` away)."""
    import sys

    from addons.crawlers import ASCII_FOLD

    letter = re.compile("[a-z]", re.IGNORECASE)
    to_ascii = {cp for cp in range(0x80, sys.maxunicode + 1) if letter.fullmatch(chr(cp))}
    assert {cp for cp in ASCII_FOLD if cp >= 0x80} == to_ascii
    for cp in to_ascii:
        assert re.fullmatch(ASCII_FOLD[cp], chr(cp), re.IGNORECASE)
    for agent in (
        "Mozilla/5.0 (compatible; Googlebot/2.1) é",
        "Zoë's café/1.0 " + "é" * 500,
        "Mozilla/5.0 (compatible; \u212alout/1.0) é",  # a Kelvin sign for the k
        "\u0130ndexer é",
    ):
        assert PATTERNS.is_crawler(agent) == DETECT.is_crawler(agent), agent
