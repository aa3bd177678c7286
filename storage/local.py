"""The local event store: SQLite in WAL mode, one writer task, group commit.

Owns the write connection, the WAL checkpoint job beside it (``storage.checkpoint``,
started and stopped with the store) and the watch on its file (``storage.filewatch``).
``submit(events)`` queues events and returns a
future that resolves once their transaction has committed; the writer takes
everything queued while the previous commit ran (up to ``batch_size`` rows),
so load batches itself. A failed commit fails its futures: callers decide to
fail open; a batch that fails on one submit's data is retried submit by
submit, so one bad event does not cost its neighbours theirs, and a submit of
``submit_each`` (an import's batch) is retried in halves down to the parts the
store refuses, which are left out and given back. Should the
writer itself ever stop, every queued and in-flight future fails with
``StoreClosed`` and later submits fail at once: no caller waits forever.
Replaying an event id changes nothing, and a binding of a visitor to a user the
store has already (whichever process bound it) is not stored again. Reads live
in ``storage.queries`` on their own connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Hashable, Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import aiosqlite
import msgspec

from gateway.events import (
    EVENT_TYPES,
    BadEvent,
    Binding,
    Conversion,
    Event,
    PastReceipt,
    Receipt,
    Touchpoint,
    VerdictChange,
)
from gateway.logs import Throttled
from gateway.metrics import Metrics
from gateway.options import StorageOptions
from storage.access import full_disk, not_writable, unreadable, unwritable
from storage.checkpoint import Checkpointer
from storage.erased import MARK, Erased, erasure_mark
from storage.filewatch import FileWatch
from storage.migrate import migrate
from storage.readonly import read_only as read_only  # its home until 2026-12-07

log = logging.getLogger("gateway.storage")

MAX_VARIABLES = 32766
"""SQLite's cap on the variables of one statement: a multi-row INSERT holds this many values."""
MAX_ROWS_PER_STATEMENT = 512
"""Batches of one table up to this size go in one multi-row INSERT (23 variables a touchpoint)."""
MAX_QUEUED = 100_000
REFUSED_RUN = 32
"""Parts of a ``submit_each`` refused in a row, from its first, for the same reason, after which
the store tries the rest of it whole and, refused for that reason too, gives the submit up
(``AllRefused``): a store that refuses every row (a trigger, a constraint none meets) then costs
some 2·``REFUSED_RUN`` transactions a batch, not 2·n, and a batch of good lines with a few bad
ones is never given up (a run of 32 bad lines at its very start, and more after, would be)."""
"""Most events waiting for (or in) a commit; past it ``submit`` refuses at once."""
CHECKPOINT_PAGES = 32768
"""WAL pages (4 KiB) past which a commit itself copies the WAL back into the database file
(SQLite's ``wal_autocheckpoint``, default 1000): a safety net. A checkpoint inside a commit —
a copy and two fsyncs — holds up every landing queued behind it (each new visitor's landing adds
a page or two: its visitor-index entry lands on a random page), so the store's checkpoint job
(``storage.checkpoint``) copies the WAL beside the writer, and once it has copied every frame
the next commit starts the WAL again. Under a constant stream of commits the job's checkpoint
seldom ends between two of them, so the WAL grows to this size (128 MiB) and a commit's own
checkpoint then copies only the little the job had not yet: landings +2-10 % req/s in the
bench against 16384 pages and no job. A stalled job leaves the WAL no larger either."""
WAL_LIMIT = CHECKPOINT_PAGES * 4096
"""Bytes the WAL file is cut back to when the writer starts it again (SQLite's
``journal_size_limit``). SQLite keeps the file at the largest size it ever reached and reuses it
from the start: while a read holds an old snapshot (a report's query, a backup) no checkpoint can
start the WAL again, so it grows past ``CHECKPOINT_PAGES`` for as long as the read lasts (159 MiB
in a soak run with reports every 5 s over 2 workers' landings), and without a limit that peak
stayed on disk for the gateway's life."""
GATHER_TURNS = 3
"""Turns of the event loop the writer lets pass before it takes a batch (with ``batch_wait_ms``
0): requests whose bytes already arrived get to run their hooks and submit, and join this commit
rather than wait for the next. Each commit costs the event loop a thread hand-off and a wake-up
whatever its size; under load batches grew and landings gained 5-30 % req/s (~20 us less CPU
each) in the bench. An idle store loses microseconds: nothing else is ready to run."""
RETRY_PAUSE = 0.1
"""Seconds between two tries of a batch the database answered locked (each try has already
waited the connection's busy timeout): another process holds the write lock for now."""
BUSY_TIMEOUT_MS = 5000
"""How long a connection waits for another's write lock before SQLite says it is locked."""
LOCK_GAP = 0.15
"""Seconds a bulk writer (``LocalStore.lock_gap``: the import) leaves the write lock free after a
commit, before its next. SQLite gives the lock to no one in turn: a connection waiting for it
tries again after sleeping 1, 2, 5 … then 100 ms each time, so a writer that takes the lock again
within a millisecond of each commit (an import's back-to-back batches of 8,192 rows, each holding
it 0.3-1.7 s) kept a live gateway's commit out for its whole busy timeout. Longer than the
longest of those sleeps: a waiting commit tries once inside the gap."""
LOCK_PROBE = 2.0
"""While no other connection committed in its latest gap, a bulk writer leaves one only every
this many seconds: a store no one else writes costs the import little, and a live gateway that
begins to write waits at most this plus one of its transactions, well inside the busy timeout."""
LOCKED = "locked"
"""``LocalStore.failing``'s kind while commits wait on a lock another connection holds."""
READ_ONLY = "read-only store"
DISK_FULL = "disk full"
_KINDS = {
    sqlite3.SQLITE_READONLY: READ_ONLY,
    sqlite3.SQLITE_FULL: DISK_FULL,
    sqlite3.SQLITE_IOERR: "disk I/O error",
    sqlite3.SQLITE_CORRUPT: "database file corrupt",
    sqlite3.SQLITE_NOTADB: "not a database file",
    sqlite3.SQLITE_CANTOPEN: "cannot open the database file",
}
"""``LocalStore.failing``'s kind, shown by ``/healthz``, by SQLite's primary result code: the
operator's words, not ``OperationalError`` (SQLite's class for nearly every error), and fixed ones,
never an error's own message (``/healthz`` answers anyone)."""
_DISK_KINDS = frozenset(
    _KINDS[c]
    for c in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN)
)
"""The kinds that are the disk's or the file's, not a statement's (``disk_fault``)."""
OPEN_RETRY = 2.0
"""Seconds between tries to open a store that could not be opened at start for a full disk."""
_encode = msgspec.json.Encoder()


class _Table:
    """How one event type becomes a row: its table, its columns, and which columns hold JSON."""

    __slots__ = (
        "columns",
        "conflict",
        "json",
        "keys",
        "name",
        "needs",
        "nullable",
        "once",
        "params",
        "unique",
    )

    def __init__(self, cls: type[Event]) -> None:
        self.name = cls.table
        self.conflict: str = getattr(cls, "conflict", "DO NOTHING")
        self.unique: tuple[tuple[str, ...], ...] = getattr(cls, "unique", (("id",),))
        """The column sets the table's schema makes UNIQUE, its primary key first: a row that
        repeats one is skipped by the INSERT's ``ON CONFLICT`` (``tests/storage/test_unique_keys.py``
        holds them to the migrated schema)."""
        self.once: tuple[str, ...] = getattr(cls, "once", ())
        """Columns whose values a stored row may not share with a new one (a binding's visitor
        and user), which the schema does not constrain: such a row is not inserted (``insert_sql``)."""
        self.needs: tuple[str, str] | None = getattr(cls, "needs", None)
        """A column and the table whose row of that id a row needs (a verdict change's touchpoint),
        which the schema does not constrain: a row without it is not inserted (``insert_sql``)."""
        self.keys = self.unique + ((self.once,) if self.once else ())
        """Every column set a stored row may not share with a new one: what makes a row one the
        store has already, for the INSERT and for an import's dry run (``dedup_keys``)."""
        self.columns = [f.name for f in fields(cls)]
        hints = {f.name: str(f.type) for f in fields(cls)}
        for column, hint in hints.items():
            # An empty value is written as its text without encoding (``_params_function``): a
            # None would be stored as "{}" or "[]", not "null". Said at import, not in a row.
            if hint.startswith(("dict", "list")) and "None" in hint:
                raise TypeError(f"{cls.__name__}.{column}: a JSON column may not be None ({hint})")
        # The JSON columns, each with the text msgspec gives its empty value.
        self.json = {
            c: "{}" if hints[c].startswith("dict") else "[]"
            for c in self.columns
            if hints[c].startswith(("dict", "list"))
        }
        self.params = _params_function(self.columns, self.json)
        """The rows of some events, flattened into one multi-row INSERT's parameters."""
        self.nullable = sum(1 << i for i, c in enumerate(self.columns) if "None" in hints[c])
        """The columns that may hold None, as bits (column ``i``: ``1 << i``)."""

    def params_nulls(self, events: Sequence[Event], nulls: int) -> tuple[list[object], int]:
        """``params`` without the columns of ``nulls`` (as bits) that are None in every event,
        and those columns, for ``insert_sql``. Each row is checked for a value in them as it is
        flattened; a value found (seldom: the first click ID since start) and the columns with
        one are worked out the long way and dropped from ``nulls``."""
        out = _params_without(self.name, nulls)(events)
        if out is None:
            for i, column in enumerate(self.columns):
                if nulls >> i & 1 and any(getattr(e, column) is not None for e in events):
                    nulls &= ~(1 << i)
            out = _params_without(self.name, nulls)(events)
            assert out is not None
        return out, nulls

    def row(self, event: Event) -> list[object]:
        return self.params((event,))


