"""The proxy is transparent: bodies stream both ways, bytes and headers pass untouched, the
request target is kept byte for byte (minus tracking pairs), and failures are honest.

Real gateway, real upstream (aiohttp, or a raw asyncio server where exact bytes matter), all
on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import hashlib
import io
import logging
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import aiosqlite
import pytest
from aiohttp import WSMsgType, web
from multidict import CIMultiDictProxy
from yarl import URL

from bench.ports import free_port
from gateway import pages
from gateway.pipeline import Exchange, Pipeline
from gateway.proxy import ProxyHost
from tests.conftest import RunningGateway
from tests.gateway.test_malformed import raw_request, read_response

MB = 1024 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def app_of(handler: Handler, client_max_size: int = 1024**2, **handler_args: object) -> web.Application:
    app = web.Application(client_max_size=client_max_size, handler_args=handler_args or None)
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


def block(i: int, size: int = MB) -> bytes:
    """Deterministic, position-dependent test data: reordering or loss changes the hash."""
    return i.to_bytes(4, "big") * (size // 4)


class Probe:
    """An extra addon that records what the pipeline saw about each request."""

    def __init__(self) -> None:
        self.seen: list[Exchange] = []

    def request(self, ex: Exchange) -> None:
        self.seen.append(ex)


def add_probe(gw: RunningGateway) -> Probe:
    """Append a recording addon to the running gateway's pipeline."""
    probe = Probe()
    host = gw.gateway.slot.host  # the request handler in use (a reload would swap it)
    if not isinstance(host, ProxyHost):
        raise AssertionError("no ProxyHost in use")
    host.pipeline = Pipeline([*host.pipeline.addons, ("probe", probe)], host.metrics)
    return probe


async def read_head(reader: asyncio.StreamReader) -> str:
    """The request line of the next request (headers consumed; tests send no bodies)."""
    head = await reader.readuntil(b"\r\n\r\n")
    return head.decode("latin-1").split("\r\n", 1)[0]


# -- 1. streaming --------------------------------------------------------------------------------


async def test_response_body_streams_first_bytes_early(start_gateway, upstream_server) -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"first;")
        await asyncio.sleep(0.5)
        await resp.write(b"rest")
        return resp

    gw = await start_gateway(await upstream_server(app_of(slow)))
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with gw.session.get(gw.url + "/slow") as resp:
        first = await resp.content.readany()
        first_at = loop.time() - start
        rest = await resp.read()
        end_at = loop.time() - start
    assert first and b"first;".startswith(first)
    assert first_at < 0.3, f"first bytes after {first_at:.2f}s: the response was buffered"
    assert end_at >= 0.45
    assert first + rest == b"first;rest"


async def test_server_sent_events_arrive_one_by_one_on_a_landing(start_gateway, upstream_server) -> None:
    """Server-sent events on a tagged URL (a landing: events stored, a cookie set, the commit
    awaited) reach the visitor as the site sends them: the first event before the site has
    written the next, which it writes only once the visitor has seen the first."""
    seen_first = asyncio.Event()
    targets: list[str] = []

    async def events(request: web.Request) -> web.StreamResponse:
        targets.append(request.raw_path)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        await resp.write(b"id: 1\ndata: first\n\n")
        await asyncio.wait_for(seen_first.wait(), 5)  # the visitor must see it before there is more
        await resp.write(b"id: 2\ndata: second\n\n")
        return resp

    gw = await start_gateway(await upstream_server(app_of(events)))
    headers = {"Accept": "text/event-stream", "Sec-Fetch-Dest": "document"}
    async with gw.session.get(gw.url + "/live?utm_source=news&room=1", headers=headers) as resp:
        assert resp.headers["Content-Type"] == "text/event-stream"
        assert resp.headers["Cache-Control"] == "no-cache"
        first = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 5)
        assert first == b"id: 1\ndata: first\n\n"
        seen_first.set()
        assert await asyncio.wait_for(resp.content.read(), 5) == b"id: 2\ndata: second\n\n"
    assert targets == ["/live?room=1"]


async def test_request_body_streams_before_client_finishes(start_gateway, upstream_server) -> None:
    got_first = asyncio.Event()

    async def sink(request: web.Request) -> web.Response:
        first = await request.content.readany()
        got_first.set()
        rest = await request.content.read()
        return web.Response(text=str(len(first) + len(rest)))

    gw = await start_gateway(await upstream_server(app_of(sink)))
    seen_before_end: list[bool] = []

    async def body() -> AsyncIterator[bytes]:
        yield b"a" * 1000
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(got_first.wait(), 2.0)
        seen_before_end.append(got_first.is_set())
        yield b"b" * 1000

    async with gw.session.post(gw.url + "/upload", data=body()) as resp:
        assert (resp.status, await resp.text()) == (200, "2000")
    assert seen_before_end == [True], "the upstream saw nothing until the client finished sending"


async def test_large_upload_arrives_whole(start_gateway, upstream_server) -> None:
    async def digest(request: web.Request) -> web.Response:
        sha, count = hashlib.sha256(), 0
        async for chunk in request.content.iter_any():
            sha.update(chunk)
            count += len(chunk)
        return web.json_response({"count": count, "sha": sha.hexdigest()})

    gw = await start_gateway(await upstream_server(app_of(digest)))
    sent = hashlib.sha256()

    async def body() -> AsyncIterator[bytes]:
        for i in range(32):
            data = block(i)
            sent.update(data)
            yield data

    async with gw.session.post(gw.url + "/big", data=body()) as resp:
        assert resp.status == 200
        got = await resp.json()
    assert got == {"count": 32 * MB, "sha": sent.hexdigest()}


async def test_large_upload_with_content_length_keeps_it(start_gateway, upstream_server) -> None:
    seen: list[int | None] = []

    async def digest(request: web.Request) -> web.Response:
        seen.append(request.content_length)
        data = await request.read()
        return web.Response(text=hashlib.sha256(data).hexdigest())

    gw = await start_gateway(await upstream_server(app_of(digest, client_max_size=64 * MB)))
    payload = b"".join(block(i) for i in range(20))
    async with gw.session.put(gw.url + "/big", data=io.BytesIO(payload)) as resp:
        assert (resp.status, await resp.text()) == (200, hashlib.sha256(payload).hexdigest())
    assert seen == [len(payload)]


