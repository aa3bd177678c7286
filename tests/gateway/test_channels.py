"""Channels: the ordered rules, the shipped referrer table, operator extensions, and which
referrers start a touchpoint at all."""

from __future__ import annotations

import textwrap
import tomllib
from importlib import resources

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import channels as channel_names
from gateway.channels import CLASSES, Channels, Signals, channels_warnings
from gateway.config import ConfigError, load_settings
from gateway.options import ChannelsOptions
from tests.conftest import ENV


def channels(toml: str = "") -> Channels:
    return load_settings(None, text=textwrap.dedent(toml), environ=ENV).channels


DEFAULT = channels()
KNOWN = {v for k, v in vars(channel_names).items() if k.isupper() and isinstance(v, str) and k != "CLASSES"}


@pytest.mark.parametrize(
    ("signals", "expected"),
    [
        # click IDs first
        (Signals(click_id_kind="gclid"), "Paid Search"),
        (Signals(click_id_kind="gbraid", source="newsletter", medium="email"), "Paid Search"),
        (Signals(click_id_kind="wbraid", medium="display"), "Display"),
        (Signals(click_id_kind="gclid", source="youtube", medium="cpv"), "Paid Video"),
        (Signals(click_id_kind="dclid"), "Display"),
        # DV360 buys YouTube too: its video ads' clicks carry a dclid, and the medium (or a video
        # source) says so as for Google Ads' gclid (until 2026-12-07 they were Display)
        (Signals(click_id_kind="dclid", source="dv360", medium="video"), "Paid Video"),
        (Signals(click_id_kind="dclid", medium="paid_video"), "Paid Video"),
        (Signals(click_id_kind="dclid", source="youtube", medium="cpv"), "Paid Video"),
        (Signals(click_id_kind="dclid", source="youtube"), "Paid Video"),
        (Signals(click_id_kind="gclid", source="dv360", medium="video"), "Paid Video"),
        (Signals(click_id_kind="dclid", source="dv360", medium="display"), "Display"),
        (Signals(click_id_kind="dclid", source="dv360", medium="cpc"), "Display"),
        (Signals(click_id_kind="msclkid"), "Paid Search"),
        # Microsoft's Audience Network and Yandex's ad network: their display and video ads carry
        # the click ID too, and the medium says so, as for Google's
        (Signals(click_id_kind="msclkid", source="bing", medium="display"), "Display"),
        (Signals(click_id_kind="msclkid", source="microsoft", medium="video"), "Paid Video"),
        (Signals(click_id_kind="yclid", medium="banner"), "Display"),
        (Signals(click_id_kind="msclkid", source="bing", medium="cpc"), "Paid Search"),
        (Signals(click_id_kind="msclkid", source="newsletter", medium="email"), "Paid Search"),
        (Signals(click_id_kind="fbclid"), "Organic Social"),
        (Signals(click_id_kind="fbclid", source="facebook", medium="paid_social"), "Paid Social"),
        (Signals(click_id_kind="fbclid", medium="cpc"), "Paid Social"),
        (Signals(click_id_kind="twclid", medium="social"), "Organic Social"),
        (Signals(click_id_kind="ttclid"), "Paid Social"),
        # only ads carry these: a medium saying social, organic or video is the ad's own tag
        # (TikTok's and LinkedIn's ads are often tagged utm_medium=social), never an organic visit
        (Signals(click_id_kind="li_fat_id", medium="social"), "Paid Social"),
        (Signals(click_id_kind="ttclid", source="tiktok", medium="social"), "Paid Social"),
        (Signals(click_id_kind="ttclid", medium="organic"), "Paid Social"),
        (Signals(click_id_kind="ttclid", medium="video"), "Paid Social"),
        (Signals(click_id_kind="rdt_cid", source="reddit", medium="whatever"), "Paid Social"),
        (Signals(click_id_kind="sccid", source="snapchat", medium="email"), "Paid Social"),
        (Signals(click_id_kind="epik", medium="shopping"), "Paid Shopping"),  # Pinterest's shopping ads
        (Signals(click_id_kind="mc_cid"), "Email"),
        (Signals(click_id_kind="sccid"), "Paid Social"),  # Snapchat's ScCid, stored lower-cased
        (Signals(click_id_kind="ScCid"), "Paid Social"),
        (Signals(click_id_kind="epik"), "Paid Social"),  # Pinterest
        (Signals(click_id_kind="rdt_cid"), "Paid Social"),  # Reddit
        (Signals(click_id_kind="qclid"), "Paid Social"),  # Quora
        (Signals(click_id_kind="epik", source="pinterest", medium="social"), "Paid Social"),
        (Signals(click_id_kind="irclickid"), "Affiliates"),  # Impact
        (Signals(click_id_kind="fbclid", source="facebook"), "Organic Social"),  # a share, untagged
        (Signals(click_id_kind="fbclid", source="ig", medium="paid"), "Paid Social"),
        # a non-paid medium naming another channel decides (GA4 reads no social click ID)
        (Signals(click_id_kind="fbclid", medium="email"), "Email"),
        (Signals(click_id_kind="fbclid", source="newsletter", medium="email"), "Email"),
        (Signals(click_id_kind="fbclid", source="facebook", medium="email"), "Organic Social"),
        (Signals(click_id_kind="fbclid", medium="referral"), "Referral"),
        (Signals(click_id_kind="twclid", medium="sms"), "SMS"),
        (Signals(click_id_kind="ttclid", medium="affiliate"), "Affiliates"),
        (Signals(click_id_kind="fbclid", medium="whatever"), "Organic Social"),  # no rule: the ID
        # medium and source patterns
        (Signals(source="google", medium="cpc"), "Paid Search"),
        (Signals(source="bing", medium="ppc"), "Paid Search"),
        # cpc/ppc say how an ad is priced, not where: an unknown network's is Paid Other (GA4)
        (Signals(source="acme-ads", medium="cpc"), "Paid Other"),
        (Signals(source="taboola", medium="ppc"), "Paid Other"),  # native ads
        (Signals(source="acme-ads", medium="paid_search"), "Paid Search"),  # names search: ours
        (Signals(source="acme-ads", medium="paid_listing"), "Paid Other"),
        (Signals(source="facebook", medium="cpc"), "Paid Social"),
        (Signals(source="linkedin", medium="paid"), "Paid Social"),
        (Signals(source="whatever", medium="paid-social"), "Paid Social"),
        (Signals(source="youtube", medium="cpv"), "Paid Video"),
        (Signals(source="acme-ads", medium="paid_video"), "Paid Video"),
        (Signals(source="acme-ads", medium="cpv"), "Paid Video"),
        (Signals(source="acme-ads", medium="video_ads"), "Paid Video"),
        (Signals(source="acme-ads", medium="paid_shopping"), "Paid Shopping"),
        (Signals(source="amazon", medium="cpc"), "Paid Shopping"),
        # Instagram's product tags add utm_source=IGShopping&utm_medium=Social: GA4's shopping list
        # names IGShopping, read before the social medium
        (Signals(source="IGShopping", medium="Social"), "Organic Shopping"),
        (Signals(source="igshopping", medium="paid"), "Paid Shopping"),
        # a shopping campaign by its name, as GA4 reads it (not "workshop")
        (Signals(source="google", medium="cpc", campaign="Shopping - Brand"), "Paid Shopping"),
        (Signals(click_id_kind="gclid", campaign="eshop_q4"), "Paid Shopping"),
        (Signals(click_id_kind="msclkid", campaign="summer-shop"), "Paid Shopping"),
        (Signals(source="acme-ads", medium="paid", campaign="shopping feed"), "Paid Shopping"),
        (Signals(source="google", medium="cpc", campaign="workshop-signups"), "Paid Search"),
        (Signals(source="facebook", medium="cpc", campaign="shopping"), "Paid Social"),
        (Signals(source="newsletter", medium="email", campaign="shop"), "Email"),
        (Signals(source="dv360", medium="banner"), "Display"),
        (Signals(source="google", medium="cpm"), "Paid Search"),  # GA4: paid (.*cp.*) before Display
        (Signals(source="bing", medium="CPM"), "Paid Search"),
        (Signals(source="acme-ads", medium="cpm"), "Display"),
        (Signals(source="acme-ads", medium="cpm", campaign="Shopping - Q4"), "Paid Shopping"),
        (Signals(source="acme-ads", medium="banner", campaign="Shopping - Q4"), "Display"),  # not paid
        (Signals(click_id_kind="dclid", medium="cpm", campaign="shop"), "Display"),  # DV360: Display
        (Signals(source="google", medium="display"), "Display"),
        (Signals(source="facebook", medium="cpm"), "Paid Social"),  # a price, not a placement
        (Signals(source="tiktok", medium="CPM"), "Paid Social"),
        (Signals(source="youtube", medium="cpm"), "Paid Video"),
        (Signals(source="facebook", medium="banner"), "Display"),
        (Signals(source="newsletter", medium="email"), "Email"),
        (Signals(source="mailchimp", medium="E-Mail"), "Email"),
        (Signals(source="weekly-newsletter"), "Email"),
        (Signals(source="gmail"), "Email"),
        (Signals(source="partnerblog", medium="affiliate"), "Affiliates"),
        (Signals(source="anna", medium="influencer"), "Affiliates"),
        (Signals(source="chatgpt.com"), "AI Assistants"),
        (Signals(source="perplexity", medium="referral"), "AI Assistants"),
        (Signals(source="facebook", medium="social"), "Organic Social"),
        (Signals(source="ig"), "Organic Social"),
        # Meta's {{site_source_name}} (fb, ig, msg, an), "meta" and "x" are social, not search
        (Signals(source="meta", medium="cpc"), "Paid Social"),
        (Signals(source="msg", medium="cpc"), "Paid Social"),
        (Signals(source="an", medium="paid"), "Paid Social"),
        (Signals(source="x", medium="cpc"), "Paid Social"),
        (Signals(source="meta"), "Organic Social"),
        (Signals(source="x.com", medium="organic"), "Organic Social"),
        (Signals(source="anything", medium="social-media"), "Organic Social"),
        (Signals(source="youtube"), "Organic Video"),
        (Signals(source="blog", medium="video"), "Organic Video"),
        (Signals(source="google", medium="organic"), "Organic Search"),
        (Signals(source="duckduckgo"), "Organic Search"),
        (Signals(source="sms"), "SMS"),
        (Signals(source="app", medium="push"), "Mobile Push Notifications"),
        (Signals(source="firebase"), "Mobile Push Notifications"),  # Firebase Cloud Messaging, as in GA4
        (Signals(source="spotify", medium="audio"), "Audio"),
        (Signals(source="partner.example", medium="referral"), "Referral"),
        (Signals(source="(direct)", medium="(none)"), "Direct"),
        (Signals(source="google", medium="cpc", campaign="Cross-Network PMax"), "Cross-network"),
        # creator IDs, then the referrer
        (Signals(creator_id="anna"), "Affiliates"),
        (Signals(creator_id="anna", referrer_host="www.instagram.com"), "Affiliates"),
        (Signals(referrer_host="www.google.com"), "Organic Search"),
        (Signals(referrer_host="www.google.co.uk"), "Organic Search"),
        (Signals(referrer_host="google.de"), "Organic Search"),
        (Signals(referrer_host="search.brave.com"), "Organic Search"),
        (Signals(referrer_host="mail.google.com"), "Email"),
        (Signals(referrer_host="outlook.live.com"), "Email"),
        (Signals(referrer_host="l.facebook.com"), "Organic Social"),
        (Signals(referrer_host="t.co"), "Organic Social"),
        # Messenger's link shim on the web (its Android app, com.facebook.orca, reads as facebook.com)
        (Signals(referrer_host="l.messenger.com"), "Organic Social"),
        (Signals(referrer_host="www.messenger.com"), "Organic Social"),
        (Signals(referrer_host="m.youtube.com"), "Organic Video"),
        (Signals(referrer_host="chatgpt.com"), "AI Assistants"),
        (Signals(referrer_host="www.perplexity.ai"), "AI Assistants"),
        (Signals(referrer_host="claude.ai"), "AI Assistants"),
        (Signals(referrer_host="gemini.google.com"), "AI Assistants"),
        (Signals(referrer_host="copilot.microsoft.com"), "AI Assistants"),
        (Signals(referrer_host="www.amazon.de"), "Organic Shopping"),
        (Signals(referrer_host="checkout.stripe.com"), "Internal"),
        (Signals(referrer_host="www.paypal.com"), "Internal"),
        (Signals(referrer_host="blog.example.org"), "Referral"),
        # regional search engines and webmail
        (Signals(referrer_host="ya.ru"), "Organic Search"),
        (Signals(referrer_host="yandex.com.tr"), "Organic Search"),
        (Signals(referrer_host="m.search.naver.com"), "Organic Search"),
        (Signals(referrer_host="search.seznam.cz"), "Organic Search"),
        (Signals(referrer_host="email.seznam.cz"), "Email"),  # not Seznam's search
        (Signals(referrer_host="mail.naver.com"), "Email"),
        (Signals(referrer_host="webmail.ionos.de"), "Email"),
        (Signals(referrer_host="email.t-online.de"), "Email"),
        (Signals(referrer_host="deref-gmx.net"), "Email"),  # GMX's link dereferrer
        (Signals(referrer_host="deref-web-02.de"), "Email"),  # WEB.DE's
        (Signals(referrer_host="mail.ru"), "Referral"),  # a portal, not a webmail subdomain
        # Google's sites are not all search
        (Signals(referrer_host="news.google.com"), "Referral"),
        (Signals(referrer_host="play.google.com"), "Referral"),
        (Signals(referrer_host="docs.google.com"), "Referral"),
        (Signals(referrer_host="accounts.google.com"), "Internal"),  # a sign-in return
        # Mastodon beyond mastodon.*
        (Signals(referrer_host="fosstodon.org"), "Organic Social"),
        (Signals(referrer_host="mstdn.jp"), "Organic Social"),
        (Signals(referrer_host="www.threads.com"), "Organic Social"),
        # Android apps: the android-app:// referrer's host is the package name
        (Signals(referrer_host="com.google.android.gm"), "Email"),
        (Signals(referrer_host="com.microsoft.office.outlook"), "Email"),
        (Signals(referrer_host="com.google.android.googlequicksearchbox"), "Organic Search"),
        (Signals(referrer_host="com.google.android.youtube"), "Organic Video"),
        (Signals(referrer_host="com.google.android.apps.bard"), "AI Assistants"),
        (Signals(referrer_host="com.google.android.apps.magazines"), "Referral"),
        # Google's other apps are no search (reversed, each read as google.com's): a link tapped
        # in a text message is SMS; in Chat, Drive, Calendar a Referral, as their web hosts are
        (Signals(referrer_host="com.google.android.apps.messaging"), "SMS"),  # Google Messages
        (Signals(referrer_host="com.samsung.android.messaging"), "SMS"),  # Samsung Messages
        (Signals(referrer_host="com.google.android.apps.dynamite"), "Referral"),  # Google Chat
        (Signals(referrer_host="com.google.android.apps.docs"), "Referral"),  # Drive
        (Signals(referrer_host="com.google.android.calendar"), "Referral"),
        (Signals(referrer_host="com.google.android.apps.maps"), "Organic Search"),  # local search
        (Signals(referrer_host="com.google.android.apps.searchlite"), "Organic Search"),  # Google Go
        (Signals(referrer_host="com.google.android.apps.googleassistant"), "AI Assistants"),
        (Signals(referrer_host="www.android.google.com"), "Referral"),
        (Signals(referrer_host="com.facebook.katana"), "Organic Social"),  # looked up reversed
        (Signals(referrer_host="org.telegram.messenger"), "Organic Social"),
        (Signals(referrer_host="com.reddit.frontpage"), "Organic Social"),
        (Signals(referrer_host="jp.naver.line.android"), "Organic Social"),  # LINE, not Naver search
        (Signals(referrer_host="com.openai.chatgpt"), "AI Assistants"),
        (Signals(referrer_host="ai.perplexity.app.android"), "AI Assistants"),
        (Signals(referrer_host="com.example.reader"), "Referral"),
        # packages ending in a label that is a new top-level domain are packages all the same
        (Signals(referrer_host="com.duckduckgo.mobile.android"), "Organic Search"),
        (Signals(referrer_host="com.microsoft.bing"), "Organic Search"),  # bing.microsoft.com reversed
        (Signals(referrer_host="com.facebook.lite.android"), "Organic Social"),
        (Signals(referrer_host="de.google.example.org"), "Referral"),  # a web host: not reversed
        (Signals(referrer_host="blog.google.example.org"), "Referral"),  # no reversal for web hosts
        (Signals(referrer_host="google.example.org"), "Referral"),  # "google" is not the site's name
        (Signals(campaign="spring", referrer_host="www.bing.com"), "Organic Search"),
        (Signals(campaign="spring"), "Unassigned"),
        (Signals(), "Direct"),
    ],
)
def test_default_rules(signals: Signals, expected: str) -> None:
    assert DEFAULT.classify(signals) == expected