@functools.lru_cache(maxsize=256)
def _params_without(name: str, nulls: int) -> Callable[[Iterable[Event]], list[object] | None]:
    """``_Table.params`` without the columns ``nulls`` names (as bits); it gives None at the first
    event with a value in one of them."""
    table = _BY_NAME[name]
    return _params_function(table.columns, table.json, nulls)


def _params_function(
    columns: list[str], json: dict[str, str], nulls: int = 0
) -> Callable[[Iterable[Event]], list[object]]:
    """``_Table.params`` for one table, written out as Python source and compiled once, as
    ``dataclasses`` writes ``__init__``: ``e.id, e.ts, …`` read as slots by the interpreter's
    specialised attribute loads, and each JSON column encoded in place (an empty one, most
    landings' ``reasons``, as the text msgspec gives it): a touchpoint's row 5,700 instructions
    against 10,600 by ``operator.attrgetter`` of its 25 columns and a second pass over the JSON
    columns. The source holds only our dataclasses' field names. With ``nulls`` (columns as
    bits), those columns are left out and the function gives None at the first event with a
    value in one of them (``_Table.params_nulls``)."""
    kept = [c for i, c in enumerate(columns) if not nulls >> i & 1]
    values = ", ".join(
        f"(_json(e.{c}).decode() if e.{c} else {json[c]!r})" if c in json else f"e.{c}" for c in kept
    )
    dropped = " or ".join(f"e.{c} is not None" for i, c in enumerate(columns) if nulls >> i & 1)
    source = (
        "def params(events):\n"
        "    out = []\n"
        "    for e in events:\n"
        + (f"        if {dropped}:\n            return None\n" if dropped else "")
        + f"        out.extend(({values},))\n"
        "    return out\n"
    )
    namespace: dict[str, Any] = {"_json": _encode.encode}
    exec(source, namespace)
    params: Callable[[Iterable[Event]], list[object]] = namespace["params"]
    return params


TABLES: dict[type, _Table] = {cls: _Table(cls) for cls in EVENT_TYPES}
_BY_NAME = {table.name: table for table in TABLES.values()}


def dedup_keys(cls: type) -> tuple[tuple[str, ...], ...]:
    """The column sets of which a row of type ``cls`` may not share one with a stored row (its
    schema's UNIQUE ones, then its ``once`` columns): a row that does is skipped by the store's
    INSERT (``insert_sql``), and counted as already there by ``gateway import --dry-run``
    (``storage.importdry``), which derives its checks from these."""
    return TABLES[cls].keys


def event_row(event: Event) -> list[object]:
    return TABLES[type(event)].row(event)


def insert_sql(cls: type, rows: int = 1, nulls: int = 0, guard: bool = False) -> str:
    """One INSERT of ``rows`` events of type ``cls``: in autocommit mode a single statement is a
    single transaction, so a batch of one table commits atomically in one round trip. The
    columns ``nulls`` names (as bits, ``_Table.params_nulls``) are written ``NULL`` in every row
    rather than bound. For a table with ``once`` columns (bindings), a row whose values there
    a stored row has is left out; the rows of one statement do not see each other, so give it
    one row per pair (``_insert_bindings``). For a table with ``needs`` (verdict changes), a row
    goes in only while the table it names has its row (``_insert_verdict_changes``). ``guard``:
    the rows go in only while the erasures stored are as the writer last read them (its last
    parameter, their ``MARK``); else none does, and the writer reads them again
    (``LocalStore._erasures_moved``)."""
    return _insert_sql(TABLES[cls].name, rows, nulls, guard)


@functools.lru_cache(maxsize=256)  # the set of NULL columns only shrinks: old texts age out
def _insert_sql(name: str, rows: int, nulls: int = 0, guard: bool = False) -> str:
    table = _BY_NAME[name]
    one = "(" + ", ".join("NULL" if nulls >> i & 1 else "?" for i in range(len(table.columns))) + ")"
    values = "VALUES " + ", ".join([one] * rows)
    # Read in the statement's own transaction, under the write lock: an erasure (any process's)
    # committed before it is seen, one after it comes after these rows and deletes them. An
    # uncorrelated condition, evaluated once a statement, two index seeks (some 80 of its
    # ~1,400 VM steps for 50 landings).
    unerased = f"({MARK}) = ?"
    if table.needs:
        # Read in the statement's own transaction too: a touchpoint written before it in the
        # same transaction is there, one deleted before it by any process is not. A SEARCH of
        # the other table's primary key a row.
        column, other = table.needs
        values = (
            f"SELECT * FROM ({values}) AS given"
            f" WHERE EXISTS (SELECT 1 FROM {other} WHERE id = given.column{table.columns.index(column) + 1})"
            + (f" AND {unerased}" if guard else "")
        )
    elif table.once:
        # Checked and inserted in one statement: SQLite's write lock serialises it across
        # processes (every worker, the next gateway on the same file), where a look first and
        # an insert after would race. Each check is a SEARCH of an index led by the first
        # ``once`` column (identities_visitor, covering the user key too).
        same = " AND ".join(f"{c} = given.column{table.columns.index(c) + 1}" for c in table.once)
        values = (
            f"SELECT * FROM ({values}) AS given WHERE NOT EXISTS (SELECT 1 FROM {table.name} WHERE {same})"
            + (f" AND {unerased}" if guard else "")
        )
    elif guard:
        values = f"SELECT * FROM ({values}) WHERE {unerased}"
    return (
        f"INSERT INTO {table.name} ({', '.join(table.columns)}) {values}"
        # Only a row repeating a UNIQUE column set (``_Table.unique``: an id, a dedup key) is
        # skipped. OR IGNORE would also drop, silently and with a successful commit, a row that
        # breaks NOT NULL or CHECK.
        + f" ON CONFLICT {table.conflict}"
    )


@dataclass(slots=True)
class _Item:
    """One submit: its events, the future its caller awaits, and when that wait must end."""

    events: Sequence[Event]
    future: asyncio.Future[Any]
    deadline: float
    groups: Sequence[Sequence[Event]] | None = None
    """Set by ``submit_groups``: each group goes in only while its rows are new."""
    results: list[bool] | None = None
    parts: Sequence[Hashable] | None = None
    """Set by ``submit_each``: the part of each event (adjacent equal values: one part)."""
    refused: list[tuple[int, int, Exception]] | None = None
    """Of a ``submit_each``, the parts the store refused: their events' range, and why."""
    withdraw: bool = False
    """Set by ``write(…, withdraw=True)``: not committed by its deadline, it is taken out of the
    queue rather than left to be written later."""
    late: asyncio.Future[BaseException | None] | None = None
    """Once its wait timed out (``CommitTimeout.outcome``): how the commit ended after all."""
    erased: Callable[[Sequence[Event]], None] | None = None
    """Told, once its commit went through, of its events left out as late rows of an erased
    user or visitor (``submit(…, erased=…)``)."""
    told: set[int] | None = None
    """The ``id()`` of its events already left out as late rows, told and counted (None: none):
    a ``submit_each`` committed in parts and tried again whole (a part's commit waited on the
    lock past the busy timeout) leaves its committed parts' late rows out again, and they are
    told and counted once. Shared with the parts' own items (``_each``)."""


# Errors caused by what was written rather than by the database: worth isolating per submit.
_DATA_ERRORS = (
    sqlite3.IntegrityError,
    sqlite3.DataError,  # a text or blob past SQLite's length limit
    OverflowError,  # an integer past SQLite's 64 bits
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
    msgspec.EncodeError,
    TypeError,
    ValueError,
)

HALT = "halt: "
"""A trigger's ``RAISE`` whose message starts so refuses the whole submit, not a row of it (an
import whose run was undone while it ran, ``storage.imports``): it fails whole, never split."""


def _several_parts(item: _Item) -> bool:
    """Whether a failure of ``item`` on its data is committed again in parts (``_each``)."""
    parts = item.parts
    return parts is not None and any(parts[i] != parts[i - 1] for i in range(1, len(parts)))


def _data_error(error: BaseException | None) -> bool:
    """Caused by what was written (worth isolating per submit, per part), not a halt (``HALT``)."""
    return isinstance(error, _DATA_ERRORS) and not str(error).startswith(HALT)


