"""The commands as an operator meets them on files another user owns: run as ``nobody`` on a
store it may only read, a store folder it may not write, a config file it may not read.

Root ignores file modes, so the README's promises about these were never exercised by a suite
run as root (CI). Here root prepares the files, owned by root with the modes an operator's
machine has, in a 0755 folder of its own (``/tmp/pytest-of-root`` is not for others to
traverse), and each command runs in a subprocess as ``nobody``. A suite not run as root skips
them: only root can start a process as another user.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ENV

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="runs the commands as nobody on files root owns: only root can start a process as"
    " another user (and root itself ignores file modes, hence the switch)",
)

ROOT = Path(__file__).resolve().parents[2]
LINE = (
    '203.0.113.9 - - [20/Nov/2026:10:00:00 +0000] "GET /?utm_source=news HTTP/1.1" 200 5 "-"'
    ' "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"\n'
)


def _names(uid: int, gid: int) -> tuple[str, str]:
    """The user's and the group's names, as the gateway says them (their numbers if unnamed)."""
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    return user, group


def _nobody() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        return 65534, 65534
    return entry.pw_uid, entry.pw_gid


UID, GID = _nobody()
USER, GROUP = _names(UID, GID)


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {"PATH": "/usr/bin:/bin", "PYTHONPATH": path, "HOME": "/nonexistent", **ENV}


def as_nobody(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """``argv`` in ``cwd`` as nobody, bounded. Through ``setpriv`` where there is one: here
    ``subprocess``'s own ``user=`` is refused the interpreter (a symbolic link into /root),
    which ``setpriv``'s switch reaches."""
    setpriv = shutil.which("setpriv")
    who: dict[str, object] = {}
    if setpriv is not None:
        argv = (setpriv, f"--reuid={UID}", f"--regid={GID}", "--clear-groups", *argv)
    else:
        who = {"user": UID, "group": GID, "extra_groups": []}
    return subprocess.run(
        argv, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=60,
        **who,  # type: ignore[call-overload]
    )  # fmt: skip


def gateway(cwd: Path, *args: str, user: bool = True) -> subprocess.CompletedProcess[str]:
    """``gateway ARGS`` in ``cwd``, as nobody (``user``) or as root; bounded."""
    if user:
        return as_nobody(cwd, sys.executable, "-m", "gateway", *args)
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], cwd=cwd, env=_env(), capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip


