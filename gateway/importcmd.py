"""``gateway import FILE… --format F``: the command line in, a summary and an exit status out.

Owns the command: its ``--field`` overrides, the files it names (``-`` is
standard input, once, never a terminal), running the import
(``gateway.importrun``) under the stop signals (``gateway.importstop``), and
what it prints: the summary, the stop message (``gateway.importreport``) or one
line naming what went wrong, with the exit status of each.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

from gateway.config import Settings
from gateway.config_values import pointer_meant
from gateway.history import STDIN, Input
from gateway.importreport import failed_message, failed_tally, stopped_message, unfinished_message
from gateway.importrun import UsageError, check_format, run_import
from gateway.importruns import list_command, undo_command
from gateway.importstop import STOPPING, until_stopped
from gateway.importwrite import BatchRefused, CommitFailed, RunUndone
from gateway.logformats import FORMATS, JSON_FIELDS
from storage.local import StoreClosed, store_hint
from storage.migrate import SchemaTooNew

EXIT_USAGE = 2


def parse_fields(specs: Sequence[str]) -> dict[str, str]:
    """``--field NAME=POINTER`` values → overrides of the JSON-lines field mapping."""
    fields: dict[str, str] = {}
    for spec in specs:
        name, sep, pointer = spec.partition("=")
        if not sep or name not in JSON_FIELDS:
            raise UsageError(
                f"--field {spec}: expected NAME=POINTER with NAME one of {', '.join(JSON_FIELDS)}"
            )
        if pointer and not pointer.startswith("/"):
            # Written with dots (``request.uri``), as a rule's pointer may be: the one it means.
            meant = pointer_meant(pointer)
            fix = f": write --field {name}={meant}" if meant is not None else ""
            raise UsageError(f'--field {spec}: a JSON pointer starts with "/" (or is empty to unmap){fix}')
        if name == "time" and not pointer:  # every line would be skipped, "unreadable at /"
            raise UsageError(
                f"--field {spec}: every line needs its time; point it where the log keeps it,"
                " like --field time=/@timestamp"
            )
        if fields.get(name, pointer) != pointer:  # the last one won, silently
            raise UsageError(
                f"--field {name}: given twice ({name}={fields[name]}, then {spec}); map each field once"
            )
        fields[name] = pointer
    return fields


def import_command(settings: Settings, args: argparse.Namespace) -> int:
    """``gateway import`` of a command line ``check_command_line`` passed (``cmd_import`` checks it
    before the config is read): run, print the summary; 2 for a usage problem left (a format
    ``run_import`` refuses), 1 when a file could not be imported, or
    not whole (unreadable, or not in the format: each named, the others imported), or when the
    store did not record the run's end (its rows are in: said, with what to run), 130 or 143
    when SIGINT or SIGTERM stopped it part way."""
    handlers = {sig: signal.getsignal(sig) for sig in STOPPING}
    try:
        return _import_command(settings, args)
    finally:  # ignored once the import is over (``until_stopped``): as they were, for a caller
        for sig, handler in handlers.items():
            if handler is not None:
                signal.signal(sig, handler)


NEEDED = "FILE… and --format are needed to import (or --list the import runs, or --undo RUN one of them)"
ALONE = "--list and --undo RUN take no FILE, and not each other"
TERMINAL = "-: standard input is a terminal; pipe a log in, as in zcat access.log.gz | gateway import - …"


def check_command_line(args: argparse.Namespace) -> None:
    """UsageError (exit 2) for a command-line mistake that no config changes, so that it is said
    before the config is read (until 2026-12-08 only a wrong ``--field`` was: a shell without
    ``GATEWAY_SECRET`` was told of the secret first): a wrong ``--field``, ``--list`` or
    ``--undo`` with a FILE or each other, no FILE or no ``--format`` to import, a ``--field`` of
    a format without fields (or a format whose reader is not installed), standard input named
    twice or a terminal."""
    fields = parse_fields(args.field)
    listing: bool = getattr(args, "list", False)
    undo: int | None = getattr(args, "undo", None)
    if listing or undo is not None:
        if args.files or (listing and undo is not None):
            raise UsageError(ALONE)
        return
    if not args.files or args.format is None:
        raise UsageError(NEEDED)
    check_format(args.format, fields)
    if args.files.count("-") > 1:
        raise UsageError("-: standard input can be read once; give - once")
    if "-" in args.files and os.isatty(0):  # closed (<&-): not a terminal, said when it is read
        raise UsageError(TERMINAL)


def _inputs(files: Sequence[str]) -> list[Input]:
    """The command line's files (``check_command_line``'s); ``-`` is standard input."""
    return [_stdin() if name == "-" else Path(name) for name in files]


def _stdin() -> BinaryIO:
    """Standard input, unbuffered (only a stream's own reader, in its own thread, waits on it),
    and never closed (it is not ours)."""
    try:
        stream = open(0, "rb", buffering=0, closefd=False)  # noqa: SIM115 - never closed
    except OSError as err:  # closed (<&-)
        raise OSError(err.errno, err.strerror, STDIN) from err
    return stream


def _import_command(settings: Settings, args: argparse.Namespace) -> int:
    listing: bool = getattr(args, "list", False)
    undo: int | None = getattr(args, "undo", None)
    if listing or undo is not None:
        # A typo'd storage.path listed "no import run recorded" (exit 0), a folder "disk I/O
        # error": said as every other command that reads the store says it (until 2026-12-06).
        if (problem := settings.store_problem()) is not None:
            print(problem, file=sys.stderr)
            return 1
        if undo is not None:
            return undo_command(settings, undo, args.dry_run)
        return list_command(settings)
    if settings.store_path.is_dir():  # SQLite said "unable to open database file" (until 2026-12-05)
        print(settings.store_problem(), file=sys.stderr)
        return 1
    if args.trusted_proxy:  # the load balancers the logs were written behind, for this import
        settings = replace(settings, trusted_networks=(*settings.trusted_networks, *args.trusted_proxy))
    try:
        fields = parse_fields(args.field)
        paths = _inputs(args.files)
        summary = asyncio.run(
            until_stopped(
                lambda summary: run_import(
                    settings,
                    paths,
                    args.format,
                    dry_run=args.dry_run,
                    host=args.host or "",
                    fields=fields,
                    progress=not args.no_progress,
                    progress_every=args.progress_every,
                    workers=args.workers,
                    summary=summary,
                )
            )
        )
    except UsageError as err:
        print(f"gateway import: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:
        print(f"gateway import: {_os_error(err, args.files, settings.store_path)}", file=sys.stderr)
        return 1
    except RunUndone as err:  # --undo while it ran: writing on would add rows no undo removes
        print(f"gateway import: {err}", file=sys.stderr)
        return 1
    except BatchRefused as err:  # a trigger or constraint no row meets: every line would be skipped
        print(
            f"gateway import: the store {settings.store_path} refused every line of a batch of {err},"
            " so the import stopped; nothing of that batch was stored, what it committed before stays:"
            " once the store takes such rows, run the same command again to import the rest (what is"
            " already there is not added twice)",
            file=sys.stderr,
        )
        return 1
    except CommitFailed as err:  # part way (a full disk): the batches before it are in
        print(
            f"gateway import: the store {settings.store_path} failed to commit: {err}; what it"
            " committed before stays: once it can be written, run the same command again to import"
            " the rest (what is already there is not added twice)",
            file=sys.stderr,
        )
        return 1
    except (SchemaTooNew, sqlite3.Error, StoreClosed) as err:
        hint = store_hint(err, settings.store_path)
        print(f"gateway import: the store {settings.store_path} failed: {err}{hint}", file=sys.stderr)
        return 1
    except BrokenProcessPool:  # the kernel's OOM killer, or kill -9
        print(
            "gateway import: a worker process ended abruptly (out of memory, or killed), so the import"
            " stopped; what was committed stays: run the same command again (perhaps with fewer"
            " --workers) to import the rest",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C, while the first one's stop was still writing
        print(
            "gateway import: interrupted; what was committed stays, and importing again is safe",
            file=sys.stderr,
        )
        return STOPPING[signal.SIGINT]
    if summary.files == 0 and summary.failed and not summary.interrupted:  # none could be opened
        for failed in summary.failed:
            assert failed.error is not None
            print(
                f"gateway import: {_os_error(failed.error, args.files, settings.store_path)}", file=sys.stderr
            )
        return 1
    print(summary.render())
    all_wrong = summary.none_in_format()  # said once below, with the hint, rather than per file
    for failed in summary.failed:
        if failed.error is None and all_wrong:
            continue
        why = _os_error(failed.error, args.files, settings.store_path) if failed.error is not None else ""
        alone = len(args.files) == 1
        message = failed_message(failed, why, args.format, dry_run=args.dry_run, alone=alone)
        print(f"gateway import: {message}", file=sys.stderr)
    if summary.unfinished:  # nothing lost, but a script must not take the import as clean
        print(f"gateway import: {unfinished_message(summary, settings.store_path)}", file=sys.stderr)
    if summary.interrupted:
        print(f"gateway import: {stopped_message(summary)}", file=sys.stderr)
        return STOPPING[signal.Signals[summary.interrupted]]
    if summary.failed and not all_wrong:
        if len(args.files) > 1:
            print(f"gateway import: {failed_tally(summary, len(args.files))}", file=sys.stderr)
        return 1
    if summary.unfinished:
        return 1
    if all_wrong:
        hint = ""
        if args.format == "json-lines":
            hint = " (and --field, which names where a json-lines log keeps each value)"
        elif "unreadable time" in summary.skipped:
            hint = " (a combined log's time is written as nginx's $time_local, [10/Oct/2025:13:55:36 +0000])"
        print(
            f"gateway import: nothing imported: every line read was skipped as not in the"
            f" {args.format} format (see the skips above): is --format {args.format} right? The formats are"
            f" {', '.join(FORMATS)}{hint}",
            file=sys.stderr,
        )
        return 1
    return 0


def _os_error(err: OSError, files: Sequence[str], store: Path) -> str:
    """What went wrong, named by what it was: a file to import, or the store (its folder could
    not be created: a file in the way, a folder that cannot be written)."""
    why = err.strerror or str(err)
    name = err.filename
    if name is not None and name not in files and Path(name) in (store, *store.parents):
        if isinstance(err, FileExistsError):  # mkdir of the store's folder
            why = "a file is in the way"
        return f"cannot open the store {store}: {why} ({name})"
    if isinstance(err, IsADirectoryError):  # a folder of rotated logs: its files are named, a glob
        why += f" (name the logs in it: {name.rstrip('/')}/*)"
    return f"cannot read {name}: {why}"
