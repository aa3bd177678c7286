"""The gateway's own small answers on the public listener: neutral error pages and JSON errors."""

from __future__ import annotations

from http import HTTPStatus

import msgspec
from aiohttp import web

_MESSAGES = {
    400: "The request could not be understood.",
    403: "Access to this page is not allowed.",
    413: "The request is too large.",
    502: "The site is temporarily unavailable. Please try again in a moment.",
    504: "The site is taking too long to answer. Please try again in a moment.",
}


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
    return web.Response(
        status=status, text=html, content_type="text/html", headers={"Cache-Control": "no-store"}
    )


def error_body(status: int, message: str) -> bytes:
    """The one JSON error envelope, shared by the admin API and the reserved public paths."""
    return msgspec.json.encode({"ok": False, "status": status, "error": message})


def json_error(status: int, message: str) -> web.Response:
    return web.Response(
        status=status,
        body=error_body(status, message),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
