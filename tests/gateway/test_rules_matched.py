"""What the operator is told of a rule that never fires, and of two rules matching one request,
through a real gateway in front of a real aiohttp site (a JSON sign-in answering 200, or 401 for
a wrong password, and a lead form answering 200)."""

from __future__ import annotations

import json
from typing import Any

import aiosqlite
from aiohttp import web

from tests.conftest import TOKEN, GatewayFactory, RunningGateway

PASSWORD = "hunter2-Unguessable"

RULES = """
[[identity.rules]]
name = "api-login"
path = "/api/login"
status = [200]
user_id = { response_json = "/user/id" }

[[identity.rules]]
name = "typo-path"
path = "/api/logon"
status = [200]
user_id = { response_json = "/user/id" }

[[identity.rules]]
name = "wrong-status"
path = "/api/login"
status = [201]
user_id = { response_json = "/user/id" }

[[identity.rules]]
name = "by-email"
path = "/api/login"
status = [200]
user_id = { request_json = "/email" }

[[conversions]]
name = "api-login"
path = "/api/login"
status = [200]
value = 1.0

[[conversions]]
name = "lead"
path = "/lead"
status = [200]
value = 5.0
order_id = { query = "ref" }

[[conversions]]
name = "lead-again"
path = "/lead"
status = [200]
value = 7.0
order_id = { query = "ref" }

[[conversions]]
name = "any-lead"
path = "/lead"
status = [200]
value = 1.0
"""


def site() -> web.Application:
    async def login(request: web.Request) -> web.Response:
        data = json.loads(await request.read())
        if data.get("password") != PASSWORD:
            return web.json_response({"error": "bad credentials"}, status=401)
        return web.json_response({"user": {"id": "u-42"}})

    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="<html>thanks</html>", content_type="text/html")

    app = web.Application()
    app.router.add_post("/api/login", login)
    app.router.add_post("/lead", ok)
    app.router.add_get("/{tail:.*}", ok)
    return app


async def visit(gw: RunningGateway) -> dict[str, str]:
    async with gw.session.get(gw.url + "/?utm_source=news", headers={"Accept": "text/html"}) as resp:
        return {"Cookie": f"gw_vid={resp.cookies['gw_vid'].value}"}


async def metric_lines(gw: RunningGateway, prefix: str) -> list[str]:
    async with gw.session.get(gw.admin_url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        text = await r.text()
    return sorted(line for line in text.splitlines() if line.startswith(prefix + "{"))


async def rows(gw: RunningGateway, sql: str) -> list[Any]:
    async with aiosqlite.connect(gw.gateway.settings.store_path) as db:
        return list(await db.execute_fetchall(sql))


async def test_a_rule_that_never_fires_is_told_by_the_requests_it_matched(
    start_gateway: GatewayFactory, upstream_server: Any
) -> None:
    """``gateway_rule_matched_total{kind,rule,status}`` counts the requests each rule matched
    (method, host, path) by the status the site answered, fired or not. A rule whose path
    matches nothing has no series; one whose `status` lists none the site answers shows the
    statuses it does answer. Until 2026-12-07 neither was told anywhere: no metric, no log, no
    doctor line, only `gateway rules try` on a recording. The identity and conversion rules of
    one name are told apart by ``kind``."""
    gw = await start_gateway(await upstream_server(site()), RULES)
    cookie = {**await visit(gw), "Content-Type": "application/json"}
    for password in (PASSWORD, "wrong", PASSWORD):
        body = json.dumps({"email": "ada@example.com", "password": password})
        async with gw.session.post(gw.url + "/api/login", data=body, headers=cookie) as resp:
            assert resp.status == (200 if password == PASSWORD else 401)
    async with gw.session.get(gw.url + "/api/login", headers=cookie) as resp:  # not the method
        assert resp.status == 200
    assert await metric_lines(gw, "gateway_rule_matched_total") == [
        'gateway_rule_matched_total{kind="conversion",rule="api-login",status="200"} 2.0',
        'gateway_rule_matched_total{kind="conversion",rule="api-login",status="401"} 1.0',
        'gateway_rule_matched_total{kind="identity",rule="api-login",status="200"} 2.0',
        'gateway_rule_matched_total{kind="identity",rule="api-login",status="401"} 1.0',
        'gateway_rule_matched_total{kind="identity",rule="by-email",status="200"} 2.0',
        'gateway_rule_matched_total{kind="identity",rule="by-email",status="401"} 1.0',
        'gateway_rule_matched_total{kind="identity",rule="wrong-status",status="200"} 2.0',
        'gateway_rule_matched_total{kind="identity",rule="wrong-status",status="401"} 1.0',
    ]


async def test_every_rule_matching_a_request_fires_none_wins(
    start_gateway: GatewayFactory, upstream_server: Any
) -> None:
    """Two identity rules on one sign-in bind the visitor to what each reads (here the site's ID
    and the typed address: two users); two conversion rules on one request record a conversion
    each, unless they read the same order ID, which the first rule in the file keeps and the
    other counts as a duplicate."""
    gw = await start_gateway(await upstream_server(site()), RULES)
    cookie = await visit(gw)
    body = json.dumps({"email": "ada@example.com", "password": PASSWORD})
    async with gw.session.post(
        gw.url + "/api/login", data=body, headers={**cookie, "Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 200
    keys = gw.gateway.keys
    assert sorted(await rows(gw, "SELECT rule, user_key FROM identities")) == sorted(
        [("api-login", keys.user_key("u-42")), ("by-email", keys.user_key("ada@example.com"))]
    )
    async with gw.session.post(gw.url + "/lead?ref=L-1", data=b"", headers=cookie) as resp:
        assert resp.status == 200
    recorded = await rows(gw, "SELECT rule, dedup_key, value FROM conversions ORDER BY rule")
    assert [(r, d if d.startswith("order") else "window", v) for r, d, v in recorded] == [
        ("any-lead", "window", 1.0),
        ("api-login", "window", 1.0),
        ("lead", "order:L-1", 5.0),
    ]
    assert await metric_lines(gw, "gateway_conversions_duplicate_total") == [
        'gateway_conversions_duplicate_total{rule="lead-again"} 1.0'
    ]
