"""Channels: the marketing channel a touchpoint came through, from ordered rules.

Reads the shipped referrer table (``gateway/data/referrers.toml``: hosts, site names and
Android package names → search, social, email, video, ai, shopping, sms, referral, payment or
login) and ``[channels]``, which extends it and adds rules. Owns the channel names (the
industry's default channel grouping, plus AI Assistants), the rule order, and the answer to
"should this referrer start a touchpoint at all?" — a self-referral or a return from a
payment gateway or a sign-in provider must not, or checkout and login would steal the
credit. Registrable domains come from ``tldextract`` with its bundled suffix list (never
fetched). Lookups are cached per host: this runs on the request path.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from gateway.events import param_key
from gateway.forwarding import parse_ip

if TYPE_CHECKING:
    import tldextract

    from gateway.options import ChannelRule, ChannelsOptions, Options

AFFILIATES = "Affiliates"
AI_ASSISTANTS = "AI Assistants"
AUDIO = "Audio"
CROSS_NETWORK = "Cross-network"
DIRECT = "Direct"
DISPLAY = "Display"
EMAIL = "Email"
INTERNAL = "Internal"
"""A self-referral, a payment-gateway or sign-in return: the visit goes on; attribution skips it."""
MOBILE_PUSH = "Mobile Push Notifications"
ORGANIC_SEARCH = "Organic Search"
ORGANIC_SHOPPING = "Organic Shopping"
ORGANIC_SOCIAL = "Organic Social"
ORGANIC_VIDEO = "Organic Video"
PAID_OTHER = "Paid Other"
PAID_SEARCH = "Paid Search"
PAID_SHOPPING = "Paid Shopping"
PAID_SOCIAL = "Paid Social"
PAID_VIDEO = "Paid Video"
REFERRAL = "Referral"
SMS = "SMS"
UNASSIGNED = "Unassigned"
CREDITED = (
    PAID_SEARCH, ORGANIC_SEARCH, AFFILIATES, PAID_SOCIAL, EMAIL, DIRECT, ORGANIC_SOCIAL, REFERRAL,
    DISPLAY, AI_ASSISTANTS, PAID_OTHER, PAID_VIDEO, ORGANIC_VIDEO, PAID_SHOPPING, ORGANIC_SHOPPING,
    SMS, MOBILE_PUSH, AUDIO, CROSS_NETWORK, UNASSIGNED,
)  # fmt: skip
"""Every built-in channel a model can credit (all but Internal), the most common first: the
dashboard gives each the palette colour of its place here, the same in every period."""

CLASSES = ("search", "social", "email", "video", "ai", "shopping", "sms", "referral", "payment", "login")
"""Referrer classes of the shipped table and of ``channels.referrers``: ``referral`` pins a host
to Referral (``news.google.com`` is no search engine); ``sms`` names the text-messaging apps
(``android-app://com.google.android.apps.messaging``); returns from ``payment`` and ``login``
(sign-in providers) continue the visit."""
CLASS_CHANNEL = {
    "search": ORGANIC_SEARCH,
    "social": ORGANIC_SOCIAL,
    "email": EMAIL,
    "video": ORGANIC_VIDEO,
    "ai": AI_ASSISTANTS,
    "shopping": ORGANIC_SHOPPING,
    "sms": SMS,
    "referral": REFERRAL,
    "payment": INTERNAL,
    "login": INTERNAL,
}
PAID_BY_CLASS = {"social": PAID_SOCIAL, "video": PAID_VIDEO, "shopping": PAID_SHOPPING, "search": PAID_SEARCH}

_PAID = re.compile(r"^(.*cp.*|ppc|retargeting|paid.*|sem)$")
_DISPLAY = frozenset({"display", "banner", "expandable", "interstitial", "cpm", "programmatic"})
_PAID_SEARCH = frozenset({"paidsearch", "paid_search", "paid-search", "paid search", "sem"})
"""Media that name search ads. Not ``cpc`` or ``ppc``: every ad network prices by the click
(Taboola, Outbrain, Criteo), so from an unknown source they are Paid Other, as in GA4."""
_PAID_SOCIAL = frozenset(
    {"paid_social", "paidsocial", "paid-social", "paid social", "social_paid", "social-paid", "social_ads"}
)
_SOCIAL = frozenset(
    {"social", "social-network", "social-media", "sm", "social network", "social media", "social_media"}
)
_SHOPPING_CAMPAIGN = re.compile(r"(?:[^a-df-z]|^)shop|shopping", re.IGNORECASE)
"""GA4's shopping campaign names: ``Shopping - Brand``, ``eshop_q4``, not ``workshop``."""
_EMAIL = re.compile(r"e[-_ ]?mail|newsletter")
_AFFILIATE = frozenset({"affiliate", "affiliates", "partner", "partners", "partnership"})
_INFLUENCER = frozenset({"influencer", "influencers", "creator", "creators"})
_REFERRAL = frozenset({"referral", "app", "link"})
_WEBMAIL = frozenset({"mail", "webmail", "email"})
"""First labels of a webmail host, under a site's domain (not ``mail.ru``, a site itself)."""
_SEARCH_ADS = frozenset({"gclid", "gbraid", "wbraid", "msclkid", "yclid"})
_ADS_ONLY_SOCIAL_CLICKS = frozenset({"ttclid", "li_fat_id", "sccid", "epik", "rdt_cid", "qclid"})
"""Social click IDs only ads carry (TikTok, LinkedIn, Snapchat, Pinterest, Reddit, Quora);
fbclid and twclid also decorate organic shares."""
_SOCIAL_CLICKS = _ADS_ONLY_SOCIAL_CLICKS | {"fbclid", "twclid"}
_ORGANIC_TO_PAID = {
    ORGANIC_SOCIAL: PAID_SOCIAL,
    ORGANIC_SEARCH: PAID_SOCIAL,
    ORGANIC_VIDEO: PAID_SOCIAL,
    ORGANIC_SHOPPING: PAID_SHOPPING,
}
"""What an ads-only social click ID makes of a channel its medium or source would call organic."""
SHARED_CLICK_IDS = frozenset({"mc_cid", "gbraid"})
"""Click-ID parameters that name a campaign, not a click: every recipient of a Mailchimp
newsletter carries the same ``mc_cid``, and every iOS click of a Google Ads campaign tagged
``gbraid`` the same ``gbraid`` (Google's help, answer 16297842: a campaign-level parameter,
not unique; until 2026-12-07 its reuse was flagged), so their reuse is no sign of fraud."""


@dataclass(frozen=True, slots=True)
class Signals:
    """What a touchpoint says about where it came from (the inputs of the rules)."""

    source: str | None = None
    medium: str | None = None
    campaign: str | None = None
    click_id_kind: str | None = None
    creator_id: str | None = None
    referrer_host: str | None = None

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Signals:
        """From a stored touchpoint row (or any mapping with those keys)."""
        return cls(*(row.get(name) for name in cls.__slots__))


@dataclass(frozen=True)
class ReferrerTable:
    """Hosts (with a dot: the host and its subdomains) and site names (any suffix) →
    (class, display name); source-only aliases → class."""

    hosts: dict[str, tuple[str, str]]
    names: dict[str, tuple[str, str]]
    sources: dict[str, str]

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> ReferrerTable:
        table = cls({}, {}, dict(data.get("sources", {})))
        for kind in CLASSES:
            for key, name in data.get(kind, {}).items():
                table.add(key, kind, name)
        return table

    def add(self, key: str, kind: str, name: str = "") -> None:
        key = key.strip().lower().rstrip(".")
        (self.hosts if "." in key else self.names)[key] = (kind, name or key)


@functools.cache
def shipped_data() -> dict[str, Any]:
    """The shipped referrer table, read once per process (at start-up, from ``load_settings``)."""
    text = resources.files("gateway").joinpath("data/referrers.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


@functools.cache
def _extractor() -> tldextract.TLDExtract:
    import tldextract  # imported here: it is only needed once a config is loaded

    # Private suffixes too: two shops on myshopify.com or github.io are two sites, not one.
    extract = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), include_psl_private_domains=True)
    extract("warm.example.com")  # loads the bundled suffix list now, not on a request
    return extract


