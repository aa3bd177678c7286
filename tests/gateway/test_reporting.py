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

from gateway.reporting import LRM, Report, fit
from gateway.textwidth import width

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


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_csv_separated_by_semicolon_or_tab_quotes_a_cell_holding_it(delimiter: str) -> None:
    """Excel where the list separator is ``;`` (German, French…) splits a CSV at ``;``: a cell
    holding one is quoted, or it would be split in two; the formula guard holds, and a decimal
    keeps its point (read with the import dialog's "decimal separator ."), never a comma."""
    rows = [
        {
            "group": f"=1{delimiter}2",
            "currency": "EUR",
            "conversions": Decimal("1.5"),
            "value": Decimal("-0.50"),
        },
        {"group": f"sale{delimiter} 20%", "currency": None, "conversions": 2, "value": Decimal("1234.56")},
    ]
    text = Report("attribution", COLUMNS, rows).csv(delimiter)
    assert text.splitlines() == [
        delimiter.join(COLUMNS),
        delimiter.join([f'"\'=1{delimiter}2"', "EUR", "1.5", "-0.50"]),
        delimiter.join([f'"sale{delimiter} 20%"', "", "2", "1234.56"]),
    ]
    assert list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)) == [
        COLUMNS,
        [f"'=1{delimiter}2", "EUR", "1.5", "-0.50"],
        [f"sale{delimiter} 20%", "", "2", "1234.56"],
    ]
    # The comma, the default, is left as it was: a cell holding ";" needs no quotes there.
    assert Report("attribution", COLUMNS, rows).csv().splitlines()[2] == f"sale{delimiter} 20%,,2,1234.56"


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


def test_the_terminal_tells_no_value_from_a_value_written_none() -> None:
    """A campaign literally named ``(none)`` (a link's ``utm_campaign=(none)``) and credit with
    no campaign at all both read ``(none)`` in the terminal, where the JSON has ``"(none)"`` and
    ``null``. The literal is quoted now, and so is a value already in double quotes, so that
    each shown cell reads back one way; other columns and other names are as they were."""
    rows = [
        {"group": None, "currency": "EUR", "conversions": 1, "value": Decimal("40.00")},
        {"group": "(none)", "currency": "EUR", "conversions": 1, "value": Decimal("30.00")},
        {"group": '"(none)"', "currency": "EUR", "conversions": 1, "value": Decimal("20.00")},
        {"group": '"spring', "currency": "EUR", "conversions": 1, "value": Decimal("10.00")},
    ]
    report = Report("attribution", COLUMNS, rows, {"since": "a", "until": "b"})
    assert [line.split("  ")[0] for line in report.text().splitlines()[4:8]] == [
        "(none)",
        '"(none)"',
        '"\\"(none)\\""',
        '"spring',
    ]
    assert report.csv().splitlines()[1:3] == [",EUR,1,40.00", "(none),EUR,1,30.00"]  # the CSV as it was
    payouts = Report(
        "payouts",
        ["creator_id", "payout"],
        [{"creator_id": "(none)", "payout": 1}],
        {"since": "a", "until": "b"},
    )
    assert '"(none)"' in payouts.text()


LONG = "black_friday_" + "x" * 137  # a campaign of 150 characters


