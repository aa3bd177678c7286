"""The durability promise, end to end: a touchpoint whose response was received survives
``kill -9`` of the gateway; and tracking fails open: a broken store never breaks the page."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from bench.ports import free_port
from tests.conftest import ENV, TOKEN, GatewayFactory, RunningGateway
from tests.gatewayproc import GatewayProcess as GatewayRun
from tests.storage.stores import execute, query

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 30
LOAD_SECONDS = 1.0
MAX_REQUESTS = 20_000


def landing_app() -> web.Application:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<html>landing</html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    return app


class GatewayProcess:
    """``python -m gateway run`` on loopback ports, its store in ``tmp_path``."""

    def __init__(self, tmp_path: Path, upstream: str, name: str) -> None:
        self.tmp_path = tmp_path
        self.upstream = upstream
        self.name = name
        self.db = tmp_path / "gw.db"
        self.proc: asyncio.subprocess.Process | None = None
        self.log = tmp_path / f"{name}.log"

    async def start(self) -> None:
        self.port, self.admin_port = await asyncio.to_thread(free_port), await asyncio.to_thread(free_port)
        config = self.tmp_path / f"{self.name}.toml"
        text = (
            f'[proxy]\nlisten = "127.0.0.1:{self.port}"\nupstream = "{self.upstream}"\n'
            # One process: kill -9 must hit the process holding the store writer, not a supervisor.
            "workers = 1\n"
            f'[admin]\nlisten = "127.0.0.1:{self.admin_port}"\n'
            # A long bound on the commit wait: every response received here was confirmed,
            # none went out on the fail-open timeout.
            f'[storage]\npath = "{self.db}"\nnode = "durability"\ndurability = "commit"\n'
            "max_wait_ms = 10000\n"
        )
        await asyncio.to_thread(config.write_text, text)
        log = await asyncio.to_thread(open, self.log, "wb")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gateway",
                "run",
                "-c",
                str(config),
                cwd=ROOT,
                env={**os.environ, **ENV},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        finally:
            await asyncio.to_thread(log.close)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def wait_ready(self, session: aiohttp.ClientSession, timeout: float = 10) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                break
            with contextlib.suppress(aiohttp.ClientError):
                # The proxy listens first, the admin API just after it: both, before a test
                # asks either (a run once asked the admin API in between and was refused).
                async with session.get(self.url + "/ready") as resp:
                    proxied = resp.status == 200
                async with session.get(f"http://127.0.0.1:{self.admin_port}/healthz") as resp:
                    if proxied and resp.status == 200:
                        return
            await asyncio.sleep(0.05)
        output = await asyncio.to_thread(self.log.read_text)
        pytest.fail(f"gateway did not start (exit {self.proc.returncode}):\n{output}")

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@pytest.fixture
async def processes() -> AsyncIterator[list[GatewayProcess]]:
    """Every gateway process a test starts is killed at the end, whatever happened."""
    started: list[GatewayProcess] = []
    try:
        yield started
    finally:
        for gw in started:
            await gw.kill()


async def load_then_kill_9(gw: GatewayProcess, run: int) -> tuple[set[int], int]:
    """Land ``run``-tagged visits on ``gw`` from many connections for a while, then ``kill -9``
    it mid-load; the visits whose 200 came back, and how many were sent."""
    received: set[int] = set()
    sent = 0
    killed = asyncio.Event()

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal sent
        while not killed.is_set() and sent < MAX_REQUESTS:
            n, sent = sent, sent + 1
            try:
                url = f"{gw.url}/land?utm_source=load&utm_campaign=run{run}&utm_content={n}"
                async with session.get(url) as resp:
                    body = await resp.read()
                    if resp.status == 200 and body == b"<html>landing</html>":
                        received.add(n)
            except (aiohttp.ClientError, ConnectionError):
                if killed.is_set():
                    return
                await asyncio.sleep(0.01)

    connector = aiohttp.TCPConnector(limit=WORKERS)
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as session:
        await gw.wait_ready(session)
        async with asyncio.timeout(15):
            workers = [asyncio.create_task(worker(session)) for _ in range(WORKERS)]
            await asyncio.sleep(LOAD_SECONDS)
            in_flight_before = sent - len(received)
            assert gw.proc is not None
            gw.proc.send_signal(signal.SIGKILL)  # mid-load: requests are in flight
            await gw.proc.wait()
            killed.set()
            await asyncio.gather(*workers)
    assert gw.proc.returncode == -signal.SIGKILL
    assert len(received) >= 50, f"too little load to mean anything: {len(received)} of {sent}"
    assert in_flight_before > 0
    return received, sent


async def stored_runs(db: Path) -> dict[str, list[int]]:
    """The stored load visits of each run (campaign ``runN``), in id order."""
    rows = await asyncio.to_thread(query, db, "SELECT campaign, content FROM touchpoints ORDER BY id")
    runs: dict[str, list[int]] = {}
    for campaign, content in rows:
        runs.setdefault(campaign, []).append(int(content))
    return runs


def assert_none_lost_or_doubled(received: set[int], sent: int, stored: list[int]) -> None:
    lost = sorted(received - set(stored))
    assert lost == [], f"{len(lost)} acknowledged touchpoints lost, e.g. {lost[:10]}"
    assert len(stored) == len(set(stored)), "a landing was stored twice"
    assert len(stored) <= sent


async def test_kill_9_under_load_loses_no_acknowledged_touchpoint(
    tmp_path: Path,
    upstream_server: Callable[[web.Application], Awaitable[str]],
    processes: list[GatewayProcess],
) -> None:
    """Two crashes in a row on the same file: killed mid-load, restarted (WAL recovery),
    loaded and killed again, then restarted and stopped gracefully. Across all three runs no
    acknowledged touchpoint is lost and none is stored twice."""
    upstream = await upstream_server(landing_app())
    db = tmp_path / "gw.db"
    outcomes: dict[str, tuple[set[int], int]] = {}
    for run in (1, 2):
        gw = GatewayProcess(tmp_path, upstream, f"run{run}")
        processes.append(gw)
        await gw.start()
        outcomes[f"run{run}"] = await load_then_kill_9(gw, run)
        runs = await stored_runs(db)
        for name, (received, sent) in outcomes.items():  # the earlier run's rows are all still there
            assert_none_lost_or_doubled(received, sent, runs.get(name, []))
    [(count, distinct)] = await asyncio.to_thread(
        query, db, "SELECT count(*), count(DISTINCT id) FROM touchpoints"
    )
    assert count == distinct == sum(len(v) for v in runs.values())

    # The same file after two crashes: the gateway starts, serves, records and reads it all.
    again = GatewayProcess(tmp_path, upstream, "third")
    processes.append(again)
    await again.start()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        await again.wait_ready(session)
        async with session.get(f"{again.url}/land?utm_source=load&utm_campaign=run3&utm_content=-1") as resp:
            assert resp.status == 200
        async with session.get(
            f"http://127.0.0.1:{again.admin_port}/api/touchpoints",
            params={"source": "load", "limit": "1"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as resp:
            assert resp.status == 200
            page = await resp.json()
    assert page["ok"] is True and len(page["items"]) == 1
    assert again.proc is not None
    again.proc.send_signal(signal.SIGTERM)  # graceful this time: flush and exit 0
    async with asyncio.timeout(10):
        assert await again.proc.wait() == 0
    assert await stored_runs(db) == {**runs, "run3": [-1]}


# -- fail open ---------------------------------------------------------------------------------


async def unconfirmed(gw: RunningGateway, reason: str) -> float:
    async with gw.session.get(
        gw.admin_url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
    ) as resp:
        assert resp.status == 200
        text = await resp.text()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "gateway_events_unconfirmed_total" and s.labels.get("reason") == reason:
                return s.value
    return 0.0


async def land(gw: RunningGateway, content: str) -> None:
    async with gw.session.get(f"{gw.url}/land?utm_source=news&utm_content={content}") as resp:
        assert resp.status == 200
        assert await resp.text() == "<html>landing</html>"


@pytest.fixture
async def gateway(
    start_gateway: GatewayFactory, upstream_server: Callable[[web.Application], Awaitable[str]]
) -> RunningGateway:
    return await start_gateway(await upstream_server(landing_app()))


async def test_a_closed_store_still_serves_pages_and_counts_them(gateway: RunningGateway) -> None:
    await land(gateway, "before")
    assert await unconfirmed(gateway, "store_error") == 0
    await gateway.gateway.store.close()
    for n in range(3):
        await land(gateway, str(n))
    assert await unconfirmed(gateway, "store_error") == 3


async def fail_commits(db: Path) -> None:
    """Every later insert of a touchpoint fails (a trigger raising), until ``DROP TRIGGER fail``."""
    await asyncio.to_thread(
        execute,
        db,
        "CREATE TRIGGER fail BEFORE INSERT ON touchpoints BEGIN SELECT RAISE(ABORT, 'disk says no'); END;",
    )


async def test_failing_commits_still_serve_pages_and_count_them(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    db = gateway.gateway.settings.store_path
    await land(gateway, "before")
    await fail_commits(db)
    await asyncio.gather(*(land(gateway, f"lost{n}") for n in range(5)))
    assert await unconfirmed(gateway, "store_error") == 5

    await asyncio.to_thread(execute, db, "DROP TRIGGER fail;")
    await land(gateway, "after")
    assert await unconfirmed(gateway, "store_error") == 5
    rows = await asyncio.to_thread(query, db, "SELECT content FROM touchpoints ORDER BY id")
    assert [c for (c,) in rows] == ["before", "after"]


async def test_a_store_failing_on_every_request_does_not_flood_the_log(
    gateway: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """A full or read-only disk fails every landing's commit. Each is counted, but the log
    says so once, then at most once every 10 s with how many more: one line per request
    would grow the log on the very disk that is full."""
    db = gateway.gateway.settings.store_path
    await land(gateway, "before")
    await fail_commits(db)
    caplog.clear()
    for n in range(30):
        await land(gateway, f"lost{n}")
    assert await unconfirmed(gateway, "store_error") == 30
    not_stored = [r for r in caplog.records if r.getMessage().startswith("events not stored")]
    commits = [r for r in caplog.records if r.getMessage().startswith("store commit of")]
    assert len(not_stored) == 1 and len(commits) == 1, [r.getMessage() for r in caplog.records]
    assert "disk says no" in not_stored[0].getMessage()


async def metric(gw: RunningGateway, name: str) -> float:
    async with gw.session.get(
        gw.admin_url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
    ) as resp:
        text = await resp.text()
    return sum(
        s.value for family in text_string_to_metric_families(text) for s in family.samples if s.name == name
    )


async def writer_pragma(gw: RunningGateway, pragma: str) -> None:
    """A PRAGMA on the store's own writer connection (both used here are per connection)."""
    db = gw.gateway.store._db  # the one writer: a full disk or read-only file is seen by it
    assert db is not None
    await db.execute(pragma)


