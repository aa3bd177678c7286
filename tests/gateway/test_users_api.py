"""GET and DELETE /api/users/{user_id}: a user's journey across devices, and its erasure.

Touchpoints come from real landings through the gateway; bindings and conversions are written
through the gateway's own store (the rules and webhooks that produce them are tested on their
own), so this checks the join and the erasure, not how bindings arise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from jsonschema import Draft202012Validator

from addons.identity import cookie_value
from gateway.badbody import body_key, seal, unseal
from gateway.events import BadEvent, Binding, Conversion, iso
from gateway.ids import uuid7
from tests.conftest import TOKEN, RunningGateway, make_settings
from tests.gateway.test_openapi import response_schema

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def schema_for(method: str, status: int) -> dict[str, Any]:
    schema = response_schema("/api/users/{user_id}", status)
    if method == "delete":
        from gateway.openapi import openapi_document

        doc = openapi_document()["paths"]["/api/users/{user_id}"]["delete"]
        schema = doc["responses"][str(status)]["content"]["application/json"]["schema"]
    return schema


@pytest.fixture
async def gw(start_gateway, upstream_server) -> RunningGateway:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    return await start_gateway(await upstream_server(app))


async def land(gw: RunningGateway, query: str) -> str:
    """A landing from a new device; the visitor_key it was recorded under."""
    async with gw.session.get(f"{gw.url}/pricing?{query}") as resp:
        assert resp.status == 200
    items = (await gw.api("/api/touchpoints"))["items"]
    return str(items[-1]["visitor_key"])


def now_event() -> tuple[str, str]:
    now = datetime.now(UTC)
    return uuid7(int(now.timestamp() * 1000)), iso(now)


async def bind(gw: RunningGateway, visitor_key: str, user_id: str) -> None:
    event_id, ts = now_event()
    user_key = gw.gateway.keys.user_key(user_id)
    await gw.gateway.store.write(
        [Binding(id=event_id, ts=ts, node="test", visitor_key=visitor_key, user_key=user_key, rule="login")]
    )


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(sql).fetchall()


async def test_user_journey_spans_devices(gw: RunningGateway) -> None:
    laptop = await land(gw, "utm_source=newsletter&utm_medium=email&utm_campaign=launch")
    await asyncio.sleep(0.002)
    phone = await land(gw, "c_source=instagram&c_medium=social&creator_id=cr_1")
    await land(gw, "utm_source=someone-else")
    await bind(gw, laptop, "alice")
    await bind(gw, phone, "alice")
    event_id, ts = now_event()
    await gw.gateway.store.write(
        [
            Conversion(
                id=event_id,
                ts=ts,
                node="test",
                name="purchase",
                dedup_key="order:1",
                user_key=gw.gateway.keys.user_key("alice"),
                value=50.0,
                currency="EUR",
                order_id="1",
            )
        ]
    )

    async with gw.session.get(gw.admin_url + "/api/users/alice", headers=AUTH) as resp:
        assert resp.status == 200
        body = await resp.json()
    Draft202012Validator(schema_for("get", 200)).validate(body)
    assert [v["visitor_key"] for v in body["visitors"]] == [laptop, phone]
    assert [t["visitor_key"] for t in body["touchpoints"]] == [laptop, phone]  # time order
    assert body["first_touch"]["source"] == "newsletter"
    assert body["last_touch"]["creator_id"] == "cr_1"
    assert [c["value"] for c in body["conversions"]] == [50.0]
    assert "alice" not in str(body)  # keys only, never the raw ID (hash mode)


async def test_the_lookup_finds_what_an_erasure_would_erase(gw: RunningGateway) -> None:
    """Rows kept under an earlier ``identity.user_id_storage`` (``plain`` here, before the
    default ``hash``) and, when a rule lower-cases, under the lower-cased ID: an erasure finds
    them all, and the lookup now does too (it read the current mode's key of the ID as typed
    alone: a 404 for a user the erasure then erased)."""
    from dataclasses import replace

    old_phone = await land(gw, "utm_source=before")
    await asyncio.sleep(0.002)
    laptop = await land(gw, "utm_source=after")
    event_id, ts = now_event()
    plain = replace(gw.gateway.keys, user_mode="plain").user_key("Ada@Example.com")
    await gw.gateway.store.write([Binding(event_id, ts, "test", old_phone, plain, "login")])
    await bind(gw, laptop, "Ada@Example.com")
    async with gw.session.get(gw.admin_url + "/api/users/Ada@Example.com", headers=AUTH) as resp:
        body = await resp.json()
    assert resp.status == 200, body
    assert [v["visitor_key"] for v in body["visitors"]] == [old_phone, laptop]
    assert body["user_key"] == gw.gateway.keys.user_key("Ada@Example.com")  # the current form's
    async with gw.session.delete(gw.admin_url + "/api/users/Ada@Example.com", headers=AUTH) as resp:
        assert (await resp.json())["visitors"] == 2  # what the lookup showed


@pytest.mark.parametrize("by_reload", [False, True])
async def test_the_lookup_finds_a_lower_casing_rule_s_user_as_the_person_writes_the_id(
    start_gateway, upstream_server, tmp_path, by_reload: bool
) -> None:
    """Also when the rule came by a reload (SIGHUP): the admin API read the start's rules."""
    rule = (
        '[[identity.rules]]\nname = "login"\npath = "/login"\nstatus = [302]\n'
        'user_id = { form = "email" }\nlowercase = true\n'
    )
    gw = await start_gateway(await upstream_server(web.Application()), "" if by_reload else rule)
    if by_reload:
        assert await gw.gateway.reload(make_settings(tmp_path, rule)) == []
    event_id, ts = now_event()
    key = gw.gateway.keys.user_key("ada@example.com")  # as the rule records it
    await gw.gateway.store.write([Binding(event_id, ts, "test", "v" * 32, key, "login")])
    async with gw.session.get(gw.admin_url + "/api/users/Ada@Example.com", headers=AUTH) as resp:
        body = await resp.json()
    assert resp.status == 200 and [v["visitor_key"] for v in body["visitors"]] == ["v" * 32], body
    # Shown under the key its rows are kept under, not the mixed-case ID's, which holds none.
    assert body["user_key"] == key, body
    assert set(body["visitors"][0]) == {"visitor_key", "first_bound", "bindings"}, body
    # Looked up as a visitor (the dashboard's lookup is set to one by default), the e-mail as the
    # person writes it is still told to be a user's: it answered as for an ID never seen, while
    # the lower-cased one was told "look it up as a user".
    for written in ("Ada@Example.com", "ada@example.com"):
        async with gw.session.get(gw.admin_url + f"/api/visitors/{written}", headers=AUTH) as resp:
            body = await resp.json()
        assert (resp.status, body["error"]) == (
            404,
            "no touchpoints recorded for this visitor; a user of this ID has a journey: look it up as a user",
        ), written
    # A conversion alone (no binding) is found, and named, alike.
    other = gw.gateway.keys.user_key("bob@example.com")
    await gw.gateway.store.write([Conversion(uuid7(), ts, "test", "signup", "s:1", None, other)])
    async with gw.session.get(gw.admin_url + "/api/users/Bob@Example.com", headers=AUTH) as resp:
        body = await resp.json()
    assert resp.status == 200 and body["user_key"] == other, body


