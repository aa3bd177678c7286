"""Reports read through the admin API (and ``gateway report``) under an ``attribution.timezone``
with daylight saving time, on a real store holding conversions and touches placed by hand
around the changes of 2026: each local day once (of 23, 24, 25 or 23.5 hours), both 02:30s
of the repeated hour on their local day, the first and last instant of a period, a skipped and
a repeated ``since``, the lookback window's edge to the millisecond across a change, and the
dashboard's daily buckets and the CSV's dates agreeing with the time series.
"""

from __future__ import annotations

import asyncio
import csv
import io
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from gateway.events import Conversion, Event, Touchpoint, iso
from gateway.ids import Uuid7
from tests.conftest import TOKEN, RunningGateway

AUTH = {"Authorization": f"Bearer {TOKEN}"}
new_id = Uuid7()
MS = timedelta(milliseconds=1)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def touch(visitor: str, ts: datetime, channel: str, campaign: str | None = None) -> Touchpoint:
    return Touchpoint(
        new_id(int(ts.timestamp() * 1000)), iso(ts), "n", visitor, channel=channel, campaign=campaign
    )


def sale(visitor: str, ts: datetime, name: str = "purchase", value: float = 10.0) -> Conversion:
    cid = new_id(int(ts.timestamp() * 1000))
    return Conversion(cid, iso(ts), "n", name, "order:" + cid, visitor, None, value, "EUR")


async def get(gw: RunningGateway, path: str, status: int = 200, **params: str) -> Any:
    async with gw.session.get(gw.admin_url + path, headers=AUTH, params=params) as resp:
        body = await resp.json()
        assert resp.status == status, body
    return body


async def text(gw: RunningGateway, path: str, **params: str) -> tuple[str, str]:
    async with gw.session.get(gw.admin_url + path, headers=AUTH, params=params) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.text(), resp.headers["Content-Disposition"]


def zoned(zone: str) -> str:
    return f'[attribution]\ntimezone = "{zone}"\n'


def per_day(body: dict[str, Any]) -> dict[str, float]:
    """The time series' conversions per day, every day of it (zeros too)."""
    days: dict[str, float] = {}
    for row in body["rows"]:
        days[row["day"]] = days.get(row["day"], 0) + row["conversions"]
    return days


