"""Privacy end to end through the real proxy and store: Sec-GPC leaves daily counts and no
cookie; consent yes/no/absent decides the ID cookie in the same response; every touchpoint
keeps its population."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiosqlite
from aiohttp import web

from gateway.events import Conversion, DailyCount, Touchpoint, iso
from gateway.ids import uuid7
from gateway.signing import legacy_signature, standard_signature
from tests.clients import PREVIEWERS, PRIVACY
from tests.conftest import TOKEN, RunningGateway

CONSENT = """
[privacy]
consent_cookie = { name = "banner", yes = ["all"], no = ["none"] }
"""
DOCUMENT = {
    "Accept": "text/html",
    "Accept-Language": "en-GB,en;q=0.5",
    "Sec-Fetch-Dest": "document",
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:144.0) Gecko/20100101 Firefox/144.0",
}
"""A person's page load: scored ``allow`` (an opted-out visitor's landing is counted only then)."""


def site() -> web.Application:
    async def page(request: web.Request) -> web.Response:
        response = web.Response(text="<html>ok</html>", content_type="text/html")
        if request.path == "/accept":
            response.headers["Set-Cookie"] = "banner=all; Path=/"
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", page)
    return app


async def rows(gw: RunningGateway, sql: str) -> list[Any]:
    async with aiosqlite.connect(gw.gateway.settings.store_path) as db, db.execute(sql) as cur:
        return list(await cur.fetchall())


async def get(gw: RunningGateway, target: str, headers: dict[str, str] | None = None) -> list[str]:
    async with gw.session.get(gw.url + target, headers={**DOCUMENT, **(headers or {})}) as resp:
        assert resp.status == 200
        return resp.headers.getall("Set-Cookie", [])


async def test_gpc_keeps_only_daily_counts_and_sets_no_cookie(start_gateway, upstream_server) -> None:
    gw = await start_gateway(await upstream_server(site()))
    for _ in range(3):
        assert await get(gw, "/l?utm_source=News&utm_campaign=Spring", {"Sec-GPC": "1"}) == []
    assert await rows(gw, "SELECT count(*) FROM touchpoints") == [(0,)]
    assert await rows(gw, "SELECT source, medium, campaign, count FROM daily_counts") == [
        ("news", "", "Spring", 3)
    ]
    cookies = await get(gw, "/l?utm_source=News")  # the same landing without GPC: tracked
    assert any(c.startswith("gw_vid=v1.") for c in cookies)
    assert await rows(gw, "SELECT consent FROM touchpoints") == [("cookie",)]
    # GPC sent again by a browser that kept its ID cookie: "on the device, nothing" — expired.
    kept = next(c for c in cookies if c.startswith("gw_vid=")).split(";")[0]
    expired = await get(gw, "/l?utm_source=News", {"Sec-GPC": "1", "Cookie": kept})
    # The mitmproxy host writes the same line (tests/addons/test_mitm.py).
    assert expired == ["gw_vid=; HttpOnly; Max-Age=0; Path=/; SameSite=Lax"]
    assert await rows(gw, "SELECT count(*) FROM touchpoints") == [(1,)]


async def test_an_opt_out_sent_on_two_lines_wins(start_gateway, upstream_server) -> None:
    """A browser or an extension that adds ``Sec-GPC: 1`` beside one already there (``0``) sends
    two lines: the first alone was read, and the visitor who opted out was tracked. Any ``1``
    among them is the opt-out, for ``DNT`` too (under ``privacy.honor_dnt``), and with a repeated
    Cookie (the lines then joined) as without."""
    gw = await start_gateway(await upstream_server(site()), "[privacy]\nhonor_dnt = true\n")
    twice = [
        [("Sec-GPC", "0"), ("Sec-GPC", "1")],
        [("DNT", "0"), ("DNT", "1")],
        [("Sec-GPC", "0"), ("Sec-GPC", "1"), ("Cookie", "a=1"), ("Cookie", "b=2")],
    ]
    for headers in twice:
        sent = [*DOCUMENT.items(), *headers]
        async with gw.session.get(gw.url + "/l?utm_source=News", headers=sent) as resp:
            assert resp.status == 200 and resp.headers.getall("Set-Cookie", []) == []
    assert await rows(gw, "SELECT count(*) FROM touchpoints") == [(0,)]
    assert await rows(gw, "SELECT count FROM daily_counts") == [(3,)]
    zeros = [*DOCUMENT.items(), ("Sec-GPC", "0"), ("Sec-GPC", "0")]
    async with gw.session.get(gw.url + "/l?utm_source=News", headers=zeros) as resp:
        assert any(c.startswith("gw_vid=v1.") for c in resp.headers.getall("Set-Cookie", []))
    assert await rows(gw, "SELECT count(*) FROM touchpoints") == [(1,)]


CRAWLER = "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)"
FIREFOX = {**PRIVACY["tor-browser"], "sec-gpc": "1"}
"""A person's Firefox with Global Privacy Control: scored ``allow``, 0."""


