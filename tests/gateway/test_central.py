"""Gateways syncing to one real PostgreSQL: two nodes, one journey; an outage loses nothing;
the admin API reads the central store; ``gateway sync --once``; lag and error metrics."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from jsonschema import Draft202012Validator

from gateway.cli import main
from gateway.events import Binding, Conversion, DailyCount, Touchpoint, iso
from gateway.ids import uuid7
from gateway.metrics import Metrics
from gateway.options import StorageOptions
from storage import central
from storage.central_queries import CentralReader
from storage.local import LocalStore
from storage.queries import ConversionQuery, Reader, StoreUnavailable, TouchpointQuery
from tests.conftest import ENV, TOKEN, WRITE_KEY, BatchApi, GatewayFactory, PostgresServer, RunningGateway
from tests.gateway.test_openapi import response_schema
from tests.terminal import on_a_terminal

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def node_toml(tmp_path: Path, name: str, source: str = "central") -> str:
    return f"""
        [storage]
        path = "{tmp_path / (name + ".db")}"
        node = "{name}"
        [central]
        url = "env:GATEWAY_CENTRAL_URL"
        interval_seconds = 0.05
        backoff_min_seconds = 0.05
        backoff_max_seconds = 0.2
        connect_timeout = 2.0
        [admin]
        source = "{source}"
    """


@pytest.fixture
async def origin(upstream_server: Callable[[web.Application], Awaitable[str]]) -> str:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", page)
    return await upstream_server(app)


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 30) -> None:
    async with asyncio.timeout(seconds):
        while not await check():
            await asyncio.sleep(0.05)


async def central_count(dsn: str, table: str) -> tuple[int, int]:
    """(rows, distinct ids) of a central table."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(f"SELECT count(*) AS n, count(DISTINCT id) AS d FROM {table}")
        return int(row["n"]), int(row["d"])
    except asyncpg.UndefinedTableError:  # the first sync has not migrated the database yet
        return 0, 0
    finally:
        await conn.close()


async def admin_get(gw: RunningGateway, path: str) -> tuple[int, Any]:
    async with gw.session.get(gw.admin_url + path, headers=AUTH) as resp:
        return resp.status, await resp.json()


async def test_visitor_lands_on_a_and_signs_up_on_b(
    tmp_path: Path, start_gateway: GatewayFactory, origin: str, central_dsn: str
) -> None:
    env = {"GATEWAY_CENTRAL_URL": central_dsn}
    a = await start_gateway(origin, node_toml(tmp_path, "a"), env)
    b = await start_gateway(origin, node_toml(tmp_path, "b"), env)
    async with a.session.get(a.url + "/pricing?utm_source=newsletter&utm_campaign=launch") as resp:
        assert resp.status == 200
        cookie = resp.cookies["gw_vid"].value
    # The same browser (same cookie) comes back through node B and signs up there.
    async with b.session.get(
        b.url + "/signup?utm_source=google&utm_medium=cpc", cookies={"gw_vid": cookie}
    ) as resp:
        assert resp.status == 200
    key = a.gateway.keys.visitor_key(cookie.split(".")[1])  # the cookie is "v1.<visitor id>.<mac>"
    now = datetime.now(UTC)
    await b.gateway.store.write(
        [
            Binding(
                id=uuid7(int(now.timestamp() * 1000)),
                ts=iso(now),
                node="b",
                visitor_key=key,
                user_key=b.gateway.keys.user_key("alice"),
                rule="signup",
            )
        ]
    )

    async def both_nodes_visible() -> bool:
        status, body = await admin_get(b, "/api/users/alice")
        return status == 200 and len(body["touchpoints"]) == 2

    await eventually(both_nodes_visible)
    status, body = await admin_get(a, "/api/users/alice")  # any node answers for all of them
    assert status == 200
    Draft202012Validator(response_schema("/api/users/{user_id}", 200)).validate(body)
    assert [t["node"] for t in body["touchpoints"]] == ["a", "b"]
    assert body["first_touch"]["source"] == "newsletter" and body["last_touch"]["source"] == "google"
    assert [v["visitor_key"] for v in body["visitors"]] == [key]
    # Every reading endpoint answers from the central store in the documented shape.
    status, listing = await admin_get(a, "/api/touchpoints?limit=1")
    assert status == 200 and listing["next_cursor"] is not None
    Draft202012Validator(response_schema("/api/touchpoints", 200)).validate(listing)
    status, page = await admin_get(a, f"/api/touchpoints?cursor={listing['next_cursor']}")
    assert [t["node"] for t in listing["items"] + page["items"]] == ["a", "b"]
    status, journey = await admin_get(a, f"/api/visitors/{key}")
    assert status == 200 and journey["touch_count"] == 2
    status, listed = await admin_get(a, "/api/conversions")
    assert status == 200, listed
    Draft202012Validator(response_schema("/api/conversions", 200)).validate(listed)
    Draft202012Validator(response_schema("/api/visitors/{visitor_id}", 200)).validate(journey)


