"""The mitmproxy host's own answers to requests whose bodies mitmproxy streams.

mitmproxy 11 cannot answer a request whose body it streams (``stream_large_bodies`` below it,
or a chunked one with it set): a ``flow.response`` set then stops the flow ("Can't set a
response and enable streaming at the same time"). Such a request the gateway answers itself
(a path under ``proxy.reserved_prefix``, a refusal, a blocked bot's upload) is sent instead,
stripped to its framing, to this loopback listener inside mitmdump, which reads its body to the
end, drops it, and answers what the gateway held for it: mitmproxy relays that answer to the
visitor as a site's, through the response hooks. Owns the listener (``127.0.0.1``, a port of
the system's choosing) and the answers held, each under a one-time token that the request's
path carries. An answer to a request that asked ``Expect: 100-continue`` goes at once, before its
body (which the visitor sends only when invited, and is not). Imports nothing of mitmproxy
(``tests/test_layout.py``); ``h11``, mitmproxy's own HTTP/1 parser, reads the requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterable

import h11

HEAD_LIMIT = 64 * 1024
"""Bytes of a request head this listener reads: ``addons.mitm`` sends it a path and two lines."""
READ_SIZE = 64 * 1024


def answer_bytes(status: int, reason: str, fields: Iterable[tuple[bytes, bytes]], body: bytes) -> bytes:
    """The HTTP/1.1 answer on the wire: the gateway's header lines as written (their names'
    case kept), then the body (its ``Content-Length`` among ``fields``)."""
    head = b"HTTP/1.1 %d %s\r\n" % (status, reason.encode("latin-1"))
    head += b"".join(b"%s: %s\r\n" % (name, value) for name, value in fields)
    return head + b"\r\n" + body


class Answerer:
    """The loopback listener and the answers it holds (one per ``addons.mitm.GatewayAddon``)."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._held: dict[str, tuple[bytes, bool]] = {}
        self.port = 0
        """The listener's port; 0 while it is not listening."""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def close(self) -> None:
        """Stops listening; a request already connected gets its answer (not waited for: from
        Python 3.12 ``wait_closed`` waits for every connection, an upload's too)."""
        self.port = 0
        if self._server is not None:
            self._server.close()
            self._server = None

    def hold(self, answer: bytes, at_once: bool = False) -> str:
        """``answer`` (``answer_bytes``) kept for the one request whose path is ``/`` + the token
        returned; ``at_once``: sent as soon as the request's head is in, its body then read and
        dropped as it comes (a visitor who asked ``Expect: 100-continue`` sends no body before an
        invitation, and is refused without one)."""
        token = secrets.token_urlsafe(18)
        self._held[token] = (answer, at_once)
        return token

    def drop(self, token: str) -> None:
        """The answer held under ``token`` let go: its request will not come (the visitor left)."""
        self._held.pop(token, None)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answer: bytes | None = None
        read = h11.Connection(h11.SERVER, max_incomplete_event_size=HEAD_LIMIT)
        try:
            while True:
                event = read.next_event()
                if event is h11.NEED_DATA:
                    read.receive_data(await reader.read(READ_SIZE))  # b"": the end, said as such
                elif isinstance(event, h11.Request):
                    held = self._held.pop(event.target.decode("ascii", "replace").lstrip("/"), None)
                    if held is None:
                        return  # not one of ours: nothing is answered
                    answer, at_once = held
                    if at_once:
                        writer.write(answer)
                        await writer.drain()
                        answer = b""  # sent: the body that may follow is dropped
                elif isinstance(event, h11.EndOfMessage):
                    writer.write(answer or b"")
                    await writer.drain()
                    return
                elif isinstance(event, h11.ConnectionClosed):
                    return  # the body cut short: mitmproxy has told the visitor already
                # h11.Data: the body, dropped as it comes
        except (h11.RemoteProtocolError, ConnectionError):
            return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
