"""Stripe's errors (the SDK's own exception classes, as it raises them) as ProviderErrors and decisions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import requests
import stripe
import urllib3
from hypothesis import given
from hypothesis import strategies as st
from requests.structures import CaseInsensitiveDict

from billing.providers.stripe.errors import (
    STRIPE_DECISIONS,
    classify,
    request_never_sent,
    safe_text,
    should_retry_header,
    stripe_decision_for,
)
from billing.rails.results import OUTCOME_UNKNOWN_CODE, Decision

E = TypeVar("E", bound=stripe.StripeError)


def sdk_error(error_class: type[E], *args: Any, **kwargs: Any) -> E:
    """An SDK exception built as the SDK's requestor builds it (its constructors are untyped)."""
    factory: Any = error_class
    built: E = factory(*args, **kwargs)
    return built


def headers(request_id: str = "req_42", should_retry: str | None = None) -> CaseInsensitiveDict[str]:
    # What RequestsClient hands the SDK: requests' case-insensitive headers.
    found: CaseInsensitiveDict[str] = CaseInsensitiveDict({"Request-Id": request_id})
    if should_retry is not None:
        found["Stripe-Should-Retry"] = should_retry
    return found


def body(error_type: str, **fields: Any) -> dict[str, Any]:
    return {"error": {"type": error_type, "message": "Stripe says no", **fields}}


def card_error(code: str | None, decline_code: str | None = None) -> stripe.StripeError:
    json_body = body("card_error", code=code, decline_code=decline_code)
    return sdk_error(stripe.CardError, "no", None, code, http_status=402, json_body=json_body, headers=headers())


def invalid_request(code: str | None, status: int = 400) -> stripe.StripeError:
    json_body = body("invalid_request_error", code=code)
    return sdk_error(
        stripe.InvalidRequestError, "no", "amount", code, http_status=status, json_body=json_body, headers=headers()
    )


def api_error(status: int = 500, should_retry: str | None = None, code: str | None = None) -> stripe.StripeError:
    json_body = body("api_error", code=code)
    return sdk_error(stripe.APIError, "no", None, status, json_body, headers(should_retry=should_retry))


def answered(
    error_class: type[stripe.StripeError], status: int, code: str | None = None, **kw: str
) -> stripe.StripeError:
    """An error of a class whose constructor is (message, body, status, json, headers), like the requestor's."""
    return sdk_error(error_class, "no", None, status, body("invalid_request_error", code=code), headers(**kw))


def connection_error(cause: Exception) -> stripe.StripeError:
    error: stripe.StripeError = sdk_error(stripe.APIConnectionError, "Unexpected error", should_retry=True)
    error.__cause__ = cause
    return error


def refused() -> requests.exceptions.ConnectionError:
    connection = urllib3.connection.HTTPConnection("127.0.0.1", 1)
    reason = urllib3.exceptions.NewConnectionError(connection, "Connection refused")
    return requests.exceptions.ConnectionError(
        urllib3.exceptions.MaxRetryError(urllib3.HTTPConnectionPool("127.0.0.1", 1), "/v1/payment_intents", reason)
    )


def dropped() -> requests.exceptions.ConnectionError:
    reason = urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset"))
    return requests.exceptions.ConnectionError(reason)


FAIL, RETRY, RECONCILE = Decision.FAIL, Decision.RETRY, Decision.RECONCILE_LATER
ERRORS: list[tuple[str, Callable[[], stripe.StripeError], Decision, str]] = [
    ("decline code wins", lambda: card_error("card_declined", "insufficient_funds"), FAIL, "insufficient_funds"),
    ("card code", lambda: card_error("expired_card"), FAIL, "expired_card"),
    ("unknown decline", lambda: card_error("card_declined", "invented"), FAIL, "card_declined"),
    ("no card code", lambda: card_error(None), FAIL, "card_declined"),
    ("known refusal", lambda: invalid_request("amount_too_small"), FAIL, "amount_too_small"),
    ("unknown refusal", lambda: invalid_request("made_up"), FAIL, "invalid_request_error"),
    ("no refusal code", lambda: invalid_request(None), FAIL, "invalid_request_error"),
    ("404", lambda: invalid_request("resource_missing", 404), FAIL, "resource_missing"),
    ("rate limit", lambda: answered(stripe.RateLimitError, 429, "rate_limit"), RETRY, "rate_limit"),
    ("rate limit, should-retry false", lambda: answered(stripe.RateLimitError, 429, should_retry="false"), RETRY,
     "rate_limit"),
    ("401", lambda: answered(stripe.AuthenticationError, 401), RETRY, "authentication_error"),
    ("401 expired key", lambda: answered(stripe.AuthenticationError, 401, "api_key_expired"), RETRY,
     "api_key_expired"),
    ("403", lambda: answered(stripe.PermissionError, 403), RETRY, "permission_error"),
    ("idempotency", lambda: answered(stripe.IdempotencyError, 400), RECONCILE, "idempotency_error"),
    ("500 no header", lambda: api_error(), RECONCILE, "api_error"),
    ("500 should-retry false", lambda: api_error(should_retry="false"), RECONCILE, "api_error"),
    ("500 should-retry true", lambda: api_error(should_retry="true"), RETRY, "api_error_retry_safe"),
    ("409 key in use", lambda: api_error(409, code="idempotency_key_in_use"), RECONCILE, "idempotency_key_in_use"),
    ("500 carrying a retry code", lambda: api_error(code="lock_timeout"), RECONCILE, "api_error"),
    ("refused", lambda: connection_error(refused()), RETRY, "request_not_sent"),
    ("connect timeout", lambda: connection_error(requests.exceptions.ConnectTimeout()), RETRY, "request_not_sent"),
    ("read timeout", lambda: connection_error(requests.exceptions.ReadTimeout()), RECONCILE, OUTCOME_UNKNOWN_CODE),
    ("dropped", lambda: connection_error(dropped()), RECONCILE, OUTCOME_UNKNOWN_CODE),
    ("other", lambda: sdk_error(stripe.StripeError, "odd"), RECONCILE, "stripe_error"),
]  # fmt: skip


