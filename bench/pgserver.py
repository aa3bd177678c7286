"""A throwaway PostgreSQL server in a temporary folder (initdb + pg_ctl), for tests and benchmarks.

The server refuses to run as root: as root, the folder is handed to the
``postgres`` user and every command runs through ``runuser``. Debian keeps the
binaries off PATH (``/usr/lib/postgresql/<version>/bin``): they are looked up
there first. Durability is off (``fsync=off``): these databases are disposable.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.ports import TRIES, free_port, port_taken


def pg_bin(name: str) -> str | None:
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        candidate = Path(folder) / name
        if candidate.exists():
            return str(candidate)
    return shutil.which(name)


@dataclass
class PostgresServer:
    root: Path
    port: int
    pg_ctl: str
    prefix: list[str]

    @property
    def data(self) -> Path:
        return self.root / "data"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def ctl_args(self, action: str) -> list[str]:
        args = [*self.prefix, self.pg_ctl, "-D", str(self.data), "-w", "-t", "60"]
        if action == "start":
            options = f"-k {self.data} -p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off"
            return [*args, "-o", options, "-l", str(self.data / "server.log"), "start"]
        return [*args, "-m", "fast", "stop"]

    async def stop(self) -> None:
        await self._ctl("stop")

    async def start(self) -> None:
        """Start the server again after ``stop``, on its own port: what runs against it (a test's
        sync, a gateway) holds its DSN, so another port will not do. Another process may have
        bound the port while the server was stopped; the start then waits for the port to be
        free again and tries once more (``TRIES`` in all), saying so on stderr."""
        await asyncio.to_thread(_start_on_its_port, self)

    async def _ctl(self, action: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            *self.ctl_args(action), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"pg_ctl {action} failed: {out.decode(errors='replace')}")

    def close(self) -> None:
        subprocess.run(self.ctl_args("stop"), capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def binaries() -> tuple[str, str] | None:
    initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
    return (initdb, pg_ctl) if initdb and pg_ctl else None


def start_server(port: int | None = None) -> PostgresServer:
    """initdb and start a server on a free loopback port (blocking: call outside the event loop).

    ``port`` is the first one tried (a test's); by default one drawn below the kernel's
    ephemeral range (``bench.ports``). A port another process took before the postmaster bound
    it is said on stderr and another is tried, ``TRIES`` in all. A start that fails otherwise
    raises with the server's log, its folder removed."""
    found = binaries()
    if found is None:
        raise FileNotFoundError(
            "PostgreSQL server binaries (initdb, pg_ctl) not found; apt-get install postgresql"
        )
    initdb, pg_ctl = found
    root = Path(tempfile.mkdtemp(prefix="gw-pg-"))
    try:
        prefix: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
            prefix = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            [*prefix, initdb, "-D", str(root / "data"), "-A", "trust", "-U", "postgres", "--no-sync"],
            check=True,
            capture_output=True,
        )
        return _start_on_a_free_port(PostgresServer(root, port or free_port(), pg_ctl, prefix))
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def _started(server: PostgresServer) -> bool:
    """``pg_ctl start`` once: True if it started, False if its port was taken; else raises with
    what the server said."""
    log = server.data / "server.log"
    read = log.stat().st_size if log.exists() else 0
    done = subprocess.run(server.ctl_args("start"), capture_output=True, text=True)
    if done.returncode == 0:
        return True
    with log.open(errors="replace") as file:
        file.seek(read)
        said = done.stdout + done.stderr + file.read()
    if not port_taken(said):
        raise RuntimeError(f"PostgreSQL did not start on port {server.port}: {said.strip()}")
    return False


def _start_on_a_free_port(server: PostgresServer) -> PostgresServer:
    taken: list[int] = []
    for attempt in range(TRIES):
        if attempt:
            server.port = free_port()
        if _started(server):
            return server
        taken.append(server.port)
        print(
            f"PostgreSQL: port {server.port} was taken by another process before the server"
            f" bound it; {'trying another' if attempt + 1 < TRIES else 'giving up'}",
            file=sys.stderr,
            flush=True,
        )
    raise RuntimeError(f"PostgreSQL did not start: ports {', '.join(map(str, taken))} were all taken")


FREED_WITHIN = 30.0
"""Seconds a restart waits, each time, for its port to be free again."""


def _start_on_its_port(server: PostgresServer) -> None:
    for attempt in range(TRIES):
        if _started(server):
            return
        last = attempt + 1 == TRIES
        print(
            f"PostgreSQL: port {server.port} was taken by another process while the server was"
            f" stopped; {'giving up' if last else 'waiting for it to be free to start again'}",
            file=sys.stderr,
            flush=True,
        )
        if not last:
            _wait_free(server.port)
    raise RuntimeError(f"PostgreSQL did not start again: its port {server.port} stayed taken")


def _wait_free(port: int) -> None:
    """Until ``port`` can be bound on loopback as the postmaster binds it (``SO_REUSEADDR``:
    the connections the stop closed, waiting out TIME_WAIT on it, are no obstacle), at most
    ``FREED_WITHIN`` seconds."""
    deadline = time.monotonic() + FREED_WITHIN
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:  # still taken
                pass
            else:
                return
        time.sleep(0.05)
