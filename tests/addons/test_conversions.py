"""Conversion rules on a plain Exchange: values, currencies, order IDs, dedup keys, validation."""

from __future__ import annotations

from datetime import timedelta

import pytest

from addons.conversions import Conversions
from addons.identity import Identity, cookie_value
from addons.stitching import Stitching
from gateway.config import ConfigError
from gateway.events import Conversion
from gateway.pipeline import Context, Exchange, ResponseView
from tests.addons.conftest import FIXED_TS, configured, context, exchange, metric

FORM = "application/x-www-form-urlencoded"


def rule(fields: str, *, name: str = "purchase", path: str = "/checkout", status: str = "[303]") -> str:
    return f"""
        [[conversions]]
        name = "{name}"
        path = "{path}"
        status = {status}
        {fields}
    """


def run(
    ctx: Context,
    ex: Exchange,
    status: int = 303,
    *,
    headers: dict[str, str] | None = None,
    request_body: bytes | None = None,
    response_body: bytes | None = None,
    addon: Conversions | None = None,
) -> Conversion | None:
    configured(Identity, ctx=ctx).request(ex)
    conversions = addon or configured(Conversions, ctx=ctx)
    conversions.request(ex)
    if ex.want_request_body:
        ex.request_body = request_body
    if ex.want_response_body:
        ex.response_body = response_body
    ex.response = ResponseView(status, headers or {})
    conversions.response(ex)
    found = [e for e in ex.events if isinstance(e, Conversion)]
    assert len(found) <= 1
    return found[0] if found else None


def checkout(target: str = "/checkout", **kw: object) -> Exchange:
    return exchange(target, method="POST", headers={"content-type": FORM}, **kw)  # type: ignore[arg-type]


def test_location_query_value_and_order_id() -> None:
    ctx = context(
        rule(
            'value = { location_query = "total" }\ncurrency = "EUR"\norder_id = { location_query = "order" }'
        )
    )
    ex = checkout()
    c = run(ctx, ex, headers={"location": "/thank-you?order=A17&total=49.90"})
    assert c is not None and ex.visitor is not None
    assert (c.name, c.rule, c.value, c.currency, c.order_id) == ("purchase", "purchase", 49.9, "EUR", "A17")
    assert c.dedup_key == "order:A17" and c.visitor_key == ex.visitor.key and c.user_key is None
    assert c.origin == "rule" and c.ts == "2026-11-25T12:00:00.000000Z"
    assert ex.want_request_body == 0 and ex.want_response_body == 0  # Location needs no body
    # Counted by the store once written (tests/storage/test_local.py), not when the rule fires.
    assert metric(ctx, "gateway_conversions_total", {"rule": "purchase"}) == 0


def test_an_order_scope_keeps_one_shops_order_ids_apart_from_anothers() -> None:
    """Order IDs were one namespace for every rule, sender and node: two shops numbering their
    orders from 1 recorded the second shop's order 727 as a duplicate of the first's (also in
    the central store). A rule given an order_scope keys its orders in that scope only."""
    scoped = context(rule('order_id = { location_query = "order" }\norder_scope = "shop-eu"'))
    c = run(scoped, checkout(), headers={"location": "/done?order=727"})
    assert c is not None and (c.order_id, c.dedup_key) == ("727", "order/shop-eu:727")
    plain = context(rule('order_id = { location_query = "order" }'))
    c = run(plain, checkout(), headers={"location": "/done?order=727"})
    assert c is not None and c.dedup_key == "order:727"
    for scope in ("Shop", "eu:1", "-x", "x" * 65):
        with pytest.raises(ConfigError) as err:
            context(rule(f'order_id = {{ location_query = "o" }}\norder_scope = "{scope}"'))
        assert err.value.problems == [
            "conversions[0].order_scope: must be 1-64 of a-z 0-9 _ . - (not starting with _ . -)"
            f" or empty, got {scope!r}"
        ]
    # A scope without an order ID would scope nothing: said, not ignored.
    with pytest.raises(ConfigError) as err:
        context(rule('order_scope = "shop-eu"'))
    assert err.value.problems == ["conversions[0].order_scope: applies to an order_id; this rule reads none"]


def test_absolute_location_and_fixed_value() -> None:
    ctx = context(rule('value = 25\norder_id = { location_query = "o" }', status="[302, 303]"))
    c = run(ctx, checkout(), 302, headers={"location": "https://shop.example/done?o=Z%2F9"})
    assert c is not None and (c.value, c.currency, c.order_id) == (25.0, None, "Z/9")


def test_values_from_form_json_and_header() -> None:
    ctx = context(
        rule(
            'value = { form = "amount" }\ncurrency = { form = "cur" }\norder_id = { header = "X-Order" }',
            status="[200]",
        )
    )
    ex = checkout()
    c = run(ctx, ex, 200, headers={"x-order": "42"}, request_body=b"amount=12.5&cur=usd&card_number=4111")
    assert c is not None and (c.value, c.currency, c.order_id) == (12.5, "USD", "42")
    ctx = context(
        rule('value = { response_json = "/order/total" }\norder_id = { response_json = "/order/id" }')
    )
    ex = checkout()
    c = run(ctx, ex, response_body=b'{"order": {"id": 7, "total": 99}}')
    assert c is not None and (c.value, c.order_id, c.dedup_key) == (99.0, "7", "order:7")


