"""Rule matching and value extraction shared by ``stitching`` and ``conversions``.

Owns the compiled form of a rule's match (method, path regex compiled once,
host, success statuses) and of a value source (a form field of the request
body — urlencoded or multipart —, a JSON pointer into either body, a response
header, a query parameter of the request or of the response's ``Location``,
a request header, the path, a cookie the response sets or the request sends,
the response body as text, a JWT claim from a cookie or the ``Authorization``
header; any of them narrowed by a ``capture`` group) and of a rule's
``when`` conditions (a source whose value must be present, equal a text or match
a regex), plus the pure parsers behind them. A field whose name contains pass,
secret, token or card is never extracted, whatever the config says: the form
parser does not even return it.
"""

from __future__ import annotations

import codecs
import decimal
import email.errors
import email.parser
import email.policy
import email.utils
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from addons.campaign import hostname
from addons.jwks import RuleKeys
from addons.jws import JwtError, read_claims
from gateway.codings import readable_accept_encoding
from gateway.config import Settings, resolve_path
from gateway.events import MAX_VALUE
from gateway.keys import MAX_USER_ID
from gateway.pipeline import Exchange, parse_cookies, split_query
from gateway.ruleconfig import (
    COOKIE_KINDS,
    CREDENTIAL_HEADERS,
    FORBIDDEN_NAME,
    ConversionRule,
    IdentityRule,
    Source,
    source_kind,
)
from gateway.ruleconfig import Condition as ConditionOptions

MAX_FORM_FIELDS = 1000
MAX_TEXT = 200
"""Longest order ID or currency kept."""


class ExtractError(Exception):
    """Why no value was read; ``reason`` is a metric label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


NO_VALUE = frozenset({"missing", "capture_no_match"})
"""Reasons a source has no value (a ``when`` with ``absent = true`` then holds), rather than
one that could not be read."""
_CHARSET = re.compile(r"(?i)\bcharset\s*=\s*\"?([^\";\s]+)")
_MAX_AGE = re.compile(r"-?[0-9]+")


def _charset(declared: str | None) -> str:
    """The codec a form's (or part's) declared charset names; UTF-8 when none is declared.
    ValueError when Python knows no such text encoding (``base64`` and ``rot13`` are codecs,
    but not of bytes to text): its values cannot be read."""
    name = declared or "utf-8"
    try:
        text = codecs.lookup(name)._is_text_encoding  # what bytes.decode checks too
    except LookupError:
        text = False
    if not text:
        raise ValueError(f"unknown charset {name!r}")
    return name


def parse_form(content_type: str, body: bytes) -> dict[str, str]:
    """A urlencoded or multipart/form-data body → field → first value (file parts skipped).

    Values are decoded in the charset the form (or the part) declares, UTF-8 when it declares
    none. Bytes that do not decode stay as surrogate escapes, which no value check accepts as
    printable: such a value is refused, never turned into ``\ufffd`` (two different user IDs
    would become one). A part in a charset Python does not know is left out. Fields named like a
    credential (``FORBIDDEN_NAME``) are left out. ValueError when the body is not a form of
    either kind, or declares a charset Python does not know.
    """
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    fields: dict[str, str] = {}
    if media == "application/x-www-form-urlencoded":
        declared = _CHARSET.search(params)
        charset = _charset(declared.group(1) if declared else None)
        text = body.decode(charset, "surrogateescape")  # raw bytes; percent-escapes decode below
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            max_num_fields=MAX_FORM_FIELDS,
            encoding=charset,
            errors="surrogateescape",
        )
        for name, value in pairs:
            if not FORBIDDEN_NAME.search(name):
                fields.setdefault(name, value)
        return fields
    if media != "multipart/form-data":
        raise ValueError(f"not a form: {media or 'no content type'}")
    head = b"Content-Type: " + content_type.encode("utf-8", "replace") + b"\r\n\r\n"
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise ValueError("multipart body without parts")
    for part in message.iter_parts():
        field = part.get_param("name", header="content-disposition")
        if not isinstance(field, str) or part.get_filename() is not None or FORBIDDEN_NAME.search(field):
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        try:
            charset = _charset(part.get_content_charset())
        except ValueError:
            continue  # this part cannot be read; the others can
        fields.setdefault(field, payload.decode(charset, "surrogateescape"))
    return fields


_INDEX = re.compile(r"0|[1-9][0-9]*")


def resolve_pointer(document: Any, pointer: str) -> Any:
    """RFC 6901: the value at ``pointer`` (``/user/id``, ``/items/0``); LookupError when absent."""
    if pointer == "":
        return document
    if not pointer.startswith("/"):
        raise LookupError(f"a JSON pointer starts with '/': {pointer!r}")
    for token in pointer[1:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(document, dict):
            document = document[token]
        elif isinstance(document, list) and _INDEX.fullmatch(token):
            document = document[int(token)]
        else:
            raise LookupError(token)
    return document


def as_text(value: Any) -> str | None:
    """A string, or a whole number written as one; None for anything else."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def compared_text(value: Any) -> str | None:
    """What a condition's ``equals`` or ``matches`` is compared with: a string, a whole number
    as written, a JSON boolean as ``true``/``false``; None (never holds) for anything else."""
    return "true" if value is True else "false" if value is False else as_text(value)


