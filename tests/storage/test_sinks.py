"""Sinks against a real local HTTP server speaking the Segment batch API (and a signed webhook)."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import itertools
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.config import Settings
from gateway.events import Binding, Touchpoint, iso
from gateway.ids import _format, uuid7
from gateway.keys import Keys
from gateway.metrics import Metrics
from gateway.options import SinkOptions
from gateway.signing import verify_standard
from storage.local import LocalStore
from storage.sink_messages import batch_body, message_id
from storage.sinks import (
    EVENT,
    NothingRecorded,
    Resent,
    SinkError,
    SinkSet,
    open_log,
    pack,
    retry_after_seconds,
)
from tests.conftest import WRITE_KEY, BatchApi, make_settings, sink_toml
from tests.storage.stores import landing

T0 = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)


@dataclass
class World:
    settings: Settings
    store: LocalStore
    keys: Keys
    sinks: SinkSet


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[World]]]:
    made: list[World] = []

    async def make(toml: str, **env: str) -> World:
        settings = make_settings(tmp_path, toml, SINK_SECRET=WRITE_KEY, **env)
        metrics = Metrics()
        store = LocalStore(settings.store_path, settings.options.storage, metrics)
        await store.open()
        keys = Keys.from_master(settings.secret, settings.options.identity.user_id_storage)
        w = World(settings, store, keys, SinkSet(settings, metrics, keys))
        made.append(w)
        return w

    yield make
    for w in made:
        await w.sinks.close()
        await w.store.close()


def touch(n: int, visitor: str, source: str) -> Touchpoint:
    return landing(
        T0 + timedelta(hours=n),
        visitor,
        source=source,
        medium="social",
        campaign=f"c{n}",
        creator_id="cr_1" if n == 0 else None,
    )


async def seed(w: World, user_id: str = "alice") -> tuple[list[Touchpoint], str]:
    laptop, phone = "1" * 32, "2" * 32
    touches = [touch(0, laptop, "tiktok"), touch(1, phone, "google"), touch(2, "3" * 32, "bing")]
    user_key = w.keys.user_key(user_id)
    binding = Binding(
        id=uuid7(),
        ts=iso(T0 + timedelta(hours=3)),
        node="a",
        visitor_key=phone,
        user_key=user_key,
        rule="signup",
    )
    b2 = Binding(id=uuid7(), ts=binding.ts, node="a", visitor_key=laptop, user_key=user_key, rule="login")
    await w.store.write([*touches, binding, b2])
    return touches, user_key


async def one_round(w: World) -> dict[str, int]:
    db = await open_log(w.settings)
    try:
        return await w.sinks.sinks["out"].round(db)
    finally:
        await db.close()


async def run_sink_until(
    w: World, caplog: pytest.LogCaptureFixture, text: str, seconds: float = 20
) -> list[logging.LogRecord]:
    """Run the sink ``out`` until a log line holds ``text``; the sinks' log records by then."""
    task = asyncio.create_task(w.sinks.sinks["out"].run())
    try:
        async with asyncio.timeout(seconds):
            while not any(text in r.getMessage() for r in caplog.records):
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return [r for r in caplog.records if r.name == "gateway.sinks"]


