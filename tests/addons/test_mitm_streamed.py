"""The mitmproxy host's answers to requests it answers itself whose bodies mitmproxy streams
(``addons/mitm_answer.py``), end to end through ``mitmdump`` on loopback: the body's bound, the
flow line, a shutdown, a script reload and an HTTP/2 visitor."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ENV

pytest.importorskip("mitmproxy")

from addons.mitm_answer import LINGER_BYTES, Answerer, answer_bytes
from tests.addons.test_mitm import VERBOSE, config, mitmdump_process, said, script_copy, touched

BLOCK = '[bots]\non_block = "block"\n'
KEEP = ("-q", "--set", "keep_host_header=true")
HEAD = "Host: shop.example\r\nContent-Type: application/octet-stream\r\n"
BOT = "User-Agent: curl/8.5.0\r\n"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64)"
CHUNKS = "5\r\nhello\r\n0\r\n\r\n"


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


async def answer_of(reader: asyncio.StreamReader) -> tuple[str, bytes]:
    """The status line and body of one answer with a ``Content-Length`` (b"" at a close)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(line.split(":")[1]) for line in lines if line.lower().startswith("content-length:"))
    return lines[0], await reader.readexactly(length)


async def pumped(writer: asyncio.StreamWriter, piece: bytes) -> int:
    """Bytes of ``piece`` after ``piece`` written until the connection closes."""
    sent = 0
    with contextlib.suppress(ConnectionError):
        while True:
            writer.write(piece)
            await writer.drain()
            sent += len(piece)
    return sent


