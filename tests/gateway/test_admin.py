"""Admin API: token checks, one JSON envelope everywhere, touchpoint listing and visitor journeys."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import gzip
import io
import json
import re
import socket
import sqlite3
import struct
import tracemalloc
import typing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from jsonschema import Draft202012Validator
from yarl import URL

from gateway import listing_export
from gateway.admin import VerdictBody
from gateway.badbody import body_key, seal
from gateway.events import VERDICTS, BadEvent, Binding, Conversion, iso
from gateway.ids import uuid7
from gateway.keys import Keys
from gateway.openapi import BAD_EVENT, CONVERSION, TOUCHPOINT, openapi_document
from tests.conftest import TOKEN
from tests.gateway.test_fraud import click
from tests.gateway.test_malformed import raw_request
from tests.gateway.test_openapi import response_schema
from tests.gatewayproc import GatewayProcess

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def origin() -> web.Application:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", page)
    return app


@pytest.fixture
async def gw(start_gateway, upstream_server):
    return await start_gateway(await upstream_server(origin()))


async def land(gw, query: str, cookie: str | None = None) -> str | None:
    headers = {"Cookie": cookie} if cookie else {}
    async with gw.session.get(f"{gw.url}/landing?{query}", headers=headers) as resp:
        assert resp.status == 200
        for value in resp.headers.getall("Set-Cookie", []):
            if value.startswith("gw_vid="):
                return value.split(";")[0]
    return cookie


async def get(gw, path: str, headers: dict[str, str] | None = None, **params):
    async with gw.session.get(gw.admin_url + path, headers=headers or {}, params=params) as resp:
        return resp.status, resp.headers, await resp.json()


ENDPOINTS = [
    "/metrics",
    "/api/touchpoints",
    "/api/conversions",
    "/api/visitors/" + "0" * 32,
    "/api/fraud",
    "/api/review",
    "/api/creators",
]


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer"}],
)
async def test_missing_or_wrong_token_rejected(gw, path: str, headers) -> None:
    status, resp_headers, body = await get(gw, path, headers)
    assert status == 401
    assert resp_headers["WWW-Authenticate"] == "Bearer"
    assert body["ok"] is False and body["status"] == 401 and body["error"]


@pytest.mark.parametrize(
    ("header", "said"),
    [
        (
            f"Basic {TOKEN}",
            "Authorization: expected the scheme Bearer, got 'Basic'; send Authorization: Bearer",
        ),
        (
            f"Token {TOKEN}",
            "Authorization: expected the scheme Bearer, got 'Token'; send Authorization: Bearer",
        ),
        (TOKEN, "Authorization: expected the scheme Bearer, got the token alone; send Authorization: Bearer"),
        ("Bearer", "Authorization: Bearer without a token; send Authorization: Bearer <admin token>"),
        ("Bearer wrong", "wrong admin token"),
    ],
)
async def test_a_refused_authorization_says_what_was_wrong(gw, header: str, said: str) -> None:
    # Prometheus's basic_auth or a client's "Token" scheme with the right token: "wrong admin
    # token" sent the operator to check a token that was right; the scheme was not.
    status, _, body = await get(gw, "/api/creators", {"Authorization": header})
    assert status == 401
    assert body["error"].startswith(said), body["error"]
    assert TOKEN not in body["error"]


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/healthz", {}, 200),
        ("/api/openapi.json", {}, 200),
        ("/api/touchpoints", {}, 200),
        ("/api/touchpoints", {"limit": "0"}, 400),
        ("/api/touchpoints", {"limit": "x"}, 400),
        ("/api/touchpoints", {"limit": "²"}, 400),
        ("/api/touchpoints", {"limit": "9" * 5000}, 400),  # past int()'s 4300-digit limit
        ("/api/touchpoints", {"limit": "0" * 5000 + "5"}, 200),  # leading zeros aside: 5
        ("/api/touchpoints", {"since": "0001-01-01T00:00:00+01:00"}, 400),
        ("/api/touchpoints", {"until": "9999-12-31T23:30:00-01:00"}, 400),
        ("/api/touchpoints", {"since": "1969-12-31"}, 400),
        ("/api/touchpoints", {"since": "yesterday"}, 400),
        ("/api/touchpoints", {"cursor": "nope"}, 400),
        ("/api/touchpoints", {"colour": "red"}, 400),
        ("/api/visitors/" + "0" * 32, {}, 404),
        ("/api/visitors/not-an-id", {}, 404),  # any raw ID a sender may have used
        ("/api/visitors/" + "x" * 2001, {}, 400),
        ("/api/nothing-here", {}, 404),
        ("/api/fraud", {}, 200),
        ("/api/fraud", {"group_by": "visitor_key"}, 400),
        ("/api/fraud", {"until": "soon"}, 400),
        ("/api/review", {}, 200),
        ("/api/review", {"cursor": "nope"}, 400),
        ("/api/review", {"colour": "red"}, 400),
        ("/api/review", {"limit": "9" * 5000}, 400),
        ("/api/bad-events", {"limit": "9" * 5000}, 400),
        ("/api/creators", {}, 200),
        ("/api/creators", {"verified": "1"}, 400),
    ],
)
async def test_envelope_shape_everywhere(gw, path: str, params, status: int) -> None:
    got, headers, body = await get(gw, path, AUTH, **params)
    assert got == status
    assert headers["Content-Type"].startswith("application/json")
    if path == "/api/openapi.json":
        assert body["openapi"].startswith("3.")
        return
    assert body["ok"] is (status < 400)
    if status >= 400:
        assert set(body) == {"ok", "status", "error"} and body["status"] == status
        assert isinstance(body["error"], str) and body["error"]


async def test_unknown_parameter_names_what_the_endpoint_takes(gw) -> None:
    _, _, body = await get(gw, "/api/creators", AUTH, verified="1")
    assert body["error"] == "unknown query parameter 'verified' (this endpoint takes none)"
    _, _, body = await get(gw, "/api/fraud", AUTH, colour="red")
    assert body["error"] == (
        "unknown query parameter 'colour' (allowed: bom, delimiter, format, group_by, since, until)"
    )


async def test_wrong_method_is_json_405(gw) -> None:
    async with gw.session.post(gw.admin_url + "/api/touchpoints", headers=AUTH) as resp:
        assert resp.status == 405
        assert (await resp.json())["ok"] is False


async def test_metrics_are_prometheus_text(gw) -> None:
    await land(gw, "utm_source=a")
    async with gw.session.get(gw.admin_url + "/metrics", headers=AUTH) as resp:
        text = await resp.text()
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    for name in (
        "gateway_requests_total",
        "gateway_touchpoints_total 1.0",
        "gateway_cookies_rejected_total",
        "gateway_params_dropped_total",
        "gateway_store_commit_seconds_bucket",
        "gateway_upstream_errors_total",
    ):
        assert name in text


async def test_touchpoints_contract_and_pagination(gw) -> None:
    for n in range(7):
        await land(gw, f"utm_source=src{n % 2}&utm_medium=cpc&utm_campaign=c{n}&creator_id=cr{n}")
    seen, cursor = [], None
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        status, _, body = await get(gw, "/api/touchpoints", AUTH, **params)
        assert status == 200
        seen += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert [t["campaign"] for t in seen] == [f"c{n}" for n in range(7)]
    tp = seen[0]
    for key in (
        "id", "ts", "visitor_key", "source", "medium", "campaign", "term", "content",
        "creator_id", "sub_id", "click_id_kind", "click_id", "referrer_host", "landing_path",
    ):  # fmt: skip
        assert key in tp
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", tp["ts"])


async def pages(gw, path: str, **params: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Every page of a listing, followed by its cursors: the items and the cursors given."""
    seen, cursors, cursor = [], [], None
    while True:
        status, _, body = await get(gw, path, AUTH, **params, **({"cursor": cursor} if cursor else {}))
        assert status == 200, body
        Draft202012Validator(response_schema(path, 200)).validate(body)
        seen += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return seen, cursors
        cursors.append(cursor)


