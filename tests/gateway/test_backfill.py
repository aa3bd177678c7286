"""gateway import: every format through the real chain and store, idempotent re-import, skipped
lines reported, dry runs, the derived visitor, and the CLI entry point on a generated log."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import io
import json
import logging
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bench.synthlog import write_log
from gateway.config import Settings
from gateway.history import UNENDED
from gateway.importcmd import import_command, parse_fields
from gateway.importrun import UsageError, run_import
from gateway.importwrite import CommitFailed
from gateway.keys import Keys
from gateway.logformats import CONTROL, METHOD_CASE, NOT_UTF8
from tests.addons.test_geo import write_mmdb
from tests.conftest import ENV, GatewayFactory, make_settings
from tests.gateway.test_import_runs import RULES, SIGN_IN
from tests.gateway.test_malformed import Received, raw_recording_upstream

ROOT = Path(__file__).resolve().parents[2]
UA = "Mozilla/5.0 (X11; Linux x86_64) Firefox/127.0"
COMBINED = "\n".join(
    [
        f'203.0.113.9 - - [01/Mar/2025:10:00:00 +0100] "GET /p?utm_source=News&utm_medium=email&utm_campaign=spring&x=1 HTTP/1.1" 200 10 "-" "{UA}"',  # noqa: E501
        f'203.0.113.9 - - [01/Mar/2025:10:00:01 +0100] "GET /static/app.js HTTP/1.1" 200 10 "https://www.google.com/" "{UA}"',  # noqa: E501
        f'203.0.113.9 - - [01/Mar/2025:10:00:02 +0100] "GET /about HTTP/1.1" 200 10 "https://shop.example/p" "{UA}"',  # noqa: E501
        f'198.51.100.4 - - [01/Mar/2025:11:00:00 +0100] "GET /blog/post HTTP/1.1" 200 10 "https://www.google.com/search?q=x" "{UA}"',  # noqa: E501
        "this is not a log line",
        '198.51.100.4 - - [31/Foo/2025:11:00:00 +0100] "GET / HTTP/1.1" 200 10 "-" "-"',
        '198.51.100.4 - - [01/Mar/2025:11:00:00 +0100] "\\x16\\x03\\x01" 400 0 "-" "-"',
        f'198.51.100.7 - - [02/Mar/2025:09:00:00 +0000] "GET /?gclid=abc123 HTTP/1.1" 200 10 "-" "{UA}"',
    ]
)


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(sql).fetchall()


async def query(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    return await asyncio.to_thread(rows, settings.store_path, sql)


def write(path: Path, text: str, *, compress: bool = False) -> Path:
    data = text.encode() + b"\n"
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
async def test_combined_log_through_the_chain(tmp_path: Path, compress: bool) -> None:
    settings = make_settings(tmp_path)
    log = await asyncio.to_thread(write, tmp_path / "access.log", COMBINED, compress=compress)
    summary = await run_import(settings, [log], "combined", host="shop.example")
    assert summary.lines == 8
    assert summary.events["touchpoints"] == 3
    assert summary.new_rows == {"touchpoints": 3, "identities": 0, "conversions": 0}
    got = await query(
        settings,
        "SELECT ts, source, medium, campaign, click_id_kind, referrer_host, landing_path, raw_params"
        " FROM touchpoints ORDER BY ts",
    )
    assert got == [
        # historical time, in UTC; source case-folded; the landing path without its query
        ("2025-03-01T09:00:00.000000Z", "news", "email", "spring", None, None, "/p",
         '{"utm_source":"news","utm_medium":"email","utm_campaign":"spring"}'),
        # a page load from an external referrer (the asset with one, and same-site navigation, are not)
        ("2025-03-01T10:00:00.000000Z", None, None, None, None, "www.google.com", "/blog/post", "{}"),
        ("2025-03-02T09:00:00.000000Z", None, None, None, "gclid", None, "/", json.dumps({"gclid": "abc123"})
         .replace(" ", "")),
    ]  # fmt: skip
    assert sum(summary.skipped.values()) == 3
    assert summary.examples == [
        "access.log:5: not a combined-log line",
        "access.log:6: unreadable time [31/Foo/2025:11:00:00 +0100]",
        "access.log:7: unreadable request line: '\\x16\\x03\\x01'",
    ]
    rendered = summary.render()
    assert "access.log:5: not a combined-log line" in rendered and "touchpoints:" in rendered
    assert rendered.startswith(f"gateway import: 1 file, {summary.lines} lines read in")
    summary.lines = 1  # one of each: not "1 lines" nor "1 file(s)"
    assert summary.render().startswith("gateway import: 1 file, 1 line read in")


async def test_reimport_adds_nothing_even_renamed_or_compressed(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    log = await asyncio.to_thread(write, tmp_path / "access.log", COMBINED)
    first = await run_import(settings, [log], "combined", host="shop.example")
    assert first.new_rows == {"touchpoints": 3, "identities": 0, "conversions": 0}
    again = await run_import(settings, [log], "combined", host="shop.example")
    assert again.events["touchpoints"] == 3  # produced again, and skipped by the store
    assert again.new_rows == {"touchpoints": 0, "identities": 0, "conversions": 0}
    rotated = await asyncio.to_thread(write, tmp_path / "access.log.1", COMBINED, compress=True)
    third = await run_import(settings, [rotated], "combined", host="shop.example")
    assert third.new_rows == {"touchpoints": 0, "identities": 0, "conversions": 0}
    assert await query(settings, "SELECT count(*) FROM touchpoints") == [(3,)]


async def test_a_vhost_combined_log_knows_each_lines_site(tmp_path: Path) -> None:
    """Apache's vhost_combined (``%v:%p`` first) and ``%{Host}i``-first logs: every line was
    skipped as not a combined-log line. Each line's own host now says which referrers are
    same-site (the port ignored, as live); a line logged without one (``-``) takes --host."""
    settings = make_settings(tmp_path)
    pre = "203.0.113.9 - - [01/Mar/2025:10:00:0"
    text = "\n".join(
        [
            f'shop.example:443 {pre}0 +0000] "GET /a HTTP/1.1" 200 9 "https://shop.example/" "{UA}"',
            f'blog.example {pre}1 +0000] "GET /b HTTP/1.1" 200 9 "https://blog.example/x" "{UA}"',
            f'blog.example {pre}2 +0000] "GET /c HTTP/1.1" 200 9 "https://shop.example/" "{UA}"',
            f'- {pre}3 +0000] "GET /d HTTP/1.1" 200 9 "https://shop.example/" "{UA}"',
            f'- {pre}4 +0000] "GET /e HTTP/1.1" 200 9 "https://www.bing.com/" "{UA}"',
        ]
    )
    log = await asyncio.to_thread(write, tmp_path / "other_vhosts_access.log", text)
    summary = await run_import(settings, [log], "combined", host="shop.example")
    assert summary.skipped == {}
    got = await query(settings, "SELECT landing_path, referrer_host FROM touchpoints ORDER BY ts")
    assert got == [("/c", "shop.example"), ("/e", "www.bing.com")]


async def test_a_user_name_with_a_space_is_not_read_as_a_virtual_host(tmp_path: Path) -> None:
    """nginx's ``$remote_user`` and Apache's ``%u`` write an HTTP basic-auth user as sent, spaces
    and all (``john doe``). Such a line has four fields before its time, as a vhost_combined one
    has, and was read as one: the client address taken for the site's host and ``-`` (the
    ident) for the client, so the site's own page (a same-site Referer) was recorded as a
    referral from the site itself, and every such user was one visitor, with no address. A
    line whose "client" would be ``-`` and whose first field is an address is read as the
    plain line it is; one with a longer name too, where it was skipped."""
    settings = make_settings(tmp_path)
    at = "[01/Mar/2025:10:00:0"
    text = "\n".join(
        [
            f'203.0.113.24 - john doe {at}0 +0000] "GET /a HTTP/1.1" 200 9 "https://shop.example/login" "{UA}"',  # noqa: E501
            f'203.0.113.24 - john doe {at}1 +0000] "GET /b?utm_source=news HTTP/1.1" 200 9 "-" "{UA}"',
            f'203.0.113.25 - John Q Doe {at}2 +0000] "GET /c?utm_source=news HTTP/1.1" 200 9 "-" "{UA}"',
            f'203.0.113.24 - john {at}3 +0000] "GET /d?utm_source=news HTTP/1.1" 200 9 "-" "{UA}"',
            f'shop.example:443 203.0.113.9 - - {at}4 +0000] "GET /e HTTP/1.1" 200 9 "https://shop.example/" "{UA}"',  # noqa: E501
        ]
    )
    log = await asyncio.to_thread(write, tmp_path / "access.log", text)
    summary = await run_import(settings, [log], "combined", host="shop.example")
    assert summary.skipped == {}, summary.render()
    got = await query(settings, "SELECT landing_path, referrer_host, ip_hash FROM touchpoints ORDER BY ts")
    assert [(path, referrer) for path, referrer, _ in got] == [("/b", None), ("/c", None), ("/d", None)]
    # The client is the address logged first: the same IP hash as a line without the space.
    assert got[0][2] == got[2][2] != got[1][2]


@pytest.mark.timeout(180)  # imports in worker processes: 35 s on a loaded machine
@pytest.mark.parametrize("workers", [1, 2])
async def test_bzip2_and_xz_logs_are_read_and_a_zstd_one_is_refused(tmp_path: Path, workers: int) -> None:
    """logrotate compresses with gzip unless told otherwise (``compresscmd``): a log rotated with
    bzip2 or xz was read as lines of binary garbage, all skipped, exit 0. They are read (the same
    events as the plain log: nothing twice), from a file or a stream; zstd is refused, named."""
    import bz2
    import lzma

    settings = make_settings(tmp_path)
    plain = await asyncio.to_thread(write, tmp_path / "access.log", COMBINED)
    first = await run_import(settings, [plain], "combined", host="shop.example")
    data = await asyncio.to_thread(plain.read_bytes)
    for name, packed in (("access.log.1.bz2", bz2.compress(data)), ("access.log.2.xz", lzma.compress(data))):
        path = tmp_path / name
        await asyncio.to_thread(path.write_bytes, packed)
        for source in (path, io.BytesIO(packed)):
            got = await run_import(settings, [source], "combined", host="shop.example", workers=workers)
            assert (got.lines, got.events, got.skipped) == (first.lines, first.events, first.skipped)
            assert got.new_rows == {"touchpoints": 0, "identities": 0, "conversions": 0}
    zstd = tmp_path / "access.log.3.zst"
    await asyncio.to_thread(zstd.write_bytes, bytes.fromhex("28b52ffd") + b"\x00" * 16)
    await asyncio.to_thread((tmp_path / "gw.toml").write_text, '[storage]\npath = "gw.db"\n')
    args = ("--format", "combined", "-c", "gw.toml", "--host", "x", "--workers", str(workers))
    # After a good log: found before any file is read, as a missing file is, and named; the good
    # log is imported all the same (until 2026-12-06 nothing was), exit 1.
    done = await asyncio.to_thread(_cli, tmp_path, plain.name, zstd.name, *args)
    assert done.returncode == 1
    assert (
        f"gateway import: cannot read {zstd.name}: compressed with zstd, which is not read here: decompress"
        f" it first, as in zstdcat {zstd.name} | gateway import - …; not imported\n"
    ) in done.stderr, done.stderr
    assert done.stderr.endswith(
        f"1 of 2 files failed (named above): {zstd.name}; the other files are in the store\n"
    )
    assert "1 file, 8 lines read" in done.stdout, done.stdout
    alone = await asyncio.to_thread(_cli, tmp_path, zstd.name, *args)  # nothing else: nothing opened
    assert alone.returncode == 1 and alone.stdout == "", alone
    assert alone.stderr.endswith(f"zstdcat {zstd.name} | gateway import - …\n"), alone.stderr


CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"  # noqa: E501


@pytest.mark.parametrize("fmt", ["combined", "json-lines"])
async def test_a_logs_missing_headers_are_not_held_against_its_visitors(tmp_path: Path, fmt: str) -> None:
    """A log keeps no Accept-Language nor client hints: every Chrome landing of a backfill scored
    35 (`review`) for their absence and was left out of attribution, every Firefox one 20. What
    the log does keep still counts: curl's agent."""
    agents = [CHROME, UA, "curl/8.5.0"]
    if fmt == "combined":
        text = "\n".join(
            f'203.0.113.{i} - - [01/Mar/2025:10:00:00 +0000] "GET /?utm_source=ads HTTP/1.1" 200 10 "-" "{a}"'
            for i, a in enumerate(agents)
        )
    else:
        line = {"time": "2025-03-01T10:00:00Z", "method": "GET", "uri": "/?utm_source=ads", "status": 200}
        text = "\n".join(
            json.dumps({**line, "remote_addr": f"203.0.113.{i}", "user_agent": ua})
            for i, ua in enumerate(agents)
        )
    settings = make_settings(tmp_path)
    log = await asyncio.to_thread(write, tmp_path / "access.log", text)
    await run_import(settings, [log], fmt, host="shop.example")
    got = await query(settings, "SELECT bot_score, verdict, reasons FROM touchpoints")
    assert sorted(got) == [(0, "allow", "[]"), (0, "allow", "[]"), (60, "block", '["http_library"]')]


async def test_two_identical_lines_are_two_requests(tmp_path: Path) -> None:
    """Two requests, each its own event ID and touchpoint: an import folds no reload
    (``campaign.repeat_seconds`` is the live proxy's), as whether a line is one would depend on
    which lines the same worker process replayed before it."""
    line = COMBINED.splitlines()[0]
    settings = make_settings(tmp_path)
    log = await asyncio.to_thread(write, tmp_path / "a.log", f"{line}\n{line}")
    summary = await run_import(settings, [log], "combined", host="shop.example")
    assert summary.new_rows is not None and summary.new_rows["touchpoints"] == 2


async def test_a_logged_fragment_is_no_query_as_live(tmp_path: Path) -> None:
    """A ``#`` ends the query, as in the live proxy: the pairs after it are the fragment's (no
    browser sends one; a log may hold a client's), neither recorded nor part of a value."""
    lines = [
        f'203.0.113.9 - - [01/Mar/2025:10:00:00 +0100] "GET /p?utm_source=News#f&utm_medium=x HTTP/1.1" 200 10 "-" "{UA}"',  # noqa: E501
        f'203.0.113.8 - - [01/Mar/2025:10:00:01 +0100] "GET /q#x?utm_source=y HTTP/1.1" 200 10 "-" "{UA}"',
    ]
    settings = make_settings(tmp_path)
    log = await asyncio.to_thread(write, tmp_path / "a.log", "\n".join(lines))
    await run_import(settings, [log], "combined", host="shop.example")
    got = await query(settings, "SELECT source, medium, landing_path, raw_params FROM touchpoints")
    assert got == [("news", None, "/p", '{"utm_source":"news"}')]


async def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    log = await asyncio.to_thread(write, tmp_path / "access.log", COMBINED)
    summary = await run_import(settings, [log], "combined", host="shop.example", dry_run=True)
    assert summary.events["touchpoints"] == 3 and summary.new_rows is None
    assert "dry run: nothing was written" in summary.render()
    assert not await asyncio.to_thread(settings.store_path.exists)


