"""WebSocket pass-through: accept the visitor's upgrade, open the same upgrade upstream, relay.

Messages flow both ways unchanged (text, binary, and pings and pongs, passed on rather
than answered here); a close on either side closes the other with its code and reason, the
other side's reply goes back with its code and reason (``_CloseReasons``), and the
gateway's shutdown (``going_away``) closes both with 1001 at once (an upgrade still
being opened then gets a 503 instead of its 101). The
visitor gets compression (``permessage-deflate``) only when the site took it, and the headers of
the site's 101 answer (a sticky-session or auth cookie set on the
upgrade), less the handshake's own and the hop-by-hop ones, and none the gateway would add.
A site that answers the upgrade with anything but a 101 — a refusal (403, 401 and its
``WWW-Authenticate``), a page, a redirect — has that answer passed on as it came, body
streamed, not followed (``session`` must carry ``no_redirects``), a body of no length read to
the site's close (the session's connector must be an ``UpgradeConnector``). aiohttp's log line naming
the visitor's address when subprotocols do not overlap is kept out of the logs
(``keep_addresses_out_of_logs``). A body on the visitor's upgrade request, read whole by the
caller, goes to the site with the upgrade (the session's ``UpgradeRequest``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, hdrs, web
from aiohttp.client_proto import ResponseHandler
from aiohttp.http import WebSocketError
from multidict import CIMultiDict
from yarl import URL

from gateway import pages
from gateway.emails import without_email
from gateway.forwarding import HOP_BY_HOP, connection_tokens
from gateway.upstream import described

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


class Answered(Exception):
    """The site answered a WebSocket upgrade with something else than a 101 (a refusal, a
    page, a redirect); ``response`` is that answer, already passed on to the visitor."""

    def __init__(self, response: web.StreamResponse) -> None:
        super().__init__(f"the site answered the upgrade with a {response.status}")
        self.response = response


PassOn = Callable[[aiohttp.ClientResponse], Awaitable[web.StreamResponse]]
_PASS_ON: contextvars.ContextVar[PassOn | None] = contextvars.ContextVar("ws_pass_on", default=None)
"""How the upgrade being opened in this task passes a site's other answer on (``proxy_websocket``)."""


def no_redirects() -> aiohttp.TraceConfig:
    """A session's trace that passes a site's answer other than a 101 on to the visitor as it
    came, body included (``_PASS_ON``), and raises ``Answered``: aiohttp's ``ws_connect`` dropped
    it (a 403's page, a 401's ``WWW-Authenticate``) for an exception holding the status alone,
    and always followed a redirect, to wherever it pointed, with the visitor's cookies."""

    async def answered(answer: aiohttp.ClientResponse) -> None:
        pass_on = _PASS_ON.get()
        if pass_on is None:
            raise aiohttp.ClientError(f"the site answered the upgrade with a {answer.status}")
        raise Answered(await pass_on(answer))

    async def redirect(
        session: aiohttp.ClientSession, context: SimpleNamespace, params: aiohttp.TraceRequestRedirectParams
    ) -> None:
        await answered(params.response)

    async def end(
        session: aiohttp.ClientSession, context: SimpleNamespace, params: aiohttp.TraceRequestEndParams
    ) -> None:
        if params.response.status != 101:
            await answered(params.response)

    trace = aiohttp.TraceConfig()
    trace.on_request_redirect.append(redirect)
    trace.on_request_end.append(end)
    return trace


class _ReadToTheClose(ResponseHandler):
    """aiohttp's client protocol, reading a body of no length (no ``Content-Length``, not
    chunked) until the site closes, as for any request: ``ws_connect`` asks for such a body to
    be read as empty, so a refusal's page reached the visitor empty. A ``101`` has no body
    either way; its connection goes on as the WebSocket. Remembers whether the connection
    broke (a reset) rather than closed, which cuts such a body short (``_cut_short``)."""

    broken = False

    def set_response_params(self, *, read_until_eof: bool = False, **params: Any) -> None:
        super().set_response_params(read_until_eof=True, **params)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.broken = exc is not None
        super().connection_lost(exc)


