"""How the upstream client reads the framing of a site's answers (gateway/framing.py, and
gateway/upstream.py that applies it): the site's ``Keep-Alive`` bounds on reusing a connection,
bytes after a chunked answer's end, and heads the parser alone refused where a browser shows the
page (``Content-Length`` beside chunks, one length sent twice). Raw asyncio origins on loopback
write exact bytes and record what reached them."""

from __future__ import annotations

import asyncio
import gzip
import logging
import socket
import time

import pytest

from gateway.framing import keep_alive, readable_head, reuse_bound, unframed_head
from gateway.upstream import Upstream, UpstreamProtocolError
from tests.gateway.test_malformed import raw_request
from tests.gateway.test_upstream import OK, _upload, counting_origin, get

# -- the site's Keep-Alive header ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("timeout=5, max=100", (5.0, 100)),  # Apache
        ("timeout=5", (5.0, None)),  # Node, nginx with a second keepalive_timeout value
        ("timeout=0", (0.0, None)),  # Node with keepAliveTimeout under 1 s (floored)
        ("max=3", (None, 3)),
        ("Timeout=5 , MAX=2", (5.0, 2)),
        ('timeout="5"', (5.0, None)),
        ("timeout=1.5; max=7", (1.5, 7)),
        ("timeout=5, max=100, extra=x", (5.0, 100)),
        ("timeout=abc, max=-1", (None, None)),
        ("timeout=, max", (None, None)),
        ("timeout=inf, max=nan", (None, None)),
        ("timeout=1e3", (None, None)),
        ("", (None, None)),
        (",,;=", (None, None)),
        ("300", (None, None)),  # HTTP/1.0-era: a bare number, no parameter name
        ("timeout=" + "9" * 400 + ", max=" + "9" * 5000, (None, None)),  # past int()'s digit limit
        ("timeout=86400, max=999999999", (86400.0, 999999999)),
    ],
)
def test_keep_alive_is_read_leniently(value: str, expected: tuple[float | None, int | None]) -> None:
    assert keep_alive(value) == expected


@pytest.mark.parametrize(
    ("timeout", "bound"), [(0.0, 0.0), (0.4, 0.2), (1.0, 0.5), (2.0, 1.5), (5.0, 4.5), (60.0, 59.5)]
)
def test_a_connection_is_reused_only_well_inside_the_sites_timeout(timeout: float, bound: float) -> None:
    assert reuse_bound(timeout) == bound


def keep_alive_origin(
    announce: str, bound: float, allowed: int | None = None
) -> tuple[list[list[str]], object]:
    """An origin answering every request with ``Keep-Alive: <announce>`` (``{left}`` filled in
    with the requests the connection may still take, as Apache counts them). It closes a
    connection idle past ``bound`` seconds, or past ``allowed`` requests: as the close that
    crosses a request on its way, it is done when the next request arrives — closed
    unanswered, recorded as ``dropped /path`` — so that race happens every time, not by luck."""
    connections: list[list[str]] = []

    async def origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lines: list[str] = []
        connections.append(lines)
        answered = time.monotonic()
        served = 0
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode()
            if time.monotonic() - answered > bound or (allowed is not None and served >= allowed):
                lines.append(f"dropped {path}")
                return
            lines.append(path)
            if b"Content-Length: 3" in head:
                await reader.readexactly(3)
            served += 1
            line = announce.format(left=(allowed or 0) - served)
            writer.write(b"HTTP/1.1 200 OK\r\nKeep-Alive: %s\r\nContent-Length: 2\r\n\r\nok" % line.encode())
            await writer.drain()
            answered = time.monotonic()

    return connections, origin


async def _steps(pool: Upstream, steps: list[tuple[float, str, str]]) -> None:
    """Each step: wait (idle seconds), then one request; every answer must be the site's."""
    try:
        for idle, method, path in steps:
            await asyncio.sleep(idle)
            if method == "GET":
                resp = await pool.request("GET", path, [("Host", "t")], None, length_known=False)
            else:
                headers = [("Host", "t"), ("Content-Length", "3")]
                resp = await pool.request(method, path, headers, _upload(), length_known=True)
            assert (resp.status, await resp.content.read()) == (200, b"ok")
            resp.release()
    finally:
        await pool.close()


def _pool(url: str) -> Upstream:
    return Upstream(url, limit=4, connect_timeout=2, read_timeout=2, max_field_size=8190)


