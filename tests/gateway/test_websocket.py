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
import logging
import struct

import aiohttp
import pytest
from aiohttp import WSMsgType, web

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