def _read_to_the_close(loop: asyncio.AbstractEventLoop) -> ResponseHandler:
    return _ReadToTheClose(loop=loop)


class UpgradeConnector(aiohttp.TCPConnector):
    """The connector of the session WebSocket upgrades are opened with: its connections read
    a site's answer other than a 101 whole (``_ReadToTheClose``), within the session's
    ``sock_read`` timeout between reads, as the proxy reads an ordinary answer."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # aiohttp makes each connection's protocol with ``_factory`` (no public hook).
        self._factory = functools.partial(_read_to_the_close, loop=self._loop)


_BODY: contextvars.ContextVar[bytes | None] = contextvars.ContextVar("ws_body", default=None)
"""The body of the visitor's upgrade request being opened in this task (``proxy_websocket``)."""


class UpgradeRequest(aiohttp.ClientRequest):
    """The request class of the session WebSocket upgrades are opened with: it carries the
    visitor's upgrade body, if any (``_BODY``), since ``ws_connect`` takes none. A body on an
    upgrade is rare (browsers send none) but nginx and mitmproxy pass it on: without it, a site
    told ``Content-Length: 5`` waited for five bytes that never came, and the visitor for its 101."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        body = _BODY.get()
        if body:
            kwargs["data"] = body
        super().__init__(*args, **kwargs)


def _cut_short(answer: aiohttp.ClientResponse, proto: ResponseHandler | None) -> bool:
    """Whether ``answer``'s body of no length ended with its connection breaking (a reset)
    rather than closing: cut short, though the parser ends it the same way
    (``gateway.upstream.UpstreamResponse.cut_short``, the upgrade having no body)."""
    return (
        isinstance(proto, _ReadToTheClose)
        and proto.broken
        and hdrs.CONTENT_LENGTH not in answer.headers
        and hdrs.TRANSFER_ENCODING not in answer.headers
    )


async def _pass_on(
    request: web.Request, public_location: Callable[[str], str], answer: aiohttp.ClientResponse
) -> web.StreamResponse:
    """Send the site's answer to the upgrade to the visitor: status, reason, headers (less the
    hop-by-hop ones; ``Location`` made public) and the body, streamed. A body that breaks once
    the headers are gone cuts the visitor's connection, as a forwarded answer's does."""
    resp = pages.TransparentResponse(status=answer.status, reason=answer.reason)
    for name, value in _passed_on(answer, set()):
        resp.headers.add(name, public_location(value) if name.lower() == "location" else value)
    resp.as_sent = pages.needs_as_sent(answer.reason, resp.headers.items())
    proto = answer.connection.protocol if answer.connection is not None else None
    request[pages.ANSWER] = resp
    try:
        await resp.prepare(request)
        async for chunk in answer.content.iter_any():
            await resp.write(chunk)
        if _cut_short(answer, proto):
            raise aiohttp.ClientPayloadError("the site's connection broke mid-body")
        await resp.write_eof()
    except ConnectionError:
        pass  # the visitor left: nothing more to send, and no refusal of ours to send instead
    except (aiohttp.ClientError, TimeoutError) as err:
        log.warning("upstream body failed mid-stream for a refused upgrade: %s", described(err))
        if request.transport is not None:
            pages.reset(request.transport)
    return resp


def is_websocket_upgrade(request: web.Request) -> bool:
    return (
        request.method == "GET"
        and request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
        and "upgrade" in request.headers.get(hdrs.CONNECTION, "").lower()
    )


Socket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse

# Codes a peer may report but never send in a close frame (RFC 6455 §7.4.1). 0 is aiohttp's for
# a close frame without a code (1005's meaning: a browser's ``ws.close()`` without arguments);
# passed on as a code it made the other side fail the connection with a protocol error.
_NOT_SENDABLE = {
    0: WSCloseCode.OK,
    1005: WSCloseCode.OK,
    1006: WSCloseCode.INTERNAL_ERROR,
    1015: WSCloseCode.INTERNAL_ERROR,
}


def close_code_to_send(code: int | None) -> int:
    """The code to pass on to the other side for a close we saw with ``code``."""
    if code is None:
        return WSCloseCode.OK
    return _NOT_SENDABLE.get(code, code)


Reasons = dict[int, bytes | None]
"""By a socket's ``id``: the reason of the close frame it sent (``_CloseReasons``), or None when
its connection dropped without one."""


class _CloseReasons:
    """A socket's queue of received messages (aiohttp's ``_reader``), keeping the reason of the
    close frame read from it in ``reasons``, whoever reads it: the relay's ``receive``, or the
    socket's ``close``, which reads the other side's reply to the close frame passed on to it
    and keeps the code alone (``msg.data``; the reason, ``msg.extra``, was dropped), so the side
    that closed first got the reply's code without its reason. Anything else is the queue's."""

    def __init__(self, queue: Any, reasons: Reasons, key: int) -> None:
        self._queue = queue
        self._reasons = reasons
        self._key = key

    async def read(self) -> Any:
        msg = await self._queue.read()
        if msg.type is WSMsgType.CLOSE:
            # At most 123 bytes: aiohttp refuses a longer control frame (RFC 6455 §5.5); a reason
            # that is no UTF-8 never gets here: aiohttp fails the connection with 1007 (§8.1).
            self._reasons[self._key] = (msg.extra or "").encode()
        return msg

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)


Failed = dict[int, int]
"""By a socket's ``id``: the code aiohttp failed its connection with, on a protocol error
(1007: a text or a close reason that is no UTF-8; 1009: a message over the cap)."""


def _keep_close_reasons(side: Socket, reasons: Reasons) -> None:
    """Have ``side``'s close frame's reason kept in ``reasons`` (``_CloseReasons``)."""
    side._reader = _CloseReasons(side._reader, reasons, id(side))  # type: ignore[assignment]


async def _relay(source: Socket, sink: Socket, reasons: Reasons, failed: Failed) -> None:
    """Copy data messages until ``source`` closes (its close frame's reason is kept in
    ``reasons`` as it is read), its connection drops (None in ``reasons``) or aiohttp fails it
    (its code in ``failed``); closing the other side is the caller's job."""
    while True:
        msg = await source.receive()
        if msg.type == WSMsgType.TEXT:
            await sink.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
        elif msg.type == WSMsgType.PING:
            # Passed on, not answered here: a site that pings to find its dead clients (a phone
            # gone from the network, its connection open) must hear from the visitor, not from us.
            await sink.ping(bytes(msg.data))
        elif msg.type == WSMsgType.PONG:
            await sink.pong(bytes(msg.data))
        elif msg.type == WSMsgType.CLOSE:  # its reason is in ``reasons`` (``_CloseReasons``)
            return
        elif msg.type in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            # A protocol error (WebSocketError: bad UTF-8, a message over the cap) closed that
            # side with its code, which the other side learns; anything else is a lost connection.
            if isinstance(msg.data, WebSocketError):
                failed[id(source)] = msg.data.code
            elif msg.type != WSMsgType.CLOSING:
                reasons.setdefault(id(source), None)
            return


