"""gateway import's writing: a line whose rows the store refuses costs that line only — the other
lines of its batch are stored, once, recorded for --undo, and the line is a skip naming its
file:line and why. Real logs through the real import, real SQLite files: the store refuses a row
by a trigger of its own (no input the parsers pass can make one any more), or, through the
import's own writer, by a text SQLite cannot encode."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.backfill import Replayed, Replayer, Summary, replay_items
from gateway.config import Settings
from gateway.events import Touchpoint
from gateway.importcmd import import_command
from gateway.importrun import run_import
from gateway.importwrite import Writer
from gateway.logformats import parser_for
from gateway.metrics import Metrics
from storage.erased import ErasedWatch
from storage.imports import list_runs, undo_run
from storage.local import REFUSED_RUN, LocalStore
from tests.conftest import make_settings
from tests.gateway.test_backfill import combined_args
from tests.gateway.test_import_runs import RULES, SIGN_IN  # RULES: a success page a conversion rule converts

UA = "Mozilla/5.0 (X11; Linux x86_64) Firefox/127.0"
POISON = (
    "CREATE TRIGGER poison BEFORE INSERT ON touchpoints WHEN NEW.campaign = 'poison'"
    " BEGIN SELECT RAISE(ABORT, 'campaign poison is not welcome here'); END"
)
"""A store that refuses one row: SQLite's answer is an IntegrityError, as a CHECK's would be."""


def line(n: int, target: str) -> str:
    return f'203.0.113.{n % 250} - - [01/Mar/2025:10:{n // 60:02d}:{n % 60:02d} +0000] "GET {target} HTTP/1.1" 200 10 "-" "{UA}"'  # noqa: E501


async def landings_replayed(settings: Settings, count: int) -> Replayed:
    """Lines 1 to ``count`` of access.log, a landing each (campaign ``c1``, ``c2``…), read and
    replayed as the import does before its writer gets them."""
    replayer = Replayer(settings, Metrics(), "shop.example")
    parse = parser_for("combined", settings.options.identity.cookie_name, {})
    items = [
        item
        for n in range(1, count + 1)
        for item in parse(n, line(n, f"/p?utm_source=news&utm_campaign=c{n}").encode())
    ]
    return await replay_items(replayer, items, b"access.log")


@contextlib.asynccontextmanager
async def watching_writer(settings: Settings, summary: Summary) -> AsyncIterator[Writer]:
    """The import's writer on the open store, counting into ``summary`` and watching the
    store's erasures as ``gateway import`` runs it; the store closed after."""
    store = LocalStore(settings.store_path, settings.options.storage, Metrics())
    await store.open()
    try:
        watch = ErasedWatch(settings.store_path)
        yield Writer(store, await watch.current(), summary=summary, watch=watch)
    finally:
        await store.close()


