"""Re-sending one user to a sink on demand: POST /api/sinks/{name}/users/{user_id} and
``gateway sink send --user``; the running gateway's sink task delivers on its own too."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import pytest
from aiohttp import web
from jsonschema import Draft202012Validator

from gateway.cli import main
from gateway.config import load_settings
from gateway.events import Binding, Touchpoint, iso
from gateway.ids import uuid7
from gateway.keys import Keys
from gateway.metrics import Metrics
from gateway.openapi import openapi_document
from storage.local import LocalStore
from tests.conftest import ENV, TOKEN, WRITE_KEY, BatchApi, GatewayFactory, sink_toml
from tests.gatewayproc import GatewayProcess
from tests.storage.stores import read

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def post_schema(status: int) -> dict:
    doc = openapi_document()
    op = doc["paths"]["/api/sinks/{name}/users/{user_id}"]["post"]
    return op["responses"][str(status)]["content"]["application/json"]["schema"]


@pytest.fixture
async def origin(upstream_server) -> str:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    return await upstream_server(app)


async def test_admin_resend_and_background_delivery(
    start_gateway: GatewayFactory, origin: str, batch_api: BatchApi
) -> None:
    gw = await start_gateway(origin, sink_toml(batch_api, interval_seconds=0.05), {"SINK_SECRET": WRITE_KEY})
    async with gw.session.get(gw.url + "/?utm_source=newsletter") as resp:
        cookie = resp.cookies["gw_vid"].value
    key = gw.gateway.keys.visitor_key(cookie.split(".")[1])
    now = datetime.now(UTC)
    await gw.gateway.store.write(
        [
            Binding(
                id=uuid7(),
                ts=iso(now),
                node="test",
                visitor_key=key,
                user_key=gw.gateway.keys.user_key("carol"),
                rule="r",
            )
        ]
    )
    async with asyncio.timeout(20):  # the background task delivers by itself
        while {c["type"] for c in batch_api.calls} != {"track", "identify"}:
            await asyncio.sleep(0.02)
    delivered = set(batch_api.unique)

    async def metrics() -> str:
        async with gw.session.get(gw.admin_url + "/metrics", headers=AUTH) as resp:
            return await resp.text()

    # The destination holds the identify before the sink has its answer (counted as sent, the
    # cursor moved, the lag published): a lag of 0 published by a round before the binding was
    # written said "caught up" meanwhile, with 1 message counted. So: the sink's cursor past the
    # binding first, then its lag as published after it.
    store = gw.gateway.settings.store_path
    done = (
        "SELECT (SELECT position FROM sync_cursors WHERE name = 'sink:out:identities')"
        " >= max(rowid) FROM identities"
    )
    async with asyncio.timeout(20):
        while await read(store, done) != [(1,)]:
            await asyncio.sleep(0.02)
    async with asyncio.timeout(20):  # lag is published after each batch
        while 'gateway_sync_lag_rows{reader="sink:out",table="identities"} 0.0' not in await metrics():
            await asyncio.sleep(0.02)
    text = await metrics()
    assert 'gateway_sync_lag_rows{reader="sink:out",table="touchpoints"} 0.0' in text
    assert 'gateway_sink_messages_total{outcome="sent",sink="out"} 2.0' in text

    async with gw.session.post(gw.admin_url + "/api/sinks/out/users/carol", headers=AUTH) as resp:
        assert resp.status == 200
        body = await resp.json()
    Draft202012Validator(post_schema(200)).validate(body)
    assert body["sent"] == 2 and body["sink"] == "out"
    assert set(batch_api.unique) == delivered  # re-sent under the same messageIds

    for path, status in (("/api/sinks/nope/users/carol", 404), ("/api/sinks/out/users/nobody", 404)):
        async with gw.session.post(gw.admin_url + path, headers=AUTH) as resp:
            assert resp.status == status
            assert (await resp.json())["ok"] is False
    batch_api.fail = [500] * 10
    async with gw.session.post(gw.admin_url + "/api/sinks/out/users/carol", headers=AUTH) as resp:
        assert resp.status == 502
        assert "HTTP 500" in (await resp.json())["error"]


async def test_cookieless_logins_behind_one_address_are_not_merged_at_the_destination(
    start_gateway: GatewayFactory, batch_api: BatchApi, upstream_server
) -> None:
    """The whole way, in ``identity.mode = "cookieless"``: ada lands from a campaign and logs
    in, then bob logs in from behind the same address with the same browser, the same day, so
    under the same one-day visitor key. Until 2026-12-06 the sink sent that key as the
    ``anonymousId`` of ada's track and of both identifies: Segment merged ada and bob into one
    profile. Now no message carries it, the landing names neither user (whose it was is not
    known), and a re-send on demand follows the same rules.

    The landing names neither user only when the sink reads it once both are bound: read between
    the two logins, its track names ada, as the README says ("a key bound to one user when its
    landing went out, and to a second one later, keeps the first user's userId there";
    ``tests/storage/test_sinks.py`` has that order). The test left it to the sink's 50 ms
    rounds, and in some runs (one in four on CI's loaded runners) a round fell between the
    logins. So the destination is away (503) until both bindings are in the store: the sink's
    reads fail, and its next read after the destination is back sees both."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def login(request: web.Request) -> web.Response:
        await request.post()
        raise web.HTTPFound("/")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    app.router.add_post("/login", login)
    origin = await upstream_server(app)
    toml = (
        "[identity]\nmode = 'cookieless'\nuser_id_storage = 'encrypt'\n"
        "[[identity.rules]]\nname = 'login'\npath = '/login'\nstatus = [302]\n"
        "user_id = { form = 'username' }\n" + sink_toml(batch_api, interval_seconds=0.05)
    )
    gw = await start_gateway(origin, toml, {"SINK_SECRET": WRITE_KEY})
    store = gw.gateway.settings.store_path
    batch_api.fail = [503] * 10_000  # away until both logins are recorded
    browser = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"}
    async with gw.session.get(gw.url + "/?utm_source=tiktok&utm_campaign=spring", headers=browser) as resp:
        assert resp.status == 200 and "Set-Cookie" not in resp.headers
    for user in ("ada", "bob"):
        async with gw.session.post(
            gw.url + "/login", data={"username": user}, headers=browser, allow_redirects=False
        ) as resp:
            assert resp.status == 302
    async with asyncio.timeout(20):  # both bindings committed (the logins' answers wait for it)
        while await read(store, "SELECT count(*) FROM identities") != [(2,)]:
            await asyncio.sleep(0.02)
    batch_api.fail.clear()
    async with asyncio.timeout(20):  # the background task delivers by itself
        while len([c for c in batch_api.calls if c["type"] == "identify"]) < 2:
            await asyncio.sleep(0.02)
    day_keys = {k for (k,) in await read(store, "SELECT visitor_key FROM identities")}
    populations = {
        c
        for (c,) in await read(store, "SELECT consent FROM identities UNION SELECT consent FROM touchpoints")
    }
    assert len(day_keys) == 1 and populations == {"cookieless"}
    (day_key,) = day_keys
    assert day_key not in str(batch_api.calls)
    (track,) = [c for c in batch_api.calls if c["type"] == "track"]
    assert "userId" not in track and track["anonymousId"].startswith("gw-landing-")
    identifies = {c["userId"]: c for c in batch_api.calls if c["type"] == "identify"}
    assert sorted(identifies) == ["ada", "bob"] and not any("anonymousId" in c for c in identifies.values())
    assert identifies["ada"]["traits"]["source_first_campaign"] == "spring"
    batch_api.calls.clear()
    async with gw.session.post(gw.admin_url + "/api/sinks/out/users/ada", headers=AUTH) as resp:
        body = await resp.json()
    assert resp.status == 200 and body["sent"] == 2, body
    assert day_key not in str(batch_api.calls)
    assert {c["messageId"] for c in batch_api.calls} == {track["messageId"], identifies["ada"]["messageId"]}


async def test_a_re_send_finds_a_user_kept_under_an_earlier_storage_mode(
    start_gateway: GatewayFactory, origin: str, batch_api: BatchApi
) -> None:
    """As the journey lookup and an erasure find them: a binding kept while
    ``identity.user_id_storage`` was ``plain`` (the default is ``hash``) was "nothing recorded
    for this user" to a re-send."""
    from dataclasses import replace

    gw = await start_gateway(origin, sink_toml(batch_api, interval_seconds=60), {"SINK_SECRET": WRITE_KEY})
    plain = replace(gw.gateway.keys, user_mode="plain").user_key("dora")
    now = iso(datetime.now(UTC))
    await gw.gateway.store.write(
        [
            Touchpoint(uuid7(), now, "test", "v" * 32, source="news"),
            Binding(uuid7(), now, "test", "v" * 32, plain, "r"),
        ]
    )
    async with gw.session.post(gw.admin_url + "/api/sinks/out/users/dora", headers=AUTH) as resp:
        body = await resp.json()
    assert resp.status == 200 and body["sent"] == 2, body  # the identify, the landing's track
    # As kept; once (the sink's own round may have sent it too, under the same messageId).
    assert [c["userId"] for c in batch_api.unique.values() if c["type"] == "identify"] == ["dora"]


async def test_a_re_send_by_the_user_key_the_destination_shows(
    start_gateway: GatewayFactory, origin: str, batch_api: BatchApi
) -> None:
    """Under the default ``user_id_storage = "hash"`` a sink sends the user key as ``userId``:
    the one text an operator debugging from the destination has. The lookup and an erasure read
    it as that key (``gateway.usernames``); a re-send read it as a raw ID and answered "nothing
    recorded for this user", though the README says it finds the user as an erasure does."""
    gw = await start_gateway(origin, sink_toml(batch_api, interval_seconds=60), {"SINK_SECRET": WRITE_KEY})
    key = gw.gateway.keys.user_key("fay")
    now = iso(datetime.now(UTC))
    await gw.gateway.store.write(
        [
            Touchpoint(uuid7(), now, "test", "f" * 32, source="news"),
            Binding(uuid7(), now, "test", "f" * 32, key, "r"),
        ]
    )
    async with gw.session.post(gw.admin_url + f"/api/sinks/out/users/{key.upper()}", headers=AUTH) as resp:
        body = await resp.json()
    assert resp.status == 200 and body["sent"] == 2 and body["user_key"] == key, body
    assert [c["userId"] for c in batch_api.unique.values() if c["type"] == "identify"] == [key]


async def test_a_re_send_names_the_user_key_it_sent_the_user_under(
    start_gateway: GatewayFactory, origin: str, batch_api: BatchApi
) -> None:
    """The answer's ``user_key`` was that of the text as typed (its first key form), not the key
    of the user the messages were read from: under a lower-casing rule, ``Ada@Example.com``'s,
    which holds nothing, beside messages whose ``userId`` is ``ada@example.com``'s key; and for a
    user key read as a key (``id:dora``, kept while ``user_id_storage`` was ``plain``), the hash
    of the ID it gives back, a key under which nothing is kept. Now the key the sent bindings are
    kept under, as the user lookup names the user."""
    from dataclasses import replace

    rule = (
        '[[identity.rules]]\nname = "login"\npath = "/login"\nstatus = [302]\n'
        'user_id = { form = "email" }\nlowercase = true\n'
    )
    toml = rule + sink_toml(batch_api, interval_seconds=60)
    gw = await start_gateway(origin, toml, {"SINK_SECRET": WRITE_KEY})
    ada = gw.gateway.keys.user_key("ada@example.com")  # as the rule records it
    dora = replace(gw.gateway.keys, user_mode="plain").user_key("dora")
    now = iso(datetime.now(UTC))
    await gw.gateway.store.write(
        [
            Touchpoint(uuid7(), now, "test", "a" * 32, source="news"),
            Binding(uuid7(), now, "test", "a" * 32, ada, "login"),
            Touchpoint(uuid7(), now, "test", "d" * 32, source="news"),
            Binding(uuid7(), now, "test", "d" * 32, dora, "login"),
        ]
    )
    for typed, key in (("Ada@Example.com", ada), (dora, dora)):
        batch_api.calls.clear()
        async with gw.session.post(gw.admin_url + f"/api/sinks/out/users/{typed}", headers=AUTH) as resp:
            body = await resp.json()
        assert resp.status == 200 and body["sent"] == 2, body
        assert body["user_key"] == key, (typed, body)
        async with gw.session.get(gw.admin_url + f"/api/users/{typed}", headers=AUTH) as resp:
            assert (await resp.json())["user_key"] == key  # as the lookup names them
    # dora's identify names her by the raw ID her plain key gives back (the sink's own round may
    # have sent ada's meanwhile).
    assert "dora" in {c["userId"] for c in batch_api.calls if c["type"] == "identify"}


async def test_a_re_send_whose_every_message_is_too_large_says_so(
    start_gateway: GatewayFactory, origin: str, batch_api: BatchApi
) -> None:
    """The user has a binding, so "no identity binding" (what it said) sent the operator looking
    in the wrong place: every message was over the sink's max_message_bytes."""
    toml = sink_toml(batch_api, interval_seconds=60, max_message_bytes=1024)
    gw = await start_gateway(origin, toml, {"SINK_SECRET": WRITE_KEY})
    ts = iso(datetime.now(UTC))
    await gw.gateway.store.write(
        [
            Touchpoint(uuid7(), ts, "test", "v" * 32, source="news", campaign="c" * 1500),
            Binding(uuid7(), ts, "test", "v" * 32, gw.gateway.keys.user_key("erin"), "r"),
        ]
    )
    async with gw.session.post(gw.admin_url + "/api/sinks/out/users/erin", headers=AUTH) as resp:
        body = await resp.json()
    assert resp.status == 404, body
    assert body["error"].startswith("nothing sent: each of this user's messages is over"), body
    assert batch_api.received == 0


def seed_user(settings: Any, user_key: str, *, touchpoint: bool = True, **landing: str) -> None:
    """A user bound to a visitor, with one landing of ``landing``'s values (``source`` news)
    unless ``touchpoint`` is False, written to the store as the gateway writes it."""
    now = iso(datetime.now(UTC))
    visitor = "e" * 32
    events: list[Any] = [Binding(uuid7(), now, "n", visitor, user_key, "r")]
    if touchpoint:
        events.insert(0, Touchpoint(uuid7(), now, "n", visitor, **{"source": "news", **landing}))

    async def write() -> None:
        store = LocalStore(settings.store_path, settings.options.storage, Metrics())
        await store.open()
        try:
            await store.write(events)
        finally:
            await store.close()

    asyncio.run(write())


def set_env(monkeypatch: pytest.MonkeyPatch, **extra: str) -> None:
    """The gateway's secrets (``ENV``) and ``extra`` (a sink's) in the environment, where the
    command run in-process reads them, as from the operator's shell."""
    for name, value in {**ENV, **extra}.items():
        monkeypatch.setenv(name, value)


@contextlib.contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A destination for the commands, which run outside any gateway and event loop: a plain
    threaded HTTP server of ``handler`` on loopback; its URL. Shut when the block ends."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _Recorder(BaseHTTPRequestHandler):
    calls: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).calls.extend(json.loads(body)["batch"])
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_sink_send_needs_the_secret_of_the_sinks_it_sends_to(tmp_path: Path, capsys, monkeypatch) -> None:
    """Commands that serve nothing do without sink secrets; `sink send` sends with them."""
    set_env(monkeypatch)
    monkeypatch.delenv("SINK_SECRET", raising=False)
    config = tmp_path / "gw.toml"
    config.write_text('[storage]\npath = "node.db"\n' + sink_toml(BatchApi(url="http://127.0.0.1:9")))
    assert main(["sink", "send", "--user", "dave", "-c", str(config)]) == 2
    said = capsys.readouterr().err
    assert "sinks[0].secret: environment variable SINK_SECRET is not set" in said and "Traceback" not in said
    # A command that sends to no sink gets past the config (to a store not created yet).
    assert main(["purge", "--dry-run", "-c", str(config)]) == 1
    assert "no store at" in capsys.readouterr().err


