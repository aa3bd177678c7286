"""Signatures (Standard Webhooks, legacy hex, HTTP Basic), JSON pointers, and sender payloads
mapped to our events — the pure parts of signed server-side events, no server."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import math
import re
import tomllib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from addons.identity import cookie_value
from gateway.channels import Channels
from gateway.cli import build_parser
from gateway.config import ConfigError, load_settings, sender_secret_bytes
from gateway.events import Binding, Conversion, Touchpoint
from gateway.ids import Uuid7
from gateway.keys import Keys
from gateway.mapping import Invalid, Limits, map_event
from gateway.options import ChannelsOptions, EventCondition, SourceOptions
from gateway.send_test import cmd_send_test_event, sample_payload
from gateway.signing import (
    PADDLE,
    STRIPE,
    AuthFailed,
    BodyHmac,
    StampedScheme,
    body_hmac,
    legacy_signature,
    stamped_signature,
    standard_signature,
    verify_basic,
    verify_basic_login,
    verify_body_hmac,
    verify_legacy,
    verify_stamped,
    verify_standard,
)
from gateway.sources import compile_source, parse_pointer, resolve, split_batch
from tests.conftest import ENV

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
KEYS = Keys.from_master(b"m" * 40)
LIMITS = Limits(
    KEYS, "test", Uuid7(), timedelta(days=400), timedelta(seconds=300), 200, Channels(ChannelsOptions())
)


def test_standard_webhooks_reference_vector() -> None:
    """The example from the Standard Webhooks specification, secret given as whsec_."""
    secret = sender_secret_bytes("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    sig = standard_signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", b'{"test": 2432232314}')
    assert sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def _headers(secret: bytes, body: bytes, ts: int, msg_id: str = "msg_1", extra: str = "") -> dict[str, str]:
    sig = standard_signature(secret, msg_id, str(ts), body)
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": f"{extra} {sig}".strip()}


SENDERS = {"a": [b"a" * 32], "b": [b"new" * 10, b"old" * 10]}


def test_verify_finds_the_sender_by_any_of_its_secrets() -> None:
    body = b'{"x": 1}'
    assert verify_standard(SENDERS, _headers(b"a" * 32, body, 1000), body, 1000, 300).sender == "a"
    assert verify_standard(SENDERS, _headers(b"old" * 10, body, 1000), body, 1000, 300).sender == "b"
    # Several signatures in the header (the sender rotating): one valid one passes.
    headers = _headers(b"new" * 10, body, 1000, extra="v1,Zm9yZ2Vk v2,whatever")
    auth = verify_standard(SENDERS, headers, body, 1000, 300)
    assert (auth.sender, auth.delivery) == ("b", "msg_1")
    # Two header lines joined as RFC 9110 joins them: "v1,a, v1,b".
    joined = _headers(b"a" * 32, body, 1000)
    joined["webhook-signature"] += ", v1,Zm9yZ2Vk"
    assert verify_standard(SENDERS, joined, body, 1000, 300).sender == "a"


@pytest.mark.parametrize(
    ("change", "what"),
    [
        ({"body": b'{"x": 2}'}, "signature"),
        ({"secret": b"z" * 32}, "signature"),
        ({"now": 1000 + 301}, "timestamp"),
        ({"now": 1000 - 301}, "timestamp"),
        ({"drop": "webhook-id"}, "signature"),
        ({"timestamp": "12ab"}, "timestamp"),
        # Header bytes that are not UTF-8 reach us as surrogates (aiohttp's parser): refused,
        # never a UnicodeEncodeError (a 500).
        ({"set": {"webhook-id": "msg_\udcff"}}, "signature"),
        ({"set": {"webhook-signature": "v1,\udcff"}}, "signature"),
    ],
)
def test_verify_refuses(change: dict[str, Any], what: str) -> None:
    body = b'{"x": 1}'
    headers = _headers(change.get("secret", b"a" * 32), body, 1000)
    headers.pop(change.get("drop", ""), None)
    headers |= change.get("set", {})
    if "timestamp" in change:
        headers["webhook-timestamp"] = change["timestamp"]
    with pytest.raises(AuthFailed) as info:
        verify_standard(SENDERS, headers, change.get("body", body), change.get("now", 1000), 300)
    assert info.value.what == what


@pytest.mark.parametrize(
    ("signature", "said"),
    [
        # The bare base64, without "v1,": the most common hand-signing slip.
        (
            lambda sig: sig[3:],
            'signature: webhook-signature holds no "v1,<base64>" signature (Standard Webhooks: v1,'
            ' then the base64 HMAC-SHA256 of "id.timestamp.body")',
        ),
        # The HMAC in hex, as openssl dgst and most HMAC examples print it.
        (
            lambda sig: "v1," + base64.b64decode(sig[3:]).hex(),
            "signature: webhook-signature's v1 value is not the base64 of an HMAC-SHA256 (32 bytes):"
            " 64 hex digits? Standard Webhooks writes it in base64",
        ),
        (
            lambda sig: "v1," + "Zm9yZ2Vk",
            "signature: webhook-signature's v1 value is not the base64 of an HMAC-SHA256 (32 bytes)",
        ),
        # Of the right shape, and wrong: nothing more is said (a wrong secret, another body).
        (lambda sig: "v1," + base64.b64encode(b"x" * 32).decode(), "signature: no valid signature"),
    ],
)
def test_a_standard_signature_of_the_wrong_shape_says_so(signature: Any, said: str) -> None:
    """An engineer signing by hand (``openssl dgst -hmac``) got "no valid signature" for a
    signature without its ``v1,`` or written in hex, and went checking the secret and the body.
    The shape is the specification's, public: saying it helps no forger."""
    body = b'{"x": 1}'
    headers = _headers(b"a" * 32, body, 1000)
    headers["webhook-signature"] = signature(headers["webhook-signature"])
    with pytest.raises(AuthFailed) as info:
        verify_standard(SENDERS, headers, body, 1000, 300)
    assert (info.value.what, str(info.value)) == ("signature", said)


@pytest.mark.parametrize(
    ("now", "passes"), [(1300.999, True), (1301.0, False), (700.0, True), (699.999, False)]
)
def test_the_tolerance_edge_is_in_whole_seconds(now: float, passes: bool) -> None:
    """A timestamp is whole seconds, floored from the sender's clock: one exactly
    ``tolerance`` seconds old is inside the window for the whole of that second, as the
    Standard Webhooks libraries (and Stripe's ``t``) count it. Until 2026-12-04 the receiver's
    fraction of a second pushed it out (a delivery signed 300 s ago was a 401 nearly always)."""
    body = b'{"x": 1}'
    headers = _headers(b"a" * 32, body, 1000)
    if passes:
        assert verify_standard(SENDERS, headers, body, now, 300).sender == "a"
    else:
        with pytest.raises(AuthFailed, match="timestamp"):
            verify_standard(SENDERS, headers, body, now, 300)
    for scheme in (STRIPE, PADDLE):
        given = stamped_signature(scheme, b"s" * 32, "1000", body)
        if passes:
            assert verify_stamped(scheme, {"st": [b"s" * 32]}, given, body, now, 300).sender == "st"
        else:
            with pytest.raises(AuthFailed, match="timestamp"):
                verify_stamped(scheme, {"st": [b"s" * 32]}, given, body, now, 300)


def _paddle_header(secret: bytes, ts: str, body: bytes) -> str:
    """Paddle's scheme written out here, as Paddle's documentation gives it (not through the
    gateway's signing code): hex HMAC-SHA256 of "ts:body", the secret as given."""
    return f"ts={ts};h1=" + hmac.new(secret, ts.encode() + b":" + body, hashlib.sha256).hexdigest()


@pytest.mark.parametrize(
    ("given", "what"),
    [
        (lambda h: h, None),
        (lambda h: h.upper().replace("TS=", "ts=").replace("H1=", "h1="), None),  # hex in any case
        (lambda h: "ts=1000;h1=" + "0" * 64 + ";" + h.split(";")[1], None),  # a rolled secret's too
        (lambda h: " " + h.replace(";", "; ") + " ", None),
        (lambda h: h.replace("ts=1000", "ts=1000;ts=1001"), "signature"),  # which time was signed?
        (lambda h: h.split(";")[1], "signature"),  # no ts
        (lambda h: h.split(";")[0], "signature"),  # no h1
        (lambda h: h.replace(";", ","), "signature"),  # Stripe's separator
        (lambda h: h.replace("ts=1000", "ts=2000"), "timestamp"),
        (lambda h: h.replace("ts=1000", "ts=-1000"), "timestamp"),
        (lambda h: h[:-1] + "\udcff", "signature"),  # a header byte that is not UTF-8
    ],
)
def test_paddles_signature(given, what: str | None) -> None:
    """Paddle Billing's ``Paddle-Signature: ts=…;h1=…``: until 2026-12-04 a Paddle account
    needed a relay that re-signed its notifications."""
    body = b'{"event_id":"evt_1","event_type":"transaction.completed"}'
    header = given(_paddle_header(b"pdl_ntfset_01abc_" + b"k" * 32, "1000", body))
    senders = {"paddle": [b"pdl_ntfset_01abc_" + b"k" * 32]}
    if what is None:
        auth = verify_stamped(PADDLE, senders, header, body, 1010, 300)
        assert (auth.sender, auth.delivery) == ("paddle", "sha256:" + hashlib.sha256(body).hexdigest())
    else:
        with pytest.raises(AuthFailed) as info:
            verify_stamped(PADDLE, senders, header, body, 1010, 300)
        assert info.value.what == what


