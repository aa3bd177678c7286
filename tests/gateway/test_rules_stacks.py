"""The README's rules for common stacks, against sites answering as those stacks do.

Each site is a real aiohttp app on loopback behind a real gateway, answering on the wire as
the stack does: a Next.js server action (``Next-Action`` request, ``text/x-component``
answer, ``x-action-redirect`` on success), NextAuth v4 and Auth.js v5 credentials sign-in
(``/api/auth/callback/credentials``, a JSON ``{"url": …}`` answer, an encrypted session
cookie) and their session endpoint, Django admin and django-allauth forms, WordPress
``wp-login.php`` and WooCommerce's ``?wc-ajax=checkout``, and an Auth0/OIDC ``/callback``
setting an ``id_token`` cookie. Every test checks that a rule fires with the right user ID and
never on a failure (wrong password, declined or unpaid order, an OAuth error). The sources
added on 2026-12-05 (``capture``, ``path``, ``cookie``, ``set_cookie``, ``response_text``,
``request_header``) are tried on the same sites: WooCommerce's order number shared with its
signed ``order.created`` webhook, the thank-you page's total, WordPress's logged-in cookie,
Django's rotated ``sessionid`` and a Next.js action that returns instead of redirecting.
Devise, Laravel, a JSON API and GraphQL are in ``test_rules_sites.py``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import aiosqlite
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.conftest import TOKEN, GatewayFactory, RunningGateway
from tests.jwts import certificate

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
AUTH0_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
AUTH0_PEM = certificate(
    AUTH0_KEY, "tenant.eu.auth0.com"
)  # its "signing certificate", as the dashboard gives it
# NextAuth and Auth.js encrypt their session cookie (a JWE: five parts, A256CBC-HS512 or
# A256GCM): nothing in it is readable without the site's secret.
JWE = "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0..iv-part.ciphertext-part.tag-part"
RSC_HEAD = '0:{"a":"$@1","f":"","b":"build-1"}\n'
# WordPress's accounts: what is typed as ``log`` (the name, or the address) → ``user_login``.
WP_ACCOUNTS = {
    "ada": "ada",
    "ada@example.com": "ada",
    "bob@example.com": "bob@example.com",
    "Carol Smith": "Carol Smith",
}
WC_ORDERS = {
    "727": ("49.90", True),
    "728": ("19.00", True),
    "729": ("49.90", False),
    "730": ("1,299.00", True),  # thousands grouped, as WooCommerce's default settings write them
    "731": ("1.299,00", True),  # a German shop's (decimal ",", thousands ".")
}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def id_token(claims: dict[str, Any]) -> str:
    """An RS256 ID token as Auth0 signs one."""
    head = {"alg": "RS256", "typ": "JWT", "kid": "k1"}
    data = b64(json.dumps(head).encode()) + "." + b64(json.dumps(claims).encode())
    return data + "." + b64(AUTH0_KEY.sign(data.encode(), padding.PKCS1v15(), hashes.SHA256()))


class Stacks:
    """One app answering as each stack does, each under its own paths."""

    def __init__(self) -> None:
        self.app = web.Application()
        r = self.app.router
        r.add_post("/login", self.next_login_page)
        r.add_post("/signin", self.next_object_action)
        r.add_post("/api/auth/callback/credentials", self.nextauth_v4)
        r.add_post("/v5/api/auth/callback/credentials", self.authjs_v5)
        r.add_get("/api/auth/session", self.nextauth_session)
        r.add_post("/admin/login/", self.django_form)
        r.add_post("/accounts/login/", self.django_form)
        r.add_post("/accounts/signup/", self.allauth_signup)
        r.add_post("/wp-login.php", self.wp_login)
        r.add_post("/", self.wc_ajax)
        r.add_post("/checkout/", self.wc_ajax)
        r.add_get("/checkout/order-received/{order}/", self.order_received)
        r.add_get("/de/kasse/bestellung-erhalten/{order}/", self.order_received)
        r.add_post("/wp-json/wc/store/v1/checkout", self.wc_store_checkout)
        r.add_get("/callback", self.oidc_callback)
        r.add_get("/api/auth/me", self.auth0_me)
        r.add_post("/account", self.next_action_returning)
        r.add_post("/accounts/logout/", self.django_logout)
        r.add_get("/{tail:.*}", self.page)

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(text="<html>page</html>", content_type="text/html")

    async def next_login_page(self, request: web.Request) -> web.Response:
        """A Next.js page with two server actions (sign-in and a newsletter). Called by the
        router (``Next-Action`` header, arguments encoded by React: a FormData argument's fields
        prefixed ``1_``), it answers ``text/x-component``; ``redirect()`` in the action sets
        ``x-action-redirect`` (303, or 200 in later versions), an error returned is in the RSC
        payload of a 200. Without JavaScript the form posts its own fields and an
        ``$ACTION_ID_…`` field, and ``redirect()`` is a plain 303."""
        fields = await request.post()
        action = request.headers.get("Next-Action")
        prefix = "1_" if action else ""
        if action == "a1f0newsletter" or "$ACTION_ID_a1f0newsletter" in fields:
            target = "/thanks"
        elif fields.get(prefix + "password") == "right":
            target = "/welcome"
        elif action:
            body = RSC_HEAD + '1:{"error":"Invalid email or password"}\n'
            return web.Response(text=body, headers={"Content-Type": "text/x-component"})
        else:
            return web.Response(text="<form>wrong</form>", content_type="text/html")
        if not action:
            return web.Response(status=303, headers={"Location": target})
        resp = web.Response(
            status=303,
            text=RSC_HEAD,
            headers={"Content-Type": "text/x-component", "x-action-redirect": f"{target};push"},
        )
        if target == "/welcome":
            resp.set_cookie("session", "opaque", httponly=True)
        return resp

    async def next_object_action(self, request: web.Request) -> web.Response:
        """An action called with plain values (``signIn({email, password})``): React sends its
        arguments as a JSON array, ``text/plain``."""
        assert request.headers["Next-Action"] and request.content_type == "text/plain"
        (args,) = json.loads(await request.text())
        if args.get("password") != "right":
            body = RSC_HEAD + '1:{"error":"Invalid email or password"}\n'
            return web.Response(text=body, headers={"Content-Type": "text/x-component"})
        headers = {"Content-Type": "text/x-component", "x-action-redirect": "/welcome;push"}
        return web.Response(status=303, text=RSC_HEAD, headers=headers)

    async def nextauth_v4(self, request: web.Request) -> web.Response:
        """next-auth v4: ``signIn("credentials")`` posts the form with ``json=true``; the
        redirect comes back as ``{"url": …}``, with the handler's status: 401 on failure."""
        fields = await request.post()
        base = f"http://{request.host}"
        if fields.get("password") != "right":
            url = f"{base}/api/auth/error?error=CredentialsSignin&provider=credentials"
            return web.json_response({"url": url}, status=401)
        resp = web.json_response({"url": fields.get("callbackUrl", base)})
        resp.set_cookie("next-auth.session-token", JWE, httponly=True, samesite="Lax")
        return resp

    async def authjs_v5(self, request: web.Request) -> web.Response:
        """Auth.js v5 (basePath ``/v5``): ``X-Auth-Return-Redirect: 1`` turns every redirect
        into a 200 ``{"url": …}``, the failed sign-in's too (to the sign-in page, ``error=``)."""
        fields = await request.post()
        base = f"http://{request.host}/v5"
        ok = fields.get("password") == "right"
        url = (
            fields.get("callbackUrl", base)
            if ok
            else f"{base}/api/auth/signin?error=CredentialsSignin&code=credentials"
        )
        if request.headers.get("X-Auth-Return-Redirect") != "1":
            resp: web.Response = web.Response(status=302, headers={"Location": str(url)})
        else:
            resp = web.json_response({"url": url})
        if ok:
            resp.set_cookie("authjs.session-token", JWE, httponly=True, samesite="Lax")
        return resp

    async def nextauth_session(self, request: web.Request) -> web.Response:
        """``useSession()`` asks this on every page: ``{}`` when signed out."""
        if "next-auth.session-token" not in request.cookies:
            return web.json_response({})
        user = {"name": "Ada", "email": "Ada@Example.com", "image": None}
        return web.json_response({"user": user, "expires": "2027-01-03T10:00:00.000Z"})

    async def django_form(self, request: web.Request) -> web.Response:
        """Django admin (``username``) and django-allauth (``login``: a username or an e-mail
        address): 302 with a new ``sessionid`` on success, the form again (200) on failure."""
        fields = await request.post()
        if fields.get("password") != "right":
            return web.Response(text="<form>Please enter a correct username</form>", content_type="text/html")
        target = request.query.get("next", "/accounts/profile/")
        resp = web.Response(status=302, headers={"Location": target})
        resp.set_cookie("csrftoken", "rotated", samesite="Lax")
        resp.set_cookie("sessionid", "k3y", httponly=True, samesite="Lax")
        return resp

    async def allauth_signup(self, request: web.Request) -> web.Response:
        fields = await request.post()
        if fields.get("password1") != fields.get("password2"):
            return web.Response(text="<form>You must type the same password</form>", content_type="text/html")
        return web.Response(status=302, headers={"Location": "/accounts/confirm-email/"})

    async def wp_login(self, request: web.Request) -> web.Response:
        """wp-login.php: sign-in (``log``, a username or an e-mail address, and ``pwd``),
        ``?action=register`` and ``?action=lostpassword``; a failure shows the form again."""
        fields = await request.post()
        action = request.query.get("action", "login")
        if action == "register":
            if fields.get("user_login") == "taken":
                return web.Response(text="<div id='login_error'>taken</div>", content_type="text/html")
            return web.Response(status=302, headers={"Location": "wp-login.php?checkemail=registered"})
        if action == "lostpassword":
            return web.Response(status=302, headers={"Location": "wp-login.php?checkemail=confirm"})
        login = WP_ACCOUNTS.get(str(fields.get("log")))
        if fields.get("pwd") != "right" or login is None:
            return web.Response(text="<div id='login_error'>wrong</div>", content_type="text/html")
        resp = web.Response(status=302, headers={"Location": str(fields.get("redirect_to", "/wp-admin/"))})
        # wp_set_auth_cookie: "user_login|expiration|token|hmac" through PHP's setcookie, which
        # rawurlencodes the value ("|" is %7C, "@" %40, a space %20); the secure cookie first.
        value = quote(f"{login}|1767000000|Kq3tOkEn|9f86d081884c7d65", safe="")
        expires = "expires=Fri, 19 Dec 2026 10:00:00 GMT; Max-Age=1209600"
        resp.headers.add("Set-Cookie", f"wordpress_sec_5d41={value}; {expires}; path=/wp-admin; HttpOnly")
        resp.headers.add("Set-Cookie", f"wordpress_logged_in_5d41={value}; {expires}; path=/; HttpOnly")
        return resp

    async def wc_ajax(self, request: web.Request) -> web.Response:
        """WooCommerce's checkout (``/?wc-ajax=checkout``): always 200 JSON, ``result`` says.
        An on-site payment goes to the order-received page; an off-site one (PayPal) to the
        payment provider, where the order is not paid yet."""
        if request.query.get("wc-ajax") != "checkout":
            return web.json_response({"fragments": {}})
        fields = await request.post()
        method = fields.get("payment_method")
        if fields.get("billing_email") == "declined@example.com":
            messages = '<ul class="woocommerce-error" role="alert"><li>Card declined.</li></ul>'
            body: dict[str, Any] = {
                "result": "failure",
                "messages": messages,
                "refresh": False,
                "reload": False,
            }
        elif method == "ppec_paypal":
            body = {"result": "success", "redirect": "https://www.paypal.com/checkoutnow?token=EC-1"}
        else:
            body = {
                "result": "success",
                "redirect": f"http://{request.host}/checkout/order-received/727/?key=wc_order_Xy9",
            }
        # wp_send_json: application/json, slashes escaped as \/.
        text = json.dumps(body).replace("/", "\\/")
        return web.Response(text=text, content_type="application/json", charset="UTF-8")

    async def wc_store_checkout(self, request: web.Request) -> web.Response:
        """The block checkout (WooCommerce's default since 8.3): the Store API answers the
        placed order as JSON, ``payment_result.payment_status`` saying whether it is paid, and
        a payment error as a 400 ``{"code": …, "message": …, "data": {"status": 400}}``."""
        data = await request.json()
        email = data["billing_address"]["email"]
        if data.get("payment_method") == "declined":
            error = {"code": "woocommerce_rest_checkout_process_payment_error", "message": "Card declined."}
            return web.json_response({**error, "data": {"status": 400}}, status=400)
        pending = data.get("payment_method") == "ppcp-gateway"  # approval at PayPal still to come
        result = {
            "payment_status": "pending" if pending else "success",
            "payment_details": [],
            "redirect_url": f"http://{request.host}/checkout/order-received/728/?key=wc_order_Ab1",
        }
        body = {
            "order_id": 728,
            "status": "pending" if pending else "processing",
            "order_key": "wc_order_Ab1",
            "customer_id": 0,
            "billing_address": {"first_name": "Ada", "email": email},
            "payment_method": data.get("payment_method"),
            "payment_result": result,
        }
        return web.json_response(body)

    async def order_received(self, request: web.Request) -> web.Response:
        """The classic thank-you page (``checkout/thankyou.php``): for a placed order the
        success notice and the order overview with the total (formatted as the shop says:
        here ``.`` for decimals, no thousands separator); for a failed payment the error
        notice and a link to pay again."""
        order = request.match_info["order"]
        total, paid = WC_ORDERS.get(order, ("0.00", False))
        if not paid:
            page = (
                '<p class="woocommerce-notice woocommerce-notice--error woocommerce-thankyou-order-failed">'
                "Unfortunately your order cannot be processed as the originating bank/merchant has "
                "declined your transaction. Please attempt your purchase again.</p>\n"
                f'<a href="/checkout/order-pay/{order}/?pay_for_order=true" class="button pay">Pay</a>'
            )
        else:
            page = (
                '<p class="woocommerce-notice woocommerce-notice--success '
                'woocommerce-thankyou-order-received">Thank you. Your order has been received.</p>\n'
                '<ul class="woocommerce-order-overview woocommerce-thankyou-order-details order_details">\n'
                '<li class="woocommerce-order-overview__order order">\n'
                f"Order number: <strong>{order}</strong>\n</li>\n"
                '<li class="woocommerce-order-overview__total total">\nTotal: <strong><span '
                'class="woocommerce-Price-amount amount"><bdi><span class="woocommerce-Price-currencySymbol">'
                f"&euro;</span>{total}</bdi></span></strong>\n</li>\n</ul>"
            )
        return web.Response(
            text=f"<html><body>{page}</body></html>", content_type="text/html", charset="UTF-8"
        )

    async def next_action_returning(self, request: web.Request) -> web.Response:
        """A server action that signs in and *returns* (the client navigates; no ``redirect()``):
        200 ``text/x-component`` either way, compressed as Next.js does; only the returned
        value's row of the RSC payload tells. Without JavaScript the page answers HTML."""
        fields = await request.post()
        if not request.headers.get("Next-Action"):
            return web.Response(text='<p>{"signedIn":true}</p>', content_type="text/html")
        ok = fields.get("1_password") == "right"
        row = '1:{"signedIn":true}' if ok else '1:{"signedIn":false,"error":"Invalid email or password"}'
        resp = web.Response(text=RSC_HEAD + row + "\n", headers={"Content-Type": "text/x-component"})
        if ok:
            resp.set_cookie("session", "opaque", httponly=True)
        resp.enable_compression()
        return resp

    async def django_logout(self, request: web.Request) -> web.Response:
        """``LogoutView``: the session flushed, its cookie deleted (``Max-Age=0``)."""
        resp = web.Response(status=302, headers={"Location": "/"})
        resp.del_cookie("sessionid")
        return resp

    async def oidc_callback(self, request: web.Request) -> web.Response:
        """Auth0 / OIDC: the site exchanges ``code`` with the provider (server to server) and
        sets its session; here an ``id_token`` cookie. An error from the provider goes back
        to the sign-in page; a code whose ``state`` does not match is a 400."""
        if "error" in request.query:
            return web.Response(status=302, headers={"Location": "/login?error=access_denied"})
        if request.query.get("state") != request.cookies.get("auth_verification"):
            return web.Response(status=400, text="BadRequestError: state mismatch")
        claims = {"sub": "auth0|65f0c1", "iss": "https://tenant.eu.auth0.com/", "aud": "client-1"}
        resp = web.Response(status=302, headers={"Location": "/"})
        resp.set_cookie("id_token", id_token(claims), httponly=True, secure=False)
        resp.set_cookie("appSession", JWE, httponly=True)
        return resp

    async def auth0_me(self, request: web.Request) -> web.Response:
        """nextjs-auth0's ``useUser()`` profile endpoint: the user as JSON, 401 signed out."""
        if "appSession" not in request.cookies:
            return web.json_response({"error": "not_authenticated"}, status=401)
        return web.json_response({"sub": "auth0|65f0c1", "email": "ada@example.com"})


