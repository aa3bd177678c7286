"""``gateway import --dry-run`` against a real SQLite store: what a real run would add, per table,
and what the store has already, the store's bytes untouched; and what the summary says of a file
that holds no line to import (empty, one line without its line end, blank lines)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.events import Binding, Conversion, Event, Touchpoint
from gateway.ids import uuid7
from gateway.importrun import run_import
from gateway.importwrite import COUNTED
from gateway.metrics import Metrics
from gateway.options import StorageOptions
from storage.importdry import CHECKS, DryRun
from storage.local import TABLES, dedup_keys
from tests.conftest import ENV, make_settings
from tests.gateway.test_import_runs import RULES as ORDER
from tests.gateway.test_import_runs import SIGN_IN
from tests.storage.stores import read
from tests.storage.test_unique_keys import schema_unique

UA = "Mozilla/5.0 (X11; Linux x86_64) Firefox/127.0"
RULES = ORDER + SIGN_IN
"""An order page and a sign-in page."""
NONE = {"touchpoints": 0, "identities": 0, "conversions": 0}


def visit(n: int, minute: int = 0) -> list[str]:
    """Visitor ``n``'s landing, sign-in and order: a row in each table."""
    at = f"01/Mar/2025:10:{minute:02d}:{n % 60:02d} +0000"
    return [
        f'198.51.100.{n} - - [{at}] "GET {target} HTTP/1.1" 200 10 "-" "{UA}"'
        for target in (f"/?utm_source=news{n}", f"/welcome?uid=u{n}", f"/thanks?order=A{n}")
    ]


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_a_dry_run_says_what_a_real_run_would_add_and_what_is_there(tmp_path: Path) -> None:
    """A dry run counted the rows it made and said nothing of the store: on a file imported
    already it gave the same counts as on a new one, and "did I import this already?" had no
    answer. It now says, per table, how many would be new and how many the store has, by the
    dedup the real run applies (an id, a visitor-user pair, an order's dedup key), without
    writing a byte; the real run then adds exactly what it said."""
    settings = make_settings(tmp_path, RULES)
    store = settings.store_path
    first = await asyncio.to_thread(
        write, tmp_path / "day1.log", [line for n in range(1, 5) for line in visit(n)]
    )
    done = await run_import(settings, [first], "combined", host="shop.example")
    assert done.new_rows == {"touchpoints": 4, "identities": 4, "conversions": 4}
    before = await asyncio.to_thread(digest, store)

    again = await run_import(settings, [first], "combined", host="shop.example", dry_run=True)
    assert again.new_rows is None and again.would_add == NONE
    assert again.already == {"touchpoints": 4, "identities": 4, "conversions": 4}
    rendered = again.render()
    assert "  touchpoints:          4   would be new in the store: 0, already in the store: 4" in rendered
    assert "  bindings:             4   would be new in the store: 0, already in the store: 4" in rendered
    assert "  conversions:          4   would be new in the store: 0, already in the store: 4" in rendered
    assert "dry run: nothing was written" in rendered

    # Half of it imported already (another file's lines: new ids), half new; an order reloaded
    # (stored once) and a sign-in of visitor 1 again (the pair stored once).
    half = [line for n in (3, 4, 5, 6) for line in visit(n, minute=30)] + visit(6, minute=31)[2:]
    half += visit(1, minute=32)[1:2]
    second = await asyncio.to_thread(write, tmp_path / "day2.log", half)
    dry = await run_import(settings, [second], "combined", host="shop.example", dry_run=True)
    # Visitors 3 and 4 again: their landings are new lines (new ids); their pairs and orders are
    # in the store. Visitors 5 and 6: all new, 6's reload once. Visitor 1's sign-in: its pair.
    assert dry.events == {"touchpoints": 4, "identities": 5, "conversions": 5}
    assert dry.would_add == {"touchpoints": 4, "identities": 2, "conversions": 2}
    assert dry.already == {"touchpoints": 0, "identities": 3, "conversions": 3}
    assert await asyncio.to_thread(digest, store) == before  # not a byte written
    real = await run_import(settings, [second], "combined", host="shop.example")
    assert real.new_rows == dry.would_add  # what the dry run said

    # Both files at once: nothing new, all there.
    both = await run_import(
        settings, [first, second], "combined", host="shop.example", dry_run=True, workers=2
    )
    assert both.would_add == NONE and both.already == dict(both.events)


async def test_a_dry_run_without_a_store_counts_every_row_new_and_creates_none(tmp_path: Path) -> None:
    """No store yet: every row would be new (a repeat within the files once), none is created."""
    settings = make_settings(tmp_path, RULES)
    log = await asyncio.to_thread(write, tmp_path / "a.log", visit(1) + visit(1)[2:] + visit(2))
    dry = await run_import(settings, [log], "combined", host="shop.example", dry_run=True)
    assert dry.would_add == {"touchpoints": 2, "identities": 2, "conversions": 2}
    assert dry.already == {"touchpoints": 0, "identities": 0, "conversions": 1}  # the reload
    assert not await asyncio.to_thread(settings.store_path.exists)
    assert await asyncio.to_thread(os.listdir, tmp_path) == ["a.log"]
    real = await run_import(settings, [log], "combined", host="shop.example")
    assert real.new_rows == dry.would_add


