"""The lean upstream client: HTTP/1.1 to the one upstream over a pool of keep-alive connections.

Owns the connections the proxy forwards ordinary requests on. The proxy has already built
everything a request needs (the target byte for byte, the header list), so this writes the
request head as given — nothing added but the body's framing — streams the body (with the
visitor's ``Content-Length``, else chunked) and reads the response with aiohttp's client
protocol (``aiohttp.client_proto.ResponseHandler``: its llhttp ``HttpResponseParser``, flow
control both ways, the read timeout, close-delimited bodies, 1xx messages). What it leaves
out of ``ClientSession.request`` is what the proxy never uses: URL objects, auto headers,
cookie jar, redirects, tracing hooks, per-request timeout contexts, connector bookkeeping.

The pool: at most ``proxy.upstream_connections`` connections (busy or idle) plus WebSocket
relays, which run on aiohttp's session and hold a slot each (``reserve``/``unreserve``); a
request waits for a connection or a slot up to ``connect_timeout`` (then ``TimeoutError``:
504). A connection goes back to the pool only when its response was read whole, its request
body was sent whole, and neither side asked to close it; anything else closes it. A request
without a body that finds its reused connection closed by the upstream (a keep-alive race) is
sent once more on a new connection, as aiohttp does for idempotent methods; so is one that
finds, before its answer, the late body of an answer that should have had none
(``Connection.suspect``), a connection only such a request takes, or any other bytes no answer
begins with, which a site sent late after an answer that was whole (``OutOfStep``). Any other
request (a POST, an upload) takes only a connection idle less than ``ONCE_IDLE_SECONDS``,
which the site has not begun to close. No request takes one idle near the bound the site
announced in its ``Keep-Alive`` header, or past the requests it said it takes
(``gateway.framing``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import re
import ssl
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable

from aiohttp import (
    ClientConnectorError,
    ClientError,
    ClientOSError,
    ClientPayloadError,
    ServerDisconnectedError,
)
from aiohttp.client_proto import ResponseHandler
from aiohttp.helpers import EMPTY_BODY_STATUS_CODES
from aiohttp.http import HttpProcessingError, RawResponseMessage
from aiohttp.http_parser import HeadersParser, HttpPayloadParser, PayloadState
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from multidict import CIMultiDictProxy
from yarl import URL

from gateway.emails import without_email
from gateway.framing import keep_alive, readable_head, reuse_bound, transfer_codings, unframed_head
from gateway.logs import Throttled
from gateway.networds import not_connected

log = logging.getLogger("gateway.upstream")

IDLE_SECONDS = 15.0
"""How long an idle connection is kept for reuse (aiohttp's ``keepalive_timeout``)."""
ONCE_IDLE_SECONDS = 0.5
"""How long a connection may have been idle to take a request that is not sent twice (one with
a body, a POST): a site closes a connection idle past its own bound (gunicorn 2 s; Node, uvicorn,
Apache 5 s; 1 s where an operator set it so), and one closed just as the request goes out fails
it: a GET is sent again, such a request would be a 502. Below the site's bound the close cannot
cross it. A site that announces a lower bound (``Keep-Alive: timeout=N``) is held to it too
(``Connection.keep_for``)."""
HELD_HEAD = 2**16
"""Bytes of an answer head held back until its end comes, so that the whole head can be read
(``gateway.framing.unframed_head``) before the parser sees it; a longer head is fed as it comes."""
READ_BUFSIZE = 2**16
"""Response body bytes buffered before reading from the upstream pauses."""
MAX_RESPONSE_HEADERS = 1000
"""Header lines the site's answer may have (aiohttp's default, 128, made a 502 of a page that
sets many cookies); each is still held to ``proxy.max_header_size``."""
# Methods after which a missing body needs no "Content-Length: 0" (aiohttp's GET_METHODS).
_BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# Sent again once when a reused connection turns out closed before any answer.
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
# The transfer codings (besides chunked) the gateway undoes → aiohttp's name for each: those
# of IANA's registry that are in use (RFC 9112 §7.2: ``x-gzip`` is ``gzip``; ``compress``,
# LZW, is not; ``br`` and ``zstd`` are content codings only).
_UNDONE = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}


def _head_end(buf: bytes, start: int) -> int:
    """The index just past the empty line that ends a message head in ``buf`` (searched from
    ``start``), or -1. The parser takes a bare LF for a line's end too."""
    # CRLF first, the common line end, and the bare-LF search only up to it: searched the other
    # way round, each answer's first read was scanned whole for a "\n\n" (2 µs for a 2 KB one).
    crlf = buf.find(b"\n\r\n", start)
    lf = buf.find(b"\n\n", start, crlf + 1 if crlf >= 0 else len(buf))
    if lf >= 0:
        return lf + 2
    return crlf + 3 if crlf >= 0 else -1


def _final_with_body(data: bytes) -> bool:
    """Whether ``data``, the first bytes of an answer, start the head of a final answer that
    may have a body (``HTTP/1.1 200``): the common case, fed to the parser as it comes."""
    return (
        len(data) > 12
        and data.startswith(b"HTTP/1.")
        and data[9] in b"2345"
        and data[9:12] not in (b"204", b"304")
    )


def _head_length(data: bytes, end: int) -> int | None:
    """The ``Content-Length`` of the head ``data[:end]`` (None: none, or chunks; -1: a head the
    parser would refuse as it is — a length beside chunks, a length sent twice or that is no
    number — to be rewritten first, ``unframed_head``, where it can be). Every answer's first
    read comes here, so the spelling most servers write (``Content-Length``) is looked for first,
    in place; the head is lower-cased only for another spelling, or when something in it may be
    a ``Transfer-Encoding``."""
    at = data.find(b"\nContent-Length:", 0, end)
    if at < 0 or data.find(b"ransfer-", 0, end) >= 0:
        head = data[:end].lower()
        at = head.find(b"\ncontent-length:")
        if at < 0:
            return None
        if b"\ntransfer-encoding:" in head:
            return -1
        eol = head.find(b"\n", at + 16, end)
        if head.find(b"\ncontent-length:", eol, end) >= 0:  # sent twice
            return -1
    else:
        head = data
        eol = head.find(b"\n", at + 16, end)
        # Sent twice, perhaps in another spelling (before or after): "ength:" spans both.
        if head.find(b"ength:", eol, end) >= 0 or head.find(b"ength:", 0, at) >= 0:
            return -1
    value = head[at + 16 : eol].strip(b" \t\r")
    # At most 18 digits: int() refuses text past 4,300 (raising inside data_received: asyncio's
    # fatal protocol error); a length past any body is the parser's to refuse, as a non-number.
    return int(value) if value.isdigit() and len(value) <= 18 else -1