async def test_central_answers_equal_local_answers(
    tmp_path: Path, start_gateway: GatewayFactory, origin: str, central_dsn: str
) -> None:
    gw = await start_gateway(
        origin, node_toml(tmp_path, "a", source="local"), {"GATEWAY_CENTRAL_URL": central_dsn}
    )
    for n in range(5):
        async with gw.session.get(gw.url + f"/p/{n}?utm_source=s{n % 2}&utm_content={n}&utm_id=x{n}") as resp:
            assert resp.status == 200
    now = datetime.now(UTC)
    bought = [
        Conversion(
            uuid7(int(now.timestamp() * 1000) + n),
            iso(now + timedelta(milliseconds=n)),
            "a",
            "signup" if n else "purchase",
            f"order:o{n}",
            "b" * 32,
            None,
            [9.5, None, 1234.56][n],
            "EUR" if n != 1 else None,
            order_id=f"o{n}",
            origin="webhook",
            rule="stripe" if n else "shop",
        )
        for n in range(3)
    ]
    await gw.gateway.store.write(bought)
    path = gw.gateway.settings.store_path
    await eventually(lambda: _synced(central_dsn, 5))
    await eventually(lambda: _at_least_rows(central_dsn, "conversions", 3))
    local = Reader(path)
    remote = CentralReader(path, central_dsn, 5.0)
    await local.open()
    await remote.open()
    try:
        for q in (
            TouchpointQuery(limit=2),
            TouchpointQuery(equals={"source": "s1"}),
            TouchpointQuery(limit=100),
        ):
            assert await remote.touchpoints(q) == await local.touchpoints(q)
        items, cursor = await local.touchpoints(TouchpointQuery(limit=2))
        assert await remote.touchpoints(TouchpointQuery(limit=2, cursor=cursor)) == await local.touchpoints(
            TouchpointQuery(limit=2, cursor=cursor)
        )
        key = items[0]["visitor_key"]
        assert await remote.visitor(key) == await local.visitor(key)
        since = items[1]["ts"]
        assert await remote.touchpoints(TouchpointQuery(since=since)) == await local.touchpoints(
            TouchpointQuery(since=since)
        )
        # The conversion listing alike (/api/conversions), every filter and a page's cursor.
        for cq in (
            ConversionQuery(),
            ConversionQuery(limit=2),
            ConversionQuery(equals={"name": "signup", "rule": "stripe", "origin": "webhook"}),
            ConversionQuery(since=bought[1].ts),
            ConversionQuery(until=bought[1].ts),
        ):
            assert await remote.conversions(cq) == await local.conversions(cq), cq
        page, cursor = await local.conversions(ConversionQuery(limit=2))
        assert [c["order_id"] for c in page] == ["o0", "o1"] and cursor is not None
        after = ConversionQuery(limit=2, cursor=cursor)
        assert await remote.conversions(after) == await local.conversions(after)
        # Newest first (order=newest) alike, its cursor moving back in time.
        page, cursor = await local.touchpoints(TouchpointQuery(limit=2, newest_first=True))
        assert [t["content"] for t in page] == ["4", "3"] and cursor is not None
        for q in (
            TouchpointQuery(limit=2, newest_first=True),
            TouchpointQuery(limit=2, newest_first=True, cursor=cursor),
            TouchpointQuery(newest_first=True, equals={"source": "s1"}),
        ):
            assert await remote.touchpoints(q) == await local.touchpoints(q), q
        page, cursor = await local.conversions(ConversionQuery(limit=2, newest_first=True))
        assert [c["order_id"] for c in page] == ["o2", "o1"] and cursor is not None
        for cq in (
            ConversionQuery(limit=2, newest_first=True),
            ConversionQuery(limit=2, newest_first=True, cursor=cursor),
        ):
            assert await remote.conversions(cq) == await local.conversions(cq), cq
    finally:
        await remote.close()
        await local.close()


async def _at_least_rows(dsn: str, table: str, rows: int) -> bool:
    return (await central_count(dsn, table))[0] >= rows


async def _synced(dsn: str, rows: int) -> bool:
    return (await central_count(dsn, "touchpoints"))[0] >= rows


async def test_outage_mid_load_loses_nothing_and_doubles_nothing(
    tmp_path: Path,
    start_gateway: GatewayFactory,
    origin: str,
    central_dsn: str,
    postgres_server: PostgresServer,
) -> None:
    gw = await start_gateway(
        origin, node_toml(tmp_path, "a", source="local"), {"GATEWAY_CENTRAL_URL": central_dsn}
    )
    total, done = 240, 0
    statuses: list[int] = []

    async def land(n: int) -> None:
        nonlocal done
        async with gw.session.get(gw.url + f"/l/{n}?utm_source=s&utm_content={n}") as resp:
            statuses.append(resp.status)
            await resp.read()
        done += 1

    async def load() -> None:
        for start in range(0, total, 4):
            await asyncio.gather(*(land(n) for n in range(start, min(start + 4, total))))

    loader = asyncio.create_task(load())
    try:
        await eventually(lambda: _at_least(lambda: done, 40))
        await postgres_server.stop()  # PostgreSQL goes away mid-load
        await eventually(lambda: _at_least(lambda: done, 160))
        metrics = await _metrics(gw)
        assert _value(metrics, 'gateway_sync_errors_total{reader="central"}') >= 1
        assert _value(metrics, 'gateway_sync_lag_rows{reader="central",table="touchpoints"}') > 0
    finally:
        await postgres_server.start()
    await loader
    assert statuses == [200] * total  # the site never noticed
    await eventually(lambda: _synced(central_dsn, total))
    assert await central_count(central_dsn, "touchpoints") == (total, total)  # none lost, none doubled

    async def lag_is_zero() -> bool:
        return _value(await _metrics(gw), 'gateway_sync_lag_rows{reader="central",table="touchpoints"}') == 0

    await eventually(lag_is_zero)
    assert (
        _value(await _metrics(gw), 'gateway_sync_rows_total{reader="central",table="touchpoints"}') >= total
    )


async def _at_least(get: Callable[[], int], n: int) -> bool:
    return get() >= n


async def _metrics(gw: RunningGateway) -> str:
    async with gw.session.get(gw.admin_url + "/metrics", headers=AUTH) as resp:
        return await resp.text()


def _value(text: str, series: str) -> float:
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    assert match, f"{series} not in /metrics"
    return float(match.group(1))


