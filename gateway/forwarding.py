"""HTTP forwarding rules, as pure functions: hop-by-hop headers, client IP, Location rewriting.

Owns what RFC 9110 says a proxy must drop, whom to believe about the client's
address and its scheme and host (a trusted peer's RFC 7239 ``Forwarded``, else its X-Forwarded-For
and the X-Forwarded-Proto and -Host entries at the client's place: ``trusted_visitor``, both
hosts' one reading), how an upstream's
self-referencing redirect (``Location``, and ``Refresh``'s URL) is turned into the public origin,
whether an answer we set a cookie on must be kept from shared caches (``shared_cacheable``,
a CDN's own fields for it, ``cdn_cache_fields``, ``Surrogate-Control`` among them:
``cache_lines_to_add``), and the ``Set-Cookie`` line both hosts
write for our cookie (``set_cookie_line``).
"""

from __future__ import annotations

import functools
import http.cookies
import ipaddress
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from gateway.pipeline import Cookie

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

log = logging.getLogger("gateway.proxy")

# RFC 9110 §7.6.1 and the classic proxy headers; those named in Connection are dropped too.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
FORWARDED = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"})
# Other ways of telling the upstream who the client is: passed on from trusted proxies only.
CLIENT_CLAIMS = frozenset(
    {
        "forwarded",
        "x-real-ip",
        # The client's address as CDNs and load balancers write it, which frameworks read
        # behind them (Rails' remote_ip reads Client-IP; a site behind Cloudflare reads
        # CF-Connecting-IP): a visitor's own was passed on until 2026-12-05.
        "client-ip",
        "true-client-ip",
        "cf-connecting-ip",
        "fastly-client-ip",
        "x-client-ip",
        "x-cluster-client-ip",
        # The request target a front server rewrote (IIS's URL Rewrite; Symfony and Laminas
        # read it as the path, the access checks of a site done on the one it saw).
        "x-original-url",
        "x-rewrite-url",
        # The scheme as nginx is told to write it for Tornado (``proxy_set_header X-Scheme``),
        # which with ``xheaders`` (Jupyter Server likewise) reads it ahead of X-Forwarded-Proto:
        # a visitor's own made the site take plain http for https, or the reverse.
        "x-scheme",
    }
)
# And the rest of the X-Forwarded-* family (-Port, -Prefix, -Ssl, -Scheme, -Server…), which
# frameworks read behind a proxy they trust (Rack's -Ssl and -Scheme make a request https,
# Symfony's, Spring's and Werkzeug's -Prefix goes into every URL they build): from trusted
# proxies only too.
CLAIM_PREFIX = "x-forwarded-"


def underscored_claim(name: str) -> bool:
    """Whether a lower-case header ``name`` with an underscore (``x_forwarded_for``,
    ``x-forwarded_prefix``, ``x_real_ip``) is a claim about the client spelled so. Rack (Puma),
    Django and gunicorn read headers as CGI variables, where ``_`` and ``-`` are one
    (``HTTP_X_FORWARDED_FOR``): such a line passes for the proxy's own. No proxy writes one, so
    it is never passed on, whoever the peer (nginx drops every name with an underscore)."""
    spelled = name.replace("_", "-")
    return spelled in FORWARDED or spelled in CLIENT_CLAIMS or spelled.startswith(CLAIM_PREFIX)


def connection_tokens(values: Iterable[str]) -> frozenset[str]:
    """Header names listed in ``Connection`` (they are hop-by-hop for this connection only)."""
    return frozenset(token.strip().lower() for value in values for token in value.split(",") if token.strip())


def parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address as peers and X-Forwarded-For write it: ``1.2.3.4``, ``1.2.3.4:80``, ``::1``,
    ``[::1]:443``; IPv4-mapped IPv6 is unmapped. None for anything else."""
    host, port = value.strip(), None
    if host.startswith("["):
        host, bracket, rest = host[1:].partition("]")
        if not bracket or rest[:1] not in ("", ":"):
            return None
        port = rest[1:] if rest else None
    elif host.count(":") == 1:
        host, _, port = host.partition(":")
    if port is not None and not (port.isascii() and port.isdigit()):
        return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_trusted(ip: str | None, trusted: Sequence[IPNetwork]) -> bool:
    if not ip or not trusted:
        return False
    addr = parse_ip(ip)
    return addr is not None and any(addr in net for net in trusted)


def client_ip(peer: str | None, forwarded_for: str | None, trusted: Sequence[IPNetwork]) -> str:
    """The visitor's address: the peer, or — when the peer is a trusted proxy — the right-most
    X-Forwarded-For entry that is not itself a trusted proxy."""
    if not is_trusted(peer, trusted) or not forwarded_for:
        return peer or ""
    hop = client_hop(forwarded_for, trusted)
    return hop[0] if hop is not None else peer or ""


def client_hop(forwarded_for: str | None, trusted: Sequence[IPNetwork]) -> tuple[str, int] | None:
    """The right-most X-Forwarded-For entry that is not a trusted proxy, and its place counted
    from the right (0: the right-most); None when there is none (only proxies, or garbage to
    its right). The caller has checked that the peer is trusted."""
    if not forwarded_for:
        return None
    for hop, entry in enumerate(reversed(forwarded_for.split(","))):
        addr = parse_ip(entry)
        if addr is None:
            return None  # garbage in the chain: trust nothing left of it
        if not any(addr in net for net in trusted):
            return str(addr), hop
    return None


def at_hop(value: str, hop: int) -> str:
    """The entry of a comma-separated X-Forwarded-Proto or -Host at ``hop`` from the right (the
    client's place in X-Forwarded-For, ``client_hop``): each proxy appends one to each, as to
    X-Forwarded-For, so the entry the first trusted proxy wrote — how the visitor reached it —
    is at the visitor's place. A list shorter than that (the first proxy set it, the others
    passed it on) gives its first entry."""
    items = value.split(",")
    return (items[-1 - hop] if hop < len(items) else items[0]).strip()


class Malformed(ValueError):
    """A ``Forwarded`` field that is not a list of ``name=value`` pairs (RFC 7239 §4); its
    message is the cause, as the operator's log says it."""


# A parameter's value unquoted: anything but the separators, a quote and white space (RFC 7239
# asks for a token, but an nginx told ``proxy_set_header Forwarded "for=$remote_addr"`` writes an
# IPv6 address bare, ``for=2001:db8::1``: taken, as a reader that fails open should).
_BARE_VALUE = re.compile(r'[^\s;,"]+')
_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# The parameters RFC 7239 defines: the only names a cause in the log repeats (a cause never
# quotes the field otherwise: no address in the log, and a bounded number of causes).
_PARAMETERS = frozenset({"by", "for", "host", "proto"})
TWICE = "\x00twice"
"""The key an element with a parameter twice holds its cause under (no name has a NUL)."""


def forwarded_elements(value: str) -> list[dict[str, str]]:
    """The elements of a ``Forwarded`` line, left to right, each its
    parameters by lower-case name, quoted strings unquoted (``\\`` escapes too). Empty elements
    (``a, , b``) are skipped, as RFC 9110 §5.6.1 asks of a list. Raises ``Malformed`` naming the
    cause: a pair that is not ``name=value``, a quoted string not closed, something after one. A
    parameter twice in one element (RFC 7239 §4 forbids it: which would be meant?) spoils that
    element alone, which holds the cause under ``TWICE``: the line's syntax is sound, and a proxy
    that appends its element to a visitor's line (nginx's ``$proxy_add_forwarded``, which checks
    the syntax alone) wrote the elements right of it, which the walk reads first."""
    elements: list[dict[str, str]] = []
    element: dict[str, str] = {}
    i, end = 0, len(value)
    while True:
        while i < end and value[i] in " \t":
            i += 1
        if i < end and value[i] not in ";,":
            name_match = _NAME.match(value, i)
            if name_match is None:
                raise Malformed("a parameter name with characters a name cannot have")
            name = name_match.group().lower()
            said = repr(name) if name in _PARAMETERS else "a parameter"
            i = name_match.end()
            if i >= end or value[i] != "=":
                raise Malformed(f"a parameter without a value ({said} not followed by '=')")
            i += 1
            if i < end and value[i] == '"':
                chars: list[str] = []
                i += 1
                while i < end and value[i] != '"':
                    if value[i] == "\\" and i + 1 < end:
                        i += 1
                    chars.append(value[i])
                    i += 1
                if i >= end:
                    raise Malformed(f"a quoted string not closed (the value of {said})")
                i += 1
                text = "".join(chars)
            else:
                bare = _BARE_VALUE.match(value, i)
                if bare is None:
                    raise Malformed(f"an empty value ({said})")
                text = bare.group()
                i = bare.end()
            if name in element:
                element.setdefault(TWICE, f"a parameter twice in one element ({said})")
            else:
                element[name] = text
            while i < end and value[i] in " \t":
                i += 1
            if i < end and value[i] not in ";,":
                raise Malformed(f"something after the value of {said} other than ';' or ','")
        if i >= end or value[i] == ",":
            if element:
                elements.append(element)
                element = {}
            if i >= end:
                return elements
        i += 1


