"""Reader: touchpoint listings (filters, cursor pages) and visitor journeys, on a real store."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.events import Binding, Conversion, Touchpoint, iso
from gateway.ids import _format
from gateway.metrics import Metrics
from gateway.options import StorageOptions
from storage.local import LocalStore
from storage.queries import JOURNEY_LIMIT, MAX_USER_VISITORS, Reader, TouchpointQuery
from tests.storage.stores import read

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)
VISITORS = ["a" * 32, "b" * 32, "c" * 32]
SOURCES = ["news", "google", "tiktok", None]
MEDIA = ["email", "cpc", None]
CAMPAIGNS = ["launch", "spring"]
CREATORS = [None, "anna", "ben", None, None]


def event(n: int) -> Touchpoint:
    """Touchpoint ``n``, one minute after ``n - 1``; fields cycle so filters overlap."""
    return Touchpoint(
        id=str(uuid.UUID(int=((T0_MS + n * 60_000) << 80) | (0x7 << 76) | (0b10 << 62) | n)),
        ts=iso(T0 + timedelta(minutes=n)),
        node="test",
        visitor_key=VISITORS[n % 3],
        source=SOURCES[n % 4],
        medium=MEDIA[n % 3],
        campaign=CAMPAIGNS[n % 2],
        content=str(n),
        creator_id=CREATORS[n % 5],
        landing_path=f"/p/{n}",
        raw_params={"utm_content": str(n)},
    )


EVENTS = [event(n) for n in range(40)]


@dataclass
class Data:
    reader: Reader
    store: LocalStore


@pytest.fixture
async def data(tmp_path: Path) -> AsyncIterator[Data]:
    store = LocalStore(tmp_path / "gw.db", StorageOptions(), Metrics())
    await store.open()
    # Written out of order, in several commits: listings must come back in id order anyway.
    for chunk in (EVENTS[20:], EVENTS[:7], EVENTS[7:20]):
        await store.write(chunk)
    reader = Reader(tmp_path / "gw.db")
    await reader.open()
    yield Data(reader, store)
    await reader.close()
    await store.close()


@contextlib.asynccontextmanager
async def _opened(path: Path) -> AsyncIterator[Data]:
    """A new store at ``path`` and a reader of it, both closed after."""
    store = LocalStore(path, StorageOptions(), Metrics())
    await store.open()
    reader = Reader(path)
    await reader.open()
    try:
        yield Data(reader, store)
    finally:
        await reader.close()
        await store.close()


async def listing(reader: Reader, q: TouchpointQuery) -> list[str]:
    items, next_cursor = await reader.touchpoints(q)
    assert next_cursor is None
    return [item["content"] for item in items]


def expected(keep: Any) -> list[str]:
    return [e.content or "" for e in EVENTS if keep(e)]


@pytest.mark.parametrize(
    ("equals", "keep"),
    [
        ({"source": "news"}, lambda e: e.source == "news"),
        ({"medium": "cpc"}, lambda e: e.medium == "cpc"),
        ({"campaign": "spring"}, lambda e: e.campaign == "spring"),
        ({"creator_id": "anna"}, lambda e: e.creator_id == "anna"),
        ({"visitor_key": VISITORS[1]}, lambda e: e.visitor_key == VISITORS[1]),
        (
            {"source": "google", "campaign": "launch"},
            lambda e: (e.source, e.campaign) == ("google", "launch"),
        ),
        ({"source": "nobody"}, lambda e: False),
    ],
)
async def test_equality_filters(data: Data, equals: dict[str, str], keep: Any) -> None:
    assert await listing(data.reader, TouchpointQuery(equals=equals, limit=1000)) == expected(keep)


async def test_time_window_is_since_inclusive_until_exclusive(data: Data) -> None:
    since, until = iso(T0 + timedelta(minutes=5)), iso(T0 + timedelta(minutes=12))
    got = await listing(data.reader, TouchpointQuery(since=since, until=until, limit=1000))
    assert got == [str(n) for n in range(5, 12)]
    got = await listing(
        data.reader, TouchpointQuery(since=since, until=until, equals={"medium": "email"}, limit=1000)
    )
    assert got == [str(n) for n in range(5, 12) if n % 3 == 0]
    assert await listing(data.reader, TouchpointQuery(since=iso(T0 + timedelta(days=1)))) == []


@pytest.mark.parametrize("limit", [1, 7, 10, 39, 40, 41])
async def test_cursor_pages_walk_every_row_once_in_id_order(data: Data, limit: int) -> None:
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        items, cursor = await data.reader.touchpoints(TouchpointQuery(cursor=cursor, limit=limit))
        pages += 1
        assert len(items) == limit or cursor is None
        seen.extend(items)
        if cursor is None:
            break
        assert cursor == items[-1]["id"]
        assert pages <= len(EVENTS)  # a cursor that does not advance would loop forever
    assert [item["id"] for item in seen] == [e.id for e in EVENTS]
    assert pages == max(1, -(-len(EVENTS) // limit))  # an exact multiple needs no empty last page
    assert seen[0]["raw_params"] == {"utm_content": "0"}


async def test_pages_respect_filters(data: Data) -> None:
    q = TouchpointQuery(equals={"visitor_key": VISITORS[0]}, limit=4)
    contents: list[str] = []
    while True:
        items, cursor = await data.reader.touchpoints(q)
        contents += [item["content"] for item in items]
        if cursor is None:
            break
        q = TouchpointQuery(equals=q.equals, cursor=cursor, limit=4)
    assert contents == expected(lambda e: e.visitor_key == VISITORS[0])


async def test_bad_queries_are_refused_not_run(data: Data) -> None:
    with pytest.raises(ValueError, match="limit"):
        await data.reader.touchpoints(TouchpointQuery(limit=0))
    with pytest.raises(ValueError, match="not a touchpoint filter"):
        await data.reader.touchpoints(TouchpointQuery(equals={"1=1 OR source": "x"}))


async def test_visitor_journey(data: Data) -> None:
    key = VISITORS[2]
    mine = [e for e in EVENTS if e.visitor_key == key]
    journey = await data.reader.visitor(key)
    assert journey is not None
    assert journey["visitor_key"] == key
    assert [t["id"] for t in journey["touchpoints"]] == [e.id for e in mine]
    # The fixture wrote events 20.. first: the first touch is still the earliest in time (a
    # backfilled older event takes the slot), the last touch the latest.
    assert journey["first_touch"]["id"] == mine[0].id
    assert journey["last_touch"]["id"] == mine[-1].id
    assert (journey["first_seen"], journey["last_seen"]) == (mine[0].ts, mine[-1].ts)
    assert journey["touch_count"] == len(mine)
    assert journey["first_touch"]["raw_params"] == {"utm_content": mine[0].content}


async def test_unknown_visitor_is_none(data: Data) -> None:
    assert await data.reader.visitor("f" * 32) is None


async def test_reader_sees_new_commits(data: Data) -> None:
    late = event(100)
    await data.store.write([late])
    items, _ = await data.reader.touchpoints(TouchpointQuery(equals={"visitor_key": late.visitor_key}))
    assert items[-1]["id"] == late.id


async def test_a_long_journey_is_listed_up_to_the_limit_with_exact_slots(tmp_path: Path) -> None:
    async with _opened(tmp_path / "long.db") as data:
        events = [dataclasses.replace(event(n), visitor_key="v" * 32) for n in range(JOURNEY_LIMIT + 5)]
        await data.store.write(events)
        journey = await data.reader.visitor("v" * 32)
    assert journey is not None and journey["truncated"] is True
    assert len(journey["touchpoints"]) == JOURNEY_LIMIT
    assert journey["touch_count"] == JOURNEY_LIMIT + 5
    assert journey["first_touch"]["id"] == events[0].id
    assert journey["last_touch"]["id"] == events[-1].id


async def test_a_user_with_more_visitors_than_a_journey_joins_says_it_is_cut(tmp_path: Path) -> None:
    """A user bound on more than ``MAX_USER_VISITORS`` visitors (a shared account, someone who
    signs in from a private window every day): the journey joins the first bound, and said
    ``truncated: false`` while the touchpoints of the later devices, the last touch among them,
    were left out without a word."""
    user = "u" * 32
    async with _opened(tmp_path / "many.db") as data:
        rows: list[Any] = []
        for n in range(MAX_USER_VISITORS + 1):
            visitor = f"{n:032x}"
            touch = dataclasses.replace(event(n), visitor_key=visitor)
            rows.append(touch)
            rows.append(Binding(str(uuid.uuid4()), touch.ts, "test", visitor, user, "login"))
        await data.store.write(rows)
        journey = await data.reader.user([user])
    assert journey is not None
    assert len(journey["visitors"]) == MAX_USER_VISITORS
    assert journey["truncated"] is True
    assert journey["first_touch"]["id"] == rows[0].id


def change(n: int, touchpoint: Touchpoint, verdict: str, origin: str, minute: int) -> Any:
    from gateway.events import VerdictChange

    return VerdictChange(
        id=str(uuid.UUID(int=((T0_MS + minute * 60_000) << 80) | (0x7 << 76) | (0b10 << 62) | (1000 + n))),
        ts=iso(T0 + timedelta(minutes=minute)),
        node="test",
        touchpoint_id=touchpoint.id,
        verdict=verdict,
        bot_score={"allow": 0, "review": 30, "block": 60}[verdict],
        reasons=[origin],
        origin=origin,
        note="why",
        analyst=None if origin == "rescore" else "maria",
    )


async def test_effective_verdict_analyst_wins_over_later_rescores(data: Data) -> None:
    first, second = EVENTS[0], EVENTS[3]  # both visitor "a"
    await data.store.write(
        [
            change(0, first, "review", "rescore", 100),
            change(1, first, "allow", "analyst", 101),
            change(2, first, "block", "rescore", 102),  # a later re-score does not undo the analyst
            change(3, second, "review", "rescore", 100),
            change(4, second, "block", "rescore", 101),  # the latest re-score wins
        ]
    )
    items, _ = await data.reader.touchpoints(TouchpointQuery(limit=5))
    shown = {i["id"]: (i["verdict"], i["bot_score"], i["reasons"], i["verdict_origin"]) for i in items}
    assert shown[first.id] == ("allow", 0, ["analyst"], "analyst")
    assert shown[second.id] == ("block", 60, ["rescore"], "rescore")
    assert shown[EVENTS[1].id] == (None, None, [], None)  # never scored
    review, _ = await data.reader.touchpoints(TouchpointQuery(verdict="block"))
    assert [i["id"] for i in review] == [second.id]
    assert [c["origin"] for c in await data.reader.verdict_changes(first.id)] == [
        "rescore",
        "analyst",
        "rescore",
    ]


async def test_a_withdrawn_override_gives_the_verdict_back_to_the_scoring(data: Data) -> None:
    """An analyst's override withdrawn (``analyst_cleared``): the latest re-score counts again,
    one made after it too, else the touchpoint's own verdict — as if no override had been
    made, every earlier override withdrawn with it — until another override. Every change
    stays in the history."""
    rescored, unscored, again, kept = EVENTS[0], EVENTS[3], EVENTS[1], EVENTS[2]
    await data.store.write(
        [
            change(0, rescored, "review", "rescore", 100),
            change(1, rescored, "allow", "analyst", 101),
            change(2, rescored, "block", "analyst", 102),
            change(3, rescored, "review", "analyst_cleared", 103),
            change(4, unscored, "block", "analyst", 100),
            change(5, unscored, "allow", "analyst_cleared", 101),
            change(6, again, "block", "analyst", 100),
            change(7, again, "allow", "analyst_cleared", 101),
            change(8, again, "review", "analyst", 102),  # another override after it counts
            change(9, kept, "block", "analyst_cleared", 100),  # an earlier clear withdraws nothing later
            change(10, kept, "allow", "analyst", 101),
            change(11, kept, "block", "rescore", 102),
        ]
    )
    items, _ = await data.reader.touchpoints(TouchpointQuery(limit=5))
    shown = {i["id"]: (i["verdict"], i["bot_score"], i["reasons"], i["verdict_origin"]) for i in items}
    assert shown[rescored.id] == ("review", 30, ["rescore"], "rescore")
    assert shown[unscored.id] == (None, None, [], None)  # as stored: never scored
    assert shown[again.id] == ("review", 30, ["analyst"], "analyst")
    assert shown[kept.id] == ("allow", 0, ["analyst"], "analyst")
    # A re-score after the clear counts, as one before it did.
    await data.store.write([change(12, rescored, "block", "rescore", 104)])
    assert (await data.reader.touchpoint(rescored.id) or {})["verdict"] == "block"
    review, _ = await data.reader.touchpoints(TouchpointQuery(verdict="review"))
    assert [i["id"] for i in review] == [again.id]
    assert [c["origin"] for c in await data.reader.verdict_changes(rescored.id)] == [
        "rescore",
        "analyst",
        "analyst",
        "analyst_cleared",
        "rescore",
    ]
    fraud = await data.reader.fraud(None, None, "source")
    assert (
        sum(g["verdicts"]["review"] for g in fraud) == 1 and sum(g["verdicts"]["block"] for g in fraud) == 1
    )


async def test_fraud_report_counts_a_group_of_unscored_touchpoints(data: Data) -> None:
    """Touchpoints stored without a verdict (no bots addon, or before it ran) make groups whose
    every verdict count is 0, not NULL: the shares were a division of None (a 500)."""
    groups = await data.reader.fraud(None, None, "creator_id")
    anna = next(g for g in groups if g["key"] == "anna")
    assert anna["clicks"] == 8 and anna["verdicts"]["unscored"] == 8
    assert anna["verdicts"]["allow"] == 0 and anna["shares"] == {
        **dict.fromkeys(anna["shares"], 0.0),
        "unscored": 1.0,
    }


def same_ms(n: int, visitor: str, micros: int, counter: int, minute: int = 0) -> Touchpoint:
    """Touchpoint ``n`` at ``micros`` µs into a millisecond, its id that millisecond's with
    ``counter``: two worker processes each count up from a random start, so of two landings of
    one millisecond the later in time may have the smaller id."""
    at = T0 + timedelta(minutes=minute, microseconds=micros)
    return dataclasses.replace(
        event(n), id=_format(int(at.timestamp() * 1000), counter, n), ts=iso(at), visitor_key=visitor
    )


async def test_a_journey_of_one_millisecond_is_in_time_order_not_id_order(tmp_path: Path) -> None:
    """Two landings in one millisecond through different worker processes: the later one
    (900 µs) minted the smaller id. The journey listed them by id: the later was the first
    touch, ``first_seen`` came after ``last_seen``."""
    visitor = "d" * 32
    early, late = same_ms(1, visitor, 100, counter=0x800), same_ms(2, visitor, 900, counter=0x100)
    assert late.id < early.id and early.ts < late.ts
    # And a signup (one worker) and a purchase 300 µs later (another), ids the wrong way round.
    signup, purchase = (
        Conversion(
            _format(T0_MS, counter, 0), iso(T0 + timedelta(microseconds=us)), "test", name, name, visitor
        )
        for counter, us, name in ((0xA00, 200, "signup"), (0x200, 500, "purchase"))
    )
    async with _opened(tmp_path / "ms.db") as data:
        await data.store.write([early, late, signup, purchase])
        journey = await data.reader.visitor(visitor)
    assert journey is not None
    assert [t["id"] for t in journey["touchpoints"]] == [early.id, late.id]
    assert (journey["first_touch"]["id"], journey["last_touch"]["id"]) == (early.id, late.id)
    assert (journey["first_seen"], journey["last_seen"]) == (early.ts, late.ts)
    assert [c["name"] for c in journey["conversions"]] == ["signup", "purchase"]


async def test_a_users_devices_of_one_millisecond_and_a_cut_journey_keep_time_order(tmp_path: Path) -> None:
    """A user's two devices land in one millisecond, the later with the smaller id; and a
    journey cut at ``JOURNEY_LIMIT`` whose newest millisecond holds two landings in the same
    wrong order: first and last touch are the earliest and the latest in time."""
    user, phone, laptop, long = "u" * 32, "e" * 32, "f" * 32, "9" * 32
    early, late = same_ms(1, phone, 100, counter=0x800), same_ms(2, laptop, 900, counter=0x100)
    many = [dataclasses.replace(event(n), visitor_key=long) for n in range(3, JOURNEY_LIMIT + 3)]
    last_early = same_ms(JOURNEY_LIMIT + 3, long, 100, counter=0x800, minute=JOURNEY_LIMIT + 10)
    last_late = same_ms(JOURNEY_LIMIT + 4, long, 900, counter=0x100, minute=JOURNEY_LIMIT + 10)
    bindings = [Binding(str(uuid.uuid4()), early.ts, "test", v, user, "login") for v in (phone, laptop)]
    async with _opened(tmp_path / "ms.db") as data:
        await data.store.write([early, late, *bindings, *many, last_early, last_late])
        journey = await data.reader.user([user])
        cut = await data.reader.visitor(long)
    assert journey is not None
    assert [t["id"] for t in journey["touchpoints"]] == [early.id, late.id]
    assert (journey["first_touch"]["id"], journey["last_touch"]["id"]) == (early.id, late.id)
    assert cut is not None and cut["truncated"] is True
    assert (cut["last_touch"]["id"], cut["last_seen"]) == (last_late.id, last_late.ts)


def converted(n: int, micros: int, counter: int, visitor: str | None, user: str | None) -> Conversion:
    """Conversion ``n``, ``n`` minutes after ``T0`` and ``micros`` µs into its millisecond, its id
    that millisecond's with ``counter`` (as ``same_ms``: two worker processes)."""
    at = T0 + timedelta(minutes=n, microseconds=micros)
    at_ms = int(at.timestamp() * 1000)
    return Conversion(
        _format(at_ms, counter, n), iso(at), "test", "order", f"order:{n}.{micros}", visitor, user
    )


