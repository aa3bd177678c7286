"""systemd's readiness protocol on a real ``gateway run``: a datagram socket bound here stands for
systemd's (``NOTIFY_SOCKET``), the gateway's stderr a file standing for the journal's stream
(``JOURNAL_STREAM``), read as the messages arrive: what the log says at each message is what
the gateway had done by then."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import socket
import struct
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import ENV
from tests.gatewayproc import children


def _write(path: Path, workers: int, fmt: str = "json") -> None:
    path.write_text(
        f'[proxy]\nlisten = "127.0.0.1:0"\nupstream = "http://127.0.0.1:9"\nworkers = {workers}\n'
        f'[admin]\nlisten = "127.0.0.1:0"\n[storage]\npath = "gw.db"\nnode = "test"\n'
        f'[log]\nformat = "{fmt}"\n'
    )


def _receiver(address: str) -> socket.socket:
    """systemd's side: a datagram socket at ``address`` (``@name``: abstract) that learns each
    sender's process ID (``SO_PASSCRED``), as systemd checks ``NotifyAccess`` by it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    sock.bind(b"\0" + address[1:].encode() if address.startswith("@") else address)
    sock.setblocking(False)
    return sock


async def _message(sock: socket.socket, timeout: float = 60) -> tuple[int, list[str]]:
    """The next message: its sender's process ID and its fields."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        while True:
            try:
                data, ancillary, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except BlockingIOError:
                arrived = loop.create_future()
                loop.add_reader(sock.fileno(), arrived.set_result, None)
                try:
                    await arrived
                finally:
                    loop.remove_reader(sock.fileno())
                continue
            pid = next(
                struct.unpack("3i", cdata[:12])[0]
                for level, kind, cdata in ancillary
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS
            )
            return pid, data.decode().split("\n")


def _nothing_waiting(sock: socket.socket) -> None:
    with contextlib.suppress(BlockingIOError):
        raise AssertionError(f"a message more: {sock.recv(4096)!r}")


@contextlib.asynccontextmanager
async def _running(
    tmp_path: Path, workers: int, env: dict[str, str], fmt: str = "json"
) -> AsyncIterator[tuple[asyncio.subprocess.Process, Path]]:
    """A gateway with its stderr in a file (yielded with it, to read from); killed after, if it
    has not stopped."""
    cfg = tmp_path / "gateway.toml"
    await asyncio.to_thread(_write, cfg, workers, fmt)
    log = tmp_path / "stderr.log"
    with await asyncio.to_thread(log.open, "wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "run", "-c", str(cfg),
            stdout=asyncio.subprocess.DEVNULL, stderr=out,
            env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path), **ENV, **env},
        )  # fmt: skip
        try:
            yield proc, log
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def _line_with(log: Path, text: str) -> str:
    """The first line of ``log`` holding ``text``, once written."""
    async with asyncio.timeout(60):
        while not (found := [line for line in await _lines(log) if text in line]):
            await asyncio.sleep(0.05)
    return found[0]


def _journal(log: Path) -> str:
    """``JOURNAL_STREAM`` naming ``log`` (made empty), the file a gateway's stderr will go to."""
    log.touch()
    st = log.stat()
    return f"{st.st_dev}:{st.st_ino}"


async def _lines(log: Path) -> list[str]:
    return (await asyncio.to_thread(log.read_text, encoding="utf-8")).splitlines()


async def _records(log: Path) -> list[dict[str, object]]:
    """The JSON records of a log written with priority prefixes, each prefix checked."""
    records = []
    for line in await _lines(log):
        prefix = re.match(r"<(\d)>", line)
        assert prefix, line
        record = json.loads(line[prefix.end() :])
        want = {"critical": 2, "error": 3, "warning": 4, "info": 6, "debug": 7}[str(record["level"])]
        assert int(prefix.group(1)) == want, line
        records.append(record)
    return records


async def _serves(address: str) -> None:
    host, _, port = address.rpartition(":")
    _, writer = await asyncio.open_connection(host, int(port))
    writer.close()
    await writer.wait_closed()


async def _stopped(proc: asyncio.subprocess.Process) -> int:
    async with asyncio.timeout(60):
        return await proc.wait()


