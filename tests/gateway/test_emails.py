"""The email check (``gateway/emails.py``) on what a visitor controls: linear in the value's
length, and the same answers as the address pattern it stands for."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.emails import holds_email, without_email

ADDRESS = re.compile(r"[^\s@]+@[^\s@]+\.[^\W\d_]{2,}")
"""The pattern the check stands for: something, ``@``, a domain with a dot and a top-level name
of two letters or more. Searched as written it backtracks over the domain for every character
before the ``@``: quadratic in a value's length."""

HOSTILE = [
    "a" * 500_000 + "@" + "b" * 500_000,  # one @, no dot after it
    "a" * 500_000 + "@" + "b." * 250_000,  # dots, never two letters after one
    ("a" * 50 + "@") * 20_000,  # many @, each domain cut short by the next
    "a" * 500_000 + "@" + "1.2" * 150_000,
]
"""Values of a logged request line (``gateway import`` reads lines up to 1 MiB) that made the
pattern's search run for hours: with this check each is one pass (the suite's 60 s timeout
fails a quadratic one)."""


def test_a_hostile_value_or_path_is_checked_in_one_pass() -> None:
    for value in HOSTILE:
        assert not holds_email(value)
        assert without_email("/" + value) == "/" + value
    assert holds_email("a" * 500_000 + "@example.com")
    assert without_email("/" + "a" * 500_000 + "@example.com/x") == "/(email)/x"


@given(st.text(alphabet="ab@. \t1_é%4", max_size=24))
def test_the_check_answers_as_the_address_pattern_does(value: str) -> None:
    if "%" not in value:  # decoding aside, the pattern's own answer
        assert holds_email(value) == bool(ADDRESS.search(value))


@pytest.mark.parametrize("address", ["jane@shop.zip", "jane@example.md", "jane@json.example.com"])
def test_an_address_at_a_domain_named_like_a_file_is_still_one(address: str) -> None:
    """``zip`` and ``mov`` are top-level domains, two letters a country's: not file types."""
    assert without_email(f"/u/{address}/x") == "/u/(email)/x"
