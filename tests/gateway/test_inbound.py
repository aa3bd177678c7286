"""Signed server-side events through a real gateway on loopback: /_gw/events and /_gw/segment,
authentication, deduplication by the store, bad events kept, the metrics invariant."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import hashlib
import hmac
import logging
import re
import sqlite3
import sys
import time
import tomllib
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiosqlite
import msgspec
import pytest
from aiohttp import web
from jsonschema import Draft202012Validator
from multidict import CIMultiDict

from gateway.attribution import STRIPE_MINOR_UNITS
from gateway.badbody import body_key, seal, unseal
from gateway.config import ConfigError, load_settings
from gateway.events import Conversion
from gateway.ids import uuid7
from gateway.keys import Keys
from gateway.replay import replay_bad
from gateway.send_test import unscaled
from gateway.signing import ReceiptKeys, legacy_signature, standard_signature
from gateway.sources import MAX_DEPTH
from tests.conftest import ENV, SECRET, RunningGateway
from tests.gateway.test_openapi import response_schema

BILLING = "b" * 32
BILLING_OLD = "o" * 32
LEGACY = "l" * 32
SEGMENT = "w" * 32
TIKTOK_RAW = b"t" * 32
SOURCES_ENV = {
    "BILLING_SECRET": BILLING,
    "BILLING_SECRET_OLD": BILLING_OLD,
    "LEGACY_SECRET": LEGACY,
    "SEGMENT_WRITE_KEY": SEGMENT,
    "TIKTOK_SECRET": "whsec_" + base64.b64encode(TIKTOK_RAW).decode(),
}
SOURCES = """
[webhooks]
max_batch = 5
max_body = 4096

[[sources]]
name = "billing"
secrets = ["env:BILLING_SECRET", "env:BILLING_SECRET_OLD"]
ignore_types = ["charge.refunded"]

[[sources]]
name = "legacy"
secrets = ["env:LEGACY_SECRET"]
legacy_hex = true

[[sources]]
name = "tiktok"
secrets = ["env:TIKTOK_SECRET"]
fields = {type = "/event", event_id = "/event_id", user_id = "/user/external_id", creator_id = "/creator/id"}
types = {"creator.click" = "touchpoint"}
defaults = {source = "tiktok", medium = "creator"}

[[sources]]
name = "segment"
format = "segment"
secrets = ["env:SEGMENT_WRITE_KEY"]
"""
KEYS = Keys.from_master(SECRET.encode())
RECEIPT = ReceiptKeys(SECRET.encode())
"""A receipt's key as the store holds it (keyed since 2026-12-07)."""
ROOT = Path(__file__).resolve().parents[2]
_ids = iter(range(1_000_000))


def signed(
    body: bytes, secret: bytes | str = BILLING, *, ts: int | None = None, msg_id: str | None = None
) -> dict[str, str]:
    key = secret.encode() if isinstance(secret, str) else secret
    stamp = str(int(time.time()) if ts is None else ts)
    msg_id = msg_id or f"msg_{next(_ids)}"
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": standard_signature(key, msg_id, stamp, body),
        "content-type": "application/json",
    }


def encode(payload: Any) -> bytes:
    return msgspec.json.encode(payload)


@pytest.fixture
async def gw(start_gateway, upstream_server) -> RunningGateway:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text="site")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", page)
    return await start_gateway(await upstream_server(app), SOURCES, SOURCES_ENV)


async def post(gw: RunningGateway, body: bytes, headers: dict[str, str], path: str = "/_gw/events"):
    async with gw.session.post(gw.url + path, data=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def rows(gw: RunningGateway, sql: str) -> list[tuple[Any, ...]]:
    async with aiosqlite.connect(gw.gateway.settings.store_path) as db, db.execute(sql) as cur:
        return list(await cur.fetchall())


def conversion(**extra: Any) -> dict[str, Any]:
    return {"type": "conversion", "event_id": f"e{next(_ids)}", "user_id": "u1", "value": 50, **extra}


async def test_good_conversion_is_stored_then_acknowledged(gw: RunningGateway) -> None:
    body = encode(conversion(order_id="o-1", currency="usd", name="purchase"))
    status, answer = await post(gw, body, signed(body))
    assert status == 202 and answer["ok"] is True and answer["result"] == "accepted"
    assert await rows(
        gw, "SELECT name, dedup_key, value, currency, origin, rule, user_key FROM conversions"
    ) == [("purchase", "order:o-1", 50.0, "USD", "webhook", "billing", KEYS.user_key("u1"))]


async def test_bad_and_stale_signatures_are_401_and_store_nothing(gw: RunningGateway) -> None:
    body = encode(conversion())
    for headers, what in (
        (signed(body, "x" * 32), "signature"),
        (signed(body + b" "), "signature"),
        ({"content-type": "application/json"}, "signature"),
        (signed(body, ts=int(time.time()) - 400), "timestamp"),
        (signed(body, ts=int(time.time()) + 400), "timestamp"),
    ):
        status, answer = await post(gw, body, headers)
        assert status == 401 and answer["error"].startswith(what + ":"), answer
    assert await rows(gw, "SELECT count(*) FROM receipts") == [(0,)]


async def test_replayed_delivery_and_repeated_event_are_duplicates(gw: RunningGateway) -> None:
    body = encode(conversion())
    headers = signed(body)
    assert (await post(gw, body, headers))[0] == 202
    status, answer = await post(gw, body, headers)  # the very same delivery again
    assert (status, answer) == (200, {"ok": True, "result": "duplicate"})
    status, answer = await post(gw, body, signed(body))  # a new delivery of the same event
    assert status == 200 and answer["result"] == "duplicate"
    assert await rows(gw, "SELECT count(*) FROM conversions") == [(1,)]


async def test_a_delivery_id_reused_for_a_new_event_is_answered_for_what_was_stored(
    gw: RunningGateway,
) -> None:
    """A sender that reused a delivery ID for another event got "duplicate" for it, while its
    event was stored: the answer said nothing was recorded when something was."""
    first = encode(conversion())
    headers = signed(first, msg_id="msg_reused")
    assert (await post(gw, first, headers))[0] == 202
    second = encode(conversion())
    status, answer = await post(gw, second, signed(second, msg_id="msg_reused"))
    assert (status, answer["result"]) == (202, "accepted"), answer
    assert await rows(gw, "SELECT count(*) FROM conversions") == [(2,)]
    status, answer = await post(gw, second, signed(second, msg_id="msg_reused"))  # now a retry
    assert (status, answer) == (200, {"ok": True, "result": "duplicate"})
    assert await rows(gw, "SELECT count(*) FROM conversions") == [(2,)]


async def test_events_without_an_id_in_the_same_second_are_told_apart(gw: RunningGateway) -> None:
    """Without an event_id, the key was type, creator and timestamp: a second order, or another
    user's click, in the same second was answered "duplicate" and lost. Who and what are part
    of the key now; the same event sent again is still one."""
    stamp = int(time.time()) - 5
    orders = [
        {"type": "conversion", "user_id": user, "value": value, "order_id": order, "timestamp": stamp}
        for user, value, order in (("a", 10, "A-1"), ("b", 20, "A-2"))
    ]
    clicks = [
        {
            "event": "creator.click",
            "user": {"external_id": user},
            "creator": {"id": "cr_1"},
            "timestamp": stamp,
        }
        for user in ("u1", "u2")
    ]
    for body, secret in [*((encode(o), BILLING) for o in orders), *((encode(c), TIKTOK_RAW) for c in clicks)]:
        status, answer = await post(gw, body, signed(body, secret))
        assert (status, answer["result"]) == (202, "accepted"), answer
    again = encode(orders[1])
    status, answer = await post(gw, again, signed(again))  # a new delivery of the same event
    assert (status, answer["result"]) == (200, "duplicate"), answer
    assert await rows(gw, "SELECT order_id, value FROM conversions ORDER BY order_id") == [
        ("A-1", 10.0),
        ("A-2", 20.0),
    ]
    assert await rows(gw, "SELECT count(*) FROM touchpoints WHERE creator_id = 'cr_1'") == [(2,)]
    keys = await rows(gw, "SELECT key FROM receipts WHERE kind = 'event'")
    assert not [k for (k,) in keys if "u1" in k or "u2" in k]  # keyed forms only


async def test_an_event_without_an_id_is_one_event_however_its_time_is_written(gw: RunningGateway) -> None:
    """Without an event_id the key held the timestamp as written: the same event re-sent with
    its time in Unix seconds, milliseconds or another offset was a new key, counted twice. A key
    an older version stored (the time as written) still matches the event sent again so."""
    second = int(time.time()) - 3600
    instant = datetime.fromtimestamp(second, UTC)
    written = [
        instant.strftime("%Y-%m-%dT%H:%M:%SZ"),
        second,
        str(second),
        second * 1000,
        instant.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat(),
        instant.strftime("%Y-%m-%dT%H:%M:%S.000z"),
    ]

    def event(ts: Any, user: str = "u-ts") -> bytes:
        return encode({"type": "conversion", "user_id": user, "value": 5, "timestamp": ts})

    status, answer = await post(gw, event(written[0]), signed(event(written[0])))
    assert (status, answer["result"]) == (202, "accepted"), answer
    assert re.fullmatch(r"conversion::" + re.escape(written[0]) + r":[0-9a-f]{16}", answer["key"])
    for ts in written[1:]:
        status, answer = await post(gw, event(ts), signed(event(ts)))  # a new delivery of it
        assert (status, answer["result"]) == (200, "duplicate"), ts
    assert await rows(gw, "SELECT count(*) FROM conversions") == [(1,)]
    # The form of the common case (ISO, Z) is the key it was: no second receipt beside it.
    assert await rows(gw, "SELECT count(*) FROM receipts WHERE kind = 'event'") == [(1,)]

    # Upgrading: an event in Unix seconds stored by a version before 2026-12-05 holds the key
    # conversion::<seconds>:<digest>, and its conversion event:billing:<that key>.
    status, answer = await post(gw, event(second, "u-old"), signed(event(second, "u-old")))
    assert (status, answer["result"]) == (202, "accepted"), answer
    old = answer["key"].replace(written[0], str(second))
    async with aiosqlite.connect(gw.gateway.settings.store_path) as db:
        await db.execute("DELETE FROM receipts WHERE kind = 'event' AND key = ?", (RECEIPT(answer["key"]),))
        await db.execute(
            "UPDATE conversions SET dedup_key = ? WHERE user_key = ?",
            ("event:billing:" + old, KEYS.user_key("u-old")),
        )
        await db.commit()
        # What that version left: the key with the time as written (kept beside this one's).
        async with db.execute("SELECT count(*) FROM receipts WHERE key = ?", (RECEIPT(old),)) as cur:
            assert await cur.fetchall() == [(1,)]
    status, answer = await post(gw, event(second, "u-old"), signed(event(second, "u-old")))
    assert (status, answer["result"]) == (200, "duplicate"), answer
    assert await rows(gw, "SELECT count(*) FROM conversions") == [(2,)]


async def test_conversion_for_an_order_the_store_has_counts_once(gw: RunningGateway) -> None:
    first, again = encode(conversion(order_id="o-7")), encode(conversion(order_id="o-7", value=99))
    assert (await post(gw, first, signed(first)))[0] == 202
    status, answer = await post(gw, again, signed(again))
    assert status == 200 and answer["result"] == "duplicate"
    assert await rows(gw, "SELECT value FROM conversions") == [(50.0,)]


async def test_a_duplicate_order_leaves_nothing_of_its_event(gw: RunningGateway) -> None:
    """An event whose order is already recorded writes none of its rows: not its touchpoint,
    whose creator would otherwise share the credit and the payout of the first event's sale,
    nor the synthetic visitor's binding of a user-only event, nor its event's receipt (its
    delivery's is kept: a replay of it is a duplicate at once)."""
    now = int(time.time())
    first = encode(conversion(order_id="o-77", creator_id="cr_a", timestamp=now))
    assert (await post(gw, first, signed(first)))[0] == 202
    counts = "SELECT (SELECT count(*) FROM touchpoints), (SELECT count(*) FROM identities),"
    counts += " (SELECT count(*) FROM receipts WHERE kind = 'event'), (SELECT count(*) FROM conversions)"
    before = await rows(gw, counts)
    assert before == [(1, 1, 1, 1)]
    again = encode(conversion(order_id="o-77", creator_id="cr_b", timestamp=now - 3600, user_id="u2"))
    status, answer = await post(gw, again, signed(again))
    assert (status, answer["result"]) == (200, "duplicate")
    assert await rows(gw, counts) == before
    assert await rows(gw, "SELECT creator_id FROM touchpoints") == [("cr_a",)]
    # In a batch, the duplicate's rows are undone and the next event's go in.
    batch = encode({"batch": [conversion(order_id="o-77", creator_id="cr_c"), conversion(creator_id="cr_d")]})
    status, answer = await post(gw, batch, signed(batch))
    assert status == 202 and (answer["accepted"], answer["duplicate"]) == (1, 1), answer
    assert sorted(await rows(gw, "SELECT creator_id FROM touchpoints")) == [("cr_a",), ("cr_d",)]


async def test_values_out_of_range_are_refused_with_the_reason(gw: RunningGateway) -> None:
    """A value no order has (above 1e15, an integer of hundreds of digits) or a negative one
    (a refund: not recorded) is a 400 naming the field, kept with the bad events; a report
    after it still answers."""
    for value in (1e26, 10**400, -100, "1e30"):
        body = encode(conversion(value=value))
        status, answer = await post(gw, body, signed(body))
        assert status == 400 and answer["errors"][0].startswith("value"), (value, answer)
        assert "from 0 to 1e+15" in answer["errors"][0]
    body = encode(conversion(value=10**15, currency="EUR"))
    assert (await post(gw, body, signed(body)))[0] == 202
    assert await rows(gw, "SELECT value FROM conversions") == [(1e15,)]
    assert await rows(gw, "SELECT count(*) FROM bad_events") == [(4,)]
    report = await gw.api("/api/attribution", model="linear")
    assert report["rows"][0]["value"] == 1e15


async def test_only_a_conversions_value_is_held_to_the_range(gw: RunningGateway) -> None:
    """The range applies to what is recorded as a conversion's value: an ignored refund (a
    Segment ``track``, ignored by default) or a touchpoint with a negative value is accepted."""
    refund = {"type": "track", "messageId": "r1", "userId": "u1", "event": "Order Refunded"}
    body = encode({"batch": [{**refund, "properties": {"revenue": -25}}]})
    status, answer = await post(gw, body, basic(SEGMENT), "/_gw/segment")
    assert status == 202 and answer["ignored"] == 1, answer
    click = encode({"type": "touchpoint", "event_id": "t1", "user_id": "u1", "source": "x", "value": -1})
    status, answer = await post(gw, click, signed(click))
    assert status == 202, answer
    assert await rows(gw, "SELECT count(*) FROM conversions") == [(0,)]


async def inbound_metrics(gw: RunningGateway) -> dict[tuple[str, ...], float]:
    async with gw.session.get(
        gw.admin_url + "/metrics", headers={"Authorization": f"Bearer {ENV['GATEWAY_ADMIN_TOKEN']}"}
    ) as resp:
        return parse_metrics(await resp.text())


async def test_events_that_record_nothing_are_answered_and_counted_as_ignored(gw: RunningGateway) -> None:
    """A Segment track/screen/group/alias call, a page without campaign data, an identify
    without both IDs, or a type in a sender's ignore_types records nothing: its answer and
    its metric outcome say ``ignored`` (not ``accepted``), with the same 202, so that a
    sender's library does not retry it; sent again, it is ignored again, still not recorded."""
    campaign = {"campaign": {"source": "news"}}
    track, screen, group, alias, plain_page, half_identify, page = (
        {"type": "track", "messageId": "i1", "userId": "u1", "event": "Clicked"},
        {"type": "screen", "messageId": "i2", "anonymousId": "a1"},
        {"type": "group", "messageId": "i3", "userId": "u1", "groupId": "g"},
        {"type": "alias", "messageId": "i4", "userId": "u1", "previousId": "a1"},
        {"type": "page", "messageId": "i5", "anonymousId": "a1"},
        {"type": "identify", "messageId": "i6", "anonymousId": "a1"},
        {"type": "page", "messageId": "i7", "anonymousId": "a1", "context": campaign},
    )
    body = encode({"batch": [track, screen, group, alias, page]})
    status, answer = await post(gw, body, basic(SEGMENT), "/_gw/segment")
    assert status == 202, answer
    assert [r["result"] for r in answer["results"]] == ["ignored"] * 4 + ["accepted"]
    assert (answer["accepted"], answer["ignored"], answer["duplicate"], answer["bad"]) == (1, 4, 0, 0)
    assert answer["results"][0]["reason"] == "type 'track' is in ignore_types: not recorded"
    body = encode({"batch": [plain_page, half_identify, track, page]})  # sent again: ignored again
    status, answer = await post(gw, body, basic(SEGMENT), "/_gw/segment")
    assert status == 202, answer
    assert [r["result"] for r in answer["results"]] == ["ignored"] * 3 + ["duplicate"]
    assert "without campaign data" in answer["results"][0]["reason"]
    assert answer["results"][1]["reason"].startswith("identify without both visitor_id (/anonymousId)")
    single = encode(track)
    status, answer = await post(gw, single, basic(SEGMENT), "/_gw/segment")
    assert (status, answer["result"], answer["key"]) == (202, "ignored", "i1"), answer
    refund = encode({"type": "charge.refunded", "event_id": "r-1", "user_id": "u1", "value": -5})
    status, answer = await post(gw, refund, signed(refund))
    assert (status, answer["result"]) == (202, "ignored"), answer
    assert "ignore_types" in answer["reason"]
    assert await rows(gw, "SELECT key FROM receipts WHERE kind = 'event'") == [(RECEIPT("i7"),)]
    assert await rows(gw, "SELECT count(*) FROM touchpoints") == [(1,)]
    metrics = await inbound_metrics(gw)
    outcome = ("gateway_inbound_events_total", 'outcome="ignored"')
    assert metrics[(*outcome, 'sender="segment"')] == 8
    assert metrics[(*outcome, 'sender="billing"')] == 1
    assert metrics[("gateway_inbound_events_total", 'outcome="accepted"', 'sender="segment"')] == 1


async def test_a_timestamp_of_any_length_is_a_401(gw: RunningGateway) -> None:
    body = encode(conversion())
    headers = signed(body)
    headers["webhook-timestamp"] = "9" * 5000
    status, answer = await post(gw, body, headers)
    assert status == 401 and answer["error"].startswith("timestamp:"), answer


async def test_conversion_for_an_order_a_traffic_rule_recorded_counts_once(gw: RunningGateway) -> None:
    rule_made = Conversion(
        id=uuid7(),
        ts="2026-11-25T10:00:00.000000Z",
        node="t",
        name="checkout",
        dedup_key="order:o-55",
        visitor_key=KEYS.visitor_key("v"),
        order_id="o-55",
        rule="checkout",
    )
    await gw.gateway.store.write([rule_made])
    body = encode(conversion(order_id="o-55"))
    status, answer = await post(gw, body, signed(body))
    assert (status, answer["result"]) == (200, "duplicate")
    assert await rows(gw, "SELECT origin, rule FROM conversions") == [("rule", "checkout")]


async def test_check_prints_the_sources_as_toml(gw: RunningGateway, tmp_path: Path) -> None:
    config = str(await write_config(gw, tmp_path / "gateway.toml"))
    code, out, err = await gateway_cli("check", "-c", config, env={**ENV, **SOURCES_ENV})
    assert code == 0, err
    printed = tomllib.loads(out)
    assert [s["name"] for s in printed["sources"]] == ["billing", "legacy", "tiktok", "segment"]
    assert printed["sources"][2]["types"] == {"creator.click": "touchpoint"}
    assert printed["sources"][0]["secrets"] == ["env:BILLING_SECRET", "env:BILLING_SECRET_OLD"]
    assert BILLING not in out


async def test_a_byte_order_mark_is_read_past_and_other_encodings_say_why(gw: RunningGateway) -> None:
    """A UTF-8 body starting with a byte order mark (.NET and PowerShell senders write one) was
    a 400 "not valid JSON (invalid character (byte 0))": RFC 8259 lets a parser ignore it. A
    UTF-16 body and an empty one are 400s that say what they are."""
    body = b"\xef\xbb\xbf" + encode(conversion())
    status, answer = await post(gw, body, signed(body))
    assert (status, answer["result"]) == (202, "accepted"), answer
    for sent, reason in (
        (b"", "body: empty (expected a JSON object or array)"),
        (b" \r\n", "body: empty (expected a JSON object or array)"),
        (encode(conversion()).decode().encode("utf-16"), "body: not UTF-8 (UTF-16 or UTF-32?)"),
        (encode(conversion()).decode().encode("utf-16-le"), "body: not UTF-8 (UTF-16 or UTF-32?)"),
    ):
        status, answer = await post(gw, sent, signed(sent))
        assert status == 400 and answer["error"].startswith(reason), (sent[:10], answer)


async def test_a_form_body_that_is_not_json_names_its_content_type(gw: RunningGateway) -> None:
    """A platform posting its notifications form-encoded (PayPal's IPN, Twilio) was answered
    "body: not valid JSON (JSON is malformed: invalid character (byte 4))": nothing said the
    gateway reads JSON only, or that the body was sent as a form (or XML). A body labelled so
    that is JSON is read as before (senders label it as they please)."""
    form = b"type=conversion&user_id=u1&value=5"
    for content_type in (
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
    ):
        status, answer = await post(gw, form, {**signed(form), "content-type": content_type})
        kind = content_type.partition(";")[0]
        assert (status, answer["error"]) == (
            400,
            "body: not valid JSON (JSON is malformed: invalid character, at line 1, column 5 (byte 4));"
            f" it was sent as {kind}: the gateway reads JSON bodies only",
        ), answer
    status, answer = await post(gw, form, signed(form))  # labelled JSON: nothing to add
    assert (
        answer["error"]
        == "body: not valid JSON (JSON is malformed: invalid character, at line 1, column 5 (byte 4))"
    )
    body = encode(conversion())
    status, answer = await post(
        gw, body, {**signed(body), "content-type": "application/x-www-form-urlencoded"}
    )
    assert (status, answer["result"]) == (202, "accepted"), answer


async def test_malformed_json_and_wrong_types_are_400_and_kept_as_bad_events(gw: RunningGateway) -> None:
    body = b'{"type": "conversion", '
    status, answer = await post(gw, body, signed(body))
    assert status == 400 and answer["error"].startswith("body: not valid JSON")
    body = encode(conversion(value="fifty", user_id=["u1"]))
    status, answer = await post(gw, body, signed(body))
    assert status == 400 and answer["ok"] is False
    assert [e.split(":")[0] for e in answer["errors"]] == ["user_id (/user_id)", "value (/value)"]
    bad = await rows(gw, "SELECT sender, reason, body FROM bad_events ORDER BY id")
    key = body_key(SECRET.encode())
    assert bad[0][0] == "billing" and unseal(key, bad[0][2]) == '{"type": "conversion", '
    assert str(unseal(key, bad[1][1])).startswith("user_id (/user_id): expected a string")
    assert '"fifty"' in str(unseal(key, bad[1][2]))
    assert '"fifty"' not in bad[1][2] and "fifty" not in bad[1][1]  # both sealed at rest
    assert await rows(gw, "SELECT count(*) FROM conversions") == [(0,)]


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b'{"type": "conversion",\n  "value": 5,\n}', "application/json",
         "body: not valid JSON (JSON is malformed: trailing comma in object, at line 3, column 1 (byte 37))"),
        (b'{"type": "conversion", ', "application/json",
         "body: not valid JSON (it ends before the JSON does, at line 1, column 24 (byte 23): cut short?)"),
        (b'{"user_id": "M\xfcller"}', "application/json",
         "body: not UTF-8 (byte 0xFC at offset 14); JSON is sent as UTF-8 (RFC 8259)"),
        (b'\xef\xbb\xbf{"a": 1,}', "application/json",  # the byte order mark is no column
         "body: not valid JSON (JSON is malformed: trailing comma in object, at line 1, column 9 (byte 11))"),
        (b"", "application/json", "body: empty (expected a JSON object or array)"),
        (b"type=conversion&value=5", "application/x-www-form-urlencoded",
         "body: not valid JSON (JSON is malformed: invalid character, at line 1, column 5 (byte 4)); it was"
         " sent as application/x-www-form-urlencoded: the gateway reads JSON bodies only"),
        (b"[" * 200 + b"]" * 200, "application/json", f"body: JSON nested deeper than {MAX_DEPTH} levels"),
    ],
    ids=["invalid-json", "cut-short", "not-utf8", "bom", "empty", "form", "too-deep"],
)  # fmt: skip
async def test_a_body_that_does_not_parse_is_answered_as_every_refused_event_is(
    gw: RunningGateway, body: bytes, content_type: str, reason: str
) -> None:
    """The README's answer to a 400 is ``{"ok": false, "status": 400, "error": …, "result": "bad",
    "errors": […]}``; a body that does not parse (not JSON, not UTF-8, empty, a form) was answered
    without ``result`` and ``errors``, so a sender's code reading them found nothing, and the
    parser's byte offset alone sent the operator counting bytes: it says the line and column."""
    status, answer = await post(gw, body, {**signed(body), "content-type": content_type})
    assert (status, answer) == (
        400,
        {"ok": False, "status": 400, "error": reason, "result": "bad", "errors": [reason]},
    )
    assert await rows(gw, "SELECT count(*) FROM bad_events") == [(1,)]  # kept, as before


