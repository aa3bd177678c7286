"""Import runs: what the store records of each ``gateway import``, listing runs, undoing one.

Owns the ``import_runs`` and ``import_rows`` tables (migration 0016). Every row the import's
own write connection inserts is recorded by temporary triggers on that connection
(``record_sql``: the first one records and numbers the run; a row already stored, skipped by
``ON CONFLICT DO NOTHING``, is not the run's, and live rows the gateway writes meanwhile are
never recorded); ``FINISH_SQL`` stamps its end and counts, and the signal that stopped it
part way, if one did. An import that adds no row is recorded at its end, with no row
(``EMPTY_SQL``; until 2026-12-07 it recorded no run). Runs of gateways before migration 0016
were not recorded: their rows cannot be told from live ones.

The records of rows an erasure or a retention purge deletes go with them
(``storage.importrows``, which the server loads without this module). ``undo_run`` removes
exactly the rows a run added — its touchpoints, bindings (identities) and conversions, and the
verdict changes made on its touchpoints since — in one write transaction, holding the central
sync's round lock (``storage.roundlock``) so that no round delivers them meanwhile, with the
readers' cursors clamped (``storage.cursors``). It refuses when any of them was already
delivered to the central store, which would keep them (and the reporting mirrors fed from it).
Rows a sink delivered stay delivered: the undo says how many. First and last touch are derived
(the ``visitors`` view), so they follow. Blocking work runs off the loop only through
aiosqlite.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite

from gateway.events import iso
from storage.cursors import clamp_cursors, table_tops
from storage.erasure import truncate_wal
from storage.importrows import RECORDED
from storage.local import BUSY_TIMEOUT_MS, HALT, connect, read_only, rollback
from storage.migrate import refuse_newer, refuse_newer_file
from storage.readonly import open_read_only
from storage.roundlock import RoundLock

DERIVED = "verdict_changes"
"""Rows about a run's touchpoints (re-scores, analysts' verdicts), removed with them."""
log = logging.getLogger("gateway.import")


UNDONE = f"{HALT}import run undone"
"""Why the store refuses an import's rows once its run was undone (``--undo`` while it ran): the
rows would be recorded under a run already undone, which no undo could then remove."""


class UndoRefused(Exception):
    """The run cannot be undone (unknown, or rows already in the central store): the reason."""


def record_sql(fmt: str, files: list[str], started: datetime) -> str:
    """Temporary triggers (and a temporary table) for the import's write connection: at its
    first row inserted, the run is recorded and numbered, inside that row's transaction (so an
    import waiting on another process's write lock waits only as its commits do, and two
    imports at once get two numbers); each row it inserts then is that run's. Once the run is
    undone (``--undo`` while it runs), every row is refused (``UNDONE``): the import stops. The
    run as it would be recorded is kept too (``import_run_new``), for ``EMPTY_SQL``."""
    run = f"({_quoted(iso(started))}, {_quoted(fmt)}, {_quoted(json.dumps(files))})"
    script = "CREATE TEMP TABLE import_run_id (id INTEGER NOT NULL);"
    script += "CREATE TEMP TABLE import_run_new (started TEXT, format TEXT, files TEXT);"
    script += f"INSERT INTO import_run_new VALUES {run};"
    for table in RECORDED:
        script += (
            f"CREATE TEMP TRIGGER import_run_{table} AFTER INSERT ON main.{table} BEGIN"
            f" SELECT RAISE(ABORT, '{UNDONE}') WHERE EXISTS (SELECT 1 FROM import_runs"
            " WHERE id = (SELECT id FROM import_run_id) AND undone IS NOT NULL);"
            " INSERT INTO import_runs (started, format, files) SELECT * FROM (VALUES"
            f" {run}) WHERE NOT EXISTS (SELECT 1 FROM import_run_id);"
            " INSERT INTO import_run_id (id) SELECT last_insert_rowid()"
            " WHERE NOT EXISTS (SELECT 1 FROM import_run_id);"
            f" INSERT INTO import_rows (run, tbl, id) SELECT id, '{table}', NEW.id FROM import_run_id;"
            " END;"
        )
    return script


STOPPED = "stopped"
"""The key of ``import_runs.added`` naming the signal that stopped the run part way (kept
there, beside the counts, rather than in a column of its own: a gateway of before it lists
the run as it did, and no migration stands between versions for it)."""
UNREAD = "unread"
"""The key of ``import_runs.added`` naming the run's files it could not read to their end (one
that broke part way: a gzip copy cut short or corrupt, a read error), a JSON list; NULL when it
read them all. Such a run imported no rest of a stopped run's files (``gateway.importruns``)."""

