"""The gateway command: check, init and run, as an operator would call them."""

from __future__ import annotations

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
