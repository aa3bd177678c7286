"""Typed events: what the pipeline and the signed-event endpoints learn, written append-only.

One dataclass per table (``table`` names it; the fields are its columns, a
``dict`` or ``list`` field is stored as JSON): touchpoints, identity bindings,
conversions, receipts of signed deliveries, bad events, verdict changes and creator
standings. Each carries a
UUIDv7 ``id``, a UTC timestamp ``ts`` (ISO 8601 with microseconds, so text
order is time order) and the ``node`` that wrote it.

What makes a row one the store has already is said here, once, for the store's INSERT and for
``gateway import --dry-run``'s check alike (``storage.local.dedup_keys``): ``unique``, the
column sets the table's schema makes UNIQUE (its primary key first; ``("id",)`` unless a class
says otherwise), and ``once``, columns a stored row may not share with a new one though the
schema does not constrain them (a binding's visitor-user pair). ``tests/storage/test_unique_keys.py``
holds ``unique`` to the migrated schema.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import ClassVar

_last_second: tuple[float, str] = (float("nan"), "")
"""The last whole second formatted, ``(Unix seconds, "YYYY-MM-DDTHH:MM:SS")``: events come in
bursts within one second, and the date and time part is most of the formatting."""


_JOINERS = dict.fromkeys((0x200C, 0x200D))
"""ZERO WIDTH NON-JOINER and ZERO WIDTH JOINER: format characters, not printable to
``str.isprintable``, yet part of how words and symbols are written (``printable_name``)."""


_AS_TYPED = {
    **dict.fromkeys((0xA0, 0x1680, *range(0x2000, 0x200B), 0x202F, 0x205F, 0x3000), " "),
    **dict.fromkeys((0xAD, 0x200B, 0x2060, 0xFEFF)),
}
"""Unicode's spaces but U+0020 (no-break, narrow no-break, thin, ideographic…) → U+0020; the
soft hyphen, the zero-width space, the word joiner and the byte-order mark → removed."""


def as_typed(text: str) -> str:
    """``text`` as the person who copied it reads it: a value pasted from a document, a mail, a
    chat or a spreadsheet holds a no-break space where a space shows (``summer sale``), and
    invisible characters an editor put there (a zero-width space at a break opportunity, a soft
    hyphen, a byte-order mark from a spreadsheet's first cell). Every Unicode space is U+0020,
    those invisible characters are gone; a control or a direction override stays, for
    ``str.isprintable`` to refuse."""
    return text if text.isascii() else text.translate(_AS_TYPED)


def printable_name(text: str) -> bool:
    """Whether ``text`` is printable as a name a person gave (a campaign, a source, a creator
    ID, a conversion's name): ``str.isprintable``, with the zero-width non-joiner and joiner
    allowed, as Persian writes ``می‌خواهم`` (U+200C) and emoji sequences join ``👨‍👩‍👧`` (U+200D).
    Other format and control characters still fail."""
    return text.isprintable() or text.translate(_JOINERS).isprintable()


def iso(ts: datetime, unix: float | None = None) -> str:
    """UTC ISO 8601 with microseconds and a Z, e.g. ``2026-11-25T14:00:00.000000Z``; ``unix``:
    ``ts.timestamp()``, when the caller has it already (``RequestView.unix``)."""
    global _last_second
    if ts.tzinfo is not UTC:
        ts = ts.astimezone(UTC)
    if unix is None:
        unix = ts.timestamp()
    second = unix // 1  # floor, also before 1970; never crosses a second (µs steps)
    last = _last_second  # one read: another thread may replace it meanwhile
    if last[0] != second:
        # isoformat is several times cheaper than strftime; "+00:00" is cut.
        last = _last_second = (second, ts.isoformat(timespec="seconds")[:-6])
    # %-formatting: the f-string's "06d" format spec, parsed anew each call, cost ~1,000 more.
    return last[1] + ".%06dZ" % ts.microsecond  # noqa: UP031


@dataclass(slots=True)
class Touchpoint:
    """One landing carrying campaign parameters, a click ID, a creator ID or an external referrer."""

    table: ClassVar[str] = "touchpoints"

    id: str
    ts: str
    node: str
    visitor_key: str
    source: str | None = None
    medium: str | None = None
    campaign: str | None = None
    term: str | None = None
    content: str | None = None
    creator_id: str | None = None
    sub_id: str | None = None
    click_id_kind: str | None = None
    click_id: str | None = None
    referrer_host: str | None = None
    channel: str | None = None
    """Marketing channel from ``gateway/channels.py``; ``gateway reclassify`` recomputes it."""
    landing_path: str = "/"
    raw_params: dict[str, str] = field(default_factory=dict)
    bot_score: int | None = None
    """0..100 from the bots addon (None: not scored)."""
    verdict: str | None = None
    """``allow``, ``review``, ``block`` or ``bot`` (a known good crawler); None: not scored.
    Later changes (re-scoring, an analyst) are ``VerdictChange`` rows, resolved on read."""
    reasons: list[str] = field(default_factory=list)
    """Names of the signals that scored, e.g. ``["crawler", "datacenter"]``."""
    country: str | None = None
    region: str | None = None
    asn: int | None = None
    ip_hash: str | None = None
    """Keyed hash of the client IP under a key that changes every UTC day: counts distinct IPs
    within a day, links nothing across days, and never reveals the address."""
    consent: str = "cookie"
    """The visitor's population (``addons/identity.py``): ``cookie`` (the ID cookie),
    ``cookieless`` (``identity.mode``) or ``no_consent`` (the consent cookie said no, or nothing):
    the last two are keyed by a one-day hash, not a cookie. Reports count them apart."""


@dataclass(slots=True)
class Binding:
    """A visitor bound to a user: an identity rule fired, or a signed ``identify`` arrived.

    Every touchpoint of the visitor, earlier and later, belongs to the user from then on;
    one user may have many visitors (devices), each bound once. Nothing ever unbinds.
    """

    table: ClassVar[str] = "identities"
    once: ClassVar[tuple[str, ...]] = ("visitor_key", "user_key")
    """A pair the store has already is not stored again, whoever binds it (another worker, the
    gateway before a restart, a sender, an import): the store checks as it inserts."""

    id: str
    ts: str
    node: str
    visitor_key: str
    user_key: str
    rule: str
    """The identity rule (or ``[[sources]]`` sender) that bound them."""
    origin: str = "rule"
    """``rule``, ``webhook``, ``segment`` or ``import``."""
    consent: str = "cookie"
    """The visitor's population when bound (``Touchpoint.consent``); a signed event's is
    ``cookie``. A sink never sends a ``no_consent`` binding."""


@dataclass(slots=True)
class Conversion:
    """A goal reached, for a visitor and/or a user; ``dedup_key`` is UNIQUE in the store."""

    table: ClassVar[str] = "conversions"
    unique: ClassVar[tuple[tuple[str, ...], ...]] = (("id",), ("dedup_key",))

    id: str
    ts: str
    node: str
    name: str
    dedup_key: str
    """``order:<order id>`` when an order ID is known (a rule and a billing webhook for the same
    order count once; ``order_key``), else a per-visitor, per-rule window."""
    visitor_key: str | None = None
    user_key: str | None = None
    value: float | None = None
    """In units of ``currency``, ``0 <= value <= MAX_VALUE``."""
    currency: str | None = None
    order_id: str | None = None
    origin: str = "rule"
    """``rule``, ``webhook``, ``segment`` or ``import``."""
    rule: str = ""
    """The conversion rule or sender that recorded it."""


NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
"""A sender's name or an ``order_scope``: neither can hold the separators of the keys they go
into (``event:<sender>:…``, ``order/<scope>:…``)."""
NAME_RULE = "1-64 of a-z 0-9 _ . - (not starting with _ . -)"
"""``NAME`` in words, for config errors."""


def order_scope_problem(scope: str) -> str | None:
    """What is wrong with an ``order_scope`` (a rule's or a sender's), for its config error."""
    if not scope or NAME.fullmatch(scope):
        return None
    return f"must be {NAME_RULE} or empty, got {scope!r}"


def order_key(order_id: str, scope: str = "") -> str:
    """A conversion's ``dedup_key`` from its order ID: ``order:<id>``, one namespace for every
    rule, sender and node (the same order seen twice counts once), or ``order/<scope>:<id>``
    for a rule or sender given an ``order_scope`` (two shops whose order numbers overlap). The
    two forms never meet: a scoped key does not begin with ``order:``."""
    return f"order/{scope}:{order_id}" if scope else f"order:{order_id}"


MAX_VALUE = 1e15
"""The largest conversion value recorded (in currency units): beyond any real order, and
below 2**53, so every minor unit of it is exact in the store's floating-point column."""


@dataclass(slots=True)
class Receipt:
    """A signed delivery or inbound event seen once: (sender, kind, key) is UNIQUE, so a
    replayed delivery or a re-sent event is recognised by the store, not by memory."""

    table: ClassVar[str] = "receipts"
    unique: ClassVar[tuple[tuple[str, ...], ...]] = (("id",), ("sender", "kind", "key"))

    id: str
    ts: str
    node: str
    sender: str
    kind: str
    """``delivery`` (the ``webhook-id``) or ``event`` (the event's own key)."""
    key: str


@dataclass(slots=True)
class PastReceipt(Receipt):
    """A receipt an older version may have stored under a key no longer written (the plain
    digest of a body, ``signing.body_digest``): in a group of ``LocalStore.submit_groups`` it is
    looked up, never inserted, and when the store has it the group is not new, as a receipt
    already stored makes it."""


@dataclass(slots=True)
class BadEvent:
    """A signed event that failed validation, kept with its reason so it can be replayed."""

    table: ClassVar[str] = "bad_events"

    id: str
    ts: str
    node: str
    sender: str
    reason: str
    body: str
    """The payload as received, truncated at a limit."""
    truncated: bool = False


@dataclass(slots=True)
class Erasure:
    """A user erased on this node (GDPR Art. 17): keys and counts only, so other stores can follow.
    A visitor erased alone (``DELETE /api/visitors/{id}``) is recorded so too, its key the
    ``user_key`` and listed in ``visitors`` (a user key never is: keyed apart)."""

    table: ClassVar[str] = "erasures"

    id: str
    ts: str
    node: str
    user_key: str
    visitors: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    also_keys: list[str] = field(default_factory=list)
    """The user's other keys (``Keys.user_keys``: rows from before ``user_id_storage``
    changed) the central store erases under too."""


MAX_CLICK_ID = 1000
"""Longest click ID kept, or ``campaign.max_value_length`` when larger: an ad platform's token,
not text a person wrote. TikTok's ttclid and Meta's fbclid (with its ``_aem_`` part) pass 200
characters, the default bound for the other values: such a click was dropped, and a landing
tagged with nothing else recorded no touchpoint."""
CAMPAIGN_FIELDS = ("source", "medium", "campaign", "term", "content")
"""The campaign fields a landing's ``<prefix><field>`` parameters fill (``utm_source``…): the
campaign addon reads them, the config checks that no other parameter claims their names."""
ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
"""A query parameter's name as tracked names are matched: ``name.translate(ASCII_LOWER)``, its
ASCII letters lower-cased and nothing else (``param_key``)."""


def param_key(name: str) -> str:
    """A decoded query key as the tracked names (all ASCII) are matched: in any case of its ASCII
    letters, no other letter being another's case. ``str.lower`` folds more: the Kelvin sign
    (U+212A) is a ``k`` to it, and a site's own ``msclKid`` written with one was taken for
    Microsoft's click ID, stripped from the site's URL and recorded (until 2026-12-06)."""
    return name.lower() if name.isascii() else name.translate(ASCII_LOWER)


def bare_prefixes(prefixes: tuple[str, ...]) -> frozenset[str]:
    """The (lower-cased) ``campaign.prefixes`` that a name equal to one is no tracked parameter
    under: ``utm_`` alone names no field, and is the site's. A prefix that extends another
    (``c_`` beside ``c``) is that one's prefix and something after it, tracked as such."""
    return frozenset(p for p in prefixes if not any(p != q and p.startswith(q) for q in prefixes))


CONVERSION_ORIGINS = ("rule", "webhook", "segment", "import")
"""What recorded a conversion (``conversions.origin``): a conversion rule, a signed webhook, a
Segment call, or ``gateway import``."""

VERDICTS = ("allow", "review", "block", "bot")
"""The bot verdicts a touchpoint can carry (``addons/bots.py`` scores, analysts override);
none recorded counts as ``allow``."""


@dataclass(slots=True)
class VerdictChange:
    """A touchpoint's verdict changed after it was stored: re-scored when a late signal arrived
    (``origin = "rescore"``, ``note`` names the signal) or overridden by an analyst
    (``origin = "analyst"``, with who and why), or that override withdrawn
    (``origin = "analyst_cleared"``, with who and why; ``verdict``, score and reasons those it
    went back to). Append-only; on read, the latest analyst override no later withdrawal
    withdrew wins, else the latest re-score, else the touchpoint's own verdict (the views
    ``live_verdict_changes`` and ``effective_touchpoints`` say it once for every reader)."""

    table: ClassVar[str] = "verdict_changes"
    needs: ClassVar[tuple[str, str]] = ("touchpoint_id", "touchpoints")
    """Stored only while the store has its touchpoint (checked by the store's INSERT itself): a
    late re-score or an analyst's verdict of a landing an erasure, a retention purge or a
    refusal left out is no orphan naming it."""

    id: str
    ts: str
    node: str
    touchpoint_id: str
    verdict: str
    bot_score: int | None
    reasons: list[str]
    origin: str
    """``rescore``, ``analyst`` or ``analyst_cleared``."""
    note: str = ""
    analyst: str | None = None


@dataclass(slots=True)
class CreatorStanding:
    """An admin set a creator's standing in the registry (``PUT /api/creators/{id}``); the
    latest per creator wins over ``[[creators]]``. Append-only, with who and why."""

    table: ClassVar[str] = "creator_standings"

    id: str
    ts: str
    node: str
    creator_id: str
    verified: bool
    name: str
    analyst: str
    note: str


@dataclass(slots=True)
class DailyCount:
    """A landing by a visitor who asked not to be tracked (``Sec-GPC``/``DNT``): only counted,
    per UTC day and campaign values, with no visitor key, id or time of day. The store adds
    ``count`` to the row with the same day and values (``conflict``)."""

    table: ClassVar[str] = "daily_counts"
    unique: ClassVar[tuple[tuple[str, ...], ...]] = (
        ("day", "source", "medium", "campaign", "channel", "creator_id"),
    )
    conflict: ClassVar[str] = f"({', '.join(unique[0])}) DO UPDATE SET count = count + excluded.count"

    day: str
    """``YYYY-MM-DD`` (UTC)."""
    source: str = ""
    medium: str = ""
    campaign: str = ""
    channel: str = ""
    creator_id: str = ""
    """Values absent from the landing are ``""`` (not NULL, so the day's row is unique)."""
    count: int = 1


Event = (
    Touchpoint
    | Binding
    | Conversion
    | Receipt
    | BadEvent
    | Erasure
    | VerdictChange
    | CreatorStanding
    | DailyCount
)
EVENT_TYPES: tuple[type[Event], ...] = (
    Touchpoint,
    Binding,
    Conversion,
    Receipt,
    BadEvent,
    Erasure,
    VerdictChange,
    CreatorStanding,
    DailyCount,
)
