"""Readers of ``deploy/``'s files for the tests that check them without the tools that run them
(no Docker daemon, no systemd as PID 1): the Containerfile's instructions, a config's listen
ports, the README's "Deployment" section."""

from __future__ import annotations

import os
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def missing_tool(message: str) -> None:
    """A tool a deploy test runs is not installed: skipped locally, failed in CI (``CI`` set),
    where ``.ci/run`` installs it, as the central store's and the browser's tests are."""
    if os.environ.get("CI"):
        pytest.fail(message + " (.ci/run installs it: CI must run the deploy tests)")
    pytest.skip(message)


@dataclass(frozen=True)
class Instruction:
    name: str  # upper case: COPY, RUN, ...
    args: str  # the rest of the line, continuation lines joined


def instructions(text: str) -> list[Instruction]:
    """A Containerfile's instructions in order (comments dropped, ``\\`` continuations joined)."""
    found: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        name, _, args = line.partition(" ")
        found.append(Instruction(name.upper(), args.strip()))
    return found


def containerfile() -> list[Instruction]:
    return instructions((DEPLOY / "Containerfile").read_text(encoding="utf-8"))


def exec_form(args: str) -> list[str]:
    """``["gateway"]`` (JSON, the exec form) or a shell form split as a shell would."""
    if args.startswith("["):
        import json

        value = json.loads(args)
        assert isinstance(value, list)
        return [str(v) for v in value]
    return shlex.split(args)


def port_of(listen: str) -> int:
    return int(listen.rpartition(":")[2])


def host_of(listen: str) -> str:
    return listen.rpartition(":")[0].strip("[]")


def config(name: str) -> dict[str, Any]:
    return tomllib.loads((DEPLOY / name).read_text(encoding="utf-8"))


def listen_ports(table: dict[str, Any]) -> set[int]:
    """The ports a config listens on (its proxy and admin listeners, defaults as documented)."""
    proxy = table.get("proxy", {}).get("listen", "127.0.0.1:8080")
    admin = table.get("admin", {}).get("listen", "127.0.0.1:9090")
    return {port_of(proxy), port_of(admin)}


def readme_deployment() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"^## Deployment\n(.*?)^## ", text, re.MULTILINE | re.DOTALL)
    assert found, "README has no Deployment section"
    return found.group(1)