async def test_the_user_key_a_journey_shows_looks_the_user_up(gw: RunningGateway) -> None:
    """The header of a journey and the conversions download show the user key: entered as a
    user ID, it answered "nothing recorded". Read as a key first (any case for hex), then as a
    raw ID, as the visitor lookup reads a visitor_key: a raw ID of 32 hex digits is still found."""
    from dataclasses import replace

    laptop = await land(gw, "utm_source=newsletter")
    await bind(gw, laptop, "alice")
    async with gw.session.get(gw.admin_url + "/api/users/alice", headers=AUTH) as resp:
        by_id = await resp.json()
    assert resp.status == 200, by_id
    key = by_id["user_key"]
    for given in (key, key.upper(), f" {key} "):
        async with gw.session.get(f"{gw.admin_url}/api/users/{given}", headers=AUTH) as resp:
            body = await resp.json()
        assert resp.status == 200, body
        Draft202012Validator(schema_for("get", 200)).validate(body)
        assert body == {**by_id, "looked_up_as": "user_key"}
    assert by_id["looked_up_as"] == "user_id"
    # A site whose user IDs are 32 hex digits (a UUID without dashes): no key of that text, the ID.
    raw = "0123456789abcdef0123456789abcdef"
    phone = await land(gw, "utm_source=tiktok")
    await bind(gw, phone, raw)
    async with gw.session.get(f"{gw.admin_url}/api/users/{raw}", headers=AUTH) as resp:
        body = await resp.json()
    assert resp.status == 200 and body["looked_up_as"] == "user_id", body
    assert [v["visitor_key"] for v in body["visitors"]] == [phone]
    # A key of another user_id_storage (rows kept before a change of mode): plain's id:…
    event_id, ts = now_event()
    plain = replace(gw.gateway.keys, user_mode="plain").user_key("carol")
    await gw.gateway.store.write([Binding(event_id, ts, "test", phone, plain, "login")])
    async with gw.session.get(f"{gw.admin_url}/api/users/{plain}", headers=AUTH) as resp:
        body = await resp.json()
    assert resp.status == 200 and (body["user_key"], body["looked_up_as"]) == (plain, "user_key"), body
    # Entered as a visitor, the 404 says it is a user's key.
    async with gw.session.get(f"{gw.admin_url}/api/visitors/{key}", headers=AUTH) as resp:
        body = await resp.json()
    assert resp.status == 404, body
    assert "the user_key of a user with a journey: look it up as a user" in body["error"]