async def test_a_dry_run_leaves_out_an_erased_users_rows_as_the_real_run_does(tmp_path: Path) -> None:
    """A dry run read no erasure: an old log's rows of a user erased since were counted as made
    (and would now be counted new), where the real run leaves them out (``erased:``)."""
    from gateway.events import iso
    from gateway.ids import uuid7
    from gateway.keys import Keys
    from storage.erasure import erase_user

    settings = make_settings(tmp_path, RULES)
    log = await asyncio.to_thread(write, tmp_path / "a.log", visit(1) + visit(2))
    await run_import(settings, [log], "combined", host="shop.example")
    keys = Keys.from_master(settings.secret, settings.options.identity.user_id_storage)
    at = iso(datetime.now(UTC))
    await erase_user(
        settings.store_path, keys.user_key("u1"), "u1", body_key=b"k" * 32, event_id=uuid7(), ts=at, node="a"
    )
    before = await asyncio.to_thread(digest, settings.store_path)
    dry = await run_import(settings, [log], "combined", host="shop.example", dry_run=True)
    real_like = {"touchpoints": 1, "identities": 1, "conversions": 1}  # visitor 2's, in the store
    assert dry.erased == 3 and dry.would_add == NONE and dry.already == real_like
    assert await asyncio.to_thread(digest, settings.store_path) == before
    real = await run_import(settings, [log], "combined", host="shop.example")
    assert real.erased == dry.erased and real.new_rows == NONE


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "import", *args], cwd=cwd, env={**os.environ, **ENV},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_the_command_says_it_per_table_and_leaves_the_store_as_it_was(tmp_path: Path) -> None:
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    write(tmp_path / "a.log", visit(1) + visit(2))
    args = ("--format", "combined", "-c", "gw.toml", "--host", "shop.example", "--no-progress")
    assert _cli(tmp_path, "a.log", *args).returncode == 0
    write(tmp_path / "b.log", visit(2) + visit(3) + visit(4))
    before = digest(tmp_path / "gw.db")
    dry = _cli(tmp_path, "b.log", *args, "--dry-run")
    assert dry.returncode == 0, dry
    # b.log's landings are lines of another file: all three new; without rules, no other rows.
    assert "  touchpoints:          3   would be new in the store: 3, already in the store: 0\n" in dry.stdout
    again = _cli(tmp_path, "a.log", *args, "--dry-run")
    assert (
        "  touchpoints:          2   would be new in the store: 0, already in the store: 2\n" in again.stdout
    )
    assert digest(tmp_path / "gw.db") == before


async def test_a_file_with_no_line_to_import_says_what_it_held(tmp_path: Path) -> None:
    """An empty file said "0 lines read" and nothing more, a file of blank lines "3 lines read"
    and nothing of them, a file of junk and a blank line "2 lines read" and "skipped: 2" (a
    blank line among them, and a last line without its line end, not read), one line without
    its line end "0 lines read" and "skipped: 1". Each now says what it held."""
    settings = make_settings(tmp_path)
    line = visit(1)[0]

    async def summary(name: str, data: bytes) -> str:
        path = tmp_path / name
        await asyncio.to_thread(path.write_bytes, data)
        done = await run_import(settings, [path], "combined", host="shop.example", dry_run=True)
        return done.render()

    empty = await summary("empty.log", b"")
    assert empty.splitlines()[0].startswith("gateway import: 1 file, 0 lines read in ")
    assert "  nothing read: the file is empty\n" in empty
    assert "replayed" not in empty and "skipped:              0" in empty

    blank = await summary("blank.log", b"\n\n\n")
    assert blank.splitlines()[1] == (
        "  replayed:             0   (lines run through the chain as live requests; the others of the"
        " 3 read: 0 skipped, below, and 3 blank)"
    )
    assert "empty" not in blank

    unended = await summary("one.log", line.encode())
    assert unended.splitlines()[0].startswith("gateway import: 1 file, 0 lines read in ")
    assert (
        "  skipped:              1   (of them 1 last line without its line end: not read, so not among"
        " the lines read)\n"
    ) in unended
    assert "replayed" not in unended and "empty" not in unended

    junk = await summary("junk.log", b"x\n\ny")
    assert junk.splitlines()[1] == (
        "  replayed:             0   (lines run through the chain as live requests; the others of the"
        " 2 read: 1 skipped, below, and 1 blank)"
    )
    assert "  skipped:              2   (of them 1 last line without its line end: not read, so" in junk

    whole = await summary("whole.log", line.encode() + b"\n")  # its line end: read, and replayed
    assert whole.splitlines()[0].startswith("gateway import: 1 file, 1 line read in ")
    assert "  replayed:             1   (" in whole and "empty" not in whole