async def test_listings_page_newest_first_with_order_newest(gw) -> None:
    """The listings answered oldest first only: past 100 touchpoints the quick start's curl no
    longer showed the latest landing, and "did my test click arrive?" meant paging to the end.
    ``order=newest`` lists newest first, its cursor moving back in time, its downloads too."""
    for n in range(7):
        await land(gw, f"utm_source=s&utm_campaign=c{n}")
    now = datetime.now(UTC)
    await gw.gateway.store.write(
        [
            Conversion(uuid7(int((now + timedelta(seconds=n)).timestamp() * 1000)),
                       iso(now + timedelta(seconds=n)), "n", "signup", f"order:o{n}", "a" * 32,
                       None, None, None, order_id=f"o{n}")
            for n in range(7)
        ]
    )  # fmt: skip
    campaigns = [f"c{n}" for n in range(7)]
    orders = [f"o{n}" for n in range(7)]
    for path, field, rows, extra in (
        ("/api/touchpoints", "campaign", campaigns, {}),
        ("/api/review", "campaign", campaigns, {"verdict": "block"}),  # a client library: block
        ("/api/conversions", "order_id", orders, {}),
    ):
        oldest, old_cursors = await pages(gw, path, limit="3", **extra)
        newest, new_cursors = await pages(gw, path, limit="3", order="newest", **extra)
        assert [r[field] for r in oldest] == rows, path  # every row once, in order
        assert [r[field] for r in newest] == rows[::-1], path
        _, _, first = await get(gw, path, AUTH, order="newest", limit="1", **extra)
        assert first["items"][0][field] == rows[-1]  # the latest, on the first page
        _, _, default = await get(gw, path, AUTH, order="oldest", **extra)
        assert [r[field] for r in default["items"]] == rows  # oldest stays the default's order
        assert all(c.startswith("newest.") for c in new_cursors) and len(new_cursors) == 2
        # A cursor of one order with the other is refused, naming the order it came from.
        for cursor, order, came in (
            (old_cursors[0], "newest", "order=oldest (the default)"),
            (new_cursors[0], "oldest", "order=newest"),
        ):
            status, _, body = await get(gw, path, AUTH, cursor=cursor, order=order, **extra)
            assert status == 400, body
            assert body["error"].startswith(f"cursor: comes from a page in {came}, not order={order};")
        status, _, body = await get(gw, path, AUTH, cursor=new_cursors[0], **extra)  # order left out
        assert status == 400 and body["error"].startswith("cursor: comes from a page in order=newest")
        status, _, body = await get(gw, path, AUTH, order="latest", **extra)
        orders = "oldest, newest" if path == "/api/review" else "oldest, newest, stored"  # test_stored_order
        assert status == 400 and body["error"] == f"order: expected one of {orders}, got 'latest'"
        # The downloads follow the order, from a cursor on too, named so: the same rows in the
        # other order are another file (both were touchpoints.csv, the second saved as (1)).
        stem = {"/api/review": "review-block"}.get(path, path.removeprefix("/api/"))
        for fmt in ("csv", "ndjson"):
            status, headers, raw = await download(gw, path, format=fmt, order="newest", **extra)
            assert status == 200
            assert headers["Content-Disposition"] == f'attachment; filename="{stem}-newest.{fmt}"'
            _, headers, _ = await download(gw, path, format=fmt, order="oldest", **extra)
            assert headers["Content-Disposition"] == f'attachment; filename="{stem}.{fmt}"'
            if fmt == "csv":
                got = [r[field] for r in csv.DictReader(io.StringIO(raw.decode()))]
            else:
                got = [json.loads(line)[field] for line in raw.splitlines()]
            assert got == rows[::-1], (path, fmt)
        _, _, raw = await download(gw, path, format="ndjson", order="newest", cursor=new_cursors[0], **extra)
        assert [json.loads(line)[field] for line in raw.splitlines()] == rows[::-1][3:]
        _, headers, _ = await download(
            gw, path, format="csv", order="newest", delimiter="semicolon", since="2000-01-01", **extra
        )
        named = f"{stem}-from-2000-01-01-newest-semicolon.csv"
        assert headers["Content-Disposition"] == f'attachment; filename="{named}"'
        status, _, raw = await download(gw, path, format="ndjson", cursor=new_cursors[0], **extra)
        assert status == 400 and b"cursor: comes from a page in order=newest" in raw


async def test_touchpoint_filters(gw) -> None:
    await land(gw, "utm_source=Alpha&utm_campaign=one")
    await land(gw, "utm_source=beta&utm_campaign=two&creator_id=zoe")
    _, _, body = await get(gw, "/api/touchpoints", AUTH, source="ALPHA")
    assert [t["campaign"] for t in body["items"]] == ["one"]
    _, _, body = await get(gw, "/api/touchpoints", AUTH, creator_id="zoe")
    assert [t["campaign"] for t in body["items"]] == ["two"]
    _, _, body = await get(gw, "/api/touchpoints", AUTH, since="2000-01-01", until="2000-01-02")
    assert body["items"] == []
    _, _, body = await get(gw, "/api/touchpoints", AUTH, since="2000-01-01T00:00:00Z")
    assert len(body["items"]) == 2


async def test_a_name_written_with_a_zero_width_joiner_is_recorded_listed_and_a_creator(gw) -> None:
    """Persian writes some words with U+200C between their parts: until 2026-12-04 such a
    campaign was dropped at intake, refused as a filter, and refused as a creator ID."""
    persian = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"
    await land(gw, f"utm_source=alpha&utm_campaign={quote(persian)}&creator_id={quote(persian)}")
    _, _, body = await get(gw, "/api/touchpoints", AUTH, campaign=persian, creator_id=persian)
    assert [(t["campaign"], t["creator_id"]) for t in body["items"]] == [(persian, persian)]
    standing = json.dumps({"verified": True, "name": persian, "analyst": "ann", "reason": "r"}).encode()
    url = URL(gw.admin_url + "/api/creators/" + quote(persian), encoded=True)
    headers = {**AUTH, "Content-Type": "application/json"}
    async with gw.session.put(url, headers=headers, data=standing) as resp:
        assert resp.status == 200, await resp.text()
    status, _, body = await get(gw, "/api/touchpoints", AUTH, campaign="a\u202eb")  # RIGHT-TO-LEFT OVERRIDE
    assert status == 400 and body["error"].startswith("campaign: expected a value as touchpoints record it")


async def test_a_filter_is_read_as_a_value_is_recorded_its_unicode_spaces_spaces(gw) -> None:
    """A campaign pasted with a no-break space (``summer sale``) is recorded with a space, since
    2026-12-07; the same name pasted into a filter finds it (it was a 400, "not printable"), and
    a zero-width space in it is no character of the name, as at intake."""
    await land(gw, "utm_source=alpha&utm_campaign=summer%C2%A0sale")
    for typed in ("summer\u00a0sale", "summer sale", "summer\u200b\u00a0sale", "summer\u202fsale"):
        status, _, body = await get(gw, "/api/touchpoints", AUTH, campaign=typed)
        assert status == 200, body
        assert [t["campaign"] for t in body["items"]] == ["summer sale"], typed


async def test_a_filter_no_touchpoint_could_match_is_a_400_naming_it(gw) -> None:
    """Recorded values are printable, trimmed and not empty, and a visitor_key is 32 hex
    digits: any other filter was a mistake (an empty form field, a key copied in capitals),
    which an empty page would have answered as "no such touchpoints"."""
    await land(gw, "utm_source=alpha&utm_campaign=one&creator_id=zoe")
    _, _, body = await get(gw, "/api/touchpoints", AUTH)
    key = body["items"][0]["visitor_key"]
    for path in ("/api/touchpoints", "/api/review"):
        status, _, body = await get(gw, path, AUTH, visitor_key=key.upper())
        assert status == 200, body  # capitals name the same key, as in /api/visitors/{id}
        for name, value in [
            ("source", ""),
            ("campaign", " one"),
            ("creator_id", "zoe\n"),
            ("medium", "a\x00"),
        ]:
            status, _, body = await get(gw, path, AUTH, **{name: value})
            assert status == 400, (name, value, body)
            assert body["error"] == (
                f"{name}: expected a value as touchpoints record it (printable, no spaces around it),"
                f" got {value!r}; leave {name} out for every one"
            )
        status, _, body = await get(gw, path, AUTH, visitor_key="zz" + key[2:])
        assert (
            status == 400 and body["error"] == f"visitor_key: expected 32 hex digits, got {'zz' + key[2:]!r}"
        )
    _, _, body = await get(gw, "/api/touchpoints", AUTH, visitor_key=key.upper(), campaign="one")
    assert [t["visitor_key"] for t in body["items"]] == [key]


async def test_percent_escapes_that_are_not_utf8_are_a_400_naming_where(gw) -> None:
    """aiohttp reads ``%ff`` in a path as the text ``%ff`` and in a query as U+FFFD: a creator
    ``%ff`` would have been created, a user ``%ff`` erased, a campaign ``\ufffd`` listed."""
    await land(gw, "utm_source=alpha&utm_campaign=caf%C3%A9")
    body_json = json.dumps({"verified": True, "analyst": "ann", "reason": "r"}).encode()
    cases = [
        ("PUT", "/api/creators/%ff", "path: '%ff' is not UTF-8 once percent-decoded"),
        ("DELETE", "/api/users/al%FFice", "path: '%FF' is not UTF-8 once percent-decoded"),
        ("GET", "/api/touchpoints?campaign=caf%e9", "campaign: '%e9' is not UTF-8 once percent-decoded"),
        ("GET", "/api/touchpoints?%ff=1", "query: '%ff' is not UTF-8 once percent-decoded"),
        ("GET", "/api/dashboard/summary?conversion=%C3%28", "conversion: '%C3%28' is not UTF-8 once"),
    ]
    for method, target, error in cases:
        url = URL(gw.admin_url + target, encoded=True)
        data = body_json if method == "PUT" else None  # a body elsewhere is a 400 of its own
        async with gw.session.request(method, url, headers=AUTH, data=data) as resp:
            assert resp.status == 400, target
            assert (await resp.json())["error"].startswith(error), target
    _, _, body = await get(gw, "/api/creators", AUTH)
    assert "%ff" not in [c["id"] for c in body["items"]]
    url = URL(gw.admin_url + "/api/touchpoints?campaign=caf%C3%A9", encoded=True)
    async with gw.session.get(url, headers=AUTH) as resp:  # UTF-8 escapes read as ever
        assert resp.status == 200 and [t["campaign"] for t in (await resp.json())["items"]] == ["café"]


