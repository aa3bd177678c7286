"""Payout rules' amounts: the exact sum of the CPA part and the revenue-share part, rounded
once, half to even, to the currency's minor unit."""

from __future__ import annotations

import tomllib
from fractions import Fraction

import msgspec
import pytest

from gateway.config import ConfigError, load_settings
from gateway.payouts import CreatorPayout, Payouts, PayoutsOptions, Rule
from tests.conftest import ENV


@pytest.mark.parametrize(
    ("cpa", "share", "conversions", "value", "currency", "minor"),
    [
        # CPA 1.00 * 0.333334 = 0.333334 EUR, 10 % of 33.34 = 3.334 EUR: 3.667334 → 3.67
        # (each part rounded apart: 0.33 + 3.33 = 3.66).
        ("1", "0.1", 333_334, 3334, "EUR", 367),
        # Half a cent twice: 0.005 + 10 % of 0.05 = 0.01 exactly (apart: 0 + 0).
        ("0.005", "0.1", 1_000_000, 5, "EUR", 1),
        # A tie rounds to even: 0.5 cent → 0, 1.5 cents → 2, 2.5 cents → 2.
        ("0.005", "0", 1_000_000, 0, "EUR", 0),
        ("0.015", "0", 1_000_000, 0, "EUR", 2),
        ("0", "0.5", 0, 5, "EUR", 2),
        # The minor unit is the currency's: yen have none, 0.5 * 3 = 1.5 → 2.
        ("0.5", "0", 3_000_000, 0, "JPY", 2),
        ("0", "0", 1_000_000, 1000, "EUR", 0),
    ],
)
def test_amount_rounds_the_exact_sum_once(
    cpa: str, share: str, conversions: int, value: int, currency: str, minor: int
) -> None:
    rule = Rule("t", Fraction(cpa), Fraction(share))
    assert rule.amount(conversions, value, currency) == minor


@pytest.mark.parametrize(
    ("cpa", "share", "label"),
    [
        ("5", "0.1", "tier t: CPA 5 + 10% of value"),
        ("2.5", "0.15", "tier t: CPA 2.5 + 15% of value"),
        # Every digit as configured: the label is what a partner manager approves against.
        ("12345.67", "0", "tier t: CPA 12345.67"),
        ("1000000", "0", "tier t: CPA 1000000"),
        ("0.000001", "0.1234567", "tier t: CPA 0.000001 + 12.34567% of value"),
        ("0", "0", "tier t: nothing"),
    ],
)
def test_label_shows_the_rule_as_configured(cpa: str, share: str, label: str) -> None:
    assert Rule("t", Fraction(cpa), Fraction(share)).label == label


def test_label_marks_what_a_creator_sets_over_its_tier() -> None:
    """A creator's own CPA in a tier read as the tier's rule: ``tier standard: CPA 7.5``
    beside other creators' ``tier standard: CPA 5``."""
    options = msgspec.convert(
        tomllib.loads(
            "default_tier = 'standard'\n"
            "tiers = { standard = { cpa = 5.0 }, gold = { cpa = 1.0, revenue_share = 0.1 } }\n"
            "creators = { cr_ana = { cpa = 7.5 }, cr_ben = { tier = 'gold', revenue_share = 0.2 },"
            " cr_cid = { tier = 'gold' }, cr_dan = { cpa = 0.0 } }"
        ),
        PayoutsOptions,
    )
    rules = Payouts(options)
    assert rules.rule("cr_ana").label == "tier standard: CPA 7.5 (own)"
    assert rules.rule("cr_ben").label == "tier gold: CPA 1 + 20% of value (own)"
    assert rules.rule("cr_cid").label == "tier gold: CPA 1 + 10% of value"
    assert rules.rule("cr_dan").label == "tier standard: CPA 0 (own)"
    zero_share = Payouts(
        msgspec.structs.replace(options, creators={"cr_eve": CreatorPayout(tier="gold", revenue_share=0.0)})
    )
    assert zero_share.rule("cr_eve").label == "tier gold: CPA 1 + 0% of value (own)"
    assert rules.rule("someone").label == "tier standard: CPA 5"


