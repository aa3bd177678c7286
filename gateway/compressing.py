"""gzip for the admin API's larger answers: a report, a listing, a CSV or NDJSON download or the
OpenAPI document is sent gzip-compressed to a client whose ``Accept-Encoding`` accepts gzip
(curl ``--compressed``, browsers, the dashboard's fetches). Owns ``compress_answers`` (the
middleware, for answers built whole) and ``stream_coding`` (called by a download before it
sends its headers). Tiny answers, a ``HEAD`` and everything off ``/api/`` and ``/metrics``
(the dashboard's pages, its static files) go as they are; the proxy listener never comes here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web
from aiohttp.web_response import ContentCoding

from gateway.codings import accepts_gzip

MIN_SIZE = 1024
"""The smallest body compressed: below it gzip's header and the work save next to nothing
(an error envelope, a health check)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _applies(request: web.Request) -> bool:
    return request.path.startswith("/api/") or request.path == "/metrics"


def _vary(response: web.StreamResponse) -> None:
    """``Vary: Accept-Encoding`` beside what the answer varies on already (``Accept``): a cache
    keeps the compressed and the plain answer apart."""
    given = [v.strip() for v in response.headers.get(hdrs.VARY, "").split(",") if v.strip()]
    if "accept-encoding" not in (v.lower() for v in given):
        response.headers[hdrs.VARY] = ", ".join([*given, "Accept-Encoding"])


def stream_coding(request: web.Request, response: web.StreamResponse) -> None:
    """For a download streamed in chunks (its length unknown): gzip when the client accepts it
    (chunked still, so that a download cut short stays visibly cut: no last chunk, no gzip
    trailer), ``Vary`` either way. A ``HEAD`` names the variance only."""
    if not _applies(request):
        return
    _vary(response)
    if request.method != hdrs.METH_HEAD and accepts_gzip(request.headers.get(hdrs.ACCEPT_ENCODING, "")):
        response.enable_compression(ContentCoding.gzip)


@web.middleware
async def compress_answers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """An answer built whole of ``MIN_SIZE`` bytes or more, gzip-compressed for a client that
    accepts it (aiohttp compresses the body at once, off the event loop when large, and sends
    the compressed ``Content-Length``)."""
    response = await handler(request)
    if (
        isinstance(response, web.Response)
        and not response.prepared
        and _applies(request)
        and hdrs.CONTENT_ENCODING not in response.headers
        and isinstance(response.body, bytes)
        and len(response.body) >= MIN_SIZE
    ):
        stream_coding(request, response)
    return response
