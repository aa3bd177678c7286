"""One sender event → the rows it means, or every reason it cannot be taken.

``map_event`` reads our fields out of a sender's event through its ``SourceMap``
(pointers, type map, defaults), validates them, derives the event's own key
(``event_id``, ``messageId``, ``$insert_id``, ``conversion_unique_id``, else
``type:creator_id:timestamp:<digest of who and what>``) and builds a ``Conversion``, ``Binding`` and/or
``Touchpoint``; or raises ``Invalid`` listing each field error with the sender's
pointer. Pure: no I/O, the clock and keys are passed in.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from addons.amounts import has_decimals, scaled
from addons.identity import verify_cookie
from addons.values import compared_text, meets
from gateway.attribution import exponent
from gateway.channels import Channels, Signals
from gateway.emails import holds_email, without_email
from gateway.events import (
    MAX_CLICK_ID,
    MAX_VALUE,
    Binding,
    Conversion,
    Event,
    PastReceipt,
    Receipt,
    Touchpoint,
    as_typed,
    iso,
    order_key,
    printable_name,
)
from gateway.keys import MAX_COOKIE_HEADER, MAX_USER_ID, Keys, visitor_cookies
from gateway.placeholders import placeholder
from gateway.sources import KINDS, MISSING, SourceMap, resolve, stopped_at

_encode_json = msgspec.json.Encoder().encode
MAX_KEY = 256
"""Longest event key kept in a receipt."""
EVENT_KEY_FALLBACKS = ("/messageId", "/$insert_id", "/conversion_unique_id")
"""Where an event's own key is looked for after the ``event_id`` mapping, in this order."""
ATTRIBUTION = ("source", "medium", "campaign", "creator_id", "click_id")
"""Fields of which a touchpoint needs at least one."""
NAMED = frozenset(("source", "medium", "campaign", "term", "content", "creator_id", "sub_id", "name"))
"""Fields that hold a name a person gave, printable as ``events.printable_name`` says."""
EMAIL_CHECKED = ("source", "medium", "campaign", "term", "content", "sub_id")
"""Fields left out when they hold an email address, as the proxy drops such a tracking value
(``addons.campaign``): a click ID (an ad platform's token) and a creator ID (the operator's own
name for a partner) are not looked at, as there."""
PLACEHOLDER_CHECKED = (
    "source",
    "medium",
    "campaign",
    "term",
    "content",
    "creator_id",
    "sub_id",
    "click_id",
    "click_id_kind",
)
"""Fields left out when they are a placeholder (``undefined``, ``null``…), as the proxy drops
such a tracking value (``addons.campaign``): until 2026-12-07 a campaign, source… or click ID of
``undefined`` was recorded as sent (a click ID every event shared; a campaign "undefined"), and a
click ID's kind so (a click of a kind "undefined"): left out, its click ID is kept without a
kind, as one sent without any."""
NO_VALUE = "is no value (what code writes where it has none: undefined, null…)"
"""Why an ID that is one of ``placeholders.PLACEHOLDERS`` is not taken."""
EMAIL_WHY = "holds an email address (personal data is not stored)"

_CONVERSION_ONLY = frozenset(("value", "currency", "order_id", "name"))
NOT_RECORDED = {
    "touchpoint": _CONVERSION_ONLY,
    "identify": _CONVERSION_ONLY
    | {"term", "content", "sub_id", "click_id_kind", "landing_path", *ATTRIBUTION},
}
"""Fields an event of a kind does not record: one its pointer finds nothing for is not reported
``unmatched`` (a click has no order value: saying so of each click hid a typo among them)."""


