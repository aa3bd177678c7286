"""The crawler database (the ``crawlerdetect`` package's patterns), compiled so that the time
one agent costs grows with its length, never with its square.

crawlerdetect joins its ~1,500 patterns into one alternation that ``search`` scans. One of
them, ``[a-z0-9\\-_]*(bot|crawl|…)``, starts with an unbounded repetition: at each of the
agent's positions it runs to the end of the run of letters and digits, then backs off one
character at a time trying every word, so a 512-character agent of letters cost ~25 ms
uncached (~175 ordinary agents), and a visitor sending a new one with each request chose
that cost. A leading repetition that may match nothing changes nothing about *whether* a
``search`` finds a match (the words match where the repetition would have ended), so it is
dropped here. Reads the package's data only; owns the compiled patterns; no cache (the bots
addon caches verdicts).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from crawlerdetect.providers.crawlers import data as CRAWLERS
from crawlerdetect.providers.exclusions import data as EXCLUSIONS

_LEADING_REPEAT = re.compile(r"(?:\[(?:\\.|[^\]\\])*\]|\.|\\[wWdDsS])\*")
"""An alternative's leading ``[class]*``, ``.*`` or ``\\w*``: it may match nothing."""


def without_leading_repeats(patterns: Sequence[str]) -> list[str]:
    """``patterns`` with each one's leading may-match-nothing repetition removed."""
    kept = []
    for pattern in patterns:
        rest = pattern
        while (lead := _LEADING_REPEAT.match(rest)) is not None and lead.end() < len(rest):
            rest = rest[lead.end() :]
        kept.append(rest)
    return kept


class CrawlerPatterns:
    """``is_crawler`` as crawlerdetect's: the agent with the exclusions (browser and OS
    tokens) removed, then searched for any crawler pattern."""

    def __init__(self) -> None:
        self.exclusions = re.compile(f"({'|'.join(EXCLUSIONS)})", re.IGNORECASE)
        self.alternatives = without_leading_repeats(CRAWLERS)
        self.crawlers = re.compile(f"({'|'.join(self.alternatives)})", re.IGNORECASE)

    def is_crawler(self, agent: str) -> bool:
        agent = self.exclusions.sub("", agent.strip())
        return bool(agent) and (found := self.crawlers.search(agent)) is not None and any(found.groups())