def refusal(reason: str) -> dict[str, Any]:
    """The README's (Answers) 400 of a delivery refused whole: ``result`` and ``errors`` beside
    ``error``, its reason the one error."""
    return {"ok": False, "status": 400, "error": reason, "result": "bad", "errors": [reason]}


async def test_a_compressed_body_that_does_not_decode_is_answered_as_every_refused_event_is(
    gw: RunningGateway,
) -> None:
    """A gzip body that does not decode, or is not gzip at all, was answered with ``error``
    alone, where the README's Answers give every 400 of the endpoint's bodies ``result`` and
    ``errors``: a sender's code reading them found neither. It is answered as a body that does
    not parse is, and still not kept (there is nothing to replay)."""
    body = encode(conversion(order_id="gz-shape"))
    not_gzip = (
        "body: Content-Encoding says gzip, but the body is not gzip data (it starts '{\"type'): sent"
        " uncompressed, or decompressed on the way with the header left on?"
    )
    cut = gzip.compress(body)[:-12]
    for sent, reason in ((body, not_gzip), (cut, "body: does not decode as gzip")):
        status, answer = await post(gw, sent, {**signed(body), "Content-Encoding": "gzip"})
        assert (status, answer) == (400, refusal(reason)), answer
    assert await rows(gw, "SELECT (SELECT count(*) FROM receipts) + (SELECT count(*) FROM bad_events)") == [
        (0,)
    ]


async def test_an_empty_batch_is_answered_as_a_batch_is(gw: RunningGateway) -> None:
    """An empty batch (``[]``, Segment's ``{"batch": []}``) was answered ``batch: no events`` with
    ``error`` alone; a batch's answer, 2xx or 400, has its counts and ``results`` (README,
    Answers), so a sender's code reading them found neither. It has them, all none."""
    none = {"accepted": 0, "ignored": 0, "duplicate": 0, "bad": 0, "results": []}
    expected = {"ok": False, "status": 400, "error": "batch: no events", **none}
    status, answer = await post(gw, b"[]", signed(b"[]"))
    assert (status, answer) == (400, expected), answer
    empty = encode({"batch": [], "context": {"library": {"name": "analytics-node"}}})
    status, answer = await post(gw, empty, basic(SEGMENT), "/_gw/segment")
    assert (status, answer) == (400, expected), answer
    assert await rows(gw, "SELECT (SELECT count(*) FROM receipts) + (SELECT count(*) FROM bad_events)") == [
        (0,)
    ]
    # A batch whose every event is refused: its counts and results, as the README now shows.
    body = encode([{"type": "conversion", "value": "abc"}, {"type": "nope"}])
    status, answer = await post(gw, body, signed(body))
    assert status == 400 and set(answer) == {"ok", "status", "error", *none}, answer
    assert (answer["error"], answer["bad"], len(answer["results"])) == (
        "all 2 events failed validation",
        2,
        2,
    )
    assert [r["result"] for r in answer["results"]] == ["bad", "bad"] and answer["results"][0]["errors"]


MINOR = """
[[sources]]
name = "billing"
secrets = ["env:BILLING_SECRET"]
value_scale = "minor"
ignore_types = ["refund"]
"""


async def test_a_fraction_under_minor_units_is_refused_not_read_as_cents(
    start_gateway, upstream_server
) -> None:
    """Under ``value_scale = "minor"`` a decimal text (``"10.00"``, a sender that sends major units)
    was read as 10 cents, 0.10: the order recorded at a hundredth of its value, and nothing said.
    A value written with a fraction (``"10.00"``, ``"10.5"``) or a number with one (``10.5``) cannot
    be minor units: a 400 naming the field, kept with the bad events as any invalid value is. A
    whole number is taken however JSON writes it (``1000``, ``"1000"``, ``"1e3"``, and ``1000.0``,
    as Python and Java write a float: the parser does not keep how a number was written)."""
    gw = await start_gateway(await upstream_server(web.Application()), MINOR, SOURCES_ENV)
    for n, value in enumerate((1000, "1000", "1e3", 1000.0, " 1000 ")):
        body = encode(conversion(value=value, currency="EUR", order_id=f"ok-{n}"))
        status, answer = await post(gw, body, signed(body))
        assert (status, answer["result"]) == (202, "accepted"), (value, answer)
    assert await rows(gw, "SELECT DISTINCT value FROM conversions") == [(10.0,)]
    expected = (
        'value (/value): {} has decimals: value_scale = "minor" expects whole minor units'
        " (1000 for 10.00 EUR); for a sender that sends major units, remove value_scale"
    )
    for value, shown in (("10.00", "'10.00'"), ("49.9", "'49.9'"), (10.5, "10.5"), ("1.25e1", "'1.25e1'")):
        body = encode(conversion(value=value, currency="EUR", order_id=f"bad-{value}"))
        status, answer = await post(gw, body, signed(body))
        reason = expected.format(shown)
        assert (status, answer.get("errors")) == (400, [reason]), (value, answer)
    body = encode(conversion(value="500.00", currency="JPY"))  # the example in its currency's units
    status, answer = await post(gw, body, signed(body))
    assert (status, answer.get("errors")) == (
        400,
        [
            "value (/value): '500.00' has decimals: value_scale = \"minor\" expects whole minor units"
            " (10 for 10 JPY); for a sender that sends major units, remove value_scale"
        ],
    )
    assert await rows(gw, "SELECT count(*) FROM conversions") == [(5,)]
    assert await rows(gw, "SELECT count(*) FROM bad_events") == [(5,)]
    # A negative one is refused as before, for what it is (a refund), not for its fraction.
    body = encode(conversion(value="-10.00", currency="EUR"))
    status, answer = await post(gw, body, signed(body))
    assert status == 400 and answer["errors"] == [
        "value (/value): expected a number from 0 to 1e+15 (after value_scale); refunds are not"
        " recorded (list their type in ignore_types)"
    ]
    # A type the sender ignores records no value: its fraction is not refused.
    body = encode({**conversion(value="10.00", currency="EUR"), "type": "refund"})
    status, answer = await post(gw, body, signed(body))
    assert (status, answer["result"]) == (202, "ignored"), answer


async def test_a_value_with_an_exponent_past_decimals_reach_is_refused_not_a_500(
    start_gateway, upstream_server
) -> None:
    """Under ``value_scale = "minor"``, a value text whose exponent is too long for a decimal to
    hold (``"1e-"`` and 29 nines) reads as 0.0, a valid value, and the test for its decimals
    raised: a 500 "internal error", the delivery not stored (2026-12-07). It is a fraction, as
    ``"1e-5"`` is: refused as any value with decimals is, a 400 naming the field."""
    gw = await start_gateway(await upstream_server(web.Application()), MINOR, SOURCES_ENV)
    for n, value in enumerate(("1e-" + "9" * 29, "1E-" + "9" * 40, "1.5e-" + "9" * 29, "1e-5")):
        body = encode(conversion(value=value, currency="EUR", order_id=f"tiny-{n}"))
        status, answer = await post(gw, body, signed(body))
        assert (status, answer.get("result")) == (400, "bad"), (value, status, answer)
        assert answer["errors"] == [
            f'value (/value): {value[:40]!r} has decimals: value_scale = "minor" expects whole minor'
            " units (1000 for 10.00 EUR); for a sender that sends major units, remove value_scale"
        ], answer
    assert await rows(gw, "SELECT count(*) FROM bad_events") == [(4,)]


async def test_batches_per_event_results_and_limits(gw: RunningGateway) -> None:
    events = [conversion(), conversion(value="x"), {"type": "identify", "visitor_id": "v1", "user_id": "u1"}]
    body = encode(events)
    status, answer = await post(gw, body, signed(body))
    assert status == 202 and (answer["accepted"], answer["duplicate"], answer["bad"]) == (2, 0, 1)
    assert [r["result"] for r in answer["results"]] == ["accepted", "bad", "accepted"]
    body = encode({"batch": [conversion() for _ in range(6)]})  # webhooks.max_batch = 5
    status, answer = await post(gw, body, signed(body))
    assert status == 413 and "webhooks.max_batch" in answer["error"]
    body = encode([conversion(pad="x" * 5000)])  # webhooks.max_body = 4096
    status, answer = await post(gw, body, signed(body))
    assert status == 413 and "webhooks.max_body" in answer["error"]
    assert await rows(gw, "SELECT count(*) FROM conversions") == [(1,)]


async def test_rotation_accepts_every_active_secret(gw: RunningGateway) -> None:
    for secret in (BILLING, BILLING_OLD):
        body = encode(conversion())
        assert (await post(gw, body, signed(body, secret)))[0] == 202
    body = encode(conversion())
    headers = signed(body, BILLING_OLD)
    headers["webhook-signature"] = "v1,bm90IGl0 " + headers["webhook-signature"]
    assert (await post(gw, body, headers))[0] == 202


async def test_svix_branded_headers_are_the_standard_scheme(gw: RunningGateway) -> None:
    """Svix-branded senders (Resend, Clerk…) send svix-id, svix-timestamp and svix-signature:
    they were a 401 "missing webhook-id…", so such a sender could not be wired at all."""
    body = encode(conversion())
    headers = {k.replace("webhook-", "svix-"): v for k, v in signed(body, BILLING_OLD).items()}
    status, answer = await post(gw, body, headers)
    assert (status, answer["result"]) == (202, "accepted"), answer
    status, answer = await post(gw, body, signed(body, msg_id=headers["svix-id"]))  # same message
    assert (status, answer) == (200, {"ok": True, "result": "duplicate"})
    forged = {**headers, "svix-signature": signed(body, "x" * 32)["webhook-signature"]}
    status, answer = await post(gw, body, forged)
    assert status == 401 and answer["error"] == "signature: no valid signature"


@pytest.mark.parametrize("prefix", ["webhook-", "svix-"])
async def test_a_missing_signature_header_is_named(gw: RunningGateway, prefix: str) -> None:
    """A delivery that lacks one of the three headers (a sender's own code that forgot the
    timestamp, a proxy that dropped one) is told which, as the sender wrote the others: it was
    "missing webhook-id, webhook-timestamp or webhook-signature", the same for any of them, and
    for a Svix-branded sender named headers it never sends."""
    body = encode(conversion())
    headers = {k.replace("webhook-", prefix): v for k, v in signed(body).items()}
    three = f"{prefix}id, {prefix}timestamp and {prefix}signature"
    for left_out in ("id", "timestamp", "signature")[: 3 if prefix == "webhook-" else 2]:
        sent = {k: v for k, v in headers.items() if k != prefix + left_out}
        status, answer = await post(gw, body, sent)
        expected = f"signature: {prefix}{left_out} is missing (a Standard Webhooks delivery carries {three})"
        assert (status, answer["error"]) == (401, expected)
    sent = {**headers, f"{prefix}id": "", f"{prefix}timestamp": ""}
    status, answer = await post(gw, body, sent)
    both = f"{prefix}id and {prefix}timestamp"
    expected = f"signature: {both} are empty (a Standard Webhooks delivery carries {three})"
    assert (status, answer["error"]) == (401, expected)
    bare = {"content-type": "application/json"}  # no signature at all: as before
    status, answer = await post(gw, body, bare)
    assert (status, answer["error"]) == (
        401,
        "signature: missing webhook-id, webhook-timestamp or webhook-signature",
    )
    assert await rows(gw, "SELECT count(*) FROM conversions") == [(0,)]


async def test_signatures_over_several_header_lines_are_one_list(gw: RunningGateway) -> None:
    """webhook-signature over two lines counted only its last line: a valid signature followed
    by a stale one was a 401. An id or timestamp given twice, differently, is refused."""
    body = encode(conversion())
    good = signed(body)
    lines = CIMultiDict(good)
    lines.add("webhook-signature", "v1,c3RhbGU=")
    async with gw.session.post(gw.url + "/_gw/events", data=body, headers=lines) as resp:
        assert (resp.status, (await resp.json())["result"]) == (202, "accepted")
    body = encode(conversion())
    twice = CIMultiDict(signed(body))
    twice.add("webhook-timestamp", "1")
    async with gw.session.post(gw.url + "/_gw/events", data=body, headers=twice) as resp:
        answer = await resp.json()
        assert resp.status == 401 and answer["error"] == "signature: webhook-timestamp given more than once"


async def test_legacy_hex_only_for_senders_that_enable_it(gw: RunningGateway) -> None:
    body = encode(conversion())
    status, _ = await post(gw, body, {"x-webhook-signature": legacy_signature(LEGACY.encode(), body)})
    assert status == 202
    status, _ = await post(gw, body, {"x-webhook-signature": legacy_signature(LEGACY.encode(), body)})
    assert status == 200  # the same body again is a replay
    other = encode(conversion())
    status, answer = await post(gw, other, {"x-webhook-signature": legacy_signature(BILLING.encode(), other)})
    assert status == 401 and answer["error"].startswith("signature")
    assert await rows(gw, "SELECT rule FROM conversions") == [("legacy",)]
    # The algorithm's name upper-cased, as some senders write it: until 2026-12-05 a 401.
    upper = encode(conversion())
    given = "SHA256=" + legacy_signature(LEGACY.encode(), upper).upper()
    status, answer = await post(gw, upper, {"x-webhook-signature": given})
    assert status == 202 and answer["result"] == "accepted", answer


async def test_a_legacy_signature_given_twice_is_refused_naming_it(gw: RunningGateway) -> None:
    """x-webhook-signature on two lines, two values: the first line alone was read (until
    2026-12-07), so a stale signature before the valid one was a 401 "no valid signature", and a
    valid one before a forged one passed. Neither is believed now, as under every other scheme
    whose signature is one value; the same value repeated (a proxy that copies a header) passes."""
    body = encode(conversion())
    good = legacy_signature(LEGACY.encode(), body)
    for lines in ((good, "0" * 64), ("0" * 64, good)):
        headers = CIMultiDict([("x-webhook-signature", line) for line in lines])
        async with gw.session.post(gw.url + "/_gw/events", data=body, headers=headers) as resp:
            answer = await resp.json()
            assert (resp.status, answer["error"]) == (
                401,
                "signature: x-webhook-signature given more than once",
            )
    assert await rows(gw, "SELECT * FROM conversions") == []
    repeated = CIMultiDict([("x-webhook-signature", good), ("x-webhook-signature", good)])
    async with gw.session.post(gw.url + "/_gw/events", data=body, headers=repeated) as resp:
        assert (resp.status, (await resp.json())["result"]) == (202, "accepted")


async def test_mapped_sender_creator_click_for_a_user(gw: RunningGateway) -> None:
    body = encode(
        {"event": "creator.click", "event_id": "c1", "user": {"external_id": 77}, "creator": {"id": "cr_9"}}
    )
    status, answer = await post(gw, body, signed(body, TIKTOK_RAW))
    assert status == 202, answer
    synthetic = KEYS.visitor_key("user:77")
    assert await rows(gw, "SELECT visitor_key, source, medium, creator_id FROM touchpoints") == [
        (synthetic, "tiktok", "creator", "cr_9")
    ]
    assert await rows(gw, "SELECT visitor_key, user_key, rule, origin FROM identities") == [
        (synthetic, KEYS.user_key("77"), "tiktok", "webhook")
    ]