async def test_an_opted_out_landing_is_counted_only_when_scoring_lets_it_through(
    start_gateway, upstream_server
) -> None:
    """A landing that sends ``Sec-GPC: 1`` is only counted per day; a crawler's, a blocked
    client's or a good crawler's was counted as a visitor of its channel all the same (a crawler
    sending GPC inflated the day's Email or Paid Social). Counted now is what its touchpoint
    would have been, ``allow``; the others only in ``gateway_aggregate_landings_total``."""
    gw = await start_gateway(await upstream_server(site()), "[bots]\non_block = 'block'\n")
    landing = "/l?utm_source=News&utm_medium=email"
    for agent in (CRAWLER, "curl/8.5.0", PREVIEWERS["slack"]["user-agent"]):
        headers = {**FIREFOX, "user-agent": agent}
        async with gw.session.get(gw.url + landing, headers=headers) as resp:
            assert resp.status == (200 if agent.startswith("Slackbot") else 403)
    assert await rows(gw, "SELECT count(*) FROM daily_counts") == [(0,)]
    assert await get(gw, landing, FIREFOX) == []  # a person's: counted
    assert await rows(gw, "SELECT source, medium, channel, count FROM daily_counts") == [
        ("news", "email", "Email", 1)
    ]
    assert await rows(gw, "SELECT count(*) FROM touchpoints") == [(0,)]
    token = {"Authorization": f"Bearer {TOKEN}"}
    async with gw.session.get(gw.admin_url + "/metrics", headers=token) as resp:
        text = await resp.text()
    for verdict, n in (("allow", 1), ("block", 2), ("bot", 1), ("review", 0)):
        assert f'gateway_aggregate_landings_total{{verdict="{verdict}"}} {n}.0' in text


async def test_consent_decides_the_cookie_in_the_same_response(start_gateway, upstream_server) -> None:
    gw = await start_gateway(await upstream_server(site()), CONSENT)
    assert any(
        c.startswith("gw_vid=v1.") for c in await get(gw, "/a?utm_source=yes", {"Cookie": "banner=all"})
    )
    assert await get(gw, "/a?utm_source=no", {"Cookie": "banner=none"}) == []
    assert await get(gw, "/a?utm_source=absent") == []
    # The site's banner answers the click with its consent cookie: ours comes with it.
    accepted = await get(gw, "/accept")
    assert any(c.startswith("banner=all") for c in accepted)
    assert any(c.startswith("gw_vid=v1.") for c in accepted)
    populations = await rows(gw, "SELECT source, consent FROM touchpoints ORDER BY source")
    assert populations == [("absent", "no_consent"), ("no", "no_consent"), ("yes", "cookie")]


async def test_an_accept_that_clears_the_old_consent_cookie_first_gets_the_id_cookie(
    start_gateway, upstream_server
) -> None:
    """A banner moving its cookie to the whole domain answers the click with two lines, the
    host-only one cleared, then the domain one set: the first line alone was read, a
    withdrawal, and the visitor who accepted had their ID cookie expired. A withdrawal that
    writes the same cookie twice, ``yes`` then deleted, is a withdrawal."""

    async def page(request: web.Request) -> web.Response:
        response = web.Response(text="<html>ok</html>", content_type="text/html")
        if request.path == "/accept":
            response.headers.add("Set-Cookie", "banner=; Max-Age=0; Path=/")
            response.headers.add("Set-Cookie", "banner=all; Domain=shop.example; Path=/")
        elif request.path == "/withdraw":
            response.headers.add("Set-Cookie", "banner=all; Path=/")
            response.headers.add("Set-Cookie", "banner=all; Path=/; Max-Age=0")
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", page)
    gw = await start_gateway(await upstream_server(app), CONSENT)
    # The site's host, which the domain cookie covers: a browser refuses a Domain that does not
    # cover the host it asked, and the gateway reads such a line as the browser does (ignored).
    site_host = {"Host": "www.shop.example"}
    accepted = await get(gw, "/accept", {"Cookie": "banner=none", **site_host})
    ours = [c for c in accepted if c.startswith("gw_vid=")]
    assert len(ours) == 1 and ours[0].startswith("gw_vid=v1."), accepted
    withdrawn = await get(gw, "/withdraw", {"Cookie": f"banner=all; {ours[0].split(';')[0]}", **site_host})
    assert [c.split(";")[0] for c in withdrawn if c.startswith("gw_vid=")] == ["gw_vid="]


