"""The whole story of issue 3, end to end: where did this signup come from?

A real multi-page site (signup form, a Django-style login answering 302, a JSON login API, a
login that sets an HS256 JWT cookie, a checkout answering 303 to /thank-you?order=…&total=…)
behind a real gateway on loopback. A visitor lands from a newsletter on their laptop,
browses, signs up; later lands from an influencer's post on their phone, fails a form login,
logs in through the JSON API, buys (submitting twice); opens the app on a tablet (JWT
session); a billing webhook then reports the same order. The admin API must show
the user's first touch (the newsletter), last touch (the influencer), both devices, and the
purchase once.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import parse_qsl

import pytest
from aiohttp import web

from tests.conftest import TOKEN, RunningGateway

JWT_SECRET = "j" * 40
BILLING_SECRET = "b" * 40
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HTML = {"Accept": "text/html", "Sec-Fetch-Dest": "document"}
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:145.0) Gecko/20100101 Firefox/145.0"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(claims: dict[str, Any]) -> str:
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode())
    return head + "." + b64(hmac.new(JWT_SECRET.encode(), head.encode(), hashlib.sha256).digest())


def site() -> web.Application:

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=f"<html>{request.path_qs}</html>", content_type="text/html")

    async def signup(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=302, headers={"Location": "/welcome"})

    async def form_login(request: web.Request) -> web.Response:
        form = dict(parse_qsl((await request.read()).decode()))
        if form.get("password") != "right":
            return web.Response(text="<form>try again</form>", content_type="text/html")
        return web.Response(status=302, headers={"Location": "/account"})

    async def api_login(request: web.Request) -> web.Response:
        data = json.loads(await request.read())
        return web.json_response({"user": {"id": data["email"], "plan": "pro"}})

    async def jwt_login(request: web.Request) -> web.Response:
        resp = web.Response(status=303, headers={"Location": "/app"})
        resp.headers.add("Set-Cookie", f"session={hs256({'sub': 'ada@example.com'})}; Path=/; HttpOnly")
        return resp

    async def checkout(request: web.Request) -> web.Response:
        form = dict(parse_qsl((await request.read()).decode()))
        return web.Response(status=303, headers={"Location": f"/thank-you?order={form['order']}&total=99.90"})

    async def moved(request: web.Request) -> web.Response:  # a trailing slash, as many sites add
        return web.Response(status=301, headers={"Location": f"{request.path}/?{request.query_string}"})

    app = web.Application()
    app.router.add_get("/boots", moved)
    app.router.add_post("/signup", signup)
    app.router.add_post("/accounts/login/", form_login)
    app.router.add_post("/api/login", api_login)
    app.router.add_post("/session", jwt_login)
    app.router.add_post("/checkout", checkout)
    app.router.add_get("/{tail:.*}", page)
    return app


CONFIG = """
[[identity.rules]]
name = "signup"
method = "POST"
path = "/signup"
status = [302]
user_id = { form = "email" }

[[identity.rules]]
name = "form-login"
method = "POST"
path = "/accounts/login/"
status = [302]
user_id = { form = "username" }

[[identity.rules]]
name = "api-login"
method = "POST"
path = "/api/login"
status = [200]
user_id = { response_json = "/user/id" }

[[identity.rules]]
name = "jwt"
method = "POST"
path = "/session"
status = [303]
user_id = { jwt_cookie = "session", claim = "sub", algorithm = "HS256", key = "env:SITE_JWT_SECRET" }

[[conversions]]
name = "purchase"
method = "POST"
path = "/checkout"
status = [303]
value = { location_query = "total" }
currency = "EUR"
order_id = { location_query = "order" }