def _interim_spaced(head: bytes) -> bool:
    """Whether ``head`` is an interim (1xx) one with a space or tab before a colon somewhere
    (a name's, or inside a value: ``unframed_head`` tells them apart)."""
    return head[9:10] == b"1" and (b" :" in head or b"\t:" in head)


def _length(headers: CIMultiDictProxy[str]) -> int | None:
    """A parsed head's ``Content-Length`` (None: none, or chunks)."""
    value = headers.get("Content-Length")
    if value is None or "Transfer-Encoding" in headers or not value.isdigit():
        return None
    return int(value)


def _announces_body(headers: CIMultiDictProxy[str]) -> bool:
    """Whether a head announces a body: chunks, or a length above 0."""
    return "Transfer-Encoding" in headers or headers.get("Content-Length", "0").strip("0") != ""


# Where a Connection is in reading the answer to the request in hand (``Connection.answer``).
START, HEAD, BODY, STRAY, CHUNKS, LAX = range(6)
"""No byte yet; reading heads (interim, then the final one); reading the final answer's body;
past a bodiless final answer (or a body read whole by the lenient reader), where any byte is a
body it should not have had; a chunked body whose first size line has not come whole; a chunked
body whose chunk lines end in a bare LF, read by the lenient reader (``Connection._lax``)."""