# Berlin: forward on March 29 (02:00 CET → 03:00 CEST), back on October 25 (03:00 CEST → 02:00
# CET). Each conversion (UTC) and the local day it belongs to.
BERLIN = [
    (utc(2026, 3, 28, 22, 59, 59, 999000), "2026-03-28"),  # 23:59:59.999 CET: the day before
    (utc(2026, 3, 28, 23), "2026-03-29"),  # 00:00 CET: the short day's first instant
    (utc(2026, 3, 29, 0, 30), "2026-03-29"),  # 01:30 CET
    (utc(2026, 3, 29, 1, 30), "2026-03-29"),  # 03:30 CEST (what "02:30" is read as)
    (utc(2026, 3, 29, 21, 59, 59, 999000), "2026-03-29"),  # 23:59:59.999 CEST: its last
    (utc(2026, 3, 29, 22), "2026-03-30"),  # 00:00 CEST the day after
    (utc(2026, 10, 24, 21, 59, 59, 999000), "2026-10-24"),  # 23:59:59.999 CEST
    (utc(2026, 10, 24, 22), "2026-10-25"),  # 00:00 CEST: the long day's first instant
    (utc(2026, 10, 25, 0, 30), "2026-10-25"),  # 02:30 CEST, the first 02:30
    (utc(2026, 10, 25, 1, 30), "2026-10-25"),  # 02:30 CET, the second
    (utc(2026, 10, 25, 22, 59, 59, 999000), "2026-10-25"),  # 23:59:59.999 CET: its last
    (utc(2026, 10, 25, 23), "2026-10-26"),  # 00:00 CET the day after
]
NEW_YORK = [
    (utc(2026, 3, 8, 4, 59, 59, 999000), "2026-03-07"),  # 23:59:59.999 EST
    (utc(2026, 3, 8, 5), "2026-03-08"),  # 00:00 EST
    (utc(2026, 3, 9, 3, 59, 59, 999000), "2026-03-08"),  # 23:59:59.999 EDT: 23 hours later
    (utc(2026, 3, 9, 4), "2026-03-09"),
    (utc(2026, 11, 1, 5, 30), "2026-11-01"),  # 01:30 EDT, the first
    (utc(2026, 11, 1, 6, 30), "2026-11-01"),  # 01:30 EST, the second
    (utc(2026, 11, 2, 4, 59, 59, 999000), "2026-11-01"),  # 23:59:59.999 EST: 25 hours
    (utc(2026, 11, 2, 5), "2026-11-02"),
]
LORD_HOWE = [  # +10:30 → +11 at 02:00 on October 4; back at 02:00 on April 5 (30 minutes)
    (utc(2026, 4, 4, 12, 59, 59, 999000), "2026-04-04"),  # 23:59:59.999 +11
    (utc(2026, 4, 4, 13), "2026-04-05"),  # 00:00 +11
    (utc(2026, 4, 4, 14, 45), "2026-04-05"),  # 01:45 +11, the first
    (utc(2026, 4, 4, 15, 15), "2026-04-05"),  # 01:45 +10:30, the second
    (utc(2026, 4, 5, 13, 29, 59, 999000), "2026-04-05"),  # 23:59:59.999 +10:30: 24.5 hours
    (utc(2026, 4, 5, 13, 30), "2026-04-06"),
    (utc(2026, 10, 3, 13, 30), "2026-10-04"),  # 00:00 +10:30
    (utc(2026, 10, 4, 12, 59, 59, 999000), "2026-10-04"),  # 23:59:59.999 +11: 23.5 hours
    (utc(2026, 10, 4, 13), "2026-10-05"),
]
ZONES = {
    "Europe/Berlin": (BERLIN, [("2026-03-27", "2026-03-31"), ("2026-10-23", "2026-10-27")]),
    "America/New_York": (NEW_YORK, [("2026-03-07", "2026-03-10"), ("2026-10-31", "2026-11-03")]),
    "Australia/Lord_Howe": (LORD_HOWE, [("2026-04-04", "2026-04-07"), ("2026-10-03", "2026-10-06")]),
}


def dates(since: str, until: str) -> list[str]:
    first, last = datetime.fromisoformat(since), datetime.fromisoformat(until)
    return [(first + timedelta(days=n)).date().isoformat() for n in range((last - first).days)]


@pytest.mark.parametrize("zone", sorted(ZONES))
async def test_every_local_day_once_each_conversion_on_its_day(
    start_gateway: Any, upstream_server: Any, zone: str
) -> None:
    """The time series, its CSV, the dashboard's daily buckets and ``gateway report`` agree:
    one row per local date (the short and the long day included), each conversion on its
    local date, the repeated hour's two instants both on the day of the change."""
    cases, periods = ZONES[zone]
    gw = await start_gateway(await upstream_server(web.Application()), zoned(zone))
    events: list[Event] = []
    for i, (ts, _) in enumerate(cases):
        events += [touch(f"v{i}", ts - MS, "Email"), sale(f"v{i}", ts)]
    await gw.gateway.store.write(events)
    for since, until in periods:
        expected = dict.fromkeys(dates(since, until), 0.0)
        for _, day in cases:
            if day in expected:
                expected[day] += 1
        period = {"since": since, "until": until}
        body = await get(gw, "/api/attribution/timeseries", **period)
        assert per_day(body) == expected, (zone, since)
        assert [r["day"] for r in body["rows"]] == list(expected), "one row per day, in order"
        summary = await get(gw, "/api/dashboard/summary", part="daily", **period)
        assert {r["day"]: r["conversions"] for r in summary["by_day"]} == {
            day: n for day, n in expected.items() if n
        }, (zone, since)
        csv_text, disposition = await text(gw, "/api/attribution/timeseries", format="csv", **period)
        rows = list(csv.DictReader(io.StringIO(csv_text)))
        assert [r["day"] for r in rows] == list(expected)
        assert f"-from-{since}-to-{list(expected)[-1]}.csv" in disposition
    since, until = periods[1]
    config = gw.gateway.settings.store_path.parent / "report.toml"
    store = gw.gateway.settings.store_path
    await asyncio.to_thread(config.write_text, f"[storage]\npath = '{store}'\n" + zoned(zone))
    done = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "report", "-c", str(config), "--timeseries",
        "--since", since, "--until", until, "--format", "csv",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await done.communicate()
    assert done.returncode == 0, err.decode()
    api, _ = await text(gw, "/api/attribution/timeseries", format="csv", since=since, until=until)
    assert out.decode() == api


