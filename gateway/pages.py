"""The gateway's own small answers on the public listener: neutral error pages and JSON errors.

Also owns the response classes that keep aiohttp from adding headers of its own (``Server``,
a default ``Content-Type``), so neither forwarded responses nor our pages say what runs here.
"""

from __future__ import annotations

from http import HTTPStatus

import msgspec
from aiohttp import hdrs, web


class TransparentResponse(web.StreamResponse):
    """A StreamResponse that adds no Server or Content-Type header it was not given."""

    async def _prepare_headers(self) -> None:
        had_server = hdrs.SERVER in self.headers
        had_type = hdrs.CONTENT_TYPE in self.headers
        await super()._prepare_headers()
        if not had_server:
            self.headers.popall(hdrs.SERVER, None)
        if not had_type:
            self.headers.popall(hdrs.CONTENT_TYPE, None)


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


def error_page(status: int) -> web.Response:
    """A small neutral HTML page that says nothing about what runs behind it."""
    title = f"{status} {HTTPStatus(status).phrase}"
    message = _MESSAGES.get(status, HTTPStatus(status).description)
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