async def test_cookieless_mode_sets_no_cookie_and_keeps_the_visitor_for_the_day(
    start_gateway, upstream_server
) -> None:
    gw = await start_gateway(await upstream_server(site()), '[identity]\nmode = "cookieless"\n')
    assert await get(gw, "/a?utm_source=one") == []
    assert await get(gw, "/b?utm_source=two") == []
    keys = await rows(gw, "SELECT DISTINCT visitor_key, consent FROM touchpoints")
    assert len(keys) == 1 and keys[0][1] == "cookieless"


async def test_cookieless_mode_expires_an_id_cookie_left_from_cookie_mode(
    start_gateway, upstream_server
) -> None:
    # A site switched to cookieless: its visitors' browsers still hold the ID cookie for a year.
    gw = await start_gateway(await upstream_server(site()), '[identity]\nmode = "cookieless"\n')
    left = "gw_vid=v1.AAAAAAAAAAAAAAAAAAAAAA.BBBBBBBBBBBBBBBBBBBBBB"
    expired = await get(gw, "/a?utm_source=one", {"Cookie": left})
    assert len(expired) == 1 and expired[0].startswith("gw_vid=;") and "Max-Age=0" in expired[0]
    assert await get(gw, "/b") == []  # without one, nothing is set
    assert await rows(gw, "SELECT consent FROM touchpoints") == [("cookieless",)]


async def test_dashboard_summary_splits_populations(start_gateway, upstream_server) -> None:
    gw = await start_gateway(await upstream_server(site()))

    def at(hour: int) -> tuple[str, str]:
        moment = datetime(2026, 11, 3, hour, tzinfo=UTC)
        return uuid7(int(moment.timestamp() * 1000)), iso(moment)

    await gw.gateway.store.write(
        [
            Touchpoint(*at(1), "t", "a" * 32, channel="Email", consent="cookie"),
            Conversion(*at(2), "t", "buy", "order:1", "a" * 32, None, 10.0, "EUR"),
            Touchpoint(*at(3), "t", "b" * 32, channel="Paid Social", consent="no_consent"),
            Conversion(*at(4), "t", "buy", "order:2", "b" * 32, None, 20.0, "EUR"),
            DailyCount("2026-11-03", "news", count=7),
        ]
    )
    period = {"since": "2026-11-01", "until": "2026-11-08", "model": "last_touch"}
    body = await gw.api("/api/dashboard/summary", **period)
    assert body["populations"] == {"cookie": 1, "cookieless": 0, "no_consent": 1, "aggregate": 7}
    everyone = {r["channel"] for r in body["comparison"] if r["model"] == "last_touch"}
    assert everyone == {"Email", "Paid Social"}
    body = await gw.api("/api/dashboard/summary", population="no_consent", **period)
    assert [(r["channel"], r["value"]) for r in body["comparison"] if r["model"] == "last_touch"] == [
        ("Paid Social", 20.0)
    ]
    refused = await gw.api("/api/dashboard/summary", population="everyone", **period)
    assert refused["ok"] is False and "population: expected one of" in str(refused)


MARKER = "ada-4242@example.com"
SENDER = '[[sources]]\nname = "billing"\nsecrets = ["env:BILLING_SECRET"]\n'
BILLING = "b" * 32


async def send_event(gw: RunningGateway, event: dict[str, Any], msg_id: str) -> tuple[int, str]:
    """Post one event signed as the sender "billing"; the status and the error, if any."""
    body = json.dumps(event).encode()
    stamp = str(int(time.time()))
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": standard_signature(BILLING.encode(), msg_id, stamp, body),
        "content-type": "application/json",
    }
    async with gw.session.post(gw.url + "/_gw/events", data=body, headers=headers) as resp:
        return resp.status, (await resp.json()).get("error", "")


def store_bytes(gw: RunningGateway) -> bytes:
    """The store as it lies on disk: the file and its write-ahead log."""
    path = gw.gateway.settings.store_path
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


