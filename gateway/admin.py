"""The admin API on its own listener: health, metrics, touchpoints, visitor and user journeys,
user erasure, bad events, the review queue and verdict overrides, creators, re-sending a user
to a sink, OpenAPI. The reports (``/api/fraud`` included) are in ``gateway/reportapi.py``.

Every JSON answer uses one envelope (``{"ok": true, ...}`` or ``{"ok": false,
"status": N, "error": "..."}``), produced here and by one error middleware;
``/metrics`` answers Prometheus text and ``/api/openapi.json`` the bare document. Every
request whose ``Host`` is not one of the listener's names gets 421 first (``known_host``,
``gateway/adminhosts.py``).
``/api/*`` and ``/metrics`` need ``Authorization: Bearer <token>``, compared in
constant time (too many wrong ones from one address and it is refused a while:
``gateway/lockout.py``), or — for GET and HEAD only, from the dashboard's own pages — a dashboard
session cookie (``gateway/sessions.py``); ``/healthz``, the OpenAPI document and the dashboard's own
pages and static files (``gateway/dashboard.py``) do not. Each write through ``/api/*`` tells
the report engine (``writes_change_reports``), so that no report asked for after it is answered
by one in flight since before it.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import functools
import hmac
import json
import logging
import re
import sqlite3
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import msgspec
from aiohttp import compression_utils, hdrs, web
from prometheus_client import CONTENT_TYPE_LATEST

from gateway import listing_export
from gateway.accept import accepted_format, vary
from gateway.adminhosts import host_refusal
from gateway.badbody import body_key, unseal
from gateway.calendar_check import no_such_moment
from gateway.compressing import compress_answers
from gateway.config import Settings
from gateway.config_values import TYPE_WORDS
from gateway.creators import Creator, CreatorRegistry
from gateway.events import (
    CONVERSION_ORIGINS,
    NAME,
    NAME_RULE,
    CreatorStanding,
    VerdictChange,
    as_typed,
    iso,
    printable_name,
)
from gateway.ids import Uuid7
from gateway.keys import Keys, named_user_key, operator_user_id, unlike_a_visitor, visitor_id_refused
from gateway.lockout import LOGINS_KEY, FailedLogins
from gateway.metrics import Metrics
from gateway.openapi import DELIMITERS, FEED_ORDERS, FORMATS, NEWEST_CURSOR, ORDERS, openapi_document
from gateway.pages import error_body
from gateway.protocol_errors import BrokenFraming, broken_framing
from gateway.sessions import (
    PAGES,
    READ_METHODS,
    STATIC_PREFIX,
    from_elsewhere,
    has_cookie_session,
    session_cookie,
)
from gateway.usernames import (
    NamedUser,
    erasure_note,
    erasure_reach,
    named_user,
    user_recorded,
    visitor_recorded,
)
from storage.erasure import (
    bad_events_naming,
    erase_user,
    erase_visitor,
    kept_bad_events,
    user_known,
)
from storage.feed import STORED_CURSOR, CursorLost, StoredCursor
from storage.local import LOCKED, LocalStore
from storage.lockprobe import LockProbe
from storage.migrate import SchemaTooNew
from storage.queries import (
    CONVERSION_FILTERS,
    TOUCHPOINT_FILTERS,
    ConversionQuery,
    Reader,
    StoreUnavailable,
    TouchpointQuery,
)
from storage.sinks import NothingRecorded, SinkError, SinkSet

if TYPE_CHECKING:
    from storage.central_queries import CentralReader  # asyncpg: the postgres extra

log = logging.getLogger("gateway.admin")
T = TypeVar("T")

READER_KEY = web.AppKey("reader", Reader)
SETTINGS_KEY = web.AppKey("settings", Settings)
METRICS_KEY = web.AppKey("metrics", Metrics)
STORE_KEY = web.AppKey("store", LocalStore)
KEYS_KEY = web.AppKey("keys", Keys)
IDS_KEY = web.AppKey("ids", Uuid7)
CREATORS_KEY = web.AppKey("creators", CreatorRegistry)
SINKS_KEY = web.AppKey("sinks", SinkSet)
LOCK_PROBE_KEY = web.AppKey("lock_probe", LockProbe)
STOPPING_KEY = web.AppKey("stopping", asyncio.Event)
"""Set when a stop's drain begins (``proxy.drain_seconds``): ``/healthz`` answers 503."""


class LiveSettings:
    """The settings as last reloaded (``Gateway.reload`` sets ``current``): ``SETTINGS_KEY``'s
    are the start's, for what needs a restart anyway."""

    __slots__ = ("current",)

    def __init__(self, settings: Settings) -> None:
        self.current = settings


LIVE_KEY = web.AppKey("live_settings", LiveSettings)

PUBLIC_PATHS = frozenset({"/healthz", "/api/openapi.json", "/favicon.ico"})
"""Paths answered without a token: the health check, the API's description, and the icon a
browser tab asks for (``gateway/dashboard.py`` ``no_icon``: it holds nothing)."""
# Matched whole (``fullmatch``: "$" would let a trailing newline through), on the lowered text:
# a UUID or a key written in capitals is the same one (RFC 9562 §4: case-insensitive on input).
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_VISITOR_KEY = re.compile(r"[0-9a-f]{32}")
_ESCAPES = re.compile(r"(?:%[0-9A-Fa-f]{2})+")
_encode = msgspec.json.Encoder()


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


class StoreRefused(ApiError):
    """A write the store did not take (locked past the wait, a full disk): a 503 that says
    nothing was stored, with ``Retry-After`` as the busy store's other 503s."""

    def __init__(self, message: str) -> None:
        super().__init__(503, message)


def ok(payload: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=_encode.encode({"ok": True, **payload}), content_type="application/json"
    )


def fail(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=error_body(status, message),
        content_type="application/json",
        headers=headers,
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_BODY = 1024**2
"""The largest request body the admin listener takes, decoded (aiohttp's default, named: a
verdict, a creator or the login form is a few hundred bytes); larger is a 413."""


@web.middleware
async def envelope(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into the JSON envelope; nothing leaves as a traceback. A refusal
    answered before the request's body was read whole says ``Connection: close``: the listener
    does not read what is left (``lingering_time = 0``) and closes, and a client reusing the
    connection would otherwise find it gone."""
    response = await _enveloped(request, handler)
    if response.status >= 400 and request.body_exists and not request.content.is_eof():
        response.force_close()
    return response


_ID_PREFIXES = ("/api/users/", "/api/visitors/", "/api/creators/", "/api/sinks/")
"""Paths that end in an ID a client may have left holding a ``/``."""


def _slash_hint(path: str) -> str:
    """For a path under an endpoint that takes an ID, that an ID holding ``/`` is written
    ``%2F``: ``DELETE /api/users/a/b`` read only as an endpoint that does not exist. For
    an endpoint's path with a trailing ``/`` (a client's base URL joined with one), the path
    without it."""
    if path.startswith(_ID_PREFIXES) and path.count("/") > (5 if path.startswith("/api/sinks/") else 3):
        return " (an ID that holds a / is written %2F: /api/users/a%2Fb)"
    bare = path.rstrip("/")
    if bare != path and any(endpoint.fullmatch(bare) for endpoint in _endpoints()):
        return f" (without the trailing /: {bare})"
    return ""


@functools.cache
def _endpoints() -> tuple[re.Pattern[str], ...]:
    """The OpenAPI document's paths, each parameter one segment (``[^/]+``)."""
    return tuple(
        re.compile(re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(path))) for path in openapi_document()["paths"]
    )


