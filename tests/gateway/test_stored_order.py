"""``order=stored`` on ``/api/touchpoints`` and ``/api/conversions``: following new rows in the
order committed (an incremental export), none skipped, none twice; its cursor refused with
another order; its downloads end at a cursor the next one starts from."""

from __future__ import annotations

import csv
import io
import json
import re
import socket
import uuid
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from gateway.events import Conversion, Touchpoint
from gateway.ids import id_ms
from gateway.openapi import openapi_document
from tests.gateway.test_admin import AUTH, download, get, land, origin
from tests.gateway.test_openapi import response_schema


@pytest.fixture
async def gw(start_gateway, upstream_server):
    return await start_gateway(await upstream_server(origin()))


def just_before(row_id: str, n: int) -> str:
    """A UUIDv7 of the same millisecond as ``row_id`` sorting before it: another worker
    process's row of that millisecond (its counter started lower)."""
    below = uuid.UUID(row_id).int - (1 << 20) - n
    assert below >> 80 == id_ms(row_id) and str(uuid.UUID(int=below)) < row_id
    return str(uuid.UUID(int=below))


async def stored_page(gw, path: str, **params: str) -> dict[str, Any]:
    status, _, body = await get(gw, path, AUTH, order="stored", **params)
    assert status == 200, body
    Draft202012Validator(response_schema(path, 200)).validate(body)
    assert body["next_cursor"].startswith(f"stored.{path.removeprefix('/api/')}.")  # never null
    assert re.search(cursor_pattern(path), body["next_cursor"])  # as the OpenAPI document says
    return body


def cursor_pattern(path: str) -> str:
    """What the OpenAPI document says ``path``'s ``cursor`` may be."""
    parameters = openapi_document()["paths"][path]["get"]["parameters"]
    return next(p["schema"]["pattern"] for p in parameters if p["name"] == "cursor")


async def late_rows(gw, last: dict[str, Any], kind: str) -> None:
    """Two rows committed now whose ids sort before ``last`` (listed already)."""
    ids = [just_before(last["id"], n) for n in (1, 2)]
    if kind == "touchpoints":
        rows: list[Any] = [
            Touchpoint(row_id, last["ts"], "w2", "e" * 32, campaign=f"late{n}", landing_path="/")
            for n, row_id in enumerate(ids)
        ]
    else:
        rows = [
            Conversion(row_id, last["ts"], "w2", "signup", f"order:late{n}", "e" * 32, None, None, None,
                       order_id=f"late{n}")
            for n, row_id in enumerate(ids)
        ]  # fmt: skip
    await gw.gateway.store.write(rows)


@pytest.mark.parametrize(
    ("path", "field"), [("/api/touchpoints", "campaign"), ("/api/conversions", "order_id")]
)
async def test_a_row_committed_after_the_page_with_a_smaller_id_is_on_the_next_page(
    gw, path: str, field: str
) -> None:
    """Known limit until now: a follower paging with ``cursor`` skipped a row committed after it
    read the page whose id sorts before the cursor (another worker's of the same millisecond,
    a late commit). ``order=stored`` gives it on the next page; ``order=oldest`` still skips it."""
    kind = path.removeprefix("/api/")
    if kind == "touchpoints":
        for n in range(3):
            await land(gw, f"utm_source=s&utm_campaign=c{n}")
    else:
        await gw.gateway.store.write(
            [Conversion(just_before("01900000-0000-7000-8000-000000f00000", -n), iso_at(n), "n", "signup",
                        f"order:c{n}", "a" * 32, None, None, None, order_id=f"c{n}") for n in range(3)]
        )  # fmt: skip
    first = await stored_page(gw, path, limit="2")
    second = await stored_page(gw, path, limit="2", cursor=first["next_cursor"])
    assert [r[field] for r in first["items"] + second["items"]] == ["c0", "c1", "c2"]
    _, _, oldest = await get(gw, path, AUTH, limit="3")
    last = oldest["items"][-1]
    await late_rows(gw, last, kind)
    following = await stored_page(gw, path, limit="2", cursor=second["next_cursor"])
    assert [r[field] for r in following["items"]] == ["late0", "late1"]
    again = await stored_page(gw, path, limit="2", cursor=following["next_cursor"])
    assert again["items"] == []  # each once
    quiet = await stored_page(gw, path, limit="2", cursor=again["next_cursor"])
    assert quiet["items"] == [] and quiet["next_cursor"] == again["next_cursor"]
    # The id order (the default) skips them: why this order exists.
    _, _, by_id = await get(gw, path, AUTH, cursor=last["id"])
    assert by_id["items"] == []


def iso_at(n: int) -> str:
    return f"2024-06-1{n}T10:00:00.000000Z"