@pytest.mark.parametrize("scheme", [STRIPE, PADDLE])
def test_a_stamped_signature_is_of_this_body_and_time(scheme: StampedScheme) -> None:
    """The signature covers the timestamp and the body: either changed, it no longer passes."""
    body, secret = b'{"x": 1}', b"s" * 32
    given = stamped_signature(scheme, secret, "1000", body)
    assert verify_stamped(scheme, {"s": [secret]}, given, body, 1000, 300).sender == "s"
    moved = given.replace("=1000", "=1001", 1)
    for header, sent in ((given, b'{"x": 2}'), (moved, body)):
        with pytest.raises(AuthFailed, match="no valid signature"):
            verify_stamped(scheme, {"s": [secret]}, header, sent, 1000, 300)


@pytest.mark.parametrize("scheme", [STRIPE, PADDLE])
def test_a_stamped_signature_not_in_hex_says_so(scheme: StampedScheme) -> None:
    """Stripe's and Paddle's HMAC is hex; one made by hand in base64 (as Standard Webhooks and
    Shopify write theirs) was "no valid signature". The shape is said; a hex one of the wrong
    secret still says nothing more."""
    body, secret = b'{"x": 1}', b"s" * 32
    mac = hmac.new(secret, b"1000" + scheme.joiner + body, hashlib.sha256).digest()
    based = f"{scheme.time_field}=1000{scheme.separator}{scheme.hash_field}={base64.b64encode(mac).decode()}"
    with pytest.raises(AuthFailed) as info:
        verify_stamped(scheme, {"s": [secret]}, based, body, 1000, 300)
    assert (info.value.what, str(info.value)) == (
        "signature",
        f"signature: {scheme.header}'s {scheme.hash_field} is not 64 hex digits (the HMAC-SHA256"
        " in hex): base64? it is written in hex",
    )
    wrong = stamped_signature(scheme, b"z" * 32, "1000", body)
    with pytest.raises(AuthFailed, match=r"^signature: no valid signature$"):
        verify_stamped(scheme, {"s": [secret]}, wrong, body, 1000, 300)


@pytest.mark.parametrize("prefix", ["SHA256=", "Sha256=", "sha256=", ""])
def test_the_legacy_prefix_and_hex_are_read_in_any_case(prefix: str) -> None:
    """Senders write the algorithm's name as they please (``SHA256=``) and hex in either case:
    until 2026-12-05 an upper-case prefix was a 401."""
    body = b'{"type": "x"}'
    sig = legacy_signature(b"a" * 32, body)
    for hexed in (sig, sig.upper()):
        assert verify_legacy(SENDERS, f" {prefix}{hexed} ", body).sender == "a"
    with pytest.raises(AuthFailed):  # the prefix is taken off once, not any text before the hex
        verify_legacy(SENDERS, "SHA1=" + sig, body)


def test_a_body_hmac_prefix_is_read_in_any_case() -> None:
    """GitHub's ``sha256=`` (a sender's ``hmac.prefix``) sent as ``SHA256=``, hex upper-cased:
    the same signature."""
    body = b'{"action": "created"}'
    key = b"g" * 32
    senders = {"github": (BodyHmac("hex", "sha256=", ""), [key])}
    hexed = body_hmac(key, body, "hex")
    for given in ("sha256=" + hexed, "SHA256=" + hexed.upper(), "Sha256=" + hexed):
        assert verify_body_hmac(senders, given, body, {}, 1000, 300).sender == "github"
    with pytest.raises(AuthFailed):
        verify_body_hmac(senders, hexed, body, {}, 1000, 300)


def test_legacy_hex_and_basic() -> None:
    body = b"{}"
    sig = legacy_signature(b"a" * 32, body)
    assert verify_legacy(SENDERS, sig, body).sender == "a"
    assert verify_legacy(SENDERS, "sha256=" + sig.upper(), body).sender == "a"
    with pytest.raises(AuthFailed):
        verify_legacy(SENDERS, sig, b"{ }")
    with pytest.raises(AuthFailed):
        verify_legacy(SENDERS, sig[:-1] + "\udcff", body)
    basic = "Basic " + base64.b64encode(b"a" * 32 + b":").decode()
    assert verify_basic(SENDERS, basic, body).sender == "a"
    for header in ("", "Basic !!!", "Bearer " + "a" * 32, "Basic " + base64.b64encode(b"nope:").decode()):
        with pytest.raises(AuthFailed):
            verify_basic(SENDERS, header, body)


@pytest.mark.parametrize(
    ("pointer", "expected"),
    [("/a", 1), ("/b/0/c", "x"), ("/d~1e", 2), ("/f~0g", 3), ("/b/1", None), ("/zz", None), ("/a/b", None)],
)
def test_json_pointer(pointer: str, expected: Any) -> None:
    doc = {"a": 1, "b": [{"c": "x"}], "d/e": 2, "f~g": 3}
    found = resolve(doc, parse_pointer(pointer))
    assert (None if found is resolve({}, ("x",)) else found) == expected


def source(**opts: Any) -> Any:
    return compile_source(msgspec.convert({"name": "s", "secrets": ["env:X"], **opts}, SourceOptions))


def test_conversion_maps_with_order_dedup_and_historical_time() -> None:
    event = {"type": "conversion", "event_id": "e1", "user_id": "u1", "value": "49.5", "currency": "eur"}
    event |= {"order_id": "o-9", "timestamp": "2026-11-20T10:00:00Z"}
    mapped = map_event(source(), event, NOW, LIMITS, "fallback")
    (conversion,) = mapped.rows
    assert isinstance(conversion, Conversion)
    assert mapped.key == "e1"
    assert conversion.dedup_key == "order:o-9" and conversion.value == 49.5 and conversion.currency == "EUR"
    assert conversion.user_key == KEYS.user_key("u1") and conversion.visitor_key is None
    assert conversion.ts == "2026-11-20T10:00:00.000000Z" and conversion.origin == "webhook"


@pytest.mark.parametrize(
    "written",
    ["2026-11-20T10:00:00Z", "2026-11-20t10:00:00z", "2026-11-20T10:00:00z", "2026-11-20 10:00:00Z"],
)
def test_an_rfc3339_time_in_any_case_is_read(written: str) -> None:
    """RFC 3339 allows "t" and "z" in lower case: a time ending in "z" was refused as no time."""
    event = {"type": "conversion", "event_id": "e1", "user_id": "u1", "timestamp": written}
    (conversion,) = map_event(source(), event, NOW, LIMITS, "f").rows
    assert conversion.ts == "2026-11-20T10:00:00.000000Z"


def test_a_senders_order_scope_keys_its_orders_apart() -> None:
    """Two shops' webhooks with the same order number: one namespace made the second a duplicate
    of the first; each sender given its own order_scope keeps both."""
    event = {"type": "conversion", "event_id": "e1", "user_id": "u1", "order_id": "727"}
    keys = [
        [
            r.dedup_key
            for r in map_event(source(**opts), event, NOW, LIMITS, "f").rows
            if isinstance(r, Conversion)
        ]
        for opts in ({}, {"order_scope": "eu"}, {"order_scope": "us"})
    ]
    assert keys == [["order:727"], ["order/eu:727"], ["order/us:727"]]
    for scope in ("EU", "_eu"):
        toml = f'[[sources]]\nname = "a"\nsecrets = ["env:A"]\norder_scope = "{scope}"\n'
        with pytest.raises(ConfigError) as err:
            load_settings(None, text=toml, environ={**ENV, "A": "a" * 32})
        assert err.value.problems == [
            "sources[0].order_scope: must be 1-64 of a-z 0-9 _ . - (not starting with _ . -) or empty,"
            f" got {scope!r}"
        ]


