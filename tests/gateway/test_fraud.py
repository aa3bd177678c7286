"""Bots end to end: scored touchpoints in the store and the API, the fraud report, the review
queue, analyst overrides, re-scores, and the block action — through a real gateway."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from jsonschema import Draft202012Validator

from gateway.events import Touchpoint, iso
from gateway.ids import Uuid7
from gateway.importrun import run_import
from gateway.openapi import openapi_document
from tests.clients import BROWSER, IN_APP, MAIL_SCANNERS, PREVIEWERS, PRIVACY
from tests.conftest import TOKEN, make_settings
from tests.gateway.test_malformed import raw_request
from tests.gateway.test_openapi import response_schema

AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {**AUTH, "Content-Type": "application/json"}
"""A JSON body's headers, for one sent as bytes or text (``json=`` labels its own)."""
_new_id = Uuid7()
CURL = {"User-Agent": "curl/8.4.0", "Accept": "*/*"}
TRUST = "[proxy]\ntrusted_proxies = ['127.0.0.1']\n"


@pytest.fixture
async def origin(upstream_server) -> tuple[str, list[str]]:
    seen: list[str] = []

    async def page(request: web.Request) -> web.Response:
        seen.append(request.path_qs)
        return web.Response(text="<html>shop</html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    return await upstream_server(app), seen


async def visit(gw, path: str, headers: dict[str, str], ip: str = "198.51.100.1", **kw: Any) -> Any:
    async with gw.session.get(gw.url + path, headers={**headers, "X-Forwarded-For": ip}, **kw) as resp:
        await resp.read()
        return resp


async def rescored_landing(gw, query: str) -> dict[str, Any]:
    """A landing at ``/?{query}``, then a robots.txt fetch by the same visitor (a late signal
    that re-scores it): the touchpoint as the admin API lists it."""
    resp = await visit(gw, f"/?{query}", BROWSER)
    cookie = resp.cookies["gw_vid"].value
    await visit(gw, "/robots.txt", {**BROWSER, "Sec-Fetch-Dest": "empty", "Cookie": f"gw_vid={cookie}"})
    (item,) = (await gw.api("/api/touchpoints"))["items"]
    return item


def valid(path: str, body: dict[str, Any], status: int = 200, method: str = "get") -> None:
    if method == "get":
        schema = response_schema(path, status)
    else:
        doc = openapi_document()
        raw = doc["paths"][path][method]["responses"][str(status)]["content"]["application/json"]["schema"]
        import json

        text = json.dumps({**raw, "$defs": doc["components"]["schemas"]})
        schema = json.loads(text.replace("#/components/schemas/", "#/$defs/"))
    Draft202012Validator(schema).validate(body)


async def test_scored_touchpoints_fraud_report_and_review(start_gateway, origin) -> None:
    url, _ = origin
    gw = await start_gateway(url, TRUST)
    for n in range(3):
        await visit(gw, "/?utm_source=ig&creator_id=anna", BROWSER, ip=f"198.51.100.{n}")
    await visit(gw, "/?utm_source=ig&creator_id=anna", CURL, ip="203.0.113.5")
    await visit(gw, "/?utm_source=ig&creator_id=anna", CURL, ip="203.0.113.5")
    no_language = {k: v for k, v in BROWSER.items() if k != "Accept-Language"}
    await visit(gw, "/?utm_source=ig&creator_id=ben", {**no_language, "Sec-Purpose": "prefetch"})

    page = await gw.api("/api/touchpoints")
    valid("/api/touchpoints", page)
    by_verdict = {}
    for item in page["items"]:
        by_verdict.setdefault(item["verdict"], []).append(item)
        assert "ip_hash" not in item
    assert len(by_verdict["allow"]) == 3 and all(i["reasons"] == [] for i in by_verdict["allow"])
    assert [i["reasons"] for i in by_verdict["block"]] == [["http_library"], ["http_library"]]
    (queued,) = by_verdict["review"]
    assert queued["reasons"] == ["no_accept_language", "prefetch"] and queued["bot_score"] == 30

    report = await gw.api("/api/fraud", group_by="creator_id")
    valid("/api/fraud", report)
    anna, ben = report["groups"]
    assert (anna["key"], anna["clicks"], anna["distinct_ips"], anna["distinct_visitors"]) == ("anna", 5, 4, 5)
    assert anna["verdicts"] == {"allow": 3, "review": 0, "block": 2, "bot": 0, "unscored": 0}
    assert anna["shares"]["block"] == 0.4
    assert anna["top_reasons"] == [{"reason": "http_library", "count": 2}]
    assert (ben["key"], ben["clicks"], ben["verdicts"]["review"]) == ("ben", 1, 1)
    by_source = await gw.api("/api/fraud", group_by="source", since="2000-01-01", until="9999-01-01")
    assert [(g["key"], g["clicks"]) for g in by_source["groups"]] == [("ig", 6)]
    # The period echoed as the reports echo theirs (it had microseconds: ….000000Z).
    assert (by_source["since"], by_source["until"]) == ("2000-01-01T00:00:00Z", "9999-01-01T00:00:00Z")
    exact = await gw.api("/api/fraud", since="2026-11-01T10:00:00.5+01:00")
    assert exact["since"] == "2026-11-01T09:00:00.500000Z"

    review = await gw.api("/api/review")
    valid("/api/review", review)
    assert [i["id"] for i in review["items"]] == [queued["id"]]
    blocked = await gw.api("/api/review", verdict="block")
    assert len(blocked["items"]) == 2
    assert (await gw.api("/api/review", verdict="block", creator_id="ben"))["items"] == []
    assert len((await gw.api("/api/review", creator_id="ben", source="IG"))["items"]) == 1

    # An analyst clears it: kept with who and why; the queue empties; the effective verdict shows.
    async with gw.session.post(
        f"{gw.admin_url}/api/touchpoints/{queued['id']}/verdict",
        headers=AUTH,
        json={"verdict": "allow", "analyst": "maria", "reason": "creator's own preview link"},
    ) as resp:
        assert resp.status == 200
        body = await resp.json()
    valid("/api/touchpoints/{touchpoint_id}/verdict", body, method="post")
    assert body["touchpoint"]["verdict"] == "allow" and body["touchpoint"]["verdict_origin"] == "analyst"
    assert body["touchpoint"]["reasons"] == ["no_accept_language", "prefetch"]
    (change,) = body["changes"]
    assert (change["analyst"], change["note"], change["origin"]) == (
        "maria",
        "creator's own preview link",
        "analyst",
    )
    assert (await gw.api("/api/review"))["items"] == []
    ben = (await gw.api("/api/fraud"))["groups"][1]
    assert ben["verdicts"]["allow"] == 1 and ben["verdicts"]["review"] == 0


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        (
            "{id}",
            {"verdict": "maybe", "analyst": "a", "reason": "b"},
            400,
            "verdict: expected one of allow, review, block, bot, got 'maybe'",
        ),
        ("{id}", {"verdict": "allow", "reason": "b"}, 400, "body: object missing required field analyst"),
        ("{id}", {"verdict": "allow", "analyst": " ", "reason": "b"}, 400, "analyst: expected 1..100"),
        (
            "{id}",
            {"verdict": "allow", "analyst": "a", "reason": "b", "x": 1},
            400,
            "body: object contains unknown field x",
        ),
        ("{id}", "not json", 400, "body: expected JSON"),
        (
            "0190a2b4-0000-7000-8000-000000000000",
            {"verdict": "allow", "analyst": "a", "reason": "b"},
            404,
            "",
        ),
        ("nope", {"verdict": "allow", "analyst": "a", "reason": "b"}, 400, "touchpoint_id: expected"),
        # "$" let a trailing newline through: a 404 that echoed it back.
        ("{id}%0A", {"verdict": "allow", "analyst": "a", "reason": "b"}, 400, "touchpoint_id: expected"),
    ],
)
async def test_override_rejects_bad_input(start_gateway, origin, path, body, status, message) -> None:
    url, _ = origin
    gw = await start_gateway(url)
    await visit(gw, "/?utm_source=x", CURL)
    (item,) = (await gw.api("/api/touchpoints"))["items"]
    kwargs = {"data": body} if isinstance(body, str) else {"json": body}
    async with gw.session.post(
        f"{gw.admin_url}/api/touchpoints/{path.format(id=item['id'])}/verdict", headers=JSON, **kwargs
    ) as resp:
        assert resp.status == status
        answer = await resp.json()
    assert answer["ok"] is False and message in answer["error"]


