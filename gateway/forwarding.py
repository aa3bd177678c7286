"""HTTP forwarding rules, as pure functions: hop-by-hop headers, client IP, Location rewriting.

Owns what RFC 9110 says a proxy must drop, whom to believe about the client's
address (X-Forwarded-For only from trusted peers), and how an upstream's
self-referencing redirect is turned into the public origin.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

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


def connection_tokens(values: Iterable[str]) -> frozenset[str]:
    """Header names listed in ``Connection`` (they are hop-by-hop for this connection only)."""
    return frozenset(token.strip().lower() for value in values for token in value.split(",") if token.strip())


def parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = value.strip()
    if value.startswith("[") and "]" in value:  # "[::1]:443"
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # "1.2.3.4:5678"
        value = value.partition(":")[0]
    try:
        ip = ipaddress.ip_address(value)
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
    for entry in reversed(forwarded_for.split(",")):
        addr = parse_ip(entry)
        if addr is None:
            break  # garbage in the chain: trust nothing left of it
        if not any(addr in net for net in trusted):
            return str(addr)
    return peer or ""


def rewrite_location(location: str, upstream_origin: str, public_origin: str) -> str:
    """Point an absolute Location at the upstream's own origin back at the public origin."""
    if not location.startswith(upstream_origin):
        return location
    rest = location[len(upstream_origin) :]
    if rest and rest[0] not in "/?#":
        return location  # e.g. http://upstream:80 vs http://upstream:8080
    return public_origin + rest