async def test_large_download_arrives_whole(start_gateway, upstream_server) -> None:
    async def source(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        for i in range(40):
            await resp.write(block(i))
        return resp

    gw = await start_gateway(await upstream_server(app_of(source)))
    expected = hashlib.sha256(b"".join(block(i) for i in range(40))).hexdigest()
    got, count = hashlib.sha256(), 0
    async with gw.session.get(gw.url + "/big") as resp:
        async for chunk in resp.content.iter_any():
            got.update(chunk)
            count += len(chunk)
    assert (count, got.hexdigest()) == (40 * MB, expected)


# -- 2. content encoding -------------------------------------------------------------------------


async def test_gzip_response_passes_compressed(start_gateway, upstream_server) -> None:
    compressed = gzip.compress(b"<html>" + b"hello " * 1000 + b"</html>", mtime=0)

    async def page(request: web.Request) -> web.Response:
        return web.Response(
            body=compressed, headers={"Content-Encoding": "gzip", "Content-Type": "text/html"}
        )

    gw = await start_gateway(await upstream_server(app_of(page)))
    async with gw.session.get(gw.url + "/", headers={"Accept-Encoding": "gzip"}) as resp:
        assert resp.headers["Content-Encoding"] == "gzip"
        assert resp.headers["Content-Length"] == str(len(compressed))
        assert await resp.read() == compressed


async def test_gzip_request_body_reaches_upstream_compressed(start_gateway, upstream_server) -> None:
    compressed = gzip.compress(b'{"a": 1}' * 500, mtime=0)
    seen: list[tuple[str, bytes]] = []

    async def sink(request: web.Request) -> web.Response:
        seen.append((request.headers.get("Content-Encoding", ""), await request.read()))
        return web.Response(status=204)

    gw = await start_gateway(await upstream_server(app_of(sink, auto_decompress=False)))
    async with gw.session.post(
        gw.url + "/api", data=compressed, headers={"Content-Encoding": "gzip"}
    ) as resp:
        assert resp.status == 204
    assert seen == [("gzip", compressed)]


async def test_no_accept_encoding_is_added_upstream(start_gateway, upstream_server) -> None:
    seen: list[CIMultiDictProxy[str]] = []

    async def page(request: web.Request) -> web.Response:
        seen.append(request.headers)
        return web.Response(text="ok")

    gw = await start_gateway(await upstream_server(app_of(page)))
    reply = await raw_request(gw.proxy.port, b"GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n")
    assert reply.status == 200
    [headers] = seen
    for name in ("Accept-Encoding", "Accept", "User-Agent", "Content-Type"):
        assert name not in headers


# -- 3. headers ----------------------------------------------------------------------------------

HOP_RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"X-Custom: one\r\n"
    b"X-Custom: two\r\n"
    b"Set-Cookie: a=1; Path=/\r\n"
    b"Set-Cookie: b=2; Path=/; HttpOnly\r\n"
    b"Set-Cookie: c=3; Expires=Wed, 21 Oct 2037 07:28:00 GMT\r\n"
    b"Cache-Control: private\r\n"
    b"Connection: keep-alive, X-Named-Hop\r\n"
    b"X-Named-Hop: secret\r\n"
    b"Keep-Alive: timeout=5\r\n"
    b"Proxy-Connection: keep-alive\r\n"
    b"TE: trailers\r\n"
    b"Trailer: X-Checksum\r\n"
    b"Upgrade: h2c\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"\r\n"
    b"5\r\nhello\r\n0\r\n\r\n"
)
HOP_NAMES = ("X-Named-Hop", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Upgrade")


async def test_response_headers_survive_and_hop_by_hop_are_dropped(start_gateway, raw_upstream) -> None:
    async def origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_head(reader)
            writer.write(HOP_RESPONSE)
            await writer.drain()

    gw = await start_gateway(await raw_upstream(origin))
    async with gw.session.get(gw.url + "/landing?utm_source=news&x=1") as resp:
        assert resp.status == 200
        assert await resp.read() == b"hello"
        headers = resp.headers
    assert headers.getall("X-Custom") == ["one", "two"]
    cookies = headers.getall("Set-Cookie")
    assert cookies[:3] == [
        "a=1; Path=/",
        "b=2; Path=/; HttpOnly",
        "c=3; Expires=Wed, 21 Oct 2037 07:28:00 GMT",
    ]
    assert len(cookies) == 4 and cookies[3].startswith("gw_vid=v1.")
    assert headers["Cache-Control"] == "private"
    for name in HOP_NAMES:
        assert name not in headers, name
    assert "x-named-hop" not in headers.get("Connection", "").lower()
    # The gateway adds no identity of its own, and no type the origin did not declare.
    assert "Server" not in headers
    assert "Content-Type" not in headers


async def test_response_headers_raw_bytes(start_gateway, raw_upstream) -> None:
    """On the wire: no hop-by-hop header, framing chosen by the gateway, no Server/Content-Type."""

    async def origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(HOP_RESPONSE)
        await writer.drain()

    gw = await start_gateway(await raw_upstream(origin))
    reply = await raw_request(gw.proxy.port, b"GET /plain HTTP/1.1\r\nHost: shop.test\r\n\r\n")
    assert (reply.status, reply.body) == (200, b"hello")
    for name in (*HOP_NAMES, "Server", "Content-Type"):
        assert name not in reply.headers, name
    assert reply.headers.getall("Set-Cookie") == [
        "a=1; Path=/",
        "b=2; Path=/; HttpOnly",
        "c=3; Expires=Wed, 21 Oct 2037 07:28:00 GMT",
    ]


ODD_RESPONSE = (
    b"HTTP/1.1 200 Fine\x01\r\n"
    b"X-Control: a\x01b\x7fc\r\n"
    b"X-Latin: caf\xe9\r\n"
    b"X-Tab: a\tb\r\n"
    b"X-Utf8: caf\xc3\xa9\r\n"
    b"Content-Length: 2\r\n\r\nok"
)


@pytest.mark.parametrize("body", ["whole", "streamed"])
async def test_response_header_bytes_reach_the_visitor_as_sent(
    start_gateway, raw_upstream, body: str
) -> None:
    """Control characters and bytes that are not UTF-8 in the site's status line and header
    values reach the visitor as the site sent them: aiohttp's writer failed the whole answer
    over a control character (a 500 with a traceback) and dropped the other bytes. Whether
    the body is already there (headers and body in one write) or still on its way (headers
    sent at once)."""

    async def origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_head(reader)
            if body == "whole":
                writer.write(ODD_RESPONSE)
            else:
                writer.write(ODD_RESPONSE[:-2])
                await writer.drain()
                await asyncio.sleep(0.05)
                writer.write(b"ok")
            await writer.drain()

    gw = await start_gateway(await raw_upstream(origin))
    for _ in range(2):  # and the connection serves the next request
        reply = await raw_request(gw.proxy.port, b"GET /odd?utm_source=x HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        assert (reply.status, reply.reason, reply.body) == (200, "Fine\x01", b"ok")
        sent = {
            name: reply.headers[name].encode("latin-1")
            for name in ("X-Control", "X-Latin", "X-Tab", "X-Utf8")
        }
        assert sent == {
            "X-Control": b"a\x01b\x7fc",
            "X-Latin": b"caf\xe9",
            "X-Tab": b"a\tb",
            "X-Utf8": b"caf\xc3\xa9",
        }
        assert reply.headers["Set-Cookie"].startswith("gw_vid=v1.") and "Server" not in reply.headers


async def test_an_answer_with_many_headers_is_forwarded(start_gateway, raw_upstream) -> None:
    """More header lines than aiohttp's default limit (128), as a page setting many cookies has."""
    many = b"".join(b"Set-Cookie: c%d=1; Path=/\r\n" % i for i in range(300))

    async def origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n" + many + b"Content-Length: 2\r\n\r\nok")
        await writer.drain()

    gw = await start_gateway(await raw_upstream(origin))
    reply = await raw_request(gw.proxy.port, b"GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n")
    assert (reply.status, reply.body) == (200, b"ok")
    assert len(reply.headers.getall("Set-Cookie")) == 300


async def test_a_header_line_longer_than_the_visitors_limit_is_forwarded(start_gateway, raw_upstream) -> None:
    """A site's header line may be far over ``proxy.max_header_size`` (which bounds the visitor's):
    up to 64 KiB. An answer without a Date gets one (RFC 9110 §6.6.1); a site's own is kept."""
    long_value = b"v" * 60_000

    async def origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            line = await read_head(reader)
            date = b"Date: Mon, 01 Jan 2001 00:00:00 GMT\r\n" if "/dated" in line else b""
            writer.write(
                b"HTTP/1.1 200 OK\r\n" + date + b"X-Long: " + long_value + b"\r\nContent-Length: 2\r\n\r\nok"
            )
            await writer.drain()

    gw = await start_gateway(await raw_upstream(origin))
    reply = await raw_request(gw.proxy.port, b"GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n")
    assert (reply.status, reply.body, reply.headers["X-Long"]) == (200, b"ok", long_value.decode())
    assert reply.headers["Date"].endswith(" GMT")
    dated = await raw_request(gw.proxy.port, b"GET /dated HTTP/1.1\r\nHost: shop.test\r\n\r\n")
    assert dated.headers.getall("Date") == ["Mon, 01 Jan 2001 00:00:00 GMT"]


@pytest.mark.parametrize("origin_answer", ["http10_until_close", "chunked"])
async def test_an_http10_body_of_no_length_ends_with_the_connection(
    start_gateway, raw_upstream, origin_answer: str
) -> None:
    """An HTTP/1.0 client that asked for keep-alive, and a body whose length is not known
    before it ends: the gateway cannot chunk it for HTTP/1.0, so it closes the connection at
    its end, as the site does. aiohttp decided so but left the connection open: the client
    waited for ever."""

    async def origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        if origin_answer == "chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        else:
            writer.write(b"HTTP/1.0 200 OK\r\n\r\nhello")
            await writer.drain()
            writer.close()
        await writer.drain()

    gw = await start_gateway(await raw_upstream(origin))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)
    try:
        writer.write(b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)  # to the end of the connection
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") and body == b"hello"
    assert b"keep-alive" not in head.lower() and b"transfer-encoding" not in head.lower()


async def test_request_hop_by_hop_headers_are_dropped(start_gateway, upstream_server) -> None:
    seen: list[tuple[CIMultiDictProxy[str], bytes]] = []

    async def sink(request: web.Request) -> web.Response:
        seen.append((request.headers, await request.read()))
        return web.Response(text="ok")

    gw = await start_gateway(await upstream_server(app_of(sink)))
    reply = await raw_request(
        gw.proxy.port,
        b"POST /in HTTP/1.1\r\n"
        b"Host: shop.test\r\n"
        b"Connection: keep-alive, X-Named-Hop\r\n"
        b"X-Named-Hop: secret\r\n"
        b"Keep-Alive: timeout=5\r\n"
        b"Proxy-Connection: keep-alive\r\n"
        b"TE: trailers\r\n"
        b"Trailer: X-Checksum\r\n"
        b"Upgrade: h2c\r\n"
        b"X-Keep: yes\r\n"
        b"X-Keep: again\r\n"
        b"Content-Length: 5\r\n"
        b"\r\n"
        b"hello",
    )
    assert reply.status == 200
    [(headers, body)] = seen
    assert body == b"hello"
    assert headers.getall("X-Keep") == ["yes", "again"]
    assert headers["Content-Length"] == "5"
    for name in (*HOP_NAMES, "Transfer-Encoding"):
        assert name not in headers, name
    assert "x-named-hop" not in headers.get("Connection", "").lower()


H2C = b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
"""What ``curl --http2`` sends to an ``http://`` URL (RFC 7540's h2c upgrade, withdrawn by 9113)."""
OTHER_UPGRADES = {
    "h2c": b"GET /p?utm_source=news HTTP/1.1\r\nHost: shop.test\r\n" + H2C + b"\r\n",
    "h2c_with_a_body": b"POST /p HTTP/1.1\r\nHost: shop.test\r\n" + H2C + b"Content-Length: 5\r\n\r\nhello",
    "tcp": b"GET /p HTTP/1.1\r\nHost: shop.test\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n",
    "websocket_not_a_get": (
        b"POST /p HTTP/1.1\r\nHost: shop.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Content-Length: 5\r\n\r\nhello"
    ),
    "connection_alone": b"GET /p HTTP/1.1\r\nHost: shop.test\r\nConnection: Upgrade\r\n\r\n",
    "upgrade_alone": b"GET /p HTTP/1.1\r\nHost: shop.test\r\nUpgrade: h2c\r\n\r\n",
}


async def other_upgrade_site(
    start_gateway, upstream_server
) -> tuple[RunningGateway, list[tuple[str, str, CIMultiDictProxy[str], bytes]]]:
    seen: list[tuple[str, str, CIMultiDictProxy[str], bytes]] = []

    async def page(request: web.Request) -> web.Response:
        seen.append((request.method, request.path, request.headers, await request.read()))
        return web.Response(text=f"page {request.path}")

    return await start_gateway(await upstream_server(app_of(page))), seen


@pytest.mark.parametrize("name", list(OTHER_UPGRADES))
async def test_an_upgrade_other_than_websockets_is_answered_as_a_plain_request(
    start_gateway, upstream_server, name: str
) -> None:
    """``Upgrade: h2c``, ``tcp``, a WebSocket's on a ``POST``: the gateway switches to no
    protocol but a WebSocket's (on a ``GET``), and ``Upgrade`` and ``Connection`` are hop-by-hop,
    so the site gets the request as a plain one, without them nor what ``Connection`` names
    (``HTTP2-Settings``), its body too, and its answer reaches the visitor as it came, never a
    ``101``, the connection kept for the visitor's next request: as a site that declines the
    upgrade answers it (RFC 9110 §7.8), which is what the visitor's client expects."""
    gw, seen = await other_upgrade_site(start_gateway, upstream_server)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)
    try:
        writer.write(OTHER_UPGRADES[name])
        await writer.drain()
        reply = await asyncio.wait_for(read_response(reader), 30)  # a guard against a hang only
        assert (reply.status, reply.body) == (200, b"page /p")
        assert "Upgrade" not in reply.headers
        writer.write(b"GET /next HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        await writer.drain()
        after = await asyncio.wait_for(read_response(reader), 30)
        assert (after.status, after.body) == (200, b"page /next")
    finally:
        writer.close()
    (method, path, headers, body), _ = seen
    assert path == "/p"
    assert body == (b"hello" if method == "POST" else b"")
    for hop in ("Upgrade", "Connection", "HTTP2-Settings"):
        assert hop not in headers, hop


@pytest.mark.parametrize("name", ["h2c", "h2c_with_a_body", "tcp"])
async def test_a_request_pipelined_behind_a_declined_upgrade_is_not_left_unanswered(
    start_gateway, upstream_server, name: str
) -> None:
    """A request sent right behind an ``Upgrade`` request, in the same packet: aiohttp's parser
    stops at the upgrade request and drops the bytes after it in that read when it is no
    WebSocket's. Until 2026-12-07 that request got no answer: the visitor waited on a connection
    that said nothing until the idle timeout closed it. Now the upgrade's answer says
    ``Connection: close`` and the connection closes after it, so the client sends the request
    again on a new one, as it does for any pipelined request a server closed before answering."""
    gw, seen = await other_upgrade_site(start_gateway, upstream_server)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)
    try:
        writer.write(OTHER_UPGRADES[name] + b"GET /piped HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        await writer.drain()
        reply = await asyncio.wait_for(read_response(reader), 30)
        assert (reply.status, reply.body) == (200, b"page /p")
        if reply.headers.get("Connection", "").lower() == "close":
            assert await asyncio.wait_for(reader.read(), 30) == b""  # closed, not left hanging
        else:
            piped = await asyncio.wait_for(read_response(reader), 30)  # a guard against a hang only
            assert (piped.status, piped.body) == (200, b"page /piped")
    finally:
        writer.close()
    assert [path for _, path, _, _ in seen] in (["/p"], ["/p", "/piped"])  # nothing else read


@pytest.mark.parametrize("connection", [b"Content-Length", b"keep-alive, content-length"])
async def test_a_content_length_named_in_connection_still_frames_the_body(
    start_gateway, upstream_server, connection: bytes
) -> None:
    """A visitor's ``Connection`` naming ``Content-Length`` does not take the body's length off
    the request to the site: the length frames the body the gateway sends after it. Until
    2026-12-06 the line was dropped as a hop-by-hop one and the body bytes still followed, so the
    site read a request without a body and took the body for a request of its own: one that
    skipped every check of the gateway (the reserved paths, the forwarding claims) and whose
    answer went to whoever's request took that connection next."""
    seen: list[tuple[str, str, str | None, bytes]] = []

    async def sink(request: web.Request) -> web.Response:
        seen.append(
            (request.method, request.path, request.headers.get("Content-Length"), await request.read())
        )
        return web.Response(text="ok")

    gw = await start_gateway(await upstream_server(app_of(sink)))
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: shop.test\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"
    reply = await raw_request(
        gw.proxy.port,
        b"POST /in HTTP/1.1\r\nHost: shop.test\r\nConnection: " + connection + b"\r\n"
        b"Content-Length: " + str(len(smuggled)).encode() + b"\r\n\r\n" + smuggled,
    )
    assert reply.status == 200
    after = await raw_request(gw.proxy.port, b"GET /after HTTP/1.1\r\nHost: shop.test\r\n\r\n")
    assert (after.status, after.body) == (200, b"ok")
    assert seen == [("POST", "/in", str(len(smuggled)), smuggled), ("GET", "/after", None, b"")]


async def test_chunked_request_body_is_reframed(start_gateway, upstream_server) -> None:
    seen: list[bytes] = []

    async def sink(request: web.Request) -> web.Response:
        seen.append(await request.read())
        return web.Response(text="ok")

    gw = await start_gateway(await upstream_server(app_of(sink)))
    reply = await raw_request(
        gw.proxy.port,
        b"POST /in HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n",
    )
    assert reply.status == 200
    assert seen == [b"hello world"]


async def test_an_answer_carrying_our_cookie_is_kept_from_shared_caches(start_gateway, raw_upstream) -> None:
    """A shared cache in front may store an answer that sets a cookie (RFC 9111 §7.3: Set-Cookie
    does not inhibit caching) and hand it to everyone: the site's page marked ``public`` (or with
    no Cache-Control, heuristically cacheable) would give every later visitor the visitor ID we
    set on it, or an expiry that deletes theirs. An answer we add a Set-Cookie to gets
    ``Cache-Control: private`` besides the site's (the most restrictive directive wins, RFC 9111
    §4.2.1; browsers still cache it); one the site already keeps private or unstored, and every
    answer we set no cookie on, go as they came."""
    answers = {
        b"/public": b"Cache-Control: public, max-age=3600\r\nCache-Control: s-maxage=600\r\n",
        b"/none": b"Last-Modified: Mon, 01 Jan 2024 00:00:00 GMT\r\n",
        b"/private": b"Cache-Control: private, max-age=60\r\n",
        b"/nostore": b"cache-control: No-Store\r\n",
    }

    async def origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            path = (await reader.readuntil(b"\r\n\r\n")).split(b" ", 2)[1].partition(b"?")[0]
            writer.write(b"HTTP/1.1 200 OK\r\n" + answers[path] + b"Content-Length: 4\r\n\r\npage")
            await writer.drain()

    gw = await start_gateway(await raw_upstream(origin))
    cache_control: dict[str, list[str]] = {}
    cookies: dict[str, list[str]] = {}
    for path in ("/public", "/none", "/private", "/nostore"):
        reply = await raw_request(
            gw.proxy.port, f"GET {path}?utm_source=news HTTP/1.1\r\nHost: shop.test\r\n\r\n".encode()
        )
        assert (reply.status, reply.body) == (200, b"page")
        cache_control[path] = reply.headers.getall("Cache-Control", [])
        cookies[path] = reply.headers.getall("Set-Cookie", [])
    assert all(len(set_cookies) == 1 for set_cookies in cookies.values()), cookies
    assert cache_control == {
        "/public": ["public, max-age=3600", "s-maxage=600", "private"],
        "/none": ["private"],
        "/private": ["private, max-age=60"],
        "/nostore": ["No-Store"],
    }
    # A returning visitor's page view, which sets no cookie: the site's caching as it wrote it.
    visitor = cookies["/public"][0].split(";", 1)[0]
    again = await raw_request(
        gw.proxy.port, f"GET /public HTTP/1.1\r\nHost: shop.test\r\nCookie: {visitor}\r\n\r\n".encode()
    )
    assert "Set-Cookie" not in again.headers
    assert again.headers.getall("Cache-Control") == ["public, max-age=3600", "s-maxage=600"]


async def test_a_cdns_own_cache_control_is_kept_from_sharing_our_cookie_too(
    start_gateway, raw_upstream
) -> None:
    """A CDN told by its own field (RFC 9213: ``CDN-Cache-Control``, or a CDN's named one such as
    ``Cloudflare-CDN-Cache-Control``) reads that field instead of ``Cache-Control``: our
    ``private`` there bound it not, and a page the site keeps private to browsers but caches at
    the CDN (``Cache-Control: private`` beside ``CDN-Cache-Control: max-age=600``, a common
    pattern) gave the visitor ID we set on it to everyone the CDN served. Each such field that
    lets a cache share the answer gets ``private`` too; one that already keeps it goes as it came."""
    answers = {
        b"/cdn": b"Cache-Control: private\r\nCDN-Cache-Control: max-age=600\r\n",
        b"/both": b"Cache-Control: public, max-age=60\r\nCloudflare-CDN-Cache-Control: s-maxage=600\r\n"
        b"cdn-cache-control: max-age=600\r\n",
        b"/kept": b"CDN-Cache-Control: no-store\r\n",
    }

    async def origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            path = (await reader.readuntil(b"\r\n\r\n")).split(b" ", 2)[1].partition(b"?")[0]
            writer.write(b"HTTP/1.1 200 OK\r\n" + answers[path] + b"Content-Length: 4\r\n\r\npage")
            await writer.drain()

    gw = await start_gateway(await raw_upstream(origin))
    fields: dict[str, list[tuple[str, str]]] = {}
    for path in ("/cdn", "/both", "/kept"):
        reply = await raw_request(
            gw.proxy.port, f"GET {path}?utm_source=news HTTP/1.1\r\nHost: shop.test\r\n\r\n".encode()
        )
        assert (reply.status, reply.body) == (200, b"page")
        assert len(reply.headers.getall("Set-Cookie")) == 1
        fields[path] = [(k, v) for k, v in reply.headers.items() if "cache-control" in k.lower()]
    assert fields == {
        "/cdn": [
            ("Cache-Control", "private"),
            ("CDN-Cache-Control", "max-age=600"),
            ("CDN-Cache-Control", "private"),
        ],
        "/both": [
            ("Cache-Control", "public, max-age=60"),
            ("Cloudflare-CDN-Cache-Control", "s-maxage=600"),
            ("cdn-cache-control", "max-age=600"),
            ("Cache-Control", "private"),
            ("Cloudflare-CDN-Cache-Control", "private"),
            ("cdn-cache-control", "private"),
        ],
        "/kept": [("CDN-Cache-Control", "no-store"), ("Cache-Control", "private")],
    }


async def test_a_surrogate_control_gets_no_store_beside_our_cookie(start_gateway, raw_upstream) -> None:
    """``Surrogate-Control`` (W3C Edge Architecture 1.0; Fastly, Akamai, Varnish, Squid) is read
    by a surrogate (a CDN) ahead of ``Cache-Control``: our ``private`` bound it not, and a page
    the site told the CDN to keep (``Surrogate-Control: max-age=600``) gave the visitor ID we set
    on it to everyone the CDN served. The field has no ``private``: an answer we set our cookie on
    gets ``no-store`` there, and ``no-store;<device>`` for each surrogate a directive is targeted
    at (§2.3: the most specific applies). One that already says ``no-store`` for every surrogate
    goes as it came; ``no-store-remote`` leaves a surrogate near the site free to store it."""
    answers = {
        b"/cdn": b"Cache-Control: private\r\nSurrogate-Control: max-age=600\r\n",
        b"/targeted": b'surrogate-control: max-age=60;edge1, content="ESI/1.0", no-store;edge2\r\n',
        b"/remote": b"Surrogate-Control: no-store-remote\r\n",
        b"/kept": b"Cache-Control: no-store\r\nSurrogate-Control: No-Store, max-age=60;edge1\r\n"
        b"Surrogate-Control: no-store;edge1\r\n",
    }

    async def origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            path = (await reader.readuntil(b"\r\n\r\n")).split(b" ", 2)[1].partition(b"?")[0]
            writer.write(b"HTTP/1.1 200 OK\r\n" + answers[path] + b"Content-Length: 4\r\n\r\npage")
            await writer.drain()

    gw = await start_gateway(await raw_upstream(origin))
    fields: dict[str, list[tuple[str, str]]] = {}
    for path in ("/cdn", "/targeted", "/remote", "/kept"):
        reply = await raw_request(
            gw.proxy.port, f"GET {path}?utm_source=news HTTP/1.1\r\nHost: shop.test\r\n\r\n".encode()
        )
        assert (reply.status, reply.body) == (200, b"page")
        assert len(reply.headers.getall("Set-Cookie")) == 1
        fields[path] = [(k, v) for k, v in reply.headers.items() if "control" in k.lower()]
    assert fields == {
        "/cdn": [
            ("Cache-Control", "private"),
            ("Surrogate-Control", "max-age=600"),
            ("Surrogate-Control", "no-store"),
        ],
        "/targeted": [
            ("surrogate-control", 'max-age=60;edge1, content="ESI/1.0", no-store;edge2'),
            ("Cache-Control", "private"),
            ("surrogate-control", "no-store, no-store;edge1"),
        ],
        "/remote": [
            ("Surrogate-Control", "no-store-remote"),
            ("Cache-Control", "private"),
            ("Surrogate-Control", "no-store"),
        ],
        "/kept": [
            ("Cache-Control", "no-store"),
            ("Surrogate-Control", "No-Store, max-age=60;edge1"),
            ("Surrogate-Control", "no-store;edge1"),
        ],
    }


async def test_early_hints_reach_the_visitor_before_the_answer(start_gateway, raw_upstream) -> None:
    """A site's ``103 Early Hints`` reaches an HTTP/1.1 visitor before the final answer, as it
    came but for hop-by-hop lines, on a landing too (whose answer waits for the store): the
    visitor can fetch what it names while the site works. The site's ``100 Continue`` is not
    passed on (the gateway answers ``Expect`` itself), and an HTTP/1.0 visitor gets no 1xx at
    all (RFC 9110 §15.2). Until 2026-12-05 every interim answer was dropped."""
    seen_hint = asyncio.Event()

    async def origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            writer.write(
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n"
                b"Link: </s.css>; rel=preload; as=style\r\nKeep-Alive: timeout=5\r\n"
                b"link: </a.js>; rel=preload; as=script\r\n\r\n"
            )
            await writer.drain()
            if head.startswith(b"GET /slow"):  # the final answer only once the hint arrived
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(seen_hint.wait(), 5)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\npage")
            await writer.drain()

    gw = await start_gateway(await raw_upstream(origin))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)
    try:
        writer.write(b"GET /slow?utm_source=news HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
        seen_hint.set()
        assert first == (
            b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload; as=style\r\n"
            b"link: </a.js>; rel=preload; as=script\r\n\r\n"
        )
        reply = await read_response(reader)
        assert (reply.status, reply.body) == (200, b"page")
        assert reply.headers["Set-Cookie"].startswith("gw_vid=")  # a landing, answered as ever
    finally:
        writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)
    try:
        writer.write(b"GET /now HTTP/1.0\r\nHost: shop.test\r\n\r\n")
        whole = await asyncio.wait_for(reader.read(), 3)
        assert whole.startswith(b"HTTP/1.0 200 OK\r\n") and whole.endswith(b"page")
    finally:
        writer.close()


