"""Senders of signed server-side events: their config checks, formats and compiled mappings.

Owns the field names a ``[[sources]]`` mapping may name, each format's default
mapping (``standard``: our own layout; ``segment``: Segment's ``page`` /
``identify`` calls), JSON pointers (RFC 6901), the compiled ``SourceMap``, how a
delivery's body is decoded (``MAX_DEPTH``) and an event encoded again to be kept
(``encode_event``), and how it splits into events. What
one event means is ``gateway.mapping``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from gateway.attribution import MINOR_UNITS, STRIPE_MINOR_UNITS
from gateway.config_values import (
    HEADER_NAME,
    comparison_problems,
    json_pointer_problem,
    toml_key,
    unknown_name,
)
from gateway.events import NAME, NAME_RULE, order_scope_problem
from gateway.options import SHOPIFY_HMAC
from gateway.signing import STAMPED

if TYPE_CHECKING:
    from gateway.options import Options, SourceOptions, WebhooksOptions

FIELDS = (
    "type",
    "event_id",
    "visitor_id",
    "user_id",
    "creator_id",
    "sub_id",
    "source",
    "medium",
    "campaign",
    "term",
    "content",
    "click_id",
    "click_id_kind",
    "name",
    "value",
    "currency",
    "order_id",
    "timestamp",
    "landing_path",
)
KINDS = ("conversion", "identify", "touchpoint")
DEFAULTABLE = (
    "type",
    "source",
    "medium",
    "campaign",
    "term",
    "content",
    "creator_id",
    "sub_id",
    "click_id_kind",
    "name",
    "currency",
    "landing_path",
)

FORMAT_FIELDS: dict[str, dict[str, str]] = {
    "standard": {name: "/" + name for name in FIELDS},
    "segment": {
        "type": "/type",
        "event_id": "/messageId",
        "visitor_id": "/anonymousId",
        "user_id": "/userId",
        "source": "/context/campaign/source",
        "medium": "/context/campaign/medium",
        "campaign": "/context/campaign/name",
        "term": "/context/campaign/term",
        "content": "/context/campaign/content",
        "creator_id": "/context/campaign/creator_id",
        "landing_path": "/properties/path",
        "timestamp": "/timestamp",
        "name": "/event",
        "value": "/properties/revenue",
        "currency": "/properties/currency",
        "order_id": "/properties/order_id",
    },
}
FORMAT_TYPES = {"standard": {}, "segment": {"page": "touchpoint", "identify": "identify"}}
FORMAT_IGNORE = {"standard": (), "segment": ("track", "screen", "group", "alias")}


def parse_pointer(pointer: str) -> tuple[str, ...]:
    """``"/a/b~1c"`` → ``("a", "b/c")`` (RFC 6901); ValueError unless it starts with ``/``."""
    if not pointer.startswith("/"):
        raise ValueError(f'a JSON pointer starts with "/", got {pointer!r}')
    return tuple(t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/"))


MISSING: Any = object()
"""What ``resolve`` gives for a pointer that points at nothing."""


def resolve(doc: Any, tokens: Sequence[str]) -> Any:
    """The value at ``tokens`` in ``doc``, or ``MISSING``."""
    for token in tokens:
        if isinstance(doc, dict):
            doc = doc.get(token, MISSING)
        elif isinstance(doc, list) and token.isdigit() and int(token) < len(doc):
            doc = doc[int(token)]
        else:
            return MISSING
        if doc is MISSING:
            return doc
    return doc


def stopped_at(doc: Any, tokens: Sequence[str]) -> tuple[str, Any] | None:
    """Where ``resolve`` gave ``MISSING`` because the pointer ran into a value it cannot go into
    (a string, a number, an array read by a name rather than an index): the pointer to that
    value, and the value. None when it found a value, or nothing there (a name absent, an index
    past the end, a ``null`` on the way, which a sender writes for "none")."""
    for depth, token in enumerate(tokens):
        if isinstance(doc, dict):
            doc = doc.get(token, MISSING)
        elif isinstance(doc, list) and token.isdigit():
            doc = doc[int(token)] if int(token) < len(doc) else MISSING
        elif doc is None or depth == 0:
            return None
        else:
            return "/" + "/".join(tokens[:depth]), doc
        if doc is MISSING:
            return None
    return None


def put(doc: dict[str, Any], tokens: Sequence[str], value: Any) -> None:
    """Set ``value`` at the parsed pointer ``tokens`` in ``doc``, creating objects on the way."""
    *path, last = tokens
    for token in path:
        doc = doc.setdefault(token, {})
    doc[last] = value


@dataclass(frozen=True)
class Requirement:
    """A ``when`` entry compiled (``options.EventCondition``): the value at ``pointer`` must be
    there, and be ``equals`` or match ``matches`` when given; with ``absent``, not be there
    (``gateway.mapping`` compares)."""

    pointer: str
    tokens: tuple[str, ...]
    equals: str | None = None
    matches: re.Pattern[str] | None = None
    absent: bool = False


@dataclass(frozen=True)
class SourceMap:
    """A ``[[sources]]`` entry compiled once: pointers parsed, format defaults merged in."""

    name: str
    format: str
    pointers: Mapping[str, tuple[str, ...]]
    types: Mapping[str, str]
    ignore: frozenset[str]
    defaults: Mapping[str, str]
    value_scale: float | str
    """A factor, or ``"minor"`` (each currency's minor units: ``gateway.mapping``)."""
    minor_units: Mapping[str, int]
    """The currencies whose minor unit is not the cent for ``"minor"``: ISO 4217's, or Stripe's
    for a Stripe-signed source (``attribution.STRIPE_MINOR_UNITS``)."""
    batch: tuple[str, ...] | None
    lenient: bool
    """segment: a page without campaign data or an identify without both IDs is acknowledged
    and records nothing (such calls are routine there), rather than kept as a bad event."""
    order_scope: str = ""
    """The namespace of its order IDs (``events.order_key``; ``SourceOptions.order_scope``)."""
    when: Mapping[str, tuple[Requirement, ...]] = dataclasses.field(default_factory=dict)
    """Per sender type value, what its events must meet to be recorded (``SourceOptions.when``)."""
    configured: frozenset[str] = frozenset()
    """Our fields whose pointer the operator wrote (``fields``): one that finds nothing in an
    event is reported (``Mapped.unmatched``), as it may be a typo."""
    type_header: str = ""
    """The header giving an event's type when its body has none (Shopify's ``X-Shopify-Topic``,
    ``hmac.type_header``), which a missing type's error names."""
    platform: bool = False
    """A platform's own layout (a ``signature`` other than Standard Webhooks'): a field read
    from its default pointer, our name at the top of the event, is reported
    (``Mapped.defaulted``), as the platform's key of that name may mean something else
    (a Shopify order's ``name``)."""

    @property
    def origin(self) -> str:
        return "segment" if self.format == "segment" else "webhook"

    def type_value(self, kind: str) -> str:
        """A sender type value that maps to our ``kind`` (to build test payloads)."""
        return next((raw for raw, ours in self.types.items() if ours == kind), kind)


def ignored_types(opts: SourceOptions) -> frozenset[str]:
    """The sender types ``opts`` acknowledges without recording: its ``ignore_types`` as given,
    else the format's (Segment's ``track``, ``screen``…) but those its ``types`` maps (until
    2026-12-05 ``types = {track = "conversion"}`` left every track call ``ignored``)."""
    if opts.ignore_types is not None:
        return frozenset(opts.ignore_types)
    return frozenset(FORMAT_IGNORE[opts.format]) - set(opts.types)


def compile_source(opts: SourceOptions) -> SourceMap:
    fields = {**FORMAT_FIELDS[opts.format], **opts.fields}
    return SourceMap(
        name=opts.name,
        format=opts.format,
        pointers={name: parse_pointer(p) for name, p in fields.items() if p},
        types={**FORMAT_TYPES[opts.format], **opts.types},
        ignore=ignored_types(opts),
        defaults=dict(opts.defaults),
        value_scale=opts.value_scale,
        minor_units=STRIPE_MINOR_UNITS if opts.signature == "stripe" else MINOR_UNITS,
        batch=parse_pointer(opts.batch_pointer) if opts.batch_pointer else None,
        lenient=opts.format == "segment",
        configured=frozenset(name for name, pointer in opts.fields.items() if pointer),
        platform=opts.platform_layout,
        # Read only where the body has no "type" (inbound), so only for fields.type = "/type".
        type_header=signed.type_header
        if (signed := opts.signed_body()) is not None and fields.get("type") == "/type"
        else "",
        order_scope=opts.order_scope,
        when=_requirements(opts),
    )


def _requirements(opts: SourceOptions) -> dict[str, tuple[Requirement, ...]]:
    when: dict[str, tuple[Requirement, ...]] = {}
    for cond in opts.when:
        matches = re.compile(cond.matches) if cond.matches is not None else None
        done = Requirement(cond.pointer, parse_pointer(cond.pointer), cond.equals, matches, cond.absent)
        when[cond.type] = (*when.get(cond.type, ()), done)
    return when


def validate_sources(options: Options) -> list[str]:
    """Every problem of ``[webhooks]`` and ``[[sources]]``, each naming its key."""
    p: list[str] = []
    wh: WebhooksOptions = options.webhooks
    for key, value, low, high in (
        ("tolerance_seconds", wh.tolerance_seconds, 1, 86_400),
        ("max_batch", wh.max_batch, 1, 10_000),
        ("max_body", wh.max_body, 1024, 64 * 1024 * 1024),
        ("bad_body_limit", wh.bad_body_limit, 256, 64 * 1024 * 1024),
        ("max_event_age_days", wh.max_event_age_days, 1, 3650),
    ):
        if not low <= value <= high:
            p.append(f"webhooks.{key}: must be {low}..{high}, got {value}")
    seen: set[str] = set()
    for i, src in enumerate(options.sources):
        at = f"sources[{i}]"
        if not NAME.fullmatch(src.name):
            p.append(f"{at}.name: must be {NAME_RULE}, got {src.name!r}")
        elif src.name in seen:
            p.append(f"{at}.name: {src.name!r} is used by another source")
        seen.add(src.name)
        if not src.secrets:
            p.append(f'{at}.secrets: needs at least one secret, like ["env:{src.name.upper()}_SECRET"]')
        if src.format == "segment" and src.legacy_hex:
            p.append(f"{at}.legacy_hex: applies to the standard format only (segment uses HTTP Basic)")
        if src.format == "segment" and src.signature != "standard":
            p.append(f"{at}.signature: applies to the standard format only (segment uses HTTP Basic)")
        p += _hmac_problems(src, at)
        if (problem := order_scope_problem(src.order_scope)) is not None:
            p.append(f"{at}.order_scope: {problem}")
        for name, pointer in src.fields.items():
            if name not in FIELDS:
                p.append(f"{at}.fields.{name}: {unknown_name('field', name, tuple(FIELDS))}")
            elif pointer and (bad := json_pointer_problem(pointer, ' (or "" to unmap)')):
                p.append(f"{at}.fields.{name}: {bad}")
        p += _nested_pointers(src, at)
        p += _when_problems(src, at)
        if src.batch_pointer and (bad := json_pointer_problem(src.batch_pointer, ' (or "" for none)')):
            p.append(f"{at}.batch_pointer: {bad}")
        for raw, ours in src.types.items():
            if ours not in KINDS:
                p.append(f"{at}.types.{raw}: must be one of {', '.join(KINDS)}, got {ours!r}")
        for j, raw in enumerate(src.ignore_types or ()):
            if raw in src.types:  # which was meant? ignore_types won, silently
                p.append(
                    f"{at}.ignore_types[{j}]: {raw!r} is also in types (= {src.types[raw]!r}): its events"
                    " would be ignored, never recorded; remove it from one of them"
                )
        p += [_no_default(at, name) for name in src.defaults if name not in DEFAULTABLE]
        kind = src.defaults.get("type")
        known = {*KINDS, *src.types, *(src.ignore_types or ())}
        if kind is not None and kind not in known:  # every event without a type would be refused
            p.append(
                f"{at}.defaults.type: {kind!r} is not a type this source maps"
                f" (known: {', '.join(sorted(known))})"
            )
        currency = src.defaults.get("currency")
        if currency is not None and not re.fullmatch(r"[A-Za-z]{3}", currency):
            p.append(f"{at}.defaults.currency: expected a 3-letter ISO 4217 code, got {currency!r}")
        if not isinstance(src.value_scale, str) and not (
            src.value_scale > 0 and math.isfinite(src.value_scale)
        ):
            p.append(f"{at}.value_scale: must be a positive number, got {src.value_scale}")
    logins = [i for i, s in enumerate(options.sources) if s.format == "standard" and s.signature == "basic"]
    for i, src in enumerate(options.sources):
        if logins and src.signature == "hmac" and src.hmac and src.hmac.header.lower() == "authorization":
            # Read as this sender's signature, every login would be refused as a wrong one.
            p.append(
                f'sources[{i}].hmac.header: {src.hmac.header!r} is where a signature = "basic" sender'
                f" (sources[{logins[0]}]) logs in: which scheme a delivery is would be ambiguous"
            )
    return p


def webhooks_warnings(wh: WebhooksOptions) -> list[str]:
    """What ``[webhooks]`` allows but does not do what it reads as, each naming its keys: said
    by ``gateway check``, ``gateway doctor`` and at the start, not refused (it is harmless)."""
    if wh.bad_body_limit > wh.max_body:
        return [
            f"webhooks.bad_body_limit ({wh.bad_body_limit}) is above webhooks.max_body ({wh.max_body}):"
            " no larger body is taken, so the limit cuts no bad event's body; set bad_body_limit to"
            f" at most {wh.max_body}, or raise webhooks.max_body if larger deliveries are meant"
        ]
    return []


def _no_default(at: str, name: str) -> str:
    return f"{at}.defaults.{toml_key(name)}: not a field with a default (allowed: {', '.join(DEFAULTABLE)})"


def without_undefaultable(entry: Mapping[str, Any], at: str) -> tuple[Mapping[str, Any], list[str]]:
    """A ``[[sources]]`` entry as read, less its ``defaults`` for fields that take none, and a
    problem for each: said before its value's type is judged (``defaults = {value = 5}`` was
    refused as "expected a string", then, written ``"5"``, as a field with no default)."""
    defaults = entry.get("defaults")
    if not isinstance(defaults, dict):
        return entry, []
    wrong = [name for name in defaults if name not in DEFAULTABLE]
    if not wrong:
        return entry, []
    kept = {name: value for name, value in defaults.items() if name in DEFAULTABLE}
    return {**entry, "defaults": kept}, [_no_default(at, name) for name in wrong]


def _when_problems(src: SourceOptions, at: str) -> list[str]:
    """``when``: each entry names a type this sender records, a pointer, and at most one test."""
    p = []
    ignored = ignored_types(src)
    recorded = {*FORMAT_TYPES[src.format], *src.types, *KINDS} - ignored
    for j, cond in enumerate(src.when):
        key = f"{at}.when[{j}]"
        if cond.type in ignored:
            p.append(f"{key}.type: {cond.type!r} is in ignore_types: its events are never recorded")
        elif cond.type not in recorded:
            p.append(
                f"{key}.type: {cond.type!r} is not a type this source records"
                f" (known: {', '.join(sorted(recorded))}; see types)"
            )
        if bad := json_pointer_problem(cond.pointer):
            p.append(f"{key}.pointer: {bad}")
        p += comparison_problems(key, cond.equals, cond.matches, cond.absent)
    return p


def _nested_pointers(src: SourceOptions, at: str) -> list[str]:
    """A field whose pointer is where another field's begins (``/content`` and
    ``/content/customer/id``): our fields are single values, so no event holds both, and every
    event that holds the longer one is refused for the shorter (an object where a value was
    expected). A default pointer is the usual culprit: a platform's own key of our field's name
    (Chargebee's ``content``)."""
    fields = {**FORMAT_FIELDS.get(src.format, {}), **src.fields}
    parsed = {
        name: parse_pointer(pointer)
        for name, pointer in fields.items()
        if name in FIELDS and pointer.startswith("/")
    }
    p = []
    for name, outer in parsed.items():
        inner = next(
            (
                other
                for other, path in parsed.items()
                if len(path) > len(outer) and path[: len(outer)] == outer
            ),
            None,
        )
        if inner is not None:
            whose = "its pointer" if name in src.fields else "its default pointer"
            p.append(
                f"{at}.fields.{name}: {whose} {fields[name]} is where fields.{inner} ({fields[inner]})"
                f' begins, so no event has a value there: unmap it ({name} = "") or point it elsewhere'
            )
    return p


OWN_HEADERS = frozenset(
    {
        *(f"{brand}-{name}" for brand in ("webhook", "svix") for name in ("id", "timestamp", "signature")),
        *(scheme.header.lower() for scheme in STAMPED.values()),
        *(h.lower() for h in (SHOPIFY_HMAC.header, SHOPIFY_HMAC.delivery_header, SHOPIFY_HMAC.type_header)),
        "x-webhook-signature",
    }
)
"""The headers another scheme reads its signature from: a ``signature = "hmac"`` sender's own
header must be none of them, or which scheme a delivery is would be ambiguous."""


def _hmac_problems(src: SourceOptions, at: str) -> list[str]:
    """``signature = "hmac"`` and its ``hmac`` table: each needs the other."""
    if src.hmac is None:
        if src.signature == "hmac":
            return [f'{at}.hmac: required under signature = "hmac", e.g. hmac = {{header = "X-Signature"}}']
        return []
    if src.signature != "hmac":
        return [f'{at}.hmac: applies under signature = "hmac" only (signature is {src.signature!r})']
    p = []
    for key in ("header", "delivery_header", "type_header"):
        name = getattr(src.hmac, key)
        if (name or key == "header") and not (HEADER_NAME.fullmatch(name) and len(name) <= 64):
            p.append(f"{at}.hmac.{key}: must be an HTTP header name (at most 64 characters), got {name!r}")
    if src.hmac.header.lower() in OWN_HEADERS:
        p.append(
            f"{at}.hmac.header: {src.hmac.header!r} is another scheme's"
            " (Standard Webhooks, Stripe, Paddle, Shopify, legacy_hex): use that signature instead"
        )
    prefix = src.hmac.prefix
    if not prefix.isprintable() or prefix != prefix.lstrip():
        p.append(f"{at}.hmac.prefix: must be printable text not starting with a space, got {prefix!r}")
    if src.hmac.stamped and src.hmac.encoding != "hex":
        p.append(
            f'{at}.hmac.encoding: under stamped = true the signature is hex (t=…,v1=<hex>), got "base64"'
        )
    if src.hmac.stamped and prefix:
        p.append(f"{at}.hmac.prefix: not taken under stamped = true (the header is t=…,v1=…), got {prefix!r}")
    return p


MAX_DEPTH = 128
"""Deepest nesting of arrays and objects a delivery may have (real events nest a few levels):
deeper, Python's recursion limit would stop the decoder, or the encoder keeping it as a bad
event, mid-way."""


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_decoder = msgspec.json.Decoder()


def _whole_number(digits: str) -> int | float:
    """A JSON integer; one of more digits than Python converts (``sys.get_int_max_str_digits``,
    4,300; valid JSON all the same) as the infinity of its sign, as ``1e400`` is read: until
    2026-12-05 it made the whole body ``not valid JSON`` with Python's own advice."""
    limit = sys.get_int_max_str_digits()
    if limit and len(digits.lstrip("-")) > limit:
        return -math.inf if digits.startswith("-") else math.inf
    return int(digits)


def decode_json(body: bytes) -> Any:
    """A JSON document (a delivery, a Segment archive's or a json-lines log's line). One holding
    a number too large for a double (``1e400``, valid JSON, or a whole number of more digits
    than Python converts), which the fast decoder refuses, is read with it as infinity: only an
    event that maps it is then refused (a value must be finite), not every event of the batch,
    which a sender would send again whole. ``msgspec.DecodeError`` or ``ValueError`` for what is
    not JSON (``NaN``, the standard library's extension, included)."""
    try:
        return _decoder.decode(body)
    except msgspec.ValidationError:
        pass
    except msgspec.DecodeError as err:
        # Its words for a lone UTF-16 surrogate escape (``\ud800``) are "Input data was
        # truncated", which sends a sender looking for a cut body: say what and where.
        try:
            doc = json.loads(body, parse_constant=_no_constant, parse_int=_whole_number)
        except (ValueError, RecursionError):
            raise err from None
        raise ValueError(_lone_surrogate(doc) or str(err)) from None
    doc = json.loads(body, parse_constant=_no_constant, parse_int=_whole_number)
    if reason := _lone_surrogate(doc):  # it could not be stored
        raise ValueError(reason)
    return doc


def _lone_surrogate(doc: Any) -> str | None:
    """Where the first UTF-16 surrogate escape without its other half is in ``doc`` (a name or a
    value; the value by its JSON pointer, RFC 6901), said for a sender; None if there is none.
    Such a code point is no character: it cannot be stored, nor written as UTF-8."""
    stack: list[tuple[str, Any]] = [("", doc)]
    while stack:
        pointer, node = stack.pop()
        if isinstance(node, str):
            if found := _SURROGATE.search(node):
                # The pointer "" is the whole document (a body that is one string).
                return f"{pointer or 'the whole document'} holds {_escaped(found.group())}{_NO_CHARACTER}"
        elif isinstance(node, dict | list):
            items = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
            for name, _ in items:
                if isinstance(name, str) and (found := _SURROGATE.search(name)):
                    where = pointer or "the top object"
                    return f"a name in {where} holds {_escaped(found.group())}{_NO_CHARACTER}"
            stack += [(f"{pointer}/{_pointer_token(str(name))}", value) for name, value in reversed(items)]
    return None


_SURROGATE = re.compile("[\ud800-\udfff]")
_NO_CHARACTER = (
    ", half of a UTF-16 surrogate pair alone, which is no character; send the text as UTF-8,"
    " or the pair whole: \\ud83d\\ude00"
)


def _escaped(code: str) -> str:
    return f"\\u{ord(code):04x}"


def _pointer_token(name: str) -> str:
    """A name as a JSON pointer's token (RFC 6901: ``~`` as ``~0``, ``/`` as ``~1``)."""
    return name.replace("~", "~0").replace("/", "~1")


_BEYOND = {math.inf: msgspec.Raw(b"1e400"), -math.inf: msgspec.Raw(b"-1e400")}


def _as_sent(doc: Any) -> Any:
    if isinstance(doc, float) and math.isinf(doc):
        return _BEYOND[doc]
    if isinstance(doc, dict):
        return {name: _as_sent(value) for name, value in doc.items()}
    if isinstance(doc, list):
        return [_as_sent(value) for value in doc]
    return doc


def encode_event(event: Any) -> bytes:
    """One decoded event as JSON again, to be kept as a bad event: a number beyond a double as
    ``1e400`` (``-1e400``), not as the ``null`` JSON encoders write for an infinity, which
    ``replay-bad`` would read as no value and the admin as a value never sent."""
    return msgspec.json.encode(_as_sent(event))


def decode_delivery(body: bytes) -> Any:
    """A delivery's JSON document; ``ValueError`` with the reason, naming the body, when it is
    not valid JSON or nests deeper than ``MAX_DEPTH``."""
    deep = ValueError(f"body: JSON nested deeper than {MAX_DEPTH} levels")
    # RFC 8259 §8.1: a parser may ignore a byte order mark (.NET and PowerShell senders write
    # one); JSON between systems is UTF-8, so UTF-16 and UTF-32 are refused, saying so.
    sent, body = body, body.removeprefix(b"\xef\xbb\xbf")
    skipped = len(sent) - len(body)  # offsets are said in the body as sent
    if not body.strip(b" \t\r\n"):
        raise ValueError("body: empty (expected a JSON object or array)")
    if body.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in body[:4]:
        raise ValueError("body: not UTF-8 (UTF-16 or UTF-32?); JSON is sent as UTF-8 (RFC 8259)")
    try:
        doc = decode_json(body)
    except (msgspec.DecodeError, ValueError) as err:
        try:
            body.decode()
        except UnicodeDecodeError as bad:
            # The parser's "Invalid UTF-8 encoded string" named neither the byte nor where it is.
            raise ValueError(
                f"body: not UTF-8 (byte 0x{body[bad.start]:02X} at offset {bad.start + skipped:,});"
                " JSON is sent as UTF-8 (RFC 8259)"
            ) from None
        raise ValueError(f"body: not valid JSON ({_placed(sent, str(err), skipped)})") from None
    except RecursionError:
        raise deep from None
    level = [doc]
    for _ in range(MAX_DEPTH):
        level = [
            child
            for node in level
            if isinstance(node, dict | list)
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, dict | list)
        ]
        if not level:
            return doc
    raise deep