async def run_until_recovered(w: World, caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Run the sink ``out`` until it logs that it recovered; its log records (debug and up)."""
    caplog.set_level(logging.DEBUG, "gateway.sinks")
    return await run_sink_until(w, caplog, "recovered after")


async def test_segment_identify_and_track(world, batch_api: BatchApi) -> None:
    w = await world("[identity]\nuser_id_storage = 'encrypt'\n" + sink_toml(batch_api))
    touches, _ = await seed(w)
    assert await one_round(w) == {"touchpoints": 3, "identities": 2}
    auth = batch_api.headers[0]["Authorization"]
    assert auth == "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    tracks = [c for c in batch_api.calls if c["type"] == "track"]
    assert [t["event"] for t in tracks] == [EVENT] * 3
    assert [t["timestamp"] for t in tracks] == [t.ts for t in touches]  # historical timestamps
    assert tracks[0]["properties"]["source"] == "tiktok" and tracks[0]["properties"]["creator_id"] == "cr_1"
    assert tracks[1]["userId"] == "alice"  # bound: the raw ID, recoverable in encrypt mode
    assert "userId" not in tracks[2]  # a visitor never bound stays anonymous
    identify = [c for c in batch_api.calls if c["type"] == "identify"][-1]
    assert identify["userId"] == "alice"
    traits = identify["traits"]
    assert traits["source_first_source"] == "tiktok" and traits["source_first_creator_id"] == "cr_1"
    assert traits["source_last_source"] == "google" and traits["source_last_campaign"] == "c1"
    assert (
        traits["source_first_timestamp"] == touches[0].ts and traits["source_last_timestamp"] == touches[1].ts
    )
    # Caught up: the next round sends nothing.
    assert await one_round(w) == {"touchpoints": 0, "identities": 0}


async def test_a_visitor_who_did_not_consent_is_not_sent(world, batch_api: BatchApi) -> None:
    """Touchpoints of the ``no_consent`` population (a consent cookie that does not say yes)
    stay in the store and its reports; a sink, a third party's tool, never gets them."""
    w = await world(sink_toml(batch_api))
    consented = touch(0, "1" * 32, "tiktok")
    declined = landing(T0 + timedelta(hours=1), "d" * 32, source="google", consent="no_consent")
    await w.store.write([consented, declined])
    assert await one_round(w) == {"touchpoints": 1, "identities": 0}
    tracks = [c for c in batch_api.calls if c["type"] == "track"]
    assert [t["properties"]["source"] for t in tracks] == ["tiktok"]
    assert await one_round(w) == {"touchpoints": 0, "identities": 0}  # the cursor moved past it


async def test_a_track_says_the_landing_s_bot_verdict(world, batch_api: BatchApi) -> None:
    """A click farm's landings are stored (``bots.on_block = "record"``) and a sink sends them
    as any other: each track carries the verdict the landing was scored with, so the
    destination can leave out what the gateway's own reports do not credit."""
    w = await world(sink_toml(batch_api))
    await w.store.write(
        [
            landing(T0, "1" * 32, source="google", verdict="allow", bot_score=0),
            landing(T0 + timedelta(hours=1), "2" * 32, source="clickfarm", verdict="block", bot_score=60),
            landing(T0 + timedelta(hours=2), "3" * 32, source="partner"),  # a signed event's: none
        ]
    )
    assert await one_round(w) == {"touchpoints": 3, "identities": 0}
    verdicts = {c["properties"]["source"]: c["properties"].get("verdict") for c in batch_api.calls}
    assert verdicts == {"google": "allow", "clickfarm": "block", "partner": None}


async def test_a_binding_made_without_consent_is_not_sent(world, batch_api: BatchApi) -> None:
    """A login in a session whose consent cookie does not say yes binds the visitor's one-day
    key, shared by everyone behind the same address and browser that day: its ``identify``
    would tell a third party's tool about a visitor who did not consent, and merge there the
    profiles of the different users who logged in under that key. The consented device's
    binding still goes, by itself and on demand."""
    w = await world("[identity]\nuser_id_storage = 'encrypt'\n" + sink_toml(batch_api))
    laptop, shared = "1" * 32, "d" * 32
    ada, bob = w.keys.user_key("ada"), w.keys.user_key("bob")

    def bind(visitor: str, user: str, consent: str) -> Binding:
        ts = iso(T0 + timedelta(hours=3))
        return Binding(uuid7(), ts, "a", visitor, user, "login", consent=consent)

    await w.store.write(
        [
            touch(0, laptop, "tiktok"),
            landing(T0 + timedelta(hours=1), shared, source="google", consent="no_consent"),
            bind(laptop, ada, "cookie"),
            bind(shared, ada, "no_consent"),
            bind(shared, bob, "no_consent"),
        ]
    )
    assert await one_round(w) == {"touchpoints": 1, "identities": 1}
    identifies = [c for c in batch_api.calls if c["type"] == "identify"]
    assert [(c["userId"], c["anonymousId"]) for c in identifies] == [("ada", laptop)]
    assert shared not in str(batch_api.calls)
    assert await one_round(w) == {"touchpoints": 0, "identities": 0}  # the cursor moved past them
    batch_api.calls.clear()
    assert await w.sinks.resend_user([ada]) == {"out": Resent(ada, 2)}
    assert shared not in str(batch_api.calls)
    with pytest.raises(NothingRecorded, match="made without consent"):
        await w.sinks.resend_user([bob])


async def test_a_one_day_key_is_never_sent_as_an_anonymous_id(world, batch_api: BatchApi) -> None:
    """Under ``identity.mode = "cookieless"`` the visitor key is a one-day hash shared by
    everyone behind the same address and browser that day; a destination merges every profile
    that shares an ``anonymousId``. Until 2026-12-06 each track and identify carried it, so
    ada's landings and traits joined another visitor's profile there. Now a bound key's
    messages go by ``userId`` alone, and an unbound landing under an ``anonymousId`` of its own
    (``gw-landing-<event id>``) that links it to nothing."""
    w = await world("[identity]\nmode = 'cookieless'\nuser_id_storage = 'encrypt'\n" + sink_toml(batch_api))
    ada_day, stranger_day = "a" * 32, "5" * 32
    first = landing(T0, ada_day, source="tiktok", consent="cookieless")
    walk_in = landing(T0 + timedelta(hours=1), stranger_day, source="google", consent="cookieless")
    back = landing(T0 + timedelta(hours=2), stranger_day, source="bing", consent="cookieless")
    bound = Binding(uuid7(), iso(T0 + timedelta(hours=3)), "a", ada_day, w.keys.user_key("ada"), "login")
    bound.consent = "cookieless"
    await w.store.write([first, walk_in, back, bound])
    assert await one_round(w) == {"touchpoints": 3, "identities": 1}
    assert ada_day not in str(batch_api.calls) and stranger_day not in str(batch_api.calls)
    by_id = batch_api.unique
    track = by_id[f"gw-touch-{first.id}"]
    assert track["userId"] == "ada" and "anonymousId" not in track
    (identify,) = [c for c in batch_api.calls if c["type"] == "identify"]
    assert identify["userId"] == "ada" and "anonymousId" not in identify
    assert identify["traits"]["source_first_source"] == "tiktok"
    # Two landings of one unbound key: two anonymous ones, linked neither to each other nor to
    # anyone else behind that address.
    ids = [by_id[f"gw-touch-{t.id}"].get("anonymousId") for t in (walk_in, back)]
    assert ids == [f"gw-landing-{walk_in.id}", f"gw-landing-{back.id}"]
    assert all("userId" not in by_id[f"gw-touch-{t.id}"] for t in (walk_in, back))
    # On demand, by the same rules and under the same messageIds.
    batch_api.calls.clear()
    ada = w.keys.user_key("ada")
    assert await w.sinks.resend_user([ada]) == {"out": Resent(ada, 2)}
    assert {c["messageId"]: c for c in batch_api.calls} == {k: by_id[k] for k in batch_api.unique}
    assert ada_day not in str(batch_api.calls)


async def test_a_one_day_key_two_users_logged_in_under_names_neither(world, batch_api: BatchApi) -> None:
    """ada and bob behind one NAT with the same browser log in the same day: one day key, bound
    to both. Whose landing it was is not known, so its track names neither user (a track under
    one ``userId`` would be credited to that one at the destination); each user's identify,
    by ``userId`` alone, carries it in its traits, as the gateway's own reports credit it to
    both, and a later landing under that key refreshes both users' traits."""
    w = await world("[identity]\nmode = 'cookieless'\nuser_id_storage = 'encrypt'\n" + sink_toml(batch_api))
    shared = "c" * 32
    morning = landing(T0, shared, source="tiktok", consent="cookieless")
    ada, bob = w.keys.user_key("ada"), w.keys.user_key("bob")
    bindings = [
        Binding(uuid7(), iso(T0 + timedelta(hours=h)), "a", shared, u, "login")
        for h, u in ((1, ada), (2, bob))
    ]
    for b in bindings:
        b.consent = "cookieless"
    await w.store.write([morning, *bindings])
    assert await one_round(w) == {"touchpoints": 1, "identities": 2}
    track = batch_api.unique[f"gw-touch-{morning.id}"]
    assert "userId" not in track and track["anonymousId"] == f"gw-landing-{morning.id}"
    identifies = [c for c in batch_api.calls if c["type"] == "identify"]
    assert [(c["userId"], c.get("anonymousId")) for c in identifies] == [("ada", None), ("bob", None)]
    assert all(c["traits"]["source_first_source"] == "tiktok" for c in identifies)
    evening = landing(T0 + timedelta(hours=5), shared, source="newsletter", consent="cookieless")
    await w.store.write([evening])
    batch_api.calls.clear()
    assert await one_round(w) == {"touchpoints": 3, "identities": 0}
    refreshed = {c["userId"]: c["traits"] for c in batch_api.calls if c["type"] == "identify"}
    assert {u: t["source_last_source"] for u, t in refreshed.items()} == {
        "ada": "newsletter",
        "bob": "newsletter",
    }
    assert shared not in str(batch_api.calls)


async def test_a_one_day_key_s_landing_sent_before_a_second_login_keeps_the_first_user(
    world, batch_api: BatchApi
) -> None:
    """The other order of the test above, as the README promises it: the sink reads ada's
    landing while only ada is bound to the day key, so its track names her; bob logs in under
    that key later. The track is not sent again (it went once, under its messageId), bob's
    identify goes by ``userId`` alone with the landing in its traits, and the key never goes as
    an ``anonymousId``. (The end-to-end test of two cookieless logins hit this order, some runs, when
    it left the sink's rounds to chance.)"""
    w = await world("[identity]\nmode = 'cookieless'\nuser_id_storage = 'encrypt'\n" + sink_toml(batch_api))
    shared = "c" * 32
    morning = landing(T0, shared, source="tiktok", consent="cookieless")
    ada, bob = w.keys.user_key("ada"), w.keys.user_key("bob")
    first, second = (
        Binding(uuid7(), iso(T0 + timedelta(hours=h)), "a", shared, u, "login", consent="cookieless")
        for h, u in ((1, ada), (2, bob))
    )
    await w.store.write([morning, first])
    assert await one_round(w) == {"touchpoints": 1, "identities": 1}
    track = batch_api.unique[f"gw-touch-{morning.id}"]
    assert track["userId"] == "ada" and "anonymousId" not in track
    await w.store.write([second])
    batch_api.calls.clear()
    assert await one_round(w) == {"touchpoints": 0, "identities": 1}
    (identify,) = batch_api.calls
    assert identify["type"] == "identify" and identify["userId"] == "bob" and "anonymousId" not in identify
    assert identify["traits"]["source_first_source"] == "tiktok"
    assert shared not in str(batch_api.calls)


async def test_an_identify_with_nothing_to_say_is_not_sent(world, batch_api: BatchApi) -> None:
    """A user with no landing a sink may send (none recorded, or each made without consent) has
    no source traits: their identify told the destination nothing (until 2026-12-06 it went,
    ``"traits": {}``). It goes, traits and all, once a landing it may send comes in; a re-send
    on demand says there is nothing to send."""
    w = await world("[identity]\nuser_id_storage = 'plain'\n" + sink_toml(batch_api))
    laptop, direct = "1" * 32, "2" * 32
    declined = landing(T0, laptop, source="secret-source", consent="no_consent")
    cara, dan = w.keys.user_key("cara"), w.keys.user_key("dan")
    ts = iso(T0 + timedelta(hours=1))
    await w.store.write(
        [
            declined,
            Binding(uuid7(), ts, "a", laptop, cara, "login"),
            Binding(uuid7(), ts, "a", direct, dan, "signup"),
        ]
    )
    assert await one_round(w) == {"touchpoints": 0, "identities": 0}
    assert batch_api.received == 0
    for user in (cara, dan):
        with pytest.raises(NothingRecorded, match="nothing to send for this user: no landing of theirs"):
            await w.sinks.resend_user([user])
    later = touch(4, laptop, "newsletter")  # cara's laptop again, this time with consent
    await w.store.write([later])
    assert await one_round(w) == {"touchpoints": 2, "identities": 0}
    identify = next(c for c in batch_api.calls if c["type"] == "identify")
    assert identify["userId"] == "cara" and identify["anonymousId"] == laptop
    assert identify["traits"]["source_first_source"] == "newsletter"
    assert "secret-source" not in str(batch_api.calls)


async def test_a_touchpoint_after_the_users_identify_sends_the_traits_again(
    world, batch_api: BatchApi
) -> None:
    """The identify went out with the traits of its time; a touchpoint of the bound visitor
    stored since (a returning visitor's new campaign, a sender's touchpoint arriving after the
    binding) sends them again, as they are now. Until 2026-12-04 the destination kept the old
    (or empty) ``source_last_*`` for ever."""
    w = await world("[identity]\nuser_id_storage = 'plain'\n" + sink_toml(batch_api))
    await seed(w)
    await one_round(w)
    later = touch(5, "1" * 32, "newsletter")  # the laptop again, through a newsletter
    await w.store.write([later])
    assert await one_round(w) == {"touchpoints": 2, "identities": 0}
    track, identify = batch_api.calls[-2:]
    assert track["messageId"] == f"gw-touch-{later.id}" and track["userId"] == "alice"
    assert identify["type"] == "identify" and identify["userId"] == "alice"
    traits = identify["traits"]
    assert traits["source_first_source"] == "tiktok"  # first: unchanged
    assert traits["source_last_source"] == "newsletter" and traits["source_last_timestamp"] == later.ts
    assert await one_round(w) == {"touchpoints": 0, "identities": 0}


async def test_a_touchpoint_without_consent_is_no_trait_either(world, batch_api: BatchApi) -> None:
    """A bound visitor's touchpoint of the ``no_consent`` population is not sent as a track,
    nor as the ``source_first_*``/``source_last_*`` traits of its user's identify (until
    2026-12-04 its source and campaign went out there)."""
    w = await world(sink_toml(batch_api))
    visitor, user_key = "d" * 32, w.keys.user_key("dora")
    consented = touch(0, visitor, "tiktok")
    declined = landing(T0 + timedelta(hours=1), visitor, source="secret-source", consent="no_consent")
    binding = Binding(uuid7(), iso(T0 + timedelta(hours=2)), "a", visitor, user_key, "login")
    await w.store.write([consented, declined, binding])
    assert await one_round(w) == {"touchpoints": 1, "identities": 1}
    assert "secret-source" not in str(batch_api.calls)
    identify = next(c for c in batch_api.calls if c["type"] == "identify")
    assert identify["traits"]["source_last_source"] == "tiktok"


async def test_hash_mode_sends_the_user_key(world, batch_api: BatchApi) -> None:
    w = await world(sink_toml(batch_api))
    _, user_key = await seed(w)
    await one_round(w)
    identify = next(c for c in batch_api.calls if c["type"] == "identify")
    assert identify["userId"] == user_key and "alice" not in str(batch_api.calls)


async def test_failures_are_retried_and_nothing_counts_twice(world, batch_api: BatchApi) -> None:
    w = await world(sink_toml(batch_api, batch_size=2, interval_seconds=0.05, backoff_max_seconds=0.1))
    await w.store.write([touch(n, f"{n:032x}", "news") for n in range(9)])
    batch_api.fail = [500]
    with pytest.raises(SinkError, match="HTTP 500"):
        await one_round(w)
    # Then a batch fails after two were accepted: the read is made again, and only what the
    # destination has not taken goes (it used to send all of it again, under the same messageIds).
    batch_api.fail_on = {batch_api.received + 3: 429}
    task = asyncio.create_task(w.sinks.sinks["out"].run())
    try:
        async with asyncio.timeout(20):
            while len(batch_api.unique) < 9:
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert batch_api.received == 1 + 2 + 1 + 3  # the 500, two batches, the 429, the other three
    assert len(batch_api.calls) == len(batch_api.unique) == 9  # each message once
    assert all(len(b) <= 500_000 for b in batch_api.bodies)


async def test_a_message_the_destination_refuses_is_skipped_not_retried_for_ever(
    world, batch_api: BatchApi, caplog: pytest.LogCaptureFixture
) -> None:
    """A 400 (or 413, 422) says the batch itself is wrong: sent again it fails again, and the
    cursor would wait for ever. The batch is halved until the refused message is alone; it is
    counted and logged, and every other message goes out."""
    w = await world(sink_toml(batch_api, batch_size=8))
    touches = [touch(n, f"{n:032x}", "news") for n in range(11)]
    await w.store.write(touches)
    bad, worse = f"gw-touch-{touches[3].id}", f"gw-touch-{touches[9].id}"
    batch_api.refuse = {bad: 400, worse: 422}
    assert await one_round(w) == {"touchpoints": 9, "identities": 0}
    assert set(batch_api.unique) == {f"gw-touch-{t.id}" for t in touches} - {bad, worse}
    refused = w.sinks.sinks["out"].metrics.sink_messages.labels("out", "refused")._value.get()
    assert refused == 2
    assert bad in caplog.text and "refused" in caplog.text
    assert await one_round(w) == {"touchpoints": 0, "identities": 0}  # the cursor moved past them


async def test_a_read_made_again_sends_only_what_the_destination_has_not_taken(
    world, batch_api: BatchApi
) -> None:
    """The first message is taken, the second fails (500), so the read is made again. Only the
    second goes: it is refused now, as such, and skipped, since the destination took a message
    of this read before (not every message refused: the sink is not at fault)."""
    w = await world(sink_toml(batch_api, batch_size=1))
    touches = [touch(n, f"{n:032x}", "news") for n in range(2)]
    await w.store.write(touches)
    batch_api.fail_on = {2: 500}
    with pytest.raises(SinkError, match="HTTP 500"):
        await one_round(w)
    batch_api.refuse = {f"gw-touch-{touches[1].id}": 400}
    assert await one_round(w) == {"touchpoints": 0, "identities": 0}
    assert batch_api.received == 3 and list(batch_api.unique) == [f"gw-touch-{touches[0].id}"]
    assert w.sinks.sinks["out"].metrics.sink_messages.labels("out", "refused")._value.get() == 1
    assert await one_round(w) == {"touchpoints": 0, "identities": 0}  # the cursor moved past both
    assert batch_api.received == 3


async def test_a_destination_that_refuses_every_message_holds_them_all(world, batch_api: BatchApi) -> None:
    """A receiver that answers 400 to everything (a wrong webhook secret, a wrong URL) is the
    sink's fault, not every message's: nothing is skipped, the cursor waits, and once the
    receiver is fixed every message goes out."""
    w = await world(sink_toml(batch_api, batch_size=4))
    touches = [touch(n, f"{n:032x}", "news") for n in range(6)]
    await w.store.write(touches)
    batch_api.refuse = {f"gw-touch-{t.id}": 400 for t in touches}
    with pytest.raises(
        SinkError,
        match=r"refused every message .*check sinks\[0\]\.url and sinks\[0\]\.secret \(SINK_SECRET\)",
    ):
        await one_round(w)
    assert w.sinks.sinks["out"].metrics.sink_messages.labels("out", "refused")._value.get() == 0
    batch_api.refuse = {}
    assert await one_round(w) == {"touchpoints": 6, "identities": 0}
    assert set(batch_api.unique) == {f"gw-touch-{t.id}" for t in touches}


async def test_a_lone_message_the_destination_refuses_is_said_to_wait_for_the_next_row(
    world, batch_api: BatchApi
) -> None:
    """A quiet site's one new landing, which the destination refuses (a 400 naming the message's
    own fault): until 2026-12-07 the warning said only `the destination refused every message
    …; check sinks[0].url and sinks[0].secret`, sending the operator to a URL and key that are
    right. A lone message cannot tell the two apart, so it still waits (nothing is skipped), but
    the warning says which message, why it waits, and until when."""
    w = await world(sink_toml(batch_api))
    (lone,) = [touch(0, f"{0:032x}", "news")]
    await w.store.write([lone])
    batch_api.refuse = {f"gw-touch-{lone.id}": 400}
    with pytest.raises(SinkError) as refused:
        await one_round(w)
    assert str(refused.value) == (
        f"the destination refused the one message there is to send, gw-touch-{lone.id} (HTTP 400:"
        ' {"error": "invalid message"}); a message it refuses is skipped once it takes another'
        " message beside it, so this one waits for the next row; if it refuses every message,"
        " check sinks[0].url and sinks[0].secret (SINK_SECRET)"
    )
    assert w.sinks.sinks["out"].metrics.sink_messages.labels("out", "refused")._value.get() == 0
    other = touch(1, f"{1:032x}", "news")
    await w.store.write([other])
    assert await one_round(w) == {"touchpoints": 1, "identities": 0}
    assert list(batch_api.unique) == [f"gw-touch-{other.id}"]
    assert w.sinks.sinks["out"].metrics.sink_messages.labels("out", "refused")._value.get() == 1


async def test_refused_credentials_are_retried_and_a_resend_on_demand_reports_a_refusal(
    world, batch_api: BatchApi
) -> None:
    """401 is not the content's fault: the rows wait until the secret is fixed. A re-send on
    demand does not skip a refused message: it tells the operator (502 in the admin API)."""
    w = await world(sink_toml(batch_api))
    touches, user_key = await seed(w)
    batch_api.fail = [401]
    with pytest.raises(
        SinkError, match=r'check sinks\[0\]\.secret \(SINK_SECRET\); it says: \{"error": "try later"\}$'
    ):
        await one_round(w)
    assert await one_round(w) == {"touchpoints": 3, "identities": 2}  # nothing was skipped
    batch_api.refuse = {f"gw-touch-{touches[0].id}": 400}
    with pytest.raises(SinkError, match=r"HTTP 400: .*invalid message"):
        await w.sinks.resend_user([user_key])


def test_pack_respects_count_and_size_limits() -> None:
    options = SinkOptions(
        name="s",
        kind="segment",
        url="http://x",
        secret="env:X",
        batch_size=3,
        max_batch_bytes=5000,
        max_message_bytes=1500,
    )
    small = [{"messageId": str(i), "pad": "x" * 100} for i in range(7)]
    big = [{"messageId": f"b{i}", "pad": "y" * 1400} for i in range(5)]
    huge = [{"messageId": "h", "pad": "z" * 2000}]
    batches, skipped = pack(small + huge + big, options)
    assert skipped == 1
    assert all(len(b) <= 3 for b in batches)
    assert all(200 + sum(len(m) + 1 for m in b) <= 5000 for b in batches)
    assert sum(len(b) for b in batches) == 12


def test_no_batch_body_is_over_max_batch_bytes_even_of_one_message() -> None:
    """``max_message_bytes`` may be as large as ``max_batch_bytes``; a message that fits the
    first but not the second once the batch's envelope is around it went alone in a body over
    ``max_batch_bytes`` (until 2026-12-06), which a destination limited to it refuses. It is
    skipped as too large, as one over ``max_message_bytes`` is."""
    options = SinkOptions(
        name="s", kind="segment", url="http://x", secret="env:X", max_batch_bytes=2000, max_message_bytes=2000
    )
    fits, over = {"messageId": "a", "pad": "x" * 1500}, {"messageId": "b", "pad": "y" * 1960}
    batches, skipped = pack([fits, over], options)
    assert skipped == 1
    assert [[message_id(m) for m in b] for b in batches] == [["a"]]
    assert all(len(batch_body(b)) <= options.max_batch_bytes for b in batches)


async def test_webhook_sink_is_signed_and_a_retry_is_the_same_delivery(world, batch_api: BatchApi) -> None:
    w = await world(sink_toml(batch_api, kind="webhook"))
    await seed(w)
    batch_api.fail = [503]
    with pytest.raises(SinkError):
        await one_round(w)
    await one_round(w)
    first, retry = batch_api.headers[0], batch_api.headers[1]
    assert first["webhook-id"] == retry["webhook-id"]
    headers = {k.lower(): v for k, v in retry.items()}
    now = datetime.now(UTC).timestamp()
    assert (
        verify_standard({"out": [WRITE_KEY.encode()]}, headers, batch_api.bodies[0], now, 300).sender == "out"
    )
    assert {c["type"] for c in batch_api.calls} == {"track", "identify"}


async def test_a_webhook_batch_is_signed_when_it_goes_not_before_the_rate_limit_let_it(
    world, batch_api: BatchApi
) -> None:
    """A batch waits for ``rate_per_second`` (or a ``Retry-After``) before it goes; its
    ``webhook-timestamp`` (and ``sentAt``) were taken before that wait, so a slow rate or a held
    re-send arrived signed in the past, and a receiver's tolerance (our own
    ``webhooks.tolerance_seconds``: 300 s) refused it. With one request a second, each batch's
    timestamp is at least a second after the one before."""
    w = await world(sink_toml(batch_api, kind="webhook", batch_size=1, rate_per_second=1.0))
    await seed(w)
    assert await one_round(w) == {"touchpoints": 3, "identities": 2}
    stamps = [int(h["webhook-timestamp"]) for h in batch_api.headers]
    assert len(stamps) == 5
    assert all(later >= earlier + 1 for earlier, later in itertools.pairwise(stamps)), stamps
    sent_at = [datetime.fromisoformat(json.loads(b)["sentAt"]) for b in batch_api.bodies]
    assert all(later - earlier >= timedelta(seconds=0.9) for earlier, later in itertools.pairwise(sent_at))


async def test_a_sink_url_read_from_the_environment_is_where_it_sends(world, batch_api: BatchApi) -> None:
    """A URL holding credentials (``user:password@``, sent as HTTP Basic) had to be written in
    the config file; ``url = "env:NAME"`` reads it from the environment."""
    toml = sink_toml(batch_api, kind="webhook").replace(f'"{batch_api.url}/hook"', '"env:SINK_URL"')
    assert "env:SINK_URL" in toml
    secret_url = batch_api.url.replace("http://", "http://gw:pa55@") + "/hook?token=t0k"
    w = await world(toml, SINK_URL=secret_url)
    await seed(w)
    assert await one_round(w) == {"touchpoints": 3, "identities": 2}
    assert batch_api.headers[0]["Authorization"] == "Basic " + base64.b64encode(b"gw:pa55").decode()


async def test_resend_user_on_demand(world, batch_api: BatchApi) -> None:
    w = await world("[identity]\nuser_id_storage = 'plain'\n" + sink_toml(batch_api))
    await seed(w, "bob")
    await one_round(w)
    before = dict(batch_api.unique)
    bob = w.keys.user_key("bob")
    sent = await w.sinks.resend_user([bob])
    assert sent == {"out": Resent(bob, 4)}  # two identifies, the two touchpoints of bob's two devices
    assert set(batch_api.unique) == set(before)  # the same messageIds as the first time


async def test_channel_trait(world, batch_api: BatchApi) -> None:
    import aiosqlite

    w = await world(sink_toml(batch_api))
    async with aiosqlite.connect(w.settings.store_path) as db:
        await db.commit()
    touches, _ = await seed(w)
    async with aiosqlite.connect(w.settings.store_path) as db:
        await db.execute("UPDATE touchpoints SET channel = 'social' WHERE id = ?", (touches[0].id,))
        await db.commit()
    await one_round(w)
    identify = next(c for c in batch_api.calls if c["type"] == "identify")
    assert identify["traits"]["source_first_channel"] == "social"
    assert "source_last_channel" in identify["traits"]
    track = next(c for c in batch_api.calls if c["messageId"] == f"gw-touch-{touches[0].id}")
    assert track["properties"]["channel"] == "social"


async def test_erased_user_rows_still_pending_are_never_sent(world, batch_api: BatchApi) -> None:
    """Erasure reaches the sinks' queue: rows of the user not yet sent are gone from the log
    the sink reads, so the next round sends only other visitors' rows."""
    from storage.erasure import erase_user

    w = await world(sink_toml(batch_api))
    stranger = touch(0, "9" * 32, "news")
    await w.store.write([stranger])
    assert await one_round(w) == {"touchpoints": 1, "identities": 0}  # sent before: the cursor moved
    touches, user_key = await seed(w)  # alice's rows: pending
    erasure = await erase_user(
        w.settings.store_path, user_key, "alice", body_key=b"k" * 32, event_id=uuid7(), ts=iso(T0), node="a"
    )
    assert erasure.counts["touchpoints"] == 2 and erasure.counts["identities"] == 2
    batch_api.calls.clear()
    assert await one_round(w) == {"touchpoints": 1, "identities": 0}  # the unbound visitor only
    sent = {c.get("properties", {}).get("campaign") for c in batch_api.calls if c["type"] == "track"}
    assert sent == {touches[2].campaign}
    assert user_key not in str(batch_api.calls) and "alice" not in str(batch_api.calls)
    assert not [c for c in batch_api.calls if c["type"] == "identify"]


async def test_an_erasure_while_a_read_is_being_sent_stops_its_next_batches(
    world, batch_api: BatchApi
) -> None:
    """A read's batches go out at the sink's rate (here one a second, one message each): alice is
    erased after the first went. Her messages, read before, used to follow in the next batches;
    now the next batch finds the erasure, the read is made again, and nothing of hers is sent.
    The batch the destination took before the erasure is not sent again."""
    from storage.erasure import erase_user

    w = await world(sink_toml(batch_api, batch_size=1, rate_per_second=1.0))
    await w.store.write([touch(0, "9" * 32, "news")])  # read first: the first batch
    touches, user_key = await seed(w)
    task = asyncio.create_task(one_round(w))
    async with asyncio.timeout(10):
        while not batch_api.calls:
            await asyncio.sleep(0.01)
    assert [c["properties"]["source"] for c in batch_api.calls] == ["news"]
    await erase_user(
        w.settings.store_path, user_key, "alice", body_key=b"k" * 32, event_id=uuid7(), ts=iso(T0), node="a"
    )
    async with asyncio.timeout(20):
        sent = await task
    assert sent == {"touchpoints": 2, "identities": 0}  # the first touch, and the unbound visitor's
    tracked = [c["properties"]["source"] for c in batch_api.calls if c["type"] == "track"]
    assert tracked == ["news", touches[2].source]  # the first one once
    assert len(batch_api.unique) == 2
    assert user_key not in str(batch_api.calls) and "alice" not in str(batch_api.calls)


async def test_lag_seconds_keeps_up_while_the_sink_backs_off(world, batch_api: BatchApi) -> None:
    """A failing destination is retried after a backoff (at least 0.25 s, up to
    ``backoff_max_seconds``); the age of the oldest unsent row is kept current meanwhile, every
    ``interval_seconds``: a row written after the last attempt shows before the next one, its
    wait growing; its event an hour old, the age is still how long it has waited since written
    (until 2026-12-07 it read the hour)."""
    w = await world(sink_toml(batch_api, interval_seconds=0.02, backoff_max_seconds=300))
    await w.store.write([landing(datetime.now(UTC), "a" * 32, source="ads")])
    assert await one_round(w) == {"touchpoints": 1, "identities": 0}  # sent: no touchpoint waits
    batch_api.fail = [500] * 1000
    metrics = w.sinks.sinks["out"].metrics
    errors = metrics.sync_errors.labels("sink:out")
    age = metrics.sync_lag_seconds.labels("sink:out", "touchpoints")
    task = asyncio.create_task(w.sinks.sinks["out"].run())
    try:
        binding = Binding(uuid7(), iso(datetime.now(UTC)), "a", "a" * 32, w.keys.user_key("u"), "login")
        await w.store.write([binding])  # something to fail on (its identify)
        async with asyncio.timeout(10):
            while not errors._value.get():
                await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)  # the lag published after the failure (the next try: 0.25 s at least)
        assert age._value.get() == 0
        old = landing(datetime.now(UTC) - timedelta(hours=1), "b" * 32, source="news")
        await w.store.write([old])
        async with asyncio.timeout(10):
            while age._value.get() < 0.05:
                await asyncio.sleep(0.005)
        assert age._value.get() < 3600  # how long it waited, not its event's age
        assert errors._value.get() == 1  # no attempt meanwhile: the wait refreshed it
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _raw_answer_warning(
    world, raw_upstream, caplog: pytest.LogCaptureFixture, answer: bytes, path: str
) -> tuple[str, str, Any]:
    """A webhook sink at ``path`` (its URL from the environment) of a raw server that answers
    every request with the bytes ``answer``: its first retry warning, the server's host and port,
    and the world it ran in."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()

    base = await raw_upstream(handler)
    toml = '[[sinks]]\nname = "out"\nkind = "webhook"\nurl = "env:HOOK_URL"\nsecret = "env:SINK_SECRET"\n'
    w = await world(toml + "backoff_max_seconds = 600.0\n", HOOK_URL=f"{base}{path}")
    await w.store.write([touch(0, "1" * 32, "news")])
    caplog.set_level(logging.WARNING, "gateway.sinks")
    return await _first_retry_warning(w, caplog), base.removeprefix("http://"), w


async def _first_retry_warning(w: World, caplog: pytest.LogCaptureFixture) -> str:
    """Run the sink until it logs its first failure; that line."""
    lines = await run_sink_until(w, caplog, "retrying in", 10)
    return next(m for r in lines if "retrying in" in (m := r.getMessage()))


@pytest.mark.parametrize("status", [429, 503])
async def test_a_retry_after_date_holds_the_sink_and_the_log_says_until_when(
    world, upstream_server, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    """``Retry-After`` may be an HTTP-date, and comes with a 503 too (RFC 9110 §10.2.3): the
    sink waits that long, and its log line gives the wait it really makes (until 2026-12-04 a
    date, or a 503's, was ignored, and after a 429 the line gave the backoff's shorter one)."""

    async def busy(request: web.Request) -> web.Response:
        later = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
        return web.Response(status=status, headers={"Retry-After": later})

    app = web.Application()
    app.router.add_post("/v1/batch", busy)
    api = BatchApi(url=await upstream_server(app))
    w = await world(sink_toml(api, backoff_max_seconds=600.0))
    await w.store.write([touch(0, "1" * 32, "news")])
    caplog.set_level(logging.WARNING, "gateway.sinks")
    line = await _first_retry_warning(w, caplog)
    assert f"HTTP {status}" in line
    assert float(line.split("retrying in ")[1].split(" s")[0]) > 100


async def test_a_retry_after_shorter_than_the_rate_limit_does_not_hasten_the_next_request(
    world, upstream_server, caplog: pytest.LogCaptureFixture
) -> None:
    """`rate_per_second = 0.01` is one request every 100 s. A 429 whose `Retry-After` asked for
    less (1 s) set the next request's time to it, over the rate limit's: the sink tried again
    after 1 s (until 2026-12-07). A `Retry-After` holds the requests longer, never shorter."""

    async def busy(request: web.Request) -> web.Response:
        return web.json_response({"error": "slow down"}, status=429, headers={"Retry-After": "1"})

    app = web.Application()
    app.router.add_post("/v1/batch", busy)
    api = BatchApi(url=await upstream_server(app))
    w = await world(sink_toml(api, rate_per_second=0.01, backoff_max_seconds=600.0))
    await w.store.write([touch(0, "1" * 32, "news")])
    caplog.set_level(logging.WARNING, "gateway.sinks")
    line = await _first_retry_warning(w, caplog)
    assert "HTTP 429" in line and "Retry-After: 1" in line, line
    assert float(line.split("retrying in ")[1].split(" s")[0]) > 90, line


async def test_a_destination_that_does_not_answer_in_time_is_named_by_its_limit(
    world, upstream_server, caplog: pytest.LogCaptureFixture
) -> None:
    """A timeout's own text is empty: the log said ``TimeoutError: `` and nothing more."""
    release = asyncio.Event()

    async def silent(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response()

    app = web.Application()
    app.router.add_post("/v1/batch", silent)
    api = BatchApi(url=await upstream_server(app))
    w = await world(sink_toml(api, timeout_seconds=0.2))
    await w.store.write([touch(0, "1" * 32, "news")])
    caplog.set_level(logging.WARNING, "gateway.sinks")
    try:
        line = await _first_retry_warning(w, caplog)
    finally:
        release.set()
    assert "no answer within sinks[0].timeout_seconds (0.2 s)" in line


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 120 ", 120.0),
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0),  # a date gone by: no wait
        ("soon", None),
        ("1e5", None),
        # A year past a C long made the date parser raise OverflowError: it escaped the sink's
        # send (``gateway sink send`` printed a traceback) instead of being read as no date.
        ("Mon, 01 Jan 99999999999999999999 00:00:00 GMT", None),
    ],
)
def test_a_retry_after_that_is_no_delay_or_date_is_ignored(value: str, seconds: float | None) -> None:
    assert retry_after_seconds(value) == seconds


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_is_not_followed_and_nothing_is_counted_sent(
    world, upstream_server, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    """An endpoint that moved answers 3xx. aiohttp followed it: after a 301, 302 or 303 with
    a GET and no body, whose 200 (the new address's page) counted the batch as sent and moved
    the cursor, so the messages were lost; after a 307 or 308 with the batch and the write key
    to wherever the ``Location`` said. Now a redirect is a failure naming ``sinks.url`` and
    where it points, retried with backoff, the cursor held."""
    bodies: list[bytes] = []

    async def moved(request: web.Request) -> web.Response:
        raise _redirect(status, "/elsewhere")

    async def elsewhere(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        return web.json_response({"success": True})

    app = web.Application()
    app.router.add_post("/v1/batch", moved)
    app.router.add_route("*", "/elsewhere", elsewhere)
    api = BatchApi(url=await upstream_server(app))
    w = await world(sink_toml(api, backoff_max_seconds=600.0))
    await w.store.write([touch(0, "1" * 32, "news")])
    caplog.set_level(logging.WARNING, "gateway.sinks")
    line = await _first_retry_warning(w, caplog)
    assert f"HTTP {status}" in line and "sinks[0].url" in line and "/elsewhere" in line, line
    assert bodies == []  # nothing went to the other address
    db = await open_log(w.settings)
    try:
        async with db.execute("SELECT count(*) FROM sync_cursors WHERE position > 0") as cursor:
            assert (await cursor.fetchone())[0] == 0  # the cursor did not move
    finally:
        await db.close()
    assert w.sinks.sinks["out"].metrics.sink_messages.labels("out", "sent")._value.get() == 0


@pytest.mark.parametrize(
    ("location", "said"),
    [
        ("https://{at}/hooks/tok_s3cr3t?key=k3y", "https://{at} (the same path and query)"),
        (
            "/moved/tok_n3w",
            "http://{at} (another path: not said, as sinks[0].url is read from HOOK_URL, a secret)",
        ),
    ],
    ids=["to-https", "elsewhere"],
)
async def test_a_redirect_of_a_url_from_the_environment_does_not_log_its_token(
    world, upstream_server, caplog: pytest.LogCaptureFixture, location: str, said: str
) -> None:
    """A URL that holds a token belongs in the environment (`url = "env:NAME"`), and the log
    names its host and port, never the URL. A redirect's `Location` was logged whole: the most
    common one, http:// to https:// on the same path, repeated the URL, token and all (until
    2026-12-07). Now its scheme, host and port, and whether its path and query are the same."""

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently(location.format(at=request.host))

    app = web.Application()
    app.router.add_post("/hooks/tok_s3cr3t", moved)
    base = await upstream_server(app)
    at = base.removeprefix("http://")
    toml = '[[sinks]]\nname = "out"\nkind = "webhook"\nurl = "env:HOOK_URL"\nsecret = "env:SINK_SECRET"\n'
    w = await world(toml + "backoff_max_seconds = 600.0\n", HOOK_URL=f"{base}/hooks/tok_s3cr3t?key=k3y")
    await w.store.write([touch(0, "1" * 32, "news")])
    caplog.set_level(logging.WARNING, "gateway.sinks")
    line = await _first_retry_warning(w, caplog)
    assert "s3cr3t" not in line and "k3y" not in line and "n3w" not in line, line
    expected = (
        f"sink out failed (HTTP 301: the destination redirects to {said.format(at=at)}, not followed;"
        " set sinks[0].url (HOOK_URL) to where it moved); retrying in "
    )
    assert line.startswith(expected), line


def _redirect(status: int, location: str) -> web.HTTPException:
    kinds: dict[int, type[web.HTTPMove]] = {
        301: web.HTTPMovedPermanently,
        302: web.HTTPFound,
        303: web.HTTPSeeOther,
        307: web.HTTPTemporaryRedirect,
        308: web.HTTPPermanentRedirect,
    }
    return kinds[status](location)


async def test_a_failing_destination_is_one_warning_and_one_recovery(
    world, batch_api: BatchApi, caplog: pytest.LogCaptureFixture
) -> None:
    """A destination answering 500 four times, then taking the batch: one warning, the
    retries at debug level, and one line when it is over (until 2026-12-04 a warning for
    every retry: an endpoint down for a night filled the log)."""
    w = await world(sink_toml(batch_api, interval_seconds=0.05, backoff_max_seconds=0.05))
    await w.store.write([touch(0, "1" * 32, "news")])
    batch_api.fail = [500, 500, 500, 500]
    lines = await run_until_recovered(w, caplog)
    warnings = [r.getMessage() for r in lines if r.levelno >= logging.WARNING]
    said = 'sink out failed (HTTP 500: {"error": "try later"})'  # the destination's words too
    assert warnings == [warnings[0]] and warnings[0].startswith(said), warnings
    assert len([r for r in lines if r.levelno == logging.DEBUG and "HTTP 500" in r.getMessage()]) == 3
    assert len([r for r in lines if "sink out recovered after 4 failed attempts" in r.getMessage()]) == 1
    assert len(batch_api.unique) == 1


async def test_a_sinks_backlog_shows_going_down_read_by_read(
    world, upstream_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sink's lag gauge goes down after each read delivered, not only once the round is
    over (until 2026-12-04 it kept the count from before the round)."""
    import storage.sinks

    monkeypatch.setattr(storage.sinks, "READ_ROWS", 2)
    seen: list[float] = []
    holder: list[World] = []

    async def take(request: web.Request) -> web.Response:
        seen.append(
            holder[0].sinks.sinks["out"].metrics.sync_lag_rows.labels("sink:out", "touchpoints")._value.get()
        )
        return web.json_response({"success": True})

    app = web.Application()
    app.router.add_post("/v1/batch", take)
    api = BatchApi(url=await upstream_server(app))
    w = await world(sink_toml(api))
    holder.append(w)
    await w.store.write([touch(n, f"{n:032x}", "news") for n in range(5)])
    db = await open_log(w.settings)
    try:
        await w.sinks.sinks["out"].publish_lag(db)
        await w.sinks.sinks["out"].round(db)
    finally:
        await db.close()
    assert seen == [5, 3, 1]  # as each read goes out: what waited before it


@pytest.mark.parametrize(
    "answer",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
        b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"succ',  # cut short
        b"",  # the connection closed with no answer
    ],
    ids=["not-http", "bad-length", "cut-short", "nothing"],
)
async def test_a_malformed_answer_is_a_retried_failure(
    world, raw_upstream, caplog: pytest.LogCaptureFixture, answer: bytes
) -> None:
    """An answer that is not HTTP, or stops before its end, is not taken for an acceptance: the
    batch is retried, the cursor held, the log says what the client saw (no traceback)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()

    url = await raw_upstream(handler)
    w = await world(sink_toml(BatchApi(url=url), backoff_max_seconds=600.0))
    await w.store.write([touch(0, "1" * 32, "news")])
    caplog.set_level(logging.WARNING, "gateway.sinks")
    line = await _first_retry_warning(w, caplog)
    assert line.startswith("sink out failed (") and "\n" not in line, line
    # What the client saw: no HTTP, or an answer cut short (said so, and what to check).
    assert "check sinks[0].url" in line and "ClientPayloadError" not in line, line
    assert not any(r.exc_info for r in caplog.records)
    assert w.sinks.sinks["out"].metrics.sink_messages.labels("out", "sent")._value.get() == 0


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (
            b"garbage\r\n\r\n",
            "the answer from {at} is not HTTP (Bad status line: Expected HTTP/, RTSP/ or ICE/:"
            " b'garbage' ^): another service than an HTTP server listens there, or an https://"
            " destination is asked in http://; check sinks[0].url",
        ),
        (
            b"\x15\x03\x01\x00\x02\x02\x46",  # a TLS alert: an https:// server asked in http://
            "the answer from {at} is not HTTP (Bad status line: Expected HTTP/, RTSP/ or ICE/:"
            " b'\\x15\\x03\\x01\\x00\\x02\\x02F' ^): another service than an HTTP server listens"
            " there, or an https:// destination is asked in http://; check sinks[0].url",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
            "the answer from {at} is not HTTP (Invalid character in Content-Length: b'Content-Length:"
            " abc' ^): another service than an HTTP server listens there, or an https:// destination"
            " is asked in http://; check sinks[0].url",
        ),
        (
            b"",
            "{at} closed the connection without an answer: a kept-alive connection it closed"
            " meanwhile, or another service than an HTTP server listens there (a database's port?),"
            " or an https:// destination is asked in http://; check sinks[0].url if it lasts",
        ),
    ],
    ids=["not-http", "tls-alert", "bad-length", "nothing"],
)
async def test_an_answer_that_is_not_http_names_the_address_not_the_url(
    world, raw_upstream, caplog: pytest.LogCaptureFixture, answer: bytes, said: str
) -> None:
    """A webhook sink's URL may hold a token (in the environment, as a secret: `env:NAME`). An
    answer that is not HTTP was logged as aiohttp's words, which quote the URL, token and all,
    over several lines (until 2026-12-07); a connection closed with no answer as
    `ServerDisconnectedError: Server disconnected`, with no word of what to check. Now one line,
    naming the host and port and what to check."""

    line, at, _ = await _raw_answer_warning(world, raw_upstream, caplog, answer, "/hooks/tok_s3cr3t?key=k3y")
    assert "s3cr3t" not in line and "k3y" not in line and "\n" not in line, line
    assert line.startswith(f"sink out failed ({said.format(at=at)}); retrying in "), line


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"succ', 200),
        (b'HTTP/1.1 500 Oops\r\nContent-Length: 100\r\n\r\n{"err', 500),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n", 200),
    ],
    ids=["length-200", "length-500", "chunked-200"],
)
async def test_an_answer_cut_short_names_the_address_and_its_status_not_aiohttps_words(
    world, raw_upstream, caplog: pytest.LogCaptureFixture, answer: bytes, status: int
) -> None:
    """A connection closed in the middle of the answer's body (a proxy in front of the
    destination restarting, a destination cutting it) is retried, and said with the host and
    port, the status the answer began with and what to check. Until 2026-12-07 it was aiohttp's
    words, `ClientPayloadError: Response payload is not completed: <ContentLengthError: 400,
    message='Not enough data to satisfy content length header (received 6 of 100 bytes).'>`:
    a 400 that no one answered, a 500 left unsaid, and a new problem whenever the byte count
    changed."""

    line, at, w = await _raw_answer_warning(world, raw_upstream, caplog, answer, "/hooks/tok_s3cr3t")
    said = (
        f"sink out failed (the answer from {at} (HTTP {status}) was cut short: the connection closed"
        " before its end (the destination, or a proxy in front of it, restarting or cutting it);"
        " the batch goes again; check sinks[0].url if it lasts); retrying in "
    )
    assert line.startswith(said), line
    assert "s3cr3t" not in line and "Error" not in line, line
    assert w.sinks.sinks["out"].metrics.sink_messages.labels("out", "sent")._value.get() == 0


