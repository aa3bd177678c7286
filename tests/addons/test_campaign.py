"""Campaign capture on a plain Exchange: what is captured, normalised, dropped and stripped."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import quote, unquote_plus, urljoin

import pytest
from multidict import CIMultiDict

from addons.campaign import Campaign, hostname, strip_query
from addons.identity import Identity
from gateway.pipeline import Exchange, ResponseView
from tests.addons.conftest import FIXED_TS, configured, context, exchange, metric

DOCUMENT = {"Sec-Fetch-Dest": "document"}


def answer(ex: Exchange, *addons: Any) -> None:
    """The response hooks of ``addons`` on the chain's own reply (a host answers it so, the
    response hooks seeing it), else on a plain 200."""
    ex.response = ResponseView(ex.reply.status, ex.reply.headers) if ex.reply else ResponseView(200, {})
    for addon in addons:
        addon.response(ex)


def run(target: str, toml: str = "", **kwargs):
    ctx = context(toml)
    identity, campaign = configured(Identity, ctx=ctx), configured(Campaign, ctx=ctx)
    ex = exchange(target, **kwargs)
    identity.request(ex)
    campaign.request(ex)
    return ex, ctx


def test_utm_landing_becomes_touchpoint_and_is_stripped() -> None:
    ex, _ = run(
        "/p?a=1&utm_source=%20News%20&utm_medium=EMAIL&utm_campaign=Black+Friday"
        "&utm_term=t&utm_content=c&utm_id=42&b=2"
    )
    [tp] = ex.events
    assert (tp.source, tp.medium, tp.campaign, tp.term, tp.content) == (
        "news",
        "email",
        "Black Friday",
        "t",
        "c",
    )
    assert tp.raw_params["utm_id"] == "42"
    assert tp.visitor_key == ex.visitor.key
    assert tp.landing_path == "/p"
    assert tp.ts == "2026-11-25T12:00:00.000000Z"
    assert ex.upstream_query == "a=1&b=2"


def test_a_key_is_read_decoded_as_a_query_parser_reads_it() -> None:
    """The hook splits and decodes the query itself (``split_query``'s rules, inline): an encoded
    or plus-joined key is the key it decodes to, case aside, and the pieces kept go upstream
    byte for byte."""
    ex, _ = run("/p?utm%5Fsource=News&UTM_Medium=Email&utm_campaign=a+b&utm_x+y=1&c=%41+&d")
    [tp] = ex.events
    assert (tp.source, tp.medium, tp.campaign) == ("news", "email", "a b")
    assert tp.raw_params == {
        "utm_source": "news",
        "utm_medium": "email",
        "utm_campaign": "a b",
        "utm_x y": "1",
    }
    assert ex.upstream_query == "c=%41+&d"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("utm_source=google&utm_medium=cpc%E2%80%8B", ("google", "cpc", "Paid Search")),  # ZWSP after
        ("utm_source=google&utm_medium=%EF%BB%BFcpc", ("google", "cpc", "Paid Search")),  # a BOM before
        (
            "utm_source=%E2%81%A0facebook&utm_medium=paid_social%20%E2%80%8B",
            ("facebook", "paid_social", "Paid Social"),
        ),
        ("utm_source=google&utm_medium=c%E2%80%8Bpc", ("google", "cpc", "Paid Search")),  # within: removed
        ("utm_source=google&utm_medium=c%EF%BB%BFp%E2%81%A0c", ("google", "cpc", "Paid Search")),
        ("utm_source=google&utm_medium=c%C2%ADpc", ("google", "cpc", "Paid Search")),  # a soft hyphen
    ],
)
def test_an_invisible_character_in_a_value_is_removed(query: str, expected: tuple) -> None:
    """A UTM link copied from a document or a chat often ends in a zero-width space (U+200B), or
    starts with a byte-order mark (U+FEFF, a spreadsheet's first cell): invisible, so the value
    looks right. It was dropped as unprintable, and ``utm_medium=cpc`` lost made a Google ad's
    click Organic Search. At either end they were trimmed from 2026-12-07; within a value
    (an editor's break opportunity, a soft hyphen) they are removed too, since 2026-12-07:
    the value is what the reader of the link sees."""
    ex, _ = run(f"/p?{query}", headers=DOCUMENT)
    [tp] = ex.events
    assert (tp.source, tp.medium, tp.channel) == expected
    assert ex.upstream_query == ""


@pytest.mark.parametrize(
    ("space", "name"),
    [
        ("%C2%A0", "NO-BREAK SPACE"),
        ("%E2%80%AF", "NARROW NO-BREAK SPACE"),
        ("%E2%80%89", "THIN SPACE"),
        ("%E3%80%80", "IDEOGRAPHIC SPACE"),
    ],
)
def test_a_unicode_space_within_a_value_is_a_space(space: str, name: str) -> None:
    """``summer sale`` pasted from a document, a mail or a spreadsheet often holds a no-break
    space (or a narrow, thin or ideographic one): the value reads right, and until 2026-12-07
    it was dropped as unprintable, the landing recorded without its campaign. Every Unicode
    space within a value is now U+0020, in its field and in ``raw_params`` alike; at either end
    it is trimmed, as before."""
    ex, ctx = run(f"/p?utm_campaign=summer{space}sale&utm_source={space}news{space}letter{space}&keep=1")
    [tp] = ex.events
    assert (tp.campaign, tp.source) == ("summer sale", "news letter"), name
    assert tp.raw_params == {"utm_campaign": "summer sale", "utm_source": "news letter"}
    assert ex.upstream_query == "keep=1"
    assert metric(ctx, "gateway_params_dropped_total", {"reason": "unprintable"}) == 0
    # A click ID is a token: a space in it, of any kind, is still dropped (counted).
    ex, ctx = run(f"/p?gclid=abc{space}def&utm_source=google")
    [tp] = ex.events
    assert tp.click_id is None
    assert metric(ctx, "gateway_params_dropped_total", {"reason": "unprintable"}) == 1


def test_raw_params_hold_only_printable_keys_of_at_most_64_characters() -> None:
    """Every valid tracked pair goes into ``raw_params`` under its key, unless the key is not
    printable or longer than 64 characters, a configured name's as another's (the first is
    known at start-up, the second asked of each key)."""
    long_click = "g" * 65
    ex, _ = run(
        f"/?utm_source=x&utm_{'k' * 60}=1&utm_{'k' * 61}=2&utm_x%01=3&{long_click}=abc&fbclid=f",
        f'[campaign]\nclick_ids = ["fbclid", "{long_click}"]',
    )
    [tp] = ex.events
    assert tp.raw_params == {"utm_source": "x", f"utm_{'k' * 60}": "1", "fbclid": "f"}
    assert (tp.click_id_kind, tp.click_id) == ("fbclid", "f")
    assert ex.upstream_query == ""


def test_c_prefix_wins_over_utm_by_default() -> None:
    ex, _ = run("/?utm_source=utm&c_source=c")
    assert ex.events[0].source == "c"


def test_precedence_follows_prefix_order() -> None:
    ex, _ = run("/?utm_source=utm&c_source=c", '[campaign]\nprefixes = ["utm_", "c_"]\n')
    assert ex.events[0].source == "utm"


def test_click_ids_creator_and_sub_id() -> None:
    ex, _ = run("/?fbclid=FB.1-x_y&gclid=G123&creator_id=anna&sub_id=story-2")
    [tp] = ex.events
    assert (tp.click_id_kind, tp.click_id) == ("gclid", "G123")  # gclid listed first
    assert (tp.creator_id, tp.sub_id) == ("anna", "story-2")
    assert ex.upstream_query == ""


def test_parameter_names_are_case_insensitive() -> None:
    ex, _ = run("/?UTM_Source=x&GCLID=y")
    assert (ex.events[0].source, ex.events[0].click_id) == ("x", "y")


KELVIN = "%E2%84%AA"  # U+212A KELVIN SIGN, which str.lower() makes a "k"
DOTTED_I = "%C4%B0"  # U+0130, which str.lower() makes "i" and a combining dot


@pytest.mark.parametrize(
    "name",
    [f"mscl{KELVIN}id", f"MSCL{KELVIN}ID", f"irclic{KELVIN}id", f"gcl{DOTTED_I}d"],
)
def test_a_name_matches_in_ascii_letter_case_only(name: str) -> None:
    """``UTM_Source`` is ``utm_source``, but a letter outside ASCII is no ASCII letter in
    another case: a site's own ``msclKid`` written with the Kelvin sign is the site's, left in
    its URL and not recorded as Microsoft's click ID."""
    target = f"/p?{name}=abc&a=1"
    ex, _ = run(target, headers={"Referer": "https://shop.example" + target})
    assert (ex.events, ex.upstream_query, ex.upstream_headers) == ([], None, {})
    campaign = configured(Campaign, ctx=context())
    assert campaign.classify(unquote_plus(name)) is None
    socket = exchange(target, headers={"Referer": "https://shop.example" + target})
    campaign.websocket(socket)
    assert (socket.upstream_query, socket.upstream_headers) == (None, {})


def test_a_prefixed_name_keeps_its_letters_outside_ascii() -> None:
    """Another suffix is tracked whatever follows the prefix, and recorded under its name with
    only the ASCII letters lower-cased."""
    ex, _ = run(f"/p?UTM_{KELVIN}=1&C_{DOTTED_I}=2&a=1")
    [tp] = ex.events
    assert tp.raw_params == {"utm_\u212a": "1", "c_\u0130": "2"}
    assert ex.upstream_query == "a=1"


@pytest.mark.parametrize("query", ["utm_=x", "c_=1", "UTM_=x&C_", "utm%5F=x", "c_=&utm_=1"])
@pytest.mark.parametrize("strip", ["forward", "redirect"])
def test_a_bare_prefix_names_no_field_and_is_the_sites(query: str, strip: str) -> None:
    """``utm_`` or ``c_`` with nothing after it names no field: it is left in the URL, in a
    same-site Referer and on a WebSocket's, and records nothing."""
    target = f"/p?{query}&a=1"
    referer = {"Referer": "https://shop.example" + target}
    ex, _ = run(target, f'[proxy]\nstrip = "{strip}"\n', headers=referer)
    assert (ex.events, ex.reply, ex.upstream_query, ex.upstream_headers) == ([], None, None, {})
    campaign = configured(Campaign, ctx=context())
    assert [campaign.classify(p) for p in ("utm_", "c_", "UTM_")] == [None, None, None]
    socket = exchange(target, headers=referer)
    campaign.websocket(socket)
    assert (socket.upstream_query, socket.upstream_headers) == (None, {})


def test_a_bare_prefix_beside_tracking_pairs_stays() -> None:
    ex, _ = run("/p?utm_=x&utm_source=news&c_")
    [tp] = ex.events
    assert (tp.source, tp.raw_params) == ("news", {"utm_source": "news"})
    assert ex.upstream_query == "utm_=x&c_"


def test_a_prefix_that_extends_another_is_that_ones_suffix() -> None:
    """With prefixes ``c`` and ``c_``, ``c_`` is ``c`` and something after it: tracked."""
    ex, _ = run("/p?c_=1&c=2&a=1", '[campaign]\nprefixes = ["c", "c_"]\n')
    [tp] = ex.events
    assert tp.raw_params == {"c_": "1"}
    assert ex.upstream_query == "c=2&a=1"


@pytest.mark.parametrize(
    ("query", "source"),
    [
        ("utm_source=a&utm_source=b", "a"),
        ("utm_source=a&UTM_SOURCE=b&Utm_Source=c", "a"),
        ("utm_source=&utm_source=b", "b"),  # an empty value is no value
        ("utm_source=%FF&utm_source=b", "b"),  # nor is a dropped one
    ],
)
def test_a_repeated_parameter_the_first_valid_value_wins_everywhere(query: str, source: str) -> None:
    """The stored field and the raw params agree on it (raw_params kept the last one)."""
    ex, _ = run(f"/?{query}&gclid=g1&gclid=g2")
    [tp] = ex.events
    assert (tp.source, tp.raw_params["utm_source"]) == (source, source)
    assert (tp.click_id, tp.raw_params["gclid"]) == ("g1", "g1")
    assert ex.upstream_query == ""


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("utm_source=" + "a" * 201, "too_long"),
        ("utm_source=a%00b", "unprintable"),
        ("utm_source=a%0Ab", "unprintable"),
        ("utm_source=%FF%FE", "unprintable"),  # not UTF-8
        ("gclid=has%20space", "unprintable"),
        ("gclid=has%C2%A0space", "unprintable"),  # NO-BREAK SPACE
        ("gclid=has%E3%80%80space", "unprintable"),  # IDEOGRAPHIC SPACE
        ("utm_campaign=a%E2%80%A8b", "unprintable"),  # LINE SEPARATOR: no space, a line break
        ("utm_campaign=a%09b", "unprintable"),  # a tab
        ("utm_campaign=a%E2%80%AEb", "unprintable"),  # RIGHT-TO-LEFT OVERRIDE
        ("gclid=a%E2%80%8Db", "unprintable"),  # a click ID is no name
        ("gclid=" + "g" * 1001, "too_long"),  # a click ID's own bound
        ("creator_id=undefined", "placeholder"),  # a link builder's String(undefined)
        ("creator_id=%20NULL%09", "placeholder"),
        ("sub_id=%5Bobject+Object%5D", "placeholder"),
        ("gclid=undefined", "placeholder"),  # every such visitor one click: click_id_reuse
        ("fbclid=null", "placeholder"),
        ("msclkid=%5Bobject%20Object%5D", "placeholder"),
        ("utm_campaign=undefined", "placeholder"),  # a campaign named "undefined" in reports
        ("c_source=%20None%20", "placeholder"),
        ("utm_id=NaN", "placeholder"),  # another suffix: a landing of its own in raw_params
    ],
)
def test_invalid_values_dropped_counted_and_still_stripped(query: str, reason: str) -> None:
    ex, ctx = run(f"/?{query}&keep=1")
    assert ex.events == []
    assert ex.upstream_query == "keep=1"
    assert metric(ctx, "gateway_params_dropped_total", {"reason": reason}) == 1


def test_a_placeholder_creator_or_sub_id_is_no_creator() -> None:
    """A link builder's bug (``?creator_id=undefined``, ``sub_id=null``) made a creator named
    "undefined" (until 2026-12-07), credited with every landing so tagged and paid for them. It is
    no value, as a rule's user ID of ``undefined`` is: dropped and counted as an invalid creator ID
    is, and the landing recorded by its other tags, its channel theirs."""
    ex, ctx = run("/?utm_source=insta&utm_medium=social&creator_id=Undefined&sub_id=%20null%09&keep=1")
    [tp] = ex.events
    assert (tp.source, tp.creator_id, tp.sub_id, tp.channel) == ("insta", None, None, "Organic Social")
    assert tp.raw_params == {"utm_source": "insta", "utm_medium": "social"}
    assert ex.upstream_query == "keep=1"
    assert metric(ctx, "gateway_params_dropped_total", {"reason": "placeholder"}) == 2
    # The next valid value of the creator's parameters is taken, as after any value dropped.
    ex, _ = run("/?ref=undefined&creator_id=anna", '[campaign]\ncreator_ids = ["ref", "creator_id"]')
    assert [(tp.creator_id, tp.channel) for tp in ex.events] == [("anna", "Affiliates")]
    ex, _ = run("/?creator_id=undefinedness&sub_id=nullable")  # no placeholder: kept as sent
    assert [(tp.creator_id, tp.sub_id) for tp in ex.events] == [("undefinedness", "nullable")]


def test_a_placeholder_click_id_or_campaign_field_is_no_value() -> None:
    """A link builder's bug (``?gclid=undefined``, ``utm_campaign=undefined``) put the word in
    every link: each visitor so tagged shared one click ID (Paid Search on Google for a click that
    never was, and ``click_id_reuse`` for real people past the third), and reports had a campaign
    named "undefined" (until 2026-12-07). Dropped and counted, as a placeholder creator ID is; the
    landing recorded by its other tags, its channel theirs."""
    ex, ctx = run(
        "/?utm_source=news&utm_medium=email&utm_campaign=Undefined&utm_term=%5Bobject+Object%5D"
        "&gclid=undefined&fbclid=null&keep=1"
    )
    [tp] = ex.events
    assert (tp.source, tp.medium, tp.campaign, tp.term, tp.click_id_kind, tp.click_id, tp.channel) == (
        "news",
        "email",
        None,
        None,
        None,
        None,
        "Email",
    )
    assert tp.raw_params == {"utm_source": "news", "utm_medium": "email"}
    assert ex.upstream_query == "keep=1"
    assert metric(ctx, "gateway_params_dropped_total", {"reason": "placeholder"}) == 4
    # The next click ID listed is taken, as after any click ID dropped.
    ex, _ = run("/?gclid=NULL&msclkid=5f1e-real")
    assert [(tp.click_id_kind, tp.click_id, tp.channel) for tp in ex.events] == [
        ("msclkid", "5f1e-real", "Paid Search")
    ]
    # Only the whole value is a placeholder: words that hold one are kept as sent.
    ex, _ = run("/?utm_campaign=nullable&utm_source=nan_shop&gclid=undefinedX")
    assert [(tp.campaign, tp.source, tp.click_id) for tp in ex.events] == [
        ("nullable", "nan_shop", "undefinedX")
    ]


def test_a_dropped_value_is_said_at_debug_with_its_key_never_its_value(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``gateway_params_dropped_total{reason="too_long"}`` going up told the operator nothing
    of which parameter, on which page: at ``log.level = "debug"`` each drop is a line naming the
    key, the path and the rule (the value may be anything, and is left out)."""
    with caplog.at_level("DEBUG", logger="gateway.campaign"):
        run("/shoes?utm_campaign=" + "secret" * 40 + "&utm_source=a%01b&keep=1")
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.campaign"]
    assert lines == [
        "tracking value dropped on /shoes: utm_campaign longer than campaign.max_value_length"
        ' (gateway_params_dropped_total{reason="too_long"})',
        "tracking value dropped on /shoes: utm_source not printable (a control character, a space in a"
        ' click ID, bytes not UTF-8) (gateway_params_dropped_total{reason="unprintable"})',
    ]
    assert "secret" not in caplog.text


@pytest.mark.parametrize("kind", ["ttclid", "fbclid", "gclid"])
def test_a_click_id_longer_than_max_value_length_is_kept(kind: str) -> None:
    """TikTok's ttclid and Meta's fbclid (with its ``_aem_`` part) pass 200 characters, the
    default ``campaign.max_value_length``: such an ad click was dropped as too long, and a landing
    tagged with nothing else (TikTok's in-app browser sends no Referer) recorded no touchpoint at
    all. A click ID is an ad platform's token: it has a bound of its own, 1000 characters."""
    click_id = "E.C.P." + "x" * 254
    ex, ctx = run(f"/p?{kind}={click_id}&keep=1", "[campaign]\nmax_value_length = 100\n")
    [tp] = ex.events
    assert (tp.click_id_kind, tp.click_id) == (kind, click_id)
    assert ex.upstream_query == "keep=1"
    assert metric(ctx, "gateway_params_dropped_total", {"reason": "too_long"}) == 0
    # max_value_length still bounds the other values, and a larger one bounds click IDs too
    ex, _ = run("/p?utm_source=" + "s" * 101, "[campaign]\nmax_value_length = 100\n")
    assert ex.events == []
    ex, _ = run(f"/p?{kind}=" + "c" * 1500, "[campaign]\nmax_value_length = 2000\n")
    assert [tp.click_id_kind for tp in ex.events] == [kind]


@pytest.mark.parametrize(
    "name",
    [
        "می‌خواهم",  # Persian "I want", with its ZWNJ
        "👨‍👩‍👧",  # one family emoji, joined by ZWJs
    ],
)
def test_a_name_written_with_zero_width_joiners_is_kept(name: str) -> None:
    """Until 2026-12-04 a campaign written in Persian as it should be (U+200C between the
    parts of a word) or a joined emoji (U+200D) was dropped as unprintable: its landing was
    recorded without the campaign, and its credit went to (none)."""
    ex, ctx = run(f"/?utm_campaign={quote(name)}&utm_source={quote(name)}&creator_id={quote(name)}")
    [tp] = ex.events
    assert (tp.campaign, tp.source, tp.creator_id) == (name, name, name)
    assert metric(ctx, "gateway_params_dropped_total", {"reason": "unprintable"}) == 0


def test_allowed_sources() -> None:
    ex, ctx = run("/?utm_source=Evil&utm_medium=cpc", '[campaign]\nallowed_sources = ["google"]\n')
    [tp] = ex.events
    assert tp.source is None and tp.medium == "cpc"
    assert metric(ctx, "gateway_params_dropped_total", {"reason": "source_not_allowed"}) == 1


def test_empty_values_ignored() -> None:
    ex, _ = run("/?utm_source=&utm_medium=%20")
    assert ex.events == [] and ex.upstream_query == ""


def test_plain_request_untouched() -> None:
    ex, _ = run("/shop?page=2&sort=price")
    assert ex.events == [] and ex.upstream_query is None and ex.upstream_headers == {}


def test_external_referrer_on_page_load_is_a_touchpoint() -> None:
    ex, _ = run("/article", headers={**DOCUMENT, "Referer": "https://www.Google.com/search?q=x"})
    [tp] = ex.events
    assert tp.referrer_host == "www.google.com" and tp.source is None


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Dest": "image", "Referer": "https://google.com/"},  # not a page load
        {**DOCUMENT, "Referer": "https://shop.example/other"},  # same site
        {**DOCUMENT, "Referer": "not a url"},
    ],
)
def test_no_referral_touchpoint(headers) -> None:
    ex, _ = run("/article", headers=headers)
    assert ex.events == []


def test_referrals_can_be_turned_off() -> None:
    ex, _ = run(
        "/a",
        "[campaign]\nrecord_referrals = false\n",
        headers={**DOCUMENT, "Referer": "https://news.example/"},
    )
    assert ex.events == []


def test_same_site_referer_is_cleaned() -> None:
    ex, _ = run(
        "/style.css",
        headers={"Referer": "https://shop.example/landing?utm_source=x&page=2&gclid=abc"},
    )
    assert ex.upstream_headers == {"referer": "https://shop.example/landing?page=2"}


def test_external_referer_left_alone() -> None:
    ex, _ = run("/x.css", headers={"Referer": "https://other.example/?utm_source=x"})
    assert "referer" not in ex.upstream_headers


@pytest.mark.parametrize(
    ("target", "referer"),
    [
        ("/ws?room=1&utm_source=x&gclid=abc&creator_id=anna&sub_id=s&c_campaign=y", ""),
        ("/ws?utm_source=x", "https://shop.example/chat?utm_source=x&page=2"),
        ("/ws?a=%2B%26&&UTM_Medium=y&b", "https://other.example/?utm_source=x"),
        ("/ws?room=1", "/relative?gclid=1"),
    ],
)
@pytest.mark.parametrize("strip", ["forward", "redirect"])
def test_websocket_upgrade_is_stripped_as_a_request_is_but_not_recorded(
    target: str, referer: str, strip: str
) -> None:
    """A WebSocket upgrade loses the pairs a request loses (inline even under ``redirect``:
    a WebSocket client follows no redirect) and records nothing."""
    ctx = context(f'[proxy]\nstrip = "{strip}"\n')
    campaign = configured(Campaign, ctx=ctx)
    headers = {"Referer": referer} if referer else {}
    as_request, _ = run(target, headers=headers)
    ex = exchange(target, headers=headers)
    campaign.websocket(ex)
    assert (ex.upstream_query, ex.upstream_headers) == (
        as_request.upstream_query,
        as_request.upstream_headers,
    )
    assert (ex.events, ex.reply, ex.set_cookies) == ([], None, [])


def test_websocket_upgrade_untouched_with_strip_off() -> None:
    campaign = configured(Campaign, ctx=context('[proxy]\nstrip = "off"\n'))
    ex = exchange("/ws?utm_source=x", headers={"Referer": "https://shop.example/?gclid=1"})
    campaign.websocket(ex)
    assert (ex.upstream_query, ex.upstream_headers) == (None, {})


def test_redirect_mode_replies_with_clean_url() -> None:
    ex, _ = run("/p?utm_source=x&a=1", '[proxy]\nstrip = "redirect"\n')
    assert ex.reply is not None and ex.reply.status == 302
    assert ex.reply.headers["location"] == "/p?a=1"
    assert len(ex.events) == 1


@pytest.mark.parametrize(
    ("target", "location"),
    [
        ("//evil.example/?utm_source=x", "/.//evil.example/"),
        ("//evil.example?utm_source=x&a=1", "/.//evil.example?a=1"),
        ("/\\evil.example/?utm_source=x", "/./\\evil.example/"),
        ("///evil.example?utm_source=x", "/.///evil.example"),
        ("/%2F%2Fevil.example/?utm_source=x", "/%2F%2Fevil.example/"),
        ("/p//q?utm_source=x", "/p//q"),
    ],
)
def test_redirect_mode_never_leaves_the_site(target: str, location: str) -> None:
    """A path starting ``//`` (or ``/\\``, read by a browser as ``//``) was sent back as it came:
    ``Location: //evil.example/``, which a browser follows to evil.example."""
    ex, _ = run(target, '[proxy]\nstrip = "redirect"\n')
    assert ex.reply is not None and ex.reply.headers["location"] == location
    assert urljoin("https://shop.example/", location).startswith("https://shop.example/")


@pytest.mark.parametrize(("target", "location"), [("/p?utm_source=x&&", "/p"), ("/p?&&gclid=1&a", "/p?&&a")])
def test_redirect_mode_drops_a_query_of_separators_only(target: str, location: str) -> None:
    """The address bar showed ``/p?&``: the tracking pair went, its separators stayed."""
    ex, _ = run(target, '[proxy]\nstrip = "redirect"\n')
    assert ex.reply is not None and ex.reply.headers["location"] == location


def test_redirect_mode_forwards_posts_clean() -> None:
    ex, _ = run("/p?utm_source=x", '[proxy]\nstrip = "redirect"\n', method="POST")
    assert ex.reply is None and ex.upstream_query == ""


def test_off_mode_keeps_url_but_records() -> None:
    ex, _ = run("/p?utm_source=x", '[proxy]\nstrip = "off"\n')
    assert ex.upstream_query is None and len(ex.events) == 1


def test_raw_params_are_bounded() -> None:
    query = "&".join(f"utm_x{i}=v" for i in range(100))
    ex, _ = run(f"/?utm_source=s&{query}")
    assert len(ex.events[0].raw_params) <= 32


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a=1&utm_source=x&b=%2F+c", "a=1&b=%2F+c"),
        ("q=a+b&q=c&utm_source=x&z=%zz", "q=a+b&q=c&z=%zz"),
        ("utm_source=x", ""),
        ("UTM_SOURCE=x&k", "k"),
        ("%75tm_source=x&k=1", "k=1"),  # percent-encoded name is still the parameter
        ("utm_source=x&&", ""),  # only separators left: no query, as with nothing left
        ("&utm_source=x&", ""),
        ("a=1&&utm_source=x", "a=1&"),  # a parameter left: the visitor's pieces byte for byte
    ],
)
def test_strip_query_keeps_raw_pieces(raw: str, expected: str) -> None:
    c = configured(Campaign)
    assert strip_query(raw, c.is_tracked)[0] == expected


