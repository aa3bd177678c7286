"""Shared fixtures: settings from TOML text, a real gateway (proxy + admin) on loopback
in front of a real aiohttp upstream, a self-signed certificate for a TLS listener on loopback,
and a guard that fails any test blocking the loop."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import os
import re
import signal
import textwrap
import tomllib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from blockbuster import BlockBuster, blockbuster_ctx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bench.pgserver import PostgresServer, binaries, start_server
from gateway.config import Settings, load_settings
from gateway.protocol_errors import Runner
from gateway.server import Gateway, create_gateway, handler_args

SECRET = "s" * 40
TOKEN = "t" * 40
ENV = {"GATEWAY_SECRET": SECRET, "GATEWAY_ADMIN_TOKEN": TOKEN}

# A suite started in the background of a script (`make test &`, no job control) inherits SIGINT
# ignored, and so would every gateway command a test starts: Python keeps a SIGINT ignored at
# its start ignored, so the tests that press Ctrl-C on a command would see nothing happen.
# The commands are tested as a terminal starts them.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


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
    """Settings from TOML text (dedented); the store goes in ``tmp_path``, also when the text
    has a ``[storage]`` table of its own without a ``path`` (until 2026-12-07 such a test's
    store was ``gateway.db`` in the working directory: the checkout's own, the one ``make run``
    writes, so a test run after the README's first command read the demo's rows)."""
    text = textwrap.dedent(toml)
    here = f'path = "{tmp_path / "gateway.db"}"'
    if "[storage]" not in text:
        text += f'\n[storage]\n{here}\nnode = "test"\n'
    elif "path" not in _storage_table(text):
        text = re.sub(r"^\[storage\][ \t]*$", f"[storage]\n{here}", text, count=1, flags=re.MULTILINE)
    settings = load_settings(None, text=text, environ={**ENV, **env})
    return settings


def _storage_table(text: str) -> dict[str, Any]:
    """The ``[storage]`` table of TOML ``text``; all of it when the text is no TOML (a test of
    the config error: ``load_settings`` says so), so that nothing is added to it."""
    try:
        table = tomllib.loads(text).get("storage", {})
    except tomllib.TOMLDecodeError:
        return {"path": None}
    return table if isinstance(table, dict) else {"path": None}


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (and its key), written as PEM files in ``folder``: what a
    TLS listener on loopback serves (the TLS origin of the upstream tests, nginx in the deploy
    tests). It is its own CA, so a client can trust it alone (``SSL_CERT_FILE``)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


class ListenerTestServer(TestServer):
    """A test listener run as the gateway runs its own (``gateway.protocol_errors.Runner``,
    given ``listener``: ``Gateway.listener``'s): what aiohttp refuses itself is answered as
    the gateway answers there."""

    def __init__(
        self, app: web.Application, *, listener: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(app, **kwargs)
        self.listener = listener or {}

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        return Runner(self.app, **self.listener, **kwargs)


@dataclass
class RunningGateway:
    gateway: Gateway
    proxy: TestServer
    admin: TestServer
    session: aiohttp.ClientSession
    background: list[asyncio.Task[None]] = field(default_factory=list)

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


def _plain_admin_answers(port: int | None) -> aiohttp.ClientMiddlewareType:
    """The test session reads the proxy's answers undecoded (``auto_decompress=False``: the
    proxy must pass the site's bytes on as they came), and so would get the admin API's larger
    answers gzip-compressed for the ``Accept-Encoding`` aiohttp sends by default. To the admin
    listener it sends none, as curl without ``--compressed``; a test of the compression asks
    with a client of its own."""

    async def middleware(
        request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        if request.url.port == port:
            request.headers.popall("Accept-Encoding", None)
        return await handler(request)

    return middleware


@pytest.fixture
async def start_gateway(tmp_path: Path) -> AsyncIterator[GatewayFactory]:
    """``await start_gateway(upstream_url, toml)``: a running gateway; closed after the test."""
    started: list[RunningGateway] = []

    async def start(upstream: str, toml: str = "", env: dict[str, str] | None = None) -> RunningGateway:
        settings = make_settings(tmp_path, toml, **(env or {}))
        gw = create_gateway(settings, upstream)
        proxy = ListenerTestServer(
            gw.proxy_app, host="127.0.0.1", listener=gw.listener(public=True), **handler_args(settings)
        )
        await proxy.start_server()
        admin = ListenerTestServer(gw.admin_app, host="127.0.0.1", listener=gw.listener(public=False))
        await admin.start_server()
        session = aiohttp.ClientSession(
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            middlewares=(_plain_admin_answers(admin.port),),
        )
        running = RunningGateway(gw, proxy, admin, session)
        # As `serve` does in the process with the admin listener: the event log's readers.
        running.background = [asyncio.create_task(task(), name=name) for name, task in gw.background.items()]
        started.append(running)
        return running

    yield start
    for running in started:
        for task in running.background:
            task.cancel()
        await asyncio.gather(*running.background, return_exceptions=True)
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


@pytest.fixture(scope="session")
def postgres_server(request: pytest.FixtureRequest) -> Iterator[PostgresServer]:
    """initdb + pg_ctl in a temporary folder, as the ``postgres`` user when running as root.
    Missing binaries skip these tests locally and fail them in CI (``CI`` set)."""
    if binaries() is None:
        message = "PostgreSQL server binaries (initdb, pg_ctl) not found; apt-get install postgresql"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must run the central store tests)")
        pytest.skip(message)
    server = start_server()
    # A run ended by SIGTERM (a CI job's timeout, `kill`) died at once by default, with no
    # teardown: this server, a postmaster owned by `postgres`, kept running and its folder in
    # /tmp stayed.
    with sigterm_as_ctrl_c(request.session):
        try:
            yield server
        finally:
            server.close()


@contextlib.contextmanager
def sigterm_as_ctrl_c(session: pytest.Session) -> Iterator[None]:
    """While it lasts, a run ended by SIGTERM stops as on Ctrl-C (a KeyboardInterrupt), tearing
    fixtures down and running each ``finally``; and, should the code under test take that for
    its own Ctrl-C (a command run in-process exits 130), the run still stops after that test.
    Nothing changes where SIGTERM already has a handler (this one, from an enclosing use)."""

    def stop(signum: int, frame: object) -> None:
        session.shouldstop = f"stopped by {signal.Signals(signum).name}"
        raise KeyboardInterrupt(session.shouldstop)

    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        if previous is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


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


# --- A Segment-compatible batch API for the sinks' tests ---------------------------------------

WRITE_KEY = "wk_" + "w" * 30


@dataclass
class BatchApi:
    """A Segment-compatible batch endpoint: records every call; fails on demand."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    fail: list[int] = field(default_factory=list)
    """Statuses to answer, in order, before accepting again (500, 429…)."""
    fail_on: dict[int, int] = field(default_factory=dict)
    """Request number (1 = the first received) → the status it gets instead of 200."""
    received: int = 0
    url: str = ""
    refuse: dict[str, int] = field(default_factory=dict)
    """messageId → the status that refuses any batch holding it (400, 413…), every time."""

    @property
    def unique(self) -> dict[str, dict[str, Any]]:
        return {c["messageId"]: c for c in self.calls}

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.headers.append(dict(request.headers))
        self.received += 1
        if self.fail or self.received in self.fail_on:
            status = self.fail.pop(0) if self.fail else self.fail_on[self.received]
            return web.json_response({"error": "try later"}, status=status, headers={"Retry-After": "0"})
        batch = (await request.json())["batch"]
        if refused := [self.refuse[m["messageId"]] for m in batch if m["messageId"] in self.refuse]:
            return web.json_response({"error": "invalid message"}, status=refused[0])
        # Segment's HTTP API: each message needs a userId and/or an anonymousId (its strict mode
        # answers 400; otherwise it drops the message behind a 200).
        if any(not (m.get("userId") or m.get("anonymousId")) for m in batch):
            return web.json_response({"error": "userId or anonymousId is required"}, status=400)
        self.bodies.append(body)
        self.calls.extend(batch)
        return web.json_response({"success": True})


@pytest.fixture
async def batch_api(upstream_server: Callable[[web.Application], Awaitable[str]]) -> BatchApi:
    api = BatchApi()
    app = web.Application()
    app.router.add_post("/v1/batch", api.handle)
    app.router.add_post("/hook", api.handle)
    api.url = await upstream_server(app)
    return api


def sink_toml(api: BatchApi, kind: str = "segment", **extra: Any) -> str:
    url = api.url if kind == "segment" else api.url + "/hook"
    lines = [f'[[sinks]]\nname = "out"\nkind = "{kind}"\nurl = "{url}"\nsecret = "env:SINK_SECRET"']
    lines += [f"{k} = {v!r}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def raw_upstream() -> AsyncIterator[Callable[[RawHandler], Awaitable[str]]]:
    """``await raw_upstream(handler)``: an asyncio server on loopback writing exact bytes."""
    servers: list[asyncio.Server] = []
    handlers: list[asyncio.Task[object]] = []

    async def start(handler: RawHandler) -> str:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if (task := asyncio.current_task()) is not None:
                handlers.append(task)
            try:
                await handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for task in handlers:
        task.cancel()
    await asyncio.gather(*handlers, return_exceptions=True)
    for server in servers:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def node_role(
    owner: Any, central_dsn: str, revoke: tuple[str, ...] = ()
) -> AsyncIterator[tuple[str, str]]:
    """A login role with a node's rights on the central store ``owner`` is connected to
    (CONNECT and TEMPORARY on the database, USAGE on the schema, SELECT, INSERT, UPDATE, DELETE
    on every table there), less every right on the ``revoke`` tables: its name and DSN.
    Dropped afterwards, with what it owns."""
    role = f"gw_node{uuid.uuid4().hex[:12]}"
    database = await owner.fetchval("SELECT current_database()")
    await owner.execute(f"CREATE ROLE {role} LOGIN")
    try:
        await owner.execute(f"GRANT CONNECT, TEMPORARY ON DATABASE {database} TO {role}")
        await owner.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        await owner.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}")
        for table in revoke:
            await owner.execute(f"REVOKE ALL ON {table} FROM {role}")
        yield role, central_dsn.replace("://postgres@", f"://{role}@")
    finally:
        await owner.execute(f"DROP OWNED BY {role}")
        await owner.execute(f"DROP ROLE IF EXISTS {role}")
