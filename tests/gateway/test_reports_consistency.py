"""Cross-report consistency: one realistic store, every view that states the same number, read
through the admin API over HTTP (and ``gateway report``), must state the same number.

The store holds several channels, campaigns and creators; a user on two devices (one bound
after the period); a refund; EUR, USD and valueless sign-ups; conversions whose touches are
outside their lookback window; quarantined (``review``/``block``) touchpoints, a re-score and
an analyst's override through the API; the clocks going back in ``attribution.timezone``
(Europe/Berlin, 25 October 2026) inside the period; a conversion exactly at ``since`` (in)
and one exactly at ``until`` (out). Compared, for one period, model and the configured verdicts:
``/api/attribution`` per ``group_by`` and ``model=all``, the time series summed over days, the
payouts, the paths, the dashboard summary's parts, their CSV and NDJSON downloads and the
terminal's ``gateway report``.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sys
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import web

from gateway.attribution import MODELS
from gateway.events import Binding, Conversion, Event, Touchpoint, VerdictChange, iso
from gateway.ids import Uuid7
from tests.conftest import TOKEN, RunningGateway

AUTH = {"Authorization": f"Bearer {TOKEN}"}
ZONE = "Europe/Berlin"
SINCE, UNTIL = "2026-10-20", "2026-11-03"  # Berlin: 2026-10-19T22:00Z .. 2026-11-02T23:00Z
PERIOD = {"since": SINCE, "until": UNTIL}
GROUPS = ("channel", "source", "medium", "campaign", "creator_id")
CONFIG = f"""
[attribution]
timezone = "{ZONE}"
[payouts]
default_tier = "standard"
tiers = {{ standard = {{ cpa = 5.0 }}, gold = {{ revenue_share = 0.1 }} }}
creators = {{ cr_ana = {{ tier = "gold" }} }}
"""
new_id = Uuid7()


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def tp(visitor: str, ts: str, channel: str, **fields: Any) -> Touchpoint:
    at = utc(ts)
    return Touchpoint(new_id(int(at.timestamp() * 1000)), iso(at), "n", visitor, channel=channel, **fields)


def sale(
    ts: str,
    visitor: str | None,
    value: float | None,
    currency: str | None,
    name: str = "purchase",
    user: str | None = None,
) -> Conversion:
    at = utc(ts)
    cid = new_id(int(at.timestamp() * 1000))
    return Conversion(cid, iso(at), "n", name, "order:" + cid, visitor, user, value, currency)


def bind(ts: str, visitor: str, user: str) -> Binding:
    at = utc(ts)
    return Binding(new_id(int(at.timestamp() * 1000)), iso(at), "n", visitor, user, "login")


def store_events() -> tuple[list[Event], dict[str, str]]:
    """The store's events, and the touchpoints the test changes later, by name."""
    eve = tp("v11", "2026-10-15T09:00:00", "Affiliates", creator_id="cr_eve", campaign="eve-autumn")
    dan = tp("v10", "2026-10-21T08:00:00", "Affiliates", creator_id="cr_dan", verdict="review")
    ben_review = tp("v6", "2026-10-26T10:00:00", "Affiliates", creator_id="cr_ben", verdict="review")
    events: list[Event] = [
        # u1: a phone and a laptop; an ad, the newsletter, a creator on the night the clocks
        # go back; a purchase at 02:30 the second time (CET), and a refund later.
        bind("2026-10-01T00:00:00", "p1", "u1"),
        bind("2026-10-01T00:00:00", "l1", "u1"),
        tp("p1", "2026-10-10T12:00:00", "Paid Social", source="facebook", medium="paid_social",
           campaign="autumn-awareness"),
        tp("l1", "2026-10-21T07:00:00", "Email", source="newsletter", medium="email", campaign="weekly"),
        tp("l1", "2026-10-24T23:30:00", "Affiliates", creator_id="cr_ana", campaign="ana-launch"),
        sale("2026-10-25T01:30:00", "l1", 120.00, "EUR"),
        sale("2026-10-28T09:00:00", "p1", -20.00, "EUR", name="refund"),
        # At since exactly (in), after cr_ben's link the day before.
        tp("v3", "2026-10-19T10:00:00", "Affiliates", creator_id="cr_ben", campaign="ben-q4"),
        sale("2026-10-19T22:00:00", "v3", 10.01, "EUR"),
        # At until exactly (out).
        tp("v4", "2026-11-01T10:00:00", "Email", source="newsletter", medium="email", campaign="weekly"),
        sale("2026-11-02T23:00:00", "v4", 30.00, "EUR"),
        # USD: cr_ben flagged review, then the newsletter.
        ben_review,
        tp("v6", "2026-10-27T10:00:00", "Email", source="newsletter", medium="email", campaign="weekly"),
        sale("2026-10-28T12:00:00", "v6", 50.00, "USD"),
        # A conversion-tier campaign (7 days) 10 days before: out of its window, Direct.
        tp("v7", "2026-10-12T10:00:00", "Paid Search", source="google", medium="cpc",
           campaign="brand-conversion"),
        sale("2026-10-22T10:00:00", "v7", 25.00, "EUR"),
        # 45 days: out of every window.
        tp("v8", "2026-09-15T10:00:00", "Display", source="dsp", medium="display",
           campaign="autumn-awareness"),
        sale("2026-10-30T10:00:00", "v8", 12.34, "EUR"),
        # A blocked creator click, then a search; an internal visit last.
        tp("v9", "2026-10-29T10:00:00", "Affiliates", creator_id="cr_cat", campaign="cat-deal",
           verdict="block"),
        tp("v9", "2026-10-30T10:00:00", "Organic Search", source="google", medium="organic"),
        tp("v9", "2026-10-31T09:00:00", "Internal", source="intranet"),
        sale("2026-10-31T10:00:00", "v9", 80.00, "EUR"),
        # cr_dan flagged review, an analyst lets it through (below); 15 USD.
        dan,
        sale("2026-10-23T10:00:00", "v10", 15.00, "USD"),
        # cr_eve, before the period, re-scored to block; 40 EUR inside it.
        eve,
        sale("2026-10-20T12:00:00", "v11", 40.00, "EUR"),
        # u2: a referral on one device, cr_ana on another bound after the period; a sign-up
        # (no value) at 23:30 on the 25-hour day, a purchase ten minutes into the next.
        tp("v2a", "2026-10-25T10:00:00", "Referral", source="partner.example", medium="referral",
           campaign="partner"),
        tp("v2b", "2026-10-24T08:00:00", "Affiliates", creator_id="cr_ana", campaign="ana-launch"),
        sale("2026-10-25T22:30:00", "v2a", None, None, name="signup"),
        sale("2026-10-25T23:10:00", "v2a", 33.33, "EUR"),
        bind("2026-11-05T00:00:00", "v2a", "u2"),
        bind("2026-11-05T00:00:01", "v2b", "u2"),
        # Traffic that converts nowhere, for data_driven and the dashboard's counts.
        tp("v12", "2026-10-22T10:00:00", "Paid Social", source="facebook", medium="paid_social",
           campaign="autumn-awareness"),
        tp("v13", "2026-10-23T10:00:00", "Affiliates", creator_id="cr_ben", campaign="ben-q4",
           verdict="block"),
        tp("v14", "2026-10-26T00:30:00", "Email", source="newsletter", medium="email", campaign="weekly"),
    ]  # fmt: skip
    rescored = datetime(2026, 11, 4, tzinfo=UTC)
    events.append(
        VerdictChange(
            new_id(int(rescored.timestamp() * 1000)), iso(rescored), "n", eve.id, "block", 80, [], "rescore"
        )
    )
    return events, {"dan": dan.id, "ben_review": ben_review.id}