class Invalid(Exception):
    """An event that fails validation: every field error, each naming our field and its pointer."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("; ".join(errors))


@dataclass(frozen=True, slots=True)
class Mapped:
    key: str
    """The event's own key (its receipt makes a re-send a duplicate)."""
    rows: list[Event]
    """What it records; empty when the event is acknowledged and means nothing to store."""
    kind: str
    ignored: str = ""
    """When ``rows`` is empty: why nothing is recorded (the answer's ``reason``)."""
    unmatched: tuple[str, ...] = ()
    """Fields read whose pointer, as the operator configured it, found nothing in the event
    (``value (/money/amountt)``): a typo records the event without it, so the answer and a
    metric say so."""
    defaulted: tuple[str, ...] = ()
    """A platform sender's fields (``SourceMap.platform``) read from their default pointer,
    not one the operator wrote (``name (/name)``): the log says so once."""
    left_out: tuple[tuple[str, str, str], ...] = ()
    """Values read and not taken, as ``(field, reason, what to say)``: an ID that is no value
    (``placeholder``: ``undefined``, ``null``…) or a campaign field holding an email address
    (``email``); the event is recorded (or, Segment's, ignored) without them, and the answer and
    ``gateway_inbound_left_out_total`` say so."""
    aliases: tuple[str, ...] = ()
    """Other keys of the same event whose receipt is written with ``key``'s: the key of an event
    keyed by its timestamp as versions before 2026-12-05 wrote it (the time as the sender wrote
    it, ``1764583200``), so that an event recorded before the upgrade is a duplicate after it."""

    def group(
        self, new_id: Callable[[], str], ts: str, node: str, sender: str, keyed: Callable[[str], str]
    ) -> list[Event]:
        """What one accepted event writes, in one all-or-nothing group: a receipt for its key and
        each alias, keyed (``keyed``: ``signing.ReceiptKeys``; ``new_id`` mints each receipt's
        ID), each with the key as sent looked up (``PastReceipt``: a receipt versions before
        2026-12-07 stored so), then its rows."""
        receipts: list[Event] = []
        for k in (self.key, *self.aliases):
            receipts += [
                Receipt(new_id(), ts, node, sender, "event", keyed(k)),
                PastReceipt("", "", node, sender, "event", k),
            ]
        return [*receipts, *self.rows]


@dataclass(frozen=True)
class Limits:
    """What ``map_event`` needs besides the event: keys, node, clock bounds, length caps, and
    the channel classifier (a sender's touchpoint gets its channel as it is recorded, as a
    landing does)."""

    keys: Keys
    node: str
    ids: Callable[[int], str]
    max_age: timedelta
    tolerance: timedelta
    max_len: int
    channels: Channels


