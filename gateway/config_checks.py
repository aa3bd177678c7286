"""Start-up checks of the decoded options: every problem found once, before anything runs.

Owns the checks the types cannot express (addresses and origins, ranges, regular
expressions, the addon order, channel classes, tiers and verdicts, bot thresholds, the
central store and sinks, privacy) and the admin API's exposure check. Each collects every
problem rather than stopping at the first, each naming its TOML key, e.g.
``proxy.connect_timeout: must be more than 0 and at most 3600 seconds, got -1.0``. The rules',
senders' and payouts' own checks live with them (``gateway.rulechecks``, ``gateway.sources``,
``gateway.payouts``); files and secrets are checked where they are resolved (``gateway.config``).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import math
import re
from collections.abc import Iterable, Sequence
from datetime import UTC
from fractions import Fraction

from yarl import URL

from gateway.adminhosts import hosts_problems
from gateway.attribution import report_zone
from gateway.channels import CLASSES, is_public_suffix
from gateway.config_values import (
    cookie_name_problem,
    creator_id_problem,
    host_problem,
    idna_form,
    listen_host_problem,
    path_problem,
    regex_problem,
    text_problem,
    toml_key,
)
from gateway.events import CAMPAIGN_FIELDS, VERDICTS, bare_prefixes, printable_name
from gateway.options import (
    AttributionOptions,
    BotWeights,
    CentralOptions,
    ChannelsOptions,
    IdentityOptions,
    Options,
    PrivacyOptions,
    SinkOptions,
    parse_listen,
)
from gateway.payouts import validate_payouts
from gateway.rulechecks import id_cookie_problems, validate_rules
from gateway.sessions import is_session_cookie

_SINK_MAX_BATCH_BYTES = SinkOptions(name="", kind="segment", url="", secret="").max_batch_bytes
_PARAM_NAME = re.compile(r"[A-Za-z0-9_.\-\[\]]+")


# RFC 1918 and RFC 4193 (ipaddress's is_private also counts documentation and reserved ranges).
_PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)


def is_private_host(host: str) -> bool:
    """Whether a listen host reaches only this machine or a private network: loopback,
    ``localhost``, or a private/link-local IP. All interfaces (``0.0.0.0``, ``::``, empty) and
    host names (which could resolve anywhere) are not."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return (
        address.is_loopback
        or address.is_link_local
        or any(address in net for net in _PRIVATE_NETWORKS if net.version == address.version)
    )


def admin_exposure(options: Options) -> list[str]:
    """The admin API on a public address needs saying so: ``admin.allow_public`` or
    ``--admin-public``."""
    admin = options.admin
    try:
        host, _ = parse_listen(admin.listen)
    except ValueError:
        return []  # validate() reports it
    if admin.allow_public or is_private_host(host):
        return []
    return [
        f"admin.listen: {admin.listen!r} is not a loopback or private address, so the admin API "
        "would be reachable from other networks; listen on 127.0.0.1 or a private address, or "
        "set admin.allow_public = true (or run with --admin-public) if a firewall guards it"
    ]


def _check(problems: list[str], ok: bool, key: str, message: str) -> None:
    if not ok:
        problems.append(f"{key}: {message}")


MAX_DELAY_SECONDS = 86_400
"""Longest pause, retry delay or timeout of the sync and the sinks: a day. Beyond it a value is a
typo (``3e6``, ``1e300``), and the task it sets would wait for weeks or for ever, unsaid."""


MIN_SINK_RATE = 0.01
"""Fewest requests per second a sink may be held to (``sinks.rate_per_second``): one every 100 s.
Below it a value is a typo (``1e-9``: one request every 31 years, taken until 2026-12-07), and the
sink would never catch up, nor a re-send on demand answer, which waits for it."""
MAX_SINK_RATE = 1000
"""Most requests per second a sink may be held to: it sends one request at a time, so more is no
limit, which ``inf`` says."""


def _seconds(problems: list[str], key: str, value: float) -> None:
    """A pause, retry delay or timeout of a background task: more than 0, at most a day
    (``MAX_DELAY_SECONDS``); ``inf`` and ``nan`` are out of range too."""
    _check(
        problems,
        0 < value <= MAX_DELAY_SECONDS,
        key,
        f"must be > 0 and at most {MAX_DELAY_SECONDS} (a day), got {value}",
    )


def _within(problems: list[str], key: str, value: float, lo: int, hi: int) -> None:
    """``lo <= value <= hi``, else a problem naming ``key``: "must be lo..hi, got value"."""
    _check(problems, lo <= value <= hi, key, f"must be {lo}..{hi}, got {value}")


def _check_origin(problems: list[str], key: str, value: str, example: str) -> None:
    """An http(s) origin: scheme, host, optional port; no credentials, path or query."""
    if value != value.strip() or not value.isprintable():
        # yarl drops what is around it, but the origin is also used as written: a public_origin
        # of " https://…" made every cookie lose its Secure flag, unsaid.
        problems.append(f"{key}: must not hold white space or control characters, got {value!r}")
        return
    try:
        url = URL(value)
        port = url.port  # raises for a port that is not a number or out of range
    except ValueError:
        url, port = None, None
    if url is None or url.scheme not in ("http", "https") or not url.host or port is None:
        problems.append(f'{key}: must be an http(s) origin like "{example}", got {value!r}')
    elif url.user is not None or url.password is not None:
        problems.append(f"{key}: must not carry a user name or password")
    elif not value.isascii():  # used as written: raw UTF-8 in every Location header it made
        ascii_form = _ascii_origin(value)
        fix = f': "{ascii_form}"' if ascii_form else f", got {value!r}"
        problems.append(f"{key}: the host is written in its ASCII form in HTTP{fix}")
    elif url.path not in ("", "/") or url.query_string or url.fragment:
        problems.append(f"{key}: must be an origin without path, query or fragment, got {value!r}")