def meets(value: Any, equals: str | None, matches: re.Pattern[str] | None) -> bool:
    """Whether a value that is there passes a condition's test (a rule's or a sender's
    ``when``): its ``compared_text`` is ``equals``, or ``matches`` it whole; with neither, any
    value does. An object, a list or a fraction is never compared."""
    if equals is None and matches is None:
        return True
    text = compared_text(value)
    if text is None:
        return False
    return text == equals if matches is None else matches.fullmatch(text) is not None


def user_id(value: Any) -> str:
    """A valid user ID from an extracted value; ExtractError when it is not one."""
    text = as_text(value)
    if text is None:
        raise ExtractError("invalid_user_id")
    # Trimmed first, then checked, as webhooks read it (``gateway/mapping.py``): " alice " and
    # "alice\n" are alice, and 256 characters with a space around them still fit.
    text = text.strip()
    if not text or len(text) > MAX_USER_ID or not text.isprintable():
        raise ExtractError("invalid_user_id")
    return text


NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
"""A number written as a string: JSON's syntax (leading zeros allowed), ASCII digits only, so
that neither ``1_000`` nor ``nan``, ``inf`` or another script's digits are read as one."""


def scaled(value: Any, scale: float = 1.0) -> float | None:
    """A number, or a numeric string (surrounding spaces ignored), times ``scale``, rounded once:
    ``1999`` cents at ``0.01`` is ``19.99``, not the float product ``19.990000000000002``.
    ``inf`` (or ``-inf``) beyond the float range (a JSON ``1e400`` is read as that infinity);
    None when ``value`` is not a number."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    if isinstance(value, str):
        value = value.strip(" \t\r\n")
        if not NUMBER.fullmatch(value):
            return None
    elif isinstance(value, float) and math.isnan(value):
        return None
    try:
        approx = float(value)
    except OverflowError:  # an integer of hundreds of digits
        approx = math.inf if value > 0 else -math.inf
    if not math.isfinite(approx) or approx == 0:  # out of range (or 0): no digits to keep
        return approx * scale + 0.0  # -0 is 0
    text = repr(value) if isinstance(value, float) else value  # the shortest that reads back
    with decimal.localcontext(_EXACT):
        return float(decimal.Decimal(text) * decimal.Decimal(repr(scale))) + 0.0


_EXACT = decimal.Context(prec=34, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)


GROUP_SEPARATORS = ",.' \u2019\u00a0\u202f\u2009"
"""What a site writes between groups of thousands: a comma, a point, an apostrophe (Swiss,
also typographic), a space (plain, no-break, narrow no-break, thin)."""
_GROUPED = re.compile(r"[0-9]{1,3}(?:([" + re.escape(GROUP_SEPARATORS) + r"])[0-9]{3})(?:\1[0-9]{3})*")
_LAKH = re.compile(r"[0-9]{1,2}(?:,[0-9]{2})*,[0-9]{3}")
"""India's grouping (``1,23,456``): a thousand, then hundreds."""


