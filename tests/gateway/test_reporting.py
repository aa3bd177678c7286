"""The reports' renderings (``gateway/reporting.py``): what CSV does to text a spreadsheet
would run as a formula, and what it leaves alone."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal

import pytest

from gateway.reporting import Report, display_width

COLUMNS = ["group", "currency", "conversions", "value"]


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_csv_quotes_text_a_spreadsheet_would_run(start: str) -> None:
    """OWASP's CSV injection guidance: such text gets a leading ', so that it shows as text.
    Numbers are decided by their type, never by their text: a negative one stays a number,
    and text that merely contains a formula character is left as it is."""
    rows = [
        {
            "group": start + "SUM(A1)",
            "currency": "EUR",
            "conversions": Decimal("-1.5"),
            "value": Decimal("-10.00"),
        },
        {"group": "a=b-c", "currency": None, "conversions": -2, "value": Decimal("0.00")},
    ]
    report = Report("attribution", COLUMNS, rows)
    assert list(csv.reader(io.StringIO(report.csv(), newline=""))) == [
        COLUMNS,
        ["'" + start + "SUM(A1)", "EUR", "-1.5", "-10.00"],
        ["a=b-c", "", "-2", "0.00"],
    ]
    # JSON and NDJSON are data, not a sheet: every value exact.
    exact = [
        {"group": start + "SUM(A1)", "currency": "EUR", "conversions": -1.5, "value": -10.0},
        {"group": "a=b-c", "currency": None, "conversions": -2, "value": 0.0},
    ]
    assert [json.loads(line) for line in report.ndjson().splitlines()] == exact
    assert json.loads(report.json())["rows"] == exact


def test_the_terminal_table_aligns_wide_and_combining_characters() -> None:
    """A campaign named in Japanese takes two columns a character, an accent written as a
    combining mark none: the numbers after them still line up."""
    rows = [
        {"group": "夏のセール", "currency": "JPY", "conversions": 12, "value": Decimal("3400")},
        {"group": "cafe\u0301 ☕", "currency": "EUR", "conversions": 3, "value": Decimal("5.50")},
        {"group": "spring", "currency": "EUR", "conversions": 140, "value": Decimal("99.00")},
    ]
    report = Report("attribution", COLUMNS, rows, {"since": "2026-11-01", "until": "2026-12-01"})
    lines = report.text().splitlines()[2:]
    assert lines == [
        "group       currency  conversions  value",
        "----------  --------  -----------  -----",
        "夏のセール  JPY                12   3400",
        "cafe\u0301 ☕     EUR                 3   5.50",
        "spring      EUR               140  99.00",
    ]


@pytest.mark.parametrize(
    ("text", "columns"),
    [
        ("สวัสดี", 4),  # Thai: two of its vowel signs sit above a consonant (class 0 marks)
        ("नमस्ते", 4),  # Devanagari: a virama and a vowel sign, both non-spacing
        ("cafe\u0301", 4),  # a combining accent (class 230)
        ("a\u20dd", 1),  # an enclosing mark
        ("夏\u200d", 2),  # a zero-width joiner
    ],
)
def test_display_width_counts_every_non_spacing_mark_as_none(text: str, columns: int) -> None:
    """A non-spacing mark takes no column whatever its combining class: Thai and Indic vowel
    signs are class 0, so the class alone counted them one each and the table went askew."""
    assert display_width(text) == columns


@pytest.mark.parametrize(
    ("text", "columns"),
    [("❤\ufe0f", 2), ("❤", 1), ("I ❤\ufe0f NY", 7), ("😀\ufe0f", 2), ("\ufe0f", 0)],
)
def test_display_width_of_a_symbol_shown_as_an_emoji(text: str, columns: int) -> None:
    """VS16 asks for a narrow symbol's emoji form, which terminals draw two columns wide."""
    assert display_width(text) == columns
