"""The listings' commit-order feed (``order=stored``, ``storage.feed``) on a real store: every
row once, in the order committed, whatever its id; rowids freed by deleting the newest rows."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.events import Conversion
from gateway.ids import uuid7
from gateway.metrics import Metrics
from gateway.options import StorageOptions
from storage.erasure import erase_visitor
from storage.feed import CursorLost, StoredCursor
from storage.local import LocalStore, connect
from storage.queries import ConversionQuery, Reader, TouchpointQuery
from tests.storage.test_erasure import KEYS, SEAL, TS
from tests.storage.test_queries import event


@dataclasses.dataclass
class Opened:
    path: Path
    store: LocalStore
    reader: Reader


@pytest.fixture
async def opened(tmp_path: Path) -> AsyncIterator[Opened]:
    path = tmp_path / "gw.db"
    store = LocalStore(path, StorageOptions(), Metrics())
    await store.open()
    reader = Reader(path)
    await reader.open()
    yield Opened(path, store, reader)
    await reader.close()
    await store.close()


async def follow(reader: Reader, cursor: str | None, limit: int = 3, **filters: str) -> tuple[list[str], str]:
    """Every touchpoint stored after ``cursor`` (its ``content``), page by page, and the cursor
    to ask from later."""
    seen: list[str] = []
    while True:
        query = TouchpointQuery(cursor=cursor, limit=limit, stored=True, equals=filters or None)
        items, after = await reader.touchpoints(query)
        assert after is not None and after.startswith("stored.touchpoints.")  # never None
        seen += [t["content"] for t in items]
        cursor = after
        if len(items) < limit:
            return seen, cursor


async def test_a_row_committed_after_the_page_with_a_smaller_id_comes_next(opened: Opened) -> None:
    """``order=oldest`` pages by id: a row committed after a page was read whose id sorts before
    the page's last (another worker's of the same millisecond, a late commit) was never listed
    to a follower. In the order stored it comes on the next page."""
    await opened.store.write([event(n) for n in (10, 11, 12)])
    first, after_first = await opened.reader.touchpoints(TouchpointQuery(limit=3, stored=True))
    assert [t["content"] for t in first] == ["10", "11", "12"]
    oldest, after_oldest = await opened.reader.touchpoints(TouchpointQuery(limit=3))
    await opened.store.write([event(5)])  # committed now, its id before every one listed
    late, _ = await follow(opened.reader, after_first)
    assert late == ["5"]
    # The id order skips it (the known limit this order is for).
    missed, _ = await opened.reader.touchpoints(TouchpointQuery(limit=3, cursor=oldest[-1]["id"]))
    assert missed == [] and after_oldest is None


async def test_every_row_once_in_the_order_committed(opened: Opened) -> None:
    """Written in several commits out of id order, read while written: each row exactly once,
    in commit order; filters keep the cursor moving past the rows they leave out."""
    order = [*range(20, 30), *range(0, 7), *range(7, 20)]
    cursor, seen, filtered = None, [], []
    fcursor: str | None = None
    for chunk in (order[:10], order[10:17], order[17:]):
        await opened.store.write([event(n) for n in chunk])
        got, cursor = await follow(opened.reader, cursor)
        seen += got
        got, fcursor = await follow(opened.reader, fcursor, source="news")
        filtered += got
    assert seen == [str(n) for n in order]
    news = {str(n) for n in range(30) if n % 4 == 0}  # test_queries.event: SOURCES[n % 4]
    assert filtered == [s for s in seen if s in news]
    again, _ = await follow(opened.reader, cursor)
    assert again == []


async def test_rowids_freed_by_deleting_the_newest_rows_are_not_skipped(opened: Opened) -> None:
    """SQLite gives a new row the largest rowid + 1 (no AUTOINCREMENT): an erasure of the newest
    rows let the next rows take rowids the follower's cursor had passed."""
    await opened.store.write([event(n) for n in range(6)])
    seen, cursor = await follow(opened.reader, None)
    assert seen == [str(n) for n in range(6)]
    # event(n)'s visitor is VISITORS[n % 3]: erase the one of rows 2 and 5, the newest.
    visitor = event(5).visitor_key
    await erase_visitor(opened.path, [visitor], body_key=SEAL, keys=KEYS, event_id=uuid7(), ts=TS, node="n")
    # Rows of other visitors (one of the erased visitor dated before its erasure is refused).
    await opened.store.write([event(n) for n in (40, 42, 43)])
    later, cursor = await follow(opened.reader, cursor)
    assert later == ["40", "42", "43"]
    # A raw delete of the newest row (any delete: the trigger notes it), then one more row.
    db = await connect(opened.path)
    await db.execute("DELETE FROM touchpoints WHERE content = '43'")
    await db.close()
    await opened.store.write([event(45)])
    later, _ = await follow(opened.reader, cursor)
    assert later == ["45"]


