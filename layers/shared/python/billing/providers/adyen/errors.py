"""Adyen's failures as ProviderErrors, and the decision table every one of them goes through.

Failure codes (what ProviderError.code holds, and the execution's failure code):

    http_<status>[_<errorCode>]            Adyen answered an HTTP error; errorCode is its ServiceError.errorCode,
                                           kept as it is ("http_422_14_030": 422, "Return URL is missing.")
    transient_http_<status>[_<errorCode>]  the same, sent with `Transient-Error: true`
    refused[_<refusalReasonCode>]          resultCode Refused ("refused_12": Not enough balance)
    error[_<refusalReasonCode>]            resultCode Error
    cancelled, authentication_only,        other result codes (billing.providers.adyen.result_codes)
    partially_authorised, unexpected_result_code
    connection_failed                      the request never reached Adyen
    outcome_unknown                        sent, no answer (read timeout, connection dropped)
    unexpected_response                    a 2xx answer the adapter cannot read

An errorCode only means something beside its HTTP status (000 is a 401, 14_030 a 422), so the status is part of the
code and decision_for can tell from the code alone what submit decided.
"""

from __future__ import annotations

import re
import urllib.error
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from billing.rails.results import OUTCOME_UNKNOWN_CODE, Decision, ProviderError

CONNECTION_FAILED: Final = "connection_failed"
CREDENTIALS_UNAVAILABLE: Final = "credentials_unavailable"
UNEXPECTED_RESPONSE: Final = "unexpected_response"
UNEXPECTED_RESULT_CODE: Final = "unexpected_result_code"
PARTIALLY_AUTHORISED: Final = "partially_authorised"
AUTHENTICATION_ONLY: Final = "authentication_only"
CANCELLED: Final = "cancelled"
REFUSED: Final = "refused"
ERROR: Final = "error"
# Charges the adapter cannot express as an Adyen payment (billing.providers.adyen.request_bodies.ChargeNotSendable).
PAYMENT_METHOD_UNSUPPORTED: Final = "payment_method_unsupported"
PAYMENT_METHOD_MISSING: Final = "payment_method_missing"
SHOPPER_REFERENCE_MISSING: Final = "shopper_reference_missing"

# Adyen's errorCode for "Request already processed or in progress": the first request under this key is still
# running, so its outcome is unknown rather than refused.
REQUEST_IN_PROGRESS_ERROR_CODE: Final = "704"
# Adyen's marker for an error after which "a subsequent request using the same idempotency key will be processed as
# if it was the first request" (the spec's RequestedTestErrorResponseCode description).
TRANSIENT_ERROR_HEADER: Final = "Transient-Error"
# Longest part of a non-JSON error body kept in a message (a proxy's HTML page says nothing more useful).
_MAX_RAW_MESSAGE: Final = 200

_FIXED_DECISIONS: Final[Mapping[str, Decision]] = MappingProxyType(
    {
        # Nothing reached Adyen (or the adapter could not even build the request): resend with the same key.
        CONNECTION_FAILED: Decision.RETRY,
        CREDENTIALS_UNAVAILABLE: Decision.RETRY,
        # Sent, and whether Adyen acted on it is unknown: its webhooks and settlement report tell.
        OUTCOME_UNKNOWN_CODE: Decision.RECONCILE_LATER,
        UNEXPECTED_RESPONSE: Decision.RECONCILE_LATER,
        UNEXPECTED_RESULT_CODE: Decision.RECONCILE_LATER,
        # Money was authorised, but not what we asked for: a person or the settlement report decides.
        PARTIALLY_AUTHORISED: Decision.RECONCILE_LATER,
        # Final answers: under the same key Adyen replays them, so a resubmission can only repeat them.
        CANCELLED: Decision.FAIL,
        AUTHENTICATION_ONLY: Decision.FAIL,
        PAYMENT_METHOD_UNSUPPORTED: Decision.FAIL,
        PAYMENT_METHOD_MISSING: Decision.FAIL,
        SHOPPER_REFERENCE_MISSING: Decision.FAIL,
    }
)
_HTTP_CODE: Final = re.compile(r"^(?P<transient>transient_)?http_(?P<status>[1-5][0-9]{2})(?:_(?P<error_code>.+))?$")
_RESULT_FAILURE_CODE: Final = re.compile(rf"^(?:{REFUSED}|{ERROR})(?:_.+)?$")


