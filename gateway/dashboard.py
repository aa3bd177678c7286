"""The admin dashboard on the admin listener: login and logout, the page, its static files,
and ``GET /api/dashboard/summary`` (what the page draws).

``/`` redirects to ``/dashboard``; ``/dashboard`` without a session redirects to ``/login``,
whose form takes the admin token (compared in constant time) and starts a session
(``gateway/sessions.py``); a refused form redirects back to it, which says why
(``LOGIN_SAYS``). Static files (``gateway/static/``: our own JS and CSS, no external asset)
are read once at start-up and served from memory. Every answer of the admin listener
carries a strict ``Content-Security-Policy``, refuses framing, and — but the static files — is
never stored in a cache (``Cache-Control: no-store``).
"""

from __future__ import annotations

import asyncio
import hmac
import math
import re
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from html import escape
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from gateway import reporting
from gateway.admin import (
    EARLIEST,
    LATEST,
    LIVE_KEY,
    MAX_BODY,
    READER_KEY,
    SETTINGS_KEY,
    ApiError,
    body_deadline,
    ok,
    only_params,
    report_zone_of,
)
from gateway.attribution import MINOR_UNITS, MODELS
from gateway.channels import CREDITED
from gateway.lockout import LOGINS_KEY
from gateway.protocol_errors import BrokenFraming, broken_framing
from gateway.reportapi import conversion_param
from gateway.reportstate import REPORTING_KEY
from gateway.sessions import (
    SESSIONS_KEY,
    Sessions,
    clear_cookie,
    from_elsewhere,
    has_session,
    same_origin,
    session_cookie,
    session_key,
    set_cookie,
)
from storage.dashboard import MAX_DAYS, PARTS, Period, summary
from storage.populations import POPULATIONS, population_refused

CSP = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    # Journeys, reports and their downloads are personal data, and a journey's URL holds the raw
    # user ID: a browser would keep both in its disk cache (an answer without Cache-Control is
    # stored there). Only the static files, which hold nothing of the store, say otherwise.
    "Cache-Control": "no-store",
}
CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}
"""Static files served, by suffix; anything else in ``gateway/static/`` (page templates) is not."""
DEFAULT_MODEL = "linear"
DEFAULT_DAYS = 30
MINOR_UNITS_ATTRIBUTE = ",".join(f"{code}:{places}" for code, places in sorted(MINOR_UNITS.items()))
"""The currencies whose minor unit is not the cent, for the page to show amounts as the
reports round them (``JPY:0,KWD:3,…``)."""

ASSETS_KEY = web.AppKey("assets", dict)

LOGIN_SAYS = {
    "ended": "Your session ended; sign in again.",
    "out": "You signed out.",
    "wrong": "Wrong admin token.",
    "empty": "token: enter the admin token.",
    "locked": "Too many wrong tokens from this address: sign-in is refused for a while, even with"
    " the right token.",
}
"""What the login page says for its ``why`` (``/login?why=wrong``), by name; any other says
nothing. A refused login redirects there (Post/Redirect/Get: its page, reloaded, does not send
the form again, and the token never goes into the address); a request whose session cookie
names no live session (expired, ended by a restart or a logout elsewhere) is sent there as
``ended``, so that the form does not read as a first visit's; one from an address refused for
too many wrong tokens (``gateway/lockout.py``) is sent to ``locked``, which answers 429 with
``Retry-After`` and says how long while the address is still refused (after, the plain form)."""
NOTICES = frozenset({"ended", "out"})
"""The ``why`` that are news, not a refusal: said as a status, not an alert."""


def load_assets() -> dict[str, bytes]:
    """Every file of ``gateway/static/`` by its path there (``vendor/x.js``); blocking, so it
    runs in a thread at start-up."""
    found: dict[str, bytes] = {}

    def walk(folder: Any, prefix: str) -> None:
        for entry in folder.iterdir():
            if entry.is_dir():
                walk(entry, f"{prefix}{entry.name}/")
            elif not entry.name.startswith("."):
                found[prefix + entry.name] = entry.read_bytes()

    walk(resources.files("gateway") / "static", "")
    return found


def back_to(value: object) -> str | None:
    """The dashboard page (with its query: period, model, conversion) a login goes back to,
    from the login form's ``next``; None for anything else (another path, another site)."""
    if not isinstance(value, str) or len(value) > 2000 or not value.isprintable():
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    if parts.scheme or parts.netloc or parts.path != "/dashboard" or parts.fragment:
        return None
    return value


def to_login(why: str | None = None, next_page: str | None = None) -> str:
    """The login page's address, saying ``why`` (``LOGIN_SAYS``) and going back to
    ``next_page`` (``back_to``) once signed in."""
    given = {name: value for name, value in (("why", why), ("next", next_page)) if value}
    return f"/login?{urlencode(given, safe='', quote_via=quote)}" if given else "/login"


