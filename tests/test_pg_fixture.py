"""The throwaway PostgreSQL of the central store tests goes away with the run that started
it, even when the run is ended by SIGTERM (a CI job's timeout, ``kill``)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from bench.pgserver import binaries, start_server
from bench.ports import BEYOND, LOWEST, free_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(120)
def test_a_run_ended_by_sigterm_stops_its_postgresql(tmp_path: Path) -> None:
    if binaries() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) not found (.ci/run installs them)")
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found")
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import blockbuster, postgres_server  # noqa: F401\n"
    )
    (tmp_path / "test_wait.py").write_text(
        textwrap.dedent(
            """
            import time

            def test_wait(postgres_server):
                print("READY", postgres_server.root, flush=True)
                try:
                    time.sleep(90)
                except KeyboardInterrupt:  # as a command run in-process takes it for Ctrl-C
                    pass

            def test_next():
                time.sleep(90)  # never run: the run stops after the test SIGTERM came in
            """
        )
    )
    # The server's folder: readable by the postgres user (tmp_path's parents are not).
    folder = Path(tempfile.mkdtemp(prefix="gw-pg-sigterm-"))
    folder.chmod(0o755)
    env = {**os.environ, "TMPDIR": str(folder), "PYTHONPATH": str(ROOT)}
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
         str(tmp_path / "test_wait.py")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert run.stdout is not None
        said = []
        for line in run.stdout:
            said.append(line)
            if line.startswith("READY"):
                break
        else:
            raise AssertionError("the run never started its server: " + "".join(said))
        data = Path(line.split()[1]) / "data"
        assert (data / "postmaster.pid").exists()
        run.send_signal(signal.SIGTERM)
        rest, _ = run.communicate(timeout=60)
        assert run.returncode != 0, rest
        assert not data.parent.exists(), rest  # stopped (pg_ctl stop) and removed
        postmasters = subprocess.run(["pgrep", "-f", str(data)], capture_output=True, text=True)
        assert postmasters.stdout == "", postmasters.stdout
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        subprocess.run(["pkill", "-f", str(folder)], capture_output=True)
        subprocess.run(["rm", "-rf", str(folder)], check=False)


async def _select_one(dsn: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT 1"))
    finally:
        await conn.close()


@pytest.mark.timeout(120)
def test_a_server_whose_port_was_taken_meanwhile_starts_on_another(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The port chosen for the throwaway PostgreSQL is bound by its postmaster a moment later:
    another process can take it in between (on a loaded machine, an outgoing connection did, and
    every central store test of the run failed on `could not bind`). The start is tried again
    on another port, and says which one was taken."""
    if binaries() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) not found (.ci/run installs them)")
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found")
    with socket.socket() as taken:  # the first port chosen, already someone else's
        taken.bind(("127.0.0.1", free_port()))
        taken.listen()
        port = taken.getsockname()[1]
        server = start_server(port)
        try:
            assert server.port != port
            assert LOWEST <= server.port < BEYOND  # below the kernel's ephemeral range
            assert asyncio.run(_select_one(server.dsn())) == 1
        finally:
            server.close()
    said = capfd.readouterr().err
    assert f"port {port} was taken" in said, said


@pytest.mark.timeout(120)
async def test_a_server_restarted_on_its_own_port_waits_for_it_when_taken_meanwhile(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A test stops the throwaway PostgreSQL mid-test and starts it again (a central store going
    away under a running sync): the code under test holds its DSN, so it must come back on the
    same port. Another process can bind that port while the server is stopped (here: until
    told the start found it taken); the start waits for it to be free and tries again, saying
    so, where it failed the test with `could not bind`."""
    if await asyncio.to_thread(binaries) is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) not found (.ci/run installs them)")
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found")
    server = await asyncio.to_thread(start_server)
    try:
        port = server.port
        await server.stop()
        said = ""
        with socket.socket() as taken:  # the port, someone else's while the server is stopped
            taken.bind(("127.0.0.1", port))
            taken.listen()
            restart = asyncio.create_task(server.start())
            async with asyncio.timeout(60):
                while f"port {port} was taken" not in said:
                    assert not restart.done(), (restart, said)
                    await asyncio.sleep(0.05)
                    said += (await asyncio.to_thread(capfd.readouterr)).err
        await asyncio.wait_for(restart, 60)  # the port free again: started on it
        assert server.port == port
        assert await _select_one(server.dsn()) == 1
    finally:
        await asyncio.to_thread(server.close)
    said += (await asyncio.to_thread(capfd.readouterr)).err
    assert f"PostgreSQL: port {port} was taken by another process while the server was stopped" in said, said