# -- 4. Host and X-Forwarded-* -------------------------------------------------------------------


async def forwarded_headers(
    start_gateway, upstream_server, toml: str, headers: list[tuple[str, str]]
) -> tuple[CIMultiDictProxy[str], Probe, str]:
    seen: list[CIMultiDictProxy[str]] = []

    async def page(request: web.Request) -> web.Response:
        seen.append(request.headers)
        return web.Response(text="ok")

    upstream = await upstream_server(app_of(page))
    gw = await start_gateway(upstream, toml)
    probe = add_probe(gw)
    async with gw.session.get(gw.url + "/p", headers=headers) as resp:
        assert resp.status == 200
    [got] = seen
    return got, probe, upstream.removeprefix("http://")


SPOOFED = [
    ("Host", "shop.test:8443"),
    ("X-Forwarded-For", "203.0.113.7"),
    ("X-Forwarded-For", "198.51.100.9"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Host", "evil.test"),
    ("Forwarded", "for=203.0.113.7;proto=https"),
    ("X-Real-IP", "203.0.113.7"),
    # The rest of the family frameworks read behind a proxy they trust: Rails and Rack
    # (-Ssl, -Scheme, -Port), Django (-Port), Symfony, Spring and Werkzeug (-Port, -Prefix).
    ("X-Forwarded-Port", "443"),
    ("X-Forwarded-Prefix", "//evil.test"),
    ("x-forwarded-ssl", "on"),
    # What CDNs and front servers write: the client's address (Rails reads Client-IP, a site
    # behind Cloudflare CF-Connecting-IP), the path before a rewrite (Symfony, Laminas).
    ("CF-Connecting-IP", "203.0.113.7"),
    ("Client-IP", "203.0.113.7"),
    ("True-Client-IP", "203.0.113.7"),
    ("X-Original-URL", "/admin"),
    # The scheme as nginx is told to write it for Tornado, which (with ``xheaders``, as Jupyter
    # Server) reads it ahead of X-Forwarded-Proto: a visitor's own beat the gateway's line.
    ("X-Scheme", "https"),
    # Spelled with underscores, which Rack, Django and gunicorn read as the same CGI variable
    # (HTTP_X_FORWARDED_PROTO): no proxy writes them, so they are a visitor's, trusted peer or not.
    ("X_Forwarded_Proto", "https"),
    ("x-forwarded_prefix", "//evil.test"),
    ("X_Real_IP", "203.0.113.7"),
]
OTHER_CLAIMS = ("X-Forwarded-Port", "X-Forwarded-Prefix", "X-Forwarded-Ssl")
CDN_CLAIMS = ("CF-Connecting-IP", "Client-IP", "True-Client-IP", "X-Original-URL", "X-Scheme")
UNDERSCORED = ("X_Forwarded_Proto", "x-forwarded_prefix", "X_Real_IP")


async def test_visitor_host_preserved_and_forwarded_headers_not_believed(
    start_gateway, upstream_server
) -> None:
    headers, probe, _ = await forwarded_headers(start_gateway, upstream_server, "", SPOOFED)
    assert headers["Host"] == "shop.test:8443"
    assert headers.getall("X-Forwarded-For") == ["127.0.0.1"]
    assert headers.getall("X-Forwarded-Proto") == ["http"]
    assert headers.getall("X-Forwarded-Host") == ["shop.test:8443"]
    assert "Forwarded" not in headers and "X-Real-IP" not in headers
    # Every X-Forwarded-* of a peer not trusted, as the README says (until 2026-12-05 only -For,
    # -Proto and -Host were dropped: a visitor's -Prefix or -Ssl reached a site that reads them).
    assert [name for name in (*OTHER_CLAIMS, *UNDERSCORED) if name in headers] == []
    # And a CDN's claims, which a visitor's own copy forged (passed on until 2026-12-05).
    assert [name for name in CDN_CLAIMS if name in headers] == []
    [ex] = probe.seen
    assert ex.request.client_ip == "127.0.0.1"
    assert (ex.request.scheme, ex.request.host) == ("http", "shop.test:8443")
    # The view is built positionally (a request's cost): each field where the hooks read it.
    assert (ex.request.method, ex.request.path, ex.request.query) == ("GET", "/p", "")


@pytest.mark.parametrize("origin", ["https://www.shop.test", "HTTPS://WWW.Shop.Test"])
async def test_public_origin_scheme_is_told_to_the_site(start_gateway, upstream_server, origin: str) -> None:
    """Behind a TLS terminator not listed as trusted, with ``proxy.public_origin`` https: the
    gateway takes every request as https (the cookies' Secure flag), and the site is told the
    same, not the hop's http (until 2026-12-05: a site sending http to https could answer every
    page with a redirect to itself). The visitor's own claim is still not believed. A scheme
    written in capitals is the same scheme (RFC 3986 §3.1): it was taken as written, so the
    cookies lost their Secure flag and Django, Rails and Rack, which compare the header with
    ``https``, were told ``HTTPS``, not https."""
    toml = f'[proxy]\npublic_origin = "{origin}"\n'
    headers, probe, _ = await forwarded_headers(start_gateway, upstream_server, toml, SPOOFED)
    assert headers.getall("X-Forwarded-Proto") == ["https"]
    assert headers.getall("X-Forwarded-For") == ["127.0.0.1"]
    [ex] = probe.seen
    assert ex.request.scheme == "https"


async def test_upstream_host_sent_when_not_preserving(start_gateway, upstream_server) -> None:
    headers, _, upstream_host = await forwarded_headers(
        start_gateway, upstream_server, "[proxy]\npreserve_host = false\n", SPOOFED
    )
    assert headers["Host"] == upstream_host
    assert headers["X-Forwarded-Host"] == "shop.test:8443"


async def test_forwarded_headers_believed_from_trusted_proxy(start_gateway, upstream_server) -> None:
    headers, probe, _ = await forwarded_headers(
        start_gateway, upstream_server, '[proxy]\ntrusted_proxies = ["127.0.0.1"]\n', SPOOFED
    )
    assert headers.getall("X-Forwarded-For") == ["203.0.113.7, 198.51.100.9, 127.0.0.1"]
    assert headers.getall("X-Forwarded-Proto") == ["https"]
    assert headers.getall("X-Forwarded-Host") == ["evil.test"]
    assert headers["Forwarded"] == "for=203.0.113.7;proto=https"
    assert headers["X-Real-IP"] == "203.0.113.7"
    assert [headers.get(name) for name in OTHER_CLAIMS] == ["443", "//evil.test", "on"]
    assert [headers.get(name) for name in CDN_CLAIMS] == [
        "203.0.113.7",
        "203.0.113.7",
        "203.0.113.7",
        "/admin",
        "https",
    ]
    assert [name for name in UNDERSCORED if name in headers] == []
    [ex] = probe.seen
    assert ex.request.client_ip == "198.51.100.9"
    assert (ex.request.scheme, ex.request.host) == ("https", "evil.test")


async def test_a_trusted_proxys_added_lines_are_read_after_the_visitors(
    start_gateway, upstream_server
) -> None:
    """A trusted proxy that adds its X-Forwarded-Proto and -Host as lines of their own after the
    visitor's (HAProxy's ``add-header``) is believed, as when it appends to the visitor's line:
    the right-most value of the lines in their order (RFC 9110 §5.3), and the site gets them
    all. Until 2026-12-05 the first line was read, the visitor's, so a forged host went into the
    public origin (a site's redirect to itself pointed at ``evil.test``) and to the site alone,
    where the mitmproxy host read them joined."""
    lines = [
        ("Host", "shop.test"),
        ("X-Forwarded-Host", "evil.test"),
        ("X-Forwarded-Proto", "http"),
        ("X-Forwarded-Host", "shop.test"),
        ("X-Forwarded-Proto", "https"),
    ]
    headers, probe, _ = await forwarded_headers(
        start_gateway, upstream_server, '[proxy]\ntrusted_proxies = ["127.0.0.1"]\n', lines
    )
    [ex] = probe.seen
    assert (ex.request.scheme, ex.request.host) == ("https", "shop.test")
    assert headers.getall("X-Forwarded-Host") == ["evil.test, shop.test"]
    assert headers.getall("X-Forwarded-Proto") == ["http, https"]


async def test_through_two_trusted_proxies_the_visitors_scheme_and_host_are_read(
    start_gateway, upstream_server
) -> None:
    """A TLS terminator in front of a load balancer, both in ``proxy.trusted_proxies``, each
    appending to X-Forwarded-For, -Proto and -Host: the visitor is the right-most X-Forwarded-For
    entry that is no trusted proxy, and its scheme and host are the entries at the same place.
    Until 2026-12-07 the right-most were read, the hop between the two proxies: plain http (the
    cookie lost its Secure flag) and the balancer's own name (every page of the site a referral
    from another site)."""
    lines = [
        ("Host", "lb.internal"),
        ("X-Forwarded-For", "203.0.113.7, 127.0.0.2"),
        ("X-Forwarded-Proto", "https, http"),
        ("X-Forwarded-Host", "shop.test, lb.internal"),
    ]
    toml = '[proxy]\ntrusted_proxies = ["127.0.0.0/8"]\n'
    headers, probe, _ = await forwarded_headers(start_gateway, upstream_server, toml, lines)
    [ex] = probe.seen
    assert ex.request.client_ip == "203.0.113.7"
    assert (ex.request.scheme, ex.request.host) == ("https", "shop.test")
    # The site is told the chain as the proxies wrote it, the peer appended.
    assert headers.getall("X-Forwarded-For") == ["203.0.113.7, 127.0.0.2, 127.0.0.1"]
    assert headers.getall("X-Forwarded-Proto") == ["https, http"]


async def heads_seen(start_gateway, raw_upstream, requests: list[bytes], toml: str = "") -> list[list[str]]:
    """The head lines each request reached the site with, as it wrote them."""
    heads: list[list[str]] = []

    async def origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            heads.append(head.decode("latin-1").split("\r\n")[:-2])
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    gw = await start_gateway(await raw_upstream(origin), toml)
    for request in requests:
        assert (await raw_request(gw.proxy.port, request)).status == 200
    return heads


async def test_request_headers_reach_the_site_in_the_visitors_order_and_spelling(
    start_gateway, raw_upstream
) -> None:
    """The site sees the visitor's header lines as sent: names spelled as the visitor spelled
    them (aiohttp's parser hands ``user-agent`` over as ``User-Agent``), ``Host`` where it was
    (it went after all the others), a cleaned Referer in its own place and spelling (it went
    last, as ``referer``); only the X-Forwarded-* the gateway writes follow. A request without
    a Host (HTTP/1.0) gets the site's first, as RFC 9112 §3.2 asks of a client."""
    [first, second] = await heads_seen(
        start_gateway,
        raw_upstream,
        [
            b"GET /p HTTP/1.1\r\naccept: */*\r\nhost: shop.test\r\nuser-agent: UA/1\r\n"
            b"REFERER: http://shop.test/a?utm_source=x&k=1\r\nX-Forwarded-Prefix: /x\r\n"
            b"X_Forwarded_For: 6.6.6.6\r\n"
            b"X-After: 1\r\n\r\n",
            b"GET /q HTTP/1.0\r\nuser-agent: UA/1\r\n\r\n",
        ],
        "[proxy]\npreserve_host = false\n",
    )
    assert first == [
        "GET /p HTTP/1.1",
        "accept: */*",
        first[2],  # the site's own host (preserve_host = false), in the visitor's Host's place
        "user-agent: UA/1",
        "REFERER: http://shop.test/a?k=1",
        "X-After: 1",
        "X-Forwarded-For: 127.0.0.1",
        "X-Forwarded-Proto: http",
        "X-Forwarded-Host: shop.test",
    ]
    assert first[2].startswith("host: 127.0.0.1:"), first[2]
    assert second[:3] == ["GET /q HTTP/1.1", first[2].replace("host", "Host"), "user-agent: UA/1"]
    [plain] = await heads_seen(  # no header replaced, the visitor's Host kept: the common case
        start_gateway,
        raw_upstream,
        [
            b"GET /r HTTP/1.1\r\naccept: */*\r\nhost: shop.test\r\n"
            b"connection: keep-alive\r\nuser-agent: UA/1\r\n\r\n"
        ],
    )
    assert plain[:4] == ["GET /r HTTP/1.1", "accept: */*", "host: shop.test", "user-agent: UA/1"]


# -- 5. Location ---------------------------------------------------------------------------------


async def redirects(start_gateway, upstream_server, toml: str = "") -> tuple[dict[str, str], int]:
    origin: list[str] = []

    async def redirect(request: web.Request) -> web.Response:
        up = origin[0]
        port = int(up.rsplit(":", 1)[1])
        targets = {
            "/self": f"{up}/next?x=1#f",
            "/bare": up,
            "/query": f"{up}?q=1",
            "/upper": up.upper() + "/x",
            "/default-port": f"{up}/y",
            "/other-port": f"http://127.0.0.1:{port + 1}/x",
            "/longer-port": f"{up}0/x",
            "/https": f"https://127.0.0.1:{port}/x",
            "/elsewhere": "https://elsewhere.example/x",
            "/relative": "/relative?x=1",
            "/protocol-relative": "//elsewhere.example/x",
        }
        return web.Response(status=302, headers={"Location": targets[request.path]})

    origin.append(await upstream_server(app_of(redirect)))
    gw = await start_gateway(origin[0], toml)
    paths = (
        "/self",
        "/bare",
        "/query",
        "/upper",
        "/other-port",
        "/longer-port",
        "/https",
        "/elsewhere",
        "/relative",
        "/protocol-relative",
    )
    got = {}
    for path in paths:
        async with gw.session.get(
            gw.url + path, headers={"Host": "shop.test"}, allow_redirects=False
        ) as resp:
            assert resp.status == 302
            got[path] = resp.headers["Location"]
    return got, int(origin[0].rsplit(":", 1)[1])


async def test_location_to_upstream_origin_is_rewritten(start_gateway, upstream_server) -> None:
    got, port = await redirects(start_gateway, upstream_server)
    assert got == {
        "/self": "http://shop.test/next?x=1#f",
        "/bare": "http://shop.test",
        "/query": "http://shop.test?q=1",
        "/upper": "http://shop.test/x",
        "/other-port": f"http://127.0.0.1:{port + 1}/x",
        "/longer-port": f"http://127.0.0.1:{port}0/x",
        "/https": f"https://127.0.0.1:{port}/x",
        "/elsewhere": "https://elsewhere.example/x",
        "/relative": "/relative?x=1",
        "/protocol-relative": "//elsewhere.example/x",
    }


async def test_refresh_to_upstream_origin_is_rewritten(start_gateway, upstream_server) -> None:
    """A ``Refresh`` header's URL at the upstream's own origin points at the public origin, as a
    ``Location`` does (nginx's ``proxy_redirect`` rewrites both): it sent the visitor to the
    site's private address. Its other bytes, and a URL elsewhere, stay as they came."""
    origin: list[str] = []

    async def page(request: web.Request) -> web.Response:
        refresh = {
            "/self": f"0; url={origin[0]}/next?a=%2F",
            "/quoted": f"5;URL='{origin[0]}/x'",
            "/bare": f"1, {origin[0]}/y",
            "/elsewhere": "0; url=https://elsewhere.example/x",
            "/relative": "3; url=/r",
            "/reload": "30",
        }[request.path]
        return web.Response(text="wait", headers={"Refresh": refresh})

    origin.append(await upstream_server(app_of(page)))
    gw = await start_gateway(origin[0])
    got = {}
    for path in ("/self", "/quoted", "/bare", "/elsewhere", "/relative", "/reload"):
        async with gw.session.get(gw.url + path, headers={"Host": "shop.test"}) as resp:
            got[path] = resp.headers["Refresh"]
    assert got == {
        "/self": "0; url=http://shop.test/next?a=%2F",
        "/quoted": "5;URL='http://shop.test/x'",
        "/bare": "1, http://shop.test/y",
        "/elsewhere": "0; url=https://elsewhere.example/x",
        "/relative": "3; url=/r",
        "/reload": "30",
    }


async def test_location_uses_configured_public_origin(start_gateway, upstream_server) -> None:
    got, _ = await redirects(
        start_gateway, upstream_server, '[proxy]\npublic_origin = "https://www.shop.test"\n'
    )
    assert got["/self"] == "https://www.shop.test/next?x=1#f"
    assert got["/elsewhere"] == "https://elsewhere.example/x"


# -- 6. WebSocket --------------------------------------------------------------------------------


async def echo_ws_upstream(upstream_server, closed: asyncio.Queue[int | None]) -> str:
    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                if msg.data == "close-me":
                    await ws.close(code=4001, message=b"bye")
                    break
                await ws.send_str("echo:" + msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(b"echo:" + msg.data)
        closed.put_nowait(ws.close_code)
        return ws

    return await upstream_server(app_of(echo))


async def test_websocket_echo_and_client_close(start_gateway, upstream_server) -> None:
    closed: asyncio.Queue[int | None] = asyncio.Queue()
    gw = await start_gateway(await echo_ws_upstream(upstream_server, closed))
    async with gw.session.ws_connect(gw.url + "/ws") as ws:
        await ws.send_str("hi")
        assert (await ws.receive(timeout=2)).data == "echo:hi"
        await ws.send_bytes(b"\x00\xff\x10")
        msg = await ws.receive(timeout=2)
        assert (msg.type, msg.data) == (WSMsgType.BINARY, b"echo:\x00\xff\x10")
        await ws.close(code=4002)
    assert await asyncio.wait_for(closed.get(), 2) == 4002


async def test_websocket_upgrade_in_flight_at_shutdown_gets_a_503(start_gateway, upstream_server) -> None:
    """An upgrade the site has not yet answered when the gateway begins to stop: the visitor gets
    a 503 to retry elsewhere (Retry-After, the connection closed), not a 101 followed at once by
    a 1001 close; the site's side is closed with 1001 (going away)."""
    asked, release = asyncio.Event(), asyncio.Event()
    site_closed: asyncio.Queue[int | None] = asyncio.Queue()

    async def slow_chat(request: web.Request) -> web.WebSocketResponse:
        asked.set()
        await release.wait()
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for _ in ws:
            pass
        site_closed.put_nowait(ws.close_code)
        return ws

    gw = await start_gateway(await upstream_server(app_of(slow_chat)))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)
    try:
        writer.write(
            b"GET /ws HTTP/1.1\r\nHost: shop.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await asyncio.wait_for(asked.wait(), 5)
        stopping = asyncio.create_task(gw.proxy.close())  # as a SIGTERM does: on_shutdown first
        try:
            async with asyncio.timeout(5):
                while not gw.gateway.going_away.is_set():
                    await asyncio.sleep(0.01)
            release.set()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 503 "), head  # it was a 101, then a 1001 close
            rest = await asyncio.wait_for(reader.read(), 5)  # to the connection's end
        finally:
            await asyncio.wait_for(stopping, 15)
    finally:
        writer.close()
        await writer.wait_closed()
    assert b"\r\nRetry-After: 5\r\n" in head and b"\r\nConnection: close\r\n" in head
    assert b"503" in rest  # the neutral page, and nothing after it
    assert await asyncio.wait_for(site_closed.get(), 5) == 1001


async def test_websocket_upgrade_after_shutdown_began_never_reaches_the_site(
    start_gateway, upstream_server
) -> None:
    """An upgrade that comes once the gateway is stopping (on a connection kept alive through the
    grace period): 503, and no connection to the site, which used to be opened, upgraded and
    closed again at once."""
    asked: list[str] = []

    async def chat(request: web.Request) -> web.WebSocketResponse:
        asked.append(request.path)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        return ws

    gw = await start_gateway(await upstream_server(app_of(chat)))
    gw.gateway.going_away.set()  # what the start of a SIGTERM's shutdown sets
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)
    try:
        writer.write(
            b"GET /ws HTTP/1.1\r\nHost: shop.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    finally:
        writer.close()
        await writer.wait_closed()
    assert head.startswith(b"HTTP/1.1 503 ") and b"\r\nRetry-After: 5\r\n" in head, head
    assert asked == []


async def test_websocket_upstream_close_reaches_client(start_gateway, upstream_server) -> None:
    closed: asyncio.Queue[int | None] = asyncio.Queue()
    gw = await start_gateway(await echo_ws_upstream(upstream_server, closed))
    async with gw.session.ws_connect(gw.url + "/ws") as ws:
        await ws.send_str("close-me")
        msg = await ws.receive(timeout=2)
        assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 4001, "bye")  # code and reason
        assert ws.close_code == 4001
    await asyncio.wait_for(closed.get(), 2)  # the upstream handler ended


async def test_websocket_client_close_reason_reaches_the_site(start_gateway, upstream_server) -> None:
    reasons: asyncio.Queue[tuple[int | None, str]] = asyncio.Queue()

    async def site(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        msg = await ws.receive()
        reasons.put_nowait((msg.data, msg.extra))
        return ws

    gw = await start_gateway(await upstream_server(app_of(site)))
    async with gw.session.ws_connect(gw.url + "/ws") as ws:
        await ws.close(code=4003, message=b"leaving")
    assert await asyncio.wait_for(reasons.get(), 2) == (4003, "leaving")


async def test_websocket_close_reply_is_the_other_sides(start_gateway, upstream_server) -> None:
    """The side that closes first gets the other side's reply to its close frame, code included,
    as without the gateway: the gateway replied itself at once, always 1000, so a site that
    answers a visitor's 4000 with 4000 (Node's ``ws`` echoes the code), or a visitor that
    answers the site's close with a code of its own, was heard as a plain 1000."""
    site_heard: asyncio.Queue[int | None] = asyncio.Queue()

    async def site(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoclose=False)
        await ws.prepare(request)
        if request.path == "/site-closes":
            await ws.close(code=4001, message=b"site bye")  # waits for the visitor's reply
            site_heard.put_nowait(ws.close_code)
            return ws
        msg = await ws.receive()
        assert msg.type == WSMsgType.CLOSE
        await ws.close(code=msg.data + 10, message=b"as you wish")
        return ws

    gw = await start_gateway(await upstream_server(app_of(site)))
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(gw.url + "/visitor-closes", autoclose=False)
        await ws.close(code=4000, message=b"visitor bye")  # waits for the site's reply
        assert ws.close_code == 4010

        ws = await session.ws_connect(gw.url + "/site-closes", autoclose=False)
        msg = await ws.receive(timeout=5)
        assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 4001, "site bye")
        await ws.close(code=4002, message=b"visitor reply")
        assert await asyncio.wait_for(site_heard.get(), 5) == 4002


async def test_websocket_upgrade_headers_reach_the_site_in_the_visitors_order(
    start_gateway, upstream_server
) -> None:
    """The upgrade's header lines reach the site in the visitor's order, as a request's do: the
    handshake's own in their places (aiohttp's client appended them after X-Forwarded-*), the
    key, subprotocols and compression offer the relay's (it offers compression because the
    visitor did: ``test_websocket_compression_is_the_sites_choice``)."""
    seen: list[list[tuple[bytes, bytes]]] = []

    async def site(request: web.Request) -> web.WebSocketResponse:
        seen.append(list(request.raw_headers))
        ws = web.WebSocketResponse(protocols=["chat"])
        await ws.prepare(request)
        await ws.receive()
        return ws

    gw = await start_gateway(await upstream_server(app_of(site)))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)
    try:
        writer.write(
            b"GET /ws HTTP/1.1\r\nHost: shop.test\r\nuser-agent: ua\r\nUpgrade: websocket\r\n"
            b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: other, chat\r\n"
            b"Sec-WebSocket-Extensions: permessage-deflate\r\nOrigin: http://shop.test\r\nCookie: a=1\r\n\r\n"
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101 ")
    finally:
        writer.close()
    names = [name for name, _ in seen[0]]
    assert names == [
        b"Host",
        b"user-agent",
        b"Upgrade",
        b"Connection",
        b"Sec-WebSocket-Key",
        b"Sec-WebSocket-Version",
        b"Sec-WebSocket-Protocol",
        b"Sec-WebSocket-Extensions",
        b"Origin",
        b"Cookie",
        b"X-Forwarded-For",
        b"X-Forwarded-Proto",
        b"X-Forwarded-Host",
    ]
    values = dict(seen[0])
    assert (values[b"Connection"], values[b"Sec-WebSocket-Protocol"]) == (
        b"keep-alive, Upgrade",
        b"other,chat",
    )


async def test_websocket_close_without_a_code_is_a_clean_close_at_the_site(
    start_gateway, upstream_server
) -> None:
    """A browser's ``ws.close()`` without arguments sends a close frame with no code (RFC 6455
    §7.1.5: "no status code", which aiohttp reports as 0). The gateway passed that 0 on as a
    code, which no endpoint may send: the site failed the connection (1002, then 1006)
    where without the gateway it saw a clean close."""
    seen: asyncio.Queue[tuple[WSMsgType, object]] = asyncio.Queue()

    async def site(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        msg = await ws.receive()
        seen.put_nowait((msg.type, msg.data))
        return ws

    gw = await start_gateway(await upstream_server(app_of(site)))
    async with gw.session.ws_connect(gw.url + "/ws") as ws:
        await ws._writer.send_frame(b"", WSMsgType.CLOSE)  # as a browser's close() without a code
        reply = await ws.receive(timeout=2)
        assert reply.type == WSMsgType.CLOSE
    msg_type, code = await asyncio.wait_for(seen.get(), 2)
    assert (msg_type, code) == (WSMsgType.CLOSE, 1000)


async def test_websocket_connection_lost_on_one_side_is_lost_on_the_other(
    start_gateway, upstream_server
) -> None:
    """A side whose connection drops without a close frame (a browser tab killed, a phone out
    of coverage; a site's process gone) is a lost connection to the other side too, as without
    the gateway (no close code: 1006), not a clean close: the site was told 1000 ("normal
    closure") of a visitor who vanished, and the visitor 1011 of a site that did."""
    site_saw: asyncio.Queue[int | None] = asyncio.Queue()

    async def site(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        try:
            async for msg in ws:
                if msg.data == "die":
                    assert request.transport is not None
                    request.transport.abort()
                    return ws
                await ws.send_str(msg.data)
        finally:
            site_saw.put_nowait(ws.close_code)
        return ws

    up = await upstream_server(app_of(site))
    gw = await start_gateway(up)
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(gw.url + "/ws")
        await ws.send_str("hi")
        assert (await ws.receive(timeout=2)).data == "hi"
        connection = ws._response.connection
        assert connection is not None and connection.transport is not None
        connection.transport.abort()  # the visitor's side drops, no close frame
        assert await asyncio.wait_for(site_saw.get(), 5) is None  # not 1000

        ws = await session.ws_connect(gw.url + "/ws")
        await ws.send_str("die")
        msg = await ws.receive(timeout=5)
        assert (msg.type, ws.close_code) == (
            WSMsgType.CLOSED,
            aiohttp.WSCloseCode.ABNORMAL_CLOSURE,
        )  # not 1011
        await asyncio.wait_for(site_saw.get(), 5)


async def test_websocket_pings_and_pongs_cross_the_gateway(start_gateway, upstream_server) -> None:
    """Pings and pongs are passed on, not answered by the gateway: a site that pings to find
    dead clients (a phone gone from the network, its connection still open) hears the
    visitor's pong or nothing, and a visitor's ping is answered by the site. The gateway
    answered both itself, so such a site never learned its visitor was gone."""
    site_got: asyncio.Queue[tuple[WSMsgType, bytes]] = asyncio.Queue()

    async def site(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        await ws.ping(b"are you there")
        async for msg in ws:
            site_got.put_nowait(
                (msg.type, bytes(msg.data) if msg.type != WSMsgType.TEXT else msg.data.encode())
            )
            if msg.type == WSMsgType.PING:
                await ws.pong(b"site:" + msg.data)
        return ws

    gw = await start_gateway(await upstream_server(app_of(site)))
    async with gw.session.ws_connect(gw.url + "/ws", autoping=False) as ws:
        msg = await ws.receive(timeout=2)
        assert (msg.type, msg.data) == (WSMsgType.PING, b"are you there")
        await ws.send_str("not answering that")
        assert await asyncio.wait_for(site_got.get(), 2) == (WSMsgType.TEXT, b"not answering that")  # no pong
        await ws.ping(b"and you?")
        msg = await ws.receive(timeout=2)
        assert (msg.type, msg.data) == (WSMsgType.PONG, b"site:and you?")
        assert await asyncio.wait_for(site_got.get(), 2) == (WSMsgType.PING, b"and you?")
        await ws.pong(b"late")
        assert await asyncio.wait_for(site_got.get(), 2) == (WSMsgType.PONG, b"late")


async def test_websocket_upgrade_redirected_by_the_site_is_passed_on(start_gateway, upstream_server) -> None:
    """A site that answers an upgrade with a redirect has it passed on to the visitor (its
    Location made public, its cookie kept), as without the gateway: not followed, which
    would have sent the visitor's headers wherever it pointed."""
    followed: list[str] = []
    origin: list[str] = []

    async def site(request: web.Request) -> web.StreamResponse:
        if request.path == "/moved":
            return web.Response(
                status=302, headers={"Location": origin[0] + "/ws?x=1", "Set-Cookie": "seen=1; Path=/"}
            )
        followed.append(request.path)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        return ws

    origin.append(await upstream_server(app_of(site)))
    gw = await start_gateway(origin[0])
    upgrade = (
        b"GET /moved HTTP/1.1\r\nHost: shop.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    reply = await raw_request(gw.proxy.port, upgrade)
    assert reply.status == 302 and reply.headers["Location"] == "http://shop.test/ws?x=1"
    assert reply.headers["Set-Cookie"] == "seen=1; Path=/" and "Upgrade" not in reply.headers
    assert followed == []


def websocket_accept(head: str) -> bytes:
    """The Sec-WebSocket-Accept a site answers to the upgrade request ``head`` (RFC 6455 §4.2.2)."""
    key = next(
        line.split(":", 1)[1].strip()
        for line in head.split("\r\n")
        if line.lower().startswith("sec-websocket-key")
    )
    return base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())


async def test_websocket_upgrade_and_redirect_keep_odd_header_bytes(start_gateway, raw_upstream) -> None:
    """A control character or a byte that is not UTF-8 in the site's 101 (or in a redirect it
    answers the upgrade with) reaches the visitor as sent: aiohttp's writer failed the
    handshake (a 500) over the one and cut the other."""
    upgrade = (
        b"Host: shop.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )

    async def site(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        if head.startswith("GET /moved"):
            writer.write(
                b"HTTP/1.1 301 Moved\x01\r\nLocation: /ws\r\nX-A: a\x01b\r\nx-lower: 1\r\n"
                b"Content-Length: 0\r\n\r\n"
            )
        else:
            accept = websocket_accept(head)
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + accept + b"\r\nX-A: a\x01b\r\nSet-Cookie: s=caf\xe9\r\n"
                b'ETag: "w"\r\n\r\n'
            )
        await writer.drain()
        await reader.read()  # until the gateway closes

    gw = await start_gateway(await raw_upstream(site))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)
    try:
        writer.write(b"GET /ws HTTP/1.1\r\n" + upgrade)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 101 ") and b"\r\nX-A: a\x01b\r\n" in head
    assert b"\r\nSet-Cookie: s=caf\xe9\r\n" in head
    assert b'\r\nETag: "w"\r\n' in head  # the name as the site spelled it (aiohttp's: Etag)
    moved = await raw_request(gw.proxy.port, b"GET /moved HTTP/1.1\r\n" + upgrade)
    assert (moved.status, moved.reason, moved.headers["X-A"]) == (301, "Moved\x01", "a\x01b")
    assert moved.headers["Location"] == "/ws"  # relative: kept as it is
    assert "x-lower" in list(moved.headers)  # names as spelled (CIMultiDict keeps them)


async def test_websocket_101_keeps_the_sites_header_order(start_gateway, raw_upstream) -> None:
    """The visitor's 101 has the site's header lines in the site's order: aiohttp's writer put
    its own handshake lines (Upgrade, Connection, Sec-WebSocket-Accept) after all the site's
    others, a repeated name's lines each in its own place."""

    async def site(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        accept = websocket_accept(head)
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nSet-Cookie: a=1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nX-Mid: m\r\nSec-WebSocket-Accept: " + accept + b"\r\n"
            b"Set-Cookie: b=2\r\nDate: Fri, 04 Dec 2026 12:00:00 GMT\r\nServer: site\r\n\r\n"
        )
        await writer.drain()
        await reader.read()

    gw = await start_gateway(await raw_upstream(site))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)
    try:
        writer.write(b"GET /ws HTTP/1.1\r\n" + UPGRADE)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    finally:
        writer.close()
    lines = head.decode("latin-1").split("\r\n")[1:-2]
    assert [line.split(":", 1)[0].lower() for line in lines] == [
        "set-cookie",
        "upgrade",
        "connection",
        "x-mid",
        "sec-websocket-accept",
        "set-cookie",
        "date",
        "server",
    ]
    assert (lines[0], lines[5], lines[6]) == (
        "Set-Cookie: a=1",
        "Set-Cookie: b=2",
        "Date: Fri, 04 Dec 2026 12:00:00 GMT",
    )


async def test_websocket_upgrade_keeps_the_sites_headers(start_gateway, upstream_server) -> None:
    """A cookie (sticky session, auth) or any header the site sets on its 101 reaches the
    visitor; the gateway adds no Server header of its own."""

    class Unnamed(web.WebSocketResponse):  # a site that sends no Server header
        async def _prepare_headers(self) -> None:
            await super()._prepare_headers()
            self.headers.popall("Server")

    async def site(request: web.Request) -> web.WebSocketResponse:
        ws = Unnamed()
        ws.headers["Set-Cookie"] = "sticky=node7; Path=/"
        ws.headers["X-WS-Origin"] = "site"
        await ws.prepare(request)
        await ws.send_str("hello")
        await ws.receive()
        return ws

    gw = await start_gateway(await upstream_server(app_of(site)))
    async with gw.session.ws_connect(gw.url + "/ws") as ws:
        assert (await ws.receive(timeout=2)).data == "hello"
        headers = ws._response.headers
        assert (headers["Set-Cookie"], headers["X-WS-Origin"]) == ("sticky=node7; Path=/", "site")
        assert "Server" not in headers and headers["Upgrade"].lower() == "websocket"
        assert "Content-Type" not in headers  # a 101 has no body: none of aiohttp's either
        assert len(headers.getall("Sec-WebSocket-Accept")) == 1


async def test_websocket_subprotocols_are_the_sites_choice_and_log_no_address(
    start_gateway, upstream_server, caplog: pytest.LogCaptureFixture
) -> None:
    """The visitor gets the subprotocol the site chose, or none when it chose none. aiohttp
    logged a warning naming the visitor's address each time its side saw no overlap: on the
    handshake check of every upgrade that offered a subprotocol, and again when the site
    declined them all. No log line may hold a visitor's address."""

    async def site(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=["chat.v2"])
        await ws.prepare(request)
        await ws.send_str(ws.ws_protocol or "none")
        await ws.receive()
        return ws

    gw = await start_gateway(await upstream_server(app_of(site)))
    chosen = []
    with caplog.at_level(logging.DEBUG):
        for offered in (["chat.v1", "chat.v2"], ["other"]):
            async with gw.session.ws_connect(gw.url + "/ws", protocols=offered) as ws:
                chosen.append(((await ws.receive(timeout=2)).data, ws.protocol))
    assert chosen == [("chat.v2", "chat.v2"), ("none", None)]
    # Both upstream and gateway run here; the site's own access log (aiohttp.access) is not ours.
    leaks = [
        r.getMessage() for r in caplog.records if r.name != "aiohttp.access" and "127.0.0.1" in r.getMessage()
    ]
    assert leaks == []


async def test_websocket_compression_is_the_sites_choice(start_gateway, upstream_server) -> None:
    """The visitor's ``permessage-deflate`` offer is accepted only when the site accepts it:
    the gateway accepted it whatever the site answered, so a site that keeps its messages
    uncompressed (a secret beside text the visitor chose, as in BREACH; zlib's memory per
    connection) had them compressed to the visitor anyway. Messages cross both ways either way."""

    async def site(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=request.path == "/deflate")
        await ws.prepare(request)
        await ws.send_str("hello " * 50)
        message = await ws.receive()
        await ws.send_str("echo " + message.data)
        await ws.receive()
        return ws

    gw = await start_gateway(await upstream_server(app_of(site)))
    got = {}
    for path in ("/deflate", "/plain"):
        async with gw.session.ws_connect(gw.url + path, compress=15) as ws:
            first = (await ws.receive(timeout=2)).data
            await ws.send_str("x" * 300)
            got[path] = (ws.compress, first == "hello " * 50, (await ws.receive(timeout=2)).data)
    assert got == {"/deflate": (15, True, "echo " + "x" * 300), "/plain": (0, True, "echo " + "x" * 300)}
    async with gw.session.ws_connect(gw.url + "/deflate") as ws:  # no offer: none, as before
        assert (ws.compress, (await ws.receive(timeout=2)).data) == (0, "hello " * 50)


UPGRADE = (
    b"Host: shop.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@pytest.mark.parametrize(
    ("path", "status", "header", "body"),
    [
        ("/ws403", 403, ("X-Why", "banned"), b"go away"),
        ("/ws401", 401, ("WWW-Authenticate", 'Bearer realm="chat"'), b"log in first"),
        ("/ws200", 200, ("Set-Cookie", "seen=1; Path=/"), b"<p>no socket here</p>"),
        ("/ws426", 426, ("X-Why", "old"), b""),
    ],
)
async def test_websocket_refused_upstream_passes_its_answer_on(
    start_gateway, upstream_server, path: str, status: int, header: tuple[str, str], body: bytes
) -> None:
    """A site that answers an upgrade with anything but a 101 has that answer reach the visitor
    as it came — status, headers, body — as without the gateway: it answered a 403 or 401 with
    its neutral page instead of the site's (losing a 401's WWW-Authenticate), and any status
    that was no error (a page answered with 200) with a 502."""

    async def site(request: web.Request) -> web.Response:
        return web.Response(status=int(path[3:]), body=body, headers=[header], content_type="text/x-site")

    up = await upstream_server(app_of(site))
    gw = await start_gateway(up)
    direct = await raw_request(
        int(up.rsplit(":", 1)[1]), b"GET " + path.encode() + b" HTTP/1.1\r\n" + UPGRADE
    )
    reply = await raw_request(gw.proxy.port, b"GET " + path.encode() + b" HTTP/1.1\r\n" + UPGRADE)
    assert (reply.status, reply.body) == (direct.status, direct.body) == (status, body)
    assert reply.headers.getall(header[0]) == [header[1]]
    assert reply.headers["Content-Type"] == "text/x-site"
    assert [k for k in reply.headers if k.lower() != "date"] == [
        k for k in direct.headers if k.lower() != "date"
    ]


async def test_websocket_refusal_body_streams_to_the_visitor(start_gateway, raw_upstream) -> None:
    """A refusal with a chunked body (a site behind a framework that streams its error pages)
    reaches the visitor whole, its first bytes before the site has finished."""
    more = asyncio.Event()

    async def site(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await asyncio.wait_for(more.wait(), 5)
        writer.write(b"4\r\nlast\r\n0\r\n\r\n")
        await writer.drain()
        await reader.read()

    gw = await start_gateway(await raw_upstream(site))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)
    try:
        writer.write(b"GET /ws HTTP/1.1\r\n" + UPGRADE)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"first\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 403 Forbidden\r\n")
        more.set()
        rest = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)
        assert rest == b"4\r\nlast\r\n0\r\n\r\n"
    finally:
        writer.close()


async def test_websocket_refusal_body_of_no_length_reaches_the_visitor_whole(
    start_gateway, raw_upstream
) -> None:
    """A refusal whose body has no length (no Content-Length, not chunked: it ends when the
    site closes) reaches the visitor whole: aiohttp's WebSocket client read such a body as
    empty, so the visitor got the site's status and headers over an empty page."""
    page = b"<p>sign in first</p>" * 500

    async def site(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n")
        for start in range(0, len(page), 4000):
            writer.write(page[start : start + 4000])
            await writer.drain()

    gw = await start_gateway(await raw_upstream(site))
    reply = await raw_request(gw.proxy.port, b"GET /ws HTTP/1.1\r\n" + UPGRADE)
    assert (reply.status, reply.headers["Content-Type"], reply.body) == (403, "text/html", page)


@pytest.mark.parametrize("ending", ["reset", "stall"])
async def test_websocket_refusal_body_of_no_length_cut_short_is_not_delivered_whole(
    start_gateway, raw_upstream, ending: str
) -> None:
    """Such a body that the site's connection breaks (a reset) or that stalls past
    ``proxy.read_timeout`` reaches the visitor broken (no last chunk, the connection cut), as
    a forwarded answer's does, never as a shorter page that looks whole."""

    async def site(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/html\r\n\r\n<p>sign in")
        await writer.drain()
        if ending == "stall":
            await reader.read()  # until the gateway gives up and closes
            return
        await asyncio.sleep(0.2)  # the gateway has read it (and sent the head) by then
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # RST, not FIN

    gw = await start_gateway(await raw_upstream(site), "[proxy]\nread_timeout = 0.5\n")
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)
    try:
        writer.write(b"GET /ws HTTP/1.1\r\n" + UPGRADE)
        with pytest.raises((asyncio.IncompleteReadError, ConnectionResetError)):
            await asyncio.wait_for(read_response(reader), 5)  # chunked: it stops before the last
    finally:
        writer.transport.abort()


async def test_websocket_bad_client_handshake_is_not_forwarded(start_gateway, upstream_server) -> None:
    calls: list[str] = []

    async def page(request: web.Request) -> web.Response:
        calls.append(request.path)
        return web.Response(text="ok")

    gw = await start_gateway(await upstream_server(app_of(page)))
    reply = await raw_request(
        gw.proxy.port,
        b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n",
    )
    assert reply.status == 400
    assert calls == []


@pytest.mark.parametrize(
    ("strip", "target", "referer"),
    [
        ("forward", "/ws?room=1", "http://shop.test/chat?a=1"),
        ("redirect", "/ws?room=1", "http://shop.test/chat?a=1"),  # a WebSocket cannot follow a 302
        (
            "off",
            "/ws?utm_source=news&room=1&gclid=abc&creator_id=c7",
            "http://shop.test/chat?utm_source=x&a=1",
        ),
    ],
)
async def test_websocket_url_loses_its_tracking_parameters(
    start_gateway, upstream_server, strip: str, target: str, referer: str
) -> None:
    """Tracking pairs leave a WebSocket URL (and a same-site Referer) as they leave any other
    request's, by the campaign addon's rules; no touchpoint is recorded for the upgrade (the
    page that opened it was the landing)."""
    seen: list[tuple[str, str | None]] = []

    async def site(request: web.Request) -> web.WebSocketResponse:
        seen.append((request.raw_path, request.headers.get("Referer")))
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str("hello")
        await ws.receive()
        return ws

    gw = await start_gateway(await upstream_server(app_of(site)), f'[proxy]\nstrip = "{strip}"\n')
    async with gw.session.ws_connect(
        gw.url + "/ws?utm_source=news&room=1&gclid=abc&creator_id=c7",
        headers={"Host": "shop.test", "Referer": "http://shop.test/chat?utm_source=x&a=1"},
    ) as ws:
        assert (await ws.receive(timeout=2)).data == "hello"
    assert seen == [(target, referer)]
    assert not gw.gateway.metrics.registry.get_sample_value("gateway_touchpoints_total")


# -- 7. HEAD, 204, 304 ---------------------------------------------------------------------------


async def bodiless_upstream(upstream_server) -> str:
    async def page(request: web.Request) -> web.Response:
        if request.path == "/empty":
            return web.Response(status=204, headers={"X-Done": "1"})
        if request.headers.get("If-None-Match") == '"v1"':
            return web.Response(status=304, headers={"ETag": '"v1"'})
        return web.Response(body=b"x" * 1234, headers={"ETag": '"v1"'})

    return await upstream_server(app_of(page))


async def head_then_get(gw):
    """HEAD /page, then GET /page on the same visitor connection: the GET's answer must start
    right after the HEAD's head (no stray body bytes between them)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)
    try:
        writer.write(b"HEAD /page HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        head = await read_response(reader, head=True)
        writer.write(b"GET /page HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        return head, await read_response(reader)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_head_keeps_content_length_without_body(start_gateway, upstream_server) -> None:
    gw = await start_gateway(await bodiless_upstream(upstream_server))
    head, get = await head_then_get(gw)
    assert (head.status, head.headers["Content-Length"], head.headers["ETag"]) == (200, "1234", '"v1"')
    assert (get.status, get.body) == (200, b"x" * 1234)


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        (b"GET /empty HTTP/1.1\r\nHost: shop.test\r\n\r\n", 204),
        (b'GET /page HTTP/1.1\r\nHost: shop.test\r\nIf-None-Match: "v1"\r\n\r\n', 304),
    ],
    ids=["204", "304"],
)
async def test_bodiless_statuses(start_gateway, upstream_server, request_head: bytes, status: int) -> None:
    gw = await start_gateway(await bodiless_upstream(upstream_server))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)
    try:
        writer.write(request_head)
        first = await read_response(reader)
        writer.write(b"GET /page HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        after = await read_response(reader)
    finally:
        writer.close()
        await writer.wait_closed()
    assert first.status == status
    assert "Transfer-Encoding" not in first.headers
    if status == 204:
        assert "Content-Length" not in first.headers
        assert first.headers["X-Done"] == "1"
    else:
        assert first.headers["ETag"] == '"v1"'
    assert (after.status, after.body) == (200, b"x" * 1234)


async def test_304_keeps_its_content_length(start_gateway, raw_upstream) -> None:
    """RFC 9110 §8.6: a 304 may carry the Content-Length its 200 would have (a cache updates
    its stored one from it); aiohttp's writer dropped it. No body follows either way."""

    async def origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            line = await read_head(reader)
            if line.startswith("GET /cached"):
                writer.write(
                    b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 1234\r\nX-After: 1\r\n\r\n'
                )
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    gw = await start_gateway(await raw_upstream(origin))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)
    try:
        writer.write(b'GET /cached HTTP/1.1\r\nHost: shop.test\r\nIf-None-Match: "v1"\r\n\r\n')
        first = await read_response(reader)
        writer.write(b"GET /next HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        after = await read_response(reader)  # the 304 had no body: the next answer starts at once
    finally:
        writer.close()
        await writer.wait_closed()
    assert (first.status, first.headers.getall("Content-Length"), first.body) == (304, ["1234"], b"")
    assert [name for name in first.headers if name in ("ETag", "Content-Length", "X-After")] == [
        "ETag",
        "Content-Length",
        "X-After",
    ]  # in its place
    assert "Transfer-Encoding" not in first.headers
    assert (after.status, after.body) == (200, b"ok")


async def test_head_answer_with_stray_body_bytes_keeps_its_headers(start_gateway, raw_upstream) -> None:
    """A site that answers HEAD with a body too, in the same write: the visitor gets the
    headers (as it would from the site itself), the stray bytes are dropped, and that upstream
    connection, out of step, is not used again. It was a 502: aiohttp's parser read the bytes
    as the next answer, failed, and lost the HEAD's answer with it."""
    connections: list[int] = []

    async def origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections))
        while True:
            line = await read_head(reader)
            if line.startswith("HEAD"):
                writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: "v"\r\n\r\nhello')
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    gw = await start_gateway(await raw_upstream(origin))
    head, get = await head_then_get(gw)
    assert (head.status, head.headers["Content-Length"], head.headers["ETag"]) == (200, "5", '"v"')
    assert (get.status, get.body) == (200, b"ok")
    assert connections == [0, 1]  # the GET went on a new upstream connection


