"""``gateway run`` itself as ``nobody``, where file modes are real: a store another user's
gateway left behind, a store folder it may not make, secrets missing, and a store made
read-only under it while it runs. The site is served whatever tracking meets (fail open), and
what the gateway says of it is true: ``/healthz``, the log, ``/metrics``.

Root prepares the files (in 0755 folders of its own: ``/tmp/pytest-of-root`` is not for others
to traverse) and starts the gateway through ``setpriv``, as ``tests/gateway/test_nonroot.py``
runs the other commands; a real aiohttp origin listens on 127.0.0.1. A suite not run as root
skips them: only root can start a process as another user.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import TOKEN
from tests.gateway.test_nonroot import GID, GROUP, LINE, ROOT, UID, USER, _env, as_nobody
from tests.gatewayproc import GatewayProcess

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="runs the gateway as nobody on files root owns: only root can start a process as"
    " another user (and root itself ignores file modes, hence the switch)",
)

AUTH = {"Authorization": f"Bearer {TOKEN}"}
LANDING = "/landing?utm_source=news&utm_medium=email&keep=1"


async def _page(request: web.Request) -> web.Response:
    return web.Response(text=f"page {request.path_qs}")


async def origin(upstream_server: Any) -> str:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _page)
    return str(await upstream_server(app))


def stored(store: Path) -> list[str]:
    """The sources of the store's touchpoints, read by root."""
    with sqlite3.connect(store) as db:
        return [row[0] for row in db.execute("SELECT source FROM touchpoints ORDER BY id")]


@pytest.fixture
def place() -> Iterator[Path]:
    """A 0755 folder of root's holding a 0755 ``data`` folder of root's for the store, and a
    ``tmp`` folder nobody may write (the gateway's TMPDIR)."""
    folder = Path(tempfile.mkdtemp(prefix="gw-runnonroot-"))
    try:
        folder.chmod(0o755)
        (folder / "data").mkdir(mode=0o755)
        (folder / "tmp").mkdir(mode=0o700)
        os.chown(folder / "tmp", UID, GID)
        yield folder
    finally:
        shutil.rmtree(folder)


def configure(place: Path, upstream: str, store: str = "data/gw.db") -> Path:
    config = place / "gw.toml"
    config.write_text(
        f'[storage]\npath = "{store}"\n[proxy]\nworkers = 1\nlisten = "127.0.0.1:0"\n'
        f'upstream = "{upstream}"\n[admin]\nlisten = "127.0.0.1:0"\n'
    )
    config.chmod(0o644)
    return config


