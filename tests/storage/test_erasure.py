"""The erasure's search of the kept bad events (``storage.erasure.BadEventSearch``): made
before the erasure's write transaction, brought up to date inside it, with the same answer as
one search made inside it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.badbody import seal
from gateway.events import BadEvent, Binding
from gateway.ids import uuid7
from gateway.keys import Keys, spellings
from gateway.metrics import Metrics
from gateway.options import StorageOptions
from storage.erasure import BadEventSearch, bound_visitors, erase_user, keys_named
from storage.local import LocalStore, connect
from tests.storage.stores import OpenStore, query

TS = "2026-11-25T12:00:00.000000Z"
KEYS = Keys.from_master(b"m" * 32)
SEAL = b"s" * 32
ALICE = KEYS.user_key("alice@example.com")


def bad(body: str, reason: str = "unmapped event") -> BadEvent:
    return BadEvent(uuid7(), TS, "n", "crm", seal(SEAL, reason), seal(SEAL, body))


def bound(device: str, user: str = ALICE) -> Binding:
    return Binding(uuid7(), TS, "n", KEYS.visitor_key(device), user, "login")


async def test_a_bad_event_stored_after_the_first_search_is_found_by_the_final_one(
    open_store: OpenStore,
) -> None:
    """The erasure opens the bad events before taking the write lock; landings go on meanwhile.
    A bad event stored after that first search, naming the user or one of their devices, and a
    device bound to the user after it, named by a bad event searched already, are found by the
    search brought up to date (inside the lock); a device no longer bound is not sought."""
    store = await open_store()
    early = bad('{"anonymousId": "phone-1"}')
    gone = bad('{"anonymousId": "watch-1"}')
    tablet_early = bad('{"anonymousId": "tablet-1"}')
    stranger = bad('{"anonymousId": "stranger-1", "userId": "bob"}')
    await store.write([bound("phone-1"), bound("watch-1"), early, gone, tablet_early, stranger])
    search = BadEventSearch(SEAL, KEYS, dict.fromkeys(spellings("alice@example.com"), "raw"))
    db = await connect(store.path)
    try:
        await search.update(db, await bound_visitors(db, ALICE))
        assert sorted(search.naming(["raw", *await bound_visitors(db, ALICE)])) == sorted([early.id, gone.id])
        # Between the two steps: new bad events, a new device, a binding gone (retention).
        by_id = bad('{"userId": "alice@example.com"}')
        by_cookie = bad("anonymous_id=v1.phone-1.tag", reason="not JSON")
        other = bad('{"anonymousId": "stranger-2"}')
        await store.write([by_id, by_cookie, other, bound("tablet-1")])
        await db.execute("DELETE FROM identities WHERE visitor_key = ?", (KEYS.visitor_key("watch-1"),))
        visitors = await bound_visitors(db, ALICE)
        await search.update(db, visitors)
        found = search.naming(["raw", *visitors])
    finally:
        await db.close()
    assert sorted(found) == sorted([early.id, tablet_early.id, by_id.id, by_cookie.id])


async def test_a_bad_event_deleted_between_the_two_steps_is_not_counted(open_store: OpenStore) -> None:
    """Found by the first search, then deleted (retention, another erasure) before the lock: the
    count is of the bad events the erasure deleted, as before."""
    store = await open_store()
    first, second = bad('{"userId": "alice@example.com"}'), bad('{"anonymousId": "phone-1"}')
    await store.write([bound("phone-1"), first, second])
    search = BadEventSearch(SEAL, KEYS, dict.fromkeys(spellings("alice@example.com"), "raw"))
    db = await connect(store.path)
    try:
        await search.update(db, await bound_visitors(db, ALICE))
        await db.execute("DELETE FROM bad_events WHERE id = ?", (first.id,))
        await search.update(db, await bound_visitors(db, ALICE))
    finally:
        await db.close()
    assert search.naming(["raw", KEYS.visitor_key("phone-1")]) == [second.id]


async def test_the_final_search_opens_only_the_bad_events_stored_since(open_store: OpenStore) -> None:
    """The step inside the write lock is the cheap one: it opens the bad events stored after the
    first search, not every one again; those opened before are opened again only for a device
    bound to the user since, and then searched for that device alone."""
    store = await open_store()
    await store.write([bound("phone-1"), *(bad(f'{{"anonymousId": "other-{n}"}}') for n in range(5))])
    search = BadEventSearch(SEAL, KEYS, dict.fromkeys(spellings("alice@example.com"), "raw"))
    db = await connect(store.path)
    try:
        await search.update(db, await bound_visitors(db, ALICE))
        assert search.opened == 5
        late = bad('{"userId": "alice@example.com"}')
        await store.write([late, bad('{"anonymousId": "other-6"}')])
        await search.update(db, await bound_visitors(db, ALICE))
        assert search.opened == 7 and search.naming(["raw"]) == [late.id]
        await store.write([bound("other-3")])  # a device bound meanwhile: every one searched for it
        visitors = await bound_visitors(db, ALICE)
        await search.update(db, visitors)
        assert search.opened == 14 and len(search.naming(["raw", *visitors])) == 2
    finally:
        await db.close()


async def fill(path: Path) -> list[str]:
    """A user with two devices and rows of each, and bad events naming them or others; the ids
    of the bad events of the user's."""
    store = LocalStore(path, StorageOptions(), Metrics())
    await store.open()
    ours = [
        bad('{"userId": "alice@example.com"}'),
        bad('{"anonymousId": "phone-1"}'),
        bad("{", reason="bad JSON: 'alice@example.com' is not mapped"),
        bad('{"anonymousId": "v1.laptop-1.x"}'),
    ]
    theirs = [bad('{"userId": "bob"}'), bad('{"anonymousId": "stranger"}'), bad("", reason="empty")]
    await store.write([bound("phone-1"), bound("laptop-1"), bound("bob-phone", KEYS.user_key("bob"))])
    await store.write([*ours, *theirs])
    await store.close()
    return [event.id for event in ours]