def rows(path: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(sql, args).fetchall()


EVERY = (
    "CREATE TRIGGER poison BEFORE INSERT ON touchpoints"
    " BEGIN SELECT RAISE(ABORT, 'no touchpoint is welcome here'); END"
)
"""A store that refuses every row."""


def poisoned_store(settings: Settings, trigger: str = POISON) -> None:
    """The store made (migrated) by a first, empty-handed open, then given the trigger."""

    async def made() -> None:
        store = LocalStore(settings.store_path, settings.options.storage, Metrics())
        await store.open()
        await store.close()

    asyncio.run(made())
    with contextlib.closing(sqlite3.connect(settings.store_path)) as db:
        db.execute(trigger)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_line_the_store_refuses_costs_that_line_only(tmp_path: Path, workers: int) -> None:
    """One batch of lines, one of them (line 3: a touchpoint and the conversion its page makes)
    refused by the store: the import ended there (CommitFailed, "run the same command again",
    which failed the same way for ever) and the batch's other lines were lost. Now the line is
    skipped whole, with its file:line and SQLite's reason, every other line of the batch is in,
    and the run records exactly those rows: listed, undone, imported again without a double."""
    settings = make_settings(tmp_path, RULES)
    poisoned_store(settings)
    log = tmp_path / "access.log"
    lines = [line(n, f"/p?utm_source=news&utm_campaign=c{n}") for n in range(1, 41)]
    lines[2] = line(3, "/thanks?order=A3&utm_source=news&utm_campaign=poison")
    lines[9] = line(10, "/thanks?order=A10&utm_source=news&utm_campaign=c10")
    log.write_text("\n".join(lines) + "\n")

    summary = asyncio.run(run_import(settings, [log], "combined", host="shop.example", workers=workers))

    reason = "the store refused its rows: campaign poison is not welcome here"
    assert summary.skipped == {reason: 1}, summary.skipped
    assert summary.examples == [f"access.log:3: {reason}"]
    assert summary.events["touchpoints"] == 39 and summary.events["conversions"] == 1, summary.events
    assert summary.new_rows == {"touchpoints": 39, "identities": 0, "conversions": 1}
    db = settings.store_path
    campaigns = {row[0] for row in rows(db, "SELECT campaign FROM touchpoints")}
    assert campaigns == {f"c{n}" for n in range(1, 41) if n != 3}
    assert rows(db, "SELECT order_id FROM conversions") == [("A10",)]  # line 3's conversion went with it
    assert rows(db, "SELECT tbl, count(*) FROM import_rows GROUP BY tbl ORDER BY tbl") == [
        ("conversions", 1),
        ("touchpoints", 39),
    ]
    runs = list_runs(db)
    assert runs is not None and [(r.id, r.added, r.finished is not None) for r in runs] == [
        (1, {"touchpoints": 39, "identities": 0, "conversions": 1}, True)
    ]
    rendered = summary.render()
    assert f"    access.log:3: {reason}" in rendered and "new in the store: 39" in rendered, rendered

    again = asyncio.run(run_import(settings, [log], "combined", host="shop.example", workers=workers))
    assert again.skipped == {reason: 1} and again.new_rows == dict.fromkeys(again.new_rows or {}, 0)
    assert again.run == 2  # it added nothing: a run of no row (until 2026-12-07 none was recorded)
    assert [(r.id, r.added, r.finished is not None) for r in list_runs(db) or []][1] == (
        2,
        {"touchpoints": 0, "identities": 0, "conversions": 0},
        True,
    )
    undone = asyncio.run(undo_run(db, 1))
    assert undone.rows == {"touchpoints": 39, "identities": 0, "conversions": 1, "verdict_changes": 0}
    assert rows(db, "SELECT count(*) FROM touchpoints") == [(0,)]
    assert rows(db, "SELECT count(*) FROM import_rows") == [(0,)]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_pair_whose_first_line_is_refused_is_bound_by_a_later_line(tmp_path: Path, workers: int) -> None:
    """A visitor signs in three times; the store refuses the line of the first (its touchpoint
    is poisoned, and a line's rows go together). The later copies of the binding were dropped
    before the store saw them, as copies of a pair already bound: the pair was never bound.
    Now the first copy the store takes binds it, once, counted once, and a re-import adds none."""
    settings = make_settings(tmp_path, RULES + SIGN_IN)
    poisoned_store(settings)
    log = tmp_path / "access.log"
    lines = [line(n, f"/p?utm_source=news&utm_campaign=c{n}") for n in range(0, 40, 10)]
    lines[1] = line(10, "/welcome?uid=u1&utm_source=news&utm_campaign=poison")
    lines.insert(2, line(10, "/welcome?uid=u1"))
    lines.append(line(10, "/welcome?uid=u1"))
    log.write_text("\n".join(lines) + "\n")

    summary = asyncio.run(run_import(settings, [log], "combined", host="shop.example", workers=workers))

    assert summary.skipped == {"the store refused its rows: campaign poison is not welcome here": 1}
    assert summary.examples == [
        "access.log:2: the store refused its rows: campaign poison is not welcome here"
    ]
    assert summary.new_rows == {"touchpoints": 3, "identities": 1, "conversions": 0}, summary.new_rows
    assert summary.events["identities"] == 1, summary.events
    assert rows(settings.store_path, "SELECT rule FROM identities") == [("welcome",)]
    again = asyncio.run(run_import(settings, [log], "combined", host="shop.example", workers=workers))
    assert again.new_rows == {"touchpoints": 0, "identities": 0, "conversions": 0}


def test_a_store_that_refuses_every_line_stops_the_import(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store that refuses every row (here a trigger on every touchpoint) cost each batch some
    2·n transactions, and the import went on to the end skipping every line. Now the first batch
    it refuses whole ends the import, exit 1, with one line saying so, why and that nothing of
    that batch was stored; nothing is listed as a run, no traceback."""
    settings = make_settings(tmp_path, RULES)
    poisoned_store(settings, EVERY)
    log = tmp_path / "access.log"
    count = 3 * REFUSED_RUN
    log.write_text(
        "\n".join(line(n, f"/p?utm_source=news&utm_campaign=c{n}") for n in range(1, count + 1)) + "\n"
    )
    args = combined_args(log)
    assert import_command(settings, args) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"gateway import: the store {settings.store_path} refused every line of a batch"), (
        err
    )
    assert f"of {count} lines (access.log:1 to access.log:{count})" in err, err
    assert "the store refused its rows: no touchpoint is welcome here" in err, err
    assert "nothing of that batch was stored" in err and "what it committed before stays" in err, err
    assert rows(settings.store_path, "SELECT count(*) FROM touchpoints") == [(0,)]


async def test_a_text_sqlite_cannot_encode_is_skipped_through_the_import_s_writer(tmp_path: Path) -> None:
    """The narrowest seam for the old hole: touchpoints replayed as the import replays them, one
    given a lone surrogate (SQLite cannot encode it: mitmproxy's decoding of a Latin-1 header
    did it until the parsers read such bytes as U+FFFD). The writer stopped with the
    UnicodeEncodeError's traceback and stored none of the batch."""
    settings = make_settings(tmp_path)
    replayed = await landings_replayed(settings, 5)
    assert len(replayed.events) == 5 and replayed.lines == [1, 2, 3, 4, 5]
    bad = replayed.events[1]
    assert isinstance(bad, Touchpoint)
    bad.campaign = "caf\udce9"
    store = LocalStore(settings.store_path, settings.options.storage, Metrics())
    await store.open()
    summary = Summary()
    try:
        writer = Writer(store, summary=summary)
        await writer.add(replayed.events, "access.log", replayed.lines)
        await writer.finish()
    finally:
        await store.close()
    stored = await asyncio.to_thread(rows, settings.store_path, "SELECT campaign FROM touchpoints")
    assert sorted(stored) == [("c1",), ("c3",), ("c4",), ("c5",)]
    why = "the store refused its rows: a text that is not Unicode (a lone surrogate, \\udce9)"
    assert summary.skipped == {why: 1} and summary.examples == [f"access.log:2: {why}"], summary.examples


async def test_a_batch_sorted_before_an_erasure_and_committed_after_it_leaves_the_erased_rows_out(
    tmp_path: Path,
) -> None:
    """The import's narrow window: a batch of lines sorted out while the erasure was not made
    yet, and committed once it was. Its rows of the erased visitor, dated before the erasure,
    are late rows: the store leaves them out at the commit, and the import counts them as
    erased; the other visitor's go in. (Until 2026-12-07 they went in, and the import deleted
    them once its last commit was in.)"""
    from datetime import UTC, datetime

    from gateway.events import iso
    from gateway.ids import uuid7
    from gateway.keys import Keys
    from storage.erasure import erase_visitor

    settings = make_settings(tmp_path)
    replayed = await landings_replayed(settings, 2)
    assert len(replayed.events) == 2
    erased = replayed.events[0]
    assert isinstance(erased, Touchpoint)
    summary = Summary()
    async with watching_writer(settings, summary) as writer:
        await writer.see_erasures()
        sorted_out, left_out = writer.erased.keep(replayed.events)  # nothing erased yet
        assert left_out == 0
        keys = Keys.from_master(settings.secret, settings.options.identity.user_id_storage)
        await erase_visitor(
            settings.store_path,
            [erased.visitor_key],
            body_key=b"k" * 32,
            keys=keys,
            event_id=uuid7(),
            ts=iso(datetime.now(UTC)),
            node="a",
        )
        await writer.add(sorted_out, "access.log", replayed.lines)
        await writer.finish()
        assert summary.erased == 1
        assert await writer.drop_erased_since() == 0
    stored = await asyncio.to_thread(rows, settings.store_path, "SELECT campaign FROM touchpoints")
    assert stored == [("c2",)]


async def test_a_binding_the_store_left_out_as_late_does_not_drop_the_pairs_later_sign_in(
    tmp_path: Path,
) -> None:
    """A log being imported while its user is erased: the user's sign-in on a device, read
    before the erasure and committed after it, is a late row the store leaves out. The same
    pair's sign-in after the erasure (a later line: new activity) binds them again, as the
    proxy's path binds it (``tests/gateway/test_erasure_in_flight.py``). The import took the
    pair left out as stored, and dropped every later copy of it as one the store had."""
    from datetime import UTC, datetime, timedelta

    from gateway.events import Binding, iso
    from gateway.ids import uuid7
    from gateway.keys import Keys
    from storage.erasure import erase_user

    settings = make_settings(tmp_path)
    keys = Keys.from_master(settings.secret, settings.options.identity.user_id_storage)
    user, device = keys.user_key("alice@example.com"), keys.visitor_key("phone-1")
    now = datetime.now(UTC)

    def sign_in(at: datetime) -> Binding:
        return Binding(uuid7(int(at.timestamp() * 1000)), iso(at), "a", device, user, "login")

    summary = Summary()
    async with watching_writer(settings, summary) as writer:
        before = writer.bindings.sift([sign_in(now - timedelta(seconds=5))])  # sorted: not erased yet
        await erase_user(
            settings.store_path,
            user,
            "alice@example.com",
            body_key=b"k" * 32,
            event_id=uuid7(),
            ts=iso(now),
            node="a",
            keys=keys,
        )
        await writer.add(before, "access.log", [1])
        await writer.finish()  # committed and settled
        assert summary.erased == 1
        await writer.see_erasures()
        again, _ = writer.erased.keep([sign_in(now + timedelta(seconds=5))])  # after the erasure
        after = writer.bindings.sift(again)
        await writer.add(after, "access.log", [2])
        await writer.finish()
    stored = await asyncio.to_thread(
        rows, settings.store_path, "SELECT visitor_key, user_key FROM identities"
    )
    assert stored == [(device, user)]
