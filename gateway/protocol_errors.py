"""What aiohttp answers itself, before or outside the app's handlers, answered as the gateway.

A request line or header over its limit, a method, request line or header that is not HTTP,
TLS on the plain port, a body whose length or chunking does not parse (when the parser sees
it before the handler starts reading the body), an ``Expect`` other than ``100-continue``, a
target that matches no route (``CONNECT host:port``): aiohttp
answered those itself, in plain text that echoes what it refused (``bytearray(b'...')``,
the ``Expect`` value) under a ``Server: Python/… aiohttp/…`` header, and logged a parse
error at error level with a traceback and the client's address. The gateway's listeners
(``Runner``) answer as the gateway answers anything else it refuses there, same status:

- the proxy (public) listener: the neutral error page of ``gateway/pages.py``, which says
  nothing about what runs behind the site, as for the malformed requests the proxy itself
  refuses; but the JSON error envelope below its reserved prefix (``/_gw/``, ``json_paths``),
  whose endpoints answer JSON, for a refusal made once the request is read (aiohttp hands a
  parser refusal over with a stand-in request whose path is ``/``); each is counted in
  ``gateway_requests_total{outcome="bad_request"}``;
- a chunked request body whose framing breaks once the request was handed over (a chunk size
  that is not hex, a chunk longer than it said), which aiohttp's C parser drops without failing
  it: failed here with the parser's reason (``BrokenFraming``), so that whoever reads it answers
  at once (``_Handler.data_received``): the proxy its neutral 400, the upstream request aborted;
  a signed event's endpoint and the admin API a 400 naming the broken framing;
- the admin listener: the JSON error envelope, with a reason that names what is wrong
  without repeating the bytes, and the headers every admin answer carries (``headers``:
  the dashboard's CSP, nosniff, no framing).

A request target over the limit is answered 414 and a header 431 (aiohttp says 400 to
both); a ``HEAD``'s 414, 431 or 400 with the head alone (RFC 9110 §9.3.2), the parser having
refused the request before the listener knew the method: ``_Handler.data_received`` keeps the
read a request began in, and ``refused_method`` reads the method there — for a 414 checked
against the target's first bytes the parser's error quotes, else from a whole request line
(``HEAD target HTTP/1.x``) that read begins with (``answered_in_http11`` then makes the
stand-in a ``HEAD``). A request line refused itself keeps its page: its method is not known.
The connection is closed after it. A refused parse is logged with its reason alone, at debug
level (scanners send such requests all day), or at info, once a minute, for a line over the
limit, which real clients with oversized cookies may hit (``proxy.max_header_size``). A
failure of ours that no middleware caught (a 500) is logged at error level with its
traceback, without the client's address.

Both listeners bound how long a connection may wait on its client (``Runner``'s
``header_timeout``, aiohttp's ``keepalive_timeout``: ``proxy.header_timeout`` and
``proxy.keepalive_timeout``). aiohttp closes a connection idle past ``keepalive_timeout`` (before
its first request too), without an answer; a head that began is given ``header_timeout`` from its
first byte instead (``_Handler._process_keepalive``), then answered 408 (``HeadTimeout``,
``_Handler._head_overdue``) and the connection closed. aiohttp has no bound for a head of its own:
its ``keepalive_timeout``, left at its default, held such connections for 3630 s.

Two requests aiohttp's C parser refuses are read again instead, on both listeners: an
origin-form target with raw UTF-8 (``GET /café``), which llhttp takes only percent-encoded,
and a method in capitals llhttp does not know (``BAN /p``) (``_Handler._read_again``,
``gateway.raw_targets``): the proxy forwards either as sent.

One request aiohttp would refuse is routed instead on the admin listener: an absolute-form
target without a path (``GET http://shop.test HTTP/1.1``, ``…?q=1``), whose path RFC 9110
§4.2.3 says is ``/``. aiohttp's router walks the path's segments and an empty path has none,
so no route matched it. ``Runner``'s request factory (``rooted``) routes it as ``/``, the
target itself left as received. The proxy listener asks no router (``Runner``'s ``handler``,
``HostSlot.serve``): the proxy reads every target from ``raw_path``
(``gateway.proxy._origin_form``).

aiohttp offers no public hook for this: ``Runner`` makes its server create this module's
request handlers, whose ``handle_error`` is the method aiohttp calls, and wraps the app's
handler for the refusals aiohttp raises outside the app's middlewares. aiohttp is pinned to
one minor series (``pyproject.toml``); ``tests/gateway/test_malformed.py`` sends each kind
of broken request to real listeners, ``tests/gateway/test_run.py`` to a ``gateway run``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

from aiohttp import hdrs, http_exceptions, web
from aiohttp.http import HttpVersion11, RawRequestMessage
from aiohttp.http_parser import SINGLETON_HEADERS
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import ERROR, HttpRequestParser, RequestPayloadError, _ErrInfo, _RequestFactory
from multidict import istr
from yarl import URL

from gateway.logs import Throttled
from gateway.pages import SHOWN_NAME, error_page, json_error, named_header
from gateway.raw_targets import ascii_stand_in, restored

_Handle = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
log = logging.getLogger("gateway.listener")


def line_limits(max_header: int) -> dict[str, int]:
    """aiohttp's limits for a listener that takes headers of ``max_header`` bytes: the request
    target one byte more, so that the limit a ``LineTooLong`` names tells which was too long
    (aiohttp raises that one error for both)."""
    return {"max_line_size": max_header + 1, "max_field_size": max_header}


def too_long_status(exc: http_exceptions.LineTooLong, limits: Mapping[str, Any]) -> int:
    """414 for a request target over the limit, 431 for a header: told by the limit ``exc``
    names, the listener's target limit (``line_limits``: one byte more than a header's)."""
    limit = exc.args[1] if len(exc.args) > 1 else None
    line, field = limits.get("max_line_size"), limits.get("max_field_size")
    return 414 if line != field and limit == line else 431


class HeaderTooLong(http_exceptions.LineTooLong):
    """A header over the limit, named: ``header`` is its name, ``""`` when the name itself is
    over the limit (aiohttp's own error says neither: it holds the first bytes of the value)."""

    def __init__(self, refused: http_exceptions.LineTooLong, header: str) -> None:
        super().__init__(*refused.args)
        self.header = header


def header_over(head: bytes, limit: int) -> str | None:
    """The name of the header the parser refused as over ``limit`` in ``head``, a request head's
    bytes up to where it refused (cut at its start when it came in reads); ``""`` for a name
    itself over the limit; None when none is found (its start cut off, or a name that is no
    token). The parser counts a value's bytes, and for the first header its name's too
    (aiohttp's C parser forgets the name's size once a previous header is done)."""
    lines = head.split(b"\n")
    first = None
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if len(name) > limit:  # a name over the limit (its colon, if any, not yet come)
            return ""
        if not colon:
            continue
        size = len(value.lstrip(b" \t").rstrip(b"\r"))
        if size > limit:
            return name.decode() if SHOWN_NAME.fullmatch(name) else None
        if first is None and len(name) + size > limit:
            first = name
    return first.decode() if first is not None and SHOWN_NAME.fullmatch(first) else None


def reason(exc: BaseException | None, status: int) -> str:
    """What was wrong with the request, for the operator and the client, without its bytes."""
    if isinstance(exc, http_exceptions.LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else None
        if status == 414:  # its limit is the headers' and one byte (``line_limits``)
            return "the request target is longer than the listener accepts" + (
                f" ({limit - 1} bytes)" if limit else ""
            )
        named = named_header(exc.header if isinstance(exc, HeaderTooLong) else None)
        return f"{named} is longer than the listener accepts" + (f" ({limit} bytes)" if limit else "")
    if isinstance(exc, HeadTimeout):
        return exc.message
    if isinstance(exc, http_exceptions.BadHttpMethod):
        if exc.message.startswith("Received HTTPS traffic"):
            return "TLS (HTTPS) sent to a plain HTTP listener"
        return "the request method is not an HTTP method"
    if isinstance(exc, http_exceptions.BadStatusLine):
        return "the request line is not HTTP (method, target, HTTP/1.x)"
    if isinstance(exc, http_exceptions.InvalidURLError):
        return "the request target is not a valid URL"
    if isinstance(exc, http_exceptions.InvalidHeader):
        return "a header name or value is not valid HTTP"
    if isinstance(exc, http_exceptions.TransferEncodingError | http_exceptions.ContentLengthError):
        return "the body's length or chunked encoding does not parse"
    if isinstance(exc, http_exceptions.BadHttpMessage):
        # The C parser's reason (llhttp's, a fixed text) is the first line; the bytes follow.
        first = exc.message.split("\n", 1)[0].rstrip(" :")
        if first in _BOTH_LENGTHS:  # its apostrophe kept it out below: nothing said what to fix
            return (
                "the request is not valid HTTP: Content-Length and Transfer-Encoding given together; send one"
            )
        name = repeated_header(exc)
        if name is not None:  # its apostrophes too: which of two Content-Type lines was meant?
            return f"the request is not valid HTTP: {name} given more than once; send it once"
        detail = first if first.isascii() and first.isprintable() and not set(first) & set("'\"\\") else ""
        return "the request is not valid HTTP" + (f": {detail}" if 0 < len(detail) <= 100 else "")
    if status >= 500:
        return "internal error while handling the request (see the gateway's log)"
    return "the request could not be read"


def repeated_header(exc: BaseException | None) -> str | None:
    """The header HTTP allows once that the parser refused ``exc`` for as sent more than once
    (two ``User-Agent`` lines), spelt as RFC 9110 does; None for any other refusal, or a name the
    page and the log may not show (``SHOWN_NAME``)."""
    if not isinstance(exc, http_exceptions.BadHttpMessage):
        return None
    twice = _DUPLICATE.fullmatch(exc.message.split("\n", 1)[0].rstrip(" :"))
    if twice is None:
        return None
    sent = twice[1] or twice[2]
    name = _SINGLETONS.get(sent.lower(), sent)
    return name if SHOWN_NAME.fullmatch(name.encode()) else None


_BOTH_LENGTHS = frozenset(
    (
        "Transfer-Encoding can't be present with Content-Length",
        "Content-Length can't be present with Transfer-Encoding",
    )
)
"""The parser's reasons for a request that gives both, which RFC 9112 §6.2 forbids a sender."""
_DUPLICATE = re.compile(r"Duplicate '([^']*)' header found\.?|Duplicate (Content-Length)")
"""aiohttp's reason (both parsers) for a header RFC 9110 allows once given twice, as sent; and
llhttp's for two ``Content-Length`` lines, which it refuses first."""
_ODD_SPELLINGS = {"etag": "ETag"}
"""The headers aiohttp's ``hdrs`` spells otherwise than RFC 9110 does (its ``ETAG`` is ``Etag``)."""
_AIOHTTP_SPELLINGS = {str(name).lower(): str(name) for name in vars(hdrs).values() if isinstance(name, istr)}
"""aiohttp's header names (``hdrs``), by their lower case."""


def _spelt(name: str) -> str:
    """How RFC 9110 spells the header ``name`` (in any case): as ``_ODD_SPELLINGS`` says, else as
    aiohttp's ``hdrs`` does (``WWW-Authenticate``, ``TE``), else each word capitalised."""
    lower = name.lower()
    known = _ODD_SPELLINGS.get(lower) or _AIOHTTP_SPELLINGS.get(lower)
    return known or "-".join(word.capitalize() for word in lower.split("-"))


_SINGLETONS = {name.lower(): _spelt(name) for name in SINGLETON_HEADERS}
"""The headers aiohttp's parser refuses twice (its ``SINGLETON_HEADERS``, whichever it adds),
spelt as RFC 9110 does (a client's own spelling, ``CONTENT-TYPE``, is the Python parser's name,
``Etag`` the C parser's). Until 2026-12-07 a list of its own, which a header aiohttp added would
have missed: named as the parser spelt it."""
_HTTP_REASONS = {417: "Expect: the only expectation understood is 100-continue"}
"""Reasons of the refusals aiohttp raises before the app's middlewares see the request."""
CUT_OFF = 0.1
"""Seconds a request still running when the grace is over has for each of aiohttp's last steps
(its body's reading cancelled, then its handler), before its connection is closed."""
LOUD_EVERY = 60.0
"""Seconds between info lines for a request line or header over the limit (debug between)."""
LINGER_BYTES = 64 * 1024**2
"""The most of a body left unread by its answer (a refusal: a blocked bot's upload, a 413, a
``/_gw/`` path without an endpoint) that is read and dropped after it, within aiohttp's
``lingering_time`` (10 s), before the connection closes (``_Handler.finish_response``). aiohttp
bounds that reading by time alone: on loopback or a fast link, 10 s carry gigabytes. As the
mitmproxy host's (``addons.mitm_answer.LINGER_BYTES``)."""


class BrokenFraming(RequestPayloadError):
    """A request body's chunked framing broke once the request had been handed over; its text
    is the parser's reason (``reason``), without the bytes."""


class HeadTimeout(http_exceptions.HttpProcessingError):
    """A request head did not arrive whole within the listener's ``header_timeout`` of its first
    byte (``_Handler._head_overdue``): answered 408."""

    code = 408

    def __init__(self, seconds: float) -> None:
        super().__init__(
            message=f"the request head did not arrive whole within proxy.header_timeout ({seconds:g} s)"
        )


_REQUEST_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([^ \r\n]+) HTTP/1\.[0-9]\r?\n")
"""A whole request line (method, target, HTTP/1.x), as a read that begins a request begins."""


def refused_method(exc: http_exceptions.HttpProcessingError, began: bytes, target: bool) -> bytes | None:
    """The method of the request the parser refused (``exc``), from ``began``, the read in
    which that request began; None when not known for sure. ``target``: its target was over the
    limit (a 414), so the line did not end: the read must begin with the method, a space and
    the target's first bytes as ``exc`` quotes them (up to 100, then ``...``). Any other
    refusal (a header over the limit, one that is not HTTP): the read must begin with a whole
    request line, so that a refused request line, or a read that began in another request's
    body (pipelined), gives none."""
    if not target:
        line = _REQUEST_LINE.match(began.lstrip(b"\r\n"))  # empty lines may lead a request
        return line.group(1) if line is not None else None
    quoted = exc.args[0] if exc.args else None
    if not isinstance(quoted, bytes | bytearray) or not quoted.endswith(b"..."):
        return None
    first = bytes(quoted[:-3])
    method, space, rest = began.lstrip(b"\r\n").partition(b" ")  # empty lines may lead a request
    if not space or not first.startswith(rest[: len(first)]):
        return None
    return method


def refused_path(began: bytes) -> str | None:
    """The path of the request the parser refused, from ``began``, the read in which that
    request began, when it begins with a whole request line (as ``refused_method`` reads it);
    None otherwise: then the listener answers as for ``/``."""
    line = _REQUEST_LINE.match(began.lstrip(b"\r\n"))  # empty lines may lead a request
    if line is None:
        return None
    try:
        return URL(line.group(2).decode("ascii"), encoded=True).path
    except ValueError:  # not ASCII (UnicodeDecodeError), or no URL yarl reads
        return None


def broken_framing(err: BrokenFraming) -> str:
    """What a reader of a body that failed so answers (400): that its framing broke, and why."""
    return f"body: its chunked framing is broken ({err})"


class _Deaf:
    """A request parser that takes nothing: a connection's, once the head it was reading is
    answered 408 behind a request still in progress (``_Handler._head_overdue``)."""

    def feed_data(self, data: bytes) -> tuple[tuple[()], bool, bytes]:
        return (), False, b""

    def feed_eof(self) -> None:
        return None

    def message_consumed(self) -> None:
        return None

    def pause_reading(self) -> None:
        return None

    def set_upgraded(self, val: bool) -> None:
        return None


_DEAF: Any = _Deaf()


class _Handler(web.RequestHandler):
    listener: _Server
    """Set by the server that made it: how its listener answers and counts."""
    _body: StreamReader | None = None
    """The body of the last request the parser handed over, which it may still be reading, when
    that body is chunked (the only framing that can break after the hand-over)."""
    _reading: StreamReader = EMPTY_PAYLOAD
    """The body of the last request the parser handed over (at its end: the next bytes begin a
    request)."""
    _began: bytes | None = None
    """The bytes of the reads since the request the parser is reading began (less the empty
    lines before it), up to the one that ends its request line (None: between requests, or in a
    body), for the method of one whose
    target it refuses as too long (``head_refused``) or for its bytes above ASCII
    (``_read_again``)."""
    refused_path: str | None = None
    """The path of the request the parser refused (``refused_path``), when the read it began in
    says it: aiohttp's stand-in request for it is ``/``'s, so below the reserved prefix a signed
    event's sender got the site's page (until 2026-12-07), not the JSON its endpoints answer."""
    head_refused = False
    """The parser refused a ``HEAD`` (its target or a header over the limit, a header that is
    not HTTP): its answer has no body."""
    _head_timer: asyncio.TimerHandle | None = None
    """Ends the wait for the head of the request whose first bytes came (``header_timeout``)."""
    _head_tail: bytes = b""
    """The last bytes (twice the headers' limit) of the reads of a head that came in pieces, before
    the read being parsed: where the start of a header the parser refuses as over the limit is,
    for its name (``header_over``). Empty for a head that comes whole in one read."""

    _linger_left: int | None = None
    """Bytes more of the body its answer left unread that are read and dropped before the
    connection closes (``LINGER_BYTES`` from that answer); None: no such body is being read."""

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        """aiohttp's; a body the answer left unread, which aiohttp then reads and drops for its
        ``lingering_time`` (so that a client still sending reads the answer, not a reset), is
        read so for at most ``LINGER_BYTES`` more too (``_lingered``)."""
        answered = await super().finish_response(request, resp, start_time)
        if self._lingering_time and not request.content.is_eof():
            self._linger_left = LINGER_BYTES
        return answered

    def _lingered(self, data: bytes) -> bool:
        """Whether ``data`` takes the body being read after its answer past ``LINGER_BYTES``:
        then the connection is closed (the answer, written long before, goes first) and
        aiohttp's reading of it ends, as at the end of its ``lingering_time``."""
        if self._reading.is_eof() or self._request_in_progress:  # that body ended: no more to bound
            self._linger_left = None
            return False
        left = self._linger_left = (self._linger_left or 0) - len(data)
        if left >= 0:
            return False
        self._linger_left = None
        body = self._reading
        self.force_close()
        body.feed_eof()  # aiohttp's wait for the rest ends now, the connection closed
        return True

    def data_received(self, data: bytes) -> None:
        """aiohttp's, then: a request whose chunked framing broke once the parser had handed it
        over (a chunk size that is not hex, a chunk longer than it said) has its body failed
        with the parser's reason (``BrokenFraming``). aiohttp's C parser drops such a body
        without failing it, so its reader waited out the listener's body timeout for bytes that
        had come, and broken: a 408 "not received in time" (until 2026-12-06; a signed event's
        since that morning). Its reader answers it (400), and the connection closes. A refusal
        before any request was handed over is answered by ``handle_error``, as before.

        While the listener stops, the rest of the body of a request in progress is still read
        (``_body_arriving``): aiohttp drops every byte once the stop marks the connection closing,
        so an upload in flight stalled until ``proxy.shutdown_grace`` cut it off (until
        2026-12-06). Nothing after that body is taken: no next request on the connection.

        A body its answer left unread is read after it for at most ``LINGER_BYTES``
        (``_lingered``), then the connection closes: aiohttp bounds that by time alone."""
        if self._linger_left is not None and self._lingered(data):
            return
        if (self._close or self._force_close) and self._body_arriving():
            closing = self._close, self._force_close
            self._close = self._force_close = False
            try:
                self.data_received(data)
            finally:
                self._close, self._force_close = closing
            return
        awaiting = self._head_timer is None and self._awaiting_head()
        if not self._began:
            if self._reading.is_eof():  # a request's first bytes (aiohttp feeds b"" too)
                # Without the empty lines before it, which llhttp skips, any number of them:
                # kept, a client's megabytes of CRLF grew with each read.
                self._began = data.lstrip(b"\r\n")
        elif b"\n" not in self._began:  # its request line came in pieces
            self._began += data
        queued = len(self._messages)
        super().data_received(data)
        if len(self._messages) == queued:  # a body's bytes, or a request's first part: the usual
            # A head begun and not whole: timed from this read. One that comes whole in its
            # first read (nearly every one) arms no timer. Empty lines begin no head (llhttp
            # skips them; some clients send one after a body).
            if awaiting and self.transport is not None and data.lstrip(b"\r\n"):
                timeout = self.listener.header_timeout or 0
                self._head_timer = self._loop.call_later(timeout, self._head_overdue)
            if self._began:  # a head in pieces (a body's reads leave it None)
                self._head_tail = (self._head_tail + data)[-2 * self.max_field_size :]
            return
        if self._head_timer is not None:  # its head came whole (or was refused)
            self._head_timer.cancel()
            self._head_timer = None
        began, self._began = self._began, None
        self._declined_upgrade(data, began, queued)
        tail = self._head_tail
        if tail:
            self._head_tail = b""
        while True:  # again only once a refused target was read again (``_read_again``)
            for message, payload in itertools.islice(self._messages, queued, None):
                if not isinstance(message, _ErrInfo):
                    self._reading = payload
                    # Only a chunked body can break so; the test is first, as most requests have none.
                    self._body = payload if message.chunked and isinstance(payload, StreamReader) else None
                    continue
                if (
                    began is not None
                    and isinstance(
                        message.exc, http_exceptions.InvalidURLError | http_exceptions.BadHttpMethod
                    )
                    and (stand_in := self._read_again(began, queued, message.exc)) is not None
                ):
                    began = stand_in  # its target is ASCII, its method known: not read again
                    break
                self._refused(message, began, tail + data)
            else:
                # A head begun behind the last request, in the same read (pipelined): timed
                # from this read too. Known for sure only behind a request without a body,
                # whose head's end the read's last bytes are not then. Nearly every read ends
                # so: that test first, a slice each (a method call cost twice as much, ~950
                # instructions).
                if (
                    data[-3:] != b"\n\r\n"
                    and data[-2:] != b"\n\n"
                    and self._reading is EMPTY_PAYLOAD
                    and self._head_timer is None
                    and self.listener.header_timeout
                    and self.transport is not None
                ):
                    self._pipelined(data)
                return

    def _declined_upgrade(self, data: bytes, began: bytes | None, queued: int) -> None:
        """A request asking for an upgrade other than a WebSocket's (``Connection: Upgrade`` with
        ``Upgrade: h2c``, ``tcp``…), the last one this read handed over, is answered with
        ``Connection: close`` unless nothing can have followed it in the read (it began there,
        and its head, and its body of a ``Content-Length`` if any, end the read). llhttp stops
        at such a request and aiohttp's C parser, switching to no protocol but a WebSocket's,
        drops the rest of that read: a
        request pipelined behind it got no answer, the visitor waiting on a connection that said
        nothing until the idle timeout (until 2026-12-07). Closed after the answer, the client
        sends it again on a new connection, as for any pipelined request a server closes
        before answering. Guessing where the dropped bytes began is not done: a guess that is
        off by a byte reads a request the visitor never sent."""
        if self._upgraded or len(self._messages) <= queued:
            return
        message, payload = self._messages[-1]
        if isinstance(message, _ErrInfo) or not message.upgrade or message.should_close:
            return
        asked = message.headers.get(hdrs.UPGRADE, "")
        if message.method == hdrs.METH_CONNECT or (asked.isascii() and asked.lower() == "websocket"):
            return  # aiohttp's own switch: the rest of the read is the new protocol's, kept
        head = data.lstrip(b"\r\n")
        ends = [at + len(end) for end in (b"\n\r\n", b"\n\n") if (at := head.find(end)) >= 0]
        length = message.headers.get(hdrs.CONTENT_LENGTH, "0") if payload is not EMPTY_PAYLOAD else "0"
        if (
            len(self._messages) == queued + 1
            and began == head
            and not message.chunked
            and length.isascii()
            and length.isdigit()
            and ends
            and min(ends) + int(length) == len(head)
        ):
            return  # it alone, its head and body whole in this read, which ends with it
        self._messages[-1] = (message._replace(should_close=True), payload)

    def _pipelined(self, data: bytes) -> None:
        """Time the head that ``data``, a read that ended a request without a body, began after
        it (bytes after the last empty line, less empty lines of their own)."""
        end = max(data.rfind(b"\n\r\n") + 3, data.rfind(b"\n\n") + 2)
        tail = data[end:].lstrip(b"\r\n") if end >= 2 else b""
        if tail and not self._upgraded:
            self._began = self._head_tail = tail
            self._head_timer = self._loop.call_later(self.listener.header_timeout or 0, self._head_overdue)

    def _body_arriving(self) -> bool:
        """A request is being answered whose body has not all come yet, on an open connection
        (not a WebSocket's), nor failed (its framing broken: ``_refused`` closed the connection
        so that the parser takes nothing more)."""
        return (
            self.transport is not None
            and not self._upgraded
            and self._request_in_progress
            and not self._reading.is_eof()
            and self._reading.exception() is None
        )

    def _awaiting_head(self) -> bool:
        """Bytes now would begin a request head: one is bound (``header_timeout``), no request
        is queued, no body is being read, the connection is no WebSocket's. A request may be
        being answered: a head begun behind it (pipelined) is timed from its first byte too.
        Until 2026-12-07 it was not, and only ``keepalive_timeout``, counted from that answer,
        bounded it (a slow-loris on a kept-alive connection held it that long, without a 408)."""
        return (
            bool(self.listener.header_timeout)
            and not self._messages
            and not self._upgraded
            and self._reading.is_eof()
        )

    def _head_overdue(self) -> None:
        """``header_timeout`` is over and the head that began is not whole: a 408, the refusal
        queued as the parser queues its own (answered by ``handle_error``, the connection closed
        after it), and nothing more read. aiohttp has no bound of its own for a head: its
        ``keepalive_timeout`` closed the connection without an answer, counted from the last
        answer (or the connection's start), however long the head had been arriving."""
        self._head_timer = None
        if self.transport is None or self._close or self._force_close:
            return
        exc = HeadTimeout(self.listener.header_timeout or 0)
        self.head_refused = refused_method(exc, self._began or b"", False) == b"HEAD"
        self._messages.append((_ErrInfo(408, exc, exc.message), EMPTY_PAYLOAD))
        self._request_count += 1
        if self._request_in_progress or len(self._messages) > 1:
            # A pipelined head, behind requests still answered or queued: their answers go out
            # whole, then the 408 (which closes the connection). Meanwhile the parser takes
            # nothing more: ``_close`` would end the request loop before it reached the 408.
            self._parser = _DEAF
            return
        self._close = True  # the parser takes nothing more (``data_received``); not ``close()``,
        # which would cancel the request loop's wait for this very refusal
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _process_keepalive(self) -> None:
        """aiohttp's idle close (``keepalive_timeout``), but not while a head is arriving: its
        own bound (``header_timeout``, from its first byte) is the one that ends it, with a 408."""
        if self._head_timer is not None:
            self._keepalive_handle = None  # set again by aiohttp once that request is answered
            return
        closing = self._force_close
        super()._process_keepalive()
        if self._force_close and not closing:  # it closed the connection: idle past the bound
            self.listener.closed_idle()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _refused(self, message: _ErrInfo, began: bytes | None, head: bytes) -> None:
        """What the parser refused (``message``): a refused ``HEAD`` is known for one (its
        answer has no body, ``head_refused``); a header over the limit is named where ``head``,
        the bytes read up to the refusal, holds its start (``HeaderTooLong``); a chunked body
        it was reading is failed (``BrokenFraming``)."""
        exc = message.exc
        target = False
        if isinstance(exc, http_exceptions.LineTooLong):
            target = too_long_status(exc, self.listener.limits) == 414
            named = None if target else header_over(head, self.max_field_size)
            if named is not None:
                exc = self._named(message, HeaderTooLong(exc, named))
        if began is not None and isinstance(exc, http_exceptions.HttpProcessingError):
            self.head_refused = refused_method(exc, began, target) == b"HEAD"
            self.refused_path = None if target else refused_path(began)
        body, self._body = self._body, None
        if body is not None and not body.is_eof() and body.exception() is None:
            body.set_exception(BrokenFraming(reason(message.exc, message.status)))
            # The parser takes nothing more on this connection: closed once the request is
            # answered, not drained first (which would raise this error again, logged as
            # unhandled), the refusal queued behind it not answered a second time.
            self._lingering_time = 0.0
            self.close()

    def _named(self, message: _ErrInfo, exc: HeaderTooLong) -> HeaderTooLong:
        """``message``, queued for aiohttp's request loop, now refused with ``exc``."""
        for i, (queued, payload) in enumerate(self._messages):
            if queued is message:
                self._messages[i] = (_ErrInfo(message.status, exc, message.message), payload)
        return exc

    def _read_again(self, began: bytes, queued: int, refusal: BaseException) -> bytes | None:
        """The request whose target or method the parser refused (``refusal``; the only message
        after ``queued``), read again by a fresh parser from ``began``, its bytes so far, when
        that target is refused for its raw bytes above ASCII alone, or that method for not being
        on llhttp's list (``gateway.raw_targets``): a stand-in letter in their place, a known
        method in its, the target and method as sent put back in what is handed over. Returns the
        stand-in bytes, or None (the refusal stands): nothing to read again, another request
        before it in the same read, or a head whose end has not come yet (a head in pieces, its
        raw bytes in an earlier piece than its end).

        ``began`` holds the request's reads up to the one that ends its request line: the
        refused byte is in one of them."""
        stand_in = ascii_stand_in(began, isinstance(refusal, http_exceptions.BadHttpMethod))
        if stand_in is None or len(self._messages) != queued + 1:
            return None
        parser = HttpRequestParser(  # as aiohttp's ``RequestHandler.__init__`` makes it
            self,
            self._loop,
            self._read_bufsize,
            max_line_size=self.max_line_size,
            max_field_size=self.max_field_size,
            max_headers=self.max_headers,
            payload_exception=RequestPayloadError,
            auto_decompress=self.listener.limits.get("auto_decompress", True),
            max_msg_queue_size=self._max_msg_queue_size,
        )
        messages: Sequence[tuple[Any, Any]]
        try:
            messages, upgraded, tail = parser.feed_data(stand_in.head)
        except http_exceptions.HttpProcessingError as exc:  # refused for another byte: its refusal
            messages, upgraded, tail = [(_ErrInfo(400, exc, exc.message), EMPTY_PAYLOAD)], False, b""
        if not messages:  # aiohttp's request loop, woken for the refusal, must find it there
            return None
        self._messages.pop()
        self._parser = parser  # the refusing one takes nothing more
        first, payload = messages[0]
        if not isinstance(first, _ErrInfo):
            messages = [(restored(first, stand_in), payload), *messages[1:]]
        self._messages.extend(messages)
        self._request_count += len(messages) - 1
        self._upgraded = upgraded
        if upgraded and tail:
            self._message_tail = tail
        return stand_in.head

    async def shutdown(self, timeout: float | None = 15.0) -> None:
        """Stop within ``timeout`` (``proxy.shutdown_grace``) in all. aiohttp's own waits that
        long for the request in progress, then cancels only the reading of its body and waits
        as long again before cancelling the handler: a request waiting on a site that does not
        answer held the stop for twice the grace (until 2026-12-05), past the supervisor's
        patience (grace + 5 s), which then killed the worker, its store unflushed. Here the
        request has the grace to finish, then aiohttp's own steps run with ``CUT_OFF`` each."""
        if timeout is None or not self._request_in_progress:
            await super().shutdown(timeout)
            return
        self._force_close = True  # no next request on this connection, as aiohttp's first step
        if self._keepalive_handle is not None:
            self._keepalive_handle.cancel()
        self._handler_waiter = self._loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                await self._handler_waiter
        except TimeoutError:
            self.listener.cut_off += 1  # said in the log once the listener is closed
        finally:
            self._handler_waiter = None
        await super().shutdown(CUT_OFF)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's answer to a request its parser refused (or that failed in a way no
        middleware caught): the listener's own, logged without the client's address. A line
        over the limit is a 414 or 431 (aiohttp says 400)."""
        if isinstance(exc, http_exceptions.LineTooLong):
            status = too_long_status(exc, self.listener.limits)
        why = reason(exc, status)
        if status >= 500 or not isinstance(exc, http_exceptions.HttpProcessingError):
            log.error("a request failed (%d): %s", status, why, exc_info=exc)
        else:
            self.listener.refused(exc, why)
        if request.writer.output_size > 0:  # as aiohttp: too late for another answer
            raise ConnectionError("a response had begun: the connection is closed instead")
        response = self.listener.answer(status, why, self.refused_path or request.path, exc)
        response.force_close()
        return response


class _Server(web.Server):
    """aiohttp's server, making ``_Handler``s, with how its listener answers (``public``: the
    proxy's neutral page, but JSON on ``json_paths``; else the admin API's JSON error; with
    ``headers``) and counts (``counted``) what aiohttp refuses itself."""

    public = False
    json_paths: Callable[[str], bool] | None = None
    headers: Mapping[str, str] = {}
    counted: Callable[[], None] | None = None
    timed_out: Mapping[str, Callable[[], None]] = {}
    """Called for each connection closed for a timeout, by the option that bounds it
    (``keepalive_timeout``, ``header_timeout``): ``gateway_connections_timed_out_total``."""
    idle_said: Throttled | None = None
    """Where idle closes are said (debug; at most one line every 10 s)."""
    slow_head_said: Throttled | None = None
    """Where heads answered 408 for ``header_timeout`` are said (info; one line every 10 s)."""
    header_timeout: float | None = None
    """Seconds a request head may take to arrive whole once its first byte came; later is a
    408 (``_Handler._head_overdue``). None: no bound (aiohttp's)."""
    cut_off = 0
    """Requests still running when the stop's grace was over, cut off (``_Handler.shutdown``)."""
    _loud_at = float("-inf")

    def __call__(self) -> web.RequestHandler:
        handler = _Handler(self, loop=self._loop, **self._kwargs)
        handler.listener = self
        return handler

    @property
    def limits(self) -> Mapping[str, Any]:
        """The parser's limits this listener was made with (``max_line_size``, ``max_field_size``)."""
        return self._kwargs

    def answer(self, status: int, why: str, path: str, exc: BaseException | None = None) -> web.Response:
        """The listener's answer to a request it refuses; ``path``: the request's, or ``/``
        for what the parser refused (aiohttp's stand-in request does not carry the path);
        ``exc``: what the parser refused, a header over the limit, or one sent more than once that
        HTTP allows once, named on the page."""
        if self.public and not (self.json_paths and self.json_paths(path)):
            if isinstance(exc, HeaderTooLong):
                limit = exc.args[1] if isinstance(exc.args[1], int) else 0
                response = error_page(status, header=exc.header, limit=limit)
            elif status == 400 and (twice := repeated_header(exc)) is not None:
                response = error_page(status, repeated=twice)
            else:
                response = error_page(status if 400 <= status < 600 else 500)
        else:
            response = json_error(status, why)
        response.headers.update(self.headers)
        return response

    @property
    def name(self) -> str:
        """The listener as the config and the metrics name it."""
        return "proxy" if self.public else "admin"

    def closed_idle(self) -> None:
        """A connection was closed idle past ``keepalive_timeout``: counted, and said at debug
        level (browsers keep their connections open: this is the usual end of one)."""
        counted = self.timed_out.get("keepalive_timeout")
        if counted is not None:
            counted()
        if self.idle_said is not None and log.isEnabledFor(logging.DEBUG):
            self.idle_said(
                "closed a connection to the %s listener idle past proxy.keepalive_timeout (%g s)",
                self.name,
                self._kwargs.get("keepalive_timeout", 0),
            )

    def refused(self, exc: http_exceptions.HttpProcessingError, why: str) -> None:
        """Count and log a request the parser refused: no traceback, address or bytes; at
        debug level (scanners send such all day), but a line over the limit at info once a
        minute (real clients with oversized cookies hit it), and a head not whole within
        ``header_timeout`` at info once every 10 s (a slow-loris, or clients on a bad network)."""
        if self.counted is not None:
            self.counted()
        if isinstance(exc, HeadTimeout):
            counted = self.timed_out.get("header_timeout")
            if counted is not None:
                counted()
            if self.slow_head_said is not None:
                self.slow_head_said(
                    "a request head did not arrive whole within proxy.header_timeout (%g s) on the "
                    "%s listener: answered 408 and the connection closed (a slow client or a "
                    "slow-loris; gateway_connections_timed_out_total counts them)",
                    self.header_timeout or 0,
                    self.name,
                )
            return
        now = time.monotonic()
        if isinstance(exc, http_exceptions.LineTooLong) and now - self._loud_at >= LOUD_EVERY:
            self._loud_at = now
            log.info("refused a request: %s; if real clients send such, raise the limit", why)
        else:
            log.debug("refused a request: %s", why)

    def refuse_target(self, request: web.BaseRequest, limit: int) -> web.StreamResponse:
        """The 414 of a request target of ``limit`` bytes (the listener's target limit, one
        more than the headers'), which the parser took: counted and logged as its own
        refusals of a longer one."""
        exc = http_exceptions.LineTooLong(b"", limit)
        why = reason(exc, 414)
        self.refused(exc, why)
        response = self.answer(414, why, request.path)
        response.force_close()
        return response

    def refusals(self, handle: _Handle) -> _Handle:
        """``handle`` (the app's, or the proxy's ``HostSlot.serve``), with the refusals aiohttp
        raises outside the app's middlewares answered and counted as this listener does: on the
        proxy, ``GET *`` (405) and a WebSocket handshake aiohttp refuses (a target that is no
        path, as ``CONNECT host:port`` sends, is the proxy's own 400); on the admin listener,
        the router's; on both, an ``Expect`` other than ``100-continue``. aiohttp answers them
        in plain text under its Server header, echoing the header's value. And a request target
        of the parser's limit, one byte over the listener's (``line_limits``), which the parser
        let through."""

        line, field = self.limits.get("max_line_size"), self.limits.get("max_field_size")
        target_limit = line if isinstance(line, int) and line != field else None

        async def refusals(request: web.BaseRequest) -> web.StreamResponse:
            # The target as received (its bytes: the parser refuses others than ASCII in it).
            if target_limit is not None and len(request.raw_path) >= target_limit:
                # The byte the parser takes past the headers' limit (``line_limits``): it let
                # such a target through, and the proxy forwarded it, one byte over.
                return self.refuse_target(request, target_limit)
            try:
                return await handle(request)
            except web.HTTPException as refused:
                if refused.status < 400:
                    raise
                if self.counted is not None:
                    self.counted()
                status = refused.status
                why = _HTTP_REASONS.get(status, HTTPStatus(status).phrase.lower())
                response = self.answer(status, why, request.path)
                if hdrs.ALLOW in refused.headers:
                    response.headers[hdrs.ALLOW] = refused.headers[hdrs.ALLOW]
                return response

        return refusals


def rooted(factory: _RequestFactory) -> _RequestFactory:
    """``factory`` (aiohttp's request factory), but an absolute-form target without a path
    (``http://shop.test``, ``http://shop.test?q=1``) is routed as ``/``: its path is ``/``
    (RFC 9110 §4.2.3), and aiohttp's router, which matches path segments, found none in it.
    Only the routing changes: ``raw_path`` stays the target as received."""

    def make(message: RawRequestMessage, *args: Any) -> web.BaseRequest:
        url = message.url
        if not message.path.startswith("/") and url.scheme and not url.relative().raw_path:
            url = url.with_path("/", encoded=True, keep_query=True, keep_fragment=True)
            message = message._replace(url=url)
        return factory(message, *args)

    return make


def closing_while(draining: asyncio.Event, factory: _RequestFactory) -> _RequestFactory:
    """``factory``, but while ``draining`` is set (a stop's ``proxy.drain_seconds``) each request
    is made as if its client had sent ``Connection: close``: aiohttp's answer says
    ``Connection: close`` (HTTP/1.1) and the connection closes after it, so a kept-alive client
    (a balancer's pool, a browser) opens its next one elsewhere. Until 2026-12-07 it reused this
    one until the listeners closed, and met a reset. An upgrade (a WebSocket) is left as asked:
    its relay closes with 1001 at the stop (``gateway/websocket.py``)."""

    def make(message: RawRequestMessage, payload: Any, protocol: Any, *args: Any) -> web.BaseRequest:
        if draining.is_set() and not message.should_close and not message.upgrade:
            message = message._replace(should_close=True)
        return factory(message, payload, protocol, *args)

    return make


def answered_in_http11(factory: _RequestFactory) -> _RequestFactory:
    """``factory``, but the stand-in request aiohttp makes for what its parser refused is an
    HTTP/1.1 one, so the refusal's status line says ``HTTP/1.1`` (RFC 9112 §2.3: the highest
    version the server conforms to, of the request's major version or below; an HTTP/1.0 client
    reads it too). aiohttp's stand-in says HTTP/1.0 whatever the request said: until 2026-12-05
    ``GET /aaa… HTTP/1.1`` over the limit was answered ``HTTP/1.0 414`` (but ``HTTP/1.1 414`` one
    byte over, refused by ``refusals``, and by mitmdump), a header over it ``HTTP/1.0 431``."""
    stand_in = ERROR._replace(version=HttpVersion11)
    head = stand_in._replace(method=hdrs.METH_HEAD)

    def make(message: RawRequestMessage, payload: Any, protocol: Any, *args: Any) -> web.BaseRequest:
        if message is ERROR:  # a HEAD's refusal is a HEAD's answer: its head alone (aiohttp's)
            message = head if getattr(protocol, "head_refused", False) else stand_in
        return factory(message, payload, protocol, *args)

    return make


class Runner(web.AppRunner):
    """``web.AppRunner`` whose listener answers what aiohttp refuses itself as the gateway
    answers there: ``public``, the proxy's neutral page, but the JSON error on the paths
    ``json_paths`` accepts (the reserved prefix's); else the admin API's JSON error.
    ``headers``: added to each of those answers. ``counted``: called for each request it
    refuses so (the proxy counts them in ``gateway_requests_total{outcome="bad_request"}``).
    ``handler``: every request's, in place of the app's router (the proxy's, ``HostSlot.serve``).
    ``header_timeout``: seconds a request head may take to arrive whole once its first byte came
    (later: 408); aiohttp's ``keepalive_timeout`` among ``kwargs`` bounds an idle connection.
    ``timed_out``: by option (``keepalive_timeout``, ``header_timeout``), called for each
    connection either closes. ``draining``: once set, every answer closes its connection
    (``closing_while``). ``Gateway.listener`` gives each listener's."""

    def __init__(
        self,
        app: web.Application,
        *,
        public: bool = False,
        json_paths: Callable[[str], bool] | None = None,
        headers: Mapping[str, str] | None = None,
        counted: Callable[[], None] | None = None,
        timed_out: Mapping[str, Callable[[], None]] | None = None,
        handler: _Handle | None = None,
        header_timeout: float | None = None,
        draining: asyncio.Event | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self.draining = draining
        self.public, self.json_paths, self.headers = public, json_paths, headers or {}
        self.counted = counted
        self.timed_out = timed_out or {}
        self.header_timeout = header_timeout
        self.handler = handler
        self.made: _Server | None = None

    @property
    def cut_off(self) -> int:
        """Requests this listener cut off at its stop, when ``shutdown_timeout`` was over."""
        return self.made.cut_off if self.made is not None else 0

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # ``handler``, when given, takes every request in place of the app's router (which
        # ``rooted`` is for): the app still makes the requests and runs its start and cleanup.
        handler = self.handler or server.request_handler
        factory = server.request_factory if self.handler else rooted(server.request_factory)
        factory = answered_in_http11(factory)
        made = _Server(
            handler,
            request_factory=factory if self.draining is None else closing_while(self.draining, factory),
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **server._kwargs,
        )
        made.public, made.json_paths, made.headers = self.public, self.json_paths, self.headers
        made.counted = self.counted
        made.timed_out = self.timed_out
        made.idle_said = Throttled(log, logging.DEBUG)
        made.slow_head_said = Throttled(log, logging.INFO)
        made.header_timeout = self.header_timeout
        self.made = made
        made.request_handler = made.refusals(handler)  # before any connection
        return made
