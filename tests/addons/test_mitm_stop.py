"""mitmdump stopped (SIGTERM) with visitors' connections open, end to end on loopback: what it
prints and how it exits."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import re
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ENV

pytest.importorskip("mitmproxy")

from addons.mitm import StopReports, quiet_at_the_end
from tests.addons.test_mitm import config, mitmdump_process
from tests.gateway.test_sdnotify import _message, _nothing_waiting, _receiver

HEAD = "Host: shop.example\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n"
KEY = base64.b64encode(b"sixteen byte key").decode()
ACCEPT = base64.b64encode(hashlib.sha1((KEY + "258EAFA5-E914-47DA-95CA-C5AB0DC11B65").encode()).digest())


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


async def head_of(reader: asyncio.StreamReader) -> str:
    """An answer's head, and its body read when it has a ``Content-Length``."""
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)).decode("latin-1")
    for line in head.split("\r\n"):
        if line.lower().startswith("content-length:"):
            await asyncio.wait_for(reader.readexactly(int(line.split(":")[1])), 60)
    return head


@pytest.mark.parametrize("command", ["mitmdump", "gateway mitmdump"])
async def test_a_stop_with_visitors_connections_open_prints_no_traceback(
    tmp_path: Path, secrets: None, raw_upstream: Any, command: str
) -> None:
    """mitmdump stopped (SIGTERM) while visitors' connections are open — kept alive after a page,
    after a streamed ``/_gw/`` POST the gateway answered itself, a WebSocket, a request the site
    has not answered yet, one that has sent nothing — ends with exit code 0 and prints no
    traceback. Until 2026-12-07 it printed, for each such connection, ``Exception in callback
    StreamReaderProtocol.connection_made.<locals>.callback`` and a traceback ending in
    ``CancelledError`` (Python 3.11's stream callback asking mitmproxy's cancelled connection
    task for its exception as the loop ended)."""
    asked = asyncio.Event()

    async def site(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            if head.startswith("GET /slow "):
                asked.set()
                await reader.read()  # never answered: open until mitmproxy closes it
                return
            if "websocket" in head.lower():
                writer.write(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Accept: " + ACCEPT + b"\r\n\r\n"
                )
                await writer.drain()
                await reader.read()  # the socket stays open, no frame either way
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    toml = await asyncio.to_thread(config, tmp_path, "mitm")
    argv = (sys.executable, "-m", "gateway", "mitmdump") if command == "gateway mitmdump" else ()
    async with mitmdump_process(await raw_upstream(site), toml, tmp_path / "conf", command=argv) as (
        url,
        process,
    ):
        port = int(url.rsplit(":", 1)[1])
        visitors = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
        try:
            (page, sends_page), (gw, sends_gw), (ws, sends_ws), (_, sends_slow), _ = visitors
            sends_page.write(f"GET /?utm_source=x HTTP/1.1\r\n{HEAD}\r\n".encode())
            assert (await head_of(page)).startswith("HTTP/1.1 200 OK\r\n")
            sends_gw.write(
                f"POST /_gw/events HTTP/1.1\r\n{HEAD}Transfer-Encoding: chunked\r\n\r\n"
                "5\r\nhello\r\n0\r\n\r\n".encode()
            )
            assert (await head_of(gw)).startswith("HTTP/1.1 404 Not Found\r\n")
            sends_ws.write(
                f"GET /ws HTTP/1.1\r\n{HEAD}Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            assert (await head_of(ws)).startswith("HTTP/1.1 101 Switching Protocols\r\n")
            sends_slow.write(f"GET /slow HTTP/1.1\r\n{HEAD}\r\n".encode())
            await asyncio.wait_for(asked.wait(), 60)
            process.send_signal(signal.SIGTERM)
            assert process.stdout is not None
            printed = (await asyncio.wait_for(process.stdout.read(), 60)).decode()
            code = await asyncio.wait_for(process.wait(), 60)
        finally:
            for _, writer in visitors:
                writer.close()
    assert "Traceback" not in printed and "Exception in callback" not in printed, printed
    assert "CancelledError" not in printed, printed
    assert code == 0, printed


def test_at_the_loops_end_a_cancelled_task_is_nothing_and_another_error_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What ``done`` puts in place at a stop takes over once the task it was called in (mitmproxy's
    master's) has ended, not before: while it runs, the loop's handler is the one it had
    (mitmproxy's, which reports every error as mitmproxy does). Then a cancelled task asked for
    its exception is nothing, and any other error is one line naming it, with no traceback."""
    caplog.set_level(logging.INFO)
    loop = asyncio.new_event_loop()

    async def master() -> object:
        quiet_at_the_end()
        return asyncio.get_running_loop().get_exception_handler()

    def cancelled() -> None:
        raise asyncio.CancelledError

    def broken() -> None:
        raise ValueError("a real fault")

    try:
        assert loop.run_until_complete(master()) is None  # the loop's own, until that end
        assert isinstance(loop.get_exception_handler(), StopReports)
        loop.call_soon(cancelled)
        loop.call_soon(broken)
        loop.run_until_complete(asyncio.sleep(0.01))
    finally:
        loop.close()
    said = [(r.name, r.levelno, r.getMessage(), r.exc_info) for r in caplog.records]
    assert len(said) == 1, said
    name, level, message, exc_info = said[0]
    assert (name, level, exc_info) == ("gateway.mitm", logging.ERROR, None)
    assert message.startswith("gateway: as mitmdump stopped: Exception in callback "), message
    assert message.endswith(" (ValueError: a real fault)") and "\n" not in message, message


@pytest.mark.parametrize("command", ["mitmdump", "gateway mitmdump"])
async def test_events_the_stores_close_could_not_write_are_still_told(
    tmp_path: Path, secrets: None, raw_upstream: Any, command: str
) -> None:
    """A stop with a visitor's connection open (what ``StopReports`` quiets) while another
    connection holds the store's write lock: the landing queued then cannot be written, and
    the operator is told how many events were not stored, by either command, as before."""

    async def site(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    toml = await asyncio.to_thread(config, tmp_path, "mitm", 'durability = "async"\n')
    argv = (sys.executable, "-m", "gateway", "mitmdump") if command == "gateway mitmdump" else ()
    async with mitmdump_process(await raw_upstream(site), toml, tmp_path / "conf", command=argv) as (
        url,
        process,
    ):
        port = int(url.rsplit(":", 1)[1])
        page, sends = await asyncio.open_connection("127.0.0.1", port)
        lock = sqlite3.connect(tmp_path / "mitm.db", isolation_level=None, check_same_thread=False)
        try:
            sends.write(f"GET /?utm_source=x HTTP/1.1\r\n{HEAD}\r\n".encode())
            assert (await head_of(page)).startswith("HTTP/1.1 200 OK\r\n")  # the store is open
            await asyncio.to_thread(lock.execute, "BEGIN EXCLUSIVE")
            sends.write(f"GET /?utm_source=y HTTP/1.1\r\n{HEAD}\r\n".encode())
            assert (await head_of(page)).startswith("HTTP/1.1 200 OK\r\n")  # its landing queued, held
            process.send_signal(signal.SIGTERM)  # the connection still open
            assert process.stdout is not None
            printed = (await asyncio.wait_for(process.stdout.read(), 60)).decode()
            code = await asyncio.wait_for(process.wait(), 60)
        finally:
            await asyncio.to_thread(lock.close)
            sends.close()
    # The landing held, and the one before it when it was still queued (durability "async").
    told = re.search(
        r"closing while another connection holds the store's write lock: ([12]) events not stored", printed
    )
    assert told, printed
    assert "Traceback" not in printed and "CancelledError" not in printed, printed
    assert code == 0, printed


async def test_gateway_mitmdump_tells_systemd_ready_reloading_and_stopping(
    tmp_path: Path, secrets: None, raw_upstream: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a ``Type=notify`` unit (``NOTIFY_SOCKET``, a socket here standing for systemd's):
    ``READY=1`` once mitmproxy listens and the store is open, ``RELOADING=1`` then ``READY=1``
    around a SIGHUP's reload, ``STOPPING=1`` at SIGTERM, each from mitmdump's own process (the
    command's, which it replaced: ``NotifyAccess=main``). Until 2026-12-08 it sent nothing: its
    unit had to be ``Type=simple``, started before it served and reloaded before it had."""

    async def site(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    notify = tmp_path / "notify"
    sock = _receiver(str(notify))
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify))
    toml = await asyncio.to_thread(config, tmp_path, "mitm")
    argv = (sys.executable, "-m", "gateway", "mitmdump")
    try:
        async with mitmdump_process(await raw_upstream(site), toml, tmp_path / "conf", command=argv) as (
            url,
            process,
        ):
            pid, ready = await _message(sock, 30)
            assert pid == process.pid and ready[0] == "READY=1", ready
            _nothing_waiting(sock)
            port = int(url.rsplit(":", 1)[1])
            page, sends = await asyncio.open_connection("127.0.0.1", port)
            sends.write(f"GET /?utm_source=ready HTTP/1.1\r\n{HEAD}\r\n".encode())
            assert (await head_of(page)).startswith("HTTP/1.1 200 OK\r\n")
            sends.close()
            process.send_signal(signal.SIGHUP)
            pid, reloading = await _message(sock)
            assert pid == process.pid and reloading[0] == "RELOADING=1", reloading
            assert reloading[1].startswith("MONOTONIC_USEC="), reloading
            pid, again = await _message(sock)
            assert pid == process.pid and again[0] == "READY=1", again
            process.send_signal(signal.SIGTERM)
            pid, stopping = await _message(sock)
            assert pid == process.pid and stopping[0] == "STOPPING=1", stopping
            assert process.stdout is not None
            printed = (await asyncio.wait_for(process.stdout.read(), 60)).decode()
            assert await asyncio.wait_for(process.wait(), 60) == 0, printed
        _nothing_waiting(sock)
    finally:
        sock.close()

    def landings() -> int:
        with contextlib.closing(sqlite3.connect(tmp_path / "mitm.db")) as db:
            return int(db.execute("SELECT count(*) FROM touchpoints").fetchone()[0])

    assert await asyncio.to_thread(landings) == 1
