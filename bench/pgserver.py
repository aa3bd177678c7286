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
import tempfile
from dataclasses import dataclass
from pathlib import Path


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
        await self._ctl("start")

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


def start_server() -> PostgresServer:
    """initdb and start a server on a free loopback port (blocking: call outside the event loop)."""
    found = binaries()
    if found is None:
        raise FileNotFoundError(
            "PostgreSQL server binaries (initdb, pg_ctl) not found; apt-get install postgresql"
        )
    initdb, pg_ctl = found
    root = Path(tempfile.mkdtemp(prefix="gw-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*prefix, initdb, "-D", str(root / "data"), "-A", "trust", "-U", "postgres", "--no-sync"],
        check=True,
        capture_output=True,
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = PostgresServer(root, port, pg_ctl, prefix)
    subprocess.run(server.ctl_args("start"), check=True, capture_output=True)
    return server