async def test_a_user_id_refused_says_what_was_wrong_and_never_the_id(gw) -> None:
    """An ID pasted with a tab, cut short to spaces or pasted with a whole line: the 400 says
    which (its length, the character and where), so an erasure request can be corrected, and
    does not echo the ID."""
    cases = [
        ("%20%20", "user_id: expected 1..256 printable characters, got white space only"),
        ("x" * 300, "user_id: expected 1..256 printable characters, got 300 characters"),
        ("alice%09%40example.com", "user_id: expected 1..256 printable characters, got \\t at character 6"),
    ]
    for method in ("GET", "DELETE"):
        for user_id, error in cases:
            url = URL(f"{gw.admin_url}/api/users/{user_id}", encoded=True)
            async with gw.session.request(method, url, headers=AUTH) as resp:
                assert resp.status == 400, user_id
                assert (await resp.json())["error"] == error, user_id


async def test_a_visitor_id_refused_says_what_was_given(gw) -> None:
    """As a refused user ID says it: a visitor ID over 2,000 characters (a page's text pasted)
    was told what the lookup expects, not that it was 2,001 characters long."""
    expected = (
        "visitor_id: expected a visitor_key (32 hex digits), a visitor ID (1..2000 printable"
        " characters) or a cookie value, got "
    )
    cases = [
        ("%20%20", "white space only"),
        ("x" * 2001, "2,001 characters"),
        ("abc%09def", "\\t at character 4"),
    ]
    for method in ("GET", "DELETE"):
        for visitor_id, got in cases:
            url = URL(f"{gw.admin_url}/api/visitors/{visitor_id}", encoded=True)
            async with gw.session.request(method, url, headers=AUTH) as resp:
                assert resp.status == 400, visitor_id
                assert (await resp.json())["error"] == expected + got, visitor_id


@pytest.mark.parametrize(
    ("given", "got"),
    [
        (
            "https://shop.example/?gw_vid=AbCdEfGhIjKlMnOpQrStUv",
            "got a URL of https://shop.example (51 characters; what follows its host not shown: a"
            " session's token may be in it)",
        ),
        (
            "https://ada:pa55w0rd@shop.example/reset?token=s3cr3t",
            "got a URL of https://shop.example (52 characters; what follows its host not shown: a"
            " session's token may be in it)",
        ),
        (
            "gw_vid=AbCdEfGhIjKlMnOpQrStUv",
            "got a gw_vid cookie whose value is not the gateway's, 'AbCdEfGhIjKlMnOpQrSt…'",
        ),
        (
            "gw_vid=",
            "got a gw_vid cookie with no value (as the gateway leaves it when consent is refused or"
            " withdrawn)",
        ),
        ("session=s3cr3t; _ga=GA1.2.3", "got cookies session, _ga (values not shown), none of them gw_vid"),
        ("Cookie: session=s3cr3t", "got cookies session (values not shown), none of them gw_vid"),
    ],
)
async def test_a_url_or_cookies_not_ours_are_a_400_saying_what_the_lookup_takes(
    gw, given: str, got: str
) -> None:
    """A page's address pasted (``https://shop.example/?gw_vid=…``), ``gw_vid=`` and a value
    not of ours, or a Cookie header without ours: each was read as a raw visitor ID and
    answered "no touchpoints recorded for this visitor", as if it were one whose visitor never
    came. Nothing recorded under it, it is a 400 saying what the lookup takes and what it got
    (a cookie's value never: it may be a session's; of a URL its scheme and host alone: until
    2026-12-07 its first 40 characters, a password before its host or a token in its query
    too)."""
    url = URL(f"{gw.admin_url}/api/visitors/{quote(given, safe='')}", encoded=True)
    async with gw.session.get(url, headers=AUTH) as resp:
        body = await resp.json()
    assert (resp.status, body["error"]) == (
        400,
        "visitor_id: expected a visitor_key (32 hex digits), a visitor ID (1..2000 printable"
        " characters) or the gw_vid cookie's value (v1.<id>.<tag>: alone, as gw_vid=v1.… or in a"
        f" Cookie header), {got}; no visitor has it as their ID",
    )
    assert "s3cr3t" not in body["error"] and "pa55w0rd" not in body["error"]
    Draft202012Validator(response_schema("/api/visitors/{visitor_id}", 400)).validate(body)


async def test_a_visitor_whose_id_has_a_urls_shape_is_still_found(gw) -> None:
    """A sender may name any printable text as a visitor's ID: one of a URL's or a cookie's
    shape, recorded, is looked up as ever."""
    settings = gw.gateway.settings
    keys = Keys.from_master(settings.secret, settings.options.identity.user_id_storage)
    for raw in ("https://shop.example/?gw_vid=x", "gw_vid=abc"):
        cid = uuid7()
        bought = Conversion(
            cid,
            iso(datetime.now(UTC)),
            "n",
            "purchase",
            f"order:{cid}",
            keys.visitor_key(raw),
            None,
            20.0,
            "EUR",
            cid,
        )
        await gw.gateway.store.write([bought])
        status, _, journey = await get(gw, f"/api/visitors/{quote(raw, safe='')}", AUTH)
        assert status == 200 and journey["visitor_key"] == keys.visitor_key(raw), journey


async def test_a_user_only_a_bad_event_names_is_not_nothing_recorded(gw) -> None:
    """A rights request for someone a sender named only in a refused event: the lookup said
    "nothing recorded for this user" while the store kept their address in a bad event, which
    an erasure then deleted (``gateway erase --dry-run`` counted it). The 404 says it is there."""
    key = body_key(gw.gateway.settings.secret)
    ms = int(datetime.now(UTC).timestamp() * 1000) - 5000
    body = '{"type": "conversion", "user_id": "Erin@Example.com", "value": "zz"}'
    await gw.gateway.store.write(
        [
            BadEvent(
                uuid7(ms), iso(datetime.now(UTC)), "n", "crm", seal(key, "value: zz"), seal(key, body), False
            )
        ]
    )
    status, _, answer = await get(gw, "/api/users/erin@example.com", AUTH)
    assert status == 404 and answer["error"] == (
        "nothing recorded for this user (no identity binding, no conversion), but 1 kept bad event"
        " names this ID (GET /api/bad-events lists it; an erasure deletes it)"
    )
    status, _, answer = await get(gw, "/api/users/erin@example.org", AUTH)
    assert (
        status == 404
        and answer["error"] == "nothing recorded for this user (no identity binding, no conversion)"
    )
    async with gw.session.delete(f"{gw.admin_url}/api/users/erin@example.com", headers=AUTH) as resp:
        assert (await resp.json())["erased"]["bad_events"] == 1
    status, _, answer = await get(gw, "/api/users/erin@example.com", AUTH)
    assert status == 404 and answer["error"].startswith("nothing recorded for this user: erased on ")


async def test_visitor_journey_keeps_first_touch(gw) -> None:
    cookie = await land(gw, "utm_source=first")
    for n in range(3):
        cookie = await land(gw, f"utm_source=later{n}", cookie)
    assert cookie is not None
    value = cookie.partition("=")[2]
    status, _, by_cookie = await get(gw, f"/api/visitors/{value}", AUTH)
    assert status == 200
    assert by_cookie["first_touch"]["source"] == "first"
    assert by_cookie["last_touch"]["source"] == "later2"
    assert [t["source"] for t in by_cookie["touchpoints"]] == ["first", "later0", "later1", "later2"]
    raw_id = value.split(".")[1]
    _, _, by_id = await get(gw, f"/api/visitors/{raw_id}", AUTH)
    _, _, by_key = await get(gw, f"/api/visitors/{by_cookie['visitor_key']}", AUTH)
    assert by_id == by_key == by_cookie
    # Pasted with the spaces around it (a browser's cookie pane, a log line): every intake trims a
    # visitor ID, so none is stored with them; a leading space was a 404.
    for pasted in (f"%20{value}", f"%20%20{raw_id}%09", f"{by_cookie['visitor_key']}%20"):
        status, _, found = await get(gw, f"/api/visitors/{pasted}", AUTH)
        assert (status, found) == (200, by_cookie), pasted
    # What the visitor bought is part of its journey (the dashboard's lookup lists it).
    assert by_cookie["conversions"] == []
    key = by_cookie["visitor_key"]
    bought = Conversion(uuid7(), iso(datetime.now(UTC)), "n", "purchase", "order:o1", key, None, 9.5, "EUR")
    await gw.gateway.store.write([bought])
    _, _, after = await get(gw, f"/api/visitors/{key}", AUTH)
    Draft202012Validator(response_schema("/api/visitors/{visitor_id}", 200)).validate(after)
    assert [(c["name"], c["value"], c["currency"]) for c in after["conversions"]] == [
        ("purchase", 9.5, "EUR")
    ]


