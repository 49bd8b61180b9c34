from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest

from billing.api.request_context import correlation_id_of, request_context_of
from billing.domain.errors import AuthenticationFailed


def _event(headers: dict[str, str] | None = None, authorizer: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"headers": headers or {}, "requestContext": {"requestId": "apigw-req-1", "authorizer": authorizer}}


@pytest.mark.parametrize(
    ("supplied", "expected"),
    [
        ("corr-123", "corr-123"),
        ("a" * 128, "a" * 128),
        ("a" * 129, "apigw-req-1"),
        ("has space", "apigw-req-1"),
        ("line\nbreak", "apigw-req-1"),
        ("", "apigw-req-1"),
    ],
)
def test_correlation_id_uses_well_formed_header_else_request_id(supplied: str, expected: str) -> None:
    assert correlation_id_of(_event({"X-Correlation-Id": supplied})) == expected


def test_correlation_header_is_matched_case_insensitively() -> None:
    assert correlation_id_of(_event({"x-correlation-id": "corr-9"})) == "corr-9"


def test_tenant_comes_from_lambda_authorizer_context() -> None:
    tenant = uuid4()
    context = request_context_of(_event(authorizer={"tenant_id": str(tenant), "subject": "u-1"}))
    assert (context.tenant_id, context.actor) == (tenant, "u-1")


def test_tenant_comes_from_jwt_claims() -> None:
    tenant = uuid4()
    context = request_context_of(_event(authorizer={"claims": {"tenant_id": str(tenant), "sub": "u-2"}}))
    assert (context.tenant_id, context.actor) == (tenant, "u-2")


@pytest.mark.parametrize("authorizer", [None, {}, {"tenant_id": "not-a-uuid"}, {"claims": {"sub": "u"}}])
def test_missing_or_malformed_tenant_is_unauthenticated(authorizer: dict[str, Any] | None) -> None:
    with pytest.raises(AuthenticationFailed):
        request_context_of(_event(authorizer=authorizer))


def test_correlation_id_holding_a_card_number_is_replaced_by_the_request_id() -> None:
    from billing.api.request_context import correlation_id_of

    event = {"headers": {"X-Correlation-Id": "order-4111-1111-1111-1111"}, "requestContext": {"requestId": "req-9"}}
    assert correlation_id_of(event) == "req-9"
    event["headers"] = {"X-Correlation-Id": "order-4111-1111-1111-1112"}  # not Luhn-valid: kept
    assert correlation_id_of(event) == "order-4111-1111-1111-1112"
