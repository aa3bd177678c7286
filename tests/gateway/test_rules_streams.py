"""A rule reading the answers of an endpoint that also streams: GraphQL's ``POST /graphql``,
where a mutation is answered JSON and a subscription (graphql-sse, Apollo's multipart
subscriptions, ``@defer``) an answer that never ends, or ends when the site is done sending.
Reading the answer for the rule held back every event until 64 KiB (``max_body``) had come, or
the stream ended: the visitor's subscription showed nothing. A real gateway in front of a real
aiohttp site."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import GatewayFactory
from tests.gateway.test_rules_stacks import failures, rows, visit

RULES = r"""
[[conversions]]
name = "graphql-purchase"
path = "/graphql"
status = [200]
when = [{ request_json = "/operationName", equals = "PlaceOrder" }]
order_id = { response_json = "/data/placeOrder/id" }
currency = "EUR"
"""

STREAMED = {
    "text/event-stream": (b"event: next\ndata: {}\n\n", b"\n\n"),
    'multipart/mixed; boundary="-"': (b"\r\n---\r\nContent-Type: application/json\r\n\r\n{}\r\n", b"}\r\n"),
}


@pytest.mark.parametrize("content_type", list(STREAMED))
async def test_a_streamed_answer_on_a_rule_path_reaches_the_visitor_as_sent(
    start_gateway: GatewayFactory, upstream_server: Any, content_type: str
) -> None:
    part, end = STREAMED[content_type]
    seen = [asyncio.Event() for _ in range(3)]

    async def graphql(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body["operationName"] == "PlaceOrder":
            return web.json_response({"data": {"placeOrder": {"id": "A17"}}})
        resp = web.StreamResponse(headers={"Content-Type": content_type, "Cache-Control": "no-cache"})
        await resp.prepare(request)
        for event in seen:
            await resp.write(part)
            async with asyncio.timeout(10):
                await event.wait()  # the next one only once the visitor has this one
        return resp

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<html></html>", content_type="text/html")

    app = web.Application()
    app.router.add_post("/graphql", graphql)
    app.router.add_get("/", page)
    gw = await start_gateway(await upstream_server(app), RULES)
    cookie = await visit(gw)
    headers = {**cookie, "Content-Type": "application/json", "Accept": content_type}
    subscribe = json.dumps({"operationName": "OrderUpdates", "query": "subscription { order }"})
    async with gw.session.post(gw.url + "/graphql", data=subscribe, headers=headers) as resp:
        assert resp.headers["Content-Type"] == content_type
        for event in seen:
            async with asyncio.timeout(10):
                got = await resp.content.readuntil(end)
            assert got == part
            event.set()
    order = json.dumps({"operationName": "PlaceOrder", "query": "mutation { placeOrder { id } }"})
    async with gw.session.post(gw.url + "/graphql", data=order, headers=headers) as resp:
        assert await resp.json() == {"data": {"placeOrder": {"id": "A17"}}}
    assert await rows(gw, "SELECT order_id FROM conversions") == [("A17",)]
    assert await failures(gw) == []


def test_rules_try_reads_no_streamed_answer_as_the_gateway_reads_none(tmp_path: Path) -> None:
    """A HAR holds what a subscription streamed (as one text); the gateway never reads it for a
    rule, so ``gateway rules try`` does not either, and says why."""
    from tests.gateway.test_rules_try import by_hand, gateway, har

    config = tmp_path / "gateway.toml"
    config.write_text(
        RULES.replace(
            'request_json = "/operationName", equals = "PlaceOrder"', 'request_json = "/operationName"'
        )
    )
    text = 'event: next\ndata: {"data": {"placeOrder": {"id": "A17"}}}\n\n'
    entry = by_hand(
        "POST",
        "/graphql",
        200,
        {"mimeType": "text/event-stream", "text": text, "size": len(text)},
        postData={"mimeType": "application/json", "text": '{"operationName": "OrderUpdates"}'},
    )
    entry["response"]["headers"] = [{"name": "Content-Type", "value": "text/event-stream; charset=utf-8"}]
    code, out, _ = gateway("rules", "try", str(har(tmp_path, [entry])), "-c", str(config))
    assert code == 0
    assert out.splitlines()[:3] == [
        "entry 1  POST /graphql  200",
        "  conversion graphql-purchase: fired, currency EUR",
        "    counted: order_id_body_not_read: the answer is text/event-stream, sent piece by piece for"
        " the visitor to see at once: the gateway reads no such answer for a rule, and passes it on"
        " as it comes",
    ]