class Connection(ResponseHandler):
    """aiohttp's client protocol, remembering whether the connection broke (a reset, an error)
    rather than closed: aiohttp's parser ends a body of no length at either.

    And an answer that has no body (to HEAD, a 204 or a 304) but comes with body bytes all the
    same: the parser, fed those bytes with its head, took them for the next answer and failed,
    losing the head it had just read (a 502, where a client of the site itself gets the
    headers). Unless an answer's first bytes show a status that has a body (the common case,
    fed as it comes), its bytes are fed up to the end of each head; once the final head is
    read, the rest of a bodiless answer is dropped and the connection, out of step, is not
    used again.

    An answer with more bytes than its ``Content-Length`` (a length counted by hand, a newline a
    template added after it) failed alike: the parser took the rest for the next answer. Its
    body is cut at its length, as browsers, curl and nginx cut it; the rest is dropped and the
    connection not used again (``_body_received``), with a warning naming the request
    (``overlong``, as nginx logs "upstream sent more data than specified").

    Such a body may also come late, after the connection went back to the pool and the next
    request went out on it, where the parser read it as that request's answer and failed. The
    bytes that arrive while the connection is idle close it (``STRAY``); for the rest,
    ``suspect`` marks a connection whose last answer had no body but announced one (a length,
    chunks: the site may have meant to send it): only a request that may be sent twice takes
    it, and is sent once more on a new connection if the bytes came (``OutOfStep``).

    Bytes after a whole answer (past its length, after its last chunk) that come late, once the
    next request went out, are that request's first bytes: when no answer begins so, they are
    fed to the parser at once, which refuses them (held as a head's start, they waited for the
    read timeout), and the request, on a reused connection, may be sent again (``OutOfStep``).

    Bytes after a chunked answer's last chunk (a template's comment) failed alike, and when they
    came in the read that brought the head, the parser's failure lost that head too: a 502. A
    chunked head is fed apart from its body, so the bytes after its end fail only what comes
    after a whole answer: they are dropped with the connection (``set_exception``), and an
    info line names the request (``trailing``).

    A head the parser would refuse where a browser reads the page — ``Content-Length`` beside
    chunks, one length sent twice — is held until its end has come and rewritten before the
    parser sees it (``gateway.framing.unframed_head``); after chunks that had a length beside
    them, the connection is not used again (RFC 9112 §6.3).

    A whole head the parser refuses all the same (``X-Cache : HIT``, a bare CR, a name that is
    no token) is rewritten as curl and browsers read it (``gateway.framing.readable_head``) and
    read again by a fresh parser, once (``_feed_head``): aiohttp's own reading closed the
    connection at the refusal, a 502. Only a refused head comes to that, so a clean one costs
    nothing more; refused again, it is the 502 it was.

    A chunked body whose chunk lines end in a bare LF, not CRLF (an old CGI stack, a
    hand-written server): curl and browsers read it, but the llhttp parser refuses such a size
    line (the visitor's connection was reset) or, for ``0\\n\\n``, waits for more until the read
    timeout (until 2026-12-06). aiohttp gives no way to make llhttp lenient there, so the first
    size line decides (``_first_chunk_line``): one ending in CRLF goes on to the parser as it
    always did; one ending in a bare LF hands the whole body to aiohttp's pure-Python chunk
    reader in its lenient mode (``_read_lax``), a warning names the request, and the connection
    is not used again. A site writes every chunk line alike, so the first one tells.

    A transfer coding under the chunks (``Transfer-Encoding: gzip, chunked``), or alone on a
    body the close ends (``gzip``): the parser undid the chunks and passed the gzip bytes on as
    the body, and the proxy, dropping the hop-by-hop header, sent them to the visitor with
    nothing saying they were gzipped (until 2026-12-07). A transfer coding is the hop's, not
    the page's (RFC 9112 §7), so it is undone here (``_read_coded``): the body goes to the
    same lenient reader, with aiohttp's decoder of that coding behind it, and the connection
    is not used again. One the gateway does not undo (``compress``, two stacked, ``chunked``
    not last) fails the answer (``UpstreamProtocolError``: a 502, as nginx answers any).

    And the site's ``Keep-Alive: timeout=N, max=M`` on each final answer: how long the
    connection may stay idle and still be reused (``keep_for``), 0 once the site said it takes
    no more requests on it."""

    broken = False
    suspect = False
    """The last answer had no body but its head announced one."""
    late = False
    """The answer in hand began with bytes no answer begins with (``OutOfStep``'s ``after``)."""
    answer = START
    """Set to START for each request (``begin``)."""
    keep_for = math.inf
    """Seconds the connection may stay idle and still be reused, from the last answer's
    ``Keep-Alive`` (inf: it had none; 0: not reused)."""
    _held = b""
    """The bytes of a head whose end has not come yet, not yet fed (at most ``HELD_HEAD``)."""
    _partial = False
    """Part of a head whose end has not come was fed (one longer than ``HELD_HEAD``)."""
    _left: int | None = None
    """Body bytes the final answer's ``Content-Length`` still has to come (None: no length)."""
    sent = b""
    """The head of the request in hand (or the last one), for a log line to name it."""
    overlong: Throttled | None = None
    """Where an answer longer than its ``Content-Length`` is logged (the pool's)."""
    trailing: Throttled | None = None
    """Where bytes after a chunked answer's end are logged (the pool's)."""
    sloppy: Throttled | None = None
    """Where a head read again once rewritten is logged (the pool's)."""
    bare_lf: Throttled | None = None
    """Where a chunked answer read leniently (chunk lines ending in a bare LF) is logged."""
    _line = b""
    """The first bytes of a chunked body, held until its first size line has come whole."""
    _lax: HttpPayloadParser | None = None
    """The lenient reader of a chunked body whose chunk lines end in a bare LF (``LAX``), or of
    a body with a transfer coding to undo (``_read_coded``)."""
    _until_close = False
    """The lenient reader's body is one the close ends (a transfer coding without chunks)."""
    max_field_size = 8190
    """The pool's ``max_field_size``, for a parser made anew (``_read_again``)."""

    def begin(self, head: bytes) -> None:
        """Make ready to read the answer to the request whose head is ``head``. The answer
        before's body reader is let go too: aiohttp keeps it until the next head is read, and
        where that head was refused, ``set_exception`` took that body, whole, for this answer's
        and the refusal for bytes after its end — the request was sent again and a line blamed
        a chunked answer the site never sent (until 2026-12-06)."""
        self.answer = START
        self.sent = head
        self.late = False
        self._payload = None

    def connection_lost(self, exc: BaseException | None) -> None:
        self.broken = exc is not None
        reader, payload = self._lax, self._payload
        if self._until_close and reader is not None and payload is not None:
            # A coded body the close ends (``Transfer-Encoding: gzip``): whole at a close, cut
            # short at a break.
            self._lax, self._payload = None, None
            try:
                if exc is not None:
                    raise ClientPayloadError("the site's connection broke mid-body")
                reader.feed_eof()
            except Exception as err:
                why = f"the site's answer could not be read on: {type(err).__name__}"
                payload.set_exception(err if isinstance(err, ClientPayloadError) else ClientPayloadError(why))
        super().connection_lost(exc)

    def set_exception(self, exc: BaseException, *cause: BaseException) -> None:
        """aiohttp's; and when its parser failed on the body being read (a chunk size that is no
        number, a bad chunk end), that body's reader gets the error too. It failed only the
        protocol: the reader got neither an end nor an error, and the read timer was stopped,
        so the visitor, who had the head and the first chunks, waited for the rest for ever
        (until 2026-12-05). Other errors set here (an upload the site stopped taking,
        ``_send_body``) leave an answer already coming alone.

        When the body was already whole (chunks ended), the parser failed on bytes after it that
        answer nothing: the answer stands, and the connection, which aiohttp closed, is not used
        again."""
        payload = self._payload
        if (
            isinstance(exc, HttpProcessingError)
            and self.answer == BODY
            and payload is not None
            and payload is not EMPTY_PAYLOAD
            and payload.is_eof()
            and payload.exception() is None
        ):
            self._should_close = True
            self._told(
                self.trailing,
                "upstream sent bytes after the end of its chunked answer to %s %s; they were "
                "dropped and the connection closed",
            )
            return
        super().set_exception(exc, *cause)
        if (
            isinstance(exc, HttpProcessingError)
            and payload is not None
            and payload is not EMPTY_PAYLOAD
            and not payload.is_eof()
            and payload.exception() is None
        ):
            why = f"the site's answer could not be read on: {unreadable(exc)}"
            payload.set_exception(ClientPayloadError(why))

    def feed_data(self, data: tuple[RawResponseMessage, StreamReader], size: int = 0) -> None:
        message = data[0]
        if not 100 <= message.code < 200:
            kept = message.headers.get("Keep-Alive")
            self.keep_for = math.inf if kept is None else _keep_for(kept)
            if self.answer == HEAD:
                if self._skip_payload or message.code in (204, 304):
                    self.answer = STRAY
                    self.suspect = _announces_body(message.headers)
                else:
                    self.answer = CHUNKS if message.chunked else BODY
                    self._left = _length(message.headers)
            elif self.answer == BODY and message.chunked:
                self.answer = CHUNKS
            # Answers with a length (most) pay one comparison; the others, one header lookup
            # (and a plain ``chunked`` one comparison more).
            coded = None
            if self._left is None and self.answer != STRAY:
                coded = message.headers.get("Transfer-Encoding")
                if (
                    coded is not None
                    and message.chunked
                    and (coded == "chunked" or coded.strip(" \t").lower() == "chunked")
                ):
                    coded = None  # chunked alone: a later line could only say chunked again
            if coded is not None:
                why = self._read_coded(message)
                if why is not None:
                    self.answer, self._should_close = STRAY, True  # its body answers nothing now
                    ResponseHandler.set_exception(self, UpstreamProtocolError(why))
                    return
        ResponseHandler.feed_data(self, data, size)

    def data_received(self, data: bytes) -> None:
        answer = self.answer
        if answer == BODY:
            if self._left is None:  # no length to hold it to (chunks, until the close)
                ResponseHandler.data_received(self, data)
            else:
                self._body_received(data)
        elif answer == STRAY:
            self._should_close = True  # a body the answer should not have had: dropped
        elif answer == CHUNKS:
            self._first_chunk_line(data)
        elif answer == LAX:
            self._lax_received(data)
        elif (
            answer == START
            and not self._skip_payload
            and _final_with_body(data)
            and (end := _head_end(data, 0)) > 0
            and (left := _head_length(data, end)) != -1
        ):
            self.answer = BODY
            self._left = left
            if left is None:  # chunks: bytes after their end must not cost the head
                self._feed_head(data[:end], end)
                if end < len(data):
                    self.data_received(data[end:])  # CHUNKS now, unless the head failed
            else:
                self._body_received(data, end)
        else:
            if answer == START:
                lead = data.lstrip(b"\r\n")[:5]  # the parser passes over empty lines first
                if lead and not b"HTTP/".startswith(lead):
                    # No answer begins so: bytes the site sent after its last answer, late (or
                    # no HTTP at all). The parser refuses them at once (``OutOfStep``), where
                    # they were held until the read timeout, waiting for a head's end.
                    self.late = True
                    ResponseHandler.data_received(self, data)
                    return
                self.answer, self._held, self._partial = HEAD, b"", False
            self._heads_received(data)

    def _heads_received(self, data: bytes) -> None:
        """Feed each head whole (interim ones, then the final one), then what follows the final
        head as its body; a head whose end has not come is held (up to ``HELD_HEAD``)."""
        held = self._held
        seen = held + data if held else data
        start = 0
        while self.answer == HEAD and self._exception is None:
            end = _head_end(seen, start or max(len(held) - 2, 0))
            if end < 0:
                break
            self._head_received(seen[start:end])
            start = end
        rest = seen[start:] if start else seen
        self._held = b""
        if not rest:
            return
        if self.answer == STRAY:
            self._should_close = True
        elif self.answer == BODY:
            self._body_received(rest)
        elif self.answer == CHUNKS:
            self._first_chunk_line(rest)
        elif self.answer == LAX:  # a coded body (``_read_coded``)
            self._lax_received(rest)
        elif self._exception is None and len(rest) <= HELD_HEAD:
            self._held = rest
            self._reschedule_timeout()  # bytes came: the read timeout starts again
        else:  # too long to hold (or the parser failed): the parser's to take as it comes
            self._partial = self._exception is None
            ResponseHandler.data_received(self, rest)

    def _head_received(self, head: bytes) -> None:
        """Feed one whole head, rewritten first where the parser would refuse it and a browser
        read it. An interim head (a ``103 Early Hints``) is looked at for a space or tab before
        a colon too (``Link : <…>``), which the parser refuses in most names: the final answer
        behind the hint was a ``502``. Interim heads are few, so the scan costs them alone."""
        if self._partial:  # the rest of a head fed in part: no whole head to read again
            self._partial = False
            ResponseHandler.data_received(self, head)
            return
        if (_head_length(head, len(head)) == -1 or _interim_spaced(head)) and (
            unframed := unframed_head(head)
        ) is not None:
            head, close = unframed
            if close:
                self._should_close = True
        self._feed_head(head, len(head))

    def _feed_head(self, data: bytes, end: int) -> None:
        """``ResponseHandler.data_received`` for bytes that begin with a whole head (``end`` of
        them), except that a head the parser refuses is read again, once (``_read_again``):
        aiohttp's, on a refusal, closes the connection with the answer's body still to come. The
        same steps otherwise, less those for a WebSocket relay or an upgrade, which this
        connection never carries (a ``101`` fails the request, ``Upstream._exchange``)."""
        parser = self._parser
        if parser is None:  # none set (aiohttp's keeps the bytes for one)
            ResponseHandler.data_received(self, data)
            return
        self._reschedule_timeout()
        try:
            messages, upgraded, tail = parser.feed_data(data)
        except Exception:
            self._read_again(data, end)
            return
        payload: StreamReader | None = None
        for message, payload in messages:
            if message.should_close:
                self._should_close = True
            self._payload = payload
            if self._skip_payload or message.code in EMPTY_BODY_STATUS_CODES:
                self.feed_data((message, EMPTY_PAYLOAD), 0)
            else:
                self.feed_data((message, payload), 0)
        if payload is not None:
            if payload is not EMPTY_PAYLOAD:
                payload.on_eof(self._drop_timeout)
            else:
                self._drop_timeout()
        self._upgraded = upgraded
        if upgraded and tail:
            self.data_received(tail)

    def _read_again(self, data: bytes, end: int) -> None:
        """The parser refused the head ``data[:end]``, which a browser may read: it is rewritten
        as curl and browsers read it (``gateway.framing.readable_head``), and it and the bytes
        after it go to a fresh parser (the refusing one is spent). Refused again, or left as it
        was (nothing to rewrite, or only by guessing), the answer fails there as it did before:
        aiohttp's handling, a 502. A clean head never comes here, so it costs nothing.

        Its body's length (``_left``) was read from the head already on the common path; a
        rewrite that makes chunks win over it (``close``) is not taken there."""
        readable = readable_head(data[:end])
        rewritten = readable is not None and not (
            readable[1] and self.answer == BODY and self._left is not None
        )
        if readable is not None and rewritten:
            head, close = readable
            data = head + data[end:]
            if close:
                self._should_close = True
        # As ``Upstream._exchange`` set the parser up for this request.
        ResponseHandler.set_response_params(
            self,
            skip_payload=self._skip_payload,
            read_until_eof=True,
            auto_decompress=False,
            read_timeout=self._read_timeout,
            read_bufsize=self._read_bufsize,
            max_line_size=self.max_field_size,
            max_field_size=self.max_field_size,
            max_headers=MAX_RESPONSE_HEADERS,
        )
        body = len(data) > (len(readable[0]) if readable is not None and rewritten else end)
        ResponseHandler.data_received(self, data)
        if body and self.answer == CHUNKS:  # its first chunk line went to the parser with it
            self.answer = BODY
        if rewritten and self._exception is None:
            self._told(
                self.sloppy,
                "upstream's answer head to %s %s was refused by the parser and read again as "
                "browsers read it (a space before a colon, a bare CR, a header name that is no "
                "token)",
            )

    def _body_received(self, data: bytes, head: int = 0) -> None:
        """Feed the final answer's bytes (``head`` of them its head), cut at its length: what
        comes past it answers nothing, and is dropped with the connection."""
        left = self._left
        if left is not None:
            if len(data) - head > left:
                extra = len(data) - head - left
                data = data[: head + left]
                self._left = 0
                self.answer = STRAY
                self._should_close = True
                if head:
                    self._feed_head(data, head)
                elif data:
                    ResponseHandler.data_received(self, data)
                self._said_overlong(extra)
                return
            else:
                self._left = left - (len(data) - head)
        if head:  # the answer's first read: its head may be read again
            self._feed_head(data, head)
        else:  # no byte (aiohttp's parser resuming after a pause) is fed too: it is how it resumes
            ResponseHandler.data_received(self, data)

    def _first_chunk_line(self, data: bytes) -> None:
        """Feed the first bytes of a chunked body once its first size line has come whole: to
        the parser if that line ends in CRLF (``BODY`` from then on: the path every clean answer
        takes), else to the lenient reader (``_read_lax``)."""
        seen = self._line + data if self._line else data
        end = seen.find(b"\n")
        if end < 0 and len(seen) <= HELD_HEAD:  # the line's end has not come: held
            self._line = seen
            if data:
                self._reschedule_timeout()  # bytes came: the read timeout starts again
            return
        self._line = b""
        if end <= 0 or seen[end - 1] == 13:  # CRLF (or no line at all: the parser's to refuse)
            self.answer = BODY
            ResponseHandler.data_received(self, seen)
        else:
            self._read_lax(seen)

    def _read_lax(self, data: bytes) -> None:
        """Read the chunked body that begins ``data`` with aiohttp's pure-Python chunk reader in
        its lenient mode (a bare LF ends a line, as curl and browsers take it); the llhttp
        parser, left mid-body, sees no more bytes and the connection is not used again."""
        payload = self._payload
        if payload is None or payload is EMPTY_PAYLOAD:  # no body to read (never so here)
            self.answer = BODY
            ResponseHandler.data_received(self, data)
            return
        self.answer = LAX
        self._should_close = True
        self._lax = self._lenient(payload, chunked=True)
        self._told(
            self.bare_lf,
            "upstream's chunked answer to %s %s ends its chunk lines in a bare LF, not CRLF "
            "(RFC 9112 §7.1): read as curl and browsers read it, and the connection dropped",
        )
        self._lax_received(data)

    def _read_coded(self, message: RawResponseMessage) -> str | None:
        """Make ready to undo the final answer's transfer coding other than chunked, if it has
        one: its body goes to the lenient reader (``LAX``) with aiohttp's decoder of that coding
        behind it, and the connection is not used again. Why the answer cannot be read, when
        the coding is not one undone here (``_UNDONE``), or more than one, or ``chunked`` is not
        the last; None when it can (or has no such coding)."""
        value = ", ".join(message.headers.getall("Transfer-Encoding"))
        codings = transfer_codings(value)
        if message.chunked:
            codings = codings[:-1]  # the parser found ``chunked`` last
        if not codings:
            return None
        payload = self._payload
        coding = _UNDONE.get(codings[0]) if len(codings) == 1 else None
        if coding is None or payload is None or payload is EMPTY_PAYLOAD or payload.total_bytes:
            # (Body bytes already fed with the head, where it was read again: not undone.)
            return (
                f"its answer has Transfer-Encoding: {value}, a transfer coding the gateway does "
                "not undo (it undoes one of gzip or deflate, under chunked)"
            )
        self.answer = LAX
        self._should_close = True
        self._until_close = not message.chunked
        self._lax = self._lenient(payload, chunked=message.chunked, coding=coding)
        return None

    def _lenient(
        self, payload: StreamReader, *, chunked: bool, coding: str | None = None
    ) -> HttpPayloadParser:
        """aiohttp's body parser in its lenient mode (chunk lines ending in a bare LF read as
        curl and browsers read them), feeding ``payload``; with ``coding``, that transfer
        coding undone behind it (``_read_coded``)."""
        return HttpPayloadParser(
            payload,
            chunked=chunked,
            compression=coding,
            auto_decompress=coding is not None,
            lax=True,
            headers_parser=HeadersParser(
                self.max_field_size, MAX_RESPONSE_HEADERS, self.max_field_size, True
            ),
            max_line_size=self.max_field_size,
            max_field_size=self.max_field_size,
        )

    def _lax_received(self, data: bytes) -> None:
        """Feed a chunked body's bytes to the lenient reader. Its end ends the answer (what
        comes after answers nothing: ``STRAY``); a chunk it refuses too breaks the body, as the
        parser's refusal does (``set_exception``)."""
        reader, payload = self._lax, self._payload
        if reader is None or payload is None:
            return
        if data:
            self._reschedule_timeout()
        try:
            state, _ = reader.feed_data(data, b"\n")
        except HttpProcessingError as err:
            why = f"the site's answer could not be read on: {unreadable(err)}"
            payload.set_exception(ClientPayloadError(why))  # its own error is no ClientError
            self._lax = None
            if self.transport is not None:
                self.transport.close()
            self.set_exception(err)
            return
        if state == PayloadState.PAYLOAD_COMPLETE:
            # The body is whole (its reader has its end). The llhttp parser, still mid-body,
            # would fail it on the connection's close: it holds it no more.
            self.answer, self._lax, self._payload = STRAY, None, None

    def _told(self, where: Throttled | None, message: str, *args: object) -> None:
        """``message`` logged to ``where`` (the pool's throttled line, None: not logged), its
        first two ``%s`` the method and path (no query) of the request in hand."""
        if where is not None:
            where(message, *named(self.sent), *args)

    def _said_overlong(self, extra: int) -> None:
        """Log the answer just cut at its length: the request (its path, no query) and both
        lengths, the body's all fed by now (its reader's count)."""
        payload = self._payload
        length = payload.total_bytes if payload is not None else 0
        self._told(
            self.overlong,
            "upstream sent more than its Content-Length for %s %s: %d bytes announced, at least "
            "%d sent; cut at %d, the connection dropped",
            length,
            length + extra,
            length,
        )


