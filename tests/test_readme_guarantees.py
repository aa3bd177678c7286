"""The README's "Guarantees" section names the tests that hold each promise: every name must
exist, so a renamed or deleted test cannot leave a promise claimed but unguarded."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAMED = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def guarantees_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("\n## Guarantees\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
    }


def test_every_named_test_exists() -> None:
    named = NAMED.findall(guarantees_section())
    assert len(named) >= 40, "the section lost its test names"
    missing = [
        f"{file}::{name}"
        for file, name in named
        if not (ROOT / file).is_file() or name not in defined_tests(ROOT / file)
    ]
    assert missing == []


def test_the_check_notices_a_missing_name() -> None:
    assert "test_no_such_test" not in defined_tests(ROOT / "tests" / "test_readme_guarantees.py")
    assert NAMED.findall("`tests/a.py::test_b`") == [("tests/a.py", "test_b")]
