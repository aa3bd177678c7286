"""The report endpoints on a running gateway over a real store: hand-computed answers, every
model side by side, CSV and NDJSON exports, creator payouts with quarantined traffic, and
a 400 naming the parameter for every bad one. Answers are checked against the OpenAPI document."""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import aiohttp
import pytest
from aiohttp import web
from jsonschema import Draft202012Validator

from gateway.attribution import MODELS, markov_weights
from gateway.badbody import body_key
from gateway.config import ConfigError, load_settings
from gateway.events import Binding, Conversion, Event, Touchpoint, iso
from gateway.ids import Uuid7
from gateway.openapi import openapi_document
from gateway.reportstate import REPORTING_KEY
from storage.erasure import erase_user
from storage.local import connect
from tests.clients import BROWSER
from tests.conftest import ENV, TOKEN, RunningGateway
from tests.gateway.test_fraud import click
from tests.gateway.test_inbound import signed
from tests.gateway.test_openapi import response_schema
from tests.storage.test_reports_shared import holding

AUTH = {"Authorization": f"Bearer {TOKEN}"}
T0 = datetime(2026, 11, 1, tzinfo=UTC)
PERIOD = {"since": "2026-11-01", "until": "2026-12-01"}
ROOT = Path(__file__).resolve().parents[2]
new_id = Uuid7()

PAYOUTS = """
[payouts]
default_tier = "standard"
tiers = { standard = { cpa = 5.0 }, gold = { revenue_share = 0.1 } }
creators = { cr_ana = { tier = "gold" } }
"""


def at(days: float) -> datetime:
    return T0 + timedelta(days=days)


def tp(visitor: str, days: float, channel: str, **fields: str) -> Touchpoint:
    ts = at(days)
    return Touchpoint(new_id(int(ts.timestamp() * 1000)), iso(ts), "n", visitor, channel=channel, **fields)


def conversion(days: float, value: float, visitor: str, currency: str = "EUR") -> Conversion:
    ts = at(days)
    cid = new_id(int(ts.timestamp() * 1000))
    return Conversion(cid, iso(ts), "n", "purchase", "order:" + cid, visitor, None, value, currency)


def bind(visitor: str, user: str) -> Binding:
    return Binding(new_id(int(T0.timestamp() * 1000)), iso(T0), "n", visitor, user, "login")


EVENTS: list[Event] = [
    # A: one user, two devices, three touches; 100.00 EUR on day 9.
    bind("phone", "u1"),
    bind("laptop", "u1"),
    tp("phone", 0, "Paid Social", source="facebook", medium="paid_social", campaign="launch"),
    tp("laptop", 3, "Email", source="newsletter", medium="email", campaign="weekly"),
    tp("laptop", 7, "Affiliates", creator_id="cr_ana"),
    conversion(9, 100.00, "laptop"),
    # B: a creator's link, then 10.01 EUR the next day.
    tp("v3", 1, "Affiliates", creator_id="cr_ben"),
    conversion(2, 10.01, "v3"),
    # C: nothing eligible: Direct.
    conversion(5, 5.00, "v5"),
    # D: the creator again, then the newsletter; 50.00 USD.
    tp("v6", 10, "Affiliates", creator_id="cr_ben"),
    tp("v6", 11, "Email", source="newsletter", medium="email", campaign="weekly"),
    conversion(12, 50.00, "v6", "USD"),
]


@pytest.fixture
async def gw(start_gateway: Any, upstream_server: Any) -> RunningGateway:
    app = web.Application()
    running: RunningGateway = await start_gateway(await upstream_server(app), PAYOUTS)
    await running.gateway.store.write(EVENTS)
    return running


async def get(gw: RunningGateway, path: str, status: int = 200, **params: str) -> Any:
    async with gw.session.get(gw.admin_url + path, headers=AUTH, params=params) as resp:
        body = await resp.json()
        assert resp.status == status, body
    Draft202012Validator(response_schema(path, status)).validate(body)
    return body


def table(body: dict[str, Any], *columns: str) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """Rows keyed by (group, currency) (or (day, group, currency)) → the given columns."""
    key = ("day", "group", "currency") if "day" in body["columns"] else ("group", "currency")
    return {tuple(r[k] for k in key): tuple(r[c] for c in columns) for r in body["rows"]}


def credited(body: dict[str, Any], *columns: str) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """``table`` of the rows with any credit: a time series' days of none left out."""
    numbers = [c for c in body["columns"] if c.endswith(("conversions", "value"))]
    kept = {**body, "rows": [r for r in body["rows"] if any(r[c] for c in numbers)]}
    return table(kept, *columns)


async def test_linear_by_channel_hand_computed(gw: RunningGateway) -> None:
    body = await get(gw, "/api/attribution", model="linear", **PERIOD)
    assert body["columns"] == ["group", "currency", "conversions", "value"]
    assert body["source"] == "local"  # no central.mirror_path: this node's own store
    assert (await get(gw, "/api/fraud", **PERIOD))["source"] == "local"
    assert table(body, "conversions", "value") == {
        # 33.34 of A (the last of three equal shares takes the odd cent) and all of B
        ("Affiliates", "EUR"): (1.333334, 43.35),
        ("Paid Social", "EUR"): (0.333333, 33.33),
        ("Email", "EUR"): (0.333333, 33.33),
        ("Direct", "EUR"): (1, 5.00),
        ("Affiliates", "USD"): (0.5, 25.00),
        ("Email", "USD"): (0.5, 25.00),
    }
    assert body["totals"] == [
        {"currency": "EUR", "conversions": 3, "value": 115.01},
        {"currency": "USD", "conversions": 1, "value": 50.0},
    ]
    assert body["rows"][0]["group"] == "Affiliates"  # largest value first


async def test_group_by_creator_and_conversion_filter(gw: RunningGateway) -> None:
    body = await get(gw, "/api/attribution", model="last_touch", group_by="creator_id", **PERIOD)
    assert table(body, "conversions", "value") == {
        ("cr_ana", "EUR"): (1, 100.00),
        ("cr_ben", "EUR"): (1, 10.01),
        (None, "EUR"): (1, 5.00),  # C had no touch at all
        (None, "USD"): (1, 50.00),  # D's last touch is the newsletter, no creator
    }
    none = await get(gw, "/api/attribution", conversion="signup", **PERIOD)
    assert none["rows"] == [] and none["totals"] == [] and none["conversion"] == "signup"


async def test_touches_of_one_millisecond_are_in_time_order_and_only_a_tie_in_id_order(
    start_gateway: Any, upstream_server: Any
) -> None:
    """The store keeps a touch's time to the microsecond. Two touches of one millisecond whose
    IDs run against their times (two worker processes, a sender's events with fractions of a
    second) are credited in time order; only touches of the same microsecond fall back to the
    order of their IDs (README "Models": until 2026-12-07 it said the millisecond)."""
    gw = await start_gateway(await upstream_server(web.Application()))
    minted = Uuid7()  # its own: the module's has minted later milliseconds, and would go random
    start = at(2)
    ms = int(start.timestamp() * 1000)
    smaller, larger, tie_smaller, tie_larger = (minted(ms) for _ in range(4))
    assert smaller < larger < tie_smaller < tie_larger

    def touch(tid: str, visitor: str, micro: int, campaign: str) -> Touchpoint:
        ts = iso(start + timedelta(microseconds=micro))
        return Touchpoint(tid, ts, "n", visitor, channel="Email", campaign=campaign)

    await gw.gateway.store.write(
        [
            # 900 µs into the millisecond, with the smaller ID; 100 µs into it, the larger.
            touch(smaller, "w1", 900, "later by 800us"),
            touch(larger, "w1", 100, "earlier by 800us"),
            conversion(3, 10.00, "w1"),
            # The same microsecond: the larger ID is the later touch.
            touch(tie_larger, "w2", 500, "tie, larger id"),
            touch(tie_smaller, "w2", 500, "tie, smaller id"),
            conversion(3, 20.00, "w2"),
        ]
    )
    first = await get(gw, "/api/attribution", model="first_touch", group_by="campaign", **PERIOD)
    last = await get(gw, "/api/attribution", model="last_touch", group_by="campaign", **PERIOD)
    assert table(first, "value") == {
        ("earlier by 800us", "EUR"): (10.00,),
        ("tie, smaller id", "EUR"): (20.00,),
    }
    assert table(last, "value") == {("later by 800us", "EUR"): (10.00,), ("tie, larger id", "EUR"): (20.00,)}


async def test_a_landing_s_tier_parameter_sets_its_window_over_the_campaign_name(
    start_gateway: Any, upstream_server: Any
) -> None:
    """Through the proxy: two browsers land from the same `spring-awareness` newsletter, one
    link also saying `UTM_TIER=%20Conversion%20` (any case of the name and the value, spaces
    around it). The billing system's sale of each comes 200 s later. The conversion tier's
    window here is 86.4 s, the awareness one 30 days: the tier parameter, read before the
    campaign name, leaves the first sale with no eligible touch (Direct); the second is the
    newsletter's (README "Models": the tier is the first `tier_params` value naming a tier,
    else the first pattern that matches the campaign name)."""
    app = web.Application()

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<html>shop</html>", content_type="text/html")

    app.router.add_get("/{tail:.*}", page)
    windows = (
        "[attribution]\nlookback_days = { awareness = 30.0, consideration = 14.0, conversion = 0.001 }\n"
    )
    gw = await start_gateway(await upstream_server(app), SENDER + windows, {"BILLING_SECRET": BILLING})
    link = "/?utm_source=newsletter&utm_medium=email&utm_campaign=spring-awareness"
    visitors = []
    for target in (link + "&UTM_TIER=%20Conversion%20", link):
        async with gw.session.get(gw.url + target, headers=BROWSER) as resp:
            assert resp.status == 200
            visitors.append(resp.cookies["gw_vid"].value)
    sold = datetime.now(UTC) + timedelta(seconds=200)  # within webhooks.tolerance_seconds (300)
    for n, visitor in enumerate(visitors):
        sale = {"type": "conversion", "event_id": f"t{n}", "visitor_id": visitor, "name": "purchase"}
        sale |= {"value": 10 + n, "currency": "EUR", "order_id": f"T{n}", "timestamp": iso(sold)}
        body = json.dumps(sale).encode()
        async with gw.session.post(gw.url + "/_gw/events", data=body, headers=signed(body, BILLING)) as resp:
            assert resp.status == 202, await resp.text()
    day = sold.date()
    period = {"since": str(day - timedelta(days=1)), "until": str(day + timedelta(days=1))}
    body = await get(gw, "/api/attribution", model="linear", **period)
    assert table(body, "conversions", "value") == {
        ("Direct", "EUR"): (1, 10.00),
        ("Email", "EUR"): (1, 11.00),
    }


async def test_model_all_matches_every_single_model(gw: RunningGateway) -> None:
    both = await get(gw, "/api/attribution", model="all", group_by="medium", **PERIOD)
    assert both["models"] == list(MODELS)
    assert both["columns"][:2] == ["group", "currency"] and len(both["columns"]) == 2 + 2 * len(MODELS)
    for model in MODELS:
        single = await get(gw, "/api/attribution", model=model, group_by="medium", **PERIOD)
        expected = table(single, "conversions", "value")
        got = table(both, f"{model}_conversions", f"{model}_value")
        assert {k: v for k, v in got.items() if any(v)} == expected, model
        assert single["totals"] == both["totals"]


async def test_timeseries_by_day(gw: RunningGateway) -> None:
    body = await get(gw, "/api/attribution/timeseries", model="first_touch", **PERIOD)
    assert body["columns"][:3] == ["day", "group", "currency"]
    assert credited(body, "value") == {
        ("2026-11-03", "Affiliates", "EUR"): (10.01,),
        ("2026-11-06", "Direct", "EUR"): (5.0,),
        ("2026-11-10", "Paid Social", "EUR"): (100.0,),
        ("2026-11-13", "Affiliates", "USD"): (50.0,),
    }
    assert len(body["rows"]) == 4 * 30  # every day of November for each group and currency
    assert [r["day"] for r in body["rows"]] == sorted(r["day"] for r in body["rows"])


async def fetch(gw: RunningGateway, path: str, **params: str) -> str:
    """An answer's text as sent (JSON numbers as they are written: ``0.00``, not ``0.0``)."""
    async with gw.session.get(gw.admin_url + path, headers=AUTH, params=params) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.text()


DENSE = [  # the rows of 2026-11-01..05: credit on the 1st (Email) and 4th (Paid Social) only
    ("2026-11-01", "Email", "EUR", "1", "10.00"),
    ("2026-11-01", "Paid Social", "EUR", "0", "0.00"),
    ("2026-11-01", "Paid Social", "JPY", "0", "0"),
    *(
        (day, group, currency, "0", "0" if currency == "JPY" else "0.00")
        for day in ("2026-11-02", "2026-11-03")
        for group, currency in (("Email", "EUR"), ("Paid Social", "EUR"), ("Paid Social", "JPY"))
    ),
    ("2026-11-04", "Paid Social", "JPY", "1", "900"),  # largest value first, as on any day
    ("2026-11-04", "Paid Social", "EUR", "1", "20.00"),
    ("2026-11-04", "Email", "EUR", "0", "0.00"),
    ("2026-11-05", "Email", "EUR", "0", "0.00"),
    ("2026-11-05", "Paid Social", "EUR", "0", "0.00"),
    ("2026-11-05", "Paid Social", "JPY", "0", "0"),
]


