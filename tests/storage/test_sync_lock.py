"""The round lock (``storage.roundlock``) against real processes and a real PostgreSQL: one sync
round of a store, one mirror round of a mirror file, at a time; a ``--once`` waits for the round
running, the gateway's task for the ``--once``'s; a killed holder leaves no lock; a lock that
cannot be had is failed open, and one a local user set up to be followed or held is not used;
and the erasure race two syncs of one store used to have."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from gateway.cli import main
from gateway.events import iso
from gateway.ids import uuid7
from gateway.metrics import Metrics
from storage import central
from storage.erasure import erase_user
from storage.mirror import Mirror
from storage.roundlock import Holder, RoundLock, RoundTimeout, lock_path
from tests.conftest import ENV
from tests.storage.test_sync import OPTIONS, Node, bind, count, touch

ROOT = Path(__file__).resolve().parents[2]
log = logging.getLogger("tests.roundlock")

HOLDER = """
import asyncio, logging, sys
from pathlib import Path
from storage.roundlock import RoundLock

async def main() -> None:
    lock = RoundLock(Path(sys.argv[1]), sys.argv[2], logging.getLogger("holder"), "holder")
    async with lock.hold("gateway"):
        print("held", flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # a round, until the test ends it

asyncio.run(main())
"""


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A command's environment: this checkout's code, the gateway's secrets, and ``extra``."""
    return {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **ENV, **(extra or {})}


class Process:
    """A subprocess of this checkout, its output lines gathered as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.out: list[str] = []
        self.err: list[str] = []
        assert proc.stdout is not None and proc.stderr is not None
        self._readers = [
            asyncio.create_task(self._drain(proc.stdout, self.out)),
            asyncio.create_task(self._drain(proc.stderr, self.err)),
        ]

    @classmethod
    async def start(cls, *args: str, env: dict[str, str] | None = None) -> Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *args, cwd=ROOT,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=environment(env),
        )  # fmt: skip
        return cls(proc)

    @staticmethod
    async def _drain(stream: asyncio.StreamReader, into: list[str]) -> None:
        while line := await stream.readline():
            into.append(line.decode())

    async def until(self, seen: Callable[[], bool] | Callable[[], object]) -> None:
        """Until ``seen()`` holds (bounded: 60 s), or the process ended without it."""
        async with asyncio.timeout(60):
            while not seen():
                assert self.proc.returncode is None, (self.out, self.err)
                await asyncio.sleep(0.01)

    async def finish(self) -> int:
        assert self.proc.stdin is not None
        with contextlib.suppress(ConnectionError):
            self.proc.stdin.write(b"\n")
            self.proc.stdin.close()
        async with asyncio.timeout(60):
            code = await self.proc.wait()
            await asyncio.gather(*self._readers)
        return code

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)


@contextlib.asynccontextmanager
async def started(*args: str, env: dict[str, str] | None = None) -> AsyncIterator[Process]:
    process = await Process.start(*args, env=env)
    try:
        yield process
    finally:
        await process.kill()


@contextlib.asynccontextmanager
async def held_by_a_process(target: Path, kind: str) -> AsyncIterator[Process]:
    """Another process holding ``target``'s round lock as the gateway's task does in a round,
    until ``finish()`` (or killed when the test ends)."""
    async with started("-c", HOLDER, str(target), kind) as holder:
        await holder.until(lambda: "held\n" in holder.out)
        yield holder


async def once_behind(
    holder: Process, once: Callable[..., Awaitable[dict[str, int]]]
) -> tuple[list[Holder], dict[str, int]]:
    """``once(waiting=…)`` (a sync's or a mirror's round) started while ``holder`` holds its
    round lock: it must be told whom it waits for and still wait; then ``holder`` lets go. Who
    it was told of, and what its round delivered."""
    told: list[Holder] = []
    task = asyncio.create_task(once(waiting=told.append))
    try:
        async with asyncio.timeout(60):
            while not told and not task.done():
                await asyncio.sleep(0.01)
        assert told and not task.done(), (told, task)
        assert await holder.finish() == 0
        async with asyncio.timeout(60):
            return told, await task
    finally:
        task.cancel()


async def write_config(tmp_path: Path, node: Node, mirror: Path | None = None) -> Path:
    """A config of ``node``'s store (and of a ``mirror`` file), for the ``gateway`` commands."""
    config = tmp_path / "gw.toml"
    text = (
        f'[storage]\npath = "{node.path}"\nnode = "{node.name}"\n[central]\nurl = "env:GATEWAY_CENTRAL_URL"\n'
    )
    if mirror is not None:
        text += f'mirror_path = "{mirror}"\n'
    await asyncio.to_thread(config.write_text, text)
    return config


async def three_rows_for_a_once(tmp_path: Path, a: Node, kind: str) -> tuple[Path, Path]:
    """Three touchpoints written to ``a``'s store for a ``gateway sync --once`` (``kind``
    "sync") or a ``mirror --once`` ("mirror": synced centrally first) to deliver: the config of
    the command, and the file whose round lock its round takes (the store, or the mirror)."""
    await a.store.write([touch(n, f"{n:032x}") for n in range(3)])
    mirror = tmp_path / "mirror.db"
    config = await write_config(tmp_path, a, mirror)
    if kind == "mirror":
        await a.sync.once()
    return config, a.path if kind == "sync" else mirror


@contextlib.asynccontextmanager
async def with_stderr_gone(*argv: str, env: dict[str, str]) -> AsyncIterator[asyncio.subprocess.Process]:
    """``argv`` run as cron runs it with ``2>&1 | head`` whose head has ended: its standard error
    a pipe with no reader (a write to it fails, EPIPE), its output piped; killed if still
    running when the block ends."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=ROOT, env=environment(env),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=write_end,
        )  # fmt: skip
    finally:
        os.close(write_end)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def read(path: Path) -> str:
    return await asyncio.to_thread(path.read_text)


@pytest.fixture
async def a(tmp_path: Path, central_dsn: str) -> AsyncIterator[Node]:
    node = Node(tmp_path, "a", central_dsn)
    await node.store.open()
    yield node
    await node.store.close()


@pytest.fixture
async def pg(central_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(central_dsn)
    await central.migrate(conn)
    yield conn
    await conn.close()


async def test_a_sync_once_waits_for_the_round_running_then_runs(
    tmp_path: Path, a: Node, pg: asyncpg.Connection, central_dsn: str
) -> None:
    """The gateway's task in a round (another process holding the store's round lock): a
    ``gateway sync --once`` says once whose round it waits for, delivers nothing meanwhile, and
    runs its round when that one ends; with ``--wait 0`` it gives up at once, exit 1."""
    await a.store.write([touch(n, f"{n:032x}") for n in range(3)])
    config = await write_config(tmp_path, a)
    env = {"GATEWAY_CENTRAL_URL": central_dsn}
    command = ("-m", "gateway", "sync", "--once", "-c", str(config))
    async with held_by_a_process(a.path, "sync") as holder, started(*command, env=env) as once:
        whose = f"(the gateway's, pid {holder.proc.pid})"
        line = f"gateway: waiting for the running sync round of this store {whose} to end…\n"
        await once.until(lambda: line in once.err)
        impatient = await Process.start(*command, "--wait", "0", env=env)
        assert await impatient.finish() == 1
        said = "".join(impatient.err)
        # Told not to wait, it does not say it waits (found in an audit, 2026-12-05).
        assert line not in said and f"{whose} did not end within 0 s (--wait)" in said, said
        assert await count(pg, "touchpoints") == 0  # neither ran a round
        assert await holder.finish() == 0
        assert await once.finish() == 0, once.err
    assert "touchpoints: 3 rows\n" in once.out and once.err == [line], once.err
    assert await count(pg, "touchpoints") == 3
    assert await read(lock_path(a.path, "sync")) == ""  # let go: it names no holder


async def test_the_gateways_task_waits_its_turn_behind_a_sync_once(
    a: Node, pg: asyncpg.Connection, central_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A ``sync --once`` in its round (the lock held through the real API, as its process holds
    it): the gateway's task waits, says so once at info level, and syncs once it is let go."""
    caplog.set_level(logging.INFO, "gateway.sync")
    await a.store.write([touch(n, f"{n:032x}") for n in range(3)])
    task = asyncio.create_task(a.sync.run())
    try:
        async with RoundLock(a.path, "sync", log, "test").hold("sync --once"):
            async with asyncio.timeout(60):
                while not any("waiting for the running sync round" in r.getMessage() for r in caplog.records):
                    await asyncio.sleep(0.01)
            assert await count(pg, "touchpoints") == 0
        async with asyncio.timeout(60):
            while await count(pg, "touchpoints") < 3:
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    waits = [(r.levelname, r.getMessage()) for r in caplog.records if "waiting for" in r.getMessage()]
    whose = f"(`gateway sync --once`, pid {os.getpid()})"
    assert waits == [("INFO", f"central sync: waiting for the running sync round {whose} to end")]


