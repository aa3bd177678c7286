"""Cross-report consistency, part two: the reporting mirror, the populations and
``payouts.currency``.

Two node stores (``a`` and ``b``) with disjoint visitors — the store of
``test_reports_consistency`` split between them by visitor, plus cookieless and no-consent
traffic, a user signed in on both nodes (a binding on each), one order sent to both nodes and
Sec-GPC counts on both — synced to the real central PostgreSQL store and mirrored
(``central.mirror_path``). Every report a reporting gateway answers from the mirror must be
what a gateway answers from one local store into which both nodes' events were written through
the product's write path (the reference); the populations' reports must add up where the README
says they do; ``payouts.currency`` must move the sign-ups' payout rows and nothing else.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.attribution import MODELS
from gateway.badbody import body_key
from gateway.events import Binding, Conversion, DailyCount, Event, Touchpoint, VerdictChange, iso
from gateway.ids import Uuid7, uuid7
from gateway.metrics import Metrics
from storage.erasure import erase_user
from storage.mirror import Mirror
from tests.conftest import ENV, GatewayFactory, RunningGateway
from tests.gateway.test_central import admin_get, eventually, node_toml
from tests.gateway.test_central import origin as origin  # the fixture
from tests.gateway.test_reports_consistency import (
    AUTH,
    CONFIG,
    GROUPS,
    PERIOD,
    ZONE,
    credits,
    store_events,
    totals_of,
)
from tests.storage.stores import read
from tests.storage.test_sync import OPTIONS, Node

POPULATIONS = ("cookie", "cookieless", "no_consent")
new_id = Uuid7()
# The consistency store's visitors, split between the nodes: u1's phone on a, its laptop on b;
# u2's referral device on b, its creator click's device on a.
ON_A = {"p1", "v3", "v6", "v8", "v10", "v12", "v14", "v2b"}


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def mint(ts: str) -> tuple[str, str]:
    at = utc(ts)
    return new_id(int(at.timestamp() * 1000)), iso(at)


def tp(node: str, visitor: str, ts: str, channel: str, **fields: Any) -> Touchpoint:
    return Touchpoint(*mint(ts), node, visitor, channel=channel, **fields)


def sale(
    node: str, ts: str, visitor: str | None, value: float, order: str, user: str | None = None
) -> Conversion:
    return Conversion(*mint(ts), node, "purchase", f"order:{order}", visitor, user, value, "EUR")


def bind(node: str, ts: str, visitor: str, user: str, consent: str = "cookie") -> Binding:
    return Binding(*mint(ts), node, visitor, user, "login", consent=consent)


def node_events() -> tuple[list[Event], list[Event]]:
    """Node a's events and node b's."""
    events, named = store_events()
    by_id = {e.id: e for e in events if isinstance(e, Touchpoint)}
    a: list[Event] = []
    b: list[Event] = []
    for event in events:
        if isinstance(event, VerdictChange):
            visitor = by_id[event.touchpoint_id].visitor_key
        else:
            visitor = getattr(event, "visitor_key", None) or ""
        node = "a" if visitor in ON_A else "b"
        (a if node == "a" else b).append(dataclasses.replace(event, node=node))  # type: ignore[arg-type]
    # The analyst lets cr_dan's reviewed click through, on node a's admin API.
    vid, vts = mint("2026-11-04T09:00:00")
    a.append(VerdictChange(vid, vts, "a", named["dan"], "allow", 0, [], "analyst", "a real partner", "maria"))
    # A cookieless visitor on a and a visitor who refused consent on b, each converting there.
    a += [
        tp("a", "v20", "2026-10-22T09:00:00", "Paid Search", source="google", medium="cpc",
           campaign="cl-search", consent="cookieless"),
        sale("a", "2026-10-22T12:00:00", "v20", 30.00, "cl-1"),
    ]  # fmt: skip
    b += [
        tp("b", "v21", "2026-10-27T09:00:00", "Email", source="newsletter", medium="email",
           campaign="weekly", consent="no_consent"),
        sale("b", "2026-10-27T10:00:00", "v21", 20.00, "nc-1"),
        # Only a blocked click before it: in the no_consent population, credited to Direct.
        tp("b", "v22", "2026-10-30T08:00:00", "Affiliates", creator_id="cr_cat", campaign="cat-deal",
           verdict="block", consent="no_consent"),
        sale("b", "2026-10-30T09:00:00", "v22", 5.00, "nc-2"),
    ]  # fmt: skip
    # u3 signs in on both nodes: a creator's click with the cookie on a, a search without it
    # on b, the purchase on b. One journey, two nodes, two populations.
    a += [
        tp("a", "d3a", "2026-10-26T09:00:00", "Affiliates", creator_id="cr_fay", campaign="fay-deal"),
        bind("a", "2026-10-26T09:05:00", "d3a", "u3"),
    ]
    b += [
        tp("b", "d3b", "2026-10-29T09:00:00", "Organic Search", source="google", medium="organic",
           consent="cookieless"),
        bind("b", "2026-10-29T09:05:00", "d3b", "u3", consent="cookieless"),
        sale("b", "2026-10-29T10:00:00", "d3b", 60.00, "u3-1"),
    ]  # fmt: skip
    # One order of u1 sent by the shop's webhook to a, and its retry to b: counted once.
    a.append(sale("a", "2026-10-27T15:00:00", None, 45.00, "web-1", user="u1"))
    b.append(sale("b", "2026-10-27T15:00:00", None, 45.00, "web-1", user="u1"))
    # Sec-GPC landings counted on both nodes, one key.
    a.append(DailyCount("2026-10-25", "news", "email", "c", "Email", count=2))
    b.append(DailyCount("2026-10-25", "news", "email", "c", "Email", count=3))
    return a, b


def reporter_toml(tmp_path: Path, name: str, mirror: bool) -> str:
    """The config of a gateway on ``<name>.db`` (reading the mirror, with ``mirror``)."""
    central = (
        f'[central]\nurl = "env:GATEWAY_CENTRAL_URL"\nmirror_path = "{tmp_path / "mirror.db"}"\n'
        "interval_seconds = 0.05\nconnect_timeout = 2.0\n"
        if mirror
        else ""
    )
    return f'{CONFIG}\n[storage]\npath = "{tmp_path / (name + ".db")}"\nnode = "{name}"\n{central}'


@pytest.fixture
async def pair(
    tmp_path: Path, start_gateway: GatewayFactory, origin: str, central_dsn: str
) -> tuple[RunningGateway, RunningGateway]:
    """(a gateway reading the mirror of nodes a and b, a gateway reading one store of both)."""
    a_events, b_events = node_events()
    a, b = Node(tmp_path, "a", central_dsn), Node(tmp_path, "b", central_dsn)
    for node, events in ((a, a_events), (b, b_events)):
        await node.store.open()
        try:
            await node.store.write(events)
        finally:
            await node.store.close()
        await node.sync.once()
    await Mirror(tmp_path / "mirror.db", central_dsn, OPTIONS, Metrics()).once()
    reporter = await start_gateway(
        origin, reporter_toml(tmp_path, "r", True), {"GATEWAY_CENTRAL_URL": central_dsn}
    )
    reference = await start_gateway(origin, reporter_toml(tmp_path, "ref", False))
    await reference.gateway.store.write(a_events)  # a synced first: its copy of the order is kept
    await reference.gateway.store.write(b_events)
    return reporter, reference


async def get(gw: RunningGateway, path: str, **params: str) -> Any:
    async with gw.session.get(gw.admin_url + path, headers=AUTH, params={**PERIOD, **params}) as resp:
        body = await resp.json()
        assert resp.status == 200, body
    return body


async def both(pair: tuple[RunningGateway, RunningGateway], path: str, **params: str) -> tuple[Any, Any]:
    """The mirror's answer and the reference's, each without the store it names."""
    mirrored, single = await get(pair[0], path, **params), await get(pair[1], path, **params)
    assert (mirrored.pop("source"), single.pop("source")) == ("mirror", "local")
    return _unlearnt(mirrored), _unlearnt(single)  # when each learnt data_driven's weights: its own


def _unlearnt(answer: Any) -> Any:
    """``answer`` without when ``data_driven``'s weights were learnt: each gateway's own second
    (two gateways learning in turn fell in two seconds now and then)."""
    if isinstance(answer, dict) and "learnt" in answer:
        assert answer["learnt"].pop("learnt_at")
    return answer


REPORTS: list[tuple[str, dict[str, str]]] = [
    *(("/api/attribution", {"model": m, "group_by": g}) for m in (*MODELS, "all") for g in GROUPS),
    *(
        ("/api/attribution", {"model": "all", "group_by": g, "population": p})
        for g in GROUPS
        for p in POPULATIONS
    ),
    *(("/api/attribution", {"model": "all", "group_by": g, "verdicts": "allow,review"}) for g in GROUPS),
    *(("/api/attribution", {"model": "all", "conversion": c}) for c in ("signup", "refund", "purchase")),
    *(("/api/attribution/timeseries", {"model": "all", "group_by": g}) for g in GROUPS),
    *(("/api/attribution/timeseries", {"model": "all", "population": p}) for p in POPULATIONS),
    ("/api/attribution/paths", {}),
    ("/api/attribution/paths", {"verdicts": "allow,review,block,bot"}),
    *(("/api/attribution/paths", {"population": p}) for p in POPULATIONS),
    *(("/api/payouts", {"model": m}) for m in MODELS),
    *(
        ("/api/payouts", {"model": m, "population": p})
        for m in ("linear", "data_driven")
        for p in POPULATIONS
    ),
    *(("/api/fraud", {"group_by": g}) for g in GROUPS),
    *(("/api/dashboard/summary", {"model": m}) for m in MODELS),
    *(("/api/dashboard/summary", {"model": "linear", "population": p}) for p in POPULATIONS),
    ("/api/dashboard/summary", {"model": "linear", "conversion": "purchase"}),
]


@pytest.mark.parametrize(
    ("path", "params"), REPORTS, ids=[f"{p}?{'&'.join(f'{k}={v}' for k, v in q.items())}" for p, q in REPORTS]
)
async def test_the_mirror_reports_what_one_store_of_both_nodes_does(
    pair: tuple[RunningGateway, RunningGateway], path: str, params: dict[str, str]
) -> None:
    mirrored, single = await both(pair, path, **params)
    assert mirrored == single


async def test_the_dashboard_parts_over_the_mirror(pair: tuple[RunningGateway, RunningGateway]) -> None:
    for part in ("counts", "daily", "models"):
        for population in ("", *POPULATIONS):
            extra = {"population": population} if population else {}
            mirrored, single = await both(pair, "/api/dashboard/summary", part=part, **extra)
            assert mirrored == single, (part, population)


async def test_the_journeys_across_nodes_are_joined(pair: tuple[RunningGateway, RunningGateway]) -> None:
    """The point of the mirror: u1's purchase on b (laptop) is shared with its phone's ad on a;
    u3's purchase on b with its creator click on a; the order sent to both nodes counts once;
    both nodes' Sec-GPC landings are counted."""
    mirror, _ = pair
    linear = await get(mirror, "/api/attribution", model="linear", group_by="campaign")
    got = credits(linear["rows"], ("group", "currency"), "conversions", "value")
    # The phone's ad (a) has a third of each of u1's laptop's conversions (b) and of its order
    # by webhook: 120.00 - 20.00 (the refund) + 45.00, 48.34 to the cent.
    assert got[("autumn-awareness", "EUR")] == (Decimal("0.999999"), Decimal("48.34"))
    assert got[("fay-deal", "EUR")] == (Decimal("0.5"), Decimal("30.00"))
    web = await get(mirror, "/api/attribution", model="linear", group_by="channel", conversion="purchase")
    assert totals_of(web)["EUR"][0] == 12  # 7 of the split store, 4 new, the order sent twice once
    counts = await get(mirror, "/api/dashboard/summary", part="counts")
    assert counts["populations"]["aggregate"] == 5


