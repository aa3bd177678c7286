"""Value extraction: one configured source, compiled once, reading its value out of an exchange.

Owns ``Extractor``: a form field of the request body (urlencoded or multipart: ``addons/forms.py``),
a JSON pointer into either body (a GraphQL batch's operation too), a response header, a query
parameter of the request or of the response's ``Location``, a request header, the path, a
cookie the response sets or the request sends (``addons/cookies.py``), the response body as
text, a JWT claim from a cookie or the ``Authorization`` header; any of them narrowed by a
``capture`` group. Also the keys a JWT source verifies with (``source_keys``). A field whose
name contains pass, pwd, secret, token or card, or a header that carries a credential, is never
read, whatever the config says.
"""

from __future__ import annotations

import email.errors
import json
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from addons.cookies import kept_set_cookie, sent_cookie
from addons.forms import CHARSET, charset_codec, parse_form
from addons.jwks import RuleKeys
from addons.jws import JwtError, read_claims
from addons.values import ExtractError, compared_text
from gateway.config import Settings, resolve_path
from gateway.pipeline import Exchange, split_query
from gateway.ruleconfig import COOKIE_KINDS, CREDENTIAL_HEADERS, FORBIDDEN_NAME, Source, source_kind

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


def first_query_value(query: str, name: str) -> str | None:
    for _, key, value in split_query(query):
        if key == name:
            return value
    return None


def source_keys(settings: Settings, at: str, source: Source, rule: str) -> RuleKeys | None:
    """The keys the JWT source at TOML key ``at`` (of rule ``rule``) verifies with, as the
    config read them; from a file, kept up to date with it once started (``running``).
    None: it verifies none."""
    material = settings.rule_keys.get(at)
    if material is None:
        return None
    path = None if source.key.startswith("env:") else resolve_path(settings.base_dir, source.key)
    return RuleKeys(f"{at}.key (rule {rule!r})", source.algorithm, material, path, (rule, f"{at}.key"))


def site_host(settings: Settings) -> str:
    """``proxy.public_origin``'s host and port, the one the browser asks (a front proxy may send
    the site its own ``Host``); "" when it is not set: then each request's ``Host`` is."""
    origin = settings.options.proxy.public_origin
    return urlsplit(origin).netloc if origin else ""


def joined(headers: Mapping[str, str], name: str) -> str | None:
    """Header ``name``'s value: every line of a repeated one as one list, joined with ", " (RFC
    9110 §5.3), from a multi-valued mapping (both hosts hand one over, looked up by lower-case
    name); None when it is not there."""
    getall = getattr(headers, "getall", None)
    if getall is None:
        return headers.get(name.lower())
    return ", ".join(getall(name.lower(), ())) or None


class Extractor:
    """One configured source, ready to read a value out of an exchange."""

    def __init__(
        self, source: Source, keys: RuleKeys | None = None, max_body: int | None = None, site: str = ""
    ) -> None:
        self.kind, self.name = source_kind(source)
        self.site = site
        """The host the browser asks (``site_host``: ``proxy.public_origin``'s), by which a cookie
        the response sets is kept or refused; "": the request's ``Host``."""
        self.max_body = max_body
        """The rule's ``max_body``: a body the host read for another rule on the same request,
        within that one's larger ``max_body``, is not read by this one (``body_not_read``)."""
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
            value = _pointer(self._body(body), self.name, operation)
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

    def _body(self, body: bytes | None) -> bytes:
        # None: larger than every matching rule's max_body, or not decodable; larger than this
        # rule's: read for another rule (until 2026-12-05 this one read it too, past its bound).
        if body is None or (self.max_body is not None and len(body) > self.max_body):
            raise ExtractError("body_not_read")
        return body

    def _form(self, ex: Exchange) -> Any:
        body = self._body(ex.request_body)
        try:
            fields = parse_form(ex.request.headers.get("content-type", ""), body)
        except (ValueError, LookupError, email.errors.MessageError):  # counted: the other rules read on
            raise ExtractError("not_a_form") from None
        return fields.get(self.name)

    def _request_json(self, ex: Exchange) -> Any:
        return _pointer(self._body(ex.request_body), self.name)

    def _response_json(self, ex: Exchange) -> Any:
        return _pointer(self._body(ex.response_body), self.name)

    def _header(self, ex: Exchange) -> Any:
        return joined(ex.response.headers, self.name) if ex.response is not None else None

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
        return joined(ex.request.headers, self.name)

    def _path(self, ex: Exchange) -> Any:
        return ex.request.path

    def _cookie(self, ex: Exchange) -> Any:
        # A sign-out's deletion (``jwt=deleted; Max-Age=0``) sets none: the request's is read.
        return self._set_cookie(ex) or sent_cookie(ex.request.cookies, self.name)

    def _set_cookie(self, ex: Exchange) -> Any:
        if ex.response is None:
            return None
        request = ex.request
        return kept_set_cookie(
            ex.response.headers, self.name, request.ts.timestamp(), request.path, self.site or request.host
        )

    def _response_text(self, ex: Exchange) -> Any:
        body = self._body(ex.response_body)
        content_type = ex.response.headers.get("content-type", "") if ex.response is not None else ""
        declared = CHARSET.search(content_type)
        try:
            charset = charset_codec(declared.group(1) if declared else None)
        except ValueError:
            raise ExtractError("unknown_charset") from None
        try:
            return body.decode(charset, "surrogateescape")
        except UnicodeError:  # UTF-16 cut mid-unit, a byte below 0x80 UTF-7 or IDNA refuse
            raise ExtractError("not_text") from None

    def _jwt_cookie(self, ex: Exchange) -> Any:
        return self._claim(ex, self._cookie(ex))

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