def test_a_click_id_kind_matches_in_ascii_letter_case_only() -> None:
    """A signed event's ``click_id_kind`` is read as a landing's parameter name is: ``MSCLKID``
    is Microsoft's, ``MSCLKID`` with the Kelvin sign (U+212A) is no click ID known here."""
    assert DEFAULT.classify(Signals(click_id_kind="MSCLKID")) == "Paid Search"
    assert DEFAULT.classify(Signals(click_id_kind="MSCL\u212aID")) == "Unassigned"


def test_shipped_table_is_valid_and_covers_every_class() -> None:
    data = tomllib.loads(resources.files("gateway").joinpath("data/referrers.toml").read_text())
    assert set(data) == {*CLASSES, "sources"}
    assert all(data[kind] for kind in CLASSES)
    assert set(data["sources"].values()) <= set(CLASSES)


@pytest.mark.parametrize(
    ("referrer", "site", "starts"),
    [
        ("www.google.com", "shop.example.com", True),
        ("blog.example.org", "shop.example.com", True),
        ("checkout.stripe.com", "shop.example.com", False),
        ("www.paypal.com", "shop.example.com", False),
        ("pay.google.com", "shop.example.com", False),  # the longest key wins over "google"
        ("live.adyen.com", "shop.example.com", False),
        ("blog.example.com", "shop.example.com", False),  # same registrable domain
        ("www.example.co.uk", "shop.example.co.uk", False),
        ("other.co.uk", "shop.example.co.uk", True),
        ("other-shop.myshopify.com", "my-shop.myshopify.com", True),  # a private suffix
        ("someone.github.io", "me.github.io", True),
        ("docs.me.github.io", "me.github.io", False),
        ("shop.com", "www.shop.com", False),  # apex, www and subdomains are one site
        ("www.shop.com", "shop.com", False),
        ("checkout.shop.com", "www.shop.com", False),
        ("www.shop.co.uk", "www.shop.com", True),  # another registrable domain
        ("hooks.stripe.com", "shop.example.com", False),  # Stripe's 3-D Secure return
        ("link.com", "shop.example.com", False),  # Stripe Link
        ("www.sandbox.paypal.com", "shop.example.com", False),
        ("checkoutshopper-live.adyen.com", "shop.example.com", False),
        ("pay.klarna.com", "shop.example.com", False),
        ("www.mollie.com", "shop.example.com", False),
        ("centinelapi.cardinalcommerce.com", "shop.example.com", False),  # 3-D Secure
        ("secure5.arcot.com", "shop.example.com", False),
        ("ds1.wlp-acs.com", "shop.example.com", False),
        ("checkout.trustly.com", "shop.example.com", False),
        ("sis.redsys.es", "shop.example.com", False),
        ("accounts.google.com", "shop.example.com", False),  # "Sign in with Google"
        ("appleid.apple.com", "shop.example.com", False),
        ("login.microsoftonline.com", "shop.example.com", False),
        ("acme.eu.auth0.com", "shop.example.com", False),
        ("news.google.com", "shop.example.com", True),
        # under a suffix the list does not know (an intranet's .corp, .internal): its default
        # rule "*", so a site's own subdomains are one site (each was a referral before)
        ("blog.shop.corp", "www.shop.corp", False),
        ("shop.internal", "app.shop.internal", False),
        ("www.other.corp", "www.shop.corp", True),
        ("10.0.0.2", "10.0.0.1", True),  # addresses are their own
        ("localhost", "127.0.0.1", True),
    ],
)
def test_which_referrers_start_a_touchpoint(referrer: str, site: str, starts: bool) -> None:
    assert DEFAULT.starts_touchpoint(referrer, site) is starts


