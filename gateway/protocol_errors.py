"""The answer to a request that aiohttp's HTTP parser refuses before any handler runs.

A request line or header over its limit, a method, request line or header that is not HTTP,
a body whose length or chunking does not parse: aiohttp answers those itself, in plain text
that echoes the raw bytes it refused (``bytearray(b'...')``) under a ``Server: Python/…
aiohttp/…`` header. The gateway's listeners (``Runner``) answer as the gateway answers
anything else it refuses there, with the same status:

- the proxy (public) listener: the neutral error page of ``gateway/pages.py``, which says
  nothing about what runs behind the site, as for the malformed requests the proxy itself
  refuses; so do the router's own refusals there (a ``CONNECT host:port`` matches no route);
- the admin listener: the JSON error envelope, with a reason that names what is wrong
  without repeating the bytes.

The connection is closed after it. aiohttp logged each at error level with a traceback and
the client's address; the gateway logs the reason alone, at debug level (scanners send
such requests all day), or at info for a line over the limit, which real clients with
oversized cookies may hit (``proxy.max_header_size``).

aiohttp offers no public hook for this: ``Runner`` makes its server create this module's
request handlers, whose ``handle_error`` is the method aiohttp calls. aiohttp is pinned to
one minor series (``pyproject.toml``); ``tests/gateway/test_malformed.py`` sends each kind
of broken request to real listeners, ``tests/gateway/test_run.py`` to a ``gateway run``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import http_exceptions, web

from gateway.pages import error_page, json_error

_Handle = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
log = logging.getLogger("gateway.listener")


def reason(exc: BaseException | None, status: int) -> str:
    """What was wrong with the request, for the operator and the client, without its bytes."""
    if isinstance(exc, http_exceptions.LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else None
        return "the request line or a header is longer than the listener accepts" + (
            f" ({limit} bytes)" if limit else ""
        )
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
        detail = first if first.isascii() and first.isprintable() and not set(first) & set("'\"\\") else ""
        return "the request is not valid HTTP" + (f": {detail}" if 0 < len(detail) <= 100 else "")
    if status >= 500:
        return "internal error while handling the request (see the gateway's log)"
    return "the request could not be read"


class _JsonHandler(web.RequestHandler):
    """The admin listener's: the JSON error envelope and its reason."""

    def answer(self, status: int, exc: BaseException | None) -> web.Response:
        return json_error(status, reason(exc, status))

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500 or not isinstance(exc, http_exceptions.HttpProcessingError):
            # A failure of ours: aiohttp's own logging (with the traceback), and its check
            # that no response has begun.
            super().handle_error(request, status, exc, message)
        else:
            # What a client sent: no traceback, no client address, no bytes in the log.
            why = reason(exc, status)
            if isinstance(exc, http_exceptions.LineTooLong):
                log.info("refused a request: %s; if real clients send such, raise the limit", why)
            else:
                log.debug("refused a request: %s", why)
            if request.writer.output_size > 0:
                raise ConnectionError("a response had begun: the connection is closed instead")
        response = self.answer(status, exc)
        response.force_close()
        return response


class _PageHandler(_JsonHandler):
    """The proxy listener's: the neutral page, as for what the proxy refuses itself."""

    def answer(self, status: int, exc: BaseException | None) -> web.Response:
        return error_page(status if 400 <= status < 600 else 500)


class _Server(web.Server):
    handler: type[_JsonHandler] = _JsonHandler

    def __call__(self) -> web.RequestHandler:
        return self.handler(self, loop=self._loop, **self._kwargs)


def _neutral(handle: _Handle) -> _Handle:
    """The proxy app's request handler, with the router's own refusals (a target that is not
    a path, as ``CONNECT host:port`` sends, matches no route) as the neutral page: aiohttp
    answers them ``404: Not Found`` in plain text under its Server header. The proxy itself
    never raises ``HTTPException``."""

    async def neutral(request: web.BaseRequest) -> web.StreamResponse:
        try:
            return await handle(request)
        except web.HTTPException as refused:
            if refused.status < 400:
                raise
            return error_page(refused.status)

    return neutral


class Runner(web.AppRunner):
    """``web.AppRunner`` whose listener answers what the HTTP parser refuses as the gateway
    answers there: ``public``, the proxy's neutral page; else the admin API's JSON error."""

    def __init__(self, app: web.Application, *, public: bool = False, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.public = public

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        made = _Server(
            _neutral(server.request_handler) if self.public else server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **server._kwargs,
        )
        made.handler = _PageHandler if self.public else _JsonHandler
        return made