def many_conversions(
    visitor: str | None, user: str | None, start: int = 0
) -> tuple[list[Conversion], Conversion, Conversion]:
    """``JOURNEY_LIMIT + 2`` conversions, the ``JOURNEY_LIMIT``-th and the next in one
    millisecond, the later in time (900 µs) with the smaller id; then one more a minute on.
    The earliest ``JOURNEY_LIMIT`` in time, and the earlier of that millisecond's, and the latest."""
    rows = [converted(start + n, 0, 0, visitor, user) for n in range(JOURNEY_LIMIT - 1)]
    early = converted(start + JOURNEY_LIMIT, 100, 0x800, visitor, user)
    late = converted(start + JOURNEY_LIMIT, 900, 0x100, visitor, user)
    latest = converted(start + JOURNEY_LIMIT + 1, 0, 0, visitor, user)
    assert late.id < early.id and early.ts < late.ts
    return [*rows, early, late, latest], early, latest


async def test_a_journeys_conversions_are_cut_like_its_touchpoints(tmp_path: Path) -> None:
    """More than ``JOURNEY_LIMIT`` conversions on a visitor (no landing: a signed event's) and a
    user, the cut falling in a millisecond whose later conversion has the smaller id. The
    journeys took the first ``JOURNEY_LIMIT`` by id (the later of that millisecond, not the
    earlier) and said nothing of the rest; the visitor's ``last_seen`` was the last listed.
    Now the earliest in time, the whole millisecond read, ``conversions_truncated`` saying so,
    and ``last_seen`` the latest conversion's."""
    visitor, user = "d" * 32, "u" * 32
    async with _opened(tmp_path / "conv.db") as data:
        rows, early, latest = many_conversions(visitor, None)
        await data.store.write(rows)
        journey = await data.reader.visitor(visitor)
        assert journey is not None
        listed = [c["id"] for c in journey["conversions"]]
        assert listed == [r.id for r in rows[: JOURNEY_LIMIT - 1]] + [early.id]
        assert journey["conversions_truncated"] is True and journey["truncated"] is False
        assert (journey["first_seen"], journey["last_seen"]) == (rows[0].ts, latest.ts)

        rows, early, _ = many_conversions(None, user, start=10 * JOURNEY_LIMIT)
        await data.store.write(rows)
        journey = await data.reader.user([user])
        assert journey is not None
        assert [c["id"] for c in journey["conversions"]][-1] == early.id
        assert len(journey["conversions"]) == JOURNEY_LIMIT and journey["conversions_truncated"] is True

        await data.store.write([converted(20 * JOURNEY_LIMIT + n, 0, 0, "e" * 32, None) for n in range(3)])
        journey = await data.reader.visitor("e" * 32)
        assert journey is not None and journey["conversions_truncated"] is False