async def test_the_time_series_has_every_day_for_every_group(
    start_gateway: Any, upstream_server: Any
) -> None:
    """Conversions on the 1st and 4th of five days, to two channels (one in two currencies):
    each channel and currency has a row on each of the five days, zero on the days it was
    credited nothing, in JSON, CSV, NDJSON and the terminal alike; a chart of the download no
    longer joins the 1st to the 4th as if they were consecutive. Totals stay those of the
    conversions, and a period without any conversion has no rows."""
    gw = await start_gateway(await upstream_server(web.Application()))
    await gw.gateway.store.write(
        [
            tp("a", 0.4, "Email"),
            conversion(0.5, 10.00, "a"),
            tp("b", 3.4, "Paid Social"),
            conversion(3.5, 20.00, "b"),
            tp("c", 3.4, "Paid Social"),
            conversion(3.6, 900, "c", "JPY"),
        ]
    )
    period = {"since": "2026-11-01", "until": "2026-11-06"}
    body = await get(gw, "/api/attribution/timeseries", **period)
    assert [(r["day"], r["group"], r["currency"]) for r in body["rows"]] == [row[:3] for row in DENSE]
    assert [(r["conversions"], r["value"]) for r in body["rows"]] == [
        (Decimal(n), Decimal(v)) for *_, n, v in DENSE
    ]
    assert body["totals"] == [
        {"currency": "EUR", "conversions": 2, "value": 30.0},
        {"currency": "JPY", "conversions": 1, "value": 900},
    ]
    # A zero is written as the computed amounts are: in the currency's minor units.
    text = await fetch(gw, "/api/attribution/timeseries", **period)
    zero = '{"day":"2026-11-02","group":"Email","currency":"EUR","conversions":0,"value":0.00}'
    assert zero in text and '"currency":"JPY","conversions":0,"value":0}' in text
    ndjson = await fetch(gw, "/api/attribution/timeseries", format="ndjson", **period)
    assert ndjson.splitlines() == [
        f'{{"day":"{day}","group":"{group}","currency":"{currency}","conversions":{n},"value":{v}}}'
        for day, group, currency, n, v in DENSE
    ]
    csv_text = await fetch(gw, "/api/attribution/timeseries", format="csv", **period)
    assert list(csv.reader(io.StringIO(csv_text))) == [body["columns"], *(list(r) for r in DENSE)]
    # The terminal: the same rows, numbers right-aligned.
    printed = await gateway_report(
        gw, "UTC", "--timeseries", "--since", "2026-11-01", "--until", "2026-11-06"
    )
    lines = printed.splitlines()
    assert lines[2].split() == ["day", "group", "currency", "conversions", "value"]
    assert lines[4:19] == [
        f"{day}  {group:<11}  {currency:<8}  {n:>11}  {v:>5}" for day, group, currency, n, v in DENSE
    ]
    assert lines[19:] == ["total EUR: conversions 2, value 30.00", "total JPY: conversions 1, value 900"]
    # model=all: every model's pair is zero on such a day.
    every = await get(gw, "/api/attribution/timeseries", model="all", **period)
    assert [(r["day"], r["group"], r["currency"]) for r in every["rows"]] == [row[:3] for row in DENSE]
    for row, (*_, n, _v) in zip(every["rows"], DENSE, strict=True):
        assert {row[f"{m}_conversions"] for m in MODELS} == {int(n)}, row
    # No conversion in the period: no group to draw, no rows (not five days of nothing).
    empty = {"since": "2026-11-10", "until": "2026-11-15"}
    assert (await get(gw, "/api/attribution/timeseries", **empty))["rows"] == []
    assert await fetch(gw, "/api/attribution/timeseries", format="csv", **empty) == (
        "day,group,currency,conversions,value\r\n"
    )


async def test_report_days_follow_attribution_timezone(start_gateway: Any, upstream_server: Any) -> None:
    """In New York (UTC-5 in November) each conversion at UTC midnight is the evening before;
    a date alone means its midnight there, in the reports, the listings and the dashboard."""
    zoned = PAYOUTS + '[attribution]\ntimezone = "America/New_York"\n'
    gw = await start_gateway(await upstream_server(web.Application()), zoned)
    await gw.gateway.store.write(EVENTS)
    body = await get(gw, "/api/attribution/timeseries", model="first_touch", **PERIOD)
    assert credited(body, "value") == {
        ("2026-11-02", "Affiliates", "EUR"): (10.01,),
        ("2026-11-05", "Direct", "EUR"): (5.0,),
        ("2026-11-09", "Paid Social", "EUR"): (100.0,),
        ("2026-11-12", "Affiliates", "USD"): (50.0,),
    }
    # 2026-11-10 in New York is 05:00Z on the 10th to 05:00Z on the 11th: none of the
    # conversions (all at UTC midnight) and, of the touchpoints, only day 10's (00:00Z on the 11th).
    day = {"since": "2026-11-10", "until": "2026-11-11"}
    assert (await get(gw, "/api/attribution", model="linear", **day))["rows"] == []
    listed = await get(gw, "/api/touchpoints", **day)
    assert [t["ts"] for t in listed["items"]] == [iso(at(10))]
    daily = await get(gw, "/api/dashboard/summary", since="2026-11-09", until="2026-11-10", part="daily")
    assert {r["day"] for r in daily["by_day"]} == {"2026-11-09"}


async def test_rows_are_ordered_by_the_value_the_column_shows(
    start_gateway: Any, upstream_server: Any
) -> None:
    """Across currencies, rows were ordered by raw minor units: 1.250 KWD (1250 fils) came
    above 10.00 EUR (1000 cents) and ¥900, below both in the value column."""
    gw = await start_gateway(await upstream_server(web.Application()))
    await gw.gateway.store.write(
        [
            tp("a", 1, "Email"),
            conversion(2, 1.25, "a", "KWD"),
            tp("b", 1, "Paid Search"),
            conversion(2, 10.00, "b", "EUR"),
            tp("c", 1, "Display"),
            conversion(2, 900, "c", "JPY"),
        ]
    )
    body = await get(gw, "/api/attribution", model="linear", **PERIOD)
    assert [(r["currency"], r["value"]) for r in body["rows"]] == [("JPY", 900), ("EUR", 10.0), ("KWD", 1.25)]


def _conversion_at(ts: datetime, visitor: str) -> Conversion:
    cid = new_id(int(ts.timestamp() * 1000))
    return Conversion(cid, iso(ts), "n", "purchase", "order:" + cid, visitor, None, 1.0, "EUR")


async def test_a_date_is_its_local_day_of_23_or_25_hours(start_gateway: Any, upstream_server: Any) -> None:
    """In Berlin, March 29 (spring forward) lasts 23 hours, 23:00Z to 22:00Z; October 25 (fall
    back) 25 hours, 22:00Z to 23:00Z. A period of dates, in the reports and the dashboard,
    holds exactly the conversions of those local days, and the dashboard counts local days."""
    zoned = '[attribution]\ntimezone = "Europe/Berlin"\n'
    gw = await start_gateway(await upstream_server(web.Application()), zoned)
    utc = [
        datetime(2026, 3, 28, 22, 59, 59, tzinfo=UTC),  # 23:59:59 CET on the 28th: before
        datetime(2026, 3, 28, 23, tzinfo=UTC),  # 00:00 CET on the 29th: the first moment
        datetime(2026, 3, 29, 21, 59, 59, tzinfo=UTC),  # 23:59:59 CEST: the last second
        datetime(2026, 3, 29, 22, tzinfo=UTC),  # 00:00 CEST on the 30th: after
        datetime(2026, 10, 24, 21, 59, 59, tzinfo=UTC),  # 23:59:59 CEST on the 24th: before
        datetime(2026, 10, 24, 22, tzinfo=UTC),  # 00:00 CEST on the 25th
        datetime(2026, 10, 25, 22, 59, 59, tzinfo=UTC),  # 23:59:59 CET
        datetime(2026, 10, 25, 23, tzinfo=UTC),  # 00:00 CET on the 26th: after
    ]
    await gw.gateway.store.write([_conversion_at(ts, f"v{i}") for i, ts in enumerate(utc)])
    for since, until, first, last in [
        ("2026-03-29", "2026-03-30", "2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z"),
        ("2026-10-25", "2026-10-26", "2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z"),
    ]:
        day = {"since": since, "until": until}
        body = await get(gw, "/api/attribution/timeseries", **day)
        assert (body["since"], body["until"]) == (first, last)
        assert table(body, "conversions") == {(since, "Direct", "EUR"): (2,)}
        summary = await get(gw, "/api/dashboard/summary", **day)
        assert summary["totals"]["conversions"] == 2
        assert [(r["day"], r["conversions"]) for r in summary["by_day"]] == [(since, 2)]
        # A download is named after the dates asked for, not the UTC dates they begin on.
        for path in ("/api/attribution/timeseries", "/api/fraud"):
            url = gw.admin_url + path
            async with gw.session.get(url, headers=AUTH, params={**day, "format": "csv"}) as resp:
                assert resp.status == 200
                assert f'-from-{since}-to-{since}.csv"' in resp.headers["Content-Disposition"]
    # 92 local days, each of 23, 24 or 25 hours, whatever the changes between them.
    span = {"since": "2026-03-01", "until": "2026-06-01"}
    assert len((await get(gw, "/api/dashboard/summary", part="counts", **span))["conversion_names"]) == 1
    too_long = await get(gw, "/api/dashboard/summary", 400, since="2026-03-01", until="2026-06-02")
    assert too_long["error"] == "since..until: must span 1..92 days, got 93"


async def test_the_default_since_and_the_longest_period_count_local_days(
    start_gateway: Any, upstream_server: Any
) -> None:
    """In Berlin, until=2026-04-05 alone reports the 30 local days before it, from 00:00 CET
    on March 6 (23:00Z on the 5th), not 30 x 24 hours (22:00Z, which is 23:00 on March 5
    there and made the time series start with an hour of that day); and 3660 local days are allowed
    whether or not a change of daylight saving time lies between their ends."""
    gw = await start_gateway(
        await upstream_server(web.Application()), '[attribution]\ntimezone = "Europe/Berlin"\n'
    )
    body = await get(gw, "/api/attribution/timeseries", until="2026-04-05")
    assert (body["since"], body["until"]) == ("2026-03-05T23:00:00Z", "2026-04-04T22:00:00Z")
    # CEST to CET: 3660 local days are 3660 x 24 hours and one.
    longest = await get(gw, "/api/attribution", since="2026-10-20", until="2036-10-27")
    assert (longest["since"], longest["until"]) == ("2026-10-19T22:00:00Z", "2036-10-26T23:00:00Z")
    refused = await get(gw, "/api/attribution", 400, since="2026-10-19", until="2036-10-27")
    assert refused["error"] == (
        "since: a report covers at most 3660 days; the earliest for this until is"
        " 2026-10-19T22:00:00.000000Z, got 2026-10-18T22:00:00.000000Z"
    )


async def test_a_date_whose_midnight_falls_outside_the_range_says_when_it_is(
    start_gateway: Any, upstream_server: Any
) -> None:
    """The range is of instants: 1970-01-01 in Kolkata begins before 1970-01-01T00:00Z."""
    gw = await start_gateway(
        await upstream_server(web.Application()), '[attribution]\ntimezone = "Asia/Kolkata"\n'
    )
    for path in ("/api/attribution", "/api/touchpoints"):
        body = await get(gw, path, 400, since="1970-01-01", until="1970-01-03")
        assert body["error"] == (
            "since: expected an ISO 8601 date or date-time from 1970-01-01T00:00Z to 9999-12-31T00:00Z,"
            " like 2026-11-25T10:00:00Z, got '1970-01-01', which is 1969-12-31T18:30:00.000000Z"
        )
    assert (await get(gw, "/api/attribution", since="1970-01-02", until="1970-01-03"))["rows"] == []


async def gateway_report(gw: RunningGateway, zone: str, *args: str) -> str:
    """``gateway report`` on the running gateway's store file, in ``zone``: its output."""
    path = gw.gateway.settings.store_path
    config = path.parent / "report.toml"
    text = f"[storage]\npath = '{path}'\n[attribution]\ntimezone = \"{zone}\"\n"
    await asyncio.to_thread(config.write_text, text)
    done = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "report", "-c", str(config), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    out, err = await done.communicate()
    assert done.returncode == 0, err.decode()
    return out.decode()


async def test_gateway_report_prints_what_the_api_answers_in_a_zone(
    start_gateway: Any, upstream_server: Any
) -> None:
    """The terminal reads the period's dates and date-times in the zone, and cuts its days,
    as the endpoints do: the same rows, the same period, a time that never happens too."""
    zone = "Europe/Berlin"
    gw = await start_gateway(
        await upstream_server(web.Application()), f'[attribution]\ntimezone = "{zone}"\n'
    )
    start = datetime(2026, 3, 27, tzinfo=UTC)
    events: list[Event] = []
    for i in range(48):  # a conversion every 3 hours over six days, each after a touch
        ts = start + timedelta(hours=3 * i)
        events += [
            Touchpoint(new_id(int(ts.timestamp() * 1000) - 60_000), iso(ts - timedelta(minutes=1)), "n",
                       f"v{i}", channel=("Email", "Display", "Referral")[i % 3]),
            _conversion_at(ts, f"v{i}"),
        ]  # fmt: skip
    await gw.gateway.store.write(events)
    for since, until in [("2026-03-28", "2026-04-02"), ("2026-03-29T02:30", "2026-04-01T12:00+02:00")]:
        period = {"since": since, "until": until}
        for path, flags in [
            ("/api/attribution/timeseries", ("--timeseries",)),
            ("/api/attribution", ()),
        ]:
            body = await get(gw, path, **period)
            args = ("--since", since, "--until", until, *flags, "--format", "ndjson")
            rows = [json.loads(line) for line in (await gateway_report(gw, zone, *args)).splitlines()]
            assert rows == body["rows"] and rows, (path, since)
        head = (
            await gateway_report(gw, zone, "--since", since, "--until", until, "--timeseries")
        ).splitlines()[0]
        assert head.startswith(f"timeseries: {body['since']} .. {body['until']}"), (head, body["since"])
        days = {r["day"] for r in (await get(gw, "/api/attribution/timeseries", **period))["rows"]}
        assert min(days) == since[:10]


@pytest.mark.parametrize(
    ("given", "meant"),
    [
        ("2026-03-29T01:59:59", "2026-03-29T00:59:59Z"),  # CET, just before the change
        ("2026-03-29T03:00", "2026-03-29T01:00:00Z"),  # CEST, the first moment after it
        # 02:30 never happens: read with the offset before the change (+01:00), which is
        # 03:30 CEST: half an hour after the change, as the clock would have gone on.
        ("2026-03-29T02:30", "2026-03-29T01:30:00Z"),
        # 02:30 happens twice: the first, summer time (+02:00); an offset names the second.
        ("2026-10-25T02:30", "2026-10-25T00:30:00Z"),
        ("2026-10-25T02:30+01:00", "2026-10-25T01:30:00Z"),
        ("2026-10-25T02:30Z", "2026-10-25T02:30:00Z"),
        # RFC 3339 allows t and z in lower case; 24:00 ends its day (until 2026-12-05 a 400).
        ("2026-11-30t10:00:00z", "2026-11-30T10:00:00Z"),
        ("2026-11-30T24:00", "2026-11-30T23:00:00Z"),  # the local day's end: 1 December's midnight
        ("2026-11-30T24:00:00Z", "2026-12-01T00:00:00Z"),
        ("2026-11-30t24:00:00.000+05:30", "2026-11-30T18:30:00Z"),
        ("2026-03-28T24:00", "2026-03-28T23:00:00Z"),  # the night before the clocks go forward
    ],
)
async def test_a_local_time_that_is_skipped_or_repeated_is_read_one_way(
    start_gateway: Any, upstream_server: Any, given: str, meant: str
) -> None:
    zoned = '[attribution]\ntimezone = "Europe/Berlin"\n'
    gw = await start_gateway(await upstream_server(web.Application()), zoned)
    body = await get(gw, "/api/attribution", since="2026-03-01", until=given)
    assert body["until"] == meant
    listed = await get(gw, "/api/touchpoints", since=given)  # the listings read it alike
    assert listed["items"] == []


