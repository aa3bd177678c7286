"""DELETE /api/visitors/{visitor_id}: an anonymous visitor's erasure (GDPR Art. 17), by the
cookie value they give, the raw visitor ID or the visitor_key, as the journey lookup takes them.

Touchpoints come from real landings through the gateway; the bad events, a binding and a
conversion are written through the gateway's own store."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from jsonschema import Draft202012Validator
from yarl import URL

from gateway.badbody import body_key, seal, unseal
from gateway.events import BadEvent, Binding, Conversion, iso
from gateway.ids import uuid7
from gateway.openapi import openapi_document
from tests.conftest import TOKEN, WRITE_KEY, BatchApi, GatewayFactory, RunningGateway, sink_toml

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def gw(start_gateway, upstream_server) -> RunningGateway:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    return await start_gateway(await upstream_server(app))


async def land(gw: RunningGateway, query: str, cookie: str | None = None) -> str:
    """A landing (from a new device, or the one of ``cookie``); the gw_vid cookie's value."""
    headers = {"Cookie": f"gw_vid={cookie}"} if cookie else {}
    async with gw.session.get(f"{gw.url}/pricing?{query}", headers=headers) as resp:
        assert resp.status == 200
        for value in resp.headers.getall("Set-Cookie", []):
            if value.startswith("gw_vid="):
                return value.split(";")[0].removeprefix("gw_vid=")
    assert cookie is not None
    return cookie


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(sql).fetchall()


def delete_schema() -> dict[str, Any]:
    doc = openapi_document()["paths"]["/api/visitors/{visitor_id}"]["delete"]
    return dict(doc["responses"]["200"]["content"]["application/json"]["schema"])


async def test_an_anonymous_visitor_is_erased_by_the_cookie_value(gw: RunningGateway) -> None:
    """The visitor gives the value of their gw_vid cookie: the erasure takes their touchpoints,
    the conversion recorded on them, the kept bad events naming them (by the cookie value or the
    raw ID), and records an erasure for the central store; another visitor's rows stay. Before,
    ``DELETE /api/visitors/…`` was a 405 and only retention removed them."""
    cookie = await land(gw, "utm_source=newsletter")
    await land(gw, "utm_source=ads", cookie)
    other = await land(gw, "utm_source=other")
    keys = gw.gateway.keys
    visitor_key = keys.visitor_key(cookie.split(".")[1])
    now = datetime.now(UTC)
    ts = iso(now)
    seal_key = body_key(gw.gateway.settings.secret)

    def bad(body: str) -> BadEvent:
        return BadEvent(uuid7(), ts, "test", "crm", seal(seal_key, "unmapped"), seal(seal_key, body))

    kept = bad('{"anonymousId": "someone-else"}')
    await gw.gateway.store.write(
        [
            Conversion(uuid7(), ts, "test", "signup", "signup:1", visitor_key, None, None, None),
            bad(f'{{"context": {{"visitor": "{cookie}"}}}}'),
            bad(f'{{"anonymousId": "{cookie.split(".")[1]}"}}'),
            kept,
        ]
    )
    async with gw.session.delete(f"{gw.admin_url}/api/visitors/{cookie}", headers=AUTH) as resp:
        body = await resp.json()
    assert resp.status == 200, body
    Draft202012Validator(delete_schema()).validate(body)
    assert body["visitor_keys"] == [visitor_key] and body["bound_users"] == 0
    assert body["erased"] == {
        "verdict_changes": 0,
        "touchpoints": 2,
        "conversions": 1,
        "identities": 0,
        "bad_events": 2,
    }
    path = gw.gateway.settings.store_path
    left = await asyncio.to_thread(rows, path, "SELECT visitor_key FROM touchpoints")
    assert left == [(keys.visitor_key(other.split(".")[1]),)]
    assert await asyncio.to_thread(rows, path, "SELECT count(*) FROM conversions") == [(0,)]
    bodies = await asyncio.to_thread(rows, path, "SELECT body FROM bad_events")
    assert [unseal(seal_key, b) for (b,) in bodies] == ['{"anonymousId": "someone-else"}']
    recorded = await asyncio.to_thread(rows, path, "SELECT user_key, visitors, ts FROM erasures")
    assert recorded == [(visitor_key, f'["{visitor_key}"]', recorded[0][2])]
    # Looked up afterwards, by the cookie value: erased, and when.
    async with gw.session.get(f"{gw.admin_url}/api/visitors/{cookie}", headers=AUTH) as resp:
        said = await resp.json()
    assert (resp.status, said["error"]) == (
        404,
        f"no touchpoints recorded for this visitor: erased on {recorded[0][2]}",
    )


