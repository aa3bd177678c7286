"""Identity and conversion rules against the ways real sites log in, sign up and check out.

Each scenario is a real aiohttp site on loopback behind a real gateway: a single-page app's
JSON login (plain, gzip, chunked, brotli, too large), a form login answered by a redirect whose
user ID is only in a JWT session cookie or a header, a Laravel-style login that redirects on
failure too, a Devise-style signup and login by e-mail, a GraphQL endpoint, a checkout success
page and a JSON order confirmation in cents. The tests check what the store records (bindings,
conversions with value, currency and order ID, deduplication) and that the visitor gets the
site's answer byte for byte.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

import aiosqlite
import pytest
from aiohttp import web

from tests.conftest import TOKEN, GatewayFactory, RunningGateway

FORM = {"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"}
JSON = {"Content-Type": "application/json"}
SITE_SECRET = "site-jwt-secret-for-tests"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(claims: dict[str, Any]) -> str:
    data = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode())
    return data + "." + b64(hmac.new(SITE_SECRET.encode(), data.encode(), hashlib.sha256).digest())


class Site:
    """The site behind the gateway; keeps every answer body it sends."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.app = web.Application()
        r = self.app.router
        r.add_post("/api/login", self.spa_login)
        r.add_post("/login", self.form_login)
        r.add_post("/laravel/login", self.laravel_login)
        r.add_post("/users", self.devise_sign_up)
        r.add_post("/users/sign_in", self.devise_sign_in)
        r.add_post("/graphql", self.graphql)
        r.add_get("/checkout/success", self.success_page)
        r.add_post("/api/orders", self.order)
        r.add_get("/{tail:.*}", self.page)

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(text="<html>page</html>", content_type="text/html")

    def _json(self, payload: bytes, request: web.Request, status: int = 200) -> web.Response:
        headers = {"Content-Type": "application/json"}
        encoding = request.query.get("enc")
        if encoding == "gzip":
            payload, headers["Content-Encoding"] = gzip.compress(payload), "gzip"
        elif encoding == "br":  # what a browser's Accept-Encoding gets from many servers
            payload, headers["Content-Encoding"] = b"\x8b\x07\x80" + payload + b"\x03", "br"
        self.sent.append(payload)
        return web.Response(body=payload, headers=headers, status=status)

    async def spa_login(self, request: web.Request) -> web.StreamResponse:
        data = await request.json()
        if data.get("password") != "right":
            return web.json_response({"error": "invalid credentials"}, status=401)
        uid: Any = 1234 if request.query.get("id") == "number" else "u-1234"
        pad = "x" * int(request.query.get("pad", 0))
        payload = json.dumps({"data": {"session": {"user": {"id": uid}}}, "pad": pad}).encode()
        if not request.query.get("chunked"):
            return self._json(payload, request)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(payload), 4096):
            await resp.write(payload[i : i + 4096])
        await resp.write_eof()
        self.sent.append(payload)
        return resp

    async def form_login(self, request: web.Request) -> web.Response:
        fields = await request.post()
        if fields.get("password") != "right":
            return web.Response(text="<form>wrong</form>", content_type="text/html")
        resp = web.Response(status=302, headers={"Location": "/dashboard", "X-User-Id": "hdr-77"})
        resp.set_cookie("session", hs256({"sub": "jwt-77"}), httponly=True)
        resp.set_cookie("csrftoken", "abc")
        return resp

    async def laravel_login(self, request: web.Request) -> web.Response:
        """Laravel: success and failure are both a 302, to the intended page or back to the form."""
        fields = await request.post()
        target = "/home" if fields.get("password") == "right" else "/laravel/login"
        return web.Response(status=302, headers={"Location": f"http://{request.host}{target}"})

    async def devise_sign_up(self, request: web.Request) -> web.Response:
        return web.Response(status=303, headers={"Location": "/"})

    async def devise_sign_in(self, request: web.Request) -> web.Response:
        return web.Response(status=303, headers={"Location": "/"})  # Devise downcases the e-mail

    async def graphql(self, request: web.Request) -> web.Response:
        body = await request.json()
        if isinstance(body, list):  # a batch (Apollo's BatchHttpLink): one answer per operation
            return web.json_response([self.operation(op.get("operationName")) for op in body])
        return web.json_response(self.operation(body.get("operationName")))

    def operation(self, op: str | None) -> dict[str, Any]:
        if op == "Login":
            data: Any = {"login": {"user": {"id": "gql-5"}}}
        elif op == "PlaceOrder":
            data = {"placeOrder": {"order": {"id": "G-9", "total": "12.50", "currency": "usd"}}}
        elif op == "PlaceOrderDeclined":  # GraphQL answers errors with 200 too
            return {"errors": [{"message": "card declined"}], "data": {"placeOrder": None}}
        else:
            data = {"viewer": {"id": "gql-5", "email": "x@example.com"}}
        return {"data": data}

    async def success_page(self, request: web.Request) -> web.Response:
        if request.query.get("order") == "404":
            return web.Response(status=404, text="no such order")
        return web.Response(text="<html>thanks</html>", content_type="text/html")

    async def order(self, request: web.Request) -> web.Response:
        data = await request.json()
        if data.get("card") == "declined":
            return web.json_response({"error": "payment failed"}, status=402)
        if data.get("card") == "boom":
            return web.json_response({"error": "oops"}, status=500)
        body = {"order": {"id": data["order"], "amount_total": 4990, "currency": "eur"}}
        return self._json(json.dumps(body).encode(), request, status=201)


