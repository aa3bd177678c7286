"""The container image's build, emulated without a Docker daemon: the file system
``deploy/Containerfile``'s ``COPY`` lines make (links copied as links, as Docker does), the
wheel its ``RUN pip install`` builds from it (offline, this venv's build backend), and that
wheel unpacked beside links to this venv's copies of the image's dependencies alone."""

from __future__ import annotations

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

from packaging.requirements import Requirement

from tests.deploy.deployfiles import ROOT, Instruction, containerfile


def in_image(root: Path, path: str) -> Path:
    return root / PurePosixPath(path).relative_to("/")


@dataclass
class Built:
    root: Path  # the image's file system, as far as the COPY lines make it
    wheel: Path
    source: Path  # the folder pip built, in root
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
            built = Built(root, wheel, source, set(filter(None, extras.rstrip("]").split(","))), workdir)
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


def build_image(into: Path) -> Image:
    """The image as ``deploy/Containerfile`` builds it from this checkout, made in ``into``."""
    built = emulate(containerfile(), ROOT, into)
    pyproject = tomllib.loads((built.source / "pyproject.toml").read_text())
    with zipfile.ZipFile(built.wheel) as wheel:
        members = set(wheel.namelist())
        wheel.extractall(into / "site")
    deps = site_of(dependency_names(pyproject, built.extras), into / "deps")
    return Image(built, members, into / "site", deps, pyproject)