async def test_conversions_are_listed_in_time_order_filtered_and_paged(gw) -> None:
    """Touchpoints could be listed, conversions only one visitor's or user's at a time: "the
    last fifty sign-ups" had no answer but the store file itself."""
    now = datetime.now(UTC)
    at = [now - timedelta(hours=10 - n) for n in range(7)]
    rows = [
        Conversion(
            uuid7(int(at[n].timestamp() * 1000)),  # ids are minted from the time, as the store's
            iso(at[n]),
            "n",
            "signup" if n % 2 else "purchase",
            f"order:o{n}",
            "a" * 32,
            None,
            float(n),
            "EUR",
            order_id=f"o{n}",
            origin="webhook" if n < 3 else "rule",
            rule="stripe" if n < 3 else "signup-form",
        )
        for n in range(7)
    ]
    await gw.gateway.store.write(rows)
    seen, cursor = [], None
    while True:
        status, _, body = await get(
            gw, "/api/conversions", AUTH, limit="3", **({"cursor": cursor} if cursor else {})
        )
        assert status == 200, body
        Draft202012Validator(response_schema("/api/conversions", 200)).validate(body)
        seen += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert [c["order_id"] for c in seen] == [f"o{n}" for n in range(7)]
    _, _, body = await get(gw, "/api/conversions", AUTH, name="signup", origin="rule")
    assert [c["order_id"] for c in body["items"]] == ["o3", "o5"]
    _, _, body = await get(gw, "/api/conversions", AUTH, rule="stripe", since=iso(now - timedelta(hours=9)))
    assert [c["order_id"] for c in body["items"]] == ["o1", "o2"]
    for params, error in (
        ({"name": ""}, "name: expected a value as conversions record it (1..200 printable characters,"),
        ({"rule": "a\x00"}, "rule: expected a value as conversions record it"),
        ({"user_id": "alice"}, "unknown query parameter 'user_id'"),
        ({"limit": "0"}, "limit: expected a whole number 1..1000"),
        ({"since": "2026-11-02", "until": "2026-11-01"}, "since: must be before until"),
    ):
        status, _, body = await get(gw, "/api/conversions", AUTH, **params)
        assert status == 400 and body["error"].startswith(error), (params, body)


async def test_a_conversion_filter_with_spaces_around_it_is_a_400_naming_it(gw) -> None:
    """Conversions are recorded trimmed (a rule's name is refused with spaces around it, a
    webhook's trimmed, a sender's a token): ``name= signup`` answered an empty page, which
    reads as "no sign-ups", where the touchpoint listing's filters answer 400 naming theirs."""
    row = Conversion(
        uuid7(),
        iso(datetime.now(UTC)),
        "n",
        "signup",
        "order:o1",
        "a" * 32,
        None,
        1.0,
        "EUR",
        rule="signup-form",
    )
    await gw.gateway.store.write([row])
    _, _, body = await get(gw, "/api/conversions", AUTH, name="signup", rule="signup-form", origin="rule")
    assert [c["name"] for c in body["items"]] == ["signup"]
    for name, value in [
        ("name", " signup"),
        ("rule", "signup-form "),
        ("origin", "\trule"),
        ("name", "x" * 201),
    ]:
        for fmt in ("json", "csv"):
            status, _, body = await get(gw, "/api/conversions", AUTH, format=fmt, **{name: value})
            assert status == 400, (name, value, body)
            assert body["error"] == (
                f"{name}: expected a value as conversions record it (1..200 printable characters,"
                f" no spaces around it), got {value[:100]!r}; leave {name} out for every one"
            )
    # The origins are four: origin=webhooks (or Rule) answered an empty page, read as "none".
    for value in ("webhooks", "Rule", "analyst"):
        for fmt in ("json", "csv"):
            status, _, body = await get(gw, "/api/conversions", AUTH, format=fmt, origin=value)
            assert status == 400, (value, body)
            assert body["error"] == (
                f"origin: expected one of rule, webhook, segment, import, got {value!r};"
                " leave origin out for every one"
            )


async def download(gw, path: str, **params: str) -> tuple[int, Any, bytes]:
    async with gw.session.get(gw.admin_url + path, headers=AUTH, params=params) as resp:
        return resp.status, resp.headers, await resp.read()


async def test_listings_download_every_row_as_csv_or_ndjson(gw) -> None:
    """The reports could be exported, the raw listings only paged through as JSON: a growth
    team taking its touchpoints or conversions to a spreadsheet or a BI tool had to page
    and convert them itself. ``format=csv|ndjson`` streams every row of the period."""
    cookie = await land(gw, "utm_source=news&utm_campaign=%3DHYPERLINK(%22x%22)&utm_id=7")
    await land(gw, "utm_source=ads&gclid=g1", cookie)
    _, _, listed = await get(gw, "/api/touchpoints", AUTH)
    status, headers, body = await download(gw, "/api/touchpoints", format="csv", bom="true")
    assert status == 200 and headers["Content-Type"] == "text/csv; charset=utf-8"
    assert headers["Content-Disposition"] == 'attachment; filename="touchpoints.csv"'
    assert body.startswith("\ufeff".encode())
    rows = list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))
    assert list(rows[0]) == list(TOUCHPOINT["properties"])  # every field, in the document's order
    assert [r["id"] for r in rows] == [t["id"] for t in listed["items"]]
    assert rows[0]["campaign"] == '\'=HYPERLINK("x")'  # inert in a spreadsheet
    assert json.loads(rows[0]["raw_params"]) == listed["items"][0]["raw_params"]
    assert rows[1]["click_id"] == "g1" and rows[1]["campaign"] == ""
    status, headers, body = await download(
        gw, "/api/touchpoints", format="ndjson", source="ads", since="2000-01-01"
    )
    assert headers["Content-Disposition"] == 'attachment; filename="touchpoints-ads-from-2000-01-01.ndjson"'
    # Named by the period's first and last days, as the reports' downloads (until is exclusive).
    _, headers, _ = await download(
        gw, "/api/conversions", format="csv", since="2026-11-01", until="2026-12-01"
    )
    assert (
        headers["Content-Disposition"]
        == 'attachment; filename="conversions-from-2026-11-01-to-2026-11-30.csv"'
    )
    assert [json.loads(line) for line in body.splitlines()] == [listed["items"][1]]
    # Conversions: more than a page of the store's reads (1,000), every one once, in order.
    now = datetime.now(UTC)
    ms = int(now.timestamp() * 1000) - 3000
    many = [
        Conversion(uuid7(ms + n), iso(now - timedelta(milliseconds=3000 - n)), "n", "signup", f"order:{n}",
                   "a" * 32, None, None, None, order_id=str(n))
        for n in range(2500)
    ]  # fmt: skip
    await gw.gateway.store.write(many)
    status, headers, body = await download(gw, "/api/conversions", format="ndjson", name="signup")
    assert status == 200 and headers["Content-Type"] == "application/x-ndjson"
    assert [json.loads(line)["order_id"] for line in body.splitlines()] == [str(n) for n in range(2500)]
    status, _, body = await download(gw, "/api/conversions", format="csv", until=iso(now))
    lines = body.decode().splitlines()
    assert lines[0] == ",".join(CONVERSION["properties"]) and len(lines) == 2501
    for params, error in (
        ({"format": "csv", "limit": "10"}, "limit: a csv download holds every row of the filters"),
        ({"format": "xml"}, "format: expected one of json, csv, ndjson, got 'xml'"),
        ({"format": "ndjson", "bom": "true"}, "bom: applies to a CSV download, not ndjson"),
        ({"bom": "1"}, "bom: expected true or false, got '1'"),
    ):
        for path in ("/api/touchpoints", "/api/conversions"):
            status, _, answer = await get(gw, path, AUTH, **params)
            assert status == 400 and answer["error"].startswith(error), (path, params, answer)


async def test_bad_events_download_every_event_of_the_filters_opened(gw) -> None:
    """An operator fixing a sender's mapping wants its refused events in a file: the other
    listings downloaded as CSV or NDJSON, ``/api/bad-events`` only paged through as JSON.
    Every event of the filters now comes, more than a store page of them, body and reason
    opened as on the page (one sealed under another secret reads the same placeholder)."""
    key = body_key(gw.gateway.settings.secret)
    ms = int(datetime.now(UTC).timestamp() * 1000) - 5000
    ts = iso(datetime.now(UTC))

    def bad(n: int, sender: str, body: str, sealed_with: bytes = key) -> BadEvent:
        return BadEvent(uuid7(ms + n), ts, "n", sender, seal(sealed_with, f"amount: not a number ({n})"),
                        seal(sealed_with, body), False)  # fmt: skip

    events = [bad(n, "crm", f'{{"n": {n}, "amount": "=1+1"}}') for n in range(2500)]
    events += [bad(2500, "billing", '{"n": "other sender"}'), bad(2501, "crm", "{}", body_key(b"x" * 32))]
    await gw.gateway.store.write(events)
    _, _, page = await get(gw, "/api/bad-events", AUTH, sender="crm", limit="3")
    status, headers, body = await download(gw, "/api/bad-events", format="csv", sender="crm", bom="true")
    assert status == 200 and headers["Content-Type"] == "text/csv; charset=utf-8"
    assert headers["Content-Disposition"] == 'attachment; filename="bad-events-crm.csv"'
    rows = list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))
    assert list(rows[0]) == list(BAD_EVENT["properties"]) and len(rows) == 2501
    assert [r["id"] for r in rows[:3]] == [item["id"] for item in page["items"]]
    assert rows[0]["body"] == page["items"][0]["body"] == '{"n": 0, "amount": "=1+1"}'
    assert rows[7]["reason"] == "amount: not a number (7)" and rows[7]["truncated"] == "false"  # as JSON
    assert rows[-1]["body"] == rows[-1]["reason"] == "(sealed under another identity.secret)"
    status, headers, body = await download(gw, "/api/bad-events", format="ndjson", order="newest")
    assert headers["Content-Disposition"] == 'attachment; filename="bad-events-newest.ndjson"'
    lines = [json.loads(line) for line in body.splitlines()]
    assert [line["id"] for line in lines] == [e.id for e in reversed(events)]
    assert lines[1] == {**dict.fromkeys(BAD_EVENT["properties"]), "id": events[-2].id, "ts": ts, "node": "n",
                        "sender": "billing", "reason": "amount: not a number (2500)",
                        "body": '{"n": "other sender"}', "truncated": False}  # fmt: skip
    _, headers, body = await download(
        gw, "/api/bad-events", format="csv", sender="billing", pending="true", delimiter="semicolon"
    )
    assert headers["Content-Disposition"] == 'attachment; filename="bad-events-billing-pending-semicolon.csv"'
    assert body.decode().splitlines()[0] == ";".join(BAD_EVENT["properties"])
    status, _, answer = await get(gw, "/api/bad-events", AUTH, format="csv", limit="10")
    assert status == 400 and answer["error"].startswith("limit: a csv download holds every row")