async def test_full_database_still_serves_pages_and_counts_the_loss(gateway: RunningGateway) -> None:
    """A full disk, simulated by capping the database at its current size: every landing is
    still served; each one is either stored or counted unconfirmed, none silently lost."""
    db = gateway.gateway.settings.store_path
    await land(gateway, "before")
    [(pages,)] = await asyncio.to_thread(query, db, "PRAGMA page_count")
    await writer_pragma(gateway, f"PRAGMA max_page_count = {pages}")
    sent = []
    for n in range(300):  # until the cap bites: the first pages may still have room
        sent.append(f"full{n:03d}-" + "x" * 150)
        await land(gateway, sent[-1])
        if await unconfirmed(gateway, "store_error") >= 5:
            break
    lost = await unconfirmed(gateway, "store_error")
    assert lost >= 5, "the database never filled up"
    assert await metric(gateway, "gateway_store_errors_total") >= 1
    stored = {c for (c,) in await asyncio.to_thread(query, db, "SELECT content FROM touchpoints")}
    assert len(set(sent) - stored) == lost  # what is missing is exactly what was counted

    await writer_pragma(gateway, "PRAGMA max_page_count = 1073741823")  # space freed
    await land(gateway, "after")
    assert await unconfirmed(gateway, "store_error") == lost
    assert ("after",) in await asyncio.to_thread(query, db, "SELECT content FROM touchpoints")


