"""The default rule set answers the probes the issue names, and its per-currency thresholds respect each exponent."""

from __future__ import annotations

from fractions import Fraction

import pytest

from billing.domain.execution import PaymentRail
from billing.domain.money import Money, currency_exponent
from billing.rails.ports import ChargeInitiator
from billing.risk.attributes import RiskFacts
from billing.risk.defaults import LARGE_AMOUNT, SCA_AMOUNT, default_rule_set
from billing.risk.evaluation import Assessment, assess
from billing.risk.rules import Action
from tests.unit.risk.facts import charge, make_facts

REQUIRED_CURRENCIES = {"EUR", "USD", "GBP", "CHF", "SEK", "NOK", "DKK", "PLN", "JPY", "HUF", "CZK"}
# Units of each currency per euro, 2025 levels: only to check that the hand-rounded thresholds are near their EUR
# amount, which catches a threshold written in the wrong exponent (100 times off). Never used at runtime.
REFERENCE_RATES = {
    "EUR": Fraction(1),
    "USD": Fraction("1.15"),
    "GBP": Fraction("0.86"),
    "CHF": Fraction("0.94"),
    "SEK": Fraction("11.1"),
    "NOK": Fraction("11.7"),
    "DKK": Fraction("7.46"),
    "PLN": Fraction("4.27"),
    "CZK": Fraction("24.6"),
    "HUF": Fraction(400),
    "RON": Fraction("5.05"),
    "JPY": Fraction(168),
    "ISK": Fraction(143),
}


def default(facts: RiskFacts) -> Assessment:
    return assess(default_rule_set(), facts)


def fired_ids(assessment: Assessment) -> list[str]:
    return [fired.rule_id for fired in assessment.fired]


def in_euros(minor: int, currency: str) -> Fraction:
    return Fraction(minor, 10 ** currency_exponent(currency)) / REFERENCE_RATES[currency]


def test_defaults_are_version_0() -> None:
    assert default_rule_set().version == 0


def test_customer_card_charge_below_eur_30_is_allowed() -> None:
    assessment = default(charge(2999, "EUR"))
    assert (assessment.decision, assessment.fired, assessment.score) == (Action.ALLOW, (), 0)


def test_customer_card_charge_of_eur_30_requires_3ds_at_score_0() -> None:
    assessment = default(charge(3000, "EUR"))
    assert assessment.decision is Action.REQUIRE_3DS
    assert fired_ids(assessment) == ["sca-above-low-value-exemption"]
    assert assessment.fired[0].inputs == {"amount": {"amount": 3000, "currency": "EUR"}}
    assert assessment.score == 0


def test_jpy_threshold_is_in_whole_yen() -> None:
    assert default(charge(4499, "JPY")).decision is Action.ALLOW
    assert default(charge(4500, "JPY")).decision is Action.REQUIRE_3DS


def test_a_currency_without_a_threshold_never_requires_3ds() -> None:
    assert default(charge(10**9, "KWD")).decision is Action.ALLOW


@pytest.mark.parametrize("rail", [PaymentRail.SEPA_DEBIT, PaymentRail.ACH_DEBIT])
def test_debits_never_require_3ds(rail: PaymentRail) -> None:
    assert default(charge(100000, "EUR", rail=rail)).decision is Action.ALLOW


@pytest.mark.parametrize("authenticated_first", [True, False])
def test_merchant_initiated_renewal_of_eur_100_is_allowed(authenticated_first: bool) -> None:
    renewal = charge(10000, "EUR", initiator=ChargeInitiator.MERCHANT, first_charge_authenticated=authenticated_first)
    assert default(renewal).decision is Action.ALLOW


def test_merchant_initiated_charges_are_exempt_from_the_attempt_velocity_block() -> None:
    renewal = charge(10000, "EUR", initiator=ChargeInitiator.MERCHANT, attempts_per_instrument_1h=12)
    assert default(renewal).decision is Action.ALLOW


