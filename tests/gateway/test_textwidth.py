"""Terminal columns of text and text cut to them (``gateway/textwidth.py``), on strings whose
widths were counted by hand, as a terminal that lays out grapheme clusters draws them."""

from __future__ import annotations

import pytest

from gateway.textwidth import clusters, cut, width, wrap

THUMB = "👍\U0001f3fd"  # thumbs up, medium skin tone: one emoji
FAMILY = "👨\u200d👩\u200d👧"  # man, ZWJ, woman, ZWJ, girl: one emoji
FRANCE, GERMANY = "🇫🇷", "🇩🇪"  # two regional indicators each
RAINBOW = "🏳\ufe0f\u200d🌈"  # white flag, VS16, ZWJ, rainbow
CAFE = "cafe\u0301"  # the accent written apart


@pytest.mark.parametrize(
    ("text", "columns"),
    [
        ("", 0),
        ("spring_sale", 11),
        ("夏のセール", 10),  # East Asian Wide: two each
        ("\uff21\uff22", 4),  # fullwidth Latin AB
        (CAFE, 4),  # a combining accent (class 230)
        ("สวัสดี", 4),  # Thai: two of its vowel signs sit above a consonant (class 0 marks)
        ("नमस्ते", 4),  # Devanagari: a virama and a vowel sign, both non-spacing
        ("a\u20dd", 1),  # an enclosing mark
        ("夏\u200d", 2),  # a zero-width joiner after a letter
        ("\u0301", 0),  # a mark with nothing before it
        (THUMB, 2),  # a skin tone takes no column of its own
        ("☝\U0001f3fd", 2),  # on a narrow pictograph, it makes an emoji of it
        ("\U0001f3fd", 2),  # alone, it is one
        (FAMILY, 2),
        ("👨\U0001f3fd\u200d💻", 2),  # a skin tone and a ZWJ in one sequence
        (RAINBOW, 2),
        (FRANCE, 2),
        (FRANCE + GERMANY, 4),  # two flags, not a German-French pair in the middle
        ("🇫", 2),  # a lone indicator: its letter in a box
        ("🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f", 2),  # Scotland's tags
        ("1\ufe0f\u20e3", 2),  # keycap one
        ("❤\ufe0f", 2),  # VS16: a narrow symbol's emoji form
        ("❤", 1),
        ("I ❤\ufe0f NY", 7),
        ("😀\ufe0f", 2),
        ("\ufe0f", 0),
        (f"go {THUMB} {FAMILY} {FRANCE}!", 12),
    ],
)
def test_width_counts_columns_by_cluster(text: str, columns: int) -> None:
    """Until 2026-12-05 each code point counted: a thumbs up with a skin tone was 4 columns,
    the family 6, so the table's later columns sat off in a terminal that draws each as one
    emoji (a flag was 2 only as two indicators of 1)."""
    assert width(text) == columns


def test_clusters_keep_what_joins_together() -> None:
    assert list(clusters(f"a{THUMB}{FAMILY}{FRANCE}{GERMANY}{CAFE}")) == [
        "a", THUMB, FAMILY, FRANCE, GERMANY, "c", "a", "f", "e\u0301",
    ]  # fmt: skip
    assert list(clusters("夏\u200d夏")) == ["夏\u200d", "夏"]  # a ZWJ joins pictographs only


@pytest.mark.parametrize(
    ("text", "columns", "shown"),
    [
        ("spring_sale", 11, "spring_sale"),  # fits: as it is
        ("spring_sale", 12, "spring_sale"),
        ("spring_sale", 10, "spring_sa…"),
        ("spring_sale", 1, "…"),
        ("spring_sale", 0, ""),
        ("夏のセール", 10, "夏のセール"),
        ("夏のセール", 9, "夏のセー…"),
        ("夏のセール", 8, "夏のセ…"),  # ー would need 9: one column short
        (CAFE + "_creme", 5, "cafe\u0301…"),  # the accent stays with its e
        (CAFE + "_creme", 4, "caf…"),  # and goes with it
        (THUMB * 3, 5, THUMB * 2 + "…"),
        (THUMB * 3, 4, THUMB + "…"),  # no orphan skin tone
        (FAMILY + "xyz", 3, FAMILY + "…"),
        (FAMILY + "xyz", 2, "…"),  # never a lone man
        (FRANCE + GERMANY + "x", 4, FRANCE + "…"),  # no half flag
        (FRANCE + GERMANY + "x", 3, FRANCE + "…"),
        (FRANCE + GERMANY + "x", 2, "…"),
    ],
)
def test_cut_never_splits_a_cluster(text: str, columns: int, shown: str) -> None:
    assert cut(text, columns) == shown
    assert width(cut(text, columns)) <= columns


def test_wrap_breaks_after_a_comma_else_at_a_space_and_cuts_no_word() -> None:
    """The lines around ``gateway report``'s tables: broken after a comma where a part fits,
    else at a space, each following line indented by two; a word wider than a line is left
    whole on its own line (the terminal wraps it), as a table too wide is."""
    title = "attribution: 2026-11-01T00:00:00Z .. 2026-12-01T00:00:00Z, model linear, group_by channel"
    assert wrap(title, 0) == [title] and wrap(title, 200) == [title]
    assert wrap(title, 40) == [
        "attribution: 2026-11-01T00:00:00Z ..",
        "  2026-12-01T00:00:00Z, model linear,",
        "  group_by channel",
    ]
    # Counted in columns: 日本 is four.
    assert wrap("total 日本: conversions 2, value 10.00", 20) == [
        "total 日本:",
        "  conversions 2,",
        "  value 10.00",
    ]
    assert wrap("a " + "x" * 30 + " b", 10) == ["a", "  " + "x" * 30, "  b"]