async def test_the_erasure_answers_as_one_search_under_the_lock_did(tmp_path: Path) -> None:
    """The dry run and the erasure count the same, and delete exactly the user's bad events."""
    path = tmp_path / "gw.db"
    ours = await fill(path)

    async def erase(dry_run: bool) -> tuple[list[str], dict[str, int]]:
        erasure = await erase_user(
            path,
            ALICE,
            "alice@example.com",
            body_key=SEAL,
            event_id=uuid7(),
            ts=TS,
            node="n",
            dry_run=dry_run,
            keys=KEYS,
        )
        return sorted(erasure.visitors), erasure.counts

    dry = await erase(True)
    done = await erase(False)
    assert dry == done
    assert done[0] == sorted([KEYS.visitor_key("phone-1"), KEYS.visitor_key("laptop-1")])
    assert done[1] == {
        "verdict_changes": 0,
        "touchpoints": 0,
        "conversions": 0,
        "identities": 2,
        "bad_events": 4,
    }
    left = {row[0] for row in await asyncio.to_thread(query, path, "SELECT id FROM bad_events")}
    assert len(left) == 3 and not left & set(ours)


async def erased_ids(store_path: Path, user_id: str, events: list[BadEvent]) -> set[str]:
    """Erase ``user_id`` (bound to phone-1) from a store holding ``events``: the ids taken."""
    store = LocalStore(store_path, StorageOptions(), Metrics())
    await store.open()
    await store.write([bound("phone-1", KEYS.user_key(user_id)), *events])
    await store.close()
    await erase_user(
        store_path,
        KEYS.user_key(user_id),
        user_id,
        body_key=SEAL,
        event_id=uuid7(),
        ts=TS,
        node="n",
        keys=KEYS,
    )
    left = {row[0] for row in await asyncio.to_thread(query, store_path, "SELECT id FROM bad_events")}
    return {event.id for event in events} - left