async def test_a_killed_holder_leaves_no_lock(tmp_path: Path) -> None:
    """``kill -9`` of the process in a round: the kernel lets its lock go, and the next round
    takes it at once (no stale lock to clear by hand)."""
    store = tmp_path / "node.db"
    await asyncio.to_thread(store.write_bytes, b"")
    await asyncio.to_thread(store.chmod, 0o640)
    lock = RoundLock(store, "sync", log, "test")
    async with held_by_a_process(store, "sync") as holder:
        with pytest.raises(RoundTimeout) as timeout:
            async with lock.hold("sync --once", limit=0):
                pytest.fail("taken while another process holds it")
        assert timeout.value.holder == Holder(holder.proc.pid, "gateway")
        holder.proc.send_signal(signal.SIGKILL)
        assert await holder.proc.wait() == -signal.SIGKILL
    async with lock.hold("sync --once", limit=0):
        assert await read(lock_path(store, "sync")) == f"{os.getpid()} sync --once\n"
    assert await read(lock_path(store, "sync")) == ""
    mode = (await asyncio.to_thread(lock_path(store, "sync").stat)).st_mode
    assert mode & 0o777 == 0o600  # its owner's alone, the store's 0640 whatever


async def test_the_lock_file_is_its_owners_alone(tmp_path: Path) -> None:
    """Anyone who can open the lock file can ``flock`` it, read-only, and hold every round back:
    it is made 0600 (until 2026-12-05 it had the store's 0644), by root given the store's owner,
    and one found with group or other permissions is narrowed to 0600."""
    store = tmp_path / "node.db"
    await asyncio.to_thread(store.write_bytes, b"")
    await asyncio.to_thread(store.chmod, 0o644)
    root = os.geteuid() == 0
    if root:  # the store is the gateway's user's, the round a root cron's
        await asyncio.to_thread(os.chown, store, 65534, 65534)
    path = lock_path(store, "sync")
    lock = RoundLock(store, "sync", log, "test")
    async with lock.hold("sync --once"):
        pass
    made = await asyncio.to_thread(path.stat)
    assert made.st_mode & 0o777 == 0o600
    if root:
        assert (made.st_uid, made.st_gid) == (65534, 65534)
    await asyncio.to_thread(path.chmod, 0o666)  # as an older gateway, or someone, left it
    async with lock.hold("sync --once"):
        pass
    assert (await asyncio.to_thread(path.stat)).st_mode & 0o777 == 0o600


