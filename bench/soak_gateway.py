"""The ``gateway run`` a soak run (``bench/soak.py``) watches: its config, start and stop.

Writes nothing itself: ``gateway_config`` returns the TOML (an identity rule on ``/login``, a
conversion rule on ``/checkout``, a signed-event sender, JSON logs at info) that the soak
writes into its temp folder. ``start_gateway`` runs ``python -m gateway run`` with the
secrets below in its environment, waits for the proxy's and the admin API's addresses on
stdout, and keeps every JSON line the process logs on stderr (``Gateway.log``: the reloads'
task counts, the warnings). ``stop_gateway`` sends SIGTERM (SIGKILL after 20 s, to its workers
too) and returns the exit code. The secrets are fixed test values, also used by the traffic to sign webhooks
and call the admin API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.proxy import descendants, kill_all
from bench.servers import HOST

SECRET = "s" * 40
TOKEN = "t" * 40
WEBHOOK_SECRET = "w" * 32
STOP_SECONDS = 20.0
"""SIGTERM's time to stop ``gateway run`` (its default ``proxy.shutdown_grace``, 10 s, and its
store's flush) before SIGKILL. Until 2026-12-07 30 s: with the tree's SIGKILL and the folder's
removal after it, more than the 30 s a caller that ends the soak with SIGTERM (the benchmark
tests' ``bench_process``) waits before it kills the lot, so the soak's folder stayed."""


def gateway_config(workdir: Path, origin: str, workers: int, extra: str = "") -> str:
    """The soak's config; ``extra`` (TOML, tables not already here, e.g. ``[bots]``; a literal
    ``\\n`` also separates lines) is appended."""
    extra = extra.replace("\\n", "\n")
    return f"""\
[proxy]
listen = "{HOST}:0"
upstream = "{origin}"
workers = {workers}

[admin]
listen = "{HOST}:0"
token = "env:GATEWAY_ADMIN_TOKEN"

[storage]
path = "{workdir / "gateway.db"}"
node = "soak"

[log]
level = "info"
format = "json"

[identity]
secret = "env:GATEWAY_SECRET"

[[identity.rules]]
name = "login"
path = "/login"
status = [302]
user_id = {{ form = "username" }}

[[conversions]]
name = "purchase"
method = "POST"
path = "/checkout"
status = [303]
value = {{ location_query = "total" }}
currency = "EUR"
order_id = {{ location_query = "order" }}

[[sources]]
name = "billing"
secrets = ["env:SOAK_WEBHOOK_SECRET"]

{extra}
"""


@dataclass
class Gateway:
    process: asyncio.subprocess.Process
    proxy: str = ""
    admin: str = ""
    log: list[dict[str, Any]] = field(default_factory=list)
    other: list[str] = field(default_factory=list)
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    async def _drain(self, stream: asyncio.StreamReader | None) -> None:
        assert stream is not None
        while line := await stream.readline():
            text = line.decode(errors="replace")
            try:
                record = json.loads(text)
            except ValueError:
                self.other.append(text)
                continue
            if isinstance(record, dict):
                self.log.append(record)

    def reloads(self) -> list[dict[str, Any]]:
        return [r for r in self.log if str(r.get("msg", "")).startswith("config reloaded")]

    def problems(self) -> list[dict[str, Any]]:
        return [r for r in self.log if r.get("level") in ("warning", "error", "critical")]


async def start_gateway(config: Path, workdir: Path) -> Gateway:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        "TMPDIR": str(workdir),
        "GATEWAY_SECRET": SECRET,
        "GATEWAY_ADMIN_TOKEN": TOKEN,
        "SOAK_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "run", "-c", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    gw = Gateway(proc)
    gw.readers.append(asyncio.create_task(gw._drain(proc.stderr)))
    assert proc.stdout is not None
    announced = ""
    deadline = time.monotonic() + 60
    while "admin API on" not in announced or "proxy on" not in announced:
        line = await asyncio.wait_for(proc.stdout.readline(), max(0.1, deadline - time.monotonic()))
        if not line:
            raise RuntimeError(f"gateway run exited before serving: {''.join(gw.other)[-2000:]}")
        announced += line.decode()
    gw.readers.append(asyncio.create_task(_discard(proc.stdout)))
    gw.proxy = _url_after(announced, "proxy on ")
    gw.admin = _url_after(announced, "admin API on ")
    return gw


async def _discard(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


def _url_after(text: str, marker: str) -> str:
    """``http://host:port`` from ``proxy on http://127.0.0.1:8080/ …``."""
    scheme, _, rest = text.partition(marker)[2].split()[0].partition("://")
    return f"{scheme}://{rest.split('/')[0]}"


async def stop_gateway(gw: Gateway) -> int:
    if gw.process.returncode is None:
        gw.process.terminate()
        try:
            await asyncio.wait_for(gw.process.wait(), STOP_SECONDS)
        except TimeoutError:  # its workers too: orphaned, they would write on into the temp folder
            below = descendants(gw.process.pid)
            gw.process.kill()
            await gw.process.wait()
            await asyncio.to_thread(kill_all, below)
    for task in gw.readers:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 5)
    return gw.process.returncode if gw.process.returncode is not None else -1
