"""``gateway.cliargs.whole_number``: the whole numbers the command line takes, and every other
text refused as None (never an exception, which argparse would report naming our function)."""

from __future__ import annotations

import pytest

from gateway.cliargs import SQLITE_MAX, whole_number


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", 1),
        ("256", 256),
        ("007", 7),
        # Leading zeros count towards int()'s 4,300-digit limit: a ValueError, not a number.
        ("0" * 5000 + "7", 7),
        ("0" * 5000, None),
        ("257", None),
        ("²", None),
        ("9" * 5000, None),
        ("", None),
        ("-1", None),
        ("+1", None),
        (" 1", None),
    ],
    ids=lambda v: repr(v) if len(str(v)) < 20 else f"{len(v)} chars",
)
def test_whole_number(text: str, expected: int | None) -> None:
    assert whole_number(text, 1, 256) == expected


def test_the_largest_run_number_is_taken_and_the_next_refused() -> None:
    assert whole_number(str(SQLITE_MAX), 1, SQLITE_MAX) == SQLITE_MAX
    assert whole_number(str(SQLITE_MAX + 1), 1, SQLITE_MAX) is None