@pytest.mark.parametrize(
    ("path", "status"),
    [("/api/users/nobody", 404), ("/api/users/" + "x" * 300, 400), ("/api/users/bob?x=1", 400)],
)
async def test_user_errors(gw: RunningGateway, path: str, status: int) -> None:
    async with gw.session.get(gw.admin_url + path, headers=AUTH) as resp:
        assert resp.status == status
        body = await resp.json()
    assert body["ok"] is False and body["status"] == status
    Draft202012Validator(response_schema("/api/users/{user_id}", status)).validate(body)
    async with gw.session.get(gw.admin_url + path) as resp:
        assert resp.status == 401


async def test_erase_removes_the_user_everywhere_locally(gw: RunningGateway) -> None:
    laptop = await land(gw, "utm_source=newsletter")
    phone = await land(gw, "utm_source=tiktok")
    stranger = await land(gw, "utm_source=other")
    await bind(gw, laptop, "u-42")
    await bind(gw, phone, "u-42")
    event_id, ts = now_event()
    key = body_key(gw.gateway.settings.secret)
    await gw.gateway.store.write(
        [
            Conversion(id=event_id, ts=ts, node="test", name="signup", dedup_key="w:1", visitor_key=phone),
            BadEvent(
                id=uuid7(),
                ts=ts,
                node="test",
                sender="crm",
                reason="x",
                body=seal(key, '{"user_id": "u-42"}'),
            ),
            BadEvent(
                id=uuid7(), ts=ts, node="test", sender="crm", reason="x", body=seal(key, '{"user_id": "u-7"}')
            ),
        ]
    )

    async with gw.session.delete(gw.admin_url + "/api/users/u-42", headers=AUTH) as resp:
        assert resp.status == 200
        body = await resp.json()
    Draft202012Validator(schema_for("delete", 200)).validate(body)
    assert body["erased"] == {
        "verdict_changes": 0,
        "touchpoints": 2,
        "conversions": 1,
        "identities": 2,
        "bad_events": 1,
    }
    assert body["visitors"] == 2

    async with gw.session.get(gw.admin_url + "/api/users/u-42", headers=AUTH) as resp:
        assert resp.status == 404
    remaining = [t["visitor_key"] for t in (await gw.api("/api/touchpoints"))["items"]]
    assert remaining == [stranger]
    path = gw.gateway.settings.store_path
    erasures = await asyncio.to_thread(rows, path, "SELECT user_key, visitors, counts FROM erasures")
    assert len(erasures) == 1 and "u-42" not in str(erasures)
    kept = await asyncio.to_thread(rows, path, "SELECT body FROM bad_events")
    assert [unseal(key, body) for (body,) in kept] == ['{"user_id": "u-7"}']
    # Erasing again is harmless: nothing left, nothing fails.
    async with gw.session.delete(gw.admin_url + "/api/users/u-42", headers=AUTH) as resp:
        assert resp.status == 200
        assert (await resp.json())["erased"]["touchpoints"] == 0