JWT = '{ jwt_cookie = "session", algorithm = "HS256", key = "env:SITE_JWT" }'
RULES = f"""
[[identity.rules]]
name = "spa-login"
path = "/api/login"
status = [200]
user_id = {{ response_json = "/data/session/user/id" }}

[[identity.rules]]
name = "form-login-jwt"
path = "/login"
status = [302]
user_id = {JWT}

[[identity.rules]]
name = "form-login-header"
path = "/login"
status = [302]
user_id = {{ header = "X-User-Id" }}

[[identity.rules]]
name = "laravel-login"
path = "/laravel/login"
status = [302]
when = [{{ header = "Location", matches = ".*/home" }}]
user_id = {{ form = "email" }}

[[identity.rules]]
name = "devise-sign-up"
path = "/users"
status = [302, 303]
user_id = {{ form = "user[email]" }}
lowercase = true

[[identity.rules]]
name = "devise-sign-in"
path = "/users/sign_in"
status = [302, 303]
user_id = {{ form = "user[email]" }}
lowercase = true

[[identity.rules]]
name = "graphql-login"
path = "/graphql"
status = [200]
when = [{{ request_json = "/operationName", equals = "Login" }}]
user_id = {{ response_json = "/data/login/user/id" }}

[[identity.rules]]
name = "graphql-batch-login"
path = "/graphql"
status = [200]
when = [{{ request_json = "/1/operationName", equals = "Login" }}]
user_id = {{ response_json = "/1/data/login/user/id" }}

[[conversions]]
name = "graphql-purchase"
path = "/graphql"
status = [200]
when = [
  {{ request_json = "/operationName", matches = "PlaceOrder.*" }},
  {{ response_json = "/data/placeOrder/order/id" }},
]
value = {{ response_json = "/data/placeOrder/order/total" }}
currency = {{ response_json = "/data/placeOrder/order/currency" }}
order_id = {{ response_json = "/data/placeOrder/order/id" }}

[[conversions]]
name = "signup"
path = "/users"
status = [303]
value = 5.0
currency = "EUR"

[[conversions]]
name = "purchase-page"
method = "GET"
path = "/checkout/success"
status = [200]
value = {{ query = "total" }}
currency = {{ query = "currency" }}
order_id = {{ query = "order" }}

[[conversions]]
name = "purchase-api"
path = "/api/orders"
status = [201]
value = {{ response_json = "/order/amount_total" }}
value_scale = 0.01
currency = {{ response_json = "/order/currency" }}
order_id = {{ response_json = "/order/id" }}
"""


@pytest.fixture
async def site_gw(
    start_gateway: GatewayFactory, upstream_server: Any
) -> AsyncIterator[tuple[RunningGateway, Site]]:
    site = Site()
    yield await start_gateway(await upstream_server(site.app), RULES, env={"SITE_JWT": SITE_SECRET}), site


async def rows(gw: RunningGateway, sql: str) -> list[Any]:
    async with aiosqlite.connect(gw.gateway.settings.store_path) as db:
        return list(await db.execute_fetchall(sql))