SKIPPED = "skipped"
"""The key of ``import_runs.added`` holding what the run skipped (``skipped_record``): the lines
it read, the lines (or Segment calls) it skipped and the most frequent reasons. Absent from a
run recorded before 2026-12-08, or one that never finished (killed): not known."""
TOP_REASONS = 3
"""The skip reasons a run records by name, the most frequent first; the others are counted
together (the summary printed at the run's end has them all)."""
REASON_CHARS = 200
"""A recorded reason's length at most (a store's refusal quotes SQLite's message)."""


@dataclass
class Skipped:
    """What a run skipped, as ``import_runs.added`` records it (``SKIPPED``)."""

    read: int
    """Lines read (as the summary counts them: blank ones too)."""
    total: int
    """Lines skipped (Segment: calls), as the summary's ``skipped:``."""
    reasons: int
    """How many reasons they were counted under."""
    top: list[tuple[str, int]]
    """The most frequent reasons (at most ``TOP_REASONS``), with their counts, most first."""

    @property
    def others(self) -> tuple[int, int]:
        """The skips of the reasons not in ``top``, and how many reasons they are."""
        return self.total - sum(count for _, count in self.top), self.reasons - len(self.top)


def skipped_record(read: int, skipped: dict[str, int]) -> str:
    """``SKIPPED``'s value, as JSON: of ``read`` lines, the ``skipped`` ones by reason (bounded to
    the ``TOP_REASONS`` most frequent, each at most ``REASON_CHARS`` long)."""
    counted = [(reason, count) for reason, count in skipped.items() if count > 0]
    top = sorted(counted, key=lambda item: -item[1])[:TOP_REASONS]  # ties: as counted, as the summary
    return json.dumps(
        {
            "read": read,
            "total": sum(count for _, count in counted),
            "reasons": len(counted),
            "top": [[_bounded(reason), count] for reason, count in top],
        }
    )


def _bounded(reason: str) -> str:
    return reason if len(reason) <= REASON_CHARS else reason[: REASON_CHARS - 1] + "…"


def _skipped(recorded: object) -> Skipped | None:
    """``SKIPPED`` as recorded; None when not (an older run), or not as this version writes it."""
    if not isinstance(recorded, dict):
        return None
    try:
        top = [(str(reason), int(count)) for reason, count in recorded.get("top", [])]
        read, total = int(recorded["read"]), int(recorded["total"])
        return Skipped(read, total, int(recorded.get("reasons", len(top))), top)
    except (KeyError, TypeError, ValueError):
        return None


FINISH_SQL = (
    "UPDATE import_runs SET finished = ?, added = json_object("
    + ", ".join(
        f"'{table}', (SELECT count(*) FROM import_rows WHERE run = import_runs.id AND tbl = '{table}')"
        for table in RECORDED
    )
    + f", '{STOPPED}', ?, '{UNREAD}', json(?), '{SKIPPED}', json(?))"
    " WHERE id = (SELECT id FROM import_run_id) RETURNING id"
)
"""On the import's write connection once its last commit is in: the run's end, the rows it
added and, for a run SIGINT or SIGTERM stopped before it had read every line, that signal's
name (``STOPPED``: NULL otherwise), the files it could not read to their end (``UNREAD``: a
JSON list, or NULL) and what it skipped (``SKIPPED``: ``skipped_record``); returns its number
(none: the import added no row, and recorded no run: ``EMPTY_SQL`` records it)."""