async def test_a_configured_pointer_that_finds_nothing_is_said_not_silent(
    gw: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """tiktok's ``creator_id = "/creator/id"`` against a sender writing ``creator.ID``: the
    click is recorded (its user and defaults suffice), and the answer, a metric and one log line
    say which pointer found nothing, so a typo shows at the first event. Fields the operator did
    not configure (tiktok sets no ``click_id``) are never reported."""
    caplog.set_level(logging.WARNING, logger="gateway.inbound")
    for event_id in ("c1", "c2"):
        body = encode(
            {
                "event": "creator.click",
                "event_id": event_id,
                "user": {"external_id": 77},
                "creator": {"ID": "x"},
            }
        )
        status, answer = await post(gw, body, signed(body, TIKTOK_RAW))
        assert status == 202, answer
        assert answer == {
            "ok": True,
            "result": "accepted",
            "key": event_id,
            "unmatched": ["creator_id (/creator/id)"],
        }
    body = encode(
        {"event": "creator.click", "event_id": "c3", "user": {"external_id": 77}, "creator": {"id": "cr"}}
    )
    status, answer = await post(gw, body, signed(body, TIKTOK_RAW))
    assert (status, answer) == (202, {"ok": True, "result": "accepted", "key": "c3"})
    assert await rows(gw, "SELECT creator_id FROM touchpoints ORDER BY id") == [(None,), (None,), ("cr",)]
    async with gw.session.get(
        gw.admin_url + "/metrics", headers={"Authorization": f"Bearer {ENV['GATEWAY_ADMIN_TOKEN']}"}
    ) as resp:
        metrics = parse_metrics(await resp.text())
    unmatched = {k: v for k, v in metrics.items() if k[0] == "gateway_inbound_unmatched_fields_total"}
    assert unmatched == {
        ("gateway_inbound_unmatched_fields_total", 'field="creator_id"', 'sender="tiktok"'): 2
    }
    said = [r.getMessage() for r in caplog.records if "found nothing" in r.getMessage()]
    assert said == [
        "source tiktok: fields.creator_id (/creator/id) found nothing in an accepted event, recorded"
        " without it (logged once; gateway_inbound_unmatched_fields_total counts each): if every"
        " event misses it, check the pointer"
    ]


async def test_a_pointer_through_a_value_of_another_kind_says_where_it_stopped(
    gw: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """tiktok maps ``user_id = "/user/external_id"``: a sender that writes ``user`` as a list of
    users, or as the ID itself, was answered ``user_id (/user/external_id): one of them is
    needed``, as if it had sent no user at all, and a ``creator`` sent as a list was
    ``unmatched`` as a typo is: neither said that the pointer ran into an array or a string
    where it needed an object. A ``null`` on the way stays an absent value (Calendly's
    ``tracking``), said as before."""
    caplog.set_level(logging.WARNING, logger="gateway.inbound")
    for user, kind in (([{"external_id": "7"}], "an array"), ("7", "a string"), (7, "7")):
        body = encode(
            {"event": "creator.click", "event_id": f"w{kind}", "user": user, "creator": {"id": "cr"}}
        )
        status, answer = await post(gw, body, signed(body, TIKTOK_RAW))
        assert (status, answer["errors"]) == (
            400,
            [
                f"visitor_id (/visitor_id) / user_id (/user/external_id, where /user is {kind},"
                " not an object): one of them is needed"
            ],
        ), answer
    body = encode(
        {"event": "creator.click", "event_id": "w1", "user": {"external_id": "7"}, "creator": ["cr"]}
    )
    status, answer = await post(gw, body, signed(body, TIKTOK_RAW))
    assert (status, answer["unmatched"]) == (
        202,
        ["creator_id (/creator/id, where /creator is an array, not an object)"],
    ), answer
    body = encode({"event": "creator.click", "event_id": "w2", "user": {"external_id": "7"}, "creator": None})
    status, answer = await post(gw, body, signed(body, TIKTOK_RAW))
    assert (status, answer["unmatched"]) == (202, ["creator_id (/creator/id)"]), answer
    said = [r.getMessage() for r in caplog.records if "found nothing" in r.getMessage()]
    assert said == [
        "source tiktok: fields.creator_id (/creator/id, where /creator is an array, not an object) found"
        " nothing in an accepted event, recorded without it (logged once;"
        " gateway_inbound_unmatched_fields_total counts each): if every event misses it, check the pointer"
    ]


async def test_a_duplicate_carries_no_unmatched(gw: RunningGateway) -> None:
    """An event answered ``duplicate`` recorded nothing: it was answered with the ``unmatched``
    of its first time all the same (alone and in a batch), though the metric does not count it
    again. Only what was recorded now says what it was recorded without."""

    def click(event_id: str) -> dict[str, Any]:
        return {"event": "creator.click", "event_id": event_id, "user": {"external_id": 7}, "creator": {}}

    body = encode(click("d1"))
    status, answer = await post(gw, body, signed(body, TIKTOK_RAW))
    assert (status, answer.get("unmatched")) == (202, ["creator_id (/creator/id)"]), answer
    body = encode(click("d1"))  # the same event in a new delivery (another webhook-id)
    status, answer = await post(gw, body, signed(body, TIKTOK_RAW))
    assert (status, answer) == (200, {"ok": True, "result": "duplicate", "key": "d1"})
    body = encode([click("d1"), click("d2")])
    status, answer = await post(gw, body, signed(body, TIKTOK_RAW))
    assert status == 202, answer
    assert answer["results"] == [
        {"index": 0, "result": "duplicate", "key": "d1"},
        {"index": 1, "result": "accepted", "key": "d2", "unmatched": ["creator_id (/creator/id)"]},
    ]
    async with gw.session.get(
        gw.admin_url + "/metrics", headers={"Authorization": f"Bearer {ENV['GATEWAY_ADMIN_TOKEN']}"}
    ) as resp:
        metrics = parse_metrics(await resp.text())
    assert metrics[("gateway_inbound_unmatched_fields_total", 'field="creator_id"', 'sender="tiktok"')] == 2


async def test_a_field_the_events_kind_does_not_record_is_not_unmatched(
    gw: RunningGateway, start_gateway
) -> None:
    """A sender of clicks and purchases maps the purchase's value, currency and order (as
    README's TikTok example does): every click was answered ``unmatched`` for them, counted in
    ``gateway_inbound_unmatched_fields_total`` and logged "if every event misses it, check the
    pointer", though a touchpoint records none of them; an identify alike for every field but
    its IDs. Only a field the event's kind records is reported."""
    config = SOURCES.replace(
        'creator_id = "/creator/id"}',
        'creator_id = "/creator/id", visitor_id = "/anon", value = "/properties/value",'
        ' currency = "/properties/currency", order_id = "/properties/order_id"}',
    ).replace(
        'types = {"creator.click" = "touchpoint"}',
        'types = {"creator.click" = "touchpoint", login = "identify"}',
    )
    mapped = await start_gateway(gw.url, config, SOURCES_ENV)
    click = {"event": "creator.click", "event_id": "k1", "user": {"external_id": 7}, "creator": {"id": "cr"}}
    login = {"event": "login", "event_id": "k2", "user": {"external_id": 7}, "anon": "v-7"}
    buy = {"event": "conversion", "event_id": "k3", "user": {"external_id": 7}, "creator": {"id": "cr"}}
    answers = []
    for event in (click, login, buy):
        body = encode(event)
        status, answer = await post(mapped, body, signed(body, TIKTOK_RAW))
        assert status == 202, answer
        answers.append(answer.get("unmatched"))
    assert answers == [
        ["visitor_id (/anon)"],
        None,
        [
            "visitor_id (/anon)",
            "value (/properties/value)",
            "currency (/properties/currency)",
            "order_id (/properties/order_id)",
        ],
    ]


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


async def test_segment_page_becomes_a_touchpoint_and_identify_a_binding(gw: RunningGateway) -> None:
    batch = {
        "batch": [
            {
                "type": "page",
                "messageId": "m1",
                "anonymousId": "anon-1",
                "properties": {"path": "/pricing"},
                "context": {"campaign": {"name": "spring", "source": "Newsletter", "medium": "email"}},
            },
            {"type": "page", "messageId": "m2", "anonymousId": "anon-1", "context": {}},
            {"type": "identify", "messageId": "m3", "anonymousId": "anon-1", "userId": "user-5"},
        ]
    }
    body = encode(batch)
    status, answer = await post(gw, body, basic(SEGMENT), "/_gw/segment")
    assert status == 202 and (answer["accepted"], answer["ignored"]) == (2, 1), answer
    anon = KEYS.visitor_key("anon-1")
    assert await rows(gw, "SELECT visitor_key, source, campaign, landing_path FROM touchpoints") == [
        (anon, "newsletter", "spring", "/pricing")
    ]
    assert await rows(gw, "SELECT visitor_key, user_key, origin FROM identities") == [
        (anon, KEYS.user_key("user-5"), "segment")
    ]
    # The plain page view left no row at all, not even a receipt.
    kept = await rows(gw, "SELECT key FROM receipts WHERE kind = 'event'")
    assert sorted(kept) == sorted([(RECEIPT("m1"),), (RECEIPT("m3"),)])
    single = encode({"messageId": "m4", "anonymousId": "a2", "userId": "u2"})
    assert (await post(gw, single, basic(SEGMENT), "/_gw/segment/v1/identify"))[0] == 202
    status, answer = await post(gw, body, basic("nope" * 8), "/_gw/segment")
    assert status == 401
    status, answer = await post(gw, body, signed(body), "/_gw/segment")  # a webhook signature is not Basic
    assert status == 401


async def test_segment_without_a_segment_source_says_none_is_configured(
    start_gateway, upstream_server
) -> None:
    """With no ``format = "segment"`` source, every call was a 401 "missing or wrong write key",
    which sent the operator checking a key the gateway had never been given."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="site")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", page)
    standard_only = SOURCES.split('[[sources]]\nname = "segment"')[0]
    gw = await start_gateway(await upstream_server(app), standard_only, SOURCES_ENV)
    body = encode({"type": "page", "messageId": "n1", "anonymousId": "a-n1"})
    for path in ("/_gw/segment", "/_gw/segment/v1/batch", "/_gw/segment/v1/page"):
        status, answer = await post(gw, body, basic(SEGMENT), path)
        assert status == 404, (path, answer)
        assert answer["ok"] is False and answer["error"].startswith("no Segment source is configured here")
        assert 'format = "segment"' in answer["error"]
    assert await rows(gw, "SELECT count(*) FROM receipts") == [(0,)]
    signed_body = encode(conversion())
    assert (await post(gw, signed_body, signed(signed_body)))[0] == 202  # /_gw/events still takes its own


@pytest.mark.parametrize("configured", ["segment only", "no sources"])
async def test_events_without_a_standard_source_says_none_is_configured(
    start_gateway, upstream_server, configured: str
) -> None:
    """With no standard-format source (only Segment's, or none at all), every delivery to
    ``/_gw/events`` was a 401 "signature: no valid signature", which sent the operator
    checking a secret the gateway had never been given."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="site")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", page)
    toml = '[[sources]]\nname = "segment"' + SOURCES.split('[[sources]]\nname = "segment"')[1]
    gw = await start_gateway(
        await upstream_server(app), toml if configured == "segment only" else "", SOURCES_ENV
    )
    body = encode(conversion())
    for headers in (signed(body), {}):
        status, answer = await post(gw, body, headers)
        assert status == 404, answer
        assert answer["ok"] is False and answer["error"].startswith("no standard source is configured here")
        assert "[[sources]]" in answer["error"]
    assert await rows(gw, "SELECT count(*) FROM receipts") == [(0,)]
    if configured == "segment only":  # Segment's endpoint still takes its own
        page_call = encode({"type": "page", "messageId": "n2", "anonymousId": "a-n2"})
        assert (await post(gw, page_call, basic(SEGMENT), "/_gw/segment"))[0] == 202


async def test_a_segment_batchs_own_context_applies_to_each_call(gw: RunningGateway) -> None:
    """Segment's batch call may carry one context for all its calls: its campaign was dropped,
    and a page with campaign data answered "ignored"."""
    batch = {
        "batch": [
            {"type": "page", "messageId": "bc1", "anonymousId": "a-bc", "properties": {"path": "/x"}},
            {
                "type": "page",
                "messageId": "bc2",
                "anonymousId": "a-bc",
                "context": {"campaign": {"name": "own", "source": "mail"}},
            },
        ],
        "context": {"campaign": {"name": "shared", "source": "Google", "medium": "cpc"}},
    }
    status, answer = await post(gw, encode(batch), basic(SEGMENT), "/_gw/segment/v1/batch")
    assert status == 202 and answer["accepted"] == 2, answer
    assert await rows(gw, "SELECT source, medium, campaign FROM touchpoints ORDER BY campaign") == [
        ("mail", None, "own"),
        ("google", "cpc", "shared"),
    ]


async def test_every_segment_call_path_is_answered(gw: RunningGateway) -> None:
    """Segment's HTTP API has a path per call (/v1/track, /v1/screen…): those were 404s, so a
    client posting a track call there got an error and retried, rather than "ignored"."""
    for call in ("track", "screen", "group", "alias"):
        body = encode({"messageId": f"s-{call}", "anonymousId": "a3", "userId": "u3", "event": "Clicked"})
        status, answer = await post(gw, body, basic(SEGMENT), f"/_gw/segment/v1/{call}")
        assert (status, answer["result"]) == (202, "ignored"), (call, answer)
        assert answer["reason"] == f"type {call!r} is in ignore_types: not recorded"
    assert await rows(gw, "SELECT count(*) FROM receipts WHERE kind = 'event'") == [(0,)]


async def test_a_segment_call_types_maps_is_recorded_not_ignored(start_gateway, upstream_server) -> None:
    """``types = {track = "conversion"}`` (no ``ignore_types``) left every track call answered
    ``ignored``, "in ignore_types", a list the operator never wrote: the format's own list
    kept it, where the README says mapping it in ``types`` records it."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="site")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", page)
    toml = SOURCES.replace(
        'format = "segment"\n',
        'format = "segment"\ntypes = {track = "conversion"}\n'
        'fields = {name = "/event", value = "/properties/revenue", currency = "/properties/currency"}\n',
    )
    gw = await start_gateway(await upstream_server(app), toml, SOURCES_ENV)
    call = {"messageId": "tr-1", "userId": "u-tr", "event": "Order Completed"}
    body = encode({**call, "properties": {"revenue": 12.5, "currency": "EUR"}})
    status, answer = await post(gw, body, basic(SEGMENT), "/_gw/segment/v1/track")
    assert (status, answer["result"]) == (202, "accepted"), answer
    assert await rows(gw, "SELECT name, value, currency, origin FROM conversions") == [
        ("Order Completed", 12.5, "EUR", "segment")
    ]
    # The format's other calls are still acknowledged and not recorded.
    body = encode({"messageId": "sc-1", "anonymousId": "a-sc", "name": "Home"})
    status, answer = await post(gw, body, basic(SEGMENT), "/_gw/segment/v1/screen")
    assert (status, answer["result"]) == (202, "ignored"), answer


async def test_a_visitor_a_sender_named_is_found_by_that_raw_id(gw: RunningGateway) -> None:
    """/api/visitors takes "the raw visitor ID": also one a sender chose (a Segment anonymousId,
    a UUID; a hex one that looks like a key; one with dots; `send-test-event`'s
    test-visitor-<creator>), not only the gateway's own 22-character cookie IDs (a 400)."""
    ids = [
        "3f1e9a52-6c1b-4d0e-9b5a-2f7c8d9e0a1b",
        "3f1e9a526c1b4d0e9b5a2f7c8d9e0a1b",  # 32 hex digits: not a visitor_key here
        "GA1.2.1234567890",
        "test-visitor-cr_test1",
    ]
    calls = [
        {
            "type": "page",
            "messageId": f"raw-{n}",
            "anonymousId": raw,
            "context": {"campaign": {"name": "spring", "source": "newsletter"}},
        }
        for n, raw in enumerate(ids)
    ]
    body = encode({"batch": calls})
    status, answer = await post(gw, body, basic(SEGMENT), "/_gw/segment")
    assert (status, answer["accepted"]) == (202, len(ids)), answer
    for raw in ids:
        journey = await gw.api("/api/visitors/" + quote(raw, safe=""))
        assert journey["ok"] is True, (raw, journey)
        assert journey["visitor_key"] == KEYS.visitor_key(raw)
        assert [t["campaign"] for t in journey["touchpoints"]] == ["spring"]
    # The stored key itself still answers, and an ID no visitor has is a 404, not a 400.
    key = KEYS.visitor_key(ids[0])
    assert (await gw.api(f"/api/visitors/{key}"))["visitor_key"] == key
    assert (await gw.api("/api/visitors/nobody-here"))["status"] == 404
    # What no visitor ID can be is still a 400 naming what is expected.
    for bad in ("a%0Ab", "x" * 2001):  # a newline inside (around it, trimmed as every intake does)
        answer = await gw.api(f"/api/visitors/{bad}")
        assert answer["status"] == 400 and answer["error"].startswith("visitor_id: expected"), answer


async def test_a_senders_touchpoints_get_their_channel_as_they_are_recorded(gw: RunningGateway) -> None:
    """As a landing's does: /api/touchpoints, the sinks and `gateway reclassify` read the column."""
    tiktok = {"event": "creator.click", "event_id": "ch1", "user": {"external_id": 7}, "creator": {"id": "c"}}
    click = encode(tiktok)
    assert (await post(gw, click, signed(click, TIKTOK_RAW)))[0] == 202
    paid = encode(conversion(click_id="abc", click_id_kind="gclid", currency="EUR"))
    assert (await post(gw, paid, signed(paid)))[0] == 202
    campaign = {"name": "spring", "source": "Newsletter", "medium": "email"}
    page = {"type": "page", "messageId": "ch3", "anonymousId": "a-ch", "context": {"campaign": campaign}}
    assert (await post(gw, encode(page), basic(SEGMENT), "/_gw/segment"))[0] == 202
    assert await rows(gw, "SELECT coalesce(source, click_id_kind), channel FROM touchpoints ORDER BY id") == [
        ("tiktok", "Affiliates"),
        ("gclid", "Paid Search"),
        ("newsletter", "Email"),
    ]


async def test_a_senders_click_id_has_the_click_id_bound(gw: RunningGateway) -> None:
    """A TikTok ttclid passes 200 characters (``campaign.max_value_length``): as on a landing, a
    click ID is kept up to 1000, where such a conversion was refused with a 400."""
    ttclid = "E.C.P." + "t" * 254
    body = encode(conversion(click_id=ttclid, click_id_kind="ttclid", currency="EUR"))
    assert (await post(gw, body, signed(body)))[0] == 202
    assert await rows(gw, "SELECT click_id_kind, length(click_id) FROM touchpoints") == [("ttclid", 260)]
    body = encode(conversion(click_id="t" * 1001, click_id_kind="ttclid", currency="EUR"))
    status, answer = await post(gw, body, signed(body))
    assert status == 400 and answer["error"] == "click_id (/click_id): longer than 1000 characters", answer


async def test_method_and_unknown_reserved_paths(gw: RunningGateway) -> None:
    async with gw.session.get(gw.url + "/_gw/events") as resp:
        assert resp.status == 405 and resp.headers["Allow"] == "POST"
        assert (await resp.json())["status"] == 405
    async with gw.session.post(gw.url + "/_gw/nothing", data=b"{}") as resp:
        assert resp.status == 404 and (await resp.json())["ok"] is False


async def test_historical_timestamp_is_kept_and_out_of_range_is_bad(gw: RunningGateway) -> None:
    past = int(time.time()) - 3 * 86400
    body = encode(conversion(timestamp=past))
    assert (await post(gw, body, signed(body)))[0] == 202
    (ts,) = (await rows(gw, "SELECT ts FROM conversions"))[0]
    assert ts.startswith(time.strftime("%Y-%m-%dT%H:%M", time.gmtime(past)))
    body = encode(conversion(timestamp=past - 500 * 86400))
    status, answer = await post(gw, body, signed(body))
    assert status == 400 and "webhooks.max_event_age_days" in answer["error"]


async def test_an_event_dated_before_its_users_erasure_is_ignored(gw: RunningGateway) -> None:
    """A sender retries, after the user was erased, a conversion dated before the erasure: it
    was stored again locally (the central store refuses it). It is answered ``ignored`` and not
    recorded; a retry of it (a new delivery) is a ``duplicate``, as for any event whose receipt
    is kept; a conversion dated after the erasure is new activity, recorded as ever."""
    before = int(time.time()) - 3600
    first = encode(conversion(user_id="u9", timestamp=before))
    assert (await post(gw, first, signed(first)))[0] == 202
    auth = {"Authorization": f"Bearer {ENV['GATEWAY_ADMIN_TOKEN']}"}
    async with gw.session.delete(gw.admin_url + "/api/users/u9", headers=auth) as resp:
        assert resp.status == 200
    assert await rows(gw, "SELECT * FROM conversions") == []
    late = encode(conversion(user_id="u9", timestamp=before + 60))
    status, answer = await post(gw, late, signed(late))
    assert (status, answer["result"]) == (202, "ignored"), answer
    assert answer["reason"] == "the user was erased after this event's time"
    assert await rows(gw, "SELECT * FROM conversions") == []
    status, answer = await post(gw, late, signed(late))
    assert (status, answer) == (200, {"ok": True, "result": "duplicate", "key": answer["key"]})  # retried
    assert await rows(gw, "SELECT * FROM conversions") == []
    after = encode(conversion(user_id="u9"))
    assert (await post(gw, after, signed(after)))[1]["result"] == "accepted"
    assert len(await rows(gw, "SELECT * FROM conversions")) == 1
    metrics = await inbound_metrics(gw)
    assert metrics[("gateway_inbound_events_total", 'outcome="ignored"', 'sender="billing"')] == 1
    assert metrics[("gateway_inbound_events_total", 'outcome="duplicate"', 'sender="billing"')] == 1


async def test_replay_bad_keeps_an_erased_users_events_out(gw: RunningGateway) -> None:
    """A bad event naming only a visitor of a user erased since: kept before the erasure, the
    erasure deletes it (since 2026-12-05: it named the user's visitor); kept after it (a sender's
    retry, dated before the erasure and still bad), ``replay-bad`` recorded it after the fix
    until 2026-12-05, and the erasure came undone, where a retry is ``ignored``."""
    before = int(time.time()) - 3600
    bad = encode({"type": "purchase", "event_id": "er-1", "visitor_id": "vis-er", "timestamp": before})
    assert (await post(gw, bad, signed(bad)))[0] == 400
    bind = encode({"type": "identify", "event_id": "er-2", "visitor_id": "vis-er", "user_id": "u-er"})
    assert (await post(gw, bind, signed(bind)))[0] == 202
    auth = {"Authorization": f"Bearer {ENV['GATEWAY_ADMIN_TOKEN']}"}
    async with gw.session.delete(gw.admin_url + "/api/users/u-er", headers=auth) as resp:
        assert resp.status == 200
        assert (await resp.json())["erased"]["bad_events"] == 1
    assert await rows(gw, "SELECT * FROM bad_events") == []  # it named the user's visitor
    assert (await post(gw, bad, signed(bad)))[0] == 400  # the sender retries it: kept again
    assert len(await rows(gw, "SELECT * FROM bad_events")) == 1
    fixed = SOURCES.replace('ignore_types = ["charge.refunded"]', 'types = {purchase = "conversion"}')
    fixed += f'\n[storage]\npath = "{gw.gateway.settings.store_path}"\n'
    settings = load_settings(None, text=fixed, environ={**ENV, **SOURCES_ENV}, offline=True)
    lines: list[str] = []
    report = await replay_bad(settings, say=lines.append)
    assert report.outcomes == {report.replayed[0]: ["ignored: the user was erased after this event's time"]}
    assert await rows(gw, "SELECT * FROM conversions") == []


async def test_no_raw_user_id_at_rest(gw: RunningGateway) -> None:
    raw = "person-4711@example.com"
    events = [
        conversion(user_id=raw),
        {"type": "identify", "visitor_id": "v-x", "user_id": raw},
        {"type": "touchpoint", "user_id": raw, "source": "crm", "event_id": "t1"},
        conversion(user_id=raw, value="not a number"),  # kept as a bad event, body sealed
    ]
    body = encode(events)
    status, answer = await post(gw, body, signed(body))
    assert status == 202 and (answer["accepted"], answer["bad"]) == (3, 1)
    await gw.gateway.store.close()  # everything on disk, WAL checkpointed
    db = gw.gateway.settings.store_path

    def everything() -> bytes:
        return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))

    stored = await asyncio.to_thread(everything)
    assert raw.encode() not in stored
    assert KEYS.user_key(raw).encode() in stored


def parse_metrics(text: str) -> dict[tuple[str, ...], float]:
    found: dict[tuple[str, ...], float] = {}
    for line in text.splitlines():
        if line.startswith("gateway_inbound_") and "_total{" in line:
            name, _, rest = line.partition("{")
            labels, _, value = rest.rpartition("} ")
            found[(name, *sorted(labels.split(",")))] = float(value)
    return found


async def test_metrics_hold_received_equals_the_sum_of_outcomes(gw: RunningGateway) -> None:
    good, bad = encode(conversion()), encode(conversion(value="x"))
    await post(gw, good, signed(good))
    await post(gw, good, signed(good))  # duplicate
    await post(gw, bad, signed(bad))  # bad
    await post(gw, good, signed(good, "z" * 32))  # rejected: unknown sender
    batch = encode([conversion(), conversion(currency="12"), conversion()])
    await post(gw, batch, signed(batch, TIKTOK_RAW))  # another sender: its mapping finds no type
    await post(gw, batch, basic(SEGMENT), "/_gw/segment")  # segment: conversions are not mapped
    async with gw.session.get(
        gw.admin_url + "/metrics", headers={"Authorization": f"Bearer {ENV['GATEWAY_ADMIN_TOKEN']}"}
    ) as resp:
        metrics = parse_metrics(await resp.text())
    senders = {key[1] for key in metrics if key[0] == "gateway_inbound_received_total"}
    assert senders == {'sender="billing"', 'sender="unknown"', 'sender="tiktok"', 'sender="segment"'}
    for sender in senders:
        received = metrics[("gateway_inbound_received_total", sender)]
        outcomes = sum(
            metrics.get(("gateway_inbound_events_total", f'outcome="{o}"', sender), 0.0)
            for o in ("accepted", "ignored", "duplicate", "bad", "rejected")
        )
        assert received == outcomes, sender
    billing = 'sender="billing"'
    assert [
        metrics[("gateway_inbound_events_total", f'outcome="{o}"', billing)]
        for o in ("accepted", "duplicate", "bad")
    ] == [1, 1, 1]
    assert metrics[("gateway_inbound_events_total", 'outcome="bad"', 'sender="tiktok"')] == 3
    # One sender's bad payloads cost the others nothing: billing's conversion is stored.
    assert await rows(gw, "SELECT rule FROM conversions") == [("billing",)]


