"""The central sync: a background task that copies the local event log to PostgreSQL.

Reads the local store on a connection of its own, table by table, in batches
after the table's cursor (``storage.cursors``: rowid order); writes each batch
to the central store in one transaction (``storage.central``) and only then
moves the cursor, so a crash or an outage between the two re-sends the batch,
which the central store ignores. Failures (PostgreSQL away, restarting, a
network cut) are counted and retried with exponential backoff and
jitter; the proxy never waits on any of this, and the local store keeps every
row until it is delivered. After every round, caught up or failed, the lag
per table is published to ``/metrics``, and its age (of the oldest row waiting)
again every ``interval_seconds`` (at most 5 s) while a backoff lasts. Erasures go first in
each round, and before each further batch of the other tables. Each round also tells the
central store which store instance syncs under this node name, and says so when another one
does too (``Sync.check_node``). The daily counts of the Sec-GPC/DNT visitors (``daily_counts``)
are counters, grown in place, not an event log: each round delivers, after the other tables,
the rows whose count grew past what was last delivered (``sent``, local migration 0012), as
absolute counts under the node and its store instance (``Sync.counts``).

Erasures made through other nodes reach this store too: after delivering, each round reads the
central ``erased_keys`` (user and visitor keys, each with the time of its latest erasure) that
moved since the last round, and deletes this store's rows of each key dated at or before its
erasure (``Sync.apply_erasures``) — a device this node saw whose user logged in, and was
erased, on another node — and the kept bad events received before it that name one of those keys
(``storage.erasure.BadEventSearch``: opened before each batch's write transaction). The window
is the mirror's (``storage.mirror``): every ``erased_keys`` row with ``ingested`` below the
round's horizon ``pg_snapshot_xmin`` has been applied once the round ends
(``central_erasures_horizon``, local migration 0013), none skipped.

One round of a store at a time, on this host: each round, the task's and a ``gateway sync
--once``'s, holds the store's round lock (``storage.roundlock``, ``<store>.sync.lock``), so the
erasures-first order of a round is not undone by another round's batch in flight.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg

from gateway.badbody import body_key
from gateway.events import iso
from gateway.keys import Keys, spellings
from gateway.metrics import Metrics
from gateway.options import CentralOptions
from storage import central, central_identity
from storage.backoff import Failures, Standing
from storage.cursors import (
    WriteClock,
    advance,
    clamp_cursors,
    cursor_at,
    cursor_name,
    local_columns,
    publish_lag,
    publish_progress,
    read_after,
    table_tops,
)
from storage.erased import erasure_mark
from storage.erasure import BadEventSearch, delete_before, truncate_wal
from storage.local import connect, rollback, store_instance
from storage.migrate import migrate
from storage.roundlock import Holder, RoundLock

log = logging.getLogger("gateway.sync")

SYNC_TABLES = ("erasures", "touchpoints", "identities", "conversions", "verdict_changes", "creator_standings")
"""Local tables copied to the central store, in this order each round. Erasures go first, and
again before every further batch of the other tables (``Round.erasures_first``): a backlog of
touchpoints does not hold an erasure back. A table missing on either side is skipped."""
COUNTS = "daily_counts"
"""The daily counts (local migration 0007, central 0008): delivered after ``SYNC_TABLES`` each
round, the rows whose ``count`` is above ``sent`` (``Sync.counts``), not after a cursor."""
READER = "central"
ERASED_BATCH = 500
"""Central ``erased_keys`` rows applied to the local store per write transaction."""
PROGRESS_SECONDS = 60.0
"""While one table's backlog takes longer than this, a log line this often says how far it is."""
Progress = Callable[[int], Callable[[int], object]]
"""Told the rows a round has to deliver before it starts; returns what is told each batch's
rows once delivered (``gateway sync --once``'s progress bar)."""