def test_values_are_trimmed_and_the_length_limit_counts_after_trimming() -> None:
    ex, ctx = run("/?utm_source=%20%20news%20&utm_campaign=%20" + "a" * 200 + "%20")
    [tp] = ex.events
    assert (tp.source, tp.campaign) == ("news", "a" * 200)
    assert metric(ctx, "gateway_params_dropped_total", {"reason": "too_long"}) == 0


@pytest.mark.parametrize(
    ("host", "expected"),
    [("Shop.Example:8080", "shop.example"), ("[::1]:80", "::1"), ("example.com", "example.com")],
)
def test_hostname(host: str, expected: str) -> None:
    assert hostname(host) == expected


@pytest.mark.parametrize(
    ("target", "headers", "channel"),
    [
        ("/?utm_source=newsletter&utm_medium=email", {}, "Email"),
        ("/?utm_source=chatgpt.com", {}, "AI Assistants"),
        ("/?gclid=abc", {}, "Paid Search"),
        ("/?creator_id=anna", {}, "Affiliates"),
        ("/a", {**DOCUMENT, "Referer": "https://www.google.de/"}, "Organic Search"),
        ("/a", {**DOCUMENT, "Referer": "https://perplexity.ai/search/x"}, "AI Assistants"),
        ("/a", {**DOCUMENT, "Referer": "https://news.example/"}, "Referral"),
        ("/a", {**DOCUMENT, "Referer": "android-app://com.google.android.gm/"}, "Email"),  # Gmail app
        (
            "/a",
            {
                **DOCUMENT,
                "Referer": "android-app://com.google.android.googlequicksearchbox/https/www.google.com",
            },
            "Organic Search",
        ),
        ("/a", {**DOCUMENT, "Referer": "https://news.google.com/"}, "Referral"),
    ],
)
def test_touchpoints_carry_their_channel(target: str, headers: dict[str, str], channel: str) -> None:
    ex, _ = run(target, headers=headers)
    [tp] = ex.events
    assert tp.channel == channel