def named(head: bytes) -> tuple[str, str]:
    """The method and path (no query; an email address in it written ``(email)``) of the
    request whose head is ``head``, for a log line."""
    line = head.split(b"\r\n", 1)[0].decode("ascii", "backslashreplace")
    method, _, target = line.partition(" ")
    return method, without_email(target.rpartition(" ")[0].partition("?")[0])


def _keep_for(value: str) -> float:
    """``Connection.keep_for`` from a ``Keep-Alive`` header value."""
    timeout, most = keep_alive(value)
    if most is not None and most < 1:
        return 0.0
    return math.inf if timeout is None else reuse_bound(timeout)


class UpstreamConnectError(OSError):
    """The upstream could not be reached: refused, unreachable, unresolvable, TLS failed."""


def described(err: BaseException) -> str:
    """An upstream failure in the words of a log line: what went wrong, not the exception's
    Python repr (``ClientConnectorError(ConnectionKey(host='127.0.0.1', port=1, is_ssl=False, …),
    ConnectionRefusedError(111, …))``, until 2026-12-05)."""
    if isinstance(err, TimeoutError):
        return "no answer in time"
    if isinstance(err, ClientConnectorError):  # aiohttp's: a WebSocket upgrade's connect
        return not_connected(err.host, err.port, err.os_error)
    if isinstance(err, OSError) and not isinstance(err, ClientError) and err.strerror:
        text = err.strerror  # str() puts "[Errno 111] " before it
    else:
        text = str(err)
    return text or type(err).__name__