EMPTY_SQL = (
    "INSERT INTO import_runs (started, format, files, finished, added)"
    " SELECT started, format, files, ?, json_object("
    + ", ".join(f"'{table}', 0" for table in RECORDED)
    + f", '{STOPPED}', ?, '{UNREAD}', json(?), '{SKIPPED}', json(?)) FROM import_run_new"
    " WHERE NOT EXISTS (SELECT 1 FROM import_run_id) RETURNING id"
)
"""On the import's write connection once its last commit is in, when it added no row (so recorded
no run, ``record_sql``): the run recorded all the same, finished (``FINISH_SQL``'s parameters),
with no row, so that ``--list`` shows that the files were read (until 2026-12-07 no run was
recorded, and a stopped run whose rest added nothing was still listed as to be finished);
returns its number."""


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _added(db: sqlite3.Connection, run: int) -> dict[str, int]:
    counts = dict.fromkeys(RECORDED, 0)
    for table, count in db.execute(
        "SELECT tbl, count(*) FROM import_rows WHERE run = ? GROUP BY tbl", (run,)
    ):
        counts[table] = count
    return counts


def run_added(path: Path, run: int) -> dict[str, int]:
    """The rows run ``run`` added, per table: its own inserts (not another import's, nor the live
    gateway's, written meanwhile), as ``--list`` counts them and ``--undo`` removes them. Blocking."""
    with contextlib.closing(read_only(path, BUSY_TIMEOUT_MS / 1000)) as db:
        return _added(db, run)


@dataclass
class Run:
    """One recorded run, as ``gateway import --list`` shows it."""

    id: int
    started: str
    finished: str | None
    format: str
    files: list[str]
    added: dict[str, int]
    undone: str | None
    stopped: str | None = None
    """The signal that stopped it before it had read every line (SIGINT, SIGTERM), if one did."""
    unread: list[str] = field(default_factory=list)
    """Its files it could not read to their end (broken part way), as ``files`` names them."""
    skipped: Skipped | None = None
    """What it skipped; None when not recorded (a run of before 2026-12-08, or one killed)."""


def list_runs(path: Path) -> list[Run] | None:
    """Every recorded run, oldest first; None when the store records none (it does not exist,
    or no gateway of migration 0016 on has opened it); SchemaTooNew when a newer gateway
    migrated it. Blocking."""
    if not path.exists():
        return None
    # The busy timeout every command has (30 s until 2026-12-06: six times erase's wait).
    timeout = BUSY_TIMEOUT_MS / 1000
    refuse_newer_file(path)  # as `gateway run` does (until 2026-12-07 it was listed)
    with contextlib.closing(read_only(path, timeout)) as db:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'import_runs'").fetchone():
            return None
        runs = []
        for row in db.execute(
            "SELECT id, started, finished, format, files, added, undone FROM import_runs ORDER BY id"
        ).fetchall():
            run, started, finished, fmt, files, added, undone = row
            # A run that never finished (killed) is counted from what it recorded.
            recorded = json.loads(added)
            stopped = recorded.pop(STOPPED, None)
            unread = recorded.pop(UNREAD, None) or []
            skipped = _skipped(recorded.pop(SKIPPED, None))
            counts = recorded if finished else _added(db, run)
            runs.append(
                Run(run, started, finished, fmt, json.loads(files), counts, undone, stopped, unread, skipped)
            )
        return runs


@dataclass
class Undo:
    """What undoing a run removes (or removed), per table, and what was delivered already."""

    run: int
    rows: dict[str, int] = field(default_factory=dict)
    central: dict[str, int] = field(default_factory=dict)
    """Of them, rows the central sync has delivered, per table: the undo refuses."""
    sinks: dict[str, int] = field(default_factory=dict)
    """Of them, rows each sink has delivered (``sink:NAME``): they stay delivered."""
    undone: str | None = None
    """When the run was undone before (nothing is left to remove)."""


async def undo_run(path: Path, run: int, *, dry_run: bool = False) -> Undo:
    """Remove the rows ``run`` added (``dry_run``: only count them). UndoRefused for a run the
    store does not record, or one with rows already in the central store."""
    if not await asyncio.to_thread(path.exists):  # not created by asking (nor its lock file)
        raise UndoRefused(_unknown(path, run))
    if not dry_run:
        lock = RoundLock(path, "sync", log, "central sync")
        async with lock.hold("import --undo"):
            return await _undo(path, run, dry_run)
    return await _undo(path, run, dry_run)


