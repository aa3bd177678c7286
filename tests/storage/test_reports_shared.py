"""Identical reports in flight share one computation (``Reports.run`` with a key), over a real
SQLite store: a second caller waits for the first one's answer (or error) instead of queueing a
run of its own, a caller that stops waiting does not stop it for the others, and a report left
running by a caller who gave up answers the next one to ask for it."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.attribution import Attribution
from gateway.channels import Channels
from gateway.events import Touchpoint, VerdictChange
from gateway.ids import uuid7
from gateway.metrics import Metrics
from gateway.options import AttributionOptions, ChannelsOptions, StorageOptions
from storage.local import LocalStore
from storage.reports import Reports
from tests.storage.test_reports import EVENTS, SINCE, UNTIL

WAIT = 30.0
"""Longest a test waits for a thread it holds (a bound, not a timing: it is released first)."""


class Held:
    """A job for the report thread that holds it until released: what a long report (or a hung
    worker) does to the reports queued behind it."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.calls = 0

    def __call__(self, answer: Any = None) -> Any:
        self.calls += 1
        self.entered.set()
        if not self.release.wait(WAIT):
            raise TimeoutError("the test never released the report thread")
        return answer

    async def started(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, WAIT)


@contextlib.asynccontextmanager
async def holding(reports: Reports) -> AsyncIterator[Held]:
    """The report thread of ``reports`` busy with a long job (``Held``) for the block: the
    reports asked meanwhile queue behind it; released, and its run awaited, at the block's end."""
    held = Held()
    blocker = asyncio.create_task(reports.run(held))
    try:
        await held.started()
        yield held
    finally:
        held.release.set()
        await blocker


@pytest.fixture(scope="module")
def channels() -> Channels:
    """Built outside the event loop, as ``load_settings`` does: it reads the shipped table."""
    return Channels(ChannelsOptions())


@pytest.fixture
async def reports(tmp_path: Path, channels: Channels) -> AsyncIterator[Reports]:
    store = LocalStore(tmp_path / "gw.db", StorageOptions(), Metrics())
    await store.open()
    await store.write(EVENTS)
    await store.close()
    engine = Reports(tmp_path / "gw.db", Attribution(AttributionOptions()), channels, processes=1)
    await engine.open()
    yield engine
    await engine.close()


def counting(reports: Reports) -> list[int]:
    """How many times ``reports`` let a caller wait for a report in flight (its ``on_shared``)."""
    shared: list[int] = []
    reports.on_shared = lambda: shared.append(1)
    return shared


async def until_waiting(reports: Reports, shared: list[int], n: int) -> None:
    """Until ``n`` callers joined a report in flight (bounded: each step yields to the loop)."""
    for _ in range(10_000):
        if len(shared) >= n:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{len(shared)} callers joined, expected {n}")


async def test_identical_reports_in_flight_are_computed_once(reports: Reports) -> None:
    shared = counting(reports)
    async with holding(reports):  # the thread is busy: the next ones queue
        before = reports.report
        first = asyncio.create_task(reports.credit(SINCE, UNTIL, ["linear"], population="cookie"))
        second = asyncio.create_task(reports.credit(SINCE, UNTIL, ["linear"], population="cookie"))
        # Not the same: another population, other verdicts, another model, by day.
        others = [
            asyncio.create_task(reports.credit(SINCE, UNTIL, ["linear"])),
            asyncio.create_task(reports.credit(SINCE, UNTIL, ["linear"], population="cookieless")),
            asyncio.create_task(
                reports.credit(SINCE, UNTIL, ["linear"], population="cookie", verdicts=["allow", "review"])
            ),
            asyncio.create_task(reports.credit(SINCE, UNTIL, ["last_touch"], population="cookie")),
            asyncio.create_task(reports.credit(SINCE, UNTIL, ["linear"], population="cookie", by_day=True)),
        ]
        await until_waiting(reports, shared, 1)
    a, b = await first, await second
    await asyncio.gather(*others)
    assert a == b and a  # the cookie population's credits
    assert len(shared) == 1
    assert reports.report - before == 1 + len(others)  # the pair once, each other one apart
    # The configured verdicts (allow) spelled out are the same report as the default.
    assert reports.attribution.verdicts == {"allow"}
    done = reports.report
    again = await asyncio.gather(
        reports.credit(SINCE, UNTIL, ["linear"], population="cookie"),
        reports.credit(SINCE, UNTIL, ["linear"], population="cookie", verdicts=["allow"]),
    )
    assert again[0] == again[1] == a
    assert reports.report - done == 1 and len(shared) == 2


async def test_the_first_run_s_error_is_every_waiter_s(reports: Reports) -> None:
    shared = counting(reports)
    async with holding(reports):
        calls: list[int] = []

        def fails() -> None:
            calls.append(1)
            raise ValueError("the store said no")

        waiters = [asyncio.create_task(reports.run(fails, key="broken")) for _ in range(3)]
        await until_waiting(reports, shared, 2)
    for task in waiters:
        with pytest.raises(ValueError, match="the store said no"):
            await task
    assert calls == [1]
    # Done, it is forgotten: the next one computes again (and fails again).
    with pytest.raises(ValueError):
        await reports.run(fails, key="broken")
    assert calls == [1, 1]


