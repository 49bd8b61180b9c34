"""The sandbox's magic values and decision table, checked without a database."""

from __future__ import annotations

import pytest

from billing.domain.execution import PaymentRail
from billing.rails.results import OUTCOME_UNKNOWN_CODE, Decision
from billing.rails.sandbox import (
    CANCELED_CODE,
    SANDBOX_DECISIONS,
    Behaviour,
    ChargePlan,
    ChargeStatus,
    LostResponse,
    Scenario,
    Step,
    default_instrument,
    forced_failure_code,
    sandbox_decision_for,
    scenario_for,
    step_for,
)

PAID_AT_SUBMIT = ChargePlan(ChargeStatus.SUCCEEDED)
SETTLES_PAID = ChargePlan(ChargeStatus.PENDING_SETTLEMENT, settles_as=ChargeStatus.SUCCEEDED)


@pytest.mark.parametrize(
    ("rail", "instrument", "plan"),
    [
        (PaymentRail.CARD, "tok_visa", PAID_AT_SUBMIT),
        (PaymentRail.CARD, None, PAID_AT_SUBMIT),
        (PaymentRail.CARD, "pm_anything_else", PAID_AT_SUBMIT),
        (PaymentRail.CARD, "tok_decline", ChargePlan(ChargeStatus.FAILED, failure_code="card_declined")),
        (
            PaymentRail.CARD,
            "tok_insufficient_funds",
            ChargePlan(ChargeStatus.FAILED, failure_code="insufficient_funds"),
        ),
        (PaymentRail.CARD, "tok_expired_card", ChargePlan(ChargeStatus.FAILED, failure_code="expired_card")),
        (PaymentRail.CARD, "tok_3ds", ChargePlan(ChargeStatus.REQUIRES_ACTION)),
        (PaymentRail.SEPA_DEBIT, "iban_settles_paid", SETTLES_PAID),
        (PaymentRail.SEPA_DEBIT, None, SETTLES_PAID),
        (
            PaymentRail.SEPA_DEBIT,
            "iban_settles_failed",
            ChargePlan(ChargeStatus.PENDING_SETTLEMENT, settles_as=ChargeStatus.FAILED, settlement_failure_code="AM04"),
        ),
        (
            PaymentRail.SEPA_DEBIT,
            "iban_account_closed",
            ChargePlan(ChargeStatus.PENDING_SETTLEMENT, settles_as=ChargeStatus.FAILED, settlement_failure_code="AC04"),
        ),
        (PaymentRail.ACH_DEBIT, "ach_settles_paid", SETTLES_PAID),
        (
            PaymentRail.ACH_DEBIT,
            "ach_settles_failed",
            ChargePlan(ChargeStatus.PENDING_SETTLEMENT, settles_as=ChargeStatus.FAILED, settlement_failure_code="R01"),
        ),
        (
            PaymentRail.ACH_DEBIT,
            "ach_account_closed",
            ChargePlan(ChargeStatus.PENDING_SETTLEMENT, settles_as=ChargeStatus.FAILED, settlement_failure_code="R02"),
        ),
    ],
)
def test_scenario_for_instrument_token_picks_documented_plan(
    rail: PaymentRail, instrument: str | None, plan: ChargePlan
) -> None:
    assert scenario_for(rail, instrument) == Scenario(plan)


@pytest.mark.parametrize(
    ("rail", "instrument"),
    [
        (PaymentRail.SEPA_DEBIT, "tok_visa"),
        (PaymentRail.ACH_DEBIT, "tok_3ds"),
        (PaymentRail.CARD, "iban_settles_paid"),
        (PaymentRail.SEPA_DEBIT, "ach_settles_failed"),
    ],
)
def test_scenario_for_token_of_another_rail_fails_as_unsupported(rail: PaymentRail, instrument: str) -> None:
    assert scenario_for(rail, instrument).plan == ChargePlan(
        ChargeStatus.FAILED, failure_code="payment_method_unsupported"
    )


@pytest.mark.parametrize("rail", list(PaymentRail))
def test_scenario_for_behaviour_token_charges_as_the_rail_default(rail: PaymentRail) -> None:
    default_plan = scenario_for(rail, default_instrument(rail)).plan
    for token in ("tok_transient_3", "tok_rate_limited", "tok_always_transient", "tok_timeout"):
        assert scenario_for(rail, token).plan == default_plan, token


@pytest.mark.parametrize(
    ("token", "failures"), [("tok_transient_1", 1), ("tok_transient_2", 2), ("tok_transient_99", 99)]
)
def test_scenario_for_transient_n_token_fails_n_times(token: str, failures: int) -> None:
    assert scenario_for(PaymentRail.CARD, token).behaviour == Behaviour(transient_failures=failures)