async def test_a_device_bound_on_both_nodes_is_one_binding_in_the_reports(
    pair: tuple[RunningGateway, RunningGateway], tmp_path: Path, central_dsn: str
) -> None:
    """Behind a load balancer one device signs in on a, then on b: each node records the
    binding (its own store has none), the central store keeps both rows. The reports over the
    mirror must credit as one store does, which keeps the first."""
    again = bind("b", "2026-11-04T10:00:00", "p1", "u1")
    node = Node(tmp_path, "b", central_dsn)
    await node.store.open()
    try:
        await node.store.write([again])
    finally:
        await node.store.close()
    await node.sync.once()
    await Mirror(tmp_path / "mirror.db", central_dsn, OPTIONS, Metrics()).once()
    await pair[1].gateway.store.write([again])  # the reference store keeps the first only
    pairs = "SELECT count(*) FROM identities WHERE visitor_key = 'p1' AND user_key = 'u1'"
    assert await read(tmp_path / "mirror.db", pairs) == [(2,)]
    assert await read(tmp_path / "ref.db", pairs) == [(1,)]
    for path, params in (
        ("/api/attribution", {"model": "all"}),
        ("/api/attribution/paths", {}),
        ("/api/payouts", {"model": "linear"}),
        ("/api/dashboard/summary", {"model": "linear"}),
        ("/api/dashboard/summary", {"model": "data_driven", "population": "cookie"}),
    ):
        mirrored, single = await both(pair, path, **params)
        assert mirrored == single, (path, params)


