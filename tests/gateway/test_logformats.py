"""Log parsers: combined lines as nginx and Apache write them, request lines, logged cookies,
timestamps; and no input, however broken, makes a parser raise."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.history import Line, Record, Skip, parse_any_time, parse_clf_time
from gateway.logformats import (
    CONTROL,
    CUT,
    METHOD_CASE,
    NESTED,
    NOT_A_METHOD,
    NOT_A_STATUS,
    NOT_AN_ADDRESS,
    NOT_UTF8,
    RAW_BYTES,
    client_of,
    combined_parser,
    forwarded_for,
    json_parser,
    logged_cookie,
    segment_parser,
    split_request,
)

SIGNED = "v1." + "A" * 22 + "." + "B" * 22
parse = combined_parser("gw_vid")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # nginx combined; the referer and agent as logged
        ('1.2.3.4 - - [01/Mar/2025:10:00:00 +0000] "GET /a?b=1 HTTP/1.1" 200 5 "https://x.example/" "UA/1"',
         ("GET", "/a?b=1", 200, "https://x.example/", "UA/1", "1.2.3.4", "")),
        # nginx escapes a quote as \x22, Apache as \"
        ('1.2.3.4 - - [01/Mar/2025:10:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "say \\x22hi\\x22"',
         ("GET", "/", 200, "", 'say "hi"', "1.2.3.4", "")),
        ('1.2.3.4 - - [01/Mar/2025:10:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "say \\"hi\\""',
         ("GET", "/", 200, "", 'say "hi"', "1.2.3.4", "")),
        # common log format: no referer or agent at all
        ('::1 - frank [01/Mar/2025:10:00:00 +0000] "HEAD /x HTTP/1.0" 304 -',
         ("HEAD", "/x", 304, "", "", "::1", "")),
        # an absolute-form target keeps its path and query
        ('1.2.3.4 - - [01/Mar/2025:10:00:00 +0000] "GET http://shop.example/p?q=1 HTTP/1.1" 200 5 "-" "-"',
         ("GET", "/p?q=1", 200, "", "", "1.2.3.4", "")),
        # our cookie in a trailing field: the bare value, or inside a Cookie header
        (f'1.2.3.4 - - [01/Mar/2025:10:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "UA" "{SIGNED}"',
         ("GET", "/", 200, "", "UA", "1.2.3.4", f"gw_vid={SIGNED}")),
        (f'1.2.3.4 - - [01/Mar/2025:10:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "UA" "a=1; gw_vid={SIGNED}" 0.01',  # noqa: E501
         ("GET", "/", 200, "", "UA", "1.2.3.4", f"a=1; gw_vid={SIGNED}")),
    ],
)  # fmt: skip
def test_combined_lines(raw: str, expected: tuple[object, ...]) -> None:
    [line] = parse(7, raw.encode())
    assert isinstance(line, Line) and line.number == 7
    got = (line.method, line.target, line.status, line.referer, line.user_agent, line.ip, line.cookie)
    assert got == expected
    assert line.ts == datetime(2025, 3, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # Apache vhost_combined (%v:%p), the Debian default for other_vhosts_access.log
        ('shop.example:443 1.2.3.4 - - [01/Mar/2025:10:00:00 +0000] "GET /a HTTP/1.1" 200 5 "-" "UA/1"',
         ("shop.example:443", "1.2.3.4", "/a", "UA/1")),
        # %{Host}i (or nginx $host) first; a user name logged; an IPv6 client
        ('blog.example 2001:db8::1 - alice [01/Mar/2025:10:00:00 +0000] "GET /b HTTP/1.1" 200 5 "-" "UA"',
         ("blog.example", "2001:db8::1", "/b", "UA")),
        # no Host header (HTTP/1.0): nginx and Apache log "-", and --host stands in
        ('- 1.2.3.4 - - [01/Mar/2025:10:00:00 +0000] "GET /c HTTP/1.0" 200 5 "-" "UA"',
         ("", "1.2.3.4", "/c", "UA")),
        # without one, as ever
        ('1.2.3.4 - frank [01/Mar/2025:10:00:00 +0000] "GET /d HTTP/1.1" 200 5 "-" "UA"',
         ("", "1.2.3.4", "/d", "UA")),
    ],
)  # fmt: skip
def test_combined_lines_after_the_virtual_host(raw: str, expected: tuple[str, ...]) -> None:
    """Every line of a vhost_combined log used to be skipped as not a combined-log line."""
    [line] = parse(1, raw.encode())
    assert isinstance(line, Line)
    assert (line.host, line.ip, line.target, line.user_agent) == expected


def test_only_a_host_is_read_as_the_virtual_host() -> None:
    """A syslog tag or other prefix is not a host: such a line is not read as a combined one
    (its same-site referrers would otherwise all look external)."""
    for prefix in ("nginx:", "web1 nginx:", "[error]", "a/b"):
        raw = f'{prefix} 1.2.3.4 - - [01/Mar/2025:10:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "UA"'
        assert parse(1, raw.encode()) == [Skip(1, "not a combined-log line")], prefix
    [line] = parse(1, b'[2001:db8::1]:8443 1.2.3.4 - - [01/Mar/2025:10:00:00 +0000] "GET / HTTP/1.1" 200 5')
    assert isinstance(line, Line) and line.host == "[2001:db8::1]:8443"


@pytest.mark.parametrize(
    ("request_line", "expected"),
    [
        ("GET /p HTTP/1.1", ("GET", "/p", "")),
        ("GET /p", ("GET", "/p", "")),  # HTTP/0.9
        # Absolute-form (a proxy's request): the target made origin-form, its host kept apart
        # (the query of a target without a path kept: it was dropped until 2026-12-05).
        ("GET http://other.example/?utm_source=x HTTP/1.1", ("GET", "/?utm_source=x", "other.example")),
        ("GET HTTPS://u:pw@Shop.example:8443/p HTTP/1.1", ("GET", "/p", "Shop.example:8443")),
        ("GET http://shop.example?utm_source=x#top HTTP/1.1", ("GET", "/?utm_source=x", "shop.example")),
        ("GET http://shop.example HTTP/1.1", ("GET", "/", "shop.example")),
        ("GET http:///p HTTP/1.1", "unreadable request line"),
        ("GET http://caf\u00e9.example/ HTTP/1.1".encode().decode("unicode_escape"), RAW_BYTES),
        ("CONNECT shop.example:443 HTTP/1.1", "not an origin-form request (CONNECT, OPTIONS *)"),
        ("OPTIONS * HTTP/1.1", "not an origin-form request (CONNECT, OPTIONS *)"),
        ("\x16\x03\x01", "unreadable request line"),
        ("-", "unreadable request line"),
        # Methods are case-sensitive (RFC 9110 §9.1): ``get`` is no GET, a 400 live; said so.
        ("get /p HTTP/1.1", METHOD_CASE),
        ("Get /p HTTP/1.1", METHOD_CASE),
        # Raw UTF-8 a client should have percent-encoded: the gateway forwards it live (since
        # 2026-12-06) and records the landing, so a backfill does too. Bytes that are not UTF-8
        # (a surrogate here: how a combined line keeps one) or a control byte: a 400 live.
        ("GET /p?utm_source=caf\u00e9 HTTP/1.1", ("GET", "/p?utm_source=caf\u00e9", "")),
        ("GET /caf\u00e9/\u20ac\ufffd HTTP/1.1", ("GET", "/caf\u00e9/\u20ac\ufffd", "")),
        ("GET /p?utm_source=caf\udce9 HTTP/1.1", NOT_UTF8),
        ("GET /caf\u00e9\x01 HTTP/1.1", CONTROL),
        ("GET /p\x7f HTTP/1.1", CONTROL),
        ("GET /p\tx HTTP/1.1", CONTROL),
        ("GET http://shop.example/caf\u00e9 HTTP/1.1", RAW_BYTES),  # only origin-form is read again
        ("GET /p?utm_source=caf%E9 HTTP/1.1", ("GET", "/p?utm_source=caf%E9", "")),
    ],
)
def test_split_request(request_line: str, expected: object) -> None:
    assert split_request(request_line) == expected


def test_a_combined_line_with_raw_utf8_in_its_target_is_imported_and_latin1_skipped() -> None:
    """nginx writes each byte above 0x7F of a target as ``\\xHH`` (``\\xC3\\xA9`` is an é), another
    server may write it raw: the bytes are the client's. UTF-8 ones were skipped as refused live,
    which the gateway no longer does (it forwards them and records the landing): imported, the
    target as the live proxy reads it. Latin-1 (``\\xE9``) is still a 400 live: skipped, saying so."""
    line = b'1.2.3.4 - - [01/Mar/2025:10:00:00 +0000] "GET %s HTTP/1.1" 200 5 "-" "UA"'
    for target in (
        rb"/caf\xC3\xA9?utm_source=n\xc3\xa9",
        b"/caf\xc3\xa9?utm_source=n\xc3\xa9",
        b"/caf\xc3\xa9?utm_source=n\\xC3\\xA9",  # both in one line
    ):
        [got] = parse(3, line % target)
        assert isinstance(got, Line) and got.target == "/caf\u00e9?utm_source=n\u00e9", target
    [got] = parse(3, line % rb"/\xEF\xBF\xBD")  # U+FFFD the client sent: UTF-8 too
    assert isinstance(got, Line) and got.target == "/\ufffd"
    for target in (rb"/p?utm_source=caf\xE9", b"/p?utm_source=caf\xe9", rb"/caf\xC3"):
        [skip] = parse(3, line % target)
        assert isinstance(skip, Skip) and skip.reason == NOT_UTF8, target
    [skip] = parse(3, line % rb"/caf\xC3\xA9\x01")
    assert isinstance(skip, Skip) and skip.reason == CONTROL
    [got] = parse(3, b'1.2.3.4 - - [01/Mar/2025:10:00:00 +0000] "GET /p HTTP/1.1" 200 5 "-" "Caf\xe9"')
    assert isinstance(got, Line) and got.user_agent == "Caf\ufffd"  # elsewhere, read as before


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        # nginx's stock ``main`` format: "$http_x_forwarded_for" right after the agent
        (' "203.0.113.7"', "203.0.113.7"),
        (' "198.51.100.1, 203.0.113.7"', "198.51.100.1, 203.0.113.7"),
        (' "2001:db8::1, [2001:db8::2]:443"', "2001:db8::1, [2001:db8::2]:443"),
        (' "-"', ""),
        (' ""', ""),
        # a proxy's "unknown" beside addresses, read as the live proxy reads it (from the right)
        (' "unknown, 203.0.113.7"', "unknown, 203.0.113.7"),
        # anything but addresses is not one (only "unknown", a cookie, a time)
        (' "unknown"', ""),
        (f' "{SIGNED}" "203.0.113.7"', ""),
        (' 0.003 "203.0.113.7"', ""),
        ("", ""),
    ],
)
def test_a_combined_lines_x_forwarded_for_is_the_field_after_the_agent(tail: str, expected: str) -> None:
    [line] = parse(
        1, f'10.0.0.2 - - [01/Mar/2025:10:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "UA"{tail}'.encode()
    )
    assert isinstance(line, Line) and (line.ip, line.forwarded_for) == ("10.0.0.2", expected)


def test_x_forwarded_for_and_a_cookie_are_both_read_and_need_the_agent_before_them() -> None:
    head = '10.0.0.2 - - [01/Mar/2025:10:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "UA"'
    raw = f'{head} "203.0.113.7" "gw_vid={SIGNED}"'
    [line] = parse(1, raw.encode())
    assert isinstance(line, Line) and (line.forwarded_for, line.cookie) == ("203.0.113.7", f"gw_vid={SIGNED}")
    # The common log format has no agent: a lone quoted field after it is not read as one.
    [line] = parse(1, b'10.0.0.2 - - [01/Mar/2025:10:00:00 +0000] "GET / HTTP/1.1" 200 5 "203.0.113.7"')
    assert isinstance(line, Line) and line.forwarded_for == ""
    assert forwarded_for(' "203.0.113.7 , 10.0.0.1 "') == "203.0.113.7 , 10.0.0.1"


CHAIN = "198.51.100.1, 203.0.113.7"


def test_a_json_lines_x_forwarded_for_by_default_and_from_a_caddy_header() -> None:
    doc = {"time": 1740823200, "method": "GET", "uri": "/", "remote_addr": "10.0.0.2",
           "x_forwarded_for": "198.51.100.1, 203.0.113.7"}  # fmt: skip
    [line] = json_parser("gw_vid", {})(1, msgspec.json.encode(doc))
    assert isinstance(line, Line) and (line.ip, line.forwarded_for) == (
        "10.0.0.2",
        "198.51.100.1, 203.0.113.7",
    )
    caddy = {"ts": 1740823200, "request": {"method": "GET", "uri": "/", "remote_ip": "10.0.0.2",
             "headers": {"X-Forwarded-For": ["198.51.100.1", "203.0.113.7"]}}}  # fmt: skip
    fields = {**CADDY, "forwarded_for": "/request/headers/X-Forwarded-For", "ip": "/request/remote_ip"}
    [line] = json_parser("gw_vid", fields)(1, msgspec.json.encode(caddy))
    assert isinstance(line, Line) and (line.ip, line.forwarded_for) == (
        "10.0.0.2",
        "198.51.100.1, 203.0.113.7",
    )
    [line] = json_parser("gw_vid", {"forwarded_for": ""})(1, msgspec.json.encode(doc))  # unmapped
    assert isinstance(line, Line) and line.forwarded_for == ""


def test_logged_cookie_ignores_other_fields() -> None:
    assert logged_cookie(' "-" 0.003', "gw_vid") == ""
    assert logged_cookie(f' "other=1; gw_vid={SIGNED}"', "gw_vid") == f"other=1; gw_vid={SIGNED}"


def test_times() -> None:
    cache: dict[str, datetime] = {}
    ts = parse_clf_time("10/Oct/2025:13:55:36 -0700", cache)
    assert ts == datetime(2025, 10, 10, 13, 55, 36, tzinfo=timezone(-timedelta(hours=7)))
    assert parse_clf_time("10/Oct/2025:13:55:36 -0700", cache) is ts  # cached
    assert parse_clf_time("31/Feb/2025:00:00:00 +0000", cache) is None
    assert parse_any_time(1740823200, cache) == datetime(2025, 3, 1, 10, tzinfo=UTC)
    assert parse_any_time("1740823200000", cache) == datetime(2025, 3, 1, 10, tzinfo=UTC)
    assert parse_any_time("2025-03-01T10:00:00", cache) == datetime(2025, 3, 1, 10, tzinfo=UTC)
    assert parse_any_time("[01/Mar/2025:10:00:00 +0000]", cache) == datetime(2025, 3, 1, 10, tzinfo=UTC)
    for bad in (True, None, {}, "soon", 1e300):
        assert parse_any_time(bad, cache) is None


@pytest.mark.parametrize(
    "text", ["31/Dec/9999:23:59:59 -1200", "01/Jan/0001:00:00:00 +0100", "31/Dec/1969:23:59:59 +0000"]
)
def test_a_time_no_event_can_have_is_unreadable(text: str) -> None:
    """A time UTC cannot hold (year 10000 there, or before year 1) made the campaign addon raise
    for that line: a traceback on stderr, and the line counted neither as read into a touchpoint
    nor as skipped. One before 1970 got an event ID sorting after every other. All are skipped."""
    raw = f'1.2.3.4 - - [{text}] "GET /?utm_source=x HTTP/1.1" 200 5 "-" "UA"'.encode()
    assert parse(1, raw) == [Skip(1, "unreadable time", f" [{text}]")]
    json_lines = json_parser("gw_vid", {})
    iso_time = {"31/Dec/9999:23:59:59 -1200": "9999-12-31T23:59:59-12:00",
                "01/Jan/0001:00:00:00 +0100": "0001-01-01T00:00:00+01:00",
                "31/Dec/1969:23:59:59 +0000": "1969-12-31T23:59:59Z"}[text]  # fmt: skip
    for value in (iso_time, f"[{text}]"):
        doc = msgspec.json.encode({"time": value, "method": "GET", "uri": "/"})
        assert json_lines(1, doc) == [Skip(1, "time: missing or unreadable at /time", f": {value!r}")]
    assert parse_any_time(-1, {}) is None
    assert parse_any_time(0, {}) == datetime(1970, 1, 1, tzinfo=UTC)


@given(st.binary(max_size=300))
def test_no_line_makes_a_parser_raise(raw: bytes) -> None:
    for parser in (parse, json_parser("gw_vid", {}), segment_parser()):
        for item in parser(1, raw):
            assert isinstance(item, Line | Skip) or item.number == 1


def test_json_nested_too_deeply_is_skipped() -> None:
    """msgspec raises RecursionError (not a DecodeError) for JSON thousands deep: that line is
    skipped, where it used to end the whole import with a traceback."""
    raw = b'{"time": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    for parser in (json_parser("gw_vid", {}), segment_parser()):
        assert parser(7, raw) == [Skip(7, NESTED)]


def test_a_segment_line_with_a_number_beyond_a_double_is_read() -> None:
    """A Segment archive line holding ``1e400`` (valid JSON that no double holds) was skipped
    whole as not valid JSON, every call of its batch with it, where the live ``/_gw/segment``
    reads it and refuses only a call that maps the number."""
    page = {"type": "page", "anonymousId": "a", "properties": {"n": 1}}
    raw = b'{"batch": [' + msgspec.json.encode(page) + b', {"type": "track", "revenue": -1e400}]}'
    second = {"type": "track", "revenue": -math.inf}
    assert segment_parser()(3, raw) == [Record(3, page, raw, 0), Record(3, second, raw, 1)]
    for odd in (b"[1e400, NaN]", b'[1e400, "\\ud800"]'):
        assert segment_parser()(3, odd) == [Skip(3, "not valid JSON")]
    deep = b"[1e400, " + b"[" * 100_000 + b"]" * 100_000 + b"]"
    assert segment_parser()(3, deep) == [Skip(3, NESTED)]


def test_a_segment_batch_that_is_no_array_is_said_so() -> None:
    """``{"batch": "nope"}`` was skipped as "not a JSON object", which it is: the batch is what
    is wrong. A batch of calls that are not objects is still said call by call."""
    for raw in (b'{"batch": "nope"}', b'{"batch": {"type": "page"}}', b'{"batch": null}'):
        assert segment_parser()(7, raw) == [Skip(7, "batch: not a JSON array of calls")]
    assert segment_parser()(7, b'{"batch": [1]}') == [Skip(7, "not a JSON object")]


@given(st.text(max_size=120))
def test_no_combined_looking_line_makes_it_raise(text: str) -> None:
    raw = f'1.2.3.4 - - [01/Mar/2025:10:00:00 +0000] "GET {text} HTTP/1.1" 200 5 "{text}" "{text}"'
    parse(1, raw.encode("utf-8", "surrogatepass"))


CADDY = {
    "time": "/ts",
    "method": "/request/method",
    "uri": "/request/uri",
    "host": "/request/host",
    "ip": "/request/client_ip",
    "user_agent": "/request/headers/User-Agent",
    "referer": "/request/headers/Referer",
    "cookie": "/request/headers/Cookie",
}
"""Where Caddy's JSON access log keeps a request: every header as the list of its values."""