async def test_the_visitors_view_names_the_first_and_last_touch_in_time_order(tmp_path: Path) -> None:
    """The ``visitors`` view an operator's SQL reads: two landings of one visitor in one
    millisecond through different worker processes, the later (900 µs) with the smaller id,
    and two more a minute on in the same wrong order. It named the smallest id the first touch
    and the largest the last (the later, and the earlier, of their millisecond), which the
    journeys no longer do; ``first_seen`` and ``last_seen`` were exact."""
    visitor = "c" * 32
    early, late = same_ms(1, visitor, 100, counter=0x800), same_ms(2, visitor, 900, counter=0x100)
    last_early = same_ms(3, visitor, 100, counter=0x800, minute=1)
    last_late = same_ms(4, visitor, 900, counter=0x100, minute=1)
    assert late.id < early.id and last_late.id < last_early.id
    store = LocalStore(tmp_path / "ms.db", StorageOptions(), Metrics())
    await store.open()
    try:
        await store.write([early, late, last_early, last_late])
    finally:
        await store.close()
    columns = "visitor_key, first_touch_id, last_touch_id, first_seen, last_seen, touch_count"
    assert await read(tmp_path / "ms.db", f"SELECT {columns} FROM visitors") == [
        (visitor, early.id, last_late.id, early.ts, last_late.ts, 4)
    ]