@pytest.mark.parametrize("path", ["/api/touchpoints", "/api/conversions"])
async def test_a_cursor_of_another_order_is_refused_naming_it(gw, path: str) -> None:
    await land(gw, "utm_source=s&utm_campaign=c")
    stored = (await stored_page(gw, path))["next_cursor"]
    an_id = "0190a2b4-1111-7222-8333-444455556666"
    for params, came, order in (
        ({"cursor": stored}, "order=stored", "oldest"),
        ({"cursor": stored, "order": "oldest"}, "order=stored", "oldest"),
        ({"cursor": stored, "order": "newest"}, "order=stored", "newest"),
        ({"cursor": f"newest.{an_id}", "order": "stored"}, "order=newest", "stored"),
        ({"cursor": an_id, "order": "stored"}, "order=oldest (the default)", "stored"),
    ):  # fmt: skip
        for fmt in ("json", "csv"):
            status, _, raw = await download(gw, path, format=fmt, **params)
            assert status == 400, raw
            error = json.loads(raw)["error"]
            assert error.startswith(f"cursor: comes from a page in {came}, not order={order};"), error
    table = path.removeprefix("/api/")
    for bad in (
        "stored.1",
        f"stored.{table}.1.2.xyz",
        f"stored.{table}.99999999999999999999.0",
        "stored.1.0",  # the form before the listing was named in it (2026-12-08, the day it came)
        "stored.visitors.1.0",
    ):
        status, _, body = await get(gw, path, AUTH, order="stored", cursor=bad)
        assert status == 400 and body["error"] == "cursor: not a cursor this API returned", body
    status, _, body = await get(gw, path, AUTH, order="latest")
    assert status == 400 and body["error"] == "order: expected one of oldest, newest, stored, got 'latest'"


@pytest.mark.parametrize("path", ["/api/review", "/api/bad-events"])
async def test_the_listings_without_a_stored_order_say_where_it_is(gw, path: str) -> None:
    status, _, body = await get(gw, path, AUTH, order="stored")
    assert status == 400
    assert body["error"] == (
        "order: expected one of oldest, newest, got 'stored'; order=stored is on /api/touchpoints"
        " and /api/conversions"
    )


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
async def test_downloads_in_the_order_stored_end_at_the_next_ones_cursor(gw, fmt: str) -> None:
    """An incremental export as a file: every row stored so far in the order stored, and in
    ``Next-Cursor`` where the next download starts: it holds the rows committed since, a late
    one whose id sorts before those downloaded among them, and none downloaded already."""
    for n in range(3):
        await land(gw, f"utm_source=s&utm_campaign=c{n}")

    def campaigns(raw: bytes) -> list[str]:
        if fmt == "csv":
            return [r["campaign"] for r in csv.DictReader(io.StringIO(raw.decode()))]
        return [json.loads(line)["campaign"] for line in raw.splitlines()]

    status, headers, raw = await download(gw, "/api/touchpoints", format=fmt, order="stored")
    assert status == 200
    assert headers["Content-Disposition"] == f'attachment; filename="touchpoints-stored.{fmt}"'
    assert campaigns(raw) == ["c0", "c1", "c2"]
    following = headers["Next-Cursor"]
    assert re.search(cursor_pattern("/api/touchpoints"), following)
    _, _, listed = await get(gw, "/api/touchpoints", AUTH)
    await late_rows(gw, listed["items"][-1], "touchpoints")
    await land(gw, "utm_source=s&utm_campaign=c3")
    status, headers, raw = await download(
        gw, "/api/touchpoints", format=fmt, order="stored", cursor=following
    )
    assert status == 200 and campaigns(raw) == ["late0", "late1", "c3"]
    status, headers, raw = await download(
        gw, "/api/touchpoints", format=fmt, order="stored", cursor=headers["Next-Cursor"]
    )
    assert status == 200 and campaigns(raw) == []
    # The JSON pages and the downloads' cursors are one kind: a page goes on from a download.
    page = await stored_page(gw, "/api/touchpoints", cursor=following)
    assert [t["campaign"] for t in page["items"]] == ["late0", "late1", "c3"]


async def test_conversions_download_in_the_order_stored(gw) -> None:
    await gw.gateway.store.write(
        [Conversion(just_before("01900000-0000-7000-8000-000000f00000", n), iso_at(n), "n", "signup",
                    f"order:o{n}", "a" * 32, None, None, None, order_id=f"o{n}") for n in (1, 2)]
    )  # fmt: skip
    status, headers, raw = await download(gw, "/api/conversions", format="ndjson", order="stored")
    assert status == 200
    assert [json.loads(line)["order_id"] for line in raw.splitlines()] == ["o1", "o2"]  # stored, not id order
    assert headers["Next-Cursor"].startswith("stored.conversions.")