@pytest.mark.parametrize(
    "referer",
    [
        "https://checkout.stripe.com/c/pay/cs_live_123",
        "https://www.paypal.com/checkoutnow?token=x",
        "https://checkoutshopper-live.adyen.com/checkoutshopper/",
        "https://blog.example.com/post",  # same registrable domain as shop.example.com
        "https://www.other-shop.de/",  # channels.own_domains
        "https://acs.pay.example-bank.com/3ds",  # channels.payment_gateways
        "https://shop.example.com/cart",  # the apex
        "https://hooks.stripe.com/3d_secure_2/hosted",
        "https://centinelapi.cardinalcommerce.com/V1/Cruise/TermRedirection",  # 3-D Secure
        "https://accounts.google.com/",  # "Sign in with Google"
        "https://appleid.apple.com/",
    ],
)
def test_payment_returns_and_self_referrals_record_no_touchpoint(referer: str) -> None:
    toml = '[channels]\nown_domains = ["other-shop.de"]\npayment_gateways = ["pay.example-bank.com"]\n'
    ex, _ = run("/thank-you", toml, headers={**DOCUMENT, "Referer": referer}, host="www.shop.example.com")
    assert ex.events == []


def test_a_tagged_landing_from_a_payment_gateway_still_counts_by_its_tags() -> None:
    headers = {**DOCUMENT, "Referer": "https://checkout.stripe.com/pay"}
    ex, _ = run("/?utm_source=newsletter&utm_medium=email", headers=headers)
    [tp] = ex.events
    assert tp.channel == "Email" and tp.referrer_host == "checkout.stripe.com"