def test_operator_extends_the_table() -> None:
    ch = channels(
        """
        [channels]
        payment_gateways = ["pay.example-bank.com", "acmepay"]
        own_domains = ["example-shop.de"]
        creator_channel = "Influencer"

        [channels.referrers]
        "search.example.net" = "search/Example Search"
        "intranet-mail" = "email"
        "t.co" = "ai"
        "news.google.com" = "search"
        "blog.example.org" = "referral"
        "sso.example-idp.com" = "login"
        "sms.example-carrier.com" = "sms"
        "textblast" = "sms/TextBlast"
        "com.example.reader" = "social/Example Reader"
        """
    )
    assert ch.classify(Signals(referrer_host="news.google.com")) == "Organic Search"
    assert ch.classify(Signals(referrer_host="com.example.reader")) == "Organic Social"
    assert not ch.starts_touchpoint("sso.example-idp.com", "shop.example.com")
    assert ch.classify(Signals(referrer_host="eu.search.example.net")) == "Organic Search"
    assert ch.referrer("search.example.net") == ("search", "Example Search")
    assert ch.classify(Signals(referrer_host="intranet-mail.co.jp")) == "Email"
    assert ch.classify(Signals(referrer_host="t.co")) == "AI Assistants"  # overrides the shipped entry
    assert ch.classify(Signals(referrer_host="sms.example-carrier.com")) == "SMS"
    assert ch.classify(Signals(source="textblast", campaign="flash-sale")) == "SMS"
    assert not ch.starts_touchpoint("acs.pay.example-bank.com", "shop.example.com")
    assert not ch.starts_touchpoint("www.acmepay.com", "shop.example.com")
    assert not ch.starts_touchpoint("www.example-shop.de", "shop.example.com")
    assert ch.classify(Signals(referrer_host="www.example-shop.de")) == "Internal"
    assert ch.classify(Signals(creator_id="anna")) == "Influencer"
    assert DEFAULT.classify(Signals(referrer_host="eu.search.example.net")) == "Referral"