_CLASSIC_TLDS = frozenset({"com", "org", "net", "edu", "gov", "mil", "int", "info", "biz"})


def _classic_tld(label: str) -> bool:
    """A generic top-level domain older than the 2012 round, or a country's (two letters)."""
    return len(label) == 2 or label in _CLASSIC_TLDS


def is_public_suffix(host: str) -> bool:
    """``com``, ``co.uk``, ``github.io``: a suffix under which anyone registers a site (the
    list browsers use to refuse a cookie Domain that would span many sites)."""
    parts = _extractor()(host)
    return bool(parts.suffix) and not parts.domain


def _package_like(labels: list[str], suffix: str) -> bool:
    """Could this host be an Android package name (reverse DNS: ``com.facebook.katana``)?
    Under no public suffix, yes. Packages also end in labels that are new top-level domains
    (``com.duckduckgo.mobile.android``, ``com.spotify.music``): those are read as packages when
    they start with a classic or country top-level domain (``com``, ``org``, ``de``), as web
    hosts do not (``blog.google.example.org`` is under ``org``; so is ``de.google.example.org``)."""
    if not suffix:
        return True
    first = labels[0]
    return not _classic_tld(suffix.rpartition(".")[2]) and _classic_tld(first) and is_public_suffix(first)


def _field(s: Signals, name: str) -> str:
    """A signal as rules read it: a host stored fully qualified (``www.google.com.``, as rows
    stored before 2026-12-05 may hold it) is the same host."""
    value = getattr(s, name) or ""
    return value.rstrip(".") if name == "referrer_host" else value