def test_remembered_channel_depends_on_the_site_and_every_value() -> None:
    ctx = context()
    identity, campaign = configured(Identity, ctx=ctx), configured(Campaign, ctx=ctx)
    referer = {"Referer": "https://blog.shop.com/post", **DOCUMENT}

    def channel(target: str, host: str = "www.shop.com") -> str:
        ex = exchange(target, headers=referer, host=host)
        identity.request(ex)
        campaign.request(ex)
        return ex.events[0].channel

    # The same values twice from the site's own blog, then from another site's: the channel the
    # first landing's site gave is not reused for the other site's.
    assert channel("/?utm_campaign=x") == channel("/?utm_campaign=x") == "Internal"
    assert channel("/?utm_campaign=x", host="other.example") == "Referral"
    # The site is each request's own Host, not the last one read (``_site`` remembers that).
    assert channel("/?utm_campaign=x", host="WWW.Shop.com.:443") == "Internal"
    assert channel("/?utm_campaign=x&utm_medium=email") == "Email"
    assert channel("/?utm_campaign=x&utm_medium=cpc&utm_source=google") == "Paid Search"
    assert channel("/?utm_campaign=x&gclid=1") == "Paid Search"


@pytest.mark.parametrize(
    ("referer", "host"),
    [
        ("https://www.shop.com/", "www.shop.com"),  # the page's own host
        ("https://www.shop.com:8443/home", "www.shop.com"),  # another port of it
        ("https://WWW.shop.com./", "www.shop.com:443"),
        ("https://blog.shop.com/post", "www.shop.com"),  # another host of the site: Internal already
    ],
)
def test_a_tagged_internal_link_on_the_sites_own_host_is_internal(referer: str, host: str) -> None:
    """An internal banner tagged with a campaign name only (or a source and medium no rule
    knows), clicked on the site's own host: Unassigned, credited by every model and taking the
    last touch from the ad that brought the visitor, where the same link on the site's blog was
    Internal. Now both are Internal, the site's host kept as the referrer (what ``gateway
    reclassify`` reads to keep it so)."""
    for target in ("/sale?utm_campaign=summer-banner", "/sale?utm_source=homepage&utm_medium=hero"):
        ex, _ = run(target, headers={**DOCUMENT, "Referer": referer}, host=host)
        [tp] = ex.events
        assert tp.channel == "Internal", (target, referer)
        assert tp.referrer_host == referer.split("/")[2].lower().split(":")[0].rstrip(".")
    # Fields that place it still do: an email link opened in the site's own webmail page.
    ex, _ = run("/sale?utm_medium=email", headers={**DOCUMENT, "Referer": referer}, host=host)
    assert [tp.channel for tp in ex.events] == ["Email"]


