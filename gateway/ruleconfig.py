"""Identity and conversion rules as configured: ``[[identity.rules]]`` and ``[[conversions]]``.

Owns the rule option structs (a match, success statuses, ``when`` conditions,
value sources), the checks done once at start-up — each problem naming its TOML key, e.g.
``identity.rules[1].path: not a valid regular expression (…): …`` — and the
loading of JWT verification keys (from the environment, a PEM or a key set file). Fields
named like a credential (``FORBIDDEN_NAME``), and headers that carry one
(``CREDENTIAL_HEADERS``), are refused here and again where values are extracted
(``addons/rules.py``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

try:  # the parser re itself uses (no stub); private, so a Python that moves it skips the checks
    import re._constants as _regex_constants  # type: ignore[import-not-found]
    import re._parser as _regex_parser  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - every Python from 3.11 to 3.13 has them
    _regex_constants = _regex_parser = None

from gateway.config_values import (
    comparison_problems,
    cookie_name_problem,
    host_problem,
    not_utf8,
    path_problem,
    regex_problem,
    special_file,
    text_problem,
    unset,
)
from gateway.events import MAX_VALUE, order_scope_problem


class _Rule(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


def _check(problems: list[str], ok: bool, key: str, message: str) -> None:
    if not ok:
        problems.append(f"{key}: {message}")


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
FORBIDDEN_NAME = re.compile(r"pass|secret|token|card", re.IGNORECASE)
"""Fields whose name matches are never extracted, whatever a rule says."""
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
"""Headers a ``header`` or ``request_header`` source never reads (any case): a bearer token
(devise-jwt answers a sign-in with one in ``Authorization``), a session cookie.
``jwt_authorization`` and ``jwt_cookie`` read a claim of such a token, never the token."""
KEPT_HEADER_REFUSED = re.compile(
    r"auth|key|session|cookie|csrf|xsrf|nonce|signature|jwt|bearer"
    r"|user-agent|forwarded|client-ip|real-ip|connecting-ip",
    re.IGNORECASE,
)
"""Request headers whose value is never kept (a user ID, an order ID…) whatever their other
words: a credential (``X-Api-Key``, ``X-Session-Id``, ``X-WP-Nonce``, ``X-Hub-Signature``), or
the client's address or user agent, which the store never holds raw (``X-Forwarded-For``,
``X-Real-IP``, ``CF-Connecting-IP``, ``User-Agent``)."""
COOKIE_KINDS = ("cookie", "set_cookie")
_WHOLE_COOKIE = (
    "a cookie's whole value may be a session credential (Django's sessionid, WordPress's "
    "name|expiry|token|hmac) and is never kept"
)
KEPT_ONLY_CAPTURED = {
    "cookie": _WHOLE_COOKIE,
    "set_cookie": _WHOLE_COOKIE,
    "response_text": "a whole answer is no value",
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


_METHOD = re.compile(r"[A-Z]+")
_CURRENCY = re.compile(r"[A-Z]{3}")


def validate_rules(
    p: list[str],
    key: str,
    rules: tuple[IdentityRule, ...] | tuple[ConversionRule, ...],
    addon: str,
    addons: tuple[str, ...],
) -> None:
    """Match, statuses, sources and the addon that runs them: each problem names its key."""
    if not rules:
        return
    if addon not in addons:
        p.append(f'{key}: rules are configured but "{addon}" is not in proxy.addons')
    elif "identity" not in addons or addons.index("identity") > addons.index(addon):
        p.append(f'proxy.addons: "{addon}" needs "identity" before it (rules bind a visitor)')
    names: set[str] = set()
    entries: Sequence[IdentityRule | ConversionRule] = rules
    for i, rule in enumerate(entries):
        at = f"{key}[{i}]"
        # A conversion's name is stored with each conversion, and the reports' ``conversion``
        # takes none with spaces around it (a webhook's name arrives trimmed).
        bad_name = text_problem(rule.name, stripped=isinstance(rule, ConversionRule))
        if bad_name:
            p.append(f"{at}.name: {bad_name}")
        _check(p, rule.name not in names, f"{at}.name", f"{rule.name!r} is used by another rule")
        names.add(rule.name)
        _check(
            p, bool(_METHOD.fullmatch(rule.method)), f"{at}.method", f"not an HTTP method: {rule.method!r}"
        )
        # Compiled as addons/rules.py compiles it; matched against the whole path, which is
        # never empty: an empty pattern would never fire.
        bad_path = regex_problem(rule.path) or (
            None if rule.path else 'must not be empty (matched against the whole path, like "/login")'
        )
        if bad_path:
            p.append(f"{at}.path: {bad_path}")
        # Compared with the request's Host without its port, lower-cased: a URL never matches.
        bad_host = rule.host and host_problem(rule.host, example="shop.example.com", ip=True)
        if bad_host:
            p.append(f"{at}.host: {bad_host}")
        _check(p, bool(rule.status), f"{at}.status", "must list at least one status")
        for j, status in enumerate(rule.status):
            _check(p, 100 <= status <= 599, f"{at}.status[{j}]", f"must be 100..599, got {status}")
        _check(
            p,
            0 < rule.max_body <= 16 * 1024 * 1024,
            f"{at}.max_body",
            f"must be 1..16777216, got {rule.max_body}",
        )
        for k, condition in enumerate(rule.when):
            _validate_condition(p, f"{at}.when[{k}]", condition)
        if isinstance(rule, IdentityRule):
            _validate_source(p, f"{at}.user_id", rule.user_id)
            continue
        _check(
            p,
            math.isfinite(rule.value_scale) and rule.value_scale > 0,
            f"{at}.value_scale",
            f"must be a positive number, got {rule.value_scale}",
        )
        _check(
            p,
            rule.value_scale == 1 or isinstance(rule.value, Source),
            f"{at}.value_scale",
            "applies only to a value read from a source (value = { response_json = … })",
        )
        _check(
            p,
            rule.decimal_separator in (".", ","),
            f"{at}.decimal_separator",
            f'must be "." or ",", got {rule.decimal_separator!r}',
        )
        _check(
            p,
            rule.decimal_separator == "." or isinstance(rule.value, Source),
            f"{at}.decimal_separator",
            "applies only to a value read from a source (value = { response_text = …, capture = … })",
        )
        if isinstance(rule.value, Source):
            _validate_source(p, f"{at}.value", rule.value)
        elif rule.value is not None:
            _check(
                p,
                0 <= rule.value <= MAX_VALUE,
                f"{at}.value",
                f"must be a number from 0 to {MAX_VALUE:.0e}, got {rule.value}",
            )
        if isinstance(rule.currency, Source):
            _validate_source(p, f"{at}.currency", rule.currency)
        elif rule.currency is not None:
            _check(
                p,
                bool(_CURRENCY.fullmatch(rule.currency)),
                f"{at}.currency",
                f'must be a 3-letter ISO 4217 code like "EUR", got {rule.currency!r}',
            )
        if rule.order_id is not None:
            _validate_source(p, f"{at}.order_id", rule.order_id)
        if (problem := order_scope_problem(rule.order_scope)) is not None:
            p.append(f"{at}.order_scope: {problem}")
        _check(
            p,
            not rule.order_scope or rule.order_id is not None,
            f"{at}.order_scope",
            "applies to an order_id; this rule reads none",
        )
        _check(
            p,
            1 <= rule.dedup_window <= 86400,
            f"{at}.dedup_window",
            f"must be 1..86400 seconds, got {rule.dedup_window}",
        )


def _validate_condition(p: list[str], key: str, condition: Condition) -> None:
    _validate_source(p, key, condition, kept=False)
    p += comparison_problems(key, condition.equals, condition.matches, condition.absent)


def _validate_source(p: list[str], key: str, source: Source, kept: bool = True) -> None:
    """``kept``: the value read is stored (a user ID, an order ID…), not only tested (``when``)."""
    kinds = [kind for kind in SOURCE_KINDS if getattr(source, kind)]
    if len(kinds) != 1:
        found = f"got {', '.join(kinds)}" if kinds else "got none"
        p.append(f"{key}: set exactly one of {', '.join(SOURCE_KINDS)} ({found})")
        return
    kind, name = source_kind(source)
    is_jwt = kind.startswith("jwt_")
    # The JWT's container (a cookie named access_token, the Authorization header) is not the
    # field extracted; its claim is.
    read = source.claim if is_jwt else name
    parts = read.split("/") if kind.endswith("_json") else [read]
    bad = [part for part in parts if FORBIDDEN_NAME.search(part)]
    _check(
        p,
        not bad,
        f"{key}.{'claim' if is_jwt else kind}",
        f"{read!r} may hold a credential (its name contains pass, secret, token or card) "
        "and is never extracted",
    )
    _check(
        p,
        kind not in ("header", "request_header") or name.lower() not in CREDENTIAL_HEADERS,
        f"{key}.{kind}",
        f"{name!r} carries credentials (a bearer token, a session cookie) and is never read; "
        "jwt_authorization and jwt_cookie read a claim of a JWT there, cookie and set_cookie "
        "a cookie",
    )
    if kind in COOKIE_KINDS:
        prefix = name.removesuffix("*")
        bad_name = cookie_name_problem(prefix) if prefix else "a name, or a prefix before *, is needed"
        if bad_name:
            p.append(f"{key}.{kind}: {bad_name}")
    _check(
        p,
        not kept or kind != "request_header" or not KEPT_HEADER_REFUSED.search(name),
        f"{key}.request_header",
        f"{name!r} may carry a credential (an API key, a session, a CSRF nonce, a signature), or "
        "the client's address or user agent, and is never kept; a when may test it",
    )
    _validate_capture(p, key, source, kind, kept)
    if kind.endswith("_json"):
        _check(p, name.startswith("/"), f"{key}.{kind}", f'a JSON pointer starts with "/", got {name!r}')
    bad_cookie = kind == "jwt_cookie" and cookie_name_problem(name)
    if bad_cookie:
        p.append(f"{key}.jwt_cookie: {bad_cookie}")
    if not is_jwt:
        _check(
            p,
            (source.key, source.algorithm, source.verify, source.claim) == ("", "", True, "sub"),
            key,
            "claim, algorithm, key and verify apply only to jwt_cookie and jwt_authorization",
        )
        return
    _check(p, source.claim != "", f"{key}.claim", 'names the claim read (default "sub"), not empty')
    if source.key:
        _check(
            p,
            source.algorithm in JWT_ALGORITHMS,
            f"{key}.algorithm",
            f"must be one of {', '.join(JWT_ALGORITHMS)} when a key is given, got {source.algorithm!r}",
        )
        _check(p, source.verify, f"{key}.verify", "verify = false contradicts a configured key")
    else:
        _check(
            p,
            not source.verify,
            f"{key}.key",
            "a JWT is verified with a key; without one, say verify = false explicitly",
        )


def _validate_capture(p: list[str], key: str, source: Source, kind: str, kept: bool) -> None:
    if not source.capture:
        if kept and kind in KEPT_ONLY_CAPTURED:
            p.append(
                f"{key}.capture: required with {kind}: {KEPT_ONLY_CAPTURED[kind]}; capture the "
                "part that is the value (a regular expression with one group)"
            )
        return
    if bad := regex_problem(source.capture):
        p.append(f"{key}.capture: {bad}")
        return
    groups = re.compile(source.capture).groups
    if groups != 1:
        p.append(
            f"{key}.capture: needs exactly one capturing group, the value: got {groups} in "
            f"{source.capture!r} (write other groups (?:…))"
        )
        return
    try:
        parsed = list(_regex_parser.parse(source.capture))
        backtracks, text_outside = _backtracks(parsed), _text_outside_group(parsed)
    except RecursionError:  # hundreds of nested repeats: compiled, but deeper than we look
        p.append(f"{key}.capture: nested too deeply to be checked: {source.capture[:60]!r}…")
        return
    except (AttributeError, TypeError, ValueError, IndexError):  # re's private parser changed
        backtracks, text_outside = False, True  # not checked, rather than no start at all
    if backtracks:
        p.append(
            f"{key}.capture: {source.capture!r} repeats a repeat ((a+)+, (\\w+\\s?)*): on a text "
            "that almost matches it takes exponential time, and the gateway serves no one "
            "meanwhile; repeat once ([\\w\\s]+), or make the outer repeat possessive ((?:…)++) "
            "or the inner one atomic ((?>…))"
        )
    if not kept:
        return  # a when's capture is only tested: "(access_token)" in an answer tells a sign-in
    if FORBIDDEN_NAME.search(source.capture):
        p.append(
            f"{key}.capture: {source.capture!r} names a credential (pass, secret, token or card): "
            "what follows such a name is never kept"
        )
    elif kind in KEPT_ONLY_CAPTURED and not text_outside:
        p.append(
            f"{key}.capture: {source.capture!r} is its group alone and keeps the whole value "
            f"({KEPT_ONLY_CAPTURED[kind]}): write the text around the part that is the value "
            "(^(.+?)%7C)"
        )


_REPEATS = (_regex_constants.MAX_REPEAT, _regex_constants.MIN_REPEAT) if _regex_constants else ()


def _children(op: object, av: Any) -> list[tuple[list[Any], bool]]:
    """The sub-patterns of one parsed node, each with whether a repeat around it may
    backtrack into it (not inside a possessive repeat or an atomic group)."""
    c = _regex_constants
    if op in _REPEATS:
        return [(list(av[2]), True)]
    if op in (c.POSSESSIVE_REPEAT, c.ATOMIC_GROUP):
        return [(list(av[2] if op is c.POSSESSIVE_REPEAT else av), False)]
    if op is c.SUBPATTERN:
        return [(list(av[3]), True)]
    if op is c.BRANCH:
        return [(list(branch), True) for branch in av[1]]
    if op in (c.ASSERT, c.ASSERT_NOT):
        return [(list(av[1]), True)]
    if op is c.GROUPREF_EXISTS:
        return [(list(branch), True) for branch in av[1:] if branch is not None]
    return []


def _backtracks(items: list[Any], repeated: bool = False) -> bool:
    """Whether a repeat that may run more than once holds a repeat of varying count (``(a+)+``,
    ``(\\w+\\s?)*``, ``(.*,){5}``): the text it fails on is split every possible way, in
    exponential (or high polynomial) time, on the event loop."""
    for op, av in items:
        if op in _REPEATS and repeated and av[0] != av[1]:
            return True
        inner = repeated or (op in _REPEATS and av[1] > 1)
        if any(_backtracks(sub, inner and follows) for sub, follows in _children(op, av)):
            return True
    return False


def _text_outside_group(items: list[Any]) -> bool:
    """Whether the pattern has literal text outside its capturing group (``^(.+?)%7C``: the
    ``%7C``), what tells the part kept from the rest; ``(.+)`` or ``^(.*)$`` has none."""
    for op, av in items:
        if op is _regex_constants.LITERAL:
            return True
        if op is _regex_constants.SUBPATTERN and av[0] == 1:
            continue
        if any(_text_outside_group(sub) for sub, _ in _children(op, av)):
            return True
    return False


def rule_sources(
    identity_rules: Sequence[IdentityRule], conversions: Sequence[ConversionRule]
) -> list[tuple[str, Source]]:
    """Every source of every rule, with its TOML key (``identity.rules[0].user_id``)."""
    found: list[tuple[str, Source]] = []
    for i, identity in enumerate(identity_rules):
        found.append((f"identity.rules[{i}].user_id", identity.user_id))
        found.extend((f"identity.rules[{i}].when[{k}]", c) for k, c in enumerate(identity.when))
    for i, rule in enumerate(conversions):
        for name in ("value", "currency", "order_id"):
            value = getattr(rule, name)
            if isinstance(value, Source):
                found.append((f"conversions[{i}].{name}", value))
        found.extend((f"conversions[{i}].when[{k}]", c) for k, c in enumerate(rule.when))
    return found


def resolve_rule_keys(
    sources: Sequence[tuple[str, Source]], environ: Mapping[str, str], base_dir: Path, problems: list[str]
) -> dict[str, bytes]:
    """Each JWT source's key: an HMAC secret from the environment, or a PEM public key or a
    key set (from the environment or a file), checked against its algorithm now rather than
    per request."""
    from addons.jwks import parse_key_set  # the keys the rules use (addons import this module)

    keys: dict[str, bytes] = {}
    for at, source in sources:
        if not source.key or source.algorithm not in JWT_ALGORITHMS:
            continue
        key = f"{at}.key"
        raw: bytes
        if source.key.startswith("env:"):
            value = environ.get(source.key[4:], "")
            if bad := not_utf8(source.key[4:], value):
                problems.append(f"{key}: {bad}")
                continue
            if not value:
                problems.append(f"{key}: {unset(source.key[4:], environ)}")
                continue
            raw = value.encode()
        elif source.algorithm.startswith("HS"):
            problems.append(f'{key}: an HMAC secret is never written in the file; use "env:NAME"')
            continue
        elif bad := path_problem(source.key):
            problems.append(f"{key}: {bad}")
            continue
        else:
            path = Path(source.key)
            path = path if path.is_absolute() else base_dir / path
            if what := special_file(path):
                problems.append(f"{key}: {source.key} is {what}, not a file; name the PEM or key set file")
                continue
            try:
                raw = path.read_bytes()
            except OSError as err:
                problems.append(f"{key}: cannot read {source.key}: {err.strerror}")
                continue
        try:
            parse_key_set(source.algorithm, raw)  # a PEM or key set for the algorithm, parsed now
        except ValueError as err:
            problems.append(f"{key}: {err}")
            continue
        keys[at] = raw
    return keys