async def test_a_server_that_never_answers_is_told_as_unreachable_a_slow_statement_not() -> None:
    """A connection that does not come within central.connect_timeout is a server that cannot
    be reached; a timeout once connected is a statement that took too long (a lock another
    session holds: found in an operator's audit, 2026-12-05, where ``sync --once`` said
    "cannot reach the central store … cannot be reached" of a server it had just used)."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # accepts, never answers PostgreSQL's startup message

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(central.ConnectTimeout) as away:
            await central.connect(f"postgresql://u@127.0.0.1:{port}/db", 0.5)
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
    key = "central.url (GATEWAY_CENTRAL_URL)"
    assert central.failed_what(away.value) == "the central store did not answer"
    # It took the connection: not said "no connection … cannot be reached" (until 2026-12-07),
    # which sent the operator to look for a server down or a firewall, where one listens.
    assert central.explain(away.value, key) == (
        "ConnectTimeout: no answer within 0.5 s (central.connect_timeout); what listens at the host"
        f" and port in central.url (GATEWAY_CENTRAL_URL), 127.0.0.1:{port}, took the connection but"
        " did not complete PostgreSQL's start-up: a server too busy or hung, or another service"
        " that waits for its client to speak first"
    )
    slow = TimeoutError()  # what asyncpg raises past a statement's command_timeout
    assert central.failed_what(slow) == "the central store did not answer in time"
    said = central.explain(slow, key)
    assert "a statement on the server in central.url (GATEWAY_CENTRAL_URL) took longer than 60 s" in said
    assert "cannot be reached" not in said
    # A pool's timeouts may be either: told as before.
    assert central.explain(slow, via_connect=False).endswith("the server in central.url cannot be reached")


async def test_admin_answers_503_while_the_central_store_is_away(
    tmp_path: Path, start_gateway: GatewayFactory, origin: str
) -> None:
    dsn = "postgresql://postgres@127.0.0.1:9/nowhere"  # port 9 (discard): nothing listens
    gw = await start_gateway(origin, node_toml(tmp_path, "a"), {"GATEWAY_CENTRAL_URL": dsn})
    status, body = await admin_get(gw, "/api/touchpoints")
    assert status == 503 and body["ok"] is False and "central store" in body["error"]
    assert "the server in central.url (GATEWAY_CENTRAL_URL) cannot be reached" in body["error"], (
        body
    )  # what to check
    async with gw.session.get(gw.url + "/?utm_source=x") as resp:
        assert resp.status == 200  # the proxy does not care
    # An override of this node's own touchpoint is recorded here, as it always was; of one
    # this node does not hold, it cannot tell whose it is: 503, not 404.
    local = Reader(tmp_path / "a.db")
    await local.open()
    try:
        (own,), _ = await local.touchpoints(TouchpointQuery())
    finally:
        await local.close()
    status, body = await override(gw, own["id"], "block")
    assert status == 200 and body["touchpoint"]["verdict"] == "block", body
    status, body = await override(gw, str(uuid7()), "block")
    assert status == 503 and "central store" in body["error"], body


def _write_local(path: Path, node: str, n: int, gpc: int = 0) -> None:
    """``n`` touchpoints, and ``gpc`` Sec-GPC landings (one daily count) when given."""

    async def write() -> None:
        store = LocalStore(path, StorageOptions(node=node), Metrics())
        await store.open()
        await store.write(
            [
                Touchpoint(
                    id=uuid7(), ts=iso(datetime.now(UTC)), node=node, visitor_key="9" * 32, landing_path="/"
                )
                for _ in range(n)
            ]
        )
        if gpc:
            await store.write([DailyCount(datetime.now(UTC).date().isoformat(), "news", count=gpc)])
        await store.close()

    asyncio.run(write())


def test_sync_once_command(tmp_path: Path, postgres_server: PostgresServer, capsys, monkeypatch) -> None:
    dsn = postgres_server.dsn()  # the session server's own database: this test cleans up after itself
    config = tmp_path / "gw.toml"
    config.write_text(
        '[storage]\npath = "node.db"\nnode = "cron"\n[central]\nurl = "env:GATEWAY_CENTRAL_URL"\n'
    )
    for name, value in {**ENV, "GATEWAY_CENTRAL_URL": dsn}.items():
        monkeypatch.setenv(name, value)
    _write_local(tmp_path / "node.db", "cron", 3, gpc=2)
    try:
        assert main(["sync", "--once", "-c", str(config)]) == 0
        out = capsys.readouterr().out
        assert "touchpoints: 3 rows" in out and "daily_counts: 1 rows" in out and "total: 4 rows" in out
        assert main(["sync", "--once", "-c", str(config)]) == 0
        out = capsys.readouterr().out
        assert "touchpoints: 0 rows" in out and "daily_counts: 0 rows" in out
    finally:
        asyncio.run(_drop_node_rows(dsn, "cron"))
    # On a terminal, a progress bar over the rows to deliver (none with --no-progress).
    _write_local(tmp_path / "node.db", "cron", 4)
    env = {**ENV, "GATEWAY_CENTRAL_URL": dsn}
    try:
        drawn = on_a_terminal("sync", "--once", "-c", str(config), env=env)
        assert "sync: 100%" in drawn and "4/4" in drawn and "total: 4 rows" in drawn, drawn
        _write_local(tmp_path / "node.db", "cron", 1)
        quiet = on_a_terminal("sync", "--once", "--no-progress", "-c", str(config), env=env)
        assert "%|" not in quiet and "total: 1 rows" in quiet, quiet
        _write_local(tmp_path / "node.db", "cron", 2)
        closed = subprocess.run(  # stderr closed (2>&-), as cron lines may have it
            ["sh", "-c", f'exec "{sys.executable}" -m gateway sync --once -c "{config}" 2>&-'],
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin", **env},
            timeout=60,
        )
        assert closed.returncode == 0 and "total: 2 rows" in closed.stdout, closed
    finally:
        asyncio.run(_drop_node_rows(dsn, "cron"))
    monkeypatch.setenv("GATEWAY_CENTRAL_URL", "postgresql://postgres@127.0.0.1:9/nowhere")
    assert main(["sync", "--once", "-c", str(config)]) == 1
    err = capsys.readouterr().err
    assert "cannot reach the central store" in err and "central.url (GATEWAY_CENTRAL_URL)" in err, err
    # A database that does not exist says so, and where to correct it (it said the first half).
    monkeypatch.setenv("GATEWAY_CENTRAL_URL", postgres_server.dsn("no_such_database"))
    assert main(["sync", "--once", "-c", str(config)]) == 1
    err = capsys.readouterr().err
    assert 'database "no_such_database" does not exist' in err, err
    # The server answered: a refusal, not "cannot reach the central store" (until 2026-12-05).
    assert "sync failed: the central store refused: InvalidCatalogNameError" in err, err
    assert "the database named in central.url (GATEWAY_CENTRAL_URL) does not exist" in err, err
    config.write_text('[storage]\npath = "node.db"\n')
    assert main(["sync", "--once", "-c", str(config)]) == 2
    assert "central.url is not set" in capsys.readouterr().err


async def _drop_node_rows(dsn: str, node: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DELETE FROM touchpoints WHERE node = $1", node)
        await conn.execute("DELETE FROM daily_counts WHERE node = $1", node)
    finally:
        await conn.close()


async def override(gw: RunningGateway, touchpoint_id: str, verdict: str) -> tuple[int, Any]:
    body = {"verdict": verdict, "analyst": "maria", "reason": "click farm"}
    url = f"{gw.admin_url}/api/touchpoints/{touchpoint_id}/verdict"
    async with gw.session.post(url, headers=AUTH, json=body) as resp:
        return resp.status, await resp.json()


async def test_an_override_of_another_nodes_touchpoint_names_that_node(
    tmp_path: Path, start_gateway: GatewayFactory, origin: str, central_dsn: str
) -> None:
    """Node A reads the central store, so its review queue lists node B's clicks too. An
    override is recorded in the store of the node that answers and counts in that node's
    reports: B's payout report counts B's click, so only B can take it out. A refuses the
    override with a 409 that says so, rather than a 404 for a touchpoint it has just listed;
    its own touchpoints it overrides as before, and B takes the override of its own."""
    env = {"GATEWAY_CENTRAL_URL": central_dsn}
    a = await start_gateway(origin, node_toml(tmp_path, "a"), env)
    b = await start_gateway(origin, node_toml(tmp_path, "b"), env)
    for gw in (a, b):
        async with gw.session.get(gw.url + "/p?utm_source=aff&creator_id=cr_ana") as resp:
            assert resp.status == 200

    async def both_listed() -> bool:
        status, body = await admin_get(a, "/api/touchpoints")
        return status == 200 and len(body["items"]) == 2

    await eventually(both_listed)
    _, listed = await admin_get(a, "/api/touchpoints")
    ids = {t["node"]: t["id"] for t in listed["items"]}

    status, body = await override(a, ids["b"], "block")
    assert status == 409, body
    Draft202012Validator(response_schema("/api/touchpoints/{touchpoint_id}/verdict", 409, "post")).validate(
        body
    )
    assert f"touchpoint {ids['b']} was recorded by node 'b'" in body["error"]
    status, body = await override(a, ids["a"], "block")  # its own, as before
    assert status == 200 and body["touchpoint"]["verdict"] == "block", body
    status, body = await override(b, ids["b"], "block")  # B's, through B
    assert status == 200 and [c["node"] for c in body["changes"]] == ["b"], body

    async def both_blocked() -> bool:
        _, body = await admin_get(a, "/api/touchpoints")
        return [t["verdict"] for t in body["items"]] == ["block", "block"]

    await eventually(both_blocked)  # the overrides reach the central store from each node
    status, body = await override(a, "0" * 8 + "-0000-7000-8000-" + "0" * 12, "block")
    assert status == 404 and "no touchpoint" in body["error"]


async def test_the_central_review_queue_holds_only_its_verdict(
    tmp_path: Path, start_gateway: GatewayFactory, origin: str, central_dsn: str
) -> None:
    """``/api/review`` from the central store lists what the local one would: the touchpoints
    whose effective verdict is ``review`` (or ``verdict=block``), not every touchpoint."""
    gw = await start_gateway(origin, node_toml(tmp_path, "a"), {"GATEWAY_CENTRAL_URL": central_dsn})
    for n in range(2):
        async with gw.session.get(gw.url + f"/p/{n}?utm_source=aff") as resp:
            assert resp.status == 200

    async def listed() -> bool:
        status, body = await admin_get(gw, "/api/touchpoints")
        return status == 200 and len(body["items"]) == 2

    await eventually(listed)
    _, body = await admin_get(gw, "/api/touchpoints")
    first, second = (t["id"] for t in body["items"])
    assert (await override(gw, first, "review"))[0] == 200
    assert (await override(gw, second, "allow"))[0] == 200

    async def synced() -> bool:
        _, body = await admin_get(gw, "/api/touchpoints")
        return [t["verdict"] for t in body["items"]] == ["review", "allow"]

    await eventually(synced)
    _, body = await admin_get(gw, "/api/review")
    assert [t["id"] for t in body["items"]] == [first]
    _, body = await admin_get(gw, "/api/review?verdict=block")
    assert body["items"] == []


async def test_an_override_of_its_own_touchpoint_gone_from_its_store_is_a_404(
    tmp_path: Path, start_gateway: GatewayFactory, origin: str, central_dsn: str
) -> None:
    """A touchpoint the central store still lists but this node's own store no longer holds
    (its retention ran first, or the store file was replaced): the node that recorded it is
    this one, so a 409 telling the analyst to go to node 'a' through node 'a' sends them in a
    circle. It is a 404 saying the touchpoint is gone from this node's store."""
    gw = await start_gateway(origin, node_toml(tmp_path, "a"), {"GATEWAY_CENTRAL_URL": central_dsn})
    async with gw.session.get(gw.url + "/p?utm_source=aff") as resp:
        assert resp.status == 200

    async def listed() -> bool:
        status, body = await admin_get(gw, "/api/touchpoints")
        return status == 200 and len(body["items"]) == 1

    await eventually(listed)
    _, body = await admin_get(gw, "/api/touchpoints")
    (gone,) = (t["id"] for t in body["items"])

    def purge_locally() -> None:
        with sqlite3.connect(tmp_path / "a.db") as db:
            db.execute("DELETE FROM touchpoints WHERE id = ?", (gone,))

    await asyncio.to_thread(purge_locally)
    status, body = await override(gw, gone, "block")
    assert status == 404, body
    assert body["error"] == (
        f"touchpoint {gone} is no longer in this node's store (the central store still lists it):"
        " there is nothing here to override"
    )


