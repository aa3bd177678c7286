"""One input of ``gateway import`` through the chain: read, replay, count, hand to the store.

Owns ``import_file``: its reader (``gateway.importread``), replaying its chunks
in this process or in the worker processes (``gateway.importworkers``: results
taken in file order, a few chunks ahead), the bindings of a pair sifted
(``gateway.importbindings``: kept until the store has the pair),
counting lines, events and skips into the ``Summary`` as it goes (``read_to``:
how far everything was handed to the store), handing each event to the writer
with the line it came from (a line the store refuses is skipped by its
file:line), and naming the input in a read error gzip gives without a name.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Future

from gateway.backfill import Replayed, Replayer, Summary, replay_items
from gateway.events import Event
from gateway.history import READ_ERRORS, UNENDED, Input, Item, Skip, input_name
from gateway.importread import Source, off_loop
from gateway.importreport import Progress
from gateway.importworkers import WorkerPool
from gateway.importwrite import Writer


async def import_file(
    replayer: Replayer,
    pool: WorkerPool | None,
    path: Input,
    stream: bool,
    fmt: str,
    parse: Callable[[int, bytes], list[Item]] | None,
    summary: Summary,
    writer: Writer,
    progress: Progress,
) -> None:
    name = input_name(path)
    try:
        source = await off_loop(functools.partial(Source, path, fmt, parse, stream), stream)
        try:
            if pool is not None and source.history is not None:
                await _replay_pooled(replayer, pool, source, name, summary, writer, progress)
            else:
                await _replay_source(replayer, source, name, summary, writer, progress)
        finally:
            await asyncio.to_thread(source.close)
    except READ_ERRORS as err:
        # gzip says "Not a gzipped file", "Compressed file ended before …" or "invalid block
        # type" without the file's name: an OSError naming it, which the command prints.
        if isinstance(err, OSError) and err.filename:
            raise
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise OSError(getattr(err, "errno", None) or 0, reason, name) from err


async def _replay_source(
    replayer: Replayer,
    source: Source,
    name: str,
    summary: Summary,
    writer: Writer,
    progress: Progress,
) -> None:
    """In this process: read and parse a chunk in a worker thread, replay it here."""
    done = 0
    while (step := await off_loop(source.next, source.stream)) is not None:
        chunk, position = step
        replayed = await replay_items(replayer, chunk, source.identity)
        last = chunk[-1].number
        await _account(name, source.stream, summary, writer, replayed, last - done, last)
        done = last
        progress.update(summary.lines, position)
    summary.lines += _blank_tail(source, done, summary)


def _blank_tail(source: Source, done: int, summary: Summary) -> int:
    """The blank lines read after a file's last line that is not (counted as read, as the blank
    lines between its lines are: ``lines read`` is ``wc -l``'s count); the file's blank lines
    are added to ``summary.blank``."""
    if source.history is None:
        return 0
    summary.blank += source.history.blank
    return source.history.lines - done


def kept_lines(kept: list[Event], events: list[Event], lines: list[int]) -> list[int]:
    """The lines of ``kept``, some of ``events`` in their order (``lines``: the line of each)."""
    if len(kept) == len(events):
        return lines
    ours = set(map(id, kept))
    return [number for event, number in zip(events, lines, strict=True) if id(event) in ours]


async def _replay_pooled(
    replayer: Replayer,
    pool: WorkerPool,
    source: Source,
    name: str,
    summary: Summary,
    writer: Writer,
    progress: Progress,
) -> None:
    """On every core: read a chunk here (in a thread), parse and replay it in a worker process;
    results are taken in file order, a few chunks ahead."""

    read = 0

    def read_and_submit() -> tuple[Future[Replayed], int, int, int] | None:
        nonlocal read
        lines, position = source.raw_lines()
        if not lines:
            return None
        last = lines[-1]
        number = last.number if isinstance(last, Skip) else last[0]
        count, read = number - read, number  # blank lines among them included
        return pool.submit(lines, source.identity), count, number, position

    pending: deque[tuple[Future[Replayed], int, int, int]] = deque()

    async def collect() -> None:
        future, lines, last, position = pending[0]
        replayed = await asyncio.wrap_future(future)
        pending.popleft()
        await _account(name, source.stream, summary, writer, replayed, lines, last)
        progress.update(summary.lines, position)

    try:
        while True:
            try:
                step = await off_loop(read_and_submit, source.stream)
            except READ_ERRORS:  # the file broke: what was read before goes in
                while pending:
                    await collect()
                raise
            if step is None:
                break
            pending.append(step)
            if len(pending) > 2 * pool.workers:
                await collect()
        while pending:
            await collect()
        summary.lines += _blank_tail(source, read, summary)
    except asyncio.CancelledError:
        if not summary.interrupted:
            raise
        await _collect_through_stop(pending, collect, pool)
        raise
    finally:
        pool.cancel(future for future, *_ in pending)  # not taken back: not replayed, or not stored


async def _collect_through_stop(
    pending: deque[tuple[Future[Replayed], int, int, int]],
    collect: Callable[[], Awaitable[None]],
    pool: WorkerPool,
) -> None:
    """Stopped: the chunks still queued for the workers are dropped, and those the workers have
    replayed or are replaying are taken back, in file order, to be stored with the rest. The
    pool's shutdown waits for the ones being replayed anyway, so this costs no more time; those
    dropped are imported by the next run."""
    pool.cancel(future for future, *_ in pending)
    while pending and not pending[0][0].cancelled():
        try:
            await collect()
        except Exception:  # a chunk failed (a worker died): the stop keeps what came back before it
            return


async def _account(
    name: str,
    stream: bool,
    summary: Summary,
    writer: Writer,
    replayed: Replayed,
    lines: int,
    last: int,
) -> None:
    unread = 0
    for skip in replayed.skips:
        summary.skip(name, skip.number, skip.reason, skip.detail)
        unread += skip.reason == UNENDED
    summary.forwarded += replayed.forwarded
    summary.unbelieved += replayed.unbelieved
    summary.requests += replayed.requests
    summary.with_agent += replayed.with_agent
    await writer.see_erasures()
    events, erased = writer.erased.keep(replayed.events)
    summary.erased += erased
    events, expired = writer.expired(events)
    summary.expired += expired
    events = writer.bindings.sift(events)  # a pair's copies: once the store has it, dropped
    lines_of = kept_lines(events, replayed.events, replayed.lines)
    counts = summary.events
    spare = writer.bindings.spare
    for event in events:
        if not spare(event):
            counts[event.table] += 1
    # A last line without its line end is not read, and ``wc -l`` does not count it either.
    summary.lines += lines - unread
    summary.read_to = (name, last)
    summary.read_stream = stream
    await writer.add(events, name, lines_of)