_AT_BYTE = re.compile(r" \(byte ([0-9]+)\)$")


def _placed(body: bytes, reason: str, skipped: int = 0) -> str:
    """The parser's ``reason`` with where it stopped as a person finds it in the body, its line
    and column (in characters) before the byte offset msgspec gives (``trailing comma in object,
    at line 3, column 1 (byte 37)``); a body cut short is said so, where it ends (msgspec's
    words, "Input data was truncated", named no place). ``skipped``: the bytes before what the
    parser read (a byte order mark), which its offset does not count."""
    if reason == "Input data was truncated":
        return f"it ends before the JSON does, at {_line_column(body, len(body))}: cut short?"
    found = _AT_BYTE.search(reason)
    if found is None:
        return reason
    return f"{reason[: found.start()]}, at {_line_column(body, int(found.group(1)) + skipped)}"


def _line_column(body: bytes, offset: int) -> str:
    """Where ``offset`` is in ``body``: line and column (1-based; a byte order mark is no
    column), and the offset itself."""
    line_start = body.rfind(b"\n", 0, offset) + 1
    column = len(body[line_start:offset].decode(errors="replace").removeprefix("\ufeff")) + 1
    line = body.count(b"\n", 0, offset) + 1
    return f"line {line}, column {column} (byte {offset})"


def split_batch(src: SourceMap, doc: Any) -> list[Any]:
    """A delivery's events: the body itself when it is an array, the array at the source's
    ``batch_pointer`` when there is one (segment: with the batch's own ``context`` given to
    each call), else the body as one event."""
    if isinstance(doc, list):
        return doc
    if src.batch is not None:
        inner = resolve(doc, src.batch)
        if isinstance(inner, list):
            shared = doc.get("context") if src.format == "segment" else None
            if isinstance(shared, dict) and shared:
                # Segment's batch call: a context beside the batch applies to every call in it
                # (its campaign, above all); a call's own context keys win.
                return [_with_context(event, shared) for event in inner]
            return inner
    return [doc]


def _with_context(event: Any, shared: dict[str, Any]) -> Any:
    if not isinstance(event, dict):
        return event
    own = event.get("context")
    return {**event, "context": {**shared, **own} if isinstance(own, dict) else shared}