class Visitor(NamedTuple):
    """How a trusted proxy says the visitor reached it: ``ip`` (None: the peer is the client),
    ``scheme`` and ``host`` (None: the hop's own: the connection's scheme, the ``Host`` line)."""

    ip: str | None
    scheme: str | None
    host: str | None


_NOBODY = Visitor(None, None, None)
_said_malformed: set[str] = set()


def _malformed(cause: str) -> Visitor:
    """A trusted proxy's ``Forwarded`` that cannot be read: its hop is the client (neither its
    address nor its scheme and host are guessed from a field that says something else than
    meant), logged once per cause in a process."""
    if cause not in _said_malformed:
        _said_malformed.add(cause)
        log.warning(
            "a trusted proxy (proxy.trusted_proxies) sent a Forwarded header that cannot be read: %s;"
            " such requests are taken as the proxy's own (its address, the connection's scheme"
            " and Host) until it writes RFC 7239 pairs (for=...;proto=...;host=..., quoting"
            ' IPv6 addresses and ports: for="[2001:db8::1]:4711"). Said once per cause.',
            cause,
        )
    return _NOBODY


def _appended_to(line: str) -> bool:
    """Whether a ``Forwarded`` ``line`` that cannot be parsed ends in an element that reads on
    its own, after a comma: a proxy's, appended to a visitor's own field on the same line (RFC 7239
    §4 lets a proxy append to the last line), the visitor's part left of it the unreadable one.
    Only for what the log says: nothing on such a line is believed (where a quote the visitor left
    open ends cannot be told, and a visitor who can move the line's element boundaries can name
    their own address)."""
    head, comma, last = line.rpartition(",")
    if not comma or not head.strip():
        return False
    try:
        return bool(forwarded_elements(last))
    except Malformed:
        return False


def _visitors_part(cause: str) -> Visitor:
    """A trusted proxy's ``Forwarded`` line whose element, appended to a visitor's own, reads
    alone, where the visitor's part cannot be read (``_appended_to``): its hop is the client, as
    for ``_malformed``, but the visitor is to blame, not the proxy: logged at debug, each time,
    and never at warning (until 2026-12-07 a visitor's ``for="x`` made the log tell the operator
    once that the proxy writes unreadable fields, which it need not fix)."""
    log.debug(
        "a trusted proxy (proxy.trusted_proxies) appended its Forwarded element to a visitor's own"
        " Forwarded on one line, and the visitor's part cannot be read: %s; where it ends cannot be"
        " told, so the request is taken as the proxy's own (its address, the connection's scheme"
        " and Host). Have the proxy add its Forwarded as a line of its own, or replace a visitor's",
        cause,
    )
    return _NOBODY


