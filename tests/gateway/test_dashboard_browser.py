"""The dashboard in a real headless Chromium, driven over the DevTools protocol: log in
through the form, wait for the page to draw the seeded store, screenshot every chart and
count the coloured pixels it drew, check the series labels in the DOM, look up a journey.

Skipped when Chromium is missing, unless ``CI`` is set (``.ci/run`` installs it): then it fails.
Set ``DASHBOARD_SCREENSHOT=path.png`` to keep the full-page screenshot (docs/dashboard.png).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import math
import os
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from gateway.attribution import MODELS
from gateway.events import Binding, Conversion, DailyCount, Event, Touchpoint, iso
from storage.populations import POPULATIONS
from storage.queries import JOURNEY_LIMIT
from tests.conftest import TOKEN, RunningGateway
from tests.gateway.test_dashboard import (
    PERIOD,
    T0,
    _conv,
    _ids,
    _lab,
    _tp,
    origin,
    seed_events,
    seeded_gateway,
)
from tests.pngread import read_png

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
WIDTH = 1280
PALETTE = [
    (0x25, 0x63, 0xEB), (0x16, 0xA3, 0x4A), (0xEA, 0x58, 0x0C), (0x93, 0x33, 0xEA), (0xDC, 0x26, 0x26),
    (0x08, 0x91, 0xB2), (0xCA, 0x8A, 0x04), (0xDB, 0x27, 0x77), (0x4F, 0x46, 0xE5), (0x65, 0xA3, 0x0D),
]  # fmt: skip
"""The first colours of charts.js's palette, as drawn (sRGB)."""


@pytest.fixture
def chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium package)")
        pytest.skip("chromium is not installed")
    return CHROMIUM


_NAVIGATING = "Inspected target navigated or closed"


class Page:
    """One page target over the DevTools protocol (commands in order; the requests the
    ``Fetch`` domain paused are kept, by URL, other events ignored)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws, self.last = ws, 0
        self.paused: dict[str, str] = {}
        """URL → request ID of each request ``Fetch.enable`` holds back."""
        self.errors: list[str] = []
        """The page's uncaught exceptions and console errors (``Runtime`` and ``Log`` are
        enabled by ``browser``); not the browser's line for an answer of 4xx, which is the
        page's to tell."""
        self.logs: list[str] = []
        """Every entry of the browser's log (``Log`` enabled), of any level: Chromium's advice
        on a page's forms (``[DOM] …``) is a verbose one."""

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.last += 1
        await self.ws.send_json({"id": self.last, "method": method, "params": params})
        while True:
            message = await self.ws.receive_json()
            event, params = message.get("method"), message.get("params", {})
            if event == "Fetch.requestPaused":
                self.paused[params["request"]["url"]] = params["requestId"]
            elif event == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                self.errors.append(details.get("exception", {}).get("description") or details["text"])
            elif event == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                self.errors.append(
                    " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
                )
            elif event == "Log.entryAdded":
                entry = params["entry"]
                self.logs.append(entry["text"])
                if entry["level"] == "error" and entry["source"] != "network":
                    self.errors.append(entry["text"])
            if message.get("id") == self.last:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message["result"])

    async def eval(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, what: str, tries: int = 600) -> Any:
        """Poll until ``expression`` is truthy (a deadline, not a timing assertion). A poll that
        lands while the page is being replaced (a form submitted, a navigation) counts as
        "not yet": Chromium answers it "Inspected target navigated or closed"."""
        for _ in range(tries):
            try:
                value = await self.eval(expression)
            except RuntimeError as err:
                if _NAVIGATING not in str(err):
                    raise
                value = None
            if value:
                return value
            await asyncio.sleep(0.1)
        state = await self.eval("document.body ? document.body.innerText.slice(0, 500) : ''")
        raise AssertionError(f"never saw {what}; page says: {state}")

    async def screenshot(self, clip: dict[str, float] | None = None) -> bytes:
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": True}
        if clip:
            params["clip"] = {**clip, "scale": 1}
        return base64.b64decode((await self.send("Page.captureScreenshot", **params))["data"])


@contextlib.asynccontextmanager
async def browser(executable: str, profile: Path) -> AsyncIterator[Page]:
    process = await asyncio.create_subprocess_exec(
        executable,
        "--headless=new",
        "--no-sandbox",  # tests run as root in CI containers
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--hide-scrollbars",
        "--force-color-profile=srgb",
        f"--window-size={WIDTH},900",
        f"--user-data-dir={profile}",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        "about:blank",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    drain: asyncio.Task[bytes] | None = None
    try:
        assert process.stderr is not None
        endpoint = ""
        while not endpoint:
            line = (await asyncio.wait_for(process.stderr.readline(), 30)).decode(errors="replace")
            if not line:
                raise AssertionError("chromium exited before it listened for DevTools")
            if "DevTools listening on ws://" in line:
                endpoint = line.split("ws://", 1)[1].split("/", 1)[0]
        # Keep reading its log, or a chatty browser would fill the pipe and stall.
        drain = asyncio.create_task(process.stderr.read())
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://{endpoint}/json/list") as resp:
                targets = await resp.json()
            url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            async with session.ws_connect(url, max_msg_size=0) as ws:
                page = Page(ws)
                await page.send("Runtime.enable")  # the page's errors, into page.errors
                await page.send("Log.enable")
                yield page
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        if drain is not None:
            await drain


def files_holding(folder: Path, needle: bytes) -> list[str]:
    """The files under ``folder`` whose bytes hold ``needle`` (blocking: run it in a thread)."""
    found = []
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):  # a socket, a lock file
            if path.is_file() and needle in path.read_bytes():
                found.append(str(path.relative_to(folder)))
    return sorted(found)


def coloured(rows: list[list[tuple[int, int, int]]]) -> int:
    """Pixels of a saturated colour: chart marks, not the white card, grey grid lines or text."""
    return sum(1 for row in rows for r, g, b in row if max(r, g, b) - min(r, g, b) > 60)


def palette_colours(rows: list[list[tuple[int, int, int]]], least: int = 20) -> int:
    """How many of the palette's colours fill at least ``least`` pixels."""
    counts = dict.fromkeys(PALETTE, 0)
    for row in rows:
        for pixel in row:
            if pixel in counts:
                counts[pixel] += 1
    return sum(1 for n in counts.values() if n >= least)


CHARTS = ["#chart-daily", "#chart-models", "#chart-campaigns", "#chart-creators", "#chart-bots"]


@pytest.mark.timeout(180)  # a browser start on a loaded 2-core machine; not a timing assertion
async def test_dashboard_draws_the_store(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    gw: RunningGateway = await seeded_gateway(start_gateway, upstream_server)
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw, "/")  # the listener's root leads to the login form
        assert await page.eval("document.cookie") == ""  # HttpOnly: scripts never see the session

        query = f"?from={PERIOD['since']}&to=2026-11-10&model=linear"
        await page.send("Page.navigate", url=gw.admin_url + "/dashboard" + query)
        state = await page.wait_for(
            "document.body && ['ready', 'error'].includes(document.body.dataset.state)"
            " && document.body.dataset.state",
            "the charts drawn",
        )
        assert state == "ready", await page.eval("document.querySelector('#status').textContent")
        assert await page.eval("document.querySelector('#status').textContent") == ""  # no "Computing…"
        options = await page.eval(
            "JSON.stringify([...document.querySelector('#period').conversion.options].map(o => o.value))"
        )
        assert json.loads(options) == ["", "purchase"]  # every conversion, then the period's names
        # The page asked for its three parts apart (the quick ones draw first), the comparison last.
        asked = await page.eval(
            "JSON.stringify(performance.getEntriesByType('resource').map(e => new URL(e.name))"
            ".filter(u => u.pathname === '/api/dashboard/summary').map(u => u.searchParams.get('part')))"
        )
        assert sorted(json.loads(asked)[:2]) == ["counts", "daily"] and json.loads(asked)[2:] == ["models"]
        assert "355.00 EUR" in await page.eval("document.querySelector('#totals').textContent")

        # The DOM: every series label the seeded store implies.
        legend = await page.eval("document.querySelector('#legend-daily').textContent")
        for channel in ("Paid Search", "Email", "Organic Search", "Paid Social", "Referral"):
            assert channel in legend
        models = await page.eval("document.querySelector('#legend-models').textContent")
        assert all(name in models for name in MODELS)
        assert "winter-sale" in await page.eval("document.querySelector('#chart-campaigns').textContent")
        assert "cr_anna" in await page.eval("document.querySelector('#chart-creators').textContent")
        assert "allow: 10" in await page.eval("document.querySelector('#legend-bots').textContent")
        marks = await page.eval("document.querySelectorAll('#chart-daily rect[data-series]').length")
        assert marks >= 6  # one bar segment per conversion day and channel at least

        # The pixels: every chart drew coloured marks, in as many colours as it has series.
        boxes = await page.eval(
            "JSON.stringify(" + str(CHARTS).replace("'", '"') + ".map(s => {"
            "const r = document.querySelector(s + ' svg').getBoundingClientRect();"
            "return {x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height}; }))"
        )
        for selector, box in zip(CHARTS, json.loads(boxes), strict=True):
            assert box["width"] > 100 and box["height"] > 30, selector
            _, _, rows = await asyncio.to_thread(read_png, await page.screenshot(box))
            assert coloured(rows) > 400, f"{selector} drew almost nothing"
            if selector == "#chart-daily":
                assert palette_colours(rows) >= 5  # five channels credited
            if selector == "#chart-models":
                assert palette_colours(rows) >= 8  # eight models side by side

        # The journey lookup, by the raw user ID: both of alice's devices.
        await look_up(page, "user", "alice")
        rows_text = await page.wait_for(
            "document.querySelector('#journey-result table') && "
            "document.querySelector('#journey-result').innerText",
            "the journey",
        )
        assert "Paid Search" in rows_text and "Email" in rows_text and "2 devices" in rows_text
        assert await page.eval("document.querySelectorAll('#journey-result tbody tr').length") == 2
        # The user key its header shows looks the same journey up, and says it was by the key.
        key = gw.gateway.keys.user_key("alice")
        assert rows_text.startswith(f"{key} · 2 touchpoints · 2 devices\n"), rows_text
        await look_up(page, "user", key)
        by_key = await page.wait_for(
            "document.querySelector('#journey-result').innerText.includes('found by its user key')"
            " && document.querySelector('#journey-result').innerText",
            "the journey by its user key",
        )
        assert by_key.startswith(f"{key} · 2 touchpoints · 2 devices · found by its user key"), by_key
        assert await page.eval("document.querySelectorAll('#journey-result tbody tr').length") == 2

        # Each card's downloads: its report for the page's period, with the page's session.
        links = json.loads(
            await page.eval("JSON.stringify([...document.querySelectorAll('.exports a')].map(a => a.href))")
        )
        # CSV, CSV (;) and NDJSON of seven reports (creators: credits, payouts and their totals;
        # fraud), then of the period's raw touchpoints and conversions (the listings' downloads).
        assert len(links) == 27
        assert all(f"since={PERIOD['since']}" in link and "until=2026-11-11" in link for link in links)
        got = json.loads(
            await page.eval(
                "Promise.all([...document.querySelectorAll('.exports a')].map(a => fetch(a.href).then("
                "async r => [r.status, r.headers.get('content-disposition'),"
                " (await r.text()).split('\\n')[0]]))).then(JSON.stringify)"
            )
        )
        for link, (status, disposition, first_line) in zip(links, got, strict=True):
            assert status == 200 and disposition.startswith("attachment"), (link, status, first_line)
        models_csv = got[3][2]  # every model side by side: one column pair per model
        assert all(f"{name}_conversions" in models_csv for name in MODELS), models_csv
        assert "/api/payouts?" in links[12] and "payout" in got[12][2], got[12]
        assert "table=totals" in links[15] and got[15][2].startswith("currency,payout"), got[15]
        assert got[15][1].startswith('attachment; filename="payouts-totals-'), got[15]
        assert "/api/fraud?" in links[18] and got[18][2].startswith("group,clicks,allow"), got[18]
        assert "/api/touchpoints?" in links[21] and got[21][2].startswith("id,ts,node,visitor_key"), got[21]
        assert got[21][1] == 'attachment; filename="touchpoints-from-2026-11-01-to-2026-11-10.csv"', got[21]
        assert "/api/conversions?" in links[24] and got[24][2].startswith("id,ts,node,name"), got[24]
        # Each card's second CSV for Excel where the list separator is ";": the same header so.
        for comma, semicolon in zip(got[0::3], got[1::3], strict=True):
            assert semicolon[2] == comma[2].replace(",", ";"), (comma, semicolon)  # no "," in a name
        assert all("delimiter=semicolon" in link for link in links[1::3]), links
        labels = await page.eval(
            "[...document.querySelectorAll('#export-daily a')].map(a => a.textContent).join('|')"
        )
        assert labels == "CSV|CSV (;)|NDJSON", labels

        # The browser accepts gzip: the larger answers come compressed (it decoded them above).
        coding = "fetch('/api/touchpoints?format=csv').then(r => r.headers.get('content-encoding'))"
        assert await page.eval(coding) == "gzip"
        # The page's own session reads the API but cannot change anything.
        assert await page.eval("fetch('/api/touchpoints').then(r => r.status)") == 200
        assert await page.eval("fetch('/api/users/alice', {method: 'DELETE'}).then(r => r.status)") == 403

        full = await page.screenshot(
            {
                "x": 0,
                "y": 0,
                "width": WIDTH,
                "height": await page.eval("document.documentElement.scrollHeight"),
            }
        )
        # One conversion name: the totals say which, and every download is of it alone.
        await page.send("Page.navigate", url=gw.admin_url + "/dashboard" + query + "&conversion=purchase")
        await page.wait_for(  # the new page's state: the one before was "ready" too
            "location.search.includes('conversion=purchase') && document.body"
            " && document.body.dataset.state === 'ready'",
            "one conversion's charts",
        )
        assert "Conversions (purchase)6" in await page.eval("document.querySelector('#totals').textContent")
        # Its raw conversions' download says whose (it said "Every conversion", and held purchases).
        said = await page.eval("document.querySelector('#export-conversions').textContent")
        assert said.startswith("Every purchase conversion of the period: "), said
        got = json.loads(
            await page.eval(
                "Promise.all([...document.querySelectorAll('.exports a')].map(a => fetch(a.href).then("
                "r => [a.href, r.status]))).then(JSON.stringify)"
            )
        )
        assert len(got) == 27 and all(status == 200 for _, status in got), got
        # The fraud report counts clicks, whatever the conversion: it takes no conversion name;
        # nor do the raw touchpoints; the raw conversions are of that name.
        reports = [href for href, _ in got if "/api/fraud?" not in href and "/api/touchpoints?" not in href]
        assert all("conversion=purchase" in href or "name=purchase" in href for href in reports), got
        assert all("purchase" not in href for href, _ in got if href not in reports), got
        assert sum("/api/conversions?" in href and "name=purchase" in href for href in reports) == 3, got

        # A period the API refuses (a conversion name longer than any): the page says why
        # instead of drawing. (A model it does not know is told before asking the API.)
        await page.send(
            "Page.navigate",
            url=gw.admin_url + "/dashboard?from=2026-11-01&to=2026-11-10&conversion=" + "x" * 201,
        )
        await page.wait_for("document.body && document.body.dataset.state === 'error'", "the error state")
        said = await page.eval("document.querySelector('#status').textContent")
        assert said.startswith("conversion: expected a conversion name"), said

        # The parts draw as they come: with the comparison held back, the rest is drawn and the
        # status says what is still computing; a part that fails says so at once.
        await page.send(
            "Fetch.enable",
            patterns=[{"urlPattern": "*part=models*"}, {"urlPattern": "*part=counts*"}],
        )
        await page.send(
            "Page.navigate", url=gw.admin_url + "/dashboard" + query.replace("linear", "first_touch")
        )
        await page.wait_for("!!document.querySelector('#chart-daily rect[data-series]')", "the daily chart")

        def held(part: str) -> str:
            return next(rid for url, rid in page.paused.items() if f"part={part}" in url)

        await page.wait_for("true", "a poll, so that the paused requests are seen")
        await page.send("Fetch.continueRequest", requestId=held("counts"))
        await page.wait_for(
            "document.querySelector('#status').textContent === 'Computing the model comparison…'",
            "the status while the comparison computes",
        )
        assert "355.00 EUR" in await page.eval("document.querySelector('#totals').textContent")
        assert await page.eval("document.body.dataset.state") == "loading"
        assert await page.eval("document.querySelectorAll('#chart-models rect').length") == 0
        await page.send("Fetch.continueRequest", requestId=held("models"))
        await page.wait_for("document.body.dataset.state === 'ready'", "the comparison drawn")
        assert await page.eval("document.querySelector('#status').textContent") == ""

        page.paused.clear()
        await page.send(
            "Page.navigate", url=gw.admin_url + "/dashboard" + query.replace("linear", "last_touch")
        )
        await page.wait_for("!!document.querySelector('#chart-daily rect[data-series]')", "the daily chart")
        await page.wait_for("true", "a poll, so that the paused requests are seen")
        body = base64.b64encode(b'{"ok": false, "error": "the counts broke"}').decode()
        await page.send(
            "Fetch.fulfillRequest",
            requestId=held("counts"),
            responseCode=500,
            responseHeaders=[{"name": "Content-Type", "value": "application/json"}],
            body=body,
        )
        await page.wait_for(  # at once, not after the comparison (still held back)
            "document.querySelector('#status').textContent === 'the counts broke'", "the error of one part"
        )
        assert await page.eval("document.body.dataset.state") == "loading"
        await page.send("Fetch.continueRequest", requestId=held("models"))
        await page.wait_for("document.body.dataset.state === 'error'", "the error state after every part")
        assert await page.eval("document.querySelector('#status').textContent") == "the counts broke"
        assert await page.eval("document.querySelectorAll('#chart-models rect').length") > 0
        await page.send("Fetch.disable")

        # The lookup form, before its script runs, is disabled: sent by the browser itself it
        # would put the raw user ID in the page's URL (history, session files).
        page.paused.clear()
        await page.send("Fetch.enable", patterns=[{"urlPattern": "*/static/data.js"}])
        await page.send("Page.navigate", url=gw.admin_url + "/dashboard" + query)
        await page.wait_for("!!document.querySelector('#journey button')", "the lookup form, its script held")
        assert await page.eval("[...document.querySelector('#journey').elements].every(c => c.disabled)")
        await look_up(page, "user", "alice")
        await page.wait_for("location.search !== " + repr(query), "the form sent by the browser")
        assert "alice" not in await page.eval("location.href")
        await page.send("Fetch.disable")  # lets the script load

        # Log out with the page's own button: the session is gone for the API too.
        await page.eval("document.querySelector('form[action=\"/logout\"]').requestSubmit()")
        await page.wait_for("location.pathname === '/login'", "the login form after logging out")
        assert await page.eval("fetch('/api/touchpoints').then(r => r.status)") == 401
        assert page.errors == [], page.errors  # no script error in any of the states above
    # The raw user ID looked up is kept nowhere on the analyst's disk (the browser is closed):
    # not in its disk cache (Cache-Control: no-store), its saved form entries
    # (autocomplete="off") nor its history and session files (the form is never sent as such).
    assert await asyncio.to_thread(files_holding, tmp_path / "profile", b"alice") == []
    assert full.startswith(b"\x89PNG")
    keep = os.environ.get("DASHBOARD_SCREENSHOT")
    target = Path(keep) if keep else tmp_path / "dashboard.png"
    await asyncio.to_thread(target.write_bytes, full)


