"""Security properties: the admin listener is not exposed by accident, secrets are compared in
constant time, and the reserved prefix cannot be reached through path tricks — neither to
skip its signature checks nor to be forwarded to the site."""

from __future__ import annotations

import ast
import asyncio
import re
from pathlib import Path

import aiosqlite
import pytest
from aiohttp import web

from gateway.config import ConfigError, load_settings
from gateway.doctor import check_admin
from gateway.reserved import classify, normalise
from tests.conftest import ENV, RunningGateway
from tests.gateway.test_cli import gateway
from tests.gateway.test_inbound import SOURCES, SOURCES_ENV, conversion, encode, signed
from tests.gateway.test_malformed import raw_request

ROOT = Path(__file__).resolve().parents[2]

# -- the admin listener ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "listen",
    ["127.0.0.1:9090", "[::1]:9090", "localhost:9090", "10.1.2.3:9090", "172.16.0.9:0",
     "192.168.1.20:9090", "[fd00::5]:9090", "169.254.1.1:9090"],
)  # fmt: skip
def test_admin_on_loopback_or_private_address_starts(listen: str) -> None:
    load_settings(None, text=f'[admin]\nlisten = "{listen}"\n', environ=ENV)


@pytest.mark.parametrize(
    "listen",
    [
        "0.0.0.0:9090",
        "[::]:9090",
        "93.184.216.34:9090",
        "[2a00:1450::1]:9090",
        "100.64.0.1:9090",
        "admin.example.com:9090",
    ],
)
def test_admin_on_public_address_needs_saying_so(listen: str) -> None:
    text = f'[admin]\nlisten = "{listen}"\n'
    with pytest.raises(ConfigError) as err:
        load_settings(None, text=text, environ=ENV)
    (problem,) = err.value.problems
    assert problem.startswith("admin.listen: ") and "admin.allow_public = true" in problem
    assert "--admin-public" in problem
    load_settings(None, text=text + "allow_public = true\n", environ=ENV)
    load_settings(None, text=text, environ=ENV, admin_public=True)


@pytest.mark.parametrize(
    ("listen", "private"),
    [
        # An IPv4-mapped IPv6 address ([::ffff:127.0.0.1]) is refused whatever it maps (the
        # gateway's IPv6 sockets cannot listen on one): tests/gateway/test_config.py.
        ("192.0.2.10:9090", False),  # documentation range: ipaddress calls it private, it is not ours
        ("[::1]:9090", True),
        ("localhost:9090", True),
    ],
)
def test_the_config_check_and_doctor_agree_on_what_is_private(listen: str, private: bool) -> None:
    """The config refuses a public admin address without ``allow_public``; ``gateway doctor``
    FAILs one. Both ask the same question, so neither passes what the other refuses."""
    text = f'[admin]\nlisten = "{listen}"\n'
    if private:
        settings = load_settings(None, text=text, environ=ENV)
    else:
        with pytest.raises(ConfigError, match="not a loopback or private address"):
            load_settings(None, text=text, environ=ENV)
        settings = load_settings(None, text=text, environ=ENV, admin_public=True)
    assert (check_admin(settings).status == "ok") is private


def test_cli_refuses_public_admin_without_the_flag(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[admin]\nlisten = "0.0.0.0:0"\n[storage]\npath = "gw.db"\n')
    for command in ("check", "run"):
        done = gateway(command, "-c", str(cfg), env=ENV)
        assert done.returncode == 2, done.stderr
        assert "admin.listen: '0.0.0.0:0' is not a loopback or private address" in done.stderr
    done = gateway("check", "--admin-public", "-c", str(cfg), env=ENV)
    assert done.returncode == 0, done.stderr


# -- constant-time comparisons --------------------------------------------------------------------

SECRET_NAME = re.compile(
    r"token|secret|signature|(^|_)sig($|_)|(^|_)mac($|_)|(^|_)tag($|_)|digest|password|credential"
    r"|authorization|api_?key"
)


def _names(node: ast.AST) -> list[str]:
    """Identifiers an operand is read from: ``x``, ``self.token``, ``token.encode()``, ``a[0]``."""
    keys: list[str] = []
    while isinstance(node, ast.Call | ast.Subscript):
        if isinstance(node, ast.Subscript):
            if isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
                keys.append(node.slice.value)  # headers["authorization"]
            node = node.value
        else:
            node = node.func
        if isinstance(node, ast.Attribute) and node.attr in {"encode", "decode", "strip", "lower", "get"}:
            node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *keys]
    if isinstance(node, ast.Attribute):
        return [node.attr, *_names(node.value), *keys]
    return keys