@pytest.mark.parametrize("odd", [False, True], ids=["plain", "as-sent"])
async def test_response_header_names_reach_the_visitor_as_spelled(
    start_gateway, raw_upstream, odd: bool
) -> None:
    """Header names go out as the site spelled them (``ETag``, ``content-md5``), not in aiohttp's
    spelling of the names it knows (``Etag``, ``Content-MD5``); names are case-insensitive, but a
    client or a test that matches them byte for byte should see the site's. The same for a 304
    and for an answer whose values are written as sent (``odd``)."""
    names = [b"ETag", b"content-md5", b"X-Custom-HEADER", b"WWW-Authenticate", b"cache-control"]
    value = b"a\x01b" if odd else b"v"
    block = b"".join(name + b": " + value + b"\r\n" for name in names)

    async def origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            line = await read_head(reader)
            if "/304" in line:
                writer.write(b"HTTP/1.1 304 Not Modified\r\n" + block + b"\r\n")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\n" + block + b"content-length: 2\r\n\r\nok")
            await writer.drain()

    gw = await start_gateway(await raw_upstream(origin))
    for target, status in ((b"/page", b"200"), (b"/304", b"304")):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)
        try:
            writer.write(b"GET " + target + b" HTTP/1.1\r\nHost: shop.test\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        finally:
            writer.close()
            await writer.wait_closed()
        assert head.startswith(b"HTTP/1.1 " + status)
        sent = [line.split(b":", 1)[0] for line in head.split(b"\r\n")[1:-2]]
        assert [name for name in sent if name.lower() in {n.lower() for n in names}] == names
        if status == b"200":
            assert b"content-length" in sent


# -- 8. upstream failures and limits -------------------------------------------------------------


async def test_upstream_down_gives_502_quickly(start_gateway) -> None:
    gw = await start_gateway(f"http://127.0.0.1:{free_port()}")
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with gw.session.get(gw.url + "/") as resp:
        body = await resp.read()
        assert resp.status == 502
        assert resp.headers["Content-Type"].startswith("text/html")
        assert "Server" not in resp.headers
    assert loop.time() - start < 2
    assert b"502" in body and len(body) < 2048


async def test_a_landing_the_site_could_not_answer_still_sets_the_visitor_s_cookie(start_gateway) -> None:
    """The landing is recorded whatever the site answers; its 502 page carried no cookie, so the
    reload once the site was back came as a visitor never seen, a second arrival of the click."""
    gw = await start_gateway(f"http://127.0.0.1:{free_port()}")
    async with gw.session.get(gw.url + "/?utm_source=news&utm_campaign=launch") as resp:
        assert resp.status == 502
        cookie = resp.cookies["gw_vid"].value
    async with gw.session.get(
        gw.url + "/?utm_source=news&utm_campaign=launch", headers={"Cookie": f"gw_vid={cookie}"}
    ) as resp:
        assert resp.status == 502  # the same visitor: its reload, folded (and refreshing nothing)
    items = (await gw.api("/api/touchpoints"))["items"]
    assert len(items) == 1, items  # the reload folded into the one arrival, of one visitor
    async with gw.session.get(gw.url + "/page") as resp:  # no landing, no new visitor's page load
        assert resp.status == 502


async def test_slow_upstream_gives_504_within_timeout(start_gateway, upstream_server) -> None:
    release = asyncio.Event()

    async def stuck(request: web.Request) -> web.Response:
        await asyncio.wait_for(release.wait(), 5)
        return web.Response(text="too late")

    gw = await start_gateway(await upstream_server(app_of(stuck)), "[proxy]\nread_timeout = 0.5\n")
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        async with gw.session.get(gw.url + "/") as resp:
            assert resp.status == 504
            assert resp.headers["Content-Type"].startswith("text/html")
    finally:
        release.set()
    assert 0.4 < loop.time() - start < 1.5


async def test_an_early_answer_that_streams_past_read_timeout_is_not_cut(start_gateway, raw_upstream) -> None:
    """A site that answers an upload at once (a 413 page, say) without reading it, then sends
    its answer slowly, a chunk every 0.2 s for longer than ``read_timeout``: it is not silent.
    The upload's wait for the site to take more must not end the answer it already gives."""
    chunks = 8

    async def early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 413 Payload Too Large\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        for n in range(chunks):
            writer.write(b"6\r\npart%d\n\r\n" % n)
            await writer.drain()
            await asyncio.sleep(0.2)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        with contextlib.suppress(TimeoutError):
            await asyncio.sleep(1)

    gw = await start_gateway(await raw_upstream(early), "[proxy]\nread_timeout = 0.5\n")
    size = 32 * MB
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)

    async def send() -> None:
        writer.write(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size)
        with contextlib.suppress(ConnectionError):
            for _ in range(size // MB):
                writer.write(b"u" * MB)
                await writer.drain()

    sending = asyncio.create_task(send())
    try:
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
            body = b""
            while b"0\r\n\r\n" not in body:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                body += chunk
    finally:
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)
        writer.transport.abort()
    assert b" 413 " in head.split(b"\r\n")[0]
    assert all(b"part%d" % n in body for n in range(chunks)), body
    assert body.endswith(b"0\r\n\r\n")