RULES = """
[[identity.rules]]
name = "next-action-login"
path = "/login"
status = [200, 303]
when = [{ header = "x-action-redirect", matches = "/welcome;.*" }]
user_id = { form = "1_email" }
lowercase = true

[[identity.rules]]
name = "next-action-object"
path = "/signin"
status = [200, 303]
when = [{ header = "x-action-redirect", matches = "/welcome;.*" }]
user_id = { request_json = "/0/email" }
lowercase = true

[[identity.rules]]
name = "next-form-login"
path = "/login"
status = [303]
when = [{ header = "Location", equals = "/welcome" }]
user_id = { form = "email" }
lowercase = true

[[identity.rules]]
name = "nextauth-v4"
path = "/api/auth/callback/credentials"
status = [200]
user_id = { form = "email" }
lowercase = true

[[identity.rules]]
name = "authjs-v5"
path = "/v5/api/auth/callback/credentials"
status = [200]
when = [{ response_json = "/url", matches = "(?!.*[?&]error=).*" }]
user_id = { form = "email" }
lowercase = true

[[identity.rules]]
name = "authjs-v5-form"
path = "/v5/api/auth/callback/credentials"
status = [302]
when = [{ header = "Location", matches = "(?!.*[?&]error=).*" }]
user_id = { form = "email" }
lowercase = true

[[identity.rules]]
name = "nextauth-session"
method = "GET"
path = "/api/auth/session"
status = [200]
when = [{ response_json = "/user/email" }]
user_id = { response_json = "/user/email" }
lowercase = true

[[identity.rules]]
name = "django-admin"
path = "/admin/login/"
status = [302]
user_id = { form = "username" }

[[identity.rules]]
name = "allauth-login"
path = "/accounts/login/"
status = [302]
user_id = { form = "login" }
lowercase = true

[[identity.rules]]
name = "allauth-signup"
path = "/accounts/signup/"
status = [302]
user_id = { form = "email" }
lowercase = true

[[identity.rules]]
name = "wp-login"
path = "/wp-login\\\\.php"
status = [302]
when = [{ form = "log" }]
user_id = { form = "log" }

[[identity.rules]]
name = "wp-register"
path = "/wp-login\\\\.php"
status = [302]
when = [{ query = "action", equals = "register" }]
user_id = { form = "user_login" }

[[identity.rules]]
name = "auth0-callback"
method = "GET"
path = "/callback"
status = [302]
when = [{ query = "code" }]
user_id = { jwt_cookie = "id_token", algorithm = "RS256", key = "env:AUTH0_PUBLIC_PEM" }

[[identity.rules]]
name = "auth0-me"
method = "GET"
path = "/api/auth/me"
status = [200]
user_id = { response_json = "/sub" }

[[identity.rules]]
name = "wc-checkout-email"
path = "/(checkout/)?"
status = [200]
when = [
  { query = "wc-ajax", equals = "checkout" },
  { response_json = "/result", equals = "success" },
]
user_id = { form = "billing_email" }

[[identity.rules]]
name = "wc-blocks-checkout-email"
path = "/wp-json/wc/store/v1/checkout"
status = [200]
when = [{ response_json = "/payment_result/payment_status", equals = "success" }]
user_id = { response_json = "/billing_address/email" }

[[conversions]]
name = "wc-purchase"
path = "/(checkout/)?"
status = [200]
when = [
  { query = "wc-ajax", equals = "checkout" },
  { response_json = "/result", equals = "success" },
  { response_json = "/redirect", matches = ".*/checkout/order-received/.*" },
]
currency = "EUR"

[[conversions]]
name = "wc-order-received"
method = "GET"
path = "/checkout/order-received/[0-9]+/"
status = [200]
order_id = { query = "key" }
"""