def test_stripe_style_mapping_is_configuration() -> None:
    src = source(
        fields={
            "type": "/type",
            "event_id": "/id",
            "user_id": "/data/object/client_reference_id",
            "value": "/data/object/amount_total",
            "currency": "/data/object/currency",
            "order_id": "/data/object/id",
            "timestamp": "/created",
        },
        types={"checkout.session.completed": "conversion"},
        ignore_types=["charge.refunded"],
        value_scale=0.01,
    )
    event = {
        "id": "evt_1",
        "type": "checkout.session.completed",
        "created": int(NOW.timestamp()) - 60,
        "data": {
            "object": {"id": "cs_1", "client_reference_id": 42, "amount_total": 4999, "currency": "usd"}
        },
    }
    (conversion,) = map_event(src, event, NOW, LIMITS, "f").rows
    assert isinstance(conversion, Conversion)
    assert (conversion.value, conversion.order_id, conversion.name) == (
        49.99,
        "cs_1",
        "checkout.session.completed",
    )
    assert map_event(src, {**event, "type": "charge.refunded"}, NOW, LIMITS, "f").rows == []
    obj = event["data"]["object"]
    # 1999 cents is 19.99, not the float product 19.990000000000002; "1_000" is no amount.
    (cents,) = map_event(
        src, {**event, "data": {"object": {**obj, "amount_total": 1999}}}, NOW, LIMITS, "f"
    ).rows
    assert isinstance(cents, Conversion) and str(cents.value) == "19.99"
    with pytest.raises(Invalid, match=r"value \(/data/object/amount_total\): expected a number, got '1_000'"):
        map_event(src, {**event, "data": {"object": {**obj, "amount_total": "1_000"}}}, NOW, LIMITS, "f")


WHEN_EVENT = {"type": "paid", "event_id": "e1", "user_id": "u1", "value": 10, "currency": "EUR"}


@pytest.mark.parametrize(
    ("condition", "event", "reason"),
    [
        ({"equals": "true"}, {"invoice": {"first": True}}, None),
        ({"equals": "true"}, {"invoice": {"first": "true"}}, None),  # compared as text
        ({"equals": "true"}, {"invoice": {"first": False}}, "/invoice/first ('false') is not 'true'"),
        ({"equals": "true"}, {"invoice": {}}, "without /invoice/first"),
        ({"equals": "true"}, {"invoice": {"first": None}}, "without /invoice/first"),
        ({"equals": "3"}, {"invoice": {"first": 3}}, None),
        ({"equals": "3"}, {"invoice": {"first": 3.0}}, "/invoice/first (3.0) is not '3'"),
        ({"equals": "{}"}, {"invoice": {"first": {}}}, "/invoice/first (an object) is not '{}'"),
        ({"matches": "web|api"}, {"invoice": {"first": "api"}}, None),
        ({"matches": "web|api"}, {"invoice": {"first": "webhook"}}, "does not match 'web|api'"),
        ({}, {"invoice": {"first": 0}}, None),  # present: any value but null
        ({}, {}, "without /invoice/first"),
        # A list where the pointer needs an object: said, not read as a value not sent.
        (
            {},
            {"invoice": [{"first": 1}]},
            "without /invoice/first (where /invoice is an array, not an object)",
        ),
        ({"absent": True}, {}, None),
        ({"absent": True}, {"invoice": {"first": None}}, None),
        ({"absent": True}, {"invoice": {"first": ""}}, "with /invoice/first (sources.when: absent)"),
    ],
)
def test_when_records_an_event_of_its_type_only_when_it_meets_the_condition(
    condition: dict[str, Any], event: dict[str, Any], reason: str | None
) -> None:
    """A billing platform's renewal is the same type as a first payment: without ``when`` every
    renewal was another conversion. One that does not meet it is ignored, saying why."""
    src = source(
        types={"paid": "conversion"},
        when=[{"type": "paid", "pointer": "/invoice/first", **condition}],
    )
    mapped = map_event(src, {**WHEN_EVENT, **event}, NOW, LIMITS, "f")
    if reason is None:
        assert mapped.kind == "conversion" and len(mapped.rows) == 1
    else:
        assert (mapped.kind, mapped.rows) == ("ignored", [])
        assert mapped.ignored.startswith("type 'paid' ") and reason in mapped.ignored, mapped.ignored
        assert mapped.ignored.endswith("(sources.when): not recorded") or "absent" in mapped.ignored
    # Another type of the same sender is not concerned.
    other = map_event(src, {**WHEN_EVENT, **event, "type": "identify", "visitor_id": "v1"}, NOW, LIMITS, "f")
    assert other.kind == "identify" and len(other.rows) == 1


def test_every_when_entry_of_a_type_must_hold() -> None:
    src = source(
        when=[
            {"type": "conversion", "pointer": "/a", "equals": "1"},
            {"type": "conversion", "pointer": "/b", "absent": True},
        ]
    )
    event = {**WHEN_EVENT, "type": "conversion"}
    assert map_event(src, {**event, "a": 1}, NOW, LIMITS, "f").kind == "conversion"
    assert map_event(src, {**event, "a": 1, "b": "x"}, NOW, LIMITS, "f").kind == "ignored"
    assert map_event(src, {**event, "a": 2}, NOW, LIMITS, "f").kind == "ignored"


@pytest.mark.parametrize(
    ("condition", "written"),
    [
        ({"equals": "true"}, True),
        ({"equals": "false"}, False),
        ({"equals": "12"}, 12),
        ({"equals": "007"}, "007"),  # as the number 7 it would read "7"
        ({"equals": "web"}, "web"),
        ({"matches": "(web|api)"}, "web"),
        ({"matches": "^subscription_create$"}, "subscription_create"),
        ({}, "test"),
    ],
)
def test_a_test_event_meets_its_conversion_types_conditions(condition: dict[str, Any], written: Any) -> None:
    src = source(
        fields={"type": "/event_type"},
        types={"paid": "conversion"},
        when=[{"type": "paid", "pointer": "/invoice/first", **condition}],
    )
    payload = sample_payload(src, "cr_1", 10, "EUR")
    assert payload["invoice"]["first"] == written and type(payload["invoice"]["first"]) is type(written)
    assert map_event(src, payload, datetime.now(UTC), LIMITS, "f").kind == "conversion"


def test_a_test_event_that_cannot_meet_a_pattern_is_answered_ignored() -> None:
    src = source(types={"paid": "conversion"}, when=[{"type": "paid", "pointer": "/o", "matches": "w[0-9]+"}])
    payload = sample_payload(src, "cr_1", 10, "EUR")
    assert "o" not in payload
    assert map_event(src, payload, datetime.now(UTC), LIMITS, "f").kind == "ignored"
    absent = source(types={"paid": "conversion"}, when=[{"type": "paid", "pointer": "/o", "absent": True}])
    assert map_event(
        absent, sample_payload(absent, "cr_1", 10, "EUR"), datetime.now(UTC), LIMITS, "f"
    ).kind == ("conversion")


@pytest.mark.parametrize("value", [19.99, 50, 0.07, 12.345, 1e15])
def test_a_test_event_records_the_value_asked_for(value: float) -> None:
    """`gateway send-test-event --value 19.99` to a cents sender sent 19.99 / 0.01 =
    1998.9999999999998, recorded as 19.989999999999998: the payload now holds 1999."""
    src = source(fields={"value": "/amount_total"}, value_scale=0.01)
    payload = sample_payload(src, "cr_1", value, "EUR")
    assert payload["amount_total"] == Decimal(repr(value)) * 100
    *_, conversion = map_event(src, payload, datetime.now(UTC), LIMITS, "f").rows
    assert isinstance(conversion, Conversion) and conversion.value == value


def test_creator_touchpoint_for_a_user_only_gets_a_synthetic_visitor_bound_to_them() -> None:
    src = source(defaults={"source": "TikTok", "medium": "creator"})
    event = {"type": "touchpoint", "user_id": "u7", "creator_id": "cr_1", "timestamp": 1764064800}
    mapped = map_event(src, event, NOW, LIMITS, "f")
    binding, touch = mapped.rows
    assert isinstance(binding, Binding) and isinstance(touch, Touchpoint)
    assert touch.visitor_key == binding.visitor_key == KEYS.visitor_key("user:u7")
    assert binding.user_key == KEYS.user_key("u7")
    assert (touch.source, touch.medium, touch.creator_id) == ("tiktok", "creator", "cr_1")
    # No event key: the composite, with a digest of who (another user's click is another event).
    # Its time as an ISO instant however it was written; the key as versions before 2026-12-05
    # wrote it (the time as sent) is its alias, so one they stored still matches.
    assert re.fullmatch(r"touchpoint:cr_1:2025-11-25T10:00:00Z:[0-9a-f]{16}", mapped.key), mapped.key
    assert mapped.aliases == (mapped.key.replace("2025-11-25T10:00:00Z", "1764064800"),)
    for written in ("2025-11-25T11:00:00+01:00", 1764064800000, "1764064800", 1764064800.0):
        assert map_event(src, {**event, "timestamp": written}, NOW, LIMITS, "f").key == mapped.key, written
    other = map_event(src, {**event, "user_id": "u8"}, NOW, LIMITS, "f")
    assert other.key != mapped.key
    assert map_event(src, dict(event), NOW, LIMITS, "f").key == mapped.key


