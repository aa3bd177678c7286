"""``gateway report``: the admin API's reports in a terminal, from the store file directly.

Attribution by default (one model, or ``--model all`` side by side), ``--timeseries``,
``--paths``, ``--payouts`` or ``--fraud``; printed as an aligned table, or as CSV (``,``, ``;``
or tab between the cells: ``--delimiter``) / NDJSON for a pipe.
Needs no secret and no running gateway; reads only. With ``central.mirror_path`` it reads the
reporting mirror, and says so on stderr (empty: never filled).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import select
import shutil
import sqlite3
import sys
from pathlib import Path

from gateway import reporting
from gateway.admin import ApiError, span
from gateway.attribution import MODELS, Attribution
from gateway.cliargs import whole_number
from gateway.config import ConfigError, Settings, load_settings
from gateway.openapi import DELIMITERS
from gateway.openapi_reports import GROUP_BY
from gateway.payouts import Payouts
from gateway.reportapi import PARAMS, period, table_param
from storage.local import store_hint
from storage.migrate import SchemaTooNew, refuse_newer_file
from storage.populations import POPULATIONS, population_refused
from storage.queries import Reader, period_conversion_names
from storage.reports import Reports


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], default_config: str) -> None:
    report = sub.add_parser("report", help="print an attribution or payout report from the store")
    report.add_argument("-c", "--config", default=default_config, help="config file (default: %(default)s)")
    report.add_argument(
        "--model", choices=[*MODELS, "all"], help="default: linear; payouts: payouts.model; not for --paths"
    )
    report.add_argument(
        "--group-by",
        choices=GROUP_BY,
        help="default: channel, fraud: creator_id; not for --paths or --payouts",
    )
    report.add_argument(
        "--since",
        help="ISO 8601 date or date-time, inclusive (default: until - 30 days; fraud: the first touchpoint)",
    )
    report.add_argument("--until", help="ISO 8601 date or date-time, exclusive (default: now; fraud: no end)")
    report.add_argument("--conversion", help="only conversions of this name")
    report.add_argument(
        "--verdicts", help="comma-separated bot verdicts that count (default: attribution.verdicts)"
    )
    report.add_argument(
        "--population",
        type=_population,
        metavar="{" + ",".join(POPULATIONS) + "}",
        help="only this population's touchpoints (touchpoints.consent; default: every population)",
    )
    report.add_argument(
        "--format", choices=("table", "csv", "ndjson"), default="table", help="output (default: %(default)s)"
    )
    report.add_argument(
        "--width",
        type=_width,
        metavar="N",
        help="cut names so that the table fits N columns, 0: never (default: the terminal's width "
        "on a terminal, else 0); table only",
    )
    report.add_argument(
        "--delimiter",
        choices=tuple(DELIMITERS),
        help="what separates --format csv's cells (default: comma; semicolon: Excel where the list "
        "separator is ;, as in German or French)",
    )
    report.add_argument(
        "--bom",
        action="store_true",
        help="start --format csv with a UTF-8 byte order mark, for Excel opening the file by a double click",
    )
    report.add_argument(
        "--table",
        choices=("rows", "totals", "summary", "learnt"),
        help="--format csv or ndjson of the report's rows (default), its totals per currency, the"
        " paths report's summary, or what data_driven learnt (the table prints them below its rows)",
    )
    which = report.add_mutually_exclusive_group()
    which.add_argument("--payouts", action="store_true", help="creator payouts by the [payouts] rules")
    which.add_argument("--timeseries", action="store_true", help="credits per day")
    which.add_argument("--paths", action="store_true", help="path lengths and time to convert")
    which.add_argument(
        "--fraud", action="store_true", help="clicks per creator (or --group-by) by bot verdict, top reasons"
    )
    report.set_defaults(func=cmd_report)


def _population(text: str) -> str:
    """``--population``: one a report can be limited to; ``aggregate`` told why it cannot."""
    if text not in POPULATIONS:
        raise argparse.ArgumentTypeError(population_refused(text))
    return text


def _why_no_rows(whole: reporting.Report, download: reporting.Report) -> str:
    """Why ``download``, the report ``whole`` or a table of it (``--table``), has no rows. A
    table of an empty report is empty for the report's reason: until 2026-12-07 its totals (or
    what data_driven learnt) said a bare "no rows", without naming the period's conversions
    when the conversion asked for was none of them (a typo). Payouts' totals beside rows are
    empty when none of those creators is credited from accepted traffic: nothing to approve."""
    if download is whole or not whole.rows:
        return whole.no_rows().removeprefix("(").removesuffix(")")
    if whole.name == "payouts" and download.name == "payouts-totals":
        return f"no rows: {reporting.NOTHING_TO_APPROVE}"
    return download.no_rows().removeprefix("(").removesuffix(")")


def cmd_report(args: argparse.Namespace) -> int:
    from gateway.cli import _fail_config  # cli imports this module

    try:
        settings = load_settings(args.config, dev=True, files_only=True)  # no secret is read
    except ConfigError as err:
        return _fail_config(args.config, err)  # a missing file: how to get one, as every command
    if args.bom and args.format != "csv":  # as the endpoints' bom=true with another format
        print(
            f"gateway report: --bom: applies to --format csv only, not --format {args.format}",
            file=sys.stderr,
        )
        return 2
    if args.width is not None and args.format != "table":
        print(f"gateway report: --width: cuts the table only, not --format {args.format}", file=sys.stderr)
        return 2
    try:
        delimiter = _delimiter(args)
        query = _fraud_query(args, settings) if args.fraud else _query(args, settings)
        table = _table(args)
    except ValueError as err:
        print(f"gateway report: {err}", file=sys.stderr)
        return 2
    unusable = settings.store_problem() if settings.mirror_path is None else None
    if unusable is not None:
        print(unusable, file=sys.stderr)
        return 1
    if settings.mirror_path is not None and not settings.mirror_path.exists():
        # Read-only: a mistyped path is said, not made (the reporting gateway makes its mirror).
        print(
            f"gateway report: no reporting mirror at {settings.mirror_path} (central.mirror_path):"
            f" the reporting gateway makes it when it starts, or `gateway mirror --once -c {args.config}`"
            " fills it",
            file=sys.stderr,
        )
        return 1
    try:
        whole = asyncio.run(_report(settings, args, query))
        report = whole.table(table)
    except (SchemaTooNew, sqlite3.DatabaseError) as err:
        # A store an older gateway left lacks tables too: that is said first (older_hint).
        key = "storage.path" if settings.mirror_path is None else "central.mirror_path"
        hint = store_hint(err, settings.report_path, key) or (
            " (not a gateway store? `gateway run` creates its tables)" if "no such table" in str(err) else ""
        )
        print(f"gateway: cannot read the store {settings.report_path}: {err}{hint}", file=sys.stderr)
        return 1
    if settings.mirror_path is not None:
        print(_mirror_note(settings.mirror_path, args.config), file=sys.stderr)
    if args.format != "table" and (uncredited := whole.uncredited()) is not None:
        # Rows of creators credited nothing, or their totals none: the name is none of the period's.
        print(f"gateway report: {uncredited}", file=sys.stderr)
    elif args.format != "table" and not report.rows:
        # An empty file (an NDJSON has no header) read as a failed export: say why it is empty,
        # as the table does, where a script's output is not (until 2026-12-07 nothing).
        print(f"gateway report: {_why_no_rows(whole, report)}", file=sys.stderr)
    if sys.stdout is None:  # started with its output closed (``>&-``): the report goes nowhere
        return 0
    sys.stdout.flush()
    if args.format == "csv":
        # UTF-8 whatever the locale, as the API serves it: a legacy or ASCII locale
        # (PYTHONIOENCODING=ascii, LANG=de_DE.ISO-8859-1) cannot encode a campaign in Japanese.
        _write_all(("\ufeff" if args.bom else "").encode() + report.csv(delimiter).encode())
    elif args.format == "ndjson":
        _write_all(report.ndjson())
    else:
        # A terminal that cannot show a character gets its escape (\u65e5), not a traceback.
        encoding = sys.stdout.encoding or "utf-8"
        _write_all(report.text(_columns(args.width), encoding).encode(encoding, "backslashreplace"))
    return 0


def _write_all(data: bytes) -> None:
    """``data`` to stdout, whole, written to its descriptor (stdout's buffers were flushed).
    Through ``sys.stdout.buffer`` a report could be cut short: unbuffered
    (``PYTHONUNBUFFERED=1``, as many container images set it) that is the raw file, whose
    ``write`` takes what it can and says how much — the rest was dropped without a word, exit
    0, when a pipe's reader went away part way (never 141) or a non-blocking descriptor was full
    (a reader got the first 64 KiB of a report for all of it); buffered, a full non-blocking
    descriptor was a ``BlockingIOError`` traceback. So what is left is written again, after
    waiting until a non-blocking descriptor takes more, until it is all out or the error ends
    the command (a reader gone: ``BrokenPipeError``, 141; a full disk: one line, 1)."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):  # io.UnsupportedOperation: a stream in memory, no descriptor
        sys.stdout.buffer.write(data)
        return
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:  # non-blocking and full: wait until it takes more
            select.select([], [fd], [])
            continue
        view = view[written:]


def _width(text: str) -> int:
    if (number := whole_number(text, 0, 100_000)) is None:
        raise argparse.ArgumentTypeError(f"must be a whole number 0..100000 (columns), got {text!r}")
    return number


def _columns(asked: int | None) -> int:
    """The columns the table is cut to (0: none): ``--width``, else on a terminal its width
    (``COLUMNS`` first, as ``shutil`` reads it), else none: a pipe or a file gets whole names."""
    if asked is not None:
        return asked
    return shutil.get_terminal_size().columns if sys.stdout.isatty() else 0


def _mirror_note(path: Path, config: str) -> str:
    """Which store the report read, on stderr (stdout is the report, parsed by scripts): the
    reporting mirror, as of its last round, or empty — a mirror never filled reports nothing."""
    from storage.mirror import read_horizons  # asyncpg: the postgres extra, imported by then

    said = f"gateway report: read the reporting mirror {path} (central.mirror_path)"
    horizons = read_horizons(path)
    if not horizons:
        return f"{said}: it is empty, never filled; run `gateway mirror --once -c {config}`"
    return f"{said}, as of its last round at {min(updated for _, updated in horizons.values())}"


_OPTIONS = {
    "model": "--model",
    "group_by": "--group-by",
    "since": "--since",
    "until": "--until",
    "conversion": "--conversion",
    "verdicts": "--verdicts",
    "population": "--population",
    "table": "--table",
}
"""The options that are the report endpoints' query parameters: the parameter → its option."""


def _delimiter(args: argparse.Namespace) -> str:
    """``--delimiter``'s character; refused with another ``--format`` than csv, unless comma,
    as the endpoints refuse ``delimiter`` with another format."""
    name = args.delimiter or "comma"
    if name != "comma" and args.format != "csv":
        raise ValueError(f"--delimiter: applies to --format csv only, not --format {args.format}")
    return DELIMITERS[name]


def _table(args: argparse.Namespace) -> str:
    """``--table``, checked as the endpoints check ``table=`` (after ``_taken``: not for --fraud):
    a name the report has not first, so that the terminal's table is not said to print it."""
    model = args.model or "linear"  # payouts' own model: it has no learnt table anyway
    try:
        table = table_param("--table", args.table, _kind(args), "csv", model)
        if table != "rows" and args.format == "table":
            raise ValueError(
                f"--table: applies to --format csv or ndjson; the table prints the {table} below its rows"
            )
        return table_param("--table", args.table, _kind(args), args.format, model)
    except ApiError as err:
        raise ValueError(err.message) from None


def _kind(args: argparse.Namespace) -> str:
    """The report asked for, named as ``reportapi.PARAMS`` names it."""
    kinds = ("payouts", "timeseries", "paths", "fraud")
    return next((kind for kind in kinds if getattr(args, kind)), "attribution")


def _taken(args: argparse.Namespace) -> None:
    """Refuse an option the report does not take, as its endpoint refuses the parameter (the
    paths report has no model, payouts are always by creator): ignored, it would print a
    report other than the one asked for."""
    kind = _kind(args)
    for name, option in _OPTIONS.items():
        if getattr(args, name) is not None and name not in PARAMS[kind]:
            takes = ", ".join(o for n, o in _OPTIONS.items() if n in PARAMS[kind])
            raise ValueError(f"{option}: does not apply to the {kind} report (--{kind} takes {takes})")


def _query(args: argparse.Namespace, settings: Settings) -> reporting.Query:
    _taken(args)
    model = args.model or (settings.options.payouts.model if args.payouts else "linear")
    if args.payouts and model == "all":
        raise ValueError("--model: the payout report uses one model, not all")
    models = tuple(MODELS) if model == "all" else (model,)
    try:
        # The report API's own checks (range, order, longest span), with the options' names.
        zone = settings.report_zone
        since, until = period(
            args.since, args.until, ("--since", "--until"), zone
        )  # "" is an error, as in the API
    except ApiError as err:
        raise ValueError(err.message) from None
    verdicts = None
    if args.verdicts is not None and args.payouts:
        verdicts = reporting.payout_verdicts(args.verdicts, "--verdicts", "--verdicts allow,review")
    elif args.verdicts is not None:
        verdicts = reporting.verdict_names(args.verdicts, "--verdicts")
    conversion = (
        None if args.conversion is None else reporting.conversion_name(args.conversion, "--conversion")
    )
    group_by = args.group_by or "channel"
    return reporting.Query(since, until, models, group_by, conversion, verdicts, args.population)


FraudQuery = tuple[str | None, str | None, str]
"""The fraud report's since and until (None: unbounded, as in ``/api/fraud``) and grouping."""


def _fraud_query(args: argparse.Namespace, settings: Settings) -> FraudQuery:
    _taken(args)
    ends = (("since", args.since), ("until", args.until))
    given = {name: value for name, value in ends if value is not None}
    try:
        since, until = span(given, settings.report_zone, ("--since", "--until"))
    except ApiError as err:
        raise ValueError(err.message) from None
    return since, until, args.group_by or "creator_id"


async def _report(
    settings: Settings, args: argparse.Namespace, query: reporting.Query | FraudQuery
) -> reporting.Report:
    if settings.mirror_path is not None:  # read as it stands; made empty if there is none yet
        from storage.mirror import prepare  # asyncpg: the postgres extra

        await prepare(settings.mirror_path)
    # As `gateway run` does: a store a newer gateway migrated is refused, not read (until 2026-12-07).
    await asyncio.to_thread(refuse_newer_file, settings.report_path)
    if isinstance(query, tuple):
        reader = Reader(settings.report_path)
        await reader.open()
        try:
            since, until, group_by = query
            return reporting.fraud(
                await reader.fraud(since, until, group_by, limit=None), group_by, since, until
            )
        finally:
            await reader.close()
    # One report, then the process ends with its workers: none is ever replaced for its memory.
    reports = Reports(
        settings.report_path,
        Attribution(settings.options.attribution),
        settings.channels,
        settings.options.admin.report_processes,
    )
    await reports.open()
    try:
        if args.payouts:
            report = await reporting.payouts(reports, Payouts(settings.options.payouts), query)
        elif args.paths:
            report = await reporting.paths(reports, query)
        else:
            report = await reporting.attribution(reports, query, by_day=args.timeseries)
    finally:
        await reports.close()
    if report.wants_names():
        report.named(await _conversion_names(settings.report_path, query))
    return report


async def _conversion_names(path: Path, query: reporting.Query) -> list[str]:
    """The names of the period's conversions, most frequent first: what an empty report limited
    to one name says was recorded instead (a typo in --conversion shows as one)."""
    reader = Reader(path)
    await reader.open()
    try:
        return await period_conversion_names(reader.db, query.since, query.until)
    finally:
        await reader.close()
