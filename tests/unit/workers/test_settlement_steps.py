"""The settlement sweep's decision for each provider answer: when to complete, fail, cancel, expire or leave."""

from __future__ import annotations

import itertools

import pytest

from billing.rails.results import StatusOutcome
from billing.services.reconciliation import SettlementStep, settlement_step

# (outcome, customer's time up, cancel sent in this run) -> step, stated for every combination, independently of the
# code. A cancel is only ever sent for REQUIRES_ACTION past its time; the other rows with cancel_sent are the
# cancel's own answers.
EXPECTED: dict[tuple[StatusOutcome, bool, bool], SettlementStep] = {
    # Paid completes, the race included: the customer finished before the cancel arrived and the money moved.
    (StatusOutcome.PAID, False, False): SettlementStep.COMPLETE,
    (StatusOutcome.PAID, True, False): SettlementStep.COMPLETE,
    (StatusOutcome.PAID, True, True): SettlementStep.COMPLETE,
    (StatusOutcome.PAID, False, True): SettlementStep.COMPLETE,
    # Failed fails with the provider's code, whenever it is said.
    (StatusOutcome.FAILED, False, False): SettlementStep.FAIL,
    (StatusOutcome.FAILED, True, False): SettlementStep.FAIL,
    (StatusOutcome.FAILED, True, True): SettlementStep.FAIL,
    (StatusOutcome.FAILED, False, True): SettlementStep.FAIL,
    # Canceled by our cancel: expired. Canceled without it: failed, not called expired.
    (StatusOutcome.CANCELED, True, True): SettlementStep.EXPIRE,
    (StatusOutcome.CANCELED, False, True): SettlementStep.EXPIRE,
    (StatusOutcome.CANCELED, True, False): SettlementStep.FAIL_CANCELED,
    (StatusOutcome.CANCELED, False, False): SettlementStep.FAIL_CANCELED,
    # Still pending (a debit on its way, a card being captured) is never canceled or expired.
    (StatusOutcome.STILL_PENDING, False, False): SettlementStep.LEAVE,
    (StatusOutcome.STILL_PENDING, True, False): SettlementStep.LEAVE,
    (StatusOutcome.STILL_PENDING, True, True): SettlementStep.LEAVE,
    (StatusOutcome.STILL_PENDING, False, True): SettlementStep.LEAVE,
    # Waiting for the customer: left while there is time, canceled once it is up, flagged if the cancel did not take.
    (StatusOutcome.REQUIRES_ACTION, False, False): SettlementStep.LEAVE,
    (StatusOutcome.REQUIRES_ACTION, True, False): SettlementStep.CANCEL,
    (StatusOutcome.REQUIRES_ACTION, True, True): SettlementStep.CANCEL_REFUSED,
    (StatusOutcome.REQUIRES_ACTION, False, True): SettlementStep.LEAVE,
    # A reference the provider gave us and no longer knows is flagged, never failed.
    (StatusOutcome.NOT_FOUND, False, False): SettlementStep.FLAG_MISSING,
    (StatusOutcome.NOT_FOUND, True, False): SettlementStep.FLAG_MISSING,
    (StatusOutcome.NOT_FOUND, True, True): SettlementStep.FLAG_MISSING,
    (StatusOutcome.NOT_FOUND, False, True): SettlementStep.FLAG_MISSING,
}


def test_every_answer_has_an_expected_step() -> None:
    assert set(EXPECTED) == set(itertools.product(StatusOutcome, (False, True), (False, True)))


@pytest.mark.parametrize(("answer", "step"), EXPECTED.items(), ids=lambda v: str(v))
def test_settlement_step_for_each_answer(answer: tuple[StatusOutcome, bool, bool], step: SettlementStep) -> None:
    outcome, expired, cancel_sent = answer

    assert settlement_step(outcome, customer_action_expired=expired, cancel_sent=cancel_sent) is step


@pytest.mark.parametrize("expired", [False, True])
@pytest.mark.parametrize("cancel_sent", [False, True])
def test_only_an_answer_that_the_charge_cannot_succeed_fails_the_execution(expired: bool, cancel_sent: bool) -> None:
    failing = {SettlementStep.FAIL, SettlementStep.FAIL_CANCELED, SettlementStep.EXPIRE}

    failed_on = {
        outcome
        for outcome in StatusOutcome
        if settlement_step(outcome, customer_action_expired=expired, cancel_sent=cancel_sent) in failing
    }

    assert failed_on == {StatusOutcome.FAILED, StatusOutcome.CANCELED}
