"""HTTP plumbing shared by the API functions: pre-routing guards, problem responses, correlation header."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestUnsupportedContentType, RequestValidationError

from billing.api.input_safety import refusal_of
from billing.api.problems import PROBLEM_CONTENT_TYPE, internal_problem, problem_for, proxy_response
from billing.api.request_context import RequestContext, correlation_id_of, request_context_of
from billing.domain.errors import (
    AuthenticationFailed,
    BillingError,
    FieldError,
    MalformedRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
)
from billing.domain.execution import mask_card_numbers
from billing.resource_names import MAX_REQUEST_BODY_BYTES

CORRELATION_HEADER = "X-Correlation-Id"


def body_size(event: dict[str, Any]) -> int:
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        return len(body) * 3 // 4
    return len(body.encode())


def guard_request(event: dict[str, Any]) -> RequestContext | dict[str, Any]:
    """The caller's context, or the proxy response refusing the request before routing: what API Gateway would
    refuse (an oversized body, 413; no authenticated tenant, 401), then hostile input anywhere in it (422; 415 for a
    body that is not JSON, 400 for one that is not even UTF-8)."""
    correlation_id = correlation_id_of(event)
    if body_size(event) > MAX_REQUEST_BODY_BYTES:
        error: BillingError = PayloadTooLarge(f"request body exceeds {MAX_REQUEST_BODY_BYTES} bytes")
        return proxy_response(*problem_for(error, correlation_id), correlation_id)
    try:
        context = request_context_of(event)
    except AuthenticationFailed as refused:
        return proxy_response(*problem_for(refused, correlation_id), correlation_id)
    hostile = refusal_of(event)
    if hostile is not None:
        return proxy_response(*problem_for(hostile, correlation_id), correlation_id)
    return context


def guard_unverified_request(event: dict[str, Any]) -> dict[str, Any] | None:
    """The proxy response refusing hostile headers, query or path parameters of a request whose body must reach
    signature verification untouched (webhooks); None when nothing is refused. The body is never read here."""
    hostile = refusal_of(event, body=False) or _unencodable_body(event)
    if hostile is None:
        return None
    correlation_id = correlation_id_of(event)
    return proxy_response(*problem_for(hostile, correlation_id), correlation_id)


def _unencodable_body(event: dict[str, Any]) -> BillingError | None:
    # A text body holding a lone surrogate has no UTF-8 bytes a sender could have signed (or we could verify).
    body = event.get("body")
    if event.get("isBase64Encoded") or not isinstance(body, str):
        return None
    try:
        body.encode("utf-8")
    except UnicodeEncodeError:
        return MalformedRequest("request body is not UTF-8 text")
    return None


def as_domain_error(error: Exception) -> BillingError | None:
    """Powertools' request validation errors in our vocabulary; None for anything unexpected."""
    if isinstance(error, BillingError):
        return error
    if isinstance(error, RequestUnsupportedContentType):
        # guard_request refuses these first; kept so a route can never turn one into a 500.
        return UnsupportedMediaType("request bodies must be application/json")
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
    # A metadata key is part of the location, and it may itself be a card number.
    field = mask_card_numbers(field, "***")
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


def answer_errors_as_problems(
    app: APIGatewayRestResolver,
    correlation_id: Callable[[], str | None],
    *,
    no_route: BillingError,
    on_unexpected: Callable[[Exception], None],
) -> None:
    """Register the API functions' one error mapping on `app`: a path no route matches is `no_route` (every path of
    a function names its own resource, so one none matches names a resource that cannot exist), domain and request
    errors are problem+json with their stable code, anything else a 500 problem after `on_unexpected` (log it, drop
    the connection it may have left mid-transaction)."""

    @app.not_found  # type: ignore[untyped-decorator,unused-ignore]
    def _no_route(_: NotFoundError) -> Response[str]:
        return problem_response(no_route, correlation_id())

    @app.exception_handler([BillingError, RequestValidationError, RequestUnsupportedContentType])  # type: ignore[untyped-decorator,unused-ignore]
    def _expected(error: Exception) -> Response[str]:
        return problem_response(error, correlation_id())

    @app.exception_handler(Exception)  # type: ignore[untyped-decorator,unused-ignore]
    def _unexpected(error: Exception) -> Response[str]:
        on_unexpected(error)
        return problem_response(error, correlation_id())