class Sync:
    def __init__(
        self,
        store_path: Path,
        dsn: str,
        options: CentralOptions,
        metrics: Metrics,
        node: str | None = None,
        key_check: str | None = None,
        secret: bytes | None = None,
    ) -> None:
        """``node``: the ``storage.node`` this gateway records under; given, each round tells the
        central store which store instance syncs under it, and says when another does too.
        ``key_check``: ``gateway.keys.key_check`` of its ``identity.secret``; given (with
        ``node``), each round records it and says when another node syncs under another secret.
        ``secret``: its ``identity.secret``; given, an erasure made through another node takes
        this store's kept bad events that name an erased key too (``BadEventSearch``)."""
        self.store_path = store_path
        self.dsn = dsn
        self.options = options
        self.metrics = metrics
        self.node = node
        self.key_check = key_check
        self.secret = secret
        self.shared = Standing(log)
        self.secrets = Standing(log)
        self.lock = RoundLock(store_path, "sync", log, "central sync")
        self._identity_denied = False
        """The role may not read ``central_identity``: told once (``check_central``)."""
        self.clock = WriteClock()
        """When the rows waiting were written, for ``gateway_sync_lag_seconds``."""

    async def check_node(self, db: aiosqlite.Connection, conn: asyncpg.Connection) -> None:
        """Record this store's instance under ``node`` centrally; another instance that synced
        under the same name within the hour is a second gateway given this ``storage.node``:
        an error (once, then every 10 minutes), and ``gateway_sync_node_shared``. Its rows
        are still delivered: rows are told apart by id, not by node."""
        instance = await store_instance(db) if self.node is not None else None
        if self.node is None or instance is None:
            return
        others = await central.claim_node(conn, self.node, instance, self.key_check)
        await self.check_secret(conn)
        self.metrics.sync_node_shared.labels(READER).set(len(others))
        if not others:
            self.shared.gone(
                f"central sync: no other gateway has synced under storage.node {self.node!r} for an hour"
            )
            return
        other, when = others[0]
        self.shared.seen(
            f"central sync: another gateway syncs under storage.node {self.node!r} too (store"
            f" instance {other[:8]}, last at {iso(when)}; this one is {instance[:8]}): give each"
            " gateway its own storage.node (empty, it is the host name, which cloned hosts may"
            " share), or the node a row names may be the wrong one. Both keep syncing, nothing"
            " is lost; a store made anew in place of a lost one is taken for the same gateway"
            " once the old one has not synced for an hour"
        )

    async def check_secret(self, conn: asyncpg.Connection) -> None:
        """Another node that synced within the hour under another ``identity.secret`` (its
        ``key_check`` differs): an error (once, then every 10 minutes), and
        ``gateway_sync_other_secrets``. Its rows are still delivered, under keys this gateway
        would not compute: a visitor cookie one of the two set is refused by the other (counted
        as rejected, a new visitor), a user logging in on both is two users, and an erasure on
        one does not find the user's rows the other keyed."""
        if self.key_check is None:
            return
        others = await central.other_secrets(conn, self.key_check)
        self.metrics.sync_other_secrets.labels(READER).set(len(others))
        if not others:
            self.secrets.gone(
                "central sync: every node that synced within the hour has this gateway's identity.secret"
            )
            return
        names = ", ".join(repr(node) for node, _ in others[:5]) + (" …" if len(others) > 5 else "")
        self.secrets.seen(
            f"central sync: {'another node syncs' if len(others) == 1 else f'{len(others)} other nodes sync'}"
            f" to this central store under another identity.secret than this one (storage.node"
            f" {self.node!r}): {names}, last at"
            f" {iso(others[0][1])}. Give every gateway in front of one site the same"
            " identity.secret: the visitor cookie one sets is refused by the others (a new"
            " visitor, its journey cut in two), a user who logs in on two of them is two users in"
            " the reports, and an erasure through one does not find the rows the others keyed"
        )

    async def check_central(self, db: aiosqlite.Connection, conn: asyncpg.Connection) -> None:
        """Another central store than the one this store's cursors belong to (dropped and made
        again, or another database named in ``central.url``): one warning, and the cursors set
        back (``storage.central_identity``), so that this round sends it the node's whole
        history. The first one is only recorded.

        A role that may not read the identity (granted its rights before PostgreSQL migration
        0012 made the table) syncs on without the check, told once what to grant: the identity
        only guards a refill, and every round failed on it, the node's rows waiting."""
        try:
            replaced = await central_identity.follow(db, conn, (*SYNC_TABLES, COUNTS))
        except asyncpg.InsufficientPrivilegeError:
            if not self._identity_denied:
                self._identity_denied = True
                role = await conn.fetchval("SELECT current_user")
                log.warning(
                    "central sync: the user in central.url may not read central_identity, so this"
                    " node cannot tell a central store made anew (which it would refill) from the one"
                    " it delivered to; syncing on without that check. Run on the central store:"
                    " GRANT SELECT ON central_identity TO %s",
                    role,
                )
            return
        if replaced is None:
            return
        rows = ", ".join(f"{table} {n}" for table, n in replaced.rows.items() if n) or "no rows"
        log.warning(
            "central sync: another central store than the one this node delivered to, at %s"
            " (identity %s, was %s: the database dropped and made again, or another one named):"
            " sending this node's whole history again, erasures first (%s: what the local store"
            " still holds; retention purged what is older). Rows the central store already has are"
            " ignored",
            self.key,
            replaced.now[:8],
            replaced.was[:8],
            rows,
        )

    async def round(
        self, db: aiosqlite.Connection, writer: central.CentralWriter, progress: Progress | None = None
    ) -> dict[str, int]:
        """Deliver everything written so far; rows delivered per table. Erasures first, before
        each batch of the other tables when one was recorded since (``erasures_first``), and once
        more at the end, for one recorded during the round."""
        delivered: dict[str, int] = {}
        await self.check_central(db, writer.conn)
        await self.check_node(db, writer.conn)
        done = None
        if progress is not None:
            done = progress(sum(rows for rows, _ in (await self.publish_lag(db)).values()))
        plans: dict[str, central.TablePlan] = {}
        for table in SYNC_TABLES:
            local = await local_columns(db, table)
            remote = await central.central_columns(writer.conn, table) if local else {}
            if local and remote:
                plans[table] = central.TablePlan.build(table, local, remote)
        erasures = plans.pop("erasures", None)
        if erasures is not None:
            delivered["erasures"] = 0
        seen = -1  # the local erasure mark when erasures were last delivered

        async def erasures_first() -> bool:
            """Deliver the erasures recorded since the last look; whether there were any (a batch
            read before them may hold rows they deleted locally: it is read again)."""
            nonlocal seen
            if erasures is None:
                return False
            mark = await erasure_mark(db)  # before the read: an erasure after it is seen next time
            if mark == seen:
                return False
            seen = mark
            rows = await self._table(db, writer, erasures, cursor_name(READER, "erasures"), done)
            delivered["erasures"] += rows
            return True

        touchpoints = plans.get("touchpoints")

        async def touchpoints_first() -> bool:
            """Before a batch of verdict changes: the erasures, then the touchpoints stored
            since their round went (a change made a moment after its touchpoint), so that the
            central store, which leaves out a change of a touchpoint it has not, has it."""
            again = await erasures_first()
            if touchpoints is not None:
                name = cursor_name(READER, "touchpoints")
                rows = await self._table(db, writer, touchpoints, name, done, erasures_first)
                delivered["touchpoints"] = delivered.get("touchpoints", 0) + rows
            return again

        await erasures_first()
        for table, plan in plans.items():
            before = touchpoints_first if plan.of_touchpoints else erasures_first
            rows = await self._table(db, writer, plan, cursor_name(READER, table), done, before)
            delivered[table] = delivered.get(table, 0) + rows
        if await counts_synced(db, writer.conn):
            delivered[COUNTS] = await self.counts(db, writer, done)
        await erasures_first()
        await self.apply_erasures(db, writer.conn)
        return delivered

    async def apply_erasures(self, db: aiosqlite.Connection, conn: asyncpg.Connection) -> int:
        """Erase here what the central store erased (an erasure made through any node, or a
        device of an erased user found by a binding that came late): the ``erased_keys`` rows
        in ``[the last round's horizon, this round's)``, ``ERASED_BATCH`` at a time, each batch
        one local write transaction deleting the rows of its keys dated at or before their
        erasure (``storage.erasure.delete_before``) and recording the keys
        (``central_erasures``; not ``erasures``, which would be synced back as a new erasure);
        the horizon moves with the last batch. A failure part way leaves it where it was: the
        window is applied again, which deletes nothing twice. Rows deleted; one info line when
        any were, with the keys' and rows' counts."""
        if "ingested" not in await central.central_columns(conn, "erased_keys"):
            return 0
        if not await local_columns(db, "central_erasures_horizon"):
            return 0
        horizon = int(await conn.fetchval("SELECT pg_snapshot_xmin(pg_current_snapshot())::text"))
        async with db.execute("SELECT horizon FROM central_erasures_horizon") as cursor:
            row = await cursor.fetchone()
        previous = int(row[0]) if row else 0
        if previous > horizon:  # another cluster (a restore): apply it all again, it is harmless
            previous = 0
        if previous == horizon:
            return 0
        window = "ingested >= $1::text::xid8 AND ingested < $2::text::xid8"
        select = f"SELECT ingested::text AS ingested, key, erased_at FROM erased_keys WHERE {window}"
        order = " ORDER BY ingested, key LIMIT $3"
        rows = await conn.fetch(select + order, str(previous), str(horizon), ERASED_BATCH)
        keys = deleted = 0
        per_table: dict[str, int] = {}
        while True:
            done = len(rows) < ERASED_BATCH
            batch = [(r["key"], iso(r["erased_at"])) for r in rows]
            search = await self._bad_events_naming(db, [key for key, _ in batch])
            counts = await _apply_batch(db, batch, horizon, done, search)
            keys += len(rows)
            for table, n in counts.items():
                per_table[table] = per_table.get(table, 0) + n
                deleted += n
            if done:
                break
            last = rows[-1]
            rows = await conn.fetch(
                select + " AND (ingested, key) > ($4::text::xid8, $5)" + order,
                str(previous),
                str(horizon),
                ERASED_BATCH,
                last["ingested"],
                last["key"],
            )
        for table, n in per_table.items():
            if n:
                self.metrics.sync_erased.labels(table).inc(n)
        if deleted:
            log.info(
                "central sync: applied erasures made through other nodes: %d erased keys read,"
                " %d rows deleted from the local store (%s)",
                keys,
                deleted,
                ", ".join(f"{table} {n}" for table, n in per_table.items() if n),
            )
            await truncate_wal(db)  # the deleted rows' old pages, as an erasure does
        return deleted

    async def _bad_events_naming(
        self, db: aiosqlite.Connection, keys: Sequence[str]
    ) -> BadEventSearch | None:
        """The search of this store's kept bad events for the erased ``keys``, made before the
        batch's write transaction (which brings it up to date): what an erasure on this node
        finds, by what the keys tell. A visitor key: by each raw ID a bad event names, keyed.
        A user key: hashed (``user_id_storage = "hash"``), by each text a bad event names,
        hashed; encrypted or plain, by the raw ID it gives back, as a local erasure searches.
        None without the secret (nothing can be opened)."""
        if self.secret is None or not keys:
            return None
        user_keys = Keys.from_master(self.secret)
        forms: dict[str, str] = {}
        for key in keys:
            raw = user_keys.recover_user_id(key)
            if raw:
                forms.update(dict.fromkeys(spellings(raw), key))
        search = BadEventSearch(body_key(self.secret), user_keys, forms, users=True)
        await search.update(db, keys)
        return search

    async def counts(
        self,
        db: aiosqlite.Connection,
        writer: central.CentralWriter,
        done: Callable[[int], object] | None = None,
    ) -> int:
        """Deliver the daily counts that grew since last delivered (``count > sent``), batch by
        batch in key order (after the last key of the batch before: a count that grows during
        the round goes with the next one, however busy today is), each batch's absolute counts
        upserted centrally under the node (``storage.node``; the host name when none is given)
        and the store's instance, then each row's ``sent`` moved up to the count delivered.
        Idempotent: a batch sent again (a crash between the two, a second sync of the store)
        changes nothing centrally, where only a larger count replaces a smaller; a count that
        grew meanwhile stays above ``sent`` and goes again. Rows that retention or nothing ever
        changes again are not read again."""
        node = self.node or socket.gethostname()
        instance = await store_instance(db) or ""
        key = ", ".join(central.COUNT_KEY)
        marks = ", ".join("?" for _ in central.COUNT_KEY)
        size, delivered = self.options.batch_size, 0
        after: tuple[Any, ...] = ()
        while True:
            where = "count > sent" + (f" AND ({key}) > ({marks})" if after else "")
            sql = f"SELECT {key}, count FROM {COUNTS} WHERE {where} ORDER BY {key} LIMIT ?"
            async with db.execute(sql, (*after, size)) as cursor:
                rows = [tuple(row) for row in await cursor.fetchall()]
            if not rows:
                return delivered
            await writer.upsert_counts(node, instance, rows)
            await _mark_sent(db, rows)
            delivered += len(rows)
            self.metrics.sync_rows.labels(READER, COUNTS).inc(len(rows))
            if done is not None:
                done(len(rows))
            if len(rows) < size:
                return delivered
            after = rows[-1][: len(central.COUNT_KEY)]

    async def _table(
        self,
        db: aiosqlite.Connection,
        writer: central.CentralWriter,
        plan: central.TablePlan,
        name: str,
        done: Callable[[int], object] | None = None,
        before: Callable[[], Awaitable[bool]] | None = None,
    ) -> int:
        """Deliver one table's new rows, batch by batch; the next batch is read from SQLite (in
        aiosqlite's thread) while the current one is written to PostgreSQL. ``before`` runs
        before each batch is written (the erasures recorded since go first); when it answers
        True, the batch, read before them, is read again. After each batch the lag gauges are
        brought up to date, and a long backlog says how far it is in the log every
        ``PROGRESS_SECONDS``."""
        size, delivered = self.options.batch_size, 0
        said = time.monotonic()
        after, version = await cursor_at(db, name)
        rows, last = await read_after(db, plan.table, plan.columns, after, size)
        while rows:
            if before is not None and await before():
                after, version = await cursor_at(db, name)
                rows, last = await read_after(db, plan.table, plan.columns, after, size)
                continue
            ahead = (
                asyncio.ensure_future(read_after(db, plan.table, plan.columns, last, size))
                if len(rows) == size
                else None
            )
            try:
                await writer.insert(plan, rows)
                moved = await advance(db, name, after, last, version)
            except BaseException:
                if ahead is not None:
                    ahead.cancel()
                    await asyncio.gather(ahead, return_exceptions=True)
                raise
            if moved:
                delivered += len(rows)
                self.metrics.sync_rows.labels(READER, plan.table).inc(len(rows))
                left = await publish_progress(db, self.metrics, READER, plan.table, last, self.clock)
                if time.monotonic() - said >= PROGRESS_SECONDS and left:
                    said = time.monotonic()
                    log.info(
                        "central sync catching up: %s: %d rows delivered, %d to go",
                        plan.table,
                        delivered,
                        left,
                    )
                if done is not None:
                    done(len(rows))
            if ahead is None:
                break
            if moved:
                after, version = last, moved
                rows, last = await ahead
            else:  # someone else (a cron ``sync --once``) moved the cursor, or a delete clamped it
                ahead.cancel()
                await asyncio.gather(ahead, return_exceptions=True)
                after, version = await cursor_at(db, name)
                rows, last = await read_after(db, plan.table, plan.columns, after, size)
        return delivered

    async def publish_lag(
        self, db: aiosqlite.Connection, *, count: bool = True
    ) -> dict[str, tuple[int, float]]:
        """The lag per table in ``/metrics`` (``count=False``: its age alone, between attempts)."""
        tables = [table for table in SYNC_TABLES if await local_columns(db, table)]
        found = await publish_lag(db, self.metrics, READER, tables, self.clock, count=count)
        if count and "sent" in await local_columns(db, COUNTS):
            # Rows only: a count has a day, no time, and the age of its growth is not kept.
            async with db.execute(f"SELECT count(*) FROM {COUNTS} WHERE count > sent") as cursor:
                row = await cursor.fetchone()
            rows = int(row[0]) if row else 0
            self.metrics.sync_lag_rows.labels(READER, COUNTS).set(rows)
            found[COUNTS] = (rows, 0.0)
        return found

    async def open_local(self) -> aiosqlite.Connection:
        db = await connect(self.store_path)
        try:
            await migrate(db)  # the cursor table; the gateway's store has usually done this already
        except BaseException:
            await db.close()
            raise
        return db

    async def once(
        self,
        progress: Progress | None = None,
        *,
        waiting: Callable[[Holder], object] | None = None,
        wait: float | None = None,
    ) -> dict[str, int]:
        """One complete round, for ``gateway sync --once``; errors propagate. A round of the
        store running in another process (the gateway's task) is waited for first: ``waiting``
        is told whose, and after ``wait`` seconds ``storage.roundlock.RoundTimeout``."""
        db = await self.open_local()
        try:

            async def round_on(conn: asyncpg.Connection) -> dict[str, int]:
                return await self.round(db, central.CentralWriter(conn), progress)

            delivered = await central.one_round(
                self.lock, "sync --once", self.connect, round_on, waiting, wait
            )
            await self.publish_lag(db)
            return delivered
        finally:
            await db.close()

    @property
    def key(self) -> str:
        """The setting a wrong URL is fixed in, as the log names it: ``central.url (NAME)``."""
        return central.url_key(self.options.url)

    async def connect(self) -> asyncpg.Connection:
        """A connection to the central store at ``dsn`` as it is now."""
        return await central.connect(self.dsn, self.options.connect_timeout)

    async def run(self) -> None:
        """Until cancelled: rounds every ``interval_seconds``, retries with backoff on failure;
        a problem is logged once (``Failures``), the end of an outage too
        (``central.keep_in_rounds``). One writer per connection: its staging tables are that
        connection's. Each round holds the store's round lock: a ``gateway sync --once``'s
        round running is waited for (said at info level), the lag gauges kept current meanwhile."""
        db = await self.open_local()
        writer: central.CentralWriter | None = None

        async def round_on(conn: asyncpg.Connection) -> None:
            nonlocal writer
            if writer is None or writer.conn is not conn:
                writer = central.CentralWriter(conn)
            await self.round(db, writer)

        async def publish(failing: bool, first: bool) -> None:
            await self.publish_lag(db, count=first)

        try:
            await central.keep_in_rounds(
                self.connect,
                self.options,
                self.metrics,
                READER,
                Failures(log, "central sync", self.metrics.readers_failing, READER),
                round_on,
                publish,
                lock=self.lock,
            )
        finally:
            await db.close()


