"""``data_driven``'s weights are kept from one report to the next (``storage/report_kept.py``):
a report over the same period, conversion name, verdicts and population within the reuse time
credits with the weights learnt before, even when journeys changed since; a write that changes
the past (``changed``), the reuse time running out, another period or another question learn
anew; weights reused past half the reuse time are learnt again in the background."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bench.synth import END, generate
from gateway.attribution import Attribution, Learnt
from gateway.channels import Channels
from gateway.options import AttributionOptions, ChannelsOptions
from storage.crediting import Table
from storage.reports import Reports

SINCE, UNTIL = END - timedelta(days=30), END
DD = ["data_driven"]
ACCEPTED = frozenset({"allow"})


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "synth.db"
    generate(path, 3000, 300, seed=7, days=30)
    return path


@pytest.fixture(scope="module")
def channels() -> Channels:
    return Channels(ChannelsOptions())


class Clock:
    """The monotonic clock an engine's kept weights age on, moved on by the test alone
    (``age``): a learning is as old as the test says, however long it took. On the real clock
    a learning that took seconds on a loaded machine was past its whole reuse time by the
    report meant to find it past half of it (CI, 2026-12-07)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def engine(store: Path, channels: Channels) -> AsyncIterator[Callable[..., Reports]]:
    """Reports engines over the store, opened, closed at the end; each ages its kept weights
    on a ``Clock`` of its own."""
    opened: list[Reports] = []

    def make(reuse_seconds: float = 600.0, processes: int = 1, **sizes: int) -> Reports:
        reports = Reports(
            store,
            Attribution(AttributionOptions()),
            channels,
            processes,
            reuse_seconds=reuse_seconds,
            clock=Clock(),
            **sizes,
        )
        opened.append(reports)
        return reports

    yield make
    for reports in opened:
        await reports.close()


async def learnt(reports: Reports, since: datetime = SINCE, until: datetime = UNTIL, **asked: str) -> Learnt:
    """What ``data_driven`` credited with, for the period and the ``conversion`` or ``population``
    asked."""
    _, found = await reports.credit_learnt(since, until, DD, **asked)
    assert found is not None and found.at is not None
    return found


async def fresh(store: Path, channels: Channels, since: datetime = SINCE, until: datetime = UNTIL) -> Learnt:
    """What an engine that keeps nothing learns now."""
    reports = Reports(store, Attribution(AttributionOptions()), channels, processes=1, reuse_seconds=0)
    await reports.open()
    try:
        return await learnt(reports, since, until)
    finally:
        await reports.close()


def add_journeys(store: Path, visitors: int = 40) -> int:
    """Copy every touchpoint of ``visitors`` visitors bound to nobody who never converted as a
    new visitor's (new ids in the same milliseconds, so inside the period's id bounds): journeys
    that did not convert, arrived since (landings, an import); how many rows came."""
    db = sqlite3.connect(store, isolation_level=None)
    try:
        columns = [row[1] for row in db.execute("PRAGMA table_info(touchpoints)")]
        copied = ", ".join(
            {
                "id": "substr(id, 1, 30) || printf('%06d', rowid % 1000000)",
                "visitor_key": "'new-' || visitor_key",
            }.get(c, c)
            for c in columns
        )
        return db.execute(
            f"INSERT INTO touchpoints ({', '.join(columns)}) SELECT {copied} FROM touchpoints"
            " WHERE visitor_key IN (SELECT visitor_key FROM touchpoints"
            " WHERE visitor_key NOT IN (SELECT visitor_key FROM identities)"
            " AND visitor_key NOT IN (SELECT visitor_key FROM conversions WHERE visitor_key IS NOT NULL)"
            " GROUP BY visitor_key ORDER BY visitor_key LIMIT ?)",
            (visitors,),
        ).rowcount
    finally:
        db.close()


def age(reports: Reports, seconds: float) -> None:
    """``seconds`` pass on the clock ``reports`` ages its kept weights on (``Clock``)."""
    clock = reports.weights.clock
    assert isinstance(clock, Clock)
    clock.now += seconds


def past_half(reports: Reports, seconds: float) -> None:
    """The weights ``reports`` learnt last, with nothing aged since, are 60 % of ``seconds``
    old: past half their reuse time, within the whole."""
    age(reports, 0.6 * seconds)


async def relearnt(reports: Reports) -> None:
    """Until the background learning is done: it starts once no report has come for a second,
    then reads every journey of the period (seconds on a loaded machine)."""
    async with asyncio.timeout(30):
        while reports._relearning is not None:
            await asyncio.sleep(0.05)


def write(store: Path, sql: str) -> int:
    """``sql`` run on the store, as another process would; the rows it changed."""
    db = sqlite3.connect(store, isolation_level=None)
    try:
        return db.execute(sql).rowcount
    finally:
        db.close()


