"""One run of ``gateway import``: what it needs started, its inputs in turn, the summary.

Owns ``run_import``: checking the format and host, starting the chain (and the
GeoIP databases), the store, the progress bar and the worker pool
(``gateway.importworkers``), replaying each input (``gateway.importreplay``),
and, finished or stopped (``gateway.importstop``), writing everything read,
tearing all of it down and counting the rows its run added. A run that writes
is recorded (``storage.imports``: its number, files and every row it added), so
that it can be listed and undone.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import sqlite3
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from gateway.backfill import Failed, Replayer, Summary
from gateway.config import Settings
from gateway.events import iso
from gateway.history import STDIN, Input
from gateway.importread import input_sizes, reading_order
from gateway.importreplay import import_file
from gateway.importreport import Progress
from gateway.importstop import through_stop
from gateway.importworkers import WorkerPool
from gateway.importwrite import COUNTED, LOCK_WAIT, Writer
from gateway.logformats import FORMATS, parser_for
from gateway.metrics import Metrics
from gateway.progress import progress_bar, progress_lines
from storage.erased import Erased, ErasedWatch
from storage.importdry import DryRun
from storage.imports import record_sql, run_added
from storage.local import LOCK_GAP, LocalStore, store_hint
from storage.retention import cutoff

log = logging.getLogger("gateway.import")


class UsageError(Exception):
    """A problem with the command line (printed, exit 2)."""


def check_format(fmt: str, fields: dict[str, str] | None) -> None:
    """UsageError when ``fmt`` is no format, ``fields`` map a format's that has none, or the
    reader of ``fmt`` is not installed: what no config changes (``gateway import`` says it
    before reading the config)."""
    if fmt not in FORMATS:
        raise UsageError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if fields and fmt != "json-lines":  # ignored, it would import other fields than asked
        raise UsageError(f"--field: maps the fields of json-lines; --format {fmt} has none to map")
    if fmt == "mitm" and importlib.util.find_spec("mitmproxy") is None:
        raise UsageError(
            "--format mitm reads flow dumps with mitmproxy: pip install 'tracking-gateway[mitm]'"
        )


async def run_import(
    settings: Settings,
    paths: Sequence[Input],
    fmt: str,
    *,
    dry_run: bool = False,
    host: str = "",
    fields: dict[str, str] | None = None,
    progress: bool = False,
    progress_every: float = 10.0,
    workers: int = 1,
    summary: Summary | None = None,
    lock_wait: float = LOCK_WAIT,
) -> Summary:
    """Import ``paths`` (format ``fmt``; a stream among them, standard input or a pipe named by its
    path, is read once, front to back; the files of a combined or json-lines log are read oldest
    first, ``reading_order``); the summary. ``progress``: a bar on a terminal, else a plain line
    on stderr every ``progress_every`` seconds. With ``workers`` > 1, log lines are parsed
    and replayed in that many processes. A batch that waits ``lock_wait`` seconds to commit
    (another process holds the store's write lock) ends the import, ``CommitFailed``.
    UsageError for a bad command line. A file that cannot be opened (missing, a directory,
    permission denied, zstd: found before any is read), that fails part way (what was read of
    it is written), or of which no line read is in ``fmt`` is named in the summary's ``failed``,
    and the other files are imported all the same; when no file can be opened, nothing is
    started (no store opened).

    ``summary`` is filled in as the import goes; cancelled once its ``interrupted`` is set (by
    ``until_stopped``), the import stops reading, writes everything read so far, stops its
    workers and returns it, counted, instead of raising."""
    check_format(fmt, fields)
    metrics = Metrics()
    replayer = Replayer(settings, metrics, host)
    if (recent := replayer.recent_bindings()) is not None:
        # Every match binds: the writer drops a pair's copies once the store has it, so a line
        # the store refuses does not count as having bound it (``gateway.importbindings``).
        recent.size = 0
    if fmt == "combined" and not replayer.host:
        raise UsageError(
            "--host: combined logs do not record the site's host; pass --host www.example.com "
            "(or set proxy.public_origin) so same-site referrers are told from external ones"
        )
    parse = None if fmt == "mitm" else parser_for(fmt, settings.options.identity.cookie_name, fields)
    summary = Summary() if summary is None else summary
    summary.calls = fmt == "segment"
    try:
        sizes = await asyncio.to_thread(input_sizes, paths, fmt)
        reading = list(range(len(paths)))
        if fmt in ("combined", "json-lines"):  # the files of a request log, oldest first
            assert parse is not None
            reading = await asyncio.to_thread(reading_order, paths, sizes, parse)
    except asyncio.CancelledError:  # stopped this early: nothing was written, nothing opened
        if not summary.interrupted:
            raise
        if (current := asyncio.current_task()) is not None:
            current.uncancel()
        if not dry_run:
            summary.new_rows = dict.fromkeys(COUNTED, 0)
        return summary
    for path, size in zip(paths, sizes, strict=True):
        if isinstance(size, OSError):
            summary.failed.append(Failed(_named(path), size, before_any=True))
    if len(summary.failed) == len(paths):  # nothing to import: no store opened, no chain run
        summary.read_all = True
        return summary
    store: LocalStore | None = None
    bar = None
    total: int | None = None
    pool = None
    dry: DryRun | None = None
    watch: ErasedWatch | None = None
    writer = Writer(None)
    added_rows: dict[str, int] = {}
    started = time.perf_counter()
    try:
        try:
            # As a live gateway starts its chain: the GeoIP databases are opened here.
            await replayer.pipeline.running()
            if not dry_run:
                storage = msgspec.structs.replace(settings.options.storage, max_wait_ms=lock_wait * 1000)
                store = LocalStore(settings.store_path, storage, metrics)
                store.lock_gap = LOCK_GAP  # a live gateway's commits get the lock between its own
                await store.open()
                # Its rows recorded as a run, so that it can be listed and undone (``--undo``).
                named = [
                    _named(path)
                    for path, size in zip(paths, sizes, strict=True)
                    if not isinstance(size, OSError)
                ]
                await store.on_writer(record_sql(fmt, named, datetime.now(UTC)), script=True)
            else:  # the store read only, each row checked: what a real run would add
                dry = await asyncio.to_thread(_dry_run, settings.store_path, summary)
            # Writes to the terminal are throttled to ~10 a second.
            if progress:
                readable = [size for size in sizes if not isinstance(size, OSError)]
                total = None if None in readable else sum(size or 0 for size in readable)
                bar = progress_bar(total, "import", "B", unit_scale=True, unit_divisor=1024)
            if workers > 1 and fmt != "mitm":
                said = replayer.pipeline.notices.said if replayer.pipeline.notices else frozenset()
                pool = await asyncio.to_thread(
                    WorkerPool, workers, settings, fmt, replayer.host, fields or {}, said
                )
            started = time.perf_counter()
            # Off a terminal (cron, ``2>log``): a plain line now and then, which a log file keeps.
            lines = progress_lines("import", progress_every, started) if progress else None
            shown = Progress(bar, started, total=total, lines=lines)
            watch = ErasedWatch(settings.store_path) if store is not None else None
            erased = await watch.current() if watch is not None else None
            if dry is not None and dry.attached:
                # Left out as a real run leaves them out, so the dry run counts what it would add.
                erased = await asyncio.to_thread(Erased.read, settings.store_path, only_read=True)
            days = summary.retention_days = settings.options.privacy.retention_days
            oldest = iso(cutoff(datetime.now(UTC), days)) if days else ""
            writer = Writer(store, erased, oldest, lock_wait, summary, watch, dry)
            for path, size in ((paths[n], sizes[n]) for n in reading):
                if isinstance(size, OSError):  # named in ``failed`` already
                    continue
                summary.files += 1
                before_it, mark = summary.read_to, summary.mark()
                try:
                    await import_file(replayer, pool, path, size is None, fmt, parse, summary, writer, shown)
                except OSError as err:  # the lines read before it still go in, and the next files
                    read_to = 0 if summary.read_to == before_it else summary.read_to[1]
                    summary.failed.append(Failed(_named(path), err, read_to))
                    shown.file_done(size)
                    continue
                if summary.none_in_format_since(mark):
                    summary.failed.append(Failed(_named(path)))
                shown.file_done(size)
            summary.read_all = True
        except asyncio.CancelledError:
            if not summary.interrupted:
                raise
            if (current := asyncio.current_task()) is not None:
                current.uncancel()  # the stop is handled here
        # Interrupted or not, every line counted so far goes in: the summary then says how far
        # the store has the files. The stop may come while this waits for the last commits.
        await through_stop(writer.finish(), summary)
        # Before the run's counts are recorded: they are of the rows it leaves in the store.
        summary.erased += await through_stop(writer.drop_erased_since(), summary)
        summary.run, summary.unfinished = await through_stop(writer.end_run(), summary)
        if not dry_run and summary.run:  # the run's own rows, read while the store is open: the
            # last connection's close takes the -wal away, which a read-only one cannot
            added = asyncio.to_thread(run_added, settings.store_path, summary.run)
            added_rows = await through_stop(added, summary)
    finally:
        # The stop may come during any of these too: each runs to its end regardless, or the
        # store's thread (or the pool) would outlive the import and hold the process open.
        if pool is not None:
            await through_stop(asyncio.to_thread(pool.close), summary)
        if bar is not None:
            bar.close()
        if watch is not None:  # its kept connection (``ErasedWatch``), before the store's last
            await through_stop(asyncio.to_thread(watch.close), summary)
        if replayer.stored is not None:  # the robots.txt lines' kept connection, as well
            await through_stop(asyncio.to_thread(replayer.stored.close), summary)
        if store is not None:
            await through_stop(store.close(), summary)
        if dry is not None:
            await through_stop(asyncio.to_thread(dry.close), summary)
        await through_stop(replayer.pipeline.done(), summary)
    summary.seconds = time.perf_counter() - started
    order = {_named(path): n for n, path in reversed(list(enumerate(paths)))}
    summary.failed.sort(key=lambda failed: order.get(failed.name, len(paths)))  # as named
    if not dry_run:  # the run's own rows: not those another import or the live gateway wrote meanwhile
        summary.new_rows = dict.fromkeys(COUNTED, 0) | added_rows
    elif dry is not None:  # what a real run would add, and what it would find there already
        summary.would_add = dict.fromkeys(COUNTED, 0) | dict(dry.new)
        summary.already = dict.fromkeys(COUNTED, 0) | dict(dry.already)
    return summary


def _dry_run(path: Path, summary: Summary) -> DryRun | None:
    """A dry run's check of the store ``path``, opened; None when the store cannot be read (this
    user may not, it is no SQLite file): the lines are counted all the same, as before the check
    was made, and the summary says why nothing was checked (``Summary.unchecked``). Blocking."""
    dry = DryRun(path)
    try:
        dry.open()
    except sqlite3.Error as err:
        summary.unchecked = f"the store {path} could not be read: {err}{store_hint(err, path)}"
        return None
    return dry


def _named(path: Input) -> str:
    """A file as the command line named it (``-``: standard input)."""
    return str(path) if isinstance(path, Path) else STDIN
