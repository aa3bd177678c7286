"""The reporting mirror: a local store file holding every node's rows of the central store,
which the reports read with the same engine as a node's own store (``central.mirror_path``).

Owns the ``mirror_horizons`` and ``mirror_daily_counts`` tables of the mirror file (made here,
not by a migration: no node's own store has them) and the mirror rounds. Each central table has
``ingested``, the id of the transaction that inserted the row (PostgreSQL migration 0007). A
round takes the horizon ``H = pg_snapshot_xmin(pg_current_snapshot())`` — every transaction
with an id below it has ended — and, per table, reads the rows with ``previous H <= ingested <
H`` in batches ordered by ``(ingested, id)`` (``KEYS``): a row committed after the round began
has an id at or above ``H``, so it falls into a later round's window, however old its event id
(a node catching up); none is skipped, none read twice. Rows are written in the local store's forms
(``storage.central_queries.local_form``; JSON as the local store encodes it, its keys in the
order PostgreSQL's ``jsonb`` keeps) and inserted if not there yet.

Erasures go first in each round, as they went centrally: the mirror's rows of an erased user,
and of every visitor the central store erased with them, are deleted with the local erasure's
statements (``storage.erasure.delete_people``); ``erased_keys`` rows moved since (an erasure,
or a binding of an erased user arriving late from a node that had not synced, which erased that
device's rows from before the erasure) delete the rows about the key from before its erasure.
Every row the mirror holds was read in an earlier window than an erasure it applies, so was
committed centrally before it: the central store deleted it too. A round that applied an
erasure then empties the mirror's write-ahead log (``storage.erasure.truncate_wal``): the
reports keep the file open, so its older frames would keep the erased rows. Rows the central store
refused as older than an erasure never reach the mirror. Retention: the mirror is purged with
the local store (``storage.retention``), by this gateway's ``privacy.retention_days``.

Daily counts (the Sec-GPC/DNT visitors): the central store holds each node's absolute count
per key (store instance, day, campaign values), its ``ingested`` set again whenever it
grows, so a grown count falls into a later window like a new row. The mirror keeps each node's
in ``mirror_daily_counts`` (a newer count replacing the node's older one) and, in the
``daily_counts`` the report engine reads, their sum over the nodes per key, made again for the
keys of each batch: no count is added twice.

One round of a mirror file at a time, on this host: each round, the task's and a ``gateway
mirror --once``'s, holds the file's round lock (``storage.roundlock``, ``<mirror>.mirror.lock``):
two rounds at once would each move the horizons to their own (the older one setting them back),
and a batch one read before an erasure the other applied would be stored after it.

Which central store: the horizons are one store's transaction ids. A round that finds another
store (its identity, or its horizon below the mirror's: a dump restored into another cluster)
starts the mirror again from nothing, and a table's first fill also reads a restored dump's
rows, whose ``ingested`` came from the old cluster (``storage.mirror_identity``). An erasure
read again (its ``id`` in the mirror's ``erasures``) is not applied again.

Lag: the central rows not mirrored yet (``unmirrored``, also ``gateway doctor``'s) and the
seconds since each table's last completed round while rows wait (``Mirror.publish_age``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
import msgspec

from gateway.events import iso
from gateway.metrics import Metrics
from gateway.options import CentralOptions
from storage import central
from storage.backoff import Failures
from storage.cursors import local_columns
from storage.erasure import delete_before, delete_people, truncate_wal
from storage.local import connect, read_only, rollback
from storage.migrate import migrate
from storage.mirror_identity import IDENTITY, central_state, follow, readable_identity
from storage.roundlock import Holder, RoundLock
from storage.sync import COUNTS, SYNC_TABLES

log = logging.getLogger("gateway.mirror")

READER = "mirror"
"""The ``reader`` label of the mirror's series among the ``gateway_sync_*`` metrics."""
ERASED_KEYS = "erased_keys"
TABLES = ("erasures", ERASED_KEYS, *(t for t in SYNC_TABLES if t != "erasures"), COUNTS)
"""Read in this order each round: the erasures and the erased keys before the rows they erase."""
NODE_COUNTS = "mirror_daily_counts"
"""Each node's daily counts, as the central store holds them; ``daily_counts`` holds their sums."""
NODE_COUNTS_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {NODE_COUNTS} ("
    " node TEXT NOT NULL,"
    " instance TEXT NOT NULL,"  # the node's store instance (central daily_counts)
    " day TEXT NOT NULL,"
    " source TEXT NOT NULL DEFAULT '',"
    " medium TEXT NOT NULL DEFAULT '',"
    " campaign TEXT NOT NULL DEFAULT '',"
    " channel TEXT NOT NULL DEFAULT '',"
    " creator_id TEXT NOT NULL DEFAULT '',"
    " count INTEGER NOT NULL,"
    " PRIMARY KEY (instance, day, source, medium, campaign, channel, creator_id))"
)
NODE_KEY = ("instance", *central.COUNT_KEY)
"""A central daily count's key: the store's instance, whatever its node's name (``node`` is the
name it was last sent under)."""
KEYS: Mapping[str, tuple[str, ...]] = {ERASED_KEYS: ("key",), COUNTS: NODE_KEY}
"""The columns a central table's rows are ordered by after ``ingested`` (batches go on after
the last one's); ``id`` for the others."""
HORIZONS = (
    "CREATE TABLE IF NOT EXISTS mirror_horizons ("
    " name TEXT PRIMARY KEY,"  # the central table
    " horizon INTEGER NOT NULL,"  # rows with ingested below it are in the mirror
    " updated TEXT NOT NULL)"
)
RESTARTED = (*(t for t in TABLES if t != ERASED_KEYS), NODE_COUNTS)
"""The mirror's tables of central rows, emptied when it starts again from nothing."""
MAX_VISITORS = 10_000
"""Visitors per delete statement (SQLite's cap on a statement's variables)."""
Progress = Callable[[str, int], object]
"""Told each batch's table and rows once stored (``gateway mirror --once``)."""

