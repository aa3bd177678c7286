"""``gateway import FILE… --format F``: history in, events out through ``LocalStore``, a summary.

Owns the command: its options, reading each file in a worker thread (so the
event loop never blocks), replaying what it reads here or in worker processes
(``gateway.importworkers``), writing the events through the store in large
batches (a few in flight), counting the rows the store gained (a re-import
gains none), the progress bar (``gateway.progress``: the server never loads it) and the
printed summary.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib.util
import signal
import sqlite3
import sys
import threading
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import msgspec

from addons.stitching import RecentPairs
from gateway.backfill import Replayer, Summary, replay_items
from gateway.config import Settings
from gateway.events import Binding, Event
from gateway.history import STDIN, History, Input, Item, Skip, input_name
from gateway.importworkers import WorkerPool
from gateway.logformats import FORMATS, JSON_FIELDS, parser_for, read_flows
from gateway.metrics import Metrics
from gateway.progress import progress_bar
from storage.local import LocalStore, StoreClosed
from storage.migrate import SchemaTooNew

BATCH = 8192
"""Events per store submit: one transaction each (multi-row INSERTs inside)."""
IN_FLIGHT = 2
"""Submits queued at once: the next batch is built while the last one commits."""
COUNTED = ("touchpoints", "identities", "conversions")
EXIT_USAGE = 2
_T = TypeVar("_T")
STOPPING = {signal.SIGINT: 130, signal.SIGTERM: 143}
"""Signals that stop an import cleanly, and the exit status of each (128 + its number, as a shell
reports a command the signal ended)."""


class UsageError(Exception):
    """A problem with the command line (printed, exit 2)."""


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
            raise UsageError(f'--field {spec}: a JSON pointer starts with "/" (or is empty to unmap)')
        fields[name] = pointer
    return fields


def _sizes(paths: Sequence[Input]) -> list[int | None]:
    """Each file's size in bytes (None: a stream's is not known before its end)."""
    return [path.stat().st_size if isinstance(path, Path) else None for path in paths]


def _count_rows(path: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return {table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in COUNTED}


class _Writer:
    """Events → the store in batches of ``BATCH``, at most ``IN_FLIGHT`` queued (None: dry run)."""

    def __init__(self, store: LocalStore | None) -> None:
        self.store = store
        self.pending: list[Event] = []
        self.inflight: list[asyncio.Future[None]] = []

    async def add(self, events: list[Event]) -> None:
        self.pending.extend(events)
        if len(self.pending) >= BATCH:
            await self.flush()

    async def flush(self) -> None:
        if self.store is None or not self.pending:
            self.pending = []
            return
        self.inflight.append(self.store.submit(self.pending))
        self.pending = []
        while len(self.inflight) > IN_FLIGHT:
            await self._oldest()

    async def finish(self) -> None:
        await self.flush()
        while self.inflight:
            await self._oldest()

    async def _oldest(self) -> None:
        """Wait for the oldest commit, and raise its failure. Shielded: an interrupted import
        (``until_stopped`` cancels it) waits for it again in ``finish``, rather than losing the
        commit's outcome with a future cancelled under the store."""
        await asyncio.shield(self.inflight[0])
        self.inflight.pop(0)


class _Source:
    """One file's items, chunk by chunk; every method does file I/O, so call it off the loop
    (``_off_loop``)."""

    def __init__(self, path: Input, fmt: str, parse: Callable[[int, bytes], list[Item]] | None) -> None:
        self.stream = not isinstance(path, Path)
        self.history: History | None = None
        self.flows: Iterator[tuple[list[Item], int]] | None = None
        if fmt == "mitm":
            self.flows = read_flows(path)
            self.identity = b"flow"  # a flow is keyed by its method, URL and time, whatever the file
        else:
            assert parse is not None
            self.history = History(path, parse)
            self.identity = self.history.identity

    def next(self) -> tuple[list[Item], int] | None:
        """The next chunk and the bytes of the file consumed so far; None at the end."""
        if self.flows is not None:
            return next(self.flows, None)
        assert self.history is not None
        chunk = self.history.chunk()
        return (chunk, self.history.position) if chunk else None

    def close(self) -> None:
        if self.stream:  # the caller's, and perhaps still read by a thread a stop left waiting
            return
        if self.history is not None:
            self.history.close()
        if self.flows is not None:
            self.flows.close()  # type: ignore[attr-defined]