async def gateway_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", **env},
        cwd=ROOT,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def write_config(gw: RunningGateway, path: Path, extra: str = "") -> Path:
    text = SOURCES.replace('types = {"creator.click"', extra + 'types = {"creator.click"')
    text += f'\n[storage]\npath = "{gw.gateway.settings.store_path}"\nnode = "cli"\n'
    await asyncio.to_thread(path.write_text, text)
    return path


async def test_replay_bad_after_a_config_fix(gw: RunningGateway, tmp_path: Path, start_gateway) -> None:
    signup = {
        "event": "creator.signup",
        "event_id": "s1",
        "user": {"external_id": "u9"},
        "creator": {"id": "cr_2"},
    }
    body = encode(signup)
    status, answer = await post(gw, body, signed(body, TIKTOK_RAW))
    assert status == 400 and "'creator.signup' is not mapped" in answer["error"]
    env = {**ENV, **SOURCES_ENV}
    # The same config still refuses it.
    code, out, err = await gateway_cli(
        "replay-bad", "-c", str(await write_config(gw, tmp_path / "a.toml")), env=env
    )
    assert code == 0, err
    assert "replayed 0, still bad 1, skipped 0" in out
    # Each line names whose event it is (sender and event key), not only the bad event's ID; and
    # the mapping used is the file's, which a running gateway may not run yet (said once).
    (bad_id,) = [i for (i,) in await rows(gw, "SELECT id FROM bad_events")]
    assert out.splitlines()[:2] == [
        f"mapping: the [[sources]] of {tmp_path / 'a.toml'} as the file has them now (a running gateway"
        " maps with those it started with until it is restarted; a reload does not change them)",
        f"{bad_id} (sender tiktok, event s1): still bad: type (/event): 'creator.signup' is not mapped"
        " (known: conversion, creator.click, identify, touchpoint; see types)",
    ], out
    fixed = await write_config(gw, tmp_path / "b.toml", 'types = {"creator.signup" = "conversion"}\n#')
    code, out, err = await gateway_cli(
        "replay-bad", "-c", str(fixed), "--sender", "tiktok", "--dry-run", env=env
    )
    assert code == 0 and "would replay 1, still bad 0" in out, (out, err)
    assert await rows(gw, "SELECT count(*) FROM conversions") == [(0,)]
    code, out, err = await gateway_cli("replay-bad", "-c", str(fixed), env=env)
    assert code == 0 and "replayed 1, still bad 0" in out, (out, err)
    assert await rows(gw, "SELECT name, rule, user_key FROM conversions") == [
        ("creator.signup", "tiktok", KEYS.user_key("u9"))
    ]
    assert await rows(gw, "SELECT creator_id FROM touchpoints") == [("cr_2",)]
    assert (await rows(gw, "SELECT replayed IS NOT NULL FROM bad_events")) == [(1,)]
    code, out, _ = await gateway_cli("replay-bad", "-c", str(fixed), env=env)
    assert "replayed 0, still bad 0" in out  # nothing left to replay
    # Restarted with the fixed config, the gateway takes a re-sent copy for what it is: a duplicate.
    fixed_gw = await start_gateway(
        gw.url, SOURCES.replace("types = {", 'types = {"creator.signup" = "conversion", '), SOURCES_ENV
    )
    assert (await post(fixed_gw, body, signed(body, TIKTOK_RAW)))[1]["result"] == "duplicate"
    code, _, err = await gateway_cli("replay-bad", "-c", str(fixed), "--sender", "nobody", env=env)
    assert code == 2 and "no [[sources]] named 'nobody'" in err


async def test_replay_bad_says_what_became_of_each_event(
    gw: RunningGateway, tmp_path: Path, start_gateway
) -> None:
    """``replay-bad`` said "replayed" of every event that now passed: also of one the sender's
    retry had recorded already (the gateway took it once restarted with the fix), and of one
    whose type the fix listed in ``ignore_types``: neither recorded anything."""
    events = [
        {"event": "creator.signup", "event_id": f"rs{i}", "user": {"external_id": "u-rs"}} for i in (1, 2)
    ]
    events.append({"event": "creator.refund", "event_id": "rr1", "user": {"external_id": "u-rs"}})
    bodies = [encode(e) for e in events]
    for body in bodies:
        assert (await post(gw, body, signed(body, TIKTOK_RAW)))[0] == 400
    fix = 'ignore_types = ["creator.refund"]\ntypes = {"creator.signup" = "conversion", '
    fixed_gw = await start_gateway(gw.url, SOURCES.replace("types = {", fix), SOURCES_ENV)
    headers = signed(bodies[0], TIKTOK_RAW)  # the sender's retry of the first, after the fix
    assert (await post(fixed_gw, bodies[0], headers))[1]["result"] == "accepted"
    extra = 'ignore_types = ["creator.refund"]\ntypes = {"creator.signup" = "conversion"}\n#'
    fixed = await write_config(gw, tmp_path / "b.toml", extra)
    ids = [i for (i,) in await rows(gw, "SELECT id FROM bad_events ORDER BY id")]  # as posted
    code, out, err = await gateway_cli(
        "replay-bad", "-c", str(fixed), "--dry-run", env={**ENV, **SOURCES_ENV}
    )
    assert code == 0, err
    assert "would replay 3, still bad 0, skipped 0; their events: 2 would record, 1 ignored" in out, out
    code, out, err = await gateway_cli("replay-bad", "-c", str(fixed), env={**ENV, **SOURCES_ENV})
    assert code == 0, err
    assert out.splitlines()[1:] == [
        f"{ids[0]} (sender tiktok, event rs1): replayed: already recorded",
        f"{ids[1]} (sender tiktok, event rs2): replayed: recorded",
        f"{ids[2]} (sender tiktok, event rr1): replayed: ignored: type 'creator.refund' is in"
        " ignore_types: not recorded",
        "replayed 3, still bad 0, skipped 0; their events: 1 recorded, 1 already recorded, 1 ignored",
    ]
    assert await rows(gw, "SELECT dedup_key FROM conversions ORDER BY dedup_key") == [
        ("event:tiktok:rs1",),
        ("event:tiktok:rs2",),
    ]


async def test_send_test_event_says_how_to_remove_it_from_a_dev_gateway(
    gw: RunningGateway, tmp_path: Path
) -> None:
    """Under `make run` (a `--dev` gateway, its secret made up) the `gateway erase` the command
    named could not run: GATEWAY_SECRET is not set. Where it is not, the line names the admin
    API's erasure too, which that gateway answers; where it is, `gateway erase` alone."""
    config = str(await write_config(gw, tmp_path / "gateway.toml"))
    args = ("send-test-event", "--creator", "cr dev", "--url", gw.url + "/_gw/events", "-c", config)
    code, out, err = await gateway_cli(*args, env=SOURCES_ENV)
    assert code == 0, (out, err)
    path = "/api/users/test-user-cr%20dev"
    assert (
        "  (GATEWAY_SECRET is not set here, and gateway erase needs it; a gateway run with --dev made its"
        f" own up: ask that one instead, curl -X DELETE -H 'Authorization: Bearer <admin token>'"
        f" http://127.0.0.1:9090{path})"
    ) in out, out
    async with gw.session.delete(
        gw.admin_url + path, headers={"Authorization": f"Bearer {ENV['GATEWAY_ADMIN_TOKEN']}"}
    ) as resp:
        assert resp.status == 200, await resp.text()
    assert await rows(gw, "SELECT COUNT(*) FROM conversions") == [(0,)]
    code, out, err = await gateway_cli(*args, env={**SOURCES_ENV, "GATEWAY_SECRET": ENV["GATEWAY_SECRET"]})
    assert code == 0 and "to remove it: gateway erase 'test-user-cr dev'" in out and "--dev" not in out, out


async def test_send_test_event_says_how_to_remove_a_visitors_test_conversion(
    gw: RunningGateway, tmp_path: Path
) -> None:
    """A sender whose `fields` map no user ID gets its test conversion for the visitor
    `test-visitor-<creator>`. Until 2026-12-07 the command printed no way to remove it, and the
    README said none existed, though `gateway erase --visitor` (and `DELETE /api/visitors/…`)
    removes it: it names them, as it names `gateway erase` for a user's."""
    config = await write_config(gw, tmp_path / "gateway.toml")
    text = (await asyncio.to_thread(config.read_text)).replace(
        'ignore_types = ["charge.refunded"]',
        'ignore_types = ["charge.refunded"]\nfields = { user_id = "" }',
        1,
    )
    await asyncio.to_thread(config.write_text, text)
    args = ("send-test-event", "--url", gw.url + "/_gw/events", "-c", str(config))
    code, out, err = await gateway_cli(*args, env=SOURCES_ENV)
    assert code == 0 and '"visitor_id":"test-visitor-cr_test1"' in out, (out, err)
    assert (
        "  (GATEWAY_SECRET is not set here, and gateway erase needs it; a gateway run with --dev made its"
        " own up: ask that one instead, curl -X DELETE -H 'Authorization: Bearer <admin token>'"
        " http://127.0.0.1:9090/api/visitors/test-visitor-cr_test1)"
    ) in out, out
    code, out, err = await gateway_cli(*args, env={**SOURCES_ENV, "GATEWAY_SECRET": ENV["GATEWAY_SECRET"]})
    assert code == 0, (out, err)
    assert f"to remove it: gateway erase --visitor test-visitor-cr_test1 -c {config}" in out, out
    assert await rows(gw, "SELECT count(*) FROM conversions") == [(2,)]
    code, out, err = await gateway_cli(
        "erase", "--visitor", "test-visitor-cr_test1", "-c", str(config), env={**ENV, **SOURCES_ENV}
    )
    assert code == 0, (out, err)
    assert await rows(gw, "SELECT count(*) FROM conversions") == [(0,)]
    assert await rows(gw, "SELECT count(*) FROM touchpoints") == [(0,)]


async def test_send_test_event_against_a_running_gateway(gw: RunningGateway, tmp_path: Path) -> None:
    config = str(await write_config(gw, tmp_path / "gateway.toml"))
    url = gw.url + "/_gw/events"
    code, out, err = await gateway_cli(
        "send-test-event",
        "--creator",
        "cr_test1",
        "--value",
        "50",
        "--url",
        url,
        "-c",
        config,
        env=SOURCES_ENV,
    )
    assert code == 0, (out, err)
    assert "HTTP 202" in out and '"result":"accepted"' in out
    assert f"to remove it: gateway erase test-user-cr_test1 -c {config}" in out
    assert await rows(gw, "SELECT value, currency, rule FROM conversions") == [(50.0, "USD", "billing")]
    assert await rows(gw, "SELECT creator_id FROM touchpoints") == [("cr_test1",)]
    # Another sender's layout: the payload follows its pointers (creator at /creator/id).
    code, out, err = await gateway_cli(
        "send-test-event", "--sender", "tiktok", "--url", url, "-c", config, env=SOURCES_ENV
    )
    assert code == 0 and '"creator":{"id":"cr_test1"}' in out, (out, err)
    assert await rows(gw, "SELECT source, creator_id FROM touchpoints ORDER BY source IS NOT NULL") == [
        (None, "cr_test1"),
        ("tiktok", "cr_test1"),
    ]
    # Both were made for the test user: erasing it removes them, conversions and touchpoints.
    code, out, err = await gateway_cli(
        "erase", "test-user-cr_test1", "-c", config, env={**ENV, **SOURCES_ENV}
    )
    assert code == 0, (out, err)
    assert await rows(gw, "SELECT count(*) FROM conversions") == [(0,)]
    assert await rows(gw, "SELECT count(*) FROM touchpoints") == [(0,)]
    code, _, err = await gateway_cli("send-test-event", "--url", url, "-c", config, env={})
    assert code == 2 and "sources[0].secrets[0]: environment variable BILLING_SECRET is not set" in err


async def test_admin_lists_bad_events_as_the_openapi_document_says(gw: RunningGateway) -> None:
    for payload in (conversion(value="x"), conversion(currency="1")):
        body = encode(payload)
        await post(gw, body, signed(body))
    page = await gw.api("/api/bad-events", limit="1", sender="billing", pending="true")
    Draft202012Validator(response_schema("/api/bad-events", 200)).validate(page)
    assert page["items"][0]["reason"].startswith("value (/value): expected a number")
    rest = await gw.api("/api/bad-events", cursor=page["next_cursor"])
    assert [i["reason"][:8] for i in rest["items"]] == ["currency"] and rest["next_cursor"] is None
    assert (await gw.api("/api/bad-events", sender="segment"))["items"] == []
    wrong = await gw.api("/api/bad-events", pending="maybe")
    Draft202012Validator(response_schema("/api/bad-events", 400)).validate(wrong)
    assert wrong["error"].startswith("pending:")
    # A name no sender can have is refused, as the other listings' filters, not an empty page.
    for name in ("Billing", " billing", "", "billing\n", "x" * 65):
        wrong = await gw.api("/api/bad-events", sender=name)
        assert wrong["status"] == 400, name
        assert wrong["error"] == (
            f"sender: expected a [[sources]] name (1-64 of a-z 0-9 _ . - (not starting with _ . -)),"
            f" got {name!r}; leave sender out for every one"
        )


async def test_bad_events_list_newest_first_with_order_newest(gw: RunningGateway) -> None:
    """Oldest first only, what a sender was just refused for sat on the last page: ``order=newest``
    lists it first, with the other listings' cursor rules (a cursor of one order is a 400 under
    the other)."""
    for value in ("a", "b", "c", "d", "e"):
        body = encode(conversion(value=value))
        await post(gw, body, signed(body))
    refused = ["a", "b", "c", "d", "e"]

    async def every(**params: str) -> tuple[list[str], list[str]]:
        values, cursors, cursor = [], [], None
        while True:
            at = {"cursor": cursor} if cursor else {}
            page = await gw.api("/api/bad-events", limit="2", **params, **at)
            Draft202012Validator(response_schema("/api/bad-events", 200)).validate(page)
            values += [re.search(r"got '(\w)'", i["reason"])[1] for i in page["items"]]
            if (cursor := page["next_cursor"]) is None:
                return values, cursors
            cursors.append(cursor)

    oldest, old_cursors = await every()
    newest, new_cursors = await every(order="newest")
    assert oldest == refused and newest == refused[::-1]
    assert all(c.startswith("newest.") for c in new_cursors) and len(new_cursors) == 2
    first = await gw.api("/api/bad-events", order="newest", limit="1", sender="billing", pending="true")
    assert "got 'e'" in first["items"][0]["reason"]  # the latest refused, on the first page
    for cursor, order, came in (
        (old_cursors[0], "newest", "order=oldest (the default)"),
        (new_cursors[0], "oldest", "order=newest"),
    ):
        wrong = await gw.api("/api/bad-events", cursor=cursor, order=order)
        assert wrong["status"] == 400, wrong
        assert wrong["error"].startswith(f"cursor: comes from a page in {came}, not order={order};")
    wrong = await gw.api("/api/bad-events", cursor=new_cursors[0])  # order left out
    assert wrong["status"] == 400 and wrong["error"].startswith("cursor: comes from a page in order=newest")
    wrong = await gw.api("/api/bad-events", order="latest")
    Draft202012Validator(response_schema("/api/bad-events", 400)).validate(wrong)
    assert wrong["error"] == "order: expected one of oldest, newest, got 'latest'"


async def test_a_key_too_long_is_named_by_where_it_came_from(gw: RunningGateway) -> None:
    """An event with no event_id under a long webhook-id was refused as "event_id (/event_id):
    the event key is longer than 256 characters", naming a field the event did not have."""
    body = encode({"type": "conversion", "user_id": "u-long"})
    status, answer = await post(gw, body, signed(body, msg_id="m" * 300))
    assert status == 400, answer
    assert answer["errors"] == [
        "event_id (/event_id): the event key, from the delivery's ID (webhook-id, or its delivery"
        " header) and the event's index, as it has no event_id, is 302 characters, longer than 256"
    ]
    body = encode({"type": "page", "messageId": "k" * 300, "anonymousId": "a-long"})
    status, answer = await post(gw, body, basic(SEGMENT), "/_gw/segment")
    assert answer["errors"] == [
        "event_id (/messageId): the event key, from its event_id, is 300 characters, longer than 256"
    ]


async def test_replay_bad_refuses_a_key_too_long_as_the_endpoint_does(
    gw: RunningGateway, start_gateway
) -> None:
    """An event with no event_id under a webhook-id too long to key it was refused, kept, and
    recorded by ``replay-bad``, which keyed it by the bad event instead of its delivery. The
    replay keys an event as the endpoint did, so it refuses that one in the same words, and one
    that now passes is the sender's retry's key: the two record it once."""
    long_id, body = "m" * 300, encode({"type": "conversion", "user_id": "u-long"})
    status, answer = await post(gw, body, signed(body, msg_id=long_id))
    assert status == 400, answer
    lines: list[str] = []
    report = await replay_bad(gw.gateway.settings, say=lines.append)
    assert report.replayed == [] and [why for _, why in report.still_bad] == answer["errors"], lines
    assert await rows(gw, "SELECT count(*) FROM conversions") == [(0,)]

    # Refused for another reason, in a batch: once the fix runs, the sender's retry of the batch
    # and the replay of its kept events record each event once.
    batch = encode(
        [conversion(), {"type": "signup", "user_id": "u-fix"}, {"type": "signup", "user_id": "u-fix2"}]
    )
    headers = signed(batch, msg_id="batch-1")
    status, answer = await post(gw, batch, headers)
    assert (status, answer["bad"]) == (202, 2), answer
    fixed = await start_gateway(
        gw.url,
        SOURCES.replace('ignore_types = ["charge.refunded"]', 'types = {signup = "conversion"}'),
        SOURCES_ENV,
    )
    status, answer = await post(fixed, batch, headers)  # the sender's retry, after the fix
    assert [r["result"] for r in answer["results"]] == ["duplicate", "accepted", "accepted"], answer
    report = await replay_bad(fixed.gateway.settings, say=lines.append)
    outcomes = [o for each in report.outcomes.values() for o in each]
    assert outcomes == ["already recorded", "already recorded"], lines
    assert await rows(gw, "SELECT count(*) FROM conversions WHERE name = 'signup'") == [(2,)]


async def test_replay_bad_reads_a_kept_event_as_the_endpoint_read_it(gw: RunningGateway) -> None:
    """A batch's event that is itself an array (or an object whose ``/batch`` holds one) is
    refused by the endpoint, ``expected a JSON object``, and kept alone. ``replay-bad`` split
    that kept event again as a batch and recorded the conversions inside it, with the same
    config: a replay now reads a kept event as one event, as the endpoint did."""
    inner = [conversion(order_id="nested-1"), conversion(order_id="nested-2")]
    body = encode([inner, {"batch": [conversion(order_id="nested-3")], "type": "conversion"}])
    status, answer = await post(gw, body, signed(body))
    assert (status, answer["bad"]) == (400, 2), answer
    lines: list[str] = []
    report = await replay_bad(gw.gateway.settings, say=lines.append)
    assert report.replayed == [], lines
    assert [why for _, why in report.still_bad] == [
        "; ".join(result["errors"]) for result in answer["results"]
    ], lines
    assert await rows(gw, "SELECT count(*) FROM conversions") == [(0,)]


async def test_a_body_not_utf8_is_kept_so_that_it_replays_as_bad(gw: RunningGateway) -> None:
    """A Latin-1 body was kept with U+FFFD for each byte that is not UTF-8: valid JSON, so
    ``replay-bad`` recorded the conversion for a user ID the sender never sent ("M\ufffdller")."""
    body = b'{"type": "conversion", "event_id": "l1", "user_id": "M\xfcller", "value": 5}'
    status, answer = await post(gw, body, signed(body))
    # Said where the byte is (until 2026-12-07 the parser's "Invalid UTF-8 encoded string" alone).
    assert (status, answer["error"]) == (
        400,
        "body: not UTF-8 (byte 0xFC at offset 54); JSON is sent as UTF-8 (RFC 8259)",
    )
    [item] = (await gw.api("/api/bad-events", sender="billing"))["items"]
    assert item["body"] == body.decode(errors="backslashreplace")  # the byte as sent: \xfc
    lines: list[str] = []
    report = await replay_bad(gw.gateway.settings, say=lines.append)
    assert (report.replayed, len(report.still_bad)) == ([], 1), lines
    # A row kept so before the fix (U+FFFD for the byte) is skipped, saying why, not recorded.
    old = seal(body_key(SECRET.encode()), body.decode(errors="replace"))
    async with aiosqlite.connect(gw.gateway.settings.store_path) as db:
        await db.execute("UPDATE bad_events SET body = ?", (old,))
        await db.commit()
    report = await replay_bad(gw.gateway.settings, say=lines.append)
    assert report.skipped == [(item["id"], "the body was not UTF-8, and was kept without its bytes")]
    assert await rows(gw, "SELECT count(*) FROM conversions") == [(0,)]


async def test_a_body_not_utf8_names_the_charset_its_content_type_gave(gw: RunningGateway) -> None:
    """A sender that encodes its JSON as Latin-1 and says so (``charset=ISO-8859-1``) was
    answered only that the body was not valid JSON: the answer names the charset it declared.
    A UTF-8 body is read as UTF-8 whatever charset its label gives."""
    body = b'{"type": "conversion", "event_id": "l3", "user_id": "M\xfcller", "value": 5}'
    latin = {**signed(body), "content-type": "application/json; charset=ISO-8859-1"}
    status, answer = await post(gw, body, latin)
    assert (status, answer["error"]) == (
        400,
        "body: not UTF-8 (byte 0xFC at offset 54); JSON is sent as UTF-8 (RFC 8259):"
        " its Content-Type says charset=iso-8859-1; have the sender encode it as UTF-8",
    )
    [item] = (await gw.api("/api/bad-events", sender="billing"))["items"]
    assert item["body"] == body.decode(errors="backslashreplace")
    utf8 = '{"type": "conversion", "event_id": "l4", "user_id": "M\u00fcller", "value": 5}'.encode()
    labelled = {**signed(utf8), "content-type": "application/json; charset=latin-1"}
    status, answer = await post(gw, utf8, labelled)
    assert (status, answer["result"]) == (202, "accepted"), answer