async def test_a_user_erased_on_one_node_leaves_the_mirror_as_one_store(
    pair: tuple[RunningGateway, RunningGateway], tmp_path: Path, central_dsn: str
) -> None:
    """u1 erased on node a (its phone's node): the central store erases the laptop's rows b
    sent too, and so does the mirror; one store of both erases them alike."""
    erased = {"body_key": body_key(b"k" * 32), "ts": iso(datetime.now(UTC)), "raw_user_id": "u1-raw"}
    await erase_user(tmp_path / "a.db", "u1", event_id=uuid7(), node="a", **erased)  # type: ignore[arg-type]
    await Node(tmp_path, "a", central_dsn).sync.once()
    await Mirror(tmp_path / "mirror.db", central_dsn, OPTIONS, Metrics()).once()
    await erase_user(tmp_path / "ref.db", "u1", event_id=uuid7(), node="ref", **erased)  # type: ignore[arg-type]
    left = "SELECT count(*) FROM touchpoints WHERE visitor_key IN ('p1', 'l1')"
    assert await read(tmp_path / "mirror.db", left) == await read(tmp_path / "ref.db", left) == [(0,)]
    for path, params in (
        ("/api/attribution", {"model": "all"}),
        ("/api/attribution/paths", {}),
        ("/api/payouts", {"model": "linear"}),
        ("/api/fraud", {}),
        ("/api/dashboard/summary", {"model": "linear"}),
    ):
        mirrored, single = await both(pair, path, **params)
        assert mirrored == single, (path, params)


