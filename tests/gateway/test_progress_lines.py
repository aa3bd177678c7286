"""The long commands off a terminal (cron, systemd, ``| tee log``): ``gateway reclassify``,
``sync --once`` and ``mirror --once`` print a plain progress line every ``--progress-every``
seconds, as ``gateway import`` does (``tests/gateway/test_backfill.py``); until 2026-12-07 they
printed nothing until they ended. Each runs as a subprocess with stderr a pipe, on a real SQLite
store and (sync, mirror) a real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import asyncpg

from storage import central
from tests.conftest import ENV
from tests.gateway.test_central import _write_local
from tests.gateway.test_cli import ROOT, a_long_reclassify

COUNTED = re.compile(
    r"gateway (?P<command>[a-z]+)(?: \((?P<store>[^)]+)\))?: (?P<percent>\d+)% \((?P<done>[\d,]+)"
    r" of (?P<total>[\d,]+) (?P<unit>touchpoints|rows)\), [\d,]+ (?P=unit)/s, \d+ s so far"
)
"""A line of a command that knows how many it has to get through."""
UNCOUNTED = re.compile(
    r"gateway (?P<command>[a-z]+): (?P<done>[\d,]+) rows stored, [\d,]+ rows/s, \d+ s so far"
)
"""A line of one that does not (a mirror round: how many rows PostgreSQL has for it is unknown)."""


def run(
    *args: str, env: dict[str, str] | None = None, stderr: int = subprocess.PIPE
) -> subprocess.CompletedProcess[str]:
    """``gateway *args``, stdout and stderr pipes (or stderr to the descriptor ``stderr``)."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr,
        env={"PATH": "/usr/bin:/bin", **ENV, **(env or {})}, text=True, timeout=60,
    )  # fmt: skip