async def test_an_accepting_answer_that_does_not_end_is_read_no_further(world, raw_upstream) -> None:
    """A 200 whose body streams on (a misbehaving proxy in front of the destination) is read up
    to 64 KiB: the batch counts as accepted, where reading it whole waited for the timeout and
    sent the batch again, for ever."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(100):  # 100 KiB, then nothing more, the connection left open
            writer.write(b"400\r\n" + b"x" * 1024 + b"\r\n")
        await writer.drain()
        await reader.read()  # until the sink closes it

    url = await raw_upstream(handler)
    w = await world(sink_toml(BatchApi(url=url), timeout_seconds=60.0))
    await w.store.write([touch(0, "1" * 32, "news")])
    async with asyncio.timeout(30):
        sent = await one_round(w)
    assert sent["touchpoints"] == 1


async def test_a_destination_that_cannot_be_reached_names_the_url_to_check(
    world, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing listening (or no such host, or its TLS refused): the line names the entry's url.
    It said it in aiohttp's words until 2026-12-06, `Cannot connect to host 127.0.0.1:8000
    ssl:default [Connect call failed …]`, which speak of TLS to a plain http:// destination and
    never say "refused"; now as the doctor says an upstream's."""
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    w = await world(sink_toml(BatchApi(url=f"http://127.0.0.1:{port}"), backoff_max_seconds=600.0))
    await w.store.write([touch(0, "1" * 32, "news")])
    caplog.set_level(logging.WARNING, "gateway.sinks")
    line = await _first_retry_warning(w, caplog)
    said = f"(connection refused: nothing listens on 127.0.0.1:{port}; check sinks[0].url); retrying in"
    assert said in line and "ssl:default" not in line, line


