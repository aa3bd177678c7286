"""Email addresses in what the gateway keeps or logs: a tracking value (``addons.campaign``), a
landing's path, the path a log line names. Imports nothing of the gateway: the upstream client,
the hosts and the addons all use it."""

from __future__ import annotations

import re
from urllib.parse import unquote

_AT = re.compile(r"(?<=[^\s@])@([^\s@]+)")
"""An ``@`` with something before it, and its domain: the run after it up to a space or the next
``@``. Each run is read once, with nothing after it to give characters back to."""
_TOP_LEVEL = re.compile(r"(?<=.)\.[^\W\d_]{2}")
"""In a domain: a dot after something, followed by two letters (a top-level name)."""
MAX_DECODINGS = 4
"""How many more times a value still percent-encoded once the query is decoded is decoded again
to look for an address in it (``holds_email``)."""


def _address_in(value: str) -> bool:
    r"""Whether ``value`` holds an email address: something, ``@``, a domain with a dot and a
    top-level name of two letters or more (``jane@example.com``; not a handle ``@jane`` nor
    ``promo@2x``). A mailing tool's merge tag (``utm_term=*|EMAIL|*``) puts the subscriber's
    address into a link; such a value is dropped (``reason="email"``), never stored.

    The pattern ``[^\s@]+@[^\s@]+\.[^\W\d_]{2,}`` says the same, but searched as written it
    gives back the domain a character at a time for every character before the ``@``: until
    2026-12-07 a path or value of a million characters (a logged request line) took hours. Here
    each ``@``'s domain is read once: one pass over the value."""
    return any(_TOP_LEVEL.search(domain) for domain in _AT.findall(value))


def holds_email(value: str) -> bool:
    """Whether ``value`` holds an email address (``_address_in``), as it is or still percent-encoded:
    a link a redirector or a mailing tool encoded twice (``utm_term=jane%2540example.com``)
    arrives as ``jane%40example.com``, an address to anyone who reads it."""
    for _ in range(MAX_DECODINGS + 1):
        if "@" in value and _address_in(value):
            return True
        if "%" not in value:
            return False
        decoded = unquote(value, errors="surrogateescape")
        if decoded == value:
            return False
        value = decoded
    return False


EMAIL_SEGMENT = "(email)"
"""What a landing path stores for a segment that holds an email address (``without_email``)."""


def without_email(path: str) -> str:
    """``path`` (as sent, percent-encoded) with each segment holding an email address stored as
    ``(email)``: a newsletter's personal link (``/unsubscribe/jane@example.com?utm_source=news``)
    is a landing, and its path is kept; the address is not."""
    if "@" not in path and "%" not in path:
        return path
    segments = path.split("/")
    kept = [EMAIL_SEGMENT if _email_segment(segment) else segment for segment in segments]
    return path if kept == segments else "/".join(kept)


FILE_TYPES = frozenset(
    (
        *("png", "jpg", "jpeg", "gif", "svg", "webp", "avif", "ico", "bmp", "tif", "tiff", "heic"),
        *("css", "js", "mjs", "wasm", "html", "htm", "json", "xml", "txt", "csv", "php", "aspx", "jsp"),
        *("mp4", "m4v", "webm", "ogv", "mp3", "m4a", "ogg", "wav"),
        *("woff", "woff2", "ttf", "otf", "eot"),
        *("pdf", "doc", "docx", "xls", "xlsx", "ppt", "pptx", "gz", "tgz", "bz2", "tar"),
    )
)
"""A path segment's suffixes that name a file, not a top-level domain: a retina image,
``logo@2x.png``, a video ``hero@2x.webm``, an API's ``schema@v2.json``, is no address (until
2026-12-07 only images, styles, scripts, pages and PDFs were: the others were stored and logged
as ``(email)``). Not ``zip`` nor ``mov``, which are top-level domains (an address may end so),
nor a two-letter suffix (``md``, ``ai``: a country's)."""


def _email_segment(segment: str) -> bool:
    return holds_email(segment) and segment.rpartition(".")[2].lower() not in FILE_TYPES