@pytest.mark.parametrize(
    "framing", [b"Content-Length: %d", b"Transfer-Encoding: chunked"], ids=["length", "chunked"]
)
async def test_upstream_that_stops_reading_an_upload_gives_504_within_timeout(
    start_gateway, raw_upstream, framing: bytes
) -> None:
    """A site that takes the request head, then neither reads the body nor answers (a stuck
    worker): once the socket buffers fill, that is upstream silence like any other — 504 within
    ``read_timeout``, not a request (and an upstream connection) held for ever."""
    release = asyncio.Event()

    async def stuck(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(release.wait(), 10)

    gw = await start_gateway(await raw_upstream(stuck), "[proxy]\nread_timeout = 0.5\n")
    size = 32 * MB  # far more than the socket buffers between the gateway and the site hold
    head = b"POST /upload HTTP/1.1\r\nHost: t\r\n" + framing.replace(b"%d", b"%d" % size) + b"\r\n\r\n"
    chunked = b"chunked" in framing
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)
    loop = asyncio.get_running_loop()

    async def send() -> None:
        writer.write(head)
        for _ in range(size // MB):
            writer.write(b"100000\r\n" + b"u" * MB + b"\r\n" if chunked else b"u" * MB)
            await writer.drain()
        writer.write(b"0\r\n\r\n" if chunked else b"")

    sending = asyncio.create_task(send())
    start = loop.time()
    try:
        async with asyncio.timeout(5):
            status_line = await reader.readline()
        elapsed = loop.time() - start
    finally:
        release.set()
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)
        writer.transport.abort()
    assert b" 504 " in status_line, status_line
    assert elapsed < 2.5, f"504 after {elapsed:.2f}s"
    errors = gw.gateway.metrics.registry.get_sample_value(
        "gateway_upstream_errors_total", {"kind": "timeout"}
    )
    assert errors == 1.0