async def test_a_post_takes_no_connection_idle_past_a_timeout_the_site_announced_under_half_a_second(
    raw_upstream,
) -> None:
    """A site whose keep-alive bound is under 0.5 s (Node's ``keepAliveTimeout = 300`` announces
    ``Keep-Alive: timeout=0``, its seconds floored) closes a connection idle 0.3 s. A POST sent on
    it then — idle under the 0.5 s such a request was held to — found it closing: a 502, since a
    POST is not sent twice (until 2026-12-06, when the site's header was not read); a GET was sent
    twice. A connection whose site announced ``timeout=0`` is not reused at all."""
    connections, origin = keep_alive_origin("timeout=0", bound=0.2)
    await _steps(
        _pool(await raw_upstream(origin)), [(0, "GET", "/a"), (0.3, "POST", "/b"), (0.3, "GET", "/c")]
    )
    assert connections == [["/a"], ["/b"], ["/c"]]


async def test_no_request_takes_a_connection_idle_near_the_timeout_the_site_announced(raw_upstream) -> None:
    """A site announcing ``Keep-Alive: timeout=1`` closes a connection idle 1 s. A GET sent on one
    idle that long went out as the site closed it and was sent a second time, on a new
    connection: its connection is reused only while idle under half a second (the site's
    timeout less a margin for the way there and back), and reused within it."""
    connections, origin = keep_alive_origin("timeout=1", bound=0.9)
    await _steps(
        _pool(await raw_upstream(origin)), [(0, "GET", "/a"), (0.1, "GET", "/b"), (1.0, "GET", "/c")]
    )
    assert connections == [["/a", "/b"], ["/c"]]


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_no_request_goes_on_a_connection_past_the_requests_the_site_announced(
    raw_upstream, method: str
) -> None:
    """A site announcing ``Keep-Alive: max=N`` takes N more requests on the connection, then
    closes it (as Apache counts them: ``max=0`` on the last). The request after them went out on
    it anyway: a POST was a 502, a GET was sent twice."""
    connections, origin = keep_alive_origin("timeout=5, max={left}", bound=5, allowed=2)
    await _steps(
        _pool(await raw_upstream(origin)),
        [(0, "GET", "/a"), (0, "GET", "/b"), (0, method, "/c"), (0, "GET", "/d")],
    )
    assert connections == [["/a", "/b"], ["/c", "/d"]]


# -- bytes after a chunked answer's last chunk ----------------------------------------------------

CHUNKED_JUNK = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nJUNK\r\n\r\n"


@pytest.mark.parametrize(
    ("answer", "cuts"),
    [
        (CHUNKED_JUNK, ()),
        (CHUNKED_JUNK, (47,)),  # the head alone, then the body and the junk
        (CHUNKED_JUNK, (59,)),  # the answer whole, the junk in a read of its own
        (CHUNKED_JUNK, (30, 52)),
        (b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n" + CHUNKED_JUNK, ()),
        (CHUNKED_JUNK.replace(b"JUNK", b"<!-- served in 2 ms -->"), ()),
    ],
    ids=["one-read", "head-apart", "junk-apart", "cut-thrice", "after-103", "template-comment"],
)
async def test_bytes_after_a_chunked_answer_are_dropped_with_the_connection(
    raw_upstream, caplog: pytest.LogCaptureFixture, answer: bytes, cuts: tuple[int, ...]
) -> None:
    """Straight on the pool: a site that writes something after its chunked answer's last chunk
    (a template's comment, a stray newline) had the parser take it for the next answer and
    fail, losing the answer it had just read: a 502, where a browser or curl shows the page
    and drops the rest. The answer is read whole, the bytes after it are dropped, the
    connection is not used again, and one info line names the request."""
    caplog.set_level(logging.INFO, "gateway.upstream")
    connections: list[int] = []

    async def origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections))
        writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            line = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n", 1)[0]
            if b"/page" not in line:
                writer.write(OK)
                await writer.drain()
                continue
            for start, end in zip((0, *cuts), (*cuts, len(answer)), strict=True):
                writer.write(answer[start:end])
                await writer.drain()
                await asyncio.sleep(0.02)  # each piece its own read

    pool = _pool(await raw_upstream(origin))
    try:
        resp = await pool.request(
            "GET", "/page?email=ada%40example.com", [("Host", "t")], None, length_known=False
        )
        assert (resp.status, await resp.content.read()) == (200, b"hello")
        await asyncio.sleep(0.1)  # the rest of the pieces arrive
        resp.release()
        resp = await pool.request("GET", "/next", [("Host", "t")], None, length_known=False)
        assert (resp.status, await resp.content.read()) == (200, b"ok")
        resp.release()
    finally:
        await pool.close()
    assert connections == [0, 1]
    assert [r.getMessage() for r in caplog.records if r.name == "gateway.upstream"] == [
        "upstream sent bytes after the end of its chunked answer to GET /page; they were dropped "
        "and the connection closed"
    ]


