"""``placeholder`` trims what it is given itself (its doc always said "trimmed"): until 2026-12-07
each caller trimmed first, or did not, and ``" undefined\t"`` was an ID to whichever did not."""

from __future__ import annotations

from gateway.placeholders import PLACEHOLDERS, placeholder


def test_a_placeholder_wrapped_in_spaces_or_tabs_is_one() -> None:
    for word in PLACEHOLDERS:
        for text in (word, word.upper(), f" {word} ", f"\t{word}", f"{word}\t\n", f" \t{word.title()}\t "):
            assert placeholder(text), repr(text)
    for text in ("", " ", "undefined-1", "un defined", "nullable", "user null", "\tada\t"):
        assert not placeholder(text), repr(text)