@pytest.mark.parametrize(("make", "decision", "code"), [pytest.param(*e[1:], id=e[0]) for e in ERRORS])
def test_classify_keeps_stripes_code_when_the_table_agrees_and_decision_for_matches(
    make: Callable[[], stripe.StripeError], decision: Decision, code: str
) -> None:
    error, decided = classify(make())

    assert (decided, error.code) == (decision, code)
    assert stripe_decision_for(error.code) is decided
    assert error.retryable is (decided is Decision.RETRY)


@given(
    code=st.one_of(st.none(), st.sampled_from(sorted(STRIPE_DECISIONS)), st.text(max_size=30)),
    make=st.sampled_from(
        [
            lambda c: card_error(c),
            lambda c: card_error("card_declined", c),
            lambda c: invalid_request(c),
            lambda c: api_error(code=c),
            lambda c: api_error(code=c, should_retry="true"),
            lambda c: answered(stripe.RateLimitError, 429, c),
            lambda c: answered(stripe.IdempotencyError, 400, c),
        ]
    ),
)
def test_decision_for_always_agrees_with_classify(code: str | None, make: Callable[[str | None], Any]) -> None:
    error, decided = classify(make(code))

    assert stripe_decision_for(error.code) is decided


def test_request_id_and_http_status_are_stripes() -> None:
    error, _ = classify(card_error("card_declined", "insufficient_funds"))

    assert (error.request_id, error.http_status) == ("req_42", 402)


def test_codes_unknown_to_the_table_are_reconciled() -> None:
    assert stripe_decision_for("never_heard_of_it") is Decision.RECONCILE_LATER
    assert stripe_decision_for(OUTCOME_UNKNOWN_CODE) is Decision.RECONCILE_LATER


@pytest.mark.parametrize(
    ("cause", "never_sent"),
    [
        pytest.param(requests.exceptions.ConnectTimeout(), True, id="connect-timeout"),
        pytest.param(refused(), True, id="refused"),
        pytest.param(requests.exceptions.ReadTimeout(), False, id="read-timeout"),
        pytest.param(dropped(), False, id="dropped-after-sending"),
        pytest.param(requests.exceptions.SSLError(), False, id="tls"),
        pytest.param(requests.exceptions.ChunkedEncodingError(), False, id="truncated-answer"),
        pytest.param(ValueError("odd"), False, id="not-http"),
    ],
)
def test_request_never_sent_only_without_a_connection(cause: Exception, never_sent: bool) -> None:
    error = connection_error(cause)
    assert isinstance(error, stripe.APIConnectionError)
    assert request_never_sent(error) is never_sent


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("false", False), (None, None)])
def test_should_retry_header(value: str | None, expected: bool | None) -> None:
    assert should_retry_header(api_error(should_retry=value)) is expected


def test_messages_mask_keys_client_secrets_and_card_numbers() -> None:
    leaky = sdk_error(
        stripe.InvalidRequestError,
        "key sk_live_51Habc123 secret pi_3Nx_secret_Qz9 card 4242 4242 4242 4242 hook whsec_abcdef",
        None,
        "parameter_unknown",
        http_status=400,
        json_body=body("invalid_request_error", code="parameter_unknown"),
        headers=headers(),
    )

    error, _ = classify(leaky)

    for secret in ("sk_live_51Habc123", "pi_3Nx_secret_Qz9", "4242 4242 4242 4242", "whsec_abcdef"):
        assert secret not in error.message
    assert "parameter_unknown" in error.message


def test_safe_text_leaves_ordinary_ids_alone() -> None:
    assert safe_text("PaymentIntent pi_123 on charge ch_456") == "PaymentIntent pi_123 on charge ch_456"
