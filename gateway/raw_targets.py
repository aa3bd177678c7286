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

Likewise a method llhttp does not know: it takes only the methods on its own list, where RFC
9110 §9.1 allows any token and nginx and Apache pass any on (Varnish's ``BAN``, DeltaV's
``VERSION-CONTROL``, a site's own), and the listener answered them 400. A method refused so is
read again with ``POST`` in its place (llhttp frames a request's body the same for every method
but ``CONNECT``), and handed over as sent. Only a token in capitals: one in lower case (``get``,
no ``GET``: methods are case-sensitive) nginx refuses too, and frameworks upper-case it, so that
the site would take it for the ``GET`` the gateway's rules do not; a character no token has
(``B@N``) or bytes that are no request line stay refused.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from aiohttp.http import RawRequestMessage
from yarl import URL

_STAND_IN = bytes(range(128)) + b"x" * 128
"""``bytes.translate`` table: each byte above 0x7F becomes ``x``, the others stay."""


_METHOD = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Z]+")
"""A method read again: a token (RFC 9110 §5.6.2), without a lower-case letter."""

STAND_IN_METHOD = b"POST"
"""What an unknown method is read as: a method llhttp knows and frames a body for as any other."""


class StandIn(NamedTuple):
    head: bytes
    """The request's bytes so far, its target's bytes above 0x7F replaced by ``x`` and an
    unknown method by ``STAND_IN_METHOD``."""
    target: bytes | None
    """The target as sent, when its bytes were replaced; None when it went as sent."""
    method: bytes | None = None
    """The method as sent, when it was replaced; None when it went as sent."""


def ascii_stand_in(began: bytes, method_refused: bool = False) -> StandIn | None:
    """``began`` (a request's bytes from its start: its request line, whole or not yet, and
    what followed it in the same reads) with its target's bytes above 0x7F replaced and, when
    the parser refused its method (``method_refused``), its method, or None when there is
    nothing to read again: the target is ASCII, is not origin-form (``/…``), or is not UTF-8
    (as far as it came), and the method was not refused; or the refused method is no token in
    capitals, or no target follows it (yet)."""
    start = len(began) - len(began.lstrip(b"\r\n"))  # empty lines may lead a request
    end = began.find(b"\n", start)
    method, space, rest = began[start : end if end >= 0 else len(began)].partition(b" ")
    target = rest.partition(b" ")[0]
    if not space or not target:
        return None
    if method_refused and _METHOD.fullmatch(method) is None:
        return None
    sent_method = method if method_refused else None
    stood_target = target
    sent_target = None
    if not target.isascii():
        if not target.startswith(b"/"):
            return None
        try:
            # Other bytes would reach the pipeline as surrogates, which no event holding them (a
            # landing's path, a campaign value) can be stored with: its whole commit failed.
            target.decode("utf-8")
        except UnicodeDecodeError:
            return None
        stood_target, sent_target = target.translate(_STAND_IN), target
    if sent_method is None and sent_target is None:
        return None
    at = start + len(method) + 1
    head = began[:start] + (STAND_IN_METHOD if sent_method else method) + b" " + stood_target
    return StandIn(head + began[at + len(target) :], sent_target, sent_method)


def restored(message: RawRequestMessage, stand_in: StandIn) -> RawRequestMessage:
    """``message``, read from an ``ascii_stand_in`` head, with the method and target (UTF-8)
    as sent back in place of the stand-ins: path and URL as aiohttp's parser makes them, which
    the proxy writes back as the same bytes."""
    if stand_in.method is not None:
        message = message._replace(method=stand_in.method.decode("ascii"))
    if stand_in.target is None:
        return message
    path = stand_in.target.decode("utf-8")
    before, _, fragment = path.partition("#")
    route, _, query = before.partition("?")
    url = URL.build(path=route, query_string=query, fragment=fragment, encoded=True)
    return message._replace(path=path, url=url)