def test_a_header_logged_as_a_list_of_values_is_read() -> None:
    """Caddy logs each header as a list: the agent, referer and cookie were read as missing, so
    every line of a Caddy log was an empty agent (blocked) without a referrer."""
    headers: dict[str, list[object]] = {
        "User-Agent": ["Mozilla/5.0 UA"],
        "Referer": ["https://www.bing.com/"],
        "Cookie": ["a=1", f"gw_vid={SIGNED}"],
        "Accept": ["text/html", "*/*"],
    }
    doc = {
        "level": "info", "ts": 1740823200.25, "logger": "http.log.access.log0", "msg": "handled request",
        "request": {
            "remote_ip": "203.0.113.9", "client_ip": "203.0.113.9", "proto": "HTTP/2.0", "method": "GET",
            "host": "shop.example", "uri": "/p?utm_source=news", "headers": headers,
        },
        "status": 200, "size": 10, "duration": 0.001,
    }  # fmt: skip
    [line] = json_parser("gw_vid", CADDY)(1, msgspec.json.encode(doc))
    assert isinstance(line, Line)
    assert (line.ts, line.method, line.target, line.status, line.host, line.ip) == (
        datetime(2025, 3, 1, 10, 0, 0, 250000, tzinfo=UTC), "GET", "/p?utm_source=news", 200, "shop.example",
        "203.0.113.9",
    )  # fmt: skip
    assert (line.user_agent, line.referer, line.cookie) == (
        "Mozilla/5.0 UA",
        "https://www.bing.com/",
        f"a=1; gw_vid={SIGNED}",
    )
    # A list of anything but strings is not a value, as before.
    headers["User-Agent"] = [1, 2]
    [line] = json_parser("gw_vid", CADDY)(1, msgspec.json.encode(doc))
    assert isinstance(line, Line) and line.user_agent == ""