def plain_amount(text: str, decimal_separator: str = ".") -> str | None:
    """An amount as a shop writes it on a page (``1,299.00``; ``1.299,00`` with ``decimal_separator``
    ``","``; ``1 299,00``, ``1'299.00``, ``1,23,456.00``) as a plain numeric string
    (``1299.00``), or None when it is not one: its groups of thousands must be whole (three
    digits; India's hundreds) and separated alike, by anything but the decimal separator. A
    text ``NUMBER`` already reads stays as it is where the separator is ``.``."""
    text = text.strip(" \t\r\n\u00a0\u202f\u2009")
    if decimal_separator == "." and NUMBER.fullmatch(text):
        return text
    whole, point, fraction = text.rpartition(decimal_separator)
    if not point:
        whole, fraction = text, ""
    elif not fraction.isascii() or not fraction.isdigit():
        return None
    if not (whole.isascii() and whole.isdigit()):
        grouped = _GROUPED.fullmatch(whole)
        if grouped is not None and grouped.group(1) != decimal_separator:
            whole = whole.replace(grouped.group(1), "")
        elif decimal_separator == "." and _LAKH.fullmatch(whole):
            whole = whole.replace(",", "")
        else:
            return None
    return whole + ("." + fraction if fraction else "")


def money(value: Any, scale: float = 1.0, decimal_separator: str = ".") -> float | None:
    """An amount from 0 to ``MAX_VALUE`` (once multiplied by ``scale``: ``0.01`` for cents)
    from a number or a numeric string, written with ``decimal_separator`` and perhaps grouped
    (``plain_amount``); None when it is not one."""
    if isinstance(value, str):
        plain = plain_amount(value, decimal_separator)
        if plain is None:
            return None
        value = plain
    amount = scaled(value, scale)
    if amount is None or not math.isfinite(amount) or not 0 <= amount <= MAX_VALUE:
        return None
    return amount


def first_query_value(query: str, name: str) -> str | None:
    for _, key, value in split_query(query):
        if key == name:
            return value
    return None


def set_cookie_value(headers: Mapping[str, str], name: str) -> str | None:
    """The value a response's Set-Cookie gives cookie ``name`` (every Set-Cookie is looked at:
    a multi-valued mapping yields each in ``items()``)."""
    for header, value in headers.items():
        if header.lower() != "set-cookie":
            continue
        pair = value.partition(";")[0]
        cookie, sep, cookie_value = pair.partition("=")
        if sep and cookie.strip() == name:
            return parse_cookies(pair).get(name, cookie_value.strip())
    return None


def _deletes(attributes: Sequence[str], now: float) -> bool:
    """Whether a Set-Cookie's attributes delete the cookie: ``Max-Age`` ≤ 0, else (without a
    valid ``Max-Age``, which wins: RFC 6265 §5.3) an ``Expires`` before ``now``."""
    expires: str | None = None
    for attribute in attributes:
        name, _, value = attribute.partition("=")
        name = name.strip().lower()
        if name == "max-age" and _MAX_AGE.fullmatch(seconds := value.strip()):
            # Read by its text: int() refuses more than 4,300 digits (a ValueError, not a cookie).
            return seconds.startswith("-") or not seconds.strip("0")
        if name == "expires":
            expires = value.strip()
    if expires is None:
        return False
    try:  # RFC 1123 dates, and the dashed ones of RFC 850 that PHP and Rails once sent
        parsed = email.utils.parsedate_tz(expires.replace("-", " "))
        return parsed is not None and email.utils.mktime_tz(parsed) < now
    except (ValueError, OverflowError, TypeError, IndexError):
        return False  # a date no one can read: ignored, as browsers ignore it


def kept_set_cookie(headers: Mapping[str, str], name: str, now: float) -> str | None:
    """The value a response's Set-Cookie gives cookie ``name`` (a name ending in ``*``: the
    first cookie whose name starts with the rest) that the browser keeps: a deletion (an empty
    value, ``Max-Age`` ≤ 0, ``Expires`` before ``now``) sets none. Every Set-Cookie is looked
    at (a multi-valued mapping yields each in ``items()``)."""
    prefix = name[:-1] if name.endswith("*") else None
    for header, line in headers.items():
        if header.lower() != "set-cookie":
            continue
        pair, *attributes = line.split(";")
        cookie, sep, _ = pair.partition("=")
        cookie = cookie.strip()
        if not sep or not (cookie == name if prefix is None else cookie.startswith(prefix)):
            continue
        value = parse_cookies(pair).get(cookie, "")
        if value and not _deletes(attributes, now):
            return value
    return None


