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

EXIT_INTERRUPTED = 130
"""128 + SIGINT, as a shell reports a command Ctrl-C ended."""
HELD = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR2})
"""``gateway.childsignals``' ``STOP_SIGNALS | RELOAD_SIGNALS``, written out: blocked before
that module (or any other of ours) is imported, as a Ctrl-C during an import ended the command
with a traceback of it (until 2026-12-07, in the tens of milliseconds that import took).
``tests/gateway/test_signals.py`` holds the two sets equal."""


def main() -> int:
    signal.pthread_sigmask(signal.SIG_BLOCK, HELD)  # first: nothing of ours is imported yet
    try:
        from gateway.cli import main as command

        return command()
    except KeyboardInterrupt:
        print("gateway: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # not when a worker process of `gateway import` imports it
    raise SystemExit(main())
