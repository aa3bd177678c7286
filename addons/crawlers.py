"""The crawler database (the ``crawlerdetect`` package's patterns), compiled so that the time
one agent costs grows with its length, never with its square, and stays near an ordinary
landing's for the longest agent.

crawlerdetect joins its ~1,500 patterns into one alternation that ``search`` scans. One of
them, ``[a-z0-9\\-_]*(bot|crawl|…)``, starts with an unbounded repetition: at each of the
agent's positions it runs to the end of the run of letters and digits, then backs off one
character at a time trying every word, so a 512-character agent of letters cost ~25 ms
uncached (~175 ordinary agents), and a visitor sending a new one with each request chose
that cost. A leading repetition that may match nothing changes nothing about *whether* a
``search`` finds a match (the words match where the repetition would have ended), so it is
dropped here.

Even so, ``re`` tries every alternative at every position (~10 µs a character). Nearly all
patterns start with plain text (most are nothing else), so an ASCII agent is lower-cased once,
its 3-character substrings looked up in an index of those texts, and only a pattern whose text
is in the agent is searched; the ``^``-anchored ones are tried at position 0 only. That is the
same verdict: every pattern consumes at least one character (checked here, else the one
alternation is searched), so any match counts, and an alternation matches somewhere exactly
when one of its parts does. An agent beyond ASCII is looked up the same way, folded as
``re.IGNORECASE`` matches letters (``ASCII_FOLD``: the long s, U+017F, is an ``s`` to it, which
``str.lower`` leaves), so one ``é`` does not send a long agent to the slow search. Reads the package's data
only; owns the compiled patterns; no cache (the bots addon caches verdicts).
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator, Sequence

from crawlerdetect.providers.crawlers import data as CRAWLERS
from crawlerdetect.providers.exclusions import data as EXCLUSIONS

_LEADING_REPEAT = re.compile(r"(?:\[(?:\\.|[^\]\\])*\]|\.|\\[wWdDsS])\*")
"""An alternative's leading ``[class]*``, ``.*`` or ``\\w*``: it may match nothing."""

_CHAR = r"(?:[^.^$*+?{}\[\]|()\\]|\\[^0-9A-Za-z])"
"""One character matching itself: not a metacharacter, or an escaped non-alphanumeric."""
_WORD = re.compile(f"{_CHAR}+")
_WORDS = re.compile(rf"\({_CHAR}+(?:\|{_CHAR}+)*\)")
"""A group of plain words, ``(bot|crawl|…)``."""
_NOT_EMPTY = re.compile(rf"{_CHAR}(?![*?{{+])")
"""Starts with a character that is not optional: the pattern never matches nothing."""
_TEXT = re.compile(rf"(?:{_CHAR}(?![*?{{+]))+")
"""The plain text a pattern starts with: each character once, none optional or repeated."""
_MIN_TEXT = 3
ASCII_FOLD = {
    **{
        ord(upper): lower for upper, lower in zip(string.ascii_uppercase, string.ascii_lowercase, strict=True)
    },
    0x130: "i",  # LATIN CAPITAL LETTER I WITH DOT ABOVE
    0x131: "i",  # LATIN SMALL LETTER DOTLESS I
    0x17F: "s",  # LATIN SMALL LETTER LONG S
    0x212A: "k",  # KELVIN SIGN
}
"""An agent as the patterns' plain text (all ASCII, lower-cased) is looked for in it: its ASCII
letters lower-cased, and the four letters beyond ASCII that ``re.IGNORECASE`` matches to an
ASCII one made that one (checked against ``re`` over all of Unicode by the tests); any other
character left as it is, which no plain text holds. ``str.lower`` would not do: it makes
U+0130 two characters and leaves U+017F and U+0131 as they are."""
_BACKREFERENCE = re.compile(r"\\[0-9]|\(\?P=")


def without_leading_repeats(patterns: Sequence[str]) -> list[str]:
    """``patterns`` with each one's leading may-match-nothing repetition removed."""
    kept = []
    for pattern in patterns:
        rest = pattern
        while (lead := _LEADING_REPEAT.match(rest)) is not None and lead.end() < len(rest):
            rest = rest[lead.end() :]
        kept.append(rest)
    return kept