@pytest.mark.parametrize(
    "given", ["2026-11-30T24:30", "2026-11-30T24:00:01", "2026-11-30T24:00:00.5", "9999-12-31T24:00Z"]
)
async def test_24_is_only_the_end_of_a_day(gw: RunningGateway, given: str) -> None:
    body = await get(gw, "/api/attribution", 400, since="2026-03-01", until=given)
    assert body["error"].startswith("until: expected an ISO 8601 date or date-time")


@pytest.mark.parametrize(
    ("params", "said"),
    [
        (  # November's end as a partner manager writes it: until is exclusive
            {"since": "2026-11-01", "until": "2026-11-31"},
            "until: expected an ISO 8601 date or date-time from 1970-01-01T00:00Z to 9999-12-31T00:00Z, like"
            " 2026-11-25T10:00:00Z, got '2026-11-31': no such day, November 2026 has 30 days (until is"
            " exclusive: until=2026-12-01 ends the period after 30 November)",
        ),
        ({"since": "2026-02-29"}, "got '2026-02-29': no such day, February 2026 has 28 days"),
        ({"since": "2026-11-00"}, "got '2026-11-00': no such day, November 2026 has 30 days"),
        ({"since": "2026-13-01"}, "got '2026-13-01': no month 13, months are 01 to 12"),
        (
            {"since": "2026-11-01T25:00"},
            "got '2026-11-01T25:00': no such time, hours are 00 to 23 (24:00 alone is the end of a day)",
        ),
        ({"since": "2026-11-01T10:60"}, "got '2026-11-01T10:60': no such time, minutes are 00 to 59"),
        ({"since": "2026-11-01T10:00:60Z"}, "got '2026-11-01T10:00:60Z': no such time, seconds are 00 to 59"),
    ],
)
async def test_a_day_or_time_the_calendar_has_not_is_a_400_saying_why(
    gw: RunningGateway, params: dict[str, str], said: str
) -> None:
    """``until=2026-11-31`` (November's last day, as a partner manager asking for November
    writes it) was refused as if it were not ISO 8601 at all; the 400 now says which part the
    calendar has not, and for an ``until`` past its month's end, what ends that month."""
    body = await get(gw, "/api/payouts", 400, **params)
    assert said in body["error"], body["error"]


@pytest.mark.parametrize(
    ("given", "said"),
    [
        # A date with an offset: the Z was dropped (midnight in the zone, not UTC's), and
        # +05:30 or -05:00 read as 05:30 or 05:00 in the zone, the offset taken for a time.
        ("2026-11-01Z", "write 2026-11-01T00:00Z for midnight UTC, or 2026-11-01 for midnight in UTC"),
        ("2026-11-01z", "write 2026-11-01T00:00Z for midnight UTC"),
        ("2026-11-01+05:30", "write 2026-11-01T00:00+05:30 for midnight at +05:30"),
        ("2026-11-01-05:00", "write 2026-11-01T00:00-05:00 for midnight at -05:00"),
        # Any other character between date and time was taken for the T.
        ("2026-11-01x05:30", "expected an ISO 8601 date or date-time"),
        ("2026-11-01_05:30", "expected an ISO 8601 date or date-time"),
    ],
)
async def test_a_date_with_an_offset_or_an_odd_separator_is_400_not_misread(
    gw: RunningGateway, given: str, said: str
) -> None:
    body = await get(gw, "/api/attribution", 400, since=given, until="2026-12-01")
    assert body["error"].startswith("since: ") and said in body["error"], body["error"]
    assert repr(given) in body["error"]


@pytest.mark.parametrize(
    "given",
    ["20261101", "2026-W44-1", "2026-W44", "2026-11-01T1000", "2026-11-01T10", "2026-11-01T10:00+0100",
     "20261101T100000Z", "2026-11-01T10:00:00.1234567"],
)  # fmt: skip
async def test_a_form_python_reads_but_the_document_refuses_is_a_400(gw: RunningGateway, given: str) -> None:
    """Python's fromisoformat took the basic and week forms (``since=20261101``,
    ``2026-W44-1``, ``2026-11-01T1000``), which the published OpenAPI pattern refuses: a
    client checked against the document and one that was not disagreed on what is a date.
    Both refuse them now, saying what to write."""
    (schema,) = [
        p["schema"] for p in openapi_document()["paths"]["/api/attribution"]["get"]["parameters"]
        if p["name"] == "since"
    ]  # fmt: skip
    pattern = re.compile(schema["pattern"])
    assert not pattern.match(given)
    for path in ("/api/attribution", "/api/touchpoints"):
        async with gw.session.get(gw.admin_url + path, headers=AUTH, params={"since": given}) as resp:
            body = await resp.json()
        assert resp.status == 400, (path, body)
        assert body["error"].startswith("since: expected an ISO 8601 date or date-time from 1970")
        assert f"got {given!r}" in body["error"]
        if given != "2026-11-01T10:00:00.1234567":  # said in the test below
            assert body["error"].endswith("not the basic (20261101, T1000, +0100) or week (2026-W44-1) forms")
    for written in (
        "2026-11-01",
        "2026-11-01T10:00",
        "2026-11-01t10:00:00.123456z",
        "2026-11-01T10:00-01:30",
    ):
        assert pattern.match(written)
        assert (await get(gw, "/api/attribution", since=written, until="2026-12-01"))["ok"]


@pytest.mark.parametrize(
    ("given", "hint"),
    [
        (
            "2026-12-01T10:00:00.1234567890Z",
            ": a fraction of a second takes 1 to 6 digits (to the microsecond), got 10:"
            " write 2026-12-01T10:00:00.123456Z",
        ),
        (
            "2026-11-01T10:00:00.1234567",
            ": a fraction of a second takes 1 to 6 digits (to the microsecond), got 7:"
            " write 2026-11-01T10:00:00.123456",
        ),
        (
            "2026-12-01 10:00:00.000000000+01:00",
            ": a fraction of a second takes 1 to 6 digits (to the microsecond), got 9:"
            " write 2026-12-01 10:00:00.000000+01:00",
        ),
        (
            "2026-12-01T10:00:00,5Z",
            ": a fraction of a second is written after a point, not a comma: write 2026-12-01T10:00:00.5Z",
        ),
    ],
)
async def test_a_fraction_of_a_second_the_api_does_not_read_is_a_400_saying_what_it_reads(
    gw: RunningGateway, given: str, hint: str
) -> None:
    """Nanoseconds (a JavaScript or Go timestamp printed whole) or a decimal comma (ISO 8601
    allows it) were refused with the hint for the basic and week forms, which they are not in."""
    for path in ("/api/attribution", "/api/touchpoints", "/api/fraud"):
        async with gw.session.get(gw.admin_url + path, headers=AUTH, params={"since": given}) as resp:
            body = await resp.json()
        assert resp.status == 400, (path, body)
        assert body["error"].startswith("since: expected an ISO 8601 date or date-time from 1970"), path
        assert body["error"].endswith(f"got {given!r}{hint}"), (path, body["error"])
    written = hint.rpartition("write ")[2]
    assert (await get(gw, "/api/attribution", since=written, until="2026-12-02"))["ok"]


async def test_a_space_between_date_and_time_is_the_t(gw: RunningGateway) -> None:
    """RFC 3339 allows it; and a + offset sent unencoded arrives as a space after the time."""
    for given in ("2026-11-01 05:30", "2026-11-01 05:30 00:00", "2026-11-01T05:30 00:00"):
        body = await get(gw, "/api/attribution", since=given, until="2026-12-01")
        assert body["since"] == "2026-11-01T05:30:00Z", given


def test_an_unknown_report_time_zone_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(None, text='[attribution]\ntimezone = "Mars/Olympus"\n', environ=ENV)
    (problem,) = err.value.problems
    assert problem.startswith("attribution.timezone: unknown time zone 'Mars/Olympus'")


@pytest.mark.parametrize("given", ["localtime", "posixrules", "posix/Europe/Berlin", "right/UTC"])
def test_a_time_zone_file_that_is_no_zone_name_is_a_config_error(given: str) -> None:
    """Python reads these files of the time zone database, browsers know no zone of that name:
    the dashboard's script failed on it (RangeError: Invalid time zone specified) and showed
    "Computing…" for ever, its lookup disabled."""
    if not zoneinfo_holds(given):
        pytest.skip(f"this system's time zone database has no {given}")
    with pytest.raises(ConfigError) as err:
        load_settings(None, text=f'[attribution]\ntimezone = "{given}"\n', environ=ENV)
    (problem,) = err.value.problems
    assert problem.startswith(f"attribution.timezone: {given!r} is a file of the time zone database,")
    assert "'Europe/Berlin'" in problem