async def test_erase_removes_the_bad_events_that_name_only_a_visitor_of_the_user(gw: RunningGateway) -> None:
    """A sender's refused event about the user's device names the device alone (a Segment
    ``anonymousId``, the cookie value, a number), in its body or, cut short, in its reason:
    it is about the user all the same. Until 2026-12-05 the erasure looked for the raw user ID
    alone, and such an event stayed in the store after it."""
    keys = gw.gateway.keys
    cookie = cookie_value(keys.cookie_mac, "A" * 22)
    for raw in ("anon-7f3e", "A" * 22, "90210"):
        await bind(gw, keys.visitor_key(raw), "u-42")
    await bind(gw, keys.visitor_key("anon-other"), "u-7")
    key = body_key(gw.gateway.settings.secret)
    _, ts = now_event()

    def bad(body: str, reason: str = "x", cut: bool = False) -> BadEvent:
        return BadEvent(uuid7(), ts, "test", "crm", seal(key, reason), seal(key, body), cut)

    await gw.gateway.store.write(
        [
            bad('{"type": "order.paid", "anonymousId": "anon-7f3e"}'),
            bad(json.dumps({"type": "order.paid", "context": {"visitor": cookie}})),
            bad('{"type": "order.paid", "anonymousId": 90210}'),
            bad('{"type": "order.paid", "items": [{"sku": "', "anonymousId: 'anon-7f3e' ...", cut=True),
            bad('{"type": "order.paid", "anonymousId": "anon-other"}'),
            bad('{"type": "order.paid", "anonymousId": "never-bound"}'),
        ]
    )
    async with gw.session.delete(gw.admin_url + "/api/users/u-42", headers=AUTH) as resp:
        body = await resp.json()
    assert resp.status == 200 and body["visitors"] == 3, body
    assert body["erased"]["bad_events"] == 4
    kept = await asyncio.to_thread(rows, gw.gateway.settings.store_path, "SELECT body FROM bad_events")
    assert sorted(unseal(key, b) or "" for (b,) in kept) == [
        '{"type": "order.paid", "anonymousId": "anon-other"}',
        '{"type": "order.paid", "anonymousId": "never-bound"}',
    ]


async def test_a_lookup_of_an_erased_user_or_visitor_says_when_it_was_erased(gw: RunningGateway) -> None:
    """An operator checking that an erasure happened: the lookups answered as for someone never
    seen ("nothing recorded"), the same as for a mistyped ID. Now the 404 says when, from the
    erasure's record (keys and a time: nothing of the person)."""
    laptop = await land(gw, "utm_source=newsletter")
    await bind(gw, laptop, "u-42")
    await bind(gw, gw.gateway.keys.visitor_key("anon-7f3e"), "u-42")
    async with gw.session.delete(gw.admin_url + "/api/users/u-42", headers=AUTH) as resp:
        assert resp.status == 200
    path = gw.gateway.settings.store_path
    ((erased_at,),) = await asyncio.to_thread(rows, path, "SELECT ts FROM erasures")
    as_user = f"nothing recorded for this user: erased on {erased_at}"
    as_visitor = f"no touchpoints recorded for this visitor: erased on {erased_at}"
    never = "nothing recorded for this user (no identity binding, no conversion)"
    for route, given, said in [
        ("/api/users/{user_id}", "u-42", as_user),
        ("/api/visitors/{visitor_id}", laptop, as_visitor),  # by its key
        ("/api/visitors/{visitor_id}", "anon-7f3e", as_visitor),  # by the raw ID a sender sent
        ("/api/users/{user_id}", "u-7", never),  # never seen: as before
        ("/api/visitors/{visitor_id}", "anon-other", "no touchpoints recorded for this visitor"),
    ]:
        async with gw.session.get(gw.admin_url + route.split("{")[0] + given, headers=AUTH) as resp:
            body = await resp.json()
        assert (resp.status, body["error"]) == (404, said), given
        Draft202012Validator(response_schema(route, 404)).validate(body)
    # Back after the erasure (a new login): the journey, as for anyone.
    await bind(gw, await land(gw, "utm_source=again"), "u-42")
    async with gw.session.get(gw.admin_url + "/api/users/u-42", headers=AUTH) as resp:
        assert resp.status == 200


async def test_user_with_slash_in_id(gw: RunningGateway) -> None:
    visitor = await land(gw, "utm_source=a")
    await bind(gw, visitor, "team/alice")
    async with gw.session.get(gw.admin_url + "/api/users/team%2Falice", headers=AUTH) as resp:
        assert resp.status == 200, await resp.text()
    # Spaces around it, as intake trims them (" team/alice " binds team/alice): found (was a 404).
    async with gw.session.get(gw.admin_url + "/api/users/%20team%2Falice%20", headers=AUTH) as resp:
        assert resp.status == 200, await resp.text()
    async with gw.session.get(gw.admin_url + "/api/users/%20%20", headers=AUTH) as resp:
        assert resp.status == 400