@pytest.mark.parametrize(
    ("location", "value", "currency", "reasons"),
    [
        ("/t?total=-5&cur=EUR", None, "EUR", ["value_invalid"]),
        ("/t?total=nan&cur=EUR", None, "EUR", ["value_invalid"]),
        ("/t?total=1e999&cur=EUR", None, "EUR", ["value_invalid"]),
        ("/t?total=abc&cur=EURO", None, None, ["value_invalid", "currency_invalid"]),
        ("/t?cur=EUR", None, "EUR", ["value_missing"]),
        ("/t?total=3", 3.0, None, ["currency_missing"]),
    ],
)
def test_bad_values_recorded_without_them_and_counted(
    location: str, value: float | None, currency: str | None, reasons: list[str]
) -> None:
    ctx = context(rule('value = { location_query = "total" }\ncurrency = { location_query = "cur" }'))
    c = run(ctx, checkout(), headers={"location": location})
    assert c is not None and (c.value, c.currency) == (value, currency)
    for reason in reasons:
        labels = {"rule": "purchase", "reason": reason}
        assert metric(ctx, "gateway_extraction_failures_total", labels) == 1, reason


@pytest.mark.parametrize(
    ("total", "separator", "value"),
    [("€12.50", ".", 12.5), ("$1,299.00", ".", 1299.0), ("12,50 €", ",", 12.5), ("12.50 EUR", ".", 12.5)],
)
def test_an_amount_written_with_its_currency_is_read_through_a_capture(
    total: str, separator: str, value: float
) -> None:
    """As the README says: a sign or code with the amount is no number (counted), and a capture
    of the digits keeps the amount."""
    body = ('{"total": "' + total + '"}').encode()
    plain = context(rule(f'value = {{ response_json = "/total" }}\ndecimal_separator = "{separator}"'))
    c = run(plain, checkout(), response_body=body)
    assert c is not None and c.value is None
    labels = {"rule": "purchase", "reason": "value_invalid"}
    assert metric(plain, "gateway_extraction_failures_total", labels) == 1
    captured = context(
        rule(
            f'value = {{ response_json = "/total", capture = "([0-9][0-9.,]*)" }}\n'
            f'decimal_separator = "{separator}"'
        )
    )
    c = run(captured, checkout(), response_body=body)
    assert c is not None and c.value == value


@pytest.mark.parametrize("read", ["727.5", '{"id": 727}', "[727]", "true"])
def test_order_id_or_currency_of_no_text_is_counted_invalid(read: str) -> None:
    # A JSON order number written as a fraction, an object, a list or a boolean has no text:
    # the order is then deduplicated by window, not by order, so a webhook for it counts again.
    # Until 2026-12-05 it was left out without a count, where an empty one counted.
    ctx = context(
        rule(
            'value = 1\norder_id = { response_json = "/order" }\ncurrency = { response_json = "/cur" }',
            status="[200]",
        )
    )
    c = run(ctx, checkout(), 200, response_body=f'{{"order": {read}, "cur": {read}}}'.encode())
    assert c is not None and (c.order_id, c.currency) == (None, None)
    assert c.dedup_key.startswith("window:")
    for reason in ("order_id_invalid", "currency_invalid"):
        labels = {"rule": "purchase", "reason": reason}
        assert metric(ctx, "gateway_extraction_failures_total", labels) == 1, reason


def test_without_order_id_dedup_by_visitor_rule_and_window() -> None:
    ctx = context(rule('order_id = { location_query = "order" }\ndedup_window = 600'))
    addon = configured(Conversions, ctx=ctx)
    cookie = {"gw_vid": cookie_value(ctx.keys.cookie_mac, "A" * 22)}  # one returning visitor
    first = run(ctx, checkout(cookies=cookie), headers={"location": "/thanks"}, addon=addon)
    assert first is not None and first.order_id is None
    assert (
        first.dedup_key
        == f"window:purchase:{ctx.keys.visitor_key('A' * 22)}:{int(FIXED_TS.timestamp()) // 600}"
    )
    again = checkout(cookies=cookie)  # a double submit 30 s later: the same key, the store keeps one
    again.request.ts = FIXED_TS + timedelta(seconds=30)
    second = run(ctx, again, headers={"location": "/thanks"}, addon=addon)
    assert second is not None and second.dedup_key == first.dedup_key and second.id != first.id
    later = checkout(cookies=cookie)  # the next window
    later.request.ts = FIXED_TS + timedelta(seconds=600)
    third = run(ctx, later, headers={"location": "/thanks"}, addon=addon)
    assert third is not None and third.dedup_key != first.dedup_key
    other_visitor = run(ctx, checkout(), headers={"location": "/thanks"}, addon=addon)
    assert other_visitor is not None and other_visitor.dedup_key != first.dedup_key


