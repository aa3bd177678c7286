"""The gateway command: check, init and run, as an operator would call them."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.conftest import ENV

ROOT = Path(__file__).resolve().parents[2]


def gateway(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        cwd=cwd or ROOT,
        timeout=30,
    )


def test_check_example_config_ok_and_masks_secrets() -> None:
    done = gateway("check", "-c", str(ROOT / "gateway.toml"), env=ENV)
    assert done.returncode == 0, done.stderr
    assert ENV["GATEWAY_SECRET"] not in done.stdout and ENV["GATEWAY_ADMIN_TOKEN"] not in done.stdout
    assert 'secret = "env:GATEWAY_SECRET"' in done.stdout
    tomllib.loads(done.stdout)  # the resolved settings print as TOML


def test_check_lists_every_problem_by_key(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[proxy]\nlisten = 'x'\nstrip = 'nope'\n[storage]\nbogus = 1\n")
    done = gateway("check", "-c", str(cfg), env=ENV)
    assert done.returncode == 2
    assert "proxy.strip: expected one of" in done.stderr
    assert "storage.bogus: unknown key" in done.stderr
    assert "Traceback" not in done.stderr


def test_check_without_secrets_explains_how(tmp_path: Path) -> None:
    done = gateway("check", "-c", str(ROOT / "gateway.toml"))
    assert done.returncode == 2
    assert "identity.secret: environment variable GATEWAY_SECRET is not set" in done.stderr


def test_check_missing_file() -> None:
    done = gateway("check", "-c", "/nonexistent/gateway.toml", env=ENV)
    assert done.returncode == 2 and "cannot read" in done.stderr and "Traceback" not in done.stderr


def test_init_writes_a_config_that_checks(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.toml"
    done = gateway("init", "-c", str(cfg))
    assert done.returncode == 0, done.stderr
    assert "export GATEWAY_SECRET=" in done.stdout
    assert gateway("check", "-c", str(cfg), env=ENV).returncode == 0
    assert gateway("init", "-c", str(cfg)).returncode == 1  # never overwrites silently
    assert gateway("init", "-c", str(cfg), "--force").returncode == 0


def test_run_refuses_without_secrets() -> None:
    done = gateway("run", "-c", str(ROOT / "gateway.toml"))
    assert done.returncode == 2 and "--dev" in done.stderr


def test_shipped_container_config_checks() -> None:
    done = gateway("check", "-c", str(ROOT / "deploy" / "gateway.container.toml"), env=ENV)
    assert done.returncode == 0, done.stderr


def _config(tmp_path: Path, proxy_listen: str = "127.0.0.1:0", store: str = "gw.db") -> Path:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        f'[proxy]\nlisten = "{proxy_listen}"\nupstream = "http://127.0.0.1:9"\n'
        f'[admin]\nlisten = "127.0.0.1:0"\n[storage]\npath = "{store}"\n'
    )
    return cfg


def test_run_explains_a_busy_port(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = gateway("run", "-c", str(_config(tmp_path, f"127.0.0.1:{port}")), env=ENV)
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr and "Traceback" not in done.stderr


def test_run_explains_an_unreadable_store(tmp_path: Path) -> None:
    (tmp_path / "gw.db").write_bytes(b"this is not a database" * 100)
    done = gateway("run", "-c", str(_config(tmp_path)), env=ENV)
    assert done.returncode == 1
    assert "cannot open the store" in done.stderr and "Traceback" not in done.stderr


def test_run_refuses_a_store_from_a_newer_gateway(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "gw.db") as db:
        db.execute("PRAGMA user_version = 999")
    done = gateway("run", "-c", str(_config(tmp_path)), env=ENV)
    assert done.returncode == 1
    assert "newer than this gateway" in done.stderr and "Traceback" not in done.stderr


def test_shipped_compose_config_checks() -> None:
    env = {**ENV, "GATEWAY_CENTRAL_URL": "postgresql://gateway:pw@postgres:5432/tracking"}
    done = gateway("check", "-c", str(ROOT / "deploy" / "gateway.compose.toml"), env=env)
    assert done.returncode == 0, done.stderr
    assert "GATEWAY_CENTRAL_URL" in done.stdout and "pw@postgres" not in done.stdout