async def test_a_touchpoints_verdict_history_is_readable(start_gateway, origin) -> None:
    """The audit trail of a verdict — the re-scores and every analyst's override, with who and
    why — is read without writing one: before, only a new override's answer showed it."""
    gw = await start_gateway(origin[0])
    item = await rescored_landing(gw, "utm_source=ig&creator_id=anna")
    path = f"/api/touchpoints/{item['id']}/verdict"
    for verdict, analyst, reason in (
        ("allow", "maria", "her own preview"),
        ("review", "li", "undo: not hers"),
    ):
        async with gw.session.post(
            gw.admin_url + path, headers=AUTH, json={"verdict": verdict, "analyst": analyst, "reason": reason}
        ) as resp:
            assert resp.status == 200
            posted = await resp.json()
    history = await gw.api(path)
    valid("/api/touchpoints/{touchpoint_id}/verdict", history)
    assert history == posted
    assert [(c["origin"], c["verdict"], c["analyst"], c["note"]) for c in history["changes"]] == [
        ("rescore", "review", None, "robots_txt"),
        ("analyst", "allow", "maria", "her own preview"),
        ("analyst", "review", "li", "undo: not hers"),
    ]
    assert (history["touchpoint"]["verdict"], history["touchpoint"]["verdict_origin"]) == (
        "review",
        "analyst",
    )
    assert await gw.api(f"/api/touchpoints/{item['id'].upper()}/verdict") == history
    missing = await gw.api("/api/touchpoints/0190a2b4-0000-7000-8000-000000000000/verdict")
    assert missing == {
        "ok": False,
        "status": 404,
        "error": "no touchpoint 0190a2b4-0000-7000-8000-000000000000",
    }
    assert (await gw.api("/api/touchpoints/nope/verdict"))["status"] == 400
    assert (await gw.api(path, x="1"))["status"] == 400


async def test_an_override_withdrawn_gives_the_verdict_back_to_the_scoring(start_gateway, origin) -> None:
    """``DELETE /api/touchpoints/{id}/verdict``: an override made by mistake is withdrawn, with
    who and why in the audit trail; the verdict is the scoring's again (here the robots.txt
    re-score's, ``review``: back in the queue) until another override. Nothing to withdraw is
    a 409 saying so; bad input a 400 as for an override."""
    gw = await start_gateway(origin[0])
    item = await rescored_landing(gw, "utm_source=ig&creator_id=anna")
    url = f"{gw.admin_url}/api/touchpoints/{item['id']}/verdict"
    withdraw = {"analyst": "li", "reason": "allowed the wrong click"}

    async def call(method: str, body: Any) -> tuple[int, Any]:
        async with gw.session.request(method, url, headers=AUTH, json=body) as resp:
            return resp.status, await resp.json()

    status, answer = await call("DELETE", withdraw)
    assert (status, answer["error"]) == (
        409,
        f"touchpoint {item['id']} has no analyst's override to withdraw: its verdict (review) is the"
        " scoring's",
    )
    assert (await call("POST", {"verdict": "allow", "analyst": "maria", "reason": "her preview"}))[0] == 200
    assert (await gw.api("/api/review"))["items"] == []
    status, answer = await call("DELETE", withdraw)
    assert status == 200, answer
    valid("/api/touchpoints/{touchpoint_id}/verdict", answer, method="delete")
    assert (answer["touchpoint"]["verdict"], answer["touchpoint"]["verdict_origin"]) == ("review", "rescore")
    assert [(c["origin"], c["verdict"], c["analyst"], c["note"]) for c in answer["changes"]] == [
        ("rescore", "review", None, "robots_txt"),
        ("analyst", "allow", "maria", "her preview"),
        ("analyst_cleared", "review", "li", "allowed the wrong click"),
    ]
    assert answer == await gw.api(f"/api/touchpoints/{item['id']}/verdict")
    assert [i["id"] for i in (await gw.api("/api/review"))["items"]] == [item["id"]]
    assert (await gw.api("/api/fraud"))["groups"][0]["verdicts"]["review"] == 1
    assert (await call("DELETE", withdraw))[0] == 409  # withdrawn already
    # Another override after it counts, and can be withdrawn in its turn.
    assert (await call("POST", {"verdict": "block", "analyst": "li", "reason": "farm"}))[1]["touchpoint"][
        "verdict"
    ] == "block"
    assert (await call("DELETE", withdraw))[1]["touchpoint"]["verdict"] == "review"
    for body, message in (
        ({"reason": "b"}, "body: object missing required field analyst"),
        ({"analyst": "a", "reason": " "}, "reason: expected 1..1000"),
        ({"analyst": "a", "reason": "b", "verdict": "allow"}, "body: object contains unknown field verdict"),
        ("not json", "body: expected JSON like"),
        (
            {"analyst": "a", "reason": "\udfff b"},
            "reason: holds \\udfff, half of a UTF-16 surrogate pair alone",
        ),
    ):
        async with gw.session.delete(
            url, headers=JSON, **({"data": body} if isinstance(body, str) else {"json": body})
        ) as resp:
            assert resp.status == 400 and message in (await resp.json())["error"], message
    missing = url.replace(item["id"], "0190a2b4-0000-7000-8000-000000000000")
    async with gw.session.delete(missing, headers=AUTH, json=withdraw) as resp:
        assert resp.status == 404


