"""Signed events and Segment calls keep what the proxy path refuses: a user, order or event ID of
``undefined`` (what a page's code writes where it has no value) bound everyone sent with it into
one user, or made every later order or event a duplicate of the first; an email address in a
campaign field or a landing path was stored as sent; an event ID holding a line break or a NUL was
accepted and echoed. A real gateway on loopback, each delivery signed as a sender signs it."""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.keys import Keys
from tests.conftest import ENV, SECRET, RunningGateway
from tests.gateway import test_inbound
from tests.gateway.test_inbound import (
    RECEIPT,
    SEGMENT,
    SOURCES_ENV,
    TIKTOK_RAW,
    basic,
    encode,
    gateway_cli,
    parse_metrics,
    post,
    rows,
    signed,
    write_config,
)

KEYS = Keys.from_master(SECRET.encode())
NO_VALUE = "is no value (what code writes where it has none: undefined, null…)"
gw = test_inbound.gw
"""The fixture: a gateway with the senders, in front of a plain site."""


async def left_out(gw: RunningGateway) -> dict[tuple[str, ...], float]:
    async with gw.session.get(
        gw.admin_url + "/metrics", headers={"Authorization": f"Bearer {ENV['GATEWAY_ADMIN_TOKEN']}"}
    ) as resp:
        metrics = parse_metrics(await resp.text())
    return {k[1:]: v for k, v in metrics.items() if k[0] == "gateway_inbound_left_out_total"}


