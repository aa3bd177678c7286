"""Privacy decisions in the identity and campaign addons: cookieless keys last one UTC day,
consent (from the request or set by the response) decides the ID cookie, Sec-GPC/DNT leave
only daily counts."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest
from multidict import CIMultiDict

from addons.campaign import Campaign
from addons.identity import Identity, cookie_value, new_visitor_id
from gateway.config import ConfigError
from gateway.daysalt import SALT_FD_ENV, DaySalt, HandedSalt
from gateway.events import DailyCount, Touchpoint
from gateway.pipeline import Context, Exchange, ResponseView
from tests.addons.conftest import FIXED_TS, configured, context, exchange

DOCUMENT = {"Accept": "text/html", "Sec-Fetch-Dest": "document", "User-Agent": "Mozilla/5.0 Test"}
CONSENT = """
[privacy]
consent_cookie = { name = "banner", yes = ["all", "stats"], no = ["none"] }
"""


def run(identity: Identity, ex: Exchange, response_headers: Mapping[str, str] | None = None) -> Exchange:
    identity.request(ex)
    ex.response = ResponseView(200, response_headers or {})
    identity.response(ex)
    return ex


def cookieless_key(identity: Identity, hours: float, **kwargs: object) -> str:
    ex = exchange("/landing?utm_source=x", headers=DOCUMENT, **kwargs)  # type: ignore[arg-type]
    ex.request.ts = FIXED_TS + timedelta(hours=hours)
    run(identity, ex)
    assert ex.set_cookies == []  # never a cookie in cookieless mode
    assert ex.visitor is not None and ex.visitor.consent == "cookieless"
    return ex.visitor.key


def test_cookieless_key_lasts_the_day_and_not_longer() -> None:
    identity = configured(Identity, '[identity]\nmode = "cookieless"\n')
    # FIXED_TS is 12:00 UTC: -11 h and +11 h are the same UTC day, +13 h the next one.
    morning, evening = cookieless_key(identity, -11), cookieless_key(identity, 11)
    assert morning == evening
    tomorrow = cookieless_key(identity, 13)
    assert tomorrow != morning
    assert cookieless_key(identity, 14) == tomorrow
    # The first day's salt is gone: a late request from it does not link back to it.
    assert cookieless_key(identity, 11) != morning


def test_cookieless_key_differs_per_ip_agent_and_host() -> None:
    identity = configured(Identity, '[identity]\nmode = "cookieless"\n')
    base = cookieless_key(identity, 0)
    assert cookieless_key(identity, 0, host="other.example") != base
    ex = exchange("/", headers={**DOCUMENT, "User-Agent": "Other"})
    assert run(identity, ex).visitor.key != base  # type: ignore[union-attr]
    ex = exchange("/", headers=DOCUMENT)
    ex.request.client_ip = "198.51.100.1"
    assert run(identity, ex).visitor.key != base  # type: ignore[union-attr]


def test_cookieless_salt_is_per_process_not_derived_from_the_secret() -> None:
    ctx = context('[identity]\nmode = "cookieless"\n')
    first, second = configured(Identity, ctx=ctx), configured(Identity, ctx=ctx)
    assert cookieless_key(first, 0) != cookieless_key(second, 0)


def test_workers_of_one_supervisor_key_a_visitor_alike_every_day() -> None:
    """A supervisor's workers key with the salt it writes them: a visitor whose requests reach
    two workers is one visitor. Each day's salt is drawn anew (a salt read from memory tells
    nothing of another day's); a worker keys with the day before's until the new one arrives.
    A reload (a new chain, the process's salt) keeps the day's keys."""
    supervisor = DaySalt()
    first = supervisor.record()
    toml = '[identity]\nmode = "cookieless"\n'
    workers = []
    for _ in range(3):
        salt = DaySalt(handed=True)
        salt.take(first)
        workers.append(configured(Identity, ctx=dataclasses.replace(context(toml), salt=salt)))
    reloaded = configured(Identity, ctx=dataclasses.replace(context(toml), salt=workers[0].salt))
    hours = (datetime.now(UTC) - FIXED_TS).total_seconds() / 3600  # today: the day handed over
    today = {cookieless_key(w, hours) for w in [*workers, reloaded]}
    assert len(today) == 1
    # Past midnight, before the supervisor's new salt arrives: the day before's, still alike.
    assert {cookieless_key(w, hours + 24) for w in workers} == today
    old = supervisor.salt
    supervisor.on(supervisor.day + timedelta(days=1))  # type: ignore[operator]
    assert supervisor.salt != old
    twin = DaySalt(supervisor.day - timedelta(days=1), old)  # type: ignore[operator]
    assert twin.on(supervisor.day) != supervisor.salt  # type: ignore[arg-type]  # drawn, not derived
    second = supervisor.day.toordinal().to_bytes(8, "big") + supervisor.salt  # type: ignore[union-attr]
    for worker in workers:
        worker.salt.take(second)
    tomorrow = {cookieless_key(w, hours + 24) for w in workers}
    assert len(tomorrow) == 1 and tomorrow != today
    workers[0].salt.take(first)  # a day before the current one changes nothing
    assert cookieless_key(workers[0], hours + 24) in tomorrow


def test_a_salt_handed_over_is_read_whole_or_refused() -> None:
    with pytest.raises(ValueError, match="expected 40 bytes of salt, got 39"):
        DaySalt(handed=True).take(DaySalt().record()[:-1])


async def test_a_worker_takes_each_new_days_salt_from_its_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    supervisor = DaySalt()
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)  # as the supervisor's
    os.write(write_end, supervisor.record())
    monkeypatch.setenv(SALT_FD_ENV, str(read_end))
    handed = await asyncio.to_thread(HandedSalt.from_environ)  # before its loop runs, in a worker
    assert handed is not None and SALT_FD_ENV not in os.environ
    assert (handed.salt.day, handed.salt.salt) == (supervisor.day, supervisor.salt)
    loop = asyncio.get_running_loop()
    handed.follow(loop)
    supervisor.on(supervisor.day + timedelta(days=1))  # type: ignore[operator]
    record = supervisor.day.toordinal().to_bytes(8, "big") + supervisor.salt  # type: ignore[union-attr]
    os.write(write_end, record[:10])  # a record may come in pieces
    await asyncio.sleep(0.05)
    os.write(write_end, record[10:])
    async with asyncio.timeout(5):
        while handed.salt.salt != supervisor.salt:
            await asyncio.sleep(0.01)
    assert handed.salt.day == supervisor.day
    os.close(write_end)  # the supervisor is gone
    async with asyncio.timeout(5):
        while handed.fd != -1:
            await asyncio.sleep(0.01)


@pytest.mark.parametrize(
    ("banner", "population", "cookie"),
    [
        ("all", "cookie", True),
        ("stats", "cookie", True),
        ("none", "no_consent", False),
        (None, "no_consent", False),
    ],
)
def test_consent_from_the_request_decides_this_response(
    banner: str | None, population: str, cookie: bool
) -> None:
    identity = configured(Identity, CONSENT)
    ex = run(identity, exchange("/", headers=DOCUMENT, cookies={"banner": banner} if banner else None))
    assert ex.visitor is not None and ex.visitor.consent == population
    assert [c.name for c in ex.set_cookies] == (["gw_vid"] if cookie else [])


@pytest.mark.parametrize(
    ("toml", "name", "value", "population"),
    [
        # Cookiebot: one structured value per visitor, percent-encoded as the browser sends it.
        (
            'consent_cookie = { name = "CookieConsent", yes_contains = ["statistics:true"] }',
            "CookieConsent",
            "{stamp:%27abc%27%2Cnecessary:true%2Cpreferences:false%2Cstatistics:true%2Cmarketing:false}",
            "cookie",
        ),
        (
            'consent_cookie = { name = "CookieConsent", yes_contains = ["statistics:true"] }',
            "CookieConsent",
            "{stamp:%27abc%27%2Cnecessary:true%2Cpreferences:false%2Cstatistics:false%2Cmarketing:false}",
            "no_consent",
        ),
        # OneTrust: the performance group's flag inside its groups list.
        (
            'consent_cookie = { name = "OptanonConsent", yes_contains = ["C0002:1"] }',
            "OptanonConsent",
            "isGpcEnabled=0&datestamp=Sat+Dec+05+2026&groups=C0001%3A1%2CC0002%3A1%2CC0004%3A0",
            "cookie",
        ),
        (
            'consent_cookie = { name = "OptanonConsent", yes_contains = ["C0002:1"] }',
            "OptanonConsent",
            "isGpcEnabled=0&groups=C0001%3A1%2CC0002%3A0",
            "no_consent",
        ),
        # A yes value still counts beside the texts.
        ('consent_cookie = { name = "b", yes = ["all"], yes_contains = ["stats"] }', "b", "all", "cookie"),
    ],
)
def test_a_consent_platform_s_structured_value_is_read_by_what_it_contains(
    toml: str, name: str, value: str, population: str
) -> None:
    """Consent platforms write one value per visitor (a stamp, a date, each category's flag): no
    ``yes`` list could name it, so a site using Cookiebot or OneTrust had every visitor
    ``no_consent``. ``yes_contains`` reads the percent-decoded value for a text."""
    identity = configured(Identity, f"[privacy]\n{toml}\n")
    ex = run(identity, exchange("/", headers=DOCUMENT, cookies={name: value}))
    assert ex.visitor is not None and ex.visitor.consent == population
    assert [c.name for c in ex.set_cookies] == (["gw_vid"] if population == "cookie" else [])


def test_unknown_consent_value_means_no() -> None:
    identity = configured(Identity, CONSENT)
    ex = run(identity, exchange("/", headers=DOCUMENT, cookies={"banner": "maybe"}))
    assert ex.visitor is not None and ex.visitor.consent == "no_consent" and ex.set_cookies == []


@pytest.mark.parametrize(
    "deletion",
    [
        "banner=all; Path=/; Max-Age=0",
        "banner=all; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
        "banner=stats; Max-Age=-1",
    ],
)
def test_consent_cookie_deleted_by_the_response_is_withdrawn(deletion: str) -> None:
    """A banner's "withdraw" that clears its cookie by expiring it, value left in place: the
    browser drops the cookie, so the visitor has no consent. The value alone was read: a
    deletion of a ``yes`` cookie set (refreshed) the ID cookie."""
    identity = configured(Identity, CONSENT)
    vid = new_visitor_id()
    ex = exchange("/", headers=DOCUMENT, cookies={"banner": "all", "gw_vid": cookie_value(identity.mac, vid)})
    run(identity, ex, {"Set-Cookie": deletion})
    assert [(c.name, c.value, c.max_age) for c in ex.set_cookies] == [("gw_vid", "", 0)]


@pytest.mark.parametrize(
    "sent", ["banner=all; banner=none", "banner=none; banner=all", "banner=all; banner="]
)
def test_two_consent_cookies_that_disagree_are_no_consent(sent: str) -> None:
    """A browser holds two consent cookies of one name when they differ in Domain or Path (a
    banner that moved from host-only to the whole domain, or from /shop to /) and sends both,
    the older or longer-path one first. Consent is only what every one of them says: a refusal
    behind a stale yes is still a refusal (the first one alone decided, and tracked them)."""
    identity = configured(Identity, CONSENT)
    ex = run(identity, exchange("/", headers={**DOCUMENT, "Cookie": sent}))
    assert ex.visitor is not None and ex.visitor.consent == "no_consent"
    assert ex.set_cookies == []


def test_two_consent_cookies_that_both_say_yes_are_consent() -> None:
    identity = configured(Identity, CONSENT)
    ex = run(identity, exchange("/", headers={**DOCUMENT, "Cookie": "banner=all; banner=stats"}))
    assert ex.visitor is not None and ex.visitor.consent == "cookie"
    assert [c.name for c in ex.set_cookies] == ["gw_vid"]


@pytest.mark.parametrize(
    ("sent", "consent"),
    [
        ("old_banner=none; banner=all", "cookie"),
        ("banner=all; old_banner=none", "cookie"),
        ("banner=all; x=banner; banner=none", "no_consent"),
        ("banner=all; x=1; banner=none", "no_consent"),
    ],
)
def test_the_consent_cookie_s_name_inside_another_is_not_a_second_one(sent: str, consent: str) -> None:
    """The Cookie header is read a second time only when the consent cookie's name stands in it
    twice (every consenting request comes here); that text inside another cookie's name or a
    value is no second consent cookie, and a real second one is still read."""
    identity = configured(Identity, CONSENT)
    ex = run(identity, exchange("/", headers={**DOCUMENT, "Cookie": sent}))
    assert ex.visitor is not None and ex.visitor.consent == consent


def test_consent_given_by_the_response_sets_the_cookie_in_it() -> None:
    identity = configured(Identity, CONSENT)
    ex = exchange("/consent", method="POST", headers=DOCUMENT)
    run(identity, ex, {"Set-Cookie": "banner=all; Path=/; Max-Age=31536000"})
    [cookie] = ex.set_cookies
    assert cookie.name == "gw_vid" and cookie.max_age > 0
    assert ex.visitor is not None and ex.visitor.consent == "cookie"
    assert cookie.value == cookie_value(identity.mac, ex.visitor.id)


@pytest.mark.parametrize(
    ("target", "lines", "outcome"),
    [
        # Accept, the banner moving to the whole domain: the host-only one cleared, then set.
        ("/", ["banner=; Max-Age=0; Path=/", "banner=all; Domain=shop.example; Path=/"], "set"),
        # The same in the other order: the host-only one is another cookie, its deletion no withdrawal.
        ("/", ["banner=all; Domain=shop.example; Path=/", "banner=; Max-Age=0; Path=/"], "set"),
        # Withdrawal, either way round: what the browser keeps is a "none", or nothing.
        ("/", ["banner=none; Domain=shop.example; Path=/", "banner=; Max-Age=0; Path=/"], "expired"),
        ("/", ["banner=; Max-Age=0; Domain=shop.example; Path=/", "banner=none; Path=/"], "expired"),
        # One cookie written twice: the last line is what the browser keeps.
        ("/", ["banner=none; Path=/", "banner=all; Path=/"], "set"),
        ("/", ["banner=all; Path=/", "banner=all; Path=/; Max-Age=0"], "expired"),
        ("/consent/accept", ["banner=none", "banner=all; Path=/consent"], "set"),
        # Two kept side by side (Paths differ) that disagree: the browser sends both, no consent.
        ("/", ["banner=all; Path=/shop", "banner=none; Path=/"], "expired"),
        # A deletion of one the response did not set, and nothing set: a withdrawal.
        ("/", ["banner=; Max-Age=0; Path=/", "banner=; Max-Age=0; Domain=shop.example; Path=/"], "expired"),
        # A line the browser refuses on shop.example (another site's Domain, a public suffix) is
        # no cookie it holds: until 2026-12-06 it was read as a second one that disagreed.
        ("/", ["banner=none; Domain=other.example; Path=/", "banner=all; Path=/"], "set"),
        ("/", ["banner=all; Path=/", "banner=none; Domain=.com; Path=/"], "set"),
    ],
)
def test_two_set_cookie_lines_of_the_consent_cookie_read_as_the_browser_applies_them(
    target: str, lines: list[str], outcome: str
) -> None:
    """A banner that moves its cookie between host-only and the whole domain (or between Paths)
    clears one and sets the other in one response; the first line alone decided, so an accept
    that cleared first expired the ID cookie, and a withdrawal that set the stale "yes" again
    before deleting it kept the visitor tracked. The browser applies the lines in order, a
    cookie per Domain and Path: what it holds after them decides, every one of them a yes for
    consent, none left (deleted) a withdrawal."""
    identity = configured(Identity, CONSENT)
    vid = new_visitor_id()
    cookies = {"banner": "all", "gw_vid": cookie_value(identity.mac, vid)}
    ex = exchange(target, method="POST", headers=DOCUMENT, cookies=cookies)
    run(identity, ex, CIMultiDict(("Set-Cookie", line) for line in lines))
    kept = [(c.name, c.value, c.max_age) for c in ex.set_cookies]
    if outcome == "set":
        assert kept == [("gw_vid", cookie_value(identity.mac, vid), identity.max_age)]
    else:
        assert kept == [("gw_vid", "", 0)]


@pytest.mark.parametrize(
    "line",
    [
        # CookieYes's value, commas and all, as a server sets it (browsers keep commas).
        "cookieyes-consent=consentid:abc,consent:yes,necessary:yes,functional:no,analytics:yes; Path=/",
        # Go's net/http quotes a value holding a comma.
        'cookieyes-consent="consentid:abc,necessary:yes,analytics:yes"; Path=/',
    ],
)
def test_a_consent_value_with_commas_set_by_the_response_is_read_whole(line: str) -> None:
    """A visitor who consented changes their choices, and the site's answer sets the consent
    cookie again, still a yes. Its value was read up to its first comma (``consentid:abc``, no
    yes), so the update read as a withdrawal and expired the visitor's ID: their next page was
    a new visitor, their first touch lost. It is read whole, as the request's Cookie is."""
    identity = configured(
        Identity,
        '[privacy]\nconsent_cookie = { name = "cookieyes-consent", yes_contains = ["analytics:yes"] }\n',
    )
    vid = new_visitor_id()
    before = "consentid:abc,consent:yes,necessary:yes,functional:yes,analytics:yes"
    cookies = {"cookieyes-consent": before, "gw_vid": cookie_value(identity.mac, vid)}
    ex = exchange("/consent", method="POST", headers=DOCUMENT, cookies=cookies)
    run(identity, ex, {"Set-Cookie": line})
    assert [(c.name, c.value, c.max_age) for c in ex.set_cookies] == [
        ("gw_vid", cookie_value(identity.mac, vid), identity.max_age)
    ]


def test_consent_withdrawn_expires_the_cookie() -> None:
    identity = configured(Identity, CONSENT)
    vid = new_visitor_id()
    ex = exchange("/", headers=DOCUMENT, cookies={"banner": "all", "gw_vid": cookie_value(identity.mac, vid)})
    run(identity, ex, {"Set-Cookie": "banner=none; Path=/"})
    [cookie] = ex.set_cookies
    assert (cookie.name, cookie.value, cookie.max_age) == ("gw_vid", "", 0)
    # Later requests without consent but with the old cookie: ignored and expired again.
    ex = run(identity, exchange("/", headers=DOCUMENT, cookies={"gw_vid": cookie_value(identity.mac, vid)}))
    assert ex.visitor is not None and ex.visitor.id != vid and ex.visitor.consent == "no_consent"
    assert [(c.value, c.max_age) for c in ex.set_cookies] == [("", 0)]


@pytest.mark.parametrize(
    ("toml", "headers", "aggregate"),
    [
        ("", {"Sec-GPC": "1"}, True),
        ("[privacy]\nhonor_gpc = false\n", {"Sec-GPC": "1"}, False),
        ("", {"DNT": "1"}, False),
        ("[privacy]\nhonor_dnt = true\n", {"DNT": "1"}, True),
        ("", {"Sec-GPC": "0"}, False),
        # Sent twice, joined into one list (the mitmproxy host, or the aiohttp one when the
        # Cookie also repeats): an opt-out given at all wins.
        ("", {"Sec-GPC": "0, 1"}, True),
        ("", {"Sec-GPC": "1,1"}, True),
        ("", {"Sec-GPC": "0, 0"}, False),
        ("[privacy]\nhonor_dnt = true\n", {"DNT": "0, 1"}, True),
    ],
)
def test_gpc_and_dnt(toml: str, headers: dict[str, str], aggregate: bool) -> None:
    ctx = context(toml)
    identity, campaign = configured(Identity, ctx=ctx), configured(Campaign, ctx=ctx)
    ex = exchange("/landing?utm_source=News&utm_campaign=Spring", headers={**DOCUMENT, **headers})
    identity.request(ex)
    campaign.request(ex)
    ex.response = ResponseView(200, {})
    identity.response(ex)
    assert ex.aggregate_only is aggregate
    if aggregate:
        assert ex.visitor is None and ex.set_cookies == []
        [count] = ex.events
        assert count == DailyCount("2026-11-25", "news", "", "Spring", count.channel, "", 1)
    else:
        [touchpoint] = ex.events
        assert isinstance(touchpoint, Touchpoint) and touchpoint.consent == "cookie"
        assert [c.name for c in ex.set_cookies] == ["gw_vid"]


def test_touchpoint_carries_its_population() -> None:
    ctx: Context = context(CONSENT)
    identity, campaign = configured(Identity, ctx=ctx), configured(Campaign, ctx=ctx)
    ex = exchange("/landing?utm_source=x", headers=DOCUMENT, cookies={"banner": "none"})
    identity.request(ex)
    campaign.request(ex)
    [touchpoint] = ex.events
    assert isinstance(touchpoint, Touchpoint) and touchpoint.consent == "no_consent"


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[privacy]\nretention_days = -1\n", "privacy.retention_days: must be 0..36500, got -1"),
        (
            '[privacy]\nconsent_cookie = { name = "b" }\n',
            "privacy.consent_cookie.yes: must list at least one",
        ),
        (
            '[privacy]\nconsent_cookie = { name = "b", yes = ["a"], no = ["a"] }\n',
            "privacy.consent_cookie.no: values also listed in yes: ['a']",
        ),
        ('[privacy]\nconsent_cookie = { yes = ["a"] }\n', "privacy.consent_cookie.name: must be set"),
        (
            '[privacy]\nconsent_cookie = { name = "b", yes_contains = [" "] }\n',
            "privacy.consent_cookie.yes_contains[0]: must not be empty",
        ),
        (
            '[privacy]\nconsent_cookie = { yes_contains = ["a"] }\n',
            "privacy.consent_cookie.name: must be set",
        ),
        ('[identity]\nmode = "none"\n', "identity.mode"),
    ],
)
def test_privacy_config_errors_name_the_key(toml: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        context(toml)
    assert expected in str(err.value)