async def test_a_central_source_has_no_stored_order(start_gateway, upstream_server) -> None:
    """``admin.source = "central"``: the listings read PostgreSQL, which has no rowids; the
    order is refused saying so, not answered in another order."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once closed
    toml = '[admin]\nsource = "central"\n[central]\nurl = "env:CENTRAL_URL"\n'
    env = {"CENTRAL_URL": f"postgresql://gw@127.0.0.1:{port}/tracking"}
    gw = await start_gateway(await upstream_server(origin()), toml, env)
    for path in ("/api/touchpoints", "/api/conversions"):
        status, _, body = await get(gw, path, AUTH, order="stored")
        assert status == 400, body
        assert body["error"].startswith(
            "order: stored pages this node's store in the order its rows were stored; with"
            ' admin.source = "central"'
        )


@pytest.mark.parametrize("path", ["/api/touchpoints", "/api/conversions"])
async def test_a_cursor_the_store_cannot_hold_is_a_400_page_and_download_alike(gw, path: str) -> None:
    """A well-formed cursor this store cannot have given (edited by hand, kept from a store
    since restored from a backup): a 400 saying to start again, never a 500 or a page from
    the wrong place; a download's too, before its headers."""
    await land(gw, "utm_source=s&utm_campaign=c")
    if path == "/api/conversions":
        await gw.gateway.store.write(
            [Conversion(just_before("01900000-0000-7000-8000-000000f00000", 1), iso_at(1), "n", "signup",
                        "order:o1", "a" * 32, None, None, None, order_id="o1")]
        )  # fmt: skip
    given = (await stored_page(gw, path))["next_cursor"]
    table = path.removeprefix("/api/")
    assert given.startswith(f"stored.{table}.")
    position, drops = (int(n) for n in given.split(".")[2:4])
    other = "0190a2b4-1111-7222-8333-444455556666"
    for cursor in (
        f"stored.{table}.{position + 50}.{drops}",  # ahead of every row stored
        f"stored.{table}.{position}.{drops + 7}",  # deletes this store never noted
        f"stored.{table}.{position}.{drops}.{other}",  # another row at that place
        f"stored.{table}.{2**63 - 1}.{2**63 - 1}",
    ):
        for fmt in ("json", "csv", "ndjson"):
            status, _, raw = await download(gw, path, format=fmt, order="stored", cursor=cursor)
            assert status == 400, (cursor, fmt, raw)
            assert json.loads(raw)["error"].startswith(
                "cursor: this store no longer holds the rows this cursor was given after"
            ), raw


async def test_filters_move_the_cursor_past_the_rows_they_leave_out(gw) -> None:
    """A follower of one campaign: its short pages' cursors move past the other campaigns' rows,
    so the rows it gets later are new ones of its campaign, each once, download or page."""
    for n in range(5):
        await land(gw, f"utm_source=s&utm_campaign={'a' if n % 2 else 'b'}&utm_content={n}")
    page = await stored_page(gw, "/api/touchpoints", campaign="a", limit="1")
    seen = [t["content"] for t in page["items"]]
    while len(page["items"]) == 1:
        page = await stored_page(gw, "/api/touchpoints", campaign="a", limit="1", cursor=page["next_cursor"])
        seen += [t["content"] for t in page["items"]]
    assert seen == ["1", "3"]
    for n in range(5, 8):
        await land(gw, f"utm_source=s&utm_campaign={'a' if n % 2 else 'b'}&utm_content={n}")
    status, headers, raw = await download(
        gw, "/api/touchpoints", format="ndjson", order="stored", campaign="a", cursor=page["next_cursor"]
    )
    assert status == 200 and [json.loads(line)["content"] for line in raw.splitlines()] == ["5", "7"]
    later = await stored_page(gw, "/api/touchpoints", campaign="a", cursor=headers["Next-Cursor"])
    assert later["items"] == []


@pytest.mark.parametrize(
    ("came", "given_to"),
    [("/api/touchpoints", "/api/conversions"), ("/api/conversions", "/api/touchpoints")],
)
async def test_a_cursor_of_the_other_listing_is_refused_naming_it(gw, came: str, given_to: str) -> None:
    """Both listings page by rowid, each in its own table: one's cursor given to the other was
    either refused as a store "restored from a backup" (a rowid beyond that table's rows, or
    another row there) or, where that table has no row at the cursor's rowid (none yet: an
    empty listing's first cursor), silently paged from there. A 400 naming the listing it came
    from, on pages and downloads alike."""
    first = (await stored_page(gw, came))["next_cursor"]  # its listing empty yet
    await land(gw, "utm_source=s&utm_campaign=c")
    await gw.gateway.store.write(
        [Conversion(just_before("01900000-0000-7000-8000-000000f00000", n), iso_at(n), "n", "signup",
                    f"order:o{n}", "a" * 32, None, None, None, order_id=f"o{n}") for n in (1, 2)]
    )  # fmt: skip
    last = (await stored_page(gw, came))["next_cursor"]  # at a row of its own listing
    for cursor in (first, last):
        assert not re.search(cursor_pattern(given_to), cursor)
        for fmt in ("json", "csv", "ndjson"):
            status, _, raw = await download(gw, given_to, format=fmt, order="stored", cursor=cursor)
            assert status == 400, (cursor, fmt, raw)
            assert json.loads(raw)["error"] == (
                f"cursor: comes from {came} (order=stored), not {given_to}; page {given_to} with"
                " a cursor it returned, or leave cursor out to start from its first row"
            ), raw