def _ascii_origin(value: str) -> str | None:
    """``https://bücher.example`` → ``https://xn--bcher-kva.example`` (None: no such form)."""
    scheme, _, rest = value.partition("://")
    host, colon, port = (
        rest.rstrip("/").rpartition(":") if rest.count(":") == 1 else (rest.rstrip("/"), "", "")
    )
    ascii_host = idna_form(host)
    return None if ascii_host is None else f"{scheme}://{ascii_host}{colon}{port}"


_EVERY_INTERFACE = {"", "0.0.0.0", "::"}
_THIS_MACHINE = {"localhost", "127.0.0.1"}


def _same_socket(one: tuple[str, int], other: tuple[str, int]) -> bool:
    """Whether two listen addresses would take the same port of one interface: the same port,
    and the same host, or every interface on either, or ``localhost`` and ``127.0.0.1``."""
    (host, port), (other_host, other_port) = one, other
    if port != other_port or port == 0:  # 0: a free port each, chosen by the system
        return False
    hosts = {host.lower(), other_host.lower()}
    return len(hosts) == 1 or bool(hosts & _EVERY_INTERFACE) or hosts <= _THIS_MACHINE


def _param_claimed_twice(
    prefixes: Sequence[str], click_ids: Sequence[str], creator_ids: Sequence[str], sub_ids: Sequence[str]
) -> list[str]:
    """A parameter named for a second field (``creator_ids = ["utm_content"]``, ``ref`` in both
    ``creator_ids`` and ``sub_ids``): the campaign addon gives each name (in any case) to the
    first that claims it — the campaign fields, then click, creator and sub IDs — so the second
    was never filled, and nothing said so."""
    claimed: dict[str, str] = {}
    for prefix in prefixes:
        for field in CAMPAIGN_FIELDS:
            claimed.setdefault(
                f"{prefix}{field}".lower(), f'the campaign field {field} ("{prefix}" in campaign.prefixes)'
            )
    p: list[str] = []
    for key, names in (
        ("campaign.click_ids", click_ids),
        ("campaign.creator_ids", creator_ids),
        ("campaign.sub_ids", sub_ids),
    ):
        for i, name in enumerate(names):
            first = claimed.setdefault(name.lower(), f"in {key}")
            if first != f"in {key}":
                p.append(
                    f"{key}[{i}]: {name!r} is already {first}, which takes it first; name a parameter once"
                )
    return p


def _mapped_problem(host: str, port: int) -> str | None:
    """An IPv4-mapped IPv6 address (``[::ffff:127.0.0.1]``): asyncio makes IPv6 listening sockets
    IPv6-only, so ``run`` stopped on ``Invalid argument`` where ``check`` had found nothing."""
    try:
        mapped = ipaddress.ip_address(host)
    except ValueError:
        return None
    if not isinstance(mapped, ipaddress.IPv6Address) or mapped.ipv4_mapped is None:
        return None
    return (
        f"{host} is an IPv4 address written as IPv6 (IPv4-mapped), which the gateway's IPv6 sockets"
        f" cannot listen on; write it as IPv4: {mapped.ipv4_mapped}:{port}"
    )


