"""Every download as an analyst takes it: the reports' and the listings' CSV and NDJSON named
in one form, what an empty one holds, each CSV read back by Python's ``csv`` module (every
option), each NDJSON line parsed; and ``gateway report`` on a narrow terminal, title lines
included. A real gateway over a real store, and the real ``gateway`` command."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.textwidth import width
from tests.conftest import RunningGateway
from tests.gateway.test_cli import _report_store, gateway
from tests.gateway.test_reports_api import AUTH, EVENTS, PAYOUTS, PERIOD, conversion, tp
from tests.terminal import on_a_terminal

NOVEMBER = "from-2026-11-01-to-2026-11-30"
EMPTY = {"since": "2027-01-01", "until": "2027-02-01"}
DOWNLOADS: list[tuple[str, dict[str, str], str]] = [
    ("/api/attribution", {}, f"attribution-linear-channel-{NOVEMBER}"),
    ("/api/attribution", {"table": "totals"}, f"attribution-totals-linear-channel-{NOVEMBER}"),
    (
        "/api/attribution",
        {"model": "data_driven", "table": "learnt"},
        f"attribution-learnt-data_driven-channel-{NOVEMBER}",
    ),
    ("/api/attribution", {"model": "all", "group_by": "campaign"}, f"attribution-all-campaign-{NOVEMBER}"),
    (
        "/api/attribution",
        {"conversion": "Achat réussi", "population": "cookie", "verdicts": "allow,review"},
        f"attribution-linear-channel-Achat_r_ussi-cookie-allow+review-{NOVEMBER}",
    ),
    ("/api/attribution/timeseries", {}, f"timeseries-linear-channel-{NOVEMBER}"),
    ("/api/attribution/timeseries", {"table": "totals"}, f"timeseries-totals-linear-channel-{NOVEMBER}"),
    ("/api/attribution/paths", {}, f"paths-{NOVEMBER}"),
    ("/api/attribution/paths", {"table": "summary"}, f"paths-summary-{NOVEMBER}"),
    ("/api/payouts", {}, f"payouts-last_touch-{NOVEMBER}"),
    ("/api/payouts", {"table": "totals"}, f"payouts-totals-last_touch-{NOVEMBER}"),
    ("/api/fraud", {}, f"fraud-creator_id-{NOVEMBER}"),
    ("/api/touchpoints", {}, f"touchpoints-{NOVEMBER}"),
    ("/api/touchpoints", {"order": "newest"}, f"touchpoints-{NOVEMBER}-newest"),
    ("/api/conversions", {"name": "purchase"}, f"conversions-purchase-{NOVEMBER}"),
    ("/api/review", {"verdict": "block"}, f"review-block-{NOVEMBER}"),
]
"""Each download of November, its parameters and the name it is saved under (before the
delimiter's word and the extension)."""
REPORTS = [
    ("/api/attribution", {}),
    ("/api/attribution", {"table": "totals"}),
    ("/api/attribution", {"model": "all"}),
    ("/api/attribution", {"model": "data_driven", "table": "learnt"}),
    ("/api/attribution/timeseries", {}),
    ("/api/attribution/timeseries", {"table": "totals"}),
    ("/api/attribution/paths", {}),
    ("/api/attribution/paths", {"table": "summary"}),
    ("/api/payouts", {}),
    ("/api/payouts", {"table": "totals"}),
    ("/api/fraud", {}),
]
WINDOWS_SAFE = re.compile(r"[A-Za-z0-9_+.-]*[A-Za-z0-9_+-]\.(csv|ndjson)")
"""A file name Windows takes as it is: none of ``<>:"/\\|?*``, no control character, no
space, not ending in a dot before the extension."""


@pytest.fixture
async def gw(start_gateway: Any, upstream_server: Any) -> RunningGateway:
    running: RunningGateway = await start_gateway(await upstream_server(web.Application()), PAYOUTS)
    await running.gateway.store.write(EVENTS)
    return running


async def fetch(gw: RunningGateway, path: str, **params: str) -> tuple[int, Any, bytes]:
    async with gw.session.get(gw.admin_url + path, headers=AUTH, params=params) as resp:
        return resp.status, resp.headers, await resp.read()


def _disposition(headers: Any) -> str:
    found = re.fullmatch(r'attachment; filename="([^"]+)"', headers["Content-Disposition"])
    assert found, headers["Content-Disposition"]
    return found[1]


async def test_every_download_is_named_in_one_form(gw: RunningGateway) -> None:
    """What, then its table, model, grouping and limits, then ``from-FIRST-to-LAST`` (the
    local days), ``newest`` and the delimiter where they apply, then the extension. Until
    2026-12-07 a report of November was ``attribution-linear-channel-2026-11-01-2026-11-30.csv``
    and a listing of it ``touchpoints-from-2026-11-01-to-2026-11-30.csv``: two forms, and a
    report's open end (the fraud report's) already spelt ``from-``/``to-``."""
    for path, params, stem in DOWNLOADS:
        for fmt, delimiter, ending in (
            ("csv", "comma", ".csv"),
            ("csv", "semicolon", "-semicolon.csv"),
            ("csv", "tab", "-tab.csv"),
            ("ndjson", None, ".ndjson"),
        ):
            asked = {**PERIOD, **params, "format": fmt, **({"delimiter": delimiter} if delimiter else {})}
            status, headers, body = await fetch(gw, path, **asked)
            assert status == 200, (path, asked, body)
            name = _disposition(headers)
            assert name == stem + ending, (path, asked)
            assert WINDOWS_SAFE.fullmatch(name), name
    # Open ends, as before: the fraud report's and the listings' alike.
    for path, params, name in (
        ("/api/fraud", {"since": "2026-11-01"}, "fraud-creator_id-from-2026-11-01.csv"),
        ("/api/fraud", {"until": "2026-12-01"}, "fraud-creator_id-to-2026-11-30.csv"),
        ("/api/fraud", {}, "fraud-creator_id.csv"),
        ("/api/touchpoints", {"until": "2026-12-01"}, "touchpoints-to-2026-11-30.csv"),
        ("/api/touchpoints", {}, "touchpoints.csv"),
        ("/api/bad-events", {"sender": "crm"}, "bad-events-crm.csv"),
    ):
        status, headers, _ = await fetch(gw, path, **params, format="csv")
        assert status == 200 and _disposition(headers) == name, (path, params)


def _csv_rows(body: bytes, delimiter: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body.decode("utf-8-sig"), newline=""), delimiter=delimiter))


