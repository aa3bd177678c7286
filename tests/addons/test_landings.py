"""The campaign addon's memory of recent landings: bounded, and holding no value."""

from __future__ import annotations

from addons.landings import RecentLandings, landing_values, referral_values


def test_a_repeat_is_the_same_visitor_and_values_within_the_window() -> None:
    seen = RecentLandings(60)
    gclid = landing_values({"gclid": "G1", "utm_source": "google"})
    assert not seen.repeat("v1", gclid, 1000.0)
    assert seen.repeat("v1", landing_values({"utm_source": "google", "gclid": "G1"}), 1030.0)  # any order
    assert not seen.repeat("v2", gclid, 1030.0)  # another visitor
    assert not seen.repeat("v1", landing_values({"gclid": "G1"}), 1030.0)  # other values
    assert seen.repeat("v1", gclid, 1089.0)  # counted from the last reload, not the landing
    assert not seen.repeat("v1", gclid, 1150.0)  # 61 s after it
    assert not seen.repeat("v1", referral_values("gclid=G1", "/"), 1150.0)  # no mix-up of kinds


def test_zero_seconds_remembers_nothing() -> None:
    seen = RecentLandings(0)
    assert not seen.repeat("v1", ("params", "gclid=G1"), 1.0)
    assert not seen.repeat("v1", ("params", "gclid=G1"), 2.0)
    assert len(seen) == 0


def test_the_memory_is_bounded_oldest_first_and_keeps_no_value() -> None:
    seen = RecentLandings(1800, max_keys=100)
    for n in range(1000):
        seen.repeat(f"visitor-{n}", landing_values({"gclid": f"Secret-{n}"}), float(n))
    assert len(seen) == 100
    assert seen.repeat("visitor-999", landing_values({"gclid": "Secret-999"}), 1000.0)  # the newest kept
    assert not seen.repeat("visitor-0", landing_values({"gclid": "Secret-0"}), 1000.0)  # the oldest gone
    held = repr(seen._seen)
    assert "Secret" not in held and "visitor" not in held  # hashes and times only
    assert all(isinstance(k, int) for k in seen._seen)


def test_an_awaited_landing_is_taken_once_within_the_window() -> None:
    """A redirect's follow-up: recognised once, from the same visitor to the same page from the
    same site, no earlier than the redirect and no later than the window."""
    awaited = RecentLandings(30)
    clean = referral_values("www.google.com", "/shoes")
    assert not awaited.take("v1", clean, 1000.0)  # nothing awaited
    awaited.remember("v1", clean, 1000.0)
    assert not awaited.take("v2", clean, 1001.0)  # another visitor
    assert not awaited.take("v1", referral_values("www.google.com", "/"), 1001.0)  # another page
    assert awaited.take("v1", clean, 1001.0)
    assert not awaited.take("v1", clean, 1002.0)  # once: a reload after it is not the follow-up
    awaited.remember("v1", clean, 1000.0)
    assert not awaited.take("v1", clean, 1031.0)  # past the window
    awaited.remember("v1", clean, 1000.0)
    assert not awaited.take("v1", clean, 999.0)  # before the redirect
    assert len(awaited) == 0  # each taken or refused, forgotten
