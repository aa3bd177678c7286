"""``deploy/gateway.service``, checked without systemd running it (no systemd as PID 1 here):
``systemd-analyze verify`` where it is installed, its command lines against the CLI, its paths
against README's install steps, and its sandbox against what the gateway needs — the one
setting a process can put on itself, ``MemoryDenyWriteExecute`` (``PR_SET_MDWE``, which systemd
254+ uses for it), with a real gateway under it. ``ProtectSystem``, ``RestrictAddressFamilies``
and the rest are read, not run: they need systemd's namespaces and seccomp filter."""

from __future__ import annotations

import asyncio
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.cli import build_parser
from tests.deploy.deployfiles import DEPLOY, ROOT, missing_tool, port_of, readme_deployment
from tests.gatewayproc import GatewayProcess

UNIT = DEPLOY / "gateway.service"
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1


def settings() -> list[tuple[str, str]]:
    """The unit's ``[Service]`` settings, in order (a name may repeat: ``ExecReload``)."""
    found, section = [], ""
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            name, _, value = line.partition("=")
            found.append((name, value))
    return found


def setting(name: str) -> str:
    (value,) = [v for n, v in settings() if n == name]
    return value


def gateway_lines() -> list[list[str]]:
    """Every ``Exec*`` command line that runs the gateway, split."""
    return [shlex.split(v) for n, v in settings() if n.startswith("Exec") and "/gateway " in v]