async def test_an_empty_body_kept_as_bad_is_listed_as_empty(gw: RunningGateway) -> None:
    """The bad event of an empty POST was listed with the body "(sealed under another
    identity.secret)", sending the operator after a key change that never happened."""
    status, answer = await post(gw, b"", signed(b""))
    assert (status, answer["error"]) == (400, "body: empty (expected a JSON object or array)"), answer
    [item] = (await gw.api("/api/bad-events", sender="billing"))["items"]
    assert (item["body"], item["reason"]) == ("", answer["error"])


async def test_a_compressed_delivery_is_decoded_whichever_bytes_were_signed(gw: RunningGateway) -> None:
    """Senders may gzip their deliveries (analytics libraries have the option). The proxy
    listener forwards bodies as they come, so a signed event's body is undone here: signed as
    JSON or as the bytes on the wire, it is accepted; a coding the gateway cannot undo is a
    415, a body that does not decode a 400, and one that would decode past webhooks.max_body
    a 413."""
    body = encode(conversion(order_id="gz-1"))
    packed = gzip.compress(body)
    status, answer = await post(gw, packed, {**signed(body), "Content-Encoding": "gzip"})
    assert status == 202 and answer["result"] == "accepted", answer
    body2 = encode(conversion(order_id="gz-2"))
    packed2 = zlib.compress(body2)
    status, answer = await post(gw, packed2, {**signed(packed2), "Content-Encoding": "deflate"})
    assert status == 202 and answer["result"] == "accepted", answer
    batch = encode({"batch": [{"type": "identify", "messageId": "m-gz", "userId": "u9", "anonymousId": "a"}]})
    status, answer = await post(
        gw, gzip.compress(batch), {**basic(SEGMENT), "Content-Encoding": "gzip"}, "/_gw/segment"
    )
    assert status == 202, answer
    assert await rows(gw, "SELECT dedup_key FROM conversions ORDER BY dedup_key") == [
        ("order:gz-1",),
        ("order:gz-2",),
    ]
    status, answer = await post(gw, packed, {**signed(body), "Content-Encoding": "br"})
    assert status == 415 and answer["error"].startswith("Content-Encoding: 'br'")
    status, answer = await post(gw, b"not gzip", {**signed(b"not gzip"), "Content-Encoding": "gzip"})
    assert status == 400 and "is not gzip data (it starts 'not gz')" in answer["error"], answer
    broken = gzip.compress(body)[:-12]  # gzip's start, cut short
    status, answer = await post(gw, broken, {**signed(body), "Content-Encoding": "gzip"})
    assert status == 400 and "does not decode as gzip" in answer["error"], answer
    bomb = gzip.compress(b"[" + b" " * 1_000_000 + b"]")
    assert len(bomb) < 4096  # the test sources' webhooks.max_body
    status, answer = await post(gw, bomb, {**signed(bomb), "Content-Encoding": "gzip"})
    assert status == 413 and "webhooks.max_body" in answer["error"], answer


async def test_a_body_labelled_gzip_that_is_not_says_so(gw: RunningGateway) -> None:
    """A sender library that sets ``Content-Encoding: gzip`` and sends the JSON as it is (or a
    proxy that decompressed it and left the header) was answered "does not decode as gzip, or
    is larger than webhooks.max_body once decoded": which of the two? A body that does not
    start as gzip data does is said so; a real gzip body too large once decoded is a 413, as
    one too large as sent is (it was a 400 with the either/or wording), naming the bound."""
    body = encode(conversion())
    status, answer = await post(gw, body, {**signed(body), "Content-Encoding": "gzip"})
    assert (status, answer["error"]) == (
        400,
        "body: Content-Encoding says gzip, but the body is not gzip data (it starts '{\"type'): sent"
        " uncompressed, or decompressed on the way with the header left on?",
    ), answer
    packed = gzip.compress(body)
    status, answer = await post(gw, packed, {**signed(body), "Content-Encoding": "gzip, gzip"})
    assert status == 400 and answer["error"].startswith(
        "body: Content-Encoding says gzip, but the body is not gzip data"
    ), answer
    bomb = gzip.compress(b"[" + b" " * 1_000_000 + b"]")
    status, answer = await post(gw, bomb, {**signed(bomb), "Content-Encoding": "gzip"})
    assert (status, answer["error"]) == (
        413,
        "body: larger than webhooks.max_body (4096 bytes) once decoded (gzip); the limit applies to"
        " the body decompressed",
    ), answer
    # The inner layer of two too large: the same; a layer cut short is still a 400 saying so.
    inner = gzip.compress(gzip.compress(b"[" + b" " * 100_000 + b"]"))
    status, answer = await post(gw, inner, {**signed(inner), "Content-Encoding": "gzip, gzip"})
    assert status == 413 and answer["error"].startswith("body: larger than webhooks.max_body"), answer
    cut = gzip.compress(body)[:-12]
    status, answer = await post(gw, cut, {**signed(body), "Content-Encoding": "gzip"})
    assert (status, answer["error"]) == (400, "body: does not decode as gzip"), answer


def codings(body: bytes, *lines: str) -> CIMultiDict[str]:
    """``body``'s signed headers with one ``Content-Encoding`` line per item of ``lines``."""
    headers = CIMultiDict(signed(body))
    for line in lines:
        headers.add("Content-Encoding", line)
    return headers


async def test_content_encoding_over_several_lines_is_one_list(gw: RunningGateway) -> None:
    """RFC 9110: ``Content-Encoding`` on two lines is one comma-joined list, in the order the
    codings were applied; every one is undone, the last first (until 2026-12-05 the first line
    alone was read: gzip twice was decoded once, and ``gzip, gzip`` on one line was a 415). One
    the gateway cannot undo, wherever it stands, is a 415; more than four codings too."""
    twice = encode(conversion(order_id="ce-1"))
    status, answer = await post(gw, gzip.compress(gzip.compress(twice)), codings(twice, "gzip", "gzip"))
    assert status == 202 and answer["result"] == "accepted", answer
    one_line = encode(conversion(order_id="ce-2"))
    status, answer = await post(gw, gzip.compress(gzip.compress(one_line)), codings(one_line, "gzip, gzip"))
    assert status == 202 and answer["result"] == "accepted", answer
    # Applied in order: deflate first, then gzip; so gzip is undone first.
    mixed = encode(conversion(order_id="ce-3"))
    packed = gzip.compress(zlib.compress(mixed))
    status, answer = await post(gw, packed, codings(mixed, "deflate", "gzip"))
    assert status == 202 and answer["result"] == "accepted", answer
    status, answer = await post(gw, packed, codings(mixed, "gzip", "deflate"))  # the wrong order
    assert status == 400 and "does not decode as gzip, deflate" in answer["error"], answer
    plain = encode(conversion(order_id="ce-4"))
    status, answer = await post(gw, gzip.compress(plain), codings(plain, "gzip", "identity"))
    assert status == 202 and answer["result"] == "accepted", answer
    status, answer = await post(gw, gzip.compress(plain), codings(plain, "gzip", "br"))
    assert status == 415 and answer["error"].startswith("Content-Encoding: 'br'"), answer
    status, answer = await post(gw, plain, codings(plain, "gzip, gzip", "gzip, gzip, gzip"))
    assert status == 415 and "at most 4" in answer["error"], answer
    assert await rows(gw, "SELECT dedup_key FROM conversions ORDER BY dedup_key") == [
        ("order:ce-1",),
        ("order:ce-2",),
        ("order:ce-3",),
        ("order:ce-4",),
    ]


async def test_json_nested_too_deeply_is_a_400_kept_as_a_bad_event(gw: RunningGateway) -> None:
    """Nesting past Python's recursion limit stopped the decoder (or the encoder keeping the
    event as a bad one) with a RecursionError: a 500 that told the sender to retry, for ever.
    Past ``MAX_DEPTH`` levels the body is now a 400 saying so, kept with the bad events;
    ``replay-bad`` finds it still bad, with the same reason."""
    ok = {**conversion(), "extra": json_nested(MAX_DEPTH - 1)}  # the event is the first level
    body = encode(ok)
    assert (await post(gw, body, signed(body)))[0] == 202
    for deep in (
        json_nested(MAX_DEPTH + 1),
        json_nested(2000),  # past the decoder's recursion
        b'{"type": "conversion", "x": ' + json_nested(980) + b"}",  # decodes; the bad event did not encode
    ):
        for path, headers in (("/_gw/events", signed(deep)), ("/_gw/segment", basic(SEGMENT))):
            status, answer = await post(gw, deep, headers, path)
            assert status == 400 and answer["error"] == f"body: JSON nested deeper than {MAX_DEPTH} levels"
    assert await rows(gw, "SELECT count(*) FROM bad_events") == [(6,)]
    lines: list[str] = []
    report = await replay_bad(gw.gateway.settings, dry_run=True, say=lines.append)
    assert not report.replayed and len(report.still_bad) == 6, lines
    assert {reason for _, reason in report.still_bad} == {f"body: JSON nested deeper than {MAX_DEPTH} levels"}


def json_nested(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


async def test_header_bytes_that_are_not_utf8_are_a_401(gw: RunningGateway) -> None:
    """A webhook-id or signature header carrying bytes that are not UTF-8 was a 500 (and a
    traceback in the log): it is a 401 like any other signature that does not verify."""
    body = encode(conversion())
    good = signed(body)
    for name, raw in (
        ("webhook-id", b"msg_\xff"),
        ("webhook-signature", b"v1,\xff\xfe"),
        ("x-webhook-signature", b"\xff"),
    ):
        kept = {} if name.startswith("x-") else {k: v for k, v in good.items() if k != name}
        headers = [(k.encode(), v.encode()) for k, v in kept.items()] + [(name.encode(), raw)]
        status, answer = await raw_post(gw, headers, body)
        assert status == 401 and answer["error"].startswith("signature:"), (name, answer)
    assert await rows(gw, "SELECT count(*) FROM receipts") == [(0,)]


ODD_BODIES = [
    b"",
    b"{not json",
    b'"hello"',
    b"null",
    b"[]",
    b"[1, [2], null]",
    b'{"batch": "x"}',
    b'{"batch": []}',
    b'{"batch": {"type": "page"}}',
    b'{"type": "conversion", "user_id": "u", "value": 1e400}',
    b'{"type": "conversion", "user_id": "\\ud800", "value": 1e400}',
    b'{"type": "conversion", "user_id": "u", "value": 1e400, "x": NaN}',
    b'{"batch": [{"type": "conversion", "user_id": "u", "value": 1e400, "event_id": "e1"}, {"x": -1e999}]}',
    b'{"type": "conversion", "user_id": "u", "value": NaN}',
    b'{"type": "conversion", "user_id": "u", "value": -Infinity}',
    b'{"type": "conversion", "user_id": "u", "value": "1e999"}',
    b'{"type": "conversion", "user_id": "u", "value": "1e99999999999999999999"}',
    b'{"type": "conversion", "user_id": "' + b"9" * 30 + b'", "event_id": ' + b"9" * 30 + b"}",
    b'{"type": "conversion", "user_id": "\xff\xfe"}',
    b'\xef\xbb\xbf{"type": "conversion"}',
    b'{"type": "conversion", "user_id": "\\ud800"}',
    b'{"type": "conversion", "user_id": "a\\u0000b", "event_id": "a\\u0000b"}',
    b'{"type": "conv\\u0000ersion", "user_id": "u"}',
    b'{"type": "conversion", "type": "identify", "user_id": "u"}',
    b'{"type": 5, "user_id": "u"}',
    b'{"type": "conversion", "user_id": "u", "event_id": [1]}',
    *(
        b'{"type": "conversion", "user_id": "u", "timestamp": ' + ts + b"}"
        for ts in (
            b'"0001-01-01T00:00:00+01:00"',
            b'"9999-12-31T23:59:59-01:00"',
            b'"2026-02-30T00:00:00Z"',
            b'"2026-W49-4"',
            b'"."',
            b'"NaN"',
            b'"' + b"9" * 400 + b'"',
            b"1e300",
            b"9" * 40,
            b"-99999999999999",
            b"true",
            b"{}",
        )
    ),
    json_nested(3000)[:4000],
]


async def test_a_number_beyond_a_double_refuses_its_event_not_the_batch(gw: RunningGateway) -> None:
    """``1e400`` is valid JSON that no double holds: the whole body was refused as "not valid
    JSON", so one such number in a batch refused every event of it, each time it was sent."""
    body = (
        b'{"batch": ['
        + encode(conversion(order_id="o-big"))
        + b', {"type": "conversion", "user_id": "u", "value": 1e400}]}'
    )
    status, answer = await post(gw, body, signed(body))
    assert status == 202 and (answer["accepted"], answer["bad"]) == (1, 1), answer
    assert answer["results"][1]["errors"] == [
        "value (/value): expected a number from 0 to 1e+15 (after value_scale)"  # no refund: too large
    ]
    assert await rows(gw, "SELECT order_id FROM conversions") == [("o-big",)]
    one = b'{"type": "conversion", "user_id": "u", "value": 1e400}'
    status, answer = await post(gw, one, signed(one))
    assert status == 400 and answer["error"].startswith("value (/value): expected a number"), answer
    for odd, why in (
        (
            b'[1e400, "\\ud800"]',
            "body: not valid JSON (/1 holds \\ud800, half of a UTF-16 surrogate pair alone, which is no"
            " character; send the text as UTF-8, or the pair whole: \\ud83d\\ude00)",
        ),
        (b"[1e400, NaN]", "body: not valid JSON (NaN is not JSON)"),
    ):
        status, answer = await post(gw, odd, signed(odd))
        assert (status, answer["error"]) == (400, why)


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b'{"type": "conversion", "user_id": "\\ud800"}', "/user_id holds \\ud800"),
        (b'{"type": "conversion", "user_id": "u", "x": [1e400, "a\\udc00"]}', "/x/1 holds \\udc00"),
        (b'{"type": "conversion", "user_id": "u", "a\\ud83d": 1}', "a name in the top object holds \\ud83d"),
        (
            b'{"type": "conversion", "user_id": "u", "x/~": [{"\\udfff": 1}]}',
            "a name in /x~1~0/0 holds \\udfff",
        ),
        # The whole body one string: its pointer is "", which named nothing (" holds \ud800").
        (b'"\\ud800"', "the whole document holds \\ud800"),
    ],
    ids=["field", "beside-a-number-beyond-a-double", "name", "nested-name", "the-whole-body"],
)
async def test_a_lone_surrogate_in_a_signed_event_is_refused_naming_where(
    gw: RunningGateway, body: bytes, where: str
) -> None:
    """A UTF-16 surrogate escape without its other half (no character: it could not be stored)
    is a 400 that says so and where, as the admin API's does. The fast decoder's own words
    were ``Input data was truncated``, which sent a sender looking for a cut body."""
    status, answer = await post(gw, body, signed(body))
    assert status == 400, answer
    assert answer["error"] == (
        f"body: not valid JSON ({where}, half of a UTF-16 surrogate pair alone, which is no"
        " character; send the text as UTF-8, or the pair whole: \\ud83d\\ude00)"
    ), answer
    assert await rows(gw, "SELECT count(*) FROM conversions") == [(0,)]


async def test_a_bad_event_beyond_a_double_is_kept_as_sent_and_replays_as_bad(gw: RunningGateway) -> None:
    """The kept body of an event refused for its ``1e400`` was written with the infinity as
    ``null``: the admin saw a value the sender never sent, and ``replay-bad`` read the null
    as no value and recorded the refused conversion, without one."""
    body = b'{"type": "conversion", "user_id": "u", "value": -1e400, "x": [1e999]}'
    status, answer = await post(gw, body, signed(body))
    assert status == 400 and answer["error"].startswith("value (/value): expected a number"), answer
    kept = unseal(body_key(SECRET.encode()), (await rows(gw, "SELECT body FROM bad_events"))[0][0])
    assert kept == '{"type":"conversion","user_id":"u","value":-1e400,"x":[1e400]}', kept
    lines: list[str] = []
    report = await replay_bad(gw.gateway.settings, say=lines.append)
    assert not report.replayed and len(report.still_bad) == 1, lines
    assert report.still_bad[0][1].startswith("value (/value): expected a number from 0 to 1e+15"), lines
    assert await rows(gw, "SELECT count(*) FROM conversions") == [(0,)]


