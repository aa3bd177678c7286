"""The import records (``import_rows``, migration 0016) of rows deleted other than by undoing
their run: an erasure's, a retention purge's, an erasure applied from another node's.

Owns ``RECORDED`` (the tables whose rows an import run records) and ``forget``. The records are
event ids only, but left behind they would tie an erased visitor's rows to a run, and to
whatever still knows those ids (a backup, a sink's destination). Kept apart from
``storage.imports``, which the server never loads.
"""

from __future__ import annotations

from collections.abc import Sequence

import aiosqlite

RECORDED = ("touchpoints", "identities", "conversions")
"""The tables an import writes, whose rows a run records."""


async def forget(db: aiosqlite.Connection, table: str, where: str, args: Sequence[object]) -> None:
    """Inside the caller's transaction, just before it deletes the rows of ``table`` that
    ``where`` (with ``args``) selects: the import records of those rows. Looked up by run (the
    key's first column: a few runs, each an index search), not by scanning every record."""
    if table not in RECORDED:
        return
    async with db.execute("SELECT 1 FROM sqlite_master WHERE name = 'import_rows'") as cursor:
        if await cursor.fetchone() is None:  # a store from before migration 0016
            return
    await db.execute(
        "DELETE FROM import_rows WHERE run IN (SELECT id FROM import_runs) AND tbl = ?"
        f" AND id IN (SELECT id FROM {table} WHERE {where})",
        (table, *args),
    )