def test_a_json_line_with_a_value_no_request_has_is_skipped_as_a_combined_one_is() -> None:
    """A status ``abc``, a method ``G E T``, a client ``300.1.1.1``: json-lines took them (the
    status as 0, the rest as logged) and stored the line as a touchpoint, where a combined line
    holding them is skipped and live traffic cannot carry them. Each is skipped, by reason."""
    json_lines = json_parser("gw_vid", {})
    good = {"time": 1740823200, "method": "GET", "uri": "/", "status": 200, "remote_addr": "1.2.3.4"}
    for field, value, reason in (
        ("status", "abc", "status: not an HTTP status"),
        ("status", "²", "status: not an HTTP status"),  # int() of it raised, until 1fb949c
        ("status", 2000, "status: not an HTTP status"),
        ("status", 200.5, "status: not an HTTP status"),
        ("status", True, "status: not an HTTP status"),
        ("method", "G E T", "method: not an HTTP method"),
        ("method", "GET/1", "method: not an HTTP method"),
        ("remote_addr", "300.1.1.1", NOT_AN_ADDRESS),
        ("remote_addr", "1.2.3.4 5.6.7.8", NOT_AN_ADDRESS),
        ("remote_addr", "<script>", NOT_AN_ADDRESS),
        ("remote_addr", "a" * 254, NOT_AN_ADDRESS),  # longer than any host name (253)
    ):
        [skip] = json_lines(3, msgspec.json.encode({**good, field: value}))
        assert skip == Skip(3, reason, f": {str(value)[:40]!r}"), (field, value)
    # A combined line with the same values: skipped too (the client one since this fix).
    combined = '{} - - [01/Mar/2025:10:00:00 +0000] "{} / HTTP/1.1" {} 5 "-" "UA"'
    for line, reason in (
        ("1.2.3.4 GET abc", "not a combined-log line"),
        ("1.2.3.4 G E T 200", "unreadable request line"),
    ):
        client, *method, status = line.split(" ")
        [skip] = parse(3, combined.format(client, " ".join(method), status).encode())
        assert isinstance(skip, Skip) and skip.reason == reason
    assert parse(3, combined.format("300.1.1.1", "GET", "200").encode()) == [
        Skip(3, NOT_AN_ADDRESS, ": '300.1.1.1'")
    ]
    # What a server logs as its client: an address (with its port, as Caddy's remote_addr: the
    # port dropped), a host name (Apache's HostnameLookups On), nginx's unix: for a Unix socket,
    # or nothing; a status of three digits however written; a method in any case, read
    # upper-case as before.
    for value, ip in (("203.0.113.9", "203.0.113.9"), ("[2001:db8::1]:443", "2001:db8::1"),
                      ("1.2.3.4:5678", "1.2.3.4"), ("crawl-66-249-66-1.googlebot.com", None),
                      ("localhost", None), ("unix:", None), ("-", ""), (None, "")):  # fmt: skip
        [line] = json_lines(3, msgspec.json.encode({**good, "remote_addr": value}))
        assert isinstance(line, Line) and line.ip == (value if ip is None else ip), value
        [line] = parse(3, combined.format(value or "-", "GET", "200").encode())
        assert isinstance(line, Line) and line.ip == (value if ip is None else ip or "-"), value
    for status, expected in (("404", 404), (499, 499), ("-", 0), (None, 0)):
        [line] = json_lines(3, msgspec.json.encode({**good, "status": status}))
        assert isinstance(line, Line) and line.status == expected, status
    [line] = json_lines(3, msgspec.json.encode({**good, "method": "post"}))
    assert isinstance(line, Line) and line.method == "POST"


