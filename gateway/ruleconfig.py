"""Identity and conversion rules as configured: ``[[identity.rules]]`` and ``[[conversions]]``.

Owns the rule option structs (a match, success statuses, ``when`` conditions, value
sources) and what they share with the code that reads them: the source kinds, and the names
never read. Fields named like a credential (``FORBIDDEN_NAME``), and headers that carry one
(``CREDENTIAL_HEADERS``), are refused by the checks done once at start-up
(``gateway/rulechecks.py``, capture patterns in ``gateway/rulecapture.py``) and again where
values are extracted (``addons/extract.py``). The JWT verification keys are loaded by
``gateway/rulekeys.py``.
"""

from __future__ import annotations

import re

import msgspec


class _Rule(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class Source(_Rule, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Where a rule reads a value: exactly one of the ``SOURCE_KINDS`` keys (the JWT ones take
    the options after them), and optionally a ``capture``. Names containing pass, secret, token
    or card are never read."""

    form: str = ""
    """A field of the request body (urlencoded or multipart)."""
    request_json: str = ""
    """A JSON pointer (RFC 6901) into the request body, e.g. ``/user/email``."""
    response_json: str = ""
    """A JSON pointer into the response body (gzip/deflate are decoded)."""
    header: str = ""
    """A response header (never ``Authorization``, ``Cookie``, ``Set-Cookie``…: ``CREDENTIAL_HEADERS``)."""
    query: str = ""
    """A query parameter of the request."""
    location_query: str = ""
    """A query parameter of the response's ``Location`` (``303 /thank-you?order=…``)."""
    request_header: str = ""
    """A request header (repeats joined with ", "; never a ``CREDENTIAL_HEADERS`` one)."""
    path: bool = False
    """The request's path as sent (still percent-encoded, as the rule's ``path`` sees it)."""
    cookie: str = ""
    """A cookie: the one the response sets (not a deletion), else the one the request sends; a
    name ending in ``*`` is a prefix (the first such cookie). Kept only through a ``capture``."""
    set_cookie: str = ""
    """A cookie the response sets (not a deletion), as ``cookie``: "did the answer set it"."""
    response_text: bool = False
    """The response body as text (the charset its ``Content-Type`` names, UTF-8 when none)."""
    capture: str = ""
    """Any source: a regular expression with one group, searched in the value as text; the
    group's text is the value (percent-escapes decoded for ``path``, ``cookie``, ``set_cookie``),
    no match is no value."""
    jwt_cookie: str = ""
    """A cookie holding a JWT: set by the response, else sent with the request."""
    jwt_authorization: bool = False
    """The JWT in the request's ``Authorization: Bearer`` header."""
    claim: str = "sub"
    """JWT only: the claim read."""
    algorithm: str = ""
    """JWT only: HS256/384/512, RS256/384/512 or ES256/384/512; required with ``key``."""
    key: str = ""
    """JWT only: the HMAC secret as ``env:NAME``, or a public key (or an X.509 certificate) as
    a PEM file path or ``env:NAME``, or a key set file (JSON: a JWKS, or Google's map of key
    IDs to certificates) whose token's ``kid`` picks the key, re-read when it changes."""
    verify: bool = True
    """JWT only: false reads an unverified token (allowed only without ``key``)."""


class Condition(Source, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One entry of a rule's ``when``: a value read as a source is, and must be, present; with
    ``equals`` it must be that text, with ``matches`` match that regular expression (whole);
    with ``absent``, it must not be there."""

    equals: str | None = None
    """The text the value must be (a number or ``true``/``false`` read from JSON as written)."""
    matches: str | None = None
    """A regular expression the whole value must match (``re.fullmatch``)."""
    absent: bool = False
    """The other way round: holds when the source has no value (missing, JSON ``null``, or a
    ``capture`` that found nothing)."""


SOURCE_KINDS = (
    "form",
    "request_json",
    "response_json",
    "header",
    "query",
    "location_query",
    "request_header",
    "path",
    "cookie",
    "set_cookie",
    "response_text",
    "jwt_cookie",
    "jwt_authorization",
)
JWT_ALGORITHMS = ("HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512")
_FORBIDDEN = ("pass", "pwd", "secret", "token", "card")
FORBIDDEN_NAME = re.compile("|".join(_FORBIDDEN), re.IGNORECASE)
"""Fields whose name matches are never extracted, whatever a rule says (``pwd``: WordPress's
password field)."""
FORBIDDEN_WORDS = ", ".join(_FORBIDDEN[:-1]) + " or " + _FORBIDDEN[-1]
"""The words ``FORBIDDEN_NAME`` looks for, as a config problem lists them."""
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
"""Headers a ``header`` or ``request_header`` source never reads (any case): a bearer token
(devise-jwt answers a sign-in with one in ``Authorization``), a session cookie.
``jwt_authorization`` and ``jwt_cookie`` read a claim of such a token, never the token."""
_ADDRESS_WORDS = (
    r"forwarded|client-ip|real-ip|connecting-ip"
    r"|(?:^|[-_])ip(?:$|[-_])|clientip|socketip|remote[-_]?addr|external[-_]address|viewer[-_]address"
)
ADDRESS_HEADER = re.compile(_ADDRESS_WORDS, re.IGNORECASE)
"""Header names that carry the client's address (``X-Forwarded-For``, ``X-Real-IP``…): never
kept from a request, nor from a site's answer that echoes one."""
KEPT_HEADER_REFUSED = re.compile(
    r"auth|key|session|cookie|csrf|xsrf|nonce|signature|jwt|bearer|user-agent|sec-ch-ua|" + _ADDRESS_WORDS,
    re.IGNORECASE,
)
"""Request headers whose value is never kept (a user ID, an order ID…) whatever their other
words: a credential (``X-Api-Key``, ``X-Session-Id``, ``X-WP-Nonce``, ``X-Hub-Signature``), or
the client's address or user agent, which the store never holds raw (``X-Forwarded-For``,
``X-Real-IP``, ``CF-Connecting-IP``, ``User-Agent``; ``IP`` as a word of the name,
``X-Originating-IP``, ``X-Appengine-User-IP``; Azure Front Door's ``X-Azure-ClientIP`` and
``X-Azure-SocketIP``, ``Remote-Addr``, Envoy's ``X-Envoy-External-Address``, CloudFront's
``CloudFront-Viewer-Address``; the user agent's client hints, ``Sec-CH-UA…``)."""
COOKIE_KINDS = ("cookie", "set_cookie")
_WHOLE_COOKIE = (
    "a cookie's whole value may be a session credential (Django's sessionid, WordPress's "
    "name|expiry|token|hmac) and is never kept"
)
KEPT_ONLY_CAPTURED = {
    "cookie": _WHOLE_COOKIE,
    "set_cookie": _WHOLE_COOKIE,
    "response_text": "a whole answer is no value",
    "path": "a whole path is no value, and may hold a token (/verify-email/<token>/)",
}
"""Sources whose value is kept (a user ID, a value, a currency, an order ID) only through a
``capture``, and why; a ``when`` condition may test them whole."""


def source_kind(source: Source) -> tuple[str, str]:
    """(kind, name) of the one source key set; ("", "") when none is."""
    for kind in SOURCE_KINDS:
        value = getattr(source, kind)
        if value:
            return kind, ("authorization" if kind == "jwt_authorization" else "") if value is True else value
    return "", ""


class IdentityRule(_Rule, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[[identity.rules]]``: a request whose success binds the visitor to a user."""

    name: str
    """Names the rule in bindings and metrics."""
    method: str = "POST"
    """HTTP method matched."""
    path: str
    """Regular expression matched against the whole path (``re.fullmatch``)."""
    host: str = ""
    """Host matched (case-insensitive, port ignored); empty: any."""
    status: tuple[int, ...]
    """Response statuses that mean success, e.g. ``[302, 303]`` or ``[200, 201]``."""
    user_id: Source
    """Where the user ID is read."""
    lowercase: bool = False
    """Lower-case the user ID read (an e-mail address typed with capitals is the same user)."""
    when: tuple[Condition, ...] = ()
    """Further conditions, all of which must hold (e.g. a GraphQL ``operationName``)."""
    max_body: int = 65536
    """Most bytes of a body read for this rule; a larger body is forwarded but not read."""


class ConversionRule(_Rule, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[[conversions]]``: a request whose success is a goal reached."""

    name: str
    """The conversion's name (e.g. ``purchase``)."""
    method: str = "POST"
    """HTTP method matched."""
    path: str
    """Regular expression matched against the whole path."""
    host: str = ""
    """Host matched; empty: any."""
    status: tuple[int, ...]
    """Response statuses that mean success."""
    value: float | Source | None = None
    """A fixed value, or where it is read; none: no value."""
    value_scale: float = 1.0
    """Multiplies a value read from a source (``0.01`` for amounts in cents)."""
    decimal_separator: str = "."
    """How a value read as text writes its decimals: ``"."`` (``1,299.00``) or ``","``
    (``1.299,00``); groups of thousands are read either way."""
    currency: str | Source | None = None
    """A fixed ISO 4217 code (``"EUR"``), or where it is read."""
    order_id: Source | None = None
    """Where the order ID is read: the same order counts once (``order:<id>``)."""
    order_scope: str = ""
    """The namespace of this rule's order IDs (``order/<scope>:<id>``): empty, one namespace
    with every rule and sender; a name, only with those given the same one."""
    dedup_window: int = 600
    """Seconds: without an order ID, one conversion per visitor and rule per window."""
    when: tuple[Condition, ...] = ()
    """Further conditions, all of which must hold (e.g. the order ID is in the answer)."""
    max_body: int = 65536
    """Most bytes of a body read for this rule."""
