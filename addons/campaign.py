"""Campaign capture: ``c_*`` / ``utm_*`` parameters, ad click IDs and creator IDs → a touchpoint.

Configured by ``[campaign]`` (what to capture), ``[proxy] strip`` (how the parameters leave the URL)
and ``[proxy] public_origin`` (the site's own host, when set). Values are normalised (Unicode spaces
made spaces and invisible characters removed, ``events.as_typed``; trimmed, source and medium
case-folded, length-capped, printable only, no email address but in a click or creator ID, no
``undefined``/``null``… a link builder wrote where it had no value); a value that fails is dropped
and counted, never stored. The upstream query is rebuilt from the raw
``&``-separated pieces so everything else stays byte for byte as received. Remembers the channel of
recent value combinations (at most ``CHANNEL_CACHE``), and recent landings (``addons/landings.py``):
a reload within ``campaign.repeat_seconds`` records no touchpoint (it is left on ``Exchange.folded``
for bots' velocity windows). A landing of a visitor who opted out (``Sec-GPC``/``DNT``) is a
``DailyCount``, the touchpoint it would have been left on ``Exchange.counted`` for bots to score. A
HEAD records nothing and is remembered nowhere (no browser navigates with it), and is stripped as a
GET is.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import UTC
from urllib.parse import unquote, unquote_plus, urljoin, urlsplit

from addons.landings import RecentLandings, landing_values, referral_values
from gateway.channels import Signals
from gateway.config_values import idna_form
from gateway.emails import holds_email, without_email
from gateway.events import (
    ASCII_LOWER,
    CAMPAIGN_FIELDS,
    MAX_CLICK_ID,
    DailyCount,
    Touchpoint,
    as_typed,
    bare_prefixes,
    iso,
    param_key,
    printable_name,
)
from gateway.forwarding import parse_ip
from gateway.ids import Uuid7
from gateway.pipeline import Context, Exchange, Reply, RequestView, split_query, split_target, with_query
from gateway.placeholders import LONGEST as LONGEST_PLACEHOLDER
from gateway.placeholders import PLACEHOLDERS

log = logging.getLogger("gateway.campaign")

DROPPED_WHY = {
    "too_long": "longer than campaign.max_value_length",
    "click_too_long": (
        f"longer than a click ID's {MAX_CLICK_ID:,} characters (or campaign.max_value_length when larger)"
    ),
    "unprintable": "not printable (a control character, a space in a click ID, bytes not UTF-8)",
    "source_not_allowed": "not in campaign.allowed_sources",
    "bad_referrer": "not a URL with a valid host: read as no referrer",
    "email": "holds an email address (personal data is not stored)",
    "placeholder": "is no value (what code writes where it has none: undefined, null…)",
}
"""The rule a dropped value failed, in words: the debug line says it, and so does an import's
summary of a line skipped for it (``gateway.backfill.refused_reason``)."""

EMAIL_EXEMPT = frozenset(("click", "creator_id"))
"""Slots whose values are not looked at for an address: a click ID is an ad platform's token, and
a creator ID the operator's own name for a partner (``[[creators]]``), not a visitor's."""

MAX_RAW_PARAMS = 32
MAX_PATH = 1024
CHANNEL_CACHE = 4096
"""Distinct (source, medium, campaign, click ID kind, creator, referrer host, site) whose channel
is remembered."""
REDIRECT_SECONDS = 30.0
"""How long after a redirect (ours to the clean URL under ``strip = "redirect"``, or the site's
own) its follow-up is recognised."""
REDIRECTS = frozenset({301, 302, 303, 307, 308})
NO_ARRIVAL = frozenset({"HEAD", "OPTIONS"})
"""Methods no browser navigates with: such a request records no touchpoint, tagged or not."""


@dataclass(frozen=True, slots=True)
class Param:
    """What a tracked parameter name means: its slot and its precedence rank (0 wins)."""

    slot: str  # a campaign field, "click", "creator_id", "sub_id" or "extra"
    rank: int
    storable: bool = False
    """``storable_key`` of the name, worked out once for a configured one (False: ask the key):
    the two tests on every tracked pair's key cost a landing ~2,000 instructions."""


def storable_key(key: str) -> bool:
    """Whether ``raw_params`` may hold a (lower-cased) query key: printable and short."""
    return key.isprintable() and len(key) <= 64


_EXTRA = Param("extra", 0)
"""Any other key with a tracked prefix and something after it (``utm_id``, not ``utm_``): kept
in the raw params only."""