async def test_ids_in_capitals_are_the_same_touchpoint_and_visitor(start_gateway, origin) -> None:
    """A UUID (or a hex visitor key) is case-insensitive on input (RFC 9562 §4): pasted in
    capitals from a spreadsheet it names the same row, not a 400."""
    gw = await start_gateway(origin[0])
    await visit(gw, "/?utm_source=x", CURL)
    (item,) = (await gw.api("/api/touchpoints"))["items"]
    async with gw.session.post(
        f"{gw.admin_url}/api/touchpoints/{item['id'].upper()}/verdict",
        headers=AUTH,
        json={"verdict": "block", "analyst": "a", "reason": "b"},
    ) as resp:
        assert resp.status == 200, await resp.text()
    (after,) = (await gw.api("/api/touchpoints"))["items"]
    assert after["verdict"] == "block"
    lower = await gw.api(f"/api/visitors/{item['visitor_key']}")
    assert await gw.api(f"/api/visitors/{item['visitor_key'].upper()}") == lower
    # White space around it is trimmed, as every intake trims a visitor ID (a value pasted from
    # a terminal ends in a newline); inside, it is no ID: a 400.
    assert await gw.api(f"/api/visitors/{item['visitor_key']}%0A") == lower
    assert (await gw.api(f"/api/visitors/{item['visitor_key'][:8]}%0A{item['visitor_key'][8:]}"))[
        "status"
    ] == 400
    # The OpenAPI document allows what the API takes.
    paths = openapi_document()["paths"]
    (touch_param,) = paths["/api/touchpoints/{touchpoint_id}/verdict"]["post"]["parameters"]
    assert re.search(touch_param["schema"]["pattern"], item["id"].upper())
    (visitor_param,) = paths["/api/visitors/{visitor_id}"]["get"]["parameters"]
    assert re.search(visitor_param["schema"]["pattern"], item["visitor_key"].upper())


async def test_an_oversized_admin_body_is_a_413_naming_the_limit(start_gateway, origin) -> None:
    gw = await start_gateway(origin[0])
    await visit(gw, "/?utm_source=x", CURL)
    (item,) = (await gw.api("/api/touchpoints"))["items"]
    huge = json.dumps({"verdict": "allow", "analyst": "a", "reason": "r" * (2 * 1024**2)}).encode()
    headers = {**AUTH, "Content-Type": "application/json"}
    async with gw.session.post(
        f"{gw.admin_url}/api/touchpoints/{item['id']}/verdict", headers=headers, data=io.BytesIO(huge)
    ) as resp:
        assert resp.status == 413
        answer = await resp.json()
    assert answer["error"] == "body: larger than the admin API takes (1,048,576 bytes, decoded)"


async def test_a_body_in_a_coding_not_decoded_is_a_415_and_a_refused_body_closes(
    start_gateway, origin
) -> None:
    """aiohttp decodes gzip and deflate (br, zstd with their libraries); any other (or several)
    reached the handler still encoded and was taken as it was. And a refusal sent before the
    body was read closes the connection: it says so, so a client does not reuse it."""
    gw = await start_gateway(origin[0])
    await visit(gw, "/?utm_source=x", CURL)
    (item,) = (await gw.api("/api/touchpoints"))["items"]
    url = f"{gw.admin_url}/api/touchpoints/{item['id']}/verdict"
    other = "allow" if item["verdict"] != "allow" else "review"
    body = json.dumps({"verdict": other, "analyst": "a", "reason": "b"}).encode()
    for coding in ("foo", "gzip, br"):
        headers = {**AUTH, "Content-Type": "application/json", "Content-Encoding": coding}
        async with gw.session.post(url, headers=headers, data=body) as resp:
            assert resp.status == 415
            assert (await resp.json())["error"].startswith("Content-Encoding: ")
    assert (await gw.api("/api/touchpoints"))["items"][0]["verdict"] == item["verdict"]
    headers = {**AUTH, "Content-Type": "application/json", "Content-Encoding": "gzip"}
    async with gw.session.post(url, headers=headers, data=b"not gzip at all" * 100) as resp:
        assert resp.status == 400
        assert resp.headers.get("Connection", "").lower() == "close"
    assert (await gw.api("/api/touchpoints"))["items"][0]["id"] == item["id"]  # the next one is fine


def click(n: int, creator: str, verdict: str | None, *reasons: str, **fields: Any) -> Touchpoint:
    ts = datetime(2026, 11, 2, tzinfo=UTC) + timedelta(minutes=n)
    return Touchpoint(
        _new_id(int(ts.timestamp() * 1000)),
        iso(ts),
        "n",
        f"v{n}",
        creator_id=creator,
        verdict=verdict,
        reasons=list(reasons),
        ip_hash=f"ip{n % 2}",
        **fields,
    )


async def test_fraud_report_exports_every_group_as_csv_and_ndjson(start_gateway, origin) -> None:
    """The fraud report is a report: CSV and NDJSON (by ``format`` or ``Accept``) carry one flat
    row per group, every group (the JSON's 1000 cap does not cut an export)."""
    gw = await start_gateway(origin[0])
    await gw.gateway.store.write(
        [
            click(0, "anna", "allow", channel="Paid Social"),
            click(1, "anna", "block", "http_library", "datacenter", channel="Paid Social"),
            click(2, "anna", "block", "http_library", channel="Paid Social"),
            click(3, "=cmd|' /C calc'!A0", "review", "headless", channel="Display"),
            click(4, "anna", None, channel="Display"),
        ]
    )
    as_json = await gw.api("/api/fraud")
    valid("/api/fraud", as_json)
    assert as_json["truncated"] is False and [g["key"] for g in as_json["groups"]] == [
        "anna",
        "=cmd|' /C calc'!A0",
    ]

    async with gw.session.get(
        gw.admin_url + "/api/fraud", headers={**AUTH, "Accept": "text/csv"}, params={"until": "2026-12-01"}
    ) as resp:
        assert resp.status == 200 and resp.content_type == "text/csv" and resp.headers["Vary"] == "Accept"
        assert (
            resp.headers["Content-Disposition"] == 'attachment; filename="fraud-creator_id-to-2026-11-30.csv"'
        )
        rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert rows[0] == {
        "group": "anna",
        "clicks": "4",
        "allow": "1",
        "review": "0",
        "block": "2",
        "bot": "0",
        "unscored": "1",
        "allow_share": "0.2500",
        "review_share": "0.0000",
        "block_share": "0.5000",
        "bot_share": "0.0000",
        "unscored_share": "0.2500",
        "distinct_visitors": "4",
        "distinct_ips": "2",
        "top_reasons": "http_library: 2; datacenter: 1",
    }
    assert rows[1]["group"] == "'=cmd|' /C calc'!A0"  # kept inert in a spreadsheet

    async with gw.session.get(
        gw.admin_url + "/api/fraud", headers=AUTH, params={"format": "ndjson", "group_by": "channel"}
    ) as resp:
        assert (
            resp.status == 200 and resp.content_type == "application/x-ndjson" and "Vary" not in resp.headers
        )
        assert resp.headers["Content-Disposition"] == 'attachment; filename="fraud-channel.ndjson"'
        lines = [json.loads(line) for line in (await resp.text()).splitlines()]
    assert [(r["group"], r["clicks"], r["block"], r["unscored_share"]) for r in lines] == [
        ("Paid Social", 3, 2, 0),
        ("Display", 2, 0, 0.5),
    ]