def to_a_gone_reader(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``gateway *args`` with stderr a pipe whose reader has gone (``2>&1 | head`` after head
    ended): every progress line fails to be written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return run(*args, env=env, stderr=write_end)
    finally:
        os.close(write_end)


def lines(stderr: str, pattern: re.Pattern[str]) -> list[re.Match[str]]:
    """The progress lines of ``stderr``; none of the bar's carriage returns or escapes."""
    assert "\r" not in stderr and "\x1b" not in stderr, stderr
    said = [line for line in stderr.splitlines() if line.startswith("gateway ")]
    found = [match for line in said if (match := pattern.fullmatch(line)) is not None]
    assert len(found) == len(said), stderr
    return found


def count(text: str) -> int:
    return int(text.replace(",", ""))


def test_reclassify_off_a_terminal_says_how_far_it_is(tmp_path: Path) -> None:
    a_long_reclassify(tmp_path / "gw.db", 50)  # and 3 more
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[storage]\npath = "gw.db"\n')
    args = ("reclassify", "-c", str(cfg), "--batch-size", "10", "--dry-run")
    done = run(*args, "--progress-every", "0")  # 0: after every batch
    assert done.returncode == 0 and "53 touchpoints, 53 changed" in done.stdout, done
    said = lines(done.stderr, COUNTED)
    assert len(said) >= 2 and {m["command"] for m in said} == {"reclassify"}, done.stderr
    assert all(m["total"] == "53" and m["unit"] == "touchpoints" and m["store"] is None for m in said), said
    assert [count(m["done"]) for m in said][-1] == 53 and said[-1]["percent"] == "100", done.stderr
    quiet = run(*args, "--progress-every", "0", "--no-progress")
    assert quiet.returncode == 0 and quiet.stderr == "", quiet
    refused = run(*args, "--progress-every", "-1")
    assert refused.returncode == 2 and "--progress-every: expected a number of seconds" in refused.stderr
    # Its lines cannot be written: it goes on, unsaid, to its end (it ended 141 at the first).
    gone = to_a_gone_reader("reclassify", "-c", str(cfg), "--batch-size", "10", "--progress-every", "0")
    assert gone.returncode == 0 and "53 touchpoints, 53 changed" in gone.stdout, gone


async def test_sync_and_mirror_once_off_a_terminal_say_how_far_they_are(
    tmp_path: Path, central_dsn: str
) -> None:
    conn = await asyncpg.connect(central_dsn)
    try:
        await central.migrate(conn)
    finally:
        await conn.close()
    cfg = tmp_path / "gw.toml"
    text = (
        '[storage]\npath = "node.db"\nnode = "n1"\n[central]\nurl = "env:GATEWAY_CENTRAL_URL"\n'
        'batch_size = 5\nmirror_path = "mirror.db"\n'
    )
    await asyncio.to_thread(cfg.write_text, text)
    env = {"GATEWAY_CENTRAL_URL": central_dsn}
    await asyncio.to_thread(_write_local, tmp_path / "node.db", "n1", 20)

    synced = await asyncio.to_thread(run, "sync", "--once", "-c", str(cfg), "--progress-every", "0", env=env)
    assert synced.returncode == 0 and "total: 20 rows" in synced.stdout, synced
    said = lines(synced.stderr, COUNTED)
    assert len(said) >= 2 and {m["command"] for m in said} == {"sync"}, synced.stderr
    assert all(m["unit"] == "rows" and count(m["total"]) >= 20 for m in said), said

    mirrored = await asyncio.to_thread(
        run, "mirror", "--once", "-c", str(cfg), "--progress-every", "0", env=env
    )
    assert mirrored.returncode == 0 and "touchpoints: 20 rows" in mirrored.stdout, mirrored
    stored = lines(mirrored.stderr, UNCOUNTED)
    assert len(stored) >= 2 and {m["command"] for m in stored} == {"mirror"}, mirrored.stderr
    assert count(stored[-1]["done"]) >= 20, mirrored.stderr

    # The node's store and the mirror both: each line names the one it is of.
    both = await asyncio.to_thread(
        run, "reclassify", "-c", str(cfg), "--batch-size", "5", "--progress-every", "0", env=env
    )
    assert both.returncode == 0, both
    stores = {m["store"] for m in lines(both.stderr, COUNTED)}
    assert stores == {f"local {tmp_path / 'node.db'}", f"mirror {tmp_path / 'mirror.db'}"}, both.stderr

    # --no-progress: none; lines that cannot be written: the round goes on, unsaid.
    await asyncio.to_thread(_write_local, tmp_path / "node.db", "n1", 10)
    quiet = await asyncio.to_thread(
        run, "sync", "--once", "-c", str(cfg), "--progress-every", "0", "--no-progress", env=env
    )
    assert quiet.returncode == 0 and quiet.stderr == "" and "total: 10 rows" in quiet.stdout, quiet
    quiet = await asyncio.to_thread(
        run, "mirror", "--once", "-c", str(cfg), "--progress-every", "0", "--no-progress", env=env
    )
    assert quiet.returncode == 0 and quiet.stderr == "" and "touchpoints: 10 rows" in quiet.stdout, quiet
    await asyncio.to_thread(_write_local, tmp_path / "node.db", "n1", 10)
    gone = await asyncio.to_thread(
        to_a_gone_reader, "sync", "--once", "-c", str(cfg), "--progress-every", "0", env=env
    )
    assert gone.returncode == 0 and "total: 10 rows" in gone.stdout, gone
    gone = await asyncio.to_thread(
        to_a_gone_reader, "mirror", "--once", "-c", str(cfg), "--progress-every", "0", env=env
    )
    assert gone.returncode == 0 and "touchpoints: 10 rows" in gone.stdout, gone
    for command in (("sync", "--once"), ("mirror", "--once")):
        refused = await asyncio.to_thread(run, *command, "-c", str(cfg), "--progress-every", "x", env=env)
        assert refused.returncode == 2 and "--progress-every: expected a number of seconds" in refused.stderr
