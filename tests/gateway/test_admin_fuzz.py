"""Hostile input on every admin operation: a fixed list of bad values per query parameter, path
parameter, request body and header, sent to a real admin listener on 127.0.0.1 in front of a
real SQLite store holding a few touchpoints, a binding and conversions. The operations come
from the OpenAPI document itself, so an endpoint added to it is fuzzed without a change here.
Whatever is sent: never a 5xx; on the JSON API a 4xx is the JSON envelope with a reason, and a
400 for one bad query parameter names it; nothing is logged at ERROR. The dashboard's login
form and its session cookie get the same treatment (their answers are pages, by design).

The JSON API is fuzzed reading the local store and, with ``admin.source = "central"``, the
central PostgreSQL one; headers go through the client library and as raw bytes on a socket.
Deterministic (no randomness) and bounded: some thousands of requests, one gateway per test.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from yarl import URL

from bench.pgserver import PostgresServer
from gateway.events import Binding, Conversion, iso
from gateway.ids import uuid7
from gateway.openapi import openapi_document
from tests.conftest import TOKEN
from tests.gateway.test_malformed import raw_request

AUTH = {"Authorization": f"Bearer {TOKEN}"}
USER = "user-1"
SINK = "hook"
CENTRAL = (
    '[central]\nurl = "env:GATEWAY_CENTRAL_URL"\ninterval_seconds = 0.05\nbackoff_min_seconds = 0.05\n'
    "backoff_max_seconds = 0.2\nconnect_timeout = 2.0\n"
)
SINK_ENV = {"SINK_HOOK": "k" * 32}

# Written as they go on the wire (already percent-encoded where a URL needs it).
HOSTILE = [
    "",
    "x" * 3000,
    "x" * 9000,  # past the request line's limit
    "%00",
    "a%00b",
    "%01%1b%7f",
    "%0d%0aX-Injected:%201",
    "%ff",
    "%c3%28",
    "%ed%a0%80",  # a UTF-16 surrogate, encoded: not UTF-8
    "%",
    "%zz",
    "%20",
    "+",
    "%20padded%20",
    "%e2%80%ae",  # right-to-left override
    "%ef%bb%bf",  # a byte order mark
    "2026-02-30",
    "2026-02-29T25:61",
    "9999-12-31T24:00",
    "9999-12-31T23:59:59.9999999Z",
    "0000-01-01",
    "-0001-01-01",
    "2026-11-01T10:00+99:99",
    "1970-01-01T00:00-00:01",
    "-1",
    "0",
    "99999999999999999999999999",
    "1e309",
    "NaN",
    "-inf",
    "0x10",
    "%d9%a3",  # an Arabic-Indic digit three: isdigit() is true
    "unknown",
    "ALL",
    "true%0a",
    "null",
    "%5B%5D",
    "%7B%7D",
    "..%2F..%2Fetc",
    "newest.",
    "newest.not-a-uuid",
    "00000000-0000-0000-0000-000000000000",
    # Values a filter takes, which then name a download's file or reach the store's SQL.
    "a%22b%3B%20filename%3D%22x",
    "%5C%5C",
    "%25",
    "%27%20OR%201%3D1--",
    "caf%C3%A9",
    "%F0%9F%98%80",
    "%E2%80%8B",
    "%E3%80%80x",
    "%C2%A0",
    "a" * 200,
    "a" * 201,
]
EXTREME_SPANS = [
    ("1970-01-01", "1970-01-02"),
    ("1970-01-01T00:00:00Z", "1970-01-01T00:00:00.001Z"),
    ("9999-12-30", "9999-12-31"),
    ("9999-12-30T00:00Z", "9999-12-31T00:00Z"),
    ("1970-01-01", "9999-12-31"),
    ("2026-03-29T02:30", "2026-03-29T03:30"),
]
"""Periods at the edges of what the API takes (a dashboard's in whole days)."""
PATH_HOSTILE = [v for v in HOSTILE if v not in ("", "%", "%zz", "+")] + ["%2F", "a%2Fb", "."]


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(method, path template, operation) for every operation of the OpenAPI document."""
    for path, item in openapi_document()["paths"].items():
        for method, op in item.items():
            if method in ("get", "put", "post", "delete", "patch", "head", "options"):
                yield method.upper(), path, op


# Those that erase last, so that what the others name is still there for them (the verdicts'
# touchpoint, the user a sink re-sends).
OPERATIONS = sorted(operations(), key=lambda o: (o[0] == "DELETE", "{touchpoint_id}" not in o[1]))


def _example(schema: dict[str, Any]) -> Any:
    """A value the schema accepts (its first enum value, a short string, true)."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "boolean":
        return True
    if kind in ("integer", "number"):
        return schema.get("minimum", 1)
    if kind == "object":
        return {name: _example(sub) for name, sub in schema.get("properties", {}).items()}
    return "fuzz"


def body_schema(op: dict[str, Any]) -> dict[str, Any] | None:
    body = op.get("requestBody")
    return None if body is None else body["content"]["application/json"]["schema"]


NOT_JSON = [b"", b"not json", b"\xff\xfe", b"{", b"null", b"[]", b"1", b'"x"', b"NaN", b'{"a":1e999}',
            b"[" * 5000 + b"]" * 5000, b'{"verdict":"allow"}\x00']  # fmt: skip
WRONG_JSON = [None, 0, -1, 1e308, True, "", "x" * 5000, "\x00", [], {}, ["allow"], {"a": 1},
              "\ud800", "a\udfffb", " \u2028 ", "\u202eevil", "\t", "caf\u00e9 \U0001f600"]  # fmt: skip


JSON_TYPE = {"Content-Type": "application/json"}


def well_formed_body(op: dict[str, Any]) -> tuple[bytes | None, dict[str, str]]:
    """A body the operation accepts, and its Content-Type (none for an operation without)."""
    schema = body_schema(op)
    if schema is None:
        return None, {}
    return json.dumps(_example(schema)).encode(), {"Content-Type": "application/json"}


def hostile_bodies(schema: dict[str, Any]) -> Iterator[tuple[str, bytes, dict[str, str]]]:
    """(what, body, headers) for a JSON body of ``schema``: not JSON, wrong types in each
    field (``what``: ``field=…``, ``without field``), missing and unknown fields, wrong content
    types and codings, a body over the limit."""
    valid = _example(schema)
    plain = json.dumps(valid).encode()
    for raw in [*NOT_JSON, plain + b"x"]:
        yield f"raw {raw[:20]!r}", raw, JSON_TYPE
    for name in schema.get("properties", {}):
        for wrong in WRONG_JSON:
            yield f"{name}={wrong!r:.20}", json.dumps({**valid, name: wrong}).encode(), JSON_TYPE
        missing = {k: v for k, v in valid.items() if k != name}
        yield f"without {name}", json.dumps(missing).encode(), JSON_TYPE
    yield "unknown field", json.dumps({**valid, "extra": 1}).encode(), JSON_TYPE
    yield "duplicate field", plain[:-1] + b', "analyst": 1}', JSON_TYPE
    for kind in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                 "application/json; charset=latin-1", "", "\u00e9/x"]:  # fmt: skip
        yield f"content type {kind!r}", plain, {"Content-Type": kind} if kind else {}
    for coding, raw in [("gzip", gzip.compress(b" " * 8 * 1024**2)), ("gzip", b"\x1f\x8b\x08" + plain),
                        ("deflate", plain), ("gzip", gzip.compress(plain)[:-6]), ("compress", plain),
                        ("gzip, identity", gzip.compress(plain))]:  # fmt: skip
        yield f"Content-Encoding {coding} {len(raw)} bytes", raw, {**JSON_TYPE, "Content-Encoding": coding}
    yield "huge", b'{"analyst": "' + b"a" * (2 * 1024**2) + b'"}', JSON_TYPE


