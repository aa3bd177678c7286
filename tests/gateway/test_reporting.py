"""The reports' renderings (``gateway/reporting.py``): what CSV does to text a spreadsheet
would run as a formula, and what it leaves alone; how the terminal table lines up wide,
combining and right-to-left text."""

from __future__ import annotations

import csv
import ctypes
import ctypes.util
import io
import json
import re
from decimal import Decimal
from typing import Any

import pytest

from gateway.reporting import LRM, Report, display_width

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


def _icu_bidi() -> ctypes.CDLL | None:
    """ICU's common library (the Unicode bidi algorithm as terminals apply it), if installed."""
    name = ctypes.util.find_library("icuuc")
    return ctypes.CDLL(name) if name else None


def _visual_order(icu: ctypes.CDLL, line: str, paragraph: int) -> list[int]:
    """The logical index of each character of ``line`` (BMP only) in the order the Unicode bidi
    algorithm displays them, with ICU's ``ubidi``; ``paragraph``: 0 left to right, 0xFE
    detected from the first strong letter (as Konsole and mlterm do)."""
    # ICU versions its symbols (ubidi_open_72) unless it was built without renaming.
    suffix = "" if hasattr(icu, "ubidi_openSized") else "_" + icu._name.rsplit(".", 1)[-1]

    def fn(name: str) -> Any:
        return getattr(icu, name + suffix)

    err = ctypes.c_int(0)
    n = len(line)
    open_sized, set_para, visual_map, close = (
        fn("ubidi_openSized"), fn("ubidi_setPara"), fn("ubidi_getVisualMap"), fn("ubidi_close"),
    )  # fmt: skip
    open_sized.restype = ctypes.c_void_p
    open_sized.argtypes = [ctypes.c_int32, ctypes.c_int32, ctypes.POINTER(ctypes.c_int)]
    set_para.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32, ctypes.c_uint8]
    set_para.argtypes += [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
    visual_map.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int32), ctypes.POINTER(ctypes.c_int)]
    close.argtypes = [ctypes.c_void_p]
    bidi = open_sized(n, 0, ctypes.byref(err))
    text = ctypes.create_string_buffer(line.encode("utf-16-le"))
    set_para(bidi, text, n, paragraph, None, ctypes.byref(err))
    order = (ctypes.c_int32 * n)()
    visual_map(bidi, order, ctypes.byref(err))
    close(bidi)
    assert err.value <= 0, f"ICU error {err.value}"
    return list(order)


RTL_ROWS = [
    {"group": "מבצע חורף", "clicks": 6, "allow": 5, "block": 1},
    {"group": "حملة الشتاء", "clicks": 12, "allow": 12, "block": 0},
    {"group": "٢٠٢٦", "clicks": 3, "allow": 3, "block": 0},
    {"group": "spring", "clicks": 140, "allow": 139, "block": 1},
]


def test_a_right_to_left_name_keeps_the_numbers_after_it_in_their_columns() -> None:
    """A terminal that applies the bidi algorithm (GNOME Terminal, Konsole) reversed a Hebrew or
    Arabic name together with the numbers after it (``מבצע חורף  6  5  1`` showed as
    ``1  5  6  ףרוח עצבמ``): the name's cell is now fenced by LEFT-TO-RIGHT MARKs, which take no
    column, so the table still lines up, and the columns show in order."""
    report = Report("fraud", ["group", "clicks", "allow", "block"], RTL_ROWS, {"since": None, "until": None})
    lines = report.text().splitlines()[4:8]
    assert [line.count(LRM) for line in lines] == [2, 2, 2, 0]
    assert len({display_width(line) for line in lines}) == 1  # the marks take no column
    icu = _icu_bidi()
    if icu is None:
        pytest.skip("ICU (libicuuc) is not installed: the layout itself is not checked")
    for line in lines:
        cell_of = []  # each character's column: a run of 2+ spaces ends a cell
        column = 0
        for match in re.finditer(r" {2,}|[^ ]+| ", line):
            cell_of += [column] * len(match.group())
            column += match.group().startswith("  ")
        for paragraph in (0, 0xFE):
            shown = [cell_of[i] for i in _visual_order(icu, line, paragraph)]
            assert shown == sorted(shown), (line, paragraph)