def leave_a_store(store: Path) -> None:
    """The store as a gateway of root's leaves it when it dies (``kill -9``): schema made, its
    ``-wal`` and ``-shm`` beside it, all root's, 0644."""
    done = subprocess.run(
        [sys.executable, "-c", "import os, sqlite3, sys\n"
         "db = sqlite3.connect(sys.argv[1])\n"
         "db.execute('PRAGMA journal_mode = WAL')\n"
         "import asyncio, aiosqlite\n"
         "from storage.migrate import migrate\n"
         "async def made():\n"
         "    async with aiosqlite.connect(sys.argv[1], isolation_level=None) as a:\n"
         "        await migrate(a)\n"
         "asyncio.run(made())\n"
         "db.execute('SELECT count(*) FROM touchpoints').fetchone()\n"
         "os._exit(0)\n", str(store)],
        env=_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done
    for name in (store, Path(f"{store}-wal"), Path(f"{store}-shm")):
        assert name.exists() and name.stat().st_uid == 0, name
        name.chmod(0o644)


def modes(files: list[Path], mode: int, folder: Path, folder_mode: int) -> None:
    for name in files:
        name.chmod(mode)
    folder.chmod(folder_mode)


async def start(config: Path) -> GatewayProcess:
    return await GatewayProcess.start(config, user=(UID, GID), env={"TMPDIR": str(config.parent / "tmp")})


async def land(gw: GatewayProcess, session: aiohttp.ClientSession, source: str = "news") -> str:
    """A landing through the gateway; the page's body, as the origin saw the request."""
    async with session.get(gw.proxy + LANDING.replace("news", source)) as resp:
        assert resp.status == 200, resp
        return await resp.text()


async def health(gw: GatewayProcess, session: aiohttp.ClientSession) -> dict[str, Any]:
    async with session.get(gw.admin + "/healthz") as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


async def metric(gw: GatewayProcess, session: aiohttp.ClientSession, name: str) -> float:
    """A sample of ``/metrics``; 0 when it is not there."""
    async with session.get(gw.admin + "/metrics", headers=AUTH) as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


@pytest.mark.parametrize("folder", ["root's", "the user's"])
async def test_a_store_another_users_gateway_left_is_served_past(
    place: Path, upstream_server: Any, folder: str
) -> None:
    """The store and its ``-wal`` and ``-shm`` root's, 0644 (a gateway of another user left
    them), the folder writable to the user or not: the page is served with the tracking
    parameters gone, ``/healthz`` says the store is read-only from the first probe, the log says
    so in one line naming the file and the uid, and nothing says a touchpoint was recorded
    (``gateway_touchpoints_total`` counted the landing, though its commit failed)."""
    store = place / "data" / "gw.db"
    await asyncio.to_thread(leave_a_store, store)
    if folder == "the user's":
        await asyncio.to_thread(os.chown, place / "data", UID, GID)
    config = await asyncio.to_thread(configure, place, await origin(upstream_server))
    gw = await start(config)
    try:
        async with aiohttp.ClientSession() as session:
            body = await health(gw, session)
            assert body["status"] == "degraded", body
            assert body["store"].startswith("commits are failing (read-only store)"), body
            assert await land(gw, session) == "page /landing?keep=1"
            assert await metric(gw, session, "gateway_touchpoints_total") == 0
            assert await metric(gw, session, 'gateway_events_unconfirmed_total{reason="store_error"}') == 1
            assert (await health(gw, session))["status"] == "degraded"
        assert await gw.stop() == 0
    finally:
        await gw.kill()
    err = "".join(gw.stderr)
    assert "Traceback" not in err, err
    # Beside the landing's failed commit (which names the store too): nothing else of the store
    # (nor SQLite's words of a read).
    landing = ("store commit of 1 events failed: ", "events not stored (")
    said = [r["msg"] for r in gw.logs() if str(store) in r["msg"] and not r["msg"].startswith(landing)]
    assert len(said) == 1, said
    other = [r["msg"] for r in gw.logs() if r["level"] != "info" and r["logger"] != "gateway.geo"]
    assert [m for m in other if not m.startswith(landing)] == said, other
    assert said[0].startswith(
        f"the store {store} is read-only to this process ({store} is not writable to uid {UID})"
    )
    stopped = [r for r in gw.logs() if r["msg"] == "stopped"]
    assert stopped and stopped[0]["unconfirmed"] == 1, stopped
    assert await asyncio.to_thread(stored, store) == []


OPERATOR = 4242
"""An operator's account: no file here is its own; with the store's group, it may write the folder."""
IMPORT = ("import", "a.log", "--format", "combined", "--host", "shop.example", "--no-progress")


def reader(place: Path, who: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``gateway ARGS -c gw.toml`` as root, or as the operator in the store's group."""
    argv: tuple[str, ...] = (sys.executable, "-m", "gateway", *args, "-c", "gw.toml")
    if who == "an operator of its group":
        argv = ("setpriv", f"--reuid={OPERATOR}", f"--regid={OPERATOR}", f"--groups={GID}", *argv)
    return subprocess.run(argv, cwd=place, env=_env(), capture_output=True, text=True, timeout=60)


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("who", ["root", "an operator of its group"])
async def test_reads_of_a_stopped_store_leave_the_gateway_its_store(
    place: Path, upstream_server: Any, who: str
) -> None:
    """The store and its folder the gateway user's (0660, 0770: its group may write), the
    gateway stopped; root, or an operator in that group, reads it (``import --list``, an import
    dry run, the doctor). Until 2026-12-07 those reads left an empty ``-wal`` and ``-shm``, the
    reader's: root's SQLite gives them the store's owner, but the operator's stayed its own and
    the gateway then refused to start (`cannot open the store … -wal is not readable`). Now
    nothing is left, and the gateway started as its user records the landing."""
    store = place / "data" / "gw.db"
    config = await asyncio.to_thread(configure, place, await origin(upstream_server))
    await asyncio.to_thread((place / "a.log").write_text, LINE)
    await asyncio.to_thread(os.chown, place / "data", UID, GID)
    made = await asyncio.to_thread(
        as_nobody, place, sys.executable, "-m", "gateway", *IMPORT, "-c", "gw.toml"
    )
    assert made.returncode == 0, made
    await asyncio.to_thread(modes, [store], 0o660, place / "data", 0o770)
    assert await asyncio.to_thread(names, place / "data") == ["gw.db"]
    for args in (("import", "--list"), (*IMPORT, "--dry-run"), ("doctor", "--timeout", "1")):
        done = await asyncio.to_thread(reader, place, who, *args)
        assert "Traceback" not in done.stderr, done.stderr
        assert args[0] == "doctor" or done.returncode == 0, done
        assert await asyncio.to_thread(names, place / "data") == ["gw.db"], args
    gw = await start(config)
    try:
        async with aiohttp.ClientSession() as session:
            assert await land(gw, session, "later") == "page /landing?keep=1"
            assert (await health(gw, session))["status"] == "ok"
        assert await gw.stop() == 0
    finally:
        await gw.kill()
    assert await asyncio.to_thread(stored, store) == ["news", "later"]


def test_a_store_folder_it_cannot_make_is_refused_naming_storage_path(place: Path) -> None:
    """``storage.path`` in a folder that is not there, in one the user may not write: refused at
    start in one line naming the key and the folder, exit 1 (README: `cannot open the store`);
    in a folder it may not even look into: a config error naming the key, exit 2."""
    config = configure(place, "http://127.0.0.1:9", store="data/sub/gw.db")
    done = as_nobody(place, sys.executable, "-m", "gateway", "run", "-c", str(config))
    assert done.returncode == 1, done
    lines = [line for line in done.stderr.splitlines() if "geo lookups are off" not in line]
    # The folder to make is the store's own, for this user: never "chown" the one above it
    # (under deploy/gateway.service that would be /var/lib).
    assert lines == [
        f"gateway: cannot open the store (storage.path): {place / 'data' / 'sub' / 'gw.db'}: cannot create"
        f" it, its folder {place / 'data' / 'sub'} is not there and {place / 'data'} is not writable;"
        f" make {place / 'data' / 'sub'} for the user the gateway runs as (as root: install -d -o"
        f" {USER} -g {GROUP} {place / 'data' / 'sub'}), or point storage.path elsewhere"
    ], lines
    (place / "data").chmod(0o700)
    done = as_nobody(place, sys.executable, "-m", "gateway", "run", "-c", str(config))
    assert done.returncode == 2, done
    assert (
        f"storage.path: cannot use {place / 'data' / 'sub' / 'gw.db'}: Permission denied"
        f" ({place / 'data'} may not be entered by uid {UID}: let the gateway's user search it,"
        " or run the command as that user)"
    ) in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert not (place / "data" / "sub").exists()


def test_secrets_missing_are_named_as_for_root(place: Path) -> None:
    """The config readable, the secrets' variables not set: the same two lines as root gets."""
    config = configure(place, "http://127.0.0.1:9")
    env = {k: v for k, v in _env().items() if not k.startswith("GATEWAY_")}
    done = subprocess.run(
        ["setpriv", f"--reuid={UID}", f"--regid={GID}", "--clear-groups", sys.executable, "-m",
         "gateway", "run", "-c", str(config)],
        cwd=place, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done
    assert done.stderr.splitlines()[1:] == [
        "  identity.secret: environment variable GATEWAY_SECRET is not set (or run with --dev)",
        "  admin.token: environment variable GATEWAY_ADMIN_TOKEN is not set (or run with --dev)",
    ], done.stderr
    assert not (place / "data" / "gw.db").exists()


async def test_a_store_made_read_only_while_it_runs(place: Path, upstream_server: Any) -> None:
    """The store, its ``-wal``, ``-shm`` and folder the user's; root makes them all read-only
    (0444, the folder 0555) under the running gateway, then writable again. File modes are
    checked when a file is opened: SQLite writes on through the files it has open, so every
    landing is served and recorded, and ``/healthz`` stays ok (nothing is lost: saying
    `degraded` would be false). The path's watch says, within a second, that the store is no
    longer writable and what that means for a restart, and again when it is. What a chmod stops
    is the checkpoint job's connection when it opens one (its first run, or after a failure):
    its failure names the file and the uid; once writable again it checkpoints."""
    store = place / "data" / "gw.db"
    await asyncio.to_thread(os.chown, place / "data", UID, GID)
    config = await asyncio.to_thread(configure, place, await origin(upstream_server))
    gw = await start(config)
    files = [store, Path(f"{store}-wal"), Path(f"{store}-shm")]
    try:
        async with aiohttp.ClientSession() as session:
            # Before the first commit: the checkpoint job has opened no connection yet (one opened
            # before the chmod would go on checkpointing through its open files, and say nothing).
            await asyncio.to_thread(modes, files, 0o444, place / "data", 0o555)
            assert await land(gw, session, "during") == "page /landing?keep=1"
            told = await gw.wait_log(lambda r: "no longer writable" in r["msg"], timeout=10)
            warned = await gw.wait_log(lambda r: "checkpoint" in r["msg"], timeout=20)
            assert (await health(gw, session))["status"] == "ok"
            await asyncio.to_thread(modes, files, 0o644, place / "data", 0o755)
            again = await gw.wait_log(lambda r: "writable again" in r["msg"], timeout=10)
            assert await land(gw, session, "after") == "page /landing?keep=1"
            body = await health(gw, session)
            assert body["status"] == "ok" and "store" not in body, body
            assert await metric(gw, session, "gateway_touchpoints_total") == 2
            checkpointed = 'gateway_store_checkpoints_total{outcome="done"}'
            async with asyncio.timeout(20):  # the job's next run, on a connection opened again
                while not await metric(gw, session, checkpointed):
                    await asyncio.sleep(0.5)
        assert await gw.stop() == 0
    finally:
        await gw.kill()
    assert told["msg"] == (
        f"the store {store} (storage.path) is no longer writable ({store} is not writable to uid {UID}):"
        " commits go on through the files the gateway has open, but once restarted it would open"
        " the store read-only and record nothing; let the user the gateway runs as write to it again"
    ), told
    assert again["msg"] == f"the store {store} (storage.path) is writable again to uid {UID}", again
    assert again["level"] == "info", again  # a resolution (a warning until 2026-12-07)
    assert [r for r in gw.logs() if "writable" in r["msg"] and "checkpoint" not in r["msg"]] == [told, again]
    assert f"({store} is not writable to uid {UID}: commits go on" in warned["msg"], warned
    assert [r for r in gw.logs() if "checkpoint" in r["msg"]] == [warned]
    assert "Traceback" not in "".join(gw.stderr)
    assert await asyncio.to_thread(stored, store) == ["during", "after"]


def unit_setting(name: str) -> str:
    """A ``[Service]`` setting of ``deploy/gateway.service``."""
    lines = (ROOT / "deploy" / "gateway.service").read_text().splitlines()
    found = [line.partition("=")[2] for line in lines if line.startswith(f"{name}=")]
    assert len(found) == 1, f"deploy/gateway.service sets {name} {len(found)} times"
    return found[0]


def state_directory(state: Path) -> Path:
    """The folder as systemd's ``StateDirectory`` makes it: the user's, of the unit's mode."""
    state.mkdir()
    os.chown(state, UID, GID)
    state.chmod(int(unit_setting("StateDirectoryMode"), 8))
    return state


def modes_in(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()}


async def test_the_units_umask_keeps_the_store_to_the_gateways_user(
    place: Path, upstream_server: Any
) -> None:
    """Under ``deploy/gateway.service`` the store (kept ``bad_events`` bodies, dashboard
    sessions, visitor and user keys) is the gateway user's alone: the unit's ``UMask`` and
    ``StateDirectoryMode`` leave no file the gateway makes in its state folder, nor the folder,
    open to the host's other users — and a gateway under them serves and records as ever."""
    umask = int(await asyncio.to_thread(unit_setting, "UMask"), 8)
    state = await asyncio.to_thread(state_directory, place / "state")
    config = await asyncio.to_thread(configure, place, await origin(upstream_server), "state/gw.db")
    before = os.umask(umask)  # the gateway's process inherits it, as from systemd's UMask
    try:
        gw = await start(config)
    finally:
        os.umask(before)
    try:
        async with aiohttp.ClientSession() as session:
            assert await land(gw, session) == "page /landing?keep=1"
            made = await asyncio.to_thread(modes_in, state)
        assert await gw.stop() == 0
    finally:
        await gw.kill()
    assert await asyncio.to_thread(stored, state / "gw.db") == ["news"]
    made |= await asyncio.to_thread(modes_in, state)
    assert {"gw.db", "gw.db-wal", "gw.db-shm"} <= made.keys(), made
    assert {name: mode for name, mode in made.items() if mode & 0o077} == {}, made
    folder_mode = (await asyncio.to_thread(state.stat)).st_mode & 0o777
    assert folder_mode & 0o077 == 0, oct(folder_mode)
