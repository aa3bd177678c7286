"""Which request paths belong to the gateway's reserved prefix (``proxy.reserved_prefix``).

Owns one decision for the proxy host: a raw request path is *canonical* (it starts with the
prefix exactly as configured, and only those reach a gateway endpoint), an *alias* of the
prefix (some server could read it as a path under the prefix: percent-encoding, dot segments,
repeated or back slashes, ``;`` parameters, another letter case), or *ordinary* (forwarded).
An alias is answered by the gateway with a 404 that names the canonical form — never
forwarded, so the site behind never sees a request under the prefix, and never dispatched to
an endpoint, so there is one spelling to check and one place its checks run.
"""

from __future__ import annotations

import re
from typing import Literal

Kind = Literal["canonical", "alias", "ordinary"]

_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_DECODE_ROUNDS = 3  # a double-decoding server reads %255F as _: undo a few layers


def _decode(path: str) -> str:
    for _ in range(_DECODE_ROUNDS):
        decoded = _PERCENT.sub(lambda m: chr(int(m.group(1), 16)), path)
        if decoded == path:
            break
        path = decoded
    return path


def normalise(path: str) -> str:
    """``path`` as the most lenient server would read it: percent-decoded (a few layers),
    backslashes as slashes, ``;params`` dropped from each segment, repeated slashes merged,
    ``.`` and ``..`` segments resolved (RFC 3986 §5.2.4), lower-cased."""
    path = _decode(path).replace("\\", "/")
    out: list[str] = []
    segments = path.split("/")
    for i, segment in enumerate(segments):
        segment = segment.split(";", 1)[0]
        last = i == len(segments) - 1
        if segment == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        elif segment == ".":
            if last:
                out.append("")
        elif segment or last:
            out.append(segment)
    return ("/" + "/".join(out)).lower()


def classify(raw_path: str, prefix: str) -> Kind:
    """Whether ``raw_path`` (the path part of the request target, query removed) is the
    prefix's canonical spelling, an alias of it, or an ordinary path to forward."""
    if raw_path.startswith(prefix):
        return "canonical"
    bare = prefix.rstrip("/")
    lowered = raw_path.lower()
    # Cheap test first: most paths hold none of what could make them an alias.
    if not (
        lowered.startswith(bare.lower())
        or "%" in raw_path
        or "\\" in raw_path
        or ";" in raw_path
        or "//" in raw_path
        or "/." in raw_path
    ):
        return "ordinary"
    path = normalise(raw_path)
    bare = bare.lower()
    if path == bare or path.startswith(bare + "/"):
        return "alias"
    return "ordinary"
