"""Groups of people and their shares (``storage/people.py``): everything one conversion can
touch lands in one share, every visitor is read by exactly one share, and a person is the
user of a visitor's earliest binding."""

from __future__ import annotations

from bisect import bisect_right
from itertools import pairwise, product

import pytest

from storage.people import People, Share, Snapshot

NONE = Snapshot(None, 0)

# Keys spread over the key space as keyed hashes are (hexadecimal), and one that is not.
ALICE, BOB, CAROL, DAVE = "1a" * 16, "9b" * 16, "e3" * 16, "45" * 16
PHONE, LAPTOP, TABLET = "0f" * 16, "c1" * 16, "7e" * 16  # ALICE's devices
SHARED = "88" * 16  # bound to BOB and to CAROL: one group of both
KIOSK = "d0" * 16  # bound to nobody; a conversion recorded for DAVE on it joins DAVE
DAVES = "3c" * 16
ERIN, ERINS = "5e" * 16, "a7" * 16  # a conversion recorded for ERIN on ALICE's laptop joins them
LONE, ODD = "2b" * 16, "lone-visitor"

BINDINGS = [
    (PHONE, ALICE),
    (LAPTOP, ALICE),
    (TABLET, ALICE),
    (SHARED, BOB),
    ("f0" * 16, BOB),
    (SHARED, CAROL),
    ("01" * 16, CAROL),
    (DAVES, DAVE),
    (ERINS, ERIN),
]
CONVERSIONS = [
    (PHONE, None),
    (SHARED, CAROL),
    (KIOSK, DAVE),
    (LAPTOP, ERIN),
    (LONE, None),
    (ODD, None),
    (None, ALICE),
]


def shares(workers: int) -> list[People]:
    return [People(BINDINGS, CONVERSIONS, Share(i, workers, NONE, NONE)) for i in range(workers)]


def devices(visitor: str | None, user: str | None) -> set[str]:
    """What ``Reports._load`` reads for a conversion: its visitor, and every visitor bound to
    its user or to a user its visitor is bound to."""
    users = {u for v, u in BINDINGS if v == visitor} | ({user} if user else set())
    return {v for v, u in BINDINGS if u in users} | ({visitor} if visitor else set())


def group(people: list[People], visitor: str) -> int:
    """The share that reads ``visitor``: its key range's unless left out, or one that reads it
    besides its range."""
    readers = []
    for share in people:
        extra, foreign = share.visitors()
        lo, hi = share.share.keys if share.share else (None, None)
        in_range = (lo is None or visitor >= lo) and (hi is None or visitor < hi)
        if (in_range and visitor not in foreign) or visitor in extra:
            readers.append(share.share.worker if share.share else 0)
    assert len(readers) == 1, (visitor, readers)
    return readers[0]


@pytest.mark.parametrize("workers", [2, 3, 4, 7])
def test_each_conversion_is_in_one_share_with_every_device_it_can_touch(workers: int) -> None:
    people = shares(workers)
    for visitor, user in CONVERSIONS:
        owners = [p.share.worker for p in people if p.share and p.mine(visitor, user)]
        assert len(owners) == 1
        assert all(group(people, device) == owners[0] for device in devices(visitor, user))


@pytest.mark.parametrize("workers", [2, 3, 5])
def test_every_visitor_is_read_by_exactly_one_share(workers: int) -> None:
    people = shares(workers)
    seen = {v for v, _ in BINDINGS} | {v for v, _ in CONVERSIONS if v}
    for visitor in seen | {"00" * 16, "ff" * 16, "zzz"}:
        group(people, visitor)  # asserts a single reader


def test_a_group_is_whole_in_one_share_however_far_apart_its_keys() -> None:
    """ALICE's devices lie in three different quarters of the key space, and ERIN's device in
    the fourth; BOB and CAROL share a device, so their five keys are one group; DAVE's and the
    kiosk his conversion came from."""
    people = shares(4)
    assert len({bisect_right(people[0]._cuts, v) for v in (PHONE, LAPTOP, TABLET, ERINS)}) == 4
    for members in ([PHONE, LAPTOP, TABLET, ERINS], [SHARED, "f0" * 16, "01" * 16], [KIOSK, DAVES]):
        assert len({group(people, v) for v in members}) == 1
    owners = {group(people, v) for v in (PHONE, SHARED, KIOSK, LONE, ODD)}
    assert len(owners) > 1  # and the groups do spread over the shares


def test_lone_visitors_go_by_their_key_range() -> None:
    for workers, (visitor, _) in product((2, 3, 4), [(LONE, None), (ODD, None), ("ff" * 16, None)]):
        people = shares(workers)
        assert group(people, visitor) == bisect_right(people[0]._cuts, visitor)
        assert [p.mine(visitor, None) for p in people].count(True) == 1


def test_a_person_is_the_user_of_the_earliest_binding() -> None:
    people = People(BINDINGS, ())
    assert people.person_of[SHARED] == BOB and people.person_of[PHONE] == ALICE
    assert people.users_of[SHARED] == {BOB, CAROL}
    assert people.visitors_of[ALICE] == {PHONE, LAPTOP, TABLET}
    assert people.mine(LONE, None)  # no share: everything is its own


def test_share_key_ranges_cover_the_keys_once() -> None:
    for workers in (2, 3, 8):
        ranges = [Share(i, workers, NONE, NONE).keys for i in range(workers)]
        assert ranges[0][0] is None and ranges[-1][1] is None
        assert all(a[1] == b[0] for a, b in pairwise(ranges))


def test_the_fingerprint_tells_apart_what_counts_and_last_ids_do_not() -> None:
    """An erased binding made up for by one imported with an older id: the same count and the
    same last id, other groups. Shares of one report compare fingerprints."""
    share = Share(0, 2, NONE, NONE)
    same = People(list(BINDINGS), list(CONVERSIONS), share).fingerprint
    assert same == People(list(BINDINGS), list(CONVERSIONS), Share(1, 2, NONE, NONE)).fingerprint
    swapped = [*BINDINGS[:3], (KIOSK, BOB), *BINDINGS[4:]]
    assert People(swapped, list(CONVERSIONS), share).fingerprint != same
    assert People(list(BINDINGS), list(CONVERSIONS[1:]), share).fingerprint != same
    assert People(list(BINDINGS), list(CONVERSIONS)).fingerprint == 0  # no share: nothing to agree on
