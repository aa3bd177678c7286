"""Authenticating signed deliveries: Standard Webhooks, Stripe's, Paddle's, a body's own HMAC,
the legacy hex signature, HTTP Basic (Segment's write key, or a sender's login).

Pure functions over header values, body bytes and secrets (no I/O). Owns the
signature formats: ``webhook-signature: v1,<base64 HMAC-SHA256 of
"id.timestamp.body">`` (a space-separated list; any one valid signature from any
active secret passes), Stripe's ``Stripe-Signature: t=<seconds>,v1=<hex HMAC-SHA256 of
"t.body">`` (any ``v1`` may pass) and Paddle's ``Paddle-Signature: ts=<seconds>;h1=<hex
HMAC-SHA256 of "ts:body">`` (any ``h1``), a sender's own header holding ``[prefix]<hex or
base64 HMAC-SHA256 of the body>`` (Shopify's ``X-Shopify-Hmac-Sha256``; ``signature = "hmac"``:
GitHub, WooCommerce…), ``x-webhook-signature: <hex HMAC-SHA256 of the body>`` for senders
that enable it, Segment's ``Authorization: Basic`` with the write key as user name, and a
sender's own login in it (``signature = "basic"``: a user name and password). Every
comparison is constant-time. Failures say only ``signature`` or ``timestamp``: nothing that
helps a forger.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.keys import derive


class AuthFailed(Exception):
    """A delivery that does not authenticate; ``what`` is ``signature`` or ``timestamp``."""

    def __init__(self, what: str, message: str) -> None:
        self.what = what
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Authenticated:
    sender: str
    delivery: str
    """The delivery's identity for deduplication: the ``webhook-id``, or a hash of the body."""
    by_body: bool = False
    """``delivery`` is the body's plain digest (``body_digest``): the sender sent no delivery ID.
    The endpoint keys it under the master secret before anything is stored (``keyed_body_digest``)."""


