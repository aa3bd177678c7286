"""The commands on a store whose file system is mounted read-only, run as root: no user may
write there, so "not writable to uid 0 …; run the command as the user the gateway runs as" sent
the operator after a user that does not help. Each case runs in a mount namespace of its own
(``unshare -m``; ``-r -m``, root in a user namespace, when not root) on a tmpfs remounted
read-only there, which the system outside never sees; skipped where such a mount is refused.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ENV

ROOT = Path(__file__).resolve().parents[2]
UNSHARE = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-r", "-m"]
MOUNT = 'mount -t tmpfs -o size=8m gw-ro "$1" && cp -a "$2"/. "$1"/ && mount -o remount,ro "$1" && shift 2'
"""In the namespace: a tmpfs at ``$1`` holding a copy of ``$2``'s files, remounted read-only."""
LINE = (
    '203.0.113.9 - - [20/Nov/2026:10:00:00 +0000] "GET /?utm_source=news HTTP/1.1" 200 5 "-"'
    ' "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"\n'
)


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "PYTHONPATH": path, **ENV}


def on_read_only(data: Path, files: Path, cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """``argv`` with ``data`` a read-only mount holding a copy of ``files``' files; bounded."""
    script = f'{MOUNT} && exec "$@"'
    return subprocess.run(
        [*UNSHARE, "sh", "-c", script, "sh", str(data), str(files), *argv],
        cwd=cwd, env=_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def _mountable() -> bool:
    if shutil.which("unshare") is None:
        return False
    with tempfile.TemporaryDirectory() as made:
        for name in ("mount", "files"):
            (Path(made) / name).mkdir()
        try:
            done = on_read_only(Path(made) / "mount", Path(made) / "files", Path(made), "true")
        except (OSError, subprocess.SubprocessError):
            return False
        return done.returncode == 0


pytestmark = pytest.mark.skipif(
    not _mountable(), reason="no mount namespace here (unshare -m, or a tmpfs mount in it, refused)"
)


@pytest.fixture(scope="module")
def template() -> Iterator[Path]:
    """A folder holding a store of one imported landing, closed cleanly (no ``-wal``, ``-shm``)."""
    made = Path(tempfile.mkdtemp(prefix="gw-ro-"))
    try:
        (made / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
        (made / "a.log").write_text(LINE)
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "import", "a.log", "--format", "combined", "--host",
             "shop.example", "-c", "gw.toml", "--no-progress"],
            cwd=made, env=_env(), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done
        (made / "gw.toml").unlink()
        (made / "a.log").unlink()
        yield made
    finally:
        shutil.rmtree(made)


@pytest.fixture
def place(tmp_path: Path) -> Path:
    """``gw.toml`` naming ``data/gw.db``; ``data`` is where each case mounts the store."""
    (tmp_path / "data").mkdir()
    (tmp_path / "gw.toml").write_text(
        '[storage]\npath = "data/gw.db"\n[proxy]\nworkers = 1\nlisten = "127.0.0.1:0"\n'
        '[admin]\nlisten = "127.0.0.1:0"\n'
    )
    return tmp_path


def _lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in done.stderr, done.stderr
    return [line for line in done.stderr.splitlines() if "geo lookups are off" not in line]


REMOUNT = "remount {data} read-write (mount -o remount,rw {data}), or keep the store on a file system"


@pytest.mark.parametrize("command", [("report",), ("erase", "u-1")], ids=" ".join)
def test_a_command_on_a_read_only_mount_says_so(
    place: Path, template: Path, command: tuple[str, ...]
) -> None:
    """Until 2026-12-07: ``(… data is not writable to uid 0, …); run the command as the user the
    gateway runs as`` — which, as root, it was."""
    data = place / "data"
    done = on_read_only(data, template, place, sys.executable, "-m", "gateway", *command, "-c", "gw.toml")
    assert done.returncode == 1, done
    (line,) = _lines(done)
    assert f"({data} is on a read-only file system (mount {data}), and SQLite reads the store" in line, line
    assert REMOUNT.format(data=data) in line, line
    assert "not writable to uid" not in line and "as the user the gateway runs as" not in line, line


def test_a_write_on_a_read_only_mount_with_its_wal_there_says_so(place: Path, template: Path) -> None:
    """The store's ``-wal`` and ``-shm`` there too (a gateway stopped without cleaning up, or a
    copy taken while it ran): SQLite reads it, and the erasure's write is refused."""
    source, with_wal = place / "source", place / "with-wal"
    shutil.copytree(template, source)
    with_wal.mkdir()
    holder = sqlite3.connect(source / "gw.db")
    try:
        holder.execute("SELECT count(*) FROM touchpoints").fetchone()  # -wal and -shm made
        for name in ("gw.db", "gw.db-wal", "gw.db-shm"):  # copied while the store is open
            shutil.copyfile(source / name, with_wal / name)
    finally:
        holder.close()
    data = place / "data"
    argv = ("erase", "--visitor", "a" * 32, "-c", "gw.toml")
    done = on_read_only(data, with_wal, place, sys.executable, "-m", "gateway", *argv)
    assert done.returncode == 1, done
    (line,) = _lines(done)
    assert "is on a read-only file system (mount " + str(data) + ")" in line, line
    assert REMOUNT.format(data=data) in line, line
    assert "not writable to uid" not in line, line


def test_doctor_and_run_on_a_read_only_mount_say_so(place: Path, template: Path) -> None:
    data = place / "data"
    store = data / "gw.db"
    done = on_read_only(data, template, place, sys.executable, "-m", "gateway", "doctor", "--timeout", "1",
                        "-c", "gw.toml")  # fmt: skip
    assert done.returncode == 1, done
    assert (
        f"[FAIL] store {store} is not writable: {store} is on a read-only file system (mount {data})\n"
        f"         fix: {REMOUNT.format(data=data)}"
    ) in done.stdout, done.stdout
    done = on_read_only(data, template, place, sys.executable, "-m", "gateway", "run", "-c", "gw.toml")
    assert done.returncode == 1, done
    (line,) = _lines(done)
    assert line.startswith(
        f"gateway: cannot open the store (storage.path): {store} is not writable: {store} is on a"
        f" read-only file system (mount {data}); {REMOUNT.format(data=data)}"
    ), line
    # No store there yet: the folder cannot be given to anyone (chown), it is the mount.
    (place / "gw.toml").write_text('[storage]\npath = "data/new.db"\n')
    done = on_read_only(data, template, place, sys.executable, "-m", "gateway", "doctor", "--timeout", "1",
                        "-c", "gw.toml")  # fmt: skip
    assert (
        f"[FAIL] store {data / 'new.db'}: cannot create it, {data} is on a read-only file system"
        f" (mount {data})\n         fix: {REMOUNT.format(data=data)}"
    ) in done.stdout, done.stdout
    assert "chown" not in done.stdout, done.stdout