def test_sink_send_needs_no_central_url_it_never_reads(tmp_path: Path, capsys, monkeypatch) -> None:
    """`sink send` reads the store and posts to the sinks: it never connects to the central store.
    Until 2026-12-07 it refused to start without `central.url`'s variable (`central.url:
    environment variable GATEWAY_CENTRAL_URL is not set`, exit 2), so re-sending one user to
    Segment took the database's password in the shell. A variable that is set is still checked."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for name, value in {**ENV, "SINK_SECRET": WRITE_KEY}.items():
            monkeypatch.setenv(name, value)
        config = tmp_path / "gw.toml"
        url = f"http://127.0.0.1:{server.server_address[1]}"
        central = '[central]\nurl = "env:GATEWAY_CENTRAL_URL"\n'
        config.write_text('[storage]\npath = "node.db"\n' + sink_toml(BatchApi(url=url)) + central)
        monkeypatch.setenv("GATEWAY_CENTRAL_URL", "postgresql://gw@127.0.0.1:9/gw")  # for the seeding
        settings = load_settings(config)
        seed_user(settings, Keys.from_master(settings.secret).user_key("dave"), landing_path="/")
        monkeypatch.delenv("GATEWAY_CENTRAL_URL")
        _Recorder.calls.clear()
        assert main(["sink", "send", "--user", "dave", "-c", str(config)]) == 0, capsys.readouterr().err
        assert "out: 2 messages sent" in capsys.readouterr().out
        assert sorted(c["type"] for c in _Recorder.calls) == ["identify", "track"]
        monkeypatch.setenv("GATEWAY_CENTRAL_URL", "mysql://db/tracking")  # set, and wrong: said
        assert main(["sink", "send", "--user", "dave", "-c", str(config)]) == 2
        assert (
            "central.url: the value of GATEWAY_CENTRAL_URL: expected a PostgreSQL URL"
            in capsys.readouterr().err
        )
    finally:
        _Recorder.calls.clear()  # the class's: the next test counts its own
        server.shutdown()
        server.server_close()


def test_sink_send_command(tmp_path: Path, capsys, monkeypatch) -> None:
    """The CLI runs outside any gateway: a plain threaded HTTP server stands in for Segment."""
    set_env(monkeypatch, SINK_SECRET=WRITE_KEY)
    with serving(_Recorder) as url:
        config = tmp_path / "gw.toml"
        config.write_text('[storage]\npath = "node.db"\n' + sink_toml(BatchApi(url=url)))
        for bad in ("", "x" * 257, "a\nb"):  # as the admin API and `gateway erase` refuse them
            assert main(["sink", "send", "--user", bad, "-c", str(config)]) == 2
            assert "gateway: --user: expected 1..256 printable characters" in capsys.readouterr().err
        # No store yet: said so (until 2026-12-05 it made one, empty, and sent "0 messages").
        assert main(["sink", "send", "--user", "dave", "-c", str(config)]) == 1
        assert "gateway: no store at" in capsys.readouterr().err and not (tmp_path / "node.db").exists()
        settings = load_settings(config)
        keys = Keys.from_master(settings.secret)
        seed_user(settings, keys.user_key("dave"), landing_path="/")
        # Nothing recorded for them: said, exit 1, as the admin API's 404 (until 2026-12-05 "out:
        # 0 messages sent" and exit 0, which a mistyped ID could not be told from).
        assert main(["sink", "send", "--user", "nobody", "-c", str(config)]) == 1
        out, err = capsys.readouterr()
        said = "gateway: nothing recorded for this user (no identity binding); nothing sent\n"
        assert out == "" and err == said
        # Pasted with spaces, as intake would trim them: dave (it found nobody).
        assert main(["sink", "send", "--user", " dave ", "-c", str(config)]) == 0
        assert "out: 2 messages sent" in capsys.readouterr().out
        assert sorted(c["type"] for c in _Recorder.calls) == ["identify", "track"]
        # By the user key the destination shows as userId (hash mode), as `gateway erase` reads it.
        assert main(["sink", "send", "--user", keys.user_key("dave"), "-c", str(config)]) == 0
        assert "out: 2 messages sent" in capsys.readouterr().out
        assert {c["userId"] for c in _Recorder.calls} == {keys.user_key("dave")}
    assert main(["sink", "send", "--user", "dave", "--sink", "nope", "-c", str(config)]) == 2
    assert "no sink named 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("storage", ["hash", "encrypt", "plain"])
def test_sink_send_says_the_user_key_it_sent_under(tmp_path: Path, capsys, monkeypatch, storage: str) -> None:
    """``out: 2 messages sent`` named no user: the operator could not tell which bindings went
    (``Ada@Example.com`` under a lower-casing rule is ``ada@example.com``'s key, an ID kept
    under an earlier ``user_id_storage`` its old key), nor find them at the destination. Now
    each line names the user_key, as the admin API's answer does, and never the raw ID: under
    ``encrypt`` the key, not the ID the destination gets as userId; under ``plain``, whose key
    is the ID itself, no key at all."""
    _Recorder.calls.clear()
    set_env(monkeypatch, SINK_SECRET=WRITE_KEY)
    with serving(_Recorder) as url:
        config = tmp_path / "gw.toml"
        config.write_text(
            f'[storage]\npath = "node.db"\n[identity]\nuser_id_storage = "{storage}"\n'
            + sink_toml(BatchApi(url=url))
        )
        settings = load_settings(config)
        key = Keys.from_master(settings.secret, storage).user_key("dave-4711")
        seed_user(settings, key, landing_path="/")
        assert main(["sink", "send", "--user", "dave-4711", "-c", str(config)]) == 0
        out, err = capsys.readouterr()
        assert err == "" and "dave-4711" not in out, out
        if storage == "plain":
            said = 'not printed: the user ID itself, as identity.user_id_storage = "plain" keeps it'
            assert out == f"out: 2 messages sent (user_key {said})\n", out
        else:
            assert out == f"out: 2 messages sent (user_key {key})\n", out
        assert sorted(c["type"] for c in _Recorder.calls) == ["identify", "track"]


def test_sink_send_of_an_erased_user_says_when_the_user_was_erased(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    """Nothing to send, as for a mistyped ID, but not for the same reason: the operator is told
    (until 2026-12-05 "nothing recorded for this user (no identity binding)", as for an ID never
    seen), from the erasure's record."""
    set_env(monkeypatch, SINK_SECRET=WRITE_KEY)
    config = tmp_path / "gw.toml"
    config.write_text(
        f'[storage]\npath = "{tmp_path / "node.db"}"\n' + sink_toml(BatchApi(url="http://127.0.0.1:9"))
    )
    settings = load_settings(config)
    seed_user(settings, Keys.from_master(settings.secret).user_key("dave"), landing_path="/")
    assert main(["erase", "dave", "-c", str(config)]) == 0
    capsys.readouterr()
    with sqlite3.connect(settings.store_path) as db:
        ((erased_at,),) = db.execute("SELECT ts FROM erasures").fetchall()
    assert main(["sink", "send", "--user", "dave", "-c", str(config)]) == 1
    out, err = capsys.readouterr()
    assert (out, err) == (
        "",
        f"gateway: nothing recorded for this user: erased on {erased_at}; nothing sent\n",
    )


