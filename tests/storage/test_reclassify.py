"""``gateway reclassify``'s scan (``storage.reclassify``) on a real store beside other writers."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.channels import Channels
from gateway.events import Touchpoint, iso
from gateway.ids import _format
from gateway.options import ChannelRule, ChannelsOptions
from storage.local import connect
from storage.reclassify import Reclassified, reclassify
from tests.storage.stores import OpenStore, read

T0 = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
NEWSLETTER = Channels(ChannelsOptions(rules=(ChannelRule(channel="Newsletter", source="newsletter"),)))


def old_landing(n: int, at: datetime, counter: int) -> Touchpoint:
    """A landing from the newsletter classified under the old rules (``Referral``), its id
    ``at``'s millisecond with ``counter`` (a worker process's count in that millisecond)."""
    return Touchpoint(
        id=_format(int(at.timestamp() * 1000), counter, n),
        ts=iso(at),
        node="a",
        visitor_key=f"{n:032x}",
        source="newsletter",
        channel="Referral",
    )


def _insert(t: Touchpoint) -> str:
    """The SQL another writer inserts landing ``t`` with, classified under the old rules."""
    return (
        "INSERT INTO touchpoints (id, ts, node, visitor_key, source, channel, landing_path)"
        f" VALUES ('{t.id}', '{t.ts}', 'b', '{t.visitor_key}', 'newsletter', 'Referral', '/');"
    )


async def _reclassify_beside(
    store: Path,
    at: Touchpoint,
    other_writer: str,
    batch_size: int,
    progress: Callable[[int], None] | None = None,
) -> Reclassified:
    """``reclassify`` of ``store`` to ``NEWSLETTER``, ``batch_size`` rows a page, another writer
    committing ``other_writer`` (SQL) together with the update of ``at``'s channel: after that
    page was read, before the next."""
    db = await connect(store)
    try:
        await db.execute(
            "CREATE TEMP TRIGGER other_writer AFTER UPDATE OF channel ON main.touchpoints"
            f" WHEN new.id = '{at.id}' BEGIN {other_writer} END"
        )
        return await reclassify(db, NEWSLETTER, batch_size=batch_size, progress=progress)
    finally:
        await db.close()


async def test_a_row_written_during_the_scan_behind_its_cursor_is_reclassified(
    open_store: OpenStore, tmp_path: Path
) -> None:
    """The scan paged by id (``id > ?``): a row another writer committed between two pages
    with an id below the page's last — another worker process's landing of the same
    millisecond, a mirror round's row from a node's backlog, an import's — was never read, and
    kept the old channel until the next run. It pages by rowid, the order rows were written
    in: every row committed before the scan reaches the end is read, each once (the progress
    count is the rows read)."""
    first = old_landing(1, T0 + timedelta(microseconds=900), counter=0x800)
    later = [old_landing(n, T0 + timedelta(minutes=n), counter=0x100) for n in (2, 3)]
    # Another worker's landing of first's millisecond, 100 µs before it, its id the smaller.
    behind = old_landing(4, T0 + timedelta(microseconds=100), counter=0x100)
    assert behind.id < first.id < later[0].id
    store = await open_store()
    await store.write([first, *later])
    batches: list[int] = []
    # The other writer commits as the first page's update does (the scan's pages are one
    # touchpoint each here): after the first page was read, before the second.
    done = await _reclassify_beside(tmp_path / "gw.db", first, _insert(behind), 1, batches.append)
    assert await read(tmp_path / "gw.db", "SELECT id, channel FROM touchpoints ORDER BY id") == [
        (behind.id, "Newsletter"),
        (first.id, "Newsletter"),
        (later[0].id, "Newsletter"),
        (later[1].id, "Newsletter"),
    ]
    assert (done.seen, done.changed, dict(done.moves)) == (4, 4, {("Referral", "Newsletter"): 4})
    assert batches == [1, 1, 1, 1]


async def test_a_row_taking_the_rowid_of_a_deleted_newest_row_during_the_scan_is_reclassified(
    open_store: OpenStore, tmp_path: Path
) -> None:
    """SQLite gives a new row the largest rowid + 1: once the newest rows are deleted while the
    scan runs (an erasure of their visitor, an import undone), the next landing takes a rowid
    the scan has passed already, and kept the old channel until the next run. The scan goes
    back to below such a delete (migration 0022's ``feed_drops``): the rows there are new."""
    first = old_landing(1, T0, counter=0x100)
    erased = [old_landing(n, T0 + timedelta(minutes=n), counter=0x100) for n in (2, 3, 4)]
    erased = [dataclasses.replace(t, visitor_key="e" * 32) for t in erased]
    new = old_landing(5, T0 + timedelta(minutes=5), counter=0x100)
    store = await open_store()
    await store.write([first, *erased])
    # Another writer as the first page (two rows) is updated: the erasure of the visitor of the
    # newest rows (the second of the page among them), then a new landing, which takes the
    # second row's rowid, one the scan read already.
    erasure = f"DELETE FROM touchpoints WHERE visitor_key = '{'e' * 32}';"
    done = await _reclassify_beside(tmp_path / "gw.db", first, erasure + " " + _insert(new), 2)
    assert await read(tmp_path / "gw.db", "SELECT id, channel FROM touchpoints ORDER BY id") == [
        (first.id, "Newsletter"),
        (new.id, "Newsletter"),
    ]
    assert done.seen == 3  # the first page's two, then the new row once