async def _off_loop(call: Callable[[], _T], stream: bool) -> _T:
    """``call()`` (file I/O) in a worker thread. Reading a stream (stdin) may wait for input
    indefinitely: a stopped import must not wait for it, so a stream is read in a daemon thread
    of its own (the default executor's threads are joined as the loop and the process end)."""
    if not stream:
        return await asyncio.to_thread(call)
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():  # not cancelled by a stop meanwhile
            outcome()

    def run() -> None:
        try:
            result = call()
        except BaseException as err:  # handed to the awaiting task, which raises it
            outcome = functools.partial(future.set_exception, err)
        else:
            outcome = functools.partial(future.set_result, result)
        with contextlib.suppress(RuntimeError):  # the loop is closed: the import ended without it
            loop.call_soon_threadsafe(settle, outcome)

    threading.Thread(target=run, name="gateway-import-stdin", daemon=True).start()
    return await future


async def run_import(
    settings: Settings,
    paths: Sequence[Input],
    fmt: str,
    *,
    dry_run: bool = False,
    host: str = "",
    fields: dict[str, str] | None = None,
    progress: bool = False,
    workers: int = 1,
    summary: Summary | None = None,
) -> Summary:
    """Import ``paths`` (format ``fmt``; a stream among them is read once, front to back); the
    summary. With ``workers`` > 1, log lines are parsed and replayed in that many processes.
    UsageError for a bad command line, OSError when a file cannot be opened.

    ``summary`` is filled in as the import goes; cancelled once its ``interrupted`` is set (by
    ``until_stopped``), the import stops reading, writes everything read so far, stops its
    workers and returns it, counted, instead of raising."""
    if fmt not in FORMATS:
        raise UsageError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "mitm" and importlib.util.find_spec("mitmproxy") is None:
        raise UsageError(
            "--format mitm reads flow dumps with mitmproxy: pip install 'tracking-gateway[mitm]'"
        )
    metrics = Metrics()
    replayer = Replayer(settings, metrics, host)
    if fmt == "combined" and not replayer.host:
        raise UsageError(
            "--host: combined logs do not record the site's host; pass --host www.example.com "
            "(or set proxy.public_origin) so same-site referrers are told from external ones"
        )
    parse = None if fmt == "mitm" else parser_for(fmt, settings.options.identity.cookie_name, fields)
    summary = Summary() if summary is None else summary
    store: LocalStore | None = None
    before: dict[str, int] = {}
    bar = None
    pool = None
    writer = _Writer(None)
    started = time.perf_counter()
    try:
        try:
            sizes = await asyncio.to_thread(_sizes, paths)
            # As a live gateway starts its chain: the GeoIP databases are opened here.
            await replayer.pipeline.running()
            if not dry_run:
                storage = msgspec.structs.replace(settings.options.storage, max_wait_ms=600_000.0)
                store = LocalStore(settings.store_path, storage, metrics)
                await store.open()
                before = await asyncio.to_thread(_count_rows, settings.store_path)
            # Writes to the terminal are throttled to ~10 a second.
            if progress:
                total = None if None in sizes else sum(size or 0 for size in sizes)
                bar = progress_bar(total, "import", "B", unit_scale=True, unit_divisor=1024)
            if workers > 1 and fmt != "mitm":
                pool = await asyncio.to_thread(
                    WorkerPool, workers, settings, fmt, replayer.host, fields or {}
                )
            started = time.perf_counter()
            shown = _Progress(bar, started)
            writer = _Writer(store)
            for path, size in zip(paths, sizes, strict=True):
                summary.files += 1
                await _import_file(replayer, pool, path, fmt, parse, summary, writer, shown)
                shown.file_done(size)
            summary.read_all = True
        except asyncio.CancelledError:
            if not summary.interrupted:
                raise
            if (current := asyncio.current_task()) is not None:
                current.uncancel()  # the stop is handled here
        # Interrupted or not, every line counted so far goes in: the summary then says how far
        # the store has the files. The stop may come while this waits for the last commits.
        await _through_stop(writer.finish(), summary)
    finally:
        # The stop may come during any of these too: each runs to its end regardless, or the
        # store's thread (or the pool) would outlive the import and hold the process open.
        if pool is not None:
            await _through_stop(asyncio.to_thread(pool.close), summary)
        if bar is not None:
            bar.close()
        if store is not None:
            await _through_stop(store.close(), summary)
        await _through_stop(replayer.pipeline.done(), summary)
    summary.seconds = time.perf_counter() - started
    if not dry_run:  # stopped before the rows were counted: before anything was written
        if before:
            after = await _through_stop(asyncio.to_thread(_count_rows, settings.store_path), summary)
        else:
            after = before
        summary.new_rows = {table: after.get(table, 0) - before.get(table, 0) for table in COUNTED}
    return summary