async def test_a_download_across_a_delete_of_the_newest_rows_gets_each_row_once(opened: Opened) -> None:
    """A download ends at the newest row as it began (``feed_head``), the next one going on from
    there. The newest rows deleted while it runs and new ones written in their rowids: those
    are the next download's, and the older rows it had not reached yet are still its own."""
    await opened.store.write([event(n) for n in range(6)])
    head = await opened.reader.feed_head("touchpoints")
    got, cursor = await opened.reader.touchpoints(TouchpointQuery(limit=2, stored=True, upto=head))
    downloaded = [t["content"] for t in got]
    db = await connect(opened.path)
    await db.execute("DELETE FROM touchpoints WHERE content = '5'")
    await db.close()
    await opened.store.write([event(40)])  # takes the rowid row 5 had
    while cursor is not None:
        got, cursor = await opened.reader.touchpoints(
            TouchpointQuery(limit=2, stored=True, upto=head, cursor=cursor)
        )
        downloaded += [t["content"] for t in got]
    assert downloaded == ["0", "1", "2", "3", "4"]
    following, _ = await follow(opened.reader, head.text())
    assert following == ["40"]


async def test_conversions_follow_the_same_way(opened: Opened) -> None:
    def conversion(n: int) -> Conversion:
        ts = event(n).ts
        return Conversion(
            event(n).id, ts, "n", "signup", f"order:o{n}", "a" * 32, None, None, None, order_id=f"o{n}"
        )

    await opened.store.write([conversion(10), conversion(11)])
    items, cursor = await opened.reader.conversions(ConversionQuery(limit=5, stored=True))
    assert [c["order_id"] for c in items] == ["o10", "o11"]
    assert cursor is not None and cursor.startswith("stored.conversions.")
    await opened.store.write([conversion(3)])
    items, _ = await opened.reader.conversions(ConversionQuery(limit=5, stored=True, cursor=cursor))
    assert [c["order_id"] for c in items] == ["o3"]


async def test_a_store_gone_back_behind_the_cursor_is_refused(opened: Opened) -> None:
    """A backup restored (fewer rows, fewer drops) or rows renumbered: the cursor's rowid now
    points at other rows, which were neither read nor are they new: refused, not guessed."""
    await opened.store.write([event(n) for n in range(4)])
    _, cursor = await follow(opened.reader, None, limit=10)
    here = StoredCursor.parse(cursor)
    assert here is not None and here.at == event(3).id
    assert here.table == "touchpoints"
    ahead = StoredCursor("touchpoints", here.position + 5, here.drops).text()  # a store since restored
    with pytest.raises(CursorLost, match="restored from a backup"):
        await opened.reader.touchpoints(TouchpointQuery(cursor=ahead, stored=True))
    renumbered = StoredCursor("touchpoints", here.position, here.drops, str(uuid.UUID(int=1))).text()
    with pytest.raises(CursorLost):
        await opened.reader.touchpoints(TouchpointQuery(cursor=renumbered, stored=True))
    dropped_since = StoredCursor("touchpoints", here.position, here.drops + 3, here.at).text()
    with pytest.raises(CursorLost):
        await opened.reader.touchpoints(TouchpointQuery(cursor=dropped_since, stored=True))


@pytest.mark.parametrize(
    "text",
    [
        "stored.1",
        "stored.touchpoints.-1.0",
        "stored.conversions.1.0.NOT-AN-ID",
        "stored.touchpoints.99999999999999999999.0",
        "stored.1.0",  # no listing named
        "stored.visitors.1.0",
        "touchpoints.1.0",
        "",
    ],
)
def test_cursor_text_not_given_by_the_api_is_not_one(text: str) -> None:
    assert StoredCursor.parse(text) is None


def test_cursor_text_round_trips() -> None:
    for cursor in (
        StoredCursor("touchpoints", 0, 0),
        StoredCursor("conversions", 2**63 - 1, 7, str(uuid.UUID(int=5))),
    ):
        assert StoredCursor.parse(cursor.text()) == cursor
