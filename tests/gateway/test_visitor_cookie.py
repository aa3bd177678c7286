"""The visitor ID cookie as real browsers and hostile clients send it, through a real gateway
to a real origin on 127.0.0.1 that records the exact ``Cookie`` lines it receives and sets
cookies of its own: the site's cookies pass both ways as sent, ours beside them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from addons.identity import cookie_value
from gateway.keys import Keys
from tests.conftest import TOKEN, RunningGateway, make_settings
from tests.gateway.test_malformed import RawResponse, raw_request

PAGE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def signed(tmp_path: Path, letter: str) -> str:
    """A valid ID cookie value, as the gateway under test issues it."""
    keys = Keys.from_master(make_settings(tmp_path).secret)
    return cookie_value(keys.cookie_mac, letter * 22)


class Origin:
    """A site that records each request's ``Cookie`` lines, as bytes, and gives ``answer``."""

    def __init__(self, answer: bytes = PAGE) -> None:
        self.answer = answer
        self.cookies: list[list[bytes]] = []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            self.cookies.append([line[8:] for line in lines if line.lower().startswith(b"cookie: ")])
            writer.write(self.answer)
            await writer.drain()


async def get(gw: RunningGateway, target: str, *lines: bytes, host: bytes = b"shop.test") -> RawResponse:
    """A page load of ``target`` with the header ``lines`` as written."""
    head = b"GET " + target.encode() + b" HTTP/1.1\r\nHost: " + host + b"\r\nAccept: text/html\r\n"
    return await raw_request(gw.proxy.port, head + b"".join(line + b"\r\n" for line in lines) + b"\r\n")


async def rejected(gw: RunningGateway) -> float:
    async with gw.session.get(
        gw.admin_url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
    ) as resp:
        text = await resp.text()
    [line] = [line for line in text.splitlines() if line.startswith("gateway_cookies_rejected_total ")]
    return float(line.split()[1])


def ours(reply: RawResponse) -> list[str]:
    return [line for line in reply.headers.getall("Set-Cookie", []) if line.startswith("gw_vid=")]


@pytest.mark.parametrize(
    "sent",
    [
        [b"a=1;b=2"],
        [b"a=1 ;  b=2"],
        [b";;a=1;; b=2;"],
        [b"a=1; flag; b=2"],
        [b'a="x y"; b="q"'],
        [b"a=caf\xe9; b=\xe2\x82\xac"],
        [b"a=1", b"b=2"],  # two lines (RFC 6265 says one; HTTP/1.1 clients may send two)
        [b"gw_vid=ID; a=1"],  # ours first, in the middle, last, alone: passed on as sent
        [b"a=1; gw_vid=ID; b=2"],
        [b"a=1;gw_vid=ID"],
        [b"gw_vid=ID"],
        [b"a=1", b"gw_vid=ID"],
        [b""],
    ],
)
async def test_the_site_gets_the_visitors_cookie_lines_byte_for_byte(
    start_gateway, raw_upstream, tmp_path: Path, sent: list[bytes]
) -> None:
    site = Origin()
    gw = await start_gateway(await raw_upstream(site))
    sent = [line.replace(b"ID", signed(tmp_path, "A").encode()) for line in sent]
    reply = await get(gw, "/p", *(b"Cookie: " + line for line in sent))
    assert reply.status == 200
    assert site.cookies == [sent]


async def test_the_sites_set_cookie_lines_reach_the_visitor_in_order_before_ours(
    start_gateway, raw_upstream, tmp_path: Path
) -> None:
    """Several lines, an ``Expires`` with its comma: each as the site wrote it, in its order;
    ours after them where we set one (a landing); none of ours on a returning visitor's plain
    page. (One of our cookie's name: ``test_a_site_cookie_of_our_name_is_left_to_the_site``.)"""
    site_lines = [
        b"session=s1; Path=/; HttpOnly",
        b"gw_vid_theme=site-value; Path=/",
        b"pref=dark; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Path=/",
        b"x=1",
    ]
    answer = b"HTTP/1.1 200 OK\r\n" + b"".join(b"Set-Cookie: " + line + b"\r\n" for line in site_lines)
    gw = await start_gateway(await raw_upstream(Origin(answer + b"Content-Length: 2\r\n\r\nok")))
    visitor = b"Cookie: gw_vid=" + signed(tmp_path, "A").encode()
    landing = await get(gw, "/p?utm_source=news", visitor)
    plain = await get(gw, "/p", visitor)
    expected = [line.decode() for line in site_lines]
    assert landing.headers.getall("Set-Cookie")[:-1] == expected
    assert landing.headers.getall("Set-Cookie")[-1].startswith(f"gw_vid={signed(tmp_path, 'A')}; ")
    assert plain.headers.getall("Set-Cookie") == expected


