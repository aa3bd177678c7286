"""Reports on every core: the processes that compute slices of a large report.

Owns the report worker processes. A report over many conversions is cut into slices of the
period's conversions (by id, ``Slice``; or shares of its people, ``storage/people.py``); each
worker process keeps its own ``Reports`` (its own read connection, built once when it
starts) and answers a slice with partial sums that the caller adds up. A slice reads each of
its conversions with every touch of its devices, exactly as a whole report does, so the sums
are the same.

Each worker is a spawned process (not forked: the gateway runs threads, such as the store's
writer, that a fork would copy mid-flight) on one pipe of its own: a task in, its answer
out. A worker that dies shows as the end of its pipe; a gateway that dies, even killed
outright, shows to its workers the same way, and they exit. Workers ignore Ctrl-C, even while
they start (the gateway closes them), and finish a slice before they notice the gateway is
gone. ``concurrent.futures.ProcessPoolExecutor`` was tried first: after a
worker died it broke with closed or duplicated pipe handles now and then (Python 3.11).

Python keeps the memory a large report freed for its next objects: a worker that holds more
than a limit once a report is done is replaced by a new one (``recycle``), which is how that
memory goes back to the system.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, NoReturn, TypeVar

from gateway.childsignals import blocked, ignored

_T = TypeVar("_T")

Slice = tuple[str | None, str | None]
"""Conversion ids ``lo <= id < hi`` of one slice of a report (None: no bound on that side)."""
WHOLE: Slice = (None, None)
JOIN_SECONDS = 5.0
"""How long a closing worker gets to exit before it is killed."""
ANSWER_SECONDS = 900.0
"""Longest a worker may take over one slice before it counts as hung (and is killed): far
beyond any report, short of holding the reports forever."""
CTRL_C = {signal.SIGINT}
"""Reaches the whole process group: a worker starts with it blocked (a worker still importing
would die of it with a traceback) and then ignores it (``gateway.childsignals``)."""
NICENESS = 10
"""Workers run at a lower CPU priority than the gateway: a report takes longer, not the site's
requests, when every core is busy."""


def resident_bytes(pid: int) -> int | None:
    """A process's resident memory, from Linux's ``/proc``; None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


DEATH_SECONDS = 1.0
"""How long a worker whose pipe failed is given to be reaped, so its end can be said."""