async def test_a_bad_events_reason_keeps_no_raw_value_at_rest(start_gateway, upstream_server) -> None:
    """The reason a signed event was refused for quotes the value it refuses: a user ID sent
    where the type belongs, an address where the value does. Like the body, it is sealed at
    rest (until 2026-12-05 it was stored as written), and the admin API opens it."""
    gw = await start_gateway(await upstream_server(site()), SENDER, {"BILLING_SECRET": BILLING})
    refused = [
        {"type": MARKER, "event_id": "e1", "user_id": "u1"},
        {"type": "conversion", "event_id": "e2", "user_id": "u1", "value": MARKER},
        {"type": "conversion", "event_id": "e3", "user_id": "u1", "value": 1, "currency": MARKER},
    ]
    for n, event in enumerate(refused):
        status, error = await send_event(gw, event, f"msg_{n}")
        assert status == 400 and MARKER[:20] in error  # to the sender that sent it
    assert await rows(gw, "SELECT count(*) FROM bad_events") == [(3,)]
    on_disk = await asyncio.to_thread(store_bytes, gw)  # file reads: off the event loop
    for form in (MARKER[:20], MARKER[:20].upper(), MARKER[:20].encode().hex()):
        assert form.encode() not in on_disk, form
    listed = await gw.api("/api/bad-events")
    assert [i["reason"] for i in listed["items"]] == [
        f"type (/type): '{MARKER}' is not mapped (known: conversion, identify, touchpoint; see types)",
        f"value (/value): expected a number, got '{MARKER}'",
        f"currency (/currency): expected a 3-letter ISO 4217 code, got '{MARKER[:20]}'",
    ]