@pytest.fixture(scope="module")
def template() -> Iterator[Path]:
    """A store of one imported landing, closed cleanly (no ``-wal``, no ``-shm``), made once."""
    made = Path(tempfile.mkdtemp(prefix="gw-nonroot-"))
    try:
        (made / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
        (made / "a.log").write_text(LINE)
        done = gateway(made, "import", "a.log", "--format", "combined", "--host", "shop.example",
                       "-c", "gw.toml", "--no-progress", user=False)  # fmt: skip
        assert done.returncode == 0, done
        assert not (made / "gw.db-wal").exists()
        yield made / "gw.db"
    finally:
        shutil.rmtree(made)


@pytest.fixture
def place(template: Path) -> Iterator[Path]:
    """A 0755 folder nobody reaches, holding ``gw.toml`` (0644) naming ``data/gw.db``, a copy of
    the template store, root's, 0644 in the 0755 folder ``data``: nobody may read, not write."""
    folder = Path(tempfile.mkdtemp(prefix="gw-nonroot-"))
    try:
        folder.chmod(0o755)
        (folder / "data").mkdir(mode=0o755)
        shutil.copyfile(template, folder / "data" / "gw.db")
        (folder / "data" / "gw.db").chmod(0o644)
        (folder / "gw.toml").write_text(
            '[storage]\npath = "data/gw.db"\n[proxy]\nworkers = 1\nlisten = "127.0.0.1:0"\n'
            '[admin]\nlisten = "127.0.0.1:0"\n[privacy]\nretention_days = 1\n'
        )
        (folder / "gw.toml").chmod(0o644)
        (folder / "a.log").write_text(LINE + LINE.replace("news", "mail"))  # one line imported, one new
        (folder / "a.log").chmod(0o644)
        yield folder
    finally:
        shutil.rmtree(folder)


def test_nobody_is_refused_what_root_owns(place: Path) -> None:
    """The switch works: otherwise every test here would pass as root without proving a thing."""
    done = as_nobody(place, sys.executable, "-c", "open('data/gw.db', 'r+b')")
    assert done.returncode == 1 and "PermissionError" in done.stderr, done


DRY_IMPORT = (
    "import",
    "a.log",
    "--format",
    "combined",
    "--host",
    "shop.example",
    "--dry-run",
    "--no-progress",
)
READS = [
    ("report",),
    ("report", "--fraud"),
    ("import", "--list"),
    ("replay-bad", "--dry-run"),
    ("erase", "u-1", "--dry-run"),
    ("import", "--undo", "1", "--dry-run"),
    ("reclassify", "--dry-run", "--no-progress"),
    ("purge", "--dry-run"),
]


@pytest.mark.parametrize("command", READS, ids=" ".join)
def test_a_command_that_cannot_read_a_stopped_store_says_why_and_what_to_do(
    place: Path, command: tuple[str, ...]
) -> None:
    """A store in WAL mode is read through its ``-shm`` file, which the first connection makes
    beside it: with no gateway running (none there) and the folder not writable to the user,
    SQLite cannot read the store at all, and said only `attempt to write a readonly database`
    of a read. Now one line names the folder, the user, and what to do; exit 1."""
    store = place / "data" / "gw.db"
    done = gateway(place, *command, "-c", "gw.toml")
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if "geo lookups are off" not in line]
    assert len(lines) == 1, lines
    assert str(store) in lines[0], lines
    assert f"{place / 'data'} is not writable to uid {UID}" in lines[0], lines
    assert "run the command as the user the gateway runs as, or while the gateway runs" in lines[0], lines
    assert sorted(p.name for p in (place / "data").iterdir()) == ["gw.db"]  # nothing made


@pytest.mark.parametrize("command", [("report",), ("import", "--list"), ("report", "--fraud")], ids=" ".join)
def test_a_store_read_while_the_gateway_has_it_open(place: Path, command: tuple[str, ...]) -> None:
    """The same store while the gateway has it open (its ``-wal`` and ``-shm`` there, root's,
    0644): the reading commands work as a user who may only read it, as the README says."""
    store = place / "data" / "gw.db"
    holder = sqlite3.connect(store)
    try:
        holder.execute("SELECT count(*) FROM touchpoints").fetchone()  # -wal and -shm stay
        assert Path(f"{store}-shm").exists()
        done = gateway(place, *command, "-c", "gw.toml")
    finally:
        holder.close()
    assert done.returncode == 0, done
    assert "Traceback" not in done.stderr, done.stderr


def test_a_dry_run_import_reads_a_store_it_may_only_read_and_writes_nothing(place: Path) -> None:
    """``gateway import --dry-run`` checks each row against the store (is it there already?),
    read only: as a user who may only read it, the gateway running, it says what a real run
    would add, and the store's bytes are as they were."""
    store = place / "data" / "gw.db"
    before = store.read_bytes()
    (place / "keep.toml").write_text('[storage]\npath = "data/gw.db"\n')  # no retention: a.log is old
    (place / "keep.toml").chmod(0o644)
    holder = sqlite3.connect(store)
    try:
        holder.execute("SELECT count(*) FROM touchpoints").fetchone()  # -wal and -shm stay
        done = gateway(place, *DRY_IMPORT, "-c", "keep.toml")
    finally:
        holder.close()
    assert done.returncode == 0, done
    assert (
        "  touchpoints:          2   would be new in the store: 1, already in the store: 1\n" in done.stdout
    )
    assert store.read_bytes() == before
    # Stopped, in a folder the user may not write: the store cannot be read (its -shm cannot be
    # made), which the dry run says, and it counts the lines all the same, as before it checked.
    assert not Path(f"{store}-shm").exists()
    done = gateway(place, *DRY_IMPORT, "-c", "keep.toml")
    assert done.returncode == 0, done
    assert "  touchpoints:          2\n" in done.stdout, done.stdout
    assert (
        f"  already in the store: not known, the store {store} could not be read: attempt to write a"
        f" readonly database ({place / 'data'} is not writable to uid {UID}"
    ) in done.stdout, done.stdout
    assert store.read_bytes() == before
    assert sorted(p.name for p in (place / "data").iterdir()) == ["gw.db"]  # nothing made