def test_the_terminal_table_cuts_names_to_fit_and_keeps_numbers_whole() -> None:
    """Given the terminal's columns, the widest text column is cut with one ``…`` so that every
    line fits; the numbers, the currency and the other names are left whole. Until 2026-12-05
    a 150-character campaign made every line 150 columns wide, and a terminal wrapped them."""
    rows = [
        {"group": LONG, "currency": "EUR", "conversions": Decimal("1.333334"), "value": Decimal("43.35")},
        {"group": "spring", "currency": "EUR", "conversions": 140, "value": Decimal("99.00")},
        {"group": "👍\U0001f3fd" * 30, "currency": "JPY", "conversions": 12, "value": Decimal("3400")},
    ]
    meta = {"since": "2026-11-01", "until": "2026-12-01", "conversion": "purchase_" + "y" * 120}
    report = Report("attribution", COLUMNS, rows, meta)
    whole = report.text().splitlines()
    assert LONG in whole[4] and len(whole[4]) > 150 and whole[0].endswith("y" * 120)
    assert report.text(0) == report.text()  # 0: never cut
    lines = report.text(60).splitlines()
    assert max(width(line) for line in lines) == 60
    # The title wraps; the conversion's name is cut to a line of its own (until 2026-12-07 to
    # what the first line had left, "purchase_…", and the title ran past a narrower terminal).
    assert lines[:2] == ["attribution: 2026-11-01 .. 2026-12-01,", "  conversion purchase_" + "y" * 37 + "…"]
    # 60 = 8 + 11 + 5 (currency, conversions, value) + 3 gaps of 2 + 30 for the group.
    assert lines[3] == "group" + " " * 25 + "  currency  conversions  value"
    assert lines[5] == "black_friday_" + "x" * 16 + "…  EUR          1.333334  43.35"
    assert lines[6] == "spring" + " " * 24 + "  EUR               140  99.00"
    # 14 thumbs and an ellipsis (29 columns), one space of padding: no orphan skin tone.
    assert lines[7] == "👍\U0001f3fd" * 14 + "…   JPY                12   3400"
    # Wide enough: as it is.
    assert (
        Report("attribution", COLUMNS, rows[1:2], {"since": "a", "until": "b"}).text(40)
        == Report("attribution", COLUMNS, rows[1:2], {"since": "a", "until": "b"}).text()
    )


def test_what_data_driven_learnt_is_a_second_table_cut_to_fit_as_the_first() -> None:
    """Under the rows and totals, a title saying how many journeys it learnt from and a table of
    channels, removal effects and weights, whose long channel names are cut to the terminal's
    width as the first table's names are (its title wrapped, words whole); no learnt, no second
    table."""
    rows = [{"group": "Email", "currency": "EUR", "conversions": Decimal("0.75"), "value": Decimal("75.00")}]
    learnt = {
        "converting_journeys": 2,
        "non_converting_journeys": 5,
        "channels": [
            {"channel": "Email", "removal_effect": Decimal("1.000000"), "weight": Decimal("0.750000")},
            {
                "channel": "Partner " + "z" * 60,
                "removal_effect": Decimal("0.333333"),
                "weight": Decimal("0.250000"),
            },
        ],
    }
    meta = {"since": "a", "until": "b", "model": "data_driven", "totals": [], "learnt": learnt}
    lines = Report("attribution", COLUMNS, rows, meta).text(40).splitlines()
    at = lines.index("data_driven learnt from 7 journeys: 2")
    assert lines[at + 1] == "  converting, 5 not converting"  # wrapped: until 2026-12-07 66 columns
    assert max(width(line) for line in lines) == 40
    assert lines[at - 1 : at + 4] == [
        "",
        lines[at],
        lines[at + 1],
        "",
        "channel" + " " * 7 + "  removal_effect    weight",
    ]
    assert lines[at + 5 :] == [
        "Email                 1.000000  0.750000",
        "Partner zzzzz…        0.333333  0.250000",
    ]
    # The demo's first sign-up is one journey: said in the singular (it read "1 journeys").
    meta["learnt"] = {**learnt, "converting_journeys": 1, "non_converting_journeys": 0}
    lines = Report("attribution", COLUMNS, rows, meta).text().splitlines()
    assert "data_driven learnt from 1 journey: 1 converting, 0 not converting" in lines, lines
    del meta["learnt"]
    assert "learnt" not in Report("attribution", COLUMNS, rows, meta).text()


