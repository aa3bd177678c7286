"""``gateway mitmdump ARGS…``: mitmdump, started with SIGHUP held from the command's first line.

A SIGHUP that reaches a process before anything handles it ends it (the signal's default), and
``mitmdump`` runs no code of ours until it loads ``addons/mitm.py``, a second or so after its
start (Python and mitmproxy load first): a reload right after a start stopped the host. The
``gateway`` command blocks SIGHUP first thing (``gateway/__main__.py``); this replaces the process
with ``mitmdump`` (the same process ID, for a supervisor) with it still blocked, as the mask
survives ``exec``; the addon unblocks it once its handler is in place (``load``), and one sent
meanwhile is one reload once the store is open. Stop signals have their usual effect.

Owns finding the ``mitmdump`` executable and the hand-over; every argument is mitmdump's own.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway.childsignals import RELOAD_ORDER, STOP_SIGNALS

COMMAND = "mitmdump"


def mitmdump_path() -> str | None:
    """The ``mitmdump`` installed beside this Python (the gateway's virtualenv), else on PATH."""
    beside = Path(sys.executable).with_name(COMMAND)
    if os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(COMMAND)


def exec_mitmdump(args: Sequence[str]) -> int:
    """Become ``mitmdump ARGS…`` with SIGHUP still blocked; returns (2) only when there is none."""
    path = mitmdump_path()
    if path is None:
        print(
            "gateway mitmdump: mitmdump is not installed beside the gateway:"
            " pip install 'tracking-gateway[mitm]'",
            file=sys.stderr,
        )
        return 2
    # A Ctrl-C or a stop that came while the command loaded stops it now, as for any command;
    # SIGUSR2 (a supervisor's reload order, which mitmdump has no use for) is as mitmdump has it.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS | {RELOAD_ORDER})
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(path, [path, *args])
    return 0  # not reached: execv replaces the process or raises