async def test_read_only_store_still_serves_pages_and_counts_the_loss(gateway: RunningGateway) -> None:
    """A store that became read-only (as root, file modes cannot show it; SQLite's query_only
    fails writes with the same SQLITE_READONLY a read-only file or mount gives)."""
    db = gateway.gateway.settings.store_path
    await land(gateway, "before")
    await writer_pragma(gateway, "PRAGMA query_only = ON")
    await asyncio.gather(*(land(gateway, f"ro{n}") for n in range(4)))
    assert await unconfirmed(gateway, "store_error") == 4
    async with gateway.session.get(gateway.admin_url + "/healthz") as resp:
        assert resp.status == 200  # the writer is alive; it is the disk that refuses
        health = await resp.json()
    assert health["status"] == "degraded"  # but a probe reading the answer can tell
    expected = "commits are failing (read-only store), events are being lost; the log says why"
    assert health["store"] == expected  # the kind alone: /healthz answers anyone
    assert health["failing_since"].endswith("Z")
    await writer_pragma(gateway, "PRAGMA query_only = OFF")
    await land(gateway, "after")
    async with gateway.session.get(gateway.admin_url + "/healthz") as resp:
        assert (await resp.json())["status"] == "ok"  # a commit went through again
    rows = await asyncio.to_thread(query, db, "SELECT content FROM touchpoints ORDER BY id")
    assert [c for (c,) in rows] == ["before", "after"]


