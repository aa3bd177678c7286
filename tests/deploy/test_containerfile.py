"""``deploy/Containerfile``, checked without a Docker daemon: its build is emulated (the paths
its ``COPY`` lines name copied as Docker copies them, the wheel its ``pip install`` builds made
from that tree offline with this venv's build backend) and the unpacked wheel run on this
venv's copies of the image's dependencies alone — every module imported, every data file read,
``gateway check`` on the config its ``CMD`` names. What the image's own Python (3.12) would do
differently from this one is not seen."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from tests.conftest import ENV
from tests.deploy.deployfiles import (
    ROOT,
    Instruction,
    config,
    containerfile,
    exec_form,
    host_of,
    instructions,
    listen_ports,
    port_of,
)

PACKAGES = ("gateway", "addons", "storage")
EXTRA_MODULES = {"addons.mitm": "mitmproxy", "addons.mitm_answer": "h11"}
"""Modules the image cannot import, and the one module each misses: the mitmproxy host's
adapter and its answering listener need the ``mitm`` extra (h11 comes with mitmproxy), which
the image does not install."""


def in_image(root: Path, path: str) -> Path:
    return root / PurePosixPath(path).relative_to("/")


@dataclass
class Built:
    root: Path  # the image's file system, as far as the COPY lines make it
    wheel: Path
    extras: set[str]
    workdir: str  # at the end: where the container starts


def emulate(steps: list[Instruction], context: Path, into: Path) -> Built:
    """The file system the Containerfile's ``COPY`` lines make (symbolic links copied as links,
    as Docker does) and the wheel its ``RUN pip install`` builds from the folder it names."""
    root, workdir, built = into / "image", "/", None
    for step in steps:
        if step.name == "WORKDIR":
            workdir = str(PurePosixPath(workdir) / step.args)
        elif step.name == "COPY":
            *sources, dest = [a for a in shlex.split(step.args) if not a.startswith("--")]
            target = in_image(root, str(PurePosixPath(workdir) / dest))
            for source in sources:
                src = context / source
                assert os.path.lexists(src), f"COPY {source}: not in the build context"
                if src.is_dir():
                    shutil.copytree(src, target, symlinks=True, dirs_exist_ok=True)
                else:
                    there = target / src.name if dest.endswith("/") or len(sources) > 1 else target
                    there.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, there, follow_symlinks=False)
        elif step.name == "RUN" and "pip install" in step.args:
            assert built is None, "one pip install"
            spec = next(a for a in shlex.split(step.args)[2:] if not a.startswith("-"))
            folder, _, extras = spec.partition("[")
            source = in_image(root, str(PurePosixPath(workdir) / folder))
            out = into / "wheel"
            done = subprocess.run(
                [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                 "--quiet", "-w", str(out), str(source)],
                capture_output=True, text=True, timeout=300, cwd=into,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            (wheel,) = out.glob("*.whl")
            built = Built(root, wheel, set(filter(None, extras.rstrip("]").split(","))), workdir)
    assert built is not None, "the Containerfile installs nothing with pip"
    built.workdir = workdir
    return built


def dependency_names(pyproject: dict[str, Any], extras: set[str]) -> set[str]:
    """The distributions ``pip install '.[extras]'`` brings, as this venv has them installed."""
    project = pyproject["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        wanted += [Requirement(r) for r in project["optional-dependencies"][extra]]
    seen: set[str] = set()
    while wanted:
        req = wanted.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = metadata.distribution(req.name).metadata["Name"]
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        for sub in metadata.distribution(name).requires or []:
            r = Requirement(sub)
            asked = [e for e in req.extras if r.marker is not None and r.marker.evaluate({"extra": e})]
            if r.marker is None or r.marker.evaluate({"extra": ""}) or asked:
                wanted.append(r)
    return seen


def site_of(names: set[str], into: Path) -> Path:
    """A folder holding links to these distributions' files alone (and their metadata): the
    image's site-packages, made of this venv's."""
    into.mkdir()
    for name in names:
        dist = metadata.distribution(name)
        for file in dist.files or []:
            top = file.parts[0]
            if top == ".." or top == "__pycache__" or os.path.lexists(into / top):
                continue
            located = Path(str(dist.locate_file(top)))
            if located.exists():
                (into / top).symlink_to(located)
    return into


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


@dataclass
class Image:
    built: Built
    members: set[str]
    site: Path  # the unpacked wheel
    deps: Path
    pyproject: dict[str, Any]

    def python(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """This venv's Python with the image's packages alone: no site-packages (``-S``: nor the
        editable install's finder that leads to this checkout), the wheel's tree first."""
        path = f"{self.site}{os.pathsep}{self.deps}"
        return subprocess.run(
            [sys.executable, "-S", *args],
            capture_output=True, text=True, timeout=120, cwd=self.built.root,
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": path, **(env or {})},
        )  # fmt: skip

    def command(self, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        """The image's ``gateway`` console script, from the wheel's own entry points."""
        points = zipfile.ZipFile(self.built.wheel).read(
            next(m for m in self.members if m.endswith(".dist-info/entry_points.txt"))
        )
        scripts = {}
        for line in points.decode().splitlines():
            key, eq, value = line.partition("=")
            if eq:
                scripts[key.strip()] = value.strip()
        module, _, function = scripts["gateway"].partition(":")
        code = f"import sys; from {module} import {function} as m; sys.argv[0] = 'gateway'; sys.exit(m())"
        return self.python("-c", code, *args, env=env)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    into = tmp_path_factory.mktemp("image")
    built = emulate(containerfile(), ROOT, into)
    pyproject = tomllib.loads((in_image(built.root, "/opt/gateway/pyproject.toml")).read_text())
    with zipfile.ZipFile(built.wheel) as wheel:
        members = set(wheel.namelist())
        wheel.extractall(into / "site")
    deps = site_of(dependency_names(pyproject, built.extras), into / "deps")
    return Image(built, members, into / "site", deps, pyproject)


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