@pytest.mark.parametrize(
    "command",
    [*(c for c in READS if "--dry-run" in c), ("erase", "--visitor", "a" * 32, "--dry-run")],
    ids=" ".join,
)
def test_every_dry_run_reads_a_store_it_may_only_read_and_writes_nothing(
    place: Path, command: tuple[str, ...]
) -> None:
    """Each dry run as a user who may only read the store, the gateway running: it works, and
    the store's bytes are as they were. Until 2026-12-07 ``erase --dry-run`` deleted and rolled
    back through a writable connection and failed here (`attempt to write a readonly
    database`); the others read through writable connections too."""
    store = place / "data" / "gw.db"
    before = store.read_bytes()
    holder = sqlite3.connect(store)
    try:
        holder.execute("SELECT count(*) FROM touchpoints").fetchone()  # -wal and -shm stay
        done = gateway(place, *command, "-c", "gw.toml")
    finally:
        holder.close()
    assert done.returncode == 0, done
    assert "Traceback" not in done.stderr, done.stderr
    assert "dry run" in done.stdout or "would" in done.stdout, done.stdout
    assert store.read_bytes() == before


def test_an_erasure_on_a_store_it_may_only_read_says_which_file(place: Path) -> None:
    """A write (an erasure) on a store the user may only read, the gateway running: the store
    is read, the write refused; SQLite's words alone named neither file nor user."""
    store = place / "data" / "gw.db"
    holder = sqlite3.connect(store)
    try:
        holder.execute("SELECT count(*) FROM touchpoints").fetchone()
        done = gateway(place, "erase", "--visitor", "a" * 32, "-c", "gw.toml")
    finally:
        holder.close()
    assert done.returncode == 1, done
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"{store} is not writable to uid {UID}" in lines[0], lines
    assert "run the command as the user the gateway runs as" in lines[0], lines


def test_doctor_names_what_it_may_not_write(place: Path) -> None:
    """``gateway doctor`` as a user who may only read the store: a failure naming a path it may
    not write (the file, then the folder), not "the store (or its folder)"."""
    store = place / "data" / "gw.db"
    done = gateway(place, "doctor", "--timeout", "1", "-c", "gw.toml")
    assert done.returncode == 1, done
    assert f"[FAIL] store {store} is not writable: {store} is not writable to uid {UID}\n" in done.stdout
    os.chown(store, UID, GID)  # the file is the user's, the folder still root's
    done = gateway(place, "doctor", "--timeout", "1", "-c", "gw.toml")
    assert done.returncode == 1, done
    assert f"[FAIL] store {store} is not writable: {place / 'data'} is not writable to uid {UID}\n" in (
        done.stdout
    ), done.stdout
    store.chmod(0o600)
    os.chown(store, 0, 0)  # another user's 0600: not even readable
    done = gateway(place, "doctor", "--timeout", "1", "-c", "gw.toml")
    assert f"[FAIL] store {store} is not readable: {store} is not readable to uid {UID}\n" in done.stdout
    assert "Traceback" not in done.stderr


def test_doctor_says_to_make_a_store_folder_that_is_not_there(place: Path) -> None:
    """``storage.path`` in a folder not made yet, whose parent is root's (``/var/lib/gateway``
    before systemd's ``StateDirectory`` made it): the fix makes that folder for the gateway's
    user, it never tells to hand the parent (``/var/lib``) to it."""
    (place / "gw.toml").write_text('[storage]\npath = "data/state/gw.db"\n')
    done = gateway(place, "doctor", "--timeout", "1", "-c", "gw.toml")
    assert done.returncode == 1, done
    folder = place / "data" / "state"
    assert (
        f"[FAIL] store {folder / 'gw.db'}: cannot create it, its folder {folder} is not there and"
        f" {place / 'data'} is not writable\n"
        f"         fix: make {folder} for the user the gateway runs as (as root: install -d -o {USER}"
        f" -g {GROUP} {folder}), or point storage.path elsewhere\n"
    ) in done.stdout, done.stdout
    assert "chown" not in done.stdout, done.stdout
    assert not folder.exists()