async def test_a_refusal_quoting_the_raw_user_id_is_logged_without_it(
    world, upstream_server, caplog: pytest.LogCaptureFixture
) -> None:
    """Under ``user_id_storage = "encrypt"`` a message carries the raw user ID, and a destination
    may quote the message it refuses: the log line and the error keep its answer but not the ID
    (until 2026-12-05 its first 200 characters were logged as they came)."""
    user = 'ada-4242@example.com "x"'

    async def quoting(request: web.Request) -> web.Response:
        users = [m["userId"] for m in (await request.json())["batch"] if "userId" in m]
        if not users:
            return web.json_response({"success": True})
        return web.json_response({"error": "unknown user", "userIds": users}, status=400)

    app = web.Application()
    app.router.add_post("/v1/batch", quoting)
    api = BatchApi(url=await upstream_server(app))
    w = await world("[identity]\nuser_id_storage = 'encrypt'\n" + sink_toml(api))
    await seed(w, user_id=user)
    caplog.set_level(logging.WARNING, "gateway.sinks")
    # The touchpoints: the unbound visitor's goes, the bound two are refused and skipped; the
    # identify calls: every one refused, held for a retry with the answer in the error.
    with pytest.raises(SinkError, match=r"refused every message .*unknown user") as refused:
        await one_round(w)
    lines = [r.getMessage() for r in caplog.records if "refused message" in r.getMessage()]
    assert len(lines) == 2 and all('"userIds": ["<userId>"]' in line for line in lines)
    assert "ada-4242" not in caplog.text and "ada-4242" not in str(refused.value)


