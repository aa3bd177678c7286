"""The checks done once at start-up on identity and conversion rules (``gateway/ruleconfig.py``).

Owns ``validate_rules``: a rule's match, statuses, body limit, ``when`` conditions and value
sources, and the addon that runs the rules; each problem names its TOML key, e.g.
``identity.rules[1].path: not a valid regular expression (…): …``. A ``capture`` pattern is
checked by ``gateway/rulecapture.py``. Reads nothing but the options.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from urllib.parse import quote

from gateway.config_values import (
    comparison_problems,
    cookie_name_problem,
    header_name_problem,
    host_problem,
    json_pointer_problem,
    regex_problem,
    text_problem,
)
from gateway.events import MAX_VALUE, order_scope_problem
from gateway.rulecapture import validate_capture
from gateway.ruleconfig import (
    ADDRESS_HEADER,
    COOKIE_KINDS,
    CREDENTIAL_HEADERS,
    FORBIDDEN_NAME,
    FORBIDDEN_WORDS,
    JWT_ALGORITHMS,
    KEPT_HEADER_REFUSED,
    SOURCE_KINDS,
    Condition,
    ConversionRule,
    IdentityRule,
    Source,
    source_kind,
)


def _check(problems: list[str], ok: bool, key: str, message: str) -> None:
    if not ok:
        problems.append(f"{key}: {message}")


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
    names: dict[str, int] = {}
    entries: Sequence[IdentityRule | ConversionRule] = rules
    for i, rule in enumerate(entries):
        at = f"{key}[{i}]"
        # A conversion's name is stored with each conversion, and the reports' ``conversion``
        # takes none with spaces around it (a webhook's name arrives trimmed).
        bad_name = text_problem(rule.name, stripped=isinstance(rule, ConversionRule))
        if bad_name:
            p.append(f"{at}.name: {bad_name}")
        if rule.name in names:
            kept = "bindings" if isinstance(rule, IdentityRule) else "conversions"
            p.append(
                f"{at}.name: {rule.name!r} is also the name of {key}[{names[rule.name]}]; give each rule"
                f" its own (it names the rule's {kept} and metrics)"
            )
        names.setdefault(rule.name, i)
        if _METHOD.fullmatch(rule.method.upper()) and not _METHOD.fullmatch(rule.method):
            # Matched exactly as requests send it: "post" is no typo of a method but never matches.
            p.append(f'{at}.method: written in capitals, as requests send it: "{rule.method.upper()}"')
        elif not _METHOD.fullmatch(rule.method):
            p.append(f"{at}.method: not an HTTP method: {rule.method!r}")
        # Compiled as addons/rules.py compiles it; matched against the whole path, which is
        # never empty: an empty pattern would never fire.
        bad_path = (
            regex_problem(rule.path)
            or (None if rule.path else 'must not be empty (matched against the whole path, like "/login")')
            or unsent_path(rule.path)
            or unmatched_path(rule.path)
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
            _validate_condition(p, f"{at}.when[{k}]", condition, rule)
        if isinstance(rule, IdentityRule):
            _validate_source(p, f"{at}.user_id", rule.user_id, rule)
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
            _validate_source(p, f"{at}.value", rule.value, rule)
        elif rule.value is not None:
            _check(
                p,
                0 <= rule.value <= MAX_VALUE,
                f"{at}.value",
                f"must be a number from 0 to {MAX_VALUE:.0e}, got {rule.value}",
            )
        if isinstance(rule.currency, Source):
            _validate_source(p, f"{at}.currency", rule.currency, rule)
        elif rule.currency is not None and _CURRENCY.fullmatch(rule.currency.upper()):
            # A fixed currency is recorded as written, one read from the request upper-cased.
            if not rule.currency.isupper():
                said = f'as a currency read from the request is recorded: write "{rule.currency.upper()}"'
                p.append(f"{at}.currency: written in capitals, {said}")
        elif rule.currency is not None:
            p.append(f'{at}.currency: must be a 3-letter ISO 4217 code like "EUR", got {rule.currency!r}')
        if rule.order_id is not None:
            _validate_source(p, f"{at}.order_id", rule.order_id, rule)
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


def id_cookie_problems(
    key: str, rules: tuple[IdentityRule, ...] | tuple[ConversionRule, ...], id_cookie: str
) -> list[str]:
    """A kept value (user ID, value, currency, order ID) read from the gateway's own ID cookie
    (``identity.cookie_name``, or a ``*`` prefix it starts with): the visitor's raw ID, which the
    store never holds (only its keyed hash, the visitor key). A ``when`` may test it."""
    found: list[str] = []
    entries: Sequence[IdentityRule | ConversionRule] = rules
    for i, rule in enumerate(entries):
        kept: dict[str, object] = (
            {"user_id": rule.user_id}
            if isinstance(rule, IdentityRule)
            else {"value": rule.value, "currency": rule.currency, "order_id": rule.order_id}
        )
        for field, source in kept.items():
            if not isinstance(source, Source):
                continue
            kind, name = source_kind(source)
            if kind not in COOKIE_KINDS:
                continue
            prefix = name.removesuffix("*")
            if name == id_cookie or (name.endswith("*") and prefix and id_cookie.startswith(prefix)):
                how = "is" if name == id_cookie else "matches"
                found.append(
                    f"{key}[{i}].{field}.{kind}: {name!r} {how} identity.cookie_name ({id_cookie!r}),"
                    " the visitor's ID cookie: its raw ID is never kept (the store holds only its"
                    " keyed hash, the visitor key); read the site's own cookie, or test it in a when"
                )
    return found


def _validate_condition(
    p: list[str], key: str, condition: Condition, rule: IdentityRule | ConversionRule
) -> None:
    _validate_source(p, key, condition, rule, kept=False)
    p += comparison_problems(key, condition.equals, condition.matches, condition.absent)


BODILESS = ("GET", "HEAD")
"""Methods a browser sends no body with (``fetch`` refuses one): a rule on one has no form or
request JSON to read."""

BODILESS_STATUSES = frozenset({204, 304, *range(100, 200)})
"""Statuses whose answer has no body (RFC 9110 §15.2, §15.3.5, §15.4.5)."""


def no_answer_body(rule: IdentityRule | ConversionRule) -> str | None:
    """Why the rule's answers have no body for ``response_json`` or ``response_text`` to read
    (a HEAD's, or every status of ``status`` one without), or None when they may have one."""
    if rule.method == "HEAD":
        return 'the answer to a HEAD request has no body (method = "HEAD")'
    if rule.status and all(status in BODILESS_STATUSES for status in rule.status):
        said = " or ".join(dict.fromkeys(str(status) for status in rule.status))
        return f"an answer of status {said} has no body (status = {list(rule.status)})"
    return None


def _validate_source(
    p: list[str], key: str, source: Source, rule: IdentityRule | ConversionRule, kept: bool = True
) -> None:
    """``kept``: the value read is stored (a user ID, an order ID…), not only tested (``when``);
    ``rule``: the rule it is read for (its method and statuses)."""
    method = rule.method
    kinds = [kind for kind in SOURCE_KINDS if getattr(source, kind)]
    if len(kinds) != 1:
        # An empty name (`header = ""`, `response_json = ""`) or `false` sets none: said so, as
        # "got none" alone sent the operator who wrote one looking for a source they had given.
        found = f"got {', '.join(kinds)}" if kinds else 'got none; an empty name, "", or false sets none'
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
        f"{read!r} may hold a credential (its name contains {FORBIDDEN_WORDS}) and is never extracted",
    )
    if kind in ("form", "request_json") and method in BODILESS:
        # Until 2026-12-07 accepted: the rule counted not_a_form (or missing) and never fired.
        field = name if kind == "form" else "name"
        p.append(
            f'{key}.{kind}: a {method} request sends no body (method = "{method}"): read the query'
            f' (query = "{field}") or the answer (response_json = "/pointer")'
        )
    if kind in ("response_json", "response_text") and (bodiless := no_answer_body(rule)):
        # Until 2026-12-08 accepted: the rule counted not_json at each request and never fired.
        instead = 'read a header of the answer instead (header = "Name")'
        if method == "HEAD":
            instead += ', or match the GET (method = "GET")'
        p.append(f"{key}.{kind}: {bodiless}, so this never has a value: {instead}")
    if kind in ("header", "request_header") and (bad_header := header_name_problem(name)):
        p.append(f"{key}.{kind}: {bad_header}")
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
    _check(  # a site's answer echoing the client's address (a debugging X-Client-IP)
        p,
        not kept or kind != "header" or not ADDRESS_HEADER.search(name),
        f"{key}.header",
        f"{name!r} may carry the client's address, which the store never holds raw, and is never kept;"
        " a when may test it",
    )
    validate_capture(p, key, source, kind, kept)
    if kind.endswith("_json") and (bad_pointer := json_pointer_problem(name)):
        p.append(f"{key}.{kind}: {bad_pointer}")
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
        _check(
            p,
            not source.algorithm or source.verify,
            f"{key}.algorithm",
            "applies only with a key: under verify = false every token is read, whatever its alg",
        )