async def test_the_raw_user_id_is_found_in_any_case(tmp_path: Path) -> None:
    """A sender writes an e-mail or a UUID as its system holds it (``Alice@Example.COM``, an
    upper-case UUID): a refused body so written kept the raw ID after the erasure of
    ``alice@example.com``. The search, a substring one already, ignores case."""
    uuid = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
    named = [
        bad('{"userId": "Alice@Example.COM"}'),
        bad("not JSON", reason="user_id (/user_id): 'ALICE@EXAMPLE.COM' is not a known user"),
        bad('{"userId": "mailto:ALICE@example.com"}'),
    ]
    others = [bad('{"userId": "bob@example.com"}'), bad('{"userId": "alice@example.org"}')]
    assert await erased_ids(tmp_path / "a.db", "alice@example.com", named + others) == {e.id for e in named}
    upper = bad('{"userId": "' + uuid.upper() + '"}')
    assert await erased_ids(tmp_path / "b.db", uuid, [upper, bad('{"userId": "x"}')]) == {upper.id}


async def test_the_raw_user_id_is_found_as_a_whole_id_not_inside_a_longer_one(tmp_path: Path) -> None:
    """Erasing user ``42`` took every kept bad event with ``42`` anywhere in it (a price of
    420, a timestamp, another user ``1042``): other senders' refused events, kept to be replayed
    once their mapping is fixed, were gone. The raw ID counts where no letter or digit touches
    it on either side, whatever stands around it (a quote, ``:``, ``=``, a space, a ``.``)."""
    named = [
        bad('{"userId": 42}'),
        bad('{"userId": "42"}'),
        bad("user=42&plan=pro", reason="not JSON"),
        bad("not JSON", reason="user_id (/user_id): 'user:42' is not a known user"),
    ]
    others = [
        bad('{"userId": "1042", "price": 420}'),
        bad('{"userId": "x", "ts": 1733442000}'),
        bad('{"userId": "u42"}'),
    ]
    assert await erased_ids(tmp_path / "a.db", "42", named + others) == {e.id for e in named}
    sentence = bad("not JSON", reason="no user named alice@example.com.")
    longer = bad('{"userId": "alice@example.community"}')
    found = await erased_ids(tmp_path / "b.db", "alice@example.com", [sentence, longer])
    assert found == {sentence.id}


async def test_the_raw_user_id_is_found_behind_a_json_escape_in_any_case(tmp_path: Path) -> None:
    """The search ignored case on the body as stored: an ID a sender's JSON library escaped
    (Python's ``json``, .NET's encoder) in another case than the one erased, ``J\\u00d6RG`` for
    ``jörg``, was a different text (``\\u00d6`` is no ``\\u00f6`` in any case), and the raw ID
    outlived the erasure; and an ID after a ``\\n`` in a JSON string (a note's second line) was
    touched by the ``n``, so no whole ID. A JSON string's escapes are read as what they stand for."""
    named = [
        bad('{"userId": "J\\u00d6RG"}'),
        bad('{"userId": "J\\u00D6RG"}'),
        bad('{"userId": "j\\u00f6rg"}'),
        bad('{"note": "customer:\\nJ\\u00d6RG"}'),
    ]
    others = [bad('{"userId": "J\\u00d6RGEN"}'), bad('{"userId": "j\\u00f6rg2"}')]
    assert await erased_ids(tmp_path / "a.db", "jörg", named + others) == {e.id for e in named}
    second_line = bad('{"note": "customer:\\n42"}')
    found = await erased_ids(tmp_path / "b.db", "42", [second_line, bad('{"note": "x\\n420"}')])
    assert found == {second_line.id}


