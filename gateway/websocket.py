"""WebSocket pass-through: accept the visitor's upgrade, open the same upgrade upstream, relay.

Messages flow both ways unchanged (text, binary, ping/pong handled by each
side's library); a close on either side closes the other with its code and reason, and the
gateway's shutdown (``going_away``) closes both with 1001 at once (an upgrade still
being opened then gets a 503 instead of its 101). The
visitor gets the headers of the site's 101 answer (a sticky-session or auth cookie set on the
upgrade), less the handshake's own and the hop-by-hop ones, and none the gateway would add.
A site that answers the upgrade with a redirect has it passed on, not followed (``session``
must carry ``no_redirects``). aiohttp's log line naming the visitor's address when
subprotocols do not overlap is kept out of the logs (``keep_addresses_out_of_logs``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from types import SimpleNamespace

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, hdrs, web
from multidict import CIMultiDict
from yarl import URL

from gateway import pages
from gateway.forwarding import HOP_BY_HOP, connection_tokens

log = logging.getLogger("gateway.websocket")


class _NoClientAddress(logging.Filter):
    """Drops aiohttp's warning that a visitor's subprotocols do not overlap the server's: it
    names the visitor's address, which no log line may hold. The gateway's own side of a relay
    offers what the site chose, or nothing when it chose none, so this fired on every upgrade
    whose site declined the visitor's subprotocols, and on the handshake check of each upgrade
    that asked for one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("%s: Client protocols")


def keep_addresses_out_of_logs() -> None:
    """Install ``_NoClientAddress`` on aiohttp's WebSocket logger (once; ``create_gateway``)."""
    logger = logging.getLogger("aiohttp.websocket")
    if not any(isinstance(f, _NoClientAddress) for f in logger.filters):
        logger.addFilter(_NoClientAddress())


# Negotiated by each side's library, not copied.
_HANDSHAKE = {
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-accept",
    "sec-websocket-protocol",
}


class Redirected(Exception):
    """The site answered a WebSocket upgrade with a redirect (``no_redirects``)."""

    def __init__(self, status: int, reason: str | None, headers: list[tuple[str, str]]) -> None:
        super().__init__(f"the site redirected the upgrade ({status})")
        self.status, self.reason, self.headers = status, reason, headers


def no_redirects() -> aiohttp.TraceConfig:
    """A session's trace that stops aiohttp from following a redirect (``ws_connect`` always
    would, to wherever it points, with the visitor's cookies): ``Redirected`` is raised
    instead, before the next request, with what the visitor is to get."""

    async def stop(
        session: aiohttp.ClientSession, context: SimpleNamespace, params: aiohttp.TraceRequestRedirectParams
    ) -> None:
        answer = params.response
        raise Redirected(answer.status, answer.reason, _passed_on(answer, set()))

    trace = aiohttp.TraceConfig()
    trace.on_request_redirect.append(stop)
    return trace


def is_websocket_upgrade(request: web.Request) -> bool:
    return (
        request.method == "GET"
        and request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
        and "upgrade" in request.headers.get(hdrs.CONNECTION, "").lower()
    )


Socket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse

# Codes a peer may report but never send in a close frame (RFC 6455 §7.4.1).
_NOT_SENDABLE = {1005: WSCloseCode.OK, 1006: WSCloseCode.INTERNAL_ERROR, 1015: WSCloseCode.INTERNAL_ERROR}


def close_code_to_send(code: int | None) -> int:
    """The code to pass on to the other side for a close we saw with ``code``."""
    if code is None:
        return WSCloseCode.OK
    return _NOT_SENDABLE.get(code, code)


async def _relay(source: Socket, sink: Socket, reasons: dict[int, bytes]) -> None:
    """Copy data messages until ``source`` closes, its close frame's reason into ``reasons``
    (by the socket's ``id``); closing the other side is the caller's job."""
    while True:
        msg = await source.receive()
        if msg.type == WSMsgType.TEXT:
            await sink.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
        elif msg.type == WSMsgType.CLOSE:
            reasons[id(source)] = (msg.extra or "").encode()[:123]  # RFC 6455 §5.5: 125 - code
            return
        elif msg.type in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return