async def test_a_waiter_that_leaves_does_not_stop_the_report_for_the_others(reports: Reports) -> None:
    shared = counting(reports)
    async with holding(reports):
        calls: list[int] = []

        def report() -> str:
            calls.append(1)
            return "answer"

        leaving = asyncio.create_task(reports.run(report, key="k"))
        staying = asyncio.create_task(reports.run(report, key="k"))
        await until_waiting(reports, shared, 1)
        leaving.cancel()  # the first one asked, and queued it
        with pytest.raises(asyncio.CancelledError):
            await leaving
    assert await staying == "answer"
    assert calls == [1]


async def test_a_queued_report_its_caller_left_keeps_its_place_for_the_next(reports: Reports) -> None:
    shared = counting(reports)
    async with holding(reports):
        calls: list[int] = []

        def report() -> str:
            calls.append(1)
            return "answer"

        gave_up = asyncio.create_task(reports.run(report, key="k"))
        for _ in range(10):  # until it waits for the thread
            await asyncio.sleep(0)
        assert list(reports._shared) == [(0, "k")]  # asked at generation 0 (no write since)
        gave_up.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gave_up
        again = asyncio.create_task(reports.run(report, key="k"))  # Try again: joins it, in its place
        await until_waiting(reports, shared, 1)
    assert await again == "answer"
    assert calls == [1]


async def test_closing_drops_the_queued_reports_no_one_waits_for(reports: Reports) -> None:
    async with holding(reports):
        calls: list[str] = []
        left = asyncio.create_task(reports.run(calls.append, "left", key="left"))
        waited = asyncio.create_task(reports.run(calls.append, "waited", key="waited"))
        for _ in range(10):  # until both wait for the thread
            await asyncio.sleep(0)
        assert {key for _, key in reports._shared} == {"left", "waited"}
        left.cancel()
        with pytest.raises(asyncio.CancelledError):
            await left
        closing = asyncio.create_task(reports.close())
        await asyncio.sleep(0)
    await waited
    await closing
    assert calls == ["waited"]  # the report still waited for was computed, not the other


async def test_a_report_given_up_after_it_started_answers_the_next_to_ask(reports: Reports) -> None:
    shared = counting(reports)
    held = Held()
    gave_up = asyncio.create_task(reports.run(held, "the first run's", key="k"))
    await held.started()  # computing
    gave_up.cancel()  # a client's deadline: the report runs on
    with pytest.raises(asyncio.CancelledError):
        await gave_up
    again = asyncio.create_task(reports.run(held, "a second run's", key="k"))  # Try again
    await until_waiting(reports, shared, 1)
    held.release.set()
    assert await again == "the first run's"
    assert held.calls == 1


async def test_a_report_asked_after_a_write_is_computed_anew(tmp_path: Path, reports: Reports) -> None:
    """A write that can change the answer (``changed``) between two asks: the second does not
    join the run in flight since before it, which read the store before the write; it queues
    its own, whose answer has the write. Asked again with no write since, it is shared."""
    shared = counting(reports)
    held = Held()
    before = asyncio.create_task(reports.run(held, "as before the write", key="k"))
    await held.started()  # computing: it has read the store as it was
    reports.changed()  # an analyst's verdict, an erasure… committed
    after = asyncio.create_task(reports.run(lambda: "as after the write", key="k"))
    same = asyncio.create_task(reports.run(lambda: "a third run", key="k"))  # no write since
    await until_waiting(reports, shared, 1)  # the third joined the second, not the first
    assert len(reports._shared) == 2
    held.release.set()
    assert await before == "as before the write"
    assert await after == await same == "as after the write"
    assert held.calls == 1 and len(shared) == 1
    # Over the store: an analyst blocks the only touch of a credited conversion meanwhile.
    first = await reports.credit(SINCE, UNTIL, ["last_touch"])
    store = LocalStore(tmp_path / "gw.db", StorageOptions(), Metrics())
    await store.open()
    try:
        last = next(e for e in EVENTS if isinstance(e, Touchpoint) and e.channel == "Organic Search")
        change = VerdictChange(uuid7(), last.ts, "n", last.id, "block", 100, [], "analyst", "a test", "ana")
        await store.write([change])
    finally:
        await store.close()
    async with holding(reports):
        queued = asyncio.create_task(reports.credit(SINCE, UNTIL, ["last_touch"]))
        for _ in range(10):  # until it waits for the thread
            await asyncio.sleep(0)
        reports.changed()
        again = asyncio.create_task(reports.credit(SINCE, UNTIL, ["last_touch"]))
        for _ in range(10):
            await asyncio.sleep(0)
        assert len(reports._shared) == 2 and len(shared) == 1  # queued apart, not joined
    assert await queued == await again != first  # both read the store as the write left it
