"""``gateway import FILE… --format F``: history in, events out through ``LocalStore``, a summary.

Owns the command: its options, reading each file in a worker thread (so the
event loop never blocks), feeding ``gateway.backfill.Replayer``, writing what it
produces through the store in large batches (a few in flight), counting the
rows the store gained (a re-import gains none), the progress bar (``tqdm``,
imported here only — the server never loads it) and the printed summary.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from gateway.backfill import Invalid, Replayer, Summary
from gateway.config import Settings
from gateway.events import Event
from gateway.history import History, Item, Line, Record, Skip
from gateway.logformats import FORMATS, JSON_FIELDS, combined_parser, json_parser, read_flows, segment_parser
from gateway.metrics import Metrics
from storage.local import LocalStore, StoreClosed
from storage.migrate import SchemaTooNew

BATCH = 8192
"""Events per store submit: one transaction each (multi-row INSERTs inside)."""
IN_FLIGHT = 2
"""Submits queued at once: the next batch is built while the last one commits."""
COUNTED = ("touchpoints", "identities", "conversions")
EXIT_USAGE = 2


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
            await self.inflight.pop(0)

    async def finish(self) -> None:
        await self.flush()
        for future in self.inflight:
            await future
        self.inflight = []


class _Source:
    """One file's items, chunk by chunk; every method does file I/O, so call it in a worker thread."""

    def __init__(self, path: Path, fmt: str, parse: Callable[[int, bytes], list[Item]] | None) -> None:
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
        if self.history is not None:
            self.history.close()
        if self.flows is not None:
            self.flows.close()  # type: ignore[attr-defined]


async def run_import(
    settings: Settings,
    paths: Sequence[Path],
    fmt: str,
    *,
    dry_run: bool = False,
    host: str = "",
    fields: dict[str, str] | None = None,
    progress: bool = False,
) -> Summary:
    """Import ``paths`` (format ``fmt``); the summary. UsageError for a bad command line,
    OSError when a file cannot be opened."""
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
    cookie = settings.options.identity.cookie_name
    parsers: dict[str, Callable[[int, bytes], list[Item]] | None] = {
        "combined": combined_parser(cookie),
        "json-lines": json_parser(cookie, fields or {}),
        "segment": segment_parser(),
        "mitm": None,
    }
    parse = parsers[fmt]
    sizes = await asyncio.to_thread(lambda: [p.stat().st_size for p in paths])
    store: LocalStore | None = None
    before: dict[str, int] = {}
    if not dry_run:
        storage = msgspec.structs.replace(settings.options.storage, max_wait_ms=600_000.0)
        store = LocalStore(settings.store_path, storage, metrics)
        await store.open()
        before = await asyncio.to_thread(_count_rows, settings.store_path)
    # Importing tqdm reads files: off the loop. Its writes are throttled to ~10 a second.
    bar = await asyncio.to_thread(_progress_bar, sum(sizes)) if progress else None
    summary = Summary()
    started = time.perf_counter()
    writer = _Writer(store)
    try:
        done = 0
        for path, size in zip(paths, sizes, strict=True):
            summary.files += 1
            await _import_file(replayer, path, fmt, parse, summary, writer, bar, done, started)
            done += size
            if bar is not None:
                bar.update(done - bar.n)
        await writer.finish()
    finally:
        if bar is not None:
            bar.close()
        if store is not None:
            await store.close()
    summary.seconds = time.perf_counter() - started
    if not dry_run:
        after = await asyncio.to_thread(_count_rows, settings.store_path)
        summary.new_rows = {table: after[table] - before[table] for table in COUNTED}
    return summary


async def _import_file(
    replayer: Replayer,
    path: Path,
    fmt: str,
    parse: Callable[[int, bytes], list[Item]] | None,
    summary: Summary,
    writer: _Writer,
    bar: Any,
    done: int,
    started: float,
) -> None:
    source = await asyncio.to_thread(_Source, path, fmt, parse)
    try:
        await _replay_source(
            replayer, source, path.name, fmt == "segment", summary, writer, bar, done, started
        )
    finally:
        await asyncio.to_thread(source.close)


async def _replay_source(
    replayer: Replayer,
    source: _Source,
    name: str,
    segment: bool,
    summary: Summary,
    writer: _Writer,
    bar: Any,
    done: int,
    started: float,
) -> None:
    identity, default_host = source.identity, replayer.host
    replay, segment_event, add = replayer.replay, replayer.segment_event, writer.add
    events = summary.events
    while (step := await asyncio.to_thread(source.next)) is not None:
        chunk, position = step
        produced: list[Event] = []
        for item in chunk:
            if type(item) is Line:
                if not (item.host or default_host):
                    summary.skip(name, item.number, "host: missing (and no --host or proxy.public_origin)")
                    continue
                new = await replay(item, identity)
            elif type(item) is Record:
                try:
                    new = segment_event(item, identity)
                except Invalid as err:
                    summary.skip(name, item.number, "; ".join(err.errors))
                    continue
                except ValueError as err:
                    summary.skip(name, item.number, str(err))
                    continue
            else:
                assert isinstance(item, Skip)
                summary.skip(name, item.number, item.reason)
                continue
            if new:
                produced.extend(new)
        for event in produced:
            events[event.table] += 1
        summary.lines += len({item.number for item in chunk}) if segment else len(chunk)
        await add(produced)
        if bar is not None:
            bar.update(done + position - bar.n)
            rate = summary.lines / max(1e-9, time.perf_counter() - started)
            bar.set_postfix_str(f"{rate:,.0f} lines/s", refresh=False)


def _progress_bar(total: int) -> Any:
    from tqdm import tqdm  # the import command's only: the server never loads it

    # disable=None: no bar when stderr is not a terminal (cron, CI, pipes)
    return tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc="import",
        file=sys.stderr,
        disable=None,
    )


def import_command(settings: Settings, args: argparse.Namespace) -> int:
    """``gateway import``: run, print the summary; 2 for a usage problem, 1 for an unreadable file."""
    try:
        fields = parse_fields(args.field)
        paths = [Path(p) for p in args.files]
        summary = asyncio.run(
            run_import(
                settings,
                paths,
                args.format,
                dry_run=args.dry_run,
                host=args.host or "",
                fields=fields,
                progress=not args.no_progress,
            )
        )
    except UsageError as err:
        print(f"gateway import: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:
        print(f"gateway import: cannot read {err.filename or ''}: {err.strerror or err}", file=sys.stderr)
        return 1
    except (SchemaTooNew, sqlite3.Error, StoreClosed) as err:
        print(f"gateway import: the store {settings.store_path} failed: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "gateway import: interrupted; what was committed stays, and importing again is safe",
            file=sys.stderr,
        )
        return 130
    print(summary.render())
    return 0
