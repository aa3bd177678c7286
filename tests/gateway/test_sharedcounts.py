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
    SharedWindowCounter,
    attach,
    create,
    fingerprint,
    slots_for,
)


def test_tables_are_sized_for_twice_the_keys_tracked() -> None:
    assert slots_for(1024) == MIN_SLOTS
    assert slots_for(32768) == 65536
    assert slots_for(40000) == 131072


def test_a_shared_count_estimates_as_the_in_memory_one() -> None:
    """The same hits, in several windows with gaps: the same estimates as ``WindowCounter``."""
    fd = create(1024)
    try:
        table = attach(fd)[0]
    finally:
        os.close(fd)
    shared, alone = SharedWindowCounter(60.0, table), WindowCounter(60.0, 1024)
    rng = random.Random(7)
    now = 1_800_000_000.0
    for _ in range(2000):
        now += rng.choice((0.1, 1.0, 7.0, 45.0, 130.0))
        key = rng.choice(("203.0.113.9", ("ana", "203.0.113.9"), "198.51.100.1"))
        assert shared.hit(key, now) == alone.hit(key, now)
    assert len(shared) == len(alone) == 3


def test_counters_over_one_table_count_together_and_keys_stay_apart() -> None:
    fd = create(1024)
    try:
        first, second = (SharedWindowCounter(3600.0, attach(fd)[1]) for _ in range(2))
    finally:
        os.close(fd)
    now = 1_800_000_000.0
    for n in range(1, 11):
        counter = first if n % 2 else second
        assert counter.hit(("ana", "203.0.113.9"), now) == n
    # Twice as many keys as the table has slots: every key counted once, never another's count.
    for n in range(2 * MIN_SLOTS):
        assert first.hit(f"10.0.{n // 256}.{n % 256}", now) == 1
    assert 0.95 * MIN_SLOTS < len(first) <= MIN_SLOTS  # nearly every slot taken, none twice


def test_a_full_neighbourhood_gives_way_to_a_new_key_least_counted_first() -> None:
    fd = create(1024)
    try:
        counter = SharedWindowCounter(3600.0, attach(fd)[0])
    finally:
        os.close(fd)
    now = 1_800_000_000.0
    # Keys of one neighbourhood (the same first slot), counted 5, 1, 5, 5 times.
    start = fingerprint("k0") % counter.slots
    keys = [k for k in (f"k{n}" for n in range(200_000)) if fingerprint(k) % counter.slots == start][:5]
    for key, times in zip(keys, (5, 1, 5, 5), strict=False):
        for _ in range(times):
            counter.hit(key, now)
    assert counter.hit(keys[4], now) == 1  # takes the slot of the key counted once
    assert counter.hit(keys[0], now) == 6  # the others kept theirs
    assert counter.hit(keys[1], now) == 1  # the one that gave way starts again
    # Two windows later nothing counts any more: a slot whose count is stale is free.
    assert counter.hit(keys[2], now + 2 * 3600.0) == 1


def test_worker_processes_count_in_one_table() -> None:
    """Two processes started as the supervisor starts workers (the memory file's number in the
    environment, the file kept open across exec) count one key together."""
    fd = create(1024)
    try:
        script = (
            "from gateway.sharedcounts import SharedWindowCounter, shared_tables\n"
            "import os\n"
            "assert 'GATEWAY_WORKER_COUNTS_FD' in os.environ\n"
            "counter = SharedWindowCounter(3600.0, shared_tables()[0])\n"
            "assert 'GATEWAY_WORKER_COUNTS_FD' not in os.environ\n"
            "print(max(counter.hit('203.0.113.9', 1_800_000_000.0) for _ in range(50)))\n"
        )
        env = {**os.environ, SHARED_COUNTS_FD_ENV: str(fd)}
        run = [sys.executable, "-c", script]
        seen = [
            subprocess.run(run, env=env, pass_fds=(fd,), capture_output=True, text=True, timeout=30)
            for _ in range(2)
        ]
        assert [(done.returncode, done.stdout) for done in seen] == [(0, "50.0\n"), (0, "100.0\n")], seen
        assert SharedWindowCounter(3600.0, attach(fd)[0]).hit("203.0.113.9", 1_800_000_000.0) == 101
    finally:
        os.close(fd)