def channels_warnings(options: Options) -> list[str]:
    """What ``[[channels.rules]]`` allows but cannot do, each naming its key: a click ID no landing
    carries (not in ``campaign.click_ids``: a typo, or a parameter left out) never matches one;
    a channel spelt as a built-in one in another case (``"paid search"``) is another channel.
    Said by ``gateway check``, ``gateway doctor``, ``gateway reclassify`` and at the start, not
    refused: a signed event's ``click_id_kind`` may be anything, and the rule may be for it."""
    captured = {name.lower() for name in options.campaign.click_ids}
    return [
        f"channels.rules[{i}].click_ids[{j}]: {name!r} is not in campaign.click_ids, so no landing"
        " carries it (a signed event's click_id_kind may) and the rule never matches one; add it to"
        " campaign.click_ids, or correct the name"
        for i, rule in enumerate(options.channels.rules)
        for j, name in enumerate(rule.click_ids)
        if name.lower() not in captured
    ] + _near_built_in(options.channels)


_BUILT_IN = {" ".join(name.casefold().split()): name for name in (*CREDITED, INTERNAL)}


def _near_built_in(options: ChannelsOptions) -> list[str]:
    """A channel named as a built-in one but for its letter case or spaces (``"paid search"``,
    ``"internal"``) is a channel of its own: reports show it beside the built-in one, and no
    model skips an ``internal`` one. Said, not refused: such a name may be meant."""
    warnings = []
    named = [("channels.creator_channel", options.creator_channel)]
    named += [(f"channels.rules[{i}].channel", rule.channel) for i, rule in enumerate(options.rules)]
    for key, channel in named:
        built_in = _BUILT_IN.get(" ".join(channel.casefold().split()))
        if built_in is None or built_in == channel:
            continue
        what = (
            ", which no model credits: this one is credited"
            if built_in == INTERNAL
            else ": reports show the two apart"
        )
        warnings.append(
            f"{key}: {channel!r} is not the built-in channel {built_in!r}{what};"
            f' write "{built_in}" (or a name of its own)'
        )
    return warnings


