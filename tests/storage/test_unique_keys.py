"""One definition of "a row the store has already": each event table's ``unique`` column sets
(``gateway.events``, ``storage.local.dedup_keys``) are exactly the UNIQUE ones its migrated
schema holds, which the store's INSERT skips a row on (``ON CONFLICT``), so the dry run of an
import (``storage.importdry``), which derives its checks from the same sets, cannot count as new
a row the real run would skip, nor the other way round."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

from gateway.events import EVENT_TYPES
from storage.local import TABLES, dedup_keys
from tests.storage.stores import OpenStore


def schema_unique(db: sqlite3.Connection, table: str, schema: str = "main") -> set[tuple[str, ...]]:
    """The column sets ``table`` of ``schema`` makes UNIQUE: its UNIQUE indexes and constraints
    (``PRAGMA index_list``: its primary key's too, and ``CREATE UNIQUE INDEX``'s), and an INTEGER
    PRIMARY KEY (no index of its own). A partial UNIQUE index fails: no column set says it."""
    found: set[tuple[str, ...]] = set()
    pk_index = False
    for _, name, unique, origin, partial in db.execute(f"PRAGMA {schema}.index_list({table})"):
        if not unique:
            continue
        assert not partial, f"{table}: partial UNIQUE index {name}: a column set cannot say it"
        columns = tuple(row[2] for row in db.execute(f"PRAGMA {schema}.index_info({name})"))
        assert None not in columns, f"{table}: UNIQUE index {name} on an expression"
        found.add(columns)
        pk_index |= origin == "pk"
    if not pk_index:  # an INTEGER PRIMARY KEY is the rowid: no index of its own
        pk = sorted((row[5], row[1]) for row in db.execute(f"PRAGMA {schema}.table_info({table})") if row[5])
        if pk:
            found.add(tuple(name for _, name in pk))
    return found


async def test_each_tables_unique_keys_are_its_schemas(open_store: OpenStore) -> None:
    """A UNIQUE column added by a migration and not to its event class (or the other way round)
    would make ``gateway import --dry-run`` count as new a row the real run skips: every event
    table's declared ``unique`` sets are the migrated schema's, no more, no fewer."""
    store = await open_store()
    await asyncio.to_thread(_same_as_schema, store.path)


def _same_as_schema(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db:
        for cls in EVENT_TYPES:
            table = TABLES[cls]
            assert set(table.unique) == schema_unique(db, table.name), cls.__name__
            if "id" in table.columns:  # the primary key first: the dry run's table is keyed by it
                assert table.unique[0] == ("id",), cls.__name__
            # ``once`` columns are checked by the INSERT itself, not a constraint: not among them.
            assert table.once not in table.unique
            assert dedup_keys(cls) == table.unique + ((table.once,) if table.once else ())
            for key in dedup_keys(cls):
                assert set(key) <= set(table.columns), (cls.__name__, key)


def test_schema_unique_reads_every_kind_of_unique() -> None:
    """The reading the test above relies on sees a primary key, a UNIQUE constraint, a UNIQUE
    index and an INTEGER PRIMARY KEY, and no plain index."""
    with contextlib.closing(sqlite3.connect(":memory:")) as db:
        db.executescript(
            "CREATE TABLE t (id TEXT PRIMARY KEY, a TEXT UNIQUE, b TEXT, c TEXT, d TEXT, UNIQUE (b, c));"
            "CREATE UNIQUE INDEX t_d ON t (d); CREATE INDEX t_plain ON t (a, b);"
            "CREATE TABLE r (n INTEGER PRIMARY KEY, x TEXT)"
        )
        assert schema_unique(db, "t") == {("id",), ("a",), ("b", "c"), ("d",)}
        assert schema_unique(db, "r") == {("n",)}