_encode = msgspec.json.Encoder()


def _day(value: Any) -> Any:
    """A ``date`` → the ``YYYY-MM-DD`` text the local store keeps."""
    return value.isoformat()


def _json(value: Any) -> Any:
    """``jsonb`` text as PostgreSQL gives it → the compact JSON the local store writes."""
    return None if value is None else _encode.encode(msgspec.json.decode(value)).decode()


_LOCAL_FORMS: Mapping[str, Callable[[Any], Any]] = {
    "timestamp with time zone": iso,
    "uuid": str,
    "jsonb": _json,
    "date": _day,
}
"""The central column types whose values the local store writes in another form (the text
``storage.central_queries.local_form`` gives, compact JSON); asyncpg's others are stored as
they come."""


def _local_rows(
    rows: Sequence[asyncpg.Record], forms: Sequence[tuple[int, Callable[[Any], Any]]]
) -> list[list[Any]]:
    """Rows read as ``ingested, *columns`` → the columns in the local store's forms, each
    converted by its column's type (``_LOCAL_FORMS``) only where it needs it. Pure Python over
    every row (a first fill converts millions): a batch's runs in a thread
    (``central.off_loop``), not on the event loop the proxy's requests share."""
    records: list[list[Any]] = []
    for row in rows:
        values = list(row)[1:]
        for i, form in forms:
            if values[i] is not None:
                values[i] = form(values[i])
        records.append(values)
    return records