def test_the_terminal_table_counts_escapes_where_the_terminal_cannot_show_a_character() -> None:
    """On an ASCII or Latin-1 terminal a name's characters it cannot show are written as their
    escapes, and the table is laid out with the escapes: every line fits, the numbers line up,
    a cut name ends in ``...`` (``…`` is one of those characters), and a Hebrew name gets no
    left-to-right marks (six columns each as escapes). Until 2026-12-05 the escapes were made
    after the layout: such a row stood out of line and past the terminal's width."""
    rows = [
        {"group": "日本語セール夏", "currency": "JPY", "conversions": 12, "value": Decimal("3400")},
        {"group": "spring", "currency": "EUR", "conversions": 3, "value": Decimal("5.50")},
        {"group": "מבצע", "currency": "EUR", "conversions": 1, "value": Decimal("1.00")},
    ]
    meta = {"since": "a", "until": "b", "conversion": "注文" * 10}
    report = Report("attribution", COLUMNS, rows, meta)
    for encoding in ("ascii", "latin-1"):
        lines = report.text(40, encoding).splitlines()
        # The name cut to a line of its own: 40 columns.
        assert lines[:2] == ["attribution: a .. b,", "  conversion \\u6ce8\\u6587\\u6ce8\\u6587..."]
        assert lines[3:] == [
            "group       currency  conversions  value",
            "----------  --------  -----------  -----",
            "\\u65e5\\...  JPY                12   3400",
            "spring      EUR                 3   5.50",
            "\\u05de\\...  EUR                 1   1.00",
        ]
        assert report.text(40, encoding).encode(encoding)  # nothing left it cannot write
    # Whole names (a pipe): escaped and aligned all the same.
    whole = report.text(0, "ascii").splitlines()
    assert whole[4] == "\\u65e5\\u672c\\u8a9e\\u30bb\\u30fc\\u30eb\\u590f  JPY                12   3400"
    assert whole[5] == "spring" + " " * 36 + "  EUR                 3   5.50"
    # A terminal that shows them: as before.
    assert report.text(40) == report.text(40, "utf-8")
    assert "日本語セ…" in report.text(40)


def test_the_terminal_title_names_the_population_and_verdicts_it_is_limited_to() -> None:
    """The title says what the report is limited to, as the download's name does: the
    verdicts unless ``allow`` alone, the population, the conversion. Until 2026-12-05
    ``--population cookieless`` printed the title of the report of every population."""
    meta = {"since": "a", "until": "b", "model": "linear", "group_by": "channel", "verdicts": ["allow"]}
    title = Report("attribution", COLUMNS, [], meta).text().splitlines()[0]
    assert title == "attribution: a .. b, model linear, group_by channel"
    meta |= {"verdicts": ["allow", "review"], "population": "cookieless", "conversion": "signup"}
    title = Report("attribution", COLUMNS, [], meta).text().splitlines()[0]
    assert title == (
        "attribution: a .. b, model linear, group_by channel, verdicts allow,review,"
        " population cookieless, conversion signup"
    )
    paths = Report("paths", COLUMNS, [], {"since": "a", "until": "b", "population": "no_consent"})
    assert paths.text().splitlines()[0] == "paths: a .. b, population no_consent"


def test_the_terminal_table_never_cuts_the_time_series_day() -> None:
    """The day of the time series is kept whole as a number is: cut to fit a narrow terminal
    it read ``2026-11-…`` on every row (until 2026-12-05), the day of none."""
    columns = ["day", *COLUMNS]
    rows = [
        {
            "day": "2026-11-20",
            "group": "Organic Search",
            "currency": "EUR",
            "conversions": 1,
            "value": Decimal("675.00"),
        },
        {
            "day": "2026-11-21",
            "group": "Paid Social",
            "currency": "EUR",
            "conversions": 2,
            "value": Decimal("5.00"),
        },
    ]
    report = Report("timeseries", columns, rows, {"since": "a", "until": "b"})
    lines = report.text(51).splitlines()[2:]
    assert lines == [
        "day         group     currency  conversions   value",
        "----------  --------  --------  -----------  ------",
        "2026-11-20  Organic…  EUR                 1  675.00",
        "2026-11-21  Paid So…  EUR                 2    5.00",
    ]
    # Narrower, it cannot fit with the day whole and the names at 8 columns: printed whole.
    assert report.text(50) == report.text()


