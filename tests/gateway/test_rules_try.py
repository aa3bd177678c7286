"""``gateway rules try SESSION.har``: the configured rules run on a recorded session, offline.

The HARs are recorded here as a browser records one: requests sent to a real aiohttp site on
loopback (a login form answering 302 or the form again, a JSON sign-in answered gzip-compressed,
a checkout), each written down with the answer's headers as sent (``Content-Encoding``
included) and its body as the client decoded it, as a browser's "Save all as HAR with content"
writes it. Others are written by hand where a browser would write something a site cannot make
it send (a base64 body, an export without content, a broken file).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import io
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.cli import main
from tests.jwts import certificate, token

RULES = """
[[identity.rules]]
name = "login"
path = "/login"
status = [302, 303]
user_id = { form = "email" }
lowercase = true

[[identity.rules]]
name = "api-login"
path = "/api/session"
status = [200]
when = [{ response_json = "/ok", equals = "true" }]
user_id = { response_json = "/user/id" }

[[conversions]]
name = "purchase"
path = "/checkout"
status = [200]
when = [{ response_json = "/result", equals = "success" }]
value = { response_json = "/total" }
currency = "EUR"
order_id = { response_json = "/redirect", capture = "order-received/(\\\\d+)/" }

[[conversions]]
name = "newsletter"
path = "/newsletter"
status = [200]
value = 1.0
"""


def config(tmp_path: Path, rules: str = RULES) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(f'[storage]\npath = "{tmp_path / "gateway.db"}"\n{rules}', encoding="utf-8")
    return path


def gateway(*argv: str) -> tuple[int, str, str]:
    """The command, in this process: exit status, standard output, standard error."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


async def site_home(request: web.Request) -> web.Response:
    return web.Response(text="<html>shop</html>", content_type="text/html")


async def site_login(request: web.Request) -> web.Response:
    form = await request.post()
    if form.get("password") == "right":
        raise web.HTTPSeeOther("/account", headers={"Set-Cookie": "sessionid=s1; Path=/; HttpOnly"})
    return web.Response(text="<form>wrong password</form>", content_type="text/html")


async def site_api_session(request: web.Request) -> web.Response:
    sent = await request.json()
    answer = {"ok": True, "user": {"id": 42}} if sent["password"] == "right" else {"ok": False}
    response = web.json_response(answer)
    response.enable_compression(web.ContentCoding.gzip)  # the browser decodes it; the HAR holds it decoded
    return response


async def site_checkout(request: web.Request) -> web.Response:
    sent = await request.json()
    if sent["card"] == "declined":
        return web.json_response({"result": "failure", "messages": "declined"})
    order = sent["order"]
    redirect = f"https://shop.example/checkout/order-received/{order}/?key=wc_order_x"
    return web.json_response({"result": "success", "total": "49.90", "redirect": redirect})


@pytest.fixture
async def site() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/login", site_login)
    app.router.add_post("/api/session", site_api_session)
    app.router.add_post("/checkout", site_checkout)
    app.router.add_get("/", site_home)
    runner = web.AppRunner(app)
    await runner.setup()
    listener = web.TCPSite(runner, "127.0.0.1", 0)
    await listener.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def record(
    session: aiohttp.ClientSession, method: str, url: str, body: str = "", kind: str = ""
) -> Any:
    """One request to the site and its answer, as a browser writes them in a HAR."""
    headers = {"Content-Type": kind} if kind else {}
    started = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    async with session.request(
        method, url, data=body.encode() or None, headers=headers, allow_redirects=False
    ) as response:
        text = await response.text()  # decoded, as the browser hands it to the page
        sent = response.request_info.headers
        entry = {
            "startedDateTime": started,
            "request": {
                "method": method,
                "url": url,
                "headers": [{"name": k, "value": v} for k, v in sent.items()],
                "cookies": [],
            },
            "response": {
                "status": response.status,
                "headers": [{"name": k.decode(), "value": v.decode()} for k, v in response.raw_headers],
                "cookies": [],
                "content": {"size": len(text.encode()), "mimeType": response.content_type, "text": text},
            },
        }
        if body:
            entry["request"]["postData"] = {"mimeType": kind, "text": body}
        return entry


def har(tmp_path: Path, entries: list[Any], name: str = "session.har") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"log": {"version": "1.2", "entries": entries}}), encoding="utf-8")
    return path


def by_hand(
    method: str, path: str, status: int, content: dict[str, Any] | None = None, **request: Any
) -> dict[str, Any]:
    """An entry as a browser writes one (``content``: the answer's; ``request``: more of the request)."""
    return {
        "startedDateTime": "2026-12-05T10:00:00.000Z",
        "request": {"method": method, "url": f"https://shop.example{path}", "headers": [], **request},
        "response": {
            "status": status,
            "headers": [{"name": "Content-Type", "value": "application/json"}],
            "content": {"size": 0, "mimeType": "application/json"} if content is None else content,
        },
    }


FORM = "application/x-www-form-urlencoded"


async def session_har(tmp_path: Path, site: str) -> Path:
    async with aiohttp.ClientSession() as session:
        entries = [
            await record(session, "GET", f"{site}/"),
            await record(session, "POST", f"{site}/login", "email=Ada%40Example.com&password=right", FORM),
            await record(session, "POST", f"{site}/login", "email=bob%40example.com&password=wrong", FORM),
            await record(
                session,
                "POST",
                f"{site}/api/session",
                '{"email":"a@x","password":"right"}',
                "application/json",
            ),
            await record(
                session,
                "POST",
                f"{site}/api/session",
                '{"email":"a@x","password":"wrong"}',
                "application/json",
            ),
            await record(
                session, "POST", f"{site}/checkout", '{"card":"ok","order":"727"}', "application/json"
            ),
            await record(
                session, "POST", f"{site}/checkout", '{"card":"declined","order":"728"}', "application/json"
            ),
            await record(
                session, "POST", f"{site}/checkout", '{"card":"ok","order":"727"}', "application/json"
            ),
            await record(
                session, "POST", f"{site}/checkout", '{"card":"ok","order":"none"}', "application/json"
            ),
        ]
    return await asyncio.to_thread(har, tmp_path, entries)


def tried(tmp_path: Path, har_path: Path, *options: str) -> tuple[int, str, str]:
    """``gateway rules try`` with the rules above (off the event loop: it reads files)."""
    return gateway("rules", "try", str(har_path), "-c", str(config(tmp_path)), *options)


async def test_the_rules_are_tried_on_each_recorded_request(tmp_path: Path, site: str) -> None:
    path = await session_har(tmp_path, site)
    code, out, err = await asyncio.to_thread(tried, tmp_path, path)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines == [
        "entry 2  POST /login  303",
        "  identity login: fired, user ID ada@example.com",
        "entry 3  POST /login  200",
        "  identity login: not fired: status 200 not in status [302, 303]",
        "entry 4  POST /api/session  200",
        "  identity api-login: fired, user ID 42",
        "entry 5  POST /api/session  200",
        '  identity api-login: not fired: when[0] (response_json "/ok" equals "true") did not hold:'
        ' its value is "false"',
        "entry 6  POST /checkout  200",
        "  conversion purchase: fired, value 49.9, currency EUR, order ID 727",
        "entry 7  POST /checkout  200",
        '  conversion purchase: not fired: when[0] (response_json "/result" equals "success") did not'
        ' hold: its value is "failure"',
        "entry 8  POST /checkout  200",
        "  conversion purchase: fired, value 49.9, currency EUR, order ID 727 (a duplicate of entry 6's:"
        " the store records it once)",
        "entry 9  POST /checkout  200",
        "  conversion purchase: fired, value 49.9, currency EUR",
        "    counted: order_id_capture_no_match",
        "9 entries read, 8 matched a rule; fired: identity login 1 (of 2 matched), identity api-login 1"
        " (of 2 matched), conversion purchase 3 (of 4 matched); matched nothing: conversion newsletter",
        f"hosts: run on {urlsplit(site).netloc} (the first request's, as no page load is marked in the"
        " file; --host NAME to choose); no request to another host",
    ]
    # The answers to /api/session said Content-Encoding: gzip, and the HAR holds them decoded.
    recorded = json.loads(await asyncio.to_thread(path.read_text))["log"]["entries"][3]["response"]["headers"]
    assert {"name": "Content-Encoding", "value": "gzip"} in recorded
    code, out, _ = await asyncio.to_thread(tried, tmp_path, path, "--all")
    assert out.startswith("entry 1  GET /  200  no rule matched\nentry 2  POST /login  303\n")