def test_fifth_attempt_on_an_instrument_within_an_hour_is_allowed_and_the_sixth_blocked() -> None:
    assert default(make_facts(attempts_per_instrument_1h=5)).decision is Action.ALLOW
    sixth = default(make_facts(attempts_per_instrument_1h=6))
    assert sixth.decision is Action.BLOCK
    assert fired_ids(sixth) == ["card-testing-instrument-velocity"]
    assert sixth.fired[0].inputs == {"attempts_per_instrument_1h": 6}


def test_block_beats_require_3ds() -> None:
    assessment = default(charge(5000, "EUR", attempts_per_instrument_1h=6))
    assert assessment.decision is Action.BLOCK
    assert fired_ids(assessment) == ["sca-above-low-value-exemption", "card-testing-instrument-velocity"]
    assert assessment.score == 100


@pytest.mark.parametrize("initiator", list(ChargeInitiator))
def test_the_attempt_after_three_declines_in_a_day_is_blocked_whoever_starts_it(initiator: ChargeInitiator) -> None:
    assert default(make_facts(declines_per_instrument_24h=2, initiator=initiator)).decision is Action.ALLOW
    assert default(make_facts(declines_per_instrument_24h=3, initiator=initiator)).decision is Action.BLOCK


def test_new_instrument_with_a_large_amount_is_reviewed_but_not_an_old_one_or_an_unknown_age() -> None:
    new_and_large = charge(25000, "EUR", instrument_age_seconds=3600)
    assessment = default(new_and_large)
    # 250 EUR is also above the SCA threshold: authentication comes first, the review weighs in the score.
    assert assessment.decision is Action.REQUIRE_3DS
    assert fired_ids(assessment) == ["sca-above-low-value-exemption", "new-instrument-large-amount"]
    assert assessment.score == 40
    assert default(charge(25000, "EUR", instrument_age_seconds=86400)).score == 0
    assert default(charge(25000, "EUR", instrument_age_seconds=None)).score == 0
    sepa = default(charge(25000, "EUR", instrument_age_seconds=3600, rail=PaymentRail.SEPA_DEBIT))
    assert sepa.decision is Action.REVIEW


def test_issuer_country_differing_from_the_customers_is_reviewed_only_when_both_are_known() -> None:
    abroad = default(make_facts(issuer_country="US", customer_country="DE"))
    assert (abroad.decision, fired_ids(abroad), abroad.score) == (Action.REVIEW, ["issuer-country-mismatch"], 20)
    assert default(make_facts(issuer_country=None, customer_country="DE")).decision is Action.ALLOW


def test_a_device_used_by_more_than_three_customers_in_a_day_is_reviewed() -> None:
    assert default(make_facts(distinct_customers_per_device_24h=3)).decision is Action.ALLOW
    assert default(make_facts(distinct_customers_per_device_24h=4)).decision is Action.REVIEW


def test_review_signals_add_up_in_the_score() -> None:
    facts = charge(2000, "EUR", issuer_country="US", customer_country="DE", distinct_customers_per_device_24h=5)
    assessment = default(facts)
    assert (assessment.decision, assessment.score) == (Action.REVIEW, 60)


def test_thresholds_cover_the_required_currencies_in_the_same_currencies() -> None:
    assert set(SCA_AMOUNT) >= REQUIRED_CURRENCIES
    assert set(SCA_AMOUNT) == set(LARGE_AMOUNT) == set(REFERENCE_RATES)


@pytest.mark.parametrize("currency", sorted(SCA_AMOUNT))
def test_sca_thresholds_are_rounded_down_equivalents_of_eur_30(currency: str) -> None:
    assert Fraction(25) <= in_euros(SCA_AMOUNT[currency], currency) <= Fraction(30)
    Money(SCA_AMOUNT[currency], currency)  # a known currency, an int amount


@pytest.mark.parametrize("currency", sorted(LARGE_AMOUNT))
def test_large_amount_thresholds_are_rounded_down_equivalents_of_eur_250(currency: str) -> None:
    assert Fraction(200) <= in_euros(LARGE_AMOUNT[currency], currency) <= Fraction(250)
