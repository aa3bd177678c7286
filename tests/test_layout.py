"""Layout rules that keep the code host-neutral and documented."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HOST_LIBRARIES = {"aiohttp", "mitmproxy", "multidict", "yarl"}
PACKAGES = ("gateway", "addons", "storage")


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize(
    "path", [p for p in (ROOT / "addons").glob("*.py") if p.name != "mitm.py"], ids=lambda p: p.name
)
def test_addons_are_host_neutral(path: Path) -> None:
    assert not imported_roots(path) & HOST_LIBRARIES


def test_pipeline_is_host_neutral() -> None:
    assert not imported_roots(ROOT / "gateway" / "pipeline.py") & HOST_LIBRARIES


@pytest.mark.parametrize(
    "path", [p for pkg in PACKAGES for p in (ROOT / pkg).glob("*.py")], ids=lambda p: str(p.relative_to(ROOT))
)
def test_every_module_says_what_it_owns(path: Path) -> None:
    doc = ast.get_docstring(ast.parse(path.read_text()))
    assert doc and len(doc) > 20, f"{path} needs a module docstring"


def test_asyncpg_is_only_imported_when_the_central_store_is_used() -> None:
    """asyncpg is the ``postgres`` extra: the core install must run without it."""
    import subprocess
    import sys

    code = (
        "import sys, gateway.server, gateway.cli, gateway.admin, storage.sinks; "
        "sys.exit('asyncpg' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60).returncode == 0


def test_every_folder_of_a_package_is_packaged_with_its_files() -> None:
    """Each folder inside a package is a package to setuptools, and one not listed in
    ``[tool.setuptools] packages`` was warned of, forty lines apiece, in the middle of `make
    run`'s first start (until 2026-12-05: four of them). Each of its files must be packaged too,
    or an installed gateway would miss its migrations, dashboard or channel data."""
    import fnmatch
    import tomllib

    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed, data = set(setup["packages"]), setup["package-data"]
    for root in PACKAGES:
        for folder in [ROOT / root, *(p for p in (ROOT / root).rglob("*") if p.is_dir())]:
            if any(p == "__pycache__" or p.startswith(".") for p in folder.relative_to(ROOT).parts):
                continue
            name = ".".join(folder.relative_to(ROOT).parts)
            assert name in listed, f"{name}: a folder of {root} not in [tool.setuptools] packages"
            for file in folder.iterdir():
                if file.is_file() and file.suffix not in (".py", ".pyc"):
                    patterns = data.get(name, [])
                    assert any(fnmatch.fnmatch(file.name, p) for p in patterns), f"{file}: not packaged"