def _page(
    request: web.Request,
    name: str,
    status: int = 200,
    error: str = "",
    next_page: str | None = None,
    notice: str = "",
    headers: dict[str, str] | None = None,
) -> web.Response:
    html = request.app[ASSETS_KEY][name].decode()
    if error:
        html = html.replace("<!--error-->", f'<p class="error" role="alert">{escape(error)}</p>')
    elif notice:
        html = html.replace("<!--error-->", f'<p class="notice" role="status">{escape(notice)}</p>')
    if next_page:
        field = f'<input type="hidden" name="next" value="{escape(next_page, quote=True)}">'
        html = html.replace("<!--next-->", field)
    return web.Response(
        status=status,
        text=html,
        content_type="text/html",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


async def root(request: web.Request) -> web.Response:
    raise web.HTTPFound("/dashboard")


async def dashboard_page(request: web.Request) -> web.Response:
    if not has_session(request):
        if from_elsewhere(request):  # a link from another page: its period is not ours
            raise web.HTTPSeeOther("/login")
        # Signed out (the session expired, the gateway restarted) while choosing a period: the
        # login comes back to it, and says the session ended when the browser still sent it.
        ended = "ended" if request.cookies.get(session_cookie(request)) else None
        raise web.HTTPSeeOther(to_login(ended, request.path_qs if request.query_string else None))
    response = _page(request, "dashboard.html")
    live = request.app[REPORTING_KEY]
    zone = escape(live.timezone)  # a checked IANA name (a reload's too)
    # The bot verdicts the models credit (attribution.verdicts, checked names): the journey
    # tells a touchpoint of any other as not credited.
    credited = ",".join(live.settings.options.attribution.verdicts)
    first, last = _zone_days(live.zone)  # the From and To the summary takes (To: until - 1)
    assert response.text is not None
    response.text = response.text.replace(
        'data-timezone="UTC"',
        f'data-timezone="{zone}" data-max-days="{MAX_DAYS}" data-models="{",".join(MODELS)}"'
        f' data-first-day="{first}" data-last-day="{last - timedelta(days=1)}"'
        f' data-minor-units="{MINOR_UNITS_ATTRIBUTE}" data-channels="{",".join(CREDITED)}"'
        f' data-credited-verdicts="{escape(credited)}"',
    ).replace("<span data-timezone-name>UTC</span>", f"<span data-timezone-name>{zone}</span>")
    return response


async def login_form(request: web.Request) -> web.Response:
    next_page = None if from_elsewhere(request) else back_to(request.query.get("next"))
    if has_session(request):
        raise web.HTTPSeeOther(next_page or "/dashboard")
    why = request.query.get("why", "")
    said = LOGIN_SAYS.get(why, "")
    if why == "locked":
        wait = request.app[LOGINS_KEY].locked(request.app[LOGINS_KEY].client(request))
        if not wait:  # over (or never: a link): the plain form
            return _page(request, "login.html", next_page=next_page)
        minutes = math.ceil(wait / 60)
        said = f"{said} Try again in {minutes} minute{'s' if minutes > 1 else ''}."
        return _page(request, "login.html", 429, said, next_page, headers={"Retry-After": str(wait)})
    if why in NOTICES:
        return _page(request, "login.html", next_page=next_page, notice=said)
    return _page(request, "login.html", error=said, next_page=next_page)


_FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")
"""The bodies a login is read from: the page's form, and ``curl -F``'s."""
_NO_FORM = "body: expected a form with the token (application/x-www-form-urlencoded, UTF-8)."


async def login(request: web.Request) -> web.Response:
    if not same_origin(request):
        return _page(request, "login.html", 403, "This form must be sent from the dashboard's own page.")
    if request.body_exists and request.content_type not in _FORMS:
        # aiohttp reads any other body as an empty form: a script's JSON was told to enter the
        # admin token it had sent.
        return _page(request, "login.html", 400, _NO_FORM)
    try:
        async with body_deadline(request):
            form = await request.post()
    except ApiError as err:  # the body did not arrive in time
        return _page(request, "login.html", err.status, f"{err.message}.")
    except BrokenFraming as err:  # before its base class: the framing, not the coding
        return _page(request, "login.html", 400, f"{broken_framing(err)}.")
    except web.RequestPayloadError:  # gzip over bytes that are not gzip, say
        return _page(request, "login.html", 400, "body: cannot decode its Content-Encoding")
    except web.HTTPRequestEntityTooLarge:  # the page, not the API's JSON, for a browser's form
        return _page(
            request,
            "login.html",
            413,
            f"body: larger than the dashboard takes ({MAX_BODY:,} bytes, decoded).",
        )
    except (ValueError, LookupError, web.HTTPBadRequest, HttpProcessingError, RuntimeError):
        # Bytes that are not UTF-8, an unknown charset, multipart without (or not matching)
        # its boundary; a multipart form led by a _charset_ field, which aiohttp (3.14) reads
        # past its part (a part header that does not parse: HttpProcessingError) or refuses
        # when longer than 31 bytes (RuntimeError): the dashboard's own form never sends these.
        return _page(request, "login.html", 400, _NO_FORM)
    given = form.get("token")
    next_page = back_to(form.get("next"))
    # Refused: back to the login page, which says why (Post/Redirect/Get), not a page of the
    # POST's, which a reload would send again (the browser's "Confirm form resubmission").
    logins = request.app[LOGINS_KEY]
    client = logins.client(request)
    if logins.locked(client):  # before the token is read: the right one too
        raise web.HTTPSeeOther(to_login("locked", next_page))
    # Spaces alone are no token (they were a wrong one, counted towards a lockout).
    if not isinstance(given, str) or not given.strip():
        raise web.HTTPSeeOther(to_login("empty", next_page))
    expected = request.app[SETTINGS_KEY].admin_token
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise web.HTTPSeeOther(to_login("locked" if logins.failed(client) else "wrong", next_page))
    sessions = request.app[SESSIONS_KEY]
    # The session this browser still sends (a login from a second tab, a cookie planted by a
    # site on another port of this host) ends here: one browser, one live session, the new one.
    session_id = await sessions.start(replacing=request.cookies.get(session_cookie(request)))
    response = web.HTTPSeeOther(next_page or "/dashboard")
    live = request.app[LIVE_KEY].current  # proxy.trusted_proxies reloads
    forwarded = live.options.proxy.trusted_header == "forwarded"
    set_cookie(response, request, session_id, sessions.lifetime, live.trusted_networks, forwarded)
    raise response


async def logout(request: web.Request) -> web.Response:
    if not same_origin(request):
        return _page(request, "login.html", 403, "This form must be sent from the dashboard's own page.")
    await request.app[SESSIONS_KEY].end(request.cookies.get(session_cookie(request)))
    # Said, so that an analyst on a shared computer sees the sign-out took (the plain form read
    # as a first visit's, or as a page that had not reacted).
    response = web.HTTPSeeOther(to_login("out"))
    clear_cookie(response, request)
    raise response


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    suffix = name[name.rfind(".") :] if "." in name else ""
    body = request.app[ASSETS_KEY].get(name)
    if body is None or suffix not in CONTENT_TYPES:
        raise ApiError(404, f"no such file: {request.path}")
    return web.Response(
        body=body, headers={"Content-Type": CONTENT_TYPES[suffix], "Cache-Control": "no-cache"}
    )


async def no_icon(request: web.Request) -> web.Response:
    """``/favicon.ico``, which a browser asks for in a tab of a page that names no icon (an
    admin JSON answer, the 404 page): 204 No Content, no icon and no error (it was 401 without
    a session, 404 with one, an error in the browser's console each time). Not the pages' icon:
    they name their SVG, ``/static/favicon.svg``, and an ICO of it would be a binary asset to
    keep in step for a tab of raw JSON."""
    return web.Response(status=204, headers={"Cache-Control": "no-cache"})


FIRST_DAY = EARLIEST.date()
LAST_DAY = LATEST.date()
"""The days ``since`` and ``until`` may name: the bounds of the report endpoints' times."""


def _zone_days(zone: tzinfo) -> tuple[date, date]:
    """The first and last days whose midnight in ``zone`` lies in the report endpoints' times
    (EARLIEST..LATEST): east of UTC, 1 January 1970 begins before 1970 (09:00 in Tokyo is
    00:00Z), so its first day is the 2nd; west, 31 December 9999 begins after its 00:00Z, so
    its last is the 30th. A zone's offset is under a day: one step is enough."""
    first = FIRST_DAY if _midnight(FIRST_DAY, zone) >= EARLIEST else FIRST_DAY + timedelta(days=1)
    last = LAST_DAY if _midnight(LAST_DAY, zone) <= LATEST else LAST_DAY - timedelta(days=1)
    return first, last


def _midnight(day: date, zone: tzinfo) -> datetime:
    return datetime.combine(day, time.min, zone).astimezone(UTC)


def _in_zone(name: str, day: date, zone: tzinfo, bounds: tuple[date, date]) -> None:
    """Refuse (400) a day whose midnight in ``zone`` is out of the report endpoints' times, as
    they refuse it (the page's download links ask them for the same days), naming the zone's
    first or last day."""
    first, last = bounds
    if first <= day <= last:
        return
    named = getattr(zone, "key", "UTC")
    begins = f"{day} begins at {_midnight(day, zone):%Y-%m-%dT%H:%M:%SZ} in attribution.timezone ({named})"
    if day < first:
        said = f"before {EARLIEST:%Y-%m-%dT%H:%MZ}, the earliest moment a report reads: the earliest"
        raise ApiError(400, f"{name}: {begins}, {said} day there is {first}")
    said = f"after {LATEST:%Y-%m-%dT%H:%MZ}, the latest moment a report reads: the latest"
    raise ApiError(400, f"{name}: {begins}, {said} day there is {last}")


def _day(name: str, value: str) -> date:
    try:
        if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
            raise ValueError("not a plain date")  # date.fromisoformat also takes 2026-W44-1
        day = date.fromisoformat(value)
    except ValueError:
        raise ApiError(400, f"{name}: expected a date like 2026-11-01, got {value[:100]!r}") from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise ApiError(400, f"{name}: expected a date from {FIRST_DAY} to {LAST_DAY}, got {value[:100]!r}")
    return day


async def dashboard_summary(request: web.Request) -> web.Response:
    """Conversions by channel per day, every model by channel, top campaigns and creators, bot
    share and totals for whole days (in ``attribution.timezone``) ``since`` (inclusive) to
    ``until`` (exclusive); with ``part``, only that part (``storage.dashboard.PARTS``)."""
    q = request.query
    only_params(request, {"since", "until", "model", "population", "conversion", "part"})
    zone = report_zone_of(request)
    bounds = _zone_days(zone)
    today = datetime.now(zone).date()
    until = _day("until", q["until"]) if "until" in q else today + timedelta(days=1)
    _in_zone("until", until, zone, bounds)
    if "since" not in q and until <= bounds[0]:  # as the report endpoints say it
        raise ApiError(400, f"until: must be after {bounds[0]} (the default since is its earliest)")
    # The default since never reaches before the zone's first day, as the report endpoints' does.
    since = (
        _day("since", q["since"]) if "since" in q else max(until - timedelta(days=DEFAULT_DAYS), bounds[0])
    )
    _in_zone("since", since, zone, bounds)
    # As every report and listing says it, the default until (tomorrow) too: a since after it
    # read "since..until: must span 1..92 days, got -4".
    if since >= until:
        raise ApiError(400, f"since: must be before until ({since} >= {until})")
    if not 1 <= (until - since).days <= MAX_DAYS:
        raise ApiError(400, f"since..until: must span 1..{MAX_DAYS} days, got {(until - since).days}")
    model = q.get("model", DEFAULT_MODEL)
    if model not in MODELS:
        raise ApiError(400, f"model: expected one of {', '.join(MODELS)}, got {model[:100]!r}")
    population = q.get("population")
    if population is not None and population not in POPULATIONS:
        raise ApiError(400, f"population: {population_refused(population)}")
    conversion = conversion_param(request)
    part = q.get("part")
    if part is not None and part not in PARTS:
        raise ApiError(400, f"part: expected one of {', '.join(PARTS)}, got {part[:100]!r}")
    live = request.app[REPORTING_KEY]
    data = await summary(
        (live.reader or request.app[READER_KEY]).db,  # the mirror's, if any
        live.reports,
        model,
        Period(since, until),
        population,
        conversion,
        PARTS if part is None else (part,),
    )
    data["source"] = live.source  # every part, as the reports' JSON: the store it read
    # Offer only the names this endpoint accepts back (rule names may be longer than 200).
    if "conversion_names" in data:
        data["conversion_names"] = [n for n in data["conversion_names"] if reporting.is_conversion_name(n)]
    return ok(data)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def add_dashboard(app: web.Application) -> None:
    """Mount the dashboard on the admin app (after ``create_admin_app``)."""
    settings = app[SETTINGS_KEY]
    key = session_key(settings.secret, settings.admin_token)
    app[SESSIONS_KEY] = Sessions(
        settings.options.admin.session_hours * 3600, store=settings.store_path, key=key
    )

    async def assets(app: web.Application) -> AsyncIterator[None]:
        app[ASSETS_KEY] = await asyncio.to_thread(load_assets)
        await app[SESSIONS_KEY].load()  # the store is open (and migrated) by now: the proxy's
        yield
        await app[SESSIONS_KEY].close()  # logouts the store did not take yet

    app.cleanup_ctx.append(assets)
    app.on_response_prepare.append(_security_headers)
    app.router.add_get("/", root)
    app.router.add_get("/dashboard", dashboard_page)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/static/{name:.+}", static)
    app.router.add_get("/favicon.ico", no_icon)
    app.router.add_get("/api/dashboard/summary", dashboard_summary)
