"""Every PaymentIntent and Refund status as the engine's outcomes, and what the customer is told to do next."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from billing.providers.stripe.statuses import (
    PaymentIntentStatus,
    RefundStatus,
    failed_but_open,
    next_action_for,
    refund_result_for,
    status_check_for,
    submit_result_for,
)
from billing.rails.results import (
    OUTCOME_UNKNOWN_CODE,
    NextActionType,
    RefundOutcome,
    StatusOutcome,
    SubmitOutcome,
)

DECLINE = {
    "code": "card_declined",
    "decline_code": "insufficient_funds",
    "message": "Your card has insufficient funds.",
}


def intent(status: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": "pi_123",
        "object": "payment_intent",
        "status": status,
        "client_secret": "pi_123_secret_abc",
        **fields,
    }


SUBMIT_OUTCOMES = {
    PaymentIntentStatus.SUCCEEDED: SubmitOutcome.SUCCEEDED,
    PaymentIntentStatus.PROCESSING: SubmitOutcome.PENDING_SETTLEMENT,
    PaymentIntentStatus.REQUIRES_CAPTURE: SubmitOutcome.PENDING_SETTLEMENT,
    PaymentIntentStatus.REQUIRES_ACTION: SubmitOutcome.REQUIRES_ACTION,
    PaymentIntentStatus.REQUIRES_CONFIRMATION: SubmitOutcome.REQUIRES_ACTION,
    PaymentIntentStatus.REQUIRES_PAYMENT_METHOD: SubmitOutcome.REQUIRES_ACTION,
    PaymentIntentStatus.CANCELED: SubmitOutcome.FAILED,
}
STATUS_OUTCOMES = {
    PaymentIntentStatus.SUCCEEDED: StatusOutcome.PAID,
    PaymentIntentStatus.PROCESSING: StatusOutcome.STILL_PENDING,
    PaymentIntentStatus.REQUIRES_CAPTURE: StatusOutcome.STILL_PENDING,
    PaymentIntentStatus.REQUIRES_ACTION: StatusOutcome.REQUIRES_ACTION,
    PaymentIntentStatus.REQUIRES_CONFIRMATION: StatusOutcome.REQUIRES_ACTION,
    PaymentIntentStatus.REQUIRES_PAYMENT_METHOD: StatusOutcome.REQUIRES_ACTION,
    PaymentIntentStatus.CANCELED: StatusOutcome.CANCELED,
}


def test_tables_cover_every_payment_intent_status() -> None:
    assert set(SUBMIT_OUTCOMES) == set(STATUS_OUTCOMES) == set(PaymentIntentStatus)


@pytest.mark.parametrize("status", list(PaymentIntentStatus))
def test_submit_result_for_each_status_without_a_payment_error(status: PaymentIntentStatus) -> None:
    result = submit_result_for(intent(status), request_id="req_1", return_url=None)

    assert result.outcome is SUBMIT_OUTCOMES[status]
    assert result.provider_reference == "pi_123"
    assert result.request_id == "req_1"


@pytest.mark.parametrize("status", list(PaymentIntentStatus))
def test_status_check_for_each_status_without_a_payment_error(status: PaymentIntentStatus) -> None:
    check = status_check_for(intent(status), request_id="req_1")

    assert check.outcome is STATUS_OUTCOMES[status]
    assert check.provider_reference == "pi_123"


def test_canceled_at_submit_fails_with_code_canceled() -> None:
    result = submit_result_for(intent("canceled"), request_id=None, return_url=None)

    assert (result.outcome, result.error_code) == (SubmitOutcome.FAILED, "canceled")


@pytest.mark.parametrize("status", ["requires_payment_method", "canceled"])
def test_a_failed_attempt_reports_its_decline_code_at_submit_and_check(status: str) -> None:
    failed = intent(status, last_payment_error=DECLINE)

    result = submit_result_for(failed, request_id=None, return_url=None)
    check = status_check_for(failed, request_id=None)

    assert (result.outcome, result.error_code, result.provider_reference) == (
        SubmitOutcome.FAILED,
        "insufficient_funds",
        "pi_123",
    )
    assert (check.outcome, check.error_code) == (StatusOutcome.FAILED, "insufficient_funds")


def test_failure_without_decline_code_keeps_stripes_code() -> None:
    failed = intent("requires_payment_method", last_payment_error={"code": "payment_intent_authentication_failure"})

    assert status_check_for(failed, request_id=None).error_code == "payment_intent_authentication_failure"


def test_failure_with_a_code_the_table_does_not_know_is_card_declined() -> None:
    failed = intent("requires_payment_method", last_payment_error={"code": "brand_new", "message": "no"})

    check = status_check_for(failed, request_id=None)

    assert check.error_code == "card_declined"
    assert check.error is not None
    assert "brand_new" in check.error.message


def test_only_a_failed_requires_payment_method_intent_is_failed_but_open() -> None:
    assert failed_but_open(intent("requires_payment_method", last_payment_error=DECLINE))
    assert not failed_but_open(intent("requires_payment_method"))
    assert not failed_but_open(intent("canceled", last_payment_error=DECLINE))
    assert not failed_but_open(intent("succeeded"))


def test_canceled_check_carries_stripes_cancel_time() -> None:
    check = status_check_for(intent("canceled", canceled_at=1_800_000_000), request_id=None)

    assert check.settled_at == datetime.fromtimestamp(1_800_000_000, UTC)


def test_unknown_status_is_unknown_at_submit_and_still_pending_at_check() -> None:
    strange = intent("requires_something_new")

    result = submit_result_for(strange, request_id=None, return_url=None)

    assert (result.outcome, result.error_code) == (SubmitOutcome.UNKNOWN, OUTCOME_UNKNOWN_CODE)
    assert status_check_for(strange, request_id=None).outcome is StatusOutcome.STILL_PENDING


def test_redirect_to_url_next_action_carries_stripes_url_and_return_url() -> None:
    waiting = intent(
        "requires_action",
        next_action={
            "type": "redirect_to_url",
            "redirect_to_url": {"url": "https://hooks.stripe.com/3ds", "return_url": "https://shop/back"},
        },
    )

    result = submit_result_for(waiting, request_id=None, return_url="https://configured/return")

    assert result.next_action is not None
    assert result.next_action.type is NextActionType.REDIRECT_TO_URL
    assert (result.next_action.url, result.next_action.return_url) == (
        "https://hooks.stripe.com/3ds",
        "https://shop/back",
    )
    assert result.action_url == "https://hooks.stripe.com/3ds"
    assert result.next_action.client_secret is None


def test_redirect_without_stripes_return_url_falls_back_to_the_configured_one() -> None:
    waiting = intent(
        "requires_action", next_action={"type": "redirect_to_url", "redirect_to_url": {"url": "https://x"}}
    )

    action = next_action_for(waiting, return_url="https://configured/return")

    assert action.return_url == "https://configured/return"


@pytest.mark.parametrize(
    "next_action",
    [
        pytest.param({"type": "use_stripe_sdk", "use_stripe_sdk": {"type": "three_d_secure_redirect"}}, id="sdk"),
        pytest.param({"type": "redirect_to_url", "redirect_to_url": {}}, id="redirect-without-url"),
        pytest.param({"type": "verify_with_microdeposits"}, id="other"),
        pytest.param(None, id="none"),
    ],
)
def test_any_other_next_action_is_the_provider_sdk_with_the_client_secret(next_action: dict[str, Any] | None) -> None:
    action = next_action_for(intent("requires_action", next_action=next_action), return_url=None)

    assert action.type is NextActionType.USE_PROVIDER_SDK
    assert action.client_secret == "pi_123_secret_abc"
    assert "secret" not in repr(action)
    assert "client_secret" not in action.to_stored()


REFUND_OUTCOMES = {
    RefundStatus.SUCCEEDED: RefundOutcome.SUCCEEDED,
    RefundStatus.PENDING: RefundOutcome.PENDING,
    RefundStatus.REQUIRES_ACTION: RefundOutcome.PENDING,
    RefundStatus.FAILED: RefundOutcome.FAILED,
    RefundStatus.CANCELED: RefundOutcome.FAILED,
}


def test_refund_table_covers_every_refund_status() -> None:
    assert set(REFUND_OUTCOMES) == set(RefundStatus)


@pytest.mark.parametrize("status", list(RefundStatus))
def test_refund_result_for_each_status(status: RefundStatus) -> None:
    result = refund_result_for({"id": "re_1", "status": status}, request_id="req_2")

    assert result.outcome is REFUND_OUTCOMES[status]
    assert result.request_id == "req_2"


def test_failed_refund_keeps_a_known_failure_reason_and_its_reference() -> None:
    result = refund_result_for(
        {"id": "re_1", "status": "failed", "failure_reason": "lost_or_stolen_card"}, request_id=None
    )

    assert (result.error_code, result.provider_reference) == ("lost_or_stolen_card", "re_1")


@pytest.mark.parametrize(("reason", "code"), [("unknown", "refund_failed"), (None, "refund_failed")])
def test_failed_refund_with_an_unknown_reason_is_refund_failed(reason: str | None, code: str) -> None:
    result = refund_result_for({"id": "re_1", "status": "failed", "failure_reason": reason}, request_id=None)

    assert result.error_code == code


def test_canceled_refund_is_failed_refund_canceled() -> None:
    assert refund_result_for({"id": "re_1", "status": "canceled"}, request_id=None).error_code == "refund_canceled"


def test_unknown_refund_status_is_pending() -> None:
    assert refund_result_for({"id": "re_1", "status": "new_thing"}, request_id=None).outcome is RefundOutcome.PENDING