async def _apply_batch(
    db: aiosqlite.Connection,
    keys: Sequence[tuple[str, str]],
    horizon: int,
    done: bool,
    search: BadEventSearch | None,
) -> dict[str, int]:
    """One batch of central erased keys in one local write transaction: each key's rows from
    before its erasure deleted, the kept bad events received before it that ``search`` finds
    naming it too (brought up to date first: the bad events stored since it was made), the key
    recorded in ``central_erasures`` (again under a new id: readers watching the erasure mark
    read again), and, ``done``, the horizon moved. The readers' cursors are clamped as after
    any delete (``storage.cursors``). Rows deleted per table."""
    now = iso(datetime.now(UTC))
    counts: dict[str, int] = {}
    await db.execute("BEGIN IMMEDIATE")
    try:
        tops = await table_tops(db)
        bad = await _bad_events_of(db, keys, search)
        for key, erased_at in keys:
            deleted = await delete_before(db, key, erased_at)
            if search is not None:
                deleted["bad_events"] = 0
            if ids := bad.get(key):
                marks = ",".join("?" for _ in ids)
                cursor = await db.execute(f"DELETE FROM bad_events WHERE id IN ({marks})", ids)
                deleted["bad_events"] = max(cursor.rowcount, 0)
            for table, n in deleted.items():
                counts[table] = counts.get(table, 0) + n
            await db.execute(
                "INSERT OR REPLACE INTO central_erasures (key, erased_at, applied, deleted)"
                " VALUES (?, ?, ?, ?)",
                (key, erased_at, now, sum(deleted.values())),
            )
        if done:
            await db.execute(
                "INSERT INTO central_erasures_horizon (id, horizon, updated) VALUES (1, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET horizon = excluded.horizon, updated = excluded.updated",
                (horizon, now),
            )
        await clamp_cursors(db, tops)
        await db.execute("COMMIT")
    except BaseException:
        await rollback(db)
        raise
    return counts


