"""The report endpoints of the admin API: ``/api/attribution``, ``/api/attribution/timeseries``,
``/api/attribution/paths``, ``/api/payouts`` and ``/api/fraud``.

Owns their query parameters (each bad one is a 400 naming it), the choice of format
(``format=`` or the ``Accept`` header: JSON in the admin envelope, CSV or NDJSON as a
download with a ``Content-Disposition`` filename), and the report connection (opened with
the admin app). The tables themselves come from ``gateway/reporting.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, tzinfo

from aiohttp import web

from gateway import reporting
from gateway.accept import DOWNLOAD_MEDIA, vary
from gateway.admin import (
    EARLIEST,
    METRICS_KEY,
    READER_KEY,
    ApiError,
    asked_format,
    csv_delimiter,
    in_order,
    ok,
    only_params,
    parse_time,
    report_zone_of,
    span,
    wants_bom,
)
from gateway.attribution import MODELS
from gateway.config import Settings
from gateway.events import iso
from gateway.openapi_reports import GROUP_BY
from gateway.report_learnt import LEARNT, LEARNT_REPORTS
from gateway.reportstate import REPORTING_KEY, Reporting
from storage.populations import POPULATIONS, population_refused
from storage.queries import FRAUD_GROUPS, FRAUD_LIMIT, period_conversion_names

DEFAULT_DAYS = 30
MAX_DAYS = 3660
_COMMON = {"model", "conversion", "since", "until", "verdicts", "population", "format", "bom", "delimiter"}
PARAMS = {
    "attribution": _COMMON | {"group_by", "table"},
    "timeseries": _COMMON | {"group_by", "table"},
    "paths": _COMMON - {"model"} | {"table"},
    "payouts": _COMMON | {"table"},
    "fraud": {"since", "until", "group_by", "format", "bom", "delimiter"},
}
"""The query parameters each report takes; ``gateway report`` refuses its options alike."""


def _moment(name: str, value: str, zone: tzinfo) -> datetime:
    return datetime.fromisoformat(parse_time(name, value, zone))


def days_before(moment: datetime, days: int, zone: tzinfo) -> datetime:
    """``days`` days before ``moment`` on the clocks of ``zone`` (the same time of day there: a
    date's midnight stays a midnight across a change of daylight saving time), in UTC."""
    return (moment.astimezone(zone) - timedelta(days=days)).astimezone(UTC)


def period(
    since_text: str | None,
    until_text: str | None,
    names: tuple[str, str] = ("since", "until"),
    zone: tzinfo = UTC,
) -> tuple[datetime, datetime]:
    """A report's ``since``..``until``: each in range (``parse_time``), ``until`` by default now
    and ``since`` DEFAULT_DAYS before it, in order and at most MAX_DAYS apart, days counted in
    ``zone`` (``days_before``). The first problem raises a 400 naming its parameter as ``names``
    spell them (``gateway report``: ``--since``)."""
    since_name, until_name = names
    until = _moment(until_name, until_text, zone) if until_text is not None else datetime.now(UTC)
    if since_text is None and until <= EARLIEST:
        raise ApiError(
            400, f"{until_name}: must be after {EARLIEST.date()} (the default {since_name} is its earliest)"
        )
    # The default since never reaches before the earliest moment a report takes.
    since = (
        _moment(since_name, since_text, zone)
        if since_text is not None
        else max(days_before(until, DEFAULT_DAYS, zone), EARLIEST)
    )
    in_order(iso(since), iso(until), names, until_now=until_text is None)
    earliest = days_before(until, MAX_DAYS, zone)
    if since < earliest:  # which since would do, rather than only the rule
        raise ApiError(
            400,
            f"{since_name}: a report covers at most {MAX_DAYS} days; the earliest for this {until_name}"
            f" is {iso(earliest)}, got {iso(since)}",
        )
    return since, until


def conversion_param(request: web.Request) -> str | None:
    """The ``conversion`` query parameter (None: every conversion); a bad name answers 400."""
    conversion = request.query.get("conversion")
    try:
        return None if conversion is None else reporting.conversion_name(conversion, "conversion")
    except ValueError as err:
        raise ApiError(400, str(err)) from None


def query(
    request: web.Request, *, default_model: str, all_models: bool = True, payouts: bool = False
) -> reporting.Query:
    """The report's parameters, each checked; the first bad one answers 400 naming it. The
    ``payouts`` report's verdicts name ``allow`` (``reporting.payout_verdicts``)."""
    q = request.query
    model = q.get("model", default_model)
    if model == "all" and all_models:
        models = tuple(MODELS)
    elif model in MODELS:
        models = (model,)
    elif model == "all":  # as gateway report --payouts --model all says it (all_models: payouts')
        raise ApiError(400, "model: the payout report uses one model, not all")
    else:
        known = ", ".join([*MODELS, *(["all"] if all_models else [])])
        # As every parameter says it (it said "unknown model …").
        raise ApiError(400, f"model: expected one of {known}, got {model[:100]!r}")
    group_by = q.get("group_by", "channel")
    if group_by not in GROUP_BY:
        raise ApiError(400, f"group_by: expected one of {', '.join(GROUP_BY)}, got {group_by[:100]!r}")
    since, until = period(q.get("since"), q.get("until"), zone=report_zone_of(request))
    conversion = conversion_param(request)
    verdicts = None
    if "verdicts" in q:
        try:
            if payouts:
                verdicts = reporting.payout_verdicts(q["verdicts"], "verdicts", "verdicts=allow,review")
            else:
                verdicts = reporting.verdict_names(q["verdicts"], "verdicts")
        except ValueError as e:
            raise ApiError(400, str(e)) from None
    population = q.get("population")
    if population is not None and population not in POPULATIONS:
        raise ApiError(400, f"population: {population_refused(population)}")
    return reporting.Query(since, until, models, group_by, conversion, verdicts, population)


def _format(request: web.Request) -> str:
    kind = asked_format(request)
    wants_bom(request.query, kind)  # a bad one refused before the report is computed
    csv_delimiter(request.query, kind)
    return kind


def table_param(name: str, value: str | None, report: str, fmt: str, model: str = "linear") -> str:
    """``table=``: the download's rows (default), or the report's ``totals`` (``summary`` for
    paths), or under ``data_driven`` what it learnt (``learnt``), as a table of their own; a
    400 naming the choices (for ``learnt`` under another ``model``, the models that learn), or
    with JSON, which carries them beside the rows. ``name``: the parameter as the caller
    spells it (``--table``); ``model``: as asked (one unknown is refused after, by ``query``)."""
    if value is None or value == "rows":  # the fraud report takes no table=: always None
        return "rows"
    models = (model,) if model in MODELS else tuple(MODELS)
    choices = reporting.tables(report, models)
    if value == LEARNT and report in LEARNT_REPORTS and value not in choices:
        said, ask = ("--model ", "--model ") if name.startswith("-") else ("model ", "model=")
        raise ApiError(
            400,
            f"{name}: learnt is what data_driven learnt, and {said}{model[:100]} learns nothing;"
            f" ask {ask}data_driven or {ask}all",
        )
    if value not in choices:
        said = f"{name}: expected one of {', '.join(choices)} for the {report} report, got {value[:100]!r}"
        if value == LEARNT and report == "payouts":  # README "Creator payouts": asked elsewhere
            ask, table = ("--model ", "--table ") if name.startswith("-") else ("model=", "table=")
            said += (
                f": it leaves out what data_driven learnt; the attribution report of the same query"
                f" with {ask}data_driven says it ({table}learnt)"
            )
        raise ApiError(400, said)
    if fmt not in ("csv", "ndjson"):
        raise ApiError(
            400,
            f"{name}: applies to a CSV or NDJSON download (format=csv or ndjson), not {fmt}; the JSON"
            f" answer carries {value} beside the rows",
        )
    return value


def _table(request: web.Request, report: str, default_model: str = "linear") -> str:
    """The request's ``table=`` (and ``format``), checked before the report is computed."""
    model = request.query.get("model", default_model)
    return table_param("table", request.query.get("table"), report, _format(request), model)


async def respond(request: web.Request, report: reporting.Report, table: str = "rows") -> web.Response:
    """``report`` in the format asked for; ``table``: what its download holds (``_table``). A
    report limited to a conversion name or a population that counts nothing names the period's
    conversions (``conversion_names``), as ``gateway report`` does: until 2026-12-07 a typo in
    ``conversion`` answered an empty report, or every creator paid 0, without a word."""
    kind = _format(request)
    if report.wants_names():
        live = request.app[REPORTING_KEY]
        reader = live.reader or request.app[READER_KEY]  # the mirror's when the reports read it
        report.named(await period_conversion_names(reader.db, *_period_of(report)))
    report = report.table(table)
    varies = vary(request.query)
    if kind == "json":
        report.meta["source"] = request.app[REPORTING_KEY].source  # the JSON's alone: no column
        return web.Response(body=report.json(), content_type="application/json", headers=varies)
    delimiter = csv_delimiter(request.query, kind)
    if kind == "csv":
        bom = "\ufeff" if wants_bom(request.query, kind) else ""
        body = (bom + report.csv(delimiter)).encode()
    else:
        body = report.ndjson()
    name = report.filename(kind, report_zone_of(request), delimiter)
    disposition = f'attachment; filename="{name}"'
    return web.Response(
        body=body,
        content_type=DOWNLOAD_MEDIA[kind],
        charset="utf-8" if kind == "csv" else None,
        headers={"Content-Disposition": disposition, **varies},
    )


def _period_of(report: reporting.Report) -> tuple[datetime, datetime]:
    """The period a report's answer names (``since``, ``until``: UTC text)."""
    return datetime.fromisoformat(report.meta["since"]), datetime.fromisoformat(report.meta["until"])


async def attribution(request: web.Request) -> web.Response:
    only_params(request, PARAMS["attribution"])
    table = _table(request, "attribution")
    q = query(request, default_model="linear")
    return await respond(request, await reporting.attribution(request.app[REPORTING_KEY].reports, q), table)


async def timeseries(request: web.Request) -> web.Response:
    only_params(request, PARAMS["timeseries"])
    table = _table(request, "timeseries")
    q = query(request, default_model="linear")
    engine = request.app[REPORTING_KEY].reports
    return await respond(request, await reporting.attribution(engine, q, by_day=True), table)


async def paths(request: web.Request) -> web.Response:
    only_params(request, PARAMS["paths"])
    table = _table(request, "paths")
    q = query(request, default_model="linear")
    return await respond(request, await reporting.paths(request.app[REPORTING_KEY].reports, q), table)


async def payouts(request: web.Request) -> web.Response:
    only_params(request, PARAMS["payouts"])
    table = _table(request, "payouts")
    live = request.app[REPORTING_KEY]
    engine, rules = live.reports, live.payouts  # taken once: a reload meanwhile does not mix them
    q = query(request, default_model=rules.model, all_models=False, payouts=True)
    return await respond(request, await reporting.payouts(engine, rules, q), table)


async def fraud(request: web.Request) -> web.Response:
    """Clicks per group (creator by default) by effective verdict, with the top reasons and the
    distinct visitors and IPs. The JSON lists the largest FRAUD_LIMIT groups (``truncated``
    says when there are more); CSV and NDJSON are one flat table of every group."""
    only_params(request, PARAMS["fraud"])
    kind = _format(request)
    q = request.query
    group_by = q.get("group_by", "creator_id")
    if group_by not in FRAUD_GROUPS:
        raise ApiError(400, f"group_by: expected one of {', '.join(FRAUD_GROUPS)}, got {group_by[:100]!r}")
    since, until = span(q, report_zone_of(request))
    reader = request.app[REPORTING_KEY].reader or request.app[READER_KEY]  # the mirror's, if any
    if kind != "json":
        groups = await reader.fraud(since, until, group_by, limit=None)
        return await respond(request, reporting.fraud(groups, group_by, since, until))
    groups = await reader.fraud(since, until, group_by, limit=FRAUD_LIMIT + 1)
    answer = ok(
        {
            "group_by": group_by,
            "since": reporting.echoed(since),
            "until": reporting.echoed(until),
            "groups": groups[:FRAUD_LIMIT],
            "truncated": len(groups) > FRAUD_LIMIT,
            "source": request.app[REPORTING_KEY].source,
        }
    )
    answer.headers.update(vary(request.query))
    return answer


def add_report_routes(app: web.Application, settings: Settings) -> None:
    """Register the report endpoints on the admin app; their connection opens and closes with it
    (and a reload swaps it: ``gateway.reportstate``)."""
    live = Reporting(settings, app[METRICS_KEY].reports_shared.inc)
    app[REPORTING_KEY] = live

    async def reports_ctx(app: web.Application) -> AsyncIterator[None]:
        await live.open()
        yield
        await live.close()

    app.cleanup_ctx.append(reports_ctx)
    app.router.add_get("/api/attribution", attribution)
    app.router.add_get("/api/attribution/timeseries", timeseries)
    app.router.add_get("/api/attribution/paths", paths)
    app.router.add_get("/api/payouts", payouts)
    app.router.add_get("/api/fraud", fraud)
