"""What the upstream client reads in a site's answer head beyond what aiohttp's parser reads.

Owns the reading of the site's ``Keep-Alive: timeout=N, max=M`` (RFC 2068 §19.7.1.1, which
Apache, Node and nginx with a second ``keepalive_timeout`` value send): how long, and for how
many more requests, the site keeps the connection open, so that no request goes out on one it is
closing (applied by ``gateway.upstream``). Read leniently: a value that does not parse is as if
it were not there.
"""

from __future__ import annotations

import re

REUSE_MARGIN = 0.5
"""Seconds before the site's announced keep-alive timeout that a connection stops being reused:
the site's clock starts when it wrote its answer, ours once the answer was read, and the next
request takes the way there besides (at most half the timeout, for one under a second)."""

_PARAM = re.compile(r'\s*([A-Za-z]+)\s*=\s*"?([0-9]+(?:\.[0-9]+)?)"?\s*')


def keep_alive(value: str) -> tuple[float | None, int | None]:
    """The ``timeout`` (seconds) and ``max`` (requests the connection may still take) of a
    ``Keep-Alive`` header value; None for one that is absent or does not parse. Parameters are
    split on commas or semicolons, names in any case, values plain or quoted numbers."""
    timeout: float | None = None
    most: int | None = None
    for part in value.replace(";", ",").split(","):
        match = _PARAM.fullmatch(part)
        if match is None:
            continue
        name, number = match.group(1).lower(), match.group(2)
        if name == "timeout" and timeout is None:
            timeout = float(number)
        elif name == "max" and most is None and number.isdigit():
            most = int(number)
    return timeout, most


def reuse_bound(timeout: float) -> float:
    """How long a connection may stay idle and still be reused, when the site announced it keeps
    idle connections ``timeout`` seconds: that less ``REUSE_MARGIN``, or half of it if longer."""
    return max(timeout - REUSE_MARGIN, timeout / 2)
