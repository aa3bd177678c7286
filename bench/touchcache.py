"""Throwaway prototype, NOT wired into the product: would a worker-resident touchpoint cache
bring ``data_driven``'s learning under the 2 s target? (``bench/REPORTS.md``, evening of
2026-12-06.)

``python -m bench.touchcache --store COPY [--share 0] [--new 10000] [--memory]``

On a copy of the benchmark store (migrated: ``sqlite3 /tmp/synth.db ".backup COPY"``, then
``bench.reports``' ``migrated``), for one share of two (``Reports.shares``, as the gateway cuts
a 90-day ``data_driven``), measures in CPU seconds (``time.process_time``; the machine is
shared, so no wall clock):

- the product's learning of that share (``_learn_part``'s steps, timed one by one, with the
  bindings kept as a warm worker keeps them), and its crediting (``data_driven``, and all eight
  models as ``model=all`` does);
- (a) the cold load of the cache: every touchpoint's visitor, time, id, channel, verdict and
  consent, in the visitor index's order, as compact columns (``array``/``bytes``, channels and
  verdicts as one-byte codes, ids as 16 bytes), with a few flags per visitor;
- (b) what it holds (``--memory``: ``tracemalloc``, in a run of its own, as it slows the rest);
- (c) the learning with the other journeys walked from the cache instead of read from SQLite
  (the conversions' read, eligibility and the counting stay the product's own functions), its
  path counts and transitions compared with the product's: they must be equal;
- (d) the warm refresh: the cache loaded without the newest ``--new`` rows (rowid order: the
  store is written in time order), then those read (``rowid > kept``) into a per-visitor tail;
  the learning again, and compared again.

Nothing here writes to the store. A cache that the product would keep must also be dropped
or re-read on what this prototype does not track (erasure, retention, ``gateway reclassify``,
an import's older rows or its undo): see ``bench/REPORTS.md``.
"""

from __future__ import annotations

import argparse
import gc
import os
import sqlite3
import time
import tracemalloc
from array import array
from bisect import bisect_left, bisect_right
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import groupby
from pathlib import Path
from typing import Any

from bench import entry
from bench.reports import SINCE
from bench.synth import END
from gateway.attribution import MODELS, Attribution, markov_moves, moves_weights, paths_moves
from gateway.channels import INTERNAL, Channels
from gateway.ids import id_floor
from gateway.options import AttributionOptions, ChannelsOptions
from storage.crediting import Cand, credit_table
from storage.people import Share
from storage.report_journeys import Journeys
from storage.report_learning import _learn_part
from storage.report_period import ms, period_bounds, window_start
from storage.report_pool import resident_bytes
from storage.reports import Reports

# One row per touchpoint in the visitor index's order. The time as microseconds when it is in
# the one format the gateway writes (27 characters, ``…SS.ffffffZ``: its text order is then
# the integers' order), else -1 (that visitor then takes the slow path, which a product
# version would read from SQLite; none on the benchmark store).
LOAD = (
    "SELECT visitor_key, replace(id, '-', ''),"
    " CASE WHEN length(ts) = 27 AND substr(ts, 20, 1) = '.' AND substr(ts, 27) = 'Z'"
    " THEN unixepoch(substr(ts, 1, 19)) * 1000000 + substr(ts, 21, 6) ELSE -1 END,"
    " channel, verdict, consent, replace(substr(id, 1, 13), '-', '')"
    " = printf('%012x', unixepoch(substr(ts, 1, 19)) * 1000 + substr(ts, 21, 3))"
    " FROM touchpoints INDEXED BY touchpoints_visitor"
    " WHERE rowid <= ? ORDER BY visitor_key, id"
)
NEWER = (
    "SELECT rowid, visitor_key, id, ts, channel, verdict, consent FROM touchpoints"
    " WHERE rowid > ? ORDER BY rowid"
)
CHUNK = 100_000

# Per-visitor flags: its times in id order, every channel known and none internal, every time
# in the gateway's format. A visitor with all three, no verdict change, no tail, bound to
# nobody and wholly inside the period takes the fast path (its channel codes, sliced).
ORDERED, CLEAN, TEXT, SAME_MS, KNOWN = 1, 2, 4, 8, 16
FAST = ORDERED | CLEAN | TEXT | SAME_MS | KNOWN
INTS = TEXT | SAME_MS | KNOWN
"""What the walk needs to decide on integers alone (else it makes the rows' text, as read)."""
"""SAME_MS: every id's millisecond is its time's: a test of the time is then a test of the id."""


