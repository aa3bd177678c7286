"""Whole numbers on the command line: what ``--workers``, ``--batch-size``, ``--undo``,
``--width`` and a ``--host``'s port take.

``str.isdigit`` takes digits ``int`` does not (``²``) and ``int`` refuses more than 4300 digits,
leading zeros counted (``000…07``): either raised ValueError inside argparse, which then named
our function (``invalid _workers value: '²'``) instead of the option's own message. SQLite holds 64-bit
integers at most: a run number past them was a traceback (``OverflowError``) once it reached the
store.
"""

from __future__ import annotations

SQLITE_MAX = 2**63 - 1
"""The largest integer SQLite stores (a row ID, an import run's number)."""


def whole_number(text: str, low: int, high: int) -> int | None:
    """``text`` as an integer ``low..high`` written in ASCII digits alone; None otherwise."""
    if not (text.isascii() and text.isdigit()) or len(text.lstrip("0")) > len(str(high)):
        return None
    number = int(text.lstrip("0") or "0")  # int() counts leading zeros towards its digit limit
    return number if low <= number <= high else None