async def test_a_central_lookup_of_an_erased_user_says_when_it_was_erased(
    tmp_path: Path, start_gateway: GatewayFactory, origin: str, central_dsn: str
) -> None:
    """With ``admin.source = "central"`` the lookup of an erased user (or visitor) says when,
    from the central ``erased_keys`` (every node's erasures), not "nothing recorded"."""
    a = await start_gateway(origin, node_toml(tmp_path, "a"), {"GATEWAY_CENTRAL_URL": central_dsn})
    async with a.session.get(a.url + "/pricing?utm_source=newsletter") as resp:
        assert resp.status == 200
        cookie = resp.cookies["gw_vid"].value
    visitor_key = a.gateway.keys.visitor_key(cookie.split(".")[1])
    user_key = a.gateway.keys.user_key("alice")
    now = datetime.now(UTC)
    await a.gateway.store.write(
        [Binding(uuid7(int(now.timestamp() * 1000)), iso(now), "a", visitor_key, user_key, "login")]
    )
    await eventually(lambda: _at_least_rows(central_dsn, "identities", 1))
    async with a.session.delete(a.admin_url + "/api/users/alice", headers=AUTH) as resp:
        assert resp.status == 200
    ((erased_at,),) = await asyncio.to_thread(_rows, a.gateway.settings.store_path, "SELECT ts FROM erasures")

    async def erased_centrally() -> bool:
        return (await central_count(central_dsn, "identities"))[0] == 0

    await eventually(erased_centrally)
    status, body = await admin_get(a, "/api/users/alice")
    assert (status, body["error"]) == (404, f"nothing recorded for this user: erased on {erased_at}")
    # From the central record alone: a node whose own store holds no erasure of hers.
    elsewhere = LocalStore(tmp_path / "b.db", StorageOptions(), Metrics())
    await elsewhere.open()
    await elsewhere.close()
    remote = CentralReader(tmp_path / "b.db", central_dsn, 5.0)
    await remote.open()
    try:
        assert await remote.erased_at([user_key]) == erased_at
        assert await remote.erased_at([visitor_key]) == erased_at
        assert await remote.erased_at([a.gateway.keys.user_key("bob")]) is None
    finally:
        await remote.close()


def _rows(path: Path, sql: str) -> list[Any]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