async def test_the_raw_user_id_is_found_percent_encoded(tmp_path: Path) -> None:
    """A sender that posts a form (``user_id=frank%40example.com&…``: not JSON, so refused and
    kept as it came), or a body holding a URL with the user in its query: the ID is there
    percent-encoded, as every form and URL writes an ``@``, a ``+`` or a non-ASCII letter, and
    an erasure of ``frank@example.com`` left it at rest. Percent escapes are read as what they
    stand for (UTF-8), as JSON escapes are."""
    named = [
        bad("user_id=frank%40example.com&value=5", reason="body: not valid JSON"),
        bad('{"url": "https://shop.example/welcome?email=FRANK%40Example.com&x=1"}'),
        bad('{"userId": "frank%40example.com"}'),
    ]
    others = [bad("user_id=frank%40example.community"), bad("user_id=xfrank%40example.com")]
    assert await erased_ids(tmp_path / "a.db", "frank@example.com", named + others) == {e.id for e in named}
    plus = bad("email=frank%2Btag%40example.com&plan=pro")
    found = await erased_ids(
        tmp_path / "b.db", "frank+tag@example.com", [plus, bad("email=frank%40example.com")]
    )
    assert found == {plus.id}
    umlaut = bad("name=j%C3%B6rg&x=1")
    assert await erased_ids(tmp_path / "c.db", "JÖRG", [umlaut, bad("name=j%C3%B6rgen")]) == {umlaut.id}


async def test_a_numeric_user_id_is_not_found_inside_a_date_a_time_or_a_decimal(tmp_path: Path) -> None:
    """Nearly every refused body carries an ISO timestamp (``"timestamp": "2026-12-05T10:42:00Z"``):
    erasing user ``12`` took every kept bad event sent in December (or on a 12th, at 12 o'clock,
    at minute 12), user ``42`` every one sent at minute or second 42, or with a price of 42.50,
    as ``-``, ``:`` and ``.`` let the ID count as a word of its own. Between two digits they
    join one number (a date, a time, a decimal), which names no user; beside a letter, or at the
    end of a sentence, they still separate the ID."""
    named = [
        bad('{"userId": "12", "timestamp": "2026-11-05T10:30:00Z"}'),
        bad("not JSON", reason="no user named 12."),
        bad('{"userId": "user:12"}'),
        bad('{"userId": "crm-12"}'),
    ]
    others = [
        bad('{"userId": "x", "timestamp": "2026-12-05T10:42:00Z"}'),
        bad('{"userId": "x", "sentAt": "2026-11-12"}'),
        bad('{"userId": "x", "at": "12:05"}'),
        bad('{"userId": "x", "price": 12.50, "tax": 3.12}'),
        bad('{"userId": "x", "path": "/v2/12/7"}'),
    ]
    assert await erased_ids(tmp_path / "a.db", "12", named + others) == {e.id for e in named}


async def test_a_visitor_id_joined_into_a_longer_value_is_found(tmp_path: Path) -> None:
    """A visitor's raw ID is sought keyed, word by word: one a sender joined into a longer value
    (``anon:phone-1``, a path or fragment of a URL) was no word of its own, and the bad event
    naming the erased user's device stayed. The parts of a word between ``:`` ``/`` ``?`` ``#``
    ``|`` and ``\\`` are words too."""
    named = [
        bad('{"anonymousId": "anon:phone-1"}'),
        bad('{"page": "https://shop.example/devices/phone-1#top"}'),
        bad("device=ios|phone-1", reason="not JSON"),
    ]
    others = [bad('{"anonymousId": "anon:phone-10"}'), bad('{"page": "https://shop.example/phone-1x"}')]
    assert await erased_ids(tmp_path / "a.db", "carol", named + others) == {e.id for e in named}


def test_a_hashed_user_key_is_found_inside_a_longer_value() -> None:
    """The central sync knows an erased user by their hashed key alone: each word a bad event
    names is hashed. ``mailto:alice@example.com`` was one word, the ID in it never hashed."""
    hashed = KEYS.user_key("alice@example.com")
    texts = ['{"contact": "mailto:alice@example.com"}']
    assert keys_named(KEYS, texts, [hashed], users=True) == {hashed}
    assert keys_named(KEYS, ['{"contact": "mailto:alice@example.co"}'], [hashed], users=True) == set()


