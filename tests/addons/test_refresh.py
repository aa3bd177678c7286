"""Refreshing a returning visitor's ID cookie on a page view: the answers no shared cache gives
anyone else (RFC 9111), and at most once per visitor per ``identity.refresh_days``."""

from __future__ import annotations

from datetime import timedelta

import pytest
from multidict import CIMultiDict

from addons.identity import Identity, cookie_value, new_visitor_id
from addons.refresh import REMEMBERED, RecentRefreshes, for_this_visitor_only
from gateway.events import Touchpoint
from gateway.pipeline import Exchange, ResponseView
from tests.addons.conftest import FIXED_TS, configured, context, exchange

DOCUMENT = {"Accept": "text/html,application/xhtml+xml", "Sec-Fetch-Dest": "document"}
DAY = 86400.0


def _headers(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


@pytest.mark.parametrize(
    ("status", "request_headers", "response_headers", "only_this_visitor"),
    [
        # Cache-Control: no shared cache stores it.
        (200, {}, [("Cache-Control", "private")], True),
        (200, {}, [("Cache-Control", "max-age=0, PRIVATE")], True),
        (200, {}, [("cache-control", "No-Store")], True),
        (200, {}, [("Cache-Control", "public"), ("Cache-Control", "no-store")], True),
        # A shared cache stores the answer without its Set-Cookie lines (§5.2.2.7).
        (200, {}, [("Cache-Control", 'private="Set-Cookie", max-age=600')], True),
        (200, {}, [("Cache-Control", 'private="x-user, set-cookie"')], True),
        (200, {}, [("Cache-Control", 'private="x-user"')], False),
        # Stored, and given to others after a revalidation: its Set-Cookie too (§5.2.2.4).
        (200, {}, [("Cache-Control", "no-cache")], False),
        (200, {}, [("Cache-Control", 'no-cache="set-cookie"')], False),
        (200, {}, [("Cache-Control", "max-age=0, must-revalidate")], False),
        # Cacheable: explicitly, heuristically, or by nothing said.
        (200, {}, [("Cache-Control", "public, max-age=3600")], False),
        (200, {}, [], False),
        # The site's own Set-Cookie does not keep a cache from storing the answer (§7.3).
        (200, {}, [("Set-Cookie", "session=1; Path=/")], False),
        # A request with Authorization: not stored for others unless the answer allows it (§3.5).
        (200, {"Authorization": "Basic dTpw"}, [], True),
        (200, {"Authorization": "Basic dTpw"}, [("Cache-Control", "max-age=60")], True),
        (200, {"Authorization": "Basic dTpw"}, [("Cache-Control", "public")], False),
        (200, {"Authorization": "Basic dTpw"}, [("Cache-Control", "s-maxage=60")], False),
        (200, {"Authorization": "Basic dTpw"}, [("Cache-Control", "must-revalidate")], False),
        # Vary: only given to a request with the same Cookie header: this visitor's (§4.1).
        (200, {}, [("Vary", "Accept-Encoding, Cookie")], True),
        (200, {}, [("Vary", "accept-encoding"), ("vary", "COOKIE")], True),
        (200, {}, [("Vary", "*")], True),
        (200, {}, [("Vary", "Accept-Encoding")], False),
        # A CDN told by its own field (RFC 9213) reads it instead of Cache-Control: that field
        # must keep the answer from others too, unless Vary keeps it to this visitor's Cookie.
        (200, {}, [("Cache-Control", "private"), ("CDN-Cache-Control", "max-age=600")], False),
        (200, {}, [("Cache-Control", "no-store"), ("Cloudflare-CDN-Cache-Control", "max-age=60")], False),
        (200, {}, [("Cache-Control", "private"), ("CDN-Cache-Control", "no-store")], True),
        (200, {}, [("Cache-Control", "private"), ("cdn-cache-control", 'private="set-cookie"')], True),
        (200, {}, [("Cache-Control", "public"), ("CDN-Cache-Control", "private")], False),
        (200, {}, [("CDN-Cache-Control", "max-age=600"), ("Vary", "Cookie")], True),
        (200, {"Authorization": "Basic dTpw"}, [("CDN-Cache-Control", "max-age=60")], True),
        (200, {"Authorization": "Basic dTpw"}, [("CDN-Cache-Control", "public, max-age=60")], False),
        # A surrogate (a CDN) reads Surrogate-Control ahead of Cache-Control (W3C Edge
        # Architecture): only its no-store, for every surrogate a directive names, keeps it.
        (200, {}, [("Cache-Control", "private"), ("Surrogate-Control", "max-age=600")], False),
        (200, {}, [("Cache-Control", "private"), ("surrogate-control", "No-Store")], True),
        (200, {}, [("Cache-Control", "private"), ("Surrogate-Control", "no-store-remote")], False),
        (200, {}, [("Cache-Control", "private"), ("Surrogate-Control", "no-store, max-age=60;edge1")], False),
        (
            200,
            {},
            [
                ("Cache-Control", "private"),
                ("Surrogate-Control", "no-store, no-store;edge1, max-age=60;edge1"),
            ],
            True,
        ),
        (200, {}, [("Cache-Control", "public"), ("Surrogate-Control", "no-store")], False),
        (200, {}, [("Surrogate-Control", "max-age=600"), ("Vary", "Cookie")], True),
        (200, {"Authorization": "Basic dTpw"}, [("Surrogate-Control", "max-age=60")], False),
        # Redirects are answers like any other.
        (302, {}, [("Cache-Control", "private"), ("Location", "/account")], True),
        (301, {}, [("Location", "/new")], False),
        # A 304's fields update the copy a cache holds and gives others (§4.3.4): never.
        (304, {}, [("Cache-Control", "private")], False),
        (304, {}, [("Vary", "Cookie")], False),
    ],
)
def test_which_answers_no_shared_cache_gives_anyone_else(
    status: int,
    request_headers: dict[str, str],
    response_headers: list[tuple[str, str]],
    only_this_visitor: bool,
) -> None:
    request = {k.lower(): v for k, v in request_headers.items()}
    assert for_this_visitor_only(request, status, _headers(*response_headers)) is only_this_visitor


def test_a_plain_mapping_of_headers_is_read_too() -> None:
    """The importer's and a test's headers are a plain dict: one line each."""
    assert for_this_visitor_only({}, 200, {"cache-control": "private"})
    assert not for_this_visitor_only({}, 200, {"cache-control": "public"})


def test_recent_refreshes_once_per_period_and_bounded() -> None:
    recent = RecentRefreshes(days=1)
    now = FIXED_TS.timestamp()
    assert recent.due("a", now)
    recent.mark("a", now)
    assert not recent.due("a", now + DAY - 1)
    assert recent.due("a", now + DAY)
    assert recent.due("b", now)
    for i in range(REMEMBERED + 1):
        recent.mark(f"v{i}", now)
    assert len(recent) == REMEMBERED
    assert recent.due("v0", now)  # the oldest forgotten first: refreshed again, nothing lost
    assert not recent.due(f"v{REMEMBERED}", now)


def _page_view(identity: Identity, vid: str, key: bytes, ts_offset: float, cache_control: str) -> Exchange:
    ex = exchange(cookies={"gw_vid": cookie_value(key, vid)}, headers=DOCUMENT)
    ex.request.ts = FIXED_TS + timedelta(seconds=ts_offset)
    identity.request(ex)
    ex.response = ResponseView(200, _headers(("Cache-Control", cache_control)))
    identity.response(ex)
    return ex


def test_a_returning_visitors_private_page_refreshes_once_a_day() -> None:
    ctx = context()
    identity = configured(Identity, ctx=ctx)
    vid, key = new_visitor_id(), ctx.keys.cookie_mac
    first = _page_view(identity, vid, key, 0, "private")
    assert [(c.value, c.max_age, c.shared_safe) for c in first.set_cookies] == [
        (cookie_value(key, vid), 395 * 86400, True)
    ]
    assert _page_view(identity, vid, key, 3600, "no-store").set_cookies == []
    assert len(_page_view(identity, vid, key, DAY, "private").set_cookies) == 1
    # A cacheable page never, even when due.
    assert _page_view(identity, new_visitor_id(), key, 0, "public, max-age=60").set_cookies == []


def test_an_asset_never_refreshes() -> None:
    ctx = context()
    identity = configured(Identity, ctx=ctx)
    ex = exchange(
        "/app.js",
        cookies={"gw_vid": cookie_value(ctx.keys.cookie_mac, new_visitor_id())},
        headers={"Sec-Fetch-Dest": "script"},
    )
    identity.request(ex)
    ex.response = ResponseView(200, _headers(("Cache-Control", "private")))
    identity.response(ex)
    assert ex.set_cookies == []


def test_refresh_days_zero_refreshes_on_landings_only() -> None:
    ctx = context("[identity]\nrefresh_days = 0\n")
    identity = configured(Identity, ctx=ctx)
    assert _page_view(identity, new_visitor_id(), ctx.keys.cookie_mac, 0, "private").set_cookies == []


def test_a_landings_refresh_counts_as_the_days_refresh() -> None:
    """A landing sets the cookie (a shared cache kept off by ``Cache-Control: private`` the host
    adds): the private page views after it that day add none."""
    ctx = context()
    identity = configured(Identity, ctx=ctx)
    vid, key = new_visitor_id(), ctx.keys.cookie_mac
    landing = exchange("/?utm_source=news", cookies={"gw_vid": cookie_value(key, vid)}, headers=DOCUMENT)
    identity.request(landing)
    landing.events.append(Touchpoint(id="x", ts="t", node="n", visitor_key=landing.visitor.key))
    landing.response = ResponseView(200, _headers())
    identity.response(landing)
    assert [c.shared_safe for c in landing.set_cookies] == [False]
    assert _page_view(identity, vid, key, 60, "private").set_cookies == []


def test_a_reload_keeps_the_memory() -> None:
    ctx = context()
    old = configured(Identity, ctx=ctx)
    vid, key = new_visitor_id(), ctx.keys.cookie_mac
    assert len(_page_view(old, vid, key, 0, "private").set_cookies) == 1
    new = configured(Identity, ctx=ctx)
    new.take_over(old)
    assert _page_view(new, vid, key, 60, "private").set_cookies == []
