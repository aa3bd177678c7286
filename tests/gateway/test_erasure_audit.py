"""What an erasure leaves behind, after real traffic through a real gateway: nothing of the
user or their device in any table of the local store, in its files (database, write-ahead
log, freed pages), in any table of the central PostgreSQL store, in the log lines at the
default level or in the metrics — neither the raw user ID, the cookie value, the raw visitor
ID, the raw IP, nor their keyed hashes (which only the erasure records keep, by design: they
stop the erased rows from coming back)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web

from tests.conftest import TOKEN, GatewayFactory

AUTH = {"Authorization": f"Bearer {TOKEN}"}
USER = "audit-user-4711"
IP, KEPT_IP = "198.51.100.77", "203.0.113.9"
CLICK = "GCLIDaudit0secret"
ERASURE_RECORDS = {"erasures", "central_erasures", "erased_keys"}
"""Where an erased user's and device's keys stay on purpose (the proof, and the refusal of late rows)."""


def toml(tmp_path: Path) -> str:
    return f"""
        [storage]
        path = "{tmp_path / "a.db"}"
        node = "a"
        [central]
        url = "env:GATEWAY_CENTRAL_URL"
        interval_seconds = 0.05
        backoff_min_seconds = 0.05
        backoff_max_seconds = 0.2
        connect_timeout = 2.0
        [admin]
        source = "local"
        [proxy]
        trusted_proxies = ["127.0.0.1"]
        [[identity.rules]]
        name = "api-login"
        path = "/api/login"
        status = [200]
        user_id = {{ response_json = "/user/id" }}
        [[conversions]]
        name = "purchase"
        path = "/checkout"
        status = [303]
        value = {{ location_query = "total" }}
        currency = "EUR"
        order_id = {{ location_query = "order" }}
    """


def local_rows(path: Path) -> dict[str, list[str]]:
    """Every row of every table of the store, each as its columns' text."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {
            name: [" ".join(map(str, row)) for row in db.execute(f'SELECT * FROM "{name}"')] for name in names
        }


def ip_hash_of(path: Path, campaign: str) -> str:
    with contextlib.closing(sqlite3.connect(path)) as db:
        (hashed,) = db.execute("SELECT ip_hash FROM touchpoints WHERE campaign = ?", (campaign,)).fetchone()
    assert hashed
    return str(hashed)


def store_bytes(path: Path) -> bytes:
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


async def central_rows(dsn: str) -> dict[str, list[str]]:
    conn = await asyncpg.connect(dsn)
    try:
        names = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {
            r[0]: [row[0] for row in await conn.fetch(f'SELECT row_to_json(t)::text FROM "{r[0]}" t')]
            for r in names
        }
    finally:
        await conn.close()


def naming(tables: dict[str, list[str]], texts: dict[str, str]) -> dict[str, set[str]]:
    """Which of ``texts`` (by name) each table holds, outside the erasure records."""
    found: dict[str, set[str]] = {}
    for table, rows in tables.items():
        if table in ERASURE_RECORDS:
            continue
        held = {name for name, text in texts.items() for row in rows if text.lower() in row.lower()}
        if held:
            found[table] = held
    return found