_QUOTED = re.compile(r"""[: ]*b?['"]""")
"""Where the bytes a refusal quotes begin on its first line (``Invalid HTTP header: b'…'``)."""


def unreadable(err: HttpProcessingError) -> str:
    """Why the parser refused the upstream's answer, without the bytes it quotes: the answer
    may hold a visitor's data (a ``Set-Cookie``, a ``Location`` with ``?email=…``), and this
    text goes to the log. The C parser's reason is a fixed text on the first line, the bytes
    follow (until 2026-12-05 they were logged); the pure-Python parser's quotes them inline."""
    first = _QUOTED.split(err.message.split("\n", 1)[0], 1)[0].rstrip(" :")
    if 0 < len(first) <= 100 and first.isascii() and first.isprintable() and not set(first) & set("'\"\\"):
        return first
    return type(err).__name__


class UpstreamProtocolError(Exception):
    """The upstream's answer is not HTTP the parser accepts, or a 101 nobody asked for."""


class OutOfStep(UpstreamProtocolError):
    """A reused connection's answer did not parse: bytes of the answer before came late, the
    body of a bodiless answer that announced one (``Connection.suspect``), or bytes after a
    whole answer (``after``: that answer's request, method and path). The request may be sent
    again."""

    def __init__(self, message: str, after: tuple[str, str] | None = None) -> None:
        super().__init__(message)
        self.after = after