def _modes(folder: Path, read_only: bool) -> None:
    for path in (*folder.iterdir(), folder):
        path.chmod((0o555 if path.is_dir() else 0o444) if read_only else (0o755 if path.is_dir() else 0o644))


async def test_a_store_read_only_at_start_is_said_at_start(tmp_path: Path) -> None:
    """A store its user may only read (its files or folder, a read-only mount): SQLite opens it
    read-only without a word, and ``/healthz`` said ``ok`` until the first landing failed. Now
    the start says so, naming the file, and ``/healthz`` is ``degraded`` from the first probe;
    pages are still served (fail open). As root, only a read-only mount shows it, and SQLite
    opens a store there only while its ``-wal`` and ``-shm`` exist (a connection holds them)."""
    folder = tmp_path / "data"
    store = folder / "gw.db"
    config = tmp_path / "gw.toml"
    listen = "[proxy]\nworkers = 1\nlisten = '127.0.0.1:0'\n[admin]\nlisten = '127.0.0.1:0'\n"
    await asyncio.to_thread(config.write_text, f"[storage]\npath = '{store}'\n{listen}")
    gw = await GatewayRun.start(config)  # makes and migrates the store
    assert await gw.stop() == 0
    holder = await asyncio.to_thread(sqlite3.connect, store, check_same_thread=False)
    await asyncio.to_thread(holder.execute, "SELECT count(*) FROM touchpoints")  # -wal and -shm stay
    mounted = os.geteuid() == 0
    try:
        if mounted:
            done = await asyncio.create_subprocess_exec(
                "mount", "--bind", "-o", "ro", str(folder), str(folder), stderr=asyncio.subprocess.PIPE
            )
            _, err = await done.communicate()
            if done.returncode != 0:
                mounted = False
                pytest.skip(f"only a read-only mount shows a read-only store to root: {err.decode()}")
        else:
            await asyncio.to_thread(_modes, folder, True)
        gw = await GatewayRun.start(config)
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(gw.admin + "/healthz") as resp:
                    health = await resp.json()
                assert resp.status == 200 and health["status"] == "degraded", health
                expected = "commits are failing (read-only store), events are being lost; the log says why"
                assert health["store"] == expected
                async with session.get(gw.proxy + "/?utm_source=x") as resp:
                    assert resp.status == 200  # served all the same
            said = [r["msg"] for r in gw.logs() if r["level"] == "error" and "read-only" in r["msg"]]
            assert said and said[0].startswith(f"the store {store} is read-only to this process ({store} "), (
                said
            )
        finally:
            await gw.stop()
    finally:
        await asyncio.to_thread(holder.close)
        if mounted:
            await (await asyncio.create_subprocess_exec("umount", str(folder))).wait()
        elif os.geteuid() != 0:
            await asyncio.to_thread(_modes, folder, False)


