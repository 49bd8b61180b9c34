"""Stripe's errors as ProviderErrors, and the decision table that says what the engine does about each code.

Stripe's own code is kept whenever the table agrees with what the error's class calls for (a card error fails, a
rate limit is retried, ...); a code the table does not know, or one it would decide differently in this context,
is replaced by the class's generic code, with Stripe's codes kept in the message. So decision_for(error.code) is
always the decision submit acted on, and a code the table has never seen is never guessed at.

What each class calls for:

    CardError (402)                  FAIL: declined; the decline_code (insufficient_funds, ...) when present
    InvalidRequestError (400, 404)   FAIL: our request is wrong and sending it again cannot help
    RateLimitError (429)             RETRY: refused before processing
    AuthenticationError (401),       RETRY: refused before processing; a rotated key may fix it (the credentials
      PermissionError (403)            callable is asked again on the next attempt)
    IdempotencyError                 RECONCILE_LATER: a request under this key exists; check_status finds it
    APIError (500, 409, ...)         Stripe-Should-Retry: true -> RETRY; false or absent -> RECONCILE_LATER, as a
                                       500 leaves the outcome indeterminate
    APIConnectionError               RETRY when the request provably never reached Stripe (connection refused,
                                       connect timeout); else UNKNOWN (read timeout, connection dropped after
                                       sending): the charge may exist
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

import requests
import stripe
import urllib3.exceptions

from billing.domain.execution import mask_card_numbers
from billing.rails.results import OUTCOME_UNKNOWN_CODE, Decision, ProviderError

# Our codes, for errors that carry no usable Stripe code.
REQUEST_NOT_SENT: Final = "request_not_sent"
API_ERROR: Final = "api_error"
API_ERROR_RETRY_SAFE: Final = "api_error_retry_safe"
CARD_DECLINED: Final = "card_declined"
INVALID_REQUEST: Final = "invalid_request_error"
RATE_LIMIT: Final = "rate_limit"
AUTHENTICATION_ERROR: Final = "authentication_error"
PERMISSION_ERROR: Final = "permission_error"
IDEMPOTENCY_ERROR: Final = "idempotency_error"
STRIPE_ERROR: Final = "stripe_error"
# A PaymentIntent or refund canceled before it could succeed: no money moved and none ever will.
CANCELED: Final = "canceled"
REFUND_CANCELED: Final = "refund_canceled"
REFUND_FAILED: Final = "refund_failed"
# An attempt above the first could not look for the charge an earlier attempt may have made, so it made none.
PAYMENT_INTENT_LOOKUP_FAILED: Final = "payment_intent_lookup_failed"
REFUND_LOOKUP_FAILED: Final = "refund_lookup_failed"
# A charge without a payment method token: Stripe would refuse it, so it is refused before asking.
PARAMETER_MISSING: Final = "parameter_missing"

# Stripe's decline codes (https://docs.stripe.com/declines/codes) and card error codes
# (https://docs.stripe.com/error-codes): the issuer or Stripe refused the payment method for this payment.
_DECLINES: Final = frozenset(
    {
        "authentication_required",
        "approve_with_id",
        "call_issuer",
        "card_decline_rate_limit_exceeded",
        "card_declined",
        "card_not_supported",
        "card_velocity_exceeded",
        "currency_not_supported",
        "do_not_honor",
        "do_not_try_again",
        "duplicate_transaction",
        "expired_card",
        "fraudulent",
        "generic_decline",
        "incorrect_address",
        "incorrect_cvc",
        "incorrect_number",
        "incorrect_pin",
        "incorrect_zip",
        "insufficient_funds",
        "invalid_account",
        "invalid_amount",
        "invalid_cvc",
        "invalid_expiry_month",
        "invalid_expiry_year",
        "invalid_number",
        "invalid_pin",
        "issuer_not_available",
        "lost_card",
        "merchant_blacklist",
        "new_account_information_available",
        "no_action_taken",
        "not_permitted",
        "offline_pin_required",
        "online_or_offline_pin_required",
        "payment_intent_authentication_failure",
        "payment_method_customer_decline",
        "payment_method_provider_decline",
        "pickup_card",
        "pin_try_exceeded",
        # Stripe: "an error occurred while processing the card"; the PaymentIntent failed, the customer may try
        # again with a new request (a new execution), this one is over.
        "processing_error",
        "reenter_transaction",
        "restricted_card",
        "revocation_of_all_authorizations",
        "revocation_of_authorization",
        "security_violation",
        "service_not_allowed",
        "stolen_card",
        "stop_payment_order",
        "testmode_decline",
        "transaction_not_allowed",
        "try_again_later",
        "withdrawal_count_limit_exceeded",
    }
)

# Invalid-request codes a PaymentIntent or Refund request can meet: the same request is refused every time.
_REFUSALS: Final = frozenset(
    {
        "amount_too_large",
        "amount_too_small",
        "balance_insufficient",
        "charge_already_refunded",
        "charge_disputed",
        "charge_exceeds_source_limit",
        "charge_expired_for_capture",
        "country_unsupported",
        "invalid_charge_amount",
        "invalid_charge_amount_no_decimal_compatible",
        "livemode_mismatch",
        "parameter_invalid_empty",
        "parameter_invalid_integer",
        "parameter_invalid_string_blank",
        "parameter_invalid_string_empty",
        PARAMETER_MISSING,
        "parameter_unknown",
        "parameters_exclusive",
        "payment_intent_action_required",
        "payment_intent_incompatible_payment_method",
        "payment_intent_invalid_parameter",
        "payment_intent_payment_attempt_failed",
        "payment_intent_unexpected_state",
        "payment_method_invalid_parameter",
        "payment_method_not_available",
        "payment_method_unactivated",
        "payment_method_unexpected_state",
        "refund_disputed_payment",
        "resource_missing",
        "testmode_charges_only",
        # Refund.failure_reason values: the refund was accepted, then the bank sent it back.
        "charge_for_pending_refund_disputed",
        "declined",
        "expired_or_canceled_card",
        "lost_or_stolen_card",
        "merchant_request",
    }
)

# Refused before Stripe processed anything: the same request, later, is safe.
_RETRYABLE: Final = frozenset(
    {
        REQUEST_NOT_SENT,
        API_ERROR_RETRY_SAFE,
        RATE_LIMIT,
        # Stripe's 429 when another request holds a lock on the same object.
        "lock_timeout",
        AUTHENTICATION_ERROR,
        PERMISSION_ERROR,
        "api_key_expired",
        "secret_key_required",
        PAYMENT_INTENT_LOOKUP_FAILED,
        REFUND_LOOKUP_FAILED,
    }
)

# Nobody knows whether the request took effect: check_status (or check_refund) tells, later.
_INDETERMINATE: Final = frozenset(
    {
        OUTCOME_UNKNOWN_CODE,
        API_ERROR,
        IDEMPOTENCY_ERROR,
        # 409: another request under the same key is still running; its outcome is this charge's outcome.
        "idempotency_key_in_use",
        STRIPE_ERROR,
    }
)

STRIPE_DECISIONS: Final[Mapping[str, Decision]] = MappingProxyType(
    {
        **dict.fromkeys(sorted(_DECLINES | _REFUSALS | {CARD_DECLINED, INVALID_REQUEST}), Decision.FAIL),
        **dict.fromkeys(sorted({CANCELED, REFUND_CANCELED, REFUND_FAILED}), Decision.FAIL),
        **dict.fromkeys(sorted(_RETRYABLE), Decision.RETRY),
        **dict.fromkeys(sorted(_INDETERMINATE), Decision.RECONCILE_LATER),
    }
)


def stripe_decision_for(code: str) -> Decision:
    """The decision for one of the codes StripeProvider reports; a code it does not know is reconciled."""
    return STRIPE_DECISIONS.get(code, Decision.RECONCILE_LATER)


def classify(exc: stripe.StripeError) -> tuple[ProviderError, Decision]:
    """The ProviderError for a failed request and the decision it calls for (see the module's table)."""
    body = error_body(exc)
    stripe_codes = [code for code in (body.get("decline_code"), body.get("code") or exc.code) if isinstance(code, str)]
    decision, generic = _class_decision(exc)
    code = next((c for c in stripe_codes if STRIPE_DECISIONS.get(c) is decision), generic)
    error = ProviderError(
        code=code,
        message=_message(exc, body, stripe_codes),
        http_status=exc.http_status,
        request_id=exc.request_id,
        retryable=decision is Decision.RETRY,
    )
    assert stripe_decision_for(code) is decision, f"{code} must decide {decision}"
    return error, decision


def request_never_sent(exc: stripe.APIConnectionError) -> bool:
    """True if the request provably never reached the server: no connection was ever made.

    RequestsClient raises APIConnectionError from the `requests` exception. ConnectTimeout is a connection that
    was never established; ConnectionError wrapping urllib3's NewConnectionError is one that was refused (or whose
    host did not resolve). Everything else (ReadTimeout, a connection dropped after sending, TLS trouble, a proxy)
    may have delivered the request.
    """
    cause = exc.__cause__
    if isinstance(cause, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(cause, requests.exceptions.ConnectionError) and not isinstance(
        cause, requests.exceptions.SSLError | requests.exceptions.ProxyError
    ):
        wrapped = cause.args[0] if cause.args else None
        reason = getattr(wrapped, "reason", None) if isinstance(wrapped, urllib3.exceptions.MaxRetryError) else None
        return isinstance(reason, urllib3.exceptions.NewConnectionError)
    return False


def should_retry_header(exc: stripe.StripeError) -> bool | None:
    """Stripe-Should-Retry as Stripe sent it: True, False, or None when absent."""
    value = (exc.headers or {}).get("stripe-should-retry") or (exc.headers or {}).get("Stripe-Should-Retry")
    if value is None:
        return None
    return str(value).strip().lower() == "true"


def error_body(exc: stripe.StripeError) -> Mapping[str, Any]:
    """The `error` object of Stripe's answer, or an empty one."""
    body = exc.json_body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"]  # type: ignore[no-any-return]
    return {}


def is_not_found(exc: stripe.StripeError) -> bool:
    """True if Stripe answered that the object asked for does not exist (HTTP 404)."""
    return isinstance(exc, stripe.InvalidRequestError) and exc.http_status == 404


_STRIPE_SECRET = re.compile(r"\b(?:sk|rk)_(?:test|live)_[0-9A-Za-z]+|\bwhsec_[0-9A-Za-z]+|\b\w+_secret_[0-9A-Za-z]+")


def safe_text(text: str) -> str:
    """text with API keys, webhook secrets, client secrets and card numbers masked: for messages and logs."""
    return mask_card_numbers(_STRIPE_SECRET.sub("***", text), "***")


def _class_decision(exc: stripe.StripeError) -> tuple[Decision, str]:
    match exc:
        case stripe.CardError():
            return Decision.FAIL, CARD_DECLINED
        case stripe.RateLimitError():
            return Decision.RETRY, RATE_LIMIT
        case stripe.AuthenticationError():
            return Decision.RETRY, AUTHENTICATION_ERROR
        case stripe.PermissionError():
            return Decision.RETRY, PERMISSION_ERROR
        case stripe.IdempotencyError():
            return Decision.RECONCILE_LATER, IDEMPOTENCY_ERROR
        case stripe.InvalidRequestError():
            return Decision.FAIL, INVALID_REQUEST
        case stripe.APIConnectionError():
            if request_never_sent(exc):
                return Decision.RETRY, REQUEST_NOT_SENT
            return Decision.RECONCILE_LATER, OUTCOME_UNKNOWN_CODE
        case stripe.APIError():
            if should_retry_header(exc) is True:
                return Decision.RETRY, API_ERROR_RETRY_SAFE
            return Decision.RECONCILE_LATER, API_ERROR
        case _:
            return Decision.RECONCILE_LATER, STRIPE_ERROR


def _message(exc: stripe.StripeError, body: Mapping[str, Any], stripe_codes: list[str]) -> str:
    kind = body.get("type") or type(exc).__name__
    if isinstance(exc, stripe.APIConnectionError) and exc.__cause__ is not None:
        # The SDK's own message is a paragraph of advice; what happened is the HTTP library's exception.
        detail = f"{type(exc.__cause__).__name__}: {exc.__cause__}"
    else:
        detail = exc.user_message or type(exc).__name__
    codes = "/".join(dict.fromkeys(stripe_codes))
    return safe_text(f"stripe {kind}{f' ({codes})' if codes else ''}: {detail}")