async def test_a_chunked_answer_with_bytes_after_it_reaches_the_visitor(start_gateway, raw_upstream) -> None:
    """Through the gateway: the visitor gets the page, chunked and ended, not a 502."""
    url, origin = await counting_origin(raw_upstream, lambda line: CHUNKED_JUNK if "/page" in line else OK)
    gw = await start_gateway(url)
    reply = await raw_request(gw.proxy.port, b"GET /page HTTP/1.1\r\nHost: shop.test\r\n\r\n")
    assert (reply.status, reply.body) == (200, b"hello")
    assert await get(gw.proxy.port, "/next") == (200, b"ok")
    assert origin.connections == [["GET /page HTTP/1.1"], ["GET /next HTTP/1.1"]]


# -- heads the parser refused where browsers show the page ---------------------------------------

CL_AND_CHUNKS = (
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
)
_HELLO_GZIPPED = gzip.compress(b"hello", mtime=0)
CHUNKS_AND_CL = (
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, Chunked\r\ncontent-length: 30\r\n\r\n"
    + b"%x\r\n%s\r\n0\r\n\r\n" % (len(_HELLO_GZIPPED), _HELLO_GZIPPED)
)
"""Chunks under a gzip transfer coding (undone: ``gateway.upstream``), a length beside them."""
CL_TWICE = b'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: "v"\r\nContent-Length: 5\r\n\r\nhello'
CL_LIST = b"HTTP/1.1 200 OK\r\nContent-Length: 5 , 5\r\n\r\nhello"
SPACED = b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello"
SPACED_CHUNKS = b"HTTP/1.1 200 OK\r\nTransfer-Encoding : chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"


@pytest.mark.parametrize(
    ("answer", "cuts", "length", "reused"),
    [
        (CL_AND_CHUNKS, (), None, False),
        (CL_AND_CHUNKS, (20, 40), None, False),
        (CHUNKS_AND_CL, (), None, False),
        (CL_AND_CHUNKS.replace(b"\r\n", b"\n", 3), (), None, False),
        (b"HTTP/1.1 100 Continue\r\n\r\n" + CL_AND_CHUNKS, (27,), None, False),
        (CL_TWICE, (), "5", True),
        (CL_TWICE, (40,), "5", True),
        (CL_LIST, (), "5", True),
        (CL_TWICE.replace(b"\r\nContent-Length: 5\r\n\r\n", b"\r\ncontent-length: 5\r\n\r\n"), (), "5", True),
        (CL_TWICE.replace(b"OK\r\nContent-Length", b"OK\r\ncontent-length"), (), "5", True),
        (CL_TWICE.replace(b"\r\nContent-Length: 5\r\n\r\n", b"\r\nCONTENT-LENGTH: 5\r\n\r\n"), (), "5", True),
        (b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + CL_LIST, (), "5", True),
    ],
    ids=[
        "length-and-chunks",
        "length-and-chunks-cut",
        "chunks-and-length",
        "bare-lf",
        "after-100",
        "length-twice",
        "length-twice-cut",
        "length-list",
        "length-twice-spelled-otherwise-after",
        "length-twice-spelled-otherwise-before",
        "length-twice-in-capitals",  # read by the refused head's second reading (readable_head)
        "length-list-after-103",
    ],
)
async def test_a_length_beside_chunks_or_sent_twice_is_read_as_a_browser_reads_it(
    raw_upstream, answer: bytes, cuts: tuple[int, ...], length: str | None, reused: bool
) -> None:
    """Straight on the pool: an answer with both ``Content-Length`` and ``Transfer-Encoding:
    chunked``, or one ``Content-Length`` twice (two lines, or ``5, 5``), was a 502: the parser
    refuses them, browsers read the page. Chunks win over the length and the connection is not
    used again (RFC 9112 §6.3); one length sent twice is that length (RFC 9110 §8.6), and the
    answer carries it once."""
    connections: list[int] = []

    async def origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections))
        writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            line = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n", 1)[0]
            if b"/page" not in line:
                writer.write(OK)
                await writer.drain()
                continue
            for start, end in zip((0, *cuts), (*cuts, len(answer)), strict=True):
                writer.write(answer[start:end])
                await writer.drain()
                await asyncio.sleep(0.02)  # each piece its own read

    pool = _pool(await raw_upstream(origin))
    try:
        resp = await pool.request("GET", "/page", [("Host", "t")], None, length_known=False)
        assert (resp.status, await resp.content.read()) == (200, b"hello")
        assert resp.headers.getall("Content-Length", []) == ([length] if length else [])
        # One line, as the first one that gave the length spelled it.
        assert [n.lower() for n, _ in resp.raw_headers if n.lower() == b"content-length"] == (
            [b"content-length"] if length else []
        )
        resp.release()
        resp = await pool.request("GET", "/next", [("Host", "t")], None, length_known=False)
        assert (resp.status, await resp.content.read()) == (200, b"ok")
        resp.release()
    finally:
        await pool.close()
    assert connections == ([0] if reused else [0, 1])