def test_identify_accepts_the_signed_cookie_and_refuses_a_forged_one() -> None:
    cookie = cookie_value(KEYS.cookie_mac, "A" * 22)
    (binding,) = map_event(
        source(), {"type": "identify", "visitor_id": cookie, "user_id": "u"}, NOW, LIMITS, "f"
    ).rows
    assert isinstance(binding, Binding) and binding.visitor_key == KEYS.visitor_key("A" * 22)
    with pytest.raises(Invalid, match=r"visitor_id.*does not verify"):
        map_event(
            source(), {"type": "identify", "visitor_id": cookie[:-2] + "xx", "user_id": "u"}, NOW, LIMITS, "f"
        )


def test_identify_reads_the_whole_cookie_pair_as_its_value() -> None:
    """The site's backend, passing on what the browser sent, wrote the cookie as the ``Cookie``
    header has it, ``gw_vid=v1.<id>.<tag>``: that was taken for a raw visitor ID no visit has,
    and the user was bound to a visitor who never existed, without a word. The pair is read as
    its value (whose signature is checked as the value's is); a raw ID with ``=`` stays raw."""
    cookie = cookie_value(KEYS.cookie_mac, "A" * 22)
    for given in (f"gw_vid={cookie}", f"my_cookie={cookie}"):
        (binding,) = map_event(
            source(), {"type": "identify", "visitor_id": given, "user_id": "u"}, NOW, LIMITS, "f"
        ).rows
        assert isinstance(binding, Binding) and binding.visitor_key == KEYS.visitor_key("A" * 22), given
    with pytest.raises(Invalid, match=r"visitor_id.*does not verify"):
        map_event(
            source(),
            {"type": "identify", "visitor_id": f"gw_vid={cookie[:-2]}xx", "user_id": "u"},
            NOW,
            LIMITS,
            "f",
        )
    (binding,) = map_event(
        source(), {"type": "identify", "visitor_id": "a=b", "user_id": "u"}, NOW, LIMITS, "f"
    ).rows
    assert isinstance(binding, Binding) and binding.visitor_key == KEYS.visitor_key("a=b")


def test_identify_reads_the_visitor_cookie_out_of_a_whole_cookie_header() -> None:
    """The site's backend passed on the browser's whole ``Cookie`` header (its session and
    analytics cookies around ours), or the value in the DQUOTEs RFC 6265 allows (a Java
    container keeps them): each was accepted (202) as a raw visitor ID no visit has, and the
    user bound to a visitor who never existed, without a word. The gateway itself reads the
    visitor from such a header, the first of our cookies that verifies (a stale one ahead of
    the good one, after ``identity.domain`` changed). A header too long for a raw ID is read
    too; a raw ID stays raw, and one too long for one is still refused as such."""
    cookie = cookie_value(KEYS.cookie_mac, "A" * 22)
    stale = cookie_value(KEYS.cookie_mac + b"old", "B" * 22)  # signed under another secret
    analytics = "_ga=GA1.2.1234567890.1765000000; _gid=GA1.2.987654321.1765000000; " * 4
    for given in (
        f"session=abc123; gw_vid={cookie}; _ga=GA1.2.3",
        f"gw_vid={cookie}; session=abc",
        f'"{cookie}"',
        f'gw_vid="{cookie}"',
        f"gw_vid={stale}; gw_vid={cookie}",
        f"{analytics}sessionid=x; gw_vid={cookie}",  # longer than campaign.max_value_length
    ):
        (binding,) = map_event(
            source(), {"type": "identify", "visitor_id": given, "user_id": "u"}, NOW, LIMITS, "f"
        ).rows
        assert isinstance(binding, Binding) and binding.visitor_key == KEYS.visitor_key("A" * 22), given
    for forged in (f"session=abc; gw_vid={stale}", f'"{stale}"'):
        with pytest.raises(Invalid, match=r"visitor_id.*does not verify"):
            map_event(source(), {"type": "identify", "visitor_id": forged, "user_id": "u"}, NOW, LIMITS, "f")
    (binding,) = map_event(
        source(), {"type": "identify", "visitor_id": "a=b; c=d", "user_id": "u"}, NOW, LIMITS, "f"
    ).rows
    assert isinstance(binding, Binding) and binding.visitor_key == KEYS.visitor_key("a=b; c=d")
    too_long = "x" * (LIMITS.max_len + 1)
    with pytest.raises(
        Invalid, match=rf"visitor_id \(/visitor_id\): longer than {LIMITS.max_len} characters"
    ):
        map_event(source(), {"type": "identify", "visitor_id": too_long, "user_id": "u"}, NOW, LIMITS, "f")


@pytest.mark.parametrize(
    ("event", "errors"),
    [
        ({}, ["type (/type): missing"]),
        ({"type": "refund"}, ["type (/type): 'refund' is not mapped"]),
        (
            {"type": "conversion", "user_id": {"id": 1}, "value": "abc"},
            ["user_id", "value (/value): expected a number"],
        ),
        (
            {"type": "conversion", "visitor_id": "v", "currency": "dollars"},
            ["currency (/currency): expected a 3-letter"],
        ),
        (  # a refund's hint for a negative value (one too large, no refund, has none: test_inbound)
            {"type": "conversion", "visitor_id": "v", "value": -5},
            ["value (/value): expected a number from 0 to 1e+15 (after value_scale); refunds are not"],
        ),
        ({"type": "conversion"}, ["visitor_id (/visitor_id) / user_id (/user_id): one of them is needed"]),
        ({"type": "identify", "user_id": "u"}, ["visitor_id (/visitor_id): missing"]),
        ({"type": "touchpoint", "visitor_id": "v"}, ["touchpoint: needs at least one of"]),
        (
            {"type": "conversion", "visitor_id": "v", "timestamp": "2001-01-01T00:00:00Z"},
            ["timestamp (/timestamp): 2001"],
        ),
        (
            {"type": "conversion", "visitor_id": "v", "timestamp": "2027-01-01T00:00:00Z"},
            [
                "timestamp (/timestamp): 2027-01-01T00:00:00.000000Z is outside the accepted range:"
                " more than webhooks.tolerance_seconds (300) in the future"
            ],
        ),
        (  # the future and the past each name the key that sets their bound
            {"type": "conversion", "visitor_id": "v", "timestamp": "2024-11-25T00:00:00Z"},
            [
                "timestamp (/timestamp): 2024-11-25T00:00:00.000000Z is outside the accepted range:"
                " older than webhooks.max_event_age_days (400)"
            ],
        ),
        (  # what it got, as the other fields' errors say it
            {"type": "conversion", "visitor_id": "v", "timestamp": "yesterday"},
            [
                "timestamp (/timestamp): expected an ISO 8601 date-time or Unix seconds/milliseconds,"
                " got 'yesterday'"
            ],
        ),
        (
            {"type": "conversion", "visitor_id": "v", "timestamp": [2026, 11, 25]},
            [
                "timestamp (/timestamp): expected an ISO 8601 date-time or Unix seconds/milliseconds,"
                " got an array"
            ],
        ),
        (  # Arabic-Indic digits: float() reads them as Unix seconds
            {
                "type": "conversion",
                "visitor_id": "v",
                "timestamp": "\u0661\u0667\u0666\u0664\u0660\u0666\u0664\u0668\u0660\u0660",
            },
            ["timestamp (/timestamp): expected an ISO 8601 date-time or Unix seconds/milliseconds"],
        ),
        (
            {"type": "touchpoint", "visitor_id": "v", "campaign": "x" * 201},
            ["campaign (/campaign): longer than 200"],
        ),
        (
            {"type": "touchpoint", "visitor_id": "v", "source": "a\x00b"},
            ["source (/source): contains unprintable"],
        ),
        (  # a joiner is part of a name, not of an ID
            {"type": "conversion", "user_id": "u\u200cx", "campaign": "\u0645\u06cc\u200c\u062e"},
            ["user_id (/user_id): contains unprintable"],
        ),
        # Named as JSON names them (until 2026-12-05 as Python does: bool, float, dict, NoneType).
        ({"type": True}, ["type (/type): expected a string, got true"]),
        (
            {"type": "conversion", "user_id": None, "visitor_id": ["v"]},
            ["visitor_id (/visitor_id): expected a string, got an array"],
        ),
        # Past the calendar once in UTC: refused with the reason, not an OverflowError (a 500).
        (
            {"type": "conversion", "visitor_id": "v", "timestamp": "0001-01-01T00:00:00+01:00"},
            ["timestamp (/timestamp): '0001-01-01T00:00:00+01:00' is outside the accepted range"],
        ),
        (
            {"type": "conversion", "visitor_id": "v", "timestamp": "9999-12-31T23:59:59-01:00"},
            [
                "timestamp (/timestamp): '9999-12-31T23:59:59-01:00' is outside the accepted range:"
                " more than webhooks.tolerance_seconds (300) in the future"  # it named max_event_age_days
            ],
        ),
        # Unix time beyond what a date-time holds: the bound it crossed, not "expected … Unix
        # seconds" (it is Unix seconds).
        (
            {"type": "conversion", "visitor_id": "v", "timestamp": 10**23},
            [
                "timestamp (/timestamp): 100000000000000000000000 is outside the accepted range:"
                " more than webhooks.tolerance_seconds (300) in the future"
            ],
        ),
        (
            {"type": "conversion", "visitor_id": "v", "timestamp": math.inf},
            [
                "timestamp (/timestamp): a number beyond a double is outside the accepted range:"
                " more than webhooks.tolerance_seconds (300) in the future"
            ],
        ),
        (
            {"type": "conversion", "visitor_id": "v", "timestamp": -(10**14)},
            [
                "timestamp (/timestamp): -100000000000000 is outside the accepted range:"
                " older than webhooks.max_event_age_days (400)"
            ],
        ),
        # An event ID of another type is not passed over for the delivery's (a re-send would
        # then count twice).
        (
            {"type": "conversion", "visitor_id": "v", "event_id": 1.5},
            ["event_id (/event_id): expected a string or an integer, got 1.5"],
        ),
        (
            {"type": "conversion", "visitor_id": "v", "event_id": {"id": "e1"}},
            ["event_id (/event_id): expected a string or an integer, got an object"],
        ),
        (
            {"type": "conversion", "visitor_id": "v", "event_id": False},
            ["event_id (/event_id): expected a string or an integer, got false"],
        ),
        (
            {"type": "conversion", "visitor_id": "v", "event_id": "k" * 257},
            ["event_id (/event_id): the event key"],
        ),
    ],
)
def test_invalid_events_name_every_field(event: dict[str, Any], errors: list[str]) -> None:
    with pytest.raises(Invalid) as info:
        map_event(source(), event, NOW, LIMITS, "f")
    assert len(info.value.errors) == len(errors), info.value.errors
    for found, expected in zip(info.value.errors, errors, strict=True):
        assert found.startswith(expected), found