def standard_signature(secret: bytes, msg_id: str, timestamp: str, body: bytes) -> str:
    """The ``v1,<base64>`` signature of one delivery (what a sender puts in ``webhook-signature``)."""
    mac = hmac.new(secret, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def legacy_signature(secret: bytes, body: bytes) -> str:
    """Hex HMAC-SHA256 of the body: the legacy ``x-webhook-signature``."""
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def body_digest(body: bytes) -> str:
    """The body's plain digest: how versions before 2026-12-07 keyed a delivery with no ID, and
    stored it. Looked up, never stored again: it is no key, so a short body's (a user ID and a
    type) is found by hashing guesses."""
    return "sha256:" + hashlib.sha256(body).hexdigest()


def keyed_body_digest(key: bytes, body: bytes) -> str:
    """The key of a delivery with no ID, as stored: an HMAC-SHA256 of the body under ``key``
    (``delivery_body_key``), which no one without the master secret can compute for a guess."""
    return "hmac:" + hmac.new(key, body, hashlib.sha256).hexdigest()


RECEIPT_KEY_LABEL = "gateway/receipt-key/v1"
"""The HKDF label of the key receipts are keyed under (``keyed_receipt``)."""


class ReceiptKeys:
    """How a receipt's key is stored (since 2026-12-07): ``k:`` and an HMAC-SHA256 of the
    sender's delivery or event key under a key derived from ``identity.secret``. A sender's own
    IDs (a Stripe ``evt_…``, a ``webhook-id``) lead to the person they are of, in the sender's
    records: kept as sent, they outlived the person's erasure in every receipt. Keyed, they
    still find a retry, and no one without the secret finds them. ``plain``: the key as versions
    before wrote it, looked up, never written again."""

    def __init__(self, master: bytes) -> None:
        self._key = derive(master, RECEIPT_KEY_LABEL)

    def __call__(self, plain: str) -> str:
        return "k:" + hmac.new(self._key, plain.encode(errors="surrogatepass"), hashlib.sha256).hexdigest()


def utf8_text(text: str) -> bool:
    """``text`` holds no bytes the HTTP parser kept as surrogates (a header that is not UTF-8)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def verify_standard(
    senders: Mapping[str, Sequence[bytes]],
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    tolerance: int,
    sent_as: str = "webhook-",
) -> Authenticated:
    """The sender whose secret signed this delivery; AuthFailed otherwise. ``sent_as``: the
    headers' prefix as sent (``svix-``), which a refusal names.

    The timestamp is checked first (it costs nothing and says nothing a forger does not know).
    """
    msg_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    given = headers.get("webhook-signature", "")
    if not (msg_id and timestamp and given):
        raise AuthFailed("signature", _missing(headers, sent_as))
    if not utf8_text(msg_id):  # bytes that are not UTF-8 (the HTTP parser kept them as surrogates)
        raise AuthFailed("signature", "signature: webhook-id is not UTF-8 text")
    _check_timestamp(timestamp, now, tolerance, f"{sent_as}timestamp")
    offered = [
        sig.rstrip(",").encode()  # lines joined as RFC 9110 joins them ("v1,a, v1,b")
        for version, _, sig in (s.partition(",") for s in given.split())
        if version == "v1" and sig.isascii()  # base64: anything else cannot match
    ]
    for sender, secrets in senders.items():
        for secret in secrets:
            expected = standard_signature(secret, msg_id, timestamp, body)[3:].encode()
            if any(hmac.compare_digest(expected, sig) for sig in offered):
                return Authenticated(sender, msg_id)
    raise AuthFailed("signature", _standard_refusal(f"{sent_as}signature", offered))


def _missing(headers: Mapping[str, str], sent_as: str) -> str:
    """Which of the three headers a delivery lacks (or sent empty), named as the sender writes
    them: "missing webhook-id, webhook-timestamp or webhook-signature" left a sender whose code
    forgot one (or a proxy that dropped one) to guess which, and named a Svix-branded sender's
    ``svix-`` headers as ``webhook-`` ones."""
    names = ("id", "timestamp", "signature")
    if not any(headers.get(f"webhook-{name}") for name in names) and sent_as == "webhook-":
        return "signature: missing webhook-id, webhook-timestamp or webhook-signature"  # none signed
    lacking = [name for name in names if f"webhook-{name}" not in headers]
    empty = [name for name in names if f"webhook-{name}" in headers and not headers[f"webhook-{name}"]]
    said = [
        f"{_listed([sent_as + n for n in group])} {state if len(group) == 1 else plural}"
        for group, state, plural in ((lacking, "is missing", "are missing"), (empty, "is empty", "are empty"))
        if group
    ]
    three = f"{sent_as}id, {sent_as}timestamp and {sent_as}signature"
    return f"signature: {'; '.join(said)} (a Standard Webhooks delivery carries {three})"


def _listed(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _standard_refusal(header: str, offered: Sequence[bytes]) -> str:
    """Why no signature verified, when its shape tells (the specification's, public: it helps
    no forger): a hand-signed delivery without ``v1,``, or its HMAC in hex as ``openssl dgst``
    prints it, was "no valid signature", and the engineer went checking the secret and body."""
    if not offered:
        return (
            f'signature: {header} holds no "v1,<base64>" signature (Standard Webhooks: v1, then the'
            ' base64 HMAC-SHA256 of "id.timestamp.body")'
        )
    if not any(_is_base64_mac(sig) for sig in offered):
        hexed = any(_is_hex_mac(sig) for sig in offered)
        hint = ": 64 hex digits? Standard Webhooks writes it in base64" if hexed else ""
        return f"signature: {header}'s v1 value is not the base64 of an HMAC-SHA256 (32 bytes){hint}"
    return "signature: no valid signature"


_HMAC_LENGTH = hashlib.sha256().digest_size
"""Bytes of an HMAC-SHA256: a length, public (the shape check of ``_standard_refusal``)."""


def _is_base64_mac(sig: bytes) -> bool:
    try:
        return len(base64.b64decode(sig, validate=True)) == _HMAC_LENGTH
    except binascii.Error:
        return False


def _check_timestamp(timestamp: str, now: float, tolerance: int, name: str) -> None:
    """AuthFailed unless ``timestamp`` is Unix seconds within ``tolerance`` of ``now``, counted
    in whole seconds as the sender counts them (``now`` floored, as the Standard Webhooks
    libraries do): one ``tolerance`` seconds old passes for the whole of that second. The
    reason names where the time was (``name``: ``webhook-timestamp``, ``Stripe-Signature t``)
    and the key that bounds it; it tells a forger nothing a clock does not."""
    if not (timestamp.isascii() and timestamp.isdigit()):
        raise AuthFailed("timestamp", f"timestamp: {name} is not Unix seconds (digits only)")
    if len(digits := timestamp.lstrip("0")) > 20:  # Unix seconds, all the same (it said "digits only")
        raise AuthFailed(
            "timestamp",
            f"timestamp: outside the accepted window ({name} has {len(digits):,} digits, far ahead of"
            f" this server's clock, more than webhooks.tolerance_seconds ({tolerance}))",
        )
    # The digits without their leading zeros: Python refuses to read more than 4,300 digits
    # (ValueError, a 500), and zeros in front were as many as a header holds.
    seconds = int(digits or "0")
    off = seconds - math.floor(now)
    if abs(off) > tolerance:
        side = "ahead of" if off > 0 else "behind"
        hint = (
            "; given in milliseconds? it is read as seconds"
            if abs(seconds // 1000 - math.floor(now)) <= tolerance
            else ""
        )
        raise AuthFailed(
            "timestamp",
            f"timestamp: outside the accepted window ({name} is {abs(off):,} s {side} this server's"
            f" clock, more than webhooks.tolerance_seconds ({tolerance}){hint})",
        )


@dataclass(frozen=True, slots=True)
class StampedScheme:
    """A platform's header signing ``"<seconds><joiner><body>"`` (hex HMAC-SHA256), written
    as ``<time_field>=<seconds><separator><hash_field>=<hex>…``, one hash per active secret."""

    header: str
    separator: str
    time_field: str
    hash_field: str
    joiner: bytes


STRIPE = StampedScheme("Stripe-Signature", ",", "t", "v1", b".")
"""``Stripe-Signature: t=<seconds>,v1=<hex HMAC of "t.body">`` (a ``v0`` is ignored)."""
PADDLE = StampedScheme("Paddle-Signature", ";", "ts", "h1", b":")
"""``Paddle-Signature: ts=<seconds>;h1=<hex HMAC of "ts:body">`` (Paddle Billing)."""
STAMPED = {"stripe": STRIPE, "paddle": PADDLE}
"""The ``sources.signature`` values of these schemes."""


def stamped_signature(scheme: StampedScheme, secret: bytes, timestamp: str, body: bytes) -> str:
    """The header value the platform would send for ``body`` at ``timestamp``."""
    mac = legacy_signature(secret, timestamp.encode() + scheme.joiner + body)
    return f"{scheme.time_field}={timestamp}{scheme.separator}{scheme.hash_field}={mac}"


def verify_stamped(
    scheme: StampedScheme,
    senders: Mapping[str, Sequence[bytes]],
    given: str,
    body: bytes,
    now: float,
    tolerance: int,
) -> Authenticated:
    """The sender whose secret made one of ``given``'s signatures (any may pass: Stripe signs
    with each active secret while one is rolled). Its delivery is the body's digest:
    Stripe and Paddle send a retried event's very body again (Paddle's ``notification_id``
    included), under a new timestamp."""
    parts = _stamped_parts(scheme, given)
    if isinstance(parts, str):
        raise AuthFailed("signature", f"signature: {scheme.header} {parts}")
    timestamp, offered = parts
    _check_timestamp(timestamp, now, tolerance, f"{scheme.header} {scheme.time_field}")
    for sender, secrets in senders.items():
        if _stamped_match(scheme, secrets, timestamp, offered, body):
            return Authenticated(sender, body_digest(body), by_body=True)
    if not any(_is_hex_mac(sig) for sig in offered):
        # One made by hand in base64, as Standard Webhooks and Shopify write theirs: the shape
        # is the platform's, public, and said ("no valid signature" sent them to the secret).
        based = any(len(sig) == 44 and sig.endswith(b"=") for sig in offered)
        hint = ": base64? it is written in hex" if based else ""
        raise AuthFailed(
            "signature",
            f"signature: {scheme.header}'s {scheme.hash_field} is not 64 hex digits (the HMAC-SHA256"
            f" in hex){hint}",
        )
    raise AuthFailed("signature", "signature: no valid signature")


def _is_hex_mac(sig: bytes) -> bool:
    return len(sig) == 64 and all(c in b"0123456789abcdefABCDEF" for c in sig)


def _stamped_parts(scheme: StampedScheme, given: str) -> tuple[str, list[bytes]] | str:
    """The timestamp and the signatures offered in ``given``; else what is wrong with it (it
    must hold exactly one timestamp and at least one signature)."""
    pairs = [part.strip().partition("=") for part in given.split(scheme.separator)]
    stamps = {value for key, _, value in pairs if key == scheme.time_field}
    offered = [
        value.lower().encode() for key, _, value in pairs if key == scheme.hash_field and value.isascii()
    ]
    time, sign = scheme.time_field, scheme.hash_field
    if len(stamps) > 1:  # which one was signed? neither is believed
        return f"holds {len(stamps)} different {time}=… values; a sender signs one"
    if not stamps:
        return f"holds no {time}=…" + ("" if offered else f" and no {sign}=…")
    if not offered:
        return f"holds no {sign}=…"
    return stamps.pop(), offered


def _stamped_match(
    scheme: StampedScheme, secrets: Sequence[bytes], timestamp: str, offered: list[bytes], body: bytes
) -> bool:
    """Whether one of ``secrets`` made one of the ``offered`` signatures of ``timestamp`` and ``body``."""
    if not timestamp.isascii():  # bytes the HTTP parser kept as surrogates: no platform signed them
        return False
    signed = timestamp.encode() + scheme.joiner + body
    for secret in secrets:
        expected = legacy_signature(secret, signed).encode()
        if any(hmac.compare_digest(expected, sig) for sig in offered):
            return True
    return False


MAX_DELIVERY_ID = 128
"""Longest delivery ID taken from an unsigned header (a body-signing sender's
``delivery_header``, Shopify's ``X-Shopify-Event-Id``): theirs are UUIDs or numbers, and the
key of an event without its own (the delivery's and its index) must stay within
``mapping.MAX_KEY``."""


@dataclass(frozen=True, slots=True)
class BodyHmac:
    """How one sender that signs its body alone writes its signature (``HmacOptions``:
    ``signature = "hmac"``, or Shopify's)."""

    encoding: str
    prefix: str
    delivery_header: str
    stamped: StampedScheme | None = None
    """Stripe's layout in this sender's header (``hmac.stamped``): a signed time, not the body alone."""


def body_hmac(secret: bytes, body: bytes, encoding: str) -> str:
    """The HMAC-SHA256 of ``body`` as such a sender writes it: hex (lower case) or base64."""
    mac = hmac.new(secret, body, hashlib.sha256)
    return mac.hexdigest() if encoding == "hex" else base64.b64encode(mac.digest()).decode()


def verify_body_hmac(
    senders: Mapping[str, tuple[BodyHmac, Sequence[bytes]]],
    given: str,
    body: bytes,
    headers: Mapping[str, str],
    now: float,
    tolerance: int,
) -> Authenticated:
    """The sender (of those whose signature comes in this header, ``given``) whose secret made
    it. Its delivery is the value of its ``delivery_header`` among ``headers``, when sent, else
    the body's digest. Unless it is ``stamped`` (Stripe's layout: its time signed, and checked
    against ``now``), the signature covers no time: as with the legacy signature, only the
    event's own timestamp (``webhooks.max_event_age_days``) bounds a replay's age."""
    given = given.strip()
    for sender, (spec, secrets) in senders.items():
        if spec.stamped is not None:
            parts = _stamped_parts(spec.stamped, given)
            if isinstance(parts, str) or not _stamped_match(spec.stamped, secrets, *parts, body):
                continue
            _check_timestamp(parts[0], now, tolerance, f"{spec.stamped.header} {spec.stamped.time_field}")
            return _delivered(sender, spec, headers, body)
        if given[: len(spec.prefix)].lower() != spec.prefix.lower():  # ``SHA256=`` is ``sha256=``
            continue
        offered = given[len(spec.prefix) :].strip()
        if spec.encoding == "hex":
            offered = offered.lower()
        if not offered.isascii():  # hex or base64: anything else cannot match
            continue
        if any(hmac.compare_digest(body_hmac(secret, body, spec.encoding), offered) for secret in secrets):
            return _delivered(sender, spec, headers, body)
    raise AuthFailed("signature", "signature: no valid signature")


def _without_prefix(text: str, prefix: str) -> str:
    """``text`` without ``prefix`` (compared in any case) when it starts with it."""
    return text[len(prefix) :] if text[: len(prefix)].lower() == prefix.lower() else text


def _delivered(sender: str, spec: BodyHmac, headers: Mapping[str, str], body: bytes) -> Authenticated:
    """``sender``'s delivery: keyed by its ``delivery_header``'s value when sent, else the body's digest."""
    delivery = headers.get(spec.delivery_header, "").strip() if spec.delivery_header else ""
    if not (utf8_text(delivery) and delivery.isprintable() and len(delivery) <= MAX_DELIVERY_ID):
        raise AuthFailed("signature", f"signature: {spec.delivery_header} is not a delivery ID")
    if delivery:
        return Authenticated(sender, f"{spec.delivery_header.lower()}:{delivery}")
    return Authenticated(sender, body_digest(body), by_body=True)


def verify_legacy(senders: Mapping[str, Sequence[bytes]], given: str, body: bytes) -> Authenticated:
    """The legacy sender whose secret made the hex signature ``given`` (a ``sha256=`` prefix
    allowed, in any case: senders write the algorithm's name as ``SHA256=``; hex in any case)."""
    offered = _without_prefix(given.strip(), "sha256=").lower()
    if not offered.isascii():  # hex: anything else cannot match
        raise AuthFailed("signature", "signature: no valid signature")
    for sender, secrets in senders.items():
        for secret in secrets:
            if hmac.compare_digest(legacy_signature(secret, body), offered):
                return Authenticated(sender, body_digest(body), by_body=True)
    raise AuthFailed("signature", "signature: no valid signature")


def _basic_decoded(header: str) -> bytes | None:
    """What an ``Authorization: Basic`` header holds, decoded (None for another scheme)."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None


def basic_user(header: str) -> bytes | None:
    """The user name of an ``Authorization: Basic`` header (Segment puts the write key there)."""
    decoded = _basic_decoded(header)
    return None if decoded is None else decoded.partition(b":")[0]


def basic_credentials(header: str) -> tuple[bytes, bytes] | None:
    """The user name and password of an ``Authorization: Basic`` header (the password is all
    after the first colon: RFC 7617 keeps colons out of user names only)."""
    user, colon, password = (_basic_decoded(header) or b"").partition(b":")
    return (user, password) if colon else None


def verify_basic_login(senders: Mapping[str, Sequence[bytes]], header: str, body: bytes) -> Authenticated:
    """The sender (``signature = "basic"``: Chargebee, and any platform that sends a user name and
    password) one of whose secrets is this login: ``user:password``, or a password alone (any
    user name). Its delivery is the body's digest: nothing else names it, and a retry is the same
    body."""
    login = basic_credentials(header)
    if login is not None:
        user, password = login
        for sender, secrets in senders.items():
            for secret in secrets:
                want_user, colon, want_password = secret.partition(b":")
                if not colon:
                    want_user, want_password = user, secret
                # Both compared, always (no early exit on the user name).
                same_user = hmac.compare_digest(want_user, user)
                if hmac.compare_digest(want_password, password) and same_user:
                    return Authenticated(sender, body_digest(body), by_body=True)
    raise AuthFailed("signature", "signature: missing or wrong user name and password (HTTP Basic)")


def verify_basic(senders: Mapping[str, Sequence[bytes]], header: str, body: bytes) -> Authenticated:
    """The Segment-format sender whose write key is the Basic user name."""
    user = basic_user(header)
    if user:
        for sender, secrets in senders.items():
            for secret in secrets:
                if hmac.compare_digest(secret, user):
                    return Authenticated(sender, body_digest(body), by_body=True)
    raise AuthFailed("signature", "signature: missing or wrong write key (HTTP Basic user name)")