async def test_a_visitor_is_erased_alone_under_every_key_its_id_may_be(tmp_path: Path) -> None:
    """``erase_visitor``: 32 hex digits are a visitor_key and a raw ID (a UUID written without
    dashes) at once, and the journey lookup tries both: the erasure erases both; the dry run
    counts what the erasure then deletes; the user it is bound to keeps the binding."""
    from gateway.events import Conversion, Touchpoint
    from storage.erasure import erase_visitor

    path = tmp_path / "gw.db"
    given = "0123456789abcdef0123456789abcdef"
    as_raw = KEYS.visitor_key(given)
    store = LocalStore(path, StorageOptions(), Metrics())
    await store.open()
    await store.write(
        [
            Touchpoint(uuid7(), TS, "n", given, source="a"),
            Touchpoint(uuid7(), TS, "n", as_raw, source="b"),
            Touchpoint(uuid7(), TS, "n", KEYS.visitor_key("stranger"), source="c"),
            Conversion(uuid7(), TS, "n", "buy", "order:1", as_raw, ALICE, 5.0, "EUR"),
            Binding(uuid7(), TS, "n", given, ALICE, "login"),
            bad(f'{{"anonymousId": "{given}"}}'),
            bad('{"anonymousId": "stranger"}'),
        ]
    )
    await store.close()

    async def erase(dry_run: bool) -> tuple[list[str], dict[str, int], int]:
        erasure, bound = await erase_visitor(
            path,
            [given, as_raw],
            body_key=SEAL,
            keys=KEYS,
            event_id=uuid7(),
            ts=TS,
            node="n",
            dry_run=dry_run,
        )
        assert erasure.user_key == given
        return erasure.visitors, erasure.counts, bound

    dry = await erase(True)
    assert dry == await erase(False)
    assert dry == (
        [given, as_raw],
        {"verdict_changes": 0, "touchpoints": 2, "conversions": 1, "identities": 0, "bad_events": 1},
        1,
    )
    left = await asyncio.to_thread(query, path, "SELECT visitor_key FROM touchpoints")
    assert [tuple(row) for row in left] == [(KEYS.visitor_key("stranger"),)]
    bindings = await asyncio.to_thread(query, path, "SELECT visitor_key, user_key FROM identities")
    assert [tuple(row) for row in bindings] == [(given, ALICE)]
    assert len(await asyncio.to_thread(query, path, "SELECT id FROM bad_events")) == 1


async def test_a_visitor_id_is_found_percent_encoded(tmp_path: Path) -> None:
    """A device's raw ID in a form a sender posted (``visitor_id=ios%7Cphone-1``: not JSON, kept
    as it came) or in a URL's query is percent-encoded, as the user's ID is there: the user's
    was found, the device's was not, and the bad event outlived the erasure. Both searches read
    percent escapes alike."""
    named = [
        bad("visitor_id=phone%2D1&value=5", reason="body: not valid JSON"),
        bad('{"page": "https://shop.example/?anon=phone%2d1&x=1"}'),
        bad("cookie=v1.phone%2D1.tag", reason="not JSON"),
    ]
    others = [bad("visitor_id=phone%2D10"), bad("visitor_id=xphone%2D1")]
    assert await erased_ids(tmp_path / "a.db", "carol", named + others) == {e.id for e in named}


def test_a_hashed_user_key_is_found_percent_encoded() -> None:
    """The central sync's search hashes each word a bad event names: a form's
    ``email=alice%40example.com`` was hashed as written, and the erased user's refused event
    stayed on every other node."""
    hashed = KEYS.user_key("alice@example.com")
    assert keys_named(KEYS, ["email=alice%40example.com&plan=pro"], [hashed], users=True) == {hashed}
    assert keys_named(KEYS, ["email=alice%40example.co"], [hashed], users=True) == set()