async def test_a_download_of_large_bad_events_reads_the_store_a_bounded_part_at_a_time(gw) -> None:
    """A bad event keeps up to ``webhooks.bad_body_limit`` (64 KiB) of its body: a download
    read a thousand of them per step, 87 MB sealed and 64 MB opened at once, and a gateway
    idling at 140 MB held 540 MB while an operator took a sender's refused events to a file.
    Each step now reads at most ``listing_export.EXPORT_BYTES`` of them; every event still
    comes, once and in order."""
    key = body_key(gw.gateway.settings.secret)
    ms = int(datetime.now(UTC).timestamp() * 1000) - 5000
    ts = iso(datetime.now(UTC))
    filler = "x" * (64 * 1024 - 20)
    events = [
        BadEvent(uuid7(ms + n), ts, "n", "crm", seal(key, "amount: not a number"),
                 seal(key, f'{{"n": {n:04}, "a": "{filler}"}}'), True)
        for n in range(400)
    ]  # fmt: skip
    for start in range(0, len(events), 50):
        await gw.gateway.store.write(events[start : start + 50])
    opened = 400 * (64 * 1024)  # 26 MB of bodies
    ids: list[str] = []
    rest = b""
    tracemalloc.start()
    try:
        headers = {**AUTH, "Accept-Encoding": "identity"}
        url = gw.admin_url + "/api/bad-events"
        async with gw.session.get(url, headers=headers, params={"format": "csv"}) as resp:
            assert resp.status == 200
            async for chunk in resp.content.iter_chunked(1 << 16):  # kept no longer than a line
                *lines, rest = (rest + chunk).split(b"\r\n")
                ids += [line.split(b",", 1)[0].decode() for line in lines]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rest == b"" and ids == ["id", *(e.id for e in events)]
    assert peak < opened / 4, f"{peak:,} bytes held at once for {opened:,} bytes of bodies"
    _, _, body = await download(gw, "/api/bad-events", format="ndjson", order="newest")
    assert [json.loads(line)["body"][:10] for line in body.splitlines()] == [
        f'{{"n": {n:04}' for n in reversed(range(400))
    ]
    # A JSON page of limit=1000 is bounded alike (it held 26 MB of bodies twice over): fewer
    # items than the limit, the cursor on to the rest, every event once.
    paged: list[str] = []
    cursor: str | None = None
    while True:
        params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
        async with gw.session.get(url, headers=AUTH, params=params) as resp:
            page = await resp.json()
        assert len(page["items"]) <= listing_export.EXPORT_BYTES // (64 * 1024) + 1, len(page["items"])
        paged += [item["id"] for item in page["items"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert paged == [e.id for e in events]


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/api/attribution", "since"),
        ("/api/attribution", "group_by"),
        ("/api/attribution", "population"),
        ("/api/attribution", "format"),
        ("/api/attribution", "verdicts"),
        ("/api/fraud", "group_by"),
        ("/api/touchpoints", "until"),
        ("/api/touchpoints", "limit"),
        ("/api/dashboard/summary", "since"),
        ("/api/dashboard/summary", "model"),
        ("/api/dashboard/summary", "population"),
        ("/api/dashboard/summary", "part"),
    ],
)
async def test_a_refused_value_is_quoted_at_most_100_characters(gw, path: str, name: str) -> None:
    """Most refusals quoted the first 100 characters of what they refused; these quoted it
    whole, a URL's worth (8 KB) sent back in the error."""
    status, _, body = await get(gw, path, AUTH, **{name: "x" * 5000})
    assert status == 400 and body["error"].startswith(name + ":"), body
    assert "x" * 100 in body["error"] and "x" * 101 not in body["error"], body["error"]


async def test_an_id_holding_a_slash_unescaped_is_told_to_escape_it(gw) -> None:
    """``DELETE /api/users/a/b`` (a user ID with a ``/``, not written ``%2F``) answered only
    "no such endpoint": an erasure that did not happen, with no word of why."""
    hint = " (an ID that holds a / is written %2F: /api/users/a%2Fb)"
    for method, path in [
        ("DELETE", "/api/users/a/b"),
        ("GET", "/api/users/a/b"),
        ("GET", "/api/visitors/a/b"),
        ("PUT", "/api/creators/a/b"),
        ("POST", "/api/sinks/s/users/a/b"),
    ]:
        async with gw.session.request(method, gw.admin_url + path, headers=AUTH) as resp:
            body = await resp.json()
        assert resp.status == 404 and body["error"] == f"no such endpoint: {path}{hint}", (method, body)
    async with gw.session.get(gw.admin_url + "/api/nothing/a/b", headers=AUTH) as resp:
        assert (await resp.json())["error"] == "no such endpoint: /api/nothing/a/b"


async def test_a_trailing_slash_is_told_to_go(gw) -> None:
    """``GET /api/touchpoints/`` (a client library's base URL joined with a trailing slash)
    answered "no such endpoint: /api/touchpoints/", which reads as if the listing were not
    there; the 404 says the endpoint without it. A path no endpoint has gets no hint."""
    for method, path in [
        ("GET", "/api/touchpoints/"),
        ("GET", "/api/attribution/timeseries/"),
        ("GET", "/api/touchpoints/0190a2b4-0000-7000-8000-000000000000/verdict/"),
        ("GET", "/metrics/"),
        ("GET", "/healthz//"),
    ]:
        async with gw.session.request(method, gw.admin_url + path, headers=AUTH) as resp:
            body = await resp.json()
        want = f"no such endpoint: {path} (without the trailing /: {path.rstrip('/')})"
        assert resp.status == 404 and body["error"] == want, (path, body)
    for path in ("/api/nothing/", "/api/touchpoints/x/"):
        async with gw.session.get(gw.admin_url + path, headers=AUTH) as resp:
            assert (await resp.json())["error"] == f"no such endpoint: {path}"


async def test_a_listing_takes_its_format_from_accept_as_the_reports_do(gw) -> None:
    """``curl -H 'Accept: text/csv' /api/touchpoints`` got a JSON page, where the reports
    answer CSV: the listings now read ``Accept`` too when the query names no ``format``, and
    say so to caches (``Vary: Accept``)."""
    await land(gw, "utm_source=news")
    _, _, listed = await get(gw, "/api/touchpoints", AUTH)
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    for path in ("/api/touchpoints", "/api/conversions", "/api/review", "/api/bad-events"):
        async with gw.session.get(gw.admin_url + path, headers={**AUTH, "Accept": "text/csv"}) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"] == "text/csv; charset=utf-8"
            assert (
                resp.headers["Vary"] == "Accept, Accept-Encoding"
                and "attachment" in resp.headers["Content-Disposition"]
            )
            body = await resp.text()
        if path == "/api/touchpoints":
            assert [r["id"] for r in csv.DictReader(io.StringIO(body))] == [t["id"] for t in listed["items"]]
        headers = {**AUTH, "Accept": "application/x-ndjson"}
        async with gw.session.get(gw.admin_url + path, headers=headers) as resp:
            assert resp.headers["Content-Type"] == "application/x-ndjson"
        for accept in (browser, "*/*", None):  # a browser, curl, no header: the JSON page
            sent = {**AUTH, **({"Accept": accept} if accept else {})}
            async with gw.session.get(gw.admin_url + path, headers=sent) as resp:
                assert resp.content_type == "application/json" and resp.headers["Vary"] == "Accept"
        # format= decides, whatever Accept says, and nothing varies.
        sent = {**AUTH, "Accept": "text/csv"}
        async with gw.session.get(gw.admin_url + path, headers=sent, params={"format": "json"}) as resp:
            assert resp.content_type == "application/json" and "Vary" not in resp.headers
        async with gw.session.get(gw.admin_url + path, headers=sent, params={"limit": "5"}) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"].startswith("limit: a csv download holds every row")