class _Reader:
    """Reads our fields out of one sender event, collecting errors rather than stopping."""

    def __init__(self, src: SourceMap, event: Any, max_len: int) -> None:
        self.src, self.event, self.max_len = src, event, max_len
        self.errors: list[str] = []
        self.unmatched: list[str] = []
        self.defaulted: list[str] = []
        self.stopped: dict[str, str] = {}
        self.left_out: list[tuple[str, str, str]] = []

    def leave_out(self, name: str, reason: str, why: str, where: str | None = None) -> None:
        """Records that ``name``'s value is not taken, and why (``Mapped.left_out``)."""
        self.left_out.append((name, reason, f"{where or self.where(name)}: {why}"))

    def no_placeholder(self, name: str, text: str | None) -> str | None:
        """``text``, or None when it is a placeholder (``undefined``, ``null``…: what code
        writes where it has no value), left out with the reason ``placeholder``."""
        if text is not None and placeholder(text):
            self.leave_out(name, "placeholder", f"{text.strip()[:40]!r} {NO_VALUE}")
            return None
        return text

    def said(self, *names: str) -> str:
        """What is said of the values of ``names`` left out, each after "; " (or "")."""
        return "".join(f"; {said}" for name, _, said in self.left_out if name in names)

    def raw(self, name: str) -> Any:
        tokens = self.src.pointers.get(name)
        value = MISSING if tokens is None else resolve(self.event, tokens)
        if value is MISSING and tokens and (stop := stopped_at(self.event, tokens)):
            # Said where the pointer ran into a list or a text, not left to read as a typo's
            # "found nothing" (or a user ID "needed" that the sender did send, in a list).
            self.stopped[name] = f"where {stop[0]} is {json_kind(stop[1])}, not an object"
        if value is MISSING and name in self.src.configured and name not in self.unmatched:
            self.unmatched.append(name)
        if value is MISSING or value is None or value == "":
            return self.src.defaults.get(name, MISSING)
        # The type is every layout's own key (one not mapped is refused, not misread).
        defaulted = self.src.platform and name not in self.src.configured and name != "type"
        if defaulted and name not in self.defaulted:
            self.defaulted.append(name)
        return value

    def where(self, name: str) -> str:
        tokens = self.src.pointers.get(name)
        stopped = f", {self.stopped[name]}" if name in self.stopped else ""
        return f"{name} (/{'/'.join(tokens)}{stopped})" if tokens else name

    def fail(self, name: str, message: str) -> None:
        self.errors.append(f"{self.where(name)}: {message}")

    def text(self, name: str, max_len: int | None = None) -> str | None:
        """A field's text, trimmed; a name a person gave (``NAMED``) may hold the zero-width
        joiners (``events.printable_name``), an ID (a user's, an order's) may not."""
        value = self.raw(name)
        if value is MISSING:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int):
            self.fail(name, f"expected a string, got {json_kind(value)}")
            return None
        # A name pasted by a person, as a landing's: its no-break spaces spaces, its invisible
        # characters gone (``events.as_typed``); an ID is a token, taken as it came.
        value = (as_typed(str(value)) if name in NAMED else str(value)).strip()
        limit = max_len or self.max_len
        if len(value) > limit:
            self.fail(name, f"longer than {limit} characters")
            return None
        if not (printable_name(value) if name in NAMED else value.isprintable()):
            self.fail(name, "contains unprintable characters")
            return None
        return value or None

    def number(self, name: str, bounded: bool = True) -> float | None:
        """A finite number (after ``value_scale``); ``bounded``: a conversion's value, from 0 to
        ``MAX_VALUE``."""
        value = self.raw(name)
        if value is MISSING:
            return None
        # "minor": each currency's minor units, divided once the currency is known (map_event).
        scale = self.src.value_scale
        amount = scaled(value, 1.0 if isinstance(scale, str) else scale)
        if amount is None:
            got = repr(value[:40]) if isinstance(value, str) else json_kind(value)
            self.fail(name, f"expected a number, got {got}")
            return None
        if bounded and not (math.isfinite(amount) and 0 <= amount <= MAX_VALUE):
            # The refund hint where the amount is one: a huge positive one is no refund.
            refund = "; refunds are not recorded (list their type in ignore_types)" if amount < 0 else ""
            self.fail(name, f"expected a number from 0 to {MAX_VALUE:.0e} (after value_scale){refund}")
            return None
        if not math.isfinite(amount):
            self.fail(name, "expected a finite number")
            return None
        return amount

    def moment(self, name: str, now: datetime, limits: Limits) -> datetime:
        value = self.raw(name)
        if value is MISSING:
            return now
        try:
            if isinstance(value, bool):
                raise TypeError
            # Digits of other scripts ("١٧٣٣…") pass isdigit() and float(): ASCII only.
            if isinstance(value, str) and not (value.isascii() and value.replace(".", "", 1).isdigit()):
                # RFC 3339 allows a lower-case z (Python's parser does not).
                moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
                moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
                try:
                    moment = moment.astimezone(UTC)
                except OverflowError:  # year 1 or 9999 with an offset: no such UTC date-time
                    self.fail(
                        name,
                        f"{value[:40]!r} is outside the accepted range: {_beyond(moment.year > 1, limits)}",
                    )
                    return now
            else:
                seconds = float(value)
                if math.isnan(seconds):
                    raise ValueError(value)
                try:
                    moment = datetime.fromtimestamp(seconds / 1000 if seconds > 1e11 else seconds, UTC)
                except (ValueError, OverflowError, OSError):
                    # Unix time all the same, beyond what a date-time holds (1e400, 10^23): say
                    # which bound it crossed, as for one within the years a date-time holds.
                    shown = "a number beyond a double" if math.isinf(seconds) else str(value)[:40]
                    self.fail(name, f"{shown} is outside the accepted range: {_beyond(seconds > 0, limits)}")
                    return now
        except (TypeError, ValueError, OverflowError, OSError):
            # What it got, as the value errors say it (the sender's log shows the 400 alone).
            got = repr(value[:40]) if isinstance(value, str) else json_kind(value)
            self.fail(name, f"expected an ISO 8601 date-time or Unix seconds/milliseconds, got {got}")
            return now
        if moment > now + limits.tolerance:  # the sender's clock ahead, or a date it made up
            why = _beyond(True, limits)
        elif moment < now - limits.max_age:
            why = _beyond(False, limits)
        else:
            return moment
        self.fail(name, f"{iso(moment)} is outside the accepted range: {why}")
        return now