@pytest.fixture
async def gw(start_gateway: Any, upstream_server: Any) -> RunningGateway:
    running: RunningGateway = await start_gateway(await upstream_server(web.Application()), CONFIG)
    events, named = store_events()
    await running.gateway.store.write(events)
    body = {"verdict": "allow", "analyst": "maria", "reason": "a real partner"}
    url = f"{running.admin_url}/api/touchpoints/{named['dan']}/verdict"
    async with running.session.post(url, headers=AUTH, json=body) as resp:
        assert resp.status == 200, await resp.text()
    return running


async def api(gw: RunningGateway, path: str, **params: str) -> Any:
    async with gw.session.get(gw.admin_url + path, headers=AUTH, params={**PERIOD, **params}) as resp:
        body = await resp.json()
        assert resp.status == 200, body
    return body


async def download(gw: RunningGateway, path: str, fmt: str, **params: str) -> list[dict[str, Any]]:
    """A CSV or NDJSON download read back as rows of JSON values."""
    query = {**PERIOD, **params, "format": fmt}
    async with gw.session.get(gw.admin_url + path, headers=AUTH, params=query) as resp:
        text = await resp.text()
        assert resp.status == 200, text
    if fmt == "ndjson":
        return [json.loads(line) for line in text.splitlines()]
    return list(csv.DictReader(io.StringIO(text)))


