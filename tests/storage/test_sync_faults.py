"""Central sync under network faults: a TCP proxy on loopback between the sync and a real
PostgreSQL that stalls (accepts, forwards nothing) or cuts every connection mid-transaction."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

import storage.central
from gateway.metrics import Metrics
from gateway.options import CentralOptions, StorageOptions
from storage.local import LocalStore
from storage.sync import Sync
from tests.storage.test_sync import touch


class FaultProxy:
    """Forwards 127.0.0.1:``port`` to PostgreSQL, byte for byte, until told otherwise:
    ``stall()`` keeps every connection (and new ones) open but forwards nothing either way;
    ``cut()`` closes every open connection; ``heal()`` forwards again."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.stalled = asyncio.Event()
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.open: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.accepted = 0
        self.trigger: tuple[bytes, str] | None = None
        self.fired = 0

    def when_sent(self, pattern: bytes, action: str) -> None:
        """Once the client sends ``pattern``: ``"stall"`` before forwarding it, ``"cut"``
        (every connection closed) before forwarding it, or ``"lose-answer"``: forwarded, and
        the client's connection cut before the server's answer reaches it."""
        self.trigger = (pattern, action)

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def dsn(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open.append(writer)
        await self.flowing.wait()
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self.open.append(up_writer)
        pumps = [
            asyncio.ensure_future(self._pump(reader, up_writer, writer)),
            asyncio.ensure_future(self._pump(up_reader, writer)),
        ]
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        for w in (writer, up_writer):
            w.close()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client: asyncio.StreamWriter | None = None,
    ) -> None:
        while data := await reader.read(65536):
            if client is not None and self.trigger is not None and self.trigger[0] in data:
                action = self.trigger[1]
                self.trigger = None
                self.fired += 1
                if action == "stall":
                    self.stall()
                elif action == "stall-after":  # the server gets it, then the path goes silent
                    writer.write(data)
                    await writer.drain()
                    self.stall()
                    continue
                elif action == "cut":
                    self.cut()
                    return
                else:  # lose-answer: the server gets it, the client never hears back
                    writer.write(data)
                    await writer.drain()
                    client.transport.abort()
                    return
            await self.flowing.wait()  # a stall holds what it read
            writer.write(data)
            await writer.drain()

    def stall(self) -> None:
        self.flowing.clear()

    def heal(self) -> None:
        self.flowing.set()

    def cut(self) -> None:
        for writer in self.open:
            writer.transport.abort()
        self.open.clear()

    async def close(self) -> None:
        self.heal()
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def proxy(central_dsn: str) -> AsyncIterator[FaultProxy]:
    port = int(central_dsn.rsplit(":", 1)[1].split("/")[0])
    fault = FaultProxy(port)
    await fault.start()
    try:
        yield fault
    finally:
        await fault.close()


def database(dsn: str) -> str:
    return dsn.rsplit("/", 1)[1]


async def _count(dsn: str) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow("SELECT count(*) AS n, count(DISTINCT id) AS d FROM touchpoints")
        return int(row["n"]), int(row["d"])
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("pattern", "action"),
    [
        (b"FROM STDIN", "stall"),  # a batch's COPY, inside its transaction
        (b"FROM STDIN", "cut"),  # the same, the connection cut: rolled back
        (b"COMMIT", "lose-answer"),  # committed, the client never told: the batch goes again
        (b"COMMIT", "stall-after"),  # the same, the path silent
    ],
    ids=["stall-copy", "cut-copy", "commit-answer-lost", "commit-then-stall"],
)
async def test_a_fault_mid_round_fails_the_round_and_the_sync_delivers_every_row_once(
    tmp_path: Path,
    central_dsn: str,
    proxy: FaultProxy,
    monkeypatch: pytest.MonkeyPatch,
    pattern: bytes,
    action: str,
) -> None:
    """The path to PostgreSQL goes silent, or is cut, in the middle of a round: the statement's
    time limit (or the cut) fails the round, the sync reconnects once the path is back, and
    delivers every row once; the local lag ends at 0."""
    monkeypatch.setattr(storage.central, "STATEMENT_SECONDS", 1.0)
    metrics = Metrics()
    store = LocalStore(tmp_path / "n.db", StorageOptions(node="n"), metrics)
    await store.open()
    options = CentralOptions(
        batch_size=50,
        interval_seconds=0.05,
        backoff_min_seconds=0.05,
        backoff_max_seconds=0.2,
        connect_timeout=1.0,
    )
    sync = Sync(store.path, proxy.dsn(database(central_dsn)), options, metrics, node="n")
    await store.write([touch(n, f"{n:032x}") for n in range(100)])
    rows = metrics.sync_rows.labels("central", "touchpoints")
    errors = metrics.sync_errors.labels("central")
    task = asyncio.create_task(sync.run())
    try:
        async with asyncio.timeout(20):
            while rows._value.get() < 100:
                await asyncio.sleep(0.02)
        proxy.when_sent(pattern, action)
        await store.write([touch(n, f"{n:032x}") for n in range(100, 400)])
        async with asyncio.timeout(20):
            while errors._value.get() < 1:
                await asyncio.sleep(0.02)
        assert proxy.fired == 1
        proxy.heal()
        proxy.cut()  # what a silent path's connections come to in the end
        async with asyncio.timeout(20):
            while (
                metrics.sync_lag_rows.labels("central", "touchpoints")._value.get() or rows._value.get() < 300
            ):
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()
    assert await _count(central_dsn) == (400, 400)