def how_ended(process: BaseProcess) -> str:
    """``pid 4242 killed by SIGKILL (the kernel's out-of-memory killer, or kill -9)``, ``pid 4242
    exited with status 1``, for a process that has ended."""
    code = process.exitcode
    if code is None or code >= 0:
        return f"pid {process.pid} exited with status {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    oom = " (the kernel's out-of-memory killer, or kill -9)" if code == -signal.SIGKILL else ""
    return f"pid {process.pid} killed by {name}{oom}"


class WorkerDied(Exception):
    """A report worker process ended while the pool needed it (killed, out of memory…)."""


class _Failed:
    """A task's exception, as a worker sends it back (``repr`` only: it may not pickle)."""

    def __init__(self, error: BaseException) -> None:
        self.kind, self.text = type(error).__name__, repr(error)


def _serve(conn: Connection, factory: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """A worker's life: build its object, then answer tasks until the pipe says stop or ends."""
    ignored(CTRL_C)  # blocked since its start
    with contextlib.suppress(OSError):  # the proxy beside it comes first when cores are busy
        os.nice(NICENESS)
    obj = factory(*args)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):  # the gateway is gone
            return
        if task is None:
            return
        fn, task_args = task
        try:
            answer = fn(obj, *task_args)
        except Exception as error:  # the caller raises it: a report error stays an error
            conn.send(_Failed(error))
        else:
            conn.send(answer)


class ReportPool:
    """``processes`` spawned workers, each with ``factory(*args)``; started on first use (or by
    ``start``). Blocking: use it from a worker thread, never on the event loop; one ``map`` at
    a time."""

    def __init__(self, processes: int, factory: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.processes, self.factory, self.args = processes, factory, args
        self._workers: list[tuple[BaseProcess, Connection]] = []
        self.answer_seconds = ANSWER_SECONDS

    @property
    def pids(self) -> list[int]:
        return [p.pid for p, _ in self._workers if p.pid is not None]

    def start(self) -> None:
        """Start every worker now (each imports the code and opens its connection, about half a
        second; this does not wait for that), so a large report does not wait for them; and
        replace any that died since."""
        with blocked(CTRL_C):
            if not self._workers:
                self._workers = [self._spawn() for _ in range(self.processes)]
                return
            for i, (process, conn) in enumerate(self._workers):
                if not process.is_alive():  # died while idle (killed): replaced before it is needed
                    self._workers[i] = self._spawn()
                    _stop(process, conn)

    def _spawn(self) -> tuple[BaseProcess, Connection]:
        context = multiprocessing.get_context("spawn")
        mine, theirs = context.Pipe()
        process = context.Process(target=_serve, args=(theirs, self.factory, self.args), daemon=True)
        try:
            process.start()
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()  # only the worker holds its end: its death ends the pipe here
        return process, mine

    def recycle(self, limit: int) -> list[tuple[int, int]]:
        """Between two ``map`` calls: replace each worker holding more than ``limit`` bytes by a
        new one (started, not waited for); the old ones are told to exit first, then waited
        for together. Returns each replaced worker's (pid, bytes held)."""
        replaced: list[tuple[int, int]] = []
        retired = []
        try:
            for i, (process, conn) in enumerate(self._workers):
                held = resident_bytes(process.pid) if process.pid is not None else None
                if held is None or held <= limit:
                    continue
                with blocked(CTRL_C):
                    self._workers[i] = self._spawn()  # first: should it fail, the old one stays
                with contextlib.suppress(OSError):  # already gone
                    conn.send(None)
                retired.append((process, conn))
                replaced.append((process.pid or 0, held))
        finally:
            for process, conn in retired:
                _stop(process, conn)
        return replaced

    def map(self, fn: Callable[..., _T], slices: Sequence[object], *args: Any) -> list[_T]:
        """``fn(worker's object, slice, *args)`` for each slice, in the workers; the answers in
        the order of ``slices``. Raises ``WorkerDied`` if a worker died (all are stopped; the
        next call starts new ones), ``RuntimeError`` if ``fn`` raised in a worker."""
        try:
            self.start()
            workers = self._workers
            for i, part in enumerate(slices):
                workers[i % len(workers)][1].send((fn, (part, *args)))
            answers = [self._answer(workers[i % len(workers)][1]) for i in range(len(slices))]
        except (EOFError, OSError) as error:  # a worker gone, or none could start
            self._died(error)
        except BaseException:  # answers may be left in the pipes: no later report may read them
            self.close(kill=True)
            raise
        for answer in answers:
            if isinstance(answer, _Failed):
                raise RuntimeError(f"a report worker failed: {answer.text}")
        return answers

    def _answer(self, conn: Connection) -> Any:
        if not conn.poll(self.answer_seconds):
            raise TimeoutError(f"no answer from a report worker in {self.answer_seconds:g} s")
        return conn.recv()

    def _died(self, error: BaseException) -> NoReturn:
        """``WorkerDied`` saying which worker ended and how (``pid 4242 killed by SIGKILL``),
        every worker stopped first: the pipe's own error (``Connection reset by peer``) says
        neither. Its end is waited for a moment: the pipe may tell before the process is reaped."""
        ready = wait([process.sentinel for process, _ in self._workers], timeout=DEATH_SECONDS)
        for process, _ in self._workers:
            if process.sentinel in ready:  # its files closed: it ends, and is reaped in a moment
                process.join(DEATH_SECONDS)
        ended = [how_ended(p) for p, _ in self._workers if p.exitcode is not None]
        self.close(kill=True)
        raise WorkerDied(", ".join(ended) or f"its pipe failed: {error or type(error).__name__}") from error

    def close(self, kill: bool = False) -> None:
        """Stop every worker: ask each to exit (or kill them, ``kill``), then wait for them."""
        workers, self._workers = self._workers, []
        for process, conn in workers:
            if kill:
                process.kill()
            else:
                with contextlib.suppress(OSError):  # already gone
                    conn.send(None)
        for process, conn in workers:
            _stop(process, conn)


def _stop(process: BaseProcess, conn: Connection) -> None:
    """Wait for a worker told to exit (killed, past ``JOIN_SECONDS``), and release it."""
    process.join(JOIN_SECONDS)
    if process.is_alive():
        process.kill()
        process.join()
    conn.close()
    process.close()
