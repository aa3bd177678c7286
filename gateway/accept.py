"""Which format a client asks for in its ``Accept`` header: JSON, CSV or NDJSON, as the admin
API's reports and listings both answer (``format=`` in the query, when given, decides instead)."""

from __future__ import annotations

import re
from collections.abc import Mapping

DOWNLOAD_MEDIA = {"csv": "text/csv", "ndjson": "application/x-ndjson"}
MEDIA = {"json": "application/json", **DOWNLOAD_MEDIA}


def accepted_format(accept: str) -> str:
    """The format an ``Accept`` header prefers (RFC 9110, 12.5.1). Each format a report
    comes in (JSON, CSV, NDJSON) takes the ``q`` of the most specific range that names it
    (``text/csv``, then ``text/*``, then ``*/*``); the highest wins, then the one whose range
    is listed first, then JSON, CSV, NDJSON in that order. A malformed ``q`` counts as 0. JSON
    when the header is absent or accepts none of them (a 406 would help no one: a browser's
    ``text/html`` gets the JSON it can show)."""
    if not accept.strip():
        return "json"
    ranges: dict[str, tuple[float, int]] = {}  # media range → (q, place), the first listing of each
    for place, item in enumerate(accept.split(",")):
        media, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                q = _quality(value.strip())
        ranges.setdefault(media.lower(), (q, place))
    best, best_rank = "json", (0.0, 0, 0)
    for order, (kind, media) in enumerate(MEDIA.items()):
        kind_of = media.split("/")[0]
        found = next((ranges[r] for r in (media, f"{kind_of}/*", "*/*") if r in ranges), None)
        if found is None:
            continue
        q, place = found
        rank = (q, -place, -order)
        if q > 0 and rank > best_rank:
            best, best_rank = kind, rank
    return best


_QUALITY = re.compile(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?")


def _quality(value: str) -> float:
    """A ``q`` value: 0 to 1 with at most three decimals (RFC 9110, 12.4.2); else 0."""
    return float(value) if _QUALITY.fullmatch(value) else 0.0


def vary(query: Mapping[str, str]) -> dict[str, str]:
    """The header an answer whose format ``Accept`` chose carries (``Vary: Accept``, which a cache
    keys on); none when the query named the ``format``."""
    return {} if "format" in query else {"Vary": "Accept"}