def test_an_operator_site_name_overrides_the_shipped_bare_domain() -> None:
    """``"kagi" = "referral"`` did nothing: the shipped table names Kagi by its host,
    ``kagi.com``, and a host key wins over a site name. The operator's name now stands for the
    site's bare domain too, and for its hosts of the same class and name (Instagram's link
    redirector); the shipped keys of another service of a site stay the more precise, and a
    host the operator wrote wins over their own site name."""
    assert DEFAULT.classify(Signals(referrer_host="kagi.com")) == "Organic Search"
    ch = channels(
        """
        [channels.referrers]
        "kagi" = "referral"
        "instagram" = "referral"
        "google" = "referral"
        "duckduckgo" = "referral"
        "duckduckgo.com" = "search"
        """
    )
    assert ch.classify(Signals(referrer_host="kagi.com")) == "Referral"
    assert ch.classify(Signals(referrer_host="l.instagram.com")) == "Referral"  # the site's own redirector
    assert ch.classify(Signals(referrer_host="www.google.com")) == "Referral"
    assert ch.classify(Signals(referrer_host="mail.google.com")) == "Email"  # a shipped part of the site
    assert ch.classify(Signals(referrer_host="duckduckgo.com")) == "Organic Search"


def test_operator_rules_come_first_and_need_every_condition() -> None:
    ch = channels(
        """
        [[channels.rules]]
        channel = "Podcasts"
        medium = "podcast|audio"

        [[channels.rules]]
        channel = "Brand Search"
        click_ids = ["gclid"]
        campaign = ".*brand.*"
        """
    )
    assert ch.classify(Signals(source="spotify", medium="Podcast")) == "Podcasts"
    assert ch.classify(Signals(source="spotify", medium="podcasts")) != "Podcasts"  # whole value
    assert ch.classify(Signals(click_id_kind="gclid", campaign="Brand-DE")) == "Brand Search"
    assert ch.classify(Signals(click_id_kind="gclid", campaign="Generic")) == "Paid Search"
    assert ch.classify(Signals(click_id_kind="msclkid", campaign="Brand-DE")) == "Paid Search"
    # A signed event's click_id_kind in capitals is read as the built-in rules read it.
    assert ch.classify(Signals(click_id_kind="GCLID", campaign="Brand-DE")) == "Brand Search"
    assert ch.classify(Signals(click_id_kind="GCL\u0130D", campaign="Brand-DE")) != "Brand Search"