@pytest.mark.parametrize(
    "forged",
    [
        "v1.AAAAAAAAAAAAAAAAAAAAAA.KSN4OTIuv7-tqXSE44sEWw",  # well-formed, its tag edited
        "TRUNCATED",
        "v1." + "A" * 10_000,
        "VALID" + "A" * 10_000,
        "PADDED",
        "URLENCODED",
        "v1.AAAAAAAAA\tAAAAAAAAAAAA.JSN4OTIuv7-tqXSE44sEWw",
        "v1.AAAAAAAAAéAAAAAAAAAAAA.JSN4OTIuv7-tqXSE44sEWw",
        "",  # empty: nothing offered, nothing counted
    ],
)
async def test_a_bad_id_cookie_is_replaced_counted_and_the_site_served(
    start_gateway, raw_upstream, tmp_path: Path, forged: str
) -> None:
    site = Origin()
    gw = await start_gateway(await raw_upstream(site), "[proxy]\nmax_header_size = 16384\n")
    good = signed(tmp_path, "A")
    _, visitor_id, tag = good.split(".")
    value = {
        "TRUNCATED": good[:-3],
        "PADDED": f"v1.{visitor_id}==.{tag}",
        "URLENCODED": good.replace(".", "%2E"),
    }.get(forged, forged.replace("VALID", good))
    reply = await get(gw, "/p", b"Cookie: a=1; gw_vid=" + value.encode())
    assert (reply.status, reply.body) == (200, b"ok")
    assert site.cookies == [[b"a=1; gw_vid=" + value.encode()]]
    [new] = ours(reply)
    assert new.split(";")[0] not in (f"gw_vid={value}", f"gw_vid={good}")
    assert await rejected(gw) == (1 if value else 0)


@pytest.mark.parametrize("control", [b"\x00", b"\x01", b"\x1b", b"\x7f"])
async def test_a_nul_in_the_cookie_is_refused_by_the_parser_not_a_500(
    start_gateway, raw_upstream, control: bytes
) -> None:
    """RFC 9110 §5.5 lets a recipient refuse a field value holding NUL, or another control
    character but tab (no browser keeps a cookie holding one): the listener's 400, never
    forwarded (README: The visitor ID)."""
    site = Origin()
    gw = await start_gateway(await raw_upstream(site))
    reply = await get(gw, "/p", b"Cookie: gw_vid=v1.AAAA" + control + b"AAAA")
    assert reply.status == 400
    assert site.cookies == []


async def test_two_id_cookies_keep_the_visitor_without_new_ids(
    start_gateway, raw_upstream, tmp_path: Path
) -> None:
    """A browser holding one for the host and one for the parent domain (or two Paths) sends
    both: the first that verifies is the visitor's, nothing is counted, and a landing refreshes
    that one. A bad one ahead of a good one (the site's value, an old secret's) mints nothing:
    minted on every request, each page would be a new visitor."""
    gw = await start_gateway(await raw_upstream(Origin()))
    a, b = signed(tmp_path, "A"), signed(tmp_path, "B")
    for n, (sent, kept) in enumerate(
        (
            (f"gw_vid={a}; gw_vid={b}", a),
            (f"gw_vid={b}; gw_vid={a}", b),
            (f"gw_vid=v1.stale.value; x=1; gw_vid={b}", b),
            (f"gw_vid=; gw_vid={a}", a),
        )
    ):
        for _ in range(2):
            plain = await get(gw, "/p", b"Cookie: " + sent.encode())
            assert ours(plain) == [], sent
        # A landing of its own each time: the same one again soon after is a repeat, not recorded.
        landing = await get(gw, f"/p?utm_source=news{n}", b"Cookie: " + sent.encode())
        assert [line.split(";")[0] for line in ours(landing)] == [f"gw_vid={kept}"], sent
    assert await rejected(gw) == 0


@pytest.mark.parametrize(
    ("trusted", "lines", "attributes"),
    [
        (False, [], "HttpOnly; Max-Age=34128000; Path=/; SameSite=Lax"),
        # The visitor's own claim of https is not believed: no Secure on a plain-http page.
        (False, [b"X-Forwarded-Proto: https"], "HttpOnly; Max-Age=34128000; Path=/; SameSite=Lax"),
        (True, [b"X-Forwarded-Proto: https"], "HttpOnly; Max-Age=34128000; Path=/; SameSite=Lax; Secure"),
        (True, [b"X-Forwarded-Proto: http"], "HttpOnly; Max-Age=34128000; Path=/; SameSite=Lax"),
    ],
)
async def test_secure_only_when_a_trusted_proxy_says_https(
    start_gateway, raw_upstream, trusted: bool, lines: list[bytes], attributes: str
) -> None:
    toml = '[proxy]\ntrusted_proxies = ["127.0.0.1/32"]\n' if trusted else ""
    gw = await start_gateway(await raw_upstream(Origin()), toml)
    [cookie] = ours(await get(gw, "/p", *lines))
    assert cookie.split("; ", 1)[1] == attributes


