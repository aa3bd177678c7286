"""Request targets with raw UTF-8 (``GET /café``, the é not percent-encoded), read again.

aiohttp's C parser (llhttp, built strict) refuses any byte above 0x7F in a request target, with
no lenient flag to allow it, where nginx and most sites take it as sent: old apps and scripts
send such targets, and the listener answered them 400. Its pure-Python parser takes them, but
reads bodies less strictly (a bare CR in a chunk extension) and costs more per request.

So the listener (``gateway.protocol_errors._Handler``) keeps the C parser, and only when it
refuses an origin-form target holding such bytes reads the request again with a fresh one: the
head with each of those bytes replaced by an ASCII letter (``ascii_stand_in``), its length and
everything else left as sent, so the C parser still judges every other byte of the head, the
body's framing and what follows; the message it hands over then gets the target as sent back
(``restored``), which the proxy forwards byte for byte. Only a refused request comes here: an
ordinary one costs nothing more. A target whose bytes are not UTF-8 (Latin-1) stays refused.
"""

from __future__ import annotations

from typing import NamedTuple

from aiohttp.http import RawRequestMessage
from yarl import URL

_STAND_IN = bytes(range(128)) + b"x" * 128
"""``bytes.translate`` table: each byte above 0x7F becomes ``x``, the others stay."""


class StandIn(NamedTuple):
    head: bytes
    """The request's bytes so far, its target's bytes above 0x7F replaced by ``x``."""
    target: bytes
    """The target as sent."""


def ascii_stand_in(began: bytes) -> StandIn | None:
    """``began`` (a request's bytes from its start: its request line, whole or not yet, and
    what followed it in the same reads) with its target's bytes above 0x7F replaced, or None
    when there is nothing to read again: the target is ASCII, is not origin-form (``/…``), or
    is not UTF-8 (as far as it came)."""
    start = len(began) - len(began.lstrip(b"\r\n"))  # empty lines may lead a request
    end = began.find(b"\n", start)
    method, space, rest = began[start : end if end >= 0 else len(began)].partition(b" ")
    target = rest.partition(b" ")[0]
    if not space or not target.startswith(b"/") or target.isascii():
        return None
    try:
        # Other bytes would reach the pipeline as surrogates, which no event holding them (a
        # landing's path, a campaign value) can be stored with: its whole commit failed.
        target.decode("utf-8")
    except UnicodeDecodeError:
        return None
    at = start + len(method) + 1
    return StandIn(began[:at] + target.translate(_STAND_IN) + began[at + len(target) :], target)


def restored(message: RawRequestMessage, target: bytes) -> RawRequestMessage:
    """``message``, read from an ``ascii_stand_in`` head, with ``target`` (UTF-8) back in place
    of the stand-in: path and URL as aiohttp's parser makes them, which the proxy writes back
    as the same bytes."""
    path = target.decode("utf-8")
    before, _, fragment = path.partition("#")
    route, _, query = before.partition("?")
    url = URL.build(path=route, query_string=query, fragment=fragment, encoded=True)
    return message._replace(path=path, url=url)
