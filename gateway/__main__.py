"""``python -m gateway`` is the ``gateway`` command, and ``main`` its console script.

Ctrl-C (SIGINT) and SIGTERM are held while the command loads (its imports take a few hundred
milliseconds): ``gateway.cli.main`` lets one that came meanwhile through before the command
runs, unless the command stops on them its own way (``gateway import`` hears it once it can
stop cleanly). A Ctrl-C that reaches Python's own handler ends the command with a line saying
so, not a traceback. SIGHUP is held too: ``gateway run`` until it reloads on it, ``gateway
mitmdump`` through its exec of mitmdump until the addon reloads on it (``gateway/mitmlaunch.py``),
every other command until it begins, as Ctrl-C.
"""

from __future__ import annotations

import signal
import sys

from gateway.childsignals import RELOAD_SIGNALS, STOP_SIGNALS

EXIT_INTERRUPTED = 130
"""128 + SIGINT, as a shell reports a command Ctrl-C ended."""


def main() -> int:
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS | RELOAD_SIGNALS)
    try:
        from gateway.cli import main as command

        return command()
    except KeyboardInterrupt:
        print("gateway: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # not when a worker process of `gateway import` imports it
    raise SystemExit(main())