def key_instant(moment: datetime) -> str:
    """An event's time as its key holds it: UTC ISO 8601 with a Z, its fraction only when it has
    one (``2026-12-01T10:00:00Z``, ``2026-12-01T10:00:00.250000Z``), however the sender wrote it."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


def json_kind(value: Any) -> str:
    """What a JSON value is, as JSON names it (the sender wrote JSON, not Python: ``null``, not
    ``NoneType``; ``an object``, not ``dict``), for a field error's "got …"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "a number beyond a double" if math.isinf(value) else repr(value)
    if isinstance(value, int):  # repr() of an integer of thousands of digits raises
        return str(value) if value.bit_length() <= 64 else "a whole number past 64 bits"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def _beyond(future: bool, limits: Limits) -> str:
    """Which bound of ``Reader.moment``'s window a time crossed, named by the key that sets it."""
    if future:
        return f"more than webhooks.tolerance_seconds ({int(limits.tolerance.total_seconds())}) in the future"
    return f"older than webhooks.max_event_age_days ({limits.max_age.days})"


def unmet_requirement(src: SourceMap, raw_type: str, event: dict[str, Any]) -> str | None:
    """Why an event of ``raw_type`` is not recorded under the sender's ``when`` (the answer's
    reason), or None when it meets every condition for its type (or there is none)."""
    for need in src.when.get(raw_type, ()):
        value = resolve(event, need.tokens)
        if need.absent:
            if value is MISSING or value is None:
                continue
            return f"type {raw_type!r} with {need.pointer} (sources.when: absent): not recorded"
        if value is MISSING or value is None:
            stop = stopped_at(event, need.tokens) if value is MISSING else None
            why = f" (where {stop[0]} is {json_kind(stop[1])}, not an object)" if stop else ""
            return f"type {raw_type!r} without {need.pointer}{why} (sources.when): not recorded"
        if not meets(value, need.equals, need.matches):
            text = compared_text(value)
            got = repr(text[:40]) if text is not None else json_kind(value)
            wanted = (
                f"is not {need.equals!r}"
                if need.matches is None
                else f"does not match {need.matches.pattern!r}"
            )
            return f"type {raw_type!r} whose {need.pointer} ({got}) {wanted} (sources.when): not recorded"
    return None


