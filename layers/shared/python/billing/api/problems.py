"""The one place where errors become HTTP: status codes and RFC 9457 problem+json bodies with stable codes."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from billing.domain import errors as e

PROBLEM_CONTENT_TYPE = "application/problem+json"
# RFC 9457 `type`: a stable URI per error code (documentation lives there; clients key on `code`).
PROBLEM_TYPE_BASE = "https://errors.billing.example/"
INTERNAL_ERROR_CODE = "internal_error"

# First match along the exception's MRO wins, so subclasses may refine their parent's status.
_STATUS_BY_ERROR: dict[type[e.BillingError], int] = {
    e.MalformedRequest: 400,
    e.IdempotencyKeyInvalid: 400,
    e.WebhookPayloadInvalid: 400,
    e.AuthenticationFailed: 401,
    e.SignatureInvalid: 401,
    e.ExecutionNotFound: 404,
    e.UnknownWebhookProvider: 404,
    e.TransitionConflict: 409,
    e.InvalidTransition: 409,
    e.ImmutableExecution: 409,
    e.WebhookRetryLater: 409,
    e.PayloadTooLarge: 413,
    e.UnsupportedMediaType: 415,
    e.ValidationFailed: 422,
    e.IdempotencyKeyReused: 422,
    # Payment instruments: another tenant's instrument is as unknown as a missing one.
    e.PaymentInstrumentNotFound: 404,
    e.PaymentInstrumentInactive: 422,
    e.PaymentInstrumentExpired: 422,
    e.PaymentInstrumentRailMismatch: 422,
    e.CardDataRefused: 422,
    e.InstrumentLifecycleViolated: 409,
    e.DetokenizationDenied: 403,
    # Refunds: more than is left to refund is a request that can never succeed; a pending execution is not yet.
    e.RefundExceedsCaptured: 422,
    e.ExecutionNotRefundable: 409,
    e.ReversalChangeRefused: 409,
    e.RiskHistoryRefused: 409,
    e.RiskReviewConflict: 409,
    e.SubmissionRefusedByRisk: 409,
    e.AuthenticationNotFound: 404,
    # A provider the request needed could not be asked (the vault tokenizing a card): nothing was saved, try again.
    e.ProviderUnavailable: 503,
    # The audit API: a token without the auditor scope, and a checkpoint or tree index that does not exist.
    e.ScopeRequired: 403,
    e.AuditRecordNotFound: 404,
    # Settlement reports (the finance API): a resolution is given once.
    e.SettlementReportNotFound: 404,
    e.SettlementDiscrepancyNotFound: 404,
    e.SettlementDiscrepancyResolvedAlready: 409,
    e.SettlementRecordChangeRefused: 409,
}


def status_for(error: e.BillingError) -> int:
    """HTTP status of a domain error; anything unmapped is our fault (500)."""
    for cls in type(error).__mro__:
        if cls in _STATUS_BY_ERROR:
            return _STATUS_BY_ERROR[cls]
    return 500


def problem_body(status: int, code: str, detail: str, correlation_id: str | None, **extra: Any) -> dict[str, Any]:
    return {
        "type": f"{PROBLEM_TYPE_BASE}{code}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "code": code,
        "detail": detail,
        "correlation_id": correlation_id,
        **extra,
    }


def problem_for(error: e.BillingError, correlation_id: str | None) -> tuple[int, dict[str, Any]]:
    """(status, body) for a domain error. Validation errors list the offending fields, never their values."""
    status = status_for(error)
    if status == 500:
        return internal_problem(correlation_id)
    extra: dict[str, Any] = {}
    if isinstance(error, e.ValidationFailed):
        extra["errors"] = [{"field": f.field, "code": f.code, "message": f.message} for f in error.errors]
    if isinstance(error, e.TransitionConflict):
        extra["current_status"] = error.actual
    if isinstance(error, e.IdempotencyKeyReused):
        extra["execution_id"] = error.context.get("execution_id")
    return status, problem_body(status, error.code, error.detail, correlation_id, **extra)


def internal_problem(correlation_id: str | None) -> tuple[int, dict[str, Any]]:
    """A 500 that reveals nothing about the internals; the correlation id finds the logs."""
    return 500, problem_body(
        500,
        INTERNAL_ERROR_CODE,
        "an internal error occurred; quote the correlation id when reporting it",
        correlation_id,
    )


def proxy_response(status: int, body: dict[str, Any], correlation_id: str | None) -> dict[str, Any]:
    """An API Gateway proxy response carrying a problem, for answers given before routing (401, 413)."""
    headers = {"Content-Type": PROBLEM_CONTENT_TYPE}
    if correlation_id:
        headers["X-Correlation-Id"] = correlation_id
    return {"statusCode": status, "headers": headers, "body": json.dumps(body), "isBase64Encoded": False}