async def test_a_store_locked_by_another_process_keeps_the_events_until_it_is_free(
    gateway: RunningGateway,
) -> None:
    """Another process holding the write lock past the busy timeout (a ``sqlite3`` shell left
    in ``BEGIN EXCLUSIVE``, a long backup): the pages are served once ``max_wait_ms`` is up,
    and the events stay queued and are written once the lock is released, as the README
    promises for a commit that is merely late. Until 2026-12-05 the batch failed on
    ``database is locked`` after the busy timeout and its events, whose responses had gone out
    counted as ``timeout`` (meaning "still written"), were dropped."""
    db = gateway.gateway.settings.store_path
    await land(gateway, "before")
    await writer_pragma(gateway, "PRAGMA busy_timeout = 50")  # the lock outlasts it at once
    holder = await asyncio.to_thread(sqlite3.connect, db, isolation_level=None, check_same_thread=False)
    try:
        await asyncio.to_thread(holder.execute, "BEGIN EXCLUSIVE")
        async with asyncio.timeout(5):  # each page waits max_wait_ms (1 s), not for the lock
            await asyncio.gather(*(land(gateway, f"locked{n}") for n in range(3)))
        assert await unconfirmed(gateway, "timeout") == 3
        async with gateway.session.get(gateway.admin_url + "/healthz") as resp:
            health = await resp.json()
        assert health["status"] == "degraded"
        assert health["store"].startswith("commits are waiting: the database is locked")
        await asyncio.sleep(0.3)  # several busy timeouts pass while the lock is held
    finally:
        await asyncio.to_thread(holder.execute, "ROLLBACK")
        await asyncio.to_thread(holder.close)
    expected = ["before", "locked0", "locked1", "locked2"]
    async with asyncio.timeout(5):
        while (
            sorted(c for (c,) in await asyncio.to_thread(query, db, "SELECT content FROM touchpoints"))
            != expected
        ):
            await asyncio.sleep(0.05)
    await land(gateway, "after")
    async with gateway.session.get(gateway.admin_url + "/healthz") as resp:
        assert (await resp.json())["status"] == "ok"
    assert await unconfirmed(gateway, "store_error") == 0


async def test_healthz_says_at_once_that_another_connection_holds_the_write_lock(
    gateway: RunningGateway,
) -> None:
    """``/healthz`` said ``ok`` while another connection held the store's write lock until a
    commit had waited out the 5 s busy timeout, and for good on a gateway with no landing to
    commit: a load balancer or a monitor asking in that time heard nothing was wrong. It asks the
    lock itself now: ``degraded`` (still 200: the site is served, the events wait in the queue)
    as soon as it is held, ``ok`` again once it is released; the writer's busy timeout is left
    as it is (5 s)."""
    db = gateway.gateway.settings.store_path
    await land(gateway, "before")
    assert (await health(gateway))["status"] == "ok"
    holder = await asyncio.to_thread(sqlite3.connect, db, isolation_level=None, check_same_thread=False)
    try:
        await asyncio.to_thread(holder.execute, "BEGIN EXCLUSIVE")
        said = await health(gateway)  # no landing waits on the lock: nothing else could tell
        assert said["status"] == "degraded", said
        assert said["store"].startswith("commits are waiting: the database is locked"), said
        assert "failing_since" in said, said
    finally:
        await asyncio.to_thread(holder.execute, "ROLLBACK")
        await asyncio.to_thread(holder.close)
    assert (await health(gateway))["status"] == "ok"
    await land(gateway, "after")
    sources = sorted(c for (c,) in await asyncio.to_thread(query, db, "SELECT content FROM touchpoints"))
    assert sources == ["after", "before"]


async def health(gw: RunningGateway) -> dict[str, str]:
    async with gw.session.get(gw.admin_url + "/healthz") as resp:
        assert resp.status == 200
        answer: dict[str, str] = await resp.json()
        return answer