async def test_nothing_a_sender_sends_gives_a_server_error(
    gw: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """The bad-input sweep of both endpoints, each body signed as its sender signs it: every
    answer is JSON and below 500 (a refusal says why), and nothing is logged as an error."""
    for body in ODD_BODIES:
        segment = body.replace(b'"conversion"', b'"page"')
        for path, sent, headers in (
            ("/_gw/events", body, signed(body)),
            ("/_gw/segment", segment, {**basic(SEGMENT), "Content-Type": "text/plain"}),
            ("/_gw/segment/v1/identify", segment, {**basic(SEGMENT), "Content-Encoding": "gzip"}),
        ):
            status, answer = await post(gw, sent, headers, path)
            assert status < 500 and answer["ok"] is (status < 400), (path, sent[:80], status, answer)
            assert status < 400 or answer["error"], answer
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


STRIPE_SECRET = "whsec_" + "s" * 32  # Stripe's key is this whole text, never base64-decoded
STRIPE = """
[[sources]]
name = "stripe"
signature = "stripe"
secrets = ["env:STRIPE_SECRET"]
types = {"checkout.session.completed" = "conversion"}
defaults = {name = "purchase"}
value_scale = 0.01

[sources.fields]
type = "/type"
event_id = "/id"
user_id = "/data/object/client_reference_id"
value = "/data/object/amount_total"
currency = "/data/object/currency"
order_id = "/data/object/id"
timestamp = "/created"
"""


async def send_test_event(
    gw: RunningGateway, config: Path, toml: str, env: dict[str, str], sender: str | None = None
) -> tuple[int, str, str]:
    """``gateway send-test-event`` (of ``sender``, else the first source) to ``gw``, from a
    config of ``toml`` and ``gw``'s store."""
    store = gw.gateway.settings.store_path
    await asyncio.to_thread(config.write_text, toml + f'\n[storage]\npath = "{store}"\n')
    chosen = ("--sender", sender) if sender else ()
    return await gateway_cli(
        "send-test-event", *chosen, "--url", gw.url + "/_gw/events", "-c", str(config), env={**ENV, **env}
    )


def stripe_signed(
    body: bytes, secret: str | bytes = STRIPE_SECRET, *, ts: int | None = None
) -> dict[str, str]:
    """Stripe's scheme, written out here (not through the gateway's own signing code)."""
    stamp = str(int(time.time()) if ts is None else ts)
    key = secret.encode() if isinstance(secret, str) else secret
    mac = hmac.new(key, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={stamp},v1={mac},v0=deadbeef", "content-type": "application/json"}


async def test_stripe_posts_its_own_signed_events(start_gateway, upstream_server, tmp_path: Path) -> None:
    """Stripe signs with Stripe-Signature (t=…,v1=<hex HMAC of "t.body">, keyed by the whole
    whsec_… text) and sends no delivery id: it used to get a 401 (missing webhook-id), so a
    Stripe account could not post to the gateway at all."""
    gw = await start_gateway(
        await upstream_server(web.Application()), STRIPE, {"STRIPE_SECRET": STRIPE_SECRET}
    )
    event = {
        "id": "evt_1QabcStripe",
        "object": "event",
        "type": "checkout.session.completed",
        "created": int(time.time()),
        "data": {
            "object": {
                "id": "cs_test_a1",
                "amount_total": 4990,
                "currency": "eur",
                "client_reference_id": "42",
            }
        },
    }
    body = encode(event)
    status, answer = await post(gw, body, stripe_signed(body))
    assert (status, answer["result"], answer["key"]) == (202, "accepted", "evt_1QabcStripe"), answer
    assert await rows(gw, "SELECT name, value, currency, order_id FROM conversions") == [
        ("purchase", 49.9, "EUR", "cs_test_a1")
    ]
    # Stripe retries with the same body and a new t: one conversion.
    status, answer = await post(gw, body, stripe_signed(body, ts=int(time.time()) - 5))
    assert (status, answer["result"]) == (200, "duplicate")
    assert len(await rows(gw, "SELECT * FROM conversions")) == 1
    # A wrong secret, a stale t, a header without v1, a Standard Webhooks signature: 401.
    other = encode({**event, "id": "evt_2"})
    wrong = stripe_signed(other, "whsec_" + "x" * 32)
    stale = stripe_signed(other, ts=int(time.time()) - 3600)
    no_v1 = {**stripe_signed(other), "Stripe-Signature": f"t={int(time.time())}"}
    decoded = stripe_signed(other, base64.b64decode(STRIPE_SECRET[6:]))  # as Standard Webhooks keys
    for headers, why in (
        (wrong, "signature"),
        (stale, "timestamp"),
        (no_v1, "signature"),
        (decoded, "signature"),
    ):
        status, answer = await post(gw, other, headers)
        assert status == 401 and answer["error"].startswith(why), (why, answer)
    status, answer = await post(gw, other, signed(other, STRIPE_SECRET))
    assert status == 401, answer
    assert len(await rows(gw, "SELECT * FROM conversions")) == 1
    # send-test-event signs as Stripe does, in Stripe's layout.
    code, out, err = await send_test_event(
        gw, tmp_path / "gateway.toml", STRIPE, {"STRIPE_SECRET": STRIPE_SECRET}
    )
    assert code == 0 and "HTTP 202" in out, (out, err)
    assert '"amount_total":5000' in out


PADDLE_SECRET = "pdl_ntfset_01gkpjp8bkm3tm53kdgkx6sms7_" + "k" * 32  # the whole key, as given


def readme_text() -> str:
    return (Path(__file__).resolve().parents[2] / "README.md").read_text()


def readme_source(signature: str, holding: str = "") -> str:
    """The README's ``[[sources]]`` example of ``signature`` (the one ``holding`` that text)."""
    readme = readme_text()
    blocks = re.findall(r"```toml\n(.*?)```", readme, re.DOTALL)
    [toml] = [b for b in blocks if f'signature = "{signature}"' in b and holding in b]
    return toml


def paddle_signed(body: bytes, secret: str = PADDLE_SECRET, *, ts: int | None = None) -> dict[str, str]:
    """Paddle's scheme, written out here (not through the gateway's own signing code)."""
    stamp = str(int(time.time()) if ts is None else ts)
    mac = hmac.new(secret.encode(), stamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {"Paddle-Signature": f"ts={stamp};h1={mac}", "content-type": "application/json"}


async def test_a_platforms_signature_no_source_verifies_says_so(gw: RunningGateway) -> None:
    """A Stripe, Paddle or Shopify source left without its ``signature`` (at Standard Webhooks):
    the platform's deliveries were refused "no valid signature" (Shopify's "missing webhook-id,
    …"), and the operator checked a secret that was right."""
    body = encode({"id": "evt_u1", "type": "checkout.session.completed"})
    for headers, header, scheme in (
        (stripe_signed(body), "Stripe-Signature", "stripe"),
        (paddle_signed(body), "Paddle-Signature", "paddle"),
        (shopify_signed(body), "X-Shopify-Hmac-Sha256", "shopify"),
    ):
        status, answer = await post(gw, body, headers)
        assert (status, answer["error"]) == (
            401,
            f'signature: {header} is not verified here: no [[sources]] entry has signature = "{scheme}"',
        )
        # Passed on by a relay that signs as a sender here: that signature decides, as before.
        assert (await post(gw, body, {**headers, **signed(body)}))[1]["result"] == "bad"
    assert await rows(gw, "SELECT count(*) FROM receipts WHERE sender != 'billing'") == [(0,)]


async def test_paddle_posts_its_own_signed_notifications(
    start_gateway, upstream_server, tmp_path: Path
) -> None:
    """Paddle Billing signs ``ts:body`` in Paddle-Signature (ts=…;h1=<hex>, keyed by the whole
    pdl_ntfset_… key): until 2026-12-04 it was a 401, and a Paddle account needed a relay. The
    README's example is the config, as written."""
    toml = await asyncio.to_thread(readme_source, "paddle")
    env = {"PADDLE_WEBHOOK_SECRET": PADDLE_SECRET}
    gw = await start_gateway(await upstream_server(web.Application()), toml, env)
    occurred = datetime.now(UTC) - timedelta(seconds=30)
    event = {
        "event_id": "evt_01hv8x2acma2gz1we7d6hx5v1e",
        "event_type": "transaction.completed",
        "occurred_at": occurred.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "notification_id": "ntf_01hv8x2af1a6x3p8jqwd0bfcbs",
        "data": {
            "id": "txn_01hv8wptq8987qeep44cyrewp9",
            "origin": "web",
            "currency_code": "USD",
            "custom_data": {"user_id": "42"},
            "details": {"totals": {"subtotal": "2400", "tax": "240", "total": "2640"}},
        },
    }
    body = encode(event)
    status, answer = await post(gw, body, paddle_signed(body))
    assert (status, answer["result"], answer["key"]) == (202, "accepted", event["event_id"]), answer
    assert await rows(gw, "SELECT name, value, currency, order_id, rule FROM conversions") == [
        ("purchase", 26.4, "USD", "txn_01hv8wptq8987qeep44cyrewp9", "paddle")
    ]
    # Paddle retries the same notification under a new ts: one conversion.
    status, answer = await post(gw, body, paddle_signed(body, ts=int(time.time()) - 5))
    assert (status, answer["result"]) == (200, "duplicate")
    # A rolled key: Paddle signs with both, either h1 passes.
    renewal = encode(
        {
            **event,
            "event_id": "evt_2",
            "data": {**event["data"], "id": "txn_2", "origin": "subscription_recurring"},
        }
    )
    rolled = paddle_signed(renewal)
    old = paddle_signed(renewal, "pdl_ntfset_old_" + "o" * 32)["Paddle-Signature"].split(";")[1]
    rolled["Paddle-Signature"] = rolled["Paddle-Signature"].replace(";", f";{old};")
    status, answer = await post(gw, renewal, rolled)
    assert (status, answer["result"]) == (202, "accepted"), answer
    # Ignored and unmapped types.
    created = encode({**event, "event_id": "evt_3", "event_type": "transaction.created"})
    assert (await post(gw, created, paddle_signed(created)))[1]["result"] == "ignored"
    refund = encode({**event, "event_id": "evt_4", "event_type": "adjustment.created"})
    status, answer = await post(gw, refund, paddle_signed(refund))
    assert status == 400 and "'adjustment.created' is not mapped" in answer["errors"][0], answer
    # A wrong key, a stale ts, Stripe's layout, the key's secret part alone: 401.
    other = encode({**event, "event_id": "evt_5", "data": {**event["data"], "id": "txn_5"}})
    stripe_layout = {"Stripe-Signature": paddle_signed(other)["Paddle-Signature"].replace(";", ",")}
    for headers, why in (
        (paddle_signed(other, "pdl_ntfset_x_" + "x" * 32), "signature: no valid signature"),
        (paddle_signed(other, ts=int(time.time()) - 3600), "timestamp: outside the accepted window ("),
        # No source verifies Stripe's header here (it said "holds no t=… and v1=…").
        (
            stripe_layout,
            "signature: Stripe-Signature is not verified here: no [[sources]] entry has signature",
        ),
        (paddle_signed(other, "k" * 32), "signature: no valid signature"),
        ({"Paddle-Signature": "h1=" + "0" * 64}, "signature: Paddle-Signature holds no ts=…"),
        ({"Paddle-Signature": "ts=1"}, "signature: Paddle-Signature holds no h1=…"),
        ({"Paddle-Signature": "x=1"}, "signature: Paddle-Signature holds no ts=… and no h1=…"),
        # Two stamps: it said "holds no ts=… and h1=…", which it does.
        (
            {"Paddle-Signature": f"ts=1;ts=2;h1={'0' * 64}"},
            "signature: Paddle-Signature holds 2 different ts=… values; a sender signs one",
        ),
    ):
        status, answer = await post(gw, other, headers)
        assert status == 401 and answer["error"].startswith(why), (why, answer)
    assert await rows(gw, "SELECT order_id FROM conversions ORDER BY order_id") == [
        ("txn_01hv8wptq8987qeep44cyrewp9",),
        ("txn_2",),
    ]
    # send-test-event signs as Paddle does, in Paddle's layout.
    code, out, err = await send_test_event(gw, tmp_path / "gateway.toml", toml, env, "paddle")
    assert code == 0 and "HTTP 202" in out and '"event_type":"transaction.completed"' in out, (out, err)


CHARGEBEE_LOGIN = "chargebee:" + "p" * 32


def basic_login(login: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(login.encode()).decode(), **JSON_BODY}


JSON_BODY = {"content-type": "application/json"}


async def test_chargebee_logs_in_with_http_basic(start_gateway, upstream_server, tmp_path: Path) -> None:
    """Chargebee signs nothing: its webhooks carry the user name and password set on them, as
    HTTP Basic. Until 2026-12-04 that was a 401 (no signature), and a Chargebee site needed a
    relay. The README's example is the config, as written, beside a Standard Webhooks sender."""
    toml = await asyncio.to_thread(readme_source, "basic")
    env = {"CHARGEBEE_WEBHOOK_LOGIN": CHARGEBEE_LOGIN, "BILLING_SECRET": BILLING}
    standard = '\n[[sources]]\nname = "billing"\nsecrets = ["env:BILLING_SECRET"]\n'
    gw = await start_gateway(await upstream_server(web.Application()), toml + standard, env)
    event = {
        "id": "ev_AzZTPvUE5Ry1J2Mu",
        "occurred_at": int(time.time()) - 60,
        "object": "event",
        "api_version": "v2",
        "event_type": "payment_succeeded",
        "content": {
            "transaction": {"id": "txn_1", "amount": 4900, "currency_code": "EUR", "status": "success"},
            "invoice": {"id": "inv_1", "first_invoice": True, "recurring": True},
            "customer": {"id": "user-42"},
        },
    }
    body = encode(event)
    status, answer = await post(gw, body, basic_login(CHARGEBEE_LOGIN))
    assert (status, answer["result"], answer["key"]) == (202, "accepted", event["id"]), answer
    assert await rows(gw, "SELECT name, value, currency, order_id, rule FROM conversions") == [
        ("purchase", 49.0, "EUR", "txn_1", "chargebee")
    ]
    # A renewal's payment: the same type, its invoice not the first. Until 2026-12-04 each
    # renewal was recorded as another conversion; the README's `when` leaves it out.
    renewal = {
        **event,
        "id": "ev_renewal",
        "content": {
            **event["content"],
            "transaction": {**event["content"]["transaction"], "id": "txn_renewal"},
            "invoice": {"id": "inv_2", "first_invoice": False, "recurring": True},
        },
    }
    status, answer = await post(gw, encode(renewal), basic_login(CHARGEBEE_LOGIN))
    assert (status, answer["result"], answer["reason"]) == (
        202,
        "ignored",
        "type 'payment_succeeded' whose /content/invoice/first_invoice ('false') is not 'true'"
        " (sources.when): not recorded",
    ), answer
    readme = " ".join((await asyncio.to_thread(readme_text)).split())
    assert f'(`"reason": "{answer["reason"]}"`)' in readme  # as the README shows it
    assert await rows(gw, "SELECT count(*) FROM conversions") == [(1,)]
    status, answer = await post(gw, body, basic_login(CHARGEBEE_LOGIN))  # Chargebee's retry
    assert (status, answer["result"]) == (200, "duplicate")
    other = encode({**event, "id": "ev_2", "content": {**event["content"], "transaction": {"id": "txn_2"}}})
    twice = CIMultiDict(basic_login(CHARGEBEE_LOGIN))
    twice.add("Authorization", basic_login(CHARGEBEE_LOGIN)["Authorization"])
    for headers, why in (
        (
            basic_login("chargebee:" + "x" * 32),
            "signature: missing or wrong user name and password (HTTP Basic)",
        ),
        (
            basic_login("someone:" + "p" * 32),
            "signature: missing or wrong user name and password (HTTP Basic)",
        ),
        (twice, "signature: Authorization given more than once"),
        (JSON_BODY, "signature: missing webhook-id, webhook-timestamp or webhook-signature"),
    ):
        async with gw.session.post(gw.url + "/_gw/events", data=other, headers=headers) as resp:
            assert (resp.status, (await resp.json())["error"]) == (401, why), why
    # A Standard Webhooks delivery that also carries a login is judged by its signature.
    signed_event = encode(conversion())
    status, answer = await post(gw, signed_event, {**signed(signed_event), **basic_login(CHARGEBEE_LOGIN)})
    assert (status, answer["result"]) == (202, "accepted"), answer
    assert await rows(gw, "SELECT rule FROM conversions ORDER BY rule") == [("billing",), ("chargebee",)]
    # A relay that logs in passes a platform's Paddle-Signature on: the login is what counts.
    relayed = encode({**event, "id": "ev_3", "content": {**event["content"], "transaction": {"id": "txn_3"}}})
    passed_on = {**basic_login(CHARGEBEE_LOGIN), **paddle_signed(relayed)}
    assert (await post(gw, relayed, passed_on))[1]["result"] == "accepted"
    # send-test-event logs in as Chargebee does.
    code, out, err = await send_test_event(gw, tmp_path / "gateway.toml", toml, env, "chargebee")
    assert code == 0 and "HTTP 202" in out and '"event_type":"payment_succeeded"' in out, (out, err)
    assert '"invoice":{"first_invoice":true}' in out and '"result":"accepted"' in out, out


async def test_a_login_that_is_no_senders_leaves_a_paddle_notification_to_its_signature(
    start_gateway, upstream_server
) -> None:
    """With a "basic" sender (Chargebee) configured, an ``Authorization`` header was read before
    Paddle-Signature and decided alone: a Paddle notification carrying one that is no sender's
    login (a proxy's token, the staging site's own HTTP Basic in the URL) was a 401, though it
    was accepted before Chargebee was added. Such a login now leaves it to Paddle's signature."""
    chargebee, paddle = [await asyncio.to_thread(readme_source, kind) for kind in ("basic", "paddle")]
    env = {"CHARGEBEE_WEBHOOK_LOGIN": CHARGEBEE_LOGIN, "PADDLE_WEBHOOK_SECRET": PADDLE_SECRET}
    gw = await start_gateway(await upstream_server(web.Application()), chargebee + paddle, env)

    def notification(n: int) -> bytes:
        return encode(
            {
                "event_id": f"evt_{n}",
                "event_type": "transaction.completed",
                "occurred_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "data": {
                    "id": f"txn_{n}",
                    "currency_code": "USD",
                    "custom_data": {"user_id": "42"},
                    "details": {"totals": {"total": "2640"}},
                },
            }
        )

    site_login = basic_login("staging:" + "s" * 24)["Authorization"]
    for n, login in enumerate(("Bearer proxy-token", site_login, "Basic", "Basic \u00ff"), 1):
        body = notification(n)
        status, answer = await post(gw, body, {**paddle_signed(body), "Authorization": login})
        assert (status, answer.get("result")) == (202, "accepted"), (login, answer)
    twice = CIMultiDict(paddle_signed(body := notification(9)))
    twice.add("Authorization", site_login)
    twice.add("Authorization", "Bearer proxy-token")
    assert (await post(gw, body, twice))[1]["result"] == "accepted"
    # A wrong Paddle signature beside such a login is refused as Paddle's.
    body = notification(10)
    wrong = {**paddle_signed(body, "pdl_ntfset_x_" + "x" * 32), "Authorization": site_login}
    assert await post(gw, body, wrong) == (
        401,
        {"ok": False, "status": 401, "error": "signature: no valid signature"},
    )
    # A login that is a sender's still wins (a relay that logs in passes Paddle's header on), and
    # a wrong login without Paddle's header is refused as a login.
    first = {"customer": {"id": "7"}, "invoice": {"first_invoice": True}}
    body = encode({"id": "ev_1", "event_type": "payment_succeeded", "content": first})
    assert (await post(gw, body, {**basic_login(CHARGEBEE_LOGIN), **paddle_signed(body)}))[0] == 202
    status, answer = await post(gw, body, basic_login("chargebee:" + "x" * 32))
    assert (status, answer["error"]) == (
        401,
        "signature: missing or wrong user name and password (HTTP Basic)",
    )
    assert await rows(gw, "SELECT rule, count(*) FROM conversions GROUP BY rule ORDER BY rule") == [
        ("chargebee", 1),
        ("paddle", 5),
    ]


CALENDLY_KEY = "c" * 43  # the signing_key given when the subscription was made, as given


def calendly_signed(body: bytes, key: str = CALENDLY_KEY, *, ts: int | None = None) -> dict[str, str]:
    """Calendly's scheme (Stripe's layout in its own header), written out here."""
    stamp = str(int(time.time()) if ts is None else ts)
    mac = hmac.new(key.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"Calendly-Webhook-Signature": f"t={stamp},v1={mac}", **JSON_BODY}


async def test_calendly_signs_stripes_layout_in_its_own_header(
    start_gateway, upstream_server, tmp_path: Path
) -> None:
    """Calendly (``Calendly-Webhook-Signature: t=…,v1=…``) copies Stripe's scheme under its own
    header name: a 401 until 2026-12-04. ``hmac.stamped`` reads it; the README's example is
    the config, as written: a booking is a conversion with the touchpoint of its UTM tracking."""
    toml = await asyncio.to_thread(readme_source, "hmac", "Calendly")
    env = {"CALENDLY_SIGNING_KEY": CALENDLY_KEY}
    gw = await start_gateway(await upstream_server(web.Application()), toml, env)
    booking = {
        "event": "invitee.created",
        "created_at": "2026-12-04T10:00:01.000000Z",
        "created_by": "https://api.calendly.com/users/AAAA",
        "payload": {
            "uri": "https://api.calendly.com/scheduled_events/GBGB/invitees/AAAA",
            "email": "ann@example.com",
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "tracking": {"utm_source": "newsletter", "utm_medium": "email", "utm_campaign": None},
        },
    }
    body = encode(booking)
    status, answer = await post(gw, body, calendly_signed(body))
    assert (status, answer["result"]) == (202, "accepted"), answer
    assert await rows(gw, "SELECT name, rule FROM conversions") == [("demo_booked", "calendly")]
    assert await rows(gw, "SELECT source, medium, campaign FROM touchpoints") == [
        ("newsletter", "email", None)
    ]
    status, answer = await post(gw, body, calendly_signed(body, ts=int(time.time()) - 2))  # a retry
    assert (status, answer["result"]) == (200, "duplicate")
    other = encode({**booking, "payload": {**booking["payload"], "uri": "https://api.calendly.com/x/2"}})
    bare = hmac.new(CALENDLY_KEY.encode(), other, hashlib.sha256).hexdigest()  # the body alone
    for headers, why in (
        (calendly_signed(other, ts=int(time.time()) - 3600), "timestamp: outside the accepted window ("),
        (calendly_signed(other, "x" * 43), "signature: no valid signature"),
        ({"Calendly-Webhook-Signature": bare, **JSON_BODY}, "signature: no valid signature"),
        (
            {"Calendly-Webhook-Signature": f"t={int(time.time())}", **JSON_BODY},
            "signature: no valid signature",
        ),
    ):
        status, answer = await post(gw, other, headers)
        assert status == 401 and answer["error"].startswith(why), (why, answer)
    # A time that is not UTF-8 text (the parser keeps such bytes as surrogates) was a 500.
    for stamp in (b"\xff", b"12\xed\xa0\x80"):
        sent = [
            (b"Calendly-Webhook-Signature", b"t=" + stamp + b",v1=" + b"0" * 64),
            (b"Content-Type", b"application/json"),
        ]
        status, answer = await raw_post(gw, sent, other)
        assert (status, answer["error"]) == (401, "signature: no valid signature"), (stamp, answer)
    assert len(await rows(gw, "SELECT * FROM conversions")) == 1
    code, out, err = await send_test_event(gw, tmp_path / "gateway.toml", toml, env, "calendly")
    assert code == 0 and "HTTP 202" in out and '"event":"invitee.created"' in out, (out, err)


RELAYED = """
[[sources]]
name = "relay"
signature = "hmac"
secrets = ["env:RELAY_SECRET"]
hmac = {header = "X-Hookdeck-Signature", encoding = "base64"}
"""


@pytest.mark.parametrize("platform", ["Paddle-Signature", "Stripe-Signature"])
async def test_a_relays_signature_is_read_before_the_platform_signature_it_passes_on(
    start_gateway, upstream_server, platform: str
) -> None:
    """Until 2026-12-04 a Paddle account needed a relay that re-signed its notifications
    (Hookdeck, Svix, the legacy hex), and a relay passes Paddle's own header on. Paddle-Signature
    was then read first, before the relay's signature: every relayed delivery was a 401 (no
    source holds Paddle's key), lost once the relay gave up. So was Stripe's, passed on by a
    relay in front of a Stripe account. A platform's header is read when no other scheme's is
    there."""
    env = {**SOURCES_ENV, "RELAY_SECRET": "r" * 32}
    gw = await start_gateway(await upstream_server(web.Application()), SOURCES + RELAYED, env)
    bodies = [encode(conversion()) for _ in range(3)]
    passed_on = [
        paddle_signed(body, ts=int(time.time()) - 60)["Paddle-Signature"]
        .replace(";", ",")
        .replace("ts=", "t=")
        for body in bodies
    ]  # either platform's layout: the relay's is what counts
    svix = {k.replace("webhook-", "svix-"): v for k, v in signed(bodies[0]).items()}
    legacy = {"x-webhook-signature": legacy_signature(LEGACY.encode(), bodies[1])}
    relay = {"X-Hookdeck-Signature": base64.b64encode(_mac("r" * 32, bodies[2]).digest()).decode()}
    for body, headers, sender, header in zip(
        bodies, (svix, legacy, relay), ("billing", "legacy", "relay"), passed_on, strict=True
    ):
        status, answer = await post(gw, body, {**headers, platform: header, **JSON})
        assert (status, answer.get("result")) == (202, "accepted"), (sender, answer)
    assert sorted(await rows(gw, "SELECT rule FROM conversions")) == [("billing",), ("legacy",), ("relay",)]
    # Paddle's header alone, and no source holds Paddle's key: a 401, as before, saying so.
    body = encode(conversion())
    status, answer = await post(gw, body, paddle_signed(body))
    assert (status, answer["error"]) == (
        401,
        'signature: Paddle-Signature is not verified here: no [[sources]] entry has signature = "paddle"',
    ), answer


async def test_a_stripe_delivery_beside_a_signature_no_sender_holds_is_read_as_stripes(
    start_gateway, upstream_server
) -> None:
    """Since Stripe-Signature was read after every other scheme's header (2026-12-04), a Stripe
    delivery that also carried one no sender verifies was a 401, though its own signature was
    good and it was accepted before: a Svix-signed relay not configured as a sender, one keyed
    otherwise, an ``Authorization`` a proxy adds where a ``signature = "hmac"`` sender signs.
    Stripe's signature, passed on intact, now decides; a wrong one is refused as the relay's."""
    signs_in_authorization = RELAYED.replace("X-Hookdeck-Signature", "Authorization")
    env = {**SOURCES_ENV, "STRIPE_SECRET": STRIPE_SECRET, "RELAY_SECRET": "r" * 32}
    gw = await start_gateway(
        await upstream_server(web.Application()), SOURCES + STRIPE + signs_in_authorization, env
    )

    def event(n: int) -> bytes:
        return encode(
            {
                "id": f"evt_relayed_{n}",
                "type": "checkout.session.completed",
                "created": int(time.time()),
                "data": {
                    "object": {
                        "id": f"cs_{n}",
                        "amount_total": 100,
                        "currency": "eur",
                        "client_reference_id": "42",
                    }
                },
            }
        )

    unknown_relay = {k.replace("webhook-", "svix-"): v for k, v in signed(event(1), "u" * 32).items()}
    beside = (
        unknown_relay,
        {"x-webhook-signature": "0" * 64},  # the legacy hex, keyed otherwise
        {"Authorization": "Bearer proxy-token"},
    )
    for n, headers in enumerate(beside, 1):
        body = event(n)
        status, answer = await post(gw, body, {**headers, **stripe_signed(body)})
        assert (status, answer.get("result")) == (202, "accepted"), (headers, answer)
    assert len(await rows(gw, "SELECT * FROM conversions WHERE rule = 'stripe'")) == 3
    # A wrong Stripe signature beside it: refused, as the relay's.
    body = event(9)
    wrong = stripe_signed(body, "whsec_" + "x" * 32)
    status, answer = await post(gw, body, {"Authorization": "Bearer proxy-token", **wrong})
    assert (status, answer["error"]) == (401, "signature: no valid signature"), answer


SHOPIFY_SECRET = "f" * 32  # the app's client secret, the HMAC key as given
SHOPIFY = """
[[sources]]
name = "shopify"
signature = "shopify"
secrets = ["env:SHOPIFY_SECRET"]
types = {"orders/paid" = "conversion"}
ignore_types = ["orders/create"]
defaults = {name = "purchase"}

[sources.fields]
event_id = "/id"
order_id = "/id"
user_id = "/customer/id"
value = "/total_price"
currency = "/currency"
timestamp = "/created_at"
"""


def shopify_signed(
    body: bytes, topic: str = "orders/paid", event: str | None = None, secret: str = SHOPIFY_SECRET
):
    """Shopify's scheme, written out here (not through the gateway's own signing code)."""
    mac = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    headers = {"X-Shopify-Hmac-Sha256": mac, "X-Shopify-Topic": topic, "content-type": "application/json"}
    return headers | ({"X-Shopify-Event-Id": event} if event is not None else {})


async def test_a_missing_type_names_the_header_it_is_read_from(start_gateway, upstream_server) -> None:
    """A Shopify order without its X-Shopify-Topic (a relay that dropped it) was refused as
    "type (/type): missing", sending the operator looking for a type in the order; one whose
    header is there but empty was told there was no header."""
    gw = await start_gateway(
        await upstream_server(web.Application()), SHOPIFY, {"SHOPIFY_SECRET": SHOPIFY_SECRET}
    )
    body = encode({"id": 2001, "customer": {"id": 7}, "total_price": "9.90", "currency": "EUR"})
    headers = shopify_signed(body, event="ev-t1")
    del headers["X-Shopify-Topic"]
    status, answer = await post(gw, body, headers)
    assert (status, answer["errors"]) == (400, ["type (/type): missing, and no X-Shopify-Topic header"])
    # There, but empty (a relay that blanked it): said so, not "no … header".
    for blank in ("", "  "):
        headers = shopify_signed(body, topic=blank, event=f"ev-t2{len(blank)}")
        status, answer = await post(gw, body, headers)
        assert (status, answer["errors"]) == (
            400,
            ["type (/type): missing, and the X-Shopify-Topic header is empty"],
        ), blank


async def test_shopify_posts_its_own_signed_order_webhooks(
    start_gateway, upstream_server, tmp_path: Path
) -> None:
    """Shopify signs the body alone (base64 HMAC-SHA256 in X-Shopify-Hmac-Sha256), puts what
    happened in X-Shopify-Topic, not in the body, and names each event in X-Shopify-Event-Id,
    the same on its retries: a Shopify store needed a relay that re-signed its webhooks."""
    gw = await start_gateway(
        await upstream_server(web.Application()), SHOPIFY, {"SHOPIFY_SECRET": SHOPIFY_SECRET}
    )
    order = {
        "id": 820982911946154508,
        "admin_graphql_api_id": "gid://shopify/Order/820982911946154508",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S-05:00", time.gmtime(time.time() - 5 * 3600)),
        "currency": "EUR",
        "total_price": "49.90",
        "customer": {"id": 115310627314723954, "email": "jon@example.com"},
    }
    body = encode(order)
    status, answer = await post(gw, body, shopify_signed(body, event="ev-1"))
    assert (status, answer["result"], answer["key"]) == (202, "accepted", "820982911946154508"), answer
    assert await rows(gw, "SELECT name, value, currency, order_id FROM conversions") == [
        ("purchase", 49.9, "EUR", "820982911946154508")
    ]
    # A retry (the same event ID and body) and the same order under another topic.
    status, answer = await post(gw, body, shopify_signed(body, event="ev-1"))
    assert (status, answer["result"]) == (200, "duplicate")
    changed = encode({**order, "note": "gift"})  # the same order again: a duplicate
    status, answer = await post(gw, changed, shopify_signed(changed, event="ev-1"))
    assert (status, answer["result"]) == (200, "duplicate")
    status, answer = await post(gw, body, shopify_signed(body, "orders/create", event="ev-2"))
    assert (status, answer["result"]) == (202, "ignored"), answer
    status, answer = await post(gw, body, shopify_signed(body, "products/update", event="ev-3"))
    assert status == 400 and "'products/update' is not mapped" in answer["errors"][0], answer
    # Without an event ID, a retry is known by its body.
    other = encode({**order, "id": 1001})
    assert (await post(gw, other, shopify_signed(other)))[0] == 202
    status, answer = await post(gw, other, shopify_signed(other))
    assert (status, answer["result"]) == (200, "duplicate")
    assert len(await rows(gw, "SELECT * FROM conversions")) == 2
    # A wrong secret, a hex signature, the header twice, an event ID that is not one: 401.
    third = encode({**order, "id": 1002})
    good = shopify_signed(third, event="ev-4")
    hexed = {
        **good,
        "X-Shopify-Hmac-Sha256": hmac.new(SHOPIFY_SECRET.encode(), third, hashlib.sha256).hexdigest(),
    }
    twice = CIMultiDict(good)  # a stale signature beside the valid one: which one is it?
    twice.add(
        "X-Shopify-Hmac-Sha256", shopify_signed(third, event="ev-4", secret="x" * 32)["X-Shopify-Hmac-Sha256"]
    )
    two_events = CIMultiDict(good)
    two_events.add("X-Shopify-Event-Id", "ev-5")
    for headers, why in (
        (shopify_signed(third, event="ev-4", secret="x" * 32), "signature: no valid signature"),
        (hexed, "signature: no valid signature"),
        (twice, "signature: X-Shopify-Hmac-Sha256 given more than once"),
        (two_events, "signature: X-Shopify-Event-Id given more than once"),
        ({**good, "X-Shopify-Event-Id": "a\tb"}, "signature: X-Shopify-Event-Id is not a delivery ID"),
    ):
        async with gw.session.post(gw.url + "/_gw/events", data=third, headers=headers) as resp:
            assert resp.status == 401 and (await resp.json())["error"] == why, why
    assert len(await rows(gw, "SELECT * FROM conversions")) == 2
    # One signature repeated on two lines (a proxy that copied it) is one signature: until
    # 2026-12-07 it was refused as "given more than once".
    copied = CIMultiDict(good)
    copied.add("X-Shopify-Hmac-Sha256", good["X-Shopify-Hmac-Sha256"])
    assert (await post(gw, third, copied))[:1] == (202,)
    assert len(await rows(gw, "SELECT * FROM conversions")) == 3
    # send-test-event signs as Shopify does, the type in the topic header.
    config = tmp_path / "gateway.toml"
    code, out, err = await send_test_event(gw, config, SHOPIFY, {"SHOPIFY_SECRET": SHOPIFY_SECRET})
    assert code == 0 and "HTTP 202" in out and '"total_price"' in out and '"type"' not in out, (out, err)


async def test_a_platform_senders_field_read_from_its_default_pointer_is_logged_once(
    start_gateway, upstream_server, caplog
) -> None:
    """A field not in ``fields`` is read from our name at the top of the event: fine in our own
    layout, a trap in a platform's (a Shopify order's ``name`` is its number, ``#1001``: every
    conversion was named after its order, silently). A platform sender's is now logged once."""
    gw = await start_gateway(
        await upstream_server(web.Application()),
        SHOPIFY + '\n[[sources]]\nname = "billing"\nsecrets = ["env:BILLING_SECRET"]\n',
        {"SHOPIFY_SECRET": SHOPIFY_SECRET, "BILLING_SECRET": BILLING},
    )
    caplog.set_level(logging.WARNING, logger="gateway.inbound")
    order = {"id": 1, "name": "#1001", "currency": "EUR", "total_price": "5.00", "customer": {"id": 7}}
    for n in (1, 2):
        body = encode({**order, "id": n, "name": f"#100{n}"})
        assert (await post(gw, body, shopify_signed(body)))[0] == 202
    standard = encode(conversion(name="trial"))  # our own layout: /name is ours
    assert (await post(gw, standard, signed(standard)))[0] == 202
    assert await rows(gw, "SELECT name FROM conversions ORDER BY name") == [
        ("#1001",),
        ("#1002",),
        ("trial",),
    ]
    said = [r.getMessage() for r in caplog.records if "default pointer" in r.getMessage()]
    assert said == [
        "source shopify: fields.name (/name) was read from its default pointer, not one in its fields"
        ' (logged once): if the platform\'s key of that name is not our name, unmap it (fields.name = "");'
        ' if it is, map it (fields.name = "/name")'
    ], said
    # Mapped to where it was read from (a key that is ours, as a WooCommerce order's currency is),
    # nothing more is said.
    caplog.clear()
    toml = SHOPIFY + 'name = "/name"\n'
    mapped = await start_gateway(
        await upstream_server(web.Application()), toml, {"SHOPIFY_SECRET": SHOPIFY_SECRET}
    )
    body = encode({**order, "id": 3})
    assert (await post(mapped, body, shopify_signed(body)))[0] == 202
    assert not [r for r in caplog.records if "default pointer" in r.getMessage()]


BODY_HMAC = """
[[sources]]
name = "github"
signature = "hmac"
secrets = ["env:GITHUB_SECRET"]
types = {sponsorship = "conversion"}
ignore_types = ["ping"]

[sources.hmac]
header = "X-Hub-Signature-256"
prefix = "sha256="
delivery_header = "X-GitHub-Delivery"
type_header = "X-GitHub-Event"

[sources.fields]
event_id = "/sponsorship/node_id"
user_id = "/sender/login"
value = "/sponsorship/tier/monthly_price_in_dollars"
currency = "/currency"

[[sources]]
name = "woo"
signature = "hmac"
secrets = ["env:WOO_SECRET"]
types = {"order.created" = "conversion"}

[sources.hmac]
header = "X-WC-Webhook-Signature"
encoding = "base64"
delivery_header = "X-WC-Webhook-Delivery-ID"
type_header = "X-WC-Webhook-Topic"

[sources.fields]
event_id = "/id"
order_id = "/id"
user_id = "/customer_id"
value = "/total"
currency = "/currency"
"""
BODY_HMAC_ENV = {"GITHUB_SECRET": "g" * 32, "WOO_SECRET": "w" * 32}
JSON = {"content-type": "application/json"}


def _mac(secret: str, body: bytes) -> hmac.HMAC:
    return hmac.new(secret.encode(), body, hashlib.sha256)


def _github(body: bytes, event: str, delivery: str) -> dict[str, str]:
    mac = "sha256=" + _mac("g" * 32, body).hexdigest().upper()  # hex in any case
    return {"X-Hub-Signature-256": mac, "X-GitHub-Event": event, "X-GitHub-Delivery": delivery, **JSON}


def _woo(body: bytes, secret: str = "w" * 32) -> dict[str, str]:
    mac = base64.b64encode(_mac(secret, body).digest()).decode()
    return {
        "X-WC-Webhook-Signature": mac,
        "X-WC-Webhook-Topic": "order.created",
        "X-WC-Webhook-Delivery-ID": "77",
        **JSON,
    }


async def test_senders_that_sign_the_body_in_their_own_header(
    start_gateway, upstream_server, tmp_path: Path
) -> None:
    """GitHub (``X-Hub-Signature-256: sha256=<hex>``), WooCommerce (``X-WC-Webhook-Signature:
    <base64>``) and the like sign the body alone, each in its own header, and name the event's
    type and the delivery in others: each was a 401 and needed a relay that re-signed."""
    gw = await start_gateway(await upstream_server(web.Application()), BODY_HMAC, BODY_HMAC_ENV)
    sponsor = {
        "sponsorship": {"node_id": "S_1", "tier": {"monthly_price_in_dollars": 5}},
        "sender": {"login": "ann"},
        "currency": "USD",
    }
    body = encode(sponsor)
    status, answer = await post(gw, body, _github(body, "sponsorship", "d-1"))
    assert (status, answer["result"], answer["key"]) == (202, "accepted", "S_1"), answer
    again = await post(gw, body, _github(body, "sponsorship", "d-1"))  # the same delivery again
    assert again[1]["result"] == "duplicate"
    ping = encode({"zen": "Keep it logically awesome."})
    assert (await post(gw, ping, _github(ping, "ping", "d-2")))[1]["result"] == "ignored"
    order = {"id": 727, "customer_id": 12, "total": "29.35", "currency": "EUR"}
    body = encode(order)
    status, answer = await post(gw, body, _woo(body))
    assert (status, answer["result"]) == (202, "accepted"), answer
    assert await rows(gw, "SELECT rule, value, currency, order_id FROM conversions ORDER BY rule") == [
        ("github", 5.0, "USD", None),
        ("woo", 29.35, "EUR", "727"),
    ]
    # Another sender's secret, the other encoding, no prefix, the header twice: 401.
    other = encode({**order, "id": 728})
    good = _woo(other)
    twice = CIMultiDict(good)  # another sender's signature beside the valid one
    twice.add("X-WC-Webhook-Signature", _woo(other, "g" * 32)["X-WC-Webhook-Signature"])
    two_deliveries = CIMultiDict(good)
    two_deliveries.add("X-WC-Webhook-Delivery-ID", "78")
    hexed = {**good, "X-WC-Webhook-Signature": _mac("w" * 32, other).hexdigest()}
    bare = {**_github(other, "sponsorship", "d-3"), "X-Hub-Signature-256": _mac("g" * 32, other).hexdigest()}
    for headers, why in (
        (_woo(other, "g" * 32), "no valid signature"),
        (hexed, "no valid signature"),
        (bare, "no valid signature"),
        (twice, "X-WC-Webhook-Signature given more than once"),
        (two_deliveries, "X-WC-Webhook-Delivery-ID given more than once"),
        ({**good, "X-WC-Webhook-Delivery-ID": "7" * 129}, "X-WC-Webhook-Delivery-ID is not a delivery ID"),
    ):
        async with gw.session.post(gw.url + "/_gw/events", data=other, headers=headers) as resp:
            got = await resp.json()
            assert resp.status == 401 and got["error"] == "signature: " + why, (why, got)
    assert len(await rows(gw, "SELECT * FROM conversions")) == 2
    two_topics = CIMultiDict(good)
    two_topics.add("X-WC-Webhook-Topic", "order.updated")
    async with gw.session.post(gw.url + "/_gw/events", data=other, headers=two_topics) as resp:
        got = await resp.json()
        assert (resp.status, got["error"]) == (
            400,
            "X-WC-Webhook-Topic: given more than once, with different values",
        )
    # send-test-event signs as the sender does: its header, prefix, delivery and type headers.
    for sender in ("github", "woo"):
        code, out, err = await send_test_event(
            gw, tmp_path / "gateway.toml", BODY_HMAC, BODY_HMAC_ENV, sender
        )
        assert code == 0 and "HTTP 202" in out and '"type"' not in out, (sender, out, err)


async def raw_post(gw: RunningGateway, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, Any]:
    """A POST to /_gw/events with header bytes as given (aiohttp's client sends only text)."""
    host, port = gw.url.removeprefix("http://").rsplit(":", 1)
    head = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    request = (
        b"POST /_gw/events HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        + f"Content-Length: {len(body)}\r\n".encode()
        + head
        + b"\r\n"
        + body
    )
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), msgspec.json.decode(rest.partition(b"\r\n\r\n")[2])


async def test_a_type_header_that_is_not_utf8_is_a_400(
    start_gateway, upstream_server, caplog: pytest.LogCaptureFixture
) -> None:
    """A signed delivery whose type header (X-Shopify-Topic, a ``signature = "hmac"`` sender's
    ``type_header``) held bytes that are not UTF-8 was a 500 and a traceback: the type, kept
    with the bad event it made, could not be encoded. The header is not signed: anyone who
    holds one signed body could send it so."""
    env = {"SHOPIFY_SECRET": SHOPIFY_SECRET, **BODY_HMAC_ENV}
    gw = await start_gateway(await upstream_server(web.Application()), SHOPIFY + BODY_HMAC, env)
    shopify = encode({"id": 31, "customer": {"id": 12}, "total_price": "29.35", "currency": "EUR"})
    woo = encode({"id": 32, "customer_id": 12, "total": "29.35", "currency": "EUR"})
    for sender, body, headers, topic, raw in (
        ("shopify", shopify, shopify_signed(shopify, event="ev-31"), "X-Shopify-Topic", b"orders/\xffpaid"),
        ("woo", woo, _woo(woo), "X-WC-Webhook-Topic", b"order.\xff"),
    ):
        sent = [(k.encode(), v.encode()) for k, v in headers.items() if k != topic]
        status, answer = await raw_post(gw, [*sent, (topic.encode(), raw)], body)
        assert (status, answer["error"]) == (400, f"{topic}: not UTF-8 text"), answer
        receipts = f"SELECT count(*) FROM receipts WHERE sender = '{sender}'"
        assert await rows(gw, receipts) == [(0,)]
        # The same delivery with its type readable is taken: the refused one left no receipt.
        status, answer = await post(gw, body, headers)
        assert (status, answer["result"]) == (202, "accepted"), answer
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_type_header_refused_is_answered_as_every_refused_event_is(
    start_gateway, upstream_server
) -> None:
    """A type header given twice with different values, or not UTF-8, refuses the delivery's
    event: it was answered with ``error`` alone, where the README's Answers give such a 400
    ``result`` and ``errors``, so a sender's code reading them found neither."""
    env = {"SHOPIFY_SECRET": SHOPIFY_SECRET, **BODY_HMAC_ENV}
    gw = await start_gateway(await upstream_server(web.Application()), SHOPIFY + BODY_HMAC, env)
    body = encode({"id": 41, "customer": {"id": 12}, "total_price": "29.35", "currency": "EUR"})
    headers = shopify_signed(body, event="ev-41")
    two_topics = CIMultiDict(headers)
    two_topics.add("X-Shopify-Topic", "orders/create")
    async with gw.session.post(gw.url + "/_gw/events", data=body, headers=two_topics) as resp:
        twice = "X-Shopify-Topic: given more than once, with different values"
        assert (resp.status, await resp.json()) == (400, refusal(twice))
    sent = [(k.encode(), v.encode()) for k, v in headers.items() if k != "X-Shopify-Topic"]
    status, answer = await raw_post(gw, [*sent, (b"X-Shopify-Topic", b"orders/\xffpaid")], body)
    assert (status, answer) == (400, refusal("X-Shopify-Topic: not UTF-8 text")), answer
    assert await rows(gw, "SELECT (SELECT count(*) FROM receipts) + (SELECT count(*) FROM bad_events)") == [
        (0,)
    ]


HMAC_REQUIRED = 'sources[4].hmac: required under signature = "hmac", e.g. hmac = {header = "X-Signature"}'
OTHER_SCHEME = (
    "sources[4].hmac.header: 'Stripe-Signature' is another scheme's (Standard Webhooks, Stripe, Paddle,"
    " Shopify, legacy_hex): use that signature instead"
)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ('signature = "hmac"', HMAC_REQUIRED),
        ('hmac = {header = "X-Sig"}',
         "sources[4].hmac: applies under signature = \"hmac\" only (signature is 'standard')"),
        ('signature = "hmac"\nhmac = {header = "X Sig"}',
         "sources[4].hmac.header: must be an HTTP header name (at most 64 characters), got 'X Sig'"),
        ('signature = "hmac"\nhmac = {header = "Stripe-Signature"}', OTHER_SCHEME),
        ('signature = "hmac"\nhmac = {header = "X-Sig", type_header = "a:b"}',
         "sources[4].hmac.type_header: must be an HTTP header name (at most 64 characters), got 'a:b'"),
        ('signature = "hmac"\nhmac = {header = "svix-id"}',
         "sources[4].hmac.header: 'svix-id' is another scheme's (Standard Webhooks, Stripe, Paddle,"
         " Shopify, legacy_hex): use that signature instead"),
        ('signature = "hmac"\nhmac = {header = "paddle-signature"}',
         "sources[4].hmac.header: 'paddle-signature' is another scheme's (Standard Webhooks, Stripe, Paddle,"
         " Shopify, legacy_hex): use that signature instead"),
        ('signature = "hmac"\nhmac = {header = "X-Sig", prefix = " sha256="}',
         "sources[4].hmac.prefix: must be printable text not starting with a space, got ' sha256='"),
        ('signature = "hmac"\nhmac = {header = "X-Sig", stamped = true, encoding = "base64"}',
         'sources[4].hmac.encoding: under stamped = true the signature is hex (t=…,v1=<hex>), got "base64"'),
        ('signature = "hmac"\nhmac = {header = "X-Sig", stamped = true, prefix = "sha256="}',
         "sources[4].hmac.prefix: not taken under stamped = true (the header is t=…,v1=…), got 'sha256='"),
        ('signature = "hmac"\nhmac = {header = "' + "X" * 65 + '"}',
         f"sources[4].hmac.header: must be an HTTP header name (at most 64 characters), got {'X' * 65!r}"),
    ],
)  # fmt: skip
def test_a_body_hmac_senders_config_is_checked(change: str, problem: str) -> None:
    # A secret of its own: legacy's, under Standard Webhooks too, could not tell them apart.
    toml = SOURCES + f'\n[[sources]]\nname = "other"\nsecrets = ["env:OTHER_SECRET"]\n{change}\n'
    with pytest.raises(ConfigError) as err:
        load_settings(None, text=toml, environ={**ENV, **SOURCES_ENV, "OTHER_SECRET": "x" * 32})
    assert err.value.problems == [problem]


