"""Benchmarks: the gateway against a bare aiohttp reverse proxy, in the same run, as ratios."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import NoReturn

INTERRUPTED = 130
"""Exit status after Ctrl-C (SIGINT), as a shell reports a command a SIGINT ended: 128 + 2."""
TERMINATED = 143
"""Exit status after SIGTERM (``kill``, a CI job's timeout): 128 + 15."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, taken as Ctrl-C is: every ``finally`` on the way out runs."""


def _terminated(signum: int, frame: FrameType | None) -> None:
    # Once: a second SIGTERM while the first one's ``finally`` blocks stop the servers does not
    # cut that short. (A Python handler, not SIG_IGN: the processes started meanwhile, such as
    # ``pg_ctl stop``, do not inherit it.)
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    raise Terminated


def entry(main: Callable[[], object]) -> NoReturn:
    """Run a benchmark's ``main`` as its command: Ctrl-C (SIGINT, at the terminal or sent to its
    PID) ends it with one line and status 130, not a traceback, once its ``finally`` blocks
    have stopped every process it started and removed its temp files. SIGTERM the same, with
    status 143 (until 2026-12-07 it ended the benchmark at once: its servers kept running and
    its temp folder stayed)."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminated)
    try:
        code = main()
    except KeyboardInterrupt as err:
        said, status = (
            ("stopped by SIGTERM", TERMINATED)
            if isinstance(err, Terminated)
            else ("interrupted", INTERRUPTED)
        )
        print(
            f"\n{said}: what it started is stopped and its temp files removed; no figures",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(status) from None
    raise SystemExit(code if isinstance(code, int) else 0)


def at_least(minimum: float, kind: Callable[[str], float] = int) -> Callable[[str], float]:
    """An argparse ``type``: a number of ``kind`` no smaller than ``minimum`` (argparse then names
    the option in its error: ``argument --lines: must be at least 1, not 0``)."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum:g}, not {text}")
        return value

    return parse


EXTRAS_COMMAND = "make bench-deps"
"""What installs every benchmark's extras (``.[test,postgres,mitm]``) into ``.venv``; ``make run``
installs the gateway alone."""


def needs(prog: str, extra: str, *modules: str) -> None:
    """Exit 2 with one line naming the missing ``extra`` and how to install it, unless each of
    ``modules`` imports (until 2026-12-07 a benchmark run after ``make run`` alone ended in an
    ``ImportError`` traceback: ``bench.sync`` and ``bench.loopstall`` need ``asyncpg``,
    ``bench.mitm`` mitmproxy, ``bench.bots`` mmdb-writer and netaddr)."""
    import importlib

    missing = []
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        print(
            f"{prog}: error: needs the {extra!r} extra ({', '.join(missing)} not installed), which"
            f" `make run` does not install: run `{EXTRAS_COMMAND}` (every benchmark's extras), or"
            f" `.venv/bin/python -m pip install -e '.[{extra}]'`",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(2)
