"""Retention (``privacy.retention_days``): deletes events older than the limit from the local
store and, when configured, the reporting mirror and the central one; and the daily task that does
it in the gateway.

Owns which tables age out and by which column. Kept regardless of age: ``erasures`` (proof of
an erasure, and what keeps an erased user's late rows out), ``central_erasures`` (the same for
erasures made through other nodes), ``creator_standings`` (the registry) and ``sync_cursors``.
A purge runs on a connection of its own, in one ``BEGIN IMMEDIATE`` transaction per store,
like an erasure; readers keep their rowid cursors (a deleted row is simply not read). The
central store purges the tables it holds, its daily counts too; the mirror, its own per-node
daily counts besides a local store's tables.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.config import Settings
from gateway.events import iso
from gateway.metrics import Metrics
from storage.access import full_disk
from storage.cursors import clamp_cursors, table_tops
from storage.erasure import truncate_wal
from storage.importrows import forget
from storage.local import connect, disk_fault, failure_kind, rollback
from storage.migrate import migrate, refuse_newer
from storage.readonly import open_read_only

log = logging.getLogger("gateway.retention")

LOCAL_TABLES = {
    "touchpoints": "ts",
    "identities": "ts",
    "conversions": "ts",
    "verdict_changes": "ts",
    "receipts": "ts",
    "bad_events": "ts",
    "daily_counts": "day",
}
"""Table → its time column: rows older than the cutoff go (``day`` holds a ``YYYY-MM-DD``)."""
MIRROR_TABLES = {**LOCAL_TABLES, "mirror_daily_counts": "day"}
"""A reporting mirror's (``storage.mirror``): a local store's, and each node's daily counts."""
CENTRAL_TABLES = {
    "touchpoints": "ts",
    "identities": "ts",
    "conversions": "ts",
    "verdict_changes": "ts",
    "daily_counts": "day",  # PostgreSQL migration 0008: a date
}
INTERVAL = 86400.0
"""Seconds between purges in the gateway (the first runs at start-up)."""


class PurgeFailed(Exception):
    """One store's purge failed (``__cause__``): ``store`` names it, by its file or key,
    ``path`` is its file (None for the central store), and ``done`` holds the stores purged
    before it, committed (counted only, in a dry run)."""

    def __init__(
        self, store: str, done: dict[str, dict[str, int]], path: Path | None = None, central: str = ""
    ) -> None:
        super().__init__(store)
        self.store, self.done, self.path = store, done, path
        self.central = central
        """The central store's: its DSN (which holds the password: never said), else ""."""


def central_failure(failed: PurgeFailed, url: str) -> str | None:
    """What a failed purge of the central store (``url``: ``central.url`` as written) says of
    PostgreSQL or the network, in one line as the sync says it (``connection refused: nothing
    listens on 10.0.0.5:5432; the server in central.url cannot be reached``), its host and port
    always named, never the DSN; None for another store's failure, or a defect (its traceback
    is worth its lines)."""
    cause = failed.__cause__
    if not failed.central or cause is None:
        return None
    from storage import central  # asyncpg: the postgres extra, imported by the purge

    if not isinstance(cause, central.PG_ERRORS):
        return None
    key = central.url_key(url)
    said = central.explain(cause, key)
    parts = urllib.parse.urlsplit(failed.central)
    address = central.dsn_address(failed.central)
    try:
        port = parts.port
    except ValueError:  # several hosts, each with its port: the netloc names them
        port = None
    if address and port is None and "," not in address:
        address += ":5432"
    if address and address not in said:
        said += f" ({key} names {address})"
    return said


async def disk_fault_of(failed: PurgeFailed) -> str | None:
    """What a failed purge's SQLite error says of the disk under its store, in ``/healthz``'s
    words (``disk full``, ``read-only store``…), SQLite's ``disk I/O error`` on a disk with no
    room left called a full disk, as for the store's commits; None for any other failure (the
    central store, a statement's own error), whose traceback is worth its lines."""
    cause = failed.__cause__
    if failed.path is None or cause is None or disk_fault(cause) is None:
        return None
    return failure_kind(cause, await asyncio.to_thread(full_disk, failed.path) is not None)


