"""The pure forwarding rules: hop-by-hop tokens, whom to believe about the client's address,
and which Locations point back at the upstream."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.forwarding import (
    HOP_BY_HOP,
    at_hop,
    client_hop,
    client_ip,
    connection_tokens,
    is_trusted,
    origin_key,
    parse_ip,
    rewrite_location,
    rewrite_refresh,
    shared_cacheable,
    surrogate_no_store,
    underscored_claim,
)

LOOPBACK = (ipaddress.ip_network("127.0.0.1/32"),)
PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))


@pytest.mark.parametrize(
    ("values", "tokens"),
    [
        ([], frozenset()),
        (["close"], {"close"}),
        (["keep-alive, X-Named-Hop"], {"keep-alive", "x-named-hop"}),
        (["Upgrade", " TE ,, "], {"upgrade", "te"}),
        ([",,", ""], frozenset()),
    ],
)
def test_connection_tokens(values: list[str], tokens: set[str]) -> None:
    assert connection_tokens(values) == tokens


@pytest.mark.parametrize(
    ("name", "claim"),
    [
        ("x_forwarded_for", True),
        ("x-forwarded_proto", True),
        ("x_forwarded-prefix", True),
        ("x_forwarded_anything", True),
        ("x_real_ip", True),
        ("x_requested_with", False),
        ("my_header", False),
        ("x_forwarded", False),  # not of the family (no name after the prefix's dash)
    ],
)
def test_underscored_claim(name: str, claim: bool) -> None:
    assert underscored_claim(name) is claim


def test_hop_by_hop_covers_rfc_9110() -> None:
    assert {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    } <= (HOP_BY_HOP)


@pytest.mark.parametrize(
    ("value", "ip"),
    [
        ("1.2.3.4", "1.2.3.4"),
        (" 1.2.3.4 ", "1.2.3.4"),
        ("1.2.3.4:5678", "1.2.3.4"),
        ("::1", "::1"),
        ("[::1]:443", "::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("::ffff:10.1.2.3", "10.1.2.3"),
        ("", None),
        ("unknown", None),
        ("999.1.1.1", None),
        ("1.2.3.4:", None),
        ("[::1", None),
        ("_hidden", None),
    ],
)
def test_parse_ip(value: str, ip: str | None) -> None:
    parsed = parse_ip(value)
    assert (str(parsed) if parsed is not None else None) == ip


@pytest.mark.parametrize(
    ("peer", "trusted", "expected"),
    [
        ("127.0.0.1", LOOPBACK, True),
        ("127.0.0.2", LOOPBACK, False),
        ("::ffff:127.0.0.1", LOOPBACK, True),
        ("10.9.8.7", PROXIES, True),
        ("::1", PROXIES, True),
        ("127.0.0.1", (), False),
        (None, LOOPBACK, False),
        ("", LOOPBACK, False),
        ("garbage", LOOPBACK, False),
    ],
)
def test_is_trusted(peer: str | None, trusted: tuple[ipaddress.IPv4Network, ...], expected: bool) -> None:
    assert is_trusted(peer, trusted) is expected


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "trusted", "ip"),
    [
        # Nobody trusted: the header is ignored whatever it says.
        ("198.51.100.1", "203.0.113.7", (), "198.51.100.1"),
        ("127.0.0.1", "203.0.113.7", (), "127.0.0.1"),
        # A peer that is not one of ours cannot vouch for anybody.
        ("198.51.100.1", "203.0.113.7", LOOPBACK, "198.51.100.1"),
        # A trusted peer: the right-most entry that is not itself a trusted proxy.
        ("127.0.0.1", "203.0.113.7", LOOPBACK, "203.0.113.7"),
        ("127.0.0.1", "1.1.1.1, 203.0.113.7", LOOPBACK, "203.0.113.7"),
        ("10.0.0.1", "203.0.113.7, 10.0.0.2, 10.0.0.3", PROXIES, "203.0.113.7"),
        ("10.0.0.1", "203.0.113.7:5555", PROXIES, "203.0.113.7"),
        ("10.0.0.1", "[2001:db8::7]:443", PROXIES, "2001:db8::7"),
        # Only trusted proxies in the chain: the peer is all we know.
        ("10.0.0.1", "10.0.0.2", PROXIES, "10.0.0.1"),
        # Empty or garbage: believe nothing left of the garbage.
        ("127.0.0.1", None, LOOPBACK, "127.0.0.1"),
        ("127.0.0.1", "", LOOPBACK, "127.0.0.1"),
        ("127.0.0.1", "unknown", LOOPBACK, "127.0.0.1"),
        ("127.0.0.1", "203.0.113.7, garbage", LOOPBACK, "127.0.0.1"),
        ("127.0.0.1", "garbage, 203.0.113.7", LOOPBACK, "203.0.113.7"),
        ("127.0.0.1", ",,,", LOOPBACK, "127.0.0.1"),
        ("127.0.0.1", "999.999.999.999", LOOPBACK, "127.0.0.1"),
        (None, "203.0.113.7", LOOPBACK, ""),
    ],
)
def test_client_ip(
    peer: str | None, forwarded_for: str | None, trusted: tuple[ipaddress.IPv4Network, ...], ip: str
) -> None:
    assert client_ip(peer, forwarded_for, trusted) == ip


@pytest.mark.parametrize(
    ("forwarded_for", "proto", "expected"),
    [
        # Two trusted hops, each appending: the visitor reached the first over https, the first
        # reached the second over http. The scheme is the entry at the client's place.
        ("203.0.113.7, 10.0.0.2", "https, http", "https"),
        ("203.0.113.7, 10.0.0.2", "http, https", "http"),
        # One hop: the right-most, as before.
        ("203.0.113.7", "https", "https"),
        ("1.1.1.1, 203.0.113.7", "http, https", "https"),  # the visitor's own claim to the left
        # The first proxy set it alone and the next passed it on: one value, that one.
        ("203.0.113.7, 10.0.0.2", "https", "https"),
        ("203.0.113.7, 10.0.0.2, 10.0.0.3", "https, http", "https"),  # fewer than the hops: the first
        # No client in the chain (only proxies, or garbage): the right-most, as before.
        ("10.0.0.2", "https, http", "http"),
        ("203.0.113.7, garbage", "https, http", "http"),
        (None, "https, http", "http"),
    ],
)
def test_the_visitors_scheme_is_at_the_clients_place(
    forwarded_for: str | None, proto: str, expected: str
) -> None:
    """With ``proxy.trusted_proxies`` covering two hops, the client is the right-most
    X-Forwarded-For entry that is no trusted proxy, and the scheme it used is the
    X-Forwarded-Proto entry at the same place (each proxy appends one to each): until
    2026-12-07 the right-most was read, the scheme between the two proxies."""
    hop = client_hop(forwarded_for, PROXIES)
    assert at_hop(proto, hop[1] if hop else 0) == expected


@pytest.mark.parametrize(
    ("scheme", "authority", "key"),
    [
        ("http", "up", ("http", "up", 80)),
        ("HTTP", "UP:80", ("http", "up", 80)),
        ("https", "up", ("https", "up", 443)),
        ("http", "up:8080", ("http", "up", 8080)),
        ("http", "[::1]:8080", ("http", "::1", 8080)),
        ("http", "[::1]", ("http", "::1", 80)),
        ("http", "up:", ("http", "up", 80)),
        ("http", "user@up", None),
        ("http", "up:80x", None),
        ("http", "[::1]x", None),
        ("ftp", "up", None),
    ],
)
def test_origin_key(scheme: str, authority: str, key: tuple[str, str, int] | None) -> None:
    assert origin_key(scheme, authority) == key


PUBLIC = "https://www.shop.test"


@pytest.mark.parametrize(
    ("location", "upstream", "rewritten"),
    [
        ("http://up:8080/a?b=1#c", "http://up:8080", PUBLIC + "/a?b=1#c"),
        ("http://up:8080", "http://up:8080", PUBLIC),
        ("http://up:8080?x=1", "http://up:8080", PUBLIC + "?x=1"),
        ("http://up:8080#top", "http://up:8080", PUBLIC + "#top"),
        # Default ports and case do not make a different origin.
        ("http://up:80/a", "http://up", PUBLIC + "/a"),
        ("http://up/a", "http://up:80", PUBLIC + "/a"),
        ("HTTP://UP/a%2Fb", "http://up", PUBLIC + "/a%2Fb"),
        ("http://Up:8080/a", "http://up:8080", PUBLIC + "/a"),
        # A different port, scheme or host is somebody else.
        ("http://up:8080/a", "http://up", "http://up:8080/a"),
        ("http://up/a", "http://up:8080", "http://up/a"),
        ("http://up:80800/a", "http://up:8080", "http://up:80800/a"),
        ("http://up.evil/a", "http://up", "http://up.evil/a"),
        ("http://upx/a", "http://up", "http://upx/a"),
        ("https://up/a", "http://up", "https://up/a"),
        ("http://user@up/a", "http://up", "http://user@up/a"),
        # Relative and odd Locations are left alone.
        ("/a", "http://up", "/a"),
        ("//up/a", "http://up", "//up/a"),
        ("a/b", "http://up", "a/b"),
        ("", "http://up", ""),
        ("mailto:x@up", "http://up", "mailto:x@up"),
        ("http://[::1]:8080/a", "http://[::1]:8080", PUBLIC + "/a"),
    ],
)
def test_rewrite_location(location: str, upstream: str, rewritten: str) -> None:
    assert rewrite_location(location, upstream, PUBLIC) == rewritten


@pytest.mark.parametrize(
    ("refresh", "rewritten"),
    [
        ("0; url=http://up:8080/a?b=%2F", "0; url=" + PUBLIC + "/a?b=%2F"),
        ("5;URL='http://UP:8080/x'", "5;URL='" + PUBLIC + "/x'"),
        ('2, url="http://up:8080"', '2, url="' + PUBLIC + '"'),
        ("0;url = http://up:8080/y", "0;url = " + PUBLIC + "/y"),
        ("1; http://up:8080/z", "1; " + PUBLIC + "/z"),  # url= is optional (HTML)
        ("0; url=http://up:8081/a", "0; url=http://up:8081/a"),
        ("0; url=/a", "0; url=/a"),
        ("30", "30"),
        ("", ""),
    ],
)
def test_rewrite_refresh(refresh: str, rewritten: str) -> None:
    assert rewrite_refresh(refresh, "http://up:8080", PUBLIC) == rewritten


@pytest.mark.parametrize(
    ("cache_control", "shared"),
    [
        ([], True),
        (["public, max-age=3600"], True),
        (["no-cache"], True),  # stored, revalidated: a 304 would hand the stored cookie on
        (['private="Set-Cookie"'], True),  # only the unqualified form keeps the whole answer
        (["max-age=60", "Private"], False),
        (["public", " no-store "], False),
        (["max-age=0,private"], False),
    ],
)
def test_shared_cacheable(cache_control: list[str], shared: bool) -> None:
    assert shared_cacheable(cache_control) is shared


@pytest.mark.parametrize(
    ("surrogate_control", "added"),
    [
        (["max-age=600"], "no-store"),
        (["max-age=60+30, No-Store"], None),
        (["no-store-remote"], "no-store"),  # a surrogate near the site may still store it
        (["no-store;edge1"], "no-store"),  # surrogates other than edge1 read no directive for them
        (["max-age=60;edge1"], "no-store, no-store;edge1"),
        (["max-age=60;edge1, no-store;edge2", "max-age=5;edge1"], "no-store, no-store;edge1"),
        (["no-store, max-age=60;edge1", "no-store ; edge1"], None),
        # A quoted content list holds commas and semicolons of its own.
        (['content="ESI/1.0, x;y";edge1, no-store'], "no-store;edge1"),
        (['content="ESI/1.0;z"'], "no-store"),
        ([", ,"], "no-store"),
    ],
)
def test_surrogate_no_store(surrogate_control: list[str], added: str | None) -> None:
    """What ``Surrogate-Control`` (W3C Edge Architecture 1.0 §2.2-2.3) needs beside it so that no
    surrogate stores an answer carrying our cookie: None when every one is told ``no-store``."""
    assert surrogate_no_store(surrogate_control) == added