def same(a: Learnt, b: Learnt) -> bool:
    """The same numbers learnt (when and over which period aside)."""
    return (a.converting, a.not_converting, a.effects, a.weights) == (
        b.converting,
        b.not_converting,
        b.effects,
        b.weights,
    )


async def test_a_report_over_the_same_period_credits_with_the_weights_learnt_before(
    store: Path, channels: Channels, engine: Callable[..., Reports]
) -> None:
    reports = engine()
    await reports.open()
    first = await learnt(reports)
    assert (first.since, first.until) == (SINCE, UNTIL)
    assert timedelta(0) <= datetime.now(UTC) - first.at < timedelta(minutes=1)
    assert await asyncio.to_thread(add_journeys, store) > 0
    now = await fresh(store, channels)
    assert now.not_converting > first.not_converting  # what a report learning anew learns
    again = await learnt(reports)
    assert again == first  # the same learning, its time included
    by_campaign, found = await reports.credit_learnt(SINCE, UNTIL, DD, "campaign")
    assert found == first  # another grouping learns the same journeys' channels: kept too
    assert by_campaign != await reports.credit(SINCE, UNTIL, DD)  # a report grouped by campaign all the same
    # New rows (a reporting mirror's round) leave them; a write that can change the past drops them.
    reports.arrived()
    assert await learnt(reports) == first
    reports.changed()
    anew = await learnt(reports)
    assert anew.at > first.at and same(anew, now)


async def test_the_credits_with_kept_weights_are_those_of_a_learning_with_them(
    engine: Callable[..., Reports],
) -> None:
    """Reused, the weights credit exactly as when they were learnt (one process, and shared
    across two worker processes: cut by people when learning, by conversions when reusing)."""
    for processes in (1, 2):
        reports = engine(processes=processes, min_slice=10, min_share=100)
        await reports.open()
        first = await reports.credit(SINCE, UNTIL, ["data_driven", "linear"])
        past = await reports.run(reports.past_versions)
        assert reports.weights.find((None, ACCEPTED, None), SINCE, UNTIL, reports.rewrites, past) is not None
        assert await reports.credit(SINCE, UNTIL, ["data_driven", "linear"]) == first, processes
        by_day = await reports.credit(SINCE, UNTIL, ["data_driven"], by_day=True)
        assert _summed(by_day) == {k: v["data_driven"] for k, v in _summed_all(first).items()}


def _summed(table: Table) -> dict[tuple[str | None, str | None], list[int]]:
    out: dict[tuple[str | None, str | None], list[int]] = {}
    for (_, group, currency), sums in table.items():
        cell = out.setdefault((group, currency), [0, 0])
        cell[0] += sums["data_driven"][0]
        cell[1] += sums["data_driven"][1]
    return {k: v for k, v in out.items() if any(v)}


def _summed_all(table: Table) -> dict[tuple[str | None, str | None], dict[str, list[int]]]:
    return {(g, c): sums for (_, g, c), sums in table.items() if any(sums["data_driven"])}


async def test_another_question_learns_its_own(engine: Callable[..., Reports]) -> None:
    """Another conversion name, verdicts, population, or period: another learning."""
    reports = engine()
    await reports.open()
    first = await learnt(reports)
    for other in (
        await learnt(reports, conversion="signup"),
        await learnt(reports, population="cookie"),
        await learnt(reports, SINCE + timedelta(days=1)),
        await learnt(
            reports, SINCE + timedelta(seconds=1), UNTIL + timedelta(seconds=1)
        ),  # a past period moved
    ):
        assert other.at > first.at
    _, every = await reports.credit_learnt(SINCE, UNTIL, DD, verdicts=["allow", "review", "block"])
    assert every is not None and every.at > first.at
    assert await learnt(reports) == first  # each kept beside the others


async def test_the_last_days_moving_on_with_the_clock_are_served_by_the_learning_before(
    engine: Callable[..., Reports],
) -> None:
    """A period that ran up to its learning (the API's default: the last 30 days up to now)
    serves the same length asked for a moment later; a different length does not."""
    reports = engine()
    await reports.open()
    until = datetime.now(UTC)
    first = await learnt(reports, until - timedelta(days=30), until)
    later = datetime.now(UTC) + timedelta(seconds=1)
    assert await learnt(reports, later - timedelta(days=30), later) == first
    longer = await learnt(reports, later - timedelta(days=31), later)
    assert longer.at > first.at


async def test_weights_older_than_the_reuse_time_are_learnt_again(engine: Callable[..., Reports]) -> None:
    reports = engine(reuse_seconds=0.5)
    await reports.open()
    first = await learnt(reports)
    age(reports, 0.6)
    assert (await learnt(reports)).at > first.at


async def test_with_no_reuse_time_every_report_learns(engine: Callable[..., Reports]) -> None:
    reports = engine(reuse_seconds=0)
    await reports.open()
    first = await learnt(reports)
    assert (await learnt(reports)).at > first.at