async def test_a_user_key_known_only_centrally_is_erased_by_it_through_another_node(
    tmp_path: Path, start_gateway: GatewayFactory, origin: str, central_dsn: str
) -> None:
    """With ``admin.source = "central"`` the lookup finds a user by a key whose rows another node
    recorded; ``DELETE`` of that key on this node read it as a raw ID (nothing of it here) and
    erased no one. Read as the lookup reads it, through the same central reader: the erasure
    reaches the central store and the node that holds the rows."""
    env = {"GATEWAY_CENTRAL_URL": central_dsn}
    a = await start_gateway(origin, node_toml(tmp_path, "a"), env)
    b = await start_gateway(origin, node_toml(tmp_path, "b"), env)
    key = a.gateway.keys.user_key("alice")
    now = datetime.now(UTC)
    await a.gateway.store.write(
        [Binding(uuid7(int(now.timestamp() * 1000)), iso(now), "a", "v" * 32, key, "login")]
    )
    await eventually(lambda: _at_least_rows(central_dsn, "identities", 1))
    status, journey = await admin_get(b, f"/api/users/{key}")
    assert (status, journey["looked_up_as"]) == (200, "user_key"), journey
    async with b.session.delete(f"{b.admin_url}/api/users/{key}", headers=AUTH) as resp:
        body = await resp.json()
    assert resp.status == 200 and (body["erased_as"], body["user_key"]) == ("user_key", key), body

    async def erased_everywhere() -> bool:
        here = await asyncio.to_thread(
            _rows, a.gateway.settings.store_path, "SELECT count(*) FROM identities"
        )
        return (await central_count(central_dsn, "identities"))[0] == 0 and here == [(0,)]

    await eventually(erased_everywhere)


@pytest.mark.parametrize(
    "query", ["", "?sslmode=disable", "?sslmode=allow"], ids=["prefer", "disable", "allow"]
)
async def test_a_central_source_at_a_port_that_is_not_postgres_is_said_so(
    tmp_path: Path, origin: str, query: str
) -> None:
    """``admin.source = "central"`` with ``central.url`` naming the port of another service (the
    site's web server): the listing's 503 says that what answers there is not PostgreSQL and to
    check the port, as the sync's warning does. Until 2026-12-07 its pool of connections said,
    under the default ``sslmode``, that the URL "asks for TLS (sslmode) and the server offers
    none", and under ``sslmode=disable`` only that the connection was closed."""
    store = LocalStore(tmp_path / "n.db", StorageOptions(), Metrics())
    await store.open()
    await store.close()
    site = origin.removeprefix("http://")
    reader = CentralReader(tmp_path / "n.db", f"postgresql://gw@{site}/tracking{query}", 5.0)
    await reader.open()
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await reader.touchpoints(TouchpointQuery())
    finally:
        await reader.close()
    said = str(caught.value)
    assert "asks for TLS" not in said, said
    assert f"what answers at the host and port in central.url, {site}, " in said, said
    assert "not PostgreSQL" in said and "check the port" in said, said


async def test_a_central_source_asking_a_postgresql_without_tls_for_it_is_still_told_so(
    tmp_path: Path, central_dsn: str
) -> None:
    """The other side of the test above: a real PostgreSQL that offers no TLS, asked for it
    (``sslmode=require``), is PostgreSQL, and the listing's 503 says the URL asks for TLS."""
    store = LocalStore(tmp_path / "n.db", StorageOptions(), Metrics())
    await store.open()
    await store.close()
    dsn = central_dsn + ("&" if "?" in central_dsn else "?") + "sslmode=require"
    reader = CentralReader(tmp_path / "n.db", dsn, 5.0)
    await reader.open()
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await reader.touchpoints(TouchpointQuery())
    finally:
        await reader.close()
    said = str(caught.value)
    assert "central.url asks for TLS (sslmode) and the server offers none" in said, said
    assert "not PostgreSQL" not in said, said