async def test_a_wrong_path_says_to_check_the_url_and_what_a_segment_url_is(
    world, batch_api: BatchApi
) -> None:
    """A segment URL whose base path is wrong (a proxy's `/segment` that is not there) makes
    every batch a 404, which said `HTTP 404` alone (until 2026-12-05): now what to check, and
    that the segment URL is the API base. The rows wait. (Segment's whole `…/v1/batch`, pasted
    as `sinks.url`, is a config problem since 2026-12-07: test_config.)"""
    w = await world(sink_toml(BatchApi(url=batch_api.url + "/segment")))
    await w.store.write([touch(0, "1" * 32, "news")])
    with pytest.raises(SinkError) as wrong:
        await one_round(w)
    assert str(wrong.value) == (
        "HTTP 404: the destination has no such endpoint; check sinks[0].url: a segment sink's is"
        " the API base (https://api.segment.io), to which /v1/batch is appended; it says: 404: Not Found"
    )
    hook = await world(sink_toml(BatchApi(url=batch_api.url + "/nowhere"), kind="webhook"))
    with pytest.raises(
        SinkError,
        match=r"^HTTP 404: .* no such endpoint; check sinks\[0\]\.url; it says: 404: Not Found$",
    ):
        await hook.sinks.sinks["out"].send([{"messageId": "m1", "type": "track"}])
    assert batch_api.calls == []