def test_an_operator_rule_on_the_referrer_matches_a_host_stored_with_its_trailing_dot() -> None:
    # Rows stored before 2026-12-05 kept it ("www.google.com."); gateway reclassify reads them.
    ch = channels('[[channels.rules]]\nchannel = "Google Ref"\nreferrer = "www\\\\.google\\\\.com"\n')
    assert ch.classify(Signals(referrer_host="www.google.com.")) == "Google Ref"
    assert ch.classify(Signals(referrer_host="WWW.GOOGLE.COM")) == "Google Ref"


def test_lookups_are_cached_per_host() -> None:
    ch = channels()
    ch.classify(Signals(referrer_host="www.google.com"))
    ch.classify(Signals(referrer_host="www.google.com"))
    assert ch.referrer.cache_info().hits >= 1


def test_signals_from_a_stored_row() -> None:
    row = {"source": "google", "medium": "cpc", "campaign": None, "referrer_host": None, "id": "x"}
    assert Signals.of(row) == Signals(source="google", medium="cpc")


def test_a_classifier_can_be_built_from_options_alone() -> None:
    assert Channels(ChannelsOptions()).classify(Signals(referrer_host="www.bing.com")) == "Organic Search"


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        (
            "[channels]\nreferrers = { 'x.com' = 'news' }\n",
            "channels.referrers.\"x.com\": unknown class 'news'",
        ),
        ("[channels]\ncreator_channel = ' '\n", "channels.creator_channel: must not be empty"),
        # a key that no referrer's host can ever be: it matched nothing, silently
        (
            "[channels]\nreferrers = { 'bücher.de' = 'social' }\n",
            'channels.referrers."bücher.de": a referrer\'s host arrives in its ASCII form',
        ),
        (
            "[channels]\nreferrers = { '*.example-search.net' = 'search' }\n",
            'channels.referrers."*.example-search.net": a host key matches the host and its subdomains',
        ),
        (
            "[channels]\nreferrers = { '.example-search.net' = 'search' }\n",
            'channels.referrers.".example-search.net": a host key matches the host and its subdomains',
        ),
        ("[channels]\nbogus = 1\n", "channels.bogus: unknown key"),
        (
            "[[channels.rules]]\nchannel = 'X'\nmedium = '('\n",
            "channels.rules[0].medium: not a valid regular",
        ),
        ("[[channels.rules]]\nchannel = 'X'\n", "channels.rules[0]: needs at least one condition"),
        # a referrer rule reads the host alone: a URL or a path in it never matched
        (
            "[[channels.rules]]\nchannel = 'X'\nreferrer = 'https://news\\.example\\.com/'\n",
            "channels.rules[0].referrer: matches the referrer's host alone",
        ),
        (
            "[[channels.rules]]\nchannel = 'X'\nreferrer = '.*example\\.com/blog.*'\n",
            "channels.rules[0].referrer: matches the referrer's host alone",
        ),
        (
            "[[channels.rules]]\nmedium = 'x'\n",
            "channels.rules[0].channel: required, not set in this [[channels.rules]] entry",
        ),
        (
            "[[channels.rules]]\nchannel = 'X'\nsource = 'a'\nwhat = 1\n",
            "channels.rules[0].what: unknown key",
        ),
    ],
)
def test_config_problems_name_the_key(toml: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, text=toml, environ=ENV)
    assert any(p.startswith(expected) for p in info.value.problems), info.value.problems


