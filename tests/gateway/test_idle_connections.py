"""Idle and slow-head connections on both listeners (``proxy.keepalive_timeout``,
``proxy.header_timeout``; ``gateway/protocol_errors.py``, ``gateway/server.py``): a connection that
sends nothing, or nothing more after an answer, is closed once ``keepalive_timeout`` is over; a
request head that does not arrive whole within ``header_timeout`` of its first byte gets a 408
and the connection is closed. aiohttp's own default held each for 3630 s.

What these bounds must not cut is tested beside them: a slow body (``proxy.body_timeout``'s), a
slow answer, a client whose requests come within the bound, a WebSocket.

Real parts: raw sockets on 127.0.0.1 to a running gateway in front of an aiohttp origin. The
bounds are small here (under a second); a wait is only ever "closed within a generous bound"."""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import TOKEN, RunningGateway
from tests.gateway.test_malformed import read_response
from tests.gateway.test_proxy import app_of

PATIENCE = 10.0
"""Seconds a test waits for a close the bounds (under a second) owe it: generous, for busy machines."""
SHORT = "[proxy]\nkeepalive_timeout = 0.5\nheader_timeout = 0.5\n"


async def page(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(text="ok")


async def start(
    start_gateway, upstream_server, toml: str = SHORT, calls: list[str] | None = None
) -> RunningGateway:
    async def handler(request: web.Request) -> web.StreamResponse:
        if calls is not None:
            calls.append(request.raw_path)
        if request.path == "/slow":
            await asyncio.sleep(1.2)
        return await page(request)

    return await start_gateway(await upstream_server(app_of(handler)), toml)


def port_of(gw: RunningGateway, listener: str) -> int:
    return int(gw.proxy.port if listener == "proxy" else gw.admin.port)


async def closed(reader: asyncio.StreamReader) -> bytes:
    """What the listener sends until it closes the connection, within ``PATIENCE``."""
    async with asyncio.timeout(PATIENCE):
        return await reader.read()


async def trickle(writer: asyncio.StreamWriter, pieces: list[bytes], pause: float) -> None:
    """``pieces`` one by one, ``pause`` apart, until done or the listener closed the connection."""
    for piece in pieces:
        if writer.is_closing():
            return
        try:
            writer.write(piece)
            await writer.drain()
        except ConnectionError:
            return
        await asyncio.sleep(pause)


LISTENERS = pytest.mark.parametrize("listener", ["proxy", "admin"])


@LISTENERS
async def test_a_connection_that_sends_nothing_is_closed(
    start_gateway, upstream_server, listener: str
) -> None:
    """Nothing sent at all: closed once ``proxy.keepalive_timeout`` is over, without a word
    (nginx's behaviour too: a connection that never began a request is owed no answer)."""
    gw = await start(start_gateway, upstream_server)
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gw, listener))
    try:
        assert await closed(reader) == b""
    finally:
        writer.close()


@LISTENERS
async def test_an_idle_keep_alive_connection_is_closed_after_its_answer(
    start_gateway, upstream_server, listener: str
) -> None:
    gw = await start(start_gateway, upstream_server)
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gw, listener))
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        answer = await read_response(reader)
        assert answer.status == 200 and "close" not in answer.headers.get("Connection", "")
        assert await closed(reader) == b""
    finally:
        writer.close()


async def test_a_head_sent_slowly_past_header_timeout_gets_408_and_the_site_is_not_asked(
    start_gateway, upstream_server
) -> None:
    """One header line every 0.1 s: each byte keeps the connection busy, but the head is not
    whole within ``proxy.header_timeout`` (0.5 s) of its first byte: 408, the neutral page, and
    the connection closed. ``keepalive_timeout`` is long here, so the 408 is the head's bound."""
    calls: list[str] = []
    toml = "[proxy]\nkeepalive_timeout = 60\nheader_timeout = 0.5\n"
    gw = await start(start_gateway, upstream_server, toml, calls)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)
    lines = [b"GET /page HTTP/1.1\r\n"] + [b"X-Slow-%d: 1\r\n" % i for i in range(200)] + [b"\r\n"]
    sending = asyncio.create_task(trickle(writer, lines, 0.1))
    try:
        answer = await read_response(reader)
        assert answer.status == 408
        assert answer.headers["Connection"] == "close"
        assert "<title>408 Request Timeout</title>" in answer.body.decode()
        assert await closed(reader) == b""
    finally:
        sending.cancel()
        writer.close()
    assert calls == []


