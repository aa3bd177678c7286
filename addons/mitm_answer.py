"""The mitmproxy host's own answers to requests whose bodies mitmproxy streams.

mitmproxy 11 cannot answer a request whose body it streams (``stream_large_bodies`` below it,
or a chunked one with it set): a ``flow.response`` set then stops the flow ("Can't set a
response and enable streaming at the same time"). Such a request the gateway answers itself
(a path under ``proxy.reserved_prefix``, a refusal, a blocked bot's upload) is sent instead,
stripped to its framing, to this loopback listener inside mitmdump, which answers what the
gateway held for it as soon as the request's head is in, then reads and drops the rest of its
body within bounds (``LINGER_SECONDS``, ``LINGER_BYTES``: past them it closes; a body that
ends within them leaves the connection to mitmproxy's next request, kept until mitmproxy
closes it): mitmproxy relays that answer to the visitor as a site's, through the response
hooks, while the body still comes.
Owns the listener (``127.0.0.1``, a port of the system's choosing; one per mitmdump process,
listening until its event loop ends) and the answers held, each under a one-time token that the
request's path carries. Imports nothing of mitmproxy
(``tests/test_layout.py``); ``h11``, mitmproxy's own HTTP/1 parser, reads the requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterable
from typing import Any

import h11

HEAD_LIMIT = 64 * 1024
"""Bytes of a request head this listener reads: ``addons.mitm`` sends it a path and two lines."""
READ_SIZE = 64 * 1024
LINGER_SECONDS = 10.0
"""How long the rest of a refused request's body is read (and dropped) once it is answered:
aiohttp's ``lingering_time``, which ``gateway run``'s proxy listener keeps for a body it answers
unread (a ``/_gw/`` path, a blocked bot's upload). Then the connection closes."""
LINGER_BYTES = 64 * 1024**2
"""The most of such a body read (and dropped) within ``LINGER_SECONDS``: on loopback or a fast
link 10 s carry gigabytes, and mitmdump is one process. ``gateway run``'s listener bounds them
the same (``gateway.protocol_errors.LINGER_BYTES``)."""


def answer_bytes(status: int, reason: str, fields: Iterable[tuple[bytes, bytes]], body: bytes) -> bytes:
    """The HTTP/1.1 answer on the wire: the gateway's header lines as written (their names'
    case kept), then the body (its ``Content-Length`` among ``fields``)."""
    head = b"HTTP/1.1 %d %s\r\n" % (status, reason.encode("latin-1"))
    head += b"".join(b"%s: %s\r\n" % (name, value) for name, value in fields)
    return head + b"\r\n" + body


class Answerer:
    """The loopback listener and the answers it holds: one per mitmdump process, made by the
    first ``addons.mitm.GatewayAddon`` and handed to each one a script reload loads after it."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._kept: asyncio.Task[None] | None = None
        self._held: dict[str, bytes] = {}
        self.port = 0
        """The listener's port; 0 while it is not listening."""

    async def start(self) -> None:
        """Listens, until the event loop ends (``close`` then, as its tasks are cancelled: in
        mitmdump once every addon's ``done`` has ended, ``asyncio.run``'s end), not at the
        addon's ``done``: mitmdump serves on until then, and a request below the reserved
        prefix, or one refused before, still gets its answer here (until 2026-12-07 the
        listener closed with the addon, and such a request went on to the site, was closed
        unanswered, or got mitmproxy's 502 naming this listener). Listening already (handed
        over by a script reload): nothing to do."""
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self._kept = asyncio.get_running_loop().create_task(self._until_the_end(), name="gateway-answerer")

    async def _until_the_end(self) -> None:
        try:
            await asyncio.get_running_loop().create_future()  # never set: cancelled at the loop's end
        finally:
            self.close()

    def close(self) -> None:
        """Stops listening; a request already connected gets its answer, its body read on
        within the bounds (not waited for: from Python 3.12 ``wait_closed`` waits for every
        connection, an upload's too)."""
        self.port = 0
        if self._server is not None:
            self._server.close()
            self._server = None
        kept, self._kept = self._kept, None
        if kept is not None and kept is not asyncio.current_task():
            kept.cancel()

    def hold(self, answer: bytes) -> str:
        """``answer`` (``answer_bytes``) kept for the one request whose path is ``/`` + the token
        returned: sent as soon as the request's head is in (so a visitor who asked ``Expect:
        100-continue``, and sends no body before an invitation, is refused without one)."""
        token = secrets.token_urlsafe(18)
        self._held[token] = answer
        return token

    def drop(self, token: str) -> None:
        """The answer held under ``token`` let go: its request will not come (the visitor left)."""
        self._held.pop(token, None)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Each request on the connection answered in turn: mitmproxy sends a visitor's next
        request answered here on the connection the last one took when its body has ended (one
        listener per process, so the same address: until 2026-12-07 it closed after each, and
        the next request, sent before mitmproxy saw the close, got mitmproxy's 502). A
        connection between requests is kept however long it idles, until mitmproxy closes it
        (with the visitor's connection: at the visitor's close, or after mitmproxy's 10 minutes
        without a byte), as mitmproxy may send the next request on it at any moment; until
        2026-12-07 it was closed after 10 s idle, and a request mitmproxy sent on it as it
        closed got mitmproxy's 502. One whose body went past the bounds is closed at once."""
        read = h11.Connection(h11.SERVER, max_incomplete_event_size=HEAD_LIMIT)
        try:
            while True:
                event = await _next(read, reader)
                if not isinstance(event, h11.Request):
                    return  # closed, or not HTTP/1.1
                answer = self._held.pop(event.target.decode("ascii", "replace").lstrip("/"), None)
                if answer is None:
                    return  # not one of ours: nothing is answered
                # Answered at once, as ``gateway run`` answers before the body is read; mitmproxy
                # relays it to the visitor while the body still comes.
                writer.write(answer)
                await writer.drain()
                try:
                    async with asyncio.timeout(LINGER_SECONDS):
                        if not await _dropped(read, reader):
                            return
                except TimeoutError:
                    return
                rest, closed = read.trailing_data
                if closed:
                    return
                read = h11.Connection(h11.SERVER, max_incomplete_event_size=HEAD_LIMIT)
                if rest:  # b"" would say the connection closed
                    read.receive_data(rest)
        except (h11.RemoteProtocolError, ConnectionError):
            return
        except asyncio.CancelledError:
            # The loop's end (mitmdump stopping) with this connection open, kept for a next
            # request or a body still dropped: closed quietly. Cancelled, the task's end was
            # printed as an error with a traceback by Python 3.11's stream callback, which asks
            # a cancelled task for its exception. Nothing awaits this task: nothing to tell.
            return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def _next(read: h11.Connection, reader: asyncio.StreamReader) -> Any:
    """``read``'s next event but ``h11.Data``, fed from ``reader`` as it needs."""
    while True:
        event = read.next_event()
        if event is h11.NEED_DATA:
            read.receive_data(await reader.read(READ_SIZE))  # b"": the end, said as such
        elif not isinstance(event, h11.Data):
            return event


async def _dropped(read: h11.Connection, reader: asyncio.StreamReader) -> bool:
    """The rest of the request's body read and dropped: True at its end (the visitor sent it
    all: the connection may serve mitmproxy's next request), False at a close or past
    ``LINGER_BYTES``."""
    taken = 0
    while True:
        event = read.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(READ_SIZE)
            taken += len(data)
            if taken > LINGER_BYTES:
                return False
            read.receive_data(data)
        elif isinstance(event, h11.EndOfMessage):
            return True
        elif isinstance(event, h11.ConnectionClosed):
            return False
        # h11.Data: the body, dropped as it comes