def test_a_signed_name_pasted_with_a_no_break_space_is_recorded_as_a_landing_records_it() -> None:
    """A campaign named in a CRM or a sheet (``summer sale`` with a no-break space, a zero-width
    space at a break) is recorded as a landing's value is since 2026-12-07: spaces, invisible
    characters gone. It was refused as unprintable (the whole event, a 422). An ID is a token:
    a no-break space in a user ID is still refused."""
    event = {
        "type": "touchpoint",
        "visitor_id": "v",
        "campaign": "summer\u00a0sale",
        "source": "\ufeffnews\u200bletter",
        "medium": "e\u00admail",
    }
    (touch,) = map_event(source(), event, NOW, LIMITS, "f").rows
    assert isinstance(touch, Touchpoint)
    assert (touch.campaign, touch.source, touch.medium) == ("summer sale", "newsletter", "email")
    with pytest.raises(Invalid) as info:
        map_event(source(), {"type": "conversion", "user_id": "u\u00a0x"}, NOW, LIMITS, "f")
    assert [e.partition(":")[0] for e in info.value.errors] == ["user_id (/user_id)"]


def test_segment_page_and_identify_defaults() -> None:
    seg = source(format="segment")
    page = {
        "type": "page",
        "messageId": "m1",
        "anonymousId": "anon-1",
        "properties": {"path": "/pricing"},
        "context": {"campaign": {"name": "launch", "source": "Newsletter", "medium": "email"}},
    }
    mapped = map_event(seg, page, NOW, LIMITS, "f")
    (touch,) = mapped.rows
    assert isinstance(touch, Touchpoint) and mapped.key == "m1"
    assert (touch.source, touch.campaign, touch.landing_path) == ("newsletter", "launch", "/pricing")
    assert touch.visitor_key == KEYS.visitor_key("anon-1")
    assert map_event(seg, {**page, "context": {}}, NOW, LIMITS, "f").rows == []  # a plain page view
    assert map_event(seg, {"type": "track", "event": "Clicked"}, NOW, LIMITS, "f").rows == []
    (binding,) = map_event(
        seg, {"type": "identify", "anonymousId": "anon-1", "userId": "u1"}, NOW, LIMITS, "f"
    ).rows
    assert isinstance(binding, Binding) and binding.origin == "segment"
    assert split_batch(seg, {"batch": [page, page]}) == [page, page]
    assert split_batch(seg, [page]) == [page] and split_batch(seg, page) == [page]


ENV_SOURCES = {**ENV, "S1": "x" * 32, "S2": "whsec_" + base64.b64encode(b"k" * 32).decode()}