@pytest.mark.parametrize("planted", ["symlink", "hard link", "owned by another user"])
async def test_a_lock_path_planted_to_write_another_file_is_not_used(
    tmp_path: Path, a: Node, pg: asyncpg.Connection, caplog: pytest.LogCaptureFixture, planted: str
) -> None:
    """Whoever can write the store's folder (the gateway's user) can put a symbolic link or a
    hard link to any file at the lock path, or a file of theirs, before root's cron runs a
    ``sync --once``: until 2026-12-05 that round emptied the file linked to, and wrote into it.
    Now such a lock file is not opened through the link, or not used, never written to: the
    round runs without it (fail open), with one warning naming the file."""
    if planted == "owned by another user" and os.geteuid() != 0:
        pytest.skip("only root's rounds refuse a lock file of another user")
    victim = tmp_path / "victim.txt"
    await asyncio.to_thread(victim.write_text, "IMPORTANT CONTENT\n")
    path = lock_path(a.path, "sync")
    if planted == "symlink":
        await asyncio.to_thread(path.symlink_to, victim)
    elif planted == "hard link":
        await asyncio.to_thread(path.hardlink_to, victim)
    else:
        victim = path
        await asyncio.to_thread(victim.write_text, "IMPORTANT CONTENT\n")
        await asyncio.to_thread(os.chown, path, 65534, 65534)
    await a.store.write([touch(n, f"{n:032x}") for n in range(3)])
    assert (await a.sync.once())["touchpoints"] == 3
    assert await read(victim) == "IMPORTANT CONTENT\n"
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and f"cannot take the round lock {path} (" in warned[0], warned