def test_a_cpa_per_currency_pays_and_labels_each_currency_apart() -> None:
    options = msgspec.convert(
        tomllib.loads("tiers = { t = { cpa = { JPY = 800, EUR = 4.995 }, revenue_share = 0.5 } }"),
        PayoutsOptions,
    )
    rule = Payouts(msgspec.structs.replace(options, default_tier="t")).rule("anyone")
    assert rule.amount(1_000_000, 1000, "JPY") == 1300  # 800 yen + half of 1000 yen
    assert rule.amount(1_000_000, 0, "EUR") == 500  # 4.995 EUR: 499.5 cents, to even
    assert rule.amount(500_000, 1000, "USD") == 500  # half the value, no CPA in dollars
    assert rule.amount(1_000_000, 1000, None) == 500
    assert rule.label == "tier t: CPA 4.995 EUR / 800 JPY + 50% of value"  # codes in order
    assert rule.label_in("JPY") == "tier t: CPA 800 JPY + 50% of value"
    assert rule.label_in("USD") == "tier t: no CPA in USD (CPA in EUR, JPY) + 50% of value"
    assert rule.label_in(None) == "tier t: no CPA without a currency (CPA in EUR, JPY) + 50% of value"
    plain = Rule("t", Fraction(5), Fraction(0))
    assert plain.label_in("JPY") == plain.label == "tier t: CPA 5"  # one amount: any currency's
    assert plain.amount(1_000_000, 0, "JPY") == 5


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        (
            "tiers = { 'g.old' = { cpa = -5.0 } }",
            ['payouts.tiers."g.old".cpa: must be 0..1000000, got -5.0'],
        ),
        (
            "tiers = { gold = { revenue_share = 0.1 } }\n"
            "creators = { 'cr ana' = { tier = 'x', revenue_share = 2 } }",
            [
                'payouts.creators."cr ana".tier: no payouts.tiers entry x (tiers: gold)',
                'payouts.creators."cr ana".revenue_share: must be 0..1, got 2.0',
            ],
        ),
        (
            "tiers = { 'a.b' = {} }\ndefault_tier = 'a'",
            ['payouts.default_tier: no payouts.tiers entry a (tiers: "a.b")'],
        ),
        (
            "creators = { cr_ana = { cpa = nan } }",
            ["payouts.creators.cr_ana.cpa: must be 0..1000000, got nan"],
        ),
        (
            "tiers = { gold = { cpa = { EUR = 5.0, eur = 1.0, 'US D' = 2.0, JPY = -1 } } }",
            [
                'payouts.tiers.gold.cpa: expected 3-letter ISO 4217 codes like "EUR" as keys, got eur',
                'payouts.tiers.gold.cpa: expected 3-letter ISO 4217 codes like "EUR" as keys, got "US D"',
                "payouts.tiers.gold.cpa.JPY: must be 0..1000000, got -1.0",
            ],
        ),
        (
            "currency = 'EUR'\ntiers = { gold = { cpa = { USD = 5.0 } } }\n"
            "creators = { cr_ana = { cpa = {} } }",
            [
                "payouts.tiers.gold.cpa: names no EUR, the payouts.currency sign-ups are paid in (it names:"
                " USD); add EUR = 0 to pay them no CPA",
                "payouts.creators.cr_ana.cpa: names no EUR, the payouts.currency sign-ups are paid in (it"
                " names: none); add EUR = 0 to pay them no CPA",
            ],
        ),
        (
            "tiers = { gold = { cpa = { EUR = 'x' } } }",
            ['payouts.tiers.gold.cpa.EUR: expected a number, got "x"'],
        ),
        (  # a click's creator_id arrives trimmed and at most campaign.max_value_length long
            f"creators = {{ ' cr_ana' = {{ cpa = 1.0 }}, '' = {{ cpa = 1.0 }}, '{'c' * 201}' = {{}} }}",
            [
                'payouts.creators." cr_ana": must not start or end with a space (values arrive without'
                " them), got ' cr_ana'",
                'payouts.creators."": must not be empty',
                f"payouts.creators.{'c' * 201}: longer than campaign.max_value_length (200), so a click never"
                " carries it (a longer creator_id is dropped), got 201 characters",
            ],
        ),
    ],
)
def test_a_bad_rule_names_its_key_as_toml_writes_it(toml: str, expected: list[str]) -> None:
    """A creator ID or tier name with a dot or a space is one key: quoted, as a type error
    inside the same table names it (``payouts.creators."cr.ben".cpa``), not read as two."""
    with pytest.raises(ConfigError) as err:
        load_settings(None, text=f"[payouts]\n{toml}\n", environ=ENV)
    assert err.value.problems == expected