async def test_a_resend_held_off_by_retry_after_says_how_long(world, upstream_server) -> None:
    """`gateway sink send` and `POST /api/sinks/…` send once and report a failure; a 429 said
    `HTTP 429` alone (until 2026-12-05), where the destination had said when to try again."""

    async def busy(request: web.Request) -> web.Response:
        return web.json_response({"error": "slow down"}, status=429, headers={"Retry-After": "7"})

    app = web.Application()
    app.router.add_post("/v1/batch", busy)
    w = await world(sink_toml(BatchApi(url=await upstream_server(app))))
    _, user_key = await seed(w)
    with pytest.raises(SinkError) as held:
        await w.sinks.resend_user([user_key])
    said = 'HTTP 429: {"error": "slow down"}; the destination asks to wait 7 s (Retry-After: 7)'
    assert str(held.value) == said


async def test_a_resend_while_the_destination_asks_the_sink_to_wait_says_so_at_once(
    world, upstream_server
) -> None:
    """A 429's ``Retry-After`` holds the sink's next request (up to ``backoff_max_seconds``, a
    day at most). A re-send on demand (``POST /api/sinks/…``) made meanwhile waited the whole
    hold inside the admin request, saying nothing (until 2026-12-06): now, for a hold longer than
    one request may take (``timeout_seconds``), it answers at once that the destination asked to
    wait, and how long is left, and sends nothing."""
    received = 0

    async def busy(request: web.Request) -> web.Response:
        nonlocal received
        received += 1
        return web.json_response({"error": "slow down"}, status=429, headers={"Retry-After": "3600"})

    app = web.Application()
    app.router.add_post("/v1/batch", busy)
    w = await world(sink_toml(BatchApi(url=await upstream_server(app)), backoff_max_seconds=7200.0))
    _, user_key = await seed(w)
    with pytest.raises(SinkError):
        await one_round(w)  # the background round: held for an hour
    assert received == 1
    with pytest.raises(SinkError) as held:
        async with asyncio.timeout(20):
            await w.sinks.resend_user([user_key])
    assert received == 1  # nothing sent against the destination's word
    said = str(held.value)
    assert said.startswith("the destination asked to wait (HTTP 429, Retry-After: 3600): 3600 s"), said
    assert said.endswith("left; nothing sent: try again then"), said