@pytest.mark.parametrize(
    ("since", "until", "first", "last", "held"),
    [
        # The long day: 25 hours, its first and last instants in, the next day's first out.
        ("2026-10-25", "2026-10-26", "2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z", [7, 8, 9, 10]),
        (
            "2026-10-25T00:00",
            "2026-10-25T24:00",
            "2026-10-24T22:00:00Z",
            "2026-10-25T23:00:00Z",
            [7, 8, 9, 10],
        ),
        # The short day: 23 hours.
        ("2026-03-29", "2026-03-30", "2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z", [1, 2, 3, 4]),
        # 02:30 never happens on March 29: read with the offset before (+01:00), 03:30 CEST.
        ("2026-03-29T02:30", "2026-03-30", "2026-03-29T01:30:00Z", "2026-03-29T22:00:00Z", [3, 4]),
        # 02:30 happens twice on October 25: the first (CEST); an offset names the second.
        ("2026-10-25T02:30", "2026-10-26", "2026-10-25T00:30:00Z", "2026-10-25T23:00:00Z", [8, 9, 10]),
        ("2026-10-25T02:30+01:00", "2026-10-26", "2026-10-25T01:30:00Z", "2026-10-25T23:00:00Z", [9, 10]),
        # until at a skipped or repeated time: the same reading.
        ("2026-10-25", "2026-10-25T02:30", "2026-10-24T22:00:00Z", "2026-10-25T00:30:00Z", [7]),
        ("2026-03-29", "2026-03-29T02:30", "2026-03-28T23:00:00Z", "2026-03-29T01:30:00Z", [1, 2]),
    ],
)
async def test_a_period_s_ends_in_berlin(
    start_gateway: Any, upstream_server: Any, since: str, until: str, first: str, last: str, held: list[int]
) -> None:
    gw = await start_gateway(await upstream_server(web.Application()), zoned("Europe/Berlin"))
    events: list[Event] = []
    for i, (ts, _) in enumerate(BERLIN):  # each its own conversion name, to see which are in
        events += [touch(f"v{i}", ts - MS, "Email"), sale(f"v{i}", ts, name=f"c{i}")]
    await gw.gateway.store.write(events)
    body = await get(gw, "/api/attribution", since=since, until=until)
    assert (body["since"], body["until"]) == (first, last)
    assert body["totals"][0]["conversions"] == len(held) if held else body["totals"] == []
    for i in range(len(BERLIN)):
        named = await get(gw, "/api/attribution", since=since, until=until, conversion=f"c{i}")
        assert bool(named["rows"]) == (i in held), (i, BERLIN[i][0])


