"""A tiny built-in origin site, started behind the gateway when no upstream is configured.

It lets ``make run`` show the gateway working on a fresh machine: a landing
page, a pricing page with an asset, a signup form that redirects, and a page
that shows exactly which URL and headers reached the origin.
"""

from __future__ import annotations

import html

from aiohttp import web

_STYLE = "body{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem}"


def _page(title: str, body: str) -> web.Response:
    return web.Response(
        text=f'<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>'
        f'<link rel="stylesheet" href="/static/site.css"></head><body><h1>{title}</h1>{body}'
        "</body></html>",
        content_type="text/html",
    )


async def index(request: web.Request) -> web.Response:
    return _page(
        "Demo shop",
        "<p>This is the demo origin behind the tracking gateway.</p>"
        '<ul><li><a href="/pricing">Pricing</a></li><li><a href="/signup">Sign up</a></li>'
        '<li><a href="/echo">What the origin received</a></li></ul>',
    )


async def pricing(request: web.Request) -> web.Response:
    return _page("Pricing", "<p>One plan, 10 €/month.</p><p><a href='/signup'>Sign up</a></p>")


async def signup_form(request: web.Request) -> web.Response:
    return _page(
        "Sign up",
        '<form method="post" action="/signup"><input name="email" placeholder="email">'
        "<button>Create account</button></form>",
    )


async def signup(request: web.Request) -> web.Response:
    await request.post()
    raise web.HTTPSeeOther("/welcome")


async def welcome(request: web.Request) -> web.Response:
    return _page("Welcome!", "<p>Your account is ready.</p>")


async def echo(request: web.Request) -> web.Response:
    headers = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in request.headers.items()
    )
    return _page(
        "What the origin received",
        f"<p><code>{html.escape(request.method)} {html.escape(request.raw_path)}</code></p>"
        f"<table>{headers}</table>",
    )


async def stylesheet(request: web.Request) -> web.Response:
    return web.Response(text=_STYLE, content_type="text/css")


def create_demo_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/pricing", pricing)
    app.router.add_get("/signup", signup_form)
    app.router.add_post("/signup", signup)
    app.router.add_get("/welcome", welcome)
    app.router.add_get("/echo", echo)
    app.router.add_get("/static/site.css", stylesheet)
    return app
