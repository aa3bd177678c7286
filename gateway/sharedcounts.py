"""Velocity counts shared by every worker process of one gateway.

Owns the memory they share and the sliding-window counter kept in it. With several
workers (``proxy.workers``) the kernel spreads a client's connections over them, so a
count per worker saw a burst from one IP split N ways and tripped N times later. The
supervisor creates one anonymous memory file (``memfd``) before it starts the workers,
sized from ``bots.max_tracked``, and hands it to each through ``SHARED_COUNTS_FD_ENV``
(its number, the file kept open across ``exec``); a worker maps it once
(``shared_tables``) and the bots addon counts page loads per IP and clicks per
(creator, IP) there (``SharedWindowCounter``). The memory is gone with the last process
that maps it. One process alone (no supervisor) keeps its counts in its own memory
(``addons.velocity.WindowCounter``), as before.

The counts are estimates, like the per-process ones: each table is a fixed number of
slots, a key is a 64-bit BLAKE2b fingerprint of it (no IP is written there),
looked for in ``PROBES`` neighbouring slots; when all are taken, the one least counted (or
expired) gives way. Workers update a slot without a lock: two increments of one key at the
same instant can count once, so a rate can be undercounted, by a few units in a burst.
"""

from __future__ import annotations

import hashlib
import mmap
import os
from collections.abc import Hashable

SHARED_COUNTS_FD_ENV = "GATEWAY_WORKER_COUNTS_FD"
TABLES = 2
"""Page loads per IP, clicks per (creator, IP)."""
WORDS = 4
"""Per slot: the key's fingerprint, the window number, this window's count, the previous one's."""
PROBES = 4
MIN_SLOTS = 4096


def slots_for(max_tracked: int) -> int:
    """Slots per table for ``bots.max_tracked`` keys: a power of two, at least twice as many."""
    slots = MIN_SLOTS
    while slots < 2 * max_tracked:
        slots *= 2
    return slots


def create(max_tracked: int) -> int:
    """The supervisor's shared memory (zeroed): a file descriptor to pass to every worker."""
    fd = os.memfd_create("gateway-velocity", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, TABLES * slots_for(max_tracked) * WORDS * 8)
    except BaseException:
        os.close(fd)
        raise
    return fd


_tables: list[memoryview] | None = None
_attached = False


def shared_tables() -> list[memoryview] | None:
    """This worker's view of the supervisor's tables (``TABLES`` arrays of 64-bit words), mapped
    on first use and kept for the process's life; None without a supervisor."""
    global _tables, _attached
    if _attached:
        return _tables
    _attached = True
    fd_text = os.environ.pop(SHARED_COUNTS_FD_ENV, None)  # not passed on to this worker's children
    if not fd_text:
        return None
    fd = int(fd_text)
    try:
        _tables = attach(fd)
    finally:
        os.close(fd)  # the mapping keeps the memory
    return _tables


def attach(fd: int) -> list[memoryview]:
    """The ``TABLES`` tables of the memory file ``fd`` (``create``'s), mapped: each an array of
    64-bit words, ``WORDS`` a slot."""
    words = memoryview(mmap.mmap(fd, os.fstat(fd).st_size)).cast("q")
    per_table = len(words) // TABLES
    return [words[i * per_table : (i + 1) * per_table] for i in range(TABLES)]


def fingerprint(key: Hashable) -> int:
    """A key's 64-bit fingerprint, the same in every process (``hash`` of a str is not); never 0,
    which marks an empty slot."""
    text = key if isinstance(key, str) else "\x1f".join(map(str, key))  # type: ignore[call-overload]
    found = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little", signed=True)
    return found or 1


class SharedWindowCounter:
    """``addons.velocity.WindowCounter`` over a table every worker shares: events per key in a
    sliding window of ``window`` seconds, estimated the same way (this window's count and the
    previous one's)."""

    __slots__ = ("slots", "window", "words")

    def __init__(self, window: float, words: memoryview) -> None:
        self.window = window
        self.words = words
        self.slots = len(words) // WORDS

    def __len__(self) -> int:
        """Keys held (a scan: for tests and diagnostics)."""
        return sum(1 for i in range(0, len(self.words), WORDS) if self.words[i])

    def hit(self, key: Hashable, now: float) -> float:
        """Count one event for ``key`` at ``now`` (Unix seconds); the estimated count in the window."""
        words, fp = self.words, fingerprint(key)
        slot = int(now // self.window)
        start = fp % self.slots
        found = free = weakest = -1
        weakest_count = 0
        for probe in range(PROBES):
            at = ((start + probe) % self.slots) * WORDS
            held = words[at]
            if held == fp:
                found = at
                break
            if held == 0 or words[at + 1] < slot - 1:  # empty, or nothing counted in the window
                if free < 0:
                    free = at
            elif weakest < 0 or words[at + 2] + words[at + 3] < weakest_count:
                weakest, weakest_count = at, words[at + 2] + words[at + 3]
        if found < 0:  # taken over: counts first, the fingerprint last, so that a reader never
            found = free if free >= 0 else weakest  # sees this key with the counts it replaces
            words[found + 1], words[found + 2], words[found + 3] = slot, 0, 0
            words[found] = fp
        elif slot > words[found + 1]:  # a new window: this window's count becomes the previous one
            words[found + 3] = words[found + 2] if slot == words[found + 1] + 1 else 0
            words[found + 1], words[found + 2] = slot, 0
        words[found + 2] += 1
        elapsed = (now - slot * self.window) / self.window
        return words[found + 2] + words[found + 3] * max(0.0, 1.0 - elapsed)
