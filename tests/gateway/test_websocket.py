"""WebSocket close reasons through the gateway (``gateway/websocket.py``): the reason text of a
close frame (RFC 6455 §5.5.1: the UTF-8 bytes after the code, at most 123) reaches the other
side byte for byte, both ways, and so does the reason of the reply to it; a reason that is no
UTF-8 fails the connection as an endpoint must (§8.1), crashing nothing.

Real parts: an aiohttp WebSocket origin on 127.0.0.1, the gateway, an aiohttp client. aiohttp's
own ``close`` reads the reply to a close frame and keeps its code only, so a side here that
wants to hear the reply's reason sends its close frame itself and reads the reply as a message
(``close_and_hear_reply``), as a browser's ``CloseEvent.reason`` does."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import struct

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.http_websocket import WS_KEY as GUID_BYTES

from tests.conftest import RawHandler
from tests.gateway.test_proxy import app_of

Socket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse
Heard = tuple[WSMsgType, object, bytes]

REASONS = [
    pytest.param(b"", id="empty"),
    pytest.param(b"going home", id="ascii"),
    pytest.param("à bientôt, 再见 👋".encode(), id="non-ascii"),
    pytest.param(("é" * 61 + "!").encode(), id="123-bytes"),  # the most a close frame holds
]


def reply_to(reason: bytes) -> bytes:
    """A reply reason unlike ``reason`` (same characters, reversed; the same length), so that a
    gateway that answered with the reason it was sent is caught."""
    return reason.decode()[::-1].encode()


async def close_and_hear_reply(ws: Socket, code: int, reason: bytes) -> aiohttp.WSMessage:
    """Send a close frame with ``code`` and ``reason``, and read the other side's reply to it as
    a message, its reason included."""
    await ws.send_frame(struct.pack("!H", code) + reason, WSMsgType.CLOSE)
    return await ws.receive(timeout=5)


def heard(msg: aiohttp.WSMessage) -> Heard:
    """A close message as type, code and reason bytes."""
    return msg.type, msg.data, (msg.extra or "").encode()


@pytest.mark.parametrize("reason", REASONS)
async def test_visitor_close_reason_and_site_reply_reason_cross_byte_for_byte(
    start_gateway, upstream_server, reason: bytes
) -> None:
    """The visitor closes: the site hears its reason, and the visitor the reason of the site's
    reply (the gateway's reply carried none: aiohttp's ``close`` read the site's and dropped it)."""
    site_heard: asyncio.Queue[Heard] = asyncio.Queue()

    async def site(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoclose=False)
        await ws.prepare(request)
        site_heard.put_nowait(heard(await ws.receive(timeout=5)))
        await ws.close(code=4010, message=reply_to(reason))
        return ws

    gw = await start_gateway(await upstream_server(app_of(site)))
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(gw.url + "/ws", autoclose=False)
        visitor_heard = heard(await close_and_hear_reply(ws, 4000, reason))
        await ws.close()
    assert await asyncio.wait_for(site_heard.get(), 5) == (WSMsgType.CLOSE, 4000, reason)
    assert visitor_heard == (WSMsgType.CLOSE, 4010, reply_to(reason))


@pytest.mark.parametrize("reason", REASONS)
async def test_site_close_reason_and_visitor_reply_reason_cross_byte_for_byte(
    start_gateway, upstream_server, reason: bytes
) -> None:
    """The site closes: the visitor hears its reason, and the site the reason of the visitor's
    reply."""
    site_heard: asyncio.Queue[Heard] = asyncio.Queue()

    async def site(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoclose=False)
        await ws.prepare(request)
        site_heard.put_nowait(heard(await close_and_hear_reply(ws, 4001, reason)))
        return ws

    gw = await start_gateway(await upstream_server(app_of(site)))
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(gw.url + "/ws", autoclose=False)
        assert heard(await ws.receive(timeout=5)) == (WSMsgType.CLOSE, 4001, reason)
        await ws.close(code=4002, message=reply_to(reason))
    assert await asyncio.wait_for(site_heard.get(), 5) == (WSMsgType.CLOSE, 4002, reply_to(reason))


async def test_close_reason_that_is_no_utf8_fails_the_connection_with_1007_and_crashes_nothing(
    start_gateway, upstream_server, caplog: pytest.LogCaptureFixture
) -> None:
    """A close frame whose reason is not UTF-8 fails the connection as RFC 6455 §8.1 bids an
    endpoint: its sender gets 1007 (invalid data) and so does the other side; the bytes are not
    passed on. A reply whose reason is not UTF-8 is a failed connection for the side that
    closed first (1006, no close frame), as its own library would make it without the gateway.
    Nothing is logged as an error, and the gateway goes on relaying."""
    site_heard: asyncio.Queue[Heard] = asyncio.Queue()

    async def site(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoclose=False)
        await ws.prepare(request)
        if request.path == "/site-sends-bad":
            site_heard.put_nowait(heard(await close_and_hear_reply(ws, 4001, b"bad \xff\xfe")))
            return ws
        msg = await ws.receive(timeout=5)
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
            msg = await ws.receive(timeout=5)
        site_heard.put_nowait(heard(msg))
        await ws.close(code=4010, message=b"bad \xc3" if request.path == "/site-replies-bad" else b"ok")
        return ws

    gw = await start_gateway(await upstream_server(app_of(site)))
    with caplog.at_level(logging.DEBUG):
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(gw.url + "/visitor-sends-bad", autoclose=False)
            assert heard(await close_and_hear_reply(ws, 4000, b"bad \xff\xfe")) == (
                WSMsgType.CLOSE,
                1007,
                b"",
            )
            await ws.close()
            assert await asyncio.wait_for(site_heard.get(), 5) == (WSMsgType.CLOSE, 1007, b"")

            ws = await session.ws_connect(gw.url + "/site-sends-bad", autoclose=False)
            assert heard(await ws.receive(timeout=5)) == (WSMsgType.CLOSE, 1007, b"")
            await ws.close()
            assert await asyncio.wait_for(site_heard.get(), 5) == (WSMsgType.CLOSE, 1007, b"")

            ws = await session.ws_connect(gw.url + "/site-replies-bad", autoclose=False)
            msg = await close_and_hear_reply(ws, 4000, b"bye")
            assert (msg.type, ws.close_code) == (WSMsgType.CLOSED, aiohttp.WSCloseCode.ABNORMAL_CLOSURE)
            assert await asyncio.wait_for(site_heard.get(), 5) == (WSMsgType.CLOSE, 4000, b"bye")

            ws = await session.ws_connect(gw.url + "/still-relaying", autoclose=False)
            await ws.send_str("hi")
            assert (await ws.receive(timeout=5)).data == "hi"
            assert heard(await close_and_hear_reply(ws, 4000, b"bye")) == (WSMsgType.CLOSE, 4010, b"ok")
            await ws.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []


KEY = "dGhlIHNhbXBsZSBub25jZQ=="
GUID = GUID_BYTES.decode()
UPGRADE = (
    "GET /ws HTTP/1.1\r\nHost: shop.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n"
).encode()
HI = bytes([0x81, 0x82, 1, 2, 3, 4]) + bytes(b ^ m for b, m in zip(b"hi", b"\x01\x02", strict=True))
"""A masked text frame ``hi``, as a browser sends it after the handshake."""


BODIES = [
    pytest.param(b"Content-Length: 5\r\n\r\nhello", id="length"),
    pytest.param(b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", id="chunked"),
]
Received = tuple[str, bytes, bytes]


def recording_site(received: asyncio.Queue[Received]) -> RawHandler:
    """A raw WebSocket site that reads an upgrade and its body (a length or chunks), answers
    101, and records (its ``Transfer-Encoding``, that body, the first frame's text)."""

    async def site(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        fields = {k.lower(): v for k, _, v in (line.partition(": ") for line in head.split("\r\n")[1:-2])}
        body = await reader.readexactly(int(fields.get("content-length", "0")))
        if fields.get("transfer-encoding") == "chunked":  # mitmproxy passes a chunked body so
            while size := int(await reader.readline(), 16):
                body += (await reader.readexactly(size + 2))[:-2]
            await reader.readline()
        accept = base64.b64encode(hashlib.sha1((fields["sec-websocket-key"] + GUID).encode()).digest())
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        await writer.drain()
        _, second = await reader.readexactly(2)
        mask = await reader.readexactly(4)
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(await reader.readexactly(second & 0x7F)))
        received.put_nowait((fields.get("transfer-encoding", ""), body, payload))
        await reader.read()

    return site


async def upgrade_with_body(
    port: int, framing: bytes, received: asyncio.Queue[Received], coding: str = ""
) -> None:
    """Send an upgrade with a body framed as ``framing``, and a frame once the 101 came: the
    site (``recording_site``) gets the body, framed by a length or, ``coding = "chunked"``, by
    chunks, then the frame."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(UPGRADE + framing)
        async with asyncio.timeout(10):  # a bound on a hang, not a measure
            status = await reader.readuntil(b"\r\n\r\n")
            assert status.startswith(b"HTTP/1.1 101"), status
            writer.write(HI)  # a client sends frames once it has the 101 (RFC 6455 §4.1)
            assert await received.get() == (coding, b"hello", b"hi")
    finally:
        writer.close()


@pytest.mark.parametrize("framing", BODIES)
async def test_a_body_on_an_upgrade_reaches_the_site_before_the_switch(
    start_gateway, raw_upstream, framing: bytes
) -> None:
    """A body on the upgrade request goes to the site with it, as nginx and mitmproxy send it,
    and the frames after it stay frames. Until 2026-12-06 its ``Content-Length`` reached the site
    and its bytes did not: the site waited for them and the visitor never got its 101."""
    received: asyncio.Queue[Received] = asyncio.Queue()
    gw = await start_gateway(await raw_upstream(recording_site(received)))
    await upgrade_with_body(gw.proxy.port, framing, received)


@pytest.mark.parametrize("framing", BODIES)
async def test_an_upgrade_body_over_the_request_body_limit_is_refused_413(
    start_gateway, raw_upstream, framing: bytes
) -> None:
    """The upgrade's body is held whole before it goes: ``proxy.max_request_body`` bounds it,
    as it bounds any body, and the site is not asked."""
    asked: list[bytes] = []

    async def site(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        asked.append(await reader.readuntil(b"\r\n\r\n"))

    gw = await start_gateway(await raw_upstream(site), "[proxy]\nmax_request_body = 4\n")
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)
    try:
        writer.write(UPGRADE + framing)
        async with asyncio.timeout(10):  # a bound on a hang, not a measure
            status = await reader.readline()
    finally:
        writer.close()
    assert status.startswith(b"HTTP/1.1 413"), status
    assert asked == []


BROWSER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)


@pytest.mark.parametrize(
    "agent", [pytest.param("curl/8.5.0", id="http-library"), pytest.param("", id="no-agent")]
)
async def test_a_blocked_client_s_upgrade_is_refused_403_and_never_reaches_the_site(
    start_gateway, upstream_server, agent: str
) -> None:
    """``bots.on_block = "block"`` refuses a blocked agent on every request, its WebSocket
    upgrade too: until 2026-12-07 the upgrade ran no bots hook and the socket was relayed to the
    site. A browser's upgrade is still relayed (the control: the site does answer sockets)."""
    opened: list[str] = []

    async def site(request: web.Request) -> web.WebSocketResponse:
        opened.append(request.headers.get("User-Agent", ""))
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str("hello")
        await ws.close()
        return ws

    gw = await start_gateway(await upstream_server(app_of(site)), "[bots]\non_block = 'block'\n")
    async with aiohttp.ClientSession(skip_auto_headers=["User-Agent"]) as session:
        headers = {"User-Agent": BROWSER_AGENT, "Accept-Language": "en"}
        async with session.ws_connect(gw.url + "/live", headers=headers) as ws:
            assert (await ws.receive(timeout=5)).data == "hello"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(gw.url + "/live", headers={"User-Agent": agent} if agent else {})
    assert refused.value.status == 403
    assert opened == [BROWSER_AGENT]
    metrics = gw.gateway.metrics.bot_refusals.labels("block")._value.get()
    assert metrics == 1