def zoneinfo_holds(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


async def test_paths(gw: RunningGateway) -> None:
    body = await get(gw, "/api/attribution/paths", **PERIOD)
    touches = {r["bucket"]: r["conversions"] for r in body["rows"] if r["measure"] == "touches"}
    days = {r["bucket"]: r["conversions"] for r in body["rows"] if r["measure"] == "days"}
    assert {k: v for k, v in touches.items() if v} == {"0": 1, "1": 1, "2": 1, "3": 1}
    assert {k: v for k, v in days.items() if v} == {"1": 1, "2-3": 1, "8-14": 1}  # B, D, A
    assert body["summary"] == {
        "conversions": 4,
        "with_touches": 3,
        "mean_touches": 1.5,
        "median_touches": 1.5,
        "mean_days": 4.0,
        "median_days": 2.0,
    }
    # Three conversions (A, B, C: 3, 1 and 0 touches): the median is still a float, as with four.
    odd = await get(gw, "/api/attribution/paths", since="2026-11-01", until="2026-11-11")
    assert odd["summary"]["conversions"] == 3
    assert repr(odd["summary"]["median_touches"]) == "1.0"


async def test_payouts_cpa_revenue_share_and_quarantine(gw: RunningGateway) -> None:
    body = await get(gw, "/api/payouts", model="linear", **PERIOD)
    rows = {(r["creator_id"], r["status"], r["currency"]): r for r in body["rows"]}
    ana = rows["cr_ana", "approve", "EUR"]
    # gold: 10 % of 33.34 credited = 3.334 → 3.33
    assert (ana["tier"], ana["conversions"], ana["value"], ana["payout"]) == ("gold", 0.333334, 33.34, 3.33)
    assert ana["rule"] == "tier gold: 10% of value" and ana["clicks"] == 1
    # standard (the default tier): 5.00 per credited conversion, in each conversion's currency
    assert rows["cr_ben", "approve", "EUR"]["payout"] == 5.0
    assert (rows["cr_ben", "approve", "USD"]["conversions"], rows["cr_ben", "approve", "USD"]["payout"]) == (
        0.5,
        2.5,
    )
    assert rows["cr_ben", "approve", "EUR"]["clicks"] == 2
    assert not any(r["status"] == "quarantined" for r in body["rows"])
    assert body["totals"] == [{"currency": "EUR", "payout": 8.33}, {"currency": "USD", "payout": 2.5}]

    # cr_ben's second click turns out to be a bot: an analyst marks it for review.
    db = await connect(gw.gateway.settings.store_path)
    await db.execute("UPDATE touchpoints SET verdict = 'review' WHERE ts = ?", (iso(at(10)),))
    await db.close()
    body = await get(gw, "/api/payouts", model="linear", **PERIOD)
    rows = {(r["creator_id"], r["status"], r["currency"]): r for r in body["rows"]}
    assert ("cr_ben", "approve", "USD") not in rows  # D's credit all went to the newsletter
    held = rows["cr_ben", "quarantined", "USD"]
    assert (held["clicks"], held["conversions"], held["value"], held["payout"]) == (1, 0.5, 25.0, 0)
    assert rows["cr_ben", "approve", "EUR"]["clicks"] == 1
    assert body["totals"] == [{"currency": "EUR", "payout": 8.33}]
    # Asked to count reviewed traffic, the payout includes it again.
    body = await get(gw, "/api/payouts", model="linear", verdicts="allow,review", **PERIOD)
    assert not any(r["status"] == "quarantined" for r in body["rows"])


async def test_payouts_use_the_configured_model(gw: RunningGateway) -> None:
    body = await get(gw, "/api/payouts", **PERIOD)
    assert body["model"] == "last_touch"
    ana = next(r for r in body["rows"] if r["creator_id"] == "cr_ana")
    assert (ana["value"], ana["payout"]) == (100.0, 10.0)


async def test_a_cpa_and_a_revenue_share_are_rounded_once(start_gateway: Any, upstream_server: Any) -> None:
    """cr_ana earns CPA 1.00 per credited conversion plus 10 % of the credited value. Under
    linear, a third of A: 1.00 * 0.333334 = 0.333334 EUR plus 10 % of 33.34 = 3.334 EUR,
    3.667334 EUR in all, approved as 3.67 (rounding each part apart gave 0.33 + 3.33 = 3.66)."""
    both = PAYOUTS.replace('cr_ana = { tier = "gold" }', 'cr_ana = { tier = "gold", cpa = 1.0 }')
    gw = await start_gateway(await upstream_server(web.Application()), both)
    await gw.gateway.store.write(EVENTS)
    body = await get(gw, "/api/payouts", model="linear", **PERIOD)
    ana = next(r for r in body["rows"] if r["creator_id"] == "cr_ana")
    assert ana["rule"] == "tier gold: CPA 1 (own) + 10% of value"  # its own CPA, the tier's share
    assert (ana["conversions"], ana["value"], ana["payout"]) == (0.333334, 33.34, 3.67)
    assert body["totals"] == [{"currency": "EUR", "payout": 8.67}, {"currency": "USD", "payout": 2.5}]


async def test_a_creator_with_clicks_and_no_credit_adds_no_total(gw: RunningGateway) -> None:
    """cr_cat's link was clicked but nothing converted: the creator is listed with its click
    and nothing to pay, and adds no total (a null-currency total of 0 was a line to approve
    that stood for nothing)."""
    await gw.gateway.store.write([tp("v9", 4, "Affiliates", creator_id="cr_cat")])
    body = await get(gw, "/api/payouts", model="linear", **PERIOD)
    cat = next(r for r in body["rows"] if r["creator_id"] == "cr_cat")
    assert (cat["status"], cat["currency"], cat["clicks"], cat["conversions"], cat["payout"]) == (
        "approve",
        None,
        1,
        0,
        0,
    )
    assert body["totals"] == [{"currency": "EUR", "payout": 8.33}, {"currency": "USD", "payout": 2.5}]


async def override(gw: RunningGateway, touchpoint_id: str, verdict: str) -> None:
    """An analyst's override, through the admin API."""
    body = {"verdict": verdict, "analyst": "maria", "reason": "click farm"}
    url = f"{gw.admin_url}/api/touchpoints/{touchpoint_id}/verdict"
    async with gw.session.post(url, headers=AUTH, json=body) as resp:
        assert resp.status == 200, await resp.text()


async def test_a_closed_period_asked_again_is_computed_from_the_store_as_it_is_now(
    gw: RunningGateway,
) -> None:
    """What the README says of last month's approved figure: nothing is frozen when it is
    approved. The same period asked again reads the store as it is then: a touchpoint dated
    into the period that arrives later takes a conversion's credit from the creator who had
    it, an analyst's override moves a creator's sale to its quarantined row, an erasure
    removes the sale. The download kept at approval is the record of what was approved."""
    totals = {**PERIOD, "format": "csv", "table": "totals"}

    async def approve() -> tuple[dict[str, Any], str]:
        body = await get(gw, "/api/payouts", **PERIOD)  # payouts.model: last_touch
        async with gw.session.get(gw.admin_url + "/api/payouts", headers=AUTH, params=totals) as resp:
            return {
                r["creator_id"]: r["payout"] for r in body["rows"] if r["status"] == "approve"
            }, await resp.text()

    buyer = gw.gateway.keys.user_keys("buyer-a", False)[0]
    await gw.gateway.store.write([bind("laptop", buyer)])  # A's laptop, signed in
    approved = await approve()
    assert approved == ({"cr_ana": 10.0, "cr_ben": 5.0}, "currency,payout\r\nEUR,15.00\r\n")

    # B's sale (cr_ben's only touch the day before) gets a later touch of cr_cat, dated in
    # the period but received after the approval: under last_touch the sale is cr_cat's now.
    await gw.gateway.store.write([tp("v3", 1.5, "Affiliates", creator_id="cr_cat")])
    assert await approve() == ({"cr_ana": 10.0, "cr_ben": 0, "cr_cat": 5.0}, approved[1])

    # An analyst blocks cr_ana's click: A's sale goes to the newsletter, cr_ana's to quarantine.
    click_of_ana = next(
        t for t in (await get(gw, "/api/touchpoints"))["items"] if t["creator_id"] == "cr_ana"
    )
    await override(gw, click_of_ana["id"], "block")
    assert await approve() == ({"cr_ben": 0, "cr_cat": 5.0}, "currency,payout\r\nEUR,5.00\r\n")
    held = await get(gw, "/api/payouts", **PERIOD)
    assert [(r["creator_id"], r["value"]) for r in held["rows"] if r["status"] == "quarantined"] == [
        ("cr_ana", 100.0)
    ]

    # The buyer is erased: the sale and the click are gone, from the quarantined row too.
    async with gw.session.delete(gw.admin_url + "/api/users/buyer-a", headers=AUTH) as resp:
        assert resp.status == 200, await resp.text()
    after = await get(gw, "/api/payouts", **PERIOD)
    assert {r["creator_id"] for r in after["rows"]} == {"cr_ben", "cr_cat"}
    assert after["totals"] == [{"currency": "EUR", "payout": 5.0}]


@pytest.mark.parametrize("model", list(MODELS))
async def test_quarantined_rows_are_what_every_verdict_would_have_earned(
    gw: RunningGateway, model: str
) -> None:
    """An analyst blocks every creator click (the whole Affiliates channel here): the payout
    report lists them apart with what they would have earned had every verdict counted —
    what the same report asked to count every verdict approves. Under data_driven too, whose
    weights (learnt from the accepted journeys alone) no longer know the channel at all."""
    clicks = [t for t in (await get(gw, "/api/touchpoints"))["items"] if t["creator_id"]]
    assert len(clicks) == 3
    for touchpoint in clicks:
        await override(gw, touchpoint["id"], "block")
    held = await get(gw, "/api/payouts", model=model, **PERIOD)
    counted = await get(gw, "/api/payouts", model=model, verdicts="allow,review,block,bot", **PERIOD)
    assert {r["status"] for r in held["rows"]} == {"quarantined"} and held["totals"] == []
    assert {r["status"] for r in counted["rows"]} == {"approve"}
    figures = ("creator_id", "currency", "clicks", "conversions", "value")
    expected = [tuple(r[k] for k in figures) for r in counted["rows"]]
    assert [tuple(r[k] for k in figures) for r in held["rows"]] == expected
    assert all(r["payout"] == 0 for r in held["rows"])


@pytest.mark.parametrize("currency", ["", "EUR"])
async def test_a_cpa_on_sign_ups_is_paid_in_payouts_currency(
    start_gateway: Any, upstream_server: Any, currency: str
) -> None:
    """A sign-up carries no value and no currency: its CPA used to be a row, and a total, of
    no currency. With ``payouts.currency`` it is paid in that currency, beside the creator's
    purchases in it; without, it stays apart, as before."""
    toml = PAYOUTS + (f'currency = "{currency}"\n' if currency else "")
    gw = await start_gateway(await upstream_server(web.Application()), toml)
    signup = Conversion(
        new_id(int(at(2).timestamp() * 1000)), iso(at(2)), "n", "signup", "s1", "v7", None, None, None
    )
    await gw.gateway.store.write(
        [tp("v7", 1, "Affiliates", creator_id="cr_cy"), signup, conversion(3, 20.00, "v7")]
    )
    body = await get(gw, "/api/payouts", model="last_touch", **PERIOD)
    rows = {r["currency"]: (r["conversions"], r["value"], r["payout"]) for r in body["rows"]}
    if currency:
        assert rows == {"EUR": (2, 20.0, 10.0)}
        assert body["totals"] == [{"currency": "EUR", "payout": 10.0}]
    else:
        assert rows == {None: (1, 0, 5.0), "EUR": (1, 20.0, 5.0)}


async def test_a_cpa_per_currency_pays_each_currency_its_own_amount(
    start_gateway: Any, upstream_server: Any
) -> None:
    """A CPA of one amount is paid in the conversion's currency, whichever it is: a deal of 5
    per sale paid 5 yen for a sale in yen. A CPA per currency pays each its own amount, and
    nothing in a currency it does not name, each row's ``rule`` saying which; a sign-up is paid
    in ``payouts.currency``'s."""
    toml = (
        "[payouts]\ndefault_tier = 'standard'\ncurrency = 'EUR'\n"
        "tiers = { standard = { cpa = { EUR = 5.0, JPY = 800 } } }\n"
        "creators = { cr_own = { cpa = { EUR = 7.5 }, revenue_share = 0.1 } }\n"
    )
    gw = await start_gateway(await upstream_server(web.Application()), toml)
    signup = Conversion(
        new_id(int(at(4).timestamp() * 1000)), iso(at(4)), "n", "signup", "s1", "va", None, None, None
    )
    await gw.gateway.store.write(
        [
            tp("va", 1, "Affiliates", creator_id="cr_cy"),
            conversion(2, 20.00, "va"),  # EUR
            conversion(3, 3000, "va", "JPY"),
            conversion(3.5, 9.99, "va", "GBP"),
            signup,
            conversion(5, 30.00, "va", None),  # a value of no currency: no CPA in the table
            tp("vb", 1, "Affiliates", creator_id="cr_own"),
            conversion(2, 100.00, "vb", "JPY"),
            tp("vc", 1, "Affiliates", creator_id="cr_idle"),
        ]
    )
    body = await get(gw, "/api/payouts", model="last_touch", **PERIOD)
    rows = {
        (r["creator_id"], r["currency"]): (r["rule"], r["conversions"], r["payout"]) for r in body["rows"]
    }
    assert rows == {
        ("cr_cy", None): ("tier standard: no CPA without a currency (CPA in EUR, JPY)", 1, 0),
        ("cr_cy", "EUR"): ("tier standard: CPA 5 EUR", 2, 10.0),  # the sale and the sign-up
        ("cr_cy", "GBP"): ("tier standard: no CPA in GBP (CPA in EUR, JPY)", 1, 0.0),
        ("cr_cy", "JPY"): ("tier standard: CPA 800 JPY", 1, 800),
        ("cr_idle", None): ("tier standard: CPA 5 EUR / 800 JPY", 0, 0),
        ("cr_own", "JPY"): ("tier standard: no CPA in JPY (CPA in EUR) (own) + 10% of value (own)", 1, 10),
    }
    assert body["totals"] == [
        {"currency": None, "payout": 0},
        {"currency": "EUR", "payout": 10.0},
        {"currency": "GBP", "payout": 0.0},
        {"currency": "JPY", "payout": 810},
    ]


async def test_a_sign_up_is_paid_in_payouts_currency_beside_a_value_of_no_currency(
    start_gateway: Any, upstream_server: Any
) -> None:
    """Each sign-up is paid in ``payouts.currency``, whatever else the creator earned: a
    conversion with a value and no currency (a webhook that sent no ``currency``) stays in a
    row of no currency, and used to pull the sign-up's CPA into that row with it (the
    currency was chosen per creator's sum, not per conversion). Under linear, that valued
    conversion's share of one cent (0.01 split three ways: 1, 0 and 0 minor units) must not
    move either: only conversions without a value are sign-ups."""
    gw = await start_gateway(await upstream_server(web.Application()), PAYOUTS + 'currency = "EUR"\n')

    def bare(days: float, name: str, value: float | None, visitor: str = "v8") -> Conversion:
        cid = new_id(int(at(days).timestamp() * 1000))
        return Conversion(cid, iso(at(days)), "n", name, "k:" + cid, visitor, None, value, None)

    await gw.gateway.store.write(
        [
            tp("v8", 1, "Affiliates", creator_id="cr_dee"),
            bare(2, "signup", None),
            bare(3, "purchase", 10.00),
            tp("v9", 1, "Email", source="newsletter", medium="email"),
            tp("v9", 2, "Affiliates", creator_id="cr_eli"),
            tp("v9", 3, "Affiliates", creator_id="cr_fay"),
            bare(4, "purchase", 0.01, "v9"),
        ]
    )
    body = await get(gw, "/api/payouts", model="last_touch", **PERIOD)
    rows = {
        (r["creator_id"], r["currency"]): (r["conversions"], r["value"], r["payout"]) for r in body["rows"]
    }
    assert rows["cr_dee", "EUR"] == (1, 0, 5.0)
    assert rows["cr_dee", None] == (1, 10.0, 5.0)
    body = await get(gw, "/api/payouts", model="linear", conversion="purchase", **PERIOD)
    currencies = {(r["creator_id"], r["currency"]) for r in body["rows"]}
    assert ("cr_eli", "EUR") not in currencies and ("cr_fay", "EUR") not in currencies
    assert {c for _, c in currencies} == {None}


def test_payouts_currency_is_checked_naming_its_key() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(None, text='[payouts]\ncurrency = "euro"\n', environ=ENV)
    assert err.value.problems == [
        "payouts.currency: expected a 3-letter ISO 4217 code like \"EUR\", got 'euro'"
    ]


@pytest.mark.parametrize(
    ("path", "params", "accept", "kind"),
    [
        ("/api/attribution", {"format": "csv", "model": "all"}, None, "csv"),
        ("/api/attribution/timeseries", {}, "text/csv", "csv"),
        ("/api/attribution/paths", {"format": "ndjson"}, None, "ndjson"),
        ("/api/payouts", {}, "application/x-ndjson", "ndjson"),
    ],
)
async def test_exports(
    gw: RunningGateway, path: str, params: dict[str, str], accept: str | None, kind: str
) -> None:
    as_json = await get(gw, path, **PERIOD, **{k: v for k, v in params.items() if k != "format"})
    headers = {**AUTH, **({"Accept": accept} if accept else {})}
    async with gw.session.get(gw.admin_url + path, headers=headers, params={**PERIOD, **params}) as resp:
        assert resp.status == 200
        assert resp.content_type == ("text/csv" if kind == "csv" else "application/x-ndjson")
        disposition = resp.headers["Content-Disposition"]
        assert disposition.startswith('attachment; filename="') and disposition.endswith(f'.{kind}"')
        assert "from-2026-11-01-to-2026-11-30" in disposition
        text = await resp.text()
    assert as_json["population"] is None
    if kind == "csv":
        rows = list(csv.reader(io.StringIO(text)))
        assert rows[0] == as_json["columns"]
        assert len(rows) == 1 + len(as_json["rows"])
        for line, row in zip(rows[1:], as_json["rows"], strict=True):
            assert line == [_csv_cell(row[c], cell) for c, cell in zip(as_json["columns"], line, strict=True)]
    else:
        assert [json.loads(line) for line in text.splitlines()] == as_json["rows"]


@pytest.mark.parametrize(
    ("path", "params", "which", "name"),
    [
        ("/api/payouts", {}, "totals", "payouts-totals-last_touch-from-2026-11-01-to-2026-11-30"),
        (
            "/api/attribution",
            {"model": "all"},
            "totals",
            "attribution-totals-all-channel-from-2026-11-01-to-2026-11-30",
        ),
        (
            "/api/attribution/timeseries",
            {},
            "totals",
            "timeseries-totals-linear-channel-from-2026-11-01-to-2026-11-30",
        ),
        ("/api/attribution/paths", {}, "summary", "paths-summary-from-2026-11-01-to-2026-11-30"),
    ],
)
@pytest.mark.parametrize("kind", ["csv", "ndjson"])
async def test_totals_and_the_paths_summary_download_as_tables_of_their_own(
    gw: RunningGateway, path: str, params: dict[str, str], which: str, name: str, kind: str
) -> None:
    """What the JSON carries beside the rows (the totals per currency a partner manager
    approves, the paths report's means and medians) was in no download: ``table=``."""
    as_json = await get(gw, path, **PERIOD, **params)
    query = {**PERIOD, **params, "format": kind, "table": which}
    async with gw.session.get(gw.admin_url + path, headers=AUTH, params=query) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Disposition"] == f'attachment; filename="{name}.{kind}"'
        text = await resp.text()
    expected = as_json[which] if which == "totals" else [as_json["summary"]]
    assert expected  # the report has some to download
    if kind == "ndjson":
        assert [json.loads(line) for line in text.splitlines()] == expected
    else:
        rows = list(csv.reader(io.StringIO(text)))
        assert rows[0] == list(expected[0])
        for line, row in zip(rows[1:], expected, strict=True):
            assert line == [_csv_cell(row[c], cell) for c, cell in zip(rows[0], line, strict=True)]


async def test_a_payout_total_to_approve_reads_in_the_csv(gw: RunningGateway) -> None:
    query = {**PERIOD, "format": "csv", "table": "totals"}
    async with gw.session.get(gw.admin_url + "/api/payouts", headers=AUTH, params=query) as resp:
        assert await resp.text() == "currency,payout\r\nEUR,15.00\r\n"  # 10.00 of cr_ana's, 5.00 of cr_ben's


async def test_gateway_report_downloads_the_totals_and_summary_too(gw: RunningGateway) -> None:
    for flags, path, which in [
        ((), "/api/attribution", "totals"),
        (("--paths",), "/api/attribution/paths", "summary"),
    ]:
        as_json = await get(gw, path, **PERIOD)
        args = ("--since", PERIOD["since"], "--until", PERIOD["until"], *flags, "--format", "ndjson")
        out = await gateway_report(gw, "UTC", *args, "--table", which)
        expected = as_json[which] if which == "totals" else [as_json["summary"]]
        assert [json.loads(line) for line in out.splitlines()] == expected and expected
    # A CSV for Excel, as bom=true: the same file after the mark.
    args = ("--since", PERIOD["since"], "--until", PERIOD["until"], "--format", "csv")
    plain, marked = await gateway_report(gw, "UTC", *args), await gateway_report(gw, "UTC", *args, "--bom")
    assert marked == "\ufeff" + plain and plain.startswith("group,currency,")


async def test_a_csv_for_excel_starts_with_a_byte_order_mark_when_asked(gw: RunningGateway) -> None:
    """Excel opens a CSV by a double click in the system's legacy code page: ``café`` read as
    ``cafÃ©``. ``bom=true`` (the dashboard's CSV links) starts it with U+FEFF, which Excel
    takes as UTF-8; without it the file is as before, byte for byte."""
    for path in ("/api/attribution", "/api/attribution/timeseries", "/api/payouts", "/api/fraud"):
        plain = {**PERIOD, "format": "csv"}
        async with gw.session.get(gw.admin_url + path, headers=AUTH, params=plain) as resp:
            assert resp.status == 200
            without = await resp.read()
        async with gw.session.get(gw.admin_url + path, headers=AUTH, params={**plain, "bom": "true"}) as resp:
            assert resp.status == 200 and resp.charset == "utf-8"
            assert await resp.read() == "\ufeff".encode() + without, path
        accepted = {**AUTH, "Accept": "text/csv"}
        async with gw.session.get(
            gw.admin_url + path, headers=accepted, params={**PERIOD, "bom": "true"}
        ) as resp:
            assert (await resp.read()).startswith(b"\xef\xbb\xbf"), path
        assert not without.startswith(b"\xef\xbb\xbf")
        for params, error in (
            (
                {**PERIOD, "format": "ndjson", "bom": "true"},
                "bom: applies to a CSV download, not ndjson (format=csv)",
            ),
            ({**PERIOD, "bom": "true"}, "bom: applies to a CSV download, not json (format=csv)"),
            ({**PERIOD, "format": "csv", "bom": "yes"}, "bom: expected true or false, got 'yes'"),
        ):
            async with gw.session.get(gw.admin_url + path, headers=AUTH, params=params) as resp:
                assert (resp.status, (await resp.json())["error"]) == (400, error), (path, params)


async def test_a_csv_for_a_semicolon_locale_is_separated_as_asked(gw: RunningGateway) -> None:
    """Excel in a locale whose list separator is ``;`` (German, French, Dutch, Italian,
    Spanish) splits a CSV opened by a double click at ``;``: every export, comma-separated,
    was one column there. ``delimiter=semicolon`` (or ``tab``) separates the cells so, the
    same rows: a cell holding the delimiter quoted, a formula still inert, decimals still
    written with a point. Refused, as ``bom``, with another format or another name."""
    await gw.gateway.store.write(
        [
            tp("v9", 20, "Paid Search", source="ads", campaign="=Sale; 20%", creator_id="cr;semi"),
            conversion(21, 12.5, "v9"),
            click(0, "cr;semi", "block", "headless", "datacenter"),
        ]
    )

    async def fetch(path: str, headers: dict[str, str] = AUTH, **params: str) -> tuple[int, bytes]:
        async with gw.session.get(gw.admin_url + path, headers=headers, params={**PERIOD, **params}) as resp:
            return resp.status, await resp.read()

    reports = [
        ("/api/attribution", {"group_by": "campaign"}),
        ("/api/attribution", {"model": "all", "group_by": "creator_id"}),
        ("/api/attribution/timeseries", {"group_by": "creator_id"}),
        ("/api/attribution/paths", {}),
        ("/api/payouts", {}),
        ("/api/fraud", {}),
    ]
    for path, params in reports:
        status, plain = await fetch(path, format="csv", **params)
        assert status == 200
        assert await fetch(path, format="csv", delimiter="comma", **params) == (200, plain), path
        rows = list(csv.reader(io.StringIO(plain.decode())))
        for name, delimiter in (("semicolon", ";"), ("tab", "\t")):
            status, body = await fetch(path, format="csv", delimiter=name, **params)
            assert status == 200, (path, body)
            text = body.decode()
            assert text.split("\r\n")[0] == delimiter.join(rows[0]), (path, text[:80])
            assert list(csv.reader(io.StringIO(text), delimiter=delimiter)) == rows, (path, name)
            if delimiter == ";" and path != "/api/attribution/paths":
                quoted = ('"cr;semi";', '"\'=Sale; 20%";', ';"datacenter: 1; headless: 1"')
                assert any(cell in text for cell in quoted), (path, text)  # a cell holding ";"
        if path == "/api/attribution" and "model" not in params:
            _, body = await fetch(path, format="csv", delimiter="semicolon", **params)
            assert '\r\n"\'=Sale; 20%";EUR;1;12.50\r\n' in body.decode()  # inert, quoted, a point
        if path == "/api/fraud":
            _, body = await fetch(path, format="csv", delimiter="semicolon", bom="true")
            text = body.decode()
            assert text.startswith("\ufeffgroup;clicks;allow;"), text[:40]
            line = '"cr;semi";2;0;0;1;0;1;0.0000;0.0000;0.5000;0.0000;0.5000;2;1;"datacenter: 1; headless: 1"'
            assert line in text.split("\r\n"), text
    # Chosen by Accept, a CSV takes it too.
    status, body = await fetch("/api/payouts", {**AUTH, "Accept": "text/csv"}, delimiter="tab")
    assert status == 200 and body.startswith(b"creator_id\tstatus\t"), body[:40]
    for path, _ in reports:
        for params, error in (
            (
                {"format": "csv", "delimiter": "pipe"},
                "delimiter: expected one of comma, semicolon, tab, got 'pipe'",
            ),
            (
                {"format": "csv", "delimiter": ";"},
                "delimiter: expected one of comma, semicolon, tab, got ';'",
            ),
            (
                {"format": "ndjson", "delimiter": "tab"},
                "delimiter: applies to a CSV download, not ndjson (format=csv)",
            ),
            ({"delimiter": "semicolon"}, "delimiter: applies to a CSV download, not json (format=csv)"),
            # Refused before the report is computed, as a bad bom: before a bad until is even read.
            ({"format": "csv", "delimiter": "Semicolon", "until": "soon"}, "delimiter: expected one of"),
        ):
            status, body = await fetch(path, **params)
            assert status == 400 and json.loads(body)["error"].startswith(error), (path, params, body)
        # The default's own name is harmless with JSON, as bom=false is.
        assert (await fetch(path, delimiter="comma", bom="false"))[0] == 200


async def test_an_export_of_one_conversion_and_population_is_named_after_them(gw: RunningGateway) -> None:
    """Exports of one conversion name or one population used to share the name of the whole
    report's: downloaded side by side, one replaced the other."""
    params = {**PERIOD, "format": "csv", "conversion": 'sign up/"ü"', "population": "cookie"}
    async with gw.session.get(gw.admin_url + "/api/attribution", headers=AUTH, params=params) as resp:
        assert resp.status == 200
        disposition = resp.headers["Content-Disposition"]
    name = "attribution-linear-channel-sign_up-cookie-from-2026-11-01-to-2026-11-30.csv"
    assert disposition == f'attachment; filename="{name}"'
    body = await get(gw, "/api/attribution", **{k: v for k, v in params.items() if k != "format"})
    assert (body["conversion"], body["population"]) == ('sign up/"ü"', "cookie")
    # Counting quarantined touches too: named so (it had the default's name).
    for path, name in [
        ("/api/attribution", "attribution-linear-channel-allow+review-from-2026-11-01-to-2026-11-30.csv"),
        ("/api/payouts", "payouts-last_touch-allow+block+review-from-2026-11-01-to-2026-11-30.csv"),
    ]:
        verdicts = "allow,review" if path == "/api/attribution" else "review,block,allow"
        params = {**PERIOD, "format": "csv", "verdicts": verdicts}
        async with gw.session.get(gw.admin_url + path, headers=AUTH, params=params) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Disposition"] == f'attachment; filename="{name}"'


@pytest.mark.parametrize(
    ("path", "stem"),
    [
        ("/api/attribution", "attribution-linear-channel-from-2026-11-01-to-2026-11-30"),
        ("/api/attribution/timeseries", "timeseries-linear-channel-from-2026-11-01-to-2026-11-30"),
        ("/api/attribution/paths", "paths-from-2026-11-01-to-2026-11-30"),
        ("/api/payouts", "payouts-last_touch-from-2026-11-01-to-2026-11-30"),
        ("/api/fraud", "fraud-creator_id-from-2026-11-01-to-2026-11-30"),
    ],
)
async def test_a_csv_of_another_delimiter_is_named_after_it(gw: RunningGateway, path: str, stem: str) -> None:
    """The dashboard's ``CSV`` and ``CSV (;)`` links downloaded one report under one name: the
    second was saved as ``… (1).csv`` beside the first, which told them apart by nothing."""
    names = {}
    for delimiter in ("comma", "semicolon", "tab"):
        params = {**PERIOD, "format": "csv", "delimiter": delimiter}
        async with gw.session.get(gw.admin_url + path, headers=AUTH, params=params) as resp:
            assert resp.status == 200, (path, delimiter)
            names[delimiter] = resp.headers["Content-Disposition"]
    assert names == {
        "comma": f'attachment; filename="{stem}.csv"',  # as before
        "semicolon": f'attachment; filename="{stem}-semicolon.csv"',
        "tab": f'attachment; filename="{stem}-tab.csv"',
    }


def _csv_cell(value: Any, cell: str) -> str:
    """The CSV cell a JSON value should be: empty for null, exact decimals for numbers, text
    a spreadsheet would read as a formula behind a ``'``."""
    if value is None:
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        assert float(cell) == value, (cell, value)
        return cell
    return "'" + value if value.startswith(("=", "+", "-", "@", "\t", "\r")) else str(value)


BILLING = "b" * 32
SENDER = '\n[[sources]]\nname = "billing"\nsecrets = ["env:BILLING_SECRET"]\n'
LANDING = {
    "utm_source": '=HYPERLINK("http://evil","x")',
    "utm_campaign": "=1+2",
    "creator_id": "@SUM(A1)",
}
SENT = {"creator_id": '=cmd|"/c calc"!A1', "source": "+sent", "campaign": "-1"}


async def test_csv_keeps_formulas_from_visitors_and_senders_inert(
    start_gateway: Any, upstream_server: Any
) -> None:
    """Values a visitor (a landing's parameters) or a sender (a webhook's fields) chose reach
    the reports; a spreadsheet opening the CSV must not run them as formulas: text starting
    with =, +, -, @, a tab or a carriage return gets a leading ', numbers stay numbers, and
    JSON and NDJSON keep every value exact."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<html>shop</html>", content_type="text/html")

    site = web.Application()
    site.router.add_get("/", page)
    gw: RunningGateway = await start_gateway(
        await upstream_server(site), PAYOUTS + SENDER, {"BILLING_SECRET": BILLING}
    )
    async with gw.session.get(gw.url + "/", params=LANDING, headers=BROWSER) as resp:
        assert resp.status == 200
        cookie = resp.cookies["gw_vid"].value
    # The same visitor converts, the sender naming a creator, source and campaign of its own.
    event = {"type": "conversion", "event_id": "e1", "visitor_id": cookie, "value": 12.5, "currency": "EUR"}
    body = json.dumps(event | SENT).encode()
    async with gw.session.post(gw.url + "/_gw/events", data=body, headers=signed(body, BILLING)) as resp:
        assert resp.status == 202, await resp.text()
    today = datetime.now(UTC).date()
    period = {"since": str(today - timedelta(days=1)), "until": str(today + timedelta(days=2))}
    reports = [
        ("/api/payouts", {}, "creator_id", {LANDING["creator_id"], SENT["creator_id"]}),
        (
            "/api/attribution",
            {"group_by": "creator_id"},
            "group",
            {LANDING["creator_id"], SENT["creator_id"]},
        ),
        (
            "/api/attribution",
            {"group_by": "source"},
            "group",
            {LANDING["utm_source"].lower(), SENT["source"]},
        ),
        ("/api/attribution/timeseries", {"group_by": "campaign", "model": "all"}, "group", {"=1+2", "-1"}),
    ]
    for path, params, column, chosen in reports:
        as_json = await get(gw, path, **period, **params)
        assert {row[column] for row in as_json["rows"]} == chosen  # exact in JSON
        async with gw.session.get(
            gw.admin_url + path, headers=AUTH, params={**period, **params, "format": "csv"}
        ) as resp:
            rows = list(csv.reader(io.StringIO(await resp.text())))
        assert rows[0] == as_json["columns"] and len(rows) == 1 + len(as_json["rows"])
        assert {row[rows[0].index(column)] for row in rows[1:]} == {"'" + text for text in chosen}
        for line, row in zip(rows[1:], as_json["rows"], strict=True):
            assert line == [_csv_cell(row[c], cell) for c, cell in zip(as_json["columns"], line, strict=True)]
        async with gw.session.get(
            gw.admin_url + path, headers=AUTH, params={**period, **params, "format": "ndjson"}
        ) as resp:
            assert [json.loads(line) for line in (await resp.text()).splitlines()] == as_json["rows"]


NUMERIC_IDS = {"0042": "gold", "7123456789012345678": "gold", "2024": "standard"}


async def test_a_creator_id_of_digits_reads_in_the_payout_csv_as_the_link_carried_it(
    start_gateway: Any, upstream_server: Any
) -> None:
    """Affiliate networks and platforms number their creators: ``0042``, a TikTok ID of 19
    digits. A spreadsheet opening the payout CSV read those cells as numbers, showing ``42``
    and ``7.12345678901235E+18`` (its last digits lost): the partner manager approving by ID
    could not tell which creator a row paid. They get a leading ', as formulas do; ``2024`` is
    shown as written and stays as it is, and JSON and NDJSON keep every ID exact."""
    site = web.Application()
    creators = ", ".join(f'"{cid}" = {{ tier = "{tier}" }}' for cid, tier in NUMERIC_IDS.items())
    rules = PAYOUTS.replace('creators = { cr_ana = { tier = "gold" } }', f"creators = {{ {creators} }}")
    gw: RunningGateway = await start_gateway(
        await upstream_server(site), rules + SENDER, {"BILLING_SECRET": BILLING}
    )
    for n, creator in enumerate(NUMERIC_IDS):
        event = {"type": "conversion", "event_id": f"e{n}", "visitor_id": f"v{n}", "creator_id": creator}
        body = json.dumps(event | {"value": 100.0, "currency": "EUR"}).encode()
        async with gw.session.post(gw.url + "/_gw/events", data=body, headers=signed(body, BILLING)) as resp:
            assert resp.status == 202, await resp.text()
    today = datetime.now(UTC).date()
    period = {"since": str(today - timedelta(days=1)), "until": str(today + timedelta(days=2))}
    as_json = await get(gw, "/api/payouts", **period)
    paid = {row["creator_id"]: (row["tier"], row["payout"]) for row in as_json["rows"]}
    assert paid == {"0042": ("gold", 10.0), "7123456789012345678": ("gold", 10.0), "2024": ("standard", 5.0)}
    async with gw.session.get(
        gw.admin_url + "/api/payouts", headers=AUTH, params={**period, "format": "csv"}
    ) as resp:
        rows = list(csv.reader(io.StringIO(await resp.text())))
    assert {row[0]: row[-1] for row in rows[1:]} == {
        "'0042": "10.00",
        "'7123456789012345678": "10.00",
        "2024": "5.00",
    }
    async with gw.session.get(
        gw.admin_url + "/api/payouts", headers=AUTH, params={**period, "format": "ndjson"}
    ) as resp:
        assert [json.loads(line) for line in (await resp.text()).splitlines()] == as_json["rows"]


@pytest.mark.parametrize(
    ("path", "params", "named"),
    [
        ("/api/attribution", {"model": "best"}, "model:"),
        ("/api/attribution", {"group_by": "country"}, "group_by:"),
        ("/api/attribution", {"since": "yesterday"}, "since:"),
        ("/api/attribution", {"until": "2026-13-01"}, "until:"),
        (
            "/api/attribution",
            {"until": "9999-12-31T23:59:59Z"},
            "until: expected an ISO 8601 date or date-time from 1970-01-01T00:00Z to 9999-12-31T00:00Z",
        ),
        ("/api/attribution", {"since": "2026-12-01", "until": "2026-11-01"}, "since:"),
        ("/api/attribution", {"format": "xml"}, "format:"),
        ("/api/attribution", {"verdicts": "allow,Bad Verdict"}, "verdicts:"),
        (
            "/api/attribution",
            {"verdicts": "allow,nope"},
            "verdicts: expected comma-separated verdicts among allow,",
        ),
        ("/api/payouts", {"verdicts": "allow,"}, "verdicts: an empty verdict name (a stray comma?)"),
        # Without allow, ordinary traffic was listed among the quarantined rows, and the approved
        # rows paid the reviewed traffic alone (until 2026-12-07).
        (
            "/api/payouts",
            {"verdicts": "review"},
            "verdicts: a payout report pays the allowed traffic and lists the rest apart; name allow"
            " with the verdicts that count too (verdicts=allow,review), got 'review'",
        ),
        ("/api/payouts", {"verdicts": "review,block,bot"}, "verdicts: a payout report pays the allowed"),
        (  # as the downloads' names write them (…-allow+review-…): the + arrives as a space
            "/api/attribution",
            {"verdicts": "allow review"},
            "verdicts: expected comma-separated verdicts among allow, review, block, bot, got 'allow review';"
            " separate them with commas: allow,review (a + in a query is a space)",
        ),
        ("/api/attribution", {"conversion": ""}, "conversion:"),
        ("/api/attribution", {"limit": "3"}, "'limit'"),
        ("/api/attribution/timeseries", {"model": "nope"}, "model:"),
        ("/api/attribution/paths", {"model": "linear"}, "'model'"),
        # As gateway report --payouts --model all says it: "expected one of …, got 'all'" read as
        # if all were no model at all (until 2026-12-07).
        ("/api/payouts", {"model": "all"}, "model: the payout report uses one model, not all"),
        ("/api/payouts", {"model": "best"}, "model: expected one of first_touch,"),
        ("/api/payouts", {"group_by": "channel"}, "'group_by'"),
        (
            "/api/attribution",
            {"table": "summary", "format": "csv"},
            "table: expected one of rows, totals for the attribution report, got 'summary'",
        ),
        (
            "/api/attribution/paths",
            {"table": "totals", "format": "csv"},
            "table: expected one of rows, summary for the paths report, got 'totals'",
        ),
        (
            "/api/payouts",
            {"table": "totals"},
            "table: applies to a CSV or NDJSON download (format=csv or ndjson), not json; the JSON answer"
            " carries totals beside the rows",
        ),
        ("/api/fraud", {"table": "totals", "format": "csv"}, "unknown query parameter 'table'"),
    ],
)
async def test_bad_parameters_are_400_naming_them(
    gw: RunningGateway, path: str, params: dict[str, str], named: str
) -> None:
    body = await get(gw, path, 400, **params)
    assert body["ok"] is False and named in body["error"], body


@pytest.mark.parametrize("given", [" purchase", "purchase ", "\u00a0purchase", "purchase\u3000"])
async def test_a_conversion_name_with_spaces_around_it_is_a_400_not_an_empty_report(
    gw: RunningGateway, given: str
) -> None:
    """``conversion=%20purchase`` answered an empty report, which reads as "no purchases": no
    conversion is recorded with spaces around its name (a webhook's is trimmed, a rule's
    refused with them), so the name is refused, naming the parameter."""
    expected = (
        "conversion: expected a conversion name (1..200 printable characters, no spaces around"
        f" them, as conversions are recorded), got {given!r}"
    )
    for path in ("/api/attribution", "/api/attribution/timeseries", "/api/attribution/paths", "/api/payouts"):
        body = await get(gw, path, 400, **PERIOD, conversion=given)
        assert (body["ok"], body["status"], body["error"]) == (False, 400, expected), path
    assert (await get(gw, "/api/attribution", **PERIOD, conversion="purchase"))["rows"]


async def test_verdicts_given_twice_or_spaced_count_once_and_are_said_once(gw: RunningGateway) -> None:
    """The verdicts are a set: in any order, spaces around a name dropped, a name given twice
    counted once, and the answer and the download's name list each once, sorted (README,
    Report endpoints)."""
    for path in ("/api/attribution", "/api/payouts"):
        plain = await get(gw, path, **PERIOD, verdicts="allow,review")
        again = await get(gw, path, **PERIOD, verdicts="review, allow,allow ")
        assert again["verdicts"] == ["allow", "review"]
        assert again["rows"] == plain["rows"]
    async with gw.session.get(
        gw.admin_url + "/api/payouts",
        headers=AUTH,
        params={**PERIOD, "verdicts": "review,allow,review", "format": "csv"},
    ) as resp:
        assert resp.headers["Content-Disposition"] == (
            'attachment; filename="payouts-last_touch-allow+review-from-2026-11-01-to-2026-11-30.csv"'
        )


@pytest.mark.parametrize(
    "path", ["/api/attribution", "/api/attribution/timeseries", "/api/attribution/paths", "/api/payouts"]
)
async def test_a_report_limited_to_a_name_none_of_the_period_has_names_those_recorded(
    gw: RunningGateway, path: str
) -> None:
    """A conversion name none of the period's conversions has (a typo) answered an empty report,
    or for payouts every creator clicked with a payout of 0, with nothing saying why, where
    `gateway report` names the ones recorded (until 2026-12-07). The JSON names them too, most
    frequent first, as the dashboard's summary does: `conversion_names`."""
    typo = await get(gw, path, **PERIOD, conversion="purchse")
    assert typo["conversion_names"] == ["purchase"]
    if path == "/api/payouts":  # the creators clicked are listed, credited nothing
        assert [(r["creator_id"], r["status"], r["payout"]) for r in typo["rows"]] == [
            ("cr_ana", "approve", 0),
            ("cr_ben", "approve", 0),
        ]
        assert typo["totals"] == []
    # A population none of them reached alike (payouts: no creator clicked in it, no rows); a
    # report that counts a conversion names none.
    if path != "/api/payouts":
        assert (await get(gw, path, **PERIOD, population="no_consent"))["conversion_names"] == ["purchase"]
    assert "conversion_names" not in await get(gw, path, **PERIOD, conversion="purchase")
    assert "conversion_names" not in await get(gw, path, **PERIOD)