def validate(options: Options) -> list[str]:
    """Every semantic check, collected (not stopping at the first)."""
    p: list[str] = []
    px, ident, camp, st = options.proxy, options.identity, options.campaign, options.storage
    addresses = []
    for key, value in (("proxy.listen", px.listen), ("admin.listen", options.admin.listen)):
        try:
            address = parse_listen(value)
        except ValueError as err:
            p.append(f"{key}: {err}")
            continue
        problem = listen_host_problem(address[0]) or _mapped_problem(*address)
        if problem is None:
            addresses.append(address)
        else:
            p.append(f"{key}: {problem}")
    if len(addresses) == 2 and _same_socket(*addresses):
        # Found by run only as "cannot listen on … (admin.listen): Address already in use".
        p.append(
            f"admin.listen: {options.admin.listen!r} is the address of proxy.listen ({px.listen!r});"
            " the admin API needs a port of its own (the default is 9090)"
        )
    if px.upstream:
        _check_origin(p, "proxy.upstream", px.upstream, "http://127.0.0.1:8000")
    if px.public_origin:
        _check_origin(p, "proxy.public_origin", px.public_origin, "https://www.example.com")
    for i, net in enumerate(px.trusted_proxies):
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            p.append(f"proxy.trusted_proxies[{i}]: not an IP address or CIDR: {net!r}")
    _within(p, "admin.session_hours", options.admin.session_hours, 1, 720)
    _check(
        p,
        0 <= options.admin.report_processes <= 64,
        "admin.report_processes",
        f"must be 0..64 (0: one per core), got {options.admin.report_processes}",
    )
    memory = options.admin.report_worker_memory_mb
    _check(
        p,
        memory == 0 or 64 <= memory <= 1_048_576,
        "admin.report_worker_memory_mb",
        f"must be 0 (never replace a worker) or 64..1048576 (a worker starts with about 50 MB), got {memory}",
    )
    reuse = options.admin.data_driven_reuse_seconds
    _check(
        p,
        math.isfinite(reuse) and 0 <= reuse <= 86_400,
        "admin.data_driven_reuse_seconds",
        f"must be 0 (learn with every report) to 86400 seconds, got {reuse}",
    )
    _check(
        p,
        0 < options.admin.body_timeout <= 3600,
        "admin.body_timeout",
        f"must be more than 0 and at most 3600 seconds, got {options.admin.body_timeout}",
    )
    _within(p, "admin.max_failed_logins", options.admin.max_failed_logins, 1, 1000)
    p += hosts_problems(options.admin.hosts)
    _check(
        p,
        0 < options.admin.failed_login_seconds <= 86400,
        "admin.failed_login_seconds",
        f"must be more than 0 and at most 86400 seconds (a day), got {options.admin.failed_login_seconds}",
    )
    _check(p, 0 <= px.workers <= 256, "proxy.workers", f"must be 0..256 (0: one per core), got {px.workers}")
    _check(
        p,
        0 < px.shutdown_grace <= 3600,
        "proxy.shutdown_grace",
        f"must be more than 0 and at most 3600 seconds, got {px.shutdown_grace}",
    )
    _check(
        p,
        0 <= px.drain_seconds <= 3600,
        "proxy.drain_seconds",
        f"must be 0..3600 seconds (0: no drain), got {px.drain_seconds}",
    )
    _check(
        p,
        px.worker_hang_seconds == 0 or 1 <= px.worker_hang_seconds <= 3600,
        "proxy.worker_hang_seconds",
        f"must be 0 (off) or 1..3600 seconds, got {px.worker_hang_seconds}",
    )
    # An hour at most, as each timeout of the proxy: until 2026-12-07 the first three took any
    # finite number (1e300, or 5000 meant as milliseconds), a stuck site then held a visitor and
    # an upstream connection for as long, unsaid. ``inf`` and ``nan`` fail the comparison too.
    for key, seconds in (
        ("proxy.connect_timeout", px.connect_timeout),
        ("proxy.read_timeout", px.read_timeout),
        ("proxy.body_timeout", px.body_timeout),
        ("proxy.keepalive_timeout", px.keepalive_timeout),
        ("proxy.header_timeout", px.header_timeout),
    ):
        _check(p, 0 < seconds <= 3600, key, f"must be more than 0 and at most 3600 seconds, got {seconds}")
    _within(p, "proxy.upstream_connections", px.upstream_connections, 1, 100_000)
    _check(
        p,
        px.max_request_body >= 0,
        "proxy.max_request_body",
        f"must be >= 0, got {px.max_request_body}",
    )
    _within(p, "proxy.max_websocket_message", px.max_websocket_message, 1024, 1024**3)
    _within(p, "proxy.max_header_size", px.max_header_size, 1024, 1024 * 1024)
    _check(
        p,
        px.reserved_prefix.startswith("/")
        and px.reserved_prefix.endswith("/")
        and len(px.reserved_prefix) > 2,
        "proxy.reserved_prefix",
        f'must look like "/_gw/", got {px.reserved_prefix!r}',
    )
    if len(px.reserved_prefix) > 2 and (bad := _unspellable_prefix(px.reserved_prefix)):
        p.append(
            "proxy.reserved_prefix: must be a path of letters, digits and - . _ ~ ! $ & ' ( ) * + , = : @"
            f" between slashes, as a request spells it; {bad}, got {px.reserved_prefix!r}"
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
    for i, name in enumerate(px.addons):
        first = px.addons.index(name)
        _check(
            p,
            first == i,
            f"proxy.addons[{i}]",
            f"{name!r} is listed twice (first as proxy.addons[{first}]); list each addon once",
        )
    if "campaign" in px.addons:
        _check(
            p,
            "identity" in px.addons and px.addons.index("identity") < px.addons.index("campaign"),
            "proxy.addons",
            '"campaign" needs "identity" before it (touchpoints belong to a visitor)',
        )
    _validate_cookie(p, ident)
    _within(p, "identity.max_age_days", ident.max_age_days, 1, 3650)
    _within(p, "identity.refresh_days", ident.refresh_days, 0, 365)
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
            _check(p, bool(_PARAM_NAME.fullmatch(name)), f"{key}[{i}]", f"not a parameter name: {name!r}")
    p += _param_claimed_twice(camp.prefixes, camp.click_ids, camp.creator_ids, camp.sub_ids)
    _within(p, "campaign.max_value_length", camp.max_value_length, 1, 2000)
    _within(p, "campaign.repeat_seconds", camp.repeat_seconds, 0, 86400)
    for i, source in enumerate(camp.allowed_sources):
        # A landing's source is stripped and must be printable: anything else never matches,
        # and every source would be dropped.
        if bad := text_problem(source, stripped=True):
            p.append(f"campaign.allowed_sources[{i}]: {bad}")
    _within(p, "storage.batch_size", st.batch_size, 1, 10_000)
    _within(p, "storage.batch_wait_ms", st.batch_wait_ms, 0, 1000)
    _check(
        p,
        0 < st.max_wait_ms <= 60_000,
        "storage.max_wait_ms",
        f"must be more than 0 and at most 60000, got {st.max_wait_ms}",
    )
    _check(p, bool(st.path), "storage.path", "must not be empty")
    if st.node and (bad := text_problem(st.node)):  # in every event, synced to PostgreSQL
        p.append(f"storage.node: {bad}")
    for key, path in (
        ("storage.path", st.path),
        ("geo.country_db", options.geo.country_db),
        ("geo.asn_db", options.geo.asn_db),
        ("central.mirror_path", options.central.mirror_path),
    ):
        bad = path_problem(path)
        if bad:
            p.append(f"{key}: {bad}")
    from gateway.sources import validate_sources  # the sources' own checks live with their mapping

    p += validate_sources(options)
    validate_rules(p, "identity.rules", ident.rules, "stitching", px.addons)
    validate_rules(p, "conversions", options.conversions, "conversions", px.addons)
    if ident.rules and options.conversions and {"stitching", "conversions"} <= set(px.addons):
        # A conversion takes the user a sign-in on the same request bound (a sign-up that
        # pays, a GraphQL batch): only when stitching ran first.
        _check(
            p,
            px.addons.index("stitching") < px.addons.index("conversions"),
            "proxy.addons",
            '"conversions" needs "stitching" before it (a conversion on the request of a sign-in'
            " carries the user it bound)",
        )
    p += id_cookie_problems("identity.rules", ident.rules, ident.cookie_name)
    p += id_cookie_problems("conversions", options.conversions, ident.cookie_name)
    p += validate_channels(options.channels) + validate_attribution(options.attribution)
    p += _tier_params_recorded(options)
    p += _validate_bots(options)
    p += validate_payouts(options.payouts, options.campaign.max_value_length)
    p += _validate_central(options)
    p += _validate_privacy(options.privacy)
    if options.privacy.consent_cookie.name and options.privacy.consent_cookie.name == ident.cookie_name:
        # Browsers compare names as written: only the same spelling is the same cookie. The
        # banner's "yes" was overwritten by the ID, and the next page, its value no "yes", expired
        # the ID: consent given, never kept, and the site's banner asked again. No consent cookie
        # (no name) clashes with nothing: an empty identity.cookie_name is its own problem only.
        p.append(
            f"privacy.consent_cookie.name: {ident.cookie_name!r} is identity.cookie_name's too: the ID "
            "cookie would overwrite the visitor's consent; name the site's consent-banner cookie"
        )
    return p


def _validate_cookie(p: list[str], ident: IdentityOptions) -> None:
    """The ID cookie's name and Domain: a browser drops a cookie it finds malformed without a
    word, and every visitor would then be new on every page."""
    bad = cookie_name_problem(ident.cookie_name)
    if bad:
        p.append(f"identity.cookie_name: {bad}")
    prefix = ident.cookie_name[:9].lower()
    if prefix.startswith(("__secure-", "__host-")) and ident.secure == "never":
        # "auto" sets Secure on every https request, which is all such a site serves.
        p.append(
            f'identity.cookie_name: browsers keep a "{ident.cookie_name[: prefix.index("-") + 1]}" '
            'cookie only when it is Secure: set identity.secure = "auto" or "always" (the site is https)'
        )
    if is_session_cookie(ident.cookie_name):
        # Dropped from what the site is sent and overwritten by a dashboard login on the same host
        # name (a cookie knows no port): every visitor who signs in would become a new one.
        p.append(
            f"identity.cookie_name: {ident.cookie_name!r} is the dashboard's session cookie"
            " (gw_admin_session, or gw_admin_session_<port>); choose another name"
        )
    if prefix.startswith("__host-") and ident.domain:
        p.append(
            'identity.cookie_name: browsers refuse a "__Host-" cookie with a Domain: '
            "leave identity.domain empty"
        )
    if ident.domain:
        domain = ident.domain.removeprefix(".")  # a leading dot is legal and ignored (RFC 6265)
        bad = host_problem(domain)
        if bad:
            p.append(f"identity.domain: {bad}")
        elif is_public_suffix(domain.lower()):
            p.append(
                f"identity.domain: {ident.domain!r} is a public suffix, which browsers refuse as a cookie "
                'Domain; name the site\'s own domain, like "example.com"'
            )


def _validate_privacy(pr: PrivacyOptions) -> list[str]:
    p: list[str] = []
    _within(p, "privacy.retention_days", pr.retention_days, 0, 36500)
    cc = pr.consent_cookie
    if cc.name:
        bad = cookie_name_problem(cc.name)
        if bad:
            p.append(f"privacy.consent_cookie.name: {bad}")
        _check(
            p,
            bool(cc.yes or cc.yes_contains),
            "privacy.consent_cookie.yes",
            "must list at least one value meaning consent (or yes_contains a text within one)",
        )
        both = sorted(set(cc.yes) & set(cc.no))
        _check(p, not both, "privacy.consent_cookie.no", f"values also listed in yes: {both}")
        for i, text in enumerate(cc.yes_contains):
            _check(
                p,
                bool(text.strip()),
                f"privacy.consent_cookie.yes_contains[{i}]",
                "must not be empty (every value would contain it)",
            )
    else:
        _check(
            p,
            not (cc.yes or cc.no or cc.yes_contains),
            "privacy.consent_cookie.name",
            "must be set when yes/no/yes_contains are",
        )
    return p


def _validate_central(options: Options) -> list[str]:
    """``[central]``, ``admin.source`` and ``[[sinks]]``."""
    p: list[str] = []
    c = options.central
    _check(
        p, not c.url or c.url.startswith("env:"), "central.url", 'use "env:NAME" (the DSN holds a password)'
    )
    if c.url and importlib.util.find_spec("asyncpg") is None:
        p.append("central.url: the central store needs asyncpg: pip install 'tracking-gateway[postgres]'")
    _within(p, "central.batch_size", c.batch_size, 1, 100_000)
    for key, value in (
        ("central.interval_seconds", c.interval_seconds),
        ("central.backoff_min_seconds", c.backoff_min_seconds),
        ("central.backoff_max_seconds", c.backoff_max_seconds),
        ("central.connect_timeout", c.connect_timeout),
    ):
        _seconds(p, key, value)
    if c.backoff_max_seconds < c.backoff_min_seconds:
        # Named by the key that was changed: a backoff_min_seconds above the default maximum
        # is that key's mistake, not backoff_max_seconds'.
        changed_max = c.backoff_max_seconds != CentralOptions().backoff_max_seconds
        p.append(
            f"central.backoff_max_seconds: must be >= central.backoff_min_seconds "
            f"({c.backoff_min_seconds}), got {c.backoff_max_seconds}"
            if changed_max
            else f"central.backoff_min_seconds: must be <= central.backoff_max_seconds "
            f"({c.backoff_max_seconds}), got {c.backoff_min_seconds}"
        )
    _check(
        p, not c.mirror_path or bool(c.url), "central.mirror_path", "needs central.url (the store it mirrors)"
    )
    _check(
        p,
        options.admin.source == "local" or bool(c.url),
        "admin.source",
        '"central" needs central.url (the central store to read from)',
    )
    names = [sink.name for sink in options.sinks]
    for i, sink in enumerate(options.sinks):
        key = f"sinks[{i}]"
        named = bool(re.fullmatch(r"[a-z0-9_.-]{1,64}", sink.name))
        _check(p, named, f"{key}.name", f"must be 1-64 of a-z 0-9 _ . -, got {sink.name!r}")
        _check(p, names.count(sink.name) == 1, f"{key}.name", f"{sink.name!r} is used by two sinks")
        if not sink.url.startswith("env:"):  # the variable's value is checked where it is read
            fixed = with_scheme(sink.kind, sink.url)
            write = f'; write "{fixed}"' if fixed else ""
            _check(p, http_url(sink.url), f"{key}.url", f"must be an http(s) URL, got {sink.url!r}{write}")
            if sink.kind == "segment" and has_credentials(sink.url):
                p.append(f"{key}.url: {segment_credentials(key)}")
            elif sink.kind == "segment" and (wrong := segment_base(sink.url)):
                p.append(f"{key}.url: {wrong}")
        _within(p, f"{key}.batch_size", sink.batch_size, 1, 10_000)
        biggest, largest = sink.max_message_bytes, sink.max_batch_bytes
        if biggest < 1024:
            p.append(f"{key}.max_message_bytes: must be 1024..max_batch_bytes ({largest}), got {biggest}")
        elif biggest > largest:
            # Named by the key that was changed (max_batch_bytes = 100 is that key's mistake).
            p.append(
                f"{key}.max_batch_bytes: must be at least max_message_bytes ({biggest}), got {largest}"
                if largest != _SINK_MAX_BATCH_BYTES
                else f"{key}.max_message_bytes: must be 1024..max_batch_bytes ({largest}), got {biggest}"
            )
        rate = sink.rate_per_second
        _check(
            p,
            MIN_SINK_RATE <= rate <= MAX_SINK_RATE or rate == math.inf,
            f"{key}.rate_per_second",
            f"must be {MIN_SINK_RATE:g}..{MAX_SINK_RATE:g} requests per second (at least one every"
            f" {1 / MIN_SINK_RATE:g} s), or inf for no limit, got {rate}",
        )
        for name in ("interval_seconds", "backoff_max_seconds", "timeout_seconds"):
            _seconds(p, f"{key}.{name}", getattr(sink, name))
    return p


def has_credentials(value: str) -> bool:
    """Whether the URL ``value`` carries a ``user:password@`` (or a user name alone)."""
    try:
        url = URL(value)
        return url.user is not None or url.password is not None
    except ValueError:
        return False


def segment_credentials(key: str) -> str:
    """Why a segment sink's URL may not carry ``user:password@``: the sink sends its write key
    as HTTP Basic, and a request has one ``Authorization`` (until 2026-12-05 every batch failed
    with aiohttp's ``Cannot combine AUTHORIZATION header …``, and ``sink send`` with a traceback)."""
    return (
        f"a segment sink sends its write key ({key}.secret) as HTTP Basic, so its URL cannot carry"
        " a user:password@ too; remove it (a webhook sink sends one as HTTP Basic)"
    )


def segment_base(value: str) -> str | None:
    """Why the http(s) URL ``value`` is no segment sink's API base, to which ``/v1/batch`` is
    appended; None when it is one. Segment's documentation gives the whole
    ``https://api.segment.io/v1/batch``: taken (until 2026-12-07), every batch went to
    ``…/v1/batch/v1/batch`` and got a 404 for ever; a query or fragment took the appended path
    into itself (``/?region=eu/v1/batch``). Never quotes ``value`` (it may hold a token)."""
    base = "a segment sink's url is the API base (https://api.segment.io), to which /v1/batch is appended"
    try:
        url = URL(value)
    except ValueError:
        return None
    if url.path.rstrip("/").endswith("/v1/batch"):
        return f"{base}; remove /v1/batch"
    if url.raw_query_string or url.raw_fragment or "?" in value or "#" in value:
        return f"{base}; it can hold no ?query or #fragment"
    return None


def with_scheme(kind: str, value: str) -> str | None:
    """A sink's URL given without its scheme (``api.segment.io``) as one this sink takes, when
    ``https://`` before it makes one; None otherwise (until 2026-12-08 the problem said only that
    it was no http(s) URL, and the operator had to find what was missing)."""
    fixed = "https://" + value
    if "://" in value or not value.isprintable() or any(c.isspace() for c in value) or not http_url(fixed):
        return None
    if kind == "segment" and (has_credentials(fixed) or segment_base(fixed)):
        return None
    return fixed


def http_url(value: str) -> bool:
    """Whether ``value`` is an http(s) URL with a host (a sink's destination)."""
    try:
        url = URL(value)
        return url.scheme in ("http", "https") and bool(url.host) and url.port is not None
    except ValueError:
        return False


def _check_regex(problems: list[str], key: str, pattern: str) -> None:
    """A channel rule's or tier's pattern, compiled case-insensitively as it runs."""
    bad = regex_problem(pattern, re.IGNORECASE)
    if bad:
        problems.append(f"{key}: {bad}")


def _tier_params_recorded(options: Options) -> list[str]:
    """A tier parameter is read from what a landing recorded of its query: the parameters
    starting with one of ``campaign.prefixes`` (and the click, creator and sub ID ones). Any
    other is passed on to the site and never stored, so a tier parameter of that name never
    set a tier. The defaults are left alone (``c_tier`` without the ``c_`` prefix is unused)."""
    at, camp = options.attribution, options.campaign
    if at.tier_params == AttributionOptions().tier_params:
        return []
    prefixes = tuple(prefix.lower() for prefix in camp.prefixes)
    bare = bare_prefixes(prefixes)  # a prefix alone names no field: the site's, never recorded
    named = {name.lower() for name in (*camp.click_ids, *camp.creator_ids, *camp.sub_ids)}
    listed = ", ".join(f'"{prefix}"' for prefix in camp.prefixes) or "none"
    return [
        f"attribution.tier_params[{i}]: {name!r} is not recorded with a touchpoint, so it never sets"
        f" a tier: name a parameter starting with one of campaign.prefixes ({listed}), more than the prefix"
        for i, name in enumerate(at.tier_params)
        if _PARAM_NAME.fullmatch(name)
        and not ((key := name.lower()) in named or (key.startswith(prefixes) and key not in bare))
    ]


def _check_hosts(
    p: list[str], key: str, hosts: Iterable[str], example: str, consequence: str, names: bool = False
) -> None:
    """Referrer hosts or site names, as the classifier normalizes them (spaces and a final dot
    dropped, any case): a URL or a port there would never match a referrer. A host that is a
    public suffix (``com``, ``co.uk``, ``github.io``) would match every site under it: refused,
    saying so (``consequence``: what it would do). With ``names``, a name without a dot
    (``paypal``) is a site's name under any suffix, not a host: not checked as one."""
    for i, host in enumerate(hosts):
        name = host.strip().rstrip(".")
        bad = host_problem(name, example=example)
        if bad:
            p.append(f"{key}[{i}]: {bad}")
        elif ("." in name or not names) and is_public_suffix(name.lower()):
            p.append(f'{key}[{i}]: {host!r} is a public suffix: {consequence}; name a host like "{example}"')


def validate_channels(ch: ChannelsOptions) -> list[str]:
    p: list[str] = []
    for host, value in ch.referrers.items():
        # A key is a referrer host, or a name a utm_source may carry ("my newsletter"): only
        # an empty one, or one written as a URL, a path or a host with its port
        # ("kagi.com:443": a referrer's host is stored without it), can never match.
        bare = host.strip().rstrip(".")
        name, colon, port = bare.rpartition(":")
        if not bare or "/" in host or (colon and port.isdigit() and "." in name):
            bad = host_problem(bare, example="kagi.com")
            p.append(f"channels.referrers.{toml_key(host)}: {bad} (or a utm_source name)")
        elif "." in bare and bare.startswith(("*", ".")):  # "*.example.net": no host is spelt so
            p.append(
                f"channels.referrers.{toml_key(host)}: a host key matches the host and its subdomains"
                f' already, and no host starts with "{bare[0]}": write "{bare.lstrip("*.")}"'
            )
        elif "." in bare and not bare.isascii() and (ascii_form := idna_form(bare)) is not None:
            # The host as the browser sends it, xn--…: as a rule's referrer, own_domains.
            p.append(
                f"channels.referrers.{toml_key(host)}: a referrer's host arrives in its ASCII form,"
                f' never as written here: write "{ascii_form}"'
            )
        elif (kind := value.partition("/")[0]) in ("payment", "login") and "." in bare:
            # As channels.payment_gateways refuses it: a return from either records no touchpoint.
            what = "a payment gateway" if kind == "payment" else "a sign-in provider"
            _check(
                p,
                not is_public_suffix(bare.lower()),
                f"channels.referrers.{toml_key(host)}",
                f"{host!r} is a public suffix: every site under it would be taken for {what}, its referrals"
                ' never recorded; name a host like "checkout.stripe.com"',
            )
    _check_hosts(
        p,
        "channels.payment_gateways",
        ch.payment_gateways,
        "checkout.stripe.com",
        "every site under it would be taken for a payment gateway, its referrals never recorded",
        names=True,
    )
    _check_hosts(
        p,
        "channels.own_domains",
        ch.own_domains,
        "example-shop.net",
        "every site under it would be taken for this one, its referrals never recorded",
    )
    for host, value in ch.referrers.items():
        kind = value.partition("/")[0]
        _check(
            p,
            kind in CLASSES,
            f"channels.referrers.{toml_key(host)}",
            f"unknown class {kind!r} (known: {', '.join(CLASSES)})",
        )
    for key, channel in (
        ("channels.creator_channel", ch.creator_channel),
        *((f"channels.rules[{i}].channel", rule.channel) for i, rule in enumerate(ch.rules)),
    ):
        if bad := text_problem(channel):  # stored with each touchpoint, synced to PostgreSQL
            p.append(f"{key}: {bad}")
    for i, rule in enumerate(ch.rules):
        key = f"channels.rules[{i}]"
        for name in ("source", "medium", "campaign", "referrer"):
            _check_regex(p, f"{key}.{name}", getattr(rule, name))
        if "/" in _CHARACTER_CLASS.sub("", rule.referrer):  # a host holds none: a URL never matched
            host = rule.referrer.partition("://")[2].partition("/")[0] if "://" in rule.referrer else ""
            p.append(
                f"{key}.referrer: matches the referrer's host alone (www.example.com, no scheme or path),"
                " so a pattern with a / never matches"
                + (f': write "{host}"' if host and "/" not in host else "; write a host pattern")
            )
        if not rule.referrer.isascii():  # the host as the browser sends it: xn--…, never bücher.de
            p.append(
                f"{key}.referrer: a referrer's host arrives in its ASCII form, never as written here:"
                f' write "{_ascii_labels(rule.referrer)}"'
            )
        for j, param in enumerate(rule.click_ids):  # as campaign.click_ids: else it never matches
            _check(
                p,
                bool(_PARAM_NAME.fullmatch(param)),
                f"{key}.click_ids[{j}]",
                f"not a parameter name: {param!r}",
            )
        _check(
            p,
            any((rule.source, rule.medium, rule.campaign, rule.referrer, rule.click_ids)),
            key,
            "needs at least one condition (source, medium, campaign, referrer or click_ids)",
        )
    return p


_CHARACTER_CLASS = re.compile(r"\[\^?\]?(?:\\.|[^\]])*\]")
"""A regular expression's character class (``[^/]``): a / in one may be meant."""


def _ascii_labels(pattern: str) -> str:
    """``bücher\\.de`` → ``xn--bcher-kva\\.de``: each run of letters beyond ASCII and the
    letters and digits around it in its IDNA form, the regular expression around them kept."""

    def encoded(found: re.Match[str]) -> str:
        label = found.group()
        return label if label.isascii() else idna_form(label) or label

    return re.sub(r"[^\W_]+(?:-+[^\W_]+)*", encoded, pattern)


HALF_LIFE_MIN_DAYS = 1 / 86_400
"""``attribution.half_life_days`` at least: one second."""
HALF_LIFE_MAX_DAYS = 36_500.0
"""``attribution.half_life_days`` at most: 100 years, ten times the longest lookback window
(past it, touches 3650 days apart weigh within 7 % of each other: time_decay is linear)."""


NOT_ZONES = frozenset({"localtime", "posixrules"})
NOT_ZONE_FOLDERS = ("posix/", "right/")
"""Files of the time zone database that Python reads as zones and no browser knows by name."""


def validate_attribution(at: AttributionOptions) -> list[str]:
    p: list[str] = []
    for tier, days in at.lookback_days.items():
        _check(
            p,
            0 < days <= 3650,
            f"attribution.lookback_days.{tier}",
            f"must be more than 0 and at most 3650 days, got {days}",
        )
    tiers = ", ".join(at.lookback_days)
    # lookback_days replaces the default tiers whole: a table of one's own tiers leaves the
    # defaults of default_tier and tier_patterns naming tiers it no longer has.
    defaults = AttributionOptions()
    replaced = "attribution.lookback_days replaces the default tiers whole"
    hint = ""
    if at.default_tier == defaults.default_tier:
        hint = f"; {replaced}: set default_tier to one of yours"
    _check(
        p,
        at.default_tier in at.lookback_days,
        "attribution.default_tier",
        f"{at.default_tier!r} has no attribution.lookback_days entry (tiers: {tiers}){hint}",
    )
    missing = [tier for tier in at.tier_patterns if tier not in at.lookback_days]
    if missing and at.tier_patterns == defaults.tier_patterns:
        p.append(
            f"attribution.tier_patterns: the default patterns name tiers {', '.join(missing)}, which"
            f" attribution.lookback_days does not have (tiers: {tiers}); {replaced}: set"
            " tier_patterns for yours, or tier_patterns = {} for none"
        )
        missing = []
    for tier, patterns in at.tier_patterns.items():
        _check(
            p,
            tier not in missing,
            f"attribution.tier_patterns.{toml_key(tier)}",
            f"no attribution.lookback_days entry for this tier (tiers: {tiers})",
        )
        for i, pattern in enumerate(patterns):
            _check_regex(p, f"attribution.tier_patterns.{toml_key(tier)}[{i}]", pattern)
    for i, name in enumerate(at.tier_params):
        _check(
            p,
            bool(_PARAM_NAME.fullmatch(name)),
            f"attribution.tier_params[{i}]",
            f"not a parameter name: {name!r}",
        )
    _check(p, bool(at.verdicts), "attribution.verdicts", "must name at least one verdict")
    # As /api/payouts?verdicts=review is refused: the payout report pays the allowed traffic and
    # lists the rest apart, so until 2026-12-07 a default without allow listed ordinary traffic
    # among the quarantined rows and approved the reviewed traffic alone for payment.
    known = all(verdict in VERDICTS for verdict in at.verdicts)
    _check(
        p,
        not at.verdicts or not known or "allow" in at.verdicts,
        "attribution.verdicts",
        "every report counts these verdicts unless asked for others, and the payout report pays"
        " the allowed traffic and lists the rest apart; name allow with the verdicts that count"
        ' too (verdicts = ["allow", "review"]), got ['
        + ", ".join(f'"{verdict}"' for verdict in at.verdicts)
        + "]",
    )
    for i, verdict in enumerate(at.verdicts):
        _check(
            p,
            verdict in VERDICTS,
            f"attribution.verdicts[{i}]",
            f"unknown verdict {verdict!r} (verdicts: {', '.join(VERDICTS)})",
        )
    for key, share in (
        ("attribution.position_first", at.position_first),
        ("attribution.position_last", at.position_last),
        ("attribution.last_touch_share", at.last_touch_share),
    ):
        _within(p, key, share, 0, 1)
    # Exactly as the models read them (through their decimal text, ``Params.from_options``):
    # a sum the floats round down to 1 left the middle touches a negative share, and every
    # position_based report with three touches or more failed.
    first, last = at.position_first, at.position_last
    if math.isfinite(first) and math.isfinite(last):  # else each one's range says so
        _check(
            p,
            Fraction(str(first)) + Fraction(str(last)) <= 1,
            "attribution.position_last",
            f"position_first + position_last must be at most 1, got {first!r} + {last!r}",
        )
    # A half-life is a time span: one that rounds to no microsecond divided by zero, one past
    # timedelta's range failed the gateway's start with a traceback.
    _check(
        p,
        HALF_LIFE_MIN_DAYS <= at.half_life_days <= HALF_LIFE_MAX_DAYS,
        "attribution.half_life_days",
        f"must be at least one second ({HALF_LIFE_MIN_DAYS:.7f} days) and at most"
        f" {HALF_LIFE_MAX_DAYS:g} days, got {at.half_life_days}",
    )
    try:
        zone = report_zone(at.timezone)
    except ValueError as err:
        p.append(
            f"attribution.timezone: {err}; an IANA name like 'Europe/Berlin' or 'America/New_York'"
            " (the system's time zone database: the tzdata package on Debian)"
        )
    else:
        # Python also reads the database's files that name no zone a browser knows (the
        # system's own, a link; posix/… and right/…, copies under other rules): the dashboard's
        # script failed on them.
        if zone is not UTC and (at.timezone in NOT_ZONES or at.timezone.startswith(NOT_ZONE_FOLDERS)):
            p.append(
                f"attribution.timezone: {at.timezone!r} is a file of the time zone database, not a"
                " zone's IANA name (the dashboard's browser knows no zone of that name); name the"
                " zone itself, like 'Europe/Berlin' or 'America/New_York'"
            )
    return p


def _validate_bots(options: Options) -> list[str]:
    """``[bots]``, ``[[creators]]`` and where ``bots``/``geo`` sit in the pipeline."""
    p: list[str] = []
    bots, addons = options.bots, options.proxy.addons
    if "bots" in addons:
        for before in ("campaign", "geo"):
            _check(
                p,
                before not in addons or addons.index(before) < addons.index("bots"),
                "proxy.addons",
                f'"bots" must come after "{before}" (it scores what {before} found)',
            )
    else:  # nothing is scored: an action asked for would silently never be taken
        for key in ("on_review", "on_block"):
            _check(
                p,
                getattr(bots, key) != "block",
                f"bots.{key}",
                f'"block" refuses nothing while "bots" is not in proxy.addons (no request is scored);'
                f' add "bots" to proxy.addons, after "campaign" and "geo", or leave bots.{key} at "record"',
            )
    _within(p, "bots.review_threshold", bots.review_threshold, 0, 100)
    # A review_threshold out of range is its own problem, not block_threshold's too.
    low = bots.review_threshold if 0 <= bots.review_threshold <= 100 else 0
    _check(
        p,
        low <= bots.block_threshold <= 100,
        "bots.block_threshold",
        f"must be review_threshold..100 ({low}..100), got {bots.block_threshold}",
    )
    for name in BotWeights.__struct_fields__:
        weight = getattr(bots.weights, name)
        _within(p, f"bots.weights.{name}", weight, 0, 100)
    for key in ("window_seconds", "max_per_ip", "max_per_creator_ip", "max_per_visitor"):
        value = getattr(bots, key)
        _within(p, f"bots.{key}", value, 1, 10_000_000)
    for i, asn in enumerate(bots.datacenter_asns):  # 32-bit AS numbers (RFC 6793)
        _within(p, f"bots.datacenter_asns[{i}]", asn, 0, 4_294_967_295)
    _within(p, "bots.max_click_id_sources", bots.max_click_id_sources, 1, 100)
    _within(p, "bots.max_tracked", bots.max_tracked, 1024, 10_000_000)
    for key in ("good_crawlers", "extra_good_crawlers"):
        for i, agent in enumerate(getattr(bots, key)):
            _check(p, bool(agent.strip()), f"bots.{key}[{i}]", "must not be empty")
    seen: set[str] = set()
    for i, creator in enumerate(options.creators):
        if bad := creator_id_problem(creator.id, options.campaign.max_value_length):
            p.append(f"creators[{i}].id: {bad}")
        _check(p, creator.id not in seen, f"creators[{i}].id", f"{creator.id!r} is listed twice")
        seen.add(creator.id)
        # As ``PUT /api/creators/{id}`` takes a name: a listing's column, not a document.
        printable = not creator.name or printable_name(creator.name)
        got = f"{len(creator.name)} characters" if printable else "a control character in it"
        _check(
            p,
            len(creator.name) <= 200 and printable,
            f"creators[{i}].name",
            f"expected at most 200 printable characters, as PUT /api/creators/{{id}} takes a name; got {got}",
        )
    return p


_PATH_CHARS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,=:@/]*")
"""RFC 3986's path characters, ``%`` and ``;`` left out: the prefix is compared with the path
exactly as sent (``gateway.reserved``), so it must be written as every client sends it."""


def _unspellable_prefix(prefix: str) -> str | None:
    """Why no request's path starts with ``prefix`` as written (None: one can). A character a
    client percent-encodes (a space, ``é``, ``?``) never arrives raw, a ``%`` escape some
    clients decode, ``;`` parameters, and empty, ``.`` or ``..`` segments, which clients and
    front proxies resolve: ``/a/../b/events`` arrives as ``/b/events`` and goes to the site."""
    if not _PATH_CHARS.fullmatch(prefix):
        odd = next(c for c in prefix if not _PATH_CHARS.fullmatch(c))
        return f"{odd!r} is not sent as written"
    if any(segment in ("", ".", "..") for segment in prefix[1:-1].split("/")):
        return "an empty, . or .. segment is merged or resolved before the gateway sees it"
    return None
