"""What a page's JavaScript sends when it has no value: ``String(undefined)``, ``null`` put in
a template, ``[object Object]``, Python's ``None``. Read as a user ID, each bound every visitor
whose sign-in answered it to one user, "undefined"; read as an order ID, each made every order
after the first a duplicate of it, and lost. A real gateway in front of a real aiohttp site
answering as a single-page app's API does when its code has a bug."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from tests.conftest import GatewayFactory
from tests.gateway.test_rules_stacks import bound, failures, post, rows, visit

RULES = r"""
[[identity.rules]]
name = "api-login"
path = "/api/login"
status = [200]
user_id = { response_json = "/user/id" }

[[identity.rules]]
name = "signup"
path = "/signup"
status = [302]
user_id = { form = "email" }
lowercase = true

[[conversions]]
name = "order-api"
path = "/api/orders"
status = [201]
value = { response_json = "/order/total" }
currency = "EUR"
order_id = { response_json = "/order/id" }
"""

PLACEHOLDERS = ["undefined", "null", "NULL", " None ", "\tundefined\n", "nil", "NaN", "[object Object]"]
JSON = {"Content-Type": "application/json"}


def site() -> web.Application:
    """An API echoing what it was sent as the account's or the order's ID, as one does when the
    page sent it what its code had (``body.id``, undefined)."""

    async def login(request: web.Request) -> web.Response:
        return web.json_response({"user": {"id": (await request.json())["as"]}})

    async def signup(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "/welcome"})

    async def orders(request: web.Request) -> web.Response:
        return web.json_response({"order": await request.json()}, status=201)

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<html>page</html>", content_type="text/html")

    app = web.Application()
    app.router.add_post("/api/login", login)
    app.router.add_post("/signup", signup)
    app.router.add_post("/api/orders", orders)
    app.router.add_get("/{tail:.*}", page)
    return app


async def test_a_placeholder_user_id_binds_no_one(
    start_gateway: GatewayFactory, upstream_server: Any
) -> None:
    gw = await start_gateway(await upstream_server(site()), RULES)
    for who in [*PLACEHOLDERS, "ada"]:
        cookie = await visit(gw)
        assert await post(gw, "/api/login", cookie, json.dumps({"as": who}), **JSON) == 200
    for typed in ("Undefined", "bob@example.com"):  # a form's field filled by script: as typed
        cookie = await visit(gw)
        assert await post(gw, "/signup", cookie, {"email": typed}) == 302
    keys = gw.gateway.keys
    assert await bound(gw) == [
        ("api-login", keys.user_key("ada")),
        ("signup", keys.user_key("bob@example.com")),
    ]
    assert sorted(line.partition(" ")[0] for line in await failures(gw)) == [
        'gateway_extraction_failures_total{reason="placeholder_user_id",rule="api-login"}',
        'gateway_extraction_failures_total{reason="placeholder_user_id",rule="signup"}',
    ]
    assert f'reason="placeholder_user_id",rule="api-login"}} {len(PLACEHOLDERS)}.0' in "\n".join(
        await failures(gw)
    )


async def test_a_placeholder_order_id_is_left_out_not_every_order_a_duplicate(
    start_gateway: GatewayFactory, upstream_server: Any
) -> None:
    gw = await start_gateway(await upstream_server(site()), RULES)
    for order, total in (("undefined", 10), ("undefined", 20), ("null", 30), ("A17", 40), ("A17", 40)):
        cookie = await visit(gw)  # a buyer each: each checkout is an order of its own
        body = json.dumps({"id": order, "total": total})
        assert await post(gw, "/api/orders", cookie, body, **JSON) == 201
    found = await rows(gw, "SELECT value, order_id, dedup_key LIKE 'window:%' FROM conversions ORDER BY id")
    assert found == [(10.0, None, 1), (20.0, None, 1), (30.0, None, 1), (40.0, "A17", 0)]
    assert [line for line in await failures(gw) if "order_id" in line] == [
        'gateway_extraction_failures_total{reason="order_id_placeholder",rule="order-api"} 3.0'
    ]