class Mirror:
    def __init__(
        self,
        path: Path,
        dsn: str,
        options: CentralOptions,
        metrics: Metrics,
        on_stored: Callable[[], object] | None = None,
        on_rewritten: Callable[[], object] | None = None,
    ) -> None:
        """``on_stored``: called after each batch ``run`` committed that stored (or erased)
        rows: the gateway's reports over the mirror say something else from then on;
        ``on_rewritten`` (else ``on_stored``) instead when what it stored rewrites the past:
        verdict changes, or the mirror starting again from nothing (on another central store,
        or one gone back). (Rows it deletes, another node's erasure, move the store's own
        counters: ``storage/report_kept.py``.)"""
        self.on_stored = on_stored
        self.on_rewritten = on_rewritten or on_stored
        self.path = path
        self.dsn = dsn
        self.options = options
        self.metrics = metrics
        self.lock = RoundLock(path, "mirror", log, "reporting mirror")
        self._waiting: set[str] = set()
        """The tables central rows waited for at the last count (``publish_lag``)."""
        self._identity_told: list[bool] = []
        """The role may not read the central identity: told once (``mirror_identity``)."""

    async def open_local(self) -> aiosqlite.Connection:
        return await open_mirror(self.path)

    async def round(
        self, db: aiosqlite.Connection, conn: asyncpg.Connection, progress: Progress | None = None
    ) -> dict[str, int]:
        """Bring the mirror up to the central store's horizon of now; rows stored per table
        (``erased_keys``: keys whose rows from before their erasure were deleted)."""
        horizon, beyond = await central_state(conn)
        identity = await readable_identity(conn, self._identity_told)
        if await follow(db, identity, horizon, self.key, RESTARTED) and self.on_rewritten is not None:
            self.on_rewritten()  # the reports' answers from the store before are not this one's
        stored: dict[str, int] = {}
        for table in TABLES:
            remote = await central.central_columns(conn, table)
            if table == ERASED_KEYS:
                local = ["key", "erased_at"]
            else:  # each node's daily counts go to NODE_COUNTS, their sums to daily_counts
                local = await local_columns(db, NODE_COUNTS if table == COUNTS else table)
            if "ingested" not in remote or not local:
                continue
            columns = tuple(c for c in local if c in remote)
            forms = tuple(
                (i, _LOCAL_FORMS[remote[c]]) for i, c in enumerate(columns) if remote[c] in _LOCAL_FORMS
            )
            keys = tuple((c, remote[c]) for c in KEYS.get(table, ("id",)))
            stored[table] = await self._table(
                db, conn, table, columns, forms, keys, (horizon, beyond), progress
            )
        if stored.get("erasures") or stored.get(ERASED_KEYS):
            # The log's older frames still hold the erased rows' pages: the reports keep the
            # mirror open, so closing it does not empty the log (as a node's own erasure does).
            await truncate_wal(db, "erasure in the reporting mirror")
        await self.publish_lag(db, conn)
        return stored

    async def _table(
        self,
        db: aiosqlite.Connection,
        conn: asyncpg.Connection,
        table: str,
        columns: tuple[str, ...],
        forms: Sequence[tuple[int, Callable[[Any], Any]]],
        keys: Sequence[tuple[str, str]],
        bounds: tuple[int, int],
        progress: Progress | None,
    ) -> int:
        """One table's window ``[its horizon, horizon)``, batch by batch, each batch one local
        transaction; the table's horizon moves with the last one. The next batch is read from
        PostgreSQL while the current one is written to SQLite (not for erasures, whose writing
        asks PostgreSQL too). A failure part way leaves the horizon where it was: the window is
        read again, and rows stored already are skipped. ``keys``: the columns (and their
        central types) that order the rows after ``ingested``; ``bounds``: the round's horizon,
        and ``beyond``: a table's first fill also reads the rows at or above it, which no
        transaction of this cluster wrote (a dump restored from another:
        ``storage.mirror_identity``)."""
        horizon, beyond = bounds
        previous = await _horizon(db, table)
        if previous >= horizon:
            return 0
        key = ", ".join(c for c, _ in keys)
        cols = ", ".join(columns)
        window = "ingested >= $1::text::xid8 AND ingested < $2::text::xid8"
        if previous == 0:
            window = f"({window} OR ingested >= '{int(beyond)}'::xid8)"
        first = f"SELECT ingested::text AS _ingested, {cols} FROM {table} WHERE {window}"
        order = f" ORDER BY ingested, {key} LIMIT $3"
        marks = ", ".join(f"${i}::{kind}" for i, (_, kind) in enumerate(keys, start=5))
        after = f" AND (ingested, {key}) > ($4::text::xid8, {marks})"
        size, stored = self.options.batch_size, 0
        rows = await conn.fetch(first + order, str(previous), str(horizon), size)
        while True:
            last = rows[-1] if rows else None
            records = await central.off_loop(lambda batch: _local_rows(batch, forms), rows)
            done, new = len(rows) < size, len(records)
            ahead: asyncio.Future[list[asyncpg.Record]] | None = None
            following = () if last is None else (last["_ingested"], *(last[c] for c, _ in keys))
            if not done and table != "erasures":
                ahead = asyncio.ensure_future(
                    conn.fetch(first + after + order, str(previous), str(horizon), size, *following)
                )
            try:
                new = await self._store(db, conn, table, columns, rows, records, horizon, done)
            except BaseException:
                if ahead is not None:
                    ahead.cancel()
                    with contextlib.suppress(BaseException):
                        await ahead
                raise
            stored += new
            if new:
                self.metrics.sync_rows.labels(READER, table).inc(new)
                if progress is not None:
                    progress(table, new)
            if done:
                return stored
            if ahead is not None:
                rows = await ahead
            else:
                rows = await conn.fetch(first + after + order, str(previous), str(horizon), size, *following)

    async def _store(
        self,
        db: aiosqlite.Connection,
        conn: asyncpg.Connection,
        table: str,
        columns: tuple[str, ...],
        rows: Sequence[asyncpg.Record],
        records: list[list[Any]],
        horizon: int,
        done: bool,
    ) -> int:
        """One batch in one local transaction (the table's horizon moved with the last); the
        rows it stored (``erased_keys``: the keys it erased)."""
        cols = ", ".join(columns)
        new = len(records)
        await db.execute("BEGIN IMMEDIATE")
        try:
            if table == "erasures":
                await self._erase(db, conn, records, [row["_ingested"] for row in rows], columns)
            if table == ERASED_KEYS:
                await _erase_before(db, records)
            elif table == COUNTS:
                new = await _store_counts(db, columns, records)
            elif records:
                marks = ", ".join("?" for _ in columns)
                cursor = await db.executemany(
                    f"INSERT INTO {table} ({cols}) VALUES ({marks}) ON CONFLICT DO NOTHING", records
                )
                new = max(cursor.rowcount, 0)  # a window read again skips what it stored
            if done:
                await db.execute(
                    "INSERT INTO mirror_horizons (name, horizon, updated) VALUES (?, ?, ?)"
                    " ON CONFLICT (name) DO UPDATE SET horizon = excluded.horizon,"
                    " updated = excluded.updated",
                    (table, horizon, iso(datetime.now(UTC))),
                )
            await db.execute("COMMIT")
        except BaseException:
            await rollback(db)
            raise
        return new

    async def _erase(
        self,
        db: aiosqlite.Connection,
        conn: asyncpg.Connection,
        records: Sequence[Sequence[Any]],
        ingested: Sequence[str],
        columns: tuple[str, ...],
    ) -> None:
        """Each erasure of the batch, as the central store applied it (``central.apply_erasures``):
        its user (under every key it names), the visitors it lists, those bound to the user in
        the mirror, and those the central store found bound there (its ``erased_keys`` rows of
        the same transaction) — all their rows."""
        at = {c: i for i, c in enumerate(columns)}
        ids = [record[at["id"]] for record in records]
        # One variable, whatever the batch (central.batch_size up to 100,000; SQLite's default
        # cap is 32,766 variables a statement).
        async with db.execute(
            "SELECT id FROM erasures WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(ids),)
        ) as cursor:
            applied = {row[0] for row in await cursor.fetchall()}
        for record, xid in zip(records, ingested, strict=True):
            if record[at["id"]] in applied:
                # Read again (a window read again, or a restored dump's erasure whose ingested
                # this cluster's ids reached): applied already; again, it would delete rows
                # the central store took after it.
                continue
            also = msgspec.json.decode(record[at["also_keys"]]) if "also_keys" in at else []
            users = [record[at["user_key"]], *also]
            marks = ",".join("?" for _ in users)
            async with db.execute(
                f"SELECT DISTINCT visitor_key FROM identities WHERE user_key IN ({marks})", users
            ) as cursor:
                bound = [row[0] for row in await cursor.fetchall()]
            same = await conn.fetch("SELECT key FROM erased_keys WHERE ingested = $1::text::xid8", xid)
            visitors = sorted(
                {*msgspec.json.decode(record[at["visitors"]]), *bound, *(r["key"] for r in same)}
            )
            for start in range(0, max(len(visitors), 1), MAX_VISITORS):
                await delete_people(db, users, visitors[start : start + MAX_VISITORS])

    async def publish_lag(self, db: aiosqlite.Connection, conn: asyncpg.Connection) -> dict[str, int]:
        """Central rows not in the mirror yet (``unmirrored``), per table, in
        ``gateway_sync_lag_rows{reader="mirror"}``; and ``publish_age``."""
        lag = await unmirrored(conn, {table: await _horizon(db, table) for table in TABLES})
        for table, rows in lag.items():
            self.metrics.sync_lag_rows.labels(READER, table).set(rows)
        self._waiting = {table for table, rows in lag.items() if rows}
        await self.publish_age(db)
        return lag

    async def publish_age(self, db: aiosqlite.Connection, *, failing: bool = False) -> None:
        """``gateway_sync_lag_seconds{reader="mirror"}`` per table: seconds since the table's last
        completed round (``mirror_horizons.updated``) while central rows wait for it — as the
        last count found, or, ``failing`` (no round completes, the rows cannot be counted), in
        any case — else 0; none before its first round. Not the age of the oldest row waiting:
        the central rows' ``ts`` is the event's time (a node catching up on last week would read
        as a week), and ``min(ts)`` over a backlog scans the table (its index is on
        ``(ingested, id)``). Local reads alone: kept current between rounds and during outages."""
        now = datetime.now(UTC)
        async with db.execute("SELECT name, updated FROM mirror_horizons") as cursor:
            rows = await cursor.fetchall()
        for name, updated in rows:
            behind = failing or name in self._waiting
            seconds = (now - datetime.fromisoformat(updated)).total_seconds() if behind else 0.0
            self.metrics.sync_lag_seconds.labels(READER, name).set(max(seconds, 0.0))

    async def once(
        self,
        progress: Progress | None = None,
        *,
        waiting: Callable[[Holder], object] | None = None,
        wait: float | None = None,
    ) -> dict[str, int]:
        """One complete round, for ``gateway mirror --once``; errors propagate. A round of the
        file running in another process (the gateway's task) is waited for first: ``waiting``
        is told whose, and after ``wait`` seconds ``storage.roundlock.RoundTimeout``."""
        db = await self.open_local()
        try:

            async def round_on(conn: asyncpg.Connection) -> dict[str, int]:
                return await self.round(db, conn, progress)

            stored = await central.one_round(
                self.lock, "mirror --once", self.connect, round_on, waiting, wait
            )
            self.metrics.sync_last_success.labels(READER).set(time.time())
            return stored
        finally:
            await db.close()

    @property
    def key(self) -> str:
        return central.url_key(self.options.url)

    async def connect(self) -> asyncpg.Connection:
        """A connection to the central store at ``dsn`` as it is now."""
        return await central.connect(self.dsn, self.options.connect_timeout)

    async def run(self) -> None:
        """Until cancelled: a round every ``interval_seconds``; while the central store is away
        the mirror keeps what it has (the reports answer from it), and the rounds are retried
        with backoff, the problem logged once (``central.keep_in_rounds``). Each round holds the
        file's round lock: a ``gateway mirror --once``'s round running is waited for, the lag
        gauges kept current meanwhile."""
        db = await self.open_local()

        def stored(table: str, _rows: int) -> None:
            # Another node's analyst's verdict rewrites the past: the kept data_driven weights go.
            told = self.on_rewritten if table == "verdict_changes" else self.on_stored
            if told is not None:
                told()

        async def round_on(conn: asyncpg.Connection) -> None:
            await self.round(db, conn, stored)

        async def publish(failing: bool, first: bool) -> None:
            await self.publish_age(db, failing=failing)

        try:
            await central.keep_in_rounds(
                self.connect,
                self.options,
                self.metrics,
                READER,
                Failures(log, "reporting mirror", self.metrics.readers_failing, READER),
                round_on,
                publish,
                lock=self.lock,
            )
        finally:
            await db.close()