def test_doctor_names_a_shm_file_another_user_owns(place: Path) -> None:
    """The store and its folder are the user's, but the ``-shm`` file is root's (left by a
    root process): ``gateway run`` as that user opens it read-only and records nothing, and
    the doctor said ``writable``."""
    store = place / "data" / "gw.db"
    os.chown(place / "data", UID, GID)
    os.chown(store, UID, GID)
    holder = sqlite3.connect(store)
    try:
        holder.execute("SELECT count(*) FROM touchpoints").fetchone()
        shm = Path(f"{store}-shm")
        os.chown(shm, 0, 0)  # root's SQLite gives them to the store's owner
        os.chown(f"{store}-wal", 0, 0)
        done = gateway(place, "doctor", "--timeout", "1", "-c", "gw.toml")
    finally:
        holder.close()
    assert done.returncode == 1, done
    assert f"[FAIL] store {store} is not writable: {store}-wal is not writable to uid {UID}\n" in (
        done.stdout
    ), done.stdout


def test_run_refuses_a_stopped_store_in_a_folder_it_may_not_write(place: Path) -> None:
    """``gateway run`` as a user who may not write the store's folder, the store closed cleanly
    (no ``-wal`` or ``-shm``): refused at start naming the store, exit 1, as a read-only mount."""
    done = gateway(place, "run", "-c", "gw.toml")
    assert done.returncode == 1, done
    lines = [line for line in done.stderr.splitlines() if "geo lookups are off" not in line]
    assert len(lines) == 1 and lines[0].startswith("gateway: cannot open the store (storage.path): "), lines
    assert f"{place / 'data' / 'gw.db'} is not writable to uid {UID}" in lines[0], lines


def test_check_and_report_on_a_config_it_may_not_read(place: Path) -> None:
    """A config file only root may read (0600), as ``/etc/gateway`` may hold: named with why,
    exit 2 for the commands; the doctor's fix says who may read it rather than to write a new
    one with ``gateway init`` (which would refuse: the file is there)."""
    config = place / "gw.toml"
    config.chmod(0o600)
    for command in (("check", "--quiet"), ("report",), ("import", "--list")):
        done = gateway(place, *command, "-c", "gw.toml")
        assert done.returncode == 2, done
        assert "gw.toml: cannot read: Permission denied" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    done = gateway(place, "doctor", "-c", "gw.toml")
    assert done.returncode == 1, done
    assert "[FAIL] config: gw.toml: cannot read: Permission denied\n" in done.stdout, done.stdout
    assert f"let the user who runs this (uid {UID}) read gw.toml" in done.stdout, done.stdout
    assert "gateway init" not in done.stdout, done.stdout


def test_check_passes_a_store_it_may_only_read(place: Path) -> None:
    """``gateway check`` reads no store: one the user may only read is no config problem."""
    done = gateway(place, "check", "--quiet", "-c", "gw.toml")
    assert done.returncode == 0, done
    assert done.stdout.startswith("# gw.toml: OK (store: "), done.stdout


def test_a_store_another_user_keeps_to_itself(place: Path) -> None:
    """A store file another user owns, ``0600``: SQLite said `unable to open database file`,
    as of a path that is not there; now which file, to which user, and what to do."""
    store = place / "data" / "gw.db"
    store.chmod(0o600)
    for command in (("report",), ("import", "--list"), ("erase", "u-1", "--dry-run")):
        done = gateway(place, *command, "-c", "gw.toml")
        assert done.returncode == 1, done
        lines = [line for line in done.stderr.splitlines() if "geo lookups are off" not in line]
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert (
            f"({store} is not readable to uid {UID}); run the command as the user the gateway runs as"
            in (lines[0])
        ), lines