async def test_a_period_the_wrong_way_round_reads_alike_everywhere(gw: RunningGateway) -> None:
    """One message for since >= until, on the reports as on the listings, its times written as
    every answer writes a timestamp (a touchpoint's ``ts``, a listing's ``since``)."""
    expected = "since: must be before until (2026-12-01T00:00:00.000000Z >= 2026-11-01T00:00:00.000000Z)"
    for path in (
        "/api/attribution",
        "/api/attribution/timeseries",
        "/api/attribution/paths",
        "/api/payouts",
        "/api/touchpoints",
        "/api/fraud",
        "/api/review",
    ):
        body = await gw.api(path, since="2026-12-01", until="2026-11-01")
        assert (body["status"], body["error"]) == (400, expected), path
    touchpoint = (await gw.api("/api/touchpoints", limit="1"))["items"][0]
    assert touchpoint["ts"] == "2026-11-01T00:00:00.000000Z"  # the form the message uses


async def test_the_default_since_stays_in_range(gw: RunningGateway) -> None:
    body = await get(gw, "/api/attribution", 200, until="1970-01-05")
    assert body["since"] == "1970-01-01T00:00:00Z", body
    body = await get(gw, "/api/attribution", 400, until="1970-01-01")  # names what was given
    assert body["error"].startswith("until: must be after 1970-01-01"), body


