"""Identity and conversion rules through a real gateway in front of a real aiohttp site.

The site has a Django-style login form (302 on success, 200 on failure), a JSON login API
(200, optionally gzip-encoded), a login that sets a JWT cookie, a checkout answering
``303 /thank-you?order=…&total=…`` and an upload endpoint. The tests check what reaches the
store, and that what reaches the site — and the visitor — is byte for byte unchanged.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import json
import sqlite3
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import aiosqlite
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from multidict import CIMultiDict

from gateway.codings import decoded_body
from tests.conftest import GatewayFactory, RunningGateway

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
PASSWORD = "hunter2-Unguessable"
MB = 1024 * 1024

JWT_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def rs256(claims: dict[str, Any]) -> str:
    data = b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode())
    return data + "." + b64(JWT_KEY.sign(data.encode(), padding.PKCS1v15(), hashes.SHA256()))


class Site:
    """The site behind the gateway; it records every body it receives and every body it sends."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.sent: list[bytes] = []
        self.offered: list[str | None] = []
        """The Accept-Encoding of every request, as the site got it."""
        self.upload_started = asyncio.Event()
        self.uploads = 0
        self.app = web.Application(client_max_size=64 * MB)
        r = self.app.router
        r.add_post("/accounts/login/", self.django_login)
        r.add_post("/api/login", self.api_login)
        r.add_post("/session", self.jwt_login)
        r.add_post("/checkout", self.checkout)
        r.add_post("/upload", self.upload)
        r.add_get("/{tail:.*}", self.page)

    async def page(self, request: web.Request) -> web.Response:
        self.offered.append(request.headers.get("Accept-Encoding"))
        return web.Response(text="<html>page</html>", content_type="text/html")

    async def django_login(self, request: web.Request) -> web.Response:
        body = await request.read()
        while body[:2] == b"\x1f\x8b":  # aiohttp's server undoes one Content-Encoding line only
            body = gzip.decompress(body)
        self.received.append((request.path, body))
        fields = dict(parse_qsl(body.decode()))
        if fields.get("password") == PASSWORD:
            return web.Response(status=302, headers={"Location": "/accounts/profile/"})
        return web.Response(text="<form>wrong password</form>", content_type="text/html")

    async def api_login(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append((request.path, body))
        data = json.loads(body)
        if data.get("password") != PASSWORD:
            return web.json_response({"error": "bad credentials"}, status=401)
        user = {"id": 42, "email": data["email"], "bio": "x" * int(request.query.get("pad", 0))}
        payload = json.dumps({"user": user, "access_token": "tk"}).encode()
        headers = {"Content-Type": "application/json"}
        offered = request.headers.get("Accept-Encoding")
        self.offered.append(offered)
        if request.query.get("prefer"):  # like a CDN: the first of zstd, br, gzip offered
            codings = [item.split(";")[0].strip() for item in (offered or "").split(",")]
            coding = next((c for c in ("zstd", "br", "gzip") if c in codings), None)
            if coding == "gzip":
                payload = gzip.compress(payload)
            elif coding is not None:  # not really compressed: the gateway could not read it anyway
                payload = b"\x28\xb5\x2f\xfd" + payload if coding == "zstd" else b"\x8b" + payload
            if coding is not None:
                headers["Content-Encoding"] = coding
        elif request.query.get("gz"):
            payload = gzip.compress(payload)
            headers["Content-Encoding"] = "gzip"
        resp = web.Response(body=payload, headers=headers)
        if lines := request.query.getall("line", []):  # each coding on a Content-Encoding line of its own
            for coding in lines:
                payload = gzip.compress(payload) if coding == "gzip" else b"\x8b" + payload  # br: pretend
                resp.headers.add("Content-Encoding", coding)
            resp.body = payload
        self.sent.append(payload)
        return resp

    async def jwt_login(self, request: web.Request) -> web.Response:
        self.received.append((request.path, await request.read()))
        resp = web.Response(status=303, headers={"Location": "/app"})
        resp.headers.add("Set-Cookie", "theme=dark; Path=/")
        resp.headers.add("Set-Cookie", f"session={rs256({'sub': 'jwt-user-9'})}; Path=/; HttpOnly")
        return resp

    async def checkout(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append((request.path, body))
        fields = dict(parse_qsl(body.decode()))
        location = f"/thank-you?order={fields['order']}&total={fields['total']}"
        return web.Response(status=303, headers={"Location": location})

    async def upload(self, request: web.Request) -> web.Response:
        self.uploads += 1
        digest, size = hashlib.sha256(), 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
            if size >= MB:
                self.upload_started.set()
        return web.json_response({"sha256": digest.hexdigest(), "size": size})


RULES = """
[[identity.rules]]
name = "django-login"
path = "/accounts/login/"
status = [302]
user_id = {{ form = "username" }}

[[identity.rules]]
name = "api-login"
path = "/api/login"
status = [200]
user_id = {{ response_json = "/user/id" }}

[[identity.rules]]
name = "jwt"
path = "/session"
status = [303]
user_id = {{ jwt_cookie = "session", algorithm = "RS256", key = "{pem}" }}

[[identity.rules]]
name = "upload-owner"
path = "/upload"
status = [200]
user_id = {{ form = "owner" }}

[[conversions]]
name = "purchase"
path = "/checkout"
status = [303]
value = {{ location_query = "total" }}
currency = "EUR"
order_id = {{ location_query = "order" }}
"""


@pytest.fixture
async def setup(
    start_gateway: GatewayFactory, upstream_server: Any, tmp_path: Path
) -> AsyncIterator[tuple[RunningGateway, Site]]:
    pem = tmp_path / "site-jwt.pem"
    public = JWT_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    await asyncio.to_thread(pem.write_bytes, public)
    site = Site()
    gw = await start_gateway(await upstream_server(site.app), RULES.format(pem=pem))
    yield gw, site


async def rows(gw: RunningGateway, sql: str) -> list[Any]:
    async with aiosqlite.connect(gw.gateway.settings.store_path) as db:
        return list(await db.execute_fetchall(sql))


async def visit(gw: RunningGateway, target: str = "/?utm_source=news&utm_medium=email") -> dict[str, str]:
    """Land on the site; the visitor's cookie for the next requests."""
    async with gw.session.get(gw.url + target, headers={"Accept": "text/html"}) as resp:
        assert resp.status == 200
        cookie = resp.cookies["gw_vid"].value
    return {"Cookie": f"gw_vid={cookie}"}


async def test_django_form_login_binds_the_visitor(setup: tuple[RunningGateway, Site]) -> None:
    gw, site = setup
    cookie = await visit(gw)
    wrong = b"csrfmiddlewaretoken=abc&username=ada&password=nope"
    async with gw.session.post(
        gw.url + "/accounts/login/", data=wrong, headers={**FORM, **cookie}, allow_redirects=False
    ) as resp:
        assert resp.status == 200  # the form again: a failed login binds nothing
    assert await rows(gw, "SELECT * FROM identities") == []

    body = f"csrfmiddlewaretoken=abc&username=ada&password={PASSWORD}&next=%2F".encode()
    async with gw.session.post(
        gw.url + "/accounts/login/", data=body, headers={**FORM, **cookie}, allow_redirects=False
    ) as resp:
        assert resp.status == 302 and resp.headers["Location"] == "/accounts/profile/"
    assert site.received == [("/accounts/login/", wrong), ("/accounts/login/", body)]  # unchanged

    keys = gw.gateway.keys
    (touch_visitor,) = [r[0] for r in await rows(gw, "SELECT visitor_key FROM touchpoints")]
    bound = await rows(gw, "SELECT visitor_key, user_key, rule, origin, node FROM identities")
    assert bound == [(touch_visitor, keys.user_key("ada"), "django-login", "rule", "test")]


async def test_a_gzip_encoded_form_is_read_decoded_and_forwarded_as_sent(
    setup: tuple[RunningGateway, Site],
) -> None:
    """A form POSTed with ``Content-Encoding: gzip``: the rules read what the site decodes (the
    login binds, the checkout records its order and value), the site gets the bytes as sent.
    The rules read the compressed bytes before: the binding, the value and the order were lost."""
    gw, site = setup
    cookie = await visit(gw)
    gz = {**FORM, **cookie, "Content-Encoding": "gzip"}
    login = gzip.compress(f"username=gzipped&password={PASSWORD}".encode())
    async with gw.session.post(
        gw.url + "/accounts/login/", data=login, headers=gz, allow_redirects=False
    ) as resp:
        assert resp.status == 302
    checkout = gzip.compress(b"order=G-1&total=12.50")
    async with gw.session.post(
        gw.url + "/checkout", data=checkout, headers=gz, allow_redirects=False
    ) as resp:
        assert resp.status == 303
    assert await rows(gw, "SELECT user_key FROM identities") == [(gw.gateway.keys.user_key("gzipped"),)]
    assert await rows(gw, "SELECT dedup_key, value FROM conversions") == [("order:G-1", 12.5)]
    # aiohttp behind decodes what it was sent: the gzip bytes went through intact.
    assert site.received == [
        ("/accounts/login/", f"username=gzipped&password={PASSWORD}".encode()),
        ("/checkout", b"order=G-1&total=12.50"),
    ]
    # Undecodable (not gzip at all): the rule reads nothing, the site still gets the request.
    async with gw.session.post(
        gw.url + "/checkout", data=b"order=X", headers=gz, allow_redirects=False
    ) as resp:
        assert resp.status in (400, 500)  # the site's own answer to a body it cannot decode
    assert len(await rows(gw, "SELECT * FROM conversions")) == 1


async def test_a_body_whose_content_encoding_is_on_two_lines_is_read_with_both(
    setup: tuple[RunningGateway, Site],
) -> None:
    """``Content-Encoding: gzip`` on two header lines is one list (RFC 9110), gzip applied twice.
    Until 2026-12-05 the rules undid the first line only and read still-compressed bytes: the
    answer's user and the form's username were lost. A coding on either line that the gateway
    does not undo leaves the body unread (counted), as one line always did."""
    gw, site = setup
    cookie = await visit(gw, "/")
    login = json.dumps({"email": "bo@example.com", "password": PASSWORD}).encode()
    async with gw.session.post(
        gw.url + "/api/login?line=gzip&line=gzip",
        data=login,
        headers={"Content-Type": "application/json", **cookie},
        auto_decompress=False,
    ) as resp:
        assert resp.status == 200 and resp.headers.getall("Content-Encoding") == ["gzip", "gzip"]
        assert await resp.read() == site.sent[-1]  # forwarded as the site sent it
    assert await rows(gw, "SELECT user_key, rule FROM identities") == [
        (gw.gateway.keys.user_key("42"), "api-login")
    ]

    twice = gzip.compress(gzip.compress(f"username=twice&password={PASSWORD}".encode()))
    headers = CIMultiDict({**FORM, **cookie})
    headers.add("Content-Encoding", "gzip")
    headers.add("Content-Encoding", "gzip")
    async with gw.session.post(
        gw.url + "/accounts/login/", data=twice, headers=headers, allow_redirects=False
    ) as resp:
        assert resp.status == 302
    assert site.received[-1] == ("/accounts/login/", f"username=twice&password={PASSWORD}".encode())
    assert (gw.gateway.keys.user_key("twice"),) in await rows(gw, "SELECT user_key FROM identities")

    async with gw.session.post(
        gw.url + "/api/login?line=gzip&line=br",
        data=login,
        headers={"Content-Type": "application/json", **cookie},
        auto_decompress=False,
    ) as resp:
        assert resp.status == 200 and await resp.read() == site.sent[-1]
    text = await (await gw.session.get(gw.admin_url + "/metrics", headers=_auth())).text()
    assert 'gateway_extraction_failures_total{reason="body_not_read",rule="api-login"} 1.0' in text


async def test_a_sign_in_the_store_could_not_write_binds_at_the_next_sign_in(
    setup: tuple[RunningGateway, Site],
) -> None:
    """The site is served while the store refuses writes (a full disk, a read-only mount: fail
    open), so the binding of that sign-in is not on disk. The visitor's next sign-in, once the
    store writes again, binds them: until 2026-12-06 the process remembered the pair as bound
    and never asked the store again, and the visitor's touchpoints never joined the user."""
    gw, _ = setup
    cookie = await visit(gw)
    body = f"username=ada&password={PASSWORD}".encode()

    async def sign_in() -> None:
        async with gw.session.post(
            gw.url + "/accounts/login/", data=body, headers={**FORM, **cookie}, allow_redirects=False
        ) as resp:
            assert resp.status == 302

    await gw.gateway.store.on_writer("PRAGMA query_only = ON")  # the store refuses every write
    await sign_in()
    assert await rows(gw, "SELECT * FROM identities") == []
    await gw.gateway.store.on_writer("PRAGMA query_only = OFF")  # it writes again
    await sign_in()
    await sign_in()
    bound = await rows(gw, "SELECT user_key, rule FROM identities")
    assert bound == [(gw.gateway.keys.user_key("ada"), "django-login")]
    text = await (await gw.session.get(gw.admin_url + "/metrics", headers=_auth())).text()
    assert 'gateway_bindings_total{rule="django-login"} 1.0' in text


async def _metric(gw: RunningGateway, line: str) -> str:
    """The value of the /metrics line that starts with ``line`` ("" when there is none)."""
    text = await (await gw.session.get(gw.admin_url + "/metrics", headers=_auth())).text()
    return next((found.rsplit(" ", 1)[1] for found in text.splitlines() if found.startswith(line)), "")


async def test_a_sign_in_whose_commit_timed_out_then_failed_binds_at_the_next_sign_in(
    start_gateway: GatewayFactory, upstream_server: Any, tmp_path: Path
) -> None:
    """As above, but the store first holds the commit past ``storage.max_wait_ms`` (another
    connection's write lock: the page is served on the timeout, the binding still queued) and
    then refuses it. The timeout settled the commit's wait, so its failure after told no one:
    the pair stayed remembered as bound, and the visitor's later sign-ins bound nothing while
    the process ran. The pipeline is now told of the failure that follows a timeout too."""
    store = tmp_path / "gateway.db"
    pem = tmp_path / "site-jwt.pem"
    public = JWT_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    await asyncio.to_thread(pem.write_bytes, public)
    toml = RULES.format(pem=pem) + f'\n[storage]\npath = "{store}"\nnode = "test"\nmax_wait_ms = 300.0\n'
    gw = await start_gateway(await upstream_server(Site().app), toml)
    cookie = await visit(gw)
    body = f"username=ada&password={PASSWORD}".encode()

    async def sign_in() -> None:
        async with gw.session.post(
            gw.url + "/accounts/login/", data=body, headers={**FORM, **cookie}, allow_redirects=False
        ) as resp:
            assert resp.status == 302

    shell = sqlite3.connect(store, isolation_level=None, check_same_thread=False)
    try:
        await asyncio.to_thread(shell.execute, "BEGIN IMMEDIATE")  # a sqlite3 shell's long write
        await sign_in()  # answered once max_wait_ms is over: its binding waits in the queue
        assert await _metric(gw, 'gateway_events_unconfirmed_total{reason="timeout"}') == "1.0"
        refuse = (
            "CREATE TRIGGER refuse BEFORE INSERT ON identities BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
        await asyncio.to_thread(shell.execute, refuse)
        await asyncio.to_thread(shell.execute, "COMMIT")  # the queued binding is tried, and refused
        async with asyncio.timeout(30):
            while await _metric(gw, "gateway_store_queue ") != "0.0":
                await asyncio.sleep(0.05)
        assert await rows(gw, "SELECT * FROM identities") == []
        await asyncio.to_thread(shell.execute, "DROP TRIGGER refuse")  # the store writes again
    finally:
        await asyncio.to_thread(shell.close)
    await sign_in()
    await sign_in()
    bound = await rows(gw, "SELECT user_key, rule FROM identities")
    assert bound == [(gw.gateway.keys.user_key("ada"), "django-login")]


async def test_json_api_login_plain_and_gzip(setup: tuple[RunningGateway, Site]) -> None:
    gw, site = setup
    for target in ("/api/login", "/api/login?gz=1"):
        cookie = await visit(gw, "/")
        body = json.dumps({"email": "bo@example.com", "password": PASSWORD}).encode()
        async with gw.session.post(
            gw.url + target, data=body, headers={"Content-Type": "application/json", **cookie}
        ) as resp:
            assert resp.status == 200
            received = await resp.read()
            assert resp.headers.get("Content-Encoding") == ("gzip" if "gz" in target else None)
        assert received == site.sent[-1]  # the visitor gets the site's bytes, still compressed
        assert site.received[-1] == ("/api/login", body)
    bound = await rows(gw, "SELECT user_key, rule FROM identities")
    assert bound == [(gw.gateway.keys.user_key("42"), "api-login")] * 2


async def test_a_site_that_prefers_brotli_is_offered_only_what_a_rule_can_read(
    setup: tuple[RunningGateway, Site],
) -> None:
    """Browsers offer br and zstd; a site (or its CDN) that prefers them would answer a JSON
    login no rule can decode. On a path a rule reads the answer of, the site is offered only
    gzip and deflate, so the login binds; the visitor gets gzip, which they asked for too.
    Elsewhere the site gets the visitor's header as it came."""
    gw, site = setup
    browser = "gzip, deflate, br, zstd"
    cookie = await visit(gw, "/")
    body = json.dumps({"email": "bo@example.com", "password": PASSWORD}).encode()
    async with gw.session.post(
        gw.url + "/api/login?prefer=1",
        data=body,
        headers={"Content-Type": "application/json", "Accept-Encoding": browser, **cookie},
        auto_decompress=False,
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Encoding"] == "gzip"
        assert await resp.read() == site.sent[-1]
    assert site.offered[-1] == "gzip, deflate"
    bound = await rows(gw, "SELECT user_key, rule FROM identities")
    assert bound == [(gw.gateway.keys.user_key("42"), "api-login")]

    async with gw.session.get(gw.url + "/account", headers={"Accept-Encoding": browser}) as resp:
        assert resp.status == 200
    assert site.offered[-1] == browser  # no rule reads this answer: the header is untouched

    # No Accept-Encoding at all accepts any coding: the site is asked for none.
    async with gw.session.post(
        gw.url + "/api/login?prefer=1",
        data=body,
        headers={"Content-Type": "application/json"},
        skip_auto_headers=["Accept-Encoding"],
    ) as resp:
        assert resp.status == 200 and "Content-Encoding" not in resp.headers
    assert site.offered[-1] == "identity"

    # Only brotli, identity refused: nothing readable is acceptable, so the header goes as it
    # came and the rule reads nothing (counted), rather than the visitor get a coding they refused.
    only_br = "br, identity;q=0"
    async with gw.session.post(
        gw.url + "/api/login?prefer=1",
        data=body,
        headers={"Content-Type": "application/json", "Accept-Encoding": only_br},
        auto_decompress=False,
    ) as resp:
        assert resp.status == 200 and resp.headers["Content-Encoding"] == "br"
    assert site.offered[-1] == only_br
    text = await (await gw.session.get(gw.admin_url + "/metrics", headers=_auth())).text()
    assert 'gateway_extraction_failures_total{reason="body_not_read",rule="api-login"} 1.0' in text


async def test_json_api_response_over_the_cap_is_forwarded_but_not_read(
    setup: tuple[RunningGateway, Site],
) -> None:
    gw, site = setup
    body = json.dumps({"email": "bo@example.com", "password": PASSWORD}).encode()
    for target in ("/api/login?pad=200000", "/api/login?pad=2000000&gz=1"):  # gzip: ~2 MB decoded
        async with gw.session.post(gw.url + target, data=body) as resp:
            assert resp.status == 200
            assert await resp.read() == site.sent[-1]
    assert await rows(gw, "SELECT * FROM identities") == []
    text = await (await gw.session.get(gw.admin_url + "/metrics", headers=_auth())).text()
    assert 'gateway_extraction_failures_total{reason="body_not_read",rule="api-login"} 2.0' in text


async def test_json_api_failed_login_binds_nothing(setup: tuple[RunningGateway, Site]) -> None:
    gw, _ = setup
    body = json.dumps({"email": "bo@example.com", "password": "wrong"}).encode()
    async with gw.session.post(gw.url + "/api/login", data=body) as resp:
        assert resp.status == 401
    assert await rows(gw, "SELECT * FROM identities") == []


async def test_jwt_cookie_login(setup: tuple[RunningGateway, Site]) -> None:
    gw, _ = setup
    cookie = await visit(gw, "/")
    async with gw.session.post(gw.url + "/session", headers=cookie, allow_redirects=False) as resp:
        assert resp.status == 303
        set_cookies = resp.headers.getall("Set-Cookie")
    assert any(c.startswith("session=") for c in set_cookies) and any(
        c.startswith("theme=") for c in set_cookies
    )
    bound = await rows(gw, "SELECT user_key, rule FROM identities")
    assert bound == [(gw.gateway.keys.user_key("jwt-user-9"), "jwt")]


async def test_checkout_303_counts_once_when_submitted_twice(setup: tuple[RunningGateway, Site]) -> None:
    gw, site = setup
    cookie = await visit(gw)
    body = b"order=A-1001&total=49.90&card_number=4111111111111111"
    for _ in range(2):
        async with gw.session.post(
            gw.url + "/checkout", data=body, headers={**FORM, **cookie}, allow_redirects=False
        ) as resp:
            assert resp.status == 303
            assert resp.headers["Location"] == "/thank-you?order=A-1001&total=49.90"
    assert site.received == [("/checkout", body)] * 2
    (touch_visitor,) = [r[0] for r in await rows(gw, "SELECT visitor_key FROM touchpoints")]
    found = await rows(
        gw,
        "SELECT name, dedup_key, visitor_key, user_key, value, currency, order_id, origin FROM conversions",
    )
    assert found == [("purchase", "order:A-1001", touch_visitor, None, 49.9, "EUR", "A-1001", "rule")]
    # The metric counts what the store recorded; the retried order is a duplicate, counted apart.
    text = await (await gw.session.get(gw.admin_url + "/metrics", headers=_auth())).text()
    assert 'gateway_conversions_total{rule="purchase"} 1.0' in text
    assert 'gateway_conversions_duplicate_total{rule="purchase"} 1.0' in text


async def test_nothing_of_a_password_reaches_the_store(setup: tuple[RunningGateway, Site]) -> None:
    gw, _ = setup
    cookie = await visit(gw)
    body = f"username=ada.lovelace&password={PASSWORD}".encode()
    async with gw.session.post(
        gw.url + "/accounts/login/", data=body, headers={**FORM, **cookie}, allow_redirects=False
    ) as resp:
        assert resp.status == 302
    body = json.dumps({"email": "ada.lovelace@example.com", "password": PASSWORD}).encode()
    async with gw.session.post(gw.url + "/api/login", data=body, headers=cookie) as resp:
        assert resp.status == 200
    assert len(await rows(gw, "SELECT * FROM identities")) == 2
    await gw.gateway.store.close()  # every byte on disk, WAL included

    def everything_on_disk() -> bytes:
        folder = gw.gateway.settings.store_path.parent
        return b"".join(p.read_bytes() for p in folder.iterdir() if p.name.startswith("gateway.db"))

    data = await asyncio.to_thread(everything_on_disk)
    assert b"identities" in data  # the files were read
    assert PASSWORD.encode() not in data and b"lovelace" not in data  # user IDs only as keyed hashes


async def test_large_upload_to_a_matching_path_streams_intact(setup: tuple[RunningGateway, Site]) -> None:
    gw, site = setup
    first, rest = bytes(range(256)) * (MB // 256), b"owner=x&" + b"z" * (3 * MB)
    digest = hashlib.sha256(first + rest).hexdigest()

    async def body() -> AsyncIterator[bytes]:
        yield first
        # The site must see the first megabyte before the rest is even sent: the gateway
        # streams a body larger than the rule's cap instead of buffering it.
        await asyncio.wait_for(site.upload_started.wait(), 30)
        yield rest

    async with gw.session.post(gw.url + "/upload", data=body(), headers=FORM) as resp:
        assert resp.status == 200
        assert await resp.json() == {"sha256": digest, "size": len(first) + len(rest)}
    assert await rows(gw, "SELECT * FROM identities") == []  # too large to read: counted, not bound
    text = await (await gw.session.get(gw.admin_url + "/metrics", headers=_auth())).text()
    assert 'gateway_extraction_failures_total{reason="body_not_read",rule="upload-owner"} 1.0' in text


async def test_chunked_small_body_is_read_and_forwarded(setup: tuple[RunningGateway, Site]) -> None:
    gw, _ = setup

    async def body() -> AsyncIterator[bytes]:  # no Content-Length: read until the end
        yield b"owner=ch"
        yield b"unked-user&x=1"

    async with gw.session.post(gw.url + "/upload", data=body(), headers=FORM) as resp:
        assert await resp.json() == {
            "sha256": hashlib.sha256(b"owner=chunked-user&x=1").hexdigest(),
            "size": 22,
        }
    bound = await rows(gw, "SELECT user_key FROM identities")
    assert bound == [(gw.gateway.keys.user_key("chunked-user"),)]


def _auth() -> dict[str, str]:
    from tests.conftest import TOKEN

    return {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize(
    ("encoding", "encode", "expected"),
    [
        (None, lambda b: b, b'{"a": 1}'),
        ("identity", lambda b: b, b'{"a": 1}'),
        ("gzip", gzip.compress, b'{"a": 1}'),
        ("x-gzip", gzip.compress, b'{"a": 1}'),
        ("deflate", zlib.compress, b'{"a": 1}'),
        ("deflate", lambda b: zlib.compress(b, wbits=-15), b'{"a": 1}'),
        ("br", lambda b: b, None),
        ("gzip", lambda b: gzip.compress(b)[:-6], None),  # cut short
        ("gzip", lambda b: b, None),  # not gzip at all
        ("gzip", lambda b: gzip.compress(b[:3]) + gzip.compress(b[3:]), b'{"a": 1}'),  # 2 members
        ("gzip", lambda b: gzip.compress(b[:3]) + gzip.compress(b[3:])[:-6], None),  # 2nd cut short
    ],
)
def test_decoded_body(encoding: str | None, encode: Any, expected: bytes | None) -> None:
    assert decoded_body(encode(b'{"a": 1}'), encoding, 100) == expected


def test_decoded_body_stops_at_the_cap() -> None:
    bomb = gzip.compress(b"0" * 10 * MB)  # ~10 KB that unpacks into 10 MB
    assert len(bomb) < 65536 and decoded_body(bomb, "gzip", 65536) is None
    assert decoded_body(gzip.compress(b"0" * 100), "gzip", 100) == b"0" * 100
    members = gzip.compress(b"0" * 60) * 2  # each under the cap, together over it
    assert decoded_body(members, "gzip", 100) is None
    assert decoded_body(members, "gzip", 120) == b"0" * 120


async def test_body_over_the_request_limit_while_read_for_a_rule_gets_413(
    start_gateway: GatewayFactory, upstream_server: Any
) -> None:
    site = Site()
    toml = """
        [proxy]
        max_request_body = 1000

        [[identity.rules]]
        name = "owner"
        path = "/upload"
        status = [200]
        user_id = { form = "owner" }
        max_body = 4096
    """
    gw = await start_gateway(await upstream_server(site.app), toml)

    async def body() -> AsyncIterator[bytes]:  # chunked: the limit is found while reading
        for _ in range(3):
            yield b"x" * 600

    async with gw.session.post(gw.url + "/upload", data=body(), headers=FORM) as resp:
        assert resp.status == 413
    assert site.uploads == 0 and await rows(gw, "SELECT * FROM identities") == []


async def test_a_login_as_the_first_request_gets_the_bound_cookie(setup: tuple[RunningGateway, Site]) -> None:
    """A client whose very first request is the login (an app, a script) keeps the ID it was
    bound under: the cookie comes with the login's answer."""
    gw, _ = setup
    body = json.dumps({"email": "cy@example.com", "password": PASSWORD}).encode()
    async with gw.session.post(
        gw.url + "/api/login", data=body, headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 200
        cookie = resp.cookies["gw_vid"].value
    visitor_id = cookie.split(".")[1]
    bound = await rows(gw, "SELECT visitor_key FROM identities")
    assert bound == [(gw.gateway.keys.visitor_key(visitor_id),)]
    # A request no rule watches, from a new client, still gets no cookie (not a page load).
    async with gw.session.post(gw.url + "/api/other", data=b"{}") as resp:
        assert "gw_vid" not in resp.cookies


async def sent_as_is(gw: RunningGateway, target: str) -> bytes:
    """``target`` on the request line byte for byte (UTF-8), as no client library sends it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n".encode())
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    return answer


@pytest.mark.parametrize(
    ("name", "query", "found"),
    [
        ("prénom", "pr%C3%A9nom=A1", "A1"),  # as a browser sends it
        ("ab", "ab=A1", "A1"),
        ("pr%C3%A9nom", "pr%C3%A9nom=A1", None),
        ("pr%C3%A9nom", "pr%25C3%25A9nom=A1", "A1"),
        ("a b", "a+b=A1", "A1"),
        ("a b", "a%20b=A1", "A1"),
        ("a+b", "a%2Bb=A1", "A1"),
        ("a+b", "a+b=A1", None),
        ("a&b", "a%26b=A1", "A1"),
        ("a=b", "a%3Db=A1", "A1"),
        ("100%", "100%25=A1", "A1"),
        ("#x", "%23x=A1", "A1"),
    ],
)
async def test_a_query_source_is_compared_with_the_decoded_name(
    start_gateway: GatewayFactory, upstream_server: Any, name: str, query: str, found: str | None
) -> None:
    """A ``query`` source's (and a ``when``'s) name is compared with the request's parameter
    name percent-decoded (``+`` a space), as a form is read: ``query = "prénom"`` reads what a
    browser sends as ``pr%C3%A9nom``; a name written encoded is read only where the site's
    parameter is named so, its ``%`` sent as ``%25``."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="thanks")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    upstream = await upstream_server(app)
    quoted = json.dumps(name)
    gw = await start_gateway(
        upstream,
        f"[[conversions]]\nname = 'buy'\nmethod = 'GET'\npath = '/thanks'\nstatus = [200]\n"
        f"when = [{{ query = {quoted} }}]\norder_id = {{ query = {quoted} }}\n",
    )
    answer = await sent_as_is(gw, f"/thanks?{query}")
    assert answer.startswith(b"HTTP/1.1 200"), answer
    stored = await rows(gw, "SELECT order_id FROM conversions")
    assert stored == ([(found,)] if found else []), stored
