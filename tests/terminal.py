"""Running ``gateway`` with a pseudo-terminal as its standard streams, as a person at a
terminal would: what the commands draw only there (progress bars)."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def on_a_terminal(*args: str, env: dict[str, str] | None = None, seconds: float = 60) -> str:
    """``gateway *args`` on a 120-column pseudo-terminal: what it drew there, carriage
    returns as line ends. A command still running after ``seconds`` is killed (with anything
    it started: it runs in a session of its own) and fails the test."""
    leader, follower = pty.openpty()
    drawn = b""
    try:
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        child = subprocess.Popen(
            [sys.executable, "-m", "gateway", *args],
            stdin=follower,
            stdout=follower,
            stderr=follower,
            env={"PATH": "/usr/bin:/bin", **(env or {})},
            cwd=ROOT,
            start_new_session=True,
        )
        os.close(follower)
        follower = -1
        deadline = time.monotonic() + seconds
        try:
            while (left := deadline - time.monotonic()) > 0:
                if not select.select([leader], [], [], left)[0]:
                    continue
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                drawn += chunk
            else:
                raise TimeoutError(f"gateway {' '.join(args)} still running after {seconds} s")
            child.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    return drawn.decode("utf-8", "replace").replace("\r", "\n")