[[sources]]
name = "billing"
secrets = ["env:BILLING_SECRET"]
"""


class Device:
    """One browser: keeps the gateway's visitor cookie and the site's session cookie."""

    def __init__(self, gw: RunningGateway) -> None:
        self.gw = gw
        self.cookies: dict[str, str] = {}

    async def request(self, method: str, target: str, data: bytes | None = None, **headers: str) -> int:
        cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        async with self.gw.session.request(
            method,
            self.gw.url + target,
            data=data,
            headers={**HTML, **headers, **({"Cookie": cookie} if cookie else {})},
            allow_redirects=False,
        ) as resp:
            await resp.read()
            self.cookies.update({name: morsel.value for name, morsel in resp.cookies.items()})
            return resp.status

    async def form(self, target: str, body: str) -> int:
        return await self.request(
            "POST", target, body.encode(), **{"Content-Type": "application/x-www-form-urlencoded"}
        )


def signed(body: bytes, msg_id: str) -> dict[str, str]:
    ts = str(int(time.time()))
    mac = hmac.new(BILLING_SECRET.encode(), f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": ts,
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        "Content-Type": "application/json",
    }


@pytest.fixture
async def gw(start_gateway, upstream_server) -> RunningGateway:
    env = {"SITE_JWT_SECRET": JWT_SECRET, "BILLING_SECRET": BILLING_SECRET}
    return await start_gateway(await upstream_server(site()), CONFIG, env=env)


async def test_where_did_this_signup_come_from(gw: RunningGateway) -> None:
    laptop, phone = Device(gw), Device(gw)

    # Days of anonymous browsing on the laptop, starting from a newsletter.
    assert await laptop.request("GET", "/?utm_source=Newsletter&utm_medium=email&utm_campaign=launch") == 200
    assert await laptop.request("GET", "/pricing") == 200
    assert await laptop.request("GET", "/features") == 200
    assert await laptop.form("/signup", "email=ada%40example.com&password=secret-pw&plan=pro") == 302

    # Later, an influencer's post on the phone; a failed, then a good form login there.
    assert await phone.request("GET", "/shop?c_source=instagram&c_medium=social&creator_id=cr_ada") == 200
    assert await phone.form("/accounts/login/", "username=ada%40example.com&password=wrong") == 200
    assert (
        await phone.request(
            "POST",
            "/api/login",
            json.dumps({"email": "ada@example.com", "password": "right"}).encode(),
            **{"Content-Type": "application/json"},
        )
        == 200
    )
    assert await phone.form("/checkout", "order=A-77&card_number=4111111111111111") == 303
    assert await phone.form("/checkout", "order=A-77&card_number=4111111111111111") == 303  # double submit

    # A tablet with the site's app, whose session is a JWT cookie.
    tablet = Device(gw)
    assert await tablet.request("GET", "/app") == 200
    assert await tablet.request("POST", "/session") == 303

    # The billing system reports the same order, signed: it counts once.
    event = json.dumps(
        {
            "type": "conversion",
            "event_id": "evt_1",
            "user_id": "ada@example.com",
            "name": "purchase",
            "value": 99.9,
            "currency": "EUR",
            "order_id": "A-77",
        }
    ).encode()
    async with gw.session.post(gw.url + "/_gw/events", data=event, headers=signed(event, "msg_1")) as resp:
        assert resp.status == 200, await resp.text()
        assert "duplicate" in await resp.text()

    # One user, three devices: the journey is the union, in time order.
    async with gw.session.get(gw.admin_url + "/api/users/ada@example.com", headers=AUTH) as resp:
        assert resp.status == 200
        user = await resp.json()
    keys = gw.gateway.keys
    devices = [keys.visitor_key(d.cookies["gw_vid"].split(".")[1]) for d in (laptop, phone, tablet)]
    assert [v["visitor_key"] for v in user["visitors"]] == devices
    assert user["first_touch"]["source"] == "newsletter" and user["first_touch"]["visitor_key"] == devices[0]
    assert user["last_touch"]["creator_id"] == "cr_ada" and user["last_touch"]["visitor_key"] == devices[1]
    assert [t["landing_path"] for t in user["touchpoints"]] == ["/", "/shop"]
    assert [(c["name"], c["value"], c["currency"], c["order_id"]) for c in user["conversions"]] == [
        ("purchase", 99.9, "EUR", "A-77")
    ]
    # Bound by the signup form (laptop), the API login (phone) and the JWT cookie (tablet).
    async with gw.session.get(gw.admin_url + "/metrics", headers=AUTH) as resp:
        metrics = await resp.text()
    for rule in ("signup", "api-login", "jwt"):
        assert f'rule="{rule}"' in metrics
    # Nothing of the passwords, the card number or the raw user ID reached the store.
    store = gw.gateway.settings.store_path
    raw = await asyncio.to_thread(
        lambda: b"".join(p.read_bytes() for p in store.parent.glob(store.name + "*"))
    )
    for secret in (b"secret-pw", b"4111111111111111", b"ada@example.com"):
        assert secret not in raw


async def test_a_payment_return_tagged_utm_nooverride_steals_no_credit(gw: RunningGateway) -> None:
    """WooCommerce's PayPal Standard sends the buyer back to `…/order-received/…?utm_nooverride=1`,
    Universal Analytics' "keep the campaign" flag. Back from PayPal with its Referer, the return
    continues the visit; without one (a redirect chain, a strict Referrer-Policy) it was a Direct
    touchpoint, which took the last touch, and half the linear credit, from the ad that sold."""
    laptop = Device(gw)
    firefox = {"User-Agent": FIREFOX, "Accept-Language": "en-GB,en;q=0.8"}
    ad = "/?utm_source=google&utm_medium=cpc&utm_campaign=brand"
    assert await laptop.request("GET", ad, **firefox) == 200
    ret = "/checkout/order-received/7/?key=wc_order_7&utm_nooverride=1"
    assert await laptop.request("GET", ret, Referer="https://www.paypal.com/checkoutnow", **firefox) == 200
    assert await laptop.request("GET", ret, **firefox) == 200
    assert await laptop.form("/checkout", "order=W-7") == 303

    touchpoints = (await gw.api("/api/touchpoints"))["items"]
    assert [(t["channel"], t["campaign"]) for t in touchpoints] == [("Paid Search", "brand")]
    report = await gw.api("/api/attribution", model="all", conversion="purchase")
    [row] = report["rows"]
    assert row["group"] == "Paid Search"
    assert all(row[f"{model}_value"] == 99.9 for model in report["models"])


async def test_a_shared_browser_credits_both_people_before_and_after_the_switch(
    start_gateway: Any, upstream_server: Any
) -> None:
    """README, *A shared device* and Known limits: Bob lands from an ad on the family laptop and
    logs in; Carol logs in there after him and lands from her newsletter. Her purchase on the
    laptop looks back over both people's devices; Bob's on his own phone over his devices, the
    laptop included, so Carol's newsletter is its last touch. Nothing says who is at the
    keyboard after a switch: pinned here so that a change to it is a decision, not an accident."""
    # A script clicks faster than a person reads: keep the behaviour signals out of this test.
    quiet = CONFIG + "\n[bots.weights]\ninhuman_cadence = 0\nno_assets = 0\n"
    env = {"SITE_JWT_SECRET": JWT_SECRET, "BILLING_SECRET": BILLING_SECRET}
    gw = await start_gateway(await upstream_server(site()), quiet, env=env)
    firefox = {"User-Agent": FIREFOX, "Accept-Language": "en-GB,en;q=0.8"}
    laptop, bob_phone, carol_phone = Device(gw), Device(gw), Device(gw)

    async def land(device: Device, source: str, medium: str, campaign: str) -> None:
        target = f"/?utm_source={source}&utm_medium={medium}&utm_campaign={campaign}"
        assert await device.request("GET", target, **firefox) == 200

    async def login(device: Device, user: str) -> None:
        assert await device.form("/accounts/login/", f"username={user}&password=right") == 302

    await land(bob_phone, "partnerblog", "affiliate", "bob-aff")
    await login(bob_phone, "bob")
    await land(carol_phone, "google", "cpc", "carol-search")
    await login(carol_phone, "carol")
    await land(laptop, "facebook", "paid_social", "bob-ad")
    await login(laptop, "bob")
    await login(laptop, "carol")  # Bob logged out; the gateway sees only Carol's login
    await land(laptop, "newsletter", "email", "carol-mail")
    assert await laptop.form("/checkout", "order=C-1") == 303  # Carol's, on the shared laptop
    assert await bob_phone.form("/checkout", "order=B-1") == 303  # Bob's, on his own phone

    async def credits(model: str) -> dict[str, float]:
        report = await gw.api("/api/attribution", model=model, group_by="campaign")
        assert report["totals"] == [{"currency": "EUR", "conversions": 2, "value": 199.8}]
        return {row["group"]: row["value"] for row in report["rows"]}

    # C-1 over four touches (24.97, 24.97, 24.98, 24.98: the cents left over go to the later
    # touches); B-1 over Bob's phone and the laptop, Carol's newsletter among them (33.30 each).
    linear = {"bob-aff": 58.27, "carol-search": 24.97, "bob-ad": 58.28, "carol-mail": 58.28}
    assert await credits("linear") == linear
    assert await credits("last_touch") == {"carol-mail": 199.8}
    carol = await gw.api("/api/users/carol")
    assert [t["campaign"] for t in carol["touchpoints"]] == ["carol-search", "bob-ad", "carol-mail"]


@pytest.mark.parametrize(
    ("config", "landing", "answer", "order", "model"),
    [
        # Under strip = "redirect" the gateway answers the landing with a 302 to its clean URL.
        (
            '[proxy]\nstrip = "redirect"\n',
            "/shoes?gclid=Cj0KCQ-1&size=42",
            (302, "/shoes?size=42"),
            "G-1",
            "linear",
        ),
        # The site answers /boots with 301 /boots/ (the gateway forwards it, the URL already clean).
        ("", "/boots?gclid=Cj0KCQ-1&size=42", (301, "/boots/?size=42"), "B-2", "last_touch"),
    ],
)
async def test_an_ad_click_answered_with_a_redirect_is_one_touchpoint(
    start_gateway: Any,
    upstream_server: Any,
    config: str,
    landing: str,
    answer: tuple[int, str],
    order: str,
    model: str,
) -> None:
    """The browser follows a redirect keeping the Referer (Fetch: a redirect changes no
    referrer). Each ad click was recorded twice, Paid Search and then an Organic Search
    referral, which took the last touch and half the ad's linear credit: under ``strip =
    "redirect"`` (our own 302) first, then (until 2026-12-05) after a site's own redirect."""
    env = {"SITE_JWT_SECRET": JWT_SECRET, "BILLING_SECRET": BILLING_SECRET}
    gw = await start_gateway(await upstream_server(site()), config + CONFIG, env=env)
    laptop = Device(gw)
    browser = {
        "User-Agent": FIREFOX,
        "Accept-Language": "en-GB,en;q=0.8",
        "Referer": "https://www.google.com/",
    }
    async with gw.session.get(gw.url + landing, headers={**HTML, **browser}, allow_redirects=False) as resp:
        assert (resp.status, resp.headers["Location"]) == answer
        laptop.cookies.update({name: morsel.value for name, morsel in resp.cookies.items()})
    assert await laptop.request("GET", answer[1], **browser) == 200
    assert await laptop.form("/checkout", f"order={order}") == 303

    touchpoints = (await gw.api("/api/touchpoints"))["items"]
    assert [(t["channel"], t["click_id"]) for t in touchpoints] == [("Paid Search", "Cj0KCQ-1")]
    report = await gw.api("/api/attribution", model=model, conversion="purchase")
    assert [(r["group"], r["value"]) for r in report["rows"]] == [("Paid Search", 99.9)]


