"""What the upstream client reads in a site's answer head beyond what aiohttp's parser reads.

Owns two pure readings, applied by ``gateway.upstream``:

- the site's ``Keep-Alive: timeout=N, max=M`` (RFC 2068 §19.7.1.1, which Apache, Node and nginx
  with a second ``keepalive_timeout`` value send): how long, and for how many more requests, the
  site keeps the connection open, so no request goes out on one it is closing;
- a head the parser refuses where a browser reads the page: ``Content-Length`` beside
  ``Transfer-Encoding: chunked`` (RFC 9112 §6.3: the chunks win, and the connection is closed
  after) and one ``Content-Length`` sent twice (two lines, or ``5, 5``; RFC 9110 §8.6 lets a
  recipient take it as one), rewritten to the head the parser reads;
- a final head the parser refused (``readable_head``), rewritten once as curl and browsers read
  it: a space or tab before any name's colon removed (RFC 9112 §5.1), a bare CR in a line made a
  space (§2.2), a line whose name is no token (``X@Foo:``, ``: v``) dropped, as Firefox skips
  it; the framing then as ``unframed_head`` reads it;
- the codings of a ``Transfer-Encoding`` (``transfer_codings``), for the one besides
  ``chunked`` that the upstream client undoes.

The first two are read leniently: a value that does not parse is as if it were not there.
"""

from __future__ import annotations

import re

REUSE_MARGIN = 0.5
"""Seconds before the site's announced keep-alive timeout that a connection stops being reused:
the site's clock starts when it wrote its answer, ours once the answer was read, and the next
request takes the way there besides (at most half the timeout, for one under a second)."""

_PARAM = re.compile(r'\s*([A-Za-z]+)\s*=\s*"?([0-9]{1,9}(?:\.[0-9]{1,9})?)"?\s*')
"""One ``name=number`` parameter; a number of at most 9 digits (``int()`` refuses more than
4,300, which raised from the answer's reading: one that long is no bound a site means)."""


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


def unframed_head(head: bytes) -> tuple[bytes, bool] | None:
    """``head`` (an answer's, up to its empty line) rewritten so that the parser reads it as a
    browser does, and whether the connection must be closed after that answer; None when there
    is nothing to rewrite.

    A ``Content-Length`` beside ``Transfer-Encoding: chunked`` is dropped (the chunks frame the
    body, and the connection closes after it); one length sent twice stays once, as the first
    line that gave it. Lengths that disagree, or a length beside a coding that does not end in
    ``chunked``, stay as they are: the parser refuses them, and browsers too. In a head
    rewritten so, whitespace between a field's name and its colon is removed as well (RFC 9112
    §5.1 asks it of a proxy; the parser refuses most such lines), and so it is in an interim
    head (a ``103``), which ``gateway.upstream`` scans for it. Final heads are not scanned for
    it (that cost every answer more than the rare site that sends it): one the parser refuses
    for it is read again once rewritten by ``readable_head``."""
    lines = head.split(b"\n")
    changed = False
    lengths: list[int] = []
    codings: list[bytes] = []
    for index, line in enumerate(lines[1:], 1):
        name, colon, value = line.partition(b":")
        if not colon or name[:1] in (b" ", b"\t"):  # no field, or a folded line's rest
            continue
        if name[-1:] in (b" ", b"\t"):
            name = name.rstrip(b" \t")
            lines[index] = line = name + b":" + value
            changed = True
        name = name.lower()
        if name == b"content-length":
            lengths.append(index)
        elif name == b"transfer-encoding":
            codings.extend(c.strip(b" \t\r").lower() for c in value.split(b","))
    close = False
    if lengths and codings:
        codings = [c for c in codings if c]
        if codings and codings[-1] == b"chunked":
            lines = [line for i, line in enumerate(lines) if i not in lengths]
            changed = close = True
    elif lengths:
        once = _length_once(lines, lengths)
        if once is not None:
            lines, changed = once, True
    return (b"\n".join(lines), close) if changed else None


def transfer_codings(value: str) -> list[str]:
    """The codings of a ``Transfer-Encoding`` value (its lines joined by ", "), lower-cased, in
    the order they were applied; ``identity`` and empty items change nothing."""
    items = (item.strip(" \t").lower() for item in value.split(","))
    return [item for item in items if item and item != "identity"]


_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""A field name (RFC 9110 §5.6.2: a token)."""
_FRAMING = (b"content-length", b"transfer-encoding")


def readable_head(head: bytes) -> tuple[bytes, bool] | None:
    """``head`` (an answer's, up to its empty line), which the parser refused, rewritten as curl
    and browsers read it, and whether the connection must be closed after that answer; None when
    there is nothing to rewrite, or when a rewrite would guess the framing.

    Only the header lines change; the status line stays as it came (its version and code decide
    the framing). In each line: a space or tab before the colon is removed (RFC 9112 §5.1 asks
    it of a proxy); a bare CR becomes a space (§2.2); a line whose name is no token (``X@Foo:``,
    ``X Foo:``, ``: v``) is dropped — Firefox skips it, and no header a browser acts on is named
    so — unless its name holds ``content-length`` or ``transfer-encoding``: a reader that takes
    it for one would frame the body otherwise, so that head stays refused. Lines without a colon and
    folded lines' rests stay, for the parser to take or refuse. The lengths are then read as
    ``unframed_head`` reads them."""
    lines = head.split(b"\n")
    kept = lines[:1]
    changed = False
    for line in lines[1:]:
        end = b"\r" if line.endswith(b"\r") else b""
        text = line[: len(line) - len(end)]
        if b"\r" in text:
            text = text.replace(b"\r", b" ")
            changed = True
        name, colon, value = text.partition(b":")
        if colon and name[:1] not in (b" ", b"\t"):
            bare = name.rstrip(b" \t")
            if _TOKEN.fullmatch(bare) is None:
                if any(framing in bare.lower() for framing in _FRAMING):
                    return None
                changed = True
                continue
            if bare != name:
                text = bare + b":" + value
                changed = True
        kept.append(text + end)
    rewritten = b"\n".join(kept) if changed else head
    unframed = unframed_head(rewritten)
    if unframed is not None:
        return unframed
    return (rewritten, False) if changed else None


def _length_once(lines: list[bytes], lengths: list[int]) -> list[bytes] | None:
    """``lines`` with the ``Content-Length`` lines at ``lengths`` made one, when they all give
    one value (``5``, ``5, 5``); None when they need nothing or give several."""
    values = {v.strip(b" \t\r") for i in lengths for v in lines[i].partition(b":")[2].split(b",")}
    if len(values) != 1 or not (value := values.pop()).isdigit():
        return None
    first = lines[lengths[0]]
    name, _, given = first.partition(b":")
    if given.strip(b" \t\r") != value:
        first = name + b": " + value + (b"\r" if first.endswith(b"\r") else b"")
    if len(lengths) == 1 and first == lines[lengths[0]]:
        return None
    return [first if i == lengths[0] else line for i, line in enumerate(lines) if i not in lengths[1:]]