@pytest.mark.parametrize(
    ("pattern", "what"),
    [
        (b"JOIN erased_keys e ON e.key = s.user_key", "a batch of bindings, the erasure lock held"),
        (b"coalesce(max(version), 0)", "the schema check, the migration lock held"),
    ],
    ids=["erasure-lock", "migration-lock"],
)
async def test_a_node_gone_silent_inside_a_transaction_does_not_hold_every_other_nodes_sync(
    tmp_path: Path,
    central_dsn: str,
    proxy: FaultProxy,
    monkeypatch: pytest.MonkeyPatch,
    pattern: bytes,
    what: str,
) -> None:
    """Node A's path to PostgreSQL goes silent right after its batch of bindings took the
    erasure lock (exclusive). The server cannot tell a silent client from a slow one: unless
    told to give up on a session idle inside a transaction, it keeps A's transaction, and its
    lock, open until TCP keepalive gives up (hours), and node B's rounds wait on it and fail,
    one after another (until 2026-12-06). Told, it ends A's transaction, and B delivers. The
    same for the migration lock every node takes as it connects (a session's lock until then,
    kept as long as the session)."""
    monkeypatch.setattr(storage.central, "STATEMENT_SECONDS", 1.0)
    options = CentralOptions(batch_size=50, connect_timeout=1.0)
    patient = CentralOptions(batch_size=50, connect_timeout=30.0)  # B's statements wait 30 s
    stores = []
    for name in ("a", "b"):
        store = LocalStore(tmp_path / f"{name}.db", StorageOptions(node=name), Metrics())
        await store.open()
        stores.append(store)
    a, b = stores
    direct = Sync(b.path, central_dsn, patient, Metrics(), node="b")
    await direct.once()  # the schema
    from tests.storage.test_sync import bind

    await a.write([bind(f"{n:032x}", f"u{n}", node="a") for n in range(10)])
    await b.write([touch(n, f"{n:032x}", node="b") for n in range(10)])
    proxy.when_sent(pattern, "stall")
    silent = Sync(a.path, proxy.dsn(database(central_dsn)), options, Metrics(), node="a")
    stuck = asyncio.create_task(silent.once())
    try:
        async with asyncio.timeout(10):
            while not proxy.fired:
                await asyncio.sleep(0.02)
        delivered = await direct.once()
        assert delivered["touchpoints"] == 10, what
    finally:
        stuck.cancel()
        await asyncio.gather(stuck, return_exceptions=True)
        for store in stores:
            await store.close()


@pytest.mark.parametrize(
    ("pattern", "action"),
    [(b"FROM STDIN", "cut"), (b"COMMIT", "lose-answer")],
    ids=["cut-copy", "commit-answer-lost"],
)
async def test_a_connection_lost_mid_round_is_said_as_one(
    tmp_path: Path,
    central_dsn: str,
    proxy: FaultProxy,
    caplog: pytest.LogCaptureFixture,
    pattern: bytes,
    action: str,
) -> None:
    """PostgreSQL stopped (or the network cut) while a round was in its transaction: the warning
    said asyncpg's words alone, `InterfaceError: cannot call Transaction.__aexit__(): the
    underlying connection is closed` or `ConnectionDoesNotExistError: connection was closed in
    the middle of operation` (until 2026-12-07), naming a Python method and no cause or
    consequence. It now says the connection was lost, why that happens, and that nothing is
    lost or doubled."""
    metrics = Metrics()
    store = LocalStore(tmp_path / "n.db", StorageOptions(node="n"), metrics)
    await store.open()
    options = CentralOptions(
        batch_size=50,
        interval_seconds=0.05,
        backoff_min_seconds=0.05,
        backoff_max_seconds=0.2,
        connect_timeout=1.0,
        url="env:GATEWAY_CENTRAL_URL",
    )
    sync = Sync(store.path, proxy.dsn(database(central_dsn)), options, metrics, node="n")
    await store.write([touch(n, f"{n:032x}") for n in range(10)])
    rows = metrics.sync_rows.labels("central", "touchpoints")
    errors = metrics.sync_errors.labels("central")
    caplog.set_level("INFO", logger="gateway.sync")
    task = asyncio.create_task(sync.run())
    try:
        async with asyncio.timeout(20):
            while rows._value.get() < 10:
                await asyncio.sleep(0.02)
        proxy.when_sent(pattern, action)
        await store.write([touch(n, f"{n:032x}") for n in range(10, 20)])
        async with asyncio.timeout(20):
            while errors._value.get() < 1 or rows._value.get() < 20:
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()
    failed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("central sync failed")]
    assert len(failed) == 1, failed
    assert "__aexit__" not in failed[0], failed[0]
    assert (
        "the connection to the server in central.url (GATEWAY_CENTRAL_URL) was lost in the middle"
        " of a round (the server stopped or restarted, or the network cut it): the round goes"
        " again, and rows it had sent are not doubled"
    ) in failed[0], failed[0]
    assert await _count(central_dsn) == (20, 20)