async def test_fraud_shares_are_the_same_number_in_json_and_every_export(start_gateway, origin) -> None:
    """1 blocked click of 160 is 0.00625: the JSON rounded the float nearest to it (a hair above)
    to 0.0063 while the CSV, the NDJSON and the terminal rounded the exact ratio to 0.0062, so
    one report gave an analyst two numbers. Both now round the exact ratio, half to even."""
    gw = await start_gateway(origin[0])
    await gw.gateway.store.write([click(n, "anna", "block" if n == 0 else "allow") for n in range(160)])
    as_json = await gw.api("/api/fraud")
    valid("/api/fraud", as_json)
    (anna,) = as_json["groups"]
    assert (anna["shares"]["block"], anna["shares"]["allow"]) == (0.0062, 0.9938)
    async with gw.session.get(gw.admin_url + "/api/fraud", headers=AUTH, params={"format": "csv"}) as resp:
        (row,) = list(csv.DictReader(io.StringIO(await resp.text())))
    assert (row["block_share"], row["allow_share"]) == ("0.0062", "0.9938")
    async with gw.session.get(gw.admin_url + "/api/fraud", headers=AUTH, params={"format": "ndjson"}) as resp:
        (line,) = [json.loads(text) for text in (await resp.text()).splitlines()]
    assert (line["block_share"], line["allow_share"]) == (0.0062, 0.9938)


async def test_a_fraud_export_open_at_one_end_says_which(start_gateway, origin) -> None:
    """Every click from 1 November on, and every click up to the end of 1 November, were both
    ``fraud-creator_id-2026-11-01.csv``: downloaded side by side, one replaced the other."""
    gw = await start_gateway(origin[0])
    names = []
    for period in ({"since": "2026-11-01"}, {"until": "2026-11-02"}, {}):
        params = {"format": "csv", **period}
        async with gw.session.get(gw.admin_url + "/api/fraud", headers=AUTH, params=params) as resp:
            assert resp.status == 200
            names.append(resp.headers["Content-Disposition"])
    assert names == [
        'attachment; filename="fraud-creator_id-from-2026-11-01.csv"',
        'attachment; filename="fraud-creator_id-to-2026-11-01.csv"',
        'attachment; filename="fraud-creator_id.csv"',
    ]


