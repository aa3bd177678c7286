"""The OpenAPI document is well-formed and every admin answer matches the schema it promises."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from gateway.openapi import openapi_document
from tests.conftest import TOKEN

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def response_schema(path: str, status: int, method: str = "get") -> dict[str, Any]:
    doc = openapi_document()
    response = doc["paths"][path][method]["responses"][str(status)]
    schema = response["content"]["application/json"]["schema"]
    # Resolve the document's component references as JSON Schema $defs.
    text = json.dumps({**schema, "$defs": doc["components"]["schemas"]})
    return json.loads(text.replace("#/components/schemas/", "#/$defs/"))


def test_document_shape() -> None:
    doc = openapi_document()
    assert doc["openapi"] == "3.1.0"
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    for path, methods in doc["paths"].items():
        for operation in methods.values():
            assert operation["summary"] and "200" in operation["responses"], path


@pytest.fixture
async def gw(start_gateway, upstream_server):
    from aiohttp import web

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    return await start_gateway(await upstream_server(app))


@pytest.mark.parametrize(
    ("path", "template", "params", "status"),
    [
        ("/api/touchpoints", "/api/touchpoints", {"limit": "1"}, 200),
        ("/api/touchpoints", "/api/touchpoints", {"limit": "0"}, 400),
        ("/api/visitors/{key}", "/api/visitors/{visitor_id}", {}, 200),
        ("/api/visitors/" + "0" * 32, "/api/visitors/{visitor_id}", {}, 404),
        ("/healthz", "/healthz", {}, 200),
        ("/api/fraud", "/api/fraud", {"group_by": "source"}, 200),
        ("/api/fraud", "/api/fraud", {"group_by": "ip"}, 400),
        ("/api/review", "/api/review", {"verdict": "block"}, 200),
        ("/api/review", "/api/review", {"limit": "x"}, 400),
    ],
)
async def test_answers_match_the_document(gw, path: str, template: str, params, status: int) -> None:
    async with gw.session.get(
        gw.url + "/?utm_source=a&utm_content=1", headers={"Sec-Fetch-Dest": "document"}
    ) as resp:
        assert resp.status == 200
    async with gw.session.get(gw.url + "/?utm_source=b") as resp:
        assert resp.status == 200
    if "{key}" in path:
        items = (await gw.api("/api/touchpoints"))["items"]
        path = path.replace("{key}", items[0]["visitor_key"])
    async with gw.session.get(gw.admin_url + path, headers=AUTH, params=params) as resp:
        assert resp.status == status
        body = await resp.json()
    Draft202012Validator(response_schema(template, status)).validate(body)