async def test_channels_end_to_end_through_the_gateway(start_gateway, upstream_server) -> None:
    """A real gateway stores each landing's channel; a checkout return records nothing."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<html>ok</html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    gw = await start_gateway(await upstream_server(app))
    document = {"Sec-Fetch-Dest": "document"}
    for path, referer in [
        ("/a", "https://chatgpt.com/"),
        ("/b?utm_source=facebook&utm_medium=paid_social", None),
        ("/thanks", "https://checkout.stripe.com/c/pay/cs_live_1"),
        ("/c", "https://www.google.fr/"),
    ]:
        headers = {**document, **({"Referer": referer} if referer else {})}
        async with gw.session.get(gw.url + path, headers=headers) as resp:
            assert resp.status == 200
    items = (await gw.api("/api/touchpoints"))["items"]
    assert [(tp["landing_path"], tp["channel"]) for tp in items] == [
        ("/a", "AI Assistants"),
        ("/b", "Paid Social"),
        ("/c", "Organic Search"),
    ]


TEXT = st.one_of(
    st.none(), st.text(max_size=40), st.sampled_from(["", ".", "..", "a..b", "[::1]", "xn--", "ß.de"])
)


@settings(max_examples=300, deadline=None)
@given(fields=st.tuples(TEXT, TEXT, TEXT, TEXT, TEXT, TEXT), site=TEXT)
def test_any_input_gets_a_channel_and_never_raises(fields: tuple[str | None, ...], site: str | None) -> None:
    signals = Signals(*fields)
    assert DEFAULT.classify(signals, site) in KNOWN
    if signals.referrer_host:
        assert DEFAULT.starts_touchpoint(signals.referrer_host, site) in (True, False)


def test_the_dashboards_colour_order_holds_every_built_in_channel_a_model_credits() -> None:
    """The dashboard colours a built-in channel by its place in ``CREDITED``: one left out would
    get a colour by the period's ranking again."""
    names = {
        value for key, value in vars(channel_names).items() if key.isupper() and isinstance(value, str)
    } - {channel_names.INTERNAL}
    assert sorted(channel_names.CREDITED) == sorted(names)
    assert len(channel_names.CREDITED) <= 20  # the palette's colours (gateway/static/charts.js)


