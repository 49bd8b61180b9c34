"""Adyen's 2xx answers as the port's results: PaymentResponse, PaymentRefundResponse and the cancel responses.

Fields are read, never required beyond what the outcome needs: unknown fields (a later API version's) are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Final, assert_never

from billing.providers.adyen.errors import (
    AUTHENTICATION_ONLY,
    CANCELLED,
    ERROR,
    PARTIALLY_AUTHORISED,
    REFUSED,
    UNEXPECTED_RESPONSE,
    UNEXPECTED_RESULT_CODE,
    adyen_decision_for,
    provider_error,
)
from billing.providers.adyen.result_codes import ResultHandling, handling_for
from billing.providers.adyen.three_ds import authentication_for
from billing.rails.results import NextAction, NextActionType, RefundResult, SubmitResult

# The only status Adyen gives an accepted modification (refund, cancel): the outcome comes by webhook.
MODIFICATION_RECEIVED: Final = "received"


def submit_result(response: object, *, merchant_reference: str, return_url: str, http_status: int) -> SubmitResult:
    """The SubmitResult for a /payments answer, with what it tells of 3-D Secure (three_ds.authentication_for).

    A charge waiting for the shopper may have no pspReference yet ("you will get this value in the /payments/details
    response"): it is then named by `merchant_reference` (our execution id, sent as `reference`), which cancel
    recognises and sends to /cancels by paymentReference.
    """
    if not isinstance(response, Mapping) or "resultCode" not in response:
        return _unreadable(UNEXPECTED_RESPONSE, "Adyen's answer is not a PaymentResponse", http_status, None)
    result = _result_for(
        response, merchant_reference=merchant_reference, return_url=return_url, http_status=http_status
    )
    authentication = authentication_for(response)
    return result if authentication is None else replace(result, authentication=authentication)


def _result_for(
    response: Mapping[str, Any], *, merchant_reference: str, return_url: str, http_status: int
) -> SubmitResult:
    result_code = response.get("resultCode")
    psp_reference = _text(response.get("pspReference"))
    handling = handling_for(result_code)
    if handling is None:
        return _unreadable(
            UNEXPECTED_RESULT_CODE,
            f"resultCode {str(result_code)[:40]!r} is not one of v71's",
            http_status,
            psp_reference,
        )
    match handling:
        case ResultHandling.CHARGED:
            if psp_reference is None:
                return _unreadable(UNEXPECTED_RESPONSE, "Authorised without a pspReference", http_status, None)
            return SubmitResult.succeeded(psp_reference, http_status=http_status, request_id=psp_reference)
        case ResultHandling.AWAITING_ADYEN:
            reference = psp_reference or merchant_reference
            return SubmitResult.pending_settlement(reference, http_status=http_status, request_id=psp_reference)
        case ResultHandling.AWAITING_SHOPPER:
            return SubmitResult.requires_action(
                psp_reference or merchant_reference,
                next_action=next_action(response.get("action"), return_url=return_url),
                http_status=http_status,
                request_id=psp_reference,
            )
        case ResultHandling.REFUSED:
            return _failed(
                _with_reason_code(REFUSED, response), response, "refused by Adyen", http_status, psp_reference
            )
        case ResultHandling.ERRORED:
            return _failed(_with_reason_code(ERROR, response), response, "Adyen error", http_status, psp_reference)
        case ResultHandling.CANCELLED:
            return _failed(CANCELLED, response, "cancelled before processing completed", http_status, psp_reference)
        case ResultHandling.AUTHENTICATION_ONLY:
            message = f"{result_code}: authenticated only, nothing was authorised"
            return _failed(AUTHENTICATION_ONLY, response, message, http_status, psp_reference)
        case ResultHandling.PARTIALLY_CHARGED:
            return _unreadable(
                PARTIALLY_AUTHORISED,
                f"authorised {_amount_text(response.get('amount'))} of the charge only (pspReference {psp_reference})",
                http_status,
                psp_reference,
            )
        case _:
            assert_never(handling)


def next_action(action: object, *, return_url: str) -> NextAction:
    """What the client does for a charge waiting for the shopper.

    A GET redirect is a plain URL to send the browser to; everything else (3-D Secure 2 fingerprint and challenge,
    a POST redirect with form data, vouchers, QR codes, SDK actions) is run by Adyen's client components.
    """
    if isinstance(action, Mapping) and action.get("type") == "redirect":
        url = _text(action.get("url"))
        method = _text(action.get("method")) or "GET"
        if url is not None and method.upper() == "GET":
            return NextAction(NextActionType.REDIRECT_TO_URL, url=url, return_url=return_url)
    # Handed to Adyen's client components as it came: they know every action type, including ones added later.
    sdk_data = {str(key): value for key, value in action.items()} if isinstance(action, Mapping) else None
    return NextAction(NextActionType.USE_PROVIDER_SDK, return_url=return_url, sdk_data=sdk_data)


def refund_result(response: object, *, http_status: int) -> RefundResult:
    """The RefundResult for a /payments/{pspReference}/refunds answer: always pending, the REFUND webhook decides."""
    reference = modification_reference(response)
    if reference is None:
        error = provider_error(
            UNEXPECTED_RESPONSE,
            "refund answer without status received and a pspReference",
            http_status=http_status,
            request_id=None,
        )
        return RefundResult.from_error(error, adyen_decision_for(UNEXPECTED_RESPONSE))
    return RefundResult.pending(reference, request_id=reference)


def modification_reference(response: object) -> str | None:
    """The pspReference of an accepted modification (refund, cancel), None when the answer is not one."""
    if not isinstance(response, Mapping) or response.get("status") != MODIFICATION_RECEIVED:
        return None
    return _text(response.get("pspReference"))


def _with_reason_code(prefix: str, response: Mapping[str, Any]) -> str:
    reason_code = _text(response.get("refusalReasonCode"))
    return f"{prefix}_{reason_code}" if reason_code else prefix


def _failed(
    code: str, response: Mapping[str, Any], fallback_message: str, http_status: int, psp_reference: str | None
) -> SubmitResult:
    # Adyen's own wording ("Not enough balance", "CVC Declined"), as its refusal reasons document it.
    message = _text(response.get("refusalReason")) or fallback_message
    error = provider_error(code, message, http_status=http_status, request_id=psp_reference)
    return SubmitResult.from_error(error, adyen_decision_for(code), provider_reference=psp_reference)


def _unreadable(code: str, message: str, http_status: int, psp_reference: str | None) -> SubmitResult:
    error = provider_error(code, message, http_status=http_status, request_id=psp_reference)
    return SubmitResult.from_error(error, adyen_decision_for(code))


def _amount_text(amount: object) -> str:
    if isinstance(amount, Mapping) and isinstance(amount.get("value"), int):
        return f"{amount['value']} {amount.get('currency', '')}".strip()
    return "an unknown amount"


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
