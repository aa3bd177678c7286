"""Signed server-side events on the public listener: ``POST /_gw/events`` and ``/_gw/segment``.

Owns the HTTP side of ingestion: reading the body (bounded), authenticating it
(``gateway.signing``), splitting a batch, mapping each event (``gateway.sources``),
writing everything in one store submission — the delivery's receipt first, then
one group per event, each starting with the event's receipt, so the store's
UNIQUE constraints decide what is a duplicate — and answering only once that
commit is confirmed. Events that fail validation are written to ``bad_events``
with their reason, the body sealed (``gateway.badbody``); events that mean nothing to
store (an ``ignore_types`` type, a Segment page without campaign data) are answered
``ignored``. Counts every event in ``gateway_inbound_events_total``; an accepted event
recorded without a field whose configured pointer found nothing is answered with it
(``unmatched``) and counted in ``gateway_inbound_unmatched_fields_total``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from aiohttp import web

from gateway import pages
from gateway.badbody import body_key, seal
from gateway.codings import DECODED, MAX_CODINGS, content_codings, decoded_layers, larger_than, not_gzip
from gateway.config import Settings
from gateway.events import BadEvent, Event, PastReceipt, Receipt, iso
from gateway.ids import Uuid7
from gateway.keys import Keys, derive
from gateway.mapping import Invalid, Limits, map_event
from gateway.metrics import Metrics
from gateway.options import SHOPIFY_HMAC
from gateway.protocol_errors import BrokenFraming, broken_framing
from gateway.signing import (
    STAMPED,
    Authenticated,
    AuthFailed,
    BodyHmac,
    ReceiptKeys,
    StampedScheme,
    keyed_body_digest,
    utf8_text,
    verify_basic,
    verify_basic_login,
    verify_body_hmac,
    verify_legacy,
    verify_stamped,
    verify_standard,
)
from gateway.sources import SourceMap, compile_source, decode_delivery, encode_event, split_batch
from storage.erased import ErasedWatch
from storage.erasure import names_erased
from storage.local import CommitTimeout, LocalStore

log = logging.getLogger("gateway.inbound")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
UNKNOWN = "unknown"
"""The sender label of a delivery that did not authenticate."""
ERASED_SINCE = "the user was erased after this event's time"
"""Why an event about an erased user, dated before the erasure, is ``ignored`` (its first time;
a retry of it is a ``duplicate``)."""
OUTCOMES = ("accepted", "ignored", "duplicate", "bad")
"""An event's result in the answer (and its ``gateway_inbound_events_total`` outcome; a
refused request counts as ``rejected``). ``ignored``: acknowledged, nothing recorded."""
_encode = msgspec.json.Encoder()


def _first_time(logged: set[tuple[str, str]], sender: str, field: str) -> bool:
    """Whether ``sender``'s ``field`` is not in ``logged`` yet (it is from now on): what is said
    once per sender and field."""
    if (sender, field) in logged:
        return False
    logged.add((sender, field))
    return True


class TooLarge(Exception):
    pass


def _unconfigured(header: str, signature: str) -> AuthFailed:
    """The refusal of a platform's own signature that no source here verifies: most likely the
    platform's source without its ``signature``, left at Standard Webhooks."""
    return AuthFailed(
        "signature",
        f'signature: {header} is not verified here: no [[sources]] entry has signature = "{signature}"',
    )


def _may_be_json(content_type: str) -> bool:
    """A label a JSON sender may put on its body (the body is read as JSON whatever it says):
    JSON's own, ``text/plain``, or none (aiohttp's ``application/octet-stream``)."""
    return "json" in content_type or content_type in ("", "text/plain", "application/octet-stream")


def truncate(text: str, limit: int) -> tuple[str, bool]:
    """``text`` cut to at most ``limit`` UTF-8 bytes (on a character boundary), and whether it was."""
    raw = text.encode()
    if len(raw) <= limit:
        return text, False
    return raw[:limit].decode(errors="ignore"), True


