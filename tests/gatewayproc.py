"""A ``gateway run`` subprocess for operations tests: its stdout announcement parsed, its
stderr (JSON log lines) drained continuously so a chatty process never stalls on a full pipe."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import ENV

CHECKOUT = str(Path(__file__).resolve().parents[1])
"""This checkout: where a gateway run as another user finds the code (``PYTHONPATH``)."""


class GatewayProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._changed = asyncio.Condition()
        self._readers = [
            asyncio.create_task(self._drain(proc.stdout, self.stdout)),
            asyncio.create_task(self._drain(proc.stderr, self.stderr)),
        ]
        self.proxy = ""
        self.admin = ""

    @classmethod
    async def start(
        cls,
        config: Path,
        *args: str,
        env: dict[str, str] | None = None,
        new_session: bool = False,
        user: tuple[int, int] | None = None,
        prefix: tuple[str, ...] = (),
    ) -> GatewayProcess:
        """``new_session``: its own process group, so ``killpg`` reaches the supervisor and workers.
        Its temporary files go beside ``config``: a test that kills it leaves none in /tmp.
        ``user``: run as that uid and gid (the caller root) through ``setpriv``, this checkout's
        code on ``PYTHONPATH`` (the user may not reach the test's working folder). ``prefix``: a
        command that execs the rest, as systemd sets a unit's sandbox up before the gateway."""
        argv: tuple[str, ...] = (sys.executable, "-m", "gateway", "run", "-c", str(config), *args)
        extra: dict[str, str] = {}
        if user is not None:
            argv = ("setpriv", f"--reuid={user[0]}", f"--regid={user[1]}", "--clear-groups", *argv)
            extra["PYTHONPATH"] = CHECKOUT
        argv = (*prefix, *argv)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={"PATH": "/usr/bin:/bin", "TMPDIR": str(config.parent), **extra, **ENV, **(env or {})},
            start_new_session=new_session,
        )  # fmt: skip
        gw = cls(proc)
        try:
            await gw.wait_for(lambda: any("admin API on" in line for line in gw.stdout), gw.stdout, 60)
        except BaseException:
            await gw.kill()
            raise
        text = "".join(gw.stdout)
        gw.proxy = re.search(r"proxy on (http://[\d.:]+)/", text).group(1)  # type: ignore[union-attr]
        gw.admin = re.search(r"admin API on (http://[\d.:]+)/", text).group(1)  # type: ignore[union-attr]
        return gw

    async def _drain(self, stream: asyncio.StreamReader | None, into: list[str]) -> None:
        assert stream is not None
        while line := await stream.readline():
            async with self._changed:
                into.append(line.decode())
                self._changed.notify_all()
        async with self._changed:
            into.append("")  # end of stream
            self._changed.notify_all()

    async def wait_for(self, ready: Callable[[], bool], stream: list[str], timeout: float = 30) -> None:
        async with asyncio.timeout(timeout), self._changed:
            while not ready():
                assert not stream or stream[-1] != "", "gateway exited: " + "".join(self.stderr)[-3000:]
                await self._changed.wait()

    def logs(self) -> list[dict[str, Any]]:
        """Every stderr line that is a JSON log record."""
        return [json.loads(line) for line in self.stderr if line.startswith("{")]

    async def wait_log(self, match: Callable[[dict[str, Any]], bool], timeout: float = 30) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [r for r in self.logs() if match(r)]
            return bool(found)

        await self.wait_for(seen, self.stderr, timeout)
        return found[-1]

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    async def stop(self, timeout: float = 30) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(timeout):
            code = await self.proc.wait()
            await asyncio.gather(*self._readers)
        return code

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        for task in self._readers:
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)


def children(pid: int) -> list[int]:
    """Child process ids of ``pid`` (Linux ``/proc``)."""
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def failures_said(lines: list[dict[str, object]], start: str) -> int:
    """How many failures the throttled lines beginning ``start`` said: each one, plus the
    "(and N more like it since the last such line" it carries."""
    said = 0
    for line in lines:
        msg = str(line["msg"])
        if msg.startswith(start):
            more = re.search(r"\(and (\d+) more like it since the last such line", msg)
            said += 1 + (int(more.group(1)) if more else 0)
    return said
