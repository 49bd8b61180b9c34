"""Hostile input is refused before routing, on every route, with a problem naming where it was found.

guard_request runs before the execute function routes anything, so a refusal here means no query ever ran; the
integration tests (tests/integration/test_execute_api.py) prove the same through the handler against the database.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from uuid import UUID, uuid4

import pytest
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestUnsupportedContentType
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from billing.api.http import as_domain_error, guard_request, guard_unverified_request
from billing.api.input_safety import (
    MAX_JSON_DEPTH,
    MAX_SAFE_INTEGER,
    json_depth,
    require_storable_events,
    unstorable_paths,
)
from billing.api.parameters import Rfc3339DateTime
from billing.api.request_context import RequestContext
from billing.domain.errors import UnsupportedMediaType, ValidationFailed
from billing.resource_names import MAX_REQUEST_BODY_BYTES
from billing.webhooks.events import WebhookEvent, WebhookOutcome
from tests.lambda_harness import EXECUTIONS_PATH, api_event

TENANT = UUID("7a1c2f7e-1111-4222-8333-944444444444")
EXECUTION_ID = str(uuid4())
# Every route of the execute function, with the path parameters API Gateway would pass.
ROUTES: dict[str, tuple[str, str, dict[str, str] | None]] = {
    "create": ("POST", EXECUTIONS_PATH, None),
    "list": ("GET", EXECUTIONS_PATH, None),
    "get": ("GET", f"{EXECUTIONS_PATH}/{EXECUTION_ID}", {"execution_id": EXECUTION_ID}),
    "cancel": ("POST", f"{EXECUTIONS_PATH}/{EXECUTION_ID}/cancel", {"execution_id": EXECUTION_ID}),
}


def event(
    route: str,
    *,
    body: str | None = None,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    path_parameters: dict[str, str] | None = None,
) -> dict[str, Any]:
    method, path, parameters = ROUTES[route]
    built = api_event(method, path, tenant_id=TENANT, body=body, headers=headers, query=query)
    built["pathParameters"] = path_parameters or parameters
    return built


def refused(result: RequestContext | dict[str, Any] | None, status: int, code: str) -> dict[str, Any]:
    """The problem of a refusal, after checking it is one with this status and code."""
    assert isinstance(result, dict), f"not refused: {result}"
    problem: dict[str, Any] = json.loads(result["body"])
    assert (result["statusCode"], problem["status"], problem["code"]) == (status, status, code), problem
    assert result["headers"]["Content-Type"] == "application/problem+json"
    return problem


def fields(problem: dict[str, Any]) -> list[tuple[str, str]]:
    return [(error["field"], error["code"]) for error in problem["errors"]]


# (where, event parts, the field the problem names)
HOSTILE: dict[str, tuple[dict[str, Any], str]] = {
    "nul_in_idempotency_key": ({"headers": {"Idempotency-Key": "key\x00"}}, "header.idempotency-key"),
    "nul_in_correlation_id": ({"headers": {"X-Correlation-Id": "corr\x00"}}, "header.x-correlation-id"),
    "surrogate_in_header": ({"headers": {"User-Agent": "agent \ud800"}}, "header.user-agent"),
    "nul_in_header_name": ({"headers": {"X-Evil\x00": "v"}}, "header.x-evil?"),
    "nul_in_query_value": ({"query": {"entity_contract_id": "c\x00"}}, "query.entity_contract_id"),
    "surrogate_in_query_value": ({"query": {"cursor": "\udfff"}}, "query.cursor"),
    "nul_in_query_name": ({"query": {"k\x00": "v"}}, "query.k?"),
    "nul_in_path_parameter": ({"path_parameters": {"execution_id": "\x00"}}, "path.execution_id"),
    "escaped_nul_in_body_string": ({"body": '{"metadata": {"note": "a\\u0000b"}}'}, "metadata.note"),
    "escaped_surrogate_in_body_string": ({"body": '{"currency": "\\ud800"}'}, "currency"),
    "escaped_nul_in_body_key": ({"body": '{"metadata": {"k\\u0000": "v"}}'}, "metadata.k?"),
    "surrogate_in_nested_list": ({"body": '{"a": [1, {"b": ["x", "\\udc00"]}]}'}, "a.1.b.1"),
    "raw_nul_in_body": ({"body": '{"entity_contract_id": "c\x00"}'}, "body"),
}


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("case", list(HOSTILE))
def test_unstorable_character_anywhere_is_422_naming_where(route: str, case: str) -> None:
    parts, field = HOSTILE[case]
    result = guard_request(event(route, **parts))
    problem = refused(result, 422, "validation_failed")
    assert fields(problem) == [(field, "unstorable_character")]
    assert isinstance(result, dict)
    # The offending text is never echoed back.
    assert "\\u0000" not in result["body"]
    assert "\\ud" not in result["body"]


@pytest.mark.parametrize("route", list(ROUTES))
def test_clean_request_passes_the_guard_with_its_context(route: str) -> None:
    body = json.dumps({"metadata": {"note": "ünïcode, emoji 💳, tabs\tand newlines\n"}}) if route == "create" else None
    result = guard_request(event(route, body=body, headers={"Idempotency-Key": "k-1"}, query={"limit": "5"}))
    assert isinstance(result, RequestContext)
    assert result.tenant_id == TENANT


def nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


def test_json_nested_to_the_limit_passes_and_one_deeper_is_422() -> None:
    assert isinstance(guard_request(event("create", body=nested(MAX_JSON_DEPTH))), RequestContext)
    problem = refused(guard_request(event("create", body=nested(MAX_JSON_DEPTH + 1))), 422, "validation_failed")
    assert fields(problem) == [("body", "too_deep")]


@pytest.mark.parametrize("opening", ["[", '{"a":'])
def test_nesting_far_beyond_the_parsers_recursion_limit_is_refused_without_recursing(opening: str) -> None:
    # A body-limit's worth of brackets: json.loads would raise RecursionError (a 500); the guard counts them in one
    # loop.
    body = opening * (MAX_REQUEST_BODY_BYTES // len(opening))
    problem = refused(guard_request(event("create", body=body)), 422, "validation_failed")
    assert fields(problem) == [("body", "too_deep")]


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    assert json_depth(json.dumps({"note": "[[[[{{{{" * 20, "escaped": '\\"[[[['})) == 1


@pytest.mark.parametrize(
    "number", [str(MAX_SAFE_INTEGER + 1), str(-MAX_SAFE_INTEGER - 1), "9" * 5000, "1e400", "-1e400", "NaN",
               "Infinity", "-Infinity"],
)  # fmt: skip
def test_number_no_client_can_hold_is_422(number: str) -> None:
    problem = refused(guard_request(event("create", body=f'{{"amount": {number}}}')), 422, "validation_failed")
    assert fields(problem) == [("body", "number_out_of_range")]


@pytest.mark.parametrize("number", [str(MAX_SAFE_INTEGER), str(-MAX_SAFE_INTEGER), "1999", "19.99", "1e3"])
def test_numbers_within_range_pass_the_guard(number: str) -> None:
    # Whether a float fits where an integer is expected is the request model's business (it refuses 19.99).
    assert isinstance(guard_request(event("create", body=f'{{"amount": {number}}}')), RequestContext)


def test_body_that_is_not_json_is_left_to_the_route() -> None:
    assert isinstance(guard_request(event("create", body="{not json")), RequestContext)


def test_base64_body_that_is_not_utf8_is_400() -> None:
    hostile = event("create")
    hostile["body"], hostile["isBase64Encoded"] = base64.b64encode(b'{"a": "\xff"}').decode(), True
    refused(guard_request(hostile), 400, "malformed_request")


@pytest.mark.parametrize(
    ("content_type", "allowed"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("text/plain", False),
        ("application/x-www-form-urlencoded", False),
        ("multipart/form-data; boundary=x", False),
        ("application/xml", False),
    ],
)
def test_body_declared_as_anything_but_json_is_415(content_type: str, allowed: bool) -> None:
    result = guard_request(event("create", body="{}", headers={"Content-Type": content_type}))
    if allowed:
        assert isinstance(result, RequestContext)
    else:
        refused(result, 415, "unsupported_media_type")


def test_content_type_without_a_body_is_not_refused() -> None:
    assert isinstance(guard_request(event("cancel", headers={"Content-Type": "text/plain"})), RequestContext)


def test_unauthenticated_request_is_401_before_its_input_is_looked_at() -> None:
    hostile = event("create", headers={"Idempotency-Key": "\x00"})
    hostile["requestContext"]["authorizer"] = None
    refused(guard_request(hostile), 401, "unauthenticated")


def test_powertools_unsupported_content_type_maps_to_415_not_500() -> None:
    error = RequestUnsupportedContentType("Unsupported content type", errors=[])
    assert isinstance(as_domain_error(error), UnsupportedMediaType)


# --- webhooks: parameters before verification, the body never ---------------------------------------------------


def webhook_event(body: str = "{}", headers: dict[str, str] | None = None) -> dict[str, Any]:
    built = api_event("POST", "/api/v1/billing/webhook/sandbox", tenant_id=None, body=body, headers=headers)
    built["pathParameters"] = {"provider": "sandbox"}
    return built


def test_webhook_with_nul_in_a_header_is_422_before_verification() -> None:
    problem = refused(guard_unverified_request(webhook_event(headers={"Sandbox-Signature": "t=1,v1=\x00"})), 422,
                      "validation_failed")  # fmt: skip
    assert fields(problem) == [("header.sandbox-signature", "unstorable_character")]


def test_webhook_with_nul_in_the_path_is_422_before_verification() -> None:
    hostile = webhook_event()
    hostile["pathParameters"] = {"provider": "sand\x00box"}
    refused(guard_unverified_request(hostile), 422, "validation_failed")


def test_webhook_body_is_left_for_signature_verification_whatever_it_holds() -> None:
    for body in ['{"id": "evt\\u0000"}', '{"id": "\x00"}', "[" * 100_000, '{"n": 1e400}']:
        assert guard_unverified_request(webhook_event(body=body)) is None


def test_webhook_text_body_with_a_lone_surrogate_is_400_as_it_has_no_bytes_to_verify() -> None:
    refused(guard_unverified_request(webhook_event(body='{"id": "\ud800"}')), 400, "malformed_request")


def sandbox_event(**overrides: Any) -> WebhookEvent:
    fields: dict[str, Any] = {
        "provider": "sandbox",
        "event_id": "evt_1",
        "event_type": "payment.succeeded",
        "provider_reference": "sbx_1",
        "outcome": WebhookOutcome.SUCCEEDED,
    }
    return WebhookEvent(**(fields | overrides))


@pytest.mark.parametrize("field", ["event_id", "event_type", "provider_reference", "failure_code"])
def test_authentic_event_with_text_no_column_can_hold_is_refused(field: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        require_storable_events([sandbox_event(), sandbox_event(**{field: "x\x00"})])
    assert [(e.field, e.code) for e in caught.value.errors] == [(f"events.1.{field}", "unstorable_character")]


def test_authentic_events_with_ordinary_text_are_storable() -> None:
    require_storable_events([sandbox_event(), sandbox_event(failure_code="insufficient_funds", event_id="évt-2")])


# --- query parameters --------------------------------------------------------------------------------------------

RFC3339 = TypeAdapter(Rfc3339DateTime)


@pytest.mark.parametrize("text", ["2026-04-10T12:00:00Z", "2026-04-10T12:00:00.123456+02:00", "2026-04-10 12:00:00z"])
def test_rfc3339_date_time_with_offset_is_read(text: str) -> None:
    assert RFC3339.validate_python(text).tzinfo is not None


@pytest.mark.parametrize("text", ["0.5", "1712750400", "2026-04-10T12:00:00", "2026-04-10", "now", ""])
def test_anything_else_is_not_read_as_a_date_time(text: str) -> None:
    with pytest.raises(ValidationError):
        RFC3339.validate_python(text)


# --- properties --------------------------------------------------------------------------------------------------

clean_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
json_documents = st.recursive(
    st.none() | st.booleans() | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER) | clean_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(clean_text, children, max_size=4),
    max_leaves=20,
)


@given(json_documents)
def test_clean_json_document_is_never_refused(document: Any) -> None:
    assert isinstance(guard_request(event("create", body=json.dumps(document))), RequestContext)
    assert list(unstorable_paths(document)) == []


@given(json_documents, st.sampled_from(["\x00", "\ud800", "\udfff"]), st.booleans())
def test_unstorable_character_in_any_string_of_a_document_is_found(document: Any, bad: str, in_key: bool) -> None:
    poisoned = {"wrapper": document, ("k" + bad if in_key else "k"): "v" if in_key else "v" + bad}
    problem = refused(guard_request(event("create", body=json.dumps(poisoned))), 422, "validation_failed")
    assert fields(problem) == [("k?" if in_key else "k", "unstorable_character")]
