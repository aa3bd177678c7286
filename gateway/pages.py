"""The gateway's own small answers on the public listener: neutral error pages and JSON errors.

Also owns the response classes that keep aiohttp from adding headers of its own (``Server``,
a default ``Content-Type``), so neither forwarded responses nor our pages say what runs here;
that close an HTTP/1.0 connection whose body has no length (its end is the close); and that
write header bytes as the site sent them (``as_sent``); and the reset that cuts a visitor's
connection when a body breaks after its headers went out (``reset``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
from collections.abc import Coroutine, Iterable
from html import escape
from http import HTTPStatus
from typing import Any

import msgspec
from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11, StreamWriter

ANSWER = web.RequestKey("gateway.answer", web.StreamResponse)
"""The answer a proxy handler is sending (forwarded, or a WebSocket's), for the access log's
line when the visitor leaves midway (``server.HostSlot``)."""
CONTINUE = web.RequestKey("gateway.continue", bool)
"""Set on a request that asked ``Expect: 100-continue`` and has not been invited yet: the
``100 Continue`` goes out only once the gateway is about to read the body (``invite``), so a
request it answers itself (a blocked bot, a refusal below the reserved prefix) gets its answer
at once, with the connection closed, not after the body was sent for nothing."""


async def invite(request: web.BaseRequest) -> None:
    """The ``100 Continue`` the client waits for, when it asked for one and has not had it: what
    aiohttp's expect handler writes, sent only now the body is to be read."""
    if request.pop(CONTINUE, False):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the answer's own bytes are counted from here
        await request.writer.drain()


class AsSentHeaders(web.StreamResponse):
    """A response whose status line and headers may hold what a site's answer carried that
    aiohttp's writer refuses or loses — bytes that are not UTF-8 (the parser's surrogate
    escapes), which it drops, and control characters, over which it fails the whole answer (a
    500) — set ``as_sent`` (``needs_as_sent``) and they are written back as the bytes they came
    as; only NUL, which RFC 9110 (§5.5) says to reject or replace, becomes a space."""

    as_sent = False

    def _write_headers(self) -> Coroutine[Any, Any, None]:
        # Not a coroutine of its own: it hands over aiohttp's (or ``_write_as_sent``), which
        # ``_start`` awaits, one coroutine fewer on every answer (~900 instructions).
        if not self.as_sent:
            return super()._write_headers()
        return self._write_as_sent()

    async def _write_as_sent(self) -> None:
        request, writer = self._req, self._payload_writer
        assert request is not None and isinstance(writer, StreamWriter)
        # What aiohttp's StreamWriter.write_headers does, with this serialisation (aiohttp is
        # pinned to one minor series; tests/gateway/test_proxy.py sends such headers).
        if writer._on_headers_sent is not None:
            await writer._on_headers_sent(self._headers)
        version = request.version
        lines = [f"HTTP/{version[0]}.{version[1]} {self._status} {self._reason}"]
        lines += [f"{name}: {value}" for name, value in self._headers.items()]
        if any("\r" in line or "\n" in line for line in lines):
            raise ValueError("a header holds a line break")  # never one parsed from an answer
        head = "\r\n".join(lines).replace("\0", " ") + "\r\n\r\n"
        writer._headers_written, writer._headers_buf = False, head.encode("utf-8", "surrogateescape")
        if self._send_headers_immediately:
            writer.send_headers()


def needs_as_sent(reason: str | None, headers: Iterable[tuple[str, str]]) -> bool:
    """Whether a site's status reason or header values hold what only ``AsSentHeaders.as_sent``
    writes as it came (a tab too, harmlessly: ``isprintable`` is the cheap test)."""
    # One test of the values joined (printable each if and only if printable together): a
    # generator's step per header cost twice as much.
    return not (reason or "").isprintable() or not "".join([value for _, value in headers]).isprintable()


class TransparentResponse(AsSentHeaders):
    """A StreamResponse that adds no Server or Content-Type header it was not given, and writes
    a site's header bytes as they came (``AsSentHeaders``)."""

    async def _prepare_headers(self) -> None:
        # aiohttp's attributes, not its ``headers`` and ``status`` properties (a Python call
        # each, some 700 instructions an answer): the same objects, every answer goes by here.
        headers = self._headers
        had_server = hdrs.SERVER in headers
        had_type = hdrs.CONTENT_TYPE in headers
        # RFC 9110 §8.6: a 304 may carry the Content-Length its 200 would have (a cache updates
        # its stored one from it); aiohttp's writer drops it as for a 204. Kept where it was.
        given = list(headers.items()) if self._status == 304 and hdrs.CONTENT_LENGTH in headers else None
        await super()._prepare_headers()
        if not had_server:
            headers.popall(hdrs.SERVER, None)
        if not had_type:
            headers.popall(hdrs.CONTENT_TYPE, None)
        if given is not None and hdrs.CONTENT_LENGTH not in headers:
            after = list(headers.items())
            kept = [item for item in given if item[0].lower() != "content-length"]
            if after[: len(kept)] == kept:  # what aiohttp added (Date, a cookie) follows the site's
                headers.clear()
                headers.extend(given + after[len(kept) :])
            else:
                headers.extend(item for item in given if item[0].lower() == "content-length")
        request, writer = self._req, self._payload_writer
        assert request is not None and writer is not None
        if (
            request.version < HttpVersion11
            and self._length_check
            and writer.length is None
            and not self._must_be_empty_body
        ):
            # An HTTP/1.0 body of no announced length ends when the connection does: aiohttp
            # (3.14) decides so, but keeps the connection open, and the client waits for ever.
            self._keep_alive = False


def reset(transport: asyncio.Transport) -> None:
    """Cut the visitor's connection with a TCP reset, dropping what is still unsent. A plain
    close is no signal to an HTTP/1.0 visitor reading a body of no length: it is that body's
    normal end, and a page cut short would look whole."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):  # SO_LINGER 0: close() sends RST, not FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class QuietResponse(TransparentResponse, web.Response):
    """A whole-body Response with the same restraint."""


_MESSAGES = {
    400: "The request could not be understood.",
    403: "Access to this page is not allowed.",
    413: "The request is too large.",
    502: "The site is temporarily unavailable. Please try again in a moment.",
    504: "The site is taking too long to answer. Please try again in a moment.",
}


def is_error_status(status: int) -> bool:
    """A known 4xx/5xx status, one ``error_page`` can render."""
    try:
        HTTPStatus(status)
    except ValueError:
        return False
    return 400 <= status < 600


SHOWN_NAME = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
"""A header name as a refusal's page and the log may show it: a token (RFC 9110 §5.6.2), short."""


def named_header(header: str | None) -> str:
    """A header a refusal is about, for the log and the JSON error: its name (``SHOWN_NAME``),
    ``""`` for one whose name is what is too long, None when not known."""
    return "a header" if header is None else f"the {header} header" if header else "a header name"


def error_page(
    status: int, *, header: str | None = None, limit: int = 0, repeated: str | None = None
) -> web.Response:
    """A small neutral HTML page that says nothing about what runs behind it. ``header``: the
    name of the header over ``limit`` bytes that a 431 refused (``""``: a name over it), which the
    page says, so that a visitor knows what to shorten (a cookie grown too large, to clear).
    ``repeated``: the name of a header HTTP allows once that a 400 refused as sent more than once
    (two ``User-Agent`` lines), which the page says, so that whoever sent it knows what to fix."""
    title = f"{status} {HTTPStatus(status).phrase}"
    message = _MESSAGES.get(status, HTTPStatus(status).description)
    if header is not None:
        which = f"The {escape(header)} header" if header else "A header name"
        message = f"{message}.</p><p>{which} is longer than {limit} bytes."
    if repeated:
        message = f"{message}</p><p>The {escape(repeated)} header was sent more than once; send it once."
    html = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        '<meta name="viewport" content="width=device-width,initial-scale=1"></head>'
        '<body style="font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;'
        f'padding:0 1rem;color:#333"><h1 style="font-size:1.4rem">{title}</h1><p>{message}</p>'
        "</body></html>"
    )
    return QuietResponse(
        status=status, text=html, content_type="text/html", headers={"Cache-Control": "no-store"}
    )


def error_body(status: int, message: str) -> bytes:
    """The one JSON error envelope, shared by the admin API and the reserved public paths."""
    return msgspec.json.encode({"ok": False, "status": status, "error": message})


def json_error(status: int, message: str) -> web.Response:
    return QuietResponse(
        status=status,
        body=error_body(status, message),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