async def test_a_bound_visitors_erasure_keeps_the_users_binding_and_says_so(gw: RunningGateway) -> None:
    """A visitor who logged in: its own rows go, its binding to the user stays (the user's: their
    erasure takes it), counted in the answer; the user's conversion on another device stays."""
    cookie = await land(gw, "utm_source=newsletter")
    keys = gw.gateway.keys
    phone, laptop = keys.visitor_key(cookie.split(".")[1]), keys.visitor_key("laptop-1")
    user = keys.user_key("u-42")
    ts = iso(datetime.now(UTC))
    await gw.gateway.store.write(
        [
            Binding(uuid7(), ts, "test", phone, user, "login"),
            Binding(uuid7(), ts, "test", laptop, user, "login"),
            Conversion(uuid7(), ts, "test", "buy", "order:1", laptop, user, 5.0, "EUR"),
        ]
    )
    async with gw.session.delete(f"{gw.admin_url}/api/visitors/{phone}", headers=AUTH) as resp:
        body = await resp.json()
    assert resp.status == 200, body
    assert body["bound_users"] == 1 and body["erased"]["touchpoints"] == 1
    path = gw.gateway.settings.store_path
    assert await asyncio.to_thread(rows, path, "SELECT count(*) FROM identities") == [(2,)]
    assert await asyncio.to_thread(rows, path, "SELECT count(*) FROM conversions") == [(1,)]


async def test_a_visitor_landing_again_with_the_erased_cookie_is_new_activity(gw: RunningGateway) -> None:
    """The erasure cannot reach the browser, which keeps its cookie: a landing with it after the
    erasure is recorded under the same visitor key, dated after the erasure (what the README
    says of it), and the lookup shows that landing, not the erasure; the erased one stays gone."""
    cookie = await land(gw, "utm_source=newsletter&utm_campaign=before")
    async with gw.session.delete(f"{gw.admin_url}/api/visitors/{cookie}", headers=AUTH) as resp:
        assert resp.status == 200 and (await resp.json())["erased"]["touchpoints"] == 1
    assert await land(gw, "utm_source=ads&utm_campaign=after", cookie) == cookie
    path = gw.gateway.settings.store_path
    (erased_at,) = (await asyncio.to_thread(rows, path, "SELECT ts FROM erasures"))[0]
    visitor_key = gw.gateway.keys.visitor_key(cookie.split(".")[1])
    kept = await asyncio.to_thread(rows, path, "SELECT visitor_key, campaign, ts FROM touchpoints")
    assert [(v, c) for v, c, _ in kept] == [(visitor_key, "after")] and kept[0][2] > erased_at
    journey = await gw.api(f"/api/visitors/{cookie}")
    assert [t["campaign"] for t in journey["touchpoints"]] == ["after"]


@pytest.mark.parametrize("given", ["%20", "a%09b"])
async def test_a_visitor_id_no_lookup_reads_is_a_400(gw: RunningGateway, given: str) -> None:
    async with gw.session.delete(f"{gw.admin_url}/api/visitors/{given}", headers=AUTH) as resp:
        body = await resp.json()
    assert resp.status == 400 and body["error"].startswith("visitor_id: expected a visitor_key"), body
    assert await asyncio.to_thread(rows, gw.gateway.settings.store_path, "SELECT count(*) FROM erasures") == [
        (0,)
    ]


