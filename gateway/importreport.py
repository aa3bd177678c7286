"""What ``gateway import`` tells the operator as it goes and when it was stopped.

Owns the progress bar's updates (bytes of all files with the ETA, and lines/s;
the bar itself is ``gateway.progress``) and the message of an import stopped by
a signal, of each file it could not import (unreadable, or not in the
format), and of a run whose end the store did not record: how far the store has
the files, and how to finish. The summary's table is
``Summary.render`` (``gateway.backfill``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from gateway.backfill import Failed, Summary
from gateway.progress import ProgressLines

MIB = 1024 * 1024


class Progress:
    """The bar (or nothing): bytes of all files with ETA, and lines/s. Without a bar, with
    ``lines`` (``gateway.progress.ProgressLines``), a plain line on stderr every so often
    instead: how far (of ``total`` bytes, when the sizes are known), the lines read, the rate,
    the time so far."""

    def __init__(
        self, bar: Any, started: float, *, total: int | None = None, lines: ProgressLines | None = None
    ) -> None:
        self.bar, self.started, self.done, self.position = bar, started, 0, 0
        self.total, self.lines = total, lines

    def update(self, lines: int, position: int) -> None:
        self.position = position
        if self.bar is None:
            if self.lines is not None and (now := self.lines.now_due()) is not None:
                self._say(self.lines, lines, now)
            return
        self.bar.update(self.done + position - self.bar.n)
        rate = lines / max(1e-9, time.perf_counter() - self.started)
        self.bar.set_postfix_str(f"{rate:,.0f} lines/s", refresh=False)

    def _say(self, said: ProgressLines, lines: int, now: float) -> None:
        """One progress line, as a log file keeps it: no carriage return, no bar."""
        read = self.done + self.position
        if self.total:
            far = f"{min(100, read * 100 // self.total)}% ({read / MIB:.1f} of {self.total / MIB:.1f} MiB)"
        else:
            far = f"{read / MIB:.1f} MiB read"
        rate = lines / max(1e-9, now - said.started)
        said.say(f"{far}, {lines:,} lines read, {rate:,.0f} lines/s", now)

    def file_done(self, size: int | None) -> None:
        """The end of a file of ``size`` bytes (None: a stream, as far as it was read)."""
        self.done += self.position if size is None else size
        self.position = 0
        if self.bar is not None:
            self.bar.update(self.done - self.bar.n)


def stopped_message(summary: Summary) -> str:
    """What an interrupted import says: how far it got, and how to finish."""
    name, line = summary.read_to
    read = f"{name} line {line:,}"
    earlier = " (and the files read before it)" if name and summary.files > 1 else ""
    if not name:
        return f"stopped by {summary.interrupted} before a line was read; nothing was imported"
    if summary.new_rows is None:
        return f"stopped by {summary.interrupted} after {read}{earlier}; a dry run: nothing was written"
    if summary.read_all:  # the stop came while the last writes went in: they all did
        return (
            f"stopped by {summary.interrupted} after every line was read: everything up to {read}{earlier}"
            " is in the store; nothing is left to import (running the same command again adds nothing twice)"
        )
    # A stream is known by its lines alone: a rest of it (tail -n +N) would be another file.
    again = " with the whole input again, from its first line," if summary.read_stream else " again"
    return (
        f"stopped by {summary.interrupted}: everything up to {read}{earlier} is in the store; run the"
        f" same command{again} to import the rest (what is already there is not added twice)"
    )


def failed_message(failed: Failed, why: str, fmt: str, *, dry_run: bool, alone: bool) -> str:
    """What the import says of one file it did not import, or not whole (``why``: the read
    error, worded by the command); ``alone``: the only file named, so nothing else was."""
    if failed.error is None:
        return (
            f"{failed.name}: not imported: every line read was skipped as not in the {fmt} format"
            f" (see the skips above): is --format {fmt} right for it?"
        )
    if failed.before_any:
        return why if alone else f"{why}; not imported"
    if not failed.read_to:
        return f"{why}; nothing was imported" if alone else f"{why}; none of its lines was imported"
    if dry_run:
        return f"{why}; a dry run read its lines up to {failed.read_to:,}: nothing was written"
    return (
        f"{why}; its lines up to {failed.read_to:,} are in the store: once it can be read, run the"
        " same command again to import the rest (what is already there is not added twice)"
    )


def failed_tally(summary: Summary, named: int) -> str:
    """The closing line when some of the ``named`` files failed and others were imported."""
    names = ", ".join(failed.name for failed in summary.failed)
    where = "read (a dry run: nothing was written)" if summary.new_rows is None else "in the store"
    return (
        f"{len(summary.failed)} of {named} files failed (named above): {names}; the other files are {where}"
    )


def unfinished_message(summary: Summary, store: Path) -> str:
    """What an import whose run's end the store did not record says: nothing is lost, what
    ``--list`` shows of it, and that ``--undo`` and a re-import work as for any run."""
    run = summary.run
    return (
        f"every line read is in the store, as run {run}, but the store {store} did not record the"
        f" run's end: {summary.unfinished}; gateway import --list shows run {run} as not finished,"
        f" with the rows it added, and --undo {run} removes them as any run's (importing the same"
        " files again adds nothing)"
    )
