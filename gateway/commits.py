"""A request's events and their commit, as both hosts (``gateway run`` and the mitmproxy addon)
wait for them: fail open, counted, said.

Owns ``submitted`` (a request's events to the store, the pipeline told if it refuses them) and
``Confirmations``: under ``storage.durability = "commit"`` the request waits for its
events' commit (the store bounds the wait by ``storage.max_wait_ms``); under ``"async"`` it does
not, and each commit is looked at when it settles. Either way a failure never fails the
request: a commit not made in time counts ``gateway_events_unconfirmed_total{reason="timeout"}``,
one the store refused (its writer stopped, a full disk) ``{reason="store_error"}`` — each commit
once, by how its response went out. Every commit the store refused, in time or after its wait
timed out (``CommitTimeout.outcome``), counts ``gateway_events_not_stored_total``: its events are
lost. Each kind is said once then at most every 10 s (``Throttled``: a store refusing every
event would otherwise write a line per request, on the disk that may be full).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from gateway.events import Binding, Event
from gateway.logs import Throttled
from gateway.metrics import Metrics
from storage.local import CommitTimeout, LocalStore

if TYPE_CHECKING:
    from gateway.pipeline import Pipeline


def submitted(store: LocalStore, events: Sequence[Event], pipeline: Pipeline) -> asyncio.Future[None]:
    """``store.submit(events)``, the pipeline told (``Pipeline.not_stored``) when the store
    refuses them, so that what its addons remember as recorded (a pair ``stitching`` bound) is
    recorded when seen again. A commit not confirmed in time is not refused: it stays queued,
    and the pipeline is told if the store refuses it then.
    Only bindings are remembered so, so only a commit holding one is watched: a landing's
    touchpoint alone goes without a callback (one cost 1 % of a landing's instructions). A
    binding the store leaves out as a late row of an erased user (a sign-in in flight at the
    erasure) is told so too: that device's next sign-in binds again."""
    if Binding not in map(type, events):
        return store.submit(events)
    # A binding left out as a late row of an erased user is not recorded either.
    future = store.submit(events, erased=pipeline.not_stored)
    future.add_done_callback(functools.partial(_refused, pipeline, tuple(events)))
    return future


def _refused(pipeline: Pipeline, events: Sequence[Event], future: asyncio.Future[None]) -> None:
    if future.cancelled():
        return
    err = future.exception()
    if isinstance(err, CommitTimeout):  # still queued: told when it is refused after all
        err.outcome.add_done_callback(functools.partial(_refused_late, pipeline, events))
    elif err is not None:
        pipeline.not_stored(events)


def _refused_late(
    pipeline: Pipeline, events: Sequence[Event], outcome: asyncio.Future[BaseException | None]
) -> None:
    """A commit whose wait timed out, ended: the pipeline told if the store refused it (until
    2026-12-07 it was not, and a binding refused so stayed remembered as bound)."""
    if not outcome.cancelled() and outcome.result() is not None:
        pipeline.not_stored(events)


class Confirmations:
    """Each host's one, on its metrics and its logger."""

    __slots__ = ("_not_stored", "_not_stored_late", "metrics", "wait")

    def __init__(self, metrics: Metrics, log: logging.Logger, wait: bool) -> None:
        self.metrics = metrics
        self.wait = wait
        """``storage.durability == "commit"``: the request waits for its commit."""
        self._not_stored = Throttled(log, logging.WARNING)
        self._not_stored_late = Throttled(log, logging.WARNING)

    async def confirm(self, commits: Iterable[asyncio.Future[None]]) -> None:
        """Wait for each commit, or leave it to be looked at when it settles (``wait`` off)."""
        for future in commits:
            if not self.wait:
                future.add_done_callback(self.settled)
                continue
            try:
                await future
            except CommitTimeout as err:
                self.timed_out(err)
            except Exception as err:
                self.failed(err)
            else:
                if self._not_stored.holding or self._not_stored_late.holding:
                    self._stored_again()

    def settled(self, future: asyncio.Future[None]) -> None:
        """A commit no one waits for, counted when it settles (its exception retrieved)."""
        if future.cancelled():
            return
        err = future.exception()
        if isinstance(err, CommitTimeout):
            self.timed_out(err)
        elif err is not None:
            self.failed(err)
        elif self._not_stored.holding or self._not_stored_late.holding:
            self._stored_again()

    def _stored_again(self) -> None:
        """A commit went through while "events not stored" lines were held back: said now, the
        outage over (until 2026-12-07 an outage shorter than the lines' 10 s never said them)."""
        log = self._not_stored.logger
        log.info("events are stored again; not logged since the last such line: %s", self.held_back())

    def held_back(self) -> str:
        """The "events not stored" lines held back since their last, in words ("" when none);
        none held from now on."""
        held = self._not_stored.take_held()[0] + self._not_stored_late.take_held()[0]
        if not held:
            return ""
        lines = "line" if held == 1 else "lines"
        return f"{held} more \"events not stored\" {lines} (a request's or response's events each, lost)"

    def lines_from(self, old: Confirmations) -> None:
        """A reload's new host's: the old one's lines, and what they held back, taken over."""
        self._not_stored, self._not_stored_late = old._not_stored, old._not_stored_late

    def at_stop(self) -> None:
        """The stop's word on "events not stored" lines still held back (the outage on)."""
        if self._not_stored.holding or self._not_stored_late.holding:
            self._not_stored.logger.warning(
                "stopping while the store refuses events; not logged since the last such line: %s",
                self.held_back(),
            )

    def timed_out(self, err: CommitTimeout) -> None:
        """Its response went out before its commit: counted so now, and looked at again when the
        commit ends (until 2026-12-07 a refusal then was neither counted nor said)."""
        self.metrics.events_unconfirmed.labels("timeout").inc()
        err.outcome.add_done_callback(self._ended_late)

    def _ended_late(self, outcome: asyncio.Future[BaseException | None]) -> None:
        """A commit whose wait timed out, ended: if the store refused it, its events are lost."""
        if outcome.cancelled() or (err := outcome.result()) is None:
            return
        self.metrics.events_not_stored.inc()
        self._not_stored_late(
            "events not stored (%s) after their commit outlasted storage.max_wait_ms; the page was"
            " served anyway",
            err,
        )

    def failed(self, err: BaseException) -> None:
        self.metrics.events_unconfirmed.labels("store_error").inc()
        self.metrics.events_not_stored.inc()
        self._not_stored("events not stored (%s); the page was served anyway", err)