async def failures(gw: RunningGateway) -> list[str]:
    async with gw.session.get(gw.admin_url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        text = await r.text()
    return [line for line in text.splitlines() if line.startswith("gateway_extraction_failures_total{")]


async def visit(gw: RunningGateway) -> dict[str, str]:
    async with gw.session.get(gw.url + "/?utm_source=news", headers={"Accept": "text/html"}) as resp:
        return {"Cookie": f"gw_vid={resp.cookies['gw_vid'].value}"}


async def test_spa_login_reads_a_string_or_number_id_plain_gzip_or_chunked(
    site_gw: tuple[RunningGateway, Site],
) -> None:
    gw, site = site_gw
    for query in ("", "?id=number", "?enc=gzip", "?chunked=1", "?chunked=1&pad=20000"):
        cookie = await visit(gw)
        body = json.dumps({"email": "a@example.com", "password": "right"}).encode()
        async with gw.session.post(
            gw.url + "/api/login" + query, data=body, headers={**JSON, **cookie}
        ) as resp:
            assert resp.status == 200
            assert await resp.read() == site.sent[-1]  # the site's bytes, still compressed
    found = await rows(gw, "SELECT user_key FROM identities ORDER BY id")
    expected = ["u-1234", "1234", "u-1234", "u-1234", "u-1234"]
    assert found == [(gw.gateway.keys.user_key(uid),) for uid in expected]
    async with gw.session.post(gw.url + "/api/login", data=b'{"password": "wrong"}', headers=JSON) as resp:
        assert resp.status == 401  # not a status the rule calls success
    assert len(await rows(gw, "SELECT * FROM identities")) == 5
    assert await failures(gw) == []


async def test_spa_login_answer_brotli_or_too_large_is_forwarded_and_counted_not_read(
    site_gw: tuple[RunningGateway, Site],
) -> None:
    """README: brotli is not readable, and an answer over max_body is not read; both count
    ``body_not_read`` and reach the visitor as the site sent them."""
    gw, site = site_gw
    body = json.dumps({"email": "a@example.com", "password": "right"}).encode()
    for query in ("?enc=br", "?pad=70000", "?pad=70000&chunked=1"):
        async with gw.session.post(gw.url + "/api/login" + query, data=body, headers=JSON) as resp:
            assert resp.status == 200
            assert await resp.read() == site.sent[-1]
    assert await rows(gw, "SELECT * FROM identities") == []
    assert await failures(gw) == [
        'gateway_extraction_failures_total{reason="body_not_read",rule="spa-login"} 3.0'
    ]


async def test_form_login_302_binds_from_the_jwt_session_cookie_and_a_header(
    site_gw: tuple[RunningGateway, Site],
) -> None:
    gw, _ = site_gw
    cookie = await visit(gw)
    async with gw.session.post(
        gw.url + "/login",
        data=b"username=x&password=wrong",
        headers={**FORM, **cookie},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 200  # the form again
    async with gw.session.post(
        gw.url + "/login",
        data=b"username=x&password=right",
        headers={**FORM, **cookie},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 302 and resp.headers["Location"] == "/dashboard"
        assert resp.headers["X-User-Id"] == "hdr-77"
        assert resp.headers.getall("Set-Cookie") == [
            f"session={hs256({'sub': 'jwt-77'})}; HttpOnly; Path=/",
            "csrftoken=abc; Path=/",
        ]  # the site's cookies as it set them; the visitor already had ours
    keys = gw.gateway.keys
    found = await rows(gw, "SELECT user_key, rule FROM identities ORDER BY rule")
    assert found == [
        (keys.user_key("hdr-77"), "form-login-header"),
        (keys.user_key("jwt-77"), "form-login-jwt"),
    ]


async def test_a_login_redirecting_on_failure_too_binds_only_on_the_success_location(
    site_gw: tuple[RunningGateway, Site],
) -> None:
    """Laravel answers a wrong password with a 302 back to the form: status alone would bind
    the visitor to whatever address was typed. ``when`` on the Location tells them apart."""
    gw, _ = site_gw
    cookie = await visit(gw)
    for password in ("wrong", "right"):
        async with gw.session.post(
            gw.url + "/laravel/login",
            data=f"email=victim%40example.com&password={password}".encode()
            if password == "wrong"
            else f"email=owner%40example.com&password={password}".encode(),
            headers={**FORM, **cookie},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 302
    found = await rows(gw, "SELECT user_key FROM identities")
    assert found == [(gw.gateway.keys.user_key("owner@example.com"),)]
    assert await failures(gw) == []  # a condition that does not hold is not a failure


async def test_an_email_typed_with_capitals_is_the_same_user_with_lowercase(
    site_gw: tuple[RunningGateway, Site],
) -> None:
    """Devise downcases and strips the e-mail it is given: the visitor who signed up as
    ada@example.com and signs in as " Ada@Example.COM" on a laptop is one user."""
    gw, _ = site_gw
    phone, laptop = await visit(gw), await visit(gw)
    for path, cookie, email in (
        ("/users", phone, "ada%40example.com"),
        ("/users/sign_in", laptop, "+Ada%40Example.COM"),
    ):
        async with gw.session.post(
            gw.url + path,
            data=f"user%5Bemail%5D={email}&user%5Bpassword%5D=x".encode(),
            headers={**FORM, **cookie},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 303
    found = await rows(gw, "SELECT DISTINCT user_key FROM identities")
    assert found == [(gw.gateway.keys.user_key("ada@example.com"),)]
    # The signup's conversion on the same request is the user's.
    user = await rows(gw, "SELECT name, user_key, value, currency FROM conversions")
    assert user == [("signup", gw.gateway.keys.user_key("ada@example.com"), 5.0, "EUR")]
    # An erasure asked for as the person types their address finds them: a rule lower-cases.
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with gw.session.delete(gw.admin_url + "/api/users/Ada@Example.COM", headers=auth) as resp:
        assert resp.status == 200
        erased = (await resp.json())["erased"]
    assert (erased["identities"], erased["conversions"]) == (2, 1)
    assert await rows(gw, "SELECT count(*) FROM identities") == [(0,)]


async def test_graphql_only_the_named_operation_binds_or_converts(
    site_gw: tuple[RunningGateway, Site],
) -> None:
    """Every GraphQL request is POST /graphql answered 200: the operation is in the body."""
    gw, _ = site_gw
    cookie = await visit(gw)
    for op in ("Viewer", "Login", "PlaceOrderDeclined", "PlaceOrder", "Viewer", "PlaceOrder"):
        body = json.dumps({"operationName": op, "query": "mutation { … }", "variables": {}}).encode()
        async with gw.session.post(gw.url + "/graphql", data=body, headers={**JSON, **cookie}) as resp:
            assert resp.status == 200
    found = await rows(gw, "SELECT user_key FROM identities")
    assert found == [(gw.gateway.keys.user_key("gql-5"),)]
    conversions = await rows(
        gw, "SELECT name, dedup_key, user_key, value, currency, order_id FROM conversions"
    )
    assert conversions == [("graphql-purchase", "order:G-9", None, 12.5, "USD", "G-9")]
    assert await failures(gw) == []


async def test_a_graphql_batch_fires_the_rules_for_the_operations_their_when_picks(
    site_gw: tuple[RunningGateway, Site],
) -> None:
    """A batch is a JSON array of operations (Apollo's BatchHttpLink), answered with one result
    per operation, in order. Until 2026-12-04 ``/operationName`` named none of them: the
    README's GraphQL rules counted ``when_json_array`` and never fired on a batched site, which
    needed one rule per position. Now each operation the rule's ``when`` holds for fires it,
    its other sources read in that operation; a rule pointing at a position (``/1/…``) still
    reads that one."""
    gw, _ = site_gw
    cookie = await visit(gw)
    for ops in (["Viewer", "Login"], ["PlaceOrderDeclined", "Viewer", "PlaceOrder"], ["Viewer"]):
        body = json.dumps([{"operationName": op, "query": "…", "variables": {}} for op in ops]).encode()
        async with gw.session.post(gw.url + "/graphql", data=body, headers={**JSON, **cookie}) as resp:
            assert resp.status == 200
            assert len(await resp.json()) == len(ops)  # the site's answer, as it sent it
    # The position rule binds the same pair again: one binding, by the first rule to fire.
    found = await rows(gw, "SELECT rule, user_key FROM identities")
    assert found == [("graphql-login", gw.gateway.keys.user_key("gql-5"))]
    conversions = await rows(gw, "SELECT name, user_key, value, currency, order_id FROM conversions")
    assert conversions == [("graphql-purchase", None, 12.5, "USD", "G-9")]  # found by the visitor
    assert await failures(gw) == []  # the other operations are no failure


async def test_checkout_success_page_counts_once(site_gw: tuple[RunningGateway, Site]) -> None:
    gw, _ = site_gw
    cookie = {**await visit(gw), "Accept": "text/html"}
    success = "/checkout/success?order=123&total=49.90&currency=eur"
    for _ in range(2):  # the page reloaded
        async with gw.session.get(gw.url + success, headers=cookie) as resp:
            assert resp.status == 200 and await resp.text() == "<html>thanks</html>"
    async with gw.session.head(gw.url + success.replace("123", "555"), headers=cookie) as resp:
        assert resp.status == 200  # a HEAD (a link checker) is not the GET the rule names
    async with gw.session.get(gw.url + success.replace("123", "404"), headers=cookie) as resp:
        assert resp.status == 404  # an order the site does not know
    async with gw.session.post(gw.url + success.replace("123", "777"), headers=cookie) as resp:
        assert resp.status == 405  # the path matches, the method does not
    found = await rows(gw, "SELECT name, dedup_key, value, currency, order_id FROM conversions")
    assert found == [("purchase-page", "order:123", 49.9, "EUR", "123")]


async def test_json_order_confirmation_in_cents_counts_once_and_never_a_failed_payment(
    site_gw: tuple[RunningGateway, Site],
) -> None:
    gw, site = site_gw
    cookie = await visit(gw)
    for card, status in (("declined", 402), ("boom", 500), ("ok", 201), ("ok", 201)):
        body = json.dumps({"order": "A-1", "card": card}).encode()
        async with gw.session.post(
            gw.url + "/api/orders?enc=gzip", data=body, headers={**JSON, **cookie}
        ) as resp:
            assert resp.status == status
            if status == 201:
                assert await resp.read() == site.sent[-1]
    found = await rows(gw, "SELECT name, dedup_key, value, currency, order_id FROM conversions")
    assert found == [("purchase-api", "order:A-1", 49.9, "EUR", "A-1")]


async def test_logout_then_login_as_another_user_binds_the_device_to_both(
    site_gw: tuple[RunningGateway, Site],
) -> None:
    """A shared device: Ada logs in, logs out, Bob logs in, Ada again. Nothing unbinds; the
    device is bound to both, once each."""
    gw, _ = site_gw
    cookie = await visit(gw)
    for email in ("ada", "bob", "ada"):
        async with gw.session.post(
            gw.url + "/users/sign_in",
            data=f"user%5Bemail%5D={email}%40example.com".encode(),
            headers={**FORM, **cookie},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 303
    keys = gw.gateway.keys
    found = await rows(gw, "SELECT visitor_key, user_key FROM identities ORDER BY id")
    assert len({v for v, _ in found}) == 1  # one device
    assert [u for _, u in found] == [keys.user_key("ada@example.com"), keys.user_key("bob@example.com")]
    for user in ("ada@example.com", "bob@example.com"):
        journey = await gw.api(f"/api/users/{user}")
        assert len(journey["touchpoints"]) == 1, journey  # the shared device's landing


async def test_a_user_erased_and_signing_in_again_on_the_same_device_is_bound_again(
    site_gw: tuple[RunningGateway, Site],
) -> None:
    """The process remembers the pairs it bound, so as not to bind them at every request. An
    erasure deletes the binding: remembering it then lost the user's next sign-in on the same
    browser (no binding, while a conversion on that request named the user)."""
    gw, _ = site_gw
    cookie = await visit(gw)
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async def sign_in() -> None:
        async with gw.session.post(
            gw.url + "/users/sign_in",
            data=b"user%5Bemail%5D=ada%40example.com",
            headers={**FORM, **cookie},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 303

    await sign_in()
    async with gw.session.delete(gw.admin_url + "/api/users/ada@example.com", headers=auth) as resp:
        assert (await resp.json())["erased"]["identities"] == 1
    # Every process of the gateway learns of the erasure within a few seconds.
    for _ in range(60):
        await sign_in()
        if await rows(gw, "SELECT * FROM identities"):
            break
        await asyncio.sleep(0.1)
    found = await rows(gw, "SELECT user_key, rule FROM identities")
    assert found == [(gw.gateway.keys.user_key("ada@example.com"), "devise-sign-in")]
