"""The reports' renderings (``gateway/reporting.py``): what CSV does to text a spreadsheet
would run as a formula, and what it leaves alone."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal

import pytest

from gateway.reporting import Report

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