def test_remembered_channels_are_bounded() -> None:
    from addons.campaign import CHANNEL_CACHE

    ctx = context()
    identity, campaign = configured(Identity, ctx=ctx), configured(Campaign, ctx=ctx)
    for n in range(CHANNEL_CACHE + 10):
        ex = exchange(f"/?utm_source=s{n}&utm_medium=email")
        identity.request(ex)
        campaign.request(ex)
        assert ex.events[0].channel == "Email"
    assert 0 < len(campaign._channels) <= CHANNEL_CACHE


@pytest.mark.parametrize(
    ("query", "kind", "channel"),
    [
        ("ScCid=snap-1", "sccid", "Paid Social"),  # Snapchat spells it in mixed case
        ("epik=dj0yJnU9", "epik", "Paid Social"),  # Pinterest
        ("rdt_cid=t2_abc", "rdt_cid", "Paid Social"),  # Reddit
        ("qclid=q-1", "qclid", "Paid Social"),  # Quora
        ("irclickid=xyz", "irclickid", "Affiliates"),  # Impact
        ("fbclid=IwAR1", "fbclid", "Organic Social"),  # an organic share carries one too
    ],
)
def test_todays_ad_platforms_click_ids_are_captured_and_stripped(query: str, kind: str, channel: str) -> None:
    ex, _ = run(f"/p?a=1&{query}")
    [tp] = ex.events
    assert (tp.click_id_kind, tp.click_id, tp.channel) == (kind, query.partition("=")[2], channel)
    assert ex.upstream_query == "a=1"


@pytest.mark.parametrize(
    "query",
    [
        "utm_id=spring-24",
        "utm_source_platform=dv360&utm_creative_format=video&utm_marketing_tactic=remarketing",
    ],
)
def test_a_landing_tagged_only_with_other_suffixes_is_a_touchpoint(query: str) -> None:
    """GA4's newer parameters (and a utm_id alone, for campaign data import) were stripped and
    lost: no touchpoint kept them."""
    ex, _ = run(f"/p?{query}&a=1")
    [tp] = ex.events
    assert tp.raw_params == dict(pair.split("=") for pair in query.split("&"))
    assert (tp.source, tp.campaign, tp.channel) == (None, None, "Direct")
    assert ex.upstream_query == "a=1"
    ex, _ = run(f"/p?{query}", headers={**DOCUMENT, "Referer": "https://www.bing.com/"})
    assert ex.events[0].channel == "Organic Search"


def test_the_public_origin_names_the_site_when_a_front_proxy_sends_its_own_host() -> None:
    """nginx passes ``Host: 127.0.0.1:8080`` unless told otherwise: with ``proxy.public_origin``
    set, a page's same-site Referer is still the site's own (it recorded a Referral per page
    view, and its tracking pairs reached the site)."""
    toml = '[proxy]\npublic_origin = "https://www.shop.com"\n'
    referer = "https://www.shop.com/a?utm_source=x&k=1"
    ex, _ = run("/b", toml, headers={**DOCUMENT, "Referer": referer}, host="127.0.0.1:8080")
    assert ex.events == []
    assert ex.upstream_headers == {"referer": "https://www.shop.com/a?k=1"}
    ex, _ = run("/b", toml, headers={**DOCUMENT, "Referer": "https://blog.shop.com/"}, host="127.0.0.1:8080")
    assert ex.events == []  # the site's blog: the same site
    ex, _ = run("/b", toml, headers={**DOCUMENT, "Referer": "https://www.bing.com/"}, host="127.0.0.1:8080")
    assert [tp.channel for tp in ex.events] == ["Organic Search"]
    campaign = configured(Campaign, ctx=context(toml))
    ws = exchange("/ws", headers={"Referer": referer}, host="127.0.0.1:8080")
    campaign.websocket(ws)
    assert ws.upstream_headers == {"referer": "https://www.shop.com/a?k=1"}


@pytest.mark.parametrize(
    ("target", "referer", "recorded"),
    [
        ("/return?utm_nooverride=1", None, False),
        ("/return?C_NoOverride=true&utm_id=spring", None, False),
        ("/return?utm_nooverride=1", "https://news.example/", False),
        ("/return?utm_nooverride=0", None, True),
        ("/?utm_source=news&utm_nooverride=1", None, True),
        ("/?gclid=G1&utm_nooverride=1", None, True),
        ("/?creator_id=anna&utm_nooverride=1", None, True),
    ],
)
def test_utm_nooverride_alone_keeps_the_campaign_and_records_nothing(
    target: str, referer: str | None, recorded: bool
) -> None:
    headers = {**DOCUMENT, **({"Referer": referer} if referer else {})}
    ex, _ = run(target, headers=headers)
    assert bool(ex.events) is recorded
    assert "nooverride" not in (ex.upstream_query or "").lower()


@pytest.mark.parametrize(
    ("follow_up", "referer", "seconds", "recorded"),
    [
        ("/p?a=1", "https://www.google.com/search", 0.2, 0),  # the browser following the 302
        ("/p?a=1", "https://www.google.com/", 29, 0),
        ("/p?a=1", "https://www.google.com/", 31, 1),  # later: a page load of its own
        ("/other", "https://www.google.com/", 1, 1),
        ("/p?a=1", "https://www.bing.com/", 1, 1),
    ],
)
def test_the_redirects_follow_up_is_the_same_arrival(
    follow_up: str, referer: str, seconds: float, recorded: int
) -> None:
    """Under ``strip = "redirect"`` the browser follows the 302 to the clean URL with the
    landing's Referer: that is no referral of its own (it was an Organic Search touchpoint
    after every ad click). The same visitor landing elsewhere, from elsewhere or later is.
    With reloads folding off (``repeat_seconds = 0``): this rule holds without it."""
    ctx = context('[proxy]\nstrip = "redirect"\n[campaign]\nrepeat_seconds = 0\n')
    identity, campaign = configured(Identity, ctx=ctx), configured(Campaign, ctx=ctx)
    landing = exchange("/p?gclid=G1&a=1", headers={**DOCUMENT, "Referer": "https://www.google.com/"})
    identity.request(landing)
    campaign.request(landing)
    answer(landing, identity, campaign)
    assert landing.reply is not None and landing.reply.headers["location"] == "/p?a=1"
    [cookie] = landing.set_cookies
    ex = exchange(follow_up, headers={**DOCUMENT, "Referer": referer}, cookies={cookie.name: cookie.value})
    ex.request.ts = FIXED_TS + timedelta(seconds=seconds)
    identity.request(ex)
    campaign.request(ex)
    assert ex.visitor is not None and landing.visitor is not None and ex.visitor.key == landing.visitor.key
    assert len(ex.events) == recorded
    again = exchange(follow_up, headers={**DOCUMENT, "Referer": referer}, cookies={cookie.name: cookie.value})
    identity.request(again)
    campaign.request(again)
    assert len(again.events) == 1  # awaited once: a reload after it is recorded as before


GOOGLE = {**DOCUMENT, "Referer": "https://www.google.com/"}


@pytest.mark.parametrize(
    ("toml", "second", "headers", "seconds", "recorded"),
    [
        ("", "/p?gclid=G1&a=1", GOOGLE, 5, 1),  # F5: the same URL, the same Referer
        ("", "/p?gclid=G1", {}, 1700, 1),  # a restored tab, nearly half an hour later
        ("", "/q?gclid=G1", GOOGLE, 5, 1),  # one click ID is one click, on whichever page
        ("", "/p?gclid=G2&a=1", GOOGLE, 5, 2),  # another click
        ("", "/p?gclid=G1&utm_campaign=x", GOOGLE, 5, 2),  # other tracked values
        ("", "/p?gclid=G1&a=1", GOOGLE, 1801, 2),  # past campaign.repeat_seconds: a new visit
        ("[campaign]\nrepeat_seconds = 60\n", "/p?gclid=G1", GOOGLE, 61, 2),
        ("[campaign]\nrepeat_seconds = 0\n", "/p?gclid=G1&a=1", GOOGLE, 5, 2),  # off: as before
    ],
)
def test_a_reload_of_a_landing_records_no_second_touchpoint(
    toml: str, second: str, headers: dict[str, str], seconds: float, recorded: int
) -> None:
    """Each reload of ``/?gclid=…`` (F5, Back, a restored tab) was a touchpoint: three loads
    took three shares of linear credit. The same visitor with exactly the same tracked values
    within ``campaign.repeat_seconds`` is that landing again; the URL is still stripped."""
    ctx = context(toml)
    identity, campaign = configured(Identity, ctx=ctx), configured(Campaign, ctx=ctx)
    first = exchange("/p?gclid=G1&a=1", headers=GOOGLE)
    identity.request(first)
    campaign.request(first)
    answer(first, identity, campaign)
    [cookie] = first.set_cookies
    again = exchange(second, headers=headers, cookies={cookie.name: cookie.value})
    again.request.ts = FIXED_TS + timedelta(seconds=seconds)
    identity.request(again)
    campaign.request(again)
    assert len(first.events) + len(again.events) == recorded
    assert (again.folded is not None) is (recorded == 1)
    assert metric(ctx, "gateway_landings_folded_total") == 2 - recorded
    assert "gclid" not in (again.upstream_query or "")