def cutoff(now: datetime, days: int) -> datetime:
    return now.astimezone(UTC) - timedelta(days=days)


def _bound(column: str, before: datetime) -> str:
    return before.date().isoformat() if column == "day" else iso(before)


async def purge_local(
    path: Path, before: datetime, *, dry_run: bool = False, tables: Mapping[str, str] = LOCAL_TABLES
) -> dict[str, int]:
    """Rows older than ``before`` per table of ``tables`` the store has: deleted, or only
    counted with ``dry_run``."""
    counts: dict[str, int] = {}
    # A dry run reads through a connection that cannot write (until 2026-12-07 a writable one,
    # which set the store's journal mode and could not read a store its user may only read).
    db = await (open_read_only(path) if dry_run else connect(path))
    try:
        # A newer gateway's tables may age out by rules this one lacks; an older one's store is
        # migrated first (a dry run writes nothing, that included), as for an erasure.
        await (refuse_newer(db) if dry_run else migrate(db))
        await db.execute("BEGIN" if dry_run else "BEGIN IMMEDIATE")
        try:
            tops = await table_tops(db)
            async with db.execute("SELECT name FROM sqlite_master WHERE type = 'table'") as cur:
                present = {row[0] for row in await cur.fetchall()}
            for table, column in tables.items():
                if table not in present:  # a mirror no round of this version opened yet
                    continue
                bound = _bound(column, before)
                if dry_run:
                    async with db.execute(
                        f"SELECT count(*) FROM {table} WHERE {column} < ?", (bound,)
                    ) as cur:
                        row = await cur.fetchone()
                    counts[table] = int(row[0]) if row else 0
                else:  # with the import records of the rows (ids only, yet a link to a run)
                    await forget(db, table, f"{column} < ?", (bound,))
                    cursor = await db.execute(f"DELETE FROM {table} WHERE {column} < ?", (bound,))
                    counts[table] = max(cursor.rowcount, 0)
            if not dry_run:  # rowids freed by the deletes must not hide new rows from readers
                await clamp_cursors(db, tops)
            await db.execute("ROLLBACK" if dry_run else "COMMIT")
        except BaseException:
            await rollback(db)
            raise
        if not dry_run and any(counts.values()):
            # The log's older frames still hold the purged rows' pages, as after an erasure;
            # the gateway's open connections keep the log from being emptied on close.
            await truncate_wal(db, "retention purge")
    finally:
        await db.close()
    return counts


async def purge_central(
    dsn: str, timeout: float, before: datetime, *, dry_run: bool = False
) -> dict[str, int]:
    """The same on the central PostgreSQL store (its tables of events, and the daily counts
    once a node's sync has made their table)."""
    from storage import central  # asyncpg: the postgres extra

    conn = await central.connect(dsn, timeout)
    counts: dict[str, int] = {}
    try:
        async with conn.transaction():
            await conn.execute(central.hold_at_most())  # silent, it holds no lock for hours
            for table, column in CENTRAL_TABLES.items():
                if not await central.central_columns(conn, table):
                    continue
                bound: Any = before.date() if column == "day" else before
                if dry_run:
                    value: Any = await conn.fetchval(
                        f"SELECT count(*) FROM {table} WHERE {column} < $1", bound
                    )
                    counts[table] = int(value)
                else:
                    status = await conn.execute(f"DELETE FROM {table} WHERE {column} < $1", bound)
                    counts[table] = int(status.split()[-1])
    finally:
        await conn.close()
    return counts