async def test_a_holder_the_lock_file_misnames_does_not_fail_the_round(
    a: Node, pg: asyncpg.Connection
) -> None:
    """The lock file read for whom a round waits says ``²`` (a digit to ``str.isdigit``, not
    to ``int``; the file is anyone's who holds the lock to write): the ``sync --once`` waits
    for "another process" and runs its round. Until 2026-12-05 it failed with a ValueError."""
    await a.store.write([touch(n, f"{n:032x}") for n in range(3)])
    async with held_by_a_process(a.path, "sync") as holder:
        await asyncio.to_thread(lock_path(a.path, "sync").write_text, "\u00b2 gateway\n")
        told, delivered = await once_behind(holder, a.sync.once)
    assert told == [Holder(None, "")]
    assert delivered["touchpoints"] == 3
    assert await count(pg, "touchpoints") == 3


async def test_the_lag_gauges_are_kept_current_while_the_task_waits_for_the_lock(
    a: Node, pg: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """Another process's round lasts (a ``sync --once`` stopped with Ctrl-Z holds it as long):
    the gateway's task, waiting for it, goes on counting the rows it has not delivered into
    ``gateway_sync_lag_rows`` as rows are written. Until 2026-12-05 the gauges were published
    only after a round, and stood still for as long as the wait lasted."""
    caplog.set_level(logging.INFO, "gateway.sync")
    gauge = a.metrics.sync_lag_rows.labels("central", "touchpoints")
    task: asyncio.Task[None] | None = None
    async with held_by_a_process(a.path, "sync") as holder:
        task = asyncio.create_task(a.sync.run())
        try:
            async with asyncio.timeout(60):
                while not any("waiting for the running sync round" in r.getMessage() for r in caplog.records):
                    await asyncio.sleep(0.01)
            for first, written in ((0, 3), (3, 5)):
                await a.store.write([touch(n, f"{n:032x}") for n in range(first, written)])
                async with asyncio.timeout(20):  # under pytest's 60 s: a TimeoutError, said here
                    while gauge._value.get() != written:
                        await asyncio.sleep(0.01)
            assert await count(pg, "touchpoints") == 0  # still waiting: nothing delivered
            assert await holder.finish() == 0
            async with asyncio.timeout(60):
                while await count(pg, "touchpoints") < 5 or gauge._value.get() != 0:
                    await asyncio.sleep(0.01)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_a_round_lock_that_cannot_be_taken_is_failed_open(
    a: Node, pg: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """The lock file cannot be opened (here a directory stands in its place; a read-only
    directory, a file system without flock alike): the sync warns once, naming the file, and
    delivers anyway — a sync held back loses nothing but delays everything."""
    await asyncio.to_thread(lock_path(a.path, "sync").mkdir)
    await a.store.write([touch(1, "1" * 32)])
    assert (await a.sync.once())["touchpoints"] == 1
    await a.store.write([touch(2, "2" * 32)])
    assert (await a.sync.once())["touchpoints"] == 1
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and f"cannot take the round lock {lock_path(a.path, 'sync')}" in warned[0], warned


async def test_an_erasure_a_sync_once_delivers_cannot_pass_a_batch_in_flight(
    tmp_path: Path, a: Node, pg: asyncpg.Connection, central_dsn: str
) -> None:
    """The task's round has read a batch of the user's touchpoints (dated after the erasure to
    come: a clock ahead, a signed event's own time) and waits to write it; the user is erased
    on the node, and a cron ``sync --once`` starts. Until 2026-12-05 the ``--once`` delivered
    the erasure centrally, then the task's batch went in after it, and those rows, newer than
    the erasure, stayed for ever. Now the ``--once`` waits for the round, which delivers the
    erasure itself after its batch, deleting it."""
    known = "1" * 32
    later = datetime.now(UTC) + timedelta(hours=1)
    await a.store.write([touch(n, known, at=later + timedelta(seconds=n)) for n in range(3)])
    await a.store.write([bind(known, "u-1")])
    config = await write_config(tmp_path, a)
    waiting = "SELECT count(*) FROM pg_locks WHERE relation = 'touchpoints'::regclass AND NOT granted"
    blocker = pg.transaction()
    await blocker.start()
    blocking = True
    task: asyncio.Task[dict[str, int]] | None = None
    try:
        await pg.execute("LOCK TABLE touchpoints IN ACCESS EXCLUSIVE MODE")
        task = asyncio.create_task(a.sync.once())  # the task's round
        async with asyncio.timeout(60):  # its batch read, waiting to be written
            while not await pg.fetchval(waiting):
                await asyncio.sleep(0.01)
        await erase_user(
            a.path, "u-1", "raw", body_key=b"k" * 32, event_id=uuid7(), ts=iso(datetime.now(UTC)), node="a"
        )
        env = {"GATEWAY_CENTRAL_URL": central_dsn}
        async with started("-m", "gateway", "sync", "--once", "-c", str(config), env=env) as once:
            # Now waiting for the round; before, delivering the erasure (stopped at the table).
            async with asyncio.timeout(60):
                while not (any("waiting for the running sync round" in line for line in once.err)):
                    if await pg.fetchval(waiting) >= 2:
                        break
                    await asyncio.sleep(0.01)
            await blocker.rollback()
            blocking = False
            async with asyncio.timeout(60):
                await task
            assert await once.finish() == 0, once.err
    finally:
        if blocking:
            await blocker.rollback()
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert await count(pg, "erasures") == 1
    assert await pg.fetchval("SELECT count(*) FROM touchpoints WHERE visitor_key = $1", known) == 0


async def test_a_mirror_once_waits_for_the_mirror_round_running(
    tmp_path: Path, a: Node, pg: asyncpg.Connection, central_dsn: str
) -> None:
    """The mirror file's round lock, as the sync's: a ``mirror --once`` (the real ``Mirror``)
    waits while another process is in a round of the same file, told whose, then runs its own;
    a mirror of another file does not wait."""
    await a.store.write([touch(n, f"{n:032x}") for n in range(3)])
    await a.sync.once()
    path = tmp_path / "mirror.db"
    mirror = Mirror(path, central_dsn, OPTIONS, Metrics())
    async with held_by_a_process(path, "mirror") as holder:
        other = Mirror(tmp_path / "other.db", central_dsn, OPTIONS, Metrics())
        assert (await other.once(wait=0))["touchpoints"] == 3
        told, stored = await once_behind(holder, mirror.once)
    assert told == [Holder(holder.proc.pid, "gateway")]
    assert stored["touchpoints"] == 3


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "soon"])
def test_wait_is_a_number_of_seconds(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("sync", "mirror"):
        with pytest.raises(SystemExit) as stopped:
            main([command, "--once", "--wait", value])
        assert stopped.value.code == 2
        assert "--wait: must be a number of seconds, 0 or more" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["sync", "mirror"])