async def test_reports_need_the_token(gw: RunningGateway) -> None:
    for path in ("/api/attribution", "/api/attribution/timeseries", "/api/attribution/paths", "/api/payouts"):
        async with gw.session.get(gw.admin_url + path) as resp:
            assert resp.status == 401


async def test_population_filter_and_its_errors(gw: RunningGateway) -> None:
    """``population`` credits one population's touchpoints (every seeded landing is a cookie
    visitor's), and an unknown population is a 400 naming the parameter."""
    everyone = await get(gw, "/api/attribution", model="linear", **PERIOD)
    cookie = await get(gw, "/api/attribution", model="linear", population="cookie", **PERIOD)
    # The conversion with no touchpoint at all (credited to Direct for everyone) has none of
    # the cookie population's either: it is left out.
    assert cookie["rows"] == [r for r in everyone["rows"] if r["group"] != "Direct"] != []
    nobody = await get(gw, "/api/attribution", model="linear", population="cookieless", **PERIOD)
    assert nobody["rows"] == []
    bad = await get(gw, "/api/attribution", 400, population="martians")
    assert bad["error"].startswith("population:")
    # The dashboard's populations name `aggregate`: a report cannot credit it, and says why.
    aggregate = await get(gw, "/api/attribution", 400, population="aggregate")
    assert aggregate["error"].startswith(
        "population: the aggregate population (Sec-GPC, DNT) has no touchpoints to credit"
    ), aggregate
    # The dashboard's summary takes the same population and says the same (until 2026-12-06 it
    # said only "expected one of cookie, cookieless, no_consent", for the name its page shows).
    dashboard = await get(gw, "/api/dashboard/summary", 400, population="aggregate")
    assert dashboard["error"] == aggregate["error"], dashboard
    unknown = await get(gw, "/api/dashboard/summary", 400, population="martians")
    assert unknown["error"] == bad["error"], unknown


async def test_a_population_keeps_the_conversions_its_touches_reach_whatever_their_verdict_or_tier(
    start_gateway: Any, upstream_server: Any
) -> None:
    """Which conversions a population's report holds is decided by its touches inside the
    widest lookback window, whatever their verdict or tier (README "Report endpoints",
    `population`): one reached only by a blocked touch, or by a touch older than its own
    tier's window, is counted whole and credited to no touch (Direct), as the dashboard's
    *Conversions* card counts it."""
    gw = await start_gateway(await upstream_server(web.Application()))
    await gw.gateway.store.write(
        [
            # A retargeting touch (tier conversion: 7 days) 10 days before: inside 30 days.
            tp("old", 0, "Email", campaign="spring-retarget", consent="no_consent"),
            conversion(10, 5.00, "old"),
            tp("blocked", 11, "Email", campaign="weekly", consent="no_consent", verdict="block"),
            conversion(12, 3.00, "blocked"),
        ]
    )
    body = await get(gw, "/api/attribution", model="linear", population="no_consent", **PERIOD)
    assert table(body, "conversions", "value") == {("Direct", "EUR"): (2, 8.00)}
    everyone = await get(gw, "/api/attribution", model="linear", **PERIOD)
    assert everyone["totals"] == body["totals"]
    assert (await get(gw, "/api/attribution", model="linear", population="cookie", **PERIOD))["rows"] == []