async def test_a_slow_head_on_the_admin_listener_gets_its_json_408(start_gateway, upstream_server) -> None:
    toml = "[proxy]\nkeepalive_timeout = 60\nheader_timeout = 0.5\n"
    gw = await start(start_gateway, upstream_server, toml)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.admin.port)
    lines = [b"GET /healthz HTTP/1.1\r\n"] + [b"X-Slow-%d: 1\r\n" % i for i in range(200)] + [b"\r\n"]
    sending = asyncio.create_task(trickle(writer, lines, 0.1))
    try:
        answer = await read_response(reader)
        assert answer.status == 408
        assert json.loads(answer.body) == {
            "ok": False,
            "status": 408,
            "error": "the request head did not arrive whole within proxy.header_timeout (0.5 s)",
        }
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert await closed(reader) == b""
    finally:
        sending.cancel()
        writer.close()


async def test_a_slow_heads_408_to_a_head_request_has_no_body(start_gateway, upstream_server) -> None:
    toml = "[proxy]\nkeepalive_timeout = 60\nheader_timeout = 0.5\n"
    gw = await start(start_gateway, upstream_server, toml)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)
    lines = [b"HEAD /page HTTP/1.1\r\n"] + [b"X-Slow-%d: 1\r\n" % i for i in range(200)] + [b"\r\n"]
    sending = asyncio.create_task(trickle(writer, lines, 0.1))
    try:
        answer = await read_response(reader, head=True)
        assert answer.status == 408
        assert await closed(reader) == b""  # nothing after the head: no page
    finally:
        sending.cancel()
        writer.close()


async def test_a_slow_body_is_body_timeouts_not_cut_by_the_head_or_idle_bounds(
    start_gateway, upstream_server
) -> None:
    """A body trickled over twice the head and idle bounds (each piece well within
    ``proxy.body_timeout``) reaches the site whole and is answered."""
    calls: list[str] = []
    gw = await start(start_gateway, upstream_server, SHORT, calls)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)
    try:
        writer.write(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 12\r\n\r\n")
        await trickle(writer, [b"ab"] * 6, 0.2)
        answer = await read_response(reader)
        assert (answer.status, answer.body) == (200, b"ok")
    finally:
        writer.close()
    assert calls == ["/up"]


async def test_a_stalled_body_still_gets_body_timeouts_408(start_gateway, upstream_server) -> None:
    """The body's bound is unchanged: ``proxy.body_timeout`` answers a stalled upload 408, with
    the head and idle bounds long."""
    toml = "[proxy]\nkeepalive_timeout = 60\nheader_timeout = 60\nbody_timeout = 0.5\n"
    gw = await start(start_gateway, upstream_server, toml)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)
    try:
        writer.write(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()
        answer = await read_response(reader)
        assert answer.status == 408
    finally:
        writer.close()


async def test_a_keep_alive_client_within_the_bound_is_never_cut(start_gateway, upstream_server) -> None:
    """Requests 0.1 s apart on one connection, for longer than the idle bound in all, and one
    whose answer takes longer than both bounds: every one answered on the same connection."""
    toml = "[proxy]\nkeepalive_timeout = 1.0\nheader_timeout = 0.5\n"
    gw = await start(start_gateway, upstream_server, toml)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)
    try:
        for path in [b"/page"] * 8 + [b"/slow"] + [b"/page"] * 8:
            writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: t\r\n\r\n")
            await writer.drain()
            answer = await read_response(reader)
            assert (answer.status, answer.body) == (200, b"ok"), path
            await asyncio.sleep(0.1)
    finally:
        writer.close()