async def test_json_says_the_same_facts(tmp_path: Path, site: str) -> None:
    path = await session_har(tmp_path, site)
    code, out, _ = await asyncio.to_thread(tried, tmp_path, path, "--format", "json")
    assert code == 0
    document = json.loads(out)
    shown = {e["entry"]: e for e in document["entries"]}
    assert sorted(shown) == [2, 3, 4, 5, 6, 7, 8, 9]
    assert shown[2]["rules"] == [
        {
            "kind": "identity",
            "rule": "login",
            "fired": [{"user_id": "ada@example.com"}],
            "reason": None,
            "counted": [],
        }
    ]
    assert shown[3]["rules"][0]["reason"] == "status 200 not in status [302, 303]"
    assert shown[8]["rules"][0]["fired"] == [
        {"value": 49.9, "currency": "EUR", "order_id": "727", "duplicate_of": 6}
    ]
    assert shown[9]["rules"][0]["counted"] == ["order_id_capture_no_match"]
    assert (shown[2]["method"], shown[2]["path"], shown[2]["status"]) == ("POST", "/login", 303)
    assert document["unreadable"] == []
    assert document["summary"]["entries"] == 9 and document["summary"]["matched"] == 8
    assert {"kind": "identity", "rule": "login", "matched": 2, "fired": 1} in document["summary"]["rules"]
    assert document["summary"]["matched_nothing"] == ["conversion newsletter"]
    code, out, _ = await asyncio.to_thread(tried, tmp_path, path, "--format", "json", "--all")
    assert [e["entry"] for e in json.loads(out)["entries"]] == list(range(1, 10))


def test_a_base64_body_is_read_and_a_gzip_coding_is_not_undone_again(tmp_path: Path) -> None:
    """Firefox writes a body base64 when it is not text; either way the HAR's body is decoded
    already, whatever Content-Encoding the answer had: a rule reads it as it is."""
    answer = b'{"result":"success","total":"12","redirect":"/checkout/order-received/9/"}'
    base = by_hand(
        "POST",
        "/checkout",
        200,
        {
            "mimeType": "application/json",
            "encoding": "base64",
            "text": base64.b64encode(answer).decode(),
            "size": len(answer),
        },
    )
    base["response"]["headers"].append({"name": "Content-Encoding", "value": "gzip"})
    code, out, _ = gateway("rules", "try", str(har(tmp_path, [base])), "-c", str(config(tmp_path)))
    assert code == 0
    assert "  conversion purchase: fired, value 12.0, currency EUR, order ID 9\n" in out


def test_a_har_saved_without_content_says_which_rules_need_it(tmp_path: Path) -> None:
    no_content = {"size": 120, "mimeType": "application/json"}
    entries = [
        by_hand("POST", "/api/session", 200, no_content),
        by_hand("POST", "/login", 302, headers=[{"name": "Content-Length", "value": "30"}]),
        by_hand("POST", "/newsletter", 200, no_content),  # its rule reads no body: fires
    ]
    code, out, _ = gateway("rules", "try", str(har(tmp_path, entries)), "-c", str(config(tmp_path)))
    assert code == 0
    assert out.splitlines()[:6] == [
        "entry 1  POST /api/session  200",
        "  identity api-login: not fired: when_body_not_read: response body not in the HAR: the rule"
        " reads the body; export with content",
        "entry 2  POST /login  302",
        "  identity login: not fired: body_not_read: request body not in the HAR: the rule reads the"
        " body; export with content",
        "entry 3  POST /newsletter  200",
        "  conversion newsletter: fired, value 1.0",
    ]
    # A rule that reads a redirect's body (its status taken): no export holds one.
    redirected = config(tmp_path, RULES.replace("status = [200]", "status = [200, 302]", 1))
    entries = [by_hand("POST", "/api/session", 302, no_content)]
    _, out, _ = gateway("rules", "try", str(har(tmp_path, entries)), "-c", str(redirected))
    assert out.splitlines()[:2] == [
        "entry 1  POST /api/session  302",
        "  identity api-login: not fired: when_body_not_read: response body not in the HAR: browsers"
        " save no redirect's body (a 302), whatever the export; only a running gateway shows whether"
        " the rule fires",
    ]


SMALL_BODY = RULES.replace('path = "/api/session"', 'path = "/api/session"\nmax_body = 20')
"""The README's rules with ``api-login``'s body bound to 20 bytes, under the session's 32."""


def _session_answer(tmp_path: Path, rules: str) -> str:
    """``gateway rules try`` of one recorded session answer (32 bytes of JSON) under ``rules``."""
    answer = {"mimeType": "application/json", "text": '{"ok": true, "user": {"id": 42}}', "size": 31}
    entries = [by_hand("POST", "/api/session", 200, answer)]
    _, out, _ = gateway("rules", "try", str(har(tmp_path, entries)), "-c", str(config(tmp_path, rules)))
    return str(out)


def test_a_body_over_max_body_is_not_read_as_live(tmp_path: Path) -> None:
    out = _session_answer(tmp_path, SMALL_BODY)
    assert "not fired: when_body_not_read: the response body is 32 bytes, over max_body (20)" in out


def test_a_body_over_this_rule_s_max_body_is_not_read_though_another_rule_reads_it(tmp_path: Path) -> None:
    # As live: the body is read within the larger max_body, for the other rule only (until
    # 2026-12-05 both read it, and the smaller rule's bound did nothing).
    rules = SMALL_BODY + (
        '\n[[identity.rules]]\nname = "api-login-2"\npath = "/api/session"\nstatus = [200]\n'
        'user_id = { response_json = "/user/id" }\n'
    )
    assert _session_answer(tmp_path, rules).splitlines()[:3] == [
        "entry 1  POST /api/session  200",
        "  identity api-login: not fired: when_body_not_read: the response body is 32 bytes, over"
        " max_body (20)",
        "  identity api-login-2: fired, user ID 42",
    ]


