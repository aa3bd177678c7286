"""``deploy/compose.yaml``, checked without a Docker daemon: its services, ports, environment
and mounts against ``deploy/gateway.compose.toml``, the image and the README, and ``gateway
check`` (in the emulated image) on that config with the environment the compose file gives.
Parsing the file needs PyYAML, which the test extras do not install on purpose: without it
these tests are skipped (it comes here with schemathesis)."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any

import pytest

from tests.conftest import ENV
from tests.deploy.deployfiles import (
    DEPLOY,
    ROOT,
    config,
    containerfile,
    exec_form,
    host_of,
    listen_ports,
    port_of,
    readme_deployment,
)
from tests.deploy.image import Image

yaml = pytest.importorskip("yaml", reason="PyYAML is not installed: compose.yaml is not parsed")

PASSWORD = "p" * 40
SHELL_ENV = {**ENV, "POSTGRES_PASSWORD": PASSWORD}
"""What the compose file's header says to export."""


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${NAME}``, ``${NAME:?message}`` and ``${NAME:-default}``; any other form
    fails the test rather than pass unread."""

    def one(match: re.Match[str]) -> str:
        name, how, rest = match.group(1), match.group(2), match.group(3)
        if how == ":?":
            assert env.get(name), f"compose would stop: {rest}"
            return env[name]
        if how == ":-":
            return env.get(name) or rest
        assert how is None, match.group(0)
        return env.get(name, "")

    out = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:[?-])([^}]*))?\}", one, value)
    assert "$" not in out, f"{value}: a form of interpolation this test does not read"
    return out


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def gateway_service() -> dict[str, Any]:
    service = compose()["services"]["gateway"]
    assert isinstance(service, dict)
    return service


def environment(service: dict[str, Any]) -> dict[str, str]:
    """The service's environment as the container gets it, from ``SHELL_ENV``."""
    given = service.get("environment", {})
    if isinstance(given, list):
        given = dict(item.partition("=")[::2] for item in given)
    return {name: interpolate(str(value), SHELL_ENV) for name, value in given.items()}


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path → source (a path relative to the compose file, or a volume's name)."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        found[target] = source
    return found


def test_the_services_are_the_gateway_and_its_postgresql() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "gateway"}
    build = services["gateway"]["build"]
    context = (DEPLOY / build["context"]).resolve()
    assert context == ROOT
    assert (context / build["dockerfile"]) == DEPLOY / "Containerfile"
    assert "postgres" in services["gateway"]["depends_on"]


def test_every_secret_the_config_reads_is_in_the_services_environment() -> None:
    """The gateway's secrets and every ``env:NAME`` of ``gateway.compose.toml`` come from the
    service's environment; the PostgreSQL URL names the compose file's database, its user, its
    password and its service."""
    env = environment(gateway_service())
    text = (DEPLOY / "gateway.compose.toml").read_text(encoding="utf-8")
    wanted = {"GATEWAY_SECRET", "GATEWAY_ADMIN_TOKEN"} | set(re.findall(r'"env:([A-Za-z_0-9]+)"', text))
    assert wanted <= set(env), wanted - set(env)
    assert {k: v for k, v in env.items() if not v} == {}
    assert config("gateway.compose.toml")["central"]["url"] == "env:GATEWAY_CENTRAL_URL"
    pg = environment(compose()["services"]["postgres"])
    url = env["GATEWAY_CENTRAL_URL"]
    expected = f"postgresql://{pg['POSTGRES_USER']}:{PASSWORD}@postgres:5432/{pg['POSTGRES_DB']}"
    assert url == expected


def test_the_config_and_store_are_mounted_where_the_image_looks() -> None:
    """``gateway.compose.toml`` is mounted where the image's ``CMD`` reads its config, and the
    store (``storage.path``) is in a named volume, so that it outlives ``compose up --build``."""
    service = gateway_service()
    mounted = mounts(service)
    (cmd,) = [exec_form(s.args) for s in containerfile() if s.name == "CMD"]
    assert mounted[cmd[cmd.index("-c") + 1]] == "./gateway.compose.toml"
    store = PurePosixPath(config("gateway.compose.toml")["storage"]["path"])
    (folder,) = [t for t in mounted if store.is_relative_to(t)]
    assert mounted[folder] in compose()["volumes"]
    (declared,) = [s.args for s in containerfile() if s.name == "VOLUME"]
    assert folder in declared


def test_published_ports_are_the_configs_listeners() -> None:
    """The container ports published are the compose config's listeners; the admin port only
    on the host's loopback."""
    published = {}
    for entry in gateway_service()["ports"]:
        *host, container = str(entry).split(":")
        published[int(container)] = host
    table = config("gateway.compose.toml")
    assert set(published) == listen_ports(table)
    admin = port_of(table["admin"]["listen"])
    assert published[admin][0] == "127.0.0.1", published[admin]
    assert host_of(table["admin"]["listen"]) == "0.0.0.0" and table["admin"]["allow_public"] is True


def test_the_readme_names_what_the_compose_file_needs() -> None:
    """README's Deployment section says what to export (every variable the compose file
    requires), the upstream service's name and the node's name as the files have them."""
    section = readme_deployment()
    raw = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
    required = set(re.findall(r"\$\{([A-Za-z_0-9]+):\?", raw))
    assert required == {"GATEWAY_SECRET", "GATEWAY_ADMIN_TOKEN", "POSTGRES_PASSWORD"}
    compose_part = section[section.index("deploy/compose.yaml") :]
    assert {name for name in required if f"`{name}`" not in compose_part} == set()
    table = config("gateway.compose.toml")
    upstream = table["proxy"]["upstream"]
    assert f"`{upstream}`" in compose_part
    service = re.match(r"https?://([^:/]+)", upstream)
    assert service and f"service named `{service.group(1)}`" in compose_part
    assert f"`{table['storage']['node']}`" in compose_part


def test_gateway_check_passes_on_the_compose_config_with_the_compose_environment(image: Image) -> None:
    """``gateway check`` on ``gateway.compose.toml`` (in the emulated image) with the
    environment the compose file gives, and that environment alone."""
    env = environment(gateway_service())
    done = image.command("check", "--quiet", "-c", str(DEPLOY / "gateway.compose.toml"), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