def test_user_key_carried_when_stitching_bound_in_the_same_exchange() -> None:
    toml = (
        rule('value = 1\norder_id = { location_query = "o" }', path="/signup")
        + """
        [[identity.rules]]
        name = "signup"
        path = "/signup"
        status = [303]
        user_id = { form = "email" }
    """
    )
    ctx = context(toml)
    ex = exchange("/signup", method="POST", headers={"content-type": FORM})
    configured(Identity, ctx=ctx).request(ex)
    stitching, conversions = configured(Stitching, ctx=ctx), configured(Conversions, ctx=ctx)
    stitching.request(ex)
    conversions.request(ex)
    ex.request_body = b"email=ada%40example.com&password=x"
    ex.response = ResponseView(303, {"location": "/welcome?o=S1"})
    stitching.response(ex)
    conversions.response(ex)
    (c,) = [e for e in ex.events if isinstance(e, Conversion)]
    assert c.user_key == ctx.keys.user_key("ada@example.com")


def test_other_status_or_path_records_nothing() -> None:
    ctx = context(rule("value = 1"))
    assert run(ctx, checkout(), 200) is None
    assert run(ctx, checkout("/checkout/x")) is None


def test_no_rules_means_disabled() -> None:
    assert configured(Conversions).enabled is False


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ("value = -1", "conversions[0].value: must be a number from 0 to 1e+15, got -1.0"),
        ("value = inf", "conversions[0].value: must be a number from 0 to 1e+15"),
        ("value = nan", "conversions[0].value: must be a number from 0 to 1e+15"),
        ("value = 1e16", "conversions[0].value: must be a number from 0 to 1e+15, got 1e+16"),
        # It said "must be a 3-letter ISO 4217 code like "EUR"", when the code was right, but for its case.
        (
            'currency = "eur"',
            "conversions[0].currency: written in capitals, as a currency read from the"
            ' request is recorded: write "EUR"',
        ),
        (
            'currency = "Usd"',
            "conversions[0].currency: written in capitals, as a currency read from the"
            ' request is recorded: write "USD"',
        ),
        (
            'currency = "EURO"',
            "conversions[0].currency: must be a 3-letter ISO 4217 code like \"EUR\", got 'EURO'",
        ),
        ('value = { form = "card_total" }', "conversions[0].value.form: 'card_total' may hold a credential"),
        ('order_id = { form = "o", header = "h" }', "conversions[0].order_id: set exactly one of"),
        ("dedup_window = 0", "conversions[0].dedup_window: must be 1..86400 seconds, got 0"),
        ('value = "ten"', "conversions[0].value: expected"),
        ("max_body = 0", "conversions[0].max_body: must be 1..16777216"),
        # It said "not an HTTP method: 'post'", when the method was right, but for its case.
        ('method = "post"', 'conversions[0].method: written in capitals, as requests send it: "POST"'),
        ('method = "GET POST"', "conversions[0].method: not an HTTP method: 'GET POST'"),
    ],
)
def test_config_rejects(fields: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        context(rule(fields))
    assert any(expected in p for p in info.value.problems), info.value.problems


def test_config_requires_the_addon_and_names_missing_keys() -> None:
    with pytest.raises(ConfigError) as info:
        context(rule("value = 1") + "[proxy]\naddons = ['identity']\n")
    assert 'conversions: rules are configured but "conversions" is not in proxy.addons' in info.value.problems
    with pytest.raises(ConfigError) as info:
        context('[[conversions]]\nname = "x"\npath = "/"\n')
    assert any(p.startswith("conversions[0].status: required") for p in info.value.problems)


def test_config_needs_stitching_before_conversions_when_both_have_rules() -> None:
    """The pipeline runs in ``proxy.addons`` order: a conversion on the request a sign-in bound
    a user on carries that user only when ``stitching`` ran first. Listed the other way round it
    was accepted, and every such conversion silently lost its user."""
    identity = """
        [[identity.rules]]
        name = "signup"
        path = "/signup"
        status = [303]
        user_id = { form = "email" }
    """
    reversed_order = "[proxy]\naddons = ['identity', 'campaign', 'conversions', 'stitching']\n"
    with pytest.raises(ConfigError) as info:
        context(rule("value = 1", path="/signup") + identity + reversed_order)
    assert info.value.problems == [
        'proxy.addons: "conversions" needs "stitching" before it (a conversion on the request of a'
        " sign-in carries the user it bound)"
    ]
    context(rule("value = 1", path="/signup") + reversed_order)  # no identity rules: nothing to carry
    context(rule("value = 1", path="/signup") + identity)  # the default order


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("201", "conversions[0].status: expected an array, got 201; write it in brackets: [201]"),
        ('"302"', 'conversions[0].status: expected an array, got "302"; write it in brackets: [302]'),
    ],
)
def test_a_single_status_written_alone_is_refused_saying_how_to_write_it(status: str, expected: str) -> None:
    """``status = 201`` (one success status, as a site has) said "expected an array, got 201",
    and left the operator to guess the brackets."""
    with pytest.raises(ConfigError) as info:
        context(rule("value = 1", status=status))
    assert info.value.problems == [expected]
