"""Backfill: replays history through the addon chain, offline, with historical timestamps.

Owns how a logged request becomes an ``Exchange`` (method, path, query, host,
referer, user agent, the logged time as ``RequestView.ts``, the status in a
``ResponseView``), who its visitor is (our verified ``gw_vid`` cookie if the log
kept it, else a keyed hash of IP, user agent and UTC day — an approximation,
never the raw IP; the IP is the logged X-Forwarded-For's client when the logged peer is a
trusted proxy, as live), and the deterministic event ids that make a re-import a
no-op (a UUIDv7 of the line's time whose random bits are a keyed hash of the
file's identity, the line number and the line). The importer hands the
visitor to the chain on the ``Exchange`` (the identity addon then keeps it).
Segment archives go through the
live ``/_gw/segment`` mapping instead (``gateway.mapping``). Reading is
``gateway.logformats``; the command is ``gateway.importcmd``, its run ``gateway.importrun``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import sqlite3
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from addons.bots import NEVER, RECENT_TOUCHES, Bots, VisitorState
from addons.campaign import DROPPED_WHY, Campaign, hostname, shown_key
from addons.identity import opts_out, verify_cookie
from addons.stitching import RecentPairs, Stitching
from addons.velocity import Lru
from gateway.config import Settings
from gateway.events import Binding, Conversion, DailyCount, Event, Touchpoint, VerdictChange
from gateway.forwarding import client_ip, is_trusted
from gateway.history import UNENDED, Item, Line, Record, Skip
from gateway.ids import Uuid7, uuid7_keyed
from gateway.importlandings import StoredLandings
from gateway.keys import Keys, derive
from gateway.logformats import NOT_IN_FORMAT, OLDEST_YEARS, TOO_OLD
from gateway.mapping import Invalid, Limits, map_event
from gateway.metrics import Metrics
from gateway.notices import Notices
from gateway.options import SourceOptions
from gateway.pipeline import (
    Exchange,
    RequestView,
    ResponseView,
    Visitor,
    build_pipeline,
    parse_cookies,
    split_target,
)
from gateway.placeholders import placeholder
from gateway.sources import MISSING, SourceMap, compile_source, resolve

PAGE_EXTENSIONS = frozenset({"html", "htm", "php", "asp", "aspx", "jsp", "cfm", "shtml"})
"""A logged path whose last segment has no extension, or one of these, counts as a page load."""
MAX_EXAMPLES = 5
MAX_REASONS_SHOWN = 50
"""Past the first five skipped lines, the first line of each further reason is shown, for this
many reasons (a reason is a kind of fault, not a line's value: there are few)."""
NO_AGENT = (
    "  no user agent: not one line logged a User-Agent, so every touchpoint was judged empty_agent"
    " and blocked, and no report counts it (attribution.verdicts). A json-lines log that keeps it"
    " under another name needs --field user_agent=POINTER (nginx's is /http_user_agent; its Referer"
    " /http_referer): try it with --dry-run, since a line imported stays as it was stored (importing"
    " it again adds nothing); a log format without it (Apache's common) cannot tell visitors from bots"
)
"""What the summary says when no logged request had a User-Agent: a json-lines field not where
the mapping points (nginx names it ``http_user_agent``), or a log format without one."""
_TABLE_NAMES = {"touchpoints": "touchpoints", "identities": "bindings", "conversions": "conversions"}


def _none_in_format(lines: int, blank: int, events: int, skipped: Counter[str]) -> bool:
    reasons = [reason for reason in skipped if reason != UNENDED]
    return (
        lines > 0
        and not events
        and sum(skipped.values()) >= lines - blank
        and bool(reasons)
        and all(reason.startswith(NOT_IN_FORMAT) for reason in reasons)
    )


@dataclass
class Failed:
    """A file ``gateway import`` did not import, or not whole: ``error`` when it could not be
    read (before any file was, or part way: ``read_to`` is the line up to which it was replayed),
    None when no line read is in the format asked for."""

    name: str
    error: OSError | None = None
    read_to: int = 0
    before_any: bool = False
    """Found before any file was read (missing, a directory, not to be opened): none of it read."""


@dataclass
class Summary:
    """What an import read, produced and skipped."""

    files: int = 0
    lines: int = 0
    events: Counter[str] = field(default_factory=Counter)
    """Events produced, by table."""
    skipped: Counter[str] = field(default_factory=Counter)
    """Skipped lines (or Segment events) by reason."""
    examples: list[str] = field(default_factory=list)
    """The first few skips, as ``file:line: reason``."""
    new_rows: dict[str, int] | None = None
    """Rows the import's run added, by table (None: a dry run): not those another import or the
    live gateway wrote meanwhile."""
    seconds: float = 0.0
    interrupted: str = ""
    """The signal that stopped the import part way (``SIGINT``, ``SIGTERM``); empty: it ran to the end."""
    read_to: tuple[str, int] = ("", 0)
    """The file and line number up to which every line was replayed and handed to the store."""
    read_stream: bool = False
    """That file is a stream (standard input, a pipe named by its path): known by its lines from
    the first, so what is left of it is imported by sending all of it again."""
    read_all: bool = False
    """Every file was read to its end (a stop that came later found nothing left to read)."""
    erased: int = 0
    """Events left out: about a user erased after their date (or a visitor erased with one)."""
    expired: int = 0
    """Events left out: older than ``privacy.retention_days``."""
    no_touchpoint: int = 0
    """Re-scores (verdict changes) the store left out: it does not have their landing (left out
    as erased or expired, refused, never stored). Until 2026-12-07 counted in ``erased``."""
    retention_days: int = 0
    failed: list[Failed] = field(default_factory=list)
    """The files not imported, or not whole, in the order met: missing, a directory, not to be
    opened (found before any file is read), broken part way (corrupt, cut short), or of which
    no line read is in the format asked for. The other files are imported all the same."""
    run: int = 0
    """The store's number of this import run (``gateway import --undo RUN``); 0: none recorded
    (a dry run, or nothing opened)."""
    unfinished: str = ""
    """Why the store did not record the end of run ``run`` (a write lock held past the import's
    wait, a failing disk): its rows are in and recorded, it is listed as not finished. Empty:
    recorded, or no run."""
    blank: int = 0
    """Blank lines among ``lines``: neither replayed nor skipped."""
    forwarded: int = 0
    """Lines whose client address is their logged X-Forwarded-For's (the peer a trusted proxy)."""
    unbelieved: int = 0
    """Lines that logged an X-Forwarded-For from a peer that is not a trusted proxy."""
    requests: int = 0
    """Logged requests replayed, and of them ``with_agent`` logged a User-Agent: none of them
    did, every touchpoint was blocked as ``empty_agent``, and the summary says why."""
    with_agent: int = 0
    calls: bool = False
    """A Segment import: a line may hold a batch of calls, and its calls are counted, not its lines
    (no ``replayed``)."""
    would_add: dict[str, int] | None = None
    """A dry run's rows, by table, that a real run would add: not in the store, nor made by an
    earlier line of the files (None: a real run, or nothing was checked)."""
    already: dict[str, int] = field(default_factory=dict)
    """A dry run's rows, by table, that the store has already (or an earlier line made): a real run
    would skip them as it skips a re-imported line."""
    unrecorded: str = ""
    """Why an import that added no row recorded no run (another process held the store's write
    lock): empty when it was recorded, or for a dry run."""
    unchecked: str = ""
    """Why a dry run did not check its rows against the store (it could not be read): empty when
    it did, or for a real run."""

    def skip(self, where: str, number: int, reason: str, detail: str = "") -> None:
        """One skipped line, counted by ``reason``; ``detail`` (its value) shown in the first few,
        and in the first of each reason, so that every reason counted has a line to find it by."""
        first = reason not in self.skipped
        self.skipped[reason] += 1
        if len(self.examples) < MAX_EXAMPLES or (first and len(self.skipped) <= MAX_REASONS_SHOWN):
            self.examples.append(f"{where}:{number}: {reason}{detail}")

    def refused(self, where: str, number: int, events: Sequence[Event], error: Exception) -> None:
        """A line whose rows (``events``) the store refused: skipped, its events uncounted."""
        for event in events:
            self.events[event.table] -= 1
        self.skip(where, number, f"{UNSTORABLE}{unstorable_why(error)}")

    def none_in_format(self) -> bool:
        """Lines were read and none gave anything: each was skipped as not in the format asked
        for (a JSON log read as ``combined``, a json-lines log whose time is elsewhere). A last
        line not read (``UNENDED``: a log being written) says nothing of the format either way."""
        return _none_in_format(self.lines, self.blank, sum(self.events.values()), self.skipped)

    def mark(self) -> tuple[int, int, int, Counter[str]]:
        """Where the counts stand, for ``none_in_format_since``: before a file is read."""
        return self.lines, self.blank, sum(self.events.values()), self.skipped.copy()

    def none_in_format_since(self, mark: tuple[int, int, int, Counter[str]]) -> bool:
        """``none_in_format`` for the lines read since ``mark``: one file's."""
        lines, blank, events, skipped = mark
        return _none_in_format(
            self.lines - lines, self.blank - blank, sum(self.events.values()) - events, self.skipped - skipped
        )

    def empty(self) -> bool:
        """Every file opened was read to its end, and held nothing: not a line, blank or not."""
        return (
            self.files > 0
            and self.read_all
            and not (self.lines or self.skipped or self.interrupted)
            and all(failed.before_any for failed in self.failed)
        )

    def render(self) -> str:
        rate = self.lines / self.seconds if self.seconds > 0 else 0.0
        out = [
            f"gateway import: {_counted(self.files, 'file')}, {_counted(self.lines, 'line')} read in"
            f" {self.seconds:.1f} s"
            f" ({rate:,.0f} lines/s)"
        ]
        if not self.calls and self.lines:  # logged requests (not Segment calls: a line holds several)
            # Shown whenever a line was read, none replayed too: a file of blank lines said "3 lines
            # read" and nothing of them, one of junk "2 lines read" and "skipped: 2" with a blank
            # line among them (until 2026-12-07).
            skipped = sum(self.skipped.values()) - self.skipped[UNENDED]  # that one: not in ``lines``
            out.append(
                f"  {'replayed:':13}{self.lines - self.blank - skipped:>10,}   (lines run through the"
                f" chain as live requests; the others of the {self.lines:,} read: {skipped:,} skipped,"
                f" below, and {self.blank:,} blank)"
            )
        for table, label in _TABLE_NAMES.items():
            line = f"  {label + ':':13}{self.events[table]:>10,}"
            if self.new_rows is not None:
                line += f"   new in the store: {self.new_rows.get(table, 0):,}"
            elif self.would_add is not None:  # a dry run: what the real run would add
                line += (
                    f"   would be new in the store: {self.would_add.get(table, 0):,},"
                    f" already in the store: {self.already.get(table, 0):,}"
                )
            out.append(line)
        if self.forwarded:
            out.append(
                f"  {'forwarded:':13}{self.forwarded:>10,}   (lines whose client address is their logged"
                " X-Forwarded-For's: the peer is a trusted proxy)"
            )
        if self.unbelieved:
            out.append(
                f"  {'not trusted:':13}{self.unbelieved:>10,}   (lines that logged an X-Forwarded-For from a"
                " peer that is not in proxy.trusted_proxies or --trusted-proxy: their client is the"
                " logged peer — right when the server logged the client itself (nginx realip);"
                " if the log was written behind a load balancer, name it with --trusted-proxy)"
            )
        if self.erased:
            out.append(f"  {'erased:':13}{self.erased:>10,}   (of users erased since: not stored again)")
        if self.expired:
            out.append(
                f"  {'expired:':13}{self.expired:>10,}   (older than privacy.retention_days ="
                f" {self.retention_days}: not stored, a purge would delete them)"
            )
        if self.no_touchpoint:
            out.append(
                f"  {'re-scores:':13}{self.no_touchpoint:>10,}   (of landings the store does not have:"
                " erased, past privacy.retention_days, refused or never stored; not stored)"
            )
        skipped_line = f"  {'skipped:':13}{sum(self.skipped.values()):>10,}"
        if self.skipped[UNENDED]:  # "0 lines read" and "skipped: 1" of a file without a line end
            skipped_line += (
                f"   (of them {self.skipped[UNENDED]:,} last line without its line end: not read, so not"
                " among the lines read)"
            )
        out.append(skipped_line)
        for reason, count in self.skipped.most_common():
            out.append(f"    {count:>8,}  {reason}")
        if self.examples:
            out.append("  first skipped:")
            out.extend(f"    {example}" for example in self.examples)
        if self.requests and not self.with_agent:
            out.append(NO_AGENT)
        if self.empty():  # said, not left to "0 lines read" (a log rotated away, a copy that failed)
            out.append(
                "  nothing read: " + ("the file is empty" if self.files == 1 else "the files are empty")
            )
        if self.unchecked:
            out.append(f"  already in the store: not known, {self.unchecked}")
        if self.new_rows is None:
            out.append("  dry run: nothing was written")
        elif self.run and not any(self.new_rows.values()):  # recorded all the same (until 2026-12-07 not)
            out.append(
                f"  run: {self.run} (it added no touchpoint, binding or conversion;"
                " gateway import --list shows it)"
            )
        elif self.run:
            out.append(f"  run: {self.run} (gateway import --undo {self.run} removes the rows it added)")
        elif self.unrecorded:
            out.append(f"  run: none recorded (it added no row, and {self.unrecorded})")
        return "\n".join(out)


UNSTORABLE = "the store refused its rows: "
"""The beginning of why a line is skipped whose rows the store refused (``Summary.refused``): the
other lines of its batch are stored all the same."""


def unstorable_why(error: Exception) -> str:
    """Why the store refused a line's rows, in words that group alike lines: SQLite's message (a
    constraint's, a trigger's), or the text it cannot encode, which its message places by
    position."""
    if isinstance(error, UnicodeEncodeError):
        bad = error.object[error.start : error.end].encode("unicode_escape").decode()
        return f"a text that is not Unicode (a lone surrogate, {bad})"
    if isinstance(error, sqlite3.Error):
        return str(error)
    return f"{type(error).__name__}: {error}"


def looks_like_page(method: str, path: str, status: int) -> bool:
    """Whether a logged request was probably a page load (logs keep no Accept header)."""
    if method not in ("GET", "HEAD") or status >= 400:
        return False
    last = path.rpartition("/")[2]
    return "." not in last or last.rpartition(".")[2].lower() in PAGE_EXTENSIONS


def segment_source(settings: Settings) -> SourceMap:
    """The first segment-format ``[[sources]]`` entry's mapping, else Segment's defaults."""
    for source in settings.options.sources:
        if source.format == "segment":
            return compile_source(source)
    return compile_source(SourceOptions(name="import", secrets=(), format="segment"))


class Replayer:
    """Turns read items into events: log lines through the pipeline, Segment events through the
    Segment mapping; every event gets its deterministic id."""

    def __init__(
        self, settings: Settings, metrics: Metrics, default_host: str = "", notices: Notices | None = None
    ) -> None:
        """``notices``: where the chain's warnings about the config go (``gateway/notices.py``);
        an import worker's knows what the parent already said."""
        opts = settings.options
        self.keys = Keys.from_master(settings.secret, opts.identity.user_id_storage)
        self.pipeline = build_pipeline(settings, metrics, self.keys, notices=notices, live=False)
        for _name, addon in self.pipeline.addons:
            if isinstance(addon, Campaign):
                # No reload folding (``campaign.repeat_seconds``) here: whether a line is a reload
                # depends on the lines the same process replayed before it, and with --workers
                # (or a stopped import run again) those are not the file's: the touchpoints would
                # depend on the chunks, where an import's rows are the same whichever process
                # made them. The live proxy folds; an import records each reload, as before.
                addon.landings.seconds = 0
        self.cookie_name = opts.identity.cookie_name
        self.visitor_mac = derive(settings.secret, "gateway/import-visitor/v1")
        self.id_mac = derive(settings.secret, "gateway/import-id/v1")
        public = urlsplit(opts.proxy.public_origin) if opts.proxy.public_origin else None
        self.host = default_host or (public.netloc if public else "")
        self.site_hosts = frozenset(
            hostname(host) for host in (default_host, public.netloc if public else "") if host
        )
        """The site's own hosts (--host, ``proxy.public_origin``), without port: an absolute-form
        request line naming another is a proxy's request, not a landing here."""
        self.trusted = settings.trusted_networks
        self.scheme = public.scheme if public else "https"
        privacy = opts.privacy
        self.opt_out = tuple(
            reason
            for reason, on in ((OPTED_OUT_GPC, privacy.honor_gpc), (OPTED_OUT_DNT, privacy.honor_dnt))
            if on
        )
        self._visitors: dict[tuple[str, str, int], Visitor] = {}
        self._landings: Lru[str] = Lru(opts.bots.max_tracked)
        """The chain's id of each recent landing → the id it is stored under (``stamp``): bots
        scoring keeps the chain's, and a later line's re-score of the landing (robots.txt
        fetched next) names it. As many as bots scoring holds landings to re-score."""
        self.bots = next((addon for _name, addon in self.pipeline.addons if isinstance(addon, Bots)), None)
        self.stored: StoredLandings | None = None
        """The landings earlier runs stored, which a robots.txt line re-scores (``stored_landings``)."""
        if self.bots is not None and self.bots.weight("robots_txt"):
            self.stored = StoredLandings(settings.store_path)
        self.segment = segment_source(settings)
        self.limits = Limits(
            keys=self.keys,
            node=settings.node,
            ids=Uuid7(),
            max_age=timedelta(days=365 * OLDEST_YEARS),
            tolerance=timedelta(seconds=opts.webhooks.tolerance_seconds),
            max_len=opts.campaign.max_value_length,
            channels=settings.channels,
        )

    def recent_bindings(self) -> RecentPairs | None:
        """The pairs the chain's ``stitching`` does not bind again (None: no identity rules)."""
        for _name, addon in self.pipeline.addons:
            if isinstance(addon, Stitching):
                return addon.recent
        return None

    def derived_visitor(self, ip: str, user_agent: str, ts: datetime) -> Visitor:
        """The visitor of a log line without our cookie: a keyed hash of (IP, user agent, UTC
        day). An approximation: people behind one address with one browser are one visitor, and
        a visitor is new each day. The IP itself is never kept."""
        day = int(ts.timestamp()) // 86400
        key = (ip, user_agent, day)
        visitor = self._visitors.get(key)
        if visitor is None:
            seed = f"{ip}\0{user_agent}\0{day}".encode()
            digest = hashlib.blake2b(seed, key=self.visitor_mac, digest_size=16).digest()
            visitor_id = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            visitor = Visitor(visitor_id, False, self.keys.visitor_key)
            if len(self._visitors) > 200_000:
                self._visitors.clear()
            self._visitors[key] = visitor
        return visitor

    def client(self, line: Line) -> str:
        """The line's client address, as the live proxy finds it (``forwarding.client_ip``): the
        logged peer, or — when that is a trusted proxy — the right-most address of the logged
        X-Forwarded-For that is not one."""
        return client_ip(line.ip, line.forwarded_for, self.trusted) if line.forwarded_for else line.ip

    def visitor(self, line: Line, ip: str) -> Visitor:
        """Our cookie's visitor when the line kept the cookie and its tag verifies; else derived
        (from the client address ``ip``)."""
        if line.cookie:
            value = parse_cookies(line.cookie).get(self.cookie_name)
            visitor_id = verify_cookie(self.keys.cookie_mac, value) if value else None
            if visitor_id is not None:
                return Visitor(visitor_id, False, self.keys.visitor_key)
        return self.derived_visitor(ip, line.user_agent, line.ts)

    def exchange(self, line: Line, ip: str) -> Exchange:
        """The line as a request from client address ``ip`` (``client``)."""
        path, query, _ = split_target(line.target)  # as live: a "#" ends the query
        headers = dict(line.headers) if line.headers else {}
        host = line.host or self.host
        headers["host"] = host
        if line.referer:
            headers["referer"] = line.referer
        if line.user_agent:
            headers["user-agent"] = line.user_agent
        if line.headers is None and looks_like_page(line.method, path, line.status):
            headers["accept"] = "text/html"
        view = RequestView(line.method, self.scheme, host, path, query, headers, ip, line.ts)
        view.all_headers = line.headers is not None  # a flow dump's are all there; a log's are not
        return Exchange(view, visitor=self.visitor(line, ip))

    def opted_out(self, line: Line) -> str:
        """Why a flow dump's line is not imported: it kept ``Sec-GPC: 1`` (or ``DNT: 1``, when
        honoured), for which the live gateway keeps no visitor, only a daily count; "" if not.
        Nor is the count made here: a second import of the file would add it again."""
        if line.headers:
            for reason in self.opt_out:
                if opts_out(line.headers, reason.partition(":")[0].lower()):
                    return reason
        return ""

    def elsewhere(self, line: Line) -> bool:
        """Whether ``line``'s absolute-form request line names a host not this site's: one of
        ``site_hosts`` when the import knows them, else the line's own logged Host."""
        if not line.authority:
            return False
        ours = self.site_hosts or ({hostname(line.host)} if line.host else set())
        return hostname(line.authority) not in ours

    async def replay(self, line: Line, identity: bytes, ip: str) -> Exchange:
        """One log line through the chain, from client address ``ip`` (``client``); the
        exchange, its events with their deterministic ids."""
        ex = self.exchange(line, ip)
        if self.stored is not None and ex.request.path == "/robots.txt":
            await self.stored_landings(ex)
        await self.pipeline.request(ex)
        ex.response = ResponseView(line.status, {})
        await self.pipeline.response(ex)
        if ex.events:
            chain = [(e, e.id) for e in ex.events if type(e) is Touchpoint]
            seed = identity + line.number.to_bytes(8, "big") + line.raw
            self.stamp(ex.events, seed, int(line.ts.timestamp() * 1000))
            landings = self._landings
            for touchpoint, was in chain:
                landings.put(was, touchpoint.id)
            for e in ex.events:
                # A re-score names the landing by the id the chain gave it, which bots scoring
                # kept: the stored one instead (until 2026-12-07 none the store had, and the
                # change was left out as an erased visitor's row).
                if type(e) is VerdictChange and (stored := landings.get(e.touchpoint_id)) is not None:
                    e.touchpoint_id = stored
        return ex

    async def stored_landings(self, ex: Exchange) -> None:
        """A robots.txt line: the visitor's landings stored within ``bots.window_seconds`` of it
        that bots scoring does not hold (an earlier run's: a log rotated between the landing
        and the fetch, its files imported in two runs), held as its own, so that the fetch
        re-scores them as it does the landings of this run (until 2026-12-07 it did not). One
        already re-scored for robots.txt (this file imported again) is not changed again."""
        assert self.bots is not None and self.stored is not None and ex.visitor is not None
        bots, visitor = self.bots, ex.visitor
        now = ex.request.unix
        found = await asyncio.to_thread(self.stored.around, visitor.key, now, bots.window)
        state = bots.visitors.get(visitor.id)
        held = state.touches if state is not None else ()
        known = {self._landings.get(touch.id) or touch.id for touch in held}
        found = [touch for touch in found if touch.id not in known]
        if not found:
            return
        if state is None:  # as bots scoring makes it for a page load (an imported visitor is never new)
            state = VisitorState(NEVER, int(now // bots.window))
            bots.visitors.put(visitor.id, state)
        touches = sorted((*found, *held), key=lambda touch: touch.at)
        state.touches = tuple(touches[-RECENT_TOUCHES:])

    def segment_event(self, record: Record, identity: bytes) -> list[Event]:
        """One Segment call → its rows, via the live mapping; ``Invalid`` or ``ValueError`` (with
        the reason) when it cannot be taken. Keyed by ``messageId``, else by where it was read."""
        event, number = record.event, record.number
        if resolve(event, self.segment.pointers.get("timestamp", ())) is MISSING:
            raise ValueError("timestamp: missing")
        mapped = map_event(self.segment, event, datetime.now(UTC), self.limits, f"{number}")
        if mapped.kind == "ignored":
            raise ValueError(f"segment type {event.get('type')!r}: not imported")
        if mapped.kind == "identify" and not mapped.rows:
            # No userId (an anonymous call setting traits), a placeholder one ("undefined"), or
            # no anonymousId: it binds no one. Counted as skipped, by the mapping's reason, its
            # values said in the first skips only (until 2026-12-07 left out without a word).
            reason, _, said = mapped.ignored.partition("; ")
            raise NotImported(reason, f"; {said}" if said else "")
        if mapped.kind == "touchpoint" and not mapped.rows:
            # A page without campaign data (a visitor browsing): no touchpoint, as live. Counted
            # as skipped (until 2026-12-08 neither imported nor skipped: the calls did not add up).
            # A placeholder left out ("undefined") is said in the first skips, as an identify's.
            said = mapped.ignored.partition("; ")[2]
            raise NotImported(
                without_campaign(str(event.get("type")), mapped.ignored), f"; {said}" if said else ""
            )
        if not mapped.rows:
            return []
        message = event.get("messageId")
        seed = b"segment\0" + (
            message.encode()
            # "undefined", "null"… is no ID, as the live endpoint reads it: one seed for every
            # call sent with it gave two calls of the same millisecond one id, and lost the second.
            if isinstance(message, str) and message and not placeholder(message)
            else identity + f"{number}:{record.index}".encode() + record.raw
        )
        first = mapped.rows[0]
        assert not isinstance(first, DailyCount)  # mapped events are never counts
        ts = datetime.fromisoformat(first.ts.replace("Z", "+00:00"))
        self.stamp(mapped.rows, seed, int(ts.timestamp() * 1000))
        for row in mapped.rows:
            if isinstance(row, Binding | Conversion):
                row.origin = "import"
        return mapped.rows

    def stamp(self, events: list[Event], seed: bytes, unix_ms: int) -> None:
        """Deterministic ids: the n-th event of the same line always gets the same one."""
        for index, event in enumerate(events):
            digest = hashlib.blake2b(seed, key=self.id_mac, digest_size=10, salt=index.to_bytes(16, "big"))
            if not isinstance(event, DailyCount):
                event.id = uuid7_keyed(unix_ms, digest.digest())


def without_campaign(raw_type: str, why: str) -> str:
    """Why a Segment call mapped to a touchpoint is skipped for want of campaign data, from the
    mapping's ``{type} without campaign data (none of …): not recorded``: one reason for every
    such call (the values left out, which differ, are not in it)."""
    head = why.partition("; ")[0].removesuffix(": not recorded").removeprefix(f"{raw_type} ")
    return f"{'page view' if raw_type == 'page' else f'{raw_type!r} call'} {head}: no touchpoint"


class NotImported(ValueError):
    """A Segment call that makes no row and is counted as skipped: ``str()`` the reason, as the
    summary counts it; ``detail`` the call's own values, shown in the first skips only."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.detail = detail


NO_HOST = "host: missing (and no --host or proxy.public_origin)"
ELSEWHERE = "request line names another host (absolute-form, a proxy's request): not a landing on this site"
"""Why a line is skipped whose ``GET http://other.example/…`` names a host not the site's
(``Replayer.elsewhere``)."""
OPTED_OUT_GPC = (
    "Sec-GPC: 1, the visitor opted out (privacy.honor_gpc): live, only counted per day; not imported"
)
OPTED_OUT_DNT = "DNT: 1, the visitor opted out (privacy.honor_dnt): live, only counted per day; not imported"
"""Why a flow dump's line is skipped that kept an opt-out header (``Replayer.opted_out``)."""
REFUSED = "tracking value refused, no touchpoint: "
"""The beginning of why a line is skipped whose tracking values were all dropped by campaign,
as live (``gateway_params_dropped_total``); the key and the rule follow."""


def refused_reason(refused: list[tuple[str, str]]) -> str:
    """Why a line that made no touchpoint is skipped: its first refused key and the rule it
    failed (the value itself is left out: it may be anything, and reasons are counted)."""
    key, why = refused[0]
    more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
    return f"{REFUSED}{shown_key(key)} {DROPPED_WHY.get(why, why)}{more}"


FUTURE = (
    "time: later than now (more than webhooks.tolerance_seconds ahead of this machine's clock):"
    " the logging server's clock was wrong?"
)


@dataclass(slots=True)
class Replayed:
    """What a chunk of read items gave: its events (and their lines), the items skipped (with
    reasons), and how many of its lines took their client address from a logged X-Forwarded-For
    (``forwarded``) or logged one that was not believed (``unbelieved``)."""

    events: list[Event] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    """The number of the line (or Segment call) each of ``events`` came from."""
    skips: list[Skip] = field(default_factory=list)
    forwarded: int = 0
    unbelieved: int = 0
    requests: int = 0
    """Logged requests replayed (not Segment calls)."""
    with_agent: int = 0
    """Of those, the ones that logged a User-Agent."""


async def replay_items(replayer: Replayer, items: list[Item], identity: bytes) -> Replayed:
    """A chunk of read items → the events they produce and the items skipped, with reasons."""
    out = Replayed()
    events, lines, skips = out.events, out.lines, out.skips
    default_host, trusted = replayer.host, replayer.trusted
    # A line dated after now is no history: live, such a request cannot have come, and stored
    # it would be a touchpoint every report of the coming days counts (the same bound as a
    # Segment event's, ``Limits.tolerance``).
    now = datetime.now(UTC)
    latest = now + replayer.limits.tolerance
    # Nor is one dated before the web (a json-lines time of 12, read as Unix seconds): the bound
    # a Segment event's time has too.
    earliest = now - replayer.limits.max_age
    for item in items:
        if type(item) is Line:
            if not (item.host or default_host):
                skips.append(Skip(item.number, NO_HOST))
                continue
            if item.ts > latest:
                skips.append(Skip(item.number, FUTURE))
                continue
            if item.ts < earliest:
                skips.append(Skip(item.number, TOO_OLD, f" [{item.ts.isoformat()}]"))
                continue
            if item.authority and replayer.elsewhere(item):
                skips.append(Skip(item.number, ELSEWHERE))
                continue
            if opted_out := replayer.opted_out(item):
                skips.append(Skip(item.number, opted_out))
                continue
            out.requests += 1
            out.with_agent += bool(item.user_agent)
            ip = replayer.client(item)
            if ip != item.ip:
                out.forwarded += 1
            elif item.forwarded_for and not is_trusted(item.ip, trusted):
                out.unbelieved += 1
            ex = await replayer.replay(item, identity, ip)
            new = ex.events
            if ex.refused and not any(type(e) is Touchpoint or type(e) is DailyCount for e in new):
                # Live the value is dropped and counted; here the landing would vanish from the
                # summary, neither imported nor skipped. Rows the line made besides (a bot
                # verdict, a rule's conversion) are still stored.
                skips.append(Skip(item.number, refused_reason(ex.refused)))
        elif type(item) is Record:
            try:
                new = replayer.segment_event(item, identity)
            except Invalid as err:
                skips.append(Skip(item.number, "; ".join(err.errors)))
                continue
            except ValueError as err:
                skips.append(Skip(item.number, str(err), err.detail if isinstance(err, NotImported) else ""))
                continue
        else:
            assert isinstance(item, Skip)
            skips.append(item)
            continue
        if new:
            events.extend(new)
            lines.extend([item.number] * len(new))
    return out


def _counted(n: int, noun: str) -> str:
    """``1 line``, ``2,000 lines``."""
    return f"{n:,} {noun}" + ("" if n == 1 else "s")
