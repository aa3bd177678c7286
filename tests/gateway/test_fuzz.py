"""Fuzzing the request path through a real gateway: hypothesis writes requests byte by byte
(query strings, percent-encoding, non-UTF-8 bytes, huge and repeated parameters, cookies,
headers) over a raw socket. Whatever arrives: never a 5xx, the gateway keeps serving, our
only Set-Cookie is a freshly signed ``gw_vid`` (never request input), and every tracking value
that reached the store passes the campaign addon's own validation.

One gateway serves all of a test's examples (hence the function-scoped-fixture health check
is off); examples are derandomized and few, so the run is the same every time and short.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiosqlite
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from addons.campaign import MAX_PATH, MAX_RAW_PARAMS
from gateway.events import MAX_CLICK_ID
from gateway.reserved import classify
from tests.gateway.test_malformed import raw_request

FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MAX_VALUE = 200  # campaign.max_value_length's default
CLICK_KINDS = {"gclid", "fbclid", "msclkid"}  # those the fuzzed queries send
# Our one cookie, exactly: a fresh signed ID (22 + 22 base64url characters) and fixed attributes.
OUR_COOKIE = re.compile(
    r"gw_vid=v1\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{22}; HttpOnly; Max-Age=34128000; Path=/; SameSite=Lax"
)

TRACKED = [b"utm_source", b"UTM_Medium", b"c_campaign", b"utm_term", b"c_content", b"utm_id",
           b"gclid", b"fbclid", b"msclkid", b"creator_id", b"sub_id", b"%75tm_source",
           b"utm%5Fmedium"]  # fmt: skip
OTHER = [b"q", b"page", b"", b"a+b", b"x%zz", b"%ff", b"\xff\xfe", b"gw_vid", b"utm_"]
# Bytes a request target may carry on the wire (no space, CR, LF, '#'), plus non-UTF-8 ones.
TARGET_BYTES = bytes(range(0x21, 0x7F)).replace(b"#", b"") + bytes(range(0x80, 0x100))
values = st.one_of(
    st.binary(max_size=30).map(lambda b: bytes(c for c in b if c in TARGET_BYTES)),
    st.text(max_size=30).map(lambda t: "".join(f"%{b:02X}" for b in t.encode())).map(str.encode),
    st.sampled_from([b"%", b"%g", b"%ff%fe", b"+", b"%20x%20", b"%00", b"%0d%0a", b"a" * 201, b"A\xcc\x81"]),
)
pieces = st.one_of(
    st.tuples(st.sampled_from(TRACKED + OTHER), values).map(lambda kv: kv[0] + b"=" + kv[1]),
    st.sampled_from(TRACKED + OTHER),
)
queries = st.one_of(
    st.lists(pieces, max_size=10).map(b"&".join),
    # huge and repeated: the same parameter many times, or one very long value
    st.tuples(st.sampled_from(TRACKED), st.integers(1, 400)).map(lambda t: b"&".join([t[0] + b"=x"] * t[1])),
    st.integers(100, 9000).map(lambda n: b"utm_source=" + b"s" * n),
)
# Header values: anything but CR, LF and NUL (those end or break the header: the parser's job).
header_values = st.binary(max_size=60).map(lambda b: bytes(c for c in b if c not in b"\r\n\0"))
cookies = st.one_of(
    header_values,
    st.tuples(
        st.sampled_from([b"gw_vid=", b"gw_vid=v1.", b"x=1; gw_vid=", b"gw_vid=v1.AAAA."]), header_values
    ).map(b"".join),
    st.just(b"gw_vid=v1.AAAAAAAAAAAAAAAAAAAAAA.BBBBBBBBBBBBBBBBBBBBBB"),
)
header_names = st.sampled_from(
    [b"Referer", b"User-Agent", b"Accept", b"Sec-Fetch-Dest", b"X-Forwarded-For", b"X-Forwarded-Host",
     b"X-Forwarded-Proto", b"Accept-Language", b"Sec-CH-UA", b"Origin", b"X-Custom"]
)  # fmt: skip
headers = st.lists(st.tuples(header_names, header_values), max_size=5)


async def upstream(upstream_server, paths: list[str] | None = None) -> str:
    async def handler(request: web.Request) -> web.Response:
        if paths is not None:
            paths.append(request.raw_path)
        await request.read()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return await upstream_server(app)


def kept(value: str, allow_spaces: bool = True, longest: int = MAX_VALUE) -> bool:
    """What the campaign addon lets through, stated apart: trimmed, not too long (a click ID:
    ``MAX_CLICK_ID``), printable (and without spaces, for a click ID)."""
    return (
        value == value.strip()
        and len(value) <= longest
        and value.isprintable()
        and (allow_spaces or not any(c.isspace() for c in value))
    )


def check_stored(row: aiosqlite.Row) -> None:
    """The campaign addon's validation, applied again to what the store holds."""
    for name in ("source", "medium", "campaign", "term", "content", "creator_id", "sub_id"):
        value = row[name]
        if value is not None:
            assert kept(value), (name, value)
            assert value, name
    for name in ("source", "medium"):
        assert row[name] is None or row[name] == row[name].casefold()
    if row["click_id"] is not None:
        assert kept(row["click_id"], allow_spaces=False, longest=MAX_CLICK_ID)
        assert row["click_id_kind"] in CLICK_KINDS
    raw = json.loads(row["raw_params"])
    assert len(raw) <= MAX_RAW_PARAMS
    for key, value in raw.items():
        assert key.isprintable() and len(key) <= 64
        assert kept(value, longest=MAX_CLICK_ID if key.lower() in CLICK_KINDS else MAX_VALUE)
    assert len(row["landing_path"]) <= MAX_PATH