async def test_an_erasure_s_answer_says_what_the_sinks_keep(
    start_gateway: GatewayFactory, upstream_server, batch_api: BatchApi
) -> None:
    """``gateway erase`` says that what the sinks sent before stays at their destinations (Segment
    keeps its profiles: delete them there); until 2026-12-07 the admin API's erasures, which a
    data-subject request tool calls, answered the counts alone, as if the store were the only
    copy. Without a sink nor ``[central]`` there is nowhere else to name."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    origin = await upstream_server(app)
    alone = await start_gateway(origin)
    gw = await start_gateway(origin, sink_toml(batch_api, interval_seconds=0.05), {"SINK_SECRET": WRITE_KEY})
    for running in (alone, gw):
        cookie = await land(running, "utm_source=newsletter")
        async with running.session.delete(f"{running.admin_url}/api/visitors/{cookie}", headers=AUTH) as resp:
            visitor = await resp.json()
        async with running.session.delete(f"{running.admin_url}/api/users/alice", headers=AUTH) as resp:
            user = await resp.json()
        for answer, path in ((visitor, "/api/visitors/{visitor_id}"), (user, "/api/users/{user_id}")):
            schema = openapi_document()["paths"][path]["delete"]["responses"]["200"]
            Draft202012Validator(schema["content"]["application/json"]["schema"]).validate(answer)
        if running is alone:
            assert (visitor["elsewhere"], user["elsewhere"]) == ([], [])
        else:
            for answer in (visitor, user):
                [said] = answer["elsewhere"]
                assert "what the sinks sent before stays at their destinations: delete it there" in said


REFUSED = (
    "visitor_id: expected a visitor_key (32 hex digits), a visitor ID (1..2000 printable characters)"
    " or the gw_vid cookie's value (v1.<id>.<tag>: alone, as gw_vid=v1.… or in a Cookie header), {got};"
    " no visitor has it as their ID"
)


@pytest.mark.parametrize(
    ("given", "got"),
    [
        (
            "https://shop.example/?gw_vid=AbCdEfGhIjKlMnOpQrStUv",
            "got a URL of https://shop.example (51 characters; what follows its host not shown: a"
            " session's token may be in it)",
        ),
        (
            "gw_vid=AbCdEfGhIjKlMnOpQrStUv",
            "got a gw_vid cookie whose value is not the gateway's, 'AbCdEfGhIjKlMnOpQrSt…'",
        ),
        ("session=s3cr3t; _ga=GA1.2.3", "got cookies session, _ga (values not shown), none of them gw_vid"),
        # A Cookie header's line copied from a request that sent none: erased as the visitor
        # ID "Cookie:" until 2026-12-08.
        ("Cookie: ", "got a Cookie header with no cookie in it"),
        ("cookie: ;", "got a Cookie header with no cookie in it"),
    ],
)
async def test_a_pasted_url_or_cookies_not_ours_are_refused_and_no_erasure_recorded(
    gw: RunningGateway, given: str, got: str
) -> None:
    """A DPO pasted a page's address or the wrong cookies: the erasure answered 200 with every
    count 0 and recorded an erasure of a visitor no one is, so the person read as erased while
    their rows stayed. A 400 in the lookup's words now, and nothing recorded."""
    url = URL(f"{gw.admin_url}/api/visitors/{quote(given, safe='')}", encoded=True)
    async with gw.session.delete(url, headers=AUTH) as resp:
        body = await resp.json()
    assert (resp.status, body.get("error")) == (400, REFUSED.format(got=got)), body
    assert "s3cr3t" not in body["error"]
    path = gw.gateway.settings.store_path
    assert await asyncio.to_thread(rows, path, "SELECT count(*) FROM erasures") == [(0,)]


async def test_a_visitor_a_sender_named_by_such_a_text_is_still_erased(gw: RunningGateway) -> None:
    """A sender may name any printable text as a visitor ID: a visitor recorded under one of a
    URL's or a cookie's shape (a conversion, or only a kept bad event naming it) is erased by it."""
    keys = gw.gateway.keys
    ts = iso(datetime.now(UTC))
    seal_key = body_key(gw.gateway.settings.secret)
    url_id, cookie_id = "https://shop.example/?gw_vid=x", "session=a; _ga=b"
    await gw.gateway.store.write(
        [
            Conversion(uuid7(), ts, "test", "signup", "signup:1", keys.visitor_key(url_id), None, None, None),
            BadEvent(
                uuid7(),
                ts,
                "test",
                "crm",
                seal(seal_key, "x"),
                seal(seal_key, f'{{"anonymousId": "{cookie_id}"}}'),
            ),
        ]
    )
    for given, erased in ((url_id, "conversions"), (cookie_id, "bad_events")):
        url = URL(f"{gw.admin_url}/api/visitors/{quote(given, safe='')}", encoded=True)
        async with gw.session.delete(url, headers=AUTH) as resp:
            body = await resp.json()
        assert resp.status == 200 and body["erased"][erased] == 1, body
        assert body["visitor_keys"] == [keys.visitor_key(given)]
    path = gw.gateway.settings.store_path
    assert await asyncio.to_thread(rows, path, "SELECT count(*) FROM erasures") == [(2,)]
    # Erased, such a text is no longer refused: an erasure is recorded under it (erasing twice is harmless).
    url = URL(f"{gw.admin_url}/api/visitors/{quote(url_id, safe='')}", encoded=True)
    async with gw.session.delete(url, headers=AUTH) as resp:
        assert resp.status == 200, await resp.json()
