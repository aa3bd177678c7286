"""The central store: touchpoints keep their population through the sync, and retention
purges there too (``gateway purge`` and the daily task share ``purge``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from gateway.events import Touchpoint, iso
from gateway.ids import uuid7
from gateway.metrics import Metrics
from storage.local import LocalStore
from storage.retention import purge, purge_counted
from storage.sync import Sync
from tests.conftest import make_settings

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


def touch(days_ago: int, consent: str) -> Touchpoint:
    at = NOW - timedelta(days=days_ago)
    return Touchpoint(uuid7(int(at.timestamp() * 1000)), iso(at), "a", f"{days_ago:032x}", consent=consent)


async def test_population_synced_and_central_purged(tmp_path: Path, central_dsn: str) -> None:
    toml = '[central]\nurl = "env:CENTRAL_DSN"\n[privacy]\nretention_days = 30\n'
    settings = make_settings(tmp_path, toml, CENTRAL_DSN=central_dsn)
    store = LocalStore(settings.store_path, settings.options.storage, Metrics())
    await store.open()
    await store.write([touch(90, "cookie"), touch(40, "no_consent"), touch(2, "cookieless")])
    await store.close()
    await Sync(settings.store_path, central_dsn, settings.options.central, Metrics()).once()
    conn = await asyncpg.connect(central_dsn)
    try:
        consents = await conn.fetch("SELECT consent FROM touchpoints ORDER BY id")
        assert [r[0] for r in consents] == ["cookie", "no_consent", "cookieless"]
        dry = await purge(settings, NOW, dry_run=True)
        assert dry["local"]["touchpoints"] == 2 and dry["central"]["touchpoints"] == 2
        assert await conn.fetchval("SELECT count(*) FROM touchpoints") == 3
        metrics = Metrics()
        done = await purge_counted(settings, metrics, NOW)
        assert done["central"] == {
            "touchpoints": 2,
            "identities": 0,
            "conversions": 0,
            "verdict_changes": 0,
            "daily_counts": 0,
        }
        assert [r[0] for r in await conn.fetch("SELECT consent FROM touchpoints")] == ["cookieless"]
        assert (
            metrics.registry.get_sample_value("gateway_purged_rows_total", {"table": "central:touchpoints"})
            == 2
        )
    finally:
        await conn.close()
