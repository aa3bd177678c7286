"""Amounts as rules and senders read them: numbers, numeric strings, and prices as a shop
writes them on a page (``1.299,00``, ``1'299.00``, ``1,23,456.00``).

Owns the pure parsers behind a conversion's ``value`` (``scaled``, ``plain_amount``,
``money``), which webhook mappings share (``gateway/mapping.py``). No state.
"""

from __future__ import annotations

import decimal
import math
import re
from typing import Any

from gateway.events import MAX_VALUE

NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
"""A number written as a string: JSON's syntax (leading zeros allowed), ASCII digits only, so
that neither ``1_000`` nor ``nan``, ``inf`` or another script's digits are read as one."""


def scaled(value: Any, scale: float = 1.0) -> float | None:
    """A number, or a numeric string (surrounding spaces ignored), times ``scale``, rounded once:
    ``1999`` cents at ``0.01`` is ``19.99``, not the float product ``19.990000000000002``.
    ``inf`` (or ``-inf``) beyond the float range (a JSON ``1e400`` is read as that infinity);
    None when ``value`` is not a number."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    if isinstance(value, str):
        value = value.strip(" \t\r\n")
        if not NUMBER.fullmatch(value):
            return None
    elif isinstance(value, float) and math.isnan(value):
        return None
    try:
        approx = float(value)
    except OverflowError:  # an integer of hundreds of digits
        approx = math.inf if value > 0 else -math.inf
    if not math.isfinite(approx) or approx == 0:  # out of range (or 0): no digits to keep
        return approx * scale + 0.0  # -0 is 0
    text = repr(value) if isinstance(value, float) else value  # the shortest that reads back
    with decimal.localcontext(_EXACT):
        return float(decimal.Decimal(text) * decimal.Decimal(repr(scale))) + 0.0


_EXACT = decimal.Context(prec=34, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)


def has_decimals(value: Any) -> bool:
    """Whether a number ``scaled`` reads is written with digits after its decimal point, which
    minor units (cents) never have: a string as written (``"10.00"``, ``"1.25e1"``; not
    ``"1e3"`` nor ``"1.5e3"``), a JSON number by its value (``10.5``), since the parser keeps
    no more of it: ``10.00``, ``10.0`` and ``1e1`` are the one float 10.0, whole."""
    if isinstance(value, str):
        text = value.strip(" \t\r\n")
        if not NUMBER.fullmatch(text):
            return False
        try:
            exponent = decimal.Decimal(text).as_tuple().exponent
        except decimal.InvalidOperation:  # an exponent past a decimal's reach ("1e-" + 29 nines)
            return "e-" in text.lower()  # a fraction, as "1e-5" is (a large one read as infinity)
        return isinstance(exponent, int) and exponent < 0
    return isinstance(value, float) and math.isfinite(value) and not value.is_integer()


GROUP_SEPARATORS = ",.' \u2019\u00a0\u202f\u2009"
"""What a site writes between groups of thousands: a comma, a point, an apostrophe (Swiss,
also typographic), a space (plain, no-break, narrow no-break, thin)."""
_GROUPED = re.compile(r"[0-9]{1,3}(?:([" + re.escape(GROUP_SEPARATORS) + r"])[0-9]{3})(?:\1[0-9]{3})*")
_LAKH = re.compile(r"[0-9]{1,2}(?:,[0-9]{2})*,[0-9]{3}")
"""India's grouping (``1,23,456``): a thousand, then hundreds."""


def plain_amount(text: str, decimal_separator: str = ".") -> str | None:
    """An amount as a shop writes it on a page (``1,299.00``; ``1.299,00`` with ``decimal_separator``
    ``","``; ``1 299,00``, ``1'299.00``, ``1,23,456.00``) as a plain numeric string
    (``1299.00``), or None when it is not one: its groups of thousands must be whole (three
    digits; India's hundreds) and separated alike, by anything but the decimal separator. A
    text ``NUMBER`` already reads stays as it is where the separator is ``.``."""
    text = text.strip(" \t\r\n\u00a0\u202f\u2009")
    if decimal_separator == "." and NUMBER.fullmatch(text):
        return text
    whole, point, fraction = text.rpartition(decimal_separator)
    if not point:
        whole, fraction = text, ""
    elif not fraction.isascii() or not fraction.isdigit():
        return None
    if not (whole.isascii() and whole.isdigit()):
        grouped = _GROUPED.fullmatch(whole)
        if grouped is not None and grouped.group(1) != decimal_separator:
            whole = whole.replace(grouped.group(1), "")
        elif decimal_separator == "." and _LAKH.fullmatch(whole):
            whole = whole.replace(",", "")
        else:
            return None
    return whole + ("." + fraction if fraction else "")


def money(value: Any, scale: float = 1.0, decimal_separator: str = ".") -> float | None:
    """An amount from 0 to ``MAX_VALUE`` (once multiplied by ``scale``: ``0.01`` for cents)
    from a number or a numeric string, written with ``decimal_separator`` and perhaps grouped
    (``plain_amount``); None when it is not one."""
    if isinstance(value, str):
        plain = plain_amount(value, decimal_separator)
        if plain is None:
            return None
        value = plain
    amount = scaled(value, scale)
    if amount is None or not math.isfinite(amount) or not 0 <= amount <= MAX_VALUE:
        return None
    return amount
