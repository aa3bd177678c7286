"""The mitmproxy host on an endpoint a rule reads the answers of that also streams: GraphQL's
``POST /graphql``, a mutation answered JSON, a subscription (graphql-sse, Apollo's multipart
subscriptions, ``@defer``) answered piece by piece. As ``gateway run`` does since 2026-12-07
(``tests/gateway/test_rules_streams.py``), such an answer is never read for the rule: it reaches
the visitor as the site sends it, and the rule counts ``body_not_read``. Until 2026-12-07
mitmproxy buffered it for the rule: the visitor's subscription showed nothing until the site
ended it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import warnings
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import ENV

pytest.importorskip("mitmproxy")

with warnings.catch_warnings():  # mitmproxy 11's own imports (ldap3, passlib) warn of deprecations
    warnings.simplefilter("ignore", DeprecationWarning)
    from mitmproxy import http as mhttp
    from mitmproxy.test import taddons, tflow, tutils

from addons.mitm import GatewayAddon
from tests.addons.test_mitm import config, land, mitmdump_process, rows
from tests.gateway.test_rules_streams import RULES, STREAMED

WAIT = 10
"""Seconds the site waits for the visitor to have a piece before it sends the next anyway (a
proxy holding the pieces back would otherwise hold the test forever)."""


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("ruled", [True, False], ids=["rule_path", "no_rule"])
@pytest.mark.parametrize("content_type", list(STREAMED))
async def test_a_streamed_answer_on_a_rule_path_reaches_the_visitor_as_sent_through_mitmdump(
    tmp_path: Path, secrets: None, upstream_server: Any, content_type: str, ruled: bool
) -> None:
    """mitmdump buffering bodies (``stream_large_bodies`` above them, so the rule reads the
    mutation's answer): each piece of a subscription's answer reaches the visitor before the
    site sends the next, and the mutation's answer on the same path is still read. With no rule
    at all too: mitmproxy buffers an answer of no announced length until ``stream_large_bodies``
    of it came, so an event stream anywhere showed nothing until then (until 2026-12-07)."""
    part, end = STREAMED[content_type]
    had = [asyncio.Event() for _ in range(3)]
    order: list[str] = []

    async def graphql(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body["operationName"] == "PlaceOrder":
            return web.json_response({"data": {"placeOrder": {"id": "A17"}}})
        resp = web.StreamResponse(headers={"Content-Type": content_type, "Cache-Control": "no-cache"})
        await resp.prepare(request)
        for n, event in enumerate(had):
            order.append(f"site sent {n}")
            await resp.write(part)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WAIT):
                    await event.wait()  # the next once the visitor has this one (or WAIT is out)
        return resp

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<html></html>", content_type="text/html")

    app = web.Application()
    app.router.add_post("/graphql", graphql)
    app.router.add_get("/", page)
    toml = await asyncio.to_thread(config, tmp_path, "mitm", RULES if ruled else "")
    site = await upstream_server(app)
    async with (
        mitmdump_process(site, toml, tmp_path / "conf", stream="10m") as (url, _),
        aiohttp.ClientSession() as session,
    ):
        async with session.get(url + "/?utm_source=news", headers={"Accept": "text/html"}) as resp:
            cookie = {"Cookie": f"gw_vid={resp.cookies['gw_vid'].value}"}
        headers = {**cookie, "Content-Type": "application/json", "Accept": content_type}
        subscribe = json.dumps({"operationName": "OrderUpdates", "query": "subscription { order }"})
        async with session.post(url + "/graphql", data=subscribe, headers=headers) as resp:
            assert resp.headers["Content-Type"] == content_type
            for n, event in enumerate(had):
                async with asyncio.timeout(60):
                    got = await resp.content.readuntil(end)
                assert got == part
                order.append(f"visitor got {n}")
                event.set()
        place_order = json.dumps({"operationName": "PlaceOrder", "query": "mutation { placeOrder { id } }"})
        async with session.post(url + "/graphql", data=place_order, headers=headers) as resp:
            assert await resp.json() == {"data": {"placeOrder": {"id": "A17"}}}
    assert order == [f"{who} {n}" for n in range(3) for who in ("site sent", "visitor got")]
    found = await asyncio.to_thread(rows, tmp_path / "mitm.db", "SELECT order_id FROM conversions")
    assert found == ([("A17",)] if ruled else [])


@pytest.mark.parametrize("content_type", [*STREAMED, "TEXT/Event-Stream; charset=utf-8"])
async def test_a_rule_reading_a_streamed_answer_counts_body_not_read(
    tmp_path: Path, secrets: None, content_type: str
) -> None:
    """As in ``gateway run``: the rule runs once the answer's head is in, its order ID not read
    (``body_not_read``, counted once); the answer streams, the content type's case and
    parameters aside. A JSON answer on the same path is still buffered and read."""
    rules = RULES.replace(
        'request_json = "/operationName", equals = "PlaceOrder"', 'request_json = "/operationName"'
    )
    gateway = GatewayAddon()
    with taddons.context(gateway) as tctx:
        toml = await asyncio.to_thread(config, tmp_path, "gw", rules)
        tctx.configure(gateway, gateway_config=str(toml))
        await gateway.running()
        try:
            landing = await land(gateway, b"/?utm_source=x")
            assert landing.response is not None
            await gateway.response(landing)
            cookie = landing.response.headers["set-cookie"].split(";")[0].encode()

            async def graphql(answer_type: str, body: bytes) -> mhttp.HTTPFlow:
                headers = [(b"content-type", b"application/json"), (b"cookie", cookie)]
                sent = b'{"operationName": "OrderUpdates"}'
                req = tutils.treq(method=b"POST", path=b"/graphql", headers=headers, content=sent)
                flow = tflow.tflow(req=req)
                await gateway.requestheaders(flow)
                await gateway.request(flow)
                flow.response = tutils.tresp(headers=[(b"content-type", answer_type.encode())], content=body)
                await gateway.responseheaders(flow)
                await gateway.response(flow)
                return flow

            streamed = await graphql(
                content_type, b'event: next\ndata: {"data": {"placeOrder": {"id": "S1"}}}\n\n'
            )
            assert streamed.response is not None and streamed.response.stream
            json_answer = await graphql("application/json", b'{"data": {"placeOrder": {"id": "J2"}}}')
            assert json_answer.response is not None and not json_answer.response.stream
            failed = gateway.metrics.registry.get_sample_value(
                "gateway_extraction_failures_total",
                {"rule": "graphql-purchase", "reason": "order_id_body_not_read"},
            )
        finally:
            await gateway.done()
    assert failed == 1
    found = await asyncio.to_thread(rows, tmp_path / "gw.db", "SELECT order_id FROM conversions ORDER BY id")
    assert found[-1:] == [("J2",)]
