"""Adyen's HTTP and transport failures get the decision the issue fixes, and decision_for agrees with every code."""

from __future__ import annotations

import http.client
import urllib.error

import pytest

from billing.providers.adyen.errors import (
    adyen_decision_for,
    http_decision,
    http_error_code,
    transport_error,
)
from billing.rails.results import OUTCOME_UNKNOWN_CODE, Decision

RETRY, FAIL, RECONCILE = Decision.RETRY, Decision.FAIL, Decision.RECONCILE_LATER


@pytest.mark.parametrize(
    ("status", "error_code", "transient", "expected"),
    [
        (401, "000", False, RETRY),  # wrong API key: refused before processing
        (403, "901", False, RETRY),  # wrong merchant account
        (404, None, False, RETRY),  # wrong URL
        (429, None, False, RETRY),
        (400, "702", False, FAIL),  # unreadable request
        (422, "14_030", False, FAIL),  # Return URL is missing.
        (409, None, False, FAIL),
        (422, "704", False, RECONCILE),  # the first request under this key is still in progress
        (500, "905", False, RECONCILE),
        (502, None, False, RECONCILE),
        (503, None, False, RECONCILE),
        (500, "905", True, RETRY),  # Transient-Error: true, nothing was done
        (503, None, True, RETRY),
    ],
)
def test_http_error_decisions(status: int, error_code: str | None, transient: bool, expected: Decision) -> None:
    assert http_decision(status, error_code, transient=transient) is expected
    # And the code the error is recorded under is classified the same way by decision_for alone
    assert adyen_decision_for(http_error_code(status, error_code, transient=transient)) is expected


def test_http_error_code_keeps_status_and_adyens_error_code() -> None:
    assert http_error_code(422, "14_030", transient=False) == "http_422_14_030"
    assert http_error_code(429, None, transient=False) == "http_429"
    assert http_error_code(500, "905", transient=True) == "transient_http_500_905"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("connection_failed", RETRY),
        ("credentials_unavailable", RETRY),
        (OUTCOME_UNKNOWN_CODE, RECONCILE),
        ("unexpected_response", RECONCILE),
        ("unexpected_result_code", RECONCILE),
        ("partially_authorised", RECONCILE),
        ("refused", FAIL),
        ("refused_12", FAIL),
        ("error_4", FAIL),
        ("cancelled", FAIL),
        ("authentication_only", FAIL),
        ("payment_method_unsupported", FAIL),
        ("payment_method_missing", FAIL),
        ("shopper_reference_missing", FAIL),
        # Codes the adapter never produces are reconciled, not guessed at.
        ("card_declined", RECONCILE),
        ("http_999", RECONCILE),
        ("http_42", RECONCILE),
        ("refusedx", RECONCILE),
        ("", RECONCILE),
    ],
)
def test_decision_table(code: str, expected: Decision) -> None:
    assert adyen_decision_for(code) is expected


def test_connection_refused_before_sending_is_retried() -> None:
    error = transport_error(urllib.error.URLError(ConnectionRefusedError(111, "Connection refused")))
    assert error.code == "connection_failed"
    assert error.retryable is True
    assert "ConnectionRefusedError" in error.message


@pytest.mark.parametrize(
    "exc",
    [
        TimeoutError("timed out"),
        http.client.RemoteDisconnected("Remote end closed connection without response"),
        ConnectionResetError(104, "Connection reset by peer"),
        http.client.IncompleteRead(b""),
        RuntimeError("anything else"),
    ],
)
def test_failure_after_sending_is_an_unknown_outcome(exc: BaseException) -> None:
    error = transport_error(exc)
    assert error.code == OUTCOME_UNKNOWN_CODE
    assert error.retryable is False
    assert adyen_decision_for(error.code) is RECONCILE
    # Only the type is kept: an arbitrary exception's message is not ours to record.
    assert str(exc) not in error.message or not str(exc)
