"""Event IDs (UUIDv7) and key derivation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import multiprocessing
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from gateway.entropy import random_bytes, random_id, random_u64
from gateway.events import iso
from gateway.ids import Uuid7, uuid7
from gateway.keys import Keys, Mac, derive


def test_uuid7_layout_and_order() -> None:
    ids = [uuid7(1_700_000_000_000 + n) for n in range(50)]
    assert ids == sorted(ids)
    parsed = uuid.UUID(ids[0])
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert int(parsed.hex[:12], 16) == 1_700_000_000_000


def test_uuid7_unique_within_a_millisecond() -> None:
    assert len({uuid7(1) for _ in range(10_000)}) == 10_000


def test_iso_matches_isoformat_across_seconds_zones_and_1970() -> None:
    """``iso`` reuses the last second's text: every instant still reads as isoformat says, in
    time order, out of order, around 1970 (negative Unix times) and from another time zone."""
    start = datetime(1969, 12, 31, 23, 59, 58, 999_000, tzinfo=UTC)
    instants = [start + timedelta(microseconds=n) for n in range(0, 3_000_000, 1_001)]
    instants += [
        datetime(2026, 12, 2, 9, 30, 0, n, tzinfo=timezone(timedelta(hours=5))) for n in (0, 999_999)
    ]
    for ts in instants + instants[::-7]:
        assert iso(ts) == ts.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"
    assert (
        iso(datetime(2026, 12, 2, 4, 30, tzinfo=timezone(timedelta(hours=5))))
        == "2026-12-01T23:30:00.000000Z"
    )


def test_keys_are_purpose_bound_and_deterministic() -> None:
    keys = Keys.from_master(b"m" * 32)
    assert keys.cookie_mac != keys.visitor_hash
    assert Keys.from_master(b"m" * 32) == keys
    assert Keys.from_master(b"n" * 32).visitor_hash != keys.visitor_hash
    assert derive(b"m" * 32, "a") != derive(b"m" * 32, "b")


def test_visitor_key_is_a_keyed_hash() -> None:
    keys = Keys.from_master(b"m" * 32)
    key = keys.visitor_key("abc")
    assert len(key) == 32 and "abc" not in key
    assert Keys.from_master(b"x" * 32).visitor_key("abc") != key


def test_monotonic_source_orders_ids_within_a_millisecond() -> None:
    new_id = Uuid7()
    ids = [new_id(5_000) for _ in range(2000)]
    assert ids == sorted(ids) and len(set(ids)) == 2000
    assert all(uuid.UUID(i).version == 7 and uuid.UUID(i).variant == uuid.RFC_4122 for i in ids)
    assert all(str(uuid.UUID(i)) == i and int(i[:8] + i[9:13], 16) == 5_000 for i in ids)
    later = new_id(5_001)
    assert later > ids[-1]
    assert uuid.UUID(new_id(4_000)).version == 7  # older timestamps still get valid IDs


def test_user_key_modes() -> None:
    hashed = Keys.from_master(b"m" * 32)
    key = hashed.user_key("alice@example.com")
    assert len(key) == 32 and "alice" not in key and key == hashed.user_key("alice@example.com")
    assert hashed.recover_user_id(key) is None
    sealed = Keys.from_master(b"m" * 32, "encrypt")
    enc = sealed.user_key("alice@example.com")
    assert enc.startswith("siv:") and "alice" not in enc
    assert enc == sealed.user_key("alice@example.com")  # deterministic: found again by raw ID
    assert sealed.recover_user_id(enc) == "alice@example.com"
    assert Keys.from_master(b"x" * 32, "encrypt").recover_user_id(enc) is None  # other secret
    assert sealed.recover_user_id("siv:!!not-base64") is None
    plain = Keys.from_master(b"m" * 32, "plain")
    assert plain.recover_user_id(plain.user_key("u1")) == "u1"


@pytest.mark.parametrize("key", [b"", b"k" * 32, b"\xff" * 64, bytes(range(200))])
@pytest.mark.parametrize("msg", [b"", b"v1.abc", b"x" * 1000])
def test_mac_is_hmac_sha256(key: bytes, msg: bytes) -> None:
    assert Mac(key).digest(msg) == hmac.new(key, msg, hashlib.sha256).digest()


def test_stored_keys_keep_their_definition() -> None:
    """Keys already at rest stay findable: the visitor and user keys are still HMAC-SHA256."""
    keys = Keys.from_master(b"m" * 32)
    assert keys.visitor_key("abc") == hmac.new(keys.visitor_hash, b"abc", hashlib.sha256).hexdigest()[:32]
    assert keys.user_key("u1") == hmac.new(keys.user_hash, b"u1", hashlib.sha256).hexdigest()[:32]


def test_pooled_random_bytes_are_never_handed_out_twice() -> None:
    seen = {random_bytes(16) for _ in range(2_000)}  # crosses several 4 KiB blocks
    assert len(seen) == 2_000
    assert {len(random_bytes(n)) for n in (1, 10, 16, 5000)} == {1, 10, 16, 5000}


def test_a_forked_worker_never_shares_the_parents_random_bytes() -> None:
    random_bytes(16)  # the parent's pool now holds unused bytes a careless child would reuse
    random_u64()  # and its 64-bit numbers
    random_id()  # and its visitor IDs
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        child = pool.apply(random_bytes, (16,))
        child_number = pool.apply(random_u64)
        child_id = pool.apply(random_id)
    assert child != random_bytes(16)
    assert child_number != random_u64()
    assert child_id != random_id()


def test_pooled_visitor_ids_are_16_random_bytes_in_base64url_and_never_handed_out_twice() -> None:
    """As ``_b64(os.urandom(16))`` gave them: 22 characters that decode to 16 bytes and are
    that encoding's own spelling of them (its last character carries 2 bits, not 6)."""
    ids = [random_id() for _ in range(2_000)]  # crosses several 4 KiB blocks
    assert len(set(ids)) == 2_000
    for visitor_id in ids:
        raw = base64.urlsafe_b64decode(visitor_id + "==")
        assert len(raw) == 16
        assert base64.urlsafe_b64encode(raw).rstrip(b"=").decode() == visitor_id
    assert {visitor_id[-1] for visitor_id in ids} == set("AQgw")  # 2 bits: every value seen
    assert len({c for visitor_id in ids for c in visitor_id}) == 64  # the whole alphabet