@pytest.mark.parametrize(
    ("toml", "headers", "cookie", "recorded"),
    [
        ("", {"User-Agent": "Firefox"}, True, 1),
        ("", {"User-Agent": "Firefox"}, False, 3),  # no cookie sent: a new visitor each time
        ('[identity]\nmode = "cookieless"\n', {"User-Agent": "Firefox"}, False, 1),  # one key a day
        ('[privacy.consent_cookie]\nname = "consent"\nyes = ["1"]\n', {"User-Agent": "Firefox"}, False, 1),
        ("", {"User-Agent": "Firefox", "Sec-GPC": "1"}, False, 3),  # a daily count per landing
    ],
)
def test_reloads_fold_per_visitor_key(
    toml: str, headers: dict[str, str], cookie: bool, recorded: int
) -> None:
    """Folding is per visitor key: a cookieless or no-consent visitor's key is a day's hash of
    (host, IP, user agent), the same for each reload; a browser that keeps no cookie is a new
    visitor at each request, and a GPC landing has no visitor at all, so nothing folds."""
    ctx = context(toml)
    identity, campaign = configured(Identity, ctx=ctx), configured(Campaign, ctx=ctx)
    cookies: dict[str, str] = {}
    events = []
    for n in range(3):
        ex = exchange("/?utm_source=news&creator_id=anna", headers=headers, cookies=cookies or None)
        ex.request.ts = FIXED_TS + timedelta(seconds=10 * n)
        identity.request(ex)
        campaign.request(ex)
        identity.response(ex)
        if cookie and ex.set_cookies:
            cookies = {c.name: c.value for c in ex.set_cookies}
        events += ex.events
    assert len(events) == recorded


@pytest.mark.parametrize(
    ("strip", "second", "referer", "recorded"),
    [
        ("forward", "/p", "https://www.google.com/", 1),  # an Organic Search landing reloaded
        ("forward", "/q", "https://www.google.com/", 2),  # another result, another page
        ("forward", "/p?id=2", "https://www.google.com/", 2),  # a page named by its query
        ("forward", "/p", "https://www.bing.com/", 2),
        ("redirect", "/p?a=1", "https://www.google.com/", 1),  # the clean URL reloaded, Referer kept
        ("redirect", "/q", "https://www.google.com/", 2),
    ],
)
def test_an_untagged_landing_reloaded_is_no_second_referral(
    strip: str, second: str, referer: str, recorded: int
) -> None:
    """An untagged landing from another site compares that site and the page: a reload sends
    both again. Under ``strip = "redirect"`` the address bar shows the clean URL, whose reload
    (a minute later, past the redirect's own follow-up) was an Organic Search referral after
    the ad's click."""
    ctx = context(f'[proxy]\nstrip = "{strip}"\n')
    identity, campaign = configured(Identity, ctx=ctx), configured(Campaign, ctx=ctx)
    first_target = "/p?gclid=G1&a=1" if strip == "redirect" else "/p"
    first = exchange(first_target, headers={**DOCUMENT, "Referer": "https://www.google.com/"})
    identity.request(first)
    campaign.request(first)
    answer(first, identity, campaign)
    [cookie] = first.set_cookies
    follow_up = exchange("/p?a=1", headers={**DOCUMENT, "Referer": "https://www.google.com/"})
    if strip == "redirect":  # the browser follows the 302 at once: no referral either
        follow_up.request.headers["cookie"] = f"{cookie.name}={cookie.value}"
        identity.request(follow_up)
        campaign.request(follow_up)
        assert follow_up.events == []
    again = exchange(second, headers={**DOCUMENT, "Referer": referer}, cookies={cookie.name: cookie.value})
    again.request.ts = FIXED_TS + timedelta(seconds=60)
    identity.request(again)
    campaign.request(again)
    assert len(first.events) + len(again.events) == recorded


@pytest.mark.parametrize(
    "referer",
    [
        "https://exa mple.com/",  # a space
        "https://a..b/",  # an empty label
        "https://foo<b>.example/",
        "https://.example.com/",
        "https://ex!ample.com/",
        "https://-bad-.example/",  # a label may not start or end with a hyphen
        "https://" + "a" * 64 + ".example/",  # a label of more than 63
        "https://[bad]/",
        "https://b\u00fccher\u202e.example/",  # beyond ASCII, and no IDNA name
        "not a url",
        "about:blank",
    ],
)
def test_a_referrer_that_names_no_valid_host_is_no_referrer(referer: str) -> None:
    """A ``Referer`` that is no URL with a valid host (a bot's junk, a broken client) was stored
    as a Referral host (``exa mple.com``), a touchpoint that took the last touch. It is no
    referrer now, as if none had been sent (Direct: an untagged page load records nothing; a
    tagged one is its campaign's, Unassigned alone), counted in
    ``gateway_params_dropped_total{reason="bad_referrer"}``."""
    ex, ctx = run("/p", headers={**DOCUMENT, "Referer": referer})
    assert ex.events == []
    assert metric(ctx, "gateway_params_dropped_total", {"reason": "bad_referrer"}) == 1
    ex, ctx = run("/p?utm_campaign=spring", headers={**DOCUMENT, "Referer": referer})
    [tp] = ex.events
    assert (tp.campaign, tp.referrer_host, tp.channel) == ("spring", None, "Unassigned")
    assert metric(ctx, "gateway_params_dropped_total", {"reason": "bad_referrer"}) == 1
    # A sub-resource's Referer is not read for a touchpoint: nothing is counted for it.
    ex, ctx = run("/app.js", headers={"Referer": referer})
    assert metric(ctx, "gateway_params_dropped_total", {"reason": "bad_referrer"}) == 0


@pytest.mark.parametrize(
    "referer",
    [
        "https://b\u00fccher.example/suche",  # raw UTF-8, as a client that is no browser sends it
        "https://B\u00dcCHER.example/",
        "https://b%C3%BCcher.example/",  # percent-encoded, which browsers decode in a host
        "https://xn--bcher-kva.example/",  # as browsers send it
        "https://XN--BCHER-KVA.example./",
    ],
)
def test_an_internationalized_referrer_host_is_kept_in_its_ascii_form(referer: str) -> None:
    """Browsers send an internationalized host in its ``xn--`` form, and ``channels.referrers``
    keys are written so (the Unicode form is a config error giving it): a client that sent
    ``bücher.example`` as such stored that, which no key matched, a Referral. It is stored in
    its ASCII form now, whichever way it came."""
    toml = '[channels]\nreferrers = { "xn--bcher-kva.example" = "search/B\u00fccher" }\n'
    ex, ctx = run("/p", toml, headers={**DOCUMENT, "Referer": referer})
    [tp] = ex.events
    assert (tp.referrer_host, tp.channel) == ("xn--bcher-kva.example", "Organic Search")
    assert metric(ctx, "gateway_params_dropped_total", {"reason": "bad_referrer"}) == 0


@pytest.mark.parametrize(
    ("referer", "host"),
    [
        ("http://[::1]:8080/", "::1"),
        ("http://192.0.2.7/", "192.0.2.7"),
        ("https://my_host.example/", "my_host.example"),  # an underscore: hosts in the wild have them
        ("android-app://com.google.android.gm/", "com.google.android.gm"),
        ("https://intranet/", "intranet"),
    ],
)
def test_a_referrer_host_of_any_valid_form_is_kept(referer: str, host: str) -> None:
    ex, ctx = run("/p", headers={**DOCUMENT, "Referer": referer})
    [tp] = ex.events
    assert tp.referrer_host == host
    assert metric(ctx, "gateway_params_dropped_total", {"reason": "bad_referrer"}) == 0


