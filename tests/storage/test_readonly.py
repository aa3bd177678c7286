"""``storage.readonly``: a read-only connection hands a stopped store back as it found it, and
leaves a store another connection opened meanwhile (a gateway started) to that connection."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from storage.readonly import read_only


def made(tmp_path: Path) -> Path:
    store = tmp_path / "gw.db"
    with sqlite3.connect(store) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("CREATE TABLE t (x)")
        db.execute("INSERT INTO t VALUES (1)")
    db.close()
    return store


def names(store: Path) -> list[str]:
    return sorted(p.name for p in store.parent.iterdir())


def test_a_stopped_store_is_handed_back_as_found(tmp_path: Path) -> None:
    store = made(tmp_path)
    before = store.read_bytes()
    db = read_only(store)
    assert db.execute("SELECT x FROM t").fetchall() == [(1,)]
    assert names(store) == ["gw.db", "gw.db-shm", "gw.db-wal"]  # SQLite's, for the read
    db.close()
    assert names(store) == ["gw.db"]
    assert store.read_bytes() == before


def test_a_store_opened_meanwhile_keeps_its_files(tmp_path: Path) -> None:
    """A connection that opened the store while the read ran (the gateway, started) and wrote:
    its -wal and -shm stay while it has them, it goes on, and it removes them itself."""
    store = made(tmp_path)
    db = read_only(store)
    assert db.execute("SELECT count(*) FROM t").fetchone() == (1,)
    gateway = sqlite3.connect(store, isolation_level=None)
    gateway.execute("INSERT INTO t VALUES (2)")
    db.close()
    assert names(store) == ["gw.db", "gw.db-shm", "gw.db-wal"]
    gateway.execute("INSERT INTO t VALUES (3)")
    assert gateway.execute("SELECT count(*) FROM t").fetchone() == (3,)
    gateway.close()
    assert names(store) == ["gw.db"]
    with contextlib.closing(read_only(store)) as again:
        assert again.execute("SELECT count(*) FROM t").fetchone() == (3,)


def test_a_read_cannot_write(tmp_path: Path) -> None:
    store = made(tmp_path)
    with (
        contextlib.closing(read_only(store)) as db,
        pytest.raises(sqlite3.OperationalError, match="readonly"),
    ):
        db.execute("INSERT INTO t VALUES (2)")
    assert names(store) == ["gw.db"]