async def test_an_empty_report_is_empty_alike_in_every_format(gw: RunningGateway) -> None:
    """A period with nothing in it: the JSON's ``rows`` empty, the CSV its header alone, the
    NDJSON no line at all (0 bytes: NDJSON has no header; a download that failed is never a
    200), for every report and table, and as a 200 with the name of the period."""
    for path, params in REPORTS:
        json_params = {k: v for k, v in params.items() if k != "table"}
        status, _, raw = await fetch(gw, path, **EMPTY, **json_params)
        assert status == 200, (path, raw)
        answer = json.loads(raw)
        if "table" in params:
            table = params["table"]
            rows = answer["learnt"]["channels"] if table == "learnt" else answer.get(table)
            rows = [rows] if isinstance(rows, dict) else rows  # the paths' summary: one row
        else:
            rows = answer.get("rows", answer.get("groups"))
        status, headers, body = await fetch(gw, path, **EMPTY, **params, format="csv")
        assert status == 200 and "from-2027-01-01-to-2027-01-31" in _disposition(headers)
        header, *lines = _csv_rows(body, ",")
        status, _, ndjson = await fetch(gw, path, **EMPTY, **params, format="ndjson")
        assert status == 200
        assert len(lines) == len(ndjson.splitlines()) == len(rows), (path, params, body, ndjson)
        assert header, (path, params)
        if not rows:
            assert ndjson == b"" and body.endswith(b"\r\n") and body.count(b"\r\n") == 1, (path, params)
    # The listings' downloads alike.
    for path in ("/api/touchpoints", "/api/conversions", "/api/review"):
        status, _, raw = await fetch(gw, path, **EMPTY)
        assert status == 200 and json.loads(raw)["items"] == [], (path, raw)
        _, _, body = await fetch(gw, path, **EMPTY, format="csv")
        _, _, ndjson = await fetch(gw, path, **EMPTY, format="ndjson")
        assert ndjson == b"" and len(_csv_rows(body, ",")) == 1, (path, body, ndjson)