async def test_a_refused_upload_is_answered_at_once_and_its_body_read_within_bounds(
    tmp_path: Path, secrets: None, raw_upstream: Any
) -> None:
    """As ``gateway run`` answers a request it refuses before its body is read, then reads and
    drops the rest for at most 10 s (aiohttp's lingering) before it closes, the mitmproxy host
    answers a streamed refused request (a blocked bot's upload, a ``/_gw/`` POST) as soon as
    its head is in, then reads what follows for at most 10 s and ``LINGER_BYTES``, and closes.
    Until 2026-12-07 the answer came only once the whole body had been read, however large
    (only ``body_size_limit`` bounded it; a chunked body nothing): a 10 GB upload held its
    connection and mitmdump's CPU until it had all gone through."""
    seen: list[bytes] = []

    async def site(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if first := await reader.read(1):  # mitmproxy connects with each visitor (eager)
            seen.append(first)

    toml = await asyncio.to_thread(config, tmp_path, "mitm", BLOCK)
    async with mitmdump_process(await raw_upstream(site), toml, tmp_path / "conf", KEEP) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        # A blocked bot's upload announcing 10 GB: its 403 before the body, then cut off.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = f"POST /upload?utm_source=bot HTTP/1.1\r\n{HEAD}{BOT}Content-Length: {10 * 1024**3}\r\n\r\n"
        writer.write(head.encode() + b"x" * 65536)
        status, body = await answer_of(reader)
        assert status == "HTTP/1.1 403 Forbidden" and b"403 Forbidden" in body
        sent = await asyncio.wait_for(pumped(writer, b"x" * 262144), 120)
        writer.close()
        # What mitmproxy and the kernel buffer besides what the listener read and dropped.
        assert sent < LINGER_BYTES + 256 * 1024**2, sent
        # A chunked POST below /_gw/ whose sender pauses after its first chunk: its 404 at once,
        # the connection closed once the 10 s are out.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = f"POST /_gw/events HTTP/1.1\r\n{HEAD}Transfer-Encoding: chunked\r\n\r\n"
        writer.write(head.encode() + b"5\r\nhello\r\n")
        status, body = await answer_of(reader)
        assert status == "HTTP/1.1 404 Not Found" and b'"status":404' in body.replace(b" ", b"")
        assert await asyncio.wait_for(reader.read(), 60) == b""
        writer.close()
        # A refused upload that ends within the bounds leaves its connection open for the next.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(2):
            writer.write(f"POST /_gw/events HTTP/1.1\r\n{HEAD}Content-Length: 5\r\n\r\nhello".encode())
            assert (await answer_of(reader))[0] == "HTTP/1.1 404 Not Found"
        writer.close()
    assert seen == []


async def test_the_flow_line_names_the_visitors_request_not_the_listener(
    tmp_path: Path, secrets: None, raw_upstream: Any
) -> None:
    """mitmdump's flow line for a streamed request this host answers names what the visitor
    asked for, as any other flow's: the method, the reverse target (or, with ``showhost``, the
    visitor's ``Host``) and the path. Until 2026-12-07 it named the loopback listener that
    answered it (``POST http://127.0.0.1:41087/WyBKoDM4…``)."""

    async def site(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)

    toml = await asyncio.to_thread(config, tmp_path, "mitm", BLOCK)
    origin = await raw_upstream(site)
    lines: list[str] = []
    for showhost, shows in (("false", origin), ("true", "http://shop.example")):
        shown = (
            *VERBOSE[:2],
            "--set",
            "flow_detail=1",
            "--set",
            "keep_host_header=true",
            "--set",
            f"showhost={showhost}",
        )
        async with mitmdump_process(origin, toml, tmp_path / "conf", shown) as (url, process):
            port = int(url.rsplit(":", 1)[1])
            for request in (
                f"POST /_gw/events?x=1 HTTP/1.1\r\n{HEAD}Content-Length: 5\r\n\r\nhello",
                f"POST /upload HTTP/1.1\r\n{HEAD}{BOT}Transfer-Encoding: chunked\r\n\r\n{CHUNKS}",
            ):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(request.encode())
                await answer_of(reader)
                writer.close()
            lines += await said(process, f"POST {shows}/_gw/events?x=1")
            lines += await said(process, f"POST {shows}/upload")
    flows = [line for line in lines if ": POST " in line]
    assert len(flows) == 4 and not [
        line for line in flows if origin not in line and "shop.example" not in line
    ], lines


async def test_a_refused_upload_while_mitmdump_stops_gets_its_answer(
    tmp_path: Path, secrets: None, raw_upstream: Any
) -> None:
    """mitmdump stopping (SIGTERM) serves on while the addon closes its store; a streamed
    request the addon answers in that time gets its answer. Until 2026-12-07 the loopback
    listener closed first, and such a request's connection was closed unanswered. The store's
    close is held here by another connection's write lock on it (its queued landing waits a
    busy timeout, 5 s, before it is dropped)."""

    async def site(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    toml = await asyncio.to_thread(config, tmp_path, "mitm", 'durability = "async"\n' + BLOCK)
    async with mitmdump_process(await raw_upstream(site), toml, tmp_path / "conf", KEEP) as (url, process):
        port = int(url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)  # before the stop
        landing, sends = await asyncio.open_connection("127.0.0.1", port)
        page = f"GET /?utm_source=x HTTP/1.1\r\n{HEAD}User-Agent: {BROWSER}\r\n\r\n".encode()
        sends.write(page)
        assert (await answer_of(landing))[0] == "HTTP/1.1 200 OK"  # the store is open
        lock = sqlite3.connect(tmp_path / "mitm.db", isolation_level=None, check_same_thread=False)
        try:
            await asyncio.to_thread(lock.execute, "BEGIN EXCLUSIVE")
            sends.write(page)
            assert (await answer_of(landing))[0] == "HTTP/1.1 200 OK"  # its event queued, held
            process.send_signal(signal.SIGTERM)
            # The addon's end under way: a second in, of the 5 s its store's close is held.
            await asyncio.sleep(1)
            head = f"POST /upload HTTP/1.1\r\n{HEAD}{BOT}Transfer-Encoding: chunked\r\n\r\n"
            writer.write(head.encode() + b"5\r\nhello\r\n0\r\n\r\n")
            got = await asyncio.wait_for(reader.read(), 60)
        finally:
            await asyncio.to_thread(lock.close)
            writer.close()
            sends.close()
        await asyncio.wait_for(process.wait(), 60)
    assert got.startswith(b"HTTP/1.1 403 Forbidden\r\n"), got[:200]


async def test_a_script_reload_while_a_refused_upload_is_in_flight_answers_it(
    tmp_path: Path, secrets: None, raw_upstream: Any
) -> None:
    """An edit of the script (mitmproxy runs it again, a new instance) while a refused upload's
    body is still arriving: the upload gets its answer, and the next request on its
    connection is answered by the new instance."""

    async def site(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)

    script = await asyncio.to_thread(script_copy, tmp_path)
    toml = await asyncio.to_thread(config, tmp_path, "mitm", BLOCK)
    async with mitmdump_process(
        await raw_upstream(site),
        toml,
        tmp_path / "conf",
        (*VERBOSE, "--set", "keep_host_header=true"),
        script=script,
    ) as (url, process):
        await said(process, "Loading script")
        port = int(url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"POST /_gw/events HTTP/1.1\r\n{HEAD}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n".encode()
        )
        await asyncio.sleep(0.5)  # its head through the old instance
        await asyncio.to_thread(touched, script)
        await said(process, "script reloaded")
        writer.write(b"5\r\nworld\r\n0\r\n\r\n")
        first = await answer_of(reader)
        writer.write(f"POST /upload HTTP/1.1\r\n{HEAD}{BOT}Content-Length: 5\r\n\r\nhello".encode())
        second = await answer_of(reader)
        writer.close()
    assert [first[0], second[0]] == ["HTTP/1.1 404 Not Found", "HTTP/1.1 403 Forbidden"]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl (with HTTP/2) is the HTTP/2 client here")
async def test_an_http2_visitors_refused_upload_gets_its_answer(
    tmp_path: Path, secrets: None, raw_upstream: Any
) -> None:
    """An HTTP/2 visitor (TLS to mitmdump, ``h2`` negotiated; mitmproxy's own CA, made in a
    temporary confdir, signs the certificate) sending a streamed request this host answers:
    a ``/_gw/`` POST and a blocked bot's upload each get their answer over HTTP/2."""

    async def site(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)

    version = await asyncio.to_thread(subprocess.run, ["curl", "--version"], capture_output=True, text=True)
    if "HTTP2" not in version.stdout:
        pytest.skip("this curl has no HTTP/2")
    toml = await asyncio.to_thread(config, tmp_path, "mitm", BLOCK)
    upload = tmp_path / "upload.bin"
    await asyncio.to_thread(upload.write_bytes, b"x" * 300_000)
    got = []
    async with mitmdump_process(await raw_upstream(site), toml, tmp_path / "conf", KEEP) as (url, _):
        https = url.replace("http://", "https://")
        for path, agent in (("/_gw/events", "Mozilla/5.0"), ("/upload", "curl/8.5.0")):
            curl = await asyncio.create_subprocess_exec(
                "curl", "-sk", "--http2", "-o", "-", "-w", "\n%{http_version} %{http_code}",
                "-A", agent, "-H", "Content-Type: application/octet-stream",
                "--data-binary", f"@{upload}", f"{https}{path}",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await asyncio.wait_for(curl.communicate(), 60)
            got.append((curl.returncode, out.decode().rsplit("\n", 1)[-1], err.decode()))
    assert got == [(0, "2 404", ""), (0, "2 403", "")], got


LINGER = """
import asyncio
from pathlib import Path

HERE = Path({here!r})


class Linger:
    \"\"\"Loaded after the gateway's script: its ``done`` runs once the gateway's has ended (the
    store closed), and holds mitmdump serving until the test has sent what it sends then.\"\"\"

    async def done(self):
        (HERE / "begun").touch()
        for _ in range(1200):
            if (HERE / "go").exists():
                return
            await asyncio.sleep(0.05)


addons = [Linger()]
"""


async def test_after_its_store_closed_at_a_stop_the_reserved_prefix_is_still_answered(
    tmp_path: Path, secrets: None, raw_upstream: Any
) -> None:
    """mitmdump serves on while its addons end at a stop, and after the gateway's has closed
    its store (a later addon's end still running: another script here, which holds it until
    the test is done). Until 2026-12-07 every request then went to the site untracked, a path
    below ``proxy.reserved_prefix`` too, which the site must never see. A request whose body
    mitmproxy does not stream (a GET, a small POST) below the prefix is now answered as
    always (its 404, its JSON 431); everything else still goes to the site (fail open), a
    blocked bot's page too, untracked."""
    seen: list[bytes] = []

    async def site(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            seen.append(head.split(b"\r\n", 1)[0])
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    linger = tmp_path / "linger.py"
    await asyncio.to_thread(linger.write_text, LINGER.format(here=str(tmp_path)))
    toml = await asyncio.to_thread(config, tmp_path, "mitm", BLOCK)
    extra = (*KEEP, "-s", str(linger))
    got: list[tuple[str, bytes]] = []
    async with mitmdump_process(await raw_upstream(site), toml, tmp_path / "conf", extra, stream="1m") as (
        url,
        process,
    ):
        port = int(url.rsplit(":", 1)[1])

        async def sent(request: str) -> tuple[str, bytes]:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(request.encode())
                return await answer_of(reader)
            finally:
                writer.close()

        page = f"GET /?utm_source=x HTTP/1.1\r\n{HEAD}User-Agent: {BROWSER}\r\n\r\n"
        assert (await sent(page))[0] == "HTTP/1.1 200 OK"  # the store is open
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):  # the gateway's addon has ended: its store is closed
            while not await asyncio.to_thread((tmp_path / "begun").exists):
                await asyncio.sleep(0.05)
        try:
            for request in (
                f"GET /_gw/events HTTP/1.1\r\n{HEAD}User-Agent: {BROWSER}\r\n\r\n",
                f"GET /%5Fgw/segment HTTP/1.1\r\n{HEAD}User-Agent: {BROWSER}\r\n\r\n",
                f"POST /_gw/events HTTP/1.1\r\n{HEAD}User-Agent: {BROWSER}\r\nContent-Length: 5\r\n\r\nhello",
                f"GET /_gw/events HTTP/1.1\r\n{HEAD}X-Big: {'a' * 9000}\r\n\r\n",
                page,
                f"GET /page HTTP/1.1\r\n{HEAD}{BOT}\r\n",
            ):
                got.append(await sent(request))
        finally:
            await asyncio.to_thread((tmp_path / "go").touch)
        await asyncio.wait_for(process.wait(), 60)
    statuses = [status for status, _ in got]
    assert (
        statuses
        == ["HTTP/1.1 404 Not Found"] * 3
        + ["HTTP/1.1 431 Request Header Fields Too Large"]
        + ["HTTP/1.1 200 OK"] * 2
    ), got
    assert all(b'"status":4' in body.replace(b" ", b"") for _, body in got[:4]), got
    # The page before the stop without its tracking parameter; after the store closed, as sent.
    assert seen == [b"GET / HTTP/1.1", b"GET /?utm_source=x HTTP/1.1", b"GET /page HTTP/1.1"], seen


def site_of_heads(seen: list[bytes]) -> Any:
    """A site that notes each request line it gets, reads the body its ``Content-Length``
    announces and answers 200 ``ok``."""

    async def site(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            seen.append(head.split(b"\r\n", 1)[0])
            lines = head.split(b"\r\n")
            length = next(
                (int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length:")), 0
            )
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    return site


async def test_after_its_store_closed_at_a_stop_a_streamed_reserved_request_is_answered_not_forwarded(
    tmp_path: Path, secrets: None, raw_upstream: Any
) -> None:
    """After the gateway's addon has ended at a stop (its store closed) while mitmdump still
    serves (a later addon's end running), a request below ``proxy.reserved_prefix`` whose body
    mitmproxy streams (chunked, or over ``stream_large_bodies``) gets the prefix's 404 in JSON
    from the loopback answerer, and a small one sent with ``Expect: 100-continue`` gets it
    without an invitation. Until 2026-12-07 the answerer closed with the store: the streamed
    ones went on to the site, which must never see the prefix, and the one expecting 100
    Continue had its connection closed unanswered."""
    seen: list[bytes] = []
    linger = tmp_path / "linger.py"
    await asyncio.to_thread(linger.write_text, LINGER.format(here=str(tmp_path)))
    toml = await asyncio.to_thread(config, tmp_path, "mitm", BLOCK)
    extra = (*KEEP, "-s", str(linger))
    got: list[tuple[str, bytes]] = []
    origin = await raw_upstream(site_of_heads(seen))
    async with mitmdump_process(origin, toml, tmp_path / "conf", extra, stream="1m") as (url, process):
        port = int(url.rsplit(":", 1)[1])
        page = f"GET /?utm_source=x HTTP/1.1\r\n{HEAD}User-Agent: {BROWSER}\r\n\r\n"
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(page.encode())
        assert (await answer_of(reader))[0] == "HTTP/1.1 200 OK"  # the store is open
        writer.close()
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):  # the gateway's addon has ended: its store is closed
            while not await asyncio.to_thread((tmp_path / "begun").exists):
                await asyncio.sleep(0.05)
        big = 2 * 1024**2
        try:
            for head, body in (
                (f"POST /_gw/events HTTP/1.1\r\n{HEAD}Transfer-Encoding: chunked\r\n\r\n", CHUNKS.encode()),
                (f"POST /_gw/events HTTP/1.1\r\n{HEAD}Content-Length: {big}\r\n\r\n", b"x" * big),
                (
                    f"POST /_gw/events HTTP/1.1\r\n{HEAD}Expect: 100-continue\r\nContent-Length: 5\r\n\r\n",
                    b"",
                ),
            ):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                try:
                    writer.write(head.encode() + body)
                    got.append(await answer_of(reader))
                except (asyncio.IncompleteReadError, ConnectionError) as err:
                    got.append(("closed unanswered", repr(err).encode()))
                finally:
                    writer.close()
        finally:
            await asyncio.to_thread((tmp_path / "go").touch)
        await asyncio.wait_for(process.wait(), 60)
    assert [status for status, _ in got] == ["HTTP/1.1 404 Not Found"] * 3, got
    assert all(b'"status":404' in body.replace(b" ", b"") for _, body in got), got
    assert seen == [b"GET / HTTP/1.1"], seen


HOLD = """
import asyncio
from pathlib import Path

from addons import mitm_shared

HERE = Path({here!r})


class Hold:
    \"\"\"Loaded after the gateway's script: a request the gateway's answerer is to answer (its
    answer held, its head not yet sent there) is held here until the test touches ``go``, then
    until the gateway instances a script reload ended have ended; ``done`` as ``LINGER``'s.\"\"\"

    async def requestheaders(self, flow):
        if "gateway_answer" not in flow.metadata:
            return
        (HERE / "held").touch()
        for _ in range(1200):
            if (HERE / "go").exists():
                break
            await asyncio.sleep(0.05)
        while mitm_shared.ENDING:
            await asyncio.sleep(0.05)

    async def done(self):
        (HERE / "begun").touch()
        for _ in range(1200):
            if (HERE / "end").exists():
                return
            await asyncio.sleep(0.05)


addons = [Hold()]
"""


async def waited(path: Path) -> None:
    async with asyncio.timeout(60):
        while not await asyncio.to_thread(path.exists):
            await asyncio.sleep(0.05)


async def test_a_refused_upload_decided_before_a_stop_is_answered_after_the_addon_ended(
    tmp_path: Path, secrets: None, raw_upstream: Any
) -> None:
    """A streamed request the gateway refused before a stop, whose head reaches the loopback
    answerer only once the gateway's addon has ended (another addon's hook still running on it
    meanwhile, held here): it gets its answer, a blocked bot's 403 and a ``/_gw/`` 404. Until
    2026-12-07 the answerer had closed with the addon, and mitmproxy answered its own 502 naming
    the answerer's refused connection (or, decided after the close, the connection was closed
    unanswered)."""
    seen: list[bytes] = []
    hold = tmp_path / "hold.py"
    await asyncio.to_thread(hold.write_text, HOLD.format(here=str(tmp_path)))
    toml = await asyncio.to_thread(config, tmp_path, "mitm", BLOCK)
    origin = await raw_upstream(site_of_heads(seen))
    got: list[tuple[str, bytes]] = []
    async with mitmdump_process(origin, toml, tmp_path / "conf", (*KEEP, "-s", str(hold))) as (url, process):
        port = int(url.rsplit(":", 1)[1])
        sent = []
        for head in (
            f"POST /upload HTTP/1.1\r\n{HEAD}{BOT}Transfer-Encoding: chunked\r\n\r\n",
            f"POST /_gw/events HTTP/1.1\r\n{HEAD}Transfer-Encoding: chunked\r\n\r\n",
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head.encode() + CHUNKS.encode())
            sent.append((reader, writer))
        try:
            await waited(tmp_path / "held")
            process.send_signal(signal.SIGTERM)
            await waited(tmp_path / "begun")  # the gateway's addon has ended
            await asyncio.to_thread((tmp_path / "go").touch)
            for reader, _ in sent:
                try:
                    got.append(await answer_of(reader))
                except asyncio.IncompleteReadError as err:
                    got.append(("closed unanswered", err.partial))
        finally:
            await asyncio.to_thread((tmp_path / "end").touch)
            for _, writer in sent:
                writer.close()
        await asyncio.wait_for(process.wait(), 60)
    assert [status for status, _ in got] == ["HTTP/1.1 403 Forbidden", "HTTP/1.1 404 Not Found"], got
    assert b'"status":404' in got[1][1].replace(b" ", b""), got
    assert seen == [], seen


async def test_a_script_reload_between_a_refusal_and_its_answer_keeps_the_answerer(
    tmp_path: Path, secrets: None, raw_upstream: Any
) -> None:
    """A script reload between the request hook that refused a streamed ``/_gw/`` POST and the
    moment mitmproxy sends its head to the loopback answerer (held here until the old instance
    has ended): the answer is still there. Until 2026-12-07 each instance had its own answerer,
    the old one closed once the old instance ended (it does not wait for such a request, which
    leaves nothing to record), and mitmproxy answered its own 502 naming the refused
    connection to it."""
    seen: list[bytes] = []
    hold = tmp_path / "hold.py"
    await asyncio.to_thread(hold.write_text, HOLD.format(here=str(tmp_path)))
    script = await asyncio.to_thread(script_copy, tmp_path)
    toml = await asyncio.to_thread(config, tmp_path, "mitm", BLOCK)
    origin = await raw_upstream(site_of_heads(seen))
    extra = (*VERBOSE, "--set", "keep_host_header=true", "-s", str(hold))
    async with mitmdump_process(origin, toml, tmp_path / "conf", extra, script=script) as (url, process):
        await said(process, "Loading script")
        port = int(url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(f"POST /_gw/events HTTP/1.1\r\n{HEAD}Transfer-Encoding: chunked\r\n\r\n".encode())
            writer.write(CHUNKS.encode())
            await waited(tmp_path / "held")
            await asyncio.to_thread(touched, script)
            await said(process, "script reloaded")
            await asyncio.to_thread((tmp_path / "go").touch)  # on once the old instance has ended
            got = await answer_of(reader)
        finally:
            writer.close()
            await asyncio.to_thread((tmp_path / "end").touch)
    assert got[0] == "HTTP/1.1 404 Not Found" and b'"status":404' in got[1].replace(b" ", b""), got
    assert seen == [], seen


async def test_the_answerer_serves_the_next_request_on_a_connection_and_listens_until_the_loop_ends() -> None:
    """mitmproxy sends a visitor's next request the answerer answers on the connection the last
    one took, once its body has ended (one answerer per process, the same address, across script
    reloads too): it is answered there. Until 2026-12-07 the answerer closed the connection after
    each answer, and a next request sent before mitmproxy saw the close got mitmproxy's 502. It
    listens until the event loop ends (its tasks cancelled), not until an addon's ``done``."""
    answerer = Answerer()
    await answerer.start()
    port = answerer.port
    await answerer.start()  # handed over by a reload: listening already, the same port
    assert answerer.port == port
    answers = [answer_bytes(status, "X", [(b"Content-Length", b"2")], b"ok") for status in (403, 404)]
    first, second = (answerer.hold(answer) for answer in answers)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"POST /{first} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        assert (await answer_of(reader))[0] == "HTTP/1.1 403 X"
        writer.write(CHUNKS.encode())  # the body's end, then the next request at once
        writer.write(f"POST /{second} HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello".encode())
        assert (await answer_of(reader))[0] == "HTTP/1.1 404 X"
    finally:
        writer.close()
    # Until the loop ends: a task that is cancelled then closes it.
    kept = [task for task in asyncio.all_tasks() if task.get_name() == "gateway-answerer"]
    assert len(kept) == 1 and answerer.port == port
    kept[0].cancel()
    await asyncio.gather(*kept, return_exceptions=True)
    assert answerer.port == 0
    with pytest.raises(ConnectionError):
        await asyncio.open_connection("127.0.0.1", port)


STALL = '''\
import time

from addons.mitm_answer import LINGER_SECONDS

seen = 0


def requestheaders(flow):
    """Runs after the gateway's script: its second request sent to the answerer holds
    mitmproxy's event loop past the answerer's former idle close, so mitmproxy picks the kept
    connection before it could read that close (mitmdump busy with other visitors)."""
    global seen
    if "gateway_answer" in flow.metadata:
        seen += 1
        if seen == 2:
            time.sleep(LINGER_SECONDS + 1)
'''


async def test_a_refused_upload_on_a_connection_idle_past_the_answerers_bound_is_answered(
    tmp_path: Path, secrets: None, raw_upstream: Any
) -> None:
    """mitmproxy sends a visitor's next request the answerer answers on the connection the last
    one took, whenever it comes (the visitor's connection may idle for minutes: mitmproxy closes
    it after 10 min without a byte): the answerer keeps that connection open until mitmproxy
    closes it. Until 2026-12-07 it closed it after 10 s idle, and a request mitmproxy sent on it
    as it closed (here: mitmdump busy past the 10 s, so it picked the connection before it read
    the close) got mitmproxy's 502 ``server closed connection`` instead of the gateway's
    answer."""
    seen: list[bytes] = []

    async def site(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if first := await reader.read(1):
            seen.append(first)

    stall = tmp_path / "stall.py"
    await asyncio.to_thread(stall.write_text, STALL)
    toml = await asyncio.to_thread(config, tmp_path, "mitm", BLOCK)
    async with mitmdump_process(
        await raw_upstream(site), toml, tmp_path / "conf", (*KEEP, "-s", str(stall))
    ) as (
        url,
        _,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", int(url.rsplit(":", 1)[1]))
        try:
            got = []
            for _ in range(2):
                writer.write(f"POST /_gw/events HTTP/1.1\r\n{HEAD}Content-Length: 5\r\n\r\nhello".encode())
                got.append(await answer_of(reader))
        finally:
            writer.close()
    assert [status for status, _ in got] == ["HTTP/1.1 404 Not Found"] * 2, got
    assert b'"status":404' in got[1][1].replace(b" ", b""), got
    assert seen == [], seen


SHOW_PORT = '''\
def requestheaders(flow):
    """Runs after the gateway's script: names the answerer's port once a request goes there."""
    if "gateway_answer" in flow.metadata:
        print(f"answerer at {flow.request.port}", flush=True)
'''


def answerer_connections(port: int) -> int:
    """Established TCP connections on loopback whose local port is ``port`` (the listener's end)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == "01" and int(local.rsplit(":", 1)[1], 16) == port:
            count += 1
    return count


async def test_the_answerers_kept_connection_closes_with_the_visitors(
    tmp_path: Path, secrets: None, raw_upstream: Any
) -> None:
    """The answerer keeps a connection from mitmproxy however long it idles, and none is left
    behind: mitmproxy closes it as the visitor's connection it served closes."""

    async def site(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)

    shows = tmp_path / "shows.py"
    await asyncio.to_thread(shows.write_text, SHOW_PORT)
    toml = await asyncio.to_thread(config, tmp_path, "mitm", BLOCK)
    extra = (*VERBOSE, "--set", "keep_host_header=true", "-s", str(shows))
    async with mitmdump_process(await raw_upstream(site), toml, tmp_path / "conf", extra) as (url, process):
        reader, writer = await asyncio.open_connection("127.0.0.1", int(url.rsplit(":", 1)[1]))
        try:
            writer.write(f"POST /_gw/events HTTP/1.1\r\n{HEAD}Content-Length: 5\r\n\r\nhello".encode())
            assert (await answer_of(reader))[0] == "HTTP/1.1 404 Not Found"
            line = (await said(process, "answerer at "))[-1]
            port = int(line.rsplit(" ", 1)[1])
            assert await asyncio.to_thread(answerer_connections, port) == 1
        finally:
            writer.close()
        for _ in range(300):
            if await asyncio.to_thread(answerer_connections, port) == 0:
                break
            await asyncio.sleep(0.1)
        assert await asyncio.to_thread(answerer_connections, port) == 0


async def test_an_answerer_connection_open_when_the_loop_ends_closes_without_a_traceback() -> None:
    """mitmdump stopped with its connection to the answerer open, kept for the visitor's next
    request (or a body still being dropped): at the loop's end its
    task is cancelled, and it closes quietly. Until 2026-12-07 Python 3.11's stream callback
    asked the cancelled task for its exception, and mitmdump printed ``Exception in callback …
    CancelledError`` with a traceback through ``mitm_answer.py`` at the stop."""

    def run() -> list[str]:
        said: list[str] = []
        visitor = socket.socket()  # mitmproxy's end of the connection: open past the loop's end

        async def main() -> None:
            loop = asyncio.get_running_loop()
            loop.set_exception_handler(lambda _, context: said.append(str(context.get("message"))))
            answerer = Answerer()
            await answerer.start()
            token = answerer.hold(answer_bytes(404, "Not Found", [(b"Content-Length", b"2")], b"no"))
            visitor.setblocking(False)
            await loop.sock_connect(visitor, ("127.0.0.1", answerer.port))
            await loop.sock_sendall(
                visitor, f"POST /{token} HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello".encode()
            )
            got = b""
            while not got.endswith(b"\r\n\r\nno"):
                got += await loop.sock_recv(visitor, 1024)
            assert got.startswith(b"HTTP/1.1 404 Not Found\r\n"), got
            await asyncio.sleep(0.2)  # its body dropped: the connection waits for the next request

        try:
            asyncio.run(main())  # as mitmdump's ends: every task left cancelled
        finally:
            visitor.close()
        return said

    assert await asyncio.to_thread(run) == []