def test_sender_secrets_resolve_from_the_environment() -> None:
    toml = "[[sources]]\nname = 'a'\nsecrets = ['env:S1', 'env:S2']\n"
    settings = load_settings(None, text=toml, environ=ENV_SOURCES)
    assert settings.source_secrets == {"a": (b"x" * 32, b"k" * 32)}


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        (
            "[[sources]]\nname = 'a'\nsecrets = ['env:NOPE']\n",
            "sources[0].secrets[0]: environment variable NOPE",
        ),
        ("[[sources]]\nname = 'a'\nsecrets = ['inline']\n", "sources[0].secrets[0]: secrets are never"),
        ("[[sources]]\nname = 'a'\nsecrets = []\n", "sources[0].secrets: needs at least one"),
        (
            "[[sources]]\nsecrets = ['env:S1']\n",
            "sources[0].name: required, not set in this [[sources]] entry",
        ),
        ("[[sources]]\nname = 'A B'\nsecrets = ['env:S1']\n", "sources[0].name: must be"),
        (
            "[[sources]]\nname = 'a'\nsecrets = ['env:S1']\n[[sources]]\nname = 'a'\nsecrets = ['env:S1']\n",
            "sources[1].name: 'a' is used",
        ),
        (
            "[[sources]]\nname = 'a'\nsecrets = ['env:S1']\nfields = {bogus = '/x'}\n",
            "sources[0].fields.bogus: unknown",
        ),
        (
            "[[sources]]\nname = 'a'\nsecrets = ['env:S1']\nfields = {value = 'x'}\n",
            "sources[0].fields.value: a JSON",
        ),
        (
            "[[sources]]\nname = 'a'\nsecrets = ['env:S1']\ntypes = {x = 'sale'}\n",
            "sources[0].types.x: must be",
        ),
        (
            "[[sources]]\nname = 'a'\nsecrets = ['env:S1']\ndefaults = {value = '1'}\n",
            "sources[0].defaults.value",
        ),
        (
            "[[sources]]\nname = 'a'\nsecrets = ['env:S1']\nvalue_scale = 0\n",
            "sources[0].value_scale: must be",
        ),
        (
            "[[sources]]\nname = 'a'\nsecrets = ['env:S1']\nformat = 'xml'\n",
            "sources[0].format: expected one of",
        ),
        ("[[sources]]\nname = 'a'\nsecrets = ['env:S1']\nbogus = 1\n", "sources[0].bogus: unknown key"),
        (  # Chargebee's layout without content = "": every event would be refused
            "[[sources]]\nname = 'a'\nsecrets = ['env:S1']\nfields = {user_id = '/content/customer/id'}\n",
            "sources[0].fields.content: its default pointer /content is where fields.user_id"
            ' (/content/customer/id) begins, so no event has a value there: unmap it (content = "")'
            " or point it elsewhere",
        ),
        (
            "[[sources]]\nname = 'a'\nsecrets = ['env:S1']\n"
            "fields = {user_id = '/customer', creator_id = '/customer/ref'}\n",
            "sources[0].fields.user_id: its pointer /customer is where fields.creator_id (/customer/ref)",
        ),
        (
            "[[sources]]\nname = 'a'\nsecrets = ['env:SHORT']\n",
            "sources[0].secrets[0]: SHORT must hold at least 24",
        ),
        (
            "[[sources]]\nname = 'a'\nsecrets = ['env:BADB64']\n",
            "sources[0].secrets[0]: BADB64 starts with whsec_",
        ),
        (
            "[[sources]]\nname = 'a'\nsecrets = ['env:S1']\ntypes = {paid = 'conversion'}\n"
            "when = [{type = 'payed', pointer = '/first'}]\n",
            "sources[0].when[0].type: 'payed' is not a type this source records"
            " (known: conversion, identify, paid, touchpoint; see types)",
        ),
        (
            "[[sources]]\nname = 'a'\nsecrets = ['env:S1']\nignore_types = ['refund']\n"
            "when = [{type = 'refund', pointer = '/first'}]\n",
            "sources[0].when[0].type: 'refund' is in ignore_types: its events are never recorded",
        ),
        (
            "[[sources]]\nname = 'a'\nsecrets = ['env:S1']\n"
            "when = [{type = 'conversion', pointer = '/a'}, {type = 'conversion', pointer = 'first'}]\n",
            "sources[0].when[1].pointer: a JSON pointer starts with \"/\", got 'first'",
        ),
        (
            "[[sources]]\nname = 'a'\nsecrets = ['env:S1']\n"
            "when = [{type = 'conversion', pointer = '/a', equals = 'x', matches = 'x'}]\n",
            "sources[0].when[0]: set equals or matches, not both",
        ),
        (
            "[[sources]]\nname = 'a'\nsecrets = ['env:S1']\n"
            "when = [{type = 'conversion', pointer = '/a', equals = 'x', absent = true}]\n",
            "sources[0].when[0]: absent = true takes neither equals nor matches",
        ),
        (
            "[[sources]]\nname = 'a'\nsecrets = ['env:S1']\n"
            "when = [{type = 'conversion', pointer = '/a', matches = '(web'}]\n",
            "sources[0].when[0].matches: not a valid regular expression",
        ),
        (
            "[[sources]]\nname = 'a'\nsecrets = ['env:S1']\nwhen = [{type = 'conversion'}]\n",
            "sources[0].when[0].pointer: required, not set in this [[sources.when]] entry",
        ),
        ("[webhooks]\nmax_batch = 0\n", "webhooks.max_batch: must be 1..10000, got 0"),
        (
            "[webhooks]\ntolerance_seconds = 'x'\n",
            'webhooks.tolerance_seconds: expected a whole number, got "x"',
        ),
        ("sources = 1\n", "sources: must be an array of tables"),
    ],
)
def test_source_problems_name_their_key(toml: str, expected: str) -> None:
    env = {**ENV_SOURCES, "SHORT": "short", "BADB64": "whsec_!!!"}
    with pytest.raises(ConfigError) as info:
        load_settings(None, text=toml, environ=env)
    assert any(p.startswith(expected) for p in info.value.problems), info.value.problems


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        # A pointer written with dots, as a platform's docs write one: until 2026-12-07 the
        # problem said only that a pointer starts with "/", as the rules' pointers now do not.
        ("fields = {order_id = 'data.object.id'}",
         "sources[0].fields.order_id: a JSON pointer starts with \"/\" (or \"\" to unmap), got"
         " 'data.object.id': write \"/data/object/id\""),
        ("fields = {order_id = '$.data.items[0].id'}",
         "sources[0].fields.order_id: a JSON pointer starts with \"/\" (or \"\" to unmap), got"
         " '$.data.items[0].id': write \"/data/items/0/id\""),
        ("fields = {order_id = ' /data/id'}",
         "sources[0].fields.order_id: a JSON pointer starts with \"/\" (or \"\" to unmap), got"
         " ' /data/id': write \"/data/id\", without the space before it"),
        ("batch_pointer = 'events'",
         "sources[0].batch_pointer: a JSON pointer starts with \"/\" (or \"\" for none), got"
         " 'events': write \"/events\""),
        ("when = [{type = 'conversion', pointer = 'data.status', equals = 'paid'}]",
         "sources[0].when[0].pointer: a JSON pointer starts with \"/\", got 'data.status':"
         " write \"/data/status\""),
    ],
)  # fmt: skip
def test_a_source_pointer_written_with_dots_is_answered_with_the_pointer(entry: str, expected: str) -> None:
    toml = f"[[sources]]\nname = 'a'\nsecrets = ['env:S1']\n{entry}\n"
    with pytest.raises(ConfigError) as info:
        load_settings(None, text=toml, environ=ENV_SOURCES)
    assert info.value.problems == [expected]


def test_dev_generates_sender_secrets() -> None:
    settings = load_settings(
        None, text="[[sources]]\nname = 'a'\nsecrets = ['env:NOPE']\n", environ={}, dev=True
    )
    assert len(settings.source_secrets["a"][0]) >= 32
    assert "sources[0].secrets[0] (NOPE)" in settings.generated


def test_readme_documents_every_source_option() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for name in SourceOptions.__struct_fields__:
        assert f"`sources.{name}`" in readme, f"sources.{name} missing from README"


def test_the_readmes_shopify_source_maps_a_shopify_order() -> None:
    """The README's Shopify example, as written, loads and turns an ``orders/paid`` webhook's
    order (its type from the topic header) into the conversion it promises."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    [toml] = [b for b in re.findall(r"```toml\n(.*?)```", readme, re.DOTALL) if 'signature = "shopify"' in b]
    settings = load_settings(None, text=toml, environ={**ENV, "SHOPIFY_WEBHOOK_SECRET": "k" * 32})
    [options] = settings.options.sources
    assert settings.source_secrets["shopify"] == (b"k" * 32,)  # as given, never base64-decoded
    order = {
        "id": 820982911946154508,
        "name": "#1001",  # the order's name: not the conversion's (until 2026-12-04 the README's was)
        "created_at": "2026-11-25T06:30:00-05:00",
        "currency": "EUR",
        "total_price": "49.90",
        "customer": {
            "id": 115310627314723954,
            "admin_graphql_api_id": "gid://shopify/Customer/115310627314723954",
        },
    }
    src = compile_source(options)
    (conversion,) = map_event(src, {**order, "type": "orders/paid"}, NOW, LIMITS, "f").rows
    assert isinstance(conversion, Conversion)
    assert (conversion.name, conversion.value, conversion.currency, conversion.order_id, conversion.ts) == (
        "purchase", 49.9, "EUR", "820982911946154508", "2026-11-25T11:30:00.000000Z"
    )  # fmt: skip
    assert conversion.user_key == KEYS.user_key("gid://shopify/Customer/115310627314723954")
    assert map_event(src, {**order, "type": "orders/create"}, NOW, LIMITS, "f").rows == []
    with pytest.raises(Invalid, match="'products/update' is not mapped"):
        map_event(src, {**order, "type": "products/update"}, NOW, LIMITS, "f")


def test_a_conversion_without_a_name_is_named_as_the_readme_says() -> None:
    """The README's hand-signed example (our layout, no ``name``) records a conversion named
    ``conversion``, and its TikTok example's ``CompletePayment`` (no ``name``, no
    ``defaults.name``) one named ``CompletePayment``, the sender's type as sent: the names the
    reports' ``conversion=`` and the dashboard then show. Until 2026-12-07 the README did not
    say where such a name came from; it now does, and this holds it to the code."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "an event without one is named `defaults.name`, else the sender's type as sent" in readme
    [body] = re.findall(r"^body='(\{.*\})'$", readme, re.MULTILINE)
    billing = compile_source(SourceOptions(name="billing", secrets=("env:X",)))
    [conversion] = map_event(billing, json.loads(body), NOW, LIMITS, "d").rows
    assert isinstance(conversion, Conversion) and conversion.name == "conversion"
    [toml] = [b for b in re.findall(r"```toml\n(.*?)```", readme, re.DOTALL) if 'name = "tiktok"' in b]
    env = {**ENV, "TIKTOK_SECRET": "t" * 32, "TIKTOK_SECRET_PREVIOUS": "p" * 32}
    [options] = load_settings(None, text=toml, environ=env).options.sources
    payment = {
        "event": "CompletePayment",
        "event_id": "tt2",
        "user": {"external_id": "u1"},
        "creator": {"id": "cr_9"},
        "timestamp": "2026-11-25T11:00:00Z",
        "properties": {"value": 19.9, "currency": "EUR", "order_id": "tt-o1"},
    }
    rows = map_event(compile_source(options), payment, NOW, LIMITS, "d").rows
    [conversion] = [row for row in rows if isinstance(row, Conversion)]
    assert conversion.name == "CompletePayment"
    named = msgspec.structs.replace(options, defaults={**options.defaults, "name": "purchase"})
    rows = map_event(compile_source(named), payment, NOW, LIMITS, "d").rows
    assert [row.name for row in rows if isinstance(row, Conversion)] == ["purchase"]