class _Rule:
    """A compiled ``[[channels.rules]]`` entry."""

    def __init__(self, rule: ChannelRule) -> None:
        self.channel = rule.channel
        self.fields = [
            (name, re.compile(pattern, re.IGNORECASE))
            for name, pattern in (
                ("source", rule.source),
                ("medium", rule.medium),
                ("campaign", rule.campaign),
                ("referrer_host", rule.referrer),
            )
            if pattern
        ]
        self.click_ids = frozenset(c.lower() for c in rule.click_ids)

    def matches(self, s: Signals) -> bool:
        # A signed event's click_id_kind as the built-in rules read it (``param_key``).
        if self.click_ids and param_key(s.click_id_kind or "") not in self.click_ids:
            return False
        return all(regex.fullmatch(_field(s, name)) for name, regex in self.fields)


class Channels:
    """The classifier: built once from ``[channels]`` (in ``load_settings``), then pure."""

    def __init__(self, options: ChannelsOptions) -> None:
        self._extract = _extractor()
        self.table = ReferrerTable.parse(shipped_data())
        shipped = (dict(self.table.hosts), dict(self.table.names))
        for key, value in options.referrers.items():
            kind, _, name = value.partition("/")
            self.table.add(key, kind, name)
        self._names_over_sites(options.referrers, shipped)
        for key in options.payment_gateways:
            self.table.add(key, "payment")
        self.own_domains = tuple(d.strip().lower().rstrip(".") for d in options.own_domains)
        self.creator_channel = options.creator_channel
        self.rules = [_Rule(rule) for rule in options.rules]
        self._cache()

    def _names_over_sites(
        self,
        referrers: Mapping[str, str],
        shipped: tuple[dict[str, tuple[str, str]], dict[str, tuple[str, str]]],
    ) -> None:
        """An operator's site name (``"kagi" = "referral"``) stands for the site the shipped table
        names by host keys too — its bare domain (``"kagi.com"``) and its hosts of the same class
        and name as the site (``l.instagram.com``, Instagram's link redirector, under
        ``instagram``) — which would otherwise win over a name: the override did nothing (until
        2026-12-05). The shipped keys for another service of the site (``mail.google.com``,
        Gmail, under ``google``, Google Search) stay, as the more precise; so does any host the
        operator wrote."""
        written = {key.strip().lower().rstrip(".") for key in referrers}
        names = {key for key in written if "." not in key}
        if not names:
            return
        hosts, site_names = shipped
        for host, found in hosts.items():
            if host in written:
                continue
            parts = self._extract(host)
            same_site = parts.domain in names and bool(parts.suffix)
            if same_site and (not parts.subdomain or site_names.get(parts.domain) == found):
                del self.table.hosts[host]

    def _cache(self) -> None:
        # Per-instance caches (not module state): referrers repeat, and this runs per request.
        self.referrer = functools.lru_cache(maxsize=8192)(self._referrer)
        self.registrable = functools.lru_cache(maxsize=8192)(self._registrable)

    def __getstate__(self) -> dict[str, object]:
        """Without the caches (not picklable): the import's worker processes get a fresh one."""
        return {k: v for k, v in self.__dict__.items() if k not in ("referrer", "registrable")}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._cache()

    def _registrable(self, host: str) -> str:
        """``blog.shop.co.uk`` → ``shop.co.uk``. A name under a suffix the list does not know
        (``blog.shop.corp``, ``www.shop.internal``) takes its last two labels, as the Public
        Suffix List's default rule (``*``) has it: the site's own subdomains there are one site.
        An address, or a name of one label (``localhost``), is its own."""
        found = self._extract(host).top_domain_under_public_suffix
        if found:
            return found
        labels = host.split(".")
        if len(labels) < 3 or parse_ip(host) is not None or not all(labels[-2:]):
            return host
        return ".".join(labels[-2:])

    def _referrer(self, host: str) -> tuple[str, str] | None:
        """(class, name) of a referrer host: the longest host key, else a webmail host, else the
        site's name. A host that may be an Android app's package name (the
        ``android-app://com.facebook.katana`` referrer; see ``_package_like``) is looked up
        reversed too."""
        host = host.lower().rstrip(".")
        found = self._by_host(host)
        if found is None:
            labels = host.split(".")
            if len(labels) > 1 and _package_like(labels, self._extract(host).suffix):
                found = self._by_host(".".join(reversed(labels)))
        return found

    def _by_host(self, host: str) -> tuple[str, str] | None:
        labels = host.split(".")
        for i in range(len(labels) - 1):
            found = self.table.hosts.get(".".join(labels[i:]))
            if found is not None:
                return found
        parts = self._extract(host)
        if not parts.suffix:
            return None
        if labels[0] in _WEBMAIL and parts.subdomain:  # mail.naver.com, webmail.ionos.de
            return "email", host
        return self.table.names.get(parts.domain)

    def source_class(self, source: str) -> str | None:
        """The class a ``utm_source`` value names (``google``, ``ig``, ``chatgpt.com``), if any."""
        if "." in source:
            found = self.referrer(source)
            return found[0] if found else None
        named = self.table.names.get(source)
        return named[0] if named else self.table.sources.get(source)

    def is_own(self, host: str, site_host: str | None = None) -> bool:
        """The referrer is the site itself (same registrable domain, or ``channels.own_domains``)."""
        host = host.lower().rstrip(".")
        if site_host and (host == site_host or self.registrable(host) == self.registrable(site_host)):
            return True
        return any(host == d or host.endswith("." + d) for d in self.own_domains)

    def starts_touchpoint(self, referrer_host: str, site_host: str | None = None) -> bool:
        """Should a landing from this referrer, with no campaign parameters, be a touchpoint?

        No for self-referrals, payment-gateway and sign-in returns: the return from checkout or
        from "Sign in with Google" continues the visitor's session and must not steal the
        credit from what brought them."""
        if self.is_own(referrer_host, site_host):
            return False
        found = self.referrer(referrer_host)
        return found is None or CLASS_CHANNEL[found[0]] != INTERNAL

    def classify(self, s: Signals, site_host: str | None = None) -> str:
        """The channel, by the first rule that decides: operator rules, click IDs, medium and
        source, creator ID, referrer class, then Referral, Unassigned (tagged, no rule) or Direct."""
        for rule in self.rules:
            if rule.matches(s):
                return rule.channel
        source = (s.source or "").strip().casefold()
        medium = (s.medium or "").strip().casefold()
        tagged = bool(source or medium or s.campaign or s.click_id_kind)
        if source == "(direct)" and medium in ("", "(none)", "(not set)"):
            return DIRECT
        if "cross-network" in (s.campaign or "").casefold():
            return CROSS_NETWORK
        source_class = self.source_class(source) if source else None
        found = None
        if s.click_id_kind:
            found = self._by_click(param_key(s.click_id_kind), source, medium, source_class)
        if found is None and (source or medium):
            found = self._by_params(source, medium, source_class)
        # A shopping campaign by its name, as GA4 reads it: its Paid Shopping rule takes any paid
        # medium, cpm too (a CPM ad of an unknown network is Display only outside one).
        cpm = found == DISPLAY and medium == "cpm" and not s.click_id_kind
        paid = found in (PAID_SEARCH, PAID_OTHER) or cpm
        if paid and _SHOPPING_CAMPAIGN.search(s.campaign or ""):
            return PAID_SHOPPING
        if found is not None:
            return found
        if s.creator_id:
            return self.creator_channel
        if s.referrer_host:
            if self.is_own(s.referrer_host, site_host):
                return INTERNAL
            referrer = self.referrer(s.referrer_host)
            return CLASS_CHANNEL[referrer[0]] if referrer else REFERRAL
        return UNASSIGNED if tagged else DIRECT

    def _by_click(self, kind: str, source: str, medium: str, source_class: str | None) -> str | None:
        if kind in _SEARCH_ADS or kind == "dclid":
            # Google's, Microsoft's (its Audience Network) and Yandex's display and video ads
            # carry the click ID too: the medium says which. Display & Video 360's and Campaign
            # Manager's dclid is Display, but for their video ads (YouTube bought through DV360),
            # read alike: until 2026-12-07 a dclid with utm_medium=video was Display while a
            # gclid with it was Paid Video.
            if medium in _DISPLAY:
                return DISPLAY
            if "video" in medium or source_class == "video":
                return PAID_VIDEO
            return DISPLAY if kind == "dclid" else PAID_SEARCH
        if kind in _SOCIAL_CLICKS:
            if _PAID.match(medium) or medium in _PAID_SOCIAL or medium in _DISPLAY:
                return PAID_SOCIAL
            if not medium and kind in _ADS_ONLY_SOCIAL_CLICKS:
                return PAID_SOCIAL
            found = ORGANIC_SOCIAL
            if medium and source_class != "social":
                # A newsletter link shared on Facebook keeps its utm_medium=email and gains an
                # fbclid: a medium naming another channel decides, as in GA4 (which reads no
                # social click ID); a social source stays Organic Social there too.
                found = self._by_params(source, medium, source_class) or ORGANIC_SOCIAL
            if kind in _ADS_ONLY_SOCIAL_CLICKS and found in _ORGANIC_TO_PAID:
                # Only ads carry it: a medium saying social, organic or video is the ad's own tag
                # (TikTok's, LinkedIn's ads tagged utm_medium=social), no organic visit.
                return _ORGANIC_TO_PAID[found]
            return found
        if kind == "mc_cid":  # Mailchimp campaign links
            return EMAIL
        if kind == "irclickid":  # Impact, an affiliate network
            return AFFILIATES
        return None

    def _by_params(self, source: str, medium: str, source_class: str | None) -> str | None:
        if medium in _DISPLAY:
            # cpm is how an ad is priced, not where it shows: GA4 reads it as a paid medium
            # (.*cp.*) before Display, so Meta's, YouTube's or Google's CPM ads are Paid Social,
            # Paid Video or Paid Search; only an unknown source's are Display.
            if medium == "cpm" and source_class in PAID_BY_CLASS:
                return PAID_BY_CLASS[source_class]
            return DISPLAY
        if medium in _PAID_SOCIAL:
            return PAID_SOCIAL
        if _PAID.match(medium) or medium in ("video_ads", "shopping_ads"):
            paid = PAID_BY_CLASS.get(source_class or "")
            if paid is None and ("video" in medium or medium == "cpv"):
                paid = PAID_VIDEO
            if paid is None and "shopping" in medium:
                paid = PAID_SHOPPING
            return paid or (PAID_SEARCH if medium in _PAID_SEARCH else PAID_OTHER)
        if _EMAIL.search(medium) or _EMAIL.search(source) or source_class == "email":
            return EMAIL
        if medium in _AFFILIATE:
            return AFFILIATES
        if medium in _INFLUENCER:
            return self.creator_channel
        if source_class == "ai" or medium in ("ai", "ai-assistant", "llm"):
            return AI_ASSISTANTS
        if source_class == "shopping" or medium in ("shopping", "product_listing"):
            return ORGANIC_SHOPPING
        if source_class == "social" or medium in _SOCIAL:
            return ORGANIC_SOCIAL
        if source_class == "video" or "video" in medium:
            return ORGANIC_VIDEO
        if source_class == "search" or medium == "organic":
            return ORGANIC_SEARCH
        if source == "sms" or medium == "sms" or source_class == "sms":
            return SMS
        if medium.endswith("push") or "mobile" in medium or "notification" in medium or source == "firebase":
            return MOBILE_PUSH
        if medium == "audio":
            return AUDIO
        if medium in _REFERRAL:
            return REFERRAL
        return None