async def send(port: int, target: bytes, header_lines: list[tuple[bytes, bytes]]) -> None:
    head = b"GET " + target + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
    head += b"".join(name + b": " + value + b"\r\n" for name, value in header_lines)
    resp = await raw_request(port, head + b"\r\n")
    assert resp.status < 500, (resp.status, resp.body[:200])
    for value in resp.headers.getall("Set-Cookie", ()):
        assert OUR_COOKIE.fullmatch(value), value


@dataclass
class Fuzzed:
    """The gateway all of one test's examples go to, and what they left in its store."""

    port: int
    db: Path
    seen: set[str] = field(default_factory=set)

    async def landing_rows(self) -> list[aiosqlite.Row]:
        """Touchpoints stored since the last call, each checked against the addon's validation."""
        async with aiosqlite.connect(self.db) as conn:
            conn.row_factory = aiosqlite.Row
            rows = list(await conn.execute_fetchall("SELECT * FROM touchpoints"))
        fresh = [row for row in rows if row["id"] not in self.seen]
        self.seen.update(row["id"] for row in fresh)
        for row in fresh:
            check_stored(row)
        return fresh


@pytest.fixture
async def fuzzed(start_gateway, upstream_server, tmp_path: Path) -> AsyncIterator[Fuzzed]:
    gw = await start_gateway(await upstream(upstream_server))
    state = Fuzzed(gw.proxy.port, tmp_path / "gateway.db")
    yield state
    assert state.seen, "no example reached the store: the checks on stored values never ran"
    await send(state.port, b"/after", [])  # and the gateway still serves


@FUZZ
@given(query=queries, path=st.sampled_from([b"/", b"/p", b"/a%2Fb;c", b"/%ff"]))
async def test_fuzzed_query_strings(fuzzed: Fuzzed, query: bytes, path: bytes) -> None:
    await send(fuzzed.port, path + b"?" + query, [(b"Accept", b"text/html")])
    await fuzzed.landing_rows()


@FUZZ
@given(cookie=cookies, extra=headers, query=queries)
async def test_fuzzed_cookies_and_headers(
    fuzzed: Fuzzed, cookie: bytes, extra: list[tuple[bytes, bytes]], query: bytes
) -> None:
    await send(fuzzed.port, b"/?" + query, [(b"Cookie", cookie), *extra])
    await fuzzed.landing_rows()


segments = st.sampled_from(
    [b"_gw", b"_GW", b"%5Fgw", b"%5fGw", b"%255Fgw", b"events", b"segment", b".", b"..", b"%2e", b"%2E%2E",
     b"", b"x", b"_gw%2Fevents", b"\\_gw", b"_gw;p", b"_gwx", b"%2F", b"%00", b"\xff"]
)  # fmt: skip


@pytest.fixture
async def site(start_gateway, upstream_server) -> tuple[int, list[str]]:
    """A gateway whose site records every path it receives: (proxy port, paths)."""
    paths: list[str] = []
    gw = await start_gateway(await upstream(upstream_server, paths))
    return gw.proxy.port, paths


@FUZZ
@given(
    parts=st.lists(segments, min_size=1, max_size=6), query=st.sampled_from([b"", b"?utm_source=x", b"?a=1"])
)
async def test_fuzzed_paths_never_reach_the_site_under_the_prefix(
    site: tuple[int, list[str]], parts: list[bytes], query: bytes
) -> None:
    """Whatever the path, the site never receives one that any server could read as under
    the reserved prefix (the gateway answers those itself), and nothing gives a 5xx."""
    port, paths = site
    paths.clear()
    await send(port, b"/" + b"/".join(parts) + query, [])
    for path in paths:
        assert classify(path.partition("?")[0], "/_gw/") == "ordinary", path