async def _bad_events_of(
    db: aiosqlite.Connection, keys: Sequence[tuple[str, str]], search: BadEventSearch | None
) -> dict[str, list[str]]:
    """Inside the batch's transaction: the bad events ``search`` finds, each under the first key
    of ``keys`` it names that was erased at or after the bad event was received."""
    if search is None:
        return {}
    await search.update(db, [key for key, _ in keys])
    found: dict[str, list[str]] = {}
    for event_id, named in search.named.items():
        for key, erased_at in keys:
            if key in named and search.ts[event_id] <= erased_at:
                found.setdefault(key, []).append(event_id)
                break
    return found


async def counts_synced(db: aiosqlite.Connection, conn: asyncpg.Connection) -> bool:
    """Whether both sides have the daily counts' sync: the local ``sent`` (migration 0012), the
    central table (0008)."""
    if "sent" not in await local_columns(db, COUNTS):
        return False
    return "instance" in await central.central_columns(conn, COUNTS)


async def _mark_sent(db: aiosqlite.Connection, rows: Sequence[Sequence[Any]]) -> None:
    """Each delivered row's ``sent`` up to the count delivered (never down: a second sync of the
    store may have delivered a larger one first), in one write transaction."""
    key = " AND ".join(f"{column} = ?" for column in central.COUNT_KEY)
    await db.execute("BEGIN IMMEDIATE")
    try:
        await db.executemany(
            f"UPDATE {COUNTS} SET sent = max(sent, ?) WHERE {key}", [(row[-1], *row[:-1]) for row in rows]
        )
        await db.execute("COMMIT")
    except BaseException:
        await rollback(db)
        raise