async def purge(settings: Settings, now: datetime, *, dry_run: bool = False) -> dict[str, dict[str, int]]:
    """Every store's purge for ``privacy.retention_days``: ``{"local": …, "mirror": …, "central": …}``
    (the reporting mirror holds the central store's rows: they go from it as from there);
    nothing when retention is 0 (keep forever)."""
    days = settings.options.privacy.retention_days
    if days <= 0:
        return {}
    before = cutoff(now, days)
    done: dict[str, dict[str, int]] = {}
    store = f"the store {settings.store_path} (storage.path)"
    path: Path | None = settings.store_path
    dsn = ""
    try:
        done["local"] = await purge_local(settings.store_path, before, dry_run=dry_run)
        mirror = settings.mirror_path
        if mirror is not None and await asyncio.to_thread(mirror.exists):
            store, path = f"the reporting mirror {mirror} (central.mirror_path)", mirror
            done["mirror"] = await purge_local(mirror, before, dry_run=dry_run, tables=MIRROR_TABLES)
        if settings.central_url:
            store, path, dsn = "the central store (central.url)", None, settings.central_url
            timeout = settings.options.central.connect_timeout
            done["central"] = await purge_central(settings.central_url, timeout, before, dry_run=dry_run)
    except Exception as err:  # which store, and what the ones before it had deleted
        raise PurgeFailed(store, done, path, dsn) from err
    return done


async def purge_counted(settings: Settings, metrics: Metrics, now: datetime) -> dict[str, dict[str, int]]:
    """One purge, counted in ``gateway_purged_rows_total{table}`` and logged per store; when one
    store's purge fails, what the stores before it deleted (committed) is counted all the same."""
    try:
        done = await purge(settings, now)
    except PurgeFailed as failed:
        _counted(settings, metrics, failed.done)
        raise
    return _counted(settings, metrics, done)


Done = dict[str, dict[str, int]]
"""Per store (``local``, ``mirror``, ``central``), per table: the rows a purge deleted."""


def _counted(settings: Settings, metrics: Metrics, done: Done) -> Done:
    for store, counts in done.items():
        for table, rows in counts.items():
            metrics.purged_rows.labels(table if store == "local" else f"{store}:{table}").inc(rows)
        days = settings.options.privacy.retention_days
        log.info("retention: purged rows older than %d days from the %s store: %s", days, store, counts)
    return done


async def run_daily(
    settings: Settings,
    metrics: Metrics,
    interval: float = INTERVAL,
    on_purged: Callable[[], object] | None = None,
) -> None:
    """The gateway's purge task: at start-up, then every ``interval`` seconds. A failure (the
    central store away) is logged and retried at the next run; the proxy never notices.
    ``on_purged``: called after a purge that deleted rows, or failed (one store's purge may
    have committed before another's failed): the gateway's reports say something else."""
    while True:
        done: dict[str, dict[str, int]] | None = None
        try:
            done = await purge_counted(settings, metrics, datetime.now(UTC))
        except asyncio.CancelledError:
            raise
        except PurgeFailed as failed:
            if (fault := await disk_fault_of(failed)) is not None:
                # The disk (full, say): one line, as the other background tasks say it (until
                # 2026-12-07 SQLite's traceback at ERROR, every run while the disk stayed full).
                log.warning(
                    "retention: purge failed on %s: %s (%s); retried at the next run",
                    failed.store,
                    fault,
                    failed.__cause__,
                )
            elif (said := central_failure(failed, settings.options.central.url)) is not None:
                # PostgreSQL away: one line, as the sync says it (until 2026-12-07 asyncpg's
                # traceback at ERROR, every run while it stayed away).
                log.warning(
                    "retention: purge failed on %s: %s; tried again at the next run", failed.store, said
                )
            else:
                log.error(
                    "retention: purge failed on %s: %s; retried at the next run",
                    failed.store,
                    failed.__cause__,
                    exc_info=failed.__cause__,
                )
        except Exception:
            log.exception("retention: purge failed; retried at the next run")
        if on_purged is not None and (done is None or any(any(c.values()) for c in done.values())):
            on_purged()
        await asyncio.sleep(interval)