async def test_erasure_takes_a_bad_event_whose_cut_body_lost_the_id_its_reason_quotes(
    start_gateway, upstream_server
) -> None:
    """A body longer than ``webhooks.bad_body_limit`` is kept cut; the ID past the cut is still
    in the (sealed) reason, so the erasure looks there too (until 2026-12-05 only the body)."""
    toml = SENDER + "[webhooks]\nbad_body_limit = 256\n"
    gw = await start_gateway(await upstream_server(site()), toml, {"BILLING_SECRET": BILLING})
    event = {"event_id": "e1", "user_id": "u1", "pad": "x" * 300, "type": MARKER}
    assert (await send_event(gw, event, "msg_cut"))[0] == 400
    assert await rows(gw, "SELECT truncated FROM bad_events") == [(1,)]
    async with gw.session.delete(
        gw.admin_url + "/api/users/" + MARKER, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as resp:
        assert resp.status == 200 and (await resp.json())["erased"]["bad_events"] == 1
    assert await rows(gw, "SELECT count(*) FROM bad_events") == [(0,)]


async def test_erasure_takes_a_bad_event_whose_body_escapes_the_id(start_gateway, upstream_server) -> None:
    """Senders escape JSON strings as their library does: Python's ``json`` writes ``ö`` as
    ``\\u00f6``, PHP's ``json_encode`` a ``/`` as ``\\/``. A body that is not JSON is kept as it came, so the
    erasure looks for those spellings of the ID too (until 2026-12-05 only the ID as typed: such
    a row outlived the erasure)."""
    gw = await start_gateway(await upstream_server(site()), SENDER, {"BILLING_SECRET": BILLING})
    user = "jörg/4242@example.com"
    escaped = json.dumps(user).replace("/", "\\/")  # "j\u00f6rg\/4242@example.com"
    # Not JSON (a trailing comma): kept as it came; a JSON event is kept re-encoded, unescaped.
    body = ('{"type": "conversion", "event_id": "e1", "user_id": ' + escaped + ",}").encode()
    stamp = str(int(time.time()))
    headers = {
        "webhook-id": "msg_esc",
        "webhook-timestamp": stamp,
        "webhook-signature": standard_signature(BILLING.encode(), "msg_esc", stamp, body),
        "content-type": "application/json",
    }
    async with gw.session.post(gw.url + "/_gw/events", data=body, headers=headers) as resp:
        assert resp.status == 400
    async with gw.session.delete(
        gw.admin_url + "/api/users/" + quote(user, safe=""), headers={"Authorization": f"Bearer {TOKEN}"}
    ) as resp:
        assert resp.status == 200 and (await resp.json())["erased"]["bad_events"] == 1


LEGACY_SENDER = '[[sources]]\nname = "crm"\nsecrets = ["env:CRM_SECRET"]\nlegacy_hex = true\n'
CRM = "c" * 32


async def send_legacy(gw: RunningGateway, body: bytes) -> dict[str, Any]:
    """Post ``body`` signed as the legacy-hex sender "crm" (no delivery ID: it is keyed by the body)."""
    headers = {
        "x-webhook-signature": legacy_signature(CRM.encode(), body),
        "content-type": "application/json",
    }
    async with gw.session.post(gw.url + "/_gw/events", data=body, headers=headers) as resp:
        return {"status": resp.status, **await resp.json()}


def small_event(user_id: str) -> bytes:
    """What a small CRM sends when someone signs up: no event ID, no time."""
    return json.dumps({"type": "conversion", "user_id": user_id, "name": "signup"}).encode()


async def test_a_delivery_keyed_by_its_body_keeps_no_unkeyed_digest_of_it(
    start_gateway, upstream_server
) -> None:
    """A sender that sends no delivery ID (legacy hex, Stripe, Paddle, Chargebee, a ``"hmac"``
    sender without ``delivery_header``, Segment) has its delivery keyed by its body. Keyed by the
    body's plain SHA-256 (until 2026-12-07), the receipt, and the key of an event with no ID of its
    own (in ``receipts`` and the conversion's ``dedup_key``), told anyone holding the store file
    which of a list of user IDs had signed up, without ``identity.secret``: hash each guess's
    body and look. The body's digest is keyed under ``identity.secret`` now."""
    gw = await start_gateway(await upstream_server(site()), LEGACY_SENDER, {"CRM_SECRET": CRM})
    body = small_event(MARKER)
    sent = await send_legacy(gw, body)
    assert (sent["status"], sent["result"]) == (202, "accepted"), sent
    guessed = hashlib.sha256(small_event(MARKER)).hexdigest()  # a dictionary attack's guess
    keys = await rows(gw, "SELECT key FROM receipts UNION ALL SELECT dedup_key FROM conversions")
    assert len(keys) == 3 and not [k for (k,) in keys if guessed in k], keys
    assert guessed.encode() not in await asyncio.to_thread(store_bytes, gw)
    assert guessed not in json.dumps(sent)
    again = await send_legacy(gw, body)  # still one delivery: a replay
    assert (again["status"], again["result"]) == (200, "duplicate"), again
    assert await rows(gw, "SELECT count(*) FROM conversions") == [(1,)]


async def test_a_delivery_received_before_its_body_was_keyed_is_still_a_duplicate(
    start_gateway, upstream_server
) -> None:
    """A store holding the receipts of a body-keyed delivery as versions before 2026-12-07 wrote
    them (``sha256:<digest>`` and ``sha256:<digest>#0``): the sender's retry after the upgrade is
    a duplicate, not a second signup; the old form is looked up, never written again."""
    gw = await start_gateway(await upstream_server(site()), LEGACY_SENDER, {"CRM_SECRET": CRM})
    body = small_event("u-7")
    old = "sha256:" + hashlib.sha256(body).hexdigest()
    now = iso(datetime.now(UTC))
    async with aiosqlite.connect(gw.gateway.settings.store_path) as db:
        for kind, key in (("delivery", old), ("event", old + "#0")):
            await db.execute(
                "INSERT INTO receipts (id, ts, node, sender, kind, key) VALUES (?, ?, 'n', 'crm', ?, ?)",
                (uuid7(), now, kind, key),
            )
        await db.commit()
    again = await send_legacy(gw, body)
    assert (again["status"], again["result"]) == (200, "duplicate"), again
    assert await rows(gw, "SELECT count(*) FROM conversions") == [(0,)]
    assert await rows(gw, "SELECT count(*) FROM receipts") == [(2,)]
    other = await send_legacy(gw, small_event("u-8"))  # a new body: recorded
    assert (other["status"], other["result"]) == (202, "accepted"), other
    assert await rows(gw, "SELECT count(*) FROM conversions") == [(1,)]


async def test_an_erased_users_signed_events_leave_no_id_of_the_sender_in_the_store(
    start_gateway, upstream_server
) -> None:
    """An erasure leaves the receipts of the user's signed events, so that a sender's retry is a
    duplicate and not the erased user recorded again. They held the sender's own IDs as sent (a
    Stripe ``evt_…``, a ``webhook-id``): with the sender's dashboard, anyone holding the store
    file could tell whom they were of, the user erased. They are keyed under ``identity.secret``
    now, and a retry is still a duplicate, under its delivery ID or a new one."""
    gw = await start_gateway(await upstream_server(site()), SENDER, {"BILLING_SECRET": BILLING})
    event = {"type": "conversion", "event_id": "evt_ada_1", "user_id": MARKER, "value": 5, "currency": "EUR"}
    assert await send_event(gw, event, "msg_ada_1") == (202, "")
    assert await rows(gw, "SELECT count(*) FROM conversions") == [(1,)]
    async with gw.session.delete(
        gw.admin_url + "/api/users/" + MARKER, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as resp:
        assert resp.status == 200 and (await resp.json())["erased"]["conversions"] == 1
    assert await send_event(gw, event, "msg_ada_1") == (200, "")  # the sender's retry
    assert await send_event(gw, event, "msg_ada_2") == (200, "")  # the event re-sent anew
    assert await rows(gw, "SELECT count(*) FROM conversions") == [(0,)]
    on_disk = await asyncio.to_thread(store_bytes, gw)
    assert [i for i in ("evt_ada_1", "msg_ada_1", "msg_ada_2") if i.encode() in on_disk] == []


async def test_a_receipt_kept_before_receipts_were_keyed_still_makes_a_retry_a_duplicate(
    start_gateway, upstream_server
) -> None:
    """A store holding receipts as versions before 2026-12-07 wrote them (the sender's IDs as
    sent): a retry after the upgrade, under the same delivery ID or a new one, is a duplicate;
    the old forms are looked up, never written again."""
    gw = await start_gateway(await upstream_server(site()), SENDER, {"BILLING_SECRET": BILLING})
    now = iso(datetime.now(UTC))
    async with aiosqlite.connect(gw.gateway.settings.store_path) as db:
        for kind, key in (("delivery", "msg_old"), ("event", "evt_old")):
            await db.execute(
                "INSERT INTO receipts (id, ts, node, sender, kind, key) VALUES (?, ?, 'n', 'billing', ?, ?)",
                (uuid7(), now, kind, key),
            )
        await db.commit()
    event = {"type": "conversion", "event_id": "evt_old", "user_id": "u-old", "value": 5, "currency": "EUR"}
    assert await send_event(gw, event, "msg_old") == (200, "")
    assert await send_event(gw, event, "msg_new") == (200, "")
    assert await rows(gw, "SELECT count(*) FROM conversions") == [(0,)]
    kept = await rows(gw, "SELECT kind, key FROM receipts ORDER BY kind, key")
    assert ("delivery", "msg_new") not in kept and len(kept) == 3, kept
    other = {**event, "event_id": "evt_new"}
    assert await send_event(gw, other, "msg_other") == (202, "")
    assert await rows(gw, "SELECT count(*) FROM conversions") == [(1,)]


async def test_what_an_older_gateway_finds_of_events_received_since_receipts_were_keyed(
    start_gateway, upstream_server
) -> None:
    """README *Upgrading*, *Going back*: a gateway from before 2026-12-07 05:19 looks receipts up by
    the sender's keys as sent, so on a store this version wrote it finds none of them. A conversion
    still counts once there (its order or event key is its row's ``dedup_key``, as sent, which
    refuses it again); a touchpoint event has no such row, and is recorded again."""
    gw = await start_gateway(await upstream_server(site()), SENDER, {"BILLING_SECRET": BILLING})
    paid = {"user_id": "u-dg", "value": 5, "currency": "EUR"}
    events = [
        ({"type": "conversion", "event_id": "evt_dg_1", **paid}, "msg_dg_1"),
        ({"type": "conversion", "event_id": "evt_dg_2", "order_id": "o-dg", **paid}, "msg_dg_2"),
        (
            {"type": "touchpoint", "event_id": "evt_dg_3", "visitor_id": "v-dg", "source": "partnerx"},
            "msg_dg_3",
        ),
    ]
    for event, msg_id in events:
        assert await send_event(gw, event, msg_id) == (202, "")
    as_sent = {"msg_dg_1", "msg_dg_2", "msg_dg_3", "evt_dg_1", "evt_dg_2", "evt_dg_3"}
    assert [k for (k,) in await rows(gw, "SELECT key FROM receipts") if k in as_sent] == []
    keys = sorted(k for (k,) in await rows(gw, "SELECT dedup_key FROM conversions"))
    assert keys == ["event:billing:evt_dg_1", "order:o-dg"], keys