async def table_file(dsn: str, table: str) -> bytes:
    """The bytes of ``table``'s data file on the central server, its changes written out."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CHECKPOINT")
        path = await conn.fetchval("SELECT pg_relation_filepath($1)", table)
        return bytes(await conn.fetchval("SELECT pg_read_binary_file($1)", path))
    finally:
        await conn.close()


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    for _ in range(400):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not reached")


async def test_an_erased_user_leaves_nothing_but_the_erasure_record(
    tmp_path: Path,
    start_gateway: GatewayFactory,
    upstream_server: Callable[[web.Application], Awaitable[str]],
    central_dsn: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def login(request: web.Request) -> web.Response:
        return web.json_response({"user": {"id": USER}})

    async def checkout(request: web.Request) -> web.Response:
        raise web.HTTPSeeOther("/thanks?order=O-77&total=19.90")

    app = web.Application()
    app.router.add_post("/api/login", login)
    app.router.add_post("/checkout", checkout)
    app.router.add_get("/{tail:.*}", page)
    gw = await start_gateway(await upstream_server(app), toml(tmp_path), {"GATEWAY_CENTRAL_URL": central_dsn})

    async def send(method: str, path: str, ip: str, cookie: str | None = None) -> str | None:
        headers = {"X-Forwarded-For": ip, **({"Cookie": f"gw_vid={cookie}"} if cookie else {})}
        async with gw.session.request(method, gw.url + path, headers=headers, allow_redirects=False) as resp:
            assert resp.status < 400
            return resp.cookies["gw_vid"].value if "gw_vid" in resp.cookies else cookie

    cookie = await send("GET", f"/pricing?utm_source=news&utm_campaign=spring&gclid={CLICK}", IP)
    assert cookie is not None
    await send("POST", "/api/login", IP, cookie)
    await send("POST", "/checkout", IP, cookie)
    await send("GET", "/pricing?utm_source=ads&utm_campaign=kept", KEPT_IP)
    keys = gw.gateway.keys
    raw_visitor = cookie.split(".")[1]
    store = gw.gateway.settings.store_path
    before = await asyncio.to_thread(local_rows, store)
    texts = {
        "raw user ID": USER,
        "cookie value": cookie,
        "raw visitor ID": raw_visitor,
        "raw IP": IP,
        "click ID": CLICK,
        "visitor_key": keys.visitor_key(raw_visitor),
        "user_key": keys.user_key(USER),
    }
    texts["ip_hash"] = await asyncio.to_thread(ip_hash_of, store, "spring")
    # The search finds them before: the user's rows are in both stores.
    assert {"visitor_key", "user_key", "click ID", "ip_hash"} <= set().union(*naming(before, texts).values())

    async def synced(touchpoints: int) -> bool:
        rows = await central_rows(central_dsn)
        return len(rows.get("touchpoints", [])) == touchpoints and len(rows.get("identities", [])) == (
            1 if touchpoints == 2 else 0
        )

    await eventually(lambda: synced(2))
    assert naming(await central_rows(central_dsn), texts)
    async with gw.session.delete(f"{gw.admin_url}/api/users/{USER}", headers=AUTH) as resp:
        assert resp.status == 200, await resp.text()
    await eventually(lambda: synced(1))

    assert naming(await asyncio.to_thread(local_rows, store), texts) == {}
    assert naming(await central_rows(central_dsn), texts) == {}
    files = await asyncio.to_thread(store_bytes, store)
    assert [name for name, text in texts.items() if text.encode() in files] == [
        name
        for name in ("visitor_key", "user_key")
        if name in texts  # the erasure record's
    ]
    async with gw.session.get(f"{gw.admin_url}/metrics", headers=AUTH) as resp:
        metrics = await resp.text()
    assert [name for name, text in texts.items() if text in metrics] == []
    # aiohttp.access: the test server's own access log; the gateway runs its listeners without.
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name != "aiohttp.access")
    assert [name for name, text in texts.items() if text in logged] == []


async def test_the_central_store_s_files_keep_an_erased_row_until_vacuum_full(
    tmp_path: Path,
    start_gateway: GatewayFactory,
    upstream_server: Callable[[web.Application], Awaitable[str]],
    central_dsn: str,
) -> None:
    """PostgreSQL has no secure delete: an erased (or purged) row leaves its tables at once,
    but its bytes stay in the table's file (and PostgreSQL's write-ahead log) until a VACUUM
    reclaims the space and new rows overwrite it, as the README says; ``VACUUM FULL``
    rewrites the file without them, the remedy it gives."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    gw = await start_gateway(await upstream_server(app), toml(tmp_path), {"GATEWAY_CENTRAL_URL": central_dsn})
    async with gw.session.get(f"{gw.url}/pricing?utm_source=news&gclid={CLICK}") as resp:
        cookie = resp.cookies["gw_vid"].value
    async with gw.session.get(f"{gw.url}/pricing?utm_source=kept") as resp:
        assert resp.status == 200  # a row the page keeps (an emptied table's file is cut off)

    async def synced(touchpoints: int) -> bool:
        return len((await central_rows(central_dsn)).get("touchpoints", [])) == touchpoints

    await eventually(lambda: synced(2))
    async with gw.session.delete(f"{gw.admin_url}/api/visitors/{cookie}", headers=AUTH) as resp:
        assert resp.status == 200, await resp.text()
    await eventually(lambda: synced(1))
    raw = cookie.split(".")[1]
    texts = {"cookie value": cookie, "raw visitor ID": raw, "visitor_key": gw.gateway.keys.visitor_key(raw)}
    store = gw.gateway.settings.store_path
    assert naming(await asyncio.to_thread(local_rows, store), {**texts, "click ID": CLICK}) == {}
    assert naming(await central_rows(central_dsn), {**texts, "click ID": CLICK}) == {}
    assert CLICK.encode() not in await asyncio.to_thread(store_bytes, store)
    conn = await asyncpg.connect(central_dsn)
    try:
        assert CLICK.encode() in await table_file(central_dsn, "touchpoints")
        await conn.execute("VACUUM FULL touchpoints")
        assert CLICK.encode() not in await table_file(central_dsn, "touchpoints")
    finally:
        await conn.close()
