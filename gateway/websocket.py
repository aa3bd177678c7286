"""WebSocket pass-through: accept the visitor's upgrade, open the same upgrade upstream, relay.

Messages flow both ways unchanged (text, binary, ping/pong handled by each
side's library); a close on either side closes the other with its code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
from aiohttp import WSMsgType, hdrs, web
from multidict import CIMultiDict
from yarl import URL

from gateway import pages

log = logging.getLogger("gateway.websocket")

# Negotiated by each side's library, not copied.
_HANDSHAKE = {
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-accept",
    "sec-websocket-protocol",
}


def is_websocket_upgrade(request: web.Request) -> bool:
    return (
        request.method == "GET"
        and request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
        and "upgrade" in request.headers.get(hdrs.CONNECTION, "").lower()
    )


async def _relay(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> None:
    async for msg in source:
        if msg.type == WSMsgType.TEXT:
            await sink.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
        elif msg.type == WSMsgType.ERROR:
            break
    if not sink.closed:
        await sink.close(code=source.close_code or aiohttp.WSCloseCode.OK)


async def proxy_websocket(
    request: web.Request, session: aiohttp.ClientSession, url: URL, headers: CIMultiDict[str]
) -> web.StreamResponse:
    protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    for name in list(headers):
        if name.lower() in _HANDSHAKE:
            headers.popall(name, None)
    ws_url = url.with_scheme("wss" if url.scheme == "https" else "ws")
    try:
        upstream = await session.ws_connect(
            ws_url, headers=headers, protocols=protocols, autoping=True, max_msg_size=0
        )
    except aiohttp.WSServerHandshakeError as err:
        log.warning("upstream refused the WebSocket upgrade: %s", err.status)
        return pages.error_page(502)
    except (aiohttp.ClientError, OSError, TimeoutError) as err:
        log.warning("upstream WebSocket connect failed: %r", err)
        return pages.error_page(504 if isinstance(err, TimeoutError) else 502)
    client = web.WebSocketResponse(
        protocols=[upstream.protocol] if upstream.protocol else (), autoping=True, max_msg_size=0
    )
    try:
        await client.prepare(request)
        tasks = [
            asyncio.create_task(_relay(client, upstream)),
            asyncio.create_task(_relay(upstream, client)),
        ]
        _done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    finally:
        await upstream.close()
        if not client.closed:
            await client.close()
    return client