CLI: list[tuple[tuple[str, ...], str, dict[str, str]]] = [
    (
        ("--model", "all", "--group-by", "campaign"),
        "/api/attribution",
        {"model": "all", "group_by": "campaign"},
    ),
    (
        ("--timeseries", "--model", "linear", "--population", "cookieless"),
        "/api/attribution/timeseries",
        {"model": "linear", "population": "cookieless"},
    ),
    (("--paths",), "/api/attribution/paths", {}),
    (("--payouts", "--model", "position_based"), "/api/payouts", {"model": "position_based"}),
    (("--fraud", "--group-by", "creator_id"), "/api/fraud", {"group_by": "creator_id"}),
]


@pytest.mark.parametrize(("args", "path", "params"), CLI)
async def test_gateway_report_reads_the_mirror_as_the_api_reads_one_store(
    pair: tuple[RunningGateway, RunningGateway],
    tmp_path: Path,
    central_dsn: str,
    args: tuple[str, ...],
    path: str,
    params: dict[str, str],
) -> None:
    """``gateway report`` with ``central.mirror_path``: the CSV the reference's API downloads."""
    config = tmp_path / "reporter.toml"
    await asyncio.to_thread(config.write_text, reporter_toml(tmp_path, "r", True))
    env = {**ENV, "GATEWAY_CENTRAL_URL": central_dsn, "PATH": "/usr/bin:/bin"}
    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
    done = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "report", "-c", str(config), "--since", PERIOD["since"],
        "--until", PERIOD["until"], *args, "--format", "csv",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await done.communicate()
    assert done.returncode == 0, err.decode()
    assert "read the reporting mirror" in err.decode()
    query = {**PERIOD, **params, "format": "csv"}
    async with pair[1].session.get(pair[1].admin_url + path, headers=AUTH, params=query) as resp:
        assert resp.status == 200
        assert out.decode() == await resp.text()


