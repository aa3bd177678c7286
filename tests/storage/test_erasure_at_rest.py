"""An erased user's rows are gone from the store's files, not only from its tables.

SQLite deletes a row by unlinking its cell: the bytes stay in the page (and in the
write-ahead log's older frames) until something overwrites them. Every connection of the
store deletes with ``secure_delete`` on (cells and freed pages zeroed), and ``erase_user``
then empties the write-ahead log, so that what an erasure removed cannot be read back from
the files.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.events import Binding, Touchpoint, iso
from gateway.ids import uuid7
from storage.erasure import erase_user
from storage.local import LocalStore, connect
from tests.storage.stores import OpenStore, landing

T0 = datetime(2026, 11, 20, tzinfo=UTC)
ERASED, KEPT = "e" * 32, "k" * 32
BOUND = Binding(uuid7(int(T0.timestamp() * 1000)), iso(T0), "n", ERASED, "u-erased", "login")


def touch(n: int, visitor: str, path: str) -> Touchpoint:
    """A landing whose path, campaign and parameters all carry ``path``, to be searched for."""
    content = {
        "campaign": f"campaign-{path}",
        "landing_path": f"/{path}",
        "raw_params": {"utm_content": path},
    }
    return landing(T0 + timedelta(seconds=n), visitor, source="news", medium="email", **content)


def files(store: Path) -> bytes:
    """Every byte of the store: the database file and its write-ahead log, if any."""
    wal = store.with_name(store.name + "-wal")
    return store.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


async def erase(store: LocalStore) -> dict[str, int]:
    erasure = await erase_user(
        store.path, "u-erased", "raw-id", body_key=b"k" * 32, event_id=uuid7(), ts=iso(T0), node="n"
    )
    return erasure.counts


async def test_an_erased_user_s_touchpoints_are_not_in_the_files(open_store: OpenStore) -> None:
    store = await open_store()
    rows = [touch(n, ERASED, f"secret-path-{n:03d}") for n in range(40)]
    rows += [touch(100 + n, KEPT, f"kept-path-{n:03d}") for n in range(40)]
    await store.write([BOUND, *rows])
    before = await asyncio.to_thread(files, store.path)
    assert b"secret-path-007" in before and b"kept-path-007" in before  # the search finds rows
    await erase(store)
    after = await asyncio.to_thread(files, store.path)
    assert b"secret-path-" not in after
    assert b"kept-path-007" in after


async def test_every_connection_deletes_with_secure_delete(open_store: OpenStore) -> None:
    """Not only the erasure's: the writer's page splits leave old copies of rows in pages
    still in use, and retention purges. This machine's SQLite has it on by default; builds
    without SECURE_DELETE do not, so the test asks the connections themselves."""
    store = await open_store()
    db = await connect(store.path)
    try:
        assert store._db is not None
        for conn in (store._db, db):
            async with conn.execute("PRAGMA secure_delete") as cursor:
                assert await cursor.fetchone() == (1,)
    finally:
        await db.close()


async def test_emptying_the_log_never_holds_the_writer_for_long(open_store: OpenStore) -> None:
    """A reader keeps the write-ahead log from being emptied: the erasure still succeeds, and a
    landing written meanwhile waits a fraction of a second, not the 5 s busy timeout (with
    one checkpoint waiting that long, the landing missed its 1 s commit wait)."""
    store = await open_store()
    reader = await connect(store.path)
    try:
        await store.write([BOUND, *(touch(n, ERASED, f"secret-path-{n:03d}") for n in range(40))])
        await reader.execute("BEGIN")
        async with reader.execute("SELECT count(*) FROM touchpoints") as cursor:
            await cursor.fetchone()  # a read transaction open on the old snapshot
        erasing = asyncio.ensure_future(erase(store))
        await asyncio.sleep(0.3)  # the erasure has committed and is trying to empty the log
        started = asyncio.get_running_loop().time()
        await store.write([touch(200, KEPT, "written-meanwhile")])
        waited = asyncio.get_running_loop().time() - started
        await reader.execute("ROLLBACK")  # the reader done: the next try empties the log
        counts = await erasing
        after = await asyncio.to_thread(files, store.path)
    finally:
        await reader.close()
    assert counts["touchpoints"] == 40 and b"secret-path-" not in after
    # Not a speed figure: a bound on how long the writers' lock is held. One try at a time
    # (0.2 s), where a single checkpoint held it for the whole 5 s busy timeout.
    assert waited < 2.5, waited
