"""Configuration: the TOML file decoded into frozen, typed option structs.

Reads one TOML file; owns the option types (one struct per table), their
defaults and help text, secret resolution (``"env:NAME"``) and every check that
can be done once at start-up. Errors name the TOML key they are about, e.g.
``proxy.connect_timeout: must be > 0, got -1``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import socket
import tomllib
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec
from yarl import URL


class ConfigError(Exception):
    """One or more configuration problems, each naming its TOML key."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class _Options(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class ProxyOptions(_Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
    listen: str = "127.0.0.1:8080"
    """Address of the public listener, ``HOST:PORT``."""
    upstream: str = ""
    """The site behind the gateway (``http://127.0.0.1:8000``). Empty: a built-in demo origin."""
    public_origin: str = ""
    """Public ``scheme://host`` of the site; empty: taken from each request."""
    preserve_host: bool = True
    """Send the visitor's ``Host`` upstream (false: the upstream's own host)."""
    trusted_proxies: tuple[str, ...] = ()
    """Peers (IPs or CIDRs) whose X-Forwarded-For/-Proto/-Host are believed."""
    strip: Literal["forward", "redirect", "off"] = "forward"
    """How tracking parameters leave the URL: forward clean, redirect to clean, or off."""
    connect_timeout: float = 5.0
    """Seconds to connect to the upstream before answering 504 (a refused connection: 502 at once)."""
    read_timeout: float = 30.0
    """Seconds of upstream silence (headers or body) before answering 504."""
    upstream_connections: int = 1024
    """Most connections open to the upstream at once (WebSockets hold one each); when all are
    busy a request waits up to ``connect_timeout``, then gets 504."""
    body_timeout: float = 30.0
    """Seconds a visitor's request body may stall before the request is answered 408."""
    max_request_body: int = 100 * 1024 * 1024
    """Largest request body in bytes forwarded; larger ones get 413."""
    max_websocket_message: int = 4 * 1024 * 1024
    """Largest WebSocket message relayed, in bytes, either way; a larger one closes the socket (1009)."""
    max_header_size: int = 8190
    """Largest request line or header field in bytes; larger gets 400/431."""
    reserved_prefix: str = "/_gw/"
    """Path prefix the gateway answers itself and never forwards."""
    addons: tuple[str, ...] = ("identity", "campaign", "stitching", "conversions")
    """The pipeline: addon names in the order they run."""
    access_log: bool = False
    """Log one line per request (method, path without query, status, size, time; no client address)."""