def adyen_decision_for(code: str) -> Decision:
    """The adapter's decision for one of its failure codes; a code it does not know is reconciled, not guessed at."""
    if code in _FIXED_DECISIONS:
        return _FIXED_DECISIONS[code]
    if _RESULT_FAILURE_CODE.fullmatch(code):
        # Refused and Error are final states, says the spec's resultCode description.
        return Decision.FAIL
    http = _HTTP_CODE.fullmatch(code)
    if http is not None:
        return http_decision(int(http["status"]), http["error_code"], transient=http["transient"] is not None)
    return Decision.RECONCILE_LATER


def http_decision(status: int, error_code: str | None, *, transient: bool) -> Decision:
    """What an HTTP error from Adyen calls for."""
    if transient:
        return Decision.RETRY
    if status in (401, 403):
        # The API key or its merchant account is wrong: refused before any processing, so nothing was charged;
        # resending once the configuration is fixed is safe.
        return Decision.RETRY
    if status == 404:
        # No such endpoint (a wrong base URL): nothing was processed.
        return Decision.RETRY
    if status == 429:
        return Decision.RETRY
    if status == 422 and error_code == REQUEST_IN_PROGRESS_ERROR_CODE:
        return Decision.RECONCILE_LATER
    if 400 <= status < 500:
        # Adyen validated the request and refused it (400 unreadable, 422 invalid): the same request always will.
        return Decision.FAIL
    # 5xx without the transient marker: Adyen stores the error as the key's final answer and may have reached the
    # issuer, so a resubmission replays the error and money may have moved all the same.
    return Decision.RECONCILE_LATER


def http_error_code(status: int, error_code: str | None, *, transient: bool) -> str:
    """The failure code of an HTTP error (see the module docstring)."""
    code = f"http_{status}" + (f"_{error_code}" if error_code else "")
    return f"transient_{code}" if transient else code


def provider_error(code: str, message: str, *, http_status: int | None, request_id: str | None) -> ProviderError:
    """A ProviderError whose retryable flag is the decision table's."""
    return ProviderError(code, message, http_status, request_id, retryable=adyen_decision_for(code) is Decision.RETRY)


def http_error(api_error: Any) -> ProviderError:
    """An AdyenAPIResponseError (the SDK's error for a non-2xx answer) as a ProviderError."""
    status = int(api_error.status_code)
    body = api_error.message if isinstance(api_error.message, Mapping) else {}
    error_code = _text(body.get("errorCode")) or _text(api_error.error_code)
    headers = api_error.headers if hasattr(api_error.headers, "get") else {}
    transient = str(headers.get(TRANSIENT_ERROR_HEADER, "")).strip().lower() == "true"
    message = _text(body.get("message")) or _raw_message(api_error.raw_response) or f"Adyen answered HTTP {status}"
    request_id = _text(body.get("pspReference")) or _text(api_error.psp)
    return provider_error(
        http_error_code(status, error_code, transient=transient), message, http_status=status, request_id=request_id
    )


def transport_error(exc: BaseException) -> ProviderError:
    """A failure to exchange the request with Adyen: never sent (retry) or sent without an answer (reconcile).

    The SDK sends with urllib: an OSError while connecting or writing the request comes wrapped in URLError, one
    while waiting for or reading the answer (a read timeout, a dropped connection) does not.
    """
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        reason = type(exc.reason).__name__ if isinstance(exc.reason, BaseException) else "unreachable"
        return provider_error(
            CONNECTION_FAILED, f"Adyen not reached ({reason}): nothing was sent", http_status=None, request_id=None
        )
    # Only the type: messages of arbitrary exceptions are not ours to put in an execution's record.
    return provider_error(
        OUTCOME_UNKNOWN_CODE,
        f"no answer from Adyen ({type(exc).__name__}): the request may have been processed",
        http_status=None,
        request_id=None,
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _raw_message(raw: object) -> str | None:
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    text = _text(raw)
    return text.strip()[:_MAX_RAW_MESSAGE] or None if text else None