@pytest.mark.parametrize("token", ["tok_transient_0", "tok_transient_100", "tok_transient_x", "tok_transient_02"])
def test_scenario_for_malformed_transient_token_is_an_ordinary_instrument(token: str) -> None:
    assert scenario_for(PaymentRail.CARD, token) == Scenario(PAID_AT_SUBMIT)


def test_step_for_transient_two_fails_twice_then_charges() -> None:
    behaviour = scenario_for(PaymentRail.CARD, "tok_transient_2").behaviour
    assert [step_for(behaviour, attempt) for attempt in range(1, 6)] == [
        Step.TRANSIENT_ERROR,
        Step.TRANSIENT_ERROR,
        Step.CHARGE,
        Step.CHARGE,
        Step.CHARGE,
    ]


def test_step_for_always_transient_never_charges() -> None:
    behaviour = scenario_for(PaymentRail.SEPA_DEBIT, "tok_always_transient").behaviour
    assert {step_for(behaviour, attempt) for attempt in range(1, 50)} == {Step.TRANSIENT_ERROR}


def test_step_for_rate_limited_refuses_once_with_429() -> None:
    behaviour = scenario_for(PaymentRail.CARD, "tok_rate_limited").behaviour
    assert (behaviour.transient_code, behaviour.transient_http_status) == ("rate_limited", 429)
    assert [step_for(behaviour, attempt) for attempt in (1, 2)] == [Step.TRANSIENT_ERROR, Step.CHARGE]


@pytest.mark.parametrize(
    ("token", "first"),
    [("tok_timeout", Step.CHARGE_AND_LOSE_RESPONSE), ("tok_timeout_no_charge", Step.LOSE_RESPONSE)],
)
def test_step_for_timeout_token_loses_only_the_first_answer(token: str, first: Step) -> None:
    behaviour = scenario_for(PaymentRail.CARD, token).behaviour
    assert [step_for(behaviour, attempt) for attempt in (1, 2, 3)] == [first, Step.CHARGE, Step.CHARGE]


def test_step_for_timeout_after_transient_errors_times_out_on_first_attempt_past_them() -> None:
    behaviour = Behaviour(transient_failures=1, lost_response=LostResponse.BEFORE_CHARGE)
    assert [step_for(behaviour, attempt) for attempt in (1, 2, 3)] == [
        Step.TRANSIENT_ERROR,
        Step.LOSE_RESPONSE,
        Step.CHARGE,
    ]


def test_step_for_attempt_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="from 1"):
        step_for(Behaviour(), 0)


@pytest.mark.parametrize(
    ("code", "decision"),
    [
        ("card_declined", Decision.FAIL),
        ("insufficient_funds", Decision.FAIL),
        ("expired_card", Decision.FAIL),
        ("authentication_failed", Decision.FAIL),
        (CANCELED_CODE, Decision.FAIL),
        ("AM04", Decision.FAIL),
        ("AC04", Decision.FAIL),
        ("R01", Decision.FAIL),
        ("R02", Decision.FAIL),
        ("payment_method_unsupported", Decision.FAIL),
        ("idempotency_key_reused", Decision.FAIL),
        ("rate_limited", Decision.RETRY),
        ("processing_error", Decision.RETRY),
        ("timeout", Decision.RETRY),
        ("provider_unavailable", Decision.RETRY),
        (OUTCOME_UNKNOWN_CODE, Decision.RECONCILE_LATER),
        ("never_heard_of_it", Decision.RECONCILE_LATER),
    ],
)
def test_sandbox_decision_for_code_follows_documented_table(code: str, decision: Decision) -> None:
    assert sandbox_decision_for(code) is decision


def test_sandbox_decisions_cover_every_code_the_sandbox_can_produce() -> None:
    produced: set[str | None] = {"idempotency_key_reused", "provider_unavailable", OUTCOME_UNKNOWN_CODE, CANCELED_CODE}
    produced |= {forced_failure_code(rail) for rail in PaymentRail}
    for rail in PaymentRail:
        for token in (
            "tok_decline",
            "tok_insufficient_funds",
            "tok_expired_card",
            "iban_settles_failed",
            "iban_account_closed",
            "ach_settles_failed",
            "ach_account_closed",
            "tok_transient_1",
            "tok_rate_limited",
            "tok_always_transient",
        ):
            scenario = scenario_for(rail, token)
            produced |= {scenario.plan.failure_code, scenario.plan.settlement_failure_code}
            produced.add(scenario.behaviour.transient_code)
    produced.discard(None)
    assert produced <= set(SANDBOX_DECISIONS)