WEEK, MONTH = timedelta(days=7), timedelta(days=30)
SPRING = utc(2026, 3, 30, 22, 30)  # 00:30 CEST on March 31: 7 x 24 h back is 23:30 CET
FALL = utc(2026, 10, 25, 23, 30)  # 00:30 CET on October 26: 7 x 24 h back is 01:30 CEST
LATE = utc(2026, 4, 10, 10)  # 30 x 24 h back is March 11, before the change


@pytest.mark.parametrize(
    ("visitor", "at", "touched", "credited"),
    [
        # The conversion tier's 7 days (a `retarget` campaign), to the millisecond.
        ("s-edge", SPRING, SPRING - WEEK, True),
        ("s-out", SPRING, SPRING - WEEK - MS, False),
        # 00:30 seven local days before is an hour later than 7 x 24 h: in either reading.
        ("s-wall", SPRING, utc(2026, 3, 23, 23, 30), True),
        # Between 7 x 24 h and the wall clock's 7 days: in, as elapsed time.
        ("s-between", SPRING, utc(2026, 3, 23, 23, 0), True),
        ("f-edge", FALL, FALL - WEEK, True),
        ("f-out", FALL, FALL - WEEK - MS, False),
        # 00:30 CEST seven local days before is an hour older than 7 x 24 h: out.
        ("f-wall", FALL, utc(2026, 10, 18, 22, 30), False),
    ],
)
async def test_a_lookback_window_is_elapsed_time_to_the_millisecond(
    start_gateway: Any, upstream_server: Any, visitor: str, at: datetime, touched: datetime, credited: bool
) -> None:
    """README, Days and daylight saving time: a window is days of 24 hours counted back from
    the conversion's instant, the boundary counting; the zone moves no touch in or out."""
    gw = await start_gateway(await upstream_server(web.Application()), zoned("Europe/Berlin"))
    await gw.gateway.store.write([touch(visitor, touched, "Email", "cart-retarget"), sale(visitor, at)])
    day = at.astimezone(UTC).date()
    period = {"since": str(day - timedelta(days=1)), "until": str(day + timedelta(days=2))}
    body = await get(gw, "/api/attribution", group_by="campaign", **period)
    assert [(r["group"], r["conversions"]) for r in body["rows"]] == [
        ("cart-retarget" if credited else None, 1)
    ], visitor
    paths = await get(gw, "/api/attribution/paths", **period)
    assert paths["summary"]["with_touches"] == int(credited)


@pytest.mark.parametrize(
    ("offset", "reached"),
    [
        (timedelta(0), True),
        (MS, False),
        (timedelta(microseconds=1), False),
        (-timedelta(microseconds=1), True),
    ],
)
async def test_the_dashboard_s_widest_window_is_the_reports_to_the_microsecond(
    start_gateway: Any, upstream_server: Any, offset: timedelta, reached: bool
) -> None:
    """The top campaigns' conversions touched and a population's conversions reached read the
    widest window (30 days by default) as the reports do: 30 x 24 hours back from the
    conversion, across the change of March 29, the boundary counting, a microsecond more not."""
    gw = await start_gateway(await upstream_server(web.Application()), zoned("Europe/Berlin"))
    touched = LATE - MONTH - offset
    await gw.gateway.store.write([touch("v", touched, "Email", "spring-sale"), sale("v", LATE)])
    period = {"since": "2026-03-01", "until": "2026-04-15"}
    report = await get(gw, "/api/attribution", group_by="campaign", **period)
    assert [r["group"] for r in report["rows"]] == ["spring-sale" if reached else None]
    summary = await get(gw, "/api/dashboard/summary", part="counts", **period)
    assert [(r["name"], r["conversions"]) for r in summary["top_campaigns"]] == [
        ("spring-sale", int(reached))
    ]
    cookie = await get(gw, "/api/dashboard/summary", part="counts", population="cookie", **period)
    assert cookie["totals"]["population_conversions"] == int(reached)