async def _enveloped(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except StoreRefused as err:
        return fail(err.status, err.message, {"Retry-After": "5"})
    except ApiError as err:
        return fail(err.status, err.message)
    except StoreUnavailable as err:
        log.warning("admin API: %s", err)
        return fail(503, str(err))
    except SchemaTooNew as err:  # a newer gateway migrated the store under this one: it acts on nothing
        log.error("admin API: %s %s refused: %s", request.method, route_of(request), err)
        return fail(503, str(err))
    except web.HTTPException as err:
        if err.status < 400:
            raise
        # A CONNECT's target (``host:443``) has no path: name it as sent.
        target = request.path if request.path.startswith("/") else request.raw_path[:200]
        message = {
            404: f"no such endpoint: {target}{_slash_hint(target)}",
            405: f"{request.method} is not allowed here",
            413: f"body: larger than the admin API takes ({MAX_BODY:,} bytes, decoded)",
        }
        # RFC 9110 §15.5.6: a 405 lists the methods the resource has.
        allow = {"Allow": err.headers["Allow"]} if "Allow" in err.headers else None
        return fail(err.status, message.get(err.status, err.reason), allow)
    except sqlite3.OperationalError as err:
        if not store_busy(err):
            log.exception("admin API failed on %s %s", request.method, route_of(request))
            return fail(500, "internal error; see the gateway log")
        log.warning("admin API: the store was busy on %s %s (%s)", request.method, route_of(request), err)
        return fail(
            503,
            "the store is busy: another process holds its write lock (an import, say); try again",
            {"Retry-After": "5"},
        )
    except Exception:
        log.exception("admin API failed on %s %s", request.method, route_of(request))
        return fail(500, "internal error; see the gateway log")


@web.middleware
async def writes_change_reports(request: web.Request, handler: Handler) -> web.StreamResponse:
    """After an authenticated request to ``/api/*`` that can write (any method but GET and
    HEAD: an erasure, a verdict, a creator's standing, and every write route to come), the
    reports asked for next are computed anew rather than answered by one in flight since
    before it (``Reporting.changed``): whatever the answer, since a write may have committed
    before a later step failed. Inside ``bearer_auth``: a request refused there changes
    nothing; nor do the dashboard's login and logout (a session, not the store)."""
    try:
        return await handler(request)
    finally:
        if request.method not in READ_METHODS and request.path.startswith("/api/"):
            from gateway.reportstate import REPORTING_KEY  # the report engine is not admin.py's to load

            live = request.app.get(REPORTING_KEY)
            if live is not None:
                live.changed()


@functools.cache
def _with_body() -> frozenset[tuple[str, str]]:
    """(method, route) of the API operations that take a request body, as the OpenAPI document
    lists them (an override, its withdrawal, a creator's standing)."""
    return frozenset(
        (method.upper(), path)
        for path, methods in openapi_document()["paths"].items()
        for method, operation in methods.items()
        if "requestBody" in operation
    )


@web.middleware
async def no_stray_body(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse (400) a body sent to an ``/api/`` operation that takes none, as an unknown query
    parameter is refused: a client sending its filters as JSON (``requests.get(url, json=…)``)
    got every row, and an erasure with a body naming someone else erased the user of its path,
    the body unread. Told by the headers alone, before anything is read: ``Content-Length: 0``
    is no body, a chunked one is one (however short: reading it could take the body's own
    limits and timeout). The OpenAPI document (a page of its own, read by any client) and
    the health and metrics endpoints outside ``/api/`` ignore one, as they ignore a query."""
    route = request.match_info.route.resource
    if (
        request.body_exists
        and request.match_info.http_exception is None
        and route is not None
        and route.canonical.startswith("/api/")
        and route.canonical not in PUBLIC_PATHS
        and (request.method, route.canonical) not in _with_body()
        and request.content_length != 0
    ):
        raise ApiError(
            400,
            f"body: {request.method} {route.canonical} takes no body; send none (its parameters go"
            " in the path and the query string)",
        )
    return await handler(request)


def store_busy(err: sqlite3.Error) -> bool:
    """Whether SQLite gave up waiting for a lock another connection held past the busy timeout
    (SQLITE_BUSY, SQLITE_LOCKED and their extended codes): worth a retry, not a fault."""
    code = getattr(err, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (5, 6)
    return "locked" in str(err) or "busy" in str(err)


def route_of(request: web.Request) -> str:
    """The route a request matched as registered (``/api/users/{user_id}``), for the log: never
    its path, which may hold a raw user ID (logs are data at rest too)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "(no route)"


@web.middleware
async def known_host(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse a request whose ``Host`` is not one of the listener's names (``admin.hosts``,
    read from the running settings: a reload applies it) with 421, before any token is read
    or counted: a page that DNS-rebinds its public name to this address is same-origin with
    itself, and its wrong tokens would lock the operator's own address out. Every ``Host``
    line is checked (aiohttp reads the first)."""
    hosts = request.app[LIVE_KEY].current.options.admin.hosts
    for header in request.headers.getall(hdrs.HOST, ()):
        why = host_refusal(header, hosts)
        if why:
            return fail(421, why)
    return await handler(request)


@web.middleware
async def bearer_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in PUBLIC_PATHS or request.path in PAGES or request.path.startswith(STATIC_PREFIX):
        return await handler(request)
    expected = request.app[SETTINGS_KEY].admin_token.encode()
    if len(request.headers.getall("Authorization", ())) > 1:
        # aiohttp reads the first: a second line (a proxy's, say) would be passed over unseen.
        return fail(401, "Authorization given more than once; send it once", {"WWW-Authenticate": "Bearer"})
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if not header and has_cookie_session(request):
        if from_elsewhere(request):
            # SameSite=Strict keeps the cookie off other sites' requests, but a page on another
            # port of this host is the same site: it could make the browser run reports.
            return fail(
                403,
                "a dashboard session counts only on requests from the dashboard's own pages"
                " (Sec-Fetch-Site: same-origin), and this one came from another page;"
                " send Authorization: Bearer <admin token>",
            )
        if request.method in READ_METHODS:
            return await handler(request)
        # Refusing every write made with the cookie keeps a session harmless even if the
        # checks above ever failed.
        return fail(403, "a dashboard session can only read; send Authorization: Bearer <admin token>")
    if not header and request.cookies.get(session_cookie(request)):
        # Told apart from no credential at all: "missing Authorization" to a script that sent
        # the session's cookie read as if the cookie had not been sent.
        return fail(
            401,
            "the dashboard session of this cookie has ended (admin.session_hours passed, a logout,"
            " a newer login from the same browser, or a restart with another admin.token): sign in"
            " again, or send"
            " Authorization: Bearer <admin token>",
            {"WWW-Authenticate": "Bearer"},
        )
    if not header:
        return fail(401, "missing Authorization: Bearer <admin token>", {"WWW-Authenticate": "Bearer"})
    logins = request.app[LOGINS_KEY]
    client = logins.client(request)
    wait = logins.locked(client)
    if wait:  # before the token is read: the right one too, or the refusal would tell it
        return fail(429, locked_out(wait, logins), {"Retry-After": str(wait)})
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode("utf-8", "surrogateescape"), expected
    ):
        # A 401 still (the token was read, and wrong); the lockout starts with the next.
        wait = logins.failed(client)
        then = f"; too many from this address: the next are refused for {wait} s" if wait else ""
        return fail(401, f"{authorization_refusal(scheme, given)}{then}", {"WWW-Authenticate": "Bearer"})
    return await handler(request)


def authorization_refusal(scheme: str, given: str) -> str:
    """Why an ``Authorization`` header was refused: the scheme when it is not Bearer (the right
    token sent as Prometheus's ``basic_auth`` or under ``Token`` read "wrong admin token", and
    the operator checked a token that was right), else the token. Never echoes a credential."""
    if scheme.lower() == "bearer":
        if not given.strip():
            return "Authorization: Bearer without a token; send Authorization: Bearer <admin token>"
        return "wrong admin token"
    if not given:
        got = "the token alone"  # no scheme word: what came may be the token itself
    elif re.fullmatch(r"[A-Za-z][A-Za-z0-9-]{0,19}", scheme):
        got = repr(scheme)
    else:
        got = "no scheme this API knows"
    return f"Authorization: expected the scheme Bearer, got {got}; send Authorization: Bearer <admin token>"


def locked_out(wait: int, logins: FailedLogins) -> str:
    """Why a client address is refused, and for how long."""
    return (
        f"too many wrong admin tokens from this address ({logins.limit} within {logins.window:g} s):"
        f" refused for {wait} s more, the right token too; try again then"
    )


_END_OF_DAY = re.compile(r"\d{4}-\d\d-\d\d[Tt]24:00(:00(\.0+)?)?(?![\d.:])")
# A calendar date followed by anything but the date-time separator: Python's fromisoformat takes
# any character there, so 2026-11-01Z read as midnight in the zone (the Z dropped), and
# 2026-11-01+05:30 or 2026-11-01-05:00 as 05:30 or 05:00 there (the offset read as a time).
_AFTER_DATE = re.compile(r"\d{4}-\d\d-\d\d[^Tt ]")
_DATE_OFFSET = re.compile(r"\d{4}-\d\d-\d\d([Zz]|[+-]\d\d(:?\d\d)?)$")
# The forms the API reads, as the OpenAPI document's pattern has them (the calendar and the
# range are checked after): the extended form, dashes in the date and colons in the time, hours
# and minutes at least, fractions to the microsecond, an offset as Z or ±HH:MM; a space may
# stand for the T (RFC 3339) and for the + a query string decoded. Python's fromisoformat also
# takes 20261101, 2026-W44-1, 2026-11-01T1000, T10 and +0100, which the document refuses.
_EXTENDED = re.compile(
    r"\d{4}-\d\d-\d\d([Tt ]\d\d:\d\d(:\d\d(\.\d{1,6})?)?([Zz]|[-+ ]\d\d:\d\d)?)?", re.ASCII
)
_EXTENDED_HINT = (
    ": write the extended form, the date with its dashes and the time with its colons, hours and"
    " minutes at least (2026-11-01, 2026-11-01T10:00, 2026-11-01T10:00+01:00), not the basic"
    " (20261101, T1000, +0100) or week (2026-W44-1) forms"
)
# The extended form with any fraction of a second: more digits than the microseconds Python and
# the store keep (a JavaScript or Go timestamp printed to the nanosecond), or after a decimal
# comma (ISO 8601 allows it), each said as such rather than as the basic or week forms.
_ANY_FRACTION = re.compile(
    r"(\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d)([.,])(\d+)(([Zz]|[-+ ]\d\d:\d\d)?)", re.ASCII
)
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)  # event IDs (UUIDv7) count milliseconds from here
LATEST = datetime(9999, 12, 31, tzinfo=UTC)


def parse_time(name: str, value: str, zone: tzinfo = UTC) -> str:
    """An ISO 8601 date or date-time → the store's timestamp text. A date alone is its
    midnight, and a date-time without an offset is read, in ``zone`` (``attribution.timezone``:
    the report days'). A local time the clocks skip (02:30 when they go from 02:00 to 03:00)
    is read with the offset before the change, so as the time that much after it (03:30); one
    they pass twice is the first (``fold=0``, as Python and java.time read both).

    As RFC 3339 allows, ``t`` and ``z`` may be lower case; and ``24:00`` (``T24:00``,
    ``T24:00:00``, ``T24:00:00.000``) is the end of its day, the next day's midnight, as ISO
    8601 wrote it before 2019 (``until=2026-11-30T24:00``: November whole)."""
    zoned_day = _DATE_OFFSET.match(value)
    if zoned_day:
        given_day, named = value[:10], getattr(zone, "key", "UTC")
        offset = "Z" if zoned_day.group(1) in "Zz" else zoned_day.group(1)
        at = "UTC" if offset == "Z" else f"at {offset}"
        raise ApiError(
            400,
            f"{name}: a date alone is a day of attribution.timezone ({named}) and takes no offset:"
            f" write {given_day}T00:00{offset} for midnight {at}, or {given_day} for midnight in {named},"
            f" got {value[:100]!r}",
        )
    meant = ""
    try:
        if not _EXTENDED.fullmatch(value):
            if fraction := _ANY_FRACTION.fullmatch(value):
                meant = _fraction_hint(fraction)
            elif not _AFTER_DATE.match(value):  # 2026-11-01_05:30: the generic refusal
                datetime.fromisoformat(value)  # raises for what is no ISO 8601 at all
                meant = _EXTENDED_HINT  # a form Python reads, the API does not
            raise ValueError(value)
        if len(value) == 10:
            moment = datetime.combine(date.fromisoformat(value), datetime.min.time(), zone)
        else:  # the extended form: its 11th character is the T, or a space for it
            # A space between date and time (RFC 3339 allows it) is the T; one after the time
            # is a + decoded from a query string (10:00:00+01:00 sent unencoded).
            text = value[:10] + "T" + value[11:] if value[10:11] == " " else value
            text = text.replace("Z", "+00:00").replace("z", "+00:00").replace(" ", "+", 1)
            end_of_day = _END_OF_DAY.match(text)
            if end_of_day:  # the next day's 00:00, with the offset given
                text = text[:11] + "00" + text[13:]
            moment = datetime.fromisoformat(text)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=zone)
            if end_of_day:
                day = moment.date() + timedelta(days=1)
                moment = datetime.combine(day, moment.timetz().replace(tzinfo=None), moment.tzinfo)
        if EARLIEST <= moment <= LATEST:
            return iso(moment)
        # Read in the zone, out of range as an instant: say which (1970-01-01 in Kolkata).
        meant = f", which is {iso(moment)}" if moment.tzinfo is zone and zone is not UTC else ""
    except (ValueError, OverflowError):
        # The form is right, the calendar has no such day or time: say which part.
        meant = meant or (no_such_moment(name, value) if _EXTENDED.fullmatch(value) else "")
    raise ApiError(
        400,
        f"{name}: expected an ISO 8601 date or date-time from {EARLIEST:%Y-%m-%dT%H:%MZ} to"
        f" {LATEST:%Y-%m-%dT%H:%MZ}, like 2026-11-25T10:00:00Z, got {value[:100]!r}{meant}",
    )


def _fraction_hint(fraction: re.Match[str]) -> str:
    """What to write for a fraction of a second the API does not read (``_ANY_FRACTION``): its
    digits cut to the microsecond (cut, not rounded: .9999999 is no next second), or after a
    point rather than a comma."""
    time, mark, digits, offset = fraction.group(1, 2, 3, 4)
    written = f"write {time}.{digits[:6]}{offset}"
    if mark == ",":
        return f": a fraction of a second is written after a point, not a comma: {written}"
    return f": a fraction of a second takes 1 to 6 digits (to the microsecond), got {len(digits)}: {written}"


def in_order(
    since: str, until: str, names: tuple[str, str] = ("since", "until"), *, until_now: bool = False
) -> None:
    """Refuse (400) a period that does not end after it starts, naming ``since`` as ``names``
    spell it (``gateway report``: ``--since``). Both ends are canonical UTC text
    (``parse_time``, ``events.iso``), which sorts in time order and is how every answer
    writes a timestamp: the message shows them so, whichever endpoint refused. ``until_now``:
    ``until`` was left out and is now, which the message says (a since in the future)."""
    if since >= until:
        since_name, until_name = names
        now = f"; {until_name} left out: now" if until_now else ""
        raise ApiError(400, f"{since_name}: must be before {until_name} ({since} >= {until}{now})")


def _not_utf8(raw: str) -> str | None:
    """The first run of percent-escapes in ``raw`` that is not UTF-8 once decoded (``%ff``), or
    None."""
    for run in _ESCAPES.finditer(raw):
        try:
            urllib.parse.unquote_to_bytes(run.group()).decode()
        except UnicodeDecodeError:
            return run.group()
    return None


def utf8_escapes(request: web.Request) -> None:
    """Refuse (400) a path or query parameter whose percent-escapes are not UTF-8: aiohttp
    reads them in a path as the text they are (``/api/creators/%ff`` names the creator
    ``%ff``) and in a query as U+FFFD (``conversion=%ff`` asks for ``\ufffd``), so either
    would name something the client never meant."""
    bad = _not_utf8(request.rel_url.raw_path)
    if bad is not None:
        raise ApiError(400, f"path: {bad!r} is not UTF-8 once percent-decoded; percent-encode text as UTF-8")
    for pair in request.rel_url.raw_query_string.split("&"):
        name, _, value = pair.partition("=")
        bad = _not_utf8(value)
        named = _not_utf8(name)
        if bad is not None or named is not None:
            shown = "query" if named is not None else urllib.parse.unquote_plus(name)
            raise ApiError(
                400,
                f"{shown}: {named or bad!r} is not UTF-8 once percent-decoded; percent-encode text as UTF-8",
            )


def only_params(request: web.Request, allowed: set[str]) -> None:
    """Refuse (400) a query parameter an endpoint does not know, so that a typo is never
    silently ignored, and one given more than once, so that neither value is silently
    dropped (``model=linear&model=time_decay``: which report was meant?); and a path or query
    whose percent-escapes are not UTF-8 (``utf8_escapes``)."""
    utf8_escapes(request)
    query = request.query
    unknown = sorted(set(query) - allowed)
    if unknown:
        takes = f"allowed: {', '.join(sorted(allowed))}" if allowed else "this endpoint takes none"
        raise ApiError(400, f"unknown query parameter {unknown[0]!r} ({takes})")
    if len(query) > len(set(query)):
        name = next(name for name in query if len(query.getall(name)) > 1)
        raise ApiError(400, f"{name}: given {len(query.getall(name))} times; give each query parameter once")


async def healthz(request: web.Request) -> web.Response:
    """200 while the store accepts events; 503 when its writer stopped (the site is still served,
    but nothing is recorded until a restart). While its latest commit failed (disk full,
    read-only), still 200 — a restart would not help, and the site is served — but ``degraded``,
    with the error and since when; so too while another connection holds the write lock (the
    events wait in the queue then, and are written once it is released): seen by a commit
    waiting on it, or else by asking the lock (``LockProbe``, at most 0.25 s). 503 ``stopping``
    while a stop drains (``proxy.drain_seconds``): a load balancer takes the gateway out first."""
    if request.app[STOPPING_KEY].is_set():
        raise ApiError(
            503,
            "stopping: the gateway is draining (proxy.drain_seconds) and serves on until its listeners close",
        )
    store = request.app[STORE_KEY]
    if not store.accepting:
        raise ApiError(503, "the store writer stopped: events are not being recorded; see the log")
    node = request.app[SETTINGS_KEY].node
    # A reader of the log failing (the central store or a sink's destination away) loses
    # nothing, and the site is served: said, in fixed words, without changing the status (until
    # 2026-12-08 only the log and the metrics said it).
    readers = {
        reader: {
            "failing_since": iso(datetime.fromtimestamp(failures.since_wall, UTC)),
            "attempts": failures.count,
        }
        for reader, failures in sorted(request.app[METRICS_KEY].readers_failing.items())
        if failures.count
    }
    behind = {"readers_failing": readers} if readers else {}
    if store.failing is not None:
        since, kind = store.failing
    elif (held := await request.app[LOCK_PROBE_KEY].held_since()) is not None:
        # Until 2026-12-07 ``ok`` until a commit had waited out the 5 s busy timeout, and for
        # good with nothing to commit: the lock is asked itself (``storage.lockprobe``).
        since, kind = held, LOCKED
    else:
        return ok({"status": "ok", "node": node, **behind})
    if kind == LOCKED:
        state = "commits are waiting: the database is locked by another connection; events stay queued"
    else:
        state = f"commits are failing ({kind}), events are being lost; the log says why"
    return ok(
        {
            "status": "degraded",
            "node": node,
            "store": state,
            "failing_since": iso(datetime.fromtimestamp(since, UTC)),
            **behind,
        }
    )


async def metrics(request: web.Request) -> web.Response:
    body = await asyncio.to_thread(request.app[METRICS_KEY].exposition)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


def _ordered_page(q: Mapping[str, str], feed: str | None = None) -> tuple[int, str | None, bool, bool]:
    """A listing's ``limit``, ``cursor`` (the store's, without ``newest.``), and ``order``:
    whether newest first, whether in the order stored. ``oldest`` (the default) and ``newest``
    everywhere; ``stored`` (``storage.feed``) where ``feed`` names the listing
    (``/api/touchpoints``, ``/api/conversions``). A cursor of an ``order=newest`` page is marked
    ``newest.``, one of ``order=stored`` is ``stored.<table>.…``; one given with another order
    is a 400 naming the order it came from, rather than a page from the wrong side of it, and
    one of the other listing's stored order a 400 naming that listing (its rowids are another
    table's: no place in this one)."""
    order = q.get("order", "oldest")
    orders = FEED_ORDERS if feed is not None else ORDERS
    if order not in orders:
        also = "; order=stored is on /api/touchpoints and /api/conversions" if order == "stored" else ""
        raise ApiError(400, f"order: expected one of {', '.join(orders)}, got {order[:100]!r}{also}")
    newest, stored = order == "newest", order == "stored"
    given = q.get("cursor")
    if given is None:
        return _limit(q), None, newest, stored
    came = (
        "stored"
        if given.startswith(STORED_CURSOR)
        else "newest"
        if given.startswith(NEWEST_CURSOR)
        else "oldest"
    )
    cursor = given.removeprefix(NEWEST_CURSOR)
    from_feed = StoredCursor.parse(given) if came == "stored" else None
    well_formed = from_feed is not None if came == "stored" else _UUID.fullmatch(cursor)
    if not well_formed:
        raise ApiError(400, "cursor: not a cursor this API returned")
    if from_feed is not None and feed is not None and from_feed.table != feed:
        raise ApiError(
            400,
            f"cursor: comes from /api/{from_feed.table} (order=stored), not /api/{feed}; page"
            f" /api/{feed} with a cursor it returned, or leave cursor out to start from its first row",
        )
    if came != order:
        raise ApiError(
            400,
            f"cursor: comes from a page in order={came}{' (the default)' if came == 'oldest' else ''},"
            f" not order={order}; page on with the order it came from, or leave cursor out to start"
            " from the first page",
        )
    return _limit(q), cursor, newest, stored


def _feed_source(request: web.Request, stored: bool) -> None:
    """``order=stored`` pages this node's store by its rowids: with ``admin.source = "central"``
    the listings read the central store, which has none (a 400 saying so)."""
    if stored and request.app[SETTINGS_KEY].options.admin.source == "central":
        raise ApiError(
            400,
            "order: stored pages this node's store in the order its rows were stored; with"
            ' admin.source = "central" the listings read the central store, which has no such'
            ' order (see Known limits): follow each node\'s own rows (admin.source = "local" on it)'
            " with order=stored, or page order=oldest by since",
        )


async def _listed(
    reading: Awaitable[tuple[list[dict[str, Any]], str | None]],
) -> tuple[list[dict[str, Any]], str | None]:
    """A listing's page, a ``CursorLost`` (``order=stored``: ``storage.feed``) said as the 400
    it is."""
    try:
        return await reading
    except CursorLost as err:
        raise ApiError(400, str(err)) from err


def _stored_page(page: listing_export.Page) -> listing_export.Page:
    """A download's ``page``, each through ``_listed``: the first one's ``CursorLost`` a 400
    (a later one's cuts the download, as any failure once the headers are sent)."""

    async def paged(cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        return await _listed(page(cursor))

    return paged


def _limit(q: Mapping[str, str]) -> int:
    """``limit``: 1..1000, default 100."""
    limit_text = q.get("limit", "100")
    # The length first (leading zeros aside): int() refuses more than 4300 digits.
    digits = limit_text.lstrip("0") or "0"
    if not (len(digits) <= 4 and limit_text.isascii() and limit_text.isdigit()) or not (
        1 <= int(digits) <= 1000
    ):
        raise ApiError(400, f"limit: expected a whole number 1..1000, got {limit_text[:100]!r}")
    return int(digits)


def report_zone_of(request: web.Request) -> tzinfo:
    """The time zone a date alone means in this request (``attribution.timezone``, as the last
    reload found it when the report endpoints are there)."""
    from gateway.reportstate import REPORTING_KEY  # the report engine is not admin.py's to load

    live = request.app.get(REPORTING_KEY)
    return live.zone if live is not None else request.app[SETTINGS_KEY].report_zone


def span(
    q: Mapping[str, str],
    zone: tzinfo,
    names: tuple[str, str] = ("since", "until"),
    ahead: timedelta = timedelta(0),
) -> tuple[str | None, str | None]:
    """Optional ``since`` and ``until`` of a listing or a report, each in range and in order
    (``parse_time``'s canonical UTC text sorts in time order), and a ``since`` without ``until``
    before now: after now the answer could only be empty, which reads as "none" (until
    2026-12-07 a listing answered such an empty page, and ``/api/fraud`` no groups). A problem
    names them as ``names`` spell them (``gateway report --fraud``: ``--since``). ``ahead``: how
    far past now a row's time may be (a signed conversion's, ``webhooks.tolerance_seconds``): a
    poller that asks from the newest time it saw is not refused while such a row is the newest."""
    since = parse_time(names[0], q["since"], zone) if "since" in q else None
    until = parse_time(names[1], q["until"], zone) if "until" in q else None
    if since is not None and until is not None:
        in_order(since, until, names)
    elif since is not None:
        in_order(since, iso(datetime.now(UTC) + ahead), names, until_now=True)
    return since, until


def _filter(name: str, value: str, recorded: str = "touchpoints", most: int | None = None) -> str:
    """A listing's exact filter as the store compares it, or a 400 for a value none of the
    ``recorded`` could hold (recorded values are printable, trimmed, not empty and, with
    ``most``, at most that long; a visitor_key is 32 hex digits), rather than an empty page
    that reads as "none"."""
    if name == "visitor_key":
        if not _VISITOR_KEY.fullmatch(value.lower()):
            raise ApiError(400, f"visitor_key: expected 32 hex digits, got {value[:100]!r}")
        return value.lower()
    value = as_typed(value)  # as a value is recorded: a pasted name's no-break space is a space
    if (
        not value
        or value != value.strip()
        or not printable_name(value)
        or (most is not None and len(value) > most)
    ):
        length = f"1..{most} printable characters" if most is not None else "printable"
        raise ApiError(
            400,
            f"{name}: expected a value as {recorded} record it ({length}, no spaces around it),"
            f" got {value[:100]!r}; leave {name} out for every one",
        )
    return value.casefold() if name in ("source", "medium") else value


def _touchpoint_query(q: Mapping[str, str], zone: tzinfo, verdict: str | None = None) -> TouchpointQuery:
    """The touchpoint filters of a listing (``/api/touchpoints``, ``/api/review``)."""
    limit, cursor, newest, stored = _ordered_page(q, None if verdict else "touchpoints")
    since, until = span(q, zone)
    return TouchpointQuery(
        since=since,
        until=until,
        equals={k: _filter(k, q[k]) for k in TOUCHPOINT_FILTERS if k in q},
        cursor=cursor,
        limit=limit,
        verdict=verdict,
        newest_first=newest,
        stored=stored,
    )


def wants_bom(q: Mapping[str, str], fmt: str) -> bool:
    """``bom=true``: a CSV download starts with a byte order mark, so that Excel, opening it by a
    double click, reads it as UTF-8 (not the legacy code page: ``café`` as ``cafÃ©``). Off by
    default: a program reading plain UTF-8 would take the mark for part of the first column's
    name. Any other value, or the mark with another format than ``fmt = "csv"``, is a 400."""
    bom = q.get("bom", "false")
    if bom not in ("true", "false"):
        raise ApiError(400, f"bom: expected true or false, got {bom[:100]!r}")
    if bom == "true" and fmt != "csv":
        raise ApiError(400, f"bom: applies to a CSV download, not {fmt} (format=csv)")
    return bom == "true"


def csv_delimiter(q: Mapping[str, str], fmt: str) -> str:
    """``delimiter=comma|semicolon|tab``: the character between a CSV download's cells. Excel
    opening a CSV by a double click splits it at the system's list separator, which is ``;``
    where the decimal mark is a comma (German, French, Dutch, Italian, Spanish): a comma-separated
    file there is one column. Numbers keep their decimal point whichever is chosen. Any other
    value, or another than ``comma`` with another format than ``fmt = "csv"``, is a 400 (as
    ``bom``)."""
    name = q.get("delimiter", "comma")
    if name not in DELIMITERS:
        raise ApiError(400, f"delimiter: expected one of {', '.join(DELIMITERS)}, got {name[:100]!r}")
    if name != "comma" and fmt != "csv":
        raise ApiError(400, f"delimiter: applies to a CSV download, not {fmt} (format=csv)")
    return DELIMITERS[name]


def asked_format(request: web.Request) -> str:
    """``format=`` (json, csv, ndjson: a 400 naming them otherwise) or, without it, the one the
    ``Accept`` header prefers: the reports' and the listings' alike."""
    given = request.query.get("format")
    if given is None:
        return accepted_format(", ".join(request.headers.getall("Accept", ())))
    if given not in FORMATS:
        raise ApiError(400, f"format: expected one of {', '.join(FORMATS)}, got {given[:100]!r}")
    return given


def _download(request: web.Request) -> tuple[str, bool, str]:
    """A listing's ``format`` (``json``: a page; ``csv``, ``ndjson``: every row, a download),
    from the query, else from the ``Accept`` header as the reports take it (until 2026-12-05
    ``Accept: text/csv`` got a JSON page); ``bom`` (``wants_bom``) and CSV delimiter
    (``csv_delimiter``)."""
    q = request.query
    fmt = asked_format(request)
    if fmt != "json" and "limit" in q:
        raise ApiError(
            400, f"limit: a {fmt} download holds every row of the filters; page with limit in JSON"
        )
    return fmt, wants_bom(q, fmt), csv_delimiter(q, fmt)


def _page_of(
    request: web.Request, items: list[dict[str, Any]], next_cursor: str | None, newest: bool
) -> web.Response:
    """A listing's JSON page; chosen by ``Accept`` when the query names no ``format``, which a
    cache then keys on (``Vary``), as a download of the same URL may be the answer. The next
    cursor of a newest-first page is marked so (``_ordered_page``)."""
    answer = ok({"items": items, "next_cursor": _marked(next_cursor, newest)})
    answer.headers.update(vary(request.query))
    return answer


def _marked(next_cursor: str | None, newest: bool) -> str | None:
    """A listing page's next cursor as the API gives it: a newest-first page's marked so
    (``_ordered_page``)."""
    return NEWEST_CURSOR + next_cursor if newest and next_cursor is not None else next_cursor


async def touchpoints(request: web.Request) -> web.StreamResponse:
    only_params(
        request,
        {"since", "until", "cursor", "limit", "order", "format", "bom", "delimiter", *TOUCHPOINT_FILTERS},
    )
    return await _touchpoint_listing(request, "touchpoints")


async def _touchpoint_listing(
    request: web.Request, kind: str, verdict: str | None = None
) -> web.StreamResponse:
    """A page of touchpoints (``/api/touchpoints``, the review queue's of one ``verdict``), or
    with ``format=csv|ndjson`` every one of the period, downloaded as ``kind``-….csv."""
    q = request.query
    fmt, bom, delimiter = _download(request)
    query = _touchpoint_query(q, report_zone_of(request), verdict)
    _feed_source(request, query.stored)
    reader = request.app[READER_KEY]
    if fmt != "json":
        head = await reader.feed_head("touchpoints") if query.stored else None
        if head is not None:
            query = replace(query, upto=head)

        async def page(cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
            return await reader.touchpoints(replace(query, cursor=cursor, limit=listing_export.EXPORT_PAGE))

        zone = report_zone_of(request)
        name = listing_export.file_name(
            kind,
            query.since,
            query.until,
            fmt,
            zone,
            query.equals,
            delimiter,
            query.newest_first,
            query.stored,
        )
        return await listing_export.download(
            request,
            "touchpoints",
            fmt,
            bom,
            name,
            _stored_page(page),
            query.cursor,
            delimiter=delimiter,
            next_cursor=head.text() if head is not None else None,
        )
    items, next_cursor = await _listed(reader.touchpoints(query))
    return _page_of(request, items, next_cursor, query.newest_first)


async def conversions(request: web.Request) -> web.StreamResponse:
    """Conversions in time order (oldest or newest first), filtered by name, rule or origin
    exactly, cursor-paginated; or every one of them as a CSV or NDJSON download."""
    q = request.query
    only_params(
        request,
        {"since", "until", "cursor", "limit", "order", "format", "bom", "delimiter", *CONVERSION_FILTERS},
    )
    fmt, bom, delimiter = _download(request)
    limit, cursor, newest, stored = _ordered_page(q, "conversions")
    _feed_source(request, stored)
    live = request.app.get(LIVE_KEY)
    webhooks = (live.current if live is not None else request.app[SETTINGS_KEY]).options.webhooks
    since, until = span(q, report_zone_of(request), ahead=timedelta(seconds=webhooks.tolerance_seconds))
    # Recorded trimmed as touchpoints' are (a [[conversions]] rule's name is refused with spaces
    # around it, a webhook's name trimmed; senders' names are tokens): " signup" found none.
    equals = {k: _filter(k, q[k], "conversions", 200) for k in CONVERSION_FILTERS if k in q}
    origin = equals.get("origin")
    if origin is not None and origin not in CONVERSION_ORIGINS:  # origin=webhooks found none
        raise ApiError(
            400,
            f"origin: expected one of {', '.join(CONVERSION_ORIGINS)}, got {origin!r};"
            " leave origin out for every one",
        )
    query = ConversionQuery(since, until, equals, cursor, limit, newest, stored)
    reader = request.app[READER_KEY]
    if fmt != "json":
        head = await reader.feed_head("conversions") if stored else None
        if head is not None:
            query = replace(query, upto=head)

        async def page(after: str | None) -> tuple[list[dict[str, Any]], str | None]:
            return await reader.conversions(replace(query, cursor=after, limit=listing_export.EXPORT_PAGE))

        zone = report_zone_of(request)
        name = listing_export.file_name(
            "conversions", since, until, fmt, zone, equals, delimiter, newest, stored
        )
        return await listing_export.download(
            request,
            "conversions",
            fmt,
            bom,
            name,
            _stored_page(page),
            cursor,
            delimiter=delimiter,
            next_cursor=head.text() if head is not None else None,
        )
    items, next_cursor = await _listed(reader.conversions(query))
    return _page_of(request, items, next_cursor, newest)


def _visitor_keys(request: web.Request, given: str) -> list[str] | None:
    """The keys a visitor looked up as ``given`` may be stored under (None: ``given`` is no
    visitor_key, visitor ID or cookie value)."""
    return request.app[KEYS_KEY].named_visitor_keys(given) or None


def _visitor_keys_of(request: web.Request) -> tuple[str, list[str]]:
    """The path's visitor ID, trimmed (as every intake trims one: none is stored with spaces
    around it), and its ``_visitor_keys``; or a 400 saying what it takes and what it got (its
    length: a 2,001-character one was told what is expected alone)."""
    given = request.match_info["visitor_id"]
    keys = _visitor_keys(request, given.strip())
    if keys is None:
        raise ApiError(400, f"visitor_id: {visitor_id_refused(given)}")
    return given.strip(), keys


async def _visitor_journey(request: web.Request, keys: list[str]) -> dict[str, Any] | None:
    for key in keys:
        journey = await request.app[READER_KEY].visitor(key)
        if journey is not None:
            return journey
    return None


async def visitor(request: web.Request) -> web.Response:
    """Accepts the stored visitor_key, the raw visitor ID, or the whole cookie value.

    A raw ID is the cookie's, or any a signed event or an import named (a Segment
    ``anonymousId``, a UUID): not only the gateway's own 22 characters. 32 hex digits are read
    as a visitor_key first, then as a raw ID (a UUID written without dashes). Not found, the
    answer says when the same text is a user's ID with a journey (looked up as the wrong kind)."""
    only_params(request, set())
    # Trimmed, as every intake trims a visitor ID (none is stored with spaces around it): a cookie
    # value pasted with a space before it was a 404, "no touchpoints recorded for this visitor".
    given, keys = _visitor_keys_of(request)
    journey = await _visitor_journey(request, keys)
    if journey is not None:
        return ok(journey)
    erased = await request.app[READER_KEY].erased_at(keys)
    if erased is not None:  # not "never seen": an operator checks that an erasure happened
        raise ApiError(404, f"no touchpoints recorded for this visitor: erased on {erased}")
    user_id, problem = operator_user_id(given)
    # Every key the user lookup would find it under: an e-mail written with capitals, under an
    # identity rule that lower-cases, was told as never seen (the lookup of a user finds it).
    lowercases = request.app[LIVE_KEY].current.lowercases_user_ids
    if problem is None and await request.app[READER_KEY].user(
        request.app[KEYS_KEY].user_keys(user_id, lowercases)
    ):
        raise ApiError(
            404,
            "no touchpoints recorded for this visitor; a user of this ID has a journey: look it up as a user",
        )
    stored = named_user_key(given)
    if stored is not None and await request.app[READER_KEY].user([stored]):
        raise ApiError(
            404,
            "no touchpoints recorded for this visitor; this is the user_key of a user with a journey:"
            " look it up as a user",
        )
    # A page's address or cookies not of ours, pasted: told as never seen, they read as a
    # visitor ID whose visitor never came (until 2026-12-07).
    unlike = unlike_a_visitor(given, request.app[SETTINGS_KEY].options.identity.cookie_name)
    if unlike is not None:
        raise ApiError(400, f"visitor_id: {unlike}; no visitor has it as their ID")
    raise ApiError(404, "no touchpoints recorded for this visitor")


def _user_id(request: web.Request) -> str:
    """The user ID from the path, trimmed; a 400 saying what is wrong with it (never echoing it)."""
    user_id, problem = operator_user_id(request.match_info["user_id"])
    if problem is not None:
        raise ApiError(400, f"user_id: {problem}")
    return user_id


async def _named_user(
    request: web.Request, find: Callable[[list[str]], Awaitable[T | None]]
) -> tuple[NamedUser, T | None]:
    """The user the path names, as the lookup, an erasure and a sink's re-send read it
    (``gateway.usernames``: a user key some user has first, then the raw ID, keyed under every
    mode: this mode's first, then an earlier ``user_id_storage``'s and, when an identity rule
    lower-cases, the lower-cased ID's)."""
    lowercases = request.app[LIVE_KEY].current.lowercases_user_ids  # identity rules reload
    return await named_user(_user_id(request), request.app[KEYS_KEY], lowercases, find)


async def user(request: web.Request) -> web.Response:
    """A user's journey across all their visitors (devices), and their conversions. Not found,
    the answer says when the same text is a visitor's with touchpoints (the wrong kind).

    Also by the user key a journey or the conversions download shows (``named_user_key``): a
    text of a key's shape is read as a user key first, then as a raw ID (32 hex digits may be
    either: a UUID without dashes), as the visitor lookup reads a ``visitor_key``;
    ``looked_up_as`` says which found it."""
    only_params(request, set())
    reader = request.app[READER_KEY]
    who, journey = await _named_user(request, reader.user)
    if journey is not None:  # found by the key alone
        return ok({**journey, "looked_up_as": who.read_as})
    user_id, keys = _user_id(request), who.keys
    journey = await reader.user(keys)  # what an erasure would erase
    if journey is not None:
        return ok({**journey, "looked_up_as": "user_id"})
    stored = named_user_key(user_id)
    erased = await reader.erased_at(keys if stored is None else [*keys, stored])
    if erased is not None:  # not "never seen": an operator checks that an erasure happened
        raise ApiError(404, f"nothing recorded for this user: erased on {erased}")
    missing = "nothing recorded for this user (no identity binding, no conversion)"
    visitor_keys = _visitor_keys(request, user_id)
    if visitor_keys and await _visitor_journey(request, visitor_keys) is not None:
        raise ApiError(404, f"{missing}; a visitor of this ID has a journey: look it up as a visitor")
    settings = request.app[SETTINGS_KEY]
    named = await bad_events_naming(
        settings.store_path, user_id, body_key=body_key(settings.secret), keys=request.app[KEYS_KEY]
    )
    if named:  # a rights request must not read "nothing" while a refused payload keeps them
        it = "it" if named == 1 else "them"
        raise ApiError(
            404,
            f"{missing}, but {named} kept bad event{'s' if named > 1 else ''} name{'' if named > 1 else 's'}"
            f" this ID (GET /api/bad-events lists {it}; an erasure deletes {it})",
        )
    raise ApiError(404, missing)


async def erase(request: web.Request) -> web.Response:
    """Erase the user, their visitors' touchpoints and their conversions (GDPR Art. 17): by the
    raw user ID, or by a user key as the lookup reads one (``_named_user``). ``erased_as`` says
    which; a hashed key gives no raw ID back, so ``raw_id_searched`` is false and ``note`` says
    what of the kept bad events that leaves (``erasure_note``)."""
    only_params(request, set())
    settings = request.app[SETTINGS_KEY]

    async def known(keys: list[str]) -> bool | None:
        # Rows or erasures wherever the erasure acts: this store, and with [central] the central
        # store and the mirror (``user_recorded``; until 2026-12-08 the central store only under
        # admin.source = "central", so under "local" the key of a user another node recorded
        # was erased as a raw ID no one has).
        return (await user_recorded(settings, keys, _central_reader(request))).known or None

    named, _ = await _named_user(request, known)
    now = datetime.now(UTC)
    erasure = await erase_user(
        settings.store_path,
        named.keys[0],
        named.user_id,
        body_key=body_key(settings.secret),
        event_id=request.app[IDS_KEY](int(now.timestamp() * 1000)),
        ts=iso(now),
        node=settings.node,
        also=named.keys[1:],
        keys=request.app[KEYS_KEY],
    )
    # Not the key: under user_id_storage = "plain" it is the raw ID, which the log must not keep.
    log.info("erased a user (erasure %s, as a %s): %s", erasure.id, named.read_as, erasure.counts)
    kept = await kept_bad_events(settings.store_path)
    answer: dict[str, Any] = {
        "user_key": named.keys[0],
        "erased_as": named.read_as,
        "erased": erasure.counts,
        "visitors": len(erasure.visitors),
        "raw_id_searched": named.user_id is not None,
        "bad_events_kept": kept,
        # Where else the user's rows are (the central store, the sinks' destinations), as
        # ``gateway erase`` says it: until 2026-12-07 the answer held the counts alone.
        "elsewhere": erasure_reach(settings, user_key=named.keys[0], keys=request.app[KEYS_KEY]),
    }
    note = erasure_note(named, erasure, kept, api=True)
    return ok(answer if note is None else {**answer, "note": note})


async def _visitor_known(request: web.Request, keys: list[str]) -> bool:
    """Whether anything is recorded of the visitor ``keys`` name where its erasure acts: this
    store (what its erasure would take, a binding, an erasure of it), and with ``[central]``
    configured the central store and the mirror, which the erasure reaches through the sync
    (``visitor_recorded``: until 2026-12-08 the central store only under ``admin.source =
    "central"``, where the lookup reads)."""
    # An erasure of it is among what each store is asked (this one's, the central's
    # ``erased_keys``): the lookup reader's ``erased_at`` would ask the same again.
    settings = request.app[SETTINGS_KEY]
    recorded = await visitor_recorded(settings, keys, request.app[KEYS_KEY], _central_reader(request))
    return recorded.known


def _central_reader(request: web.Request) -> CentralReader | None:
    """The lookup's reader when it reads the central store (``admin.source = "central"``), to ask
    there rather than open another connection; None otherwise."""
    reader = request.app[READER_KEY]
    if request.app[SETTINGS_KEY].options.admin.source != "central":
        return None
    from storage.central_queries import CentralReader  # asyncpg: the postgres extra

    return reader if isinstance(reader, CentralReader) else None


async def visitor_erase(request: web.Request) -> web.Response:
    """Erase a visitor no user is erased with (GDPR Art. 17: an anonymous visitor's request, by
    the cookie value): its touchpoints, the conversions recorded on it, the kept bad events
    naming it, under every key ``GET /api/visitors/{id}`` reads it by. Its bindings to users
    stay (theirs: their erasure takes them); the answer counts those users."""
    only_params(request, set())
    given, keys = _visitor_keys_of(request)
    settings = request.app[SETTINGS_KEY]
    # A page's address or cookies not of ours, pasted: erased as a visitor ID no one has, every
    # count 0, an erasure recorded (until 2026-12-07), the person read as erased. Refused as the
    # lookup refuses it, unless something is recorded under it (a sender's ID may be any text).
    unlike = unlike_a_visitor(given, settings.options.identity.cookie_name)
    if unlike is not None and not await _visitor_known(request, keys):
        raise ApiError(400, f"visitor_id: {unlike}; no visitor has it as their ID")
    now = datetime.now(UTC)
    erasure, bound = await erase_visitor(
        settings.store_path,
        keys,
        body_key=body_key(settings.secret),
        keys=request.app[KEYS_KEY],
        event_id=request.app[IDS_KEY](int(now.timestamp() * 1000)),
        ts=iso(now),
        node=settings.node,
    )
    log.info("erased a visitor (erasure %s): %s", erasure.id, erasure.counts)
    return ok(
        {
            "visitor_keys": erasure.visitors,
            "erased": erasure.counts,
            "bound_users": bound,
            "elsewhere": erasure_reach(settings, "visitor", visitor_keys=erasure.visitors),
        }
    )


async def bad_events(request: web.Request) -> web.StreamResponse:
    """Signed events that failed validation, with their reason (see ``gateway replay-bad``),
    oldest first (``order=newest``: newest first, what was just refused on the first page); or
    with ``format=csv|ndjson`` every one of the filters, downloaded as ``bad-events-….csv``."""
    q = request.query
    only_params(request, {"sender", "pending", "cursor", "limit", "order", "format", "bom", "delimiter"})
    fmt, bom, delimiter = _download(request)
    limit, cursor, newest, _ = _ordered_page(q)
    pending = q.get("pending", "false")
    if pending not in ("true", "false"):
        raise ApiError(400, f"pending: expected true or false, got {pending[:100]!r}")
    sender = q.get("sender")
    if sender is not None and not NAME.fullmatch(sender):
        # No kept event can be a sender's of another name: an empty page would read as "none"
        # (sender=Billing, sender=%20billing), as the other listings' filters refuse such values.
        raise ApiError(
            400,
            f"sender: expected a [[sources]] name ({NAME_RULE}), got {sender[:100]!r};"
            " leave sender out for every one",
        )
    reader = request.app[READER_KEY]
    key = body_key(request.app[SETTINGS_KEY].secret)

    async def page(
        after: str | None, size: int, max_bytes: int | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        items, next_cursor = await reader.bad_events(
            sender, pending == "true", after, size, newest, max_bytes
        )
        for item in items:  # sealed at rest; the admin sees what was received, and why it was refused
            for name in ("body", "reason"):
                # An empty body is one (a sender's empty POST), not a seal it cannot open.
                opened = unseal(key, item[name])
                item[name] = "(sealed under another identity.secret)" if opened is None else opened
        return items, next_cursor

    if fmt != "json":
        # Named as the other listings' downloads, after the filters: bad-events-crm-pending.csv.
        words = {"sender": sender} if sender is not None else {}
        if pending == "true":
            words["pending"] = "pending"
        name = listing_export.file_name(
            "bad-events", None, None, fmt, report_zone_of(request), words, delimiter, newest
        )
        return await listing_export.download(
            request,
            "bad-events",
            fmt,
            bom,
            name,
            lambda after: page(after, listing_export.EXPORT_PAGE, listing_export.EXPORT_BYTES),
            cursor,
            delimiter=delimiter,
        )
    # A page's kept bodies bounded as a download's step (each up to webhooks.bad_body_limit):
    # fewer items than ``limit`` then, and the cursor on to the rest.
    items, next_cursor = await page(cursor, limit, listing_export.EXPORT_BYTES)
    return _page_of(request, items, next_cursor, newest)


async def sink_send(request: web.Request) -> web.Response:
    """Re-send one user's identify and track calls through one sink, now (for debugging)."""
    only_params(request, set())
    name = request.match_info["name"]
    sinks = request.app[SINKS_KEY]
    if name not in sinks.sinks:
        known = ", ".join(sinks.sinks) or "none configured"
        raise ApiError(404, f"no sink named {name!r} (sinks: {known})")
    settings = request.app[SETTINGS_KEY]

    async def held(user_keys: list[str]) -> bool | None:
        # The store the sinks read: a user key its bindings (or an erasure) name.
        return await user_known(settings.store_path, user_keys) or None

    # The user_key too, which a sink sends as userId under "hash": what the destination shows.
    named, _ = await _named_user(request, held)
    keys = named.keys
    if name in sinks.made_up:
        i, variable = sinks.made_up[name]
        raise ApiError(
            409, f"sinks[{i}] ({name}): its secret was made up by --dev, so it sends nothing; set {variable}"
        )
    try:
        sent = await sinks.resend_user(keys, name)
    except SinkError as err:
        raise ApiError(502, f"sink {name}: the destination did not accept the calls: {err}") from None
    except NothingRecorded as err:
        raise ApiError(404, str(err)) from None
    if not sent[name].sent:  # bindings there are (else NothingRecorded): each message too large to send
        raise ApiError(
            404,
            f"nothing sent: each of this user's messages is over sinks[].max_message_bytes (counted"
            f' in gateway_sink_messages_total{{outcome="too_large",sink="{name}"}})',
        )
    # The key of the user it sent (as the lookup names them), not the typed text's first form.
    return ok({"sink": name, "user_key": sent[name].user_key, "sent": sent[name].sent})


_Body = TypeVar("_Body", bound=msgspec.Struct)


class VerdictBody(msgspec.Struct, forbid_unknown_fields=True):
    verdict: Literal["allow", "review", "block", "bot"]
    analyst: str
    reason: str


_JSON_WORDS = {**TYPE_WORDS, "object": "an object", "null": "null"}
"""msgspec's type names, as JSON names its values (``expected bool, got str`` read as Python)."""
_EXPECTED = re.compile(r"Expected `([^`]+)`, got `([^`]+)`")
_ENUM = re.compile(r"Invalid enum value (.+)")


def _choices(kind: type[msgspec.Struct], name: str) -> list[str]:
    """The values a field of ``kind`` takes when its type is a ``Literal``, in their order; else none."""
    hint = get_type_hints(kind).get(name)
    return [str(value) for value in get_args(hint)] if get_origin(hint) is Literal else []


def _decode_body(raw: bytes, kind: type[_Body], example: str) -> _Body:
    """A JSON body as ``kind``, or a 400 naming the field (or the body) and what was wrong. A
    UTF-8 byte order mark before it is read past, as RFC 8259 §8.1 lets a reader: Windows tools
    write one (PowerShell 5's ``-Encoding utf8``, Notepad) and ``curl --data @file`` sends it."""
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    elif raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # Windows PowerShell 5's Out-File
        raise ApiError(
            400, "body: is UTF-16 (it starts with a UTF-16 byte order mark); send the JSON as UTF-8"
        )
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as err:  # "Invalid enum value 'x' - at `$.verdict`" → "verdict: …"
        message, _, where = str(err).partition(" - at `$.")
        name = where.rstrip("`") or "body"
        if expected := _EXPECTED.fullmatch(message):
            wanted = " or ".join(_JSON_WORDS.get(t, t) for t in expected.group(1).split(" | "))
            message = f"expected {wanted}, got {_JSON_WORDS.get(expected.group(2), expected.group(2))}"
        elif (enum := _ENUM.fullmatch(message)) and (choices := _choices(kind, name)):
            message = f"expected one of {', '.join(choices)}, got {enum.group(1)}"
        raise ApiError(400, f"{name}: {message[:1].lower()}{message[1:]}".replace("`", "")) from None
    except msgspec.DecodeError:
        raise ApiError(400, _lone_surrogate(raw, kind) or f"body: expected JSON like {example}") from None


_SURROGATE = re.compile("[\ud800-\udfff]")


def _lone_surrogate(raw: bytes, kind: type[msgspec.Struct]) -> str | None:
    """What is wrong with a body that is JSON by its grammar but holds a lone surrogate escape
    (``"\\ud83d"``: half of a pair), which msgspec refuses as malformed, naming the field of
    ``kind`` that holds it; None for any other body. The stdlib's decoder takes such escapes;
    it runs only on a body already refused."""
    try:
        fields = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON at all, or nested past the stack
        return None
    if not isinstance(fields, dict):
        return None
    for name in kind.__struct_fields__:
        value = fields.get(name)
        found = _SURROGATE.search(value) if isinstance(value, str) else None
        if found is not None:
            return (
                f"{name}: holds \\u{ord(found.group()):04x}, half of a UTF-16 surrogate pair alone,"
                " which is no character; send the text as UTF-8 (or the pair whole: \\ud83d\\ude00)"
            )
    return None


AIOHTTP_DECODES = frozenset(
    {"", "identity", "gzip", "deflate"}
    | ({"br"} if compression_utils.HAS_BROTLI else set())
    | ({"zstd"} if compression_utils.HAS_ZSTD else set())
)
"""The ``Content-Encoding`` values aiohttp's server decodes here (one coding each; ``br`` and
``zstd`` only with their optional libraries installed): any other, or a list of several, would
reach a handler still encoded."""
_DECODED_NAMES = ", ".join(sorted(AIOHTTP_DECODES - {"", "identity"}))


_JSON_CHARSETS = frozenset({"utf-8", "ascii"})
"""The charsets a JSON body may be labelled with (``codecs`` names): UTF-8, as RFC 8259 §8.1
has JSON sent, and ASCII, a part of it."""
_JSON_TYPE = "application/json (curl: -H 'Content-Type: application/json')"
_SEND_JSON = f"send the body as JSON with Content-Type: {_JSON_TYPE}"
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
"""A quoted parameter value (RFC 9110 §5.6.4), which may hold a comma."""


def media_types(label: str) -> list[str]:
    """The media types a ``Content-Type`` value holds, each with its parameters: one, or, where
    a proxy joined two lines into one with commas (RFC 9110 §5.3), several (a comma inside a
    quoted parameter value separates nothing); empty ones (``a/b,``) left out."""
    unquoted = _QUOTED.sub(lambda m: "\x00" * len(m[0]), label)
    types, start = [], 0
    for at, char in enumerate(unquoted):
        if char == ",":
            types.append(label[start:at])
            start = at + 1
    types.append(label[start:])
    return [kind.strip() for kind in types if kind.strip()]


def is_json_type(request: web.Request) -> bool:
    """Whether the request's ``Content-Type`` is JSON's: ``application/json`` or a
    ``application/*+json`` (RFC 6839 §3.1), in any case, with or without parameters."""
    kind = request.content_type  # lowered; aiohttp's application/octet-stream when there is none
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def json_content_type(request: web.Request) -> None:
    """A 415 for a body labelled as anything but JSON (a form: ``curl -d`` without ``-H``; text;
    no label at all), naming the type expected, before the body is read; and for JSON labelled
    with a charset other than UTF-8. A request with no body and no label goes on to the
    body's own 400 (``body: expected JSON like …``), which says more."""
    label = request.headers.get(hdrs.CONTENT_TYPE)
    if label is None and not request.body_exists:
        return
    types = media_types(label or "")
    if len(types) > 1:
        # Two lines joined into one (RFC 9110 §5.3; two lines the parser refuses itself):
        # aiohttp reads the first, so a JSON body labelled "application/json, text/plain" was
        # read as JSON and one labelled the other way round was said to be text.
        shown = ", ".join(repr(kind[:100]) for kind in types[:4])
        raise ApiError(400, f"Content-Type: holds {len(types)} types ({shown}); send it once: {_JSON_TYPE}")
    if label is None or not is_json_type(request):
        said = "none" if label is None else repr(label[:100])
        raise ApiError(415, f"Content-Type: expected application/json, got {said}; {_SEND_JSON}")
    charset = request.charset
    if charset is not None:
        try:
            name = codecs.lookup(charset).name
        except LookupError:
            name = charset
        if name not in _JSON_CHARSETS:
            raise ApiError(
                415,
                f"Content-Type: charset={charset[:40]!r} is not UTF-8: the admin API reads JSON as"
                " UTF-8 (RFC 8259 §8.1); send the body as UTF-8, labelled application/json",
            )


async def json_body(request: web.Request, kind: type[_Body], example: str) -> _Body:
    """The request's JSON body as ``kind``: its ``Content-Type`` checked first (415), then read
    (``read_body``) and decoded (``_decode_body``: a 400 naming the field)."""
    json_content_type(request)
    return _decode_body(await read_body(request), kind, example)


async def read_body(request: web.Request) -> bytes:
    """The request body, decoded from its ``Content-Encoding``; one that does not decode
    (``gzip`` over bytes that are not gzip, say) answers 400 rather than failing the handler,
    and a coding aiohttp does not decode (RFC 9110 §15.5.16) 415, naming those it does.
    Not before ``request.post()``: a multipart form is parsed from the stream this reads up."""
    coding = request.headers.get(hdrs.CONTENT_ENCODING, "").strip().lower()
    if coding not in AIOHTTP_DECODES:
        raise ApiError(
            415,
            f"Content-Encoding: {coding[:40]!r} is not one this API decodes ({_DECODED_NAMES})",
        )
    async with body_deadline(request):
        try:
            return await request.read()
        except BrokenFraming as err:  # before its base class: the framing, not the coding
            raise ApiError(400, broken_framing(err)) from None
        except web.RequestPayloadError:
            raise ApiError(400, "body: cannot decode its Content-Encoding") from None


@contextlib.asynccontextmanager
async def body_deadline(request: web.Request) -> AsyncIterator[None]:
    """Reading a request body inside: one that has not arrived whole within
    ``admin.body_timeout`` answers 408 (aiohttp sets no limit; a client that stalls held the
    connection and its handler for ever). One whose chunked framing breaks after the headers
    fails at once (``gateway.protocol_errors.BrokenFraming``)."""
    limit = request.app[SETTINGS_KEY].options.admin.body_timeout
    try:
        async with asyncio.timeout(limit):
            yield
    except TimeoutError:  # answered; aiohttp then closes the connection, the body unread
        raise ApiError(408, f"body: did not arrive within admin.body_timeout ({limit:g} s)") from None


def _text(name: str, value: str, most: int) -> str:
    value = value.strip()
    if not value or len(value) > most or not value.isprintable():
        raise ApiError(400, f"{name}: expected 1..{most} printable characters")
    return value


async def review(request: web.Request) -> web.StreamResponse:
    """The review queue: touchpoints whose effective verdict is ``review`` (or ``block``), oldest
    first (``order=newest``: newest first); a page, or every one of the period as a download
    (``review-….csv``, ``review-block-….csv``)."""
    q = request.query
    only_params(
        request,
        {
            "since",
            "until",
            "cursor",
            "limit",
            "order",
            "verdict",
            "format",
            "bom",
            "delimiter",
            *TOUCHPOINT_FILTERS,
        },
    )
    verdict = q.get("verdict", "review")
    if verdict not in ("review", "block"):
        raise ApiError(400, f"verdict: expected review or block, got {verdict[:100]!r}")
    return await _touchpoint_listing(request, "review" if verdict == "review" else "review-block", verdict)


def _touchpoint_id(request: web.Request) -> str:
    touchpoint_id = request.match_info["touchpoint_id"].lower()
    if not _UUID.fullmatch(touchpoint_id):
        raise ApiError(400, "touchpoint_id: expected a touchpoint id (a UUID)")
    return touchpoint_id


async def _own_touchpoint(request: web.Request, touchpoint_id: str) -> dict[str, Any]:
    """The touchpoint as this node's store holds it, whose verdict is decided here; a 404, or
    a 409 naming the node that recorded it."""
    reader = request.app[READER_KEY]
    current = await reader.touchpoint(touchpoint_id)
    if current is None:
        # Listed from the central store (admin.source = "central") but recorded by another
        # node: an override here would reach the central listings, never that node's store,
        # whose reports (its payouts) count the click. Only that node can take it out.
        node = await reader.recorded_elsewhere(touchpoint_id)
        if node is not None and node == request.app[SETTINGS_KEY].node:
            # Its own, still listed centrally but gone from this store (its retention ran
            # first, or the store was replaced): no node holds it to override.
            raise ApiError(
                404,
                f"touchpoint {touchpoint_id} is no longer in this node's store (the central store"
                " still lists it): there is nothing here to override",
            )
        if node is not None:
            raise ApiError(
                409,
                f"touchpoint {touchpoint_id} was recorded by node {node!r}: the payout and "
                f"attribution reports that count it read that node's store, which an override made "
                f"here would not reach; override it through the admin API of node {node!r}",
            )
        raise ApiError(404, f"no touchpoint {touchpoint_id}")
    return current


async def _verdict_history(request: web.Request, touchpoint_id: str) -> web.Response:
    reader = request.app[READER_KEY]
    return ok(
        {
            "touchpoint": await reader.touchpoint(touchpoint_id),
            "changes": await reader.verdict_changes(touchpoint_id),
        }
    )


async def verdict(request: web.Request) -> web.Response:
    """A touchpoint's effective verdict and every change of it, oldest first: the re-scores,
    and each analyst's override with who and why (the audit trail, read without writing)."""
    only_params(request, set())
    touchpoint_id = _touchpoint_id(request)
    await _own_touchpoint(request, touchpoint_id)
    return await _verdict_history(request, touchpoint_id)


async def set_verdict(request: web.Request) -> web.Response:
    """An analyst overrides a touchpoint's verdict; who and why are kept (append-only)."""
    only_params(request, set())
    touchpoint_id = _touchpoint_id(request)
    body = await json_body(request, VerdictBody, '{"verdict": "allow", "analyst": "…", "reason": "…"}')
    analyst = _text("analyst", body.analyst, 100)
    reason = _text("reason", body.reason, 1000)
    current = await _own_touchpoint(request, touchpoint_id)
    return await _record_verdict(
        request,
        "override",
        touchpoint_id,
        (body.verdict, current["bot_score"], current["reasons"]),
        origin="analyst",
        note=reason,
        analyst=analyst,
    )


async def _record_verdict(
    request: web.Request,
    what: str,
    touchpoint_id: str,
    scored: tuple[str, int | None, list[str]],
    *,
    origin: str,
    note: str,
    analyst: str,
) -> web.Response:
    """Store an analyst's verdict change (``scored``: verdict, score, reasons) and answer the
    touchpoint's history; a 503 naming ``what`` was not stored when the store refuses it."""
    now = datetime.now(UTC)
    verdict, score, reasons = scored
    change = VerdictChange(
        id=request.app[IDS_KEY](int(now.timestamp() * 1000)),
        ts=iso(now),
        node=request.app[SETTINGS_KEY].node,
        touchpoint_id=touchpoint_id,
        verdict=verdict,
        bot_score=score,
        reasons=reasons,
        origin=origin,
        note=note,
        analyst=analyst,
    )
    try:  # withdrawn when not committed in time: "not stored" is true, and a retry records it once
        await request.app[STORE_KEY].write([change], withdraw=True)
    except Exception as err:
        raise StoreRefused(f"the {what} was not stored ({err}); try again") from None
    return await _verdict_history(request, touchpoint_id)


class WithdrawBody(msgspec.Struct, forbid_unknown_fields=True):
    analyst: str
    reason: str


async def clear_verdict(request: web.Request) -> web.Response:
    """An analyst withdraws the override in force (made by mistake, say): an ``analyst_cleared``
    change, with who and why, after which the verdict is the scoring's again — the latest
    re-score, else as stored — as if no override had been made, until another. Nothing is
    deleted: the override and its withdrawal stay in the history. No override in force: 409."""
    only_params(request, set())
    touchpoint_id = _touchpoint_id(request)
    body = await json_body(request, WithdrawBody, '{"analyst": "…", "reason": "…"}')
    analyst = _text("analyst", body.analyst, 100)
    reason = _text("reason", body.reason, 1000)
    current = await _own_touchpoint(request, touchpoint_id)
    if current["verdict_origin"] != "analyst":
        said = f"({current['verdict']})" if current["verdict"] is not None else "(none: not scored)"
        raise ApiError(
            409,
            f"touchpoint {touchpoint_id} has no analyst's override to withdraw: its verdict {said}"
            " is the scoring's",
        )
    try:
        scoring = await request.app[READER_KEY].scoring_verdict(touchpoint_id)
    except LookupError:  # gone since (retention, an erasure)
        raise ApiError(404, f"no touchpoint {touchpoint_id}") from None
    # What it goes back to, for the history; readers take the scoring's.
    return await _record_verdict(
        request, "withdrawal", touchpoint_id, scoring, origin="analyst_cleared", note=reason, analyst=analyst
    )


class CreatorBody(msgspec.Struct, forbid_unknown_fields=True):
    verified: bool
    analyst: str
    reason: str
    name: str | msgspec.UnsetType = msgspec.UNSET
    """Left out: the name the registry has is kept; ``""`` clears it."""


def _creator(creator: Creator) -> dict[str, Any]:
    return {
        "id": creator.id,
        "verified": creator.verified,
        "name": creator.name,
        "source": creator.source,
        "analyst": creator.analyst,
        "ts": creator.ts,
    }


async def creators(request: web.Request) -> web.Response:
    """The creator registry: ``[[creators]]`` with the standings set here on top."""
    only_params(request, set())
    return ok({"items": [_creator(c) for c in request.app[CREATORS_KEY].all()]})


async def set_creator(request: web.Request) -> web.Response:
    """Set a creator's standing (verified or not); kept append-only with who and why, and
    used by the bots addon from the next click on."""
    only_params(request, set())
    creator_id = request.match_info["creator_id"]
    # A click's creator ID longer than campaign.max_value_length is dropped, so a longer one here
    # could never match (until 2026-12-05 up to 200 were taken whatever the limit, and no more
    # under a larger one).
    longest = request.app[LIVE_KEY].current.options.campaign.max_value_length  # it reloads
    if not creator_id or len(creator_id) > longest or not printable_name(creator_id):
        raise ApiError(
            400,
            f"creator_id: expected 1..{longest} printable characters"
            " (campaign.max_value_length: a click's longer creator ID is dropped)",
        )
    if creator_id != creator_id.strip():  # clicks' creator IDs are trimmed: it could never match
        raise ApiError(400, "creator_id: no spaces before or after it (clicks' creator IDs are trimmed)")
    body = await json_body(request, CreatorBody, '{"verified": true, "analyst": "…", "reason": "…"}')
    analyst = _text("analyst", body.analyst, 100)
    reason = _text("reason", body.reason, 1000)
    registry = request.app[CREATORS_KEY]
    name = registry.name(creator_id) if body.name is msgspec.UNSET else body.name.strip()
    if len(name) > 200 or not printable_name(name):
        raise ApiError(400, "name: expected at most 200 printable characters")
    now = datetime.now(UTC)
    standing = CreatorStanding(
        id=request.app[IDS_KEY](int(now.timestamp() * 1000)),
        ts=iso(now),
        node=request.app[SETTINGS_KEY].node,
        creator_id=creator_id,
        verified=body.verified,
        name=name,
        analyst=analyst,
        note=reason,
    )
    try:  # as a verdict's: withdrawn when not committed in time
        await request.app[STORE_KEY].write([standing], withdraw=True)
    except Exception as err:
        raise StoreRefused(f"the standing was not stored ({err}); try again") from None
    creator = Creator(creator_id, body.verified, name, "api", analyst, standing.ts)
    registry.set(creator)
    return ok({"creator": _creator(creator)})


async def _unnamed(request: web.Request, response: web.StreamResponse) -> None:
    """Take out the ``Server: Python/… aiohttp/…`` header aiohttp adds to every answer (before
    this hook runs): versions to look known flaws up by, for anyone who reaches the listener.
    What aiohttp answers itself on this listener carries none either (``protocol_errors``)."""
    response.headers.popall(hdrs.SERVER, None)


def create_admin_app(
    settings: Settings,
    store: LocalStore,
    reader: Reader,
    metrics_: Metrics,
    keys: Keys,
    creators_: CreatorRegistry | None = None,
    sinks: SinkSet | None = None,
) -> web.Application:
    app = web.Application(
        middlewares=[
            compress_answers,
            envelope,
            known_host,
            bearer_auth,
            no_stray_body,
            writes_change_reports,
        ],
        client_max_size=MAX_BODY,
    )
    app[SETTINGS_KEY] = settings
    app[LIVE_KEY] = LiveSettings(settings)
    app[STORE_KEY] = store
    app[LOCK_PROBE_KEY] = LockProbe(store.path)
    app[STOPPING_KEY] = asyncio.Event()
    app[READER_KEY] = reader
    app[METRICS_KEY] = metrics_
    app[KEYS_KEY] = keys
    app[IDS_KEY] = Uuid7()
    registry = creators_ if creators_ is not None else CreatorRegistry(settings.options.creators)
    app[CREATORS_KEY] = registry
    app[SINKS_KEY] = sinks if sinks is not None else SinkSet(settings, metrics_, keys)
    admin = settings.options.admin
    app[LOGINS_KEY] = FailedLogins(
        admin.max_failed_logins,
        admin.failed_login_seconds,
        settings.trusted_networks,
        metrics_.admin_lockouts.inc,
        forwarded=settings.options.proxy.trusted_header == "forwarded",
    )

    async def standings() -> None:  # those set before this start
        registry.apply(await reader.creator_standings())

    async def reader_ctx(app: web.Application) -> Any:
        await reader.open(retry=standings)  # a store on a full disk: read once it has room
        if reader.opened:
            await standings()
        yield
        await reader.close()

    async def probe_ctx(app: web.Application) -> Any:
        await app[LOCK_PROBE_KEY].open()
        yield
        await app[LOCK_PROBE_KEY].close()

    app.cleanup_ctx.append(reader_ctx)
    app.cleanup_ctx.append(probe_ctx)
    app.on_response_prepare.append(_unnamed)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/openapi.json", openapi)
    app.router.add_get("/api/touchpoints", touchpoints)
    app.router.add_get("/api/conversions", conversions)
    app.router.add_get("/api/visitors/{visitor_id}", visitor)
    app.router.add_delete("/api/visitors/{visitor_id}", visitor_erase)
    app.router.add_get("/api/users/{user_id}", user)
    app.router.add_delete("/api/users/{user_id}", erase)
    app.router.add_get("/api/bad-events", bad_events)
    app.router.add_get("/api/review", review)
    app.router.add_get("/api/touchpoints/{touchpoint_id}/verdict", verdict)
    app.router.add_post("/api/touchpoints/{touchpoint_id}/verdict", set_verdict)
    app.router.add_delete("/api/touchpoints/{touchpoint_id}/verdict", clear_verdict)
    app.router.add_get("/api/creators", creators)
    app.router.add_put("/api/creators/{creator_id}", set_creator)
    app.router.add_post("/api/sinks/{name}/users/{user_id}", sink_send)
    return app