async def open_mirror(path: Path) -> aiosqlite.Connection:
    """The mirror file, made or brought to the local store's schema, with its horizons."""
    await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
    db = await connect(path)
    try:
        await migrate(db)
        await db.execute(HORIZONS)
        await db.execute(NODE_COUNTS_TABLE)
        await db.execute(IDENTITY)
    except BaseException:
        await db.close()
        raise
    return db


async def prepare(path: Path) -> None:
    """Make the mirror file if there is none yet, for the reports to open before the first
    round (the central store may be away: they then report on nothing until it is back)."""
    db = await open_mirror(path)
    await db.close()


async def unmirrored(conn: asyncpg.Connection, horizons: Mapping[str, int]) -> dict[str, int]:
    """Central rows not in the mirror yet, per central table that has ``ingested``: those at or
    above the table's horizon (``horizons``; 0 when it has none), and, once it has one, below
    the ids this cluster has given (the rows above, a restored dump's, its first fill read).
    The mirror's lag metric and ``gateway doctor`` count them so."""
    lag: dict[str, int] = {}
    for table in TABLES:
        if "ingested" not in await central.central_columns(conn, table):
            continue
        horizon = horizons.get(table, 0)
        # Filled: rows at or above beyond were a restored dump's, read by the first fill.
        filled = " AND ingested < pg_snapshot_xmax(pg_current_snapshot())" if horizon else ""
        rows = await conn.fetchval(
            f"SELECT count(*) FROM {table} WHERE ingested >= $1::text::xid8{filled}", str(horizon)
        )
        lag[table] = int(rows)
    return lag