_CLASS = re.compile(r"\[\^?\]?(?:\\.|[^\]\\])*\]")
"""A character class of a pattern (``[^ ]``): what it holds need not be in the path."""


def unsent_path(pattern: str) -> str | None:
    """Why a rule's ``path`` pattern cannot match a path as sent (None: it can): that path is
    percent-encoded, so a space, a control character or a letter beyond ASCII written as
    itself (outside a character class) is never in it (``/café/`` arrives as ``/caf%C3%A9/``);
    the fix is the encoded form."""
    parts, at = [], 0
    for found in _CLASS.finditer(pattern):
        parts += [(pattern[at : found.start()], True), (found.group(), False)]
        at = found.end()
    parts.append((pattern[at:], True))
    unsent = [c for text, literal in parts if literal for c in text if not "!" <= c <= "~"]
    if not unsent:
        return None
    fixed = "".join(
        "".join(c if "!" <= c <= "~" else quote(c, safe="") for c in text) if literal else text
        for text, literal in parts
    )
    return (
        f"{unsent[0]!r} never arrives as written: a path is sent percent-encoded"
        f' ({unsent[0]!r} as {quote(unsent[0], safe="")}); write "{fixed}"'
    )


_URL = re.compile(r"\^?https?://([^/]*)(/.*)?", re.IGNORECASE)
_FIRST = re.compile(r"\^?([A-Za-z0-9%_~-])(?![?*{])")
"""A pattern starting with a literal character other than "/", not made optional."""
_QUERY = re.compile(r"\\\?|(?<![\\(*+?}])\?(?=[A-Za-z_][\w.-]*=)")
r"""Where a query seems written in a pattern: a ``\?`` (a literal "?"), or a "?" after a
literal and before ``name=`` (``/checkout/?wc-ajax=checkout``); not a regex's own ``?``
(optional, lazy, a group's flag or name)."""
_FRAGMENT = re.compile(r"\\?#")
_PARAM = re.compile(r"([A-Za-z_][\w.-]*)(?:=(.*?))?(?:&.*)?")
_PLAIN = re.compile(r"(?:[\w-]|\\\.)+")
"""A query value written as plain text (a "." escaped): tested with equals."""