async def _relay_both(
    client: web.WebSocketResponse,
    upstream: aiohttp.ClientWebSocketResponse,
    reasons: Reasons,
    failed: Failed,
    going_away: asyncio.Event,
    left: list[asyncio.Task[None]],
) -> bool:
    """Relay both ways until one side ends, then stop the other relay (closing is ``_close_pair``'s).
    True when neither did but ``going_away`` was set: the gateway is stopping. When the visitor
    sent a close frame, the relay from the site is left running, in ``left``, for closing the
    site's side to end (cancelling aiohttp's client mid-``receive`` marks its connection as
    lost, and its ``close`` then reads no reply); the visitor's side is the other way round
    (its ``close`` reads no reply once a ``receive`` it broke has marked it as closing)."""
    relays = {
        id(client): asyncio.create_task(_relay(client, upstream, reasons, failed)),
        id(upstream): asyncio.create_task(_relay(upstream, client, reasons, failed)),
    }
    stopping = asyncio.create_task(going_away.wait())
    done: set[asyncio.Task[Any]] = set()
    try:
        done, _pending = await asyncio.wait([*relays.values(), stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        if reasons.get(id(client)) is not None and id(upstream) not in reasons and relays[id(client)] in done:
            left.append(relays[id(upstream)])
        await _stop([task for task in [*relays.values(), stopping] if task not in left])
    for task in done:
        error = None if task is stopping or task.cancelled() else task.exception()
        if error is not None:
            log.info("WebSocket relay ended: %s", described(error))
    return done == {stopping}


async def _stop(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def _go_away(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    """Close both sides at once with 1001 (going away); each waits for its peer's close reply
    (up to its library's close timeout, within ``proxy.shutdown_grace``)."""
    await asyncio.gather(
        client.close(code=WSCloseCode.GOING_AWAY),
        upstream.close(code=WSCloseCode.GOING_AWAY),
        return_exceptions=True,
    )


def _drop(request: web.Request, side: Socket, upstream: aiohttp.ClientWebSocketResponse) -> None:
    """End ``side``'s connection without a close frame: what its peer sees of a lost one (1006)."""
    if side is upstream:
        upstream._response.close()
    elif request.transport is not None:
        request.transport.abort()


async def _close_pair(
    request: web.Request,
    client: web.WebSocketResponse,
    upstream: aiohttp.ClientWebSocketResponse,
    reasons: Reasons,
    failed: Failed,
) -> None:
    """Close whichever side is still open with the code and reason the other side closed with,
    then answer the side that closed first with the code and reason of the other's reply (as
    without the gateway: neither side's close is answered by the gateway itself); when one
    side's connection dropped without a close frame, or the other side never answered a close,
    drop the other's too, so that side sees what it would without the gateway (a lost
    connection, 1006), not a clean close. A side aiohttp failed (``failed``: 1007, 1009) has
    the other side closed with that code, not dropped.

    Runs in ``finally``: the handler may be cancelled once the visitor's connection is gone
    (aiohttp's ``handler_cancellation``), and the upstream must still learn the real code.
    """
    if id(client) not in reasons and id(client) not in failed and request.transport is None:
        reasons[id(client)] = None  # cancelled: the visitor's connection went, without a close
    if reasons.get(id(client), b"") is None:
        _drop(request, upstream, upstream)
        return
    if reasons.get(id(upstream), b"") is None:
        _drop(request, client, upstream)
        return
    for closed, still_open in ((client, upstream), (upstream, client)):
        reason = reasons.get(id(closed))
        if reason is not None and not still_open.closed:
            # ``closed`` sent a close frame, not yet answered (no ``autoclose``): its reply is
            # the other side's, once that side has answered the close passed on to it.
            with contextlib.suppress(Exception):
                await still_open.close(code=close_code_to_send(closed.close_code), message=reason)
            if still_open.close_code == WSCloseCode.ABNORMAL_CLOSURE:  # no answer, a lost connection
                _drop(request, closed, upstream)
                return
            with contextlib.suppress(Exception):
                await closed.close(
                    code=close_code_to_send(still_open.close_code), message=reasons.get(id(still_open)) or b""
                )
            return
    for closed, still_open in ((client, upstream), (upstream, client)):
        if closed.closed and not still_open.closed:
            # Failed by aiohttp: its code, not what its close reads after (the web side's reads 1006).
            code = failed.get(id(closed), closed.close_code)
            with contextlib.suppress(Exception):
                await still_open.close(code=close_code_to_send(code), message=reasons.get(id(closed)) or b"")
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
    body: bytes = b"",
    answers: Callable[[], None] = lambda: None,
    fails: Callable[[str, str], None] | None = None,
) -> web.StreamResponse:
    """Relay one WebSocket, ``body`` (the upgrade request's, read whole) sent with its upgrade
    (the session's request class must be ``UpgradeRequest``); a message larger than
    ``max_message`` bytes (either way) closes it with 1009, since each message is held whole
    in memory on its way through. A redirect the site answers is passed on, its ``Location``
    through ``public_location``. Once ``going_away`` is set (the gateway is stopping) both sides
    are closed with 1001; an upgrade the site accepts after that is closed on its side (1001)
    and refused on the visitor's (503), and one that comes after that is refused (503) without
    reaching the site. ``answers`` is called once the site has answered the upgrade (its 101,
    or another answer passed on): an outage of the site is over, as a page's answer says.
    ``fails(kind, why)`` is called when the site could not be asked or did not answer the
    upgrade (``connect``, ``timeout``, ``protocol``; ``why`` in words), the visitor getting the
    502 or 504 page: the proxy counts it and says it as a page's failure, throttled, part of the
    outage (``ProxyHost._upstream_fails``); without it, a warning line each time."""
    if fails is None:
        fails = functools.partial(_said_failed, request)
    protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    if not web.WebSocketResponse(protocols=protocols).can_prepare(request).ok:  # the visitor's handshake
        return pages.error_page(400)
    if going_away.is_set():  # stopping: no new connection to the site for a relay about to close
        return stopping_page()
    # The handshake lines keep the visitor's places: aiohttp keeps an Upgrade, Connection and
    # Sec-WebSocket-Version it is given and writes its key and subprotocols over theirs, in
    # place (it appended them all after X-Forwarded-*). The visitor's extension offer is not
    # the relay's: its side to the site negotiates its own, offering compression (its own
    # offer, written over the visitor's line) only when the visitor did, and the visitor gets
    # compression only when the site took it.
    offered = any(
        "permessage-deflate" in value.lower()
        for value in request.headers.getall(hdrs.SEC_WEBSOCKET_EXTENSIONS, ())
    )
    for name, value in list(headers.items()):
        key = name.lower()
        if (
            (key == "sec-websocket-extensions" and not offered)
            or key == "sec-websocket-accept"
            or (key == "sec-websocket-version" and value.strip() != "13")
        ):
            headers.popall(name, None)
    ws_url = url.with_scheme("wss" if url.scheme == "https" else "ws")
    token = _PASS_ON.set(functools.partial(_pass_on, request, public_location))
    sent = _BODY.set(body)
    try:
        upstream = await session.ws_connect(
            ws_url,
            headers=headers,
            protocols=protocols,
            autoping=False,
            autoclose=False,  # the site's close is answered with the visitor's reply
            max_msg_size=max_message,
            compress=15 if offered else 0,
        )
    except Answered as answered:  # passed on as the site sent it (``no_redirects``)
        answers()
        return answered.response
    except aiohttp.WSServerHandshakeError as err:
        # A 101 that is no valid handshake (its accept key, a subprotocol not offered).
        fails("protocol", f"a broken handshake: {err.message}")
        return pages.error_page(502)
    except (aiohttp.ClientError, OSError, TimeoutError) as err:
        # As the proxy words a page's (``Proxy._upstream_failed``), the upgrade named as one.
        kind = "protocol"
        if isinstance(err, TimeoutError):
            kind = "timeout"
        elif isinstance(err, aiohttp.ClientConnectorError) or not isinstance(err, aiohttp.ClientError):
            kind = "connect"
        fails(kind, described(err))
        return pages.error_page(504 if isinstance(err, TimeoutError) else 502)
    finally:
        _BODY.reset(sent)
        _PASS_ON.reset(token)
    answers()
    if going_away.is_set():
        # The gateway began to stop while the site answered: a 101 now would be closed at once
        # (1001). A refusal tells the visitor to come back, to a gateway that will still be up.
        with contextlib.suppress(Exception):
            await upstream.close(code=WSCloseCode.GOING_AWAY)
        return stopping_page()
    client = _TransparentWebSocket(
        protocols=[upstream.protocol] if upstream.protocol else (),
        autoping=False,
        autoclose=False,  # the visitor's close is answered with the site's reply (``_close_pair``)
        max_msg_size=max_message,
        compress=bool(upstream.compress),  # the site's choice, not the gateway's
    )
    site = _site_headers(upstream)
    client.headers.extend(site)
    client.order = tuple(name.decode("latin-1").lower() for name, _ in upstream._response.raw_headers)
    client.as_sent = pages.needs_as_sent(None, site)
    reasons: Reasons = {}
    failed: Failed = {}
    _keep_close_reasons(upstream, reasons)
    left: list[asyncio.Task[None]] = []
    request[pages.ANSWER] = client
    try:
        await client.prepare(request)
        _keep_close_reasons(client, reasons)
        if await _relay_both(client, upstream, reasons, failed, going_away, left):
            await _go_away(client, upstream)
    finally:
        try:
            await _close_pair(request, client, upstream, reasons, failed)
        finally:
            await _stop(left)
    return client


def _said_failed(request: web.Request, kind: str, why: str) -> None:
    """An upgrade's failure said on its own (``proxy_websocket`` given no ``fails``)."""
    log.warning(
        "upstream %s for %s %s (WebSocket): %s", kind, request.method, without_email(request.path), why
    )


def stopping_page() -> web.Response:
    """The answer to an upgrade that would be closed as soon as it opened: the gateway is
    stopping. 503, to be retried (``Retry-After``), on a connection that closes."""
    answer = pages.error_page(503)
    answer.headers["Retry-After"] = "5"
    answer.force_close()
    return answer


class _TransparentWebSocket(pages.TransparentResponse, web.WebSocketResponse):
    """The visitor's side, with a forwarded answer's restraint: no header the site did not
    send, the site's header bytes as they came (``pages.TransparentResponse``), in the order of
    the site's 101 (``order``): aiohttp put its handshake lines after the site's others."""

    order: tuple[str, ...] = ()
    """The site's 101 header names, lower-case, in its order."""

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        if not self.order:
            return
        places: dict[str, list[int]] = {}
        for i, name in enumerate(self.order):
            places.setdefault(name, []).append(i)
        ranked = []
        for j, (name, value) in enumerate(self.headers.items()):
            free = places.get(name.lower())
            ranked.append((free.pop(0) if free else len(self.order) + j, name, value))
        ranked.sort(key=lambda item: item[0])
        self.headers.clear()
        self.headers.extend((name, value) for _, name, value in ranked)


def _site_headers(upstream: aiohttp.ClientWebSocketResponse) -> list[tuple[str, str]]:
    """The site's 101 answer's headers the visitor gets: all but the handshake's own (each side
    negotiates its), the body's (a 101 has none) and the hop-by-hop ones."""
    # aiohttp keeps the answer in ``_response``
    return _passed_on(upstream._response, _HANDSHAKE | {"content-length", "content-type"})


def _passed_on(answer: aiohttp.ClientResponse, own: set[str]) -> list[tuple[str, str]]:
    """The headers of a site's answer the visitor gets, names spelled as the site did: less
    ``own`` (names the gateway's answer sets itself) and the hop-by-hop ones (those
    ``Connection`` names too)."""
    headers = answer.headers
    drop = HOP_BY_HOP | own
    if hdrs.CONNECTION in headers:
        drop = drop | connection_tokens(headers.getall(hdrs.CONNECTION))
    return [
        (raw_name.decode("latin-1"), value)
        for (raw_name, _), (name, value) in zip(answer.raw_headers, headers.items(), strict=True)
        if name.lower() not in drop
    ]