async def _through_stop(step: Awaitable[_T], summary: Summary) -> _T:
    """``step`` to its end even when the import's stop (``until_stopped``: one cancellation)
    lands while it runs; any other cancellation still cancels it."""
    task = asyncio.ensure_future(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if not summary.interrupted or current is None or current.cancelling() > 1:
            task.cancel()
            raise
        current.uncancel()  # the stop is handled: later timeouts inside the store work as usual
        return await task


async def _import_file(
    replayer: Replayer,
    pool: WorkerPool | None,
    path: Input,
    fmt: str,
    parse: Callable[[int, bytes], list[Item]] | None,
    summary: Summary,
    writer: _Writer,
    progress: _Progress,
) -> None:
    name = input_name(path)
    try:
        source = await _off_loop(functools.partial(_Source, path, fmt, parse), not isinstance(path, Path))
        try:
            if pool is not None and source.history is not None:
                await _replay_pooled(replayer, pool, source, name, summary, writer, progress)
            else:
                await _replay_source(replayer, source, name, summary, writer, progress)
        finally:
            await asyncio.to_thread(source.close)
    except (OSError, EOFError, zlib.error) as err:
        # gzip says "Not a gzipped file", "Compressed file ended before …" or "invalid block
        # type" without the file's name: an OSError naming it, which the command prints.
        if isinstance(err, OSError) and err.filename:
            raise
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise OSError(getattr(err, "errno", None) or 0, reason, name) from err


async def _replay_source(
    replayer: Replayer,
    source: _Source,
    name: str,
    summary: Summary,
    writer: _Writer,
    progress: _Progress,
) -> None:
    """In this process: read and parse a chunk in a worker thread, replay it here."""
    while (step := await _off_loop(source.next, source.stream)) is not None:
        chunk, position = step
        events, skips = await replay_items(replayer, chunk, source.identity)
        lines = len({item.number for item in chunk})
        await _account(name, summary, writer, events, skips, lines, chunk[-1].number)
        progress.update(summary.lines, position)


def first_bindings(events: list[Event], recent: RecentPairs) -> list[Event]:
    """``events`` (in file order) without the bindings of a pair bound lately: what one process's
    ``stitching`` leaves out, applied to workers that bind at every fire."""
    return [e for e in events if type(e) is not Binding or recent.first((e.visitor_key, e.user_key))]


async def _replay_pooled(
    replayer: Replayer,
    pool: WorkerPool,
    source: _Source,
    name: str,
    summary: Summary,
    writer: _Writer,
    progress: _Progress,
) -> None:
    """On every core: read a chunk here (in a thread), parse and replay it in a worker process;
    results are taken in file order, a few chunks ahead."""
    history = source.history
    assert history is not None

    def read_and_submit() -> tuple[Future[tuple[list[Event], list[Skip]]], int, int, int] | None:
        lines = history.raw_lines()
        if not lines:
            return None
        last = lines[-1]
        number = last.number if isinstance(last, Skip) else last[0]
        return pool.submit(lines, source.identity), len(lines), number, history.position

    pending: deque[tuple[asyncio.Future[tuple[list[Event], list[Skip]]], int, int, int]] = deque()

    recent = replayer.recent_bindings()

    async def collect() -> None:
        future, lines, last, position = pending.popleft()
        events, skips = await future
        if recent is not None:
            events = first_bindings(events, recent)
        await _account(name, summary, writer, events, skips, lines, last)
        progress.update(summary.lines, position)

    try:
        while (step := await _off_loop(read_and_submit, source.stream)) is not None:
            future, lines, last, position = step
            pending.append((asyncio.wrap_future(future), lines, last, position))
            if len(pending) > 2 * pool.workers:
                await collect()
        while pending:
            await collect()
    finally:
        for waiting, *_ in pending:  # interrupted: chunks not taken yet are not replayed
            waiting.cancel()


async def _account(
    name: str,
    summary: Summary,
    writer: _Writer,
    events: list[Event],
    skips: list[Skip],
    lines: int,
    last: int,
) -> None:
    for skip in skips:
        summary.skip(name, skip.number, skip.reason)
    counts = summary.events
    for event in events:
        counts[event.table] += 1
    summary.lines += lines
    summary.read_to = (name, last)
    await writer.add(events)


class _Progress:
    """The bar (or nothing): bytes of all files with ETA, and lines/s."""

    def __init__(self, bar: Any, started: float) -> None:
        self.bar, self.started, self.done, self.position = bar, started, 0, 0

    def update(self, lines: int, position: int) -> None:
        self.position = position
        if self.bar is None:
            return
        self.bar.update(self.done + position - self.bar.n)
        rate = lines / max(1e-9, time.perf_counter() - self.started)
        self.bar.set_postfix_str(f"{rate:,.0f} lines/s", refresh=False)

    def file_done(self, size: int | None) -> None:
        """The end of a file of ``size`` bytes (None: a stream, as far as it was read)."""
        self.done += self.position if size is None else size
        self.position = 0
        if self.bar is not None:
            self.bar.update(self.done - self.bar.n)


async def until_stopped(run: Callable[[Summary], Coroutine[Any, Any, Summary]]) -> Summary:
    """``run(summary)``, stopped cleanly by SIGINT (Ctrl-C) or SIGTERM: the first one marks the
    summary interrupted and cancels the run, which then finishes writing what it read; a second
    one has its default effect (KeyboardInterrupt, or the end of the process). One held while
    the command loaded (``gateway/__main__.py``) stops the run as it starts. Once the run is over
    they are ignored: what is left is to report it (the caller restores its own handlers)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    summary = Summary()

    def stop(sig: signal.Signals) -> None:
        summary.interrupted = sig.name
        for each in STOPPING:
            loop.remove_signal_handler(each)
        task.cancel()

    try:
        for sig in STOPPING:
            loop.add_signal_handler(sig, stop, sig)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPPING)
        return await run(summary)
    except asyncio.CancelledError:
        if not summary.interrupted:  # not ours
            raise
        return summary  # stopped before the run had anything to write
    finally:
        for sig in STOPPING:
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)


def import_command(settings: Settings, args: argparse.Namespace) -> int:
    """``gateway import``: run, print the summary; 2 for a usage problem, 1 for an unreadable file,
    130 or 143 when SIGINT or SIGTERM stopped it part way."""
    handlers = {sig: signal.getsignal(sig) for sig in STOPPING}
    try:
        return _import_command(settings, args)
    finally:  # ignored once the import is over (``until_stopped``): as they were, for a caller
        for sig, handler in handlers.items():
            if handler is not None:
                signal.signal(sig, handler)


def _inputs(files: Sequence[str]) -> list[Input]:
    """The command line's files; ``-`` is standard input (once, and not a terminal)."""
    if files.count("-") > 1:
        raise UsageError("-: standard input can be read once; give - once")
    return [_stdin() if name == "-" else Path(name) for name in files]


def _stdin() -> BinaryIO:
    """Standard input, unbuffered (only a stream's own reader, in its own thread, waits on it),
    and never closed (it is not ours)."""
    try:
        stream = open(0, "rb", buffering=0, closefd=False)  # noqa: SIM115 - never closed
    except OSError as err:  # closed (<&-)
        raise OSError(err.errno, err.strerror, STDIN) from err
    if stream.isatty():
        raise UsageError(
            "-: standard input is a terminal; pipe a log in, as in zcat access.log.gz | gateway import - …"
        )
    return stream


def _import_command(settings: Settings, args: argparse.Namespace) -> int:
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
    except (SchemaTooNew, sqlite3.Error, StoreClosed) as err:
        print(f"gateway import: the store {settings.store_path} failed: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C, while the first one's stop was still writing
        print(
            "gateway import: interrupted; what was committed stays, and importing again is safe",
            file=sys.stderr,
        )
        return STOPPING[signal.SIGINT]
    print(summary.render())
    if summary.interrupted:
        print(f"gateway import: {_stopped(summary)}", file=sys.stderr)
        return STOPPING[signal.Signals[summary.interrupted]]
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
    return f"cannot read {name}: {why}"


def _stopped(summary: Summary) -> str:
    """What an interrupted import says: how far it got, and how to finish."""
    name, line = summary.read_to
    read = f"{name} line {line:,}"
    earlier = " (and the files before it)" if name and summary.files > 1 else ""
    if not name:
        return f"stopped by {summary.interrupted} before a line was read; nothing was imported"
    if summary.new_rows is None:
        return f"stopped by {summary.interrupted} after {read}{earlier}; a dry run: nothing was written"
    if summary.read_all:  # the stop came while the last writes went in: they all did
        return (
            f"stopped by {summary.interrupted} after every line was read: everything up to {read}{earlier}"
            " is in the store; nothing is left to import (running the same command again adds nothing twice)"
        )
    # Standard input is known by its lines alone: a rest of it (tail -n +N) would be another file.
    again = " with the whole input again, from its first line," if name == STDIN else " again"
    return (
        f"stopped by {summary.interrupted}: everything up to {read}{earlier} is in the store; run the"
        f" same command{again} to import the rest (what is already there is not added twice)"
    )