async def test_a_once_whose_stderr_reader_is_gone_waits_and_runs_its_round(
    tmp_path: Path, a: Node, pg: asyncpg.Connection, central_dsn: str, kind: str
) -> None:
    """``gateway sync --once`` / ``mirror --once`` run by cron with ``2>&1 | head`` whose head
    has ended, while the gateway's round runs: the line saying whom it waits for cannot be
    written. Until 2026-12-07 that ended the command (exit 120, its round not run); now
    the line goes nowhere, as the progress lines do (stderr to /dev/null), and the command
    waits, runs its round and ends 0."""
    config, locked = await three_rows_for_a_once(tmp_path, a, kind)
    env = {"GATEWAY_CENTRAL_URL": central_dsn}
    command = (sys.executable, "-m", "gateway", kind, "--once", "-c", str(config), "--no-progress")
    async with (
        held_by_a_process(locked, kind) as holder,
        with_stderr_gone(*command, env=env) as once,
    ):
        # Its waiting line failed to be written: its stderr is now /dev/null (or it ended).
        async with asyncio.timeout(60):
            while once.returncode is None and await asyncio.to_thread(_stderr_of, once.pid) != os.devnull:
                await asyncio.sleep(0.01)
        assert once.returncode is None, once.returncode  # still waiting for the round
        assert await holder.finish() == 0
        async with asyncio.timeout(60):
            out, _ = await once.communicate()
    assert once.returncode == 0 and b"touchpoints: 3 rows\n" in out, (once.returncode, out)
    if kind == "sync":
        assert await count(pg, "touchpoints") == 3