async def _undo(path: Path, run: int, dry_run: bool) -> Undo:
    db = await (open_read_only(path) if dry_run else connect(path))  # a dry run cannot write
    try:
        await refuse_newer(db)
        await db.execute("BEGIN" if dry_run else "BEGIN IMMEDIATE")
        try:
            undo = await _plan(db, path, run)
            if undo.central and not dry_run:
                raise UndoRefused(_central_refusal(undo))
            if not dry_run and undo.undone is None:
                tops = await table_tops(db)
                await _delete(db, run)
                await clamp_cursors(db, tops)  # rowids freed must not hide new rows from readers
            await db.execute("ROLLBACK" if dry_run else "COMMIT")
        except BaseException:
            await rollback(db)
            raise
        if not dry_run and undo.undone is None and any(undo.rows.values()):
            # A wrong import is often another site's visitors: the log's older frames (and the
            # database's pages until a checkpoint) still hold the rows, as after an erasure.
            await truncate_wal(db, "import undo")
        return undo
    finally:
        await db.close()


def _central_refusal(undo: Undo) -> str:
    rows = ", ".join(f"{count:,} {table}" for table, count in undo.central.items())
    return (
        f"run {undo.run}: {rows} of its rows are already in the central store, which would keep them"
        " (and every reporting mirror fed from it): nothing was removed. Undo an import before the"
        " central sync delivers it (stop the gateway's sync, or import into a store without [central])"
    )


def _unknown(path: Path, run: int) -> str:
    return (
        f"--undo {run}: the store {path} records no import run {run} (gateway import --list shows"
        " those it records; imports before 2026-12-06 were not recorded and cannot be undone)"
    )


def _mine(table: str) -> str:
    """``table``'s rows of the run (one parameter: the run)."""
    if table == DERIVED:
        return "touchpoint_id IN (SELECT id FROM import_rows WHERE run = ? AND tbl = 'touchpoints')"
    return f"id IN (SELECT id FROM import_rows WHERE run = ? AND tbl = '{table}')"


async def _plan(db: aiosqlite.Connection, path: Path, run: int) -> Undo:
    async with db.execute("SELECT 1 FROM sqlite_master WHERE name = 'import_runs'") as cur:
        recorded = await cur.fetchone()
    row = None
    if recorded:
        async with db.execute("SELECT undone FROM import_runs WHERE id = ?", (run,)) as cur:
            row = await cur.fetchone()
    if row is None:
        raise UndoRefused(_unknown(path, run))
    undo = Undo(run, undone=row[0])
    async with db.execute("SELECT name, position FROM sync_cursors") as cur:
        cursors = [(str(name), int(position)) for name, position in await cur.fetchall()]
    for table in (*RECORDED, DERIVED):
        async with db.execute(f"SELECT count(*) FROM {table} WHERE {_mine(table)}", (run,)) as cur:
            found = await cur.fetchone()
        undo.rows[table] = int(found[0]) if found else 0
        for name, position in cursors:
            reader, _, read = name.rpartition(":")
            if read != table or not undo.rows[table]:
                continue
            sql = f"SELECT count(*) FROM {table} WHERE {_mine(table)} AND rowid <= ?"
            async with db.execute(sql, (run, position)) as cur:
                sent = await cur.fetchone()
            if not sent or not sent[0]:
                continue
            if reader == "central":
                undo.central[table] = int(sent[0])
            else:
                undo.sinks[reader] = undo.sinks.get(reader, 0) + int(sent[0])
    return undo


async def _delete(db: aiosqlite.Connection, run: int) -> None:
    for table in (DERIVED, *RECORDED):  # the verdicts first: they name the run's touchpoints
        await db.execute(f"DELETE FROM {table} WHERE {_mine(table)}", (run,))
    await db.execute("DELETE FROM import_rows WHERE run = ?", (run,))
    await db.execute("UPDATE import_runs SET undone = ? WHERE id = ?", (iso(datetime.now(UTC)), run))