async def test_a_head_whose_lines_come_within_the_bound_is_answered(start_gateway, upstream_server) -> None:
    """A first request begun late (but within ``keepalive_timeout``), its head sent in pieces
    past the end of ``keepalive_timeout`` but whole within ``header_timeout``: answered. Once a
    head began, its own bound is the one that counts (nginx's too); aiohttp's idle close cut it."""
    toml = "[proxy]\nkeepalive_timeout = 0.6\nheader_timeout = 5\n"
    gw = await start(start_gateway, upstream_server, toml)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)
    try:
        await asyncio.sleep(0.3)
        await trickle(writer, [b"GET /page HTTP/1.1\r\n", b"Host: t\r\n", b"X-A: 1\r\n", b"\r\n"], 0.3)
        answer = await read_response(reader)
        assert (answer.status, answer.body) == (200, b"ok")
    finally:
        writer.close()


async def test_a_websocket_is_not_cut_by_the_idle_or_head_bounds(start_gateway, upstream_server) -> None:
    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_str(msg.data)
        return ws

    gw = await start_gateway(await upstream_server(app_of(echo)), SHORT)
    async with gw.session.ws_connect(gw.url + "/ws") as ws:
        await ws.send_str("first")
        assert (await ws.receive(timeout=5)).data == "first"
        await asyncio.sleep(1.5)  # three times each bound, silent both ways
        await ws.send_str("after a pause")
        assert (await ws.receive(timeout=5)).data == "after a pause"


async def test_the_admin_api_still_answers_within_the_bounds(start_gateway, upstream_server) -> None:
    gw = await start(start_gateway, upstream_server)
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            async with session.get(
                gw.admin_url + "/api/touchpoints", headers={"Authorization": f"Bearer {TOKEN}"}
            ) as resp:
                assert resp.status == 200
            await asyncio.sleep(0.1)