def test_a_rules_click_id_no_landing_carries_is_warned_of() -> None:
    """``click_ids = ["fbcild"]`` (a typo), or a parameter left out of ``campaign.click_ids``,
    made a rule that never matches a landing, without a word: ``gateway reclassify --dry-run``
    then said nothing would change, and the operator was left guessing why. Not an error: a
    signed event's ``click_id_kind`` may be anything, and such a rule may be for it."""
    settings = load_settings(
        None,
        text=textwrap.dedent(
            """
            [campaign]
            click_ids = ["gclid", "fbclid", "my_clid"]
            [[channels.rules]]
            channel = "Meta"
            click_ids = ["FBCLID", "fbcild"]
            [[channels.rules]]
            channel = "Ours"
            click_ids = ["my_clid"]
            [[channels.rules]]
            channel = "TikTok"
            click_ids = ["ttclid"]
            """
        ),
        environ=ENV,
    )
    assert channels_warnings(settings.options) == [
        "channels.rules[0].click_ids[1]: 'fbcild' is not in campaign.click_ids, so no landing carries"
        " it (a signed event's click_id_kind may) and the rule never matches one; add it to"
        " campaign.click_ids, or correct the name",
        "channels.rules[2].click_ids[0]: 'ttclid' is not in campaign.click_ids, so no landing carries"
        " it (a signed event's click_id_kind may) and the rule never matches one; add it to"
        " campaign.click_ids, or correct the name",
    ]
    assert channels_warnings(load_settings(None, text="", environ=ENV).options) == []