async def test_a_failing_destination_s_own_words_are_said_short_and_safe(
    world, upstream_server, caplog: pytest.LogCaptureFixture
) -> None:
    """A 500 or a 429 was said as `HTTP 500`, `HTTP 429` alone (until 2026-12-05), in the log,
    by `gateway sink send` and the admin API, where the destination (Segment's JSON error, a
    proxy's page) had said why. Now its words, cut to 200 characters, on one line, their control
    characters escaped (an answer must not forge a log line or recolour a terminal), the raw
    user IDs it quotes taken out, and the Retry-After as it came."""
    answers: list[web.Response] = []

    async def failing(request: web.Request) -> web.Response:
        users = [m["userId"] for m in (await request.json())["batch"] if "userId" in m]
        if not answers:
            return web.json_response({"success": True})
        answer = answers.pop(0)
        if answer.text is not None:
            answer.text = answer.text.replace("USERS", users[0] if users else "")
        return answer

    def down(status: int, **headers: str) -> web.Response:
        text = '{"error": "upstream\tdown",\n  "users": "USERS", "\x1b[2Jsee": "' + "x" * 300 + '"}'
        return web.Response(status=status, text=text, content_type="application/json", headers=headers)

    app = web.Application()
    app.router.add_post("/v1/batch", failing)
    api = BatchApi(url=await upstream_server(app))
    w = await world("[identity]\nuser_id_storage = 'encrypt'\n" + sink_toml(api, backoff_max_seconds=0.05))
    _, user_key = await seed(w, user_id="ada@example.com")
    start = 'HTTP 500: {"error": "upstream down", "users": "<userId>", "\\x1b[2Jsee": "xxx'
    answers.append(down(500))
    with pytest.raises(SinkError) as failed:
        await w.sinks.resend_user([user_key])
    said = str(failed.value)
    assert said.startswith(start) and said.endswith("x…"), said
    assert len(said) == len("HTTP 500: ") + 200 + len("\\x1b") - 1 + 1, said  # the escape counts 4
    assert "ada@" not in said and "\x1b" not in said and "\n" not in said

    answers.append(web.json_response({"error": "rate limited"}, status=429, headers={"Retry-After": "7"}))
    with pytest.raises(SinkError) as held:
        await w.sinks.resend_user([user_key])
    said = str(held.value)
    assert said == 'HTTP 429: {"error": "rate limited"}; the destination asks to wait 7 s (Retry-After: 7)'
    answers.append(down(429, **{"Retry-After": "soon"}))
    with pytest.raises(
        SinkError, match=r"xxx…; Retry-After: soon, neither seconds nor an HTTP-date: ignored$"
    ):
        await w.sinks.resend_user([user_key])
    answers.append(web.Response(status=503))  # no words: the status alone, as before
    with pytest.raises(SinkError, match=r"^HTTP 503$"):
        await w.sinks.resend_user([user_key])

    # The background task's log line quotes them alike.
    caplog.set_level(logging.WARNING, "gateway.sinks")
    answers.append(down(502))
    lines = await run_sink_until(w, caplog, "failed")
    (line,) = [r.getMessage() for r in lines if "failed" in r.getMessage()]
    assert line.startswith("sink out failed (" + start.replace("500", "502")), line
    assert "ada@" not in caplog.text and "\x1b" not in caplog.text


