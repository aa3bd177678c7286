"""Identity: visitor cookie minted, verified, rejected when forged; Set-Cookie planned right."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from multidict import CIMultiDict

from addons.identity import VERIFIED_CACHE, Identity, cookie_value, new_visitor_id, verify_cookie
from gateway.events import Touchpoint, VerdictChange
from gateway.keys import Mac
from gateway.pipeline import Cookie, ResponseView, Visitor
from tests.addons.conftest import configured, context, exchange, metric

DOCUMENT = {"Accept": "text/html,application/xhtml+xml", "Sec-Fetch-Dest": "document"}


def _touch(ex) -> None:
    ex.events.append(Touchpoint(id="x", ts="t", node="n", visitor_key=ex.visitor.key))


def test_cookie_round_trip() -> None:
    key = b"k" * 32
    vid = new_visitor_id()
    assert verify_cookie(key, cookie_value(key, vid)) == vid
    assert len(vid) == 22  # 128 bits, base64url


def test_the_cookie_value_keeps_its_definition() -> None:
    """Cookies browsers hold stay valid: ``v1.<id>.<tag>``, the tag the first 16 bytes of
    HMAC-SHA256(cookie key, ``v1.<id>``) in base64url without padding, whether the key is given
    as bytes or as its ``Mac``."""
    key, vid = b"k" * 32, "AAECAwQFBgcICQoLDA0ODw"
    tag = hmac.new(key, b"v1." + vid.encode(), hashlib.sha256).digest()[:16]
    expected = f"v1.{vid}.{base64.urlsafe_b64encode(tag).rstrip(b'=').decode()}"
    assert cookie_value(key, vid) == cookie_value(Mac(key), vid) == expected


def test_a_new_visitors_landing_plans_exactly_this_cookie() -> None:
    ctx = context()
    identity = configured(Identity, ctx=ctx)
    ex = exchange(headers=DOCUMENT, scheme="https")
    identity.request(ex)
    _touch(ex)
    identity.response(ex)
    assert ex.visitor is not None and ex.visitor.is_new and ex.visitor.consent == "cookie"
    value = cookie_value(ctx.keys.cookie_mac, ex.visitor.id)
    assert ex.set_cookies == [Cookie("gw_vid", value, 395 * 86400, "/", "", True, True, "Lax", False)]
    assert ex.visitor.key == ctx.keys.visitor_key(ex.visitor.id)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda v: v[:-1] + ("A" if v[-1] != "A" else "B"),  # edited tag
        lambda v: v.replace(v.split(".")[1], new_visitor_id()),  # swapped ID, old tag
        lambda v: "v2" + v[2:],  # unknown version
        lambda v: v + ".extra",
        lambda v: "",
        lambda v: "garbage",
        lambda v: "v1.é" + "a" * 21 + "." + "b" * 22,  # non-ASCII
        lambda v: v.rsplit(".", 1)[0] + ".é" + "b" * 21,  # non-ASCII tag: rejected, never raises
    ],
)
def test_forged_cookie_rejected(tamper) -> None:
    key = b"k" * 32
    assert verify_cookie(key, tamper(cookie_value(key, new_visitor_id()))) is None


def test_cookie_from_another_secret_rejected() -> None:
    vid = new_visitor_id()
    assert verify_cookie(b"a" * 32, cookie_value(b"b" * 32, vid)) is None


def test_valid_cookie_keeps_visitor() -> None:
    ctx = context()
    identity = configured(Identity, ctx=ctx)
    vid = new_visitor_id()
    ex = exchange(cookies={"gw_vid": cookie_value(ctx.keys.cookie_mac, vid)}, headers=DOCUMENT)
    identity.request(ex)
    assert ex.visitor.id == vid and not ex.visitor.is_new
    assert ex.visitor.key == ctx.keys.visitor_key(vid) != vid
    identity.response(ex)
    assert ex.set_cookies == []  # nothing to refresh without a landing


@pytest.mark.parametrize("stale", ["v1." + "a" * 22 + "." + "b" * 22, "", '"junk"'])
def test_a_good_cookie_behind_a_stale_one_of_the_same_name_keeps_the_visitor(stale: str) -> None:
    """A browser holding two ``gw_vid`` (a host-only one and a Domain one, after the operator
    set ``identity.domain``) sends both; a stale one first made every page load a new
    visitor."""
    ctx = context()
    identity = configured(Identity, ctx=ctx)
    vid = new_visitor_id()
    good = cookie_value(ctx.keys.cookie_mac, vid)
    ex = exchange(headers={**DOCUMENT, "Cookie": f"other=1; gw_vid={stale}; x=2; gw_vid={good}"})
    identity.request(ex)
    assert ex.visitor.id == vid and not ex.visitor.is_new
    assert metric(ctx, "gateway_cookies_rejected_total") == 0
    # None good among them: a new visitor, counted once.
    ex = exchange(headers={**DOCUMENT, "Cookie": f"gw_vid={stale}; gw_vid=v1.forged.tag"})
    identity.request(ex)
    assert ex.visitor.is_new
    assert metric(ctx, "gateway_cookies_rejected_total") == 1


def test_forged_cookie_replaced_and_counted() -> None:
    ctx = context()
    identity = configured(Identity, ctx=ctx)
    ex = exchange(cookies={"gw_vid": "v1." + "a" * 22 + "." + "b" * 22}, headers=DOCUMENT)
    identity.request(ex)
    assert ex.visitor.is_new
    identity.response(ex)
    [cookie] = ex.set_cookies
    assert verify_cookie(ctx.keys.cookie_mac, cookie.value) == ex.visitor.id
    assert metric(ctx, "gateway_cookies_rejected_total") == 1


def test_a_verified_cookie_is_remembered_and_a_forged_one_never_is() -> None:
    ctx = context()
    identity = configured(Identity, ctx=ctx)
    vid = new_visitor_id()
    good = cookie_value(ctx.keys.cookie_mac, vid)
    for _ in range(3):  # a page and its assets: one cookie, many requests
        ex = exchange(cookies={"gw_vid": good})
        identity.request(ex)
        assert ex.visitor.id == vid and not ex.visitor.is_new
    assert identity.verified == {good: vid}
    forged = good[:-1] + ("A" if good[-1] != "A" else "B")
    for n in range(1, 3):
        ex = exchange(cookies={"gw_vid": forged})
        identity.request(ex)
        assert ex.visitor.is_new and ex.visitor.id != vid
        assert metric(ctx, "gateway_cookies_rejected_total") == n  # checked, and counted, each time
    assert forged not in identity.verified


def test_the_verified_cookie_memory_is_bounded() -> None:
    ctx = context()
    identity = configured(Identity, ctx=ctx)
    values = [cookie_value(ctx.keys.cookie_mac, new_visitor_id()) for _ in range(VERIFIED_CACHE + 10)]
    for value in values:
        identity.request(exchange(cookies={"gw_vid": value}))
    assert len(identity.verified) == VERIFIED_CACHE
    assert values[0] not in identity.verified and values[-1] in identity.verified


def test_new_visitor_gets_cookie_on_page_load_not_on_assets() -> None:
    identity = configured(Identity)
    page = exchange(headers=DOCUMENT)
    identity.request(page)
    identity.response(page)
    assert len(page.set_cookies) == 1
    asset = exchange("/app.css", headers={"Accept": "text/css", "Sec-Fetch-Dest": "style"})
    identity.request(asset)
    identity.response(asset)
    assert asset.set_cookies == []


def test_landing_refreshes_existing_cookie() -> None:
    ctx = context()
    identity = configured(Identity, ctx=ctx)
    vid = new_visitor_id()
    ex = exchange(cookies={"gw_vid": cookie_value(ctx.keys.cookie_mac, vid)})
    identity.request(ex)
    _touch(ex)
    identity.response(ex)
    [cookie] = ex.set_cookies
    assert cookie.max_age == 395 * 86400
    assert verify_cookie(ctx.keys.cookie_mac, cookie.value) == vid


def test_a_rescore_of_earlier_touchpoints_refreshes_no_cookie() -> None:
    # A returning visitor's page view that re-scores their landing (a late bot signal) is no
    # landing: it got our Set-Cookie, and with it Cache-Control: private on the site's page.
    ctx = context()
    identity = configured(Identity, ctx=ctx)
    ex = exchange(cookies={"gw_vid": cookie_value(ctx.keys.cookie_mac, new_visitor_id())}, headers=DOCUMENT)
    identity.request(ex)
    ex.events.append(
        VerdictChange(
            id="y",
            ts="t",
            node="n",
            touchpoint_id="x",
            verdict="block",
            bot_score=60,
            reasons=["no_assets"],
            origin="rescore",
            note="no_assets",
        )
    )
    identity.response(ex)
    assert ex.set_cookies == []
    _touch(ex)  # the same request landing too: refreshed as any landing
    identity.response(ex)
    assert len(ex.set_cookies) == 1


@pytest.mark.parametrize(
    ("policy", "scheme", "secure"),
    [("auto", "https", True), ("auto", "http", False), ("always", "http", True), ("never", "https", False)],
)
def test_cookie_attributes(policy: str, scheme: str, secure: bool) -> None:
    identity = configured(
        Identity, f'[identity]\nsecure = "{policy}"\ndomain = "example.com"\nsamesite = "Strict"\n'
    )
    ex = exchange(headers=DOCUMENT, scheme=scheme, host="shop.example.com")
    identity.request(ex)
    identity.response(ex)
    [cookie] = ex.set_cookies
    assert (cookie.secure, cookie.httponly, cookie.samesite, cookie.domain, cookie.path) == (
        secure,
        True,
        "Strict",
        "example.com",
        "/",
    )


@pytest.mark.parametrize(("scheme", "samesite"), [("https", "None"), ("http", "Lax")])
def test_samesite_none_goes_only_with_secure(scheme: str, samesite: str) -> None:
    """Browsers drop a ``SameSite=None`` cookie that is not ``Secure`` (Chrome since 80): under
    ``secure = "auto"`` every plain-http page (a front proxy not in ``trusted_proxies``, a test
    site) was a new visitor. There the cookie goes ``Lax``, which such a page could have anyway."""
    identity = configured(Identity, '[identity]\nsecure = "auto"\nsamesite = "None"\n')
    ex = exchange(headers=DOCUMENT, scheme=scheme)
    identity.request(ex)
    identity.response(ex)
    [cookie] = ex.set_cookies
    assert (cookie.secure, cookie.samesite) == (scheme == "https", samesite)


@pytest.mark.parametrize(
    ("host", "domain"),
    [
        ("example.com", "example.com"),
        ("shop.example.com:8443", "example.com"),
        ("WWW.Example.COM", "example.com"),
        # A host written with the root's dot is another host to a browser (RFC 6265 §5.1.3:
        # "example.com" is no suffix of it): it refuses the Domain, so the cookie is host-only.
        ("www.example.com.", ""),
        ("example.com.:8443", ""),
        ("example.de", ""),  # another site behind the same gateway: host-only
        ("badexample.com", ""),
        ("[::1]:8080", ""),
        ("127.0.0.1", ""),
    ],
)
def test_the_cookie_domain_is_set_only_for_hosts_under_it(host: str, domain: str) -> None:
    """``identity.domain`` went on the cookie whatever the request's host: a browser refuses a
    Domain that does not cover the host, so on a second site behind the same gateway every
    landing was a new visitor."""
    identity = configured(Identity, '[identity]\ndomain = "example.com"\n')
    ex = exchange(headers=DOCUMENT, host=host)
    identity.request(ex)
    identity.response(ex)
    [cookie] = ex.set_cookies
    assert cookie.domain == domain


@pytest.mark.parametrize(
    ("origin", "host", "domain"),
    [
        ("https://shop.example.com:8443", "127.0.0.1:8080", "example.com"),
        # An origin outside the domain: host-only, whatever the request's Host says.
        ("https://example.de", "www.example.com", ""),
    ],
)
def test_the_cookie_domain_goes_by_the_public_origin_when_set(origin: str, host: str, domain: str) -> None:
    """Behind a front proxy that sends its own ``Host`` (nginx's default: the upstream's), the
    host the browser asked is ``proxy.public_origin``'s: the Domain went by the request's, so
    it was never set."""
    identity = configured(
        Identity, f'[identity]\ndomain = "example.com"\n[proxy]\npublic_origin = "{origin}"\n'
    )
    ex = exchange(headers=DOCUMENT, host=host)
    identity.request(ex)
    identity.response(ex)
    [cookie] = ex.set_cookies
    assert cookie.domain == domain


@pytest.mark.parametrize("toml", ['[proxy]\npublic_origin = "https://shop.example.com"\n', ""])
def test_an_opt_out_expires_the_host_only_cookie_too_under_a_domain(toml: str) -> None:
    """A cookie set before ``identity.domain`` applied (or before ``proxy.public_origin`` named
    the host) is host-only: a browser keeps it apart from the Domain one, so an expiry under the
    Domain alone left it, with its ID, after the visitor opted out (Sec-GPC)."""
    identity = configured(Identity, '[identity]\ndomain = "example.com"\n' + toml)
    host = "127.0.0.1:8080" if toml else "shop.example.com"
    ex = exchange(headers={**DOCUMENT, "Sec-GPC": "1"}, cookies={"gw_vid": "v1.old.tag"}, host=host)
    identity.request(ex)
    identity.response(ex)
    assert sorted((c.value, c.max_age, c.domain) for c in ex.set_cookies) == [
        ("", 0, ""),
        ("", 0, "example.com"),
    ]
    # No Domain applies: one expiry, host-only.
    identity = configured(Identity, "")
    ex = exchange(headers={**DOCUMENT, "Sec-GPC": "1"}, cookies={"gw_vid": "v1.old.tag"})
    identity.request(ex)
    identity.response(ex)
    assert [(c.value, c.max_age, c.domain) for c in ex.set_cookies] == [("", 0, "")]


def test_a_visitor_the_host_already_knows_is_kept() -> None:
    """The importer hands over the visitor of a log line; the cookie in the request is not read."""
    ctx = context()
    addon = configured(Identity, ctx=ctx)
    other = new_visitor_id()
    ex = exchange("/", cookies={"gw_vid": cookie_value(ctx.keys.cookie_mac, other)})
    known = Visitor(id="derived-visitor", is_new=False, hasher=ctx.keys.visitor_key)
    ex.visitor = known
    addon.request(ex)
    assert ex.visitor is known and ex.visitor.key == ctx.keys.visitor_key("derived-visitor")


def test_a_site_that_sets_a_cookie_of_our_name_is_named_once(caplog: pytest.LogCaptureFixture) -> None:
    """The site's own ``gw_vid`` replaces the visitor's ID in the browser: their next request is
    a new visitor, counted as a rejected cookie, which reads as forgery. The log says so, once."""
    ctx = context()
    identity = configured(Identity, ctx=ctx)
    vid = new_visitor_id()
    cookie = {"gw_vid": cookie_value(ctx.keys.cookie_mac, vid)}
    others = CIMultiDict([("Set-Cookie", "gw_vid_x=1; Path=/"), ("Set-Cookie", "session=gw_vid=2")])
    for headers in (others, {"set-cookie": "sgw_vid=1"}):
        ex = exchange(cookies=cookie, headers=DOCUMENT)
        identity.request(ex)
        ex.response = ResponseView(200, headers)
        identity.response(ex)
    assert not [r for r in caplog.records if r.name == "gateway.identity"]
    ours = CIMultiDict([("Set-Cookie", "a=1"), ("set-cookie", " gw_vid=site-value; Path=/")])
    for _ in range(2):
        ex = exchange("/account", cookies=cookie, headers=DOCUMENT)
        identity.request(ex)
        ex.response = ResponseView(200, ours)
        identity.response(ex)
    [record] = [r for r in caplog.records if r.name == "gateway.identity"]
    assert record.levelname == "WARNING"
    assert record.getMessage().startswith(
        "the site's answer to /account sets a cookie named 'gw_vid', identity.cookie_name's: the browser "
        "keeps it in place of the visitor's ID"
    )
    # A config reload's new addon goes on from the running one's: said once per process still.
    reloaded = configured(Identity, ctx=ctx)
    reloaded.take_over(identity)
    ex = exchange("/account", cookies=cookie, headers=DOCUMENT)
    reloaded.request(ex)
    ex.response = ResponseView(200, ours)
    reloaded.response(ex)
    assert len([r for r in caplog.records if r.name == "gateway.identity"]) == 1
