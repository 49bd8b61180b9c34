"""HTTP plumbing shared by the API functions: pre-routing guards, problem responses, correlation header."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError

from billing.api.problems import PROBLEM_CONTENT_TYPE, internal_problem, problem_for, proxy_response
from billing.api.request_context import RequestContext, correlation_id_of, request_context_of
from billing.domain.errors import (
    AuthenticationFailed,
    BillingError,
    FieldError,
    MalformedRequest,
    PayloadTooLarge,
    ValidationFailed,
)
from billing.resource_names import MAX_REQUEST_BODY_BYTES

CORRELATION_HEADER = "X-Correlation-Id"


def body_size(event: dict[str, Any]) -> int:
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        return len(body) * 3 // 4
    return len(body.encode())


def guard_request(event: dict[str, Any]) -> RequestContext | dict[str, Any]:
    """The caller's context, or the proxy response refusing what API Gateway would refuse before routing:
    an oversized body (413) or no authenticated tenant (401)."""
    correlation_id = correlation_id_of(event)
    if body_size(event) > MAX_REQUEST_BODY_BYTES:
        error: BillingError = PayloadTooLarge(f"request body exceeds {MAX_REQUEST_BODY_BYTES} bytes")
        return proxy_response(*problem_for(error, correlation_id), correlation_id)
    try:
        return request_context_of(event)
    except AuthenticationFailed as refused:
        return proxy_response(*problem_for(refused, correlation_id), correlation_id)


def as_domain_error(error: Exception) -> BillingError | None:
    """Powertools' request validation errors in our vocabulary; None for anything unexpected."""
    if isinstance(error, BillingError):
        return error
    if isinstance(error, RequestValidationError):
        details = list(error.errors())
        if any(d.get("type") == "json_invalid" for d in details):
            return MalformedRequest("request body is not valid JSON")
        return ValidationFailed([_field_error(d) for d in details])
    return None


def _field_error(detail: dict[str, Any]) -> FieldError:
    location = [str(part) for part in detail.get("loc", ())]
    # ("body", "amount") -> "amount"; ("header", "idempotency-key") -> "header.idempotency-key"
    field = ".".join(location[1:]) if location[:1] == ["body"] else ".".join(location)
    return FieldError(field or "body", str(detail.get("type", "invalid")), str(detail.get("msg", "invalid value")))


def problem_response(error: Exception, correlation_id: str | None) -> Response[str]:
    domain = as_domain_error(error)
    status, body = problem_for(domain, correlation_id) if domain else internal_problem(correlation_id)
    return Response(status, PROBLEM_CONTENT_TYPE, json.dumps(body))


def with_correlation_header(response: dict[str, Any], correlation_id: str) -> dict[str, Any]:
    if "multiValueHeaders" in response:
        response["multiValueHeaders"][CORRELATION_HEADER] = [correlation_id]
    else:
        response.setdefault("headers", {})[CORRELATION_HEADER] = correlation_id
    return response