def test_the_readmes_body_hmac_source_maps_a_lemon_squeezy_order() -> None:
    """The README's ``signature = "hmac"`` example, as written, loads and maps an order."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    [toml] = [b for b in re.findall(r"```toml\n(.*?)```", readme, re.DOTALL) if 'name = "lemonsqueezy"' in b]
    settings = load_settings(None, text=toml, environ={**ENV, "LEMONSQUEEZY_SIGNING_SECRET": "k" * 32})
    [options] = settings.options.sources
    assert options.hmac is not None and options.hmac.header == "X-Signature"
    assert settings.source_secrets["lemonsqueezy"] == (b"k" * 32,)
    order = {
        "meta": {"event_name": "order_created", "custom_data": {"user_id": "42"}},
        "data": {
            "type": "orders",
            "id": "1",
            "attributes": {"currency": "USD", "total": 999, "created_at": "2026-11-25T11:30:00.000000Z"},
        },
    }
    src = compile_source(options)
    (conversion,) = map_event(src, order, NOW, LIMITS, "f").rows
    assert isinstance(conversion, Conversion)
    assert (conversion.name, conversion.value, conversion.currency, conversion.order_id, conversion.ts) == (
        "purchase", 9.99, "USD", "1", "2026-11-25T11:30:00.000000Z"
    )  # fmt: skip
    assert conversion.user_key == KEYS.user_key("42")
    refund = {**order, "meta": {**order["meta"], "event_name": "order_refunded"}}
    assert map_event(src, refund, NOW, LIMITS, "f").rows == []


def test_the_readmes_paddle_source_and_its_checkout_only_variant() -> None:
    """The README's Paddle example maps a ``transaction.completed`` in Paddle's layout
    (amounts as text in the lowest denomination, ``occurred_at`` to the microsecond); the
    variant it describes (the type from ``/data/origin``) records the checkout and leaves the
    renewal out."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    [toml] = [b for b in re.findall(r"```toml\n(.*?)```", readme, re.DOTALL) if 'signature = "paddle"' in b]
    secret = "pdl_ntfset_01gkpjp8bkm3tm53kdgkx6sms7_" + "k" * 32
    settings = load_settings(None, text=toml, environ={**ENV, "PADDLE_WEBHOOK_SECRET": secret})
    [options] = settings.options.sources
    assert settings.source_secrets["paddle"] == (secret.encode(),)  # as given
    event = {
        "event_id": "evt_1",
        "event_type": "transaction.completed",
        "occurred_at": "2026-11-25T11:30:00.621022Z",
        "data": {
            "id": "txn_1",
            "origin": "web",
            "currency_code": "JPY",
            "custom_data": {"user_id": "42"},
            "details": {"totals": {"total": "5000"}},
        },
    }
    (conversion,) = map_event(compile_source(options), event, NOW, LIMITS, "f").rows
    assert isinstance(conversion, Conversion)
    assert (conversion.value, conversion.currency, conversion.order_id, conversion.ts) == (
        5000, "JPY", "txn_1", "2026-11-25T11:30:00.621022Z"
    )  # fmt: skip
    assert conversion.user_key == KEYS.user_key("42")
    # The README's checkout-only variant, word for word: a renewal is answered ignored.
    [when] = re.findall(r"`(when = \[\{type = \"transaction.completed\".*?\])`", readme, re.DOTALL)
    [checkout] = tomllib.loads(when)["when"]

    def with_when(condition: dict[str, Any]) -> Any:
        conditions = msgspec.convert([condition], tuple[EventCondition, ...])
        return compile_source(msgspec.structs.replace(options, when=conditions))

    variant = with_when(checkout)
    assert len(map_event(variant, event, NOW, LIMITS, "f").rows) == 1
    renewal = {**event, "data": {**event["data"], "origin": "subscription_recurring"}}
    ignored = map_event(variant, renewal, NOW, LIMITS, "f")
    assert (ignored.kind, ignored.rows) == ("ignored", [])
    assert ignored.ignored == (
        "type 'transaction.completed' whose /data/origin ('subscription_recurring') is not 'web'"
        " (sources.when): not recorded"
    )
    # ... and `matches = "web|api"` for a site that opens checkouts of transactions it created.
    assert '`matches = "web|api"`' in readme
    both = with_when({**{k: v for k, v in checkout.items() if k != "equals"}, "matches": "web|api"})
    for origin, kept in (("web", 1), ("api", 1), ("subscription_recurring", 0)):
        got = map_event(both, {**event, "data": {**event["data"], "origin": origin}}, NOW, LIMITS, "f")
        assert len(got.rows) == kept, origin


def _basic(login: bytes) -> str:
    return "Basic " + base64.b64encode(login).decode()


@pytest.mark.parametrize(
    ("secret", "header", "passes"),
    [
        (b"chargebee:" + b"p" * 24, _basic(b"chargebee:" + b"p" * 24), True),
        (b"chargebee:" + b"p" * 24, "basic  " + base64.b64encode(b"chargebee:" + b"p" * 24).decode(), True),
        (b"chargebee:" + b"p" * 24, _basic(b"other:" + b"p" * 24), False),  # the user name counts
        (b"chargebee:" + b"p" * 24, _basic(b"chargebee:" + b"q" * 24), False),
        (b"chargebee:" + b"p" * 24, _basic(b"chargebee"), False),  # no password at all
        (b"p" * 24, _basic(b"anyone:" + b"p" * 24), True),  # a password alone: any user name
        (b"p" * 24, _basic(b"p" * 24), False),  # no colon: a user name, not a password
        (b"u:pa:ss" + b"s" * 20, _basic(b"u:pa:ss" + b"s" * 20), True),  # colons in the password
        (b"chargebee:" + b"p" * 24, "Bearer " + "p" * 24, False),
        (b"chargebee:" + b"p" * 24, "Basic !!!", False),
        (b"chargebee:" + b"p" * 24, "Basic \udcff", False),
        (b"chargebee:" + b"p" * 24, "", False),
    ],
)
def test_a_senders_basic_login(secret: bytes, header: str, passes: bool) -> None:
    """``signature = "basic"`` (Chargebee): the login is the secret, ``user:password`` or a
    password alone; anything else is a 401 that names no part of it."""
    body = b'{"id": "ev_1"}'
    if passes:
        auth = verify_basic_login({"cb": [b"old:" + b"o" * 24, secret]}, header, body)
        assert (auth.sender, auth.delivery) == ("cb", "sha256:" + hashlib.sha256(body).hexdigest())
    else:
        with pytest.raises(AuthFailed, match=r"^signature: missing or wrong user name and password"):
            verify_basic_login({"cb": [secret]}, header, body)


def test_a_stamped_senders_signature_is_stripes_layout_in_its_own_header() -> None:
    """``hmac.stamped``: ``t=…,v1=<hex HMAC of "t.body">`` in the sender's header; the time is
    checked once the signature matched (a stale one is ``timestamp``); a sender sharing the
    header that signs the body alone is still tried."""
    body, key = b'{"event": "invitee.created"}', b"c" * 43
    calendly = BodyHmac("hex", "", "", dataclasses.replace(STRIPE, header="Calendly-Webhook-Signature"))
    senders = {"calendly": (calendly, [b"old" * 10, key]), "plain": (BodyHmac("hex", "", ""), [b"p" * 32])}
    layout = dataclasses.replace(STRIPE, header="Calendly-Webhook-Signature")
    given = stamped_signature(layout, key, "1000", body)
    auth = verify_body_hmac(senders, given, body, {}, 1100, 300)
    assert (auth.sender, auth.delivery) == ("calendly", "sha256:" + hashlib.sha256(body).hexdigest())
    with pytest.raises(AuthFailed, match=r"^timestamp"):
        verify_body_hmac(senders, given, body, {}, 2000, 300)
    for wrong in (
        given.replace("t=1000", "t=1001"),
        given.split(",")[1],
        hmac.new(key, body, "sha256").hexdigest(),
    ):
        with pytest.raises(AuthFailed, match=r"^signature: no valid signature"):
            verify_body_hmac(senders, wrong, body, {}, 1000, 300)
    plain = hmac.new(b"p" * 32, body, "sha256").hexdigest()
    assert verify_body_hmac(senders, plain, body, {}, 1000, 300).sender == "plain"


