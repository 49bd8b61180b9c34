"""Result values refuse impossible combinations, and every predicate gives each outcome exactly one meaning."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from billing.rails.results import (
    Decision,
    ProviderError,
    StatusCheck,
    StatusOutcome,
    SubmitOutcome,
    SubmitResult,
    decision_for_outcome,
    outcome_for_decision,
    status_is_final,
    status_requires_reference,
    submit_carries_error,
    submit_is_final,
    submit_requires_reference,
)

DECLINE = ProviderError("card_declined", "declined", 402, "req_1")
TIMEOUT = ProviderError("outcome_unknown", "no answer")


def test_submit_predicates_give_every_outcome_its_expected_meaning() -> None:
    # (requires reference, carries error, final, decision) per outcome, stated independently of the code.
    expected = {
        SubmitOutcome.SUCCEEDED: (True, False, True, None),
        SubmitOutcome.FAILED: (False, True, True, Decision.FAIL),
        SubmitOutcome.PENDING_SETTLEMENT: (True, False, False, None),
        SubmitOutcome.REQUIRES_ACTION: (True, False, False, None),
        SubmitOutcome.TRANSIENT_ERROR: (False, True, False, Decision.RETRY),
        SubmitOutcome.UNKNOWN: (False, True, False, Decision.RECONCILE_LATER),
    }
    assert set(expected) == set(SubmitOutcome)
    for outcome, meaning in expected.items():
        actual = (
            submit_requires_reference(outcome),
            submit_carries_error(outcome),
            submit_is_final(outcome),
            decision_for_outcome(outcome),
        )
        assert actual == meaning, outcome


def test_status_predicates_give_every_outcome_its_expected_meaning() -> None:
    expected = {
        StatusOutcome.PAID: (True, True),
        StatusOutcome.FAILED: (True, True),
        StatusOutcome.STILL_PENDING: (True, False),
        StatusOutcome.REQUIRES_ACTION: (True, False),
        StatusOutcome.CANCELED: (True, True),
        StatusOutcome.NOT_FOUND: (False, False),
    }
    assert set(expected) == set(StatusOutcome)
    for outcome, (needs_reference, final) in expected.items():
        assert (status_requires_reference(outcome), status_is_final(outcome)) == (needs_reference, final), outcome


@pytest.mark.parametrize("decision", list(Decision))
def test_outcome_for_decision_round_trips_through_decision_for_outcome(decision: Decision) -> None:
    assert decision_for_outcome(outcome_for_decision(decision)) is decision


@pytest.mark.parametrize(
    ("decision", "outcome"),
    [
        (Decision.FAIL, SubmitOutcome.FAILED),
        (Decision.RETRY, SubmitOutcome.TRANSIENT_ERROR),
        (Decision.RECONCILE_LATER, SubmitOutcome.UNKNOWN),
    ],
)
def test_from_error_with_decision_builds_matching_outcome_and_copies_trace(
    decision: Decision, outcome: SubmitOutcome
) -> None:
    error = ProviderError("some_code", "msg", 503, "req_42", retryable=decision is Decision.RETRY)
    result = SubmitResult.from_error(error, decision)
    assert (result.outcome, result.error_code, result.http_status, result.request_id) == (
        outcome,
        "some_code",
        503,
        "req_42",
    )
    assert result.retryable is (decision is Decision.RETRY)


def test_from_error_failed_keeps_reference_of_declined_charge() -> None:
    result = SubmitResult.from_error(DECLINE, Decision.FAIL, provider_reference="sbx_1")
    assert (result.outcome, result.provider_reference) == (SubmitOutcome.FAILED, "sbx_1")


def test_from_error_transient_drops_reference_because_nothing_was_charged() -> None:
    error = ProviderError("rate_limited", "slow down", 429)
    assert SubmitResult.from_error(error, Decision.RETRY, provider_reference="sbx_1").provider_reference is None


@pytest.mark.parametrize(
    ("build", "complaint"),
    [
        (lambda: SubmitResult(SubmitOutcome.SUCCEEDED), "must carry the provider reference"),
        (lambda: SubmitResult(SubmitOutcome.PENDING_SETTLEMENT, ""), "must carry the provider reference"),
        (lambda: SubmitResult(SubmitOutcome.REQUIRES_ACTION), "must carry the provider reference"),
        (lambda: SubmitResult(SubmitOutcome.SUCCEEDED, "sbx_1", error=DECLINE), "cannot carry an error"),
        (lambda: SubmitResult(SubmitOutcome.FAILED, "sbx_1"), "needs an error"),
        (lambda: SubmitResult(SubmitOutcome.TRANSIENT_ERROR), "needs an error"),
        (lambda: SubmitResult(SubmitOutcome.TRANSIENT_ERROR, "sbx_1", error=DECLINE), "nothing was charged"),
        (lambda: SubmitResult(SubmitOutcome.UNKNOWN), "needs an error"),
        (lambda: SubmitResult(SubmitOutcome.UNKNOWN, "sbx_1", error=TIMEOUT), "cannot name a charge"),
        (lambda: SubmitResult(SubmitOutcome.SUCCEEDED, "sbx_1", action_url="https://x.invalid"), "action url"),
    ],
)
def test_submit_result_with_impossible_fields_is_refused(build: Callable[[], SubmitResult], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        build()


def test_requires_action_result_carries_reference_and_action_url() -> None:
    result = SubmitResult.requires_action("sbx_1", "https://x.invalid/3ds")
    assert (result.outcome, result.provider_reference, result.action_url, result.error_code) == (
        SubmitOutcome.REQUIRES_ACTION,
        "sbx_1",
        "https://x.invalid/3ds",
        None,
    )
    assert not result.retryable


@pytest.mark.parametrize(
    ("build", "complaint"),
    [
        (lambda: StatusCheck(StatusOutcome.PAID), "needs a reference"),
        (lambda: StatusCheck(StatusOutcome.STILL_PENDING), "needs a reference"),
        (lambda: StatusCheck(StatusOutcome.NOT_FOUND, "sbx_1"), "cannot carry a reference"),
        (lambda: StatusCheck(StatusOutcome.FAILED, "sbx_1"), "carries the provider error"),
        (lambda: StatusCheck(StatusOutcome.PAID, "sbx_1", error=DECLINE), "carries the provider error"),
        (lambda: StatusCheck(StatusOutcome.CANCELED), "needs a reference"),
        (lambda: StatusCheck(StatusOutcome.CANCELED, "sbx_1", error=DECLINE), "carries the provider error"),
        (
            lambda: StatusCheck(StatusOutcome.STILL_PENDING, "sbx_1", settled_at=datetime(2026, 4, 10, tzinfo=UTC)),
            "has not settled",
        ),
    ],
)
def test_status_check_with_impossible_fields_is_refused(build: Callable[[], StatusCheck], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        build()


def test_failed_status_check_exposes_the_provider_code() -> None:
    check = StatusCheck.failed("sbx_1", ProviderError("R01", "returned"), settled_at=datetime(2026, 4, 10, tzinfo=UTC))
    assert (check.outcome, check.error_code) == (StatusOutcome.FAILED, "R01")


def test_canceled_status_check_names_the_charge_and_when_it_ended_without_an_error() -> None:
    ended = datetime(2026, 4, 10, tzinfo=UTC)

    check = StatusCheck.canceled("sbx_1", settled_at=ended)

    assert (check.outcome, check.provider_reference, check.settled_at, check.error_code) == (
        StatusOutcome.CANCELED,
        "sbx_1",
        ended,
        None,
    )


def test_provider_error_without_code_is_refused() -> None:
    with pytest.raises(ValueError, match="code"):
        ProviderError("", "no code")