async def test_derived_visitor_is_per_ip_agent_and_day_and_keeps_no_ip(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    text = "\n".join(
        f'{ip} - - [{day}/Mar/2025:10:00:00 +0000] "GET /?utm_source=s{n} HTTP/1.1" 200 1 "-" "{ua}"'
        for n, (ip, day, ua) in enumerate(
            [("203.0.113.9", "01", UA), ("203.0.113.9", "01", UA), ("203.0.113.9", "02", UA),
             ("203.0.113.10", "01", UA), ("203.0.113.9", "01", "curl/8")]
        )
    )  # fmt: skip
    log = await asyncio.to_thread(write, tmp_path / "access.log", text)
    await run_import(settings, [log], "combined", host="shop.example")
    keys = [k for (k,) in await query(settings, "SELECT visitor_key FROM touchpoints ORDER BY source")]
    assert keys[0] == keys[1]  # same IP, agent and day: one visitor
    assert len(set(keys)) == 4  # another day, another IP, another agent: another visitor each
    data = await asyncio.to_thread((tmp_path / "gateway.db").read_bytes)
    assert b"203.0.113" not in data and b"curl" not in data


async def test_a_client_logged_with_its_port_is_one_visitor_over_its_connections(tmp_path: Path) -> None:
    """A server that logs the client with its port (``%h`` as ``addr:port``; a json log's
    ``$remote_addr:$remote_port``, Caddy's ``remote_addr``) gives each new connection of one
    person another port: each was another approximate visitor, IP hash and velocity source,
    splitting the journey. The port is dropped, as live, where the client has none."""
    settings = make_settings(tmp_path)
    clients = ["203.0.113.9:50001", "203.0.113.9:50002", "203.0.113.9",
               "[2001:db8::1]:50003", "[2001:db8::1]:50004", "2001:db8::1"]  # fmt: skip
    text = "\n".join(
        f'{ip} - - [01/Mar/2025:10:00:0{n} +0000] "GET /?utm_source=s{n} HTTP/1.1" 200 1 "-" "{UA}"'
        for n, ip in enumerate(clients)
    )
    log = await asyncio.to_thread(write, tmp_path / "access.log", text)
    await run_import(settings, [log], "combined", host="shop.example")
    got = await query(settings, "SELECT visitor_key, ip_hash FROM touchpoints ORDER BY source")
    assert len(got) == 6
    assert got[0] == got[1] == got[2] and got[3] == got[4] == got[5] and got[0] != got[3]
    records = (
        {"time": f"2025-03-02T10:00:0{n}Z", "method": "GET", "uri": f"/?utm_source=j{n}",
         "host": "shop.example", "remote_addr": ip, "user_agent": UA}
        for n, ip in enumerate(clients)
    )  # fmt: skip
    jsonl = await asyncio.to_thread(write, tmp_path / "access.jsonl", "\n".join(map(json.dumps, records)))
    await run_import(settings, [jsonl], "json-lines")
    got = await query(
        settings, "SELECT visitor_key, ip_hash FROM touchpoints WHERE source LIKE 'j%' ORDER BY source"
    )
    assert len(got) == 6
    assert got[0] == got[1] == got[2] and got[3] == got[4] == got[5] and got[0] != got[3]
    data = await asyncio.to_thread((tmp_path / "gateway.db").read_bytes)
    assert b"203.0.113" not in data and b"2001:db8" not in data


BEHIND_A_BALANCER = "\n".join(
    f'10.0.0.2 - - [01/Mar/2025:10:00:0{n} +0000] "GET /?utm_source=s{n} HTTP/1.1" 200 1 "-" "{UA}" "{xff}"'
    for n, xff in enumerate(["203.0.113.7", "198.51.100.1, 203.0.113.8", "203.0.113.7", "-"])
)
"""nginx's stock ``main`` format behind a load balancer (10.0.0.2): the logged peer is the
balancer on every line, the client is in the X-Forwarded-For after the agent."""


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_log_written_behind_a_trusted_balancer_takes_the_client_from_x_forwarded_for(
    tmp_path: Path, workers: int
) -> None:
    """Behind a load balancer every line's peer is the balancer: everyone with the same browser
    was one visitor a day, and one IP to bot scoring. With the balancer trusted, as live, the
    client is the right-most X-Forwarded-For address that is not a trusted proxy."""
    settings = make_settings(tmp_path, '[proxy]\ntrusted_proxies = ["10.0.0.0/8"]\n')
    log = await asyncio.to_thread(write, tmp_path / "access.log", BEHIND_A_BALANCER)
    summary = await run_import(settings, [log], "combined", host="shop.example", workers=workers)
    got = dict(await query(settings, "SELECT source, visitor_key FROM touchpoints"))
    assert got["s0"] == got["s2"]  # 203.0.113.7 twice: one visitor
    assert len({got["s0"], got["s1"], got["s3"]}) == 3  # 203.0.113.8; the balancer itself (no XFF)
    assert await query(settings, "SELECT count(DISTINCT ip_hash) FROM touchpoints") == [(3,)]
    assert (summary.forwarded, summary.unbelieved) == (3, 0)
    assert re.search(r"forwarded: +3 +\(lines whose client address", summary.render())
    data = await asyncio.to_thread((tmp_path / "gateway.db").read_bytes)
    assert b"203.0.113" not in data and b"198.51.100" not in data


@pytest.mark.parametrize("cut", ['"203.0', '"203.0.113.9"'], ids=["mid-field", "before-the-line-end"])
async def test_a_log_caught_mid_line_imports_that_line_once_whole(tmp_path: Path, cut: str) -> None:
    """An import of the log a server is writing (a cron job on access.log) can catch its last
    line half written. Cut inside the X-Forwarded-For after the agent, that line was imported
    with the balancer as its client, then again once whole (its bytes changed, so its ID did):
    two visitors for one landing. Now a last line without its line end waits for the next
    import; a compressed file, finished, is read to its last byte."""
    settings = make_settings(tmp_path, '[proxy]\ntrusted_proxies = ["10.0.0.0/8"]\n')
    whole = f'10.0.0.2 - - [01/Mar/2025:10:00:09 +0000] "GET /?utm_source=late HTTP/1.1" 200 1 "-" "{UA}" "203.0.113.9"'  # noqa: E501
    log = tmp_path / "access.log"
    caught = BEHIND_A_BALANCER + "\n" + whole[: whole.index('"203.0.113.9"')] + cut
    await asyncio.to_thread(log.write_text, caught)
    first = await run_import(settings, [log], "combined", host="shop.example")
    assert first.new_rows["touchpoints"] == 4
    assert first.examples == [f"access.log:5: {UNENDED}"]
    assert first.lines == caught.count("\n") == 4  # as wc -l counts: the line not read is not
    await asyncio.to_thread(log.write_text, BEHIND_A_BALANCER + "\n" + whole + "\n")
    second = await run_import(settings, [log], "combined", host="shop.example")
    assert (second.new_rows["touchpoints"], second.examples) == (1, [])
    got = await query(settings, "SELECT source, visitor_key FROM touchpoints ORDER BY source")
    assert [source for source, _ in got] == ["late", "s0", "s1", "s2", "s3"]
    assert dict(got)["late"] != dict(got)["s3"]  # the client, not the balancer
    # A finished archive whose last line has no line end: every line read.
    archive = tmp_path / "other.log.gz"
    await asyncio.to_thread(archive.write_bytes, gzip.compress(whole.replace(":09 ", ":10 ").encode()))
    third = await run_import(settings, [archive], "combined", host="shop.example")
    assert (third.new_rows["touchpoints"], third.examples) == (1, [])


async def test_an_untrusted_peers_x_forwarded_for_is_not_believed_and_the_summary_says_so(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path)
    log = await asyncio.to_thread(write, tmp_path / "access.log", BEHIND_A_BALANCER)
    summary = await run_import(settings, [log], "combined", host="shop.example")
    assert await query(settings, "SELECT count(DISTINCT visitor_key) FROM touchpoints") == [(1,)]
    assert (summary.forwarded, summary.unbelieved) == (0, 3)
    assert re.search(r"not trusted: +3 +\(lines that logged an X-Forwarded-For", summary.render())
    assert "--trusted-proxy" in summary.render()


async def _shop(
    tmp_path: Path, start_gateway: GatewayFactory, upstream_server: Any, proxy: str = "", site: str = ""
) -> Any:
    """A gateway (its store in ``tmp_path``) in front of a site answering every page ``ok``, as
    ``https://shop.example``; ``proxy``: more ``[proxy]`` keys; ``site``: another site's URL."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="ok", content_type="text/html")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    toml = f"""
        [proxy]
        public_origin = "https://shop.example"
        {proxy}
        [storage]
        path = "{tmp_path / "gateway.db"}"
        max_wait_ms = 60000
    """  # the landing's response waits for its commit, however loaded the machine
    return await start_gateway(site or await upstream_server(app), toml)


async def test_first_touch_becomes_the_imported_older_one(
    tmp_path: Path, start_gateway: GatewayFactory, upstream_server: Any
) -> None:
    gw = await _shop(tmp_path, start_gateway, upstream_server)
    async with gw.session.get(gw.url + "/?utm_source=live&utm_medium=cpc") as resp:
        cookie = resp.cookies["gw_vid"].value
    store = tmp_path / "gateway.db"
    [(live_id, visitor_key)] = await asyncio.to_thread(rows, store, "SELECT id, visitor_key FROM touchpoints")
    # The site's log kept our cookie (log_format ... "$cookie_gw_vid"); a year older landing.
    line = (
        f'203.0.113.9 - - [01/Mar/2025:10:00:00 +0000] "GET /?utm_source=old&utm_medium=email HTTP/1.1" '
        f'200 1 "-" "{UA}" "{cookie}"'
    )
    forged = cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB")
    forged_line = line.replace("utm_source=old", "utm_source=forged").replace(cookie, forged)
    log = await asyncio.to_thread(write, tmp_path / "access.log", f"{line}\n{forged_line}")
    await run_import(gw.gateway.settings, [log], "combined")  # host from proxy.public_origin
    sql = "SELECT first_touch_id, last_touch_id, touch_count FROM visitors WHERE visitor_key = ?"
    [(first, last, count)] = await asyncio.to_thread(rows, store, sql.replace("?", f"'{visitor_key}'"))
    [(_, source)] = await asyncio.to_thread(
        rows, store, f"SELECT id, source FROM touchpoints WHERE id = '{first}'"
    )
    assert source == "old" and last == live_id and count == 2  # the forged cookie is not this visitor
    [(forged_key,)] = await asyncio.to_thread(
        rows, store, "SELECT visitor_key FROM touchpoints WHERE source = 'forged'"
    )
    assert forged_key != visitor_key


async def test_a_client_in_another_spelling_is_the_live_visitors_ip(
    tmp_path: Path, start_gateway: GatewayFactory, upstream_server: Any
) -> None:
    """A server listening on ``[::]`` logs an IPv4 client as ``::ffff:203.0.113.9``, and a log may
    write an IPv6 address in capitals or with its zeros: live, the gateway reads each as the
    address it is (``203.0.113.9``, ``2001:db8::1``). The import used them as written, so the
    same visitor got another IP hash (bot scoring's source) and approximate visitor."""
    gw = await _shop(tmp_path, start_gateway, upstream_server, 'trusted_proxies = ["127.0.0.1"]')
    for source, client in (("live4", "203.0.113.9"), ("live6", "2001:db8::1")):
        headers = {"X-Forwarded-For": client, "User-Agent": UA}
        async with gw.session.get(f"{gw.url}/?utm_source={source}", headers=headers) as resp:
            assert resp.status == 200
    store = tmp_path / "gateway.db"
    sql = "SELECT source, ip_hash, ts FROM touchpoints WHERE source LIKE 'live%'"
    live = {source: (ip_hash, ts) for source, ip_hash, ts in await asyncio.to_thread(rows, store, sql)}
    when = datetime.fromisoformat(live["live4"][1]).astimezone(UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")
    clients = {"plain": "203.0.113.9", "mapped": "::ffff:203.0.113.9", "upper": "2001:DB8::1",
               "zeros": "2001:0db8:0000:0000:0000:0000:0000:0001",
               "ported": "[::FFFF:203.0.113.9]:5678"}  # fmt: skip
    text = "\n".join(
        f'{ip} - - [{when}] "GET /?utm_source={source} HTTP/1.1" 200 1 "-" "{UA}"'
        for source, ip in clients.items()
    )
    log = await asyncio.to_thread(write, tmp_path / "access.log", text)
    await run_import(gw.gateway.settings, [log], "combined")
    sql = "SELECT source, ip_hash, visitor_key FROM touchpoints WHERE source NOT LIKE 'live%'"
    got = {source: (ip_hash, key) for source, ip_hash, key in await asyncio.to_thread(rows, store, sql)}
    assert got["plain"][0] == live["live4"][0]  # the same day's key: comparable
    assert got["mapped"] == got["ported"] == got["plain"]  # one IP hash, one approximate visitor
    assert got["upper"][0] == got["zeros"][0] == live["live6"][0]
    assert got["upper"][1] == got["zeros"][1]
    record = {"time": live["live4"][1], "method": "GET", "uri": "/?utm_source=json", "host": "shop.example",
              "remote_addr": "::ffff:203.0.113.9", "user_agent": UA}  # fmt: skip
    jsonl = await asyncio.to_thread(write, tmp_path / "access.jsonl", json.dumps(record))
    await run_import(gw.gateway.settings, [jsonl], "json-lines")
    sql = "SELECT ip_hash, visitor_key FROM touchpoints WHERE source = 'json'"
    assert await asyncio.to_thread(rows, store, sql) == [got["plain"]]


async def test_a_raw_utf8_target_is_imported_as_the_live_gateway_records_it(
    tmp_path: Path, start_gateway: GatewayFactory, upstream_server: Any
) -> None:
    """``GET /café?utm_source=né`` with the é as raw UTF-8: live, the gateway forwards it and
    records its landing (since 2026-12-06); the import skipped every such line as "a 400 live".
    The same request as nginx's combined log writes it (``\\xC3\\xA9``), as its ``escape=json``
    writes it (the bytes as they came) and as Caddy's does (text), makes the live touchpoint; the
    same in Latin-1, which the gateway answers 400, none, and says why."""
    received: list[Received] = []
    url, site = await raw_recording_upstream(received)  # an aiohttp site answers raw UTF-8 400
    gw = await _shop(tmp_path, start_gateway, upstream_server, site=url)
    target = "/caf\u00e9/\u65e5\u672c?utm_source=N\u00e9&utm_medium=e-mail"
    target += "&utm_campaign=\u20ac\u00e9t\u00e9&q=\u00fc"
    request = f"GET {target} HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: {UA}\r\nAccept: text/html\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.port)
    try:
        writer.write(request.encode())
        await writer.drain()
        assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    finally:
        writer.close()
        await writer.wait_closed()
        site.close()
        await site.wait_closed()
    fields = "source, medium, campaign, term, content, click_id_kind, referrer_host, landing_path"
    fields += ", raw_params, channel"
    store = tmp_path / "gateway.db"
    live = await asyncio.to_thread(rows, store, f"SELECT {fields} FROM touchpoints")
    params = '{"utm_source":"n\u00e9","utm_medium":"e-mail","utm_campaign":"\u20ac\u00e9t\u00e9"}'
    campaign = ("n\u00e9", "e-mail", "\u20ac\u00e9t\u00e9", None, None, None, None)
    assert live == [(*campaign, "/caf\u00e9/\u65e5\u672c", params, "Email")]
    escaped = "".join(c if c.isascii() else "".join(f"\\x{b:02X}" for b in c.encode()) for c in target)
    latin1 = "/caf\\xE9?utm_source=latin1"
    combined = "\n".join(
        f'203.0.113.9 - - [01/Mar/2025:10:00:0{n} +0000] "GET {t} HTTP/1.1" 200 2 "-" "{UA}"'
        for n, t in enumerate((escaped, target, latin1))
    )
    log = await asyncio.to_thread(write, tmp_path / "access.log", combined)
    summary = await run_import(gw.gateway.settings, [log], "combined")
    assert summary.examples == [
        "access.log:3: a request target whose bytes are not UTF-8 (Latin-1?): the gateway answers"
        " such a request 400: 'GET /caf\\xe9?utm_source=latin1 HTTP/1.1'"  # one backslash, as nginx logs it
    ]
    record = {"time": "2025-03-01T10:00:05Z", "method": "GET", "uri": target, "remote_addr": "203.0.113.9",
              "host": "shop.example", "user_agent": UA}  # fmt: skip
    jsonl = (
        json.dumps(record, ensure_ascii=False) + "\n" + json.dumps(record | {"time": "2025-03-01T10:00:06Z"})
    )
    log = await asyncio.to_thread(write, tmp_path / "access.jsonl", jsonl)
    summary = await run_import(gw.gateway.settings, [log], "json-lines")
    assert summary.new_rows is not None and summary.new_rows["touchpoints"] == 2
    imported = await asyncio.to_thread(rows, store, f"SELECT {fields} FROM touchpoints ORDER BY ts")
    assert imported == live * 5


async def test_json_lines_default_and_overridden_fields(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    lines = [
        {"time": "2025-03-01T10:00:00+00:00", "method": "GET", "uri": "/?utm_source=a", "status": 200,
         "host": "shop.example", "referer": "-", "user_agent": UA, "remote_addr": "203.0.113.9"},
        {"time": 1740823200.5, "request": "GET /?utm_source=b HTTP/2.0", "status": "200", "remote_addr": "1.2.3.4"},  # noqa: E501
        {"time": "yesterday", "method": "GET", "uri": "/?utm_source=c"},
        [1, 2],
    ]  # fmt: skip
    text = "\n".join(json.dumps(line) for line in lines) + "\n{not json"
    log = await asyncio.to_thread(write, tmp_path / "access.jsonl", text)
    summary = await run_import(settings, [log], "json-lines", host="shop.example")
    got = await query(settings, "SELECT source, ts FROM touchpoints ORDER BY source")
    assert got == [("a", "2025-03-01T10:00:00.000000Z"), ("b", "2025-03-01T10:00:00.500000Z")]
    assert summary.examples == [
        "access.jsonl:3: time: missing or unreadable at /time: 'yesterday'",
        "access.jsonl:4: not a JSON object",
        "access.jsonl:5: not valid JSON",
    ]
    other = [{"@timestamp": "2025-03-01T10:00:00Z", "req": {"path": "/?utm_source=z"}, "verb": "GET"}]
    log2 = await asyncio.to_thread(write, tmp_path / "other.jsonl", json.dumps(other[0]))
    fields = parse_fields(["time=/@timestamp", "uri=/req/path", "method=/verb"])
    await run_import(settings, [log2], "json-lines", host="shop.example", fields=fields)
    assert await query(settings, "SELECT count(*) FROM touchpoints WHERE source = 'z'") == [(1,)]


async def test_field_overrides_are_checked(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="NAME one of time, method"):
        parse_fields(["when=/t"])
    with pytest.raises(UsageError, match="starts with"):
        parse_fields(["time=t"])
    # A path written with dots, as jq or a log shipper writes it, is answered with the pointer it
    # means, as a rule's or a [[sources]] pointer is (until 2026-12-07: the bare rule alone).
    for written, meant in [
        ("uri=request.uri", "uri=/request/uri"),
        ("uri=$.request.uri", "uri=/request/uri"),
        ("ip=.headers[0].ip", "ip=/headers/0/ip"),
        ("time= /@timestamp", "time=/@timestamp"),
    ]:
        with pytest.raises(UsageError) as info:
            parse_fields([written])
        assert str(info.value) == (
            f'--field {written}: a JSON pointer starts with "/" (or is empty to unmap): write --field {meant}'
        )
    with pytest.raises(UsageError) as info:
        parse_fields(["uri=a b"])  # no path: no pointer to give
    assert str(info.value) == '--field uri=a b: a JSON pointer starts with "/" (or is empty to unmap)'
    # The time unmapped: every line was skipped as "time: missing or unreadable at /", a key named
    # "" (until 2026-12-05). The time is the one field a line cannot go without.
    with pytest.raises(UsageError, match="--field time=: every line needs its time; point it where"):
        parse_fields(["time="])
    # One field mapped twice: the last one won, silently (until 2026-12-04).
    with pytest.raises(UsageError, match=r"--field time: given twice \(time=/t, then time=/u\); map each"):
        parse_fields(["time=/t", "uri=/p", "time=/u"])
    assert parse_fields(["time=/t", "time=/t"]) == {"time": "/t"}  # the same twice is no conflict
    # Given with another format, where it would be silently ignored, it is refused.
    fields = parse_fields(["time=/@timestamp"])
    for fmt in ("combined", "segment"):
        with pytest.raises(UsageError, match=f"--field: maps the fields of json-lines; --format {fmt} has"):
            await run_import(make_settings(tmp_path), [], fmt, host="shop.example", fields=fields)


async def test_segment_archive_pages_and_identifies(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    page = {"type": "page", "messageId": "m1", "anonymousId": "anon-1", "timestamp": "2025-03-01T10:00:00Z",
            "context": {"campaign": {"source": "Newsletter", "medium": "email", "name": "spring"}},
            "properties": {"path": "/pricing"}}  # fmt: skip
    identify = {"type": "identify", "messageId": "m2", "anonymousId": "anon-1", "userId": "u-42",
                "timestamp": "2025-03-01T10:05:00Z"}  # fmt: skip
    plain_page = {
        "type": "page",
        "messageId": "m3",
        "anonymousId": "anon-2",
        "timestamp": "2025-03-01T10:06:00Z",
    }
    track = {"type": "track", "messageId": "m4", "event": "Clicked", "timestamp": "2025-03-01T10:07:00Z"}
    no_time = {"type": "page", "messageId": "m5", "anonymousId": "anon-3"}
    text = "\n".join(json.dumps(e) for e in (page, identify, plain_page, track, no_time))
    text += "\n" + json.dumps({"batch": [dict(page, messageId="m6", anonymousId="anon-9")]})
    # a batch whose events carry no messageId: each is still its own event
    unkeyed = {k: v for k, v in page.items() if k != "messageId"}
    text += "\n" + json.dumps({"batch": [dict(unkeyed, anonymousId="x1"), dict(unkeyed, anonymousId="x2")]})
    log = await asyncio.to_thread(write, tmp_path / "segment.json", text, compress=True)
    summary = await run_import(settings, [log], "segment")
    assert summary.new_rows == {"touchpoints": 4, "identities": 1, "conversions": 0}
    anon = Keys.from_master(settings.secret).visitor_key("anon-1")  # as the live /_gw/segment keys it
    tps = await query(
        settings,
        f"SELECT source, campaign, landing_path, ts, channel FROM touchpoints WHERE visitor_key = '{anon}'",
    )
    assert tps == [("newsletter", "spring", "/pricing", "2025-03-01T10:00:00.000000Z", "Email")]
    [(visitor_key, origin, ts)] = await query(settings, "SELECT visitor_key, origin, ts FROM identities")
    assert (visitor_key, origin, ts) == (anon, "import", "2025-03-01T10:05:00.000000Z")
    assert summary.examples == [  # the page without campaign data counted too (not until 2026-12-08)
        "segment.json:3: page view without campaign data (none of source, medium, campaign,"
        " creator_id, click_id): no touchpoint",
        "segment.json:4: segment type 'track': not imported",
        "segment.json:5: timestamp: missing",
    ]
    again = await run_import(settings, [log], "segment")
    assert again.new_rows == {"touchpoints": 0, "identities": 0, "conversions": 0}


async def test_segment_calls_whose_message_id_is_a_placeholder_are_each_their_own(tmp_path: Path) -> None:
    """analytics.js code that writes ``messageId: String(undefined)`` sends "undefined" for
    every call. The import seeded each call's id by its messageId, so two visitors' pages of the
    same second (a server-side source's whole-second timestamps) got one id and the second was
    taken for the first, "already in the store": lost. A placeholder is no ID (as the live
    endpoint reads it): such a call is keyed by where it was read, as one without a messageId."""
    settings = make_settings(tmp_path)
    campaign = {"source": "Newsletter", "medium": "email", "name": "spring"}
    page = {"type": "page", "timestamp": "2025-03-01T10:00:00Z", "context": {"campaign": campaign}}
    calls = [
        dict(page, messageId=m, anonymousId=f"anon-{i}")
        for i, m in enumerate(["undefined", "undefined", " null "])
    ]
    text = "\n".join(json.dumps(c) for c in calls)
    text += "\n" + json.dumps(
        {
            "batch": [
                dict(page, messageId="NULL", anonymousId="anon-8"),
                dict(page, messageId="NULL", anonymousId="anon-9"),
            ]
        }
    )
    log = await asyncio.to_thread(write, tmp_path / "segment.json", text)
    summary = await run_import(settings, [log], "segment")
    assert summary.new_rows == {"touchpoints": 5, "identities": 0, "conversions": 0}, summary.render()
    assert await query(settings, "SELECT count(DISTINCT visitor_key) FROM touchpoints") == [(5,)]
    again = await run_import(settings, [log], "segment")  # still idempotent
    assert again.new_rows == {"touchpoints": 0, "identities": 0, "conversions": 0}, again.render()


async def test_a_segment_identify_without_a_user_is_counted_as_skipped(tmp_path: Path) -> None:
    """An ``identify`` call with no ``userId`` (an anonymous one, setting traits), or a placeholder
    one (``"undefined"``), binds no one. The import left it out without a word: the summary said
    ``skipped: 0``, and the operator could not tell that calls of the archive were not imported.
    It is counted where the other skips are, with the reason (the placeholder shown in the first
    skipped), and an identify that binds is imported as before."""
    settings = make_settings(tmp_path)
    identify = {"type": "identify", "anonymousId": "anon-1", "timestamp": "2025-03-01T10:05:00Z"}
    calls = [
        dict(identify, messageId="m1", traits={"plan": "pro"}),  # no userId
        dict(identify, messageId="m2", userId="undefined"),  # a placeholder
        dict(identify, messageId="m3", userId="u-42"),  # binds
    ]
    text = "\n".join(json.dumps(c) for c in calls)
    text += "\n" + json.dumps({"batch": [dict(identify, messageId="m4", userId=" null ")]})
    log = await asyncio.to_thread(write, tmp_path / "segment.json", text)
    summary = await run_import(settings, [log], "segment")
    rendered = summary.render()
    assert summary.new_rows == {"touchpoints": 0, "identities": 1, "conversions": 0}, rendered
    reason = "identify without both visitor_id (/anonymousId) and user_id (/userId): nothing to bind"
    assert summary.skipped == {reason: 3}, rendered
    assert f"  skipped:              3\n           3  {reason}\n" in rendered, rendered
    placeholder = "; user_id (/userId): 'undefined' is no value"
    assert summary.examples[0] == f"segment.json:1: {reason}", rendered
    assert summary.examples[1].startswith(f"segment.json:2: {reason}{placeholder}"), rendered
    assert summary.examples[2].startswith(f"segment.json:4: {reason}; user_id (/userId): 'null'"), rendered
    assert not summary.failed, rendered  # calls in the format, not a file in another one


async def test_a_segment_page_without_campaign_data_is_counted_as_skipped(tmp_path: Path) -> None:
    """A ``page`` call without campaign data (most pages of an archive: a visitor browsing) makes
    no touchpoint. The import left it out without a word: neither imported nor skipped, the
    summary's calls not adding up to those read. It is counted where the other skips are, with
    its reason, and a page with campaign data is imported as before."""
    settings = make_settings(tmp_path)
    page = {"type": "page", "anonymousId": "anon-1", "timestamp": "2025-03-01T10:00:00Z"}
    campaign = {"source": "Newsletter", "medium": "email", "name": "spring"}
    calls = [
        dict(page, messageId="m1"),  # no context at all
        dict(page, messageId="m2", context={"page": {"path": "/pricing"}}),  # browsing
        dict(page, messageId="m3", context={"campaign": campaign}),  # a landing
    ]
    text = "\n".join(json.dumps(c) for c in calls)
    placeholder = {"campaign": {"name": "undefined"}}  # a link builder's String(undefined)
    text += "\n" + json.dumps({"batch": [dict(page, messageId="m4", context=placeholder)]})
    log = await asyncio.to_thread(write, tmp_path / "segment.json", text)
    summary = await run_import(settings, [log], "segment")
    rendered = summary.render()
    assert summary.new_rows == {"touchpoints": 1, "identities": 0, "conversions": 0}, rendered
    reason = (
        "page view without campaign data (none of source, medium, campaign, creator_id, click_id):"
        " no touchpoint"
    )
    assert summary.skipped == {reason: 3}, rendered
    assert f"  skipped:              3\n           3  {reason}\n" in rendered, rendered
    assert summary.examples == [
        f"segment.json:1: {reason}",
        f"segment.json:2: {reason}",
        f"segment.json:4: {reason}; campaign (/context/campaign/name): 'undefined' is no value"
        " (what code writes where it has none: undefined, null…)",
    ], rendered
    assert not summary.failed, rendered


def flow_dump(
    path: Path, flows: Iterable[tuple[bytes, bytes, float, Iterable[tuple[bytes, bytes]]]], tcp: bool = False
) -> Path:
    """A mitmproxy flow dump at ``path``: each of ``flows`` (method, target, time, header lines
    beside Host and Accept, bytes as sent) a request to shop.example answered 200; ``tcp``: a
    TCP flow after them."""
    from mitmproxy.io import FlowWriter
    from mitmproxy.test import tflow, tutils

    with path.open("wb") as fo:
        writer = FlowWriter(fo)
        for method, target, ts, headers in flows:
            req = tutils.treq(method=method, path=target, timestamp_start=ts)
            req.headers["host"] = "shop.example"
            req.headers["accept"] = "text/html"
            req.headers.fields += tuple(headers)
            writer.add(tflow.tflow(req=req, resp=tutils.tresp(status_code=200)))
        if tcp:
            writer.add(tflow.ttcpflow())
    return path


async def test_mitm_flow_dump(tmp_path: Path) -> None:
    pytest.importorskip("mitmproxy")

    def dump() -> Path:
        flows = [(b"GET", b"/landing?utm_source=mitm&utm_campaign=x", 1740823200.0, ()),
                 (b"GET", b"/plain", 1740823201.0, ())]  # fmt: skip
        return flow_dump(tmp_path / "flows.mitm", flows, tcp=True)

    settings = make_settings(tmp_path)
    path = await asyncio.to_thread(dump)
    summary = await run_import(settings, [path], "mitm")
    assert summary.lines == 3 and summary.examples == ["flows.mitm:3: not an HTTP flow (TCPFlow)"]
    assert "  replayed:             2   (" in summary.render()  # a flow is a line there
    got = await query(settings, "SELECT source, campaign, landing_path, ts FROM touchpoints")
    assert got == [("mitm", "x", "/landing", "2025-03-01T10:00:00.000000Z")]
    again = await run_import(settings, [path], "mitm")
    assert again.new_rows == {"touchpoints": 0, "identities": 0, "conversions": 0}
    piped = await run_import(settings, [io.BytesIO(await asyncio.to_thread(path.read_bytes))], "mitm")
    assert piped.examples == ["stdin:3: not an HTTP flow (TCPFlow)"]
    assert piped.new_rows == {"touchpoints": 0, "identities": 0, "conversions": 0}


async def test_a_flow_whose_target_the_gateway_refuses_is_skipped(tmp_path: Path) -> None:
    """A flow dump keeps a target's bytes as sent: one that is not UTF-8 (Latin-1 ``caf\\xe9``)
    reached the pipeline with surrogates in it, which no stored row can hold, where the live
    gateway answers it 400; such a flow is skipped as the other formats skip the line, and a
    raw UTF-8 target is imported as live."""
    pytest.importorskip("mitmproxy")

    def dump() -> Path:
        # Header bytes as sent, which mitmproxy keeps: a Latin-1 User-Agent and Referer.
        latin = ((b"user-agent", b"Mozilla/5.0 caf\xe9"), (b"referer", b"http://b\xe9.example/"))
        flows = [
            (b"GET", b"/caf\xe9?utm_source=latin", 1740823200.0, ()),
            (b"GET", "/café?utm_source=né".encode(), 1740823201.0, ()),
            (b"GET", b"/p\x01?utm_source=control", 1740823202.0, ()),
            (b"GET", b"/landing?utm_source=plain", 1740823203.0, ()),
            (b"GET", b"/landing?utm_source=latin-agent", 1740823204.0, latin),
        ]
        return flow_dump(tmp_path / "flows.mitm", flows)

    settings = make_settings(tmp_path)
    summary = await run_import(settings, [await asyncio.to_thread(dump)], "mitm")
    got = await query(settings, "SELECT source, landing_path FROM touchpoints ORDER BY ts")
    # A Latin-1 User-Agent read as U+FFFD, as in a combined line (the import stopped with a
    # traceback on its surrogates).
    assert got == [("né", "/café"), ("plain", "/landing"), ("latin-agent", "/landing")]
    assert summary.examples == [f"flows.mitm:1: {NOT_UTF8}", f"flows.mitm:3: {CONTROL}"], summary.examples


@pytest.mark.parametrize("honor", [True, False])
async def test_a_flow_that_opted_out_is_not_imported(tmp_path: Path, honor: bool) -> None:
    """A flow dump keeps every header, ``Sec-GPC`` (and ``DNT``) included: live, such a visitor
    gets no visitor key, no touchpoint, no binding and no conversion, only a daily count. The
    import gave the landing, the login's binding and the order a visitor derived from the line,
    as for anyone. It skips them, saying why (not even the count: a count is not idempotent,
    and a second import of the file would add it again)."""
    pytest.importorskip("mitmproxy")

    def dump() -> Path:
        flows = [
            (b"GET", b"/landing?utm_source=gpc", 1740823200.0, [(b"sec-gpc", b"1")]),
            # On two lines (a browser's 0, an extension's 1): the opt-out wins, as live.
            (
                b"POST",
                b"/login?user=gpc%40example.com",
                1740823201.0,
                [(b"sec-gpc", b"0"), (b"sec-gpc", b"1")],
            ),
            (b"GET", b"/landing?utm_source=dnt", 1740823202.0, [(b"dnt", b"1")]),
        ]
        return flow_dump(tmp_path / "flows.mitm", flows)

    settings = make_settings(
        tmp_path,
        f"""
        [privacy]
        honor_gpc = {str(honor).lower()}
        [[identity.rules]]
        name = "login"
        path = "/login"
        status = [200]
        user_id = {{ query = "user" }}
        """,
    )
    path = await asyncio.to_thread(dump)
    summary = await run_import(settings, [path], "mitm")
    got = await query(settings, "SELECT source FROM touchpoints ORDER BY ts")
    bound = await query(settings, "SELECT count(*) FROM identities")
    if honor:
        assert got == [("dnt",)] and bound == [(0,)]  # DNT is honoured only with privacy.honor_dnt
        reason = (
            "Sec-GPC: 1, the visitor opted out (privacy.honor_gpc): live, only counted per day; not imported"
        )
        assert summary.examples == [f"flows.mitm:1: {reason}", f"flows.mitm:2: {reason}"]
    else:
        assert got == [("gpc",), ("dnt",)] and bound == [(1,)]
    assert await query(settings, "SELECT count(*) FROM daily_counts") == [(0,)]


async def test_logs_without_a_host_need_one(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    log = await asyncio.to_thread(write, tmp_path / "access.log", COMBINED)
    with pytest.raises(UsageError, match="--host"):
        await run_import(settings, [log], "combined")


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **ENV}
    return subprocess.run(
        [sys.executable, "-m", "gateway", "import", *args], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=120,  # as test_import_runs' commands
    )  # fmt: skip


def test_cli_imports_a_generated_2k_line_log(tmp_path: Path) -> None:
    log = write_log(tmp_path / "access.log", 2000, compress=True)
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\nnode = "import-test"\n')
    done = _cli(tmp_path, str(log), "--format", "combined", "-c", "gw.toml", "--host", "shop.example")
    assert done.returncode == 0, done.stderr
    assert "2,000 lines read" in done.stdout
    [(count,)] = rows(tmp_path / "gw.db", "SELECT count(*) FROM touchpoints")
    assert count > 0 and f"new in the store: {count:,}" in done.stdout
    again = _cli(tmp_path, str(log), "--format", "combined", "-c", "gw.toml", "--host", "shop.example")
    assert "new in the store: 0" in again.stdout
    assert rows(tmp_path / "gw.db", "SELECT count(*) FROM touchpoints") == [(count,)]
    closed = subprocess.run(  # stderr closed (2>&-), as cron lines may have it: no bar, no hang
        ["sh", "-c", f'exec "{sys.executable}" -m gateway import "{log}" --format combined -c gw.toml'
         " --host shop.example 2>&-"],
        cwd=tmp_path, env={**os.environ, **ENV}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert closed.returncode == 0 and "new in the store: 0" in closed.stdout, closed
    missing = _cli(tmp_path, "nope.log", "--format", "combined", "-c", "gw.toml", "--host", "x")
    assert missing.returncode == 1 and "cannot read nope.log" in missing.stderr
    no_host = _cli(tmp_path, str(log), "--format", "combined", "-c", "gw.toml")
    assert no_host.returncode == 2 and "--host" in no_host.stderr and "Traceback" not in no_host.stderr


def test_cli_trusts_the_balancer_named_by_trusted_proxy_and_refuses_a_bad_one(tmp_path: Path) -> None:
    write(tmp_path / "access.log", BEHIND_A_BALANCER)
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    args = ("access.log", "--format", "combined", "-c", "gw.toml", "--host", "shop.example")
    done = _cli(tmp_path, *args, "--trusted-proxy", "10.0.0.2", "--trusted-proxy", "192.0.2.0/24")
    assert done.returncode == 0, done.stderr
    assert re.search(r"forwarded: +3 ", done.stdout) and "not trusted" not in done.stdout
    assert rows(tmp_path / "gw.db", "SELECT count(DISTINCT visitor_key) FROM touchpoints") == [(3,)]
    bad = _cli(tmp_path, *args, "--trusted-proxy", "10.0.0.300")
    assert (
        bad.returncode == 2 and "--trusted-proxy: not an IP address or CIDR block: '10.0.0.300'" in bad.stderr
    )
    assert "Traceback" not in bad.stderr


@pytest.mark.timeout(180)  # import commands: 32 s on a loaded machine
def test_a_file_of_which_no_line_is_in_the_format_asked_for_exits_1(tmp_path: Path) -> None:
    """A JSON log imported as ``combined`` skipped every line and exited 0: a cron job or a
    script never learned that nothing was imported."""
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    # Blank lines among them (a separator, a concatenation) are neither lines nor skips.
    (tmp_path / "caddy.log").write_text('{"ts": 1, "request": {"uri": "/"}}\n\n{"ts": 2}\n\n')
    wrong = _cli(tmp_path, "caddy.log", "--format", "combined", "-c", "gw.toml", "--host", "x")
    assert wrong.returncode == 1, wrong
    assert "nothing imported: every line read was skipped as not in the combined format" in wrong.stderr
    assert "is --format combined right?" in wrong.stderr and "skipped:              2" in wrong.stdout
    # The same log being written, its last line caught half written (not read): still 1.
    (tmp_path / "live.log").write_text('{"ts": 1, "request": {"uri": "/"}}\n{"ts": 2}\n{"ts": 3, "req')
    live = _cli(tmp_path, "live.log", "--format", "combined", "-c", "gw.toml", "--host", "x")
    assert live.returncode == 1 and "is --format combined right?" in live.stderr, live
    # Nothing read but that line: nothing says the format is wrong.
    (tmp_path / "started.log").write_text('{"ts": 1, "req')
    started = _cli(tmp_path, "started.log", "--format", "combined", "-c", "gw.toml", "--host", "x")
    assert started.returncode == 0 and "the last line has no line end" in started.stdout, started
    # Its time elsewhere than json-lines looks: the hint names --field too.
    unmapped = _cli(tmp_path, "caddy.log", "--format", "json-lines", "-c", "gw.toml")
    assert unmapped.returncode == 1 and "(and --field, which names where" in unmapped.stderr, unmapped
    # A combined log but for its time (nginx's $time_iso8601): every time unreadable, exit 0 until
    # 2026-12-05, nothing imported.
    (tmp_path / "iso.log").write_text(
        '1.2.3.4 - - [2026-11-01T10:00:00+00:00] "GET /?utm_source=x HTTP/1.1" 200 5 "-" "Mozilla/5.0"\n'
    )
    iso = _cli(tmp_path, "iso.log", "--format", "combined", "-c", "gw.toml", "--host", "x")
    assert iso.returncode == 1 and "is --format combined right?" in iso.stderr, iso
    assert "written as nginx's $time_local, [10/Oct/2025:13:55:36 +0000]" in iso.stderr
    # Lines that are in the format but make nothing (an asset, a 404), or an empty file: 0.
    (tmp_path / "assets.log").write_text(
        '1.2.3.4 - - [01/Nov/2026:10:00:00 +0000] "GET /app.css HTTP/1.1" 200 5 "-" "curl/8"\n\ngarbage\n'
    )
    (tmp_path / "empty.log").write_text("")
    for name in ("assets.log", "empty.log"):
        done = _cli(tmp_path, name, "--format", "combined", "-c", "gw.toml", "--host", "x")
        assert done.returncode == 0 and "none of" not in done.stderr, done


def test_the_server_never_loads_the_importer() -> None:
    code = (
        "import sys, gateway.server, gateway.cli; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tqdm', 'mitmproxy') "
        "or m in ('gateway.importcmd', 'gateway.importrun', 'gateway.importreplay', 'gateway.importread', "
        "'gateway.importwrite', 'gateway.importstop', 'gateway.importreport', 'gateway.importworkers', "
        "'gateway.importruns', 'gateway.importlandings', 'storage.imports', "
        "'gateway.backfill', 'gateway.logformats', 'gateway.progress')))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_progress_bar_on_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings(tmp_path)
    log = await asyncio.to_thread(write, tmp_path / "access.log", COMBINED)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    await run_import(settings, [log], "combined", host="shop.example", progress=True, dry_run=True)
    shown = terminal.getvalue()
    assert "import: 100%" in shown and "lines/s" in shown
    # A stream's size is not known before its end: the bytes read so far and the rate.
    terminal.truncate(0)
    stream = io.BytesIO(COMBINED.encode())
    await run_import(settings, [stream], "combined", host="shop.example", progress=True, dry_run=True)
    shown = terminal.getvalue()
    assert f"import: {len(COMBINED)}B" in shown and "lines/s" in shown and "%" not in shown, shown


@pytest.mark.timeout(180)  # import commands: 60 s on a loaded machine, the suite's default
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_truncated_or_corrupt_gzip_ends_the_import_keeping_what_was_read(
    tmp_path: Path, workers: str
) -> None:
    """A gzip file cut short on disk (an incomplete copy) or whose check fails: it used to be one
    skipped line and exit 0, where a broken block ended the import with exit 1, so cron never
    heard of it. Both now end it as any file that breaks part way does: every line read before
    the break is in the store, the file is named with gzip's reason, exit 1."""
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    whole = write_log(tmp_path / "whole.log.gz", 10_000, compress=True).read_bytes()
    cut = whole[: len(whole) * 6 // 10]
    readable = zlib.decompressobj(wbits=31).decompress(cut).count(b"\n")
    bad_crc = whole[:-8] + bytes(b ^ 0xFF for b in whole[-8:-4]) + whole[-4:]
    args = ("--format", "combined", "-c", "gw.toml", "--host", "shop.example", "--workers", workers)
    for name, data, lines, reason in (
        ("cut.log.gz", cut, readable, "Compressed file ended before the end-of-stream marker was reached"),
        ("crc.log.gz", bad_crc, 10_000, "CRC check failed"),
    ):
        (tmp_path / name).write_bytes(data)
        done = _cli(tmp_path, name, *args)
        assert done.returncode == 1, done
        assert "Traceback" not in done.stderr
        assert f"1 file, {lines:,} lines read" in done.stdout, done.stdout
        message = done.stderr.strip().splitlines()[-1]
        assert message.startswith(f"gateway import: cannot read {name}: {reason}"), message
        assert f"; its lines up to {lines:,} are in the store: once it can be read" in message, message
        # The store has what one import of the file's readable lines gives.
        (tmp_path / "fresh.toml").write_text(f'[storage]\npath = "{name}.db"\n')
        (tmp_path / "head.log").write_bytes(b"".join(gzip.decompress(whole).splitlines(True)[:lines]))
        assert _cli(tmp_path, "head.log", *args[:3], "fresh.toml", *args[4:]).returncode == 0
        ids = "SELECT id FROM touchpoints ORDER BY id"
        assert rows(tmp_path / "gw.db", ids) == rows(tmp_path / f"{name}.db", ids) != []


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_late_rescore_names_the_imported_landing(tmp_path: Path, workers: int) -> None:
    """A visitor lands from a campaign, then fetches robots.txt: live, the landing is re-scored
    (``robots_txt``), a verdict change naming it. Imported, the change named the id the chain
    had given the landing, not the deterministic one the import stores it under: the store
    found no such touchpoint and left the change out as an erased visitor's row (``erased: 1``
    in the summary of a store with no erasure), so the landing kept the verdict of a human."""
    settings = make_settings(tmp_path)
    text = "\n".join(
        [
            f'203.0.113.9 - - [01/Mar/2025:10:00:00 +0000] "GET /?utm_source=news HTTP/1.1" 200 10 "-" "{UA}"',  # noqa: E501
            f'203.0.113.9 - - [01/Mar/2025:10:00:05 +0000] "GET /robots.txt HTTP/1.1" 200 10 "-" "{UA}"',
        ]
    )
    log = await asyncio.to_thread(write, tmp_path / "access.log", text)
    summary = await run_import(settings, [log], "combined", host="shop.example", workers=workers)
    assert summary.erased == 0, summary.render()
    [(touchpoint,)] = await query(settings, "SELECT id FROM touchpoints")
    changes = await query(settings, "SELECT touchpoint_id, note FROM verdict_changes")
    assert changes == [(touchpoint, "robots_txt")]
    [(reasons,)] = await query(settings, "SELECT effective_reasons FROM effective_touchpoints")
    assert "robots_txt" in json.loads(reasons)
    # Imported again: nothing added, the change included.
    again = await run_import(settings, [log], "combined", host="shop.example", workers=workers)
    assert again.erased == 0 and await query(settings, "SELECT count(*) FROM verdict_changes") == [(1,)]


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_robots_fetch_imported_in_a_later_run_rescores_the_landing(
    tmp_path: Path, workers: int
) -> None:
    """A visitor lands from a campaign, then fetches robots.txt; the log rotated between the two,
    and the rotated files were imported in two runs. Within one run the landing is re-scored; in
    the second run, the first run's landing was known only to the store, not to bots scoring,
    and it kept a human's verdict. The robots.txt line now finds the visitor's landings in the
    store within ``bots.window_seconds``: re-scored as in one run, the change undone with the
    landing's run, and importing the file again adds no second change."""
    settings = make_settings(tmp_path)
    first = "\n".join(
        [
            f'203.0.113.9 - - [01/Mar/2025:08:00:00 +0000] "GET /?utm_source=old HTTP/1.1" 200 10 "-" "{UA}"',
            f'203.0.113.9 - - [01/Mar/2025:10:00:00 +0000] "GET /?utm_source=news HTTP/1.1" 200 10 "-" "{UA}"',  # noqa: E501
            f'198.51.100.4 - - [01/Mar/2025:10:00:01 +0000] "GET /?utm_source=news HTTP/1.1" 200 10 "-" "{UA}"',  # noqa: E501
        ]
    )
    robots = f'203.0.113.9 - - [01/Mar/2025:10:00:05 +0000] "GET /robots.txt HTTP/1.1" 200 10 "-" "{UA}"'
    log1 = await asyncio.to_thread(write, tmp_path / "access.log.1", first)
    log2 = await asyncio.to_thread(write, tmp_path / "access.log", robots)
    one = await run_import(settings, [log1], "combined", host="shop.example", workers=workers)
    assert one.new_rows == {"touchpoints": 3, "identities": 0, "conversions": 0}, one.render()
    two = await run_import(settings, [log2], "combined", host="shop.example", workers=workers)
    assert two.no_touchpoint == 0 and two.erased == 0, two.render()
    [(landing,)] = await query(
        settings, "SELECT id FROM touchpoints WHERE source = 'news' AND ts < '2025-03-01T10:00:01'"
    )
    # The same visitor's landing within the window: re-scored. The one two hours before (out of
    # the window), and another visitor's: not.
    changes = await query(settings, "SELECT touchpoint_id, note, origin FROM verdict_changes")
    assert changes == [(landing, "robots_txt", "rescore")], changes
    [(reasons,)] = await query(
        settings, f"SELECT effective_reasons FROM effective_touchpoints WHERE id = '{landing}'"
    )
    assert "robots_txt" in json.loads(reasons)
    # Imported again (either file): no second change.
    again = await run_import(settings, [log2, log1], "combined", host="shop.example", workers=workers)
    assert again.new_rows == {"touchpoints": 0, "identities": 0, "conversions": 0}, again.render()
    assert await query(settings, "SELECT count(*) FROM verdict_changes") == [(1,)]
    # The dry run of the second file finds what the real run found: the change is already there.
    dry = await run_import(settings, [log2], "combined", host="shop.example", dry_run=True)
    assert dry.no_touchpoint == 0, dry.render()


@pytest.mark.parametrize("workers", [1, 2])
async def test_the_robots_lookups_connection_is_closed_before_the_store_s_last_close(
    tmp_path: Path, workers: int
) -> None:
    """A robots.txt line looks up the visitor's landings of earlier runs in the store, through
    one read-only connection kept for the run (until 2026-12-08 one opened per line). It is
    closed before the store's last close: the store is left as a stopped store is, without its
    ``-wal`` and ``-shm`` (a read-only connection left open would keep them, and would not take
    them away as it closed); the same of a dry run, whose store is never written."""
    settings = make_settings(tmp_path)
    landing = (
        f'203.0.113.9 - - [01/Mar/2025:10:00:00 +0000] "GET /?utm_source=news HTTP/1.1" 200 10 "-" "{UA}"'
    )
    fetches = "\n".join(
        f'203.0.113.9 - - [01/Mar/2025:10:00:{n:02d} +0000] "GET /robots.txt HTTP/1.1" 200 10 "-" "{UA}"'
        for n in range(5, 9)
    )
    log1 = await asyncio.to_thread(write, tmp_path / "access.log.1", landing)
    log2 = await asyncio.to_thread(write, tmp_path / "access.log", fetches)
    beside = [Path(f"{settings.store_path}-wal"), Path(f"{settings.store_path}-shm")]

    def left() -> list[str]:
        return [path.name for path in beside if path.exists()]

    await run_import(settings, [log1], "combined", host="shop.example")
    dry = await run_import(settings, [log2], "combined", host="shop.example", dry_run=True, workers=workers)
    assert dry.unchecked == "" and await asyncio.to_thread(left) == []
    await run_import(settings, [log2], "combined", host="shop.example", workers=workers)
    assert await query(settings, "SELECT note FROM verdict_changes") == [("robots_txt",)]
    assert await asyncio.to_thread(left) == []


async def test_a_later_runs_robots_fetch_rescores_the_landings_one_run_would(tmp_path: Path) -> None:
    """A visitor's landings logged in one second (a log's times are whole seconds), more than
    bots scoring holds to re-score (``RECENT_TOUCHES``), then its robots.txt fetch. In one run
    the fetch re-scores the latest landings, as logged. Imported in two runs, the store's
    landings were taken newest first by time alone: of those tied on it, whichever the store
    gave first, so other landings were re-scored than in one run (and than the log's order
    says). Ties are taken in the order they were stored: the same landings as in one run."""
    landings = "\n".join(
        f'203.0.113.9 - - [01/Mar/2025:10:00:00 +0000] "GET /?utm_source=news&utm_campaign=c{n}'
        f' HTTP/1.1" 200 10 "-" "{UA}"'
        for n in range(6)
    )
    robots = f'203.0.113.9 - - [01/Mar/2025:10:00:30 +0000] "GET /robots.txt HTTP/1.1" 200 10 "-" "{UA}"'
    rescored = "SELECT t.campaign FROM verdict_changes v JOIN touchpoints t ON t.id = v.touchpoint_id"
    rescored += " WHERE v.note = 'robots_txt' ORDER BY t.campaign"
    found = []
    for files in (["all.log"], ["landings.log", "robots.log"]):
        await asyncio.to_thread((tmp_path / files[0]).mkdir)
        settings = make_settings(tmp_path / files[0])
        texts = {"all.log": f"{landings}\n{robots}", "landings.log": landings, "robots.log": robots}
        for name in files:  # one run each
            log = await asyncio.to_thread(write, tmp_path / files[0] / name, texts[name])
            await run_import(settings, [log], "combined", host="shop.example")
        found.append(await query(settings, rescored))
    assert found[0] == [("c2",), ("c3",), ("c4",), ("c5",)], found  # the latest four, as logged
    assert found[1] == found[0], found


@pytest.mark.timeout(240)  # may wait two minutes past midnight (below)
async def test_a_rescore_of_a_landing_past_retention_is_not_counted_as_erased(tmp_path: Path) -> None:
    """A visitor lands just before ``privacy.retention_days`` ago and fetches robots.txt just
    after: the landing is left out as expired (a purge would delete it), and its re-score, dated
    inside retention, is left out by the store, which has no touchpoint for it. The summary
    counted that re-score as ``erased: 1`` in a store where no one was ever erased; it is
    counted apart, as a re-score of a landing the store does not have."""
    settings = make_settings(tmp_path, "[privacy]\nretention_days = 1\n")
    # A visitor of a log is its address on its day (the day's salt): the two lines on one UTC
    # day, so within a minute of midnight wait for it to pass (it failed 20 minutes a night
    # with ten minutes either side).
    margin = timedelta(minutes=1)
    after_midnight = datetime.now(UTC) - datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if after_midnight < margin + timedelta(seconds=5) or after_midnight > timedelta(days=1) - margin:
        await asyncio.sleep((margin * 2 + timedelta(seconds=5)).total_seconds())
    edge = datetime.now(UTC) - timedelta(days=1)

    def at(when: datetime) -> str:
        return when.strftime("%d/%b/%Y:%H:%M:%S +0000")

    landed, fetched = at(edge - margin), at(edge + margin)
    text = "\n".join(
        [
            f'203.0.113.9 - - [{landed}] "GET /?utm_source=news HTTP/1.1" 200 10 "-" "{UA}"',
            f'203.0.113.9 - - [{fetched}] "GET /robots.txt HTTP/1.1" 200 10 "-" "{UA}"',
        ]
    )
    log = await asyncio.to_thread(write, tmp_path / "access.log", text)
    summary = await run_import(settings, [log], "combined", host="shop.example")
    rendered = summary.render()
    assert summary.expired == 1 and summary.erased == 0, rendered
    assert summary.no_touchpoint == 1, rendered
    assert "erased:" not in rendered, rendered
    assert (
        "  re-scores:            1   (of landings the store does not have: erased, past"
        " privacy.retention_days, refused or never stored; not stored)"
    ) in rendered, rendered
    assert await query(settings, "SELECT count(*) FROM touchpoints") == [(0,)]
    assert await query(settings, "SELECT count(*) FROM verdict_changes") == [(0,)]


@pytest.mark.timeout(180)  # three import commands: past the 60 s default on a loaded machine
def test_trailing_garbage_after_the_last_gzip_member_is_ignored_as_gzip_does(tmp_path: Path) -> None:
    """A gzip file with bytes after its last member that are not gzip (a copy padded, a line
    appended to it by mistake): ``gzip -d`` and ``zcat`` give every line and ignore them
    ("decompression OK, trailing garbage ignored"), as the import already did for bzip2. The
    import read every line, then failed the file (exit 1) saying "its lines up to 2,000 are in
    the store: once it can be read, run the same command again to import the rest": there was no
    rest, and the same command failed the same way for ever. It ends there, as gzip does, says
    so, and exits 0; a gzip member cut short or corrupt still fails (the tests above)."""
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    whole = write_log(tmp_path / "whole.log.gz", 2_000, compress=True).read_bytes()
    (tmp_path / "padded.log.gz").write_bytes(whole + b"garbage\n")
    args = ("--format", "combined", "-c", "gw.toml", "--host", "shop.example")
    done = _cli(tmp_path, "padded.log.gz", *args)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "cannot read" not in done.stderr, done.stderr
    assert "1 file, 2,000 lines read" in done.stdout, done.stdout
    assert (
        "padded.log.gz: bytes after its last gzip member are not gzip (trailing garbage): "
        "ignored, as gzip -d ignores them" in done.stderr
    ), done.stderr
    # The same rows as the file without them gives.
    (tmp_path / "fresh.toml").write_text('[storage]\npath = "fresh.db"\n')
    assert _cli(tmp_path, "whole.log.gz", *args[:3], "fresh.toml", *args[4:]).returncode == 0
    ids = "SELECT id FROM touchpoints ORDER BY id"
    assert rows(tmp_path / "gw.db", ids) == rows(tmp_path / "fresh.db", ids) != []


@pytest.mark.parametrize("workers", [1, 2])
async def test_lines_read_counts_every_line_of_the_file(tmp_path: Path, workers: int) -> None:
    """``lines read`` is the file's line count (``wc -l``): blank lines (before, between and after
    the requests, CRLF ones too) were not counted, and a summary checked against the file looked
    as though lines had gone missing."""
    settings = make_settings(tmp_path)
    body = COMBINED.replace("\n", "\n\n", 2) + "\n \r\n"
    log = await asyncio.to_thread(write, tmp_path / "blank.log", "\n" + body + "\n\n")
    total = (await asyncio.to_thread(log.read_bytes)).count(b"\n")
    summary = await run_import(settings, [log], "combined", host="shop.example", workers=workers)
    assert total == 8 + 7 and summary.lines == total
    assert summary.events["touchpoints"] == 3 and sum(summary.skipped.values()) == 3  # as without
    assert summary.read_to == ("blank.log", 11)


@pytest.mark.timeout(180)  # imports in worker processes: 33 s on a loaded machine
@pytest.mark.parametrize("workers", [1, 2])
async def test_history_older_than_retention_is_left_out(tmp_path: Path, workers: int) -> None:
    """With ``privacy.retention_days``, a backfill of older history was stored, counted as new,
    and deleted by the next daily purge (synced to the central store meanwhile). It is left
    out and counted; what is inside the retention period is imported as ever."""
    from datetime import timedelta

    from gateway.events import iso
    from storage.retention import cutoff, purge_local

    settings = make_settings(tmp_path, "[privacy]\nretention_days = 30\n")
    recent = datetime.now(UTC) - timedelta(days=29)
    stamp = recent.strftime("%d/%b/%Y:%H:%M:%S +0000")
    text = "\n".join(
        [
            *COMBINED.splitlines(),  # March 2025: 3 touchpoints, past retention
            f'203.0.113.5 - - [{stamp}] "GET /?utm_source=news HTTP/1.1" 200 10 "-" "{UA}"',
        ]
    )
    log = await asyncio.to_thread(write, tmp_path / "access.log", text)
    for dry_run in (True, False):
        summary = await run_import(
            settings, [log], "combined", host="shop.example", workers=workers, dry_run=dry_run
        )
        assert (summary.events["touchpoints"], summary.expired) == (1, 3)
        assert (
            "expired:              3   (older than privacy.retention_days = 30: not stored"
            in summary.render()
        )
    assert summary.new_rows == {"touchpoints": 1, "identities": 0, "conversions": 0}
    assert await query(settings, "SELECT ts FROM touchpoints") == [(iso(recent.replace(microsecond=0)),)]
    purged = await purge_local(settings.store_path, cutoff(datetime.now(UTC), 30))
    assert purged["touchpoints"] == 0
    # Without retention, all of it, as before.
    again = await run_import(make_settings(tmp_path), [log], "combined", host="shop.example", workers=workers)
    assert again.expired == 0 and again.new_rows == {"touchpoints": 3, "identities": 0, "conversions": 0}


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_line_of_megabytes_is_skipped_unread(tmp_path: Path, workers: int) -> None:
    """A line longer than any logged request (a log with no line ends, a binary file, here a
    request line of 3 MiB, first and in the middle) is skipped with its reason and never held
    whole: it used to be read, parsed and replayed, and one of a few gigabytes ended the import
    with a MemoryError traceback (or the kernel's OOM killer)."""
    settings = make_settings(tmp_path)
    query = "a" * (3 << 20)
    huge = f'203.0.113.9 - - [01/Mar/2025:10:00:00 +0100] "GET /p?x={query} HTTP/1.1" 200 10 "-" "{UA}"'
    text = "\n".join([huge, *COMBINED.splitlines()[:4], huge, *COMBINED.splitlines()[4:]])
    log = await asyncio.to_thread(write, tmp_path / "huge.log", text, compress=workers == 2)
    summary = await run_import(settings, [log], "combined", host="shop.example", workers=workers)
    assert summary.lines == 10
    assert summary.events["touchpoints"] == 3  # those of the usual lines, as without the long ones
    assert summary.examples[:2] == [
        "huge.log:1: longer than 1,048,576 bytes: not a logged request (skipped unread)",
        "huge.log:6: longer than 1,048,576 bytes: not a logged request (skipped unread)",
    ]
    assert summary.examples[2] == "huge.log:7: not a combined-log line"


@pytest.mark.parametrize("workers", [1, 2])
async def test_an_old_log_does_not_bring_an_erased_users_rows_back(tmp_path: Path, workers: int) -> None:
    """A log from before an erasure, imported after it: the erased user's visitor's rows, dated
    before the erasure, were stored again (the central store refused them, the local one did
    not). They are left out and counted; the other visitors' rows are imported as ever."""
    from gateway.events import Binding, iso
    from gateway.ids import uuid7
    from gateway.metrics import Metrics
    from storage.erasure import erase_user
    from storage.local import LocalStore

    settings = make_settings(tmp_path)
    log = await asyncio.to_thread(write, tmp_path / "access.log", COMBINED)
    await run_import(settings, [log], "combined", host="shop.example")
    stored = "SELECT visitor_key FROM touchpoints"
    visitors = [v for (v,) in await asyncio.to_thread(rows, settings.store_path, stored)]
    assert len(visitors) == 3
    erased_visitor = visitors[0]
    keys = Keys.from_master(settings.secret, settings.options.identity.user_id_storage)
    user_key = keys.user_key("ada")
    store = LocalStore(settings.store_path, settings.options.storage, Metrics())
    await store.open()
    try:
        at = iso(datetime.now(UTC))
        await store.write([Binding(uuid7(), at, "a", erased_visitor, user_key, "login")])
    finally:
        await store.close()
    await erase_user(
        settings.store_path, user_key, "ada", body_key=b"k" * 32, event_id=uuid7(), ts=at, node="a"
    )
    left = await asyncio.to_thread(rows, settings.store_path, "SELECT visitor_key FROM touchpoints")
    assert sorted(v for (v,) in left) == sorted(visitors[1:])

    again = await run_import(settings, [log], "combined", host="shop.example", workers=workers)
    after = await asyncio.to_thread(rows, settings.store_path, stored)
    assert sorted(v for (v,) in after) == sorted(visitors[1:])  # not back
    assert again.erased == 1 and again.events["touchpoints"] == 2
    assert "erased:               1   (of users erased since: not stored again)" in again.render()


@pytest.mark.parametrize("workers", [1, 2])
async def test_an_erasure_made_while_an_import_runs_is_not_undone_by_it(tmp_path: Path, workers: int) -> None:
    """An erasure made while an import was reading: the import knew only the erasures made before
    it started, so the lines it read after the erasure, from before it, brought the erased user's
    device back (``tail -f access.log | gateway import -`` beside a live gateway, say). The
    import now sees the erasure: the user's rows dated before it are not stored again, and are
    counted as ``erased``; the other visitors' rows are imported as ever."""
    from gateway.events import Binding, iso
    from gateway.ids import uuid7
    from gateway.metrics import Metrics
    from storage.erasure import erase_user
    from storage.local import LocalStore

    settings = make_settings(tmp_path)
    log = await asyncio.to_thread(write, tmp_path / "access.log", COMBINED)
    await run_import(settings, [log], "combined", host="shop.example")
    stored = "SELECT visitor_key FROM touchpoints"
    visitors = [v for (v,) in await asyncio.to_thread(rows, settings.store_path, stored)]
    assert len(visitors) == 3
    erased_visitor = visitors[0]
    keys = Keys.from_master(settings.secret, settings.options.identity.user_id_storage)
    user_key = keys.user_key("ada")
    store = LocalStore(settings.store_path, settings.options.storage, Metrics())
    await store.open()
    try:
        at = iso(datetime.now(UTC))
        await store.write([Binding(uuid7(), at, "a", erased_visitor, user_key, "login")])
    finally:
        await store.close()
    # A pipe: the import opens it once it has started (read what was erased before it), and
    # reads what is written into it after the erasure.
    pipe = tmp_path / "live.log"
    await asyncio.to_thread(os.mkfifo, pipe)
    running = asyncio.create_task(
        run_import(settings, [pipe], "combined", host="shop.example", workers=workers)
    )
    writer = await asyncio.to_thread(open, pipe, "w")  # returns once the import opened it
    try:
        await erase_user(
            settings.store_path, user_key, "ada", body_key=b"k" * 32, event_id=uuid7(), ts=at, node="a"
        )
        assert await asyncio.to_thread(rows, settings.store_path, stored) == [(v,) for v in visitors[1:]]
        await asyncio.to_thread(writer.write, COMBINED + "\n")
    finally:
        await asyncio.to_thread(writer.close)
    again = await running
    after = await asyncio.to_thread(rows, settings.store_path, stored)
    assert sorted(v for (v,) in after) == sorted(visitors[1:])  # not back
    assert again.erased == 1


async def test_a_directory_among_the_files_is_named_and_the_others_imported(tmp_path: Path) -> None:
    """As a missing file is (``access.log*`` matching a directory): the import used to read
    every file before it, then fail at the directory without writing the last of them; then
    (until 2026-12-06) it failed before reading any. It is found before any file is read, named
    in the summary's ``failed``, and every other file is imported."""
    settings = make_settings(tmp_path)
    log = await asyncio.to_thread(write, tmp_path / "access.log", COMBINED)
    await asyncio.to_thread((tmp_path / "access.log.d").mkdir)
    summary = await run_import(settings, [tmp_path / "access.log.d", log], "combined", host="x")
    [failed] = summary.failed
    assert failed.name == str(tmp_path / "access.log.d") and failed.before_any
    assert isinstance(failed.error, IsADirectoryError) and failed.error.strerror == "Is a directory"
    assert summary.files == 1 and summary.lines == 8 and summary.new_rows == {
        "touchpoints": 4, "identities": 0, "conversions": 0
    }  # fmt: skip


async def test_json_lines_without_a_host_are_skipped_by_line(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    text = "\n".join(
        json.dumps({"time": "2025-03-01T10:00:00Z", "uri": f"/?utm_source={s}", "method": "GET", **host})
        for s, host in (("a", {"host": "shop.example"}), ("b", {}))
    )
    log = await asyncio.to_thread(write, tmp_path / "access.jsonl", text)
    summary = await run_import(settings, [log], "json-lines")
    assert summary.events["touchpoints"] == 1
    assert summary.examples == ["access.jsonl:2: host: missing (and no --host or proxy.public_origin)"]


async def test_a_lower_case_method_is_skipped_and_counted_by_its_reason(tmp_path: Path) -> None:
    """``get /p HTTP/1.1`` (no GET: methods are case-sensitive, live it is a 400) was counted as an
    ``unreadable request line`` in a combined log and as ``method/uri: missing`` in a json-lines
    ``request``: the report names the method's case, and the method, in both."""
    settings = make_settings(tmp_path)
    line = '203.0.113.9 - - [01/Mar/2025:10:00:00 +0000] "{} /?utm_source=news HTTP/1.1" 200 5 "-" "{}"'
    log = await asyncio.to_thread(write, tmp_path / "access.log", line.format("get", UA))
    doc = {
        "time": "2025-03-01T10:00:00Z",
        "request": "get /?utm_source=news HTTP/1.1",
        "host": "shop.example",
    }
    jsonl = await asyncio.to_thread(write, tmp_path / "access.jsonl", json.dumps(doc))
    reason = METHOD_CASE
    for path, fmt in ((log, "combined"), (jsonl, "json-lines")):
        summary = await run_import(settings, [path], fmt, host="shop.example")
        assert summary.skipped == {reason: 1}
        assert summary.examples == [f"{path.name}:1: {reason}: 'get'"]
    assert await query(settings, "SELECT count(*) FROM touchpoints") == [(0,)]


async def test_json_lines_with_values_no_request_has_are_skipped_and_counted(tmp_path: Path) -> None:
    """A status ``abc``, a method ``G E T``, a client ``300.1.1.1`` and a time ``12`` (Unix
    seconds: 1970) were each stored as a touchpoint; each is skipped and counted by reason, as
    the other formats skip such lines. The time's bound is every format's: a combined line of
    1970 too."""
    settings = make_settings(tmp_path)
    good = {"time": "2025-03-01T10:00:00Z", "method": "GET", "uri": "/?utm_source=news", "status": 200,
            "host": "shop.example", "remote_addr": "203.0.113.9", "user_agent": UA}  # fmt: skip
    bad = ({"status": "abc"}, {"method": "G E T"}, {"remote_addr": "300.1.1.1"}, {"time": 12}, {"time": "12"})
    text = "\n".join(json.dumps({**good, **change}) for change in ({}, *bad))
    log = await asyncio.to_thread(write, tmp_path / "access.jsonl", text)
    summary = await run_import(settings, [log], "json-lines")
    old = "time: more than 50 years ago, older than any logged request (a duration, a counter?)"
    assert summary.skipped == {
        "status: not an HTTP status": 1,
        "method: not an HTTP method": 1,
        "client address: not an IP address (nor a host name)": 1,
        old: 2,
    }
    assert summary.examples == [
        "access.jsonl:2: status: not an HTTP status: 'abc'",
        "access.jsonl:3: method: not an HTTP method: 'G E T'",
        "access.jsonl:4: client address: not an IP address (nor a host name): '300.1.1.1'",
        f"access.jsonl:5: {old} [1970-01-01T00:00:12+00:00]",
        f"access.jsonl:6: {old} [1970-01-01T00:00:12+00:00]",
    ]
    assert summary.events["touchpoints"] == 1
    assert await query(settings, "SELECT count(*) FROM touchpoints") == [(1,)]
    # Every line so dated: the time is not where --field time points, said as for a missing one.
    only = await asyncio.to_thread(write, tmp_path / "durations.jsonl", json.dumps({**good, "time": 12}))
    assert (await run_import(settings, [only], "json-lines", dry_run=True)).none_in_format()
    epoch = '203.0.113.9 - - [01/Jan/1970:00:00:12 +0000] "GET /?utm_source=x HTTP/1.1" 200 5 "-" "UA"'
    combined = await asyncio.to_thread(write, tmp_path / "access.log", epoch)
    summary = await run_import(settings, [combined], "combined", host="shop.example", dry_run=True)
    assert summary.skipped == {old: 1} and not summary.events["touchpoints"]


def combined_args(log: Path) -> argparse.Namespace:
    """``gateway import``'s arguments for one combined log of ``shop.example``, one process."""
    return argparse.Namespace(
        files=[str(log)],
        format="combined",
        field=[],
        host="shop.example",
        dry_run=False,
        no_progress=True,
        progress_every=10.0,
        workers=1,
        trusted_proxy=[],
    )


def test_a_store_that_is_not_a_database_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tmp_path)
    settings.store_path.write_text("not a database " * 100)
    log = write(tmp_path / "access.log", COMBINED)
    args = combined_args(log)
    assert import_command(settings, args) == 1
    err = capsys.readouterr().err
    assert "the store" in err and "failed" in err and "Traceback" not in err


@pytest.mark.timeout(180)  # import commands: 50 s on a loaded machine, near the 60 s default
def test_a_store_that_stops_committing_part_way_says_what_stays_without_a_traceback(
    tmp_path: Path,
) -> None:
    """A full disk part way through printed asyncio's 'Future exception was never retrieved' and
    a traceback for each batch still in flight, and did not say what the store kept."""
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    ua = "Mozilla/5.0 (X11; Linux x86_64) Firefox/127.0"
    log = tmp_path / "access.log"
    log.write_text(
        "".join(
            f"198.51.{i // 250}.{i % 250 + 1} - - [01/Mar/2025:10:{i // 1000 % 60:02}:00 +0000]"
            f' "GET /?utm_source=s{i} HTTP/1.1" 200 5 "-" "{ua}"\n'
            for i in range(30_000)
        )
    )
    args = ("--format", "combined", "-c", "gw.toml", "--host", "shop.example", "--no-progress")
    asset = write(
        tmp_path / "asset.log",
        f'1.2.3.4 - - [01/Mar/2025:09:00:00 +0000] "GET /a.css HTTP/1.1" 200 5 "-" "{ua}"',
    )
    assert _cli(tmp_path, str(asset), *args).returncode == 0  # the store made, empty
    # As a disk that fills up: the batches from the line of s20000 on fail to commit (several of
    # them, the writer keeping two in flight), the ones before it commit. The store fails as a
    # database does (SQLITE_ERROR, as SQLITE_FULL is), not by a constraint (RAISE: SQLITE_CONSTRAINT),
    # which is a line's data refused, that line skipped and the import going on.
    with contextlib.closing(sqlite3.connect(tmp_path / "gw.db")) as db:
        db.execute(
            "CREATE TRIGGER full BEFORE INSERT ON touchpoints WHEN NEW.source >= 's20000'"
            " AND length(NEW.source) = 6 BEGIN SELECT json('database or disk is full'); END"
        )
    failed = _cli(tmp_path, str(log), *args)
    assert failed.returncode == 1, failed
    assert "Traceback" not in failed.stderr and "never retrieved" not in failed.stderr, failed.stderr
    assert failed.stderr.endswith(
        f"gateway import: the store {tmp_path / 'gw.db'} failed to commit: malformed JSON;"
        " what it committed before stays: once it can be written, run the same command again to"
        " import the rest (what is already there is not added twice)\n"
    ), failed.stderr
    [(kept,)] = rows(tmp_path / "gw.db", "SELECT count(*) FROM touchpoints")
    assert 0 < kept < 20_000
    with contextlib.closing(sqlite3.connect(tmp_path / "gw.db")) as db:
        db.execute("DROP TRIGGER full")
    again = _cli(tmp_path, str(log), *args)
    assert again.returncode == 0 and f"new in the store: {30_000 - kept:,}" in again.stdout, again
    assert rows(tmp_path / "gw.db", "SELECT count(*), count(DISTINCT source) FROM touchpoints") == [
        (30_000, 30_000)
    ]


async def test_an_import_says_it_waits_for_a_write_lock_and_how_long_then_goes_on_or_stops(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another process holding the store's write lock (a sqlite3 shell left in BEGIN IMMEDIATE)
    made an import wait up to 10 minutes, its bar still, saying nothing of how long it would."""
    settings = make_settings(tmp_path)
    log = await asyncio.to_thread(write, tmp_path / "access.log", COMBINED)
    await run_import(settings, [log], "combined", host="shop.example", dry_run=False)  # the store made
    more = await asyncio.to_thread(write, tmp_path / "more.log", COMBINED.replace("Mar/2025", "Apr/2025"))

    def hold() -> sqlite3.Connection:
        shell = sqlite3.connect(settings.store_path, isolation_level=None, check_same_thread=False)
        shell.execute("BEGIN IMMEDIATE")
        return shell

    shell = await asyncio.to_thread(hold)
    try:
        with pytest.raises(CommitFailed, match="another process held its write lock for 7 s"):
            await run_import(settings, [more], "combined", host="shop.example", lock_wait=7)
        waiting = [r.getMessage() for r in caplog.records if r.name == "gateway.import"]
        assert waiting == [
            f"waiting for the write lock of the store {settings.store_path}, which another process"
            " holds (the live gateway in a long write, or a sqlite3 shell left in a transaction);"
            " the import waits up to 7 s for it, then stops, keeping what it committed"
        ]
        caplog.clear()
        caplog.set_level(logging.INFO, logger="gateway.import")  # its end is said at info

        # Released part way through the wait: the import goes on, and says so.
        async def release() -> None:
            await asyncio.sleep(7)
            await asyncio.to_thread(shell.rollback)

        released = asyncio.create_task(release())
        done = await run_import(settings, [more], "combined", host="shop.example", lock_wait=30)
        await released
    finally:
        shell.close()
    assert done.new_rows["touchpoints"] == 3
    said = [r.getMessage() for r in caplog.records if r.name == "gateway.import"]
    assert said[0].startswith("waiting for the write lock") and "up to 30 s" in said[0]
    free = r"the store's write lock is free again, after \d+ s of waiting: the import goes on"
    assert re.fullmatch(free, said[1]), said
    # The wait a warning, its end a resolution: info (a warning until 2026-12-07).
    levels = [r.levelname for r in caplog.records if r.name == "gateway.import"]
    assert levels[:2] == ["WARNING", "INFO"], levels


async def test_worker_processes_store_what_one_process_stores(tmp_path: Path) -> None:
    def generate() -> Path:
        log = write_log(tmp_path / "access.log", 9000)
        with log.open("a") as out:
            out.write("broken line\n")
        return log

    log = await asyncio.to_thread(generate)
    results = []
    for workers in (1, 2):
        settings = make_settings(tmp_path / f"w{workers}")
        summary = await run_import(settings, [log], "combined", host="shop.example", workers=workers)
        stored = await query(
            settings, "SELECT id, visitor_key, source, click_id, landing_path, ts FROM touchpoints"
        )
        results.append((summary.lines, dict(summary.events), summary.examples, sorted(stored)))
    assert results[0] == results[1]
    assert results[0][0] == 9001 and results[0][2] == ["access.log:9001: not a combined-log line"]


@pytest.mark.timeout(180)  # worker processes' starts: 39 s on a loaded machine
def test_worker_processes_do_not_repeat_the_config_warnings(tmp_path: Path) -> None:
    """Each worker builds the chain again from the same config: what configuring it warns about
    (here: no GeoIP database) was printed by every worker, after the parent had said it."""
    log = write_log(tmp_path / "access.log", 3 * 4096)
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    for workers in ("1", "3"):
        done = _cli(
            tmp_path, str(log), "--format", "combined", "-c", "gw.toml", "--host", "x", "--workers", workers
        )
        assert done.returncode == 0, done.stderr
        assert done.stderr.count("geo: no database configured") == 1, done.stderr


def test_a_workers_own_warning_at_its_start_is_said(tmp_path: Path) -> None:
    """The workers built their chains with every warning silenced (``logging.disable``), so
    one finding what the parent had not (the GeoIP database gone since the parent opened it:
    its rows get no country) said nothing. They now leave out only what the parent said, in the
    parent's format."""
    networks: dict[str, dict[str, object]] = {"203.0.113.0/24": {"country": {"iso_code": "FR"}}}
    city = write_mmdb(tmp_path / "city.mmdb", "GeoLite2-City", networks)
    (tmp_path / "gw.toml").write_text(f'[storage]\npath = "gw.db"\n[geo]\ncountry_db = "{city}"\n')
    log = write_log(tmp_path / "access.log", 3 * 4096)
    args = ("-", "--format", "combined", "-c", "gw.toml", "--host", "x", "--workers", "2", "--no-progress")
    importer = subprocess.Popen(
        [sys.executable, "-m", "gateway", "import", *args], cwd=tmp_path, env={**os.environ, **ENV},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        # The store is opened once the parent's chain has opened the database; the workers start
        # at the first chunk, which the parent has not read yet.
        deadline = time.monotonic() + 30
        while not (tmp_path / "gw.db").exists():
            assert importer.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        city.unlink()
        _, err = importer.communicate(log.read_bytes(), timeout=60)
    finally:
        if importer.poll() is None:
            importer.kill()
            importer.wait()
    assert importer.returncode == 0, err
    # Each worker's line is written as the parent writes its own (until 2026-12-05 a bare message:
    # logging was not set up in the workers), with its time, level and logger, and which worker
    # said it (until 2026-12-06 two workers' lines could not be told apart).
    said = re.escape(f"geo: not found: geo.country_db {city}; geo lookups are off")
    stamped = rf"\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d{{3}} WARNING gateway\.geo: \[worker ([12])\] {said}"
    lines = [line for line in err.decode().splitlines() if "geo.country_db" in line]
    assert lines, err
    matched = [re.fullmatch(stamped, line) for line in lines]
    assert all(matched), err
    numbers = [m.group(1) for m in matched if m]
    assert len(set(numbers)) == len(numbers), err  # each worker its own number


@pytest.mark.timeout(180)  # import commands: 49 s on a loaded machine, near the 60 s default
def test_cli_refuses_a_url_for_host_and_a_worker_count_below_one(tmp_path: Path) -> None:
    log = write_log(tmp_path / "access.log", 10)
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    common = (str(log), "--format", "combined", "-c", "gw.toml")
    for host, hint in (
        ("https://www.example.com", " (write www.example.com)"),
        ("https://www.example.com:8443/shop", " (write www.example.com:8443)"),
        ("bad host/x", ""),
        ("www.example.com:", ""),
    ):
        done = _cli(tmp_path, *common, "--host", host)
        assert done.returncode == 2, done
        assert done.stderr.endswith(
            "gateway import: error: argument --host: must be the site's host as browsers send it, like "
            f"www.example.com (or www.example.com:8443), without scheme or path, got {host!r}{hint}"
            "; see `gateway import --help`\n"
        )
    for workers in ("0", "-3", "many"):
        done = _cli(tmp_path, *common, "--host", "shop.example", "--workers", workers)
        assert done.returncode == 2, done
        assert done.stderr.endswith(
            f"argument --workers: must be a whole number 1..256 (processes), got {workers!r}"
            "; see `gateway import --help`\n"
        )
    assert not (tmp_path / "gw.db").exists()
    done = _cli(tmp_path, *common, "--host", "[::1]:8443", "--workers", "1", "--dry-run")
    assert done.returncode == 0, done.stderr


def test_cli_imports_with_a_config_whose_admin_api_listens_publicly(tmp_path: Path) -> None:
    """A production config may have admin.listen = "0.0.0.0:9090", allowed by `gateway run
    --admin-public` behind a firewall. The import, which listens on nothing, refused it and
    pointed to --admin-public, an option it does not take."""
    log = write_log(tmp_path / "access.log", 10)
    (tmp_path / "gw.toml").write_text('[admin]\nlisten = "0.0.0.0:9090"\n[storage]\npath = "gw.db"\n')
    done = _cli(tmp_path, str(log), "--format", "combined", "-c", "gw.toml", "--host", "shop.example")
    assert done.returncode == 0, done.stderr
    assert "10 lines read" in done.stdout


def test_cli_names_a_file_gzip_cannot_read(tmp_path: Path) -> None:
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    (tmp_path / "method.log.gz").write_bytes(b"\x1f\x8b\x07\x00" + b"junk" * 8)
    (tmp_path / "blocks.log.gz").write_bytes(b"\x1f\x8b\x08\x00" + b"junk" * 8)
    for name, reason in (
        ("method.log.gz", "Unknown compression method"),
        ("blocks.log.gz", "Error -3 while decompressing data: invalid block type"),
    ):
        for workers in ("1", "2"):
            done = _cli(
                tmp_path, name, "--format", "combined", "-c", "gw.toml", "--host", "x", "--workers", workers
            )
            assert done.returncode == 1, done
            expected = f"gateway import: cannot read {name}: {reason}; nothing was imported\n"
            assert done.stderr.endswith(expected), done.stderr


@pytest.mark.timeout(180)  # five import commands: past the 60 s default on a loaded machine
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_file_unreadable_part_way_keeps_what_was_read_before_it(tmp_path: Path, workers: str) -> None:
    """A good log, then one whose gzip breaks after 10,000 lines (a second member that is not
    gzip, before a third that is): the import ends at the break, exit 1, having replayed every
    line before it (until 2026-12-03 only the chunks of 4,096 lines read whole). It used to print
    no summary and leave the events of the last batch read unwritten; now it writes everything
    read before the break, prints the summary and says how far the store has the files."""
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    first = write_log(tmp_path / "first.log", 500)
    broken = tmp_path / "broken.log.gz"
    whole = write_log(tmp_path / "whole.log.gz", 10_000, compress=True)
    more = write_log(tmp_path / "more.log.gz", 2_000, compress=True, seed=2).read_bytes()
    broken.write_bytes(whole.read_bytes() + b"\x1f\x8b\x08\x00" + b"junk" * 64 + more)
    args = ("--format", "combined", "-c", "gw.toml", "--host", "shop.example", "--workers", workers)
    done = _cli(tmp_path, str(first), str(broken), *args)
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr
    assert "2 files, 10,500 lines read" in done.stdout, done.stdout
    [(count,)] = rows(tmp_path / "gw.db", "SELECT count(*) FROM touchpoints")
    assert count > 0 and f"new in the store: {count:,}" in done.stdout
    message, tally = done.stderr.strip().splitlines()[-2:]
    assert message.startswith(f"gateway import: cannot read {broken.name}: "), message
    assert message.endswith(
        "; its lines up to 10,000 are in the store: once it can be read,"
        " run the same command again to import the rest (what is already there is not added twice)"
    ), message
    assert (
        tally
        == f"gateway import: 1 of 2 files failed (named above): {broken}; the other files are in the store"
    )
    # The file mended, the same command again imports the rest: the store then holds what one
    # import of the intact files gives, nothing twice.
    broken.write_bytes(whole.read_bytes() + more)
    again = _cli(tmp_path, str(first), str(broken), *args)
    assert again.returncode == 0, again
    (tmp_path / "fresh.toml").write_text('[storage]\npath = "fresh.db"\n')
    fresh = _cli(tmp_path, str(first), str(broken), *args[:3], "fresh.toml", *args[4:])
    assert fresh.returncode == 0, fresh
    [(total,)] = rows(tmp_path / "fresh.db", "SELECT count(*) FROM touchpoints")
    assert total > count and rows(tmp_path / "gw.db", "SELECT count(*) FROM touchpoints") == [(total,)]

    junk = tmp_path / "junk.log.gz"
    nothing = _cli(tmp_path, str(junk), *args)  # missing: refused before any file is read
    assert nothing.returncode == 1
    assert nothing.stderr.endswith(f"gateway import: cannot read {junk}: No such file or directory\n")
    junk.write_bytes(b"\x1f\x8b\x08\x00" + b"junk" * 64)
    nothing = _cli(tmp_path, str(junk), *args)
    assert nothing.returncode == 1 and nothing.stderr.endswith("; nothing was imported\n"), nothing


def _unprivileged() -> list[str]:
    """What to run a command under so that a file's mode binds it: nothing for a user; for root,
    ``setpriv`` dropping the capabilities that read any file (it stays root, owner of the
    test's folders, and the interpreter under /root stays reachable)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("as root only a process without CAP_DAC_OVERRIDE is refused a file: no setpriv")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all"]


@pytest.mark.parametrize("kind", ["file", "fifo"])
def test_a_file_that_cannot_be_opened_fails_the_import_before_it_reads_any(tmp_path: Path, kind: str) -> None:
    """A log the importing user may not read (``chmod 000``, another user's ``0600``) among
    several: the import used to read and store every file before it, then stop there with exit
    1 and a half-done store; then (until 2026-12-06) it failed before reading any. Like a missing
    file or a directory, it is found before any file is read, named with why, exit 1, and the
    other files are imported."""
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    first = write_log(tmp_path / "first.log", 300)
    locked = tmp_path / "locked.log"
    if kind == "file":
        write_log(locked, 300, seed=2)
    else:  # a pipe named by its path, read as a stream: its mode is checked, it is not opened
        os.mkfifo(locked)
    locked.chmod(0)
    args = (str(first), str(locked), "--format", "combined", "-c", "gw.toml", "--host", "shop.example")
    done = subprocess.run(
        [*_unprivileged(), sys.executable, "-m", "gateway", "import", *args], cwd=tmp_path,
        env={**os.environ, **ENV}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done
    assert f"gateway import: cannot read {locked}: Permission denied; not imported\n" in done.stderr, done
    assert done.stderr.endswith(
        f"1 of 2 files failed (named above): {locked}; the other files are in the store\n"
    )
    assert "1 file, 300 lines read" in done.stdout, done.stdout
    if kind == "file":  # readable again: the same command imports both
        locked.chmod(0o644)
        again = _cli(tmp_path, *args)
        assert again.returncode == 0 and "2 files, 600 lines read" in again.stdout, again


def test_cli_names_the_store_when_its_folder_cannot_be_made(tmp_path: Path) -> None:
    """It said 'cannot read afile: File exists', as though a file to import were at fault."""
    (tmp_path / "afile").write_text("x")
    (tmp_path / "gw.toml").write_text('[storage]\npath = "afile/gw.db"\n')
    log = write_log(tmp_path / "access.log", 5)
    for workers in ("1", "2"):
        done = _cli(
            tmp_path, str(log), "--format", "combined", "-c", "gw.toml", "--host", "x", "--workers", workers
        )
        assert done.returncode == 1, done
        store, folder = tmp_path / "afile" / "gw.db", tmp_path / "afile"
        expected = f"gateway import: cannot open the store {store}: a file is in the way ({folder})\n"
        assert done.stderr.endswith(expected), done.stderr


def _start_import(tmp_path: Path, log: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "import", str(log), "--format", "combined", "-c", "gw.toml",
         "--host", "shop.example", "--no-progress", *args],
        cwd=tmp_path, env={**os.environ, **ENV}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip


def _workers_of(proc: subprocess.Popen[str], count: int) -> list[int]:
    """The worker processes of a running import, once ``count`` of them have replayed for a
    while (its other child is multiprocessing's resource tracker)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        workers = [pid for pid in _children(proc.pid) if "spawn_main" in _cmdline(pid)]
        if len(workers) == count and min(_cpu_seconds(pid) for pid in workers) > 1.5:
            return workers  # started (about a second), then replaying chunks for a while
        time.sleep(0.05)
    raise AssertionError(f"no {count} workers: {proc.communicate(timeout=5)}")


def _children(pid: int) -> list[int]:
    """Child processes of ``pid``, whichever of its threads started them (Linux ``/proc``)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _cpu_seconds(pid: int) -> float:
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_text()
    return ""


def _gone(pids: list[int], seconds: float = 10) -> bool:
    """Whether the processes ``pids`` end within ``seconds`` (those left are then killed)."""
    deadline = time.monotonic() + seconds
    while left := [pid for pid in pids if "spawn_main" in _cmdline(pid)]:
        if time.monotonic() > deadline:
            for pid in left:
                os.kill(pid, signal.SIGKILL)
            return False
        time.sleep(0.05)
    return True


@pytest.mark.timeout(180)  # two imports of 250,000 lines: past the 60 s default on a loaded machine
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["int", "term"])
def test_ctrl_c_or_sigterm_stop_the_import_cleanly_and_the_same_command_finishes_it(
    tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    # A fresh store each time: an import that re-reads what is stored is over too soon to stop.
    log = write_log(tmp_path / "access.log", 250_000)
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    proc = _start_import(tmp_path, log, "--workers", "2")
    try:
        workers = _workers_of(proc, 2)
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)  # Ctrl-C: the terminal signals the whole process group
        else:
            proc.send_signal(sig)  # kill PID, a service manager's stop
        out, err = proc.communicate(timeout=30)  # the output closed: no worker holds it
        assert _gone(workers), "the import's worker processes outlived it"
    finally:
        with contextlib.suppress(ProcessLookupError):  # its session: whatever it left behind
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for pipe in (proc.stdout, proc.stderr):  # not left for a later test's collector
            if pipe is not None:
                pipe.close()
    assert proc.returncode == code, (out, err)
    assert "Traceback" not in err and "Future exception" not in err, err
    found = re.search(
        rf"stopped by {sig.name}: everything up to access.log line ([\d,]+) is in the store", err
    )
    assert found and 0 < int(found[1].replace(",", "")) < 250_000, err
    assert "run the same command again" in err
    [(count,)] = rows(tmp_path / "gw.db", "SELECT count(*) FROM touchpoints")
    assert count > 0 and f"new in the store: {count:,}" in out, out
    stored = count
    done = _cli(tmp_path, str(log), "--format", "combined", "-c", "gw.toml", "--host", "shop.example")
    assert done.returncode == 0, done.stderr
    produced = int(re.search(r"touchpoints: +([\d,]+)", done.stdout)[1].replace(",", ""))  # type: ignore[index]
    # every touchpoint of the log once: what the interrupted runs stored, and the rest now
    assert rows(tmp_path / "gw.db", "SELECT count(*) FROM touchpoints") == [(produced,)]
    assert f"new in the store: {produced - stored:,}" in done.stdout


def test_workers_end_when_the_import_is_killed(tmp_path: Path) -> None:
    log = write_log(tmp_path / "access.log", 250_000)
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    proc = _start_import(tmp_path, log, "--workers", "2")
    try:
        workers = _workers_of(proc, 2)
        proc.kill()
        proc.wait()
        assert _gone(workers), "the workers of a killed import kept running"
        # Until multiprocessing's resource tracker, the last process holding stderr, is done too:
        # it removes the pool's semaphores, and no longer warns about "leaked" ones.
        _, err = proc.communicate(timeout=30)
        assert "resource_tracker" not in err and "leaked" not in err, err
    finally:
        with contextlib.suppress(ProcessLookupError):  # its session: whatever it left behind
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)


def test_a_worker_killed_mid_import_ends_it_with_a_message(tmp_path: Path) -> None:
    """A worker killed part way (the kernel's OOM killer, kill -9): the import ends, says so and
    exits 1, and the other worker ends too. The pool ended the others with SIGTERM, which
    workers ignore (it reaches the whole process group), then waited for them: the import hung
    for good, a Ctrl-C could not end it, and the surviving worker stayed blocked."""
    log = write_log(tmp_path / "access.log", 250_000)
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    proc = _start_import(tmp_path, log, "--workers", "2")
    try:
        workers = _workers_of(proc, 2)
        os.kill(workers[0], signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
        assert _gone(workers), "a worker outlived the import"
    finally:
        with contextlib.suppress(ProcessLookupError):  # its session: whatever it left behind
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    assert proc.returncode == 1, (out, err)
    assert "Traceback" not in err, err
    assert "gateway import: a worker process ended abruptly" in err, err
    assert "run the same command again" in err, err


@pytest.mark.timeout(180)  # worker processes' starts: 34 s on a loaded machine
async def test_worker_processes_bind_a_pair_once_as_one_process_does(tmp_path: Path) -> None:
    """A login seen on every chunk: one process binds each visitor once; workers, each seeing only
    some chunks, bound it again in each (and a re-import, its chunks shared out otherwise, added
    more)."""
    log = tmp_path / "access.log"
    text = "\n".join(
        f"198.51.100.{n % 7} - - [01/Mar/2025:10:{n // 600:02}:{n // 10 % 60:02} +0000] "
        f'"GET /welcome?uid=u{n % 7} HTTP/1.1" 200 10 "-" "{UA}"'
        for n in range(5 * 4096)
    )
    await asyncio.to_thread(write, log, text)
    results = []
    for workers in (1, 2):
        settings = make_settings(tmp_path / f"w{workers}", SIGN_IN)
        summary = await run_import(settings, [log], "combined", host="shop.example", workers=workers)
        again = await run_import(settings, [log], "combined", host="shop.example", workers=workers)
        assert again.new_rows == {"touchpoints": 0, "identities": 0, "conversions": 0}
        stored = await query(settings, "SELECT id, ts, visitor_key, user_key FROM identities ORDER BY id")
        results.append((summary.events["identities"], summary.new_rows, stored))
    assert results[0] == results[1]
    assert results[0][0] == 7


async def test_a_path_capture_reads_the_order_number_from_history(tmp_path: Path) -> None:
    """The path is in every log: a thank-you page's order number, captured from it, is the
    conversion's order ID in an import as live; a reload counts once."""
    rule = """
        [[conversions]]
        name = "order-received"
        method = "GET"
        path = "/checkout/order-received/[0-9]+/"
        status = [200]
        order_id = { path = true, capture = "^/checkout/order-received/([0-9]+)/" }
    """
    log = tmp_path / "access.log"
    text = "\n".join(
        f'198.51.100.7 - - [01/Mar/2025:10:00:0{n} +0000] "GET /checkout/order-received/727/?key=wc_order_x '
        f'HTTP/1.1" 200 10 "-" "{UA}"'
        for n in range(2)
    )
    await asyncio.to_thread(write, log, text)
    settings = make_settings(tmp_path, rule)
    await run_import(settings, [log], "combined", host="shop.example")
    assert await query(settings, "SELECT name, order_id, dedup_key FROM conversions") == [
        ("order-received", "727", "order:727")
    ]


async def test_a_byte_order_mark_or_crlf_line_ends_lose_no_line(tmp_path: Path) -> None:
    text = "\n".join(
        json.dumps({"time": "2025-03-01T10:00:00Z", "uri": f"/?utm_source=s{n}", "method": "GET",
                    "host": "shop.example"})
        for n in range(3)
    )  # fmt: skip
    for name, data in (
        ("bom.jsonl", b"\xef\xbb\xbf" + text.encode() + b"\n"),
        ("crlf.jsonl", b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode() + b"\r\n"),
    ):
        settings = make_settings(tmp_path / f"store-{name}")
        log = tmp_path / name
        await asyncio.to_thread(log.write_bytes, data)
        summary = await run_import(settings, [log], "json-lines")
        assert (summary.events["touchpoints"], dict(summary.skipped)) == (3, {}), name
        assert await query(settings, "SELECT source FROM touchpoints ORDER BY source") == [
            ("s0",),
            ("s1",),
            ("s2",),
        ]
        again = await run_import(settings, [log], "json-lines")
        assert again.new_rows == {"touchpoints": 0, "identities": 0, "conversions": 0}, name


async def test_a_copy_with_crlf_line_ends_or_a_byte_order_mark_is_the_same_file(tmp_path: Path) -> None:
    """A log copied through a Windows tool (CRLF line ends, perhaps a byte order mark) holds the
    same lines as the original: importing it after the original adds nothing. Its first line,
    the file's identity, used to be hashed with its CR and mark, so every line came in again."""
    settings = make_settings(tmp_path)
    data = COMBINED.encode() + b"\n"
    copies = {
        "access.log": data,
        "crlf.log": data.replace(b"\n", b"\r\n"),
        "bom.log": b"\xef\xbb\xbf" + data,
        "windows.log.gz": gzip.compress(b"\xef\xbb\xbf" + data.replace(b"\n", b"\r\n")),
    }
    for name, content in copies.items():
        await asyncio.to_thread((tmp_path / name).write_bytes, content)
    first = await run_import(settings, [tmp_path / "access.log"], "combined", host="shop.example")
    assert first.new_rows is not None and first.new_rows["touchpoints"] == 3
    for name in copies:
        again = await run_import(settings, [tmp_path / name], "combined", host="shop.example")
        assert again.events == first.events, name
        assert again.new_rows == {"touchpoints": 0, "identities": 0, "conversions": 0}, name


async def test_standard_input_is_read_as_the_file_it_came_from(tmp_path: Path) -> None:
    """``zcat access.log.gz | gateway import -``: a stream is known by its first line and its line
    numbers as a file is, so piped, compressed, or as the file itself, the same log is imported
    once; its lines are named ``stdin`` in the summary."""
    settings = make_settings(tmp_path)
    data = COMBINED.encode() + b"\n"
    log = await asyncio.to_thread(write, tmp_path / "access.log", COMBINED)
    for workers in (1, 2):
        streamed = await run_import(
            settings, [io.BytesIO(data)], "combined", host="shop.example", workers=workers
        )
        assert streamed.files == 1 and streamed.lines == COMBINED.count("\n") + 1
        assert "stdin:5: not a combined-log line" in streamed.examples, streamed.examples
        if workers == 1:
            assert streamed.new_rows is not None and streamed.new_rows["touchpoints"] > 0
            first = streamed
        assert streamed.events == first.events
        for again in (log, io.BytesIO(gzip.compress(data)), io.BytesIO(data.replace(b"\n", b"\r\n"))):
            summary = await run_import(settings, [again], "combined", host="shop.example", workers=workers)
            assert summary.events == first.events, again
            assert summary.new_rows == {"touchpoints": 0, "identities": 0, "conversions": 0}, again
    fresh = make_settings(tmp_path / "fresh")
    both = await run_import(fresh, [log, io.BytesIO(data)], "combined", host="shop.example")
    assert both.files == 2 and both.new_rows == first.new_rows


def _cli_stdin(tmp_path: Path, data: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "import", *args], cwd=tmp_path, env={**os.environ, **ENV},
        input=data, capture_output=True, timeout=60,
    )  # fmt: skip


def test_cli_reads_a_log_piped_in_as_dash(tmp_path: Path) -> None:
    log = write_log(tmp_path / "access.log", 2000, compress=True)
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    args = ("--format", "combined", "-c", "gw.toml", "--host", "shop.example")
    piped = _cli_stdin(tmp_path, gzip.decompress(log.read_bytes()), "-", *args)  # zcat access.log.gz |
    assert piped.returncode == 0, piped.stderr
    [(count,)] = rows(tmp_path / "gw.db", "SELECT count(*) FROM touchpoints")
    assert b"2,000 lines read" in piped.stdout and f"new in the store: {count:,}".encode() in piped.stdout
    again = _cli(tmp_path, str(log), *args)
    assert again.returncode == 0 and "new in the store: 0" in again.stdout, again
    twice = _cli_stdin(tmp_path, b"", "-", "-", *args)
    assert twice.returncode == 2 and b"standard input can be read once" in twice.stderr, twice
    closed = subprocess.run(  # stdin closed (<&-)
        ["sh", "-c", f'exec "{sys.executable}" -m gateway import - --format combined -c gw.toml <&-'],
        cwd=tmp_path, env={**os.environ, **ENV}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert closed.returncode == 1 and "cannot read stdin: Bad file descriptor" in closed.stderr, closed
    leader, follower = os.openpty()  # forgot the pipe: a terminal would wait for typing
    try:
        typed = subprocess.run(
            [sys.executable, "-m", "gateway", "import", "-", *args], cwd=tmp_path, env={**os.environ, **ENV},
            stdin=follower, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        os.close(leader)
        os.close(follower)
    assert typed.returncode == 2 and "standard input is a terminal" in typed.stderr, typed


@pytest.mark.parametrize("workers", ["1", "2"])
def test_standard_input_left_non_blocking_is_read_whole(tmp_path: Path, workers: str) -> None:
    """A parent that set O_NONBLOCK on the pipe it hands us (some job runners and shells leave
    it so): a read finding the pipe empty returns None, and the import ended in a TypeError
    traceback. It waits for the input instead, as on a blocking pipe."""
    log = write_log(tmp_path / "access.log", 3000)
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "import", "-", "--format", "combined", "-c", "gw.toml",
             "--host", "shop.example", "--no-progress", "--workers", workers],
            cwd=tmp_path, env={**os.environ, **ENV}, stdin=read_end, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
    finally:
        os.close(read_end)
    try:
        deadline = time.monotonic() + 30
        while not _opened(proc.pid, tmp_path / "gw.db") and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.5)  # the reader finds the pipe empty
        with contextlib.suppress(BrokenPipeError), open(write_end, "wb", closefd=False) as pipe:
            pipe.write(log.read_bytes())
    finally:
        os.close(write_end)
    out, err = proc.communicate(timeout=60)
    assert b"Traceback" not in err, err
    assert proc.returncode == 0, err
    assert b"3,000 lines read" in out, out


def _stopped_while_stdin_stays_open(
    tmp_path: Path,
    log: Path,
    workers: str,
    ready: Callable[[int], bool],
    settle: float,
    stop_within: float,
) -> tuple[int, bytes, bytes]:
    """``gateway import -`` given ``log`` on a pipe it leaves open (more may come), stopped by
    SIGTERM ``settle`` seconds after ``ready(pid)`` holds, which it must obey within
    ``stop_within`` seconds: its exit status, stdout and stderr."""
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "import", "-", "--format", "combined", "-c", "gw.toml",
         "--host", "shop.example", "--no-progress", "--workers", workers],
        cwd=tmp_path, env={**os.environ, **ENV}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    assert proc.stdin is not None
    try:
        proc.stdin.write(log.read_bytes())  # the pipe stays open: the importer waits for more
        proc.stdin.flush()
        deadline = time.monotonic() + 30
        while not ready(proc.pid):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
        time.sleep(settle)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=stop_within)
        proc.stdin.close()
        proc.stdin = None
        out, err = proc.communicate(timeout=10)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):  # not left for a later test's collector
            if pipe is not None:
                with contextlib.suppress(BrokenPipeError):
                    pipe.close()
    return code, out, err


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_stop_does_not_wait_for_standard_input_to_end(tmp_path: Path, workers: str) -> None:
    """SIGTERM while the import waits for more input on a pipe still open (the writer is slow, or
    stuck): it stops at once, with what it had. The thread waiting on the pipe used to hold
    the process open until the pipe closed."""
    log = write_log(tmp_path / "access.log", 5000)
    # Once the store is open, the first 4,096 lines are replayed; the reader waits for the rest.
    code, out, err = _stopped_while_stdin_stays_open(
        tmp_path, log, workers, lambda pid: _opened(pid, tmp_path / "gw.db"), 1.5, 10
    )
    assert code == 143, (out, err)
    assert b"Traceback" not in err and b"Fatal Python error" not in err, err
    assert b"stopped by SIGTERM" in err, err
    if workers == "1":  # workers take their chunks back in order, a few at a time
        assert b"everything up to stdin line 4,096 is in the store" in err, err
        assert b"with the whole input again, from its first line," in err, err


def test_a_stop_keeps_the_chunks_the_workers_replayed(tmp_path: Path) -> None:
    """With --workers, a stop takes back every chunk the workers have replayed or are replaying
    (the pool's shutdown waits for those anyway) and stores it: they used to be dropped, so
    the summary said nothing was imported and the same command imported them all again. Here
    the importer has handed three chunks to its workers (``--workers 2``) and waits for more
    input, which never comes."""
    log = write_log(tmp_path / "access.log", 3 * 4096)

    def a_worker(pid: int) -> bool:
        # One worker at least: the pool starts its processes as chunks come and hands a chunk
        # to an idle one first, so on a busy machine the second may never start (all three
        # chunks then wait in the pool's queue, which a stop takes back all the same).
        return any("spawn_main" in _cmdline(child) for child in _children(pid))

    code, out, err = _stopped_while_stdin_stays_open(tmp_path, log, "2", a_worker, 1.0, 30)
    assert code == 143, (out, err)
    assert b"everything up to stdin line 12,288 is in the store" in err, err
    [(stored,)] = rows(tmp_path / "gw.db", "SELECT count(*) FROM touchpoints")
    assert stored > 0 and f"new in the store: {stored:,}".encode() in out, out
    again = _cli(tmp_path, str(log), "--format", "combined", "-c", "gw.toml", "--host", "shop.example")
    assert again.returncode == 0 and "new in the store: 0" in again.stdout, again
    assert f"touchpoints: {stored:>10,}" in again.stdout, again.stdout


def _fifo_writer(fifo: Path, log: Path | None, *, stay: bool) -> subprocess.Popen[bytes]:
    """A process that opens ``fifo`` for writing, writes ``log`` into it, then closes it or (``stay``)
    keeps it open and writes nothing more; without ``log`` it never opens it."""
    script = "sleep 60" if log is None else 'exec 3>"$0"; cat "$1" >&3; ' + ("exec sleep 60" if stay else "")
    return subprocess.Popen(["sh", "-c", script, str(fifo), str(log)], start_new_session=True)


@pytest.mark.timeout(180)  # import commands: 35 s on a loaded machine
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_pipe_named_by_its_path_is_read_and_stopped_as_standard_input_is(
    tmp_path: Path, workers: str
) -> None:
    """A FIFO given by its path (so /dev/stdin or <(zcat …)): read whole, and known as the file it
    came from. It failed at its first chunk ("cannot read access.fifo: Illegal seek"), and
    while its writer was open and idle (or had not opened it yet) SIGTERM did not end the
    import: the read waited in a thread the process joins on exit, and a second SIGTERM was
    ignored."""
    log = write_log(tmp_path / "access.log", 5000)
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    fifo = tmp_path / "access.fifo"
    os.mkfifo(fifo)
    args = ("--format", "combined", "-c", "gw.toml", "--host", "shop.example", "--no-progress")
    writer = _fifo_writer(fifo, log, stay=False)
    try:
        whole = _cli(tmp_path, str(fifo), *args, "--workers", workers)
    finally:
        writer.kill()
        writer.wait()
    assert whole.returncode == 0 and "5,000 lines read" in whole.stdout, whole
    assert "new in the store: 0" in _cli(tmp_path, str(log), *args).stdout
    (tmp_path / "gw.db").unlink()
    for data in (log, None):  # an idle writer, after 5,000 lines or before it opened the pipe
        writer = _fifo_writer(fifo, data, stay=True)
        proc = _start_import(tmp_path, fifo, "--workers", workers)
        try:
            deadline = time.monotonic() + 30
            while not _opened(proc.pid, tmp_path / "gw.db"):
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.02)
            time.sleep(1.5)  # with data: the first 4,096 lines replayed, the reader waits for more
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=10)
        finally:
            for each in (proc, writer):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(each.pid, signal.SIGKILL)
                each.wait()
        assert proc.returncode == 143, (out, err)
        assert "Traceback" not in err and "stopped by SIGTERM" in err, err
        if data is None:
            assert "before a line was read" in err, err
        elif workers == "1":
            assert "everything up to access.fifo line 4,096 is in the store" in err, err
            assert "with the whole input again, from its first line," in err, err


@pytest.mark.parametrize("workers", [1, 2])
async def test_the_geoip_databases_are_read_as_live(tmp_path: Path, workers: int) -> None:
    """The import never started its chain as a live gateway does (the ``running`` hooks), so
    the GeoIP databases were never opened: imported touchpoints had no country, whatever
    ``[geo]`` said."""
    networks: dict[str, dict[str, object]] = {
        "203.0.113.0/24": {"country": {"iso_code": "FR"}},
        "198.51.100.0/24": {"country": {"iso_code": "DE"}},
    }
    city = await asyncio.to_thread(write_mmdb, tmp_path / "city.mmdb", "GeoLite2-City", networks)
    settings = make_settings(tmp_path, f'[geo]\ncountry_db = "{city}"\n')
    log = await asyncio.to_thread(write, tmp_path / "access.log", COMBINED)
    await run_import(settings, [log], "combined", host="shop.example", workers=workers)
    assert await query(settings, "SELECT source, country FROM touchpoints ORDER BY ts") == [
        ("news", "FR"),
        (None, "DE"),
        (None, "DE"),
    ]


def test_one_process_is_the_default_so_bot_verdicts_are_judged_over_the_whole_log() -> None:
    """Bot velocity and behaviour are each process's memory: with several workers, each judges
    only the chunks it replays, and a burst's verdicts depend on how the chunks fell. An import
    therefore runs in one process unless asked, judging a burst as one live process would."""
    from gateway.cli import build_parser

    args = build_parser().parse_args(["import", "access.log", "--format", "combined"])
    assert args.workers == 1


def _opened(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open (Linux ``/proc``)."""
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) == str(path):
                    return True
    return False


def test_a_stop_while_the_last_commit_waits_still_counts_what_went_in(tmp_path: Path) -> None:
    """Ctrl-C while the import waits for its last commits (here: another process holds the
    store's write lock for a moment) lets them finish, then says what the store gained: the
    stop used to cancel the wait, and the summary called the import a dry run that wrote
    nothing, over the rows it had just written. It then said to run the command again "to
    import the rest", though every line had been read and there was no rest."""
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    first = write_log(tmp_path / "first.log", 500, seed=1)
    assert (
        _cli(
            tmp_path, str(first), "--format", "combined", "-c", "gw.toml", "--host", "shop.example"
        ).returncode
        == 0
    )
    [(before,)] = rows(tmp_path / "gw.db", "SELECT count(*) FROM touchpoints")
    log = write_log(tmp_path / "access.log", 2000, seed=2)
    locker = sqlite3.connect(tmp_path / "gw.db", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # the import's commits wait (busy_timeout: 5 s)
    proc = _start_import(tmp_path, log)
    try:
        deadline = time.monotonic() + 20
        while not _opened(proc.pid, tmp_path / "gw.db"):
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate(timeout=5)
            time.sleep(0.02)
        time.sleep(1.5)  # every line read, the commits waiting for the lock
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        locker.execute("ROLLBACK")
        out, err = proc.communicate(timeout=30)
    finally:
        locker.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == 130, (out, err)
    [(after,)] = rows(tmp_path / "gw.db", "SELECT count(*) FROM touchpoints")
    assert after > before
    assert "dry run" not in out + err, (out, err)
    assert f"new in the store: {after - before:,}" in out, out
    # Every line was read before the stop: nothing is left for another run to import.
    assert (
        "stopped by SIGINT after every line was read: everything up to access.log line 2,000 is in"
        " the store; nothing is left to import" in err
    ), err
    assert "import the rest" not in err, err


async def test_a_step_of_the_teardown_runs_to_its_end_through_the_stop() -> None:
    """The stop (one cancellation) may land while the import closes its pool or its store:
    the step still ends, or the store's thread would hold the process open after it printed
    its summary (as a full test run once saw). Any other cancellation still cancels."""
    from gateway.backfill import Summary
    from gateway.importstop import through_stop

    async def step(done: list[str]) -> str:
        await asyncio.sleep(0.2)
        done.append("closed")
        return "closed"

    for interrupted in ("SIGINT", None):
        summary, done = Summary(), list[str]()
        summary.interrupted = interrupted
        task = asyncio.ensure_future(through_stop(step(done), summary))
        await asyncio.sleep(0.05)
        task.cancel()
        if interrupted:
            assert await task == "closed" and done == ["closed"]
        else:
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.3)
            assert done == []  # cancelled with it


def _holds_stop_signals(pid: int) -> bool:
    """Whether process ``pid`` has SIGINT and SIGTERM blocked (its ``SigBlk`` mask, Linux ``/proc``)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigBlk:"):
                mask = int(line.split()[1], 16)
                return all(mask >> (sig - 1) & 1 for sig in (signal.SIGINT, signal.SIGTERM))
    return False


@pytest.mark.parametrize("after", [0.0, 0.05, 0.15, 0.3], ids=lambda s: f"{s}s")
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["int", "term"])
def test_a_stop_while_the_command_loads_is_the_same_clean_stop(
    tmp_path: Path, sig: signal.Signals, code: int, after: float
) -> None:
    """Ctrl-C or SIGTERM in the first few hundred milliseconds, while the command still imports
    its modules and reads its config: it used to end with Python's traceback of whatever import
    it interrupted (SIGINT) or silently by the signal (SIGTERM). From the moment our code runs
    the command holds them, and the import then stops as it does later: its summary, the
    message, 130 or 143. (Before that moment there is only Python's own start-up.)"""
    log = write_log(tmp_path / "access.log", 20_000)
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    proc = _start_import(tmp_path, log)
    try:
        deadline = time.monotonic() + 20
        while not _holds_stop_signals(proc.pid):
            assert proc.poll() is None and time.monotonic() < deadline, "it never held Ctrl-C and SIGTERM"
            time.sleep(0.001)
        time.sleep(after)
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    if proc.returncode == 0:  # on a fast machine 20,000 lines may all be in before the signal
        assert after > 0 and "20,000 lines read" in out, (out, err)
        return
    assert proc.returncode == code, (out, err)
    stopped = rf"gateway import: stopped by {sig.name}( before a line was read|: everything up to)"
    assert re.search(stopped, err), err
    assert "gateway import:" in out and "dry run" not in out + err, (out, err)
    if after == 0:
        assert f"stopped by {sig.name} before a line was read; nothing was imported" in err, err


def test_another_command_interrupted_while_it_loads_says_so(tmp_path: Path) -> None:
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "check", "-c", "gw.toml", "--dev"], cwd=tmp_path,
        env={**os.environ, **ENV}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not _holds_stop_signals(proc.pid):
            assert proc.poll() is None and time.monotonic() < deadline, "it never held Ctrl-C"
            time.sleep(0.001)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert (proc.returncode, err) == (130, "gateway: interrupted\n"), (out, err)


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_line_dated_after_now_is_skipped_and_said(tmp_path: Path, workers: int) -> None:
    """A log line dated days ahead (the logging server's clock was wrong) was imported as a
    touchpoint of the future, counted by the reports of the days to come; live, no request can
    come from the future, and a Segment event so dated was refused already."""
    settings = make_settings(tmp_path)
    ahead = datetime.fromtimestamp(time.time() + 5 * 86400, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")
    past = f'203.0.113.9 - - [01/Mar/2025:10:00:00 +0000] "GET /p?utm_source=past HTTP/1.1" 200 1 "-" "{UA}"'
    future = f'203.0.113.9 - - [{ahead}] "GET /p?utm_source=future HTTP/1.1" 200 1 "-" "{UA}"'
    log = await asyncio.to_thread(write, tmp_path / "access.log", f"{past}\n{future}")
    summary = await run_import(settings, [log], "combined", host="shop.example", workers=workers)
    assert summary.lines == 2
    [(reason, count)] = summary.skipped.items()
    assert count == 1
    assert reason.startswith("time: later than now (more than webhooks.tolerance_seconds ahead")
    assert summary.examples == [f"access.log:2: {reason}"]
    assert await query(settings, "SELECT source FROM touchpoints") == [("past",)]


async def test_a_json_line_with_a_number_beyond_a_double_in_any_field_is_read(tmp_path: Path) -> None:
    """A json-lines line holding a number too large for a double in a field the import does not
    read (`1e400`, or an integer of 5,000 digits; valid JSON) was skipped whole as `not valid
    JSON`, its landing lost, where a Segment line so written was read."""
    settings = make_settings(tmp_path)
    lines = [
        b'{"time":"2025-03-01T10:00:00Z","method":"GET","uri":"/p?utm_source=a","bytes":1e400}',
        b'{"time":"2025-03-01T10:00:01Z","method":"GET","uri":"/p?utm_source=b","n":' + b"7" * 5000 + b"}",
    ]
    log = tmp_path / "app.jsonl"
    await asyncio.to_thread(log.write_bytes, b"\n".join(lines) + b"\n")
    summary = await run_import(settings, [log], "json-lines", host="shop.example")
    assert summary.skipped == {}
    assert await query(settings, "SELECT source FROM touchpoints ORDER BY ts") == [("a",), ("b",)]


async def test_a_referrer_host_with_bytes_that_are_not_utf8_is_not_stored(tmp_path: Path) -> None:
    """A logged Referer whose host holds a byte that is not UTF-8 (`ex\\xe9.com`, Latin-1) was
    read with U+FFFD in its place and stored as the referrer `ex\\ufffd.com`, a referral from no
    real site; live, the same header's host is refused (the HTTP parser keeps the byte as a
    surrogate). Neither is a host."""
    settings = make_settings(tmp_path)
    line = (
        '203.0.113.9 - - [01/Mar/2025:10:00:00 +0000] "GET /p?utm_source=a HTTP/1.1" 200 1'
        f' "https://ex\xe9.com/" "{UA}"'
    )
    log = tmp_path / "access.log"
    await asyncio.to_thread(log.write_bytes, line.encode("latin-1") + b"\n")
    summary = await run_import(settings, [log], "combined", host="shop.example")
    assert summary.events["touchpoints"] == 1
    assert await query(settings, "SELECT source, referrer_host FROM touchpoints") == [("a", None)]


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_line_whose_tracking_values_are_all_refused_is_skipped_and_said(
    tmp_path: Path, workers: int
) -> None:
    """A landing whose only tracking value the chain refuses (too long, a click ID with a space,
    a control character, bytes that are not UTF-8, a source not allowed) made nothing and was
    not counted as skipped: the summary said nothing of it. Live the value is dropped and
    counted in gateway_params_dropped_total; imported, the line is now skipped with the key
    and the rule (never the value). A line with a valid value beside a refused one still lands."""
    settings = make_settings(
        tmp_path, "[campaign]\nmax_value_length = 20\nallowed_sources = ['news', 'ads']\n"
    )
    pre = "203.0.113.9 - - [01/Mar/2025:10:00:0"
    targets = [
        "/p?utm_source=news",
        "/p?utm_campaign=" + "x" * 21,
        "/p?gclid=abc%20def",
        "/p?utm_source=%01",
        "/p?utm_campaign=%ff",
        "/p?utm_source=spam",
        "/p?utm_source=ads&utm_campaign=" + "y" * 30,
        "/p?utm_term=%01&utm_content=%02",
        "/p?gclid=" + "g" * 1001,
        "/p?gclid=" + "g" * 21,  # past max_value_length: a click ID has a bound of its own
    ]
    text = "\n".join(f'{pre}{i} +0000] "GET {t} HTTP/1.1" 200 1 "-" "{UA}"' for i, t in enumerate(targets))
    log = await asyncio.to_thread(write, tmp_path / "access.log", text)
    summary = await run_import(settings, [log], "combined", host="shop.example", workers=workers)
    refused = "tracking value refused, no touchpoint: "
    unprintable = "not printable (a control character, a space in a click ID, bytes not UTF-8)"
    assert dict(summary.skipped) == {
        f"{refused}utm_campaign longer than campaign.max_value_length": 1,
        f"{refused}gclid {unprintable}": 1,
        f"{refused}utm_source {unprintable}": 1,
        f"{refused}utm_campaign {unprintable}": 1,
        f"{refused}utm_source not in campaign.allowed_sources": 1,
        f"{refused}utm_term {unprintable} (and 1 more)": 1,
        f"{refused}gclid longer than a click ID's 1,000 characters"
        " (or campaign.max_value_length when larger)": 1,
    }
    assert summary.examples[0] == f"access.log:2: {refused}utm_campaign longer than campaign.max_value_length"
    assert summary.events["touchpoints"] == 3
    assert await query(settings, "SELECT source, campaign, click_id_kind FROM touchpoints ORDER BY ts") == [
        ("news", None, None),
        ("ads", None, None),
        (None, None, "gclid"),
    ]
    assert "skipped:              7" in summary.render()


async def test_an_email_address_in_a_logged_tracking_value_is_not_stored(tmp_path: Path) -> None:
    """A newsletter's merge tag put the subscriber's address into its links
    (``utm_term=jane@example.com``), and the import stored it in the store's ``term`` and
    ``raw_params``, as the live proxy did. The value is dropped as live, the line's other values
    kept; a line with nothing else is skipped and said, never the address."""
    settings = make_settings(tmp_path)
    pre = "203.0.113.9 - - [01/Mar/2025:10:00:0"
    targets = [
        "/p?utm_source=news&utm_term=jane%40example.com&utm_campaign=spring",
        "/p?utm_email=jane@example.com",
    ]
    text = "\n".join(f'{pre}{i} +0000] "GET {t} HTTP/1.1" 200 1 "-" "{UA}"' for i, t in enumerate(targets))
    log = await asyncio.to_thread(write, tmp_path / "access.log", text)
    summary = await run_import(settings, [log], "combined", host="shop.example")
    assert dict(summary.skipped) == {
        "tracking value refused, no touchpoint: utm_email holds an email address"
        " (personal data is not stored)": 1
    }
    assert summary.events["touchpoints"] == 1
    rows = await query(settings, "SELECT source, campaign, term, raw_params FROM touchpoints")
    assert [row[:3] for row in rows] == [("news", "spring", None)]
    assert "@" not in rows[0][3] and "jane" not in summary.render()


async def test_a_placeholder_in_a_logged_tracking_value_is_dropped_and_said(tmp_path: Path) -> None:
    """A link builder's ``gclid=undefined`` or ``utm_campaign=null`` in a log's landings was
    imported as a click and a campaign of that name (until 2026-12-07), as live: one click ID for
    every visitor so tagged. Dropped as live, the line's other values kept; a line with nothing
    else is skipped, its summary saying the key and why (``DROPPED_WHY``), never the value."""
    settings = make_settings(tmp_path)
    pre = "203.0.113.9 - - [01/Mar/2025:10:00:0"
    targets = [
        "/p?utm_source=news&utm_campaign=null&gclid=undefined",
        "/p?gclid=undefined",
        "/p?fbclid=%5Bobject%20Object%5D&utm_id=NaN",
    ]
    text = "\n".join(f'{pre}{i} +0000] "GET {t} HTTP/1.1" 200 1 "-" "{UA}"' for i, t in enumerate(targets))
    log = await asyncio.to_thread(write, tmp_path / "access.log", text)
    summary = await run_import(settings, [log], "combined", host="shop.example")
    no_value = "is no value (what code writes where it has none: undefined, null…)"
    assert dict(summary.skipped) == {
        f"tracking value refused, no touchpoint: gclid {no_value}": 1,
        f"tracking value refused, no touchpoint: fbclid {no_value} (and 1 more)": 1,
    }
    assert summary.events["touchpoints"] == 1
    rows = await query(settings, "SELECT source, campaign, click_id_kind, click_id FROM touchpoints")
    assert rows == [("news", None, None, None)]
    assert "object Object" not in summary.render()  # the value itself is never said


@pytest.mark.parametrize("workers", [1, 2])
async def test_an_absolute_form_request_for_another_host_is_skipped(tmp_path: Path, workers: int) -> None:
    """``GET http://other.example/?utm_source=x`` (a proxy's request, in the log of a server
    that also proxies) was imported as a landing on this site. It names its host: one not the
    site's (--host, or proxy.public_origin) is skipped with its reason; the site's own, in any
    case and with a port, lands as an origin-form line does (its query kept)."""
    settings = make_settings(tmp_path)
    pre = "203.0.113.9 - - [01/Mar/2025:10:00:0"
    targets = [
        "http://other.example/?utm_source=proxied",
        "https://other.example:8443/p?utm_source=proxied2",
        "http://user@other.example/p?utm_source=proxied3",
        "http://SHOP.example:8080/p?utm_source=ours",
        "http://shop.example?utm_source=bare",
        "/p?utm_source=plain",
    ]
    text = "\n".join(f'{pre}{i} +0000] "GET {t} HTTP/1.1" 200 1 "-" "{UA}"' for i, t in enumerate(targets))
    log = await asyncio.to_thread(write, tmp_path / "access.log", text)
    summary = await run_import(settings, [log], "combined", host="shop.example", workers=workers)
    reason = "request line names another host (absolute-form, a proxy's request): not a landing on this site"
    assert dict(summary.skipped) == {reason: 3}
    assert summary.examples[0] == f"access.log:1: {reason}"
    assert await query(settings, "SELECT source, landing_path FROM touchpoints ORDER BY ts") == [
        ("ours", "/p"),
        ("bare", "/"),
        ("plain", "/p"),
    ]


async def test_an_absolute_form_request_without_the_sites_host_is_told_by_the_lines_host(
    tmp_path: Path,
) -> None:
    """A json-lines log with a host per line, imported without --host or proxy.public_origin:
    the site's host is not known, so an absolute-form request line is this site's only when it
    names the line's own logged Host."""
    settings = make_settings(tmp_path)
    lines = [
        {"host": "shop.example", "request": "GET http://other.example/?utm_source=proxied HTTP/1.1"},
        {"host": "shop.example", "request": "GET http://shop.example/?utm_source=ours HTTP/1.1"},
        {"host": "shop.example", "request": "GET /?utm_source=plain HTTP/1.1"},
    ]
    text = "\n".join(json.dumps({"time": f"2025-03-01T10:00:0{i}Z", **line}) for i, line in enumerate(lines))
    log = await asyncio.to_thread(write, tmp_path / "access.jsonl", text)
    summary = await run_import(settings, [log], "json-lines")
    assert [example.split(": ", 1)[0] for example in summary.examples] == ["access.jsonl:1"]
    assert sum(summary.skipped.values()) == 1
    assert await query(settings, "SELECT source FROM touchpoints ORDER BY ts") == [("ours",), ("plain",)]


@pytest.mark.parametrize("workers", [1, 2])
async def test_every_reason_a_line_was_skipped_for_has_an_example(tmp_path: Path, workers: int) -> None:
    """Only the first five skipped lines were shown: a log whose first lines were junk (a
    header, a banner) filled them, and a later reason (an unreadable time, a TLS handshake) was
    counted with no file:line to find it by. Each reason now has its first line shown too."""
    settings = make_settings(tmp_path)
    junk = [f"junk {n}" for n in range(7)]
    log = await asyncio.to_thread(write, tmp_path / "access.log", "\n".join([*junk, *COMBINED.splitlines()]))
    summary = await run_import(settings, [log], "combined", host="shop.example", workers=workers)
    assert summary.skipped == {
        "not a combined-log line": 8, "unreadable time": 1, "unreadable request line": 1
    }  # fmt: skip
    assert summary.examples == [
        *(f"access.log:{n}: not a combined-log line" for n in range(1, 6)),
        "access.log:13: unreadable time [31/Foo/2025:11:00:00 +0100]",
        "access.log:14: unreadable request line: '\\x16\\x03\\x01'",
    ]
    rendered = summary.render()
    assert "access.log:13: unreadable time" in rendered and "access.log:6:" not in rendered
    assert "access.log:12: not a combined-log line" not in rendered  # a reason's sixth: counted only


@pytest.mark.parametrize("workers", [1, 2])
async def test_the_summary_accounts_for_every_line_read(tmp_path: Path, workers: int) -> None:
    """The summary gave the lines read, the rows made and the lines skipped, but not how many
    lines were replayed: 500,000 lines read, 16,561 touchpoints and 3 skipped did not add up,
    and nothing said where the other lines (assets, pages with no campaign) had gone. It now
    says how many were replayed, so that replayed + skipped + blank = lines read."""
    settings = make_settings(tmp_path)
    body = COMBINED.replace("\n", "\n\n", 2) + "\n \r\n"
    log = await asyncio.to_thread(write, tmp_path / "blank.log", "\n" + body + "\n\n")
    summary = await run_import(settings, [log], "combined", host="shop.example", workers=workers)
    assert (summary.lines, summary.blank, sum(summary.skipped.values())) == (15, 7, 3)
    rendered = summary.render().splitlines()
    assert rendered[1] == (
        "  replayed:             5   (lines run through the chain as live requests; the others of the"
        " 15 read: 3 skipped, below, and 7 blank)"
    )
    # A last line caught half written is skipped but not among the lines read (wc -l): not
    # counted twice.
    half = f'203.0.113.9 - - [01/Mar/2025:10:00:00 +0100] "GET / HTTP/1.1" 200 1 "-" "{UA}"'
    await asyncio.to_thread(log.write_bytes, await asyncio.to_thread(log.read_bytes) + half.encode())
    summary = await run_import(settings, [log], "combined", host="shop.example", workers=workers)
    assert (summary.lines, summary.blank, sum(summary.skipped.values())) == (15, 7, 4)
    assert summary.render().splitlines()[1].startswith("  replayed:             5   (")


@pytest.mark.parametrize("workers", [1, 2])
async def test_skips_are_counted_by_reason_not_by_the_lines_value(tmp_path: Path, workers: int) -> None:
    """A log of nginx's ``$time_iso8601`` read as ``combined`` (every time unreadable, each its
    own) had a summary of one reason per line, each ``1  unreadable time [2025-03-01T10:00:00…]``:
    20,000 lines made a summary of 16,812. The same for json-lines ``uri: not a path``. A reason
    is counted as one; the value stays in the first skips, where it says what was wrong."""
    settings = make_settings(tmp_path)
    line = '203.0.113.9 - - [2025-03-01T10:{:02}:00+00:00] "GET /p HTTP/1.1" 200 10 "-" "UA"'
    iso = [line.format(n) for n in range(30)]
    log = await asyncio.to_thread(write, tmp_path / "iso.log", "\n".join(iso))
    summary = await run_import(settings, [log], "combined", host="shop.example", workers=workers)
    assert summary.skipped == {"unreadable time": 30}
    assert summary.examples[:2] == [
        "iso.log:1: unreadable time [2025-03-01T10:00:00+00:00]",
        "iso.log:2: unreadable time [2025-03-01T10:01:00+00:00]",
    ]
    assert summary.render().count("unreadable time") == 1 + 5  # the count, and the first five
    paths = [json.dumps({"time": "2025-03-01T10:00:00Z", "method": "GET", "uri": f"p{n}"}) for n in range(30)]
    log = await asyncio.to_thread(write, tmp_path / "j.log", "\n".join(paths))
    summary = await run_import(settings, [log], "json-lines", host="shop.example", workers=workers)
    assert summary.skipped == {"uri: not a path": 30}
    assert summary.examples[0] == "j.log:1: uri: not a path: 'p0'"


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_log_in_which_no_line_logged_a_user_agent_is_said_so(tmp_path: Path, workers: int) -> None:
    """nginx's JSON log formats name the fields as its variables (``http_user_agent``,
    ``http_referer``), not as the default mapping reads them: every line was imported as a
    touchpoint blocked as ``empty_agent``, which no report counts, and the summary said nothing
    (an Apache ``common`` log alike). It now says why, and what to map; a log whose lines logged
    a User-Agent, even some of them, says nothing of it."""
    settings = make_settings(tmp_path)
    nginx = [
        {"time": f"2025-03-01T10:00:0{i}+00:00", "remote_addr": f"203.0.113.{i}", "status": "200",
         "request": f"GET /?utm_source=s{i} HTTP/1.1", "http_user_agent": UA,
         "http_referer": "https://www.google.com/"}
        for i in range(4)
    ]  # fmt: skip
    text = "\n".join(json.dumps(line) for line in nginx)
    log = await asyncio.to_thread(write, tmp_path / "access.jsonl", text)
    summary = await run_import(settings, [log], "json-lines", host="shop.example", workers=workers)
    assert summary.events["touchpoints"] == 4 and "no user agent: not one line" in summary.render()
    assert "--field user_agent=POINTER (nginx's is /http_user_agent" in summary.render()
    assert await query(settings, "SELECT DISTINCT verdict, reasons FROM touchpoints") == [
        ("block", '["empty_agent"]')
    ]
    fields = {"user_agent": "/http_user_agent"}
    mapped = await run_import(settings, [log], "json-lines", host="shop.example", fields=fields, dry_run=True)
    assert "no user agent" not in mapped.render()
    common = '203.0.113.9 - - [01/Mar/2025:10:00:00 +0000] "GET /?utm_source=c HTTP/1.1" 200 5'
    log = await asyncio.to_thread(write, tmp_path / "common.log", common)
    assert "no user agent" in (await run_import(settings, [log], "combined", host="shop.example")).render()
    some = f'{common} "-" "-"\n{common.replace("=c", "=d")} "-" "{UA}"'
    log = await asyncio.to_thread(write, tmp_path / "some.log", some)
    assert (
        "no user agent" not in (await run_import(settings, [log], "combined", host="shop.example")).render()
    )


def test_a_wrong_file_among_several_is_named_and_exits_1_while_the_others_are_imported(
    tmp_path: Path,
) -> None:
    """``gateway import a.log missing.log b.log``: a missing file, a directory or one that cannot
    be opened failed the whole import before it read any file (nothing imported), while a file
    of another format (a JSON log among combined ones) or a gzip file broken part way among good
    ones let it exit 0, or stopped it there. Every good file is now imported, and each wrong one
    is named with why, exit 1."""
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    first = write_log(tmp_path / "a.log", 300)
    last = write_log(tmp_path / "b.log", 300, seed=2)
    (tmp_path / "caddy.log").write_text('{"ts": 1, "request": {"uri": "/"}}\n{"ts": 2}\n')
    (tmp_path / "logs.d").mkdir()
    (tmp_path / "broken.log.gz").write_bytes(b"\x1f\x8b\x08\x00" + b"junk" * 8)
    files = ("a.log", "missing.log", "caddy.log", "logs.d", "broken.log.gz", "b.log")
    args = ("--format", "combined", "-c", "gw.toml", "--host", "shop.example", "--no-progress")
    done = _cli(tmp_path, *files, *args)
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr
    assert "4 files, 602 lines read" in done.stdout, done.stdout  # a, caddy, broken (none), b
    said = done.stderr
    assert "gateway import: cannot read missing.log: No such file or directory; not imported" in said, said
    # A directory's logs are named one by one (until 2026-12-07 it said no more than this).
    assert (
        "gateway import: cannot read logs.d: Is a directory (name the logs in it: logs.d/*); not imported"
        in said
    ), said
    assert (
        "gateway import: cannot read broken.log.gz: Error -3 while decompressing data: invalid block type;"
        in said
    )
    assert (
        "gateway import: caddy.log: not imported: every line read was skipped as not in the combined"
        " format (see the skips above): is --format combined right for it?"
    ) in said, said
    assert said.rstrip().endswith(
        "gateway import: 4 of 6 files failed (named above): missing.log, caddy.log, logs.d, broken.log.gz;"
        " the other files are in the store"
    ), said
    # The store holds what an import of the two good files alone gives.
    (tmp_path / "fresh.toml").write_text('[storage]\npath = "fresh.db"\n')
    fresh = _cli(tmp_path, str(first), str(last), *args[:3], "fresh.toml", *args[4:])
    assert fresh.returncode == 0, fresh
    ids = "SELECT id FROM touchpoints ORDER BY id"
    assert rows(tmp_path / "gw.db", ids) == rows(tmp_path / "fresh.db", ids) != []
    # Every file wrong: nothing to import, each named, no summary and no store.
    (tmp_path / "gw.db").unlink()
    nothing = _cli(tmp_path, "missing.log", "logs.d", *args)
    assert nothing.returncode == 1 and nothing.stdout == "", nothing
    assert nothing.stderr.splitlines()[-2:] == [
        "gateway import: cannot read missing.log: No such file or directory",
        "gateway import: cannot read logs.d: Is a directory (name the logs in it: logs.d/*)",
    ], nothing.stderr
    assert not (tmp_path / "gw.db").exists()


def test_a_line_holding_a_lone_carriage_return_is_skipped_not_half_read(tmp_path: Path) -> None:
    """A lone CR (a classic Mac line end, a copy whose line ends a tool mangled) is no line end,
    and no server writes one inside a line (nginx and Apache write ``\\x0D``): two requests so
    joined were read as the first with the second as its trailing fields, and the second was
    lost without a word (until 2026-12-07). Such a line is skipped, by its file:line, and the
    lines around it are read as they were (their numbers, the event IDs' keys, unchanged)."""
    lines = [line.encode() for line in COMBINED.split("\n")]
    # An asset's line, then a landing from an external referrer joined to it by a lone CR.
    joined = b"\n".join([lines[0], lines[1] + b"\r" + lines[3], lines[7]]) + b"\r\n"
    (tmp_path / "mac.log").write_bytes(joined)
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\nnode = "import-test"\n')
    done = _cli(tmp_path, "mac.log", "--format", "combined", "-c", "gw.toml", "--host", "shop.example")
    assert done.returncode == 0, done.stderr
    assert "3 lines read" in done.stdout
    assert re.search(r"skipped: +1\n +1  a carriage return inside the line", done.stdout), done.stdout
    assert "mac.log:2: a carriage return inside the line" in done.stdout
    assert rows(tmp_path / "gw.db", "SELECT landing_path FROM touchpoints ORDER BY ts") == [("/p",), ("/",)]


def test_rotated_logs_named_newest_first_are_read_oldest_first(tmp_path: Path) -> None:
    """``gateway import access.log*``: the shell names access.log (the newest), access.log.1,
    access.log.10.gz… before access.log.2.gz. Read as named, an order reloaded in both files was
    stored at its later time, and a sign-in's binding too (the first read of each is kept): the
    conversion moved out of its attribution window, the device's ``first_bound`` later than it
    was (until 2026-12-07). The files are read oldest first, by their first line's time, so what
    is stored is what a live gateway would have recorded, whatever order they are named in."""
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\nnode = "import-test"\n' + RULES + SIGN_IN)

    def log(name: str, hour: int, compress: bool = False) -> None:
        text = "\n".join(
            f'203.0.113.8 - - [01/Mar/2025:{hour:02d}:00:0{n} +0000] "GET {target} HTTP/1.1" 200 1 "-" "{UA}"'
            for n, target in enumerate(("/?utm_source=news", "/welcome?uid=u1", "/thanks?order=A1"))
        )
        write(tmp_path / name, text, compress=compress)

    log("access.log", 12)
    log("access.log.1", 10)
    log("access.log.2.gz", 8, compress=True)
    args = ("--format", "combined", "-c", "gw.toml", "--host", "shop.example", "--no-progress")
    done = _cli(tmp_path, "access.log", "access.log.1", "access.log.2.gz", *args)
    assert done.returncode == 0, done.stderr
    assert rows(tmp_path / "gw.db", "SELECT ts, order_id FROM conversions") == [
        ("2025-03-01T08:00:02.000000Z", "A1")
    ]
    assert rows(tmp_path / "gw.db", "SELECT ts FROM identities") == [("2025-03-01T08:00:01.000000Z",)]
    # The run lists its files as they were named.
    listed = _cli(tmp_path, "--list", "-c", "gw.toml")
    assert "files: access.log, access.log.1, access.log.2.gz" in listed.stdout, listed


def test_progress_off_a_terminal_is_a_plain_line_every_few_seconds(tmp_path: Path) -> None:
    """An import run by cron or a deploy script (``2>log``) said nothing until its end: the bar
    is drawn on a terminal only. Off one, a plain line now says how far it is, every
    ``--progress-every`` seconds (10 by default), without the bar's carriage returns."""
    log = write_log(tmp_path / "access.log", 2000)
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    args = (str(log), "--format", "combined", "-c", "gw.toml", "--host", "shop.example", "--dry-run")
    done = _cli(tmp_path, *args, "--progress-every", "0")  # 0: after every batch read
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr and "\x1b" not in done.stderr, done.stderr
    said = [line for line in done.stderr.splitlines() if line.startswith("gateway import: ")]
    size = log.stat().st_size
    line = re.compile(
        r"gateway import: (\d+)% \(([\d.]+) of ([\d.]+) MiB\), ([\d,]+) lines read, [\d,]+ lines/s,"
        r" \d+ s so far"
    )
    assert said and all(line.fullmatch(one) for one in said), done.stderr
    assert all(line.fullmatch(one)[3] == f"{size / 2**20:.1f}" for one in said), said  # type: ignore[index]
    # A stream's size is not known before its end: what was read so far.
    piped = _cli_stdin(tmp_path, log.read_bytes(), "-", *args[1:], "--progress-every", "0")
    err = piped.stderr.decode()
    assert piped.returncode == 0, err
    assert re.search(
        r"^gateway import: [\d.]+ MiB read, [\d,]+ lines read, [\d,]+ lines/s, \d+ s so far$", err, re.M
    ), err
    assert "%" not in err, err
    quiet = _cli(tmp_path, *args, "--progress-every", "0", "--no-progress")
    assert quiet.returncode == 0 and "gateway import: " not in quiet.stderr, quiet.stderr
    refused = _cli(tmp_path, *args, "--progress-every", "-1")
    assert refused.returncode == 2 and "--progress-every: expected a number of seconds" in refused.stderr, (
        refused.stderr
    )


@pytest.mark.parametrize("unbuffered", ["", "1"])
def test_progress_lines_whose_reader_is_gone_do_not_stop_the_import(tmp_path: Path, unbuffered: str) -> None:
    """Standard error a pipe whose reader went away (a deploy script's ``2>&1 | head``): the
    progress line cannot be written, and the import goes on, unsaid, to its end and summary,
    exit 0, with stderr buffered (cron, systemd) or not (``PYTHONUNBUFFERED=1``)."""
    log = write_log(tmp_path / "access.log", 20_000)  # past the first batch (4,096 lines)
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"} | ENV
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "import", str(log), "--format", "combined", "-c", "gw.toml",
             "--host", "shop.example", "--progress-every", "0"],
            cwd=tmp_path, env={**env, **({"PYTHONUNBUFFERED": "1"} if unbuffered else {})},
            stdout=subprocess.PIPE, stderr=write_end, text=True, timeout=60,
        )  # fmt: skip
    finally:
        os.close(write_end)
    # Until then the first line's BrokenPipeError ended it after 4,096 lines, exit 141; and,
    # stderr buffered, the line left in its buffer failed again at exit: 120 (until 2026-12-07).
    assert done.returncode == 0 and "20,000 lines read" in done.stdout, (done.returncode, done.stdout)
    [(count,)] = rows(tmp_path / "gw.db", "SELECT count(*) FROM touchpoints")
    assert count > 0 and f"new in the store: {count:,}" in done.stdout, done.stdout