def forwarded_visitor(lines: Sequence[str], trusted: Sequence[IPNetwork]) -> Visitor:
    """The visitor a trusted peer's ``Forwarded`` ``lines`` name (RFC 7239), read as
    X-Forwarded-For is: its elements as one list in order, walked from the right over those whose
    ``for=`` is a trusted proxy's address; the element the walk stops at — the first whose
    ``for=`` is not one, or the left-most — was written by the first trusted proxy, and says how
    the visitor reached it: its ``proto=`` and ``host=``, and its ``for=`` when that is an
    address (``"[2001:db8::1]:4711"`` too). One that is no address (``unknown``, an obfuscated
    ``_hidden``, none at all) leaves the peer as the client, as an X-Forwarded-For entry that is
    no address does. The lines are parsed from the last, as far as the walk goes: one that
    cannot be parsed on the way gives ``_malformed``, and so does an element the walk reaches
    with a parameter twice; one left of where the walk stops (a visitor's own line, before the
    proxy's, or a visitor's element on the proxy's line) is not read. A line that cannot be parsed
    though its last element reads alone (a proxy's appended to a visitor's unreadable one:
    ``_appended_to``) gives the peer too, logged at debug (``_visitors_part``). No element at all:
    nobody (until 2026-12-07 a parameter twice in a visitor's element on the proxy's line failed
    the whole line, every such visitor taken for the proxy)."""
    element: dict[str, str] | None = None
    for line in reversed(lines):
        try:
            elements = forwarded_elements(line)
        except Malformed as err:
            return _visitors_part(str(err)) if _appended_to(line) else _malformed(str(err))
        for element in reversed(elements):
            if TWICE in element:  # reached: which of its values is meant cannot be told
                return _malformed(element[TWICE])
            addr = parse_ip(element.get("for", ""))
            if addr is None or not any(addr in net for net in trusted):
                proto = element.get("proto")
                return Visitor(
                    str(addr) if addr is not None else None,
                    proto.lower() if proto else None,
                    element.get("host") or None,
                )
    if element is None:
        return _NOBODY
    # Only trusted hops: the peer, and how the left-most (the first proxy's) says it was reached.
    proto = element.get("proto")
    return Visitor(None, proto.lower() if proto else None, element.get("host") or None)


def visitor_ip(
    peer: str | None,
    get_all: Callable[[str], Sequence[str]],
    trusted: Sequence[IPNetwork],
    forwarded: bool = False,
) -> str:
    """The visitor's address: the peer's, or, from a trusted proxy, the one its headers name
    (``trusted_visitor``), when they name one."""
    if not is_trusted(peer, trusted):
        return peer or ""
    return trusted_visitor(get_all, trusted, forwarded).ip or peer or ""


def trusted_visitor(
    get_all: Callable[[str], Sequence[str]], trusted: Sequence[IPNetwork], forwarded: bool = False
) -> Visitor:
    """What a trusted peer's headers say of the visitor, both hosts' one reading (``get_all``:
    a header's lines in order, none when absent). With ``forwarded`` (``proxy.trusted_header =
    "forwarded"``) its ``Forwarded`` alone (``forwarded_visitor``), else its X-Forwarded-For and
    the X-Forwarded-Proto and -Host values at the client's place (``client_hop``, ``at_hop``),
    never both: a proxy passes the other on from the visitor as it came (nginx leaves a
    visitor's ``Forwarded`` alone; HAProxy's ``option forwarded`` a visitor's X-Forwarded-For),
    so reading whichever is present would believe the visitor. The lines in their order, as a
    proxy that adds a line of its own (HAProxy's ``add-header``) puts it after the client's
    (until 2026-12-05 the first line was read, the client's). Through one trusted proxy that is
    the right-most value; through two, the first one's, how the visitor reached it (until
    2026-12-07 the right-most was read: the hop between them). Until 2026-12-07 ``Forwarded``
    could not be read: behind a proxy writing only it, every visitor was the proxy, over plain
    http."""
    if forwarded:
        return forwarded_visitor(get_all("forwarded"), trusted)
    client = client_hop(",".join(get_all("x-forwarded-for")), trusted)
    ip, hop = client if client is not None else (None, 0)
    protos = get_all("x-forwarded-proto")
    hosts = get_all("x-forwarded-host")
    return Visitor(
        ip,
        at_hop(",".join(protos), hop).lower() if protos else None,
        at_hop(",".join(hosts), hop) if hosts else None,
    )


DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def split_absolute(url: str) -> tuple[str, str, str] | None:
    """``scheme://authority rest`` → (scheme, authority, rest), byte for byte; None if not absolute."""
    scheme, sep, after = url.partition("://")
    if not sep or not scheme or not scheme.isascii() or not scheme.isalpha():
        return None
    end = next((i for i, c in enumerate(after) if c in "/?#"), len(after))
    return scheme, after[:end], after[end:]


