"""Creator payout rules (``[payouts]``): their options, their checks, and the amount to approve.

Pure, no I/O. A creator's rule is its own entry in ``payouts.creators`` (a CPA amount — one,
paid in any currency, or one per currency —, a revenue share, or both), falling back field by
field to its tier's (``payouts.tiers``,
the creator's ``tier`` or else ``payouts.default_tier``); a creator no rule covers earns
nothing and is still listed. The amount is CPA times credited conversions plus share times
credited value, summed exactly and rounded once, half to even, to the minor unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

import msgspec

from gateway.attribution import MODELS, exponent
from gateway.config_values import creator_id_problem, toml_key

MICRO = 1_000_000


class _Payout(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


CpaOption = float | dict[str, float]
"""A CPA as configured: one amount, paid in the conversion's currency whichever it is, or an
amount per currency (``{ EUR = 5.0, JPY = 800 }``), nothing in a currency it does not name."""


class TierPayout(_Payout, frozen=True, forbid_unknown_fields=True, kw_only=True):
    cpa: CpaOption = 0.0
    """Amount per credited conversion: in the conversion's currency, or per currency."""
    revenue_share: float = 0.0
    """Share (0..1) of the credited value."""


class CreatorPayout(_Payout, frozen=True, forbid_unknown_fields=True, kw_only=True):
    tier: str = ""
    """A ``payouts.tiers`` name; empty: ``payouts.default_tier``."""
    cpa: CpaOption | None = None
    """Overrides the tier's CPA for this creator."""
    revenue_share: float | None = None
    """Overrides the tier's revenue share for this creator."""


class PayoutsOptions(_Payout, frozen=True, forbid_unknown_fields=True, kw_only=True):
    model: str = "last_touch"
    """Attribution model of the payout report unless the request names another."""
    default_tier: str = ""
    """Tier of a creator without an entry (or without a ``tier``); empty: such creators earn nothing."""
    tiers: dict[str, TierPayout] = {}
    """Tier name → its rule (``{ gold = { revenue_share = 0.15 } }``)."""
    creators: dict[str, CreatorPayout] = {}
    """creator_id → its tier and/or its own rule (``{ cr_ana = { tier = "gold", cpa = 2.0 } }``)."""
    currency: str = ""
    """ISO 4217 code a CPA is paid in for conversions that carry no currency and no value (a
    sign-up); empty: their rows have no currency."""


def validate_payouts(po: PayoutsOptions, longest: int) -> list[str]:
    """``longest``: ``campaign.max_value_length``, past which a click's creator_id is dropped."""
    p: list[str] = []
    if po.model not in MODELS:
        p.append(f"payouts.model: unknown model {po.model!r} (models: {', '.join(MODELS)})")
    # Keys as TOML writes them, as a decode error names them: "cr.ben" is one key, not two.
    tiers = ", ".join(toml_key(name) for name in po.tiers) or "none defined"
    if po.default_tier and po.default_tier not in po.tiers:
        p.append(f"payouts.default_tier: no payouts.tiers entry {toml_key(po.default_tier)} (tiers: {tiers})")
    if po.currency and not _is_code(po.currency):
        p.append(f'payouts.currency: expected a 3-letter ISO 4217 code like "EUR", got {po.currency!r}')
    rules: list[tuple[str, CpaOption | None, float | None]] = [
        (f"payouts.tiers.{toml_key(name)}", t.cpa, t.revenue_share) for name, t in po.tiers.items()
    ]
    for creator, c in po.creators.items():
        key = f"payouts.creators.{toml_key(creator)}"
        # Read as a click's creator_id arrives, as [[creators]] ids are: else it is never paid.
        if bad := creator_id_problem(creator, longest):
            p.append(f"{key}: {bad}")
        if c.tier and c.tier not in po.tiers:
            p.append(f"{key}.tier: no payouts.tiers entry {toml_key(c.tier)} (tiers: {tiers})")
        rules.append((key, c.cpa, c.revenue_share))
    for key, cpa, share in rules:
        p += _cpa_problems(f"{key}.cpa", cpa, po.currency)
        if share is not None and not 0 <= share <= 1:
            p.append(f"{key}.revenue_share: must be 0..1, got {share}")
    return p


def _cpa_problems(key: str, cpa: CpaOption | None, currency: str) -> list[str]:
    """A CPA's amount (or each of its currencies' amounts) in range; a table's keys ISO 4217
    codes, one of them ``payouts.currency`` when that is set: sign-ups are paid in it, and a
    table without it would pay them nothing without a word."""
    if cpa is None:
        return []
    if not isinstance(cpa, dict):
        return [] if 0 <= cpa <= 1_000_000 else [f"{key}: must be 0..1000000, got {cpa}"]
    p = []
    for code, amount in cpa.items():
        if not _is_code(code):
            p.append(f'{key}: expected 3-letter ISO 4217 codes like "EUR" as keys, got {toml_key(code)}')
        elif not 0 <= amount <= 1_000_000:
            p.append(f"{key}.{code}: must be 0..1000000, got {amount}")
    if currency and _is_code(currency) and currency not in cpa:
        named = ", ".join(toml_key(code) for code in cpa) or "none"
        p.append(
            f"{key}: names no {currency}, the payouts.currency sign-ups are paid in (it names: {named});"
            f" add {currency} = 0 to pay them no CPA"
        )
    return p