async def test_empty_lines_after_an_answer_are_idle_not_a_head(start_gateway, upstream_server) -> None:
    """The CRLF some clients send after a body (RFC 9112 §2.2 lets a server skip empty lines
    before a request) begins no head: the connection is closed silently once idle past
    ``keepalive_timeout``, no 408 sent that the client would read as its next request's answer."""
    toml = "[proxy]\nkeepalive_timeout = 1.0\nheader_timeout = 0.3\n"
    gw = await start(start_gateway, upstream_server, toml)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)
    try:
        writer.write(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nab")
        await writer.drain()
        answer = await read_response(reader)
        assert answer.status == 200
        writer.write(b"\r\n")  # once the answer came: a read of its own
        await writer.drain()
        assert await closed(reader) == b""
    finally:
        writer.close()


async def test_a_pipelined_head_begun_during_an_answer_is_bound_by_header_timeout(
    start_gateway, upstream_server
) -> None:
    """A second request's head begun behind the first on the same connection (pipelined) while
    the first is answered, and never finished (a slow-loris on a kept-alive connection): its
    ``proxy.header_timeout`` counts from its first byte as any head's does. The first answer
    goes out whole, then the 408, and the connection is closed; the site is asked the first
    request only. Until 2026-12-07 such a head was not timed at all: ``keepalive_timeout``
    (long here) closed the connection, counted from the first answer, without a 408."""
    calls: list[str] = []
    toml = "[proxy]\nkeepalive_timeout = 60\nheader_timeout = 0.5\n"
    gw = await start(start_gateway, upstream_server, toml, calls)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)
    try:
        writer.write(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\nGET /next HTTP/1.1\r\nHost: t\r\n")
        await writer.drain()
        first = await read_response(reader)
        assert (first.status, first.body) == (200, b"ok")
        answer = await read_response(reader)
        assert answer.status == 408
        assert answer.headers["Connection"] == "close"
        assert await closed(reader) == b""
    finally:
        writer.close()
    assert calls == ["/slow"]


async def test_a_pipelined_head_whole_within_the_bound_is_answered_after_a_slow_answer(
    start_gateway, upstream_server
) -> None:
    """The other side: a pipelined head that comes in pieces but whole within
    ``header_timeout``, behind an answer that takes longer than it (1.2 s): both answered, on
    the same connection."""
    calls: list[str] = []
    toml = "[proxy]\nkeepalive_timeout = 60\nheader_timeout = 0.5\n"
    gw = await start(start_gateway, upstream_server, toml, calls)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)
    try:
        writer.write(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\nGET /next HTTP/1.1\r\n")
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.write(b"Host: t\r\n\r\n")
        await writer.drain()
        for _ in range(2):
            answer = await read_response(reader)
            assert (answer.status, answer.body) == (200, b"ok")
    finally:
        writer.close()
    assert calls == ["/slow", "/next"]


def timed_out(gw: RunningGateway, listener: str, reason: str) -> float:
    value = gw.gateway.metrics.registry.get_sample_value(
        "gateway_connections_timed_out_total", {"listener": listener, "reason": reason}
    )
    return value or 0.0


@LISTENERS
async def test_idle_closes_are_counted_and_logged_at_debug(
    start_gateway, upstream_server, caplog: pytest.LogCaptureFixture, listener: str
) -> None:
    """An operator sees the connections ``proxy.keepalive_timeout`` closes: counted by listener
    in ``gateway_connections_timed_out_total{reason="keepalive_timeout"}``, and a debug line
    (they are normal: every browser leaves its connections open), at most one every 10 s.
    Until 2026-12-07 neither."""
    caplog.set_level(logging.DEBUG, "gateway.listener")
    gw = await start(start_gateway, upstream_server)
    for _ in range(2):
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gw, listener))
        try:
            assert await closed(reader) == b""
        finally:
            writer.close()
    assert timed_out(gw, listener, "keepalive_timeout") == 2.0
    assert timed_out(gw, listener, "header_timeout") == 0.0
    lines = [r for r in caplog.records if r.name == "gateway.listener" and "idle" in r.getMessage()]
    assert [(r.levelno, r.getMessage()) for r in lines] == [
        (
            logging.DEBUG,
            f"closed a connection to the {listener} listener idle past proxy.keepalive_timeout (0.5 s)",
        )
    ]


async def test_heads_cut_by_header_timeout_are_counted_and_logged_at_info(
    start_gateway, upstream_server, caplog: pytest.LogCaptureFixture
) -> None:
    """Each 408 for a head not whole within ``proxy.header_timeout`` is counted in
    ``gateway_connections_timed_out_total{reason="header_timeout"}`` (and still in
    ``gateway_requests_total{outcome="bad_request"}``), and said at info level, at most once
    every 10 s with the count held back: a slow-loris, or real clients on a bad network.
    Until 2026-12-07 only a debug line said it, as for a scanner's garbage."""
    caplog.set_level(logging.DEBUG, "gateway.listener")
    toml = "[proxy]\nkeepalive_timeout = 60\nheader_timeout = 0.5\n"
    gw = await start(start_gateway, upstream_server, toml)
    for _ in range(2):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)
        try:
            writer.write(b"GET /page HTTP/1.1\r\nHost: t\r\n")
            await writer.drain()
            assert (await read_response(reader)).status == 408
            assert await closed(reader) == b""
        finally:
            writer.close()
    assert timed_out(gw, "proxy", "header_timeout") == 2.0
    assert timed_out(gw, "proxy", "keepalive_timeout") == 0.0
    bad = gw.gateway.metrics.registry.get_sample_value("gateway_requests_total", {"outcome": "bad_request"})
    assert bad == 2.0
    lines = [r for r in caplog.records if r.name == "gateway.listener"]
    assert [(r.levelno, r.getMessage()) for r in lines] == [
        (
            logging.INFO,
            "a request head did not arrive whole within proxy.header_timeout (0.5 s) on the proxy "
            "listener: answered 408 and the connection closed (a slow client or a slow-loris; "
            "gateway_connections_timed_out_total counts them)",
        )
    ]