async def test_a_placeholder_user_id_binds_no_one(
    gw: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.inbound")
    # Segment: analytics.js sends userId "undefined" where the site's code had none.
    calls = [
        {"type": "identify", "messageId": f"i{n}", "anonymousId": f"anon-{n}", "userId": who}
        for n, who in enumerate(["undefined", "\tnull ", "[object Object]", "user-5"])
    ]
    status, answer = await post(gw, encode({"batch": calls}), basic(SEGMENT), "/_gw/segment")
    assert status == 202 and (answer["accepted"], answer["ignored"]) == (1, 3), answer
    assert answer["results"][0]["reason"] == (
        "identify without both visitor_id (/anonymousId) and user_id (/userId): nothing to bind;"
        f" user_id (/userId): 'undefined' {NO_VALUE}"
    )
    # Our own layout: an identify needs its user ID, so one that is no value is refused.
    body = encode({"type": "identify", "event_id": "id-1", "visitor_id": "v-1", "user_id": "Undefined"})
    status, answer = await post(gw, body, signed(body))
    assert status == 400 and answer["errors"] == [
        f"user_id (/user_id): 'Undefined' {NO_VALUE}; identify binds a visitor to a user"
    ], answer
    assert await rows(gw, "SELECT visitor_key, user_key FROM identities") == [
        (KEYS.visitor_key("anon-3"), KEYS.user_key("user-5"))
    ]
    # A conversion with a visitor is recorded without the user; one with no one else is refused.
    body = encode(
        {"type": "conversion", "event_id": "c-1", "visitor_id": "v-2", "user_id": "NaN", "value": 5}
    )
    status, answer = await post(gw, body, signed(body))
    assert (status, answer) == (
        202,
        {
            "ok": True,
            "result": "accepted",
            "key": "c-1",
            "left_out": [f"user_id (/user_id): 'NaN' {NO_VALUE}"],
        },
    )
    # Spaces and tabs around it, as a template leaves them: still no value.
    body = encode(
        {"type": "conversion", "event_id": "c-3", "visitor_id": "v-3", "user_id": " undefined\t", "value": 6}
    )
    status, answer = await post(gw, body, signed(body))
    assert (status, answer["left_out"]) == (202, [f"user_id (/user_id): 'undefined' {NO_VALUE}"]), answer
    body = encode({"type": "conversion", "event_id": "c-2", "user_id": "nil", "value": 5})
    status, answer = await post(gw, body, signed(body))
    assert status == 400 and answer["errors"] == [
        "visitor_id (/visitor_id) / user_id (/user_id): one of them is needed;"
        f" user_id (/user_id): 'nil' {NO_VALUE}"
    ], answer
    assert await rows(gw, "SELECT visitor_key, user_key FROM conversions ORDER BY value") == [
        (KEYS.visitor_key("v-2"), None),
        (KEYS.visitor_key("v-3"), None),
    ]
    assert await left_out(gw) == {
        ('field="user_id"', 'reason="placeholder"', 'sender="segment"'): 3,
        ('field="user_id"', 'reason="placeholder"', 'sender="billing"'): 2,
    }
    said = [r.getMessage() for r in caplog.records if "left out, the event" in r.getMessage()]
    assert said == [
        f"source segment: user_id (/userId): 'undefined' {NO_VALUE}: left out, the event taken"
        " without it (logged once; gateway_inbound_left_out_total counts each): the sender's"
        " code sends this where it has no value",
        f"source billing: user_id (/user_id): 'NaN' {NO_VALUE}: left out, the event taken"
        " without it (logged once; gateway_inbound_left_out_total counts each): the sender's"
        " code sends this where it has no value",
    ]


async def test_a_placeholder_order_or_event_id_makes_no_later_event_a_duplicate(gw: RunningGateway) -> None:
    stamp = int(time.time()) - 5
    events = [
        {"type": "conversion", "event_id": f"o-{n}", "user_id": f"u{n}", "value": 10 + n, "order_id": order}
        for n, order in enumerate(["undefined", "undefined", "null"])
    ] + [
        {"type": "conversion", "event_id": key, "user_id": f"k{n}", "value": 20 + n, "timestamp": stamp}
        for n, key in enumerate(["undefined", "undefined", " None\t"])
    ]
    for event in events:
        body = encode(event)
        status, answer = await post(gw, body, signed(body))
        assert (status, answer["result"]) == (202, "accepted"), answer
    found = await rows(
        gw, "SELECT value, order_id, dedup_key LIKE 'event:billing:%' FROM conversions ORDER BY value"
    )
    assert found == [(v, None, 1) for v in (10.0, 11.0, 12.0, 20.0, 21.0, 22.0)]
    # Keyed by what else tells them apart (type, time, who and what), as one without an ID is,
    # and one of them sent again is still its duplicate.
    assert await rows(gw, f"SELECT count(*) FROM receipts WHERE key = '{RECEIPT('undefined')}'") == [(0,)]
    again = encode(events[4])
    status, answer = await post(gw, again, signed(again))  # a new delivery of that event
    assert (status, answer["result"]) == (200, "duplicate"), answer
    # Segment: a messageId that is no value keys a page by its delivery, not one key for all.
    pages = [
        {
            "type": "page",
            "messageId": "undefined",
            "anonymousId": f"a-{n}",
            "properties": {"path": "/p"},
            "context": {"campaign": {"source": "news"}},
        }
        for n in range(2)
    ]
    for page in pages:
        status, answer = await post(gw, encode(page), basic(SEGMENT), "/_gw/segment/v1/page")
        assert (status, answer["result"]) == (202, "accepted"), answer
    assert await rows(gw, "SELECT count(*) FROM touchpoints WHERE source = 'news'") == [(2,)]
    assert await rows(gw, f"SELECT count(*) FROM receipts WHERE key = '{RECEIPT('undefined')}'") == [(0,)]
    assert await left_out(gw) == {
        ('field="order_id"', 'reason="placeholder"', 'sender="billing"'): 3,
        ('field="event_id"', 'reason="placeholder"', 'sender="billing"'): 3,
        ('field="event_id"', 'reason="placeholder"', 'sender="segment"'): 2,
    }


async def test_an_email_in_a_signed_events_campaign_fields_is_not_stored(gw: RunningGateway) -> None:
    body = encode(
        {
            "type": "touchpoint",
            "event_id": "t-1",
            "visitor_id": "v-1",
            "source": "News",
            "campaign": "jane@example.com",
            "term": "jane%2540example.com",  # encoded twice: an address to anyone who reads it
            "content": "promo@2x",  # no address
            "click_id": "ab@c.de",  # an ad platform's token: not looked at
            "landing_path": "/unsubscribe/jane@example.com/logo@2x.png",
        }
    )
    status, answer = await post(gw, body, signed(body))
    assert (status, answer) == (
        202,
        {
            "ok": True,
            "result": "accepted",
            "key": "t-1",
            "left_out": [
                "campaign (/campaign): holds an email address (personal data is not stored)",
                "term (/term): holds an email address (personal data is not stored)",
            ],
        },
    ), answer
    page = {
        "type": "page",
        "messageId": "m-1",
        "anonymousId": "a-1",
        "properties": {"path": "/welcome/jane%40example.com"},
        "context": {"campaign": {"source": "news", "name": "*|jane@example.com|*"}},
    }
    status, answer = await post(gw, encode(page), basic(SEGMENT), "/_gw/segment/v1/page")
    assert (status, answer["result"]) == (202, "accepted"), answer
    assert await rows(
        gw, "SELECT source, campaign, term, content, click_id, landing_path FROM touchpoints ORDER BY id"
    ) == [
        ("news", None, None, "promo@2x", "ab@c.de", "/unsubscribe/(email)/logo@2x.png"),
        ("news", None, None, None, None, "/welcome/(email)"),
    ]
    # A touchpoint whose only campaign field was an address has nothing else: refused, saying why.
    body = encode({"type": "touchpoint", "event_id": "t-2", "visitor_id": "v-1", "campaign": "a@b.co"})
    status, answer = await post(gw, body, signed(body))
    assert status == 400 and answer["errors"] == [
        "touchpoint: needs at least one of source (/source), medium (/medium), campaign (/campaign),"
        " creator_id (/creator_id), click_id (/click_id); campaign (/campaign): holds an email address"
        " (personal data is not stored)"
    ], answer
    assert await left_out(gw) == {
        ('field="campaign"', 'reason="email"', 'sender="billing"'): 1,
        ('field="term"', 'reason="email"', 'sender="billing"'): 1,
        ('field="campaign"', 'reason="email"', 'sender="segment"'): 1,
    }


async def test_an_unprintable_event_id_is_refused_and_one_accepted_before_is_kept_as_is(
    gw: RunningGateway,
) -> None:
    for key in ("evt\n1", "evt\x002", "evt_3\t"):
        body = encode({"type": "conversion", "event_id": key, "user_id": "u1", "value": 1})
        status, answer = await post(gw, body, signed(body))
        assert status == 400 and answer["errors"] == [
            "event_id (/event_id): contains unprintable characters"
        ], answer
    page: dict[str, Any] = {
        "type": "page",
        "messageId": "m\r\n1",
        "anonymousId": "a-1",
        "context": {"campaign": {"source": "news"}},
    }
    status, answer = await post(gw, encode(page), basic(SEGMENT), "/_gw/segment/v1/page")
    assert status == 400 and answer["errors"] == ["event_id (/messageId): contains unprintable characters"]
    # Through a fallback pointer, named where it came from.
    body = encode({"type": "conversion", "messageId": "x\x00", "user_id": "u1", "value": 1})
    status, answer = await post(gw, body, signed(body))
    assert status == 400 and answer["errors"] == [
        "event_id (/event_id): the event key, from its /messageId, contains unprintable characters"
    ], answer
    assert await rows(gw, "SELECT count(*) FROM conversions") == [(0,)]
    assert await rows(gw, "SELECT count(*) FROM bad_events") == [(5,)]
    # Spaces around a key were accepted, and the key stays as sent: its receipt is found again.
    body = encode({"type": "conversion", "event_id": " evt 4 ", "user_id": "u1", "value": 1})
    status, answer = await post(gw, body, signed(body))
    assert (status, answer["key"]) == (202, " evt 4 "), answer
    assert await rows(gw, f"SELECT count(*) FROM receipts WHERE key = '{RECEIPT(' evt 4 ')}'") == [(1,)]


async def test_a_placeholder_visitor_id_joins_no_one(gw: RunningGateway) -> None:
    """A sender's code that reads the visitor cookie where there is none sends visitor_id
    "undefined": taken as a visitor, every user identified with it was bound to that one
    visitor, and every touchpoint sent with it was credited to each of them. It is no value, as
    a user ID of "undefined" is: the event is taken without it, or refused when it needs it."""
    for n, who in enumerate(["undefined", "Null"]):
        body = encode({"type": "identify", "event_id": f"i-{n}", "visitor_id": who, "user_id": f"user-{n}"})
        status, answer = await post(gw, body, signed(body))
        assert status == 400 and answer["errors"] == [
            f"visitor_id (/visitor_id): {who!r} {NO_VALUE}; identify binds a visitor to a user"
        ], answer
    body = encode({"type": "touchpoint", "event_id": "t-1", "visitor_id": "undefined", "source": "news"})
    status, answer = await post(gw, body, signed(body))
    assert status == 400 and answer["errors"] == [
        "visitor_id (/visitor_id) / user_id (/user_id): one of them is needed;"
        f" visitor_id (/visitor_id): 'undefined' {NO_VALUE}"
    ], answer
    body = encode(
        {"type": "conversion", "event_id": "c-1", "visitor_id": "NaN", "user_id": "u-9", "value": 5}
    )
    status, answer = await post(gw, body, signed(body))
    assert (status, answer["result"], answer["left_out"]) == (
        202,
        "accepted",
        [f"visitor_id (/visitor_id): 'NaN' {NO_VALUE}"],
    ), answer
    assert await rows(gw, "SELECT visitor_key, user_key FROM conversions") == [(None, KEYS.user_key("u-9"))]
    # Segment: an anonymousId of "undefined" with a real user binds no one either.
    call = {"type": "identify", "messageId": "s-1", "anonymousId": "undefined", "userId": "user-7"}
    status, answer = await post(gw, encode(call), basic(SEGMENT), "/_gw/segment")
    assert (status, answer["result"]) == (202, "ignored"), answer
    assert await rows(gw, "SELECT count(*) FROM identities") == [(0,)]
    assert await rows(gw, "SELECT count(*) FROM touchpoints") == [(0,)]
    assert await left_out(gw) == {
        ('field="visitor_id"', 'reason="placeholder"', 'sender="billing"'): 1,
        ('field="visitor_id"', 'reason="placeholder"', 'sender="segment"'): 1,
    }


async def test_replay_bad_names_an_event_whose_id_is_a_placeholder_as_one_with_none(
    gw: RunningGateway, tmp_path: Path
) -> None:
    """``gateway replay-bad`` names each bad event by its own key, else by its delivery's ID and
    place. An ``event_id`` of ``undefined`` is no key (the endpoint keyed the event by its
    delivery), but a still-bad one was named ``event undefined`` (until 2026-12-07): every such
    event by one name, none of them the key it is recorded under once the fix runs."""
    base = {"event": "creator.signup", "user": {"external_id": "u9"}}
    for msg_id, event in (("msg-ph", {**base, "event_id": "undefined"}), ("msg-none", base)):
        body = encode(event)
        status, _ = await post(gw, body, signed(body, TIKTOK_RAW, msg_id=msg_id))
        assert status == 400
    ids = [i for (i,) in await rows(gw, "SELECT id FROM bad_events ORDER BY id")]  # as posted
    env = {**ENV, **SOURCES_ENV}
    code, out, err = await gateway_cli(
        "replay-bad", "-c", str(await write_config(gw, tmp_path / "a.toml")), env=env
    )
    assert code == 0, err
    refused = (
        "still bad: type (/event): 'creator.signup' is not mapped"
        " (known: conversion, creator.click, identify, touchpoint; see types)"
    )
    assert out.splitlines()[1:3] == [
        f"{ids[0]} (sender tiktok, event msg-ph#0): {refused}",
        f"{ids[1]} (sender tiktok, event msg-none#0): {refused}",
    ], out
    fixed = await write_config(gw, tmp_path / "b.toml", 'types = {"creator.signup" = "conversion"}\n#')
    code, out, err = await gateway_cli("replay-bad", "-c", str(fixed), env=env)
    assert code == 0, err
    assert out.splitlines()[1:3] == [
        f"{ids[0]} (sender tiktok, event msg-ph#0): replayed: recorded",
        f"{ids[1]} (sender tiktok, event msg-none#0): replayed: recorded",
    ], out


async def test_a_placeholder_creator_or_sub_id_credits_no_creator(gw: RunningGateway) -> None:
    """A signed touchpoint or conversion read ``creator_id`` "undefined" as a creator (until
    2026-12-07), as the proxy read ``?creator_id=undefined``: credited, and paid. It is no value,
    as a placeholder user ID is: the event is taken without it, or refused when it was all the
    touchpoint's campaign data. Its key (an event without an ``event_id``) is the key it had."""
    stamp = int(time.time()) - 5
    body = encode(
        {
            "type": "touchpoint",
            "visitor_id": "v-1",
            "source": "insta",
            "creator_id": "undefined",
            "sub_id": " null\t",
            "timestamp": stamp,
        }
    )
    status, answer = await post(gw, body, signed(body))
    assert (status, answer["result"], answer["left_out"]) == (
        202,
        "accepted",
        [f"creator_id (/creator_id): 'undefined' {NO_VALUE}", f"sub_id (/sub_id): 'null' {NO_VALUE}"],
    ), answer
    assert answer["key"].startswith("touchpoint:undefined:"), answer  # the key it had
    again = encode({"type": "touchpoint", "event_id": "t-2", "visitor_id": "v-1", "creator_id": "NULL"})
    status, answer = await post(gw, again, signed(again))
    assert status == 400 and answer["errors"] == [
        "touchpoint: needs at least one of source (/source), medium (/medium), campaign (/campaign),"
        f" creator_id (/creator_id), click_id (/click_id); creator_id (/creator_id): 'NULL' {NO_VALUE}"
    ], answer
    body = encode(
        {
            "type": "conversion",
            "event_id": "c-1",
            "user_id": "u1",
            "value": 5,
            "creator_id": "anna",
            "sub_id": "s",
        }
    )
    status, answer = await post(gw, body, signed(body))
    assert (status, answer["result"]) == (202, "accepted"), answer
    assert await rows(gw, "SELECT source, creator_id, sub_id FROM touchpoints ORDER BY id") == [
        ("insta", None, None),
        (None, "anna", "s"),
    ]
    assert await left_out(gw) == {
        ('field="creator_id"', 'reason="placeholder"', 'sender="billing"'): 1,  # the written event's
        ('field="sub_id"', 'reason="placeholder"', 'sender="billing"'): 1,
    }


async def test_a_placeholder_click_id_or_campaign_field_is_left_out_and_keeps_the_key(
    gw: RunningGateway,
) -> None:
    """A signed touchpoint's ``click_id`` "undefined" was recorded as a click (until 2026-12-07):
    every event sent with it shared one Google ad click, Paid Search for a click that never was;
    a ``campaign`` "undefined" was a campaign of that name in the reports. Each is left out and
    counted, as the proxy drops ``?gclid=undefined``; the event is recorded by its other fields,
    or refused when it was all the touchpoint's campaign data. An event without an ``event_id``
    keeps the key it had (its click ID as read is in the key's digest), so its retry is still a
    duplicate."""
    stamp = int(time.time()) - 5
    event = {
        "type": "touchpoint",
        "visitor_id": "v-9",
        "source": "Google",
        "medium": "cpc",
        "campaign": "Undefined",
        "content": "[object Object]",
        "click_id": " undefined",
        "click_id_kind": "gclid",
        "timestamp": stamp,
    }
    body = encode(event)
    status, answer = await post(gw, body, signed(body))
    assert (status, answer["result"], answer["left_out"]) == (
        202,
        "accepted",
        [
            f"campaign (/campaign): 'Undefined' {NO_VALUE}",
            f"content (/content): '[object Object]' {NO_VALUE}",
            f"click_id (/click_id): 'undefined' {NO_VALUE}",
        ],
    ), answer
    # The key as versions before 2026-12-07 made it: type, no creator, the instant, the digest of
    # who and what (visitor, user, order, click ID, sub ID, name, value), the click ID as read.
    who = [KEYS.visitor_key("v-9"), None, None, "undefined", None, None, None]
    instant = datetime.fromtimestamp(stamp, UTC).replace(tzinfo=None).isoformat() + "Z"
    assert answer["key"] == f"touchpoint::{instant}:{hashlib.sha256(encode(who)).hexdigest()[:16]}"
    status, answer = await post(gw, body, signed(body))  # a new delivery of that event
    assert (status, answer["result"]) == (200, "duplicate"), answer
    only = encode({"type": "touchpoint", "event_id": "t-9", "visitor_id": "v-9", "click_id": "NaN"})
    status, answer = await post(gw, only, signed(only))
    assert status == 400 and answer["errors"] == [
        "touchpoint: needs at least one of source (/source), medium (/medium), campaign (/campaign),"
        f" creator_id (/creator_id), click_id (/click_id); click_id (/click_id): 'NaN' {NO_VALUE}"
    ], answer
    found = await rows(
        gw, "SELECT source, medium, campaign, content, click_id_kind, click_id, channel FROM touchpoints"
    )
    assert found == [("google", "cpc", None, None, None, None, "Paid Search")]
    assert await left_out(gw) == {
        ('field="campaign"', 'reason="placeholder"', 'sender="billing"'): 1,
        ('field="content"', 'reason="placeholder"', 'sender="billing"'): 1,
        ('field="click_id"', 'reason="placeholder"', 'sender="billing"'): 1,  # the written event's
    }


async def test_a_placeholder_click_id_kind_is_left_out_and_the_click_id_kept_as_without_one(
    gw: RunningGateway,
) -> None:
    """A signed touchpoint's ``click_id_kind`` "undefined" with a real click ID was recorded as
    sent (until 2026-12-07): a click of a kind named "undefined", told apart from one sent without
    a kind. Left out and counted now, as a click_id or campaign of a placeholder is; the click ID
    is kept, as an event without a kind keeps it: the two events' touchpoints are the same."""
    sent = {"type": "touchpoint", "visitor_id": "v-7", "click_id": "Cj0KCQiA-real"}
    bodies = [
        encode({**sent, "event_id": "k-1", "click_id_kind": " Undefined"}),
        encode({**sent, "event_id": "k-2"}),
    ]
    answers = [await post(gw, body, signed(body)) for body in bodies]
    assert [(status, answer["result"], answer.get("left_out", [])) for status, answer in answers] == [
        (202, "accepted", [f"click_id_kind (/click_id_kind): 'Undefined' {NO_VALUE}"]),
        (202, "accepted", []),
    ], answers
    found = await rows(gw, "SELECT click_id_kind, click_id, channel FROM touchpoints ORDER BY id")
    assert len(found) == 2 and found[0] == found[1] and found[0][:2] == (None, "Cj0KCQiA-real"), found
    assert await left_out(gw) == {
        ('field="click_id_kind"', 'reason="placeholder"', 'sender="billing"'): 1,
    }