def ts_text(us: int) -> str:
    """The gateway's text of a time kept as microseconds (exact for rows in its format)."""
    seconds, micro = divmod(us, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micro:06d}Z"


def id_text(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass
class Cache:
    """The touchpoints' learning columns, one worker's copy."""

    codes: dict[str | None, int] = field(default_factory=lambda: {None: 0})
    names: list[str | None] = field(default_factory=lambda: [None])
    verdicts: dict[str | None, int] = field(default_factory=lambda: {None: 0, "allow": 0})
    verdict_names: list[str | None] = field(default_factory=lambda: [None])
    consents: dict[str | None, int] = field(default_factory=lambda: {None: 0})
    visitors: list[str] = field(default_factory=list)
    starts: array[int] = field(default_factory=lambda: array("l"))
    flags: bytearray = field(default_factory=bytearray)
    vmask: bytearray = field(default_factory=bytearray)  # verdict codes present, as bits
    ts: array[int] = field(default_factory=lambda: array("q"))
    ids: bytearray = field(default_factory=bytearray)  # 16 bytes a row
    channel: bytearray = field(default_factory=bytearray)
    verdict: bytearray = field(default_factory=bytearray)
    consent: bytearray = field(default_factory=bytearray)
    same: bytearray = field(default_factory=bytearray)  # per row: id ms == time ms
    changed_index: dict[str, int] = field(
        default_factory=dict
    )  # touchpoint id → row, those with a verdict change
    rowid: int = 0  # the newest rowid kept
    tail: dict[str, list[tuple[int, str, int, int, int]]] = field(default_factory=dict)
    """Rows read since the load, per visitor (time µs, id text, channel, verdict, consent codes)."""

    def code(self, table: dict[str | None, int], names: list[str | None] | None, name: str | None) -> int:
        found = table.get(name)
        if found is None:
            found = table[name] = len(table) if names is None else len(names)
            if names is not None:
                names.append(name)
        return found


def load(db: sqlite3.Connection, upto: int) -> Cache:
    """(a) Every touchpoint up to rowid ``upto``, column by column, chunk by chunk."""
    cache = Cache()
    changed = {row[0] for row in db.execute("SELECT DISTINCT touchpoint_id FROM verdict_changes")}
    changed_hex = {tid.replace("-", "") for tid in changed}
    internal = cache.code(cache.codes, cache.names, INTERNAL)
    cursor = db.execute(LOAD, (upto,))
    vis_all: list[str] = []
    n = 0
    while rows := cursor.fetchmany(CHUNK):
        vs, hexes, tss, chs, vds, css, same = zip(*rows, strict=True)
        cache.same += bytes(same)
        cache.ts.extend(tss)
        cache.ids += bytes.fromhex("".join(hexes))
        codes = cache.codes
        for name in set(chs) - codes.keys():
            cache.code(codes, cache.names, name)
        cache.channel += bytes(map(codes.__getitem__, chs))
        for name in set(vds) - cache.verdicts.keys():
            cache.code(cache.verdicts, cache.verdict_names, name)
        cache.verdict += bytes(map(cache.verdicts.__getitem__, vds))
        for name in set(css) - cache.consents.keys():
            cache.code(cache.consents, None, name)
        cache.consent += bytes(map(cache.consents.__getitem__, css))
        if changed_hex:
            for i, h in enumerate(hexes):
                if h in changed_hex:
                    cache.changed_index[id_text(bytes.fromhex(h))] = n + i
        vis_all += vs
        n += len(rows)
    # Visitors and where their rows start.
    starts, visitors = cache.starts, cache.visitors
    at = 0
    for visitor, group in groupby(vis_all):
        visitors.append(visitor)
        starts.append(at)
        at += sum(1 for _ in group)
    starts.append(at)
    del vis_all
    # Per-visitor flags.
    ts, chan, verd = cache.ts, cache.channel, cache.verdict
    flags, vmask = cache.flags, cache.vmask
    for k in range(len(visitors)):
        lo, hi = starts[k], starts[k + 1]
        flag = 0
        same = cache.same
        if hi - lo == 1:
            flag = ORDERED | (TEXT if ts[lo] >= 0 else 0) | (SAME_MS if same[lo] else 0)
            c = chan[lo]
            flag |= (CLEAN if c and c != internal else 0) | (KNOWN if c else 0)
            flags.append(flag)
            vmask.append(1 << verd[lo])
            continue
        times = ts[lo:hi]
        if min(times) >= 0:
            flag |= TEXT
        if list(times) == sorted(times):
            flag |= ORDERED
        if 0 not in same[lo:hi]:
            flag |= SAME_MS
        chans = chan[lo:hi]
        if 0 not in chans:
            flag |= KNOWN
            if internal not in chans:
                flag |= CLEAN
        flags.append(flag)
        mask = 0
        for v in set(verd[lo:hi]):
            mask |= 1 << v
        vmask.append(mask)
    cache.rowid = upto
    return cache


def refresh(db: sqlite3.Connection, cache: Cache) -> int:
    """(d) The rows newer than the newest kept (rowid), into each visitor's tail; returns how
    many. A tail row's verdict changes are looked up by its id when it is walked. Not done
    here, which a product version must do: check first (counters on ``touchpoints``, as
    migration 0009's on ``identities``) that only inserts happened; and map the verdict changes
    recorded since the load for rows already kept (``changed_index``, one primary-key lookup
    each): this store's changes are all older than the load."""
    new = db.execute(NEWER, (cache.rowid,)).fetchall()
    for rowid, visitor, tid, ts, channel, verdict, consent in new:
        ok = len(ts) == 27 and ts[19] == "." and ts[26] == "Z"
        us = (
            int(datetime.fromisoformat(ts[:19]).replace(tzinfo=UTC).timestamp()) * 1_000_000 + int(ts[20:26])
            if ok
            else -1
        )
        row = (
            us,
            tid,
            cache.code(cache.codes, cache.names, channel),
            cache.code(cache.verdicts, cache.verdict_names, verdict),
            cache.code(cache.consents, None, consent),
        )
        cache.tail.setdefault(visitor, []).append(row)
        cache.rowid = max(cache.rowid, rowid)
    return len(new)


def cached_others(
    reports: Reports,
    cache: Cache,
    part: Share,
    since: datetime,
    until: datetime,
    accepted: frozenset[str],
    touched: dict[str, list[Cand]],
    used: set[str],
) -> tuple[Counter[tuple[str, ...]], dict[str, int]]:
    """(c) ``_other_journeys`` of a share (no population, the whole period's conversions), its
    other visitors walked from the cache: the same ``Journeys``, fed the same rows."""
    people, _ = reports._people_of(part, since, until, None)
    journeys = Journeys(people)
    bounds = period_bounds(since, until, since)
    since_ts, since_id, until_ts, until_id = (
        bounds["since"],
        bounds["since_id"],
        bounds["until"],
        bounds["until_id"],
    )
    for visitor, held in touched.items():  # as the product does
        journeys.add(
            visitor,
            [
                c
                for c in held
                if c[1] not in used
                and c[0] >= since_ts
                and c[1] >= since_id
                and (c[3] or "allow") in accepted
                and c[2] != INTERNAL
            ],
        )
    widest = max(reports.attribution.tiers.windows.values())
    changed = reports._verdict_changes({**bounds, "from_id": id_floor(ms(window_start(since, widest)))})
    starts, visitors, flags, vmask = cache.starts, cache.visitors, cache.flags, cache.vmask
    over: dict[int, str] = {}
    for tid, verdict in changed.items():
        i = cache.changed_index.get(tid)
        if i is not None:
            over[i] = verdict
    changed_visitors = {bisect_right(starts, i) - 1 for i in over}
    accepted_mask = 0
    for name, code in cache.verdicts.items():
        if (name or "allow") in accepted:
            accepted_mask |= 1 << code
    since_us = int(since.timestamp()) * 1_000_000 + since.microsecond
    until_us = int(until.timestamp()) * 1_000_000 + until.microsecond
    extra, foreign = people.visitors()
    skip = set(touched).union(foreign)
    lo_key, hi_key = part.keys
    first = 0 if lo_key is None else bisect_left(visitors, lo_key)
    last = len(visitors) if hi_key is None else bisect_left(visitors, hi_key)
    indexes: list[int] = list(range(first, last))
    for v in extra:
        if v not in touched:
            k = bisect_left(visitors, v)
            if k < len(visitors) and visitors[k] == v:
                indexes.append(k)
    person_of, users = people.person_of, people.visitors_of
    tail = cache.tail
    ids, ts, chan, verd = cache.ids, cache.ts, cache.channel, cache.verdict
    names, verdict_names = cache.names, cache.verdict_names
    fast: list[bytes] = []
    gathered: dict[str, list[tuple[int, bytes, int]]] = {}
    ok = [bool(accepted_mask >> code & 1) for code in range(len(verdict_names))]
    internal = cache.codes.get(INTERNAL, -1)
    stats = Counter[str]()
    for k in indexes:
        v = visitors[k]
        if v in skip:
            continue
        lo, hi = starts[k], starts[k + 1]
        flag = flags[k]
        grouped = v in person_of or v in users
        if flag & INTS == INTS and v not in tail:
            if flag & ORDERED:  # the period's rows are one run of them
                a, b = bisect_left(ts, since_us, lo, hi), bisect_left(ts, until_us, lo, hi)
            else:
                a, b = lo, hi
            if (
                flag & (ORDERED | CLEAN) == ORDERED | CLEAN
                and not vmask[k] & ~accepted_mask
                and k not in changed_visitors
            ):
                kept = range(a, b)
                if not grouped:
                    if a < b:
                        fast.append(bytes(chan[a:b]))
                    stats["fast visitors"] += 1
                    stats["fast rows"] += hi - lo
                    continue
            else:
                kept = [
                    i
                    for i in range(a, b)
                    if (flag & ORDERED or since_us <= ts[i] < until_us)
                    and ((verdict_ok(over[i], accepted)) if i in over else ok[verd[i]])
                    and chan[i] != internal
                ]
                if not grouped and flag & ORDERED:
                    if kept:
                        fast.append(bytes(chan[i] for i in kept))
                    stats["filtered visitors"] += 1
                    stats["filtered rows"] += hi - lo
                    continue
            # Several devices (or a lone visitor's times out of id order): sorted at the end.
            gathered.setdefault(person_of.get(v, v), []).extend(
                (ts[i], ids[16 * i : 16 * i + 16], chan[i]) for i in kept
            )
            stats["gathered visitors"] += 1
            stats["gathered rows"] += hi - lo
            continue
        stats["text visitors"] += 1
        stats["text rows"] += hi - lo
        text_kept: list[tuple[str, str, str | None]] = []
        for i in range(lo, hi):
            tid = id_text(ids[16 * i : 16 * i + 16])
            text = ts_text(ts[i])  # TEXT not set: a product version would read this visitor from SQLite
            if not (since_ts <= text < until_ts and since_id <= tid < until_id):
                continue
            verdict = over[i] if i in over else verdict_names[verd[i]]
            channel = names[chan[i]]
            if (verdict or "allow") in accepted and channel != INTERNAL:
                text_kept.append((text, tid, channel))
        text_kept += _tail_rows(cache, v, changed, accepted, since_ts, until_ts, since_id, until_id)
        journeys.add(v, text_kept)
    mine_extra = set(extra)
    for v in tail:
        k = bisect_left(visitors, v)
        if k < len(visitors) and visitors[k] == v:
            continue  # has rows loaded: walked above, if the share's
        in_range = (lo_key is None or v >= lo_key) and (hi_key is None or v < hi_key)
        if v in skip or not (in_range or v in mine_extra):
            continue
        stats["tail-only visitors"] += 1
        journeys.add(v, _tail_rows(cache, v, changed, accepted, since_ts, until_ts, since_id, until_id))
    for person, rows in gathered.items():
        if person in journeys.gathered:  # the same person has rows made as text: joined there
            journeys.gathered[person] += [(ts_text(t), id_text(i), names[c]) for t, i, c in rows]
        elif rows:
            rows.sort()
            fast.append(bytes(c for _, _, c in rows))
    counted = journeys.done(reports._channels_of)
    for path, n in Counter(fast).items():
        counted[tuple(names[c] for c in path)] += n  # type: ignore[misc]
    return counted, dict(stats)


def verdict_ok(verdict: str | None, accepted: frozenset[str]) -> bool:
    return (verdict or "allow") in accepted


def _tail_rows(
    cache: Cache,
    visitor: str,
    changed: dict[str, str],
    accepted: frozenset[str],
    since_ts: str,
    until_ts: str,
    since_id: str,
    until_id: str,
) -> list[tuple[str, str, str | None]]:
    kept = []
    for us, tid, c, vd, _ in cache.tail.get(visitor, ()):
        text = ts_text(us)
        if not (since_ts <= text < until_ts and since_id <= tid < until_id):
            continue
        verdict = changed.get(tid, cache.verdict_names[vd])
        channel = cache.names[c]
        if (verdict or "allow") in accepted and channel != INTERNAL:
            kept.append((text, tid, channel))
    return kept


def cpu(fn: Any, *args: Any) -> tuple[Any, float]:
    started = time.process_time()
    answer = fn(*args)
    return answer, time.process_time() - started


def product_learning(reports: Reports, share: Share, accepted: frozenset[str]) -> dict[str, Any]:
    """``_learn_part``'s steps for one share, timed one by one (the same calls, in order)."""
    reports.report += 1
    reports._people = reports._changes = reports._kept = None
    out: dict[str, Any] = {}
    _, out["people"] = cpu(reports._people_of, share, SINCE, END, None)
    touched: dict[str, list[Cand]] = {}
    convs, out["conversions' read"] = cpu(
        reports.read, SINCE, END, None, "channel", None, share, True, touched
    )

    def converting() -> tuple[Any, set[str]]:
        journeys = [reports.eligible(c, accepted) for c in convs]
        moves = markov_moves(([t[2] for t in path], True) for path in journeys)
        return moves, {t[1] for path in journeys for t in path}

    (moves, used), out["eligibility, converting journeys"] = cpu(converting)
    out["_state"] = (convs, touched, used, moves)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.touchcache", allow_abbrev=False, description=__doc__.splitlines()[0]
    )
    parser.add_argument("--store", type=Path, required=True, help="a migrated COPY of the benchmark store")
    parser.add_argument("--share", type=int, default=0, help="which share of two (0 or 1)")
    parser.add_argument("--new", type=int, default=10_000, help="rows left out of the load, then refreshed")
    parser.add_argument("--memory", action="store_true", help="only (b): the cold load under tracemalloc")
    parser.add_argument("--rss", action="store_true", help="only (b): the cold load, resident memory")
    parser.add_argument("--credit", action="store_true", help="also time the share's crediting")
    args = parser.parse_args(argv)

    ro = sqlite3.connect(f"file:{args.store}?mode=ro", uri=True, isolation_level=None)
    (top,) = ro.execute("SELECT max(rowid) FROM touchpoints").fetchone()
    if args.rss:
        gc.collect()
        before = resident_bytes(os.getpid()) or 0
        cache = load(ro, top)
        gc.collect()
        print(
            f"(b) RSS +{((resident_bytes(os.getpid()) or 0) - before) / 2**20:.1f} MiB after the load"
            f" ({len(cache.ts):,} rows)"
        )
        return 0
    if args.memory:
        gc.collect()
        before = resident_bytes(os.getpid()) or 0
        tracemalloc.start()
        cache = load(ro, top)
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        gc.collect()
        after = resident_bytes(os.getpid()) or 0
        print(
            f"(b) held {current / 2**20:.1f} MiB (tracemalloc), peak while loading {peak / 2**20:.1f} MiB;"
            f" {len(cache.ts):,} rows, {len(cache.visitors):,} visitors"
            f" (RSS +{(after - before) / 2**20:.0f} MiB,"
            " tracemalloc's own records included)"
        )
        return 0

    attribution = Attribution(AttributionOptions())
    reports = Reports(args.store, attribution, Channels(ChannelsOptions()), processes=2)
    reports._open()
    accepted = attribution.verdicts
    shares = reports.shares(SINCE, END, None)
    share = shares[args.share]
    assert isinstance(share, Share), shares
    reports.processes = 1
    reports.report += 1
    reports._everyone()  # a warm worker keeps the bindings
    gc.disable()  # as ``paused_gc`` does in a worker

    print(f"share {share.worker} of {share.workers}; accepted verdicts {sorted(accepted)}")
    # The product, whole, for reference (the same call a worker makes).
    reports.report += 1
    reports._people = reports._changes = reports._kept = None
    (whole, _), whole_cpu = cpu(_learn_part, reports, share, SINCE, END, None, accepted, None, "channel")
    print(f"product _learn_part (whole call): {whole_cpu:.2f} s")

    # The product, step by step.
    steps = product_learning(reports, share, accepted)
    convs, touched, used, moves = steps.pop("_state")
    others, t_others = cpu(reports._other_journeys, SINCE, END, None, accepted, None, share, touched, used)
    product_moves, t_count = cpu(
        lambda: dict(paths_moves(others, False, {k: Counter(v) for k, v in moves.items()}))
    )
    steps["other journeys (SQL + Journeys)"] = t_others
    steps["counting by path"] = t_count
    assert product_moves == whole, "the step-by-step learning differs from _learn_part"
    for name, seconds in steps.items():
        print(f"  product {name:40} {seconds:.2f} s")
    common = steps["people"] + steps["conversions' read"] + steps["eligibility, converting journeys"]
    product_total = common + t_others + t_count
    print(f"  product learning, sum of steps {product_total:.2f} s")

    # (a) cold load, the whole store.
    cache, t_load = cpu(load, ro, top)
    print(
        f"(a) cold load: {len(cache.ts):,} rows, {len(cache.visitors):,} visitors,"
        f" {len(cache.names) - 1} channels: {t_load:.2f} s"
    )

    # (c) learning from the cache, same report state (conversions read as the product did).
    def from_cache(c: Cache) -> tuple[Any, Any, dict[str, int]]:
        counted, stats = cached_others(reports, c, share, SINCE, END, accepted, touched, used)
        moved = dict(paths_moves(counted, False, {k: Counter(v) for k, v in moves.items()}))
        return counted, moved, stats

    (counted, cached_moves, stats), t_cached = cpu(from_cache, cache)
    print(
        f"(c) other journeys + counting from the cache: {t_cached:.2f} s"
        f"  (product: {t_others + t_count:.2f} s)  {stats}"
    )
    print(
        f"    paths equal: {counted == others} ({len(others):,} paths, {sum(others.values()):,} journeys);"
        f" transitions equal: {cached_moves == product_moves}"
    )
    print(f"    learning with the cache: {common + t_cached:.2f} s against {product_total:.2f} s")

    # (d) warm refresh: the cache without the newest rows, then those read.
    cut = top - args.new
    del cache
    partial, t_partial = cpu(load, ro, cut)
    n, t_refresh = cpu(refresh, ro, partial)
    (counted2, cached_moves2, stats2), t_cached2 = cpu(from_cache, partial)
    print(
        f"(d) load without the newest {args.new:,} rows {t_partial:.2f} s;"
        f" refresh of {n:,} rows {t_refresh:.3f} s;"
        f" learning after it {t_cached2:.2f} s {stats2}"
    )
    print(f"    paths equal: {counted2 == others}; transitions equal: {cached_moves2 == product_moves}")
    if counted2 != others:
        diff = [
            (p, others.get(p, 0), counted2.get(p, 0))
            for p in others.keys() | counted2.keys()
            if others.get(p, 0) != counted2.get(p, 0)
        ]
        print(f"    {len(diff)} paths differ, e.g. {diff[:5]}")

    if args.credit:
        params = reports.attribution.params
        from dataclasses import replace

        params = replace(params, channel_weights=moves_weights(product_moves))
        _, t_dd = cpu(credit_table, reports.eligible, convs, ["data_driven"], "channel", accepted, params)
        _, t_all = cpu(credit_table, reports.eligible, convs, list(MODELS), "channel", accepted, params)
        print(f"crediting this share: data_driven {t_dd:.2f} s, all eight models {t_all:.2f} s")
    return 0


if __name__ == "__main__":
    entry(main)