async def _relay_both(
    client: web.WebSocketResponse,
    upstream: aiohttp.ClientWebSocketResponse,
    reasons: dict[int, bytes],
    going_away: asyncio.Event,
) -> bool:
    """Relay both ways until one side ends, then stop the other relay (closing is ``_close_pair``'s).
    True when neither did but ``going_away`` was set: the gateway is stopping."""
    relays = [
        asyncio.create_task(_relay(client, upstream, reasons)),
        asyncio.create_task(_relay(upstream, client, reasons)),
    ]
    stopping = asyncio.create_task(going_away.wait())
    try:
        done, _pending = await asyncio.wait([*relays, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in [*relays, stopping]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    for task in done:
        if task is not stopping and not task.cancelled() and task.exception() is not None:
            log.info("WebSocket relay ended: %r", task.exception())
    return done == {stopping}


async def _go_away(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    """Close both sides at once with 1001 (going away); each waits for its peer's close reply
    (up to its library's close timeout, within ``proxy.shutdown_grace``)."""
    await asyncio.gather(
        client.close(code=WSCloseCode.GOING_AWAY),
        upstream.close(code=WSCloseCode.GOING_AWAY),
        return_exceptions=True,
    )


async def _close_pair(
    client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse, reasons: dict[int, bytes]
) -> None:
    """Close whichever side is still open with the code and reason the other side closed with.

    Runs in ``finally``: the handler may be cancelled once the visitor's connection is gone
    (aiohttp's ``handler_cancellation``), and the upstream must still learn the real code.
    """
    for closed, still_open in ((client, upstream), (upstream, client)):
        if closed.closed and not still_open.closed:
            with contextlib.suppress(Exception):
                await still_open.close(
                    code=close_code_to_send(closed.close_code), message=reasons.get(id(closed), b"")
                )
    for side in (upstream, client):
        if not side.closed:
            with contextlib.suppress(Exception):
                await side.close()


async def proxy_websocket(
    request: web.Request,
    session: aiohttp.ClientSession,
    url: URL,
    headers: CIMultiDict[str],
    max_message: int,
    going_away: asyncio.Event,
    public_location: Callable[[str], str] = str,
) -> web.StreamResponse:
    """Relay one WebSocket; a message larger than ``max_message`` bytes (either way) closes it
    with 1009, since each message is held whole in memory on its way through. A redirect the
    site answers is passed on, its ``Location`` through ``public_location``. Once ``going_away``
    is set (the gateway is stopping) both sides are closed with 1001; an upgrade the site
    accepts after that is closed on its side (1001) and refused on the visitor's (503), and
    one that comes after that is refused (503) without reaching the site."""
    protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    if not web.WebSocketResponse(protocols=protocols).can_prepare(request).ok:  # the visitor's handshake
        return pages.error_page(400)
    if going_away.is_set():  # stopping: no new connection to the site for a relay about to close
        return stopping_page()
    for name in list(headers):
        if name.lower() in _HANDSHAKE:
            headers.popall(name, None)
    ws_url = url.with_scheme("wss" if url.scheme == "https" else "ws")
    try:
        upstream = await session.ws_connect(
            ws_url, headers=headers, protocols=protocols, autoping=True, max_msg_size=max_message
        )
    except Redirected as redirect:
        answer = pages.QuietResponse(status=redirect.status, reason=redirect.reason)
        for name, value in redirect.headers:
            answer.headers.add(name, public_location(value) if name.lower() == "location" else value)
        answer.as_sent = pages.needs_as_sent(redirect.reason, answer.headers.items())
        return answer
    except aiohttp.WSServerHandshakeError as err:
        # The upstream answered but did not upgrade: pass on its error status, else 502.
        log.warning("upstream refused the WebSocket upgrade: %s", err.status)
        return pages.error_page(err.status if pages.is_error_status(err.status) else 502)
    except (aiohttp.ClientError, OSError, TimeoutError) as err:
        log.warning("upstream WebSocket connect failed: %r", err)
        return pages.error_page(504 if isinstance(err, TimeoutError) else 502)
    if going_away.is_set():
        # The gateway began to stop while the site answered: a 101 now would be closed at once
        # (1001). A refusal tells the visitor to come back, to a gateway that will still be up.
        with contextlib.suppress(Exception):
            await upstream.close(code=WSCloseCode.GOING_AWAY)
        return stopping_page()
    client = _TransparentWebSocket(
        protocols=[upstream.protocol] if upstream.protocol else (), autoping=True, max_msg_size=max_message
    )
    site = _site_headers(upstream)
    client.headers.extend(site)
    client.as_sent = pages.needs_as_sent(None, site)
    reasons: dict[int, bytes] = {}
    try:
        await client.prepare(request)
        if await _relay_both(client, upstream, reasons, going_away):
            await _go_away(client, upstream)
    finally:
        await _close_pair(client, upstream, reasons)
    return client


def stopping_page() -> web.Response:
    """The answer to an upgrade that would be closed as soon as it opened: the gateway is
    stopping. 503, to be retried (``Retry-After``), on a connection that closes."""
    answer = pages.error_page(503)
    answer.headers["Retry-After"] = "5"
    answer.force_close()
    return answer


class _TransparentWebSocket(pages.TransparentResponse, web.WebSocketResponse):
    """The visitor's side, with a forwarded answer's restraint: no header the site did not
    send, the site's header bytes as they came (``pages.TransparentResponse``)."""


def _site_headers(upstream: aiohttp.ClientWebSocketResponse) -> list[tuple[str, str]]:
    """The site's 101 answer's headers the visitor gets: all but the handshake's own (each side
    negotiates its) and the hop-by-hop ones."""
    return _passed_on(upstream._response, _HANDSHAKE)  # aiohttp keeps the answer there


def _passed_on(answer: aiohttp.ClientResponse, own: set[str]) -> list[tuple[str, str]]:
    """The headers of a site's answer the visitor gets, names spelled as the site did: less
    ``own`` (names the gateway's answer sets itself), the body's framing and the hop-by-hop
    ones (those ``Connection`` names too)."""
    headers = answer.headers
    drop = HOP_BY_HOP | own | {"content-length", "content-type"}  # the answer has no body
    if hdrs.CONNECTION in headers:
        drop = drop | connection_tokens(headers.getall(hdrs.CONNECTION))
    return [
        (raw_name.decode("latin-1"), value)
        for (raw_name, _), (name, value) in zip(answer.raw_headers, headers.items(), strict=True)
        if name.lower() not in drop
    ]
