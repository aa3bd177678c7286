"""Request headers of the clients influencer traffic comes from, as 2025-26 versions send them.

Used by the bot-scoring tests (``tests/addons/test_bots.py``, ``tests/gateway/test_fraud.py``).
``BROWSER`` is a person's desktop Safari opening a page (scores ``allow``), for the gateway
tests whose visitor is an ordinary one (``test_fraud.py``, ``test_demo.py``,
``test_erasure_in_flight.py``). Three groups besides: people in in-app and privacy browsers
(must score ``allow``), link-preview fetchers and ad-review crawlers (``bot``: never a click,
never fraud), and mail link scanners (never ``allow``).

Where the shapes come from: in-app agents follow the formats in isbot's browser fixtures
(``fixtures/browsers.yml``: Instagram, Facebook, Snapchat, Pinterest, WeChat, TikTok, Twitter
App, DuckDuckGo) with current version numbers; Android WebView agents follow the Android CDD
(``…; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/…``), their client hints
carry the ``Android WebView`` brand (Chromium ``aw_client_hints_controller_delegate``), and
``X-Requested-With`` names the app only where the app still opts in (Chromium's 2023-25
deprecation of the header); WKWebView sends Safari's Sec-Fetch-* and never Sec-CH-UA. Preview
agents are the strings the services document: Google's special-case crawler list (AdsBot),
Meta's crawler page (facebookexternalhit, meta-externalfetcher), Slack's robots page, Discord,
Snap's robots page, Bluesky's Cardyb, Mastodon's http.rb fetcher; iMessage's is the combined
``facebookexternalhit … Twitterbot`` agent it is seen to send, Telegram's ``TelegramBot (like
TwitterBot)``. Mail scanners: Office's link check (``ms-office``), Barracuda Sentinel (in the
CrawlerDetect database), and a Defender/Proofpoint-style detonation that claims desktop Chrome
but sends neither ``Accept-Language`` nor client hints.
"""

from __future__ import annotations

BROWSER = {
    "User-Agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.1 Safari/605.1.15",
    "Accept": "text/html",
    "Accept-Language": "en-GB",
    "Sec-Fetch-Dest": "document",
}
"""Desktop Safari navigating to a page, as a person's visit sends it."""
_IOS = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko)"
_WEBVIEW = (
    "Mozilla/5.0 (Linux; Android 15; SM-S921B Build/AP3A.240905.015; wv) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Version/4.0 Chrome/141.0.7390.122 Mobile Safari/537.36"
)
WKWEBVIEW_HEADERS = {
    "accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "accept-language": "en-GB,en;q=0.9",
    "accept-encoding": "gzip, deflate, br",
    "sec-fetch-site": "cross-site",
    "sec-fetch-mode": "navigate",
    "sec-fetch-dest": "document",
    "priority": "u=0, i",
}
ANDROID_WEBVIEW_HEADERS = {
    "accept": "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;"
    "q=0.8,application/signed-exchange;v=b3;q=0.7",
    "accept-language": "en-GB,en-US;q=0.9,en;q=0.8",
    "accept-encoding": "gzip, deflate, br, zstd",
    "sec-ch-ua": '"Android WebView";v="141", "Not?A_Brand";v="8", "Chromium";v="141"',
    "sec-ch-ua-mobile": "?1",
    "sec-ch-ua-platform": '"Android"',
    "upgrade-insecure-requests": "1",
    "sec-fetch-site": "cross-site",
    "sec-fetch-mode": "navigate",
    "sec-fetch-user": "?1",
    "sec-fetch-dest": "document",
}
_NO_HINTS = {k: v for k, v in ANDROID_WEBVIEW_HEADERS.items() if not k.startswith("sec-ch-")}


def _ios(tail: str, **extra: str) -> dict[str, str]:
    return {"user-agent": f"{_IOS} {tail}", **WKWEBVIEW_HEADERS, **extra}


def _android(tail: str, app: str | None, hints: bool = True, **extra: str) -> dict[str, str]:
    headers = {
        "user-agent": f"{_WEBVIEW} {tail}",
        **(ANDROID_WEBVIEW_HEADERS if hints else _NO_HINTS),
        **extra,
    }
    if app:
        headers["x-requested-with"] = app
    return headers


