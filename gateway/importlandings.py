"""The landings an earlier ``gateway import`` run stored, for a robots.txt line of a later one.

Bots scoring re-scores a visitor's recent landings when the visitor fetches robots.txt within
``bots.window_seconds`` (``addons.bots``), from what it holds in memory: the landings of the lines
this run replayed. A log rotated between the landing and the fetch, its files imported in two
runs, had the landing in the store only, and the fetch re-scored nothing (until 2026-12-07). So a
robots.txt line looks up the visitor's landings in the store within the window, as bots scoring
last scored them (the latest re-score, else as stored: an analyst's verdict is no score), and
bots scoring holds them as its own (``Replayer.stored_landings``). Read only, and never creating
the store; a store that cannot be read gives none (the line is imported all the same, as before).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

from addons.bots import RECENT_TOUCHES, Touch
from gateway.events import iso
from storage.local import BUSY_TIMEOUT_MS
from storage.readonly import read_only

log = logging.getLogger("gateway.import")

_AROUND = f"""
SELECT t.id, t.ts, coalesce(c.bot_score, t.bot_score), coalesce(c.reasons, t.reasons),
       coalesce(c.verdict, t.verdict)
FROM touchpoints t
LEFT JOIN verdict_changes c ON c.id = (
    SELECT v.id FROM verdict_changes v
    WHERE v.touchpoint_id = t.id AND v.origin = 'rescore' ORDER BY v.id DESC LIMIT 1
)
WHERE t.visitor_key = ? AND t.ts > ? AND t.ts < ? AND t.verdict IS NOT NULL
ORDER BY t.ts DESC, t.rowid DESC LIMIT {RECENT_TOUCHES}
"""
"""A visitor's stored landings within a window around a time, newest first, as last scored. Those
of one time (a log's are whole seconds) in the order stored, the latest first, as bots scoring
holds a run's (until 2026-12-08 in whichever order the store gave them: other landings were
re-scored than one run of the same lines re-scores). The store is never vacuumed: its rowids
are the order of insertion."""


class StoredLandings:
    """A read-only look at the store ``path``, through one connection kept for the run (opened at
    the first look, ``close``d before the store's last close): until 2026-12-08 each robots.txt
    line opened a connection of its own, whose first statement parsed the store's whole schema
    (some 0.4 to 1.7 ms a line). The looks run in whichever worker thread (``asyncio.to_thread``),
    one at a time (a lock: ``close`` takes it too). A connection in autocommit mode reads the
    latest commit at each statement, as a new one does (this run's own landings, committed since
    the last look); the file is checked by its device and inode at each look, and a store put in
    its place (or made since: a dry run's of a store not made yet) is opened anew."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.failed = False
        """The store could not be read once: not tried again (said once, in the log)."""
        self._db: sqlite3.Connection | None = None
        self._file: tuple[int, int] | None = None
        self._lock = threading.Lock()
        self._closed = False

    def around(self, visitor_key: str, unix: float, window: float) -> list[Touch]:
        """The visitor's stored landings less than ``window`` seconds from ``unix`` (at most
        bots scoring's ``RECENT_TOUCHES``), oldest first. Blocking."""
        if self.failed:
            return []
        lo = iso(datetime.fromtimestamp(unix - window, UTC))
        hi = iso(datetime.fromtimestamp(unix + window, UTC))
        with self._lock:
            try:
                info = os.stat(self.path)
            except OSError:  # a dry run's of a store not made yet
                self._forget()
                return []
            try:
                if self._closed:  # a look after the run's end: a connection of its own, as before
                    with contextlib.closing(read_only(self.path, BUSY_TIMEOUT_MS / 1000)) as own:
                        rows = own.execute(_AROUND, (visitor_key, lo, hi)).fetchall()
                else:
                    rows = self._connection(info).execute(_AROUND, (visitor_key, lo, hi)).fetchall()
            except sqlite3.Error as err:  # not a store, not migrated, locked past the busy timeout
                self._forget()
                self.failed = True
                log.warning(
                    "the store %s could not be read for the landings a robots.txt line re-scores (%s):"
                    " landings of earlier import runs are not re-scored by this run's robots.txt lines",
                    self.path,
                    err,
                )
                return []
        touches = []
        for touchpoint, ts, score, reasons, verdict in reversed(rows):
            at = datetime.fromisoformat(ts).timestamp()
            touches.append(Touch(touchpoint, int(score or 0), tuple(json.loads(reasons)), verdict, at))
        return touches

    def _connection(self, info: os.stat_result) -> sqlite3.Connection:
        """The kept connection to the file as ``info`` found it (opened, or opened again when
        another file is in the store's place), the lock held."""
        file = (info.st_dev, info.st_ino)
        if self._db is None or file != self._file:
            self._forget()
            self._db = read_only(self.path, BUSY_TIMEOUT_MS / 1000, threads=True)
            self._file = file
        return self._db

    def _forget(self) -> None:
        """Closes the kept connection, the lock held (the next look opens one again)."""
        db, self._db, self._file = self._db, None, None
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.close()

    def close(self) -> None:
        """Closes the kept connection for good, once no look is using it: before the store's last
        close, which takes its ``-wal`` away only as the last connection (a read-only one cannot).
        Blocking (off the event loop). A look after this still answers, through a connection of
        its own."""
        with self._lock:
            self._closed = True
            self._forget()