def _read_only(error: BaseException) -> bool:
    """SQLite's READONLY, whatever the extended code: a file, folder or mount it may not write,
    or a connection made ``query_only``."""
    code = getattr(error, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF == sqlite3.SQLITE_READONLY


def failure_kind(error: BaseException, full: bool) -> str:
    """What ``/healthz`` says a failing commit's error is (``_KINDS``); one where the disk is
    ``full`` (``full_disk``), but for a read-only store, is a full disk, as SQLite may say an
    I/O error then. Else the error's class."""
    kind = _kind(error)
    if isinstance(error, StoreUnopened) or (full and kind != READ_ONLY):
        return DISK_FULL
    return kind or type(error).__name__


def disk_fault(error: BaseException) -> str | None:
    """What SQLite's ``error`` says of the disk or the file under the store, in ``/healthz``'s
    words (``_KINDS``: full, an I/O error, read-only, cannot open); None for any other error (a
    statement's own, a bug), whose traceback is worth its lines."""
    kind = _kind(error)
    return kind if kind in _DISK_KINDS else None


def _kind(error: BaseException) -> str | None:
    """``_KINDS``' word for SQLite's primary result code of ``error``, if it has one."""
    code = getattr(error, "sqlite_errorcode", None)
    return _KINDS.get(code & 0xFF) if isinstance(code, int) else None


def locked(error: BaseException | None) -> bool:
    """SQLite's BUSY or LOCKED, whatever the extended code: another connection holds the write
    lock (a ``sqlite3`` shell in a transaction, a backup, another process past the busy
    timeout). Nothing is wrong with the batch or the disk: the same batch goes in later."""
    code = getattr(error, "sqlite_errorcode", None)
    return (
        isinstance(error, sqlite3.OperationalError)
        and isinstance(code, int)
        and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    )


LOCK_HOLDERS = "the live gateway in a long write, or a sqlite3 shell left in a transaction"
"""Who holds the store's write lock long, as the commands' messages name them."""


def lock_hint(error: BaseException | None) -> str:
    """For a one-shot command's failure: when ``error`` is another connection's write lock held
    past the busy timeout, who may hold it and what to do (SQLite says only "database is
    locked"); else nothing."""
    if not locked(error):
        return ""
    return (
        f" (another process held the store's write lock past the {BUSY_TIMEOUT_MS // 1000} s busy"
        f" timeout: {LOCK_HOLDERS}); run the command again once it is released"
    )


AS_OWNER = "run the command as the user the gateway runs as"


def access_hint(error: BaseException | None, path: Path) -> str:
    """For a one-shot command's failure on the store ``path``: when SQLite refused it for this
    user's rights, which file or folder, the user, and what to do; else nothing. SQLite says
    only "attempt to write a readonly database", and of a read too: a store in WAL mode is read
    through its ``-shm`` file, which the first connection makes beside it, so while no gateway
    has the store open (none there) a user who may not write its folder cannot read it."""
    code = getattr(error, "sqlite_errorcode", None)
    if not isinstance(code, int) or code & 0xFF not in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN):
        return ""
    uid = os.geteuid()
    blocked = unreadable(path)
    if blocked is not None:
        return f" ({blocked} is not readable to uid {uid}); {AS_OWNER}"
    folder = path.parent
    if not Path(f"{path}-shm").exists() and folder.exists() and not os.access(folder, os.W_OK):
        why, fix = not_writable(folder, f"{AS_OWNER}, or while the gateway runs")
        return (
            f" ({why}, and SQLite reads the store through a -shm file it makes there while no"
            f" gateway has the store open); {fix}"
        )
    blocked = unwritable(path) if code & 0xFF == sqlite3.SQLITE_READONLY else None
    if blocked is None:
        return ""
    why, fix = not_writable(blocked, AS_OWNER)
    return f" ({why}); {fix}"


def store_hint(error: BaseException | None, path: Path, key: str = "storage.path") -> str:
    """A one-shot command's words on why the store ``path`` failed it, beyond SQLite's: a write
    lock held too long (``lock_hint``), rights this user lacks (``access_hint``), a schema
    older than this gateway's that the command does not migrate (``older_hint``), or a file
    that is no SQLite database at all (``not_sqlite_hint``; ``key``: the setting naming it)."""
    return (
        lock_hint(error) or access_hint(error, path) or older_hint(error, path) or not_sqlite_hint(error, key)
    )


def not_sqlite_hint(error: BaseException | None, key: str = "storage.path") -> str:
    """Of a file SQLite cannot read as a database (a log, a config, a copy cut short): which
    setting names it and what to do. Until 2026-12-07 SQLite's "file is not a database" alone."""
    if getattr(error, "sqlite_errorcode", None) != sqlite3.SQLITE_NOTADB:
        return ""
    return f" (not a SQLite file: point {key} at the store the gateway writes)"