BASE: dict[type[Event], Event] = {
    Touchpoint: Touchpoint(id="", ts="2025-03-01T10:00:00.000000Z", node="a", visitor_key="v" * 32),
    Binding: Binding(
        id="", ts="2025-03-01T10:00:00.000000Z", node="a", visitor_key="v" * 32, user_key="u" * 32, rule="r"
    ),
    Conversion: Conversion(
        id="",
        ts="2025-03-01T10:00:00.000000Z",
        node="a",
        name="order",
        dedup_key="order:A1",
        visitor_key="v" * 32,
    ),
}


def sharing(event: Event, key: tuple[str, ...]) -> Event:
    """``event`` with another value in every column of its dedup keys but those of ``key``."""
    columns = {c for k in dedup_keys(type(event)) for c in k} - set(key)
    changed: dict[str, Any] = {c: uuid7() if c == "id" else f"{getattr(event, c)}+" for c in columns}
    return dataclasses.replace(event, **changed)


def dry_check(path: Path, *events: Event) -> tuple[dict[str, int], dict[str, int]]:
    """A dry run's counts of ``events`` against the store ``path``: new, already there."""
    dry = DryRun(path)
    dry.open()
    try:
        dry.check(events)
        return dict(dry.new), dict(dry.already)
    finally:
        dry.close()


def seen_unique(path: Path) -> dict[str, set[tuple[str, ...]]]:
    """Of each table the dry run counts, the UNIQUE column sets of its own table of the rows it
    found new, and of the store's: both made from the same definition."""
    dry = DryRun(path)
    dry.open()
    try:
        assert dry.db is not None and dry.attached
        return {
            f"{schema}.{check.table}": schema_unique(dry.db, check.table, schema)
            for check in CHECKS.values()
            for schema in ("main", "store")
        }
    finally:
        dry.close()


async def test_the_dry_run_finds_a_row_by_each_key_the_store_skips_it_by(tmp_path: Path) -> None:
    """The dry run's checks are made from the store's own definition of a row it has already
    (``storage.local.dedup_keys``: each table's UNIQUE column sets, then its ``once`` pair),
    where they were written out a second time beside it: a UNIQUE column added to one would
    have been missed by the other. For each key of each counted table, a row sharing that key
    alone with a stored row is counted as already there, and the real INSERT skips it; a row
    sharing it alone with a row found new earlier in the run is counted once; a row sharing no
    key is new."""
    from storage.local import LocalStore

    assert tuple(check.table for check in CHECKS.values()) == COUNTED
    store = LocalStore(tmp_path / "gw.db", StorageOptions(), Metrics())
    await store.open()
    try:
        stored = [dataclasses.replace(e, id=uuid7()) for e in BASE.values()]  # type: ignore[arg-type]
        await store.submit(stored)
        counts = {table: (await read(store.path, f"SELECT count(*) FROM {table}"))[0][0] for table in COUNTED}
        assert counts == {table: 1 for table in COUNTED}
        # Every UNIQUE of the store's tables is one of the dry run's own, and its ``once`` pair too.
        unique = await asyncio.to_thread(seen_unique, store.path)
        for cls, check in CHECKS.items():
            assert unique[f"main.{check.table}"] == set(dedup_keys(cls))
            once = {TABLES[cls].once} if TABLES[cls].once else set()
            assert unique[f"main.{check.table}"] == unique[f"store.{check.table}"] | once
        for event in stored:
            table = TABLES[type(event)].name
            keys = dedup_keys(type(event))
            assert len(keys) == {"touchpoints": 1, "identities": 2, "conversions": 2}[table]
            for key in keys:
                again = sharing(event, key)
                new, already = await asyncio.to_thread(dry_check, store.path, again)
                assert (new.get(table, 0), already.get(table, 0)) == (0, 1), (table, key)
                await store.submit([again])
                assert (await read(store.path, f"SELECT count(*) FROM {table}"))[0][0] == 1, (table, key)
                # Within the run: the first row new, one sharing that key alone with it not.
                fresh = sharing(event, ())
                twin = sharing(fresh, key)
                new, already = await asyncio.to_thread(dry_check, store.path, fresh, twin)
                assert (new.get(table, 0), already.get(table, 0)) == (1, 1), (table, key)
            fresh = sharing(event, ())
            new, already = await asyncio.to_thread(dry_check, store.path, fresh)
            assert (new.get(table, 0), already.get(table, 0)) == (1, 0), table
            await store.submit([fresh])
            assert (await read(store.path, f"SELECT count(*) FROM {table}"))[0][0] == 2, table
    finally:
        await store.close()
