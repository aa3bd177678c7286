"""Content codings undone, with a cap: what a request or response body says once its
``Content-Encoding`` (gzip, deflate) is taken off, for the rules that read bodies and the
signed events a sender compressed. The proxy itself never decodes what it forwards.
"""

from __future__ import annotations

import zlib

DECODED = frozenset({"gzip", "x-gzip", "deflate"})
"""The codings ``decoded_body`` undoes (besides ``identity``)."""


def decoded_body(body: bytes, encoding: str | None, cap: int) -> bytes | None:
    """The body as the site meant it: gzip or deflate undone (at most ``cap`` bytes, so a
    small body cannot unpack into a large one); None for a larger or undecodable body."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    formats: tuple[int, ...]
    if encoding in ("gzip", "x-gzip"):
        formats = (16 + zlib.MAX_WBITS,)
    elif encoding == "deflate":  # RFC 9110 says zlib-wrapped; some servers send raw deflate
        formats = (zlib.MAX_WBITS, -zlib.MAX_WBITS)
    else:
        return None
    for wbits in formats:
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(body, cap + 1)
        except zlib.error:
            continue
        return out if inflater.eof and len(out) <= cap and not inflater.unconsumed_tail else None
    return None