def secret_comparisons(source: str) -> list[int]:
    """Lines comparing a secret-named value with ``==`` / ``!=`` (use ``hmac.compare_digest``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        if not any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
            continue
        operands = [node.left, *node.comparators]
        if any(
            isinstance(o, ast.Constant) and (o.value in (None, "", b"") or isinstance(o.value, str))
            for o in operands
        ):
            # presence checks, and a setting compared with a word written in the code (a signature
            # scheme: ``signature == "stripe"``): the word is public, the timing tells nothing
            continue
        if any(SECRET_NAME.search(name.lower()) for o in operands for name in _names(o)):
            found.append(node.lineno)
    return found


def test_the_secret_comparison_scan_finds_what_it_looks_for() -> None:
    assert secret_comparisons("if given == self.token: pass") == [1]
    assert secret_comparisons("ok = expected_sig != sig.encode()") == [1]
    assert secret_comparisons("ok = request.headers['x'] == webhook_secret") == [1]
    assert secret_comparisons("ok = hmac.compare_digest(given, self.token)") == []
    assert secret_comparisons("if token is None or token == '': pass") == []
    assert secret_comparisons("if auth.headers['authorization'] == expected: pass") == [1]
    assert secret_comparisons("if source.signature == 'stripe': pass") == []  # a scheme's name
    assert secret_comparisons("if given == self.token or mode == 'x': pass") == [1]


def test_tokens_and_secrets_are_compared_in_constant_time() -> None:
    offenders = []
    for package in ("gateway", "addons", "storage"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for line in secret_comparisons(path.read_text(encoding="utf-8")):
                offenders.append(f"{path.relative_to(ROOT)}:{line}")
    assert offenders == [], "compare secrets with hmac.compare_digest"


# -- the reserved prefix --------------------------------------------------------------------------

ALIASES = [
    "/%5Fgw/events", "/%5fgw/events", "//_gw/events", "///_gw/events", "/x/../_gw/events",
    "/./_gw/events", "/_gw%2Fevents", "/_gw%2fevents", "/_GW/events", "/_Gw/events", "/%5FGW/events",
    "/_gw", "/%2e/_gw/events", "/x/%2e%2e/_gw/events", "/_gw;x/events",
    "/\\_gw/events", "/_gw\\events", "/%255Fgw/events", "/%5F%67%77/events", "/_gw%2F",
]  # fmt: skip
ORDINARY = ["/", "/_gwx/events", "/x/_gw/events", "/gw/events", "/_g/w", "/%5Fgwx", "/a%2Fb", "/x/../y"]


@pytest.mark.parametrize("path", ALIASES)
def test_aliases_of_the_prefix_are_recognised(path: str) -> None:
    assert classify(path, "/_gw/") == "alias", normalise(path)


@pytest.mark.parametrize("path", ORDINARY)
def test_ordinary_paths_are_not_taken_for_the_prefix(path: str) -> None:
    assert classify(path, "/_gw/") == "ordinary"


def test_only_the_exact_spelling_is_canonical() -> None:
    assert classify("/_gw/events", "/_gw/") == "canonical"
    assert classify("/_gw/segment/v1/track", "/_gw/") == "canonical"
    assert classify("/_gw/events", "/_hooks/") == "ordinary"
    assert classify("/%5Fhooks/events", "/_hooks/") == "alias"


@pytest.fixture
async def guarded(start_gateway, upstream_server) -> tuple[RunningGateway, list[str]]:
    """A gateway with signed senders in front of an upstream that records every request."""
    calls: list[str] = []

    async def page(request: web.Request) -> web.Response:
        calls.append(request.raw_path)
        await request.read()
        return web.Response(text="site")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", page)
    return await start_gateway(await upstream_server(app), SOURCES, SOURCES_ENV), calls


async def stored_conversions(gw: RunningGateway) -> int:
    async with aiosqlite.connect(gw.gateway.settings.store_path) as db:
        ((count,),) = await db.execute_fetchall("SELECT count(*) FROM conversions")
    return count


@pytest.mark.parametrize("path", ALIASES)
async def test_path_tricks_neither_forward_nor_skip_the_signature(guarded, path: str) -> None:
    gw, calls = guarded
    body = encode(conversion())
    for method, headers in (("GET", b""), ("POST", b"Content-Type: application/json\r\n")):
        request = (
            f"{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n".encode()
            + headers
            + b"Content-Length: %d\r\n\r\n" % len(body)
            + body
        )
        resp = await raw_request(gw.proxy.port, request)
        assert resp.status == 404, (method, resp.status, resp.body)
        assert b"gateway endpoints are spelled /_gw/<name>" in resp.body
    # A correctly signed event at an alias is refused too: one spelling, one set of checks.
    good = "".join(f"{name}: {value}\r\n" for name, value in signed(body).items()).encode()
    request = f"POST {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n".encode() + good
    resp = await raw_request(gw.proxy.port, request + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert resp.status == 404
    assert calls == []
    assert await stored_conversions(gw) == 0


async def test_the_canonical_path_checks_signatures(guarded) -> None:
    gw, calls = guarded
    body = encode(conversion())
    async with gw.session.post(gw.url + "/_gw/events", data=body) as resp:
        assert resp.status == 401
    async with gw.session.post(gw.url + "/_gw/events", data=body, headers=signed(body)) as resp:
        assert resp.status == 202
    assert (calls, await stored_conversions(gw)) == ([], 1)


@pytest.mark.parametrize("path", ORDINARY)
async def test_lookalike_ordinary_paths_are_forwarded_as_sent(guarded, path: str) -> None:
    gw, calls = guarded
    resp = await raw_request(
        gw.proxy.port, f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
    )
    assert (resp.status, calls) == (200, [path])


# -- privacy at rest ------------------------------------------------------------------------------


async def test_no_raw_ip_or_visitor_id_at_rest(start_gateway, upstream_server, tmp_path: Path) -> None:
    """The client IP (here from a trusted proxy's X-Forwarded-For) and the raw visitor ID in our
    cookie appear nowhere in the store's files, whatever table or index they could hide in."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<html>page</html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    gw = await start_gateway(await upstream_server(app), '[proxy]\ntrusted_proxies = ["127.0.0.1"]\n')
    ip = "198.51.100.77"
    headers = {"X-Forwarded-For": ip, "Accept": "text/html", "Sec-Fetch-Dest": "document"}
    async with gw.session.get(gw.url + "/land?utm_source=ads&gclid=abc", headers=headers) as resp:
        assert resp.status == 200
        cookie = resp.headers["Set-Cookie"].split(";")[0].removeprefix("gw_vid=")
    visitor_id = cookie.split(".")[1]
    headers["Cookie"] = f"gw_vid={cookie}"
    for n in range(3):
        async with gw.session.get(gw.url + f"/land?utm_source=ads&utm_content={n}", headers=headers) as resp:
            assert resp.status == 200
    await gw.gateway.store.close()  # flushed and checkpointed: everything is in the files
    files = await asyncio.to_thread(
        lambda: [p for p in tmp_path.iterdir() if p.name.startswith("gateway.db")]
    )
    data = b"".join([await asyncio.to_thread(p.read_bytes) for p in files])
    assert b"ads" in data  # the touchpoints are there
    for secret in (ip, visitor_id, cookie):
        assert secret.encode() not in data, secret
        assert secret.encode("utf-16-le") not in data, secret
