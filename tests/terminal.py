"""Running ``gateway`` with a pseudo-terminal as its standard streams, as a person at a
terminal would: what the commands draw only there (progress bars)."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def on_a_terminal(*args: str, env: dict[str, str] | None = None) -> str:
    """``gateway *args`` on a 120-column pseudo-terminal: what it drew there, carriage
    returns as line ends."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    with subprocess.Popen(
        [sys.executable, "-m", "gateway", *args],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        cwd=ROOT,
    ) as child:
        os.close(follower)
        drawn = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            drawn += chunk
        child.wait(timeout=60)
    os.close(leader)
    return drawn.decode("utf-8", "replace").replace("\r", "\n")
