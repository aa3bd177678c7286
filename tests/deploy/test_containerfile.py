"""``deploy/Containerfile``, checked without a Docker daemon: its build is emulated (the paths
its ``COPY`` lines name copied as Docker copies them, the wheel its ``pip install`` builds made
from that tree offline with this venv's build backend) and the unpacked wheel run on this
venv's copies of the image's dependencies alone — every module imported, every data file read,
``gateway check`` on the config its ``CMD`` names. What the image's own Python (3.12) would do
differently from this one is not seen."""

from __future__ import annotations

import json
import shlex
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
from packaging.specifiers import SpecifierSet

from tests.conftest import ENV
from tests.deploy.deployfiles import (
    ROOT,
    config,
    containerfile,
    exec_form,
    host_of,
    instructions,
    listen_ports,
    port_of,
)
from tests.deploy.image import Image, emulate, in_image

PACKAGES = ("gateway", "addons", "storage")
EXTRA_MODULES = {"addons.mitm": "mitmproxy", "addons.mitm_answer": "h11"}
"""Modules the image cannot import, and the one module each misses: the mitmproxy host's
adapter and its answering listener need the ``mitm`` extra (h11 comes with mitmproxy), which
the image does not install."""


def package_files() -> set[str]:
    """Every file of the packages in this checkout, as its path in a wheel."""
    found = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*"):
            rel = path.relative_to(ROOT)
            if any(p == "__pycache__" or p.startswith(".") for p in rel.parts) or path.suffix == ".pyc":
                continue
            if path.is_file() or path.is_symlink():
                found.add(rel.as_posix())
    return found


PROBE = """
import importlib, importlib.resources, json, sys
modules, data = json.loads(sys.argv[1]), json.loads(sys.argv[2])
imports = {}
for name in modules:
    try:
        importlib.import_module(name)
        imports[name] = None
    except BaseException as err:
        imports[name] = f"{type(err).__name__}: {getattr(err, 'name', None) or err}"
read = {}
for path in data:
    package, _, rest = path.partition("/")
    try:
        read[path] = len(importlib.resources.files(package).joinpath(rest).read_bytes())
    except OSError as err:
        read[path] = str(err)
where = {p: sys.modules[p].__file__ for p in ("gateway", "addons", "storage") if p in sys.modules}
print(json.dumps({"imports": imports, "read": read, "where": where}))
"""


@pytest.mark.parametrize("copied", [False, True])
def test_the_emulation_builds_from_what_copy_names(tmp_path: Path, copied: bool) -> None:
    """The emulated build takes the COPY lines' paths and nothing else, a link copied as a
    link: a data file whose target no COPY line takes is missing from the wheel made."""
    ctx = tmp_path / "ctx"
    (ctx / "pkg" / "data").mkdir(parents=True)
    (ctx / "pkg" / "__init__.py").write_text("")
    (ctx / "pkg" / "data" / "f.toml").symlink_to("../../outside.toml")
    (ctx / "outside.toml").write_text("x = 1\n")
    (ctx / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "pkg"\nversion = "1"\n'
        '[tool.setuptools]\npackages = ["pkg", "pkg.data"]\n'
        '[tool.setuptools.package-data]\n"pkg.data" = ["*.toml"]\n'
    )
    outside = "COPY outside.toml ./\n" if copied else ""
    steps = instructions(
        f"WORKDIR /opt/x\nCOPY pyproject.toml ./\n{outside}COPY pkg ./pkg\nRUN pip install '.'\n"
    )
    built = emulate(steps, ctx, tmp_path / "out")
    link = built.root / "opt/x/pkg/data/f.toml"
    assert link.is_symlink() and link.exists() == copied
    members = set(zipfile.ZipFile(built.wheel).namelist())
    assert ("pkg/data/f.toml" in members) == copied
    assert "pkg/__init__.py" in members and "outside.toml" not in members


def test_the_wheel_holds_every_module_and_data_file(image: Image) -> None:
    """What ``pip install '.[postgres]'`` installs in the image is every file of the packages:
    a module, or data file (the dashboard's static files, the migrations, the referrer table,
    the annotated example config ``gateway init`` writes), that the COPY lines do not take or
    the wheel does not hold (``[tool.setuptools]`` packages and package-data) is missing in the
    image. Until 2026-12-07 ``gateway/data/gateway.toml`` (a link to the repository's
    ``gateway.toml``, which no COPY line took) was: ``gateway init`` failed in the image."""
    shipped = {m for m in image.members if ".dist-info/" not in m}
    assert package_files() - shipped == set()
    assert shipped - package_files() == set()


