"""A tiny built-in origin site, started behind the gateway when no upstream is configured,
and the demo shop's own identity and conversion rules.

It lets ``make run`` show the gateway working on a fresh machine: a landing
page, a pricing page with an asset, a signup form that redirects, and a page
that shows exactly which URL and headers reached the origin. ``RULES`` (TOML, the format of
``[[identity.rules]]`` and ``[[conversions]]``) make its sign-up bind the visitor and count as a
conversion; ``with_demo_rules`` adds them to a config that has no rules of its own, decoded and
validated as the config's own are, for as long as ``gateway run`` serves this origin.
"""

from __future__ import annotations

import dataclasses
import html

import msgspec
from aiohttp import web

from gateway.config import Settings, decode_options, parse_config
from gateway.config_checks import validate

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem}"
    # The echo page's long header values (Accept, User-Agent) wrap on a phone.
    "td{vertical-align:top;padding:.1rem .5rem .1rem 0}td+td{overflow-wrap:anywhere}"
)


def _page(title: str, body: str) -> web.Response:
    return web.Response(
        # A viewport, or a phone lays the page out 980 pixels wide and shrinks it to fit.
        text='<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<title>{title}</title><link rel="stylesheet" href="/static/site.css"></head>'
        f"<body><h1>{title}</h1>{body}"
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
        "<p>One plan, 10 €/month.</p>"
        # A label, not a placeholder alone: a screen reader names the field by it.
        '<form method="post" action="/signup"><label for="email">E-mail</label> '
        '<input id="email" name="email" type="email" required autocomplete="email">'
        " <button>Create account</button></form>",
    )


async def signup(request: web.Request) -> web.Response:
    await request.post()
    raise web.HTTPSeeOther("/welcome")


async def welcome(request: web.Request) -> web.Response:
    return _page(
        "Welcome!",
        '<p>Your account is ready.</p><p><a href="/">Back to the shop</a> ·'
        ' <a href="/echo">What the origin received</a></p>',
    )


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


RULES = """
# The demo shop's sign-up: POST /signup with the field "email", answered 303 /welcome.
[[identity.rules]]
name = "demo-signup"
path = "/signup"
status = [303]
user_id = { form = "email" }
lowercase = true        # Ann@Example.com and ann@example.com are one user

[[conversions]]
name = "signup"
path = "/signup"
status = [303]
# The shop's one plan (10 EUR a month, its pricing page says) starts with the sign-up: a value
# fills the reports' and the dashboard's value columns, not only their counts.
value = 10.0
currency = "EUR"
"""
"""The demo shop's rules, as an operator would write them for it in ``gateway.toml``."""


_KEPT = {"hash": "kept as a keyed hash", "encrypt": "kept encrypted", "plain": "kept as typed"}
"""How a user ID is stored, by ``identity.user_id_storage``."""


@dataclasses.dataclass(frozen=True)
class DemoRules:
    """What ``with_demo_rules`` made of a config: the settings to serve and why they are so."""

    settings: Settings
    added: bool = False
    """The demo's rules are in ``settings``."""
    own: bool = False
    """The config has rules of its own: the demo adds none."""
    problems: tuple[str, ...] = ()
    """Why the demo's rules could not join this config (its ``proxy.addons`` runs no rules)."""

    def lines(self, proxy: str, admin: str) -> list[str]:
        """What ``gateway run`` says of them at its start."""
        if self.own:
            return ["gateway: the config has rules of its own: the demo shop adds none"]
        if self.problems:
            return [f"gateway: the demo shop's rules are off: {'; '.join(self.problems)}"]
        options = self.settings.options
        kept = _KEPT[options.identity.user_id_storage]
        [signup] = options.conversions
        return [
            f"gateway: demo rules: a sign-up on the demo shop binds the visitor to its e-mail ({kept})"
            f' and records a "{signup.name}" conversion worth {signup.value:g} {signup.currency}',
            f"  in a browser: land on http://{proxy}/?utm_source=newsletter&utm_campaign=launch,"
            f" sign up, then see the credit on http://{admin}/dashboard"
            f" or http://{admin}/api/attribution?group_by=campaign",
        ]


def with_demo_rules(settings: Settings) -> DemoRules:
    """``settings`` with the demo shop's ``RULES`` when its config has no identity or conversion
    rules (an empty ``rules = []`` is none), checked by the same ``validate`` as the config's own;
    for a gateway serving the demo origin only (``proxy.upstream`` empty)."""
    options = settings.options
    if options.identity.rules or options.conversions:
        return DemoRules(settings, own=True)
    demo, problems = decode_options(parse_config(RULES, "the demo shop's rules"))
    joined = msgspec.structs.replace(
        options,
        identity=msgspec.structs.replace(options.identity, rules=demo.identity.rules),
        conversions=demo.conversions,
    )
    # The config passed these checks already: what is new is the demo rules' doing.
    running = set(validate(options))
    problems += [p for p in validate(joined) if p not in running]
    if problems:
        return DemoRules(settings, problems=tuple(problems))
    return DemoRules(dataclasses.replace(settings, options=joined), added=True)