def answer(status: int, payload: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> web.Response:
    return pages.QuietResponse(
        status=status,
        body=_encode.encode(payload),
        content_type="application/json",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def error(
    status: int,
    message: str,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> web.Response:
    return answer(status, {"ok": False, "status": status, "error": message, **(extra or {})}, headers)


def refused(reason: str) -> web.Response:
    """The 400 of a delivery whose one event (or whole body) is bad, in the shape the README's
    answers table gives every such refusal: ``result`` and ``errors`` beside ``error``. A body
    that does not decode from its ``Content-Encoding`` and a type header that cannot be believed
    are answered so too (until 2026-12-07 with ``error`` alone); a chunked body whose framing
    breaks is not: it is a transport error, as the same break in the request's head is, answered
    before any endpoint reads it (``gateway.protocol_errors``)."""
    return error(400, reason, extra={"result": "bad", "errors": [reason]})


def no_events() -> web.Response:
    """The 400 of an empty batch, in a batch's shape (README, Answers): its counts and
    ``results``, all none (until 2026-12-07 ``error`` alone)."""
    return error(400, "batch: no events", extra={**dict.fromkeys(OUTCOMES, 0), "results": []})


@dataclass
class _Delivery:
    """One authenticated delivery on its way to the store: the groups to write and what they mean."""

    src: SourceMap
    auth: Authenticated
    empty_header: bool = False
    """Its type header (``SourceMap.type_header``) was sent empty: a missing type says so."""
    past: str = ""
    """The key versions before 2026-12-07 gave it when it has no delivery ID (the body's plain
    digest, ``signing.body_digest``), which ``auth.delivery`` now keys under the secret; ""
    otherwise. Its receipts, and those of its events keyed by it, are looked up under it too."""
    groups: list[list[Event]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    """Per event: index, result, key or errors; ``group`` points into ``groups`` (or None)."""
    left_out: dict[int, tuple[tuple[str, str, str], ...]] = field(default_factory=dict)
    """Per event index: its values not taken (``Mapped.left_out``), counted once it is written."""


class Inbound:
    """The ``/_gw/`` endpoints for signed events; ``routes()`` maps paths below the prefix to handlers."""

    def __init__(
        self,
        settings: Settings,
        store: LocalStore,
        metrics: Metrics,
        keys: Keys,
        erased: ErasedWatch | None = None,
    ) -> None:
        opts = settings.options.webhooks
        self.store = store
        self.metrics = metrics
        self.node = settings.node
        self.opts = opts
        self.body_timeout = settings.options.proxy.body_timeout
        self.sources = {s.name: compile_source(s) for s in settings.options.sources}
        secrets = settings.source_secrets
        standard = [s for s in settings.options.sources if s.format == "standard"]
        self.has_standard = bool(standard)
        """A sender ``/_gw/events`` can authenticate (any signature of the standard format)."""
        self.standard = {s.name: secrets[s.name] for s in standard if s.signature == "standard"}
        # Platforms that sign a timestamp with the body in a header of their own.
        self.stamped: dict[str, tuple[StampedScheme, dict[str, Sequence[bytes]]]] = {
            scheme.header.lower(): (scheme, {}) for scheme in STAMPED.values()
        }
        for s in standard:
            if (stamped := STAMPED.get(s.signature)) is not None:
                self.stamped[stamped.header.lower()][1][s.name] = secrets[s.name]
        # Senders that sign the body alone (Shopify, signature = "hmac"), by the header their
        # signature comes in.
        self.body_hmac: dict[str, dict[str, tuple[BodyHmac, Sequence[bytes]]]] = {}
        self.header_names: dict[str, str] = {}
        """Those headers, as the sender's config writes them (``X-Shopify-Hmac-Sha256``), by their
        lower-cased names: a refusal names the header as the sender sends it."""
        self.type_headers: dict[str, str] = {}
        """Senders whose event type is a header when the body has none."""
        for s in standard:
            if (signed := s.signed_body()) is not None:
                spec = BodyHmac(signed.encoding, signed.prefix, signed.delivery_header, s.stamped_scheme())
                self.body_hmac.setdefault(signed.header.lower(), {})[s.name] = (spec, secrets[s.name])
                self.header_names.setdefault(signed.header.lower(), signed.header)
                if signed.type_header:
                    self.type_headers[s.name] = signed.type_header
        self.basic = {s.name: secrets[s.name] for s in standard if s.signature == "basic"}
        """Senders that log in with HTTP Basic rather than sign (Chargebee)."""
        self.legacy = {s.name: secrets[s.name] for s in settings.options.sources if s.legacy_hex}
        self.segment_keys = {
            s.name: secrets[s.name] for s in settings.options.sources if s.format == "segment"
        }
        self.ids = Uuid7()
        self._unmatched_logged: set[tuple[str, str]] = set()
        self._defaulted_logged: set[tuple[str, str]] = set()
        self._left_out_logged: set[tuple[str, str]] = set()
        self.erased = erased if erased is not None else ErasedWatch(settings.store_path)
        """Erased users: an event about one of them dated before the erasure is not recorded (the
        gateway's watch, kept across reloads, when given)."""
        self.body_key = body_key(settings.secret)
        # A bad event in flight at an erasure of someone it names is left out at its commit.
        store.names_erased = functools.partial(names_erased, self.body_key, keys)
        self.delivery_body_key = derive(settings.secret, "gateway/delivery-body/v1")
        """Keys the digest of a delivery that has no ID (``signing.keyed_body_digest``)."""
        self.keyed = ReceiptKeys(settings.secret)
        """A delivery's or event's key as its receipt stores it (``signing.ReceiptKeys``)."""
        self.limits = Limits(
            keys=keys,
            node=settings.node,
            ids=self.ids,
            max_age=timedelta(days=opts.max_event_age_days),
            tolerance=timedelta(seconds=opts.tolerance_seconds),
            max_len=settings.options.campaign.max_value_length,
            channels=settings.channels,
        )

    def routes(self) -> dict[str, Handler]:
        segment = self.segment
        return {
            "events": self.events,
            "segment": segment,
            "segment/v1/batch": segment,
            # Segment's HTTP API has one path per call type; a library or client posting to one
            # the gateway did not know got a 404, and retried.
            **{
                f"segment/v1/{call}": functools.partial(segment, implied=call)
                for call in ("page", "identify", "track", "screen", "group", "alias")
            },
        }

    async def events(self, request: web.Request) -> web.StreamResponse:
        if not self.has_standard:
            return self._none_configured("standard", '(format = "standard", the default) and its secrets')
        return await self._receive(request, self._authenticate_standard)

    async def segment(self, request: web.Request, implied: str | None = None) -> web.StreamResponse:
        if not self.segment_keys:
            return self._none_configured("Segment", 'with format = "segment" and its write key in secrets')
        return await self._receive(request, self._authenticate_segment, implied)

    def _none_configured(self, kind: str, entry: str) -> web.Response:
        """A 404 for an endpoint no source of its format is configured for (counted as rejected):
        until 2026-12-05 it said "no valid signature" or "wrong write key", which sent the
        operator looking at a secret."""
        self._count(UNKNOWN, "rejected")
        return error(404, f"no {kind} source is configured here: add a [[sources]] entry {entry}")

    def _verify_stamped(self, request: web.Request, header: str, body: bytes, now: float) -> Authenticated:
        scheme, platform_senders = self.stamped[header]
        if not platform_senders:  # "no valid signature" sent the operator checking the secret
            raise _unconfigured(scheme.header, next(k for k, v in STAMPED.items() if v is scheme))
        given = request.headers.getall(header)
        # Which one did the platform send? Neither is believed; one value repeated (a proxy
        # that copied the line) is one signature, as for the other schemes (until 2026-12-07
        # it was refused).
        if len(set(given)) > 1:
            raise AuthFailed("signature", f"signature: {scheme.header} given more than once")
        return verify_stamped(scheme, platform_senders, given[0], body, now, self.opts.tolerance_seconds)

    def _login(self, request: web.Request, body: bytes) -> Authenticated:
        """The "basic" sender whose login the delivery's one ``Authorization`` header is."""
        given = request.headers.getall("authorization")
        if len(given) > 1:  # which login is it? neither is believed
            raise AuthFailed("signature", "signature: Authorization given more than once")
        return verify_basic_login(self.basic, given[0], body)

    def _authenticate_standard(self, request: web.Request, body: bytes) -> Authenticated:
        headers = request.headers
        # Stripe's and Paddle's headers (Stripe's first) when no other scheme signed the delivery:
        # a relay that re-signs a platform's notifications in a scheme of its own (Hookdeck, Svix,
        # the legacy hex: how a Paddle account was wired before signature = "paddle") passes the
        # platform's header on; so may one that logs in (a "basic" sender's Authorization).
        others = ("webhook-signature", "svix-signature", "x-webhook-signature", *self.body_hmac)
        relayed = any(header in headers for header in others)
        try:
            return self._authenticate_signed(request, body, relayed)
        except AuthFailed as first:
            # Another scheme's signature that is no sender's (a relay not configured or keyed
            # otherwise, an Authorization a proxy adds where a signature = "hmac" sender signs)
            # beside a platform's own header, passed on intact: the platform's decides, as
            # Stripe's did when it was read first (until 2026-12-04); the first refusal stands.
            platform = next((h for h in self.stamped if h in headers and self.stamped[h][1]), None)
            if not relayed or platform is None:
                raise
            try:
                return self._verify_stamped(request, platform, body, time.time())
            except AuthFailed:
                raise first from None

    def _authenticate_signed(self, request: web.Request, body: bytes, relayed: bool) -> Authenticated:
        """The sender that signed the delivery, read as ``_authenticate_standard`` says."""
        headers = request.headers
        now, tolerance = time.time(), self.opts.tolerance_seconds
        if not relayed:
            passed_on = [h for h in self.stamped if h in headers]
            if self.basic and "authorization" in headers:
                try:
                    return self._login(request, body)
                except AuthFailed:
                    # Not a login of a sender's (a proxy's, the site's own): the platform's
                    # signature decides, as it did before there were "basic" senders.
                    if not any(self.stamped[header][1] for header in passed_on):
                        raise
            if passed_on:
                configured = [header for header in passed_on if self.stamped[header][1]]
                return self._verify_stamped(request, (configured or passed_on)[0], body, now)
        if "webhook-signature" not in headers:
            for header, senders in self.body_hmac.items():
                if header in headers:
                    named = {spec.delivery_header for spec, _ in senders.values() if spec.delivery_header}
                    twice = [h for h in (header, *named) if len(set(headers.getall(h, []))) > 1]
                    # Which one did the sender send? Neither is believed; one value repeated is one
                    # signature (``twice`` reads the values as a set; until 2026-12-07 a repeat was
                    # refused, as the README did not say).
                    if twice:
                        # Named as the sender writes it (until 2026-12-07 the signature header
                        # was named in lower case, its delivery header not).
                        shown = self.header_names.get(twice[0], twice[0])
                        raise AuthFailed("signature", f"signature: {shown} given more than once")
                    return verify_body_hmac(senders, headers[header], body, headers, now, tolerance)
        shopify = SHOPIFY_HMAC.header.lower()
        if shopify in headers and not relayed and "svix-signature" not in headers:
            raise _unconfigured(SHOPIFY_HMAC.header, "shopify")  # (a configured one is read above)
        # Svix-branded senders (Clerk, Resend…) send the same scheme as svix-id, svix-timestamp
        # and svix-signature, which Svix's own libraries accept as the webhook-* headers.
        prefix = "svix-" if "webhook-signature" not in headers and "svix-signature" in headers else "webhook-"
        if prefix == "webhook-" and "webhook-signature" not in headers and "x-webhook-signature" in headers:
            if len(set(headers.getall("x-webhook-signature"))) > 1:
                # Which one did the sender sign? Neither is believed, as under the other schemes
                # whose signature is one value (until 2026-12-07 the first line alone was read:
                # a stale one before the valid one was "no valid signature").
                raise AuthFailed("signature", "signature: x-webhook-signature given more than once")
            return verify_legacy(self.legacy, headers["x-webhook-signature"], body)
        lowered: dict[str, str] = {}
        for name in ("id", "timestamp", "signature"):
            given = headers.getall(prefix + name, [])
            if name == "signature" and given:  # a list: over several lines, each one more signature
                lowered["webhook-signature"] = " ".join(given)
            elif len(set(given)) > 1:  # which one did the sender sign? neither is believed
                raise AuthFailed("signature", f"signature: {prefix}{name} given more than once")
            elif given:
                lowered["webhook-" + name] = given[0]
        return verify_standard(self.standard, lowered, body, now, tolerance, prefix)

    def _authenticate_segment(self, request: web.Request, body: bytes) -> Authenticated:
        return verify_basic(self.segment_keys, request.headers.get("Authorization", ""), body)

    def _count(self, sender: str, outcome: str, n: int = 1) -> None:
        self.metrics.inbound_received.labels(sender).inc(n)
        self.metrics.inbound_events.labels(sender, outcome).inc(n)

    def _left_out(self, sender: str, name: str, reason: str, said: str) -> None:
        """Counts a value of a written event not taken (``Mapped.left_out``), and says so in the
        log the first time for that sender, field and reason."""
        self.metrics.inbound_left_out.labels(sender, name, reason).inc()
        if _first_time(self._left_out_logged, sender, f"{name}:{reason}"):
            log.warning(
                "source %s: %s: left out, the event taken without it (logged once;"
                " gateway_inbound_left_out_total counts each)%s",
                sender,
                said,
                ": the sender's code sends this where it has no value" if reason == "placeholder" else "",
            )

    def _unmatched(self, sender: str, where: str) -> None:
        """Counts an accepted event recorded without a field whose configured pointer found
        nothing (``where``: ``value (/money/amountt)``), and says so in the log the first time
        for that sender and field: an optional field is missed now and then, a typo every time."""
        field = where.split(" ", 1)[0]
        self.metrics.inbound_unmatched.labels(sender, field).inc()
        if _first_time(self._unmatched_logged, sender, field):
            log.warning(
                "source %s: fields.%s found nothing in an accepted event, recorded without it"
                " (logged once; gateway_inbound_unmatched_fields_total counts each): if every"
                " event misses it, check the pointer",
                sender,
                where,
            )

    def _defaulted(self, sender: str, where: str) -> None:
        """Says once per platform sender and field that the field was read from its default
        pointer (``where``: ``name (/name)``): the platform's own key of that name, which may
        mean something else (a Shopify order's ``name`` is its number)."""
        field = where.split(" ", 1)[0]
        if _first_time(self._defaulted_logged, sender, field):
            log.warning(
                "source %s: fields.%s was read from its default pointer, not one in its fields"
                " (logged once): if the platform's key of that name is not our %s, unmap it"
                ' (fields.%s = ""); if it is, map it (fields.%s = "/%s")',
                sender,
                where,
                field,
                field,
                field,
                field,
            )

    async def _read(self, request: web.Request) -> bytes:
        """The delivery's body, within ``webhooks.max_body``. A sender that asked ``Expect:
        100-continue`` is invited only here, once the body is to be read: a delivery refused
        before (a body announced over the limit, another method than POST, an endpoint with no
        source) is answered at once, uninvited (``pages.CONTINUE``)."""
        limit = self.opts.max_body
        if request.content_length is not None and request.content_length > limit:
            raise TooLarge()
        await pages.invite(request)
        chunks, seen = [], 0
        async with asyncio.timeout(self.body_timeout):
            while chunk := await request.content.readany():
                seen += len(chunk)
                if seen > limit:
                    raise TooLarge()
                chunks.append(chunk)
        return b"".join(chunks)

    async def _receive(
        self,
        request: web.Request,
        authenticate: Callable[[web.Request, bytes], Authenticated],
        implied: str | None = None,
    ) -> web.StreamResponse:
        if request.method != "POST":
            return error(405, f"{request.method} is not allowed here; use POST", {"Allow": "POST"})
        try:
            body = await self._read(request)
        except TooLarge:
            self._count(UNKNOWN, "rejected")
            return error(413, f"body: larger than webhooks.max_body ({self.opts.max_body} bytes)")
        except TimeoutError:
            self._count(UNKNOWN, "rejected")
            # The whole body's bound, not a pause's (until 2026-12-07 "body: not received in time").
            return error(
                408, f"body: did not arrive whole within proxy.body_timeout ({self.body_timeout:g} s)"
            )
        except BrokenFraming as err:  # gateway.protocol_errors fails such a body at once
            # The parser refuses the rest of the connection: closed after this answer.
            self._count(UNKNOWN, "rejected")
            # A transport error, not a refused event: ``error`` alone (README, Answers).
            response = error(400, f"{broken_framing(err)}; nothing was stored")
            response.force_close()
            return response
        sent = body
        # Every Content-Encoding line: RFC 9110 makes them one list, in the order the codings
        # were applied (until 2026-12-05 the first line alone was read: gzip twice decoded once).
        codings = content_codings(request.headers.getall("Content-Encoding", []))
        if codings:
            # A sender may compress (analytics libraries' gzip option): the proxy listener does
            # not decode bodies it forwards, so this one is undone here, with the same cap.
            named = ", ".join(codings)
            if unknown := next((c for c in codings if c not in DECODED), None):
                self._count(UNKNOWN, "rejected")
                return error(
                    415, f"Content-Encoding: {unknown[:40]!r} is not one the gateway decodes (gzip, deflate)"
                )
            if len(codings) > MAX_CODINGS:
                self._count(UNKNOWN, "rejected")
                return error(
                    415,
                    f"Content-Encoding: {len(codings)} codings ({named[:80]}), the gateway undoes at most"
                    f" {MAX_CODINGS}",
                )
            decoded = decoded_layers(body, codings, self.opts.max_body)
            if decoded is None and (start := not_gzip(body, codings, self.opts.max_body)) is not None:
                self._count(UNKNOWN, "rejected")
                return refused(
                    f"body: Content-Encoding says gzip, but the body is not gzip data (it starts"
                    f" {start.decode(errors='backslashreplace')!r}): sent uncompressed, or decompressed on"
                    " the way with the header left on?"
                )
            if decoded is None and larger_than(body, codings, self.opts.max_body):
                # Too large, as an uncompressed one is (413), not "does not decode, or …".
                self._count(UNKNOWN, "rejected")
                return error(
                    413,
                    f"body: larger than webhooks.max_body ({self.opts.max_body} bytes) once decoded"
                    f" ({named[:80]}); the limit applies to the body decompressed",
                )
            if decoded is None:
                self._count(UNKNOWN, "rejected")
                return refused(f"body: does not decode as {named[:80]}")
            body = decoded
        try:
            signed = body
            try:
                auth = authenticate(request, body)
            except AuthFailed:
                if sent is body:
                    raise
                auth = authenticate(request, sent)  # signed as it went on the wire
                signed = sent
        except AuthFailed as err:
            self._count(UNKNOWN, "rejected")
            www = {"WWW-Authenticate": "Basic"} if authenticate == self._authenticate_segment else None
            return error(401, str(err), www)
        # No delivery ID: keyed by the body, under the secret (the plain digest is looked up).
        if auth.by_body:
            past = auth.delivery
            auth = Authenticated(auth.sender, keyed_body_digest(self.delivery_body_key, signed))
        else:
            past = ""
        empty_header = False
        if implied is None and auth.sender in self.type_headers:
            # Shopify's body is the resource (an order); what happened is the topic header.
            header = self.type_headers[auth.sender]
            if len(set(request.headers.getall(header, []))) > 1:  # which one? neither is believed
                self._count(auth.sender, "rejected")
                return refused(f"{header}: given more than once, with different values")
            given = request.headers.get(header)
            implied = given.strip() or None if given is not None else None
            empty_header = given is not None and implied is None
            if implied is not None and not utf8_text(implied):
                # Bytes the HTTP parser kept as surrogates: a bad event holding them cannot be
                # kept (encoded), and the header is not signed, so it is refused here.
                self._count(auth.sender, "rejected")
                return refused(f"{header}: not UTF-8 text")
        try:
            src = self.sources[auth.sender]
            return await self._ingest(
                src, auth, body, implied, request.content_type, empty_header, past, request.charset or ""
            )
        except Exception:
            log.exception("ingesting a delivery from %s failed", auth.sender)
            self._count(auth.sender, "rejected")
            return error(500, "internal error; the delivery was not stored, retry it")

    async def _ingest(
        self,
        src: SourceMap,
        auth: Authenticated,
        body: bytes,
        implied: str | None,
        labelled: str = "",
        empty_header: bool = False,
        past: str = "",
        charset: str = "",
    ) -> web.StreamResponse:
        now = datetime.now(UTC)
        ms = int(now.timestamp() * 1000)
        delivery = _Delivery(src, auth, empty_header, past)
        receipt = Receipt(self.ids(ms), iso(now), self.node, src.name, "delivery", self.keyed(auth.delivery))
        as_sent = PastReceipt("", "", self.node, src.name, "delivery", auth.delivery)  # before 2026-12-07
        delivery.groups.append([receipt, as_sent, *self._past(delivery, "delivery", auth.delivery)])
        try:
            doc = decode_delivery(body)
        except ValueError as err:
            reason = str(err)
            if reason.startswith(("body: not valid JSON", "body: not UTF-8 (byte")) and not _may_be_json(
                labelled
            ):
                # A platform posting a form (PayPal's IPN, Twilio) or XML: the parser's byte
                # offset alone did not say the gateway reads JSON only.
                reason += f"; it was sent as {labelled[:80]}: the gateway reads JSON bodies only"
            elif reason.startswith("body: not UTF-8 (byte") and charset.lower() not in ("", "utf-8", "utf8"):
                # A sender that encodes its JSON as Latin-1 and labels it so.
                said = charset.lower()[:40]
                reason += f": its Content-Type says charset={said}; have the sender encode it as UTF-8"
            # Bytes that are not UTF-8 kept as \xfc, not as U+FFFD: no JSON escape reads so, so
            # replay-bad finds the body still bad (a Latin-1 "M\xfcller" was replayed, and
            # recorded, as the user "M\ufffdller"), and the operator sees the byte sent.
            text = body.decode(errors="backslashreplace")
            delivery.groups[0].append(self._bad(src, now, reason, text))
            # Answered as any refused event is (README, Answers): a sender's code that reads
            # result and errors found neither (until 2026-12-07).
            return await self._commit(delivery, 1, lambda _: refused(reason))
        events = split_batch(src, doc)
        batch = len(events) != 1 or events[0] is not doc
        if len(events) > self.opts.max_batch:
            self._count(src.name, "rejected")
            return error(
                413, f"batch: {len(events)} events, at most {self.opts.max_batch} (webhooks.max_batch)"
            )
        if not events:
            self._count(src.name, "rejected")
            return no_events()
        for i, event in enumerate(events):
            if implied and isinstance(event, dict) and "type" not in event:
                event = {**event, "type": implied}
            self._add(delivery, i, event, now)
        return await self._commit(delivery, len(events), functools.partial(self._answer, batch))

    def _add(self, delivery: _Delivery, index: int, event: Any, now: datetime) -> None:
        src, auth = delivery.src, delivery.auth
        ms = int(now.timestamp() * 1000)
        try:
            where = f"{auth.delivery}#{index}"
            mapped = map_event(src, event, now, self.limits, where, delivery.empty_header)
        except Invalid as err:
            bad = self._bad(src, now, "; ".join(err.errors), encode_event(event).decode())
            key = Receipt(self.ids(ms), iso(now), self.node, src.name, "bad", f"{auth.delivery}#{index}")
            delivery.results.append({"index": index, "result": "bad", "errors": err.errors})
            delivery.groups.append([key, *self._past(delivery, "bad", key.key), bad])
            return
        if mapped.left_out:
            delivery.left_out[index] = mapped.left_out
        if not mapped.rows:  # acknowledged, nothing to record (e.g. a plain Segment page view)
            ignored = {"index": index, "result": "ignored", "key": mapped.key, "reason": mapped.ignored}
            delivery.results.append(ignored)
            delivery.groups.append([])
            return
        for where in mapped.defaulted:
            self._defaulted(src.name, where)
        accepted: dict[str, Any] = {"index": index, "result": "accepted", "key": mapped.key}
        if mapped.unmatched:  # recorded without them: a pointer's typo shows at the first event
            accepted["unmatched"] = list(mapped.unmatched)
        if mapped.left_out:  # recorded without them: an ID that is no value, an email address
            accepted["left_out"] = [said for _, _, said in mapped.left_out]
        delivery.results.append(accepted)
        group = mapped.group(functools.partial(self.ids, ms), iso(now), self.node, src.name, self.keyed)
        group[1:1] = self._past(delivery, "event", mapped.key)  # after its receipt
        delivery.groups.append(group)

    def _past(self, delivery: _Delivery, kind: str, key: str) -> list[Event]:
        """The receipt an older version stored for ``key`` where it is the delivery's key or
        starts with it (``<delivery>#<index>``, an event with no key of its own) and the delivery
        has no ID: under the body's plain digest, looked up so that a retry across the upgrade is
        still a duplicate (``PastReceipt``). None otherwise."""
        given = delivery.auth.delivery
        if not delivery.past or not (key == given or key.startswith(given + "#")):
            return []
        old = delivery.past + key[len(given) :]
        return [PastReceipt("", "", self.node, delivery.src.name, kind, old)]

    def _bad(self, src: SourceMap, now: datetime, reason: str, text: str) -> BadEvent:
        kept, cut = truncate(text, self.opts.bad_body_limit)
        ms = int(now.timestamp() * 1000)
        sealed = seal(self.body_key, kept)
        # The reason quotes the values it refuses (`type 'ada@example.com' is not mapped`): a
        # raw user ID or address as surely as the body, so it is sealed alike.
        why = seal(self.body_key, reason[:2000])
        return BadEvent(self.ids(ms), iso(now), self.node, src.name, why, sealed, cut)

    async def _commit(
        self, delivery: _Delivery, n: int, respond: Callable[[_Delivery], web.Response]
    ) -> web.Response:
        sender = delivery.src.name
        try:
            await self._leave_out_late(delivery)
            written = await self.store.submit_groups(delivery.groups)
        except CommitTimeout as err:
            # Queued, not lost: the writer is slow or waits on another connection's lock, and
            # commits it later (until 2026-12-05 this was logged as "not stored"). The sender's
            # retry then finds it written: a duplicate.
            log.warning(
                "a delivery from %s was not committed in time (%s, storage.max_wait_ms); answered"
                " 503: it stays queued and is written once the store allows, so the sender's retry"
                " is answered as a duplicate",
                sender,
                err,
            )
            self._count(sender, "rejected", n)
            return error(
                503,
                "not stored yet (the store is slow); retry the delivery: once it is written, a retry is"
                " answered as a duplicate",
                {"Retry-After": "5"},
            )
        except Exception as err:
            log.warning("a delivery from %s was not stored (%s); answered 503", sender, err)
            self._count(sender, "rejected", n)
            return error(503, "not stored; retry the delivery", {"Retry-After": "5"})
        # A delivery seen before is a duplicate unless it brought an event not seen before (a
        # sender that reused a delivery ID for new content): that one was stored, and is
        # answered as such, not as a duplicate.
        pairs = zip(written[1:], delivery.groups[1:], strict=True)
        if not written[0] and not any(new and group for new, group in pairs):
            self._count(sender, "duplicate", n)
            return answer(200, {"ok": True, "result": "duplicate"})
        for result, new in zip(delivery.results, written[1:], strict=True):
            if not new and (result["result"] == "accepted" or result.get("reason") == ERASED_SINCE):
                result["result"] = "duplicate"  # a late event's retry too: its receipt was kept
                result.pop("reason", None)
                # Nothing was recorded now, so nothing was recorded without a field (nor counted).
                result.pop("unmatched", None)
                result.pop("left_out", None)
        if not delivery.results:  # the whole body was bad
            self._count(sender, "bad")
        for result in delivery.results:
            self._count(sender, result["result"])
            if result["result"] == "accepted":
                rows = delivery.groups[result["index"] + 1]
                self.metrics.touchpoints.inc(sum(1 for r in rows if r.table == "touchpoints"))
                for where in result.get("unmatched", ()):
                    self._unmatched(sender, where)
            if result["result"] == "accepted" or (
                result["result"] == "ignored" and result.get("reason") != ERASED_SINCE
            ):
                for name, reason, said in delivery.left_out.get(result["index"], ()):
                    self._left_out(sender, name, reason, said)
        return respond(delivery)

    async def _leave_out_late(self, delivery: _Delivery) -> None:
        """Events about a user erased after their date (a delivery retried since): ignored, not
        recorded; their receipt is kept, so that the next retry is a duplicate."""
        accepted = [r for r in delivery.results if r["result"] == "accepted"]
        if not accepted:
            return
        erased = await self.erased.current()
        if not erased.since:
            return
        for result in accepted:
            group = delivery.groups[result["index"] + 1]
            if any(erased.late(row) for row in group):  # a receipt is no one's
                group[:] = [row for row in group if isinstance(row, Receipt)]
                result["result"], result["reason"] = "ignored", ERASED_SINCE
                result.pop("left_out", None)

    def _answer(self, batch: bool, delivery: _Delivery) -> web.Response:
        results = delivery.results
        if not batch:
            one = results[0]
            if one["result"] == "bad":
                return error(400, "; ".join(one["errors"]), extra={"result": "bad", "errors": one["errors"]})
            # An ignored event is answered as an accepted one is (202), so that a sender's
            # library does not retry it; the result and reason say that nothing was recorded.
            status = 200 if one["result"] == "duplicate" else 202
            return answer(status, {"ok": True, **{k: v for k, v in one.items() if k != "index"}})
        counts = {outcome: sum(1 for r in results if r["result"] == outcome) for outcome in OUTCOMES}
        if counts["bad"] == len(results):
            message = f"all {len(results)} events failed validation"
            return error(400, message, extra={**counts, "results": results})
        status = 200 if counts["duplicate"] == len(results) else 202
        return answer(status, {"ok": True, **counts, "results": results})