def shown_key(key: str) -> str:
    """A query key as a message may show it: anyone can send one, of any length or bytes."""
    return key if key.isprintable() and len(key) <= 40 else ascii(key[:40])


def hostname(host_header: str) -> str:
    """``Host`` header value without its port, lower-cased (``[::1]:80`` → ``::1``)."""
    host = host_header.lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.partition(":")[0]


def join_kept(kept: list[str]) -> str:
    """The pieces left once the tracking pairs are gone, byte for byte; none with a byte in it
    (only the visitor's empty pieces, ``utm_source=x&&``) is no query, as none at all is: ``/p?&``
    means ``/p`` to every query parser, but is another cache key and, under ``redirect``, what
    the address bar showed."""
    return "&".join(kept) if any(kept) else ""


def strip_query(raw: str, is_tracked: Callable[[str], bool]) -> tuple[str, bool]:
    """``raw`` without the pieces whose decoded key is tracked; the rest byte for byte."""
    pieces = split_query(raw)
    kept = [piece for piece, key, _ in pieces if not is_tracked(key)]
    return join_kept(kept), len(kept) != len(pieces)


def on_this_site(path: str) -> str:
    """``path`` as a ``Location`` a browser follows to this site. A path that starts with two
    slashes, or a slash and a backslash (which a browser reads as a slash), is a
    scheme-relative address to the host it names: ``//evil.example/?utm_source=x`` answered
    ``Location: //evil.example/``, an open redirect on the site's own name. ``/.`` before it
    names the same path (the browser drops the dot segment) on this host."""
    return "/." + path if path[1:2] in ("/", "\\") else path


