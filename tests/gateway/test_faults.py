"""Upstream faults beyond those in test_proxy.py (refused → 502, slow → 504, cut mid-body):
an upstream that resets before answering, resets while the visitor's upload streams, or
answers garbage. Each gives a prompt 502/504 with the neutral page, the gateway keeps serving,
and a landing's touchpoint is stored whatever the upstream did."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import aiosqlite
import pytest

from tests.conftest import RawHandler, RunningGateway

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a crashed origin's kernel would."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def reset_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    reset(writer)


async def reset_mid_upload(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    await reader.readexactly(64 * 1024)  # part of the body, then the origin dies
    reset(writer)


async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\x00\x01\x02 not http at all\r\n\r\n")
    await writer.drain()
    writer.close()


async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    await asyncio.sleep(30)  # cancelled at teardown


@pytest.fixture
def faulty(raw_upstream: Callable[[RawHandler], Awaitable[str]]) -> Callable[[Behaviour], Awaitable[str]]:
    """``await faulty(behaviour)``: a raw origin on loopback that misbehaves on every connection,
    except that a request for /ok is answered normally (to show the gateway still serves)."""

    async def start(behaviour: Behaviour) -> str:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                first = await reader.readuntil(b" HTTP/1.1\r\n")
            except asyncio.LimitOverrunError:
                return
            if first.split(b" ")[1] == b"/ok":
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                await writer.drain()
            else:
                await behaviour(reader, writer)

        return await raw_upstream(serve)

    return start


async def touchpoints(gw: RunningGateway) -> list[str]:
    async with aiosqlite.connect(gw.gateway.settings.store_path) as db:
        return [row[0] for row in await db.execute_fetchall("SELECT campaign FROM touchpoints")]


async def still_serves(gw: RunningGateway) -> None:
    async with gw.session.get(gw.url + "/ok") as resp:
        assert (resp.status, await resp.read()) == (200, b"ok")


@pytest.mark.parametrize(
    ("behaviour", "status"),
    [(reset_at_once, 502), (garbage, 502), (hang, 504)],
    ids=["reset", "garbage", "hang"],
)
async def test_failing_upstream_gives_a_neutral_error_and_keeps_the_landing(
    start_gateway, faulty, behaviour: Behaviour, status: int
) -> None:
    gw = await start_gateway(await faulty(behaviour), "[proxy]\nread_timeout = 0.5\n")
    async with gw.session.get(gw.url + "/land?utm_source=ads&utm_campaign=fault") as resp:
        assert resp.status == status
        assert resp.headers["Content-Type"].startswith("text/html")
        assert b"Traceback" not in await resp.read()
    assert await touchpoints(gw) == ["fault"]
    await still_serves(gw)


async def test_upstream_reset_mid_upload_is_a_502_not_a_hang(start_gateway, faulty) -> None:
    gw = await start_gateway(await faulty(reset_mid_upload), "[proxy]\nread_timeout = 2\n")

    async def upload() -> AsyncIterator[bytes]:
        for _ in range(64):  # 4 MB, far more than the origin reads before it dies
            yield b"x" * 65536

    async with gw.session.post(gw.url + "/upload?utm_campaign=upload", data=upload()) as resp:
        assert resp.status == 502
    assert await touchpoints(gw) == ["upload"]
    await still_serves(gw)
