"""The names the admin listener answers to (``gateway/adminhosts.py``, ``admin.hosts``): a page
on a public domain that DNS-rebinds to the admin address is refused 421 before any token is
read or counted. Through a real gateway's admin listener on 127.0.0.1; the name test and the
config checks directly."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.adminhosts import host_refusal
from gateway.config import ConfigError
from gateway.openapi import openapi_document
from gateway.reload import restart_needed
from tests.conftest import TOKEN, RunningGateway, make_settings
from tests.gateway.test_dashboard import origin

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def gw(start_gateway, upstream_server) -> RunningGateway:
    return await start_gateway(await upstream_server(origin()))


async def get(gw: RunningGateway, path: str, host: str, **headers: str) -> tuple[int, str]:
    async with gw.session.get(gw.admin_url + path, headers={"Host": host, **headers}) as resp:
        return resp.status, await resp.text()


async def test_a_rebinding_page_cannot_lock_the_operator_out(gw: RunningGateway) -> None:
    """A page on evil.example rebound to 127.0.0.1 is same-origin with itself: its login form
    posts were counted against the operator's own address, and thirty of them refused the
    operator's right token (429) for admin.failed_login_seconds."""
    evil = f"evil.example:{gw.admin.port}"
    for i in range(30):
        async with gw.session.post(
            gw.admin_url + "/login",
            data={"token": f"guess-{i}"},
            headers={"Host": evil, "Origin": f"http://{evil}", "Sec-Fetch-Site": "same-origin"},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 421, (resp.status, resp.headers.get("Location"))
            body = await resp.json()
    assert body == {
        "ok": False,
        "status": 421,
        "error": 'Host "evil.example" is not a name of this admin listener; add it to admin.hosts'
        " if it is yours",
    }
    async with gw.session.get(gw.admin_url + "/api/creators", headers=AUTH) as resp:
        assert resp.status == 200
    async with gw.session.get(gw.admin_url + "/login") as resp:
        assert resp.status == 200


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.0.0.1:9090",
        "10.1.2.3:80",
        "[::1]",
        "[::1]:9090",
        "[2001:db8::5]:443",
        "localhost",
        "LocalHost:9090",
        "localhost.",
        "admin.localhost:9090",
        "gateway",
        "gateway:9090",
        "testserver",
        "Gateway.",
        "",
    ],
)
async def test_addresses_and_names_without_a_dot_are_accepted_by_default(
    gw: RunningGateway, host: str
) -> None:
    """No rebinding page can be named so (a public domain has a dot); Prometheus scraping a
    compose service (``gateway:9090``) keeps working."""
    assert (await get(gw, "/healthz", host))[0] == 200
    assert (await get(gw, "/metrics", host, **AUTH))[0] == 200


@pytest.mark.parametrize(
    ("host", "shown"),
    [
        ("evil.example", "evil.example"),
        ("Evil.Example.:9090", "evil.example"),
        ("gateway.internal", "gateway.internal"),
        ("localhost.evil.example", "localhost.evil.example"),
        ("127.0.0.1.evil.example", "127.0.0.1.evil.example"),
        ("127.1", "127.1"),
        ("::1", "::1"),
        ("evil.example:x", "evil.example:x"),
    ],
)
async def test_a_foreign_host_is_refused_on_every_path(gw: RunningGateway, host: str, shown: str) -> None:
    for path, headers in (
        ("/healthz", {}),
        ("/metrics", AUTH),
        ("/api/creators", AUTH),
        ("/api/openapi.json", {}),
        ("/dashboard", {}),
        ("/login", {}),
        ("/static/dashboard.js", {}),
    ):
        status, text = await get(gw, path, host, **headers)
        assert status == 421, (path, status, text)
        assert f'"Host \\"{shown}\\" is not a name of this admin listener' in text, text


async def test_a_listed_name_is_accepted_and_the_defaults_still_hold(start_gateway, upstream_server) -> None:
    gw = await start_gateway(
        await upstream_server(origin()), '[admin]\nhosts = ["admin.example.com", "GW.Example.ORG."]\n'
    )
    for host in ("admin.example.com", "ADMIN.example.com.:443", "gw.example.org", "localhost", "gateway"):
        assert (await get(gw, "/healthz", host))[0] == 200, host
    assert (await get(gw, "/healthz", "evil.example"))[0] == 421
    assert (await get(gw, "/healthz", "example.com"))[0] == 421  # a listed name's parent is not it