def test_a_body_hmac_sender_cannot_read_the_header_a_basic_sender_logs_in_with() -> None:
    """An hmac sender whose signature is in ``Authorization`` took every delivery carrying one:
    a "basic" sender's login was then checked as that sender's HMAC, and always refused."""
    login = '\n[[sources]]\nname = "chargebee"\nsignature = "basic"\nsecrets = ["env:LEGACY_SECRET"]\n'
    hmac_sender = (
        '\n[[sources]]\nname = "other"\nsecrets = ["env:BILLING_SECRET"]\nsignature = "hmac"\n'
        'hmac = {header = "authorization", prefix = "HMAC "}\n'
    )
    load_settings(None, text=SOURCES + hmac_sender, environ={**ENV, **SOURCES_ENV})  # alone, fine
    with pytest.raises(ConfigError) as err:
        load_settings(None, text=SOURCES + hmac_sender + login, environ={**ENV, **SOURCES_ENV})
    assert err.value.problems == [
        "sources[4].hmac.header: 'authorization' is where a signature = \"basic\" sender (sources[5])"
        " logs in: which scheme a delivery is would be ambiguous"
    ]


def test_a_segment_source_cannot_take_stripes_signature() -> None:
    toml = SOURCES.replace('format = "segment"', 'format = "segment"\nsignature = "stripe"')
    with pytest.raises(ConfigError) as err:
        load_settings(None, text=toml, environ={**ENV, **SOURCES_ENV})
    assert err.value.problems == [
        "sources[3].signature: applies to the standard format only (segment uses HTTP Basic)"
    ]


