"""The start-up checks on a rule source's ``capture`` pattern.

Owns ``validate_capture``: one capturing group; no repeat of a repeat (``(a+)+``), which
takes exponential time on a text that almost matches, on the event loop; and, for a value
kept, no credential's name and text around the group where only part of the value may be
kept (a cookie, a whole answer). The pattern's structure is read with the parser ``re``
itself uses (``re._parser``, private: a Python that moves it skips these two checks).
"""

from __future__ import annotations

import re
from typing import Any

try:  # the parser re itself uses (no stub); private, so a Python that moves it skips the checks
    import re._constants as _regex_constants  # type: ignore[import-not-found]
    import re._parser as _regex_parser  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - every Python from 3.11 to 3.13 has them
    _regex_constants = _regex_parser = None

from gateway.config_values import regex_problem
from gateway.ruleconfig import FORBIDDEN_NAME, FORBIDDEN_WORDS, KEPT_ONLY_CAPTURED, Source


def validate_capture(p: list[str], key: str, source: Source, kind: str, kept: bool) -> None:
    """The problems of ``source``'s ``capture`` at TOML key ``key``, added to ``p``; ``kept``:
    the value is stored (a user ID, an order ID…), not only tested (``when``)."""
    if not source.capture:
        if kept and kind in KEPT_ONLY_CAPTURED:
            p.append(
                f"{key}.capture: required with {kind}: {KEPT_ONLY_CAPTURED[kind]}; capture the "
                "part that is the value (a regular expression with one group)"
            )
        return
    if bad := regex_problem(source.capture):
        p.append(f"{key}.capture: {bad}")
        return
    groups = re.compile(source.capture).groups
    if groups != 1:
        p.append(
            f"{key}.capture: needs exactly one capturing group, the value: got {groups} in "
            f"{source.capture!r} (write other groups (?:…))"
        )
        return
    try:
        parsed = list(_regex_parser.parse(source.capture))
        backtracks, text_outside = _backtracks(parsed), _text_outside_group(parsed)
    except RecursionError:  # hundreds of nested repeats: compiled, but deeper than we look
        p.append(f"{key}.capture: nested too deeply to be checked: {source.capture[:60]!r}…")
        return
    except (AttributeError, TypeError, ValueError, IndexError):  # re's private parser changed
        backtracks, text_outside = False, True  # not checked, rather than no start at all
    if backtracks:
        p.append(
            f"{key}.capture: {source.capture!r} repeats a repeat ((a+)+, (\\w+\\s?)*): on a text "
            "that almost matches it takes exponential time, and the gateway serves no one "
            "meanwhile; repeat once ([\\w\\s]+), or make the outer repeat possessive ((?:…)++) "
            "or the inner one atomic ((?>…))"
        )
    if not kept:
        return  # a when's capture is only tested: "(access_token)" in an answer tells a sign-in
    if FORBIDDEN_NAME.search(source.capture):
        p.append(
            f"{key}.capture: {source.capture!r} names a credential ({FORBIDDEN_WORDS}): "
            "what follows such a name is never kept"
        )
    elif kind in KEPT_ONLY_CAPTURED and not text_outside:
        p.append(
            f"{key}.capture: {source.capture!r} is its group alone and keeps the whole value "
            f"({KEPT_ONLY_CAPTURED[kind]}): write the text around the part that is the value "
            "(^(.+?)%7C)"
        )


_REPEATS = (_regex_constants.MAX_REPEAT, _regex_constants.MIN_REPEAT) if _regex_constants else ()


def _children(op: object, av: Any) -> list[tuple[list[Any], bool]]:
    """The sub-patterns of one parsed node, each with whether a repeat around it may
    backtrack into it (not inside a possessive repeat or an atomic group)."""
    c = _regex_constants
    if op in _REPEATS:
        return [(list(av[2]), True)]
    if op in (c.POSSESSIVE_REPEAT, c.ATOMIC_GROUP):
        return [(list(av[2] if op is c.POSSESSIVE_REPEAT else av), False)]
    if op is c.SUBPATTERN:
        return [(list(av[3]), True)]
    if op is c.BRANCH:
        return [(list(branch), True) for branch in av[1]]
    if op in (c.ASSERT, c.ASSERT_NOT):
        return [(list(av[1]), True)]
    if op is c.GROUPREF_EXISTS:
        return [(list(branch), True) for branch in av[1:] if branch is not None]
    return []


def _backtracks(items: list[Any], repeated: bool = False) -> bool:
    """Whether a repeat that may run more than once holds a repeat of varying count (``(a+)+``,
    ``(\\w+\\s?)*``, ``(.*,){5}``): the text it fails on is split every possible way, in
    exponential (or high polynomial) time, on the event loop."""
    for op, av in items:
        if op in _REPEATS and repeated and av[0] != av[1]:
            return True
        inner = repeated or (op in _REPEATS and av[1] > 1)
        if any(_backtracks(sub, inner and follows) for sub, follows in _children(op, av)):
            return True
    return False


def _text_outside_group(items: list[Any]) -> bool:
    """Whether the pattern has literal text outside its capturing group (``^(.+?)%7C``: the
    ``%7C``), what tells the part kept from the rest; ``(.+)`` or ``^(.*)$`` has none."""
    for op, av in items:
        if op is _regex_constants.LITERAL:
            return True
        if op is _regex_constants.SUBPATTERN and av[0] == 1:
            continue
        if any(_text_outside_group(sub) for sub, _ in _children(op, av)):
            return True
    return False