async def test_a_cookieless_visitor_is_one_visitor_per_node_in_the_mirror(
    tmp_path: Path, start_gateway: GatewayFactory, origin: str, central_dsn: str
) -> None:
    """Each node keys cookieless visitors with its own day salt, drawn in its memory and never
    shared: one browser landing on a and converting on b is two visitors, and the mirror
    credits the conversion to Direct (README "Reports across nodes: the mirror" says so)."""
    env = {"GATEWAY_CENTRAL_URL": central_dsn}
    rules = '[identity]\nmode = "cookieless"\n'
    rules += '[[conversions]]\nname = "lead"\nmethod = "GET"\npath = "/lead"\nstatus = [200]\n'
    a = await start_gateway(origin, node_toml(tmp_path, "a") + rules, env)
    b = await start_gateway(origin, node_toml(tmp_path, "b") + rules, env)
    reporter = await start_gateway(origin, reporter_toml(tmp_path, "r", True), env)
    browser = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"}
    async with a.session.get(a.url + "/pricing?utm_campaign=x", headers=browser) as resp:
        assert resp.status == 200
    async with b.session.get(b.url + "/lead", headers=browser) as resp:
        assert resp.status == 200
    # The reporter's day (its report.timezone, Berlin), not UTC's: from 23:00 UTC in winter a
    # UTC date's next midnight in Berlin was already past, and the conversion fell outside.
    today = datetime.now(ZoneInfo(ZONE)).date()
    period = (
        f"since={today - timedelta(days=1)}&until={today + timedelta(days=1)}&verdicts=allow,review,block"
    )

    async def credited() -> dict[Any, float]:
        status, body = await admin_get(
            reporter, f"/api/attribution?group_by=campaign&model=last_touch&{period}"
        )
        assert status == 200 and body["source"] == "mirror", body
        return {row["group"]: row["conversions"] for row in body["rows"] if row["conversions"]}

    async def mirrored() -> bool:
        landed = await read(tmp_path / "mirror.db", "SELECT count(*) FROM touchpoints")
        return landed == [(1,)] and bool(await credited())

    await eventually(mirrored)
    assert await credited() == {None: 1}
    keys = await read(
        tmp_path / "mirror.db",
        "SELECT visitor_key, consent FROM touchpoints UNION ALL SELECT visitor_key, 'conv' FROM conversions",
    )
    assert len({k for k, _ in keys}) == 2 and {c for _, c in keys} == {"cookieless", "conv"}, keys


# The populations ---------------------------------------------------------------------------


async def test_each_population_credits_its_own_touches_of_a_mixed_journey(
    pair: tuple[RunningGateway, RunningGateway],
) -> None:
    """u3's purchase has a cookie touch (cr_fay, on a) and a cookieless one (a search, on b):
    limited to one population it is credited whole to that population's touch."""
    _, ref = pair
    got = {}
    for population in POPULATIONS:
        body = await get(ref, "/api/attribution", model="linear", group_by="campaign", population=population)
        got[population] = credits(body["rows"], ("group", "currency"), "conversions", "value")
    assert got["cookie"][("fay-deal", "EUR")] == (Decimal(1), Decimal("60.00"))
    assert got["cookieless"][(None, "EUR")] == (Decimal(1), Decimal("60.00"))  # the search: no campaign
    assert got["no_consent"][("weekly", "EUR")] == (Decimal(1), Decimal("20.00"))
    assert got["no_consent"][(None, "EUR")] == (Decimal(1), Decimal("5.00"))  # blocked: Direct