async def test_stripe_amounts_in_each_currencys_minor_units(start_gateway, upstream_server) -> None:
    """Stripe gives amounts in the currency's minor units: cents for EUR, yen for JPY,
    thousandths for KWD. One value_scale (0.01) recorded a 5000 JPY order as 50;
    value_scale = "minor" divides by each currency's own unit."""
    toml = STRIPE.replace("value_scale = 0.01", 'value_scale = "minor"')
    gw = await start_gateway(await upstream_server(web.Application()), toml, {"STRIPE_SECRET": STRIPE_SECRET})
    # Stripe departs from ISO 4217 for two: ISK in hundredths (ISO: none), MGA whole (ISO: 2).
    sent = [(4990, "eur"), (5000, "jpy"), (12345, "kwd"), (50000, "isk"), (5000, "mga")]
    for n, (amount, currency) in enumerate(sent):
        obj = {"id": f"cs_{n}", "amount_total": amount, "currency": currency, "client_reference_id": "42"}
        body = encode({"id": f"evt_{n}", "type": "checkout.session.completed", "data": {"object": obj}})
        status, answer = await post(gw, body, stripe_signed(body))
        assert status == 202, answer
    assert await rows(gw, "SELECT value, currency FROM conversions ORDER BY order_id") == [
        (49.9, "EUR"),
        (5000.0, "JPY"),
        (12.345, "KWD"),
        (500.0, "ISK"),  # recorded as 50,000 krónur until 2026-12-04
        (5000.0, "MGA"),  # and as 50 ariary
    ]
    body = encode(
        {"id": "evt_x", "type": "checkout.session.completed", "data": {"object": {"amount_total": 5}}}
    )
    status, answer = await post(gw, body, stripe_signed(body))
    assert status == 400 and answer["error"].startswith(
        'value (/data/object/amount_total): value_scale = "minor"'
    )


def test_a_test_event_in_minor_units_is_in_its_currencys_unit() -> None:
    assert [
        unscaled(50, "minor", "JPY"),
        unscaled(19.99, "minor", "EUR"),
        unscaled(12.345, "minor", "KWD"),
    ] == [
        50,
        1999,
        12345,
    ]
    # A Stripe-signed source's test event is in Stripe's units.
    assert unscaled(500, "minor", "ISK", STRIPE_MINOR_UNITS) == 50000 and unscaled(500, "minor", "ISK") == 500
    assert unscaled(5000, "minor", "MGA", STRIPE_MINOR_UNITS) == 5000


def test_a_wrong_value_scale_names_what_it_takes() -> None:
    toml = SOURCES.replace(
        'ignore_types = ["charge.refunded"]', 'ignore_types = ["charge.refunded"]\nvalue_scale = "major"'
    )
    with pytest.raises(ConfigError) as err:
        load_settings(None, text=toml, environ={**ENV, **SOURCES_ENV})
    assert err.value.problems == ["sources[0].value_scale: expected one of a number, \"minor\", got 'major'"]


async def test_a_whole_number_of_thousands_of_digits_refuses_only_the_event_mapping_it(
    start_gateway, upstream_server
) -> None:
    """An integer longer than Python converts (4,300 digits; valid JSON) anywhere in a delivery,
    an unmapped field included, made the whole body `not valid JSON (Exceeds the limit (4300
    digits) … use sys.set_int_max_str_digits() …)`: every event of the batch refused, again on
    each retry. It is read as 1e400 is: only the event whose mapped field holds it is bad."""
    source = '[[sources]]\nname = "billing"\nsecrets = ["env:BILLING_SECRET"]\n'
    gw = await start_gateway(await upstream_server(web.Application()), source, {"BILLING_SECRET": BILLING})
    digits = b"9" * 5000
    body = b'[{"type":"conversion","event_id":"big1","user_id":"u1","value":5,"note":%s},' % digits
    body += b'{"type":"conversion","event_id":"big2","user_id":"u1","value":%s}]' % digits
    status, answer = await post(gw, body, signed(body))
    assert status == 202, answer
    assert (answer["accepted"], answer["bad"]) == (1, 1)
    assert answer["results"][1]["errors"] == [
        "value (/value): expected a number from 0 to 1e+15 (after value_scale)"  # no refund: too large
    ]
    assert await rows(gw, "SELECT value FROM conversions") == [(5.0,)]
    assert len(await rows(gw, "SELECT 1 FROM bad_events")) == 1


@pytest.mark.parametrize(
    ("given", "why"),
    [
        # An ISO time, a fraction: not "outside the accepted window", which sent the integrator
        # to look at clocks.
        ("2026-12-05T05:00:00Z", "timestamp: webhook-timestamp is not Unix seconds (digits only)"),
        ("{now}.5", "timestamp: webhook-timestamp is not Unix seconds (digits only)"),
        ("{stale}", "timestamp: outside the accepted window (webhook-timestamp is "),
        ("{ms}", "timestamp: outside the accepted window (webhook-timestamp is "),
        # Digits only, too many to be a time: it was "not Unix seconds (digits only)".
        ("9" * 25, "timestamp: outside the accepted window (webhook-timestamp has 25 digits, far ahead of"
         " this server's clock, more than webhooks.tolerance_seconds (300))"),
        # Zeros in front, more than Python reads as a number (4,300 digits): a 500 and a traceback
        # (the review of 2026-12-05). Read as the seconds they write; then the signature decides.
        ("0" * 5000 + "{stale}", "timestamp: outside the accepted window (webhook-timestamp is "),
        ("0" * 5000 + "{now}", "signature: no valid signature"),
    ],
)  # fmt: skip
async def test_a_refused_timestamp_says_what_was_wrong_with_it(
    gw: RunningGateway, given: str, why: str
) -> None:
    """The 401 said `timestamp: outside the accepted window` for any timestamp refused: one
    that is no Unix seconds at all, and one in milliseconds, read as tens of thousands of years
    ahead. It names the header, how far off it is and the key that bounds it."""
    now = int(time.time())
    stamp = given.format(now=now, stale=now - 3600, ms=now * 1000)
    body = encode(conversion())
    headers = signed(body) | {"webhook-timestamp": stamp}
    status, answer = await post(gw, body, headers)
    assert status == 401 and answer["error"].startswith(why), answer
    if stamp != given:
        plain = given.lstrip("0")  # the zeros in front change nothing
        assert answer["error"].endswith(
            " this server's clock, more than webhooks.tolerance_seconds (300))"
        ) == (plain == "{stale}"), answer
        assert ("behind" in answer["error"]) == (plain == "{stale}"), answer
        assert answer["error"].endswith("given in milliseconds? it is read as seconds)") == (plain == "{ms}")
    svix = {"svix-" + k.removeprefix("webhook-"): v for k, v in signed(body, ts=now - 3600).items()}
    status, answer = await post(gw, body, svix)
    assert answer["error"].startswith("timestamp: outside the accepted window (svix-timestamp is 3,"), answer
    assert await rows(gw, "SELECT count(*) FROM conversions") == [(0,)]


async def test_a_delivery_not_committed_in_time_is_503_then_written_and_its_retry_a_duplicate(
    start_gateway, upstream_server, caplog: pytest.LogCaptureFixture
) -> None:
    """Another connection holds the store's write lock past ``storage.max_wait_ms``: the sender
    is answered 503 (retry), the delivery stays queued and is written once the lock goes, and
    the retry is a duplicate. The log said "was not stored" of a delivery that was then stored."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="site")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", page)
    toml = SOURCES + "\n[storage]\nmax_wait_ms = 200\n"
    gw = await start_gateway(await upstream_server(app), toml, SOURCES_ENV)
    body = encode(conversion(order_id="o-locked"))
    headers = signed(body)
    path = gw.gateway.settings.store_path
    holder = await asyncio.to_thread(sqlite3.connect, path, isolation_level=None, check_same_thread=False)
    try:
        await asyncio.to_thread(holder.execute, "BEGIN EXCLUSIVE")
        with caplog.at_level(logging.WARNING, logger="gateway.inbound"):
            status, answer = await post(gw, body, headers)
        assert status == 503 and "not stored yet" in answer["error"], answer
        said = [r.getMessage() for r in caplog.records if r.name == "gateway.inbound"]
        assert any("stays queued" in line for line in said) and not any("not stored" in s for s in said), said
    finally:
        await asyncio.to_thread(holder.execute, "ROLLBACK")
        await asyncio.to_thread(holder.close)
    for _ in range(200):  # written once the lock is gone (the writer tries again)
        if await rows(gw, "SELECT count(*) FROM conversions") == [(1,)]:
            break
        await asyncio.sleep(0.05)
    assert await rows(gw, "SELECT dedup_key FROM conversions") == [("order:o-locked",)]
    status, answer = await post(gw, body, headers)  # the sender's retry of the same delivery
    assert (status, answer) == (200, {"ok": True, "result": "duplicate"})


async def test_twenty_copies_of_one_event_at_once_are_recorded_once(gw: RunningGateway) -> None:
    """A sender's retries racing its first delivery (a timeout on its side, a queue redelivering):
    twenty copies at the same moment, of the same delivery, of the same event under twenty
    delivery IDs, and of the same order under twenty event IDs. The store's UNIQUE keys decide:
    one copy is answered accepted, every other a duplicate, and one row of each is written."""
    same = encode(conversion(event_id="race-1", order_id="race-o1", creator_id="cr_race1"))
    headers = signed(same)
    again = encode(conversion(event_id="race-2", order_id="race-o2", creator_id="cr_race2"))
    orders = [encode(conversion(order_id="race-o3", creator_id="cr_race3")) for _ in range(20)]
    races = (
        ([(same, headers)] * 20, "race-o1", "cr_race1"),  # one delivery, sent twenty times
        ([(again, signed(again)) for _ in range(20)], "race-o2", "cr_race2"),  # one event, twenty deliveries
        ([(body, signed(body)) for body in orders], "race-o3", "cr_race3"),  # one order, twenty events
    )
    for copies, order, creator in races:
        answers = await asyncio.gather(*(post(gw, body, sent) for body, sent in copies))
        statuses = sorted(status for status, _ in answers)
        assert statuses == [200] * 19 + [202], answers
        results = sorted(answer["result"] for _, answer in answers)
        assert results == ["accepted"] + ["duplicate"] * 19, answers
        assert await rows(gw, f"SELECT count(*) FROM conversions WHERE dedup_key = 'order:{order}'") == [(1,)]
        # The touchpoint the creator implies, once too: a duplicate leaves none of its rows.
        assert await rows(gw, f"SELECT count(*) FROM touchpoints WHERE creator_id = '{creator}'") == [(1,)]


async def _cap_pages(gw: RunningGateway) -> None:
    """A full disk at the moment of delivery: the database capped at its current size (on the
    writer's own connection, where the cap holds). Free pages would still be room under the
    cap (a migration may leave one): a VACUUM first leaves none."""
    await gw.gateway.store.on_writer("VACUUM")
    [(pages,)] = await gw.gateway.store.on_writer("PRAGMA page_count")
    await gw.gateway.store.on_writer(f"PRAGMA max_page_count = {pages}")


async def _read_only(gw: RunningGateway) -> None:
    """A store that became read-only (as root, file modes cannot show it; ``query_only`` fails
    each write with the SQLITE_READONLY a read-only file or mount gives)."""
    await gw.gateway.store.on_writer("PRAGMA query_only = ON")


@pytest.mark.parametrize(
    ("fault", "lift"),
    [(_cap_pages, "PRAGMA max_page_count = 1073741823"), (_read_only, "PRAGMA query_only = OFF")],
    ids=["full", "read-only"],
)
async def test_a_store_that_cannot_write_is_a_503_to_retry_and_the_retry_is_recorded_once(
    gw: RunningGateway, fault: Callable[[RunningGateway], Awaitable[None]], lift: str
) -> None:
    """A full or read-only store at the moment of delivery: no 2xx (nothing is on disk), but the
    503 with a JSON reason and ``Retry-After`` the sender's retry logic reads. A body that is not
    JSON is a 503 too, not a 400: it could not be kept in bad_events, and a 400 is not retried.
    Every delivery answered 2xx before is on disk, and once the store writes again the same
    delivery, retried, is recorded once."""
    await fault(gw)
    accepted: list[str] = []
    refused: tuple[bytes, dict[str, str]] | None = None
    for n in range(300):  # until the cap bites: the last pages may still have room
        body = encode(conversion(event_id=f"fault-{n}", user_id="u" * 200, order_id=f"fault-o{n}"))
        headers = signed(body)
        async with gw.session.post(gw.url + "/_gw/events", data=body, headers=headers) as resp:
            status, answer = resp.status, await resp.json()
            if status == 503:
                assert resp.headers["Retry-After"] == "5" and resp.content_type == "application/json"
                assert answer == {"ok": False, "status": 503, "error": "not stored; retry the delivery"}
                refused = body, headers
                break
        assert (status, answer["result"]) == (202, "accepted"), answer
        accepted.append(f"order:fault-o{n}")
    assert refused is not None, "the store never refused a write"
    stored = {key for (key,) in await rows(gw, "SELECT dedup_key FROM conversions")}
    assert set(accepted) <= stored and f"order:fault-o{len(accepted)}" not in stored
    bad = b"not json " * 440  # too large for what room the last page may have left
    status, answer = await post(gw, bad, signed(bad))
    assert (status, answer["error"]) == (503, "not stored; retry the delivery"), answer
    assert await rows(gw, "SELECT count(*) FROM bad_events") == [(0,)]

    await gw.gateway.store.on_writer(lift)  # space freed, or the mount writable again
    body, headers = refused
    status, answer = await post(gw, body, headers)  # the sender's retry
    assert (status, answer["result"]) == (202, "accepted"), answer
    status, answer = await post(gw, body, headers)
    assert (status, answer) == (200, {"ok": True, "result": "duplicate"})
    key = f"order:fault-o{len(accepted)}"
    assert await rows(gw, f"SELECT count(*) FROM conversions WHERE dedup_key = '{key}'") == [(1,)]


async def test_a_body_over_max_body_is_a_413_with_or_without_content_length(gw: RunningGateway) -> None:
    """A body over webhooks.max_body is refused as it comes, declared in Content-Length or sent
    chunked with none (read until it passes the limit, not to its end): a 413 the sender can
    read, nothing stored, not even a bad event."""
    big = encode(conversion(pad="x" * 600_000))  # webhooks.max_body = 4096

    async def chunked() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 4096):
            yield big[start : start + 4096]

    for data in (big, chunked()):
        async with gw.session.post(gw.url + "/_gw/events", data=data, headers=signed(big)) as resp:
            assert resp.status == 413 and await resp.json() == {
                "ok": False,
                "status": 413,
                "error": "body: larger than webhooks.max_body (4096 bytes)",
            }
            assert ("Transfer-Encoding" in resp.request_info.headers) is (data is not big)
    assert await rows(gw, "SELECT (SELECT count(*) FROM receipts) + (SELECT count(*) FROM bad_events)") == [
        (0,)
    ]


async def test_json_nested_ten_thousand_deep_is_a_400_kept_as_a_bad_event(
    start_gateway, upstream_server
) -> None:
    """Ten thousand levels of arrays or objects (within a 1 MiB webhooks.max_body), also in the
    standard library's parser that a number beyond a double sends the body to: a 400 saying so,
    kept, never a RecursionError's 500."""
    gw = await start_gateway(
        await upstream_server(web.Application()),
        SOURCES.replace("max_body = 4096", "max_body = 1048576"),
        SOURCES_ENV,
    )
    bodies = (
        b"[" * 10_000 + b"]" * 10_000,
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
        b'{"type":"conversion","user_id":"u","value":1e400,"x":' + b"[" * 10_000 + b"]" * 10_000 + b"}",
    )
    for body in bodies:
        status, answer = await post(gw, body, signed(body))
        assert (status, answer["error"]) == (400, f"body: JSON nested deeper than {MAX_DEPTH} levels"), answer
    assert await rows(gw, "SELECT count(*) FROM bad_events") == [(len(bodies),)]


async def test_a_chunked_body_whose_framing_breaks_midway_is_a_400_at_once(
    start_gateway, upstream_server
) -> None:
    """A chunked delivery whose framing breaks once the endpoint is reading it (a chunk size that
    is not hex, a chunk longer than its size said): aiohttp's C parser dropped the body without
    failing it, so the endpoint waited out proxy.body_timeout and answered 408 "body: not
    received in time" of a body that had come, and broken. It is a 400 saying so, as soon as the
    broken bytes arrive, the connection closed after it; nothing is stored (the body never came
    whole, so nothing was authenticated)."""
    toml = SOURCES + "\n[proxy]\nbody_timeout = 600\n"  # a wait for it would outlast the test's timeout
    gw = await start_gateway(await upstream_server(web.Application()), toml, SOURCES_ENV)
    body = encode(conversion(order_id="o-framing"))
    host, port = gw.url.removeprefix("http://").split(":")
    sent = [
        (path, headers, broken)
        for path, headers in (("/_gw/events", signed(body)), ("/_gw/segment", basic(SEGMENT)))
        for broken in (b"zz\r\nabc\r\n0\r\n\r\n", b"3\r\nabcdef\r\n0\r\n\r\n")
    ]
    for path, headers, broken in sent:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            writer.write(
                f"POST {path} HTTP/1.1\r\nHost: shop.test\r\nExpect: 100-continue\r\n".encode()
                + b"Transfer-Encoding: chunked\r\n"
                + head.encode()
                + b"\r\n"
            )
            # The endpoint has the request (and reads its body) once it asks for the body.
            assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(b"10\r\n" + body[:16] + b"\r\n")  # a first chunk as it should be
            writer.write(broken)
            status_line = await reader.readline()
            assert status_line == b"HTTP/1.1 400 Bad Request\r\n", status_line
            headers = (await reader.readuntil(b"\r\n\r\n")).decode().lower()
            assert "content-type: application/json" in headers and "connection: close" in headers
            answer = msgspec.json.decode(await reader.read())  # the whole answer, then the close
            assert answer["ok"] is False and answer["status"] == 400, answer
            assert answer["error"].startswith("body: its chunked framing is broken"), answer
            # A transport error (README, Answers): no event exists to give a result or errors.
            assert set(answer) == {"ok", "status", "error"}, answer
        finally:
            writer.close()
            await writer.wait_closed()
    assert await rows(gw, "SELECT (SELECT count(*) FROM receipts) + (SELECT count(*) FROM bad_events)") == [
        (0,)
    ]


async def test_a_body_that_arrives_slowly_is_bounded_whole_and_its_408_names_the_bound(
    start_gateway, upstream_server
) -> None:
    """``proxy.body_timeout`` bounds the whole arrival of a signed event's body, not a pause in
    it (the README said "stalled"): a body still arriving, a byte at a time, is answered 408 once
    the bound is over, and the answer named no bound ("body: not received in time"). It names
    the key and the bound, and that it is the whole body's."""
    toml = SOURCES + "\n[proxy]\nbody_timeout = 1.0\n"
    gw = await start_gateway(await upstream_server(web.Application()), toml, SOURCES_ENV)
    body = encode(conversion(order_id="o-slow"))
    host, port = gw.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))

    async def drip() -> None:
        for byte in body:  # never a pause as long as the bound: a byte every 0.1 s
            writer.write(bytes([byte]))
            await asyncio.sleep(0.1)

    dripping = asyncio.create_task(drip())
    try:
        head = "".join(f"{k}: {v}\r\n" for k, v in signed(body).items())
        request = f"POST /_gw/events HTTP/1.1\r\nHost: shop.test\r\nContent-Length: {len(body)}\r\n"
        writer.write(f"{request}{head}\r\n".encode())
        async with asyncio.timeout(60):
            status_line = await reader.readline()
            assert status_line == b"HTTP/1.1 408 Request Timeout\r\n", status_line
            head_lines = (await reader.readuntil(b"\r\n\r\n")).decode().lower()
            assert not dripping.done()  # the body was still arriving
            length = int(re.search(r"content-length: (\d+)", head_lines)[1])  # type: ignore[index]
            answer = msgspec.json.decode(await reader.readexactly(length))
        assert answer["error"] == "body: did not arrive whole within proxy.body_timeout (1 s)", answer
    finally:
        dripping.cancel()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_a_delivery_refused_before_its_body_is_read_gets_no_100_continue(gw: RunningGateway) -> None:
    """A delivery announcing with ``Expect: 100-continue`` a body over ``webhooks.max_body``, or
    sent with another method than POST, is refused before its body is read: answered at once,
    never invited (curl asks for a body over 1 MiB, the default ``webhooks.max_body``), as a
    body over ``proxy.max_request_body`` is. Until 2026-12-07 the sender was invited, sent the
    whole body, and then got the 413 (or the 405) it could have had at once. One within the
    limit is still invited."""
    from tests.gateway.test_proxy import BROWSER_AGENT

    async def first_head(head: str) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)
        try:
            writer.write(head.encode() + b"\r\n")
            await writer.drain()
            return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        finally:
            writer.close()

    expecting = (
        "{method} /_gw/events HTTP/1.1\r\nHost: t\r\nUser-Agent: {agent}\r\nContent-Length: {length}\r\n"
    )
    expecting += "Content-Type: application/json\r\nExpect: 100-continue\r\n"
    for method, length, status in (("POST", 5000, b"413"), ("PUT", 10, b"405")):  # webhooks.max_body = 4096
        head = await first_head(expecting.format(method=method, agent=BROWSER_AGENT, length=length))
        assert head.startswith(b"HTTP/1.1 " + status + b" "), (method, head)
        assert b"connection: close" in head.lower(), head
    head = await first_head(expecting.format(method="POST", agent=BROWSER_AGENT, length=10))
    assert head == b"HTTP/1.1 100 Continue\r\n\r\n"