def test_pooled_random_numbers_are_64_bit_and_never_handed_out_twice() -> None:
    numbers = [random_u64() for _ in range(5_000)]  # crosses several 4 KiB blocks
    assert len(set(numbers)) == 5_000
    assert all(0 <= n < 1 << 64 for n in numbers)
    assert max(numbers).bit_length() > 60  # the whole width is used


def test_a_visitor_named_as_the_cookie_header_has_it_is_found_by_its_cookie() -> None:
    """An operator pastes the visitor's cookie as the browser sent it (``gw_vid=v1.…``, the
    whole ``Cookie`` header, or the value in quotes), as a sender may name a visitor: the
    lookup and an erasure read the visitor in it, as signed events do (``gateway.mapping``),
    and still the text's own key, under which a sender's such ID was kept before that."""
    from addons.identity import cookie_value

    keys = Keys.from_master(b"m" * 40)
    cookie = cookie_value(keys.cookie_mac, "A" * 22)
    for given in (f"gw_vid={cookie}", f"sessionid=x; gw_vid={cookie}; _ga=GA1.2.3", f'"{cookie}"', cookie):
        named = keys.named_visitor_keys(given)
        assert named[0] == keys.visitor_key("A" * 22), given
        assert named[-1] == keys.visitor_key(given if given != cookie else "A" * 22), given
    assert keys.named_visitor_keys("a=b") == [keys.visitor_key("a=b")]