class Source(_Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Where a rule reads a value: exactly one of the first eight keys (the JWT ones take the
    options after them). Names containing pass, secret, token or card are never read."""

    form: str = ""
    """A field of the request body (urlencoded or multipart)."""
    request_json: str = ""
    """A JSON pointer (RFC 6901) into the request body, e.g. ``/user/email``."""
    response_json: str = ""
    """A JSON pointer into the response body (gzip/deflate are decoded)."""
    header: str = ""
    """A response header."""
    query: str = ""
    """A query parameter of the request."""
    location_query: str = ""
    """A query parameter of the response's ``Location`` (``303 /thank-you?order=…``)."""
    jwt_cookie: str = ""
    """A cookie holding a JWT: set by the response, else sent with the request."""
    jwt_authorization: bool = False
    """The JWT in the request's ``Authorization: Bearer`` header."""
    claim: str = "sub"
    """JWT only: the claim read."""
    algorithm: str = ""
    """JWT only: HS256/384/512, RS256/384/512 or ES256/384/512; required with ``key``."""
    key: str = ""
    """JWT only: the HMAC secret as ``env:NAME``, or a public key as a PEM file path or ``env:NAME``."""
    verify: bool = True
    """JWT only: false reads an unverified token (allowed only without ``key``)."""


SOURCE_KINDS = (
    "form",
    "request_json",
    "response_json",
    "header",
    "query",
    "location_query",
    "jwt_cookie",
    "jwt_authorization",
)
JWT_ALGORITHMS = ("HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512")
FORBIDDEN_NAME = re.compile(r"pass|secret|token|card", re.IGNORECASE)
"""Fields whose name matches are never extracted, whatever a rule says."""


def source_kind(source: Source) -> tuple[str, str]:
    """(kind, name) of the one source key set; ("", "") when none is."""
    for kind in SOURCE_KINDS:
        value = getattr(source, kind)
        if value:
            return kind, "authorization" if value is True else value
    return "", ""


class IdentityRule(_Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
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
    max_body: int = 65536
    """Most bytes of a body read for this rule; a larger body is forwarded but not read."""


class ConversionRule(_Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
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
    currency: str | Source | None = None
    """A fixed ISO 4217 code (``"EUR"``), or where it is read."""
    order_id: Source | None = None
    """Where the order ID is read: the same order counts once (``order:<id>``)."""
    dedup_window: int = 600
    """Seconds: without an order ID, one conversion per visitor and rule per window."""
    max_body: int = 65536
    """Most bytes of a body read for this rule."""


class IdentityOptions(_Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
    secret: str = "env:GATEWAY_SECRET"
    """Master secret (at least 32 characters); every key derives from it. Use ``env:NAME``."""
    cookie_name: str = "gw_vid"
    """Name of the first-party visitor-ID cookie."""
    max_age_days: int = 395
    """Cookie lifetime in days, refreshed on each landing."""
    secure: Literal["auto", "always", "never"] = "auto"
    """Secure flag: auto sets it when the public side is https."""
    samesite: Literal["Lax", "Strict", "None"] = "Lax"
    """SameSite attribute of the cookie."""
    domain: str = ""
    """Cookie Domain attribute; empty: host-only cookie."""
    user_id_storage: Literal["hash", "encrypt", "plain"] = "hash"
    """How the site's user IDs are kept at rest: a keyed hash, deterministic AES-SIV ciphertext
    (exports can recover them), or plain."""
    rules: tuple[IdentityRule, ...] = ()
    """``[[identity.rules]]``: requests whose success binds the visitor to a user."""


class CampaignOptions(_Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
    prefixes: tuple[str, ...] = ("c_", "utm_")
    """Campaign parameter families, in precedence order (the first listed wins a tie)."""
    click_ids: tuple[str, ...] = (
        "gclid",
        "gbraid",
        "wbraid",
        "dclid",
        "fbclid",
        "msclkid",
        "ttclid",
        "li_fat_id",
        "twclid",
        "yclid",
        "mc_cid",
    )
    """Ad click-ID parameter names, in precedence order."""
    creator_ids: tuple[str, ...] = ("creator_id",)
    """Parameters naming the influencer or affiliate."""
    sub_ids: tuple[str, ...] = ("sub_id",)
    """Parameters naming the creator's sub-placement."""
    allowed_sources: tuple[str, ...] = ()
    """If not empty, only these sources (case-folded) are kept; others are dropped and counted."""
    max_value_length: int = 200
    """Longest value kept; longer ones are dropped and counted."""
    record_referrals: bool = True
    """Record a touchpoint for a document request with an external referrer."""


class StorageOptions(_Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
    path: str = "gateway.db"
    """SQLite file, relative to the config file's folder."""
    node: str = ""
    """Name of this node in every event; empty: the host name."""
    batch_size: int = 256
    """Most events in one commit."""
    batch_wait_ms: float = 0.0
    """Extra wait for a batch to fill; 0: commit whatever queued while the last commit ran."""
    durability: Literal["commit", "async"] = "commit"
    """commit: a response waits for its events' commit; async: it does not."""
    max_wait_ms: float = 1000.0
    """Longest a response waits for its commit; past it the event counts as unconfirmed."""
    synchronous: Literal["normal", "full"] = "normal"
    """SQLite synchronous: normal survives a process crash, full also a power loss."""


class AdminOptions(_Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
    listen: str = "127.0.0.1:9090"
    """Address of the admin API listener, ``HOST:PORT``."""
    token: str = "env:GATEWAY_ADMIN_TOKEN"
    """Bearer token for /api and /metrics. Use ``env:NAME``."""


class Options(_Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
    proxy: ProxyOptions = ProxyOptions()
    identity: IdentityOptions = IdentityOptions()
    campaign: CampaignOptions = CampaignOptions()
    storage: StorageOptions = StorageOptions()
    admin: AdminOptions = AdminOptions()
    conversions: tuple[ConversionRule, ...] = ()


SECTIONS: dict[str, type[_Options]] = {
    "proxy": ProxyOptions,
    "identity": IdentityOptions,
    "campaign": CampaignOptions,
    "storage": StorageOptions,
    "admin": AdminOptions,
}

ARRAY_SECTIONS: dict[str, type[_Options]] = {"conversions": ConversionRule}
"""Top-level arrays of tables (``[[name]]``), each entry decoded into the struct named here;
``Options`` has a tuple field of the same name."""

SECRET_KEYS = ("identity.secret", "admin.token")
MIN_SECRET_LENGTH = 32
_PARAM_NAME = re.compile(r"^[A-Za-z0-9_.\-\[\]]+$")


@dataclass(frozen=True)
class Settings:
    """Options plus what was derived from them once: secrets, paths, parsed addresses."""

    options: Options
    base_dir: Path
    secret: bytes
    admin_token: str
    generated: tuple[str, ...] = ()
    trusted_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    node: str = ""
    rule_keys: Mapping[str, bytes] = field(default_factory=dict)
    """JWT verification keys of rules, by the TOML key of their source (``identity.rules[0].user_id``):
    the HMAC secret, or a public key's PEM."""

    @property
    def store_path(self) -> Path:
        path = Path(self.options.storage.path)
        return path if path.is_absolute() else self.base_dir / path


def parse_listen(value: str) -> tuple[str, int]:
    """``"127.0.0.1:8080"`` / ``"[::1]:8080"`` → (host, port); ValueError when malformed."""
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f'expected "HOST:PORT", got {value!r}')
    host = host.removeprefix("[").removesuffix("]")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"port must be 0..65535, got {port!r}")
    return host, int(port)


def _msgspec_problem(section: str, err: msgspec.ValidationError, struct: type | None = None) -> str:
    """msgspec's "Expected `int`, got `str` - at `$.x`" → "section.x: expected int, got str"."""
    struct = struct or SECTIONS[section]
    message, sep, where = str(err).rpartition(" - at `")
    if not sep:
        message, where = str(err), "$`"
    key = section + where.rstrip("`").removeprefix("$")
    unknown = re.match(r"Object contains unknown field `(.+)`", message)
    if unknown:
        owner = _struct_at(struct, key[len(section) :])
        allowed = ", ".join(owner.__struct_fields__) if owner is not None else ""
        return f"{key}.{unknown.group(1)}: unknown key" + (f" (allowed: {allowed})" if allowed else "")
    enum = re.match(r"Invalid enum value (.+)", message)
    if enum:
        path, _, name = key[len(section) :].rpartition(".")
        owner = _struct_at(struct, path)
        allowed = _literal_values(owner, name) if owner is not None else "?"
        return f"{key}: expected one of {allowed}, got {enum.group(1)}"
    message = message.replace("`", "")
    return f"{key}: {message[:1].lower()}{message[1:]}"


def _struct_at(struct: type, path: str) -> type[msgspec.Struct] | None:
    """The struct type at ``.rules[0].match`` below ``struct`` (None when it is not a struct)."""
    current: Any = struct
    for part in re.findall(r"\.([A-Za-z0-9_]+)", path):
        hint = typing.get_type_hints(current).get(part) if isinstance(current, type) else None
        if hint is None:
            return None
        args = [a for a in typing.get_args(hint) if isinstance(a, type) and issubclass(a, msgspec.Struct)]
        current = args[0] if args else hint
    return current if isinstance(current, type) and issubclass(current, msgspec.Struct) else None


def _literal_values(struct: type, name: str) -> str:
    hint = typing.get_type_hints(struct).get(name)
    return ", ".join(f'"{v}"' for v in typing.get_args(hint)) if hint is not None else "?"


def decode_options(data: Mapping[str, Any]) -> tuple[Options, list[str]]:
    """Decode each table on its own so one run reports one problem per table, not just the first."""
    problems: list[str] = []
    tables: dict[str, Any] = {}
    for name, value in data.items():
        if name in ARRAY_SECTIONS:
            tables[name] = _decode_array(name, value, problems)
            continue
        struct = SECTIONS.get(name)
        if struct is None:
            allowed = [*SECTIONS, *(f"[[{a}]]" for a in ARRAY_SECTIONS)]
            problems.append(f"{name}: unknown table (allowed: {', '.join(allowed)})")
            continue
        if not isinstance(value, dict):
            problems.append(f"{name}: must be a table, got {type(value).__name__}")
            continue
        try:
            tables[name] = msgspec.convert(value, struct)
        except msgspec.ValidationError as err:
            problems.append(_msgspec_problem(name, err))
    return Options(**tables), problems


def _decode_array(name: str, value: Any, problems: list[str]) -> tuple[_Options, ...]:
    """``[[name]]`` entries, each decoded on its own; errors read ``name[2].key: ...``."""
    if not isinstance(value, list):
        problems.append(f"{name}: must be an array of tables ([[{name}]]), got {type(value).__name__}")
        return ()
    struct = ARRAY_SECTIONS[name]
    decoded = []
    failed = False
    for i, entry in enumerate(value):
        key = f"{name}[{i}]"
        if not isinstance(entry, dict):
            problems.append(f"{key}: must be a table, got {type(entry).__name__}")
            failed = True
            continue
        try:
            decoded.append(msgspec.convert(entry, struct))
        except msgspec.ValidationError as err:
            problems.append(_msgspec_problem(key, err, struct))
            failed = True
    # Checks after decoding name entries by index: with one missing, the others' would be wrong.
    return () if failed else tuple(decoded)


def _check(problems: list[str], ok: bool, key: str, message: str) -> None:
    if not ok:
        problems.append(f"{key}: {message}")


def _check_origin(problems: list[str], key: str, value: str, example: str) -> None:
    """An http(s) origin: scheme, host, optional port; no credentials, path or query."""
    try:
        url = URL(value)
        port = url.port  # raises for a port that is not a number or out of range
    except ValueError:
        url, port = None, None
    if url is None or url.scheme not in ("http", "https") or not url.host or port is None:
        problems.append(f'{key}: must be an http(s) origin like "{example}", got {value!r}')
    elif url.user is not None or url.password is not None:
        problems.append(f"{key}: must not carry a user name or password")
    elif url.path not in ("", "/") or url.query_string or url.fragment:
        problems.append(f"{key}: must be an origin without path, query or fragment, got {value!r}")


def validate(options: Options) -> list[str]:
    """Every semantic check, collected (not stopping at the first)."""
    p: list[str] = []
    px, ident, camp, st = options.proxy, options.identity, options.campaign, options.storage
    for key, value in (("proxy.listen", px.listen), ("admin.listen", options.admin.listen)):
        try:
            parse_listen(value)
        except ValueError as err:
            p.append(f"{key}: {err}")
    if px.upstream:
        _check_origin(p, "proxy.upstream", px.upstream, "http://127.0.0.1:8000")
    if px.public_origin:
        _check_origin(p, "proxy.public_origin", px.public_origin, "https://www.example.com")
    for i, net in enumerate(px.trusted_proxies):
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            p.append(f"proxy.trusted_proxies[{i}]: not an IP address or CIDR: {net!r}")
    _check(p, px.connect_timeout > 0, "proxy.connect_timeout", f"must be > 0, got {px.connect_timeout}")
    _check(p, px.read_timeout > 0, "proxy.read_timeout", f"must be > 0, got {px.read_timeout}")
    _check(p, px.body_timeout > 0, "proxy.body_timeout", f"must be > 0, got {px.body_timeout}")
    _check(
        p,
        1 <= px.upstream_connections <= 100_000,
        "proxy.upstream_connections",
        f"must be 1..100000, got {px.upstream_connections}",
    )
    _check(
        p,
        px.max_request_body >= 0,
        "proxy.max_request_body",
        f"must be >= 0, got {px.max_request_body}",
    )
    _check(
        p,
        1024 <= px.max_websocket_message <= 1024**3,
        "proxy.max_websocket_message",
        f"must be 1024..1073741824, got {px.max_websocket_message}",
    )
    _check(
        p,
        1024 <= px.max_header_size <= 1024 * 1024,
        "proxy.max_header_size",
        f"must be 1024..1048576, got {px.max_header_size}",
    )
    _check(
        p,
        px.reserved_prefix.startswith("/")
        and px.reserved_prefix.endswith("/")
        and len(px.reserved_prefix) > 2,
        "proxy.reserved_prefix",
        f'must look like "/_gw/", got {px.reserved_prefix!r}',
    )
    from gateway.pipeline import addon_registry  # the registry lives with the pipeline

    known = addon_registry()
    for i, name in enumerate(px.addons):
        _check(
            p,
            name in known,
            f"proxy.addons[{i}]",
            f"unknown addon {name!r} (known: {', '.join(known)})",
        )
    _check(p, len(set(px.addons)) == len(px.addons), "proxy.addons", "lists an addon twice")
    if "campaign" in px.addons:
        _check(
            p,
            "identity" in px.addons and px.addons.index("identity") < px.addons.index("campaign"),
            "proxy.addons",
            '"campaign" needs "identity" before it (touchpoints belong to a visitor)',
        )
    _check(
        p,
        bool(re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", ident.cookie_name)),
        "identity.cookie_name",
        f"must be a valid cookie name, got {ident.cookie_name!r}",
    )
    _check(
        p,
        1 <= ident.max_age_days <= 3650,
        "identity.max_age_days",
        f"must be 1..3650, got {ident.max_age_days}",
    )
    _check(
        p,
        not (ident.samesite == "None" and ident.secure == "never"),
        "identity.samesite",
        'SameSite=None needs a Secure cookie: set identity.secure to "auto" or "always"',
    )
    for key, names in (
        ("campaign.prefixes", camp.prefixes),
        ("campaign.click_ids", camp.click_ids),
        ("campaign.creator_ids", camp.creator_ids),
        ("campaign.sub_ids", camp.sub_ids),
    ):
        for i, name in enumerate(names):
            _check(p, bool(_PARAM_NAME.match(name)), f"{key}[{i}]", f"not a parameter name: {name!r}")
    _check(
        p,
        1 <= camp.max_value_length <= 2000,
        "campaign.max_value_length",
        f"must be 1..2000, got {camp.max_value_length}",
    )
    _check(
        p,
        1 <= st.batch_size <= 10_000,
        "storage.batch_size",
        f"must be 1..10000, got {st.batch_size}",
    )
    _check(
        p,
        0 <= st.batch_wait_ms <= 1000,
        "storage.batch_wait_ms",
        f"must be 0..1000, got {st.batch_wait_ms}",
    )
    _check(
        p,
        0 < st.max_wait_ms <= 60_000,
        "storage.max_wait_ms",
        f"must be more than 0 and at most 60000, got {st.max_wait_ms}",
    )
    _check(p, bool(st.path), "storage.path", "must not be empty")
    _validate_rules(p, "identity.rules", ident.rules, "stitching", px.addons)
    _validate_rules(p, "conversions", options.conversions, "conversions", px.addons)
    return p


_METHOD = re.compile(r"[A-Z]+")
_CURRENCY = re.compile(r"[A-Z]{3}")


def _validate_rules(
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
        _check(p, bool(rule.name) and rule.name.isprintable(), f"{at}.name", "must not be empty")
        _check(p, rule.name not in names, f"{at}.name", f"{rule.name!r} is used by another rule")
        names.add(rule.name)
        _check(
            p, bool(_METHOD.fullmatch(rule.method)), f"{at}.method", f"not an HTTP method: {rule.method!r}"
        )
        try:
            re.compile(rule.path)
        except re.error as err:
            p.append(f"{at}.path: not a valid regular expression: {err}")
        _check(p, bool(rule.status), f"{at}.status", "must list at least one status")
        for j, status in enumerate(rule.status):
            _check(p, 100 <= status <= 599, f"{at}.status[{j}]", f"must be 100..599, got {status}")
        _check(
            p,
            0 < rule.max_body <= 16 * 1024 * 1024,
            f"{at}.max_body",
            f"must be 1..16777216, got {rule.max_body}",
        )
        if isinstance(rule, IdentityRule):
            _validate_source(p, f"{at}.user_id", rule.user_id)
            continue
        if isinstance(rule.value, Source):
            _validate_source(p, f"{at}.value", rule.value)
        elif rule.value is not None:
            _check(
                p,
                rule.value >= 0 and rule.value != float("inf"),
                f"{at}.value",
                f"must be a finite number >= 0, got {rule.value}",
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
        _check(
            p,
            1 <= rule.dedup_window <= 86400,
            f"{at}.dedup_window",
            f"must be 1..86400 seconds, got {rule.dedup_window}",
        )


def _validate_source(p: list[str], key: str, source: Source) -> None:
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
    if kind.endswith("_json"):
        _check(p, name.startswith("/"), f"{key}.{kind}", f'a JSON pointer starts with "/", got {name!r}')
    if not is_jwt:
        _check(
            p,
            (source.key, source.algorithm, source.verify, source.claim) == ("", "", True, "sub"),
            key,
            "claim, algorithm, key and verify apply only to jwt_cookie and jwt_authorization",
        )
        return
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


def _rule_sources(options: Options) -> list[tuple[str, Source]]:
    found = [(f"identity.rules[{i}].user_id", r.user_id) for i, r in enumerate(options.identity.rules)]
    for i, rule in enumerate(options.conversions):
        for name in ("value", "currency", "order_id"):
            value = getattr(rule, name)
            if isinstance(value, Source):
                found.append((f"conversions[{i}].{name}", value))
    return found


def resolve_rule_keys(
    options: Options, environ: Mapping[str, str], base_dir: Path, problems: list[str]
) -> dict[str, bytes]:
    """Each JWT source's key: an HMAC secret from the environment, or a PEM public key (from
    the environment or a file), checked against its algorithm now rather than per request."""
    from addons.jws import load_key  # the verifier the rules use (addons import this module)

    keys: dict[str, bytes] = {}
    for at, source in _rule_sources(options):
        if not source.key or source.algorithm not in JWT_ALGORITHMS:
            continue
        key = f"{at}.key"
        raw: bytes
        if source.key.startswith("env:"):
            value = environ.get(source.key[4:], "")
            if not value:
                problems.append(f"{key}: environment variable {source.key[4:]} is not set")
                continue
            raw = value.encode()
        elif source.algorithm.startswith("HS"):
            problems.append(f'{key}: an HMAC secret is never written in the file; use "env:NAME"')
            continue
        else:
            path = Path(source.key)
            try:
                raw = (path if path.is_absolute() else base_dir / path).read_bytes()
            except OSError as err:
                problems.append(f"{key}: cannot read {source.key}: {err.strerror}")
                continue
        try:
            load_key(source.algorithm, raw)  # a PEM of the right kind (and curve), parsed now
        except ValueError as err:
            problems.append(f"{key}: {err}")
            continue
        keys[at] = raw
    return keys


def resolve_secret(
    key: str,
    value: str,
    environ: Mapping[str, str],
    dev: bool,
    problems: list[str],
    generated: list[str],
) -> str:
    """``env:NAME`` → the variable's value. Missing: an error, or in dev mode an ephemeral value."""
    if not value.startswith("env:"):
        problems.append(
            f'{key}: secrets are never written in the file; use "env:NAME" and set NAME in the environment'
        )
        return ""
    name = value[4:]
    resolved = environ.get(name, "")
    if not resolved:
        if dev:
            generated.append(f"{key} ({name})")
            return secrets.token_urlsafe(32)
        problems.append(f"{key}: environment variable {name} is not set (or run with --dev)")
        return ""
    if len(resolved) < MIN_SECRET_LENGTH:
        problems.append(f"{key}: {name} must be at least {MIN_SECRET_LENGTH} characters long")
    return resolved


def load_settings(
    path: str | Path | None,
    *,
    environ: Mapping[str, str] | None = None,
    dev: bool = False,
    text: str | None = None,
) -> Settings:
    """Read, decode, validate and resolve a config; raise ConfigError listing every problem."""
    environ = os.environ if environ is None else environ
    base_dir = Path.cwd()
    if text is None:
        if path is None:
            raise ConfigError(["no config file given"])
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError([f"{file}: cannot read: {err.strerror}"]) from err
        base_dir = file.resolve().parent
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError([f"{path or 'config'}: not valid TOML: {err}"]) from err
    options, problems = decode_options(data)
    problems += validate(options)
    generated: list[str] = []
    secret = resolve_secret("identity.secret", options.identity.secret, environ, dev, problems, generated)
    token = resolve_secret("admin.token", options.admin.token, environ, dev, problems, generated)
    rule_keys = resolve_rule_keys(options, environ, base_dir, problems)
    if problems:
        raise ConfigError(problems)
    trusted = tuple(ipaddress.ip_network(n, strict=False) for n in options.proxy.trusted_proxies)
    return Settings(
        options=options,
        base_dir=base_dir,
        secret=secret.encode(),
        admin_token=token,
        generated=tuple(generated),
        trusted_networks=trusted,
        node=options.storage.node or socket.gethostname(),
        rule_keys=rule_keys,
    )


def masked(options: Options) -> dict[str, Any]:
    """The resolved options as plain data, for ``gateway check``; secrets show only their source."""
    data: dict[str, Any] = msgspec.to_builtins(options)
    for key in SECRET_KEYS:
        section, name = key.split(".")
        value = data[section][name]
        data[section][name] = value if value.startswith("env:") else "***"
    return data