async def oversize_upstream(upstream_server, received: list[str]) -> str:
    """Records "started", then "complete:<n>" or "error:<why>" for each request it reads."""

    async def sink(request: web.Request) -> web.Response:
        received.append("started")
        try:
            body = await request.read()
        except BaseException as err:  # a lost connection may also cancel the handler
            received.append(f"error:{type(err).__name__}")
            raise
        received.append(f"complete:{len(body)}")
        return web.Response(text="ok")

    return await upstream_server(app_of(sink))


def not_delivered_whole(received: list[str]) -> bool:
    """Either the upstream was never called, or its one body read failed."""
    return received == [] or (len(received) == 2 and received[1].startswith("error:"))


async def settled(received: list[str]) -> list[str]:
    """``received`` once every started upstream request has ended (bounded wait)."""
    for _ in range(100):
        if received.count("started") * 2 == len(received):
            break
        await asyncio.sleep(0.02)
    return received


async def test_oversize_content_length_gives_413(start_gateway, upstream_server) -> None:
    received: list[str] = []
    gw = await start_gateway(
        await oversize_upstream(upstream_server, received), "[proxy]\nmax_request_body = 1000\n"
    )
    async with gw.session.post(gw.url + "/up", data=b"x" * 2000) as resp:
        assert resp.status == 413
    async with gw.session.post(gw.url + "/up", data=b"x" * 1000) as resp:
        assert resp.status == 200
    assert received == ["started", "complete:1000"]


