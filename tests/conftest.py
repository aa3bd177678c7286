"""Shared fixtures: settings from TOML text, a real gateway (proxy + admin) on loopback
in front of a real aiohttp upstream, and a guard that fails any test blocking the loop."""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import textwrap
import uuid
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
            # asyncpg looks for ~/.pgpass and ~/.postgresql/ client certificates while it parses
            # connection parameters: a few stat() calls per (re)connect, never per request.
            function.can_block_in("asyncpg/connect_utils.py", {"_parse_connect_dsn_and_args"})
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


# --- A throwaway PostgreSQL for the central store's tests -------------------------------------


def _pg_bin(name: str) -> str | None:
    """Debian keeps the server binaries off PATH, in /usr/lib/postgresql/<version>/bin."""
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        candidate = Path(folder) / name
        if candidate.exists():
            return str(candidate)
    return shutil.which(name)


@dataclass
class PostgresServer:
    """One server for the whole test session (one database per test); tests may stop and start it."""

    data: Path
    port: int
    pg_ctl: str
    prefix: list[str]

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _ctl_args(self, action: str) -> list[str]:
        options = f"-k {self.data} -p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off"
        args = [*self.prefix, self.pg_ctl, "-D", str(self.data), "-w", "-t", "60"]
        if action == "start":
            return [*args, "-o", options, "-l", str(self.data / "server.log"), "start"]
        return [*args, "-m", "fast", "stop"]

    async def stop(self) -> None:
        await self._ctl("stop")

    async def start(self) -> None:
        await self._ctl("start")

    async def _ctl(self, action: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            *self._ctl_args(action), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await proc.communicate()
        assert proc.returncode == 0, f"pg_ctl {action} failed: {out.decode(errors='replace')}"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """initdb + pg_ctl in a temporary folder, as the ``postgres`` user when running as root.
    Missing binaries skip these tests locally and fail them in CI (``CI`` set)."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        message = "PostgreSQL server binaries (initdb, pg_ctl) not found; apt-get install postgresql"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must run the central store tests)")
        pytest.skip(message)
    root = Path(tempfile.mkdtemp(prefix="gw-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        shutil.chown(root, "postgres", "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    data = root / "data"
    subprocess.run(
        [*prefix, initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"],
        check=True,
        capture_output=True,
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = PostgresServer(data, port, pg_ctl, prefix)
    subprocess.run(server._ctl_args("start"), check=True, capture_output=True)
    try:
        yield server
    finally:
        subprocess.run(server._ctl_args("stop"), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def central_dsn(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """A fresh, empty database on the session's server; its DSN."""
    import asyncpg

    name = f"t_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(postgres_server.dsn())
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    yield postgres_server.dsn(name)
