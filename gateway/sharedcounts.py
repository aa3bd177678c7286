"""Velocity counts shared by every worker process of one gateway.

Owns the memory they share and the sliding-window counter kept in it. With several
workers (``proxy.workers``) the kernel spreads a client's connections over them, so a
count per worker saw a burst from one IP split N ways and tripped N times later. The
supervisor creates one anonymous memory file (``memfd``) before it starts the workers,
sized from ``bots.max_tracked``, and hands it to each through ``SHARED_COUNTS_FD_ENV``
(its number, the file kept open across ``exec``); a worker maps it once at its start
(``SharedCounts.from_environ``) and the bots addon counts page loads per IP and clicks
per (creator, IP) there (``SharedWindowCounter``). The memory is gone with the last
process that maps it. One process alone (no supervisor) keeps its counts in its own
memory (``addons.velocity.WindowCounter``), as before.

The counts are estimates, like the per-process ones. Each table has a fixed number of
slots; a key is a 64-bit BLAKE2b fingerprint keyed with a key the workers derive from the
gateway's secret (no IP is written there, and none can be tried against it), looked for in
``PROBES`` neighbouring slots; when all are taken, the one with nothing counted lately, or
else the least counted, gives way. A slot keeps two (window start, count) pairs, one for
even windows and one for odd ones, so moving to a new window only resets that window's own
pair. Workers update a slot without a lock: two hits of one key at the same instant may
count once, so a rate can be undercounted by a few.
"""

from __future__ import annotations

import hashlib
import mmap
import os
from collections.abc import Hashable
from dataclasses import dataclass

SHARED_COUNTS_FD_ENV = "GATEWAY_WORKER_COUNTS_FD"
TABLES = 2
"""Page loads per IP, clicks per (creator, IP)."""
WORDS = 5
"""Per slot: the key's fingerprint; the start (Unix ms) and count of the last even window
counted; the same of the last odd one."""
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


@dataclass(frozen=True)
class SharedCounts:
    """The tables of the supervisor's memory file, mapped in this worker: ``TABLES`` arrays of
    64-bit words, ``WORDS`` a slot."""

    tables: tuple[memoryview, ...]

    @classmethod
    def attach(cls, fd: int) -> SharedCounts:
        """The memory file ``fd`` (``create``'s), mapped; ``fd`` stays open (the caller's)."""
        words = memoryview(mmap.mmap(fd, os.fstat(fd).st_size)).cast("q")
        per_table = len(words) // TABLES
        return cls(tuple(words[i * per_table : (i + 1) * per_table] for i in range(TABLES)))

    @classmethod
    def from_environ(cls) -> SharedCounts | None:
        """A worker's, from the file its supervisor handed it (closed once mapped, and its
        number kept from this worker's own children); None without a supervisor."""
        fd_text = os.environ.pop(SHARED_COUNTS_FD_ENV, None)
        if not fd_text:
            return None
        fd = int(fd_text)
        try:
            return cls.attach(fd)
        finally:
            os.close(fd)  # the mapping keeps the memory


class SharedWindowCounter:
    """``addons.velocity.WindowCounter`` over a table every worker shares: events per key in a
    sliding window of ``window`` seconds, estimated the same way (this window's count and the
    previous one's, weighed by how much of it is still inside the window). ``key``: the
    fingerprints' BLAKE2b key, the same in every worker."""

    __slots__ = ("key", "slots", "window", "window_ms", "words")

    def __init__(self, window: float, words: memoryview, key: bytes) -> None:
        self.window = window
        self.window_ms = round(window * 1000)
        self.words = words
        self.slots = len(words) // WORDS
        self.key = key[:64]

    def __len__(self) -> int:
        """Keys held (a scan: for tests and diagnostics)."""
        return sum(1 for i in range(0, len(self.words), WORDS) if self.words[i])

    def fingerprint(self, key: Hashable) -> int:
        """``key``'s 64-bit fingerprint, the same in every worker; never 0 (an empty slot)."""
        text = key if isinstance(key, str) else "\x1f".join(map(str, key))  # type: ignore[call-overload]
        digest = hashlib.blake2b(text.encode(), digest_size=8, key=self.key).digest()
        return int.from_bytes(digest, "little", signed=True) or 1

    def hit(self, key: Hashable, now: float) -> float:
        """Count one event for ``key`` at ``now`` (Unix seconds); the estimated count in the window."""
        words, fp, span = self.words, self.fingerprint(key), self.window_ms
        slot = int(now // self.window)
        start = slot * span
        lately = start - span  # a pair that started before this is of no use any more
        found = free = weakest = -1
        weakest_count = 0
        first = fp % self.slots
        for probe in range(PROBES):
            at = ((first + probe) % self.slots) * WORDS
            held = words[at]
            if held == fp:
                found = at
                break
            if held == 0 or max(words[at + 1], words[at + 3]) < lately:  # nothing counted lately
                if free < 0:
                    free = at
            elif weakest < 0 or words[at + 2] + words[at + 4] < weakest_count:
                weakest, weakest_count = at, words[at + 2] + words[at + 4]
        if found < 0:  # taken over: the counts cleared first, the fingerprint last, so that a
            found = free if free >= 0 else weakest  # reader never sees it with another's counts
            words[found + 1] = words[found + 2] = words[found + 3] = words[found + 4] = 0
            words[found] = fp
        here = found + (1 if slot % 2 == 0 else 3)  # this window's pair (start, count)
        there = found + (3 if slot % 2 == 0 else 1)  # the other: the previous window's, if it is
        if words[here] != start:  # the pair holds an older window: it starts again
            words[here + 1] = 0
            words[here] = start
        words[here + 1] += 1
        previous = words[there + 1] if 0 < start - words[there] <= span else 0
        elapsed = (now - slot * self.window) / self.window
        return words[here + 1] + previous * max(0.0, 1.0 - elapsed)