async def _refused(raw_upstream, answer: bytes) -> None:
    """The gateway's client refuses the answer ``answer`` to a ``GET /page`` (a 502 for a visitor)."""
    url, _ = await counting_origin(raw_upstream, lambda line: answer)
    pool = _pool(url)
    try:
        with pytest.raises(UpstreamProtocolError):
            await pool.request("GET", "/page", [("Host", "t")], None, length_known=False)
    finally:
        await pool.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: gzip\r\n\r\nhello",
    ],
    ids=["two-lengths", "length-list", "length-and-another-coding"],
)
async def test_lengths_that_disagree_are_still_refused(raw_upstream, answer: bytes) -> None:
    """Two different lengths are no length a reader can trust (browsers refuse them too); a
    length beside a coding that is not chunked is left to the parser, which refuses it."""
    await _refused(raw_upstream, answer)


async def _visitor_gets(start_gateway, raw_upstream, answer: bytes) -> bytes:
    """Everything a visitor's ``GET /page`` (on a closing connection) gets through a gateway
    whose site answers ``answer`` to every request."""
    url, _ = await counting_origin(raw_upstream, lambda line: answer)
    gw = await start_gateway(url)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)
    try:
        writer.write(b"GET /page HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n")
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("answer", "framing"),
    [
        (CL_AND_CHUNKS, ("chunked", None)),
        (CL_TWICE, (None, "5")),
        (CL_LIST, (None, "5")),
        (SPACED, (None, "5")),
        (SPACED_CHUNKS, ("chunked", None)),
    ],
    ids=["length-and-chunks", "length-twice", "length-list", "space-before-colons", "space-before-chunks"],
)
async def test_the_visitor_gets_one_framing(
    start_gateway, raw_upstream, answer: bytes, framing: tuple[str | None, str | None]
) -> None:
    """Through the gateway: the visitor gets the page with one framing, never a length beside
    chunks (the ambiguity a cache in front could be split on). ``Content-Length :`` and
    ``Transfer-Encoding :``, whose space before the colon the parser keeps in the name, reached
    the visitor so, beside the gateway's own chunks: the name goes without it (RFC 9112 §5.1
    asks a proxy to remove it)."""
    head, _, body = (await _visitor_gets(start_gateway, raw_upstream, answer)).partition(b"\r\n\r\n")
    fields = [line.partition(b":") for line in head.split(b"\r\n")[1:]]
    assert all(name == name.strip() for name, _, _ in fields), head
    lengths = [value.strip().decode() for name, _, value in fields if name.lower() == b"content-length"]
    codings = [value.strip().decode() for name, _, value in fields if name.lower() == b"transfer-encoding"]
    assert (codings or [None], lengths or [None]) == ([framing[0]], [framing[1]])
    assert body == (b"5\r\nhello\r\n0\r\n\r\n" if framing[0] else b"hello")


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: 1\r\n\r\n", None),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", None),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", True),
        ),
        (
            b"HTTP/1.1 200 OK\nX-A: Content-Length: 9\nContent-Length:5\nContent-Length: 5\n\n",
            (b"HTTP/1.1 200 OK\nX-A: Content-Length: 9\nContent-Length:5\n\n", False),
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5,5,\t5\r\n\r\n",
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", False),
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", None),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", None),
        (b"HTTP/1.1 200 OK\r\nContent-Length: \r\nContent-Length: \r\n\r\n", None),
        (
            b"HTTP/1.1 200 OK\r\nX-Note: a : b\r\nX-Foo \t: 1\r\nContent-Length : 5\r\n\r\n",
            (b"HTTP/1.1 200 OK\r\nX-Note: a : b\r\nX-Foo: 1\r\nContent-Length: 5\r\n\r\n", False),
        ),
        (b"HTTP/1.1 200 OK\r\nX-Note: a : b\r\nX-A: 1\r\n  folded : on\r\n\r\n", None),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding : chunked\r\n\r\n",
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", True),
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\nContent-Length: 6\r\n\r\n",
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", False),
        ),
    ],
    ids=[
        "plain",
        "chunks",
        "both",
        "twice-bare-lf",
        "list",
        "disagree",
        "not-chunked-last",
        "empty",
        "space-before-colon",
        "colon-in-values",
        "both-spaced",
        "spaced-disagree",
    ],
)
def test_unframed_head(head: bytes, expected: tuple[bytes, bool] | None) -> None:
    """The head as the parser can read it, and whether the connection must close after it; None
    where nothing is to change (or nothing can)."""
    assert unframed_head(head) == expected