TEN_DAYS = f"/dashboard?from={PERIOD['since']}&to=2026-11-10"
"""The dashboard of the seeded period's first ten days."""


async def show(page: Page, gw: RunningGateway, target: str = TEN_DAYS) -> None:
    """The admin listener's ``target`` page (the seeded period's first ten days), once its
    charts are drawn."""
    await page.send("Page.navigate", url=gw.admin_url + target)
    await page.wait_for("document.body && document.body.dataset.state === 'ready'", "the charts drawn")


async def sign_out_behind_the_page(page: Page, gw: RunningGateway) -> None:
    """The page's session ends behind its back (as at its expiry, or a restart)."""
    await page.send("Network.enable")
    (cookie,) = (await page.send("Network.getCookies"))["cookies"]
    async with gw.session.post(
        gw.admin_url + "/logout",
        headers={"Cookie": f"{cookie['name']}={cookie['value']}", "Origin": gw.admin_url},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303


async def look_up(page: Page, kind: str, identifier: str) -> None:
    """Submit the journey lookup form for a ``visitor`` or a ``user``."""
    await page.eval(  # a function's own scope: a second lookup on the page declares g again
        f"(g => {{ g.kind.value = {json.dumps(kind)}; g.identifier.value = {json.dumps(identifier)};"
        " g.requestSubmit(); })(document.querySelector('#journey'))"
    )


async def sign_in(page: Page, gw: RunningGateway, start: str = "/login") -> None:
    """Through the login form, as a person would, from the admin listener's ``start`` page."""
    await page.send(
        "Emulation.setDeviceMetricsOverride", width=WIDTH, height=900, deviceScaleFactor=1, mobile=False
    )
    await page.send("Page.navigate", url=gw.admin_url + start)
    await page.wait_for(
        "location.pathname === '/login' && document.readyState === 'complete'", "the login form"
    )
    await page.eval(
        f"document.querySelector('#token').value = {TOKEN!r}; document.querySelector('form').requestSubmit()"
    )
    # Settled: its requests answered. A test that holds requests next (``Fetch.enable``) must
    # not catch those of this page on its way out (on a loaded machine the page the login led
    # to asked for its daily part after a test had begun holding ``part=daily``).
    await page.wait_for(
        "location.pathname === '/dashboard' && document.body"
        " && ['ready', 'error'].includes(document.body.dataset.state)",
        "the dashboard after login",
    )


ODD_NAMES = [
    "very-long-campaign-name-" * 8,
    "Q" * 200,  # no space nor hyphen to break at
    "<img src=x onerror=\"document.title='pwned'\">",
    "Soldes d'été — 夏のセール 🎉🎉🎉🎉🎉🎉",
    "حملة الصيف الكبرى للمتجر",
]


@pytest.mark.timeout(180)
async def test_top_tables_fit_long_odd_and_hostile_names(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """A campaign or creator name of any length, script or markup, and four-digit counts: every
    name and note stays inside its chart (a long name is cut, its tooltip whole), and markup
    is shown as text."""
    gw: RunningGateway = await start_gateway(await upstream_server(origin()))
    events: list[Event] = [  # cr_big: 1,200 landings, so its note has four-digit counts
        _tp(f"{n:032x}", n / 200, "Affiliates", creator_id="cr_big", campaign="bulk") for n in range(1200)
    ]
    for k, name in enumerate(ODD_NAMES):
        events += [_tp(f"{k + 5000:032x}", 1 + k, "Paid Search", campaign=name, creator_id=name)]
    await gw.gateway.store.write(events)
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await show(page, gw)
        for chart in ("#chart-campaigns", "#chart-creators"):
            drawn = json.loads(
                await page.eval(
                    f"(s => JSON.stringify({{width: s.viewBox.baseVal.width,"
                    "texts: [...s.querySelectorAll(':scope > text')].map(t => { const b = t.getBBox();"
                    " return [t.firstChild.nodeValue, t.querySelector('title')?.textContent,"
                    " b.x, b.x + b.width]; })"
                    f"}}))(document.querySelector('{chart} svg'))"
                )
            )
            shown = {title or content: content for content, title, _, _ in drawn["texts"]}
            for name in ODD_NAMES:
                assert name in shown, (chart, name)  # the whole name, in its tooltip
                head, _, tail = shown[name].partition("…")  # cut in the middle, if at all
                assert head and name.startswith(head) and name.endswith(tail), (name, shown[name])
            for content, _, left, right in drawn["texts"]:
                assert left >= -0.5 and right <= drawn["width"] + 0.5, (chart, content, left, right)
        assert "…" in shown[ODD_NAMES[0]]  # the long name was cut to fit
        assert any(content.startswith("1,200 · 1,200 vis") for content, _, _, _ in drawn["texts"])
        totals = await page.eval("document.querySelector('#totals').textContent")
        assert "Touchpoints1,205" in totals  # thousands apart, whatever the browser's language
        assert await page.eval("document.title") != "pwned"
        # The journey of the visitor with the unbreakable name: the table wraps it, the page
        # does not grow sideways.
        await look_up(page, "visitor", f"{5001:032x}")
        await page.wait_for("!!document.querySelector('#journey-result table')", "the journey")
        assert "QQQQ" in await page.eval("document.querySelector('#journey-result').textContent")
        widths = await page.eval(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert widths[0] <= widths[1], widths
        assert await page.eval("document.querySelectorAll('.chart img').length") == 0


async def told_before_asking(page: Page, gw: RunningGateway, query: str, told: str) -> None:
    """The dashboard at ``query`` says ``told`` of its period without asking the API, the
    form still holding the model and conversion asked for."""
    await page.send("Page.navigate", url=gw.admin_url + "/dashboard" + query)
    await page.wait_for(
        f"location.search.startsWith({query!r}) && document.body && document.body.dataset.state === 'error'",
        "the error state",
    )
    assert told in await page.eval("document.querySelector('#status').textContent")
    asked = await page.eval(
        "performance.getEntriesByType('resource').filter(e => e.name.includes('/api/')).length"
    )
    assert asked == 0  # told before asking
    assert await page.eval("document.querySelector('#period').model.value") == "data_driven"
    assert await page.eval("document.querySelector('#period').conversion.value") == "purchase"


@pytest.mark.timeout(180)
async def test_period_mistakes_are_told_in_the_forms_words(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """From after To, or more days than the dashboard shows: the page says so in the form's
    terms without asking the API, and the form still holds the model and conversion asked
    for, so correcting the dates keeps them; so is a day the calendar has not. An empty
    period does not claim bot scoring is missing; an empty journey lookup asks for an ID."""
    gw = await seeded_gateway(start_gateway, upstream_server)
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        chosen = "&model=data_driven&conversion=purchase"
        for query, told in [
            ("?from=2026-11-10&to=2026-11-01", "From (2026-11-10) is after To (2026-11-01)"),
            (
                "?from=2026-01-01&to=2026-11-10",
                "From 2026-01-01 to 2026-11-10 is 314 days: the dashboard shows at most 92",
            ),
            # Days the API does not count were refused in its words ("until: … '+010000-01'").
            ("?from=1900-01-01&to=1900-01-05", "The dashboard shows days from 1970-01-01 to 9999-12-30"),
            ("?from=9999-12-30&to=9999-12-31", "The dashboard shows days from 1970-01-01 to 9999-12-30"),
            # A digit too many in a year (the date field takes years up to 275760): it was taken
            # as no date given, and the default period shown without a word.
            ("?from=20261-11-01&to=2026-11-10", "The dashboard shows days from 1970-01-01 to 9999-12-30"),
            ("?from=2026-11-01&to=20261-11-10", "The dashboard shows days from 1970-01-01 to 9999-12-30"),
            ("?from=20261-11-10&to=20261-11-10", "The dashboard shows days from 1970-01-01 to 9999-12-30"),
        ]:
            await told_before_asking(page, gw, query + chosen, told)
            shown = await page.eval("(f => [f.from.value, f.to.value])(document.querySelector('#period'))")
            assert "?from={}&to={}".format(*shown) == query, shown  # the dates asked for, as typed
        # A day the calendar has not (a link made for "the month's last day", a bookmark edited):
        # it was taken as no date given, and the default period shown without a word
        # (to=2026-11-31 showed 1 November to today, December's conversions among them).
        for query, told in [
            (
                "?from=2026-11-01&to=2026-11-31",
                "To (2026-11-31) is no day of the calendar: November 2026 has 30 days.",
            ),
            (
                "?from=2026-02-29&to=2026-03-10",
                "From (2026-02-29) is no day of the calendar: February 2026 has 28 days.",
            ),
            ("?from=2026-13-01&to=2026-11-10", "From (2026-13-01) is no day of the calendar: no month 13."),
        ]:
            await told_before_asking(page, gw, query + chosen, told)
        # To alone, no day of the calendar: From is counted back from it, which threw on a month
        # 13 or a day 00 (a date the browser cannot make), the page left loading without a word.
        # February 29th of a year that has none, 1900 and 2100 alike, is told as any other.
        for query, told in [
            ("?to=2026-13-01", "To (2026-13-01) is no day of the calendar: no month 13."),
            ("?to=2026-11-00", "To (2026-11-00) is no day of the calendar: November 2026 has 30 days."),
            ("?to=2026-11-31", "To (2026-11-31) is no day of the calendar: November 2026 has 30 days."),
            (
                "?from=2100-02-29&to=2100-03-10",
                "From (2100-02-29) is no day of the calendar: February 2100 has 28 days.",
            ),
            (
                "?from=1900-02-29&to=1900-03-10",
                "From (1900-02-29) is no day of the calendar: February 1900 has 28 days.",
            ),
        ]:
            await told_before_asking(page, gw, query + chosen, told)
        # The dates corrected in the form: the model and conversion asked for are kept.
        await page.eval(
            f"const f = document.querySelector('#period'); f.from.value = {PERIOD['since']!r};"
            "f.to.value = '2026-11-10'; f.requestSubmit()"
        )
        await page.wait_for(
            "location.search.includes('from=2026-11-01') && document.body"
            " && document.body.dataset.state === 'ready'",
            "the corrected period drawn",
        )
        assert "model=data_driven" in await page.eval("location.search")
        assert "conversion=purchase" in await page.eval("location.search")
        assert await page.eval("document.querySelector('#period').model.options.length") == len(MODELS)
        names = await page.eval("[...document.querySelector('#period').conversion.options].map(o => o.value)")
        assert names == ["", "purchase"]  # filled from the API, nothing twice
        # A model the API refuses: the form offers every model, linear chosen, not the bad name.
        await page.send("Page.navigate", url=gw.admin_url + "/dashboard?model=bogus")
        await page.wait_for(
            "location.search === '?model=bogus' && document.body && document.body.dataset.state === 'error'",
            "the refused model",
        )
        models = await page.eval("[...document.querySelector('#period').model.options].map(o => o.value)")
        assert models == list(MODELS)
        assert await page.eval("document.querySelector('#period').model.value") == "linear"
        # Told in the form's words before asking (it was the API's: "model: expected one of …").
        assert await page.eval("document.querySelector('#status').textContent") == (
            f'Model "bogus" is not one the dashboard knows: choose {", ".join(MODELS)}.'
        )
        asked = await page.eval(
            "performance.getEntriesByType('resource').filter(e => e.name.includes('/api/')).length"
        )
        assert asked == 0

        # A period without touchpoints: no claim that bot scoring is not installed.
        await page.send("Page.navigate", url=gw.admin_url + "/dashboard?from=2025-01-01&to=2025-01-31")
        await page.wait_for(
            "location.search.includes('2025') && document.body && document.body.dataset.state === 'ready'",
            "an empty period",
        )
        assert "not installed" not in await page.eval("document.querySelector('#bots-note').textContent")
        assert await page.eval("document.querySelector('#table-models').rows.length") == 0  # no bare header

        # An ID of spaces alone: the form asks for an ID (not "no such endpoint").
        await look_up(page, "visitor", "   ")
        said = await page.wait_for(
            "document.querySelector('#journey-result').textContent", "the lookup's answer"
        )
        assert said == "Enter a visitor ID or cookie value, or a user ID."

        # Far longer than any ID (a page's text pasted by mistake): told in the form's words, not
        # the listener's ("the request target is longer than the listener accepts (8190 bytes)").
        for kind, told in (
            (
                "visitor",
                "Too long to look up (20,000 characters): a visitor ID has at most 2,000; from a Cookie"
                " header, paste its gw_vid=… cookie alone.",
            ),
            ("user", "Too long to look up (20,000 characters): a user ID has at most 256."),
        ):
            await page.eval("document.querySelector('#journey-result').replaceChildren()")
            await look_up(page, kind, "y" * 20_000)
            said = await page.wait_for(
                "(t => t !== 'Looking up…' && t)(document.querySelector('#journey-result').textContent)",
                "the lookup's answer",
            )
            assert said == told, said


@pytest.mark.timeout(180)
async def test_a_long_journey_says_it_shows_only_its_first_touchpoints_and_conversions(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    gw: RunningGateway = await start_gateway(await upstream_server(origin()))
    visitor = f"{77:032x}"
    await gw.gateway.store.write(
        [_tp(visitor, n / 1000, "Paid Search", campaign="c") for n in range(JOURNEY_LIMIT + 5)]
        + [_conv(visitor, n / 1000, 1.0) for n in range(JOURNEY_LIMIT + 2)]
    )
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await page.wait_for("document.body && document.body.dataset.state === 'ready'", "the page")
        await look_up(page, "visitor", visitor)
        said = await page.wait_for(
            "document.querySelector('#journey-result table')"
            " && document.querySelector('#journey-result p').textContent",
            "the journey",
        )
        shown = f"the first {JOURNEY_LIMIT} of {JOURNEY_LIMIT + 5} touchpoints"
        shown += " (there are more; the last touch is the latest)"
        assert said == f"{visitor} · {shown}"
        # Its conversions cut alike: the heading said "Conversions" over the first 1000 alone.
        heading = await page.eval("document.querySelector('#journey-result h3').textContent")
        assert heading == f"Conversions (the first {JOURNEY_LIMIT}; there are more)", heading


MANY_CHANNELS = [
    "Paid Search", "Paid Social", "Paid Video", "Paid Shopping", "Paid Other", "Display", "Email",
    "Affiliates", "Organic Search", "Organic Social", "Organic Video", "Organic Shopping", "Referral",
    "AI Assistants", "SMS", "Mobile Push Notifications", "Audio", "Cross-network",
]  # fmt: skip


@pytest.mark.parametrize("width", [WIDTH, 360])
@pytest.mark.timeout(180)
async def test_channel_names_under_the_model_comparison_never_run_into_each_other(
    chromium: str, start_gateway, upstream_server, tmp_path: Path, width: int
) -> None:
    """Eighteen channels: their names are wider than their groups, so they are slanted, and
    every one stays inside the chart; each channel has a colour of its own. On a 360-pixel
    phone the names, slanted at 35 degrees 12 units apart, were drawn over each other."""
    gw: RunningGateway = await start_gateway(await upstream_server(origin()))
    events: list[Event] = []
    for n, channel in enumerate(MANY_CHANNELS):
        events += [_tp(f"{n + 1:032x}", 1 + n / 10, channel), _conv(f"{n + 1:032x}", 2 + n / 10, 10.0)]
    await gw.gateway.store.write(events)
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await page.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=800,
            deviceScaleFactor=1,
            mobile=width < WIDTH,
        )
        await show(page, gw)
        drawn = json.loads(
            await page.eval(
                "(svg => { const box = r => [r.left, r.top, r.right, r.bottom];"
                f" const names = new Set({json.dumps(MANY_CHANNELS)});"
                " return JSON.stringify({chart: box(svg.getBoundingClientRect()),"
                " labels: [...svg.querySelectorAll(':scope > text')].filter(t => names.has(t.textContent))"
                ".map(t => [t.textContent, !!t.getAttribute('transform'), box(t.getBoundingClientRect())]),"
                " slants: [...svg.querySelectorAll(':scope > text[transform]')].map(t =>"
                " [Number(t.getAttribute('x')), t.getAttribute('transform'),"
                " Number(t.getAttribute('font-size'))])});"
                "})(document.querySelector('#chart-models svg'))"
            )
        )
        swatches = await page.eval(
            "[...document.querySelectorAll('#legend-daily .legend-item rect')]"
            ".map(r => r.getAttribute('fill'))"
        )
    assert len(swatches) == len(MANY_CHANNELS) == len(set(swatches))  # one colour per channel
    labels = drawn["labels"]
    assert sorted(name for name, _, _ in labels) == sorted(MANY_CHANNELS)
    left, top, right, bottom = drawn["chart"]
    for name, _, (x0, y0, x1, y1) in labels:  # inside the chart, none cut off
        assert left - 0.5 <= x0 and x1 <= right + 0.5 and top - 0.5 <= y0 and y1 <= bottom + 0.5, name
    slanted = all(s for _, s, _ in labels)
    for (a, _, box_a), (b, _, box_b) in itertools.pairwise(labels):
        assert slanted or box_a[2] <= box_b[0], (a, b)  # level names: side by side, apart
    # Slanted names, parallel: apart across the slant by at least their size (the chart's units).
    for (x_a, turn, size), (x_b, _, _) in itertools.pairwise(drawn["slants"]):
        angle = math.radians(-float(turn.removeprefix("rotate(").split()[0]))
        assert (x_b - x_a) * math.sin(angle) >= size, (width, x_a, x_b, turn)


@pytest.mark.timeout(180)
async def test_signed_out_on_the_page_the_login_comes_back_to_its_period(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    gw = await seeded_gateway(start_gateway, upstream_server)
    query = f"?from={PERIOD['since']}&to=2026-11-10&model=first_touch"
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await show(page, gw, "/dashboard" + query)
        # The session ends behind the page's back (as at its expiry, or a restart).
        await sign_out_behind_the_page(page, gw)
        await look_up(page, "user", "alice")
        await page.wait_for(
            "location.pathname === '/login' && document.readyState === 'complete'", "the login"
        )
        assert "alice" not in await page.eval("location.href")
        await page.eval(
            f"document.querySelector('#token').value = {TOKEN!r};"
            "document.querySelector('form').requestSubmit()"
        )
        await page.wait_for("location.pathname === '/dashboard'", "the dashboard after login")
        assert await page.eval("location.search") == query


SAID = (
    "JSON.stringify([...document.querySelectorAll('main [role=alert], main [role=status]')]"
    ".map(p => [p.getAttribute('role'), p.textContent]))"
)
"""What the login page says above its form: each alert or status, with its text."""


@pytest.mark.timeout(180)
async def test_the_login_says_why_it_is_shown_and_a_refusal_is_no_form_to_send_again(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """A wrong token was answered by the POST's own page: reloaded, the browser asked to send
    the form again. And a login after the session ended read as a first visit's."""
    gw = await seeded_gateway(start_gateway, upstream_server)
    login_ready = "location.pathname === '/login' && document.readyState === 'complete'"
    async with browser(chromium, tmp_path / "profile") as page:
        await page.send("Page.navigate", url=gw.admin_url + "/dashboard")
        await page.wait_for(login_ready, "the login form")
        assert json.loads(await page.eval(SAID)) == []  # a first visit: nothing to say
        await page.eval(
            "document.querySelector('#token').value = 'wrong'; document.querySelector('form').requestSubmit()"
        )
        await page.wait_for(
            f"{login_ready} && location.search === '?why=wrong'", "the login page of a GET", tries=100
        )
        assert json.loads(await page.eval(SAID)) == [["alert", "Wrong admin token."]]
        await page.send("Page.reload")  # a GET again: no form sent, the same words
        await page.wait_for(f"{login_ready} && !!document.querySelector('main [role=alert]')", "reloaded")
        assert json.loads(await page.eval(SAID)) == [["alert", "Wrong admin token."]]
        assert await page.eval("location.search") == "?why=wrong"
        await sign_in(page, gw, "/login?why=wrong")
        await show(page, gw)
        # The session ends behind the page's back: the page's next request, and the dashboard
        # opened again (the browser still sends the ended session's cookie), say so.
        await sign_out_behind_the_page(page, gw)
        await look_up(page, "user", "alice")
        await page.wait_for(f"{login_ready} && !!document.querySelector('main p[role]')", "the login")
        ended = [["status", "Your session ended; sign in again."]]
        assert json.loads(await page.eval(SAID)) == ended
        await page.send("Page.navigate", url=gw.admin_url + TEN_DAYS)
        await page.wait_for(f"{login_ready} && !!document.querySelector('main p[role]')", "the login")
        assert json.loads(await page.eval(SAID)) == ended
        await page.eval(
            f"document.querySelector('#token').value = {TOKEN!r};"
            " document.querySelector('form').requestSubmit()"
        )
        await page.wait_for("location.pathname === '/dashboard'", "the period it came from")
        assert await page.eval("location.pathname + location.search") == TEN_DAYS
    assert page.errors == [], page.errors


@pytest.mark.timeout(180)
async def test_times_in_the_report_zone_and_amounts_to_their_currencys_minor_unit(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """The journey's times used to be UTC while the charts counted Tokyo's days, and every
    amount had two decimals: ¥5,000 read 5,000.00 JPY, and 1.250 KWD lost its last fils."""
    gw: RunningGateway = await start_gateway(
        await upstream_server(origin()), '[attribution]\ntimezone = "Asia/Tokyo"\n'
    )
    visitor = f"{78:032x}"
    touch = _tp(visitor, 1, "Paid Search", campaign="c")  # 2026-11-02 00:00 UTC
    yen, dinar = _conv(visitor, 1.5, 0), _conv(visitor, 1.75, 0)  # 12:00 and 18:00 UTC
    await gw.gateway.store.write(
        [touch, replace(yen, value=5000.0, currency="JPY"), replace(dinar, value=1.25, currency="KWD")]
    )
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await show(page, gw)
        totals = await page.eval("document.querySelector('#totals').innerText")
        assert "5,000 JPY" in totals and "1.250 KWD" in totals and ".00 JPY" not in totals
        await look_up(page, "visitor", visitor)
        await page.wait_for("!!document.querySelector('#journey-result li')", "the journey's conversions")
        head = await page.eval("document.querySelector('#journey-result th').textContent")
        first = await page.eval("document.querySelector('#journey-result td').textContent")
        conversions = await page.eval(
            "[...document.querySelectorAll('#journey-result li')].map(li => li.textContent)"
        )
    assert (head, first) == ("Time (Asia/Tokyo)", "2026-11-02 09:00:00 GMT+9")
    assert conversions == [
        "2026-11-02 21:00:00 GMT+9 · purchase · 5,000 JPY",
        "2026-11-03 03:00:00 GMT+9 · purchase · 1.250 KWD",
    ]


@pytest.mark.timeout(180)
async def test_a_download_saves_the_report_or_says_why_not(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """A download link was left to the browser, which saved nothing and said nothing when the
    API refused it: after the session ended, a click did nothing at all."""
    gw = await seeded_gateway(start_gateway, upstream_server)
    saved = tmp_path / "downloads"
    await asyncio.to_thread(saved.mkdir)

    def files() -> list[Path]:
        return sorted(saved.iterdir())

    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await show(page, gw)
        await page.send("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(saved))
        # A double click computes and saves the report once (the page's fetches counted).
        await page.eval(
            "window.fetched = []; const fetchOf = window.fetch;"
            " window.fetch = (url, ...rest) => { fetched.push(String(url)); return fetchOf(url, ...rest); }"
        )
        await page.eval("(a => { a.click(); a.click(); })(document.querySelector('#export-daily a'))")
        for _ in range(100):  # a deadline, not a timing assertion
            if [p for p in await asyncio.to_thread(files) if p.suffix == ".csv"]:
                break
            await asyncio.sleep(0.1)
        (file,) = await asyncio.to_thread(files)
        assert file.name == "timeseries-linear-channel-from-2026-11-01-to-2026-11-10.csv"
        # With a byte order mark, for Excel (bom=true in the link): the same text after it.
        text = await asyncio.to_thread(file.read_text, encoding="utf-8")
        assert text.startswith("\ufeffday,group,currency,conversions,value"), text[:40]

        # A click with a modifier is the browser's (a new tab, the address saved as…): not fetched.
        await page.eval(
            "document.querySelector('#export-campaigns a').dispatchEvent(new MouseEvent('click',"
            " {bubbles: true, cancelable: true, ctrlKey: true}))"
        )
        for _ in range(100):  # the browser downloads it itself (a deadline, not a timing assertion)
            if len([p for p in await asyncio.to_thread(files) if p.suffix == ".csv"]) == 2:
                break
            await asyncio.sleep(0.1)
        assert await page.eval("document.querySelector('#export-campaigns [role=status]').textContent") == ""
        native = saved / "attribution-linear-campaign-from-2026-11-01-to-2026-11-10.csv"
        assert await asyncio.to_thread(files) == [native, file]
        fetched = await page.eval("fetched")
        assert len(fetched) == 1 and "/api/attribution/timeseries?" in fetched[0], fetched
        # Refused: the card says why.
        await page.eval(
            "const a = document.querySelector('#export-models a');"
            "a.href = a.href.replace('model=all', 'model=nonsense'); a.click()"
        )
        said = await page.wait_for(
            "document.querySelector('#export-models .error')?.textContent", "the refusal"
        )
        assert said.startswith("not downloaded: model: "), said

        # Signed out behind the page's back: the login, which comes back to the period.
        await sign_out_behind_the_page(page, gw)
        await page.eval("document.querySelector('#export-payouts a').click()")
        await page.wait_for("location.pathname === '/login'", "the login")
        assert "next=%2Fdashboard%3Ffrom%3D2026-11-01" in await page.eval("location.search")
    assert await asyncio.to_thread(files) == [native, file]  # the double click saved one


@pytest.mark.timeout(180)
async def test_the_csv_and_the_semicolon_csv_are_saved_as_two_files(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """``CSV`` and ``CSV (;)`` of one report were saved under one name: the second as
    ``… (1).csv``, or over the first."""
    gw = await seeded_gateway(start_gateway, upstream_server)
    saved = tmp_path / "downloads"
    await asyncio.to_thread(saved.mkdir)
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await show(page, gw)
        await page.send("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(saved))
        for count, label in enumerate(("CSV", "CSV (;)"), 1):
            await page.eval(
                "[...document.querySelectorAll('#export-daily a')].find(a => a.textContent === "
                + json.dumps(label)
                + ").click()"
            )
            for _ in range(100):  # a deadline, not a timing assertion
                found = sorted(await asyncio.to_thread(lambda: [p.name for p in saved.glob("*.csv")]))
                if len(found) == count:
                    break
                await asyncio.sleep(0.1)
    assert found == [
        "timeseries-linear-channel-from-2026-11-01-to-2026-11-10-semicolon.csv",
        "timeseries-linear-channel-from-2026-11-01-to-2026-11-10.csv",
    ]
    text = await asyncio.to_thread((saved / found[0]).read_text, encoding="utf-8")
    assert text.startswith("\ufeffday;group;currency;conversions;value"), text[:40]


@pytest.mark.timeout(180)
async def test_on_a_phone_the_charts_text_is_readable_and_nothing_widens_the_page(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """On a phone the charts were drawn at a desktop's scale and shrunk to the card: their
    labels were 4 pixels high. The journey's table ran off the page."""
    gw = await seeded_gateway(start_gateway, upstream_server)
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await page.send(
            "Emulation.setDeviceMetricsOverride", width=390, height=844, deviceScaleFactor=1, mobile=True
        )
        await show(page, gw)
        await look_up(page, "user", "alice")
        await page.wait_for("!!document.querySelector('#journey-result table')", "the journey")
        drawn = json.loads(
            await page.eval(
                "JSON.stringify(['#chart-daily', '#chart-models'].map(id => [...document.querySelectorAll("
                "id + ' svg > text')].map(t => { const r = t.getBoundingClientRect();"
                " return [t.textContent, r.left, r.right, r.height]; })))"
            )
        )
        page_width = await page.eval("[document.documentElement.scrollWidth, window.innerWidth]")
        # The top tables were drawn 360 units wide whatever the card: shrunk on a phone.
        scales = await page.eval(
            "['#chart-campaigns', '#chart-creators'].map(id => {"
            " const s = document.querySelector(id + ' svg');"
            " return s.getBoundingClientRect().width / s.viewBox.baseVal.width; })"
        )
        # A journey's time was broken anywhere to fit ("2026-11-02 00:00" over ":00"): one line.
        time_lines = await page.eval(
            "[...document.querySelectorAll('#journey-result tbody tr')].map(tr => {"
            " const r = document.createRange(); r.selectNodeContents(tr.cells[0]);"
            " return new Set([...r.getClientRects()].map(b => Math.round(b.top))).size; })"
        )
        # The journey's table: inside its card, or scrolled there (its box wider, clipped).
        journey = await page.eval(
            "(t => { const card = t.closest('.card').getBoundingClientRect();"
            " const box = t.parentElement.getBoundingClientRect();"
            " return [box.right <= card.right, getComputedStyle(t.parentElement).overflowX,"
            " t.getBoundingClientRect().right <= card.right]; })"
            "(document.querySelector('#journey-result table'))"
        )
    daily, models = drawn
    assert daily and models
    for name, _, _, height in daily + models:
        assert height >= 10, (name, height)  # 11-unit text drawn at (about) its size
    days = [(left, right) for name, left, right, _ in daily if name[:2] == "11"]  # "11-03": a day
    assert len(days) >= 3
    for (_, right), (left, _) in itertools.pairwise(sorted(days)):
        assert right <= left, days  # day labels apart
    assert page_width[0] <= page_width[1], page_width
    assert journey[0] and (journey[1] == "auto" or journey[2]), journey
    assert all(scale >= 0.97 for scale in scales), scales  # drawn at (about) their size
    assert time_lines == [1, 1], time_lines


@pytest.mark.timeout(180)
async def test_the_daily_chart_s_numbers_are_readable_without_hovering(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """Each day's credited conversions per channel were only in the bars' tooltips (and the
    CSV): folded under the chart now, a row per day that has any."""
    gw = await seeded_gateway(start_gateway, upstream_server)
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await show(page, gw)
        assert await page.eval("document.querySelector('#numbers-daily').hidden") is False
        await page.eval("document.querySelector('#numbers-daily summary').click()")
        table = json.loads(
            await page.eval(
                "JSON.stringify([...document.querySelectorAll('#table-daily tr')]"
                ".map(tr => [...tr.children].map(c => c.textContent)))"
            )
        )
        shown = await page.eval("document.querySelector('#table-daily').getBoundingClientRect().height")
        legend = await page.eval(
            "[...document.querySelectorAll('#legend-daily .legend-item')].map(i => i.textContent)"
        )
        total = await page.eval("document.querySelector('#totals').innerText")
    head, rows = table[0], table[1:]
    assert head == ["Day", *legend, "Total"] and shown > 0
    assert rows and all(row[0].startswith("2026-11-") for row in rows)
    assert [row[0] for row in rows] == sorted(row[0] for row in rows)
    for row in rows:  # each day's cells add up to its total
        cells = [float(c) for c in row[1:-1] if c != "\u2013"]  # an en dash: none
        assert abs(sum(cells) - float(row[-1])) < 0.02, row
    assert f"Conversions\n{round(sum(float(row[-1]) for row in rows))}" in total


@pytest.mark.timeout(180)
async def test_the_hour_the_clocks_go_back_is_two_moments_and_halves_round_to_even(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """New York's 01:30 on 1 November 2026 is 05:30Z and 06:30Z: the journey showed both as
    01:30:00. An amount on a half (0.125 EUR) showed rounded up, where the reports round it to
    even (0.12)."""
    gw: RunningGateway = await start_gateway(
        await upstream_server(origin()), '[attribution]\ntimezone = "America/New_York"\n'
    )
    visitor = f"{79:032x}"
    before, after = _tp(visitor, 5.5 / 24, "Email"), _tp(visitor, 6.5 / 24, "Paid Search")
    await gw.gateway.store.write([before, after, replace(_conv(visitor, 0.5, 0), value=0.125)])
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await show(page, gw)
        await look_up(page, "visitor", visitor)
        await page.wait_for("!!document.querySelector('#journey-result li')", "the journey's conversions")
        times = await page.eval(
            "[...document.querySelectorAll('#journey-result tbody tr')].map(tr => tr.cells[0].textContent)"
        )
        (conversion,) = await page.eval(
            "[...document.querySelectorAll('#journey-result li')].map(li => li.textContent)"
        )
    assert times == ["2026-11-01 01:30:00 GMT-4", "2026-11-01 01:30:00 GMT-5"]
    assert conversion == "2026-11-01 07:00:00 GMT-5 · purchase · 0.12 EUR"


async def press(page: Page, key: str, code: int) -> None:
    """A key pressed and released, as a keyboard sends it (Tab, Enter)."""
    await page.send(
        "Input.dispatchKeyEvent", type="rawKeyDown", key=key, code=key, windowsVirtualKeyCode=code
    )
    if key == "Enter":
        await page.send("Input.dispatchKeyEvent", type="char", text="\r", key=key, windowsVirtualKeyCode=code)
    await page.send("Input.dispatchKeyEvent", type="keyUp", key=key, code=key, windowsVirtualKeyCode=code)


@pytest.mark.timeout(180)
async def test_keyboard_focus_is_seen_and_a_screen_reader_reads_the_charts_numbers(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """The keyboard's focus was the browser's 1-pixel dark ring, lost on the blue buttons; the
    top tables and the bot share were one image each to a screen reader, named "Top campaigns"
    and nothing more: their names and numbers were not read."""
    gw = await seeded_gateway(start_gateway, upstream_server)
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await show(page, gw)
        focused: list[list[Any]] = []
        for _ in range(60):  # every control once, in the page's order (a date field takes four)
            await press(page, "Tab", 9)
            focused.append(
                await page.eval(
                    "(e => { const s = getComputedStyle(e);"
                    " return [e.tagName, e.name || e.textContent.trim(), s.outlineStyle, s.outlineWidth,"
                    " e.matches(':focus-visible')]; })"
                    "(document.activeElement)"
                )
            )
            if focused[-1][0] == "BODY" or focused[-1][1] == "Look up journey":
                break
        await page.send("Accessibility.enable")
        tree = (await page.send("Accessibility.getFullAXTree"))["nodes"]
    # A date field's calendar button, inside the field, had the browser's own thin dark ring (the
    # field itself is then not :focus-visible): the field now has the blue ring around it.
    pickers = [
        (tag, name, style, width)
        for tag, name, style, width, visible in focused
        if tag == "INPUT" and not visible
    ]
    assert [name for *_, name, _, _ in pickers] == ["from", "to"], focused
    assert {(style, width) for *_, style, width in pickers} == {("solid", "2px")}, pickers
    reached = [(tag, name) for tag, name, _, _, visible in focused if visible]
    for control in [
        ("BUTTON", "Show"),
        ("BUTTON", "Log out"),
        ("A", "CSV"),
        ("INPUT", "identifier"),
        ("BUTTON", "Look up journey"),
    ]:
        assert control in reached, (control, reached)
    for tag, name, style, width, visible in focused:
        assert not visible or (style, width) == ("solid", "2px"), (tag, name, style, width)
    images = [n.get("name", {}).get("value", "") for n in tree if n.get("role", {}).get("value") == "image"]
    said = " | ".join(images)
    assert "Top campaigns. winter-sale: 3 landings, 3 visitors, 3 conversions; launch: 2 landings" in said, (
        said
    )
    assert "Top creators. cr_anna: 2 landings, 2 visitors, 2 conversions; cr_ben: 1 landing" in said, said
    assert "Bot share. allow: 10 (100.0 %)." in said, said
    assert "Conversions by channel per day (each day's numbers: the table below" in said, said


@pytest.mark.timeout(180)
async def test_a_period_of_one_day_draws_a_bar_not_a_wall(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """One day's conversions were one bar 70 % of the chart wide (600 units of 848)."""
    gw = await seeded_gateway(start_gateway, upstream_server)
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await show(page, gw, "/dashboard?from=2026-11-04&to=2026-11-04")
        widths = await page.eval(
            "[...document.querySelectorAll('#chart-daily rect[data-series]')].map(r => r.width.baseVal.value)"
        )
        label = await page.eval("document.querySelector('#chart-daily svg > text:last-of-type').textContent")
    assert widths and all(w <= 48 for w in widths), widths
    assert label == "11-04"


NO_DATA = {
    "chart-daily": "No conversions in this period.",
    "chart-models": "No conversions in this period.",
    "chart-campaigns": "No campaigns in this period.",
    "chart-creators": "No creators in this period.",
    "chart-bots": "No touchpoints in this period.",
    "chart-learnt": "No journeys in this period: data_driven learnt nothing.",
}


@pytest.mark.timeout(180)
async def test_the_first_day_after_install_says_no_data_yet_everywhere(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """An empty store: every card says there is nothing yet, no number reads NaN, undefined or
    Infinity, and the page's script raises nothing."""
    gw: RunningGateway = await start_gateway(await upstream_server(origin()))
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await page.wait_for("document.body && document.body.dataset.state === 'ready'", "the page")
        charts = await page.eval(
            "Object.fromEntries([...document.querySelectorAll('.chart')].map(c => [c.id, c.innerText]))"
        )
        totals = await page.eval("document.querySelector('#totals').innerText")
        text = await page.eval("document.body.innerText")
        status = await page.eval("document.querySelector('#status').textContent")
        learnt = await page.eval("document.querySelector('#learnt').innerText")
        legends = await page.eval(
            "Object.fromEntries([...document.querySelectorAll('.legend')].map(c => [c.id, c.innerText]))"
        )
    assert charts == NO_DATA
    # Nothing compared, nothing keyed: the comparison's legend listed all 8 models under "No
    # conversions in this period.".
    assert legends == {"legend-daily": "", "legend-models": "", "legend-bots": ""}, legends
    # What data_driven learnt: that there were no journeys, said once (until 2026-12-07 also "From
    # 0 journeys of the period: 0 converting, 0 not converting." above it), no table of nothing.
    assert [line for line in learnt.split("\n") if line] == [
        "What data_driven learnt",
        "No journeys in this period: data_driven learnt nothing.",
    ], learnt
    assert totals.split("\n") == [
        "Touchpoints",
        "0",
        "Visitors",
        "0",
        "Conversions",
        "0",
        "Conversion value",
        "\u2013",
    ]
    assert status == "" and not any(word in text for word in ("NaN", "undefined", "Infinity", "null"))
    assert page.errors == [], page.errors


LONG_CONVERSION = "checkout_completed_" + "annual_subscription_plan_" * 7  # 194 characters, no space


@pytest.mark.timeout(180)
async def test_a_long_conversion_name_does_not_widen_the_page(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """A conversion name of 194 characters without a space, offered in the form's list (as wide
    as its longest option) and, chosen, in the totals: the page grew sideways (1,513 pixels on
    a 1,280-pixel desktop and on a 390-pixel phone)."""
    gw = await seeded_gateway(start_gateway, upstream_server)
    visitor = f"{4242:032x}"
    await gw.gateway.store.write(
        [_tp(visitor, 2, "Email"), replace(_conv(visitor, 2.2, 10.0), name=LONG_CONVERSION)]
    )
    widths = []
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        for width in (WIDTH, 390):
            await page.send(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=844,
                deviceScaleFactor=1,
                mobile=width < WIDTH,
            )
            for chosen in ("", f"&conversion={LONG_CONVERSION}"):
                query = f"?from={PERIOD['since']}&to=2026-11-10{chosen}"
                await page.send("Page.navigate", url=gw.admin_url + "/dashboard" + query)
                await page.wait_for(
                    f"location.search === {query!r} && document.body"
                    " && document.body.dataset.state === 'ready'",
                    "the charts drawn",
                )
                widths.append(
                    await page.eval(
                        "[innerWidth, document.documentElement.scrollWidth,"
                        " document.querySelector('#period').conversion.value.length]"
                    )
                )
    assert [chosen for _, _, chosen in widths] == [0, len(LONG_CONVERSION)] * 2
    assert all(scrolled <= viewport for viewport, scrolled, _ in widths), widths
    assert page.errors == [], page.errors


async def held(page: Page, part: str) -> str:
    """The request ID of the held request whose URL holds ``part``, once the page has made it."""
    for _ in range(600):  # a deadline, not a timing assertion (a loaded machine: a minute)
        await page.eval("1")  # reads the events that came meanwhile
        found = [rid for url, rid in page.paused.items() if part in url]
        if found:
            return found[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"never held a request for {part}")


@pytest.mark.timeout(180)
async def test_an_answer_that_is_not_the_apis_or_none_is_told_in_words(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """A proxy in front of the gateway that times out answers with its own HTML page: the status
    line said "Unexpected token '<', "<html><bod"... is not valid JSON"; no answer at all (the
    gateway restarting) said "Failed to fetch", and a download "not downloaded: HTTP 502"."""
    gw = await seeded_gateway(start_gateway, upstream_server)
    html = base64.b64encode(b"<html><body><h1>504 Gateway Time-out</h1></body></html>").decode()
    query = f"?from={PERIOD['since']}&to=2026-11-10"
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        said = []
        for answer in ("a proxy's page", "none"):
            page.paused.clear()
            await page.send("Fetch.enable", patterns=[{"urlPattern": "*part=counts*"}])
            await page.send(
                "Page.navigate", url=gw.admin_url + "/dashboard" + query + f"&model=first_touch&x={len(said)}"
            )
            counts = await held(page, "part=counts")
            if answer == "none":
                await page.send("Fetch.failRequest", requestId=counts, errorReason="ConnectionRefused")
            else:
                await page.send(
                    "Fetch.fulfillRequest",
                    requestId=counts,
                    responseCode=504,
                    responsePhrase="Gateway Time-out",
                    responseHeaders=[{"name": "Content-Type", "value": "text/html"}],
                    body=html,
                )
            await page.send("Fetch.disable")
            await page.wait_for("document.body.dataset.state === 'error'", "the error state")
            said.append(await page.eval("document.querySelector('#status').textContent"))
        # A download a proxy refuses with its page: the card says what came back.
        await show(page, gw)
        page.paused.clear()
        await page.send("Fetch.enable", patterns=[{"urlPattern": "*/api/payouts*"}])
        await page.eval("document.querySelector('#export-payouts a').click()")
        await page.send(
            "Fetch.fulfillRequest",
            requestId=await held(page, "/api/payouts"),
            responseCode=502,
            responsePhrase="Bad Gateway",
            responseHeaders=[{"name": "Content-Type", "value": "text/html"}],
            body=html,
        )
        await page.send("Fetch.disable")
        refused = await page.wait_for(
            "document.querySelector('#export-payouts .error')?.textContent", "the refusal"
        )
    proxy, none = said
    assert proxy.startswith("The server answered HTTP 504 Gateway Time-out, not with the dashboard's data"), (
        proxy
    )
    assert none.startswith("No answer from the gateway"), none
    assert refused.startswith("not downloaded: The server answered HTTP 502 Bad Gateway"), refused
    assert page.errors == [], page.errors


@pytest.mark.timeout(180)
async def test_a_lookup_answered_late_never_replaces_the_one_asked_after_it(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """A user's lookup (slow: every device) and then a visitor's (quick): the user's answer came
    last and was drawn, under a field that named the visitor."""
    gw = await seeded_gateway(start_gateway, upstream_server)
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await show(page, gw)
        # Each request of the page, once its answer is read or it failed (its handlers have run).
        await page.eval(
            "window.settled = []; const fetchOf = window.fetch, jsonOf = Response.prototype.json;"
            " const done = url => setTimeout(() => settled.push(new URL(url, location.href).pathname));"
            " window.fetch = (url, ...rest) => fetchOf(url, ...rest).catch(err => { done(url); throw err; });"
            " Response.prototype.json = function () {"
            " return jsonOf.call(this).finally(() => done(this.url)); }"
        )
        await page.send("Fetch.enable", patterns=[{"urlPattern": "*/api/users/alice"}])
        await look_up(page, "user", "alice")
        alice = await held(page, "/api/users/alice")
        await look_up(page, "visitor", "nobody")
        await page.wait_for("settled.includes('/api/visitors/nobody')", "the visitor's answer")
        with contextlib.suppress(RuntimeError):  # the page may have cancelled it already
            await page.send("Fetch.continueRequest", requestId=alice)
        await page.send("Fetch.disable")
        await page.wait_for("settled.includes('/api/users/alice')", "the user's answer, late")
        shown = await page.eval("document.querySelector('#journey-result').textContent")
    assert shown == "no touchpoints recorded for this visitor", shown
    assert page.errors == [], page.errors


@pytest.mark.timeout(180)
async def test_axes_and_tooltips_print_numbers_as_the_tables_do(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """1,200 conversions on one day: the axes read 1000 and 2000 and the tooltips 1200.00
    conversions, beside tables that read 1,200."""
    gw: RunningGateway = await start_gateway(await upstream_server(origin()))
    events: list[Event] = []
    for n in range(1200):
        visitor = f"{n + 1:032x}"
        events += [_tp(visitor, 1 + n / 100_000, "Email"), _conv(visitor, 2 + n / 100_000, 10.0)]
    await gw.gateway.store.write(events)
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await show(page, gw)
        drawn = await page.eval(
            "['#chart-daily', '#chart-models', '#chart-bots'].map(id => [...document.querySelectorAll("
            "id + ' svg > text, ' + id + ' svg title')].map(t => t.textContent))"
        )
    daily, models, bots = drawn
    assert "1,000" in daily and "1000" not in daily, daily
    assert "2026-11-03 · Email: 1,200 conversions" in daily, daily
    assert "1,000" in models and "Email · linear: 1,200 conversions" in models, models
    assert "allow: 1,200 (100.0 %)" in bots, bots
    assert page.errors == [], page.errors


@pytest.mark.timeout(180)
async def test_the_population_filter_credits_one_population_and_says_so(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """The summary takes ``population`` and its counts give the period's landings per
    population, but the page offered no choice, and ignored a ``?population=`` in its address
    without a word."""
    gw = await seeded_gateway(start_gateway, upstream_server)
    stranger = f"{9:032x}"  # keyed without a cookie: no visitor of the seeded store's
    await gw.gateway.store.write(
        [
            _tp(stranger, 2.0, "Affiliates", source="partner", medium="affiliate", consent="cookieless"),
            _conv(stranger, 2.2, 50.0),
            DailyCount("2026-11-03", "news", count=7),  # Sec-GPC: counted, never credited
        ]
    )
    ten_days = f"?from={PERIOD['since']}&to=2026-11-10"
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await show(page, gw, "/dashboard" + ten_days + "&population=cookieless")
        # The form offers the API's populations, says what each is, with its landings.
        options = await page.eval(
            "[...document.querySelector('#period').population.options].map(o => [o.value, o.textContent])"
        )
        assert [value for value, _ in options][:-1] == ["", *POPULATIONS]
        assert options == [
            ["", "every population"],
            ["cookie", "cookie (10 landings) — ID cookie"],
            ["cookieless", "cookieless (1 landing) — no cookie, one-day key"],
            ["no_consent", "no_consent (0 landings) — no consent, one-day key"],
            ["aggregate", "not tracked (7 landings) — GPC or DNT, counted only"],
        ]
        assert await page.eval("document.querySelector('#period').population.options[4].disabled")
        assert await page.eval("document.querySelector('#period').population.value") == "cookieless"
        # Every part was asked for that population's credits, and the charts say whose they are.
        asked = await page.eval(
            "performance.getEntriesByType('resource').map(e => new URL(e.name))"
            ".filter(u => u.pathname === '/api/dashboard/summary')"
            ".map(u => [u.searchParams.get('part'), u.searchParams.get('population')])"
        )
        assert sorted(asked) == [["counts", "cookieless"], ["daily", "cookieless"], ["models", "cookieless"]]
        assert await page.eval("document.querySelector('#legend-daily').textContent") == "Affiliates"
        totals = await page.eval("document.querySelector('#totals').textContent")
        assert "Conversion value (credited to cookieless)50.00 EUR" in totals, totals
        # The conversions credited, as the charts (their comparison said "No conversions in
        # this period." beside a card of every population's 7), and every population's beside.
        assert "Conversions (credited to cookieless)1of 7 in every population" in totals, totals
        hints = await page.eval("[...document.querySelectorAll('[data-population]')].map(n => n.textContent)")
        assert hints == [", crediting cookieless touchpoints only"] * 2
        # The reports' downloads take it; the fraud report and the raw listings do not.
        links = await page.eval("[...document.querySelectorAll('.exports a')].map(a => a.href)")
        reports = [link for link in links if "/api/attribution" in link or "/api/payouts" in link]
        assert len(reports) == 18 and all("population=cookieless" in link for link in reports), links
        assert all("population" not in link for link in links if link not in reports), links
        got = await page.eval(
            "Promise.all([...document.querySelectorAll('.exports a')].map(a => fetch(a.href).then("
            "r => [r.status, r.headers.get('content-disposition')])))"
        )
        assert all(status == 200 for status, _ in got), got
        assert "-cookieless-" in got[12][1], got[12]  # the payouts' file says whose

        # Sent with another population, the form keeps it in the page's address.
        await page.eval(
            "const f = document.querySelector('#period'); f.population.value = 'cookie'; f.requestSubmit()"
        )
        await page.wait_for(
            "location.search.includes('population=cookie&') || location.search.endsWith('population=cookie')",
            "the form sent",
        )
        await page.wait_for("document.body && document.body.dataset.state === 'ready'", "the charts drawn")
        legend = await page.eval("document.querySelector('#legend-daily').textContent")
        assert "Paid Search" in legend and "Affiliates" not in legend, legend
        totals = await page.eval("document.querySelector('#totals').textContent")
        assert "Conversions (credited to cookie)6of 7 in every population" in totals, totals
        # A population without credit: the comparison and the card say the same.
        await page.send(
            "Page.navigate", url=gw.admin_url + "/dashboard" + ten_days + "&population=no_consent"
        )
        await page.wait_for(
            "location.search.includes('no_consent')"
            " && document.body && document.body.dataset.state === 'ready'",
            "the charts of no_consent drawn",
        )
        # Not "No conversions in this period." over a card counting 7 of them in the period.
        for chart in ("#chart-daily", "#chart-models"):
            said = await page.eval(f"document.querySelector({chart!r}).textContent")
            assert said == "No conversion of the period is credited to no_consent touchpoints.", (chart, said)
        # What data_driven learnt: from that population's journeys, none (not "No journeys in this
        # period", which has some).
        learnt = await page.eval("document.querySelector('#learnt').innerText")
        assert [line for line in learnt.split("\n") if line] == [
            "What data_driven learnt",
            "No journeys of no_consent touchpoints in this period: data_driven learnt nothing.",
        ], learnt  # said once: not also "From 0 journeys of no_consent touchpoints in the period"
        totals = await page.eval("document.querySelector('#totals').textContent")
        assert "Conversions (credited to no_consent)0of 7 in every population" in totals, totals

        # One the dashboard does not know: told in the form's words before anything is asked.
        await page.send(
            "Page.navigate",
            url=gw.admin_url + "/dashboard" + ten_days + "&model=data_driven&population=everyone",
        )
        await page.wait_for(
            "location.search.includes('everyone') && document.body"
            " && document.body.dataset.state === 'error'",
            "the refused population",
        )
        assert await page.eval("document.querySelector('#status').textContent") == (
            'Population "everyone" is not one the dashboard knows: choose every population, or'
            " cookie, cookieless, no_consent."
        )
        assert (
            await page.eval(
                "performance.getEntriesByType('resource').filter(e => e.name.includes('/api/')).length"
            )
            == 0
        )
        assert await page.eval("document.querySelector('#period').population.value") == ""
        assert await page.eval("document.querySelector('#period').model.value") == "data_driven"
    assert page.errors == [], page.errors


FAKE_DEADLINES = """(() => {
  // The page's long timers (its deadlines, two minutes) wait for the test's expireDeadlines()
  // instead of the clock; each request's URL and signal are kept in window.asked.
  const setTimeoutOf = window.setTimeout, clearTimeoutOf = window.clearTimeout, fetchOf = window.fetch;
  const deadlines = new Map();
  let last = 1e9;
  window.setTimeout = (fn, ms, ...args) => {
    if (!(ms >= 100000)) return setTimeoutOf(fn, ms, ...args);
    deadlines.set(++last, () => fn(...args));
    return last;
  };
  window.clearTimeout = (id) => { deadlines.delete(id); clearTimeoutOf(id); };
  window.expireDeadlines = () => {
    const due = [...deadlines.values()];
    deadlines.clear();
    due.forEach((f) => f());
    return due.length;
  };
  window.asked = [];
  window.fetch = (url, options = {}) => {
    window.asked.push({ url: String(url), signal: options.signal });
    return fetchOf(url, options);
  };
})();"""
"""Fake timers for the page's deadlines, installed before its scripts run."""

DAILY_ASKED = "asked.filter(a => a.url.includes('part=daily')).map(a => !!a.signal?.aborted)"


@pytest.mark.timeout(180)
async def test_a_part_that_never_answers_is_given_up_and_can_be_asked_again(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """A report that never answers (a hung worker, no proxy's timeout in front) kept the status
    line's "Computing…" for ever: no deadline of the page's own, nothing to press."""
    gw = await seeded_gateway(start_gateway, upstream_server)
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await page.send("Page.enable")  # for the script on every new document
        await page.send("Page.addScriptToEvaluateOnNewDocument", source=FAKE_DEADLINES)
        await page.send("Fetch.enable", patterns=[{"urlPattern": "*part=daily*"}])
        await page.send(
            "Page.navigate", url=gw.admin_url + f"/dashboard?from={PERIOD['since']}&to=2026-11-10"
        )
        await held(page, "part=daily")
        await page.wait_for("!!document.querySelector('#chart-campaigns svg')", "the counts drawn")
        status = "document.querySelector('#status').textContent"
        assert (await page.eval(status)).startswith("Computing the period's numbers")
        # Its deadline passes (the page's own timer, run now: no test waits two minutes). The
        # counts answered and the comparison is not asked yet: the daily part's is the one due.
        assert await page.eval("expireDeadlines()") == 1
        said = await page.wait_for(
            "document.querySelector('#chart-daily button')"
            " && document.querySelector('#chart-daily').textContent",
            "the daily chart given up",
        )
        assert said.startswith("The daily chart: no answer in 120 s, the page gave up waiting."), said
        assert said.endswith("Try again"), said
        assert (await page.eval(status)).startswith("The daily chart: no answer in 120 s"), await page.eval(
            status
        )
        assert await page.eval(DAILY_ASKED) == [True]  # its request aborted
        # The comparison is asked once the daily part has settled, given up included.
        await page.wait_for("document.querySelectorAll('#chart-models rect').length > 0", "the comparison")
        value = await page.eval("document.querySelector('#totals .total:last-child').textContent")
        assert value == "Conversion valuenot computed yet: see the daily chart", value
        assert await page.eval("document.body.dataset.state") == "error"
        # Try again, pressed twice: one request more, and the chart drawn when it answers.
        page.paused.clear()
        await page.eval(
            "(b => { b.focus(); b.click(); b.click(); })(document.querySelector('#chart-daily button'))"
        )
        # The button gone, the keyboard's focus stays in the card (it fell to the page's top).
        assert await page.eval("document.activeElement.id") == "chart-daily"
        again = await held(page, "part=daily")
        assert await page.eval(DAILY_ASKED) == [True, False]
        assert await page.eval("document.body.dataset.state") == "loading"
        assert (await page.eval(status)).startswith("Computing the period's numbers")
        await page.send("Fetch.continueRequest", requestId=again)
        await page.send("Fetch.disable")
        await page.wait_for("document.body.dataset.state === 'ready'", "the daily chart drawn")
        assert await page.eval(status) == ""
        assert await page.eval("document.querySelectorAll('#chart-daily rect[data-series]').length") >= 6
        assert "355.00 EUR" in await page.eval("document.querySelector('#totals').textContent")
        assert await page.eval(DAILY_ASKED) == [True, False]
        assert await page.eval("document.activeElement.id") == "chart-daily"  # drawn, still there
    assert page.errors == [], page.errors


@pytest.mark.timeout(180)
async def test_a_failed_value_the_bot_ring_and_a_lookup_say_what_they_are(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """The daily part failed: "Conversion value" read a dash, as for none. The bot share's ring
    said "100 %" of nothing named. A lookup's answer was not announced to a screen reader."""
    gw = await seeded_gateway(start_gateway, upstream_server)
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await page.send("Fetch.enable", patterns=[{"urlPattern": "*part=daily*"}])
        await page.send(
            "Page.navigate", url=gw.admin_url + f"/dashboard?from={PERIOD['since']}&to=2026-11-10"
        )
        await page.send(
            "Fetch.fulfillRequest",
            requestId=await held(page, "part=daily"),
            responseCode=500,
            responseHeaders=[{"name": "Content-Type", "value": "application/json"}],
            body=base64.b64encode(b'{"ok": false, "error": "the credits broke"}').decode(),
        )
        await page.send("Fetch.disable")
        await page.wait_for("document.body.dataset.state === 'error'", "the error state")
        value = await page.eval("document.querySelector('#totals .total:last-child').textContent")
        assert value == "Conversion valuenot computed: the credits failed (see above)", value
        assert await page.eval("document.querySelector('#status').textContent") == "the credits broke"
        centre = await page.eval(
            "[...document.querySelectorAll('#chart-bots svg > text')].map(t => t.textContent)"
        )
        assert centre == ["100 %", "allow"], centre
        assert (
            await page.eval("document.querySelector('#journey-result').getAttribute('aria-live')") == "polite"
        )
    assert page.errors == [], page.errors


@pytest.mark.timeout(180)
async def test_a_card_says_it_is_being_computed_and_then_what_became_of_it(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """While a part was computed (the model comparison takes seconds over a million touchpoints,
    the top tables and the bot share a second or two), its cards were blank: only the status line
    at the top of the page, scrolled away by then, said anything. A card now says it is being
    computed, and, when its part fails, that it was not."""
    gw = await seeded_gateway(start_gateway, upstream_server)
    waiting = ["#chart-daily", "#chart-models", "#chart-campaigns", "#chart-creators", "#chart-bots"]
    said = "(sel => [...sel].map(s => document.querySelector(s).textContent))(" + json.dumps(waiting) + ")"
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        page.paused.clear()
        parts = [{"urlPattern": f"*part={part}*"} for part in ("counts", "daily", "models")]
        await page.send("Fetch.enable", patterns=parts)
        await page.send("Page.navigate", url=gw.admin_url + TEN_DAYS)
        counts = await held(page, "part=counts")
        daily = await held(page, "part=daily")
        assert await page.eval(said) == ["Computing…"] * len(waiting)
        # The counts come: their cards drawn, the others still being computed.
        await page.send("Fetch.continueRequest", requestId=counts)
        await page.wait_for("!!document.querySelector('#chart-campaigns svg')", "the counts drawn")
        shown = await page.eval(said)
        assert shown[:2] == ["Computing…", "Computing…"] and "Computing…" not in shown[2:], shown
        await page.send("Fetch.continueRequest", requestId=daily)
        models = await held(page, "part=models")
        await page.wait_for("!!document.querySelector('#chart-daily svg')", "the daily chart drawn")
        assert await page.eval("document.querySelector('#chart-models').textContent") == "Computing…"
        # The comparison refused (a store that cannot be read meanwhile): its card says so.
        await page.send(
            "Fetch.fulfillRequest",
            requestId=models,
            responseCode=503,
            responseHeaders=[{"name": "Content-Type", "value": "application/json"}],
            body=base64.b64encode(b'{"ok": false, "error": "the store is busy"}').decode(),
        )
        await page.send("Fetch.disable")
        await page.wait_for("document.body.dataset.state === 'error'", "the error state")
        assert await page.eval("document.querySelector('#status').textContent") == "the store is busy"
        card = await page.eval("document.querySelector('#chart-models').textContent")
        assert card == "Not computed: see why at the top of the page.", card
    assert page.errors == [], page.errors


async def go(page: Page, delta: int) -> None:
    """The browser's Back (-1) or Forward (+1) button: its history's entry before or after."""
    history = await page.send("Page.getNavigationHistory")
    entry = history["entries"][history["currentIndex"] + delta]
    await page.send("Page.navigateToHistoryEntry", entryId=entry["id"])


PERIOD_FORM = (
    "JSON.stringify((f => [f.from.value, f.to.value, f.model.value, f.population.value])"
    "(document.querySelector('#period')))"
)


@pytest.mark.timeout(180)
async def test_back_to_a_period_shows_in_the_form_the_period_charted(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """Back from a period chosen in the form to the one before: the charts were that one's,
    but the form held the dates and population last typed in it (the browser restored the
    form as it was left), so it said "From 2026-11-03 … cookie" over 2026-11-01's charts of
    every population."""
    gw = await seeded_gateway(start_gateway, upstream_server)
    first = "?from=2026-11-01&to=2026-11-10&model=linear"
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await show(page, gw, "/dashboard" + first)
        await page.eval(
            "(f => { f.from.value = '2026-11-03'; f.to.value = '2026-11-09'; f.model.value = 'first_touch';"
            " f.population.value = 'cookie'; f.requestSubmit(); })(document.querySelector('#period'))"
        )
        await page.wait_for(
            "location.search.includes('population=cookie') && document.body"
            " && document.body.dataset.state === 'ready'",
            "the chosen period's charts",
        )
        await go(page, -1)
        await page.wait_for(
            f"location.search === {first!r} && document.body && document.body.dataset.state === 'ready'",
            "the first period's charts again",
        )
        assert json.loads(await page.eval(PERIOD_FORM)) == ["2026-11-01", "2026-11-10", "linear", ""]
        await go(page, +1)
        await page.wait_for(
            "location.search.includes('population=cookie') && document.body"
            " && document.body.dataset.state === 'ready'",
            "the chosen period's charts again",
        )
        form = json.loads(await page.eval(PERIOD_FORM))
        assert form == ["2026-11-03", "2026-11-09", "first_touch", "cookie"], form
    assert page.errors == [], page.errors


@pytest.mark.timeout(180)
async def test_on_a_wide_monitor_the_charts_text_keeps_a_readable_size(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """At 2,560 pixels the charts, drawn 900 units wide, were scaled 2.8 times to their cards:
    axis labels 31 pixels high beside 14-pixel tables, the daily chart 770 pixels tall."""
    gw = await seeded_gateway(start_gateway, upstream_server)
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await page.send(
            "Emulation.setDeviceMetricsOverride", width=2560, height=1200, deviceScaleFactor=1, mobile=False
        )
        await show(page, gw)
        for chart in ("#chart-daily", "#chart-models"):
            box = json.loads(
                await page.eval(
                    f"(c => JSON.stringify({{card: c.clientWidth, svg: c.querySelector('svg')"
                    ".getBoundingClientRect().width, height: c.querySelector('svg').getBoundingClientRect()"
                    ".height, label: c.querySelector('svg > text').getBoundingClientRect().height}))"
                    f"(document.querySelector({chart!r}))"
                )
            )
            assert box["svg"] >= box["card"] - 1, (chart, box)  # still the card's whole width
            assert box["label"] <= 20 and box["height"] <= 480, (chart, box)  # 11 units, scaled 1.4 at most
    assert page.errors == [], page.errors


LABEL_HEIGHTS = (
    "JSON.stringify(['#chart-daily', '#chart-models', '#chart-campaigns'].map(c =>"
    " document.querySelector(c + ' svg text').getBoundingClientRect().height))"
)


@pytest.mark.timeout(180)
async def test_a_phone_turned_or_a_window_resized_draws_the_charts_again(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """The charts were drawn once, for the card's width at load: a phone turned from 390 to 844
    pixels scaled them 2.3 times (labels 29 pixels high), and a desktop window narrowed to a
    phone's width shrank them to a third (labels 5 pixels high)."""
    gw = await seeded_gateway(start_gateway, upstream_server)
    query = f"/dashboard?from={PERIOD['since']}&to=2026-11-10"

    async def resize(width: int, mobile: bool) -> None:
        await page.send(
            "Emulation.setDeviceMetricsOverride", width=width, height=800, deviceScaleFactor=1, mobile=mobile
        )

    async def label_heights() -> list[float]:
        # Two frames: the resize event's, then the one the redrawn charts are laid out in.
        await page.eval("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        return list(json.loads(await page.eval(LABEL_HEIGHTS)))

    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await resize(390, True)
        await show(page, gw, query)
        upright = await label_heights()
        await resize(844, True)
        turned = await label_heights()
        assert all(h <= 20 for h in turned), (upright, turned)
        await resize(WIDTH, False)
        await page.send("Page.navigate", url=gw.admin_url + query + "&model=first_touch")
        await page.wait_for(
            "location.search.includes('first_touch') && document.body"
            " && document.body.dataset.state === 'ready'",
            "the charts drawn on a desktop",
        )
        await resize(390, False)
        narrowed = await label_heights()
        assert all(h >= 10 for h in narrowed), narrowed
        # The redrawn charts are still whole: the model comparison's every channel, each bar.
        assert await page.eval("document.querySelectorAll('#chart-daily rect[data-series]').length") >= 6
    assert page.errors == [], page.errors


@pytest.mark.timeout(180)
async def test_every_stop_of_the_tab_key_has_a_name_a_screen_reader_reads(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """On a phone the model table and a journey's table are wider than their cards and scroll
    in them, so Chromium makes their boxes stops of the Tab key: a screen reader read them as
    nothing ("group"), one stop of the page without a name."""
    gw = await seeded_gateway(start_gateway, upstream_server)
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await page.send(
            "Emulation.setDeviceMetricsOverride", width=390, height=800, deviceScaleFactor=1, mobile=True
        )
        await show(page, gw)
        await look_up(page, "user", "alice")
        await page.wait_for("!!document.querySelector('#journey-result table')", "the journey")
        await page.eval("document.querySelector('#numbers-daily').open = true")
        await page.send("Accessibility.enable")
        stops: list[tuple[str, str]] = []
        for _ in range(60):
            for kind in ("keyDown", "keyUp"):
                await page.send(
                    "Input.dispatchKeyEvent", type=kind, key="Tab", code="Tab", windowsVirtualKeyCode=9
                )
            found = await page.send("Runtime.evaluate", expression="document.activeElement")
            tree = await page.send(
                "Accessibility.getPartialAXTree", objectId=found["result"]["objectId"], fetchRelatives=False
            )
            node = tree["nodes"][0]
            what = await page.eval("(e => e.tagName + '.' + e.className)(document.activeElement)")
            if what.startswith("BODY"):
                break
            stops.append((what, str(node.get("name", {}).get("value", ""))))
    scrollers = [stop for stop in stops if stop[0] == "DIV.scroll"]
    assert len(scrollers) >= 2, stops  # the model table's and the journey's, at least
    assert all(name for _, name in stops), [stop for stop in stops if not stop[1]]


@pytest.mark.timeout(180)
async def test_on_a_tablet_the_charts_text_is_not_shrunk(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """Only cards under 600 pixels had their charts drawn at their own width: on a 768-pixel
    tablet the daily chart and the model comparison, drawn 900 wide, were shrunk to three
    quarters (labels 8 pixels high)."""
    gw = await seeded_gateway(start_gateway, upstream_server)
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await page.send(
            "Emulation.setDeviceMetricsOverride", width=768, height=1024, deviceScaleFactor=1, mobile=True
        )
        await show(page, gw)
        heights = json.loads(await page.eval(LABEL_HEIGHTS))
        assert all(h >= 11 for h in heights), heights  # 11-unit labels, not shrunk
        assert await page.eval("document.documentElement.scrollWidth") == 768
    assert page.errors == [], page.errors


AMOUNTS = """JSON.stringify((strong => {
  const card = strong.closest('.total').getBoundingClientRect();
  const walker = document.createTreeWalker(strong, NodeFilter.SHOW_TEXT), nodes = [];
  let at = 0;
  while (walker.nextNode()) { nodes.push([walker.currentNode, at]); at += walker.currentNode.length; }
  // The text node and offset of character i (end: of the end of the character before it).
  const where = (i, end) => {
    const [node, start] = nodes.findLast(([, first]) => (end ? first < i : first <= i));
    return [node, i - start];
  };
  return [...strong.textContent.matchAll(/[0-9][0-9,.]* [A-Z]{3}/g)].map(m => {
    const range = document.createRange();
    range.setStart(...where(m.index));
    range.setEnd(...where(m.index + m[0].length, true));
    const box = range.getBoundingClientRect();
    return [m[0], new Set([...range.getClientRects()].map(r => Math.round(r.top))).size,
            box.left >= card.left && box.right <= card.right];
  });
})([...document.querySelectorAll('#totals .total')].at(-1).querySelector('strong')))"""
"""Each amount of the conversion value card: its text, its lines, and whether it is inside the card."""


@pytest.mark.timeout(180)
async def test_the_conversion_value_fits_its_card_on_a_tablet_and_a_phone(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """On a 768-pixel tablet the four summary cards were 168 pixels wide, and the conversion
    value was broken inside its number (``1,234,567.8`` over ``9 EUR``)."""
    gw = await seeded_gateway(start_gateway, upstream_server)
    large = replace(_conv(f"{3:032x}", 3.6, 0), value=1234212.89)
    dollars = replace(_conv(f"{4:032x}", 4.2, 0), value=98765.43, currency="USD")
    await gw.gateway.store.write([large, dollars])
    seen = {}
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        for width, height in ((768, 1024), (360, 740)):
            await page.send(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=True,
            )
            await show(page, gw)
            widths = await page.eval("[document.documentElement.scrollWidth, innerWidth]")
            seen[width] = (json.loads(await page.eval(AMOUNTS)), widths)
    for width, (amounts, (scrolled, viewport)) in seen.items():
        assert [text for text, _, _ in amounts] == ["1,234,567.89 EUR", "98,765.43 USD"], width
        assert all(lines == 1 and inside for _, lines, inside in amounts), (width, amounts)
        assert scrolled <= viewport, (width, scrolled)
    assert page.errors == [], page.errors


@pytest.mark.timeout(120)
async def test_colours_past_the_palette_are_each_their_own(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """The palette has twenty colours; the 21st series had the 1st's, the 22nd the 2nd's: two
    channels of one stack, two lines of one legend, told apart by nothing. Past it, charts.js
    makes more (deterministic), and the first twenty are as they were."""
    gw: RunningGateway = await start_gateway(await upstream_server(origin()))
    async with gw.session.get(gw.admin_url + "/static/charts.js") as resp:
        script = await resp.text()
    palette = re.findall(r'"(#[0-9a-f]{6})"', script.split("const PALETTE = [", 1)[1].split("];", 1)[0])
    names = [f"channel {n}" for n in range(200)]
    async with browser(chromium, tmp_path / "profile") as page:
        await page.send("Page.navigate", url=gw.admin_url + "/login")
        await page.wait_for("document.readyState === 'complete'", "the login page")
        script = f"import('/static/charts.js').then(m => JSON.stringify([...m.colors({json.dumps(names)})]))"
        given = json.loads(await page.eval(script))
        again = json.loads(await page.eval(script))
    assert given == again  # the same names, the same colours
    assert [name for name, _ in given] == names
    colours = [colour for _, colour in given]
    assert colours[:20] == palette
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in colours), colours
    assert len(set(colours)) == len(names)
    # The first twenty made are told apart from each other and from the palette (CIE76 10 at least:
    # clearly two colours side by side; the palette's own are 15 apart).
    closest = min(
        (math.dist(_lab(a), _lab(b)), a, b)
        for i, a in enumerate(colours[:40])
        for b in colours[max(i + 1, 20) : 40]
    )
    assert closest[0] >= 10, closest


@pytest.mark.timeout(180)
async def test_a_channel_keeps_its_colour_from_one_period_to_another(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """The daily chart gave its colours by the period's ranking: Email, first on 1 November, was
    blue there and Paid Search green; on 2 November, where Paid Search leads, Paid Search was blue
    and Email green. Two periods side by side (or Back between them) told the two apart by
    nothing but the legend. A built-in channel now has one colour whatever the period."""
    gw: RunningGateway = await start_gateway(await upstream_server(origin()))
    events: list[Event] = []
    for day, leads, follows in ((0, "Email", "Paid Search"), (1, "Paid Search", "Email")):
        for n, channel in enumerate((leads, leads, follows)):
            visitor = f"{day * 10 + n + 1:032x}"
            events += [_tp(visitor, day + 0.1 + n / 100, channel), _conv(visitor, day + 0.5, 10)]
    await gw.gateway.store.write(events)
    legend = (
        "JSON.stringify(Object.fromEntries([...document.querySelectorAll('#legend-daily .legend-item')]"
        ".map(e => [e.textContent, e.querySelector('rect').getAttribute('fill')])))"
    )
    seen = []
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        for day in ("2026-11-01", "2026-11-02"):
            await show(page, gw, f"/dashboard?from={day}&to={day}&model=last_touch")
            seen.append(json.loads(await page.eval(legend)))
    first, second = seen
    assert list(first) == ["Email", "Paid Search"] and list(second) == ["Paid Search", "Email"]
    assert first == second, seen
    assert first["Email"] != first["Paid Search"]
    assert page.errors == [], page.errors


@pytest.mark.timeout(180)
async def test_utc_named_z_draws_the_page(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """``attribution.timezone = "Z"`` is UTC to the gateway, and was given to the page as it was
    written: no browser knows a zone "Z" (RangeError), and the page said "Computing…" for ever,
    its lookup disabled."""
    gw: RunningGateway = await start_gateway(
        await upstream_server(origin()), '[attribution]\ntimezone = "Z"\n'
    )
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await show(page, gw)
        said = await page.eval("document.querySelector('[data-timezone-name]').textContent")
    assert said == "UTC"
    assert page.errors == [], page.errors


@pytest.mark.timeout(180)
async def test_a_visitor_who_converted_without_a_landing_shows_the_conversion(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """A visitor who came direct and bought: the lookup said "no touchpoints recorded for this
    visitor", and its conversion was nowhere. It is listed, under no empty table."""
    gw: RunningGateway = await start_gateway(await upstream_server(origin()))
    visitor = f"{81:032x}"
    await gw.gateway.store.write([_conv(visitor, 0.5, 20)])
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await show(page, gw)
        await look_up(page, "visitor", visitor)
        await page.wait_for("!!document.querySelector('#journey-result li')", "the visitor's conversion")
        said = await page.eval("document.querySelector('#journey-result').innerText")
        tables = await page.eval("document.querySelectorAll('#journey-result table').length")
    assert said.startswith(f"{visitor} · no touchpoints recorded"), said
    assert "2026-11-01 12:00:00 · purchase · 20.00 EUR" in said, said
    assert tables == 0
    assert page.errors == [], page.errors


@pytest.mark.timeout(180)
async def test_a_conversion_name_of_the_address_that_counts_nothing_is_told(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """A hand-edited ``?conversion=``: a name no conversion of the period has (``purchse``) was
    offered as one of the period's, chosen, over empty charts, with nothing said; one the API
    refuses (a space before it) stayed the form's choice under the API's reason."""
    gw = await seeded_gateway(start_gateway, upstream_server)
    form = "document.querySelector('#period').conversion"
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await show(page, gw, TEN_DAYS + "&conversion=purchse")
        said = await page.eval(
            "const n = document.querySelector('#conversion-note'); n.hidden ? '' : n.innerText"
        )
        assert said == (
            'No conversion of the period is named "purchse": the charts and totals count none.'
            " The period's conversions: purchase."
        ), said
        options = await page.eval(f"[...{form}.options].map(o => [o.value, o.textContent, o.selected])")
        assert options == [
            ["", "every conversion", False],
            ["purchase", "purchase", False],
            ["purchse", "purchse (none in this period)", True],
        ]
        # A name of the period: nothing to tell.
        await show(page, gw, TEN_DAYS + "&conversion=purchase")
        assert await page.eval("document.querySelector('#conversion-note').hidden") is True
        assert await page.eval(f"{form}.value") == "purchase"

        # A name the API refuses: its reason, and the form offers every conversion, not the name.
        await page.send("Page.navigate", url=gw.admin_url + TEN_DAYS + "&conversion=%20purchase")
        await page.wait_for(
            "location.search.includes('%20purchase') && document.body"
            " && document.body.dataset.state === 'error'",
            "the refused conversion",
        )
        said = await page.eval("document.querySelector('#status').innerText")
        assert said.startswith("conversion: expected a conversion name"), said
        assert await page.eval("document.querySelector('#status').className") == "error"
        assert await page.eval(f"{form}.value") == ""
        assert await page.eval(f"[...{form}.options].map(o => o.value)") == [""]
    assert page.errors == [], page.errors


@pytest.mark.timeout(180)
async def test_the_top_tables_say_they_show_ten_of_many(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """A shop of a thousand campaigns saw ten bars under "Top campaigns", nothing to tell they
    were the first ten of many: the card says of how many, and says nothing when it shows all."""
    gw: RunningGateway = await start_gateway(await upstream_server(origin()))
    await gw.gateway.store.write(
        [
            _tp(f"{n:032x}", n / 100, "Paid Search", campaign=f"c-{n:04d}", creator_id="cr_one")
            for n in range(1200)
        ]
    )
    note = "(n => n.hidden ? null : n.textContent)(document.querySelector('#chart-{}-note'))"
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await show(page, gw)
        assert (
            await page.eval(note.format("campaigns"))
            == "The 10 most landed of 1,000 campaigns in the period."
        )
        assert await page.eval(note.format("creators")) is None  # its one creator, shown
        bars = await page.eval("document.querySelectorAll('#chart-campaigns rect[data-series]').length")
    assert bars == 10
    assert page.errors == [], page.errors


@pytest.mark.timeout(180)
async def test_the_top_tables_rank_by_credited_landings_and_say_what_they_leave_out(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """A click farm's 15 blocked clicks put its creator at the top of "Top creators": the tables
    rank by the landings the reports credit, and say how many they leave out, on the card and on
    the row; the Touchpoints card counts those landings and says how many more were left out."""
    gw: RunningGateway = await start_gateway(await upstream_server(origin()))
    await gw.gateway.store.write(
        [
            *[_tp(f"{n:032x}", 1 + n / 100, "Paid Social", creator_id="cr_real") for n in range(3)],
            *[
                _tp(f"{n:032x}", 2 + n / 100, "Paid Social", creator_id="cr_farm", verdict="block")
                for n in range(10, 25)
            ],
        ]
    )
    note = "(n => n.hidden ? null : n.textContent)(document.querySelector('#chart-creators-note'))"
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await show(page, gw)
        assert await page.eval(note) == (
            "Landings the reports credit (bot verdict allow): 15 more, with another verdict, are left out."
        )
        labels = await page.eval(
            "[...document.querySelectorAll('#chart-creators text')].map(t => t.textContent)"
        )
        # Each row's name (with its whole name for hovering), then its note, top to bottom.
        names = [label for label in labels if label.startswith("cr_")]
        assert names == ["cr_realcr_real", "cr_farmcr_farm"], labels
        assert "3 · 3 vis · 0 conv" in labels and "0 · 0 vis · 0 conv · +15 not credited" in labels, labels
        totals = await page.eval("document.querySelector('#totals').textContent")
        assert "Touchpoints3+15 not credited (bot verdict)" in totals, totals
    assert page.errors == [], page.errors


@pytest.mark.timeout(180)
async def test_the_quick_start_s_one_sign_up_is_counted_in_the_singular(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """What ``make run``'s demo leaves, as a first-time evaluator sees it: one landing the reports
    credit (a headless browser's other one, blocked), one user, one sign-up. The page read
    "From 1 journeys", "1 more, with another verdict, are left out", "1 touchpoint(s) · 1 device(s)"
    and, to a screen reader, "1 landings, 1 visitors, 1 conversions"."""
    gw: RunningGateway = await start_gateway(await upstream_server(origin()))
    visitor, headless = f"{1:032x}", f"{2:032x}"
    user = gw.gateway.keys.user_key("ada@example.com")
    signed_up = T0 + timedelta(days=1.001)
    await gw.gateway.store.write(
        [
            _tp(headless, 0.9, "Email", source="newsletter", campaign="launch", verdict="block"),
            _tp(visitor, 1, "Email", source="newsletter", campaign="launch"),
            Binding(
                _ids(int(signed_up.timestamp() * 1000)), iso(signed_up), "test", visitor, user, "demo-signup"
            ),
            _conv(visitor, 1.002, 10.0, user),
        ]
    )
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await show(page, gw)
        learnt = await page.eval("document.querySelector('#learnt-note').textContent")
        note = await page.eval("document.querySelector('#chart-campaigns-note').textContent")
        spoken = await page.eval("document.querySelector('#chart-campaigns svg').getAttribute('aria-label')")
        await look_up(page, "user", "ada@example.com")
        said = await page.wait_for(
            "document.querySelector('#journey-result table')"
            " && document.querySelector('#journey-result p').textContent",
            "the journey",
        )
    assert learnt.startswith("From 1 journey of the period: 1 converting, 0 not converting."), learnt
    assert (
        note == "Landings the reports credit (bot verdict allow): 1 more, with another verdict, is left out."
    )
    assert (
        spoken == "Top campaigns. launch: 1 landing, 1 visitor, 1 conversion, 1 more landing not credited."
    ), spoken
    assert said == f"{user} · 1 touchpoint · 1 device", said
    assert page.errors == [], page.errors


@pytest.mark.timeout(180)
async def test_the_lookup_s_hint_follows_the_kind_of_id_chosen(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """With *user ID or user key* chosen the field still said "e.g. the gw_vid cookie value": an
    evaluator with the e-mail they signed up with was told to find a cookie."""
    gw: RunningGateway = await start_gateway(await upstream_server(origin()))
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        hints = await page.eval(
            "(g => ['user', 'visitor'].reduce((seen, kind) => {"
            " g.kind.value = kind; g.kind.dispatchEvent(new Event('change', {bubbles: true}));"
            " return [...seen, g.identifier.placeholder]; }, [g.identifier.placeholder]))"
            "(document.querySelector('#journey'))"
        )
    assert hints == [
        "e.g. the gw_vid cookie value",
        "e.g. the e-mail or account ID the site knows the user by",
        "e.g. the gw_vid cookie value",
    ], hints
    assert page.errors == [], page.errors


@pytest.mark.timeout(180)
async def test_names_alike_but_for_their_end_stay_apart_when_cut(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """Campaigns of one naming scheme differ at their end: cut there, two bars of the top table
    both read "spring-2027-lookalik…". Cut in the middle, each keeps its own end."""
    gw: RunningGateway = await start_gateway(await upstream_server(origin()))
    names = [f"spring-2027-lookalike-audience-{n:04d}" for n in (1, 7, 12)]
    await gw.gateway.store.write(
        [_tp(f"{k:032x}", 1, "Paid Social", campaign=name) for k, name in enumerate(names)]
    )
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await show(page, gw)
        shown = await page.eval(
            "[...document.querySelectorAll('#chart-campaigns svg > text')]"
            ".filter(t => t.querySelector('title'))"
            ".map(t => [t.firstChild.nodeValue, t.querySelector('title').textContent])"
        )
    assert sorted(title for _, title in shown) == names
    assert all("…" in text for text, _ in shown), shown  # each was cut to fit
    assert len({text for text, _ in shown}) == 3, shown  # and each still reads as its own
    for text, title in shown:
        head, _, tail = text.partition("…")
        assert title.startswith(head) and title.endswith(tail) and len(tail) >= 4, (text, title)
    assert page.errors == [], page.errors


@pytest.mark.timeout(180)
async def test_a_journey_tells_which_touchpoints_the_models_do_not_credit(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """A creator's click flagged by bot scoring earns nothing (attribution.verdicts: allow), but
    the journey listed it as any other: an analyst asked why the creator got no credit could
    not see it there. Each row says its verdict, and why one is not credited."""
    gw: RunningGateway = await start_gateway(await upstream_server(origin()))
    visitor = f"{91:032x}"
    await gw.gateway.store.write(
        [
            _tp(
                visitor,
                0.1,
                "Affiliates",
                creator_id="cr_farm",
                verdict="block",
                reasons=["creator_ip_velocity", "no_accept_language"],
            ),
            _tp(
                visitor,
                0.2,
                "Email",
                source="newsletter",
                medium="email",
                verdict="review",
                reasons=["ip_velocity"],
            ),
            _tp(visitor, 0.3, "Paid Search", source="google", medium="cpc", verdict="allow"),
            _tp(visitor, 0.4, "Direct"),  # recorded without bot scoring: counts as allow
        ]
    )
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await show(page, gw)
        await look_up(page, "visitor", visitor)
        await page.wait_for("!!document.querySelector('#journey-result table')", "the journey")
        cells = await page.eval(
            "[...document.querySelectorAll('#journey-result tr')].map(r => r.lastElementChild.textContent)"
        )
    assert cells == [
        "Bot verdict",
        "block, not credited: creator_ip_velocity, no_accept_language",
        "review, not credited: ip_velocity",
        "allow",
        "\u2013",  # no verdict: nothing to say
    ]
    assert page.errors == [], page.errors


LOOKUP_IDS = [
    ".",
    "..",
    "a/b",
    "../..",
    "what?",
    "#1",
    "100%",
    "%2E%2E",
    "Ada Lovelace",
    "Zoë 日本",
    "a/./b",
    ".%2e",
]
"""IDs the API takes that a URL path segment holds only percent-encoded (``/``, ``?``, ``#``,
``%``, a space, non-ASCII), and those a browser reads as a dot segment in one (``.``, ``..``;
``%2E%2E`` and ``.%2e`` too, were their ``%`` sent as it is)."""


@pytest.mark.timeout(240)
async def test_every_id_the_api_takes_is_looked_up_from_the_page(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """A user or visitor ID of ``.`` or ``..`` was put as it was in the path
    (``/api/users/..``): the browser resolved it away (``/api/``) and the lookup said ``no such
    endpoint: /api/``. Each ID here is a user's and a visitor's, and the page finds each as the
    API does."""
    gw: RunningGateway = await start_gateway(await upstream_server(origin()))
    keys = gw.gateway.keys
    events: list[Event] = []
    for n, name in enumerate(LOOKUP_IDS):
        visitor = keys.visitor_key(name)
        events.append(_tp(visitor, 0.1 + n / 100, "Email", campaign=f"c{n}"))
        events.append(
            Binding(_ids(int(T0.timestamp() * 1000)), iso(T0), "test", visitor, keys.user_key(name), "login")
        )
    await gw.gateway.store.write(events)
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await show(page, gw)
        wrong: list[tuple[str, str, str]] = []
        for kind in ("user", "visitor"):
            for name in LOOKUP_IDS:
                key = keys.user_key(name) if kind == "user" else keys.visitor_key(name)
                await look_up(page, kind, name)
                said = await page.wait_for(
                    "(r => r.querySelector('p.error, table') && r.innerText)"
                    "(document.querySelector('#journey-result'))",
                    f"the journey of the {kind} {name!r}",
                )
                if not said.startswith(f"{key} · 1 touchpoint"):
                    wrong.append((kind, name, said))
    assert wrong == [], wrong
    assert page.errors == [], page.errors


@pytest.mark.timeout(180)
async def test_a_date_the_zone_skipped_is_no_day_of_the_chart(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """Samoa (``Pacific/Apia``) went from 29 to 31 December 2011: the API counts no 30th (its
    ``by_day`` has no row there, nor the time series), but the page drew a day for every
    calendar date from From to To, an empty bar on the 30th."""
    gw: RunningGateway = await start_gateway(
        await upstream_server(origin()), '[attribution]\ntimezone = "Pacific/Apia"\n'
    )
    events: list[Event] = []
    # Noon on the 29th (UTC-10) and on the 31st (UTC+14), and a purchase two hours after each.
    for n, landed in enumerate(
        (datetime(2011, 12, 29, 22, tzinfo=UTC), datetime(2011, 12, 30, 22, tzinfo=UTC))
    ):
        visitor = f"{90 + n:032x}"
        ms = int(landed.timestamp() * 1000)
        events.append(Touchpoint(_ids(ms), iso(landed), "test", visitor, channel="Email", landing_path="/"))
        bought = landed + timedelta(hours=2)
        cid = _ids(ms + 7_200_000)
        events.append(
            Conversion(cid, iso(bought), "test", "purchase", "order:" + cid, visitor, None, 10.0, "EUR", cid)
        )
    await gw.gateway.store.write(events)
    async with gw.session.get(
        gw.admin_url + "/api/dashboard/summary",
        params={"since": "2011-12-29", "until": "2012-01-01", "part": "daily"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as resp:
        answered = await resp.json()
    assert [row["day"] for row in answered["by_day"]] == ["2011-12-29", "2011-12-31"], answered
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await show(page, gw, "/dashboard?from=2011-12-29&to=2011-12-31")
        labels = await page.eval(
            "[...document.querySelectorAll('#chart-daily svg text')].map(t => t.textContent)"
            ".filter(t => /^[0-9]{2}-[0-9]{2}$/.test(t))"
        )
        slots = await page.eval(
            "new Set([...document.querySelectorAll('#chart-daily rect[data-series]')]"
            ".map(r => r.x.baseVal.value)).size"
        )
    assert labels == ["12-29", "12-31"], labels
    assert slots == 2
    assert page.errors == [], page.errors


DATA_DRIVEN = PALETTE[list(MODELS).index("data_driven")]
"""data_driven's colour in the model comparison (the models take the palette in their order)."""


@pytest.mark.parametrize("width", [WIDTH, 390])
@pytest.mark.timeout(180)
async def test_the_model_comparison_says_what_data_driven_learnt(
    chromium: str, start_gateway, upstream_server, tmp_path: Path, width: int
) -> None:
    """An analyst comparing the models saw data_driven's credits differ and nothing of why: the
    comparison now says what it learnt — the journeys counted, each channel's weight as a bar in
    data_driven's colour (named with its weight and removal effect for a screen reader) and,
    folded, a table of them with headers — the summary's numbers; on a phone too, its text at
    its size and nothing wider than the page."""
    gw = await seeded_gateway(start_gateway, upstream_server)
    learnt = (await gw.api("/api/dashboard/summary", **PERIOD, part="models"))["learnt"]
    assert learnt["channels"]  # the test compares numbers
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        if width != WIDTH:
            await page.send(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=844,
                deviceScaleFactor=1,
                mobile=True,
            )
        await show(page, gw)
        assert await page.eval("document.querySelector('#learnt').hidden") is False
        note = await page.eval("document.querySelector('#learnt-note').textContent")
        converting, other = learnt["converting_journeys"], learnt["non_converting_journeys"]
        counted = (
            f"{converting + other} journeys of the period: {converting} converting, {other} not converting."
        )
        assert note.startswith(f"From {counted}"), note
        at = learnt["learnt_at"]  # the weights kept since the summary above asked for them
        assert note.endswith(f" Learnt {at[:10]} {at[11:16]} UTC."), note
        await page.eval("document.querySelector('#numbers-learnt').open = true")
        table = json.loads(
            await page.eval(
                "JSON.stringify([...document.querySelectorAll('#table-learnt tr')]"
                ".map(tr => [...tr.cells].map(c => [c.tagName, c.textContent])))"
            )
        )
        label = await page.eval("document.querySelector('#chart-learnt svg').getAttribute('aria-label')")
        bars = await page.eval("document.querySelectorAll('#chart-learnt rect[data-series]').length")
        box = json.loads(
            await page.eval(
                "JSON.stringify((r => ({x: r.left + scrollX, y: r.top + scrollY, width: r.width,"
                " height: r.height}))(document.querySelector('#chart-learnt svg').getBoundingClientRect()))"
            )
        )
        _, _, rows = await asyncio.to_thread(read_png, await page.screenshot(box))
        texts = await page.eval(
            "[...document.querySelectorAll('#chart-learnt svg > text')]"
            ".map(t => t.getBoundingClientRect().height)"
        )
        fits = await page.eval(
            "(s => s.getBoundingClientRect().right <= s.closest('.card').getBoundingClientRect().right)"
            "(document.querySelector('#chart-learnt svg'))"
        )
        page_width = await page.eval("[document.documentElement.scrollWidth, window.innerWidth]")
        assert page.errors == [], page.errors
    # The table: a header row, then a row per channel, its name a row header, as the API says it.
    assert table[0] == [["TH", "Channel"], ["TH", "Weight"], ["TH", "Removal effect"]], table
    assert table[1:] == [
        [["TH", row["channel"]], ["TD", f"{row['weight']:.6f}"], ["TD", f"{row['removal_effect']:.6f}"]]
        for row in learnt["channels"]
    ]
    # The bars: one per channel, in data_driven's colour; read whole by a screen reader.
    assert bars == len(learnt["channels"])
    assert sum(1 for row in rows for pixel in row if pixel == DATA_DRIVEN) > 300, (
        "the bars drew almost nothing"
    )
    for row in learnt["channels"]:
        weight, effect = f"{row['weight'] * 100:.1f} %", f"{row['removal_effect']:.3f}"
        said = f"{row['channel']}: weight {weight}, removal effect {effect}"
        assert said in label, (said, label)
    assert texts and all(height >= 10 for height in texts), texts  # drawn at (about) its size
    assert fits and page_width[0] <= page_width[1], page_width


async def accessible_name(page: Page, selector: str) -> str:
    """What a screen reader calls the element ``selector`` finds (Chromium's accessibility tree)."""
    await page.send("Accessibility.enable")
    found = await page.send("Runtime.evaluate", expression=f"document.querySelector({json.dumps(selector)})")
    tree = await page.send(
        "Accessibility.getPartialAXTree", objectId=found["result"]["objectId"], fetchRelatives=False
    )
    return str(tree["nodes"][0].get("name", {}).get("value", ""))


@pytest.mark.timeout(180)
async def test_each_control_of_the_lookup_has_a_name_of_its_own(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """A screen reader read the lookup as "Look up" (the kind of ID), "ID" and "Look up" (the
    button): two controls of one name, and a field that did not say which ID. Each now says
    what it is, the field the kind of ID chosen."""
    gw: RunningGateway = await start_gateway(await upstream_server(origin()))
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        names = [
            await accessible_name(page, f"#journey {control}")
            for control in ("select[name=kind]", "input[name=identifier]", "button")
        ]
        await page.eval(
            "(g => { g.kind.value = 'user'; g.kind.dispatchEvent(new Event('change', {bubbles: true})); })"
            "(document.querySelector('#journey'))"
        )
        as_user = await accessible_name(page, "#journey input[name=identifier]")
        assert page.errors == [], page.errors
    assert names == ["Kind of ID", "Visitor ID or cookie value", "Look up journey"], names
    assert as_user == "User ID or user key", as_user


@pytest.mark.timeout(180)
async def test_a_period_wholly_to_come_says_it_has_not_begun_in_the_report_zone(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """A period after today said "No conversions in this period.", as one that had happened
    without any. It now says it has not begun, by the days of attribution.timezone: the browser
    is put 26 hours behind it (UTC-12 against Kiritimati's UTC+14), so that its own today would
    always tell a period beginning today there as one to come."""
    zone = "Pacific/Kiritimati"
    gw: RunningGateway = await start_gateway(
        await upstream_server(origin()), f'[attribution]\ntimezone = "{zone}"\n'
    )
    async with browser(chromium, tmp_path / "profile") as page:
        await page.send("Emulation.setTimezoneOverride", timezoneId="Etc/GMT+12")
        await sign_in(page, gw)
        today = datetime.now(ZoneInfo(zone)).date()
        seen = {}
        for first in (today, today + timedelta(days=1)):
            await show(page, gw, f"/dashboard?from={first}&to={first + timedelta(days=9)}")
            seen[first] = json.loads(
                await page.eval(
                    "JSON.stringify([...document.querySelectorAll('.chart, .legend')]"
                    ".map(c => [c.id, c.innerText]))"
                )
            )
        assert page.errors == [], page.errors
    if datetime.now(ZoneInfo(zone)).date() != today:
        pytest.skip("midnight passed in Pacific/Kiritimati meanwhile")
    # Begun today: nothing yet, told as before.
    assert dict(seen[today])["chart-daily"] == "No conversions in this period.", seen[today]
    later = today + timedelta(days=1)
    said = f"This period has not begun: it starts on {later}, and today is {today} in {zone}."
    assert dict(seen[later]) == {
        "chart-daily": said,
        "legend-daily": "",
        "chart-models": said,
        "legend-models": "",
        "chart-learnt": said,
        "chart-campaigns": said,
        "chart-creators": said,
        "chart-bots": said,
        "legend-bots": "",
    }, seen[later]


@pytest.mark.timeout(180)
async def test_the_login_form_has_a_username_for_password_managers(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """Chromium advised, on the login page, "Password forms should have (optionally hidden)
    username fields for accessibility": a password manager stored the token under no name. The
    form has a hidden one, which neither a screen reader nor the Tab key reaches, and the form
    still signs in."""
    gw: RunningGateway = await start_gateway(await upstream_server(origin()))
    async with browser(chromium, tmp_path / "profile") as page:
        await page.send("Page.navigate", url=gw.admin_url + "/login")
        await page.wait_for("document.readyState === 'complete'", "the login form")
        field = json.loads(
            await page.eval(
                "JSON.stringify((f => f && [f.type, f.autocomplete, f.value, f.hidden,"
                " f.form === document.querySelector('form[action=\"/login\"]')])"
                "(document.querySelector('input[autocomplete=username]')))"
            )
        )
        stops = []
        for _ in range(4):
            await press(page, "Tab", 9)
            stops.append(await page.eval("document.activeElement.name || document.activeElement.tagName"))
        await sign_in(page, gw)  # through the form, its two loads' advice logged by then
        advice = [line for line in page.logs if "username" in line.lower()]
        assert page.errors == [], page.errors
    assert advice == [], advice
    assert field == ["text", "username", "admin", True, True], field
    assert "username" not in stops, stops


@pytest.mark.timeout(180)
async def test_when_data_driven_learnt_is_told_in_the_report_zone(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """ "Learnt … UTC" stood beside a journey's times in attribution.timezone: the analyst in
    Tokyo had to add nine hours to one of them. Both are now in the report zone, named."""
    gw: RunningGateway = await start_gateway(
        await upstream_server(origin()), '[attribution]\ntimezone = "Asia/Tokyo"\n'
    )
    await gw.gateway.store.write(seed_events(gw.gateway.keys.user_key("alice")))
    learnt = (await gw.api("/api/dashboard/summary", **PERIOD, part="models"))["learnt"]
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await show(page, gw)
        note = await page.eval("document.querySelector('#learnt-note').textContent")
        assert page.errors == [], page.errors
    at = datetime.fromisoformat(learnt["learnt_at"]).astimezone(ZoneInfo("Asia/Tokyo"))
    assert note.endswith(f" Learnt {at:%Y-%m-%d %H:%M} GMT+9 (Asia/Tokyo)."), note


@pytest.mark.timeout(180)
async def test_currencies_come_in_one_order_in_the_totals_and_every_cell(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """Amounts in several currencies were listed as the API's rows came: the totals card in
    the order of the first day each currency was credited on, a model table's cell by amount
    (500.00 USD before 30.00 EUR, and in the next cell 40.00 EUR before 20.00 USD): the same
    currency in another place from card to cell and cell to cell. Now one order on the page:
    the currency of the most conversions first (ties by code)."""
    gw: RunningGateway = await start_gateway(await upstream_server(origin()))
    v = [f"{n:032x}" for n in range(90, 96)]
    events: list[Event] = [
        _tp(v[0], 0.1, "Email", campaign="c"),
        replace(_conv(v[0], 0.5, 500.0), currency="USD"),  # the first day: one large USD
        *(e for n in (1, 2, 3) for e in (_tp(v[n], n, "Email", campaign="c"), _conv(v[n], n + 0.5, 10.0))),
        # Paid Search: a small USD conversion beside a larger EUR one.
        _tp(v[4], 5, "Paid Search", campaign="p"),
        replace(_conv(v[4], 5.5, 20.0), currency="USD"),
        _tp(v[5], 6, "Paid Search", campaign="p"),
        _conv(v[5], 6.5, 40.0),
    ]
    await gw.gateway.store.write(events)
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await show(page, gw)
        totals = await page.eval("document.querySelector('#totals .amount').parentNode.textContent")
        cells = json.loads(
            await page.eval(
                "JSON.stringify([...document.querySelectorAll('#table-models td small')]"
                ".map(s => s.textContent))"
            )
        )
    assert totals == "70.00 EUR · 520.00 USD", totals
    assert cells and all(cell.index("EUR") < cell.index("USD") for cell in cells if "USD" in cell), cells
    assert "40.00 EUR, 20.00 USD" in cells and "30.00 EUR, 500.00 USD" in cells, cells


@pytest.mark.timeout(180)
async def test_each_bot_verdict_keeps_its_colour_from_one_period_to_another(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """The bot share's ``bot`` verdict (a known crawler) took a colour by its place among the
    period's verdicts: cyan in a period of allow and bot, purple (the creators' bars' colour)
    in one with a block too. Each verdict has its own colour in every period."""
    gw: RunningGateway = await start_gateway(await upstream_server(origin()))
    await gw.gateway.store.write(
        [
            _tp(f"{1:032x}", 1.1, "Email", verdict="allow"),
            _tp(f"{2:032x}", 1.2, "Email", verdict="bot"),
            _tp(f"{3:032x}", 5.1, "Email", verdict="allow"),
            _tp(f"{4:032x}", 5.2, "Email", verdict="bot"),
            _tp(f"{5:032x}", 5.3, "Email", verdict="block"),
            _tp(f"{6:032x}", 5.4, "Email", verdict="review"),
        ]
    )
    swatches = (
        "JSON.stringify(Object.fromEntries([...document.querySelectorAll('#legend-bots .legend-item')]"
        ".map(e => [e.textContent.split(':')[0], e.querySelector('rect').getAttribute('fill')])))"
    )
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await show(page, gw, "/dashboard?from=2026-11-02&to=2026-11-02")
        first = json.loads(await page.eval(swatches))
        await show(page, gw, "/dashboard?from=2026-11-06&to=2026-11-06")
        second = json.loads(await page.eval(swatches))
    assert set(first) == {"allow", "bot"} and set(second) == {"allow", "block", "bot", "review"}, (
        first,
        second,
    )
    assert first["bot"] == second["bot"], (first, second)
    assert len(set(second.values())) == 4, second  # each its own
    assert page.errors == [], page.errors


@pytest.mark.timeout(180)
async def test_a_value_sent_without_a_currency_is_in_the_totals_and_its_cell(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """A conversion whose value came without a currency (a webhook that sent none) is credited
    by the reports in a row of no currency (the downloads: ``Email,,1,50.00,…``), but the page
    left it out: the *Conversion value* card read 20.00 EUR, not 70, and the model table's
    Email cells no amount at all (and a journey "purchase · 50"). Now it is told as of no
    currency, after the currencies."""
    gw: RunningGateway = await start_gateway(await upstream_server(origin()))
    v, w = f"{90:032x}", f"{91:032x}"
    await gw.gateway.store.write(
        [
            _tp(v, 1.0, "Email", campaign="c1"),
            replace(_conv(v, 1.5, 50.0), currency=None),
            _tp(w, 2.0, "Paid Search", campaign="c2"),
            _conv(w, 2.5, 20.0),
        ]
    )
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await show(page, gw)
        totals = await page.eval("document.querySelector('#totals .amount').parentNode.textContent")
        cells = json.loads(
            await page.eval(
                "JSON.stringify([...document.querySelectorAll('#table-models tr')].map(tr =>"
                " [...tr.cells].slice(1, 2).map(c => c.textContent)).flat())"
            )
        )
        await look_up(page, "visitor", v)
        journey = await page.wait_for(
            "(t => t.includes('purchase') && t)(document.querySelector('#journey-result').textContent)",
            "the journey",
        )
    assert totals == "20.00 EUR · 50.00 (no currency)", totals
    assert cells == ["first_touch", "150.00 (no currency)", "120.00 EUR"], cells
    assert "purchase · 50.00 (no currency)" in journey, journey  # it read "purchase · 50"
    assert page.errors == [], page.errors


@pytest.mark.timeout(180)
async def test_on_a_phone_three_dozen_channel_names_stay_apart(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """Thirty-six channels on a 360-pixel phone: each group is narrower than a line of text,
    and the names, upright at the steepest, were drawn over each other, every one unreadable.
    Now the names are drawn for every second (third…) group, each apart from the next by a
    line at least; every group's bars still name it when hovered, and the table below lists
    every channel."""
    gw: RunningGateway = await start_gateway(await upstream_server(origin()))
    channels = [f"Region {n}" for n in range(1, 37)]
    events: list[Event] = []
    for n, channel in enumerate(channels):
        events += [_tp(f"{n + 200:032x}", 1 + n / 10, channel), _conv(f"{n + 200:032x}", 2 + n / 10, 10.0)]
    await gw.gateway.store.write(events)
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await page.send(
            "Emulation.setDeviceMetricsOverride", width=360, height=800, deviceScaleFactor=1, mobile=True
        )
        await show(page, gw)
        drawn = json.loads(
            await page.eval(
                "(svg => { const names = new Set(" + json.dumps(channels) + ");"
                " return JSON.stringify({labels: [...svg.querySelectorAll(':scope > text')]"
                ".filter(t => names.has(t.textContent)).map(t => [Number(t.getAttribute('x')),"
                " t.getAttribute('transform') || 'rotate(-0 0 0)', Number(t.getAttribute('font-size'))]),"
                " titled: new Set([...svg.querySelectorAll('rect[data-series] title')]"
                ".map(t => t.textContent.split(' · ')[0])).size});"
                "})(document.querySelector('#chart-models svg'))"
            )
        )
        rows = await page.eval("document.querySelectorAll('#table-models tbody tr').length")
    labels = drawn["labels"]
    assert len(labels) >= len(channels) // 3, labels  # names still drawn, not dropped all
    for (x_a, turn, size), (x_b, _, _) in itertools.pairwise(labels):
        angle = math.radians(-float(turn.removeprefix("rotate(").split()[0]))
        assert (x_b - x_a) * math.sin(angle) >= size, (x_a, x_b, turn)
    assert drawn["titled"] == len(channels) and rows == len(channels)


@pytest.mark.parametrize("width", [WIDTH, 768])
@pytest.mark.timeout(180)
async def test_the_lookup_s_field_shows_its_whole_hint_and_a_whole_cookie_value(
    chromium: str, start_gateway, upstream_server, tmp_path: Path, width: int
) -> None:
    """The ID field was the browser's default 20 characters wide: on a desktop it read
    "e.g. the gw_vid cookie va", "e.g. the e-mail or accou", and a pasted cookie value
    (v1.<32 hex digits>.<tag>) showed less than half of itself, to be checked by scrolling
    in the field."""
    gw: RunningGateway = await start_gateway(await upstream_server(origin()))
    cookie = "v1." + "0" * 32 + ".Zm9vYmFyYmF6cXV4cXV1eA"
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await page.send(
            "Emulation.setDeviceMetricsOverride", width=width, height=900, deviceScaleFactor=1, mobile=False
        )
        measured = json.loads(
            await page.eval(
                "(g => { const field = g.identifier, style = getComputedStyle(field);"
                " const room = field.clientWidth - parseFloat(style.paddingLeft)"
                " - parseFloat(style.paddingRight);"
                " const ctx = document.createElement('canvas').getContext('2d'); ctx.font = style.font;"
                " return JSON.stringify(['visitor', 'user'].map(kind => {"
                " g.kind.value = kind; g.kind.dispatchEvent(new Event('change', {bubbles: true}));"
                " return [field.placeholder, ctx.measureText(field.placeholder).width, room]; })"
                f".concat([[{cookie!r}, ctx.measureText({cookie!r}).width, room]])); }})"
                "(document.querySelector('#journey'))"
            )
        )
    for said, wide, room in measured:
        assert wide <= room, (said, wide, room)


@pytest.mark.timeout(180)
async def test_channels_of_equal_credit_are_in_the_order_of_their_numbers(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """Channels credited alike were ordered as text: Region 1, Region 10, Region 11, Region 12,
    Region 2… in the legend, the model comparison and what data_driven learnt. Now their
    numbers count: Region 2 comes before Region 10."""
    gw: RunningGateway = await start_gateway(await upstream_server(origin()))
    channels = [f"Region {n}" for n in range(1, 13)]
    events: list[Event] = []
    for n, channel in enumerate(channels):
        events += [_tp(f"{n + 300:032x}", 1, channel), _conv(f"{n + 300:032x}", 2, 10.0)]
    await gw.gateway.store.write(events)
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await show(page, gw)
        shown = json.loads(
            await page.eval(
                "JSON.stringify(['#legend-daily .legend-item',"
                " '#table-models tbody th', '#table-learnt tbody th', '#table-daily thead th']"
                ".map(s => [...document.querySelectorAll(s)].map(e => e.textContent.trim())"
                ".filter(t => t.startsWith('Region'))))"
            )
        )
    for names in shown:
        assert names == channels, names


@pytest.mark.timeout(180)
async def test_a_bar_of_one_conversion_says_one_conversion(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """A bar's tooltip read "2026-11-03 · Paid Social: 1 conversions", in both charts."""
    gw = await seeded_gateway(start_gateway, upstream_server)
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await show(page, gw)
        said = json.loads(
            await page.eval(
                "JSON.stringify(['#chart-daily', '#chart-models'].map(c =>"
                " [...document.querySelectorAll(c + ' rect[data-series] title')].map(t => t.textContent)))"
            )
        )
    for titles in said:
        assert any(t.endswith(": 1 conversion") for t in titles), titles
        assert not any(t.endswith(": 1 conversions") for t in titles), titles
        assert any(re.search(r": \d+(\.\d+)? conversions$", t) for t in titles), titles


@pytest.mark.timeout(180)
async def test_the_daily_numbers_keep_each_day_on_one_line(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """With thirty channels the daily chart's numbers were a table wider than its card, and
    each day was broken after its year ("2026-" over "11-02")."""
    gw: RunningGateway = await start_gateway(await upstream_server(origin()))
    channels = [f"Region {n}" for n in range(1, 31)]
    events: list[Event] = []
    for n, channel in enumerate(channels):
        events += [_tp(f"{n + 400:032x}", 1, channel), _conv(f"{n + 400:032x}", 1 + n / 10, 10.0)]
    await gw.gateway.store.write(events)
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await show(page, gw)
        lines = json.loads(
            await page.eval(
                "(d => { d.open = true; return JSON.stringify([...d.querySelectorAll('tbody th')].map(th => {"
                " const r = document.createRange(); r.selectNodeContents(th);"
                " return [th.textContent, new Set([...r.getClientRects()].map(b => Math.round(b.top))).size];"
                " })); })(document.querySelector('#numbers-daily'))"
            )
        )
    assert lines and all(day.startswith("2026-11-") for day, _ in lines), lines
    assert all(n == 1 for _, n in lines), lines


@pytest.mark.timeout(180)
async def test_top_names_landed_alike_are_in_the_order_of_their_numbers(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """Campaigns and creators landed on alike were ranked as the server sorted text: Region 1,
    Region 10, Region 11, Region 12, Region 2…, the ten shown cut from that order. Now as the
    channels are ordered: Region 2 before Region 10."""
    gw: RunningGateway = await start_gateway(await upstream_server(origin()))
    regions = [f"Region {n}" for n in range(1, 13)]
    creators = ["cr_10", "cr_2", "cr_1"]
    await gw.gateway.store.write(
        [_tp(f"{n + 500:032x}", 1 + n / 100, "Email", campaign=name) for n, name in enumerate(regions)]
        + [_tp(f"{n + 600:032x}", 2 + n / 100, "Paid Social", creator_id=c) for n, c in enumerate(creators)]
    )
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await show(page, gw)
        shown = json.loads(
            await page.eval(
                "JSON.stringify(['#chart-campaigns', '#chart-creators'].map(c =>"
                " [...document.querySelectorAll(c + ' rect[data-series]')]"
                ".map(r => r.getAttribute('data-series'))))"
            )
        )
    assert shown == [regions[:10], ["cr_1", "cr_2", "cr_10"]], shown
    assert page.errors == [], page.errors


@pytest.mark.timeout(180)
async def test_the_lookup_s_field_does_not_hide_its_form_s_id(
    chromium: str, start_gateway, upstream_server, tmp_path: Path
) -> None:
    """The lookup's field was named ``id``, so that the form's ``id`` (``form.id``) was the field
    itself to the page's script, not "journey": any code reading it got an input element. The
    field has a name of its own, and a lookup through it still finds the journey."""
    gw = await seeded_gateway(start_gateway, upstream_server)
    async with browser(chromium, tmp_path / "profile") as page:
        await sign_in(page, gw)
        await show(page, gw)
        form_id = await page.eval(
            "(g => typeof g.id === 'string' ? g.id : null)(document.querySelector('#journey'))"
        )
        await look_up(page, "user", "alice")
        said = await page.wait_for(
            "document.querySelector('#journey-result table')"
            " && document.querySelector('#journey-result').innerText",
            "alice's journey",
        )
        rows = await page.eval("document.querySelectorAll('#journey-result tbody tr').length")
    assert form_id == "journey"
    assert rows == 2 and "2 touchpoints · 2 devices" in said, said
    assert page.errors == [], page.errors