def test_a_unix_socket_nothing_listens_on_is_said_so_not_a_certificate_file(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    """`central.url` may name PostgreSQL's Unix socket folder (`?host=/run/postgresql`, as libpq
    and asyncpg take it). With the server stopped its socket is gone, which asyncpg says as a bare
    `FileNotFoundError`: until 2026-12-07 the gateway blamed a certificate file (`a file
    central.url (…) names (sslrootcert, sslcert, sslkey) cannot be read`) of a URL naming none,
    and a socket left by a server that crashed was a `Connection refused` naming nothing. Now
    both name the socket and say that nothing listens there."""
    config = tmp_path / "gw.toml"
    config.write_text('[storage]\npath = "node.db"\nnode = "n"\n[central]\nurl = "env:GATEWAY_CENTRAL_URL"\n')
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    _write_local(tmp_path / "node.db", "n", 1)
    folder = Path(tempfile.mkdtemp(prefix="gw-sock-", dir="/tmp"))  # a socket's path is short
    try:
        at = folder / ".s.PGSQL.6543"
        monkeypatch.setenv("GATEWAY_CENTRAL_URL", f"postgresql://gw@/tracking?host={folder}&port=6543")
        assert main(["sync", "--once", "--no-progress", "-c", str(config)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(
            f"gateway: sync failed: cannot reach the central store: no PostgreSQL socket at {at}"
            " (the server is not running, or listens in another folder or on another port); the"
            " server in central.url (GATEWAY_CENTRAL_URL) cannot be reached"
        ), err
        assert "sslrootcert" not in err, err
        with socket.socket(socket.AF_UNIX) as stale:  # bound, never listened on: as one left behind
            stale.bind(str(at))
        assert main(["sync", "--once", "--no-progress", "-c", str(config)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(
            f"gateway: sync failed: cannot reach the central store: connection refused: nothing"
            f" listens on {at}; the server in central.url (GATEWAY_CENTRAL_URL) cannot be reached"
        ), err
    finally:
        shutil.rmtree(folder)


@pytest.fixture
def socket_folder() -> Iterator[Path]:
    """A folder for a Unix socket, made outside the event loop: a socket's path is short."""
    folder = Path(tempfile.mkdtemp(prefix="gw-sock-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder)


async def test_a_central_source_at_a_unix_socket_nothing_listens_at_says_so(
    tmp_path: Path, start_gateway: GatewayFactory, origin: str, socket_folder: Path
) -> None:
    """``admin.source = "central"`` with ``central.url`` naming PostgreSQL's socket folder and the
    server stopped (no socket file there): the listing's 503 names the socket and what to check,
    in the words of ``gateway sync`` (above). Until 2026-12-07 its pool connected without
    ``central.connect``, and asyncpg's bare ``FileNotFoundError`` was blamed on a certificate file
    (``a file central.url names (sslrootcert, sslcert, sslkey) cannot be read``) of a URL that
    names none; a socket left by a crashed server was a ``ConnectionRefusedError`` naming nothing."""
    at = socket_folder / ".s.PGSQL.6543"
    dsn = f"postgresql://gw@/tracking?host={socket_folder}&port=6543"
    gw = await start_gateway(origin, node_toml(tmp_path, "a"), {"GATEWAY_CENTRAL_URL": dsn})
    status, body = await admin_get(gw, "/api/touchpoints")
    assert status == 503, body
    assert body["error"] == (
        f"the central store is unavailable (no PostgreSQL socket at {at} (the server is not"
        " running, or listens in another folder or on another port); the server in central.url"
        " (GATEWAY_CENTRAL_URL) cannot be reached)"
    ), body
    with socket.socket(socket.AF_UNIX) as stale:  # bound, never listened on: as one left behind
        stale.bind(str(at))
        status, body = await admin_get(gw, "/api/touchpoints")
    assert status == 503, body
    assert body["error"] == (
        f"the central store is unavailable (connection refused: nothing listens on {at}; the"
        " server in central.url (GATEWAY_CENTRAL_URL) cannot be reached)"
    ), body


@pytest.mark.parametrize(
    ("dsn", "named"),
    [
        ("postgresql://gw:pw@db.internal:5432/tracking", "host db.internal"),
        ("postgresql://gw:pw@db.internal/tracking", "host db.internal"),
        ("postgresql://gw:pw@/tracking?host=db.internal", "host db.internal"),
        (
            "postgresql://gw:pw@db1.internal:5432,db2.internal:5433/tracking",
            "a host of db1.internal, db2.internal",
        ),
    ],
)
async def test_a_central_url_host_that_does_not_resolve_is_named(dsn: str, named: str) -> None:
    """A ``central.url`` whose host the resolver does not know (a typo, a name only another
    network's DNS has): until 2026-12-07 ``gaierror: [Errno -2] Name or service not known; the
    server in central.url (…) cannot be reached``, naming neither the host nor that it is a name
    that failed. The resolver's failure is a real ``getaddrinfo``'s, which asyncpg's connection
    calls: asked for a numeric host (``AI_NUMERICHOST``), it fails with the same error as a DNS
    lookup that finds nothing, and sends no query off the machine."""
    lookup = asyncio.get_running_loop().getaddrinfo("db.internal", 5432, flags=socket.AI_NUMERICHOST)
    with pytest.raises(OSError) as caught:
        await central.said_so(lookup, dsn, 2.0)  # type: ignore[arg-type]  # fails before a connection
    key = "central.url (GATEWAY_CENTRAL_URL)"
    said = f"{central.failed_what(caught.value)}: {central.explain(caught.value, key)}"
    assert said == (
        f"cannot reach the central store: {named} cannot be resolved (Name or service not known);"
        " check the host in central.url (GATEWAY_CENTRAL_URL): a typo, or a name only another"
        " network's DNS knows"
    ), said
    assert "gaierror" not in said and "pw" not in said
    # The admin API's reader (its pool: not via_connect) says it alike.
    assert central.explain(caught.value, key, via_connect=False) == said.partition(": ")[2]


PASTED = "https://shop.example/?a=1"
"""A page's address: refused as a visitor ID unless something is recorded under it (a sender
may have named a visitor by it)."""


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **ENV, **env},
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
    )


async def _node_with_a_pasted_visitor(tmp_path: Path, name: str, touched: bool) -> Path:
    """Node ``name``'s config; its store holds a touchpoint of the visitor named ``PASTED``
    when ``touched``, else nothing."""
    from gateway.keys import Keys
    from tests.conftest import make_settings

    config = tmp_path / f"{name}.toml"
    await asyncio.to_thread(config.write_text, node_toml(tmp_path, name, "local"))
    store = LocalStore(tmp_path / f"{name}.db", StorageOptions(), Metrics())
    await store.open()
    if touched:
        settings = await asyncio.to_thread(make_settings, tmp_path)
        key = Keys.from_master(settings.secret).visitor_key(PASTED)
        now = datetime.now(UTC)
        await store.write([Touchpoint(uuid7(int(now.timestamp() * 1000)), iso(now), name, key, source="a")])
    await store.close()
    return config


async def test_erase_visitor_of_a_text_recorded_only_on_another_node_is_not_refused(
    tmp_path: Path, central_dsn: str
) -> None:
    """``gateway erase --visitor`` of a text refused when pasted by mistake (a page's address)
    looked only in this node's store: a visitor another node's sender named so, whose rows are
    in the central store the erasure reaches through the sync, was refused (exit 2, "no visitor
    has it as their ID"). Looked for where the erasure acts: erased, and gone centrally after
    the sync; with ``central.url``'s variable unset here, still refused, saying the central
    store was not looked in."""
    env = {"GATEWAY_CENTRAL_URL": central_dsn}
    a = await _node_with_a_pasted_visitor(tmp_path, "a", touched=True)
    b = await _node_with_a_pasted_visitor(tmp_path, "b", touched=False)
    synced = await asyncio.to_thread(_cli, "sync", "--once", "-c", str(a), env=env)
    assert synced.returncode == 0, synced.stderr
    assert (await central_count(central_dsn, "touchpoints"))[0] == 1

    unset = await asyncio.to_thread(_cli, "erase", "--visitor", PASTED, "-c", str(b), env={})
    assert unset.returncode == 2, unset.stdout
    assert "no visitor has it as their ID in this store" in unset.stderr, unset.stderr
    assert "the central store was not looked in: GATEWAY_CENTRAL_URL is not set" in unset.stderr
    assert await asyncio.to_thread(_rows, tmp_path / "b.db", "SELECT count(*) FROM erasures") == [(0,)]

    for extra in (("--dry-run",), ()):
        done = await asyncio.to_thread(_cli, "erase", "--visitor", PASTED, *extra, "-c", str(b), env=env)
        assert done.returncode == 0, done.stderr
        assert "the erasure reaches the central store with the next sync" in done.stdout or extra
    assert await asyncio.to_thread(_rows, tmp_path / "b.db", "SELECT count(*) FROM erasures") == [(1,)]
    synced = await asyncio.to_thread(_cli, "sync", "--once", "-c", str(b), env=env)
    assert synced.returncode == 0, synced.stderr
    assert (await central_count(central_dsn, "touchpoints"))[0] == 0


async def test_delete_visitor_of_a_text_recorded_only_centrally_is_not_refused(
    tmp_path: Path, start_gateway: GatewayFactory, origin: str, central_dsn: str
) -> None:
    """``DELETE /api/visitors/{id}`` on a node whose lookups read its own store
    (``admin.source = "local"``) with ``[central]`` configured: a text refused when pasted by
    mistake, recorded by another node only, was a 400 (looked for in this store alone), though
    the erasure reaches the central store through the sync. Erased now."""
    from urllib.parse import quote

    env = {"GATEWAY_CENTRAL_URL": central_dsn}
    a = await _node_with_a_pasted_visitor(tmp_path, "a", touched=True)
    synced = await asyncio.to_thread(_cli, "sync", "--once", "-c", str(a), env=env)
    assert synced.returncode == 0, synced.stderr
    b = await start_gateway(origin, node_toml(tmp_path, "b", "local"), env)
    url = f"{b.admin_url}/api/visitors/{quote(PASTED, safe='')}"
    async with b.session.delete(url, headers=AUTH) as resp:
        body = await resp.json()
    assert resp.status == 200, body
    await eventually(lambda: _no_rows(central_dsn, "touchpoints"))


async def _no_rows(dsn: str, table: str) -> bool:
    return (await central_count(dsn, table))[0] == 0


async def test_healthz_says_which_reader_of_the_log_is_failing_and_since_when(
    tmp_path: Path, start_gateway: GatewayFactory, origin: str
) -> None:
    """A central store or a sink's destination away loses nothing and the site is served, so
    ``/healthz`` stays 200 ``ok`` (a load balancer keeps the gateway), but says which reader is
    failing, since when and how many attempts, in fixed words (it answers anyone): until
    2026-12-08 it said nothing of them, and only the log and the metrics told an outage."""
    away = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            away.append(s.getsockname()[1])
    toml = (
        node_toml(tmp_path, "a", source="local")
        + f'[[sinks]]\nname = "out"\nkind = "segment"\nurl = "http://127.0.0.1:{away[1]}"\n'
        + 'secret = "env:SINK_SECRET"\ninterval_seconds = 0.05\nbackoff_max_seconds = 0.2\n'
    )
    central_url = f"postgresql://gateway:pw@127.0.0.1:{away[0]}/tracking"
    gw = await start_gateway(
        origin, toml, {"GATEWAY_CENTRAL_URL": central_url, "SINK_SECRET": "wk_" + "w" * 30}
    )
    async with gw.session.get(gw.url + "/l/1?utm_source=s") as resp:
        await resp.read()

    async def health() -> dict[str, Any]:
        async with gw.session.get(gw.admin_url + "/healthz") as resp:
            assert resp.status == 200
            return await resp.json()

    async def failing(*readers: str) -> bool:
        return set((await health()).get("readers_failing", {})) == set(readers)

    await eventually(lambda: failing("central", "sink:out"))
    answer = await health()
    assert answer["status"] == "ok"
    for reader in ("central", "sink:out"):
        said = answer["readers_failing"][reader]
        assert said["attempts"] >= 1
        assert datetime.fromisoformat(said["failing_since"]) <= datetime.now(UTC)
    assert "127.0.0.1" not in json.dumps(answer)  # fixed words: the problem is in the log
    Draft202012Validator(response_schema("/healthz", 200)).validate(answer)

    async def accept(request: web.Request) -> web.Response:
        return web.json_response({"success": True})

    app = web.Application()
    app.router.add_post("/v1/batch", accept)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", away[1]).start()
    try:
        await eventually(lambda: failing("central"))  # the sink recovered: no longer said
    finally:
        await runner.cleanup()


async def test_an_erasure_on_one_node_keeps_another_nodes_sink_from_sending_the_user(
    tmp_path: Path, start_gateway: GatewayFactory, origin: str, central_dsn: str
) -> None:
    """A user erased through node a, whose rows node b recorded and whose sink's destination is
    away meanwhile: b's sync round applies the central erasure, and once the destination is
    back b's sink sends the other visitor's landing and nothing of the erased user's."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"GATEWAY_CENTRAL_URL": central_dsn, "SINK_SECRET": WRITE_KEY}
    a = await start_gateway(origin, node_toml(tmp_path, "a", source="local"), env)
    sink = (
        f'[[sinks]]\nname = "out"\nkind = "segment"\nurl = "http://127.0.0.1:{port}"\n'
        'secret = "env:SINK_SECRET"\ninterval_seconds = 0.05\nbackoff_max_seconds = 0.2\n'
    )
    b = await start_gateway(origin, node_toml(tmp_path, "b", source="local") + sink, env)
    async with b.session.get(b.url + "/?utm_source=newsletter") as resp:
        visitor = b.gateway.keys.visitor_key(resp.cookies["gw_vid"].value.split(".")[1])
    user = b.gateway.keys.user_key("carol")
    now = iso(datetime.now(UTC))
    await b.gateway.store.write(
        [Binding(id=uuid7(), ts=now, node="b", visitor_key=visitor, user_key=user, rule="r")]
    )
    async with b.session.get(b.url + "/?utm_source=other") as resp:  # another visitor, kept
        await resp.read()
    await eventually(lambda: _synced(central_dsn, 2))
    async with a.session.delete(a.admin_url + "/api/users/carol", headers=AUTH) as resp:
        assert resp.status == 200

    def left() -> int:
        with sqlite3.connect(tmp_path / "b.db") as db:
            return db.execute(
                "SELECT count(*) FROM touchpoints WHERE visitor_key = ?", (visitor,)
            ).fetchone()[0]

    async def applied_on_b() -> bool:
        return await asyncio.to_thread(left) == 0

    await eventually(applied_on_b)
    api = BatchApi()
    app = web.Application()
    app.router.add_post("/v1/batch", api.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:

        async def sent() -> bool:
            return bool(api.calls)

        await eventually(sent)
        assert [c["properties"]["source"] for c in api.calls] == ["other"]
        assert not [
            c
            for c in api.calls
            if visitor in (c.get("anonymousId"), c.get("userId")) or c.get("userId") == user
        ]
    finally:
        await runner.cleanup()


async def test_central_journeys_cut_their_conversions_as_the_local_ones(
    tmp_path: Path, central_dsn: str
) -> None:
    """More than ``JOURNEY_LIMIT`` conversions on a visitor and on a user, the cut falling in a
    millisecond whose later conversion has the smaller id: the central reader took the first
    ``JOURNEY_LIMIT`` by id and said nothing of the rest, as the local one did. Both now list
    the earliest in time and say ``conversions_truncated``, with the same answer."""
    from tests.storage.test_queries import JOURNEY_LIMIT, many_conversions

    visitor, user = "d" * 32, "u" * 32
    config = tmp_path / "a.toml"
    await asyncio.to_thread(config.write_text, node_toml(tmp_path, "a", "local"))
    on_visitor, early, latest = many_conversions(visitor, None)
    on_user, user_early, _ = many_conversions(None, user, start=10 * JOURNEY_LIMIT)
    store = LocalStore(tmp_path / "a.db", StorageOptions(), Metrics())
    await store.open()
    await store.write([*on_visitor, *on_user])
    await store.close()
    env = {"GATEWAY_CENTRAL_URL": central_dsn}
    synced = await asyncio.to_thread(_cli, "sync", "--once", "-c", str(config), env=env)
    assert synced.returncode == 0, synced.stderr
    local, remote = Reader(tmp_path / "a.db"), CentralReader(tmp_path / "a.db", central_dsn, 5.0)
    await local.open()
    await remote.open()
    try:
        journey = await remote.visitor(visitor)
        assert journey is not None and journey == await local.visitor(visitor)
        assert journey["conversions_truncated"] is True and journey["last_seen"] == latest.ts
        assert len(journey["conversions"]) == JOURNEY_LIMIT and journey["conversions"][-1]["id"] == early.id
        theirs = await remote.user([user])
        assert theirs is not None and theirs == await local.user([user])
        assert theirs["conversions_truncated"] is True and theirs["conversions"][-1]["id"] == user_early.id
    finally:
        await local.close()
        await remote.close()


async def test_erase_of_a_user_key_recorded_only_on_another_node_erases_that_user(
    tmp_path: Path, central_dsn: str
) -> None:
    """``gateway erase USER_KEY`` on a node whose store holds nothing of the user, whose rows
    another node recorded (the key as the central dashboard shows it): it looked for the key in
    this node's store alone, read the text as a raw user ID ("read as a raw user ID", "no user
    has it as a user_key"), recorded an erasure of that ID's key, exit 0, and the user stayed
    in the central store. Looked for where the erasure acts (the central store, through the
    sync): read as the user_key, and the user gone centrally after the sync. With central.url's
    variable unset here, read as a raw ID as before, saying the central store was not looked in."""
    from gateway.keys import Keys
    from tests.conftest import make_settings

    env = {"GATEWAY_CENTRAL_URL": central_dsn}
    settings = await asyncio.to_thread(make_settings, tmp_path)
    key = Keys.from_master(settings.secret).user_key("alice")
    configs = {}
    for name in ("a", "b"):
        configs[name] = tmp_path / f"{name}.toml"
        await asyncio.to_thread(configs[name].write_text, node_toml(tmp_path, name, "local"))
        store = LocalStore(tmp_path / f"{name}.db", StorageOptions(), Metrics())
        await store.open()
        if name == "a":
            now = datetime.now(UTC)
            await store.write(
                [Binding(uuid7(int(now.timestamp() * 1000)), iso(now), "a", "v" * 32, key, "login")]
            )
        await store.close()
    synced = await asyncio.to_thread(_cli, "sync", "--once", "-c", str(configs["a"]), env=env)
    assert synced.returncode == 0, synced.stderr
    assert (await central_count(central_dsn, "identities"))[0] == 1

    unset = await asyncio.to_thread(_cli, "erase", key, "--dry-run", "-c", str(configs["b"]), env={})
    assert unset.returncode == 0, unset.stderr
    assert "erase: read as a raw user ID" in unset.stdout, unset.stdout
    assert (
        "only this store was looked in for a user of this user_key (the central store was not looked in:"
        " GATEWAY_CENTRAL_URL is not set)" in unset.stdout
    ), unset.stdout
    # The central store unreachable: which user the text names cannot be told; nothing erased.
    away = {"GATEWAY_CENTRAL_URL": "postgresql://postgres@127.0.0.1:9/nowhere"}
    refused = await asyncio.to_thread(_cli, "erase", key, "-c", str(configs["b"]), env=away)
    assert refused.returncode == 1, refused.stdout
    assert "cannot be told: the central store is unavailable" in refused.stderr, refused.stderr
    assert "nothing erased" in refused.stderr
    assert await asyncio.to_thread(_rows, tmp_path / "b.db", "SELECT count(*) FROM erasures") == [(0,)]

    done = await asyncio.to_thread(_cli, "erase", key, "-c", str(configs["b"]), env=env)
    assert done.returncode == 0, done.stderr
    assert "erase: read as a user_key" in done.stdout, done.stdout
    assert await asyncio.to_thread(_rows, tmp_path / "b.db", "SELECT user_key FROM erasures") == [(key,)]
    synced = await asyncio.to_thread(_cli, "sync", "--once", "-c", str(configs["b"]), env=env)
    assert synced.returncode == 0, synced.stderr
    assert (await central_count(central_dsn, "identities"))[0] == 0


async def test_delete_of_a_user_key_recorded_only_centrally_erases_that_user_under_a_local_source(
    tmp_path: Path, start_gateway: GatewayFactory, origin: str, central_dsn: str
) -> None:
    """``DELETE /api/users/{user_key}`` on a node whose lookups read its own store (``admin.source
    = "local"``) with ``[central]`` configured, the user's rows another node's: the key was looked
    for in this store alone (the central store only under ``admin.source = "central"``), read as
    a raw user ID, and the user was not erased. Read as the user_key now, and erased centrally."""
    from gateway.keys import Keys
    from tests.conftest import make_settings

    env = {"GATEWAY_CENTRAL_URL": central_dsn}
    settings = await asyncio.to_thread(make_settings, tmp_path)
    key = Keys.from_master(settings.secret).user_key("alice")
    config = tmp_path / "a.toml"
    await asyncio.to_thread(config.write_text, node_toml(tmp_path, "a", "local"))
    store = LocalStore(tmp_path / "a.db", StorageOptions(), Metrics())
    await store.open()
    now = datetime.now(UTC)
    await store.write([Binding(uuid7(int(now.timestamp() * 1000)), iso(now), "a", "v" * 32, key, "login")])
    await store.close()
    synced = await asyncio.to_thread(_cli, "sync", "--once", "-c", str(config), env=env)
    assert synced.returncode == 0, synced.stderr
    b = await start_gateway(origin, node_toml(tmp_path, "b", "local"), env)
    async with b.session.delete(f"{b.admin_url}/api/users/{key}", headers=AUTH) as resp:
        body = await resp.json()
    assert resp.status == 200 and (body["erased_as"], body["user_key"]) == ("user_key", key), body
    await eventually(lambda: _no_rows(central_dsn, "identities"))
    # The central store unreachable: which user the key names cannot be told; 503, nothing erased.
    away = {"GATEWAY_CENTRAL_URL": "postgresql://postgres@127.0.0.1:9/nowhere"}
    c = await start_gateway(origin, node_toml(tmp_path, "c", "local"), away)
    async with c.session.delete(f"{c.admin_url}/api/users/{key}", headers=AUTH) as resp:
        body = await resp.json()
    assert resp.status == 503 and "the central store is unavailable" in body["error"], body
    assert await asyncio.to_thread(_rows, tmp_path / "c.db", "SELECT count(*) FROM erasures") == [(0,)]