def test_fit_cuts_the_widest_text_columns_first_and_never_numbers() -> None:
    headers = [5, 10, 6, 5]  # group, creator_id, clicks, value
    numeric = [False, False, True, True]
    assert fit([40, 12, 6, 9], headers, numeric, 80) == [40, 12, 6, 9]  # 73 with the gaps: fits
    assert fit([40, 12, 6, 9], headers, numeric, 50) == [17, 12, 6, 9]  # the widest alone
    assert fit([40, 30, 6, 9], headers, numeric, 50) == [15, 14, 6, 9]  # cut alike
    assert fit([40, 30, 6, 9], headers, numeric, 49) == [14, 14, 6, 9]
    # Too narrow even for names of 8 columns (10: the header): nothing cut, the lines wrap
    # (found in an audit, 2026-12-05: `model=all`, 420 columns of numbers, had its channel
    # names cut to `Organic…` in 50 columns, for lines that wrapped anyway).
    assert fit([40, 30, 6, 9], headers, numeric, 39) == [8, 10, 6, 9]  # 33 and the gaps: fits
    assert fit([40, 30, 6, 9], headers, numeric, 38) == [40, 30, 6, 9]
    assert fit([5, 30, 6, 9], headers, numeric, 20) == [5, 30, 6, 9]


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
    assert len({width(line) for line in lines}) == 1  # the marks take no column
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


@pytest.mark.parametrize(
    ("text", "cell"),
    [
        ("0042", "'0042"),  # a spreadsheet shows 42: another creator
        ("7123456789012345678", "'7123456789012345678"),  # a TikTok-length ID: 7.12345678901235E+18
        ("123456789012", "'123456789012"),  # 12 digits: Excel's General format shows 1.23457E+11
        ("12E3", "'12E3"),  # 12000
        ("1e5", "'1e5"),
        ("1.50", "'1.50"),  # 1.5
        (".5", "'.5"),  # 0.5
        ("3.", "'3."),
        ("2024", "2024"),  # shown as written: left as it was
        ("12345678901", "12345678901"),
        ("0", "0"),
        ("cr_0042", "cr_0042"),
        ("0042abc", "0042abc"),
        ("2026-11-01", "2026-11-01"),  # the time series' day stays a date for a chart
        ("", ""),
        # Read as a date, a time or another number, shown otherwise than written:
        ("2-3", "'2-3"),  # the paths report's bucket of 2 to 3 days: Excel shows 3-Feb
        ("8-14", "'8-14"),  # 14-Aug
        ("3/4", "'3/4"),  # 4-Mar
        ("nov-26", "'nov-26"),  # a campaign of November 2026: 26-Nov
        ("26 Nov", "'26 Nov"),
        ("MARCH1", "'MARCH1"),  # 1-Mar, as Excel did to gene names
        ("Sept2", "'Sept2"),
        ("2026-11", "'2026-11"),  # Nov-26
        ("12.11.2026", "'12.11.2026"),  # a date where the decimal mark is a comma
        ("1.2", "'1.2"),  # 1.2 here, 01 Feb where the decimal mark is a comma (CSV (;))
        ("10:30", "'10:30"),  # a time
        ("(123)", "'(123)"),  # -123, as accountants write it
        ("$5", "'$5"),  # 5, as money
        ("50%", "'50%"),  # 0.5
        ("1,234", "'1,234"),  # 1234
        ("1 1/2", "'1 1/2"),  # 1.5
        (" 42", "' 42"),  # 42: the space dropped
        # Text still: letters beside the digits, a path, a bucket with a plus.
        ("black-friday-2026", "black-friday-2026"),
        ("spring-2027", "spring-2027"),
        ("nov", "nov"),
        ("v1.2", "v1.2"),
        ("Region 2", "Region 2"),
        ("10+", "10+"),
        ("/2026/11", "/2026/11"),
        ("sale 50% off", "sale 50% off"),
    ],
)
def test_csv_keeps_text_a_spreadsheet_would_read_as_another_number(text: str, cell: str) -> None:
    """A creator ID, campaign or source that a spreadsheet would read as a number it then
    shows otherwise (leading zeros dropped, a long ID rounded to 15 digits or shown in
    exponent form, ``12E3`` as 12000), or as a date, a time, money or a percentage (``nov-26``
    as 26-Nov, ``3/4`` as 4-Mar, ``(123)`` as -123: until 2026-12-07 those were left as they
    were) gets a leading ', as a formula does: the partner manager paying by ID reads the ID
    the link carried. A whole number of at most 11 digits without a leading zero is shown as
    written, and stays as it is, as does an ISO date; JSON keeps every value exact."""
    report = Report("payouts", ["creator_id", "payout"], [{"creator_id": text, "payout": Decimal("5.00")}])
    assert list(csv.reader(io.StringIO(report.csv(), newline=""))) == [
        ["creator_id", "payout"],
        [cell, "5.00"],
    ]
    assert json.loads(report.json())["rows"] == [{"creator_id": text, "payout": 5.0}]