@pytest.mark.parametrize(
    ("accept", "kind"),
    [
        ("text/csv", "csv"),
        ("text/csv;q=0", "json"),  # "not CSV"
        ("text/csv;q=0.5, application/json", "json"),
        ("application/json;q=0.9, text/csv", "csv"),
        ("application/x-ndjson;q=0.8, text/csv;q=0.8", "ndjson"),  # equals: the first listed
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "json"),  # a browser
        ("TEXT/CSV; charset=utf-8; q=0.7, application/x-ndjson;q=0.71", "ndjson"),
        ("text/csv;q=abc", "json"),  # a malformed q counts as 0
        ("text/csv;q=\u00b2", "json"),  # so does a digit Python reads but float() does not
        ("text/*", "csv"),  # a range: the most specific that names a format gives its q
        ("text/*;q=1, application/json;q=0.1", "csv"),
        ("*/*;q=0.1, text/csv;q=0.05", "json"),
        ("text/csv;q=0, */*", "json"),
    ],
)
async def test_the_accept_header_s_preference_decides_the_format(
    gw: RunningGateway, accept: str, kind: str
) -> None:
    headers = {**AUTH, "Accept": accept}
    async with gw.session.get(gw.admin_url + "/api/attribution", headers=headers, params=PERIOD) as resp:
        assert resp.status == 200
        media = {"json": "application/json", "csv": "text/csv", "ndjson": "application/x-ndjson"}
        assert resp.content_type == media[kind]
        assert resp.headers["Vary"] == "Accept"  # caches keep one answer per Accept


async def test_accept_headers_on_several_lines_are_read_as_one(gw: RunningGateway) -> None:
    """RFC 9110 5.3: two Accept lines mean their values joined by commas; a format= choice
    does not depend on Accept, so it does not vary with it."""
    headers = [
        ("Authorization", AUTH["Authorization"]),
        ("Accept", "application/json;q=0.5"),
        ("Accept", "text/csv"),
    ]
    async with gw.session.get(gw.admin_url + "/api/attribution", headers=headers, params=PERIOD) as resp:
        assert resp.content_type == "text/csv"
    async with gw.session.get(
        gw.admin_url + "/api/attribution", headers=AUTH, params={**PERIOD, "format": "csv"}
    ) as resp:
        assert resp.content_type == "text/csv" and "Vary" not in resp.headers


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/api/attribution", "model=linear&model=time_decay"),
        ("/api/attribution/timeseries", "since=2026-11-01&until=2026-12-01&since=2026-11-02"),
        ("/api/payouts", "format=csv&format=json"),
        ("/api/touchpoints", "limit=1&limit=2"),
        ("/api/dashboard/summary", "model=linear&model=last_touch"),
    ],
)
async def test_a_parameter_given_twice_is_400_naming_it(gw: RunningGateway, path: str, query: str) -> None:
    """Neither value is silently dropped: which report was meant?"""
    name = query.split("=", 1)[0]
    async with gw.session.get(f"{gw.admin_url}{path}?{query}", headers=AUTH) as resp:
        body = await resp.json()
        assert resp.status == 400, body
    assert body["error"] == f"{name}: given 2 times; give each query parameter once"


WORKED = {
    "Paid Social": {"source": "facebook", "medium": "paid_social"},
    "Email": {"source": "newsletter", "medium": "email"},
    "Organic Search": {"source": "google", "medium": "organic"},
    "Direct": {"source": "(direct)"},
}


OTHERS = [
    (["Paid Social", "Organic Search"], False),
    (["Email", "Direct"], True),
    (["Organic Search"], False),
    (["Paid Social"], False),
    (["Paid Social", "Email"], True),
]
"""The worked example's five other journeys of the period (two converting, a 1 USD signup each)."""


async def worked_example(start_gateway: Any, upstream_server: Any) -> RunningGateway:
    """A running gateway that the README's worked example reached as senders' signed events:
    two devices bound to one user, the four touches, the 100.00 EUR order, and the period's
    ``OTHERS``."""
    gw: RunningGateway = await start_gateway(
        await upstream_server(web.Application()), SENDER, {"BILLING_SECRET": BILLING}
    )
    sent = iter(range(100))

    async def send(**event: Any) -> None:
        body = json.dumps({"event_id": f"w{next(sent)}", **event}).encode()
        async with gw.session.post(gw.url + "/_gw/events", data=body, headers=signed(body, BILLING)) as resp:
            assert resp.status == 202, await resp.text()

    for device in ("phone-0001", "laptop-0001"):
        await send(type="identify", visitor_id=device, user_id="u1", timestamp="2026-11-01T00:00:00Z")
    for device, when, channel in [
        ("phone-0001", "2026-11-01T12:00:00Z", "Paid Social"),
        ("laptop-0001", "2026-11-04T09:00:00Z", "Email"),
        ("laptop-0001", "2026-11-08T20:00:00Z", "Organic Search"),
        ("laptop-0001", "2026-11-10T11:00:00Z", "Direct"),
    ]:
        await send(type="touchpoint", visitor_id=device, timestamp=when, **WORKED[channel])
    order = {"name": "purchase", "value": 100, "currency": "EUR", "order_id": "W1"}
    await send(type="conversion", visitor_id="laptop-0001", timestamp="2026-11-10T12:00:00Z", **order)
    for n, (journey, converted) in enumerate(OTHERS):
        for day, channel in enumerate(journey, start=2):
            await send(
                type="touchpoint", user_id=f"o{n}", timestamp=f"2026-11-0{day}T10:00:00Z", **WORKED[channel]
            )
        if converted:
            sale = {"name": "signup", "value": 1, "currency": "USD", "order_id": f"O{n}"}
            await send(type="conversion", user_id=f"o{n}", timestamp="2026-11-09T10:00:00Z", **sale)
    return gw


async def test_the_readme_worked_example_through_the_gateway(
    start_gateway: Any, upstream_server: Any
) -> None:
    """The README's worked example as senders' signed events reach a running gateway
    (``worked_example``). Every model's EUR credit is the README's table, ``data_driven``'s
    column included; asked for one conversion name, the journeys that ended only in another
    count as not converting."""
    gw = await worked_example(start_gateway, upstream_server)
    readme = await asyncio.to_thread((ROOT / "README.md").read_text)
    section = readme[readme.index("#### Worked example") :]
    expected = dict(re.findall(r"^\| `(\w+)` \| ([\d. |]+) \|$", section, re.MULTILINE))
    assert set(expected) == set(MODELS)
    body = await get(gw, "/api/attribution", model="all", **PERIOD)
    eur = {r["group"]: r for r in body["rows"] if r["currency"] == "EUR"}
    for model, cells in expected.items():
        shown = [Decimal(cell.strip()) for cell in cells.split("|")]
        assert [Decimal(str(eur[c][f"{model}_value"])) for c in WORKED] == shown, model

    # Only the purchase: the two signups' journeys are journeys that did not convert to it.
    alone = markov_weights([(journey, False) for journey, _ in OTHERS] + [(list(WORKED), True)])
    body = await get(gw, "/api/attribution", model="data_driven", conversion="purchase", **PERIOD)
    credited = {r["group"]: r["value"] for r in body["rows"]}
    assert credited == {c: round(100 * alone[c], 2) for c in WORKED}
    readme_column = [Decimal(cell.strip()) for cell in expected["data_driven"].split("|")]
    assert [Decimal(str(credited[c])) for c in WORKED] != readme_column


def learnt_now(learnt: dict[str, Any]) -> dict[str, Any]:
    """``learnt`` with ``learnt_at`` checked to be a whole second of UTC, at most a minute ago,
    and left out (what the README shows is an example time)."""
    at = datetime.fromisoformat(learnt["learnt_at"])
    assert learnt["learnt_at"].endswith("Z") and at.microsecond == 0, learnt
    assert timedelta(0) <= datetime.now(UTC) - at < timedelta(minutes=1), learnt
    return {k: v for k, v in learnt.items() if k != "learnt_at"}


async def test_what_data_driven_learnt_is_in_its_reports_as_the_readme_shows_it(
    start_gateway: Any, upstream_server: Any
) -> None:
    """The worked example's six journeys: the answer says what ``data_driven`` learnt from
    them — the README's removal effects and weights (hand-computed in
    ``test_attribution``), largest weight first — under ``data_driven`` and ``model=all``, by
    day too; a report without ``data_driven`` has no ``learnt``. The same as a CSV and NDJSON
    download (``table=learnt``) and as the second table ``gateway report`` prints."""
    gw = await worked_example(start_gateway, upstream_server)
    readme = await asyncio.to_thread((ROOT / "README.md").read_text)
    section = readme[readme.index("#### Worked example") : readme.index("### Reports")]
    block = section[section.index("```json\n") + 8 :]
    shown = json.loads("{" + block[: block.index("```")] + "}")["learnt"]
    assert [c["channel"] for c in shown["channels"]] == ["Email", "Direct", "Paid Social", "Organic Search"]
    assert shown["learnt_at"] == "2026-12-01T09:00:00Z"
    shown = {k: v for k, v in shown.items() if k != "learnt_at"}
    learnt_ats = set()
    for path, model in [
        ("/api/attribution", "data_driven"),
        ("/api/attribution", "all"),
        ("/api/attribution/timeseries", "data_driven"),
    ]:
        body = await get(gw, path, model=model, **PERIOD)
        assert learnt_now(body["learnt"]) == shown, (path, model)
        learnt_ats.add(body["learnt"]["learnt_at"])
    (learnt_at,) = learnt_ats  # one learning, kept for the reports that followed it
    for model in ("linear", "time_decay"):
        assert "learnt" not in await get(gw, "/api/attribution", model=model, **PERIOD)
    # Asked for the purchase alone, the two signups' journeys did not convert to it.
    alone = markov_weights([(journey, False) for journey, _ in OTHERS] + [(list(WORKED), True)])
    body = await get(gw, "/api/attribution", model="data_driven", conversion="purchase", **PERIOD)
    learnt = body["learnt"]
    assert (learnt["converting_journeys"], learnt["non_converting_journeys"]) == (1, 5)
    assert {c["channel"]: c["weight"] for c in learnt["channels"]} == {
        c: round(w, 6) for c, w in alone.items()
    }

    flat = [{**c, "converting_journeys": 3, "non_converting_journeys": 3} for c in shown["channels"]]
    flat_api = [{**row, "learnt_at": learnt_at} for row in flat]
    for kind in ("csv", "ndjson"):
        query = {**PERIOD, "model": "data_driven", "format": kind, "table": "learnt"}
        async with gw.session.get(gw.admin_url + "/api/attribution", headers=AUTH, params=query) as resp:
            assert resp.status == 200, await resp.text()
            name = f"attribution-learnt-data_driven-channel-from-2026-11-01-to-2026-11-30.{kind}"
            assert resp.headers["Content-Disposition"] == f'attachment; filename="{name}"'
            text = await resp.text()
        if kind == "ndjson":  # the weights the report above learnt: kept for the reports after it
            assert [json.loads(line) for line in text.splitlines()] == flat_api
        else:
            at = learnt_at
            assert text == (
                "channel,removal_effect,weight,converting_journeys,non_converting_journeys,learnt_at\r\n"
                f"Email,0.777778,0.323077,3,3,{at}\r\n"
                f"Direct,0.666667,0.276923,3,3,{at}\r\n"
                f"Paid Social,0.629630,0.261538,3,3,{at}\r\n"
                f"Organic Search,0.333333,0.138462,3,3,{at}\r\n"
            )
    period = ("--since", PERIOD["since"], "--until", PERIOD["until"])
    out = await gateway_report(
        gw, "UTC", *period, "--model", "data_driven", "--format", "ndjson", "--table", "learnt"
    )
    rows = [json.loads(line) for line in out.splitlines()]
    assert [learnt_now(row) for row in rows] == flat
    console = section[section.index("```console\n") + 11 :]
    console = console[: console.index("```")]
    command, printed = console.split("\n", 1)
    assert command.endswith("--model data_driven --since 2026-11-01 --until 2026-12-01")
    assert await gateway_report(gw, "UTC", *period, "--model", "data_driven", "--width", "0") == printed
    tail = printed[printed.index("\ndata_driven learnt") + 1 :]
    out = await gateway_report(gw, "UTC", *period, "--model", "all", "--width", "0")
    assert out.endswith("\n\n" + tail) and out.count("data_driven learnt") == 1, out
    assert "learnt" not in await gateway_report(gw, "UTC", *period, "--model", "linear")


async def test_data_driven_weights_are_kept_until_an_analyst_changes_the_past(
    start_gateway: Any, upstream_server: Any
) -> None:
    """The worked example's weights, learnt by the first report, serve the next over the same
    period although a new journey came in (its own report would learn from 7 journeys, not 6);
    an analyst's verdict through the admin API drops them: the next report learns anew."""
    gw = await worked_example(start_gateway, upstream_server)
    first = (await get(gw, "/api/attribution", model="data_driven", **PERIOD))["learnt"]
    assert (first["converting_journeys"], first["non_converting_journeys"]) == (3, 3)
    body = json.dumps(
        {"event_id": "k1", "type": "touchpoint", "user_id": "k", "timestamp": "2026-11-20T10:00:00Z"}
        | WORKED["Email"]
    ).encode()
    async with gw.session.post(gw.url + "/_gw/events", data=body, headers=signed(body, BILLING)) as resp:
        assert resp.status == 202, await resp.text()
    for path, model in (("/api/attribution", "data_driven"), ("/api/attribution/timeseries", "all")):
        assert (await get(gw, path, model=model, **PERIOD))["learnt"] == first, path
    listed = await get(gw, "/api/touchpoints", limit="1")
    url = f"{gw.admin_url}/api/touchpoints/{listed['items'][0]['id']}/verdict"
    verdict = {"verdict": "allow", "analyst": "ana", "reason": "checked"}
    async with gw.session.post(url, json=verdict, headers=AUTH) as resp:
        assert resp.status == 200, await resp.text()
    anew = (await get(gw, "/api/attribution", model="data_driven", **PERIOD))["learnt"]
    assert (anew["converting_journeys"], anew["non_converting_journeys"]) == (3, 4)
    assert anew["learnt_at"] >= first["learnt_at"]


async def test_weights_learnt_from_no_journey_are_not_kept(start_gateway: Any, upstream_server: Any) -> None:
    """The quick start's dashboard opened before its first landing learnt from no journey; the
    sign-up that followed was credited with those kept weights for ten minutes, the page saying
    "From 0 journeys of the period" over a conversion credited to Email. A learning of nothing
    (which costs nothing to learn again) is not kept; one of some journeys still is."""
    gw = await start_gateway(await upstream_server(web.Application()))
    empty = (await get(gw, "/api/attribution", model="data_driven", **PERIOD))["learnt"]
    assert (empty["converting_journeys"], empty["non_converting_journeys"]) == (0, 0)
    await gw.gateway.store.write([tp("v1", 1, "Email", source="newsletter"), conversion(2, 10.0, "v1")])
    learnt = (await get(gw, "/api/attribution", model="data_driven", **PERIOD))["learnt"]
    assert (learnt["converting_journeys"], learnt["non_converting_journeys"]) == (1, 0), learnt
    await gw.gateway.store.write([tp("v2", 3, "Paid Search", source="google", medium="cpc")])
    kept = (await get(gw, "/api/attribution", model="data_driven", **PERIOD))["learnt"]
    assert kept == learnt  # kept: the new journey is not counted until the reuse time is over