def install_steps() -> list[str]:
    """README's install commands for the unit (its first ``sh`` block in Deployment)."""
    section = readme_deployment()
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def test_systemd_analyze_verify_finds_nothing_but_the_missing_install(tmp_path: Path) -> None:
    """As README says: on a machine without the install, ``systemd-analyze verify`` names the
    missing ``/opt/gateway/venv/bin/gateway`` and nothing else; with an executable there (the
    unit copied with its path changed to one) it finds nothing at all."""
    if shutil.which("systemd-analyze") is None:
        missing_tool(
            "systemd-analyze is not installed: the unit is not verified by systemd (apt-get install systemd)"
        )
    (command,) = {line[0] for line in gateway_lines()}
    verify = ["systemd-analyze", "verify"]
    done = subprocess.run([*verify, str(UNIT)], capture_output=True, text=True, timeout=60)
    if not Path(command).exists():
        said = {line for line in done.stderr.splitlines() if line}
        assert said == {f"gateway.service: Command {command} is not executable: No such file or directory"}
        assert f"but the missing\n  `{command}`" in readme_deployment()
    stand_in = tmp_path / "gateway"
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    copy = tmp_path / "gateway.service"
    copy.write_text(UNIT.read_text().replace(command, str(stand_in)))
    done = subprocess.run([*verify, str(copy)], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_the_units_gateway_command_lines_parse_with_options_in_full() -> None:
    lines = gateway_lines()
    assert [line[1] for line in lines] == ["check", "run", "check"]  # ExecStartPre, ExecStart, ExecReload
    parser = build_parser()
    for line in lines:
        args = parser.parse_args(line[1:])
        assert args.config == "/etc/gateway/gateway.toml"


def test_the_parse_check_refuses_an_abbreviated_option() -> None:
    """The CLI takes options in full only (an abbreviation that parses today would break when a
    new option shares its prefix), so the check above holds the unit to them."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["check", "--qui", "-c", "x"])


def test_the_units_paths_are_the_readmes_install_steps() -> None:
    """The unit runs the gateway README installs, with the config, secrets file, user and state
    folder README's steps make; the store README's ``init --store`` names is in that folder,
    the one folder the sandbox lets the gateway write."""
    steps = "\n".join(install_steps())
    (command,) = {line[0] for line in gateway_lines()}
    venv = str(PurePosixPath(command).parents[1])
    assert f"python3 -m venv {venv} " in steps and f"{venv}/bin/pip install ." in steps
    init = next(shlex.split(s, comments=True) for s in install_steps() if " init " in s)
    assert init[1] == command
    config = init[init.index("-c") + 1]
    assert {line[line.index("-c") + 1] for line in gateway_lines()} == {config}
    assert f"install -m 0600 /dev/null {setting('EnvironmentFile')}" in steps
    user = next(shlex.split(s, comments=True) for s in install_steps() if "useradd" in s)
    assert setting("User") == setting("Group") == user[-1]
    state = f"/var/lib/{setting('StateDirectory')}"
    assert user[user.index("--home") + 1] == state
    assert setting("WorkingDirectory") == state
    assert setting("ReadWritePaths").split() == [state]
    store = PurePosixPath(init[init.index("--store") + 1])
    assert store.parent == PurePosixPath(state)
    assert setting("ProtectSystem") == "strict"  # all else read-only: hence --store


def test_the_sandbox_leaves_the_gateway_its_network_and_ports() -> None:
    """``RestrictAddressFamilies`` keeps IPv4 and IPv6 (listeners, the site, PostgreSQL) and
    Unix sockets (the event loop's wake-up pair, the report workers' pipes); the ports the
    annotated config README installs listens on need no capability unless the unit grants it
    (README installs none below 1024: nginx in front takes 80 and 443)."""
    families = set(setting("RestrictAddressFamilies").split())
    assert {"AF_INET", "AF_INET6", "AF_UNIX"} <= families
    example = tomllib.loads((ROOT / "gateway.toml").read_text(encoding="utf-8"))
    ports = {port_of(example.get(t, {}).get("listen", "")) for t in ("proxy", "admin")}
    granted = dict(settings()).get("AmbientCapabilities", "")
    assert min(ports) >= 1024 or "CAP_NET_BIND_SERVICE" in granted, ports


def mdwe_prefix() -> tuple[str, ...]:
    """A command that puts ``PR_SET_MDWE`` on itself, then execs the rest (kept across exec,
    inherited by every child): what ``MemoryDenyWriteExecute=true`` is on Linux 6.3+."""
    code = (
        "import ctypes, os, sys\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"if libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:\n"
        "    sys.exit(f'PR_SET_MDWE: {os.strerror(ctypes.get_errno())}')\n"
        "os.execvp(sys.argv[1], sys.argv[1:])\n"
    )
    return (sys.executable, "-c", code)


def mdwe_supported() -> bool:
    done = subprocess.run([*mdwe_prefix(), "true"], capture_output=True, timeout=30)
    return done.returncode == 0


WX = "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)"


def test_the_mdwe_prefix_refuses_writable_executable_memory() -> None:
    if not mdwe_supported():
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+)")
    assert subprocess.run([sys.executable, "-c", WX], timeout=30).returncode == 0
    refused = subprocess.run([*mdwe_prefix(), sys.executable, "-c", WX], capture_output=True, timeout=30)
    assert refused.returncode != 0 and b"PermissionError" in refused.stderr, refused.stderr


async def _page(request: web.Request) -> web.Response:
    return web.Response(text=f"page {request.path_qs}")


async def test_the_gateway_serves_and_records_under_memory_deny_write_execute(
    tmp_path: Path, upstream_server: Any
) -> None:
    """``MemoryDenyWriteExecute=true``: a gateway of two workers (the supervisor, its shared
    counters, SO_REUSEPORT) serves a landing, records it and stops cleanly under it."""
    if await asyncio.to_thread(setting, "MemoryDenyWriteExecute") != "true":
        pytest.skip("the unit does not set MemoryDenyWriteExecute")
    if not await asyncio.to_thread(mdwe_supported):
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+)")
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _page)
    upstream = await upstream_server(app)
    config = tmp_path / "gw.toml"
    store = tmp_path / "gw.db"
    await asyncio.to_thread(
        config.write_text,
        f'[storage]\npath = "{store}"\n[proxy]\nworkers = 2\nlisten = "127.0.0.1:0"\n'
        f'upstream = "{upstream}"\n[admin]\nlisten = "127.0.0.1:0"\n',
    )
    gw = await GatewayProcess.start(config, prefix=mdwe_prefix())
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(gw.proxy + "/landing?utm_source=news&keep=1") as resp:
                assert resp.status == 200
                assert await resp.text() == "page /landing?keep=1"
            async with session.get(gw.admin + "/healthz") as resp:
                assert resp.status == 200, await resp.text()
        assert await gw.stop() == 0
    finally:
        await gw.kill()
    assert "Traceback" not in "".join(gw.stderr)

    def sources() -> list[str]:
        with sqlite3.connect(store) as db:
            return [row[0] for row in db.execute("SELECT source FROM touchpoints")]

    assert await asyncio.to_thread(sources) == ["news"]


def test_the_unit_waits_for_the_gateway_to_say_it_listens() -> None:
    """``Type=notify``: ``systemctl start`` returns once the gateway says ``READY=1`` (every worker
    listening), and fails when it cannot start, where ``Type=simple`` reported success at once
    (until 2026-12-07); its main process (the supervisor) alone may say so
    (``tests/gateway/test_sdnotify.py`` runs the gateway against a socket standing for systemd's)."""
    assert setting("Type") == "notify"
    assert setting("NotifyAccess") == "main"
    # Set in the unit, not left to the host's DefaultTimeoutStartSec, which may be infinity: a
    # worker failing again and again before it listens would hold the start for ever.
    assert setting("TimeoutStartSec") == "90"
    (run,) = [line for line in gateway_lines() if "run" in line]
    assert run[0].endswith("/gateway"), run  # the main process is the gateway, no shell before it
