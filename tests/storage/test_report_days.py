"""Reports under an ``attribution.timezone`` with daylight saving time, against expectations
worked out by hand: the day a conversion lands on next to a change (days of 23 and 25 hours,
a 30-minute change, a half-hour offset with none), and the lookback windows, which are
elapsed time (7 days: 7 x 24 hours back from the conversion's instant), not the wall clock.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway import reporting
from gateway.attribution import Attribution, Touch
from gateway.channels import Channels
from gateway.events import Conversion, Event, Touchpoint, iso
from gateway.ids import Uuid7
from gateway.metrics import Metrics
from gateway.options import AttributionOptions, ChannelsOptions, StorageOptions
from storage.local import LocalStore
from storage.reports import Reports

new_id = Uuid7()


def tp(visitor: str, ts: datetime, channel: str, campaign: str | None = None) -> Touchpoint:
    return Touchpoint(
        new_id(int(ts.timestamp() * 1000)), iso(ts), "n", visitor, channel=channel, campaign=campaign
    )


def conversion(visitor: str, ts: datetime, value: float = 10.0) -> Conversion:
    cid = new_id(int(ts.timestamp() * 1000))
    return Conversion(cid, iso(ts), "n", "purchase", "order:" + cid, visitor, None, value, "EUR")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.fixture(scope="module")
def channels() -> Channels:
    return Channels(ChannelsOptions())


async def write(path: Path, events: list[Event]) -> None:
    local = LocalStore(path, StorageOptions(), Metrics())
    await local.open()
    await local.write(events)
    await local.close()


async def zoned(zone: str, **options: object) -> Attribution:
    """``[attribution]`` in ``zone`` (loading a zone reads its file: not in the event loop)."""
    return await asyncio.to_thread(Attribution, AttributionOptions(timezone=zone, **options))  # type: ignore[arg-type]


# Each conversion (UTC, worked out by hand) and the local day it belongs to.
DAYS = {
    # Spring forward on March 29 (02:00 CET → 03:00 CEST: 23 hours), back on October 25 (25).
    "Europe/Berlin": [
        (utc(2026, 3, 28, 22, 59), "2026-03-28"),  # 23:59 CET
        (utc(2026, 3, 28, 23, 0), "2026-03-29"),  # 00:00 CET: the short day begins
        (utc(2026, 3, 29, 21, 45), "2026-03-29"),  # 23:45 CEST
        (utc(2026, 3, 29, 22, 30), "2026-03-30"),  # 00:30 CEST the day after
        (utc(2026, 10, 25, 22, 45), "2026-10-25"),  # 23:45 CET, the long day's last quarter
        (utc(2026, 10, 25, 23, 30), "2026-10-26"),  # 00:30 CET the day after
    ],
    # Spring forward on March 8 (02:00 EST → 03:00 EDT), back on November 1.
    "America/New_York": [
        (utc(2026, 3, 9, 3, 45), "2026-03-08"),  # 23:45 EDT
        (utc(2026, 3, 9, 4, 30), "2026-03-09"),  # 00:30 EDT the day after
        (utc(2026, 11, 2, 4, 45), "2026-11-01"),  # 23:45 EST
        (utc(2026, 11, 2, 5, 30), "2026-11-02"),  # 00:30 EST the day after
    ],
    # Half an hour of daylight saving: 02:00 +10:30 → 02:30 +11 on October 4, back on April 5.
    "Australia/Lord_Howe": [
        (utc(2026, 10, 4, 12, 45), "2026-10-04"),  # 23:45 +11
        (utc(2026, 10, 4, 13, 30), "2026-10-05"),  # 00:30 +11 the day after
        (utc(2026, 4, 5, 13, 15), "2026-04-05"),  # 23:45 +10:30
        (utc(2026, 4, 5, 14, 0), "2026-04-06"),  # 00:30 +10:30 the day after
    ],
    # +05:30 all year.
    "Asia/Kolkata": [
        (utc(2026, 3, 29, 18, 15), "2026-03-29"),  # 23:45 IST
        (utc(2026, 3, 29, 19, 0), "2026-03-30"),  # 00:30 IST
    ],
}


@pytest.mark.parametrize("processes", [1, 2], ids=["one-process", "workers"])
@pytest.mark.parametrize("zone", sorted(DAYS))
async def test_a_conversion_lands_on_its_local_day_next_to_a_change(
    tmp_path: Path, channels: Channels, zone: str, processes: int
) -> None:
    cases = DAYS[zone]
    events: list[Event] = []
    for i, (ts, _) in enumerate(cases):  # each conversion credited to a channel of its own
        events += [tp(f"v{i}", ts - timedelta(minutes=1), f"c{i}"), conversion(f"v{i}", ts)]
    await write(tmp_path / "gw.db", events)
    reports = Reports(tmp_path / "gw.db", await zoned(zone), channels, processes, min_slice=1)
    await reports.open()
    try:
        q = reporting.Query(utc(2026, 1, 1), utc(2027, 1, 1))
        body = json.loads((await reporting.attribution(reports, q, by_day=True)).json())
        if processes > 1:
            assert reports._pool.pids, "the report was not shared"
    finally:
        await reports.close()
    days = {row["group"]: row["day"] for row in body["rows"] if row["conversions"]}  # not the zeros
    assert days == {f"c{i}": day for i, (_, day) in enumerate(cases)}
    # And each day is what the zone's own arithmetic says.
    assert all(ts.astimezone(ZoneInfo(zone)).date().isoformat() == day for ts, day in cases)


# A conversion at 00:30 local the day after each change in Berlin, and touches of the
# conversion tier (7-day window) around 7 x 24 hours before it and 7 local days before it.
SPRING = utc(2026, 3, 30, 22, 30)  # 00:30 CEST on March 31
FALL = utc(2026, 10, 25, 23, 30)  # 00:30 CET on October 26
WEEK = timedelta(days=7)
WINDOW_TOUCHES = [
    # Spring: 7 x 24 h before is 22:30Z on March 23, 23:30 CET there, an hour of the wall clock
    # earlier than 00:30 seven local days before (23:30Z). Both count, a second more does not.
    ("s", SPRING - WEEK, "Email"),  # on the boundary: counts
    ("s", SPRING - WEEK - timedelta(seconds=1), "Display"),  # one second older: does not
    ("s", utc(2026, 3, 23, 23, 30), "Referral"),  # 00:30 CET seven local days before: counts
    # Fall: 7 x 24 h before is 23:30Z on October 18, 01:30 CEST there; 00:30 CEST seven local
    # days before (22:30Z) is an hour older than the window.
    ("f", FALL - WEEK, "Email"),  # on the boundary: counts
    ("f", utc(2026, 10, 18, 22, 30), "Display"),  # 00:30 CEST seven local days before: does not
    ("f", FALL - WEEK + timedelta(seconds=1), "Referral"),  # counts
]


@pytest.fixture
async def windows(tmp_path: Path) -> AsyncIterator[Path]:
    events: list[Event] = [tp(v, ts, ch, "cart-retarget") for v, ts, ch in WINDOW_TOUCHES]
    events += [conversion("s", SPRING, 100.0), conversion("f", FALL, 100.0)]
    await write(tmp_path / "gw.db", events)
    yield tmp_path / "gw.db"


@pytest.mark.parametrize("processes", [1, 2], ids=["one-process", "workers"])
async def test_a_window_is_elapsed_time_across_a_change(
    windows: Path, channels: Channels, processes: int
) -> None:
    berlin = await zoned("Europe/Berlin")
    reports = Reports(windows, berlin, channels, processes, min_slice=1)
    await reports.open()
    try:
        q = reporting.Query(utc(2026, 3, 1), utc(2026, 11, 1))
        body = json.loads((await reporting.attribution(reports, q, by_day=True)).json())
        if processes > 1:
            assert reports._pool.pids, "the report was not shared"
    finally:
        await reports.close()
    got = {(r["day"], r["group"]): r["value"] for r in body["rows"] if r["value"]}  # not the zeros
    assert got == {
        ("2026-03-31", "Email"): 50.0,
        ("2026-03-31", "Referral"): 50.0,
        ("2026-10-26", "Email"): 50.0,
        ("2026-10-26", "Referral"): 50.0,
    }
    # The pure models read the window alike.
    for visitor, at in (("s", SPRING), ("f", FALL)):
        mine = [Touch(ch, ts, ch, "conversion") for v, ts, ch in WINDOW_TOUCHES if v == visitor]
        assert [t.channel for t in berlin.eligible(mine, at)] == ["Email", "Referral"]


async def test_a_period_given_in_local_time_reads_the_whole_window(windows: Path, channels: Channels) -> None:
    """``Reports`` takes the period's ends in any zone: the window before a period that starts
    in summer time reaches back into winter time by elapsed hours, not on the wall clock
    (which, from midnight, would start the read an hour late)."""
    berlin = ZoneInfo("Europe/Berlin")
    # The spring conversion is the period's first moment (00:30 CEST); its oldest touch is
    # 7 x 24 h before, 23:30 CET: with every window 7 days, the read must start there.
    week = {"awareness": 7.0, "consideration": 7.0, "conversion": 7.0}
    reports = Reports(windows, await zoned("Europe/Berlin", lookback_days=week), channels, 1)
    await reports.open()
    try:
        since = datetime(2026, 3, 31, 0, 30, tzinfo=berlin)
        table = await reports.credit(since, datetime(2026, 4, 1, tzinfo=berlin), ["linear"])
    finally:
        await reports.close()
    got = {group: sums["linear"][0] for (_, group, _), sums in table.items()}
    assert got == {"Email": 5000, "Referral": 5000}


async def test_the_time_series_has_each_local_day_once_across_a_change(
    tmp_path: Path, channels: Channels
) -> None:
    """In Berlin October 25 lasts 25 hours and March 29 23: the time series has a row on each
    local date of the period for each channel, once, zero where it was credited nothing —
    from the date holding ``since`` to the date holding the last instant before ``until``
    (a period ending at 00:30 on the 27th has that day; one ending at its midnight does not)."""
    events: list[Event] = []
    for i, ts in enumerate(
        [
            utc(2026, 10, 23, 22, 30),  # 00:30 CEST on October 24
            utc(2026, 10, 25, 23, 30),  # 00:30 CET on October 26 (the 25th in UTC)
            utc(2026, 3, 29, 22, 30),  # 00:30 CEST on March 30
        ]
    ):
        events += [tp(f"v{i}", ts - timedelta(minutes=1), f"c{i}"), conversion(f"v{i}", ts)]
    await write(tmp_path / "gw.db", events)
    berlin = ZoneInfo("Europe/Berlin")
    reports = Reports(tmp_path / "gw.db", await zoned("Europe/Berlin"), channels, 1)
    await reports.open()

    async def series(since: datetime, until: datetime) -> list[tuple[str, str, float]]:
        q = reporting.Query(since.astimezone(UTC), until.astimezone(UTC))
        body = json.loads((await reporting.attribution(reports, q, by_day=True)).json())
        return [(r["day"], r["group"], r["value"]) for r in body["rows"]]

    def local(month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
        return datetime(2026, month, day, hour, minute, tzinfo=berlin)

    try:
        october = [
            ("2026-10-24", "c0", 10.0),
            ("2026-10-24", "c1", 0.0),
            ("2026-10-25", "c0", 0.0),  # 22:00Z to 23:00Z the next day
            ("2026-10-25", "c1", 0.0),
            ("2026-10-26", "c1", 10.0),
            ("2026-10-26", "c0", 0.0),
        ]
        the_27th = [("2026-10-27", "c0", 0.0), ("2026-10-27", "c1", 0.0)]
        assert await series(local(10, 24), local(10, 28)) == october + the_27th
        assert await series(local(10, 24), local(10, 27, 0, 30)) == october + the_27th
        assert await series(local(10, 24), local(10, 27)) == october
        assert await series(local(3, 28), local(3, 31)) == [
            ("2026-03-28", "c2", 0.0),
            ("2026-03-29", "c2", 0.0),  # 23 hours
            ("2026-03-30", "c2", 10.0),
        ]
    finally:
        await reports.close()