def sent_cookie(cookies: Mapping[str, str], name: str) -> str | None:
    """The request's cookie ``name`` (a name ending in ``*``: the first sent whose name starts
    with the rest); None for none, or an empty one."""
    if not name.endswith("*"):
        return cookies.get(name) or None
    prefix = name[:-1]
    return next((value for cookie, value in cookies.items() if cookie.startswith(prefix) and value), None)


def source_keys(settings: Settings, at: str, source: Source, rule: str) -> RuleKeys | None:
    """The keys the JWT source at TOML key ``at`` (of rule ``rule``) verifies with, as the
    config read them; from a file, kept up to date with it once started (``running``).
    None: it verifies none."""
    material = settings.rule_keys.get(at)
    if material is None:
        return None
    path = None if source.key.startswith("env:") else resolve_path(settings.base_dir, source.key)
    return RuleKeys(f"{at}.key (rule {rule!r})", source.algorithm, material, path)


class Extractor:
    """One configured source, ready to read a value out of an exchange."""

    def __init__(self, source: Source, keys: RuleKeys | None = None) -> None:
        self.kind, self.name = source_kind(source)
        self.claim = source.claim
        self.keys = keys
        """A JWT source's keys (``source_keys``); None: tokens are read unverified."""
        read = source.claim if self.kind.startswith("jwt_") else self.name
        # Checked again here, not only by the config check: such a field is never read.
        self.forbidden = any(FORBIDDEN_NAME.search(part) for part in read.split("/")) or (
            self.kind in ("header", "request_header") and self.name.lower() in CREDENTIAL_HEADERS
        )
        self.capture = re.compile(source.capture) if source.capture else None
        # These are read as sent, percent-encoded (PHP's setcookie encodes WordPress's "|" as
        # %7C and "@" as %40); the others' values are decoded already, and a "%" there is one.
        self.unquote = self.kind in ("path", *COOKIE_KINDS)
        self.request_body = self.kind in ("form", "request_json")
        self.response_body = self.kind in ("response_json", "response_text")
        self._read: Callable[[Exchange], Any] = getattr(self, "_" + self.kind)  # one method per kind

    def __call__(self, ex: Exchange, operation: int | None = None) -> Any:
        """The value; ``operation``: in a JSON array (a GraphQL batch), a JSON source reads that
        element of the request's array, or of the answer's (``operations``)."""
        if self.forbidden:
            raise ExtractError("forbidden_field")
        if operation is not None and self.kind in ("request_json", "response_json"):
            body = ex.request_body if self.kind == "request_json" else ex.response_body
            value = _pointer(_body(body), self.name, operation)
        else:
            value = self._read(ex)
        if value is None:
            raise ExtractError("missing")
        return value if self.capture is None else self._captured(value)

    def _captured(self, value: Any) -> str:
        """The capture group's text, searched in the value as text (``compared_text``: an
        object, a list or a fraction has none); ExtractError ``capture_no_match`` otherwise."""
        assert self.capture is not None
        text = compared_text(value)
        found = self.capture.search(text) if text is not None else None
        group = found.group(1) if found is not None else None
        if group is None:
            raise ExtractError("capture_no_match")
        # Bytes that are not UTF-8 stay surrogate escapes, refused as unprintable downstream.
        return unquote(group, errors="surrogateescape") if self.unquote else group

    def _form(self, ex: Exchange) -> Any:
        body = _body(ex.request_body)
        try:
            fields = parse_form(ex.request.headers.get("content-type", ""), body)
        except (ValueError, LookupError, email.errors.MessageError):  # counted: the other rules read on
            raise ExtractError("not_a_form") from None
        return fields.get(self.name)

    def _request_json(self, ex: Exchange) -> Any:
        return _pointer(_body(ex.request_body), self.name)

    def _response_json(self, ex: Exchange) -> Any:
        return _pointer(_body(ex.response_body), self.name)

    def _header(self, ex: Exchange) -> Any:
        # Hosts hand over headers looked up by lower-case name.
        return ex.response.headers.get(self.name.lower()) if ex.response is not None else None

    def _query(self, ex: Exchange) -> Any:
        return first_query_value(ex.request.query, self.name)

    def _location_query(self, ex: Exchange) -> Any:
        location = ex.response.headers.get("location") if ex.response is not None else None
        if not location:
            return None
        try:
            query = urlsplit(location).query
        except ValueError:
            raise ExtractError("bad_location") from None
        return first_query_value(query, self.name)

    def _request_header(self, ex: Exchange) -> Any:
        # Every line of a repeated header, as one list, as the mitmproxy host joins them.
        headers = ex.request.headers
        getall = getattr(headers, "getall", None)
        if getall is None:
            return headers.get(self.name.lower())
        return ", ".join(getall(self.name.lower(), ())) or None

    def _path(self, ex: Exchange) -> Any:
        return ex.request.path

    def _cookie(self, ex: Exchange) -> Any:
        value = self._set_cookie(ex)
        return value if value is not None else sent_cookie(ex.request.cookies, self.name)

    def _set_cookie(self, ex: Exchange) -> Any:
        if ex.response is None:
            return None
        return kept_set_cookie(ex.response.headers, self.name, ex.request.ts.timestamp())

    def _response_text(self, ex: Exchange) -> Any:
        body = _body(ex.response_body)
        content_type = ex.response.headers.get("content-type", "") if ex.response is not None else ""
        declared = _CHARSET.search(content_type)
        try:
            charset = _charset(declared.group(1) if declared else None)
        except ValueError:
            raise ExtractError("unknown_charset") from None
        try:
            return body.decode(charset, "surrogateescape")
        except UnicodeError:  # UTF-16 cut mid-unit, a byte below 0x80 UTF-7 or IDNA refuse
            raise ExtractError("not_text") from None

    def _jwt_cookie(self, ex: Exchange) -> Any:
        token = set_cookie_value(ex.response.headers, self.name) if ex.response is not None else None
        return self._claim(ex, token or ex.request.cookies.get(self.name))

    def _jwt_authorization(self, ex: Exchange) -> Any:
        scheme, _, token = ex.request.headers.get("authorization", "").partition(" ")
        return self._claim(ex, token.strip() if scheme.lower() == "bearer" else None)

    def _claim(self, ex: Exchange, token: str | None) -> Any:
        if not token:
            return None
        try:
            keys = self.keys.current if self.keys is not None else None
            claims = read_claims(token, keys, ex.request.ts.timestamp())
        except JwtError as err:
            raise ExtractError(err.reason) from None
        return claims.get(self.claim)