def test_a_referrer_host_is_kept_without_its_trailing_dot() -> None:
    # "www.google.com." is the same host written fully qualified: a rule on the host must match it.
    toml = '[[channels.rules]]\nchannel = "Google Ref"\nreferrer = "www\\\\.google\\\\.com"\n'
    ex, _ = run("/a", toml, headers={**DOCUMENT, "Referer": "https://WWW.Google.com.:443/search"})
    [tp] = ex.events
    assert (tp.referrer_host, tp.channel) == ("www.google.com", "Google Ref")


def test_a_fully_qualified_site_host_s_own_referer_is_cleaned() -> None:
    referer = "https://shop.example.com./a?utm_source=x&page=2"
    ex, _ = run("/b", headers={**DOCUMENT, "Referer": referer}, host="shop.example.com.")
    assert ex.events == []
    assert ex.upstream_headers["referer"] == "https://shop.example.com./a?page=2"


@pytest.mark.parametrize(
    ("status", "location", "follow_up", "recorded"),
    [
        (301, "/shoes/", "/shoes/", 0),  # a trailing slash added
        (302, "en/", "/en/", 0),  # relative to the page (/shoes: its folder is /)
        (308, "https://shop.example/en/?lang=en#top", "/en/?lang=en", 0),  # absolute, this site
        (301, "http://127.0.0.1:8000/en/", "/en/", 0),  # the site's own origin (rewritten after)
        (301, "/en/", "/fr/", 1),  # another page than the redirect's
        (301, "https://other.example/en/", "/en/", 1),  # to another site
        (200, "/en/", "/en/", 1),  # no redirect
    ],
)
def test_the_follow_up_to_the_sites_own_redirect_is_the_same_arrival(
    status: int, location: str, follow_up: str, recorded: int
) -> None:
    """A landing from another site that the site answers with a redirect (``/shoes`` → ``/shoes/``,
    a language) is followed by the browser with the same ``Referer``: that page load was an
    Organic Search touchpoint after every ad click, which took the last touch."""
    ctx = context('[proxy]\nupstream = "http://127.0.0.1:8000"\n[campaign]\nrepeat_seconds = 0\n')
    identity, campaign = configured(Identity, ctx=ctx), configured(Campaign, ctx=ctx)
    landing = exchange("/shoes?gclid=G1", headers=GOOGLE)
    identity.request(landing)
    campaign.request(landing)
    landing.response = ResponseView(status, CIMultiDict({"Location": location}))
    identity.response(landing)
    campaign.response(landing)
    [cookie] = landing.set_cookies
    ex = exchange(follow_up, headers=GOOGLE, cookies={cookie.name: cookie.value})
    ex.request.ts = FIXED_TS + timedelta(seconds=0.3)
    identity.request(ex)
    campaign.request(ex)
    assert [e.click_id for e in landing.events] == ["G1"]
    assert len(ex.events) == recorded


@pytest.mark.parametrize(
    ("location", "follow_host", "recorded"),
    [
        ("https://www.shop.example/shoes", "www.shop.example", 0),  # apex -> www
        ("https://shop.example/shoes", "shop.example", 0),  # and back
        ("https://other.example/shoes", "other.example", 1),  # another site
    ],
)
def test_the_follow_up_to_a_redirect_to_another_host_of_the_site_is_the_same_arrival(
    location: str, follow_host: str, recorded: int
) -> None:
    """``shop.example/shoes?gclid=…`` answered ``301 https://www.shop.example/shoes``: the browser
    follows it with Google's Referer, and with ``identity.domain`` covering both hosts the cookie
    too. That page load was an Organic Search touchpoint after every such ad click, taking the
    last touch, though the two hosts are one site (Channels: no self-referral between them)."""
    host = "www.shop.example" if follow_host == "shop.example" else "shop.example"
    ctx = context('[identity]\ndomain = "shop.example"\n')
    identity, campaign = configured(Identity, ctx=ctx), configured(Campaign, ctx=ctx)
    landing = exchange("/shoes?gclid=G1", headers=GOOGLE, host=host)
    identity.request(landing)
    campaign.request(landing)
    landing.response = ResponseView(301, CIMultiDict({"Location": location}))
    identity.response(landing)
    campaign.response(landing)
    [cookie] = landing.set_cookies
    ex = exchange("/shoes", headers=GOOGLE, cookies={cookie.name: cookie.value}, host=follow_host)
    ex.request.ts = FIXED_TS + timedelta(seconds=0.3)
    identity.request(ex)
    campaign.request(ex)
    assert ex.visitor is not None and ex.visitor.key == landing.visitor.key
    assert [e.click_id for e in landing.events] == ["G1"]
    assert [e.channel for e in ex.events] == ["Organic Search"] * recorded


def test_a_chain_of_the_sites_redirects_is_one_arrival() -> None:
    """``/shoes`` → ``/shoes/`` → ``/en/shoes/``: each hop comes with the landing's Referer."""
    ctx = context()
    identity, campaign = configured(Identity, ctx=ctx), configured(Campaign, ctx=ctx)
    cookies: dict[str, str] = {}
    recorded = []
    for path, location in (("/shoes?gclid=G1", "/shoes/"), ("/shoes/", "/en/shoes/"), ("/en/shoes/", None)):
        ex = exchange(path, headers=GOOGLE, cookies=cookies)
        identity.request(ex)
        campaign.request(ex)
        ex.response = ResponseView(301 if location else 200, {"location": location} if location else {})
        identity.response(ex)
        campaign.response(ex)
        cookies = cookies or {c.name: c.value for c in ex.set_cookies}
        recorded += ex.events
    assert [(t.channel, t.click_id) for t in recorded] == [("Paid Search", "G1")]


def test_only_a_page_load_s_redirect_is_remembered() -> None:
    """An image's or a fetch's redirect (a CDN's, from a page of another site) is followed by no
    page load: remembered, it filled the memories, pushing real landings out."""
    ctx = context()
    identity, campaign = configured(Identity, ctx=ctx), configured(Campaign, ctx=ctx)
    for headers, remembered in (
        ({"Referer": "https://www.google.com/", "Accept": "image/*"}, 0),
        (GOOGLE, 1),
    ):
        ex = exchange("/img/logo.png", headers=headers)
        identity.request(ex)
        campaign.request(ex)
        ex.response = ResponseView(302, CIMultiDict({"Location": "/img/logo-2.png"}))
        identity.response(ex)
        campaign.response(ex)
        assert len(campaign.redirected) == remembered


@pytest.mark.parametrize(
    ("target", "headers"),
    [
        ("/article", {"Accept": "text/html", "Referer": "https://news.example/post"}),
        ("/article", {**DOCUMENT, "Referer": "https://www.google.com/"}),
        ("/p?utm_source=news&utm_medium=email&a=1", {"Accept": "text/html"}),
        ("/p?gclid=G1&a=1", {"Accept": "text/html", "Referer": "https://www.google.com/"}),
        ("/p?creator_id=anna&a=1", {}),
    ],
)
@pytest.mark.parametrize("strip", ["forward", "redirect", "off"])
def test_a_head_request_records_no_touchpoint_and_is_still_stripped(
    target: str, headers: dict[str, str], strip: str
) -> None:
    """Browsers never navigate with HEAD; link checkers, uptime probes and link previews do.
    Until 2026-12-06 a HEAD with ``Accept: text/html`` and another site's Referer was a referral
    touchpoint, and a tagged HEAD a landing (a newsletter's link checker took the first touch
    before any reader clicked). The site sees what it sees for a GET: the clean URL."""
    toml = f'[proxy]\nstrip = "{strip}"\n'
    as_get, _ = run(target, toml, headers=headers)
    assert len(as_get.events) == 1  # the same request as a GET is a touchpoint
    ex, ctx = run(target, toml, headers=headers, method="HEAD")
    assert ex.events == [] and ex.folded is None
    assert metric(ctx, "gateway_touchpoints_total") == 0
    assert (ex.upstream_query, ex.upstream_headers) == (as_get.upstream_query, as_get.upstream_headers)
    assert (ex.reply and (ex.reply.status, ex.reply.headers)) == (
        as_get.reply and (as_get.reply.status, as_get.reply.headers)
    )


def test_a_head_request_leaves_no_landing_to_fold_a_later_click_into() -> None:
    """A link checker's HEAD on the ad's URL, then the click, from one cookieless visitor key
    (same address and agent, a preview fetcher's GET after its HEAD): the click is recorded."""
    ctx = context()
    identity, campaign = configured(Identity, ctx=ctx), configured(Campaign, ctx=ctx)
    cookies: dict[str, str] = {}
    recorded = []
    for method in ("HEAD", "GET"):
        ex = exchange("/p?gclid=G1", method=method, headers={"Accept": "text/html"}, cookies=cookies)
        identity.request(ex)
        campaign.request(ex)
        answer(ex, identity, campaign)
        cookies = cookies or {c.name: c.value for c in ex.set_cookies}
        recorded += [(method, t.click_id, t.channel) for t in ex.events]
    assert cookies  # the same visitor both times
    assert recorded == [("GET", "G1", "Paid Search")]