@pytest.mark.parametrize("how", ["deleted", "replaced by another file"])
async def test_a_store_file_deleted_or_replaced_under_the_gateway_is_told_and_counted(
    gateway: RunningGateway, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``rm gw.db``, or a backup moved over it, under a running gateway: SQLite writes on into
    the file it opened, which is gone at exit (or shares its ``-wal`` with the new one). Until
    2026-12-05 every landing was then lost with ``/healthz`` ``ok`` and nothing in the log; now
    the gateway sees it within a second, says so once, and serves the pages with their events
    refused and counted, as for a broken disk."""
    db = gateway.gateway.settings.store_path
    await land(gateway, "before")
    if how == "deleted":
        await asyncio.to_thread(db.unlink)
    else:
        copy = db.with_name("restored.db")
        await asyncio.to_thread(shutil.copyfile, db, copy)
        await asyncio.to_thread(os.replace, copy, db)
    async with asyncio.timeout(5):
        while (state := await health(gateway))["status"] == "ok":
            await asyncio.sleep(0.05)
    assert state["store"] == "commits are failing (StoreMoved), events are being lost; the log says why"
    await land(gateway, "after")
    assert await unconfirmed(gateway, "store_error") == 1
    told = [r.getMessage() for r in caplog.records if r.levelname == "ERROR" and r.name == "gateway.storage"]
    assert told[0] == (
        f"the store file {db} (storage.path) was {how} while the gateway ran; nothing is written "
        "from now on: restart the gateway to write to the file at that path"
    )


@pytest.mark.parametrize("durability", ["commit", "async"])
async def test_a_commit_refused_after_its_wait_timed_out_is_counted_and_said_as_lost(
    start_gateway: GatewayFactory,
    upstream_server: Callable[[web.Application], Awaitable[str]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    durability: str,
) -> None:
    """A commit held past ``storage.max_wait_ms`` (another connection's write lock) and then
    refused (a trigger raising) lost its events, but until 2026-12-07 only its timeout was
    counted (``timeout``: "still written later"), and no line said they were not stored. Under
    ``durability = "async"`` every commit that outlasts ``max_wait_ms`` was so. Now the refusal
    is counted in ``gateway_events_not_stored_total`` and said, as one that comes in time is;
    ``gateway_events_unconfirmed_total`` still counts each commit once, by how its response
    went out."""
    db = tmp_path / "gateway.db"
    toml = f'[storage]\npath = "{db}"\nnode = "test"\nmax_wait_ms = 300.0\ndurability = "{durability}"\n'
    gw = await start_gateway(await upstream_server(landing_app()), toml)
    await land(gw, "before")
    shell = await asyncio.to_thread(sqlite3.connect, db, isolation_level=None, check_same_thread=False)
    try:
        await asyncio.to_thread(shell.execute, "BEGIN IMMEDIATE")  # a sqlite3 shell's long write
        await land(gw, "late")  # served; its touchpoint waits in the queue past max_wait_ms
        async with asyncio.timeout(10):
            while await unconfirmed(gw, "timeout") < 1:
                await asyncio.sleep(0.05)
        refuse = (
            "CREATE TRIGGER fail BEFORE INSERT ON touchpoints BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
        )
        await asyncio.to_thread(shell.execute, refuse)
        caplog.clear()
        await asyncio.to_thread(shell.execute, "COMMIT")  # the queued touchpoint is tried, and refused
        async with asyncio.timeout(30):
            while await metric(gw, "gateway_store_queue") != 0:
                await asyncio.sleep(0.05)
    finally:
        await asyncio.to_thread(shell.close)
    assert await metric(gw, "gateway_events_not_stored_total") == 1
    assert await unconfirmed(gw, "timeout") == 1  # each commit counted there once, as it went out
    assert await unconfirmed(gw, "store_error") == 0
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("events not stored")]
    assert len(said) == 1 and "disk says no" in said[0] and "storage.max_wait_ms" in said[0], said
    assert await asyncio.to_thread(query, db, "SELECT content FROM touchpoints") == [("before",)]

    await land(gw, "refused in time")  # refused within max_wait_ms: counted as before, and as lost
    async with asyncio.timeout(10):
        while await metric(gw, "gateway_events_not_stored_total") < 2:
            await asyncio.sleep(0.05)
    assert await unconfirmed(gw, "store_error") == 1
    assert await unconfirmed(gw, "timeout") == 1
    await asyncio.to_thread(execute, db, "DROP TRIGGER fail")
    await land(gw, "after")
    async with asyncio.timeout(10):  # under "async" the page went out before its commit
        while len(await asyncio.to_thread(query, db, "SELECT content FROM touchpoints")) < 2:
            await asyncio.sleep(0.05)
    assert await metric(gw, "gateway_events_not_stored_total") == 2  # none counted twice
    contents = await asyncio.to_thread(query, db, "SELECT content FROM touchpoints ORDER BY id")
    assert contents == [("before",), ("after",)]


async def test_a_wal_file_deleted_under_the_gateway_is_told_and_what_it_held_survives_kill_9(
    tmp_path: Path,
    upstream_server: Callable[[web.Application], Awaitable[str]],
    processes: list[GatewayProcess],
) -> None:
    """``rm gw.db-wal`` under a running gateway (a cleanup script, an operator thinking it a
    leftover): SQLite writes on into the WAL it has open, which is gone at exit, and a
    connection opened since makes an empty one at the path. Until 2026-12-07 ``/healthz`` said
    ``ok``, nothing was logged but a failing checkpoint, and a ``kill -9`` then lost every
    landing committed since the last checkpoint, those answered before the ``rm`` included.
    Now the gateway sees it within a second, copies what its open WAL holds into the store
    file, says so, and refuses commits (counted) until a restart: every landing answered as
    committed is in the store after a ``kill -9``."""
    upstream = await upstream_server(landing_app())
    gw = GatewayProcess(tmp_path, upstream, "first")
    processes.append(gw)
    await gw.start()
    answered: list[str] = []
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        await gw.wait_ready(session)

        async def land_one(content: str) -> None:
            async with session.get(f"{gw.url}/land?utm_source=wal&utm_content={content}") as resp:
                assert resp.status == 200
                assert await resp.read() == b"<html>landing</html>"
            answered.append(content)

        async def store_state() -> dict[str, str]:
            async with session.get(f"http://127.0.0.1:{gw.admin_port}/healthz") as resp:
                assert resp.status == 200
                answer: dict[str, str] = await resp.json()
                return answer

        for n in range(20):
            await land_one(f"before{n}")
        wal = gw.db.with_name(gw.db.name + "-wal")
        assert await asyncio.to_thread(wal.exists)
        await asyncio.to_thread(wal.unlink)
        for n in range(20):  # into the WAL the gateway still has open, before it can notice
            await land_one(f"after{n}")
        async with asyncio.timeout(5):
            while (state := await store_state())["status"] == "ok":
                await asyncio.sleep(0.05)
        assert state["store"] == "commits are failing (StoreMoved), events are being lost; the log says why"
        async with asyncio.timeout(5):  # its copy into the store file said in the log
            while "copied into" not in await asyncio.to_thread(gw.log.read_text):
                await asyncio.sleep(0.05)
        async with session.get(f"{gw.url}/land?utm_source=wal&utm_content=refused") as resp:
            assert resp.status == 200  # served all the same, its touchpoint refused and counted
        assert gw.proc is not None
        gw.proc.send_signal(signal.SIGKILL)
        await gw.proc.wait()
    log = await asyncio.to_thread(gw.log.read_text)
    assert f"the store's -wal file {wal} (beside storage.path) was deleted while the gateway ran" in log, log
    again = GatewayProcess(tmp_path, upstream, "second")
    processes.append(again)
    await again.start()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        await again.wait_ready(session)
    await again.kill()
    stored = {c for (c,) in await asyncio.to_thread(query, gw.db, "SELECT content FROM touchpoints")}
    lost = [c for c in answered if c not in stored]
    assert lost == [], f"{len(lost)} of {len(answered)} answered landings lost"
    assert "refused" not in stored
    [(check,)] = await asyncio.to_thread(query, gw.db, "PRAGMA integrity_check")
    assert check == "ok"