async def test_a_learnt_table_is_refused_for_a_report_that_learns_nothing(gw: RunningGateway) -> None:
    """``table=learnt`` is what ``data_driven`` learnt: for another model, the paths or the
    payouts report (which leaves it out, see the README) it is a 400 naming what to ask
    instead, before the report is computed; with JSON, which carries it, a 400 too. So is
    ``gateway report --table learnt`` (exit 2)."""
    for path, params, error in [
        (
            "/api/attribution",
            {"format": "csv", "table": "learnt"},
            "table: learnt is what data_driven learnt, and model linear learns nothing;"
            " ask model=data_driven or model=all",
        ),
        (
            "/api/attribution/timeseries",
            {"model": "position_based", "format": "ndjson", "table": "learnt"},
            "table: learnt is what data_driven learnt, and model position_based learns nothing;"
            " ask model=data_driven or model=all",
        ),
        (
            "/api/payouts",
            {"model": "data_driven", "format": "csv", "table": "learnt"},
            "table: expected one of rows, totals for the payouts report, got 'learnt': it leaves out"
            " what data_driven learnt; the attribution report of the same query with"
            " model=data_driven says it (table=learnt)",
        ),
        (
            "/api/attribution/paths",
            {"format": "csv", "table": "learnt"},
            "table: expected one of rows, summary for the paths report, got 'learnt'",
        ),
        (
            "/api/attribution",
            {"model": "data_driven", "table": "learnt"},
            "table: applies to a CSV or NDJSON download (format=csv or ndjson), not json; the JSON"
            " answer carries learnt beside the rows",
        ),
    ]:
        body = await get(gw, path, 400, **PERIOD, **params)
        assert body["error"] == error, (path, params)
    assert "learnt" not in await get(gw, "/api/payouts", model="data_driven", **PERIOD)
    body = await get(gw, "/api/attribution", model="data_driven", **PERIOD)
    assert body["learnt"]["converting_journeys"] == 3 and body["learnt"]["non_converting_journeys"] == 0
    path = gw.gateway.settings.store_path
    config = path.parent / "report.toml"
    await asyncio.to_thread(config.write_text, f"[storage]\npath = '{path}'\n")
    for args, error in [
        (
            ("--format", "csv", "--table", "learnt"),
            "--table: learnt is what data_driven learnt, and --model linear learns nothing;"
            " ask --model data_driven or --model all",
        ),
        (
            ("--model", "data_driven", "--table", "learnt"),
            "--table: applies to --format csv or ndjson; the table prints the learnt below its rows",
        ),
        (
            ("--payouts", "--model", "data_driven", "--format", "csv", "--table", "learnt"),
            "--table: expected one of rows, totals for the payouts report, got 'learnt': it leaves out"
            " what data_driven learnt; the attribution report of the same query with --model"
            " data_driven says it (--table learnt)",
        ),
    ]:
        done = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "report", "-c", str(config), *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={"PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        out, err = await done.communicate()
        assert (done.returncode, out, err.decode()) == (2, b"", f"gateway report: {error}\n")


async def test_a_share_of_no_conversions_has_four_decimals_as_every_share(gw: RunningGateway) -> None:
    """A period whose one conversion had no touch (C): no conversion has a time to convert,
    and each of those shares reads 0.0000 in the CSV and the terminal as the others do (it
    read 0)."""
    period = {"since": "2026-11-06", "until": "2026-11-07"}
    async with gw.session.get(
        gw.admin_url + "/api/attribution/paths", headers=AUTH, params={**period, "format": "csv"}
    ) as resp:
        assert resp.status == 200
        lines = list(csv.DictReader(io.StringIO(await resp.text())))
    assert {(r["measure"], r["bucket"]): r["share"] for r in lines if r["conversions"] != "0"} == {
        ("touches", "0"): "1.0000"
    }
    assert {r["share"] for r in lines if r["conversions"] == "0"} == {"0.0000"}
    out = await gateway_report(gw, "UTC", "--paths", "--since", period["since"], "--until", period["until"])
    days = [line.split() for line in out.splitlines() if line.startswith("days ")]
    assert len(days) == 7 and {cells[-1] for cells in days} == {"0.0000"}


async def test_the_paths_download_reads_in_a_spreadsheet_as_the_report_says_it(gw: RunningGateway) -> None:
    """The paths report's CSV as a growth analyst opens it: the buckets of days ``2-3``,
    ``4-7`` and ``8-14`` are text a spreadsheet read as dates (3-Feb, 7-Apr, 14-Aug), so they
    get the leading ' of text it would misread; the summary's means and medians have two
    decimals in the CSV and the terminal as the README says (``4.00``, not ``4.0``), as the
    shares have four. JSON keeps the same numbers."""
    async with gw.session.get(
        gw.admin_url + "/api/attribution/paths", headers=AUTH, params={**PERIOD, "format": "csv"}
    ) as resp:
        assert resp.status == 200
        rows = list(csv.DictReader(io.StringIO(await resp.text())))
    buckets = [r["bucket"] for r in rows if r["measure"] == "days"]
    assert buckets == ["0", "1", "'2-3", "'4-7", "'8-14", "'15-30", "31+"]
    query = {**PERIOD, "format": "csv", "table": "summary"}
    async with gw.session.get(gw.admin_url + "/api/attribution/paths", headers=AUTH, params=query) as resp:
        assert await resp.text() == (
            "conversions,with_touches,mean_touches,median_touches,mean_days,median_days\r\n"
            "4,3,1.50,1.50,4.00,2.00\r\n"
        )
    body = await get(gw, "/api/attribution/paths", **PERIOD)
    assert body["summary"]["mean_days"] == 4.0 and body["summary"]["median_touches"] == 1.5
    out = await gateway_report(gw, "UTC", "--paths", "--since", PERIOD["since"], "--until", PERIOD["until"])
    assert (
        "conversions 4, with_touches 3, mean_touches 1.50, median_touches 1.50, mean_days 4.00,"
        " median_days 2.00"
    ) in out.replace("\n  ", " "), out


async def reports_shared(gw: RunningGateway) -> float:
    """``gateway_reports_shared_total`` as ``/metrics`` gives it."""
    async with gw.session.get(gw.admin_url + "/metrics", headers=AUTH) as resp:
        text = await resp.text()
    return float(
        next(
            line.split()[1] for line in text.splitlines() if line.startswith("gateway_reports_shared_total ")
        )
    )


async def until_shared(gw: RunningGateway, n: float) -> None:
    """Until ``n`` requests have joined a report in flight (bounded)."""
    for _ in range(500):
        if await reports_shared(gw) >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{await reports_shared(gw)} requests joined a report in flight, expected {n}")


async def test_identical_reports_in_flight_are_computed_once(gw: RunningGateway) -> None:
    """Two requests for the same report while it is queued (behind a long one) or computed:
    one computation, both answered from it, whatever the parameters' spelling, order and
    format; different populations, verdicts, groupings or kinds are computed each their own."""
    reports = gw.gateway.admin_app[REPORTING_KEY].reports
    async with holding(reports):  # a long report: the thread is busy, the requests queue behind it
        before = reports.report
        first = asyncio.create_task(fetch(gw, "/api/attribution", model="linear", **PERIOD))
        same = "?format=csv&until=2026-12-01T00:00:00Z&since=2026-11-01T01:00:00%2B01:00"

        async def csv_of_the_same() -> str:
            async with gw.session.get(gw.admin_url + "/api/attribution" + same, headers=AUTH) as resp:
                assert resp.status == 200
                return await resp.text()

        second = asyncio.create_task(csv_of_the_same())
        await until_shared(gw, 1)
        different = [
            get(gw, "/api/attribution", **PERIOD, population="cookie"),
            get(gw, "/api/attribution", **PERIOD, verdicts="allow,review"),
            get(gw, "/api/attribution", **PERIOD, group_by="creator_id"),
            get(gw, "/api/attribution", **PERIOD, model="last_touch"),
            get(gw, "/api/attribution", **{**PERIOD, "since": "2026-11-02"}),
            get(gw, "/api/attribution/timeseries", **PERIOD),
            get(gw, "/api/attribution/paths", **PERIOD),
            get(gw, "/api/payouts", **PERIOD),
        ]
        others = asyncio.gather(*different)
        for _ in range(500):  # every one queued beside the pair before the thread is free
            if len(reports._shared) == 1 + len(different):
                break
            await asyncio.sleep(0.01)
        assert len(reports._shared) == 1 + len(different)
    body, exported = json.loads(await first, parse_float=Decimal), await second
    await others
    assert reports.report - before == 1 + len(different)  # the pair once, each other one apart
    assert await reports_shared(gw) == 1
    rows = {(r["group"], r["currency"], r["conversions"], r["value"]) for r in body["rows"]}
    assert len(rows) == 6 and rows == {
        (r["group"], r["currency"], Decimal(r["conversions"]), Decimal(r["value"]))
        for r in csv.DictReader(io.StringIO(exported))
    }
    # Done, it is forgotten: asked again, the report is computed again, and says the same.
    again = json.loads(await fetch(gw, "/api/attribution", model="linear", **PERIOD), parse_float=Decimal)
    assert again["rows"] == body["rows"]
    assert reports.report - before == 2 + len(different)


async def until_queued(gw: RunningGateway, n: int) -> None:
    """Until ``n`` reports wait, queued or computing, each for its own run (bounded)."""
    reports = gw.gateway.admin_app[REPORTING_KEY].reports
    for _ in range(500):
        if len(reports._shared) >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(reports._shared)} reports in flight, expected {n}")


async def test_an_erasure_by_gateway_erase_counts_as_a_write(gw: RunningGateway) -> None:
    """``gateway erase`` writes the store from another process: the gateway's erasure follower
    (which tells the binding to forget the user, every 2 s) counts it as a write, so a report
    asked after it is not answered by a run asked before it."""
    reports = gw.gateway.admin_app[REPORTING_KEY].reports
    for _ in range(200):  # the follower's first look: erasures before it count for nothing
        if gw.gateway.erasures_seen is not None:
            break
        await asyncio.sleep(0.05)
    generation = reports.generation
    now = datetime.now(UTC)
    settings = gw.gateway.settings
    await erase_user(
        settings.store_path,
        gw.gateway.keys.user_keys("someone", False)[0],
        "someone",
        body_key=body_key(settings.secret),
        event_id=Uuid7()(int(now.timestamp() * 1000)),
        ts=iso(now),
        node="cli",
    )
    for _ in range(200):  # a deadline (the follower looks every 2 s), not a timing assertion
        if reports.generation > generation:
            break
        await asyncio.sleep(0.1)
    assert reports.generation > generation


async def test_a_report_asked_again_after_a_write_is_computed_anew(gw: RunningGateway) -> None:
    """An analyst's write through the admin API (here a verdict override) between two asks of
    the same report: the second is not answered by the run asked for before the write (which
    may have read the store before it); it is computed on its own and counts the override.
    With only reads between them, two asks still share one run."""
    reports = gw.gateway.admin_app[REPORTING_KEY].reports
    ben = next(e for e in EVENTS if isinstance(e, Touchpoint) and e.visitor_key == "v3")
    async with holding(reports):  # a long report: the thread is busy, the requests queue behind it
        before = reports.report
        first = asyncio.create_task(get(gw, "/api/attribution", model="linear", **PERIOD))
        await until_queued(gw, 1)
        override = {"verdict": "block", "analyst": "ana", "reason": "a click farm"}
        url = gw.admin_url + f"/api/touchpoints/{ben.id}/verdict"
        async with gw.session.post(url, headers=AUTH, json=override) as resp:
            assert resp.status == 200, await resp.text()
        again = asyncio.create_task(get(gw, "/api/attribution", model="linear", **PERIOD))  # Try again
        await until_queued(gw, 2)  # its own run, beside the first
    await first
    body = await again
    assert await reports_shared(gw) == 0
    assert reports.report - before == 2
    # cr_ben's click blocked: B's 10.01 EUR is Direct now.
    assert table(body, "conversions", "value")[("Affiliates", "EUR")] == (0.333334, 33.34)
    assert table(body, "conversions", "value")[("Direct", "EUR")] == (2, 15.01)

    # Reads between two asks change nothing: they share one run.
    async with holding(reports):
        before = reports.report
        first = asyncio.create_task(get(gw, "/api/attribution", model="linear", **PERIOD))
        await until_queued(gw, 1)
        await get(gw, "/api/creators")
        await get(gw, "/api/touchpoints", **PERIOD)
        again = asyncio.create_task(get(gw, "/api/attribution", model="linear", **PERIOD))
        await until_shared(gw, 1)
    assert await first == await again == body
    assert reports.report - before == 1


async def test_a_report_is_gzip_compressed_for_a_client_that_accepts_it(gw: RunningGateway) -> None:
    """A ``model=all`` time series over years as CSV is megabytes; the admin API sent it as it
    was whatever ``Accept-Encoding`` said. Now gzip, with the compressed ``Content-Length``."""
    async with aiohttp.ClientSession(auto_decompress=False, skip_auto_headers=["Accept-Encoding"]) as raw:
        for fmt in ("json", "csv", "ndjson"):
            params = {"model": "all", "format": fmt, **PERIOD}
            url = gw.admin_url + "/api/attribution/timeseries"
            async with raw.get(url, params=params, headers=AUTH) as resp:
                plain = await resp.read()
                assert "Content-Encoding" not in resp.headers
                assert int(resp.headers["Content-Length"]) == len(plain)
            async with raw.get(url, params=params, headers={**AUTH, "Accept-Encoding": "gzip"}) as resp:
                body = await resp.read()
                assert resp.status == 200 and resp.headers["Content-Encoding"] == "gzip", fmt
                assert int(resp.headers["Content-Length"]) == len(body)
                assert resp.headers["Vary"] == "Accept-Encoding"
            assert gzip.decompress(body) == plain and len(body) < len(plain) / 4, (fmt, len(body), len(plain))