async def test_the_review_queue_downloads_every_queued_touchpoint(start_gateway, origin) -> None:
    """An analyst works the queue in a spreadsheet: ``format=csv|ndjson`` on ``/api/review``
    streams every touchpoint of the period with that verdict (pages of the store, no ``limit``),
    its filters applied, named ``review-…`` or ``review-block-…`` by the period's days."""
    gw = await start_gateway(origin[0])
    clicks = [
        click(n, "anna" if n % 3 else "ben", "review" if n % 2 else "block", "headless") for n in range(2500)
    ]
    await gw.gateway.store.write(clicks)
    queued = [c.id for c in clicks if c.verdict == "review"]
    async with gw.session.get(
        gw.admin_url + "/api/review",
        headers=AUTH,
        params={"format": "csv", "bom": "true", "since": "2026-11-01", "until": "2026-12-01"},
    ) as resp:
        assert resp.status == 200 and resp.content_type == "text/csv"
        assert resp.headers["Content-Disposition"] == (
            'attachment; filename="review-from-2026-11-01-to-2026-11-30.csv"'
        )
        text = (await resp.read()).decode("utf-8")
    assert text.startswith("\ufeffid,")
    rows = list(csv.DictReader(io.StringIO(text[1:])))
    assert [r["id"] for r in rows] == queued and {r["verdict"] for r in rows} == {"review"}
    assert rows[0]["reasons"] == '["headless"]'

    async with gw.session.get(
        gw.admin_url + "/api/review",
        headers=AUTH,
        params={"format": "ndjson", "verdict": "block", "creator_id": "ben"},
    ) as resp:
        assert (
            resp.status == 200
            and resp.headers["Content-Disposition"] == 'attachment; filename="review-block-ben.ndjson"'
        )
        lines = [json.loads(line) for line in (await resp.text()).splitlines()]
    assert [x["id"] for x in lines] == [
        c.id for c in clicks if c.verdict == "block" and c.creator_id == "ben"
    ]

    async with gw.session.get(
        gw.admin_url + "/api/review", headers=AUTH, params={"format": "csv", "limit": "10"}
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"].startswith("limit: a csv download holds every row")


async def test_fraud_report_says_when_its_json_is_cut(start_gateway, origin) -> None:
    gw = await start_gateway(origin[0])
    await gw.gateway.store.write([click(n, f"cr_{n:04}", "allow") for n in range(1002)])
    as_json = await gw.api("/api/fraud")
    valid("/api/fraud", as_json)
    assert as_json["truncated"] is True and len(as_json["groups"]) == 1000
    async with gw.session.get(gw.admin_url + "/api/fraud", headers=AUTH, params={"format": "csv"}) as resp:
        rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert len(rows) == 1002 and rows[-1]["group"] == "cr_1001"


async def test_fraud_and_review_reject_bad_parameters(start_gateway, origin) -> None:
    gw = await start_gateway(origin[0])
    assert (await gw.api("/api/fraud", group_by="ip"))["error"].startswith("group_by: expected one of")
    assert (await gw.api("/api/review", verdict="allow"))["status"] == 400
    assert (await gw.api("/api/fraud", since="yesterday"))["error"].startswith("since: expected an ISO 8601")
    # A period the wrong way round is an error, as in the reports, not an empty answer.
    for path in ("/api/fraud", "/api/touchpoints", "/api/review"):
        refused = await gw.api(path, since="2026-12-01", until="2026-11-01")
        assert refused["status"] == 400 and refused["error"].startswith("since: must be before until"), path


async def test_block_action_answers_403_without_calling_the_site(start_gateway, origin) -> None:
    url, seen = origin
    gw = await start_gateway(url, "[bots]\non_block = 'block'\n")
    resp = await visit(gw, "/?utm_source=ig&creator_id=anna", CURL)
    assert resp.status == 403 and resp.headers["Content-Type"].startswith("text/html")
    assert seen == []
    googlebot = {"User-Agent": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"}
    assert (await visit(gw, "/pricing", googlebot)).status == 200
    assert (await visit(gw, "/?utm_source=ig", BROWSER)).status == 200
    assert seen == ["/pricing", "/"]
    items = (await gw.api("/api/touchpoints"))["items"]
    assert [i["verdict"] for i in items] == ["block", "allow"]  # the blocked landing is still recorded


async def test_in_app_browsers_count_and_link_previews_are_bots_through_a_real_gateway(
    start_gateway, origin
) -> None:
    """A creator's link opened in in-app browsers, unfurled by chat apps and checked by Google Ads,
    over https (behind a TLS-terminating proxy, so client hints are expected where due)."""
    url, seen = origin
    gw = await start_gateway(url, TRUST + "[bots]\non_block = 'block'\non_review = 'block'\n")
    people = ["instagram-ios", "instagram-android", "tiktok-android", "facebook-android", "snapchat-android"]
    people_headers = [IN_APP[n] for n in people] + [PRIVACY["duckduckgo-android"]]
    bots = [PREVIEWERS[n] for n in ("whatsapp-android", "discord", "imessage", "google-adsbot-mobile")]
    bots.append(MAIL_SCANNERS["office-link-check"])
    for n, headers in enumerate(people_headers + bots):
        resp = await visit(gw, "/?utm_source=ig&creator_id=anna", {**headers, "X-Forwarded-Proto": "https"},
                           ip=f"198.51.100.{n + 1}")  # fmt: skip
        assert resp.status == 200
    assert len(seen) == len(people_headers) + len(bots)  # nobody was answered 403
    items = (await gw.api("/api/touchpoints"))["items"]
    assert [(i["verdict"], i["reasons"][:1]) for i in items] == [("allow", [])] * len(people_headers) + [
        ("bot", ["good_crawler"])
    ] * len(bots)
    (anna,) = (await gw.api("/api/fraud", group_by="creator_id"))["groups"]
    assert anna["verdicts"] == {"allow": 6, "review": 0, "block": 0, "bot": 5, "unscored": 0}


async def test_a_late_robots_txt_rescores_the_stored_landing(start_gateway, origin) -> None:
    gw = await start_gateway(origin[0])
    item = await rescored_landing(gw, "utm_source=ig")
    assert (item["verdict"], item["bot_score"], item["reasons"]) == ("review", 30, ["robots_txt"])
    assert item["verdict_origin"] == "rescore"
    assert [i["id"] for i in (await gw.api("/api/review"))["items"]] == [item["id"]]


async def test_a_visitors_robots_txt_flag_ends_with_the_window(start_gateway, origin) -> None:
    """A visitor who once fetched robots.txt (a curious developer, a browser extension) carried
    ``robots_txt`` on every later landing for as long as the gateway kept their state: weeks on
    a quiet site, each such click sent to review. It lasts one window now, as the per-address
    flag does (here ``bots.window_seconds = 1``, so the landing two seconds on is past it)."""
    gw = await start_gateway(origin[0], TRUST + "[bots]\nwindow_seconds = 1\n")
    cookie = (await visit(gw, "/?utm_source=ig", BROWSER)).cookies["gw_vid"].value
    own = {"Cookie": f"gw_vid={cookie}"}
    await visit(gw, "/app.css", {**BROWSER, **own, "Sec-Fetch-Dest": "style", "Accept": "text/css"})
    await visit(gw, "/robots.txt", {**BROWSER, **own, "Sec-Fetch-Dest": "empty", "Accept": "*/*"})
    await asyncio.sleep(2.2)  # past the window: only more time can pass, never less
    await visit(gw, "/?utm_source=newsletter", {**BROWSER, **own}, ip="203.0.113.50")
    later = [i for i in (await gw.api("/api/touchpoints"))["items"] if i["source"] == "newsletter"]
    assert [(i["verdict"], i["reasons"]) for i in later] == [("allow", [])]


async def test_no_assets_ends_with_the_visitors_first_window(start_gateway, origin) -> None:
    """A new visitor who loaded 3 pages and no asset (a browser that lost its cookie but kept its
    cache, a text-only reader) carried ``no_assets`` on every later landing for as long as the
    gateway kept their state: weeks on a quiet site. Only their first window counts now (here
    ``bots.window_seconds = 1``, so the landing two seconds on is past it)."""
    gw = await start_gateway(origin[0], TRUST + "[bots]\nwindow_seconds = 1\n")
    cookie = (await visit(gw, "/?utm_source=ig", BROWSER)).cookies["gw_vid"].value
    own = {**BROWSER, "Cookie": f"gw_vid={cookie}"}
    for page in ("/p2", "/p3"):
        await visit(gw, page, own)
    await asyncio.sleep(2.2)  # past the window: only more time can pass, never less
    await visit(gw, "/?utm_source=newsletter", own, ip="203.0.113.50")
    later = [i for i in (await gw.api("/api/touchpoints"))["items"] if i["source"] == "newsletter"]
    assert [(i["verdict"], i["reasons"]) for i in later] == [("allow", [])]


async def test_a_click_ids_sources_are_counted_over_the_last_window(tmp_path) -> None:
    """README: ``click_id_reuse`` when one click ID arrives from more than 3 IPs "in the window".
    Replayed through the chain and the store by ``gateway import``, at the log's times: a click
    ID's sources were counted from the clock's hour its first one came in to the end of the next,
    so four addresses within four seconds across a later hour were never counted together (the
    set started afresh between them), and four spread over an hour and three quarters, at most
    two within any hour, were flagged. Each is counted over the last hour now."""
    firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
    clicks = [
        ("10:00:10", "straddled", "192.0.2.1"),
        *((f"10:{m:02d}:00", "spread", f"203.0.113.{m}") for m in (0, 35)),
        *((f"11:{m:02d}:00", "spread", f"203.0.113.{m}") for m in (10, 45)),
        *((f"11:59:5{s}", "straddled", f"198.51.100.{s}") for s in (8, 9)),
        *((f"12:00:0{s}", "straddled", f"198.51.100.{s}") for s in (1, 2)),
    ]
    log = tmp_path / "access.log"
    text = "".join(
        f'{ip} - - [01/Dec/2026:{at} +0000] "GET /?gclid=Cj0-{kind} HTTP/1.1" 200 10 "-" "{firefox}"\n'
        for at, kind, ip in clicks
    )
    await asyncio.to_thread(log.write_text, text)
    settings = make_settings(tmp_path)
    await run_import(settings, [log], "combined", host="shop.example")

    def read() -> list[tuple[str, str, str]]:
        with contextlib.closing(sqlite3.connect(settings.store_path)) as db:
            return db.execute("SELECT ts, click_id, reasons FROM touchpoints ORDER BY ts").fetchall()

    got = await asyncio.to_thread(read)
    flagged = [(ts[11:19], click) for ts, click, reasons in got if "click_id_reuse" in json.loads(reasons)]
    assert len(got) == len(clicks)
    assert flagged == [("12:00:02", "Cj0-straddled")]  # the fourth address within four seconds


async def test_a_burst_from_one_address_without_a_creator_is_allowed(start_gateway, origin) -> None:
    """README, "Signals and weights": a burst of landings from one address, each with a fresh
    cookie and a browser's headers, and no creator ID, is counted by ``ip_velocity`` alone (25,
    ``allow``) past ``bots.max_per_ip``, and by nothing before it; the fraud report shows it as
    many visitors from one address. Here ``max_per_ip = 30``: 50 landings, the last 20 flagged."""
    gw = await start_gateway(origin[0], TRUST + "[bots]\nmax_per_ip = 30\n")
    for n in range(50):
        resp = await visit(
            gw, f"/?utm_source=ads&utm_campaign=burst&utm_content=v{n}", BROWSER, ip="192.0.2.77"
        )
        assert resp.status == 200
    items = (await gw.api("/api/touchpoints", limit=100))["items"]
    got = [(i["verdict"], i["bot_score"], i["reasons"]) for i in items]
    assert got == [("allow", 0, [])] * 30 + [("allow", 25, ["ip_velocity"])] * 20
    (group,) = (await gw.api("/api/fraud", group_by="campaign"))["groups"]
    assert (group["key"], group["clicks"], group["verdicts"]["allow"]) == ("burst", 50, 50)
    assert (group["distinct_visitors"], group["distinct_ips"]) == (50, 1)
    assert group["top_reasons"] == [{"reason": "ip_velocity", "count": 20}]


async def test_the_readme_click_farm_example(start_gateway, origin) -> None:
    """README "Worked example": 1,000 clicks for unverified creator ben, one IP, no cookies kept."""
    gw = await start_gateway(origin[0], TRUST + "[[creators]]\nid = 'ben'\n")
    android = {
        "User-Agent": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Mobile Safari/537.36",
        "Accept": "text/html",
        "Accept-Language": "en-GB",
        "Sec-CH-UA": '"Chromium";v="131"',
        "Sec-CH-UA-Mobile": "?1",
        "Sec-CH-UA-Platform": '"Android"',
        "Sec-Fetch-Dest": "document",
    }
    for _ in range(1000):
        assert (await visit(gw, "/?creator_id=ben", android, ip="100.64.0.9")).status == 200
    scores, cursor = [], None
    while True:
        page = await gw.api("/api/touchpoints", limit=1000, **({"cursor": cursor} if cursor else {}))
        scores += [(i["bot_score"], i["verdict"], i["verdict_origin"]) for i in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    # Scored 10 (allow) as they came, the first 150 were re-scored when the 151st passed the limit.
    assert scores[:150] == [(60, "block", "rescore")] * 150
    assert scores[150:600] == [(60, "block", None)] * 450 and scores[600:] == [(85, "block", None)] * 400
    (ben,) = (await gw.api("/api/fraud"))["groups"]
    assert (ben["verdicts"]["block"], ben["shares"]["block"], ben["distinct_ips"]) == (1000, 1.0, 1)
    assert ben["distinct_visitors"] == 1000
    assert ben["top_reasons"] == [
        {"reason": "creator_ip_velocity", "count": 1000},
        {"reason": "unverified_creator", "count": 1000},
        {"reason": "ip_velocity", "count": 400},
    ]


async def test_a_farm_on_one_ipv6_64_is_one_source_and_a_family_is_not_flagged(start_gateway, origin) -> None:
    """Every click from a fresh address of one /64 (X-Forwarded-For, through a real gateway):
    the farm trips ``creator_ip_velocity`` as one IPv4 address would; a family on another /64,
    each device with its own privacy address, is one source too and stays ``allow``."""
    gw = await start_gateway(origin[0], TRUST + "[bots]\nmax_per_creator_ip = 5\n")
    for device in range(4):  # four devices, a click each: one source, under the limit
        ip = f"2001:db8:1:2:{device + 1:x}0:9ff:fe00:{device + 1:x}"
        assert (
            await visit(gw, "/?utm_source=ig&creator_id=ben&utm_content=family", BROWSER, ip=ip)
        ).status == 200
    for n in range(7):
        await visit(
            gw, "/?utm_source=ig&creator_id=ben&utm_content=farm", BROWSER, ip=f"2001:db8:9:9:{n + 1:x}::1"
        )
    items = (await gw.api("/api/touchpoints"))["items"]
    family = [(i["verdict"], i["reasons"]) for i in items if i["content"] == "family"]
    farm = [(i["verdict"], i["reasons"], i["verdict_origin"]) for i in items if i["content"] == "farm"]
    assert family == [("allow", [])] * 4
    assert (
        farm
        == [("block", ["creator_ip_velocity"], "rescore")] * 5
        + [("block", ["creator_ip_velocity"], None)] * 2
    )


async def put_creator(gw, creator_id: str, body: Any) -> tuple[int, dict[str, Any]]:
    kwargs = {"data": body} if isinstance(body, str | bytes) else {"json": body}
    async with gw.session.put(f"{gw.admin_url}/api/creators/{creator_id}", headers=JSON, **kwargs) as resp:
        return resp.status, await resp.json()


async def test_creator_standing_set_through_the_api_is_used_at_once_and_kept(
    start_gateway, origin, tmp_path
) -> None:
    config = TRUST + "[[creators]]\nid = 'anna'\nverified = true\n[[creators]]\nid = 'ben'\n"
    gw = await start_gateway(origin[0], config)
    listed = await gw.api("/api/creators")
    valid("/api/creators", listed)
    assert [(c["id"], c["verified"], c["source"]) for c in listed["items"]] == [
        ("anna", True, "config"),
        ("ben", False, "config"),
    ]
    await visit(gw, "/?creator_id=ben", BROWSER)
    status, body = await put_creator(
        gw, "ben", {"verified": True, "analyst": "maria", "reason": "ID checked", "name": "Ben K."}
    )
    assert status == 200
    valid("/api/creators/{creator_id}", body, method="put")
    assert body["creator"] | {"ts": None} == {
        "id": "ben", "verified": True, "name": "Ben K.", "source": "api", "analyst": "maria", "ts": None
    }  # fmt: skip
    await visit(gw, "/?creator_id=ben", BROWSER)
    status, _ = await put_creator(gw, "zoe", {"verified": False, "analyst": "maria", "reason": "new"})
    assert status == 200
    await visit(gw, "/?creator_id=zoe", BROWSER)
    items = (await gw.api("/api/touchpoints"))["items"]
    assert [i["reasons"] for i in items] == [["unverified_creator"], [], ["unverified_creator"]]

    # A restarted gateway on the same store knows the standings.
    again = await start_gateway(origin[0], config)
    known = {c["id"]: (c["verified"], c["source"]) for c in (await again.api("/api/creators"))["items"]}
    assert known == {"anna": (True, "config"), "ben": (True, "api"), "zoe": (False, "api")}
    await visit(again, "/?creator_id=ben", BROWSER)
    last = (await again.api("/api/touchpoints"))["items"][-1]
    assert last["creator_id"] == "ben" and last["reasons"] == []


async def test_a_standing_without_a_name_keeps_the_creators_name(start_gateway, origin) -> None:
    """``name`` is optional in a standing: leaving it out keeps the name the registry has (the
    config's, or an earlier standing's); ``""`` clears it. Revoking a verification used to wipe
    the name the dashboard's top creators show."""
    gw = await start_gateway(origin[0], "[[creators]]\nid = 'anna'\nname = 'Anna A.'\n")
    body = {"analyst": "maria", "reason": "checked"}
    status, answer = await put_creator(gw, "anna", {"verified": True, **body})
    assert (status, answer["creator"]["name"], answer["creator"]["verified"]) == (200, "Anna A.", True)
    await put_creator(gw, "ben", {"verified": True, "name": "Ben K.", **body})
    status, answer = await put_creator(gw, "ben", {"verified": False, **body})
    assert (status, answer["creator"]["name"], answer["creator"]["verified"]) == (200, "Ben K.", False)
    again = await start_gateway(origin[0], "[[creators]]\nid = 'anna'\nname = 'Anna A.'\n")
    names = {c["id"]: c["name"] for c in (await again.api("/api/creators"))["items"]}
    assert names == {"anna": "Anna A.", "ben": "Ben K."}
    status, answer = await put_creator(again, "ben", {"verified": False, "name": "", **body})
    assert (status, answer["creator"]["name"]) == (200, "")


@pytest.mark.parametrize(
    ("creator_id", "body", "message"),
    [
        (
            "ben",
            {"verified": "yes", "analyst": "a", "reason": "b"},
            "verified: expected true or false, got a string",
        ),
        ("ben", {"verified": True, "reason": "b"}, "body: object missing required field analyst"),
        ("ben", {"verified": True, "analyst": "a", "reason": " "}, "reason: expected 1..1000"),
        ("ben", "not json", "body: expected JSON like"),
        # JSON's grammar takes a lone surrogate escape, no decoder a character: named, not "no JSON".
        (
            "ben",
            {"verified": True, "analyst": "a", "reason": "b", "name": "Ann \ud83d"},
            "name: holds \\ud83d, half of a UTF-16 surrogate pair alone, which is no character;"
            " send the text as UTF-8 (or the pair whole: \\ud83d\\ude00)",
        ),
        ("x" * 201, {"verified": True, "analyst": "a", "reason": "b"}, "creator_id: expected 1..200"),
        (" ben", {"verified": True, "analyst": "a", "reason": "b"}, "creator_id: no spaces before or after"),
    ],
)
async def test_creator_standing_rejects_bad_input(start_gateway, origin, creator_id, body, message) -> None:
    gw = await start_gateway(origin[0])
    status, answer = await put_creator(gw, creator_id, body)
    assert status == 400 and answer["ok"] is False and message in answer["error"]
    assert (await gw.api("/api/creators"))["items"] == []


async def test_a_creator_id_longer_than_a_click_may_carry_is_refused(start_gateway, origin, tmp_path) -> None:
    """A click's creator ID longer than ``campaign.max_value_length`` is dropped: a standing for
    a longer one could never match. The limit is that key, not a fixed 200, as last reloaded."""
    body = {"verified": True, "analyst": "a", "reason": "b"}
    gw = await start_gateway(origin[0], "[campaign]\nmax_value_length = 50\n")
    status, answer = await put_creator(gw, "x" * 51, body)
    assert status == 400 and "creator_id: expected 1..50 printable characters" in answer["error"]
    assert "campaign.max_value_length" in answer["error"]
    assert (await put_creator(gw, "x" * 50, body))[0] == 200
    wide = await start_gateway(origin[0], "[campaign]\nmax_value_length = 500\n")
    assert (await put_creator(wide, "y" * 300, body))[0] == 200
    # The key reloads (SIGHUP): the limit follows at once.
    assert await gw.gateway.reload(make_settings(tmp_path, "[campaign]\nmax_value_length = 60\n")) == []
    assert (await put_creator(gw, "z" * 60, body))[0] == 200
    status, answer = await put_creator(gw, "z" * 61, body)
    assert status == 400 and "expected 1..60" in answer["error"]


async def test_a_json_body_written_with_a_byte_order_mark_is_read(start_gateway, origin) -> None:
    """Windows PowerShell's ``Out-File``/``Set-Content -Encoding utf8``, Notepad and many
    editors start a UTF-8 file with a byte order mark, and ``curl --data @file`` sends it as is:
    every JSON body of the admin API answered "body: expected JSON like …", which said nothing
    of the mark. RFC 8259 §8.1 lets a reader ignore it, so it is read; a UTF-16 body (the
    older PowerShell's default) is named."""
    gw = await start_gateway(origin[0])
    await visit(gw, "/?utm_source=x", CURL)
    (item,) = (await gw.api("/api/touchpoints"))["items"]
    url = f"{gw.admin_url}/api/touchpoints/{item['id']}/verdict"
    bom = b"\xef\xbb\xbf"
    for method, body, verdict in (
        ("POST", {"verdict": "allow", "analyst": "li", "reason": "a person"}, "allow"),
        ("DELETE", {"analyst": "li", "reason": "the wrong click"}, "block"),
    ):
        data = bom + json.dumps(body).encode()
        headers = {**AUTH, "Content-Type": "application/json"}
        async with gw.session.request(method, url, headers=headers, data=data) as resp:
            answer = await resp.json()
            assert resp.status == 200, answer
        assert answer["touchpoint"]["verdict"] == verdict
    standing = bom + json.dumps({"verified": True, "analyst": "li", "reason": "known"}).encode()
    status, answer = await put_creator(gw, "ben", standing)
    assert (status, answer["creator"]["verified"]) == (200, True), answer
    utf16 = json.dumps({"verified": True, "analyst": "li", "reason": "known"}).encode("utf-16")
    status, answer = await put_creator(gw, "ben", utf16)
    assert (status, answer["error"]) == (
        400,
        "body: is UTF-16 (it starts with a UTF-16 byte order mark); send the JSON as UTF-8",
    )


async def test_a_fraud_report_from_a_future_since_is_refused_as_the_reports_refuse_it(
    start_gateway, origin
) -> None:
    """``/api/fraud?since=2099-01-01`` answered an empty 200, which reads as "no fraud", where
    ``/api/attribution`` refuses that period: nothing can have been recorded after now. Both
    say so alike now, naming the until left out; a period given whole in the future is a
    period still (empty, as the reports answer it), and all time stays the default."""
    gw = await start_gateway(origin[0])
    await visit(gw, "/?utm_source=x&creator_id=ben", CURL)
    refused = re.compile(
        r"since: must be before until \(2099-01-01T00:00:00\.000000Z"
        r" >= \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z; until left out: now\)"
    )
    for path in ("/api/fraud", "/api/attribution", "/api/payouts"):
        body = await gw.api(path, since="2099-01-01")
        assert body["status"] == 400 and refused.fullmatch(body["error"]), (path, body)
    async with gw.session.get(
        gw.admin_url + "/api/fraud", headers=AUTH, params={"since": "2099-01-01", "format": "csv"}
    ) as resp:
        assert resp.status == 400 and refused.fullmatch((await resp.json())["error"])
    later = await gw.api("/api/fraud", since="2099-01-01", until="2099-02-01")
    assert later["ok"] and later["groups"] == []
    (group,) = (await gw.api("/api/fraud"))["groups"]
    assert (group["key"], group["clicks"]) == ("ben", 1)
    (group,) = (await gw.api("/api/fraud", since="2026-01-01"))["groups"]
    assert group["clicks"] == 1


async def test_a_listing_from_a_future_since_is_refused_as_the_reports_refuse_it(
    start_gateway, origin
) -> None:
    """``/api/touchpoints``, ``/api/review`` and ``/api/conversions`` with ``since=2099-01-01`` and
    no ``until`` answered an empty page, which reads as "nothing happened", where the reports and
    ``/api/fraud`` refuse it with a 400. The listings say so alike now, downloads too; a period
    given whole in the future is a period still (an empty page), and no since lists everything."""
    gw = await start_gateway(origin[0], TRUST)
    await visit(gw, "/?utm_source=x&creator_id=ben", CURL)
    refused = re.compile(
        r"since: must be before until \(2099-01-01T00:00:00\.000000Z"
        r" >= \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z; until left out: now\)"
    )
    for path in ("/api/touchpoints", "/api/review", "/api/conversions"):
        body = await gw.api(path, since="2099-01-01")
        assert body["status"] == 400 and refused.fullmatch(body["error"]), (path, body)
        async with gw.session.get(
            gw.admin_url + path, headers=AUTH, params={"since": "2099-01-01", "format": "csv"}
        ) as resp:
            assert resp.status == 400 and refused.fullmatch((await resp.json())["error"]), path
        later = await gw.api(path, since="2099-01-01", until="2099-02-01")
        assert later["ok"] and later["items"] == [], (path, later)
    assert len((await gw.api("/api/touchpoints"))["items"]) == 1
    assert len((await gw.api("/api/review", since="2026-01-01", verdict="block"))["items"]) == 1  # curl
    # A signed conversion may be dated up to webhooks.tolerance_seconds (300) ahead: a poller
    # asking from the newest time it saw is not refused within it; a touchpoint's time never is.
    soon = (datetime.now(UTC) + timedelta(seconds=120)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert (await gw.api("/api/conversions", since=soon))["ok"]
    assert (await gw.api("/api/touchpoints", since=soon))["status"] == 400


JSON_BODIES = [
    ("POST", "verdict", {"verdict": "allow", "analyst": "li", "reason": "a person"}),
    ("DELETE", "verdict", {"analyst": "li", "reason": "the wrong click"}),
    ("PUT", "creator", {"verified": True, "analyst": "li", "reason": "known"}),
]


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",  # curl -d without -H
        "multipart/form-data; boundary=x",
        "application/octet-stream",
        "application/jsonp",
        "json",
        None,  # curl -T, many scripts
    ],
)
async def test_a_json_body_labelled_as_something_else_is_a_415_naming_json(
    start_gateway, origin, content_type: str | None
) -> None:
    """Every JSON body of the admin API was read as JSON whatever its ``Content-Type`` said: a
    form, text, or none at all. Such a body is now a 415 naming the type expected, and nothing
    is stored; ``application/json`` (any case, with a UTF-8 charset) and ``application/*+json``
    are read."""
    gw = await start_gateway(origin[0])
    await visit(gw, "/?utm_source=x", CURL)
    (item,) = (await gw.api("/api/touchpoints"))["items"]
    paths = {"verdict": f"/api/touchpoints/{item['id']}/verdict", "creator": "/api/creators/ben"}
    for method, path, fields in JSON_BODIES:
        data = json.dumps(fields).encode()
        label = "" if content_type is None else f"Content-Type: {content_type}\r\n"
        request = (
            f"{method} {paths[path]} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n{label}"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        ).encode()
        resp = await raw_request(gw.admin.port, request + data)
        assert resp.status == 415, (method, path, resp)
        answer = json.loads(resp.body)
        said = "none" if content_type is None else repr(content_type)
        assert answer == {
            "ok": False,
            "status": 415,
            "error": f"Content-Type: expected application/json, got {said}; send the body as JSON"
            " with Content-Type: application/json (curl: -H 'Content-Type: application/json')",
        }, (method, path)
    after = await gw.api(f"/api/touchpoints/{item['id']}/verdict")
    assert [c["origin"] for c in after["changes"]] == [], after
    assert (await gw.api("/api/creators"))["items"] == []


TWICE = " send it once: application/json (curl: -H 'Content-Type: application/json')"


@pytest.mark.parametrize(
    ("lines", "why"),
    [
        # Two lines: the parser refuses them (until 2026-12-07 saying no more than "the
        # request is not valid HTTP").
        (
            ["application/json", "text/plain"],
            "the request is not valid HTTP: Content-Type given more than once; send it once",
        ),
        # The same two joined into one line, as a proxy may join repeated lines (RFC 9110
        # §5.3): read as JSON, by its first type, until 2026-12-07.
        (
            ["application/json; charset=utf-8, text/plain"],
            "Content-Type: holds 2 types ('application/json; charset=utf-8', 'text/plain');" + TWICE,
        ),
        # Was a 415 saying the body was 'text/plain, application/json'.
        (
            ["text/plain, application/json"],
            "Content-Type: holds 2 types ('text/plain', 'application/json');" + TWICE,
        ),
        (
            ["application/json,application/json"],
            "Content-Type: holds 2 types ('application/json', 'application/json');" + TWICE,
        ),
    ],
)
async def test_a_body_labelled_twice_is_a_400_naming_content_type(
    start_gateway, origin, lines: list[str], why: str
) -> None:
    """A body labelled with two types was judged by the first (aiohttp reads the first): which
    does the client mean? Neither is believed: a 400 naming the header, as two
    ``Authorization`` lines get, and nothing is stored."""
    gw = await start_gateway(origin[0])
    await visit(gw, "/?utm_source=x", CURL)
    (item,) = (await gw.api("/api/touchpoints"))["items"]
    paths = {"verdict": f"/api/touchpoints/{item['id']}/verdict", "creator": "/api/creators/ben"}
    labels = "".join(f"Content-Type: {line}\r\n" for line in lines)
    for method, path, fields in JSON_BODIES:
        data = json.dumps(fields).encode()
        request = (
            f"{method} {paths[path]} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n{labels}"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        ).encode()
        resp = await raw_request(gw.admin.port, request + data)
        assert (resp.status, json.loads(resp.body)) == (400, {"ok": False, "status": 400, "error": why}), (
            method,
            path,
        )
    after = await gw.api(f"/api/touchpoints/{item['id']}/verdict")
    assert [c["origin"] for c in after["changes"]] == [], after
    assert (await gw.api("/api/creators"))["items"] == []


async def test_a_json_body_is_read_under_every_json_content_type(start_gateway, origin) -> None:
    gw = await start_gateway(origin[0])
    await visit(gw, "/?utm_source=x", CURL)
    (item,) = (await gw.api("/api/touchpoints"))["items"]
    url = f"{gw.admin_url}/api/touchpoints/{item['id']}/verdict"
    for content_type in (
        "application/json",
        "Application/JSON",
        "application/json; charset=utf-8",
        'application/json;charset="UTF-8"',
        "application/vnd.api+json",
        "application/merge-patch+json; charset=utf-8",
    ):
        headers = {**AUTH, "Content-Type": content_type}
        for method, _, fields in JSON_BODIES[:2]:
            data = json.dumps(fields).encode()
            async with gw.session.request(method, url, headers=headers, data=data) as resp:
                assert resp.status == 200, (content_type, method, await resp.text())
        data = json.dumps(JSON_BODIES[2][2]).encode()
        async with gw.session.put(f"{gw.admin_url}/api/creators/ben", headers=headers, data=data) as resp:
            assert resp.status == 200, (content_type, await resp.text())
    # No body and no label: the body's own 400 says more than a 415 would.
    request = (
        f"DELETE {url.removeprefix(gw.admin_url)} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    resp = await raw_request(gw.admin.port, request)
    assert (resp.status, json.loads(resp.body)["error"]) == (
        400,
        'body: expected JSON like {"analyst": "…", "reason": "…"}',
    )
    # JSON is UTF-8 (RFC 8259 §8.1): another charset would have its bytes misread.
    headers = {**AUTH, "Content-Type": "application/json; charset=latin-1"}
    data = json.dumps({"verified": False, "analyst": "li", "reason": "caf\u00e9"}).encode("latin-1")
    async with gw.session.put(f"{gw.admin_url}/api/creators/ben", headers=headers, data=data) as resp:
        assert (resp.status, (await resp.json())["error"]) == (
            415,
            "Content-Type: charset='latin-1' is not UTF-8: the admin API reads JSON as UTF-8"
            " (RFC 8259 §8.1); send the body as UTF-8, labelled application/json",
        )
    assert (await gw.api("/api/creators"))["items"][0]["verified"] is True
