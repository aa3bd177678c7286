"""Progress of the long commands (``import``, ``reclassify``, ``sync --once``, ``mirror --once``).

On a terminal, a bar on stderr. Off one (cron, systemd, ``| tee log``), a plain line on stderr
every ``--progress-every`` seconds instead, which a log keeps: no carriage return, no bar
(``ProgressLines``). With stderr closed (``2>&-``, where ``sys.stderr`` is None) there is
neither, and the commands print exactly what they print without them. A line that cannot be
written (its reader gone, a full disk) ends the lines, never the command. Only those commands
import this module, from inside the command (tqdm reads files as it loads: never on the event
loop), so the server never loads tqdm.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Any

from tqdm import tqdm


def on_a_terminal() -> bool:
    """Whether stderr is a terminal, where the bars go."""
    return sys.stderr is not None and sys.stderr.isatty()


def progress_bar(total: int | None, desc: str, unit: str, **options: Any) -> tqdm[Any] | None:
    """A bar over ``total`` units on stderr (tqdm ``options`` beside), or None off a terminal.
    Without a total (a stream's size is not known): the units so far and the rate, no ETA."""
    if not on_a_terminal():
        return None
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, **options)


class ProgressLines:
    """Off a terminal: a plain line on stderr at most every ``every`` seconds (0: each time
    one is asked for), ``gateway NAME: how far, N s so far``. A line that cannot be written
    (its reader gone: ``2>&1 | head``; a full disk) ends the lines: the command goes on, unsaid,
    rather than dying of it (a BrokenPipeError ended it with exit 141), and what it says on
    stderr after that goes nowhere."""

    def __init__(self, name: str, every: float, started: float | None = None) -> None:
        self.name = name
        self.every: float | None = every
        self.started = time.perf_counter() if started is None else started
        self.due = self.started + every

    def now_due(self) -> float | None:
        """The time now (``time.perf_counter``), when a line is due; else None."""
        if self.every is None or (now := time.perf_counter()) < self.due:
            return None
        self.due = now + self.every
        return now

    def say(self, far: str, now: float) -> None:
        """The line of ``far`` (how far the command is, and its rate) at ``now``."""
        if not say(f"gateway {self.name}: {far}, {now - self.started:.0f} s so far"):
            self.every = None


def say(line: str) -> bool:
    """``line`` on stderr, at once; whether it was written. One that cannot be (its reader gone:
    ``2>&1 | head``; a full disk) goes nowhere, and so does what comes after it on stderr: the
    command goes on, rather than dying of it. Nothing with stderr closed (``2>&-``)."""
    if sys.stderr is None:
        return False
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:  # its reader gone (a pipe), its disk full: the command goes on, unsaid
        _stderr_nowhere()
        return False
    return True


def _stderr_nowhere() -> None:
    """Standard error to /dev/null, once a line could not be written to it: the bytes of that
    line left in its buffer (stderr is buffered unless ``PYTHONUNBUFFERED=1``) went again at
    exit, failed again, and the command ended with exit status 120 after its work was done; a
    message after it (``sync failed: …``) ended it with 141. What goes there now goes nowhere,
    as it would have anyway."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stderr.fileno())
        finally:
            os.close(devnull)


def progress_lines(name: str, every: float, started: float | None = None) -> ProgressLines | None:
    """The lines of the command ``name`` (``import``, ``reclassify (local gw.db)``…) off a
    terminal; None on one (the bar), or with stderr closed (nowhere to say them)."""
    if sys.stderr is None or on_a_terminal():
        return None
    return ProgressLines(name, every, started)


class Counting:
    """A count of ``unit`` (``touchpoints``, ``rows``) a command gets through, of ``total``
    when it is known: on a terminal, a bar named ``bar``; off one, every ``every`` seconds,
    ``gateway NAME: 45% (450,000 of 1,000,000 touchpoints), 12,345 touchpoints/s, 36 s so far``,
    or without a total ``gateway NAME: 150,000 rows stored, 17,000 rows/s, 9 s so far``
    (``done``: the word for them, ``stored``)."""

    def __init__(
        self, name: str, bar: str, total: int | None, unit: str, *, every: float, done: str = "done"
    ) -> None:
        self.count, self.total, self.unit, self.done = 0, total, unit, done
        scale = {} if total is None else {"unit_scale": total >= 10_000}
        self.bar = progress_bar(total, bar, f" {unit}", **scale)
        self.lines = progress_lines(name, every) if self.bar is None else None

    def update(self, units: int) -> None:
        """``units`` more got through."""
        self.count += units
        if self.bar is not None:
            self.bar.update(units)
        elif self.lines is not None and (now := self.lines.now_due()) is not None:
            rate = f"{self.count / max(1e-9, now - self.lines.started):,.0f} {self.unit}/s"
            if self.total:  # a total that grew meanwhile (a sync's rows written during it): 100%
                percent = min(100, self.count * 100 // self.total)
                self.lines.say(f"{percent}% ({self.count:,} of {self.total:,} {self.unit}), {rate}", now)
            else:
                self.lines.say(f"{self.count:,} {self.unit} {self.done}, {rate}", now)

    def close(self) -> None:
        """The bar's end (before any message, which goes on a line of its own)."""
        if self.bar is not None:
            self.bar.close()


def counting(
    name: str, bar: str, total: int | None, unit: str, *, every: float, quiet: bool, done: str = "done"
) -> Counting | None:
    """A ``Counting``, or None with ``quiet`` (``--no-progress``) or with nowhere to show it
    (stderr closed: ``2>&-``)."""
    if quiet or sys.stderr is None:
        return None
    return Counting(name, bar, total, unit, every=every, done=done)
