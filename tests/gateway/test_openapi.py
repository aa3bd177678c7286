"""The OpenAPI document is well-formed and every admin answer matches the schema it promises."""

from __future__ import annotations

import json
import re
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


def test_every_date_parameter_allows_every_day_the_api_reads() -> None:
    """A client that checks its requests against the document (a generated one) could not ask
    for 31 October, 29 February of a leap year or any day of 1970: the dates' pattern stopped at
    the 28th and began in 1971. Every calendar day from 1970 to 9999 is allowed, and no other."""
    doc = openapi_document()
    params = [
        (path, param["name"], Draft202012Validator(param["schema"]))
        for path, methods in doc["paths"].items()
        for operation in methods.values()
        for param in operation.get("parameters", [])
        if param["name"] in ("since", "until")
    ]
    assert len(params) >= 16, params  # the reports, fraud, the listings, the dashboard summary
    days = ["1970-01-01", "2024-02-29", "2000-02-29", "2026-10-31", "2026-11-30", "2026-12-31", "9999-12-31"]
    not_days = ["1969-12-31", "2026-02-29", "2100-02-29", "2026-04-31", "2026-11-31", "2026-13-01"]
    for path, name, schema in params:
        for day in days:
            assert schema.is_valid(day), (path, name, day)
        for day in not_days:
            assert not schema.is_valid(day), (path, name, day)
    moments = [(path, name, schema) for path, name, schema in params if path != "/api/dashboard/summary"]
    for path, name, schema in moments:
        for moment in (
            "2026-10-31T23:30:00+01:00",
            "2026-10-31t23:30z",
            "2026-10-31T24:00",
            "2026-10-31T24:00:00.000Z",
        ):
            assert schema.is_valid(moment), (path, name, moment)
        for moment in ("2026-10-31T24:30", "2026-10-31T24:00:01", "2026-10-31T23:30Q"):
            assert not schema.is_valid(moment), (path, name, moment)


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


HANDLER_MODULES = ("gateway/admin.py", "gateway/reportapi.py", "gateway/dashboard.py")
STORE_FREE = {("get", "/metrics"), ("get", "/api/creators"), ("get", "/api/openapi.json")}
"""Operations that never reach a store; every other can answer 503 (the envelope middleware
turns a store busy past its timeout, or the central store out of reach, into one)."""


def _raised_statuses() -> dict[tuple[str, str], set[int]]:
    """(method, path) → the statuses its handler raises as ``ApiError(<literal>, …)``, itself or
    through the module-level functions it calls (its own module's first, then admin's)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    functions: dict[str, dict[str, ast.AST]] = {}
    routes: list[tuple[str, str, str, str]] = []
    for name in HANDLER_MODULES:
        tree = ast.parse((root / name).read_text())
        functions[name] = {
            node.name: node for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr.startswith("add_")
                and len(node.args) == 2
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[1], ast.Name)
            ):
                routes.append((name, node.func.attr[4:], node.args[0].value, node.args[1].id))

    def statuses(module: str, function: str, seen: set[str]) -> set[int]:
        node = functions[module].get(function) or functions["gateway/admin.py"].get(function)
        if node is None or function in seen:
            return set()
        seen.add(function)
        found: set[int] = set()
        for call in ast.walk(node):
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)):
                continue
            if call.func.id == "ApiError" and isinstance(call.args[0], ast.Constant):
                found.add(call.args[0].value)
            else:
                found |= statuses(module, call.func.id, seen)
        return found

    return {(method, path): statuses(module, handler, set()) for module, method, path, handler in routes}


def test_every_status_a_handler_raises_is_documented() -> None:
    doc = openapi_document()["paths"]
    raised = _raised_statuses()
    assert ("post", "/api/touchpoints/{touchpoint_id}/verdict") in raised  # the walk found the routes
    checked = 0
    for (method, path), statuses in raised.items():
        if path not in doc:  # the dashboard's pages and login: not part of the API
            continue
        documented = {int(code) for code in doc[path][method]["responses"] if code != "200"}
        if (method, path) not in STORE_FREE:
            statuses |= {503}
        assert statuses <= documented, (
            f"{method.upper()} {path}: {sorted(statuses - documented)} undocumented"
        )
        checked += 1
    assert checked == sum(len(methods) for methods in doc.values())


def test_every_api_route_is_in_the_document(tmp_path) -> None:
    """The admin listener's router against the document: every route under ``/api/`` (and
    ``/healthz``, ``/metrics``) with its method is described, and the document describes none
    it does not serve (the README's table is checked alike: tests/test_readme_guarantees.py)."""
    from gateway.server import create_gateway
    from tests.conftest import make_settings

    gateway = create_gateway(make_settings(tmp_path), "http://127.0.0.1:9")  # nothing is opened
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in gateway.admin_app.router.routes()
        if route.resource is not None and route.method != "HEAD"
        if route.resource.canonical.startswith(("/api/", "/healthz", "/metrics"))
    }
    documented = {
        (method, path) for path, methods in openapi_document()["paths"].items() for method in methods
    }
    assert {"undocumented": served - documented, "not served": documented - served} == {
        "undocumented": set(),
        "not served": set(),
    }


async def test_every_operation_takes_the_query_parameters_the_document_lists(gw) -> None:
    """Each operation's unknown-parameter 400 names what it takes (``allowed: …``, or none):
    that is exactly the query parameters its entry in the document lists, so a client generated
    from the document sends nothing the gateway refuses and can send all it reads. Endpoints
    that ignore a query (a health check's, a scraper's) list none."""
    values = {
        "visitor_id": "0" * 32,
        "user_id": "ann",
        "touchpoint_id": "0" * 32,
        "creator_id": "zoe",
        "name": "crm",
    }
    ignore_a_query = {"/healthz", "/metrics", "/api/openapi.json"}
    checked = 0
    for path, methods in openapi_document()["paths"].items():
        for method, op in methods.items():
            listed = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
            url = gw.admin_url + re.sub(r"\{(\w+)\}", lambda m: values[m[1]], path)
            async with gw.session.request(method, url, params={"zz_unknown": "1"}, headers=AUTH) as resp:
                answer = await resp.json(content_type=None) if resp.status != 200 else None
            if path in ignore_a_query:
                assert resp.status == 200 and not listed, (method, path)
                continue
            assert resp.status == 400, (method, path, answer)
            said = re.fullmatch(
                r"unknown query parameter 'zz_unknown' \((?:allowed: (.*)|this endpoint takes none)\)",
                answer["error"],
            )
            assert said is not None, (method, path, answer)
            assert set(said[1].split(", ") if said[1] else ()) == listed, (method, path)
            checked += 1
    assert checked >= 20
