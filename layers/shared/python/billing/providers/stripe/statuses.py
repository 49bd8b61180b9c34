"""A PaymentIntent's (or a Refund's) status as the engine's outcomes. Pure: objects are plain dicts, as the SDK's
to_dict() gives them (and as a webhook's data.object carries them).

    PaymentIntent status       submit                      check_status
    succeeded                  SUCCEEDED                   PAID
    processing                 PENDING_SETTLEMENT          STILL_PENDING
    requires_capture           PENDING_SETTLEMENT          STILL_PENDING
    requires_action            REQUIRES_ACTION             REQUIRES_ACTION
    requires_confirmation      REQUIRES_ACTION             REQUIRES_ACTION
    requires_payment_method    FAILED (decline code)       FAILED (decline code)    with last_payment_error
                               REQUIRES_ACTION             REQUIRES_ACTION          without
    canceled                   FAILED (decline code, or    FAILED (decline code)    with last_payment_error
                               "canceled")                 CANCELED                 without

Why the less obvious rows:
- requires_capture: we charge with automatic capture, so only someone capturing by hand at Stripe (or a future
  manual-capture flow) leaves an intent there. The money is authorised, not captured: not final either way.
- requires_confirmation: we create and confirm in one request, so only an intent confirmed elsewhere lingers here;
  the customer's side (Stripe.js with the client secret) can still confirm it.
- requires_payment_method without last_payment_error: nothing was tried yet, nothing failed, and the customer can
  still attach a payment method with the client secret. It waits for the customer like requires_action, and the
  engine's requires-action deadline ends it.
- requires_payment_method with last_payment_error: the attempt failed (a decline, a failed 3-D Secure). Stripe
  leaves the intent open for another payment method, but the engine has failed the execution, so the provider
  cancels the intent right after (provider.py): no later confirm can move money for a failed execution.
- canceled with last_payment_error: an intent we canceled after its failure. It reports the failure, as it did
  when it was first seen, so the answer does not change between the decline and the cancel.
- A status Stripe may add later is never final: submit reports UNKNOWN (then check_status), check_status
  STILL_PENDING.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, assert_never

from billing.providers.stripe.errors import (
    CANCELED,
    CARD_DECLINED,
    REFUND_CANCELED,
    REFUND_FAILED,
    STRIPE_DECISIONS,
    safe_text,
)
from billing.rails.results import (
    OUTCOME_UNKNOWN_CODE,
    Decision,
    NextAction,
    NextActionType,
    ProviderError,
    RefundResult,
    StatusCheck,
    SubmitResult,
)

StripeObject = Mapping[str, Any]


class PaymentIntentStatus(StrEnum):
    """Every status of a Stripe PaymentIntent (https://docs.stripe.com/payments/paymentintents/lifecycle)."""

    REQUIRES_PAYMENT_METHOD = "requires_payment_method"
    REQUIRES_CONFIRMATION = "requires_confirmation"
    REQUIRES_ACTION = "requires_action"
    PROCESSING = "processing"
    REQUIRES_CAPTURE = "requires_capture"
    CANCELED = "canceled"
    SUCCEEDED = "succeeded"


class RefundStatus(StrEnum):
    """Every status of a Stripe Refund."""

    PENDING = "pending"
    REQUIRES_ACTION = "requires_action"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


def intent_status(intent: StripeObject) -> PaymentIntentStatus | None:
    """The intent's status, or None for one this code does not know."""
    try:
        return PaymentIntentStatus(str(intent.get("status")))
    except ValueError:
        return None


def submit_result_for(intent: StripeObject, *, request_id: str | None, return_url: str | None) -> SubmitResult:
    """What a submit that created (or found) this intent achieved."""
    reference = str(intent["id"])
    status = intent_status(intent)
    if status is None:
        error = ProviderError(OUTCOME_UNKNOWN_CODE, f"PaymentIntent {reference} has an unknown status", 200, request_id)
        return SubmitResult.from_error(error, Decision.RECONCILE_LATER)
    failure = payment_failure(intent, request_id=request_id)
    match status:
        case PaymentIntentStatus.SUCCEEDED:
            return SubmitResult.succeeded(reference, request_id=request_id)
        case PaymentIntentStatus.PROCESSING | PaymentIntentStatus.REQUIRES_CAPTURE:
            return SubmitResult.pending_settlement(reference, request_id=request_id)
        case PaymentIntentStatus.REQUIRES_ACTION | PaymentIntentStatus.REQUIRES_CONFIRMATION:
            return SubmitResult.requires_action(
                reference, next_action=next_action_for(intent, return_url=return_url), request_id=request_id
            )
        case PaymentIntentStatus.REQUIRES_PAYMENT_METHOD:
            if failure is None:
                return SubmitResult.requires_action(
                    reference, next_action=next_action_for(intent, return_url=return_url), request_id=request_id
                )
            return SubmitResult.from_error(failure, Decision.FAIL, provider_reference=reference)
        case PaymentIntentStatus.CANCELED:
            error = failure or ProviderError(CANCELED, f"PaymentIntent {reference} was canceled", 200, request_id)
            return SubmitResult.from_error(error, Decision.FAIL, provider_reference=reference)
        case _:
            assert_never(status)


def status_check_for(intent: StripeObject, *, request_id: str | None) -> StatusCheck:
    """What check_status reports for this intent."""
    reference = str(intent["id"])
    status = intent_status(intent)
    if status is None:
        return StatusCheck.still_pending(reference, request_id=request_id)
    failure = payment_failure(intent, request_id=request_id)
    match status:
        case PaymentIntentStatus.SUCCEEDED:
            return StatusCheck.paid(reference, request_id=request_id)
        case PaymentIntentStatus.PROCESSING | PaymentIntentStatus.REQUIRES_CAPTURE:
            return StatusCheck.still_pending(reference, request_id=request_id)
        case PaymentIntentStatus.REQUIRES_ACTION | PaymentIntentStatus.REQUIRES_CONFIRMATION:
            return StatusCheck.requires_action(reference, request_id=request_id)
        case PaymentIntentStatus.REQUIRES_PAYMENT_METHOD:
            if failure is None:
                return StatusCheck.requires_action(reference, request_id=request_id)
            return StatusCheck.failed(reference, failure, request_id=request_id)
        case PaymentIntentStatus.CANCELED:
            settled_at = _timestamp(intent.get("canceled_at"))
            if failure is not None:
                return StatusCheck.failed(reference, failure, settled_at=settled_at, request_id=request_id)
            return StatusCheck.canceled(reference, settled_at=settled_at, request_id=request_id)
        case _:
            assert_never(status)


def failed_but_open(intent: StripeObject) -> bool:
    """True for an intent whose attempt failed but that Stripe keeps open for another payment method."""
    return intent_status(intent) is PaymentIntentStatus.REQUIRES_PAYMENT_METHOD and _last_error(intent) is not None


def payment_failure(intent: StripeObject, *, request_id: str | None) -> ProviderError | None:
    """The error of the intent's last failed attempt (last_payment_error), as a FAIL-coded ProviderError."""
    last_error = _last_error(intent)
    if last_error is None:
        return None
    stripe_codes = [c for c in (last_error.get("decline_code"), last_error.get("code")) if isinstance(c, str)]
    code = next((c for c in stripe_codes if STRIPE_DECISIONS.get(c) is Decision.FAIL), CARD_DECLINED)
    message = last_error.get("message") or "payment failed"
    return ProviderError(
        code,
        safe_text(f"PaymentIntent {intent['id']} failed ({'/'.join(dict.fromkeys(stripe_codes))}): {message}"),
        402,
        request_id,
    )


def next_action_for(intent: StripeObject, *, return_url: str | None) -> NextAction:
    """What the customer does next: follow Stripe's redirect, or let Stripe.js finish with the client secret."""
    next_action = intent.get("next_action") or {}
    if next_action.get("type") == "redirect_to_url":
        redirect = next_action.get("redirect_to_url") or {}
        url = redirect.get("url")
        if isinstance(url, str) and url:
            return NextAction(
                NextActionType.REDIRECT_TO_URL, url=url, return_url=redirect.get("return_url") or return_url
            )
    # use_stripe_sdk (3-D Secure in Stripe.js), the other Stripe-handled actions, or no action object at all
    # (requires_confirmation, requires_payment_method): Stripe.js's handleNextAction with the client secret.
    return NextAction(NextActionType.USE_PROVIDER_SDK, client_secret=intent.get("client_secret"))


def refund_result_for(refund: StripeObject, *, request_id: str | None) -> RefundResult:
    """What a refund (created or found) stands at."""
    reference = str(refund["id"])
    try:
        status = RefundStatus(str(refund.get("status")))
    except ValueError:
        # A status Stripe may add later: not final, check_refund asks again.
        return RefundResult.pending(reference, request_id=request_id)
    match status:
        case RefundStatus.SUCCEEDED:
            return RefundResult.succeeded(reference, request_id=request_id)
        case RefundStatus.PENDING | RefundStatus.REQUIRES_ACTION:
            return RefundResult.pending(reference, request_id=request_id)
        case RefundStatus.FAILED:
            reason = refund.get("failure_reason")
            code = reason if isinstance(reason, str) and STRIPE_DECISIONS.get(reason) is Decision.FAIL else None
            error = ProviderError(code or REFUND_FAILED, f"refund {reference} failed: {reason}", 200, request_id)
            return RefundResult.failed(error, provider_reference=reference, request_id=request_id)
        case RefundStatus.CANCELED:
            error = ProviderError(REFUND_CANCELED, f"refund {reference} was canceled", 200, request_id)
            return RefundResult.failed(error, provider_reference=reference, request_id=request_id)
        case _:
            assert_never(status)


def _last_error(intent: StripeObject) -> Mapping[str, Any] | None:
    last_error = intent.get("last_payment_error")
    return last_error if isinstance(last_error, Mapping) and last_error else None


def _timestamp(value: object) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if isinstance(value, int) and not isinstance(value, bool) else None