@pytest.mark.parametrize("status", [401, 403, 404, 405, 410])
async def test_refused_credentials_and_a_wrong_path_quote_the_destinations_words_after_our_hint(
    world, upstream_server, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    """A 401 or 403 said `check sinks[0].secret`, a 404, 405 or 410 `check sinks[0].url`, and
    nothing of what the destination said (until 2026-12-05), where that often says exactly what
    is wrong (Segment: "Invalid write key"). Now its words follow our hint, as short and safe as
    a 5xx's: one line, control characters escaped, the batch's raw user IDs taken out."""

    async def refusing(request: web.Request) -> web.Response:
        users = [m["userId"] for m in (await request.json())["batch"] if "userId" in m]
        text = '{"message": "Invalid write key",\n "user": "' + users[0] + '", "\x1b[2J": 1}'
        return web.Response(status=status, text=text, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/batch", refusing)
    api = BatchApi(url=await upstream_server(app))
    w = await world("[identity]\nuser_id_storage = 'encrypt'\n" + sink_toml(api, backoff_max_seconds=0.05))
    _, user_key = await seed(w, user_id="ada@example.com")
    words = '{"message": "Invalid write key", "user": "<userId>", "\\x1b[2J": 1}'
    hint = {
        401: "the destination refuses the credentials; check sinks[0].secret (SINK_SECRET)",
        404: "the destination has no such endpoint; check sinks[0].url: a segment sink's is the API"
        " base (https://api.segment.io), to which /v1/batch is appended",
    }[401 if status in (401, 403) else 404]
    with pytest.raises(SinkError) as refused:  # `gateway sink send`, the admin API's 502
        await w.sinks.resend_user([user_key])
    assert str(refused.value) == f"HTTP {status}: {hint}; it says: {words}"

    caplog.set_level(logging.WARNING, "gateway.sinks")
    line = await _first_retry_warning(w, caplog)  # the background task's log line
    assert line.startswith(f"sink out failed (HTTP {status}: {hint}; it says: {words}); retrying in"), line
    assert "ada@" not in caplog.text and "\x1b" not in caplog.text


async def test_an_outage_whose_answers_change_on_every_request_is_still_one_warning(
    world, upstream_server, caplog: pytest.LogCaptureFixture
) -> None:
    """A destination whose error embeds a request ID and a time says something new on every
    request: each retry was logged at info level as a new problem (`still failing, now (…)`,
    until 2026-12-05), an outage flooding the log. What is compared is what stays the same (the
    status, our hint): one warning with its words, the retries at debug level, one recovery; a
    new status is still a new problem, said at info level."""
    answered = 0

    async def failing(request: web.Request) -> web.Response:
        nonlocal answered
        answered += 1
        if answered > 4:
            return web.json_response({"success": True})
        request_id = f"{answered:x}f3a9c{answered * 7919:06d}"
        return web.json_response(
            {"error": "internal error", "request_id": request_id, "at": datetime.now(UTC).isoformat()},
            status=503 if answered == 4 else 500,
        )

    app = web.Application()
    app.router.add_post("/v1/batch", failing)
    api = BatchApi(url=await upstream_server(app))
    w = await world(sink_toml(api, interval_seconds=0.05, backoff_max_seconds=0.05))
    await w.store.write([touch(0, "1" * 32, "news")])
    lines = await run_until_recovered(w, caplog)
    failing = [(r.levelno, r.getMessage()) for r in lines if "HTTP 50" in r.getMessage()]
    assert [level for level, _ in failing] == [logging.WARNING, logging.DEBUG, logging.DEBUG, logging.INFO]
    assert failing[0][1].startswith(
        'sink out failed (HTTP 500: {"error": "internal error", "request_id": "1f3'
    )
    assert '"request_id": "3f3a9c023757"' in failing[2][1]  # its own words, at debug level
    assert failing[3][1].startswith("sink out still failing, now (HTTP 503: "), failing
    recovered = [r for r in lines if "sink out recovered after 4 failed attempts" in r.getMessage()]
    assert len(recovered) == 1 and recovered[0].levelno == logging.INFO


async def test_a_resend_on_demand_sends_nothing_of_a_user_erased_while_it_waits(
    world, batch_api: BatchApi
) -> None:
    """A re-send on demand (``POST /api/sinks/…``, ``gateway sink send``) reads the user's
    messages, then waits for the sink's rate limit (or a batch of the background round still in
    flight). An erasure of the user stored meanwhile used to be no matter: the messages read
    before it went out after it, raw user ID and traits, to a third party. Now the re-send sees
    the erasure before each batch, as the background round does, and says the user was erased."""
    from storage.erasure import erase_user

    toml = "[identity]\nuser_id_storage = 'plain'\n"
    w = await world(toml + sink_toml(batch_api, rate_per_second=0.25))  # one request each 4 s
    _, user_key = await seed(w)
    await one_round(w)  # sent once: the next request waits for the rate limit
    batch_api.calls.clear()
    resend = asyncio.create_task(w.sinks.resend_user([user_key]))
    await asyncio.sleep(0.5)  # read, and waiting for the rate limit
    await erase_user(
        w.settings.store_path, user_key, "alice", body_key=b"k" * 32, event_id=uuid7(), ts=iso(T0), node="a"
    )
    with pytest.raises(NothingRecorded) as erased:
        async with asyncio.timeout(20):
            await resend
    assert str(erased.value).startswith("nothing recorded for this user: erased on ")
    assert batch_api.calls == []  # nothing of hers left the machine after the erasure


async def test_a_tls_failure_is_said_as_the_doctor_says_it_not_in_aiohttps_words(
    world, batch_api: BatchApi, tmp_path: Path
) -> None:
    """An https:// sink URL of a destination that speaks plain HTTP, or whose certificate no CA
    the gateway trusts signed, failed in aiohttp's words (until 2026-12-07): `ClientConnectorSSLError:
    Cannot connect to host 127.0.0.1:8000 ssl:default [[SSL: WRONG_VERSION_NUMBER] wrong version
    number (_ssl.c:1006)]; check sinks[0].url`. Now as `gateway doctor` says it, with what to do."""
    import ssl

    from tests.gateway.test_upstream import self_signed

    plain = batch_api.url.replace("http://", "https://")
    w = await world(sink_toml(BatchApi(url=plain)))
    await w.store.write([touch(0, "1" * 32, "news")])
    with pytest.raises(SinkError) as failed:
        await one_round(w)
    where = plain.removeprefix("https://")
    assert str(failed.value) == (
        f"{where} does not answer in TLS: it likely speaks plain HTTP there;"
        " write sinks[0].url with http://, or name its TLS port"
    )
    cert_file, key_file = await asyncio.to_thread(self_signed, tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    await asyncio.to_thread(context.load_cert_chain, cert_file, key_file)
    app = web.Application()
    app.router.add_post("/v1/batch", batch_api.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        where = f"127.0.0.1:{runner.addresses[0][1]}"
        await asyncio.to_thread((tmp_path / "b").mkdir)
        w = await world(sink_toml(BatchApi(url=f"https://{where}")))
        await w.store.write([touch(0, "1" * 32, "news")])
        with pytest.raises(SinkError) as failed:
            await one_round(w)
    finally:
        await runner.cleanup()
    assert str(failed.value) == (
        f"the TLS certificate of {where} is not trusted: self-signed certificate; give the"
        " destination a certificate a public CA signed, or point SSL_CERT_FILE in the gateway's"
        " environment at the CA that signed it (check sinks[0].url)"
    )
    assert batch_api.calls == []


async def erasing_destination(
    upstream_server: Callable[[web.Application], Awaitable[str]], erase: Callable[[], Awaitable[object]]
) -> BatchApi:
    """A batch API that stores an erasure (``erase``) while it takes its first batch, before it
    answers: the sender's next batch is the first to find it."""
    api, erased = BatchApi(), asyncio.Event()

    async def handle(request: web.Request) -> web.StreamResponse:
        if not erased.is_set():
            erased.set()
            await erase()
        return await api.handle(request)

    app = web.Application()
    app.router.add_post("/v1/batch", handle)
    api.url = await upstream_server(app)
    return api


async def test_a_resend_counts_what_the_destination_took_before_an_erasure(world, upstream_server) -> None:
    """A re-send on demand whose batches an erasure interrupts reads the user's messages again,
    and answered the count of that second read alone, though the destination had taken a batch
    of the first: here alice's identify, its traits from a device erased since (its landing
    gone, her identifies carry the phone's traits alone: new messages). Now it counts every
    message the destination took from the re-send."""
    from storage.erasure import erase_visitor

    made: list[World] = []

    async def forget_laptop() -> object:  # one of alice's devices, not alice: she is still sent
        w = made[0]
        return await erase_visitor(
            w.settings.store_path,
            ["1" * 32],
            body_key=b"k" * 32,
            keys=w.keys,
            event_id=uuid7(),
            ts=iso(T0),
            node="a",
        )

    api = await erasing_destination(upstream_server, forget_laptop)
    made.append(await world(sink_toml(api, batch_size=1)))
    _, alice = await seed(made[0])
    async with asyncio.timeout(20):
        sent = await made[0].sinks.resend_user([alice])
    # Her first identify (the traits of both devices) before the erasure; then the two
    # identifies of the phone's traits and the phone's track: four, each once.
    assert [c["type"] for c in api.calls] == ["identify", "identify", "identify", "track"], api.calls
    assert len(api.unique) == 4
    assert sent == {"out": Resent(alice, 4)}, sent


async def test_a_resend_read_again_after_an_erasure_sends_nothing_twice(world, upstream_server) -> None:
    """Another user's erasure interrupts alice's re-send: her messages, read again, are the same,
    and the one the destination had taken went again (counted once). As a background round's
    read made again, it now sends only what the destination has not taken."""
    from storage.erasure import erase_user

    made: list[World] = []

    async def forget_bob() -> object:
        w = made[0]
        bob = w.keys.user_key("bob")
        return await erase_user(
            w.settings.store_path, bob, "bob", body_key=b"k" * 32, event_id=uuid7(), ts=iso(T0), node="a"
        )

    api = await erasing_destination(upstream_server, forget_bob)
    made.append(await world(sink_toml(api, batch_size=1)))
    _, alice = await seed(made[0])
    bob = made[0].keys.user_key("bob")
    await made[0].store.write([Binding(uuid7(), iso(T0), "a", "4" * 32, bob, "signup")])
    async with asyncio.timeout(20):
        sent = await made[0].sinks.resend_user([alice])
    assert len(api.calls) == len(api.unique) == 4, api.calls  # the first batch not sent again
    assert sent == {"out": Resent(alice, 4)}, sent


async def test_identify_traits_of_two_devices_landing_in_one_millisecond_follow_time(
    world, batch_api: BatchApi
) -> None:
    """A user's laptop lands, and 800 µs later, in the same millisecond, their phone, through
    another worker process whose id for it came out smaller. The identify's first-touch traits
    were the phone's (the smaller id), its last-touch traits the laptop's."""
    w = await world(sink_toml(batch_api))
    laptop, phone = "1" * 32, "2" * 32
    ms = int(T0.timestamp() * 1000)
    first = replace(
        touch(0, laptop, "tiktok"), ts=iso(T0 + timedelta(microseconds=100)), id=_format(ms, 0x800, 1)
    )
    last = replace(
        touch(0, phone, "google"), ts=iso(T0 + timedelta(microseconds=900)), id=_format(ms, 0x100, 2)
    )
    assert last.id < first.id
    user_key = w.keys.user_key("alice")
    at = iso(T0 + timedelta(hours=1))
    bindings = [Binding(uuid7(), at, "a", v, user_key, "login") for v in (laptop, phone)]
    await w.store.write([first, last, *bindings])
    await one_round(w)
    traits = [c for c in batch_api.calls if c["type"] == "identify"][-1]["traits"]
    assert (traits["source_first_source"], traits["source_last_source"]) == ("tiktok", "google")
    assert (traits["source_first_timestamp"], traits["source_last_timestamp"]) == (first.ts, last.ts)