def test_sink_send_of_a_user_with_no_landing_to_send_says_so(tmp_path: Path, capsys, monkeypatch) -> None:
    """Bound, but every landing of theirs made without consent: no track may go, and an
    identify without traits tells the destination nothing. Until 2026-12-06 `sink send` sent
    that empty identify ("out: 1 message sent"); now it says why nothing goes, exit 1, as the
    admin API's 404."""
    set_env(monkeypatch, SINK_SECRET=WRITE_KEY)
    api = BatchApi(url="http://127.0.0.1:9")  # never called: nothing to send
    config = tmp_path / "gw.toml"
    config.write_text(f'[storage]\npath = "{tmp_path / "node.db"}"\n' + sink_toml(api))
    settings = load_settings(config)
    seed_user(settings, Keys.from_master(settings.secret).user_key("dave"), consent="no_consent")
    assert main(["sink", "send", "--user", "dave", "-c", str(config)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("gateway: nothing to send for this user: no landing of theirs"), err
    assert err.endswith("; nothing sent\n") and "Traceback" not in err


def test_sink_send_of_a_user_whose_every_message_is_too_large_says_so(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    """As the admin API's 404: "out: 0 messages sent" and exit 0 (until 2026-12-05) read as done,
    where nothing was sent, each message being over the sink's max_message_bytes."""
    set_env(monkeypatch, SINK_SECRET=WRITE_KEY)
    config = tmp_path / "gw.toml"
    api = BatchApi(url="http://127.0.0.1:9")  # never called: nothing fits
    config.write_text('[storage]\npath = "node.db"\n' + sink_toml(api, max_message_bytes=1024))
    settings = load_settings(config)
    keys = Keys.from_master(settings.secret)

    seed_user(settings, keys.user_key("erin"), campaign="c" * 1500)
    assert main(["sink", "send", "--user", "erin", "-c", str(config)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "gateway: sink out: nothing sent: each of this user's messages is over sinks[].max_message_bytes\n"
    )


class _Webhook(BaseHTTPRequestHandler):
    """A webhook receiver: records each delivery's path, signature headers and batch."""

    deliveries: ClassVar[list[tuple[str, str, list[dict[str, Any]]]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).deliveries.append(
            (self.path, self.headers["webhook-signature"], json.loads(body)["batch"])
        )
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize("unset", ["secret", "url"])
def test_sink_send_to_one_sink_needs_no_other_sinks_variables(
    tmp_path: Path, capsys, monkeypatch, unset: str
) -> None:
    """``sink send --sink a`` while sink b's secret (or its ``env:`` URL) is not set: it printed
    a KeyError traceback (every sink was built, and b's secret looked up). Now it sends to a;
    without ``--sink`` it still says what b lacks."""
    _Webhook.deliveries.clear()
    set_env(monkeypatch, SINK_A=WRITE_KEY)
    if unset == "url":
        monkeypatch.setenv("SINK_B", "k" * 32)
    with serving(_Webhook) as url:
        b_url = "env:SINK_B_URL" if unset == "url" else f"{url}/b"
        config = tmp_path / "gw.toml"
        config.write_text(
            '[storage]\npath = "node.db"\n'
            f'[[sinks]]\nname = "a"\nkind = "webhook"\nurl = "{url}/a"\nsecret = "env:SINK_A"\n'
            "max_message_bytes = 1024\n"
            f'[[sinks]]\nname = "b"\nkind = "webhook"\nurl = "{b_url}"\nsecret = "env:SINK_B"\n'
        )
        settings = load_settings(config, offline=True)
        keys = Keys.from_master(settings.secret)

        # Its landing's track is over a's max_message_bytes (a path of 1,500 characters): the
        # identify alone goes, one message.
        seed_user(settings, keys.user_key("erin"), landing_path="/" + "p" * 1500)
        assert main(["sink", "send", "--user", "erin", "--sink", "a", "-c", str(config)]) == 0
        out, err = capsys.readouterr()
        assert out == f"a: 1 message sent (user_key {keys.user_key('erin')})\n" and err == "", err
        ((path, signature, batch),) = _Webhook.deliveries
        assert path == "/a" and signature.startswith("v1,")
        assert [c["type"] for c in batch] == ["identify"] and batch[0]["userId"] == keys.user_key("erin")
        assert main(["sink", "send", "--user", "erin", "-c", str(config)]) == 2
        missing = "SINK_B" if unset == "secret" else "SINK_B_URL"
        said = f"sinks[1].{unset}: environment variable {missing} is not set"
        assert said in capsys.readouterr().err
        assert len(_Webhook.deliveries) == 1


@pytest.mark.parametrize("key_set", [False, True])
async def test_a_sink_whose_key_dev_made_up_sends_nothing(
    tmp_path: Path, batch_api: BatchApi, key_set: bool
) -> None:
    """``gateway run --dev`` makes up a missing write key: the sink sent every visitor's calls to
    its destination (a third party, as often as not) under a key it drops without a word
    (Segment answers 200). Now it sends nothing and says which variable to set; with the key
    set, it sends as ever."""
    config = tmp_path / "gw.toml"
    listen = "[proxy]\nworkers = 1\nlisten = '127.0.0.1:0'\n[admin]\nlisten = '127.0.0.1:0'\n"
    text = f"[storage]\npath = '{tmp_path / 'gw.db'}'\n{listen}" + sink_toml(batch_api, interval_seconds=0.05)
    await asyncio.to_thread(config.write_text, text)
    env = {"SINK_SECRET": WRITE_KEY} if key_set else {}
    gw = await GatewayProcess.start(config, "--dev", env=env)
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(gw.proxy + "/?utm_source=newsletter") as resp,
        ):
            assert resp.status in (200, 404, 502)  # the demo origin or none: the landing is recorded
        if key_set:
            async with asyncio.timeout(10):
                while not batch_api.calls:
                    await asyncio.sleep(0.05)
        else:
            await gw.wait_log(lambda r: "sinks[0] (out)" in r["msg"])
            await asyncio.sleep(1.0)  # twenty of its rounds
            said = [r["msg"] for r in gw.logs() if "sinks[0] (out)" in r["msg"]]
            assert said == [
                "sinks[0] (out): its secret was made up by --dev, so it sends nothing;"
                " set SINK_SECRET to send"
            ]
            assert batch_api.received == 0
            # Nor does the admin API's re-send of one user: it says why.
            url = gw.admin + "/api/sinks/out/users/alice"
            async with aiohttp.ClientSession() as session, session.post(url, headers=AUTH) as resp:
                answer = await resp.json()
            assert resp.status == 409, answer
            assert (
                "409" in openapi_document()["paths"]["/api/sinks/{name}/users/{user_id}"]["post"]["responses"]
            )
            assert answer["error"] == (
                "sinks[0] (out): its secret was made up by --dev, so it sends nothing; set SINK_SECRET"
            )
            assert batch_api.received == 0
    finally:
        await gw.stop()


class _Broken(BaseHTTPRequestHandler):
    """A destination that fails every batch (a 500), as one down for maintenance."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_sink_send_to_every_sink_goes_on_past_one_that_fails_and_names_it(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    """Two sinks, the first failing: the command stopped at it with `sink send failed: HTTP
    500`, naming no sink, and never sent to the second (until 2026-12-05). Now each sink is
    tried, the one that failed named on stderr, the others' counts printed, exit 1."""
    _Recorder.calls.clear()
    set_env(monkeypatch, SINK_A=WRITE_KEY, SINK_B=WRITE_KEY)
    with serving(_Broken) as broken, serving(_Recorder) as working:
        config = tmp_path / "gw.toml"
        sinks = "".join(
            f'[[sinks]]\nname = "{name}"\nkind = "segment"\nsecret = "env:SINK_{name[0].upper()}"\n'
            f'url = "{url}"\nbackoff_max_seconds = 0.1\n'
            for name, url in (("a-down", broken), ("b-up", working))
        )
        config.write_text('[storage]\npath = "node.db"\n' + sinks)
        settings = load_settings(config)
        keys = Keys.from_master(settings.secret)

        seed_user(settings, keys.user_key("dave"), landing_path="/")
        assert main(["sink", "send", "--user", "dave", "-c", str(config)]) == 1
        out, err = capsys.readouterr()
        assert out == f"b-up: 2 messages sent (user_key {keys.user_key('dave')})\n", out
        assert err == "gateway: sink send failed: sink a-down: HTTP 500\n", err
        assert sorted(c["type"] for c in _Recorder.calls) == ["identify", "track"]


@pytest.mark.parametrize("storage", ["hash", "encrypt"])
async def test_an_erasure_names_the_user_id_the_sinks_sent_to_delete_at_the_destination(
    start_gateway: GatewayFactory, origin: str, batch_api: BatchApi, storage: str
) -> None:
    """Sinks are not sent erasures: the operator deletes the user at the destination (Segment's
    deletion is by userId). Under the default "hash" what a sink sent as userId is the user's
    key, not the ID the data subject gave, so the erasure's answer names the userId to delete
    there (until 2026-12-08 it said "delete it there" alone, and a deletion by the raw ID at
    Segment found nothing)."""
    toml = f'[identity]\nuser_id_storage = "{storage}"\n' + sink_toml(batch_api, interval_seconds=0.05)
    gw = await start_gateway(origin, toml, {"SINK_SECRET": WRITE_KEY})
    async with gw.session.get(gw.url + "/?utm_source=newsletter") as resp:
        cookie = resp.cookies["gw_vid"].value
    key = gw.gateway.keys.visitor_key(cookie.split(".")[1])
    user_key = gw.gateway.keys.user_key("carol@example.com")
    binding = Binding(
        id=uuid7(), ts=iso(datetime.now(UTC)), node="test", visitor_key=key, user_key=user_key, rule="r"
    )
    await gw.gateway.store.write([binding])
    async with asyncio.timeout(20):
        while not [c for c in batch_api.calls if c["type"] == "identify"]:
            await asyncio.sleep(0.02)
    (sent_as,) = {c["userId"] for c in batch_api.calls if c["type"] == "identify"}
    async with gw.session.delete(gw.admin_url + "/api/users/carol@example.com", headers=AUTH) as resp:
        assert resp.status == 200
        answer = await resp.json()
    (said,) = [line for line in answer["elsewhere"] if "sink" in line]
    if storage == "hash":
        assert sent_as == answer["user_key"] != "carol@example.com"
        assert f"by the userId they were sent under, {sent_as}" in said
        assert 'identity.user_id_storage = "hash"' in said
    else:
        assert sent_as == "carol@example.com"
        assert "by the userId they were sent under, the user ID itself" in said
        assert "carol@example.com" not in said  # the answer may be kept: never the raw ID


async def test_a_visitor_s_erasure_names_the_anonymous_id_the_sinks_sent_to_delete_at_the_destination(
    start_gateway: GatewayFactory, origin: str, batch_api: BatchApi
) -> None:
    """A visitor's landings went to the sinks under an anonymousId: its visitor_key, never the
    cookie's visitor ID the data subject gives. The erasure's answer names that anonymousId
    (until 2026-12-08 it said "delete it there" alone, and the operator had only the cookie's
    ID, which no destination has)."""
    gw = await start_gateway(origin, sink_toml(batch_api, interval_seconds=0.05), {"SINK_SECRET": WRITE_KEY})
    async with gw.session.get(gw.url + "/?utm_source=newsletter") as resp:
        cookie = resp.cookies["gw_vid"].value
    async with asyncio.timeout(20):
        while not [c for c in batch_api.calls if c["type"] == "track"]:
            await asyncio.sleep(0.02)
    (sent_as,) = {c["anonymousId"] for c in batch_api.calls if c["type"] == "track"}
    async with gw.session.delete(gw.admin_url + f"/api/visitors/{cookie}", headers=AUTH) as resp:
        assert resp.status == 200
        answer = await resp.json()
    (said,) = [line for line in answer["elsewhere"] if "sink" in line]
    assert sent_as == gw.gateway.keys.visitor_key(cookie.split(".")[1])
    assert f"by the anonymousId they were sent under, {sent_as}" in said, said
    assert cookie.split(".")[1] not in said  # the answer may be kept: never the raw ID


def test_gateway_erase_visitor_names_the_anonymous_id_the_sinks_sent(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    """``gateway erase --visitor`` says it as the admin API's answer does: the anonymousId a
    sink sent the visitor's landing under (here by ``gateway sink send``, to a loopback
    destination), the visitor_key the erasure was given."""
    _Recorder.calls.clear()
    set_env(monkeypatch, SINK_SECRET=WRITE_KEY)
    with serving(_Recorder) as url:
        config = tmp_path / "gw.toml"
        config.write_text('[storage]\npath = "node.db"\n' + sink_toml(BatchApi(url=url)))
        settings = load_settings(config)
        keys = Keys.from_master(settings.secret)
        seed_user(settings, keys.user_key("dave"), landing_path="/")
        assert main(["sink", "send", "--user", "dave", "-c", str(config)]) == 0
        (sent_as,) = {c["anonymousId"] for c in _Recorder.calls if c["type"] == "track"}
        capsys.readouterr()
        assert main(["erase", "--visitor", sent_as, "-c", str(config)]) == 0
        out = capsys.readouterr().out
    _Recorder.calls.clear()
    (said,) = [line for line in out.splitlines() if "sink" in line]
    assert f"by the anonymousId they were sent under, {sent_as}" in said, out