def branches(pattern: str) -> Iterator[str]:
    """``pattern`` split at its top-level ``|`` (outside groups and character classes)."""
    depth, start, i, in_class = 0, 0, 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 1
        elif in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            i += 1 if pattern[i + 1 : i + 2] in ("^", "") else 0
            i += 1 if pattern[i + 1 : i + 2] == "]" else 0
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            yield pattern[start:i]
            start = i + 1
        i += 1
    yield pattern[start:]


def _unescape(word: str) -> str:
    return re.sub(r"\\(.)", r"\1", word).lower()


class Split:
    """The patterns indexed by the first characters of the plain text each one starts with
    (lower-cased): a plain word is looked for as a substring, any other pattern searched only
    if its text is in the agent; the ``^``-anchored ones are tried at position 0 only."""

    def __init__(self, needles: list[tuple[str, str | None]], anchored: list[str]) -> None:
        self.size = min((len(needle) for needle, _ in needles), default=1)
        self.index: dict[str, list[tuple[str, re.Pattern[str] | None]]] = {}
        for needle, pattern in needles:
            compiled = None if pattern is None else re.compile(pattern, re.IGNORECASE)
            self.index.setdefault(needle[: self.size], []).append((needle, compiled))
        self.anchored = re.compile(f"(?:{'|'.join(anchored) or '(?!)'})", re.IGNORECASE)

    def matches(self, agent: str) -> bool:
        """Whether any pattern matches ``agent`` somewhere."""
        if self.anchored.match(agent) is not None:
            return True
        lowered = agent.lower() if agent.isascii() else agent.translate(ASCII_FOLD)
        size = self.size
        starts = {lowered[i : i + size] for i in range(len(lowered) - size + 1)}
        return any(
            needle in lowered and (pattern is None or pattern.search(agent) is not None)
            for start in starts & self.index.keys()
            for needle, pattern in self.index[start]
        )


def split(patterns: Sequence[str]) -> Split | None:
    """``patterns`` as a ``Split``, or None if one of them might match nothing, starts with
    no plain text, or refers to a group by number (then only the one alternation gives
    crawlerdetect's verdict)."""
    needles: list[tuple[str, str | None]] = []
    anchored: list[str] = []
    for pattern in patterns:
        for branch in branches(pattern):
            if _BACKREFERENCE.search(branch) or not branch.isascii():
                return None
            if _WORD.fullmatch(branch):
                needles.append((_unescape(branch), None))
            elif _WORDS.fullmatch(branch):
                needles.extend((_unescape(word), None) for word in branch[1:-1].split("|"))
            elif branch.startswith("^") and _NOT_EMPTY.match(branch[1:]):
                anchored.append(branch)
            elif (text := _TEXT.match(branch)) is not None and text.end() >= _MIN_TEXT:
                needles.append((_unescape(text.group()), branch))
            else:
                return None
    return Split(needles, anchored)


class CrawlerPatterns:
    """``is_crawler`` as crawlerdetect's: the agent with the exclusions (browser and OS
    tokens) removed, then searched for any crawler pattern."""

    def __init__(self, patterns: Sequence[str] = CRAWLERS) -> None:
        self.exclusions = re.compile(f"({'|'.join(EXCLUSIONS)})", re.IGNORECASE)
        self.alternatives = without_leading_repeats(patterns)
        self.crawlers = re.compile(f"({'|'.join(self.alternatives)})", re.IGNORECASE)
        self.split = split(self.alternatives)

    def is_crawler(self, agent: str) -> bool:
        agent = self.exclusions.sub("", agent.strip())
        if not agent:
            return False
        if self.split is not None:
            return self.split.matches(agent)
        return self.searched(agent)

    def searched(self, agent: str) -> bool:
        """The verdict of the one alternation on ``agent`` (exclusions already removed): a
        match whose groups are all empty does not count."""
        return (found := self.crawlers.search(agent)) is not None and any(found.groups())