def _sum(bodies: list[Any]) -> dict[Any, tuple[Decimal, Decimal]]:
    out: dict[Any, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for body in bodies:
        for currency, (n, v) in totals_of(body).items():
            out[currency][0] += n
            out[currency][1] += v
    return {k: (n, v) for k, (n, v) in out.items()}


@pytest.mark.parametrize("model", MODELS)
async def test_the_populations_add_up_to_every_population_as_the_readme_says(
    pair: tuple[RunningGateway, RunningGateway], model: str
) -> None:
    """README "Report endpoints", ``population``: a population's report holds the conversions
    that have one of its touchpoints in their widest lookback window. So, summed over the
    populations, the totals are every population's, less the conversion with no touch in any
    window (v8's 12.34 EUR, Direct), plus u3's 60.00 EUR once more (reached by two)."""
    _, ref = pair
    every = totals_of(await get(ref, "/api/attribution", model=model))
    split = _sum([await get(ref, "/api/attribution", model=model, population=p) for p in POPULATIONS])
    n, v = every["EUR"]
    assert split == {**every, "EUR": (n - 1 + 1, v - Decimal("12.34") + Decimal("60.00"))}
    whole = await get(ref, "/api/dashboard/summary", model=model, part="counts")
    for population, reached in (("cookie", 12), ("cookieless", 2), ("no_consent", 2)):
        counts = await get(ref, "/api/dashboard/summary", model=model, part="counts", population=population)
        assert counts["totals"]["population_conversions"] == reached, population
        # Everything the dashboard counts of landings stays every population's.
        assert {k: v for k, v in counts.items() if k not in ("totals", "population")} == {
            k: v for k, v in whole.items() if k not in ("totals", "population")
        }
        assert {k: v for k, v in counts["totals"].items() if k != "population_conversions"} == whole["totals"]


async def test_the_populations_clicks_add_up_to_every_population(
    pair: tuple[RunningGateway, RunningGateway],
) -> None:
    """A payout report limited to a population counts its clicks only: summed over the
    populations, each creator's approved and quarantined clicks are every population's."""
    _, ref = pair

    def clicks(body: Any) -> dict[tuple[str, str], int]:
        seen: dict[tuple[str, str], set[int]] = defaultdict(set)
        for r in body["rows"]:
            seen[r["creator_id"], r["status"]].add(r["clicks"])
        assert all(len(v) == 1 for v in seen.values()), body["rows"]  # the same on each currency's row
        return {k: v.pop() for k, v in seen.items()}

    every = clicks(await get(ref, "/api/payouts", model="linear"))
    summed: dict[tuple[str, str], int] = defaultdict(int)
    for population in POPULATIONS:
        for k, n in clicks(await get(ref, "/api/payouts", model="linear", population=population)).items():
            summed[k] += n
    assert {k: n for k, n in summed.items() if n} == {k: n for k, n in every.items() if n}


# payouts.currency ----------------------------------------------------------------------------


CPA = {"standard": Decimal(5)}
SHARE = {"gold": Decimal("0.1")}


def _priced(row: dict[str, Any]) -> Decimal:
    """A row's payout by this file's rules, rounded once (README "Rounding: once per row")."""
    if row["status"] != "approve":
        return Decimal(0)
    exact = CPA.get(row["tier"], Decimal(0)) * Decimal(str(row["conversions"]))
    exact += SHARE.get(row["tier"], Decimal(0)) * Decimal(str(row["value"]))
    return exact.quantize(Decimal("0.01"), ROUND_HALF_EVEN)


def _fold(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What ``payouts.currency = "EUR"`` should make of rows computed without it: each row of
    credited conversions of no value and no currency (the sign-ups) added to its creator's EUR
    row of the same status (made if it has none), that row priced again, once."""
    out = [dict(r) for r in rows if not (r["currency"] is None and r["conversions"] and not r["value"])]
    for row in rows:
        if not (row["currency"] is None and row["conversions"] and not row["value"]):
            continue
        key = (row["creator_id"], row["status"])
        into = next((r for r in out if (r["creator_id"], r["status"], r["currency"]) == (*key, "EUR")), None)
        if into is None:
            into = {**row, "currency": "EUR", "conversions": 0, "value": 0.0}
            out.append(into)
        into["conversions"] = float(Decimal(str(into["conversions"])) + Decimal(str(row["conversions"])))
        into["payout"] = float(_priced(into))
    return out


def _no_rule(rows: list[dict[str, Any]]) -> list[str]:
    """The rows without their ``rule`` text, numbers as exact decimals, in one order."""

    def cell(v: Any) -> Any:
        return Decimal(str(v)).normalize() if isinstance(v, int | float) and not isinstance(v, bool) else v

    return sorted(repr(sorted((k, cell(v)) for k, v in r.items() if k != "rule")) for r in rows)


@pytest.mark.parametrize("model", MODELS)
async def test_payouts_currency_moves_the_sign_ups_payouts_and_nothing_else(
    pair: tuple[RunningGateway, RunningGateway],
    start_gateway: GatewayFactory,
    origin: str,
    tmp_path: Path,
    model: str,
) -> None:
    """README "Creator payouts": with ``payouts.currency`` a conversion of no value and no
    currency (u2's sign-up, whose touches are cr_ana's click and a referral) counts in the
    creator's row of that currency, priced there once; every other report is unchanged."""
    _, ref = pair
    toml = reporter_toml(tmp_path, "eur", False).replace(
        'default_tier = "standard"', 'default_tier = "standard"\ncurrency = "EUR"'
    )
    eur = await start_gateway(origin, toml)
    a_events, b_events = node_events()
    await eur.gateway.store.write(a_events)
    await eur.gateway.store.write(b_events)
    before = await get(ref, "/api/payouts", model=model)
    after = await get(eur, "/api/payouts", model=model)
    signed_up = [r for r in before["rows"] if r["currency"] is None and r["conversions"]]
    # cr_ana's click is the sign-up's first touch, the referral its last.
    assert signed_up or model in ("last_touch", "last_non_direct"), before["rows"]
    assert _no_rule(after["rows"]) == _no_rule(_fold(before["rows"]))
    paid: dict[Any, Decimal] = defaultdict(Decimal)
    for r in after["rows"]:
        if r["status"] == "approve" and r["conversions"]:
            paid[r["currency"]] += Decimal(str(r["payout"]))
    assert {t["currency"]: Decimal(str(t["payout"])) for t in after["totals"]} == paid
    # Every other report says the same with and without it.
    for path, params in (
        ("/api/attribution", {"model": "all", "group_by": "creator_id"}),
        ("/api/attribution/timeseries", {"model": model}),
        ("/api/attribution/paths", {}),
        ("/api/fraud", {}),
        ("/api/dashboard/summary", {"model": model}),
    ):
        assert _unlearnt(await get(eur, path, **params)) == _unlearnt(await get(ref, path, **params)), path


def signup(node: str, ts: str, visitor: str, value: float | None = None, name: str = "signup") -> Conversion:
    cid, at = mint(ts)
    return Conversion(cid, at, node, name, f"{name}:{cid}", visitor, None, value, None)


async def test_payouts_currency_takes_the_sign_ups_alone(
    pair: tuple[RunningGateway, RunningGateway], start_gateway: GatewayFactory, origin: str, tmp_path: Path
) -> None:
    """A conversion with a value and no currency (a webhook that sent none) stays in the row of
    no currency and takes no sign-up with it; a quarantined sign-up moves to the currency's
    quarantined row, as what it would have earned."""
    _, ref = pair
    toml = reporter_toml(tmp_path, "eur", False).replace(
        'default_tier = "standard"', 'default_tier = "standard"\ncurrency = "EUR"'
    )
    eur = await start_gateway(origin, toml)
    extra: list[Event] = [
        tp("a", "v23", "2026-10-27T08:00:00", "Affiliates", creator_id="cr_gus", campaign="gus"),
        signup("a", "2026-10-27T09:00:00", "v23"),
        signup("a", "2026-10-27T10:00:00", "v23", 12.00, name="purchase"),
        tp("a", "v24", "2026-10-28T08:00:00", "Affiliates", creator_id="cr_hal", verdict="review"),
        signup("a", "2026-10-28T09:00:00", "v24"),
    ]
    a_events, b_events = node_events()
    for gw in (eur, ref):
        await gw.gateway.store.write(a_events + b_events if gw is eur else [])
        await gw.gateway.store.write(extra)

    def rows(body: Any, *creators: str) -> set[tuple[Any, ...]]:
        return {
            (
                r["creator_id"],
                r["status"],
                r["currency"],
                r["clicks"],
                r["conversions"],
                r["value"],
                r["payout"],
            )
            for r in body["rows"]
            if r["creator_id"] in creators
        }

    before = await get(ref, "/api/payouts", model="last_touch")
    after = await get(eur, "/api/payouts", model="last_touch")
    assert rows(before, "cr_gus", "cr_hal") == {
        ("cr_gus", "approve", None, 1, 2, 12.0, 10.0),
        ("cr_hal", "quarantined", None, 1, 1, 0.0, 0.0),
    }
    assert rows(after, "cr_gus", "cr_hal") == {
        ("cr_gus", "approve", None, 1, 1, 12.0, 5.0),
        ("cr_gus", "approve", "EUR", 1, 1, 0.0, 5.0),
        ("cr_hal", "quarantined", "EUR", 1, 1, 0.0, 0.0),
    }
