"""``gateway.sharedcounts``: velocity counts every worker process shares."""

from __future__ import annotations

import os
import random
import subprocess
import sys

from addons.velocity import WindowCounter
from gateway.sharedcounts import (
    MIN_SLOTS,
    SHARED_COUNTS_FD_ENV,
    SharedCounts,
    SharedWindowCounter,
    create,
    slots_for,
)

KEY = b"k" * 32


def tables(max_tracked: int = 1024) -> tuple[memoryview, ...]:
    fd = create(max_tracked)
    try:
        return SharedCounts.attach(fd).tables
    finally:
        os.close(fd)


def test_tables_are_sized_for_twice_the_keys_tracked() -> None:
    assert slots_for(1024) == MIN_SLOTS
    assert slots_for(32768) == 65536
    assert slots_for(40000) == 131072
    assert len(tables(32768)[0]) == 65536 * 5


def test_a_shared_count_estimates_as_the_in_memory_one() -> None:
    """The same hits, in several windows with gaps: the same estimates as ``WindowCounter``."""
    shared, alone = SharedWindowCounter(60.0, tables()[0], KEY), WindowCounter(60.0, 1024)
    rng = random.Random(7)
    now = 1_800_000_000.0
    for _ in range(3000):
        now += rng.choice((0.1, 1.0, 7.0, 45.0, 130.0))
        key = rng.choice(("203.0.113.9", ("ana", "203.0.113.9"), "198.51.100.1"))
        assert shared.hit(key, now) == alone.hit(key, now)
    assert len(shared) == len(alone) == 3


def test_counters_over_one_table_count_together_and_keys_stay_apart() -> None:
    table = tables()[1]
    first, second = SharedWindowCounter(3600.0, table, KEY), SharedWindowCounter(3600.0, table, KEY)
    now = 1_800_000_000.0
    for n in range(1, 11):
        counter = first if n % 2 else second
        assert counter.hit(("ana", "203.0.113.9"), now) == n
    # Twice as many keys as the table has slots: every key counted once, never another's count.
    for n in range(2 * MIN_SLOTS):
        assert first.hit(f"10.0.{n // 256}.{n % 256}", now) == 1
    assert 0.95 * MIN_SLOTS < len(first) <= MIN_SLOTS  # nearly every slot taken, none twice


def test_fingerprints_are_keyed() -> None:
    """The same IP under another key is another fingerprint: none can be tried against the table
    without the gateway's secret, nor a neighbourhood be aimed at."""
    table = tables()[0]
    ours, theirs = SharedWindowCounter(60.0, table, KEY), SharedWindowCounter(60.0, table, b"x" * 32)
    assert ours.fingerprint("203.0.113.9") != theirs.fingerprint("203.0.113.9")
    assert ours.hit("203.0.113.9", 1_800_000_000.0) == 1
    assert theirs.hit("203.0.113.9", 1_800_000_000.0) == 1  # not the same key's count


def test_a_full_neighbourhood_gives_way_to_a_new_key_least_counted_first() -> None:
    counter = SharedWindowCounter(3600.0, tables()[0], KEY)
    now = 1_800_000_000.0
    # Keys of one neighbourhood (the same first slot), counted 5, 1, 5, 5 times.
    start = counter.fingerprint("k0") % counter.slots
    keys = [k for k in (f"k{n}" for n in range(200_000)) if counter.fingerprint(k) % counter.slots == start][
        :5
    ]
    for key, times in zip(keys, (5, 1, 5, 5), strict=False):
        for _ in range(times):
            counter.hit(key, now)
    assert counter.hit(keys[4], now) == 1  # takes the slot of the key counted once
    assert counter.hit(keys[0], now) == 6  # the others kept theirs
    assert counter.hit(keys[1], now) == 1  # the one that gave way starts again
    # Two windows later nothing counts any more: a slot whose counts are stale is free.
    assert counter.hit(keys[2], now + 2 * 3600.0) == 1


def test_a_reload_to_another_window_lets_the_counts_age_out() -> None:
    """Review: after a reload from a 60 s to an hour's window, the window numbers stored in the
    slots (in the old unit) were ahead of the new ones for good, so those keys never aged out
    and added up until a restart. Windows are kept by their start time now."""
    table = tables()[0]
    now = 1_800_000_000.0
    short = SharedWindowCounter(60.0, table, KEY)
    for _ in range(5):
        short.hit("203.0.113.9", now)
    hour = SharedWindowCounter(3600.0, table, KEY)
    assert hour.hit("203.0.113.9", now + 1) <= 6
    assert hour.hit("203.0.113.9", now + 2 * 3600.0) == 1  # two hours on: only this hit
    assert hour.hit("203.0.113.9", now + 30 * 86400.0) == 1
    back = SharedWindowCounter(60.0, table, KEY)  # and back to a minute
    assert back.hit("203.0.113.9", now + 30 * 86400.0 + 600) == 1


def test_a_window_started_by_another_worker_keeps_the_previous_ones_count() -> None:
    """Two workers move a key into a new window: the second does not wipe the previous
    window's count the first kept (each window has its own pair in the slot)."""
    table = tables()[0]
    a, b = SharedWindowCounter(3600.0, table, KEY), SharedWindowCounter(3600.0, table, KEY)
    now = 1_800_000_000.0 - 1_800_000_000.0 % 3600.0  # a window's start
    for _ in range(300):
        a.hit("203.0.113.9", now + 10)
    assert a.hit("203.0.113.9", now + 3600.0) == 1 + 300 * (1 - 0.0)
    assert b.hit("203.0.113.9", now + 3600.0 + 1800.0) == 2 + 300 * 0.5


def test_worker_processes_count_in_one_table() -> None:
    """Two processes started as the supervisor starts workers (the memory file's number in the
    environment, the file kept open across exec) count one key together."""
    fd = create(1024)
    try:
        script = (
            "import os\n"
            "from gateway.sharedcounts import SharedCounts, SharedWindowCounter\n"
            "counts = SharedCounts.from_environ()\n"
            "assert counts is not None and 'GATEWAY_WORKER_COUNTS_FD' not in os.environ\n"
            "counter = SharedWindowCounter(3600.0, counts.tables[0], b'k' * 32)\n"
            "print(max(counter.hit('203.0.113.9', 1_800_000_000.0) for _ in range(50)))\n"
        )
        env = {**os.environ, SHARED_COUNTS_FD_ENV: str(fd)}
        run = [sys.executable, "-c", script]
        seen = [
            subprocess.run(run, env=env, pass_fds=(fd,), capture_output=True, text=True, timeout=30)
            for _ in range(2)
        ]
        assert [(done.returncode, done.stdout) for done in seen] == [(0, "50.0\n"), (0, "100.0\n")], seen
        counter = SharedWindowCounter(3600.0, SharedCounts.attach(fd).tables[0], KEY)
        assert counter.hit("203.0.113.9", 1_800_000_000.0) == 101
    finally:
        os.close(fd)
    assert SharedCounts.from_environ() is None  # no supervisor here