async def test_weights_reused_past_half_their_time_are_learnt_again_in_the_background(
    store: Path, channels: Channels, engine: Callable[..., Reports]
) -> None:
    reports = engine(reuse_seconds=3)
    await reports.open()
    first = await learnt(reports)
    await asyncio.to_thread(add_journeys, store)
    past_half(reports, 3)
    assert await learnt(reports) == first  # reused, and due to be learnt again
    assert reports._relearning is not None
    await relearnt(reports)
    again = await learnt(reports)
    assert again.at > first.at and same(again, await fresh(store, channels))


async def relearning(engine: Callable[..., Reports]) -> tuple[Reports, asyncio.Future[Any]]:
    """An engine whose weights a report reused past half their time, and the background
    learning that waits for the reports to be done."""
    reports = engine(reuse_seconds=2)
    await reports.open()
    await learnt(reports)
    past_half(reports, 2)
    await learnt(reports)
    waiting = reports._relearning
    assert waiting is not None
    return reports, waiting


async def test_closing_stops_a_learning_waiting_to_run(engine: Callable[..., Reports]) -> None:
    reports, waiting = await relearning(engine)
    await reports.close()
    assert waiting.done() and reports._relearning is None


@pytest.mark.parametrize(
    "rewrite",
    [
        "DELETE FROM touchpoints WHERE id = (SELECT min(id) FROM touchpoints)",  # gateway erase, retention
        "UPDATE touchpoints SET channel = 'AI Assistants' WHERE channel = 'Email'",  # gateway reclassify
        "DELETE FROM conversions WHERE id = (SELECT min(id) FROM conversions)",  # an import undone
        "DELETE FROM identities WHERE id = (SELECT min(id) FROM identities)",  # an erasure's bindings
    ],
    ids=["touchpoint-deleted", "reclassified", "conversion-deleted", "binding-deleted"],
)
async def test_another_process_rewriting_the_past_is_seen_by_the_next_report(
    store: Path, channels: Channels, engine: Callable[..., Reports], rewrite: str
) -> None:
    """The store's counters (migrations 0009 and 0020) move whoever deletes or reclassifies:
    the weights kept before no longer serve, and the next report learns what a fresh engine
    does."""
    reports = engine()
    await reports.open()
    first = await learnt(reports)
    assert await asyncio.to_thread(write, store, rewrite) > 0
    anew = await learnt(reports)
    assert anew.at > first.at and same(anew, await fresh(store, channels))


async def test_an_import_beginning_finishing_or_undone_is_seen_by_the_next_report(
    store: Path, channels: Channels, engine: Callable[..., Reports]
) -> None:
    """``gateway import`` adds old rows to past periods, which no trigger counts (none is on the
    landing's insert): a run begun, finished or undone (``import_runs``) drops the weights kept
    before it, and the next report learns what a fresh engine does. Until 2026-12-06 weights
    learnt before an import, from none of its journeys, served for the whole reuse time."""
    reports = engine()
    await reports.open()
    before = await learnt(reports)
    assert (await learnt(reports)).at == before.at  # kept while nothing moves
    for step in (
        "INSERT INTO import_runs (started, format, files) VALUES ('2026-12-06T23:00:00Z', 'combined', '[]')",
        "UPDATE import_runs SET finished = '2026-12-06T23:01:00Z' WHERE finished IS NULL",
        "UPDATE import_runs SET undone = '2026-12-06T23:02:00Z' WHERE undone IS NULL",
    ):
        assert await asyncio.to_thread(write, store, step) == 1
        anew = await learnt(reports)
        assert anew.at > before.at and same(anew, await fresh(store, channels))
        before = anew


async def test_a_store_without_the_counters_keeps_nothing(
    store: Path, engine: Callable[..., Reports]
) -> None:
    """A trigger dropped (a table rebuilt by hand): what another process rewrote could not be
    told, so every report learns."""
    await asyncio.to_thread(write, store, "DROP TRIGGER touchpoints_reclassified")
    reports = engine()
    await reports.open()
    first = await learnt(reports)
    assert (await learnt(reports)).at > first.at


async def test_a_background_learning_leaves_no_conversions_held_in_the_workers(
    engine: Callable[..., Reports],
) -> None:
    reports = engine(reuse_seconds=4, processes=2, min_slice=10, min_share=100)
    await reports.open()
    first = await learnt(reports)
    past_half(reports, 4)
    assert await learnt(reports) == first  # reused past half its time: learnt again soon
    await relearnt(reports)
    assert reports._pool.pids
    held = await reports.run(lambda: reports._pool.map(_held, [None] * len(reports._pool.pids)))
    assert held == [None] * len(reports._pool.pids)


def _held(reports: Reports, _: object) -> object:
    return reports._kept


async def test_a_retired_engine_learns_nothing_in_the_background(engine: Callable[..., Reports]) -> None:
    reports, waiting = await relearning(engine)
    reports.retire()  # a reload swapped another engine in
    await asyncio.sleep(0)
    assert waiting.cancelled()
    await learnt(reports)
    assert reports._relearning is None