# -- early hints and hop-by-hop lines whose names have a space before the colon -----------------

HINT = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n%s\r\n"
PAGE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


async def _hint_and_page(start_gateway, raw_upstream, answer: bytes) -> tuple[bytes, bytes]:
    """The head of the ``103`` the visitor got, and the rest it got on a closing connection."""
    hint, _, rest = (await _visitor_gets(start_gateway, raw_upstream, answer)).partition(b"\r\n\r\n")
    return hint + b"\r\n\r\n", rest


@pytest.mark.parametrize(
    "lines",
    [
        b"Content-Length: 5\r\n",
        b"Content-Length : 5\r\n",
        b"Transfer-Encoding : chunked\r\n",
        b"Connection : X-Secret\r\nX-Secret: 1\r\nUpgrade : h2c\r\n",
        b"Connection: X-Secret, Keep-Alive\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n",
    ],
    ids=["length", "length-spaced", "chunks-spaced", "connection-spaced", "connection-names"],
)
async def test_an_early_hint_reaches_the_visitor_without_framing_or_hop_by_hop_lines(
    start_gateway, raw_upstream, lines: bytes
) -> None:
    """A ``103`` has no body (RFC 9110 §15.2), so a length or chunks in it frame nothing a
    client should read, and a client or a cache in front that reads them anyway takes the final
    answer's bytes for the hint's body. They were passed on as they came, and so were
    ``Connection :``, ``Upgrade :`` (the space before the colon, which the parser takes in
    these names and keeps, hid them from the hop-by-hop list) and the lines a ``Connection``
    names: a proxy removes such a space (RFC 9112 §5.1) and the hop-by-hop lines. The hint
    arrives with its ``Link`` alone, then the page."""
    hint, rest = await _hint_and_page(start_gateway, raw_upstream, HINT % lines + PAGE)
    assert hint == b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n") and rest.endswith(b"\r\n\r\nhello")


async def test_an_early_hint_with_a_space_before_a_colon_does_not_cost_the_page(
    start_gateway, raw_upstream
) -> None:
    """``Link : <…>`` (a space before the colon) in a ``103``: the parser refuses that line in
    any name but the few it reads for framing, and the page behind the hint was a ``502``. The
    hint's head is read as RFC 9112 §5.1 asks of a proxy, the space removed."""
    answer = b"HTTP/1.1 103 Early Hints\r\nLink : </a.css>; rel=preload\r\nX-Hint\t: 1\r\n\r\n" + PAGE
    hint, rest = await _hint_and_page(start_gateway, raw_upstream, answer)
    assert hint == b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nX-Hint: 1\r\n\r\n"
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n") and rest.endswith(b"\r\n\r\nhello")