def test_a_channel_spelt_as_a_built_in_one_in_another_case_is_warned_of() -> None:
    """``channel = "paid search"`` made a channel of its own beside the built-in Paid Search,
    every report splitting them; ``channel = "internal"``, meant to keep the site's own traffic
    out of the credit, was credited by every model, as only ``Internal`` is skipped. Warned of,
    not refused: a config that loaded before still does."""
    settings = load_settings(
        None,
        text=textwrap.dedent(
            """
            [channels]
            creator_channel = "influencer"
            [[channels.rules]]
            channel = "paid search"
            source = "acme-search"
            [[channels.rules]]
            channel = "internal"
            referrer = "intranet\\\\..*"
            [[channels.rules]]
            channel = "Paid Social"
            source = "snap"
            [[channels.rules]]
            channel = "Podcasts"
            medium = "podcast"
            [[channels.rules]]
            channel = "Organic  social"
            medium = "community"
            """
        ),
        environ=ENV,
    )
    assert channels_warnings(settings.options) == [
        "channels.rules[0].channel: 'paid search' is not the built-in channel 'Paid Search': reports"
        ' show the two apart; write "Paid Search" (or a name of its own)',
        "channels.rules[1].channel: 'internal' is not the built-in channel 'Internal', which no model"
        ' credits: this one is credited; write "Internal" (or a name of its own)',
        "channels.rules[4].channel: 'Organic  social' is not the built-in channel 'Organic Social':"
        ' reports show the two apart; write "Organic Social" (or a name of its own)',
    ]