def read_horizons(path: Path) -> dict[str, tuple[int, str]]:
    """The mirror file's horizons, read only: central table → (horizon, when it last moved);
    empty when the file, or its ``mirror_horizons`` table, is not there (a mirror never filled).
    Blocking (``sqlite3``): for the commands, or run in a thread."""
    if not path.is_file():
        return {}
    try:
        with contextlib.closing(read_only(path)) as db:
            rows = db.execute("SELECT name, horizon, updated FROM mirror_horizons").fetchall()
    except sqlite3.OperationalError as err:
        if "no such table" in str(err):
            return {}
        raise
    return {str(name): (int(horizon), str(updated)) for name, horizon, updated in rows}


async def _horizon(db: aiosqlite.Connection, table: str) -> int:
    async with db.execute("SELECT horizon FROM mirror_horizons WHERE name = ?", (table,)) as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def _erase_before(db: aiosqlite.Connection, records: Sequence[Sequence[Any]]) -> None:
    """Each erased key's rows from before its erasure (``key``, ``erased_at``): what the central
    store deleted when it erased the key, or a late binding showed the visitor to be an
    erased user's (``central.erase_late_devices``)."""
    for key, erased_at in records:
        await delete_before(db, key, erased_at)


async def _store_counts(
    db: aiosqlite.Connection, columns: tuple[str, ...], records: Sequence[Sequence[Any]]
) -> int:
    """Inside the batch's transaction: each node's count of a key stored in ``NODE_COUNTS`` (a
    newer one replacing the node's older), then ``daily_counts`` of the batch's keys made again
    as the sum over the nodes, which the report engine reads (``population_counts``). Counts
    that changed: a window read again changes none."""
    if not records:
        return 0
    cols = ", ".join(columns)
    marks = ", ".join("?" for _ in columns)
    cursor = await db.executemany(
        f"INSERT INTO {NODE_COUNTS} ({cols}) VALUES ({marks}) ON CONFLICT ({', '.join(NODE_KEY)})"
        " DO UPDATE SET count = excluded.count, node = excluded.node WHERE count <> excluded.count",
        records,
    )
    at = [columns.index(c) for c in central.COUNT_KEY]
    keys = sorted({tuple(record[i] for i in at) for record in records})
    key = ", ".join(central.COUNT_KEY)
    equal = " AND ".join(f"{c} = ?" for c in central.COUNT_KEY)
    await db.executemany(
        f"INSERT INTO {COUNTS} ({key}, count) SELECT {key}, sum(count) FROM {NODE_COUNTS}"
        f" WHERE {equal} GROUP BY {key} ON CONFLICT ({key}) DO UPDATE SET count = excluded.count",
        keys,
    )
    return max(cursor.rowcount, 0)