async def test_reloading_a_landing_is_one_touchpoint(start_gateway: Any, upstream_server: Any) -> None:
    """A visitor loads an ad's landing three times (F5, Back to it, a restored tab), then lands
    from a newsletter, and buys: each reload was a Paid Search touchpoint, which took 75 % under
    ``linear``, and a creator's link reloaded counted a click per load in payouts. The same
    tracked values within ``campaign.repeat_seconds`` are one arrival; the site still sees the
    clean URL every time, and a reload burst still counts in bot scoring's velocity windows."""
    # A script clicks faster than a person reads: keep the behaviour signals out of this test.
    quiet = CONFIG + "\n[bots.weights]\ninhuman_cadence = 0\nno_assets = 0\n"
    env = {"SITE_JWT_SECRET": JWT_SECRET, "BILLING_SECRET": BILLING_SECRET}
    gw = await start_gateway(await upstream_server(site()), quiet, env=env)
    laptop, phone = Device(gw), Device(gw)
    firefox = {"User-Agent": FIREFOX, "Accept-Language": "en-GB,en;q=0.8"}
    browser = {**firefox, "Referer": "https://www.google.com/"}
    cookie = ""
    for _ in range(3):
        async with gw.session.get(
            gw.url + "/shoes?gclid=Cj0KCQ-1&size=42", headers={**HTML, **browser, "Cookie": cookie}
        ) as resp:
            assert await resp.text() == "<html>/shoes?size=42</html>"  # stripped each time
            if "gw_vid" in resp.cookies:
                cookie = f"gw_vid={resp.cookies['gw_vid'].value}"
                laptop.cookies["gw_vid"] = resp.cookies["gw_vid"].value
    assert (
        await laptop.request("GET", "/?utm_source=news&utm_medium=email&utm_campaign=dec", **firefox) == 200
    )
    assert await laptop.form("/checkout", "order=R-1") == 303
    insta = {**firefox, "Referer": "https://l.instagram.com/"}
    for _ in range(3):
        assert await phone.request("GET", "/?utm_source=instagram&creator_id=cr_ana", **insta) == 200
    assert await phone.form("/checkout", "order=R-2") == 303

    touchpoints = (await gw.api("/api/touchpoints"))["items"]
    assert sorted(t["channel"] for t in touchpoints) == ["Email", "Organic Social", "Paid Search"]
    report = await gw.api("/api/attribution", model="linear", conversion="purchase")
    credits = {r["group"]: r["value"] for r in report["rows"]}
    assert credits == {"Paid Search": 49.95, "Email": 49.95, "Organic Social": 99.9}
    payouts = await gw.api("/api/payouts")
    assert [(r["creator_id"], r["clicks"]) for r in payouts["rows"]] == [("cr_ana", 1)]
    async with gw.session.get(gw.admin_url + "/metrics", headers=AUTH) as resp:
        assert "gateway_landings_folded_total 4.0" in await resp.text()
