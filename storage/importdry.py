"""What a dry run of ``gateway import`` would add: each row checked against the store, unwritten.

Owns ``DryRun``: the store read only (``?mode=ro``, attached to a connection of its own, never
created nor migrated: its bytes stay as they are), each row a real run would insert checked as
that run's INSERT decides it (``storage.local.insert_sql``), by the same column sets
(``storage.local.dedup_keys``, from which every check here is made): a touchpoint by its id, a
binding by its id or its visitor-user pair (``Binding.once``), a conversion by its id or its
``dedup_key`` (an order ID seen before). A row not in the store is new once: the keys of the
rows found new are kept in a private temporary database (SQLite's, on disk past a few MiB of
cache), so that a later line of the same files making the same row (an order reloaded, a pair
bound again, a file named twice) is counted as the real run would store it, once, and a dry run
of a large log holds no more memory than a real one. Blocking: called off the event loop.
"""

from __future__ import annotations

import operator
import sqlite3
import urllib.parse
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.events import Binding, Conversion, Event, Touchpoint
from storage.local import TABLES, dedup_keys
from storage.migrate import refuse_newer_file
from storage.readonly import factory

CACHE_KIB = 4096
"""The temporary database's page cache: past it, its pages go to a temporary file."""

COUNTED: tuple[type[Event], ...] = (Touchpoint, Binding, Conversion)
"""The event types whose rows a run counts (``gateway.importwrite.COUNTED`` names their tables)."""


@dataclass(frozen=True, slots=True)
class _Check:
    """One table's check, made from its ``dedup_keys``: the columns they name (each once, the
    primary key's first) and the SQL over them."""

    table: str
    columns: tuple[str, ...]
    keys: tuple[tuple[str, ...], ...]
    values: Callable[[Event], tuple[object, ...]]
    """An event's values of ``columns``, in that order."""

    @classmethod
    def of(cls, event_type: type[Event]) -> _Check:
        keys = dedup_keys(event_type)
        columns = tuple(dict.fromkeys(c for key in keys for c in key))
        getter = operator.attrgetter(*columns)
        values = getter if len(columns) > 1 else (lambda event: (getter(event),))
        return cls(TABLES[event_type].name, columns, keys, values)

    def seen_table(self) -> str:
        """The table of the rows found new so far (their keys only), unique as the store's is:
        keyed by the first key (the primary key), each other one UNIQUE."""
        primary, *others = self.keys
        constraints = [f"PRIMARY KEY ({', '.join(primary)})", *(f"UNIQUE ({', '.join(k)})" for k in others)]
        return f"CREATE TABLE main.{self.table} ({', '.join([*self.columns, *constraints])}) WITHOUT ROWID"

    def in_store(self) -> str:
        """Whether the store has a row sharing one of the keys: one a real run's INSERT skips."""
        mark = {c: f"?{n + 1}" for n, c in enumerate(self.columns)}
        shares = " OR ".join("(" + " AND ".join(f"{c} = {mark[c]}" for c in key) + ")" for key in self.keys)
        return f"SELECT 1 FROM store.{self.table} WHERE {shares}"

    def insert(self, store: bool) -> str:
        """Keeps a row's keys as found new unless the store has it (``store``: the store has the
        table) or a row found new before shares one (``OR IGNORE``: the seen table's keys)."""
        marks = ", ".join(f"?{n + 1}" for n in range(len(self.columns)))
        found = f" WHERE NOT EXISTS ({self.in_store()})" if store else ""
        return f"INSERT OR IGNORE INTO main.{self.table} ({', '.join(self.columns)}) SELECT {marks}{found}"


CHECKS = {event_type: _Check.of(event_type) for event_type in COUNTED}


class DryRun:
    """The store ``path`` read only (missing: every row is new); ``new``: the rows found new, per
    table, and ``already``: those the store has (or an earlier line of the run made)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.new: Counter[str] = Counter()
        self.already: Counter[str] = Counter()
        self.db: sqlite3.Connection | None = None
        self.sql: dict[str, str] = {}
        self.attached = False
        """The store is there, and read (else every row is new)."""

    def open(self) -> None:
        """Read only, the store never created, written nor migrated; SchemaTooNew for a store a
        newer gateway migrated, as a real run would refuse it; ``sqlite3.Error`` for one that
        cannot be read (not a database, a stopped WAL store in a folder this user may not write:
        its ``-shm`` cannot be made)."""
        # "": a private temporary database, on disk once it outgrows its cache (not ":memory:").
        # ``factory``: a stopped store is handed back with no -wal nor -shm made for this read.
        db = sqlite3.connect(
            "", uri=True, isolation_level=None, check_same_thread=False, factory=factory(self.path)
        )
        try:
            db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            for check in CHECKS.values():
                db.execute(check.seen_table())
            tables: set[str] = set()
            if self.path.exists():
                refuse_newer_file(self.path)
                db.execute(
                    "ATTACH DATABASE ? AS store", (f"file:{urllib.parse.quote(str(self.path))}?mode=ro",)
                )
                tables = {
                    name
                    for (name,) in db.execute("SELECT name FROM store.sqlite_master WHERE type = 'table'")
                }
                self.attached = True
        except BaseException:
            db.close()
            raise
        for check in CHECKS.values():
            self.sql[check.table] = check.insert(check.table in tables)
        self.db = db

    def check(self, events: Sequence[Event]) -> None:
        """Count ``events`` (in file order) as new or already stored, as a real run would store
        them: a row found new makes a later one with its keys already stored."""
        assert self.db is not None
        rows: dict[str, list[tuple[object, ...]]] = {}
        for event in events:
            if (check := CHECKS.get(type(event))) is not None:
                rows.setdefault(check.table, []).append(check.values(event))
        self.db.execute("BEGIN")  # one read of the store for the batch, its new keys kept at once
        try:
            for table, values in rows.items():
                added = self.db.executemany(self.sql[table], values).rowcount
                self.new[table] += added
                self.already[table] += len(values) - added
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