async def test_oversize_body_announced_with_expect_is_refused_before_100_continue(
    start_gateway, upstream_server
) -> None:
    """A client that asks before sending (``Expect: 100-continue``) a body over the limit gets
    the 413 at once, not a ``100 Continue`` inviting an upload that would be refused; one
    within the limit is invited and forwarded."""
    received: list[str] = []
    gw = await start_gateway(
        await oversize_upstream(upstream_server, received), "[proxy]\nmax_request_body = 1000\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)
    try:
        writer.write(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\nExpect: 100-continue\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 413 "), head
        assert b"connection: close" in head.lower()
    finally:
        writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)
    try:
        writer.write(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"x" * 10)
        await writer.drain()
        answer = await read_response(reader)
        assert answer.status == 200
    finally:
        writer.close()
    assert received == ["started", "complete:10"]


EXPECTING = (
    "POST {target} HTTP/1.1\r\nHost: t\r\nUser-Agent: {agent}\r\nContent-Length: 10\r\n"
    "Expect: 100-continue\r\n"
)
BROWSER_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:144.0) Gecko/20100101 Firefox/144.0"


async def first_answer_to_expect(port: int, target: str, agent: str, extra: str = "") -> bytes:
    """The first head a client that announced a body with ``Expect: 100-continue`` reads."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write((EXPECTING.format(target=target, agent=agent) + extra + "\r\n").encode())
        await writer.drain()
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    finally:
        writer.close()


async def test_a_request_the_gateway_refuses_itself_gets_no_100_continue(
    start_gateway, upstream_server
) -> None:
    """The README promises an upload refused before it is sent no ``100 Continue``: a blocked
    bot's upload (``bots.on_block = "block"``) and one below the reserved prefix that no endpoint
    serves were invited with a ``100 Continue`` and refused once the client had sent the whole
    body for nothing. They are answered at once, the connection closed (the body is never read);
    a request the site gets is still invited, and a header over ``proxy.max_header_size`` is
    refused by the parser before any invitation."""
    received: list[str] = []
    gw = await start_gateway(
        await oversize_upstream(upstream_server, received),
        "[bots]\non_block = 'block'\n[proxy]\nmax_header_size = 2000\n",
    )
    port = gw.proxy.port
    for target, agent, status in (
        ("/up", "curl/8.5.0", b"403"),
        ("/_gw/nothing", BROWSER_AGENT, b"404"),
        ("/_GW/events", BROWSER_AGENT, b"404"),
    ):
        head = await first_answer_to_expect(port, target, agent)
        assert head.startswith(b"HTTP/1.1 " + status + b" "), (target, head)
        assert b"connection: close" in head.lower(), head
    head = await first_answer_to_expect(port, "/up", BROWSER_AGENT, f"Cookie: {'a' * 3000}\r\n")
    assert head.startswith(b"HTTP/1.1 431 "), head
    assert await first_answer_to_expect(port, "/up", BROWSER_AGENT) == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert "complete:10" not in received


async def test_oversize_chunked_body_gives_413(start_gateway, upstream_server) -> None:
    received: list[str] = []
    gw = await start_gateway(
        await oversize_upstream(upstream_server, received), "[proxy]\nmax_request_body = 1000\n"
    )

    async def body() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"x" * 600
            await asyncio.sleep(0.05)

    try:
        async with gw.session.post(gw.url + "/up", data=body()) as resp:
            assert resp.status == 413
    except aiohttp.ClientError:
        pass  # the gateway may also cut the connection while the client is still sending
    # The upstream may have started reading, but it never got a whole (or oversize) body.
    assert not_delivered_whole(await settled(received)), received


async def test_oversize_chunked_body_raw_gives_413(start_gateway, upstream_server) -> None:
    received: list[str] = []
    gw = await start_gateway(
        await oversize_upstream(upstream_server, received), "[proxy]\nmax_request_body = 1000\n"
    )
    chunk = b"258\r\n" + b"x" * 600 + b"\r\n"
    reply = await raw_request(
        gw.proxy.port,
        b"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 5 + b"0\r\n\r\n",
    )
    assert reply.status == 413
    assert not_delivered_whole(await settled(received)), received


# -- 9. request target ---------------------------------------------------------------------------


async def targets_seen(start_gateway, upstream_server, toml: str, targets: list[bytes]) -> list[str]:
    seen: list[str] = []

    async def page(request: web.Request) -> web.Response:
        seen.append(request.raw_path)
        return web.Response(text="ok")

    gw = await start_gateway(await upstream_server(app_of(page)), toml)
    for target in targets:
        reply = await raw_request(gw.proxy.port, b"GET " + target + b" HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        assert reply.status == 200, target
    return seen


@pytest.mark.parametrize(
    ("target", "upstream"),
    [
        ("/a%2Fb;x=1?q=a+b&q=c&utm_source=x&z=%zz&k", "/a%2Fb;x=1?q=a+b&q=c&z=%zz&k"),
        ("/p?utm_source=x&a=1", "/p?a=1"),
        ("/p?a=1&UTM_Medium=y", "/p?a=1"),
        ("/p?utm_source=x&gclid=abc", "/p"),
        ("/p?a=%2B%26&utm_source=x&b=%E2%82%AC&c==&d", "/p?a=%2B%26&b=%E2%82%AC&c==&d"),
        ("/p?utm_source=%zz&keep=%", "/p?keep=%"),
        ("//double//slash/%7e/./../x?y", "//double//slash/%7e/./../x?y"),
        ("/a%2Fb;x=1?q=a+b&&z=%zz&", "/a%2Fb;x=1?q=a+b&&z=%zz&"),
        ("/p?=&==&%", "/p?=&==&%"),
        # An absolute-form target goes as its path and query, byte for byte too (an empty query
        # lost its "?": the target was read back through yarl).
        ("http://shop.test/p?", "/p?"),
        ("HTTP://SHOP.TEST:80/a%2Fb;c/../d?q=%zz&&utm_source=x#f", "/a%2Fb;c/../d?q=%zz&"),
        # A query left with nothing but separators goes with its "?", as one left empty does:
        # "/p?&" means "/p" to every query parser, but is another cache key and address.
        ("/p?utm_source=x&&", "/p"),
        ("/p?&&utm_source=x&&gclid=1&", "/p"),
        ("/p?&utm_source=x&=", "/p?&="),
        ("/p?&&", "/p?&&"),  # nothing stripped: the target is left alone
        # Spellings seen in the wild: every copy and spelling of a tracking pair goes, nothing else.
        ("/p?UTM_SOURCE=X&Utm_Medium=e&utm%5Fcampaign=c&a=1", "/p?a=1"),
        ("/p?utm_source=a&k=%2F&utm_source=b&utm_source=", "/p?k=%2F"),
        ("/p?a=x+y&utm_campaign=a+b%20c&utm_term=a%26b%3Dc&b=%20", "/p?a=x+y&b=%20"),
        ("/p?utm_id=7&utm_source_platform=x&utm_creative_format=y&utm_marketing_tactic=z&k", "/p?k"),
        ("/p?ScCid=1&epik=2&rdt_cid=3&qclid=4&irclickid=5&twclid=6&li_fat_id=7&a", "/p?a"),
        # Other tools' own parameters stay: GA's cross-domain linker, Mailchimp's subscriber ID,
        # HubSpot's, share IDs, Google's organic srsltid, and generic names sites use themselves.
        (
            "/p?_gl=1*1x*_ga*MTA.&_ga=2.1&mc_cid=c&mc_eid=e&_hsenc=p2&_hsmi=9&srsltid=Af&igshid=i"
            "&si=s&ref=r&via=v&aff_id=3",
            "/p?_gl=1*1x*_ga*MTA.&_ga=2.1&mc_eid=e&_hsenc=p2&_hsmi=9&srsltid=Af&igshid=i&si=s&ref=r"
            "&via=v&aff_id=3",
        ),
    ],
)
async def test_target_goes_upstream_byte_for_byte(
    start_gateway, upstream_server, target: str, upstream: str
) -> None:
    seen = await targets_seen(start_gateway, upstream_server, "", [target.encode()])
    assert seen == [upstream]


async def test_options_asterisk_reaches_the_site(start_gateway, raw_upstream) -> None:
    """``OPTIONS *`` (RFC 9112 §3.2.4: about the server, no path) goes to the site as sent and
    its answer comes back; it was a 404 of the gateway's router, whose routes are all paths.
    The asterisk with another method is no request at all: refused, not forwarded."""
    lines: list[bytes] = []

    async def origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            lines.append((await reader.readuntil(b"\r\n\r\n")).split(b"\r\n", 1)[0])
            writer.write(b"HTTP/1.1 200 OK\r\nAllow: GET, HEAD, OPTIONS\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()

    gw = await start_gateway(await raw_upstream(origin))
    reply = await raw_request(gw.proxy.port, b"OPTIONS * HTTP/1.1\r\nHost: shop.test\r\n\r\n")
    assert (reply.status, reply.headers.get("Allow")) == (200, "GET, HEAD, OPTIONS")
    refused = await raw_request(gw.proxy.port, b"GET * HTTP/1.1\r\nHost: shop.test\r\n\r\n")
    assert 400 <= refused.status < 500
    assert lines == [b"OPTIONS * HTTP/1.1"]


async def test_absolute_form_without_a_path_reaches_the_sites_root(start_gateway, raw_upstream) -> None:
    """An absolute-form target without a path (``GET http://shop.test``) means ``/`` (RFC 9110
    §4.2.3), query kept and tracking pairs stripped, the landing recorded as ``/``'s; an
    ``OPTIONS`` one without a query either means ``*`` (RFC 9112 §3.2.4). Both were a 404 of
    the gateway's: aiohttp's router found no path segment to match. One naming another host
    than ``Host`` is refused as one with a path is."""
    lines: list[bytes] = []

    async def origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            lines.append((await reader.readuntil(b"\r\n\r\n")).split(b"\r\n", 1)[0])
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nsite")
            await writer.drain()

    gw = await start_gateway(await raw_upstream(origin))
    sent = [
        b"GET http://shop.test",
        b"GET HTTP://SHOP.TEST:80?q=%zz&utm_source=news&utm_campaign=spring&a",
        b"OPTIONS http://shop.test",
        b"OPTIONS http://shop.test?q=1",
    ]
    for line in sent:
        reply = await raw_request(gw.proxy.port, line + b" HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        assert (reply.status, reply.body) == (200, b"site"), line
    refused = await raw_request(gw.proxy.port, b"GET http://evil.test HTTP/1.1\r\nHost: shop.test\r\n\r\n")
    assert (refused.status, refused.body) == (400, pages.error_page(400).body)
    assert lines == [
        b"GET / HTTP/1.1",
        b"GET /?q=%zz&a HTTP/1.1",
        b"OPTIONS * HTTP/1.1",
        b"OPTIONS /?q=1 HTTP/1.1",
    ]
    async with aiosqlite.connect(gw.gateway.settings.store_path) as db:
        landed = await db.execute_fetchall("SELECT campaign, landing_path FROM touchpoints")
    assert [tuple(row) for row in landed] == [("spring", "/")]


@pytest.mark.parametrize(
    ("target", "host", "forwarded"),
    [
        (b"http://shop.test/p?a=1&utm_source=x", b"shop.test", True),
        (b"http://SHOP.test:80/p", b"shop.test", True),
        (b"https://shop.test/p", b"shop.test:443", True),
        (b"http://[::1]:8080/p", b"[::1]:8080", True),
        (b"http://evil.test/p", b"shop.test", False),
        (b"http://shop.test:8080/p", b"shop.test", False),
        (b"https://shop.test/p", b"shop.test:80", False),
        (b"http://shop.test/p", b"evil.test", False),
        (b"http://shop.test@evil.test/p", b"evil.test", False),
    ],
)
async def test_absolute_form_naming_another_host_than_host_is_refused(
    start_gateway, upstream_server, target: bytes, host: bytes, forwarded: bool
) -> None:
    """``GET http://a/ HTTP/1.1`` with ``Host: b``: RFC 9112 §3.2.2 has the server take the
    target's authority, a cache in front of us may well have keyed on ``Host`` — two answers
    to which site is asked, so the request is refused rather than forwarded under either."""
    seen: list[tuple[str, str | None]] = []

    async def page(request: web.Request) -> web.Response:
        seen.append((request.raw_path, request.headers.get("Host")))
        return web.Response(text="ok")

    gw = await start_gateway(await upstream_server(app_of(page)))
    reply = await raw_request(gw.proxy.port, b"GET " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    if forwarded:
        assert reply.status == 200
        assert seen == [("/p?a=1" if b"?" in target else "/p", host.decode())]
    else:
        assert (reply.status, reply.body, seen) == (400, pages.error_page(400).body, [])


async def test_empty_query_pieces_survive_stripping(start_gateway, upstream_server) -> None:
    seen = await targets_seen(
        start_gateway, upstream_server, "", [b"/a%2Fb;x=1?q=a+b&q=c&utm_source=x&z=%zz&&k"]
    )
    assert seen == ["/a%2Fb;x=1?q=a+b&q=c&z=%zz&&k"]


async def test_query_emptied_by_stripping_loses_its_question_mark(start_gateway, upstream_server) -> None:
    # A received empty query ("/p?") also arrives as "/p": yarl, under aiohttp's client, has no
    # way to say "empty query". Equivalent for every server we know; noted, not tested.
    seen = await targets_seen(start_gateway, upstream_server, "", [b"/p?utm_source=x", b"/p?gclid=1&"])
    assert seen == ["/p", "/p"]


async def test_strip_off_forwards_everything(start_gateway, upstream_server) -> None:
    target = "/a%2Fb;x=1?q=a+b&utm_source=x&z=%zz&&k"
    seen = await targets_seen(start_gateway, upstream_server, '[proxy]\nstrip = "off"\n', [target.encode()])
    assert seen == [target]


async def test_strip_redirect_answers_302_without_upstream(start_gateway, upstream_server) -> None:
    seen: list[str] = []

    async def page(request: web.Request) -> web.Response:
        seen.append(request.raw_path)
        return web.Response(text="ok")

    gw = await start_gateway(await upstream_server(app_of(page)), '[proxy]\nstrip = "redirect"\n')
    async with gw.session.get(
        gw.url + "/landing?utm_source=news&keep=1", headers={"Host": "shop.test"}, allow_redirects=False
    ) as resp:
        assert resp.status == 302
        assert resp.headers["Location"] == "/landing?keep=1"
        assert "Server" not in resp.headers
        assert any(c.startswith("gw_vid=v1.") for c in resp.headers.getall("Set-Cookie"))
    assert seen == []
    # A path that starts with two slashes stays a path on this site: "//evil.example/" alone
    # would send the browser to evil.example (an open redirect on the site's name).
    async with gw.session.get(
        URL(gw.url + "//evil.example/?utm_source=news", encoded=True), allow_redirects=False
    ) as resp:
        assert resp.status == 302
        assert resp.headers["Location"] == "/.//evil.example/"
    # Not a GET/HEAD: cannot be redirected, so it goes upstream clean.
    async with gw.session.post(gw.url + "/form?utm_source=news&keep=1", data=b"x") as resp:
        assert resp.status == 200
    assert seen == ["/form?keep=1"]


# -- 10. Referer ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("referer", "upstream"),
    [
        ("http://shop.test/prev?utm_source=x&a=1#top", "http://shop.test/prev?a=1#top"),
        ("http://shop.test/prev?utm_source=x&gclid=y", "http://shop.test/prev"),
        ("http://shop.test/prev?a=1&&b", "http://shop.test/prev?a=1&&b"),
        ("https://news.example/story?utm_source=x&a=1", "https://news.example/story?utm_source=x&a=1"),
    ],
    ids=["same-site", "same-site-only-tracking", "same-site-clean", "external"],
)
async def test_referer_cleaning(start_gateway, upstream_server, referer: str, upstream: str) -> None:
    seen: list[str] = []

    async def page(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Referer", ""))
        return web.Response(text="ok")

    gw = await start_gateway(await upstream_server(app_of(page)))
    async with gw.session.get(gw.url + "/next", headers={"Host": "shop.test", "Referer": referer}) as resp:
        assert resp.status == 200
    assert seen == [upstream]


# -- 12. upstream resets mid-body ----------------------------------------------------------------


async def cutting_origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        line = await read_head(reader)
        if "/cut-length" in line:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
        elif "/cut-chunked" in line:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n" + b"x" * 1000)
        elif "/stall" in line:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
            await writer.drain()
            await asyncio.sleep(2)
        elif "/bad-chunk" in line:  # a chunk, then a size line that is no number, then a close
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            await writer.drain()
            await asyncio.sleep(0.1)
            writer.write(b"zz not a size\r\nmore\r\n")
            await writer.drain()
            await asyncio.sleep(0.1)
            writer.close()
            return
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            continue
        await writer.drain()
        writer.transport.abort()
        return


@pytest.mark.parametrize("path", ["/cut-length", "/cut-chunked", "/stall", "/bad-chunk"])
async def test_upstream_cut_mid_body_is_visible(start_gateway, raw_upstream, path: str) -> None:
    gw = await start_gateway(await raw_upstream(cutting_origin), "[proxy]\nread_timeout = 0.5\n")
    with pytest.raises(aiohttp.ClientPayloadError):
        async with gw.session.get(gw.url + path) as resp:
            assert resp.status == 200
            await asyncio.wait_for(resp.read(), 2)
    async with gw.session.get(gw.url + "/ok") as resp:
        assert (resp.status, await resp.read()) == (200, b"ok")


async def test_upstream_cut_mid_body_reaches_an_http10_visitor_as_a_reset(
    start_gateway, raw_upstream
) -> None:
    """An HTTP/1.0 visitor reads a body of no length to the connection's end: a plain close
    there is the body's normal end, so a body cut short must end with a reset, never a close
    that makes the first kilobyte look like the whole page."""
    gw = await start_gateway(await raw_upstream(cutting_origin), "[proxy]\nread_timeout = 0.5\n")
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)
    received, ending = b"", "still open"
    try:
        writer.write(b"GET /cut-chunked HTTP/1.0\r\nHost: t\r\n\r\n")
        async with asyncio.timeout(3):
            while data := await reader.read(65536):
                received += data
        ending = "closed"
    except ConnectionResetError:
        ending = "reset"
    finally:
        writer.transport.abort()
    assert ending == "reset", (ending, received[:200])
    assert b"Content-Length" not in received.partition(b"\r\n\r\n")[0]  # a body of no length


async def test_stalled_upload_gets_408_within_body_timeout(start_gateway, upstream_server) -> None:
    async def sink(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    gw = await start_gateway(await upstream_server(app_of(sink)), "[proxy]\nbody_timeout = 0.3\n")
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)
    try:
        writer.write(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()
        started = asyncio.get_running_loop().time()
        async with asyncio.timeout(5):
            status_line = await reader.readline()
        assert b" 408 " in status_line
        assert asyncio.get_running_loop().time() - started < 2
    finally:
        writer.close()


async def test_access_log_has_no_client_address_or_query(
    start_gateway, upstream_server, caplog: pytest.LogCaptureFixture
) -> None:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    gw = await start_gateway(await upstream_server(app_of(page)), "[proxy]\naccess_log = true\n")
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        async with gw.session.get(gw.url + "/page?email=someone%40example.com&utm_source=x") as resp:
            assert resp.status == 200
    [line] = [r.getMessage() for r in caplog.records if r.name == "gateway.access"]
    assert line.startswith("GET /page 200 ")
    assert "127.0.0.1" not in line and "example" not in line


async def test_access_log_writes_no_email_address_a_path_holds(
    start_gateway, upstream_server, caplog: pytest.LogCaptureFixture
) -> None:
    """A newsletter's personal link (``/unsubscribe/jane@example.com``) put the address into
    the access log, a copy at rest that no erasure reaches, while the landing's stored path
    keeps it out; the segment is written ``(email)``, as ``landing_path`` stores it, and the
    site still gets the path as sent."""
    seen: list[str] = []

    async def page(request: web.Request) -> web.Response:
        seen.append(request.raw_path)
        return web.Response(text="ok")

    gw = await start_gateway(await upstream_server(app_of(page)), "[proxy]\naccess_log = true\n")
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        for target in ("/unsubscribe/jane@example.com", "/u/Jane%40Example.com/prefs", "/img/logo@2x.png"):
            async with gw.session.get(URL(gw.url + target, encoded=True)) as resp:
                assert resp.status == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.access"]
    assert [line.split(" ")[1] for line in lines] == [
        "/unsubscribe/(email)",
        "/u/(email)/prefs",
        "/img/logo@2x.png",
    ]
    assert seen == ["/unsubscribe/jane@example.com", "/u/Jane%40Example.com/prefs", "/img/logo@2x.png"]


# A site's own files whose names hold an ``@`` and a suffix that is no top-level domain: a
# retina video or font, a versioned API document or archive. ``.zip`` and ``.mov`` are
# top-level domains (an address may end so), and so are two-letter suffixes (``.md``, ``.ai``).
FILE_NAMES_WITH_AT = [
    "/media/hero@2x.webm",
    "/media/hero@2x.mp4",
    "/fonts/icons@2x.woff2",
    "/api/schema@v2.json",
    "/feeds/news@v1.xml",
    "/dl/app@1.2.tar.gz",
    "/robots@v2.txt",
]


@pytest.mark.parametrize("target", FILE_NAMES_WITH_AT)
async def test_a_file_name_with_an_at_sign_is_no_email_address(
    start_gateway, upstream_server, caplog: pytest.LogCaptureFixture, target: str
) -> None:
    """A file's name with an ``@`` in it (``hero@2x.webm``, ``schema@v2.json``) is no address:
    until 2026-12-07 only images, styles, scripts, pages and PDFs were told apart, and such a
    path was logged (and a landing's stored) as ``/media/(email)``."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    gw = await start_gateway(await upstream_server(app_of(page)), "[proxy]\naccess_log = true\n")
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        async with gw.session.get(URL(gw.url + target, encoded=True)) as resp:
            assert resp.status == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.access"]
    assert [line.split(" ")[1] for line in lines] == [target]


async def test_access_log_shows_the_path_as_sent(
    start_gateway, upstream_server, caplog: pytest.LogCaptureFixture
) -> None:
    """The line names the path as the visitor spelled it: a decoded one showed ``/%5Fgw/x`` (a
    path trick answered 404) as ``/_gw/x``, ``/a%2Fb`` as ``/a/b``, and put a ``%0A``'s line
    break into the log itself, where ``log.format = "text"`` made a second line of it."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    gw = await start_gateway(await upstream_server(app_of(page)), "[proxy]\naccess_log = true\n")
    targets = ["/%5Fgw/x", "/a%2Fb?utm_source=x", "/x%0Aforged%20line", "/caf%C3%A9"]
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        for target in targets:
            async with gw.session.get(URL(gw.url + target, encoded=True)) as resp:
                await resp.read()
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.access"]
    assert [line.split(" ")[1] for line in lines] == [target.partition("?")[0] for target in targets]
    assert lines[0].startswith("GET /%5Fgw/x 404 ")
    assert not any("\n" in line for line in lines)


async def test_access_log_has_a_line_for_a_visitor_who_left(
    start_gateway, upstream_server, caplog: pytest.LogCaptureFixture
) -> None:
    """A visitor who hangs up cancels the handler, and aiohttp logs no line for it: an event
    stream or a download left midway, a long poll given up, were missing from the log. Now a
    line with what was sent (the status and the bytes so far), or nginx's 499 when the visitor
    left before the site answered."""

    async def page(request: web.Request) -> web.StreamResponse:
        if request.path == "/ws":
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for _ in ws:
                pass
            return ws
        if request.path == "/poll":
            await asyncio.sleep(30)  # the site has nothing to say yet
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: 1\n\n")
        await asyncio.sleep(30)
        return resp

    gw = await start_gateway(await upstream_server(app_of(page)), "[proxy]\naccess_log = true\n")

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "gateway.access"]

    with caplog.at_level(logging.INFO, logger="gateway.access"):
        upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        upgrade += "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        for count, (target, extra, seen) in enumerate(
            (
                ("/events?utm_source=x", "", b"data: 1\n\n"),
                ("/poll", "", None),
                ("/ws", upgrade, b"\r\n\r\n"),
            ),
            1,
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)
            writer.write(f"GET {target} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode())
            if seen is None:
                await asyncio.sleep(0.3)
            else:
                async with asyncio.timeout(5):
                    await reader.readuntil(seen)
            writer.transport.abort()
            async with asyncio.timeout(5):
                while len(lines()) < count:
                    await asyncio.sleep(0.02)
    events, poll, ws = lines()
    method, path, status, size, _ = events.split(" ")
    assert (method, path, status) == ("GET", "/events", "200") and int(size) > len("data: 1\n\n")
    assert poll.startswith("GET /poll 499 0 ")
    assert ws.startswith("GET /ws 101 ")


async def test_visitor_leaving_mid_download_is_not_an_upstream_error(start_gateway, upstream_server) -> None:
    release = asyncio.Event()

    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        with contextlib.suppress(ConnectionError):
            for _ in range(2000):
                await resp.write(b"x" * 65536)
                await asyncio.sleep(0.001)
        release.set()
        return resp

    gw = await start_gateway(await upstream_server(app_of(endless)))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)
    writer.write(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
    await reader.readexactly(4096)  # some of it, then leave
    writer.transport.abort()
    async with asyncio.timeout(10):
        while (
            gw.gateway.metrics.registry.get_sample_value("gateway_requests_total", {"outcome": "client_gone"})
            != 1.0
        ):
            await asyncio.sleep(0.02)
    errors = gw.gateway.metrics.registry.get_sample_value("gateway_upstream_errors_total", {"kind": "body"})
    assert not errors
    async with gw.session.get(gw.url + "/again") as resp:  # and the gateway carries on
        assert resp.status == 200
        await resp.content.readexactly(65536)


async def test_websocket_message_over_the_cap_closes_with_1009(start_gateway, upstream_server) -> None:
    closed: asyncio.Queue[int | None] = asyncio.Queue()
    gw = await start_gateway(
        await echo_ws_upstream(upstream_server, closed), "[proxy]\nmax_websocket_message = 1024\n"
    )
    async with gw.session.ws_connect(gw.url + "/ws") as ws:
        await ws.send_str("small")
        assert (await ws.receive(timeout=2)).data == "echo:small"
        await ws.send_bytes(b"x" * 4096)
        msg = await ws.receive(timeout=2)
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
        assert ws.close_code == 1009
    assert await asyncio.wait_for(closed.get(), 2) == 1009  # the site too, not a lost connection


async def test_request_without_host_keeps_location_and_sends_no_empty_forwarded_host(
    start_gateway, upstream_server
) -> None:
    seen: list[str | None] = []

    async def redirect(request: web.Request) -> web.Response:
        seen.append(request.headers.get("X-Forwarded-Host"))
        return web.Response(status=302, headers={"Location": "http://upstream.test/next"})

    gw = await start_gateway(await upstream_server(app_of(redirect)))
    reply = await raw_request(gw.proxy.port, b"GET /old HTTP/1.0\r\n\r\n")
    assert reply.status == 302
    assert reply.headers["Location"] == "http://upstream.test/next"
    assert seen == [None]


async def test_full_upstream_pool_gives_504_not_a_hang(start_gateway, upstream_server) -> None:
    closed: asyncio.Queue[int | None] = asyncio.Queue()
    gw = await start_gateway(
        await echo_ws_upstream(upstream_server, closed),
        "[proxy]\nupstream_connections = 1\nconnect_timeout = 0.3\n",
    )
    async with gw.session.ws_connect(gw.url + "/ws") as ws:  # holds the only connection
        await ws.send_str("hi")
        assert (await ws.receive(timeout=2)).data == "echo:hi"
        started = asyncio.get_running_loop().time()
        async with gw.session.get(gw.url + "/page") as resp:
            assert resp.status == 504
        assert asyncio.get_running_loop().time() - started < 2
