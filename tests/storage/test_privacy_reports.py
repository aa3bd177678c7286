"""Reports split by population: a consented visitor (cookie), one without consent (one-day
key) and a Sec-GPC visitor (daily counts only) are credited and counted apart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.attribution import Attribution
from gateway.channels import Channels
from gateway.events import Conversion, DailyCount, Touchpoint, iso
from gateway.ids import Uuid7
from gateway.metrics import Metrics
from gateway.options import AttributionOptions, ChannelsOptions, StorageOptions
from storage.local import LocalStore, connect
from storage.populations import population_counts
from tests.storage.stores import credits_by_channel

T0 = datetime(2026, 11, 1, tzinfo=UTC)
new_id = Uuid7()


def _id(days: float) -> tuple[str, str]:
    ts = T0 + timedelta(days=days)
    return new_id(int(ts.timestamp() * 1000)), iso(ts)


def tp(visitor: str, days: float, channel: str, consent: str) -> Touchpoint:
    return Touchpoint(*_id(days), "n", visitor, channel=channel, consent=consent)


def conversion(visitor: str, days: float, value: float) -> Conversion:
    cid, ts = _id(days)
    return Conversion(cid, ts, "n", "purchase", "order:" + cid, visitor, None, value, "EUR")


@pytest.fixture(scope="module")
def channels() -> Channels:
    """Built outside the event loop: it reads the shipped table."""
    return Channels(ChannelsOptions())


async def test_reports_split_by_population(tmp_path: Path, channels: Channels) -> None:
    store = LocalStore(tmp_path / "gw.db", StorageOptions(), Metrics())
    await store.open()
    await store.write(
        [
            tp("a", 1, "Email", "cookie"),
            conversion("a", 2, 10.0),
            tp("b", 1, "Paid Social", "no_consent"),
            tp("b", 1.1, "Paid Social", "no_consent"),
            conversion("b", 1.5, 20.0),
            tp("c", 3, "Display", "cookieless"),
            DailyCount("2026-11-02", "news", "", "", "Email"),
            DailyCount("2026-11-02", "news", "", "", "Email", count=4),
            DailyCount("2026-12-24", "news", "", "", "Email"),  # outside the period
        ]
    )
    await store.close()
    attribution = Attribution(AttributionOptions())
    since, until = T0, T0 + timedelta(days=30)
    db = await connect(tmp_path / "gw.db")
    try:
        everyone = await credits_by_channel(db, attribution, channels, "last_touch", since, until)
        assert {(r.channel, r.value) for r in everyone} == {("Email", 1000), ("Paid Social", 2000)}
        consented = await credits_by_channel(
            db, attribution, channels, "last_touch", since, until, population="cookie"
        )
        assert [(r.channel, r.value) for r in consented] == [("Email", 1000)]
        refused = await credits_by_channel(
            db, attribution, channels, "last_touch", since, until, population="no_consent"
        )
        assert [(r.channel, r.value) for r in refused] == [("Paid Social", 2000)]
        assert await population_counts(db, since, until) == {
            "cookie": 1,
            "no_consent": 2,
            "cookieless": 1,
            "aggregate": 5,
        }
        # Repeated counts of a day and values add up in one row.
        async with db.execute("SELECT count(*) FROM daily_counts") as cur:
            assert await cur.fetchone() == (2,)
    finally:
        await db.close()


async def test_a_population_keeps_the_conversions_it_could_have_touched(
    tmp_path: Path, channels: Channels
) -> None:
    """Which conversions a population's report keeps does not depend on the period asked: one
    with that population's touch only after it (or older than the widest window) is left out,
    over a day or over the month — the dashboard's daily chart and a report agree."""
    store = LocalStore(tmp_path / "gw.db", StorageOptions(), Metrics())
    await store.open()
    await store.write(
        [
            conversion("late", 2, 10.0),
            tp("late", 10, "Email", "cookieless"),  # after the conversion
            tp("old", 0, "Display", "cookieless"),
            conversion("old", 40, 30.0),  # 40 days on: outside the widest window (30 days)
            tp("kept", 5, "Paid Search", "cookieless"),
            conversion("kept", 6, 20.0),
        ]
    )
    await store.close()
    attribution = Attribution(AttributionOptions())
    db = await connect(tmp_path / "gw.db")
    try:
        for since, until in ((T0, T0 + timedelta(days=45)), (T0 + timedelta(days=2), T0 + timedelta(days=3))):
            rows = await credits_by_channel(
                db, attribution, channels, "linear", since, until, population="cookieless"
            )
            expected = [("Paid Search", 2000)] if until - since > timedelta(days=1) else []
            assert [(r.channel, r.value) for r in rows] == expected
    finally:
        await db.close()