def test_report_says_on_stderr_that_its_download_is_empty(tmp_path: Path) -> None:
    """``gateway report --payouts --format ndjson > payouts.ndjson`` of a period without
    creators wrote an empty file and said nothing, which reads as a failed export: the file is
    still empty (the CSV its header), and stderr says why there are no rows, as the table does."""
    cfg = _report_store(tmp_path, EVENTS)
    empty = ("--since", "2027-01-01", "--until", "2027-02-01")
    for extra, why in (
        (("--payouts",), ": no click with a creator ID in this period, and no conversion credited to one"),
        ((), ": no conversions in this period; [[conversions]] rules and signed events record them"),
        (("--fraud",), ""),
    ):
        for fmt in ("ndjson", "csv"):
            done = gateway("report", "-c", str(cfg), *empty, *extra, "--format", fmt)
            assert done.returncode == 0, done.stderr
            assert (done.stdout == "") if fmt == "ndjson" else (done.stdout.count("\n") == 1), done.stdout
            assert done.stderr == f"gateway report: no rows{why}\n", (extra, fmt, done.stderr)
    # Its totals, none, alike: until 2026-12-07 they said a bare "no rows", and for a conversion
    # name none of the period's has (a typo) did not name the recorded ones, as the rows do.
    for extra, why in (
        (
            ("--payouts", *empty),
            ": no click with a creator ID in this period, and no conversion credited to one",
        ),
        (empty, ": no conversions in this period; [[conversions]] rules and signed events record them"),
        (
            ("--timeseries", *empty),
            ": no conversions in this period; [[conversions]] rules and signed events record them",
        ),
        (
            (*PERIOD_ARGS, "--conversion", "purchse"),
            ": no conversion named 'purchse' in this period; recorded in it: 'purchase'",
        ),
    ):
        for fmt in ("ndjson", "csv"):
            done = gateway("report", "-c", str(cfg), *extra, "--format", fmt, "--table", "totals")
            assert done.returncode == 0, done.stderr
            assert (done.stdout == "") if fmt == "ndjson" else (done.stdout.count("\n") == 1), done.stdout
            assert done.stderr == f"gateway report: no rows{why}\n", (extra, fmt, done.stderr)
    # Payouts whose creators were clicked but credited nothing (from the 11th, cr_ben's click is
    # followed by the newsletter's, which takes the USD order): a row to read, no amount to
    # approve, and why, where until 2026-12-07 the table ended at its rows, with no line of
    # totals and nothing said.
    why = (
        "no payout to approve: no conversion in this period is credited to a creator's accepted"
        " traffic; the rows list the creators clicked, and their quarantined traffic"
    )
    since = ("--since", "2026-11-11", "--until", "2026-12-01")
    done = gateway("report", "-c", str(cfg), "--payouts", *since, "--format", "csv", "--table", "totals")
    assert (done.returncode, done.stdout) == (0, "currency,payout\n"), done
    assert done.stderr == f"gateway report: no rows: {why}\n", done.stderr
    done = gateway("report", "-c", str(cfg), "--payouts", *since, "--width", "0")
    assert done.returncode == 0 and done.stderr == "", done
    lines = done.stdout.splitlines()
    assert lines[4].split()[:2] == ["cr_ben", "approve"] and lines[5:] == [f"({why})"], done.stdout
    # A report with rows says nothing there.
    done = gateway("report", "-c", str(cfg), *PERIOD_ARGS, "--payouts", "--format", "ndjson")
    assert done.returncode == 0 and done.stderr == "" and done.stdout.count("\n") == 2, done


PERIOD_ARGS = ("--since", "2026-11-01", "--until", "2026-12-01")


