"""Configuration: the TOML file decoded into frozen, typed option structs.

Reads one TOML file; owns the option types (one struct per table), their
defaults and help text, secret resolution (``"env:NAME"``) and every check that
can be done once at start-up. Errors name the TOML key they are about, e.g.
``proxy.connect_timeout: must be > 0, got -1``.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
import ipaddress
import os
import re
import secrets
import socket
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec
from yarl import URL

from gateway.channels import CLASSES, Channels
from gateway.events import VERDICTS
from gateway.payouts import PayoutsOptions, validate_payouts
from gateway.ruleconfig import (
    ConversionRule,
    IdentityRule,
    resolve_rule_keys,
    rule_sources,
    validate_rules,
)


class ConfigError(Exception):
    """One or more configuration problems, each naming its TOML key."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class _Options(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class ProxyOptions(_Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
    listen: str = "127.0.0.1:8080"
    """Address of the public listener, ``HOST:PORT``."""
    upstream: str = ""
    """The site behind the gateway (``http://127.0.0.1:8000``). Empty: a built-in demo origin."""
    public_origin: str = ""
    """Public ``scheme://host`` of the site; empty: taken from each request."""
    preserve_host: bool = True
    """Send the visitor's ``Host`` upstream (false: the upstream's own host)."""
    trusted_proxies: tuple[str, ...] = ()
    """Peers (IPs or CIDRs) whose X-Forwarded-For/-Proto/-Host are believed."""
    strip: Literal["forward", "redirect", "off"] = "forward"
    """How tracking parameters leave the URL: forward clean, redirect to clean, or off."""
    connect_timeout: float = 5.0
    """Seconds to connect to the upstream before answering 504 (a refused connection: 502 at once)."""
    read_timeout: float = 30.0
    """Seconds of upstream silence (headers or body) before answering 504."""
    upstream_connections: int = 1024
    """Most connections open to the upstream at once (WebSockets hold one each); when all are
    busy a request waits up to ``connect_timeout``, then gets 504."""
    body_timeout: float = 30.0
    """Seconds a visitor's request body may stall before the request is answered 408."""
    max_request_body: int = 100 * 1024 * 1024
    """Largest request body in bytes forwarded; larger ones get 413."""
    max_websocket_message: int = 4 * 1024 * 1024
    """Largest WebSocket message relayed, in bytes, either way; a larger one closes the socket (1009)."""
    max_header_size: int = 8190
    """Largest request line or header field in bytes; larger gets 400/431."""
    reserved_prefix: str = "/_gw/"
    """Path prefix the gateway answers itself and never forwards."""
    addons: tuple[str, ...] = ("identity", "campaign", "geo", "bots", "stitching", "conversions")
    """The pipeline: addon names in the order they run."""
    access_log: bool = False
    """Log one line per request (method, path without query, status, size, time; no client address)."""
    workers: int = 0
    """Proxy worker processes sharing the public port (SO_REUSEPORT); 0: one per CPU core, 1: one process."""
    shutdown_grace: float = 10.0
    """Seconds SIGTERM waits for in-flight requests to finish before they are cut off."""