def _literal_spans(pattern: str) -> list[tuple[int, int]]:
    """Where ``pattern`` is outside its character classes (``[…]``)."""
    spans, at = [], 0
    for found in _CLASS.finditer(pattern):
        spans.append((at, found.start()))
        at = found.end()
    spans.append((at, len(pattern)))
    return spans


def _first_outside_classes(pattern: str, what: re.Pattern[str]) -> re.Match[str] | None:
    for start, end in _literal_spans(pattern):
        found = what.search(pattern, start, end)
        if found is not None:
            return found
    return None


def unmatched_path(pattern: str) -> str | None:
    """Why a rule's ``path`` pattern can match no request's path (None: it may): that path
    starts with "/" and holds no scheme, host, query or fragment. Said with what to write: the
    path, a ``host``, a ``when`` on the query."""
    url = _URL.fullmatch(pattern)
    if url is not None:
        host = url.group(1).replace("\\", "").rpartition("@")[2].split(":")[0]
        return (
            "a rule's path is matched against the path alone, without the scheme and host (a URL never"
            f" matches); write {_basic(url.group(2) or '/')} (and host = {_basic(host)} to match that"
            " host only)"
        )
    first = _FIRST.match(pattern)
    if first is not None and "|" not in pattern:
        fixed = "/" + pattern[first.start(1) :]
        return f'a path as sent starts with "/", which this never matches; write {_basic(fixed)}'
    query = _first_outside_classes(pattern, _QUERY)
    if query is not None:
        path = pattern[: query.start()] or "/"
        param = _PARAM.fullmatch(pattern[query.end() :])
        test = "the query in a when"
        if param is not None:
            value = param.group(2) or ""
            equals = f", equals = {_basic(value.replace(chr(92), ''))}" if _PLAIN.fullmatch(value) else ""
            test += f": when = [{{ query = {_basic(param.group(1))}{equals} }}]"
        return (
            "the query (after '?') is not part of the path a rule matches, so this never fires; write"
            f" path = {_basic(path)} and test {test}"
        )
    fragment = None if "(?#" in pattern or "(?x" in pattern else _first_outside_classes(pattern, _FRAGMENT)
    if fragment is not None:
        return (
            "the fragment (after '#') is never sent, so this never fires; write"
            f" {_basic(pattern[: fragment.start()] or '/')}"
        )
    return None


def _basic(text: str) -> str:
    """``text`` as a TOML basic string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
