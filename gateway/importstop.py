"""Stopping ``gateway import`` cleanly: SIGINT and SIGTERM, and the steps a stop must not cut.

Owns the signals that stop an import and the exit status of each, the handlers
installed while it runs (``until_stopped``: the first signal marks the summary
interrupted and cancels the run once; a second has its default effect), and
``through_stop``, which lets a step of the teardown (the last commits, closing
the store or the pool) run to its end through that one cancellation. The
import loop that is cancelled is ``gateway.importrun``.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from gateway.backfill import Summary

_T = TypeVar("_T")
STOPPING = {signal.SIGINT: 130, signal.SIGTERM: 143}
"""Signals that stop an import cleanly, and the exit status of each (128 + its number, as a shell
reports a command the signal ended)."""


async def through_stop(step: Awaitable[_T], summary: Summary) -> _T:
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