_IG_ANDROID = (
    "Instagram 400.0.0.48.77 Android (35/15; 480dpi; 1080x2340; samsung; SM-S921B; e1s; s5e9945; "
    "en_GB; 812345679)"
)
IN_APP: dict[str, dict[str, str]] = {
    "instagram-ios": _ios(
        "Mobile/15E148 Instagram 400.0.0.35.88 (iPhone16,2; iOS 18_6; en_GB; en-GB; scale=3.00; 1290x2796; "
        "812345678; IABMV/1) NW/3",
        referer="https://l.instagram.com/",
    ),
    "instagram-android": _android(_IG_ANDROID, "com.instagram.android", referer="https://l.instagram.com/"),
    # Once X-Requested-With is gone (the app did not opt in) and the app's UA override drops the hints.
    "instagram-android-bare": _android(_IG_ANDROID, None, hints=False),
    "facebook-ios": _ios(
        "Mobile/22G86 [FBAN/FBIOS;FBAV/530.0.0.41.106;FBBV/812345678;FBDV/iPhone16,2;FBMD/iPhone;FBSN/iOS;"
        "FBSV/18.6;FBSS/3;FBID/phone;FBLC/en_GB;FBOP/5;FBRV/0;IABMV/1]",
        referer="https://m.facebook.com/",
    ),
    "facebook-android": _android("[FB_IAB/FB4A;FBAV/530.0.0.52.74;IABMV/1;]", "com.facebook.katana"),
    "messenger-ios": _ios(
        "Mobile/15E148 [FBAN/MessengerLiteForiOS;FBAV/530.0.0.20.109;FBDV/iPhone16,2;FBSV/18.6]"
    ),
    "messenger-android": _android("[FB_IAB/Orca-Android;FBAV/530.0.0.15.108;]", "com.facebook.orca"),
    "threads-ios": _ios(
        "Mobile/15E148 Barcelona 390.0.0.25.87 (iPhone16,2; iOS 18_6; en_GB; en-GB; scale=3.00)"
    ),
    "tiktok-ios": _ios(
        "Mobile/15E148 musical_ly_41.5.0 JsSdk/2.0 NetType/WIFI Channel/App Store ByteLocale/en Region/GB "
        "isDarkMode/0 WKWebView/1 RevealType/Dialog BytedanceWebview/d8a21c6"
    ),
    "tiktok-android": _android(
        "trill_410503 JsSdk/1.0 NetType/WIFI Channel/googleplay AppName/musical_ly app_version/41.5.3 "
        "ByteLocale/en ByteFullLocale/en Region/GB AppId/1233 BytedanceWebview/d8a21c6",
        "com.zhiliaoapp.musically",
    ),
    "snapchat-ios": _ios("Mobile/15E148 Snapchat/13.60.0.42 (like Safari/8621.3.11.10.4, panda)"),
    # Snapchat's Android token follows "Safari/537.36" without a space.
    "snapchat-android": {
        **_android("", "com.snapchat.android"),
        "user-agent": _WEBVIEW + "Snapchat/13.60.0.42 (SM-S921B; Android 15#S921BXXS4BYI1#35; gzip; )",
    },
    "linkedin-ios": _ios("Mobile/15E148 [LinkedInApp]/9.31.1234"),
    "linkedin-android": _android("[LinkedInApp]/4.1.1100", "com.linkedin.android"),
    "x-ios": _ios("Mobile/15E148 Twitter for iPhone/11.20"),
    # X opens links in SFSafariViewController / Chrome Custom Tabs: the browser's own headers.
    "x-ios-safari-view": _ios("Version/18.6 Mobile/15E148 Safari/604.1"),
    "pinterest-ios": _ios("Mobile/15E148 [Pinterest/iOS]"),
    "pinterest-android": _android("[Pinterest/Android]", "com.pinterest"),
    "wechat-ios": _ios("Mobile/15E148 MicroMessenger/8.0.61(0x18003d2b) NetType/WIFI Language/en"),
    "wechat-android": _android(
        "XWEB/1380165 MMWEBSDK/20250503 MMWEBID/1234 MicroMessenger/8.0.61.2880(0x28003D35) WeChat/arm64 "
        "Weixin NetType/WIFI Language/en ABI/arm64",
        "com.tencent.mm",
    ),
    "google-app-ios": _ios("GSA/386.0.780123456 Mobile/15E148 Safari/604.1"),
}
PRIVACY: dict[str, dict[str, str]] = {
    "tor-browser": {
        "user-agent": "Mozilla/5.0 (Windows NT 10.0; rv:128.0) Gecko/20100101 Firefox/128.0",
        "accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        "accept-language": "en-US,en;q=0.5",
        "accept-encoding": "gzip, deflate, br",
        "upgrade-insecure-requests": "1",
        "sec-fetch-dest": "document",
        "sec-fetch-mode": "navigate",
        "sec-fetch-site": "cross-site",
    },
    "firefox-android": {
        "user-agent": "Mozilla/5.0 (Android 15; Mobile; rv:144.0) Gecko/144.0 Firefox/144.0",
        "accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        "accept-language": "en-GB,en;q=0.5",
        "sec-fetch-dest": "document",
        "sec-fetch-mode": "navigate",
    },
    "firefox-ios": _ios("FxiOS/144.0 Mobile/15E148 Safari/605.1.15"),
    "duckduckgo-ios": _ios("Version/18.6 Mobile/15E148 DuckDuckGo/7 Safari/605.1.15"),
    # A WebView with its agent rewritten (no "; wv", no model): WebView then sends no client hints.
    "duckduckgo-android": {
        **_NO_HINTS,
        "user-agent": "Mozilla/5.0 (Linux; Android 15) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 "
        "Chrome/141.0.0.0 Mobile DuckDuckGo/5 Safari/537.36",
    },
    "safari-ios-private-relay": _ios("Version/18.6 Mobile/15E148 Safari/604.1"),
}
_ANY = {"accept": "*/*"}
PREVIEWERS: dict[str, dict[str, str]] = {
    "imessage": {
        "user-agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_1) AppleWebKit/601.2.4 (KHTML, like "
        "Gecko) Version/9.0.1 Safari/601.2.4 facebookexternalhit/1.1 Facebot Twitterbot/1.0",
        "accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        "accept-language": "en-GB,en;q=0.9",
    },
    # Signal's previews use the same "WhatsApp/2" agent.
    "whatsapp-android": {"user-agent": "WhatsApp/2.25.30.75 A", **_ANY},
    "whatsapp-ios": {"user-agent": "WhatsApp/2.25.30.75 i", **_ANY},
    "slack": {"user-agent": "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", **_ANY},
    "discord": {
        "user-agent": "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
        "accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    },
    "telegram": {"user-agent": "TelegramBot (like TwitterBot)", "accept-encoding": "gzip, deflate"},
    "facebook": {
        "user-agent": "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        **_ANY,
    },
    "meta-fetcher": {
        "user-agent": "meta-externalfetcher/1.1 (+https://developers.facebook.com/docs/sharing/webmasters/crawler)",
        **_ANY,
    },
    "x": {"user-agent": "Twitterbot/1.0", **_ANY},
    "linkedin": {
        "user-agent": "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
        **_ANY,
    },
    "pinterest": {
        "user-agent": "Mozilla/5.0 (compatible; Pinterestbot/1.0; +http://www.pinterest.com/bot.html)"
    },
    "snapchat": {
        "user-agent": "Mozilla/5.0 (compatible; Snap URL Preview Service; bot; snapchat; "
        "https://developers.snap.com/robots)",
        **_ANY,
    },
    "teams-skype": {
        "user-agent": "Mozilla/5.0 (Windows NT 6.1; WOW64) SkypeUriPreview Preview/0.5 "
        "skype-url-preview@microsoft.com",
        **_ANY,
    },
    "bluesky": {
        "user-agent": "Mozilla/5.0 (compatible; Bluesky Cardyb/1.1; +mailto:support@bsky.app)",
        **_ANY,
    },
    "mastodon": {"user-agent": "http.rb/5.2.0 (Mastodon/4.4.3; +https://mastodon.social/)", **_ANY},
    "google-adsbot": {"user-agent": "AdsBot-Google (+http://www.google.com/adsbot.html)", **_ANY},
    "google-adsbot-mobile": {
        "user-agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 14_7_1 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/14.1.2 Mobile/15E148 Safari/604.1 (compatible; AdsBot-Google-Mobile; "
        "+http://www.google.com/mobile/adsbot.html)",
        "accept": "text/html",
    },
    "line": {"user-agent": "facebookexternalhit/1.1;line-poker/1.0", **_ANY},
    # A link posted to Reddit: redditbot fetches it, then Embedly, to which Reddit hands the page's
    # metadata (https://opengraphplus.com/consumers/reddit/crawling).
    "reddit": {
        "user-agent": "Mozilla/5.0 (compatible; redditbot/1.0; +http://www.reddit.com/feedback)",
        **_ANY,
    },
    "reddit-embedly": {
        "user-agent": "Mozilla/5.0 (compatible; Embedly/0.2; +http://support.embed.ly/)",
        **_ANY,
    },
    # Google's link preview (Google Chat, Google Messages): Odoo's link_tracker tests count no
    # click for it as Google Messages' preview agent; ua-parser-js lists it among its on-demand
    # fetchers (src/extensions/ua-parser-extensions.js, Fetchers).
    "google-chat": {
        "user-agent": "Mozilla/5.0 Google-PageRenderer Google (+https://developers.google.com/+/web/snippet/)",
        **_ANY,
    },
    # A link shared on TikTok (https://darkvisitors.com/agents/tiktokspider: a fetcher for link
    # previews, operated by ByteDance).
    "tiktok": {
        "user-agent": "Mozilla/5.0 (Linux; Android 5.0) AppleWebKit/537.36 (KHTML, like Gecko) Mobile "
        "Safari/537.36 (compatible; TikTokSpider; ttspider-feedback@tiktok.com)",
        **_ANY,
    },
    # Slack's image proxy fetching a preview's image (https://api.slack.com/robots; the agent as
    # crawlerdex.tn3w.dev/Slack-ImgProxy records it).
    "slack-imgproxy": {"user-agent": "Slack-ImgProxy (+https://api.slack.com/robots)", **_ANY},
}
MAIL_SCANNERS: dict[str, dict[str, str]] = {
    "office-link-check": {"user-agent": "Mozilla/4.0 (compatible; ms-office; MSOffice 16)", **_ANY},
    "barracuda": {"user-agent": "Barracuda Sentinel (EE)", **_ANY},
    "detonation-chrome": {
        "user-agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36",
        "accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        "accept-encoding": "gzip, deflate, br",
    },
}
