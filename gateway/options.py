"""Configuration options: one frozen, typed struct per TOML table, with its defaults and help.

Owns the option types (``Options``, and a struct per ``[table]`` and per ``[[array]]``
entry), their defaults and help text (the docstring under each field), which table
decodes into which struct (``SECTIONS``, ``ARRAY_SECTIONS``) and the ``HOST:PORT`` form
of a listen address. No I/O and no checks beyond the types: reading the file is
``gateway.config``, the start-up checks are ``gateway.config_checks``.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import msgspec

from gateway.payouts import PayoutsOptions
from gateway.ruleconfig import ConversionRule, IdentityRule
from gateway.signing import STAMPED, STRIPE, StampedScheme


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
    """Peers (IPs or CIDRs) whose X-Forwarded-For/-Proto/-Host (or Forwarded) are believed."""
    trusted_header: Literal["x-forwarded", "forwarded"] = "x-forwarded"
    """Which headers of a trusted proxy name the visitor: X-Forwarded-For/-Proto/-Host, or RFC 7239
    ``Forwarded``. One only: a proxy passes the other on from the visitor as it came (nginx
    leaves a visitor's ``Forwarded`` alone), and reading it would believe the visitor."""
    strip: Literal["forward", "redirect", "off"] = "forward"
    """How tracking parameters leave the URL: forward clean, redirect to clean, or off."""
    connect_timeout: float = 5.0
    """Seconds to connect to the upstream before answering 504 (a refused connection: 502 at once)."""
    read_timeout: float = 30.0
    """Seconds of upstream silence (headers or body, or not taking the request body) before
    answering 504."""
    upstream_connections: int = 1024
    """Most connections open to the upstream at once (WebSockets hold one each); when all are
    busy a request waits up to ``connect_timeout``, then gets 504."""
    body_timeout: float = 30.0
    """Seconds a visitor's request body may stall before the request is answered 408."""
    keepalive_timeout: float = 75.0
    """Seconds a visitor's connection (and an admin client's) may stay idle, before its first
    request or between two, before it is closed (nginx's ``keepalive_timeout``)."""
    header_timeout: float = 60.0
    """Seconds a request head (request line and headers) may take to arrive whole once its
    first byte came, on either listener; later is a 408 and the connection closed (nginx's
    ``client_header_timeout``)."""
    max_request_body: int = 100 * 1024 * 1024
    """Largest request body in bytes forwarded; larger ones get 413."""
    max_websocket_message: int = 4 * 1024 * 1024
    """Largest WebSocket message relayed, in bytes, either way; a larger one closes the socket (1009)."""
    max_header_size: int = 8190
    """Largest request line or header field in bytes; larger gets a 400."""
    reserved_prefix: str = "/_gw/"
    """Path prefix the gateway answers itself and never forwards."""
    addons: tuple[str, ...] = ("identity", "campaign", "geo", "bots", "stitching", "conversions")
    """The pipeline: addon names in the order they run."""
    access_log: bool = False
    """Log one line per request (method, path without query, status, size, time; no client address)."""
    workers: int = 0
    """Proxy worker processes sharing the public port (SO_REUSEPORT); 0: one per CPU core, 1: one process."""
    shutdown_grace: float = 10.0
    """Seconds SIGTERM waits for in-flight requests (both listeners') to finish before they are cut off."""
    drain_seconds: float = 0.0
    """Seconds after SIGTERM/SIGINT during which ``/healthz`` answers 503 ``stopping`` while the
    proxy still takes new connections, so a load balancer moves traffic away first; then the
    ``shutdown_grace`` stop. 0: none, the listeners close at once."""
    worker_hang_seconds: float = 30.0
    """With several workers: seconds a worker's event loop may go without running before the
    supervisor kills it (SIGKILL) and starts it again; 0: never."""


class IdentityOptions(_Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
    secret: str = "env:GATEWAY_SECRET"
    """Master secret (at least 32 characters); every key derives from it. Use ``env:NAME``."""
    cookie_name: str = "gw_vid"
    """Name of the first-party visitor-ID cookie."""
    max_age_days: int = 395
    """Cookie lifetime in days, refreshed on each landing."""
    refresh_days: int = 1
    """Also refresh it on a returning visitor's page view whose answer no shared cache gives
    anyone else, at most once per visitor per this many days; 0: never on page views."""
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
        "sccid",
        "epik",
        "rdt_cid",
        "qclid",
        "irclickid",
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
    """Longest value kept; longer ones are dropped and counted (click IDs: up to 1000, or this
    when larger)."""
    record_referrals: bool = True
    """Record a touchpoint for a document request with an external referrer."""
    repeat_seconds: int = 1800
    """A visitor's landing with the same tracked values (or, untagged, from the same site to the
    same page) within this many seconds of the last is a reload: no new touchpoint (0: off)."""


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
    hosts: tuple[str, ...] = ()
    """Names the admin listener answers to besides IP addresses, ``localhost`` (and under
    ``.localhost``) and names without a dot; any other ``Host`` gets 421 (DNS rebinding).
    ``["*"]``: any."""
    report_processes: int = 0
    """Worker processes a large report is shared across; 0: one per CPU core (at most 8), 1: none."""
    report_worker_memory_mb: int = 200
    """A report worker holding more memory than this two minutes after the last report is
    replaced by a new one (about 50 MB), giving the memory back to the system; 0: never."""
    data_driven_reuse_seconds: float = 600.0
    """How long ``data_driven``'s weights, once learnt from a period's journeys, serve the
    reports over the same period (and a "last N days" moving on with the clock) before they are
    learnt again; 0: every report learns them."""
    body_timeout: float = 30.0
    """Seconds a request body to the admin listener (an analyst's verdict, a creator, the
    login form) may take to arrive whole before 408."""
    max_failed_logins: int = 10
    """Wrong admin tokens (the login form's and ``Authorization: Bearer``'s together) one client
    address may send within ``failed_login_seconds`` of the first before it is refused (429)."""
    failed_login_seconds: float = 300.0
    """The span ``max_failed_logins`` are counted in, and how long an address is then refused."""


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
    mirror_path: str = ""
    """A reporting mirror: a local store file (absolute, or relative to the config file) that
    every ``interval_seconds`` takes in every node's rows of the central store, and that the
    reports, payouts, fraud report and dashboard then read instead of ``storage.path``. Empty:
    no mirror; the reports read this node's store."""


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
    """Most requests per second to the destination: 0.01 (one every 100 s) to 1000, or ``inf`` (no limit)."""
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


class HmacOptions(_Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Where a sender that signs its body alone (``signature = "hmac"``) puts what: GitHub,
    WooCommerce, Lemon Squeezy and the like, each with its own header."""

    header: str
    """The header holding the signature: ``[prefix]<HMAC-SHA256 of the body>``."""
    encoding: Literal["hex", "base64"] = "hex"
    """How the HMAC is written: hex digits (any case) or base64."""
    prefix: str = ""
    """Text before the HMAC in the header (GitHub: ``sha256=``)."""
    delivery_header: str = ""
    """A header naming the delivery, the same on its retries (the key of its receipt); empty:
    the body's digest."""
    type_header: str = ""
    """A header giving the event's type when the body has none (WooCommerce's topic)."""
    stamped: bool = False
    """The header holds Stripe's layout, ``t=<seconds>,v1=<hex HMAC-SHA256 of "t.body">``
    (Calendly, Mux…): the time is signed too and must be within ``webhooks.tolerance_seconds``."""


SHOPIFY_HMAC = HmacOptions(
    header="X-Shopify-Hmac-Sha256",
    encoding="base64",
    delivery_header="X-Shopify-Event-Id",
    type_header="X-Shopify-Topic",
)
"""``signature = "shopify"``: Shopify signs the body alone, as an ``"hmac"`` sender does, in
these headers (``X-Shopify-Event-Id`` is the same on every retry of an event)."""


class EventCondition(_Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One entry of a sender's ``when``: its events of ``type`` are recorded only when the value
    at ``pointer`` is there (and is ``equals``, or matches ``matches``), or with ``absent`` only
    when it is not; else acknowledged and not recorded, as an ``ignore_types`` type is."""

    type: str
    """The sender's type value (as ``types`` names it) whose events must meet it."""
    pointer: str
    """JSON pointer into the event (``/content/invoice/first_invoice``)."""
    equals: str | None = None
    """The text the value must be (a number as written; a JSON boolean as ``true``/``false``)."""
    matches: str | None = None
    """A regular expression the whole value must match."""
    absent: bool = False
    """The other way round: recorded only when there is no value at ``pointer`` (or ``null``)."""


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
    signature: Literal["standard", "stripe", "paddle", "shopify", "hmac", "basic"] = "standard"
    """How the standard format's deliveries are signed: Standard Webhooks, Stripe's own
    ``Stripe-Signature`` (its secret the whole ``whsec_…`` text), Paddle's ``Paddle-Signature``
    (its secret the whole ``pdl_ntfset_…`` text), Shopify's
    ``X-Shopify-Hmac-Sha256`` (its secret the app's client secret, as given), an HMAC of the
    body in the header ``hmac`` names (the secret as given), or HTTP Basic with the sender's own
    login (its secret ``user:password``, or a password alone: Chargebee)."""
    hmac: HmacOptions | None = None
    """Under ``signature = "hmac"``: the header the signature comes in, and how it is written."""
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
    value_scale: float | Literal["minor"] = 1.0
    """Multiplies the mapped value (0.01 for amounts in cents); ``"minor"``: the value is in its
    currency's minor units (JPY none, EUR cents, KWD thousandths), as Stripe gives amounts."""
    order_scope: str = ""
    """The namespace of this sender's order IDs (``order/<scope>:<id>``): empty, one namespace
    with every rule and sender; a name, only with those given the same one."""
    when: tuple[EventCondition, ...] = ()
    """Conditions its events of a type must meet to be recorded (a first payment, not a
    renewal); an event of that type that does not meet them all is answered ``ignored``."""

    def signed_body(self) -> HmacOptions | None:
        """Where and how a sender that signs its body alone puts its signature: Shopify's
        headers, or the ``hmac`` table; None under the other schemes."""
        if self.signature == "shopify":
            return SHOPIFY_HMAC
        return self.hmac if self.signature == "hmac" else None

    def stamped_scheme(self) -> StampedScheme | None:
        """The timestamped scheme its deliveries carry: Stripe's or Paddle's, or Stripe's layout
        in its own header (``hmac.stamped``); None under the other schemes."""
        signed = self.signed_body()
        if signed is not None and signed.stamped:
            return dataclasses.replace(STRIPE, header=signed.header)
        return STAMPED.get(self.signature)

    @property
    def platform_layout(self) -> bool:
        """Its events are in a platform's own layout (a ``signature`` other than Standard
        Webhooks'), not ours: a field at our default pointer may be the platform's own key."""
        return self.format == "standard" and self.signature != "standard"


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
    """Extra referrer hosts (``"kagi.com"``) or site names (``"kagi"``, any suffix) → class (search,
    social, email, video, ai, shopping, sms, referral, payment, login), optionally ``"class/Name"``."""
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
    timezone: str = "UTC"
    """The IANA time zone of report days: where a time series cuts its days, and what a date
    alone (``since=2026-11-01``) and the dashboard's days mean."""


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
    prefetch: int = 10
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
        # link previews: a shared link unfurled in a chat or feed is nobody's click
        "facebookexternalhit",  # also iMessage, LINE, KakaoTalk; Meta fetches ad links with it too
        "meta-externalfetcher",
        "twitterbot",  # also Telegram ("TelegramBot (like TwitterBot)")
        "linkedinbot",
        "slackbot",
        "whatsapp",  # also Signal (it fetches as "WhatsApp/2")
        "discordbot",
        "pinterestbot",
        "snap url preview",
        "skypeuripreview",  # Teams and Skype
        "cardyb",  # Bluesky
        "mastodon/",  # every Mastodon server the post reaches fetches it once
        "redditbot",  # a link posted to Reddit; then Embedly, which Reddit hands the page to
        "embedly",
        # Google Chat's and Google Messages' previews ("Mozilla/5.0 Google-PageRenderer Google
        # (+https://developers.google.com/+/web/snippet/)": Odoo's link_tracker, ua-parser-js's
        # fetchers); TikTok's ("(compatible; TikTokSpider; ttspider-feedback@tiktok.com)": a link
        # preview fetcher, darkvisitors.com/agents/tiktokspider); Slack's image proxy fetching a
        # preview's image ("Slack-ImgProxy (+https://api.slack.com/robots)"). Not Zoom's: no agent
        # of its previewer could be sourced, and "ZoomBot" is SEOZoom's SEO crawler.
        "google-pagerenderer",
        "tiktokspider",
        "slack-imgproxy",
        # ad platforms checking a landing page before and while it runs an ad
        "adsbot-google",
        # mail link checks: Office's before it opens the browser, a mail gateway's scan
        "ms-office",
        "barracuda sentinel",
    )
    """Agent substrings (case-insensitive) of crawlers labelled ``bot`` and never blocked: search
    engines, link previews, ad review and mail link checks (none is a person's click)."""
    extra_good_crawlers: tuple[str, ...] = ()
    """More such substrings, added to ``good_crawlers`` (whose default list then stays, and
    grows with new releases)."""
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
    yes_contains: tuple[str, ...] = ()
    """Texts whose presence in the value (percent-decoded) means consent: consent platforms
    write one structured value per visitor (Cookiebot's ``statistics:true``, OneTrust's
    ``C0002:1``, CookieYes's ``analytics:yes``), which no ``yes`` list can name."""
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


def unresolvable(host: str, err: OSError) -> str:
    """Why a listen address's host (``proxy.listen``, ``admin.listen``) could not be listened on,
    said alike by one process (``gateway.server``) and the supervisor of several: a resolver
    error's ``errno`` is its own, which ``os.strerror`` calls "Unknown error -2"."""
    return f"{host} cannot be resolved to an address of this machine ({err.strerror})"


def parse_listen(value: str) -> tuple[str, int]:
    """``"127.0.0.1:8080"`` / ``"[::1]:8080"`` → (host, port); ValueError when malformed."""
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f'expected "HOST:PORT", got {value!r}')
    host = host.removeprefix("[").removesuffix("]")
    # ASCII only: ``isdigit`` takes ``²`` (which ``int`` refuses) and other scripts' digits.
    if not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise ValueError(f"port must be 0..65535, got {port!r}")
    return host, int(port)
