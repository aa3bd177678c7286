"""A fired rule that cannot read its value says so in the log as well as the metric: a real
gateway in front of a real aiohttp site whose answers hold the value elsewhere than the rule
says, or one it cannot use. The site's answer reaches the visitor byte for byte, whatever the
rule made of it (promises 2 and 3)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import GatewayFactory, RunningGateway
from tests.gateway.test_rules_stacks import bound, failures, rows, visit


class Site:
    """A JSON sign-in that answers the user where the site's version puts it, and an order
    confirmation whose amount is what the order says."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.app.router.add_post("/api/login", self.login)
        self.app.router.add_post("/api/orders", self.order)
        self.app.router.add_get("/{tail:.*}", self.page)

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(text="<html>page</html>", content_type="text/html")

    async def login(self, request: web.Request) -> web.Response:
        data = await request.json()
        if data.get("v2"):  # the app moved the user to the top level: the rule's pointer misses it
            return web.json_response({"id": data["uid"]})
        return web.json_response({"user": {"id": data["uid"]}})

    async def order(self, request: web.Request) -> web.Response:
        data = await request.json()
        body = {"order": {"id": data["order"], "total": data["total"], "currency": "EUR"}}
        return web.json_response(body, status=201)


RULES = """
[[identity.rules]]
name = "api-login"
path = "/api/login"
status = [200]
user_id = { response_json = "/user/id" }

[[conversions]]
name = "purchase-api"
path = "/api/orders"
status = [201]
value = { response_json = "/order/total" }
currency = { response_json = "/order/currency" }
order_id = { response_json = "/order/id" }
"""


async def answer(gw: RunningGateway, path: str, cookie: dict[str, str], body: Any) -> tuple[int, Any]:
    async with gw.session.post(gw.url + path, json=body, headers=cookie) as resp:
        return resp.status, json.loads(await resp.read())


def said(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "gateway.rules"]


async def test_a_value_a_fired_rule_cannot_read_is_logged_and_counted_and_the_page_served(
    start_gateway: GatewayFactory, upstream_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Until 2026-12-08 only ``gateway_extraction_failures_total`` said it: a rule whose value
    the site moved (an app's new version) bound no one and recorded no value, and the log, where
    an operator looks first, said nothing. Now one line per rule and reason (at most one a
    minute, with how many were held back): a warning where the rule does not fit the site's
    answer, info where the visitor's own input is what cannot be used."""
    caplog.set_level(logging.INFO)
    gw = await start_gateway(await upstream_server(Site().app), RULES)
    cookie = await visit(gw)
    assert await answer(gw, "/api/login", cookie, {"uid": "ada"}) == (200, {"user": {"id": "ada"}})
    assert said(caplog) == []  # a rule that reads its value says nothing
    for _ in range(3):  # the site's answers, as they were, whatever the rule made of them
        assert await answer(gw, "/api/login", cookie, {"uid": "bob", "v2": True}) == (200, {"id": "bob"})
    assert await answer(gw, "/api/login", cookie, {"uid": "undefined"}) == (
        200,
        {"user": {"id": "undefined"}},
    )
    placed = {"id": "A17", "total": "49,90 EUR", "currency": "EUR"}
    order = {"order": "A17", "total": "49,90 EUR"}
    assert await answer(gw, "/api/orders", cookie, order) == (201, {"order": placed})
    assert len(await bound(gw)) == 1
    assert await rows(gw, "SELECT order_id, value, currency FROM conversions") == [("A17", None, "EUR")]
    assert sorted(await failures(gw)) == [
        'gateway_extraction_failures_total{reason="missing",rule="api-login"} 3.0',
        'gateway_extraction_failures_total{reason="placeholder_user_id",rule="api-login"} 1.0',
        'gateway_extraction_failures_total{reason="value_invalid",rule="purchase-api"} 1.0',
    ]
    assert said(caplog) == [
        (
            "WARNING",
            "identity rule 'api-login' fired on POST /api/login (200) and could not read its user ID:"
            ' missing; nothing bound (gateway_extraction_failures_total{rule="api-login",reason="missing"};'
            " gateway rules try on a recording of it says what the rule read)",
        ),
        (
            "INFO",
            "identity rule 'api-login' fired on POST /api/login (200) and could not read its user ID:"
            " placeholder_user_id; nothing bound"
            ' (gateway_extraction_failures_total{rule="api-login",reason="placeholder_user_id"};'
            " gateway rules try on a recording of it says what the rule read)",
        ),
        (
            "WARNING",
            "conversion rule 'purchase-api' fired on POST /api/orders (201) and could not read its"
            " value: value_invalid; the conversion is recorded without it"
            ' (gateway_extraction_failures_total{rule="purchase-api",reason="value_invalid"};'
            " gateway rules try on a recording of it says what the rule read)",
        ),
    ]
    for record in caplog.records:  # nothing the visitor sent or the site answered is logged
        assert "bob" not in record.getMessage() and "49,90" not in record.getMessage()