def test_a_jwt_is_verified_with_the_rule_s_key_file_at_the_recorded_time(tmp_path: Path) -> None:
    key, other = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
    (tmp_path / "auth0.pem").write_text(certificate(key))
    rules = """
[[identity.rules]]
name = "bearer"
method = "GET"
path = "/api/me"
status = [200]
user_id = { jwt_authorization = true, algorithm = "RS256", key = "auth0.pem" }
"""
    recorded = datetime(2026, 12, 5, 10, tzinfo=UTC).timestamp()

    def call(signed_by: rsa.RSAPrivateKey, exp: float) -> dict[str, Any]:
        bearer = token({"sub": "auth0|ada", "exp": exp}, signed_by, "RS256", "k1")
        return by_hand(
            "GET", "/api/me", 200, headers=[{"name": "Authorization", "value": f"Bearer {bearer}"}]
        )

    entries = [call(key, recorded + 60), call(other, recorded + 60), call(key, recorded - 3600)]
    code, out, _ = gateway("rules", "try", str(har(tmp_path, entries)), "-c", str(config(tmp_path, rules)))
    assert code == 0
    assert [line for line in out.splitlines() if line.startswith("  ")] == [
        "  identity bearer: fired, user ID auth0|ada",
        "  identity bearer: not fired: jwt_signature",
        "  identity bearer: not fired: jwt_expired",
    ]
    # Chrome's default export ("sanitized") leaves Authorization, Cookie and Set-Cookie out.
    sanitized = har(tmp_path, [by_hand("GET", "/api/me", 200)], "sanitized.har")
    code, out, _ = gateway("rules", "try", str(sanitized), "-c", str(config(tmp_path, rules)))
    assert out.splitlines()[1:] == [
        "  identity bearer: not fired: missing",
        "1 entry read, 1 matched a rule; fired: identity bearer 0 (of 1 matched)",
        "hosts: run on shop.example (the first request's, as no page load is marked in the file; --host"
        " NAME to choose); no request to another host",
        "note: identity bearer read a cookie or the Authorization header, and no entry holds one: a HAR"
        " exported sanitized (Chrome's default) leaves them out; export it with sensitive data",
    ]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("not json", "not a HAR file: not JSON (Expecting value, line 1)"),
        ('{"log": {}}', 'not a HAR file: no log.entries list (a HAR is {"log": {"entries": [...]}})'),
        ("[]", "not a HAR file: no log.entries list"),
        (b"\xff\xfe{}", "not a HAR file: not UTF-8 text (byte 0)"),
    ],
)
def test_a_file_that_is_not_a_har_is_one_line(tmp_path: Path, text: str | bytes, said: str) -> None:
    path = tmp_path / "session.har"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    code, out, err = gateway("rules", "try", str(path), "-c", str(config(tmp_path)))
    assert (code, out) == (1, "")
    assert err.startswith(f"gateway: {path}: {said}") and err.count("\n") == 1, err
    code, _, err = gateway("rules", "try", str(tmp_path / "gone.har"), "-c", str(config(tmp_path)))
    assert (code, err) == (1, f"gateway: cannot read {tmp_path / 'gone.har'}: No such file or directory\n")


def test_a_gzipped_har_is_read(tmp_path: Path) -> None:
    """``session.har.gz`` (a HAR kept compressed, as large ones are): read through gzip, told by
    its magic bytes whatever its name, as ``gateway import`` reads a gzip'd log; until
    2026-12-06 it was refused as ``not UTF-8 text (byte 1)``. One cut short is one line."""
    plain = har(tmp_path, [by_hand("POST", "/newsletter", 200)])
    packed = tmp_path / "session.har.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    misnamed = tmp_path / "named-plain.har"
    misnamed.write_bytes(packed.read_bytes())
    for path in (packed, misnamed):
        code, out, err = gateway("rules", "try", str(path), "-c", str(config(tmp_path)))
        assert (code, err) == (0, "") and "  conversion newsletter: fired, value 1.0\n" in out
    cut = tmp_path / "cut.har.gz"
    cut.write_bytes(packed.read_bytes()[:40])
    code, out, err = gateway("rules", "try", str(cut), "-c", str(config(tmp_path)))
    assert (code, out) == (1, "")
    assert err.startswith(f"gateway: {cut}: not a HAR file: gzip'd, and cut short or corrupt (") and (
        err.count("\n") == 1
    ), err