def test_a_head_s_redirect_is_not_remembered() -> None:
    """The site's redirect of a HEAD is followed by a HEAD (a link checker's), never a page
    load: it is no arrival whose follow-up to fold."""
    ctx = context()
    identity, campaign = configured(Identity, ctx=ctx), configured(Campaign, ctx=ctx)
    ex = exchange("/shoes", method="HEAD", headers={**GOOGLE})
    identity.request(ex)
    campaign.request(ex)
    ex.response = ResponseView(301, CIMultiDict({"Location": "/shoes/"}))
    identity.response(ex)
    campaign.response(ex)
    assert len(campaign.redirected) == 0 and len(campaign.landings) == 0


PREFLIGHT = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}


@pytest.mark.parametrize(
    ("target", "headers"),
    [
        ("/api/cart?utm_source=news&utm_medium=email&a=1", PREFLIGHT),
        ("/api/cart?gclid=G1", {**PREFLIGHT, "Access-Control-Request-Headers": "content-type"}),
        ("/p?creator_id=anna&a=1", {}),  # not a preflight: curl -X OPTIONS, a scanner
        ("/p?utm_source=x", {"Accept": "text/html", "Referer": "https://news.example/post"}),
    ],
)
@pytest.mark.parametrize("strip", ["forward", "redirect"])
def test_an_options_request_records_no_touchpoint_mints_no_visitor_and_is_still_stripped(
    target: str, headers: dict[str, str], strip: str
) -> None:
    """A CORS preflight is no visit: the browser sends it, without cookies, before a script's
    cross-origin request to a tagged URL. Until 2026-12-06 each one was a landing and a new
    visitor with a cookie of its own. No browser navigates with OPTIONS at all, so none records.
    The site sees what it sees for a POST: the clean URL, inline (a preflight follows no
    redirect), under ``redirect`` too."""
    toml = f'[proxy]\nstrip = "{strip}"\n'
    as_post, _ = run(target, toml, headers=headers, method="POST")
    assert len(as_post.events) == 1  # the same request as a POST is a touchpoint
    ctx = context(toml)
    identity, campaign = configured(Identity, ctx=ctx), configured(Campaign, ctx=ctx)
    ex = exchange(target, headers=headers, method="OPTIONS")
    identity.request(ex)
    campaign.request(ex)
    answer(ex, identity, campaign)
    assert ex.events == [] and ex.folded is None and ex.set_cookies == []
    assert metric(ctx, "gateway_touchpoints_total") == 0
    assert ex.reply is None
    assert (ex.upstream_query, ex.upstream_headers) == (as_post.upstream_query, as_post.upstream_headers)
    assert len(campaign.landings) == 0


@pytest.mark.parametrize(
    ("query", "key"),
    [
        ("utm_source=news&utm_term=jane@example.com", "utm_term"),
        ("utm_source=news&utm_term=jane%40example.com", "utm_term"),  # percent-encoded
        ("utm_source=news&utm_content=Jane.Doe%2Btag%40Mail.Example.co.uk", "utm_content"),
        ("utm_source=news&utm_campaign=spring+for+jane@example.com", "utm_campaign"),  # within text
        ("utm_source=news&utm_email=jane@example.com", "utm_email"),  # raw_params only
        ("utm_source=news&sub_id=jane@example.com", "sub_id"),
        ("utm_source=news&UTM_TERM=jos%C3%A9@ex%C3%A4mple.de", "utm_term"),  # any case, any script
    ],
)
def test_an_email_address_in_a_tracking_value_is_dropped_never_stored(query: str, key: str) -> None:
    """A mailing tool's merge tag (``utm_term=*|EMAIL|*``, ``{{ email }}``) put the subscriber's
    address into the link, and the gateway stored it in ``term`` or ``raw_params``: a raw
    personal identifier at rest, which the privacy promise rules out. Such a value is dropped
    and counted (``reason="email"``), as an unprintable one is; the pair still leaves the URL,
    and the landing is recorded with the rest of its campaign."""
    ex, ctx = run(f"/p?{query}&keep=1")
    [tp] = ex.events
    assert tp.source == "news"
    assert key not in tp.raw_params and "@" not in repr(tp)
    assert (tp.term, tp.content, tp.campaign, tp.sub_id) == (None, None, None, None)
    assert ex.upstream_query == "keep=1"
    assert metric(ctx, "gateway_params_dropped_total", {"reason": "email"}) == 1
    assert ex.refused == [(key.lower(), "email")]


@pytest.mark.parametrize(
    ("query", "key"),
    [
        ("utm_source=news&utm_term=Jane.Doe%2540Example.com", "utm_term"),  # encoded twice
        ("utm_source=news&utm_content=jane%25252540example.com", "utm_content"),  # four times
        ("utm_source=news&utm_email=jane%2540example.com", "utm_email"),  # raw_params only
    ],
)
def test_an_email_address_encoded_twice_is_dropped_too(query: str, key: str) -> None:
    """A merge tag inside a link a redirector or a mailing tool encoded again
    (``utm_term=jane%2540example.com``) arrives as ``jane%40example.com`` once the query is
    decoded: until 2026-12-07 no ``@`` was in it, so the address was stored as it was in
    ``term`` and ``raw_params``, a raw personal identifier anyone can read back."""
    ex, ctx = run(f"/p?{query}&keep=1")
    [tp] = ex.events
    assert tp.source == "news"
    assert key not in tp.raw_params and "example.com" not in repr(tp).lower()
    assert (tp.term, tp.content) == (None, None)
    assert ex.upstream_query == "keep=1"
    assert metric(ctx, "gateway_params_dropped_total", {"reason": "email"}) == 1
    assert ex.refused == [(key, "email")]


@pytest.mark.parametrize(
    "value",
    ["@jane", "promo@2x", "brand@home", "a@b.c", "ops@localhost", "fans%20%40%20home"],
)
def test_a_value_with_an_at_sign_that_is_no_email_address_is_kept(value: str) -> None:
    """A creator's handle, a retina asset's suffix, a word joined by ``@``: kept, only an address
    (something ``@`` a domain with a dot and a top-level name of two letters or more) goes."""
    ex, ctx = run(f"/p?utm_source=news&utm_term={value}")
    [tp] = ex.events
    assert tp.term == unquote_plus(value)
    assert metric(ctx, "gateway_params_dropped_total", {"reason": "email"}) == 0


@pytest.mark.parametrize(
    ("target", "stored"),
    [
        ("/unsubscribe/jane@example.com?utm_source=news", "/unsubscribe/(email)"),
        ("/u/Jane.Doe%40Example.com/prefs?utm_source=news", "/u/(email)/prefs"),  # percent-encoded
        ("/u/jane%2540example.com?utm_source=news", "/u/(email)"),  # encoded twice
        ("/a/jane@example.com/b/joe@example.org?utm_source=news", "/a/(email)/b/(email)"),
        ("/@jane/posts?utm_source=news", "/@jane/posts"),  # a handle is no address
        ("/img/promo@2x.png?utm_source=news", "/img/promo@2x.png"),
    ],
)
def test_an_email_address_in_the_landing_path_is_not_stored(target: str, stored: str) -> None:
    """A newsletter tags every link, the personal ones too (``/unsubscribe/jane@example.com
    ?utm_source=news``): until 2026-12-07 the landing's path was stored as it came, the
    subscriber's address in ``touchpoints.landing_path``, while the same address in a tracking
    value was dropped. The path segment holding it is stored as ``(email)``; the site gets the
    request as sent."""
    ex, _ = run(target)
    [tp] = ex.events
    assert tp.landing_path == stored
    assert "example" not in repr(tp)
    assert ex.upstream_query == ""


def test_a_creator_id_that_is_an_email_address_is_kept() -> None:
    """A creator ID is the operator's own name for a partner (listed in ``[[creators]]``), not a
    visitor's: an affiliate programme that names its partners by address keeps its attribution."""
    ex, ctx = run("/p?utm_source=news&creator_id=jane@agency.example")
    [tp] = ex.events
    assert tp.creator_id == "jane@agency.example"
    assert metric(ctx, "gateway_params_dropped_total", {"reason": "email"}) == 0