async def test_the_lines_a_spaced_connection_names_are_not_passed_on(start_gateway, raw_upstream) -> None:
    """``Connection : X-Secret`` (a space before the colon, which the parser takes in this name
    and keeps): the line itself was dropped, as hop-by-hop, but the ``X-Secret`` it names, a
    line for the gateway's hop alone, reached the visitor."""
    answer = (
        b"HTTP/1.1 200 OK\r\nConnection : X-Secret\r\nX-Secret: 1\r\nX-Page: 2\r\n"
        b"Content-Length: 5\r\n\r\nhello"
    )
    url, _ = await counting_origin(raw_upstream, lambda line: answer)
    gw = await start_gateway(url)
    reply = await raw_request(gw.proxy.port, b"GET /page HTTP/1.1\r\nHost: shop.test\r\n\r\n")
    assert (reply.status, reply.body, reply.headers.get("X-Page")) == (200, b"hello", "2")
    assert "X-Secret" not in reply.headers


# -- a final head the parser refuses, read again once rewritten ------------------------------------

SLOPPY = {
    "space-before-colon": (
        b"HTTP/1.1 200 OK\r\nX-Foo : bar\r\nContent-Length: 5\r\n\r\nhello",
        b"X-Foo: bar",
    ),
    "set-cookie-spaced": (
        b"HTTP/1.1 200 OK\r\nSet-Cookie : a=b; Path=/\r\nContent-Length: 5\r\n\r\nhello",
        b"Set-Cookie: a=b; Path=/",
    ),
    "location-spaced": (
        b"HTTP/1.1 302 Found\r\nLocation : /x\r\nContent-Length: 5\r\n\r\nhello",
        b"Location: /x",
    ),
    "tab-before-colon": (b"HTTP/1.1 200 OK\r\nX-Foo\t: bar\r\nContent-Length: 5\r\n\r\nhello", b"X-Foo: bar"),
    "spaced-chunked": (
        b"HTTP/1.1 200 OK\r\nX-Foo : bar\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"X-Foo: bar",
    ),
    "spaced-bare-lf": (b"HTTP/1.1 200 OK\nX-Foo : bar\nContent-Length: 5\n\nhello", b"X-Foo: bar"),
    "spaced-after-103": (
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nX-Foo : bar\r\n"
        b"Content-Length: 5\r\n\r\nhello",
        b"X-Foo: bar",
    ),
    "bare-cr-in-value": (
        b"HTTP/1.1 200 OK\r\nX-Foo: b\rar\r\nContent-Length: 5\r\n\r\nhello",
        b"X-Foo: b ar",
    ),
    "name-not-a-token": (
        b"HTTP/1.1 200 OK\r\nX@Foo: 1\r\nX(B): 2\r\nX C: 3\r\n: 4\r\nX-Page: 5\r\n"
        b"Content-Length: 5\r\n\r\nhello",
        b"X-Page: 5",
    ),
}


@pytest.mark.parametrize("case", list(SLOPPY))
async def test_a_sloppy_final_head_reaches_the_visitor_as_curl_reads_it(
    start_gateway, raw_upstream, case: str
) -> None:
    """A final head the parser refuses where curl and browsers show the page was a ``502``: a
    space or tab before any header's colon (RFC 9112 §5.1 has a proxy remove it), a bare CR
    inside a value (§2.2: replaced with a space), a line whose name is no token (no header a
    browser acts on: dropped, as Firefox skips it). The head is rewritten so and read again,
    once; the visitor gets the page."""
    answer, line = SLOPPY[case]
    got = await _visitor_gets(start_gateway, raw_upstream, answer)
    if got.startswith(b"HTTP/1.1 103 "):
        got = got.partition(b"\r\n\r\n")[2]
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.split(b"\r\n", 1)[0] in (b"HTTP/1.1 200 OK", b"HTTP/1.1 302 Found"), got[:200]
    assert line in head.split(b"\r\n"), head
    assert body in (b"hello", b"5\r\nhello\r\n0\r\n\r\n")
    assert not any(name in head for name in (b"X@Foo", b"X(B)", b"X C", b"\r\n: 4"))


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 204 No Content\r\nX-Foo : bar\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Foo : bar\r\nConnection: close\r\n\r\nhello",
    ],
    ids=["bodiless", "read-to-close"],
)
async def test_a_sloppy_head_without_a_length_is_read_again_too(raw_upstream, answer: bytes) -> None:
    """Heads fed whole on the held path (a 204) and read to the connection's close."""

    async def origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    pool = _pool(await raw_upstream(origin))
    try:
        resp = await pool.request("GET", "/page", [("Host", "t")], None, length_known=False)
        assert (resp.headers.get("X-Foo"), await resp.content.read()) == ("bar", answer.rpartition(b"\n")[2])
        resp.close()
    finally:
        await pool.close()