@pytest.mark.parametrize(("wait", "stderr"), [("0", "gone"), ("0.2", "gone"), ("0", "closed")])
@pytest.mark.parametrize("kind", ["sync", "mirror"])
async def test_a_once_whose_wait_runs_out_with_nowhere_to_say_it_ends_1(
    tmp_path: Path, a: Node, pg: asyncpg.Connection, central_dsn: str, kind: str, wait: str, stderr: str
) -> None:
    """``gateway sync --once --wait N`` / ``mirror --once --wait N`` with ``2>&1 | head`` whose
    head has ended, while the gateway's round runs longer than N: its ``sync failed: … did not
    end within …`` could not be written, and until 2026-12-07 that ended it with exit status 120
    (with ``--wait 0``, where no waiting line came first) instead of 1 (its round not run, for
    cron to see). Now the message goes nowhere, as the waiting line does, and it ends 1. With
    stderr closed (``2>&-``) the message went to standard output, among the rows; now nowhere."""
    config, locked = await three_rows_for_a_once(tmp_path, a, kind)
    env = {"GATEWAY_CENTRAL_URL": central_dsn}
    command: tuple[str, ...] = (sys.executable, "-m", "gateway", kind, "--once", "-c", str(config))
    command += ("--no-progress", "--wait", wait)
    if stderr == "closed":
        command = ("/bin/sh", "-c", 'exec "$@" 2>&-', "sh", *command)
    async with (
        held_by_a_process(locked, kind),
        with_stderr_gone(*command, env=env) as once,
    ):
        async with asyncio.timeout(60):
            out, _ = await once.communicate()
    assert once.returncode == 1 and out == b"", (once.returncode, out)


def _stderr_of(pid: int) -> str:
    """What process ``pid``'s standard error is (``/dev/null``, ``pipe:[…]``); "" once it ended."""
    try:
        return os.readlink(f"/proc/{pid}/fd/2")
    except OSError:
        return ""