def map_event(
    src: SourceMap, event: Any, now: datetime, limits: Limits, fallback_key: str, header_empty: bool = False
) -> Mapped:
    """One sender event → the rows it records and its own key; ``Invalid`` with every error.
    ``header_empty``: the delivery's type header (``SourceMap.type_header``) was sent, empty."""
    if not isinstance(event, dict):
        raise Invalid([f"event: expected a JSON object, got {json_kind(event)}"])
    r = _Reader(src, event, limits.max_len)
    raw_type = r.text("type")
    kind = None
    why_ignored = f"type {raw_type!r} is in ignore_types: not recorded"
    if raw_type is None:
        if not r.errors:
            # Shopify's is a header: "missing" alone sent the operator looking in the body.
            header = f", and no {src.type_header} header" if src.type_header else ""
            if src.type_header and header_empty:  # it is there: "no … header" sent them checking a relay
                header = f", and the {src.type_header} header is empty"
            r.fail("type", f"missing{header}")
    elif raw_type in src.ignore:
        kind = "ignored"
    else:
        kind = src.types.get(raw_type, raw_type if raw_type in KINDS else None)
        if kind is None:
            known = sorted({*src.types, *KINDS})
            r.fail("type", f"{raw_type!r} is not mapped (known: {', '.join(known)}; see types)")
        elif (unmet := unmet_requirement(src, raw_type, event)) is not None:
            kind, why_ignored = "ignored", unmet
    moment = r.moment("timestamp", now, limits)
    # The cookie as the Cookie header has it (gw_vid=v1.…, or the whole header, the site's own
    # cookies around it): taken for a raw ID, it bound the user to a visitor no visit has. The
    # first of ours whose signature verifies is meant, as the gateway reads the header.
    given = r.raw("visitor_id")
    as_cookie = isinstance(given, str) and visitor_cookies(given) is not None
    visitor_id = r.text("visitor_id", MAX_COOKIE_HEADER if as_cookie else None)
    read_user_id = r.text("user_id", MAX_USER_ID)
    # analytics.js sends userId "undefined": bound, everyone sent with it was one user.
    user_id = r.no_placeholder("user_id", read_user_id)
    ours = visitor_cookies(visitor_id) if visitor_id is not None else None
    if ours is not None:
        mac = limits.keys.cookie_mac
        visitor_id = next((found for value in ours if (found := verify_cookie(mac, value))), None)
        if visitor_id is None:
            r.fail("visitor_id", "a visitor cookie value whose signature does not verify")
    read_visitor_id = visitor_id
    if ours is None:
        # The visitor cookie read where there is none: bound, every user identified with it
        # was joined to one visitor, and credited with every touchpoint sent with it.
        visitor_id = r.no_placeholder("visitor_id", visitor_id)
    attrs = {name: r.text(name) for name in ("source", "medium", "campaign", "term", "content")}
    for name in ("creator_id", "sub_id", "click_id", "click_id_kind", "landing_path"):
        attrs[name] = r.text(name, max(r.max_len, MAX_CLICK_ID) if name == "click_id" else None)
    read_creator_id, read_sub_id, read_click_id = attrs["creator_id"], attrs["sub_id"], attrs["click_id"]
    for name in PLACEHOLDER_CHECKED:
        if name not in NOT_RECORDED.get(kind or "", ()):
            # A link builder's String(undefined): a creator "undefined", credited and paid for
            # every event sent with it (until 2026-12-07), as the proxy's ?creator_id=undefined;
            # a click ID every event sent with it shared (Google's ad click for a click that never
            # was), a campaign "undefined" in the reports (until 2026-12-07 both).
            attrs[name] = r.no_placeholder(name, attrs[name])
    recorded = [name for name in EMAIL_CHECKED if name not in NOT_RECORDED.get(kind or "", ())]
    for name in recorded:
        text = attrs[name]
        if text and ("@" in text or "%" in text) and holds_email(text):  # as the proxy's
            attrs[name] = None
            r.leave_out(name, "email", EMAIL_WHY)
    if attrs["landing_path"]:  # a personal link's address, as a landing's path stores it
        attrs["landing_path"] = without_email(attrs["landing_path"])
    # Only a conversion's value is recorded: another kind's (a refund listed in ignore_types,
    # a click) need not be one a conversion may have.
    value = r.number("value", bounded=kind == "conversion")
    currency = r.text("currency")
    if currency is not None and not re.fullmatch(r"[A-Za-z]{3}", currency):
        r.fail("currency", f"expected a 3-letter ISO 4217 code, got {currency[:20]!r}")
    if src.value_scale == "minor" and value is not None:
        if currency is None:
            r.fail("value", 'value_scale = "minor" needs the currency whose minor units the value is in')
        elif kind == "conversion" and has_decimals(given := r.raw("value")):
            # A sender that sends major units ("10.00") under "minor": read as 10 cents, each
            # order was recorded at a hundredth of its value, and nothing said (until 2026-12-07).
            code = currency.upper() if re.fullmatch(r"[A-Za-z]{3}", currency) else "EUR"  # else refused
            places = exponent(code, src.minor_units)
            shown = repr(given[:40]) if isinstance(given, str) else repr(given)
            r.fail(
                "value",
                f'{shown} has decimals: value_scale = "minor" expects whole minor units ({10 * 10**places}'
                f" for {10:.{places}f} {code}); for a sender that sends major units, remove value_scale",
            )
            value = None
        else:  # JPY has none, EUR cents, KWD thousandths
            value = scaled(value, 10.0 ** -exponent(currency, src.minor_units))
    order_id = read_order_id = r.text("order_id")
    if kind == "conversion":  # its order's key: every later order was taken for a duplicate, and lost
        order_id = r.no_placeholder("order_id", order_id)
    elif order_id is not None and placeholder(order_id):
        order_id = None
    conv_name = r.text("name")
    given_key = r.raw("event_id")
    if given_key is not MISSING and (isinstance(given_key, bool) or not isinstance(given_key, str | int)):
        # Left out, the event would be keyed by its delivery: a re-send would count twice.
        r.fail("event_id", f"expected a string or an integer, got {json_kind(given_key)}")
    candidates = (
        (given_key, "its event_id", r.where("event_id")),
        *(
            (resolve(event, tokens), f"its {p}", f"event_id ({p})")
            for p in EVENT_KEY_FALLBACKS
            if (tokens := tuple(p[1:].split("/"))) != src.pointers.get("event_id")  # Segment's is /messageId
        ),
    )
    key: str | None = None
    key_from = ""
    for v, where, pointer in candidates:
        if not isinstance(v, str | int) or isinstance(v, bool) or not str(v).strip():
            continue
        if placeholder(str(v)):
            # One key for every event sent with it: all after the first were duplicates.
            r.leave_out("event_id", "placeholder", f"{str(v).strip()[:40]!r} {NO_VALUE}", pointer)
            continue
        key, key_from = str(v), where
        break
    if key is not None and not key.isprintable():
        # Refused, not trimmed: a key accepted before (spaces around it) stays the key it was.
        if key_from == "its event_id":
            r.fail("event_id", "contains unprintable characters")
        else:
            r.fail("event_id", f"the event key, from {key_from}, contains unprintable characters")
    aliases: tuple[str, ...] = ()
    if key is None:
        raw_ts = r.raw("timestamp")
        if raw_ts is MISSING:
            key = fallback_key
            key_from = (
                "the delivery's ID (webhook-id, or its delivery header) and the event's index,"
                " as it has no event_id"
            )
        else:
            key_from = "its type, creator_id and timestamp, as it has no event_id"
            # Type, creator and time alone are one key for every order, user or click of that
            # second: the second of two would be answered "duplicate" and lost. Who and what
            # tell them apart; keyed forms only (a receipt holds no raw user ID).
            # The values as read (a user, visitor, creator, sub or click ID "undefined" too): the
            # key an event had before 2026-12-07 stays its key, so that its retry is still a duplicate.
            who = [
                limits.keys.visitor_key(read_visitor_id) if read_visitor_id else None,
                limits.keys.user_key(read_user_id) if read_user_id else None,
                read_order_id,
                read_click_id,
                read_sub_id,
                conv_name,
                value,
            ]
            digest = hashlib.sha256(_encode_json(who)).hexdigest()[:16]
            # The instant, not how it was written: 1764583200 and 2026-12-01T10:00:00Z are one
            # event (until 2026-12-05 two keys: a re-send written the other way counted twice).
            # The form of the common case, so that its keys stored before stay the same; a key
            # written otherwise before is kept beside it (aliases), so it still matches too.
            key = f"{raw_type}:{read_creator_id or ''}:{key_instant(moment)}:{digest}"
            written = f"{raw_type}:{read_creator_id or ''}:{raw_ts}:{digest}"
            if written != key and len(written) <= MAX_KEY:  # a longer one was refused, never kept
                aliases = (written,)
    if len(key) > MAX_KEY:
        # Named by where it came from: a long webhook-id made the key of an event with none.
        r.fail(
            "event_id", f"the event key, from {key_from}, is {len(key):,} characters, longer than {MAX_KEY}"
        )
    if kind == "identify" and not src.lenient:
        for name, given in (("visitor_id", visitor_id), ("user_id", user_id)):
            if given is None and not any(e.startswith(name) for e in r.errors):
                left = next((said for n, _, said in r.left_out if n == name), None)
                if left is not None:  # "missing" of a user ID sent: say what it was
                    r.errors.append(f"{left}; identify binds a visitor to a user")
                else:
                    r.fail(name, "missing (identify binds a visitor to a user)")
    needs_someone = kind in ("conversion", "touchpoint") and visitor_id is None and user_id is None
    if needs_someone and not any(e.startswith(("visitor_id", "user_id")) for e in r.errors):
        said = r.said("visitor_id", "user_id")
        r.errors.append(f"{r.where('visitor_id')} / {r.where('user_id')}: one of them is needed{said}")
    has_attribution = any(attrs[name] for name in ATTRIBUTION)
    attribution_failed = any(e.startswith(ATTRIBUTION) for e in r.errors)
    if kind == "touchpoint" and not has_attribution and not src.lenient and not attribution_failed:
        # Named where they are read (the sender's engineer writes the event), those unmapped
        # left out: no event fills them.
        wanted = [r.where(name) for name in ATTRIBUTION if src.pointers.get(name)] or list(ATTRIBUTION)
        r.errors.append(f"touchpoint: needs at least one of {', '.join(wanted)}{r.said(*ATTRIBUTION)}")
    if r.errors:
        raise Invalid(r.errors)
    rows: list[Event] = []
    if kind == "ignored":
        return Mapped(key, rows, kind, why_ignored, aliases=aliases)
    if src.lenient and kind == "identify" and not (visitor_id and user_id):
        why = f"identify without both {r.where('visitor_id')} and {r.where('user_id')}: nothing to bind"
        why += r.said("visitor_id", "user_id")
        return Mapped(key, rows, kind, why, left_out=tuple(r.left_out), aliases=aliases)
    if src.lenient and kind == "touchpoint" and not has_attribution:
        why = f"{raw_type} without campaign data (none of {', '.join(ATTRIBUTION)}): not recorded"
        why += r.said(*ATTRIBUTION)
        return Mapped(key, rows, kind, why, left_out=tuple(r.left_out), aliases=aliases)
    ts, ms = iso(moment), int(moment.timestamp() * 1000)
    keys, node, origin = limits.keys, limits.node, src.origin
    user_key = keys.user_key(user_id) if user_id is not None else None

    def visitor_key() -> str:
        """The visitor's key; a user-only event gets the user's synthetic visitor, bound to them."""
        if visitor_id is not None:
            return keys.visitor_key(visitor_id)
        assert user_id is not None and user_key is not None
        synthetic = keys.visitor_key("user:" + user_id)
        rows.append(Binding(limits.ids(ms), ts, node, synthetic, user_key, src.name, origin))
        return synthetic

    if kind == "identify":
        assert visitor_id is not None and user_key is not None
        rows.append(
            Binding(limits.ids(ms), ts, node, keys.visitor_key(visitor_id), user_key, src.name, origin)
        )
    if kind == "touchpoint" or (kind == "conversion" and has_attribution):
        source = attrs["source"].casefold() if attrs["source"] else None
        medium = attrs["medium"].casefold() if attrs["medium"] else None
        click_id_kind = attrs["click_id_kind"] if attrs["click_id"] else None
        signals = Signals(source, medium, attrs["campaign"], click_id_kind, attrs["creator_id"])
        rows.append(
            Touchpoint(
                id=limits.ids(ms),
                ts=ts,
                node=node,
                visitor_key=visitor_key(),
                source=source,
                medium=medium,
                campaign=attrs["campaign"],
                term=attrs["term"],
                content=attrs["content"],
                creator_id=attrs["creator_id"],
                sub_id=attrs["sub_id"],
                click_id_kind=click_id_kind,
                click_id=attrs["click_id"],
                channel=limits.channels.classify(signals),
                landing_path=attrs["landing_path"] or "/",
            )
        )
    if kind == "conversion":
        touch = next((row for row in rows if isinstance(row, Touchpoint)), None)
        rows.append(
            Conversion(
                id=limits.ids(ms),
                ts=ts,
                node=node,
                name=conv_name or raw_type or "conversion",
                dedup_key=order_key(order_id, src.order_scope) if order_id else f"event:{src.name}:{key}",
                visitor_key=touch.visitor_key
                if touch
                else (keys.visitor_key(visitor_id) if visitor_id else None),
                user_key=user_key,
                value=value,
                currency=currency.upper() if currency else None,
                order_id=order_id,
                origin=origin,
                rule=src.name,
            )
        )
    return Mapped(
        key,
        rows,
        kind or "",
        unmatched=tuple(
            r.where(name) for name in r.unmatched if name not in NOT_RECORDED.get(kind or "", ())
        ),
        defaulted=tuple(r.where(name) for name in r.defaulted),
        left_out=tuple(r.left_out),
        aliases=aliases,
    )
