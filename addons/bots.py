"""Bot and click-fraud scoring: every landing gets a 0..100 score, a verdict and its reasons.

Configured by ``[bots]`` (weights, thresholds, actions, velocity limits) and
the creator registry (``[[creators]]`` and the admin API's standings). Reads the request (agent, headers,
client IP), the campaign addon's touchpoint and the geo addon's ASN; writes
``bot_score``, ``verdict``, ``reasons`` and ``ip_hash`` on the touchpoint (an opted-out visitor's
landing, ``Exchange.counted``, keeps its ``DailyCount`` only when scored ``allow``),
``VerdictChange`` events when a late signal re-scores a visitor's earlier
touchpoints, and — only where ``on_review``/``on_block`` say ``block`` — a 403.

Owns its in-memory state, bounded by ``max_tracked`` keys per table: the
agent-verdict LRU cache, the velocity windows, click-ID sources and per-visitor
behaviour; and the day's IP hashes (at most ``IP_HASHES``). Cheap checks come first; an
asset request costs one dict lookup.
What an agent or a header says is judged by the pure helpers in ``addons.signals``.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec

from addons.crawlers import CrawlerPatterns
from addons.signals import (
    ABSURD,
    CADENCE,
    MAX_AGENT,
    Agent,
    classify_agent,
    header_reasons,
    inhuman,
    is_asset,
    is_prefetch,
    network_of,
)
from addons.velocity import DistinctSources, HeldItems, Lru, WindowCounter
from gateway.channels import SHARED_CLICK_IDS
from gateway.creators import CreatorRegistry
from gateway.events import VERDICTS, DailyCount, Touchpoint, VerdictChange, iso
from gateway.ids import Uuid7
from gateway.keys import derive
from gateway.pipeline import Context, Exchange, Reply
from gateway.sharedcounts import SharedWindowCounter

AGENT_CACHE = 8192
"""Distinct user agents whose classification is cached (a few hundred cover most real traffic)."""
IP_HASHES = 4096
"""IPs whose hash of the day is kept (a landing's IP usually loaded a page of the site just before)."""
RECENT_TOUCHES = 4
"""Touchpoints per visitor kept for re-scoring when a late signal arrives."""
MIN_DOCS_WITHOUT_ASSETS = 3
NEVER = -math.inf
"""A time before every other, one object that every visitor's state shares (24 bytes each else)."""

BLOCK_PAGE = (
    b'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>403 Forbidden</title>'
    b'<meta name="viewport" content="width=device-width,initial-scale=1"></head>'
    b"<body><h1>403 Forbidden</h1><p>Access to this page is not allowed.</p></body></html>"
)
LATE_SIGNALS = frozenset({"robots_txt", "no_assets", "inhuman_cadence", "creator_ip_velocity"})
"""Signals that re-score touchpoints already stored when they show up later."""


def _robots_key(ex: Exchange, source: str) -> int:
    """The robots.txt flag's key: the source (``network_of`` the client IP: an IPv6 /64 as one)
    and the agent, as the process's 64-bit hash (an agent may be 8 KB; the table holds
    bots.max_tracked keys)."""
    return hash((source, ex.request.headers.get("user-agent", "")))


@dataclass(slots=True)
class Touch:
    """A recent touchpoint of a visitor, as last scored."""

    id: str
    score: int
    reasons: tuple[str, ...]
    verdict: str
    at: float
    """Unix seconds of the landing: only touches inside the window are re-scored."""


class VisitorState:
    """What one visitor did lately: page loads, assets, robots.txt, and their touchpoints.

    A plain slotted class rather than a dataclass: one is made for every new visitor (every
    landing of a new visitor), and the generated ``__init__`` with two list factories cost
    a third more.
    """

    __slots__ = (
        "assets",
        "docs",
        "hits",
        "new_until",
        "page",
        "previous",
        "robots",
        "slot",
        "times",
        "touches",
    )

    def __init__(self, new_until: float, slot: int) -> None:
        self.new_until = new_until
        """Until when (Unix seconds) the visitor's browser cache may still be empty: one window
        after their first page when they had no cookie then (no cookie, no cache either, so
        assets must load), else ``NEVER``. Only then do 3 pages without an asset tell of a script:
        later a browser shows its pages with the assets it cached (until 2026-12-07 a bool, and
        ``no_assets`` lasted as long as the state)."""
        self.docs = 0
        self.assets = 0
        self.robots = NEVER
        """When the visitor last fetched robots.txt (Unix seconds): a flag for one window, as the
        per-address one (until 2026-12-07 a bool that lasted as long as the state)."""
        # Tuples, the shared empty one until something is kept (a list is two allocations, itself
        # and its items): 4 MB less for the 32,768 new visitors of a full table (108 → 104 MB
        # resident in the landing bench); the CPU a landing did not move measurably.
        self.times: tuple[float, ...] = ()
        self.page = 0
        """The process's hash of the last page timed (path and query): a reload of it is no step."""
        self.touches: tuple[Touch, ...] = ()
        # The visitor's velocity window, as ``WindowCounter`` keeps one per key: here rather than
        # in a table of its own, which cost every new visitor a second entry, list and eviction.
        self.slot = slot
        """The current window's number (Unix seconds // window)."""
        self.hits = 0
        """Page loads in the current window."""
        self.previous = 0
        """Page loads in the window before it."""

    def hit(self, now: float, window: float) -> float:
        """Count a page load at ``now``; the estimated count in the sliding window (what
        ``WindowCounter.hit`` gives for one key)."""
        slot = int(now // window)
        if slot > self.slot:  # a new window: the current count becomes the previous one
            self.previous = self.hits if slot == self.slot + 1 else 0
            self.slot, self.hits = slot, 0
        elif slot < self.slot - 1:  # back before both windows (a backfill out of time order)
            self.slot, self.hits, self.previous = slot, 0, 0
        if slot < self.slot:  # late, from the window before: counted there
            self.previous += 1
        else:
            self.hits += 1
        # Clamped by comparisons, as WindowCounter.hit does (min and max cost as much as the rest).
        share = 1.0 - (now - self.slot * window) / window
        return self.hits + self.previous * (share if 0.0 < share < 1.0 else 1.0 if share >= 1.0 else 0.0)


class Bots:
    def configure(self, ctx: Context) -> None:
        opts = ctx.settings.options.bots
        self.opts = opts
        self.weights: dict[str, int] = msgspec.structs.asdict(opts.weights)
        self.node = ctx.settings.node
        self.secret = ctx.settings.secret
        self.new_id = Uuid7()
        crawlers = (*opts.good_crawlers, *opts.extra_good_crawlers)
        good = "|".join(re.escape(a.strip()) for a in crawlers) or r"(?!)"
        self.good = re.compile(good, re.IGNORECASE)
        self.detector = CrawlerPatterns()
        self._cached_agent = functools.lru_cache(maxsize=AGENT_CACHE)(self._agent)
        self.creators = (
            ctx.creators if ctx.creators is not None else CreatorRegistry(ctx.settings.options.creators)
        )
        self.datacenter = frozenset(opts.datacenter_asns)
        self.block_on = {"review": opts.on_review == "block", "block": opts.on_block == "block"}
        self.may_block = any(self.block_on.values())
        window, keys = float(opts.window_seconds), opts.max_tracked
        self.per_ip: WindowCounter | SharedWindowCounter
        self.per_creator_ip: WindowCounter | SharedWindowCounter
        if (shared := ctx.shared_counts) is not None:  # several workers: counted where all of them count
            key = derive(self.secret, "velocity fingerprints")
            self.per_ip, self.per_creator_ip = (SharedWindowCounter(window, t, key) for t in shared.tables)
        else:
            self.per_ip, self.per_creator_ip = WindowCounter(window, keys), WindowCounter(window, keys)
        self.window = window
        self.creator_touches: HeldItems[Touch] = HeldItems(opts.max_per_creator_ip, keys)
        """(creator, IP) → its landings so far: re-scored if the pair's count passes its limit."""
        self.click_ips = DistinctSources(window, keys, opts.max_click_id_sources + 1)
        self.click_visitors = DistinctSources(window, keys, opts.max_click_id_sources + 1)
        self.visitors: Lru[VisitorState] = Lru(keys)
        self.robots_ips: Lru[float] = Lru(keys)
        """(IP, agent) → when that agent last fetched robots.txt from that IP (a flag that lasts
        one window). The agent too, since an address is shared: an office's SEO crawler asking
        for robots.txt says nothing of the colleagues behind the same NAT."""
        self._ip_key: tuple[int, bytes] = (-1, b"")
        self._ip_hashes: dict[str, str] = {}
        """Today's hash of each IP seen lately: at most IP_HASHES, emptied when the day changes."""
        self.verdicts = {v: ctx.metrics.bot_verdicts.labels(v) for v in VERDICTS}
        self.rescored = ctx.metrics.bot_rescores
        self.signals = {r: ctx.metrics.bot_signals.labels(r) for r in ("good_crawler", *self.weights)}
        """Each signal's counter, listed at 0 from the start (an operator alerts on a rate)."""
        self.refusals = {v: ctx.metrics.bot_refusals.labels(v) for v in ("review", "block")}
        self.aggregates = {v: ctx.metrics.aggregate_landings.labels(v) for v in VERDICTS}

    def take_over(self, old: Bots) -> None:
        """A reload: go on with the running chain's windows, clicks held and visitors'
        behaviour, while they are counted as before (the same window, table size and caps; a
        change to those starts them empty). The per-IP and per-creator-and-IP counts that
        several workers share are kept by their tables anyway."""
        opts, was = self.opts, old.opts
        same = (opts.window_seconds, opts.max_tracked, opts.max_per_creator_ip, opts.max_click_id_sources)
        if same != (was.window_seconds, was.max_tracked, was.max_per_creator_ip, was.max_click_id_sources):
            return
        if not isinstance(self.per_ip, SharedWindowCounter):
            self.per_ip, self.per_creator_ip = old.per_ip, old.per_creator_ip
        self.creator_touches, self.click_ips, self.click_visitors = (
            old.creator_touches,
            old.click_ips,
            old.click_visitors,
        )
        self.visitors, self.robots_ips = old.visitors, old.robots_ips
        # Not the day's IP hashes: each chain keys them by its own day, and the old one still
        # serves its last requests; shared across midnight, one would read the other day's.

    async def running(self) -> None:
        """Compile the crawler database's patterns before the first request (about half a
        second of CPU): off the event loop, at start-up, not in a visitor's request."""
        await asyncio.to_thread(self.detector.is_crawler, "Mozilla/5.0 (warm-up)")

    def agent(self, agent: str) -> Agent:
        """The agent's verdict, cached. An overlong agent is judged at once and never cached,
        so the cache holds at most AGENT_CACHE * MAX_AGENT characters (about 4 MB)."""
        if len(agent) > MAX_AGENT:
            return ABSURD
        return self._cached_agent(agent)

    def _agent(self, agent: str) -> Agent:
        return classify_agent(agent, self.good, self.detector)

    def weight(self, reason: str) -> int:
        return self.weights.get(reason, 0)

    def verdict(self, score: int, good: bool) -> str:
        if good and not self.opts.block_good_crawlers:
            return "bot"
        if score >= self.opts.block_threshold:
            return "block"
        return "review" if score >= self.opts.review_threshold else "allow"

    def ip_hash(self, ip: str, ts: datetime, now: float | None = None) -> str:
        """Keyed hash of ``ip`` under a key derived from the master secret and the UTC day
        (keyed BLAKE2b, a MAC in one C call), remembered for the day (``now``: ``ts`` in Unix
        seconds, when the caller has it)."""
        day = int((ts.timestamp() if now is None else now) // 86400)
        hashes = self._ip_hashes
        if self._ip_key[0] != day:
            label = f"gateway/ip-hash/v1/{ts.astimezone(UTC).date().isoformat()}"
            self._ip_key = (day, derive(self.secret, label))
            hashes.clear()
        hashed = hashes.get(ip)
        if hashed is None:
            hashed = hashlib.blake2b(ip.encode(), key=self._ip_key[1], digest_size=12).hexdigest()
            if len(hashes) >= IP_HASHES:
                hashes.clear()
            hashes[ip] = hashed
        return hashed

    # -- the hook ---------------------------------------------------------------------------

    def request(self, ex: Exchange) -> None:
        req = ex.request
        visitor = ex.visitor
        touchpoint = None
        for event in ex.events:  # usually none, or the one the campaign addon just added
            if type(event) is Touchpoint:
                touchpoint = event
                break
        # A reload campaign folded into the visitor's landing (``campaign.repeat_seconds``) is
        # stored as nothing, but it is a landing still: the velocity windows count it, and it is
        # blocked as a landing would be; only the touchpoint it would have been gets no score.
        landing = ex.folded if touchpoint is None else touchpoint
        # A visitor who opted out (Sec-GPC, DNT) is only counted: the landing is scored as the
        # touchpoint it would have been, and the count taken back unless that says ``allow``.
        counted = ex.counted if landing is None else None
        if counted is not None:
            landing = counted
        if req.path == "/robots.txt":
            self._robots(ex)
        if landing is None and not req.is_document:
            if visitor is not None and is_asset(ex):
                state = self.visitors.get(visitor.id)
                if state is not None:
                    state.assets += 1
            if self.may_block:
                self._act(ex, *self._score_agent(ex))
            return
        prefetch = is_prefetch(req.headers)
        now = req.unix
        # Once for the windows, the robots.txt flag and the creator's clicks (an lru_cache hit
        # is ~800 instructions): an IPv6 /64 counts as one source.
        source = network_of(req.client_ip)
        tracked, state = self._track(ex, landing, prefetch, now, source)
        if touchpoint is None and counted is None and not self.may_block:
            return  # a page load: counted and watched; only landings are scored and stored
        reasons, good = self._score_agent(ex)
        if tracked:
            reasons += tracked
        if ex.geo is not None and ex.geo.asn in self.datacenter:
            reasons.append("datacenter")
        if prefetch:
            reasons.append("prefetch")
        if landing is not None and landing.creator_id is not None and self.creators:
            verified = self.creators.verified(landing.creator_id)
            if verified is None:
                reasons.append("unknown_creator")
            elif not verified:
                reasons.append("unverified_creator")
        weights = self.weights
        if len(reasons) > 1:
            reasons = list(dict.fromkeys(reasons))
        # One loop rather than two comprehensions, sum() and min() (each a call of its own).
        score, kept = 0, []
        for reason in reasons:
            weight = weights.get(reason)
            if weight:
                kept.append(reason)
                score += weight
        reasons = kept
        if score > 100:
            score = 100
        if good:
            score, reasons = 100, ["good_crawler", *reasons]
        verdict = self.verdict(score, good)
        if touchpoint is not None:
            touchpoint.bot_score, touchpoint.verdict, touchpoint.reasons = score, verdict, reasons
            if req.client_ip:
                touchpoint.ip_hash = self.ip_hash(req.client_ip, req.ts, now)
            self.verdicts[verdict].inc()
            for reason in reasons:
                self.signals[reason].inc()
            touch = Touch(touchpoint.id, score, tuple(reasons), verdict, now)  # () is shared
            if state is not None:
                touches = state.touches
                state.touches = (*touches[1:], touch) if len(touches) >= RECENT_TOUCHES else (*touches, touch)
            if touchpoint.creator_id is not None and "creator_ip_velocity" not in reasons:
                self.creator_touches.add((touchpoint.creator_id, source), touch)
        elif counted is not None:
            self._count(ex, verdict)
        if self.may_block:
            self._act(ex, reasons, good, verdict)

    def _count(self, ex: Exchange, verdict: str) -> None:
        """An opted-out visitor's landing: its ``DailyCount`` kept only when the verdict is
        ``allow``, as attribution counts only those touchpoints. Until 2026-12-07 a crawler, a
        blocked client or a link preview sending ``Sec-GPC: 1`` was counted as a visitor of its
        channel (and a 403 it was answered did not stop it). A count is no row to re-score: a
        late signal takes nothing back from the day's aggregate."""
        self.aggregates[verdict].inc()
        if verdict != "allow":
            ex.events[:] = [event for event in ex.events if type(event) is not DailyCount]

    def websocket(self, ex: Exchange) -> None:
        """A WebSocket upgrade: judged by its agent and headers as an asset is, so that
        ``on_review``/``on_block = "block"`` refuse it as they refuse the client's other requests
        (until 2026-12-07 no bots hook ran on it and a refused client's socket reached the site).
        Not counted in the velocity windows: a script of a page opens it, and the page counted."""
        if self.may_block:
            self._act(ex, *self._score_agent(ex))

    def _track(
        self, ex: Exchange, touchpoint: Touchpoint | None, prefetch: bool, now: float, source: str
    ) -> tuple[list[str], VisitorState | None]:
        """Every page load: velocity counts and the visitor's behaviour; a late signal found here
        re-scores the visitor's earlier touchpoints. The signals that fired, and the state."""
        state = None if ex.visitor is None else self._behaviour(ex, now, prefetch)
        reasons = self._velocity(ex, touchpoint, now, state, source)
        if state is None:
            return reasons, None
        if touchpoint is None and not state.touches and not self.may_block:
            return reasons, state  # nothing to re-score, nothing to score: the next landing will look
        late = []
        fetched = self.robots_ips.get(_robots_key(ex, source))
        if fetched is None or fetched < state.robots:  # the latest fetch, by visitor or address
            fetched = state.robots
        if now - fetched < self.window:
            late.append("robots_txt")
        if now < state.new_until and state.docs >= MIN_DOCS_WITHOUT_ASSETS and not state.assets:
            late.append("no_assets")
        if len(state.times) >= CADENCE and inhuman(state.times):
            late.append("inhuman_cadence")
        if late:
            self._rescore(ex, state.touches, late)
            reasons += late
        return reasons, state

    def _score_agent(self, ex: Exchange) -> tuple[list[str], bool]:
        headers = ex.request.headers
        agent = self.agent(headers.get("user-agent", ""))
        reasons = list(agent.reasons)
        if agent.browser and ex.request.all_headers:  # a log kept no Accept-Language to judge
            reasons += header_reasons(agent, headers, ex.request.scheme)
        return reasons, agent.good

    def _act(self, ex: Exchange, reasons: list[str], good: bool, verdict: str | None = None) -> None:
        if verdict is None:  # a page load or an asset: scored as a landing is, a good crawler 100
            kept = [r for r in dict.fromkeys(reasons) if self.weight(r)]
            verdict = self.verdict(100 if good else min(100, sum(self.weight(r) for r in kept)), good)
        if self.block_on.get(verdict):
            self.refusals[verdict].inc()
            ex.reply = Reply(
                403,
                body=BLOCK_PAGE,
                headers={"content-type": "text/html; charset=utf-8", "cache-control": "no-store"},
            )

    def _velocity(
        self, ex: Exchange, touchpoint: Touchpoint | None, now: float, state: VisitorState | None, ip: str
    ) -> list[str]:
        opts, reasons = self.opts, []
        if self.per_ip.hit(ip, now) > opts.max_per_ip:
            reasons.append("ip_velocity")
        if state is not None and state.hit(now, self.window) > opts.max_per_visitor:
            reasons.append("visitor_velocity")
        if touchpoint is None:
            return reasons
        creator = touchpoint.creator_id
        if creator is not None and self.per_creator_ip.hit((creator, ip), now) > opts.max_per_creator_ip:
            reasons.append("creator_ip_velocity")
            # The burst's earlier clicks were part of it too: re-score those still in the window.
            self._rescore(ex, self.creator_touches.take((creator, ip)), ["creator_ip_velocity"])
        if touchpoint.click_id is not None and touchpoint.click_id_kind not in SHARED_CLICK_IDS:
            # The process's 64-bit hash, not the ID: a click ID may take 1,000 characters, and the
            # two tables hold bots.max_tracked keys each.
            click = hash((touchpoint.click_id_kind, touchpoint.click_id))
            many = self.click_ips.add(click, ip, now) > opts.max_click_id_sources
            if ex.visitor is not None:
                many |= self.click_visitors.add(click, ex.visitor.id, now) > opts.max_click_id_sources
            if many:
                reasons.append("click_id_reuse")
        return reasons

    def _behaviour(self, ex: Exchange, now: float, prefetch: bool) -> VisitorState:
        assert ex.visitor is not None
        state = self.visitors.get(ex.visitor.id)
        if state is None:
            state = VisitorState(now + self.window if ex.visitor.is_new else NEVER, int(now // self.window))
            self.visitors.put(ex.visitor.id, state)
        if not prefetch:  # a speculative load is not a page the visitor saw
            state.docs += 1
            times, req = state.times, ex.request
            page = hash((req.path, req.query))
            if page == state.page and times:
                # The same page again (F5 on a slow page, a <meta> refresh): one step of the
                # visitor's way through the site, timed at its latest load, not a cadence.
                state.times = (*times[:-1], now)
            else:
                state.page = page
                state.times = (*times[1:], now) if len(times) >= CADENCE else (*times, now)
        return state

    def _robots(self, ex: Exchange) -> None:
        """A robots.txt fetch: people never ask for it. Flag the IP and re-score the visitor."""
        self.robots_ips.put(_robots_key(ex, network_of(ex.request.client_ip)), ex.request.unix)
        if ex.visitor is None:
            return
        state = self.visitors.get(ex.visitor.id)
        if state is not None:
            state.robots = ex.request.unix
            self._rescore(ex, state.touches, ["robots_txt"])

    def _rescore(self, ex: Exchange, touches: Sequence[Touch], late: list[str]) -> None:
        """Add late signals to earlier touchpoints landed inside the window; keep each change as
        an event. A touchpoint older than that keeps its verdict: a visitor's state outlives the
        window (an LRU, not a clock), and what they do days later tells nothing of that click."""
        late = [r for r in late if r in LATE_SIGNALS and self.weight(r)]
        if not late:
            return
        req = ex.request
        for touch in touches:
            if req.unix - touch.at >= self.window:
                continue
            added = [r for r in late if r not in touch.reasons]
            if not added:
                continue
            touch.reasons = (*touch.reasons, *added)
            score = min(100, touch.score + sum(self.weight(r) for r in added))
            verdict = touch.verdict if touch.verdict == "bot" else self.verdict(score, False)
            if (score, verdict) == (touch.score, touch.verdict):
                continue
            touch.score, touch.verdict = score, verdict
            ex.events.append(
                VerdictChange(
                    id=self.new_id(int(req.unix * 1000)),
                    ts=iso(req.ts, req.unix),
                    node=self.node,
                    touchpoint_id=touch.id,
                    verdict=verdict,
                    bot_score=score,
                    reasons=list(touch.reasons),
                    origin="rescore",
                    note=", ".join(added),
                )
            )
            self.rescored.inc()
