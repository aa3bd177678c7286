"""A synthetic store for the report benchmark: realistic journeys, deterministic.

``python -m bench.synth OUT.db [--touchpoints 1000000] [--conversions 100000] [--seed 7]``

People browse over ``--days`` days ending 2026-11-30: each has one to three devices
(visitors), a journey of campaign landings spread over the days before their last visit —
paid search, social, email, affiliates and creators with creator IDs, organic search,
referrals, direct — and about half of them sign in (a binding per device, so their
devices' journeys merge). Some convert, once or more, on one of their devices, with a
value from a small price list, mostly EUR, some USD; conversions of signed-in people
carry the user key as a webhook's would. ``--verdicts`` adds the bots branch's
``verdict`` column and marks a share of the touchpoints ``review`` or ``block``, and records
verdict changes: late re-scores and analysts' overrides (``verdict_changes``) on about 3 %
of the touchpoints.

The schema comes from the store's own migrations; rows go in with plain ``sqlite3`` in
large transactions (this is an offline tool, not the gateway). Same seed, same store.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench import at_least, entry
from gateway.events import iso
from gateway.ids import Uuid7
from gateway.metrics import Metrics
from gateway.options import StorageOptions
from storage.local import LocalStore

END = datetime(2026, 11, 30, tzinfo=UTC)
PRICES = (9.99, 19.0, 29.9, 49.0, 99.0, 149.5, 249.0)

# (weight, channel, source, medium, campaign prefix, click id kind, referrer host)
SOURCES: list[tuple[int, str, str | None, str | None, str | None, str | None, str | None]] = [
    (20, "Paid Search", "google", "cpc", "brand", "gclid", None),
    (6, "Paid Search", "bing", "cpc", "generic", "msclkid", None),
    (12, "Paid Social", "facebook", "paid_social", "prospecting", "fbclid", None),
    (4, "Display", "dv360", "display", "awareness-retarget", "dclid", None),
    (10, "Email", "newsletter", "email", "weekly", None, None),
    (8, "Affiliates", "partner", "affiliate", "aff", None, None),
    (6, "Affiliates", None, None, None, None, None),  # creator link, creator ID only
    (16, "Organic Search", None, None, None, None, "www.google.com"),
    (5, "Organic Social", None, None, None, None, "www.instagram.com"),
    (3, "AI Assistants", None, None, None, None, "chatgpt.com"),
    (6, "Referral", None, None, None, None, "blog.example.org"),
    (4, "Direct", "(direct)", None, None, None, None),
]
_WEIGHTS = [s[0] for s in SOURCES]
TP_COLUMNS = (
    "id, ts, node, visitor_key, source, medium, campaign, creator_id, click_id_kind, click_id, "
    "referrer_host, landing_path, raw_params, channel"
)


@dataclass
class Counts:
    touchpoints: int = 0
    conversions: int = 0
    identities: int = 0
    visitors: int = 0
    people: int = 0
    verdict_changes: int = 0


def _hex(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


def generate(
    path: Path, touchpoints: int, conversions: int, seed: int, days: int = 90, verdicts: bool = False
) -> Counts:
    asyncio.run(_create(path))
    rng = random.Random(seed)
    new_id = Uuid7()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = OFF")
    # Rows are made person by person but stored in time order, as a live gateway appends
    # them: staged in unindexed temp tables, then copied sorted by id (= time).
    for table in ("touchpoints", "identities", "conversions"):
        db.execute(f"CREATE TEMP TABLE stage_{table} AS SELECT * FROM main.{table} WHERE 0")
    creators = [f"cr_{i:04d}" for i in range(300)]
    span = timedelta(days=days).total_seconds()
    counts = Counts()
    # People convert with a chance tuned so the totals land near the targets.
    per_person = 7.0
    people = max(1, int(touchpoints / per_person))
    convert_chance = min(1.0, conversions / people / 1.15)
    tp_rows: list[tuple[object, ...]] = []
    other: dict[str, list[tuple[object, ...]]] = {"identities": [], "conversions": []}

    def flush() -> None:
        db.execute("BEGIN")
        cols = TP_COLUMNS + (", verdict" if verdicts else "")
        marks = ", ".join("?" * (14 + verdicts))
        db.executemany(f"INSERT INTO stage_touchpoints ({cols}) VALUES ({marks})", tp_rows)
        db.executemany(
            "INSERT INTO stage_identities (id, ts, node, visitor_key, user_key, rule, origin) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            other["identities"],
        )
        db.executemany(
            "INSERT INTO stage_conversions (id, ts, node, name, dedup_key, visitor_key, user_key, value, "
            "currency, order_id, origin, rule) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            other["conversions"],
        )
        db.execute("COMMIT")
        tp_rows.clear()
        other["identities"].clear()
        other["conversions"].clear()

    while counts.touchpoints < touchpoints:
        counts.people += 1
        devices = [_hex(rng) for _ in range(rng.choices((1, 2, 3), (60, 30, 10))[0])]
        counts.visitors += len(devices)
        user = _hex(rng) if rng.random() < 0.5 else None
        length = min(touchpoints - counts.touchpoints, max(1, int(rng.expovariate(1 / per_person))))
        last = END - timedelta(seconds=rng.random() * span)
        spread = rng.uniform(0.5, 25) * 86400
        times = sorted(last - timedelta(seconds=rng.random() * spread) for _ in range(length))
        for ts in times:
            _, channel, source, medium, prefix, click, referrer = rng.choices(SOURCES, _WEIGHTS)[0]
            creator = rng.choice(creators) if channel == "Affiliates" else None
            campaign = f"{prefix}-{rng.randrange(20)}" if prefix else None
            raw = {k: v for k, v in (("utm_source", source), ("utm_medium", medium)) if v}
            if campaign:
                raw["utm_campaign"] = campaign
            if creator:
                raw["c_creator"] = creator
            click_id = f"{click}.{rng.getrandbits(48):x}" if click else None
            if click:
                raw[click] = str(click_id)
            ms = int(ts.timestamp() * 1000)
            row: tuple[object, ...] = (
                new_id(ms), iso(ts), "synth", rng.choice(devices), source, medium, campaign, creator,
                click, click_id, referrer, "/landing", json.dumps(raw), channel,
            )  # fmt: skip
            if verdicts:
                roll = rng.random()
                row += ("block" if roll < 0.02 else "review" if roll < 0.05 else "allow",)
            tp_rows.append(row)
        counts.touchpoints += length
        if user:
            for device in devices:
                ms = int(times[0].timestamp() * 1000)
                other["identities"].append(
                    (new_id(ms), iso(times[0]), "synth", device, user, "login", "rule")
                )
                counts.identities += 1
        if rng.random() < convert_chance:
            for _ in range(rng.choices((1, 2), (85, 15))[0]):
                at = times[-1] + timedelta(seconds=rng.uniform(60, 3 * 86400))
                if at >= END:
                    continue
                cid = new_id(int(at.timestamp() * 1000))
                currency = "USD" if rng.random() < 0.15 else "EUR"
                other["conversions"].append((
                    cid, iso(at), "synth", "purchase", "order:" + cid, rng.choice(devices),
                    user if user and rng.random() < 0.5 else None, rng.choice(PRICES), currency,
                    cid, "rule", "purchase",
                ))  # fmt: skip
                counts.conversions += 1
        if len(tp_rows) >= 200_000:
            flush()
    flush()
    db.execute("BEGIN")
    for table in ("touchpoints", "identities", "conversions"):
        # Only the columns written: the others keep their defaults (stage tables have none).
        written = [
            row[0]
            for row in db.execute(f"SELECT name FROM pragma_table_info('stage_{table}')")
            if db.execute(f"SELECT count({row[0]}) FROM stage_{table}").fetchone()[0]
        ]
        columns = ", ".join(written)
        if written:  # none where the table has no row (no conversions asked for, nobody signed in)
            db.execute(
                f"INSERT INTO main.{table} ({columns}) SELECT {columns} FROM stage_{table} ORDER BY id"
            )
        db.execute(f"DROP TABLE stage_{table}")
    db.execute("COMMIT")
    if verdicts:
        counts.verdict_changes = _verdict_changes(db, rng, new_id)
    db.execute("PRAGMA optimize")
    db.close()
    return counts


def _verdict_changes(db: sqlite3.Connection, rng: random.Random, new_id: Uuid7) -> int:
    """Late re-scores of about one touchpoint in 300 and analysts' decisions on about one in
    1,000 (some of them overriding a re-score), a day after the landing, as a live store has."""
    rows: list[tuple[object, ...]] = []
    for tid, ts in db.execute("SELECT id, ts FROM touchpoints WHERE rowid % 97 IN (0, 1, 2) ORDER BY id"):
        at = datetime.fromisoformat(ts) + timedelta(days=1)
        roll = rng.random()
        if roll < 0.7:
            verdict = rng.choice(("review", "block", "allow"))
            rows.append((new_id(int(at.timestamp() * 1000)), iso(at), "synth", tid, verdict, "rescore", None))
        if roll > 0.6:
            at += timedelta(hours=1)
            verdict = rng.choice(("allow", "block"))
            rows.append(
                (new_id(int(at.timestamp() * 1000)), iso(at), "synth", tid, verdict, "analyst", "ana")
            )
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO verdict_changes (id, ts, node, touchpoint_id, verdict, origin, analyst) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    db.execute("COMMIT")
    return len(rows)


async def _create(path: Path) -> None:
    """An empty store with every migration applied, as the gateway would create it."""
    store = LocalStore(path, StorageOptions(), Metrics())
    await store.open()
    await store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.synth", allow_abbrev=False, description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "out", type=Path, help="store file to create (must not exist: it is never overwritten)"
    )
    parser.add_argument("--touchpoints", type=at_least(1), default=1_000_000, help="(default 1,000,000)")
    parser.add_argument(
        "--conversions",
        type=at_least(0),
        default=100_000,
        help="target (±10 %%; fewer where there are too few people to convert; default 100,000)",
    )
    parser.add_argument(
        "--days", type=at_least(1), default=90, help="the period, ending 2026-11-30 (default 90)"
    )
    parser.add_argument("--seed", type=int, default=7, help="the same seed, the same rows (default 7)")
    parser.add_argument("--verdicts", action="store_true", help="add a verdict column, 5 %% quarantined")
    args = parser.parse_args(argv)
    if args.out.exists():
        parser.error(f"{args.out} exists: give a new file (it is never overwritten)")
    started = time.perf_counter()
    try:
        counts = generate(args.out, args.touchpoints, args.conversions, args.seed, args.days, args.verdicts)
    except BaseException:  # Ctrl-C or an error: no half-made store left behind (it did not exist)
        for leftover in (args.out, *(args.out.with_name(args.out.name + end) for end in ("-wal", "-shm"))):
            leftover.unlink(missing_ok=True)
        raise
    print(
        f"{args.out}: {counts.touchpoints:,} touchpoints, {counts.conversions:,} conversions, "
        f"{counts.identities:,} bindings, {counts.visitors:,} visitors of {counts.people:,} people, "
        f"{counts.verdict_changes:,} verdict changes "
        f"in {time.perf_counter() - started:.1f} s"
    )
    return 0


if __name__ == "__main__":
    entry(main)
