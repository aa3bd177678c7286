"""How many terminal columns text takes, and text cut or wrapped to a number of columns:
``width``, ``cut`` and ``wrap``, for the terminal tables of ``gateway report`` and the lines
around them (``gateway/reporting.py``).

Owns the one rule the tables are laid out by, with the standard library's ``unicodedata``
alone. Text is counted by grapheme cluster (what a reader sees as one character), as the
terminals that lay out clusters do (kitty, WezTerm, iTerm2, Windows Terminal, recent GNOME
VTE): a base character and what joins it —

- a combining or enclosing mark, an invisible format character (the zero-width joiner), a
  variation selector, a skin-tone modifier (U+1F3FB..U+1F3FF): no column of their own;
- a spacing vowel sign (category ``Mc``, Devanagari ``ी``): a column each, as before;
- a pictograph joined by a zero-width joiner (``👨‍👩‍👧``): one emoji, two columns;
- a second regional indicator: one flag (``🇫🇷``), two columns.

A cluster takes two columns when its base is East Asian Wide or Fullwidth (CJK, most emoji),
is a regional indicator, or is shown as an emoji (followed by VS16 U+FE0F, a skin tone or a
joined pictograph); otherwise one, plus one a spacing mark. xterm (and tmux, by version)
count code points instead (``👍🏽`` four columns): there a row with such a cluster sits off.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

ELLIPSIS = "…"
"""What ends cut text: one column."""
_ZWJ = "\u200d"
_VS16 = "\ufe0f"
_JOINS = frozenset({"Mn", "Me", "Cf"})
"""Categories that join the character before them and take no column: non-spacing and
enclosing marks (variation selectors are ``Mn``), format characters (the zero-width joiner,
the tags of a subdivision flag)."""


def _skin_tone(ch: str) -> bool:
    return "\U0001f3fb" <= ch <= "\U0001f3ff"


def _regional(ch: str) -> bool:
    return "\U0001f1e6" <= ch <= "\U0001f1ff"


def _pictograph(ch: str) -> bool:
    """Near enough to Unicode's Extended_Pictographic, which ``unicodedata`` does not have:
    a symbol (``So``), as emoji are."""
    return unicodedata.category(ch) == "So"


def clusters(text: str) -> Iterator[str]:
    """``text`` as grapheme clusters: the rules of Unicode's UAX #29 that matter in a name
    (marks and joiners extend, a zero-width joiner between pictographs, regional indicators
    in pairs); Hangul jamo and Indic conjuncts (GB9c) are not joined."""
    start = 0
    for i in range(1, len(text) + 1):
        if i < len(text) and _joins(text, start, i):
            continue
        yield text[start:i]
        start = i


def _joins(text: str, start: int, i: int) -> bool:
    """Whether ``text[i]`` belongs to the cluster ``text[start:i]``."""
    ch = text[i]
    if unicodedata.category(ch) in _JOINS or _skin_tone(ch) or unicodedata.category(ch) == "Mc":
        return True
    if text[i - 1] == _ZWJ and i - start > 1 and _pictograph(text[start]) and _pictograph(ch):
        return True
    return i - start == 1 and _regional(text[start]) and _regional(ch)


def cluster_width(cluster: str) -> int:
    """The columns one grapheme cluster (``clusters``) takes."""
    base, rest = cluster[0], cluster[1:]
    if _regional(base):
        return 2  # a flag, or a lone indicator drawn as its letter in a box
    if unicodedata.category(base) in _JOINS:
        return 0  # a mark with nothing before it
    wide = unicodedata.east_asian_width(base) in ("W", "F")
    emoji = _VS16 in rest or (_pictograph(base) and any(_skin_tone(c) or c == _ZWJ for c in rest))
    if wide or emoji:
        return 2
    return 1 + sum(unicodedata.category(c) == "Mc" for c in rest)


def width(text: str) -> int:
    """The columns ``text`` takes in a terminal (see the module's rules)."""
    if text.isascii():
        return len(text)
    return sum(cluster_width(c) for c in clusters(text))


def cut(text: str, columns: int, ellipsis: str = ELLIPSIS) -> str:
    """``text`` when it fits in ``columns``, else as many of its first clusters as fit with
    ``ellipsis`` after them: never half a cluster (a flag, a skin tone, an accent stay with their
    base). One column short of ``columns`` when a two-column cluster would not fit; empty
    when ``columns`` is below 1."""
    if width(text) <= columns:
        return text
    if columns < 1:
        return ""
    kept: list[str] = []
    room = columns - width(ellipsis)
    for cluster in clusters(text):
        room -= cluster_width(cluster)
        if room < 0:
            break
        kept.append(cluster)
    return "".join(kept) + ellipsis


INDENT = "  "
"""What starts each line of wrapped text after its first (``wrap``)."""


def wrap(text: str, columns: int, indent: str = INDENT) -> list[str]:
    """``text`` as lines of at most ``columns`` (0: one line, as it is), each after the first
    starting with ``indent``: broken after a comma and its space where it can (``model linear,
    group_by channel`` keeps each part on one line), else at a space. Nothing is cut or lost:
    a word wider than a line (a date-time on a very narrow terminal) is alone on its line,
    whole, and the terminal wraps it, as a table too wide for it is left whole."""
    if columns < 1 or width(text) <= columns:
        return [text]
    lines: list[str] = []
    current: str | None = None
    for part in re.split(r"(?<=,) ", text):
        for piece in [part] if width(indent + part) <= columns else part.split(" "):
            if current is None:
                current = piece
            elif width(current) + 1 + width(piece) <= columns:
                current += " " + piece
            else:
                lines.append(current)
                current = indent + piece
    lines.append(current or "")
    return lines