def test_a_json_line_with_raw_utf8_in_its_target_is_imported() -> None:
    """Whichever field holds it: the path, the query appended to it, or a request line; written
    as text (Caddy, ``\\u00e9``) or as nginx's ``escape=json`` writes it, the bytes as they came.
    Bytes that are not UTF-8 (a Latin-1 ``\\xe9``, which the line is read with as U+FFFD, as Go's
    JSON writes them in Caddy's log) or a control character: skipped, as refused live."""
    json_lines = json_parser("gw_vid", {})
    for doc in (
        b'{"time": 1, "method": "GET", "uri": "/caf\\u00e9?q=n\\u00e9"}',
        b'{"time": 1, "method": "GET", "uri": "/caf\xc3\xa9?q=n\xc3\xa9"}',
        b'{"time": 1, "method": "GET", "uri": "/caf\xc3\xa9", "query": "q=n\\u00e9"}',
        b'{"time": 1, "request": "GET /caf\\u00e9?q=n\xc3\xa9 HTTP/1.1"}',
    ):
        [line] = json_lines(1, doc)
        assert isinstance(line, Line) and line.target == "/caf\u00e9?q=n\u00e9", doc
    for doc, reason in (
        (b'{"time": 1, "method": "GET", "uri": "/caf\xe9"}', NOT_UTF8),
        (b'{"time": 1, "method": "GET", "uri": "/caf\\ufffd"}', NOT_UTF8),
        (b'{"time": 1, "method": "GET", "uri": "/p", "query": "q=caf\xe9"}', NOT_UTF8),
        (b'{"time": 1, "request": "GET /p?q=caf\xe9 HTTP/1.1"}', NOT_UTF8),
        (b'{"time": 1, "method": "GET", "uri": "/caf\\u00e9\\u0000"}', CONTROL),
    ):
        [skip] = json_lines(1, doc)
        assert isinstance(skip, Skip) and skip.reason.endswith(reason), doc
    [line] = json_lines(1, b'{"time": 1, "method": "GET", "uri": "/p", "query": "q=caf%C3%A9"}')
    assert isinstance(line, Line) and line.target == "/p?q=caf%C3%A9"