async def _reloads(proc: asyncio.subprocess.Process, sock: socket.socket) -> list[str]:
    """A SIGHUP: ``RELOADING=1`` then ``READY=1``, both from ``proc`` itself; the first's fields."""
    proc.send_signal(signal.SIGHUP)
    pid, reloading = await _message(sock)
    assert pid == proc.pid and reloading[0] == "RELOADING=1", reloading
    pid, fields = await _message(sock)
    assert pid == proc.pid and fields[0] == "READY=1", fields
    return reloading


async def _taken(pid: int, sig: signal.Signals) -> None:
    """Once process ``pid`` has taken ``sig`` (sent to it): no longer pending (``ShdPnd`` in
    ``/proc/PID/status``), its handler run. A signal sent while another is pending would be
    handled before it (the kernel stacks the later handler's frame on the earlier's)."""
    status = Path(f"/proc/{pid}/status")
    async with asyncio.timeout(60):
        while True:
            lines = (await asyncio.to_thread(status.read_text)).splitlines()
            (pending,) = [int(line.split()[1], 16) for line in lines if line.startswith("ShdPnd:")]
            if not pending & (1 << (sig - 1)):
                return
            await asyncio.sleep(0.001)


async def _stops(proc: asyncio.subprocess.Process, sock: socket.socket) -> None:
    """A SIGTERM: ``STOPPING=1`` from ``proc``, a clean exit, and nothing more sent."""
    proc.send_signal(signal.SIGTERM)
    pid, fields = await _message(sock)
    assert pid == proc.pid and fields[0] == "STOPPING=1", fields
    assert await _stopped(proc) == 0
    _nothing_waiting(sock)


async def test_one_process_says_ready_once_it_listens_reloading_and_stopping(tmp_path: Path) -> None:
    """``Type=notify``: ``READY=1`` once the listeners listen (a connection then is taken), not at
    the start; a SIGHUP's reload ``RELOADING=1`` with ``MONOTONIC_USEC`` then ``READY=1`` once
    done; ``STOPPING=1`` at SIGTERM. Its stderr is the journal: each line has its priority."""
    notify = tmp_path / "notify"
    sock = _receiver(str(notify))
    journal = await asyncio.to_thread(_journal, tmp_path / "stderr.log")
    env = {"NOTIFY_SOCKET": str(notify), "JOURNAL_STREAM": journal}
    with contextlib.closing(sock):
        async with _running(tmp_path, 1, env) as (proc, log):
            pid, fields = await _message(sock)
            assert pid == proc.pid
            assert fields[0] == "READY=1" and any(f.startswith("STATUS=serving") for f in fields), fields
            (listening,) = [r for r in await _records(log) if r["msg"] == "listening"]
            await _serves(str(listening["proxy"]))
            await _serves(str(listening["admin"]))

            fields = await _reloads(proc, sock)
            (usec,) = [int(f.partition("=")[2]) for f in fields if f.startswith("MONOTONIC_USEC=")]
            assert 0 < usec <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            assert [r for r in await _records(log) if str(r["msg"]).startswith("config reloaded")]

            await _stops(proc, sock)
            assert [r for r in await _records(log) if r["msg"] == "stopped"]


async def test_two_workers_the_supervisor_alone_says_ready_once_every_worker_listens(tmp_path: Path) -> None:
    """With a supervisor, ``READY=1`` comes from it alone (``NotifyAccess=main``), once both
    workers listen (both ``listening`` lines are written by then), and after a reload once both
    reloaded; no worker has ``NOTIFY_SOCKET`` in its environment. An abstract socket (``@…``).
    The journal's priorities on every process's text lines."""
    notify = f"@gateway-test-{uuid.uuid4().hex}"
    sock = _receiver(notify)
    journal = await asyncio.to_thread(_journal, tmp_path / "stderr.log")
    with contextlib.closing(sock):
        async with _running(
            tmp_path, 2, {"NOTIFY_SOCKET": notify, "JOURNAL_STREAM": journal}, fmt="text"
        ) as (proc, log):
            pid, fields = await _message(sock)
            assert pid == proc.pid and fields[0] == "READY=1", fields
            listening = [line for line in await _lines(log) if "listening proxy=" in line]
            assert len(listening) == 2, await _lines(log)
            assert all(line.startswith("<6>") for line in listening), listening
            workers = await asyncio.to_thread(children, proc.pid)
            assert len(workers) == 2
            for worker in workers:
                environ = (await asyncio.to_thread(Path(f"/proc/{worker}/environ").read_bytes)).split(b"\0")
                assert not [v for v in environ if v.startswith(b"NOTIFY_SOCKET=")]

            assert any(f.startswith("MONOTONIC_USEC=") for f in await _reloads(proc, sock))
            reloaded = [line for line in await _lines(log) if "config reloaded" in line]
            assert len(reloaded) == 2, await _lines(log)

            await _stops(proc, sock)
            for line in await _lines(log):
                assert re.match(r"<[2-7]>\d{4}-", line), line