async def test_a_listing_download_answers_head_without_its_rows(gw) -> None:
    """A HEAD of a download (a link checker, a download manager probing the file) got the
    headers and then every row all the same: a client keeping the connection read the CSV as
    the status line of its next answer, and the gateway read the whole period for nothing."""
    await land(gw, "utm_source=news")
    port = URL(gw.admin_url).port
    assert port is not None
    for path in ("/api/touchpoints", "/api/conversions", "/api/review", "/api/bad-events"):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(
                f"HEAD {path}?format=csv HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
                "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()
            await writer.wait_closed()
        head, _, rest = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"filename=" in head, (path, answer)
        assert rest.startswith(b"HTTP/1.1 200"), (path, answer)  # the next answer, no rows before it


async def test_a_client_leaving_a_download_is_no_admin_api_failure(tmp_path: Path) -> None:
    """``curl …?format=csv | head`` or a cancelled download: the write to the gone client
    failed, and the gateway logged ``admin API failed on GET /api/touchpoints`` with a
    traceback, at error, as if the API were broken. (A ``gateway run``: the test server's
    connections do not always see the client go.)"""
    from bench.synth import generate

    # 60,000 touchpoints: tens of MB of CSV, more than the kernel's buffers take unread.
    await asyncio.to_thread(generate, tmp_path / "synth.db", 60000, 300, seed=3, days=30)
    cfg = tmp_path / "gateway.toml"
    await asyncio.to_thread(
        cfg.write_text,
        '[proxy]\nlisten = "127.0.0.1:0"\nupstream = "http://127.0.0.1:9"\nworkers = 1\n'
        '[admin]\nlisten = "127.0.0.1:0"\nreport_processes = 1\n[storage]\npath = "synth.db"\n',
    )
    gw = await GatewayProcess.start(cfg)
    try:
        port = URL(gw.admin).port
        assert port is not None

        def leave_part_way() -> bytes:
            with socket.socket() as client:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the rows wait for it
                client.connect(("127.0.0.1", port))
                client.sendall(
                    b"GET /api/touchpoints?format=csv HTTP/1.1\r\nHost: t\r\n"
                    + f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
                )
                first = client.recv(100)
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset
                return first

        assert (await asyncio.to_thread(leave_part_way)).startswith(b"HTTP/1.1 200")
        left = await gw.wait_log(lambda r: "download ended early" in r["msg"], 30)
        assert (
            left["level"] == "info" and left["msg"] == "a touchpoints download ended early: the client left"
        )
        assert not [r for r in gw.logs() if r["level"] == "error"], gw.logs()
    finally:
        await gw.stop()


async def test_listing_downloads_for_a_semicolon_locale_are_separated_as_asked(gw) -> None:
    """Excel where the list separator is ``;`` (German, French…) read the listings'
    comma-separated downloads as one column. ``delimiter=semicolon|tab`` on
    ``/api/touchpoints``, ``/api/conversions`` and ``/api/review``: the same rows, a cell
    holding the delimiter quoted, a formula still inert, a decimal still with its point."""
    cookie = await land(gw, "utm_source=news&utm_campaign=%3DSUM(A1%3BB1)&utm_content=a%3Bb")
    await land(gw, "utm_source=ads&gclid=g1", cookie)
    now = datetime.now(UTC)
    ms = int(now.timestamp() * 1000) - 1000
    await gw.gateway.store.write(
        [Conversion(uuid7(ms), iso(now - timedelta(seconds=1)), "n", "Kauf; online", "order:1", "a" * 32,
                    None, 1234.5, "EUR", order_id="A;1")]
    )  # fmt: skip
    await gw.gateway.store.write([click(0, "cr;semi", "review", "headless", "datacenter")])
    for path, params in (
        ("/api/touchpoints", {}),
        ("/api/conversions", {}),
        ("/api/review", {"since": "2026-11-01", "until": "2026-12-01"}),
    ):
        status, _, plain = await download(gw, path, format="csv", **params)
        assert status == 200
        status, _, comma = await download(gw, path, format="csv", delimiter="comma", **params)
        assert (status, comma) == (200, plain)  # the default, named
        rows = list(csv.reader(io.StringIO(plain.decode())))
        assert len(rows) == (4 if path == "/api/touchpoints" else 2), rows  # the click listed too
        for name, delimiter in (("semicolon", ";"), ("tab", "\t")):
            status, headers, body = await download(
                gw, path, format="csv", delimiter=name, bom="true", **params
            )
            assert status == 200 and headers["Content-Type"] == "text/csv; charset=utf-8", body
            text = body.decode("utf-8-sig")
            assert text.split("\r\n")[0] == delimiter.join(rows[0]), (path, text[:80])
            assert list(csv.reader(io.StringIO(text), delimiter=delimiter)) == rows, (path, name)
        _, _, body = await download(gw, path, format="csv", delimiter="semicolon", **params)
        at = 2 if path == "/api/touchpoints" else 1  # the row holding ";" (the click is first)
        found = list(csv.DictReader(io.StringIO(body.decode()), delimiter=";"))[at - 1]
        line = body.decode().split("\r\n")[at]
        if path == "/api/touchpoints":
            assert found["campaign"] == "'=SUM(A1;B1)" and found["content"] == "a;b", found  # inert
            assert ';"\'=SUM(A1;B1)";' in line and ';"a;b";' in line, line
        elif path == "/api/conversions":
            assert (found["name"], found["value"], found["order_id"]) == ("Kauf; online", "1234.5", "A;1")
            assert ';"Kauf; online";' in line and ";1234.5;EUR;" in line, line
        else:
            assert found["creator_id"] == "cr;semi" and found["reasons"] == '["headless","datacenter"]'
            assert ';"cr;semi";' in line, line
        for bad, error in (
            (
                {"format": "csv", "delimiter": "|"},
                "delimiter: expected one of comma, semicolon, tab, got '|'",
            ),
            (
                {"format": "ndjson", "delimiter": "semicolon"},
                "delimiter: applies to a CSV download, not ndjson",
            ),
            ({"delimiter": "tab"}, "delimiter: applies to a CSV download, not json (format=csv)"),
        ):
            status, _, answer = await get(gw, path, AUTH, **params, **bad)
            assert status == 400 and answer["error"].startswith(error), (path, bad, answer)


async def test_a_listing_csv_of_another_delimiter_is_named_after_it(gw) -> None:
    """As the reports' (``reporting.file_ending``): the dashboard's ``CSV`` and ``CSV (;)`` of
    one listing were saved under one name, the second as ``… (1).csv``."""
    period = {"since": "2026-11-01", "until": "2026-12-01"}
    for path, stem in (
        ("/api/touchpoints", "touchpoints-from-2026-11-01-to-2026-11-30"),
        ("/api/conversions", "conversions-purchase-from-2026-11-01-to-2026-11-30"),
        ("/api/review", "review-from-2026-11-01-to-2026-11-30"),
    ):
        params = {**period, "name": "purchase"} if path == "/api/conversions" else period
        for delimiter, ending in (("comma", ".csv"), ("semicolon", "-semicolon.csv"), ("tab", "-tab.csv")):
            status, headers, _ = await download(gw, path, format="csv", delimiter=delimiter, **params)
            assert status == 200, (path, delimiter)
            named = headers["Content-Disposition"]
            assert named == f'attachment; filename="{stem}{ending}"', (path, delimiter)
        _, headers, _ = await download(gw, path, format="ndjson", **params)
        assert headers["Content-Disposition"] == f'attachment; filename="{stem}.ndjson"', path


async def test_a_filtered_listing_download_is_named_after_its_filters(gw) -> None:
    """The dashboard's download of one conversion name's conversions was saved as
    ``conversions-from-….csv``, as every conversion's was: two files of one period, told apart
    by nothing. A listing's download names its filters' values, in the listing's filter order,
    each as the reports name a conversion (ASCII letters, digits and ``.``; anything else ``_``)."""
    period = {"since": "2026-11-01", "until": "2026-12-01"}
    for path, params, name in (
        ("/api/conversions", {"name": "purchase"}, "conversions-purchase-from-2026-11-01-to-2026-11-30.csv"),
        (
            "/api/conversions",
            {"origin": "webhook", "name": "Achat réussi/✓", "rule": 'a"b'},
            "conversions-Achat_r_ussi-a_b-webhook-from-2026-11-01-to-2026-11-30.csv",
        ),
        ("/api/conversions", {"name": "注文"}, "conversions-conversion-from-2026-11-01-to-2026-11-30.csv"),
        (
            "/api/touchpoints",
            {"campaign": "Été 2026", "source": "Google"},
            "touchpoints-google-t_2026-from-2026-11-01-to-2026-11-30.csv",
        ),
        (
            "/api/review",
            {"verdict": "block", "creator_id": "ben"},
            "review-block-ben-from-2026-11-01-to-2026-11-30.csv",
        ),
    ):
        status, headers, _ = await download(gw, path, format="csv", **period, **params)
        assert status == 200, (path, params)
        assert headers["Content-Disposition"] == f'attachment; filename="{name}"', (path, params)
    # Five long filters stay a file name a file system takes (at most 255 bytes).
    long = {key: "x" * 200 for key in ("source", "medium", "campaign", "creator_id")}
    _, headers, _ = await download(gw, "/api/touchpoints", format="ndjson", **long)
    named = headers["Content-Disposition"].split('"')[1]
    assert named.startswith("touchpoints-xxx") and named.endswith("x.ndjson") and len(named) <= 200, named


async def test_a_visitor_is_found_by_the_cookie_header_line_as_devtools_copies_it(gw) -> None:
    """The browser's developer tools copy a request's cookies as the header's whole line
    (``Cookie: gw_vid=v1.…; _ga=…``): pasted into the lookup, it answered "no touchpoints
    recorded for this visitor", as for a visitor never seen, while the same line without its
    name was found."""
    from urllib.parse import quote

    cookie = await land(gw, "utm_source=news")
    assert cookie is not None
    _, _, journey = await get(gw, f"/api/visitors/{quote(cookie, safe='')}", AUTH)
    for line in (f"Cookie: {cookie}; _ga=GA1.2.3", f"cookie:{cookie}", f"COOKIE:  _ga=GA1.2.3; {cookie}"):
        status, _, body = await get(gw, f"/api/visitors/{quote(line, safe='')}", AUTH)
        assert (status, body.get("visitor_key")) == (200, journey["visitor_key"]), (line, body)


async def test_a_journey_looked_up_as_the_wrong_kind_says_which_kind_it_is(gw) -> None:
    """A user's ID looked up as a visitor (the dashboard's lookup set to the wrong kind) said
    only that nothing was recorded, as for an ID never seen: the answer now names the kind
    that has a journey. An ID of neither kind gets the plain answer."""
    cookie = await land(gw, "utm_source=news")
    assert cookie is not None
    raw_id = cookie.partition("=")[2].split(".")[1]
    _, _, journey = await get(gw, f"/api/visitors/{raw_id}", AUTH)
    settings = gw.gateway.settings
    keys = Keys.from_master(settings.secret, settings.options.identity.user_id_storage)
    bound = Binding(
        uuid7(), iso(datetime.now(UTC)), "n", journey["visitor_key"], keys.user_key("alice"), "login"
    )
    await gw.gateway.store.write([bound])
    status, _, body = await get(gw, "/api/visitors/alice", AUTH)
    assert (status, body["error"]) == (
        404,
        "no touchpoints recorded for this visitor; a user of this ID has a journey: look it up as a user",
    )
    status, _, body = await get(gw, f"/api/users/{raw_id}", AUTH)
    assert (status, body["error"]) == (
        404,
        "nothing recorded for this user (no identity binding, no conversion); a visitor of this ID"
        " has a journey: look it up as a visitor",
    )
    Draft202012Validator(response_schema("/api/users/{user_id}", 404)).validate(body)
    for path, plain in (
        ("/api/visitors/bob", "no touchpoints recorded for this visitor"),
        ("/api/users/bob", "nothing recorded for this user (no identity binding, no conversion)"),
    ):
        status, _, body = await get(gw, path, AUTH)
        assert (status, body["error"]) == (404, plain)
    assert (await get(gw, "/api/users/alice", AUTH))[0] == 200


async def test_a_visitor_who_converted_without_a_landing_shows_the_conversion(gw) -> None:
    """A visitor who came direct and bought has a conversion and no touchpoint: the lookup
    answered 404 "no touchpoints recorded for this visitor", and the analyst who asked whether
    this cookie converted was told nothing was there."""
    visitor = "c0ffee" + "0" * 26
    cid = uuid7()
    bought = Conversion(
        cid, iso(datetime.now(UTC)), "n", "purchase", "order:1", visitor, None, 20.0, "EUR", cid
    )
    await gw.gateway.store.write([bought])
    status, _, journey = await get(gw, f"/api/visitors/{visitor}", AUTH)
    assert status == 200, journey
    Draft202012Validator(response_schema("/api/visitors/{visitor_id}", 200)).validate(journey)
    assert (journey["touchpoints"], journey["first_touch"], journey["last_touch"]) == ([], None, None)
    assert journey["touch_count"] == 0
    assert [c["dedup_key"] for c in journey["conversions"]] == ["order:1"]
    assert journey["conversions_truncated"] is False  # all of them listed, and said so
    assert journey["first_seen"] == journey["last_seen"] == bought.ts
    status, _, body = await get(gw, "/api/visitors/" + "d" * 32, AUTH)  # neither: still a 404
    assert (status, body["error"]) == (404, "no touchpoints recorded for this visitor")


async def test_healthz_reports_a_stopped_store(gw) -> None:
    status, _, body = await get(gw, "/healthz")
    assert status == 200 and body["status"] == "ok"
    await gw.gateway.store.close()  # as if the writer had died
    status, _, body = await get(gw, "/healthz")
    assert status == 503 and body["ok"] is False and "store" in body["error"]
    Draft202012Validator(response_schema("/healthz", 503)).validate(body)
    async with gw.session.get(gw.url + "/?utm_source=x") as resp:
        assert resp.status == 200  # the site is still served (fail open)


async def test_verdict_override_needs_the_token(gw) -> None:
    url = gw.admin_url + "/api/touchpoints/0190a2b4-0000-7000-8000-000000000000/verdict"
    async with gw.session.post(url, json={"verdict": "allow", "analyst": "a", "reason": "b"}) as resp:
        assert resp.status == 401 and (await resp.json())["ok"] is False


@pytest.mark.timeout(60)
async def test_an_analysts_write_answered_503_is_not_stored_later(gw) -> None:
    """Another process holds the store's write lock (an import, a sqlite3 shell) past the
    commit's wait: an override, its withdrawal and a creator's standing answer 503 "not stored;
    try again", with Retry-After. They were left queued and written once the lock went, so
    the retry the answer asks for recorded the override twice in the audit trail, and the
    standing reached the store but not the registry the bots addon reads, until a restart."""
    await land(gw, "utm_source=news&creator_id=zoe")
    [touchpoint] = (await gw.api("/api/touchpoints"))["items"]
    verdict_url = f"{gw.admin_url}/api/touchpoints/{touchpoint['id']}/verdict"
    override = {"verdict": "block", "analyst": "ann", "reason": "click farm"}
    standing = {"verified": True, "analyst": "ann", "reason": "contract signed"}
    locker = await asyncio.to_thread(
        sqlite3.connect, gw.gateway.settings.store_path, isolation_level=None, check_same_thread=False
    )

    async def refused(method: str, url: str, body: dict[str, Any]) -> None:
        async with gw.session.request(method, url, json=body, headers=AUTH) as resp:
            answer = await resp.json()
            assert resp.status == 503 and resp.headers["Retry-After"] == "5", answer
            assert "not stored" in answer["error"] and "try again" in answer["error"], answer

    try:
        await asyncio.to_thread(locker.execute, "BEGIN IMMEDIATE")
        await asyncio.gather(
            refused("POST", verdict_url, override),
            refused("PUT", f"{gw.admin_url}/api/creators/zoe", standing),
        )
    finally:
        await asyncio.to_thread(locker.execute, "ROLLBACK")
        await asyncio.to_thread(locker.close)
    # Written after them in the queue: once it is committed, so is anything left before it.
    async with gw.session.put(f"{gw.admin_url}/api/creators/max", json=standing, headers=AUTH) as resp:
        assert resp.status == 200, await resp.text()
    history = await gw.api(f"/api/touchpoints/{touchpoint['id']}/verdict")
    assert history["changes"] == [] and history["touchpoint"]["verdict_origin"] is None, history
    assert [c["id"] for c in (await gw.api("/api/creators"))["items"]] == ["max"]
    stored = await asyncio.to_thread(
        _rows, gw.gateway.settings.store_path, "SELECT creator_id FROM creator_standings"
    )
    assert stored == [("max",)]
    # The retry the 503 asked for records it once.
    async with gw.session.post(verdict_url, json=override, headers=AUTH) as resp:
        assert resp.status == 200, await resp.text()
        assert [c["analyst"] for c in (await resp.json())["changes"]] == ["ann"]
    locker = await asyncio.to_thread(
        sqlite3.connect, gw.gateway.settings.store_path, isolation_level=None, check_same_thread=False
    )
    try:  # a withdrawal alike
        await asyncio.to_thread(locker.execute, "BEGIN IMMEDIATE")
        await refused("DELETE", verdict_url, {"analyst": "ann", "reason": "a mistake"})
    finally:
        await asyncio.to_thread(locker.execute, "ROLLBACK")
        await asyncio.to_thread(locker.close)
    async with gw.session.put(f"{gw.admin_url}/api/creators/max", json=standing, headers=AUTH) as resp:
        assert resp.status == 200, await resp.text()
    history = await gw.api(f"/api/touchpoints/{touchpoint['id']}/verdict")
    assert [c["origin"] for c in history["changes"]] == ["analyst"], history


def _rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(sql).fetchall()


TAKE_NO_QUERY = {"/healthz", "/metrics", "/api/openapi.json"}
"""Endpoints that ignore what they do not read, a query too (health checks, scrapers)."""


async def test_a_body_sent_to_an_endpoint_that_takes_none_is_a_400_not_ignored(gw) -> None:
    """A client that sends its filters as a JSON body (``requests.get(url, json=…)``) got every
    row, unfiltered, as if it had asked for them: the body was ignored, where a misspelt query
    parameter is a 400 so that no typo silently widens a query. And ``DELETE /api/users/…``
    with a body naming another user erased the one of the path without a word. Every operation
    of the document without a request body refuses one, having done nothing."""
    visitor = await land(gw, "utm_source=news")
    key = (await gw.api("/api/touchpoints"))["items"][0]["visitor_key"]
    assert visitor is not None
    values = {
        "visitor_id": key,
        "user_id": "ann",
        "touchpoint_id": str(uuid7()),
        "creator_id": "zoe",
        "name": "crm",
    }
    checked = []
    for path, methods in openapi_document()["paths"].items():
        if path in TAKE_NO_QUERY:
            continue
        for method, op in methods.items():
            if "requestBody" in op:
                continue
            url = gw.admin_url + re.sub(r"\{(\w+)\}", lambda m: values[m[1]], path)
            async with gw.session.request(method, url, json={"source": "nowhere"}, headers=AUTH) as resp:
                answer = await resp.json()
                assert resp.status == 400, (method, path, answer)
                assert answer["error"].startswith(f"body: {method.upper()} {path} takes no body"), answer
            checked.append((method, path))
    assert ("get", "/api/touchpoints") in checked and ("delete", "/api/visitors/{visitor_id}") in checked
    assert len((await gw.api(f"/api/visitors/{key}"))["touchpoints"]) == 1  # not erased
    async with gw.session.head(
        gw.admin_url + "/api/touchpoints", data=b'{"source": "nowhere"}', headers=AUTH
    ) as resp:
        assert resp.status == 400
    async with gw.session.get(gw.admin_url + "/api/touchpoints", data=_chunks(), headers=AUTH) as resp:
        assert resp.status == 400  # chunked: a body, told by the headers alone
    async with gw.session.get(gw.admin_url + "/api/touchpoints", data=b"", headers=AUTH) as resp:
        assert resp.status == 200, await resp.text()  # Content-Length: 0, no body: as ever
    async with gw.session.get(gw.admin_url + "/healthz", json={"probe": 1}) as resp:
        assert resp.status == 200  # a health check's own habits, as its query's


async def _chunks() -> typing.AsyncIterator[bytes]:
    """A body sent chunked that holds nothing."""
    for chunk in ():
        yield chunk


def test_the_verdicts_are_the_same_everywhere() -> None:
    """One list in Python (``gateway.events.VERDICTS``); the analysts' body type, the OpenAPI
    document and the store's CHECK constraint spell it out and must agree with it."""
    assert typing.get_args(typing.get_type_hints(VerdictBody)["verdict"]) == VERDICTS
    spec = openapi_document()
    enums = re.findall(r"'verdict': \{'enum': (\[[^\]]*\])", str(spec))
    assert enums and all(enum in (str(list(VERDICTS)), str([*VERDICTS, None])) for enum in enums)
    migration = Path(__file__).parents[2] / "storage" / "migrations" / "0003_bots_geo.sql"
    check = ", ".join(f"'{v}'" for v in VERDICTS)
    assert f"verdict IN ({check})" in migration.read_text()


@pytest.mark.parametrize("path", ["/api/touchpoints", "/api/review", "/api/bad-events"])
async def test_a_huge_limit_is_a_400_naming_it(gw, path: str) -> None:
    status, _, body = await get(gw, path, AUTH, limit="9" * 5000)
    assert status == 400 and body["error"].startswith("limit: expected a whole number 1..1000")
    status, _, body = await get(gw, path, AUTH, limit="0" * 5000 + "1")  # leading zeros: still 1
    assert status == 200, body


async def test_a_token_that_is_not_utf8_is_just_wrong(gw) -> None:
    """A raw 0xE9 in the header (aiohttp keeps it as a surrogate) is a wrong token, not a 500."""
    request = b"GET /api/touchpoints HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer tok\xe9n\r\n"
    resp = await raw_request(gw.admin.port, request + b"Connection: close\r\n\r\n")
    assert resp.status == 401 and resp.headers["WWW-Authenticate"] == "Bearer"
    assert json.loads(resp.body)["error"] == "wrong admin token"


@pytest.mark.parametrize(
    ("target", "named"), [("example.com:443", "example.com:443"), ("/api/nothing", "/api/nothing")]
)
async def test_an_unknown_target_is_named_in_the_404(gw, target: str, named: str) -> None:
    """A CONNECT's target has no path: the answer names the target as sent, not nothing."""
    method = "CONNECT" if not target.startswith("/") else "GET"
    request = (
        f"{method} {target} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    )
    resp = await raw_request(gw.admin.port, request.encode())
    assert resp.status == 404, resp
    assert json.loads(resp.body)["error"] == f"no such endpoint: {named}"


@pytest.mark.parametrize("second", [TOKEN, "wrong"])
async def test_authorization_given_twice_is_a_401(gw, second: str) -> None:
    """aiohttp reads the first of two Authorization lines; the second (a proxy's, a script's
    leftover) would pass unseen, so neither is believed."""
    request = (
        f"GET /api/touchpoints HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Authorization: Bearer {second}\r\nConnection: close\r\n\r\n"
    ).encode()
    resp = await raw_request(gw.admin.port, request)
    assert resp.status == 401 and resp.headers["WWW-Authenticate"] == "Bearer"
    assert json.loads(resp.body)["error"] == "Authorization given more than once; send it once"


@pytest.mark.parametrize(
    "path",
    ["/api/touchpoints/0190a2b4-0000-7000-8000-000000000000/verdict", "/api/creators/cr_anna"],
)
async def test_a_body_that_does_not_decode_is_a_400(gw, path: str, caplog: pytest.LogCaptureFixture) -> None:
    """Answered, and no traceback logged after it: aiohttp drained the rest of the body it
    could not decode once the answer was out, and logged the failure as unhandled."""
    headers = {**AUTH, "Content-Encoding": "gzip", "Content-Type": "application/json"}
    method = "POST" if path.endswith("/verdict") else "PUT"
    async with gw.session.request(method, gw.admin_url + path, data=b"abcd", headers=headers) as resp:
        assert resp.status == 400
        body = await resp.json()
    assert body == {"ok": False, "status": 400, "error": "body: cannot decode its Content-Encoding"}
    await asyncio.sleep(0.05)  # the connection's handler finishes after the answer
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]


async def test_larger_answers_are_gzip_compressed_for_a_client_that_accepts_it(gw) -> None:
    """A ten-year time series as CSV was 2.2 MB over the wire whatever the client accepted
    (curl ``--compressed``, browsers, the dashboard's fetches): the admin API never compressed.
    Listings, downloads (streamed) and the OpenAPI document now come gzip-compressed to a client
    that accepts gzip, with ``Vary: Accept-Encoding``; tiny answers and a HEAD as they are."""
    cookie = None
    for n in range(30):
        cookie = await land(gw, f"utm_source=news&utm_medium=email&utm_campaign=c{n}", cookie)
    raw = aiohttp.ClientSession(auto_decompress=False, skip_auto_headers=["Accept-Encoding"])
    gzipped = {**AUTH, "Accept-Encoding": "gzip, deflate, br"}
    try:
        for path, params in (
            ("/api/touchpoints", {}),
            ("/api/touchpoints", {"format": "csv"}),
            ("/api/touchpoints", {"format": "ndjson"}),
            ("/api/openapi.json", {}),
        ):
            async with raw.get(gw.admin_url + path, params=params, headers=AUTH) as resp:
                plain = await resp.read()
                assert resp.status == 200 and "Content-Encoding" not in resp.headers, (path, params)
                assert "Accept-Encoding" in resp.headers["Vary"], (path, params)
            async with raw.get(gw.admin_url + path, params=params, headers=gzipped) as resp:
                body = await resp.read()
                assert resp.headers["Content-Encoding"] == "gzip", (path, params)
                assert "Accept-Encoding" in resp.headers["Vary"], (path, params)
                if "format" in params:  # streamed: chunked, so a download cut short stays cut
                    assert resp.headers["Transfer-Encoding"] == "chunked"
                    assert "Content-Length" not in resp.headers
                    assert resp.headers["Vary"] == "Accept-Encoding"  # format= chose, not Accept
                else:
                    assert int(resp.headers["Content-Length"]) == len(body)
            unzipped = gzip.decompress(body)
            if "format" in params:
                assert unzipped == plain
            else:  # the same answer, but for when it was made
                assert json.loads(unzipped).keys() == json.loads(plain).keys()
            assert len(body) < len(unzipped) / 3, (path, len(body), len(unzipped))
        # gzip refused, or not offered: as it is.
        for offered in ("gzip;q=0, deflate", "br", "identity"):
            async with raw.get(
                gw.admin_url + "/api/touchpoints", headers={**AUTH, "Accept-Encoding": offered}
            ) as resp:
                assert "Content-Encoding" not in resp.headers, offered
        async with raw.get(
            gw.admin_url + "/api/touchpoints", headers={**AUTH, "Accept-Encoding": "*"}
        ) as resp:
            assert resp.headers["Content-Encoding"] == "gzip"
        # A tiny answer (an error, health) and a HEAD go as they are.
        for method, path in (
            ("GET", "/healthz"),
            ("GET", "/api/touchpoints?limit=x"),
            ("HEAD", "/api/touchpoints"),
        ):
            async with raw.request(method, gw.admin_url + path, headers=gzipped) as resp:
                assert "Content-Encoding" not in resp.headers, (method, path)
        async with raw.head(gw.admin_url + "/api/touchpoints?format=csv", headers=gzipped) as resp:
            assert resp.status == 200 and "Content-Encoding" not in resp.headers
            assert resp.headers["Vary"] == "Accept-Encoding"
        # The proxy listener passes the site's answer on as it came: never compressed by us.
        async with raw.get(gw.url + "/" + "x" * 2000, headers={"Accept-Encoding": "gzip"}) as resp:
            assert "Content-Encoding" not in resp.headers and await resp.read() == b"ok"
    finally:
        await raw.close()


async def test_a_compressed_download_cut_short_stays_visibly_cut() -> None:
    """A download whose store fails part way is cut (no last chunk), never ended as if whole:
    compressed too, where the gzip stream then lacks its trailer as well."""
    calls = 0

    async def page(cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise OSError("the store went away")
        return [{"id": str(n), "source": "x" * 50} for n in range(500)], "next"

    async def handler(request: web.Request) -> web.StreamResponse:
        return await listing_export.download(request, "touchpoints", "csv", False, "t.csv", page, None)

    app = web.Application()
    app.router.add_get("/api/touchpoints", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with (
            aiohttp.ClientSession(auto_decompress=False) as client,
            client.get(
                f"http://127.0.0.1:{port}/api/touchpoints", headers={"Accept-Encoding": "gzip"}
            ) as resp,
        ):
            assert resp.headers["Content-Encoding"] == "gzip"
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
    finally:
        await runner.cleanup()
