"""What a rule's source read is worth: why none was read (``ExtractError``, whose reason is a
metric label) and the pure checks on one that was (as text, against a ``when``, as a user ID).

Shared by the extraction (``addons/extract.py``), the ``when`` conditions
(``addons/conditions.py``), the addons that keep values (``stitching``, ``conversions``) and
webhook mappings (``gateway/mapping.py``). No state.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.keys import MAX_USER_ID
from gateway.placeholders import placeholder

MAX_TEXT = 200
"""Longest order ID or currency kept."""


class ExtractError(Exception):
    """Why no value was read; ``reason`` is a metric label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


NO_VALUE = frozenset({"missing", "capture_no_match"})
"""Reasons a source has no value (a ``when`` with ``absent = true`` then holds), rather than
one that could not be read."""


def as_text(value: Any) -> str | None:
    """A string, or a whole number written as one; None for anything else."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def compared_text(value: Any) -> str | None:
    """What a condition's ``equals`` or ``matches`` is compared with: a string, a whole number
    as written, a JSON boolean as ``true``/``false``; None (never holds) for anything else."""
    return "true" if value is True else "false" if value is False else as_text(value)


def meets(value: Any, equals: str | None, matches: re.Pattern[str] | None) -> bool:
    """Whether a value that is there passes a condition's test (a rule's or a sender's
    ``when``): its ``compared_text`` is ``equals``, or ``matches`` it whole; with neither, any
    value does. An object, a list or a fraction is never compared."""
    if equals is None and matches is None:
        return True
    text = compared_text(value)
    if text is None:
        return False
    return text == equals if matches is None else matches.fullmatch(text) is not None


def user_id(value: Any) -> str:
    """A valid user ID from an extracted value; ExtractError when it is not one."""
    text = as_text(value)
    if text is None:
        raise ExtractError("invalid_user_id")
    # Trimmed first, then checked, as webhooks read it (``gateway/mapping.py``): " alice " and
    # "alice\n" are alice, and 256 characters with a space around them still fit.
    text = text.strip()
    if not text or len(text) > MAX_USER_ID or not text.isprintable():
        raise ExtractError("invalid_user_id")
    if placeholder(text):
        raise ExtractError("placeholder_user_id")
    return text