@pytest.mark.parametrize(
    ("host", "domain"),
    [
        (b"www.example.com", "example.com"),
        (b"example.com:8080", "example.com"),
        (b"WWW.Example.COM", "example.com"),
        (b"shop.other.test", None),  # another site behind the same gateway: host-only
        (b"badexample.com", None),
    ],
)
async def test_the_domain_goes_only_on_hosts_under_it(
    start_gateway, raw_upstream, host: bytes, domain: str | None
) -> None:
    gw = await start_gateway(await raw_upstream(Origin()), '[identity]\ndomain = "example.com"\n')
    [cookie] = ours(await get(gw, "/p", host=host))
    attributes = cookie.split("; ")[1:]
    assert [a for a in attributes if a.startswith("Domain=")] == ([f"Domain={domain}"] if domain else [])


@pytest.mark.parametrize("name", ["__Host-vid", "__Secure-vid", "__host-vid"])
@pytest.mark.parametrize("lines", [[], [b"X-Forwarded-Proto: https"], [b"Sec-GPC: 1", b"Cookie: NAME=old"]])
async def test_a_prefixed_name_is_always_secure(
    start_gateway, raw_upstream, name: str, lines: list[bytes]
) -> None:
    """A browser keeps a ``__Host-`` or ``__Secure-`` cookie only when it is ``Secure`` (RFC
    6265bis §4.1.3; the prefixes are matched in any case). Under ``identity.secure = "auto"`` a
    request the gateway takes as plain http — a TLS proxy in front that is not in
    ``proxy.trusted_proxies``, whose ``X-Forwarded-Proto`` is dropped — got one without it: the
    browser refused every ID, each page load was a new visitor, and an opt-out's expiry was
    refused too."""
    gw = await start_gateway(await raw_upstream(Origin()), f'[identity]\ncookie_name = "{name}"\n')
    reply = await get(gw, "/p", *(line.replace(b"NAME", name.encode()) for line in lines))
    [cookie] = [line for line in reply.headers.getall("Set-Cookie", []) if line.startswith(name + "=")]
    assert cookie.endswith("; Secure")


class CollidingSite:
    """A site whose own session cookie has the ID cookie's name (an ``identity.cookie_name``
    chosen as one the site already uses): ``/login`` sets it, every other path is a page."""

    def __init__(self) -> None:
        self.cookies: list[list[bytes]] = []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            self.cookies.append([line[8:] for line in lines if line.lower().startswith(b"cookie: ")])
            sets = (
                b"Set-Cookie: gw_vid=S1; Path=/; HttpOnly\r\n" if lines[0].startswith(b"GET /login") else b""
            )
            writer.write(b"HTTP/1.1 200 OK\r\n" + sets + b"Content-Length: 2\r\n\r\nok")
            await writer.drain()


async def test_a_site_cookie_of_our_name_is_left_to_the_site(
    start_gateway, raw_upstream, tmp_path: Path
) -> None:
    """Transparency first: the site keeps its cookie as without the gateway. Until 2026-12-07 an
    answer setting it got ours after it (a landing, a login a rule watches), which the browser
    kept instead, and every later page load holding the site's value, which is no ID of ours,
    had it replaced by a new ID (and an opt-out's expiry deleted it): a site session of that
    name was logged out on every page."""
    site = CollidingSite()
    gw = await start_gateway(await raw_upstream(site))
    good = signed(tmp_path, "A")
    # Before the site is seen setting the name, a value that is no ID of ours is replaced.
    assert len(ours(await get(gw, "/p", b"Cookie: gw_vid=junk"))) == 1
    # A landing on the site's login: the site's line alone, not ours after it.
    login = await get(gw, "/login?utm_source=news", b"Cookie: gw_vid=" + good.encode())
    assert login.headers.getall("Set-Cookie") == ["gw_vid=S1; Path=/; HttpOnly"]
    # The site's value now comes back: left alone, on a landing and a page, opted out or not.
    for lines in ([], [b"Sec-GPC: 1"]):
        reply = await get(gw, "/p?utm_source=ad", b"Cookie: gw_vid=S1", *lines)
        assert (reply.status, reply.body, ours(reply)) == (200, b"ok", [])
        reply = await get(gw, "/account", b"Cookie: gw_vid=S1", *lines)
        assert (reply.status, ours(reply)) == (200, [])
    assert site.cookies[-1] == [b"gw_vid=S1"]
    # A visitor who holds an ID of ours, or none, is still given one.
    assert len(ours(await get(gw, "/p?utm_source=ad", b"Cookie: gw_vid=" + good.encode()))) == 1
    assert len(ours(await get(gw, "/p"))) == 1
    assert await rejected(gw) == 3  # the junk, then the site's value twice (an opt-out reads none)