def per_currency(
    rows: list[dict[str, Any]], conversions: str, value: str
) -> dict[Any, tuple[Decimal, Decimal]]:
    sums: dict[Any, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for row in rows:
        sums[row["currency"]][0] += Decimal(str(row[conversions]))
        sums[row["currency"]][1] += Decimal(str(row[value]))
    return {k: (n, v) for k, (n, v) in sums.items()}


def totals_of(body: dict[str, Any]) -> dict[Any, tuple[Decimal, Decimal]]:
    return {t["currency"]: (Decimal(str(t["conversions"])), Decimal(str(t["value"]))) for t in body["totals"]}


def credits(rows: list[dict[str, Any]], key: tuple[str, ...], conversions: str, value: str) -> dict[Any, Any]:
    """Rows with any credit, keyed, summed (a time series over its days)."""
    out: dict[Any, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for row in rows:
        k = tuple(row[c] for c in key)
        out[k][0] += Decimal(str(row[conversions]))
        out[k][1] += Decimal(str(row[value]))
    return {k: tuple(v) for k, v in out.items() if any(v)}


async def test_the_store_holds_what_the_comparisons_need(gw: RunningGateway) -> None:
    """The period holds the conversion at since, not the one at until; two currencies, a
    refund and a sign-up; quarantined traffic, and the clocks going back."""
    body = await api(gw, "/api/attribution", model="linear")
    assert body["since"] == "2026-10-19T22:00:00Z" and body["until"] == "2026-11-02T23:00:00Z"
    assert totals_of(body) == {
        # 120 - 20 + 10.01 + 25 + 12.34 + 80 + 40 + 33.33 (the 30.00 at until is out)
        "EUR": (Decimal(8), Decimal("300.68")),
        "USD": (Decimal(2), Decimal("65.0")),
        None: (Decimal(1), Decimal(0)),
    }
    days = await api(gw, "/api/attribution/timeseries", model="linear")
    assert sorted({r["day"] for r in days["rows"]}) == [f"2026-10-{d}" for d in range(20, 32)] + [
        "2026-11-01",
        "2026-11-02",
    ]


@pytest.mark.parametrize("verdicts", ["allow", "allow,review"])
@pytest.mark.parametrize("model", MODELS)
async def test_every_grouping_and_model_all_state_the_same_totals(
    gw: RunningGateway, model: str, verdicts: str
) -> None:
    """Per model and verdicts: every group_by's rows sum to its totals, the totals are the
    same for every grouping, and each is the model's column of model=all; the time series
    summed over its days is the report; the paths count its conversions."""
    first = None
    v = {"verdicts": verdicts}
    for group_by in GROUPS:
        one = await api(gw, "/api/attribution", model=model, group_by=group_by, **v)
        every = await api(gw, "/api/attribution", model="all", group_by=group_by, **v)
        series = await api(gw, "/api/attribution/timeseries", model=model, group_by=group_by, **v)
        assert per_currency(one["rows"], "conversions", "value") == totals_of(one), group_by
        first = first or totals_of(one)
        assert totals_of(one) == first == totals_of(every) == totals_of(series), group_by
        key = ("group", "currency")
        alone = credits(one["rows"], key, "conversions", "value")
        assert alone == credits(every["rows"], key, f"{model}_conversions", f"{model}_value"), group_by
        assert alone == credits(series["rows"], key, "conversions", "value"), group_by
    paths = await api(gw, "/api/attribution/paths", **v)
    assert paths["summary"]["conversions"] == sum(n for n, _ in (first or {}).values())


@pytest.mark.parametrize("model", MODELS)
async def test_the_payouts_share_out_the_creator_credits(gw: RunningGateway, model: str) -> None:
    """The payouts' approved rows are the creator_id report's creators; with the rest (credit
    to no creator) they make the totals; the quarantined rows are what the report counting
    every verdict gives the touches of another verdict, and each creator's clicks, approved
    and quarantined, are its landings of the period."""
    pay = await api(gw, "/api/payouts", model=model)
    report = await api(gw, "/api/attribution", model=model, group_by="creator_id")
    approved = [r for r in pay["rows"] if r["status"] == "approve"]
    by_creator = credits(report["rows"], ("group", "currency"), "conversions", "value")
    assert credits(approved, ("creator_id", "currency"), "conversions", "value") == {
        k: v for k, v in by_creator.items() if k[0] is not None
    }
    rest = [r for r in report["rows"] if r["group"] is None]
    assert per_currency(approved + rest, "conversions", "value") == totals_of(report)
    # Clicks: the creators' landings of the period, approved by the configured verdicts.
    landings = (await api(gw, "/api/touchpoints", limit="1000"))["items"]
    clicks: dict[tuple[str, str], int] = defaultdict(int)
    for t in landings:
        if t["creator_id"]:
            clicks[t["creator_id"], "approve" if t["verdict"] in (None, "allow") else "quarantined"] += 1
    paid: dict[tuple[str, str], set[int]] = defaultdict(set)
    for r in pay["rows"]:
        paid[r["creator_id"], r["status"]].add(r["clicks"])
    assert {k: max(v) for k, v in paid.items() if max(v)} == dict(clicks)


async def test_paths_count_the_conversions_the_reports_credit(gw: RunningGateway) -> None:
    """The paths' conversions are the report's, and its touches are the eligible ones: a
    conversion without any is what the report credits to Direct with no touchpoint."""
    paths = await api(gw, "/api/attribution/paths")
    report = await api(gw, "/api/attribution", model="first_touch", group_by="source")
    summary = paths["summary"]
    total = sum(n for n, _ in totals_of(report).values())
    assert summary["conversions"] == total
    touches = {r["bucket"]: r["conversions"] for r in paths["rows"] if r["measure"] == "touches"}
    days = {r["bucket"]: r["conversions"] for r in paths["rows"] if r["measure"] == "days"}
    assert sum(touches.values()) == total
    assert sum(days.values()) == summary["with_touches"] == total - touches["0"]
    # first_touch by channel gives a conversion with no eligible touch to Direct whole; the
    # period's Direct touches are none here, so Direct's conversions are the paths' 0 bucket.
    channels = await api(gw, "/api/attribution", model="first_touch")
    direct = sum(Decimal(str(r["conversions"])) for r in channels["rows"] if r["group"] == "Direct")
    assert direct == touches["0"]


@pytest.mark.parametrize("model", MODELS)
async def test_the_dashboard_states_the_reports_numbers(gw: RunningGateway, model: str) -> None:
    """The dashboard's daily chart is the time series by channel, its model comparison is
    model=all by channel, its conversions are the report's, in one call and part by part."""
    whole = await api(gw, "/api/dashboard/summary", model=model)
    series = await api(gw, "/api/attribution/timeseries", model=model)
    every = await api(gw, "/api/attribution", model="all")
    key = ("day", "group", "currency")
    daily = credits(whole["by_day"], ("day", "channel", "currency"), "conversions", "value")
    assert daily == credits(series["rows"], key, "conversions", "value")
    assert whole["days"] == sorted({r["day"] for r in series["rows"]})
    for name in MODELS:
        compared = credits(
            [r for r in whole["comparison"] if r["model"] == name],
            ("channel", "currency"),
            "conversions",
            "value",
        )
        assert compared == credits(
            every["rows"], ("group", "currency"), f"{name}_conversions", f"{name}_value"
        )
    assert whole["totals"]["conversions"] == sum(n for n, _ in totals_of(every).values())
    for part in ("counts", "daily", "models"):
        alone = await api(gw, "/api/dashboard/summary", model=model, part=part)
        assert {k: v for k, v in whole.items() if k in alone} == alone, part


async def test_the_dashboard_counts_agree_with_each_other(gw: RunningGateway) -> None:
    """Landings: credited + not credited = every landing = the bot share's = the populations';
    the top tables' landings are the listing's, by the configured verdicts."""
    counts = await api(gw, "/api/dashboard/summary", part="counts")
    totals = counts["totals"]
    every = totals["touchpoints"] + totals["not_credited"]
    assert every == sum(counts["bots"]["verdicts"].values())
    assert every == sum(counts["populations"][p] for p in ("cookie", "cookieless", "no_consent"))
    landings = [
        t
        for t in (await api(gw, "/api/touchpoints", limit="1000"))["items"]
        if "2026-10-19T22:00:00Z" <= t["ts"] < "2026-11-02T23:00:00Z"
    ]
    assert every == len(landings)
    for column, key in (("campaign", "top_campaigns"), ("creator_id", "top_creators")):
        credited: dict[str, int] = defaultdict(int)
        left: dict[str, int] = defaultdict(int)
        for t in landings:
            if t[column]:
                (credited if t["verdict"] in (None, "allow") else left)[t[column]] += 1
        assert {r["name"]: r["touchpoints"] for r in counts[key]} == {
            n: credited.get(n, 0) for n in credited.keys() | left.keys()
        }, key
        assert {r["name"]: r["not_credited"] for r in counts[key]} == {
            n: left.get(n, 0) for n in credited.keys() | left.keys()
        }, key


@pytest.mark.parametrize("model", MODELS)
async def test_quarantined_rows_are_the_rest_of_what_every_verdict_credits(
    gw: RunningGateway, model: str
) -> None:
    """A quarantined row is what the report counting every verdict gives that traffic. In this
    store no conversion mixes a creator's accepted touch with a quarantined one, so that report
    gives a creator of no approved credit (in a currency) its quarantined row, and, but under
    data_driven (its approved rows are shared by the weights learnt from the accepted journeys,
    README "Creator payouts"), every creator its approved plus its quarantined row."""
    pay = await api(gw, "/api/payouts", model=model)
    every = await api(
        gw, "/api/attribution", model=model, group_by="creator_id", verdicts="allow,review,block,bot"
    )
    counted = {
        k: v for k, v in credits(every["rows"], ("group", "currency"), "conversions", "value").items() if k[0]
    }
    approved = credits(
        [r for r in pay["rows"] if r["status"] == "approve"],
        ("creator_id", "currency"),
        "conversions",
        "value",
    )
    held = credits(
        [r for r in pay["rows"] if r["status"] == "quarantined"],
        ("creator_id", "currency"),
        "conversions",
        "value",
    )
    assert held and {k: v for k, v in held.items() if k not in approved} == {
        k: v for k, v in counted.items() if k not in approved
    }
    if model != "data_driven":
        assert credits(pay["rows"], ("creator_id", "currency"), "conversions", "value") == counted


REPORTS: list[tuple[str, dict[str, str], str | None]] = [
    *(("/api/attribution", {"model": m, "group_by": g}, "totals") for m in ("linear", "all") for g in GROUPS),
    ("/api/attribution/timeseries", {"model": "linear"}, "totals"),
    ("/api/attribution/timeseries", {"model": "all", "group_by": "creator_id"}, "totals"),
    ("/api/attribution/paths", {}, "summary"),
    ("/api/payouts", {"model": "linear"}, "totals"),
    ("/api/payouts", {"model": "data_driven"}, "totals"),
]


DATE_LIKE_BUCKETS = {"2-3", "4-7", "8-14", "15-30"}
"""The paths report's buckets of days that a spreadsheet reads as dates (3-Feb): a CSV writes
them as text, behind a ``'``."""


def same(json_rows: list[dict[str, Any]], read: list[dict[str, Any]], csv_read: bool = False) -> None:
    """A download's rows are the JSON's, cell by cell: numbers as numbers (a CSV writes
    ``0.00``), no value as an empty CSV cell, a bucket read as a date as text in a CSV."""
    assert len(read) == len(json_rows)
    for want, got in zip(json_rows, read, strict=True):
        assert list(got) == list(want)
        for column, value in want.items():
            cell = got[column]
            if isinstance(value, int | float) and not isinstance(value, bool):
                assert Decimal(str(cell)) == Decimal(str(value)), (column, want, got)
            elif isinstance(cell, str) and value is None:
                assert cell == "", (column, want, got)
            elif csv_read and column == "bucket" and value in DATE_LIKE_BUCKETS:
                assert cell == f"'{value}", (column, want, got)
            else:
                assert cell == value, (column, want, got)


@pytest.mark.parametrize(("path", "params", "table"), REPORTS)
async def test_every_download_holds_the_json(
    gw: RunningGateway, path: str, params: dict[str, str], table: str
) -> None:
    body = await api(gw, path, **params)
    for fmt in ("csv", "ndjson"):
        same(body["rows"], await download(gw, path, fmt, **params), csv_read=fmt == "csv")
        beside = body[table] if table == "totals" else [body[table]]
        same(beside, await download(gw, path, fmt, table=table, **params))


async def gateway_report(gw: RunningGateway, *args: str) -> str:
    """``gateway report`` on the running gateway's store, configured as it is."""
    path = gw.gateway.settings.store_path
    config = path.parent / "consistency.toml"
    await asyncio.to_thread(config.write_text, f"[storage]\npath = '{path}'\n{CONFIG}")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    done = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "report", "-c", str(config),
        "--since", SINCE, "--until", UNTIL, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await done.communicate()
    assert done.returncode == 0, err.decode()
    return out.decode()


CLI: list[tuple[str, dict[str, str], tuple[str, ...]]] = [
    (
        "/api/attribution",
        {"model": "linear", "group_by": "campaign"},
        ("--model", "linear", "--group-by", "campaign"),
    ),
    ("/api/attribution", {"model": "all"}, ("--model", "all")),
    ("/api/attribution/timeseries", {"model": "time_decay"}, ("--model", "time_decay", "--timeseries")),
    ("/api/attribution/paths", {}, ("--paths",)),
    ("/api/payouts", {"model": "last_touch"}, ("--payouts", "--model", "last_touch")),
]


@pytest.mark.parametrize(("path", "params", "args"), CLI)
async def test_gateway_report_prints_the_api_s_numbers(
    gw: RunningGateway, path: str, params: dict[str, str], args: tuple[str, ...]
) -> None:
    """NDJSON and CSV byte for byte as the API downloads them; the terminal's table has each
    row's numbers and the totals."""
    body = await api(gw, path, **params)
    for fmt in ("csv", "ndjson"):
        async with gw.session.get(
            gw.admin_url + path, headers=AUTH, params={**PERIOD, **params, "format": fmt}
        ) as resp:
            assert await gateway_report(gw, *args, "--format", fmt) == await resp.text(), fmt
    printed = (await gateway_report(gw, *args, "--format", "table", "--width", "0")).splitlines()
    lines = [line.split() for line in printed]
    numbers = [
        c
        for c in body["columns"]
        if c not in ("group", "currency", "day", "creator_id", "status", "tier", "rule", "measure", "bucket")
    ]
    for row in body["rows"]:
        want = [_shown(row[c]) for c in numbers]
        assert any(_numbers(line[-len(want) :]) == want for line in lines if len(line) >= len(want)), (
            row,
            printed,
        )
    for total in body.get("totals", []):  # "total EUR: conversions 8, value 300.68"
        said = dict(
            part.rsplit(" ", 1)
            for line in printed
            if line.startswith(f"total {total['currency'] or '(no currency)'}: ")
            for part in line.split(": ", 1)[1].split(", ")
        )
        assert {k: Decimal(v.replace(",", "")) for k, v in said.items()} == {
            k: Decimal(str(v)) for k, v in total.items() if k != "currency"
        }, (total, printed)
    if "summary" in body:  # "conversions 11, with_touches 8, …"
        line = next(line for line in printed if line.startswith("conversions "))
        said = dict(part.rsplit(" ", 1) for part in line.split(", "))
        assert {k: _numbers([v])[0] for k, v in said.items()} == {  # type: ignore[index]
            k: _shown(v) for k, v in body["summary"].items()
        }


def _shown(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _numbers(cells: list[str]) -> list[Decimal | None] | None:
    """A table line's last cells as numbers (``(none)``: None), or None if they are not."""
    try:
        return [None if c == "(none)" else Decimal(c.replace(",", "")) for c in cells]
    except ArithmeticError:
        return None


async def test_the_top_tables_count_what_the_readme_says_and_the_payouts_clicks(gw: RunningGateway) -> None:
    """Hand-counted: a creator's landings the reports credit (the payouts' approved clicks) and
    those left out (its quarantined clicks); the conversions touched by a credited landing, any
    device (u2's second device bound after the period), one before the period by its verdict now
    (cr_ben's click the day before the conversion at since)."""
    counts = await api(gw, "/api/dashboard/summary", part="counts")
    assert {
        r["name"]: (r["touchpoints"], r["not_credited"], r["conversions"]) for r in counts["top_creators"]
    } == {
        "cr_ana": (2, 0, 4),  # u1's purchase and refund, u2's sign-up and purchase
        "cr_dan": (1, 0, 1),  # let through by the analyst
        "cr_ben": (0, 2, 1),  # review and block in the period; the conversion at since
        "cr_cat": (0, 1, 0),
    }
    pay = await api(gw, "/api/payouts", model="linear")
    clicks = {(r["creator_id"], r["status"]): r["clicks"] for r in pay["rows"]}
    for r in counts["top_creators"]:
        assert clicks.get((r["name"], "approve"), 0) == r["touchpoints"], r
        assert clicks.get((r["name"], "quarantined"), 0) == r["not_credited"], r


@pytest.mark.parametrize("conversion", ["purchase", "signup", "refund"])
async def test_one_conversion_name_reads_alike_everywhere(gw: RunningGateway, conversion: str) -> None:
    whole = await api(gw, "/api/dashboard/summary", model="linear", conversion=conversion)
    report = await api(gw, "/api/attribution", model="all", conversion=conversion)
    series = await api(gw, "/api/attribution/timeseries", model="linear", conversion=conversion)
    paths = await api(gw, "/api/attribution/paths", conversion=conversion)
    total = sum(n for n, _ in totals_of(report).values())
    assert whole["totals"]["conversions"] == total == paths["summary"]["conversions"]
    assert totals_of(series) == totals_of(report)
    daily = credits(whole["by_day"], ("day", "channel", "currency"), "conversions", "value")
    assert daily == credits(series["rows"], ("day", "group", "currency"), "conversions", "value")
    compared = credits(whole["comparison"], ("model", "channel", "currency"), "conversions", "value")
    assert compared == {
        (m, *k): v
        for m in MODELS
        for k, v in credits(report["rows"], ("group", "currency"), f"{m}_conversions", f"{m}_value").items()
    }


async def test_a_conversion_lands_on_its_local_day_across_the_change(gw: RunningGateway) -> None:
    """25 October 2026 in Berlin has 25 hours: 02:30 CET (01:30Z) and 23:30 CET (22:30Z) are
    on it, 00:10 the next morning (23:10Z) is on the 26th; the conversion at since is on the
    first day. The daily chart says the same."""
    series = await api(gw, "/api/attribution/timeseries", model="last_touch")
    on = credits(series["rows"], ("day", "currency"), "conversions", "value")
    assert on[("2026-10-20", "EUR")] == (Decimal(2), Decimal("50.01"))  # at since, and cr_eve's
    assert on[("2026-10-25", "EUR")] == (Decimal(1), Decimal("120.0"))
    assert on[("2026-10-25", None)] == (Decimal(1), Decimal(0))
    assert on[("2026-10-26", "EUR")] == (Decimal(1), Decimal("33.33"))
    daily = await api(gw, "/api/dashboard/summary", model="last_touch", part="daily")
    assert credits(daily["by_day"], ("day", "currency"), "conversions", "value") == on


async def test_a_refund_counts_as_a_conversion_and_takes_back_its_value(gw: RunningGateway) -> None:
    """README "Models": a negative value is one conversion more wherever conversions are
    counted, its value taken back: under last_touch u1's sale and refund are both cr_ana's
    (her click is the last touch of both), two conversions of 100.00 EUR net, and the 8 EUR
    conversions of the totals hold the refund."""
    report = await api(gw, "/api/attribution", model="last_touch", group_by="creator_id")
    ana = [
        (r["conversions"], r["value"])
        for r in report["rows"]
        if r["group"] == "cr_ana" and r["currency"] == "EUR"
    ]
    assert ana == [(2, 100.0)]
    pay = await api(gw, "/api/payouts", model="last_touch")
    assert [r["payout"] for r in pay["rows"] if r["creator_id"] == "cr_ana" and r["currency"] == "EUR"] == [
        10.0
    ]
    # A refund of cr_ben's sale at since: a CPA is paid per credited conversion, so the refund
    # earns it again (the value nets to 0, the CPA of 5 is paid twice).
    await gw.gateway.store.write([sale("2026-10-21T10:00:00", "v3", -10.01, "EUR", name="refund")])
    pay = await api(gw, "/api/payouts", model="linear")
    ben = [
        (r["conversions"], r["value"], r["payout"])
        for r in pay["rows"]
        if r["creator_id"] == "cr_ben" and r["status"] == "approve"
    ]
    assert ben == [(2, 0.0, 10.0)]


async def learnt_of(gw: RunningGateway, **asked: str) -> dict[str, Any]:
    """What the dashboard's model comparison says data_driven learnt, for ``asked`` (conversion,
    population), checked to be the report's (model=data_driven, model=all and the time series)
    and the whole summary's; the report's under explicit ``verdicts`` too, when given."""
    verdicts = {"verdicts": asked.pop("verdicts")} if "verdicts" in asked else {}
    learnt = what((await api(gw, "/api/dashboard/summary", part="models", **asked))["learnt"])
    assert what((await api(gw, "/api/dashboard/summary", **asked))["learnt"]) == learnt
    for path, model in (("/api/attribution", "data_driven"), ("/api/attribution", "all")):
        said = (await api(gw, path, model=model, **asked, **verdicts))["learnt"]
        assert what(said) == learnt, (path, model)
    series = await api(gw, "/api/attribution/timeseries", model="data_driven", **asked)
    assert what(series["learnt"]) == learnt
    return dict(learnt)


def what(learnt: dict[str, Any]) -> dict[str, Any]:
    """What was learnt, without when and over which period (the dashboard's period is whole days
    in the report time zone, the reports' default ends now)."""
    assert datetime.fromisoformat(learnt["learnt_at"]) <= datetime.now(UTC), learnt
    assert learnt["since"] < learnt["until"], learnt
    return {k: v for k, v in learnt.items() if k not in ("learnt_at", "since", "until")}


async def test_the_dashboard_says_what_data_driven_learnt_as_the_report_does(gw: RunningGateway) -> None:
    """The model comparison carries what data_driven learnt: the same journeys, removal effects
    and weights as /api/attribution?model=data_driven for the same period, conversion name and
    population (under the configured verdicts), each of which changes what it learns."""
    # A cookieless visitor's journeys, so that the populations learn from journeys of their own.
    await gw.gateway.store.write(
        [
            tp("c1", "2026-10-22T10:00:00", "Display", consent="cookieless"),
            tp("c1", "2026-10-23T10:00:00", "Email", consent="cookieless"),
            sale("2026-10-23T11:00:00", "c1", 9.00, "EUR"),
            tp("c2", "2026-10-24T10:00:00", "Display", consent="cookieless"),
        ]
    )
    every = await learnt_of(gw)
    assert every["converting_journeys"] > 0 and every["non_converting_journeys"] > 0, every
    assert {row["channel"] for row in every["channels"]} >= {"Email", "Affiliates", "Display"}
    assert all(row.keys() == {"channel", "removal_effect", "weight"} for row in every["channels"])
    assert [row["weight"] for row in every["channels"]] == sorted(
        (row["weight"] for row in every["channels"]), reverse=True
    )
    purchase = await learnt_of(gw, conversion="purchase")
    cookieless = await learnt_of(gw, population="cookieless")
    assert cookieless == {
        "converting_journeys": 1,
        "non_converting_journeys": 1,
        "channels": [
            {"channel": "Display", "removal_effect": 1.0, "weight": 0.5},  # a tie: by name
            {"channel": "Email", "removal_effect": 1.0, "weight": 0.5},
        ],
    }
    signup_cookie = await learnt_of(gw, conversion="signup", population="cookie")
    assert len({json.dumps(x) for x in (every, purchase, cookieless, signup_cookie)}) == 4


async def test_the_dashboard_learns_under_the_configured_verdicts(
    start_gateway: Any, upstream_server: Any
) -> None:
    """With attribution.verdicts = allow and review, the comparison's data_driven learns from
    the review touchpoints too, as the report asked for those verdicts does."""
    config = CONFIG.replace("[attribution]\n", '[attribution]\nverdicts = ["allow", "review"]\n')
    running: RunningGateway = await start_gateway(await upstream_server(web.Application()), config)
    await running.gateway.store.write(store_events()[0])
    wider = await learnt_of(running, verdicts="allow,review")
    narrower = await api(running, "/api/attribution", model="data_driven", verdicts="allow")
    assert narrower["learnt"] != wider