class IdentityOptions(_Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
    secret: str = "env:GATEWAY_SECRET"
    """Master secret (at least 32 characters); every key derives from it. Use ``env:NAME``."""
    cookie_name: str = "gw_vid"
    """Name of the first-party visitor-ID cookie."""
    max_age_days: int = 395
    """Cookie lifetime in days, refreshed on each landing."""
    secure: Literal["auto", "always", "never"] = "auto"
    """Secure flag: auto sets it when the public side is https."""
    samesite: Literal["Lax", "Strict", "None"] = "Lax"
    """SameSite attribute of the cookie."""
    domain: str = ""
    """Cookie Domain attribute; empty: host-only cookie."""
    user_id_storage: Literal["hash", "encrypt", "plain"] = "hash"
    """How the site's user IDs are kept at rest: a keyed hash, deterministic AES-SIV ciphertext
    (exports can recover them), or plain."""
    rules: tuple[IdentityRule, ...] = ()
    """``[[identity.rules]]``: requests whose success binds the visitor to a user."""
    mode: Literal["cookie", "cookieless"] = "cookie"
    """cookie: a signed first-party ID cookie; cookieless: no cookie, a visitor key that is a
    hash of (daily salt, host, IP, user agent) and lasts one UTC day."""


class CampaignOptions(_Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
    prefixes: tuple[str, ...] = ("c_", "utm_")
    """Campaign parameter families, in precedence order (the first listed wins a tie)."""
    click_ids: tuple[str, ...] = (
        "gclid",
        "gbraid",
        "wbraid",
        "dclid",
        "fbclid",
        "msclkid",
        "ttclid",
        "li_fat_id",
        "twclid",
        "yclid",
        "mc_cid",
    )
    """Ad click-ID parameter names, in precedence order."""
    creator_ids: tuple[str, ...] = ("creator_id",)
    """Parameters naming the influencer or affiliate."""
    sub_ids: tuple[str, ...] = ("sub_id",)
    """Parameters naming the creator's sub-placement."""
    allowed_sources: tuple[str, ...] = ()
    """If not empty, only these sources (case-folded) are kept; others are dropped and counted."""
    max_value_length: int = 200
    """Longest value kept; longer ones are dropped and counted."""
    record_referrals: bool = True
    """Record a touchpoint for a document request with an external referrer."""


class StorageOptions(_Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
    path: str = "gateway.db"
    """SQLite file, relative to the config file's folder."""
    node: str = ""
    """Name of this node in every event; empty: the host name."""
    batch_size: int = 256
    """Most events in one commit."""
    batch_wait_ms: float = 0.0
    """Extra wait for a batch to fill; 0: commit whatever queued while the last commit ran, once
    the event loop has turned a few times (requests already received submit first)."""
    durability: Literal["commit", "async"] = "commit"
    """commit: a response waits for its events' commit; async: it does not."""
    max_wait_ms: float = 1000.0
    """Longest a response waits for its commit; past it the event counts as unconfirmed."""
    synchronous: Literal["normal", "full"] = "normal"
    """SQLite synchronous: normal survives a process crash, full also a power loss."""


class AdminOptions(_Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
    listen: str = "127.0.0.1:9090"
    """Address of the admin API listener, ``HOST:PORT``."""
    token: str = "env:GATEWAY_ADMIN_TOKEN"
    """Bearer token for /api and /metrics, and the dashboard's login. Use ``env:NAME``."""
    session_hours: int = 12
    """How long a dashboard login lasts (the session cookie's lifetime), 1..720 hours."""
    source: Literal["local", "central"] = "local"
    """Where touchpoint listings and journeys are read: this node's store, or the central one
    (all nodes; needs ``central.url``)."""
    allow_public: bool = False
    """Allow ``listen`` on an address that is neither loopback nor private (or all interfaces)."""
    report_processes: int = 0
    """Worker processes a large report is shared across; 0: one per CPU core (at most 8), 1: none."""


class CentralOptions(_Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
    url: str = ""
    """PostgreSQL DSN as ``env:NAME`` (``postgresql://user:pass@host/db``). Empty: no central sync."""
    batch_size: int = 2000
    """Most rows per table sent in one batch (one COPY, one INSERT). Larger batches do not sync
    faster here, and each one holds the proxy's event loop longer."""
    interval_seconds: float = 1.0
    """Pause between sync rounds once caught up."""
    backoff_min_seconds: float = 0.5
    """First retry delay after a failure; doubles per failure, with full jitter."""
    backoff_max_seconds: float = 60.0
    """Longest retry delay."""
    connect_timeout: float = 10.0
    """Seconds to connect to PostgreSQL (or run one statement) before counting a failure."""


class SinkOptions(_Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One destination of the event log (``[[sinks]]``): a Segment-compatible batch API or a webhook."""

    name: str
    """The sink's name: its cursors, metrics label, ``gateway sink send --sink`` and the admin path."""
    kind: Literal["segment", "webhook"]
    """segment: Segment/RudderStack HTTP batch API (``identify``, ``track``); webhook: signed JSON batches."""
    url: str
    """segment: the API base (``https://api.segment.io``, ``/v1/batch`` is appended); webhook: the
    endpoint."""
    secret: str
    """``env:NAME``: the write key (segment, sent as HTTP Basic user) or the signing secret (webhook,
    Standard Webhooks; raw or ``whsec_<base64>``)."""
    batch_size: int = 100
    """Most messages per request."""
    max_batch_bytes: int = 500_000
    """Largest request body; a batch is cut before it (Segment: 500 KB)."""
    max_message_bytes: int = 32_000
    """Largest single message; a larger one is skipped and counted (Segment: 32 KB)."""
    rate_per_second: float = 10.0
    """Most requests per second to the destination."""
    interval_seconds: float = 5.0
    """Pause between rounds once caught up."""
    backoff_max_seconds: float = 300.0
    """Longest retry delay after failures (exponential from 0.5 s, full jitter)."""
    timeout_seconds: float = 30.0
    """Seconds one request may take before it counts as failed (and is retried)."""


class WebhooksOptions(_Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
    tolerance_seconds: int = 300
    """Most seconds a signed delivery's ``webhook-timestamp`` may be off from now (replay guard)."""
    max_batch: int = 500
    """Most events in one delivery; more gets 413."""
    max_body: int = 1024 * 1024
    """Largest delivery body in bytes; larger gets 413."""
    bad_body_limit: int = 64 * 1024
    """Bytes of a bad event's body kept in ``bad_events`` (longer ones are truncated, not replayable)."""
    max_event_age_days: int = 400
    """Oldest event timestamp accepted, in days before now (newer than now + tolerance is refused too)."""


class SourceOptions(_Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One sender of signed server-side events (``[[sources]]``)."""

    name: str
    """The sender's name: metrics label, the ``rule`` of what it records, ``replay-bad --sender``."""
    secrets: tuple[str, ...]
    """Active secrets, each ``"env:NAME"`` (the value raw, or ``whsec_<base64>``); several for rotation."""
    format: Literal["standard", "segment"] = "standard"
    """standard: Standard Webhooks at ``/_gw/events``; segment: Segment calls at ``/_gw/segment``
    (HTTP Basic, the write key as user name)."""
    legacy_hex: bool = False
    """Also accept ``x-webhook-signature``: hex HMAC-SHA256 of the body, no timestamp (legacy senders)."""
    batch_pointer: str = "/batch"
    """JSON pointer to the array of events when the body is an object carrying a batch."""
    fields: dict[str, str] = {}
    """Our field → JSON pointer into the sender's event ("" unmaps a field); merged over the format's."""
    types: dict[str, str] = {}
    """The sender's event-type values → ours (conversion, identify, touchpoint); merged over the format's."""
    ignore_types: tuple[str, ...] | None = None
    """Sender event types acknowledged and not recorded; unset: the format's (segment: track, screen…)."""
    defaults: dict[str, str] = {}
    """Values for our fields when the event has none (e.g. ``source = "tiktok"``)."""
    value_scale: float = 1.0
    """Multiplies the mapped value (0.01 for amounts in cents)."""


class ChannelRule(_Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """An operator's channel rule, tried before the built-in ones; every condition given must hold."""

    channel: str
    """The channel a matching touchpoint gets."""
    source: str = ""
    """Regular expression the whole ``source`` must match (case-insensitive); empty: any."""
    medium: str = ""
    """Regular expression the whole ``medium`` must match; empty: any."""
    campaign: str = ""
    """Regular expression the whole ``campaign`` must match; empty: any."""
    referrer: str = ""
    """Regular expression the whole referrer host must match; empty: any."""
    click_ids: tuple[str, ...] = ()
    """Click-ID parameter names, one of which the touchpoint must carry; empty: any."""


class ChannelsOptions(_Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
    referrers: dict[str, str] = {}
    """Extra referrer hosts (``"kagi.com"``) or site names (``"kagi"``, any suffix) → class
    (search, social, email, video, ai, shopping, payment), optionally ``"class/Name"``."""
    payment_gateways: tuple[str, ...] = ()
    """Extra payment-gateway hosts or names whose returns continue the visit (no touchpoint)."""
    own_domains: tuple[str, ...] = ()
    """Other domains of the same site: a referral from them is not a new touchpoint."""
    creator_channel: str = "Affiliates"
    """Channel of a touchpoint whose only signal is a creator ID (e.g. ``"Influencer"``)."""
    rules: tuple[ChannelRule, ...] = ()
    """Extra rules (``[[channels.rules]]``), tried in order before the built-in ones."""


class AttributionOptions(_Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
    lookback_days: dict[str, float] = msgspec.field(
        default_factory=lambda: {"awareness": 30.0, "consideration": 14.0, "conversion": 7.0}
    )
    """Lookback window in days per campaign tier: a touchpoint older than its tier's window
    before the conversion gets no credit."""
    default_tier: str = "awareness"
    """Tier of a touchpoint that neither a tier parameter nor a campaign pattern places."""
    tier_params: tuple[str, ...] = ("c_tier", "utm_tier")
    """Raw parameters naming the tier, in precedence order (checked before the patterns)."""
    tier_patterns: dict[str, tuple[str, ...]] = msgspec.field(
        default_factory=lambda: {
            "awareness": ("awareness",),
            "consideration": ("consideration",),
            "conversion": ("conversion", "retarget"),
        }
    )
    """Per tier, regular expressions searched (case-insensitive) in the campaign name."""
    verdicts: tuple[str, ...] = ("allow",)
    """Bot verdicts whose touchpoints count (a touchpoint without a verdict counts as allow)."""
    position_first: float = 0.4
    """position_based: share of the first touch (the last gets ``position_last``, the middle the rest)."""
    position_last: float = 0.4
    """position_based: share of the last touch."""
    half_life_days: float = 7.0
    """time_decay: a touch this many days before the conversion weighs half as much."""
    last_touch_share: float = 0.6
    """weighted_last_touch: share of the last touch; the rest is spread evenly over earlier ones."""


DATACENTER_ASNS = (
    16509, 14618, 8987,  # Amazon AWS
    396982, 19527,  # Google Cloud
    8075, 8068,  # Microsoft Azure
    31898,  # Oracle Cloud
    14061,  # DigitalOcean
    16276,  # OVH
    24940, 213230,  # Hetzner
    63949,  # Akamai Linode
    20473,  # Vultr (Choopa)
    12876,  # Scaleway
    51167,  # Contabo
    60781, 28753,  # Leaseweb
    45102,  # Alibaba Cloud
    132203,  # Tencent Cloud
    36352,  # ColoCrossing
    9009,  # M247
    46606,  # Unified Layer
    62567,  # DigitalOcean (legacy)
)  # fmt: skip
"""Hosting and cloud networks: a visitor does not browse from a data centre (VPNs aside)."""


class BotWeights(_Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Points each signal adds to the 0..100 score (the README explains each one)."""

    crawler: int = 60
    http_library: int = 60
    headless: int = 60
    empty_agent: int = 50
    absurd_agent: int = 40
    no_accept_language: int = 20
    no_client_hints: int = 15
    header_mismatch: int = 25
    ip_velocity: int = 25
    creator_ip_velocity: int = 50
    visitor_velocity: int = 25
    click_id_reuse: int = 40
    datacenter: int = 30
    no_assets: int = 20
    prefetch: int = 20
    robots_txt: int = 30
    inhuman_cadence: int = 20
    unknown_creator: int = 15
    unverified_creator: int = 10


class BotsOptions(_Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
    review_threshold: int = 30
    """Score from which a request's verdict is ``review`` (0..100)."""
    block_threshold: int = 50
    """Score from which the verdict is ``block`` (review_threshold..100)."""
    on_review: Literal["record", "block"] = "record"
    """What a ``review`` verdict does: record (proxied, touchpoint kept with its verdict) or block (403)."""
    on_block: Literal["record", "block"] = "record"
    """What a ``block`` verdict does: record or block (403 with a neutral page)."""
    good_crawlers: tuple[str, ...] = (
        "googlebot",
        "google-inspectiontool",
        "storebot-google",
        "bingbot",
        "duckduckbot",
        "yandexbot",
        "baiduspider",
        "applebot",
        "slurp",
        "qwantbot",
        "seznambot",
        "facebookexternalhit",
        "twitterbot",
        "linkedinbot",
        "slackbot",
    )
    """Agent substrings (case-insensitive) of crawlers labelled ``bot`` and never blocked."""
    block_good_crawlers: bool = False
    """Let on_block/on_review block good crawlers too (SEO and link previews suffer)."""
    datacenter_asns: tuple[int, ...] = DATACENTER_ASNS
    """ASNs of hosting networks (the datacenter signal; needs the geo addon and an ASN database)."""
    window_seconds: int = 3600
    """Length of the sliding velocity windows, in seconds."""
    max_per_ip: int = 600
    """Page loads per IP in one window before ip_velocity fires."""
    max_per_creator_ip: int = 150
    """Clicks for one creator from one IP in one window before creator_ip_velocity fires."""
    max_per_visitor: int = 300
    """Page loads per visitor in one window before visitor_velocity fires."""
    max_click_id_sources: int = 3
    """Distinct IPs or visitors one click ID (gclid, fbclid…) may arrive from before click_id_reuse fires."""
    max_tracked: int = 32768
    """Most keys each in-memory table holds (IPs, creator-IP pairs, visitors, click IDs), and most
    clicks held to re-score a burst: the memory bound."""
    weights: BotWeights = BotWeights()
    """Points per signal."""


class GeoOptions(_Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
    country_db: str = ""
    """MaxMind-format country or city database (GeoLite2 or DB-IP layout), relative to the config file."""
    asn_db: str = ""
    """MaxMind-format ASN database (GeoLite2-ASN or DB-IP ASN layout), relative to the config file."""


class LogOptions(_Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    """Least severe log level written."""
    format: Literal["json", "text"] = "json"
    """json: one object per line (``ts``, ``level``, ``logger``, ``msg``, fields); text: for a terminal."""


class CreatorOptions(_Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One ``[[creators]]`` entry: an influencer or affiliate the platform knows."""

    id: str
    """The creator ID as it arrives in ``creator_id``."""
    verified: bool = False
    """Verified by the platform; clicks for unverified creators carry extra bot weight."""
    name: str = ""


class ConsentCookie(_Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: str = ""
    """The site's consent-banner cookie; empty: no consent check (every visitor consents)."""
    yes: tuple[str, ...] = ()
    """Values meaning the visitor consented to the ID cookie."""
    no: tuple[str, ...] = ()
    """Values meaning they refused (as does any other value, or no cookie)."""


class PrivacyOptions(_Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
    honor_gpc: bool = True
    """``Sec-GPC: 1``: no ID cookie, touchpoints kept only as daily aggregate counts."""
    honor_dnt: bool = False
    """``DNT: 1`` treated like ``Sec-GPC: 1``."""
    consent_cookie: ConsentCookie = ConsentCookie()
    """``{ name, yes, no }``: without consent no ID cookie; the cookieless key is used instead."""
    retention_days: int = 0
    """Events older than this many days are purged daily (local and central stores); 0: keep forever."""


class Options(_Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
    proxy: ProxyOptions = ProxyOptions()
    identity: IdentityOptions = IdentityOptions()
    campaign: CampaignOptions = CampaignOptions()
    storage: StorageOptions = StorageOptions()
    admin: AdminOptions = AdminOptions()
    webhooks: WebhooksOptions = WebhooksOptions()
    central: CentralOptions = CentralOptions()
    sources: tuple[SourceOptions, ...] = ()
    conversions: tuple[ConversionRule, ...] = ()
    channels: ChannelsOptions = ChannelsOptions()
    attribution: AttributionOptions = AttributionOptions()
    bots: BotsOptions = BotsOptions()
    geo: GeoOptions = GeoOptions()
    log: LogOptions = LogOptions()
    creators: tuple[CreatorOptions, ...] = ()
    sinks: tuple[SinkOptions, ...] = ()
    payouts: PayoutsOptions = PayoutsOptions()
    privacy: PrivacyOptions = PrivacyOptions()


SECTIONS: dict[str, type[msgspec.Struct]] = {
    "proxy": ProxyOptions,
    "identity": IdentityOptions,
    "campaign": CampaignOptions,
    "storage": StorageOptions,
    "admin": AdminOptions,
    "webhooks": WebhooksOptions,
    "channels": ChannelsOptions,
    "attribution": AttributionOptions,
    "bots": BotsOptions,
    "geo": GeoOptions,
    "central": CentralOptions,
    "payouts": PayoutsOptions,
    "log": LogOptions,
    "privacy": PrivacyOptions,
}

ARRAY_SECTIONS: dict[str, type[msgspec.Struct]] = {
    "sources": SourceOptions,
    "conversions": ConversionRule,
    "creators": CreatorOptions,
    "sinks": SinkOptions,
}
"""Top-level arrays of tables (``[[name]]``), each entry decoded into the struct named here;
``Options`` has a tuple field of the same name."""

SECRET_KEYS = ("identity.secret", "admin.token")
MIN_SECRET_LENGTH = 32
_PARAM_NAME = re.compile(r"^[A-Za-z0-9_.\-\[\]]+$")


@dataclass(frozen=True)
class Settings:
    """Options plus what was derived from them once: secrets, paths, parsed addresses, channel rules."""

    options: Options
    base_dir: Path
    secret: bytes
    admin_token: str
    generated: tuple[str, ...] = ()
    trusted_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    node: str = ""
    source_secrets: Mapping[str, tuple[bytes, ...]] = field(default_factory=dict)
    """``[[sources]]`` name → its resolved secrets (HMAC keys), in the order configured."""
    rule_keys: Mapping[str, bytes] = field(default_factory=dict)
    """JWT verification keys of rules, by the TOML key of their source (``identity.rules[0].user_id``):
    the HMAC secret, or a public key's PEM."""
    channels: Channels = field(default_factory=lambda: Channels(ChannelsOptions()))
    """The channel classifier, built from ``[channels]`` and the shipped referrer table."""
    central_url: str = ""
    """The resolved ``central.url`` DSN; empty: no central store."""
    sink_secrets: Mapping[str, bytes] = field(default_factory=dict)
    """``[[sinks]]`` name → its resolved write key or signing secret."""

    @property
    def store_path(self) -> Path:
        path = Path(self.options.storage.path)
        return path if path.is_absolute() else self.base_dir / path


def parse_listen(value: str) -> tuple[str, int]:
    """``"127.0.0.1:8080"`` / ``"[::1]:8080"`` → (host, port); ValueError when malformed."""
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f'expected "HOST:PORT", got {value!r}')
    host = host.removeprefix("[").removesuffix("]")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"port must be 0..65535, got {port!r}")
    return host, int(port)


# RFC 1918 and RFC 4193 (ipaddress's is_private also counts documentation and reserved ranges).
_PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)


def is_private_host(host: str) -> bool:
    """Whether a listen host reaches only this machine or a private network: loopback,
    ``localhost``, or a private/link-local IP. All interfaces (``0.0.0.0``, ``::``, empty) and
    host names (which could resolve anywhere) are not."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return (
        address.is_loopback
        or address.is_link_local
        or any(address in net for net in _PRIVATE_NETWORKS if net.version == address.version)
    )


def admin_exposure(options: Options) -> list[str]:
    """The admin API on a public address needs saying so: ``admin.allow_public`` or
    ``--admin-public``."""
    admin = options.admin
    try:
        host, _ = parse_listen(admin.listen)
    except ValueError:
        return []  # validate() reports it
    if admin.allow_public or is_private_host(host):
        return []
    return [
        f"admin.listen: {admin.listen!r} is not a loopback or private address, so the admin API "
        "would be reachable from other networks; listen on 127.0.0.1 or a private address, or "
        "set admin.allow_public = true (or run with --admin-public) if a firewall guards it"
    ]


def _msgspec_problem(section: str, err: msgspec.ValidationError, struct: type | None = None) -> str:
    """msgspec's "Expected `int`, got `str` - at `$.x`" → "section.x: expected int, got str"."""
    struct = struct or SECTIONS[section]
    message, sep, where = str(err).rpartition(" - at `")
    if not sep:
        message, where = str(err), "$`"
    key = section + where.rstrip("`").removeprefix("$")
    unknown = re.match(r"Object contains unknown field `(.+)`", message)
    if unknown:
        owner = _struct_at(struct, key[len(section) :])
        allowed = ", ".join(owner.__struct_fields__) if owner is not None else ""
        return f"{key}.{unknown.group(1)}: unknown key" + (f" (allowed: {allowed})" if allowed else "")
    enum = re.match(r"Invalid enum value (.+)", message)
    if enum:
        path, _, name = key[len(section) :].rpartition(".")
        owner = _struct_at(struct, path)
        allowed = _literal_values(owner, name) if owner is not None else "?"
        return f"{key}: expected one of {allowed}, got {enum.group(1)}"
    message = message.replace("`", "")
    return f"{key}: {message[:1].lower()}{message[1:]}"


def _struct_at(struct: type, path: str) -> type[msgspec.Struct] | None:
    """The struct type at ``.rules[0].match`` below ``struct`` (None when it is not a struct)."""
    current: Any = struct
    for part in re.findall(r"\.([A-Za-z0-9_]+)", path):
        hint = typing.get_type_hints(current).get(part) if isinstance(current, type) else None
        if hint is None:
            return None
        args = [a for a in typing.get_args(hint) if isinstance(a, type) and issubclass(a, msgspec.Struct)]
        current = args[0] if args else hint
    return current if isinstance(current, type) and issubclass(current, msgspec.Struct) else None


def _literal_values(struct: type, name: str) -> str:
    hint = typing.get_type_hints(struct).get(name)
    return ", ".join(f'"{v}"' for v in typing.get_args(hint)) if hint is not None else "?"


def decode_options(data: Mapping[str, Any]) -> tuple[Options, list[str]]:
    """Decode each table on its own so one run reports one problem per table, not just the first."""
    problems: list[str] = []
    tables: dict[str, Any] = {}
    for name, value in data.items():
        if name in ARRAY_SECTIONS:
            tables[name] = _decode_array(name, value, problems)
            continue
        struct = SECTIONS.get(name)
        if struct is None:
            allowed = [*SECTIONS, *(f"[[{a}]]" for a in ARRAY_SECTIONS)]
            problems.append(f"{name}: unknown table (allowed: {', '.join(allowed)})")
            continue
        if not isinstance(value, dict):
            problems.append(f"{name}: must be a table, got {type(value).__name__}")
            continue
        try:
            tables[name] = msgspec.convert(value, struct)
        except msgspec.ValidationError as err:
            problems.append(_msgspec_problem(name, err))
    return Options(**tables), problems


def _decode_array(name: str, value: Any, problems: list[str]) -> tuple[msgspec.Struct, ...]:
    """``[[name]]`` entries, each decoded on its own; errors read ``name[2].key: ...``."""
    if not isinstance(value, list):
        problems.append(f"{name}: must be an array of tables ([[{name}]]), got {type(value).__name__}")
        return ()
    struct = ARRAY_SECTIONS[name]
    decoded = []
    failed = False
    for i, entry in enumerate(value):
        key = f"{name}[{i}]"
        if not isinstance(entry, dict):
            problems.append(f"{key}: must be a table, got {type(entry).__name__}")
            failed = True
            continue
        try:
            decoded.append(msgspec.convert(entry, struct))
        except msgspec.ValidationError as err:
            problems.append(_msgspec_problem(key, err, struct))
            failed = True
    # Checks after decoding name entries by index: with one missing, the others' would be wrong.
    return () if failed else tuple(decoded)


def _check(problems: list[str], ok: bool, key: str, message: str) -> None:
    if not ok:
        problems.append(f"{key}: {message}")


def _check_origin(problems: list[str], key: str, value: str, example: str) -> None:
    """An http(s) origin: scheme, host, optional port; no credentials, path or query."""
    try:
        url = URL(value)
        port = url.port  # raises for a port that is not a number or out of range
    except ValueError:
        url, port = None, None
    if url is None or url.scheme not in ("http", "https") or not url.host or port is None:
        problems.append(f'{key}: must be an http(s) origin like "{example}", got {value!r}')
    elif url.user is not None or url.password is not None:
        problems.append(f"{key}: must not carry a user name or password")
    elif url.path not in ("", "/") or url.query_string or url.fragment:
        problems.append(f"{key}: must be an origin without path, query or fragment, got {value!r}")


def validate(options: Options) -> list[str]:
    """Every semantic check, collected (not stopping at the first)."""
    p: list[str] = []
    px, ident, camp, st = options.proxy, options.identity, options.campaign, options.storage
    for key, value in (("proxy.listen", px.listen), ("admin.listen", options.admin.listen)):
        try:
            parse_listen(value)
        except ValueError as err:
            p.append(f"{key}: {err}")
    if px.upstream:
        _check_origin(p, "proxy.upstream", px.upstream, "http://127.0.0.1:8000")
    if px.public_origin:
        _check_origin(p, "proxy.public_origin", px.public_origin, "https://www.example.com")
    for i, net in enumerate(px.trusted_proxies):
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            p.append(f"proxy.trusted_proxies[{i}]: not an IP address or CIDR: {net!r}")
    _check(
        p,
        1 <= options.admin.session_hours <= 720,
        "admin.session_hours",
        f"must be 1..720, got {options.admin.session_hours}",
    )
    _check(
        p,
        0 <= options.admin.report_processes <= 64,
        "admin.report_processes",
        f"must be 0..64 (0: one per core), got {options.admin.report_processes}",
    )
    _check(p, px.connect_timeout > 0, "proxy.connect_timeout", f"must be > 0, got {px.connect_timeout}")
    _check(p, 0 <= px.workers <= 256, "proxy.workers", f"must be 0..256 (0: one per core), got {px.workers}")
    _check(
        p,
        0 < px.shutdown_grace <= 3600,
        "proxy.shutdown_grace",
        f"must be more than 0 and at most 3600 seconds, got {px.shutdown_grace}",
    )
    _check(p, px.read_timeout > 0, "proxy.read_timeout", f"must be > 0, got {px.read_timeout}")
    _check(p, px.body_timeout > 0, "proxy.body_timeout", f"must be > 0, got {px.body_timeout}")
    _check(
        p,
        1 <= px.upstream_connections <= 100_000,
        "proxy.upstream_connections",
        f"must be 1..100000, got {px.upstream_connections}",
    )
    _check(
        p,
        px.max_request_body >= 0,
        "proxy.max_request_body",
        f"must be >= 0, got {px.max_request_body}",
    )
    _check(
        p,
        1024 <= px.max_websocket_message <= 1024**3,
        "proxy.max_websocket_message",
        f"must be 1024..1073741824, got {px.max_websocket_message}",
    )
    _check(
        p,
        1024 <= px.max_header_size <= 1024 * 1024,
        "proxy.max_header_size",
        f"must be 1024..1048576, got {px.max_header_size}",
    )
    _check(
        p,
        px.reserved_prefix.startswith("/")
        and px.reserved_prefix.endswith("/")
        and len(px.reserved_prefix) > 2,
        "proxy.reserved_prefix",
        f'must look like "/_gw/", got {px.reserved_prefix!r}',
    )
    from gateway.pipeline import addon_registry  # the registry lives with the pipeline

    known = addon_registry()
    for i, name in enumerate(px.addons):
        _check(
            p,
            name in known,
            f"proxy.addons[{i}]",
            f"unknown addon {name!r} (known: {', '.join(known)})",
        )
    _check(p, len(set(px.addons)) == len(px.addons), "proxy.addons", "lists an addon twice")
    if "campaign" in px.addons:
        _check(
            p,
            "identity" in px.addons and px.addons.index("identity") < px.addons.index("campaign"),
            "proxy.addons",
            '"campaign" needs "identity" before it (touchpoints belong to a visitor)',
        )
    _check(
        p,
        bool(re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", ident.cookie_name)),
        "identity.cookie_name",
        f"must be a valid cookie name, got {ident.cookie_name!r}",
    )
    _check(
        p,
        1 <= ident.max_age_days <= 3650,
        "identity.max_age_days",
        f"must be 1..3650, got {ident.max_age_days}",
    )
    _check(
        p,
        not (ident.samesite == "None" and ident.secure == "never"),
        "identity.samesite",
        'SameSite=None needs a Secure cookie: set identity.secure to "auto" or "always"',
    )
    for key, names in (
        ("campaign.prefixes", camp.prefixes),
        ("campaign.click_ids", camp.click_ids),
        ("campaign.creator_ids", camp.creator_ids),
        ("campaign.sub_ids", camp.sub_ids),
    ):
        for i, name in enumerate(names):
            _check(p, bool(_PARAM_NAME.match(name)), f"{key}[{i}]", f"not a parameter name: {name!r}")
    _check(
        p,
        1 <= camp.max_value_length <= 2000,
        "campaign.max_value_length",
        f"must be 1..2000, got {camp.max_value_length}",
    )
    _check(
        p,
        1 <= st.batch_size <= 10_000,
        "storage.batch_size",
        f"must be 1..10000, got {st.batch_size}",
    )
    _check(
        p,
        0 <= st.batch_wait_ms <= 1000,
        "storage.batch_wait_ms",
        f"must be 0..1000, got {st.batch_wait_ms}",
    )
    _check(
        p,
        0 < st.max_wait_ms <= 60_000,
        "storage.max_wait_ms",
        f"must be more than 0 and at most 60000, got {st.max_wait_ms}",
    )
    _check(p, bool(st.path), "storage.path", "must not be empty")
    from gateway.sources import validate_sources  # the sources' own checks live with their mapping

    p += validate_sources(options)
    validate_rules(p, "identity.rules", ident.rules, "stitching", px.addons)
    validate_rules(p, "conversions", options.conversions, "conversions", px.addons)
    p += validate_channels(options.channels) + validate_attribution(options.attribution)
    p += _validate_bots(options)
    p += validate_payouts(options.payouts)
    p += _validate_central(options)
    p += _validate_privacy(options.privacy)
    return p


def _validate_privacy(pr: PrivacyOptions) -> list[str]:
    p: list[str] = []
    _check(
        p,
        0 <= pr.retention_days <= 36500,
        "privacy.retention_days",
        f"must be 0..36500, got {pr.retention_days}",
    )
    cc = pr.consent_cookie
    if cc.name:
        _check(p, bool(cc.yes), "privacy.consent_cookie.yes", "must list at least one value meaning consent")
        both = sorted(set(cc.yes) & set(cc.no))
        _check(p, not both, "privacy.consent_cookie.no", f"values also listed in yes: {both}")
    else:
        _check(p, not (cc.yes or cc.no), "privacy.consent_cookie.name", "must be set when yes/no are")
    return p


def _validate_central(options: Options) -> list[str]:
    """``[central]``, ``admin.source`` and ``[[sinks]]``."""
    p: list[str] = []
    c = options.central
    _check(
        p, not c.url or c.url.startswith("env:"), "central.url", 'use "env:NAME" (the DSN holds a password)'
    )
    if c.url and importlib.util.find_spec("asyncpg") is None:
        p.append("central.url: the central store needs asyncpg: pip install 'tracking-gateway[postgres]'")
    _check(p, 1 <= c.batch_size <= 100_000, "central.batch_size", f"must be 1..100000, got {c.batch_size}")
    for key, value in (
        ("central.interval_seconds", c.interval_seconds),
        ("central.backoff_min_seconds", c.backoff_min_seconds),
        ("central.connect_timeout", c.connect_timeout),
    ):
        _check(p, value > 0, key, f"must be > 0, got {value}")
    _check(
        p,
        c.backoff_max_seconds >= c.backoff_min_seconds,
        "central.backoff_max_seconds",
        f"must be >= central.backoff_min_seconds, got {c.backoff_max_seconds}",
    )
    _check(
        p,
        options.admin.source == "local" or bool(c.url),
        "admin.source",
        '"central" needs central.url (the central store to read from)',
    )
    names = [sink.name for sink in options.sinks]
    for i, sink in enumerate(options.sinks):
        key = f"sinks[{i}]"
        _check(p, bool(re.fullmatch(r"[a-z0-9_.-]{1,64}", sink.name)), f"{key}.name", "must be a-z 0-9 _ . -")
        _check(p, names.count(sink.name) == 1, f"{key}.name", f"{sink.name!r} is used by two sinks")
        try:
            url = URL(sink.url)
            good = url.scheme in ("http", "https") and bool(url.host) and url.port is not None
        except ValueError:
            good = False
        _check(p, good, f"{key}.url", f"must be an http(s) URL, got {sink.url!r}")
        _check(
            p, 1 <= sink.batch_size <= 10_000, f"{key}.batch_size", f"must be 1..10000, got {sink.batch_size}"
        )
        _check(
            p,
            1024 <= sink.max_message_bytes <= sink.max_batch_bytes,
            f"{key}.max_message_bytes",
            f"must be 1024..max_batch_bytes, got {sink.max_message_bytes}",
        )
        for name in ("rate_per_second", "interval_seconds", "backoff_max_seconds", "timeout_seconds"):
            value = getattr(sink, name)
            _check(p, value > 0, f"{key}.{name}", f"must be > 0, got {value}")
    return p


def _check_regex(problems: list[str], key: str, pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as err:
        problems.append(f"{key}: not a valid regular expression ({err}): {pattern!r}")


def validate_channels(ch: ChannelsOptions) -> list[str]:
    p: list[str] = []
    for host, value in ch.referrers.items():
        kind = value.partition("/")[0]
        _check(
            p,
            kind in CLASSES,
            f"channels.referrers.{host}",
            f"unknown class {kind!r} (known: {', '.join(CLASSES)})",
        )
    _check(p, bool(ch.creator_channel.strip()), "channels.creator_channel", "must not be empty")
    for i, rule in enumerate(ch.rules):
        key = f"channels.rules[{i}]"
        _check(p, bool(rule.channel.strip()), f"{key}.channel", "must not be empty")
        for name in ("source", "medium", "campaign", "referrer"):
            _check_regex(p, f"{key}.{name}", getattr(rule, name))
        _check(
            p,
            any((rule.source, rule.medium, rule.campaign, rule.referrer, rule.click_ids)),
            key,
            "needs at least one condition (source, medium, campaign, referrer or click_ids)",
        )
    return p


def validate_attribution(at: AttributionOptions) -> list[str]:
    p: list[str] = []
    for tier, days in at.lookback_days.items():
        _check(p, 0 < days <= 3650, f"attribution.lookback_days.{tier}", f"must be 0..3650 days, got {days}")
    tiers = ", ".join(at.lookback_days)
    _check(
        p,
        at.default_tier in at.lookback_days,
        "attribution.default_tier",
        f"{at.default_tier!r} has no attribution.lookback_days entry (tiers: {tiers})",
    )
    for tier, patterns in at.tier_patterns.items():
        _check(
            p,
            tier in at.lookback_days,
            f"attribution.tier_patterns.{tier}",
            f"no attribution.lookback_days entry for this tier (tiers: {tiers})",
        )
        for i, pattern in enumerate(patterns):
            _check_regex(p, f"attribution.tier_patterns.{tier}[{i}]", pattern)
    for i, name in enumerate(at.tier_params):
        _check(
            p,
            bool(_PARAM_NAME.match(name)),
            f"attribution.tier_params[{i}]",
            f"not a parameter name: {name!r}",
        )
    _check(p, bool(at.verdicts), "attribution.verdicts", "must name at least one verdict")
    for i, verdict in enumerate(at.verdicts):
        _check(
            p,
            verdict in VERDICTS,
            f"attribution.verdicts[{i}]",
            f"unknown verdict {verdict!r} (verdicts: {', '.join(VERDICTS)})",
        )
    for key, share in (
        ("attribution.position_first", at.position_first),
        ("attribution.position_last", at.position_last),
        ("attribution.last_touch_share", at.last_touch_share),
    ):
        _check(p, 0 <= share <= 1, key, f"must be 0..1, got {share}")
    _check(
        p,
        at.position_first + at.position_last <= 1,
        "attribution.position_last",
        f"position_first + position_last must be at most 1, got {at.position_first + at.position_last:g}",
    )
    _check(p, at.half_life_days > 0, "attribution.half_life_days", f"must be > 0, got {at.half_life_days}")
    return p


def _validate_bots(options: Options) -> list[str]:
    """``[bots]``, ``[[creators]]`` and where ``bots``/``geo`` sit in the pipeline."""
    p: list[str] = []
    bots, addons = options.bots, options.proxy.addons
    if "bots" in addons:
        for before in ("campaign", "geo"):
            _check(
                p,
                before not in addons or addons.index(before) < addons.index("bots"),
                "proxy.addons",
                f'"bots" must come after "{before}" (it scores what {before} found)',
            )
    _check(
        p,
        0 <= bots.review_threshold <= 100,
        "bots.review_threshold",
        f"must be 0..100, got {bots.review_threshold}",
    )
    _check(
        p,
        bots.review_threshold <= bots.block_threshold <= 100,
        "bots.block_threshold",
        f"must be review_threshold..100 ({bots.review_threshold}..100), got {bots.block_threshold}",
    )
    for name in BotWeights.__struct_fields__:
        weight = getattr(bots.weights, name)
        _check(p, 0 <= weight <= 100, f"bots.weights.{name}", f"must be 0..100, got {weight}")
    for key in ("window_seconds", "max_per_ip", "max_per_creator_ip", "max_per_visitor"):
        value = getattr(bots, key)
        _check(p, 1 <= value <= 10_000_000, f"bots.{key}", f"must be 1..10000000, got {value}")
    _check(
        p,
        1 <= bots.max_click_id_sources <= 100,
        "bots.max_click_id_sources",
        f"must be 1..100, got {bots.max_click_id_sources}",
    )
    _check(
        p,
        1024 <= bots.max_tracked <= 10_000_000,
        "bots.max_tracked",
        f"must be 1024..10000000, got {bots.max_tracked}",
    )
    for i, agent in enumerate(bots.good_crawlers):
        _check(p, bool(agent.strip()), f"bots.good_crawlers[{i}]", "must not be empty")
    seen: set[str] = set()
    for i, creator in enumerate(options.creators):
        _check(p, bool(creator.id), f"creators[{i}].id", "must not be empty")
        _check(p, creator.id not in seen, f"creators[{i}].id", f"{creator.id!r} is listed twice")
        seen.add(creator.id)
    return p


def check_files(options: Options, base_dir: Path) -> list[str]:
    """Files the config names that exist but cannot be used: each a problem naming its key.

    A missing GeoIP database is not a problem (the geo addon warns and turns itself off);
    a corrupt or unreadable one is, so ``gateway check`` catches it before ``run``.
    """
    import maxminddb

    p: list[str] = []
    for key, name, kind in (
        ("geo.country_db", options.geo.country_db, ""),
        ("geo.asn_db", options.geo.asn_db, "ASN"),
    ):
        path = resolve_path(base_dir, name) if name else None
        if path is None or not path.exists():
            continue
        try:
            with maxminddb.open_database(str(path)) as reader:
                found = reader.metadata().database_type
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as err:
            p.append(f"{key}: cannot read {path} as a MaxMind database: {err}")
            continue
        if kind and kind not in found.upper():
            p.append(f"{key}: {path} is a {found!r} database, not an {kind} one")
    return p


def resolve_path(base_dir: Path, name: str) -> Path:
    """A path from the config: absolute as given, else relative to the config file's folder."""
    path = Path(name)
    return path if path.is_absolute() else base_dir / path


def resolve_secret(
    key: str,
    value: str,
    environ: Mapping[str, str],
    dev: bool,
    problems: list[str],
    generated: list[str],
) -> str:
    """``env:NAME`` → the variable's value. Missing: an error, or in dev mode an ephemeral value."""
    if not value.startswith("env:"):
        problems.append(
            f'{key}: secrets are never written in the file; use "env:NAME" and set NAME in the environment'
        )
        return ""
    name = value[4:]
    resolved = environ.get(name, "")
    if not resolved:
        if dev:
            generated.append(f"{key} ({name})")
            return secrets.token_urlsafe(32)
        problems.append(f"{key}: environment variable {name} is not set (or run with --dev)")
        return ""
    if len(resolved) < MIN_SECRET_LENGTH:
        problems.append(f"{key}: {name} must be at least {MIN_SECRET_LENGTH} characters long")
    return resolved


MIN_SENDER_SECRET_BYTES = 24
"""Shortest sender secret accepted (the Standard Webhooks minimum)."""


def sender_secret_bytes(value: str) -> bytes:
    """A sender secret as the HMAC key: ``whsec_<base64>`` decoded (Standard Webhooks), else the
    text itself. ValueError when the whsec_ part is not base64."""
    if value.startswith("whsec_"):
        return base64.b64decode(value[6:], validate=True)
    return value.encode()


def resolve_sender_secret(
    key: str,
    value: str,
    environ: Mapping[str, str],
    dev: bool,
    problems: list[str],
    generated: list[str],
) -> bytes:
    """One ``[[sources]]`` secret: ``env:NAME`` → its HMAC key bytes (at least 24 of them)."""
    if not value.startswith("env:"):
        problems.append(f'{key}: secrets are never written in the file; use "env:NAME"')
        return b""
    name = value[4:]
    # resolve_secret's own length rule (32 characters) is for our secrets; a sender's is checked below.
    text = resolve_secret(key, value, environ, dev, [], generated)
    if not text:
        problems.append(f"{key}: environment variable {name} is not set (or run with --dev)")
        return b""
    try:
        raw = sender_secret_bytes(text)
    except (ValueError, binascii.Error):
        problems.append(f"{key}: {name} starts with whsec_ but the rest is not base64")
        return b""
    if len(raw) < MIN_SENDER_SECRET_BYTES:
        problems.append(f"{key}: {name} must hold at least {MIN_SENDER_SECRET_BYTES} bytes")
    return raw


def load_settings(
    path: str | Path | None,
    *,
    environ: Mapping[str, str] | None = None,
    dev: bool = False,
    text: str | None = None,
    admin_public: bool = False,
) -> Settings:
    """Read, decode, validate and resolve a config; raise ConfigError listing every problem.
    ``admin_public`` (``--admin-public``) lets the admin API listen on a public address."""
    environ = os.environ if environ is None else environ
    base_dir = Path.cwd()
    if text is None:
        if path is None:
            raise ConfigError(["no config file given"])
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError([f"{file}: cannot read: {err.strerror}"]) from err
        base_dir = file.resolve().parent
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError([f"{path or 'config'}: not valid TOML: {err}"]) from err
    options, problems = decode_options(data)
    problems += validate(options)
    if not admin_public:
        problems += admin_exposure(options)
    if not problems:
        problems += check_files(options, base_dir)
    generated: list[str] = []
    secret = resolve_secret("identity.secret", options.identity.secret, environ, dev, problems, generated)
    token = resolve_secret("admin.token", options.admin.token, environ, dev, problems, generated)
    source_secrets = {
        source.name: tuple(
            resolve_sender_secret(f"sources[{i}].secrets[{j}]", value, environ, dev, problems, generated)
            for j, value in enumerate(source.secrets)
        )
        for i, source in enumerate(options.sources)
    }
    sources = rule_sources(options.identity.rules, options.conversions)
    rule_keys = resolve_rule_keys(sources, environ, base_dir, problems)
    central_url = ""
    if options.central.url.startswith("env:"):
        name = options.central.url[4:]
        central_url = environ.get(name, "")
        if not central_url:
            problems.append(f"central.url: environment variable {name} is not set")
    sink_secrets: dict[str, bytes] = {}
    for i, sink in enumerate(options.sinks):
        key = f"sinks[{i}].secret"
        if sink.kind == "webhook":
            sink_secrets[sink.name] = resolve_sender_secret(
                key, sink.secret, environ, dev, problems, generated
            )
        else:
            value = resolve_secret(key, sink.secret, environ, dev, [], generated)
            if not sink.secret.startswith("env:"):
                problems.append(f'{key}: secrets are never written in the file; use "env:NAME"')
            elif not value:
                problems.append(
                    f"{key}: environment variable {sink.secret[4:]} is not set (or run with --dev)"
                )
            sink_secrets[sink.name] = value.encode()
    if problems:
        raise ConfigError(problems)
    trusted = tuple(ipaddress.ip_network(n, strict=False) for n in options.proxy.trusted_proxies)
    return Settings(
        options=options,
        base_dir=base_dir,
        secret=secret.encode(),
        admin_token=token,
        generated=tuple(generated),
        trusted_networks=trusted,
        node=options.storage.node or socket.gethostname(),
        source_secrets=source_secrets,
        rule_keys=rule_keys,
        channels=Channels(options.channels),
        central_url=central_url,
        sink_secrets=sink_secrets,
    )


def masked(options: Options) -> dict[str, Any]:
    """The resolved options as plain data, for ``gateway check``; secrets show only their source."""
    data: dict[str, Any] = msgspec.to_builtins(options)
    for key in SECRET_KEYS:
        section, name = key.split(".")
        value = data[section][name]
        data[section][name] = value if value.startswith("env:") else "***"
    return data