async def test_without_notify_socket_nothing_is_sent_and_the_log_has_no_prefix(tmp_path: Path) -> None:
    """Not run by systemd: no message anywhere (a socket bound but not named stays empty), and
    stderr, a file here that ``JOURNAL_STREAM`` does not name, gets plain lines."""
    notify = tmp_path / "notify"
    sock = _receiver(str(notify))
    other = await asyncio.to_thread(_journal, tmp_path / "other")
    with contextlib.closing(sock):
        async with _running(tmp_path, 1, {"JOURNAL_STREAM": other}) as (proc, log):
            await _line_with(log, '"listening"')
            proc.send_signal(signal.SIGHUP)
            await _line_with(log, "config reloaded")
            proc.send_signal(signal.SIGTERM)
            assert await _stopped(proc) == 0
            _nothing_waiting(sock)
            for line in await _lines(log):
                assert line.startswith("{"), line


@pytest.mark.parametrize("workers", [1, 2])
async def test_reloading_is_said_as_the_sighup_comes_before_any_gathering(
    tmp_path: Path, workers: int
) -> None:
    """``RELOADING=1`` (with ``MONOTONIC_USEC``) is the first thing a SIGHUP does: systemd holds
    ``systemctl reload`` open only if it arrives before ``ExecReload``'s ``kill -HUP`` exits. A
    SIGTERM right behind the SIGHUP (delivered after it: the lower signal first) finds it said,
    and ``STOPPING=1`` follows. Until 2026-12-08 the supervisor said it only once its 0.2 s
    wait for the SIGHUPs that come with one (``RELOAD_GATHER``) was over: a stop within it, and
    systemd was never told of the reload."""
    notify = tmp_path / "notify"
    sock = _receiver(str(notify))
    with contextlib.closing(sock):
        async with _running(tmp_path, workers, {"NOTIFY_SOCKET": str(notify)}) as (proc, _):
            pid, fields = await _message(sock)
            assert pid == proc.pid and fields[0] == "READY=1", fields
            proc.send_signal(signal.SIGHUP)
            await _taken(proc.pid, signal.SIGHUP)
            proc.send_signal(signal.SIGTERM)
            pid, fields = await _message(sock)
            assert pid == proc.pid and fields[0] == "RELOADING=1", fields
            assert [f for f in fields if f.startswith("MONOTONIC_USEC=")], fields
            pid, fields = await _message(sock)
            assert pid == proc.pid and fields[0] == "STOPPING=1", fields
            assert await _stopped(proc) == 0
            _nothing_waiting(sock)


@pytest.mark.parametrize("where", ["gone", "long"])
async def test_a_notify_socket_that_cannot_be_told_is_a_warning_and_the_gateway_runs_on(
    tmp_path: Path, where: str
) -> None:
    """Nothing listens where ``NOTIFY_SOCKET`` points (systemd's socket gone), or its path is
    too long for a unix socket: the gateway serves, reloads and stops as ever, and says once, as
    a warning naming the variable and what systemd does next (``TimeoutStartSec``), that it
    could not tell systemd ``READY=1``. Until 2026-12-08 it was said at info: under
    ``Type=notify`` systemd then stops the gateway at the start's timeout, and ``journalctl -p
    warning`` showed nothing to say why."""
    named = str(tmp_path / "gone") if where == "gone" else "/" + "x" * 200
    async with _running(tmp_path, 1, {"NOTIFY_SOCKET": named}) as (proc, log):
        await _serves(json.loads(await _line_with(log, '"listening"'))["proxy"])
        proc.send_signal(signal.SIGHUP)
        await _line_with(log, "config reloaded")
        proc.send_signal(signal.SIGTERM)
        assert await _stopped(proc) == 0
        said = [json.loads(x) for x in await _lines(log) if "could not tell" in x]
        assert len(said) == 1, said
        msg = str(said[0]["msg"])
        assert said[0]["level"] == "warning", said
        assert f"NOTIFY_SOCKET={named} READY=1" in msg and "TimeoutStartSec" in msg, said
        assert [r for r in map(json.loads, await _lines(log)) if r["msg"] == "stopped"]