def request_head(method: str, target: str, headers: Iterable[tuple[str, str]], framing: str) -> bytes:
    """The request line and header block as written upstream; ``framing`` is an extra header
    line (``Transfer-Encoding: chunked\\r\\n``, ``Content-Length: 0\\r\\n`` or empty).

    Raises ValueError for a CR or LF inside any part (header injection)."""
    lines = [f"{method} {target} HTTP/1.1\r\n"]
    # A loop, not a generator given to ``extend`` (~2,600 instructions a request; a list
    # comprehension, its own frame on 3.11, saves only ~1,500).
    for name, value in headers:
        lines.append(f"{name}: {value}\r\n")
    text = "".join(lines)
    if text.count("\n") != len(lines) or text.count("\r") != len(lines):
        raise ValueError("CR or LF inside the request line or a header")
    return (text + framing + "\r\n").encode("utf-8", "surrogateescape")


class UpstreamResponse:
    """An upstream's answer: status, reason, headers, and the body as a ``StreamReader``.

    ``raw_headers`` are the same header lines as the parser's bytes, in the same order: the
    names as the site spelled them (``headers`` has aiohttp's spelling of the names it knows).

    ``release()`` returns the connection to the pool when that is safe, else closes it;
    ``close()`` always closes it (the visitor left, or the body failed)."""

    __slots__ = ("_pool", "_proto", "_writer", "content", "headers", "raw_headers", "reason", "status")

    def __init__(
        self,
        pool: Upstream,
        proto: Connection,
        status: int,
        reason: str,
        headers: CIMultiDictProxy[str],
        raw_headers: tuple[tuple[bytes, bytes], ...],
        content: StreamReader,
        writer: asyncio.Task[None] | None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.raw_headers = raw_headers
        self.content = content
        self._pool = pool
        self._proto: Connection | None = proto
        self._writer = writer

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        return int(value) if value is not None and value.isdigit() else None

    def cut_short(self) -> bool:
        """Whether a body of no length — it ends where the connection does — ended with the
        connection breaking (a reset) rather than closing: it is cut short, not whole, though
        the parser ends it the same way. Only for a request without a body: a site that answers
        without reading the body (a 405, a 401) and closes resets the connection too — the kernel
        answers a close with unread input so — even when the whole body was sent (it sat in the
        socket buffers), so there a reset says nothing about the answer."""
        proto = self._proto
        return (
            proto is not None
            and proto.broken
            and self._writer is None
            and self.content is not EMPTY_PAYLOAD
            and "Content-Length" not in self.headers
            and "Transfer-Encoding" not in self.headers
        )

    def release(self) -> None:
        self._finish(reusable=True)

    def close(self) -> None:
        self._finish(reusable=False)

    def _finish(self, reusable: bool) -> None:
        proto, self._proto = self._proto, None
        if proto is None:
            return
        writer = self._writer
        if writer is not None and not writer.done():
            writer.cancel()  # the upstream answered without reading the whole body
            reusable = False
        self._pool.done(proto, reusable and not proto.should_close and self.content.is_eof())


class Upstream:
    """The pool of connections to one upstream origin (``http://`` or ``https://``)."""

    def __init__(
        self,
        url: str,
        *,
        limit: int,
        connect_timeout: float,
        read_timeout: float,
        max_field_size: int,
        idle_seconds: float = IDLE_SECONDS,
        once_idle_seconds: float = ONCE_IDLE_SECONDS,
    ) -> None:
        parsed = URL(url)
        self.tls = parsed.scheme == "https"
        self.host = parsed.raw_host or ""
        self.port = parsed.port or (443 if self.tls else 80)
        self.limit = limit
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_field_size = max_field_size
        self.idle_seconds = idle_seconds
        self.once_idle_seconds = once_idle_seconds
        self._ssl: ssl.SSLContext | None = None
        self._open = 0
        """Connections open (busy or idle) plus slots reserved by WebSocket relays."""
        self._idle: collections.deque[tuple[Connection, float]] = collections.deque()
        self._waiters: collections.deque[asyncio.Future[Connection | None]] = collections.deque()
        self._closed = False
        self._overlong = Throttled(log, logging.WARNING)
        self._trailing = Throttled(log, logging.INFO)
        self._sloppy = Throttled(log, logging.INFO)
        self._bare_lf = Throttled(log, logging.WARNING)

    # -- the pool ---------------------------------------------------------------------------------

    async def _acquire(self, fresh: float) -> tuple[Connection, bool]:
        """A connection (idle less than ``fresh`` seconds, if one that was idle), and whether it
        served a request before."""
        got = self._pop_idle(fresh)
        if got is not None:
            return got, True
        if self._open < self.limit:
            self._open += 1
        elif self._idle:  # idle too long for this request: its slot becomes ours
            self._idle.popleft()[0].close()
        else:
            got = await self._wait()
            if got is not None:
                return got, True
        try:
            return await self._connect(), False
        except BaseException:
            self._free_slot()
            raise

    def _pop_idle(self, fresh: float) -> Connection | None:
        """The connection last released, if it is idle less than ``fresh`` seconds; those idle
        past ``idle_seconds`` or the bound the site announced (``keep_for``), or closed, are
        closed on the way."""
        now = asyncio.get_running_loop().time()
        idle = self._idle
        while idle:
            proto, since = idle.pop()
            age = now - since
            if (
                age < self.idle_seconds
                and age < proto.keep_for
                and proto.is_connected()
                and not proto.should_close
            ):
                if age < fresh:  # ``fresh`` is at most ``idle_seconds``
                    return proto
                idle.append((proto, since))  # kept for a request that may be sent again
                return None
            proto.close()
            self._open -= 1
        return None

    async def _wait(self) -> Connection | None:
        """Wait for a connection someone releases, or (None) a free slot to connect with."""
        future: asyncio.Future[Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            return await future
        except BaseException:
            if future.done() and not future.cancelled():
                handed = future.result()  # handed over just as we gave up: pass it on
                if handed is None:
                    self._free_slot()
                else:
                    self.done(handed, True)
            else:
                future.cancel()
            raise

    def _free_slot(self) -> None:
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_result(None)
                return
        self._open -= 1

    def done(self, proto: Connection, reusable: bool) -> None:
        """A request is over with ``proto``: keep it for the next one, or close it."""
        if not reusable or self._closed or not proto.is_connected() or not proto.keep_for:
            proto.close()
            self._free_slot()
            return
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_result(proto)
                return
        now = asyncio.get_running_loop().time()
        idle = self._idle
        while idle and now - idle[0][1] >= self.idle_seconds:  # the oldest are never popped in a
            idle.popleft()[0].close()  # steady load (last in, first out): age them out here
            self._open -= 1
        idle.append((proto, now))

    async def reserve(self) -> None:
        """Hold one slot of the limit (a WebSocket relay's connection) until ``unreserve``;
        waits up to ``connect_timeout`` (``TimeoutError``). An idle connection makes room."""
        async with asyncio.timeout(self.connect_timeout):
            if self._open < self.limit:
                self._open += 1
            elif self._idle:
                self._idle.popleft()[0].close()  # its slot becomes ours
            else:
                handed = await self._wait()
                if handed is not None:
                    handed.close()

    async def _replace(self, proto: Connection) -> Connection:
        """A new connection in the slot of ``proto``, which is closed."""
        proto.close()
        try:
            async with asyncio.timeout(self.connect_timeout):
                return await self._connect()
        except BaseException:
            self._free_slot()
            raise

    def unreserve(self) -> None:
        self._free_slot()

    async def close(self) -> None:
        """Close the idle connections (busy ones close as their requests end)."""
        self._closed = True
        while self._idle:
            self._idle.pop()[0].close()
            self._open -= 1

    async def _connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        context = await self._ssl_context() if self.tls else None
        try:
            _, proto = await loop.create_connection(
                lambda: Connection(loop),
                self.host,
                self.port,
                ssl=context,
                server_hostname=self.host if context is not None else None,
            )
        except OSError as err:
            raise UpstreamConnectError(err.errno, not_connected(self.host, self.port, err)) from err
        proto.overlong = self._overlong
        proto.trailing = self._trailing
        proto.sloppy = self._sloppy
        proto.bare_lf = self._bare_lf
        proto.max_field_size = self.max_field_size
        return proto

    async def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:  # loading the system's CA certificates reads files: off the loop
            self._ssl = await asyncio.to_thread(ssl.create_default_context)
        return self._ssl

    # -- one exchange -----------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]],
        body: AsyncIterable[bytes] | None,
        *,
        length_known: bool,
        early_hints: Callable[[RawResponseMessage], Awaitable[None]] | None = None,
    ) -> UpstreamResponse:
        """Send one request and read the response head. ``length_known``: the headers carry
        the body's ``Content-Length`` (else a body goes chunked). ``early_hints`` is given each
        ``103 Early Hints`` the site sends before its answer (other interim answers are passed
        over).

        Raises TimeoutError (no connection within ``connect_timeout``, or no answer within
        ``read_timeout``, or the body not taken for that long), ``UpstreamConnectError``,
        aiohttp's client errors for a broken answer, or whatever the body raised while it was
        being sent."""
        if body is None:
            framing = "" if length_known or method in _BODYLESS_METHODS else "Content-Length: 0\r\n"
        else:
            framing = "" if length_known else "Transfer-Encoding: chunked\r\n"
        head = request_head(method, target, headers, framing)
        again = body is None and method in _IDEMPOTENT
        fresh = self.idle_seconds if again else self.once_idle_seconds
        while True:
            proto = self._pop_idle(fresh)  # the common case: no waiting, so no timeout to arm
            reused = proto is not None
            if proto is None:
                async with asyncio.timeout(self.connect_timeout):
                    proto, reused = await self._acquire(fresh)
            if proto.suspect and not again:  # a late stray body would make it fail for good
                proto, reused = await self._replace(proto), False
            try:
                return await self._exchange(
                    proto,
                    method,
                    head,
                    body,
                    chunked=bool(framing) and body is not None,
                    early_hints=early_hints,
                    reused=reused,
                )
            except (ServerDisconnectedError, ClientOSError, OutOfStep) as err:
                if not (again and reused):
                    raise
                if isinstance(err, OutOfStep) and err.after is not None:
                    self._trailing(
                        "upstream sent bytes after its answer to %s %s once the next request had "
                        "gone out on that connection; they were dropped with it, and %s %s sent "
                        "again on a new one",
                        *err.after,
                        method,
                        target.partition("?")[0],
                    )
                again = False
                fresh = self.once_idle_seconds  # not on another connection the site may be closing

    async def _exchange(
        self,
        proto: Connection,
        method: str,
        head: bytes,
        body: AsyncIterable[bytes] | None,
        *,
        chunked: bool,
        early_hints: Callable[[RawResponseMessage], Awaitable[None]] | None = None,
        reused: bool = False,
    ) -> UpstreamResponse:
        """Send ``head`` (and ``body``) on ``proto`` and read the answer's head. The first bytes
        of a ``reused`` connection's answer, when no answer begins with them (``Connection.late``),
        are taken for the late end of the answer before (``OutOfStep``): a site that wrote them
        after that answer was whole. An answer that begins as one and is refused is the site's,
        unreadable: not sent again."""
        previous = proto.sent if reused else None
        proto.begin(head)
        suspect, proto.suspect = proto.suspect, False
        proto.set_response_params(
            skip_payload=method == "HEAD",
            read_until_eof=True,
            auto_decompress=False,
            read_timeout=self.read_timeout,
            read_bufsize=READ_BUFSIZE,
            max_line_size=self.max_field_size,
            max_field_size=self.max_field_size,
            max_headers=MAX_RESPONSE_HEADERS,
        )
        writer: asyncio.Task[None] | None = None
        try:
            transport = proto.transport
            if transport is None:
                raise ServerDisconnectedError()
            transport.write(head)
            if body is None:
                proto.start_timeout()
            else:
                writer = asyncio.create_task(_send_body(proto, body, chunked))
            while True:
                try:
                    message, payload = await proto.read()
                except HttpProcessingError as err:
                    if suspect:
                        raise OutOfStep(f"a late body before the answer: {unreadable(err)}") from err
                    # Bytes no answer begins with, before any interim answer (``previous``):
                    # an answer that began as one and was refused is the site's, unreadable.
                    if previous is not None and proto.late:
                        why = f"late bytes before the answer: {unreadable(err)}"
                        raise OutOfStep(why, named(previous)) from err
                    raise UpstreamProtocolError(f"unreadable answer: {unreadable(err)}") from err
                previous = None
                if not 100 <= message.code < 200:
                    break
                if message.code == 101:
                    raise UpstreamProtocolError("the upstream switched protocols unasked")
                if message.code == 103 and early_hints is not None:
                    await early_hints(message)
        except BaseException:
            if writer is not None and not writer.done():
                writer.cancel()
            self.done(proto, False)
            raise
        return UpstreamResponse(
            self, proto, message.code, message.reason, message.headers, message.raw_headers, payload, writer
        )


async def _send_body(proto: Connection, body: AsyncIterable[bytes], chunked: bool) -> None:
    """Stream the request body upstream; a failure (the visitor's body, or the upstream's
    connection) is handed to the response reader, which raises it."""
    try:
        async for chunk in body:
            if not chunk:
                continue
            transport = proto.transport
            if transport is None:
                raise ClientOSError(104, "the upstream closed the connection while the body was sent")
            if chunked:
                transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
            else:
                transport.write(chunk)
            if proto.writing_paused:
                # The site takes no more of the body. Its read timeout is armed only once the
                # body is sent, so without this bound a site that stopped reading (and never
                # answers) held the request and the connection for ever; it is upstream silence
                # like any other: TimeoutError, a 504.
                async with asyncio.timeout(proto.read_timeout):
                    await proto._drain_helper()
        if chunked and proto.transport is not None:
            proto.transport.write(b"0\r\n\r\n")
    except asyncio.CancelledError:
        raise
    except Exception as err:
        proto.set_exception(err)
        return
    proto.start_timeout()