def test_report_on_a_narrow_terminal_fits_its_titles_too(tmp_path: Path) -> None:
    """At ``COLUMNS=40`` the tables were cut to fit and their title lines were not: the title
    (``attribution: 2026-11-01T00:00:00Z .. 2026-12-01T00:00:00Z, model …``), the totals, the
    paths' summary, what data_driven learnt and an empty table's reason ran past the edge. They
    wrap at a space now, a following line indented by two, no word lost or cut."""
    cfg = _report_store(tmp_path, EVENTS)
    for extra in (
        ("--verdicts", "allow,review", "--population", "cookie", "--conversion", "purchase"),
        ("--model", "data_driven"),
        ("--paths",),
        ("--payouts", "--since", "2027-01-01", "--until", "2027-02-01"),
        ("--conversion", "purchse"),
    ):
        args = ("report", "-c", str(cfg), *(() if "--since" in extra else PERIOD_ARGS), *extra)
        drawn = on_a_terminal(*args, env={"COLUMNS": "40"})
        piped = gateway(*args)
        assert piped.returncode == 0, piped.stderr
        prose = [line for line in drawn.splitlines() if not _table_line(line)]
        assert all(width(line) <= 40 for line in prose), (extra, drawn)
        # Nothing lost: the same words as the pipe's whole lines, in order.
        said = [line for line in piped.stdout.splitlines() if not _table_line(line)]
        assert " ".join(prose).split() == " ".join(said).split(), (extra, drawn, piped.stdout)
        assert any(line.startswith("  ") for line in prose), (extra, drawn)  # it did wrap
    # A long conversion name is cut, to fit one line of its own.
    long = "checkout_completed_" + "x" * 60
    events = [tp("v1", 0, "Email"), conversion(1, 10.00, "v1")]
    (tmp_path / "long").mkdir()
    cfg = _report_store(tmp_path / "long", events)
    drawn = on_a_terminal("report", "-c", str(cfg), *PERIOD_ARGS, "--conversion", long, env={"COLUMNS": "40"})
    lines = [line for line in drawn.splitlines() if line]
    assert all(width(line) <= 40 for line in lines), drawn
    assert lines[3].startswith("  conversion checkout_completed_x") and lines[3].endswith("…"), drawn
    # So is the name where the empty table quotes it (a line of its own, quotes included).
    assert "  'checkout_completed_x" in drawn and "…'" in drawn, drawn


def _table_line(line: str) -> bool:
    """A line of a table (its header, rule or a row): cells apart by two spaces or more, or
    the rule; a wrapped title's following line starts with two spaces and has one apart."""
    return bool(re.search(r"\S {2,}\S", line)) or bool(re.fullmatch(r"[- ]*-[- ]*", line)) or line == ""


async def test_every_csv_reads_back_whole_with_every_option(gw: RunningGateway) -> None:
    """Each report's and listing's CSV through Python's ``csv`` module, with and without the
    byte order mark, for each delimiter: every row has the header's columns, numbers are plain
    (no thousands separator, ``.`` for the decimal), times ISO 8601; each NDJSON line parses,
    with the same rows and values as the CSV."""
    downloads = [*REPORTS, ("/api/touchpoints", {}), ("/api/conversions", {}), ("/api/review", {})]
    number = re.compile(r"-?[0-9]+(\.[0-9]+)?")
    for path, params in downloads:
        _, _, ndjson = await fetch(gw, path, **PERIOD, **params, format="ndjson")
        objects = [json.loads(line) for line in ndjson.decode().splitlines()]
        assert objects or path == "/api/review", (path, params)
        for bom in ("false", "true"):
            for delimiter, char in (("comma", ","), ("semicolon", ";"), ("tab", "\t")):
                asked = {**PERIOD, **params, "format": "csv", "bom": bom, "delimiter": delimiter}
                status, headers, body = await fetch(gw, path, **asked)
                assert status == 200, (path, asked, body)
                assert headers["Content-Type"] == "text/csv; charset=utf-8"
                assert body.startswith(b"\xef\xbb\xbf") == (bom == "true"), (path, asked)
                header, *rows = _csv_rows(body, char)
                # The NDJSON's keys in the CSV's order (a listing's were sorted by name).
                assert header == list(objects[0]) if objects else header, (path, asked, header)
                assert len(rows) == len(objects), (path, asked)
                for row, obj in zip(rows, objects, strict=True):
                    assert len(row) == len(header), (path, asked, row)
                    for column, cell in zip(header, row, strict=True):
                        value = obj[column]
                        if isinstance(value, bool):
                            assert cell == ("true" if value else "false")
                        elif isinstance(value, int | float):
                            assert number.fullmatch(cell) and Decimal(cell) == Decimal(str(value)), (
                                path,
                                column,
                                cell,
                            )
                        elif column in ("ts", "day", "since", "until", "learnt_at") and value:
                            datetime.fromisoformat(cell)  # ISO 8601
                            assert cell == value, (path, column, cell)
