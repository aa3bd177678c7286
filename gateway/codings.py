"""Content codings undone, with a cap: what a request or response body says once its
``Content-Encoding`` (gzip, deflate) is taken off, for the rules that read bodies and the
signed events a sender compressed; and the ``Accept-Encoding`` that gets a site to answer
in a coding they can read. The proxy itself never decodes what it forwards.
"""

from __future__ import annotations

import zlib

_GZIP = 16 + zlib.MAX_WBITS
_GZIP_MAGIC = b"\x1f\x8b"
DECODED = frozenset({"gzip", "x-gzip", "deflate"})
"""The codings ``decoded_body`` undoes (besides ``identity``)."""
MAX_CODINGS = 4
"""Most codings a body may list (``gzip, gzip`` is two): each is undone within the cap, so this
bounds the work one body costs."""


STREAMED_TYPES = frozenset({"text/event-stream", "multipart/mixed"})
"""Media types of answers sent piece by piece for the visitor to see at once, and which may
never end: server-sent events (a GraphQL subscription over graphql-sse), incremental delivery
(GraphQL's ``@defer``, Apollo's multipart subscriptions). A rule never reads one: reading it
first held every piece back until ``max_body`` had come or the site was done."""


def streamed_type(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` is one of the ``STREAMED_TYPES`` (parameters and case aside)."""
    return (content_type or "").partition(";")[0].strip().lower() in STREAMED_TYPES


def content_codings(values: list[str]) -> list[str]:
    """The codings of a ``Content-Encoding`` given on one or more lines, lower-cased, in the order
    they were applied. RFC 9110: lines of a list header are one comma-joined list, so ``gzip``
    and a second ``gzip`` line are ``gzip, gzip``; ``identity`` and empty items change nothing."""
    items = (item.strip().lower() for value in values for item in value.split(","))
    return [item for item in items if item and item != "identity"]


def decoded_layers(body: bytes, codings: list[str], cap: int) -> bytes | None:
    """``body`` with every one of ``codings`` (``content_codings``) undone, the last applied
    first, each within ``cap`` bytes; None when one does not decode, is not one ``decoded_body``
    undoes, or there are more than ``MAX_CODINGS``."""
    if len(codings) > MAX_CODINGS:
        return None
    for coding in reversed(codings):
        decoded = decoded_body(body, coding, cap) if coding in DECODED else None
        if decoded is None:
            return None
        body = decoded
    return body


def not_gzip(body: bytes, codings: list[str], cap: int) -> bytes | None:
    """The start of the layer of ``body`` that ``codings`` call gzip but is not (it lacks gzip's
    magic bytes: a sender that set the header and sent the body as it is, a proxy that
    decompressed it and left the header); None when each gzip layer is one, as far as the
    layers decode (for telling that apart from a body too large once decoded)."""
    for coding in reversed(codings):
        if coding in ("gzip", "x-gzip") and not body.startswith(_GZIP_MAGIC):
            return body[:6]
        decoded = decoded_body(body, coding, cap)
        if decoded is None:
            return None
        body = decoded
    return None


def decoded_body(body: bytes, encoding: str | None, cap: int) -> bytes | None:
    """The body as the site meant it: gzip or deflate undone (at most ``cap`` bytes, so a
    small body cannot unpack into a large one); None for a larger or undecodable body. A list
    (``gzip, gzip``: applied twice) is undone layer by layer (``decoded_layers``)."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if "," in encoding:
        return decoded_layers(body, content_codings([encoding]), cap)
    out = _inflated(body, encoding, cap)
    return out if out is not None and len(out) <= cap else None


def larger_than(body: bytes, codings: list[str], cap: int) -> bool:
    """Whether ``decoded_layers`` refuses ``body`` for a layer that decodes to more than ``cap``
    bytes (a real gzip body too large once decoded, a 413), not for one that does not decode."""
    if len(codings) > MAX_CODINGS:
        return False
    for coding in reversed(codings):
        out = _inflated(body, coding, cap)
        if out is None:
            return False
        if len(out) > cap:
            return True
        body = out
    return False


_FORMATS: dict[str, tuple[int, ...]] = {
    "gzip": (_GZIP,),
    "x-gzip": (_GZIP,),
    # RFC 9110 says zlib-wrapped; some servers send raw deflate
    "deflate": (zlib.MAX_WBITS, -zlib.MAX_WBITS),
}
"""zlib's formats (``wbits``) a coding may be in, tried in this order."""


def _inflated(body: bytes, coding: str, cap: int) -> bytes | None:
    """``body`` undone from ``coding`` in the first of its formats that reads it (longer than
    ``cap``, it is larger: its rest not read); None for a coding not undone here, or a body
    that none of its formats reads."""
    for wbits in _FORMATS.get(coding, ()):
        out = _inflate(body, wbits, cap)
        if out is not None:
            return out
    return None


def _inflate(body: bytes, wbits: int, cap: int) -> bytes | None:
    """``body`` inflated (``wbits``: zlib's format), read no further than ``cap`` + 1 bytes: one
    longer than ``cap`` is larger (its rest not read); None when it is not data of that format,
    or ends short."""
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, cap + 1)
        # RFC 1952: a gzip body is a series of members (streaming compressors, pigz, write
        # several); the first alone was read, and the rest dropped without a word.
        while wbits == _GZIP and inflater.eof and inflater.unused_data[:2] == _GZIP_MAGIC and len(out) <= cap:
            rest, inflater = inflater.unused_data, zlib.decompressobj(wbits)
            out += inflater.decompress(rest, cap + 1 - len(out))
    except zlib.error:
        return None
    if len(out) > cap:
        return out
    return out if inflater.eof and not inflater.unconsumed_tail else None


def readable_accept_encoding(offered: str) -> str | None:
    """``offered`` (a visitor's ``Accept-Encoding``) narrowed to the codings ``decoded_body``
    undoes, so that the site answers a body a rule can read: every coding it does not undo
    (``br``, ``zstd``, ``*``…) is left out, the rest kept as written, weights included; a
    coding the visitor refuses (``q=0``) stays refused. ``identity`` when nothing is left (no
    header at all would accept any coding). None when nothing needs to change, or when the
    visitor accepts none of those codings (``identity;q=0, br``): the header then goes as it
    came and the rule reads nothing, as before."""
    kept: list[str] = []
    dropped = False
    readable = False  # a coding the visitor accepts and we undo
    identity: bool | None = None  # what the visitor said of identity, if they named it
    refuse_others = False  # ``*;q=0``: codings not named are refused, identity among them
    for item in offered.split(","):
        coding, _, params = item.strip().partition(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        accepted = _weight(params) > 0
        if coding == "identity":
            identity = accepted
        elif coding == "*" and not accepted:
            refuse_others = True
        if coding in DECODED or coding == "identity" or not accepted:  # kept: readable, or refused
            kept.append(item.strip())
            readable = readable or accepted
        else:
            dropped = True
    if identity is None:
        identity = not refuse_others
    if not dropped or not (readable or identity):
        return None
    return ", ".join(kept) if readable else "identity"  # only refusals left: ask for identity


def _weight(params: str) -> float:
    """An ``Accept-Encoding`` item's ``q``: 1 when absent, or written in a way RFC 9110 does
    not allow (read as accepted: the header is only ever narrowed)."""
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                weight = float(value.strip())
            except ValueError:
                return 1.0
            return weight if 0 <= weight <= 1 else 1.0
    return 1.0


def accepts_gzip(offered: str) -> bool:
    """Whether an ``Accept-Encoding`` accepts gzip (RFC 9110 §12.5.3): ``gzip`` or ``x-gzip`` with
    a ``q`` above 0, or, gzip not named, ``*`` with one. No header: no (the answer goes as it
    is, as to curl without ``--compressed``)."""
    wildcard: float | None = None
    for item in offered.split(","):
        coding, _, params = item.strip().partition(";")
        coding = coding.strip().lower()
        if coding in ("gzip", "x-gzip"):
            return _weight(params) > 0
        if coding == "*":
            wildcard = _weight(params)
    return wildcard is not None and wildcard > 0