def origin_key(scheme: str, authority: str) -> tuple[str, str, int] | None:
    """What makes two origins the same: scheme and host case-insensitive, default port explicit.

    None when the authority carries userinfo or a port that is not a number (never "ours")."""
    scheme = scheme.lower()
    if "@" in authority:
        return None
    if authority.startswith("["):
        host, bracket, port = authority[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            return None
        port = port[1:]
    else:
        host, _, port = authority.partition(":")
    if port and not (port.isascii() and port.isdigit()):
        return None
    default = DEFAULT_PORTS.get(scheme)
    number = int(port) if port else default
    if number is None:
        return None
    return scheme, host.lower(), number


def public_origin(configured: str) -> str:
    """``proxy.public_origin`` as the hosts use it: no trailing ``/``, the scheme in lower case
    (RFC 3986 §3.1: ``HTTPS`` is ``https``). Taken as written, ``HTTPS://…`` lost the cookies'
    Secure flag and told the site ``X-Forwarded-Proto: HTTPS``, which Django, Rails and Rack,
    comparing it with ``https``, take for plain http."""
    scheme, sep, rest = configured.rstrip("/").partition("://")
    return scheme.lower() + sep + rest


def rewrite_location(location: str, upstream_origin: str, public_origin: str) -> str:
    """Point an absolute Location at the upstream's own origin back at the public origin.

    Origins compare as RFC 3986 says: ``HTTP://UP`` and ``http://up:80`` are ``http://up``;
    ``http://up:8080`` is not. The rest of the Location is kept byte for byte."""
    parts = split_absolute(location)
    upstream = split_absolute(upstream_origin)
    if parts is None or upstream is None:
        return location
    key = origin_key(parts[0], parts[1])
    if key is None or key != origin_key(upstream[0], upstream[1]):
        return location
    return public_origin + parts[2]


# ``Refresh: 5; url=…`` (HTML's "shared declarative refresh steps": ``;`` or ``,``, ``url=`` and
# quotes optional); group 2 is the URL as sent.
_REFRESH_URL = re.compile(r"""([;,]\s*(?:url\s*=\s*)?['"]?)([^'"\s]+)""", re.IGNORECASE)


def rewrite_refresh(value: str, upstream_origin: str, public_origin: str) -> str:
    """A ``Refresh`` header's URL pointed back at the public origin as ``rewrite_location``
    points a ``Location`` (nginx's ``proxy_redirect`` rewrites both); the rest byte for byte."""
    match = _REFRESH_URL.search(value)
    if match is None:
        return value
    url = rewrite_location(match.group(2), upstream_origin, public_origin)
    return value[: match.start(2)] + url + value[match.end(2) :]


_UNSHARED = frozenset({"private", "no-store"})


def shared_cacheable(cache_control: Iterable[str]) -> bool:
    """Whether an answer with these ``Cache-Control`` values may be stored by a shared cache:
    it says neither ``private`` nor ``no-store`` (unqualified; any letter case). RFC 9111 §7.3:
    a ``Set-Cookie`` does not stop a cache from storing an answer and giving it to others, so
    one we add our cookie to gets ``Cache-Control: private`` when this is true."""
    for value in cache_control:
        for directive in value.split(","):
            name, eq, _ = directive.partition("=")
            if not eq and name.strip().lower() in _UNSHARED:
                return False
    return True


def cdn_cache_fields(names: Iterable[str]) -> tuple[list[str], str | None]:
    """The fields among a response's header ``names`` a CDN reads instead of ``Cache-Control``:
    the targeted ones (RFC 9213: ``CDN-Cache-Control`` and a CDN's own,
    ``Cloudflare-CDN-Cache-Control``), each once as first written, where a ``private`` must be
    too; and ``Surrogate-Control`` as first written,
    or None (W3C Edge Architecture 1.0: Fastly, Akamai, Varnish and Squid read it ahead of
    ``Cache-Control``; a Varnish configuration commonly ignores ``Cache-Control: private``
    when it is there). One pass over the names."""
    found: dict[str, str] = {}
    surrogate = None
    for name in names:
        lower = name.lower()
        if lower == "cdn-cache-control" or lower.endswith("-cdn-cache-control"):
            found.setdefault(lower, name)
        elif lower == "surrogate-control" and surrogate is None:
            surrogate = name
    return list(found.values()), surrogate


def list_items(value: str) -> list[str]:
    """A field value's comma-separated items, a comma inside a quoted string kept."""
    items = []
    quoted = False
    start = 0
    for i, char in enumerate(value):
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            items.append(value[start:i])
            start = i + 1
    items.append(value[start:])
    return items


def surrogate_no_store(values: Iterable[str]) -> str | None:
    """What an answer's ``Surrogate-Control`` lines (``values``) need beside them so that no
    surrogate stores it, or None when they already say so (W3C Edge Architecture 1.0): the field
    has no ``private``, only ``no-store`` (§2.2.1; ``no-store-remote`` leaves a surrogate near
    the site free to store it), and a directive may be targeted at one surrogate
    (``max-age=60;edge1``, §2.3), which then applies the directives targeted at it and not the
    others. So: ``no-store`` unless one untargeted is there, and ``no-store;<device>`` for each
    surrogate named that is not told ``no-store`` (``no-store, no-store;edge1``)."""
    untargeted = False
    targets: dict[str, bool] = {}
    for value in values:
        for item in list_items(value):
            directive, target = item, ""
            semicolon = item.rfind(";")
            if semicolon > item.rfind('"'):  # a device token after the directive
                directive, target = item[:semicolon], item[semicolon + 1 :].strip()
            no_store = directive.strip().lower() == "no-store"
            if not target:
                untargeted = untargeted or no_store
            elif not targets.get(target):
                targets[target] = no_store
    added = [] if untargeted else ["no-store"]
    added += [f"no-store;{target}" for target, no_store in targets.items() if not no_store]
    return ", ".join(added) or None


def cache_lines_to_add(names: Iterable[str], values: Callable[[str], Iterable[str]]) -> list[tuple[str, str]]:
    """The lines to add to an answer we set a cookie on, lest a shared cache keep it and give
    our cookie to others (both hosts): ``private`` for ``Cache-Control`` (absent too) and every
    CDN's own targeted field (``cdn_cache_fields``) that says neither ``private`` nor
    ``no-store``; what ``surrogate_no_store`` says for a ``Surrogate-Control`` there, under its
    name as written. ``names``: the answer's header names; ``values``: a field's values (none
    when absent)."""
    targeted, surrogate = cdn_cache_fields(names)
    lines = [(name, "private") for name in ("Cache-Control", *targeted) if shared_cacheable(values(name))]
    if surrogate is not None:
        added = surrogate_no_store(values(surrogate))
        if added is not None:
            lines.append((surrogate, added))
    return lines


_COOKIE_SAFE_VALUE = re.compile(r"[A-Za-z0-9._~-]*")


@functools.lru_cache(maxsize=32)
def _cookie_attributes(
    max_age: int, path: str, domain: str, secure: bool, httponly: bool, samesite: str
) -> str:
    """The ``; Path=/; Max-Age=…`` part of a Set-Cookie, rendered by ``http.cookies`` once per
    attribute set (it is the same for every visitor; only the value changes)."""
    morsel: http.cookies.Morsel[str] = http.cookies.Morsel()
    morsel.set("n", "v", "v")
    morsel.update({"max-age": str(max_age), "path": path, "samesite": samesite})
    if domain:
        morsel["domain"] = domain
    morsel["secure"] = secure
    morsel["httponly"] = httponly
    return morsel.OutputString().partition(";")[2]


def set_cookie_line(cookie: Cookie) -> str:
    """The ``Set-Cookie`` value both hosts write for ``cookie``: attributes as ``http.cookies``
    renders them; the value as it is when it needs no quoting, an empty one included
    (``gw_vid=;``, the ID expired on an opt-out or a withdrawal), else quoted by the library.
    Until 2026-12-07 the mitmproxy host let the library quote an empty value (``gw_vid="";``)."""
    value = cookie.value
    if not _COOKIE_SAFE_VALUE.fullmatch(value):
        value = http.cookies.SimpleCookie().value_encode(value)[1]
    attributes = _cookie_attributes(
        cookie.max_age, cookie.path, cookie.domain, cookie.secure, cookie.httponly, cookie.samesite
    )
    return f"{cookie.name}={value};{attributes}"