class Condition:
    """One entry of a rule's ``when``: its value must be present (not JSON ``null``), and equal
    ``equals`` or match ``matches`` when the rule says so."""

    def __init__(self, condition: ConditionOptions, keys: RuleKeys | None = None) -> None:
        self.read = Extractor(condition, keys)
        self.equals = condition.equals
        self.matches = re.compile(condition.matches) if condition.matches is not None else None
        self.absent = condition.absent

    def __call__(self, ex: Exchange, operation: int | None = None) -> bool:
        """Whether it holds (for one ``operation`` of a batch: ``Extractor``); ExtractError when
        the value cannot be read at all (a body not read, not JSON, a JWT that fails): the rule
        does not fire, and that is counted."""
        try:
            value = self.read(ex, operation)
        except ExtractError as err:
            if err.reason in NO_VALUE:
                return self.absent
            raise
        return not self.absent and meets(value, self.equals, self.matches)


def conditions_hold(conditions: Sequence[Condition], ex: Exchange, operation: int | None = None) -> bool:
    """Whether every condition of a rule's ``when`` holds (ExtractError: one could not be read)."""
    return all(condition(ex, operation) for condition in conditions)


def holding_operations(conditions: Sequence[Condition], ex: Exchange) -> list[int | None]:
    """What a rule's ``when`` picks: ``[None]`` (the whole exchange) when it holds, ``[]`` when
    not; for a JSON array (a GraphQL batch, which fails a pointer into one operation with
    ``json_array``), each operation it holds for, in order. ExtractError (its reason prefixed
    ``when_``): a condition could not be read (for a batch: for any of its operations)."""
    try:
        return [None] if not conditions or conditions_hold(conditions, ex) else []
    except ExtractError as err:
        if err.reason != "json_array":
            raise ExtractError("when_" + err.reason) from None
    try:
        return [op for op in range(operations(ex)) if conditions_hold(conditions, ex, op)]
    except ExtractError as err:
        raise ExtractError("when_" + err.reason) from None


