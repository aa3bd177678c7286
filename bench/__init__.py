"""Benchmarks: the gateway against a bare aiohttp reverse proxy, in the same run, as ratios."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn

INTERRUPTED = 130
"""Exit status after Ctrl-C (SIGINT), as a shell reports a command a SIGINT ended: 128 + 2."""


def entry(main: Callable[[], object]) -> NoReturn:
    """Run a benchmark's ``main`` as its command: Ctrl-C (SIGINT, at the terminal or sent to its
    PID) ends it with one line and status 130, not a traceback, once its ``finally`` blocks
    have stopped every process it started and removed its temp files."""
    try:
        code = main()
    except KeyboardInterrupt:
        print(
            "\ninterrupted: what it started is stopped and its temp files removed; no figures",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(INTERRUPTED) from None
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