def _is_code(text: str) -> bool:
    return len(text) == 3 and text.isascii() and text.isalpha() and text.isupper()


@dataclass(frozen=True, slots=True)
class Rule:
    tier: str | None
    cpa: Fraction
    revenue_share: Fraction
    own: frozenset[str] = frozenset()
    """The parts (``cpa``, ``revenue_share``) the creator's own entry sets over its tier's."""
    cpa_in: tuple[tuple[str, Fraction], ...] | None = None
    """A CPA per currency (``cpa`` then unused): none in a currency it does not name."""

    @property
    def label(self) -> str:
        """The rule as configured, each part the creator sets itself marked ``(own)``: a
        creator on CPA 7.5 in a tier of CPA 5 is ``tier standard: CPA 7.5 (own)``, not a label
        that reads as the tier's rule. A CPA per currency shows each (``CPA 5 EUR / 800 JPY``)."""
        return self._label(False, None)

    def label_in(self, currency: str | None) -> str:
        """``label`` for a row credited in ``currency`` (None: a conversion of no currency): of
        a CPA per currency, the one that row is paid (``CPA 800 JPY``), or that it has none
        (``no CPA in GBP (CPA in EUR, JPY)``)."""
        return self._label(True, currency)

    def _label(self, of_row: bool, currency: str | None) -> str:
        mark = {part: " (own)" if part in self.own and self.tier else "" for part in ("cpa", "revenue_share")}
        parts = []
        if self.cpa_in is None:
            # A part the creator sets itself is shown even at 0: its own "CPA 0" over a tier's CPA 1.
            if self.cpa or mark["cpa"]:
                parts.append(f"CPA {_decimal(self.cpa)}{mark['cpa']}")
        elif not of_row:
            amounts = " / ".join(f"{_decimal(amount)} {code}" for code, amount in self.cpa_in)
            parts.append(f"CPA {amounts or 'in no currency'}{mark['cpa']}")
        elif currency is not None and currency in dict(self.cpa_in):
            parts.append(f"CPA {_decimal(dict(self.cpa_in)[currency])} {currency}{mark['cpa']}")
        else:
            named = ", ".join(code for code, _ in self.cpa_in) or "no currency"
            where = f"in {currency}" if currency is not None else "without a currency"
            parts.append(f"no CPA {where} (CPA in {named}){mark['cpa']}")
        if self.revenue_share or mark["revenue_share"]:
            parts.append(f"{_decimal(self.revenue_share * 100)}% of value{mark['revenue_share']}")
        text = " + ".join(parts) or "nothing"
        return f"tier {self.tier}: {text}" if self.tier else text

    def cpa_of(self, currency: str | None) -> Fraction:
        """The CPA a conversion in ``currency`` earns."""
        if self.cpa_in is None:
            return self.cpa
        return dict(self.cpa_in).get(currency or "", Fraction(0))

    def amount(self, conversions: int, value: int, currency: str | None) -> int:
        """Minor units owed for ``conversions`` (millionths) and ``value`` (minor units)."""
        cpa = self.cpa_of(currency) * 10 ** exponent(currency) * Fraction(conversions, MICRO)
        # The exact sum rounded once: rounding each part apart could be a minor unit off.
        return round(cpa + self.revenue_share * value)  # a Fraction: half to even


def _decimal(amount: Fraction) -> str:
    """A rule's amount as configured, every digit (``12345.67``, ``1000000``, ``12.34567``):
    a decimal written in TOML is a fraction over a power of ten, which ``Decimal`` divides
    exactly (``:g`` would show six digits: ``12345.7``, ``1e+06``)."""
    exact = Decimal(amount.numerator) / Decimal(amount.denominator)
    return format(exact.normalize(), "f")


NO_RULE = Rule(None, Fraction(0), Fraction(0))


class Payouts:
    """``[payouts]`` compiled once: the rule of any creator."""

    def __init__(self, po: PayoutsOptions) -> None:
        self.options = po
        self.model = po.model
        self.currency = po.currency or None

    def rule(self, creator_id: str) -> Rule:
        po = self.options
        own = po.creators.get(creator_id)
        tier = (own.tier if own and own.tier else "") or po.default_tier
        base = po.tiers.get(tier) if tier else None
        if own is None and base is None:
            return NO_RULE
        cpa: CpaOption = own.cpa if own and own.cpa is not None else (base.cpa if base else 0.0)
        share = own.revenue_share if own and own.revenue_share is not None else None
        if share is None:
            share = base.revenue_share if base else 0.0
        own_parts = frozenset(
            part for part in ("cpa", "revenue_share") if own is not None and getattr(own, part) is not None
        )
        # Through str: 0.1 in TOML means exactly one tenth, not the nearest binary float.
        if isinstance(cpa, dict):
            per_currency = tuple((code, Fraction(str(amount))) for code, amount in sorted(cpa.items()))
            return Rule(tier or None, Fraction(0), Fraction(str(share)), own_parts, per_currency)
        return Rule(tier or None, Fraction(str(cpa)), Fraction(str(share)), own_parts)