@pytest.mark.timeout(30)
async def test_a_failed_erasure_logs_no_raw_user_id(
    gw: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """Another process holds the store's write lock past the erasure's busy timeout: the
    answer is a 503 to retry, and the log line names the route, not the path, which holds
    the raw user ID (logs are data at rest too)."""
    user_id = "jane.raw.user@example.com"
    locker = await asyncio.to_thread(
        sqlite3.connect, gw.gateway.settings.store_path, isolation_level=None, check_same_thread=False
    )
    try:
        await asyncio.to_thread(locker.execute, "BEGIN IMMEDIATE")
        with caplog.at_level(logging.DEBUG, logger="gateway"):
            async with gw.session.delete(f"{gw.admin_url}/api/users/{user_id}", headers=AUTH) as resp:
                # Busy, not broken: a 503 the caller may retry, not a 500.
                assert resp.status == 503 and resp.headers["Retry-After"] == "5"
                answer = await resp.json()
                assert answer["error"].startswith("the store is busy") and user_id not in str(answer)
                Draft202012Validator(response_schema("/api/users/{user_id}", 503, "delete")).validate(answer)
    finally:
        await asyncio.to_thread(locker.execute, "ROLLBACK")
        await asyncio.to_thread(locker.close)
    logged = [r for r in caplog.records if r.name.startswith("gateway")]
    assert any(
        r.getMessage().startswith("admin API: the store was busy on DELETE /api/users/{user_id} (")
        for r in logged
    ), [r.getMessage() for r in logged]
    for record in logged:
        assert user_id not in record.getMessage() and user_id not in str(record.exc_info)


async def test_an_erasure_on_a_store_a_newer_gateway_migrated_is_refused_and_said(gw: RunningGateway) -> None:
    """A newer gateway migrated the store under this running one: the erasure would leave the
    user in tables this one does not know, so it erases nothing and says why (a 503 naming the
    versions), not a 500."""
    visitor = await land(gw, "utm_source=news")
    await bind(gw, visitor, "jane@example.com")
    version = await asyncio.to_thread(_set_version, gw.gateway.settings.store_path, 999)
    try:
        async with gw.session.delete(f"{gw.admin_url}/api/users/jane@example.com", headers=AUTH) as resp:
            answer = await resp.json()
            assert resp.status == 503, answer
            assert "schema version 999, newer than this gateway knows" in answer["error"]
            Draft202012Validator(response_schema("/api/users/{user_id}", 503, "delete")).validate(answer)
    finally:
        await asyncio.to_thread(_set_version, gw.gateway.settings.store_path, version)
    assert (await gw.api("/api/users/jane@example.com"))["touchpoints"], "nothing was erased"


def _set_version(path: Path, version: int) -> int:
    """Set the store's schema version (as a newer gateway's migration would); the one before."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        before = int(db.execute("PRAGMA user_version").fetchone()[0])
        db.execute(f"PRAGMA user_version = {version}")
    return before


async def test_the_user_key_a_lookup_shows_erases_the_user(gw: RunningGateway) -> None:
    """A data-subject request traced through the dashboard gives the operator the user_key alone
    (under the default ``user_id_storage = "hash"`` the raw ID cannot be had back from it). The
    lookup took it; the erasure read it as a raw ID, answered 200 with every count 0 and kept the
    user. Read as the lookup reads it now: every row of the user goes, and the bad events are
    searched as far as a key allows (the user's devices, and each text a bad event names, keyed),
    which the answer says, with how many are kept and what to do."""
    keys = gw.gateway.keys
    laptop = await land(gw, "utm_source=newsletter")
    stranger = await land(gw, "utm_source=other")
    for device in (laptop, keys.visitor_key("anon-7f3e")):
        await bind(gw, device, "u-42")
    _, ts = now_event()
    sealing = body_key(gw.gateway.settings.secret)

    def bad(body: str) -> BadEvent:
        return BadEvent(uuid7(), ts, "test", "crm", seal(sealing, "x"), seal(sealing, body))

    await gw.gateway.store.write(
        [
            Conversion(uuid7(), ts, "test", "buy", "order:1", None, keys.user_key("u-42"), 5.0, "EUR"),
            bad('{"user_id": "u-42"}'),  # the ID as a whole JSON string: its key is the user's
            bad('{"anonymousId": "anon-7f3e"}'),  # a device of the user
            bad('{"note": "U-42 called"}'),  # another case: only a search by the raw ID finds it
            bad('{"user_id": "u-7"}'),  # someone else
        ]
    )
    key = (await gw.api("/api/users/u-42"))["user_key"]
    async with gw.session.delete(f"{gw.admin_url}/api/users/{key.upper()}", headers=AUTH) as resp:
        body = await resp.json()
    assert resp.status == 200, body
    Draft202012Validator(schema_for("delete", 200)).validate(body)
    assert (body["erased_as"], body["user_key"], body["visitors"]) == ("user_key", key, 2), body
    assert body["erased"] == {
        "verdict_changes": 0,
        "touchpoints": 1,
        "conversions": 1,
        "identities": 2,
        "bad_events": 2,
    }
    assert (body["raw_id_searched"], body["bad_events_kept"]) == (False, 2), body
    assert "not searched for the raw user ID" in body["note"], body
    assert "2 bad events are kept" in body["note"] and "erase by the raw user ID too" in body["note"]
    async with gw.session.get(gw.admin_url + "/api/users/u-42", headers=AUTH) as resp:
        assert resp.status == 404 and "erased on" in (await resp.json())["error"]
    assert [t["visitor_key"] for t in (await gw.api("/api/touchpoints"))["items"]] == [stranger]
    path = gw.gateway.settings.store_path
    erasures = await asyncio.to_thread(rows, path, "SELECT user_key, also_keys FROM erasures")
    assert erasures == [(key, "[]")]  # as a raw-ID erasure records it, for the central store
    kept = await asyncio.to_thread(rows, path, "SELECT body FROM bad_events")
    assert sorted(unseal(sealing, b) or "" for (b,) in kept) == [
        '{"note": "U-42 called"}',
        '{"user_id": "u-7"}',
    ]
    # Then by the raw ID, known after all: what the key could not find goes too.
    async with gw.session.delete(gw.admin_url + "/api/users/u-42", headers=AUTH) as resp:
        body = await resp.json()
    assert (body["erased_as"], body["raw_id_searched"], body["erased"]["bad_events"]) == ("user_id", True, 1)
    assert "note" not in body, body


async def test_a_text_of_a_key_s_shape_no_user_has_is_erased_as_a_raw_id_and_said(gw: RunningGateway) -> None:
    """A mistyped key (or a raw ID of 32 hex digits no one has): erased as a raw ID, as the lookup
    reads it then (nothing held: the zeros, as before), and the answer says how it was read, so
    that the operator does not take it for the erasure of the key's user."""
    await bind(gw, await land(gw, "utm_source=newsletter"), "u-42")
    typo = "0" * 31 + "1"
    async with gw.session.delete(f"{gw.admin_url}/api/users/{typo}", headers=AUTH) as resp:
        body = await resp.json()
    assert resp.status == 200, body
    Draft202012Validator(schema_for("delete", 200)).validate(body)
    assert body["erased_as"] == "user_id" and not any(body["erased"].values()), body
    assert "read as a raw user ID: no user has it as a user_key" in body["note"], body
    async with gw.session.delete(gw.admin_url + "/api/users/u-7", headers=AUTH) as resp:
        body = await resp.json()
    assert body["erased_as"] == "user_id" and "note" not in body, body
    assert (await gw.api("/api/users/u-42"))["visitors"], "the user stays"


async def test_an_encrypted_user_key_gives_the_raw_id_back_for_the_whole_erasure(
    start_gateway, upstream_server
) -> None:
    """Under ``user_id_storage = "encrypt"`` the key holds the raw ID: erased by the key, the
    bad events are searched for the raw ID, as an erasure by it does (any case here)."""
    gw = await start_gateway(
        await upstream_server(web.Application()), '[identity]\nuser_id_storage = "encrypt"\n'
    )
    await bind(gw, gw.gateway.keys.visitor_key("anon-7f3e"), "u-42")
    _, ts = now_event()
    sealing = body_key(gw.gateway.settings.secret)
    await gw.gateway.store.write(
        [BadEvent(uuid7(), ts, "test", "crm", seal(sealing, "x"), seal(sealing, '{"note": "U-42 called"}'))]
    )
    key = (await gw.api("/api/users/u-42"))["user_key"]
    assert key.startswith("siv:")
    async with gw.session.delete(f"{gw.admin_url}/api/users/{key}", headers=AUTH) as resp:
        body = await resp.json()
    assert resp.status == 200, body
    assert (body["erased_as"], body["raw_id_searched"], body["bad_events_kept"]) == ("user_key", True, 0)
    assert body["erased"]["bad_events"] == 1 and body["erased"]["identities"] == 1, body
    path = gw.gateway.settings.store_path
    [(user_key, also)] = await asyncio.to_thread(rows, path, "SELECT user_key, also_keys FROM erasures")
    assert user_key == key and json.loads(also), "the other modes' keys, as by the raw ID"