def test_a_platform_senders_test_event_holds_only_what_its_fields_map() -> None:
    """``send-test-event`` for a platform sender (the README's Paddle example) builds what
    Paddle would send: no ``creator_id`` nor ``name`` at our default pointers, which no Paddle
    event has (they made the gateway say the fields were read from their defaults), its mapped
    fields where its config says; our own layout keeps every field."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    [toml] = [b for b in re.findall(r"```toml\n(.*?)```", readme, re.DOTALL) if 'signature = "paddle"' in b]
    settings = load_settings(None, text=toml, environ={**ENV, "PADDLE_WEBHOOK_SECRET": "k" * 32})
    src = compile_source(settings.options.sources[0])
    doc = sample_payload(src, "cr_1", 26.4, "USD", "paddle")
    assert set(doc) == {"event_type", "event_id", "occurred_at", "data"}, doc
    assert doc["data"]["custom_data"] == {"user_id": "test-user-cr_1"}
    assert doc["data"]["details"]["totals"]["total"] == "2640"  # a string, as Paddle writes it
    mapped = map_event(src, doc, datetime.now(UTC), LIMITS, "d")
    assert (mapped.defaulted, mapped.unmatched) == ((), ())
    [conversion] = mapped.rows
    assert isinstance(conversion, Conversion) and conversion.name == "purchase"
    own = compile_source(SourceOptions(name="billing", secrets=("env:X",)))
    assert {"creator_id", "name", "user_id", "value"} <= set(sample_payload(own, "cr_1", 5, "EUR"))


def test_a_touchpoint_without_attribution_names_where_each_field_is_read() -> None:
    """ "touchpoint: needs at least one of source, medium, campaign, creator_id, click_id" named
    our fields, not where in the sender's event they are read: the sender's engineer, who
    writes ``utm.src``, could not tell where to put them. Each is named with its pointer, and
    one the source unmaps (which no event can fill) is left out."""
    opts = SourceOptions(
        name="clicks",
        secrets=("env:X",),
        fields={"source": "/utm/src", "medium": "/utm/med", "click_id": ""},
    )
    with pytest.raises(Invalid) as info:
        map_event(compile_source(opts), {"type": "touchpoint", "visitor_id": "v"}, NOW, LIMITS, "d")
    assert info.value.errors == [
        "touchpoint: needs at least one of source (/utm/src), medium (/utm/med), campaign"
        " (/campaign), creator_id (/creator_id)"
    ]


@pytest.mark.parametrize(
    ("signature", "value", "currency", "amount", "written"),
    [
        ("shopify", 26.4, "USD", "26.40", "USD"),  # total_price, a string in major units
        ("shopify", 5000, "JPY", "5000", "JPY"),
        ("stripe", 26.4, "USD", 2640, "usd"),  # amount_total in cents; the currency in lower case
    ],
)
def test_a_platform_senders_test_event_writes_values_as_the_platform_does(
    signature: str, value: float, currency: str, amount: object, written: str
) -> None:
    """A Shopify order's ``total_price`` is a string (``"26.40"``) and a Stripe session's
    ``currency`` lower case (``"usd"``): a test event with a number and ``USD`` passed where the
    platform's own events take another path through the mapping. The README's examples."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    [toml] = [
        b for b in re.findall(r"```toml\n(.*?)```", readme, re.DOTALL) if f'signature = "{signature}"' in b
    ][:1]
    env = {**ENV, "SHOPIFY_WEBHOOK_SECRET": "k" * 32, "STRIPE_WEBHOOK_SECRET": "whsec_" + "k" * 32}
    settings = load_settings(None, text=toml, environ=env)
    src = compile_source(settings.options.sources[0])
    doc = sample_payload(src, "cr_1", value, currency, signature)
    values = {src.pointers[name]: name for name in ("value", "currency")}
    found = {name: _at(doc, pointer) for pointer, name in values.items()}
    assert found == {"value": amount, "currency": written}, doc
    *_, conversion = map_event(src, doc, datetime.now(UTC), LIMITS, "d").rows
    assert isinstance(conversion, Conversion) and conversion.currency == currency
    assert conversion.value == value


def _at(doc: Any, pointer: tuple[str, ...]) -> Any:
    for token in pointer:
        doc = doc[token]
    return doc


def test_a_test_event_of_a_sender_without_a_currency_is_scaled_for_its_default_one() -> None:
    """``send-test-event --value 50`` (its ``--currency`` EUR by default) to a sender whose
    events carry amounts in minor units and no currency (``defaults.currency = "JPY"``) sent
    5000, recorded as ¥5000: the value is now scaled for the currency it is recorded in."""
    src = source(
        fields={"value": "/amount", "currency": ""}, value_scale="minor", defaults={"currency": "jpy"}
    )
    payload = sample_payload(src, "cr_1", 50, "EUR")
    assert payload["amount"] == 50 and "currency" not in payload
    *_, conversion = map_event(src, payload, datetime.now(UTC), LIMITS, "f").rows
    assert isinstance(conversion, Conversion) and (conversion.value, conversion.currency) == (50, "JPY")


NO_STANDARD_SOURCE = (
    "add one, like\n"
    "\n"
    "    [[sources]]\n"
    '    name = "test"\n'
    '    secrets = ["env:TEST_SENDER_SECRET"]\n'
    "\n"
    "with TEST_SENDER_SECRET set, here and where the gateway runs, to at least 24 bytes"
    " (openssl rand -base64 32); then restart the gateway (a reload keeps the [[sources]] it"
    " started with) and run this again\n"
)


@pytest.mark.parametrize(
    ("sources", "sender", "said"),
    [
        ("", None,
         "gateway send-test-event: no standard-format [[sources]] in {config}: " + NO_STANDARD_SOURCE),
        ('[[sources]]\nname = "seg"\nformat = "segment"\nsecrets = ["env:S1"]\n', None,
         "gateway send-test-event: no standard-format [[sources]] in {config} (seg is format = \"segment\","
         " whose calls this does not send): " + NO_STANDARD_SOURCE),
        ('[[sources]]\nname = "a"\nsecrets = ["env:S1"]\n[[sources]]\nname = "b"\nsecrets = ["env:S1"]\n',
         "c",
         "gateway send-test-event: --sender c: no [[sources]] of that name in {config}; give one of: a, b\n"),
        ('[[sources]]\nname = "a"\nsecrets = ["env:S1"]\n[[sources]]\nname = "seg"\nformat = "segment"\n'
         'secrets = ["env:S1"]\n', "seg",
         "gateway send-test-event: --sender seg: its format is \"segment\", whose calls this does not send;"
         " give one of: a\n"),
    ],
)  # fmt: skip
def test_send_test_event_without_its_sender_says_what_to_do(
    sources: str, sender: str | None, said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With no standard-format sender, ``send-test-event`` said only ``no standard-format
    [[sources]] in gateway.toml``: not what to write, nor, for ``--sender`` naming none, which
    names there are."""
    config = tmp_path / "gateway.toml"
    config.write_text(f'[storage]\npath = "{tmp_path / "gw.db"}"\n{sources}')
    argv = ["send-test-event", "--url", "http://127.0.0.1:9/_gw/events", "-c", str(config)]
    args = build_parser().parse_args(argv + (["--sender", sender] if sender else []))
    with pytest.MonkeyPatch.context() as env:
        for name, value in ENV_SOURCES.items():
            env.setenv(name, value)
        assert cmd_send_test_event(args) == 2
    done = capsys.readouterr()
    assert done.err == said.format(config=config) and not done.out, done


def test_a_test_value_finer_than_the_default_currency_of_its_sender_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``send-test-event --value 12.5`` (checked against EUR, its ``--currency`` by default) to a
    sender recording ``defaults.currency = "jpy"`` was sent, though 12.5 yen cannot be: exit 2,
    naming the currency and where it comes from, before anything is sent."""
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[storage]\npath = "{tmp_path / "gw.db"}"\n[[sources]]\nname = "shop"\nsignature = "stripe"\n'
        'secrets = ["env:SHOP_SECRET"]\ndefaults = {currency = "jpy"}\nvalue_scale = "minor"\n'
        'fields = {value = "/amount"}\n'
    )
    args = build_parser().parse_args(
        ["send-test-event", "--value", "12.5", "--url", "http://127.0.0.1:9/_gw/events", "-c", str(config)]
    )
    with pytest.MonkeyPatch.context() as env:
        for name, value in {**ENV, "SHOP_SECRET": "whsec_" + "s" * 32}.items():
            env.setenv(name, value)
        assert cmd_send_test_event(args) == 2
    said = capsys.readouterr()
    assert (
        said.err
        == (
            "gateway send-test-event: --value 12.5: JPY (sources[0].defaults.currency, what shop records)"
            " has no minor unit: give a whole number\n"
        )
        and not said.out
    ), said