def operations(ex: Exchange) -> int:
    """How many operations a batch holds: the request's JSON array's length, else the answer's."""
    for body in (ex.request_body, ex.response_body):
        if body is not None:
            try:
                document = json.loads(body)
            except (ValueError, RecursionError):
                continue
            if isinstance(document, list):
                return len(document)
    return 0


def _body(body: bytes | None) -> bytes:
    if body is None:
        raise ExtractError("body_not_read")  # larger than the rule's max_body, or not decodable
    return body


def _pointer(body: bytes, pointer: str, operation: int | None = None) -> Any:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise ExtractError("not_json") from None
    if isinstance(document, list) and pointer and not _INDEX.fullmatch(pointer[1:].split("/")[0]):
        # A batch (Apollo's BatchHttpLink sends ``[{"operationName": …}, …]``): a pointer into
        # one operation reads the one a rule's ``when`` picked (``holding_operations``).
        if operation is None:
            raise ExtractError("json_array")
        if operation >= len(document):
            return None
        document = document[operation]
    try:
        return resolve_pointer(document, pointer)
    except (LookupError, TypeError):
        return None


@dataclass(frozen=True, slots=True)
class Match:
    path: re.Pattern[str]
    host: str
    status: frozenset[int]
    max_body: int
    request_body: bool
    response_body: bool


def compile_match(rule: IdentityRule | ConversionRule, extractors: Sequence[Extractor]) -> Match:
    """``extractors``: every source the rule reads, its ``when`` conditions' included."""
    return Match(
        path=re.compile(rule.path),
        host=rule.host.lower(),
        status=frozenset(rule.status),
        max_body=rule.max_body,
        request_body=any(e.request_body for e in extractors),
        response_body=any(e.response_body for e in extractors),
    )


def _ask_for_readable_body(ex: Exchange) -> None:
    """Offer the site only the codings a rule can read (``readable_accept_encoding``): a site
    that prefers brotli or zstd answers browsers (which offer both) in a coding the rule
    could not decode. The visitor still gets a coding they asked for."""
    headers = ex.request.headers
    getall = getattr(headers, "getall", None)
    offered = ", ".join(getall("accept-encoding", ())) if getall else headers.get("accept-encoding")
    # None offered accepts any coding (RFC 9110 §12.5.3): ask for none, as such clients expect.
    narrowed = readable_accept_encoding(offered) if offered else "identity"
    if narrowed is not None:
        ex.upstream_headers["accept-encoding"] = narrowed


class RuleIndex:
    """Rules by method, so a request no rule's method matches costs one dict lookup."""

    def __init__(self, rules: Sequence[tuple[str, Match, Any]]) -> None:
        self.by_method: dict[str, list[tuple[Match, Any]]] = {}
        for method, match, rule in rules:
            self.by_method.setdefault(method, []).append((match, rule))

    def request(self, ex: Exchange) -> None:
        """Ask the host for the bodies the matching rules read."""
        candidates = self.by_method.get(ex.request.method)
        if not candidates:
            return
        host = hostname(ex.request.host)
        for match, _ in candidates:
            if (not match.host or match.host == host) and match.path.fullmatch(ex.request.path):
                ex.watched = True
                if match.request_body:
                    ex.want_request_body = max(ex.want_request_body, match.max_body)
                if match.response_body:
                    if not ex.want_response_body:
                        _ask_for_readable_body(ex)
                    ex.want_response_body = max(ex.want_response_body, match.max_body)

    def fired(self, ex: Exchange) -> list[Any]:
        """The matching rules whose success statuses include the response's."""
        if ex.response is None or ex.visitor is None:
            return []
        candidates = self.by_method.get(ex.request.method)
        if not candidates:
            return []
        host = hostname(ex.request.host)
        status = ex.response.status
        return [
            rule
            for match, rule in candidates
            if status in match.status
            and (not match.host or match.host == host)
            and match.path.fullmatch(ex.request.path)
        ]