async def test_a_rewritten_head_leaves_the_connection_for_the_next_request(
    start_gateway, raw_upstream, caplog: pytest.LogCaptureFixture
) -> None:
    """The read again costs the connection nothing: the body follows, and the next request goes
    on the same connection. An info line names the request, at most once every 10 s."""
    caplog.set_level(logging.INFO, "gateway.upstream")
    answer = SLOPPY["space-before-colon"][0]
    url, origin = await counting_origin(raw_upstream, lambda line: answer)
    gw = await start_gateway(url)
    for path in ("/a", "/b"):
        assert await get(gw.proxy.port, path) == (200, b"hello")
    assert origin.connections == [["GET /a HTTP/1.1", "GET /b HTTP/1.1"]]
    assert [r.getMessage() for r in caplog.records if r.name == "gateway.upstream"] == [
        "upstream's answer head to GET /a was refused by the parser and read again as browsers "
        "read it (a space before a colon, a bare CR, a header name that is no token)"
    ]


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nXFoo bar\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1  200 OK\r\nX-Foo : bar\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 20 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nX-Foo : bar\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"HTTP/1.1 200 OK\r\nContent-Length\x01: 5\r\nContent-Length: 6\r\n\r\nhello!",
    ],
    ids=["no-colon", "status-line", "status-digits", "lengths-disagree", "length-name-not-a-token"],
)
async def test_a_head_still_refused_once_rewritten_is_a_502(raw_upstream, answer: bytes) -> None:
    """Once, not more: what the rewrite cannot make readable without guessing (a line that is no
    field, a status line curl refuses or reads by a guess, two lengths) stays refused."""
    await _refused(raw_upstream, answer)


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"HTTP/1.1 200 OK\r\nX: 1\r\n\r\n", None),
        (
            b"HTTP/1.1 200 OK\r\nX-Note: a : b\r\nX-Foo \t: 1\r\n\r\n",
            (b"HTTP/1.1 200 OK\r\nX-Note: a : b\r\nX-Foo: 1\r\n\r\n", False),
        ),
        (b"HTTP/1.1 200 OK\nX: b\rc\nY: 2\n\n", (b"HTTP/1.1 200 OK\nX: b c\nY: 2\n\n", False)),
        (
            b"HTTP/1.1 200 OK\r\nX@F: 1\r\n: 2\r\nX Y: 3\r\nZ: 4\r\n\r\n",
            (b"HTTP/1.1 200 OK\r\nZ: 4\r\n\r\n", False),
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length\x01: 5\r\n\r\n", None),
        (b"HTTP/1.1 200 OK\r\nX-Transfer-Encoding(1): chunked\r\n\r\n", None),
        (b"HTTP/1.1 200 OK\r\nX: a\r\n b : c\r\nNo colon\r\n\r\n", None),
        (
            b"HTTP/1.1 200 OK\r\nX : 1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            (b"HTTP/1.1 200 OK\r\nX: 1\r\nContent-Length: 5\r\n\r\n", False),
        ),
        (
            b"HTTP/1.1 200 OK\r\nX : 1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            (b"HTTP/1.1 200 OK\r\nX: 1\r\nTransfer-Encoding: chunked\r\n\r\n", True),
        ),
        (b"HTTP/1.1  200 OK\r\nX: 1\r\n\r\n", None),
    ],
    ids=[
        "clean",
        "space-and-tab",
        "bare-cr",
        "names-not-tokens",
        "length-not-a-token",
        "coding-not-a-token",
        "folded-and-no-colon",
        "spaced-and-length-twice",
        "spaced-and-length-beside-chunks",
        "status-line-left",
    ],
)
def test_readable_head(head: bytes, expected: tuple[bytes, bool] | None) -> None:
    """A refused head as curl and browsers read it, and whether the connection closes after it;
    None where nothing is to change, or only by guessing the framing."""
    assert readable_head(head) == expected
