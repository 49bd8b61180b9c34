"""The outcome x status -> action table that decides what every acting webhook event does."""

from __future__ import annotations

import itertools
from uuid import uuid4

import pytest

from billing.db.webhook_inbox import ExecutionRef
from billing.domain.money import Money
from billing.domain.status import ExecutionStatus, is_terminal
from billing.services.webhook_processing import (
    ACTING_OUTCOMES,
    ACTIONS,
    STORED_RESULTS,
    AmountMismatch,
    WebhookAction,
    WebhookResult,
    action_for,
    amount_mismatch,
    decide,
)
from billing.webhooks.events import WebhookEvent, WebhookOutcome

_O = WebhookOutcome
_S = ExecutionStatus
_A = WebhookAction

# The behaviour the issue asks for, row by row (the table in billing.services.webhook_processing must agree).
EXPECTED = [
    (_O.SUCCEEDED, _S.PENDING, _A.CONFIRM),
    (_O.FAILED, _S.PENDING, _A.REJECT),
    (_O.REVERSED, _S.PENDING, _A.RETRY_LATER),
    (_O.SUCCEEDED, _S.COMPLETED, _A.ACKNOWLEDGE),
    (_O.FAILED, _S.COMPLETED, _A.RECORD_OUT_OF_ORDER),
    (_O.REVERSED, _S.COMPLETED, _A.RECORD_REVERSAL),
    (_O.SUCCEEDED, _S.FAILED, _A.FLAG_PAID_AFTER_FAILURE),
    (_O.FAILED, _S.FAILED, _A.ACKNOWLEDGE),
    (_O.REVERSED, _S.FAILED, _A.RECORD_OUT_OF_ORDER),
    (_O.SUCCEEDED, _S.CANCELED, _A.FLAG_PAID_AFTER_FAILURE),
    (_O.FAILED, _S.CANCELED, _A.ACKNOWLEDGE),
    (_O.REVERSED, _S.CANCELED, _A.RECORD_OUT_OF_ORDER),
    (_O.SUCCEEDED, _S.CREATED, _A.RETRY_LATER),
    (_O.FAILED, _S.CREATED, _A.RETRY_LATER),
    (_O.REVERSED, _S.CREATED, _A.RETRY_LATER),
    (_O.SUCCEEDED, _S.PROCESSING, _A.RETRY_LATER),
    (_O.FAILED, _S.PROCESSING, _A.RETRY_LATER),
    (_O.REVERSED, _S.PROCESSING, _A.RETRY_LATER),
]


def test_table_covers_every_acting_outcome_and_status_exactly_once() -> None:
    assert set(ACTIONS) == set(itertools.product(ACTING_OUTCOMES, ExecutionStatus))
    assert len(EXPECTED) == len(ACTIONS)


@pytest.mark.parametrize(("outcome", "status", "action"), EXPECTED)
def test_action_for_outcome_and_status(outcome: WebhookOutcome, status: ExecutionStatus, action: WebhookAction) -> None:
    assert action_for(outcome, status) is action


def test_only_pending_executions_are_transitioned_and_each_by_its_own_outcome() -> None:
    transitions = {key: action for key, action in ACTIONS.items() if action in (_A.CONFIRM, _A.REJECT)}
    assert transitions == {(_O.SUCCEEDED, _S.PENDING): _A.CONFIRM, (_O.FAILED, _S.PENDING): _A.REJECT}


def test_reversal_is_recorded_only_for_a_completed_execution() -> None:
    assert [key for key, action in ACTIONS.items() if action is _A.RECORD_REVERSAL] == [(_O.REVERSED, _S.COMPLETED)]


@pytest.mark.parametrize("status", [s for s in ExecutionStatus if is_terminal(s)])
def test_terminal_execution_is_never_asked_to_retry(status: ExecutionStatus) -> None:
    # A terminal execution never changes again: a 409 would make the provider redeliver forever.
    assert all(action_for(outcome, status) is not _A.RETRY_LATER for outcome in ACTING_OUTCOMES)


@pytest.mark.parametrize("status", [_S.CREATED, _S.PROCESSING])
def test_execution_still_being_submitted_is_asked_to_retry_whatever_the_outcome(status: ExecutionStatus) -> None:
    assert {action_for(outcome, status) for outcome in ACTING_OUTCOMES} == {_A.RETRY_LATER}


def test_ignored_events_have_no_action_because_they_are_never_looked_up() -> None:
    with pytest.raises(KeyError):
        action_for(_O.IGNORED, _S.PENDING)


def test_retry_later_is_the_one_result_never_stored() -> None:
    assert set(WebhookResult) - STORED_RESULTS == {WebhookResult.RETRY_LATER}


# --- the amount check on confirmations ----------------------------------------------------------------------------


def _execution(status: ExecutionStatus = _S.PENDING, amount: int = 1999, currency: str = "EUR") -> ExecutionRef:
    return ExecutionRef(uuid4(), uuid4(), status, amount, currency)


def _event(outcome: WebhookOutcome, amount: int | None, currency: str | None) -> WebhookEvent:
    return WebhookEvent("sandbox", "evt_1", "payment.x", "ref_1", outcome, amount=amount, currency=currency)


@pytest.mark.parametrize(
    ("amount", "currency"), [(1000, "EUR"), (1999, "USD"), (0, "EUR")], ids=["amount", "currency", "zero"]
)
def test_confirmation_of_another_amount_or_currency_is_recorded_not_confirmed(amount: int, currency: str) -> None:
    event = _event(_O.SUCCEEDED, amount, currency)

    assert decide(event, _execution()) is _A.RECORD_AMOUNT_MISMATCH
    assert amount_mismatch(event, _execution()) == AmountMismatch(Money(1999, "EUR"), Money(amount, currency))


@pytest.mark.parametrize(("amount", "currency"), [(1999, "EUR"), (None, None)], ids=["same", "not_reported"])
def test_confirmation_of_the_same_amount_or_of_none_is_confirmed(amount: int | None, currency: str | None) -> None:
    event = _event(_O.SUCCEEDED, amount, currency)

    assert decide(event, _execution()) is _A.CONFIRM
    assert amount_mismatch(event, _execution()) is None


def test_failure_of_another_amount_still_rejects_because_no_money_moved() -> None:
    assert decide(_event(_O.FAILED, 1000, "EUR"), _execution()) is _A.REJECT


@pytest.mark.parametrize("status", [s for s in ExecutionStatus if s is not _S.PENDING])
def test_only_a_confirmation_is_held_back_for_its_amount(status: ExecutionStatus) -> None:
    event = _event(_O.SUCCEEDED, 1000, "EUR")

    assert decide(event, _execution(status)) is action_for(_O.SUCCEEDED, status)


def test_amounts_are_compared_only_with_an_execution_looked_up_with_its_amount() -> None:
    stored = ExecutionRef(uuid4(), uuid4(), _S.PENDING)

    with pytest.raises(ValueError, match="looked up"):
        amount_mismatch(_event(_O.SUCCEEDED, 1999, "EUR"), stored)


def test_event_with_an_amount_but_no_currency_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="together"):
        _event(_O.SUCCEEDED, 1999, None)


def test_amount_mismatch_is_a_stored_result() -> None:
    assert WebhookResult.AMOUNT_MISMATCH in STORED_RESULTS