def _field_of(what: str, schema: dict[str, Any]) -> str | None:
    """The field a hostile body of ``hostile_bodies`` is wrong in, if one."""
    name = what.removeprefix("without ").partition("=")[0]
    return name if name in schema.get("properties", {}) else None


def origin() -> web.Application:
    async def page(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", page)
    return app


class Fuzzed:
    """A running gateway with a few landings, a binding and conversions; the path values that
    name what the store holds."""

    def __init__(self, gw: Any, visitor: str, touchpoint: str) -> None:
        self.gw = gw
        self.path_values = {
            "visitor_id": visitor,
            "user_id": USER,
            "touchpoint_id": touchpoint,
            "creator_id": "cr_anna",
            "name": SINK,
        }

    def url(self, template: str, overrides: dict[str, str] | None = None, query: str = "") -> URL:
        path = template
        for name, value in {**self.path_values, **(overrides or {})}.items():
            path = path.replace("{" + name + "}", value)
        assert "{" not in path, f"no value for a path parameter of {template}: add one to path_values"
        return URL(self.gw.admin_url + path + (f"?{query}" if query else ""), encoded=True)


@pytest.fixture(params=["local", "central"])
def source(request: pytest.FixtureRequest) -> PostgresServer | None:
    """Where the admin API reads: the local store, or PostgreSQL (``admin.source = "central"``),
    whose server starts here, outside the event loop."""
    return request.getfixturevalue("postgres_server") if request.param == "central" else None


@pytest.fixture
async def fuzzed(source: PostgresServer | None, start_gateway, upstream_server) -> Fuzzed:
    """A gateway whose admin API reads ``source`` (the central store once what was recorded
    here has reached it)."""
    central = source is not None
    env = {"GATEWAY_CENTRAL_URL": await _database(source)} if source is not None else {}
    upstream = await upstream_server(origin())
    toml = (
        # Loopback trusted as a proxy: the X-Forwarded-For sent is read (for the lockout's client).
        '[proxy]\ntrusted_proxies = ["127.0.0.1/32"]\n'
        # Wrong tokens are among the headers sent: counted for a millisecond, they lock nothing out.
        "[admin]\nmax_failed_logins = 1000\nfailed_login_seconds = 0.001\n"
        + ('source = "central"\n' + CENTRAL if central else "")
        + f'[[sinks]]\nname = "{SINK}"\nkind = "webhook"\nurl = "{upstream}/hook"\n'
        'secret = "env:SINK_HOOK"\n'
    )
    gw = await start_gateway(upstream, toml, {**SINK_ENV, **env})
    cookie = None
    for n in range(3):
        headers = {"Cookie": cookie} if cookie else {}
        async with gw.session.get(
            f"{gw.url}/landing?utm_source=s{n}&utm_medium=cpc&creator_id=cr_anna&gclid=g{n}", headers=headers
        ) as resp:
            assert resp.status == 200
            for value in resp.headers.getall("Set-Cookie", []):
                if value.startswith("gw_vid="):
                    cookie = value.split(";")[0]
    assert cookie is not None
    items = await _listed(gw, "/api/touchpoints", 3)
    visitor_key = items[0]["visitor_key"]
    now = datetime.now(UTC)
    events: list[Any] = [
        Binding(
            uuid7(int(now.timestamp() * 1000)),
            iso(now),
            "test",
            visitor_key,
            gw.gateway.keys.user_key(USER),
            "login",
        )
    ]
    for n in range(3):
        at = now - timedelta(hours=n)
        events.append(
            Conversion(
                uuid7(int(at.timestamp() * 1000)),
                iso(at),
                "test",
                "signup",
                f"order:o{n}",
                visitor_key,
                None,
                10.0 * n,
                "EUR",
                order_id=f"o{n}",
                origin="webhook",
                rule="stripe",
            )
        )
    await gw.gateway.store.write(events)
    await _listed(gw, "/api/conversions", 3)
    return Fuzzed(gw, cookie.partition("=")[2], items[0]["id"])


async def _listed(gw: Any, path: str, count: int) -> list[dict[str, Any]]:
    """The items of listing ``path`` once it holds ``count`` (the central store's once synced)."""
    async with asyncio.timeout(30):
        while len(items := (await gw.api(path)).get("items", [])) < count:
            await asyncio.sleep(0.05)
    return items


async def _database(server: PostgresServer) -> str:
    """A fresh database on ``server``; its DSN."""
    name = f"fuzz_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(server.dsn())
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return server.dsn(name)


def query_cases(op: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(parameter, raw query) for each hostile value of each query parameter, the parameter
    given twice, and a parameter the operation does not know."""
    names = [p["name"] for p in op.get("parameters", []) if p["in"] == "query"]
    for name in names:
        for value in HOSTILE:
            yield name, f"{name}={value}"
            if name != "format" and "format" in names:  # the downloads read it too
                yield name, f"{name}={value}&format=csv"
        yield name, f"{name}&{name}="
        yield name, f"{name}=a&{name}=b"
        yield name, f"{name}"
    for p in op.get("parameters", []):  # each value it takes, in each format
        if p["in"] == "query":
            for value in p["schema"].get("enum", []):
                for fmt in (
                    ("json", "csv", "ndjson") if "format" in names and p["name"] != "format" else ("",)
                ):
                    yield "", f"{p['name']}={value}" + (f"&format={fmt}" if fmt else "")
    for since, until in EXTREME_SPANS:
        for fmt in ("json", "csv") if "format" in names else ("",):
            if "since" in names:
                yield "", f"since={since}&until={until}" + (f"&format={fmt}" if fmt else "")
    yield "query", "%ff=1"
    yield "query", "=1"
    yield "query", "&&&"


def path_cases(template: str) -> Iterator[tuple[str, str]]:
    """(parameter, hostile value) for each path parameter of ``template``."""
    for piece in template.split("/"):
        if piece.startswith("{"):
            for value in PATH_HOSTILE:
                yield piece.strip("{}"), value


HEADER_CASES = [
    {"Accept": "text/csv;q=NaN, application/json;q=2"},
    {"Accept": "*/*;q=-1"},
    {"Accept": "text/csv;q=1e999, application/x-ndjson;q=0.5;q=1, ;q=, text/*"},
    {"Accept": "application/x-ndjson;q=0.001, text/csv;q=0.0001"},
    {"Accept": "x" * 6000},
    {"Accept": "text/csv, text/csv, ,,;;"},
    {"Accept-Encoding": "gzip;q=NaN, br;q=2, *;q=0"},
    {"Accept-Encoding": "identity;q=0, *;q=0"},
    {"If-None-Match": "*"},
    {"Range": "bytes=99999999999999999999-"},
    {"Content-Encoding": "gzip"},
    {"Content-Encoding": "gzip, gzip"},
    {"Content-Type": "application/json; charset=\u00e9"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": f"bearer  {TOKEN}  "},
    {"Authorization": "Bearer " + "t" * 10000},
    {"Cookie": "gw_admin_session=" + "x" * 5000},
    {"Cookie": 'gw_admin_session="\\"; gw_admin_session=; =;;'},
    {"X-Forwarded-For": "not-an-ip, 999.1.1.1, ::ffff:"},
    {"X-Forwarded-For": "[::1]:80, fe80::1%eth0, , 1.2.3.4:99999"},
    {"X-Forwarded-For": ",".join(["10.0.0.1"] * 2000)},
    {"Forwarded": 'for="[::1'},
    {"Forwarded": 'for=1.2.3.4;for=5.6.7.8, ;;, =x, for="\\'},
    {"Forwarded": ", ".join(["for=127.0.0.1;proto=https"] * 2000)},
]


def log_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{r.name}: {r.getMessage()}" + (" (with a traceback)" if r.exc_info else "")
        for r in caplog.records
        if r.levelno >= logging.ERROR or r.exc_info
    ]


async def _send(
    fuzzed: Fuzzed, method: str, url: URL, *, headers: dict[str, str] | None = None, data: bytes | None = None
) -> tuple[int, str, bytes]:
    async with fuzzed.gw.session.request(
        method,
        url,
        headers={**AUTH, **(headers or {})},
        data=io.BytesIO(data) if data is not None and len(data) > 1024**2 else data,
        allow_redirects=False,
    ) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


def refusal(status: int, content_type: str, body: bytes, url: URL) -> str | None:
    """What is wrong with an answer (None: nothing): a 5xx, or a 4xx of the JSON API that is
    not the envelope with a reason."""
    if status >= 500:
        return f"{status} {body[:300]!r}"
    if 400 <= status < 500 and url.path.startswith(("/api/", "/metrics", "/healthz")):
        if not content_type.startswith("application/json"):
            return f"{status} answered as {content_type}: {body[:200]!r}"
        answer = json.loads(body)
        if answer.get("ok") is not False or answer.get("status") != status or not answer.get("error"):
            return f"{status} without the envelope: {answer!r:.300}"
    return None


@pytest.mark.timeout(240)
async def test_every_operation_refuses_hostile_query_parameters_by_name(
    fuzzed: Fuzzed, caplog: pytest.LogCaptureFixture
) -> None:
    problems: list[str] = []
    for method, template, op in OPERATIONS:
        data, headers = well_formed_body(op)
        for name, query in query_cases(op):
            url = fuzzed.url(template, query=query)
            status, kind, body = await _send(fuzzed, method, url, headers=headers, data=data)
            wrong = refusal(status, kind, body, url)
            if wrong is None and status == 400 and name != "query" and kind.startswith("application/json"):
                error = json.loads(body)["error"]
                if name not in error:
                    wrong = f"400 not naming {name}: {error[:200]}"
            # A download's head alone. Not of a target over the request line's limit: the parser
            # refuses it before it reads the method, and so answers a HEAD with a body as well.
            if wrong is None and method == "GET" and "format=" in query and status != 414:
                status, kind, body = await _send(fuzzed, "HEAD", url)
                wrong = f"HEAD: {status}" if status >= 500 else None
            if wrong:
                problems.append(f"{method} {template}?{query[:60]}: {wrong}")
    assert not problems, f"{len(problems)} bad answers:\n" + "\n".join(problems[:60])
    assert not log_errors(caplog), log_errors(caplog)[:20]


@pytest.mark.timeout(240)
async def test_every_operation_refuses_hostile_path_values_bodies_and_headers(
    fuzzed: Fuzzed, caplog: pytest.LogCaptureFixture
) -> None:
    problems: list[str] = []
    for method, template, op in OPERATIONS:
        schema = body_schema(op)
        data, json_type = well_formed_body(op)
        for name, value in path_cases(template):
            url = fuzzed.url(template, {name: value})
            status, kind, body = await _send(fuzzed, method, url, headers=json_type, data=data)
            wrong = refusal(status, kind, body, url)
            if (
                wrong is None
                and status == 400
                and name not in json.loads(body)["error"]
                and "path" not in json.loads(body)["error"]
            ):
                wrong = f"400 not naming {name}: {json.loads(body)['error'][:200]}"
            if wrong:
                problems.append(f"{method} {template} {name}={value[:40]}: {wrong}")
        if schema is not None:
            for what, raw, headers in hostile_bodies(schema):
                url = fuzzed.url(template)
                status, kind, body = await _send(fuzzed, method, url, headers=headers, data=raw)
                wrong = refusal(status, kind, body, url)
                field = _field_of(what, schema)
                said = json.loads(body)["error"] if status == 400 else ""
                # A field left out is named at the end ("body: object missing required field x").
                named = said.startswith(f"{field}:") or said.endswith(f"required field {field}")
                if wrong is None and field and said and not named:
                    wrong = f"400 not naming {field}: {json.loads(body)['error'][:200]}"
                if wrong:
                    problems.append(f"{method} {template} body {what}: {wrong}")
        for extra in HEADER_CASES:
            url = fuzzed.url(template)
            status, kind, body = await _send(fuzzed, method, url, headers={**json_type, **extra}, data=data)
            wrong = refusal(status, kind, body, url)
            if wrong:
                problems.append(f"{method} {template} header {extra!r:.60}: {wrong}")
    assert not problems, f"{len(problems)} bad answers:\n" + "\n".join(problems[:60])
    assert not log_errors(caplog), log_errors(caplog)[:20]


COOKIE_VALUES = [
    b"",
    b"x" * 4000,
    b'"unterminated',
    b'"\\"quoted\\""',
    b"a;b",
    b"%00%ff",
    b"\xff\xfe\x80",
    b"caf\xc3\xa9",
    b"\x01\x7f",
    b"=",
    b"a b\tc",
]
HOSTS = [b"127.0.0.1:{port}", b"127.0.0.1:99999", b"[::1", b"[::1]:0", b"\xff\xfe:{port}", b"a b", b"", b":"]
SESSION_HOSTS = HOSTS[:2] + HOSTS[4:5]
"""The hosts the session cookies are sent to: each names the cookie differently."""


NEXT_PAGES = [b"", b"%2Fdashboard%3Fsince%3D%ff", b"%2F%2Fevil.example", b"javascript:x", b"%00",
              b"%2Fdashboard%23x", b"http://[::1", b"%2Fdashboard" + b"%3Fa" * 1000]  # fmt: skip
SESSION_TARGETS = [
    ("GET", b"/dashboard"),
    ("GET", b"/dashboard?since=2026-02-30&model=%ff"),
    ("GET", b"/login?next=%2Fdashboard"),
    ("POST", b"/logout"),
    ("GET", b"/api/touchpoints?limit=-1"),
    ("GET", b"/api/dashboard/summary?since=%ff"),
    ("GET", b"/api/dashboard/summary?since=2026-02-30&until=9999-12-31T24:00"),
    ("PUT", b"/api/creators/cr_anna"),
]


async def _login(fuzzed: Fuzzed) -> bytes:
    """A live session's cookie (``name=value``), signed in through the login form."""
    async with fuzzed.gw.session.post(
        fuzzed.gw.admin_url + "/login",
        data={"token": TOKEN},
        headers={"Sec-Fetch-Site": "same-origin"},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303, await resp.text()
        return resp.headers["Set-Cookie"].partition(";")[0].encode()


def _raw(method: str, target: bytes, headers: list[bytes], body: bytes = b"") -> bytes:
    lines = [method.encode() + b" " + target + b" HTTP/1.1", *headers, b"Connection: close"]
    if body or method == "POST":
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@pytest.mark.parametrize("source", ["local"], indirect=True)  # what they test reads no store
@pytest.mark.timeout(120)
async def test_the_dashboard_login_and_session_cookie_refuse_hostile_input(
    fuzzed: Fuzzed, caplog: pytest.LogCaptureFixture
) -> None:
    """Over a raw socket, so that bytes no client library would send arrive as written."""
    port = fuzzed.gw.admin.port
    problems: list[str] = []

    async def check(what: str, request: bytes) -> None:
        answer = await raw_request(port, request)
        if answer.status >= 500:
            problems.append(f"{what}: {answer.status} {answer.body[:200]!r}")
        elif (
            answer.status >= 400
            and request.split(b" ", 2)[1].startswith(b"/api/")
            and not answer.headers.get("Content-Type", "").startswith("application/json")
        ):
            problems.append(f"{what}: {answer.status} as {answer.headers.get('Content-Type')}")

    live = await _login(fuzzed)
    for host_template in HOSTS:
        host = b"Host: " + host_template.replace(b"{port}", str(port).encode())
        same = [host, b"Sec-Fetch-Site: same-origin", b"Origin: http://" + host[6:]]
        for cookie in COOKIE_VALUES if host_template in SESSION_HOSTS else ():
            for name in (
                b"gw_admin_session",
                b"gw_admin_session_" + str(port).encode(),
                b"gw_admin_session_99999",
            ):
                hostile = name + b"=" + cookie
                for jar in (
                    hostile,
                    hostile + b"; " + name + b"=x",
                    name + b"=x; " + hostile,
                    hostile + b"; " + live,
                ):
                    for method, target in SESSION_TARGETS:
                        what = f"{method} {target!r} {host!r} {jar[:60]!r}"
                        await check(what, _raw(method, target, [*same, b"Cookie: " + jar]))
        for name in [*PATH_HOSTILE, "..%2F..%2Fgateway%2Fadmin.py", "login.html", "%2E%2E", "a.js%00.css"]:
            target = b"/static/" + name.encode()
            await check(f"GET {target[:80]!r} {host!r}", _raw("GET", target, [host]))
        for why in (b"", b"locked", b"wrong", b"%ff", b"x" * 3000, b"%00"):
            for next_page in NEXT_PAGES:
                target = b"/login?why=" + why + b"&next=" + next_page
                await check(f"GET {target[:80]!r} {host!r}", _raw("GET", target, [host]))
        forms: list[tuple[bytes, bytes]] = [
            (b"application/x-www-form-urlencoded", b""),
            (b"application/x-www-form-urlencoded", b"token="),
            (b"application/x-www-form-urlencoded", b"token=%ff%fe"),
            (b"application/x-www-form-urlencoded", b"token=\xff\xfe"),
            (b"application/x-www-form-urlencoded", b"token=%00"),
            (b"application/x-www-form-urlencoded", b"token=" + TOKEN.encode() + b"&token=x"),
            (b"application/x-www-form-urlencoded", b"token=" + b"t" * 100_000),
            (b"application/x-www-form-urlencoded", b"token=x&next=%2F%2Fevil&next=%2Fdashboard"),
            (b"application/x-www-form-urlencoded", b"token=" + TOKEN.encode() + b"&next=%2Fdashboard%3F%ff"),
            (b"application/x-www-form-urlencoded", b"token=" + TOKEN.encode() + b"&next=http://[::1"),
            (b"application/x-www-form-urlencoded; charset=no-such", b"token=x"),
            (b"application/x-www-form-urlencoded; charset=utf-16", b"token=x"),
            (b"multipart/form-data", b"token=x"),
            (
                b"multipart/form-data; boundary=b",
                b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--\r\n",
            ),
            (b"multipart/form-data; boundary=b", b"--b\r\n\r\n--b--"),
            (b"multipart/form-data; boundary=" + b"b" * 200, b"--x"),
            (b"application/json", b'{"token": "x"}'),
            (b"text/plain", b"token=x"),
            (b"", b"token=x"),
            (b"\xff/\xfe", b"token=x"),
        ]
        for content_type, body in forms:
            for origin in (b"http://" + host[6:], b"null", b"http://[::1", b"\xff", b"http://a:99999"):
                headers = [host, b"Sec-Fetch-Site: same-origin", b"Origin: " + origin]
                if content_type:
                    headers.append(b"Content-Type: " + content_type)
                what = f"POST /login {host!r} {content_type!r} {body[:40]!r} {origin!r}"
                await check(what, _raw("POST", b"/login", headers, body))
    assert not problems, f"{len(problems)} bad answers:\n" + "\n".join(problems[:60])
    assert not log_errors(caplog), log_errors(caplog)[:20]


RAW_HEADERS = [
    b"Accept: text/csv\x00",
    b"Accept: \xff\xfe",
    b"Accept-Encoding: gzip\x01",
    b"Authorization: Bearer \xff" + TOKEN.encode(),
    b"Authorization: Bearer " + TOKEN.encode() + b"\x00",
    b"Authorization: Bearer " + TOKEN.encode() + b"\r\nAuthorization: Bearer " + TOKEN.encode(),
    b"X-Forwarded-For: \xff\x01",
    b"Sec-Fetch-Site: \xff",
    b"Content-Type: application/json\x00",
    b"Content-Length: -1",
    b"Content-Length: 99999999999999999999",
    b"Transfer-Encoding: chunked\r\nContent-Length: 2",
    b"X-" + b"a" * 9000 + b": 1",
    b"Bad Header: 1",
    b": empty name",
]


@pytest.mark.parametrize("source", ["local"], indirect=True)  # what they test reads no store
@pytest.mark.timeout(120)
async def test_every_operation_refuses_header_bytes_no_client_library_sends(
    fuzzed: Fuzzed, caplog: pytest.LogCaptureFixture
) -> None:
    port = fuzzed.gw.admin.port
    auth = b"Authorization: Bearer " + TOKEN.encode()
    problems: list[str] = []
    for method, template, op in OPERATIONS:
        target = fuzzed.url(template).raw_path_qs.encode()
        body = well_formed_body(op)[0] or b""
        for header in RAW_HEADERS:
            host = b"Host: 127.0.0.1:" + str(port).encode()
            headers = [host, header] if header.startswith(b"Authorization") else [host, auth, header]
            answer = await raw_request(port, _raw(method, target, headers, body))
            wrong = refusal(answer.status, answer.headers.get("Content-Type", ""), answer.body, URL(template))
            if wrong:
                problems.append(f"{method} {template} {header[:60]!r}: {wrong}")
    assert not problems, f"{len(problems)} bad answers:\n" + "\n".join(problems[:60])
    assert not log_errors(caplog), log_errors(caplog)[:20]