_HOST = re.compile(r"(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
"""A host name as it goes over the wire: dot-separated labels of 1..63 letters, digits, ``-``
(not first or last) and ``_`` (hosts in the wild have them), lower-cased (``is_host_name``'s)."""


def host_of(url: str) -> str | None:
    """Lower-cased host of an absolute URL in the form HTTP carries it, or None when it has none
    or is malformed (``exa mple.com``, ``a..b``: until 2026-12-07 stored as a Referral's host).
    A host beyond ASCII (``bücher.example``, from a client that is no browser, or a log) is its
    IDNA form (``xn--bcher-kva.example``), as a browser sends it and ``channels.referrers``
    keys are written; one percent-encoded is decoded first, as a browser does. U+FFFD is no
    host's (IDNA refuses it): it stands where bytes that are not UTF-8 were, decoded by a log's
    reader (`gateway import`), which live arrive as surrogates and are refused alike."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    host = (host or "").rstrip(".")  # "www.google.com." is www.google.com, written fully qualified
    if not host or len(host) > 253:
        return None
    if "%" in host:
        try:
            host = unquote(host, errors="strict")
        except UnicodeDecodeError:  # bytes that are not UTF-8: no name
            return None
    if not host.isascii():
        # "idna" refuses what is no name (a space, U+FFFD, a surrogate, an empty label…).
        host = idna_form(host) or ""
    if _HOST.fullmatch(host) is None:
        return host if ":" in host and parse_ip(host) is not None else None  # an IPv6 address
    return host if len(host) <= 253 else None


class Campaign:
    def configure(self, ctx: Context) -> None:
        opts = ctx.settings.options.campaign
        self.metrics = ctx.metrics
        self.new_id = Uuid7()
        self.node = ctx.settings.node
        self.strip = ctx.settings.options.proxy.strip
        origin = ctx.settings.options.proxy.public_origin
        # The site's host, when configured: a front proxy may send its own Host (nginx's default
        # is the upstream's, 127.0.0.1:8080), and then every page's same-site Referer looked
        # external: a Referral touchpoint per page view, the site crediting itself.
        self.public_host = (host_of(origin) or "") if origin else ""
        upstream = ctx.settings.options.proxy.upstream
        # The site's own absolute Location names its origin; the proxy points it at the public one
        # after the response hooks ran.
        self.upstream_host = (host_of(upstream) or "") if upstream else ""
        self._last_host = ("", "")  # (a Host header, its site): see _site
        self.channels = ctx.settings.channels
        self.max_length = opts.max_value_length
        self.max_click_length = max(opts.max_value_length, MAX_CLICK_ID)
        self.record_referrals = opts.record_referrals
        self.allowed_sources = frozenset(s.casefold() for s in opts.allowed_sources)
        self.prefixes = tuple(p.lower() for p in opts.prefixes)  # config names are ASCII
        self.bare = bare_prefixes(self.prefixes)
        names: dict[str, Param] = {}
        for rank, prefix in enumerate(self.prefixes):
            for name in CAMPAIGN_FIELDS:
                names[prefix + name] = Param(name, rank, storable_key(prefix + name))
        for slot, params in (
            ("click", opts.click_ids),
            ("creator_id", opts.creator_ids),
            ("sub_id", opts.sub_ids),
        ):
            for rank, name in enumerate(params):
                names.setdefault(name.lower(), Param(slot, rank, storable_key(name.lower())))
        self.names = names
        # Universal Analytics' "keep the campaign you have" flag, which shops put on the URLs their
        # payment gateway sends the buyer back to (WooCommerce's PayPal Standard does).
        self.nooverride = frozenset(prefix + "nooverride" for prefix in self.prefixes)
        self._channels: dict[tuple[str | None, ...], str] = {}
        self.landings = RecentLandings(opts.repeat_seconds)
        # Landings answered with the redirect to their clean URL, as (referrer host, path): the
        # browser follows it with the same Referer, which is no second arrival — whatever
        # ``repeat_seconds`` says of reloads.
        self.redirected = RecentLandings(REDIRECT_SECONDS)

    def _site(self, req: RequestView) -> str:
        """The site's host, as ``host_of`` reads a Referer's: ``proxy.public_origin``'s, else the
        request's ``Host`` without its port or final dot."""
        if self.public_host:
            return self.public_host
        # The last Host read, remembered: a site is asked for under one name or a few, and its
        # reading cost every request ~2,800 instructions (a landing, ~100,000 in all).
        # One read of the pair: an import's worker threads may replace it meanwhile.
        host, last = req.host, self._last_host
        if host != last[0]:
            last = self._last_host = (host, hostname(host).rstrip("."))
        return last[1]

    def take_over(self, old: Campaign) -> None:
        """A reload: the landings remembered go on (a page reloaded just after a config reload
        is no second landing; a redirect's follow-up in flight is still known), those within
        ``repeat_seconds`` while it is the same."""
        self.redirected = old.redirected
        if old.landings.seconds == self.landings.seconds:
            self.landings = old.landings

    def classify(self, key: str) -> Param | None:
        """What a query key means (in any case of its ASCII letters), or None when it is not
        tracked."""
        key = param_key(key)
        param = self.names.get(key)
        if param is None and key.startswith(self.prefixes) and key not in self.bare:
            return _EXTRA
        return param

    def is_tracked(self, key: str) -> bool:
        return self.classify(key) is not None

    def _drop(self, ex: Exchange, key: str, reason: str, why: str = "") -> None:
        """Count a dropped value under ``reason``; ``why`` (default: the reason) is what an
        import's summary says of it (``gateway.backfill.refused_reason``)."""
        self.metrics.params_dropped.labels(reason).inc()
        ex.refused.append((key, why or reason))
        if log.isEnabledFor(logging.DEBUG):  # which key, on which page: never the value
            log.debug(
                "tracking value dropped on %s: %s %s (gateway_params_dropped_total{reason=%s})",
                ex.request.path[:200],
                shown_key(key),
                DROPPED_WHY[why or reason],
                f'"{reason}"',
            )

    def request(self, ex: Exchange) -> None:
        req = ex.request
        values: dict[str, str] = {}
        ranks: dict[str, int] = {}  # the rank of each slot's value in ``values``
        raw_params: dict[str, str] = {}
        click: tuple[int, str, str] | None = None
        stripped = False
        kept: list[str] = []
        # What classify() does, and the value rules, inline: this loop runs for every query pair of
        # every request, and the two calls per tracked pair were a fifth of a landing's hook. The
        # pieces split and decoded here as ``split_query`` does, not through ``ex.query_pairs``:
        # no other addon reads them, and its list of tuples cost ~5,000 instructions a landing.
        names, prefixes, bare, max_length = self.names, self.prefixes, self.bare, self.max_length
        query = req.query
        # Most queries need no decoding at all, and are ASCII: one test of the whole, not two a
        # piece. A key is matched in ASCII letter case only (``param_key``); ``lower`` is that
        # on an ASCII key, and a call cheaper than ``translate``.
        encoded = "%" in query or "+" in query
        plain = query.isascii()
        for piece in query.split("&") if query else ():
            raw_key, _, raw_value = piece.partition("=")
            if encoded and ("%" in piece or "+" in piece):
                raw_key = unquote_plus(raw_key, errors="surrogateescape")
                raw_value = unquote_plus(raw_value, errors="surrogateescape")
                key = raw_key.lower() if raw_key.isascii() else raw_key.translate(ASCII_LOWER)
            else:
                key = raw_key.lower() if plain else param_key(raw_key)
            param = names.get(key)
            if param is None:
                if not key.startswith(prefixes) or key in bare:
                    kept.append(piece)
                    continue
                param = _EXTRA
            stripped = True
            slot = param.slot
            # A value pasted from a document: its no-break spaces are spaces, its invisible
            # characters (a zero-width space, a byte-order mark) gone (until 2026-12-07 one
            # within it dropped the value: ``summer sale`` with a no-break space lost its campaign).
            value = (raw_value if raw_value.isascii() else as_typed(raw_value)).strip()
            if len(value) > max_length and (slot != "click" or len(value) > self.max_click_length):
                self._drop(ex, key, "too_long", "click_too_long" if slot == "click" else "")
                continue
            # A link builder's String(undefined), in any tracked value: a creator "undefined",
            # credited and paid for every landing so tagged (until 2026-12-07); a click ID every
            # visitor so tagged shared (Google's ad click for a click that never was, and
            # click_id_reuse for real people), a campaign "undefined" in the reports (until
            # 2026-12-07 both). ``placeholder()`` inline, on a value trimmed already; the length
            # first: a click ID is longer than any such word, and needs no folded copy made. Before
            # the printable test: ``msclkid=[object Object]`` is said to be no value, not a space.
            if len(value) <= LONGEST_PLACEHOLDER and value.casefold() in PLACEHOLDERS:
                self._drop(ex, key, "placeholder")
                continue
            # A click ID is a token: no space, nor the joiners a name may be written with. Once
            # ``isprintable`` holds, the only space left is U+0020 (it refuses every other
            # separator): a substring test, not a generator over a 100-character gclid.
            if slot == "click":
                printable = value.isprintable() and " " not in value
            else:
                printable = value.isprintable() or printable_name(value)
            if not printable:
                self._drop(ex, key, "unprintable")
                continue
            if not value:
                continue
            if ("@" in value or "%" in value) and slot not in EMAIL_EXEMPT and holds_email(value):
                self._drop(ex, key, "email")
                continue
            if slot == "source" or slot == "medium":
                value = value.casefold()
                if slot == "source" and self.allowed_sources and value not in self.allowed_sources:
                    self._drop(ex, key, "source_not_allowed")
                    continue
            # A repeated key: the first valid value is the one stored, in raw_params as in its slot.
            if (
                key not in raw_params
                and len(raw_params) < MAX_RAW_PARAMS
                and (param.storable or storable_key(key))
            ):
                raw_params[key] = value
            if slot == "extra":
                continue
            if slot == "click":
                if click is None or param.rank < click[0]:
                    click = (param.rank, key, value)
            elif slot not in values or param.rank < ranks[slot]:
                values[slot] = value
                ranks[slot] = param.rank

        referrer = req.headers.get("referer")
        referrer_host = host_of(referrer) if referrer else None
        # No URL with a valid host (a bot's junk, a broken client): no referrer, as if none had
        # been sent (until 2026-12-07 ``exa mple.com`` was a Referral's host). Counted where it
        # would have been read: a landing or a page load, not each asset's request.
        if (
            referrer_host is None
            and referrer
            and (raw_params or req.is_document)
            and req.method not in NO_ARRIVAL
        ):
            self._drop(ex, "referer", "bad_referrer")
        site = self._site(req)
        external = referrer_host is not None and referrer_host != site
        # raw_params holds every valid tracked pair (those of values and click among them, or it is
        # full): a landing tagged only with utm_id or utm_source_platform is a touchpoint too.
        # A HEAD or an OPTIONS is no arrival: browsers never navigate with either. Link checkers,
        # uptime probes and link previews send HEAD (until 2026-12-06 a newsletter's link checker
        # took the first touch before any reader clicked); a browser sends OPTIONS only as a CORS
        # preflight, without cookies, so each one was a landing and a new visitor (until
        # 2026-12-06), and every other OPTIONS is a tool's. Both are still stripped below.
        if req.method not in NO_ARRIVAL and (
            (values or click is not None or not self._kept(raw_params))
            if raw_params
            else external
            and self.record_referrals
            and req.is_document
            and self._starts(referrer_host, site)
            and not self._follows_redirect(ex, referrer_host)
        ):
            # A tagged landing keeps its referrer, the site's own host too: an internal banner's
            # utm_campaign on the site's own page was Unassigned (until 2026-12-07), credited, where
            # the same link on its blog was Internal; and the host is what reclassify reads then.
            self._record(ex, values, click, referrer_host, raw_params, site)

        if self.strip == "off":
            return
        if stripped:
            clean = join_kept(kept) if kept else ""  # a landing's query is often all tracking
            if self.strip == "redirect" and req.method in ("GET", "HEAD"):
                location = on_this_site(req.path) + ("?" + clean if clean else "")
                # Its follow-up (and a reload of the clean URL) comes with the landing's Referer:
                # the response hook remembers it as this landing, as any redirect of the site's.
                ex.reply = Reply(302, headers={"location": location, "cache-control": "no-store"})
            else:
                ex.upstream_query = clean
        if referrer and not external and "?" in referrer:
            self._clean_referrer(ex, referrer)

    def response(self, ex: Exchange) -> None:
        """A page load from another site that the site answers with a redirect to itself (a
        trailing slash, a language, a moved page) is followed by the browser with the same
        ``Referer`` (Fetch: a redirect changes no referrer): that page load is this arrival, not a
        referral of its own. Until 2026-12-05 it was one: an ad click on ``/shoes`` answered ``301
        /shoes/`` was a Paid Search touchpoint and then an Organic Search one, which took the
        last touch and half the linear credit."""
        response = ex.response
        if response is None or response.status not in REDIRECTS or ex.visitor is None:
            return
        req = ex.request
        referrer = req.headers.get("referer")
        # A page load only: its follow-up is one; an image's or a fetch's redirect would fill
        # the memories with entries no landing asks for, pushing out real ones. A HEAD's is
        # followed by a HEAD, which is no landing either.
        if not referrer or req.method != "GET" or not req.is_document:
            return
        referrer_host = host_of(referrer)
        site = self._site(req)
        if referrer_host is None or referrer_host == site:
            return
        location = response.headers.get("location") or response.headers.get("Location")
        if not location:
            return
        try:
            target = urlsplit(urljoin(req.path, location.strip()))
            host = (target.hostname or "").rstrip(".")
        except ValueError:
            return
        if target.netloc and host not in (site, self.upstream_host) and not self.channels.is_own(host, site):
            # To another site: what follows is not this site's page load. Another host of this
            # site (apex -> www) is: its follow-up, the cookie reaching it (identity.domain), was
            # a referral that took the last touch from the ad click the apex recorded.
            return
        page = referral_values(referrer_host, target.path or "/", target.query)
        now = req.unix
        self.redirected.remember(ex.visitor.key, page, now)
        self.landings.remember(ex.visitor.key, page, now)  # its reload is this arrival too

    def websocket(self, ex: Exchange) -> None:
        """A WebSocket upgrade: its URL and a same-site Referer lose their tracking pairs as a
        request's do, inline even under ``strip = "redirect"`` (a WebSocket client does not
        follow a redirect). No touchpoint: a script opens the socket, and the page that ran
        it, its landing, was recorded already."""
        if self.strip == "off":
            return
        req = ex.request
        if req.query:
            clean, removed = strip_query(req.query, self.is_tracked)
            if removed:
                ex.upstream_query = clean
        referrer = req.headers.get("referer")
        if referrer and "?" in referrer:
            referrer_host = host_of(referrer)
            if referrer_host is None or referrer_host == self._site(req):
                self._clean_referrer(ex, referrer)

    def _channel(
        self,
        source: str | None,
        medium: str | None,
        campaign: str | None,
        click_kind: str | None,
        creator_id: str | None,
        referrer_host: str | None,
        site: str,
    ) -> str:
        """The channel (``gateway/channels.py``), remembered: it depends on these values alone under
        this configuration, and landings repeat a few combinations (the campaign varies, not the
        visitor). At most CHANNEL_CACHE are kept; past it the memory starts afresh."""
        key = (source, medium, campaign, click_kind, creator_id, referrer_host, site)
        channel = self._channels.get(key)
        if channel is None:
            signals = Signals(source, medium, campaign, click_kind, creator_id, referrer_host)
            channel = self.channels.classify(signals, site)
            if len(self._channels) >= CHANNEL_CACHE:
                self._channels.clear()
            self._channels[key] = channel
        return channel

    def _kept(self, raw_params: dict[str, str]) -> bool:
        """A landing that says only ``utm_nooverride=1`` (its other pairs no campaign field, click
        or creator ID: the caller asks only then) asks to keep the visitor's campaign: it starts
        no touchpoint, as in Universal Analytics. A payment gateway's return to such a URL without
        a ``Referer`` was a Direct touchpoint that took the last touch from the campaign that
        sold."""
        flags = self.nooverride
        return any(key in flags and value.lower() not in ("0", "false") for key, value in raw_params.items())

    def _follows_redirect(self, ex: Exchange, referrer_host: str | None) -> bool:
        """The browser following our redirect to the clean URL keeps the landing's Referer
        (Fetch: a redirect changes no referrer): a page load of that path, from that host, by
        that visitor, just after, is the same arrival, not a referral of its own. Until
        2026-12-05 every landing under ``strip = "redirect"`` was recorded twice, the ad's click
        and then an Organic Search (or Social…) referral that took half its linear credit."""
        if ex.visitor is None or referrer_host is None:
            return False
        req = ex.request
        return self.redirected.take(
            ex.visitor.key, referral_values(referrer_host, req.path, req.query), req.unix
        )

    def _repeats(
        self,
        visitor_key: str,
        raw_params: dict[str, str],
        referrer_host: str | None,
        req: RequestView,
        now: float,
    ) -> bool:
        """A reload of a landing (F5, a restored tab, Back to it) sends its URL and its Referer
        again: the same tracked values, or untagged the same site and page, by the same visitor
        within ``campaign.repeat_seconds`` of the last, is that arrival once more. Until
        2026-12-05 each reload was a touchpoint: an ad click loaded three times took three
        shares of linear credit, a creator's link three clicks."""
        if not self.landings.seconds:
            return False
        values: Hashable
        if raw_params:
            values = landing_values(raw_params)
        elif referrer_host is not None:
            values = referral_values(referrer_host, req.path, req.query)
        else:
            return False
        return self.landings.repeat(visitor_key, values, now)

    def _starts(self, referrer_host: str | None, site: str) -> bool:
        """A self-referral or a payment-gateway return continues the visit: no touchpoint."""
        return referrer_host is not None and self.channels.starts_touchpoint(referrer_host, site)

    def _clean_referrer(self, ex: Exchange, referrer: str) -> None:
        """The browser's address bar still holds the params: same-site Referers lose them too."""
        head, query, rest = split_target(referrer)  # a "?" after a "#" starts no query
        clean, removed = strip_query(query, self.is_tracked)
        if removed:
            ex.upstream_headers["referer"] = with_query(head, clean, rest)

    def _record(
        self,
        ex: Exchange,
        values: dict[str, str],
        click: tuple[int, str, str] | None,
        referrer_host: str | None,
        raw_params: dict[str, str],
        site: str,
    ) -> None:
        visitor = ex.visitor
        if visitor is None and not ex.aggregate_only:
            return  # no identity addon ran: nothing to attribute the touchpoint to
        req = ex.request
        path = without_email(req.path if len(req.path) <= MAX_PATH else req.path[:MAX_PATH])
        click_kind = click[1] if click else None
        g = values.get
        source, medium, campaign, creator_id = g("source"), g("medium"), g("campaign"), g("creator_id")
        channel = self._channel(source, medium, campaign, click_kind, creator_id, referrer_host, site)
        if visitor is None:  # Sec-GPC / DNT: a count, nothing about the visitor
            day = req.ts.astimezone(UTC).date().isoformat()
            count = DailyCount(day, source or "", medium or "", campaign or "", channel, creator_id or "")
            ex.events.append(count)
            key, unix, folded = "", req.unix, False  # scored by bots as this touchpoint (``counted``)
        else:
            key, unix = visitor.key, req.unix  # properties (a Python call each): read once
            folded = self._repeats(key, raw_params, referrer_host, req, unix)
        touchpoint = Touchpoint(  # positional (the field order): a third cheaper than 18 keywords
            self.new_id(int(unix * 1000)),
            iso(req.ts, unix),
            self.node,
            key,
            source,
            medium,
            campaign,
            g("term"),
            g("content"),
            creator_id,
            g("sub_id"),
            click_kind,
            click[2] if click else None,
            referrer_host,
            channel,
            path,
            raw_params,
            consent=visitor.consent if visitor is not None else "aggregate",
        )
        if visitor is None:
            ex.counted = touchpoint  # never stored: the count stands for it
            return
        if folded:
            ex.folded = touchpoint
            self.metrics.landings_folded.inc()
            return
        ex.events.append(touchpoint)  # counted once the store commits it (gateway_touchpoints_total)
