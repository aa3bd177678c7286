"""The commands that only read the store — every ``--dry-run``, ``import --list``, the doctor —
on a real store file, as an operator runs them beside a stopped gateway: the store's bytes as
they were, and nothing left beside it (no ``-wal``, no ``-shm``: files of the reader's, which
another user's gateway may not be able to open). Each command is a subprocess.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ENV

ROOT = Path(__file__).resolve().parents[2]
LINE = (
    '203.0.113.9 - - [20/Nov/2026:10:00:00 +0000] "GET /?utm_source=news HTTP/1.1" 200 5 "-"'
    ' "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"\n'
)
DRY_RUNS = [
    ("import", "a.log", "--format", "combined", "--host", "shop.example", "--dry-run", "--no-progress"),
    ("import", "--undo", "1", "--dry-run"),
    ("replay-bad", "--dry-run"),
    ("reclassify", "--dry-run", "--no-progress"),
    ("purge", "--dry-run"),
    ("erase", "u-1", "--dry-run"),
    ("erase", "--visitor", "a" * 32, "--dry-run"),
]
READS = [("report",), ("report", "--fraud"), ("import", "--list"), *DRY_RUNS]


def gateway(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args, "-c", "gw.toml"],
        cwd=cwd, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **ENV},
    )  # fmt: skip


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of one imported landing (import run 1), closed cleanly: nothing beside it."""
    made = tmp_path_factory.mktemp("template")
    (made / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    (made / "a.log").write_text(LINE)
    done = gateway(made, "import", "a.log", "--format", "combined", "--host", "shop.example", "--no-progress")
    assert done.returncode == 0, done
    assert sorted(p.name for p in made.iterdir()) == ["a.log", "gw.db", "gw.toml"]
    return made / "gw.db"


@pytest.fixture
def place(template: Path, tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "gw.toml").write_text('[storage]\npath = "data/gw.db"\n[privacy]\nretention_days = 1\n')
    (tmp_path / "a.log").write_text(LINE + LINE.replace("news", "mail"))
    (tmp_path / "data").mkdir()
    shutil.copyfile(template, tmp_path / "data" / "gw.db")
    yield tmp_path


@pytest.mark.parametrize("command", READS, ids=" ".join)
def test_a_read_of_a_stopped_store_leaves_nothing_beside_it(place: Path, command: tuple[str, ...]) -> None:
    """Until 2026-12-07 ``import --list``, ``import --dry-run`` (and the doctor) left an empty
    ``-wal`` and ``-shm`` beside a stopped store: a read-only connection makes them and cannot
    remove them. Another user's (an operator's, writing the folder through a group) kept the
    gateway's user from opening the store at its next start. Now nothing is left."""
    store = place / "data" / "gw.db"
    before = store.read_bytes()
    done = gateway(place, *command)
    assert done.returncode == 0, done
    assert "Traceback" not in done.stderr, done.stderr
    assert sorted(p.name for p in store.parent.iterdir()) == ["gw.db"]
    assert store.read_bytes() == before


def test_the_doctor_leaves_nothing_beside_a_stopped_store(place: Path) -> None:
    """The doctor reads the store's schema read-only (and checks it may write): nothing left."""
    store = place / "data" / "gw.db"
    gateway(place, "doctor", "--timeout", "1")
    assert sorted(p.name for p in store.parent.iterdir()) == ["gw.db"]


@pytest.mark.parametrize("command", DRY_RUNS, ids=" ".join)
def test_a_dry_run_cannot_write_the_store(place: Path, command: tuple[str, ...]) -> None:
    """A store in rollback-journal mode (a copy made so, a tool's): every dry run read it through
    a writable connection, which put it in WAL mode (bytes 18 and 19 of its header, and a -wal
    beside it) — a write. Now it is read through one that cannot write: its bytes stay."""
    store = place / "data" / "gw.db"
    with sqlite3.connect(store) as db:
        assert db.execute("PRAGMA journal_mode = DELETE").fetchone() == ("delete",)
    db.close()
    before = store.read_bytes()
    done = gateway(place, *command)
    assert done.returncode == 0, done
    assert store.read_bytes() == before
    assert sorted(p.name for p in store.parent.iterdir()) == ["gw.db"]


def test_a_read_beside_a_gateway_leaves_the_gateways_files(place: Path) -> None:
    """A read while another connection has the store open (the gateway): the ``-wal`` and
    ``-shm`` are that connection's, left as they are, and what it wrote meanwhile is read."""
    store = place / "data" / "gw.db"
    holder = sqlite3.connect(store, isolation_level=None)
    try:
        holder.execute("UPDATE import_runs SET files = '[\"renamed.log\"]' WHERE id = 1")  # in the -wal
        done = gateway(place, "import", "--list")
        assert done.returncode == 0, done
        assert "renamed.log" in done.stdout, done.stdout
        assert sorted(p.name for p in store.parent.iterdir()) == ["gw.db", "gw.db-shm", "gw.db-wal"]
        assert holder.execute("SELECT count(*) FROM touchpoints").fetchone() == (1,)
    finally:
        holder.close()
    assert sorted(p.name for p in store.parent.iterdir()) == ["gw.db"]