@pytest.mark.parametrize(
    ("logged", "address"),
    [
        ("1.2.3.4:5678", "1.2.3.4"),  # Caddy's remote_addr, a json log's $remote_addr:$remote_port
        ("[2001:db8::1]:5678", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("1.2.3.4", "1.2.3.4"),
        ("2001:db8::1", "2001:db8::1"),  # a bare IPv6 address: its last group is no port
        ("::1", "::1"),
        # As the live proxy spells the client: a mapped address as IPv4, IPv6 compressed and
        # in lower case (a server on ``[::]`` logs an IPv4 client as ``::ffff:1.2.3.4``).
        ("::ffff:1.2.3.4", "1.2.3.4"),
        ("[::ffff:1.2.3.4]:80", "1.2.3.4"),
        ("::FFFF:1.2.3.4", "1.2.3.4"),
        ("2001:DB8::1", "2001:db8::1"),
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        ("[2001:DB8:0::01]:443", "2001:db8::1"),
        ("crawl-66-249-66-1.googlebot.com", "crawl-66-249-66-1.googlebot.com"),
        ("unix:", "unix:"),
        ("-", "-"),
        ("", ""),
        ("300.1.1.1", None),  # no client's address
        ("1.2.3.4:http", None),
    ],
)
def test_client_of(logged: str, address: str | None) -> None:
    assert client_of(logged) == address


def test_a_client_logged_with_its_port_is_read_without_it() -> None:
    """Live, the client is the connection's address, no port: a log that writes the port
    (``addr:port``, ``[addr]:port``) made each new connection of one person another
    approximate visitor and IP hash. Combined's ``%h`` and a json-lines client alike."""
    json_lines = json_parser("gw_vid", {})
    combined = '{} - - [01/Mar/2025:10:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "UA"'
    for logged, address in (("203.0.113.9:50001", "203.0.113.9"), ("[2001:db8::1]:50002", "2001:db8::1")):
        [line] = parse(1, combined.format(logged).encode())
        assert isinstance(line, Line) and line.ip == address
        doc = {"time": 1740823200, "method": "GET", "uri": "/", "remote_addr": logged}
        [line] = json_lines(1, msgspec.json.encode(doc))
        assert isinstance(line, Line) and line.ip == address


def test_a_combined_line_with_a_method_or_status_no_client_sends_is_skipped_as_json_lines_does() -> None:
    """``GÉT`` passed ``isalpha``/``isupper`` and ``\\d{3}`` matched a status in Arabic-Indic (or
    any script's) digits, read as 200: both were imported, where live traffic cannot carry them
    and json-lines skips them. Skipped with json-lines' reasons; a json request line too."""
    combined = '1.2.3.4 - - [01/Mar/2025:10:00:00 +0000] "{} /?utm_source=x HTTP/1.1" {} 5 "-" "UA"'
    assert parse(2, combined.format("GÉT", "200").encode()) == [Skip(2, NOT_A_METHOD, ": 'GÉT'")]
    assert parse(2, combined.format("G\\xC3\\x89T", "200").encode()) == [Skip(2, NOT_A_METHOD, ": 'GÉT'")]
    for digits in ("\u0662\u0660\u0660", "\u06f2\u06f0\u06f0", "\u0968\u0966\u0966", "\uff12\uff10\uff10"):
        assert parse(2, combined.format("GET", digits).encode()) == [Skip(2, NOT_A_STATUS, f": {digits!r}")]
    [line] = parse(2, combined.format("GET", "200").encode())
    assert isinstance(line, Line) and line.status == 200
    json_lines = json_parser("gw_vid", {})
    for doc, reason in (
        ({"method": "GÉT", "uri": "/"}, Skip(2, NOT_A_METHOD, ": 'GÉT'")),
        ({"request": "GÉT / HTTP/1.1"}, Skip(2, NOT_A_METHOD, ": 'GÉT'")),
        (
            {"method": "GET", "uri": "/", "status": "\u0662\u0660\u0660"},
            Skip(2, NOT_A_STATUS, ": '\u0662\u0660\u0660'"),
        ),
    ):
        assert json_lines(2, msgspec.json.encode({"time": 1740823200, **doc})) == [reason], doc


def test_a_lower_case_method_on_a_request_line_is_skipped_saying_why_in_both_formats() -> None:
    """``get /p HTTP/1.1`` is what the client sent, and no GET (methods are case-sensitive; the
    gateway, as nginx, answers it 400): combined skipped it as an ``unreadable request line`` and
    json-lines' ``request`` as ``method/uri: missing``. Both say it is the method's case now. A
    json-lines ``method`` field is a log pipeline's, which may have lower-cased it (ECS once
    asked for it: Filebeat 7.7 and 7.8 wrote ``get``): it is still read upper-case."""
    combined = '1.2.3.4 - - [01/Mar/2025:10:00:00 +0000] "{} /?utm_source=x HTTP/1.1" 200 5 "-" "UA"'
    json_lines = json_parser("gw_vid", {})
    for method in ("get", "Get", "gET"):
        assert parse(2, combined.format(method).encode()) == [Skip(2, METHOD_CASE, f": {method!r}")]
        doc = {"time": 1740823200, "request": f"{method} /?utm_source=x HTTP/1.1"}
        assert json_lines(2, msgspec.json.encode(doc)) == [Skip(2, METHOD_CASE, f": {method!r}")]
        [line] = json_lines(2, msgspec.json.encode({"time": 1740823200, "method": method, "uri": "/"}))
        assert isinstance(line, Line) and line.method == "GET"


def test_a_json_line_with_bytes_not_utf8_is_read_as_a_combined_line_is() -> None:
    """nginx's ``escape=json`` writes a byte above 0x7F as it came: a Latin-1 User-Agent or
    Referer makes the line valid JSON but not UTF-8. It was skipped whole as "not valid JSON",
    the visit's campaign with it, where the same request in a combined log is imported (the
    byte read as U+FFFD); a raw byte in the target is still refused, as live."""
    json_lines = json_parser("gw_vid", {})
    raw = (
        b'{"time": "2026-11-20T10:00:00Z", "method": "GET", "uri": "/?utm_source=news",'
        b' "user_agent": "Mozilla/5.0 Caf\xe9Browser", "referer": "https://ex.example/caf\xe9",'
        b' "remote_addr": "2001:db8::5"}'
    )
    [line] = json_lines(4, raw)
    assert isinstance(line, Line) and line.target == "/?utm_source=news"
    assert line.user_agent == "Mozilla/5.0 Caf\ufffdBrowser" and line.raw == raw
    [combined] = parse(
        4,
        b'2001:db8::5 - - [20/Nov/2026:10:00:00 +0000] "GET /?utm_source=news'
        b' HTTP/1.1" 200 5 "-" "Mozilla/5.0 Caf\xe9Browser"',
    )
    assert isinstance(combined, Line) and combined.user_agent == line.user_agent
    [skip] = json_lines(4, b'{"time": 1, "method": "GET", "uri": "/caf\xe9"}')
    assert isinstance(skip, Skip) and skip.reason.endswith(NOT_UTF8)
    assert json_lines(4, b'{"time": 1, "uri": "/p" \xe9') == [Skip(4, "not valid JSON")]


def test_an_unreadable_request_line_is_shown_in_the_first_skips() -> None:
    """A skipped request line was named only by its reason, where the first five show every
    other skip's value: nginx's ``"-"`` (a connection closed before sending a request, a 400 or
    408, by the thousand in a busy log) and a TLS handshake sent to the plain port
    (``\\x16\\x03\\x01``) read alike, and the operator opened the log to tell them apart."""
    line = '203.0.113.5 - - [10/Dec/2025:00:00:00 +0000] "{}" 400 0 "-" "-"'
    for request, shown in (("-", "'-'"), (r"\x16\x03\x01", r"'\x16\x03\x01'"), ("PRI * HTTP/2.0", None)):
        [skip] = parse(3, line.format(request).encode())
        assert isinstance(skip, Skip) and skip.detail == f": {shown or repr(request)}", request
    json_lines = json_parser("gw_vid", {})
    assert json_lines(3, b'{"time": 1, "request": "G E T /"}') == [
        Skip(3, "method/uri: missing (and no readable request line)", ": 'G E T /'")
    ]
    assert json_lines(3, b'{"time": 1}') == [Skip(3, "method/uri: missing (and no readable request line)")]


def test_a_request_line_not_utf8_is_shown_as_the_log_has_it() -> None:
    """A Latin-1 target skipped (a 400 live) was shown with its backslash doubled,
    ``'GET /caf\\\\xe9…'``: the request's bytes escaped (``\\xe9``), then that text shown
    by ``repr``, which escapes the backslash again. The log has neither: nginx writes the byte
    as ``\\xE9`` (one backslash), a server that escapes nothing writes the byte itself. It is
    now shown with one backslash, ``\\xe9`` (as Python writes a byte), a control byte escaped
    as before."""
    line = b'1.2.3.4 - - [01/Mar/2025:10:00:00 +0000] "GET %s HTTP/1.1" 200 5 "-" "UA"'
    for target, shown in (
        (rb"/caf\xE9?utm_source=latin1", r"'GET /caf\xe9?utm_source=latin1 HTTP/1.1'"),  # nginx
        (b"/caf\xe9?utm_source=latin1", r"'GET /caf\xe9?utm_source=latin1 HTTP/1.1'"),  # the byte itself
        (b"/caf\xe9\x01", r"'GET /caf\xe9\x01 HTTP/1.1'"),
    ):
        [skip] = parse(3, line % target)
        assert isinstance(skip, Skip) and skip.detail == f": {shown}", (target, skip.detail)
        assert "\\\\" not in skip.detail, skip.detail


def test_a_combined_line_cut_inside_a_quoted_field_is_skipped() -> None:
    """A line cut short inside its Referer or User-Agent (syslog's size limit, a crash before
    the log was compressed, whose last line is then read) was read as a request that logged
    neither: its referral lost and the touchpoint blocked as ``empty_agent``, silently. It is
    skipped as cut; whole lines with fields after the agent, or none, still read."""
    start = '203.0.113.5 - - [10/Dec/2025:00:00:00 +0000] "GET /?utm_source=x HTTP/1.1" 200 157'
    cuts = (' "https://www.google.com/" "Mozilla/5.0 (Win', ' "https://www.goo', ' "-" "UA" "10.0.0.1, 1')
    for cut in cuts:
        [skip] = parse(3, (start + cut).encode())
        assert isinstance(skip, Skip) and skip.reason == CUT, cut
    for whole in (
        "",
        ' "-" "UA"',
        ' "-" "UA \\"quoted\\" x"',
        ' "-" "UA" "10.0.0.1" rt=0.003',
        ' "https://r/"',
    ):
        [line] = parse(3, (start + whole).encode())
        assert isinstance(line, Line), whole


def test_a_json_lines_time_it_cannot_read_is_shown_in_the_first_skips() -> None:
    """A combined line's unreadable time is shown in the first skips (``unreadable time
    [2026-11-20T10:00:06+00:00]``); a json-lines one was not, so "missing or unreadable" left the
    operator to guess which: a --field pointing elsewhere, or a form the import does not read (an
    HTTP date, nanoseconds). The value is shown, cut at 40 characters; a missing one says so."""
    json_lines = json_parser("gw_vid", {})
    reason = "time: missing or unreadable at /time"
    for value in ("Tue, 11 Mar 2026 10:00:00 GMT", 1741690800123456789, "x" * 60, True):
        doc = msgspec.json.encode({"time": value, "method": "GET", "uri": "/"})
        assert json_lines(1, doc) == [Skip(1, reason, f": {str(value)[:40]!r}")], value
    for doc in ({"method": "GET", "uri": "/"}, {"time": None, "method": "GET", "uri": "/"}):
        assert json_lines(1, msgspec.json.encode(doc)) == [Skip(1, reason)], doc