@pytest.fixture
async def stacks_gw(start_gateway: GatewayFactory, upstream_server: Any) -> AsyncIterator[RunningGateway]:
    site = Stacks()
    yield await start_gateway(await upstream_server(site.app), RULES, env={"AUTH0_PUBLIC_PEM": AUTH0_PEM})


async def rows(gw: RunningGateway, sql: str) -> list[Any]:
    async with aiosqlite.connect(gw.gateway.settings.store_path) as db:
        return list(await db.execute_fetchall(sql))


async def bound(gw: RunningGateway) -> list[tuple[str, str]]:
    """(rule, user key) of every binding, in order."""
    return [(r, u) for r, u in await rows(gw, "SELECT rule, user_key FROM identities ORDER BY id")]


async def failures(gw: RunningGateway) -> list[str]:
    async with gw.session.get(gw.admin_url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        text = await r.text()
    return [line for line in text.splitlines() if line.startswith("gateway_extraction_failures_total{")]


async def visit(gw: RunningGateway) -> dict[str, str]:
    async with gw.session.get(gw.url + "/?utm_source=news", headers={"Accept": "text/html"}) as resp:
        return {"Cookie": f"gw_vid={resp.cookies['gw_vid'].value}"}


def multipart(fields: dict[str, str]) -> aiohttp.MultipartWriter:
    """A browser's FormData: one part per field."""
    writer = aiohttp.MultipartWriter("form-data")
    for name, value in fields.items():
        writer.append(value).set_content_disposition("form-data", name=name)
    return writer


async def post(gw: RunningGateway, path: str, cookie: dict[str, str], data: Any, **headers: str) -> int:
    async with gw.session.post(
        gw.url + path, data=data, headers={**cookie, **headers}, allow_redirects=False
    ) as resp:
        await resp.read()
        return resp.status


async def test_nextjs_server_action_binds_on_its_redirect_only(stacks_gw: RunningGateway) -> None:
    """A server action is a POST to the page with a ``Next-Action`` header; its arguments
    are React-encoded (a FormData's fields prefixed ``1_``) and its answer is RSC, not JSON.
    Success and failure are told apart by ``x-action-redirect``, and the other action of the
    page (a newsletter, same fields) by where it redirects."""
    gw = stacks_gw
    cookie = await visit(gw)
    action = {"Next-Action": "a1f0login", "Accept": "text/x-component"}
    # A failed attempt types another address: were it bound, it would show.
    fields = {"1_email": "victim@example.com", "1_password": "wrong", "0": '[{},"$K1"]'}
    assert await post(gw, "/login", cookie, multipart(fields), **action) == 200  # error in the payload
    newsletter = {**fields, "1_email": "someone@example.com"}
    assert (
        await post(gw, "/login", cookie, multipart(newsletter), **{**action, "Next-Action": "a1f0newsletter"})
        == 303
    )
    right = {**fields, "1_email": "Ada@Example.com", "1_password": "right"}
    assert await post(gw, "/login", cookie, multipart(right), **action) == 303
    # Without JavaScript: the form's own fields, a plain 303.
    plain = {"$ACTION_ID_a1f0login": "", "email": "victim@example.com", "password": "wrong"}
    assert await post(gw, "/login", cookie, multipart(plain)) == 200
    right = {**plain, "email": "bob@example.com", "password": "right"}
    assert await post(gw, "/login", cookie, multipart(right)) == 303
    # Called with plain values: a JSON array.
    text = {**action, "Content-Type": "text/plain;charset=UTF-8"}
    for who, password in (("victim", "wrong"), ("Carol", "right")):
        args = json.dumps([{"email": f"{who}@example.com", "password": password}])
        assert await post(gw, "/signin", cookie, args, **text) == (303 if password == "right" else 200)
    keys = gw.gateway.keys
    assert await bound(gw) == [
        ("next-action-login", keys.user_key("ada@example.com")),
        ("next-form-login", keys.user_key("bob@example.com")),
        ("next-action-object", keys.user_key("carol@example.com")),
    ]
    assert await failures(gw) == []


async def test_nextauth_v4_and_authjs_v5_credentials_bind_only_a_signed_in_user(
    stacks_gw: RunningGateway,
) -> None:
    """The session cookie is encrypted, so the user ID is the address typed, read when the
    sign-in succeeded: v4 answers a failure 401; v5 answers it 200 like a success (a ``url``
    with ``error=``, or a 302 to it without ``X-Auth-Return-Redirect``): only where it points
    tells them apart. ``/api/auth/session`` gives the user as the site keeps it."""
    gw = stacks_gw
    cookie = await visit(gw)
    for base, extra in (("", {"json": "true"}), ("/v5", {})):
        for password in ("wrong", "right"):
            who = "Ada" if password == "right" else "Victim"  # a failure's address must not bind
            form = {"email": f"{who}{base}@Example.com", "password": password, "csrfToken": "c", **extra}
            form["callbackUrl"] = "/dashboard"
            headers = {"X-Auth-Return-Redirect": "1"} if base else {}  # what signIn() sends
            status = await post(gw, base + "/api/auth/callback/credentials", cookie, form, **headers)
            assert status == (401 if (base, password) == ("", "wrong") else 200)
    for password in ("wrong", "right"):  # v5 without JavaScript: a 302 either way
        who = "Carol" if password == "right" else "Victim"
        form = {"email": f"{who}@Example.com", "password": password, "csrfToken": "c", "callbackUrl": "/"}
        assert await post(gw, "/v5/api/auth/callback/credentials", cookie, form, **FORM) == 302
    keys = gw.gateway.keys
    assert await bound(gw) == [
        ("nextauth-v4", keys.user_key("ada@example.com")),
        ("authjs-v5", keys.user_key("ada/v5@example.com")),
        ("authjs-v5-form", keys.user_key("carol@example.com")),
    ]
    # useSession(): signed out ({}) binds nothing and is no failure; signed in, the user.
    other = await visit(gw)
    for session in ({}, {"next-auth.session-token": JWE}):
        cookies = {"Cookie": other["Cookie"] + "".join(f"; {k}={v}" for k, v in session.items())}
        async with gw.session.get(gw.url + "/api/auth/session", headers=cookies) as resp:
            assert resp.status == 200
    assert (await bound(gw))[-1] == ("nextauth-session", keys.user_key("ada@example.com"))
    assert len(await bound(gw)) == 4
    assert await failures(gw) == []


async def test_django_admin_and_allauth_forms(stacks_gw: RunningGateway) -> None:
    """Django admin posts ``username``; allauth's sign-in posts ``login`` (the README's
    LoginView rule, ``username``, never fires on an allauth site) and its sign-up ``email``."""
    gw = stacks_gw
    cookie = await visit(gw)
    for password in ("wrong", "right"):
        who = "admin" if password == "right" else "victim"
        form = {"csrfmiddlewaretoken": "t", "username": who, "password": password, "next": "/admin/"}
        assert await post(gw, "/admin/login/?next=/admin/", cookie, form) == (
            302 if password == "right" else 200
        )
        form = {
            "csrfmiddlewaretoken": "t",
            "login": "Ada@Example.com" if password == "right" else "victim@example.com",
            "password": password,
            "remember": "on",
        }
        assert await post(gw, "/accounts/login/", cookie, form) == (302 if password == "right" else 200)
    for second in ("typo", "s3cret-pw"):
        form = {
            "csrfmiddlewaretoken": "t",
            "email": "Eve@Example.com" if second == "s3cret-pw" else "victim@example.com",
            "password1": "s3cret-pw",
            "password2": second,
        }
        assert await post(gw, "/accounts/signup/", cookie, form) == (302 if second == "s3cret-pw" else 200)
    keys = gw.gateway.keys
    assert await bound(gw) == [
        ("django-admin", keys.user_key("admin")),
        ("allauth-login", keys.user_key("ada@example.com")),
        ("allauth-signup", keys.user_key("eve@example.com")),
    ]
    assert await failures(gw) == []


async def test_wordpress_login_and_registration_share_wp_login_php(stacks_gw: RunningGateway) -> None:
    """Sign-in, registration and a lost password all post to ``/wp-login.php`` and answer
    302: ``when`` picks each one's form. ``log`` is whatever was typed, username or address."""
    gw = stacks_gw
    cookie = await visit(gw)
    login = {
        "log": "victim",
        "pwd": "wrong",
        "rememberme": "forever",
        "wp-submit": "Log In",
        "testcookie": "1",
    }
    login["redirect_to"] = "/wp-admin/"
    assert await post(gw, "/wp-login.php", cookie, login) == 200
    assert await post(gw, "/wp-login.php", cookie, {**login, "log": "ada", "pwd": "right"}) == 302
    register = {"user_login": "taken", "user_email": "t@example.com", "wp-submit": "Register"}
    assert await post(gw, "/wp-login.php?action=register", cookie, register) == 200
    assert (
        await post(gw, "/wp-login.php?action=register", cookie, {**register, "user_login": "newbie"}) == 302
    )
    assert await post(gw, "/wp-login.php?action=lostpassword", cookie, {"user_login": "ada"}) == 302
    keys = gw.gateway.keys
    assert await bound(gw) == [("wp-login", keys.user_key("ada")), ("wp-register", keys.user_key("newbie"))]
    assert await failures(gw) == []


async def test_woocommerce_checkout_counts_a_placed_order_not_a_declined_or_unpaid_one(
    stacks_gw: RunningGateway,
) -> None:
    """``?wc-ajax=checkout`` answers 200 JSON whatever happens: ``result`` and where
    ``redirect`` goes tell a placed order from a declined card and from an order handed to an
    off-site payment page (not paid yet). The order-received page's reloads count once. The
    buyer is bound by the billing address of a placed order (an order handed to PayPal too:
    the person is who they are, paid or not)."""
    gw = stacks_gw
    form = {
        "billing_email": "declined@example.com",
        "payment_method": "stripe",
        "woocommerce-process-checkout-nonce": "n",
    }
    # One visitor each: a second conversion by the same visitor would be left out (dedup_window).
    assert await post(gw, "/?wc-ajax=checkout", await visit(gw), form) == 200
    paypal = {**form, "billing_email": "a@example.com", "payment_method": "ppec_paypal"}
    assert await post(gw, "/?wc-ajax=checkout", await visit(gw), paypal) == 200
    assert await post(gw, "/?wc-ajax=update_order_review", await visit(gw), form) == 200
    cookie = await visit(gw)
    assert (
        await post(gw, "/checkout/?wc-ajax=checkout", cookie, {**form, "billing_email": "a@example.com"})
        == 200
    )
    assert await rows(gw, "SELECT name, value, currency FROM conversions") == [("wc-purchase", None, "EUR")]
    # The buyer's address as typed, as the order webhook's /billing/email gives it: guests too.
    # (Two visitors: the one handed to PayPal and the one who paid on the site.)
    assert await bound(gw) == [("wc-checkout-email", gw.gateway.keys.user_key("a@example.com"))] * 2
    for _ in range(2):
        async with gw.session.get(
            gw.url + "/checkout/order-received/727/?key=wc_order_Xy9",
            headers={**cookie, "Accept": "text/html"},
        ) as resp:
            assert resp.status == 200
    found = await rows(gw, "SELECT dedup_key FROM conversions WHERE name = 'wc-order-received'")
    assert found == [("order:wc_order_Xy9",)]
    assert await failures(gw) == []


async def test_an_oidc_callback_binds_from_the_id_token_cookie_never_on_an_error(
    stacks_gw: RunningGateway,
) -> None:
    """Auth0's ``/callback?code=…&state=…`` is exchanged server to server: the gateway sees
    only the answer, a 302 setting the site's cookies. An ``id_token`` cookie (RS256, checked
    with the tenant's signing certificate) names the user; an error from the provider is a 302
    too, told apart by ``code`` missing, even when the browser still sends an older user's
    ``id_token``."""
    gw = stacks_gw
    cookie = await visit(gw)
    old = id_token({"sub": "auth0|old-user"})
    stale = {"Cookie": cookie["Cookie"] + f"; id_token={old}; auth_verification=s1"}
    for query, status in (
        ("?error=access_denied&error_description=User+cancelled&state=s1", 302),
        ("?code=c0de&state=forged", 400),
        ("?code=c0de&state=s1", 302),
    ):
        async with gw.session.get(gw.url + "/callback" + query, headers=stale, allow_redirects=False) as resp:
            assert resp.status == status
    assert await bound(gw) == [("auth0-callback", gw.gateway.keys.user_key("auth0|65f0c1"))]
    # With the SDK's encrypted session cookie instead, its profile endpoint names the user.
    other = await visit(gw)
    for session in ("", f"; appSession={JWE}"):
        async with gw.session.get(
            gw.url + "/api/auth/me", headers={"Cookie": other["Cookie"] + session}
        ) as resp:
            assert resp.status == (200 if session else 401)
    assert (await bound(gw))[-1] == ("auth0-me", gw.gateway.keys.user_key("auth0|65f0c1"))
    assert await failures(gw) == []


async def test_woocommerce_block_checkout_binds_a_paid_order_s_buyer(stacks_gw: RunningGateway) -> None:
    """The block checkout posts JSON to the Store API: a declined card is a 400, an order
    waiting for PayPal's approval a 200 whose ``payment_status`` is ``pending``."""
    gw = stacks_gw
    for method, email, status in (
        ("declined", "victim@example.com", 400),
        ("ppcp-gateway", "later@example.com", 200),
        ("stripe", "Buyer@Example.com", 200),
    ):
        body = json.dumps({"billing_address": {"email": email}, "payment_method": method, "payment_data": []})
        headers = {"Content-Type": "application/json", "Nonce": "n0nce"}
        assert await post(gw, "/wp-json/wc/store/v1/checkout", await visit(gw), body, **headers) == status
    assert await bound(gw) == [("wc-blocks-checkout-email", gw.gateway.keys.user_key("Buyer@Example.com"))]
    assert await failures(gw) == []


# The rules the sources added on 2026-12-05 make possible (README, Common stacks), with
# WooCommerce's order webhook as the shop sends it.
SOURCE_RULES = r"""
[[identity.rules]]
name = "wp-login-cookie"
path = "/wp-login\\.php"
status = [302]
when = [{ set_cookie = "wordpress_logged_in_*" }]
user_id = { cookie = "wordpress_logged_in_*", capture = "^(.+?)%7C" }

[[identity.rules]]
name = "django-session"
path = "/accounts/(login|logout)/"
status = [200, 302]
when = [{ set_cookie = "sessionid" }]
user_id = { form = "login" }
lowercase = true

[[identity.rules]]
name = "next-action-returns"
path = "/account"
status = [200]
when = [
  { request_header = "Next-Action" },
  { response_text = true, capture = '(?m)^\d+:\{"signedIn":(true)' },
]
user_id = { form = "1_email" }
lowercase = true

[[conversions]]
name = "wc-purchase"
path = "/(checkout/)?"
status = [200]
when = [
  { query = "wc-ajax", equals = "checkout" },
  { response_json = "/result", equals = "success" },
  { response_json = "/redirect", capture = "/checkout/order-received/(\\d+)/" },
]
order_id = { response_json = "/redirect", capture = "/checkout/order-received/(\\d+)/" }
currency = "EUR"

[[conversions]]
name = "wc-order-received"
method = "GET"
path = "/checkout/order-received/[0-9]+/"
status = [200]
when = [{ response_text = true, capture = "(woocommerce-thankyou-order-received)" }]
order_id = { path = true, capture = "^/checkout/order-received/(\\d+)/" }
value = { response_text = true, capture = '(?s)woocommerce-order-overview__total.*?</span>([0-9.,]+)</bdi>' }
currency = "EUR"

[[conversions]]
name = "wc-bestellung"
method = "GET"
path = "/de/kasse/bestellung-erhalten/[0-9]+/"
status = [200]
when = [{ response_text = true, capture = "(woocommerce-thankyou-order-received)" }]
order_id = { path = true, capture = "^/de/kasse/bestellung-erhalten/(\\d+)/" }
value = { response_text = true, capture = '(?s)woocommerce-order-overview__total.*?</span>([0-9.,]+)</bdi>' }
decimal_separator = ","
currency = "EUR"

[[sources]]
name = "woocommerce"
signature = "hmac"
secrets = ["env:WOO_SECRET"]
types = { "order.created" = "conversion" }
defaults = { name = "purchase" }

[sources.hmac]
header = "X-WC-Webhook-Signature"
encoding = "base64"
delivery_header = "X-WC-Webhook-Delivery-ID"
type_header = "X-WC-Webhook-Topic"

[sources.fields]
event_id = "/order_key"
order_id = "/id"
user_id = "/billing/email"
value = "/total"
currency = "/currency"
"""
WOO_SECRET = "w" * 32


@pytest.fixture
async def sources_gw(start_gateway: GatewayFactory, upstream_server: Any) -> AsyncIterator[RunningGateway]:
    site = Stacks()
    yield await start_gateway(await upstream_server(site.app), SOURCE_RULES, env={"WOO_SECRET": WOO_SECRET})


async def order_webhook(gw: RunningGateway, order: int, total: str, delivery: str) -> str:
    """WooCommerce's ``order.created``, signed as the shop signs it (base64 HMAC of the body)."""
    payload = {
        "id": order,
        "status": "processing",
        "currency": "EUR",
        "total": total,
        "customer_id": 0,
        "order_key": f"wc_order_{order}",
        "billing": {"email": "a@example.com"},
    }
    body = json.dumps(payload).encode()
    mac = base64.b64encode(hmac.new(WOO_SECRET.encode(), body, hashlib.sha256).digest()).decode()
    headers = {
        "Content-Type": "application/json",
        "X-WC-Webhook-Signature": mac,
        "X-WC-Webhook-Topic": "order.created",
        "X-WC-Webhook-Delivery-ID": delivery,
    }
    async with gw.session.post(gw.url + "/_gw/events", data=body, headers=headers) as resp:
        answer = await resp.json()
        assert resp.status in (200, 202), answer
        result: str = answer["result"]
        return result


async def test_woocommerce_s_order_number_is_shared_by_the_traffic_rules_and_the_webhook(
    sources_gw: RunningGateway,
) -> None:
    """The order number is only in the checkout answer's ``redirect`` (``…/order-received/727/
    ?key=…``, slashes JSON-escaped) and in the thank-you page's path: captured there, the
    traffic and the ``order.created`` webhook (``id: 727``) count the order once. The
    thank-you page also shows the total, read from the page as text; a failed payment's page
    and an order handed to PayPal record nothing."""
    gw = sources_gw
    form = {
        "billing_email": "a@example.com",
        "payment_method": "stripe",
        "woocommerce-process-checkout-nonce": "n",
    }
    cookie = await visit(gw)
    assert await post(gw, "/?wc-ajax=checkout", cookie, form) == 200
    paypal = await visit(gw)
    assert await post(gw, "/?wc-ajax=checkout", paypal, {**form, "payment_method": "ppec_paypal"}) == 200
    # Back from PayPal, paid: the order-received page (reloaded once); a failed payment's page.
    for order in ("728", "728", "729"):
        async with gw.session.get(
            gw.url + f"/checkout/order-received/{order}/?key=wc_order_{order}",
            headers={**paypal, "Accept": "text/html"},
        ) as resp:
            assert resp.status == 200
    # The shop's webhooks, seconds later: the same orders, counted once.
    for order, total, delivery in ((727, "49.90", "91"), (728, "19.00", "92")):
        assert await order_webhook(gw, order, total, delivery) == "duplicate"
    found = await rows(gw, "SELECT name, dedup_key, order_id, value, currency FROM conversions ORDER BY id")
    assert found == [
        ("wc-purchase", "order:727", "727", None, "EUR"),  # the checkout's answer has no amount
        ("wc-order-received", "order:728", "728", 19.0, "EUR"),
    ]
    assert await failures(gw) == []
    # The buyer of 727 opens the thank-you page too: the same order, not another.
    async with gw.session.get(
        gw.url + "/checkout/order-received/727/?key=wc_order_727", headers={**cookie, "Accept": "text/html"}
    ) as resp:
        assert resp.status == 200
    assert len(await rows(gw, "SELECT id FROM conversions")) == 2


async def test_woocommerce_s_thank_you_page_total_is_read_with_its_thousands_and_decimals(
    sources_gw: RunningGateway,
) -> None:
    """A total of a thousand or more is written grouped (``1,299.00``; a German shop's
    ``1.299,00`` under ``decimal_separator = ","``): read as 1299, not refused as no number
    (``value_invalid``, the order kept without its value) nor taken for 1.299."""
    gw = sources_gw
    cookie = await visit(gw)
    for page in ("/checkout/order-received/730/", "/de/kasse/bestellung-erhalten/731/"):
        async with gw.session.get(gw.url + page, headers={**cookie, "Accept": "text/html"}) as resp:
            assert resp.status == 200
    found = await rows(gw, "SELECT name, order_id, value, currency FROM conversions ORDER BY id")
    assert found == [
        ("wc-order-received", "730", 1299.0, "EUR"),
        ("wc-bestellung", "731", 1299.0, "EUR"),
    ]
    assert await failures(gw) == []


async def test_wordpress_binds_the_account_its_logged_in_cookie_names(sources_gw: RunningGateway) -> None:
    """``log`` is whatever was typed, a name or an address: the ``wordpress_logged_in_<hash>``
    cookie the sign-in sets names the account (``user_login|expiry|token|hmac``, rawurlencoded
    by PHP). The capture keeps the name alone, its escapes decoded: one account, however it
    signed in."""
    gw = sources_gw
    cookie = await visit(gw)
    for log, pwd in (
        ("ada", "wrong"),
        ("ada", "right"),
        ("ada@example.com", "right"),  # the same account, by its address
        ("bob@example.com", "right"),  # an account whose name is an address
        ("Carol Smith", "right"),  # a name with a space
    ):
        status = await post(gw, "/wp-login.php", cookie, {"log": log, "pwd": pwd, "wp-submit": "Log In"})
        assert status == (302 if pwd == "right" else 200)
    keys = gw.gateway.keys
    assert await bound(gw) == [
        ("wp-login-cookie", keys.user_key("ada")),
        ("wp-login-cookie", keys.user_key("bob@example.com")),
        ("wp-login-cookie", keys.user_key("Carol Smith")),
    ]
    assert await failures(gw) == []


async def test_django_s_rotated_sessionid_tells_a_sign_in_and_its_deletion_does_not(
    sources_gw: RunningGateway,
) -> None:
    """Django sets ``sessionid`` at a sign-in (``cycle_key``), not at a failed attempt, and
    deletes it at a sign-out (``Max-Age=0``, an expiry in 1970): "did the answer set the
    session cookie" holds at the sign-in only, whatever the status."""
    gw = sources_gw
    cookie = await visit(gw)
    for who, password in (("victim@example.com", "wrong"), ("Ada@Example.com", "right")):
        form = {"csrfmiddlewaretoken": "t", "login": who, "password": password}
        assert await post(gw, "/accounts/login/", cookie, form) == (302 if password == "right" else 200)
    assert await post(gw, "/accounts/logout/", cookie, {"csrfmiddlewaretoken": "t"}) == 302
    assert await bound(gw) == [("django-session", gw.gateway.keys.user_key("ada@example.com"))]
    assert await failures(gw) == []  # the sign-out: no login field read, none missing


async def test_a_next_js_action_that_returns_instead_of_redirecting(sources_gw: RunningGateway) -> None:
    """An action that signs in and returns (``{ signedIn: true }``; the client navigates)
    answers 200 RSC, compressed, either way: the returned row of the payload, read as text,
    tells a sign-in from a failure, and the ``Next-Action`` request header an action from a
    plain form post to the same page."""
    gw = sources_gw
    cookie = await visit(gw)
    action = {"Next-Action": "7f3a9c", "Accept": "text/x-component", "Accept-Encoding": "gzip, deflate, br"}
    for who, password in (("victim@example.com", "wrong"), ("Ada@Example.com", "right")):
        fields = {"1_email": who, "1_password": password, "0": '[{},"$K1"]'}
        assert await post(gw, "/account", cookie, multipart(fields), **action) == 200
    plain = {"1_email": "plain@example.com", "1_password": "right"}
    assert await post(gw, "/account", cookie, multipart(plain)) == 200  # HTML, no Next-Action
    assert await bound(gw) == [("next-action-returns", gw.gateway.keys.user_key("ada@example.com"))]
    assert await failures(gw) == []