async def test_a_date_the_zone_skipped_has_no_row(start_gateway: Any, upstream_server: Any) -> None:
    """Samoa moved across the date line: in Pacific/Apia 29 December 2011 (-10:00) was followed
    by the 31st (+14:00). The time series has a row on each local day, and 30 December was
    none (its dense zero rows drew a day that never happened there); asked for alone, it has
    no instant, and the answer says so as for any empty period."""
    gw = await start_gateway(await upstream_server(web.Application()), zoned("Pacific/Apia"))
    cases = [
        (utc(2011, 12, 30, 9, 59, 59, 999000), "2011-12-29"),  # 23:59:59.999 -10:00
        (utc(2011, 12, 30, 10), "2011-12-31"),  # 00:00 +14:00: the next instant's day
        (utc(2011, 12, 31, 9, 59, 59, 999000), "2011-12-31"),
    ]
    events: list[Event] = []
    for i, (ts, _) in enumerate(cases):
        events += [touch(f"v{i}", ts - MS, "Email"), sale(f"v{i}", ts)]
    await gw.gateway.store.write(events)
    body = await get(gw, "/api/attribution/timeseries", since="2011-12-29", until="2012-01-01")
    assert per_day(body) == {"2011-12-29": 1, "2011-12-31": 2}
    summary = await get(gw, "/api/dashboard/summary", part="daily", since="2011-12-29", until="2012-01-01")
    assert {r["day"]: r["conversions"] for r in summary["by_day"]} == per_day(body)
    alone = await get(gw, "/api/attribution/timeseries", 400, since="2011-12-30", until="2011-12-31")
    assert alone["error"] == (
        "since: must be before until (2011-12-30T10:00:00.000000Z >= 2011-12-30T10:00:00.000000Z)"
    )


async def test_the_last_day_of_the_range_east_of_utc_is_a_day_of_the_series(
    start_gateway: Any, upstream_server: Any
) -> None:
    """The latest `until` taken, 9999-12-31T00:00Z, is 09:00 on 31 December 9999 in Tokyo: the
    time series has that day (the calendar's last), zeros included, and its download is named
    after it, rather than a 500 for the day after it, which no calendar has."""
    gw = await start_gateway(await upstream_server(web.Application()), zoned("Asia/Tokyo"))
    end = utc(9999, 12, 30, 20)  # 05:00 on 31 December in Tokyo
    await gw.gateway.store.write([touch("v", end - MS, "Email"), sale("v", end)])
    period = {"since": "9999-12-30T00:00Z", "until": "9999-12-31T00:00Z"}
    body = await get(gw, "/api/attribution/timeseries", **period)
    assert per_day(body) == {"9999-12-30": 0, "9999-12-31": 1}
    csv_text, named = await text(gw, "/api/attribution/timeseries", format="csv", **period)
    assert [row["day"] for row in csv.DictReader(io.StringIO(csv_text))] == ["9999-12-30", "9999-12-31"]
    assert named.endswith('-from-9999-12-30-to-9999-12-31.csv"'), named


@pytest.mark.parametrize(("after", "bucket"), [(timedelta(days=1) - MS, "0"), (timedelta(days=1), "1")])
async def test_time_to_convert_is_elapsed_time_across_a_change(
    start_gateway: Any, upstream_server: Any, after: timedelta, bucket: str
) -> None:
    """13:00 CET on March 28 to 14:00 CEST on the 29th is one day on the wall clock but 24
    hours elapsed: the paths report's days are of 24 hours, so a millisecond less is day 0."""
    gw = await start_gateway(await upstream_server(web.Application()), zoned("Europe/Berlin"))
    first = utc(2026, 3, 28, 12)
    await gw.gateway.store.write([touch("v", first, "Email"), sale("v", first + after)])
    body = await get(gw, "/api/attribution/paths", since="2026-03-28", until="2026-03-30")
    days = {
        r["bucket"]: r["conversions"] for r in body["rows"] if r["measure"] == "days" and r["conversions"]
    }
    assert days == {bucket: 1}