@pytest.mark.parametrize(
    ("text", "cell"),
    [
        ("true", "'true"),  # LibreOffice and Excel show TRUE, a truth value
        ("False", "'False"),  # FALSE
        ("TRUE", "TRUE"),  # shown as written
        ("10:30 AM", "'10:30 AM"),  # 10:30:00 AM, a time
        ("10:30am", "'10:30am"),
        ("3 pm", "'3 pm"),  # 03:00:00 PM
        ("3PM", "'3PM"),
        ("5$", "'5$"),  # $5.00
        ("$-5", "'$-5"),  # -$5.00
        (" 1e5", "' 1e5"),  # 1.00E+05: the spaces dropped first
        ("1e5 ", "'1e5 "),
        # Text still: campaigns with digits beside letters.
        ("q4-2026", "q4-2026"),
        ("summer-sale-2", "summer-sale-2"),
        ("v2", "v2"),
        ("pm", "pm"),
        ("truest", "truest"),
        ("3 pm sale", "3 pm sale"),
        ("5-", "'5-"),  # -5, a minus after it
        ("(1,234.50)", "'(1,234.50)"),
        ("2026/11/01", "'2026/11/01"),  # a date
        ("11/2026", "'11/2026"),  # Nov-26
        # Shown as written (LibreOffice en-US, en-GB, de-DE): codes of more parts, unpaired
        # parentheses, an order number whose first part is no year.
        ("800-555-1234", "800-555-1234"),
        ("12-345", "12-345"),
        ("1001-2", "1001-2"),
        ("2026-0001", "2026-0001"),
        ("100-200", "100-200"),
        ("1-2-3-4-5", "1-2-3-4-5"),
        ("1/1/1/1", "1/1/1/1"),
        ("1:2:3:4", "1:2:3:4"),
        ("(5", "(5"),
        ("5)", "5)"),
        ("1 2", "1 2"),
        ("10+", "10+"),
    ],
)
def test_csv_keeps_truth_values_times_of_day_and_spaced_numbers_as_text(text: str, cell: str) -> None:
    """What LibreOffice (en-US) shows otherwise than written, and the CSV left as it was until
    2026-12-07: a truth value in lower or mixed case, a time with AM or PM, money with its sign
    after or a minus after it, a number in exponent form between spaces. A code of numbers in
    more parts than a date or a time has (a phone number, an order number) is shown as written
    and left so. JSON keeps the text."""
    report = Report("payouts", ["creator_id", "payout"], [{"creator_id": text, "payout": Decimal("5.00")}])
    assert list(csv.reader(io.StringIO(report.csv(), newline=""))) == [
        ["creator_id", "payout"],
        [cell, "5.00"],
    ]
    assert json.loads(report.json())["rows"] == [{"creator_id": text, "payout": 5.0}]
