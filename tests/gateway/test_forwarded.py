"""RFC 7239 ``Forwarded`` from a trusted front proxy: the visitor's address (the stored
``ip_hash``), scheme (the cookie's ``Secure``) and host, read as X-Forwarded-For is; what the site
receives for these headers unchanged. A real gateway on loopback, a real SQLite store, a real
aiohttp origin."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from pathlib import Path

import pytest
from aiohttp import web
from multidict import CIMultiDictProxy

from gateway import forwarding
from tests.conftest import GatewayFactory, RunningGateway
from tests.gateway.test_proxy import add_probe, app_of

TRUSTED = '[proxy]\ntrusted_proxies = ["127.0.0.1/32"]\ntrusted_header = "forwarded"\n'
"""A front proxy that writes ``Forwarded`` (HAProxy's ``option forwarded``), so said."""
X_TRUSTED = '[proxy]\ntrusted_proxies = ["127.0.0.1/32"]\n'
"""A front proxy that writes X-Forwarded-* (nginx, the default ``proxy.trusted_header``)."""


def store_toml(tmp_path: Path, extra: str = "") -> str:
    return f'[storage]\npath = "{tmp_path / "f.db"}"\nnode = "f"\n{TRUSTED}{extra}'


def _ip_hash_of(path: Path, campaign: str) -> str:
    with contextlib.closing(sqlite3.connect(path)) as db:
        (hashed,) = db.execute("SELECT ip_hash FROM touchpoints WHERE campaign = ?", (campaign,)).fetchone()
    assert hashed
    return str(hashed)


async def ip_hash_of(path: Path, campaign: str) -> str:
    return await asyncio.to_thread(_ip_hash_of, path, campaign)


async def start(start_gateway: GatewayFactory, upstream_server, toml: str) -> tuple[RunningGateway, list]:
    seen: list[CIMultiDictProxy[str]] = []

    async def page(request: web.Request) -> web.Response:
        seen.append(request.headers)
        return web.Response(text="ok")

    return await start_gateway(await upstream_server(app_of(page)), toml), seen


async def landing(gw: RunningGateway, campaign: str, headers: list[tuple[str, str]]) -> str:
    """A landing of ``campaign`` with ``headers``; its ``Set-Cookie`` for our cookie."""
    url = f"{gw.url}/p?utm_source=news&utm_campaign={campaign}"
    async with gw.session.get(url, headers=[("Host", "shop.test"), *headers]) as resp:
        assert resp.status == 200, await resp.text()
        [line] = [v for v in resp.headers.getall("Set-Cookie", ()) if v.startswith("gw_vid=")]
    return line


def secure(set_cookie: str) -> bool:
    return "secure" in [part.strip().lower() for part in set_cookie.split(";")]


@pytest.mark.parametrize(
    ("forwarded", "same_as"),
    [
        ("for=203.0.113.7;proto=https;host=shop.test", "203.0.113.7"),
        ('for="203.0.113.7:51234";proto="https"', "203.0.113.7"),
        ('for="[2001:db8::1]:4711";proto=https', "2001:db8::1"),
        ("For=203.0.113.7; Proto=HTTPS", "203.0.113.7"),
    ],
)
async def test_a_trusted_proxys_forwarded_is_the_visitors_address_and_scheme(
    tmp_path: Path, start_gateway: GatewayFactory, upstream_server, forwarded: str, same_as: str
) -> None:
    """Behind a front proxy that writes only ``Forwarded`` (HAProxy's ``option forwarded``),
    so said (``proxy.trusted_header = "forwarded"``), the visitor is its ``for=`` and reached it
    over its ``proto=``: the stored ``ip_hash`` is the address's however written, not the
    proxy's, and the cookie is
    ``Secure``. Until 2026-12-07 every visitor was the proxy, over plain http (no ``Secure``)."""
    gw, seen = await start(start_gateway, upstream_server, store_toml(tmp_path))
    cookie = await landing(gw, "fwd", [("Forwarded", forwarded)])
    bare = f'for="[{same_as}]"' if ":" in same_as else f"for={same_as}"
    await landing(gw, "bare", [("Forwarded", bare)])  # the same address, written plainly
    await landing(gw, "proxy", [])
    store = gw.gateway.settings.store_path
    assert await ip_hash_of(store, "fwd") == await ip_hash_of(store, "bare")
    assert await ip_hash_of(store, "fwd") != await ip_hash_of(store, "proxy")
    assert secure(cookie)
    # What the site gets for these headers is as before: the proxy's Forwarded as it came, and
    # the gateway's hop in X-Forwarded-* (the peer, the connection's scheme, the Host).
    site = seen[0]
    assert site.getall("Forwarded") == [forwarded]
    assert site.getall("X-Forwarded-For") == ["127.0.0.1"]
    assert site.getall("X-Forwarded-Proto") == ["http"]
    assert site.getall("X-Forwarded-Host") == ["shop.test"]


async def view_of(
    start_gateway: GatewayFactory, upstream_server, lines: list[tuple[str, str]], toml: str = TRUSTED
) -> tuple[str, str, str, CIMultiDictProxy[str]]:
    gw, seen = await start(start_gateway, upstream_server, toml)
    probe = add_probe(gw)
    async with gw.session.get(gw.url + "/p", headers=[("Host", "shop.test"), *lines]) as resp:
        assert resp.status == 200, await resp.text()
    [ex] = probe.seen
    return ex.request.client_ip, ex.request.scheme, ex.request.host, seen[0]


TWO = '[proxy]\ntrusted_proxies = ["127.0.0.1/32", "127.0.0.2/32"]\ntrusted_header = "forwarded"\n'


@pytest.mark.parametrize(
    ("lines", "toml", "expected"),
    [
        # No address to read: unknown, an obfuscated identifier, none at all: the proxy is the
        # client, as an X-Forwarded-For entry that is no address makes it; its proto and host hold.
        ([("Forwarded", "for=unknown;proto=https;host=a.test")], TRUSTED, ("127.0.0.1", "https", "a.test")),
        ([("Forwarded", "for=_hidden;proto=https")], TRUSTED, ("127.0.0.1", "https", "shop.test")),
        ([("Forwarded", 'for="_gazonk:_port"')], TRUSTED, ("127.0.0.1", "http", "shop.test")),
        ([("Forwarded", "proto=https")], TRUSTED, ("127.0.0.1", "https", "shop.test")),
        # Several elements, the walk from the right over trusted hops: a visitor's own element to
        # the left of the first proxy's is not believed, nor the second proxy's proto and host.
        (
            [
                (
                    "Forwarded",
                    "for=6.6.6.6;proto=http;host=evil.test, for=203.0.113.7;proto=https;host=shop.example,"
                    " for=127.0.0.2;proto=http;host=lb.internal",
                )
            ],
            TWO,
            ("203.0.113.7", "https", "shop.example"),
        ),
        # The same over several lines, one list in order.
        (
            [
                ("Forwarded", "for=6.6.6.6;proto=http;host=evil.test"),
                ("Forwarded", "for=203.0.113.7;proto=https;host=shop.example"),
                ("Forwarded", "for=127.0.0.2;proto=http;host=lb.internal"),
            ],
            TWO,
            ("203.0.113.7", "https", "shop.example"),
        ),
        # A visitor's own line that cannot be parsed, left of the proxy's: never reached, not read.
        (
            [("Forwarded", 'for="6.6.6.6;proto=http'), ("Forwarded", "for=203.0.113.7;proto=https")],
            TRUSTED,
            ("203.0.113.7", "https", "shop.test"),
        ),
        # Only trusted hops: the peer, and the left-most (the first proxy's) proto and host.
        ([("Forwarded", "for=127.0.0.2;proto=https;host=a.test")], TWO, ("127.0.0.1", "https", "a.test")),
        # An obfuscated hop in the chain: trust nothing left of it, as X-Forwarded-For.
        (
            [("Forwarded", "for=203.0.113.7;proto=http, for=_lb1;proto=https;host=a.test")],
            TRUSTED,
            ("127.0.0.1", "https", "a.test"),
        ),
        # Both, from a proxy that writes Forwarded: only it is read, never mixed with X-Forwarded-*
        # (a proto it does not say stays the connection's, not X-Forwarded-Proto's).
        (
            [
                ("X-Forwarded-For", "198.51.100.9"),
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Host", "x.test"),
                ("Forwarded", "for=203.0.113.7"),
            ],
            TRUSTED,
            ("203.0.113.7", "http", "shop.test"),
        ),
        # Both, from a proxy that writes X-Forwarded-* (nginx, the default): the Forwarded it passed
        # on is the visitor's own, never believed (reading whichever came would have been).
        (
            [
                ("Forwarded", "for=6.6.6.6;proto=https;host=evil.test"),
                ("X-Forwarded-For", "198.51.100.9"),
                ("X-Forwarded-Proto", "http"),
            ],
            X_TRUSTED,
            ("198.51.100.9", "http", "shop.test"),
        ),
        (
            [("Forwarded", "for=6.6.6.6;proto=https;host=evil.test")],
            X_TRUSTED,
            ("127.0.0.1", "http", "shop.test"),
        ),
        # And the other way: a proxy said to write Forwarded passes a visitor's X-Forwarded-* on.
        (
            [
                ("X-Forwarded-For", "6.6.6.6"),
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Host", "evil.test"),
            ],
            TRUSTED,
            ("127.0.0.1", "http", "shop.test"),
        ),
        (
            [("Forwarded", ""), ("X-Forwarded-For", "198.51.100.9"), ("X-Forwarded-Proto", "https")],
            TRUSTED,
            ("127.0.0.1", "http", "shop.test"),
        ),
    ],
)
async def test_forwarded_forms(
    start_gateway: GatewayFactory,
    upstream_server,
    lines: list[tuple[str, str]],
    toml: str,
    expected: tuple[str, str, str],
) -> None:
    ip, scheme, host, site = await view_of(start_gateway, upstream_server, lines, toml)
    assert (ip, scheme, host) == expected
    assert site.getall("Forwarded", []) == [value for name, value in lines if name == "Forwarded"]


async def test_a_visitors_own_forwarded_is_not_believed(
    start_gateway: GatewayFactory, upstream_server
) -> None:
    """From a peer not in ``proxy.trusted_proxies`` ``Forwarded`` is neither read nor passed on."""
    lines = [("Forwarded", "for=203.0.113.7;proto=https;host=evil.test")]
    ip, scheme, host, site = await view_of(start_gateway, upstream_server, lines, "")
    assert (ip, scheme, host) == ("127.0.0.1", "http", "shop.test")
    assert "Forwarded" not in site


async def test_a_visitors_element_with_a_parameter_twice_on_the_proxys_line_is_not_read(
    start_gateway: GatewayFactory, upstream_server
) -> None:
    """An nginx that appends its element to the visitor's ``Forwarded`` on the same line (the
    ``$proxy_add_forwarded`` recipe, whose check of the visitor's part is of its syntax alone)
    passes ``for=a;for=b`` on. Until 2026-12-07 that parameter twice, left of where the walk stops,
    failed the whole line: every such visitor was taken for the proxy (its address: one visitor's
    wrong admin tokens locked everyone behind the proxy out, its bot counts were the proxy's)."""
    lines = [("Forwarded", "for=198.51.100.9;for=192.0.2.1, for=203.0.113.7;proto=https;host=shop.test")]
    ip, scheme, host, _ = await view_of(start_gateway, upstream_server, lines)
    assert (ip, scheme, host) == ("203.0.113.7", "https", "shop.test")


async def test_a_parameter_twice_where_the_walk_goes_is_still_malformed(
    start_gateway: GatewayFactory, upstream_server
) -> None:
    """Past a trusted proxy's element, the walk reaches one with a parameter twice: which is
    meant cannot be told, and the hop is the client, as when it is the right-most."""
    forwarding._said_malformed.clear()
    lines = [("Forwarded", "for=198.51.100.9;for=192.0.2.1;proto=https, for=127.0.0.1")]
    ip, scheme, host, _ = await view_of(start_gateway, upstream_server, lines)
    assert (ip, scheme, host) == ("127.0.0.1", "http", "shop.test")


@pytest.mark.parametrize(
    "forwarded",
    [
        'for="203.0.113.7;proto=https',  # a quoted string not closed
        "for=203.0.113.7;for=198.51.100.9;proto=https",  # a parameter twice in one element
        "for 203.0.113.7;proto=https",  # not name=value
        'for="203.0.113.7"x;proto=https',  # something after a quoted string
        # The proxy's own element unreadable, after a visitor's that reads: the proxy's to fix.
        'for=198.51.100.9, for="203.0.113.7;proto=https',
    ],
)
async def test_a_malformed_forwarded_makes_the_proxy_the_client(
    tmp_path: Path,
    start_gateway: GatewayFactory,
    upstream_server,
    caplog: pytest.LogCaptureFixture,
    forwarded: str,
) -> None:
    """A trusted proxy's ``Forwarded`` that cannot be parsed: the request is answered (no 500), its
    hop is the client (address, scheme, Host: its X-Forwarded-* are not read instead, never mixed),
    the cookie not ``Secure``, and the operator is told once per cause, naming the header."""
    forwarding._said_malformed.clear()  # once per cause in a process: other tests may have said it
    gw, seen = await start(start_gateway, upstream_server, store_toml(tmp_path))
    lines = [("Forwarded", forwarded), ("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https")]
    probe = add_probe(gw)
    with caplog.at_level(logging.WARNING):
        cookie = await landing(gw, "bad", lines)
        await landing(gw, "bad2", lines)
    await landing(gw, "proxy", [])
    store = gw.gateway.settings.store_path
    assert await ip_hash_of(store, "bad") == await ip_hash_of(store, "proxy")
    assert not secure(cookie)
    ex = probe.seen[0]
    assert (ex.request.client_ip, ex.request.scheme, ex.request.host) == ("127.0.0.1", "http", "shop.test")
    said = [
        r.getMessage() for r in caplog.records if "Forwarded header that cannot be read" in r.getMessage()
    ]
    assert len(said) == 1, said
    assert "proxy.trusted_proxies" in said[0]
    assert seen[0].getall("Forwarded") == [forwarded]


VISITORS_GARBAGE = 'for="198.51.100.9'
"""A visitor's own ``Forwarded`` with a quoted string not closed, which a front proxy passes on."""


async def test_a_visitors_unclosed_quote_on_a_line_of_its_own_does_not_hide_the_proxys_line(
    start_gateway: GatewayFactory, upstream_server, caplog: pytest.LogCaptureFixture
) -> None:
    """A front proxy that adds its ``Forwarded`` as a line of its own (HAProxy's ``option
    forwarded``) after a visitor's that cannot be parsed: the walk reads the proxy's line first and
    stops at its element, so the visitor is the proxy's ``for=``, over its ``proto=``; the
    visitor's line is never read, nothing is logged, and the site gets both lines as they came."""
    forwarding._said_malformed.clear()
    lines = [("Forwarded", VISITORS_GARBAGE), ("Forwarded", "for=203.0.113.7;proto=https")]
    with caplog.at_level(logging.DEBUG, logger="gateway.proxy"):
        ip, scheme, host, site = await view_of(start_gateway, upstream_server, lines)
    assert (ip, scheme, host) == ("203.0.113.7", "https", "shop.test")
    assert not [r for r in caplog.records if "Forwarded" in r.getMessage()]
    assert site.getall("Forwarded") == [VISITORS_GARBAGE, "for=203.0.113.7;proto=https"]


@pytest.mark.parametrize(
    ("line", "toml"),
    [
        (f"{VISITORS_GARBAGE}, for=203.0.113.7;proto=https", TRUSTED),
        (f"{VISITORS_GARBAGE},for=203.0.113.7;proto=https;host=shop.example", TRUSTED),
        # Through two trusted proxies, both appending to the line.
        (f"{VISITORS_GARBAGE}, for=203.0.113.7;proto=https, for=127.0.0.2", TWO),
    ],
)
async def test_a_visitors_unclosed_quote_on_the_proxys_line_is_the_proxy_logged_at_debug(
    start_gateway: GatewayFactory,
    upstream_server,
    caplog: pytest.LogCaptureFixture,
    line: str,
    toml: str,
) -> None:
    """A front proxy that appends its element to the visitor's ``Forwarded`` on the same line,
    after a quoted string the visitor left open: where the visitor's part ends cannot be told (the
    quote may close anywhere to its right), so nothing on the line is believed, as before: the
    request is answered (no 500), its hop is the client (the proxy's address, the connection's
    scheme, ``Host``). The proxy's own element reads alone, so it is the visitor's doing, not the
    proxy's: logged at debug each time, not at warning. Until 2026-12-07 a warning said that the
    trusted proxy writes an unreadable ``Forwarded`` and should be fixed, which it need not be."""
    forwarding._said_malformed.clear()
    with caplog.at_level(logging.DEBUG, logger="gateway.proxy"):
        ip, scheme, host, site = await view_of(start_gateway, upstream_server, [("Forwarded", line)], toml)
        await view_of(start_gateway, upstream_server, [("Forwarded", line)], toml)
    assert (ip, scheme, host) == ("127.0.0.1", "http", "shop.test")
    said = [r for r in caplog.records if "Forwarded" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.DEBUG, logging.DEBUG], [r.getMessage() for r in said]
    assert "a quoted string not closed" in said[0].getMessage()
    assert "198.51.100.9" not in said[0].getMessage()  # no address in the log
    assert site.getall("Forwarded") == [line]