def test_dash_reads_the_har_from_standard_input(tmp_path: Path) -> None:
    """``gateway rules try -`` reads the HAR piped in (gzip'd too: ``cat session.har.gz |``), as
    ``gateway import -`` reads a log; until 2026-12-06 it said ``cannot read -``. Closed, it
    is one line; a terminal (the pipe forgotten) is refused rather than waited on."""
    plain = har(tmp_path, [by_hand("POST", "/newsletter", 200)])
    command = [sys.executable, "-m", "gateway", "rules", "try", "-", "-c", str(config(tmp_path))]
    for data in (plain.read_bytes(), gzip.compress(plain.read_bytes())):
        piped = subprocess.run(command, input=data, capture_output=True, text=False, timeout=60)
        assert piped.returncode == 0, piped.stderr
        assert b"  conversion newsletter: fired, value 1.0\n" in piped.stdout
    as_json = subprocess.run([*command, "--format", "json"], input=data, capture_output=True, timeout=60)
    assert json.loads(as_json.stdout)["file"] == "-"
    closed = subprocess.run(  # stdin closed (<&-)
        ["sh", "-c", " ".join(f"'{word}'" for word in command) + " <&-"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (closed.returncode, closed.stderr) == (1, "gateway: cannot read -: Bad file descriptor\n")
    leader, follower = os.openpty()
    try:
        typed = subprocess.run(command, stdin=follower, capture_output=True, text=True, timeout=60)
    finally:
        os.close(leader)
        os.close(follower)
    assert typed.returncode == 2 and "gateway: -: standard input is a terminal; pipe a HAR in" in typed.stderr


COOKIE_RULE = """
[[identity.rules]]
name = "login"
path = "/login"
status = [302]
when = [{ set_cookie = "sessionid" }]
user_id = { form = "email" }
"""


def test_an_empty_har_is_said_so_not_taken_for_a_sanitized_export(tmp_path: Path) -> None:
    """A HAR of no entries (saved before the session's requests were listed): until 2026-12-06 the
    note said a rule reads a cookie no entry holds, and to export with sensitive data, which
    would not have helped. Nor is that said when no request was run (all to another host)."""
    rules = str(config(tmp_path, COOKIE_RULE))
    code, out, _ = gateway("rules", "try", str(har(tmp_path, [])), "-c", rules)
    assert code == 0 and [line for line in out.splitlines() if line.startswith("note: ")] == [
        "note: the HAR holds no requests (its log.entries is empty): save it once the session's"
        " requests are listed in the Network panel (tick Preserve log: a sign-in redirects)"
    ]
    code, out, _ = gateway("rules", "try", str(har(tmp_path, [], "e.har")), "-c", rules, "--format", "json")
    assert json.loads(out)["summary"]["notes"] == [
        "the HAR holds no requests (its log.entries is empty): save it once the session's"
        " requests are listed in the Network panel (tick Preserve log: a sign-in redirects)"
    ]
    one = har(tmp_path, [by_hand("POST", "/login", 302)], "one.har")
    code, out, _ = gateway("rules", "try", str(one), "-c", rules, "--host", "other.example")
    assert code == 0 and [line for line in out.splitlines() if line.startswith("note: ")] == [
        "note: --host other.example: no request of the file went to it"
    ]
    code, out, _ = gateway("rules", "try", str(one), "-c", rules)
    assert code == 0 and "note: identity login read a cookie or the Authorization header" in out


def test_each_broken_entry_is_named_and_the_others_are_tried(tmp_path: Path) -> None:
    good = by_hand("POST", "/newsletter", 200)
    no_url = by_hand("POST", "/login", 302)
    no_url["request"]["url"] = "/login"
    no_status = by_hand("POST", "/login", 302)
    del no_status["response"]["status"]
    bad_base64 = by_hand("POST", "/login", 200, {"encoding": "base64", "text": "!!!", "size": 3})
    bad_time = by_hand("POST", "/checkout", 200)
    bad_time["startedDateTime"] = "yesterday"
    bad_headers = by_hand("POST", "/checkout", 200)
    bad_headers["response"]["headers"] = [{"name": "Location"}]
    other_coding = by_hand("POST", "/checkout", 200, {"encoding": "gzip", "text": "x", "size": 1})
    entries = [good, no_url, no_status, bad_base64, "junk", bad_time, bad_headers, other_coding, good]
    code, out, err = gateway("rules", "try", str(har(tmp_path, entries)), "-c", str(config(tmp_path)))
    assert (code, err) == (1, "")
    assert out.splitlines() == [
        "entry 1  POST /newsletter  200",
        "  conversion newsletter: fired, value 1.0",
        "entry 2 (POST): request.url is not an http(s) URL: '/login' (not tried)",
        "entry 3 (POST /login): response.status is not a number: None (not tried)",
        "entry 4 (POST /login): response.content.text is not base64 (not tried)",
        "entry 5: no request object (not tried)",
        "entry 6 (POST /checkout): startedDateTime is not an ISO 8601 date: 'yesterday' (not tried)",
        "entry 7 (POST /checkout): response.headers[0] is not a {name, value} pair of strings (not tried)",
        "entry 8 (POST /checkout): response.content.encoding is 'gzip': a HAR body is base64 or text"
        " (not tried)",
        "entry 9  POST /newsletter  200",
        "  conversion newsletter: fired, value 1.0 (a duplicate of entry 1's: the store records it once)",
        "9 entries read (7 could not be), 2 matched a rule; fired: conversion newsletter 2 (of 2 matched);"
        " matched nothing: identity login, identity api-login, conversion purchase",
        "hosts: run on shop.example (the first request's, as no page load is marked in the file; --host"
        " NAME to choose); no request to another host",
    ]
    code, out, _ = gateway(
        "rules", "try", str(har(tmp_path, entries)), "-c", str(config(tmp_path)), "--format", "json"
    )
    assert code == 1
    assert json.loads(out)["unreadable"][0] == {
        "entry": 2,
        "error": "entry 2 (POST): request.url is not an http(s) URL: '/login'",
    }


def test_config_problems_and_no_rules_exit_2(tmp_path: Path) -> None:
    path = har(tmp_path, [by_hand("POST", "/login", 302)])
    broken = config(tmp_path, RULES.replace('path = "/login"', 'path = "(/login"'))
    code, out, err = gateway("rules", "try", str(path), "-c", str(broken))
    assert (code, out) == (2, "")
    assert "identity.rules[0].path: not a valid regular expression" in err and "Traceback" not in err
    code, _, err = gateway("rules", "try", str(path), "-c", str(config(tmp_path, "")))
    assert code == 2
    said = "no [[identity.rules]] and no [[conversions]]: no rule to try"
    assert err == f"gateway: {tmp_path / 'gateway.toml'}: {said}\n"


def test_another_host_s_request_is_named_and_a_request_without_answer_said(tmp_path: Path) -> None:
    """A HAR holds every site the page called (analytics, a payment provider), which the gateway
    never sees: with ``--host`` naming both, a rule without ``host`` matching one of them is
    shown with that host. A request that got no answer (blocked, cancelled) is written with
    status 0."""
    ours = by_hand("POST", "/newsletter", 200)
    theirs = by_hand("POST", "/newsletter", 200)
    theirs["request"]["url"] = "https://mailer.example:8443/newsletter"
    blocked = by_hand("POST", "/login", 0)
    both = ("--host", "shop.example", "--host", "MAILER.example")  # any port, any case, as a rule's host
    code, out, _ = gateway(
        "rules", "try", str(har(tmp_path, [ours, theirs, blocked])), "-c", str(config(tmp_path)), *both
    )
    assert code == 0
    assert out.splitlines()[:6] == [
        "entry 1  POST /newsletter  200  (shop.example)",
        "  conversion newsletter: fired, value 1.0",
        "entry 2  POST /newsletter  200  (mailer.example:8443)",
        "  conversion newsletter: fired, value 1.0 (a duplicate of entry 1's: the store records it once)",
        "entry 3  POST /login  0  (shop.example)",
        "  identity login: not fired: status 0 not in status [302, 303] (0: no answer; the request failed"
        " or was blocked)",
    ]
    assert out.splitlines()[-1] == (
        "hosts: run on shop.example, mailer.example (as --host says); no request to another host"
    )
    code, out, _ = gateway(
        "rules",
        "try",
        str(har(tmp_path, [ours, theirs])),
        "-c",
        str(config(tmp_path)),
        "--format",
        "json",
        *both,
    )
    assert [e["host"] for e in json.loads(out)["entries"]] == ["shop.example", "mailer.example:8443"]


def chrome(entry: dict[str, Any], kind: str, url: str = "", at: str = "") -> dict[str, Any]:
    """``entry`` as Chrome writes it: its ``_resourceType`` (``document`` for a page load)."""
    entry["_resourceType"] = kind
    if url:
        entry["request"]["url"] = url
    if at:
        entry["startedDateTime"] = f"2026-12-05T10:00:{at}.000Z"
    return entry


def mixed_har(tmp_path: Path) -> Path:
    """A checkout recorded in Chrome: the shop's page and its calls, and between them calls to
    other sites, one of them (a payment provider's, its page in an iframe) to a path a rule
    without ``host`` matches. Listed out of time order, the shop's page first in time."""
    return har(
        tmp_path,
        [
            chrome(by_hand("POST", "/newsletter", 200), "fetch", at="01"),
            chrome(by_hand("GET", "/", 200), "document", at="00"),
            chrome(by_hand("POST", "/checkout", 200), "fetch", "https://pay.example/checkout", "02"),
            chrome(by_hand("GET", "/frame", 200), "document", "https://pay.example/frame", "02"),
            chrome(by_hand("POST", "/collect", 204), "ping", "https://stats.example/collect", "03"),
            chrome(by_hand("POST", "/newsletter", 200), "fetch", "https://stats.example/newsletter", "04"),
            chrome(by_hand("GET", "/thanks", 200), "document", at="05"),
        ],
    )


def test_only_the_recorded_site_s_requests_are_run_by_default(tmp_path: Path) -> None:
    """The requests to other sites than the one recorded (a payment provider, analytics) never
    reach its gateway, and a rule without ``host`` matches them: they are not run, and the
    summary says which host was run, why that one, and which others were skipped, how many each."""
    path = mixed_har(tmp_path)
    code, out, err = gateway("rules", "try", str(path), "-c", str(config(tmp_path)))
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "entry 1  POST /newsletter  200",
        "  conversion newsletter: fired, value 1.0",
        "7 entries read (4 to other hosts, skipped), 1 matched a rule; fired: conversion newsletter 1"
        " (of 1 matched); matched nothing: identity login, identity api-login, conversion purchase",
        "hosts: run on shop.example (the page the recording starts on; --host NAME to choose); 4 requests"
        " to other hosts skipped: pay.example 2, stats.example 2",
    ]
    code, out, _ = gateway("rules", "try", str(path), "-c", str(config(tmp_path)), "--all")
    assert out.splitlines()[:5] == [
        "entry 1  POST /newsletter  200",
        "  conversion newsletter: fired, value 1.0",
        "entry 2  GET /  200  no rule matched",
        "entry 3  POST /checkout  200  (pay.example)  other host, skipped",
        "entry 4  GET /frame  200  (pay.example)  other host, skipped",
    ]
    code, out, _ = gateway(
        "rules", "try", str(path), "-c", str(config(tmp_path)), "--format", "json", "--all"
    )
    document = json.loads(out)
    assert [(e["entry"], e["skipped"]) for e in document["entries"]][:4] == [
        (1, None),
        (2, None),
        (3, "other_host"),
        (4, "other_host"),
    ]
    summary = document["summary"]
    assert (summary["entries"], summary["matched"]) == (7, 1)
    assert (summary["hosts"], summary["hosts_chosen"]) == (["shop.example"], "page")
    assert (summary["other_host"], summary["other_hosts"]) == (4, {"pay.example": 2, "stats.example": 2})


def test_host_chooses_the_requests_run_and_a_host_no_request_went_to_is_said(tmp_path: Path) -> None:
    path = mixed_har(tmp_path)
    code, out, _ = gateway(
        "rules",
        "try",
        str(path),
        "-c",
        str(config(tmp_path)),
        "--host",
        "https://pay.example/",
        "--host",
        "shop.exmaple",
    )
    assert code == 0
    assert out.splitlines() == [
        "entry 3  POST /checkout  200",
        "  conversion purchase: not fired: when_not_json",
        "7 entries read (5 to other hosts, skipped), 1 matched a rule; fired: conversion purchase 0"
        " (of 1 matched); matched nothing: identity login, identity api-login, conversion newsletter",
        "hosts: run on pay.example, shop.exmaple (as --host says); 5 requests to other hosts skipped:"
        " shop.example 3, stats.example 2",
        "note: --host shop.exmaple: no request of the file went to it",
    ]
    code, out, err = gateway(
        "rules", "try", str(path), "-c", str(config(tmp_path)), "--host", "shop.example/x"
    )
    assert (code, out) == (2, "")
    assert err == "gateway: --host 'shop.example/x': not a host name (shop.example, or shop.example:8443)\n"


def test_a_recording_started_on_a_page_already_loaded_runs_that_page_s_host(tmp_path: Path) -> None:
    """Recording started on the checkout page, already loaded: the first request sent is the
    page's call to a third party (its Referer names the page), and the first page load is the
    payment provider's (the checkout redirects there). The page's host is run, not either."""
    beacon = chrome(by_hand("POST", "/collect", 204), "ping", "https://stats.example/collect", "00")
    beacon["request"]["headers"] = [{"name": "Referer", "value": "https://shop.example/checkout/"}]
    entries = [
        beacon,
        chrome(by_hand("POST", "/checkout", 200), "fetch", at="01"),
        chrome(by_hand("GET", "/checkout", 200), "document", "https://pay.example/checkout", "02"),
        chrome(by_hand("POST", "/newsletter", 200), "fetch", at="03"),
    ]
    code, out, _ = gateway("rules", "try", str(har(tmp_path, entries)), "-c", str(config(tmp_path)))
    assert code == 0
    assert out.splitlines()[-1] == (
        "hosts: run on shop.example (the page the recording starts on; --host NAME to choose); 2 requests"
        " to other hosts skipped: stats.example 1, pay.example 1"
    )
    beacon["request"]["headers"] = []  # no Referer (a Referrer-Policy of no-referrer): its own host
    code, out, _ = gateway(
        "rules", "try", str(har(tmp_path, entries)), "-c", str(config(tmp_path)), "--format", "json"
    )
    assert json.loads(out)["summary"]["hosts"] == ["stats.example"]
    # An entry whose time cannot be read is tried first (and said unreadable): it chooses nothing.
    beacon["startedDateTime"] = "yesterday"
    code, out, _ = gateway(
        "rules", "try", str(har(tmp_path, entries)), "-c", str(config(tmp_path)), "--format", "json"
    )
    assert code == 1 and json.loads(out)["summary"]["hosts"] == ["shop.example"]


def test_the_first_request_s_host_is_run_when_no_page_load_is_marked(tmp_path: Path) -> None:
    """A HAR that marks no entry as a page load (``_resourceType`` is Chrome's, not every
    browser writes it): the first request sent is taken for the site's."""
    entries = [by_hand("POST", "/newsletter", 200), by_hand("POST", "/newsletter", 200)]
    entries[0]["request"]["url"] = "https://stats.example/newsletter"
    entries[0]["startedDateTime"] = "2026-12-05T10:00:01.000Z"
    code, out, _ = gateway(
        "rules", "try", str(har(tmp_path, entries)), "-c", str(config(tmp_path)), "--format", "json"
    )
    assert code == 0
    summary = json.loads(out)["summary"]
    assert (summary["hosts"], summary["hosts_chosen"], summary["other_hosts"]) == (
        ["shop.example"],
        "request",
        {"stats.example": 1},
    )


def test_what_a_recording_holds_is_printed_without_terminal_escapes(tmp_path: Path) -> None:
    """A recorded URL or answer may hold anything, an escape sequence too: printed escaped."""
    odd = by_hand("GET", "/\x1b[2Jx", 200)
    answer = {"mimeType": "application/json", "text": '{"ok": "\\u009b2J\u00e9"}', "size": 12}
    cleared = by_hand("POST", "/api/session", 200, answer)
    odd_method = by_hand("GET", "/", 200)
    odd_method["request"]["method"] = "GET\x1b[2J"
    code, out, _ = gateway(
        "rules", "try", str(har(tmp_path, [odd, cleared, odd_method])), "-c", str(config(tmp_path)), "--all"
    )
    assert code == 1 and "\x1b" not in out and "\x9b" not in out
    assert out.splitlines()[:4] == [
        "entry 1  GET /\\x1b[2Jx  200  no rule matched",
        "entry 2  POST /api/session  200",
        '  identity api-login: not fired: when[0] (response_json "/ok" equals "true") did not hold:'
        ' its value is "\\x9b2Jé"',
        "entry 3: request.method is not a method name: 'GET\\x1b[2J' (not tried)",
    ]


def test_entries_are_tried_in_the_order_they_were_sent(tmp_path: Path) -> None:
    """A HAR merged from two tabs, or edited, need not list its entries in time order; the
    gateway sees them in the order they were sent, so the later of two conversions of an order
    is the duplicate the store leaves out, whatever the file's order."""
    later, earlier = (by_hand("POST", "/newsletter", 200) for _ in range(2))
    later["startedDateTime"] = "2026-12-05T10:00:30.000Z"
    earlier["startedDateTime"] = "2026-12-05T10:00:00.000+00:00"
    code, out, _ = gateway("rules", "try", str(har(tmp_path, [later, earlier])), "-c", str(config(tmp_path)))
    assert code == 0
    assert out.splitlines()[:4] == [
        "entry 1  POST /newsletter  200",
        "  conversion newsletter: fired, value 1.0 (a duplicate of entry 2's: the store records it once)",
        "entry 2  POST /newsletter  200",
        "  conversion newsletter: fired, value 1.0",
    ]


def test_an_answer_from_the_browser_s_cache_fires_nothing(tmp_path: Path) -> None:
    """Chrome writes a page served from its cache (a thank-you page seen again with Back) as an
    entry with ``_fromCache``: the request never left the browser, the gateway never saw it.
    Said so, and not counted as a conversion a later real one would be the duplicate of."""
    cached = by_hand("POST", "/newsletter", 200)
    cached["_fromCache"] = "disk"
    sent = by_hand("POST", "/newsletter", 200)
    sent["startedDateTime"] = "2026-12-05T10:01:00.000Z"
    code, out, _ = gateway("rules", "try", str(har(tmp_path, [cached, sent])), "-c", str(config(tmp_path)))
    assert code == 0
    assert out.splitlines()[:4] == [
        "entry 1  POST /newsletter  200",
        "  conversion newsletter: not fired: answered from the browser's disk cache: the request never"
        " reached the site, and the gateway would not see it (reload without cache, or tick Disable"
        " cache, to record it)",
        "entry 2  POST /newsletter  200",
        "  conversion newsletter: fired, value 1.0",
    ]
    _, out, _ = gateway(
        "rules", "try", str(har(tmp_path, [cached])), "-c", str(config(tmp_path)), "--format", "json"
    )
    assert json.loads(out)["entries"][0]["from_cache"] == "disk"


def test_a_large_recording_is_read_an_entry_at_a_time(tmp_path: Path) -> None:
    """A long session's HAR (polling, images with content) runs to hundreds of megabytes: read
    whole into Python objects it took several times its size (1.8 GB for 240 MB of 100,000
    entries). Its entries are read one at a time from the file's bytes: the memory it takes
    stays near the file's size."""
    import tracemalloc

    headers = [{"name": f"x-header-{i}", "value": "v" * 40} for i in range(12)]
    poll = by_hand("GET", "/api/poll", 200, {"size": 11, "mimeType": "application/json", "text": '{"n": 1}'})
    poll["request"]["headers"] = poll["response"]["headers"] = headers
    path = har(tmp_path, [poll] * 3000)
    size = path.stat().st_size
    tracemalloc.start()
    try:
        code, out, _ = gateway("rules", "try", str(path), "-c", str(config(tmp_path)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code == 0 and out.startswith("3,000 entries read, 0 matched a rule")
    assert peak < 2 * size, (peak, size)


class Browser:
    """Requests sent through a real gateway, each written down as the browser that sent them
    writes it in a HAR: Chrome over HTTP/2 (pseudo-headers, names in lower case, each
    Set-Cookie its own line, a redirect's body left out, ``_resourceType``, ``_initiator``,
    ``serverIPAddress``, ``content.compression``, cookies with ``expires: null``), or Firefox
    (names as sent, Set-Cookie lines joined by newlines, a binary body base64, ``bodySize:
    -1``)."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session, self.url = session, url
        self.entries: list[dict[str, Any]] = []
        self.cookies: dict[str, str] = {}

    async def send(
        self, method: str, path: str, data: Any = None, firefox: bool = False, **headers: str
    ) -> int:
        cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        sent_headers = {**headers, **({"Cookie": cookie} if cookie else {})}
        started = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        async with self.session.request(
            method, self.url + path, data=data, headers=sent_headers, allow_redirects=False
        ) as resp:
            body = await resp.read()  # decoded, as the browser hands it to the page
            sent = resp.request_info.headers
            request_body = b""
            if isinstance(data, dict):
                request_body = urlencode(data).encode()
            elif isinstance(data, aiohttp.MultipartWriter):
                writer = _Collect()
                await data.write(writer)
                request_body = writer.data
            answer = [(k.decode(), v.decode()) for k, v in resp.raw_headers]
            for line in resp.headers.getall("Set-Cookie", ()):
                name, _, rest = line.partition("=")
                self.cookies[name] = rest.partition(";")[0]
        url = self.url + path
        if firefox:
            joined = "\n".join(v for k, v in answer if k.lower() == "set-cookie")
            headers_out = [{"name": k, "value": v} for k, v in answer if k.lower() != "set-cookie"]
            if joined:
                headers_out.append({"name": "Set-Cookie", "value": joined})
            content: dict[str, Any] = {"mimeType": resp.headers.get("Content-Type", ""), "size": len(body)}
            try:
                content["text"] = body.decode()
            except UnicodeDecodeError:
                content.update(text=base64.b64encode(body).decode(), encoding="base64")
            request = {
                "method": method,
                "url": url,
                "httpVersion": "HTTP/1.1",
                "headers": [{"name": k, "value": v} for k, v in sent.items()],
                "cookies": [{"name": k, "value": v} for k, v in self.cookies.items()],
                "bodySize": len(request_body) or -1,
            }
            response = {"status": resp.status, "headers": headers_out, "content": content, "bodySize": -1}
        else:
            parts = urlsplit(url)
            pseudo = [
                (":authority", parts.netloc),
                (":method", method),
                (":path", path),
                (":scheme", "https"),
            ]
            request = {
                "method": method,
                "url": url,
                "httpVersion": "http/2.0",
                "headers": [{"name": k, "value": v} for k, v in pseudo]
                + [{"name": k.lower(), "value": v} for k, v in sent.items()],
                "queryString": [],
                "cookies": [],
                "headersSize": -1,
                "bodySize": len(request_body),
            }
            content = {"size": len(body), "mimeType": resp.headers.get("Content-Type", "x-unknown")}
            if not 300 <= resp.status < 400:  # Chrome keeps no redirect's body
                content.update(text=body.decode("utf-8", "replace"), compression=0)
            response = {
                "status": resp.status,
                "statusText": "",
                "httpVersion": "http/2.0",
                "headers": [{"name": ":status", "value": str(resp.status)}]
                + [{"name": k.lower(), "value": v} for k, v in answer],
                "cookies": [
                    {"name": c.key, "value": c.value, "path": "/", "expires": None, "httpOnly": True}
                    for c in resp.cookies.values()
                ],
                "content": content,
                "redirectURL": resp.headers.get("Location", ""),
                "headersSize": -1,
                "bodySize": -1,
                "_transferSize": len(body) + 200,
                "_error": None,
            }
        if request_body:
            request["postData"] = {
                "mimeType": sent.get("Content-Type", ""),
                "text": request_body.decode("utf-8", "replace"),
            }
        entry: dict[str, Any] = {"startedDateTime": started, "request": request, "response": response}
        if not firefox:
            entry.update(
                _initiator={"type": "other"},
                _priority="VeryHigh",
                _resourceType="fetch" if method == "POST" else "document",
                serverIPAddress="127.0.0.1",
                connection="443",
                cache={},
                timings={"blocked": 1, "send": 0, "wait": 2, "receive": 1},
                time=4,
            )
        self.entries.append(entry)
        return resp.status


class _Collect:
    """Where an ``aiohttp.MultipartWriter`` writes the body it sends."""

    def __init__(self) -> None:
        self.data = b""

    async def write(self, chunk: bytes) -> None:
        self.data += chunk


async def test_what_rules_try_says_is_what_the_gateway_records(
    tmp_path: Path, start_gateway: Any, upstream_server: Any
) -> None:
    """The README's rules for WordPress's logged-in cookie, Django's rotated ``sessionid``, a
    Next.js action that returns, WooCommerce's checkout and thank-you page, run by a real
    gateway in front of sites answering as those stacks do, the requests recorded as Chrome and
    Firefox write them: ``rules try`` on the recording fires exactly where the gateway bound a
    user or recorded a conversion, with the same user IDs and orders."""
    from tests.gateway.test_rules_stacks import SOURCE_RULES, WOO_SECRET, Stacks, multipart, rows

    gw = await start_gateway(
        await upstream_server(Stacks().app), SOURCE_RULES, env={"WOO_SECRET": WOO_SECRET}
    )
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        browser = Browser(session, gw.url)
        page = {"Accept": "text/html"}
        await browser.send("GET", "/?utm_source=news", **page)
        for n, (log, pwd) in enumerate(
            (("ada", "wrong"), ("ada@example.com", "right"), ("Carol Smith", "right"))
        ):
            form = {"log": log, "pwd": pwd, "wp-submit": "Log In"}
            await browser.send("POST", "/wp-login.php", form, firefox=n == 1)
        # Brave sends Sec-GPC: 1: the gateway keeps no visitor for it, and binds no one.
        gpc = {"log": "bob@example.com", "pwd": "right", "wp-submit": "Log In"}
        await browser.send("POST", "/wp-login.php", gpc, **{"Sec-GPC": "1"})
        for who, password in (("victim@example.com", "wrong"), ("Ada@Example.com", "right")):
            form = {"csrfmiddlewaretoken": "t", "login": who, "password": password}
            await browser.send("POST", "/accounts/login/", form, firefox=password == "wrong")
        await browser.send("POST", "/accounts/logout/", {"csrfmiddlewaretoken": "t"})
        action = {"Next-Action": "7f3a9c", "Accept": "text/x-component", "Accept-Encoding": "gzip, br"}
        for who, password in (("victim@example.com", "wrong"), ("Ada@Example.com", "right")):
            fields = {"1_email": who, "1_password": password, "0": '[{},"$K1"]'}
            await browser.send("POST", "/account", multipart(fields), firefox=password == "right", **action)
        checkout = {"billing_email": "a@example.com", "payment_method": "stripe"}
        await browser.send("POST", "/?wc-ajax=checkout", checkout)
        await browser.send("POST", "/?wc-ajax=checkout", {**checkout, "payment_method": "ppec_paypal"})
        for order in ("728", "728", "729", "727"):
            await browser.send("GET", f"/checkout/order-received/{order}/?key=wc_order_{order}", **page)
    path = await asyncio.to_thread(har, tmp_path, browser.entries)
    cfg = await asyncio.to_thread(config, tmp_path, SOURCE_RULES.partition("[[sources]]")[0])
    code, out, err = await asyncio.to_thread(
        gateway, "rules", "try", str(path), "-c", str(cfg), "--format", "json"
    )
    assert (code, err) == (0, ""), out
    said = json.loads(out)["entries"]
    keys = gw.gateway.keys
    fired_users = [
        (rule["rule"], keys.user_key(fire["user_id"]))
        for entry in said
        for rule in entry["rules"]
        if rule["kind"] == "identity"
        for fire in rule["fired"]
        if "duplicate_of" not in fire  # the visitor bound to that user already
    ]
    bound = await rows(gw, "SELECT rule, user_key FROM identities ORDER BY id")
    assert fired_users == [tuple(b) for b in bound]
    assert {rule for rule, _ in fired_users} == {"wp-login-cookie", "django-session"}
    again = [e for e in said if e["path"] == "/account" and e["rules"][0]["fired"]]
    assert again[0]["rules"][0]["fired"][0]["duplicate_of"] < again[0]["entry"]
    gpc_said = [e["rules"][0]["reason"] for e in said if e["path"] == "/wp-login.php" and e["status"] == 302]
    assert gpc_said[2].startswith("the browser sent Sec-GPC: 1 (Global Privacy Control")
    # Where a when found nothing, where it looked: a failed sign-in and a sign-out set no session.
    django = [e["rules"][0]["reason"] for e in said if e["path"].startswith("/accounts/")]
    assert (
        django[0]
        == django[2]
        == (
            'when[0] (set_cookie "sessionid") did not hold: no value (missing): the answer sets no cookie'
            ' "sessionid" (or deletes it)'
        )
    )
    # Where a capture found nothing, what it searched: the order went to PayPal, not paid yet.
    paypal = [e["rules"][0]["reason"] for e in said if e["path"] == "/" and not e["rules"][0]["fired"]]
    assert paypal == [
        'when[2] (response_json "/redirect" capture "/checkout/order-received/(\\\\d+)/") did not hold:'
        ' the capture found nothing in "https://www.paypal.com/checkoutnow?token=EC-1"'
    ]
    recorded = [
        (rule["rule"], fire["order_id"], fire["value"])
        for entry in said
        for rule in entry["rules"]
        if rule["kind"] == "conversion"
        for fire in rule["fired"]
        if "duplicate_of" not in fire
    ]
    stored = await rows(gw, "SELECT name, order_id, value FROM conversions ORDER BY id")
    assert recorded == [tuple(r) for r in stored] and len(stored) == 2


def test_websocket_and_data_entries_are_skipped_not_unreadable(tmp_path: Path) -> None:
    """Chrome records a page's WebSocket (``wss://``, ``_resourceType: websocket``, its
    messages), its ``data:`` images and an extension's files along with the requests: none is a
    request any rule runs on (the gateway relays a WebSocket without them), so none makes the
    command fail. A URL Python cannot even split is one entry's error, not a traceback."""
    socket = by_hand("GET", "/_next/webpack-hmr", 101)
    socket["request"]["url"] = "wss://shop.example/_next/webpack-hmr"
    socket.update(_resourceType="websocket", _webSocketMessages=[{"type": "receive", "data": "{}"}])
    image = by_hand("GET", "/", 200)
    image["request"]["url"] = "data:image/png;base64,iVBORw0KGgo="
    broken = by_hand("GET", "/", 200)
    broken["request"]["url"] = "http://[::1/login"
    entries = [socket, image, by_hand("POST", "/newsletter", 200)]
    code, out, err = gateway("rules", "try", str(har(tmp_path, entries)), "-c", str(config(tmp_path)))
    assert (code, err) == (0, "")
    assert out.splitlines()[2].startswith("3 entries read (2 not HTTP, skipped), 1 matched a rule;")
    code, out, err = gateway("rules", "try", str(har(tmp_path, [broken])), "-c", str(config(tmp_path)))
    assert (code, err) == (1, "")
    assert (
        out.splitlines()[0]
        == "entry 1 (GET): request.url is not an http(s) URL: 'http://[::1/login' (not tried)"
    )


def test_cookies_sent_in_several_http2_fields_are_read_as_one_header(tmp_path: Path) -> None:
    """Over HTTP/2 a browser may split its cookies into several ``cookie`` fields, and the HAR
    lists each; the gateway, behind the proxy that ends HTTP/2, gets them joined with ``; ``
    (RFC 9113 §8.2.3): a rule reads a cookie from any of them."""
    rules = """
[[identity.rules]]
name = "wp-cookie"
method = "GET"
path = "/wp-admin/"
status = [200]
user_id = { cookie = "wordpress_logged_in_*", capture = "^(.+?)%7C" }
"""
    page = by_hand("GET", "/wp-admin/", 200)
    page["request"]["headers"] = [
        {"name": ":authority", "value": "shop.example"},
        {"name": "cookie", "value": "gw_vid=v1"},
        {"name": "cookie", "value": "wordpress_logged_in_5d41=ada%7C1767000000%7Ct%7Ch"},
    ]
    path = har(tmp_path, [page])
    code, out, _ = gateway("rules", "try", str(path), "-c", str(config(tmp_path, rules)))
    assert code == 0
    assert out.splitlines()[1] == "  identity wp-cookie: fired, user ID ada"


def test_a_recorded_answer_s_cookies_are_read_as_the_browser_kept_them(tmp_path: Path) -> None:
    """As the gateway reads them: the Set-Cookie lines of a name applied in order, one cookie
    per Domain and Path, whether the HAR lists them as headers or (an export without them) as
    cookie objects, whose path and domain say the scope."""
    rules = """
[[identity.rules]]
name = "rotated"
path = "/login"
status = [302]
when = [{ set_cookie = "sid" }]
user_id = { cookie = "uid", capture = "^u-(.+)$" }
"""
    lines = {
        "ada": ["uid=u-old; Path=/", "sid=s1; Path=/", "uid=u-ada; Path=/"],
        "bob": ["sid=s2; Path=/", "sid=s2; Path=/; Max-Age=0", "uid=u-bob; Path=/"],
    }
    objects = {
        "eve": [  # two scopes: both kept, and the one set first is sent first
            {"name": "uid", "value": "u-eve", "path": "/", "domain": "shop.example"},
            {"name": "sid", "value": "s3", "path": "/"},
            {"name": "uid", "value": "u-old", "path": "/"},
        ],
        "ann": [  # set, then deleted (a past expiry) in the same scope
            {"name": "sid", "value": "s4", "path": "/"},
            {"name": "sid", "value": "s4", "path": "/", "expires": "1970-01-01T00:00:00.000Z"},
            {"name": "uid", "value": "u-ann", "path": "/"},
        ],
    }
    entries = []
    for set_lines in lines.values():
        entry = by_hand("POST", "/login", 302)
        entry["response"]["headers"] += [{"name": "Set-Cookie", "value": line} for line in set_lines]
        entries.append(entry)
    for cookies in objects.values():
        entry = by_hand("POST", "/login", 302)
        entry["response"]["cookies"] = cookies
        entries.append(entry)
    path = har(tmp_path, entries)
    code, out, _ = gateway("rules", "try", str(path), "-c", str(config(tmp_path, rules)))
    assert code == 0
    said = [line for line in out.splitlines() if line.startswith("  identity")]
    assert len(said) == 4, out
    assert said[0] == "  identity rotated: fired, user ID ada"
    assert said[1].startswith("  identity rotated: not fired: when[0]")
    assert said[2] == "  identity rotated: fired, user ID eve"
    assert said[3].startswith("  identity rotated: not fired: when[0]")


def test_an_entry_is_shown_with_its_query(tmp_path: Path) -> None:
    """Two requests to one path told apart by the query (an OAuth callback's ``?code=`` and its
    ``?error=``, WordPress's ``?action=register``) that a rule's ``when`` tests: the entry's line
    shows it (a long one cut), and the JSON holds it."""
    signed = by_hand("POST", "/login?next=/account", 302)
    long = by_hand("POST", "/login?utm_source=" + "x" * 100, 302)
    path = har(tmp_path, [signed, long])
    _, out, _ = gateway("rules", "try", str(path), "-c", str(config(tmp_path)))
    assert out.splitlines()[0] == "entry 1  POST /login?next=/account  302"
    assert out.splitlines()[2] == "entry 2  POST /login?utm_source=" + "x" * 47 + "…  302"
    _, out, _ = gateway("rules", "try", str(path), "-c", str(config(tmp_path)), "--format", "json")
    assert json.loads(out)["entries"][0]["query"] == "next=/account"


def test_a_body_cut_or_left_out_of_the_har_is_said_by_its_recorded_size(tmp_path: Path) -> None:
    """Firefox saves the first megabyte of an answer (``devtools.netmonitor.responseBodyLimit``)
    and ``content.size`` says the whole; other tools leave a large body out. A rule that reads
    more than a megabyte (``max_body``) is said to have a cut body, not a body that is no JSON;
    one left out but over ``max_body`` by its size would not be read live either, and is said so."""
    rules = RULES.replace('path = "/api/session"', 'path = "/api/session"\nmax_body = 2000000')
    whole = json.dumps({"ok": True, "user": {"id": 42}, "pad": "x" * 1_500_000})
    cut = {"mimeType": "application/json", "text": whole[:1_048_576], "size": len(whole)}
    left_out = {"mimeType": "application/json", "size": 3_000_000, "comment": "Body discarded"}
    entries = [by_hand("POST", "/api/session", 200, cut), by_hand("POST", "/api/session", 200, left_out)]
    _, out, _ = gateway("rules", "try", str(har(tmp_path, entries)), "-c", str(config(tmp_path, rules)))
    assert out.splitlines()[1] == (
        "  identity api-login: not fired: when_body_not_read: the HAR holds 1,048,576 bytes of the"
        f" {len(whole):,}-byte response body: Firefox saves 1 MB of each (raise"
        " devtools.netmonitor.responseBodyLimit in about:config, or record in Chrome)"
    )
    assert out.splitlines()[3] == (
        "  identity api-login: not fired: when_body_not_read: the response body is 3,000,000 bytes,"
        " over max_body (2,000,000)"
    )


def test_a_har_written_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    """Some Windows tools (Fiddler) write the HAR's UTF-8 with a byte order mark first."""
    path = har(tmp_path, [by_hand("POST", "/newsletter", 200)])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    code, out, _ = gateway("rules", "try", str(path), "-c", str(config(tmp_path)))
    assert code == 0 and "  conversion newsletter: fired, value 1.0\n" in out


def test_a_when_that_did_not_hold_on_a_session_cookie_or_a_key_does_not_print_it(tmp_path: Path) -> None:
    """What is printed of a ``when`` that did not hold is the operator's to paste into a ticket:
    a session cookie's whole value, or a request header that carries a credential (an API key),
    is not printed, as for a capture that found nothing there; a value of another source is."""
    rules = """
[[identity.rules]]
name = "session"
path = "/api/session"
status = [200]
when = [{ cookie = "sessionid", matches = "abc.*" }]
user_id = { response_json = "/user/id" }

[[identity.rules]]
name = "api-key"
path = "/api/session"
status = [200]
when = [{ request_header = "X-Api-Key", equals = "public" }]
user_id = { response_json = "/user/id" }

[[identity.rules]]
name = "key-captured"
path = "/api/session"
status = [200]
when = [{ request_header = "X-Api-Key", capture = "^pk_(live)_" }]
user_id = { response_json = "/user/id" }

[[identity.rules]]
name = "ok"
path = "/api/session"
status = [200]
when = [{ response_json = "/ok", equals = "true" }]
user_id = { response_json = "/user/id" }
"""
    entry = by_hand("POST", "/api/session", 200, {"size": 31, "text": '{"ok": false, "user": {"id": 7}}'})
    entry["request"]["headers"] = [
        {"name": "Cookie", "value": "sessionid=s3ss10n-S3CR3T; theme=dark"},
        {"name": "X-Api-Key", "value": "sk_live_K3Y"},
    ]
    path = har(tmp_path, [entry])
    for options in ((), ("--format", "json")):
        code, out, _ = gateway("rules", "try", str(path), "-c", str(config(tmp_path, rules)), *options)
        assert code == 0
        assert "S3CR3T" not in out and "sk_live_K3Y" not in out
        assert "its value is not printed" in out
        assert 'did not hold: its value is \\"false\\"' in out if options else ' its value is "false"' in out
    _, out, _ = gateway("rules", "try", str(path), "-c", str(config(tmp_path, rules)))
    assert out.splitlines()[1:4] == [
        '  identity session: not fired: when[0] (cookie "sessionid" matches "abc.*") did not hold:'
        " its value is not printed (a cookie's whole value may be a session credential)",
        '  identity api-key: not fired: when[0] (request_header "X-Api-Key" equals "public") did not'
        " hold: its value is not printed (the header may carry a credential)",
        '  identity key-captured: not fired: when[0] (request_header "X-Api-Key" capture "^pk_(live)_")'
        " did not hold: the capture found nothing",
    ]


def test_a_when_on_a_value_with_no_text_says_it_is_never_compared(tmp_path: Path) -> None:
    """``equals`` and ``matches`` compare a string, a whole number or a boolean; a JSON fraction,
    object or list is never compared. ``rules try`` said only ``its value is 49.9`` under a
    ``matches = "[0-9.]+"``, which reads as a match, leaving the operator to guess why."""
    rules = """
[[conversions]]
name = "total"
path = "/api/orders"
status = [201]
when = [{ response_json = "/order/total", matches = "[0-9.]+" }]
value = 1.0

[[conversions]]
name = "items"
path = "/api/orders"
status = [201]
when = [{ response_json = "/order/items", equals = "[]" }]
value = 1.0

[[conversions]]
name = "status"
path = "/api/orders"
status = [201]
when = [{ response_json = "/order/status", equals = "paid" }]
value = 1.0
"""
    body = '{"order": {"total": 49.9, "items": [], "status": "open"}}'
    path = har(tmp_path, [by_hand("POST", "/api/orders", 201, {"size": len(body), "text": body})])
    code, out, _ = gateway("rules", "try", str(path), "-c", str(config(tmp_path, rules)))
    assert code == 0
    assert out.splitlines()[1:4] == [
        '  conversion total: not fired: when[0] (response_json "/order/total" matches "[0-9.]+") did not'
        " hold: its value is 49.9, a JSON fraction: equals and matches compare only a string, a whole"
        " number or true/false",
        '  conversion items: not fired: when[0] (response_json "/order/items" equals "[]") did not hold:'
        " its value is [], a JSON list: equals and matches compare only a string, a whole number or"
        " true/false",
        '  conversion status: not fired: when[0] (response_json "/order/status" equals "paid") did not'
        ' hold: its value is "open"',
    ]
