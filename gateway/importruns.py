"""``gateway import --list`` and ``gateway import --undo RUN [--dry-run]``: the recorded runs.

Owns what these print and their exit statuses (0 done, 1 the store failed or the undo was
refused — a run already in the central store —, 2 an unknown run). The runs, their rows and
the undo itself are ``storage.imports``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys

from gateway.config import Settings
from gateway.history import STDIN
from storage.imports import DERIVED, RECORDED, Run, Skipped, UndoRefused, list_runs, undo_run
from storage.local import StoreClosed, store_hint
from storage.migrate import SchemaTooNew

_LABELS = {"touchpoints": "touchpoints", "identities": "bindings", "conversions": "conversions"}
_UNRECORDED = (
    "imports before 2026-12-06 (before the store's migration 0016) were not recorded, and cannot be undone"
)


def list_command(settings: Settings) -> int:
    """Every recorded run, one line each: number, start, format, rows added (and lines skipped),
    state, files; under a run that skipped lines, its most frequent reasons (``Skipped``)."""
    try:
        runs = list_runs(settings.store_path)
    except (SchemaTooNew, sqlite3.Error) as err:
        hint = store_hint(err, settings.store_path)
        print(
            f"gateway import: --list failed on the store {settings.store_path}: {err}{hint}",
            file=sys.stderr,
        )
        return 1
    if not runs:
        print(f"gateway import: no import run recorded in the store {settings.store_path}; {_UNRECORDED}")
        return 0
    for run in runs:
        added = ", ".join(f"{_LABELS[table]} {run.added.get(table, 0):,}" for table in RECORDED)
        if run.skipped is not None and run.skipped.total:
            added += f", {_skipped(run.skipped, run.format)}"
        state = (
            f"undone {run.undone}"
            if run.undone
            else _stopped(run, _rest_by(run, runs))
            if run.finished and run.stopped
            else _finished(run)
            if run.finished
            else "not finished (stopped by force, running, or its end not recorded)"
        )
        files = ", ".join(run.files)
        print(f"run {run.id}  {run.started}  --format {run.format}  {added}  {state}  files: {files}")
        if run.skipped is not None and run.skipped.total:  # by reason, as the run's summary said
            for reason, count in run.skipped.top:
                print(f"    {count:>8,}  {reason}")
            count, reasons = run.skipped.others
            if count:
                print(f"    {count:>8,}  other ({reasons:,} reason{'s' if reasons != 1 else ''})")
    return 0


def _skipped(skipped: Skipped, fmt: str) -> str:
    """What a run skipped, of what it read: ``skipped 10 of 13 lines (77%)``. A Segment import
    counts calls, which a line may hold several of: those alone."""
    if fmt == "segment":
        return f"skipped {skipped.total:,} call{'s' if skipped.total != 1 else ''}"
    if not skipped.read:  # only a last line without its line end, not among the lines read
        return f"skipped {skipped.total:,}"
    share = 100 * skipped.total / skipped.read
    # Never "0%" of a run that skipped some, nor "100%" of one that replayed some.
    shown = "<1" if share < 1 else ">99" if 99 < share < 100 else f"{min(share, 100):.0f}"
    return f"skipped {skipped.total:,} of {skipped.read:,} line{'s' if skipped.read != 1 else ''} ({shown}%)"


def _rest_by(run: Run, runs: list[Run]) -> Run | None:
    """The first later run that read ``run``'s files (all of them, in its format) to their end
    and stands (finished, not stopped, not undone): the one that imported what the stopped
    ``run`` had not. None: none did, and the same command again imports the rest. A later
    import that added no row is a run too (``storage.imports.EMPTY_SQL``; until 2026-12-07 it
    recorded none, and the stopped run was listed as to be finished for ever). One that could
    not read one of them to its end (a copy cut short) did not (until 2026-12-08 it was taken to:
    "nothing was left to import")."""
    for later in runs:
        if (
            later.id > run.id
            and later.finished
            and not later.stopped
            and not later.undone
            and later.format == run.format
            and set(run.files) <= set(later.files)
            and not set(run.files) & set(later.unread)  # one broke part way: its rest not read
        ):
            return later
    return None


def _finished(run: Run) -> str:
    """A run that read every line it could: "finished", and the files it could not read to their
    end (broken part way), if any: their rest is not in the store."""
    if not run.unread:
        return "finished"
    return f"finished, but did not read {', '.join(run.unread)} to its end"


def _stopped(run: Run, rest_by: Run | None = None) -> str:
    """A run SIGINT or SIGTERM stopped before it had read every line (until 2026-12-07 listed
    as "finished"): what it is, and the two ways on; or, once a later run (``rest_by``) read the
    same files to their end, that one (until 2026-12-07 it still said the same command again
    imports the rest)."""
    if rest_by is not None and not any(rest_by.added.values()):  # the rest was in, or skipped
        mine = f"gateway import --undo {run.id} removes what this run added"
        if STDIN in run.files:
            return (
                f"stopped by {run.stopped} part way; run {rest_by.id} read standard input to its end"
                f" since and added no row: nothing was left to import if it was the same input ({mine})"
            )
        return (
            f"stopped by {run.stopped} part way; run {rest_by.id} read the same files to their end"
            f" since and added no row: nothing was left to import ({mine})"
        )
    if rest_by is not None:
        undo = (
            f"gateway import --undo {run.id} removes what this run added, --undo {rest_by.id} what"
            f" run {rest_by.id} added"
        )
        if STDIN in run.files:  # standard input is known by nothing: the same input or not?
            return (
                f"stopped by {run.stopped} part way; run {rest_by.id} read standard input to its end"
                f" since, which imported the rest if it was the same input ({undo})"
            )
        return (
            f"stopped by {run.stopped} part way; its rest was imported by run {rest_by.id} (the same"
            f" files read to their end; {undo})"
        )
    # A stream is known by its lines alone (as the stop's own message says): read again whole.
    again = "with the whole input again " if STDIN in run.files else "again "
    return (
        f"stopped by {run.stopped} part way (the same command {again}imports the rest,"
        f" gateway import --undo {run.id} removes what it added)"
    )


def undo_command(settings: Settings, run: int, dry_run: bool) -> int:
    """Remove what run ``run`` added (``dry_run``: count it), and say so per table."""
    try:
        undo = asyncio.run(undo_run(settings.store_path, run, dry_run=dry_run))
    except UndoRefused as err:
        print(f"gateway import: {err}", file=sys.stderr)
        return 2 if "records no import run" in str(err) else 1
    except (SchemaTooNew, sqlite3.Error, StoreClosed, OSError) as err:
        # Said as erase and purge say it: SQLite's "database is locked" names no one.
        hint = store_hint(err, settings.store_path)
        print(
            f"gateway import: --undo {run} failed on the store {settings.store_path}: {err}{hint}",
            file=sys.stderr,
        )
        return 1
    if undo.undone is not None:
        print(f"gateway import: run {run} was undone at {undo.undone}; nothing is left to remove")
        return 0
    verb = "would remove (a dry run: nothing was removed)" if dry_run else "removed"
    print(f"gateway import: run {run}: {verb}")
    labels = {**_LABELS, DERIVED: "verdict changes"}
    for table, count in undo.rows.items():
        line = f"  {labels[table] + ':':17}{count:>10,}"
        if table in undo.central:
            line += f"   already in the central store: {undo.central[table]:,}"
        print(line)
    for sink, count in undo.sinks.items():
        print(f"  {count:,} of them were already delivered by {sink}, which keeps them")
    if undo.central:  # a dry run: the undo would be refused
        print(
            f"gateway import: run {run} cannot be undone: rows of it are already in the central store"
            " (above), which would keep them",
            file=sys.stderr,
        )
        return 1
    if not dry_run:
        print("  the same files can be imported again (their lines are new to the store now)")
    return 0
