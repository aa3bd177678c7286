"""What a dry run of ``gateway import`` would add: each row checked against the store, unwritten.

Owns ``DryRun``: the store read only (``?mode=ro``, attached to a connection of its own, never
created nor migrated: its bytes stay as they are), each row a real run would insert checked as
that run's INSERT decides it (``storage.local.insert_sql``): a touchpoint by its id, a binding
by its id or its visitor-user pair (``Binding.once``), a conversion by its id or its
``dedup_key`` (an order ID seen before). A row not in the store is new once: the keys of the
rows found new are kept in a private temporary database (SQLite's, on disk past a few MiB of
cache), so that a later line of the same files making the same row (an order reloaded, a pair
bound again, a file named twice) is counted as the real run would store it, once, and a dry run
of a large log holds no more memory than a real one. Blocking: called off the event loop.
"""

from __future__ import annotations

import sqlite3
import urllib.parse
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from gateway.events import Binding, Conversion, Event, Touchpoint
from storage.migrate import refuse_newer_file
from storage.readonly import factory

CACHE_KIB = 4096
"""The temporary database's page cache: past it, its pages go to a temporary file."""

_SEEN = (
    "CREATE TABLE touchpoints (id TEXT PRIMARY KEY) WITHOUT ROWID;"
    "CREATE TABLE identities (id TEXT PRIMARY KEY, visitor_key TEXT, user_key TEXT,"
    " UNIQUE (visitor_key, user_key));"
    "CREATE TABLE conversions (id TEXT PRIMARY KEY, dedup_key TEXT UNIQUE);"
)
"""The rows found new so far (their keys only), one table each, unique as the store's are."""

_IN_STORE = {
    "touchpoints": "SELECT 1 FROM store.touchpoints WHERE id = ?1",
    "identities": "SELECT 1 FROM store.identities WHERE id = ?1 OR (visitor_key = ?2 AND user_key = ?3)",
    "conversions": "SELECT 1 FROM store.conversions WHERE id = ?1 OR dedup_key = ?2",
}
"""Whether the store has a row a real run's INSERT would skip as already there."""

_COLUMNS = {"touchpoints": "id", "identities": "id, visitor_key, user_key", "conversions": "id, dedup_key"}


def _key(event: Event) -> tuple[str, tuple[object, ...]] | None:
    """The table of a row a real run counts, and the values its dedup looks at (None: another)."""
    if type(event) is Touchpoint:
        return "touchpoints", (event.id,)
    if type(event) is Binding:
        return "identities", (event.id, event.visitor_key, event.user_key)
    if type(event) is Conversion:
        return "conversions", (event.id, event.dedup_key)
    return None


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
            db.executescript(_SEEN)
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
        for table, columns in _COLUMNS.items():
            marks = ", ".join(f"?{n + 1}" for n in range(columns.count(",") + 1))
            found = f" WHERE NOT EXISTS ({_IN_STORE[table]})" if table in tables else " WHERE true"
            self.sql[table] = f"INSERT OR IGNORE INTO main.{table} ({columns}) SELECT {marks}{found}"
        self.db = db

    def check(self, events: Sequence[Event]) -> None:
        """Count ``events`` (in file order) as new or already stored, as a real run would store
        them: a row found new makes a later one with its keys already stored."""
        assert self.db is not None
        rows: dict[str, list[tuple[object, ...]]] = {}
        for event in events:
            if (key := _key(event)) is not None:
                rows.setdefault(key[0], []).append(key[1])
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