async def test_a_star_accepts_any_host(start_gateway, upstream_server) -> None:
    gw = await start_gateway(await upstream_server(origin()), '[admin]\nhosts = ["*"]\n')
    assert (await get(gw, "/healthz", "evil.example:9090"))[0] == 200


async def test_a_forwarded_host_is_not_read(start_gateway, upstream_server) -> None:
    """The admin listener reads no X-Forwarded-Host (nor does its same-origin test): Host alone
    is checked, even from a trusted proxy."""
    gw = await start_gateway(await upstream_server(origin()), '[proxy]\ntrusted_proxies = ["127.0.0.1"]\n')
    assert (await get(gw, "/healthz", "127.0.0.1", **{"X-Forwarded-Host": "evil.example"}))[0] == 200
    assert (await get(gw, "/healthz", "evil.example", **{"X-Forwarded-Host": "localhost"}))[0] == 421


async def test_a_request_without_host_is_answered(gw: RunningGateway) -> None:
    """HTTP/1.0 has no Host (the supervisor's own health check sends none)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.admin.port)
    writer.write(b"GET /healthz HTTP/1.0\r\n\r\n")
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.0 200") or answer.startswith(b"HTTP/1.1 200"), answer[:100]


async def test_a_host_of_bytes_beyond_ascii_is_refused_and_shown_escaped(gw: RunningGateway) -> None:
    """Over a raw socket: aiohttp reads header bytes that are not UTF-8 as surrogates, which the
    JSON encoder refused (a 500 instead of the 421)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.admin.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: \xff\xfe.example:1\r\nConnection: close\r\n\r\n")
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.1 421"), answer[:200]
    assert b'"Host \\"\\\\xff\\\\xfe.example\\" is not a name' in answer, answer


async def test_a_reload_applies_admin_hosts(tmp_path: Path, start_gateway, upstream_server) -> None:
    """The listener reads the names from the running settings per request: no restart."""
    gw = await start_gateway(await upstream_server(origin()))
    assert (await get(gw, "/healthz", "admin.example.com"))[0] == 421
    new = make_settings(tmp_path, '[admin]\nhosts = ["admin.example.com"]\n')
    assert restart_needed(gw.gateway.settings, new) == []
    assert await gw.gateway.reload(new) == []
    assert (await get(gw, "/healthz", "admin.example.com"))[0] == 200
    assert gw.gateway.settings.options.admin.hosts == ("admin.example.com",)


@pytest.mark.parametrize(
    ("header", "hosts", "refused"),
    [
        (None, (), False),
        ("[::ffff:127.0.0.1]:1", (), False),
        ("a.localhost", (), False),
        ("localhost..", (), True),
        ("[::1", (), True),
        ("[evil.example]", (), True),
        ("[::1]x", (), True),
        ("gatewa\u0443", (), True),
        ("\uff4cocalhost", (), True),
        ("evil.example:", (), True),
        ("evil.example", ("evil.example",), False),
        ("sub.evil.example", ("evil.example",), True),
        ("anything.example", ("*",), False),
    ],
)
def test_host_refusal(header: str | None, hosts: tuple[str, ...], refused: bool) -> None:
    assert (host_refusal(header, hosts) is not None) == refused


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        (
            "hosts = ['https://admin.example.com']",
            'admin.hosts[0]: must be a bare host name like "admin.example.com", without scheme, port'
            " or path, got 'https://admin.example.com' (write \"admin.example.com\")",
        ),
        (
            "hosts = ['ok.example', 'admin.example.com:9090']",
            'admin.hosts[1]: must be a bare host name like "admin.example.com", without scheme, port or'
            " path, got 'admin.example.com:9090' (write \"admin.example.com\")",
        ),
        ("hosts = ['']", "admin.hosts[0]: must be a bare host name"),
        ("hosts = ['a b.example']", "admin.hosts[0]: must be a bare host name"),
        ("hosts = ['*', 'admin.example.com']", 'admin.hosts: "*" accepts every Host; list it alone'),
        ("hosts = ['*.example.com']", "admin.hosts[0]: must be a bare host name"),
        ("hosts = 'admin.example.com'", "admin.hosts: expected an array"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, toml: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        make_settings(tmp_path, f"[admin]\n{toml}\n")
    assert any(expected in p for p in err.value.problems), err.value.problems


def test_every_operation_documents_the_refusal() -> None:
    for path, methods in openapi_document()["paths"].items():
        for method, operation in methods.items():
            assert "421" in operation["responses"], (method, path)