def test_every_module_imports_and_every_data_file_reads_in_the_image(image: Image) -> None:
    """On the image's dependencies alone (the core ones and the ``postgres`` extra's, not the
    test extras this venv also has), every module the wheel ships imports — none needs a
    module the COPY lines leave out — but the mitmproxy adapter, which needs the ``mitm``
    extra; and every data file reads where the code looks for it."""
    modules = sorted(
        m.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        for m in image.members
        if m.endswith(".py")
    )
    data = sorted(m for m in image.members if not m.endswith(".py") and ".dist-info/" not in m)
    assert len(modules) > 150 and len(data) >= 40
    done = image.python("-c", PROBE, json.dumps(modules), json.dumps(data))
    assert done.returncode == 0, done.stderr
    probe = json.loads(done.stdout)
    failed = {name: why for name, why in probe["imports"].items() if why is not None}
    assert failed == {m: f"ModuleNotFoundError: {dep}" for m, dep in EXTRA_MODULES.items()}
    assert {p: n for p, n in probe["read"].items() if not isinstance(n, int) or n == 0} == {}
    assert all(Path(f).is_relative_to(image.site) for f in probe["where"].values()), probe["where"]


def test_gateway_check_passes_on_the_baked_config(image: Image) -> None:
    """``gateway check`` on the config the image's ``CMD`` runs (the file a COPY line puts
    there), with the secrets from the environment only, as ``docker run -e`` gives them."""
    steps = containerfile()
    (entry,) = [exec_form(s.args) for s in steps if s.name == "ENTRYPOINT"]
    (cmd,) = [exec_form(s.args) for s in steps if s.name == "CMD"]
    assert entry == ["gateway"]
    assert cmd[0] == "run"
    path = cmd[cmd.index("-c") + 1]
    assert in_image(image.built.root, path).is_file(), f"CMD's config {path}: no COPY line puts it"
    baked = in_image(image.built.root, path)
    done = image.command("check", "--quiet", "-c", str(baked), env=ENV)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    missing = image.command("check", "--quiet", "-c", str(baked), env={})
    assert missing.returncode != 0 and "GATEWAY_SECRET" in missing.stderr, missing.stderr


def test_gateway_init_writes_the_annotated_config_in_the_image(image: Image, tmp_path: Path) -> None:
    """``gateway init`` in the image writes the annotated example from the wheel's data."""
    target = tmp_path / "etc" / "gateway.toml"
    store = tmp_path / "var" / "gateway.db"
    done = image.command("init", "-c", str(target), "--store", str(store), env={})
    assert done.returncode == 0, done.stderr
    assert target.read_text() == (ROOT / "gateway.toml").read_text().replace(
        '\npath = "gateway.db"\n', f'\npath = "{store}"\n', 1
    )


def test_the_images_python_is_one_the_package_supports() -> None:
    (base,) = [s.args for s in containerfile() if s.name == "FROM"]
    image, _, tag = base.partition(":")
    assert image == "python", base
    version = tag.split("-")[0]
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert version in SpecifierSet(requires), f"{base}: Python {version} is not {requires}"


def test_exposed_ports_are_the_configs_listeners() -> None:
    """``EXPOSE`` names the ports the baked config listens on; the compose config the same ones
    (the compose file builds this image)."""
    (expose,) = [s.args for s in containerfile() if s.name == "EXPOSE"]
    exposed = {int(p.partition("/")[0]) for p in expose.split()}
    assert exposed == listen_ports(config("gateway.container.toml"))
    assert exposed == listen_ports(config("gateway.compose.toml"))


def healthcheck_command() -> list[str]:
    (check,) = [s.args for s in containerfile() if s.name == "HEALTHCHECK"]
    words = shlex.split(check)
    return words[words.index("CMD") + 1 :]


def test_the_healthcheck_asks_the_admin_listener() -> None:
    """The HEALTHCHECK asks ``/healthz`` of the baked and the compose config's admin listener,
    by an address inside the container that listener takes."""
    from urllib.parse import urlsplit

    code = healthcheck_command()
    assert code[:2] == ["python", "-c"], code
    (url,) = [w.strip("'\"") for w in code[2].replace("(", " ").replace(",", " ").split() if "://" in w]
    parts = urlsplit(url)
    assert parts.path == "/healthz"
    for name in ("gateway.container.toml", "gateway.compose.toml"):
        admin = config(name)["admin"]["listen"]
        assert parts.port == port_of(admin), name
        assert host_of(admin) in {"0.0.0.0", "::", parts.hostname}, name


async def test_the_healthcheck_command_passes_on_a_running_gateway(
    start_gateway: Any, upstream_server: Any
) -> None:
    """The HEALTHCHECK's own command, run against a gateway's admin listener (its port in the
    URL swapped for the test's), exits 0."""
    import asyncio

    from aiohttp import web

    gw = await start_gateway(await upstream_server(web.Application()))
    code = await asyncio.to_thread(healthcheck_command)
    admin = await asyncio.to_thread(config, "gateway.container.toml")
    port = str(port_of(admin["admin"]["listen"]))
    script = code[2].replace(f":{port}/", f":{gw.admin.port}/")
    assert script != code[2]
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script)
    assert await asyncio.wait_for(proc.wait(), 60) == 0
