"""Shared fixtures: settings from TOML text, a real gateway (proxy + admin) on loopback
in front of a real aiohttp upstream, and a guard that fails any test blocking the loop."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from blockbuster import BlockBuster, blockbuster_ctx

from gateway.config import Settings, load_settings
from gateway.server import Gateway, create_gateway, handler_args

SECRET = "s" * 40
TOKEN = "t" * 40
ENV = {"GATEWAY_SECRET": SECRET, "GATEWAY_ADMIN_TOKEN": TOKEN}


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    """Fail any test whose code makes a blocking call on the event loop."""
    with blockbuster_ctx() as bb:
        # Config loading runs before the gateway serves (in tests: inside async fixtures).
        for function in bb.functions.values():
            function.can_block_in("gateway/config.py", {"load_settings"})
        yield bb


def make_settings(tmp_path: Path, toml: str = "", **env: str) -> Settings:
    """Settings from TOML text (dedented); the store goes in ``tmp_path``."""
    text = textwrap.dedent(toml)
    if "[storage]" not in text:
        text += f'\n[storage]\npath = "{tmp_path / "gateway.db"}"\nnode = "test"\n'
    settings = load_settings(None, text=text, environ={**ENV, **env})
    return settings


@dataclass
class RunningGateway:
    gateway: Gateway
    proxy: TestServer
    admin: TestServer
    session: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return str(self.proxy.make_url("/")).rstrip("/")

    @property
    def admin_url(self) -> str:
        return str(self.admin.make_url("/")).rstrip("/")

    async def api(self, path: str, **params: Any) -> Any:
        async with self.session.get(
            self.admin_url + path, params=params, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as resp:
            return await resp.json()


GatewayFactory = Callable[..., Awaitable[RunningGateway]]


@pytest.fixture
async def start_gateway(tmp_path: Path) -> AsyncIterator[GatewayFactory]:
    """``await start_gateway(upstream_url, toml)``: a running gateway; closed after the test."""
    started: list[RunningGateway] = []

    async def start(upstream: str, toml: str = "", env: dict[str, str] | None = None) -> RunningGateway:
        settings = make_settings(tmp_path, toml, **(env or {}))
        gw = create_gateway(settings, upstream)
        proxy = TestServer(gw.proxy_app, host="127.0.0.1", **handler_args(settings))
        await proxy.start_server()
        admin = TestServer(gw.admin_app, host="127.0.0.1")
        await admin.start_server()
        session = aiohttp.ClientSession(auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar())
        running = RunningGateway(gw, proxy, admin, session)
        started.append(running)
        return running

    yield start
    for running in started:
        await running.session.close()
        await running.proxy.close()
        await running.admin.close()


@pytest.fixture
async def upstream_server() -> AsyncIterator[Callable[[web.Application], Awaitable[str]]]:
    """``await upstream_server(app)``: a real aiohttp origin on loopback; returns its URL."""
    servers: list[TestServer] = []

    async def start(app: web.Application) -> str:
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("/")).rstrip("/")

    yield start
    for server in servers:
        await server.close()