def older_hint(error: BaseException | None, path: Path) -> str:
    """Of a table or column the store lacks, when an older gateway left it (installed, not yet
    started: see Upgrading in README.md): its version and how it gets this gateway's. A command
    that only reads (a report, a dry run) does not migrate it; until 2026-12-06 SQLite's ``no
    such column: t.channel`` was all it said."""
    if not isinstance(error, sqlite3.OperationalError):
        return ""
    if not any(word in str(error) for word in ("no such table", "no such column", "has no column")):
        return ""
    from storage.migrate import migrations

    try:
        with contextlib.closing(read_only(path)) as db:
            current = int(db.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.Error:
        return ""
    newest = migrations()[-1][0]
    if not 0 < current < newest:
        return ""
    return (
        f" (the store is at schema version {current}, older than this gateway's, {newest}: `gateway"
        " run` migrates it when it starts, and so does a command that writes to it without"
        " --dry-run, such as `gateway erase`; see Upgrading)"
    )


class CommitTimeout(Exception):
    """A submit was not committed within ``storage.max_wait_ms``; it may still be, later.
    ``outcome`` settles when it is: with None once committed, or with the error that refused
    it (a result, not an exception: no one need look at it), so that what must know of a
    refusal (``gateway.commits``) learns of one that came after the timeout too."""

    def __init__(self, message: str, outcome: asyncio.Future[BaseException | None]) -> None:
        super().__init__(message)
        self.outcome = outcome


class StoreMoved(Exception):
    """The store's file was deleted or replaced under the running gateway (``storage.filewatch``)."""


class StoreUnopened(Exception):
    """The store could not be opened at start, its disk full: commits fail with this until a
    try to open it (every ``OPEN_RETRY`` seconds) goes through."""


class StoreClosed(Exception):
    """The store is not accepting events (closed, overloaded, or its writer stopped)."""


class _RefusedAlike(Exception):
    """Inside ``LocalStore._each``: its first ``REFUSED_RUN`` parts were refused alike."""


class AllRefused(Exception):
    """The store refused a whole ``submit_each`` (``REFUSED_RUN``): its first ``REFUSED_RUN``
    parts one by one and the rest together, all for one reason, ``error`` (the first part's);
    ``parts``: how many it had. Nothing of it was stored."""

    def __init__(self, error: Exception, parts: int) -> None:
        super().__init__(f"all {parts} parts refused: {error}")
        self.error = error
        self.parts = parts


async def store_instance(db: aiosqlite.Connection) -> str | None:
    """The store's own random identity (local migration 0011): it moves with the file, and a
    store made anew has another. None in a store not migrated that far."""
    try:
        async with db.execute("SELECT value FROM store_identity WHERE name = 'instance'") as cursor:
            row = await cursor.fetchone()
    except sqlite3.OperationalError:  # no such table
        return None
    return str(row[0]) if row else None


def _null(value: None) -> None:
    """None's adapter: bound as NULL, as without one (``bind_nulls_directly``)."""
    return None


def bind_nulls_directly() -> None:
    """Register an adapter for None in ``sqlite3``'s (process-wide) registry. Without one,
    ``sqlite3`` looks for every None parameter's adapter the long way — ``__adapt__`` on its
    protocol type, ``__conform__`` on None — raising and clearing an AttributeError each time:
    ~2,000 instructions a None on the writer thread, and a plain tagged landing binds 9 (term,
    click ID, country, …). Found in the registry, None is bound as the same NULL."""
    sqlite3.register_adapter(type(None), _null)


async def rollback(db: aiosqlite.Connection) -> None:
    """Undo the open transaction, if any, in an ``except`` that goes on to re-raise. A statement
    whose await was cancelled (a task stopped at shutdown) runs on in aiosqlite's thread: a COMMIT
    may then end the transaction before this ROLLBACK runs, and its "no transaction is active"
    must not take the place of the exception being handled (a ``CancelledError`` so lost kept a
    stopped sync task retrying, and its shutdown waiting)."""
    if db.in_transaction:
        with contextlib.suppress(sqlite3.OperationalError):
            await db.execute("ROLLBACK")


async def connect(path: Path, synchronous: str = "normal") -> aiosqlite.Connection:
    """A connection with the pragmas every connection needs (WAL, busy timeout), and deleted
    or moved bytes zeroed (``secure_delete``): an erased or purged row, or the old copy a page
    split leaves, must not stay readable in the file, whatever the SQLite build's default
    (Debian's has it on already: the benchmarks' figures include its cost)."""
    bind_nulls_directly()
    pending = aiosqlite.connect(path, isolation_level=None)
    try:
        db = await pending
    except BaseException:
        # aiosqlite then stops its worker thread with a future it never awaits: the thread later
        # reports to this loop, and a loop closed by then (asyncio.run after the error) makes it
        # print "Exception in thread … Event loop is closed". Wait for the thread to end.
        thread = getattr(pending, "_thread", None)
        if isinstance(thread, threading.Thread) and thread.is_alive():
            await asyncio.to_thread(thread.join, 5.0)
        raise
    try:
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        await db.execute("PRAGMA secure_delete = ON")
    except BaseException:
        await db.close()  # its thread would otherwise keep the process alive
        raise
    return db


def _settle(batch: list[_Item], error: BaseException | None) -> None:
    for item in batch:
        future = item.future
        if future.done():
            # Its wait timed out: the commit's end is told all the same (until 2026-12-07 a
            # refusal after the timeout told no one, and a refused binding stayed remembered).
            if item.late is not None and not item.late.done():
                item.late.set_result(error)
            continue
        if error is None:
            future.set_result(item.results if item.parts is None else item.refused or [])
        else:
            future.set_exception(error)


async def _insert_conversions(
    db: aiosqlite.Connection, events: Sequence[Event], mark: int | None = None
) -> tuple[list[tuple[str, bool]], int]:
    """Insert conversions (inside the caller's transaction, or, up to ``MAX_ROWS_PER_STATEMENT``
    of them, as one autocommit statement, ``mark`` its guard: ``insert_sql``); for each one a
    conversion rule fired, ``(rule, recorded)``: False when the store skipped it as one it
    already had (its order ID or dedup window taken: a retried checkout), and how many went in.
    The caller counts them once the transaction has committed (``gateway_conversions_total``,
    ``gateway_conversions_duplicate_total``)."""
    inserted = await _inserted(db, Conversion, events, mark)
    counted = [(e.rule, e.id in inserted) for e in events if isinstance(e, Conversion) and e.origin == "rule"]
    return counted, len(inserted)


async def _insert_bindings(
    db: aiosqlite.Connection, events: Sequence[Event], mark: int | None = None
) -> tuple[list[str], int]:
    """Insert bindings (inside the caller's transaction, or, up to ``MAX_ROWS_PER_STATEMENT`` of
    them, as one autocommit statement, ``mark`` its guard): each pair once, the first of
    ``events`` to bind it, and only where the store has none yet. The rules of the identity-rule
    bindings that went in, for the caller to count once the transaction has committed
    (``gateway_bindings_total``), and how many went in."""
    table = TABLES[Binding]
    first: dict[tuple[object, ...], Event] = {}
    for e in events:
        first.setdefault(tuple(getattr(e, c) for c in table.once), e)
    rows = list(first.values())
    inserted = await _inserted(db, Binding, rows, mark)
    bound = [e.rule for e in rows if isinstance(e, Binding) and e.origin == "rule" and e.id in inserted]
    return bound, len(inserted)


async def _inserted(
    db: aiosqlite.Connection, kind: type, rows: Sequence[Event], mark: int | None = None
) -> set[str]:
    """Insert ``rows`` of ``kind`` in statements of as many as SQLite takes; the ids of those
    that went in (a row the table's conflict rules skipped is not among them). ``mark``: each
    statement guarded by it (``insert_sql``)."""
    table = TABLES[kind]
    per_statement = min(MAX_ROWS_PER_STATEMENT, MAX_VARIABLES // len(table.columns) - 1)
    inserted: set[str] = set()
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        sql = insert_sql(kind, len(chunk), guard=mark is not None) + " RETURNING id"
        params = table.params(chunk)
        if mark is not None:
            params.append(mark)
        async with db.execute(sql, params) as cur:
            inserted.update(row[0] for row in await cur.fetchall())
    return inserted


async def _insert_verdict_changes(db: aiosqlite.Connection, changes: Sequence[Event]) -> list[Event]:
    """Insert verdict changes (inside the caller's transaction, or, up to
    ``MAX_ROWS_PER_STATEMENT`` of them, as one autocommit statement), each only while the store
    has its touchpoint: the INSERT's own check (``insert_sql``), so a landing written before it
    in the same transaction counts, and one any process deleted before it does not. Those it left
    out for that: a late re-score (robots.txt fetched next, an analyst's verdict sent meanwhile)
    of a landing erased since, which would otherwise be stored, an orphan naming the erased
    landing (its id, its reasons), and synced on. No erasure guard: a verdict change names no
    one's key, only its touchpoint, which the check reads in the statement's transaction."""
    inserted = await _inserted(db, VerdictChange, changes)
    missed: list[Event] = [e for e in changes if isinstance(e, VerdictChange) and e.id not in inserted]
    if not missed:
        return []
    # Seldom: left out by the check, or skipped as one the store has (a batch tried again after
    # its commit went through), which is no late row while its touchpoint is there.
    ids = list({e.id for e in missed if isinstance(e, VerdictChange)})
    repeats: set[str] = set()
    for start in range(0, len(ids), MAX_VARIABLES):
        chunk = ids[start : start + MAX_VARIABLES]
        sql = (
            "SELECT v.id FROM verdict_changes v JOIN touchpoints t ON t.id = v.touchpoint_id"
            f" WHERE v.id IN ({','.join('?' for _ in chunk)})"
        )
        async with db.execute(sql, chunk) as cursor:
            repeats.update(row[0] for row in await cursor.fetchall())
    return [e for e in missed if isinstance(e, VerdictChange) and e.id not in repeats]


def _without(events: Sequence[Event], late: Sequence[Event]) -> list[Event]:
    gone = {id(e) for e in late}
    return [e for e in events if id(e) not in gone]


class LocalStore:
    def __init__(self, path: Path, options: StorageOptions, metrics: Metrics) -> None:
        self.path = path
        self.options = options
        self.metrics = metrics
        self._commit_failed = Throttled(log, logging.ERROR)
        self._commit_waits = Throttled(log, logging.WARNING)
        self.failing: tuple[float, str] | None = None
        """While the latest commit failed on the database (disk full, read-only, I/O), not on
        one submit's data: since when (Unix time) and the latest error's kind (its message is
        logged, not shown: ``/healthz`` answers anyone), ``LOCKED`` while another connection
        holds the write lock (the batch is kept and tried again); None once one commits."""
        self._pending: deque[_Item] = deque()
        self._nulls = {kind: table.nullable for kind, table in TABLES.items()}
        self._erased = Erased()
        """Every erased key and when (``storage.erased``): a row of one dated at or before is a
        late row, left out of every commit (``_transaction``)."""
        self._erased_mark = 0
        """The erasures' ``MARK`` when ``_erased`` was read: every commit inserts only while it
        still is (``insert_sql``'s guard), so an erasure stored meanwhile by any process (the
        admin API's worker, ``gateway erase``, the central sync) is read before rows go in."""
        self.names_erased: Callable[[BadEvent, Collection[str]], bool] | None = None
        """Whether a bad event names one of some erased keys (its body and reason opened and
        searched as an erasure searches them: ``storage.erasure.names_erased``), set by the
        signed events' intake, which holds the keys; None: bad events are stored unopened. A bad
        event received at or before the erasure of a key it names and committed after it (a
        delivery in flight at the erasure) is a late row (``_late_bad``)."""
        """Per event type, the columns None in every row it has written (shrinks; ``_transaction``)."""
        self._inflight: list[_Item] = []
        self._wakeup = asyncio.Event()
        self._queued = 0  # events submitted and not yet settled (pending + in flight)
        self._db: aiosqlite.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._opener: asyncio.Task[None] | None = None  # ``_open_later``, while the disk is full
        self._closing = False
        self._refusal = "the store is closed"
        """What a submit is told once the store takes no more: closed, or why its writer stopped."""
        self._stopped_by: str | None = None  # the error the writer stopped on
        self._save_wal_due = False  # the -wal went: copy what the open one holds (``_save_wal``)
        self._gap_at = -LOCK_PROBE  # the event loop's time of the latest gap (``_leave_lock``)
        self._others_write = False  # another connection committed in that gap
        self._max_wait = options.max_wait_ms / 1000
        self._sweeper: asyncio.TimerHandle | None = None
        self.checkpointer = Checkpointer(path, metrics)
        self.watch = FileWatch(path, self._moved)
        self.wal_limit = WAL_LIMIT  # bytes; set before ``open``
        self.lock_gap = 0.0
        """Seconds the writer leaves the write lock free after a commit with more queued (``LOCK_GAP``
        for a bulk writer, the import; 0, the gateway's: its commits are short)."""
        # Read when /metrics is scraped, rather than set on every submit and commit; under a
        # supervisor /metrics reads every worker's files instead, so there it is set.
        self._queue_gauge = metrics.store_queue if metrics.multiprocess_dir else None
        if self._queue_gauge is None:
            metrics.store_queue.set_function(lambda: self._queued)

    async def open(self, serving: bool = False) -> None:
        """Opens (and migrates) the store and starts its writer. ``serving``: for a host serving
        a site, which fails open: an existing store that cannot be opened for its full disk is
        tried again every ``OPEN_RETRY`` seconds, its commits failing meanwhile, rather than
        raise (as it does for a command)."""
        await asyncio.to_thread(self.path.parent.mkdir, parents=True, exist_ok=True)
        try:
            self._db = await self._connect()
        except sqlite3.Error as err:
            full = await asyncio.to_thread(full_disk, self.path) if serving else None
            if full is None or not await asyncio.to_thread(self.path.is_file):
                raise
            # Fail open: a restart while the disk is full (a deploy, a crash) must not take the
            # site down for a tracking fault. Until 2026-12-07 it refused to start, saying
            # "not a SQLite database: disk I/O error" (opening a WAL store makes its -shm).
            log.error(
                "the store %s (storage.path) cannot be opened: its disk is full (%s; SQLite: %s):"
                " pages are served, but no event is recorded until space is freed there; the"
                " gateway tries to open it again every %g s",
                self.path,
                full,
                err,
                OPEN_RETRY,
            )
            self.failing = (time.time(), DISK_FULL)
            self._opener = asyncio.create_task(self._open_later(), name="store-open")
        blocked = await asyncio.to_thread(unwritable, self.path) if self._db is not None else None
        if blocked is not None:
            # SQLite opened it read-only without a word: said now, not at the first landing.
            why, fix = await asyncio.to_thread(
                not_writable,
                blocked,
                "let the user the gateway runs as write to it (and to its folder, its -wal and -shm files)",
            )
            log.error(
                "the store %s is read-only to this process (%s): pages are served, but no event is"
                " recorded; %s, then restart the gateway",
                self.path,
                why,
                fix,
            )
            self.failing = (time.time(), READ_ONLY)
        self._task = asyncio.create_task(self._writer(), name="store-writer")
        self._task.add_done_callback(self._writer_stopped)
        self.checkpointer.start()
        await self.watch.start(opened=self._db is not None)
        self._sweep()

    async def _connect(self, *, announce: bool = False) -> aiosqlite.Connection:
        """The write connection, its pragmas set and the store migrated (``announce``: a
        migration said in the log, as ``gateway run``'s start says it)."""
        db = await connect(self.path, self.options.synchronous)
        try:
            await db.execute(f"PRAGMA wal_autocheckpoint = {CHECKPOINT_PAGES}")
            await db.execute(f"PRAGMA journal_size_limit = {self.wal_limit}")
            await migrate(db, announce=announce)
            self._erased_mark, self._erased = await Erased.load(db)
        except BaseException:
            await db.close()  # its thread would otherwise keep the process alive
            raise
        return db

    async def _open_later(self) -> None:
        """Tries to open the store every ``OPEN_RETRY`` seconds until it opens (space freed on
        its disk); meanwhile every commit fails with ``StoreUnopened``, its page served."""
        said = ""
        while self._db is None and not self._closing:
            await asyncio.sleep(OPEN_RETRY)
            try:
                # The start's migration could not write on the full disk: this one is the
                # upgrade, said as the start says it (until 2026-12-08 without a word).
                db = await self._connect(announce=True)
            except sqlite3.Error:
                continue
            except Exception as err:  # a newer gateway's schema meanwhile, …
                # Said (once per reason) and tried again: until 2026-12-07 it ended the tries
                # without a word, /healthz saying "disk full" for good.
                self.failing = (self.failing[0] if self.failing else time.time(), type(err).__name__)
                if str(err) != said:
                    said = str(err)
                    log.error(
                        "the store %s (storage.path) still cannot be opened, its disk has room now: %s;"
                        " pages are served, but no event is recorded; the gateway tries again every %g s",
                        self.path,
                        err,
                        OPEN_RETRY,
                    )
                continue
            if self._closing:
                await db.close()
                return
            self._db = db
            await self.watch.watch_wal()
            log.info("the store %s (storage.path) is open: its disk has room again", self.path)

    async def on_writer(self, sql: str, *params: object, script: bool = False) -> list[tuple[Any, ...]]:
        """Run ``sql`` (``script``: several statements) on the write connection, its rows, while no
        submit is queued or in flight: an import's temporary triggers before its first submit, and
        its closing statement after its last commit (``storage.imports``)."""
        assert self._db is not None and not self._queued, "on_writer() while the writer is idle"
        if script:
            await self._db.executescript(sql)
            return []
        async with self._db.execute(sql, params) as cursor:
            return [tuple(row) for row in await cursor.fetchall()]

    def _sweep(self) -> None:
        """Fail the wait of every submit past its deadline (``max_wait_ms``), then sleep until the
        next deadline (a quarter of ``max_wait_ms`` while nothing waits).

        The events stay queued and are still written: only the caller stops waiting, so a slow
        disk delays no response by more than ``max_wait_ms``. One timer for the whole store
        costs less than one per request. (Until 2026-12-05 it woke every quarter of
        ``max_wait_ms`` whatever the deadlines, so a wait lasted up to 1¼ of it.)
        """
        loop = asyncio.get_running_loop()
        now = loop.time()
        upcoming = now + max(self._max_wait / 4, 0.01)
        withdrawn: list[_Item] = []
        for item in itertools.chain(self._inflight, self._pending):
            if item.deadline > now:
                upcoming = item.deadline  # deadlines grow in queue order: the earliest left
                break
            if item.future.done():
                continue
            if not item.withdraw:
                item.late = loop.create_future()
                item.future.set_exception(
                    CommitTimeout(f"not committed within {self._max_wait:g} s", item.late)
                )
            elif not any(item is flying for flying in self._inflight):  # in flight: ``_withdraw_late``
                withdrawn.append(item)
        if withdrawn:
            gone = {id(item) for item in withdrawn}
            kept = [item for item in self._pending if id(item) not in gone]
            self._pending.clear()
            self._pending.extend(kept)
            self._withdrawn(withdrawn)
        if not self._closing:
            self._sweeper = loop.call_at(upcoming, self._sweep)

    async def close(self) -> None:
        """Stop accepting, commit everything queued, close."""
        if self._closing:
            return
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._opener is not None:
            self._opener.cancel()
            await asyncio.gather(self._opener, return_exceptions=True)
        if self._task is not None:
            self._wakeup.set()
            # wait() rather than await: a writer that died has already failed its futures
            # and logged why; closing must still release the connection.
            await asyncio.wait([self._task])
        # Its connection closes first: the writer's, the last, then copies what is left of the
        # WAL into the database file and removes it.
        await self.watch.close()
        await self.checkpointer.close()
        if self._db is not None:
            await self._db.close()
        # What the throttled lines held back, their next line never to come (nothing said when
        # none was: the outage's lines said it all).
        if self._commit_failed.holding or self._commit_waits.holding:
            if self.failing is not None:
                log.warning(
                    "the store stops while its commits fail or wait, for %.1f s now%s",
                    time.time() - self.failing[0],
                    self._held_back(),
                )
            else:
                log.warning("the store stops%s", self._held_back())

    def _held_back(self) -> str:
        """What the throttled failure lines held back since their last line, for the line that
        ends the outage (or the stop's) to say: "" when nothing was."""
        failed, lost = self._commit_failed.take_held()
        waits, _ = self._commit_waits.take_held()
        parts = []
        if failed:
            parts.append(f"{failed} more failed commit{'s' if failed != 1 else ''} ({lost} events lost)")
        if waits:
            parts.append(f"{waits} more wait{'s' if waits != 1 else ''} on the write lock")
        if not parts:
            return ""
        return "; not logged since the last such line: " + " and ".join(parts)

    @property
    def accepting(self) -> bool:
        """True while the writer runs and the store takes events."""
        return not self._closing and self._task is not None and not self._task.done()

    @property
    def closed(self) -> bool:
        """``close`` was called (a shutdown, a hot reload's end of the mitmproxy host): not
        accepting, as when the writer stopped on an error, but on purpose, its caller done."""
        return self._closing

    def submit(
        self, events: Sequence[Event], erased: Callable[[Sequence[Event]], None] | None = None
    ) -> asyncio.Future[None]:
        """Queue events; the future resolves when they are committed (or fails with the reason).

        An event whose id (or, for a conversion, dedup key) is already stored is skipped, and so
        is a late row: a touchpoint, binding or conversion of a user or visitor erased at or
        after its time (a request in flight at the erasure), counted in
        ``gateway_erased_late_rows_total``; ``erased`` is told of those of ``events`` once the
        commit went through.
        The events are those ``events`` holds now: a host appends its response hooks' events
        to the list it submitted and submits them apart, and a queue holding the list itself
        wrote them twice, counting the conversions twice and the queue below zero.
        """
        future = self._queue(tuple(events), None)
        if erased is not None and not future.done():  # queued now, last
            self._pending[-1].erased = erased
        return future

    def submit_each(
        self,
        events: Sequence[Event],
        parts: Sequence[Hashable],
        erased: Callable[[Sequence[Event]], None] | None = None,
    ) -> asyncio.Future[list[tuple[int, int, Exception]]]:
        """Queue events in parts (``parts``: each event's; adjacent events of the same part — an
        imported line's rows — go in together or not at all), committed together while they can
        be. When the commit fails on their data, they are committed in halves, and a half that
        fails in halves again, in order, down to single parts: a part the store refuses (a value
        SQLite cannot hold, a constraint) is left out and the others go in, once. The future gives
        the parts left out, as the range of their events (``start, end``) and the error; it fails
        as ``submit``'s does when the database itself fails (locked, disk full, moved). Late rows
        of erased people are left out, ``erased`` told of them, as by ``submit``."""
        future = self._queue(tuple(events), None, parts)
        if erased is not None and not future.done():
            self._pending[-1].erased = erased
        return future

    def submit_groups(self, groups: Sequence[Sequence[Event]]) -> asyncio.Future[list[bool]]:
        """Queue groups of events, committed together; the future gives, per group, whether it
        went in. A group is written row by row and goes in whole or not at all: at its first
        row that is already stored (a receipt seen before, a conversion's dedup key) the rows
        written before it are undone. Put the receipt first (the cheapest to find taken)."""
        events = [e for group in groups for e in group]
        return self._queue(events, groups)

    def _queue(
        self,
        events: Sequence[Event],
        groups: Sequence[Sequence[Event]] | None,
        parts: Sequence[Hashable] | None = None,
    ) -> asyncio.Future[Any]:
        # Every landing's: the loop looked up once, ``accepting`` spelled out (a property call
        # less), the item made once it is queued.
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        task = self._task
        if self._closing or task is None or task.done():  # not ``accepting``
            future.set_exception(StoreClosed(self._refusal))
        elif not events:  # nothing to commit: done (a batch of none failed, and marked the store failing)
            future.set_result([] if parts is not None else None if groups is None else [True] * len(groups))
        elif self._queued + len(events) > MAX_QUEUED:
            future.set_exception(StoreClosed(f"the write queue is full ({MAX_QUEUED} events)"))
        else:
            self._queued += len(events)
            if self._queue_gauge is not None:
                self._queue_gauge.set(self._queued)
            self._pending.append(_Item(events, future, loop.time() + self._max_wait, groups, None, parts))
            self._wakeup.set()
        return future

    async def write(self, events: Sequence[Event], *, withdraw: bool = False) -> None:
        """Submit and wait for the commit. ``withdraw``: a submit not committed within
        ``max_wait_ms`` is taken back rather than left queued, so that its ``CommitTimeout``
        means nothing of it is or will be stored (an admin API write, whose client is told to
        try again: left queued, it was written too, the retry then twice). One that is being
        committed then is waited for: taken back if that attempt finds the store locked, else
        stored (late, but as answered)."""
        future = self.submit(events)
        if withdraw and not future.done():  # queued now, last (not ``_queue``'s to ask: every landing's)
            self._pending[-1].withdraw = True
        await future

    def _withdrawn(self, items: Sequence[_Item]) -> int:
        """Items taken out of the queue past their deadline (``write(…, withdraw=True)``): their
        rows no longer queued, their callers told nothing was stored. Their rows."""
        rows = sum(len(item.events) for item in items)
        self._queued -= rows
        if self._queue_gauge is not None:
            self._queue_gauge.set(self._queued)
        for item in items:
            if not item.future.done():
                said = f"not committed within {self._max_wait:g} s, and withdrawn: nothing stored"
                outcome: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
                outcome.set_result(StoreClosed(said))  # settled: it never will be committed
                item.future.set_exception(CommitTimeout(said, outcome))
        return rows

    def _withdraw_late(self, rows: int) -> int:
        """Between two attempts at a batch the store refused as locked: take out the items past
        their deadline that ask to be withdrawn (``write(…, withdraw=True)``); the rows left."""
        now = asyncio.get_running_loop().time()
        late = [item for item in self._inflight if item.withdraw and item.deadline <= now]
        if not late:
            return rows
        gone = {id(item) for item in late}
        self._inflight = [item for item in self._inflight if id(item) not in gone]
        return rows - self._withdrawn(late)

    def _take(self) -> tuple[list[_Item], int]:
        """The next batch: at least one submit, then more while they fit in ``batch_size`` rows.

        One submit is never split, so a request's events commit (or fail) together.
        """
        first = self._pending.popleft()
        batch, rows = [first], len(first.events)
        while self._pending and rows + len(self._pending[0].events) <= self.options.batch_size:
            item = self._pending.popleft()
            batch.append(item)
            rows += len(item.events)
        return batch, rows

    async def _writer(self) -> None:
        try:
            while True:
                if self._save_wal_due:
                    await self._save_wal()
                if not self._pending:
                    if self._closing:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                if not self._closing and self._queued < self.options.batch_size:
                    if self.options.batch_wait_ms:
                        await asyncio.sleep(self.options.batch_wait_ms / 1000)
                    else:
                        for _ in range(GATHER_TURNS):
                            await asyncio.sleep(0)
                    if not self._pending:
                        # Withdrawn meanwhile at their deadline (``write(…, withdraw=True)``: a
                        # ``batch_wait_ms`` longer than ``max_wait_ms``): nothing left to take.
                        # Until 2026-12-07 the writer took from the empty queue and stopped.
                        continue
                self._inflight, rows = self._take()
                outcomes = await self._commit_batch(self._inflight, rows)
                while all(locked(e) for e in outcomes) and not self._closing:
                    # Kept, not dropped: the lock is another connection's, and these events'
                    # responses may have gone out on max_wait_ms, promised to be written. The
                    # queue behind it is bounded by MAX_QUEUED (then submits are refused).
                    # But for those whose callers were told they were not (``withdraw``).
                    rows = self._withdraw_late(rows)
                    if not self._inflight:
                        break
                    await asyncio.sleep(RETRY_PAUSE)
                    outcomes = await self._commit_batch(self._inflight, rows)
                if self._closing and all(locked(e) for e in outcomes):
                    self._drop_pending(outcomes[0], rows)
                self._queued -= rows
                if self._queue_gauge is not None:
                    self._queue_gauge.set(self._queued)
                batch, self._inflight = self._inflight, []
                # One outcome for all (errors compare by identity): the usual case, settled in one call.
                if outcomes.count(outcomes[0]) == len(outcomes):
                    _settle(batch, outcomes[0])
                else:
                    for item, error in zip(batch, outcomes, strict=True):
                        _settle([item], error)
                if self.lock_gap and self._pending and not self._closing:
                    await self._leave_lock()
        except Exception as err:
            self.metrics.store_errors.inc()
            self._stopped_by = f"{type(err).__name__}: {err}"
            log.critical(
                "the store writer stopped (%s); events are refused until restart",
                self._stopped_by,
                exc_info=True,
            )

    async def _leave_lock(self) -> None:
        """A bulk writer's pause between two commits (``LOCK_GAP``), in which a commit waiting in
        another process gets the write lock: after every commit while other connections commit
        in the pauses (``PRAGMA data_version`` moved), else every ``LOCK_PROBE`` seconds."""
        assert self._db is not None
        loop = asyncio.get_running_loop()
        if not self._others_write and loop.time() - self._gap_at < LOCK_PROBE:
            return
        self._gap_at = loop.time()
        before = await self._data_version()
        await asyncio.sleep(self.lock_gap)
        self._others_write = await self._data_version() != before

    async def _data_version(self) -> int:
        """SQLite's count of commits by other connections, as this one sees it (-1: unread)."""
        assert self._db is not None
        try:
            async with self._db.execute("PRAGMA data_version") as cursor:
                row = await cursor.fetchone()
        except sqlite3.Error:  # the next commit says what is wrong
            return -1
        return int(row[0]) if row else -1

    def _moved(self, why: str, wal: bool) -> None:
        """The watch found the file gone from ``storage.path``: say so once, and fail every commit
        from now on (each counted, the pages still served), rather than write on into a file that
        is gone at exit, or beside a replacing file sharing its ``-wal``.

        ``wal``: the file is there but its ``-wal`` went. What this connection committed since
        the last checkpoint is only in the WAL it has open (gone at exit: a ``kill -9`` lost it):
        the writer copies it into the file first (``_save_wal``). The checkpoint job stops, as
        its connection, opened again after a failure, would read an empty ``-wal`` made at the
        path against the ``-shm``'s index of the old one."""
        log.error("%s", why)
        self.failing = (time.time(), StoreMoved.__name__)
        self.checkpointer.halt()
        if wal:
            self._save_wal_due = True
            self._wakeup.set()

    async def _save_wal(self) -> None:
        """In the writer task, between two commits: copy every frame of the WAL this connection
        has open into the store file (``wal_checkpoint(FULL)``), said in the log. Tried again
        each second while a reader's older snapshot holds part of it back."""
        self._save_wal_due = False
        if self._db is None:  # not opened yet (its disk full at start): it holds nothing
            return
        try:
            async with self._db.execute("PRAGMA wal_checkpoint(FULL)") as cursor:
                row = await cursor.fetchone()
        except sqlite3.Error as err:
            log.error(
                "the store's -wal file went, and what it held could not be copied into %s: %s; the"
                " landings committed since its last checkpoint are lost once the gateway exits",
                self.path,
                err,
            )
            return
        busy, copied = (int(row[0]), int(row[2])) if row else (1, 0)
        if busy:
            if not self._closing:
                asyncio.get_running_loop().call_later(1.0, self._retry_save_wal)
            return
        log.warning(
            "the store's -wal file went: the %d pages its open copy held are copied into %s, nothing"
            " committed is lost; restart the gateway to write to the store again",
            copied,
            self.path,
        )

    def _retry_save_wal(self) -> None:
        self._save_wal_due = True
        self._wakeup.set()

    def _drop_pending(self, error: Exception | None, inflight: int) -> None:
        """Closing while another connection holds the lock: the batch in flight (``inflight``
        events) is given up, and what is queued behind it fails at once rather than each batch
        waiting out the busy timeout on the same lock (minutes, with a full queue)."""
        dropped = list(self._pending)
        self._pending.clear()
        rows = sum(len(item.events) for item in dropped)
        self._queued -= rows
        log.error(
            "closing while another connection holds the store's write lock: %d events not stored",
            inflight + rows,
        )
        _settle(dropped, error)

    def _writer_stopped(self, task: asyncio.Task[None]) -> None:
        """However the writer ended (even cancelled before it ran), fail what it left behind
        (a submit whose wait timed out: its ``CommitTimeout.outcome``), saying why.

        Nobody waits on a writer that is gone; ``submit`` refuses from now on, saying why too
        (until 2026-12-07 it said "the store is closed" of a writer stopped on an error).
        """
        stranded = self._inflight + list(self._pending)
        self._inflight = []
        self._pending.clear()
        self._queued = 0
        if self._queue_gauge is not None:
            self._queue_gauge.set(0)
        if task.cancelled():
            why = "the store writer was cancelled"
        elif self._stopped_by is not None:
            why = f"the store writer stopped on an error ({self._stopped_by})"
        else:
            why = "the store writer stopped"
        if not self._closing:
            self._refusal = f"{why}; events are refused until the gateway restarts"
        if stranded:
            _settle(stranded, StoreClosed(self._refusal if not self._closing else why))

    async def _commit_batch(self, batch: list[_Item], rows: int) -> list[Exception | None]:
        """Commit the batch in one transaction; the outcome of each submit in it.

        If the batch fails on its data (one bad event), each submit is retried in its own
        transaction, so one poisoned request does not lose its neighbours' events, and a submit
        of ``submit_each`` that fails so is committed in parts (``_each``). Failures
        of the database itself (locked, disk full, I/O) fail the whole batch at once.
        """
        error = await self._transaction(batch, rows, split=len(batch) > 1 or _several_parts(batch[0]))
        if error is None or not _data_error(error):
            return [error] * len(batch)
        if len(batch) > 1:
            log.warning("a batch of %d submits failed on its data; committing them one by one", len(batch))
        elif batch[0].parts is None:
            return [error]
        outcomes: list[Exception | None] = []
        for item in batch:
            failed = (
                error
                if len(batch) == 1
                else await self._transaction([item], len(item.events), split=_several_parts(item))
            )
            if failed is not None and item.parts is not None and _data_error(failed):
                failed = await self._each(item, failed)
            outcomes.append(failed)
        return outcomes

    async def _each(self, item: _Item, error: Exception) -> Exception | None:
        """A ``submit_each`` that failed on its data (``error``): committed in halves, in order,
        a half that fails on its data in halves again, down to single parts, which are left out
        (``item.refused``). With one bad part among n, some 2·log2(n) transactions, against n
        one by one. A failure of the database itself stops it (its error returned): the halves
        before it are in, and a retry of the whole finds them stored (ids skip; the import's
        triggers record only rows inserted).

        A store that refuses every row would cost some 2·n transactions and give back every part
        refused; so once the first ``REFUSED_RUN`` parts are refused in a row, nothing stored
        yet, all for one reason, the rest is tried whole: refused for that reason too, the
        submit is given up (``AllRefused`` returned: nothing of it stored); else it goes on as
        above from there."""
        events, parts = item.events, item.parts
        assert parts is not None and len(parts) == len(events)
        bounds = [0, *(i for i in range(1, len(events)) if parts[i] != parts[i - 1]), len(events)]
        refused: list[tuple[int, int, Exception]] = []
        item.refused = refused
        stored = False  # any part of it yet
        log.warning(
            "a batch of %d events failed on its data (%s); committing it in parts, leaving out those"
            " the store refuses",
            len(events),
            error,
        )

        def refused_alike() -> bool:
            """The first ``REFUSED_RUN`` parts refused in a row, for one reason, none stored."""
            if stored or len(refused) != REFUSED_RUN or len(bounds) - 1 <= REFUSED_RUN:
                return False
            first = refused[0][2]
            return all(type(e) is type(first) and str(e) == str(first) for *_, e in refused)

        if item.told is None:
            item.told = set()

        async def commit(first: int, last: int, split: bool | None = None) -> Exception | None:
            """Parts ``first`` to ``last`` in one transaction; ``split``: whether a failure on
            its data is split further (by default, when it holds more than one part)."""
            nonlocal stored
            start, end = bounds[first], bounds[last]
            part = _Item(events[start:end], item.future, item.deadline, erased=item.erased, told=item.told)
            split = last - first > 1 if split is None else split
            failed = await self._transaction([part], end - start, split=split)
            stored = stored or failed is None
            return failed

        async def halves(low: int, high: int, failed: Exception) -> Exception | None:
            """Parts ``low`` to ``high`` failed with ``failed``: each half committed, or split."""
            if high - low == 1:
                refused.append((bounds[low], bounds[high], failed))
                if refused_alike():
                    raise _RefusedAlike
                return None
            middle = (low + high) // 2
            for first, last in ((low, middle), (middle, high)):
                failed_half = await commit(first, last)
                if failed_half is None:
                    continue
                if not _data_error(failed_half):
                    return failed_half
                if (stopped := await halves(first, last, failed_half)) is not None:
                    return stopped
            return None

        try:
            stopped = await halves(0, len(bounds) - 1, error)
        except _RefusedAlike:
            # Refused for the same reason, the usual end, the rest is lost whole (AllRefused).
            stopped = await commit(REFUSED_RUN, len(bounds) - 1, split=False)
            first = refused[0][2]
            if stopped is not None and _data_error(stopped):
                if type(stopped) is type(first) and str(stopped) == str(first):
                    stopped = AllRefused(first, len(bounds) - 1)
                else:
                    stopped = await halves(REFUSED_RUN, len(bounds) - 1, stopped)
        if stopped is not None:  # tried again whole later: what was refused now is said then
            item.refused = None
        return stopped

    async def _transaction(self, batch: list[_Item], rows: int, *, split: bool = False) -> Exception | None:
        """One transaction for the events of ``batch``; the error if it did not commit.
        ``split``: a failure on its data is not the last word on its events (they are committed
        again in smaller parts): its line counts none of them lost."""
        started, began = time.perf_counter(), time.time()
        try:
            if self.watch.moved is not None:
                raise StoreMoved(self.watch.moved)
            if self._db is None:
                raise StoreUnopened("the store could not be opened: its disk is full")
            db = self._db
            if db.in_transaction:  # a failed ROLLBACK must not poison every later batch
                await db.execute("ROLLBACK")
            counted: list[tuple[str, bool]] = []
            bound: list[str] = []
            landed = 0  # the touchpoints of plain submits (a grouped one's: counted by its caller)
            # Whether the batch takes the hot path, in one pass over it (every landing's row).
            events: list[Event] = []
            kinds: set[type] | None = None  # the types of its events; None: a submit has groups
            for item in batch:
                if item.groups is not None:
                    break
                events += item.events
            else:
                kinds = set(map(type, events))
            late: list[Event] = []  # late rows of erased people, left out
            if rows <= MAX_ROWS_PER_STATEMENT and kinds is not None and len(kinds) <= 1:
                # The hot path: one table, one statement, one transaction, one thread hop.
                kind = kinds.pop() if kinds else type(None)
                late, counted, bound = await self._insert_kind(db, kind, events)
                if kind is Touchpoint:
                    landed = rows - len(late)
            else:
                await db.execute("BEGIN IMMEDIATE")
                try:
                    # Under the write lock: no erasure can be stored until this commits.
                    await self._erasures_moved(db)
                    every = [e for i in batch for e in i.events]
                    late = self._erased.late_in(every) + await self._late_bad(every)
                    gone = {id(e) for e in late}
                    landed = sum(
                        type(e) is Touchpoint and id(e) not in gone
                        for i in batch
                        if i.groups is None
                        for e in i.events
                    )
                    counted, bound, orphans = await self._write_mixed(db, batch, gone)
                    late += orphans
                    await db.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(Exception):
                        await db.execute("ROLLBACK")
                    raise
        except Exception as err:
            for item in batch:
                item.results = None
                item.refused = None
            self.metrics.store_errors.inc()
            # From when this commit began: a lock wait spent the busy timeout before it failed.
            since = self.failing[0] if self.failing is not None else began
            if locked(err):
                if not self._closing:
                    self._commit_waits(
                        "store commit of %d events waits: %s (another connection holds the write "
                        "lock); the events stay queued and are tried again",
                        rows,
                        err,
                    )
                self.failing = (since, LOCKED)
                return err
            if not str(err).startswith(HALT):  # said by whoever halted it, in its own words
                # Which store: its disk, its permissions (a line that named none until 2026-12-07).
                self._commit_failed(
                    "store commit of %d events failed: %s (%s, storage.path)",
                    rows,
                    err,
                    self.path,
                    # Until 2026-12-08 every attempt's events, a batch split down to its one bad
                    # event counting its events again at each halving (52 "lost" for 4).
                    events=0 if split and _data_error(err) else rows,
                )
            if not isinstance(err, _DATA_ERRORS):
                full = await asyncio.to_thread(full_disk, self.path) is not None
                self.failing = (since, failure_kind(err, full))
            return err
        if self.failing is not None:
            # A resolution, at info (a warning until 2026-12-07), with what the throttled lines
            # held back: a short outage said none of it (its next line never came).
            log.info(
                "store commits go through again, %.1f s after they began to fail or wait%s",
                time.time() - self.failing[0],
                self._held_back(),
            )
            self.failing = None
        self.metrics.store_commit_seconds.observe(time.perf_counter() - started)
        self.metrics.store_batch_rows.observe(rows)
        self.checkpointer.committed(rows)
        if landed:  # only now: a landing whose commit failed recorded nothing
            self.metrics.touchpoints.inc(landed)
        for rule, recorded in counted:  # only now: a rolled-back insert recorded nothing
            (self.metrics.conversions if recorded else self.metrics.conversion_duplicates).labels(rule).inc()
        for rule in bound:
            self.metrics.bindings.labels(rule).inc()
        if late:
            self._left_out(batch, late)
        return None

    async def _insert_kind(
        self, db: aiosqlite.Connection, kind: type, events: list[Event]
    ) -> tuple[list[Event], list[tuple[str, bool]], list[str]]:
        """The hot path's one statement: ``events`` (all of ``kind``) less the late rows, guarded
        by the erasures' mark the writer last read (``insert_sql``); verdict changes by their
        touchpoint instead (``_insert_verdict_changes``). A statement that inserted
        nothing may have found the mark moved (an erasure stored since, by any process): if it
        did, the erasures are read again and the rows sorted again. The late rows left out, and
        the conversions and bindings to count (``_insert_conversions``, ``_insert_bindings``)."""
        counted: list[tuple[str, bool]] = []
        bound: list[str] = []
        if kind is VerdictChange:  # late when its touchpoint is gone: its INSERT's own check
            return await _insert_verdict_changes(db, events), counted, bound
        while True:
            # Bad events name no key of their own (``Erased.late_in``): one is late when it
            # names a key erased since it came. Seldom: bodies opened.
            if kind is BadEvent:
                late = await self._late_bad(events)
            else:
                late = self._erased.late_in(events)
            kept = _without(events, late) if late else events
            if not kept:  # an erasure is never undone: left out on what the writer knows
                return late, counted, bound
            mark = self._erased_mark
            if kind is Conversion:
                counted, inserted = await _insert_conversions(db, kept, mark)
            elif kind is Binding:
                bound, inserted = await _insert_bindings(db, kept, mark)
            else:
                # The columns None in every row written so far (a landing's term, creator,
                # click ID, geography…) are written NULL rather than bound: each None bound
                # costs the writer thread ~1,600 instructions (its adapter looked up and
                # called, the connection's mutex taken). The set only ever shrinks, never
                # changes to another, so the statement texts in use stay one per batch size
                # and the connection's statement cache (128) does not fill with shapes.
                params, self._nulls[kind] = TABLES[kind].params_nulls(kept, self._nulls[kind])
                params.append(mark)
                cursor = await db.execute(insert_sql(kind, len(kept), self._nulls[kind], guard=True), params)
                inserted = cursor.rowcount
            # None inserted: every row one the store has (a replay), or the guard held them back.
            if inserted or not await self._erasures_moved(db):
                return late, counted, bound

    async def _late_bad(self, events: Sequence[Event]) -> list[Event]:
        """The bad events of ``events`` that name a key erased at or after they were received (a
        refused delivery in flight at the erasure, which searched the bad events stored then):
        opened off the event loop, and only those received before the latest erasure, seldom any."""
        names, newest, since = self.names_erased, self._erased.newest, self._erased.since
        if names is None or not newest:
            return []
        late: list[Event] = []
        for e in events:
            if type(e) is BadEvent and e.ts <= newest:
                sought = [key for key, at in since.items() if at >= e.ts]
                named: bool = bool(sought) and await asyncio.to_thread(names, e, sought)
                if named:
                    late.append(e)
        return late

    async def _erasures_moved(self, db: aiosqlite.Connection) -> bool:
        """Whether an erasure was stored since the writer last read them (their mark moved), the
        new ones read if so (seldom: erasures are), not all of them again: a reload on the mixed
        path holds the write lock against every other writer on the file."""
        if await erasure_mark(db) == self._erased_mark:
            return False
        self._erased_mark, self._erased = await Erased.load(db, self._erased)
        return True

    def _left_out(self, batch: list[_Item], late: list[Event]) -> None:
        """A commit went through without ``late``, late rows of erased people (dated at or before
        their erasure: a request in flight at it) and verdict changes of touchpoints the store
        does not have (erased, purged, never stored: ``_insert_verdict_changes``): counted, said
        (each kind in its own words), and each submit's ``erased`` told of its own, once: a row
        an earlier try of its submit left out already (``_Item.told``) is neither counted nor
        told again."""
        gone = {id(e) for e in late}
        fresh: list[Event] = []
        for item in batch:
            mine = [e for e in item.events if id(e) in gone]
            if item.told is not None:
                mine = [e for e in mine if id(e) not in item.told]
                item.told.update(map(id, mine))
            fresh += mine
            if item.erased is not None and mine:
                item.erased(mine)
        if not fresh:
            return
        tables: dict[str, int] = {}
        for e in fresh:
            name = TABLES[type(e)].name
            tables[name] = tables.get(name, 0) + 1
        for name, n in tables.items():
            self.metrics.erased_late.labels(name).inc(n)
        # A verdict change is left out for want of its touchpoint, whatever took it away or kept
        # it out: not always an erasure (until 2026-12-07 said to be an erased user's row).
        orphans = tables.pop(TABLES[VerdictChange].name, 0)
        if orphans:
            log.info(
                "left out %s the store does not have (erased, purged past privacy.retention_days,"
                " or never stored: a landing the store refused, or one an import left out)",
                "1 verdict change of a touchpoint"
                if orphans == 1
                else f"{orphans} verdict changes of touchpoints",
            )
        if tables:
            log.info(
                "left out %s: rows of an erased user or visitor from before their erasure (a request"
                " or delivery in flight when it was made)",
                ", ".join(f"{name} {n}" for name, n in sorted(tables.items())),
            )

    async def _write_mixed(
        self, db: aiosqlite.Connection, batch: list[_Item], late: Collection[int] = ()
    ) -> tuple[list[tuple[str, bool]], list[str], list[Event]]:
        """Inside an open transaction: plain events table by table, in multi-row INSERTs; grouped
        events row by row, each group whole or not at all: at its first row already stored (a
        repeated delivery's receipt, an order already recorded), the rows it wrote before are
        undone, so a duplicate adds no touchpoint or binding either. A binding of a pair the
        store has is left out of its group, which still goes in: it is no repeat (a sender's
        second ``identify`` of a user on a device). Returns what ``_insert_conversions`` and
        ``_insert_bindings`` return for the plain conversions and bindings. The events whose
        ``id()`` is in ``late`` (late rows of erased people) are left out, of a group too (the
        rest of it goes in: a signed event's receipt, so a retry is a duplicate). Verdict changes
        go in after the touchpoints, those of a touchpoint the store does not have left out and
        returned (``_insert_verdict_changes``)."""
        counted: list[tuple[str, bool]] = []
        bound: list[str] = []
        orphans: list[Event] = []
        by_type: dict[type, list[Event]] = {}
        for item in batch:
            if item.groups is None:
                for e in item.events:
                    if id(e) not in late:
                        by_type.setdefault(type(e), []).append(e)
        if VerdictChange in by_type:  # last: a re-score and its landing may share the commit
            by_type[VerdictChange] = by_type.pop(VerdictChange)
        for kind, events in by_type.items():
            if kind is VerdictChange:
                orphans = await _insert_verdict_changes(db, events)
                continue
            if kind is Conversion:
                counted, _ = await _insert_conversions(db, events)
                continue
            if kind is Binding:
                bound, _ = await _insert_bindings(db, events)
                continue
            table = TABLES[kind]
            per_statement = min(MAX_ROWS_PER_STATEMENT, MAX_VARIABLES // len(table.columns))
            for start in range(0, len(events), per_statement):
                chunk = events[start : start + per_statement]
                await db.execute(insert_sql(kind, len(chunk)), table.params(chunk))
        for item in batch:
            if item.groups is None:
                continue
            item.results = []
            for group in item.groups:
                new = True
                steps = _group_steps(group, late)
                if len(steps) > 1:  # one statement is all or nothing by itself
                    await db.execute("SAVEPOINT event_group")
                # Each step one thread hop (``execute_fetchall``): until 2026-12-07 three, the
                # cursor's execute, fetch and close.
                for row, past in steps:
                    if row is None:  # a PastReceipt alone: looked up, never written
                        found = await db.execute_fetchall(_PAST_SQL, _past_params(past))
                        if found:
                            new = False
                            break
                        continue
                    if past:  # a receipt, inserted unless the store has a key it was stored under before
                        sql, params = _receipt_unless_sql(len(past)), event_row(row) + _past_params(past)
                    else:
                        sql, params = insert_sql(type(row)) + " RETURNING id", event_row(row)
                    stored = bool(await db.execute_fetchall(sql, params))
                    if not stored and not TABLES[type(row)].once:
                        new = False
                        break
                if len(steps) > 1:
                    if not new:
                        await db.execute("ROLLBACK TO event_group")
                    await db.execute("RELEASE event_group")
                item.results.append(new)
        return counted, bound, orphans


_PAST_SQL = "SELECT 1 FROM receipts WHERE sender = ? AND kind = ? AND key = ?"


def _past_params(past: Sequence[PastReceipt]) -> list[object]:
    return [value for p in past for value in (p.sender, p.kind, p.key)]


@functools.lru_cache(maxsize=8)
def _receipt_unless_sql(pasts: int) -> str:
    """A receipt's INSERT (its row, then each ``PastReceipt``'s sender, kind and key) that inserts
    nothing, as a duplicate's does, when the store has a receipt under any of those older keys:
    the lookups ``PastReceipt`` asks for, in the receipt's own statement. One statement where
    there were an INSERT and a SELECT a key; the group is as new, or not, as it was."""
    table = TABLES[Receipt]
    one = "(" + ", ".join("?" for _ in table.columns) + ")"
    absent = " AND ".join([f"NOT EXISTS ({_PAST_SQL})"] * pasts)
    return (
        f"INSERT INTO {table.name} ({', '.join(table.columns)}) SELECT * FROM (VALUES {one})"
        f" WHERE {absent} ON CONFLICT {table.conflict} RETURNING id"
    )


def _group_steps(
    group: Sequence[Event], late: Collection[int]
) -> list[tuple[Event | None, list[PastReceipt]]]:
    """A group's statements in order, its late rows left out: each row written with the
    ``PastReceipt`` lookups that follow it when it is a receipt (``_receipt_unless_sql``), and
    a ``PastReceipt`` that follows no receipt alone (``None`` with it)."""
    steps: list[tuple[Event | None, list[PastReceipt]]] = []
    for e in group:
        if id(e) in late:
            continue
        if isinstance(e, PastReceipt):
            if steps and type(steps[-1][0]) is Receipt:
                steps[-1][1].append(e)
            else:
                steps.append((None, [e]))
            continue
        steps.append((e, []))
    return steps
